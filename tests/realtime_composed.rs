//! Realtime voice, composed: a chat model (claude-3-haiku) as a voice agent. The gateway plays the OpenAI Realtime
//! server itself: committed audio is transcribed (ElevenLabs speech-to-text, mock), the conversation goes to the
//! chat model as a stream (Anthropic, mock), and the text to text-to-speech (ElevenLabs, mock), whose audio comes
//! back as `response.output_audio.delta`. Each part is one billed call; `response.done` says what each cost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "mock/media.rs"]
mod media_mock;

use base64::Engine as _;
use common::mock::{MockConfig, MockServer};
use common::ws::{next, open, send, until, ws_url, Socket};
use common::{mock_env, Gateway};
use media_mock::MediaMock;
use serde_json::{json, Value};

struct Setup {
    _chat: MockServer,
    media: MediaMock,
    gw: Gateway,
}

async fn setup() -> Setup {
    let chat = MockServer::start(MockConfig::default()).await.unwrap();
    let media = MediaMock::start().await.unwrap();
    let mut env = mock_env(&chat);
    env.insert("ELEVENLABS_BASE_URL".into(), media.url());
    env.insert("ELEVENLABS_API_KEY".into(), "xi-test".into());
    let gw = Gateway::start(env, |c| c.pool.retry_base_ms = 1).await;
    Setup { _chat: chat, media, gw }
}

/// `ms` of a loud 440 Hz tone then `quiet_ms` of silence, PCM16 at 24 kHz, base64.
fn tone(ms: usize, quiet_ms: usize) -> String {
    let mut pcm = Vec::new();
    for i in 0..ms * 24 {
        let s = (12_000.0 * (i as f64 * 2.0 * std::f64::consts::PI * 440.0 / 24_000.0).sin()) as i16;
        pcm.extend_from_slice(&s.to_le_bytes());
    }
    pcm.extend(std::iter::repeat_n(0u8, quiet_ms * 48));
    base64::engine::general_purpose::STANDARD.encode(pcm)
}

async fn connect(gw: &Gateway, key: &str) -> Socket {
    let bearer = format!("Bearer {key}");
    let (mut socket, _) =
        open(&ws_url(gw, "/v1/realtime?model=claude-3-haiku"), &[("authorization", &bearer)]).await.unwrap();
    let created = next(&mut socket).await;
    assert_eq!(created["type"], "session.created", "{created}");
    assert_eq!(created["session"]["model"], "claude-3-haiku");
    socket
}

/// The audio, transcript and `response.done` of a response.
async fn response(socket: &mut Socket) -> (Vec<u8>, String, Value, Vec<String>) {
    let events = until(socket, "response.done").await;
    let mut audio = Vec::new();
    let mut transcript = String::new();
    for event in &events {
        match event["type"].as_str().unwrap() {
            "response.output_audio.delta" => audio
                .extend(base64::engine::general_purpose::STANDARD.decode(event["delta"].as_str().unwrap()).unwrap()),
            "response.output_audio_transcript.delta" => transcript.push_str(event["delta"].as_str().unwrap()),
            _ => {}
        }
    }
    let kinds = events.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
    (audio, transcript, events.last().unwrap().clone(), kinds)
}

