//! Hostile clients at the socket, against the real binary: a head past the limit, a head or a body that never
//! finishes (slowloris), a body past `max_body_bytes` sent slowly, 10,000 connections opened and left idle, and a
//! reader that takes one byte a second. Each is bounded in time (the gateway ends it, with a status where HTTP
//! allows one) and leaves the gateway serving everyone else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::mock::{MockConfig, MockServer};
use common::pair::CATALOGUE;
use common::process::{start_with, Running};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every wait in this file ends by this bound: the gateway must have acted well before it.
const BOUND: Duration = Duration::from_secs(30);

struct Setup {
    _dir: tempfile::TempDir,
    gateway: Running,
    data: std::path::PathBuf,
    key: String,
    addr: String,
}

/// The binary with short bounds (head 1.5 s, body pauses 2 s, a shut window 2 s), OpenAI models on `mock`.
async fn setup(mock: Option<&MockServer>, extra: &[(&str, String)]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = dir.path().join("models.toml");
    std::fs::write(&catalogue, CATALOGUE).unwrap();
    let mut env: Vec<(&str, String)> = vec![
        ("SWITCHYARD__SERVER__REQUEST_HEAD_TIMEOUT_MS", "1500".into()),
        ("SWITCHYARD__SERVER__BODY_IDLE_SECS", "2".into()),
        ("SWITCHYARD__SERVER__CLIENT_STALL_SECS", "2".into()),
        ("SWITCHYARD__CATALOGUE__PATH", catalogue.display().to_string()),
    ];
    if let Some(mock) = mock {
        env.push(("OPENAI_BASE_URL", format!("{}/v1", mock.url())));
        env.push(("OPENAI_API_KEY", "sk-test".into()));
    }
    env.extend(extra.iter().cloned());
    let data = dir.path().join("data");
    let gateway = start_with(&data, &env);
    let key = gateway.key.clone().unwrap();
    let addr = gateway.url.trim_start_matches("http://").to_owned();
    Setup { _dir: dir, gateway, data, key, addr }
}

