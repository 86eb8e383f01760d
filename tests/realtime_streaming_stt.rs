//! Realtime voice, composed, with `realtime.streaming_transcription` on: a turn's input audio goes, as it is
//! appended, into ElevenLabs' realtime speech-to-text socket (the media mock) at 16 kHz; its partials come back as
//! `conversation.item.input_audio_transcription.delta`, the commit waits for the committed transcript only, and the
//! socket's audio is billed per second as `eleven-labs-stt-realtime`. A socket refused, failing or silent leaves the
//! turn to ElevenLabs' HTTP speech to text, then the only charge.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "mock/media.rs"]
mod media_mock;

use base64::Engine as _;
use common::mock::{MockConfig, MockServer};
use common::ws::{next, open, send, until, ws_url, Socket};
use common::{mock_env, Gateway};
use futures::StreamExt;
use media_mock::{MediaMock, WsFault, WsRoute};
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
    let gw = Gateway::start(env, |c| {
        c.pool.retry_base_ms = 1;
        c.realtime.streaming_transcription = true;
    })
    .await;
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

async fn connect(gw: &Gateway, key: &str, manual: bool) -> Socket {
    let bearer = format!("Bearer {key}");
    let (mut socket, _) =
        open(&ws_url(gw, "/v1/realtime?model=claude-3-haiku"), &[("authorization", &bearer)]).await.unwrap();
    let created = next(&mut socket).await;
    assert_eq!(created["type"], "session.created", "{created}");
    assert_eq!(created["session"]["audio"]["input"]["transcription"]["model"], "eleven-labs-stt-realtime");
    if manual {
        send(&mut socket, json!({"type": "session.update", "session": {"audio": {"input": {"turn_detection": null}}}}))
            .await;
        assert_eq!(next(&mut socket).await["type"], "session.updated");
    }
    socket
}

/// Events up to and including the first of `kind`, waiting up to 30 s for each (a commit may wait 10 s).
async fn until_slow(socket: &mut Socket, kind: &str) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(30), socket.next()).await.expect("an event");
        let event: Value = match frame {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
                serde_json::from_str(text.as_str()).unwrap()
            }
            Some(Ok(_)) => continue,
            other => panic!("expected an event, got {other:?}"),
        };
        let done = event["type"] == kind;
        events.push(event);
        if done {
            return events;
        }
    }
}

fn of<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

