//! Memory over time (not a test): the gateway's resident memory after 10k, 100k and 1M requests of a fixed mixed
//! load, and with 1,000 idle streams open. `cargo bench --bench memory` (part of `make bench`; about 6 minutes) or
//! `BENCH_QUICK=1 cargo bench --bench memory` (50k requests, 200 streams). Markdown on stdout, progress on stderr.
//!
//! Starts `switchyard-mock` and `switchyard serve` (release builds, fresh data directory, embeddings off) as child
//! processes on 127.0.0.1, then:
//! 1. drives the mix (`mix`, cycled in a fixed order; `BENCH_MEMORY_KINDS=0,1` keeps only those of its kinds) over
//!    `BENCH_MEMORY_CONNS` keep-alive connections (32), stopping at 10k, 100k, 300k, 600k and 1M requests
//!    (`BENCH_MEMORY_REQUESTS`, 1,000,000) to read the gateway's `/proc/<pid>/status` a second after the load;
//! 2. twice: has the mock hold its next streams after their first delta (25 s, under the gateway's 30 s between
//!    chunks), opens `BENCH_MEMORY_STREAMS` streams (1,000; 0 skips this) at once, reads the gateway once every
//!    one has its response head, closes them, and reads it again 3 s after its `switchyard_streams_in_flight` is
//!    back.
//!
//! A leak is a bug: the bench prints `LEAK?` and exits nonzero when VmRSS grows by more than 25% from the first
//! stop at or past a tenth of the run (100k of 1M; never before the 10k warm-up) to the end, when closed streams
//! are not let go, or when VmRSS after the second round of streams is closed is above its peak with the first round
//! open (the allocator keeps some of what a round frees, and how much varies from run to run, so the end of one
//! round against the end of the other says little; streams that were not let go would add a second round's worth);
//! and on any unexpected answer (another status than expected, a stream without `[DONE]`, a timeout).
#![allow(clippy::print_stdout)]

#[path = "support.rs"]
mod support;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ExitCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{
    env_or, fetch, interrupted, invalid, loadavg, mib, online_cpus, parse_url, request_bytes, revision, spawn,
    start_gateway_with, status_kib, tail, wait_for, Children, Conn, Mem, Result, REQUEST_TIMEOUT,
};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

const MOCK_BIN: &str = env!("CARGO_BIN_EXE_switchyard-mock");
const CHAT: &str = r#"{"model":"gpt-4","messages":[{"role":"user","content":"hello"}],"max_tokens":16}"#;
const CHAT_STREAM: &str =
    r#"{"model":"gpt-4","messages":[{"role":"user","content":"hello"}],"max_tokens":16,"stream":true}"#;
const TASK_RUN: &str = r#"{"task_input":{"text":"The meeting moved to Tuesday. Bring the slides.","sentences":1}}"#;
/// Cut short: not JSON, refused with 400.
const BAD_BODY: &str = r#"{"model":"gpt-4","messages":"#;
/// Where the run stops to read memory (the ones under the total, then the total).
const STOPS: [u64; 5] = [10_000, 100_000, 300_000, 600_000, 1_000_000];
const WARM_UP: u64 = 10_000;
const LEAK_TOLERANCE: f64 = 0.25;
/// Time for the gateway's memory to settle before it is read.
const SETTLE: Duration = Duration::from_secs(1);
/// How long the mock holds each idle stream after its first delta.
const HOLD: Duration = Duration::from_secs(25);
const RUN_LIMIT: Duration = Duration::from_secs(60 * 60);
/// The run stops at this many unexpected answers.
const MAX_ERRORS: u64 = 1000;

/// One kind of request of the mix, and the answer expected.
struct Kind {
    name: &'static str,
    weight: usize,
    request: Arc<[u8]>,
    status: u16,
    /// A stream, read to `data: [DONE]`.
    stream: bool,
}

