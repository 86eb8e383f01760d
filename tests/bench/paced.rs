//! Phase 7: many paced streams open at once. A second mock paces its tokens (`BENCH_PACED_INTERVAL_MS`, default
//! 20 ms, `BENCH_PACED_TOKENS` tokens a stream, default 100, so about 2 s a stream), and `BENCH_PACED_STREAMS`
//! streams (default 1000, quick 200) start over `BENCH_PACED_RAMP_MS` (default 1000 ms), so that all are open at once
//! at the end of the ramp. Run straight to the mock, then through a gateway of its own on the same mock. For each
//! stream: its status, whether it ended with `data: [DONE]`, its time to the first content delta, and its longest
//! gap between two chunks. A stall is a gap longer than the pacing interval plus `STALL_SLACK`.
//! `BENCH_PACED=0` skips the phase.

use super::{
    child_command, env_or, parse_url, pct_us, request_bytes, spawn, start_gateway, wait_for, Children, Conn, Result,
    Setup, MOCK_BIN, REQUEST_TIMEOUT,
};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const STALL_SLACK: Duration = Duration::from_millis(250);

struct Knobs {
    streams: usize,
    interval: Duration,
    tokens: usize,
    ramp: Duration,
}

#[derive(Default)]
struct Outcome {
    /// Time to the first content delta, ns, of the streams that had one (sorted).
    ttft: Vec<u64>,
    /// Each finished stream's longest gap between chunks, ns (sorted).
    gaps: Vec<u64>,
    ok: usize,
    done: usize,
    errors: usize,
    first_error: Option<String>,
    stalls: usize,
    most_open: usize,
    elapsed: Duration,
}

async fn run_streams(addr: SocketAddr, request: Arc<[u8]>, knobs: &Knobs) -> Outcome {
    let open = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let step = knobs.ramp.checked_div(u32::try_from(knobs.streams).unwrap_or(u32::MAX)).unwrap_or_default();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..knobs.streams {
        let (request, open, most) = (request.clone(), open.clone(), most.clone());
        let due = start + step * u32::try_from(i).unwrap_or(u32::MAX);
        tasks.spawn(async move {
            tokio::time::sleep_until(due.into()).await;
            let mut conn = Conn::open(addr).await.map_err(|e| format!("connect: {e}"))?;
            let now_open = open.fetch_add(1, Ordering::Relaxed) + 1;
            most.fetch_max(now_open, Ordering::Relaxed);
            let sent = Instant::now();
            let reply = conn.timed_exchange(&request, true, true).await;
            open.fetch_sub(1, Ordering::Relaxed);
            let reply = reply.map_err(|e| e.to_string())?;
            let done = reply.body.windows(12).any(|w| w == b"data: [DONE]");
            Ok::<_, String>((reply.status, done, reply.first_content.map(|t| t - sent), reply.max_gap))
        });
    }
    let mut out = Outcome::default();
    let deadline = Instant::now() + knobs.ramp + REQUEST_TIMEOUT * 2;
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline.into(), tasks.join_next()).await {
        match joined.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok((200, done, ttft, gap)) => {
                out.ok += 1;
                out.done += usize::from(done);
                out.ttft.extend(ttft.map(super::ns));
                out.gaps.push(super::ns(gap));
                out.stalls += usize::from(gap > knobs.interval + STALL_SLACK);
            }
            Ok((status, ..)) => {
                out.errors += 1;
                out.first_error.get_or_insert(format!("status {status}"));
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(e);
            }
        }
    }
    if !tasks.is_empty() {
        out.errors += tasks.len();
        out.first_error.get_or_insert(format!("{} streams still open at the deadline", tasks.len()));
    }
    out.elapsed = start.elapsed();
    out.most_open = most.load(Ordering::Relaxed);
    out.ttft.sort_unstable();
    out.gaps.sort_unstable();
    out
}

