//! The fault catalogue's rows for images, speech and realtime sockets (`tests/faults/README.md`): what the client
//! sees, what is retried or falls back, and what is billed, when Black Forest Labs, ElevenLabs or a realtime
//! provider fails. Rows already held elsewhere (a failed, moderated or endless image task, a cut audio stream, a
//! speech fallback, a realtime socket cut or closed) are named in the catalogue.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "mock/media.rs"]
mod media_mock;

use common::ws::{open, ws_url};
use common::{error_code, Gateway, ADMIN_KEY};
use media_mock::{MediaFault, MediaMock, WsFault, WsRoute};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// BFL and ElevenLabs on one mock; 3 s to the first byte (the mock renders real audio, slowly on a loaded
/// machine), 8 s for the whole of an answer's wait.
async fn setup(tweak: impl FnOnce(&mut switchyard::config::Config)) -> (MediaMock, Gateway) {
    let mock = MediaMock::start().await.unwrap();
    mock.set_pending_polls(1);
    let env = HashMap::from([
        ("SWITCHYARD_ADMIN_KEY".to_owned(), ADMIN_KEY.to_owned()),
        ("BFL_BASE_URL".to_owned(), mock.url()),
        ("BFL_API_KEY".to_owned(), "bfl-test".to_owned()),
        ("ELEVENLABS_BASE_URL".to_owned(), mock.url()),
        ("ELEVENLABS_API_KEY".to_owned(), "xi-test".to_owned()),
    ]);
    let gw = Gateway::start(env, |c| {
        c.upstream.poll_interval_ms = 5;
        c.upstream.first_byte_timeout_ms = 3000;
        c.upstream.total_timeout_ms = 8000;
        c.pool.retry_base_ms = 1;
        tweak(c);
    })
    .await;
    (mock, gw)
}

async fn task(gw: &Gateway, key: &str, body: Value) -> reqwest::Response {
    gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth(key).json(&body).send().await.unwrap()
}

fn image() -> Value {
    json!({"model": "flux-1-pro", "prompt": "a lake", "width": 256, "height": 256})
}

fn speech() -> Value {
    json!({"model": "eleven-labs-tts", "text": "Fault lines", "voice": "21m00Tcm4TlvDq8ikWAM"})
}

/// The statuses and charges (millicredits) of a workspace's usage records.
async fn records(gw: &Gateway, workspace: &str) -> Vec<(String, i64)> {
    gw.usage(workspace).await.into_iter().map(|(_, credits, status)| (status, credits)).collect()
}

#[actix_web::test]
async fn an_image_submit_answered_429_is_retried_after_its_wait_and_charged_once() {
    let (mock, gw) = setup(|_| {}).await;
    let (workspace, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    mock.set_fault(MediaFault::Status { status: 429, retry_after: Some(1) }, Some(1));
    let started = std::time::Instant::now();
    let response = task(&gw, &key, image()).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "the provider's Retry-After was waited");
    assert_eq!(answer["metadata"]["attempts"], 2);
    assert_eq!(answer["model"], "flux-1-pro");
    let charged = (answer["metadata"]["credits_charged"].as_f64().unwrap() * 1000.0).round() as i64;
    assert_eq!(records(&gw, &workspace).await, vec![("ok".to_owned(), charged)]);
    assert_eq!(gw.wallet(&key).await, (100_000 - charged, 0));
    gw.stop().await;
}

