//! The real binary as a child process on port 0: start it on a data directory, read its first-start key and
//! address, kill it (the guard kills and reaps it on every path).

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN: &str = "blackbox-admin-key";

pub struct Running {
    pub child: Child,
    pub url: String,
    pub key: Option<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn command(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("SWITCHYARD_ADMIN_KEY", ADMIN)
        .env("SWITCHYARD__LOG__LEVEL", "warn")
        .env("SWITCHYARD__SIMULATOR__TOKENS_PER_SECOND", "40")
        .env("SWITCHYARD__SERVER__SHUTDOWN_TIMEOUT_SECS", "10");
    for variable in ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "MISTRAL_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"]
    {
        command.env_remove(variable);
    }
    command
}

/// Starts the gateway and reads its stdout up to the listening line (with the first-start key, if printed).
pub fn start(data_dir: &Path) -> Running {
    start_with(data_dir, &[])
}

pub fn start_with(data_dir: &Path, env: &[(&str, String)]) -> Running {
    let mut command = command(data_dir);
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    // Owned by the guard from here on, so the process is killed and reaped on every path.
    let mut running = Running { child, url: String::new(), key: None };
    let stdout = running.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("gateway did not start");
        if let Some(k) = line.strip_prefix("API key (shown once, keep it): ") {
            running.key = Some(k.trim().to_owned());
        }
        if let Some(url) = line.strip_prefix("Switchyard listening on ") {
            running.url = url.trim().to_owned();
            return running;
        }
    }
}

/// Kills the process with SIGKILL and reaps it.
pub fn kill(running: &mut Running) {
    let status = Command::new("kill").args(["-KILL", &running.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let _ = running.child.wait();
}

/// The wallet as `GET /api/billing/wallet` answers it.
pub async fn wallet_json(client: &reqwest::Client, url: &str, key: &str) -> Value {
    client.get(format!("{url}/api/billing/wallet")).bearer_auth(key).send().await.unwrap().json().await.unwrap()
}

/// The wallet in millicredits: (balance, reserved).
pub async fn wallet(client: &reqwest::Client, url: &str, key: &str) -> (i64, i64) {
    let wallet = wallet_json(client, url, key).await;
    let milli = |v: &Value| (v.as_f64().unwrap() * 1000.0).round() as i64;
    (milli(&wallet["balance"]), milli(&wallet["reserved"]))
}