fn mix(addr: SocketAddr, key: &str) -> Vec<Kind> {
    let post = |path: &str, body: &str| request_bytes(path, addr, key, body);
    let get = |path: &str| -> Arc<[u8]> {
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\r\n").into_bytes().into()
    };
    let kind = |name, weight, request, status, stream| Kind { name, weight, request, status, stream };
    let task_run = post("/api/v1/tasks/summarize/run", TASK_RUN);
    vec![
        kind("whole chat, `POST /v1/chat/completions`", 4, post("/v1/chat/completions", CHAT), 200, false),
        kind("streamed chat, the same", 2, post("/v1/chat/completions", CHAT_STREAM), 200, true),
        kind("whole chat task, `POST /api/v1/task`", 1, post("/api/v1/task", CHAT), 200, false),
        kind("streamed chat task, the same", 1, post("/api/v1/task", CHAT_STREAM), 200, true),
        kind("task run, `POST /api/v1/tasks/summarize/run`", 1, task_run, 200, false),
        kind("`GET /v1/models`", 1, get("/v1/models"), 200, false),
        kind("body not JSON, 400", 1, post("/v1/chat/completions", BAD_BODY), 400, false),
        kind("unknown route, 404", 1, get("/v1/no-such-route"), 404, false),
    ]
}

type Errors = (u64, Option<String>);

/// The load, shared by its connections.
#[derive(Clone)]
struct Load {
    addr: SocketAddr,
    kinds: Arc<Vec<Kind>>,
    /// Kind indices, each as often as its weight: request `i` is of kind `cycle[i % len]`.
    cycle: Arc<Vec<usize>>,
    /// The number of the next request.
    next: Arc<AtomicU64>,
    /// Unexpected answers by kind: how many, and the first.
    errors: Arc<Mutex<Vec<Errors>>>,
    error_count: Arc<AtomicU64>,
    reconnects: Arc<AtomicU64>,
}

impl Load {
    fn error(&self, kind: usize, e: String) {
        self.error_count.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        errors[kind].0 += 1;
        errors[kind].1.get_or_insert(e);
    }

