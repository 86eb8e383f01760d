//! The gateway on its shared backends beside the embedded default, in one run: the latency each adds over calling
//! the upstream mock directly (one keep-alive connection, sequential requests, the targets alternating in blocks)
//! and the throughput of each (closed loop over 32 connections).
//!
//! `make bench` runs it beside a throwaway PostgreSQL and Redis (`.ci/with-backends cargo bench --bench shared`;
//! about a minute). Targets, all against the same `switchyard-mock`:
//! - direct: the mock itself;
//! - embedded: `switchyard serve` on SQLite with the in-memory books and limits (the default);
//! - postgres: `database.url` set (wallets shared: a reservation and a settlement statement per call);
//! - postgres+redis: also `redis.url` (limits shared: one Lua script per admission, one per release).
//!
//! Every gateway's plan is wide open (limits are checked, never hit). Knobs: `BENCH_SHARED_REQUESTS` (per target,
//! 2000), `BENCH_SHARED_CONNS` (32), `BENCH_SHARED_SECS` (4). Prints a markdown table on stdout.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

#[path = "support.rs"]
mod support;

use std::net::SocketAddr;
use std::process::{Child, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{
    child_command, cpu_ticks, env_or, loadavg, parse_url, request_bytes, revision, spawn, start_gateway_with, tail,
    ticks_per_second, wait_for, Children, Conn, Result,
};

const MOCK_BIN: &str = env!("CARGO_BIN_EXE_switchyard-mock");
const BODY: &str = r#"{"model":"gpt-4","messages":[{"role":"user","content":"hello"}],"max_tokens":16}"#;
const BLOCK: usize = 250;

#[derive(Clone)]
struct Target {
    name: &'static str,
    addr: SocketAddr,
    request: Arc<[u8]>,
    pid: Option<u32>,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// One request; its latency in nanoseconds, or an error for anything but 200.
async fn one(target: &Target, conn: &mut Conn) -> Result<u64> {
    let start = Instant::now();
    let reply = conn.timed_exchange(&target.request, false, false).await?;
    let took = start.elapsed().as_nanos() as u64;
    if reply.status != 200 {
        return Err(format!("{}: status {}", target.name, reply.status).into());
    }
    if reply.close {
        *conn = Conn::open(target.addr).await?;
    }
    Ok(took)
}

/// Sequential requests on one connection per target, in blocks whose order rotates: each target's sorted latencies.
async fn sequential(targets: &[Target], total: usize) -> Result<Vec<Vec<u64>>> {
    let mut conns = Vec::new();
    for t in targets {
        let mut conn = Conn::open(t.addr).await?;
        for _ in 0..200 {
            one(t, &mut conn).await?;
        }
        conns.push(conn);
    }
    let mut out: Vec<Vec<u64>> = targets.iter().map(|_| Vec::with_capacity(total)).collect();
    for b in 0..total.div_ceil(BLOCK) {
        for k in 0..targets.len() {
            let i = (k + b) % targets.len();
            for _ in 0..BLOCK.min(total - b * BLOCK) {
                out[i].push(one(&targets[i], &mut conns[i]).await?);
            }
        }
    }
    out.iter_mut().for_each(|v| v.sort_unstable());
    Ok(out)
}

/// `conns` connections sending back to back for `secs`: requests per second, and the target's CPU per request (µs).
async fn closed_loop(target: &Target, conns: usize, secs: f64) -> Result<(f64, Option<f64>)> {
    let ticks = || target.pid.and_then(|pid| cpu_ticks(&pid.to_string()));
    let mut pool = Vec::new();
    for _ in 0..conns {
        pool.push(Conn::open(target.addr).await?);
    }
    let before = ticks();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for mut conn in pool {
        let target = target.clone();
        tasks.spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                one(&target, &mut conn).await.map_err(|e| e.to_string())?;
                done += 1;
            }
            Ok::<u64, String>(done)
        });
    }
    let mut done = 0;
    while let Some(joined) = tasks.join_next().await {
        done += joined??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = before.zip(ticks()).map(|(a, b)| b.saturating_sub(a) as f64 / ticks_per_second());
    Ok((done as f64 / elapsed, cpu.map(|c| c * 1e6 / done.max(1) as f64)))
}

async fn database(admin: &str) -> Result<String> {
    let pool = sqlx::PgPool::connect(admin).await?;
    let name = format!("bench_shared_{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
    sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&pool).await?;
    pool.close().await;
    let (base, _) = admin.rsplit_once('/').ok_or("a PostgreSQL URL with a database")?;
    Ok(format!("{base}/{name}"))
}

