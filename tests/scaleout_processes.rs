//! Three real gateway processes (the release-less test binary, each its own data directory) on one PostgreSQL, one
//! Redis and one S3 bucket, as they would run behind a load balancer: 60 parallel calls at a plan of 20 requests
//! per minute admit exactly 20; a wallet worth K images serves exactly K of 4K; an upload through one downloads
//! through another; a session token revoked through one is refused by all. SKIPPED without the servers; under
//! `make test` they are always there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "mock/media.rs"]
mod media_mock;

use common::process::{start_with, Running, ADMIN};
use common::wav;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const K: usize = 6;

struct Stack {
    gateways: Vec<Running>,
    client: reqwest::Client,
    _dirs: Vec<tempfile::TempDir>,
    _mock: media_mock::MediaMock,
}

impl Stack {
    fn url(&self, i: usize) -> &str {
        &self.gateways[i % 3].url
    }

    /// A workspace with `credits` and `rpm` made through the admin API of the first, and its key, once all three
    /// know it (each reads the keys every second).
    async fn workspace(&self, credits: usize, rpm: u32) -> String {
        let admin = |path: String| self.client.post(format!("{}{path}", self.url(0))).bearer_auth(ADMIN);
        let plan = json!({"requests_per_minute": rpm, "concurrent_requests": 1_000, "tokens_per_minute": 100_000_000});
        let made: Value = admin("/admin/workspaces".into())
            .json(&json!({"name": "scaleout", "credits": credits.to_string(), "plan": plan}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = made["id"].as_str().expect("a workspace");
        let key: Value = admin(format!("/admin/workspaces/{id}/keys"))
            .json(&json!({"name": "k"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = key["key"].as_str().expect("a key").to_owned();
        tokio::time::sleep(Duration::from_millis(2_200)).await;
        key
    }

    async fn status(&self, request: reqwest::RequestBuilder) -> u16 {
        request.send().await.unwrap().status().as_u16()
    }

    fn chat(&self, i: usize, bearer: &str) -> reqwest::RequestBuilder {
        let body = json!({"model": "sim-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
        self.client.post(format!("{}/api/v1/task", self.url(i))).bearer_auth(bearer).json(&body)
    }
}

async fn stack(test: &str) -> Option<Stack> {
    let db = common::backends::postgres_database(test).await?;
    let (redis, prefix) = common::backends::redis_url(test)?;
    let s3 = common::backends::s3(test)?;
    let mock = media_mock::MediaMock::start().await.unwrap();
    let mut env: Vec<(&str, String)> = vec![
        ("SWITCHYARD__DATABASE__URL", db),
        ("SWITCHYARD__REDIS__URL", redis),
        ("SWITCHYARD__REDIS__PREFIX", prefix),
        ("SWITCHYARD__MEDIA__URL", s3.url()),
        ("SWITCHYARD__UPSTREAM__POLL_INTERVAL_MS", "5".into()),
        ("BFL_BASE_URL", mock.url()),
        ("BFL_API_KEY", "bfl-test".into()),
    ];
    let aws = s3.env();
    for (name, value) in &aws {
        env.push((name.as_str(), value.clone()));
    }
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let gateways: Vec<Running> = dirs.iter().map(|dir| start_with(dir.path(), &env)).collect();
    Some(Stack { gateways, client: reqwest::Client::new(), _dirs: dirs, _mock: mock })
}

#[actix_web::test]
async fn three_gateway_processes_on_the_shared_stack_hold_limits_money_media_and_revocations() {
    let Some(stack) = stack("processes").await else { return };

    // A plan of 20 requests per minute: exactly 20 of 60 parallel calls over the three.
    let key = stack.workspace(1_000, 20).await;
    let statuses = futures::future::join_all((0..60).map(|i| stack.status(stack.chat(i, &key)))).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 20, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 40, "{statuses:?}");

    // A wallet worth K images (3 credits each, held and charged alike): exactly K of 4K.
    let key = stack.workspace(3 * K, 10_000).await;
    let image = |i: usize| {
        let body = json!({"model": "flux-1-schnell", "prompt": "a harbour", "size": "256x256"});
        stack.status(stack.client.post(format!("{}/v1/images/generations", stack.url(i))).bearer_auth(&key).json(&body))
    };
    let statuses = futures::future::join_all((0..4 * K).map(image)).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), K, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 402).count(), 3 * K, "{statuses:?}");

    // An upload through the first downloads through the third.
    let key = stack.workspace(1_000, 10_000).await;
    let audio = wav(20_000);
    let init: Value = stack
        .client
        .post(format!("{}/api/media/upload/init", stack.url(0)))
        .bearer_auth(&key)
        .json(&json!({"filename": "a.wav", "content_type": "audio/wav", "bytes": audio.len()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let put = stack.client.put(init["upload_url"].as_str().unwrap()).body(audio.clone()).send().await.unwrap();
    assert_eq!(put.status(), 200);
    let done: Value = stack
        .client
        .post(format!("{}/api/media/upload/complete", stack.url(0)))
        .bearer_auth(&key)
        .json(&json!({"upload_id": init["upload_id"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let media_ref = done["media_ref"].as_str().expect("completed");
    let download = stack.client.get(format!("{}/api/media/{media_ref}", stack.url(2))).bearer_auth(&key).send();
    assert!(download.await.unwrap().bytes().await.unwrap() == audio, "the same bytes through another process");

    // A session token minted through the second, revoked through the first, is refused by all three.
    let minted: Value = stack
        .client
        .post(format!("{}/api/v1/sessions", stack.url(1)))
        .header("X-API-Key", &key)
        .json(&json!({"expires_in": 600}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = minted["access_token"].as_str().expect("a token").to_owned();
    for i in 0..3 {
        assert_eq!(stack.status(stack.chat(i, &token)).await, 200, "the token works on gateway {i}");
    }
    let id = minted["id"].as_str().unwrap();
    let revoke = stack.client.delete(format!("{}/api/v1/sessions/{id}", stack.url(0))).header("X-API-Key", &key);
    assert_eq!(stack.status(revoke).await, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0..3 {
        while stack.status(stack.chat(i, &token)).await != 401 {
            assert!(Instant::now() < deadline, "gateway {i} still takes a revoked token");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
