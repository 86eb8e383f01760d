//! Switchyard realtime benchmark: what the gateway's relay adds to each audio chunk of a voice session, and what an
//! open session costs in memory.
//!
//! `cargo bench --bench realtime` (or `make bench`; about 30 s) or `BENCH_QUICK=1 cargo bench --bench realtime`
//! (about 10 s). Prints a markdown table on stdout, progress and per-round figures on stderr.
//!
//! Runs the mock OpenAI Realtime upstream (`tests/mock/realtime.rs`) in this process, with each
//! `response.output_audio.delta` stamped with `sent_ns` (UNIX nanoseconds just before the write) and a response's
//! five 0.1 s chunks paced `BENCH_RT_CHUNK_MS` apart (like speech, not a burst), and starts `switchyard serve`
//! (release, fresh data directory) as a child process with `OPENAI_BASE_URL` pointing at the mock. The same client
//! code then drives, in alternating rounds:
//! - **direct**: N concurrent sessions to `ws://mock/v1/realtime?model=gpt-realtime`;
//! - **gateway**: N concurrent sessions to `ws://gateway/v1/realtime?model=gpt-realtime` (the first-start API key).
//!
//! Each session: open (paced at `BENCH_RT_OPEN_RATE` a second), wait for `session.created`; once all N are open,
//! start at an offset spread over one response's audio, then R responses in turn (`response.create` → `response.done`).
//! Per audio delta the client records `receive time − sent_ns` (the mock shares this process's clock). Added =
//! gateway − direct, per percentile. Memory: the gateway's VmRSS after start, after a warm-up session, with all N
//! sessions of its first round open and idle (before any response), and after they closed; per session =
//! (open − after warm-up) / N.
//!
//! Placement (`BENCH_PIN`): `split` (default when `taskset` exists): this process (client and mock) on CPU 0,
//! gateway on CPU 1. `one`: everything on CPU 0. `none`: no pinning.
//! Knobs: `BENCH_QUICK=1` (N = 50, R = 2, 2 rounds), `BENCH_RT_SESSIONS` (N, default 200), `BENCH_RT_RESPONSES`
//! (R, default 5), `BENCH_RT_ROUNDS` (default 4: direct/gateway, gateway/direct, …), `BENCH_RT_CHUNK_MS` (default
//! 50), `BENCH_RT_OPEN_RATE` (sessions opened a second, default 500).
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

#[path = "../mock/realtime.rs"]
mod realtime_mock;
#[path = "support.rs"]
mod support;

use futures::{SinkExt, StreamExt};
use realtime_mock::{unix_ns, RealtimeMock, AUDIO_CHUNKS};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{
    child_command, cpu_ticks, env_or, loadavg, online_cpus, parse_url, repin, revision, rss_kib, spawn, tail, wait_for,
    Children, Result,
};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const GATEWAY_BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const MODEL: &str = "gpt-realtime";
/// No single step (connect, an event, a close) may take longer; no run either.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
const RUN_LIMIT: Duration = Duration::from_secs(5 * 60);
/// Time for the gateway's memory to settle before VmRSS is read.
const SETTLE: Duration = Duration::from_millis(300);
const AIM_US: u64 = 1000;

// ---------------------------------------------------------------------------------------------------------------
// Settings

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pin {
    Split,
    One,
    None,
}

#[derive(Clone)]
struct Settings {
    quick: bool,
    sessions: usize,
    responses: usize,
    rounds: usize,
    chunk_every: Duration,
    open_gap: Duration,
    pin: Pin,
}

