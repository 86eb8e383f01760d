//! One conformance suite, run against every chat provider through the gateway: answers, streams, usage, and each
//! upstream fault mapped onto the API.md error table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::mock::{self, Fault, MockConfig, MockServer};
use common::{error_code, sse_data, Gateway};
use serde_json::{json, Value};
use std::time::Duration;

fn chat(model: &str, text: &str, stream: bool) -> Value {
    json!({"model": model, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}], "stream": stream})
}

async fn setup() -> (MockServer, Gateway) {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let gateway = Gateway::with_mock(&mock).await;
    (mock, gateway)
}

/// A gateway that neither retries nor lets circuits open, so each upstream failure reaches the caller as it is
/// mapped (every model of the chain hits the same faulty mock).
async fn setup_without_retries() -> (MockServer, Gateway) {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let gateway = Gateway::start(common::mock_env(&mock), |c| {
        c.pool.max_retries = 0;
        c.pool.breaker_failures = 1000;
        c.upstream.first_byte_timeout_ms = 300;
    })
    .await;
    (mock, gateway)
}

async fn answers_whole(model: &str, path: &str) {
    let (mock, gw) = setup().await;
    let response = gw.post("/api/v1/task").json(&chat(model, "hello there", false)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-switchyard-overhead-us"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "task.completion");
    assert!(body["id"].as_str().unwrap().starts_with("task_"));
    assert_eq!(body["model"], model);
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], mock::reply_text("hello there", 12));
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 12);
    assert_eq!(body["usage"]["prompt_tokens"], 4);
    assert_eq!(body["usage"]["total_tokens"], 16);
    let sent = mock.last_request().unwrap();
    assert_eq!(sent.path, path);
    let _ = gw.stop().await;
}

async fn streams(model: &str) {
    let (mock, gw) = setup().await;
    let response = gw.post("/api/v1/task").json(&chat(model, "hello there", true)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let data = sse_data(&response.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "task.completion.chunk"));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, mock::reply_text("hello there", 12));
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["usage"]["completion_tokens"], 12);
    assert_eq!(last["usage"]["prompt_tokens"], 4);
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c.get("usage").is_none()));
    let _ = mock;
    gw.stop().await;
}

async fn max_tokens_cuts_with_length(model: &str) {
    let (_mock, gw) = setup().await;
    let mut body = chat(model, "hi", false);
    body["max_tokens"] = json!(3);
    let body: Value = gw.post("/api/v1/task").json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 3);
    gw.stop().await;
}

async fn upstream_429_is_not_ours(model: &str) {
    let (mock, gw) = setup_without_retries().await;
    mock.set_fault(Fault::Status { status: 429, retry_after: Some(7) }, None);
    let response = gw.post("/api/v1/task").json(&chat(model, "hi", false)).send().await.unwrap();
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(error_code(response).await, (503, "overloaded".to_owned()));
    gw.stop().await;
}

async fn upstream_500_is_a_provider_error(model: &str, stream: bool) {
    let (mock, gw) = setup_without_retries().await;
    mock.set_fault(Fault::Status { status: 500, retry_after: None }, None);
    let response = gw.post("/api/v1/task").json(&chat(model, "hi", stream)).send().await.unwrap();
    assert_eq!(error_code(response).await, (502, "provider_error".to_owned()));
    gw.stop().await;
}

async fn reset_is_a_provider_error(model: &str) {
    let (mock, gw) = setup_without_retries().await;
    mock.set_fault(Fault::Reset, None);
    let response = gw.post("/api/v1/task").json(&chat(model, "hi", false)).send().await.unwrap();
    assert_eq!(error_code(response).await, (502, "provider_error".to_owned()));
    gw.stop().await;
}

async fn stall_times_out(model: &str) {
    let (mock, gw) = setup_without_retries().await;
    mock.set_fault(Fault::Stall(Duration::from_secs(5)), None);
    let response = gw.post("/api/v1/task").json(&chat(model, "hi", true)).send().await.unwrap();
    assert_eq!(error_code(response).await, (504, "provider_timeout".to_owned()));
    gw.stop().await;
}

/// A failure after the first byte: one error frame, no `[DONE]`, and what came before intact.
async fn cut_stream_ends_with_one_error_frame(model: &str, fault: Fault) {
    let (mock, gw) = setup().await;
    mock.set_fault(fault, Some(1));
    let response = gw.post("/api/v1/task").json(&chat(model, "hi", true)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let data = sse_data(&response.text().await.unwrap());
    assert!(!data.iter().any(|d| d == "[DONE]"), "{data:?}");
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "upstream_error", "{last}");
    let errors = data.iter().filter(|d| d.contains("\"error\"")).count();
    assert_eq!(errors, 1);
    let text: String = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text.split_whitespace().count(), 3, "three tokens before the fault: {text:?}");
    gw.stop().await;
}

/// A client that leaves mid-stream closes the upstream connection.
async fn disconnect_cancels_upstream(model: &str) {
    let mock = MockServer::start(MockConfig {
        token_interval: Duration::from_millis(50),
        reply_words: 200,
        ..Default::default()
    })
    .await
    .unwrap();
    let gw = Gateway::with_mock(&mock).await;
    let mut response = gw.post("/api/v1/task").json(&chat(model, "hi", true)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let _ = response.chunk().await.unwrap();
    assert!(mock.open_connections() >= 1);
    drop(response);
    let mut closed = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if mock.open_connections() == 0 {
            closed = true;
            break;
        }
    }
    assert!(closed, "upstream connection still open after the client left");
    assert_eq!(gw.state.metrics.streams_in_flight.get(), 0);
    gw.stop().await;
}

