//! A turn's input audio, streamed as it is appended into ElevenLabs' realtime speech-to-text socket
//! (`/v1/speech-to-text/realtime`, `scribe_v2_realtime`, PCM16 at 16 kHz, manual commits), when
//! `realtime.streaming_transcription` is on. Partial transcripts become
//! `conversation.item.input_audio_transcription.delta` events while the user speaks; the commit waits (at most
//! `COMMIT_WITHIN`) for the committed transcript only.
//!
//! One socket a turn, opened at the turn's first `input_audio_buffer.append` (not at session start): a session that
//! is typed to, or silent, holds no socket and no credits; no socket sits idle between turns (ElevenLabs ends idle
//! ones); and each turn is billed and, when it fails, given back whole. The opening runs in the socket's own task,
//! while the user is still speaking, so it never holds up the session's events; audio appended meanwhile waits in
//! the task's queue.
//!
//! Billed as the streaming model, per second of audio sent, by the block (`meter.rs`): each block is held before the
//! audio that uses it goes upstream, and settled when the committed transcript came. A turn whose socket cannot be
//! opened, fails, or gives no committed transcript in time is transcribed over HTTP at commit, as without streaming,
//! and its socket is charged nothing: the HTTP call is the turn's only charge. Audio that never reaches a commit (the
//! buffer cleared, the session closed) is charged as sent.

use super::audio::Resampler;
use super::{event, Ctx, Notes};
use crate::api::realtime::meter::{Meter, Unit};
use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::rc::Rc;
use std::time::Duration;
use switchyard_actors::providers::socket_base;
use switchyard_actors::{Credits, ModelSpec};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as Up;

/// The rate the socket is sent (`audio_format=pcm_16000`).
const RATE: u32 = 16_000;
/// Milliseconds of audio one block holds (as the relayed socket's).
const BLOCK_MS: u64 = 60_000;
const CONNECT_WITHIN: Duration = Duration::from_secs(5);
/// The longest a commit waits for the socket's committed transcript before the turn goes over HTTP.
const COMMIT_WITHIN: Duration = Duration::from_secs(10);

type Upstream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The session's end of a turn's socket (the socket itself is in its task).
pub struct Listener {
    to: mpsc::UnboundedSender<Command>,
    resampler: Resampler,
}

/// The socket's transcript of a turn, and what it was charged (`None`: nothing, or the settlement failed).
pub struct Heard {
    pub text: String,
    pub seconds: f64,
    pub charged: Option<(String, Credits)>,
}

enum Command {
    /// PCM16 at 16 kHz.
    Audio(Vec<i16>),
    Commit {
        tail: Vec<i16>,
        heard: oneshot::Sender<(String, f64)>,
        charged: oneshot::Sender<Option<(String, Credits)>>,
    },
    /// The commit gave up waiting: the turn goes over HTTP, and the socket is charged nothing.
    Abandon,
}

/// What the task tells the session about the socket's transcription.
struct Turn {
    out: Notes,
    item_id: String,
    /// The text the deltas sent add up to, and text owed to a delta the session's queue had no room for.
    sent: String,
    owed: String,
    last: String,
}

impl Turn {
    /// A partial transcript as a delta. OpenAI's deltas append; ElevenLabs' partials are the segment so far, and may
    /// revise it: a delta carries what a partial adds to the text already sent (nothing when it revises that text),
    /// and `switchyard.partial` the whole partial, for clients that show revisions. Never waits on the session: a
    /// delta that finds the queue full is carried by the next.
    fn partial(&mut self, text: &str) {
        if text == self.last {
            return;
        }
        self.last = text.to_owned();
        if let Some(added) = text.strip_prefix(self.sent.as_str()) {
            self.owed.push_str(added);
            self.sent = text.to_owned();
        }
        let delta = json!({"item_id": self.item_id, "content_index": 0, "delta": self.owed,
                           "switchyard": {"partial": text}});
        if self.out.try_send(event("conversation.item.input_audio_transcription.delta", delta)).is_ok() {
            self.owed.clear();
        }
    }
}

impl Listener {
    /// Starts the turn's socket (billed as `model`); its deltas name `item_id`. Audio is taken at `rate`.
    pub fn open(
        ctx: Rc<Ctx>,
        model: ModelSpec,
        item_id: String,
        language: Option<String>,
        rate: u32,
        out: Notes,
    ) -> Listener {
        let (to, commands) = mpsc::unbounded_channel();
        let turn = Turn { out, item_id, sent: String::new(), owed: String::new(), last: String::new() };
        actix_web::rt::spawn(run(ctx, model, language, turn, commands));
        Listener { to, resampler: Resampler::new(rate, RATE) }
    }

