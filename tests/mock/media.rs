#![allow(dead_code)]
//! Mock upstream for Switchyard's media providers: speaks the Black Forest Labs (Flux, submit-then-poll)
//! and the ElevenLabs (text-to-speech, speech-to-speech, speech-to-text, voices) wire formats over the
//! mocks' shared HTTP layer (`http.rs`), and can inject faults. Used in-process by integration tests, and by
//! `switchyard-mock --media`. ElevenLabs' WebSocket APIs are in `elevenlabs_ws.rs`, which also answers the control
//! requests `GET /__mock/stats` and `POST /__mock/ws_fault`.
//!
//! Everything it produces is real (`synth.rs`): PNG samples of the requested size, 16-bit PCM / WAV tones,
//! and MP3 when `ffmpeg` is on PATH (501 otherwise).

// Test crates that include both mocks load this file twice, as two private modules.
#[allow(clippy::duplicate_mod)]
#[path = "http.rs"]
mod http;
#[path = "synth.rs"]
mod synth;
// ElevenLabs' WebSocket APIs (text-to-speech stream-input, realtime speech-to-text), on this mock's port.
#[path = "elevenlabs_ws.rs"]
mod elevenlabs_ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{find_header, split_query, Body, Connections, Request, Response, Step};
use serde_json::{json, Value};
use synth::{ffmpeg_on_path, parse_output_format, splitmix, to_jpeg, to_mp3, ulaw_encode, Codec};
use tokio::net::TcpListener;

// The media helpers tests use, at the paths they had before `synth.rs` was split out.
#[allow(unused_imports)]
pub use elevenlabs_ws::{WsFault, WsHandshake, WsRoute, WsState, WsStats, CHARS_PER_CHUNK, MS_PER_CHAR};
#[allow(unused_imports)]
pub use http::{parse_multipart, Part};
#[allow(unused_imports)]
pub use synth::{
    adler32, crc32, pcm_tone, png, samples_for, tts_seconds, wav, wav_duration, SECONDS_PER_CHAR, TONE_HZ,
};

/// A request the mock received (path with query string, header names lowercased in the order received).
pub type Recorded = Request;

/// A request's query parameters.
type Query = HashMap<String, String>;

/// Chunk size of the streamed text-to-speech body.
pub const STREAM_CHUNK: usize = 4096;