impl Settings {
    fn from_env(has_taskset: bool) -> Settings {
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let pin = match std::env::var("BENCH_PIN").unwrap_or_default().as_str() {
            _ if !has_taskset => Pin::None,
            "none" | "0" => Pin::None,
            "one" => Pin::One,
            _ => Pin::Split,
        };
        let q = |a: usize, b: usize| if quick { a } else { b };
        let open_rate: u64 = env_or("BENCH_RT_OPEN_RATE", 500u64).clamp(1, 100_000);
        Settings {
            quick,
            sessions: env_or("BENCH_RT_SESSIONS", q(50, 200)).clamp(1, 5000),
            responses: env_or("BENCH_RT_RESPONSES", q(2, 5)).clamp(1, 1000),
            rounds: env_or("BENCH_RT_ROUNDS", q(2, 4)).clamp(1, 100),
            chunk_every: Duration::from_millis(env_or("BENCH_RT_CHUNK_MS", 50u64).clamp(1, 1000)),
            open_gap: Duration::from_micros(1_000_000 / open_rate),
            pin,
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The gateway's process (helpers as in gateway.rs)

// ---------------------------------------------------------------------------------------------------------------
// The client, the same for both targets

struct Target {
    name: &'static str,
    url: String,
    bearer: String,
}

/// What one session saw; partial when it failed part way.
#[derive(Default)]
struct SessionOut {
    /// Connect started → `session.created` received (ns).
    open_ns: Option<u64>,
    /// Per audio delta: received − `sent_ns` (ns).
    chunks: Vec<u64>,
    /// Per response: `response.create` sent → its first audio delta received (ns).
    first_audio: Vec<u64>,
    /// Per response: `response.create` sent → `response.done` received (ns).
    turns: Vec<u64>,
    error: Option<String>,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The next text frame (pings are answered by tungstenite; a close or an error ends the session).
async fn next_text(socket: &mut Socket) -> Result<(String, u64)> {
    loop {
        let frame = timeout(STEP_TIMEOUT, socket.next()).await.map_err(|_| "no event within 10 s")?;
        let received = unix_ns();
        match frame {
            Some(Ok(Message::Text(text))) => return Ok((text.as_str().to_owned(), received)),
            Some(Ok(Message::Close(close))) => return Err(format!("closed by the server: {close:?}").into()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("socket error: {e}").into()),
            None => return Err("socket ended".into()),
        }
    }
}

/// An audio delta's `sent_ns`, found without parsing the whole event (its base64 payload is most of the frame).
fn audio_stamp(text: &str) -> Option<Result<u64>> {
    let at = text.rfind("\"type\":\"")?;
    let kind = &text[at + 8..];
    if !kind.starts_with("response.output_audio.delta\"") {
        return None;
    }
    let stamp = text.rfind("\"sent_ns\":").map(|at| {
        let digits = &text[at + 10..];
        let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
        digits[..end].parse::<u64>().ok()
    });
    Some(stamp.flatten().ok_or_else(|| "an audio delta without sent_ns".into()))
}

fn event_type(text: &str) -> Result<String> {
    let event: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {text:.200}"))?;
    let kind = event["type"].as_str().ok_or_else(|| format!("an event without a type: {text:.200}"))?;
    if kind == "error" {
        return Err(format!("error event: {text:.300}").into());
    }
    Ok(kind.to_owned())
}

async fn connect(target: &Target) -> Result<Socket> {
    let mut request = target.url.as_str().into_client_request()?;
    request.headers_mut().insert("authorization", HeaderValue::from_str(&target.bearer)?);
    let (socket, _) = timeout(STEP_TIMEOUT, tokio_tungstenite::connect_async_with_config(request, None, true))
        .await
        .map_err(|_| "no handshake within 10 s")??;
    Ok(socket)
}

/// Opens a session and waits for `session.created`.
async fn open(target: &Target, out: &mut SessionOut) -> Result<Socket> {
    let started = Instant::now();
    let mut socket = connect(target).await?;
    let (first, _) = next_text(&mut socket).await?;
    let kind = event_type(&first)?;
    if kind != "session.created" {
        return Err(format!("first event {kind}, not session.created").into());
    }
    out.open_ns = Some(ns(started.elapsed()));
    Ok(socket)
}

/// `responses` responses in turn, recording each audio delta.
async fn converse(socket: &mut Socket, responses: usize, out: &mut SessionOut) -> Result<()> {
    for _ in 0..responses {
        timeout(STEP_TIMEOUT, socket.send(Message::text(r#"{"type":"response.create"}"#)))
            .await
            .map_err(|_| "could not send within 10 s")??;
        let asked = Instant::now();
        let mut audio = 0;
        loop {
            let (text, received) = next_text(socket).await?;
            if let Some(stamp) = audio_stamp(&text) {
                out.chunks.push(received.saturating_sub(stamp?));
                if audio == 0 {
                    out.first_audio.push(ns(asked.elapsed()));
                }
                audio += 1;
                continue;
            }
            if event_type(&text)? == "response.done" {
                out.turns.push(ns(asked.elapsed()));
                if audio != AUDIO_CHUNKS {
                    return Err(format!("{audio} audio deltas in a response, not {AUDIO_CHUNKS}").into());
                }
                if !text.contains(r#""status":"completed""#) {
                    return Err(format!("response not completed: {text:.300}").into());
                }
                break;
            }
        }
    }
    Ok(())
}

/// Closes cleanly: our close frame, then the server's, then the end of the stream.
async fn close(mut socket: Socket) -> Result<()> {
    timeout(STEP_TIMEOUT, async {
        socket.close(None).await?;
        while let Some(frame) = socket.next().await {
            frame?;
        }
        Ok::<(), tokio_tungstenite::tungstenite::Error>(())
    })
    .await
    .map_err(|_| "no close within 10 s")??;
    Ok(())
}

/// One session of a round: open after `delay`, say so, wait for `go`, start after `offset`, converse, close.
async fn session(
    target: Arc<Target>,
    delay: Duration,
    offset: Duration,
    responses: usize,
    opened: mpsc::UnboundedSender<bool>,
    mut go: watch::Receiver<bool>,
) -> SessionOut {
    let mut out = SessionOut::default();
    tokio::time::sleep(delay).await;
    let mut socket = match open(&target, &mut out).await {
        Ok(socket) => socket,
        Err(e) => {
            let _ = opened.send(false);
            out.error = Some(format!("open: {e}"));
            return out;
        }
    };
    let _ = opened.send(true);
    if !matches!(timeout(Duration::from_secs(60), go.wait_for(|go| *go)).await, Ok(Ok(_))) {
        out.error = Some("never told to go".into());
        return out;
    }
    tokio::time::sleep(offset).await;
    if let Err(e) = converse(&mut socket, responses, &mut out).await {
        out.error = Some(format!("response: {e}"));
        return out;
    }
    if let Err(e) = close(socket).await {
        out.error = Some(format!("close: {e}"));
    }
    out
}

/// One round against one target: N sessions, all opened before any response.
struct Round {
    sessions: Vec<SessionOut>,
    /// The gateway's VmRSS (KiB) before the sessions, with all open and idle, after they closed (when asked).
    rss: Option<[u64; 3]>,
    /// CPU time from the first response to the last close.
    cpu: CpuUse,
}

/// CPU time, in clock ticks (USER_HZ, 100 a second): CPU 0 and CPU 1 busy and in all, this process, the gateway.
#[derive(Clone, Copy, Default)]
struct CpuUse {
    busy: [u64; 2],
    total: [u64; 2],
    own: u64,
    gateway: u64,
}

impl CpuUse {
    fn now(gateway_pid: u32) -> CpuUse {
        let mut cpu = CpuUse::default();
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        for (i, name) in ["cpu0 ", "cpu1 "].iter().enumerate() {
            let Some(line) = stat.lines().find(|l| l.starts_with(name)) else { continue };
            let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
            if f.len() >= 8 {
                // user nice system idle iowait irq softirq steal
                cpu.busy[i] = f[0] + f[1] + f[2] + f[5] + f[6] + f[7];
                cpu.total[i] = cpu.busy[i] + f[3] + f[4];
            }
        }
        cpu.own = cpu_ticks("self").unwrap_or(0);
        cpu.gateway = cpu_ticks(&gateway_pid.to_string()).unwrap_or(0);
        cpu
    }

    fn since(self, before: CpuUse) -> CpuUse {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        CpuUse {
            busy: [d(self.busy[0], before.busy[0]), d(self.busy[1], before.busy[1])],
            total: [d(self.total[0], before.total[0]), d(self.total[1], before.total[1])],
            own: d(self.own, before.own),
            gateway: d(self.gateway, before.gateway),
        }
    }

    fn add(&mut self, other: CpuUse) {
        for i in 0..2 {
            self.busy[i] += other.busy[i];
            self.total[i] += other.total[i];
        }
        self.own += other.own;
        self.gateway += other.gateway;
    }

    /// "CPU 0 busy % (this process %), CPU 1 busy % (gateway %)", each as a share of one CPU over the time measured.
    fn describe(&self) -> String {
        let share = |part: u64, i: usize| {
            if self.total[i] == 0 {
                "–".to_owned()
            } else {
                format!("{:.0}", 100.0 * part as f64 / self.total[i] as f64)
            }
        };
        format!(
            "CPU 0 {}% busy ({}% this process), CPU 1 {}% busy ({}% gateway)",
            share(self.busy[0], 0),
            share(self.own, 0),
            share(self.busy[1], 1),
            share(self.gateway, 1)
        )
    }
}

async fn round(target: &Arc<Target>, s: &Settings, gateway_pid: u32, memory: bool) -> Result<Round> {
    let n = s.sessions;
    let gateway_pid_for_rss = memory.then_some(gateway_pid);
    let rss_before = gateway_pid_for_rss.map(rss_kib).transpose()?;
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel();
    let (go_tx, go_rx) = watch::channel(false);
    let chunk_ns = ns(s.chunk_every);
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let delay = s.open_gap * u32::try_from(i).unwrap_or(u32::MAX);
            // Spread the sessions' starts over one response's audio, so chunks and responses come evenly, not in
            // clumps (the sessions then run unsynchronised, like real callers).
            let offset = Duration::from_nanos(chunk_ns * AUDIO_CHUNKS as u64 * i as u64 / n as u64);
            tokio::spawn(session(target.clone(), delay, offset, s.responses, opened_tx.clone(), go_rx.clone()))
        })
        .collect();
    drop(opened_tx);
    let open_deadline = Instant::now() + s.open_gap * u32::try_from(n).unwrap_or(u32::MAX) + Duration::from_secs(20);
    let mut open_ok = 0;
    for _ in 0..n {
        let left = open_deadline.saturating_duration_since(Instant::now());
        match timeout(left, opened_rx.recv()).await {
            Ok(Some(ok)) => open_ok += usize::from(ok),
            Ok(None) | Err(_) => break,
        }
    }
    let rss_open = match gateway_pid_for_rss {
        Some(pid) => {
            tokio::time::sleep(SETTLE).await;
            Some(rss_kib(pid)?)
        }
        None => None,
    };
    if open_ok < n {
        eprintln!("bench:   {}: only {open_ok} of {n} sessions opened", target.name);
    }
    let cpu_before = CpuUse::now(gateway_pid);
    let _ = go_tx.send(true);
    let per_response = s.chunk_every * u32::try_from(AUDIO_CHUNKS).unwrap_or(u32::MAX) + Duration::from_secs(2);
    let deadline =
        Instant::now() + per_response + per_response * u32::try_from(s.responses).unwrap_or(1000) + STEP_TIMEOUT * 2;
    let mut sessions = Vec::with_capacity(n);
    for handle in handles {
        let left = deadline.saturating_duration_since(Instant::now());
        let abort = handle.abort_handle();
        match timeout(left, handle).await {
            Ok(Ok(out)) => sessions.push(out),
            Ok(Err(e)) => sessions.push(SessionOut { error: Some(format!("task: {e}")), ..Default::default() }),
            Err(_) => {
                abort.abort();
                sessions.push(SessionOut { error: Some("the round's time ran out".into()), ..Default::default() });
            }
        }
    }
    let cpu = CpuUse::now(gateway_pid).since(cpu_before);
    let rss = match (gateway_pid_for_rss, rss_before, rss_open) {
        (Some(pid), Some(before), Some(open)) => {
            tokio::time::sleep(SETTLE).await;
            Some([before, open, rss_kib(pid)?])
        }
        _ => None,
    };
    Ok(Round { sessions, rss, cpu })
}

// ---------------------------------------------------------------------------------------------------------------
// Statistics and the table

/// Nearest-rank percentile of sorted nanoseconds, in µs.
fn pct_us(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some((sorted[rank - 1] + 500) / 1000)
}

#[derive(Default)]
struct Totals {
    chunks: Vec<u64>,
    open: Vec<u64>,
    first_audio: Vec<u64>,
    turns: Vec<u64>,
    sessions: usize,
    errors: usize,
    first_error: Option<String>,
    /// Each round's p99 per chunk (µs).
    round_p99: Vec<u64>,
    cpu: CpuUse,
}

impl Totals {
    fn add(&mut self, round: &Round) {
        let mut chunks: Vec<u64> = round.sessions.iter().flat_map(|s| s.chunks.iter().copied()).collect();
        chunks.sort_unstable();
        self.round_p99.extend(pct_us(&chunks, 0.99));
        self.cpu.add(round.cpu);
        for s in &round.sessions {
            self.sessions += 1;
            self.chunks.extend(&s.chunks);
            self.open.extend(s.open_ns);
            self.first_audio.extend(&s.first_audio);
            self.turns.extend(&s.turns);
            if let Some(e) = &s.error {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| e.clone());
            }
        }
    }

    fn finish(&mut self) {
        for v in [&mut self.chunks, &mut self.open, &mut self.first_audio, &mut self.turns] {
            v.sort_unstable();
        }
    }
}

fn round_summary(round: &Round) -> String {
    let mut chunks: Vec<u64> = round.sessions.iter().flat_map(|s| s.chunks.iter().copied()).collect();
    chunks.sort_unstable();
    let errors = round.sessions.iter().filter(|s| s.error.is_some()).count();
    format!(
        "{} chunks, p50 {} p99 {} max {} µs, {errors} errors; {}",
        chunks.len(),
        fmt_us(pct_us(&chunks, 0.5)),
        fmt_us(pct_us(&chunks, 0.99)),
        fmt_us(pct_us(&chunks, 1.0)),
        round.cpu.describe()
    )
}

fn fmt_us(v: Option<u64>) -> String {
    v.map_or_else(|| "–".into(), |v| v.to_string())
}

fn fmt_added(d: Option<u64>, g: Option<u64>) -> String {
    match (d, g) {
        (Some(d), Some(g)) => format!("{:+}", g as i64 - d as i64),
        _ => "–".into(),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

struct Setup {
    settings: Settings,
    revision: String,
    gateway_pid: u32,
    cpus: usize,
    pin_note: String,
    command: String,
}

async fn bench(mock: &RealtimeMock, gateway: Target, setup: &Setup) -> Result<String> {
    let s = &setup.settings;
    let pid = setup.gateway_pid;
    let load_start = loadavg();
    let direct = Arc::new(Target {
        name: "direct",
        url: format!("ws://{}/realtime?model={MODEL}", mock.url().trim_start_matches("http://")),
        bearer: "Bearer x".into(),
    });
    let gateway = Arc::new(gateway);
    let rss_started = rss_kib(pid)?;
    // Warm-up and sanity: one session, one response, each way.
    for t in [&direct, &gateway] {
        let mut out = SessionOut::default();
        let mut socket = open(t, &mut out).await.map_err(|e| format!("{}: warm-up open: {e}", t.name))?;
        converse(&mut socket, 1, &mut out).await.map_err(|e| format!("{}: warm-up response: {e}", t.name))?;
        close(socket).await.map_err(|e| format!("{}: warm-up close: {e}", t.name))?;
    }
    tokio::time::sleep(SETTLE).await;
    let rss_warm = rss_kib(pid)?;
    eprintln!(
        "bench: gateway VmRSS {} MiB after start, {} MiB after a warm-up session",
        mib(rss_started),
        mib(rss_warm)
    );

    let t0 = Instant::now();
    let mut totals = [Totals::default(), Totals::default()];
    let mut memory: Option<[u64; 3]> = None;
    for r in 0..s.rounds {
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let target = if i == 0 { &direct } else { &gateway };
            eprintln!(
                "bench: round {}/{}, {}: {} sessions × {} responses",
                r + 1,
                s.rounds,
                target.name,
                s.sessions,
                s.responses
            );
            let round = round(target, s, pid, i == 1).await?;
            eprintln!("bench:   {}", round_summary(&round));
            if let Some([before, open, after]) = round.rss {
                eprintln!(
                    "bench:   gateway VmRSS {} MiB before, {} MiB with {} open, {} MiB after close: {:.1} KiB a session",
                    mib(before),
                    mib(open),
                    s.sessions,
                    mib(after),
                    open.saturating_sub(before) as f64 / s.sessions as f64
                );
                memory.get_or_insert([before, open, after]);
            }
            totals[i].add(&round);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let elapsed = t0.elapsed();
    for t in &mut totals {
        t.finish();
    }
    for (name, t) in ["direct", "gateway"].iter().zip(&totals) {
        if let Some(e) = &t.first_error {
            eprintln!("bench: {name}: {} sessions failed; first error: {e}", t.errors);
        }
    }

    let [d, g] = &totals;
    let mut o = String::new();
    let _ = writeln!(o, "| measurement | direct to mock | through gateway | added |");
    let _ = writeln!(o, "|---|---|---|---|");
    for (label, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)] {
        let (dv, gv) = (pct_us(&d.chunks, q), pct_us(&g.chunks, q));
        let _ = writeln!(
            o,
            "| audio chunk latency {label} (µs) | {} | {} | {} |",
            fmt_us(dv),
            fmt_us(gv),
            fmt_added(dv, gv)
        );
    }
    let spread = |t: &Totals| match (t.round_p99.iter().min(), t.round_p99.iter().max()) {
        (Some(lo), Some(hi)) => format!("{lo} / {hi}"),
        _ => "–".into(),
    };
    let _ = writeln!(o, "| audio chunk latency p99, best / worst round (µs) | {} | {} | – |", spread(d), spread(g));
    let pair = |v: &[u64]| (pct_us(v, 0.5), pct_us(v, 0.99));
    for (label, dv, gv) in [
        ("session open, handshake → session.created", &d.open, &g.open),
        ("response.create → first audio delta", &d.first_audio, &g.first_audio),
        ("response.create → response.done", &d.turns, &g.turns),
    ] {
        let ((d50, d99), (g50, g99)) = (pair(dv), pair(gv));
        let _ = writeln!(
            o,
            "| {label} p50 / p99 (µs) | {} / {} | {} / {} | {} / {} |",
            fmt_us(d50),
            fmt_us(d99),
            fmt_us(g50),
            fmt_us(g99),
            fmt_added(d50, g50),
            fmt_added(d99, g99)
        );
    }
    let _ = writeln!(
        o,
        "| sessions / audio chunks measured | {} / {} | {} / {} | – |",
        d.sessions,
        d.chunks.len(),
        g.sessions,
        g.chunks.len()
    );
    let _ = writeln!(o, "| errors (sessions failed) | {} | {} | – |", d.errors, g.errors);
    let _ =
        writeln!(o, "| CPU while responding (share of each CPU) | {} | {} | – |", d.cpu.describe(), g.cpu.describe());
    if let Some([idle, open, after]) = memory {
        let _ = writeln!(
            o,
            "| gateway VmRSS: after start / idle (after a warm-up session) / {} sessions open / after close (MiB) | – | \
             {} / {} / {} / {} | – |",
            s.sessions,
            mib(rss_started),
            mib(idle),
            mib(open),
            mib(after)
        );
        let _ = writeln!(
            o,
            "| gateway memory per open session, (open − idle) / {} (KiB) | – | {:.1} | – |",
            s.sessions,
            open.saturating_sub(idle) as f64 / s.sessions as f64
        );
    }
    let added99 = match (pct_us(&d.chunks, 0.99), pct_us(&g.chunks, 0.99)) {
        (Some(dv), Some(gv)) => {
            let added = gv as i64 - dv as i64;
            let verdict = if added < AIM_US as i64 { "met" } else { "not met" };
            format!("{verdict} ({added:+} µs)")
        }
        _ => "not measured".into(),
    };
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "Aim: the gateway adds under {AIM_US} µs at p99 per audio chunk: {added99}.\n\
         Machine: nproc {}, {}; load average {} at start, {} at end; {} s of measurement; gateway built from {}.\n\
         Method: {} rounds alternating direct/gateway (ABBA), each {} concurrent sessions opened at {} a second, \
         all open before any response, then {} responses each (`response.create` → `response.done`), the sessions' \
         starts spread over one response's audio. The mock (in this process, one current-thread tokio runtime with \
         the client) sends each response's {AUDIO_CHUNKS} audio deltas (0.1 s PCM16 24 kHz, ~6.5 kB events) {} ms \
         apart, each stamped with `sent_ns` (UNIX ns) just before the write; latency = client receive time − \
         `sent_ns`, same clock. One tokio-tungstenite client (TCP_NODELAY) for both targets. Added = gateway − \
         direct, per percentile. Memory: gateway VmRSS (/proc), per session from its first round, read {} ms after \
         the last session.created. CPU: /proc/stat and /proc/<pid>/stat from the first response to the last close, \
         summed over the rounds (tick-based, so a process's share can exceed its CPU's by a few points); CPU busy \
         beyond this process and the gateway is other load on the machine.",
        setup.cpus,
        setup.pin_note,
        load_start,
        loadavg(),
        elapsed.as_secs(),
        setup.revision,
        s.rounds,
        s.sessions,
        1_000_000 / s.open_gap.as_micros().max(1),
        s.responses,
        s.chunk_every.as_millis(),
        SETTLE.as_millis(),
    );
    let _ = writeln!(o, "Command: `{}`", setup.command);
    Ok(o)
}

async fn interrupted() -> &'static str {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

fn main() -> ExitCode {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("bench: cannot create a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match run(dir.path()) {
        Ok(table) => {
            println!("{table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: failed: {e}");
            let text = tail(&dir.path().join("gateway.log"), 20);
            if !text.is_empty() {
                eprintln!("--- last lines of gateway.log ---\n{text}");
            }
            ExitCode::FAILURE
        }
    };
    drop(dir);
    code
}

/// Starts the mock and the gateway, runs the bench, and (through `Children`'s drop) always stops the gateway.
fn run(dir: &Path) -> Result<String> {
    let cpus = online_cpus();
    let has_taskset = Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut settings = Settings::from_env(has_taskset);
    if settings.pin == Pin::Split && cpus < 2 {
        settings.pin = Pin::One;
    }
    let (self_cpu, gateway_cpu) = match settings.pin {
        Pin::Split => (Some("0"), Some("1")),
        Pin::One => (Some("0"), Some("0")),
        Pin::None => (None, None),
    };
    let pin_note = match settings.pin {
        Pin::Split => "pinned with taskset: client + mock (this process) on CPU 0, gateway on CPU 1".to_owned(),
        Pin::One => "pinned with taskset: everything on CPU 0".to_owned(),
        Pin::None if has_taskset => "no pinning (BENCH_PIN=none)".to_owned(),
        Pin::None => "no pinning (taskset not found)".to_owned(),
    };
    // Pin this process (all its threads, including those created later) before any runtime exists.
    if let Some(cpu) = self_cpu {
        repin(std::process::id(), cpu)?;
    }
    let mut command = String::new();
    let mut vars: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with("BENCH_")).collect();
    vars.sort();
    for (k, v) in vars {
        let _ = write!(command, "{k}={v} ");
    }
    command.push_str("cargo bench --bench realtime");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut children = Children::default();
    let result = runtime.block_on(async {
        let mock = RealtimeMock::start().await?;
        mock.stamp_audio(true);
        mock.pace_audio(settings.chunk_every);

        let data: PathBuf = dir.join("data");
        std::fs::create_dir_all(&data)?;
        let mut gw = child_command(GATEWAY_BIN, gateway_cpu);
        gw.arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env_remove("RUST_LOG")
            .env("OPENAI_BASE_URL", mock.url())
            .env("OPENAI_API_KEY", "x")
            .env("SWITCHYARD__LOG__LEVEL", "warn")
            .env("SWITCHYARD__BOOTSTRAP__REQUESTS_PER_MINUTE", "1000000000")
            .env("SWITCHYARD__BOOTSTRAP__CONCURRENT_REQUESTS", "100000")
            .env("SWITCHYARD__BOOTSTRAP__TOKENS_PER_MINUTE", "2000000000")
            .env("SWITCHYARD__BOOTSTRAP__CREDITS", "1000000000");
        let gw_out = spawn(&mut children, gw, &dir.join("gateway.log"))?;
        let gateway_pid = children.0.last().map(Child::id).ok_or("no gateway process")?;
        // The gateway prints these lines at once; reading them blocks this thread, which the mock does not need yet.
        let key = wait_for(&gw_out, "API key (shown once, keep it): ", "switchyard serve")?;
        let gw_addr = parse_url(&wait_for(&gw_out, "Switchyard listening on ", "switchyard serve")?)?;
        eprintln!(
            "bench: mock on {}, gateway on {gw_addr} (pid {gateway_pid}); {pin_note}{}",
            mock.url(),
            if settings.quick { "; quick run" } else { "" }
        );
        let gateway = Target {
            name: "gateway",
            url: format!("ws://{gw_addr}/v1/realtime?model={MODEL}"),
            bearer: format!("Bearer {key}"),
        };
        let setup = Setup { settings: settings.clone(), revision: revision(), gateway_pid, cpus, pin_note, command };
        // SIGINT or SIGTERM ends the run through the normal path, so `children` still kills the gateway.
        tokio::select! {
            result = bench(&mock, gateway, &setup) => result,
            signal = interrupted() => Err(format!("interrupted by {signal}").into()),
            _ = tokio::time::sleep(RUN_LIMIT) => Err(format!("still running after {RUN_LIMIT:?}").into()),
        }
    });
    drop(runtime);
    drop(children);
    result
}
