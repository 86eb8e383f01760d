//! A response's voice: the chat model's text goes, as it is written, into the text-to-speech model's socket
//! (ElevenLabs' `stream-input`), and its audio (PCM16 at 24 kHz) comes back. Billed per character sent, as one
//! call of the text-to-speech model; however the response ends, the characters sent are charged once.
//!
//! If the socket cannot be opened, or fails before its first audio, the text is spoken over HTTP instead once the
//! chat has finished (the text-to-speech model's own chain, which falls back to other providers): the client hears
//! the answer later, never not at all. After the first audio a failure ends the response `failed`.

use super::Ctx;
use crate::api::call::{Answered, Billed, CallSpec, Measured};
use crate::api::errors::ApiError;
use crate::api::speech::{start_speech, SpeakCall, Speaking};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use std::time::Instant;
use switchyard_actors::engine::dispatch::SpeechSocketAttempt;
use switchyard_actors::engine::pool::Outcome;
use switchyard_actors::providers::{SpeechSocketRequest, TextSender};
use switchyard_actors::speech::SpeechRequest;
use switchyard_actors::{Credits, ProviderError};

/// The format asked of every text-to-speech path; the session's own format is made from it.
pub const SPOKEN: &str = "pcm_24000";
pub const SPOKEN_RATE: u32 = 24_000;

enum Mode {
    /// The socket is open: text goes in (its audio is `Speaker::audio`).
    Socket { text: TextSender, bill: SocketBill },
    /// Text is kept until the chat finishes, then spoken over HTTP.
    Later,
    /// Spoken over HTTP (its audio is `Speaker::audio`).
    Http(HttpBill),
    /// Nothing to speak, or already settled.
    Done,
}

pub struct Speaker {
    mode: Mode,
    audio: Option<BoxStream<'static, Result<Bytes, ProviderError>>>,
    voice: String,
    /// Text the chat wrote (at most `max_characters`): what the HTTP path speaks.
    text: String,
    max_characters: u64,
    /// Audio reached the client: a failure now cannot fall back.
    heard: bool,
    finished: bool,
}

/// What a response's speech was charged, for `response.done`.
pub struct Spoken {
    pub id: String,
    pub model: String,
    pub characters: u64,
    pub credits: Credits,
}

/// The socket call's bill: characters sent are charged once, however the socket ends (dropped: as it stood).
struct SocketBill {
    billed: Billed,
    answered: Answered,
    characters: u64,
    bytes: u64,
}

impl SocketBill {
    fn charge(&self) -> (Credits, Measured) {
        let cost = self.answered.model.pricing.characters_cost(self.characters);
        (cost, Measured { units: self.characters, output_bytes: self.bytes, ..Default::default() })
    }
}

impl Drop for SocketBill {
    fn drop(&mut self) {
        let (cost, measured) = self.charge();
        self.billed.settle_detached(cost, measured, "abandoned", Outcome::Neutral);
    }
}

/// The HTTP call's bill (dropped unsettled, nothing is charged).
struct HttpBill {
    billed: Billed,
    answered: Answered,
    cost: Credits,
    characters: u64,
    bytes: u64,
}

impl Speaker {
    /// Opens the socket (billed as the text-to-speech model, holding `max_characters`), or, if it cannot be
    /// opened, speaks over HTTP once the text is whole.
    pub async fn open(ctx: &Ctx, voice: &str, max_characters: u64) -> Speaker {
        let mut speaker = Speaker {
            mode: Mode::Later,
            audio: None,
            voice: voice.to_owned(),
            text: String::new(),
            max_characters,
            heard: false,
            finished: false,
        };
        match Self::socket(ctx, voice, max_characters).await {
            Ok((text, bill, audio)) => {
                speaker.mode = Mode::Socket { text, bill };
                speaker.audio = Some(audio);
            }
            Err(e) => tracing::warn!(error = %e.detail.message, "speech socket unavailable; speaking over HTTP"),
        }
        speaker
    }

    #[allow(clippy::type_complexity)]
    async fn socket(
        ctx: &Ctx,
        voice: &str,
        max_characters: u64,
    ) -> Result<(TextSender, SocketBill, BoxStream<'static, Result<Bytes, ProviderError>>), ApiError> {
        let spec = CallSpec {
            principal: &ctx.principal,
            model: &ctx.tts,
            use_fallback: false,
            reporting_group: None,
            endpoint: "/v1/realtime",
            id_prefix: "speech",
            started: Instant::now(),
            task: None,
        };
        let cost = |m: &switchyard_actors::ModelSpec| m.pricing.characters_cost(max_characters);
        let mut billed = Billed::begin(&ctx.state, &ctx.req, &spec, spec.new_id(), 0, cost).await?;
        let request =
            SpeechSocketRequest { voice: voice.to_owned(), output_format: SPOKEN.into(), voice_settings: None };
        let attempt = SpeechSocketAttempt { request: &request, model: &ctx.tts.name };
        let (answered, socket) = billed.dispatch(&ctx.state, &spec, &attempt).await?;
        Ok((socket.text, SocketBill { billed, answered, characters: 0, bytes: 0 }, socket.audio))
    }

