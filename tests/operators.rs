//! The operators' view against a real Prometheus (Debian's `prometheus`): it scrapes a gateway every second while
//! a little mixed traffic runs (whole and streamed chat, refusals of every kind, a failing upstream with retries,
//! fallbacks and an open circuit, a cut stream, a task run, vectors), evaluates the alert rules, and then every
//! PromQL expression of every dashboard is asked of it through the HTTP API: each must parse, and each panel the
//! traffic fed must return data. Also: the alert rules' own unit tests (`promtool test rules`), and the dashboards'
//! layout checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::mock::{Fault, MockConfig, MockServer};
use common::{mock_env, models_dir, with_embeddings, Gateway};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Panels the test's traffic does not feed, and why. Everything else must return data.
const NOT_FED: &[(&str, &str)] = &[];

/// `None` (and a SKIPPED line) when the tool is missing outside CI; in CI `make test` installs it.
fn tool(name: &str) -> Option<()> {
    if Command::new(name).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok() {
        return Some(());
    }
    assert!(std::env::var_os("CI").is_none(), "CI must have {name}: `make test` installs it");
    eprintln!("SKIPPED: {name} is not installed (`make test` installs it)");
    None
}

struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts Prometheus scraping `target` (host:port) every second, with the shipped alert rules evaluated every
/// second.
async fn prometheus(target: &str) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {ROOT}/config/alerts.yml\n\
             scrape_configs:\n  - job_name: switchyard\n    static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    )
    .unwrap();
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut prometheus =
            Prometheus { child, url: format!("http://127.0.0.1:{port}"), _dir: tempfile::tempdir().unwrap() };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if prometheus.child.try_wait().unwrap().is_some() {
                break;
            }
            let ready = client.get(format!("{}/-/ready", prometheus.url)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                prometheus._dir = dir;
                return prometheus;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(prometheus);
    }
    panic!(
        "prometheus did not start: {}",
        std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
    );
}

async fn api(prometheus: &Prometheus, path: &str, query: &[(&str, &str)]) -> Value {
    let response = reqwest::Client::new().get(format!("{}{path}", prometheus.url)).query(query).send().await.unwrap();
    response.json().await.unwrap()
}

/// Every dashboard expression, variables set to match anything: (dashboard, panel, expr).
fn dashboard_queries() -> Vec<(String, String, String)> {
    let output =
        Command::new("python3").arg(format!("{ROOT}/grafana/check_dashboards.py")).arg("--list").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let listed: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    listed
        .iter()
        .map(|q| {
            let text = |k: &str| q[k].as_str().unwrap().to_owned();
            (text("dashboard"), text("panel"), text("expr"))
        })
        .collect()
}

async fn chat(gw: &Gateway, key: &str, model: &str, stream: bool) -> u16 {
    let body =
        json!({"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": stream, "max_tokens": 16});
    let response = gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth(key).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    let _ = response.bytes().await;
    status
}

