//! Media uploads: init, PUT, complete, download; and every way an upload can go wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{error_code, wav, Gateway, ADMIN_KEY};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use tokio::io::AsyncWriteExt;

async fn gateway(tweak: impl FnOnce(&mut switchyard::config::Config)) -> Gateway {
    Gateway::start(HashMap::from([("SWITCHYARD_ADMIN_KEY".to_owned(), ADMIN_KEY.to_owned())]), tweak).await
}

async fn init(gw: &Gateway, key: &str, body: Value) -> reqwest::Response {
    gw.client.post(format!("{}/api/media/upload/init", gw.url)).bearer_auth(key).json(&body).send().await.unwrap()
}

async fn ticket(gw: &Gateway, key: &str, filename: &str, content_type: &str, bytes: usize) -> (String, String) {
    let response = init(gw, key, json!({"filename": filename, "content_type": content_type, "bytes": bytes})).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    (body["upload_id"].as_str().unwrap().to_owned(), body["upload_url"].as_str().unwrap().to_owned())
}

async fn complete(gw: &Gateway, key: &str, upload_id: &str) -> reqwest::Response {
    gw.client
        .post(format!("{}/api/media/upload/complete", gw.url))
        .bearer_auth(key)
        .json(&json!({"upload_id": upload_id}))
        .send()
        .await
        .unwrap()
}

#[actix_web::test]
async fn an_upload_round_trips_with_its_digest() {
    let gw = gateway(|_| {}).await;
    let audio = wav(8000);
    let (id, url) = ticket(&gw, &gw.key, "tone.wav", "audio/x-wav", audio.len()).await;
    assert!(url.starts_with(&gw.url), "{url}");
    let put = gw.client.put(&url).body(audio.clone()).send().await.unwrap();
    assert_eq!(put.status(), 200);
    let done: Value = complete(&gw, &gw.key, &id).await.json().await.unwrap();
    let media_ref = done["media_ref"].as_str().unwrap();
    assert!(media_ref.starts_with("med_"));
    assert_eq!(done["content_type"], "audio/wav");
    assert_eq!(done["bytes"], audio.len());
    assert_eq!(done["sha256"], hex::encode(Sha256::digest(&audio)));
    // Completing again answers the same media.
    let again: Value = complete(&gw, &gw.key, &id).await.json().await.unwrap();
    assert_eq!(again["media_ref"], media_ref);
    let download = gw.get(&format!("/api/media/{media_ref}")).send().await.unwrap();
    assert_eq!(download.headers()["content-type"], "audio/wav");
    assert_eq!(download.bytes().await.unwrap().to_vec(), audio);
    gw.stop().await;
}

#[actix_web::test]
async fn bad_init_requests_are_refused() {
    let gw = gateway(|c| c.media.max_upload_bytes = 1000).await;
    let cases = [
        (json!({"filename": "../../etc/passwd", "content_type": "text/plain", "bytes": 10}), 400, "invalid_field"),
        (json!({"filename": "a/b.txt", "content_type": "text/plain", "bytes": 10}), 400, "invalid_field"),
        (json!({"filename": "", "content_type": "text/plain", "bytes": 10}), 400, "invalid_field"),
        (
            json!({"filename": "a.exe", "content_type": "application/x-msdownload", "bytes": 10}),
            415,
            "unsupported_media_type",
        ),
        (json!({"filename": "a.txt", "content_type": "text/plain", "bytes": 0}), 400, "invalid_field"),
        (json!({"filename": "a.txt", "content_type": "text/plain", "bytes": 1001}), 413, "payload_too_large"),
        (json!({"filename": "a.txt", "content_type": "text/plain"}), 400, "missing_field"),
        (json!({"filename": "a.txt", "content_type": "text/plain", "bytes": -5}), 400, "invalid_field"),
    ];
    for (body, status, code) in cases {
        assert_eq!(error_code(init(&gw, &gw.key, body.clone()).await).await, (status, code.to_owned()), "{body}");
    }
    let anonymous = gw.client.post(format!("{}/api/media/upload/init", gw.url)).json(&json!({})).send().await.unwrap();
    assert_eq!(error_code(anonymous).await.0, 401);
    gw.stop().await;
}