/// Voices listed by `GET /v1/voices` (ElevenLabs premade voices).
pub const VOICES: [(&str, &str, &str, &str); 4] = [
    ("pNInz6obpgDQGcFmaJgB", "Adam", "male", "american"),
    ("21m00Tcm4TlvDq8ikWAM", "Rachel", "female", "american"),
    ("EXAVITQu4vr4xnSDxMaL", "Sarah", "female", "american"),
    ("JBFqnCBsd6RMkjVDRZzb", "George", "male", "british"),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaFault {
    None,
    /// Provider-shaped error body with this status (`retry-after` header when given).
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// BFL: the task ends with status "Error".
    TaskFailed,
    /// BFL: the task ends with status "Content Moderated".
    Moderated,
    /// BFL: the task stays "Pending" forever.
    NeverReady,
    /// ElevenLabs TTS / STS: send the headers and this many body bytes, then close the connection.
    CutAudio {
        after_bytes: usize,
    },
    /// Read the request, then reset the connection without a byte.
    Reset,
    /// Read the request, wait this long, then answer normally.
    Stall(Duration),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Normal,
    Failed,
    Moderated,
    NeverReady,
}

#[derive(Clone, Debug)]
struct Task {
    prompt: String,
    seed: u64,
    width: u32,
    height: u32,
    output_format: String,
    polls: u32,
    outcome: Outcome,
    start_time: f64,
}

struct Shared {
    fault: Mutex<(MediaFault, Option<u32>)>,
    pending_polls: AtomicU32,
    seq: AtomicU64,
    paths: Mutex<Vec<String>>,
    last: Mutex<Option<Recorded>>,
    tasks: Mutex<HashMap<String, Task>>,
    base: String,
    ws: Arc<WsState>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn take_fault(&self) -> MediaFault {
        let mut f = lock(&self.fault);
        match f.1 {
            None => f.0.clone(),
            Some(0) => MediaFault::None,
            Some(n) => {
                let out = f.0.clone();
                *f = if n == 1 { (MediaFault::None, None) } else { (out.clone(), Some(n - 1)) };
                out
            }
        }
    }

    fn new_id(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        let a = splitmix(n ^ now_nanos());
        let b = splitmix(a);
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }
}

pub struct MediaMock {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _server: http::Server,
}

impl MediaMock {
    /// Binds 127.0.0.1:0.
    pub async fn start() -> std::io::Result<MediaMock> {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> std::io::Result<MediaMock> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            fault: Mutex::new((MediaFault::None, None)),
            pending_polls: AtomicU32::new(2),
            seq: AtomicU64::new(0),
            paths: Mutex::new(Vec::new()),
            last: Mutex::new(None),
            tasks: Mutex::new(HashMap::new()),
            base: format!("http://{addr}"),
            ws: Arc::default(),
        });
        let sh = shared.clone();
        let server = http::serve(listener, Connections::default(), move |req| record_and_handle(sh.clone(), req));
        Ok(MediaMock { addr, shared, _server: server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    /// Applies to the next `times` API requests (None = until changed).
    pub fn set_fault(&self, fault: MediaFault, times: Option<u32>) {
        *lock(&self.shared.fault) = (fault, times);
    }

    /// Requests received whose path starts with `path_prefix` ("" = all).
    pub fn calls(&self, path_prefix: &str) -> u64 {
        lock(&self.shared.paths).iter().filter(|p| p.starts_with(path_prefix)).count() as u64
    }

    pub fn last_request(&self) -> Option<Recorded> {
        lock(&self.shared.last).clone()
    }

    /// The WebSocket routes' faults, counts and handshakes.
    pub fn ws(&self) -> &WsState {
        &self.shared.ws
    }

    /// BFL: how many polls of a task answer "Pending" before "Ready" (default 2).
    pub fn set_pending_polls(&self, n: u32) {
        self.shared.pending_polls.store(n, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Small helpers

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn now_secs_f64() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn part<'a>(parts: &'a [Part], name: &str) -> Option<&'a Part> {
    parts.iter().find(|p| p.name == name)
}

fn part_text(parts: &[Part], name: &str) -> Option<String> {
    part(parts, name).map(|p| String::from_utf8_lossy(&p.data).into_owned())
}

// ---------------------------------------------------------------------------------------------------------
// Responses

#[derive(Clone, Copy, PartialEq, Eq)]
enum Provider {
    Bfl,
    Eleven,
}

fn provider_of(path: &str) -> Provider {
    if path.starts_with("/v1/text-to-speech")
        || path.starts_with("/v1/speech-to-")
        || path.starts_with("/v1/voices")
        || path.starts_with("/v1/models")
    {
        Provider::Eleven
    } else {
        Provider::Bfl
    }
}

fn bytes(content_type: &str, data: Vec<u8>) -> Response {
    Response::new(200, content_type, data)
}

fn error_resp(provider: Provider, status: u16, message: Option<&str>) -> Response {
    match provider {
        Provider::Bfl => {
            let msg = match status {
                401 | 403 => "Not authenticated",
                402 => "Insufficient credits",
                404 => "Not Found",
                429 => "You have reached the maximum number of active tasks. Please wait and try again.",
                s if s >= 500 => "Internal Server Error",
                _ => "Bad request",
            };
            Response::json(status, json!({ "detail": message.unwrap_or(msg) }))
        }
        Provider::Eleven => {
            let (st, msg) = match status {
                400 => ("invalid_request", "Invalid request (mock)."),
                401 => ("invalid_api_key", "Invalid API key"),
                402 => ("payment_required", "Payment required (mock)."),
                403 => {
                    ("missing_permissions", "The API key you used is missing the permission to execute this operation.")
                }
                404 => ("not_found", "Not found (mock)."),
                429 => ("too_many_concurrent_requests", "Too many concurrent requests for your subscription (mock)."),
                503 => ("system_busy", "We are experiencing heavy traffic, please try again later."),
                s if s >= 500 => ("internal_server_error", "An internal error occurred (mock)."),
                _ => ("error", "Request failed (mock)."),
            };
            Response::json(status, json!({ "detail": { "status": st, "message": message.unwrap_or(msg) } }))
        }
    }
}

/// FastAPI-style 422 validation error (both providers are FastAPI services).
fn validation(loc: &[&str], ty: &str, msg: &str, input: Value, ctx: Option<Value>) -> Response {
    let mut item = json!({ "type": ty, "loc": loc, "msg": msg, "input": input });
    if let Some(c) = ctx {
        item["ctx"] = c;
    }
    Response::json(422, json!({ "detail": [item] }))
}

// ---------------------------------------------------------------------------------------------------------
// Handlers

async fn record_and_handle(sh: Arc<Shared>, req: Request) -> Response {
    let (p, _) = split_query(&req.path);
    if let Some(ctl) = p.strip_prefix("/__mock/") {
        return elevenlabs_ws::control(&sh.ws, ctl, &req, lock(&sh.paths).len() as u64);
    }
    lock(&sh.paths).push(p.to_string());
    *lock(&sh.last) = Some(req.clone());
    if let Some(switch) = elevenlabs_ws::handshake(&sh.ws, &req) {
        return switch;
    }
    handle(&sh, &req).await
}

async fn handle(sh: &Shared, req: &Request) -> Response {
    let (path, query) = split_query(&req.path);
    let provider = provider_of(path);
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let is_sample = segs.first() == Some(&"samples");

    // Auth first: a bad key is answered before any fault.
    if !is_sample {
        match provider {
            Provider::Bfl => {
                if find_header(&req.headers, "x-key").is_none_or(|k| k.trim().is_empty()) {
                    return error_resp(Provider::Bfl, 403, Some("Not authenticated"));
                }
            }
            Provider::Eleven => {
                if find_header(&req.headers, "xi-api-key").is_none_or(|k| k.trim().is_empty()) {
                    return error_resp(Provider::Eleven, 401, None);
                }
            }
        }
    }

    let fault = sh.take_fault();
    match fault {
        MediaFault::Reset => return Response::reset(),
        MediaFault::Stall(pause) => tokio::time::sleep(pause).await,
        _ => {}
    }
    if let MediaFault::Status { status, retry_after } = fault {
        let mut r = error_resp(provider, status, None);
        if let Some(s) = retry_after {
            r = r.header("retry-after", s.to_string());
        }
        return r;
    }

    let method = req.method.as_str();
    match (method, segs.as_slice()) {
        ("GET", ["samples", file]) => sample(sh, file).await,
        ("GET", ["v1", "get_result"]) => get_result(sh, query.get("id").map(String::as_str).unwrap_or(""), &fault),
        ("GET", ["v1", "voices"]) => voices(),
        ("GET", ["v1", "voices", id]) => match voice_json(id) {
            Some(v) => Response::json(200, v),
            None => voice_not_found(id),
        },
        ("POST", ["v1", "text-to-speech", voice]) => tts(req, voice, &query, false, &fault).await,
        ("POST", ["v1", "text-to-speech", voice, "stream"]) => tts(req, voice, &query, true, &fault).await,
        ("POST", ["v1", "speech-to-speech", voice]) => sts(req, voice, &query, false, &fault).await,
        ("POST", ["v1", "speech-to-speech", voice, "stream"]) => sts(req, voice, &query, true, &fault).await,
        ("POST", ["v1", "speech-to-text"]) => stt(req),
        ("POST", ["v1", model]) if provider == Provider::Bfl => submit(sh, model, req, &fault),
        _ => error_resp(provider, 404, Some("Not Found")),
    }
}

// ----- BFL

/// Steps and guidance each BFL model takes (`None`: the field is refused, as an extra field would be).
fn tuning(model: &str) -> (Option<u64>, Option<(f64, f64)>) {
    match model {
        "flux-pro" | "flux-dev" => (Some(50), Some((1.5, 5.0))),
        "flux-schnell" => (Some(4), None),
        _ => (None, None),
    }
}

fn submit(sh: &Shared, model: &str, req: &Request, fault: &MediaFault) -> Response {
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(other) => {
            return validation(&["body"], "model_attributes_type", "Input should be a valid dictionary", other, None)
        }
        Err(e) => {
            return validation(
                &["body", "0"],
                "json_invalid",
                "JSON decode error",
                json!({}),
                Some(json!({ "error": e.to_string() })),
            )
        }
    };
    let prompt = match body.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => {
            return validation(&["body", "prompt"], "missing", "Field required", body.clone(), None);
        }
        Some(other) => {
            return validation(
                &["body", "prompt"],
                "string_type",
                "Input should be a valid string",
                other.clone(),
                None,
            )
        }
    };
    let mut dims = [1024u32, 768u32];
    for (i, key) in ["width", "height"].iter().enumerate() {
        let Some(v) = body.get(*key).filter(|v| !v.is_null()) else { continue };
        let Some(n) = v.as_i64() else {
            return validation(&["body", key], "int_type", "Input should be a valid integer", v.clone(), None);
        };
        if n < 256 {
            return validation(
                &["body", key],
                "greater_than_equal",
                "Input should be greater than or equal to 256",
                v.clone(),
                Some(json!({ "ge": 256 })),
            );
        }
        if n > 1440 {
            return validation(
                &["body", key],
                "less_than_equal",
                "Input should be less than or equal to 1440",
                v.clone(),
                Some(json!({ "le": 1440 })),
            );
        }
        if n % 32 != 0 {
            return validation(
                &["body", key],
                "multiple_of",
                "Input should be a multiple of 32",
                v.clone(),
                Some(json!({ "multiple_of": 32 })),
            );
        }
        dims[i] = n as u32;
    }
    let (max_steps, guidance) = tuning(model);
    if let Some(v) = body.get("steps").filter(|v| !v.is_null()) {
        let Some(max) = max_steps else {
            return validation(
                &["body", "steps"],
                "extra_forbidden",
                "Extra inputs are not permitted",
                v.clone(),
                None,
            );
        };
        if !v.as_u64().is_some_and(|n| (1..=max).contains(&n)) {
            let msg = format!("Input should be an integer from 1 to {max}");
            return validation(&["body", "steps"], "less_than_equal", &msg, v.clone(), Some(json!({ "le": max })));
        }
    }
    if let Some(v) = body.get("guidance").filter(|v| !v.is_null()) {
        let Some((lo, hi)) = guidance else {
            return validation(
                &["body", "guidance"],
                "extra_forbidden",
                "Extra inputs are not permitted",
                v.clone(),
                None,
            );
        };
        if !v.as_f64().is_some_and(|g| (lo..=hi).contains(&g)) {
            let msg = format!("Input should be from {lo} to {hi}");
            return validation(&["body", "guidance"], "less_than_equal", &msg, v.clone(), Some(json!({ "le": hi })));
        }
    }
    let output_format = match body.get("output_format") {
        None | Some(Value::Null) => "jpeg".to_string(),
        Some(Value::String(s)) if s == "png" || s == "jpeg" => s.clone(),
        Some(other) => {
            return validation(
                &["body", "output_format"],
                "enum",
                "Input should be 'jpeg' or 'png'",
                other.clone(),
                Some(json!({ "expected": "'jpeg' or 'png'" })),
            )
        }
    };
    let seed = body.get("seed").and_then(Value::as_u64).unwrap_or_else(|| {
        prompt.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
            % 4_294_967_296
    });
    let outcome = match fault {
        MediaFault::TaskFailed => Outcome::Failed,
        MediaFault::Moderated => Outcome::Moderated,
        MediaFault::NeverReady => Outcome::NeverReady,
        _ => Outcome::Normal,
    };
    let id = sh.new_id();
    lock(&sh.tasks).insert(
        id.clone(),
        Task {
            prompt,
            seed,
            width: dims[0],
            height: dims[1],
            output_format,
            polls: 0,
            outcome,
            start_time: now_secs_f64(),
        },
    );
    Response::json(200, json!({ "id": id, "polling_url": format!("{}/v1/get_result?id={id}", sh.base) }))
}

fn get_result(sh: &Shared, id: &str, fault: &MediaFault) -> Response {
    let pending = sh.pending_polls.load(Ordering::SeqCst);
    let mut tasks = lock(&sh.tasks);
    let Some(task) = tasks.get_mut(id) else {
        return Response::json(200, json!({ "id": id, "status": "Task not found", "result": null, "progress": null }));
    };
    match fault {
        MediaFault::TaskFailed => task.outcome = Outcome::Failed,
        MediaFault::Moderated => task.outcome = Outcome::Moderated,
        MediaFault::NeverReady => task.outcome = Outcome::NeverReady,
        _ => {}
    }
    task.polls += 1;
    let base = json!({ "id": id, "result": null, "progress": null, "details": null, "preview": null });
    let with = |status: &str, extra: Value| {
        let mut v = base.clone();
        v["status"] = json!(status);
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        Response::json(200, v)
    };
    match task.outcome {
        Outcome::Failed => with("Error", json!({ "details": { "error": "Task failed (mock)." } })),
        Outcome::Moderated => {
            with("Content Moderated", json!({ "details": { "Moderation Reasons": ["Derivative Works Filter"] } }))
        }
        Outcome::NeverReady => with("Pending", json!({ "progress": 0.0 })),
        Outcome::Normal if task.polls <= pending => {
            let p = f64::from(task.polls - 1) / f64::from(pending);
            with("Pending", json!({ "progress": (p * 100.0).round() / 100.0 }))
        }
        Outcome::Normal => {
            let end = now_secs_f64();
            let ext = "png";
            with(
                "Ready",
                json!({
                    "result": {
                        "sample": format!("{}/samples/{id}.{ext}", sh.base),
                        "prompt": task.prompt,
                        "seed": task.seed,
                        "start_time": task.start_time,
                        "end_time": end,
                        "duration": end - task.start_time,
                    },
                    "progress": null,
                }),
            )
        }
    }
}

async fn sample(sh: &Shared, file: &str) -> Response {
    let id = file.rsplit_once('.').map(|(a, _)| a).unwrap_or(file);
    let task = lock(&sh.tasks).get(id).cloned();
    match task {
        Some(t) if t.outcome == Outcome::Normal && t.output_format == "jpeg" => {
            if !ffmpeg_on_path() {
                return error_resp(Provider::Bfl, 501, Some("jpeg output needs ffmpeg on PATH (mock)"));
            }
            match to_jpeg(png(t.width, t.height, t.seed)).await {
                Ok(jpeg) => bytes("image/jpeg", jpeg),
                Err(e) => error_resp(Provider::Bfl, 500, Some(&format!("ffmpeg: {e}"))),
            }
        }
        Some(t) if t.outcome == Outcome::Normal => bytes("image/png", png(t.width, t.height, t.seed)),
        _ => Response::new(
            404,
            "application/xml",
            &b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>BlobNotFound</Code></Error>"[..],
        ),
    }
}

// ----- ElevenLabs

fn voice_json(id: &str) -> Option<Value> {
    let (vid, name, gender, accent) = VOICES.iter().find(|v| v.0 == id)?;
    Some(json!({
        "voice_id": vid,
        "name": name,
        "category": "premade",
        "labels": { "accent": accent, "gender": gender, "age": "middle aged", "use_case": "narration" },
        "description": null,
        "preview_url": format!("https://storage.googleapis.com/eleven-public-prod/premade/voices/{vid}/preview.mp3"),
        "available_for_tiers": [],
        "settings": null,
        "high_quality_base_model_ids": ["eleven_turbo_v2_5", "eleven_multilingual_v2", "eleven_flash_v2_5"],
        "is_owner": false,
    }))
}

fn voices() -> Response {
    let list: Vec<Value> = VOICES.iter().filter_map(|v| voice_json(v.0)).collect();
    Response::json(200, json!({ "voices": list }))
}

fn voice_not_found(id: &str) -> Response {
    Response::json(
        404,
        json!({ "detail": { "status": "voice_not_found", "message": format!("A voice with voice_id {id} does not exist.") } }),
    )
}

/// Encodes `secs` of tone in the requested format.
async fn render_audio(format: &str, secs: f64) -> Response {
    let Some((codec, rate)) = parse_output_format(format) else {
        return validation(
            &["query", "output_format"],
            "enum",
            "Input should be a valid output format",
            json!(format),
            None,
        );
    };
    let pcm = pcm_tone(rate, samples_for(rate, secs));
    match codec {
        Codec::Pcm => bytes("audio/pcm", pcm),
        Codec::Wav => bytes("audio/wav", wav(rate, &pcm)),
        Codec::Ulaw => {
            let data = pcm.chunks_exact(2).map(|c| ulaw_encode(i16::from_le_bytes([c[0], c[1]]))).collect();
            bytes("audio/basic", data)
        }
        Codec::Mp3 { bitrate } => {
            if !ffmpeg_on_path() {
                return error_resp(Provider::Eleven, 501, Some("mp3 output needs ffmpeg on PATH (mock)"));
            }
            match to_mp3(wav(rate, &pcm), rate, bitrate).await {
                Ok(mp3) => bytes("audio/mpeg", mp3),
                Err(e) => error_resp(Provider::Eleven, 500, Some(&format!("ffmpeg: {e}"))),
            }
        }
    }
}

fn finish_audio(mut r: Response, stream: bool, fault: &MediaFault, chars: usize) -> Response {
    if r.status != 200 {
        return r;
    }
    if stream {
        if let Body::Full(data) = &r.body {
            // Chunked, `STREAM_CHUNK` at a time with a 1 ms pause after each.
            let steps = (0..data.len())
                .step_by(STREAM_CHUNK)
                .flat_map(|i| {
                    let chunk = data.slice(i..(i + STREAM_CHUNK).min(data.len()));
                    [Step::Data(chunk), Step::Pause(Duration::from_millis(1))]
                })
                .collect();
            r.body = Body::Chunked(steps);
        }
    }
    let id = format!("{:020x}", splitmix(now_nanos()));
    r = r.header("request-id", id.clone()).header("history-item-id", id).header("x-character-count", chars.to_string());
    match fault {
        MediaFault::CutAudio { after_bytes } => r.cut_after(*after_bytes).header("connection", "close"),
        _ => r,
    }
}

async fn tts(req: &Request, voice: &str, query: &Query, stream: bool, fault: &MediaFault) -> Response {
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return validation(&["body"], "json_invalid", "JSON decode error", json!({}), None),
    };
    let text = match body.get("text") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => return validation(&["body", "text"], "missing", "Field required", body, None),
        Some(other) => {
            return validation(&["body", "text"], "string_type", "Input should be a valid string", other.clone(), None)
        }
    };
    if voice.is_empty() {
        return voice_not_found(voice);
    }
    let format = query.get("output_format").map(String::as_str).unwrap_or("mp3_44100_128");
    let chars = text.chars().count();
    finish_audio(render_audio(format, tts_seconds(&text)).await, stream, fault, chars)
}

