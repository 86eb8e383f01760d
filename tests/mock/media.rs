#![allow(dead_code)]
//! Mock upstream for Switchyard's media providers: speaks the Black Forest Labs (Flux, submit-then-poll)
//! and the ElevenLabs (text-to-speech, speech-to-speech, speech-to-text, voices) wire formats over a
//! hand-rolled HTTP/1.1 server, and can inject faults. Used in-process by integration tests.
//!
//! Everything it produces is real: PNG samples of the requested size (stored-deflate encoder, CRC-32 and
//! Adler-32 by hand), 16-bit PCM / WAV tones, and MP3 when `ffmpeg` is on PATH (501 otherwise).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Seconds of generated speech per character of text.
pub const SECONDS_PER_CHAR: f64 = 0.06;
/// Frequency of the generated tone.
pub const TONE_HZ: f64 = 440.0;
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
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path with query string.
    pub path: String,
    /// Header names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body parsed as JSON (`Value::Null` when empty or not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
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
    task: JoinHandle<()>,
}

impl Drop for MediaMock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MediaMock {
    /// Binds 127.0.0.1:0.
    pub async fn start() -> std::io::Result<MediaMock> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            fault: Mutex::new((MediaFault::None, None)),
            pending_polls: AtomicU32::new(2),
            seq: AtomicU64::new(0),
            paths: Mutex::new(Vec::new()),
            last: Mutex::new(None),
            tasks: Mutex::new(HashMap::new()),
            base: format!("http://{addr}"),
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
                tokio::spawn(async move {
                    let mut conn = Conn { stream, buf: BytesMut::with_capacity(8192), sh };
                    let _ = conn.serve().await;
                });
            }
        });
        Ok(MediaMock { addr, shared, task })
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

    /// BFL: how many polls of a task answer "Pending" before "Ready" (default 2).
    pub fn set_pending_polls(&self, n: u32) {
        self.shared.pending_polls.store(n, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Small helpers

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn now_secs_f64() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
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

fn split_query(path: &str) -> (&str, HashMap<String, String>) {
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

// ---------------------------------------------------------------------------------------------------------
// PNG encoder (8-bit RGB, stored deflate blocks)

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[n] = c;
        n += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (ISO-HDLC, as used by PNG and zip).
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    c ^ 0xffff_ffff
}

pub fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

/// zlib stream made of stored (uncompressed) deflate blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65535 * 5 + 16);
    out.extend_from_slice(&[0x78, 0x01]);
    let mut chunks = data.chunks(65535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(c) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let len = c.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

fn png_chunk(out: &mut Vec<u8>, ty: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(ty);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A real PNG of `width` × `height`, 8-bit RGB, deterministic gradient derived from `seed`.
pub fn png(width: u32, height: u32, seed: u64) -> Vec<u8> {
    let (w, h) = (width.max(1) as usize, height.max(1) as usize);
    let s = splitmix(seed);
    let (sr, sg, sb) = ((s & 0xff) as u8, ((s >> 8) & 0xff) as u8, ((s >> 16) & 0xff) as u8);
    let mut raw = Vec::with_capacity((w * 3 + 1) * h);
    for y in 0..h {
        raw.push(0);
        let gy = (y * 255 / h.max(2).saturating_sub(1).max(1)) as u8;
        for x in 0..w {
            let gx = (x * 255 / w.max(2).saturating_sub(1).max(1)) as u8;
            raw.extend_from_slice(&[gx ^ sr, gy ^ sg, gx.wrapping_add(gy) ^ sb]);
        }
    }
    let mut out = Vec::with_capacity(raw.len() + 1024);
    out.extend_from_slice(b"\x89PNG\r\n\x1a\n");
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&(w as u32).to_be_bytes());
    ihdr.extend_from_slice(&(h as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(&mut out, b"IDAT", &zlib_stored(&raw));
    png_chunk(&mut out, b"IEND", &[]);
    out
}

// ---------------------------------------------------------------------------------------------------------
// Audio

/// `n` samples of a 16-bit little-endian mono sine tone at `rate`.
pub fn pcm_tone(rate: u32, samples: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples * 2);
    for i in 0..samples {
        let t = i as f64 / f64::from(rate.max(1));
        let v = ((t * TONE_HZ * std::f64::consts::TAU).sin() * 0.3 * f64::from(i16::MAX)) as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Number of samples for `secs` seconds at `rate`.
pub fn samples_for(rate: u32, secs: f64) -> usize {
    (f64::from(rate) * secs).round() as usize
}

/// Seconds of audio the mock generates for `text`.
pub fn tts_seconds(text: &str) -> f64 {
    text.chars().count() as f64 * SECONDS_PER_CHAR
}

/// RIFF/WAVE container around 16-bit mono PCM.
pub fn wav(rate: u32, pcm: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pcm.len() + 44);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + pcm.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
    out.extend_from_slice(pcm);
    out
}

/// Duration in seconds of a PCM WAV file, None when it is not one.
pub fn wav_duration(data: &[u8]) -> Option<f64> {
    if data.len() < 12 || &data[..4] != b"RIFF" || &data[8..12] != b"WAVE" {
        return None;
    }
    let mut pos = 12;
    let mut byte_rate = None;
    while pos + 8 <= data.len() {
        let id = &data[pos..pos + 4];
        let size = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]) as usize;
        let body = pos + 8;
        if id == b"fmt " && body + 12 <= data.len() {
            let br = u32::from_le_bytes([data[body + 8], data[body + 9], data[body + 10], data[body + 11]]);
            byte_rate = Some(br);
        } else if id == b"data" {
            let avail = size.min(data.len().saturating_sub(body));
            let br = byte_rate.filter(|b| *b > 0)?;
            return Some(avail as f64 / f64::from(br));
        }
        pos = body + size + (size & 1);
    }
    None
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Codec {
    Mp3 { bitrate: u32 },
    Pcm,
    Wav,
    Ulaw,
}

fn parse_output_format(f: &str) -> Option<(Codec, u32)> {
    let mut it = f.split('_');
    let codec = it.next()?;
    let rate: u32 = it.next()?.parse().ok()?;
    let extra = it.next();
    let c = match (codec, extra) {
        ("mp3", Some(br)) => Codec::Mp3 { bitrate: br.parse().ok()? },
        ("pcm", None) => Codec::Pcm,
        ("wav", None) => Codec::Wav,
        ("ulaw", None) if rate == 8000 => Codec::Ulaw,
        _ => return None,
    };
    if !(8000..=48000).contains(&rate) {
        return None;
    }
    Some((c, rate))
}

fn ulaw_encode(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = (s + BIAS).min(32635 + BIAS);
    let mut exp = 7;
    let mut mask = 0x4000;
    while exp > 0 && s & mask == 0 {
        exp -= 1;
        mask >>= 1;
    }
    let mant = (s >> (exp + 3)) & 0x0f;
    !(sign | (exp << 4) as u8 | mant as u8)
}

fn ffmpeg_on_path() -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join("ffmpeg").is_file())).unwrap_or(false)
}

async fn to_mp3(wav_bytes: Vec<u8>, rate: u32, bitrate: u32) -> std::io::Result<Vec<u8>> {
    let rate = rate.to_string();
    let bitrate = format!("{bitrate}k");
    let args = ["-f", "wav", "-i", "-", "-f", "mp3", "-ar", rate.as_str(), "-b:a", bitrate.as_str(), "-"];
    ffmpeg(&args, wav_bytes).await
}

/// A PNG re-encoded as JPEG.
async fn to_jpeg(png_bytes: Vec<u8>) -> std::io::Result<Vec<u8>> {
    ffmpeg(&["-f", "png_pipe", "-i", "-", "-f", "image2pipe", "-vcodec", "mjpeg", "-"], png_bytes).await
}

/// Runs ffmpeg with `args`, `input` on stdin; answers stdout.
async fn ffmpeg(args: &[&str], input: Vec<u8>) -> std::io::Result<Vec<u8>> {
    use std::process::Stdio;
    let wav_bytes = input;
    let mut child = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or_else(|| bad("no stdin"))?;
    let writer = tokio::spawn(async move {
        let r = stdin.write_all(&wav_bytes).await;
        drop(stdin);
        r
    });
    let out = child.wait_with_output().await?;
    let _ = writer.await;
    if !out.status.success() || out.stdout.is_empty() {
        return Err(bad("ffmpeg failed"));
    }
    Ok(out.stdout)
}

// ---------------------------------------------------------------------------------------------------------
// multipart/form-data

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

fn part<'a>(parts: &'a [Part], name: &str) -> Option<&'a Part> {
    parts.iter().find(|p| p.name == name)
}

