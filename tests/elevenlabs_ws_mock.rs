//! The media mock's ElevenLabs WebSockets (`mock/elevenlabs_ws.rs`) speak the real wire formats: checked here so the
//! relay tests that use them stand on a mock that is itself right.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "mock/media.rs"]
mod media_mock;

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use media_mock::{MediaMock, WsFault, WsRoute};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const VOICE: &str = "21m00Tcm4TlvDq8ikWAM";

/// Opens `path` on the mock, with an `xi-api-key` header when `key` is given; Err(status) when refused.
async fn open(mock: &MediaMock, path: &str, key: Option<&str>) -> Result<Socket, u16> {
    let mut request = format!("ws://{}{path}", mock.addr()).into_client_request().unwrap();
    if let Some(key) = key {
        request.headers_mut().insert("xi-api-key", HeaderValue::from_str(key).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("handshake: {e}"),
    }
}

async fn send(socket: &mut Socket, v: Value) {
    socket.send(Message::text(v.to_string())).await.unwrap();
}

/// The next text message as JSON; None when the socket closes (a close frame's code and reason are in `closed`).
async fn next(socket: &mut Socket, closed: &mut Option<(CloseCode, String)>) -> Option<Value> {
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(5), socket.next()).await.expect("no message in 5 s") {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(Message::Close(frame))) => {
                *closed = frame.map(|f| (f.code, f.reason.to_string()));
                return None;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

fn b64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn tts_stream_input_speaks_the_buffered_text_with_alignment_then_ends_final() {
    let mock = MediaMock::start().await.unwrap();
    let path = format!("/v1/text-to-speech/{VOICE}/stream-input?model_id=eleven_flash_v2_5&output_format=pcm_24000");
    let mut ws = open(&mock, &path, Some("xi-test")).await.unwrap();
    send(&mut ws, json!({"text": " ", "voice_settings": {"stability": 0.5, "similarity_boost": 0.8}})).await;
    send(&mut ws, json!({"text": "Hello ", "try_trigger_generation": true})).await;
    // A sentence end: "Hello world. " is spoken, 2 characters (0.1 s) a message; "How" waits in the buffer.
    send(&mut ws, json!({"text": "world. How"})).await;
    send(&mut ws, json!({"text": " are you", "flush": true})).await;
    send(&mut ws, json!({"text": ""})).await;
    let (mut closed, mut spoken, mut audio, mut messages) = (None, String::new(), 0, 0);
    let mut last = Value::Null;
    while let Some(msg) = next(&mut ws, &mut closed).await {
        if msg.get("audio").is_some_and(|a| a.is_string()) {
            messages += 1;
            let chars: Vec<String> = serde_json::from_value(msg["alignment"]["chars"].clone()).unwrap();
            assert!(chars.len() <= 2, "{msg}");
            assert_eq!(
                msg["alignment"]["charStartTimesMs"],
                json!((0..chars.len()).map(|i| i * 50).collect::<Vec<_>>())
            );
            assert_eq!(msg["alignment"]["charsDurationsMs"], json!(vec![50; chars.len()]));
            assert_eq!(msg["normalizedAlignment"], msg["alignment"]);
            assert_eq!(b64(&msg["audio"]).len(), chars.len() * 1200 * 2, "PCM16 at 24 kHz, 50 ms a character");
            audio += b64(&msg["audio"]).len();
            spoken += &chars.concat();
        }
        last = msg;
    }
    assert_eq!(spoken, "Hello world. How are you");
    assert_eq!(messages, 13);
    assert_eq!(audio, 24 * 2400);
    assert_eq!(last, json!({"isFinal": true}));
    assert_eq!(closed.map(|c| c.0), Some(CloseCode::Normal));
    let stats = mock.ws().stats();
    assert_eq!((stats.tts_sessions, stats.tts_characters, stats.tts_audio_seconds), (1, 24, 1.2));
    assert_eq!(mock.ws().tts_inits()[0]["voice_settings"]["stability"], 0.5);
}

#[tokio::test]
async fn tts_key_in_the_first_message_or_none_at_all() {
    let mock = MediaMock::start().await.unwrap();
    let path = format!("/v1/text-to-speech/{VOICE}/stream-input?output_format=ulaw_8000");
    let mut ws = open(&mock, &path, None).await.unwrap();
    send(&mut ws, json!({"text": " ", "xi_api_key": "xi-test"})).await;
    send(&mut ws, json!({"text": "Hi. "})).await;
    let mut closed = None;
    let first = next(&mut ws, &mut closed).await.unwrap();
    assert_eq!(b64(&first["audio"]).len(), 2 * 400, "μ-law at 8 kHz: a byte a sample");
    // No key anywhere: ElevenLabs' error message, then a close 1008.
    let mut ws = open(&mock, &path, None).await.unwrap();
    send(&mut ws, json!({"text": " "})).await;
    let error = next(&mut ws, &mut closed).await.unwrap();
    assert_eq!((error["error"].as_str(), error["code"].as_u64()), (Some("invalid_api_key"), Some(1008)));
    assert!(next(&mut ws, &mut closed).await.is_none());
    assert_eq!(closed.map(|c| c.0), Some(CloseCode::Policy));
    assert_eq!(open(&mock, &path, Some(" ")).await.err(), Some(401), "a blank header is refused");
}

#[tokio::test]
async fn tts_faults_cut_the_socket_after_the_first_audio_and_refuse_handshakes() {
    let mock = MediaMock::start().await.unwrap();
    let path = format!("/v1/text-to-speech/{VOICE}/stream-input?output_format=pcm_16000");
    mock.ws().set_fault(Some(WsRoute::Tts), WsFault::CloseMidResponse, Some(1));
    let mut ws = open(&mock, &path, Some("k")).await.unwrap();
    send(&mut ws, json!({"text": " "})).await;
    send(&mut ws, json!({"text": "A long sentence. ", "flush": true})).await;
    let mut closed = None;
    assert!(next(&mut ws, &mut closed).await.unwrap()["audio"].is_string());
    assert!(next(&mut ws, &mut closed).await.is_none());
    assert!(closed.is_none(), "dropped without a close frame");
    // Through the control endpoint, as an out-of-process test would.
    let client = reqwest::Client::new();
    let set = client
        .post(format!("{}/__mock/ws_fault", mock.url()))
        .json(&json!({"route": "tts", "fault": "refuse", "status": 503, "times": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    assert_eq!(open(&mock, &path, Some("k")).await.err(), Some(503));
    assert!(open(&mock, &path, Some("k")).await.is_ok(), "only the next session");
    let stats: Value = client.get(format!("{}/__mock/stats", mock.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!((stats["tts_ws_sessions"].as_u64(), stats["ws_refused"].as_u64()), (Some(2), Some(1)));
}

#[tokio::test]
async fn stt_realtime_transcribes_each_committed_segment() {
    let mock = MediaMock::start().await.unwrap();
    let path = "/v1/speech-to-text/realtime?model_id=scribe_v2_realtime&audio_format=pcm_16000&include_timestamps=true";
    assert_eq!(open(&mock, path, None).await.err(), Some(401));
    let mut ws = open(&mock, path, Some("xi-test")).await.unwrap();
    let mut closed = None;
    let started = next(&mut ws, &mut closed).await.unwrap();
    assert_eq!(started["message_type"], "session_started");
    assert_eq!(
        (started["config"]["sample_rate"].as_u64(), started["config"]["commit_strategy"].as_str()),
        (Some(16000), Some("manual"))
    );
    let chunk = base64::engine::general_purpose::STANDARD.encode(vec![0u8; 3200]); // 0.1 s
    let mut kinds = Vec::new();
    for segment in [10, 3] {
        for i in 0..segment {
            let commit = i == segment - 1;
            send(&mut ws, json!({"message_type": "input_audio_chunk", "audio_base_64": chunk, "commit": commit, "sample_rate": 16000})).await;
        }
        loop {
            let msg = next(&mut ws, &mut closed).await.unwrap();
            kinds.push(format!("{} {}", msg["message_type"].as_str().unwrap(), msg["text"].as_str().unwrap()));
            if msg["message_type"] == "committed_transcript_with_timestamps" {
                assert_eq!(msg["words"][0]["text"], "mock");
                break;
            }
        }
    }
    assert_eq!(
        kinds,
        [
            "partial_transcript mock transcript of 0.50 seconds",
            "committed_transcript mock transcript of 1.00 seconds",
            "committed_transcript_with_timestamps mock transcript of 1.00 seconds",
            "committed_transcript mock transcript of 0.30 seconds",
            "committed_transcript_with_timestamps mock transcript of 0.30 seconds",
        ]
    );
    let stats = mock.ws().stats();
    assert_eq!((stats.stt_sessions, stats.stt_commits, stats.open), (1, 2, 1));
    assert!((stats.stt_audio_seconds - 1.3).abs() < 1e-9, "{stats:?}");
}

#[tokio::test]
async fn stt_error_fault_sends_an_error_message_and_closes() {
    let mock = MediaMock::start().await.unwrap();
    mock.ws().set_fault(Some(WsRoute::Stt), WsFault::Error, Some(1));
    let path = "/v1/speech-to-text/realtime?model_id=scribe_v2_realtime";
    let mut ws = open(&mock, path, Some("xi-test")).await.unwrap();
    let mut closed = None;
    assert_eq!(next(&mut ws, &mut closed).await.unwrap()["message_type"], "session_started");
    let chunk = base64::engine::general_purpose::STANDARD.encode(vec![0u8; 3200]);
    send(
        &mut ws,
        json!({"message_type": "input_audio_chunk", "audio_base_64": chunk, "commit": false, "sample_rate": 16000}),
    )
    .await;
    assert_eq!(next(&mut ws, &mut closed).await.unwrap()["message_type"], "error");
    assert!(next(&mut ws, &mut closed).await.is_none());
    assert_eq!(closed.map(|c| c.0), Some(CloseCode::Error));
}
