//! Media on an S3-compatible store (`media.url = "s3://bucket/prefix"`), against the local S3 server `make test`
//! starts (s3s-fs, which checks every request's SigV4 signature against its one key pair). Two gateways on one
//! PostgreSQL and one bucket: an upload larger than one part (a multipart upload) sent to one gateway is completed and
//! downloaded through the other, byte for byte, ranges too. A bucket
//! that does not exist, refused credentials or a URL that is not s3:// stop the gateway at start with the reason.
//! A write given up half way (the client left) aborts its multipart upload, so the bucket keeps none of its parts.
//! SKIPPED without the servers; under `make test` they are always there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::backends::S3;
use common::{wav, Gateway};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

fn env_of(s3: &S3) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = s3.env().into_iter().collect();
    env.insert("SWITCHYARD_ADMIN_KEY".into(), common::ADMIN_KEY.into());
    env
}

async fn open(url: &str, env: &HashMap<String, String>) -> Result<switchyard::media::S3BlobStore, String> {
    switchyard::media::S3BlobStore::open(url, &|name: &str| env.get(name).cloned()).await
}

#[actix_web::test]
async fn an_upload_through_one_gateway_downloads_through_another() {
    let Some(s3) = common::backends::s3("upload") else { return };
    let Some(db) = common::backends::postgres_database("s3_upload").await else { return };
    let (url, db2) = (s3.url(), db.clone());
    let first = Gateway::start(env_of(&s3), move |c| {
        c.database.url = db;
        c.media.url = url;
    })
    .await;
    let url = s3.url();
    let second = Gateway::start_existing(env_of(&s3), move |c| {
        c.database.url = db2;
        c.media.url = url;
    })
    .await;
    second.state.keys.refresh(&second.state.store).await.unwrap();
    let key = first.key.clone();

    // 10 MiB of audio: more than one 8 MiB part, so the store takes it as a multipart upload.
    let audio = wav(5 * 1024 * 1024 + 100);
    let init: Value = first
        .client
        .post(format!("{}/api/media/upload/init", first.url))
        .bearer_auth(&key)
        .json(&json!({"filename": "long.wav", "content_type": "audio/wav", "bytes": audio.len()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (upload_id, upload_url) = (init["upload_id"].as_str().unwrap(), init["upload_url"].as_str().unwrap());
    // The bytes go to the second gateway (the ticket is in the shared database), the completion to the first.
    let on_second = upload_url.replacen(&first.url, &second.url, 1);
    let put = second.client.put(&on_second).body(audio.clone()).send().await.unwrap();
    assert_eq!(put.status(), 200, "{}", put.text().await.unwrap());
    let done: Value = first
        .client
        .post(format!("{}/api/media/upload/complete", first.url))
        .bearer_auth(&key)
        .json(&json!({"upload_id": upload_id}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let media_ref = done["media_ref"].as_str().expect("completed").to_owned();
    assert_eq!(done["sha256"], hex::encode(Sha256::digest(&audio)), "{done}");

    let download = second.client.get(format!("{}/api/media/{media_ref}", second.url)).bearer_auth(&key);
    let download = download.send().await.unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.headers()["content-type"], "audio/wav");
    assert!(download.bytes().await.unwrap() == audio, "the same bytes through the other gateway");
    let range = second
        .client
        .get(format!("{}/api/media/{media_ref}", second.url))
        .bearer_auth(&key)
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), 206);
    assert!(range.bytes().await.unwrap() == audio[100..200]);

    // The objects are in the bucket under the prefix, not in either data directory.
    let blobs = open(&s3.url(), &env_of(&s3)).await.unwrap();
    let listed = blobs.keys("objects").await.unwrap();
    assert_eq!(listed.len(), 1, "one object published: {listed:?}");
    assert!(listed[0].starts_with(&format!("{}/objects/", s3.prefix)), "{listed:?}");
    assert!(blobs.keys("staging").await.unwrap().is_empty(), "nothing left in staging");
    assert!(!first.state.config.server.data_dir.join("media/objects").exists());
}

#[actix_web::test]
async fn a_missing_bucket_or_refused_credentials_stop_the_gateway_at_start() {
    let Some(s3) = common::backends::s3("refusals") else { return };
    let env = env_of(&s3);
    let error = open("s3://no-such-bucket-here/p", &env).await.err().unwrap();
    assert!(error.contains("the bucket does not exist"), "{error}");

    let mut wrong = env.clone();
    wrong.insert("AWS_SECRET_ACCESS_KEY".into(), "not-the-secret".into());
    let error = open(&s3.url(), &wrong).await.err().unwrap();
    assert!(error.contains("the credentials were refused"), "{error}");
    assert!(!error.contains("not-the-secret"), "the secret is never shown: {error}");

    let error = open("https://bucket/prefix", &env).await.err().unwrap();
    assert!(error.contains("must be empty (files in the data directory) or s3://"), "{error}");

    // Through the gateway's start, the same reason.
    let mut config = common::test_config();
    let dir = tempfile::tempdir().unwrap();
    config.server.data_dir = dir.path().to_path_buf();
    config.media.url = "s3://no-such-bucket-here".into();
    let catalogue = config.catalogue().unwrap();
    let built = switchyard::state::AppState::build(config, catalogue, &|name: &str| env.get(name).cloned()).await;
    let error = built.err().expect("no gateway without its media store");
    assert!(error.contains("media.url `s3://no-such-bucket-here`: the bucket does not exist"), "{error}");
}

/// s3s-fs's files for the multipart uploads of `key` in `bucket` under `root`: its record of the upload, and each part.
fn multipart_files(root: &std::path::Path, bucket: &str, key: &str) -> Vec<String> {
    use base64::Engine;
    let encode = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let record = format!(".bucket-{}.object-{}.upload-", encode(bucket), encode(key));
    let names: Vec<String> =
        std::fs::read_dir(root).unwrap().filter_map(|entry| entry.ok()?.file_name().into_string().ok()).collect();
    let uploads: Vec<String> = names
        .iter()
        .filter_map(|n| n.strip_prefix(&record)?.strip_suffix(".metadata.json").map(str::to_owned))
        .collect();
    names
        .into_iter()
        .filter(|n| n.starts_with(&record) || uploads.iter().any(|u| n.starts_with(&format!(".upload_id-{u}"))))
        .collect()
}

#[actix_web::test]
async fn a_write_given_up_half_way_leaves_no_multipart_upload() {
    let Some(s3) = common::backends::s3("abandoned") else { return };
    let Ok(root) = std::env::var("SWITCHYARD_TEST_S3_ROOT") else {
        println!("SKIPPED: SWITCHYARD_TEST_S3_ROOT (the local S3 server's files) is not set");
        return;
    };
    let root = std::path::PathBuf::from(root);
    let env: HashMap<String, String> = s3.env().into_iter().collect();
    let blobs: std::sync::Arc<dyn switchyard::media::BlobStore> =
        std::sync::Arc::new(open(&s3.url(), &env).await.unwrap());
    for abort in [false, true] {
        let mut writer = switchyard::media::MediaWriter::create(&blobs, "ws").await.unwrap();
        let key = format!("{}/staging/{}", s3.prefix, writer.staging());
        // 9 MiB: the first 8 MiB part goes up as the bytes arrive, so a multipart upload is under way.
        writer.write(&vec![7u8; 9 * 1024 * 1024]).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !multipart_files(&root, &s3.bucket, &key).iter().any(|n| n.starts_with(".upload_id-")) {
            assert!(std::time::Instant::now() < deadline, "no part was uploaded");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // Given up: explicitly (a bad body), or dropped (the client left).
        if abort {
            writer.abort().await;
        } else {
            drop(writer);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let left = multipart_files(&root, &s3.bucket, &key);
            if left.is_empty() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the multipart upload was kept: {left:?}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