#[actix_web::test]
async fn sizes_and_types_must_match_what_was_declared() {
    let gw = gateway(|_| {}).await;
    let text = b"hello there, this is plain text".to_vec();
    // Fewer bytes than declared.
    let (id, url) = ticket(&gw, &gw.key, "a.txt", "text/plain", text.len() + 5).await;
    let put = gw.client.put(&url).body(text.clone()).send().await.unwrap();
    assert_eq!(error_code(put).await, (400, "invalid_field".to_owned()));
    assert_eq!(error_code(complete(&gw, &gw.key, &id).await).await, (400, "invalid_field".to_owned()));
    // More bytes than declared.
    let (_, url) = ticket(&gw, &gw.key, "a.txt", "text/plain", 4).await;
    let put = gw.client.put(&url).body(text.clone()).send().await.unwrap();
    assert_eq!(error_code(put).await, (413, "payload_too_large".to_owned()));
    // Declared an image, sent text: the bytes decide.
    let (id, url) = ticket(&gw, &gw.key, "a.png", "image/png", text.len()).await;
    let put = gw.client.put(&url).body(text.clone()).send().await.unwrap();
    assert_eq!(error_code(put).await, (415, "unsupported_media_type".to_owned()));
    assert_eq!(error_code(complete(&gw, &gw.key, &id).await).await, (400, "invalid_field".to_owned()));
    // Nothing half-written stays behind in staging.
    let staging = gw.state.config.server.data_dir.join("media/staging");
    assert_eq!(std::fs::read_dir(staging).unwrap().count(), 0);
    gw.stop().await;
}

#[actix_web::test]
async fn a_put_cut_off_leaves_nothing_visible() {
    let gw = gateway(|_| {}).await;
    let audio = wav(4000);
    let (id, url) = ticket(&gw, &gw.key, "tone.wav", "audio/wav", audio.len()).await;
    let path = url.strip_prefix(&gw.url).unwrap().to_owned();
    let addr = gw.url.strip_prefix("http://").unwrap().to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!("PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n", audio.len());
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&audio[..audio.len() / 2]).await.unwrap();
    drop(socket);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(error_code(complete(&gw, &gw.key, &id).await).await, (400, "invalid_field".to_owned()));
    let staging = gw.state.config.server.data_dir.join("media/staging");
    assert_eq!(std::fs::read_dir(staging).unwrap().count(), 0);
    // The same upload can still be finished properly.
    assert_eq!(gw.client.put(&url).body(audio.clone()).send().await.unwrap().status(), 200);
    assert_eq!(complete(&gw, &gw.key, &id).await.status(), 200);
    gw.stop().await;
}

#[actix_web::test]
async fn another_workspaces_uploads_and_media_are_not_found() {
    let gw = gateway(|_| {}).await;
    let (_, other) = gw.workspace("1", 100, 10, 100_000).await;
    let text = b"private notes".to_vec();
    let (id, url) = ticket(&gw, &gw.key, "notes.txt", "text/plain", text.len()).await;
    gw.client.put(&url).body(text.clone()).send().await.unwrap();
    assert_eq!(error_code(complete(&gw, &other, &id).await).await, (404, "not_found".to_owned()));
    let done: Value = complete(&gw, &gw.key, &id).await.json().await.unwrap();
    let media_ref = done["media_ref"].as_str().unwrap();
    let stolen = gw.client.get(format!("{}/api/media/{media_ref}", gw.url)).bearer_auth(&other).send().await.unwrap();
    assert_eq!(error_code(stolen).await, (404, "not_found".to_owned()));
    let unknown = gw.get("/api/media/med_000000000000000000000000").send().await.unwrap();
    assert_eq!(error_code(unknown).await, (404, "not_found".to_owned()));
    let bogus_put = gw.client.put(format!("{}/api/media/upload/upl_nope", gw.url)).body("x").send().await.unwrap();
    assert_eq!(error_code(bogus_put).await, (404, "not_found".to_owned()));
    gw.stop().await;
}

#[actix_web::test]
async fn an_expired_upload_is_refused() {
    let gw = gateway(|c| c.media.upload_ttl_secs = 0).await;
    let (_, url) = ticket(&gw, &gw.key, "a.txt", "text/plain", 5).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let put = gw.client.put(&url).body("hello").send().await.unwrap();
    assert_eq!(error_code(put).await, (400, "invalid_field".to_owned()));
    gw.stop().await;
}
