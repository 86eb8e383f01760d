//! What the benchmarks (`gateway.rs`, `realtime.rs`, `memory.rs`) need around the processes they measure: starting
//! and pinning children, reading their output, reading a process's CPU time and memory from `/proc`, starting the
//! gateway, and the lean HTTP/1.1 client. Included by each with `#[path = "support.rs"] mod support;`.
#![allow(dead_code)]

use bytes::{Buf, BytesMut};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

pub type Result<T> = std::result::Result<T, Error>;

pub const GATEWAY_BIN: &str = env!("CARGO_BIN_EXE_switchyard");
/// No response may take longer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// Kills every child when dropped, on success and error paths alike.
#[derive(Default)]
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn child_command(bin: &str, cpu: Option<&str>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

/// Spawns `cmd` with stdout read line by line on a thread (so a silent child cannot hang us) and stderr to `log`.
pub fn spawn(children: &mut Children, mut cmd: Command, log: &Path) -> Result<std_mpsc::Receiver<String>> {
    let log = std::fs::File::create(log)?;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(log));
    let mut child = cmd.spawn()?;
    let stdout = child.stdout.take().ok_or("child without stdout")?;
    children.0.push(child);
    let (tx, rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // Nobody listens any more: keep draining so the child never blocks on a full pipe.
                continue;
            }
        }
    });
    Ok(rx)
}

/// Waits (bounded) for a stdout line containing `marker`; answers what follows it.
pub fn wait_for(rx: &std_mpsc::Receiver<String>, marker: &str, what: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some((_, rest)) = line.split_once(marker) {
                    return Ok(rest.trim().to_owned());
                }
            }
            Err(_) => return Err(format!("{what}: no line with `{marker}` within 30 s").into()),
        }
    }
}

/// Resolves on SIGINT or SIGTERM, naming it: a bench selects on it to end through its normal path (so `Children`
/// still stops the servers).
pub async fn interrupted() -> &'static str {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// Moves every thread of a running process onto `cpu`.
pub fn repin(pid: u32, cpu: &str) -> Result<()> {
    let status =
        Command::new("taskset").args(["-a", "-p", "-c", cpu, &pid.to_string()]).stdout(Stdio::null()).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("taskset could not move process {pid} to CPU {cpu}").into())
    }
}

pub fn parse_url(url: &str) -> Result<SocketAddr> {
    let hostport = url.strip_prefix("http://").ok_or_else(|| format!("not an http URL: {url}"))?;
    Ok(hostport.trim_end_matches('/').parse()?)
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The commit the binaries were built from, read-only (no index refresh); the benches' and mocks' own files don't
/// count.
pub fn revision() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("--no-optional-locks")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(head) => {
            let dirty =
                git(&["status", "--porcelain", "--", ".", ":(exclude)tests/bench"]).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{head} + uncommitted changes")
            } else {
                head
            }
        }
        None => "unknown revision".to_owned(),
    }
}

pub fn online_cpus() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .ok()
        .filter(|n| *n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used so far, in clock ticks (`/proc/<pid>/stat`; `self` for this one).
pub fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start after the last ')'; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
pub fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// A process's resident memory (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS")
}

/// A field of `/proc/<pid>/status` given in kB (`VmRSS`, `VmHWM`, `RssAnon`, …) or as a count (`Threads`).
pub fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no {field} for process {pid}").into())
}

/// A process's memory and handles, from `/proc`: resident (`VmRSS`, of it anonymous `RssAnon`) and peak
/// resident (`VmHWM`) memory in KiB, threads, open files.
pub struct Mem {
    pub rss: u64,
    pub anon: u64,
    pub hwm: u64,
    pub threads: u64,
    pub fds: usize,
}

impl Mem {
    pub fn read(pid: u32) -> Result<Mem> {
        Ok(Mem {
            rss: status_kib(pid, "VmRSS")?,
            anon: status_kib(pid, "RssAnon")?,
            hwm: status_kib(pid, "VmHWM")?,
            threads: status_kib(pid, "Threads")?,
            fds: std::fs::read_dir(format!("/proc/{pid}/fd"))?.count(),
        })
    }
}

