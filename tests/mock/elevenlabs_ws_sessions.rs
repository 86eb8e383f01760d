//! The ElevenLabs WebSocket sessions of the media mock, once the connection has switched: text to speech
//! (`stream-input`) and realtime speech to text. The wire formats and what the mock does: `elevenlabs_ws.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::super::http::Upgraded;
use super::super::synth::{splitmix, ulaw_encode, Codec, TONE_HZ};
use super::super::{lock, now_nanos};
use super::{Open, WsFault, WsState, CHARS_PER_CHUNK, MS_PER_CHAR, PARTIAL_EVERY_SECS};

type Ws = WebSocketStream<Upgraded>;

#[derive(Clone)]
pub(super) enum Session {
    Tts(Tts),
    Stt(Stt),
}

#[derive(Clone)]
pub(super) struct Tts {
    pub(super) codec: Codec,
    pub(super) rate: u32,
    pub(super) timeout: Duration,
    pub(super) auto_mode: bool,
    /// The key came in the `xi-api-key` header (otherwise the first message must have one).
    pub(super) header_key: bool,
}

#[derive(Clone)]
pub(super) struct Stt {
    pub(super) bytes_per_sec: f64,
    pub(super) pcm: bool,
    /// `commit_strategy=vad`: commit after this much silence.
    pub(super) vad_silence: Option<f64>,
    pub(super) timestamps: bool,
    pub(super) language: String,
    pub(super) config: Value,
}

/// Sends `msg`, then a close frame with `code` and `reason`, and waits for the peer's close (briefly).
async fn close_with(mut ws: Ws, msg: Option<Value>, code: CloseCode, reason: &str) {
    if let Some(m) = msg {
        let _ = ws.send(Message::text(m.to_string())).await;
    }
    // A close reason has at most 123 bytes.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let _ = ws.send(Message::Close(Some(CloseFrame { code, reason: reason[..end].into() }))).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async { while let Some(Ok(_)) = ws.next().await {} }).await;
}

/// The stall: reads and drops whatever comes until the peer leaves.
async fn stall(mut ws: Ws) {
    while let Some(Ok(_)) = ws.next().await {}
}

fn tts_error(message: &str, error: &str) -> Value {
    json!({"message": message, "error": error, "code": 1008})
}

/// The TTS error message, then a close 1008 with the message as its reason.
async fn policy(ws: Ws, message: &str, error: &str) {
    close_with(ws, Some(tts_error(message, error)), CloseCode::Policy, message).await;
}

/// The session's audio for characters `[from, to)` of everything spoken, in the output format.
fn render(cfg: &Tts, from: u64, to: u64) -> Vec<u8> {
    let rate = u64::from(cfg.rate);
    let (s0, s1) = (from * rate * MS_PER_CHAR / 1000, to * rate * MS_PER_CHAR / 1000);
    let sample = |i: u64| {
        let t = i as f64 / rate as f64;
        ((t * TONE_HZ * std::f64::consts::TAU).sin() * 0.3 * f64::from(i16::MAX)) as i16
    };
    match cfg.codec {
        Codec::Ulaw => (s0..s1).map(|i| ulaw_encode(sample(i))).collect(),
        Codec::Mp3 { bitrate } => {
            let byte = |s: u64| s * u64::from(bitrate) * 125 / rate;
            (byte(s0)..byte(s1)).map(|i| (i.wrapping_mul(31) % 251) as u8).collect()
        }
        _ => (s0..s1).flat_map(|i| sample(i).to_le_bytes()).collect(),
    }
}

enum Flow {
    Go,
    /// The session ends here (the socket already closed, or to be dropped without a close frame).
    End,
    Stall,
}

/// Speaks `text`: audio messages of [`CHARS_PER_CHUNK`] characters each, with their alignment.
async fn speak(ws: &mut Ws, st: &WsState, cfg: &Tts, spoken: &mut u64, text: &str, fault: WsFault) -> Flow {
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(CHARS_PER_CHUNK) {
        let n = piece.len() as u64;
        let audio = base64::engine::general_purpose::STANDARD.encode(render(cfg, *spoken, *spoken + n));
        let align = json!({"chars": piece.iter().map(char::to_string).collect::<Vec<_>>(),
            "charStartTimesMs": (0..n).map(|i| i * MS_PER_CHAR).collect::<Vec<_>>(),
            "charsDurationsMs": vec![MS_PER_CHAR; piece.len()]});
        let msg = json!({"audio": audio, "isFinal": null, "normalizedAlignment": align, "alignment": align});
        if ws.send(Message::text(msg.to_string())).await.is_err() {
            return Flow::End;
        }
        st.tts_audio_ms.fetch_add(n * MS_PER_CHAR, Ordering::SeqCst);
        let first = *spoken == 0;
        *spoken += n;
        match fault {
            WsFault::CloseMidResponse if first => return Flow::End,
            WsFault::Stall if first => return Flow::Stall,
            _ => {}
        }
    }
    Flow::Go
}

