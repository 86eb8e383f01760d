//! The fault catalogue (README, "Faults"): one test per way a provider fails, checking what the client sees, what
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
    // Both past the bound: 502, nothing charged.
    let charged_before = gw.settled(&key).await;
    primary.set_fault(Fault::Oversized { bytes: 640 * 1024 }, None);
    backup.set_fault(Fault::Oversized { bytes: 640 * 1024 }, None);
    for stream in [false, true] {
        let response = task(&gw, &key, &chat("gpt", stream)).await;
        assert_eq!(error_code(response).await, (502, "provider_error".to_owned()), "stream: {stream}");
    }
    assert_eq!(gw.settled(&key).await, charged_before);
    // Four answers and two failures, each with its record (the failures' for error rates, at no charge).
    let mut usage = gw.usage(&workspace).await;
    for _ in 0..200 {
        if usage.len() >= 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        usage = gw.usage(&workspace).await;
    }
    assert_eq!(usage.len(), 6, "{usage:?}");
    assert_eq!(usage.iter().filter(|(_, credits, status)| *credits == 0 && status == "error").count(), 2);
    gw.stop().await;
}
