//! Black-box tests: the real binary on port 0, driven from outside, including the official OpenAI Python SDK.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::process::{start, start_with, wallet, Running};
use common::python;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn chat(stream: bool) -> Value {
    json!({"model": "sim-chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 12, "stream": stream})
}

#[tokio::test]
async fn first_start_prints_a_key_that_chats_and_streams() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path());
    let key = gateway.key.clone().expect("first start prints a key");
    let client = reqwest::Client::new();
    let whole: Value = client
        .post(format!("{}/api/v1/task", gateway.url))
        .bearer_auth(&key)
        .json(&chat(false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(whole["object"], "task.completion");
    assert_eq!(whole["usage"]["completion_tokens"], 12);
    let text = client
        .post(format!("{}/api/v1/task", gateway.url))
        .header("x-api-key", &key)
        .json(&chat(true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    drop(gateway);
    // A restart on the same data directory prints no new key, and the old one still works.
    let again = start(dir.path());
    assert!(again.key.is_none());
    let response =
        client.post(format!("{}/api/v1/task", again.url)).bearer_auth(&key).json(&chat(false)).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn sigterm_lets_a_stream_in_flight_finish() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = start(dir.path());
    let key = gateway.key.clone().unwrap();
    let client = reqwest::Client::new();
    // 12 tokens at 40 per second: about 300 ms of streaming.
    let mut response =
        client.post(format!("{}/api/v1/task", gateway.url)).bearer_auth(&key).json(&chat(true)).send().await.unwrap();
    let mut body = String::from_utf8(response.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    let status = Command::new("kill").args(["-TERM", &gateway.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    while let Some(chunk) = response.chunk().await.unwrap() {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(body.trim_end().ends_with("data: [DONE]"), "stream cut by shutdown: {body}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(exit) = gateway.child.try_wait().unwrap() {
            assert!(exit.success(), "gateway exited with {exit}");
            break;
        }
        assert!(Instant::now() < deadline, "gateway did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// With `server.drain_secs`, SIGTERM first turns `/readyz` to 503 while the gateway serves on (a load balancer
/// takes it out of rotation), then it stops accepting and exits.
#[tokio::test]
async fn sigterm_drains_before_it_stops_accepting() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = start_with(dir.path(), &[("SWITCHYARD__SERVER__DRAIN_SECS", "2".to_string())]);
    let key = gateway.key.clone().unwrap();
    let client = reqwest::Client::new();
    let ready = |client: &reqwest::Client| client.get(format!("{}/readyz", gateway.url)).send();
    assert_eq!(ready(&client).await.unwrap().status(), 200);
    let status = Command::new("kill").args(["-TERM", &gateway.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let signalled = Instant::now();
    let mut draining = None;
    while signalled.elapsed() < Duration::from_secs(1) {
        let answer = ready(&client).await.unwrap();
        if answer.status() == 503 {
            draining = Some(answer.json::<serde_json::Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let draining = draining.expect("/readyz answers 503 once the gateway is stopping");
    assert_eq!(draining["error"]["code"], "overloaded", "{draining}");
    // Still serving while it drains, on a new connection too.
    let fresh = reqwest::Client::new();
    let served = fresh.post(format!("{}/api/v1/task", gateway.url)).bearer_auth(&key).json(&chat(false)).send();
    assert_eq!(served.await.unwrap().status(), 200);
    assert!(gateway.child.try_wait().unwrap().is_none(), "still running during the drain");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(exit) = gateway.child.try_wait().unwrap() {
            assert!(exit.success(), "gateway exited with {exit}");
            break;
        }
        assert!(Instant::now() < deadline, "gateway did not exit after its drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(signalled.elapsed() >= Duration::from_secs(2), "it served out its drain first");
}

#[test]
fn check_config_accepts_the_defaults_and_names_unknown_keys() {
    let ok = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check-config")
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let listing = String::from_utf8_lossy(&ok.stdout);
    assert!(listing.contains("sim-chat") && listing.contains("available (simulator)"), "{listing}");
    assert!(listing.contains("unavailable: set OPENAI_API_KEY"), "{listing}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:1\"\nlisen = \"typo\"\n").unwrap();
    let bad =
        Command::new(env!("CARGO_BIN_EXE_switchyard")).arg("check-config").arg("--config").arg(&file).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("lisen"), "{}", String::from_utf8_lossy(&bad.stderr));
    let env_bad = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check-config")
        .env("SWITCHYARD__SERVER__NOPE", "1")
        .output()
        .unwrap();
    assert!(!env_bad.status.success());
    assert!(String::from_utf8_lossy(&env_bad.stderr).contains("nope"));
}

/// The Python interpreter that has the `openai` package: `make test` sets one up under `.cache/venv`.
#[tokio::test]
async fn the_official_openai_python_sdk_works_unchanged() {
    let Some(python) = python() else {
        assert!(std::env::var_os("CI").is_none(), "CI must run the OpenAI SDK test: run `make test`");
        eprintln!("SKIPPED: the OpenAI Python SDK test needs `make test` (it installs the SDK into .cache/venv)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path());
    run_script(&python, "openai_sdk.py", &gateway).await;
}

/// Runs a script of `tests/python` against a running gateway; its failure fails the test with its output.
async fn run_script(python: &Path, name: &str, gateway: &Running) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(name);
    let output = tokio::process::Command::new(python)
        .arg(script)
        .env("SWITCHYARD_URL", &gateway.url)
        .env("SWITCHYARD_KEY", gateway.key.as_deref().unwrap())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{name} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[path = "mock/media.rs"]
mod media_mock;

#[tokio::test]
async fn the_official_openai_python_sdk_generates_images_unchanged() {
    let Some(python) = python() else {
        assert!(std::env::var_os("CI").is_none(), "CI must run the OpenAI SDK test: run `make test`");
        eprintln!("SKIPPED: the OpenAI Python SDK test needs `make test` (it installs the SDK into .cache/venv)");
        return;
    };
    let bfl = media_mock::MediaMock::start().await.unwrap();
    bfl.set_pending_polls(1);
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("BFL_BASE_URL", bfl.url()),
        ("BFL_API_KEY", "bfl-test".to_owned()),
        ("SWITCHYARD__UPSTREAM__POLL_INTERVAL_MS", "5".to_owned()),
    ];
    let gateway = start_with(dir.path(), &env);
    run_script(&python, "openai_images.py", &gateway).await;
    assert!(bfl.calls("/v1/flux-schnell") >= 2);
}

#[tokio::test]
async fn the_official_openai_python_sdk_speaks_and_transcribes_unchanged() {
    let Some(python) = python() else {
        assert!(std::env::var_os("CI").is_none(), "CI must run the OpenAI SDK test: run `make test`");
        eprintln!("SKIPPED: the OpenAI Python SDK test needs `make test` (it installs the SDK into .cache/venv)");
        return;
    };
    let eleven = media_mock::MediaMock::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = [("ELEVENLABS_BASE_URL", eleven.url()), ("ELEVENLABS_API_KEY", "xi-test".to_owned())];
    let gateway = start_with(dir.path(), &env);
    run_script(&python, "openai_audio.py", &gateway).await;
    assert_eq!(eleven.calls("/v1/text-to-speech"), 2);
    assert_eq!(eleven.calls("/v1/speech-to-text"), 2);
}

/// The embedding model files `make setup` fetches, or `None` (skipped, said plainly) outside CI when missing.
fn models_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/models");
    switchyard_actors::embed::EmbeddingFiles::for_tests(&dir).map(|_| dir)
}

fn embeddings_env(models: &Path) -> [(&'static str, String); 1] {
    [("SWITCHYARD__EMBEDDINGS__CACHE_DIR", models.to_string_lossy().into_owned())]
}

#[tokio::test]
async fn the_official_openai_python_sdk_embeds_unchanged() {
    let (Some(python), Some(models)) = (python(), models_dir()) else {
        assert!(std::env::var_os("CI").is_none(), "CI must run the OpenAI SDK test: run `make test`");
        eprintln!(
            "SKIPPED: the embeddings SDK test needs `make test` (the SDK in .cache/venv, the model in .cache/models)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let gateway = start_with(dir.path(), &embeddings_env(&models));
    run_script(&python, "openai_embeddings.py", &gateway).await;
}

/// Runs `switchyard index`; answers (success, stdout, stderr).
fn index_command(gateway: &Running, file: &Path, extra: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["index", "--model", "all-minilm-l6-v2", "--scope", "cli", "--batch", "8", "--url", &gateway.url])
        .args(extra)
        .arg(file)
        .env("SWITCHYARD_API_KEY", gateway.key.as_deref().unwrap())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn search_cli_scope(client: &reqwest::Client, gateway: &Running, key: &str, query: &str) -> Value {
    let body =
        json!({"model": "all-minilm-l6-v2", "mode": "search", "scope": "cli", "input": {"query": query, "top_k": 1}});
    client
        .post(format!("{}/api/runs", gateway.url))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `switchyard index` resumes where it stopped (and after lines are appended), charges each document once, refuses
/// a file changed where it was indexed; the index survives the gateway being killed.
#[tokio::test]
async fn the_index_command_resumes_and_the_index_survives_a_kill() {
    let Some(models) = models_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let gateway = start_with(&data, &embeddings_env(&models));
    let key = gateway.key.clone().unwrap();
    // No pooled connections: the index runs take seconds, and a kept-alive connection can be closed by the gateway
    // just as it is reused.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let corpus =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus.jsonl")).unwrap();
    let lines: Vec<&str> = corpus.lines().collect();
    let file = dir.path().join("docs.jsonl");
    std::fs::write(&file, lines[..20].join("\n") + "\n").unwrap();
    let (balance, _) = wallet(&client, &gateway.url, &key).await;

    let (ok, out, err) = index_command(&gateway, &file, &[]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("indexed 20 documents"), "{out}");
    // Lines appended later are indexed by the next run, the first twenty are not sent again.
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let (ok, out, err) = index_command(&gateway, &file, &[]);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("20 documents were indexed by an earlier run") && out.contains("indexed 20 documents"),
        "{out}"
    );
    let (ok, out, _) = index_command(&gateway, &file, &[]);
    assert!(ok && out.contains("indexed 0 documents"), "{out}");
    // Every chunk was charged once: 0.001 credits each.
    let chunks: usize = lines
        .iter()
        .map(|l| {
            let doc: Value = serde_json::from_str(l).unwrap();
            switchyard_actors::chunk::chunk_text(doc["text"].as_str().unwrap(), 1000, 200).len()
        })
        .sum();
    assert_eq!(balance - wallet(&client, &gateway.url, &key).await.0, chunks as i64);

    // A file changed where it was indexed is refused, unless --restart.
    std::fs::write(&file, lines[1..].join("\n") + "\n").unwrap();
    let (ok, _, err) = index_command(&gateway, &file, &[]);
    assert!(!ok && err.contains("--restart"), "{err}");
    // A bad line stops the run and names the line; nothing is sent.
    std::fs::write(&file, lines.join("\n") + "\nnot json\n").unwrap();
    let (ok, _, err) = index_command(&gateway, &file, &[]);
    assert!(!ok && err.contains("line 41"), "{err}");

    // Killed (SIGKILL), then started again on the same data: everything indexed is still there.
    drop(gateway);
    let restarted = start_with(&data, &embeddings_env(&models));
    let found =
        search_cli_scope(&client, &restarted, &key, "How do green plants make their own food out of sunshine?").await;
    assert_eq!(found["output"]["matches"][0]["id"], "photosynthesis", "{found}");
    let listed: Value = client
        .get(format!("{}/api/knowledge-bases", restarted.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"][0]["documents"], 40, "{listed}");
    assert_eq!(listed["data"][0]["points"], chunks, "{listed}");
}

/// A realtime voice session (claude-3-haiku, composed) with one response finished and a second under way when the
/// gateway is SIGKILLed: after a restart on the same data, the finished response's parts are all recorded as they
/// were reported, no hold is left, and the wallet is the credits less exactly what the records charge.
#[tokio::test]
async fn a_gateway_killed_mid_voice_session_keeps_every_finished_response_and_no_hold() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let chat = common::mock::MockServer::start(common::mock::MockConfig {
        reply_words: 200,
        token_interval: Duration::from_millis(20),
        ..common::mock::MockConfig::default()
    })
    .await
    .unwrap();
    let media = media_mock::MediaMock::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("ANTHROPIC_BASE_URL", chat.url()),
        ("ANTHROPIC_API_KEY", "test-anthropic".to_owned()),
        ("ELEVENLABS_BASE_URL", media.url()),
        ("ELEVENLABS_API_KEY", "xi-test".to_owned()),
    ];
    let mut gateway = start_with(dir.path(), &env);
    let key = gateway.key.clone().unwrap();
    let client = reqwest::Client::new();
    let (initial, _) = wallet(&client, &gateway.url, &key).await;
    let url = format!("{}/v1/realtime?model=claude-3-haiku&token={key}", gateway.url.replacen("http", "ws", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.unwrap().unwrap().unwrap();
    assert!(first.to_text().unwrap().contains("session.created"), "{first:?}");
    let send = |event: Value| Message::text(event.to_string());
    let item = json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "Tell me a long story."}]}});
    socket.send(send(item)).await.unwrap();
    socket.send(send(json!({"type": "response.create", "response": {"max_output_tokens": 5}}))).await.unwrap();
    let finished = loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.unwrap().unwrap().unwrap();
        let Message::Text(text) = frame else { continue };
        let event: Value = serde_json::from_str(text.as_str()).unwrap();
        if event["type"] == "response.done" {
            break event;
        }
    };
    assert_eq!(finished["response"]["status"], "completed", "{finished}");
    let parts: Vec<(String, i64)> = finished["response"]["switchyard"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (p["id"].as_str().unwrap().to_owned(), (p["credits_charged"].as_f64().unwrap() * 1000.0).round() as i64)
        })
        .collect();
    assert_eq!(parts.len(), 2, "{finished}");
    // The second response: killed once its first audio arrived.
    socket.send(send(json!({"type": "response.create"}))).await.unwrap();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.unwrap().unwrap().unwrap();
        let Message::Text(text) = frame else { continue };
        if text.as_str().contains("response.output_audio.delta") {
            break;
        }
    }
    let status = Command::new("kill").args(["-KILL", &gateway.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let _ = gateway.child.wait();
    let restarted = start_with(dir.path(), &env);
    let (balance, reserved) = wallet(&client, &restarted.url, &key).await;
    assert_eq!(reserved, 0, "a hold survived the crash");
    let db =
        sqlx::SqlitePool::connect(&format!("sqlite://{}/switchyard.db?mode=ro", dir.path().display())).await.unwrap();
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT id, credits_milli FROM usage").fetch_all(&db).await.unwrap();
    let recorded: std::collections::HashMap<String, i64> = rows.iter().cloned().collect();
    for (id, credits) in &parts {
        assert_eq!(
            recorded.get(id),
            Some(credits),
            "part {id} reported {credits} but its record is missing or differs"
        );
    }
    let spent: i64 = rows.iter().map(|r| r.1).sum();
    assert_eq!(initial - balance, spent, "the wallet does not add up after the crash");
}

/// A request with an `Idempotency-Key` under way when the gateway is SIGKILLed: after a restart on the same data,
/// the key is free again (not "still in progress" for 24 hours), the retry runs and is then replayed, and the wallet
/// is charged once, for the retry (the killed call was never settled).
#[tokio::test]
async fn a_key_left_running_by_a_killed_gateway_is_free_after_a_restart() {
    let chat = common::mock::MockServer::start(common::mock::MockConfig {
        ttft: Duration::from_secs(5),
        ..common::mock::MockConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = [("ANTHROPIC_BASE_URL", chat.url()), ("ANTHROPIC_API_KEY", "test-anthropic".to_owned())];
    let mut gateway = start_with(dir.path(), &env);
    let key = gateway.key.clone().unwrap();
    let client = reqwest::Client::new();
    let (initial, _) = wallet(&client, &gateway.url, &key).await;
    let body = json!({"model": "claude-3-haiku", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8});
    let send = |url: &str| {
        client
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(&key)
            .header("idempotency-key", "order-1")
            .json(&body)
            .send()
    };
    let running = tokio::spawn(send(&gateway.url));
    let deadline = Instant::now() + Duration::from_secs(10);
    while chat.chat_bodies().is_empty() {
        assert!(Instant::now() < deadline, "the call never reached the upstream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let busy = send(&gateway.url).await.unwrap();
    assert_eq!(busy.status(), 409, "the key is held while its first request runs");
    let status = Command::new("kill").args(["-KILL", &gateway.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let _ = gateway.child.wait();
    assert!(running.await.unwrap().is_err(), "the killed call got no answer");
    chat.set_config(common::mock::MockConfig::default());
    let restarted = start_with(dir.path(), &env);
    let retry = send(&restarted.url).await.unwrap();
    let status = retry.status();
    let first: Value = retry.json().await.unwrap();
    assert_eq!(status, 200, "the retry runs: {first}");
    let replay = send(&restarted.url).await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.json::<Value>().await.unwrap(), first);
    let (balance, reserved) = wallet(&client, &restarted.url, &key).await;
    assert_eq!(reserved, 0);
    // What one such call costs, asked without a key: the killed call, its retry and the replay cost that, once.
    let plain = client.post(format!("{}/v1/chat/completions", restarted.url)).bearer_auth(&key).json(&body);
    assert_eq!(plain.send().await.unwrap().status(), 200);
    let (after, _) = wallet(&client, &restarted.url, &key).await;
    assert!(balance - after > 0);
    assert_eq!(initial - balance, balance - after, "charged once");
}
