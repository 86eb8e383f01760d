//! ElevenLabs' own WebSocket protocols through the gateway, for apps built on its SDKs: text to speech
//! (`/v1/text-to-speech/{voice_id}/stream-input`) and realtime speech to text (`/v1/speech-to-text/realtime`), relayed
//! to ElevenLabs (the media mock) with the gateway's key, billed per character and per second of audio in blocks
//! held before the frames that use them go upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "mock/media.rs"]
mod media_mock;

use base64::Engine as _;
use common::ws::{next, open, send, ws_url, Socket};
use common::{Gateway, ADMIN_KEY};
use futures::StreamExt;
use media_mock::MediaMock;
use serde_json::{json, Value};
use std::collections::HashMap;
use tokio_tungstenite::tungstenite::Message;

const VOICE: &str = "21m00Tcm4TlvDq8ikWAM";

async fn setup() -> (MediaMock, Gateway) {
    let media = MediaMock::start().await.unwrap();
    let env = HashMap::from([
        ("SWITCHYARD_ADMIN_KEY".to_owned(), ADMIN_KEY.to_owned()),
        ("ELEVENLABS_BASE_URL".to_owned(), media.url()),
        ("ELEVENLABS_API_KEY".to_owned(), "xi-test".to_owned()),
    ]);
    (media, Gateway::start(env, |_| {}).await)
}

fn tts_url(gw: &Gateway) -> String {
    ws_url(
        gw,
        &format!("/v1/text-to-speech/{VOICE}/stream-input?model_id=eleven_multilingual_v2&output_format=pcm_24000"),
    )
}

/// Frames until the socket closes: the audio bytes, and the close code.
async fn drain(socket: &mut Socket) -> (usize, Option<u16>, Vec<Value>) {
    let mut audio = 0;
    let mut messages = Vec::new();
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next()).await.expect("a frame");
        match frame {
            Some(Ok(Message::Text(text))) => {
                let message: Value = serde_json::from_str(text.as_str()).unwrap();
                if let Some(a) = message["audio"].as_str() {
                    audio += base64::engine::general_purpose::STANDARD.decode(a).unwrap().len();
                }
                messages.push(message);
            }
            Some(Ok(Message::Close(frame))) => return (audio, frame.map(|f| u16::from(f.code)), messages),
            None | Some(Err(_)) => return (audio, None, messages),
            Some(Ok(_)) => {}
        }
    }
}

#[actix_web::test]
async fn text_to_speech_is_relayed_and_billed_per_character() {
    let (media, gw) = setup().await;
    let (workspace, key) = gw.workspace("5000", 1000, 1, 1_000_000).await;
    let (mut socket, _) = open(&tts_url(&gw), &[("xi-api-key", key.as_str())]).await.unwrap();
    send(&mut socket, json!({"text": " ", "voice_settings": {"stability": 0.5}, "xi_api_key": key})).await;
    let text = "Hello from the gateway. How are you today?";
    for piece in text.split_inclusive(' ') {
        send(&mut socket, json!({"text": piece, "try_trigger_generation": true})).await;
    }
    send(&mut socket, json!({"text": ""})).await;
    let (audio, code, messages) = drain(&mut socket).await;
    assert_eq!(code, Some(1000), "ElevenLabs' normal close is passed on");
    assert!(messages.iter().any(|m| m["isFinal"] == true), "the final message came through");
    let characters = text.split_inclusive(' ').map(|p| p.trim().chars().count()).sum::<usize>();
    let stats = media.ws().stats();
    assert_eq!(audio as f64, (stats.tts_audio_seconds * 48_000.0).round(), "every byte spoken reached the client");
    let handshake = &media.ws().handshakes()[0];
    assert!(handshake.headers.iter().any(|(n, v)| n == "xi-api-key" && v == "xi-test"), "the gateway's key upstream");
    assert!(!media.ws().tts_inits()[0].to_string().contains("sy_live"), "the caller's key is not sent upstream");
    let records = gw.usage(&workspace).await;
    assert_eq!(records.len(), 1, "{records:?}");
    // 180 credits per 1,000 characters.
    assert_eq!(records[0].1, (characters as u64 * 180_000).div_ceil(1000) as i64, "{records:?}");
    assert_eq!(gw.settled(&key).await, (5_000_000 - records[0].1, 0));
    gw.stop().await;
}

#[actix_web::test]
async fn long_text_is_billed_in_blocks_and_a_wallet_that_runs_dry_ends_the_socket() {
    let (_media, gw) = setup().await;
    // 2,000 characters a block at 0.18 credits each: 360 credits a block; 500 credits cover one block, not two.
    let (workspace, key) = gw.workspace("500", 1000, 1, 1_000_000).await;
    let (mut socket, _) = open(&tts_url(&gw), &[("authorization", &format!("Bearer {key}"))]).await.unwrap();
    send(&mut socket, json!({"text": " "})).await;
    let sentence = "x".repeat(499) + " ";
    for _ in 0..5 {
        send(&mut socket, json!({"text": sentence})).await;
    }
    let (_, code, messages) = drain(&mut socket).await;
    assert_eq!(code, Some(1008), "{messages:?}");
    let refusal =
        messages.iter().find(|m| m["error"] == "insufficient_credits").unwrap_or_else(|| panic!("{messages:?}"));
    assert_eq!(refusal["code"], 1008);
    let records = gw.usage(&workspace).await;
    assert_eq!(records.len(), 1, "one full block charged: {records:?}");
    assert_eq!(records[0].1, 360_000);
    assert_eq!(gw.settled(&key).await, (140_000, 0));
    gw.stop().await;
}

