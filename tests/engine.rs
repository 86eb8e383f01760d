//! The actor core through the HTTP API: exact limits and money under concurrency, retries, circuit breakers,
//! fallbacks, stream billing, idempotency, supervision.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::mock::{Fault, MockConfig, MockServer};
use common::pair::{admin_env, chat, two_mock_env, CATALOGUE};
use common::{error_code, sse_data, Gateway};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn post(gw: &Gateway, key: &str, body: &Value) -> reqwest::Response {
    gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth(key).json(body).send().await.unwrap()
}

/// `n` identical chat requests at once.
async fn burst(gw: &Gateway, key: &str, n: usize) -> Vec<reqwest::Response> {
    let body = chat("flat", false);
    futures::future::join_all((0..n).map(|_| post(gw, key, &body))).await
}

#[actix_web::test]
async fn two_hundred_parallel_requests_against_a_limit_of_fifty_admit_fifty() {
    let gw = Gateway::with_catalogue(admin_env(), CATALOGUE, |_| {}).await;
    let (_, key) = gw.workspace("100000", 50, 1000, 10_000_000).await;
    let responses = burst(&gw, &key, 200).await;
    let ok = responses.iter().filter(|r| r.status() == 200).count();
    assert_eq!(ok, 50);
    let limited: Vec<_> = responses.into_iter().filter(|r| r.status() == 429).collect();
    assert_eq!(limited.len(), 150);
    let first = limited.into_iter().next().unwrap();
    assert!(first.headers().contains_key("retry-after"));
    assert_eq!(first.headers()["x-ratelimit-limit"], "50");
    assert_eq!(first.headers()["x-ratelimit-remaining"], "0");
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    let message = body["error"]["message"].as_str().unwrap();
    let reset = message.strip_prefix("Rate limit exceeded. Reset at ").unwrap();
    assert!(time::OffsetDateTime::parse(reset, &time::format_description::well_known::Rfc3339).is_ok(), "{message}");
    gw.stop().await;
}

#[actix_web::test]
async fn concurrency_limit_holds_exactly_and_frees_slots_when_requests_end() {
    let gw = Gateway::with_catalogue(admin_env(), CATALOGUE, |c| c.simulator.ttft_ms = 1500).await;
    let (_, key) = gw.workspace("100000", 100_000, 50, 10_000_000).await;
    let responses = burst(&gw, &key, 200).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 50, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 150);
    let rejected = responses.into_iter().find(|r| r.status() == 429).unwrap();
    assert_eq!(error_code(rejected).await.1, "concurrency_limit_exceeded");
    // The slots came back: the next request is admitted.
    assert_eq!(post(&gw, &key, &chat("flat", false)).await.status(), 200);
    gw.stop().await;
}

#[actix_web::test]
async fn tokens_per_minute_are_reserved_from_max_tokens() {
    let gw = Gateway::with_catalogue(admin_env(), CATALOGUE, |c| c.simulator.reply_tokens = 100).await;
    let (_, key) = gw.workspace("100000", 1000, 1000, 100).await;
    let mut body = chat("flat", false);
    body["max_tokens"] = json!(60);
    assert_eq!(post(&gw, &key, &body).await.status(), 200);
    let response = post(&gw, &key, &body).await;
    assert_eq!(error_code(response).await, (429, "token_limit_exceeded".to_owned()));
    gw.stop().await;
}