fn ms(sorted: &[u64], q: f64) -> String {
    pct_us(sorted, q).map_or("–".to_owned(), |us| format!("{:.1}", us as f64 / 1000.0))
}

/// Runs the phase; answers its markdown table.
pub async fn paced(
    children: &mut Children,
    dir: &Path,
    setup: &Setup,
    cpus: (Option<&str>, Option<&str>),
) -> Result<String> {
    let quick = setup.settings.quick;
    let knobs = Knobs {
        streams: env_or("BENCH_PACED_STREAMS", if quick { 200 } else { 1000 }).clamp(1, 5000),
        interval: Duration::from_millis(env_or("BENCH_PACED_INTERVAL_MS", 20)),
        tokens: env_or("BENCH_PACED_TOKENS", 100usize).clamp(1, 10_000),
        ramp: Duration::from_millis(env_or("BENCH_PACED_RAMP_MS", 1000)),
    };
    let (mock_cpu, gateway_cpu) = cpus;
    let mut mock = child_command(MOCK_BIN, mock_cpu);
    mock.args(["--listen", "127.0.0.1:0", "--reply-words"])
        .arg(knobs.tokens.to_string())
        .arg("--token-interval-us")
        .arg((knobs.interval.as_micros()).to_string());
    let out = spawn(children, mock, &dir.join("paced-mock.log"))?;
    let mock_addr = parse_url(&wait_for(&out, "listening on ", "switchyard-mock (paced)")?)?;
    let (gw_addr, key, _) =
        start_gateway(children, &dir.join("paced"), mock_addr, gateway_cpu, None, &dir.join("paced-gateway.log"))?;
    let body = format!(
        r#"{{"model":"gpt-4","messages":[{{"role":"user","content":"hello"}}],"max_tokens":{},"stream":true}}"#,
        knobs.tokens
    );
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\n{} paced streams ({} tokens {} ms apart, about {:.1} s each), started over {} ms:\n",
        knobs.streams,
        knobs.tokens,
        knobs.interval.as_millis(),
        knobs.interval.as_secs_f64() * knobs.tokens as f64,
        knobs.ramp.as_millis()
    );
    let _ = writeln!(
        o,
        "| target | most open at once | status 200 | ended `[DONE]` | errors | TTFT p50 / p99 / max (ms) | longest gap p50 / p99 / max (ms) | stalls (gap > {} ms) |",
        (knobs.interval + STALL_SLACK).as_millis()
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|");
    let targets = [
        ("direct", mock_addr, request_bytes("/v1/chat/completions", mock_addr, "x", &body)),
        ("gateway", gw_addr, request_bytes("/api/v1/task", gw_addr, &key, &body)),
    ];
    let mut ttft_p50 = Vec::new();
    for (name, addr, request) in targets {
        eprintln!("bench: phase 7, {} paced streams to the {name}", knobs.streams);
        let r = run_streams(addr, request, &knobs).await;
        if let Some(e) = &r.first_error {
            eprintln!("bench:   first error: {e}");
        }
        eprintln!("bench:   ({:.1} s)", r.elapsed.as_secs_f64());
        let _ = writeln!(
            o,
            "| {name} | {} | {} | {} | {} | {} / {} / {} | {} / {} / {} | {} |",
            r.most_open,
            r.ok,
            r.done,
            r.errors,
            ms(&r.ttft, 0.5),
            ms(&r.ttft, 0.99),
            ms(&r.ttft, 1.0),
            ms(&r.gaps, 0.5),
            ms(&r.gaps, 0.99),
            ms(&r.gaps, 1.0),
            r.stalls
        );
        ttft_p50.push(pct_us(&r.ttft, 0.5));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if let [Some(direct), Some(gateway)] = ttft_p50[..] {
        let _ = writeln!(
            o,
            "\nTime to first token added by the gateway under this load, p50: {:+} µs.",
            i64::try_from(gateway).unwrap_or(i64::MAX) - i64::try_from(direct).unwrap_or(i64::MAX)
        );
    }
    Ok(o)
}
