//! The gateway with `database.url` naming PostgreSQL: it makes its schema, bootstraps a workspace there, serves
//! billed calls whose usage records and debits land in PostgreSQL, and a second gateway (another data directory) on
//! the same database knows the workspaces, keys and balances the first made. SKIPPED without a PostgreSQL server;
//! under `make test` one is always there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::mock::{MockConfig, MockServer};
use common::{mock_env, Gateway};
use serde_json::json;

#[actix_web::test]
async fn a_gateway_on_postgres_keeps_workspaces_keys_usage_and_money_there() {
    let Some(url) = common::backends::postgres_database("gateway").await else { return };
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let db = url.clone();
    let gw = Gateway::start(mock_env(&mock), move |c| c.database.url = db).await;
    assert_eq!(gw.state.store.engine(), "postgres");
    let (ws, key) = gw.workspace("10", 100, 10, 1_000_000).await;

    for _ in 0..3 {
        assert_eq!(chat(&gw, &key, "gpt-3.5-turbo").await, 200);
    }
    // A refused call (an unknown model): no record, nothing charged.
    assert_eq!(chat(&gw, &key, "no-such-model").await, 400);

    let records = gw.usage(&ws).await;
    assert_eq!(records.len(), 3, "{records:?}");
    let charged: i64 = records.iter().map(|(_, credits, _)| credits).sum();
    assert!(charged > 0);
    assert!(records.iter().all(|(_, _, status)| status == "ok"));
    assert_eq!(gw.stored_balance(&ws).await, 10_000 - charged, "the debits are in PostgreSQL");
    assert_eq!(gw.settled(&key).await, (10_000 - charged, 0));

    // The usage summary reads PostgreSQL.
    let summary: serde_json::Value = gw
        .client
        .get(format!("{}/api/billing/usage/summary?group_by=model", gw.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(summary["data"][0]["requests"], 3, "{summary}");

    // Another gateway, another data directory, the same database: it knows the workspace, its key and balance.
    let store = switchyard::store::Store::connect(Some(&url), tempfile::tempdir().unwrap().path()).await.unwrap();
    let workspace = store.workspace(&ws).await.unwrap().expect("the workspace is in PostgreSQL");
    assert_eq!(workspace.credits.milli(), 10_000 - charged);
    assert_eq!(store.keys(Some(&ws)).await.unwrap().len(), 1);
    let db = url.clone();
    let second = Gateway::start_existing(mock_env(&mock), move |c| c.database.url = db).await;
    assert_eq!(
        chat(&second, &key, "gpt-3.5-turbo").await,
        200,
        "the key made through the first gateway works on the second"
    );
    assert_eq!(second.usage(&ws).await.len(), 4);
}

/// A chat completion through `gw` with `key`: its status.
async fn chat(gw: &Gateway, key: &str, model: &str) -> u16 {
    let answer = gw
        .client
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]}))
        .send()
        .await
        .unwrap();
    answer.status().as_u16()
}

/// Three gateways on one database and one wallet: parallel calls spread over them are served while the wallet
/// can hold them and refused 402 after; nothing is overspent, nothing stays held, and the wallet is its credits less
/// exactly what the usage records charged, the same read through any of the three.
#[actix_web::test]
async fn three_gateways_share_one_wallet_exactly() {
    let Some(url) = common::backends::postgres_database("three_gateways").await else { return };
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let db = url.clone();
    let first = Gateway::start(mock_env(&mock), move |c| c.database.url = db).await;
    let (ws, key) = first.workspace("5", 100_000, 1_000, 100_000_000).await;
    let mut gateways = vec![first];
    for _ in 0..2 {
        let db = url.clone();
        gateways.push(Gateway::start_existing(mock_env(&mock), move |c| c.database.url = db).await);
    }
    let calls = (0..60).map(|i| chat(&gateways[i % 3], &key, "gpt-3.5-turbo"));
    let statuses = futures::future::join_all(calls).await;
    let served = statuses.iter().filter(|s| **s == 200).count();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 402), "{statuses:?}");
    assert!(served > 0 && served < 60, "the wallet runs out part way: {served} served");

    let records = gateways[2].usage(&ws).await;
    assert_eq!(records.len(), served, "one record per call served");
    let charged: i64 = records.iter().map(|(_, credits, _)| credits).sum();
    for gw in &gateways {
        assert_eq!(gw.settled(&key).await, (5_000 - charged, 0), "every gateway reads the same wallet");
    }
    assert!(5_000 - charged >= 0, "never overspent");
    assert_eq!(gateways[0].stored_balance(&ws).await, 5_000 - charged);
}

/// A browser session token minted through one gateway is good on another (the signing keys are in the database),
/// and once revoked through one it is refused by the other within a second or two (each reads the database every
/// `database.poll_secs`).
#[actix_web::test]
async fn a_session_token_works_on_every_gateway_and_a_revocation_reaches_them_all() {
    let Some(url) = common::backends::postgres_database("sessions").await else { return };
    changes_reach_every_gateway(url, None).await;
}

/// The same with Redis: a change is told to the other gateway at once (PUBLISH), so it arrives though neither reads
/// the database again for an hour.
#[actix_web::test]
async fn with_redis_a_key_or_revocation_reaches_every_gateway_without_waiting_for_a_read() {
    let Some(url) = common::backends::postgres_database("notices").await else { return };
    let Some(redis) = common::backends::redis_url("notices") else { return };
    changes_reach_every_gateway(url, Some(redis)).await;
}

