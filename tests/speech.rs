//! Speech through the gateway against the ElevenLabs mock, with real audio made by espeak-ng and ffmpeg and measured
//! by ffprobe: text-to-speech (stored as it streams, charged per character), speech-to-speech and speech-to-text
//! (charged per second of audio in), multipart bodies and media_refs, the OpenAI audio faces, and the bad paths.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "mock/media.rs"]
mod media_mock;

use base64::Engine as _;
use common::{error_code, Gateway, ADMIN_KEY};
use media_mock::{MediaFault, MediaMock};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::Command;

async fn setup() -> (MediaMock, Gateway) {
    setup_with(|_| {}).await
}

async fn setup_with(tweak: impl FnOnce(&mut switchyard::config::Config)) -> (MediaMock, Gateway) {
    let mock = MediaMock::start().await.unwrap();
    let env = HashMap::from([
        ("SWITCHYARD_ADMIN_KEY".to_owned(), ADMIN_KEY.to_owned()),
        ("ELEVENLABS_BASE_URL".to_owned(), mock.url()),
        ("ELEVENLABS_API_KEY".to_owned(), "xi-test".to_owned()),
    ]);
    let gw = Gateway::start(env, |c| {
        c.pool.retry_base_ms = 1;
        tweak(c);
    })
    .await;
    (mock, gw)
}

