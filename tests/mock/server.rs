//! Mock upstream for Switchyard: speaks the OpenAI Chat Completions and the
//! Anthropic Messages wire formats over a hand-rolled HTTP/1.1 server and can
//! inject faults. Used in-process by integration tests and as the
//! `switchyard-mock` binary by the benchmark.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Words the deterministic reply is made of.
pub const WORDS: [&str; 16] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett", "kilo", "lima",
    "mike", "november", "oscar", "papa",
];
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;

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
    open: AtomicUsize,
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
    task: JoinHandle<()>,
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
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
            open: AtomicUsize::new(0),
            last: Mutex::new(None),
            scripted: Mutex::new(std::collections::VecDeque::new()),
            bodies: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let sh = sh.clone();
                sh.open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let guard = OpenGuard(sh.clone());
                    let mut conn =
                        Conn { stream, buf: BytesMut::with_capacity(8192), out: Vec::with_capacity(8192), sh };
                    let _ = conn.serve().await;
                    drop(conn);
                    drop(guard);
                });
            }
        });
        Ok(MockServer { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies to the next `times` chat/messages requests (None = until changed).
    pub fn set_fault(&self, fault: Fault, times: Option<u32>) {
        *lock(&self.shared.fault) = (fault, times);
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
        self.shared.open.load(Ordering::SeqCst)
    }
}

struct OpenGuard(Arc<Shared>);
impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
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

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn esc(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Overloaded",
        _ => "Unknown",
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Provider {
    OpenAi,
    Anthropic,
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    keep_alive: bool,
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

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    out: Vec<u8>,
    sh: Arc<Shared>,
}

impl Conn {
    async fn serve(&mut self) -> std::io::Result<()> {
        while let Some(req) = self.read_request().await? {
            if !self.handle(req).await? {
                break;
            }
        }
        let _ = self.stream.shutdown().await;
        Ok(())
    }

    async fn read_more(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(8192);
        }
        self.stream.read_buf(&mut self.buf).await
    }

    async fn fill(&mut self, n: usize) -> std::io::Result<()> {
        while self.buf.len() < n {
            if self.read_more().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }

    async fn read_line(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(p) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..p]).into_owned();
                self.buf.advance(p + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(bad("line too long"));
            }
            if self.read_more().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    async fn read_request(&mut self) -> std::io::Result<Option<Request>> {
        let end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(bad("head too large"));
            }
            if self.read_more().await? == 0 {
                return if self.buf.is_empty() { Ok(None) } else { Err(std::io::ErrorKind::UnexpectedEof.into()) };
            }
        };
        let head = std::str::from_utf8(&self.buf[..end]).map_err(|_| bad("head not utf-8"))?;
        let mut lines = head.split("\r\n");
        let mut parts = lines.next().unwrap_or("").split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("/").to_string();
        let version = parts.next().unwrap_or("HTTP/1.1");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let conn_hdr = find_header(&headers, "connection").map(str::to_ascii_lowercase);
        let keep_alive = match conn_hdr.as_deref() {
            Some(c) if c.contains("close") => false,
            Some(c) if c.contains("keep-alive") => true,
            _ => version != "HTTP/1.0",
        };
        self.buf.advance(end + 4);
        if find_header(&headers, "expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
            self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let chunked =
            find_header(&headers, "transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
        let body = if chunked {
            let mut body = Vec::new();
            loop {
                let line = self.read_line().await?;
                let size_str = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_str, 16).map_err(|_| bad("bad chunk size"))?;
                if size == 0 {
                    while !self.read_line().await?.is_empty() {}
                    break body;
                }
                if body.len() + size > MAX_BODY {
                    return Err(bad("body too large"));
                }
                self.fill(size + 2).await?;
                body.extend_from_slice(&self.buf[..size]);
                self.buf.advance(size + 2);
            }
        } else {
            let len = match find_header(&headers, "content-length") {
                Some(v) => v.parse::<usize>().map_err(|_| bad("bad content-length"))?,
                None => 0,
            };
            if len > MAX_BODY {
                return Err(bad("body too large"));
            }
            self.fill(len).await?;
            self.buf.split_to(len).to_vec()
        };
        Ok(Some(Request { method, path, headers, body, keep_alive }))
    }

    /// Sends what is buffered in `out`.
    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Flushes, then waits `d`, failing early if the client goes away meanwhile.
    async fn pause(&mut self, d: Duration) -> std::io::Result<()> {
        if d.is_zero() {
            return Ok(());
        }
        self.flush().await?;
        let sleep = tokio::time::sleep(d);
        tokio::pin!(sleep);
        loop {
            if self.buf.len() > MAX_HEAD {
                sleep.as_mut().await;
                return Ok(());
            }
            tokio::select! {
                _ = &mut sleep => return Ok(()),
                r = self.stream.read_buf(&mut self.buf) => match r {
                    Ok(0) => return Err(std::io::ErrorKind::ConnectionAborted.into()),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                },
            }
        }
    }

    fn head(
        &mut self,
        status: u16,
        content_type: &str,
        extra: &[(&str, String)],
        len: Option<usize>,
        keep_alive: bool,
    ) {
        use std::io::Write;
        let o = &mut self.out;
        let _ = write!(o, "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\n", reason(status));
        match len {
            Some(n) => {
                let _ = write!(o, "content-length: {n}\r\n");
            }
            None => o.extend_from_slice(b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n"),
        }
        for (k, v) in extra {
            let _ = write!(o, "{k}: {v}\r\n");
        }
        if !keep_alive {
            o.extend_from_slice(b"connection: close\r\n");
        }
        o.extend_from_slice(b"\r\n");
    }

    async fn respond(
        &mut self,
        status: u16,
        extra: &[(&str, String)],
        body: &str,
        keep_alive: bool,
    ) -> std::io::Result<bool> {
        self.head(status, "application/json", extra, Some(body.len()), keep_alive);
        self.out.extend_from_slice(body.as_bytes());
        self.flush().await?;
        Ok(keep_alive)
    }

    /// Appends one SSE event as one HTTP chunk.
    fn event(&mut self, name: Option<&str>, data: &str) {
        use std::io::Write;
        let len = name.map_or(0, |n| n.len() + 8) + data.len() + 8;
        let _ = write!(self.out, "{len:x}\r\n");
        if let Some(n) = name {
            let _ = writeln!(self.out, "event: {n}");
        }
        let _ = write!(self.out, "data: {data}\n\n\r\n");
    }

    async fn handle(&mut self, req: Request) -> std::io::Result<bool> {
        let ka = req.keep_alive;
        let path = req.path.split('?').next().unwrap_or("").to_string();
        if let Some(ctl) = path.strip_prefix("/__mock/") {
            return self.control(ctl, &req).await;
        }
        self.sh.calls.fetch_add(1, Ordering::SeqCst);
        let body_json: Option<Value> = serde_json::from_slice(&req.body).ok();
        *lock(&self.sh.last) = Some(RecordedRequest {
            method: req.method.clone(),
            path: req.path.clone(),
            headers: req.headers.clone(),
            body: body_json.clone().unwrap_or(Value::Null),
        });
        let hdr = |n: &str| find_header(&req.headers, n).filter(|v| !v.is_empty());
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
        let seq = self.sh.seq.fetch_add(1, Ordering::Relaxed);
        let extra = [(id_hdr, format!("req_mock{seq:012}"))];
        let is_chat = req.method == "POST"
            && matches!(path.as_str(), "/v1/chat/completions" | "/chat/completions" | "/v1/messages");
        let is_models = req.method == "GET" && path == "/v1/models";
        if !is_chat && !is_models {
            let body = match provider {
                Provider::OpenAi => format!(
                    r#"{{"error":{{"message":{},"type":"invalid_request_error","param":null,"code":null}}}}"#,
                    esc(&format!("Invalid URL ({} {})", req.method, path))
                ),
                Provider::Anthropic => error_body(provider, 404, Some("Not Found")),
            };
            return self.respond(404, &extra, &body, ka).await;
        }
        let fault = if is_chat { self.sh.take_fault() } else { Fault::None };
        match fault {
            Fault::Reset => {
                let _ = self.stream.set_zero_linger();
                return Ok(false);
            }
            Fault::Stall(d) => self.pause(d).await?,
            Fault::Status { status, retry_after } => {
                let mut extra = extra.to_vec();
                if let Some(s) = retry_after {
                    extra.push(("retry-after", s.to_string()));
                }
                return self.respond(status, &extra, &error_body(provider, status, None), ka).await;
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
            return self.respond(401, &extra, &error_body(provider, 401, None), ka).await;
        }
        if provider == Provider::Anthropic && hdr("anthropic-version").is_none() {
            let msg = "anthropic-version: header is required";
            return self.respond(400, &extra, &error_body(provider, 400, Some(msg)), ka).await;
        }
        if is_models {
            return self.respond(200, &extra, &models_body(provider), ka).await;
        }
        let Some(body) = body_json.filter(Value::is_object) else {
            let msg = match provider {
                Provider::OpenAi => "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
                Provider::Anthropic => "There was an error parsing the body of your request as JSON.",
            };
            return self.respond(400, &extra, &error_body(provider, 400, Some(msg)), ka).await;
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
            return self.respond(400, &extra, &b, ka).await;
        }
        let cfg = *lock(&self.sh.config);
        lock(&self.sh.bodies).push(body.clone());
        let scripted = lock(&self.sh.scripted).pop_front();
        let p = plan(&body, provider, &cfg, scripted);
        self.pause(cfg.ttft).await?;
        if p.stream {
            return self.stream_reply(provider, &p, &fault, &extra, cfg.token_interval, seq, ka).await;
        }
        let text = p.deltas.concat();
        let c = p.deltas.len();
        let (model, pt) = (esc(&p.model), p.prompt_tokens);
        let body = match provider {
            Provider::OpenAi => {
                let fr = if p.cut == Some(None) { "length" } else { "stop" };
                format!(
                    r#"{{"id":"chatcmpl-mock{seq:012}","object":"chat.completion","created":{},"model":{model},"choices":[{{"index":0,"message":{{"role":"assistant","content":{},"refusal":null,"annotations":[]}},"logprobs":null,"finish_reason":"{fr}"}}],"usage":{{"prompt_tokens":{pt},"completion_tokens":{c},"total_tokens":{}}},"system_fingerprint":"fp_mock"}}"#,
                    now_secs(),
                    esc(&text),
                    pt + c
                )
            }
            Provider::Anthropic => {
                let (sr, ss) = anthropic_stop(&p.cut);
                format!(
                    r#"{{"id":"msg_mock{seq:012}","type":"message","role":"assistant","model":{model},"content":[{{"type":"text","text":{}}}],"stop_reason":"{sr}","stop_sequence":{ss},"usage":{{"input_tokens":{pt},"output_tokens":{c}}}}}"#,
                    esc(&text)
                )
            }
        };
        if let Fault::CutStream { .. } = fault {
            self.head(200, "application/json", &extra, Some(body.len()), ka);
            self.out.extend_from_slice(&body.as_bytes()[..body.len() / 2]);
            self.flush().await?;
            return Ok(false);
        }
        self.respond(200, &extra, &body, ka).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn stream_reply(
        &mut self,
        provider: Provider,
        p: &Plan,
        fault: &Fault,
        extra: &[(&str, String)],
        interval: Duration,
        seq: u64,
        ka: bool,
    ) -> std::io::Result<bool> {
        self.head(200, "text/event-stream; charset=utf-8", extra, None, ka);
        let model = esc(&p.model);
        let c = p.deltas.len();
        let pt = p.prompt_tokens;
        let usage_null = if p.include_usage { r#","usage":null"# } else { "" };
        let prefix = format!(
            r#"{{"id":"chatcmpl-mock{seq:012}","object":"chat.completion.chunk","created":{},"model":{model},"system_fingerprint":"fp_mock","choices":[{{"index":0,"delta":"#,
            now_secs()
        );
        match provider {
            Provider::OpenAi => {
                let d = format!(
                    r#"{prefix}{{"role":"assistant","content":"","refusal":null}},"logprobs":null,"finish_reason":null}}]{usage_null}}}"#
                );
                self.event(None, &d);
            }
            Provider::Anthropic => {
                let d = format!(
                    r#"{{"type":"message_start","message":{{"id":"msg_mock{seq:012}","type":"message","role":"assistant","content":[],"model":{model},"stop_reason":null,"stop_sequence":null,"usage":{{"input_tokens":{pt},"output_tokens":1}}}}}}"#
                );
                self.event(Some("message_start"), &d);
                self.event(
                    Some("content_block_start"),
                    r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
                );
                self.event(Some("ping"), r#"{"type":"ping"}"#);
            }
        }
        for i in 0..=c {
            match *fault {
                Fault::CutStream { after_tokens } if after_tokens == i => {
                    self.flush().await?;
                    return Ok(false);
                }
                Fault::MalformedChunk { after_tokens } if after_tokens == i => match provider {
                    Provider::OpenAi => self.event(None, "{not json"),
                    Provider::Anthropic => self.event(Some("content_block_delta"), "{not json"),
                },
                Fault::MidStreamError { after_tokens } if after_tokens == i => {
                    match provider {
                        Provider::OpenAi => self.event(None, &error_body(provider, 500, None)),
                        Provider::Anthropic => self.event(Some("error"), &error_body(provider, 529, None)),
                    }
                    self.out.extend_from_slice(b"0\r\n\r\n");
                    self.flush().await?;
                    return Ok(ka);
                }
                _ => {}
            }
            let Some(delta) = p.deltas.get(i) else { break };
            if i > 0 {
                self.pause(interval).await?;
            }
            let t = esc(delta);
            match provider {
                Provider::OpenAi => {
                    let d =
                        format!(r#"{prefix}{{"content":{t}}},"logprobs":null,"finish_reason":null}}]{usage_null}}}"#);
                    self.event(None, &d);
                }
                Provider::Anthropic => {
                    let d = format!(
                        r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":{t}}}}}"#
                    );
                    self.event(Some("content_block_delta"), &d);
                }
            }
        }
        match provider {
            Provider::OpenAi => {
                let fr = if p.cut == Some(None) { "length" } else { "stop" };
                let d = format!(r#"{prefix}{{}},"logprobs":null,"finish_reason":"{fr}"}}]{usage_null}}}"#);
                self.event(None, &d);
                if p.include_usage {
                    let d = format!(
                        r#"{{"id":"chatcmpl-mock{seq:012}","object":"chat.completion.chunk","created":{},"model":{model},"system_fingerprint":"fp_mock","choices":[],"usage":{{"prompt_tokens":{pt},"completion_tokens":{c},"total_tokens":{}}}}}"#,
                        now_secs(),
                        pt + c
                    );
                    self.event(None, &d);
                }
                self.event(None, "[DONE]");
            }
            Provider::Anthropic => {
                let (sr, ss) = anthropic_stop(&p.cut);
                self.event(Some("content_block_stop"), r#"{"type":"content_block_stop","index":0}"#);
                let d = format!(
                    r#"{{"type":"message_delta","delta":{{"stop_reason":"{sr}","stop_sequence":{ss}}},"usage":{{"output_tokens":{c}}}}}"#
                );
                self.event(Some("message_delta"), &d);
                self.event(Some("message_stop"), r#"{"type":"message_stop"}"#);
            }
        }
        self.out.extend_from_slice(b"0\r\n\r\n");
        self.flush().await?;
        Ok(ka)
    }

    async fn control(&mut self, what: &str, req: &Request) -> std::io::Result<bool> {
        let ka = req.keep_alive;
        match (req.method.as_str(), what) {
            ("GET", "stats") => {
                let b = json!({"calls": self.sh.calls.load(Ordering::SeqCst), "open_connections": self.sh.open.load(Ordering::SeqCst)});
                self.respond(200, &[], &b.to_string(), ka).await
            }
            ("POST", "fault") => {
                let parsed = serde_json::from_slice::<Value>(&req.body).ok().and_then(|v| parse_fault(&v));
                match parsed {
                    Some((f, times)) => {
                        *lock(&self.sh.fault) = (f, times);
                        self.respond(200, &[], r#"{"ok":true}"#, ka).await
                    }
                    None => self.respond(400, &[], r#"{"ok":false,"error":"bad fault"}"#, ka).await,
                }
            }
            _ => self.respond(404, &[], r#"{"ok":false,"error":"unknown control endpoint"}"#, ka).await,
        }
    }
}

fn anthropic_stop(cut: &Option<Option<String>>) -> (&'static str, String) {
    match cut {
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
        _ => return None,
    };
    let times = v.get("times").and_then(Value::as_u64).and_then(|t| u32::try_from(t).ok());
    Some((fault, times))
}
