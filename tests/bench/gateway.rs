//! Switchyard gateway benchmark: the latency the gateway adds over calling the upstream directly, and its speed as
//! a ratio to a bare actix-web + reqwest hop measured in the same run against the same mock.
//!
//! `cargo bench --bench gateway` (or `make bench`; about 3 minutes) or `BENCH_QUICK=1 cargo bench --bench gateway`
//! (about 30 s). Prints markdown tables on stdout (the figures, then the ratios to the bare hop), progress and
//! finer percentiles on stderr.
//!
//! Starts `switchyard-mock`, `switchyard-floor` (the bare hop, tests/bench/floor.rs: forwards the body to the
//! mock's `/v1/chat/completions` and returns the answer, as many workers as the gateway) and `switchyard serve`
//! (fresh data directory) as child processes on 127.0.0.1, and drives the mock (`POST /v1/chat/completions`), the
//! bare hop (the same) and the gateway (`POST /api/v1/task`, and `POST /v1/chat/completions` in phases 1 and 5)
//! through the same hand-written HTTP/1.1 client:
//! 1. one keep-alive connection, sequential non-streaming requests (the targets alternating in blocks);
//! 2. open loop at fixed rates over a pool of keep-alive connections, latency taken from the intended send time
//!    (no coordinated omission);
//! 3. the highest rate held with p99 under 5 ms (bounded doubling/bisection search);
//! 4. streaming: time from sending to the first non-empty content delta, one connection (mock and gateway);
//! 5. throughput: 64 connections sending back to back (closed loop, as `oha -c 64`), completed requests per second;
//! 6. throughput by `server.workers` (`BENCH_SCALING=0` skips it);
//! 7. a thousand paced streams open at once, straight to a pacing mock and through a gateway (tests/bench/paced.rs;
//!    `BENCH_PACED=0` skips it).
//!
//! The ratios the gateway is judged by: added latency at one connection, p50 and p99 (gateway − direct) ÷ (bare
//! hop − direct), aim ≤ 1.3×; highest throughput, gateway ÷ bare hop, aim ≥ 0.8×. Reported, not asserted.
//!
//! Placement (`BENCH_PIN`): `split` (default when `taskset` exists): load generator and mock on CPU 0, bare hop and
//! gateway on CPU 1; the one-connection test is also run with the bare hop and the gateway moved to CPU 0, which
//! shows what cross-CPU wake-ups cost on this VM. `one`: everything on CPU 0. `none`: no pinning.
//! Other knobs: `BENCH_QUICK=1`, `BENCH_SEQ_REQUESTS`, `BENCH_STREAM_REQUESTS`, `BENCH_RATES` (e.g.
//! `1000,2000,4000,8000`), `BENCH_RATE_SECS`, `BENCH_CONNS`, `BENCH_SEARCH_PROBES`, `BENCH_SEARCH_SECS`,
//! `BENCH_THROUGHPUT_CONNS`, `BENCH_THROUGHPUT_SECS`, `BENCH_THROUGHPUT_ROUNDS`, `BENCH_FLOOR_WORKERS` (default:
//! the gateway's `server.workers`), `BENCH_TOKEN_INTERVAL_US`.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

#[path = "support.rs"]
mod support;

#[path = "paced.rs"]
mod paced;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{
    child_command, cpu_ticks, env_or, has_content, interrupted, loadavg, online_cpus, parse_url, repin, request_bytes,
    revision, rss_kib, spawn, start_gateway, tail, ticks_per_second, wait_for, Children, Conn, Result, REQUEST_TIMEOUT,
};
use tokio::sync::mpsc;

const MOCK_BIN: &str = env!("CARGO_BIN_EXE_switchyard-mock");
const FLOOR_BIN: &str = env!("CARGO_BIN_EXE_switchyard-floor");
const BODY: &str = r#"{"model":"gpt-4","messages":[{"role":"user","content":"hello"}],"max_tokens":16}"#;
const STREAM_BODY: &str =
    r#"{"model":"gpt-4","messages":[{"role":"user","content":"hello"}],"max_tokens":16,"stream":true}"#;
const P99_LIMIT: Duration = Duration::from_millis(5);
/// No run may take longer (no response may take longer than `REQUEST_TIMEOUT`).
const RUN_LIMIT: Duration = Duration::from_secs(15 * 60);
/// Requests per block in the one-connection phases; blocks alternate between the targets (`block_order`), so slow
/// drifts of the machine (the other tenant compiling) hit all alike. Blocks stay well under a second, so the idle
/// connections of the other targets never reach the gateway's keep-alive timeout (5 s).
const BLOCK: usize = 250;
const STREAM_BLOCK: usize = 25;

// ---------------------------------------------------------------------------------------------------------------
// Settings

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pin {
    Split,
    One,
    None,
}

struct Settings {
    quick: bool,
    seq_warmup: usize,
    seq_requests: usize,
    stream_warmup: usize,
    stream_requests: usize,
    token_interval_us: u64,
    rates: Vec<u64>,
    rate_secs: f64,
    conns: usize,
    search_probes: usize,
    search_secs: f64,
    throughput_conns: usize,
    throughput_secs: f64,
    throughput_rounds: usize,
    pin: Pin,
}

