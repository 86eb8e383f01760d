//! Realtime voice, relayed: a WebSocket client speaks the OpenAI Realtime protocol to the gateway, which relays it
//! to the mock OpenAI Realtime upstream. Refusals come before the upgrade as plain HTTP (no accepted socket that then
//! closes); a browser's client secret works through the subprotocol; each `response.done` is one usage record, priced
//! from its usage; bad frames get `error` events and the session goes on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "mock/realtime.rs"]
mod realtime_mock;

use base64::Engine as _;
use common::ws::{next, open, send, ws_url};
use common::{Gateway, ADMIN_KEY};
use futures::{SinkExt, StreamExt};
use realtime_mock::RealtimeMock;
use serde_json::{json, Value};
use std::collections::HashMap;
use tokio_tungstenite::tungstenite::Message;

async fn setup() -> (RealtimeMock, Gateway) {
    let mock = RealtimeMock::start().await.unwrap();
    let env = HashMap::from([
        ("OPENAI_BASE_URL".to_owned(), mock.url()),
        ("OPENAI_API_KEY".to_owned(), "sk-test".to_owned()),
        ("SWITCHYARD_ADMIN_KEY".to_owned(), ADMIN_KEY.to_owned()),
    ]);
    let gw = Gateway::start(env, |_| {}).await;
    (mock, gw)
}

/// 0.5 s of silence-ish PCM16 at 24 kHz, base64.
fn speech() -> String {
    base64::engine::general_purpose::STANDARD.encode(vec![1u8; 24_000])
}

#[actix_web::test]
async fn a_conversation_is_relayed_and_each_response_billed_once() {
    let (mock, gw) = setup().await;
    let (workspace, key) = gw.workspace("5000", 1000, 10, 1_000_000).await;
    let bearer = format!("Bearer {key}");
    let (mut socket, _) =
        open(&ws_url(&gw, "/v1/realtime?model=gpt-realtime"), &[("authorization", &bearer)]).await.unwrap();
    let created = next(&mut socket).await;
    assert_eq!(created["type"], "session.created", "{created}");
    send(&mut socket, json!({"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief."}}))
        .await;
    assert_eq!(next(&mut socket).await["type"], "session.updated");
    // Bad frames: an error event each, and the session goes on.
    socket.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let refused = next(&mut socket).await;
    assert_eq!((refused["type"].as_str(), refused["error"]["code"].as_str()), (Some("error"), Some("invalid_event")));
    socket.send(Message::text("not json")).await.unwrap();
    assert_eq!(next(&mut socket).await["error"]["code"], "invalid_event");

    for turn in 0..2 {
        send(&mut socket, json!({"type": "input_audio_buffer.append", "audio": speech()})).await;
        send(&mut socket, json!({"type": "input_audio_buffer.commit"})).await;
        assert_eq!(next(&mut socket).await["type"], "input_audio_buffer.committed");
        let transcript = next(&mut socket).await;
        assert_eq!(transcript["type"], "conversation.item.input_audio_transcription.completed");
        send(&mut socket, json!({"type": "response.create"})).await;
        let mut audio = Vec::new();
        let mut text = String::new();
        let done = loop {
            let event = next(&mut socket).await;
            match event["type"].as_str().unwrap() {
                "response.output_audio.delta" => audio.extend(
                    base64::engine::general_purpose::STANDARD.decode(event["delta"].as_str().unwrap()).unwrap(),
                ),
                "response.output_audio_transcript.delta" => text.push_str(event["delta"].as_str().unwrap()),
                "response.done" => break event,
                _ => {}
            }
        };
        assert_eq!(text, "Hello from the mock.", "turn {turn}");
        assert_eq!(audio.len(), realtime_mock::AUDIO_CHUNKS * realtime_mock::RATE / 10 * 2, "0.5 s of PCM16");
        assert_eq!(done["response"]["status"], "completed");
    }
    socket.close(None).await.unwrap();
    // Each response is one usage record, at text, audio and cached prices apart: 10 text + 5 audio tokens in
    // (0.5 s), 5 text + 25 audio out, at 4/32/16/64 credits per 1k.
    let records = gw.usage(&workspace).await;
    assert_eq!(records.len(), 2, "{records:?}");
    let expected: i64 = (10 * 4_000 + 5 * 32_000 + 5 * 16_000 + 25 * 64_000) / 1000;
    assert!(records.iter().all(|r| r.1 == expected && r.2 == "ok"), "{records:?}, each {expected}");
    assert_eq!(mock.responses(), 2);
    assert_eq!(gw.settled(&key).await, (5_000_000 - 2 * expected, 0));
    gw.stop().await;
}

