//! Speech keeps working when ElevenLabs fails: text-to-speech falls back to OpenAI's `tts-1` and speech-to-text to
//! `whisper-1` (the OpenAI mock speaks `/v1/audio/speech` and `/v1/audio/transcriptions`), each answer saying what
//! the fallback could not do as asked, charged once at the price of the model that answered. A request no
//! fallback can serve (a format OpenAI does not make, a text too long for it) is not sent there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "mock/media.rs"]
mod media_mock;

use common::mock::{MockConfig, MockServer};
use common::Gateway;
use media_mock::{MediaFault, MediaMock};
use serde_json::{json, Value};

async fn setup() -> (MockServer, MediaMock, Gateway, String) {
    let openai = MockServer::start(MockConfig::default()).await.unwrap();
    let eleven = MediaMock::start().await.unwrap();
    let mut env = common::mock_env(&openai);
    env.insert("ELEVENLABS_BASE_URL".into(), eleven.url());
    env.insert("ELEVENLABS_API_KEY".into(), "xi-test".into());
    let gw = Gateway::start(env, |c| {
        c.pool.max_retries = 0;
        c.pool.breaker_failures = 1000;
    })
    .await;
    let (_, key) = gw.workspace("1000", 1000, 10, 1_000_000).await;
    (openai, eleven, gw, key)
}

async fn task(gw: &Gateway, key: &str, body: Value) -> (u16, Value) {
    let response = gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth(key).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn warning<'a>(answer: &'a Value, param: &str) -> &'a Value {
    answer["warnings"].as_array().and_then(|w| w.iter().find(|w| w["param"] == param)).unwrap_or_else(|| {
        panic!("no warning for {param}: {answer}");
    })
}

#[actix_web::test]
async fn a_failing_elevenlabs_falls_back_to_openai_speech_saying_what_changed() {
    let (openai, eleven, gw, key) = setup().await;
    eleven.set_fault(MediaFault::Status { status: 503, retry_after: None }, None);
    let text = "Hello, this is a test of the text-to-speech service.";
    let (status, answer) = task(
        &gw,
        &key,
        json!({"model": "eleven-labs-tts", "text": text, "voice": "adam",
               "voice_settings": {"stability": 0.5, "speed": 1.1}, "output_format": "mp3_44100_128"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "speech.generation");
    assert_eq!(answer["model"], "tts-1");
    assert_eq!(answer["metadata"]["fallback"]["used"], true, "{answer}");
    assert_eq!(warning(&answer, "output_format")["used"], "mp3_24000_160");
    assert_eq!(
        (warning(&answer, "voice")["asked"].as_str(), warning(&answer, "voice")["used"].as_str()),
        (Some("adam"), Some("alloy"))
    );
    assert_eq!(warning(&answer, "voice_settings.stability")["used"], Value::Null);
    assert_eq!(answer["audio"]["format"], "mp3_24000_160");
    assert_eq!(answer["audio"]["content_type"], "audio/mpeg");
    // The gateway read the MP3 it stored: about 0.06 s per character, as the mock speaks.
    let seconds = answer["audio"]["duration_seconds"].as_f64().unwrap();
    assert!((seconds - text.len() as f64 * media_mock::SECONDS_PER_CHAR).abs() < 0.2, "{seconds}");
    let sent = openai.last_request().unwrap();
    assert_eq!(sent.path, "/v1/audio/speech");
    assert_eq!(
        sent.body,
        json!({"model": "tts-1", "input": text, "voice": "alloy", "response_format": "mp3", "speed": 1.1})
    );
    // Charged once, at tts-1's 15 credits per 1,000 characters.
    let charged = answer["metadata"]["credits_charged"].as_f64().unwrap();
    assert!((charged - text.chars().count() as f64 * 0.015).abs() < 0.0011, "{charged}");

    // PCM at 24 kHz is what OpenAI makes: no format warning.
    let (status, answer) = task(
        &gw,
        &key,
        json!({"model": "eleven-labs-tts", "text": "Hi there", "voice": "nova", "output_format": "pcm_24000"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.get("warnings").is_none(), "nova is a tts-1 voice and pcm_24000 its format: {answer}");
    assert_eq!(answer["model"], "tts-1");
    assert_eq!(answer["audio"]["bytes"].as_u64().unwrap() % 2, 0);

    // μ-law is not made by OpenAI, and 5,000 characters are more than tts-1 speaks: ElevenLabs' failure stands and
    // nothing is charged.
    let before = gw.wallet(&key).await;
    let calls = openai.calls();
    let (status, answer) =
        task(&gw, &key, json!({"model": "eleven-labs-tts", "text": "Hi", "output_format": "ulaw_8000"})).await;
    assert_eq!(status, 502, "{answer}");
    let (status, _) = task(&gw, &key, json!({"model": "eleven-labs-tts", "text": "word ".repeat(1000)})).await;
    assert_eq!(status, 502);
    assert_eq!(openai.calls(), calls);
    assert_eq!(gw.wallet(&key).await, before);
    gw.stop().await;
}

#[actix_web::test]
async fn a_failing_elevenlabs_transcription_falls_back_to_whisper() {
    let (openai, eleven, gw, key) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let wav_path = dir.path().join("in.wav");
    let out = std::process::Command::new("espeak-ng")
        .args(["-w", wav_path.to_str().unwrap(), "Switchyard falls back."])
        .output()
        .expect("espeak-ng is needed (make setup installs it)");
    assert!(out.status.success());
    let wav = std::fs::read(&wav_path).unwrap();
    eleven.set_fault(MediaFault::Status { status: 500, retry_after: None }, None);
    let form = reqwest::multipart::Form::new()
        .text("model", "eleven-labs-stt")
        .text("language", "en")
        .part("audio", reqwest::multipart::Part::bytes(wav.clone()).file_name("in.wav").mime_str("audio/wav").unwrap());
    let response =
        gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth(&key).multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!((answer["object"].as_str(), answer["model"].as_str()), (Some("transcription"), Some("whisper-1")));
    assert_eq!(answer["text"], format!("transcribed {} bytes", wav.len()));
    assert_eq!(answer["language"], "en");
    assert_eq!(answer["words"][0]["text"], "transcribed");
    assert_eq!(answer["metadata"]["fallback"]["used"], true);
    let sent = openai.last_request().unwrap();
    assert_eq!(sent.path, "/v1/audio/transcriptions");
    // 0.1 credits a second, to the millisecond.
    let millis = (answer["duration_seconds"].as_f64().unwrap() * 1000.0).round();
    let charged = answer["metadata"]["credits_charged"].as_f64().unwrap();
    assert!((charged - millis * 0.0001).abs() < 0.0011, "{charged} for {millis} ms");

    // Asked for directly, the fallback answers with no fallback said.
    eleven.set_fault(MediaFault::None, None);
    let (status, answer) =
        task(&gw, &key, json!({"model": "eleven-labs-tts", "text": "Hi", "use_fallback_model": true})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model"], "tts-1");
    assert_eq!(answer["metadata"]["fallback"]["reason"], "manual", "{answer}");
    gw.stop().await;
}