/// Where the buffer can be spoken up to: after its last sentence end followed by whitespace.
fn sentence_cut(buffer: &str) -> Option<usize> {
    let mut cut = None;
    let mut prev_end = false;
    for (i, c) in buffer.char_indices() {
        if prev_end && c.is_whitespace() {
            cut = Some(i + c.len_utf8());
        }
        prev_end = matches!(c, '.' | '!' | '?' | ';');
    }
    cut
}

pub(super) async fn tts(mut ws: Ws, st: Arc<WsState>, cfg: Tts, fault: WsFault) {
    let _open = Open::new(&st);
    let (mut buffer, mut first, mut spoken) = (String::new(), true, 0u64);
    loop {
        let frame = match tokio::time::timeout(cfg.timeout, ws.next()).await {
            Err(_) => {
                let msg = format!("Have not received a new text input within the timeout of {:.1} seconds. Streaming input terminated. Please make sure to either feed the input in the timely manner, or to send the end of input text (empty string \"\") when done.", cfg.timeout.as_secs_f64());
                let reason = format!(
                    "Have not received a new text input within the timeout of {:.1} seconds.",
                    cfg.timeout.as_secs_f64()
                );
                let _ = ws.send(Message::text(tts_error(&msg, "input_timeout_exceeded").to_string())).await;
                return close_with(ws, None, CloseCode::Policy, &reason).await;
            }
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return,
            Ok(Some(Ok(_))) => continue,
        };
        let msg = serde_json::from_str::<Value>(frame.as_str()).unwrap_or(Value::Null);
        let Some(text) = msg.get("text").and_then(Value::as_str) else {
            let m =
                "Could not parse input message, make sure it is a json and follows the schema outlined in protocol.";
            return policy(ws, m, "invalid_input_message").await;
        };
        if std::mem::take(&mut first) {
            lock(&st.tts_inits).push(msg.clone());
            let keyed = ["xi_api_key", "xi-api-key", "authorization"]
                .iter()
                .any(|k| msg.get(k).and_then(Value::as_str).is_some_and(|v| !v.trim().is_empty()));
            if !cfg.header_key && !keyed {
                let m = "You must be authorized to use this endpoint: the xi-api-key header or xi_api_key in the first message.";
                return policy(ws, m, "invalid_api_key").await;
            }
            if text.trim().is_empty() && !text.is_empty() {
                continue;
            }
        }
        st.tts_characters.fetch_add(text.chars().count() as u64, Ordering::SeqCst);
        buffer.push_str(text);
        let end = text.is_empty();
        let flush = end || cfg.auto_mode || msg.get("flush").and_then(Value::as_bool) == Some(true);
        let cut = if flush { Some(buffer.len()) } else { sentence_cut(&buffer) };
        if let Some(cut) = cut.filter(|_| !buffer.trim().is_empty()) {
            if fault == WsFault::Error {
                let m = "We are sorry, something went wrong. You are not charged for this request.";
                return policy(ws, m, "internal_server_error").await;
            }
            let piece: String = buffer.drain(..cut).collect();
            match speak(&mut ws, &st, &cfg, &mut spoken, &piece, fault).await {
                Flow::Go => {}
                Flow::End => return,
                Flow::Stall => return stall(ws).await,
            }
        }
        if end {
            let _ = ws.send(Message::text(json!({"isFinal": true}).to_string())).await;
            return close_with(ws, None, CloseCode::Normal, "").await;
        }
    }
}

fn transcript(secs: f64) -> String {
    format!("mock transcript of {secs:.2} seconds")
}

fn stt_msg(kind: &str, mut body: Value) -> Message {
    body["message_type"] = json!(kind);
    Message::text(body.to_string())
}

