//! The HTTP side shared by HTTP providers: a pooled client per thread, timeouts by phase, and status → error mapping.

use super::Timeouts;
use crate::error::{ProviderError, TimeoutPhase};
use crate::speech::AudioStream;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use std::time::Duration;
use tokio::time::Instant;

/// The most of an error answer's body that is read for its message.
const ERROR_BODY_BYTES: usize = 64 << 10;

/// One upstream endpoint of a provider, with its pooled client.
pub(crate) struct Upstream {
    pub name: String,
    pub base_url: String,
    pub key: Option<String>,
    pub key_variable: String,
    pub timeouts: Timeouts,
    pub client: std::sync::Arc<HttpClient>,
    /// The URLs of the fixed paths called so far, parsed once (parsing a URL costs microseconds per request).
    pub endpoints: std::sync::RwLock<Vec<(&'static str, reqwest::Url)>>,
}

/// The pooled client a provider's upstreams share, one per thread that uses it. A connection is driven by the
/// runtime of the thread that opened it, so a client shared by the HTTP workers would make every request of one
/// worker over a connection another opened a hop between threads (a wake-up each way, and no gain from more
/// workers); with a client per thread, a request and its upstream connections stay on one thread.
pub(crate) struct HttpClient {
    name: String,
    timeouts: Timeouts,
    first: reqwest::Client,
    per_thread: thread_local::ThreadLocal<reqwest::Client>,
}

impl HttpClient {
    pub fn new(name: &str, timeouts: Timeouts) -> Result<Self, String> {
        let first = build(name, timeouts)?;
        Ok(HttpClient { name: name.to_owned(), timeouts, first, per_thread: thread_local::ThreadLocal::new() })
    }
}

impl std::ops::Deref for HttpClient {
    type Target = reqwest::Client;

    /// This thread's client (made on its first use; the settings built once already, so this cannot fail in
    /// practice, and if it did the first client would serve).
    fn deref(&self) -> &reqwest::Client {
        self.per_thread.get_or(|| build(&self.name, self.timeouts).unwrap_or_else(|_| self.first.clone()))
    }
}

fn build(name: &str, timeouts: Timeouts) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .connect_timeout(timeouts.connect)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("provider `{name}`: cannot build HTTP client: {e}"))
}

impl Upstream {
    pub fn new(
        name: &str,
        base_url: &str,
        key: Option<String>,
        key_variable: &str,
        timeouts: Timeouts,
        client: std::sync::Arc<HttpClient>,
    ) -> Upstream {
        Upstream {
            name: name.to_owned(),
            base_url: base_url.to_owned(),
            key,
            key_variable: key_variable.to_owned(),
            timeouts,
            client,
            endpoints: Default::default(),
        }
    }

    /// A POST to `base_url` + `path` (a fixed path, such as `/chat/completions`).
    pub fn post(&self, path: &'static str) -> reqwest::RequestBuilder {
        let known = self.endpoints.read().ok().and_then(|e| e.iter().find(|(p, _)| *p == path).map(|(_, u)| u.clone()));
        if let Some(url) = known {
            return self.client.post(url);
        }
        let text = format!("{}{path}", self.base_url);
        match reqwest::Url::parse(&text) {
            Ok(url) => {
                if let Ok(mut endpoints) = self.endpoints.write() {
                    endpoints.push((path, url.clone()));
                }
                self.client.post(url)
            }
            // Not a URL: reqwest reports it when the request is sent.
            Err(_) => self.client.post(text),
        }
    }