#[actix_web::test]
async fn a_response_the_wallet_cannot_cover_whole_is_clamped_to_what_it_covers() {
    let (mock, gw) = setup().await;
    // A response holds its whole context as audio in (32,000 tokens at 32 credits per 1k: 1,024 credits) and its
    // output allowance as audio out (64 per 1k). 1,030 credits cover 93 tokens out, not the model's 4,096.
    let (workspace, key) = gw.workspace("1030", 1000, 10, 1_000_000).await;
    let bearer = format!("Bearer {key}");
    let (mut socket, _) =
        open(&ws_url(&gw, "/v1/realtime?model=gpt-realtime"), &[("authorization", &bearer)]).await.unwrap();
    assert_eq!(next(&mut socket).await["type"], "session.created");
    send(&mut socket, json!({"type": "response.create", "response": {"max_output_tokens": 2000}})).await;
    let done = loop {
        let event = next(&mut socket).await;
        if event["type"] == "response.done" {
            break event;
        }
    };
    assert_eq!(done["response"]["status"], "completed");
    assert_eq!(mock.max_output_tokens(), vec![Some(93)], "the allowance sent upstream was clamped");
    socket.close(None).await.unwrap();
    let charged: i64 = gw.usage(&workspace).await.iter().map(|r| r.1).sum();
    assert_eq!(gw.settled(&key).await, (1_030_000 - charged, 0));
    // A wallet that cannot cover the fewest tokens worth a response is refused at the upgrade.
    let (_, poor) = gw.workspace("1024.5", 1000, 10, 1_000_000).await;
    let Err((status, _)) = open(&ws_url(&gw, "/v1/realtime?model=gpt-realtime"), &[("api-key", poor.as_str())]).await
    else {
        panic!("accepted")
    };
    assert_eq!(status, 402);
    gw.stop().await;
}

#[actix_web::test]
async fn the_providers_close_code_is_passed_on_and_an_expired_token_is_refused() {
    let (_mock, gw) = setup().await;
    let (_, key) = gw.workspace("5000", 1000, 10, 1_000_000).await;
    let bearer = format!("Bearer {key}");
    let (mut socket, _) =
        open(&ws_url(&gw, "/v1/realtime?model=gpt-realtime"), &[("authorization", &bearer)]).await.unwrap();
    assert_eq!(next(&mut socket).await["type"], "session.created");
    send(&mut socket, json!({"type": "mock.close", "code": 4001, "reason": "session ended by the provider"})).await;
    let closed = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), socket.next()).await.unwrap() {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => break other,
        }
    };
    let Some(Ok(Message::Close(Some(frame)))) = closed else { panic!("{closed:?}") };
    assert_eq!((u16::from(frame.code), frame.reason.as_str()), (4001, "session ended by the provider"));
    // A session token past its expiry: 401 before the upgrade.
    let minted: Value = gw
        .client
        .post(format!("{}/api/v1/sessions", gw.url))
        .header("X-API-Key", &key)
        .json(&json!({"expires_in": 60}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = minted["access_token"].as_str().unwrap();
    let mut claims = gw.state.sessions.check(token, switchyard::clock::now_unix()).unwrap();
    claims.exp = switchyard::clock::now_unix() - 1;
    let expired = gw.state.sessions.mint(&claims);
    let url = |token: &str| format!("{}&token={token}", ws_url(&gw, "/v1/realtime?model=gpt-realtime"));
    let Err((status, body)) = open(&url(&expired), &[]).await else { panic!("accepted") };
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("expired_token")), "{body}");
    // And one revoked (a browser signed out): 401 too.
    let revoked = gw.client.delete(format!("{}/api/v1/sessions/{}", gw.url, claims.sid)).header("X-API-Key", &key);
    assert_eq!(revoked.send().await.unwrap().status(), 200);
    let Err((status, body)) = open(&url(token), &[]).await else { panic!("accepted") };
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("revoked_token")), "{body}");
    gw.stop().await;
}

