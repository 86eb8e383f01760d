//! Crash safety: the real binary under mixed load (whole answers, streams, uploads, images made by submitting and
//! polling a Black Forest Labs mock, realtime sessions relayed to an OpenAI Realtime mock) is SIGKILLed at a random
//! moment, then started again on the same data directory, several times over. After each restart: every charge a
//! client was told of is recorded exactly, no hold outlives the crash, the wallet equals the credits less the
//! recorded charges, and every upload a client completed reads back whole (a PUT cut off part way leaves nothing
//! visible: `media::a_put_cut_off_leaves_nothing_visible`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "mock/media.rs"]
mod media_mock;
#[path = "mock/realtime.rs"]
mod realtime_mock;

use common::load::{milli, stream, whole, Told};
use common::process::{kill, start_with, wallet};
use common::wav;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

async fn upload(client: &reqwest::Client, url: &str, key: &str, n: usize) -> Told {
    let audio = wav(4000 + n);
    let init = json!({"filename": format!("t{n}.wav"), "content_type": "audio/wav", "bytes": audio.len()});
    let Ok(response) = client.post(format!("{url}/api/media/upload/init")).bearer_auth(key).json(&init).send().await
    else {
        return Told::Nothing;
    };
    let Ok(ticket) = response.json::<Value>().await else { return Told::Nothing };
    let (Some(id), Some(put_url)) = (ticket["upload_id"].as_str(), ticket["upload_url"].as_str()) else {
        return Told::Nothing;
    };
    if !client.put(put_url).body(audio.clone()).send().await.is_ok_and(|r| r.status() == 200) {
        return Told::Nothing;
    }
    let done = client.post(format!("{url}/api/media/upload/complete")).bearer_auth(key).json(&json!({"upload_id": id}));
    let Ok(done) = done.send().await else { return Told::Nothing };
    let Ok(done) = done.json::<Value>().await else { return Told::Nothing };
    match done["media_ref"].as_str() {
        Some(media) => Told::Uploaded(media.to_owned(), audio.len()),
        None => Told::Nothing,
    }
}

/// An image: submitted, polled until ready, fetched, stored and charged.
async fn image(client: &reqwest::Client, url: &str, key: &str, n: usize) -> Told {
    let body = json!({"model": "flux-1-schnell", "prompt": format!("image {n}"), "width": 256, "height": 256});
    let Ok(response) = client.post(format!("{url}/api/v1/task")).bearer_auth(key).json(&body).send().await else {
        return Told::Nothing;
    };
    let Ok(body) = response.json::<Value>().await else { return Told::Nothing };
    match (body["id"].as_str(), milli(&body["metadata"]["credits_charged"])) {
        (Some(id), Some(credits)) => Told::Charged(id.to_owned(), credits),
        _ => Told::Nothing,
    }
}

/// A realtime session: one spoken turn and one response, to its `response.done`.
async fn realtime(url: &str, key: &str) -> Told {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    let socket_url = format!("{}/v1/realtime?model=gpt-realtime", url.replacen("http://", "ws://", 1));
    let Ok(mut request) = socket_url.into_client_request() else { return Told::Nothing };
    let Ok(bearer) = format!("Bearer {key}").parse() else { return Told::Nothing };
    request.headers_mut().insert("authorization", bearer);
    let Ok(Ok((mut socket, _))) =
        tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(request)).await
    else {
        return Told::Nothing;
    };
    let audio = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, vec![1u8; 4800]);
    for event in [
        json!({"type": "input_audio_buffer.append", "audio": audio}),
        json!({"type": "input_audio_buffer.commit"}),
        json!({"type": "response.create"}),
    ] {
        if socket.send(Message::text(event.to_string())).await.is_err() {
            return Told::Nothing;
        }
    }
    loop {
        let Ok(Some(Ok(frame))) = tokio::time::timeout(Duration::from_secs(5), socket.next()).await else {
            return Told::Nothing;
        };
        let Message::Text(text) = frame else { continue };
        let event: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
        if event["type"] == "response.done" {
            let _ = socket.close(None).await;
            return if event["response"]["status"] == "completed" { Told::Spoke } else { Told::Nothing };
        }
    }
}