async fn changes_reach_every_gateway(url: String, redis: Option<(String, String)>) {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let tweak = move |db: String| {
        let redis = redis.clone();
        move |c: &mut switchyard::config::Config| {
            c.database.url = db;
            if let Some((redis, prefix)) = redis {
                (c.redis.url, c.redis.prefix, c.database.poll_secs) = (redis, prefix, 3_600);
            }
        }
    };
    let first = Gateway::start(mock_env(&mock), tweak(url.clone())).await;
    let second = Gateway::start_existing(mock_env(&mock), tweak(url)).await;
    let (ws, key) = first.workspace("100", 1_000, 10, 1_000_000).await;
    // A key made through the first reaches the second within a second or two.
    until(|| chat(&second, &key, "gpt-3.5-turbo"), 200, "the key made on the first never reached the second").await;
    let session: serde_json::Value = first
        .client
        .post(format!("{}/api/v1/sessions", first.url))
        .header("X-API-Key", &key)
        .json(&json!({"expires_in": 600}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = session["access_token"].as_str().expect("a token").to_owned();
    let id = session["id"].as_str().unwrap().to_owned();
    assert_eq!(chat(&second, &token, "gpt-3.5-turbo").await, 200, "minted on the first, good on the second");

    let revoked = first
        .client
        .delete(format!("{}/api/v1/sessions/{id}", first.url))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(chat(&first, &token, "gpt-3.5-turbo").await, 401, "refused at once where it was revoked");
    until(|| chat(&second, &token, "gpt-3.5-turbo"), 401, "the other gateway never learned of the revocation").await;

    // A key revoked through the first is refused by the second too.
    let keys: serde_json::Value = first
        .admin(reqwest::Method::GET, &format!("/admin/workspaces/{ws}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key_id = keys["keys"][0]["id"].as_str().expect("the workspace's key").to_owned();
    let revoked = first.admin(reqwest::Method::DELETE, &format!("/admin/keys/{key_id}")).send().await.unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(chat(&first, &key, "gpt-3.5-turbo").await, 401);
    until(|| chat(&second, &key, "gpt-3.5-turbo"), 401, "a key revoked on the first still works on the second").await;
}

/// Polls `status` (bounded, 5 s) until it answers `wanted`.
async fn until<F: std::future::Future<Output = u16>>(status: impl Fn() -> F, wanted: u16, failure: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while status().await != wanted {
        assert!(std::time::Instant::now() < deadline, "{failure}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `switchyard rotate-session-key` with `database.url` rotates the keys the gateways share in the database, keeping
/// the old one for verification: a token signed before still verifies with the new set.
#[actix_web::test]
async fn rotating_the_session_key_with_postgres_rotates_the_shared_keys() {
    use switchyard::sessions::{new_keys_json, Claims, Sessions};
    let Some(url) = common::backends::postgres_database("rotate").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = switchyard::store::Store::connect(Some(&url), dir.path()).await.unwrap();
    let before = store.shared_secret("session-keys", new_keys_json).await.unwrap();
    let claims = Claims {
        sid: "ses_1".into(),
        kid: "key_1".into(),
        ws: "ws_1".into(),
        exp: switchyard::clock::now_unix() + 600,
        models: None,
        max: None,
        user: None,
    };
    let token = Sessions::from_json(&before).unwrap().mint(&claims);

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["rotate-session-key", "--data-dir"])
        .arg(dir.path())
        .env("SWITCHYARD__DATABASE__URL", &url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout} {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("in the database"), "{stdout}");

    let after = store.shared_secret("session-keys", new_keys_json).await.unwrap();
    let ids = |json: &str| -> Vec<String> {
        let keys: Vec<serde_json::Value> = serde_json::from_str(json).unwrap();
        keys.iter().map(|k| k["id"].as_str().unwrap().to_owned()).collect()
    };
    let (old, new) = (ids(&before), ids(&after));
    assert_eq!(new.len(), 2);
    assert_eq!(new[1], old[0], "the old key is kept second");
    assert_ne!(new[0], old[0]);
    assert_eq!(Sessions::from_json(&after).unwrap().check(&token, switchyard::clock::now_unix()), Ok(claims));
    assert!(!dir.path().join("session-keys.json").exists(), "nothing written to the data directory");
}

/// Three gateways starting at once on one empty database: exactly one makes the default workspace and prints its
/// key; the others start on it.
#[actix_web::test]
async fn gateways_starting_together_bootstrap_once() {
    let Some(url) = common::backends::postgres_database("bootstrap_once").await else { return };
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let starts = dirs.iter().map(|dir| {
        let mut config = common::test_config();
        config.server.data_dir = dir.path().to_path_buf();
        config.database.url = url.clone();
        let catalogue = config.catalogue().unwrap();
        async move { switchyard::state::AppState::build(config, catalogue, &|_: &str| None).await.unwrap() }
    });
    let started = futures::future::join_all(starts).await;
    let bootstraps = started.iter().filter(|(_, bootstrap)| bootstrap.is_some()).count();
    assert_eq!(bootstraps, 1, "one default workspace, one key printed");
    assert_eq!(started[0].0.store.workspace_count().await.unwrap(), 1);
}