async fn run(dir: &std::path::Path) -> Result<String> {
    let postgres = std::env::var("SWITCHYARD_TEST_POSTGRES_URL")
        .map_err(|_| "no PostgreSQL: run it as `.ci/with-backends cargo bench --bench shared` (make bench does)")?;
    let redis = std::env::var("SWITCHYARD_TEST_REDIS_URL").map_err(|_| "no Redis (see above)")?;
    let total = env_or("BENCH_SHARED_REQUESTS", 2000usize);
    let conns = env_or("BENCH_SHARED_CONNS", 32usize);
    let secs = env_or("BENCH_SHARED_SECS", 4.0f64);

    let mut children = Children::default();
    let mut mock = child_command(MOCK_BIN, None);
    mock.args(["--listen", "127.0.0.1:0"]);
    let mock_out = spawn(&mut children, mock, &dir.join("mock.log"))?;
    let mock_addr = parse_url(&wait_for(&mock_out, "listening on ", "switchyard-mock")?)?;
    let mut targets = vec![Target {
        name: "direct",
        addr: mock_addr,
        request: request_bytes("/v1/chat/completions", mock_addr, "x", BODY),
        pid: children.0.first().map(Child::id),
    }];
    let prefix = format!("bench:{:08x}:", rand::random::<u32>());
    let shared_pg = database(&postgres).await?;
    let shared_both = database(&postgres).await?;
    let setups: [(&'static str, Vec<(&str, String)>); 3] = [
        ("embedded", vec![]),
        ("postgres", vec![("SWITCHYARD__DATABASE__URL", shared_pg)]),
        (
            "postgres+redis",
            vec![
                ("SWITCHYARD__DATABASE__URL", shared_both),
                ("SWITCHYARD__REDIS__URL", redis),
                ("SWITCHYARD__REDIS__PREFIX", prefix),
            ],
        ),
    ];
    for (name, env) in setups {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (addr, key, pid) = start_gateway_with(
            &mut children,
            &dir.join(name),
            mock_addr,
            None,
            &env,
            &dir.join(format!("{name}.log")),
        )?;
        targets.push(Target { name, addr, request: request_bytes("/v1/chat/completions", addr, &key, BODY), pid });
    }

    eprintln!("bench: one connection, {total} sequential requests per target");
    let latencies = sequential(&targets, total).await?;
    let mut rates = Vec::new();
    for t in &targets {
        eprintln!("bench: {}: {conns} connections for {secs} s", t.name);
        let _ = closed_loop(t, conns, 0.5).await?;
        rates.push(closed_loop(t, conns, secs).await?);
    }

    let (d50, d99) = (percentile(&latencies[0], 0.5), percentile(&latencies[0], 0.99));
    let embedded_rate = rates[1].0;
    let mut table = format!(
        "Shared backends beside the embedded default ({}; load {}; `make bench` → cargo bench --bench shared)\n\n\
         | target | p50 µs | p99 µs | added p50 µs | added p99 µs | req/s ({conns} conns) | ÷ embedded | CPU µs/req |\n\
         |---|---|---|---|---|---|---|---|\n",
        revision(),
        loadavg()
    );
    for (i, t) in targets.iter().enumerate() {
        let (p50, p99) = (percentile(&latencies[i], 0.5), percentile(&latencies[i], 0.99));
        let added = |v: f64, d: f64| if i == 0 { "–".to_owned() } else { format!("{:.0}", v - d) };
        let ratio = if i == 0 { "–".to_owned() } else { format!("{:.2}×", rates[i].0 / embedded_rate) };
        let cpu = rates[i].1.map_or("–".to_owned(), |c| format!("{c:.0}"));
        table.push_str(&format!(
            "| {} | {p50:.0} | {p99:.0} | {} | {} | {:.0} | {ratio} | {cpu} |\n",
            t.name,
            added(p50, d50),
            added(p99, d99),
            rates[i].0
        ));
    }
    Ok(table)
}

fn main() -> ExitCode {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    let outcome =
        runtime.map_err(|e| e.to_string()).and_then(|rt| rt.block_on(run(dir.path())).map_err(|e| e.to_string()));
    match outcome {
        Ok(table) => {
            println!("{table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: failed: {e}");
            for log in ["mock.log", "embedded.log", "postgres.log", "postgres+redis.log"] {
                let text = tail(&dir.path().join(log), 20);
                if !text.is_empty() {
                    eprintln!("--- last lines of {log} ---\n{text}");
                }
            }
            ExitCode::FAILURE
        }
    }
}