impl Settings {
    fn from_env(has_taskset: bool) -> Settings {
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let default_rates = if quick { "1000,4000" } else { "1000,2000,4000,8000" };
        let rates: Vec<u64> = std::env::var("BENCH_RATES")
            .unwrap_or_else(|_| default_rates.to_owned())
            .split(',')
            .filter_map(|r| r.trim().parse().ok())
            .filter(|r| *r > 0)
            .collect();
        let pin = match std::env::var("BENCH_PIN").unwrap_or_default().as_str() {
            _ if !has_taskset => Pin::None,
            "none" | "0" => Pin::None,
            "one" => Pin::One,
            _ => Pin::Split,
        };
        fn pick<T>(quick: bool, quick_value: T, full_value: T) -> T {
            if quick {
                quick_value
            } else {
                full_value
            }
        }
        let q = |a, b| pick(quick, a, b);
        let qf = |a, b| pick(quick, a, b);
        Settings {
            quick,
            seq_warmup: q(300, 1000),
            seq_requests: env_or("BENCH_SEQ_REQUESTS", q(1000, 5000)),
            stream_warmup: q(20, 50),
            stream_requests: env_or("BENCH_STREAM_REQUESTS", q(100, 1000)),
            token_interval_us: env_or("BENCH_TOKEN_INTERVAL_US", 1),
            rates,
            rate_secs: env_or("BENCH_RATE_SECS", qf(1.0, 4.0)),
            conns: env_or("BENCH_CONNS", 32usize).clamp(1, 1024),
            search_probes: env_or("BENCH_SEARCH_PROBES", q(3, 7)),
            search_secs: env_or("BENCH_SEARCH_SECS", qf(1.0, 3.0)),
            throughput_conns: env_or("BENCH_THROUGHPUT_CONNS", 64usize).clamp(1, 1024),
            throughput_secs: env_or("BENCH_THROUGHPUT_SECS", qf(0.5, 3.0)).max(0.1),
            throughput_rounds: env_or("BENCH_THROUGHPUT_ROUNDS", q(1, 2)).clamp(1, 10),
            pin,
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Child processes

/// The gateway's HTTP workers in this run: `SWITCHYARD__SERVER__WORKERS` if set, else the compiled-in default;
/// 0 means one per CPU.
fn gateway_workers(cpus: usize) -> usize {
    let configured = std::env::var("SWITCHYARD__SERVER__WORKERS").ok().and_then(|v| v.trim().parse::<usize>().ok());
    let default = || {
        let config: toml::Value = toml::from_str(switchyard::config::DEFAULT_TOML).ok()?;
        usize::try_from(config.get("server")?.get("workers")?.as_integer()?).ok()
    };
    match configured.or_else(default).unwrap_or(1) {
        0 => cpus.max(1),
        n => n,
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Targets (the lean HTTP/1.1 client, the same for every target, is in support.rs)

/// Indices into the targets (`run` builds them in this order).
const DIRECT: usize = 0;
const FLOOR: usize = 1;
const GATEWAY: usize = 2;
/// The gateway again, through its OpenAI face (`/v1/chat/completions`): phases 1 and 5 only.
const GATEWAY_CHAT: usize = 3;

/// One target: where it listens and the exact request bytes sent to it.
#[derive(Clone)]
struct Target {
    name: &'static str,
    addr: SocketAddr,
    plain: Arc<[u8]>,
    /// The streaming request, for the targets measured streaming (the bare hop does not stream).
    stream: Option<Arc<[u8]>>,
    /// The serving process, whose CPU time the throughput phase reads.
    pid: Option<u32>,
}

// ---------------------------------------------------------------------------------------------------------------
// Statistics

/// Nearest-rank percentile of sorted nanoseconds, in µs.
fn pct_us(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some((sorted[rank - 1] + 500) / 1000)
}

#[derive(Default)]
struct Samples {
    /// Nanoseconds, sorted once finished.
    lat: Vec<u64>,
    overhead_us: Vec<u64>,
    /// Open loop: how late each request left against its due time (ns, 0 when early), sorted once finished.
    late: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Samples {
    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    fn finish(&mut self) {
        self.lat.sort_unstable();
        self.overhead_us.sort_unstable();
        self.late.sort_unstable();
    }

    fn p(&self, q: f64) -> Option<u64> {
        pct_us(&self.lat, q)
    }
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------------------------------
// Phase 1 and 4: one connection, sequential

/// The order of the targets in block (or round) `b`: a rotation, then its mirror image. Two targets go AB BA BA
/// AB, three through all six orders; every target takes every place equally often, so drifts hit all alike.
fn block_order(b: usize, n: usize) -> Vec<usize> {
    let rotation = (b / 2) % n.max(1);
    let mut order: Vec<usize> = (0..n).map(|k| (k + rotation) % n).collect();
    if b % 2 == 1 {
        order.reverse();
    }
    order
}

/// One connection per target; `total` measured requests each after `warmup`, in blocks in `block_order`.
async fn sequential(
    targets: &[&Target],
    warmup: usize,
    total: usize,
    stream: bool,
    budget: Duration,
) -> Result<Vec<Samples>> {
    let mut conns = Vec::with_capacity(targets.len());
    for t in targets {
        conns.push(Conn::open(t.addr).await?);
    }
    let mut out: Vec<Samples> = targets.iter().map(|_| Samples::default()).collect();
    let deadline = Instant::now() + budget;
    for (i, t) in targets.iter().enumerate() {
        for _ in 0..warmup {
            one(t, &mut conns[i], stream, &mut Samples::default()).await?;
        }
    }
    let block = if stream { STREAM_BLOCK } else { BLOCK };
    let blocks = total.div_ceil(block);
    for b in 0..blocks {
        for i in block_order(b, targets.len()) {
            let n = block.min(total - b * block);
            for _ in 0..n {
                one(targets[i], &mut conns[i], stream, &mut out[i]).await?;
            }
        }
        if Instant::now() > deadline {
            eprintln!(
                "bench: one-connection phase stopped at its time budget after {} requests per target",
                out[0].lat.len()
            );
            break;
        }
    }
    for s in &mut out {
        s.finish();
    }
    Ok(out)
}

/// One timed request on `conn` (reopened after an error or `connection: close`).
async fn one(target: &Target, conn: &mut Conn, stream: bool, out: &mut Samples) -> Result<()> {
    let request = if stream {
        target.stream.as_ref().ok_or_else(|| format!("{}: not measured streaming", target.name))?
    } else {
        &target.plain
    };
    let start = Instant::now();
    let result = conn.timed_exchange(request, false, stream).await;
    let done = Instant::now();
    match result {
        Ok(reply) if reply.status == 200 => {
            let end = if stream { reply.first_content } else { Some(done) };
            match end {
                Some(end) => out.lat.push(ns(end - start)),
                None => out.error(format!("{}: stream without a content delta", target.name)),
            }
            out.overhead_us.extend(reply.overhead_us);
            if reply.close {
                *conn = Conn::open(target.addr).await?;
            }
        }
        Ok(reply) => {
            out.error(format!("{}: status {}", target.name, reply.status));
            if reply.close {
                *conn = Conn::open(target.addr).await?;
            }
        }
        Err(e) => {
            out.error(format!("{}: {e}", target.name));
            *conn = Conn::open(target.addr).await?;
        }
    }
    if out.errors > 100 {
        return Err(format!("too many errors; first: {}", out.first_error.clone().unwrap_or_default()).into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Phase 2 and 3: open loop at a fixed rate

struct RateRun {
    rate: u64,
    samples: Samples,
    /// Requests never sent before the hard deadline (counted in the percentiles at their lateness).
    unsent: u64,
}

impl RateRun {
    fn passed(&self) -> bool {
        self.samples.errors == 0
            && self.unsent == 0
            && self.samples.p(0.99).is_some_and(|p| u128::from(p) < P99_LIMIT.as_micros())
    }
}

/// Latency and send lateness (ns), or an error.
type Outcome = Option<std::result::Result<(u64, u64), String>>;
/// A connection given back to the dispatcher (None: lost) with the outcome of its last request.
type Back = (Option<Conn>, Outcome);

fn record(outcome: Outcome, s: &mut Samples) {
    match outcome {
        Some(Ok((lat, late))) => {
            s.lat.push(lat);
            s.late.push(late);
        }
        Some(Err(e)) => s.error(e),
        None => {}
    }
}

/// Open loop: `rate` req/s for `secs` over `size` keep-alive connections, opened afresh for each run (an idle
/// connection would meet the gateway's keep-alive timeout between runs). A request waits for a free connection
/// if all are busy; its latency runs from its due time all the same.
async fn open_loop(target: &Target, size: usize, rate: u64, secs: f64) -> Result<RateRun> {
    let mut pool = Vec::with_capacity(size);
    for _ in 0..size {
        pool.push(Conn::open(target.addr).await?);
    }
    pause(20).await;
    let n = ((rate as f64 * secs).round() as u64).max(1);
    let period = 1e9 / rate as f64;
    let start = Instant::now() + Duration::from_millis(2);
    let due_of = |i: u64| start + Duration::from_nanos((i as f64 * period) as u64);
    let hard_deadline = start + Duration::from_secs_f64(secs) + Duration::from_secs_f64((secs * 0.5).max(1.0));
    let (back_tx, mut back_rx) = mpsc::unbounded_channel::<Back>();
    for conn in pool.drain(..) {
        let _ = back_tx.send((Some(conn), None));
    }
    let mut samples = Samples::default();
    let mut sent = 0u64;
    let mut out_there = size;
    'dispatch: for i in 0..n {
        let due = due_of(i);
        // Wait for the due time without sleeping: tokio's timer has 1 ms resolution, and a sleeping thread
        // wakes ~100 µs late on this VM. Each turn lets the runtime handle responses (`yield_now` polls the I/O
        // driver) and lets the kernel run the mock, which may share this CPU (`sched_yield`).
        while Instant::now() < due {
            std::thread::yield_now();
            tokio::task::yield_now().await;
        }
        if Instant::now() > hard_deadline {
            break;
        }
        let conn = loop {
            if out_there == 0 {
                break 'dispatch;
            }
            let back = match back_rx.try_recv() {
                Ok(back) => Some(back),
                Err(_) => tokio::time::timeout_at(hard_deadline.into(), back_rx.recv()).await.ok().flatten(),
            };
            let Some((conn, outcome)) = back else {
                break 'dispatch;
            };
            record(outcome, &mut samples);
            match conn {
                Some(conn) => break conn,
                None => out_there -= 1,
            }
        };
        sent += 1;
        let tx = back_tx.clone();
        let request = target.plain.clone();
        let (addr, name) = (target.addr, target.name);
        tokio::spawn(async move {
            let mut conn = conn;
            let sent_at = Instant::now();
            let from = due.min(sent_at);
            let result = conn.timed_exchange(&request, false, false).await;
            let done = Instant::now();
            let (outcome, keep) = match result {
                Ok(r) if r.status == 200 => {
                    (Ok((ns(done - from), ns(sent_at.saturating_duration_since(due)))), !r.close)
                }
                Ok(r) => (Err(format!("{name}: status {}", r.status)), !r.close),
                Err(e) => (Err(format!("{name}: {e}")), false),
            };
            let conn = if keep { Some(conn) } else { Conn::open(addr).await.ok() };
            let _ = tx.send((conn, Some(outcome)));
        });
    }
    // Whatever was not sent by the deadline counts at its lateness so far.
    let end = Instant::now();
    let unsent = n.saturating_sub(sent);
    for i in sent..n {
        samples.lat.push(ns(end.saturating_duration_since(due_of(i))));
    }
    // Take the connections back (bounded wait for stragglers).
    let collect_deadline = Instant::now() + Duration::from_secs(10);
    let mut back = 0;
    while back < out_there {
        match tokio::time::timeout_at(collect_deadline.into(), back_rx.recv()).await {
            Ok(Some((conn, outcome))) => {
                record(outcome, &mut samples);
                back += 1;
                drop(conn);
            }
            _ => break,
        }
    }
    samples.finish();
    Ok(RateRun { rate, samples, unsent })
}

async fn pause(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// The highest rate passing (p99 < 5 ms, no errors), starting from the fixed-rate results: doubling until a
/// failure, then bisecting to within 5%, at most `probes` runs. Answers (rate, whether a failure was ever seen).
async fn search(target: &Target, conns: usize, fixed: &[RateRun], probes: usize, secs: f64) -> Result<(u64, bool)> {
    let mut sorted: Vec<(u64, bool)> = fixed.iter().map(|r| (r.rate, r.passed())).collect();
    sorted.sort_unstable();
    let mut lo = 0;
    let mut hi: Option<u64> = None;
    for (rate, ok) in sorted {
        if ok && hi.is_none() {
            lo = rate;
        } else if !ok && hi.is_none() {
            hi = Some(rate);
        }
    }
    for _ in 0..probes {
        let rate = match hi {
            None => (lo * 2).max(1000),
            Some(h) if h as f64 <= lo as f64 * 1.05 + 50.0 => break,
            Some(h) => ((lo + h) / 2).div_ceil(50) * 50,
        };
        pause(300).await;
        let run = open_loop(target, conns, rate, secs).await?;
        eprintln!(
            "bench:   {} probe {rate}: p50 {} p99 {} µs{} → {}",
            target.name,
            fmt_us(run.samples.p(0.5)),
            fmt_us(run.samples.p(0.99)),
            err_note(&run.samples, run.unsent),
            if run.passed() { "pass" } else { "fail" }
        );
        if run.passed() {
            lo = rate;
        } else {
            hi = Some(rate);
        }
    }
    Ok((lo, hi.is_some()))
}

// ---------------------------------------------------------------------------------------------------------------
// Phase 5: throughput, closed loop

struct Throughput {
    /// Completed requests (status 200) per second.
    rate: f64,
    samples: Samples,
    /// CPU time the serving process spent per completed request, in µs.
    cpu_us: Option<f64>,
}

/// Closed loop, as `oha -c CONNS -z SECS`: `conns` keep-alive connections (opened afresh), each sending its next
/// request as soon as the last one is answered, until `secs` have passed. Rate: requests answered with 200 over
/// the time from the start to the last answer.
async fn closed_loop(target: &Target, conns: usize, secs: f64) -> Result<Throughput> {
    let mut pool = Vec::with_capacity(conns);
    for _ in 0..conns {
        pool.push(Conn::open(target.addr).await?);
    }
    pause(20).await;
    let ticks = || target.pid.and_then(|pid| cpu_ticks(&pid.to_string()));
    let cpu_before = ticks();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for mut conn in pool {
        let target = target.clone();
        tasks.spawn(async move {
            let mut samples = Samples::default();
            let mut last = start;
            while Instant::now() < deadline {
                if let Err(e) = one(&target, &mut conn, false, &mut samples).await {
                    samples.error(e.to_string());
                    break;
                }
                last = Instant::now();
            }
            (samples, last)
        });
    }
    let mut samples = Samples::default();
    let mut last = start;
    // Each request is bounded by REQUEST_TIMEOUT; dropping the set aborts whatever is left.
    let collect_deadline = deadline + REQUEST_TIMEOUT + Duration::from_secs(5);
    while let Ok(Some(joined)) = tokio::time::timeout_at(collect_deadline.into(), tasks.join_next()).await {
        let (s, at) = joined?;
        samples.lat.extend(s.lat);
        samples.errors += s.errors;
        if samples.first_error.is_none() {
            samples.first_error = s.first_error;
        }
        last = last.max(at);
    }
    if !tasks.is_empty() {
        samples.error(format!("{}: {} connections still busy at the end", target.name, tasks.len()));
    }
    samples.finish();
    let cpu = cpu_before.zip(ticks()).map(|(a, b)| b.saturating_sub(a) as f64 / ticks_per_second());
    let cpu_us = cpu.filter(|_| !samples.lat.is_empty()).map(|c| c * 1e6 / samples.lat.len() as f64);
    let elapsed = (last - start).as_secs_f64();
    let rate = if elapsed > 0.0 { samples.lat.len() as f64 / elapsed } else { 0.0 };
    Ok(Throughput { rate, samples, cpu_us })
}

// ---------------------------------------------------------------------------------------------------------------
// The run

struct Setup {
    settings: Settings,
    /// Which code was measured: the commit, and whether the tree had other changes.
    revision: String,
    /// Set with the split placement: the bare hop's and the gateway's processes, to move them between CPUs.
    movable: Vec<u32>,
    cpus: usize,
    pin_note: String,
    /// The gateway's resident memory before its first request.
    idle_rss_kib: Option<u64>,
    /// The bare hop's worker threads (the gateway's `server.workers`, unless `BENCH_FLOOR_WORKERS`).
    floor_workers: usize,
    command: String,
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

fn err_note(s: &Samples, unsent: u64) -> String {
    let mut note = String::new();
    if s.errors > 0 {
        let _ = write!(note, " ({} errors)", s.errors);
    }
    if unsent > 0 {
        let _ = write!(note, " ({unsent} unsent)");
    }
    note
}

/// One percentile, with the errors noted.
fn cell(s: &Samples, q: f64) -> String {
    format!("{}{}", fmt_us(s.p(q)), err_note(s, 0))
}

/// p50 / p99, with the errors and unsent requests noted.
fn pair(s: &Samples, unsent: u64) -> String {
    format!("{} / {}{}", fmt_us(s.p(0.5)), fmt_us(s.p(0.99)), err_note(s, unsent))
}

/// Added p50 / p99 of `t` over `d`.
fn pair_added(d: &Samples, t: &Samples) -> String {
    format!("{} / {}", fmt_added(d.p(0.5), t.p(0.5)), fmt_added(d.p(0.99), t.p(0.99)))
}

/// Added latency at percentile `q`, target − direct, in µs.
fn added(d: &Samples, t: &Samples, q: f64) -> Option<i64> {
    Some(t.p(q)? as i64 - d.p(q)? as i64)
}

/// (gateway − direct) ÷ (bare hop − direct) at percentile `q`, with both figures.
fn latency_ratio(d: &Samples, floor: &Samples, gateway: &Samples, q: f64) -> String {
    match (added(d, floor, q), added(d, gateway, q)) {
        (Some(f), Some(g)) if f > 0 => format!("{:.2}× ({g:+} ÷ {f:+} µs)", g as f64 / f as f64),
        (Some(f), Some(g)) => format!("– (gateway {g:+} µs, bare hop {f:+} µs)"),
        _ => "–".into(),
    }
}

/// The distribution in more detail, on stderr.
fn describe(what: &str, targets: &[&Target], samples: &[Samples]) {
    for (t, s) in targets.iter().zip(samples) {
        let q = |q| fmt_us(s.p(q));
        eprintln!(
            "bench:   {what} {}: p50 {} p90 {} p99 {} p99.9 {} max {} µs{}",
            t.name,
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            q(1.0),
            err_note(s, 0)
        );
        if let Some(e) = &s.first_error {
            eprintln!("bench:     first error: {e}");
        }
    }
}

/// `a` ÷ `b` as "0.52×", with "≥ " or "≤ " when one of them is only a lower bound (a rate that never failed).
fn rate_ratio(a: (u64, bool), b: (u64, bool)) -> String {
    if b.0 == 0 {
        return "–".into();
    }
    let bound = match (a.1, b.1) {
        (false, true) => "≥ ",
        (true, false) => "≤ ",
        _ => "",
    };
    let r = a.0 as f64 / b.0 as f64;
    if r < 0.1 {
        format!("{bound}{r:.4}×")
    } else {
        format!("{bound}{r:.2}×")
    }
}

async fn bench(targets: Vec<Target>, setup: &Setup) -> Result<String> {
    let s = &setup.settings;
    let load_start = loadavg();
    let t0 = Instant::now();
    // Sanity: all answer 200 with content, plain and (where measured) streamed.
    for t in &targets {
        let mut c = Conn::open(t.addr).await?;
        let mut requests = vec![(&t.plain, "plain")];
        if let Some(stream) = &t.stream {
            requests.push((stream, "stream"));
        }
        for (req, what) in requests {
            let r = c.timed_exchange(req, true, true).await?;
            if r.status != 200 || !has_content(&r.body) {
                return Err(format!(
                    "{} {what}: status {}, body {}",
                    t.name,
                    r.status,
                    String::from_utf8_lossy(&r.body)
                )
                .into());
            }
        }
    }
    let all: Vec<&Target> = targets.iter().collect();

    // With the split placement, the one-connection test also runs with the bare hop and the gateway moved onto the
    // load generator's CPU: the difference is the cost of cross-CPU wake-ups on this VM, not of the hops' work.
    let same_cpu = if setup.movable.is_empty() {
        None
    } else {
        eprintln!("bench: 1 connection, {} requests per target, bare hop and gateway moved to CPU 0", s.seq_requests);
        let mut moved = Ok(());
        for pid in &setup.movable {
            moved = moved.and_then(|()| repin(*pid, "0"));
        }
        let seq = match moved {
            Ok(()) => sequential(&all, s.seq_warmup, s.seq_requests, false, Duration::from_secs(40)).await,
            Err(e) => Err(e),
        };
        for pid in &setup.movable {
            repin(*pid, "1")?;
        }
        let seq = seq?;
        describe("1 conn, same CPU", &all, &seq);
        Some(seq)
    };
    eprintln!("bench: 1 connection, {} requests per target", s.seq_requests);
    let seq = sequential(&all, s.seq_warmup, s.seq_requests, false, Duration::from_secs(40)).await?;
    describe("1 conn", &all, &seq);
    eprintln!("bench: streaming, 1 connection, {} requests per target", s.stream_requests);
    let phase = Instant::now();
    let streaming = [&targets[DIRECT], &targets[GATEWAY]];
    let ttft = sequential(&streaming, s.stream_warmup, s.stream_requests, true, Duration::from_secs(60)).await?;
    eprintln!("bench:   ({:.1} s)", phase.elapsed().as_secs_f64());
    describe("stream TTFT", &streaming, &ttft);

    // Open loop and the search: the mock, the bare hop and the gateway on /api/v1/task (indices as in `targets`).
    let open = [&targets[DIRECT], &targets[FLOOR], &targets[GATEWAY]];
    eprintln!("bench: open loop at {:?} req/s, {} s each, {} connections", s.rates, s.rate_secs, s.conns);
    for t in open {
        // Warm-up (fills the hops' upstream connection pools).
        let _ = open_loop(t, s.conns, 1000, 0.5).await?;
    }
    let mut fixed: Vec<Vec<RateRun>> = open.iter().map(|_| Vec::new()).collect();
    for &rate in &s.rates {
        for (i, t) in open.iter().enumerate() {
            pause(300).await;
            let run = open_loop(t, s.conns, rate, s.rate_secs).await?;
            eprintln!(
                "bench:   {} @ {rate}: p50 {} p99 {} µs{}; sent late by p50 {} p99 {} µs",
                t.name,
                fmt_us(run.samples.p(0.5)),
                fmt_us(run.samples.p(0.99)),
                err_note(&run.samples, run.unsent),
                fmt_us(pct_us(&run.samples.late, 0.5)),
                fmt_us(pct_us(&run.samples.late, 0.99)),
            );
            fixed[i].push(run);
        }
    }

    eprintln!("bench: searching the highest rate with p99 < 5 ms");
    let mut max = Vec::new();
    for (i, t) in open.iter().enumerate() {
        let (rate, bounded) = search(t, s.conns, &fixed[i], s.search_probes, s.search_secs).await?;
        max.push((rate, bounded));
    }

    eprintln!(
        "bench: throughput, {} connections back to back, {} s per run, best of {} rounds",
        s.throughput_conns, s.throughput_secs, s.throughput_rounds
    );
    for t in &all {
        // Warm-up: as many upstream connections as the run will want.
        let _ = closed_loop(t, s.throughput_conns, if s.quick { 0.2 } else { 0.5 }).await?;
    }
    let mut best: Vec<Option<Throughput>> = all.iter().map(|_| None).collect();
    for round in 0..s.throughput_rounds {
        for i in block_order(round, all.len()) {
            pause(300).await;
            let run = closed_loop(all[i], s.throughput_conns, s.throughput_secs).await?;
            eprintln!(
                "bench:   {}: {:.0} req/s, p50 {} p99 {} µs{}",
                all[i].name,
                run.rate,
                fmt_us(run.samples.p(0.5)),
                fmt_us(run.samples.p(0.99)),
                err_note(&run.samples, 0)
            );
            if let Some(e) = &run.samples.first_error {
                eprintln!("bench:     first error: {e}");
            }
            if best[i].as_ref().is_none_or(|b| run.rate > b.rate) {
                best[i] = Some(run);
            }
        }
    }
    let tput: Vec<Throughput> = best.into_iter().flatten().collect();
    if tput.len() != all.len() {
        return Err("throughput: a target was never measured".into());
    }
    let elapsed = t0.elapsed();

    // The figures.
    let (d, f, g) = (DIRECT, FLOOR, GATEWAY);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "| measurement | direct to mock | bare hop | through gateway | added by bare hop | added by gateway |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
        let _ = writeln!(
            o,
            "| 1 conn {label} (µs) | {} | {} | {} | {} | {} |",
            cell(&seq[d], q),
            cell(&seq[f], q),
            cell(&seq[g], q),
            fmt_added(seq[d].p(q), seq[f].p(q)),
            fmt_added(seq[d].p(q), seq[g].p(q))
        );
    }
    if let Some(same) = &same_cpu {
        let _ = writeln!(
            o,
            "| 1 conn p50 / p99, bare hop and gateway moved onto CPU 0 too (µs) | {} | {} | {} | {} | {} |",
            pair(&same[d], 0),
            pair(&same[f], 0),
            pair(&same[g], 0),
            pair_added(&same[d], &same[f]),
            pair_added(&same[d], &same[g])
        );
    }
    for ((rd, rf), rg) in fixed[d].iter().zip(&fixed[f]).zip(&fixed[g]) {
        let _ = writeln!(
            o,
            "| {} req/s p50 / p99 (µs) | {} | {} | {} | {} | {} |",
            rd.rate,
            pair(&rd.samples, rd.unsent),
            pair(&rf.samples, rf.unsent),
            pair(&rg.samples, rg.unsent),
            pair_added(&rd.samples, &rf.samples),
            pair_added(&rd.samples, &rg.samples)
        );
    }
    let shown = |(rate, bounded): (u64, bool)| {
        if bounded {
            rate.to_string()
        } else {
            format!("≥ {rate}")
        }
    };
    let _ = writeln!(
        o,
        "| max rate with p99 < 5 ms (req/s) | {} | {} | {} | {} of direct | {} of direct |",
        shown(max[d]),
        shown(max[f]),
        shown(max[g]),
        rate_ratio(max[f], max[d]),
        rate_ratio(max[g], max[d])
    );
    let per_direct = |i: usize| {
        if tput[d].rate > 0.0 {
            format!("{:.2}× of direct", tput[i].rate / tput[d].rate)
        } else {
            "–".into()
        }
    };
    let _ = writeln!(
        o,
        "| throughput, {} conns back to back (req/s) | {:.0}{} | {:.0}{} | {:.0}{} | {} | {} |",
        s.throughput_conns,
        tput[d].rate,
        err_note(&tput[d].samples, 0),
        tput[f].rate,
        err_note(&tput[f].samples, 0),
        tput[g].rate,
        err_note(&tput[g].samples, 0),
        per_direct(f),
        per_direct(g)
    );
    let cpu = |i: usize| tput[i].cpu_us.map_or("–".to_owned(), |c| format!("{c:.0}"));
    let _ = writeln!(
        o,
        "| CPU time per request in that run (µs, the serving process) | {} | {} | {} | – | – |",
        cpu(d),
        cpu(f),
        cpu(g)
    );
    let mib = |k: Option<u64>| k.map_or("–".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0));
    let _ = writeln!(
        o,
        "| gateway RSS: idle at start (embedding model not loaded) / after the run (MiB) | – | – | {} / {} | – | – |",
        mib(setup.idle_rss_kib),
        mib(targets[GATEWAY].pid.and_then(|pid| rss_kib(pid).ok()))
    );
    let _ = writeln!(
        o,
        "| stream TTFT p50 / p99 (µs) | {} | – | {} | – | {} |",
        pair(&ttft[0], 0),
        pair(&ttft[1], 0),
        pair_added(&ttft[0], &ttft[1])
    );
    let ov = &seq[g].overhead_us;
    let ov_q = |q: f64| -> Option<u64> {
        if ov.is_empty() {
            return None;
        }
        let rank = ((q * ov.len() as f64).ceil() as usize).clamp(1, ov.len());
        Some(ov[rank - 1])
    };
    let _ = writeln!(
        o,
        "| gateway's own X-Switchyard-Overhead-Us, 1 conn, p50 / p99 (µs) | – | – | {} / {} | – | – |",
        fmt_us(ov_q(0.5)),
        fmt_us(ov_q(0.99))
    );

    // The ratios the gateway is judged by.
    let _ = writeln!(o);
    let _ = writeln!(o, "| gateway ÷ bare hop | via /api/v1/task | via /v1/chat/completions | aim |");
    let _ = writeln!(o, "|---|---|---|---|");
    let c = GATEWAY_CHAT;
    for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
        let _ = writeln!(
            o,
            "| added latency, 1 conn {label} | {} | {} | ≤ 1.3× |",
            latency_ratio(&seq[d], &seq[f], &seq[g], q),
            latency_ratio(&seq[d], &seq[f], &seq[c], q)
        );
    }
    if let Some(same) = &same_cpu {
        let both = |t: usize| {
            format!(
                "{} / {}",
                latency_ratio(&same[d], &same[f], &same[t], 0.5),
                latency_ratio(&same[d], &same[f], &same[t], 0.99)
            )
        };
        let _ = writeln!(o, "| added latency, 1 conn p50 / p99, all on CPU 0 | {} | {} | – |", both(g), both(c));
    }
    // A bare hop as fast as the mock alone was held back by the load generator and the mock (their CPU), not by
    // itself: its figure is then a lower bound, and the gateway's ratio to it an upper bound.
    let floor_capped = tput[f].rate >= 0.9 * tput[d].rate;
    let tput_ratio = |t: usize| {
        if tput[f].rate > 0.0 {
            let bound = if floor_capped { "≤ " } else { "" };
            format!("{bound}{:.2}× ({:.0} ÷ {:.0} req/s)", tput[t].rate / tput[f].rate, tput[t].rate, tput[f].rate)
        } else {
            "–".into()
        }
    };
    let _ = writeln!(
        o,
        "| highest throughput, {} conns back to back | {} | {} | ≥ 0.8× |",
        s.throughput_conns,
        tput_ratio(g),
        tput_ratio(c)
    );
    let cpu_ratio = |t: usize| match (tput[t].cpu_us, tput[f].cpu_us) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}× ({a:.0} ÷ {b:.0} µs)", a / b),
        _ => "–".into(),
    };
    let _ = writeln!(
        o,
        "| CPU time per request at {} conns | {} | {} | – |",
        s.throughput_conns,
        cpu_ratio(g),
        cpu_ratio(c)
    );
    let _ = writeln!(
        o,
        "| max rate with p99 < 5 ms | {} ({} ÷ {} req/s) | not measured | ≥ 0.8× |",
        rate_ratio(max[g], max[f]),
        shown(max[g]),
        shown(max[f])
    );
    if floor_capped {
        let _ = writeln!(
            o,
            "\n≤: the bare hop's throughput reached 0.9× or more of the mock's alone, so the load generator and the \
             mock were its limit: the bare hop can do more, and the gateway's ratio is at most the figure shown."
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "Machine: nproc {}, {}; load average {} at start, {} at end; {} s of measurement; gateway built from {}.\n\
         Method: one hand-written HTTP/1.1 client (TCP_NODELAY, keep-alive) for every target, one current-thread \
         tokio runtime. Bare hop: `switchyard-floor` (tests/bench/floor.rs), actix-web with {} worker(s) as the \
         gateway, forwarding each body with reqwest (and an upstream key, as the gateway) to the mock's \
         /v1/chat/completions and returning the answer. \
         1 conn: {} requests per target after {} warm-up, the targets (direct, bare hop, gateway on /api/v1/task, \
         gateway on /v1/chat/completions) alternating in blocks of {BLOCK}, each order followed by its mirror. \
         Open loop: {} connections opened per run, {} s per rate, sends paced by spinning (tokio's timer has 1 ms \
         resolution), latency from the intended send time, a request waits for a free connection if all are busy. \
         Max-rate search: doubling then bisecting, up to {} probes of {} s; pass = no error and p99 < 5 ms. \
         Throughput: {} connections each sending its next request once the last is answered (as `oha -c {}`), {} s \
         per run, the best of {} round(s) in alternating order. Stream TTFT: send to the first non-empty `content` \
         delta, {} requests per target; the mock writes each delta on its own (--token-interval-us {}, ~1 ms \
         apart). Added = target − direct, per percentile; the ratios divide the gateway's added latency by the bare \
         hop's, and its throughput by the bare hop's.",
        setup.cpus,
        setup.pin_note,
        load_start,
        loadavg(),
        elapsed.as_secs(),
        setup.revision,
        setup.floor_workers,
        seq[d].lat.len(),
        s.seq_warmup,
        s.conns,
        s.rate_secs,
        s.search_probes,
        s.search_secs,
        s.throughput_conns,
        s.throughput_conns,
        s.throughput_secs,
        s.throughput_rounds,
        ttft[0].lat.len(),
        s.token_interval_us,
    );
    let _ = writeln!(o, "Command: `{}`", setup.command);
    Ok(o)
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
            for log in ["mock.log", "floor.log", "gateway.log"] {
                let text = tail(&dir.path().join(log), 20);
                if !text.is_empty() {
                    eprintln!("--- last lines of {log} ---\n{text}");
                }
            }
            ExitCode::FAILURE
        }
    };
    drop(dir);
    code
}

/// Throughput by `server.workers`: gateways with 1, 2, … workers on the CPUs the load generator leaves (all on
/// CPU 1 when there are only two CPUs: then the figure is the cost of more workers, not their gain).
async fn scaling(children: &mut Children, dir: &Path, mock_addr: SocketAddr, setup: &Setup) -> Result<String> {
    let s = &setup.settings;
    let split = setup.settings.pin == Pin::Split;
    let (cpu, counts): (Option<String>, Vec<usize>) = match setup.cpus {
        n if split && n >= 3 => {
            let mut counts: Vec<usize> =
                std::iter::successors(Some(1), |w| Some(w * 2)).take_while(|w| *w < n).collect();
            if counts.last() != Some(&(n - 1)) {
                counts.push(n - 1);
            }
            (Some(format!("1-{}", n - 1)), counts)
        }
        _ if split => (Some("1".to_owned()), vec![1, 2]),
        _ => (None, vec![1, 2]),
    };
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\n| `server.workers` | gateway CPUs | throughput, {} conns (req/s) | CPU per request (µs) | vs 1 worker |",
        s.throughput_conns
    );
    let _ = writeln!(o, "|---|---|---|---|---|");
    let mut first: Option<f64> = None;
    for workers in counts {
        let data = dir.join(format!("scaling-{workers}"));
        let log = dir.join(format!("scaling-{workers}.log"));
        let (addr, key, pid) = start_gateway(children, &data, mock_addr, cpu.as_deref(), Some(workers), &log)?;
        let target = Target {
            name: "gateway",
            addr,
            plain: request_bytes("/v1/chat/completions", addr, &key, BODY),
            stream: None,
            pid,
        };
        let _ = closed_loop(&target, s.throughput_conns, 0.5).await?;
        let mut best: Option<Throughput> = None;
        for _ in 0..s.throughput_rounds.max(2) {
            pause(300).await;
            let run = closed_loop(&target, s.throughput_conns, s.throughput_secs).await?;
            if best.as_ref().is_none_or(|b| run.rate > b.rate) {
                best = Some(run);
            }
        }
        let best = best.ok_or("scaling: no run")?;
        eprintln!("bench:   scaling, {workers} worker(s): {:.0} req/s{}", best.rate, err_note(&best.samples, 0));
        let base = *first.get_or_insert(best.rate);
        let _ = writeln!(
            o,
            "| {workers} | {} | {:.0}{} | {} | {:.2}× |",
            cpu.as_deref().unwrap_or("any"),
            best.rate,
            err_note(&best.samples, 0),
            best.cpu_us.map_or("–".to_owned(), |c| format!("{c:.0}")),
            if base > 0.0 { best.rate / base } else { 0.0 }
        );
        // Stop it now, so the next one has the CPUs to itself.
        if let Some(mut child) = children.0.pop() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    let _ =
        writeln!(
        o,
        "\nScaling: `/v1/chat/completions` through gateways started with each `server.workers`, the load generator \
         and the mock on CPU 0{}.",
        if setup.cpus < 3 { "; with two CPUs every gateway runs on CPU 1 alone, so the rows show what more workers \
         cost on one CPU (cross-thread hand-offs to the engine), not what they gain" } else { "" }
    );
    Ok(o)
}

/// Starts the children, runs the bench, and (through `Children`'s drop) always stops them.
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
    // The bare hop sits where the gateway does, with as many workers.
    let (self_cpu, mock_cpu, gateway_cpu) = match settings.pin {
        Pin::Split => (Some("0"), Some("0"), Some("1")),
        Pin::One => (Some("0"), Some("0"), Some("0")),
        Pin::None => (None, None, None),
    };
    let pin_note = match settings.pin {
        Pin::Split => "pinned with taskset: load generator + mock on CPU 0, bare hop and gateway on CPU 1".to_owned(),
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
    command.push_str("cargo bench --bench gateway");

    let mut children = Children::default();
    let mut mock = child_command(MOCK_BIN, mock_cpu);
    mock.args(["--listen", "127.0.0.1:0", "--token-interval-us"]).arg(settings.token_interval_us.to_string());
    let mock_out = spawn(&mut children, mock, &dir.join("mock.log"))?;
    let mock_addr = parse_url(&wait_for(&mock_out, "listening on ", "switchyard-mock")?)?;

    let floor_workers = env_or("BENCH_FLOOR_WORKERS", gateway_workers(cpus)).max(1);
    let mut floor = child_command(FLOOR_BIN, gateway_cpu);
    floor
        .args(["--listen", "127.0.0.1:0", "--workers"])
        .arg(floor_workers.to_string())
        .args(["--api-key", "x", "--upstream"])
        .arg(format!("http://{mock_addr}/v1/chat/completions"));
    let floor_out = spawn(&mut children, floor, &dir.join("floor.log"))?;
    let floor_addr = parse_url(&wait_for(&floor_out, "listening on ", "switchyard-floor")?)?;
    let floor_pid = children.0.last().map(Child::id);

    let mock_pid = children.0.first().map(Child::id);
    let (gw_addr, key, gateway_pid) =
        start_gateway(&mut children, &dir.join("data"), mock_addr, gateway_cpu, None, &dir.join("gateway.log"))?;
    let idle_rss_kib = gateway_pid.and_then(|pid| rss_kib(pid).ok());

    let targets = vec![
        Target {
            name: "direct",
            addr: mock_addr,
            plain: request_bytes("/v1/chat/completions", mock_addr, "x", BODY),
            stream: Some(request_bytes("/v1/chat/completions", mock_addr, "x", STREAM_BODY)),
            pid: mock_pid,
        },
        Target {
            name: "bare hop",
            addr: floor_addr,
            plain: request_bytes("/v1/chat/completions", floor_addr, "x", BODY),
            stream: None,
            pid: floor_pid,
        },
        Target {
            name: "gateway",
            addr: gw_addr,
            plain: request_bytes("/api/v1/task", gw_addr, &key, BODY),
            stream: Some(request_bytes("/api/v1/task", gw_addr, &key, STREAM_BODY)),
            pid: gateway_pid,
        },
        Target {
            name: "gateway /v1/chat/completions",
            addr: gw_addr,
            plain: request_bytes("/v1/chat/completions", gw_addr, &key, BODY),
            stream: None,
            pid: gateway_pid,
        },
    ];
    eprintln!(
        "bench: mock on {mock_addr}, bare hop on {floor_addr} ({floor_workers} workers), gateway on {gw_addr}; \
         {pin_note}{}",
        if settings.quick { "; quick run" } else { "" }
    );
    let movable = if settings.pin == Pin::Split { floor_pid.into_iter().chain(gateway_pid).collect() } else { vec![] };
    let setup = Setup { settings, revision: revision(), movable, cpus, pin_note, idle_rss_kib, floor_workers, command };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // SIGINT or SIGTERM ends the run through the normal path, so `children` still kills the servers.
    let result = runtime.block_on(async {
        tokio::select! {
            result = async {
                let mut table = bench(targets, &setup).await?;
                if std::env::var("BENCH_SCALING").map_or(true, |v| v != "0") {
                    table.push_str(&scaling(&mut children, dir, mock_addr, &setup).await?);
                }
                if std::env::var("BENCH_PACED").map_or(true, |v| v != "0") {
                    table.push_str(&paced::paced(&mut children, dir, &setup, (mock_cpu, gateway_cpu)).await?);
                }
                Ok(table)
            } => result,
            signal = interrupted() => Err(format!("interrupted by {signal}").into()),
            _ = tokio::time::sleep(RUN_LIMIT) => Err(format!("still running after {RUN_LIMIT:?}").into()),
        }
    });
    drop(runtime);
    drop(children);
    result
}
