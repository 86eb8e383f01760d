//! Billed calls a load test makes against a real gateway, and what each client was told of its charge.

use serde_json::{json, Value};

/// What a client was told: the id of a billed response and its charge (millicredits), or an upload completed.
#[derive(Debug)]
pub enum Told {
    Charged(String, i64),
    Uploaded(String, usize),
    /// A realtime response whose `response.done` reached the client (its record is written before it is sent on).
    Spoke,
    Nothing,
}

pub fn milli(v: &Value) -> Option<i64> {
    v.as_f64().map(|c| (c * 1000.0).round() as i64)
}

pub async fn whole(client: &reqwest::Client, url: &str, key: &str, n: usize) -> Told {
    let body = json!({"model": "sim-chat", "messages": [{"role": "user", "content": format!("whole {n}")}],
        "max_tokens": 4});
    let Ok(response) = client.post(format!("{url}/api/v1/task")).bearer_auth(key).json(&body).send().await else {
        return Told::Nothing;
    };
    let Ok(body) = response.json::<Value>().await else { return Told::Nothing };
    match (body["id"].as_str(), milli(&body["metadata"]["credits_charged"])) {
        (Some(id), Some(credits)) => Told::Charged(id.to_owned(), credits),
        _ => Told::Nothing,
    }
}

/// A stream counts as told only once it ended with `[DONE]` after its metadata chunk.
pub async fn stream(client: &reqwest::Client, url: &str, key: &str, n: usize) -> Told {
    let body = json!({"model": "sim-chat", "messages": [{"role": "user", "content": format!("stream {n}")}],
        "max_tokens": 6, "stream": true});
    let Ok(response) = client.post(format!("{url}/api/v1/task")).bearer_auth(key).json(&body).send().await else {
        return Told::Nothing;
    };
    let Ok(text) = response.text().await else { return Told::Nothing };
    let data = super::sse_data(&text);
    if data.last().map(String::as_str) != Some("[DONE]") || data.len() < 2 {
        return Told::Nothing;
    }
    let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap_or_default();
    match (last["id"].as_str(), milli(&last["metadata"]["credits_charged"])) {
        (Some(id), Some(credits)) => Told::Charged(id.to_owned(), credits),
        _ => Told::Nothing,
    }
}