#[actix_web::test]
async fn a_turn_streams_into_the_socket_gets_partials_and_is_billed_per_second_sent() {
    let Setup { _chat, media, gw } = setup().await;
    let (workspace, key) = gw.workspace("5000", 1000, 1, 1_000_000).await;
    let mut socket = connect(&gw, &key, true).await;

    // 1.5 s of PCM16 at 24 kHz in three appends: 0.5 s each at 16 kHz upstream, a partial after each.
    for _ in 0..3 {
        send(&mut socket, json!({"type": "input_audio_buffer.append", "audio": tone(500, 0)})).await;
    }
    send(&mut socket, json!({"type": "input_audio_buffer.commit"})).await;
    let events = until(&mut socket, "conversation.item.done").await;
    let committed = of(&events, "input_audio_buffer.committed")[0];
    let item_id = committed["item_id"].as_str().unwrap();
    let deltas = of(&events, "conversation.item.input_audio_transcription.delta");
    let partials: Vec<&str> = deltas.iter().map(|d| d["switchyard"]["partial"].as_str().unwrap()).collect();
    assert_eq!(
        partials,
        ["mock transcript of 0.50 seconds", "mock transcript of 1.00 seconds", "mock transcript of 1.50 seconds"]
    );
    assert!(deltas.iter().all(|d| d["item_id"] == item_id && d["content_index"] == 0), "{deltas:?}");
    // Deltas append: the mock's partials each revise the last, so only the first adds text.
    let appended: String = deltas.iter().map(|d| d["delta"].as_str().unwrap()).collect();
    assert_eq!(appended, "mock transcript of 0.50 seconds");
    let completed = of(&events, "conversation.item.input_audio_transcription.completed")[0];
    assert_eq!(completed["item_id"], item_id);
    assert_eq!(completed["transcript"], "mock transcript of 1.50 seconds");
    let usage = &completed["usage"];
    assert_eq!((usage["model"].as_str(), usage["seconds"].as_f64()), (Some("eleven-labs-stt-realtime"), Some(1.5)));
    let position = |kind: &str| events.iter().position(|e| e["type"] == kind).unwrap();
    assert!(position("conversation.item.input_audio_transcription.delta") < position("conversation.item.done"));
    assert_eq!(events.last().unwrap()["item"]["content"][0]["transcript"], "mock transcript of 1.50 seconds");

    // The transcript is the user's message to the chat model.
    send(&mut socket, json!({"type": "response.create", "response": {"output_modalities": ["text"]}})).await;
    let answer = until(&mut socket, "response.done").await;
    let text: String = of(&answer, "response.output_text.delta").iter().map(|e| e["delta"].as_str().unwrap()).collect();
    assert_eq!(text, common::mock::reply_text("mock transcript of 1.50 seconds", 12));

    // A second turn in G.711 μ-law at 8 kHz (silence, 1 s in two appends), made 16 kHz PCM upstream.
    send(
        &mut socket,
        json!({"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}}),
    )
    .await;
    assert_eq!(next(&mut socket).await["type"], "session.updated");
    let ulaw = base64::engine::general_purpose::STANDARD.encode(vec![0xFFu8; 4000]);
    for _ in 0..2 {
        send(&mut socket, json!({"type": "input_audio_buffer.append", "audio": ulaw})).await;
    }
    send(&mut socket, json!({"type": "input_audio_buffer.commit"})).await;
    let events = until(&mut socket, "conversation.item.done").await;
    let completed = of(&events, "conversation.item.input_audio_transcription.completed")[0];
    assert_eq!(completed["transcript"], "mock transcript of 1.00 seconds");
    // 0.5 s of partials: one, at the second append (the resampler keeps a sample back until the commit).
    assert_eq!(of(&events, "conversation.item.input_audio_transcription.delta").len(), 1);
    socket.close(None).await.unwrap();

    // Upstream: one socket a turn, every second sent at 16 kHz, one commit each; nothing over HTTP.
    let stats = media.ws().stats();
    assert_eq!((stats.stt_sessions, stats.stt_commits), (2, 2), "{stats:?}");
    assert!((stats.stt_audio_seconds - 2.5).abs() < 1e-9, "{stats:?}");
    let handshakes = media.ws().handshakes();
    assert!(handshakes
        .iter()
        .all(|h| h.path.contains("audio_format=pcm_16000") && h.path.contains("commit_strategy=manual")));
    assert!(handshakes.iter().all(|h| h.headers.iter().any(|(n, v)| n == "xi-api-key" && v == "xi-test")));
    assert_eq!(media.calls("/v1/speech-to-text"), 2, "the two handshakes, no HTTP transcription");

    // Records: the two turns' sockets (1.5 s and 1 s at 0.111 credits a second) and the chat; the wallet is exact.
    let records = gw.usage(&workspace).await;
    assert_eq!(records.len(), 3, "{records:?}");
    assert!(records.iter().all(|r| r.2 == "ok"), "{records:?}");
    let socket_records: Vec<i64> = records.iter().filter(|r| r.0.starts_with("stt")).map(|r| r.1).collect();
    assert_eq!(socket_records, [167, 111], "{records:?}");
    assert_eq!(records.iter().find(|r| r.0 == usage["id"]).map(|r| r.1), Some(167));
    let charged: i64 = records.iter().map(|r| r.1).sum();
    assert_eq!(gw.settled(&key).await, (5_000_000 - charged, 0));
    gw.stop().await;
}

#[actix_web::test]
async fn a_socket_refused_failing_or_silent_leaves_the_turn_to_http_charged_once() {
    let Setup { _chat, media, gw } = setup().await;
    let (workspace, key) = gw.workspace("5000", 1000, 1, 1_000_000).await;
    let mut socket = connect(&gw, &key, true).await;
    let faults = [(WsFault::Refuse(503), None), (WsFault::Error, Some(1)), (WsFault::Stall, Some(1))];
    for (fault, times) in faults {
        media.ws().set_fault(Some(WsRoute::Stt), fault, times);
        send(&mut socket, json!({"type": "input_audio_buffer.append", "audio": tone(500, 0)})).await;
        send(&mut socket, json!({"type": "input_audio_buffer.append", "audio": tone(500, 0)})).await;
        send(&mut socket, json!({"type": "input_audio_buffer.commit"})).await;
        let events = until_slow(&mut socket, "conversation.item.done").await;
        let completed = of(&events, "conversation.item.input_audio_transcription.completed");
        let completed = completed.first().unwrap_or_else(|| panic!("{fault:?}: {events:?}"));
        assert!(completed["transcript"].as_str().unwrap().starts_with("transcribed"), "{fault:?}: {completed}");
        assert_eq!(completed["usage"]["model"], "eleven-labs-stt", "{fault:?}: over HTTP");
        media.ws().set_fault(None, WsFault::None, None);
    }
    socket.close(None).await.unwrap();
    let handshakes = media.ws().handshakes().len() as u64;
    assert_eq!(media.calls("/v1/speech-to-text") - handshakes, 3, "each turn transcribed over HTTP");
    // Three HTTP transcriptions charged; the sockets' audio was given back (zero-credit records say why).
    let records = gw.usage(&workspace).await;
    let charged: Vec<_> = records.iter().filter(|r| r.1 > 0).collect();
    assert_eq!(charged.len(), 3, "{records:?}");
    assert!(charged.iter().all(|r| r.2 == "ok"), "{records:?}");
    let total: i64 = records.iter().map(|r| r.1).sum();
    assert_eq!(gw.settled(&key).await, (5_000_000 - total, 0));
    gw.stop().await;
}

#[actix_web::test]
async fn server_voice_activity_detection_commits_and_answers_with_streaming_on() {
    let Setup { _chat, media, gw } = setup().await;
    let (workspace, key) = gw.workspace("5000", 1000, 2, 1_000_000).await;
    let mut socket = connect(&gw, &key, false).await;
    send(&mut socket, json!({"type": "input_audio_buffer.append", "audio": tone(800, 700)})).await;
    let events = until(&mut socket, "response.done").await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let position = |kind: &str| kinds.iter().position(|k| *k == kind).unwrap_or_else(|| panic!("{kind}: {kinds:?}"));
    assert!(position("input_audio_buffer.speech_started") < position("input_audio_buffer.speech_stopped"));
    assert!(position("input_audio_buffer.speech_stopped") < position("input_audio_buffer.committed"));
    let transcribed = position("conversation.item.input_audio_transcription.completed");
    assert!(position("conversation.item.input_audio_transcription.delta") < transcribed);
    assert!(transcribed < position("response.created"));
    let item_id = &events[position("input_audio_buffer.speech_started")]["item_id"];
    assert_eq!(&events[position("conversation.item.input_audio_transcription.delta")]["item_id"], item_id);
    assert_eq!(events[transcribed]["transcript"], "mock transcript of 1.50 seconds");
    assert_eq!(events.last().unwrap()["response"]["status"], "completed");
    socket.close(None).await.unwrap();
    let stats = media.ws().stats();
    assert_eq!((stats.stt_sessions, stats.stt_commits), (1, 1), "{stats:?}");
    let records = gw.usage(&workspace).await;
    assert!(records.iter().any(|r| r.0.starts_with("stt") && r.1 == 167), "1.5 s over the socket: {records:?}");
    let charged: i64 = records.iter().map(|r| r.1).sum();
    assert_eq!(gw.settled(&key).await, (5_000_000 - charged, 0));
    gw.stop().await;
}