/// Runs a tool, failing the test with its stderr when it fails.
fn tool(program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} is needed for the speech tests (make setup installs it): {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Real speech: espeak-ng saying `text`, as WAV.
fn espeak_wav(dir: &std::path::Path, text: &str) -> Vec<u8> {
    let path = dir.join("speech.wav");
    tool("espeak-ng", &["-w", path.to_str().unwrap(), text]);
    std::fs::read(path).unwrap()
}

/// The same speech as MP3 (ffmpeg).
fn to_mp3(dir: &std::path::Path, wav: &[u8]) -> Vec<u8> {
    let input = dir.join("in.wav");
    let output = dir.join("out.mp3");
    std::fs::write(&input, wav).unwrap();
    tool("ffmpeg", &["-y", "-loglevel", "error", "-i", input.to_str().unwrap(), output.to_str().unwrap()]);
    std::fs::read(output).unwrap()
}

/// Seconds of audio, as ffprobe reads them.
fn probe_seconds(dir: &std::path::Path, bytes: &[u8], extension: &str) -> f64 {
    let path = dir.join(format!("probe.{extension}"));
    std::fs::write(&path, bytes).unwrap();
    let out =
        tool("ffprobe", &["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path.to_str().unwrap()]);
    String::from_utf8(out).unwrap().trim().parse().unwrap()
}

/// `sox --i -D`: the duration sox reads from a WAV.
fn sox_seconds(dir: &std::path::Path, wav: &[u8]) -> f64 {
    let path = dir.join("sox.wav");
    std::fs::write(&path, wav).unwrap();
    String::from_utf8(tool("sox", &["--i", "-D", path.to_str().unwrap()])).unwrap().trim().parse().unwrap()
}

fn b64(answer: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(answer["audio"]["b64_json"].as_str().unwrap()).unwrap()
}

async fn media_count(gw: &Gateway, workspace: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM media WHERE workspace_id = ?")
        .bind(workspace)
        .fetch_one(gw.state.store.sqlite_pool().unwrap())
        .await
        .unwrap()
}

async fn usage_statuses(gw: &Gateway, workspace: &str) -> Vec<(String, i64, u64)> {
    gw.state.engine().flush_usage().await;
    let rows: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT status, credits_milli, units FROM usage WHERE workspace_id = ? ORDER BY created_at")
            .bind(workspace)
            .fetch_all(gw.state.store.sqlite_pool().unwrap())
            .await
            .unwrap();
    rows.into_iter().map(|(s, c, u)| (s, c, u as u64)).collect()
}

/// Adam's voice id: faults are counted per upstream call, and a name would cost a voice lookup first.
const ADAM: &str = "pNInz6obpgDQGcFmaJgB";

const TEXT: &str = "Hello, this is a test of the text-to-speech service.";

#[actix_web::test]
async fn text_to_speech_is_streamed_stored_and_charged_per_character() {
    let (mock, gw) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let (workspace, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    let body = json!({"model": "eleven-labs-tts", "text": TEXT, "voice": "adam",
        "voice_settings": {"stability": 0.5, "similarity_boost": 0.5}, "output_format": "mp3_44100_128"});
    let response =
        gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "speech.generation");
    assert_eq!(answer["model"], "eleven-labs-tts");
    assert!(answer["id"].as_str().unwrap().starts_with("speech_"));
    assert_eq!(answer["audio"]["content_type"], "audio/mpeg");
    // What the provider was asked: Adam's voice id (looked up by name), the model, the settings, the format.
    let sent = mock.last_request().unwrap();
    assert_eq!(sent.path, "/v1/text-to-speech/pNInz6obpgDQGcFmaJgB/stream?output_format=mp3_44100_128");
    assert_eq!(sent.header("xi-api-key"), Some("xi-test"));
    assert_eq!(sent.json()["model_id"], "eleven_multilingual_v2");
    assert_eq!(sent.json()["voice_settings"], json!({"stability": 0.5, "similarity_boost": 0.5}));
    // Real MP3 of the length the provider spoke, the same bytes inline and at the URL.
    let audio = b64(&answer);
    let expected = media_mock::tts_seconds(TEXT);
    let measured = probe_seconds(dir.path(), &audio, "mp3");
    assert!((measured - expected).abs() < 0.15, "ffprobe {measured} s, spoke {expected} s");
    let reported = answer["audio"]["duration_seconds"].as_f64().unwrap();
    assert!((reported - expected).abs() < 0.15, "reported {reported} s, spoke {expected} s");
    let fetched = gw.client.get(answer["audio"]["url"].as_str().unwrap()).bearer_auth(&key).send().await.unwrap();
    assert_eq!(fetched.headers()["content-type"], "audio/mpeg");
    assert_eq!(fetched.bytes().await.unwrap().to_vec(), audio);
    // 180 credits per 1,000 characters.
    let characters = TEXT.chars().count() as i64;
    assert_eq!(answer["usage"]["characters"], characters);
    let cost = characters * 180;
    assert_eq!(answer["metadata"]["credits_charged"].as_f64().unwrap(), cost as f64 / 1000.0);
    assert_eq!(gw.wallet(&key).await, (100_000 - cost, 0));
    let usage = usage_statuses(&gw, &workspace).await;
    assert_eq!(usage, vec![("ok".to_owned(), cost, characters as u64)]);
    let bytes: i64 = sqlx::query_scalar("SELECT output_bytes FROM usage WHERE workspace_id = ?")
        .bind(&workspace)
        .fetch_one(gw.state.store.sqlite_pool().unwrap())
        .await
        .unwrap();
    assert_eq!(bytes, audio.len() as i64, "the record carries the output size");
    gw.stop().await;
}

#[actix_web::test]
async fn wav_output_is_a_valid_file_of_the_spoken_length() {
    let (_mock, gw) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let body = json!({"model": "eleven-labs-tts", "text": TEXT, "voice": "Rachel", "output_format": "wav_22050"});
    let answer: Value = gw.post("/api/v1/task").json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["audio"]["content_type"], "audio/wav", "{answer}");
    let audio = b64(&answer);
    let measured = sox_seconds(dir.path(), &audio);
    assert!((measured - media_mock::tts_seconds(TEXT)).abs() < 0.01, "sox {measured} s");
    // Raw PCM is measured from its byte count.
    let body = json!({"model": "eleven-labs-tts", "text": TEXT, "output_format": "pcm_16000"});
    let answer: Value = gw.post("/api/v1/task").json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["audio"]["content_type"], "audio/pcm");
    let seconds = b64(&answer).len() as f64 / 32_000.0;
    assert!((answer["audio"]["duration_seconds"].as_f64().unwrap() - seconds).abs() < 0.01);
    gw.stop().await;
}

#[actix_web::test]
async fn bad_speech_requests_are_refused_before_anything_is_charged() {
    let (mock, gw) = setup().await;
    let (_, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    let long = "a".repeat(10_001);
    let cases = [
        (json!({"model": "eleven-labs-tts", "text": "  "}), "text"),
        (json!({"model": "eleven-labs-tts", "text": long}), "text"),
        (json!({"model": "eleven-labs-tts", "text": "hi", "voice_settings": {"loudness": 1}}), "voice_settings"),
        (json!({"model": "eleven-labs-tts", "text": "hi", "voice_settings": {"stability": 2}}), "voice_settings"),
        (json!({"model": "eleven-labs-tts", "text": "hi", "voice_settings": "calm"}), "voice_settings"),
        (json!({"model": "eleven-labs-tts", "text": "hi", "output_format": "mp3_999"}), "output_format"),
        (json!({"model": "eleven-labs-tts", "text": "hi", "audio": "med_x"}), "audio"),
        (json!({"model": "eleven-labs-stt"}), "audio"),
        (json!({"model": "eleven-labs-stt", "audio": "med_x", "language": "English"}), "language"),
    ];
    for (body, param) in cases {
        let response =
            gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth(&key).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["param"], param, "{body}: {error}");
    }
    // An unknown voice is the provider's refusal, named with the voices there are.
    let body = json!({"model": "eleven-labs-tts", "text": "hi", "voice": "Nobody"});
    let response =
        gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth(&key).json(&body).send().await.unwrap();
    let (status, code) = error_code(response).await;
    assert_eq!((status, code.as_str()), (400, "provider_rejected"));
    assert_eq!(mock.calls("/v1/text-to-speech"), 0);
    assert_eq!(gw.wallet(&key).await, (100_000, 0), "nothing charged, nothing held");
    gw.stop().await;
}

#[actix_web::test]
async fn a_cut_audio_stream_is_an_error_not_stored_and_not_charged() {
    let (mock, gw) = setup().await;
    let (workspace, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    mock.set_fault(MediaFault::CutAudio { after_bytes: 6000 }, Some(1));
    let body = json!({"model": "eleven-labs-tts", "text": TEXT, "voice": ADAM});
    let response =
        gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth(&key).json(&body).send().await.unwrap();
    let (status, code) = error_code(response).await;
    assert_eq!((status, code.as_str()), (502, "provider_error"));
    assert_eq!(media_count(&gw, &workspace).await, 0, "a half-written file is never visible");
    assert_eq!(gw.wallet(&key).await, (100_000, 0));
    assert_eq!(usage_statuses(&gw, &workspace).await, vec![("cut".to_owned(), 0, 0)]);
    // Through the OpenAI face the body is streamed: the cut reaches the client as a broken body, never a short
    // file that looks whole.
    mock.set_fault(MediaFault::CutAudio { after_bytes: 6000 }, Some(1));
    let body = json!({"model": "eleven-labs-tts", "input": TEXT, "voice": ADAM});
    let response =
        gw.client.post(format!("{}/v1/audio/speech", gw.url)).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200, "the head went out before the cut");
    assert!(response.bytes().await.is_err(), "the client must see the body break");
    assert_eq!(media_count(&gw, &workspace).await, 0);
    assert_eq!(gw.wallet(&key).await, (100_000, 0));
    gw.stop().await;
}

#[actix_web::test]
async fn an_upstream_429_is_retried_and_charged_once() {
    let (mock, gw) = setup().await;
    let (workspace, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    mock.set_fault(MediaFault::Status { status: 429, retry_after: None }, Some(1));
    let body = json!({"model": "eleven-labs-tts", "text": "Retry me", "voice": "21m00Tcm4TlvDq8ikWAM"});
    let response =
        gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["metadata"]["attempts"], 2);
    assert_eq!(mock.calls("/v1/voices"), 0, "a voice id needs no lookup");
    let cost = 8 * 180;
    assert_eq!(gw.wallet(&key).await, (100_000 - cost, 0));
    assert_eq!(usage_statuses(&gw, &workspace).await.len(), 1);
    // A provider that keeps failing: 503 overloaded for 429s, nothing charged.
    mock.set_fault(MediaFault::Status { status: 500, retry_after: None }, None);
    let response =
        gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(error_code(response).await, (502, "provider_error".to_owned()));
    assert_eq!(gw.wallet(&key).await, (100_000 - cost, 0));
    gw.stop().await;
}

fn multipart(fields: &[(&str, &str)], file: Option<(&str, &str, &str, Vec<u8>)>) -> reqwest::multipart::Form {
    let mut form = reqwest::multipart::Form::new();
    for (name, value) in fields {
        form = form.text(name.to_string(), value.to_string());
    }
    if let Some((name, filename, content_type, bytes)) = file {
        let part =
            reqwest::multipart::Part::bytes(bytes).file_name(filename.to_owned()).mime_str(content_type).unwrap();
        form = form.part(name.to_owned(), part);
    }
    form
}

#[actix_web::test]
async fn speech_to_speech_takes_a_multipart_file_and_charges_per_second_in() {
    let (mock, gw) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    let wav = espeak_wav(dir.path(), "The quick brown fox jumps over the lazy dog.");
    let seconds = sox_seconds(dir.path(), &wav);
    let form = multipart(
        &[
            ("model", "eleven-labs-sts"),
            ("voice", "adam"),
            ("voice_settings", r#"{"stability": 0.5, "similarity_boost": 0.5}"#),
            ("output_format", "wav_16000"),
        ],
        Some(("audio", "input.wav", "audio/wav", wav.clone())),
    );
    let response =
        gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth(&key).multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "speech.generation", "{answer}");
    assert!(answer["id"].as_str().unwrap().starts_with("speech_"));
    let sent = mock.last_request().unwrap();
    assert_eq!(sent.path, "/v1/speech-to-speech/pNInz6obpgDQGcFmaJgB/stream?output_format=wav_16000");
    let parts = media_mock::parse_multipart(sent.header("content-type").unwrap(), &sent.body).unwrap();
    let audio_part = parts.iter().find(|p| p.name == "audio").unwrap();
    assert_eq!(audio_part.data, wav, "the audio went upstream unchanged");
    // The converted speech is as long as the input.
    let out = sox_seconds(dir.path(), &b64(&answer));
    assert!((out - seconds).abs() < 0.01, "in {seconds} s, out {out} s");
    let input_ms = (seconds * 1000.0).round() as i64;
    assert!((answer["usage"]["input_seconds"].as_f64().unwrap() - seconds).abs() < 0.002);
    // 3 credits per second: 3 millicredits per millisecond.
    let charged = (answer["metadata"]["credits_charged"].as_f64().unwrap() * 1000.0).round() as i64;
    assert!((charged - input_ms * 3).abs() <= 3, "charged {charged} for {input_ms} ms");
    gw.stop().await;
}

#[actix_web::test]
async fn speech_to_text_reads_an_uploaded_mp3_by_media_ref() {
    let (mock, gw) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let (workspace, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    let mp3 = to_mp3(dir.path(), &espeak_wav(dir.path(), "Switchyard transcribes what you upload."));
    let seconds = probe_seconds(dir.path(), &mp3, "mp3");
    // Upload: init, PUT, complete.
    let init: Value = gw
        .client
        .post(format!("{}/api/media/upload/init", gw.url))
        .bearer_auth(&key)
        .json(&json!({"filename": "note.mp3", "content_type": "audio/mpeg", "bytes": mp3.len()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let put = gw.client.put(init["upload_url"].as_str().unwrap()).body(mp3.clone()).send().await.unwrap();
    assert_eq!(put.status(), 200);
    let done: Value = gw
        .client
        .post(format!("{}/api/media/upload/complete", gw.url))
        .bearer_auth(&key)
        .json(&json!({"upload_id": init["upload_id"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let media_ref = done["media_ref"].as_str().unwrap();
    let body = json!({"model": "eleven-labs-stt", "audio": media_ref, "language": "en"});
    let response =
        gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "transcription");
    assert_eq!(answer["text"], format!("transcribed {} bytes", mp3.len()), "the mock names what it received");
    assert_eq!(answer["language"], "en");
    let sent = mock.last_request().unwrap();
    assert_eq!(sent.path, "/v1/speech-to-text");
    let parts = media_mock::parse_multipart(sent.header("content-type").unwrap(), &sent.body).unwrap();
    assert_eq!(parts.iter().find(|p| p.name == "model_id").unwrap().data, b"scribe_v1");
    assert_eq!(parts.iter().find(|p| p.name == "language_code").unwrap().data, b"en");
    // The gateway's reading of the MP3's length agrees with ffprobe's, and sets the price.
    let duration = answer["duration_seconds"].as_f64().unwrap();
    assert!((duration - seconds).abs() < 0.06, "gateway {duration} s, ffprobe {seconds} s");
    let charged = (answer["metadata"]["credits_charged"].as_f64().unwrap() * 1000.0).round() as i64;
    assert_eq!(charged, ((duration * 1000.0).round() as i64 * 111 + 999) / 1000);
    // Another workspace cannot use this media_ref: 404, as if it did not exist.
    let (_, other) = gw.workspace("100", 1000, 10, 1_000_000).await;
    let response =
        gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth(&other).json(&body).send().await.unwrap();
    let error: Value = {
        assert_eq!(response.status(), 404);
        response.json().await.unwrap()
    };
    assert_eq!(error["error"]["param"], "audio");
    assert_eq!(gw.wallet(&other).await, (100_000, 0));
    assert_eq!(usage_statuses(&gw, &workspace).await.len(), 1);
    gw.stop().await;
}

#[actix_web::test]
async fn an_idempotency_key_replays_a_multipart_request_whatever_its_boundary() {
    let (mock, gw) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let (workspace, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    let wav = espeak_wav(dir.path(), "Once only.");
    let send = |wav: Vec<u8>, model: &'static str| {
        // reqwest draws a new boundary for every form.
        let form = multipart(&[("model", model)], Some(("audio", "once.wav", "audio/wav", wav)));
        gw.client
            .post(format!("{}/api/v1/task", gw.url))
            .bearer_auth(&key)
            .header("Idempotency-Key", "stt-once")
            .multipart(form)
            .send()
    };
    let first: Value = send(wav.clone(), "eleven-labs-stt").await.unwrap().json().await.unwrap();
    let second: Value = send(wav.clone(), "eleven-labs-stt").await.unwrap().json().await.unwrap();
    assert_eq!(first["id"], second["id"], "the second is a replay");
    assert_eq!(mock.calls("/v1/speech-to-text"), 1);
    assert_eq!(usage_statuses(&gw, &workspace).await.len(), 1, "charged once");
    // The same key with another body is a conflict.
    let mut other = wav.clone();
    let last = other.len() - 1;
    other[last] ^= 1;
    let response = send(other, "eleven-labs-stt").await.unwrap();
    assert_eq!(error_code(response).await, (409, "idempotency_conflict".to_owned()));
    gw.stop().await;
}

#[actix_web::test]
async fn multipart_bodies_are_checked_part_by_part() {
    let (mock, gw) = setup_with(|c| c.media.max_upload_bytes = 200_000).await;
    let dir = tempfile::tempdir().unwrap();
    let wav = espeak_wav(dir.path(), "Short.");
    let post = |form: reqwest::multipart::Form| {
        gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth(&gw.key).multipart(form).send()
    };
    // Bytes that are not audio, whatever the header says: 415.
    let png = media_mock::png(8, 8, 1);
    let form = multipart(&[("model", "eleven-labs-stt")], Some(("audio", "x.mp3", "audio/mpeg", png)));
    let response = post(form).await.unwrap();
    assert_eq!(error_code(response).await, (415, "unsupported_media_type".to_owned()));
    let form = multipart(&[("model", "eleven-labs-stt")], Some(("audio", "x.wav", "audio/wav", b"hello".to_vec())));
    assert_eq!(post(form).await.unwrap().status(), 415);
    // Truncated audio (a WAV header with no samples) cannot be measured: 400.
    let form = multipart(&[("model", "eleven-labs-stt")], Some(("audio", "x.wav", "audio/wav", wav[..44].to_vec())));
    assert_eq!(error_code(post(form).await.unwrap()).await, (400, "invalid_field".to_owned()));
    // Too big: 413.
    let big = [wav.clone(), vec![0u8; 200_000]].concat();
    let form = multipart(&[("model", "eleven-labs-stt")], Some(("audio", "big.wav", "audio/wav", big)));
    assert_eq!(error_code(post(form).await.unwrap()).await, (413, "payload_too_large".to_owned()));
    // A file in the wrong field, a field twice, too many parts, a path for a file name.
    let form = multipart(&[("model", "eleven-labs-stt")], Some(("image", "x.wav", "audio/wav", wav.clone())));
    assert_eq!(post(form).await.unwrap().status(), 415);
    let form = multipart(&[("model", "eleven-labs-stt"), ("model", "eleven-labs-stt")], None);
    assert_eq!(error_code(post(form).await.unwrap()).await, (400, "invalid_field".to_owned()));
    let many: Vec<(String, String)> = (0..40).map(|i| (format!("f{i}"), "x".to_owned())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(post(multipart(&many, None)).await.unwrap().status(), 400);
    let form = multipart(&[("model", "eleven-labs-stt")], Some(("audio", "../../etc/x.wav", "audio/wav", wav.clone())));
    assert_eq!(error_code(post(form).await.unwrap()).await, (400, "invalid_field".to_owned()));
    // A file and a media_ref for the same field.
    let form =
        multipart(&[("model", "eleven-labs-stt"), ("audio", "med_x")], Some(("audio", "a.wav", "audio/wav", wav)));
    assert_eq!(post(form).await.unwrap().status(), 400);
    // Unknown fields are named, as in JSON bodies.
    let form = multipart(&[("model", "eleven-labs-tts"), ("text", "hi"), ("colour", "red")], None);
    let response = post(form).await.unwrap();
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "unknown_field");
    assert_eq!(error["error"]["param"], "colour");
    assert_eq!(mock.calls("/v1/"), 0, "nothing reached the provider");
    gw.stop().await;
}

#[actix_web::test]
async fn the_openai_audio_faces_stream_speech_and_transcribe_multipart() {
    let (_mock, gw) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let (workspace, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    let body = json!({"model": "eleven-labs-tts", "input": TEXT, "voice": "rachel", "response_format": "wav"});
    let response =
        gw.client.post(format!("{}/v1/audio/speech", gw.url)).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "audio/wav");
    let wav = response.bytes().await.unwrap().to_vec();
    let seconds = sox_seconds(dir.path(), &wav);
    assert!((seconds - media_mock::tts_seconds(TEXT)).abs() < 0.01);
    // Stored as it streamed, and charged once the last byte was in.
    assert_eq!(media_count(&gw, &workspace).await, 1);
    let cost = TEXT.chars().count() as i64 * 180;
    assert_eq!(gw.settled(&key).await, (100_000 - cost, 0));
    // Transcriptions: multipart with `file`; json, verbose_json and text.
    for (format, check) in [("json", "text"), ("verbose_json", "duration"), ("text", "")] {
        let form = multipart(
            &[("model", "eleven-labs-stt"), ("response_format", format), ("timestamp_granularities[]", "word")],
            Some(("file", "speech.wav", "audio/wav", wav.clone())),
        );
        let response = gw
            .client
            .post(format!("{}/v1/audio/transcriptions", gw.url))
            .bearer_auth(&key)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{format}");
        let text = response.text().await.unwrap();
        if check.is_empty() {
            assert!(text.starts_with("transcribed "), "{text}");
            continue;
        }
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert!(answer.get(check).is_some(), "{format}: {answer}");
        if format == "verbose_json" {
            assert!((answer["duration"].as_f64().unwrap() - seconds).abs() < 0.01);
            assert!(!answer["words"].as_array().unwrap().is_empty());
        }
    }
    let form = multipart(&[("model", "eleven-labs-stt"), ("response_format", "srt")], None);
    let response =
        gw.client.post(format!("{}/v1/audio/transcriptions", gw.url)).bearer_auth(&key).multipart(form).send().await;
    assert_eq!(error_code(response.unwrap()).await, (400, "invalid_field".to_owned()));
    let response = gw
        .client
        .post(format!("{}/v1/audio/speech", gw.url))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-4", "input": "x", "voice": "adam"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (400, "unsupported_model".to_owned()));
    gw.stop().await;
}

#[actix_web::test]
async fn a_jpeg_can_be_asked_of_flux_and_is_stored_as_one() {
    let mock = MediaMock::start().await.unwrap();
    let env =
        HashMap::from([("BFL_BASE_URL".to_owned(), mock.url()), ("BFL_API_KEY".to_owned(), "bfl-test".to_owned())]);
    let gw = Gateway::start(env, |c| c.upstream.poll_interval_ms = 5).await;
    let dir = tempfile::tempdir().unwrap();
    let body = json!({"model": "flux-1-schnell", "prompt": "a lighthouse", "width": 512, "height": 256,
        "output_format": "jpeg"});
    let answer: Value = gw.post("/api/v1/task").json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["data"][0]["content_type"], "image/jpeg", "{answer}");
    assert_eq!(mock.last_request().unwrap().json()["output_format"], Value::Null, "the sample fetch was last");
    assert_eq!(mock.calls("/samples/"), 1);
    let jpeg =
        base64::engine::general_purpose::STANDARD.decode(answer["data"][0]["b64_json"].as_str().unwrap()).unwrap();
    let path = dir.path().join("x.jpg");
    std::fs::write(&path, &jpeg).unwrap();
    let size = tool(
        "ffprobe",
        &["-v", "error", "-show_entries", "stream=width,height", "-of", "csv=p=0", path.to_str().unwrap()],
    );
    assert_eq!(String::from_utf8(size).unwrap().trim(), "512,256");
    gw.stop().await;
}