#[actix_web::test]
async fn a_chat_model_holds_a_spoken_conversation_and_each_part_is_billed_once() {
    let Setup { _chat, media, gw } = setup().await;
    let (workspace, key) = gw.workspace("5000", 1000, 1, 1_000_000).await;
    let mut socket = connect(&gw, &key).await;
    send(
        &mut socket,
        json!({"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief.",
        "audio": {"input": {"turn_detection": null}}}}),
    )
    .await;
    let updated = next(&mut socket).await;
    assert_eq!(updated["type"], "session.updated", "{updated}");
    assert_eq!(updated["session"]["audio"]["input"]["turn_detection"], Value::Null);

    send(&mut socket, json!({"type": "input_audio_buffer.append", "audio": tone(1000, 0)})).await;
    send(&mut socket, json!({"type": "input_audio_buffer.commit"})).await;
    let committed = until(&mut socket, "conversation.item.done").await;
    let kinds: Vec<&str> = committed.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.input_audio_transcription.completed",
            "conversation.item.done"
        ]
    );
    let transcript = committed[2]["transcript"].as_str().unwrap();
    assert!(transcript.starts_with("transcribed"), "{transcript}");
    assert_eq!(committed[2]["usage"]["seconds"], 1.0);

    send(&mut socket, json!({"type": "response.create"})).await;
    let (audio, text, done, kinds) = response(&mut socket).await;
    assert_eq!(done["response"]["status"], "completed", "{done}");
    assert_eq!(kinds.first().map(String::as_str), Some("response.created"));
    for kind in [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.output_item.done",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} missing from {kinds:?}");
    }
    assert_eq!(text, common::mock::reply_text(transcript, 12), "the chat model's answer, spoken");
    assert!(!audio.is_empty() && audio.len() % 2 == 0, "PCM16 audio came back: {} bytes", audio.len());
    let usage = &done["response"]["usage"];
    assert!(usage["input_tokens"].as_u64().unwrap() > 0 && usage["output_tokens"].as_u64().unwrap() > 0, "{usage}");
    let parts = done["response"]["switchyard"]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "the chat and the speech: {parts:?}");
    assert_eq!(parts[0]["model"], "claude-3-haiku");
    assert_eq!(parts[1]["model"], "eleven-labs-tts");
    assert_eq!(parts[1]["characters"], text.chars().count());
    // The text went into ElevenLabs' stream-input socket as it was written, and its audio came back as it was made.
    let spoken = media.ws().stats();
    assert_eq!((spoken.tts_sessions, spoken.tts_characters), (1, text.chars().count() as u64), "{spoken:?}");
    let expected = (spoken.tts_audio_seconds * 48_000.0).round() as usize;
    assert_eq!(audio.len(), expected, "every second the socket spoke reached the client, as PCM16 at 24 kHz");
    let opening = &media.ws().handshakes()[0];
    assert!(opening.path.contains("output_format=pcm_24000"), "{}", opening.path);
    assert!(
        opening.headers.iter().any(|(n, v)| n == "xi-api-key" && v == "xi-test"),
        "the gateway's key, not the caller's"
    );

    // A second turn, typed: the conversation carries the first.
    send(
        &mut socket,
        json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "And then?"}]}}),
    )
    .await;
    assert_eq!(until(&mut socket, "conversation.item.done").await.len(), 2);
    send(&mut socket, json!({"type": "response.create", "response": {"output_modalities": ["text"]}})).await;
    let events = until(&mut socket, "response.done").await;
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, common::mock::reply_text("And then?", 12));
    assert!(events.iter().all(|e| e["type"] != "response.output_audio.delta"), "a text response speaks nothing");
    socket.close(None).await.unwrap();

    // Records: the transcription, two chats, one speech; the wallet is the credits less exactly their sum.
    let records = gw.usage(&workspace).await;
    assert_eq!(records.len(), 4, "{records:?}");
    assert!(records.iter().all(|r| r.2 == "ok"), "{records:?}");
    let charged: i64 = records.iter().map(|r| r.1).sum();
    assert_eq!(gw.settled(&key).await, (5_000_000 - charged, 0));
    assert_eq!(media.calls("/v1/speech-to-text"), 1);
    gw.stop().await;
}