#[tokio::test]
async fn killed_at_random_moments_under_mixed_load_the_books_and_the_uploads_stay_whole() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    // The image provider lives in this process, so it outlives every kill; each task is polled twice.
    let bfl = media_mock::MediaMock::start().await.unwrap();
    bfl.set_pending_polls(2);
    let voice = realtime_mock::RealtimeMock::start().await.unwrap();
    let env = [
        ("OPENAI_BASE_URL", voice.url()),
        ("OPENAI_API_KEY", "sk-test".to_owned()),
        ("BFL_BASE_URL", bfl.url()),
        ("BFL_API_KEY", "bfl-test".to_owned()),
        ("SWITCHYARD__UPSTREAM__POLL_INTERVAL_MS", "20".to_owned()),
        ("SWITCHYARD__BOOTSTRAP__CREDITS", "100000".to_owned()),
    ];
    let start = |dir: &std::path::Path| start_with(dir, &env);
    let mut gateway = start(dir.path());
    let key = gateway.key.clone().unwrap();
    let (initial, _) = wallet(&client, &gateway.url, &key).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(18);
    let mut charged: HashMap<String, i64> = HashMap::new();
    let mut uploaded: Vec<(String, usize)> = Vec::new();
    let mut spoke = 0i64;
    for round in 0..4 {
        let url = gateway.url.clone();
        let stop = Instant::now() + Duration::from_millis(rng.gen_range(300..900));
        let workers = (0..10).map(|w| {
            let (client, url, key) = (client.clone(), url.clone(), key.clone());
            tokio::spawn(async move {
                let mut told = Vec::new();
                let mut n = 0;
                // Bounded: the gateway is killed at `stop`, after which every request fails fast.
                while Instant::now() < stop + Duration::from_secs(2) && n < 10_000 {
                    n += 1;
                    let one = match w % 5 {
                        0 => whole(&client, &url, &key, n).await,
                        1 => stream(&client, &url, &key, n).await,
                        2 => image(&client, &url, &key, n).await,
                        3 => realtime(&url, &key).await,
                        _ => upload(&client, &url, &key, n).await,
                    };
                    let nothing = matches!(one, Told::Nothing);
                    told.push(one);
                    if nothing && Instant::now() >= stop {
                        break;
                    }
                }
                told
            })
        });
        let killer = async {
            tokio::time::sleep_until(stop.into()).await;
            kill(&mut gateway);
        };
        let (results, ()) = tokio::join!(futures::future::join_all(workers), killer);
        let mut told_this_round = 0;
        for told in results.into_iter().flat_map(Result::unwrap) {
            match told {
                Told::Charged(id, credits) => {
                    told_this_round += 1;
                    charged.insert(id, credits);
                }
                Told::Uploaded(media, bytes) => {
                    told_this_round += 1;
                    uploaded.push((media, bytes));
                }
                Told::Spoke => {
                    told_this_round += 1;
                    spoke += 1;
                }
                Told::Nothing => {}
            }
        }
        assert!(told_this_round > 3, "round {round}: too little load before the kill ({told_this_round})");

        gateway = start(dir.path());
        let (balance, reserved) = wallet(&client, &gateway.url, &key).await;
        // Holds live in memory only, so this holds by construction; the wallet check below is the one with teeth.
        assert_eq!(reserved, 0, "round {round}: a hold outlived the crash");
        let db = sqlx::SqlitePool::connect(&format!("sqlite://{}/switchyard.db?mode=ro", dir.path().display()))
            .await
            .unwrap();
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT id, credits_milli FROM usage").fetch_all(&db).await.unwrap();
        let (responses,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM usage WHERE model = 'gpt-realtime' AND status = 'ok'")
                .fetch_one(&db)
                .await
                .unwrap();
        assert!(responses >= spoke, "round {round}: {spoke} realtime responses done, {responses} recorded");
        db.close().await;
        let recorded: HashMap<String, i64> = rows.iter().cloned().collect();
        for (id, credits) in &charged {
            assert_eq!(recorded.get(id), Some(credits), "round {round}: {id} was reported charged {credits}");
        }
        let spent: i64 = rows.iter().map(|r| r.1).sum();
        assert_eq!(initial - balance, spent, "round {round}: the wallet does not add up");
        for (media, bytes) in &uploaded {
            let response =
                client.get(format!("{}/api/media/{media}", gateway.url)).bearer_auth(&key).send().await.unwrap();
            assert_eq!(response.status(), 200, "round {round}: upload {media} lost");
            assert_eq!(response.bytes().await.unwrap().len(), *bytes, "round {round}: upload {media} not whole");
        }
    }
    let db =
        sqlx::SqlitePool::connect(&format!("sqlite://{}/switchyard.db?mode=ro", dir.path().display())).await.unwrap();
    let (images,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM usage WHERE model = 'flux-1-schnell' AND status = 'ok'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(images > 0 && bfl.calls("/v1/get_result") > 0, "images were made by polling ({images})");
    assert!(spoke > 0, "realtime responses were made");
    kill(&mut gateway);
}
