//! What both benchmarks (`gateway.rs`, `realtime.rs`) need around the processes they measure: starting and
//! pinning children, reading their output, and reading a process's CPU time and memory from `/proc`.
//! Included by each with `#[path = "support.rs"] mod support;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

pub type Result<T> = std::result::Result<T, Error>;

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
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS for process {pid}").into())
}
