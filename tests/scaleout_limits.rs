//! Three gateways on one PostgreSQL and one Redis hold a key's plan exactly: N parallel calls spread over them are
//! admitted exactly up to the requests per minute, and exactly up to the concurrency, with the API.md 429 for the
//! rest. A Redis that cannot be reached at start is a clear startup error. SKIPPED without the servers; under
//! `make test` they are always there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::mock::{MockConfig, MockServer};
use common::{mock_env, Gateway};
use std::time::Duration;

/// Three gateways on a new database and a Redis prefix of the test's own; the first bootstrapped the workspace.
async fn three(test: &str, mock: &MockServer) -> Option<Vec<Gateway>> {
    let url = common::backends::postgres_database(test).await?;
    let (redis, prefix) = common::backends::redis_url(test)?;
    let mut gateways = Vec::new();
    for i in 0..3 {
        let (db, redis, prefix) = (url.clone(), redis.clone(), prefix.clone());
        let tweak = move |c: &mut switchyard::config::Config| {
            c.database.url = db;
            c.redis.url = redis;
            c.redis.prefix = prefix;
        };
        gateways.push(match i {
            0 => Gateway::start(mock_env(mock), tweak).await,
            _ => Gateway::start_existing(mock_env(mock), tweak).await,
        });
    }
    Some(gateways)
}

/// A chat completion through `gw`: its status and error code.
async fn chat(gw: &Gateway, key: &str) -> (u16, String) {
    let (status, body) = gw.chat(key).await;
    (status, body["error"]["code"].as_str().unwrap_or_default().to_owned())
}

/// A key made through the first gateway, known to all three now (each reads the keys every second by itself).
async fn key(gws: &[Gateway], rpm: u32, concurrent: u32) -> (String, String) {
    let made = gws[0].workspace("1000", rpm, concurrent, 100_000_000).await;
    for gw in gws {
        gw.state.keys.refresh(&gw.state.store).await.unwrap();
    }
    made
}

fn count(answers: &[(u16, String)], status: u16, code: &str) -> usize {
    answers.iter().filter(|(s, c)| *s == status && c == code).count()
}

#[actix_web::test]
async fn requests_per_minute_hold_exactly_over_three_gateways() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let Some(gws) = three("limits_rpm", &mock).await else { return };
    let (_, key) = key(&gws, 20, 1_000).await;
    let answers = futures::future::join_all((0..60).map(|i| chat(&gws[i % 3], &key))).await;
    assert_eq!(count(&answers, 200, ""), 20, "exactly the plan's 20 requests per minute: {answers:?}");
    assert_eq!(count(&answers, 429, "rate_limit_exceeded"), 40, "{answers:?}");
}

#[actix_web::test]
async fn concurrency_holds_exactly_over_three_gateways() {
    // Each answer takes 3 s, so every call below arrives while the first ones are still running.
    let mock = MockServer::start(MockConfig { ttft: Duration::from_secs(3), ..MockConfig::default() }).await.unwrap();
    let Some(gws) = three("limits_concurrency", &mock).await else { return };
    let (ws, key) = key(&gws, 1_000, 3).await;
    let answers = futures::future::join_all((0..15).map(|i| chat(&gws[i % 3], &key))).await;
    assert_eq!(count(&answers, 200, ""), 3, "exactly the plan's 3 at once: {answers:?}");
    assert_eq!(count(&answers, 429, "concurrency_limit_exceeded"), 12, "{answers:?}");
    // The slots came back: three more are served, through any gateway.
    let mut served = 0;
    for attempt in 0..3 {
        let answers = futures::future::join_all((0..3).map(|i| chat(&gws[(i + attempt) % 3], &key))).await;
        served = count(&answers, 200, "");
        if served == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(served, 3);
    assert_eq!(gws[1].usage(&ws).await.len(), 6, "one record per call served");
}

#[actix_web::test]
async fn an_unreachable_redis_is_a_clear_startup_error() {
    let mut config = common::test_config();
    let dir = tempfile::tempdir().unwrap();
    config.server.data_dir = dir.path().to_path_buf();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    config.redis.url = format!("redis://:sesame@127.0.0.1:{port}");
    let catalogue = config.catalogue().unwrap();
    let built = switchyard::state::AppState::build(config, catalogue, &|_: &str| None).await;
    let error = built.err().expect("the gateway does not start without its Redis");
    assert!(error.contains("cannot reach Redis at redis://:***@127.0.0.1"), "{error}");
}
