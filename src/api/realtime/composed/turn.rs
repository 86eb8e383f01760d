//! One response of a composed session: the conversation goes to the chat model as a stream (a billed chat call,
//! with its fallbacks), its text comes back as transcript (or text) deltas and goes on into the speaker, whose
//! audio comes back as `response.output_audio.delta` in the session's format. `response.done` reports the
//! tokens and, under `switchyard`, what each part was charged. A response cancelled, or whose client left, is
//! charged for what was generated; one that fails ends `failed` with an `error` event, never a silent stop.

use super::audio::{Encoder, Format};
use super::session::Item;
use super::speaker::{Speaker, Spoken, SPOKEN_RATE};
use super::{error_event, Ctx, Out};
use crate::api::chat::{self, ChatCall, Delivery, Face, Started, Streaming};
use crate::api::errors::ApiError;
use base64::Engine as _;
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::Instant;
use switchyard_actors::engine::pool::Outcome;
use switchyard_actors::{ChatEvent, ChatRequest, Message, ProviderError, Role, Usage};
use tokio::sync::oneshot;

/// What a response is asked to do.
pub struct Ask {
    pub response_id: String,
    pub item_id: String,
    pub messages: Vec<Message>,
    pub audio_out: bool,
    pub format: Format,
    pub voice: String,
    pub max_output_tokens: Option<u32>,
}

/// How a response ended, and the assistant item it added.
pub struct Turned {
    pub item: Item,
    pub status: &'static str,
    /// Seconds of audio the client was sent.
    pub audio_seconds: f64,
}

/// Characters of speech one token can come to, at most: the speaker's hold covers `max_tokens` times this.
const CHARACTERS_PER_TOKEN: u64 = 8;

struct Response<'a> {
    ask: &'a Ask,
    out: &'a Out,
    text: String,
    audio_bytes: u64,
    chat: Option<(String, String, Usage, switchyard_actors::Credits)>,
    spoken: Option<Spoken>,
    /// Left-over byte of PCM16 split across chunks.
    carry: Option<u8>,
    encoder: Encoder,
}

impl Response<'_> {
    fn event(&self, kind: &str, mut body: Value) -> Value {
        body["type"] = json!(kind);
        body["event_id"] = json!(crate::auth::new_id("event"));
        body["response_id"] = json!(self.ask.response_id);
        body
    }

    async fn emit(&self, kind: &str, body: Value) -> bool {
        self.out.send(self.event(kind, body).to_string()).await.is_ok()
    }

    /// The content part of `response.content_part.added/done` (`audio` or `text`, as the protocol names parts there;
    /// items name them `output_audio` and `output_text`).
    fn part(&self, done: bool) -> Value {
        let text = if done { self.text.as_str() } else { "" };
        if self.ask.audio_out {
            json!({"type": "audio", "transcript": text})
        } else {
            json!({"type": "text", "text": text})
        }
    }

    fn at(&self) -> Value {
        json!({"item_id": self.ask.item_id, "output_index": 0, "content_index": 0})
    }

    fn item(&self) -> Item {
        Item { id: self.ask.item_id.clone(), role: Role::Assistant, text: self.text.clone(), audio: self.ask.audio_out }
    }

    /// The `response` object of `response.created` and `response.done`.
    fn object(&self, status: &str, error: Option<&ApiError>) -> Value {
        let (input, output) = self.chat.as_ref().map_or((0, 0), |c| (c.2.prompt_tokens, c.2.completion_tokens));
        let total = input + output;
        let mut parts = Vec::new();
        let mut credits = switchyard_actors::Credits::ZERO;
        if let Some((id, model, usage, charged)) = &self.chat {
            parts.push(json!({"id": id, "model": model, "prompt_tokens": usage.prompt_tokens,
                              "completion_tokens": usage.completion_tokens, "credits_charged": charged}));
            credits = switchyard_actors::Credits(credits.0 + charged.0);
        }
        if let Some(s) = &self.spoken {
            parts.push(json!({"id": s.id, "model": s.model, "characters": s.characters, "credits_charged": s.credits}));
            credits = switchyard_actors::Credits(credits.0 + s.credits.0);
        }
        let status_details = error.map(|e| {
            json!({"type": "failed", "error": {"type": e.detail.kind, "code": e.detail.code, "message": e.detail.message}})
        });
        let items = if status == "in_progress" { json!([]) } else { json!([self.item().to_json("completed")]) };
        json!({
            "object": "realtime.response", "id": self.ask.response_id, "status": status,
            "status_details": status_details, "output": items,
            "output_modalities": [if self.ask.audio_out { "audio" } else { "text" }],
            "audio": {"output": {"format": self.ask.format.to_json(), "voice": self.ask.voice}},
            "usage": {"total_tokens": total, "input_tokens": input, "output_tokens": output,
                      "input_token_details": {"text_tokens": input, "audio_tokens": 0, "cached_tokens": 0},
                      "output_token_details": {"text_tokens": output, "audio_tokens": 0}},
            "switchyard": {"credits_charged": credits, "parts": parts},
        })
    }

    /// Audio from the speaker (PCM16 at 24 kHz) to the client, in the session's format.
    async fn audio(&mut self, bytes: &[u8]) -> bool {
        let mut pcm = Vec::with_capacity(bytes.len() + 1);
        pcm.extend(self.carry.take());
        pcm.extend_from_slice(bytes);
        if pcm.len() % 2 == 1 {
            self.carry = pcm.pop();
        }
        let samples = super::audio::pcm16(&pcm);
        let encoded = self.encoder.push(&samples);
        if encoded.is_empty() {
            return true;
        }
        self.audio_bytes += encoded.len() as u64;
        let delta = base64::engine::general_purpose::STANDARD.encode(&encoded);
        let mut body = self.at();
        body["delta"] = json!(delta);
        self.emit("response.output_audio.delta", body).await
    }

    async fn text_delta(&self, text: &str) -> bool {
        let kind =
            if self.ask.audio_out { "response.output_audio_transcript.delta" } else { "response.output_text.delta" };
        let mut body = self.at();
        body["delta"] = json!(text);
        self.emit(kind, body).await
    }

    /// The closing events, then `response.done`.
    async fn done(&self, status: &'static str, error: Option<&ApiError>) {
        if let Some(error) = error {
            let _ = self.out.send(error_event(error.detail.code, &error.detail.message)).await;
        }
        if status != "failed" || !self.text.is_empty() {
            let at = self.at();
            if self.ask.audio_out {
                self.emit("response.output_audio.done", at.clone()).await;
                let mut body = at.clone();
                body["transcript"] = json!(self.text);
                self.emit("response.output_audio_transcript.done", body).await;
            } else {
                let mut body = at.clone();
                body["text"] = json!(self.text);
                self.emit("response.output_text.done", body).await;
            }
            let mut body = at;
            body["part"] = self.part(true);
            self.emit("response.content_part.done", body).await;
            let item = self.item().to_json("completed");
            self.emit("response.output_item.done", json!({"output_index": 0, "item": item})).await;
            let _ = self
                .out
                .send(
                    json!({"type": "conversation.item.done", "event_id": crate::auth::new_id("event"),
                                         "item": item})
                    .to_string(),
                )
                .await;
        }
        self.emit("response.done", json!({"response": self.object(status, error)})).await;
    }
}

