//! Realtime voice, composed, from real clients: a chat model (claude-3-haiku) as a voice agent, driven by the official
//! OpenAI Python SDK's realtime client (unchanged; real speech from espeak-ng, a turn committed by hand and one by
//! server VAD) and by a web page in headless Chromium (no API key: an `ek_` client secret in the WebSocket
//! subprotocol, recorded speech decoded and resampled with Web Audio, the answer played back with Web Audio).
//! Behind the gateway: ElevenLabs speech-to-text and the TTS `stream-input` socket (mock), Anthropic (mock).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "mock/media.rs"]
mod media_mock;

use actix_web::{web, App, HttpResponse, HttpServer};
use common::mock::{reply_text, MockConfig, MockServer};
use common::{mock_env, Gateway};
use media_mock::MediaMock;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

struct Setup {
    _chat: MockServer,
    media: MediaMock,
    gw: Gateway,
}

async fn setup(cors_origin: Option<String>) -> Setup {
    let chat = MockServer::start(MockConfig::default()).await.unwrap();
    let media = MediaMock::start().await.unwrap();
    let mut env = mock_env(&chat);
    env.insert("ELEVENLABS_BASE_URL".into(), media.url());
    env.insert("ELEVENLABS_API_KEY".into(), "xi-test".into());
    let gw = Gateway::start(env, move |c| {
        c.pool.retry_base_ms = 1;
        c.server.cors_allowed_origins = cors_origin.into_iter().collect();
    })
    .await;
    Setup { _chat: chat, media, gw }
}

/// The workspace's usage records: (model, credits in millicredits, status).
async fn records(gw: &Gateway, workspace: &str) -> Vec<(String, i64, String)> {
    gw.state.engine().flush_usage().await;
    sqlx::query_as("SELECT model, credits_milli, status FROM usage WHERE workspace_id = ? ORDER BY created_at")
        .bind(workspace)
        .fetch_all(gw.state.store.sqlite_pool().unwrap())
        .await
        .unwrap()
}

/// How many records each of the session's three models has, all `ok`; and what they were charged altogether.
fn tally(gw: &Gateway, records: &[(String, i64, String)]) -> ([usize; 3], i64) {
    assert!(records.iter().all(|r| r.2 == "ok"), "{records:?}");
    let realtime = &gw.state.config.realtime;
    let count = |model: &str| records.iter().filter(|r| r.0 == model).count();
    let counts = [count(&realtime.speech_to_text), count("claude-3-haiku"), count(&realtime.text_to_speech)];
    assert_eq!(counts.iter().sum::<usize>(), records.len(), "only the session's three models: {records:?}");
    (counts, records.iter().map(|r| r.1).sum())
}

#[actix_web::test]
async fn the_official_openai_sdk_holds_a_spoken_conversation_with_a_chat_model() {
    let Some(python) = common::python() else {
        assert!(std::env::var_os("CI").is_none(), "CI must run the OpenAI SDK test: run `make test`");
        eprintln!("SKIPPED: the OpenAI SDK realtime test needs `make test` (it installs the SDK into .cache/venv)");
        return;
    };
    let Setup { _chat, media, gw } = setup(None).await;
    let (workspace, key) = gw.workspace("5000", 1000, 2, 1_000_000).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/openai_realtime_composed.py");
    let run = tokio::process::Command::new(python)
        .arg(script)
        .env("SWITCHYARD_URL", &gw.url)
        .env("SWITCHYARD_KEY", &key)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run).await.expect("the SDK script ends").unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the script's report is not JSON ({e}):\n{stdout}\n{stderr}"));

    // Each turn: the speech transcribed (the mock names the bytes it got), the chat model's answer to that
    // transcript spoken back, as its transcript and its audio.
    let strings = |field: &str| -> Vec<String> {
        report[field].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
    };
    let (transcripts, replies) = (strings("transcripts"), strings("replies"));
    assert_eq!((transcripts.len(), replies.len()), (2, 2), "{report}");
    for (transcript, reply) in transcripts.iter().zip(&replies) {
        assert!(transcript.starts_with("transcribed "), "{report}");
        assert_eq!(*reply, reply_text(transcript, 12), "the chat model's answer to the transcript: {report}");
    }
    let audio: Vec<f64> = report["audio_seconds"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(audio.iter().all(|s| *s > 0.0), "{report}");

    // Both answers went into the TTS socket, every character once, and all the audio it made reached the SDK.
    let spoken = media.ws().stats();
    let characters: usize = replies.iter().map(|r| r.chars().count()).sum();
    assert_eq!((spoken.tts_sessions, spoken.tts_characters), (2, characters as u64), "{spoken:?}");
    assert!((audio.iter().sum::<f64>() - spoken.tts_audio_seconds).abs() < 0.01, "{spoken:?} vs {report}");
    assert_eq!(media.calls("/v1/speech-to-text"), 2);

    // Per turn one transcription, one chat, one speech, all ok; the wallet is the credits less exactly their sum.
    let records = records(&gw, &workspace).await;
    let (counts, charged) = tally(&gw, &records);
    assert_eq!(counts, [2, 2, 2], "transcriptions, chats, speeches: {records:?}");
    assert!(records.iter().all(|r| r.1 > 0), "every part is charged: {records:?}");
    assert_eq!(gw.settled(&key).await, (5_000_000 - charged, 0));
    gw.stop().await;
}

