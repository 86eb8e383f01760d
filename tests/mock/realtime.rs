#![allow(dead_code)]
//! Mock OpenAI Realtime upstream (GA event names) over WebSocket, for the relay's tests: `session.created` on
//! connect, `session.update` → `session.updated`, `input_audio_buffer.append/commit/clear` (the audio is decoded and
//! counted), a transcript on commit, and `response.create` → `response.created`, transcript and PCM16 24 kHz audio
//! deltas, `response.output_audio.done`, then `response.done` with `usage` (deterministic counts). Refuses a
//! handshake without `Authorization: Bearer`.
//!
//! For the realtime benchmark (`tests/bench/realtime.rs`), off unless asked: each `response.output_audio.delta` can
//! carry `sent_ns` (UNIX time in nanoseconds, taken just before the event is written), and the audio deltas of a
//! response can be paced like real speech (the first at once, each next one after a pause) rather than sent in a
//! burst.

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::Message;

/// Audio each response speaks: this many 0.1 s chunks of PCM16 at 24 kHz.
pub const AUDIO_CHUNKS: usize = 5;
pub const RATE: usize = 24_000;
/// The usage every response reports (input audio tokens are one per 100 ms of audio appended since the last one).
pub const TEXT_IN: u64 = 10;
pub const TEXT_OUT: u64 = 5;
pub const AUDIO_OUT: u64 = 25;

#[derive(Default)]
struct Shared {
    /// Fault: close the socket (no close frame) after a response's first delta.
    cut_responses: std::sync::atomic::AtomicBool,
    connections: AtomicU64,
    responses: AtomicU64,
    /// The path and query of each handshake.
    paths: Mutex<Vec<String>>,
    /// Each `response.create`'s `response.max_output_tokens` (None when absent).
    max_output_tokens: Mutex<Vec<Option<u64>>>,
    /// Bench: stamp each audio delta with `sent_ns`.
    stamp_audio: std::sync::atomic::AtomicBool,
    /// Bench: microseconds between a response's audio deltas (0: a burst).
    audio_every_us: AtomicU64,
}

/// A reply of the mock: an event ready to go, or an audio delta's body, stamped and paced when it is sent.
enum Out {
    Event(Message),
    Audio(Value),
}

impl From<Message> for Out {
    fn from(message: Message) -> Out {
        Out::Event(message)
    }
}