/// Runs one response to its end. `cancel` fires on `response.cancel`.
pub async fn respond(ctx: &Ctx, ask: Ask, out: &Out, mut cancel: oneshot::Receiver<()>) -> Turned {
    let mut response = Response {
        ask: &ask,
        out,
        text: String::new(),
        audio_bytes: 0,
        chat: None,
        spoken: None,
        carry: None,
        encoder: Encoder::new(ask.format, SPOKEN_RATE),
    };
    let status = run(ctx, &mut response, &mut cancel).await;
    let audio_seconds = response.audio_bytes as f64 / ask.format.bytes_per_second() as f64;
    Turned { item: response.item(), status, audio_seconds }
}

async fn run(ctx: &Ctx, r: &mut Response<'_>, cancel: &mut oneshot::Receiver<()>) -> &'static str {
    let started = Instant::now();
    r.emit("response.created", json!({"response": r.object("in_progress", None)})).await;
    let Begun { streaming, max_tokens } = match begin_chat(ctx, r.ask, started).await {
        Ok(begun) => begun,
        Err(error) => {
            r.done("failed", Some(&error)).await;
            return "failed";
        }
    };
    let item = r.item().to_json("in_progress");
    r.emit("response.output_item.added", json!({"output_index": 0, "item": item})).await;
    let _ = r
        .out
        .send(
            json!({"type": "conversation.item.added", "event_id": crate::auth::new_id("event"),
                              "item": item})
            .to_string(),
        )
        .await;
    let mut part = r.at();
    part["part"] = r.part(false);
    r.emit("response.content_part.added", part).await;
    let Streaming { model, first, rest, mut bill } = *streaming;
    let mut speaker = if r.ask.audio_out {
        Some(Speaker::open(ctx, &r.ask.voice, u64::from(max_tokens) * CHARACTERS_PER_TOKEN).await)
    } else {
        None
    };
    let mut events = futures::stream::iter([Ok(first)]).chain(rest);
    let mut chat_done = false;
    let mut speech_done = speaker.is_none();
    let mut first_audio = None;
    let outcome: Result<(), ApiError> = loop {
        if chat_done && speech_done {
            break Ok(());
        }
        tokio::select! {
            _ = &mut *cancel => {
                // Charged for what was generated: the chat as it stands, the characters sent.
                let usage = bill.partial_usage();
                let charged = bill.settle(usage, "cancelled", Outcome::Neutral).await;
                if let (Ok(metadata), false) = (charged, chat_done) {
                    r.chat = Some((bill.id().to_owned(), model.name.clone(), usage, metadata.credits_charged));
                }
                if let Some(speaker) = speaker.as_mut() {
                    r.spoken = speaker.settle().await;
                }
                r.done("cancelled", None).await;
                return "cancelled";
            }
            event = events.next(), if !chat_done => {
                let event = event.unwrap_or_else(|| Err(ProviderError::Connection {
                    provider: model.provider.clone(), message: "stream ended without finishing".into() }));
                match event {
                    Ok(ChatEvent::Delta(text)) => {
                        bill.delivered(&text);
                        r.text.push_str(&text);
                        if !r.text_delta(&text).await {
                            break Ok(());
                        }
                        if let Some(speaker) = speaker.as_mut() {
                            speaker.write(&text).await;
                        }
                    }
                    Ok(ChatEvent::Finish { usage, .. }) => {
                        chat_done = true;
                        ctx.state.metrics.record_tokens(&model.name, &usage);
                        match bill.settle(usage, "ok", Outcome::Success).await {
                            Ok(metadata) => r.chat = Some((bill.id().to_owned(), model.name.clone(), usage, metadata.credits_charged)),
                            Err(e) => break Err(e),
                        }
                        if let Some(speaker) = speaker.as_mut() {
                            if let Err(e) = speaker.finish(ctx).await {
                                break Err(e);
                            }
                        }
                    }
                    Err(e) => {
                        let usage = bill.partial_usage();
                        if let Ok(metadata) = bill.settle(usage, "cut", Outcome::Failure).await {
                            r.chat = Some((bill.id().to_owned(), model.name.clone(), usage, metadata.credits_charged));
                        }
                        break Err(crate::api::call::upstream_error(&ctx.state, e));
                    }
                }
            }
            audio = next_audio(speaker.as_mut(), ctx), if !speech_done => match audio {
                Some(Ok(bytes)) => {
                    if first_audio.is_none() {
                        first_audio = Some(started.elapsed());
                        ctx.state.metrics.realtime_first_audio.observe(started.elapsed().as_secs_f64());
                    }
                    if !r.audio(&bytes).await {
                        break Ok(());
                    }
                }
                Some(Err(e)) => break Err(e),
                None => speech_done = true,
            },
        }
    };
    if let Some(speaker) = speaker.as_mut() {
        r.spoken = speaker.settle().await;
    }
    match outcome {
        Ok(()) => {
            r.done("completed", None).await;
            "completed"
        }
        Err(error) => {
            r.done("failed", Some(&error)).await;
            "failed"
        }
    }
}

async fn next_audio(speaker: Option<&mut Speaker>, ctx: &Ctx) -> Option<Result<bytes::Bytes, ApiError>> {
    match speaker {
        Some(speaker) => speaker.next_audio(ctx).await,
        None => None,
    }
}

/// The fewest output tokens worth a response: a wallet that covers fewer is refused.
const FEWEST_TOKENS: u64 = 16;

/// The chat's stream, and the output allowance it was given.
struct Begun {
    streaming: Box<Streaming>,
    max_tokens: u32,
}

/// The output allowance, clamped to what the wallet covers: the prompt at its bound, then each token at the chat
/// model's price and, when spoken, at `CHARACTERS_PER_TOKEN` characters of the voice's.
async fn clamp_to_wallet(ctx: &Ctx, request: &ChatRequest, audio_out: bool) -> Result<u32, ApiError> {
    let available = super::super::wallet_available(&ctx.state, &ctx.principal.workspace_id).await.milli();
    let prompt = ctx.chat.pricing.cost(chat::prompt_bound(request), 0).milli();
    let per_1k_tokens = ctx.chat.pricing.cost(0, 1000).milli()
        + if audio_out { ctx.tts.pricing.characters_cost(1000 * CHARACTERS_PER_TOKEN).milli() } else { 0 };
    let affordable = match u64::try_from(available - prompt) {
        Ok(left) if per_1k_tokens > 0 => left.saturating_mul(1000) / per_1k_tokens as u64,
        Ok(_) => u64::MAX,
        Err(_) => 0,
    };
    if affordable < FEWEST_TOKENS.min(u64::from(request.max_tokens)) {
        return Err(ApiError::insufficient_credits());
    }
    Ok(request.max_tokens.min(u32::try_from(affordable).unwrap_or(u32::MAX)))
}

/// The chat call of a response, streamed.
async fn begin_chat(ctx: &Ctx, ask: &Ask, started: Instant) -> Result<Begun, ApiError> {
    let max_tokens = chat::fit_context(&ctx.chat, &ask.messages, ask.max_output_tokens)?;
    let mut request = ChatRequest {
        messages: ask.messages.clone(),
        max_tokens,
        temperature: None,
        top_p: None,
        stop: Vec::new(),
        json: false,
    };
    request.max_tokens = clamp_to_wallet(ctx, &request, ask.audio_out).await?;
    let max_tokens = request.max_tokens.min(ctx.chat.max_output_tokens);
    let call = ChatCall {
        face: Face::OpenAi,
        principal: &ctx.principal,
        model: &ctx.chat,
        request,
        delivery: Delivery { stream: true, usage_chunk: false },
        reporting_group: None,
        use_fallback: false,
        started,
        endpoint: "/v1/realtime",
        task: None,
    };
    match chat::start(&ctx.state, &ctx.req, call).await? {
        Started::Stream(streaming) => Ok(Begun { streaming, max_tokens }),
        Started::Whole(_) => Err(ApiError::internal("the chat answered whole when a stream was asked")),
    }
}