#[actix_web::test]
async fn an_image_submit_reset_or_silent_goes_to_the_fallback_and_only_the_answer_is_charged() {
    let (mock, gw) = setup(|c| c.pool.max_retries = 0).await;
    let (workspace, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    for (fault, reason) in [(MediaFault::Reset, "connection"), (MediaFault::Stall(Duration::from_secs(60)), "timeout")]
    {
        mock.set_fault(fault.clone(), Some(1));
        let response = task(&gw, &key, image()).await;
        assert_eq!(response.status(), 200, "{fault:?}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["model"], "flux-1-dev", "{fault:?}");
        assert_eq!(answer["metadata"]["fallback"]["used"], true);
        assert_eq!(answer["metadata"]["fallback"]["reason"], reason, "{fault:?}");
    }
    // Two answers from the fallback, 25 credits each; the failed attempts cost nothing.
    assert_eq!(records(&gw, &workspace).await, vec![("ok".to_owned(), 25_000), ("ok".to_owned(), 25_000)]);
    assert_eq!(gw.wallet(&key).await, (50_000, 0));
    gw.stop().await;
}

#[actix_web::test]
async fn an_image_provider_failing_for_good_is_502_and_free() {
    let (mock, gw) = setup(|c| c.pool.max_retries = 1).await;
    let (workspace, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    mock.set_fault(MediaFault::Status { status: 500, retry_after: None }, None);
    assert_eq!(error_code(task(&gw, &key, image()).await).await, (502, "provider_error".to_owned()));
    // Retried, then the fallback (retried too): four submits, no poll.
    assert_eq!(mock.calls("/v1/flux"), 4);
    assert_eq!(mock.calls("/v1/get_result"), 0);
    assert_eq!(records(&gw, &workspace).await, vec![("error".to_owned(), 0)]);
    assert_eq!(gw.wallet(&key).await, (100_000, 0));
    gw.stop().await;
}

#[actix_web::test]
async fn a_speech_call_reset_or_silent_once_is_retried_and_charged_once() {
    let (mock, gw) = setup(|_| {}).await;
    let (workspace, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    for fault in [MediaFault::Reset, MediaFault::Stall(Duration::from_secs(60))] {
        mock.set_fault(fault.clone(), Some(1));
        let response = task(&gw, &key, speech()).await;
        assert_eq!(response.status(), 200, "{fault:?}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["metadata"]["attempts"], 2, "{fault:?}");
    }
    let cost = 11 * 180;
    assert_eq!(records(&gw, &workspace).await, vec![("ok".to_owned(), cost), ("ok".to_owned(), cost)]);
    assert_eq!(gw.wallet(&key).await, (100_000 - 2 * cost, 0));
    gw.stop().await;
}

#[actix_web::test]
async fn a_speech_provider_silent_for_good_is_504_within_the_budget_and_free() {
    let (mock, gw) = setup(|_| {}).await;
    let (workspace, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    mock.set_fault(MediaFault::Stall(Duration::from_secs(60)), None);
    let started = std::time::Instant::now();
    assert_eq!(error_code(task(&gw, &key, speech()).await).await, (504, "provider_timeout".to_owned()));
    assert!(started.elapsed() < Duration::from_secs(30), "ended by the 8 s budget, not by the provider");
    assert_eq!(records(&gw, &workspace).await, vec![("error".to_owned(), 0)]);
    assert_eq!(gw.wallet(&key).await, (100_000, 0));
    gw.stop().await;
}

#[actix_web::test]
async fn an_elevenlabs_socket_refused_upstream_is_502_before_any_socket_and_free() {
    let (mock, gw) = setup(|_| {}).await;
    let (workspace, key) = gw.workspace("5000", 1000, 10, 1_000_000).await;
    mock.ws().set_fault(Some(WsRoute::Tts), WsFault::Refuse(503), None);
    let url = ws_url(&gw, "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM/stream-input?model_id=eleven_multilingual_v2");
    let Err((status, body)) = open(&url, &[("xi-api-key", key.as_str())]).await else { panic!("accepted") };
    assert_eq!((status, body["error"]["code"].as_str()), (502, Some("provider_error")), "{body}");
    assert_eq!(records(&gw, &workspace).await, vec![("error".to_owned(), 0)]);
    assert_eq!(gw.wallet(&key).await, (5_000_000, 0));
    gw.stop().await;
}

#[actix_web::test]
async fn a_realtime_provider_that_cannot_be_reached_is_502_before_any_socket_and_free() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let env = HashMap::from([
        ("SWITCHYARD_ADMIN_KEY".to_owned(), ADMIN_KEY.to_owned()),
        ("OPENAI_BASE_URL".to_owned(), nowhere),
        ("OPENAI_API_KEY".to_owned(), "sk-test".to_owned()),
    ]);
    let relay = Gateway::start(env, |_| {}).await;
    let (relay_workspace, relay_key) = relay.workspace("5000", 1000, 10, 1_000_000).await;
    let url = ws_url(&relay, "/v1/realtime?model=gpt-realtime");
    let Err((status, body)) = open(&url, &[("authorization", &format!("Bearer {relay_key}"))]).await else {
        panic!("accepted")
    };
    assert_eq!((status, body["error"]["code"].as_str()), (502, Some("provider_error")), "{body}");
    // Its records are per response: a socket that never opened has none.
    assert!(records(&relay, &relay_workspace).await.is_empty());
    assert_eq!(relay.wallet(&relay_key).await, (5_000_000, 0));
    relay.stop().await;
}