/// KiB as MiB, one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// Starts `switchyard serve` on a fresh data directory (`workers` HTTP workers, or the configured number), pinned
/// to `cpu`; answers its address, its bootstrap key and its pid.
pub fn start_gateway(
    children: &mut Children,
    data: &Path,
    mock_addr: SocketAddr,
    cpu: Option<&str>,
    workers: Option<usize>,
    log: &Path,
) -> Result<(SocketAddr, String, Option<u32>)> {
    let workers = workers.map(|w| w.to_string());
    let env: Vec<(&str, &str)> = workers.iter().map(|w| ("SWITCHYARD__SERVER__WORKERS", w.as_str())).collect();
    start_gateway_with(children, data, mock_addr, cpu, &env, log)
}

/// `start_gateway` with more environment variables (settings) for the gateway.
pub fn start_gateway_with(
    children: &mut Children,
    data: &Path,
    mock_addr: SocketAddr,
    cpu: Option<&str>,
    env: &[(&str, &str)],
    log: &Path,
) -> Result<(SocketAddr, String, Option<u32>)> {
    std::fs::create_dir_all(data)?;
    let mut gw = child_command(GATEWAY_BIN, cpu);
    gw.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env_remove("RUST_LOG")
        .env("OPENAI_BASE_URL", format!("http://{mock_addr}/v1"))
        .env("OPENAI_API_KEY", "x")
        .env("SWITCHYARD__LOG__LEVEL", "warn")
        .env("SWITCHYARD__BOOTSTRAP__REQUESTS_PER_MINUTE", "1000000000")
        .env("SWITCHYARD__BOOTSTRAP__CONCURRENT_REQUESTS", "100000")
        .env("SWITCHYARD__BOOTSTRAP__TOKENS_PER_MINUTE", "2000000000")
        .env("SWITCHYARD__BOOTSTRAP__CREDITS", "1000000000");
    gw.envs(env.iter().copied());
    let out = spawn(children, gw, log)?;
    let pid = children.0.last().map(Child::id);
    let key = wait_for(&out, "API key (shown once, keep it): ", "switchyard serve")?;
    let addr = parse_url(&wait_for(&out, "Switchyard listening on ", "switchyard serve")?)?;
    Ok((addr, key, pid))
}

// ---------------------------------------------------------------------------------------------------------------
// The lean HTTP/1.1 client, the same for every target

pub fn request_bytes(path: &str, addr: SocketAddr, key: &str, body: &str) -> Arc<[u8]> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
    .into()
}

pub struct Conn {
    pub stream: TcpStream,
    pub buf: BytesMut,
}

#[derive(Default)]
pub struct Reply {
    pub status: u16,
    pub overhead_us: Option<u64>,
    /// The server said `connection: close`: open a new connection before the next request.
    pub close: bool,
    pub body: Vec<u8>,
    /// When the first non-empty `"content":"…"` arrived (when watched).
    pub first_content: Option<Instant>,
    /// The longest time between two chunks of a chunked body (when watched).
    pub max_gap: Duration,
}

pub const CONTENT: &[u8] = br#""content":""#;

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Holds `"content":"` followed by something other than the closing quote.
pub fn has_content(data: &[u8]) -> bool {
    let mut from = 0;
    while let Some(p) = find(&data[from..], CONTENT) {
        let after = from + p + CONTENT.len();
        match data.get(after) {
            Some(b'"') => from = after,
            Some(_) => return true,
            None => return false,
        }
    }
    false
}