macro_rules! conformance {
    ($name:ident, $model:literal, $path:literal) => {
        mod $name {
            use super::*;

            #[actix_web::test]
            async fn answers_whole() {
                super::answers_whole($model, $path).await;
            }

            #[actix_web::test]
            async fn streams_with_usage_in_the_last_chunk() {
                super::streams($model).await;
            }

            #[actix_web::test]
            async fn max_tokens_cuts_with_length() {
                super::max_tokens_cuts_with_length($model).await;
            }

            #[actix_web::test]
            async fn upstream_429_is_503_overloaded_with_retry_after() {
                super::upstream_429_is_not_ours($model).await;
            }

            #[actix_web::test]
            async fn upstream_500_is_502() {
                super::upstream_500_is_a_provider_error($model, false).await;
            }

            #[actix_web::test]
            async fn upstream_500_before_a_stream_starts_is_a_plain_502() {
                super::upstream_500_is_a_provider_error($model, true).await;
            }

            #[actix_web::test]
            async fn connection_reset_is_502() {
                super::reset_is_a_provider_error($model).await;
            }

            #[actix_web::test]
            async fn stall_past_first_byte_timeout_is_504() {
                super::stall_times_out($model).await;
            }

            #[actix_web::test]
            async fn stream_cut_part_way_ends_with_an_error_frame() {
                super::cut_stream_ends_with_one_error_frame($model, Fault::CutStream { after_tokens: 3 }).await;
            }

            #[actix_web::test]
            async fn malformed_chunk_ends_with_an_error_frame() {
                super::cut_stream_ends_with_one_error_frame($model, Fault::MalformedChunk { after_tokens: 3 }).await;
            }

            #[actix_web::test]
            async fn error_event_mid_stream_ends_with_an_error_frame() {
                super::cut_stream_ends_with_one_error_frame($model, Fault::MidStreamError { after_tokens: 3 }).await;
            }

            #[actix_web::test]
            async fn client_disconnect_cancels_the_upstream_call() {
                super::disconnect_cancels_upstream($model).await;
            }
        }
    };
}

conformance!(openai, "gpt-4", "/v1/chat/completions");
conformance!(anthropic, "claude-3-sonnet", "/v1/messages");
conformance!(mistral, "mixtral-8x7b", "/v1/chat/completions");

#[actix_web::test]
async fn openai_request_asks_for_usage_and_sends_the_key() {
    let (mock, gw) = setup().await;
    let response = gw.post("/api/v1/task").json(&chat("gpt-4", "hi", true)).send().await.unwrap();
    let _ = response.text().await.unwrap();
    let sent = mock.last_request().unwrap();
    assert_eq!(sent.body["stream_options"]["include_usage"], true);
    assert_eq!(sent.body["model"], "gpt-4");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-test-openai"));
    assert_eq!(sent.body["messages"][0]["role"], "system");
    gw.stop().await;
}

#[actix_web::test]
async fn anthropic_request_maps_the_system_prompt_and_version() {
    let (mock, gw) = setup().await;
    let _ = gw.post("/api/v1/task").json(&chat("claude-3-haiku", "hi", false)).send().await.unwrap();
    let sent = mock.last_request().unwrap();
    assert_eq!(sent.header("x-api-key"), Some("test-anthropic"));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.body["system"], "be brief");
    assert_eq!(sent.body["model"], "claude-3-haiku-20240307");
    assert_eq!(sent.body["messages"].as_array().unwrap().len(), 1);
    assert_eq!(sent.body["max_tokens"], 1024);
    gw.stop().await;
}

#[actix_web::test]
async fn simulator_streams_deterministic_text() {
    let gw = Gateway::start(Default::default(), |_| {}).await;
    let whole: Value =
        gw.post("/api/v1/task").json(&chat("sim-chat", "hi", false)).send().await.unwrap().json().await.unwrap();
    let body = gw.post("/api/v1/task").json(&chat("sim-chat", "hi", true)).send().await.unwrap().text().await.unwrap();
    let data = sse_data(&body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let text: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, whole["choices"][0]["message"]["content"].as_str().unwrap());
    gw.stop().await;
}

#[actix_web::test]
async fn a_prompt_past_the_context_window_is_refused_before_any_upstream_call_and_not_charged() {
    let (mock, gw) = setup().await;
    let (_, key) = gw.workspace("100000", 100, 10, 10_000_000).await;
    let post =
        |path: &str, body: &Value| gw.client.post(format!("{}{path}", gw.url)).bearer_auth(&key).json(body).send();
    let before = gw.wallet(&key).await;
    // gpt-4 has an 8,192-token window: 40,000 words cannot fit, however they are tokenized.
    let long = "word ".repeat(40_000);
    for path in ["/api/v1/task", "/v1/chat/completions"] {
        let response = post(path, &chat("gpt-4", &long, false)).await.unwrap();
        assert_eq!(response.status(), 400, "{path}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "context_length_exceeded", "{error}");
        assert_eq!(error["error"]["param"], "messages");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("8192") && message.contains("40002"), "{message}");
    }
    // A prompt that fits, with an explicit max_tokens that does not.
    let mut body = chat("gpt-4", &"word ".repeat(7_500), false);
    body["max_tokens"] = json!(1_000);
    let response = post("/v1/chat/completions", &body).await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(mock.calls(), 0, "nothing went upstream");
    assert_eq!(gw.wallet(&key).await, before, "nothing was charged");
    // Without max_tokens the default allowance (1,024) shrinks to what the window leaves.
    let response = post("/v1/chat/completions", &chat("gpt-4", &"word ".repeat(7_500), false)).await.unwrap();
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(mock.last_request().unwrap().body["max_tokens"], 8_192 - 7_502);
    gw.stop().await;
}