async fn sts(req: &Request, voice: &str, query: &Query, stream: bool, fault: &MediaFault) -> Response {
    let ctype = find_header(&req.headers, "content-type").unwrap_or("");
    let Some(parts) = parse_multipart(ctype, &req.body) else {
        return validation(&["body", "audio"], "missing", "Field required", Value::Null, None);
    };
    let Some(audio) = part(&parts, "audio") else {
        return validation(&["body", "audio"], "missing", "Field required", Value::Null, None);
    };
    if let Some(vs) = part_text(&parts, "voice_settings") {
        if !vs.trim().is_empty() && serde_json::from_str::<Value>(&vs).is_err() {
            return error_resp(Provider::Eleven, 400, Some("voice_settings must be a valid JSON string"));
        }
    }
    if voice.is_empty() {
        return voice_not_found(voice);
    }
    let secs = match part_text(&parts, "file_format").as_deref() {
        Some("pcm_s16le_16khz") => audio.data.len() as f64 / 32000.0,
        _ => wav_duration(&audio.data).unwrap_or(1.0),
    };
    let format = query.get("output_format").map(String::as_str).unwrap_or("mp3_44100_128");
    finish_audio(render_audio(format, secs).await, stream, fault, 0)
}

fn stt(req: &Request) -> Response {
    let ctype = find_header(&req.headers, "content-type").unwrap_or("");
    let Some(parts) = parse_multipart(ctype, &req.body) else {
        return validation(&["body", "model_id"], "missing", "Field required", Value::Null, None);
    };
    if part_text(&parts, "model_id").is_none_or(|m| m.trim().is_empty()) {
        return validation(&["body", "model_id"], "missing", "Field required", Value::Null, None);
    }
    let (n, secs) = match (part(&parts, "file"), part_text(&parts, "cloud_storage_url")) {
        (Some(f), _) => (f.data.len(), wav_duration(&f.data)),
        (None, Some(url)) if !url.trim().is_empty() => (url.len(), None),
        _ => {
            return error_resp(
                Provider::Eleven,
                400,
                Some("Exactly one of the parameters 'file' or 'cloud_storage_url' must be provided."),
            )
        }
    };
    let language = part_text(&parts, "language_code").filter(|l| !l.is_empty()).unwrap_or_else(|| "en".into());
    let text = format!("transcribed {n} bytes");
    let tokens: Vec<&str> = text.split(' ').collect();
    let total = secs.unwrap_or(tokens.len() as f64 * 0.5);
    let slot = total / tokens.len() as f64;
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    let mut words = Vec::new();
    for (i, w) in tokens.iter().enumerate() {
        let (s, e) = (slot * i as f64, slot * (i as f64 + 0.9));
        if i > 0 {
            let prev_end = slot * (i as f64 - 0.1);
            words.push(json!({ "text": " ", "start": round(prev_end), "end": round(s), "type": "spacing",
                "speaker_id": "speaker_0", "logprob": 0.0 }));
        }
        words.push(json!({ "text": w, "start": round(s), "end": round(e), "type": "word",
            "speaker_id": "speaker_0", "logprob": 0.0 }));
    }
    Response::json(
        200,
        json!({
            "language_code": language,
            "language_probability": 0.98,
            "text": text,
            "words": words,
            "transcription_id": format!("{:020x}", splitmix(now_nanos())),
        }),
    )
}