#[actix_web::test]
async fn a_speech_socket_that_fails_before_any_audio_falls_back_to_http_and_g711_is_made_locally() {
    let Setup { _chat, media, gw } = setup().await;
    let (workspace, key) = gw.workspace("5000", 1000, 1, 1_000_000).await;
    let mut socket = connect(&gw, &key).await;
    send(
        &mut socket,
        json!({"type": "session.update", "session": {"audio": {"input": {"turn_detection": null},
        "output": {"format": {"type": "audio/pcmu"}}}}}),
    )
    .await;
    assert_eq!(next(&mut socket).await["session"]["audio"]["output"]["format"]["type"], "audio/pcmu");
    send(
        &mut socket,
        json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "Hello there"}]}}),
    )
    .await;
    until(&mut socket, "conversation.item.done").await;
    // Refused for good (after the pool's retries), then an error message before any audio.
    for (fault, times) in [(media_mock::WsFault::Refuse(503), None), (media_mock::WsFault::Error, Some(1))] {
        media.ws().set_fault(Some(media_mock::WsRoute::Tts), fault, times);
        send(&mut socket, json!({"type": "response.create"})).await;
        let (audio, text, done, _) = response(&mut socket).await;
        assert_eq!(done["response"]["status"], "completed", "{fault:?}: {done}");
        assert!(!audio.is_empty(), "{fault:?}: the answer was spoken over HTTP instead");
        let parts = done["response"]["switchyard"]["parts"].as_array().unwrap();
        assert_eq!(parts[1]["characters"], text.chars().count(), "{fault:?}");
        // μ-law at 8 kHz: one byte a sample, a third of the 24 kHz samples spoken.
        let made = text.chars().count() as f64 * media_mock::SECONDS_PER_CHAR * 8000.0;
        assert!((audio.len() as f64 - made).abs() <= 1.0, "{fault:?}: {} bytes for {made} samples", audio.len());
        media.ws().set_fault(None, media_mock::WsFault::None, None);
    }
    let handshakes = media.ws().handshakes().len() as u64;
    assert_eq!(media.calls("/v1/text-to-speech") - handshakes, 2, "spoken over HTTP, twice");
    socket.close(None).await.unwrap();
    // Two chats, two HTTP speeches; the failed sockets charged nothing.
    let records = gw.usage(&workspace).await;
    let ok: Vec<_> = records.iter().filter(|r| r.2 == "ok").collect();
    assert_eq!(ok.len(), 4, "{records:?}");
    let charged: i64 = records.iter().map(|r| r.1).sum();
    assert_eq!(gw.settled(&key).await, (5_000_000 - charged, 0));
    gw.stop().await;
}

#[actix_web::test]
async fn server_voice_activity_detection_commits_and_answers_by_itself() {
    let Setup { _chat, gw, .. } = setup().await;
    let (_, key) = gw.workspace("5000", 1000, 2, 1_000_000).await;
    let mut socket = connect(&gw, &key).await;
    // The default turn detection is server VAD, as OpenAI's: speech, then quiet, and a response follows.
    send(&mut socket, json!({"type": "input_audio_buffer.append", "audio": tone(800, 700)})).await;
    let events = until(&mut socket, "response.done").await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let position = |kind: &str| kinds.iter().position(|k| *k == kind).unwrap_or_else(|| panic!("{kind}: {kinds:?}"));
    assert!(position("input_audio_buffer.speech_started") < position("input_audio_buffer.speech_stopped"));
    assert!(position("input_audio_buffer.speech_stopped") < position("input_audio_buffer.committed"));
    assert!(position("conversation.item.input_audio_transcription.completed") < position("response.created"));
    assert_eq!(events.last().unwrap()["response"]["status"], "completed");
    gw.stop().await;
}