/// A little of everything an operator watches.
async fn traffic(gw: &Gateway, mock: &MockServer) {
    let key = gw.key.clone();
    for stream in [false, true, false, true] {
        assert_eq!(chat(gw, &key, "gpt-4", stream).await, 200);
    }
    // The upstream fails twice (a retry, then the fallback), breaks a stream, then fails until the circuit opens.
    // Which model takes each depends on the circuit the first round left, so the answer may be a failure too.
    let served_or_failed = [200, 502, 503];
    mock.set_fault(Fault::Status { status: 500, retry_after: None }, Some(2));
    assert!(served_or_failed.contains(&chat(gw, &key, "gpt-4", false).await));
    mock.set_fault(Fault::CutStream { after_tokens: 3 }, Some(1));
    assert_eq!(chat(gw, &key, "gpt-4", true).await, 200);
    mock.set_fault(Fault::Status { status: 503, retry_after: None }, Some(4));
    assert!(served_or_failed.contains(&chat(gw, &key, "gpt-4", false).await));
    mock.set_fault(Fault::None, None);
    // Open circuits let a probe through after `breaker_open_secs` (1 s here), which closes them again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Refusals: no key, a bad key, a rate limit, an empty wallet, an unknown model.
    let anonymous = gw.client.post(format!("{}/api/v1/task", gw.url)).json(&json!({"model": "gpt-4"}));
    assert_eq!(anonymous.send().await.unwrap().status(), 401);
    assert_eq!(chat(gw, "sk-nobody", "gpt-4", false).await, 401);
    let (_, slow) = gw.workspace("100", 1, 4, 100_000).await;
    assert_eq!(chat(gw, &slow, "gpt-4", false).await, 200);
    assert_eq!(chat(gw, &slow, "gpt-4", false).await, 429);
    let (_, poor) = gw.workspace("0.001", 100, 4, 100_000).await;
    assert_eq!(chat(gw, &poor, "gpt-4", false).await, 402);
    assert_eq!(chat(gw, &key, "no-such-model", false).await, 400);
    // Task runs, billed to their task and revision: one on the simulator, one whose model fails.
    let run = json!({"task_input": {"text": "The meeting moved to Tuesday.", "sentences": 1}});
    let ran = gw.post("/api/v1/tasks/summarize/run?revision_tag=demo").json(&run).send().await.unwrap();
    assert_eq!(ran.status(), 200);
    mock.set_fault(Fault::Status { status: 500, retry_after: None }, Some(2));
    let ran = gw.post("/api/v1/tasks/summarize/run?revision_tag=stable").json(&run).send().await.unwrap();
    // Served by the fallback, or (the circuit already open, the fallback failing) refused: not `ok` either way.
    assert!([200, 503].contains(&ran.status().as_u16()), "{}", ran.status());
    mock.set_fault(Fault::None, None);
    // Vectors, when the model files are here (they are in CI).
    if gw.state.config.embeddings.cache_dir.is_empty() {
        return;
    }
    let index = json!({"model": "all-minilm-l6-v2", "mode": "index", "scope": "ops",
        "input": {"documents": [{"id": "a", "text": "Prometheus scrapes the gateway."}]}});
    assert_eq!(gw.post("/api/runs").json(&index).send().await.unwrap().status(), 200);
    let search = json!({"model": "all-minilm-l6-v2", "mode": "search", "scope": "ops", "input": {"query": "scrape"}});
    assert_eq!(gw.post("/api/runs").json(&search).send().await.unwrap().status(), 200);
}

#[actix_web::test]
async fn a_real_prometheus_evaluates_every_dashboard_and_alert_expression() {
    if tool("prometheus").is_none() || tool("python3").is_none() {
        return;
    }
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let models = models_dir();
    let gw = Gateway::start(mock_env(&mock), |c| {
        c.pool.max_retries = 1;
        c.pool.retry_base_ms = 1;
        c.pool.breaker_failures = 3;
        c.pool.breaker_open_secs = 1;
        if let Some(dir) = &models {
            with_embeddings(c, dir);
        }
    })
    .await;
    let target = gw.url.trim_start_matches("http://").to_owned();
    let prometheus = prometheus(&target).await;
    // A scrape before the traffic, so counters born during it have a sample to rise from.
    wait_for_scrapes(&prometheus, 2).await;
    // Twice: a counter first seen in a scrape has no earlier sample to rise from, so `increase` over a range
    // shows only what the second round adds.
    traffic(&gw, &mock).await;
    wait_for_scrapes(&prometheus, 2).await;
    traffic(&gw, &mock).await;
    wait_for_scrapes(&prometheus, 3).await;

    let mut failures = Vec::new();
    let mut empty = Vec::new();
    let queries = dashboard_queries();
    assert!(queries.len() >= 100, "{} expressions", queries.len());
    for (dashboard, panel, expr) in &queries {
        let answer = api(&prometheus, "/api/v1/query", &[("query", expr)]).await;
        if answer["status"] != "success" {
            failures.push(format!("{dashboard} / {panel}: `{expr}`: {}", answer["error"]));
        } else if answer["data"]["result"].as_array().is_none_or(Vec::is_empty)
            && !NOT_FED.iter().any(|(p, _)| p == panel)
        {
            empty.push(format!("{dashboard} / {panel}: `{expr}`"));
        }
    }
    assert!(failures.is_empty(), "expressions Prometheus refused:\n{}", failures.join("\n"));
    assert!(empty.is_empty(), "panels with no data after the traffic:\n{}", empty.join("\n"));

    // Every alert rule is loaded and evaluates without error.
    let rules = api(&prometheus, "/api/v1/rules", &[]).await;
    let mut alerts = Vec::new();
    for group in rules["data"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            assert_eq!(rule["health"], "ok", "{rule}");
            alerts.push(rule["name"].as_str().unwrap().to_owned());
        }
    }
    for alert in ["SwitchyardDown", "SwitchyardHighErrorRatio", "SwitchyardCircuitOpen", "SwitchyardLedgerBehind"] {
        assert!(alerts.iter().any(|a| a == alert), "{alert} not loaded: {alerts:?}");
    }
    drop(prometheus);
    gw.stop().await;
}