/// The page, as a browser client of the gateway's realtime voice would write it.
const PAGE: &str = include_str!("browser/voice.html");

/// The page's backend: it knows the gateway, holds the workspace's API key and has a recording.
struct Backend {
    gateway: String,
    key: String,
    wav: Vec<u8>,
}

/// `GET /`: the page.
async fn page() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(PAGE)
}

/// `GET /speech.wav`: what the user said, as a microphone recording would be (48 kHz WAV).
async fn recording(backend: web::Data<Backend>) -> HttpResponse {
    HttpResponse::Ok().content_type("audio/wav").body(backend.wav.clone())
}

/// `GET /secret`: a realtime client secret for the browser, minted with the API key, and where the gateway is.
async fn secret(backend: web::Data<Backend>) -> HttpResponse {
    let minted = reqwest::Client::new()
        .post(format!("{}/v1/realtime/client_secrets", backend.gateway))
        .bearer_auth(&backend.key)
        .json(&json!({"session": {"type": "realtime", "model": "claude-3-haiku"}}))
        .send()
        .await;
    let minted = match minted {
        Ok(response) => response,
        Err(e) => return HttpResponse::BadGateway().body(format!("POST /v1/realtime/client_secrets: {e}")),
    };
    let status = minted.status();
    let body = minted.text().await.unwrap_or_default();
    let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    match answer["value"].as_str() {
        Some(value) if status.is_success() && value.starts_with("ek_") => {
            let ws = backend.gateway.replacen("http://", "ws://", 1);
            HttpResponse::Ok().json(json!({"value": value, "realtime": format!("{ws}/v1/realtime")}))
        }
        _ => HttpResponse::BadGateway().body(format!("POST /v1/realtime/client_secrets answered {status}: {body}")),
    }
}

/// `text` spoken by espeak-ng, made a 48 kHz mono WAV by ffmpeg.
fn recorded(text: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (raw, wav) = (dir.path().join("espeak.wav"), dir.path().join("speech.wav"));
    let spoke = std::process::Command::new("espeak-ng").arg("-w").arg(&raw).arg(text).status();
    assert!(spoke.as_ref().is_ok_and(|s| s.success()), "espeak-ng (make setup installs it): {spoke:?}");
    let converted = std::process::Command::new("ffmpeg")
        .args(["-y", "-loglevel", "error", "-i"])
        .arg(&raw)
        .args(["-ac", "1", "-ar", "48000", "-c:a", "pcm_s16le"])
        .arg(&wav)
        .status();
    assert!(converted.as_ref().is_ok_and(|s| s.success()), "ffmpeg: {converted:?}");
    std::fs::read(wav).unwrap()
}

