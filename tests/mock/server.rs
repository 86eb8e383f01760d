//! Mock upstream for Switchyard: speaks the OpenAI Chat Completions and the
//! Anthropic Messages wire formats over the mocks' shared HTTP layer (`http.rs`)
//! and can inject faults. Used in-process by integration tests and as the
//! `switchyard-mock` binary by the benchmark.
#![allow(dead_code)]

// Test crates that include both mocks load this file twice, as two private modules.
#[allow(clippy::duplicate_mod)]
#[path = "http.rs"]
mod http;
#[path = "openai_audio.rs"]
mod openai_audio;
#[allow(clippy::duplicate_mod)]
#[path = "synth.rs"]
mod synth;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{find_header, Connections, Request, Response, Step};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// Words the deterministic reply is made of.
pub const WORDS: [&str; 16] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett", "kilo", "lima",
    "mike", "november", "oscar", "papa",
];

#[derive(Clone, Copy, Debug)]
pub struct MockConfig {
    /// Words (= tokens = stream deltas) in each reply.
    pub reply_words: usize,
    /// Delay before the first byte of a successful response.
    pub ttft: Duration,
    /// Delay between two streamed deltas.
    pub token_interval: Duration,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self { reply_words: 12, ttft: Duration::ZERO, token_interval: Duration::ZERO }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Provider-shaped error body with this status (`retry-after` header when given).
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Read the request, then reset the connection (SO_LINGER 0) without writing.
    Reset,
    /// Read the request, wait this long, then answer normally.
    Stall(Duration),
    /// Stream: N deltas then close without the final chunk. Non-stream: half the body.
    CutStream {
        after_tokens: usize,
    },
    /// Stream: after N deltas an event whose data is `{not json`, then carry on.
    MalformedChunk {
        after_tokens: usize,
    },
    /// Stream: after N deltas the provider's in-stream error event, then end the body.
    MidStreamError {
        after_tokens: usize,
    },
    /// The answer's text is this many bytes (one delta when streamed): a body far larger than asked for.
    Oversized {
        bytes: usize,
    },
    /// As `Oversized`, a whole answer sent in 16 KiB chunks with no `content-length`: only what arrives tells.
    OversizedChunked {
        bytes: usize,
    },
    /// Stream: after N deltas (N > 0) a pause of this long, then the rest. Whole: the head and half the body, the
    /// pause, then the rest.
    StallAfter {
        after_tokens: usize,
        pause: Duration,
    },
    /// Stream: every delta, then a clean end of the body with no finishing chunk and no `[DONE]` (Anthropic: no
    /// `message_delta`, no `message_stop`).
    NoFinish,
    /// The answer ends with the provider's content filter (`content_filter`; Anthropic: `refusal`).
    ContentFilter,
    /// 400 with the provider's own "prompt too long" error (OpenAI's `context_length_exceeded`).
    ContextLength,
    /// Every other request fails with 500, starting with the next.
    Flap,
}

#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Header names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON (`Value::Null` when empty or not JSON).
    pub body: Value,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

struct Shared {
    config: Mutex<MockConfig>,
    fault: Mutex<(Fault, Option<u32>)>,
    calls: AtomicU64,
    seq: AtomicU64,
    /// Requests met by `Fault::Flap` so far (even ones fail).
    flaps: AtomicU64,
    conns: Connections,
    last: Mutex<Option<RecordedRequest>>,
    /// Replies to give, in order, before the generated ones (a test's script of what the "model" says).
    scripted: Mutex<std::collections::VecDeque<String>>,
    /// Every chat request body received, in order.
    bodies: Mutex<Vec<Value>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn take_fault(&self) -> Fault {
        let fault = self.take_set_fault();
        if let Fault::Flap = fault {
            let failing = self.flaps.fetch_add(1, Ordering::Relaxed).is_multiple_of(2);
            return if failing { Fault::Status { status: 500, retry_after: None } } else { Fault::None };
        }
        fault
    }

    fn take_set_fault(&self) -> Fault {
        let mut f = lock(&self.fault);
        match f.1 {
            None => f.0.clone(),
            Some(0) => Fault::None,
            Some(n) => {
                let out = f.0.clone();
                *f = if n == 1 { (Fault::None, None) } else { (out.clone(), Some(n - 1)) };
                out
            }
        }
    }
}

pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _server: http::Server,
}

impl MockServer {
    /// Binds 127.0.0.1:0.
    pub async fn start(config: MockConfig) -> std::io::Result<MockServer> {
        Self::start_on("127.0.0.1:0", config).await
    }

    pub async fn start_on(addr: &str, config: MockConfig) -> std::io::Result<MockServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config: Mutex::new(config),
            fault: Mutex::new((Fault::None, None)),
            calls: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            flaps: AtomicU64::new(0),
            conns: Connections::default(),
            last: Mutex::new(None),
            scripted: Mutex::new(std::collections::VecDeque::new()),
            bodies: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        let server = http::serve(listener, shared.conns.clone(), move |req| handle(sh.clone(), req));
        Ok(MockServer { addr, shared, _server: server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies to the next `times` chat/messages requests (None = until changed).
    /// Sets the fault for the next `times` requests (every one when `None`); a `Flap` starts afresh (failing first).
    pub fn set_fault(&self, fault: Fault, times: Option<u32>) {
        *lock(&self.shared.fault) = (fault, times);
        self.shared.flaps.store(0, Ordering::SeqCst);
    }

    pub fn set_config(&self, config: MockConfig) {
        *lock(&self.shared.config) = config;
    }

    pub fn config(&self) -> MockConfig {
        *lock(&self.shared.config)
    }

    /// API requests received (control requests under `/__mock/` excluded).
    pub fn calls(&self) -> u64 {
        self.shared.calls.load(Ordering::SeqCst)
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.shared.last).clone()
    }

    /// Client connections currently open.
    /// The next chat completion (stream or not) answers exactly `text`; replies queue in order.
    pub fn push_reply(&self, text: &str) {
        lock(&self.shared.scripted).push_back(text.to_owned());
    }

    /// Every chat request body received so far, in order.
    pub fn chat_bodies(&self) -> Vec<Value> {
        lock(&self.shared.bodies).clone()
    }

    pub fn open_connections(&self) -> usize {
        self.shared.conns.open()
    }
}

/// The deterministic reply for a last user message: what the mock answers.
pub fn reply_text(last_user_text: &str, words: usize) -> String {
    reply_deltas(last_user_text, words).concat()
}

fn reply_deltas(last_user_text: &str, words: usize) -> Vec<String> {
    let off = last_user_text.chars().count() % WORDS.len();
    (0..words)
        .map(|i| {
            let w = WORDS[(off + i) % WORDS.len()];
            if i == 0 {
                w.to_string()
            } else {
                format!(" {w}")
            }
        })
        .collect()
}

fn esc(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Provider {
    OpenAi,
    Anthropic,
}

/// The text of a message `content` (string or array of parts), or of `system`.
fn content_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect();
            texts.join(" ")
        }
        _ => String::new(),
    }
}

/// What to answer: computed from the request body.
struct Plan {
    model: String,
    stream: bool,
    include_usage: bool,
    deltas: Vec<String>,
    prompt_tokens: usize,
    /// None: natural end; Some(None): max tokens; Some(Some(s)): stop sequence s.
    cut: Option<Option<String>>,
}

