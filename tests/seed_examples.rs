//! The three source documents are the product's user documentation: every request example of 001 (and the calls
//! 002 names) sent as the document shows it, byte for byte (JSON bodies as raw text, `curl -F` forms as multipart),
//! against the mock upstreams, and each response checked against the document's format. Then the usage summary
//! shows what 001's "Usage Tracking" promises, for every modality.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "mock/media.rs"]
mod media_mock;

use common::mock::{MockConfig, MockServer};
use common::Gateway;
use media_mock::MediaMock;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use std::process::Command;

struct Docs {
    chat: MockServer,
    media: MediaMock,
    gw: Gateway,
    workspace: String,
    key: String,
    dir: tempfile::TempDir,
}

async fn setup() -> Docs {
    let chat = MockServer::start(MockConfig::default()).await.unwrap();
    let media = MediaMock::start().await.unwrap();
    media.set_pending_polls(1);
    let mut env = common::mock_env(&chat);
    env.insert("BFL_BASE_URL".into(), media.url());
    env.insert("BFL_API_KEY".into(), "bfl-test".into());
    env.insert("ELEVENLABS_BASE_URL".into(), media.url());
    env.insert("ELEVENLABS_API_KEY".into(), "xi-test".into());
    let gw = Gateway::start(env, |c| c.upstream.poll_interval_ms = 5).await;
    let (workspace, key) = gw.workspace("1000", 1000, 10, 1_000_000).await;
    Docs { chat, media, gw, workspace, key, dir: tempfile::tempdir().unwrap() }
}