    /// Sends the request and waits for the response head, within the first-byte bound. A non-success status is
    /// turned into an error using `parse_message` to read the provider's error body.
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
        deadline: Instant,
        parse_message: fn(&[u8]) -> Option<String>,
    ) -> Result<reqwest::Response, ProviderError> {
        let first_byte = Instant::now() + self.timeouts.first_byte;
        let (limit, phase) =
            if first_byte < deadline { (first_byte, TimeoutPhase::FirstByte) } else { (deadline, TimeoutPhase::Total) };
        let response = match tokio::time::timeout_at(limit, request.send()).await {
            Err(_) => return Err(self.timeout(phase)),
            Ok(Err(e)) => return Err(self.transport_error(&e)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry_after(response.headers());
        let body = self.read_prefix(response, ERROR_BODY_BYTES, deadline).await;
        let message = body
            .as_deref()
            .and_then(parse_message)
            .or_else(|| body.as_deref().map(|b| String::from_utf8_lossy(b).chars().take(300).collect()))
            .unwrap_or_default();
        Err(self.status_error(status.as_u16(), retry_after, message))
    }

    /// Reads a whole body within the deadline and `max_body_bytes`.
    pub async fn body(&self, response: reqwest::Response, deadline: Instant) -> Result<Bytes, ProviderError> {
        self.read(response, self.timeouts.max_body_bytes, deadline).await
    }

    /// Reads a whole body of at most `cap` bytes, each piece within the gap bound and all within `deadline`; a
    /// larger one is refused as soon as it shows (by its `content-length`, or by what has arrived), not read to
    /// its end.
    async fn read(
        &self,
        mut response: reqwest::Response,
        cap: usize,
        deadline: Instant,
    ) -> Result<Bytes, ProviderError> {
        if response.content_length().is_some_and(|n| n > cap as u64) {
            return Err(self.too_large(cap));
        }
        let gap = self.timeouts.between_chunks;
        let mut next = async || match next_chunk(&mut response, gap, deadline).await {
            Err(phase) => Err(self.timeout(phase)),
            Ok(chunk) => chunk.map_err(|e| self.transport_error(&e)),
        };
        let Some(first) = next().await? else { return Ok(Bytes::new()) };
        let Some(second) = next().await? else {
            return if first.len() > cap { Err(self.too_large(cap)) } else { Ok(first) };
        };
        let mut body = bytes::BytesMut::from(&first[..]);
        let mut chunk = Some(second);
        while let Some(piece) = chunk {
            if body.len() + piece.len() > cap {
                return Err(self.too_large(cap));
            }
            body.extend_from_slice(&piece);
            chunk = next().await?;
        }
        Ok(body.freeze())
    }

    /// The first `cap` bytes of a body (an error's, read for its message), within the gap bound and the deadline;
    /// what arrived before a failure is kept.
    async fn read_prefix(&self, mut response: reqwest::Response, cap: usize, deadline: Instant) -> Option<Bytes> {
        let mut body = bytes::BytesMut::new();
        while body.len() < cap {
            match next_chunk(&mut response, self.timeouts.between_chunks, deadline).await {
                Ok(Ok(Some(piece))) => body.extend_from_slice(&piece[..piece.len().min(cap - body.len())]),
                Ok(Ok(None)) => break,
                _ => return (!body.is_empty()).then(|| body.freeze()),
            }
        }
        Some(body.freeze())
    }

    /// The error for a whole answer past `cap` bytes.
    pub fn too_large(&self, cap: usize) -> ProviderError {
        self.protocol(format!("the upstream sent more than {cap} bytes in one answer"))
    }

    /// The body as a stream of chunks, each within the gap bound and all within the deadline.
    pub fn chunks(
        &self,
        response: reqwest::Response,
        deadline: Instant,
    ) -> BoxStream<'static, Result<Bytes, ProviderError>> {
        let name = self.name.clone();
        let gap = self.timeouts.between_chunks;
        let body = response.bytes_stream();
        futures::stream::unfold(Some(body), move |state| {
            let name = name.clone();
            async move {
                let mut body = state?;
                let (limit, phase) = gap_or_deadline(gap, deadline);
                match tokio::time::timeout_at(limit, body.next()).await {
                    Err(_) => Some((Err(ProviderError::Timeout { provider: name, phase }), None)),
                    Ok(None) => None,
                    Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
                    Ok(Some(Err(e))) => {
                        let message = format!("stream broke: {}", error_chain(&e));
                        Some((Err(ProviderError::Connection { provider: name, message }), None))
                    }
                }
            }
        })
        .boxed()
    }

    /// Streams `response`'s body, having waited for its first non-empty chunk.
    pub async fn audio(&self, response: reqwest::Response, deadline: Instant) -> Result<AudioStream, ProviderError> {
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let mut chunks = self.chunks(response, deadline);
        loop {
            match chunks.next().await {
                Some(Ok(first)) if first.is_empty() => continue,
                Some(Ok(first)) => return Ok(AudioStream { content_type, first, rest: chunks }),
                Some(Err(e)) => return Err(e),
                None => return Err(self.protocol("the audio stream ended before any audio")),
            }
        }
    }

    /// A file for a multipart body.
    pub fn file_part(
        &self,
        bytes: &Bytes,
        filename: &str,
        content_type: &str,
    ) -> Result<reqwest::multipart::Part, ProviderError> {
        reqwest::multipart::Part::stream(reqwest::Body::from(bytes.clone()))
            .file_name(filename.to_owned())
            .mime_str(content_type)
            .map_err(|e| self.protocol(format!("bad content type: {e}")))
    }

    pub fn deadline(&self) -> Instant {
        Instant::now() + self.timeouts.total
    }

    pub fn timeout(&self, phase: TimeoutPhase) -> ProviderError {
        ProviderError::Timeout { provider: self.name.clone(), phase }
    }

    pub fn protocol(&self, message: impl Into<String>) -> ProviderError {
        ProviderError::Protocol { provider: self.name.clone(), message: message.into() }
    }

    fn transport_error(&self, e: &reqwest::Error) -> ProviderError {
        if e.is_timeout() {
            return self.timeout(if e.is_connect() { TimeoutPhase::Connect } else { TimeoutPhase::FirstByte });
        }
        ProviderError::Connection { provider: self.name.clone(), message: error_chain(e) }
    }

    /// The one map from an upstream status to our error kinds.
    pub fn status_error(&self, status: u16, retry_after: Option<Duration>, message: String) -> ProviderError {
        let provider = self.name.clone();
        match status {
            429 => ProviderError::RateLimited { provider, retry_after, message },
            401 | 403 => ProviderError::BadCredentials { provider, status, variable: self.key_variable.clone() },
            400..=499 => ProviderError::Rejected { provider, status, message },
            _ => ProviderError::Upstream { provider, status, message },
        }
    }
}