fn plan(body: &Value, provider: Provider, cfg: &MockConfig, scripted: Option<String>) -> Plan {
    let messages = body.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let mut prompt_tokens = 0;
    let mut last_user = String::new();
    for m in messages {
        let text = content_text(m.get("content").unwrap_or(&Value::Null));
        prompt_tokens += text.split_whitespace().count();
        if m.get("role").and_then(Value::as_str) == Some("user") {
            last_user = text;
        }
    }
    if let Some(sys) = body.get("system") {
        prompt_tokens += content_text(sys).split_whitespace().count();
    }
    let max = body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_u64)
        .map(|m| usize::try_from(m).unwrap_or(usize::MAX));
    let mut n = cfg.reply_words;
    let mut cut = None;
    if let Some(m) = max {
        if m < n {
            n = m;
            cut = Some(None);
        }
    }
    let stops: Vec<String> = match body.get(if provider == Provider::OpenAi { "stop" } else { "stop_sequences" }) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    };
    let json_mode = body.pointer("/response_format/type").and_then(Value::as_str) == Some("json_object");
    let mut deltas = match scripted {
        // A scripted reply, in word-sized deltas (whitespace kept), cut at max_tokens like any other.
        Some(text) => {
            let mut pieces: Vec<String> = text.split_inclusive(char::is_whitespace).map(str::to_owned).collect();
            if pieces.is_empty() {
                pieces.push(String::new());
            }
            cut = None;
            if let Some(m) = max.filter(|m| *m < pieces.len()) {
                pieces.truncate(m);
                cut = Some(None);
            }
            pieces
        }
        // JSON mode answers a JSON object, as the real API promises.
        None if json_mode => vec![serde_json::json!({ "reply": reply_text(&last_user, n) }).to_string()],
        None => reply_deltas(&last_user, n),
    };
    if let Some((i, s)) = deltas
        .iter()
        .enumerate()
        .find_map(|(i, d)| stops.iter().find(|s| !s.is_empty() && d.contains(s.as_str())).map(|s| (i, s)))
    {
        cut = Some(Some(s.clone()));
        deltas.truncate(i);
    }
    Plan {
        model: body.get("model").and_then(Value::as_str).unwrap_or("mock-model").to_string(),
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false),
        deltas,
        prompt_tokens: prompt_tokens.max(1),
        cut,
    }
}

