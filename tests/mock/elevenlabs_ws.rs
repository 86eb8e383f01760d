#![allow(dead_code)]
//! ElevenLabs' two WebSocket APIs for the media mock (`media.rs`), on its port (the gateway has one ElevenLabs base
//! URL), through the HTTP layer's upgrade hook (`http.rs`). Wire formats, from ElevenLabs' API reference and the
//! official `elevenlabs` Python SDK 2.78.0:
//!
//! **Text to speech, `GET /v1/text-to-speech/{voice_id}/stream-input`.** Query: `model_id`, `output_format`
//! (`mp3_44100_128` by default; `pcm_16000|22050|24000|44100`, `ulaw_8000`, other mp3s), `inactivity_timeout`
//! (seconds, default 20, at most 180), `auto_mode`, `sync_alignment`, `language_code`, `enable_logging`,
//! `enable_ssml_parsing`, `apply_text_normalization`. Key: the `xi-api-key` header, or in the first message
//! `xi_api_key` (the docs; the SDK's schema spells it `xi-api-key`) or `authorization: "Bearer …"`. Client → server:
//! - first `{"text": " ", "voice_settings": {"stability", "similarity_boost", "style", "use_speaker_boost", "speed"},
//!   "generation_config": {"chunk_length_schedule": [120, 160, 250, 290]}, "xi_api_key": "…"}`;
//! - then `{"text": "Hello world. ", "try_trigger_generation": true}` or `{"text": "…", "flush": true}` (each text
//!   ends with a space); the server buffers the text and speaks it in pieces;
//! - `{"text": ""}` ends the input: the rest is spoken, then the server closes.
//!
//! Server → client: `{"audio": "<base64 in output_format>", "isFinal": null, "normalizedAlignment": {…},
//! "alignment": {"chars": ["H", …], "charStartTimesMs": [0, …], "charsDurationsMs": [50, …]}}` (times relative to the
//! chunk), and after the end `{"isFinal": true}` and a normal close (1000). Errors: `{"message": "…", "error":
//! "input_timeout_exceeded" | "invalid_input_message" | …, "code": 1008}`, then a close 1008 with the message as reason.
//!
//! **Realtime speech to text, `GET /v1/speech-to-text/realtime`.** Query: `model_id` (`scribe_v2_realtime`),
//! `audio_format` (`pcm_8000|16000|22050|24000|44100|48000`, `ulaw_8000`; default `pcm_16000`), `commit_strategy`
//! (`manual` | `vad`), `language_code`, `include_timestamps`, `include_language_detection`, `vad_silence_threshold_secs`,
//! `vad_threshold`, `min_speech_duration_ms`, `min_silence_duration_ms`, `keyterms`, `enable_logging`. Key: the
//! `xi-api-key` header or a single-use `token` query parameter. Server first: `{"message_type": "session_started",
//! "session_id": "…", "config": {"sample_rate", "audio_format", "language_code", "commit_strategy", "model_id", …}}`.
//! Client: `{"message_type": "input_audio_chunk", "audio_base_64": "…", "commit": false, "sample_rate": 16000,
//! "previous_text": null}`; `"commit": true` closes a segment. Server: `{"message_type": "partial_transcript", "text"}`,
//! `{"message_type": "committed_transcript", "text"}` and, with `include_timestamps`, `{"message_type":
//! "committed_transcript_with_timestamps", "text", "language_code", "words": [{"text", "start", "end", "type":
//! "word" | "spacing", "logprob"}]}`; errors `{"message_type": "error" | "auth_error" | "quota_exceeded" |
//! "input_error" | …, "error": "…"}`.
//!
//! **The mock.** TTS speaks [`MS_PER_CHAR`] of a 440 Hz tone per character (1,200 samples at 24 kHz) when the buffer
//! has a sentence end, on `flush`, in `auto_mode`, and at the end; chunks of at most [`CHARS_PER_CHUNK`] characters
//! (0.1 s), each with its alignment; PCM16 LE, μ-law, or placeholder bytes at the bitrate for mp3. STT: a
//! `partial_transcript` every 0.5 s of audio, and per commit `"mock transcript of N.NN seconds"` (the segment's audio).
//! Faults per route for the next sessions: [`WsFault`], set by [`WsState::set_fault`] or `POST /__mock/ws_fault`
//! `{"route": "tts" | "stt" | "all", "fault": "close_mid_response" | "stall" | "error" | "refuse" | "none",
//! "times": N, "status": 503}`; counts in [`WsState::stats`] and `GET /__mock/stats`.

