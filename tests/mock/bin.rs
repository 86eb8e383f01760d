//! `switchyard-mock`: the mock upstream as a standalone binary (for the benchmark).
//!
//! Usage: switchyard-mock [--listen ADDR] [--reply-words N] [--ttft-ms N] [--token-interval-us N]
//!                        [--threads N] [--media]
//! `--threads` defaults to 1 (a current-thread runtime: lowest latency, leaves the other cores to
//! the gateway under test); N > 1 runs a multi-thread runtime with N workers.
//! Prints `listening on http://ADDR` once bound, then serves until killed.
//! Faults are set at run time with `POST /__mock/fault`; `GET /__mock/stats` counts calls.
//! `--media` serves the media mock instead (Black Forest Labs and ElevenLabs, with ElevenLabs' WebSockets; faults
//! with `POST /__mock/ws_fault`): for trying SDK scripts against it by hand.

mod media;
mod server;

use std::io::Write;
use std::time::Duration;

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg)
}

fn number(flag: &str, value: &str) -> std::io::Result<u64> {
    value.parse::<u64>().map_err(|_| invalid(format!("{flag}: not a number: {value}")))
}

#[allow(clippy::print_stdout)]
fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut listen = "127.0.0.1:0".to_string();
    let mut config = server::MockConfig::default();
    let mut threads = 1usize;
    let mut media = false;
    let mut i = 0;
    while i < args.len() {
        let (flag, inline) = match args[i].split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (args[i].clone(), None),
        };
        i += 1;
        if flag == "-h" || flag == "--help" {
            println!(
                "usage: switchyard-mock [--listen ADDR] [--reply-words N] [--ttft-ms N] \
                 [--token-interval-us N] [--threads N] [--media]"
            );
            return Ok(());
        }
        if flag == "--media" {
            media = true;
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => {
                let v = args.get(i).cloned().ok_or_else(|| invalid(format!("{flag} needs a value")))?;
                i += 1;
                v
            }
        };
        match flag.as_str() {
            "--listen" => listen = value,
            "--reply-words" => config.reply_words = usize::try_from(number(&flag, &value)?).unwrap_or(usize::MAX),
            "--ttft-ms" => config.ttft = Duration::from_millis(number(&flag, &value)?),
            "--token-interval-us" => config.token_interval = Duration::from_micros(number(&flag, &value)?),
            "--threads" => threads = usize::try_from(number(&flag, &value)?).unwrap_or(1),
            _ => return Err(invalid(format!("unknown argument: {flag}"))),
        }
    }
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?
    };
    runtime.block_on(async {
        if media {
            let mock = media::MediaMock::start_on(&listen).await?;
            println!("listening on {}", mock.url());
            std::io::stdout().flush()?;
            return tokio::signal::ctrl_c().await;
        }
        let server = server::MockServer::start_on(&listen, config).await?;
        println!("listening on {}", server.url());
        std::io::stdout().flush()?;
        tokio::signal::ctrl_c().await
    })
}