#[actix_web::test]
async fn a_browser_page_talks_to_a_chat_model_with_a_client_secret_and_plays_the_answer() {
    // The page's server listens first: its origin goes into the gateway's CORS configuration.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let page_origin = format!("http://{}", listener.local_addr().unwrap());
    let Setup { _chat, media, gw } = setup(Some(page_origin.clone())).await;
    let (workspace, key) = gw.workspace("5000", 1000, 2, 1_000_000).await;

    let wav = recorded("What is the weather like on the moon?");
    let backend = web::Data::new(Backend { gateway: gw.url.clone(), key: key.clone(), wav });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(backend.clone())
            .route("/", web::get().to(page))
            .route("/secret", web::get().to(secret))
            .route("/speech.wav", web::get().to(recording))
    })
    .workers(1)
    .shutdown_timeout(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let page_server = server.handle();
    actix_web::rt::spawn(server);

    // The browser runs as a child process, so that both servers keep serving while it works.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/browser.py");
    let python = common::python().unwrap_or_else(|| "python3".into());
    let mut driver = tokio::process::Command::new(&python);
    driver.arg(&script).arg(format!("{page_origin}/")).args(["--timeout", "60"]).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(240), driver.output())
        .await
        .expect("the browser driver did not finish within 240 s")
        .unwrap_or_else(|e| panic!("cannot run {} {}: {e}", python.display(), script.display()));
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if output.status.code() == Some(3) {
        assert!(std::env::var_os("CI").is_none(), "CI must run the browser test, but chromium is missing:\n{stderr}");
        eprintln!("SKIPPED: chromium not installed (make setup installs it)");
        page_server.stop(false).await;
        gw.stop().await;
        return;
    }
    assert!(output.status.success(), "the browser driver failed ({}):\n{stdout}\n{stderr}", output.status);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the driver's report is not JSON ({e}):\n{stdout}\n{stderr}"));
    let result = &report["result"];

    // Nothing went wrong in the browser: no console error, exception or failed load.
    let errors: Vec<&str> = report["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert!(
        errors.is_empty(),
        "the browser reported {} error(s):\n{}\n\nthe page's result: {result}\n\nthe driver:\n{stderr}",
        errors.len(),
        errors.join("\n")
    );
    assert_eq!(report["timed_out"], false, "the page never set window.__result:\n{stderr}");
    assert!(result.get("error").is_none(), "the page failed: {result}");

    // The gateway took the secret from the subprotocol and answered `realtime`; the recording was heard.
    assert_eq!(result["protocol"], "realtime", "{result}");
    let sent = result["sent_bytes"].as_u64().unwrap();
    assert!(
        sent > 48_000 && sent.is_multiple_of(2),
        "over a second of PCM16 at 24 kHz, resampled by the page: {result}"
    );
    let transcript = result["transcript"].as_str().unwrap();
    assert_eq!(transcript, format!("transcribed {} bytes", sent + 44), "a WAV of what was sent: {result}");
    assert_eq!(result["reply"].as_str(), Some(reply_text(transcript, 12).as_str()), "{result}");
    assert_eq!(result["status"], "completed", "{result}");

    // The page played every second the TTS socket made.
    let played = result["played_seconds"].as_f64().unwrap();
    let spoken = media.ws().stats();
    assert!(played > 0.0, "{result}");
    let clock = result["clock_seconds"].as_f64().unwrap();
    assert!(clock >= played - 0.05, "the audio clock ran {clock} s while {played} s played: {result}");
    assert!((played - spoken.tts_audio_seconds).abs() <= 0.05, "played {played} s, spoken {spoken:?}");
    assert_eq!(spoken.tts_characters, reply_text(transcript, 12).chars().count() as u64, "{spoken:?}");

    // A transcription, a chat, a speech: on the wallet, exactly.
    let records = records(&gw, &workspace).await;
    let (counts, charged) = tally(&gw, &records);
    assert_eq!(counts, [1, 1, 1], "{records:?}");
    assert_eq!(gw.settled(&key).await, (5_000_000 - charged, 0));

    page_server.stop(false).await;
    gw.stop().await;
}