    /// Text the chat wrote. Past `max_characters` nothing more is spoken (the hold covers no more).
    pub async fn write(&mut self, text: &str) {
        let room = self.max_characters.saturating_sub(self.text.chars().count() as u64) as usize;
        let text: String = text.chars().take(room).collect();
        if text.is_empty() {
            return;
        }
        self.text.push_str(&text);
        if let Mode::Socket { text: sender, bill } = &mut self.mode {
            let sent = sender.write(&text).await;
            bill.characters = sender.characters;
            let sentence_end = text.trim_end().ends_with(['.', '!', '?', '\n']);
            let flushed = if sent.is_ok() && sentence_end { sender.flush().await } else { sent };
            if let Err(e) = flushed {
                self.socket_failed(e);
            }
        }
    }

    /// The chat finished: the socket speaks the rest and ends; the HTTP path begins now.
    pub async fn finish(&mut self, ctx: &Ctx) -> Result<(), ApiError> {
        self.finished = true;
        if let Mode::Socket { text, .. } = &mut self.mode {
            if let Err(e) = text.finish().await {
                self.socket_failed(e);
            }
        }
        if matches!(self.mode, Mode::Later) {
            self.speak_over_http(ctx).await?;
        }
        Ok(())
    }

    /// The next audio (PCM16 at 24 kHz); `None` once it is all spoken. Waits for ever while the HTTP path waits
    /// for the text to be whole. A socket that fails before any audio was heard falls back to HTTP.
    pub async fn next_audio(&mut self, ctx: &Ctx) -> Option<Result<Bytes, ApiError>> {
        loop {
            let Some(audio) = self.audio.as_mut() else {
                if matches!(self.mode, Mode::Done) {
                    return None;
                }
                return std::future::pending().await;
            };
            match audio.next().await {
                Some(Ok(bytes)) => {
                    self.heard = true;
                    match &mut self.mode {
                        Mode::Socket { bill, .. } => bill.bytes += bytes.len() as u64,
                        Mode::Http(bill) => bill.bytes += bytes.len() as u64,
                        Mode::Later | Mode::Done => {}
                    }
                    return Some(Ok(bytes));
                }
                Some(Err(e)) if !self.heard && matches!(self.mode, Mode::Socket { .. }) => {
                    self.audio = None;
                    self.socket_failed(e);
                    if self.finished {
                        if let Err(e) = self.speak_over_http(ctx).await {
                            return Some(Err(e));
                        }
                    }
                }
                Some(Err(e)) => {
                    self.audio = None;
                    return Some(Err(crate::api::call::upstream_error(&ctx.state, e)));
                }
                None => {
                    self.audio = None;
                    if matches!(self.mode, Mode::Later) {
                        self.mode = Mode::Done;
                    }
                    return None;
                }
            }
        }
    }

    /// The socket failed before any audio was heard: nothing is charged for it, and the text is spoken over HTTP
    /// (once it is whole). After audio was heard, the characters sent are charged as the bill drops.
    fn socket_failed(&mut self, error: ProviderError) {
        tracing::warn!(error = %error, heard = self.heard, "the speech socket failed");
        if let Mode::Socket { bill, .. } = &mut self.mode {
            if !self.heard {
                bill.billed.fail("error");
            }
        }
        self.audio = None;
        self.mode = if self.heard { Mode::Done } else { Mode::Later };
    }

    async fn speak_over_http(&mut self, ctx: &Ctx) -> Result<(), ApiError> {
        if self.text.trim().is_empty() {
            self.mode = Mode::Done;
            return Ok(());
        }
        let call = SpeakCall {
            request: SpeechRequest {
                text: self.text.clone(),
                voice: self.voice.clone(),
                voice_settings: None,
                output_format: SPOKEN.into(),
            },
            reporting_group: None,
            use_fallback: false,
            task: None,
            warnings: Vec::new(),
        };
        let speaking =
            start_speech(&ctx.state, &ctx.req, &ctx.principal, &ctx.tts, call, Instant::now(), "/v1/realtime").await?;
        let Speaking { billed, answered, stream, cost, units, .. } = speaking;
        self.audio = Some(futures::stream::iter([Ok(stream.first)]).chain(stream.rest).boxed());
        self.mode = Mode::Http(HttpBill { billed, answered, cost, characters: units, bytes: 0 });
        Ok(())
    }

    /// Charges what was spoken, once; answers what for (`None`: nothing was spoken or charged).
    pub async fn settle(&mut self) -> Option<Spoken> {
        let mode = std::mem::replace(&mut self.mode, Mode::Done);
        let spoken = |id: String, answered: &Answered, characters: u64, credits: Credits| Spoken {
            id,
            model: answered.model.name.clone(),
            characters,
            credits,
        };
        match mode {
            Mode::Socket { mut bill, .. } => {
                let (cost, measured) = bill.charge();
                let answered = bill.answered.clone();
                let settled = bill.billed.settle_as(&answered, cost, measured, "ok", Outcome::Success).await;
                let id = bill.billed.id().to_owned();
                settled.ok().map(|m| spoken(id, &answered, bill.characters, m.credits_charged))
            }
            Mode::Http(HttpBill { billed, answered, cost, characters, bytes }) => {
                let id = billed.id().to_owned();
                let measured = Measured { units: characters, output_bytes: bytes, ..Default::default() };
                let settled = billed.settle(&answered, cost, measured).await;
                settled.ok().map(|m| spoken(id, &answered, characters, m.credits_charged))
            }
            Mode::Later | Mode::Done => None,
        }
    }
}