impl Docs {
    /// `fetch`/`requests`/`curl -d`: the document's JSON text as the body, `Authorization: Bearer YOUR_API_KEY`.
    async fn json(&self, body: &str) -> (u16, Value) {
        let response = self
            .gw
            .client
            .post(format!("{}/api/v1/task", self.gw.url))
            .header("Authorization", format!("Bearer {}", self.key))
            .header("Content-Type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// `curl -F`: text fields as they are written, `@input.mp3` as a file part named input.mp3.
    async fn form(&self, fields: &[(&str, &str)]) -> (u16, Value) {
        let mut form = Form::new();
        for (name, value) in fields {
            form = match value.strip_prefix('@') {
                Some(file) => form.part(
                    name.to_string(),
                    Part::bytes(self.input_mp3()).file_name(file.to_owned()).mime_str("audio/mpeg").unwrap(),
                ),
                None => form.text(name.to_string(), value.to_string()),
            };
        }
        let response = self
            .gw
            .client
            .post(format!("{}/api/v1/task", self.gw.url))
            .header("Authorization", format!("Bearer {}", self.key))
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// A real `input.mp3`: espeak-ng speech encoded by ffmpeg (made once).
    fn input_mp3(&self) -> Vec<u8> {
        let mp3 = self.dir.path().join("input.mp3");
        if !mp3.exists() {
            let wav = self.dir.path().join("input.wav");
            let run = |program: &str, args: &[&str]| {
                let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
                assert!(out.status.success(), "{program}: {}", String::from_utf8_lossy(&out.stderr));
            };
            run("espeak-ng", &["-w", wav.to_str().unwrap(), "Hello, this is a test of speech."]);
            run("ffmpeg", &["-y", "-loglevel", "error", "-i", wav.to_str().unwrap(), mp3.to_str().unwrap()]);
        }
        std::fs::read(mp3).unwrap()
    }
}

/// The fields 001's "Success Response" shows, with their types.
fn is_task_completion(answer: &Value, model: &str) {
    let id = answer["id"].as_str().unwrap_or_else(|| panic!("{answer}"));
    assert!(id.starts_with("task_"), "{answer}");
    assert_eq!(answer["object"], "task.completion", "{answer}");
    assert!(answer["created"].is_i64(), "{answer}");
    assert_eq!(answer["model"], model, "{answer}");
    let choice = &answer["choices"][0];
    assert_eq!(choice["index"], 0, "{answer}");
    assert_eq!(choice["message"]["role"], "assistant", "{answer}");
    assert!(!choice["message"]["content"].as_str().unwrap().is_empty(), "{answer}");
    assert_eq!(choice["finish_reason"], "stop", "{answer}");
    let usage = &answer["usage"];
    let (prompt, completion) = (usage["prompt_tokens"].as_u64().unwrap(), usage["completion_tokens"].as_u64().unwrap());
    assert_eq!(usage["total_tokens"].as_u64(), Some(prompt + completion), "{answer}");
}

/// "Image Generation Response", with the usage 001's tracking promises.
fn is_image_generation(answer: &Value, model: &str) {
    assert!(answer["id"].as_str().unwrap_or_else(|| panic!("{answer}")).starts_with("img_"), "{answer}");
    assert_eq!(answer["object"], "image.generation", "{answer}");
    assert!(answer["created"].is_i64());
    assert_eq!(answer["model"], model);
    assert!(answer["data"][0]["url"].as_str().unwrap().starts_with("http://"), "{answer}");
    assert!(!answer["data"][0]["b64_json"].as_str().unwrap().is_empty());
    for field in ["images", "pixels", "output_bytes", "processing_ms"] {
        assert!(answer["usage"][field].is_u64(), "usage.{field}: {answer}");
    }
}

/// "Speech Response", with the usage 001's tracking promises.
fn is_speech_generation(answer: &Value, model: &str) {
    assert!(answer["id"].as_str().unwrap_or_else(|| panic!("{answer}")).starts_with("speech_"), "{answer}");
    assert_eq!(answer["object"], "speech.generation", "{answer}");
    assert!(answer["created"].is_i64());
    assert_eq!(answer["model"], model);
    assert!(answer["audio"]["url"].as_str().unwrap().starts_with("http://"), "{answer}");
    assert!(!answer["audio"]["b64_json"].as_str().unwrap().is_empty());
    assert!(answer["usage"]["output_bytes"].as_u64().unwrap() > 0, "{answer}");
    assert!(answer["usage"]["processing_ms"].is_u64(), "{answer}");
}

#[actix_web::test]
async fn every_example_of_001_works_as_written_and_usage_says_what_001_promises() {
    let docs = setup().await;

    // Request Format: JSON Request.
    let (status, answer) = docs
        .json(
            r#"{
"model": "gpt-4",
"messages": [
{
"role": "user",
"content": "Hello, world!"
}
],
"max_tokens": 100,
"temperature": 0.7
}"#,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    is_task_completion(&answer, "gpt-4");

    // Request Format: FormData Request (for file uploads). Text-to-speech speaks `text`; the audio file is taken,
    // not used, and the answer says so.
    let (status, answer) = docs
        .form(&[("model", "eleven-labs-tts"), ("text", "Hello world"), ("voice", "adam"), ("audio", "@input.mp3")])
        .await;
    assert_eq!(status, 200, "{answer}");
    is_speech_generation(&answer, "eleven-labs-tts");
    assert_eq!(answer["warnings"][0]["param"], "audio", "{answer}");
    assert_eq!(answer["warnings"][0]["asked"], "input.mp3", "{answer}");
    assert_eq!(answer["usage"]["characters"], 11);

    // Text Generation: OpenAI Models.
    let (status, answer) = docs
        .json(
            r#"{
"model": "gpt-4",
"messages": [
{
"role": "system",
"content": "You are a helpful assistant."
},
{
"role": "user",
"content": "Explain quantum computing in simple terms."
}
],
"max_tokens": 500,
"temperature": 0.7,
"stream": false
}"#,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    is_task_completion(&answer, "gpt-4");

    // Text Generation: Claude Models.
    let (status, answer) = docs
        .json(
            r#"{
"model": "claude-3-sonnet",
"messages": [
{
"role": "user",
"content": "Write a short story about a robot."
}
],
"max_tokens": 1000
}"#,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    is_task_completion(&answer, "claude-3-sonnet");
    assert!(docs.chat.last_request().unwrap().path.ends_with("/v1/messages"));

    // Image Generation: Black Forest Labs.
    let (status, answer) = docs
        .json(
            r#"{
"model": "flux-1-pro",
"prompt": "A beautiful sunset over a mountain lake, photorealistic",
"width": 1024,
"height": 1024,
"num_inference_steps": 50,
"guidance_scale": 7.5,
"seed": 42
}"#,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    is_image_generation(&answer, "flux-1-pro");
    assert!(answer["warnings"].as_array().is_some_and(|w| !w.is_empty()), "{answer}");

    // Speech Services: Text-to-Speech (ElevenLabs).
    let (status, answer) = docs
        .json(
            r#"{
"model": "eleven-labs-tts",
"text": "Hello, this is a test of the text-to-speech service.",
"voice": "adam",
"voice_settings": {
"stability": 0.5,
"similarity_boost": 0.5
},
"output_format": "mp3_44100_128"
}"#,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    is_speech_generation(&answer, "eleven-labs-tts");
    assert!(answer.get("warnings").is_none(), "{answer}");
    assert_eq!(answer["usage"]["characters"], 52);

    // Speech-to-Speech (ElevenLabs): FormData Request.
    let (status, answer) = docs
        .form(&[
            ("model", "eleven-labs-sts"),
            ("audio", "@input.mp3"),
            ("voice", "adam"),
            ("voice_settings", "{\"stability\": 0.5, \"similarity_boost\": 0.5}"),
        ])
        .await;
    assert_eq!(status, 200, "{answer}");
    is_speech_generation(&answer, "eleven-labs-sts");
    assert!(answer["usage"]["input_seconds"].as_f64().unwrap() > 0.5, "{answer}");

    // Speech-to-Text (ElevenLabs): FormData Request.
    let (status, answer) = docs.form(&[("model", "eleven-labs-stt"), ("audio", "@input.mp3")]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "transcription", "{answer}");
    assert!(!answer["text"].as_str().unwrap().is_empty());
    assert!(answer["usage"]["input_seconds"].as_f64().unwrap() > 0.5, "{answer}");
    assert!(answer["usage"]["output_bytes"].as_u64().unwrap() > 0, "{answer}");

    // Examples: Simple Text Generation (fetch, JSON.stringify).
    let (status, answer) =
        docs.json(r#"{"model":"gpt-4","messages":[{"role":"user","content":"What is the capital of France?"}],"max_tokens":50}"#).await;
    assert_eq!(status, 200, "{answer}");
    is_task_completion(&answer, "gpt-4");

    // Examples: Image Generation (requests, json=).
    let (status, answer) = docs
        .json(r#"{"model": "flux-1-pro", "prompt": "A futuristic city at night with neon lights", "width": 1024, "height": 1024}"#)
        .await;
    assert_eq!(status, 200, "{answer}");
    is_image_generation(&answer, "flux-1-pro");
    assert!(answer.get("warnings").is_none(), "{answer}");
    assert!(answer["data"][0]["url"].is_string());

    // Examples: Text-to-Speech (curl -d).
    let (status, answer) = docs
        .json(
            r#"{
"model": "eleven-labs-tts",
"text": "Hello, this is a test of our text-to-speech API.",
"voice": "adam"
}"#,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    is_speech_generation(&answer, "eleven-labs-tts");

    // Usage Tracking: model, tokens (text), processing time, output size; characters, audio seconds, images and
    // pixels for the other modalities.
    let summary: Value = docs
        .gw
        .client
        .get(format!("{}/api/billing/usage/summary?group_by=modality", docs.gw.url))
        .header("X-API-Key", &docs.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let group = |modality: &str| {
        summary["data"].as_array().unwrap().iter().find(|g| g["key"] == modality).cloned().unwrap_or_else(|| {
            panic!("no {modality} group: {summary}");
        })
    };
    let chat = group("chat");
    assert_eq!(chat["requests"], 4);
    assert!(chat["prompt_tokens"].as_u64().unwrap() > 0 && chat["completion_tokens"].as_u64().unwrap() > 0);
    assert!(chat["output_bytes"].as_u64().unwrap() > 0, "{summary}");
    let image = group("image");
    assert_eq!((image["requests"].as_u64(), image["images"].as_u64()), (Some(2), Some(2)));
    assert_eq!(image["pixels"].as_u64(), Some(2 * 1024 * 1024), "{summary}");
    assert_eq!(group("speech")["characters"].as_u64(), Some(11 + 52 + 48), "{summary}");
    let audio_in = group("speech_to_speech")["audio_seconds"].as_f64().unwrap();
    assert!(audio_in > 0.5, "{summary}");
    assert!((group("transcription")["audio_seconds"].as_f64().unwrap() - audio_in).abs() < 0.01, "{summary}");
    let total = &summary["total"];
    assert_eq!(total["requests"], 11);
    for field in ["output_bytes", "processing_ms"] {
        let parts: u64 = summary["data"].as_array().unwrap().iter().map(|g| g[field].as_u64().unwrap()).sum();
        assert_eq!(total[field].as_u64(), Some(parts), "{field}: {summary}");
    }
    assert_eq!(docs.gw.usage(&docs.workspace).await.len(), 11);
    docs.gw.stop().await;
}

/// 001's "Error Responses", as the document writes them.
#[actix_web::test]
async fn the_error_responses_of_001_are_answered_as_written() {
    let docs = setup().await;
    let (status, answer) =
        docs.json(r#"{"model": "invalid-model", "messages": [{"role": "user", "content": "hi"}]}"#).await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["message"], "Unsupported task type: invalid-model");
    assert_eq!(answer["error"]["type"], "invalid_request_error");
    assert_eq!(answer["error"]["code"], "unsupported_model");

    // Rate Limit Exceeded, with the X-RateLimit-* headers.
    let (_, limited) = docs.gw.workspace("1000", 1, 10, 1_000_000).await;
    let send = || {
        docs.gw
            .client
            .post(format!("{}/api/v1/task", docs.gw.url))
            .header("Authorization", format!("Bearer {limited}"))
            .header("Content-Type", "application/json")
            .body(r#"{"model":"gpt-4","messages":[{"role":"user","content":"What is the capital of France?"}],"max_tokens":50}"#)
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 200);
    for header in ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"] {
        assert!(first.headers().contains_key(header), "{header}");
    }
    let second = send().await.unwrap();
    assert_eq!(second.status(), 429);
    let answer: Value = second.json().await.unwrap();
    let message = answer["error"]["message"].as_str().unwrap();
    let reset = message.strip_prefix("Rate limit exceeded. Reset at ").unwrap_or_else(|| panic!("{answer}"));
    assert!(reset.len() == 20 && reset.ends_with('Z') && &reset[10..11] == "T", "{reset}");
    assert_eq!(answer["error"]["type"], "rate_limit_error");
    assert_eq!(answer["error"]["code"], "rate_limit_exceeded");

    // Insufficient Credits.
    let (_, broke) = docs.gw.workspace("0", 1000, 10, 1_000_000).await;
    let answer: Value = docs
        .gw
        .client
        .post(format!("{}/api/v1/task", docs.gw.url))
        .header("Authorization", format!("Bearer {broke}"))
        .header("Content-Type", "application/json")
        .body(r#"{"model": "flux-1-pro", "prompt": "A futuristic city at night with neon lights", "width": 1024, "height": 1024}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["error"]["message"], "Insufficient credits for this operation");
    assert_eq!(answer["error"]["type"], "insufficient_credits_error");
    assert_eq!(answer["error"]["code"], "insufficient_credits");
    assert_eq!(docs.media.calls("/v1/"), 0);
    docs.gw.stop().await;
}

impl Docs {
    /// 002's calls carry `X-API-Key`.
    fn call(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.call_as(&self.key, method, path)
    }

    fn call_as(&self, key: &str, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.gw.client.request(method, format!("{}{path}", self.gw.url)).header("X-API-Key", key)
    }

    async fn run(&self, body: Value) -> (u16, Value) {
        let response = self.call(reqwest::Method::POST, "/api/runs").json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// 002's "Upload media for model inputs": init, PUT to `upload_url`, complete; answers the `media_ref`.
    async fn upload(&self, filename: &str, content_type: &str, bytes: Vec<u8>) -> String {
        self.upload_as(&self.key, filename, content_type, bytes).await
    }

    async fn upload_as(&self, key: &str, filename: &str, content_type: &str, bytes: Vec<u8>) -> String {
        let init: Value = self
            .call_as(key, reqwest::Method::POST, "/api/media/upload/init")
            .json(&serde_json::json!({"filename": filename, "content_type": content_type, "bytes": bytes.len()}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let put = self.gw.client.put(init["upload_url"].as_str().unwrap()).body(bytes).send().await.unwrap();
        assert_eq!(put.status(), 200);
        let done: Value = self
            .call_as(key, reqwest::Method::POST, "/api/media/upload/complete")
            .json(&serde_json::json!({"upload_id": init["upload_id"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        done["media_ref"].as_str().unwrap_or_else(|| panic!("{done}")).to_owned()
    }
}

/// 002: every model the marketplace lists with `execute` runs through `POST /api/runs` with the inputs its contract
/// shows (speech models included, audio by `media_ref`); wrong shapes are refused by name and charge nothing.
#[actix_web::test]
async fn every_marketplace_model_with_execute_runs_through_api_runs_as_its_contract_shows() {
    use serde_json::json;
    let docs = setup().await;
    let list: Value = docs
        .call(reqwest::Method::GET, "/api/marketplace/models?mode=execute")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let models: Vec<String> =
        list["data"].as_array().unwrap().iter().map(|m| m["slug"].as_str().unwrap().to_owned()).collect();
    for slug in ["eleven-labs-tts", "eleven-labs-sts", "eleven-labs-stt", "flux-1-pro", "gpt-4"] {
        assert!(models.iter().any(|m| m == slug), "{slug} listed with execute: {models:?}");
    }
    let detail: Value = docs
        .call(reqwest::Method::GET, "/api/marketplace/models/eleven-labs-stt")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let audio = &detail["contract"]["execute"]["input"]["audio"];
    assert_eq!((audio["type"].as_str(), audio["required"].as_bool()), (Some("media_ref"), Some(true)), "{detail}");
    assert!(detail["contract"]["execute"]["params"]["language"].is_object(), "{detail}");

    let media_ref = docs.upload("input.mp3", "audio/mpeg", docs.input_mp3()).await;
    let before = docs.gw.wallet(&docs.key).await;
    // Wrong shapes first: refused by name, nothing charged, nothing sent upstream.
    let (_, other_key) = docs.gw.workspace("10", 1000, 10, 1_000_000).await;
    let other = docs.upload_as(&other_key, "mine.mp3", "audio/mpeg", docs.input_mp3()).await;
    for (body, status, code, param) in [
        (json!({"model": "eleven-labs-stt", "input": {}}), 400, "missing_field", "input.audio"),
        (
            json!({"model": "eleven-labs-stt", "input": {"audio": {"ref": media_ref}}}),
            400,
            "invalid_field",
            "input.audio",
        ),
        (
            json!({"model": "eleven-labs-stt", "input": {"audio": media_ref, "lang": "en"}}),
            400,
            "unknown_field",
            "input.lang",
        ),
        (json!({"model": "eleven-labs-stt", "input": {"audio": other}}), 404, "not_found", "input.audio"),
        (json!({"model": "eleven-labs-tts", "input": {"text": 5}}), 400, "invalid_field", "input.text"),
        (
            json!({"model": "eleven-labs-tts", "input": {"text": "hi"}, "params": {"colour": "red"}}),
            400,
            "unknown_field",
            "params.colour",
        ),
        (
            json!({"model": "eleven-labs-tts", "input": {"text": "hi"}, "params": {"voice_settings": {"stability": 7}}}),
            400,
            "invalid_field",
            "params.voice_settings",
        ),
        (
            json!({"model": "eleven-labs-tts", "input": {"text": "hi"}, "params": "fast"}),
            400,
            "invalid_field",
            "params",
        ),
        (json!({"model": "eleven-labs-tts", "input": "hi"}), 400, "invalid_field", "input"),
        (
            json!({"model": "eleven-labs-sts", "mode": "index", "scope": "test", "input": {"audio": media_ref}}),
            400,
            "unsupported_mode",
            "mode",
        ),
        (
            json!({"model": "flux-1-pro", "input": {"prompt": "x"}, "params": {"width": -5}}),
            400,
            "invalid_field",
            "params.width",
        ),
    ] {
        let (got, answer) = docs.run(body.clone()).await;
        assert_eq!((got, answer["error"]["code"].as_str().unwrap_or_default()), (status, code), "{body} -> {answer}");
        assert_eq!(answer["error"]["param"].as_str().unwrap_or_default(), param, "{body} -> {answer}");
    }
    assert_eq!(docs.gw.wallet(&docs.key).await, before);
    assert_eq!(docs.media.calls("/v1/"), 0);

    let (status, run) = docs
        .run(json!({"model": "eleven-labs-stt", "input": {"audio": media_ref}, "params": {"language": "en"}}))
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!((run["object"].as_str(), run["status"].as_str()), (Some("run"), Some("succeeded")));
    assert!(run["output"]["text"].as_str().unwrap().starts_with("transcribed "), "{run}");
    assert!(run["usage"]["input_seconds"].as_f64().unwrap() > 0.5, "{run}");
    let (status, run) =
        docs.run(json!({"model": "eleven-labs-tts", "input": {"text": "Hello world"}, "params": {"voice": "adam", "output_format": "mp3_44100_128"}})).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["output"]["audio"]["content_type"], "audio/mpeg", "{run}");
    assert_eq!(run["usage"]["characters"], 11);
    let fetched = docs
        .call(reqwest::Method::GET, &format!("/api/media/{}", run["output"]["audio"]["media_ref"].as_str().unwrap()));
    assert_eq!(fetched.send().await.unwrap().status(), 200);
    let (status, run) = docs
        .run(json!({"model": "eleven-labs-sts", "input": {"audio": media_ref}, "params": {"voice": "adam", "voice_settings": {"stability": 0.5}}}))
        .await;
    assert_eq!(status, 200, "{run}");
    assert!(run["output"]["audio"]["bytes"].as_u64().unwrap() > 0, "{run}");
    let (status, run) = docs
        .run(json!({"model": "flux-1-pro", "input": {"prompt": "a lake"}, "params": {"width": 1024, "height": 1024, "guidance_scale": 7.5}}))
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["usage"]["pixels"], 1024 * 1024, "{run}");
    assert!(run["output"]["warnings"].as_array().is_some_and(|w| !w.is_empty()), "{run}");

    // The wallet and the usage summary 002 names.
    let usage = docs.gw.usage(&docs.workspace).await;
    assert_eq!(usage.len(), 4);
    let wallet: Value =
        docs.call(reqwest::Method::GET, "/api/billing/wallet").send().await.unwrap().json().await.unwrap();
    let charged: i64 = usage.iter().map(|u| u.1).sum();
    assert_eq!((wallet["balance"].as_f64().unwrap() * 1000.0).round() as i64, 1_000_000 - charged, "{wallet}");
    let summary: Value =
        docs.call(reqwest::Method::GET, "/api/billing/usage/summary").send().await.unwrap().json().await.unwrap();
    assert_eq!(summary["total"]["requests"], 4, "{summary}");
    docs.gw.stop().await;
}

/// 002's index example indexes images with `scope: "test"`. No image-text embedding model ships from a package
/// registry (see the README), so an image is refused with a clear error, never embedded as if it were text, and
/// nothing is charged.
#[actix_web::test]
async fn images_for_index_and_search_are_refused_clearly_not_faked() {
    use serde_json::json;
    let docs = setup().await;
    let image = docs.upload("photo.png", "image/png", media_mock::png(64, 48, 7)).await;
    let before = docs.gw.wallet(&docs.key).await;
    for body in [
        json!({"model": "all-minilm-l6-v2", "mode": "index", "scope": "test", "input": {"documents": [{"id": "p", "media_ref": image}]}}),
        json!({"model": "all-minilm-l6-v2", "mode": "search", "scope": "test", "input": {"media_ref": image}}),
    ] {
        let (status, answer) = docs.run(body.clone()).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_field")), "{body} -> {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("image-text embedding model"), "{message}");
    }
    // An image field the contract does not have is named.
    let (status, answer) = docs
        .run(json!({"model": "all-minilm-l6-v2", "mode": "search", "scope": "test", "input": {"image": image}}))
        .await;
    assert_eq!((status, answer["error"]["param"].as_str()), (400, Some("input.image")), "{answer}");
    assert_eq!(docs.gw.wallet(&docs.key).await, before);
    docs.gw.stop().await;
}
