//! The Black Forest Labs and ElevenLabs mock speaks their wire formats: checked here so the provider tests that use
//! it (images and speech) stand on a mock that is itself right.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "mock/media.rs"]
mod media_mock;

use media_mock::{MediaFault, MediaMock};
use serde_json::{json, Value};

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

#[tokio::test]
async fn bfl_submit_poll_and_fetch_give_an_image_of_the_requested_size() {
    let mock = MediaMock::start().await.unwrap();
    mock.set_pending_polls(2);
    let client = reqwest::Client::new();
    let submitted: Value = client
        .post(format!("{}/v1/flux-pro-1.1", mock.url()))
        .header("x-key", "bfl-test")
        .json(&json!({"prompt": "a lake at sunset", "width": 512, "height": 384, "seed": 42, "output_format": "png"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let polling_url = submitted["polling_url"].as_str().unwrap().to_owned();
    let mut statuses = Vec::new();
    let sample = loop {
        let polled: Value =
            client.get(&polling_url).header("x-key", "bfl-test").send().await.unwrap().json().await.unwrap();
        statuses.push(polled["status"].as_str().unwrap().to_owned());
        if polled["status"] == "Ready" {
            break polled["result"]["sample"].as_str().unwrap().to_owned();
        }
        assert!(statuses.len() < 10, "{statuses:?}");
    };
    assert_eq!(statuses, ["Pending", "Pending", "Ready"]);
    let image = client.get(&sample).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(png_size(&image), (512, 384));
    // The real API's validation: sizes are multiples of 32 within 256..=1440, and a key is required.
    let bad = client
        .post(format!("{}/v1/flux-dev", mock.url()))
        .header("x-key", "bfl-test")
        .json(&json!({"prompt": "x", "width": 500}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let anonymous =
        client.post(format!("{}/v1/flux-dev", mock.url())).json(&json!({"prompt": "x"})).send().await.unwrap();
    assert_eq!(anonymous.status(), 403);
}

#[tokio::test]
async fn bfl_faults_fail_the_task() {
    let mock = MediaMock::start().await.unwrap();
    mock.set_pending_polls(0);
    mock.set_fault(MediaFault::TaskFailed, Some(1));
    let client = reqwest::Client::new();
    let submitted: Value = client
        .post(format!("{}/v1/flux-pro-1.1", mock.url()))
        .header("x-key", "k")
        .json(&json!({"prompt": "x"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let polled: Value = client
        .get(submitted["polling_url"].as_str().unwrap())
        .header("x-key", "k")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(polled["status"], "Error");
}

#[tokio::test]
async fn elevenlabs_speaks_transcribes_and_lists_voices() {
    let mock = MediaMock::start().await.unwrap();
    let client = reqwest::Client::new();
    let text = "Hello, this is a test.";
    let audio = client
        .post(format!("{}/v1/text-to-speech/pNInz6obpgDQGcFmaJgB?output_format=pcm_16000", mock.url()))
        .header("xi-api-key", "el-test")
        .json(&json!({"text": text, "model_id": "eleven_multilingual_v2"}))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let seconds = audio.len() as f64 / 2.0 / 16000.0;
    assert!((seconds - media_mock::tts_seconds(text)).abs() < 0.01, "{seconds}");
    let wav = media_mock::wav(16000, &audio);
    let form = reqwest::multipart::Form::new()
        .text("model_id", "scribe_v1")
        .part("file", reqwest::multipart::Part::bytes(wav).file_name("note.wav").mime_str("audio/wav").unwrap());
    let transcript: Value = client
        .post(format!("{}/v1/speech-to-text", mock.url()))
        .header("xi-api-key", "el-test")
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(transcript["text"].as_str().unwrap().starts_with("transcribed"));
    assert!(transcript["words"].as_array().unwrap().len() > 1);
    let voices: Value = client
        .get(format!("{}/v1/voices", mock.url()))
        .header("xi-api-key", "k")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(voices["voices"].as_array().unwrap().iter().any(|v| v["name"] == "Adam"));
    let anonymous = client.get(format!("{}/v1/voices", mock.url())).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}