/// The committed messages for a segment of `secs` seconds.
fn committed(cfg: &Stt, secs: f64) -> Vec<Message> {
    let text = if secs > 0.0 { transcript(secs) } else { String::new() };
    let mut out = vec![stt_msg("committed_transcript", json!({"text": text}))];
    if cfg.timestamps {
        let tokens: Vec<&str> = text.split(' ').filter(|t| !t.is_empty()).collect();
        let slot = secs / tokens.len().max(1) as f64;
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        let mut words = Vec::new();
        for (i, w) in tokens.iter().enumerate() {
            let (s, e) = (slot * i as f64, slot * (i as f64 + 0.9));
            if i > 0 {
                words.push(json!({"text": " ", "start": round(s - 0.1 * slot), "end": round(s), "type": "spacing", "logprob": 0.0}));
            }
            words.push(json!({"text": w, "start": round(s), "end": round(e), "type": "word", "logprob": 0.0}));
        }
        let body = json!({"text": text, "language_code": cfg.language, "words": words});
        out.push(stt_msg("committed_transcript_with_timestamps", body));
    }
    out
}

pub(super) async fn stt(mut ws: Ws, st: Arc<WsState>, cfg: Stt, fault: WsFault) {
    let _open = Open::new(&st);
    let session_id = format!("{:016x}{:016x}", splitmix(now_nanos()), splitmix(now_nanos() ^ 0x5555));
    let started = stt_msg("session_started", json!({"session_id": session_id, "config": cfg.config}));
    if ws.send(started).await.is_err() {
        return;
    }
    if fault == WsFault::Stall {
        return stall(ws).await;
    }
    // Bytes in the current segment, at the last partial, and of trailing silence (vad); whether it has speech.
    let (mut segment, mut partial_at, mut silence, mut speech, mut first) = (0usize, 0usize, 0usize, false, true);
    while let Some(Ok(frame)) = ws.next().await {
        let text = match frame {
            Message::Text(t) => t,
            Message::Close(_) => return,
            _ => continue,
        };
        let msg = serde_json::from_str::<Value>(text.as_str()).unwrap_or(Value::Null);
        let mut replies = Vec::new();
        if msg.get("message_type").and_then(Value::as_str) != Some("input_audio_chunk") {
            let error = format!("Unknown message type: {}", msg.get("message_type").unwrap_or(&Value::Null));
            replies.push(stt_msg("input_error", json!({"error": error})));
        } else {
            let b64 = msg.get("audio_base_64").and_then(Value::as_str).unwrap_or_default();
            match base64::engine::general_purpose::STANDARD.decode(b64) {
                Err(_) => replies.push(stt_msg("input_error", json!({"error": "audio_base_64 is not valid base64"}))),
                Ok(audio) => {
                    let us = (audio.len() as f64 / cfg.bytes_per_sec * 1e6).round() as u64;
                    st.stt_audio_us.fetch_add(us, Ordering::SeqCst);
                    if !audio.is_empty() && std::mem::take(&mut first) {
                        match fault {
                            WsFault::CloseMidResponse => return,
                            WsFault::Error => {
                                let body = json!({"error": "An internal error occurred (mock)."});
                                let _ = ws.send(stt_msg("error", body)).await;
                                return close_with(ws, None, CloseCode::Error, "internal error").await;
                            }
                            _ => {}
                        }
                    }
                    segment += audio.len();
                    let loud =
                        cfg.pcm && audio.chunks_exact(2).any(|s| i16::from_le_bytes([s[0], s[1]]).unsigned_abs() > 500);
                    (speech, silence) = if loud { (true, 0) } else { (speech, silence + audio.len()) };
                    let vad_commit = cfg.vad_silence.is_some_and(|s| speech && silence as f64 >= s * cfg.bytes_per_sec);
                    if msg.get("commit").and_then(Value::as_bool) == Some(true) || vad_commit {
                        st.stt_commits.fetch_add(1, Ordering::SeqCst);
                        replies.extend(committed(&cfg, segment as f64 / cfg.bytes_per_sec));
                        (segment, partial_at, silence, speech) = (0, 0, 0, false);
                    } else if (segment - partial_at) as f64 >= PARTIAL_EVERY_SECS * cfg.bytes_per_sec {
                        partial_at = segment;
                        let text = transcript(segment as f64 / cfg.bytes_per_sec);
                        replies.push(stt_msg("partial_transcript", json!({"text": text})));
                    }
                }
            }
        }
        for reply in replies {
            if ws.send(reply).await.is_err() {
                return;
            }
        }
    }
}