pub struct RealtimeMock {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RealtimeMock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RealtimeMock {
    pub async fn start() -> std::io::Result<RealtimeMock> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let inner = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = inner.clone();
                tokio::spawn(async move { serve(stream, shared).await });
            }
        });
        Ok(RealtimeMock { addr, shared, task })
    }

    /// The base URL as the OpenAI provider takes it (`…/v1`).
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Makes every response stop after its first delta, the socket dropped without a close frame.
    pub fn cut_responses(&self, cut: bool) {
        self.shared.cut_responses.store(cut, Ordering::SeqCst);
    }

    /// Stamps each `response.output_audio.delta` with `sent_ns`: UNIX time in nanoseconds, just before the write.
    pub fn stamp_audio(&self, stamp: bool) {
        self.shared.stamp_audio.store(stamp, Ordering::SeqCst);
    }

    /// Paces a response's audio deltas: the first at once, each next one `every` after the one before (zero: a burst).
    pub fn pace_audio(&self, every: Duration) {
        let us = u64::try_from(every.as_micros()).unwrap_or(u64::MAX);
        self.shared.audio_every_us.store(us, Ordering::SeqCst);
    }

    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    pub fn responses(&self) -> u64 {
        self.shared.responses.load(Ordering::SeqCst)
    }

    pub fn max_output_tokens(&self) -> Vec<Option<u64>> {
        self.shared.max_output_tokens.lock().map(|p| p.clone()).unwrap_or_default()
    }

    pub fn paths(&self) -> Vec<String> {
        self.shared.paths.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

fn event(kind: &str, mut body: Value) -> Message {
    body["type"] = json!(kind);
    body["event_id"] = json!(format!("event_{}", rand_id()));
    Message::text(body.to_string())
}

fn rand_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// 0.1 s of a 440 Hz tone, PCM16 LE at 24 kHz.
fn chunk(index: usize) -> Vec<u8> {
    let samples = RATE / 10;
    (0..samples)
        .flat_map(|i| {
            let t = (index * samples + i) as f64 / RATE as f64;
            (((t * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16).to_le_bytes()
        })
        .collect()
}

/// Nanoseconds since the UNIX epoch.
pub fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Sends `replies` in order (audio deltas paced and stamped as the bench asked); false when the socket is gone.
async fn emit<S>(tx: &mut S, replies: impl IntoIterator<Item = Out>, shared: &Shared) -> bool
where
    S: futures::Sink<Message> + Unpin,
{
    let mut first_audio = true;
    for reply in replies {
        let message = match reply {
            Out::Event(message) => message,
            Out::Audio(mut body) => {
                let every = shared.audio_every_us.load(Ordering::SeqCst);
                if every > 0 && !std::mem::take(&mut first_audio) {
                    tokio::time::sleep(Duration::from_micros(every)).await;
                }
                if shared.stamp_audio.load(Ordering::SeqCst) {
                    body["sent_ns"] = json!(unix_ns());
                }
                event("response.output_audio.delta", body)
            }
        };
        if tx.send(message).await.is_err() {
            return false;
        }
    }
    true
}

/// Chunk `index` of every response, base64 (made once: the same tone each time, and cheap enough for the bench).
fn chunk_base64(index: usize) -> String {
    static CHUNKS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let chunks = CHUNKS.get_or_init(|| {
        (0..AUDIO_CHUNKS).map(|i| base64::engine::general_purpose::STANDARD.encode(chunk(i))).collect()
    });
    chunks.get(index).cloned().unwrap_or_else(|| base64::engine::general_purpose::STANDARD.encode(chunk(index)))
}

async fn serve(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    // Each event is written as it is made (no coalescing behind an unacknowledged one).
    let _ = stream.set_nodelay(true);
    let paths = shared.clone();
    // tungstenite's callback shape: its error is a whole HTTP response.
    #[allow(clippy::result_large_err)]
    let check = move |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        let authorized = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.strip_prefix("Bearer ").is_some_and(|k| !k.trim().is_empty()));
        if let Ok(mut p) = paths.paths.lock() {
            p.push(request.uri().to_string());
        }
        if !authorized || !request.uri().path().ends_with("/realtime") {
            let mut refusal = ErrorResponse::new(Some("{\"error\": {\"message\": \"Missing bearer\"}}".into()));
            *refusal.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::UNAUTHORIZED;
            return Err(refusal);
        }
        Ok(response)
    };
    let Ok(socket) = tokio_tungstenite::accept_hdr_async(stream, check).await else { return };
    shared.connections.fetch_add(1, Ordering::SeqCst);
    let (mut tx, mut rx) = socket.split();
    let mut session = json!({"type": "realtime", "model": "gpt-realtime", "output_modalities": ["audio"],
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}},
                  "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"}}});
    if tx.send(event("session.created", json!({"session": session}))).await.is_err() {
        return;
    }
    let mut buffered = 0usize;
    let mut committed = 0usize;
    while let Some(Ok(frame)) = rx.next().await {
        let Message::Text(text) = frame else { continue };
        let Ok(client) = serde_json::from_str::<Value>(text.as_str()) else { continue };
        let replies: Vec<Out> = match client["type"].as_str().unwrap_or_default() {
            // Test hook: the provider ends the session with this close code and reason.
            "mock.close" => {
                let code = client["code"].as_u64().unwrap_or(1000) as u16;
                let reason = client["reason"].as_str().unwrap_or_default().to_owned();
                let frame =
                    tokio_tungstenite::tungstenite::protocol::CloseFrame { code: code.into(), reason: reason.into() };
                let _ = tx.send(Message::Close(Some(frame))).await;
                return;
            }
            "session.update" => {
                if let Some(Value::Object(changes)) = client.get("session") {
                    for (k, v) in changes {
                        session[k] = v.clone();
                    }
                }
                vec![event("session.updated", json!({"session": session})).into()]
            }
            "input_audio_buffer.append" => {
                match base64::engine::general_purpose::STANDARD.decode(client["audio"].as_str().unwrap_or_default()) {
                    Ok(bytes) => {
                        buffered += bytes.len();
                        vec![]
                    }
                    Err(_) => vec![event(
                        "error",
                        json!({"error": {"type": "invalid_request_error", "code": "invalid_value",
                                         "message": "audio is not base64"}}),
                    )
                    .into()],
                }
            }
            "input_audio_buffer.clear" => {
                buffered = 0;
                vec![event("input_audio_buffer.cleared", json!({})).into()]
            }
            "input_audio_buffer.commit" => {
                let item = format!("item_{}", rand_id());
                let seconds = buffered as f64 / (RATE * 2) as f64;
                committed += buffered;
                buffered = 0;
                vec![
                    event("input_audio_buffer.committed", json!({"item_id": item, "previous_item_id": null})).into(),
                    event(
                        "conversation.item.input_audio_transcription.completed",
                        json!({"item_id": item, "content_index": 0, "transcript": format!("heard {seconds:.1} seconds"),
                               "usage": {"type": "duration", "seconds": seconds}}),
                    )
                    .into(),
                ]
            }
            "response.create" => {
                shared.responses.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut asked) = shared.max_output_tokens.lock() {
                    asked.push(client.pointer("/response/max_output_tokens").and_then(Value::as_u64));
                }
                let id = format!("resp_{}", rand_id());
                let audio_in = (committed / (RATE * 2 / 10)) as u64;
                committed = 0;
                let mut out: Vec<Out> =
                    vec![event("response.created", json!({"response": {"id": id, "status": "in_progress"}})).into()];
                for (i, word) in ["Hello", " from", " the", " mock", "."].iter().enumerate() {
                    out.push(
                        event("response.output_audio_transcript.delta", json!({"response_id": id, "delta": word}))
                            .into(),
                    );
                    let audio = chunk_base64(i);
                    out.push(Out::Audio(json!({"response_id": id, "delta": audio})));
                }
                if shared.cut_responses.load(Ordering::SeqCst) {
                    emit(&mut tx, out.into_iter().take(2), &shared).await;
                    return;
                }
                out.push(event("response.output_audio.done", json!({"response_id": id})).into());
                out.push(
                    event(
                        "response.done",
                        json!({"response": {"id": id, "status": "completed", "usage": {
                        "total_tokens": TEXT_IN + audio_in + TEXT_OUT + AUDIO_OUT,
                        "input_tokens": TEXT_IN + audio_in, "output_tokens": TEXT_OUT + AUDIO_OUT,
                        "input_token_details": {"text_tokens": TEXT_IN, "audio_tokens": audio_in, "cached_tokens": 0},
                        "output_token_details": {"text_tokens": TEXT_OUT, "audio_tokens": AUDIO_OUT}}}}),
                    )
                    .into(),
                );
                out
            }
            other => vec![event(
                "error",
                json!({"error": {"type": "invalid_request_error", "code": "unknown_event",
                                 "message": format!("Invalid value: '{other}'")}}),
            )
            .into()],
        };
        if !emit(&mut tx, replies, &shared).await {
            return;
        }
    }
}
