//! The HTTP/1.1 layer the mock upstreams share: hyper's server connection over our own accept loop, so that a
//! mock keeps only its provider logic. A handler gets a whole [`Request`] and answers a [`Response`]: whole,
//! chunked with pauses, cut short, or a reset; or a `101` whose [`Upgrade`] hook takes the connection over (a
//! WebSocket). Faults are made here, below hyper:
//!
//! - reset: nothing is written and the socket is closed with SO_LINGER 0, so the peer gets an RST;
//! - cut: what was sent so far is flushed, then the connection is closed (FIN) without the rest of the body or
//!   the terminating chunk;
//! - pauses: the body waits between two chunks (after flushing); a client that leaves meanwhile closes the
//!   connection (hyper watches the read side while a response is in flight).
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Largest request body read.
const MAX_BODY: usize = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------------------
// Requests

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path with query string, as sent.
    pub path: String,
    /// Header names lowercased, in the order received (repeated names together).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body parsed as JSON (`Value::Null` when empty or not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

pub fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

async fn read_request(req: hyper::Request<Incoming>) -> std::io::Result<Request> {
    let (head, mut body) = req.into_parts();
    let mut data = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(std::io::Error::other)?;
        if let Ok(chunk) = frame.into_data() {
            if data.len() + chunk.len() > MAX_BODY {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "body too large"));
            }
            data.extend_from_slice(&chunk);
        }
    }
    let path = head.uri.path_and_query().map_or_else(|| head.uri.path().to_string(), |p| p.as_str().to_string());
    let headers = head
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).trim().to_string()))
        .collect();
    Ok(Request { method: head.method.as_str().to_string(), path, headers, body: data })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path without its query string, and the query's parameters (percent-decoded).
pub fn split_query(path: &str) -> (&str, HashMap<String, String>) {
    let (p, q) = path.split_once('?').unwrap_or((path, ""));
    let map = q
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    (p, map)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[derive(Clone, Debug)]
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
}

fn header_param(value: &str, key: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        if k.trim().eq_ignore_ascii_case(key) {
            Some(v.trim().trim_matches('"').to_string())
        } else {
            None
        }
    })
}

/// Parses a multipart/form-data body given the request's Content-Type.
pub fn parse_multipart(content_type: &str, body: &[u8]) -> Option<Vec<Part>> {
    if !content_type.trim().to_ascii_lowercase().starts_with("multipart/form-data") {
        return None;
    }
    let boundary = header_param(content_type, "boundary")?;
    let delim = format!("--{boundary}").into_bytes();
    let next_delim = format!("\r\n--{boundary}").into_bytes();
    let mut pos = find(body, &delim)? + delim.len();
    let mut parts = Vec::new();
    loop {
        let rest = body.get(pos..)?;
        if rest.starts_with(b"--") {
            return Some(parts);
        }
        let rest = rest.strip_prefix(b"\r\n").unwrap_or(rest);
        let start = body.len() - rest.len();
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let data_start = start + head_end + 4;
        let data_len = find(&body[data_start..], &next_delim)?;
        let (mut name, mut filename, mut ctype) = (None, None, None);
        for line in head.split("\r\n") {
            let Some((k, v)) = line.split_once(':') else { continue };
            let k = k.trim().to_ascii_lowercase();
            if k == "content-disposition" {
                name = header_param(v, "name");
                filename = header_param(v, "filename");
            } else if k == "content-type" {
                ctype = Some(v.trim().to_string());
            }
        }
        parts.push(Part {
            name: name.unwrap_or_default(),
            filename,
            content_type: ctype,
            data: body[data_start..data_start + data_len].to_vec(),
        });
        pos = data_start + data_len + next_delim.len();
    }
}

// ---------------------------------------------------------------------------------------------------------
// Responses

/// One step of a chunked body.
#[derive(Clone, Debug)]
pub enum Step {
    /// One HTTP chunk.
    Data(Bytes),
    /// Flush what was sent, then wait.
    Pause(Duration),
    /// Flush what was sent, then close the connection: no terminating chunk, nothing after.
    Cut,
}

#[derive(Clone, Debug)]
pub enum Body {
    /// The whole body, with a `content-length`.
    Full(Bytes),
    /// `content-length` of the whole body, but only its first `n` bytes go out; then the connection closes.
    Truncated(Bytes, usize),
    /// Chunked transfer encoding.
    Chunked(Vec<Step>),
    /// Nothing is written: the connection is reset (SO_LINGER 0, the peer gets an RST).
    Reset,
    /// No body: with a `101 Switching Protocols` status, the switched connection goes to the hook.
    Upgrade(Upgrade),
}