// The session loops, once the connection has switched.
#[path = "elevenlabs_ws_sessions.rs"]
mod sessions;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::http::{split_query, Body, Request, Response, Switched, Upgrade};
use super::synth::{parse_output_format, Codec};
use super::{error_resp, lock, validation, Provider};
use sessions::{Session, Stt, Tts};

/// Audio per character of text.
pub const MS_PER_CHAR: u64 = 50;
/// Characters per audio message: 0.1 s.
pub const CHARS_PER_CHUNK: usize = 2;
/// A partial transcript after each this much audio.
pub const PARTIAL_EVERY_SECS: f64 = 0.5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WsRoute {
    Tts,
    Stt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsFault {
    None,
    /// TTS: the socket is dropped (no close frame) after the first audio message. STT: after the first audio chunk in.
    CloseMidResponse,
    /// TTS: nothing more after the first audio message. STT: nothing after `session_started`. Reads go on.
    Stall,
    /// TTS: an error message instead of the first audio, then close 1008. STT: on the first audio chunk, an `error`
    /// message, then close 1011.
    Error,
    /// The handshake is answered with this HTTP status (ElevenLabs' error body).
    Refuse(u16),
}

/// A handshake received on one of the routes.
#[derive(Clone, Debug)]
pub struct WsHandshake {
    pub route: WsRoute,
    /// Path and query string, as sent.
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
}

/// What reached the mock over its WebSockets.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WsStats {
    pub tts_sessions: u64,
    /// Characters of text received (the first message's " " and the closing "" excluded).
    pub tts_characters: u64,
    /// Seconds of audio sent.
    pub tts_audio_seconds: f64,
    pub stt_sessions: u64,
    /// Seconds of audio received (from the bytes and the `audio_format`).
    pub stt_audio_seconds: f64,
    pub stt_commits: u64,
    /// Sessions open now (both routes).
    pub open: u64,
    /// Handshakes refused (no key, a fault, bad parameters).
    pub refused: u64,
}

impl WsStats {
    pub fn to_json(self) -> Value {
        json!({"tts_ws_sessions": self.tts_sessions, "tts_ws_characters": self.tts_characters,
               "tts_ws_audio_seconds": self.tts_audio_seconds, "stt_ws_sessions": self.stt_sessions,
               "stt_ws_audio_seconds": self.stt_audio_seconds, "stt_ws_commits": self.stt_commits,
               "ws_open": self.open, "ws_refused": self.refused})
    }
}

#[derive(Default)]
pub struct WsState {
    faults: Mutex<HashMap<WsRoute, (WsFault, Option<u32>)>>,
    tts_sessions: AtomicU64,
    tts_characters: AtomicU64,
    tts_audio_ms: AtomicU64,
    stt_sessions: AtomicU64,
    stt_audio_us: AtomicU64,
    stt_commits: AtomicU64,
    open: AtomicU64,
    refused: AtomicU64,
    handshakes: Mutex<Vec<WsHandshake>>,
    tts_inits: Mutex<Vec<Value>>,
}

impl WsState {
    /// For the next `times` sessions of `route` (None: both), or until changed (`times` None).
    pub fn set_fault(&self, route: Option<WsRoute>, fault: WsFault, times: Option<u32>) {
        let mut faults = lock(&self.faults);
        for r in route.map_or(vec![WsRoute::Tts, WsRoute::Stt], |r| vec![r]) {
            faults.insert(r, (fault, times));
        }
    }

    fn take_fault(&self, route: WsRoute) -> WsFault {
        match lock(&self.faults).get_mut(&route) {
            None | Some((_, Some(0))) => WsFault::None,
            Some((fault, None)) => *fault,
            Some((fault, Some(n))) => {
                *n -= 1;
                *fault
            }
        }
    }

