//! Images through `/api/v1/task` with Black Forest Labs' Flux, against the BFL mock: submit, poll, fetch, store,
//! charge per image; the limits of each model; failures, moderation and fallback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "mock/media.rs"]
mod media_mock;

use base64::Engine as _;
use common::{error_code, Gateway, ADMIN_KEY};
use media_mock::{MediaFault, MediaMock};
use serde_json::{json, Value};
use std::collections::HashMap;

async fn setup() -> (MediaMock, Gateway) {
    setup_with(|_| {}).await
}

async fn setup_with(tweak: impl FnOnce(&mut switchyard::config::Config)) -> (MediaMock, Gateway) {
    let mock = MediaMock::start().await.unwrap();
    mock.set_pending_polls(2);
    let env = HashMap::from([
        ("SWITCHYARD_ADMIN_KEY".to_owned(), ADMIN_KEY.to_owned()),
        ("BFL_BASE_URL".to_owned(), mock.url()),
        ("BFL_API_KEY".to_owned(), "bfl-test".to_owned()),
    ]);
    let gw = Gateway::start(env, |c| {
        c.upstream.poll_interval_ms = 5;
        tweak(c);
    })
    .await;
    (mock, gw)
}

fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

#[actix_web::test]
async fn flux_makes_an_image_of_the_requested_size_stored_and_charged_per_image() {
    let (mock, gw) = setup().await;
    let (workspace, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    let body = json!({"model": "flux-1-pro", "prompt": "A futuristic city at night with neon lights",
        "width": 512, "height": 384, "seed": 42});
    let response =
        gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "image.generation");
    assert!(answer["id"].as_str().unwrap().starts_with("img_"));
    assert_eq!(answer["model"], "flux-1-pro");
    let b64 = answer["data"][0]["b64_json"].as_str().unwrap();
    let image = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    assert_eq!(png_size(&image), (512, 384));
    let usage = &answer["usage"];
    assert_eq!((usage["images"].as_u64(), usage["pixels"].as_u64()), (Some(1), Some(512 * 384)));
    assert_eq!(usage["output_bytes"].as_u64(), Some(image.len() as u64));
    assert!(usage["processing_ms"].is_u64(), "{usage}");
    let sent = mock.last_request().unwrap();
    assert!(sent.path.starts_with("/samples/") || sent.path.contains("get_result"), "{}", sent.path);
    assert_eq!(mock.calls("/v1/flux-pro-1.1"), 1);
    let url = answer["data"][0]["url"].as_str().unwrap();
    let fetched = gw.client.get(url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(fetched.headers()["content-type"], "image/png");
    assert_eq!(fetched.bytes().await.unwrap().to_vec(), image);
    assert_eq!(answer["metadata"]["credits_charged"].as_f64(), Some(40.0));
    assert_eq!(gw.wallet(&key).await, (60_000, 0));
    assert_eq!(gw.usage(&workspace).await.len(), 1);
    gw.stop().await;
}

#[actix_web::test]
async fn each_models_limits_are_checked_before_anything_is_charged() {
    let (mock, gw) = setup().await;
    let cases = [
        json!({"model": "flux-1-pro", "prompt": "x", "width": 0}),
        json!({"model": "flux-1-pro", "prompt": "x", "height": 9000}),
        json!({"model": "flux-1-pro", "prompt": "x", "num_inference_steps": 0}),
        json!({"model": "flux-1-dev", "prompt": "x", "num_inference_steps": 151}),
        json!({"model": "flux-1-dev", "prompt": "x", "guidance_scale": -1}),
        json!({"model": "flux-1-dev", "prompt": "x", "guidance_scale": 31}),
        json!({"model": "flux-1-pro", "prompt": "x", "output_format": "gif"}),
        json!({"model": "flux-1-pro", "prompt": "   "}),
    ];
    for body in cases {
        let response = gw.post("/api/v1/task").json(&body).send().await.unwrap();
        assert_eq!(error_code(response).await, (400, "invalid_field".to_owned()), "{body}");
    }
    let response = gw.post("/api/v1/task").json(&json!({"model": "flux-1-pro"})).send().await.unwrap();
    assert_eq!(error_code(response).await, (400, "missing_field".to_owned()));
    let response = gw
        .post("/api/v1/task")
        .json(&json!({"model": "flux-1-pro", "prompt": "x", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (400, "unknown_field".to_owned()));
    for body in [
        json!({"model": "flux-1-pro", "prompt": "x", "width": "wide"}),
        json!({"model": "flux-1-pro", "prompt": "x", "num_inference_steps": 2.5}),
        json!({"model": "flux-1-pro", "prompt": {"text": "x"}}),
        json!({"model": "flux-1-pro", "prompt": "x", "seed": -1}),
    ] {
        let response = gw.post("/api/v1/task").json(&body).send().await.unwrap();
        let (status, code) = error_code(response).await;
        assert_eq!(status, 400, "{body}: {code}");
    }
    assert_eq!(mock.calls("/v1/"), 0);
    gw.stop().await;
}

/// 001's Flux example, byte for byte: FLUX1.1 [pro] takes no steps or guidance, so the request goes to FLUX.1 [pro]
/// which does, guidance 7.5 is brought to its most (5), and the answer says both.
#[actix_web::test]
async fn documented_parameters_are_fitted_to_the_model_with_warnings_never_refused() {
    let (mock, gw) = setup().await;
    let (workspace, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    let body = r#"{
"model": "flux-1-pro",
"prompt": "A beautiful sunset over a mountain lake, photorealistic",
"width": 1024,
"height": 1024,
"num_inference_steps": 50,
"guidance_scale": 7.5,
"seed": 42
}"#;
    let send = |body: String| {
        gw.client
            .post(format!("{}/api/v1/task", gw.url))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let response = send(body.to_owned()).await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!((answer["object"].as_str(), answer["model"].as_str()), (Some("image.generation"), Some("flux-1-pro")));
    let warnings = answer["warnings"].as_array().unwrap();
    let by_param = |p: &str| warnings.iter().find(|w| w["param"] == p).unwrap_or_else(|| panic!("{answer}"));
    assert_eq!(
        (by_param("upstream_model")["asked"].as_str(), by_param("upstream_model")["used"].as_str()),
        (Some("flux-pro-1.1"), Some("flux-pro"))
    );
    assert_eq!(
        (by_param("guidance_scale")["asked"].as_f64(), by_param("guidance_scale")["used"].as_f64()),
        (Some(7.5), Some(5.0))
    );
    assert_eq!(warnings.len(), 2, "{answer}");
    assert_eq!(mock.calls("/v1/flux-pro-1.1"), 0);
    assert_eq!(mock.calls("/v1/flux-pro"), 1);
    let image =
        base64::engine::general_purpose::STANDARD.decode(answer["data"][0]["b64_json"].as_str().unwrap()).unwrap();
    assert_eq!(png_size(&image), (1024, 1024));
    assert_eq!(answer["usage"]["pixels"].as_u64(), Some(1024 * 1024));

    // Without steps or guidance, FLUX1.1 [pro] itself, and no warnings.
    let plain = r#"{"model": "flux-1-pro", "prompt": "A futuristic city at night with neon lights", "width": 1024, "height": 1024}"#;
    let answer: Value = send(plain.to_owned()).await.unwrap().json().await.unwrap();
    assert!(answer.get("warnings").is_none(), "{answer}");
    assert_eq!(mock.calls("/v1/flux-pro-1.1"), 1);

    // Sizes off the grid or out of the range land on the nearest size the model makes; schnell's steps are capped and
    // its guidance (which it does not take) is not sent.
    let odd = r#"{"model": "flux-1-schnell", "prompt": "a lake", "width": 1000, "height": 2048, "num_inference_steps": 50, "guidance_scale": 3}"#;
    let answer: Value = send(odd.to_owned()).await.unwrap().json().await.unwrap();
    let warnings = answer["warnings"].as_array().unwrap_or_else(|| panic!("{answer}"));
    let used: Vec<(String, Value)> =
        warnings.iter().map(|w| (w["param"].as_str().unwrap().to_owned(), w["used"].clone())).collect();
    assert_eq!(
        used,
        vec![
            ("width".to_owned(), json!(992)),
            ("height".to_owned(), json!(1440)),
            ("num_inference_steps".to_owned(), json!(4)),
            ("guidance_scale".to_owned(), Value::Null)
        ]
    );
    let image =
        base64::engine::general_purpose::STANDARD.decode(answer["data"][0]["b64_json"].as_str().unwrap()).unwrap();
    assert_eq!(png_size(&image), (992, 1440));
    assert_eq!(gw.usage(&workspace).await.len(), 3);
    gw.stop().await;
}

#[actix_web::test]
async fn a_failed_task_falls_back_and_moderation_is_the_callers_problem() {
    // No retries: the failed task moves straight to the fallback model.
    let (mock, gw) = setup_with(|c| c.pool.max_retries = 0).await;
    let (_, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    mock.set_fault(MediaFault::TaskFailed, Some(1));
    let body = json!({"model": "flux-1-pro", "prompt": "a lake", "width": 256, "height": 256});
    let response =
        gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["model"], "flux-1-dev");
    assert_eq!(answer["metadata"]["fallback"]["used"], true);
    // Charged once, at the price of the model that answered.
    assert_eq!(answer["metadata"]["credits_charged"].as_f64(), Some(25.0));
    mock.set_fault(MediaFault::Moderated, Some(1));
    let response =
        gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(error_code(response).await, (400, "provider_rejected".to_owned()));
    assert_eq!(gw.settled(&key).await, (75_000, 0));
    gw.stop().await;
}

#[actix_web::test]
async fn a_task_that_never_finishes_is_a_timeout_within_the_bound_and_not_charged() {
    let (mock, gw) = setup_with(|c| {
        c.pool.max_retries = 0;
        c.upstream.total_timeout_ms = 300;
    })
    .await;
    let (workspace, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    mock.set_fault(MediaFault::NeverReady, Some(1));
    let body = json!({"model": "flux-1-schnell", "prompt": "a lake", "width": 256, "height": 256});
    let response =
        gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(error_code(response).await, (504, "provider_timeout".to_owned()));
    assert!(mock.calls("/v1/get_result") >= 2, "it polled until the bound");
    assert_eq!(gw.settled(&key).await, (100_000, 0));
    assert_eq!(gw.usage(&workspace).await.iter().filter(|u| u.2 == "ok").count(), 0);
    gw.stop().await;
}

#[actix_web::test]
async fn an_image_model_without_its_key_is_unavailable() {
    let gw = Gateway::start(HashMap::new(), |_| {}).await;
    let response =
        gw.post("/api/v1/task").json(&json!({"model": "flux-1-schnell", "prompt": "x"})).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 503);
    assert!(body["error"]["message"].as_str().unwrap().contains("BFL_API_KEY"), "{body}");
    gw.stop().await;
}

/// The OpenAI face: `POST /v1/images/generations` as the OpenAI SDK sends it.
#[actix_web::test]
async fn the_openai_images_face_answers_urls_or_base64() {
    let (_mock, gw) = setup().await;
    let (_, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    let send =
        |body: Value| gw.client.post(format!("{}/v1/images/generations", gw.url)).bearer_auth(&key).json(&body).send();
    let by_url: Value = send(json!({"model": "flux-1-schnell", "prompt": "a cat", "n": 1, "size": "512x512"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = by_url["data"][0]["url"].as_str().unwrap();
    assert!(by_url["data"][0].get("b64_json").is_none());
    let image = gw.client.get(url).bearer_auth(&key).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(png_size(&image), (512, 512));
    let inline: Value =
        send(json!({"model": "flux-1-schnell", "prompt": "a cat", "size": "256x320", "response_format": "b64_json"}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(inline["data"][0]["b64_json"].as_str().unwrap()).unwrap();
    assert_eq!(png_size(&bytes), (256, 320));
    for (body, code) in [
        (json!({"model": "flux-1-schnell", "prompt": "x", "n": 2}), "invalid_field"),
        (json!({"model": "flux-1-schnell", "prompt": "x", "size": "big"}), "invalid_field"),
        (json!({"model": "flux-1-schnell", "prompt": "x", "response_format": "gif"}), "invalid_field"),
        (json!({"model": "gpt-4", "prompt": "x"}), "unsupported_model"),
        (json!({"model": "dall-e-3", "prompt": "x"}), "unsupported_model"),
    ] {
        assert_eq!(error_code(send(body.clone()).await.unwrap()).await, (400, code.to_owned()), "{body}");
    }
    gw.stop().await;
}
