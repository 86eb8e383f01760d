//! The Grafana dashboard and Prometheus config shipped with the gateway refer only to metrics it really exports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Gateway;
use serde_json::{json, Value};
use std::collections::BTreeSet;

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("switchyard_") {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[actix_web::test]
async fn every_dashboard_query_names_an_exported_metric() {
    let gw = Gateway::start(Default::default(), |_| {}).await;
    let chat = json!({"model": "sim-chat", "messages": [{"role": "user", "content": "hi"}], "stream": true});
    let _ = gw.post("/api/v1/task").json(&chat).send().await.unwrap().text().await.unwrap();
    let whole = json!({"model": "sim-chat", "messages": [{"role": "user", "content": "hi"}]});
    let _ = gw.post("/api/v1/task").json(&whole).send().await.unwrap().text().await.unwrap();
    // A model without its provider key records an upstream error.
    let unavailable = json!({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]});
    let _ = gw.post("/api/v1/task").json(&unavailable).send().await.unwrap().text().await.unwrap();
    // A task run (the built-in example's simulator revision) records the per-revision metrics.
    let run = json!({"task_input": {"text": "A story.", "sentences": 1}});
    let ran = gw.post("/api/v1/tasks/summarize/run?revision_tag=demo").json(&run).send().await.unwrap();
    assert_eq!(ran.status(), 200);
    let exported = gw.client.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    let exported = metric_names(&exported);
    let root = env!("CARGO_MANIFEST_DIR");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/grafana/dashboards/switchyard-overview.json")).unwrap(),
    )
    .unwrap();
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queried.extend(metric_names(target["expr"].as_str().unwrap()));
        }
    }
    assert!(queried.len() >= 6);
    for name in &queried {
        // A histogram is exported as _bucket, _sum and _count.
        assert!(exported.contains(name), "dashboard queries {name}, which /metrics does not export");
    }
    gw.stop().await;
}

#[test]
fn prometheus_config_is_valid() {
    let Ok(output) = std::process::Command::new("promtool")
        .args(["check", "config", concat!(env!("CARGO_MANIFEST_DIR"), "/config/prometheus.yml")])
        .output()
    else {
        assert!(std::env::var_os("CI").is_none(), "CI must have promtool: `make test` installs it");
        eprintln!("SKIPPED: promtool is not installed (`make test` installs it)");
        return;
    };
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
}