    pub fn stats(&self) -> WsStats {
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        WsStats {
            tts_sessions: get(&self.tts_sessions),
            tts_characters: get(&self.tts_characters),
            tts_audio_seconds: get(&self.tts_audio_ms) as f64 / 1000.0,
            stt_sessions: get(&self.stt_sessions),
            stt_audio_seconds: get(&self.stt_audio_us) as f64 / 1e6,
            stt_commits: get(&self.stt_commits),
            open: get(&self.open),
            refused: get(&self.refused),
        }
    }

    pub fn handshakes(&self) -> Vec<WsHandshake> {
        lock(&self.handshakes).clone()
    }

    /// The first message of every TTS session, in order.
    pub fn tts_inits(&self) -> Vec<Value> {
        lock(&self.tts_inits).clone()
    }
}

/// Counts a session open while alive (sessions are counted at the handshake, so that they show at once).
struct Open(Arc<WsState>);

impl Open {
    fn new(st: &Arc<WsState>) -> Open {
        st.open.fetch_add(1, Ordering::SeqCst);
        Open(st.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `GET /__mock/stats` and `POST /__mock/ws_fault` on the media mock; `calls`: HTTP requests received.
pub fn control(st: &WsState, what: &str, req: &Request, calls: u64) -> Response {
    match (req.method.as_str(), what) {
        ("GET", "stats") => {
            let mut v = st.stats().to_json();
            v["calls"] = json!(calls);
            Response::json(200, v)
        }
        ("POST", "ws_fault") => {
            let v = req.json();
            let route = match v.get("route").and_then(Value::as_str).unwrap_or("all") {
                "tts" => Some(Some(WsRoute::Tts)),
                "stt" => Some(Some(WsRoute::Stt)),
                "all" => Some(None),
                _ => None,
            };
            let status = v.get("status").and_then(Value::as_u64).and_then(|s| u16::try_from(s).ok()).unwrap_or(503);
            let fault = match v.get("fault").and_then(Value::as_str) {
                Some("none") => Some(WsFault::None),
                Some("close_mid_response") => Some(WsFault::CloseMidResponse),
                Some("stall") => Some(WsFault::Stall),
                Some("error") => Some(WsFault::Error),
                Some("refuse") => Some(WsFault::Refuse(status)),
                _ => None,
            };
            let times = v.get("times").and_then(Value::as_u64).and_then(|t| u32::try_from(t).ok());
            match (route, fault) {
                (Some(route), Some(fault)) => {
                    st.set_fault(route, fault, times);
                    Response::json(200, r#"{"ok":true}"#)
                }
                _ => Response::json(400, r#"{"ok":false,"error":"bad ws fault"}"#),
            }
        }
        _ => Response::json(404, r#"{"ok":false,"error":"unknown control endpoint"}"#),
    }
}

fn flag(query: &HashMap<String, String>, key: &str) -> bool {
    query.get(key).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The answer to a WebSocket handshake on one of the two routes; None when `req` is not one.
pub fn handshake(st: &Arc<WsState>, req: &Request) -> Option<Response> {
    let (path, query) = split_query(&req.path);
    let route = match path.split('/').collect::<Vec<_>>()[..] {
        ["", "v1", "text-to-speech", voice, "stream-input"] if !voice.is_empty() => WsRoute::Tts,
        ["", "v1", "speech-to-text", "realtime"] => WsRoute::Stt,
        _ => return None,
    };
    if req.method != "GET" || !req.header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        return None;
    }
    lock(&st.handshakes).push(WsHandshake { route, path: req.path.clone(), headers: req.headers.clone() });
    let refuse = |r: Response| {
        st.refused.fetch_add(1, Ordering::SeqCst);
        Some(r)
    };
    let Some(accept) = req.header("sec-websocket-key").map(|k| derive_accept_key(k.trim().as_bytes())) else {
        return refuse(error_resp(Provider::Eleven, 400, Some("Missing Sec-WebSocket-Key")));
    };
    let header_key = req.header("xi-api-key").map(|k| !k.trim().is_empty());
    let token = query.get("token").is_some_and(|t| !t.trim().is_empty());
    // TTS may carry its key in the first message instead; a blank header is refused.
    let authorized = match route {
        WsRoute::Tts => header_key != Some(false),
        WsRoute::Stt => header_key == Some(true) || token,
    };
    if !authorized {
        return refuse(error_resp(Provider::Eleven, 401, None));
    }
    let fault = st.take_fault(route);
    if let WsFault::Refuse(status) = fault {
        return refuse(error_resp(Provider::Eleven, status, None));
    }
    let bad = |loc: &str, v: &str| validation(&["query", loc], "enum", "Input should be a valid value", json!(v), None);
    let session: Session = match route {
        WsRoute::Tts => {
            let format = query.get("output_format").map_or("mp3_44100_128", String::as_str);
            let Some((codec, rate)) = parse_output_format(format).filter(|(c, _)| *c != Codec::Wav) else {
                return refuse(bad("output_format", format));
            };
            let secs = query.get("inactivity_timeout").and_then(|t| t.parse::<f64>().ok()).unwrap_or(20.0);
            Session::Tts(Tts {
                codec,
                rate,
                timeout: Duration::from_secs_f64(secs.clamp(0.05, 180.0)),
                auto_mode: flag(&query, "auto_mode"),
                header_key: header_key == Some(true),
            })
        }
        WsRoute::Stt => {
            let Some(model) = query.get("model_id").filter(|m| !m.is_empty()) else {
                return refuse(validation(&["query", "model_id"], "missing", "Field required", Value::Null, None));
            };
            let format = query.get("audio_format").map_or("pcm_16000", String::as_str);
            let Some((codec, rate)) =
                parse_output_format(format).filter(|(c, _)| matches!(c, Codec::Pcm | Codec::Ulaw))
            else {
                return refuse(bad("audio_format", format));
            };
            let num = |k: &str, d: f64| query.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(d);
            let vad = query.get("commit_strategy").is_some_and(|c| c == "vad");
            let language = query.get("language_code").cloned().unwrap_or_else(|| "en".into());
            let silence = num("vad_silence_threshold_secs", 1.5);
            let config = json!({"sample_rate": rate, "audio_format": format, "language_code": language,
                "commit_strategy": if vad { "vad" } else { "manual" }, "vad_silence_threshold_secs": silence,
                "vad_threshold": num("vad_threshold", 0.4), "min_speech_duration_ms": num("min_speech_duration_ms", 100.0),
                "min_silence_duration_ms": num("min_silence_duration_ms", 100.0), "model_id": model,
                "enable_logging": query.get("enable_logging").is_none_or(|v| v != "false"),
                "include_timestamps": flag(&query, "include_timestamps"),
                "include_language_detection": flag(&query, "include_language_detection")});
            Session::Stt(Stt {
                bytes_per_sec: f64::from(rate) * if codec == Codec::Ulaw { 1.0 } else { 2.0 },
                pcm: codec == Codec::Pcm,
                vad_silence: vad.then_some(silence),
                timestamps: flag(&query, "include_timestamps"),
                language,
                config,
            })
        }
    };
    match route {
        WsRoute::Tts => st.tts_sessions.fetch_add(1, Ordering::SeqCst),
        WsRoute::Stt => st.stt_sessions.fetch_add(1, Ordering::SeqCst),
    };
    let st = st.clone();
    let hook = Upgrade(Arc::new(move |io| -> Switched {
        let (st, session) = (st.clone(), session.clone());
        Box::pin(async move {
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
            match session {
                Session::Tts(cfg) => sessions::tts(ws, st, cfg, fault).await,
                Session::Stt(cfg) => sessions::stt(ws, st, cfg, fault).await,
            }
        })
    }));
    Some(Response {
        status: 101,
        headers: vec![
            ("upgrade".into(), "websocket".into()),
            ("connection".into(), "Upgrade".into()),
            ("sec-websocket-accept".into(), accept),
        ],
        body: Body::Upgrade(hook),
    })
}