/// Provider-shaped error body for a status.
fn error_body(provider: Provider, status: u16, message: Option<&str>) -> String {
    match provider {
        Provider::OpenAi => {
            let (ty, code, msg) = match status {
                400 => ("invalid_request_error", "null", "Invalid request (mock)."),
                401 => (
                    "invalid_request_error",
                    "\"invalid_api_key\"",
                    "Incorrect API key provided: sk-mock. You can find your API key at https://platform.openai.com/account/api-keys.",
                ),
                403 => ("invalid_request_error", "\"unsupported_country_region_territory\"", "Country, region, or territory not supported"),
                404 => ("invalid_request_error", "\"model_not_found\"", "The model does not exist or you do not have access to it."),
                429 => ("requests", "\"rate_limit_exceeded\"", "Rate limit reached for requests (mock). Please try again later."),
                503 => ("server_error", "null", "The engine is currently overloaded, please try again later."),
                s if s >= 500 => ("server_error", "null", "The server had an error while processing your request. Sorry about that!"),
                _ => ("invalid_request_error", "null", "Request failed (mock)."),
            };
            format!(
                r#"{{"error":{{"message":{},"type":"{ty}","param":null,"code":{code}}}}}"#,
                esc(message.unwrap_or(msg))
            )
        }
        Provider::Anthropic => {
            let (ty, msg) = match status {
                400 => ("invalid_request_error", "Invalid request (mock)."),
                401 => ("authentication_error", "invalid x-api-key"),
                403 => ("permission_error", "Your API key does not have permission to use the specified resource."),
                404 => ("not_found_error", "The requested resource could not be found."),
                413 => ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
                429 => ("rate_limit_error", "Number of requests has exceeded your rate limit (mock)."),
                529 => ("overloaded_error", "Overloaded"),
                s if s >= 500 => ("api_error", "Internal server error"),
                _ => ("invalid_request_error", "Request failed (mock)."),
            };
            format!(r#"{{"type":"error","error":{{"type":"{ty}","message":{}}}}}"#, esc(message.unwrap_or(msg)))
        }
    }
}

/// Waits `d`; a client that leaves meanwhile closes the connection (and drops this wait).
async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// SSE events, each one HTTP chunk, written into one buffer.
struct Events {
    buf: BytesMut,
    steps: Vec<Step>,
}

impl Events {
    fn event(&mut self, name: Option<&str>, data: impl std::fmt::Display) {
        use std::fmt::Write;
        if let Some(n) = name {
            let _ = writeln!(self.buf, "event: {n}");
        }
        let _ = write!(self.buf, "data: {data}\n\n");
        self.steps.push(Step::Data(self.buf.split().freeze()));
    }
}

async fn handle(sh: Arc<Shared>, req: Request) -> Response {
    let path = req.path.split('?').next().unwrap_or("").to_string();
    if let Some(ctl) = path.strip_prefix("/__mock/") {
        return control(&sh, ctl, &req);
    }
    sh.calls.fetch_add(1, Ordering::SeqCst);
    let body_json: Option<Value> = serde_json::from_slice(&req.body).ok();
    *lock(&sh.last) = Some(RecordedRequest {
        method: req.method.clone(),
        path: req.path.clone(),
        headers: req.headers.clone(),
        body: body_json.clone().unwrap_or(Value::Null),
    });
    let hdr = |n: &str| req.header(n).filter(|v| !v.is_empty());
    let provider = if path.starts_with("/v1/messages")
        || (path == "/v1/models" && hdr("x-api-key").is_some() && hdr("authorization").is_none())
    {
        Provider::Anthropic
    } else {
        Provider::OpenAi
    };
    let id_hdr = match provider {
        Provider::OpenAi => "x-request-id",
        Provider::Anthropic => "request-id",
    };
    let seq = sh.seq.fetch_add(1, Ordering::Relaxed);
    let extra = [(id_hdr, format!("req_mock{seq:012}"))];
    let reply = |status: u16, body: String| Response::json(status, body).with_headers(&extra);
    let is_chat =
        req.method == "POST" && matches!(path.as_str(), "/v1/chat/completions" | "/chat/completions" | "/v1/messages");
    let is_models = req.method == "GET" && path == "/v1/models";
    let is_audio = req.method == "POST" && matches!(path.as_str(), "/v1/audio/speech" | "/v1/audio/transcriptions");
    if !is_chat && !is_models && !is_audio {
        let body = match provider {
            Provider::OpenAi => format!(
                r#"{{"error":{{"message":{},"type":"invalid_request_error","param":null,"code":null}}}}"#,
                esc(&format!("Invalid URL ({} {})", req.method, path))
            ),
            Provider::Anthropic => error_body(provider, 404, Some("Not Found")),
        };
        return reply(404, body);
    }
    let fault = if is_chat || is_audio { sh.take_fault() } else { Fault::None };
    match fault {
        Fault::Reset => return Response::reset(),
        Fault::Stall(d) => pause(d).await,
        Fault::ContextLength => {
            let message = match provider {
                Provider::OpenAi => "This model's maximum context length is 8192 tokens. However, your messages resulted in 9120 tokens. Please reduce the length of the messages.",
                Provider::Anthropic => "prompt is too long: 210000 tokens > 200000 maximum",
            };
            let body = error_body(provider, 400, Some(message));
            let body =
                body.replace(r#""param":null,"code":null"#, r#""param":"messages","code":"context_length_exceeded""#);
            return reply(400, body);
        }
        Fault::Status { status, retry_after } => {
            let r = reply(status, error_body(provider, status, None));
            return match retry_after {
                Some(s) => r.header("retry-after", s.to_string()),
                None => r,
            };
        }
        _ => {}
    }
    // Authentication, as the providers check it.
    let auth_ok = match provider {
        Provider::OpenAi => hdr("authorization")
            .and_then(|a| a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer ")))
            .is_some_and(|t| !t.trim().is_empty()),
        Provider::Anthropic => hdr("x-api-key").is_some(),
    };
    if !auth_ok {
        return reply(401, error_body(provider, 401, None));
    }
    if provider == Provider::Anthropic && hdr("anthropic-version").is_none() {
        let msg = "anthropic-version: header is required";
        return reply(400, error_body(provider, 400, Some(msg)));
    }
    if is_models {
        return reply(200, models_body(provider));
    }
    if is_audio {
        let response = match path.as_str() {
            "/v1/audio/speech" => openai_audio::speech(&req).await,
            _ => openai_audio::transcription(&req),
        };
        return response.with_headers(&extra);
    }
    let Some(body) = body_json.filter(Value::is_object) else {
        let msg = match provider {
            Provider::OpenAi => "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
            Provider::Anthropic => "There was an error parsing the body of your request as JSON.",
        };
        return reply(400, error_body(provider, 400, Some(msg)));
    };
    let missing = match provider {
        Provider::OpenAi => ["model", "messages"].into_iter().find(|k| body.get(*k).is_none()),
        Provider::Anthropic => ["model", "max_tokens", "messages"].into_iter().find(|k| body.get(*k).is_none()),
    };
    if let Some(field) = missing {
        let b = match provider {
            Provider::OpenAi => format!(
                r#"{{"error":{{"message":"Missing required parameter: '{field}'.","type":"invalid_request_error","param":"{field}","code":"missing_required_parameter"}}}}"#
            ),
            Provider::Anthropic => error_body(provider, 400, Some(&format!("{field}: Field required"))),
        };
        return reply(400, b);
    }
    let cfg = *lock(&sh.config);
    lock(&sh.bodies).push(body.clone());
    let scripted = lock(&sh.scripted).pop_front();
    let mut p = plan(&body, provider, &cfg, scripted);
    if let Fault::Oversized { bytes } | Fault::OversizedChunked { bytes } = fault {
        p.deltas = vec!["x".repeat(bytes)];
    }
    pause(cfg.ttft).await;
    if p.stream {
        return stream_reply(provider, &p, &fault, &extra, cfg.token_interval, seq);
    }
    let text = p.deltas.concat();
    let c = p.deltas.len();
    let (model, pt) = (esc(&p.model), p.prompt_tokens);
    let body = match provider {
        Provider::OpenAi => {
            let fr = finish_reason(&p.cut, &fault);
            format!(
                r#"{{"id":"chatcmpl-mock{seq:012}","object":"chat.completion","created":{},"model":{model},"choices":[{{"index":0,"message":{{"role":"assistant","content":{},"refusal":null,"annotations":[]}},"logprobs":null,"finish_reason":"{fr}"}}],"usage":{{"prompt_tokens":{pt},"completion_tokens":{c},"total_tokens":{}}},"system_fingerprint":"fp_mock"}}"#,
                now_secs(),
                esc(&text),
                pt + c
            )
        }
        Provider::Anthropic => {
            let (sr, ss) = anthropic_stop(&p.cut, &fault);
            format!(
                r#"{{"id":"msg_mock{seq:012}","type":"message","role":"assistant","model":{model},"content":[{{"type":"text","text":{}}}],"stop_reason":"{sr}","stop_sequence":{ss},"usage":{{"input_tokens":{pt},"output_tokens":{c}}}}}"#,
                esc(&text)
            )
        }
    };
    if let Fault::StallAfter { pause, .. } = fault {
        // The head and half the body, a pause, then the rest.
        let (first, rest) = body.as_bytes().split_at(body.len() / 2);
        let steps = vec![
            Step::Data(Bytes::copy_from_slice(first)),
            Step::Pause(pause),
            Step::Data(Bytes::copy_from_slice(rest)),
        ];
        return Response::chunked(200, "application/json", steps).with_headers(&extra);
    }
    if let Fault::OversizedChunked { .. } = fault {
        let steps = body.as_bytes().chunks(16 * 1024).map(|c| Step::Data(Bytes::copy_from_slice(c))).collect();
        return Response::chunked(200, "application/json", steps).with_headers(&extra);
    }
    if let Fault::CutStream { .. } = fault {
        // The whole body's content-length, half the body, then the connection closes.
        let half = body.len() / 2;
        return reply(200, body).cut_after(half);
    }
    reply(200, body)
}

fn stream_reply(
    provider: Provider,
    p: &Plan,
    fault: &Fault,
    extra: &[(&str, String)],
    interval: Duration,
    seq: u64,
) -> Response {
    let mut ev = Events { buf: BytesMut::with_capacity(4096), steps: Vec::with_capacity(2 * p.deltas.len() + 8) };
    let model = esc(&p.model);
    let c = p.deltas.len();
    let pt = p.prompt_tokens;
    let usage_null = if p.include_usage { r#","usage":null"# } else { "" };
    let prefix = format!(
        r#"{{"id":"chatcmpl-mock{seq:012}","object":"chat.completion.chunk","created":{},"model":{model},"system_fingerprint":"fp_mock","choices":[{{"index":0,"delta":"#,
        now_secs()
    );
    match provider {
        Provider::OpenAi => ev.event(
            None,
            format_args!(
                r#"{prefix}{{"role":"assistant","content":"","refusal":null}},"logprobs":null,"finish_reason":null}}]{usage_null}}}"#
            ),
        ),
        Provider::Anthropic => {
            ev.event(
                Some("message_start"),
                format_args!(
                    r#"{{"type":"message_start","message":{{"id":"msg_mock{seq:012}","type":"message","role":"assistant","content":[],"model":{model},"stop_reason":null,"stop_sequence":null,"usage":{{"input_tokens":{pt},"output_tokens":1}}}}}}"#
                ),
            );
            ev.event(
                Some("content_block_start"),
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            );
            ev.event(Some("ping"), r#"{"type":"ping"}"#);
        }
    }
    let head = |steps: Vec<Step>| {
        Response::chunked(200, "text/event-stream; charset=utf-8", steps)
            .header("cache-control", "no-cache")
            .with_headers(extra)
    };
    for i in 0..=c {
        match *fault {
            Fault::CutStream { after_tokens } if after_tokens == i => {
                ev.steps.push(Step::Cut);
                return head(ev.steps);
            }
            Fault::MalformedChunk { after_tokens } if after_tokens == i => match provider {
                Provider::OpenAi => ev.event(None, "{not json"),
                Provider::Anthropic => ev.event(Some("content_block_delta"), "{not json"),
            },
            Fault::MidStreamError { after_tokens } if after_tokens == i => {
                match provider {
                    Provider::OpenAi => ev.event(None, error_body(provider, 500, None)),
                    Provider::Anthropic => ev.event(Some("error"), error_body(provider, 529, None)),
                }
                return head(ev.steps);
            }
            _ => {}
        }
        let Some(delta) = p.deltas.get(i) else { break };
        if i > 0 && !interval.is_zero() {
            ev.steps.push(Step::Pause(interval));
        }
        if let Fault::StallAfter { after_tokens, pause } = *fault {
            if i > 0 && i == after_tokens {
                ev.steps.push(Step::Pause(pause));
            }
        }
        let t = esc(delta);
        match provider {
            Provider::OpenAi => ev.event(
                None,
                format_args!(r#"{prefix}{{"content":{t}}},"logprobs":null,"finish_reason":null}}]{usage_null}}}"#),
            ),
            Provider::Anthropic => ev.event(
                Some("content_block_delta"),
                format_args!(
                    r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":{t}}}}}"#
                ),
            ),
        }
    }
    if let Fault::NoFinish = fault {
        return head(ev.steps);
    }
    match provider {
        Provider::OpenAi => {
            let fr = finish_reason(&p.cut, fault);
            ev.event(None, format_args!(r#"{prefix}{{}},"logprobs":null,"finish_reason":"{fr}"}}]{usage_null}}}"#));
            if p.include_usage {
                ev.event(
                    None,
                    format_args!(
                        r#"{{"id":"chatcmpl-mock{seq:012}","object":"chat.completion.chunk","created":{},"model":{model},"system_fingerprint":"fp_mock","choices":[],"usage":{{"prompt_tokens":{pt},"completion_tokens":{c},"total_tokens":{}}}}}"#,
                        now_secs(),
                        pt + c
                    ),
                );
            }
            ev.event(None, "[DONE]");
        }
        Provider::Anthropic => {
            let (sr, ss) = anthropic_stop(&p.cut, fault);
            ev.event(Some("content_block_stop"), r#"{"type":"content_block_stop","index":0}"#);
            ev.event(
                Some("message_delta"),
                format_args!(
                    r#"{{"type":"message_delta","delta":{{"stop_reason":"{sr}","stop_sequence":{ss}}},"usage":{{"output_tokens":{c}}}}}"#
                ),
            );
            ev.event(Some("message_stop"), r#"{"type":"message_stop"}"#);
        }
    }
    head(ev.steps)
}

fn control(sh: &Shared, what: &str, req: &Request) -> Response {
    match (req.method.as_str(), what) {
        ("GET", "stats") => {
            Response::json(200, json!({"calls": sh.calls.load(Ordering::SeqCst), "open_connections": sh.conns.open()}))
        }
        ("POST", "fault") => {
            let parsed = serde_json::from_slice::<Value>(&req.body).ok().and_then(|v| parse_fault(&v));
            match parsed {
                Some((f, times)) => {
                    *lock(&sh.fault) = (f, times);
                    Response::json(200, r#"{"ok":true}"#)
                }
                None => Response::json(400, r#"{"ok":false,"error":"bad fault"}"#),
            }
        }
        _ => Response::json(404, r#"{"ok":false,"error":"unknown control endpoint"}"#),
    }
}

/// OpenAI's `finish_reason` for how the answer ended.
fn finish_reason(cut: &Option<Option<String>>, fault: &Fault) -> &'static str {
    match (fault, cut) {
        (Fault::ContentFilter, _) => "content_filter",
        (_, Some(None)) => "length",
        _ => "stop",
    }
}

fn anthropic_stop(cut: &Option<Option<String>>, fault: &Fault) -> (&'static str, String) {
    match cut {
        _ if matches!(fault, Fault::ContentFilter) => ("refusal", "null".to_string()),
        None => ("end_turn", "null".to_string()),
        Some(None) => ("max_tokens", "null".to_string()),
        Some(Some(s)) => ("stop_sequence", esc(s)),
    }
}

fn models_body(provider: Provider) -> String {
    let ids = ["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5", "claude-haiku-4-5"];
    match provider {
        Provider::OpenAi => {
            let data: Vec<Value> = ids
                .iter()
                .map(|id| json!({"id": id, "object": "model", "created": 1_700_000_000u64, "owned_by": "mock"}))
                .collect();
            json!({"object": "list", "data": data}).to_string()
        }
        Provider::Anthropic => {
            let data: Vec<Value> = ids
                .iter()
                .map(|id| json!({"type": "model", "id": id, "display_name": id, "created_at": "2025-01-01T00:00:00Z"}))
                .collect();
            json!({"data": data, "has_more": false, "first_id": ids[0], "last_id": ids[ids.len() - 1]}).to_string()
        }
    }
}

/// Parses the control endpoint's fault JSON: `{"fault":"status","status":429,"retry_after":1,"times":2}`.
pub fn parse_fault(v: &Value) -> Option<(Fault, Option<u32>)> {
    let after = || v.get("after_tokens").and_then(Value::as_u64).and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
    let fault = match v.get("fault")?.as_str()? {
        "none" => Fault::None,
        "status" => Fault::Status {
            status: v.get("status").and_then(Value::as_u64).and_then(|s| u16::try_from(s).ok()).unwrap_or(500),
            retry_after: v.get("retry_after").and_then(Value::as_u64),
        },
        "reset" => Fault::Reset,
        "stall" => Fault::Stall(Duration::from_millis(v.get("ms").and_then(Value::as_u64).unwrap_or(5000))),
        "cut_stream" => Fault::CutStream { after_tokens: after() },
        "malformed_chunk" => Fault::MalformedChunk { after_tokens: after() },
        "mid_stream_error" => Fault::MidStreamError { after_tokens: after() },
        "no_finish" => Fault::NoFinish,
        "content_filter" => Fault::ContentFilter,
        "context_length" => Fault::ContextLength,
        "flap" => Fault::Flap,
        "stall_after" => Fault::StallAfter {
            after_tokens: after(),
            pause: Duration::from_millis(v.get("ms").and_then(Value::as_u64).unwrap_or(5000)),
        },
        "oversized" => Fault::Oversized {
            bytes: v.get("bytes").and_then(Value::as_u64).and_then(|n| usize::try_from(n).ok()).unwrap_or(1 << 20),
        },
        "oversized_chunked" => Fault::OversizedChunked {
            bytes: v.get("bytes").and_then(Value::as_u64).and_then(|n| usize::try_from(n).ok()).unwrap_or(1 << 20),
        },
        _ => return None,
    };
    let times = v.get("times").and_then(Value::as_u64).and_then(|t| u32::try_from(t).ok());
    Some((fault, times))
}