    /// Appended audio (PCM16 at `rate`), on its way upstream.
    pub fn hear(&mut self, samples: &[i16], rate: u32) {
        if rate != self.resampler.from() {
            let tail = self.resampler.flush();
            if !tail.is_empty() {
                let _ = self.to.send(Command::Audio(tail));
            }
            self.resampler = Resampler::new(rate, RATE);
        }
        let samples = self.resampler.push(samples);
        if !samples.is_empty() {
            // A socket that failed has dropped its queue: the commit will find it gone.
            let _ = self.to.send(Command::Audio(samples));
        }
    }

    /// Commits the turn: its transcript, or `None` when the socket failed or gave none within `COMMIT_WITHIN`
    /// (the turn is then the HTTP path's, and the socket charges nothing).
    pub async fn commit(mut self) -> Option<Heard> {
        let (heard, heard_rx) = oneshot::channel();
        let (charged, charged_rx) = oneshot::channel();
        let tail = self.resampler.flush();
        self.to.send(Command::Commit { tail, heard, charged }).ok()?;
        // The transcript, if the task sent it, is taken even at the deadline: the task then settles, never both.
        match tokio::time::timeout(COMMIT_WITHIN, heard_rx).await {
            Ok(Ok((text, seconds))) => Some(Heard { text, seconds, charged: charged_rx.await.ok().flatten() }),
            Ok(Err(_)) => None,
            Err(_) => {
                tracing::warn!(
                    "no committed transcript from the speech-to-text socket in time; transcribing over HTTP"
                );
                let _ = self.to.send(Command::Abandon);
                None
            }
        }
    }
}

/// Opens the socket to the model's provider (ElevenLabs, with the gateway's key).
async fn connect(ctx: &Ctx, model: &ModelSpec, language: Option<&str>) -> Result<Upstream, String> {
    let provider = ctx.state.providers.for_model(model).ok_or("no provider for the model")?;
    let (base, key) = provider.socket_target().ok_or("the provider has no socket API")?;
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("model_id", &model.upstream);
    query.append_pair("audio_format", "pcm_16000");
    query.append_pair("commit_strategy", "manual");
    if let Some(language) = language {
        query.append_pair("language_code", language);
    }
    let url = format!("{}/v1/speech-to-text/realtime?{}", socket_base(&base), query.finish());
    let mut request = url.into_client_request().map_err(|e| format!("socket URL: {e}"))?;
    if let Some(key) = key {
        let value = HeaderValue::from_str(&key).map_err(|_| "the provider key is not a header".to_owned())?;
        request.headers_mut().insert("xi-api-key", value);
    }
    match tokio::time::timeout(CONNECT_WITHIN, switchyard_actors::providers::connect_socket(request)).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(e)) => Err(format!("refused: {e}")),
        Err(_) => Err("no connection in time".into()),
    }
}

/// What the socket said.
enum Said {
    Partial(String),
    Committed(String),
    Failed(String),
    Nothing,
}

fn said(frame: Option<Result<Up, tokio_tungstenite::tungstenite::Error>>) -> Said {
    let text = match frame {
        Some(Ok(Up::Text(text))) => text,
        Some(Ok(Up::Close(frame))) => return Said::Failed(format!("closed: {frame:?}")),
        None => return Said::Failed("closed".into()),
        Some(Err(e)) => return Said::Failed(e.to_string()),
        Some(Ok(_)) => return Said::Nothing,
    };
    let message: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
    let words = || message.get("text").and_then(Value::as_str).unwrap_or_default().to_owned();
    match message.get("message_type").and_then(Value::as_str) {
        Some("partial_transcript") => Said::Partial(words()),
        Some("committed_transcript") => Said::Committed(words()),
        Some("session_started" | "committed_transcript_with_timestamps") => Said::Nothing,
        _ if message.get("error").is_some() => Said::Failed(message["error"].to_string()),
        _ => Said::Nothing,
    }
}