/// Reads whatever the gateway sends until it closes the connection (or `BOUND`): the bytes, and whether it closed.
async fn read_to_close(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (got, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// The status line's code and the JSON body's `error.code` of a whole HTTP response.
fn status_and_code(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let code = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, code)
}

/// The gateway still answers a plain request at once.
async fn still_serving(setup: &Setup) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let body = json!({"model": "flat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    let response = client
        .post(format!("http://{}/v1/chat/completions", setup.addr))
        .bearer_auth(&setup.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

fn rss_kib(running: &Running) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", running.child.id())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_head_past_the_limit_gets_431_and_the_gateway_goes_on() {
    let setup = setup(None, &[]).await;
    let long = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(200 * 1024));
    let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    for head in [long, many] {
        let mut stream = TcpStream::connect(&setup.addr).await.unwrap();
        // The gateway may answer and close before it has read all of a long head: a broken write is fine.
        let _ = stream.write_all(head.as_bytes()).await;
        let (raw, closed) = read_to_close(&mut stream).await;
        assert!(closed, "the connection is closed");
        assert_eq!(status_and_code(&raw).0, 431, "{}", String::from_utf8_lossy(&raw));
    }
    still_serving(&setup).await;
}

#[tokio::test]
async fn a_head_that_never_ends_is_closed_with_408() {
    let setup = setup(None, &[]).await;
    let mut stream = TcpStream::connect(&setup.addr).await.unwrap();
    stream.write_all(b"POST /api/v1/task HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = Instant::now();
    // One header line every 300 ms: never a gap long enough to look idle, never an end.
    let trickle = async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if stream.write_all(format!("X-Slow-{i}: v\r\n").as_bytes()).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(BOUND, trickle).await;
    assert!(started.elapsed() < BOUND, "the gateway closed the connection");
    let (raw, _) = read_to_close(&mut stream).await;
    if !raw.is_empty() {
        assert_eq!(status_and_code(&raw).0, 408, "{}", String::from_utf8_lossy(&raw));
    }
    still_serving(&setup).await;
}

/// Sends a request head declaring `length` body bytes, then `send` (all of it, or the start of it).
async fn post_head(setup: &Setup, path: &str, length: usize, send: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(&setup.addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n",
        setup.key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(send).await.unwrap();
    stream
}

#[tokio::test]
async fn a_body_that_stops_or_crawls_gets_408_request_timeout() {
    let setup = setup(None, &[]).await;
    // Ten bytes of five hundred, then nothing.
    let mut stopped = post_head(&setup, "/api/v1/task", 500, b"{\"model\":").await;
    let (raw, closed) = read_to_close(&mut stopped).await;
    assert!(closed);
    assert_eq!(status_and_code(&raw), (408, "request_timeout".into()), "{}", String::from_utf8_lossy(&raw));

    // A byte every 500 ms: never a 2 s pause, but far below 1,024 bytes a second.
    let mut crawling = post_head(&setup, "/v1/chat/completions", 5000, b"{").await;
    let (raw, closed) = tokio::time::timeout(BOUND, async {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if crawling.write_all(b" ").await.is_err() {
                break;
            }
            let mut probe = [0u8; 4096];
            // The answer may already be waiting: read it without blocking the trickle.
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), crawling.read(&mut probe)).await {
                let (mut rest, closed) = read_to_close(&mut crawling).await;
                let mut raw = probe[..n].to_vec();
                raw.append(&mut rest);
                return (raw, closed);
            }
        }
        read_to_close(&mut crawling).await
    })
    .await
    .expect("the gateway ended the crawling body");
    assert!(closed);
    assert_eq!(status_and_code(&raw), (408, "request_timeout".into()), "{}", String::from_utf8_lossy(&raw));

    // An upload that stops part way: 408, and nothing of it is kept.
    let client = reqwest::Client::new();
    let init = json!({"filename": "a.wav", "content_type": "audio/wav", "bytes": 100_000});
    let ticket: Value = client
        .post(format!("http://{}/api/media/upload/init", setup.addr))
        .bearer_auth(&setup.key)
        .json(&init)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let put = ticket["upload_url"].as_str().unwrap();
    let path = &put[put.find("/api/").unwrap()..];
    let mut stream = TcpStream::connect(&setup.addr).await.unwrap();
    let head = format!("PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&common::wav(10_000)[..20_000]).await.unwrap();
    let (raw, closed) = read_to_close(&mut stream).await;
    assert!(closed);
    assert_eq!(status_and_code(&raw), (408, "request_timeout".into()), "{}", String::from_utf8_lossy(&raw));
    let done = client
        .post(format!("http://{}/api/media/upload/complete", setup.addr))
        .bearer_auth(&setup.key)
        .json(&json!({"upload_id": ticket["upload_id"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 400, "an upload that broke off cannot be completed");
    still_serving(&setup).await;
}

#[tokio::test]
async fn a_body_past_the_limit_is_refused_before_or_as_it_comes() {
    let setup = setup(None, &[]).await;
    // Declared too large: 413 at once, before a byte of the body is sent.
    let mut declared = post_head(&setup, "/api/v1/task", 10 << 20, b"").await;
    let (raw, closed) = read_to_close(&mut declared).await;
    assert!(closed);
    assert_eq!(status_and_code(&raw), (413, "payload_too_large".into()), "{}", String::from_utf8_lossy(&raw));

    // Chunked, 64 KiB every 100 ms: refused once it passes 1 MiB, not read to its end.
    let mut stream = TcpStream::connect(&setup.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/task HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        setup.key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
    let mut sent = 0usize;
    let refused = tokio::time::timeout(BOUND, async {
        while sent < 64 << 20 {
            if stream.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
            sent += 0x10000;
            let mut probe = [0u8; 4096];
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut probe)).await {
                return probe[..n].to_vec();
            }
        }
        read_to_close(&mut stream).await.0
    })
    .await
    .expect("refused within the bound");
    assert_eq!(status_and_code(&refused).0, 413, "{}", String::from_utf8_lossy(&refused));
    assert!(sent < 4 << 20, "refused soon after 1 MiB, not after {sent} bytes");
    still_serving(&setup).await;
}

#[tokio::test]
async fn ten_thousand_idle_connections_are_closed_and_never_stop_the_others() {
    let wanted = 10_000usize;
    // Each connection is a file here and in the gateway; both raise their soft limit to the hard one.
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let n = wanted.min(usize::try_from(limit).unwrap_or(usize::MAX).saturating_sub(256));
    if n < wanted {
        eprintln!("the open files limit is {limit}: opening {n} idle connections, not {wanted}");
    }
    let setup = setup(None, &[]).await;
    let before = rss_kib(&setup.gateway);
    let mut idle = Vec::with_capacity(n);
    for batch in 0..n.div_ceil(500) {
        let opened = futures::future::join_all((0..500.min(n - batch * 500)).map(|_| TcpStream::connect(&setup.addr)));
        for stream in opened.await {
            idle.push(stream.unwrap());
        }
    }
    let opened_at = Instant::now();
    still_serving(&setup).await;
    let with_idle = rss_kib(&setup.gateway);
    eprintln!("gateway RSS: {before} KiB before, {with_idle} KiB with {n} idle connections");
    assert!(with_idle - before < 256 * 1024, "{n} idle connections cost {} KiB", with_idle - before);
    // Every one is closed by the head bound (1.5 s), each read ending at once.
    let closed = futures::future::join_all(idle.iter_mut().map(|s| async move { read_to_close(s).await.1 })).await;
    assert!(closed.iter().all(|c| *c), "{} of {n} connections left open", closed.iter().filter(|c| !**c).count());
    assert!(opened_at.elapsed() < BOUND);
    still_serving(&setup).await;
}

#[tokio::test]
async fn a_reader_taking_one_byte_a_second_is_cut_off_and_charged_for_what_it_took() {
    // A stream of 150,000 words (within the default 200,000 tokens a minute): far more than socket buffers hold.
    let mock = MockServer::start(MockConfig { reply_words: 150_000, ..Default::default() }).await.unwrap();
    let setup = setup(Some(&mock), &[]).await;
    let before = rss_kib(&setup.gateway);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(setup.addr.parse().unwrap()).await.unwrap();
    let body = json!({"model": "long", "messages": [{"role": "user", "content": "go on"}], "stream": true,
        "max_tokens": 150_000})
    .to_string();
    let head = format!(
        "POST /api/v1/task HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        setup.key,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "the stream begins");
    // The reader goes on taking a byte a second. It cannot see the cut (the kernel drops a connection whose
    // window stayed shut past its user timeout without a word), so the proof is on the gateway's side: the stream
    // ends, and its usage record is written, while the reader still holds its end.
    let reader = tokio::spawn(async move {
        let mut byte = [0u8; 1];
        for _ in 0..BOUND.as_secs() * 2 {
            if stream.read(&mut byte).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    // The stream's usage record says the client left, charged for what was handed to it (not the whole answer).
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(setup.data.join("switchyard.db")).read_only(true);
    let db = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let deadline = Instant::now() + BOUND;
    let (status, tokens): (String, i64) = loop {
        let row = sqlx::query_as("SELECT status, completion_tokens FROM usage WHERE model = 'long'")
            .fetch_optional(&db)
            .await
            .unwrap();
        if let Some(row) = row {
            break row;
        }
        assert!(Instant::now() < deadline, "no usage record for the stream");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!reader.is_finished(), "the reader was still reading");
    reader.abort();
    still_serving(&setup).await;
    let during = rss_kib(&setup.gateway);
    assert!(during.saturating_sub(before) < 64 * 1024, "RSS grew from {before} to {during} KiB");
    assert_eq!(status, "abandoned");
    assert!(tokens > 0 && tokens < 150_000, "charged for {tokens} tokens of 150,000");
}