/// When the next piece of a body is due: within the gap bound, unless the deadline comes first.
/// A body's next chunk, within the gap bound and the deadline: `Err` names the bound that ran out.
async fn next_chunk(
    response: &mut reqwest::Response,
    gap: Duration,
    deadline: Instant,
) -> Result<reqwest::Result<Option<Bytes>>, TimeoutPhase> {
    let (limit, phase) = gap_or_deadline(gap, deadline);
    tokio::time::timeout_at(limit, response.chunk()).await.map_err(|_| phase)
}

fn gap_or_deadline(gap: Duration, deadline: Instant) -> (Instant, TimeoutPhase) {
    let next_gap = Instant::now() + gap;
    if next_gap < deadline {
        (next_gap, TimeoutPhase::BetweenChunks)
    } else {
        (deadline, TimeoutPhase::Total)
    }
}

/// `Retry-After` in seconds (or `retry-after-ms`); HTTP dates are not worth honouring here.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = value("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Some(Duration::from_millis(ms.max(0.0) as u64));
    }
    value("retry-after").and_then(|v| v.parse::<u64>().ok()).map(Duration::from_secs)
}

/// An error with its sources, without the URL (which may carry secrets in query strings).
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.without_url_ref().to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let text = self.to_string();
        match self.url() {
            Some(url) => text.replace(&format!(" ({url})"), "").replace(url.as_str(), "<upstream>"),
            None => text,
        }
    }
}