pub fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_owned())
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: BytesMut::with_capacity(32 * 1024) })
    }

    pub async fn more(&mut self) -> std::io::Result<()> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(32 * 1024);
        }
        match self.stream.read_buf(&mut self.buf).await? {
            0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
        }
    }

    /// Reads until `needle` is buffered; answers its offset.
    pub async fn until(&mut self, needle: &[u8]) -> std::io::Result<usize> {
        let mut from = 0;
        loop {
            if let Some(p) = find(&self.buf[from..], needle) {
                return Ok(from + p);
            }
            if self.buf.len() > 256 * 1024 {
                return Err(invalid("response head or chunk line too long"));
            }
            from = self.buf.len().saturating_sub(needle.len() - 1);
            self.more().await?;
        }
    }

    /// `exchange` within `REQUEST_TIMEOUT` (the connection is unusable after a timeout).
    pub async fn timed_exchange(&mut self, request: &[u8], keep: bool, watch: bool) -> std::io::Result<Reply> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(request, keep, watch)).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no complete response within 10 s")),
        }
    }

    /// Sends one request and reads the whole response (Content-Length or chunked). `keep` keeps the body;
    /// `watch` notes when the first non-empty content delta arrived.
    pub async fn exchange(&mut self, request: &[u8], keep: bool, watch: bool) -> std::io::Result<Reply> {
        self.stream.write_all(request).await?;
        let end = self.until(b"\r\n\r\n").await?;
        let mut reply = Reply::default();
        let mut length = None;
        let mut chunked = false;
        {
            let head = std::str::from_utf8(&self.buf[..end]).map_err(|_| invalid("head not UTF-8"))?;
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap_or("");
            reply.status =
                status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| invalid("bad status line"))?;
            for line in lines {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                let (name, value) = (name.trim(), value.trim());
                if name.eq_ignore_ascii_case("content-length") {
                    length = Some(value.parse::<usize>().map_err(|_| invalid("bad content-length"))?);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.to_ascii_lowercase().contains("chunked");
                } else if name.eq_ignore_ascii_case("connection") {
                    reply.close = value.eq_ignore_ascii_case("close");
                } else if name.eq_ignore_ascii_case("x-switchyard-overhead-us") {
                    reply.overhead_us = value.parse().ok();
                }
            }
        }
        self.buf.advance(end + 4);
        if chunked {
            let mut seen = Vec::new();
            let mut last_chunk: Option<Instant> = None;
            loop {
                let line_end = self.until(b"\r\n").await?;
                let size = {
                    let line = std::str::from_utf8(&self.buf[..line_end]).map_err(|_| invalid("bad chunk line"))?;
                    let hex = line.split(';').next().unwrap_or("").trim();
                    usize::from_str_radix(hex, 16).map_err(|_| invalid("bad chunk size"))?
                };
                self.buf.advance(line_end + 2);
                if size == 0 {
                    // Trailers, up to the empty line.
                    loop {
                        let p = self.until(b"\r\n").await?;
                        self.buf.advance(p + 2);
                        if p == 0 {
                            break;
                        }
                    }
                    break;
                }
                while self.buf.len() < size + 2 {
                    self.more().await?;
                }
                if watch {
                    let now = Instant::now();
                    if let Some(last) = last_chunk {
                        reply.max_gap = reply.max_gap.max(now - last);
                    }
                    last_chunk = Some(now);
                }
                let looking = watch && reply.first_content.is_none();
                if keep || looking {
                    let from = seen.len().saturating_sub(CONTENT.len());
                    seen.extend_from_slice(&self.buf[..size]);
                    if looking && has_content(&seen[from..]) {
                        reply.first_content = Some(Instant::now());
                    }
                }
                self.buf.advance(size + 2);
            }
            if keep {
                reply.body = seen;
            }
        } else {
            let len = match length {
                Some(n) => n,
                None if reply.close => return Err(invalid("close-delimited body unsupported")),
                None => 0,
            };
            while self.buf.len() < len {
                self.more().await?;
            }
            if keep {
                reply.body = self.buf[..len].to_vec();
            }
            self.buf.advance(len);
        }
        Ok(reply)
    }
}

/// One request on a new connection; answers the body of a 200.
pub async fn fetch(addr: SocketAddr, request: &[u8]) -> Result<Vec<u8>> {
    let reply = Conn::open(addr).await?.timed_exchange(request, true, false).await?;
    if reply.status != 200 {
        return Err(format!("{addr}: status {}", reply.status).into());
    }
    Ok(reply.body)
}