/// Waits until Prometheus has scraped the gateway `n` more times (its `up` series gains samples).
async fn wait_for_scrapes(prometheus: &Prometheus, n: usize) {
    let count = || async {
        let answer =
            api(prometheus, "/api/v1/query", &[("query", "count_over_time(up{job=\"switchyard\"}[5m])")]).await;
        answer["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse::<usize>().ok()).unwrap_or(0)
    };
    let before = count().await;
    let started = Instant::now();
    while count().await < before + n {
        assert!(started.elapsed() < Duration::from_secs(60), "prometheus is not scraping the gateway");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    if tool("promtool").is_none() {
        return;
    }
    let output = Command::new("bash").arg(format!("{ROOT}/tests/alerts/check.sh")).arg(ROOT).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn dashboards_pass_their_layout_checks() {
    if tool("promtool").is_none() || tool("python3").is_none() {
        return;
    }
    assert!(Path::new(&format!("{ROOT}/grafana/provisioning/dashboards/switchyard.yml")).exists());
    let output = Command::new("python3").arg(format!("{ROOT}/grafana/check_dashboards.py")).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{text}");
}

#[actix_web::test]
async fn labels_that_callers_choose_are_bounded() {
    let gw = Gateway::start(common::pair::admin_env(), |c| c.metrics.max_workspaces = 1).await;
    let body = json!({"model": "sim-chat", "messages": [{"role": "user", "content": "hi"}], "reporting_group": "g"});
    let (first, first_key) = gw.workspace("100", 100, 4, 100_000).await;
    let (_, second_key) = gw.workspace("100", 100, 4, 100_000).await;
    for key in [&first_key, &second_key, &second_key] {
        let response = gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth(key).json(&body).send().await;
        assert_eq!(response.unwrap().status(), 200);
    }
    let made_up = reqwest::Method::from_bytes(b"BREW").unwrap();
    let _ = gw.client.request(made_up, format!("{}/api/v1/task", gw.url)).send().await.unwrap();
    let text = gw.client.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    for needle in [
        format!(r#"switchyard_calls_total{{model="sim-chat",status="ok",workspace="{first}"}} 1"#),
        r#"switchyard_calls_total{model="sim-chat",status="ok",workspace="_other"} 2"#.to_owned(),
        format!(r#"switchyard_wallet_balance_credits{{workspace="{first}"}}"#),
        r#"method="OTHER""#.to_owned(),
    ] {
        assert!(text.contains(&needle), "no {needle} in:\n{text}");
    }
    assert!(!text.contains("BREW"), "{text}");
    assert!(!text.contains(r#"switchyard_wallet_balance_credits{workspace="_other"}"#), "{text}");
    gw.stop().await;
}