/// The socket's task: holds the first block, connects, sends audio as it comes and the commit, relays partials,
/// answers the commit, settles. A failure ends it with the turn's blocks released, dropping its queue and any
/// waiting commit (which then goes over HTTP at once).
async fn run(
    ctx: Rc<Ctx>,
    model: ModelSpec,
    language: Option<String>,
    mut turn: Turn,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let meter = Meter::begin(&ctx.state, &ctx.req, &ctx.principal, &model, Unit::AudioMillis, BLOCK_MS).await;
    let mut meter = match meter {
        Ok(meter) => meter.keep_full_blocks(),
        Err(e) => {
            return tracing::warn!(error = %e.detail.message, "speech-to-text socket not billable; HTTP at commit")
        }
    };
    let socket = match connect(&ctx, &model, language.as_deref()).await {
        Ok(socket) => socket,
        Err(e) => {
            tracing::warn!(error = %e, "speech-to-text socket unavailable; transcribing over HTTP at commit");
            return meter.release("error");
        }
    };
    let (mut to_upstream, mut from_upstream) = socket.split();
    // Samples sent, and the milliseconds of them counted against the meter.
    let (mut samples, mut counted) = (0u64, 0u64);
    let mut waiting = None;
    let failure = loop {
        tokio::select! {
            command = commands.recv() => {
                let (audio, commit) = match command {
                    // The turn was let go without a commit (the buffer cleared, the session closed): the audio sent
                    // is charged, as sent.
                    None => {
                        meter.settle().await;
                        let _ = tokio::time::timeout(Duration::from_secs(1), to_upstream.close()).await;
                        return;
                    }
                    Some(Command::Abandon) => break None,
                    Some(Command::Audio(audio)) => (audio, false),
                    Some(Command::Commit { tail, heard, charged }) => {
                        waiting = Some((heard, charged));
                        (tail, true)
                    }
                };
                samples += audio.len() as u64;
                let millis = (samples * 1000).div_ceil(u64::from(RATE));
                if let Err(e) = meter.take(millis - counted).await {
                    break Some(e.detail.message);
                }
                counted = millis;
                let bytes: Vec<u8> = audio.iter().flat_map(|s| s.to_le_bytes()).collect();
                let chunk = json!({"message_type": "input_audio_chunk", "commit": commit, "sample_rate": RATE,
                                   "audio_base_64": base64::engine::general_purpose::STANDARD.encode(bytes)});
                if let Err(e) = to_upstream.send(Up::text(chunk.to_string())).await {
                    break Some(e.to_string());
                }
            }
            frame = from_upstream.next() => match said(frame) {
                Said::Partial(text) => turn.partial(&text),
                Said::Committed(text) => {
                    let Some((heard, charged)) = waiting.take() else { continue };
                    if heard.send((text, samples as f64 / f64::from(RATE))).is_err() {
                        break None;
                    }
                    let _ = charged.send(meter.settle().await);
                    let _ = tokio::time::timeout(Duration::from_secs(1), to_upstream.close()).await;
                    return;
                }
                Said::Failed(e) => break Some(e),
                Said::Nothing => {}
            },
        }
    };
    // A failure (`Some`) or a commit that gave up waiting (`None`): the turn is the HTTP path's, charged there only.
    if let Some(e) = &failure {
        tracing::warn!(error = %e, "speech-to-text socket failed; the turn goes over HTTP");
    }
    meter.release(if failure.is_some() { "error" } else { "timeout" });
    // A commit waiting hears at once that there is no transcript.
    drop((waiting, commands));
    let _ = tokio::time::timeout(Duration::from_secs(1), to_upstream.close()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partials_become_deltas_that_add_up() {
        let (out, mut events) = mpsc::unbounded_channel();
        let mut turn = Turn {
            out: super::super::Notes(out),
            item_id: "item_1".into(),
            sent: String::new(),
            owed: String::new(),
            last: String::new(),
        };
        let delta = |e: String| serde_json::from_str::<Value>(&e).unwrap();
        turn.partial("Hello");
        let first = delta(events.try_recv().unwrap());
        assert_eq!((first["delta"].as_str(), first["item_id"].as_str()), (Some("Hello"), Some("item_1")));
        turn.partial("Hello there");
        assert_eq!(delta(events.try_recv().unwrap())["delta"], " there");
        turn.partial("Hello there");
        assert!(events.try_recv().is_err(), "an unchanged partial says nothing");
        turn.partial("Hello there, how are");
        assert_eq!(delta(events.try_recv().unwrap())["delta"], ", how are");
        // A revision adds nothing to the deltas; the partial carries it.
        turn.partial("Hello, there");
        let revised = delta(events.try_recv().unwrap());
        assert_eq!(
            (revised["delta"].as_str(), revised["switchyard"]["partial"].as_str()),
            (Some(""), Some("Hello, there"))
        );
    }
}
