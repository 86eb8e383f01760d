//! The fault catalogue (`tests/faults/README.md`): one test per way a provider fails, checking what the client sees, what
//! is retried or falls back, and what is billed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::mock::{Fault, MockConfig, MockServer};
use common::pair::{chat, two_mock_env, CATALOGUE};
use common::{error_code, sse_data, Gateway};
use serde_json::Value;

/// The metadata of an answer, whole or streamed (the streamed one's is in the chunk before `[DONE]`).
async fn metadata(response: reqwest::Response, stream: bool) -> Value {
    assert_eq!(response.status(), 200);
    if !stream {
        return response.json::<Value>().await.unwrap()["metadata"].clone();
    }
    let data = sse_data(&response.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    last["metadata"].clone()
}

async fn task(gw: &Gateway, key: &str, body: &Value) -> reqwest::Response {
    gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth(key).json(body).send().await.unwrap()
}

/// An upstream that answers ten times (and more) what it may: the attempt ends as soon as the bound is passed, the
/// fallback answers, and only the fallback's answer is charged; with no fallback left, 502 and nothing charged.
#[actix_web::test]
async fn an_answer_past_the_size_bound_falls_back_and_is_never_held_whole() {
    let primary = MockServer::start(MockConfig::default()).await.unwrap();
    let backup = MockServer::start(MockConfig::default()).await.unwrap();
    let gw = Gateway::with_catalogue(two_mock_env(&primary, &backup), CATALOGUE, |c| {
        c.pool.max_retries = 0;
        c.upstream.max_response_bytes = 64 * 1024;
    })
    .await;
    let (workspace, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    for stream in [false, true] {
        // Within the bound, the primary answers.
        primary.set_fault(Fault::Oversized { bytes: 16 * 1024 }, Some(1));
        let meta = metadata(task(&gw, &key, &chat("gpt", stream)).await, stream).await;
        assert_eq!(meta["fallback"]["used"], false, "{meta}");
        // Ten times the bound: the fallback answers, for the fallback's price.
        primary.set_fault(Fault::Oversized { bytes: 640 * 1024 }, Some(1));
        let meta = metadata(task(&gw, &key, &chat("gpt", stream)).await, stream).await;
        assert_eq!(meta["fallback"]["used"], true, "{meta}");
        assert_eq!(meta["fallback"]["reason"], "protocol", "{meta}");
        assert_eq!(meta["model"], "claude");
    }
    // A whole answer past the bound with no Content-Length: refused as the bytes pass it, the same way.
    primary.set_fault(Fault::OversizedChunked { bytes: 640 * 1024 }, Some(1));
    let meta = metadata(task(&gw, &key, &chat("gpt", false)).await, false).await;
    assert_eq!((meta["fallback"]["reason"].as_str(), meta["model"].as_str()), (Some("protocol"), Some("claude")));
    // Both past the bound: 502, nothing charged.
    let charged_before = gw.settled(&key).await;
    primary.set_fault(Fault::Oversized { bytes: 640 * 1024 }, None);
    backup.set_fault(Fault::Oversized { bytes: 640 * 1024 }, None);
    for stream in [false, true] {
        let response = task(&gw, &key, &chat("gpt", stream)).await;
        assert_eq!(error_code(response).await, (502, "provider_error".to_owned()), "stream: {stream}");
    }
    assert_eq!(gw.settled(&key).await, charged_before);
    // Five answers and two failures, each with its record (the failures' for error rates, at no charge).
    let mut usage = gw.usage(&workspace).await;
    for _ in 0..200 {
        if usage.len() >= 7 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        usage = gw.usage(&workspace).await;
    }
    assert_eq!(usage.len(), 7, "{usage:?}");
    assert_eq!(usage.iter().filter(|(_, credits, status)| *credits == 0 && status == "error").count(), 2);
    gw.stop().await;
}

/// A stream's data frames, and whether it ended with `[DONE]`; the text its deltas carried.
async fn stream_of(response: reqwest::Response) -> (Vec<Value>, bool, String) {
    assert_eq!(response.status(), 200);
    let data = sse_data(&response.text().await.unwrap());
    let done = data.last().map(String::as_str) == Some("[DONE]");
    let frames: Vec<Value> = data.iter().filter_map(|d| serde_json::from_str(d).ok()).collect();
    let text = frames.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    (frames, done, text)
}

/// The one usage record of a request made after `before` records, waited for (bounded).
async fn record_after(gw: &Gateway, workspace: &str, before: usize) -> (i64, String) {
    for _ in 0..200 {
        let usage = gw.usage(workspace).await;
        if usage.len() > before {
            assert_eq!(usage.len(), before + 1, "{usage:?}");
            let (_, credits, status) = usage[before].clone();
            return (credits, status);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no usage record after {before}");
}

async fn pair(
    tweak: impl FnOnce(&mut switchyard::config::Config),
) -> (MockServer, MockServer, Gateway, String, String) {
    let primary = MockServer::start(MockConfig::default()).await.unwrap();
    let backup = MockServer::start(MockConfig::default()).await.unwrap();
    let gw = Gateway::with_catalogue(two_mock_env(&primary, &backup), CATALOGUE, tweak).await;
    let (workspace, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    (primary, backup, gw, workspace, key)
}

/// Row 2: a 429 whose `Retry-After` is longer than `pool.max_retry_after_secs` is not waited for: the fallback
/// answers at once, and only its answer is charged.
#[actix_web::test]
async fn a_429_asking_for_a_long_wait_goes_to_the_fallback_without_waiting() {
    let (primary, _backup, gw, _, key) = pair(|_| {}).await;
    for stream in [false, true] {
        primary.set_fault(Fault::Status { status: 429, retry_after: Some(30) }, Some(1));
        let calls = primary.calls();
        let started = std::time::Instant::now();
        let meta = metadata(task(&gw, &key, &chat("gpt", stream)).await, stream).await;
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "waited {:?}", started.elapsed());
        assert_eq!(primary.calls() - calls, 1, "not retried");
        assert_eq!(meta["fallback"]["reason"], "rate_limited", "{meta}");
        assert_eq!(meta["model"], "claude");
    }
    gw.stop().await;
}

/// Row 4: a 500 once is retried on the same model; the client sees one answer, two attempts, one charge.
#[actix_web::test]
async fn a_500_once_is_retried_and_charged_once() {
    let (primary, _backup, gw, workspace, key) = pair(|_| {}).await;
    for (i, stream) in [false, true].into_iter().enumerate() {
        primary.set_fault(Fault::Status { status: 500, retry_after: None }, Some(1));
        let meta = metadata(task(&gw, &key, &chat("gpt", stream)).await, stream).await;
        assert_eq!(meta["attempts"], 2, "{meta}");
        assert_eq!(meta["fallback"]["used"], false, "{meta}");
        let (credits, status) = record_after(&gw, &workspace, i).await;
        assert_eq!(status, "ok");
        assert!(credits > 0);
    }
    gw.stop().await;
}

/// Row 10: a stream that stalls part way past `between_chunks_timeout_ms` ends with one `provider_timeout` error
/// frame and no `[DONE]`, and is charged (status `cut`) for what was sent.
#[actix_web::test]
async fn a_stall_mid_stream_ends_with_a_timeout_frame_and_is_charged_for_what_was_sent() {
    let (primary, _backup, gw, workspace, key) = pair(|c| c.upstream.between_chunks_timeout_ms = 300).await;
    let pause = std::time::Duration::from_secs(3);
    primary.set_fault(Fault::StallAfter { after_tokens: 3, pause }, Some(1));
    let (balance, _) = gw.wallet(&key).await;
    let (frames, done, text) = stream_of(task(&gw, &key, &chat("gpt", true)).await).await;
    assert!(!done);
    assert_eq!(text.split_whitespace().count(), 3, "{text:?}");
    let last = frames.last().unwrap();
    assert_eq!(last["error"]["code"], "provider_timeout", "{last}");
    assert_eq!(frames.iter().filter(|f| f.get("error").is_some()).count(), 1);
    let (credits, status) = record_after(&gw, &workspace, 0).await;
    assert_eq!(status, "cut");
    assert!(credits > 0);
    assert_eq!(gw.settled(&key).await.0, balance - credits);
    gw.stop().await;
}

/// Rows 9 and 11, before the first byte: a malformed first chunk is a protocol error, not retried on the same
/// model, so the fallback answers; a stream cut before its first token is retried. Either way the client sees one
/// whole stream and nothing of the failure.
#[actix_web::test]
async fn a_stream_broken_before_its_first_token_is_retried_or_falls_back_unseen() {
    let (primary, _backup, gw, _, key) = pair(|_| {}).await;
    primary.set_fault(Fault::MalformedChunk { after_tokens: 0 }, Some(1));
    let meta = metadata(task(&gw, &key, &chat("gpt", true)).await, true).await;
    assert_eq!(meta["fallback"]["reason"], "protocol", "{meta}");
    assert_eq!(meta["model"], "claude");
    primary.set_fault(Fault::CutStream { after_tokens: 0 }, Some(1));
    let meta = metadata(task(&gw, &key, &chat("gpt", true)).await, true).await;
    assert_eq!(meta["attempts"], 2, "{meta}");
    assert_eq!(meta["fallback"]["used"], false, "{meta}");
    gw.stop().await;
}

/// Row 12: a stream whose body ends cleanly with no finishing chunk and no `[DONE]` (OpenAI) or no `message_stop`
/// (Anthropic) did not finish: the client gets every delta, then one `provider_error` frame, no `[DONE]`; `cut`.
#[actix_web::test]
async fn a_stream_that_ends_without_finishing_is_cut_not_passed_off_as_done() {
    let (primary, backup, gw, workspace, key) = pair(|_| {}).await;
    for (i, (mock, fallback)) in [(&primary, false), (&backup, true)].into_iter().enumerate() {
        mock.set_fault(Fault::NoFinish, Some(1));
        let mut body = chat("gpt", true);
        body["use_fallback_model"] = fallback.into();
        let (frames, done, text) = stream_of(task(&gw, &key, &body).await).await;
        assert!(!done, "fallback: {fallback}");
        assert!(!text.is_empty());
        assert_eq!(frames.last().unwrap()["error"]["code"], "provider_error", "{:?}", frames.last());
        let (_, status) = record_after(&gw, &workspace, i).await;
        assert_eq!(status, "cut");
    }
    gw.stop().await;
}

/// Row 13: the provider's own "prompt too long" (the gateway counts tokens from below, so it can happen) reaches
/// the client as 400 `context_length_exceeded`, the gateway's own code for it; nothing is charged.
#[actix_web::test]
async fn a_providers_context_length_error_is_400_context_length_exceeded_and_free() {
    let (primary, backup, gw, _, key) = pair(|_| {}).await;
    let (balance, _) = gw.wallet(&key).await;
    for (mock, fallback) in [(&primary, false), (&backup, true)] {
        for stream in [false, true] {
            mock.set_fault(Fault::ContextLength, Some(1));
            let mut body = chat("gpt", stream);
            body["use_fallback_model"] = fallback.into();
            let calls = (primary.calls(), backup.calls());
            let response = task(&gw, &key, &body).await;
            assert_eq!(response.status(), 400);
            // One call, no retry, no fallback: the request itself is at fault.
            assert_eq!(primary.calls() + backup.calls(), calls.0 + calls.1 + 1);
            let error: Value = response.json().await.unwrap();
            assert_eq!(error["error"]["code"], "context_length_exceeded", "{error}");
            assert_eq!(error["error"]["param"], "messages");
        }
    }
    assert_eq!(gw.settled(&key).await.0, balance);
    gw.stop().await;
}

/// Row 14: an answer the provider's content filter ended is an answer: `finish_reason: "content_filter"`, charged
/// for what was generated, whole or streamed, from OpenAI (`content_filter`) or Anthropic (`refusal`).
#[actix_web::test]
async fn a_content_filter_finish_is_reported_and_charged() {
    let (primary, backup, gw, workspace, key) = pair(|_| {}).await;
    let mut records = 0;
    for (mock, fallback) in [(&primary, false), (&backup, true)] {
        for stream in [false, true] {
            mock.set_fault(Fault::ContentFilter, Some(1));
            let mut body = chat("gpt", stream);
            body["use_fallback_model"] = fallback.into();
            let response = task(&gw, &key, &body).await;
            let reason = if stream {
                let (frames, done, _) = stream_of(response).await;
                assert!(done);
                frames.iter().find_map(|f| f["choices"][0]["finish_reason"].as_str().map(str::to_owned)).unwrap()
            } else {
                let body: Value = response.json().await.unwrap();
                body["choices"][0]["finish_reason"].as_str().unwrap().to_owned()
            };
            assert_eq!(reason, "content_filter", "fallback: {fallback}, stream: {stream}");
            let (credits, status) = record_after(&gw, &workspace, records).await;
            records += 1;
            assert_eq!(status, "ok");
            assert!(credits > 0);
        }
    }
    gw.stop().await;
}

/// Row 15: a provider that fails every other request: each request is retried once and answered (two attempts),
/// charged once; the circuit stays closed, since every failure is followed by a success.
#[actix_web::test]
async fn a_flapping_provider_costs_a_retry_per_request_and_keeps_its_circuit_closed() {
    let (primary, backup, gw, workspace, key) = pair(|_| {}).await;
    primary.set_fault(Fault::Flap, None);
    for i in 0..6 {
        let stream = i % 2 == 1;
        let meta = metadata(task(&gw, &key, &chat("gpt", stream)).await, stream).await;
        assert_eq!(meta["attempts"], 2, "{meta}");
        assert_eq!(meta["fallback"]["used"], false, "{meta}");
    }
    assert_eq!(primary.calls(), 12);
    assert_eq!(backup.calls(), 0);
    assert_eq!(gw.state.engine().pool.circuits("openai"), vec![0]);
    let usage = gw.usage(&workspace).await;
    assert!(usage.iter().all(|(_, credits, status)| *credits > 0 && status == "ok"), "{usage:?}");
    gw.stop().await;
}

/// Row 10, whole answers: a body that stalls after its head is bounded by `between_chunks_timeout_ms` like a
/// stream, not left to the total bound: 504 `provider_timeout` (here with nothing to fall back to), free.
#[actix_web::test]
async fn a_whole_answer_stalling_after_its_head_times_out_at_the_gap_bound() {
    let (primary, _backup, gw, workspace, key) = pair(|c| {
        c.upstream.between_chunks_timeout_ms = 300;
        c.pool.max_retries = 0;
    })
    .await;
    let pause = std::time::Duration::from_secs(30);
    primary.set_fault(Fault::StallAfter { after_tokens: 0, pause }, None);
    let started = std::time::Instant::now();
    let response = task(&gw, &key, &chat("lonely", false)).await;
    assert_eq!(error_code(response).await, (504, "provider_timeout".to_owned()));
    assert!(started.elapsed() < pause / 2, "waited {:?}", started.elapsed());
    let (credits, status) = record_after(&gw, &workspace, 0).await;
    assert_eq!((credits, status.as_str()), (0, "error"));
    gw.stop().await;
}

/// The request's budget (`upstream.total_timeout_ms`) spans every attempt, wait and fallback: an upstream that
/// never answers costs the client the budget once, not once per attempt of every model of the chain.
#[actix_web::test]
async fn retries_and_fallbacks_share_one_time_budget() {
    let (primary, backup, gw, _, key) = pair(|c| {
        c.upstream.first_byte_timeout_ms = 400;
        c.upstream.total_timeout_ms = 700;
    })
    .await;
    let stall = Fault::Stall(std::time::Duration::from_secs(30));
    primary.set_fault(stall.clone(), None);
    backup.set_fault(stall, None);
    for stream in [false, true] {
        let started = std::time::Instant::now();
        let response = task(&gw, &key, &chat("gpt", stream)).await;
        assert_eq!(error_code(response).await, (504, "provider_timeout".to_owned()), "stream: {stream}");
        // Three attempts on the primary and three on the fallback would take 2.4 s at 400 ms each.
        assert!(started.elapsed() < std::time::Duration::from_millis(2000), "took {:?}", started.elapsed());
    }
    gw.stop().await;
}

/// A retry wait that would outlast the request's budget is not waited: the next model of the chain answers.
#[actix_web::test]
async fn a_retry_wait_past_the_budget_goes_to_the_fallback_instead() {
    let (primary, _backup, gw, _, key) = pair(|c| {
        c.upstream.total_timeout_ms = 2_000;
        c.pool.max_retry_after_secs = 10;
    })
    .await;
    primary.set_fault(Fault::Status { status: 429, retry_after: Some(3) }, Some(1));
    let started = std::time::Instant::now();
    let meta = metadata(task(&gw, &key, &chat("gpt", false)).await, false).await;
    assert_eq!(meta["fallback"]["reason"], "rate_limited", "{meta}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "waited {:?}", started.elapsed());
    gw.stop().await;
}