/// The connection after a `101`, as a tokio socket.
pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// A switched connection's whole life.
pub type Switched = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What takes over a connection once it has switched protocols (a WebSocket session, say).
#[derive(Clone)]
pub struct Upgrade(pub Arc<dyn Fn(Upgraded) -> Switched + Send + Sync>);

impl std::fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upgrade")
    }
}

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// Sent in this order (hyper adds `content-length` or `transfer-encoding`).
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response {
        Response { status, headers: vec![("content-type".into(), content_type.into())], body: Body::Full(body.into()) }
    }

    /// `application/json`: `body` is a `serde_json::Value` or text already JSON.
    pub fn json(status: u16, body: impl IntoJson) -> Response {
        Response::new(status, "application/json", body.into_json())
    }

    pub fn chunked(status: u16, content_type: &str, steps: Vec<Step>) -> Response {
        Response { status, headers: vec![("content-type".into(), content_type.into())], body: Body::Chunked(steps) }
    }

    /// The connection is reset after the request was read.
    pub fn reset() -> Response {
        Response { status: 0, headers: Vec::new(), body: Body::Reset }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn with_headers<'a>(mut self, extra: impl IntoIterator<Item = &'a (&'a str, String)>) -> Response {
        self.headers.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v.clone())));
        self
    }

    /// Only the first `n` bytes of the body go out, then the connection closes. A whole body keeps the
    /// `content-length` of the whole; a chunked body stops without its terminating chunk.
    pub fn cut_after(mut self, n: usize) -> Response {
        self.body = match self.body {
            Body::Full(b) | Body::Truncated(b, _) if n < b.len() => Body::Truncated(b, n),
            Body::Chunked(steps) => {
                let mut left = n;
                let mut out = Vec::with_capacity(steps.len() + 1);
                for step in steps {
                    match step {
                        Step::Data(_) if left == 0 => break,
                        Step::Data(d) if d.len() > left => {
                            out.push(Step::Data(d.slice(..left)));
                            left = 0;
                        }
                        Step::Data(d) => {
                            left -= d.len();
                            out.push(Step::Data(d));
                        }
                        Step::Cut => break,
                        pause => out.push(pause),
                    }
                }
                out.push(Step::Cut);
                Body::Chunked(out)
            }
            other => other,
        };
        self
    }
}

/// A JSON body: a `serde_json::Value`, or text that is JSON already (not copied).
pub trait IntoJson {
    fn into_json(self) -> Bytes;
}

impl IntoJson for String {
    fn into_json(self) -> Bytes {
        self.into()
    }
}

impl IntoJson for &'static str {
    fn into_json(self) -> Bytes {
        Bytes::from_static(self.as_bytes())
    }
}

impl IntoJson for serde_json::Value {
    fn into_json(self) -> Bytes {
        self.to_string().into()
    }
}

/// Reason phrases hyper does not know.
fn custom_reason(status: u16) -> Option<&'static str> {
    match status {
        529 => Some("Overloaded"),
        _ => None,
    }
}

fn into_hyper(resp: Response, conn: &Arc<ConnState>) -> std::io::Result<hyper::Response<OutBody>> {
    let (len, steps) = match resp.body {
        Body::Reset => {
            conn.reset.store(true, Ordering::SeqCst);
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset (mock fault)"));
        }
        Body::Full(b) => (Some(b.len()), vec![Step::Data(b)]),
        Body::Truncated(b, n) => (Some(b.len()), vec![Step::Data(b.slice(..n.min(b.len()))), Step::Cut]),
        Body::Chunked(steps) => (None, steps),
        Body::Upgrade(_) => (Some(0), Vec::new()),
    };
    let body = OutBody { steps: steps.into(), len, sleep: None, cut_mark: None, conn: conn.clone() };
    let mut out = hyper::Response::new(body);
    *out.status_mut() = hyper::StatusCode::from_u16(resp.status).map_err(std::io::Error::other)?;
    if let Some(reason) = custom_reason(resp.status) {
        out.extensions_mut().insert(hyper::ext::ReasonPhrase::from_static(reason.as_bytes()));
    }
    let headers = out.headers_mut();
    for (k, v) in resp.headers {
        let name = hyper::header::HeaderName::from_bytes(k.as_bytes()).map_err(std::io::Error::other)?;
        let value = hyper::header::HeaderValue::from_str(&v).map_err(std::io::Error::other)?;
        headers.append(name, value);
    }
    Ok(out)
}