#[actix_web::test]
async fn a_wallet_for_k_requests_serves_exactly_k_of_4k_parallel() {
    const K: usize = 25;
    let gw = Gateway::with_catalogue(admin_env(), CATALOGUE, |_| {}).await;
    // Each request costs exactly 10 credits (10 completion tokens at 1 credit each).
    let (workspace, key) = gw.workspace(&(K * 10).to_string(), 100_000, 100_000, 100_000_000).await;
    let responses = burst(&gw, &key, 4 * K).await;
    let mut served = 0;
    let mut charged = 0.0;
    for response in responses {
        match response.status().as_u16() {
            200 => {
                served += 1;
                let body: Value = response.json().await.unwrap();
                charged += body["metadata"]["credits_charged"].as_f64().unwrap();
            }
            402 => {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "insufficient_credits");
                assert_eq!(body["error"]["message"], "Insufficient credits for this operation");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(served, K);
    assert_eq!(charged, (K * 10) as f64);
    assert_eq!(gw.wallet(&key).await, (0, 0));
    assert_eq!(gw.stored_balance(&workspace).await, 0);
    assert_eq!(gw.usage(&workspace).await.len(), K);
    gw.stop().await;
}

#[actix_web::test]
async fn every_authenticated_response_carries_rate_limit_headers() {
    let gw = Gateway::with_catalogue(admin_env(), CATALOGUE, |_| {}).await;
    let (_, key) = gw.workspace("1", 100, 10, 100_000).await;
    for path in ["/v1/models", "/api/billing/wallet", "/api/billing/usage/summary"] {
        let response = gw.client.get(format!("{}{path}", gw.url)).bearer_auth(&key).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        for header in ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"] {
            assert!(response.headers().contains_key(header), "{path} lacks {header}");
        }
    }
    let broke = post(&gw, &key, &chat("flat", false)).await;
    assert_eq!(broke.status(), 402);
    assert_eq!(broke.headers()["x-ratelimit-remaining"], "96");
    gw.stop().await;
}

#[actix_web::test]
async fn upstream_429_is_retried_after_its_retry_after_and_charged_once() {
    let primary = MockServer::start(MockConfig::default()).await.unwrap();
    let backup = MockServer::start(MockConfig::default()).await.unwrap();
    let gw = Gateway::with_catalogue(two_mock_env(&primary, &backup), CATALOGUE, |_| {}).await;
    let (workspace, key) = gw.workspace("100", 100, 10, 1_000_000).await;
    primary.set_fault(Fault::Status { status: 429, retry_after: Some(1) }, Some(1));
    let started = Instant::now();
    let response = post(&gw, &key, &chat("gpt", false)).await;
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After was not honoured");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["metadata"]["attempts"], 2);
    assert_eq!(body["metadata"]["fallback"]["used"], false);
    assert_eq!(primary.calls(), 2);
    let usage = gw.usage(&workspace).await;
    assert_eq!(usage.len(), 1);
    assert_eq!(gw.wallet(&key).await.0, 100_000 - usage[0].1);
    gw.stop().await;
}

#[actix_web::test]
async fn persistent_5xx_opens_the_circuit_and_the_fallback_serves() {
    let primary = MockServer::start(MockConfig::default()).await.unwrap();
    let backup = MockServer::start(MockConfig::default()).await.unwrap();
    let gw = Gateway::with_catalogue(two_mock_env(&primary, &backup), CATALOGUE, |c| {
        c.pool.max_retries = 1;
        c.pool.retry_base_ms = 1;
        c.pool.breaker_failures = 4;
        c.pool.breaker_open_secs = 60;
    })
    .await;
    let (_, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    primary.set_fault(Fault::Status { status: 500, retry_after: None }, None);
    for reason in ["upstream", "upstream", "circuit_open"] {
        let response = post(&gw, &key, &chat("gpt", false)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-switchyard-model"], "claude");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["model"], "claude");
        assert_eq!(
            body["metadata"]["fallback"],
            json!({"used": true, "reason": reason, "primary_model": "gpt", "model": "claude"})
        );
    }
    // Two requests of two attempts each opened the circuit: the third never reached the primary.
    assert_eq!(primary.calls(), 4);
    let engine = gw.state.engine();
    let circuits = engine.pool.circuits("openai");
    assert_eq!(circuits, vec![2]);
    let metrics = gw.client.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"switchyard_circuit_state{provider="openai",upstream="0"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"switchyard_fallbacks_total{from_model="gpt",reason="upstream",to_model="claude"} 2"#));
    assert!(
        metrics.contains(r#"switchyard_fallbacks_total{from_model="gpt",reason="circuit_open",to_model="claude"} 1"#)
    );
    gw.stop().await;
}

#[actix_web::test]
async fn stalls_and_resets_fall_back_before_the_first_byte_even_when_streaming() {
    let primary = MockServer::start(MockConfig::default()).await.unwrap();
    let backup = MockServer::start(MockConfig::default()).await.unwrap();
    let gw = Gateway::with_catalogue(two_mock_env(&primary, &backup), CATALOGUE, |c| {
        c.pool.max_retries = 0;
        c.upstream.first_byte_timeout_ms = 300;
    })
    .await;
    let (_, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    for fault in [Fault::Stall(Duration::from_secs(5)), Fault::Reset, Fault::MidStreamError { after_tokens: 0 }] {
        primary.set_fault(fault, Some(1));
        let response = post(&gw, &key, &chat("gpt", true)).await;
        assert_eq!(response.status(), 200);
        let data = sse_data(&response.text().await.unwrap());
        assert_eq!(data.last().unwrap(), "[DONE]");
        let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
        assert_eq!(last["metadata"]["fallback"]["used"], true, "{last}");
        assert_eq!(last["model"], "claude");
    }
    gw.stop().await;
}

#[actix_web::test]
async fn manual_fallback_goes_straight_to_the_backup() {
    let primary = MockServer::start(MockConfig::default()).await.unwrap();
    let backup = MockServer::start(MockConfig::default()).await.unwrap();
    let gw = Gateway::with_catalogue(two_mock_env(&primary, &backup), CATALOGUE, |_| {}).await;
    let (workspace, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    let response = gw
        .client
        .post(format!("{}/api/v1/task?use_fallback_model=true&reporting_group=beta", gw.url))
        .bearer_auth(&key)
        .json(&chat("gpt", false))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["metadata"]["fallback"],
        json!({"used": true, "reason": "manual", "primary_model": "gpt", "model": "claude"})
    );
    assert_eq!(body["metadata"]["reporting_group"], "beta");
    assert_eq!(primary.calls(), 0);
    let mut no_backup = chat("lonely", false);
    no_backup["use_fallback_model"] = json!(true);
    assert_eq!(error_code(post(&gw, &key, &no_backup).await).await, (400, "invalid_field".to_owned()));
    let summary: Value = gw
        .client
        .get(format!("{}/api/billing/usage/summary?group_by=reporting_group", gw.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(summary["data"][0]["key"], "beta");
    assert_eq!(summary["data"][0]["fallbacks"], 1);
    assert_eq!(gw.usage(&workspace).await.len(), 1);
    gw.stop().await;
}

#[actix_web::test]
async fn when_the_fallback_fails_too_the_caller_gets_502_and_pays_nothing() {
    let primary = MockServer::start(MockConfig::default()).await.unwrap();
    let backup = MockServer::start(MockConfig::default()).await.unwrap();
    let gw = Gateway::with_catalogue(two_mock_env(&primary, &backup), CATALOGUE, |c| c.pool.max_retries = 0).await;
    let (workspace, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    primary.set_fault(Fault::Status { status: 500, retry_after: None }, None);
    backup.set_fault(Fault::Status { status: 529, retry_after: None }, None);
    for stream in [false, true] {
        let response = post(&gw, &key, &chat("gpt", stream)).await;
        assert_eq!(error_code(response).await, (502, "provider_error".to_owned()));
    }
    assert_eq!(gw.settled(&key).await, (100_000, 0));
    for _ in 0..100 {
        if gw.usage(&workspace).await.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let usage = gw.usage(&workspace).await;
    assert_eq!(usage.len(), 2, "failed calls are recorded, for error rates");
    assert!(usage.iter().all(|(_, credits, status)| *credits == 0 && status == "error"));
    assert_eq!(gw.stored_balance(&workspace).await, 100_000);
    gw.stop().await;
}

#[actix_web::test]
async fn a_stream_cut_part_way_is_charged_for_what_was_sent() {
    let primary = MockServer::start(MockConfig::default()).await.unwrap();
    let backup = MockServer::start(MockConfig::default()).await.unwrap();
    let gw = Gateway::with_catalogue(two_mock_env(&primary, &backup), CATALOGUE, |_| {}).await;
    let (workspace, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    for fault in [Fault::CutStream { after_tokens: 3 }, Fault::MalformedChunk { after_tokens: 3 }] {
        primary.set_fault(fault, Some(1));
        let text = post(&gw, &key, &chat("gpt", true)).await.text().await.unwrap();
        let data = sse_data(&text);
        assert!(!data.contains(&"[DONE]".to_owned()));
        assert_eq!(data.iter().filter(|d| d.contains("\"error\"")).count(), 1);
    }
    let usage = gw.usage(&workspace).await;
    assert_eq!(usage.len(), 2);
    for (_, credits, status) in &usage {
        assert_eq!(status, "cut");
        assert!(*credits > 0, "a cut stream is charged for what was delivered");
    }
    let spent: i64 = usage.iter().map(|u| u.1).sum();
    assert_eq!(gw.wallet(&key).await, (100_000 - spent, 0));
    // No fallback after the first byte: the backup never saw a request.
    assert_eq!(backup.calls(), 0);
    gw.stop().await;
}

#[actix_web::test]
async fn a_client_that_leaves_mid_stream_is_charged_for_what_was_generated() {
    let primary = MockServer::start(MockConfig {
        reply_words: 400,
        token_interval: Duration::from_millis(5),
        ..Default::default()
    })
    .await
    .unwrap();
    let backup = MockServer::start(MockConfig::default()).await.unwrap();
    let gw = Gateway::with_catalogue(two_mock_env(&primary, &backup), CATALOGUE, |_| {}).await;
    let (workspace, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    let mut body = chat("gpt", true);
    body["max_tokens"] = json!(1000);
    let mut response = post(&gw, &key, &body).await;
    let _ = response.chunk().await.unwrap();
    let _ = response.chunk().await.unwrap();
    drop(response);
    let (balance, reserved) = gw.settled(&key).await;
    assert_eq!(reserved, 0);
    let mut usage = gw.usage(&workspace).await;
    for _ in 0..100 {
        if !usage.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        usage = gw.usage(&workspace).await;
    }
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].2, "abandoned");
    assert!(usage[0].1 > 0);
    assert_eq!(balance, 100_000 - usage[0].1);
    gw.stop().await;
}

#[actix_web::test]
async fn idempotency_key_replays_the_first_response_and_charges_once() {
    let gw = Gateway::with_catalogue(admin_env(), CATALOGUE, |_| {}).await;
    let (workspace, key) = gw.workspace("1000", 1000, 10, 1_000_000).await;
    let send = |body: Value, idem: &'static str| {
        gw.client
            .post(format!("{}/api/v1/task", gw.url))
            .bearer_auth(&key)
            .header("idempotency-key", idem)
            .json(&body)
            .send()
    };
    let first: Value = send(chat("flat", false), "order-1").await.unwrap().json().await.unwrap();
    let replay = send(chat("flat", false), "order-1").await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(first, replay);
    let other = send(chat("flat", true), "order-1").await.unwrap();
    assert_eq!(error_code(other).await, (409, "idempotency_conflict".to_owned()));
    // Streams replay too.
    let streamed = send(chat("flat", true), "order-2").await.unwrap().text().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = send(chat("flat", true), "order-2").await.unwrap().text().await.unwrap();
    assert_eq!(streamed, again);
    assert_eq!(gw.usage(&workspace).await.len(), 2);
    assert_eq!(gw.wallet(&key).await, (1_000_000 - 20_000, 0));
    gw.stop().await;
}

#[actix_web::test]
async fn billing_reads_are_confined_to_the_callers_workspace() {
    let gw = Gateway::with_catalogue(admin_env(), CATALOGUE, |_| {}).await;
    let (_, alice) = gw.workspace("100", 1000, 10, 1_000_000).await;
    let (_, bob) = gw.workspace("50", 1000, 10, 1_000_000).await;
    assert_eq!(post(&gw, &alice, &chat("flat", false)).await.status(), 200);
    let summary = |key: String, query: &'static str| {
        let request = gw.client.get(format!("{}/api/billing/usage/summary{query}", gw.url)).bearer_auth(key);
        async move { request.send().await.unwrap() }
    };
    let bobs: Value = summary(bob.clone(), "").await.json().await.unwrap();
    assert_eq!(bobs["total"]["requests"], 0);
    assert_eq!(gw.wallet(&bob).await, (50_000, 0));
    let alices: Value = summary(alice.clone(), "?group_by=day").await.json().await.unwrap();
    assert_eq!(alices["total"]["requests"], 1);
    assert_eq!(alices["total"]["credits"].as_f64(), Some(10.0));
    let by_key: Value = summary(alice.clone(), "?group_by=api_key&from=2020-01-01").await.json().await.unwrap();
    assert!(by_key["data"][0]["key"].as_str().unwrap().starts_with("key_"));
    for bad in ["?group_by=colour", "?from=yesterday", "?from=2030-01-02&to=2030-01-01"] {
        let response = summary(alice.clone(), bad).await;
        assert_eq!(error_code(response).await, (400, "invalid_field".to_owned()), "{bad}");
    }
    gw.stop().await;
}

#[actix_web::test]
async fn engine_parts_that_panic_are_repaired_and_serve_again() {
    let gw = Gateway::with_catalogue(admin_env(), CATALOGUE, |_| {}).await;
    let (_, key) = gw.workspace("1000", 1000, 10, 1_000_000).await;
    assert_eq!(post(&gw, &key, &chat("flat", false)).await.status(), 200);
    let engine = gw.state.engine();
    let principal = gw.state.keys.resolve(&key).unwrap();
    engine.sessions.crash(&principal.key_id);
    engine.ledger.crash();
    engine.pool.crash();
    for _ in 0..3 {
        assert_eq!(post(&gw, &key, &chat("flat", false)).await.status(), 200);
    }
    assert_eq!(gw.wallet(&key).await, (1_000_000 - 40_000, 0));
    let metrics = gw.client.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    for actor in ["session", "ledger", "pool"] {
        assert!(metrics.contains(&format!("switchyard_actor_restarts_total{{actor=\"{actor}\"}} 1")), "{actor}");
    }
    gw.stop().await;
}

/// The money invariant over a random mix of outcomes: what left the wallet is exactly what the usage records
/// say, no request is recorded twice, and the usage summary agrees with the wallet.
#[actix_web::test]
async fn money_adds_up_over_random_successes_failures_cuts_disconnects_retries_and_fallbacks() {
    let primary = MockServer::start(MockConfig { reply_words: 30, ..Default::default() }).await.unwrap();
    let backup = MockServer::start(MockConfig::default()).await.unwrap();
    let gw = Gateway::with_catalogue(two_mock_env(&primary, &backup), CATALOGUE, |c| {
        c.pool.retry_base_ms = 1;
        c.pool.breaker_failures = 1000;
    })
    .await;
    let (workspace, key) = gw.workspace("1000", 100_000, 100, 100_000_000).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut completed_ids = Vec::new();
    for round in 0..60 {
        let stream = rng.gen_bool(0.5);
        let case = rng.gen_range(0..7);
        primary.set_fault(Fault::None, None);
        backup.set_fault(Fault::None, None);
        match case {
            0 => {}
            1 => primary.set_fault(Fault::Status { status: 500, retry_after: None }, Some(1)),
            2 => primary.set_fault(Fault::Status { status: 503, retry_after: None }, None),
            3 => {
                primary.set_fault(Fault::Status { status: 500, retry_after: None }, None);
                backup.set_fault(Fault::Status { status: 500, retry_after: None }, None);
            }
            4 => primary.set_fault(Fault::CutStream { after_tokens: rng.gen_range(1..10) }, Some(1)),
            5 => primary.set_fault(Fault::MidStreamError { after_tokens: rng.gen_range(1..10) }, Some(1)),
            _ => {}
        }
        let body = chat(if rng.gen_bool(0.8) { "gpt" } else { "flat" }, stream);
        let mut response = post(&gw, &key, &body).await;
        if case == 6 && stream && response.status() == 200 {
            let _ = response.chunk().await.unwrap();
            drop(response);
            continue;
        }
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        if status == 200 && !stream {
            let body: Value = serde_json::from_str(&text).unwrap();
            completed_ids.push(body["id"].as_str().unwrap().to_owned());
        }
        assert!(matches!(status, 200 | 502), "round {round}: {status} {text}");
    }
    let (balance, reserved) = gw.settled(&key).await;
    assert_eq!(reserved, 0);
    // Let the detached writes (abandoned streams, failure records) land.
    let mut usage = gw.usage(&workspace).await;
    for _ in 0..100 {
        if gw.stored_balance(&workspace).await == balance {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    usage = if usage.len() < 60 { gw.usage(&workspace).await } else { usage };
    let spent: i64 = usage.iter().map(|u| u.1).sum();
    assert_eq!(1_000_000 - balance, spent, "the wallet and the usage records disagree");
    assert_eq!(gw.stored_balance(&workspace).await, balance, "the store and the ledger disagree");
    let mut ids: Vec<&String> = usage.iter().map(|u| &u.0).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), usage.len(), "a request was recorded twice");
    assert!(usage.len() <= 60);
    for id in &completed_ids {
        assert!(usage.iter().any(|u| &u.0 == id), "response {id} reported a cost but has no usage record");
    }
    let summary: Value = gw
        .client
        .get(format!("{}/api/billing/usage/summary", gw.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let summary_milli = (summary["total"]["credits"].as_f64().unwrap() * 1000.0).round() as i64;
    assert_eq!(summary_milli, spent);
    gw.stop().await;
}

/// The test configuration on a data directory of its own, and its catalogue.
fn config_in(dir: &tempfile::TempDir) -> (switchyard::config::Config, switchyard_actors::Catalogue) {
    let mut config = common::test_config();
    config.server.data_dir = dir.path().to_path_buf();
    let catalogue = config.catalogue().unwrap();
    (config, catalogue)
}

/// One data directory, one gateway: a second started on it while the first runs is refused with the reason, and
/// starts once the first has stopped.
#[actix_web::test]
async fn a_second_gateway_on_the_same_data_directory_is_refused() {
    use switchyard::state::AppState;
    let dir = tempfile::tempdir().unwrap();
    let (config, catalogue) = config_in(&dir);
    let none = |_: &str| None;
    let first = AppState::build(config.clone(), catalogue.clone(), &none).await.unwrap();
    let Err(refused) = AppState::build(config.clone(), catalogue.clone(), &none).await else {
        panic!("two gateways started on one data directory")
    };
    assert!(refused.contains("another gateway is running on the data directory"), "{refused}");
    drop(first);
    assert!(AppState::build(config, catalogue, &none).await.is_ok(), "free again once the first stopped");
}

/// Usage committed to the journal by a process that died before importing it is imported on the next start,
/// exactly once.
#[actix_web::test]
async fn the_journal_left_by_a_dead_process_is_imported_once_on_start() {
    use switchyard::state::AppState;
    use switchyard_actors::engine::journal::UsageJournal;
    use switchyard_actors::engine::ledger::UsageRecord;
    let dir = tempfile::tempdir().unwrap();
    let (config, catalogue) = config_in(&dir);
    let none = |_: &str| None;
    let (state, bootstrap) = AppState::build(config.clone(), catalogue.clone(), &none).await.unwrap();
    let key = bootstrap.unwrap().api_key;
    let workspace = state.keys.resolve(&key).unwrap().workspace_id;
    let before = state.store.balances().await.unwrap()[0].1;
    drop(state);
    let mut journal = UsageJournal::open(&dir.path().join("journal")).unwrap();
    let record = UsageRecord {
        id: "task_from_the_journal".into(),
        workspace_id: workspace.clone(),
        model: "sim-chat".into(),
        status: "ok".into(),
        credits_milli: 1234,
        ..Default::default()
    };
    journal.append(record).unwrap();
    drop(journal);
    for _ in 0..2 {
        let (state, _) = AppState::build(config.clone(), catalogue.clone(), &none).await.unwrap();
        let balances = state.store.balances().await.unwrap();
        assert_eq!(balances[0].1.milli(), before.milli() - 1234);
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT id FROM usage").fetch_all(state.store.sqlite_pool().unwrap()).await.unwrap();
        assert_eq!(rows, vec![("task_from_the_journal".to_owned(),)]);
    }
}

/// A client that gives up on a whole (non-streamed) answer: the upstream call still completes (actix-web does not
/// cancel a handler whose client left), so the answer that was generated is charged, once, and the hold and the
/// concurrency slot come back.
#[actix_web::test]
async fn a_client_that_leaves_before_a_whole_answer_is_charged_once_and_frees_its_slot() {
    let primary =
        MockServer::start(MockConfig { ttft: Duration::from_millis(500), ..Default::default() }).await.unwrap();
    let backup = MockServer::start(MockConfig::default()).await.unwrap();
    let gw = Gateway::with_catalogue(two_mock_env(&primary, &backup), CATALOGUE, |_| {}).await;
    let (workspace, key) = gw.workspace("100", 1000, 2, 1_000_000).await;
    let impatient = gw
        .client
        .post(format!("{}/api/v1/task", gw.url))
        .bearer_auth(&key)
        .timeout(Duration::from_millis(100))
        .json(&chat("gpt", false))
        .send()
        .await;
    assert!(impatient.is_err());
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (balance, reserved) = gw.settled(&key).await;
    assert_eq!(reserved, 0);
    let usage = gw.usage(&workspace).await;
    assert_eq!(usage.len(), 1);
    assert_eq!(balance, 100_000 - usage[0].1);
    let principal = gw.state.keys.resolve(&key).unwrap();
    let counters = gw.state.engine().sessions.inspect(&principal.key_id).await.unwrap();
    assert_eq!(counters.in_flight, 0);
    gw.stop().await;
}

/// Two base URLs for one provider: a retry goes to the other upstream, so a failing one costs no fallback.
#[actix_web::test]
async fn a_retry_moves_to_another_upstream_of_the_same_provider() {
    let broken = MockServer::start(MockConfig::default()).await.unwrap();
    let healthy = MockServer::start(MockConfig::default()).await.unwrap();
    let backup = MockServer::start(MockConfig::default()).await.unwrap();
    let mut env = two_mock_env(&broken, &backup);
    env.insert("OPENAI_BASE_URL".into(), format!("{}/v1,{}/v1", broken.url(), healthy.url()));
    env.insert("OPENAI_API_KEY".into(), "sk-one".into());
    let gw = Gateway::with_catalogue(env, CATALOGUE, |c| c.pool.retry_base_ms = 1).await;
    let (_, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    broken.set_fault(Fault::Status { status: 503, retry_after: None }, None);
    for _ in 0..4 {
        let body: Value = post(&gw, &key, &chat("gpt", false)).await.json().await.unwrap();
        assert_eq!(body["model"], "gpt", "{body}");
        assert_eq!(body["metadata"]["fallback"]["used"], false);
    }
    assert!(healthy.calls() >= 4);
    assert_eq!(backup.calls(), 0);
    gw.stop().await;
}
