//! The whole shared stack: three gateways on one PostgreSQL, one Redis and one S3 bucket. A wallet worth K images
//! serves exactly K of 4K parallel requests spread over the three (each image's hold is its price, so exactly K
//! holds fit), the rest refused 402 with nothing charged; the wallet ends at zero with nothing held and one record
//! per image; and every image, stored in S3 by the gateway that made it, downloads through another. A browser
//! session token capped at K images' worth passes exactly K over the three too (its cap is counted in Redis).
//! SKIPPED without the servers; under `make test` they are always there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "mock/media.rs"]
mod media_mock;

use common::{Gateway, ADMIN_KEY};
use media_mock::MediaMock;
use serde_json::{json, Value};
use std::collections::HashMap;

const K: usize = 8;

/// Three gateways on a new database, a Redis prefix and an S3 prefix of the test's own, with the BFL mock.
async fn stack(test: &str) -> Option<(MediaMock, Vec<Gateway>)> {
    let db = common::backends::postgres_database(test).await?;
    let (redis, prefix) = common::backends::redis_url(test)?;
    let s3 = common::backends::s3(test)?;
    let mock = MediaMock::start().await.unwrap();
    mock.set_pending_polls(1);
    let mut env: HashMap<String, String> = s3.env().into_iter().collect();
    env.insert("SWITCHYARD_ADMIN_KEY".into(), ADMIN_KEY.into());
    env.insert("BFL_BASE_URL".into(), mock.url());
    env.insert("BFL_API_KEY".into(), "bfl-test".into());
    let mut gws = Vec::new();
    for i in 0..3 {
        let (db, redis, prefix, media) = (db.clone(), redis.clone(), prefix.clone(), s3.url());
        let tweak = move |c: &mut switchyard::config::Config| {
            c.database.url = db;
            c.redis.url = redis;
            c.redis.prefix = prefix;
            c.media.url = media;
            c.upstream.poll_interval_ms = 5;
        };
        gws.push(match i {
            0 => Gateway::start(env.clone(), tweak).await,
            _ => Gateway::start_existing(env.clone(), tweak).await,
        });
    }
    Some((mock, gws))
}

/// A workspace with `credits` made through the first gateway, its key known to all three.
async fn workspace(gws: &[Gateway], credits: usize) -> (String, String) {
    let made = gws[0].workspace(&credits.to_string(), 10_000, 1_000, 100_000_000).await;
    for gw in gws {
        gw.state.keys.refresh(&gw.state.store).await.unwrap();
    }
    made
}

/// 4K flux-1-schnell images at once (3 credits each, held and charged alike) with `bearer`, spread over the three:
/// (the gateway that served, the image's URL) for each served, and how many were refused 402.
async fn images(gws: &[Gateway], bearer: &str) -> (Vec<(usize, String)>, usize) {
    let image = |gw: &Gateway| {
        let body = json!({"model": "flux-1-schnell", "prompt": "a lighthouse", "size": "256x256"});
        gw.client.post(format!("{}/v1/images/generations", gw.url)).bearer_auth(bearer).json(&body).send()
    };
    let answers = futures::future::join_all((0..4 * K).map(|i| image(&gws[i % 3]))).await;
    let mut served = Vec::new();
    let mut refused = 0;
    for (i, answer) in answers.into_iter().enumerate() {
        let answer = answer.unwrap();
        let status = answer.status().as_u16();
        let body: Value = answer.json().await.unwrap();
        match status {
            200 => served.push((i % 3, body["data"][0]["url"].as_str().unwrap().to_owned())),
            402 => {
                assert_eq!(body["error"]["code"], "insufficient_credits", "{body}");
                refused += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    (served, refused)
}

#[actix_web::test]
async fn a_wallet_worth_k_images_serves_exactly_k_over_three_gateways_on_the_shared_stack() {
    let Some((_mock, gws)) = stack("stack").await else { return };
    // The wallet holds exactly K images.
    let (ws, key) = workspace(&gws, 3 * K).await;
    let (served, refused) = images(&gws, &key).await;
    assert_eq!(served.len(), K, "exactly the K images the wallet holds");
    assert_eq!(refused, 3 * K);
    for gw in &gws {
        assert_eq!(gw.settled(&key).await, (0, 0), "spent to zero, nothing held, read alike through every gateway");
    }
    let records = gws[1].usage(&ws).await;
    assert_eq!(records.len(), K, "one record per image: {records:?}");
    assert!(records.iter().all(|(_, credits, _)| *credits == 3_000));

    // Each image was stored in S3 by the gateway that made it and downloads through the next one.
    for (made_by, url) in &served {
        let other = &gws[(made_by + 1) % 3];
        assert!(url.starts_with(&gws[*made_by].url), "{url}");
        let through_other = url.replacen(&gws[*made_by].url, &other.url, 1);
        let download = other.client.get(&through_other).bearer_auth(&key).send().await.unwrap();
        assert_eq!(download.status(), 200, "{through_other}");
        let bytes = download.bytes().await.unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "an image: {} bytes", bytes.len());
    }
}

#[actix_web::test]
async fn a_session_tokens_cap_holds_exactly_over_three_gateways() {
    let Some((_mock, gws)) = stack("stack_session").await else { return };
    let (ws, key) = workspace(&gws, 1_000).await;
    let minted: Value = gws[0]
        .client
        .post(format!("{}/api/v1/sessions", gws[0].url))
        .header("X-API-Key", &key)
        .json(&json!({"max_credits": 3 * K}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = minted["access_token"].as_str().expect("a session token").to_owned();
    let (served, refused) = images(&gws, &token).await;
    assert_eq!(served.len(), K, "exactly the K images the session's cap holds, whichever gateway served them");
    assert_eq!(refused, 3 * K);
    let records = gws[2].usage(&ws).await;
    assert_eq!(records.len(), K);
    assert_eq!(gws[1].settled(&key).await, (1_000_000 - 3_000 * K as i64, 0), "the wallet paid for those only");
}