fn part_text(parts: &[Part], name: &str) -> Option<String> {
    part(parts, name).map(|p| String::from_utf8_lossy(&p.data).into_owned())
}

// ---------------------------------------------------------------------------------------------------------
// Responses

enum Body {
    Full(Vec<u8>),
    /// Chunked transfer encoding, `STREAM_CHUNK` at a time with a 1 ms pause.
    Stream(Vec<u8>),
}

struct Resp {
    status: u16,
    content_type: String,
    headers: Vec<(String, String)>,
    body: Body,
    /// Close the connection after this many body bytes.
    cut: Option<usize>,
}

impl Resp {
    fn json(status: u16, v: &Value) -> Resp {
        Resp {
            status,
            content_type: "application/json".into(),
            headers: Vec::new(),
            body: Body::Full(v.to_string().into_bytes()),
            cut: None,
        }
    }

    fn bytes(content_type: &str, data: Vec<u8>) -> Resp {
        Resp { status: 200, content_type: content_type.into(), headers: Vec::new(), body: Body::Full(data), cut: None }
    }

    fn header(mut self, k: &str, v: String) -> Resp {
        self.headers.push((k.to_string(), v));
        self
    }
}

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

fn error_resp(provider: Provider, status: u16, message: Option<&str>) -> Resp {
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
            Resp::json(status, &json!({ "detail": message.unwrap_or(msg) }))
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
            Resp::json(status, &json!({ "detail": { "status": st, "message": message.unwrap_or(msg) } }))
        }
    }
}