    fn errors(&self) -> Vec<Errors> {
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One connection sending the next request of the mix as soon as the last is answered, until `stop` are taken.
async fn worker(load: Load, stop: u64) {
    let mut conn: Option<Conn> = None;
    while load.error_count.load(Ordering::Relaxed) < MAX_ERRORS {
        let i = load.next.fetch_add(1, Ordering::Relaxed);
        if i >= stop {
            break;
        }
        let k = load.cycle[usize::try_from(i).unwrap_or(0) % load.cycle.len()];
        let kind = &load.kinds[k];
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(load.addr).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    load.error(k, format!("connect: {e}"));
                    continue;
                }
            },
        };
        let keep = match c.timed_exchange(&kind.request, kind.stream, false).await {
            Ok(r) => {
                let ended = !kind.stream || r.body.trim_ascii_end().ends_with(b"data: [DONE]");
                if r.status != kind.status || !ended {
                    let what = if ended { "" } else { ", no [DONE]" };
                    load.error(k, format!("status {} (expected {}){what}", r.status, kind.status));
                }
                !r.close
            }
            Err(e) => {
                load.error(k, e.to_string());
                false
            }
        };
        if !keep {
            conn = None;
            load.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs the mix on `conns` fresh connections until `stop` requests have been sent in all (counting on from where
/// the last call stopped); progress on stderr every 10 s.
async fn run_to(load: &Load, conns: usize, stop: u64, pid: u32) -> Result<()> {
    let mut set = JoinSet::new();
    for _ in 0..conns {
        set.spawn(worker(load.clone(), stop));
    }
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    let (mut last_n, mut last_t) = (load.next.load(Ordering::Relaxed), Instant::now());
    loop {
        tokio::select! {
            joined = set.join_next() => match joined {
                Some(joined) => joined?,
                None => break,
            },
            _ = tick.tick() => {
                let n = load.next.load(Ordering::Relaxed).min(stop);
                let rate = (n - last_n) as f64 / last_t.elapsed().as_secs_f64();
                let rss = status_kib(pid, "VmRSS").map_or_else(|_| "?".to_owned(), mib);
                let errors = load.error_count.load(Ordering::Relaxed);
                eprintln!("bench:   {n} requests, {rate:.0} req/s, VmRSS {rss} MiB, {errors} unexpected answers");
                (last_n, last_t) = (n, Instant::now());
            }
        }
    }
    load.next.store(stop, Ordering::Relaxed);
    if load.error_count.load(Ordering::Relaxed) >= MAX_ERRORS {
        let errors = load.errors();
        let first = errors.iter().zip(load.kinds.iter()).find_map(|((_, e), k)| Some((k.name, e.clone()?)));
        return Err(format!("{MAX_ERRORS} unexpected answers; first: {first:?}").into());
    }
    Ok(())
}

/// Table cells: VmRSS, RssAnon, VmHWM (MiB), threads, open files.
fn cells(m: &Mem) -> String {
    format!("{} | {} | {} | {} | {}", mib(m.rss), mib(m.anon), mib(m.hwm), m.threads, m.fds)
}

const MEM_HEAD: &str = "VmRSS (MiB) | RssAnon (MiB) | VmHWM, peak (MiB) | threads | open files";

/// A relative growth, from `a` to `b`.
fn growth(a: u64, b: u64) -> f64 {
    b as f64 / a.max(1) as f64 - 1.0
}

/// The gateway's `switchyard_streams_in_flight`.
async fn streams_in_flight(gw: SocketAddr) -> Result<i64> {
    let body = fetch(gw, format!("GET /metrics HTTP/1.1\r\nHost: {gw}\r\n\r\n").as_bytes()).await?;
    let text = String::from_utf8_lossy(&body);
    let line = text.lines().find_map(|l| l.strip_prefix("switchyard_streams_in_flight "));
    Ok(line.and_then(|v| v.trim().parse().ok()).ok_or("no switchyard_streams_in_flight in /metrics")?)
}

async fn mock_fault(mock: SocketAddr, fault: &str) -> Result<()> {
    fetch(mock, &request_bytes("/__mock/fault", mock, "x", fault)).await.map(drop)
}

/// The processes measured: the gateway (address, key, pid) and its mock upstream.
struct Target {
    gw: SocketAddr,
    key: String,
    pid: u32,
    mock: SocketAddr,
}

/// The gateway's memory, its streams in flight and the mock's open connections (from the gateway), at one time.
struct Snap {
    label: String,
    mem: Mem,
    in_flight: i64,
    mock_conns: u64,
}

async fn snap(label: String, t: &Target) -> Result<Snap> {
    let body = fetch(t.mock, format!("GET /__mock/stats HTTP/1.1\r\nHost: {}\r\n\r\n", t.mock).as_bytes()).await?;
    let stats: serde_json::Value = serde_json::from_slice(&body)?;
    let mock_conns = stats.get("open_connections").and_then(serde_json::Value::as_u64).ok_or("no open_connections")?;
    // Less the one asking.
    let mock_conns = mock_conns.saturating_sub(1);
    Ok(Snap { label, mem: Mem::read(t.pid)?, in_flight: streams_in_flight(t.gw).await?, mock_conns })
}

/// One round: opens `n` streams whose upstream holds after its first delta, waits for every response head, reads
/// the gateway, closes them and reads it again once the gateway has let go of them (`in_flight` streams left) and
/// 3 s more. Answers the two readings.
async fn idle_round(t: &Target, n: usize, in_flight: i64) -> Result<[Snap; 2]> {
    let (gw, mock) = (t.gw, t.mock);
    let hold = HOLD.as_millis();
    mock_fault(mock, &format!(r#"{{"fault":"stall_after","after_tokens":1,"ms":{hold},"times":{n}}}"#)).await?;
    let request = request_bytes("/v1/chat/completions", gw, &t.key, CHAT_STREAM);
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..n {
        let request = request.clone();
        set.spawn(tokio::time::timeout(REQUEST_TIMEOUT, async move {
            let mut conn = Conn::open(gw).await?;
            conn.stream.write_all(&request).await?;
            let end = conn.until(b"\r\n\r\n").await?;
            let head = String::from_utf8_lossy(&conn.buf[..end]).into_owned();
            match head.split(' ').nth(1) {
                Some("200") => Ok(conn),
                _ => Err(invalid(&format!("stream refused: {}", head.lines().next().unwrap_or("")))),
            }
        }));
    }
    let mut conns = Vec::with_capacity(n);
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        match joined? {
            Ok(Ok(conn)) => conns.push(conn),
            Ok(Err(e)) => first_error = first_error.or(Some(e.to_string())),
            Err(_) => first_error = first_error.or(Some("no response head within 10 s".to_owned())),
        }
    }
    let opened_in = started.elapsed().as_secs_f64();
    if let Some(e) = first_error {
        let opened = conns.len();
        drop(conns);
        let _ = mock_fault(mock, r#"{"fault":"none"}"#).await;
        return Err(format!("idle streams: {opened} of {n} opened; first error: {e}").into());
    }
    tokio::time::sleep(SETTLE).await;
    let open = snap(format!("{n} open (all heads in {opened_in:.1} s)"), t).await?;
    drop(conns);
    let closed_at = Instant::now();
    let bound = HOLD + Duration::from_secs(15);
    let let_go = loop {
        if streams_in_flight(gw).await? <= in_flight {
            break Some(closed_at.elapsed().as_secs_f64());
        }
        if closed_at.elapsed() > bound {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let label = match let_go {
        Some(s) => format!("closed (the gateway let go in {s:.1} s), 3 s later"),
        None => format!("closed, **not let go** within {} s", bound.as_secs()),
    };
    let closed = snap(label, t).await?;
    mock_fault(mock, r#"{"fault":"none"}"#).await?;
    Ok([open, closed])
}

/// Runs the load, then the idle streams; answers the markdown and whether the run passed.
async fn bench(t: &Target, quick: bool) -> Result<(String, bool)> {
    let (gw, pid) = (t.gw, t.pid);
    let total: u64 = env_or("BENCH_MEMORY_REQUESTS", if quick { 50_000 } else { 1_000_000 }).max(1);
    let conns = env_or("BENCH_MEMORY_CONNS", 32usize).clamp(1, 1024);
    let streams = env_or("BENCH_MEMORY_STREAMS", if quick { 200 } else { 1000 }).min(5000);
    let only = std::env::var("BENCH_MEMORY_KINDS").unwrap_or_default();
    let keep = |i: &usize| only.trim().is_empty() || only.split(',').any(|k| k.trim().parse() == Ok(*i));
    let kinds: Vec<Kind> = mix(gw, &t.key).into_iter().enumerate().filter(|(i, _)| keep(i)).map(|(_, k)| k).collect();
    let cycle = kinds.iter().enumerate().flat_map(|(k, kind)| std::iter::repeat_n(k, kind.weight)).collect();
    let load = Load {
        addr: gw,
        errors: Arc::new(Mutex::new(vec![(0, None); kinds.len()])),
        kinds: Arc::new(kinds),
        cycle: Arc::new(cycle),
        next: Arc::new(AtomicU64::new(0)),
        error_count: Arc::new(AtomicU64::new(0)),
        reconnects: Arc::new(AtomicU64::new(0)),
    };
    let mut o = String::new();
    let _ = writeln!(o, "| requests | {MEM_HEAD} | load time (s) | req/s | unexpected answers |");
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|");
    tokio::time::sleep(SETTLE).await;
    let first = Mem::read(pid)?;
    let _ = writeln!(o, "| 0 | {} | 0 | – | 0 |", cells(&first));
    let mut stops: Vec<u64> = STOPS.iter().copied().filter(|s| *s < total).collect();
    stops.push(total);
    // (requests, VmRSS, RssAnon) at each stop.
    let mut curve = vec![(0, first.rss, first.anon)];
    let (start, mut loaded) = (Instant::now(), Duration::ZERO);
    for stop in stops {
        eprintln!("bench: the mix up to {stop} requests");
        let (segment, from) = (Instant::now(), load.next.load(Ordering::Relaxed));
        run_to(&load, conns, stop, pid).await?;
        let took = segment.elapsed();
        loaded += took;
        tokio::time::sleep(SETTLE).await;
        let m = Mem::read(pid)?;
        let rate = (stop - from) as f64 / took.as_secs_f64();
        let (secs, errors) = (loaded.as_secs_f64(), load.error_count.load(Ordering::Relaxed));
        let _ = writeln!(o, "| {stop} | {} | {secs:.0} | {rate:.0} | {errors} |", cells(&m));
        curve.push((stop, m.rss, m.anon));
    }
    let load_time = start.elapsed().as_secs_f64();
    let errors = load.error_count.load(Ordering::Relaxed);
    let mut passed = errors == 0;
    // Growth from the first stop at or past a tenth of the run (and past the warm-up) to the end.
    let (end, end_rss, end_anon) = curve.last().copied().unwrap_or_default();
    match curve.iter().find(|c| c.0 >= WARM_UP.max(total / 10)).filter(|c| c.0 < end) {
        Some(&(from, rss, anon)) => {
            let leak = growth(rss, end_rss) > LEAK_TOLERANCE;
            passed &= !leak;
            let _ = writeln!(
                o,
                "\nFrom {from} to {end} requests: VmRSS {:+.1}%, RssAnon {:+.1}% (tolerance {:.0}%): {}",
                growth(rss, end_rss) * 100.0,
                growth(anon, end_anon) * 100.0,
                LEAK_TOLERANCE * 100.0,
                if leak { "**LEAK?**" } else { "no growth beyond the tolerance" }
            );
        }
        None => drop(writeln!(o, "\nToo few requests ({total}) to compare after the {WARM_UP}-request warm-up.")),
    }
    for ((n, first), kind) in load.errors().iter().zip(load.kinds.iter()).filter(|((n, _), _)| *n > 0) {
        let _ = writeln!(o, "- unexpected: {n} × {}, the first: {}", kind.name, first.as_deref().unwrap_or(""));
    }
    let per_cycle: usize = load.kinds.iter().map(|k| k.weight).sum();
    let shares: Vec<String> = load.kinds.iter().map(|k| format!("{} × {}", k.weight, k.name)).collect();
    let _ = writeln!(
        o,
        "\nThe mix, over {conns} keep-alive connections, in this order, repeated every {per_cycle} requests: {}. \
         Chat is `gpt-4` routed to the mock (12-word answers at once, whole or streamed). Memory read from \
         /proc/<pid>/status {} s after the load stopped. Connections reopened after an error or a `connection: \
         close`: {}. {load_time:.0} s in all.",
        shares.join(", "),
        SETTLE.as_secs(),
        load.reconnects.load(Ordering::Relaxed),
    );

    if streams == 0 {
        return Ok((o, passed));
    }
    eprintln!("bench: {streams} idle streams, twice");
    tokio::time::sleep(SETTLE).await;
    let before = snap("before".to_owned(), t).await?;
    let [open, closed] = idle_round(t, streams, before.in_flight).await?;
    let [open2, closed2] = idle_round(t, streams, before.in_flight).await?;
    let _ = writeln!(
        o,
        "\n{streams} idle streams, twice (streamed `gpt-4` chat; the mock sends the first delta, then holds {} s):\n",
        HOLD.as_secs()
    );
    let _ = writeln!(o, "| streams | {MEM_HEAD} | streams in flight | gateway's connections to the mock |");
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|");
    for s in [&before, &open, &closed, &open2, &closed2] {
        let _ = writeln!(o, "| {} | {} | {} | {} |", s.label, cells(&s.mem), s.in_flight, s.mock_conns);
    }
    // What the first round frees is reused by the second; streams never let go would add a round's worth.
    let reused = closed2.mem.rss <= open.mem.rss;
    let let_go = [&closed, &closed2].iter().all(|c| c.in_flight <= before.in_flight);
    passed &= let_go && reused;
    let _ = writeln!(
        o,
        "\nPer open stream: {:.0} KiB of VmRSS. After the second round closed: {} MiB, against {} MiB with the \
         first round open and {} MiB after it closed: {}",
        open.mem.rss.saturating_sub(before.mem.rss) as f64 / streams as f64,
        mib(closed2.mem.rss),
        mib(open.mem.rss),
        mib(closed.mem.rss),
        if !reused || !let_go { "**LEAK?**" } else { "ok (what the first round freed was reused)" }
    );
    Ok((o, passed))
}

/// Starts the children, runs the bench, and (through `Children`'s drop) always stops them.
fn run(dir: &Path) -> Result<(String, bool)> {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut vars: Vec<String> =
        std::env::vars().filter(|(k, _)| k.starts_with("BENCH_")).map(|(k, v)| format!("{k}={v} ")).collect();
    vars.sort();
    let command = format!("{}cargo bench --bench memory", vars.concat());
    let load_start = loadavg();
    let mut children = Children::default();
    let mut mock = std::process::Command::new(MOCK_BIN);
    mock.args(["--listen", "127.0.0.1:0"]);
    let mock_out = spawn(&mut children, mock, &dir.join("mock.log"))?;
    let mock_addr = parse_url(&wait_for(&mock_out, "listening on ", "switchyard-mock")?)?;
    let mock_pid = children.0.first().map(Child::id);
    let env = [("SWITCHYARD__EMBEDDINGS__CACHE_DIR", "")];
    let (gw, key, pid) =
        start_gateway_with(&mut children, &dir.join("data"), mock_addr, None, &env, &dir.join("gateway.log"))?;
    let pid = pid.ok_or("no gateway pid")?;
    eprintln!("bench: mock on {mock_addr}, gateway on {gw} (pid {pid}){}", if quick { "; quick run" } else { "" });
    let target = Target { gw, key, pid, mock: mock_addr };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = runtime.block_on(async {
        tokio::select! {
            result = bench(&target, quick) => result,
            signal = interrupted() => Err(format!("interrupted by {signal}").into()),
            _ = tokio::time::sleep(RUN_LIMIT) => Err(format!("still running after {RUN_LIMIT:?}").into()),
        }
    });
    drop(runtime);
    let (mut o, passed) = result?;
    let mock_rss = mock_pid.and_then(|p| status_kib(p, "VmRSS").ok()).map_or("?".to_owned(), mib);
    let _ = writeln!(
        o,
        "\nMachine: nproc {}, no pinning; load average {load_start} at start, {} at end; gateway built from {}, \
         default settings but for the bootstrap workspace's limits and credits (raised) and embeddings (off). \
         The data directory at the end: {} MiB. The mock's VmRSS at the end: {mock_rss} MiB (it keeps every \
         request body).\nCommand: `{command}`",
        online_cpus(),
        loadavg(),
        revision(),
        mib(dir_kib(&dir.join("data")))
    );
    drop(children);
    Ok((o, passed))
}

/// The size of the files under `dir`, in KiB.
fn dir_kib(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let size = |e: std::fs::DirEntry| match e.metadata() {
        Ok(m) if m.is_dir() => dir_kib(&e.path()),
        Ok(m) => m.len() / 1024,
        Err(_) => 0,
    };
    entries.flatten().map(size).sum()
}

fn main() -> ExitCode {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("bench: cannot create a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = run(dir.path());
    if let Err(e) = &result {
        eprintln!("bench: failed: {e}");
        for log in ["mock.log", "gateway.log"].map(|log| tail(&dir.path().join(log), 20)) {
            eprintln!("--- the log's last lines ---\n{log}");
        }
    }
    drop(dir);
    let Ok((table, passed)) = result else { return ExitCode::FAILURE };
    println!("{table}");
    if passed {
        return ExitCode::SUCCESS;
    }
    eprintln!("bench: LEAK? or unexpected answers: see above");
    ExitCode::FAILURE
}