#[actix_web::test]
async fn realtime_transcription_is_relayed_and_billed_per_second() {
    let (media, gw) = setup().await;
    let (workspace, key) = gw.workspace("5000", 1000, 1, 1_000_000).await;
    let url = ws_url(
        &gw,
        "/v1/speech-to-text/realtime?model_id=scribe_v2_realtime&audio_format=pcm_16000&commit_strategy=manual",
    );
    let (mut socket, _) = open(&url, &[("xi-api-key", key.as_str())]).await.unwrap();
    assert_eq!(next(&mut socket).await["message_type"], "session_started");
    // 2 s of PCM16 at 16 kHz in 0.1 s chunks, then a commit.
    let chunk = base64::engine::general_purpose::STANDARD.encode(vec![0u8; 3200]);
    for i in 0..20 {
        send(&mut socket, json!({"message_type": "input_audio_chunk", "audio_base_64": chunk, "commit": i == 19, "sample_rate": 16000})).await;
    }
    let committed = loop {
        let message = next(&mut socket).await;
        if message["message_type"] == "committed_transcript" {
            break message;
        }
    };
    assert_eq!(committed["text"], "mock transcript of 2.00 seconds");
    socket.close(None).await.unwrap();
    let _ = drain(&mut socket).await;
    let records = gw.usage(&workspace).await;
    assert_eq!(records.len(), 1, "{records:?}");
    // 0.111 credits per second.
    assert_eq!(records[0].1, 222);
    assert!((media.ws().stats().stt_audio_seconds - 2.0).abs() < 1e-9);
    gw.stop().await;
}

#[actix_web::test]
async fn refusals_are_plain_http_before_any_socket() {
    let (media, gw) = setup().await;
    let (_, key) = gw.workspace("5000", 1000, 1, 1_000_000).await;
    let (_, poor) = gw.workspace("0.001", 1000, 1, 1_000_000).await;
    let stt = ws_url(&gw, "/v1/speech-to-text/realtime?audio_format=pcm_16000");
    let cases = [
        (tts_url(&gw), "", 401, "missing_api_key"),
        (tts_url(&gw), "sy_live_nope", 401, "invalid_api_key"),
        (
            ws_url(&gw, &format!("/v1/text-to-speech/{VOICE}/stream-input?model_id=eleven_v9")),
            key.as_str(),
            400,
            "unsupported_model",
        ),
        (ws_url(&gw, "/v1/speech-to-text/realtime?audio_format=pcm_12345"), key.as_str(), 400, "invalid_field"),
        (stt.clone(), poor.as_str(), 402, "insufficient_credits"),
    ];
    for (url, credential, status, code) in cases {
        let headers: Vec<(&str, &str)> = if credential.is_empty() { vec![] } else { vec![("xi-api-key", credential)] };
        let Err((got, body)) = open(&url, &headers).await else { panic!("{url} was accepted") };
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{url}: {body}");
    }
    // One concurrent request while a socket is open: a second is refused 429 (the plan allows one).
    let (_socket, _) = open(&stt, &[("xi-api-key", key.as_str())]).await.unwrap();
    let Err((status, body)) = open(&stt, &[("xi-api-key", key.as_str())]).await else { panic!("accepted") };
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("concurrency_limit_exceeded")));
    assert_eq!(media.ws().handshakes().len(), 1, "refusals never reached ElevenLabs");
    gw.stop().await;
}

#[actix_web::test]
async fn the_official_elevenlabs_sdk_streams_through_the_gateway() {
    let Some(python) = common::python() else {
        assert!(std::env::var_os("CI").is_none(), "CI must run the ElevenLabs SDK test: run `make test`");
        eprintln!("SKIPPED: the ElevenLabs SDK test needs `make test` (it installs the SDK into .cache/venv)");
        return;
    };
    let (media, gw) = setup().await;
    let (workspace, key) = gw.workspace("5000", 1000, 2, 1_000_000).await;
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("speech.wav");
    let pcm: Vec<i16> = (0..16_000 * 2).map(|i| ((i as f64 * 0.1).sin() * 8000.0) as i16).collect();
    std::fs::write(&wav, switchyard::audio::wav(&pcm, 16_000)).unwrap();
    let scripts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python");
    let run = |script: &str, args: Vec<String>| {
        let mut command = tokio::process::Command::new(&python);
        command.arg(scripts.join(script)).args(args).env("ELEVENLABS_MODEL_ID", "eleven_multilingual_v2");
        command.kill_on_drop(true).output()
    };
    let tts = run("elevenlabs_tts_ws.py", vec![gw.url.clone(), key.clone(), VOICE.into(), "pcm_24000".into()]);
    let stt = run("elevenlabs_stt_ws.py", vec![gw.url.clone(), key.clone(), wav.to_string_lossy().into_owned()]);
    for (name, output) in [("tts", tts), ("stt", stt)] {
        let output = tokio::time::timeout(std::time::Duration::from_secs(60), output).await.expect("ends").unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{name}: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        let result: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        match name {
            "tts" => assert!(result["audio_bytes"].as_u64().unwrap() > 0, "{result}"),
            _ => assert_eq!(result["transcript"], "mock transcript of 2.00 seconds", "{result}"),
        }
    }
    let records = gw.usage(&workspace).await;
    assert_eq!(records.len(), 2, "one speech, one transcription: {records:?}");
    assert_eq!(media.ws().stats().tts_sessions, 1);
    gw.stop().await;
}