/// FastAPI-style 422 validation error (both providers are FastAPI services).
fn validation(loc: &[&str], ty: &str, msg: &str, input: Value, ctx: Option<Value>) -> Resp {
    let mut item = json!({ "type": ty, "loc": loc, "msg": msg, "input": input });
    if let Some(c) = ctx {
        item["ctx"] = c;
    }
    Resp::json(422, &json!({ "detail": [item] }))
}

// ---------------------------------------------------------------------------------------------------------
// Handlers

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    keep_alive: bool,
}

async fn handle(sh: &Shared, req: &Request) -> Resp {
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
            Some(v) => Resp::json(200, &v),
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

fn submit(sh: &Shared, _model: &str, req: &Request, fault: &MediaFault) -> Resp {
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
    Resp::json(200, &json!({ "id": id, "polling_url": format!("{}/v1/get_result?id={id}", sh.base) }))
}

fn get_result(sh: &Shared, id: &str, fault: &MediaFault) -> Resp {
    let pending = sh.pending_polls.load(Ordering::SeqCst);
    let mut tasks = lock(&sh.tasks);
    let Some(task) = tasks.get_mut(id) else {
        return Resp::json(200, &json!({ "id": id, "status": "Task not found", "result": null, "progress": null }));
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
        Resp::json(200, &v)
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

async fn sample(sh: &Shared, file: &str) -> Resp {
    let id = file.rsplit_once('.').map(|(a, _)| a).unwrap_or(file);
    let task = lock(&sh.tasks).get(id).cloned();
    match task {
        Some(t) if t.outcome == Outcome::Normal && t.output_format == "jpeg" => {
            if !ffmpeg_on_path() {
                return error_resp(Provider::Bfl, 501, Some("jpeg output needs ffmpeg on PATH (mock)"));
            }
            match to_jpeg(png(t.width, t.height, t.seed)).await {
                Ok(jpeg) => Resp::bytes("image/jpeg", jpeg),
                Err(e) => error_resp(Provider::Bfl, 500, Some(&format!("ffmpeg: {e}"))),
            }
        }
        Some(t) if t.outcome == Outcome::Normal => Resp::bytes("image/png", png(t.width, t.height, t.seed)),
        _ => Resp {
            status: 404,
            content_type: "application/xml".into(),
            headers: Vec::new(),
            body: Body::Full(
                b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>BlobNotFound</Code></Error>".to_vec(),
            ),
            cut: None,
        },
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

fn voices() -> Resp {
    let list: Vec<Value> = VOICES.iter().filter_map(|v| voice_json(v.0)).collect();
    Resp::json(200, &json!({ "voices": list }))
}

fn voice_not_found(id: &str) -> Resp {
    Resp::json(
        404,
        &json!({ "detail": { "status": "voice_not_found", "message": format!("A voice with voice_id {id} does not exist.") } }),
    )
}

/// Encodes `secs` of tone in the requested format.
async fn render_audio(format: &str, secs: f64) -> Resp {
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
        Codec::Pcm => Resp::bytes("audio/pcm", pcm),
        Codec::Wav => Resp::bytes("audio/wav", wav(rate, &pcm)),
        Codec::Ulaw => {
            let data = pcm.chunks_exact(2).map(|c| ulaw_encode(i16::from_le_bytes([c[0], c[1]]))).collect();
            Resp::bytes("audio/basic", data)
        }
        Codec::Mp3 { bitrate } => {
            if !ffmpeg_on_path() {
                return error_resp(Provider::Eleven, 501, Some("mp3 output needs ffmpeg on PATH (mock)"));
            }
            match to_mp3(wav(rate, &pcm), rate, bitrate).await {
                Ok(mp3) => Resp::bytes("audio/mpeg", mp3),
                Err(e) => error_resp(Provider::Eleven, 500, Some(&format!("ffmpeg: {e}"))),
            }
        }
    }
}

fn finish_audio(mut r: Resp, stream: bool, fault: &MediaFault, chars: usize) -> Resp {
    if r.status != 200 {
        return r;
    }
    if stream {
        if let Body::Full(data) = std::mem::replace(&mut r.body, Body::Full(Vec::new())) {
            r.body = Body::Stream(data);
        }
    }
    if let MediaFault::CutAudio { after_bytes } = fault {
        r.cut = Some(*after_bytes);
    }
    let id = format!("{:020x}", splitmix(now_nanos()));
    r.header("request-id", id.clone()).header("history-item-id", id).header("x-character-count", chars.to_string())
}

async fn tts(req: &Request, voice: &str, query: &HashMap<String, String>, stream: bool, fault: &MediaFault) -> Resp {
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

async fn sts(req: &Request, voice: &str, query: &HashMap<String, String>, stream: bool, fault: &MediaFault) -> Resp {
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

fn stt(req: &Request) -> Resp {
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
    Resp::json(
        200,
        &json!({
            "language_code": language,
            "language_probability": 0.98,
            "text": text,
            "words": words,
            "transcription_id": format!("{:020x}", splitmix(now_nanos())),
        }),
    )
}

// ---------------------------------------------------------------------------------------------------------
// HTTP/1.1 connection

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    sh: Arc<Shared>,
}

impl Conn {
    async fn serve(&mut self) -> std::io::Result<()> {
        while let Some(req) = self.read_request().await? {
            {
                let (p, _) = split_query(&req.path);
                lock(&self.sh.paths).push(p.to_string());
                *lock(&self.sh.last) = Some(Recorded {
                    method: req.method.clone(),
                    path: req.path.clone(),
                    headers: req.headers.clone(),
                    body: req.body.clone(),
                });
            }
            let resp = handle(&self.sh, &req).await;
            if !self.write(resp, req.keep_alive).await? {
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

    /// Writes the response; returns whether the connection stays open.
    async fn write(&mut self, resp: Resp, keep_alive: bool) -> std::io::Result<bool> {
        use std::io::Write;
        let keep = keep_alive && resp.cut.is_none();
        let mut head = Vec::with_capacity(256);
        let _ =
            write!(head, "HTTP/1.1 {} {}\r\ncontent-type: {}\r\n", resp.status, reason(resp.status), resp.content_type);
        match &resp.body {
            Body::Full(d) => {
                let _ = write!(head, "content-length: {}\r\n", d.len());
            }
            Body::Stream(_) => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
        for (k, v) in &resp.headers {
            let _ = write!(head, "{k}: {v}\r\n");
        }
        head.extend_from_slice(if keep { b"connection: keep-alive\r\n\r\n" } else { b"connection: close\r\n\r\n" });
        match resp.body {
            Body::Full(d) => {
                let upto = resp.cut.unwrap_or(d.len()).min(d.len());
                head.extend_from_slice(&d[..upto]);
                self.stream.write_all(&head).await?;
            }
            Body::Stream(d) => {
                self.stream.write_all(&head).await?;
                let limit = resp.cut.unwrap_or(usize::MAX);
                let mut sent = 0;
                for chunk in d.chunks(STREAM_CHUNK) {
                    let take = chunk.len().min(limit - sent);
                    if take == 0 {
                        break;
                    }
                    let mut out = format!("{take:x}\r\n").into_bytes();
                    out.extend_from_slice(&chunk[..take]);
                    out.extend_from_slice(b"\r\n");
                    self.stream.write_all(&out).await?;
                    sent += take;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                if resp.cut.is_none() {
                    self.stream.write_all(b"0\r\n\r\n").await?;
                }
            }
        }
        self.stream.flush().await?;
        Ok(keep)
    }
}