#[actix_web::test]
async fn bad_input_gets_an_error_event_and_the_session_goes_on() {
    let Setup { _chat, gw, .. } = setup().await;
    let (_, key) = gw.workspace("5000", 1000, 1, 1_000_000).await;
    let mut socket = connect(&gw, &key).await;
    let cases = [
        (json!({"type": "input_audio_buffer.append", "audio": "%%% not base64"}), "invalid_audio"),
        (json!({"type": "input_audio_buffer.append", "audio": "AAAA"}), "invalid_audio"),
        (json!({"type": "input_audio_buffer.append"}), "missing_field"),
        (json!({"type": "input_audio_buffer.commit"}), "input_audio_buffer_commit_empty"),
        (
            json!({"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/opus"}}}}}),
            "invalid_value",
        ),
        (json!({"type": "session.update", "session": {"max_output_tokens": 0}}), "invalid_value"),
        (json!({"type": "conversation.item.create", "item": {"type": "function_call_output"}}), "invalid_value"),
        (json!({"type": "conversation.item.delete", "item_id": "item_nope"}), "item_not_found"),
        (json!({"type": "response.create"}), "conversation_empty"),
        (json!({"type": "response.cancel"}), "response_cancel_not_active"),
        (json!({"type": "session.teleport"}), "unknown_event"),
        (json!({"no": "type"}), "invalid_event"),
    ];
    for (event, code) in cases {
        send(&mut socket, event.clone()).await;
        let answer = next(&mut socket).await;
        assert_eq!((answer["type"].as_str(), answer["error"]["code"].as_str()), (Some("error"), Some(code)), "{event}");
    }
    use futures::SinkExt;
    socket.send(tokio_tungstenite::tungstenite::Message::binary(vec![0u8; 4])).await.unwrap();
    assert_eq!(next(&mut socket).await["error"]["code"], "invalid_event");
    // Three bytes of 16-bit audio, then an odd PCM length: refused; the buffer keeps only whole appends.
    send(&mut socket, json!({"type": "session.update", "session": {"audio": {"input": {"turn_detection": null}}}}))
        .await;
    assert_eq!(next(&mut socket).await["type"], "session.updated");
    send(
        &mut socket,
        json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "Hi"}]}}),
    )
    .await;
    until(&mut socket, "conversation.item.done").await;
    send(&mut socket, json!({"type": "response.create"})).await;
    send(&mut socket, json!({"type": "response.create"})).await;
    let events = until(&mut socket, "response.done").await;
    assert!(
        events.iter().any(|e| e["error"]["code"] == "conversation_already_has_active_response"),
        "one response at a time: {events:?}"
    );
    // A frame over the size limit closes the session (the stream cannot be resynchronised) with an error first.
    send(&mut socket, json!({"type": "input_audio_buffer.append", "audio": "A".repeat(2 << 20)})).await;
    let refused = next(&mut socket).await;
    assert_eq!(refused["error"]["code"], "invalid_frame", "{refused}");
    gw.stop().await;
}

#[actix_web::test]
async fn a_response_cancelled_is_charged_for_what_was_made_and_the_wallet_stays_exact() {
    let chat = MockServer::start(MockConfig {
        reply_words: 400,
        token_interval: std::time::Duration::from_millis(5),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let media = MediaMock::start().await.unwrap();
    let mut env = mock_env(&chat);
    env.insert("ELEVENLABS_BASE_URL".into(), media.url());
    env.insert("ELEVENLABS_API_KEY".into(), "xi-test".into());
    let gw = Gateway::start(env, |c| c.pool.retry_base_ms = 1).await;
    let (workspace, key) = gw.workspace("5000", 1000, 1, 1_000_000).await;
    let mut socket = connect(&gw, &key).await;
    send(
        &mut socket,
        json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "Talk for a while."}]}}),
    )
    .await;
    until(&mut socket, "conversation.item.done").await;
    send(&mut socket, json!({"type": "response.create"})).await;
    until(&mut socket, "response.output_audio_transcript.delta").await;
    send(&mut socket, json!({"type": "response.cancel"})).await;
    let done = until(&mut socket, "response.done").await.pop().unwrap();
    assert_eq!(done["response"]["status"], "cancelled", "{done}");
    socket.close(None).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let records = gw.usage(&workspace).await;
    let charged: i64 = records.iter().map(|r| r.1).sum();
    assert!(charged > 0, "what was generated is charged: {records:?}");
    assert_eq!(gw.settled(&key).await, (5_000_000 - charged, 0), "nothing held after the session");
    gw.stop().await;
}
