//! Every route's bad paths, each answered with its API.md error and never a panic; plus the OpenAI face, the
//! admin API, the OpenAPI document and the metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::mock::{MockConfig, MockServer};
use common::{error_code, sse_data, Gateway, ADMIN_KEY};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashMap;

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

async fn sim_gateway() -> Gateway {
    Gateway::start(HashMap::from([("SWITCHYARD_ADMIN_KEY".to_owned(), ADMIN_KEY.to_owned())]), |_| {}).await
}

async fn task_error(gw: &Gateway, body: &str) -> (u16, String, Value) {
    let response =
        gw.post("/api/v1/task").header("content-type", "application/json").body(body.to_owned()).send().await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body["error"]["code"].as_str().unwrap_or("").to_owned(), body)
}

#[actix_web::test]
async fn bad_bodies_get_400_with_the_field_named() {
    let gw = sim_gateway().await;
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("{", "invalid_json", None),
        ("", "invalid_json", None),
        ("[1,2]", "invalid_json", None),
        (r#"{"messages": [{"role":"user","content":"x"}]}"#, "missing_field", Some("model")),
        (r#"{"model": 5, "messages": []}"#, "invalid_field", Some("model")),
        (r#"{"model": "sim-chat"}"#, "missing_field", Some("messages")),
        (r#"{"model": "sim-chat", "messages": []}"#, "invalid_field", Some("messages")),
        (r#"{"model": "sim-chat", "messages": "hi"}"#, "invalid_field", Some("messages")),
        (
            r#"{"model": "sim-chat", "messages": [{"role":"user","content":"x"}], "max_tokens": "ten"}"#,
            "invalid_field",
            Some("max_tokens"),
        ),
        (
            r#"{"model": "sim-chat", "messages": [{"role":"user","content":"x"}], "max_tokens": -1}"#,
            "invalid_field",
            Some("max_tokens"),
        ),
        (
            r#"{"model": "sim-chat", "messages": [{"role":"user","content":"x"}], "max_tokens": 0}"#,
            "invalid_field",
            Some("max_tokens"),
        ),
        (
            r#"{"model": "sim-chat", "messages": [{"role":"user","content":"x"}], "max_tokens": 999999}"#,
            "invalid_field",
            Some("max_tokens"),
        ),
        (
            r#"{"model": "sim-chat", "messages": [{"role":"user","content":"x"}], "temperature": 3}"#,
            "invalid_field",
            Some("temperature"),
        ),
        (
            r#"{"model": "sim-chat", "messages": [{"role":"user","content":"x"}], "top_p": -0.1}"#,
            "invalid_field",
            Some("top_p"),
        ),
        (
            r#"{"model": "sim-chat", "messages": [{"role":"user","content":"x"}], "stream": "yes"}"#,
            "invalid_field",
            Some("stream"),
        ),
        (
            r#"{"model": "sim-chat", "messages": [{"role":"user","content":"x"}], "stop": ["a","b","c","d","e"]}"#,
            "invalid_field",
            Some("stop"),
        ),
        (
            r#"{"model": "sim-chat", "messages": [{"role":"tool","content":"x"}]}"#,
            "invalid_field",
            Some("messages[0].role"),
        ),
        (r#"{"model": "sim-chat", "messages": [{"role":"system","content":"x"}]}"#, "invalid_field", Some("messages")),
        (r#"{"model": "sim-chat", "messages": [{"content":"x"}]}"#, "missing_field", Some("messages[0].role")),
        (
            r#"{"model": "sim-chat", "messages": [{"role":"user","content":[{"type":"image_url"}]}]}"#,
            "invalid_field",
            Some("messages[0].content"),
        ),
        (
            r#"{"model": "sim-chat", "messages": [{"role":"user","content":"x"}], "colour": 1}"#,
            "unknown_field",
            Some("colour"),
        ),
    ];
    for (body, code, param) in cases {
        let (status, got, envelope) = task_error(&gw, body).await;
        assert_eq!((status, got.as_str()), (400, *code), "{body} -> {envelope}");
        assert_eq!(envelope["error"]["type"], "invalid_request_error");
        if let Some(param) = param {
            assert_eq!(envelope["error"]["param"], *param, "{body} -> {envelope}");
        }
    }
    gw.stop().await;
}

#[actix_web::test]
async fn unknown_model_uses_the_seed_wording() {
    let gw = sim_gateway().await;
    let (status, code, body) = task_error(&gw, &hello("invalid-model").to_string()).await;
    assert_eq!((status, code.as_str()), (400, "unsupported_model"));
    assert_eq!(body["error"]["message"], "Unsupported task type: invalid-model");
    gw.stop().await;
}

#[actix_web::test]
async fn input_params_is_refused_with_a_pointer_to_task_input() {
    let gw = sim_gateway().await;
    let (status, code, body) = task_error(&gw, r#"{"model":"sim-chat","input_params":{}}"#).await;
    assert_eq!((status, code.as_str()), (400, "invalid_field"));
    assert!(body["error"]["message"].as_str().unwrap().contains("task_input"));
    gw.stop().await;
}

#[actix_web::test]
async fn oversize_bodies_get_413_and_wrong_types_415() {
    let gw = Gateway::start(HashMap::new(), |c| c.server.max_body_bytes = 1024).await;
    let big = json!({"model": "sim-chat", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let response = gw.post("/api/v1/task").json(&big).send().await.unwrap();
    assert_eq!(error_code(response).await, (413, "payload_too_large".to_owned()));
    // Without a Content-Length: a chunked body that grows past the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..8).map(|_| Ok(vec![b' '; 512])).collect();
    let response = gw
        .post("/api/v1/task")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (413, "payload_too_large".to_owned()));
    let response = gw.post("/api/v1/task").header("content-type", "text/plain").body("{}").send().await.unwrap();
    assert_eq!(error_code(response).await, (415, "unsupported_media_type".to_owned()));
    gw.stop().await;
}

#[actix_web::test]
async fn keys_missing_wrong_and_revoked_get_401() {
    let gw = sim_gateway().await;
    let url = format!("{}/api/v1/task", gw.url);
    let response = gw.client.post(&url).json(&hello("sim-chat")).send().await.unwrap();
    assert_eq!(error_code(response).await, (401, "missing_api_key".to_owned()));
    let response = gw.client.post(&url).bearer_auth("sy_live_nope").json(&hello("sim-chat")).send().await.unwrap();
    assert_eq!(error_code(response).await, (401, "invalid_api_key".to_owned()));
    let response =
        gw.client.post(&url).header("authorization", "Basic abc").json(&hello("sim-chat")).send().await.unwrap();
    assert_eq!(error_code(response).await, (401, "missing_api_key".to_owned()));
    // X-API-Key works as well as Bearer.
    let response = gw.client.post(&url).header("x-api-key", &gw.key).json(&hello("sim-chat")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // Two keys in one request (two Authorization or two X-API-Key headers): neither is used, even a valid one.
    for name in ["authorization", "x-api-key"] {
        let value = if name == "authorization" { format!("Bearer {}", gw.key) } else { gw.key.clone() };
        let response = gw
            .client
            .post(&url)
            .header(name, &value)
            .header(name, &value)
            .json(&hello("sim-chat"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_api_key", "{name}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("More than one API key"), "{body}");
    }
    // A key created by the admin API works until it is revoked.
    let workspace_id = gw.state.keys.resolve(&gw.key).unwrap().workspace_id;
    let created: Value = gw
        .admin(Method::POST, &format!("/admin/workspaces/{workspace_id}/keys"))
        .json(&json!({"name": "ci"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with("sy_live_"));
    let response = gw.client.post(&url).bearer_auth(key).json(&hello("sim-chat")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let revoked =
        gw.admin(Method::DELETE, &format!("/admin/keys/{}", created["id"].as_str().unwrap())).send().await.unwrap();
    assert_eq!(revoked.status(), 200);
    let response = gw.client.post(&url).bearer_auth(key).json(&hello("sim-chat")).send().await.unwrap();
    assert_eq!(error_code(response).await, (401, "invalid_api_key".to_owned()));
    gw.stop().await;
}

#[actix_web::test]
async fn a_model_without_its_provider_key_is_unavailable_and_says_what_to_set() {
    let gw = sim_gateway().await;
    for (model, variable) in
        [("gpt-4", "OPENAI_API_KEY"), ("claude-3-opus", "ANTHROPIC_API_KEY"), ("mixtral-8x22b", "MISTRAL_API_KEY")]
    {
        let response = gw.post("/api/v1/task").json(&hello(model)).send().await.unwrap();
        assert_eq!(response.status(), 503);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "provider_unavailable");
        assert!(body["error"]["message"].as_str().unwrap().contains(variable), "{body}");
    }
    let models: Value = gw.get("/v1/models").send().await.unwrap().json().await.unwrap();
    let entry = |id: &str| models["data"].as_array().unwrap().iter().find(|m| m["id"] == id).unwrap().clone();
    assert_eq!(entry("gpt-4")["available"], false);
    assert!(entry("gpt-4")["unavailable_reason"].as_str().unwrap().contains("OPENAI_API_KEY"));
    assert_eq!(entry("sim-chat")["available"], true);
    assert_eq!(entry("sim-chat")["simulator"], true);
    assert_eq!(entry("gpt-4")["simulator"], false);
    assert_eq!(entry("eleven-labs-tts")["available"], false);
    assert!(entry("eleven-labs-tts")["unavailable_reason"].as_str().unwrap().contains("ELEVENLABS_API_KEY"));
    let speech = gw
        .post("/api/v1/task")
        .json(&serde_json::json!({"model": "eleven-labs-tts", "text": "Hello", "voice": "adam"}))
        .send()
        .await
        .unwrap();
    let (status, code) = error_code(speech).await;
    assert_eq!((status, code.as_str()), (503, "provider_unavailable"));
    // Embeddings are off in this gateway: the embedding model is listed, unavailable, with the way to fix it.
    assert_eq!(entry("all-minilm-l6-v2")["available"], false);
    assert!(entry("all-minilm-l6-v2")["unavailable_reason"].as_str().unwrap().contains("make models"));
    assert_eq!(models["data"].as_array().unwrap().len(), 20);
    gw.stop().await;
}

#[actix_web::test]
async fn unknown_routes_are_404_and_wrong_methods_405_in_the_envelope() {
    let gw = sim_gateway().await;
    let response = gw.get("/api/v1/nothing").send().await.unwrap();
    assert_eq!(error_code(response).await, (404, "not_found".to_owned()));
    let response = gw.get("/api/v1/task").send().await.unwrap();
    assert_eq!(error_code(response).await.0, 405);
    gw.stop().await;
}

#[actix_web::test]
async fn openai_face_speaks_chat_completion_objects() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let gw = Gateway::with_mock(&mock).await;
    let body = json!({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "user": "someone", "presence_penalty": 0});
    let whole: Value = gw.post("/v1/chat/completions").json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(whole["object"], "chat.completion");
    assert!(whole["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(mock.last_request().unwrap().body["messages"][0]["content"], "hi");
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let text = gw.post("/v1/chat/completions").json(&streamed).send().await.unwrap().text().await.unwrap();
    let data = sse_data(&text);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], whole["usage"]["total_tokens"]);
    let finish: Value = serde_json::from_str(&data[data.len() - 3]).unwrap();
    assert_eq!(finish["object"], "chat.completion.chunk");
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let mut two = body.clone();
    two["n"] = json!(2);
    let response = gw.post("/v1/chat/completions").json(&two).send().await.unwrap();
    assert_eq!(error_code(response).await, (400, "invalid_field".to_owned()));
    gw.stop().await;
}

#[actix_web::test]
async fn admin_api_manages_workspaces_keys_and_credits() {
    let gw = sim_gateway().await;
    let created = gw
        .admin(Method::POST, "/admin/workspaces")
        .json(&json!({"name": "acme", "credits": 12.5,
            "plan": {"requests_per_minute": 60, "concurrent_requests": 2, "tokens_per_minute": 1000}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["credits"], json!(12.5));
    assert_eq!(created["plan"]["concurrent_requests"], 2);
    let topped: Value = gw
        .admin(Method::POST, &format!("/admin/workspaces/{id}/credits"))
        .json(&json!({"credits": "0.125"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(topped["credits"], json!(12.625));
    let key: Value = gw
        .admin(Method::POST, &format!("/admin/workspaces/{id}/keys"))
        .json(&json!({"name": "server"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fetched: Value =
        gw.admin(Method::GET, &format!("/admin/workspaces/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(fetched["credits"], json!(12.625));
    assert_eq!(fetched["keys"][0]["id"], key["id"]);
    assert!(fetched["keys"][0].get("key").is_none(), "the key is shown only once");
    assert!(!fetched.to_string().contains(key["key"].as_str().unwrap()));
    let principal = gw.state.keys.resolve(key["key"].as_str().unwrap()).unwrap();
    assert_eq!(principal.workspace_id, id);
    assert_eq!(principal.plan.concurrent_requests, 2);
    gw.stop().await;
}

#[actix_web::test]
async fn admin_api_refuses_bad_input_and_unknown_ids() {
    let gw = sim_gateway().await;
    let cases = [
        (json!({"name": ""}), "invalid_field"),
        (json!({"name": "a", "credits": -1}), "invalid_field"),
        (json!({"name": "a", "credits": 0.0001}), "invalid_field"),
        (
            json!({"name": "a", "plan": {"requests_per_minute": 0, "concurrent_requests": 1, "tokens_per_minute": 1}}),
            "invalid_field",
        ),
        (json!({"name": "a", "plan": {"requests_per_minute": 1}}), "missing_field"),
        (json!({"name": "a", "owner": "x"}), "unknown_field"),
        (json!({"credits": 1}), "missing_field"),
    ];
    for (body, code) in cases {
        let response = gw.admin(Method::POST, "/admin/workspaces").json(&body).send().await.unwrap();
        assert_eq!(error_code(response).await, (400, code.to_owned()), "{body}");
    }
    let response = gw.admin(Method::GET, "/admin/workspaces/ws_nope").send().await.unwrap();
    assert_eq!(error_code(response).await, (404, "not_found".to_owned()));
    let response =
        gw.admin(Method::POST, "/admin/workspaces/ws_nope/keys").json(&json!({"name": "k"})).send().await.unwrap();
    assert_eq!(error_code(response).await, (404, "not_found".to_owned()));
    let response =
        gw.admin(Method::POST, "/admin/workspaces/ws_nope/credits").json(&json!({"credits": 1})).send().await.unwrap();
    assert_eq!(error_code(response).await, (404, "not_found".to_owned()));
    let response = gw.admin(Method::DELETE, "/admin/keys/key_nope").send().await.unwrap();
    assert_eq!(error_code(response).await, (404, "not_found".to_owned()));
    let workspace = gw.state.keys.resolve(&gw.key).unwrap().workspace_id;
    let response = gw
        .admin(Method::POST, &format!("/admin/workspaces/{workspace}/credits"))
        .json(&json!({"credits": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (400, "invalid_field".to_owned()));
    gw.stop().await;
}

#[actix_web::test]
async fn admin_api_takes_only_the_admin_key() {
    let gw = sim_gateway().await;
    let url = format!("{}/admin/workspaces", gw.url);
    let response = gw.client.post(&url).json(&json!({"name": "x"})).send().await.unwrap();
    assert_eq!(error_code(response).await, (401, "missing_api_key".to_owned()));
    let response = gw.client.post(&url).bearer_auth("wrong").json(&json!({"name": "x"})).send().await.unwrap();
    assert_eq!(error_code(response).await, (401, "invalid_api_key".to_owned()));
    let response = gw.client.post(&url).bearer_auth(&gw.key).json(&json!({"name": "x"})).send().await.unwrap();
    assert_eq!(error_code(response).await, (403, "admin_only".to_owned()));
    gw.stop().await;
    // Without SWITCHYARD_ADMIN_KEY the admin API does not exist.
    let off = Gateway::start(HashMap::new(), |_| {}).await;
    let response = off
        .client
        .post(format!("{}/admin/workspaces", off.url))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (404, "not_found".to_owned()));
    off.stop().await;
}

#[actix_web::test]
async fn openapi_document_covers_every_route() {
    let gw = sim_gateway().await;
    let doc: Value = gw.client.get(format!("{}/openapi.json", gw.url)).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for (path, method) in [
        ("/api/v1/task", "post"),
        ("/v1/chat/completions", "post"),
        ("/v1/models", "get"),
        ("/v1/images/generations", "post"),
        ("/api/billing/wallet", "get"),
        ("/api/billing/usage/summary", "get"),
        ("/api/media/upload/init", "post"),
        ("/api/media/upload/{upload_id}", "put"),
        ("/api/media/upload/complete", "post"),
        ("/api/media/{media_ref}", "get"),
        ("/admin/workspaces", "post"),
        ("/admin/workspaces/{id}", "get"),
        ("/admin/workspaces/{id}/keys", "post"),
        ("/admin/workspaces/{id}/credits", "post"),
        ("/admin/keys/{id}", "delete"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/v1/realtime", "get"),
        ("/v1/realtime/client_secrets", "post"),
        ("/v1/text-to-speech/{voice_id}/stream-input", "get"),
        ("/v1/speech-to-text/realtime", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} missing from the OpenAPI document");
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    let task_errors = &doc["paths"]["/api/v1/task"]["post"]["responses"];
    for status in ["400", "401", "402", "409", "413", "429", "502", "503", "504"] {
        assert!(task_errors[status].is_object(), "/api/v1/task lacks {status}");
    }
    // Shared rows carry the error codes; a row of the handler's own wins over the shared one.
    let refs = |v: &Value| v["content"]["application/json"]["schema"]["$ref"].as_str().map(str::to_owned);
    assert_eq!(refs(&task_errors["402"]).as_deref(), Some("#/components/schemas/ErrorBody"));
    assert!(task_errors["400"]["description"].as_str().unwrap().contains("unsupported_model"));
    let admin = &doc["paths"]["/admin/workspaces"]["post"]["responses"];
    assert!(admin["403"]["description"].as_str().unwrap().contains("admin_only"));
    let run_params = doc["paths"]["/api/runs"]["post"]["parameters"].as_array().unwrap();
    assert!(run_params.iter().any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"), "{run_params:?}");
    gw.stop().await;
}

#[actix_web::test]
async fn health_readiness_and_metrics() {
    let gw = sim_gateway().await;
    assert_eq!(gw.client.get(format!("{}/healthz", gw.url)).send().await.unwrap().status(), 200);
    assert_eq!(gw.client.get(format!("{}/readyz", gw.url)).send().await.unwrap().status(), 200);
    let _ = gw.post("/api/v1/task").json(&hello("sim-chat")).send().await.unwrap().text().await.unwrap();
    let mut streamed = hello("sim-chat");
    streamed["stream"] = json!(true);
    let _ = gw.post("/api/v1/task").json(&streamed).send().await.unwrap().text().await.unwrap();
    let refused = gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth("sk-nobody").json(&hello("sim-chat"));
    assert_eq!(refused.send().await.unwrap().status(), 401);
    let text = gw.client.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    let workspace = gw.state.keys.resolve(&gw.key).unwrap().workspace_id;
    for needle in [
        r#"switchyard_http_requests_total{method="POST",route="/api/v1/task",status="200"} 2"#,
        r#"switchyard_api_errors_total{code="invalid_api_key",workspace="_none"} 1"#,
        &format!(r#"switchyard_calls_total{{model="sim-chat",status="ok",workspace="{workspace}"}} 2"#),
        &format!(
            r#"switchyard_credits_charged_total{{model="sim-chat",reporting_group="",revision="",task="",workspace="{workspace}"}}"#
        ),
        &format!(r#"switchyard_credits_reserved_total{{model="sim-chat",workspace="{workspace}"}}"#),
        &format!(r#"switchyard_credits_refunded_total{{model="sim-chat",workspace="{workspace}"}}"#),
        &format!(r#"switchyard_wallet_balance_credits{{workspace="{workspace}"}}"#),
        &format!(r#"switchyard_wallet_reserved_credits{{workspace="{workspace}"}} 0"#),
        "switchyard_usage_journal_pending_records ",
        "switchyard_media_store_bytes 0",
        "switchyard_media_objects 0",
        &format!(r#"switchyard_build_info{{gateway="{}",version=""#, gw.state.instance),
        "\nprocess_cpu_seconds_total ",
        "\nprocess_resident_memory_bytes ",
        "\nprocess_open_fds ",
        "\nprocess_max_fds ",
        "switchyard_gateway_overhead_seconds_bucket",
        "switchyard_upstream_duration_seconds_bucket",
        "switchyard_time_to_first_token_seconds_bucket{model=\"sim-chat\"",
        "switchyard_tokens_total{direction=\"completion\",model=\"sim-chat\"} 48",
        "switchyard_streams_in_flight 0",
        "switchyard_http_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    if let Ok(status) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
    {
        let lint = String::from_utf8_lossy(&status.stderr);
        assert!(status.status.success(), "promtool check metrics failed:\n{lint}");
    }
    gw.stop().await;
}

#[actix_web::test]
async fn bad_routing_options_and_idempotency_keys_get_400() {
    let gw = sim_gateway().await;
    let long_group = "g".repeat(129);
    let mut body = hello("sim-chat");
    body["reporting_group"] = json!(long_group);
    let response = gw.post("/api/v1/task").json(&body).send().await.unwrap();
    assert_eq!(error_code(response).await, (400, "invalid_field".to_owned()));
    let response = gw.post("/api/v1/task?use_fallback_model=maybe").json(&hello("sim-chat")).send().await.unwrap();
    assert_eq!(error_code(response).await, (400, "invalid_field".to_owned()));
    let mut body = hello("sim-chat");
    body["use_fallback_model"] = json!("yes");
    let response = gw.post("/api/v1/task").json(&body).send().await.unwrap();
    assert_eq!(error_code(response).await, (400, "invalid_field".to_owned()));
    // sim-chat has no fallback model to go to.
    let response = gw.post("/api/v1/task?use_fallback_model=true").json(&hello("sim-chat")).send().await.unwrap();
    assert_eq!(error_code(response).await, (400, "invalid_field".to_owned()));
    let response = gw
        .post("/api/v1/task")
        .header("idempotency-key", "k".repeat(300))
        .json(&hello("sim-chat"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (400, "invalid_field".to_owned()));
    gw.stop().await;
}