/// The response body hyper writes: the steps in order.
struct OutBody {
    steps: std::collections::VecDeque<Step>,
    /// Exact length (`content-length`), or None for chunked.
    len: Option<usize>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Cutting: the connection's flush count when the cut began.
    cut_mark: Option<u64>,
    conn: Arc<ConnState>,
}

impl hyper::body::Body for OutBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
            }
            if let Some(mark) = this.cut_mark {
                // hyper flushes its buffer to the socket before it flushes the socket: once that happened after
                // the cut began, everything before the cut is out. An error now makes hyper drop the connection
                // without writing anything more.
                if this.conn.flushes.load(Ordering::SeqCst) > mark {
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "cut (mock fault)",
                    ))));
                }
                this.sleep = Some(Box::pin(tokio::time::sleep(Duration::from_millis(1))));
                continue;
            }
            match this.steps.pop_front() {
                None => return Poll::Ready(None),
                Some(Step::Data(d)) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                Some(Step::Pause(d)) if d.is_zero() => {}
                Some(Step::Pause(d)) => {
                    // Pending on the timer makes hyper flush what it has buffered.
                    this.sleep = Some(Box::pin(tokio::time::sleep(d)));
                }
                Some(Step::Cut) => {
                    // Pending once so that hyper flushes; polled again right after.
                    this.cut_mark = Some(this.conn.flushes.load(Ordering::SeqCst));
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.steps.is_empty() && self.sleep.is_none() && self.cut_mark.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.len {
            Some(n) => SizeHint::with_exact(n as u64),
            None => SizeHint::default(),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Connections

/// What the response of a connection tells its socket.
#[derive(Default)]
struct ConnState {
    /// Close with SO_LINGER 0 and write nothing more.
    reset: AtomicBool,
    /// Times the socket was flushed, which hyper does only once its own buffer is written.
    flushes: AtomicU64,
}

/// The accepted socket as hyper sees it.
struct Io {
    stream: TcpStream,
    conn: Arc<ConnState>,
}

impl Io {
    fn reset(&self) -> bool {
        self.conn.reset.load(Ordering::SeqCst)
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        if self.reset() {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.reset() {
            return Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()));
        }
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.reset() {
            return Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()));
        }
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = ready!(Pin::new(&mut this.stream).poll_flush(cx));
        this.conn.flushes.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.reset() {
            // No FIN before the RST.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Client connections currently open, counted by the accept loop.
#[derive(Clone, Default)]
pub struct Connections(Arc<AtomicUsize>);

impl Connections {
    pub fn open(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

struct OpenGuard(Connections);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The accept loop; stops (new connections only) when dropped.
pub struct Server {
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `listener` with `handler`, one task per connection (`TCP_NODELAY`, keep-alive), counting open
/// connections in `conns`.
pub fn serve<H, F>(listener: TcpListener, conns: Connections, handler: H) -> Server
where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let handler = Arc::new(handler);
    let mut builder = http1::Builder::new();
    // One flat write buffer: a stream without pauses goes out in one write, as its events are ready at once.
    builder.auto_date_header(false).header_read_timeout(None).writev(false);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            conns.0.fetch_add(1, Ordering::SeqCst);
            let guard = OpenGuard(conns.clone());
            let (handler, builder) = (handler.clone(), builder.clone());
            tokio::spawn(async move {
                let conn = Arc::new(ConnState::default());
                let io = TokioIo::new(Io { stream, conn: conn.clone() });
                let service = hyper::service::service_fn(move |mut req| {
                    let (handler, conn) = (handler.clone(), conn.clone());
                    async move {
                        let switched = hyper::upgrade::on(&mut req);
                        let resp = (*handler)(read_request(req).await?).await;
                        if let Body::Upgrade(hook) = &resp.body {
                            let hook = hook.0.clone();
                            tokio::spawn(async move {
                                if let Ok(io) = switched.await {
                                    hook(TokioIo::new(io)).await;
                                }
                            });
                        }
                        into_hyper(resp, &conn)
                    }
                });
                let _ = builder.serve_connection(io, service).with_upgrades().await;
                drop(guard);
            });
        }
    });
    Server { task }
}