#[actix_web::test]
async fn refusals_are_plain_http_before_any_socket() {
    let (mock, gw) = setup().await;
    let (_, key) = gw.workspace("5000", 1000, 10, 1_000_000).await;
    let url = ws_url(&gw, "/v1/realtime?model=gpt-realtime");
    let bearer = format!("Bearer {key}");
    type Case<'a> = (String, Vec<(&'a str, String)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (url.clone(), vec![], 401, "missing_api_key"),
        (url.clone(), vec![("authorization", "Bearer sy_live_nope".to_owned())], 401, "invalid_api_key"),
        (url.clone(), vec![("authorization", "Bearer sy_st_forged.sig".to_owned())], 401, "invalid_token"),
        (
            ws_url(&gw, "/v1/realtime?model=flux-1-pro"),
            vec![("authorization", bearer.clone())],
            400,
            "unsupported_model",
        ),
        // A chat model is a voice agent only with its voice models configured (no ElevenLabs here).
        (ws_url(&gw, "/v1/realtime?model=gpt-4"), vec![("authorization", bearer.clone())], 503, "provider_unavailable"),
        (ws_url(&gw, "/v1/realtime"), vec![("authorization", bearer.clone())], 400, "missing_field"),
    ];
    for (url, headers, status, code) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let Err((got, body)) = open(&url, &headers).await else { panic!("{url} {headers:?} was accepted") };
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{url} {headers:?}: {body}");
    }
    // A token for other models: 403; a wallet that cannot cover one response: 402.
    let session: Value = gw
        .client
        .post(format!("{}/api/v1/sessions", gw.url))
        .header("X-API-Key", &key)
        .json(&json!({"models": ["gpt-4"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = session["access_token"].as_str().unwrap();
    let with_token = format!("{url}&token={token}");
    let Err((status, body)) = open(&with_token, &[]).await else { panic!("accepted") };
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("model_not_allowed")));
    let (_, poor) = gw.workspace("10", 1000, 10, 1_000_000).await;
    let Err((status, body)) = open(&url, &[("api-key", poor.as_str())]).await else { panic!("accepted") };
    assert_eq!((status, body["error"]["code"].as_str()), (402, Some("insufficient_credits")));
    assert_eq!(mock.connections(), 0, "nothing reached the provider");
    gw.stop().await;
}

#[actix_web::test]
async fn a_browser_client_secret_opens_the_socket_by_subprotocol() {
    let (mock, gw) = setup().await;
    let (_, key) = gw.workspace("5000", 1000, 10, 1_000_000).await;
    let secret: Value = gw
        .client
        .post(format!("{}/v1/realtime/client_secrets", gw.url))
        .bearer_auth(&key)
        .json(&json!({"expires_after": {"anchor": "created_at", "seconds": 600},
                      "session": {"type": "realtime", "model": "gpt-realtime", "audio": {"output": {"voice": "marin"}}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let value = secret["value"].as_str().unwrap_or_else(|| panic!("{secret}"));
    assert!(value.starts_with("ek_"), "{secret}");
    assert_eq!(secret["session"]["audio"]["output"]["voice"], "marin");
    let protocols = format!("realtime, openai-insecure-api-key.{value}");
    let (mut socket, protocol) =
        open(&ws_url(&gw, "/v1/realtime?model=gpt-realtime"), &[("sec-websocket-protocol", &protocols)])
            .await
            .unwrap_or_else(|e| panic!("refused: {e:?}"));
    assert_eq!(protocol.as_deref(), Some("realtime"), "browsers abort unless `realtime` is echoed");
    assert_eq!(next(&mut socket).await["type"], "session.created");
    socket.close(None).await.unwrap();
    // The secret is bound to its model, and a secret cannot mint another.
    let Err((status, _)) =
        open(&ws_url(&gw, "/v1/realtime?model=gpt-4"), &[("sec-websocket-protocol", &protocols)]).await
    else {
        panic!("accepted")
    };
    assert_eq!(status, 403);
    let again = gw.client.post(format!("{}/v1/realtime/client_secrets", gw.url)).bearer_auth(value).json(&json!({}));
    assert_eq!(again.send().await.unwrap().status(), 403);
    for (body, param) in [
        (json!({"expires_after": {"seconds": 5}}), "expires_after.seconds"),
        (json!({"session": {"model": "flux-1-pro"}}), "session.model"),
        (json!({"session": "realtime"}), "session"),
        (json!({"colour": 1}), "colour"),
    ] {
        let response = gw.client.post(format!("{}/v1/realtime/client_secrets", gw.url)).bearer_auth(&key).json(&body);
        let answer: Value = response.send().await.unwrap().json().await.unwrap();
        assert_eq!(answer["error"]["param"], param, "{body} -> {answer}");
    }
    assert_eq!(mock.connections(), 1);
    gw.stop().await;
}

#[actix_web::test]
async fn the_official_openai_sdk_realtime_client_works_unchanged() {
    let Some(python) = common::python() else {
        assert!(std::env::var_os("CI").is_none(), "CI must run the OpenAI SDK test: run `make test`");
        eprintln!("SKIPPED: the OpenAI SDK realtime test needs `make test` (it installs the SDK into .cache/venv)");
        return;
    };
    let (mock, gw) = setup().await;
    let (workspace, key) = gw.workspace("5000", 1000, 10, 1_000_000).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/openai_realtime.py");
    let run = tokio::process::Command::new(python)
        .arg(script)
        .env("SWITCHYARD_URL", &gw.url)
        .env("SWITCHYARD_KEY", &key)
        .kill_on_drop(true)
        .output();
    let output =
        tokio::time::timeout(std::time::Duration::from_secs(120), run).await.expect("the SDK script ends").unwrap();
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(mock.responses(), 1);
    assert_eq!(gw.usage(&workspace).await.len(), 1);
    gw.stop().await;
}

#[actix_web::test]
async fn a_response_cut_off_upstream_ends_with_an_error_event_and_is_charged_for_what_was_streamed() {
    let (mock, gw) = setup().await;
    let (workspace, key) = gw.workspace("5000", 1000, 10, 1_000_000).await;
    let bearer = format!("Bearer {key}");
    let (mut socket, _) =
        open(&ws_url(&gw, "/v1/realtime?model=gpt-realtime"), &[("authorization", &bearer)]).await.unwrap();
    assert_eq!(next(&mut socket).await["type"], "session.created");
    mock.cut_responses(true);
    send(&mut socket, json!({"type": "response.create"})).await;
    assert_eq!(next(&mut socket).await["type"], "response.created");
    assert_eq!(next(&mut socket).await["type"], "response.output_audio_transcript.delta");
    let cut = next(&mut socket).await;
    assert_eq!(
        (cut["type"].as_str(), cut["error"]["code"].as_str()),
        (Some("error"), Some("upstream_closed")),
        "{cut}"
    );
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next()).await.unwrap();
    assert!(matches!(closed, Some(Ok(Message::Close(_))) | None), "{closed:?}");
    // Charged for what was streamed (one transcript delta, "Hello": two tokens of text out at 16 credits per 1k),
    // once, and nothing left held.
    let records = gw.usage(&workspace).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].2, "cut");
    assert_eq!(records[0].1, 32, "{records:?}");
    assert_eq!(gw.settled(&key).await, (5_000_000 - 32, 0));
    let metrics = gw.client.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("switchyard_realtime_sessions_closed_total{reason=\"upstream\"} 1"), "{metrics}");
    assert!(metrics.contains("switchyard_realtime_sessions_open 0"));
    gw.stop().await;
}
