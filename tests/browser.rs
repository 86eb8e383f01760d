//! A browser is a client too, and this test is one, end to end, in headless Chromium. A page on an origin of its
//! own (not the gateway's) asks its backend for a short-lived session token (minted with the workspace's API key,
//! which never reaches the browser), then calls the gateway cross-origin with that token: it streams a chat
//! completion with `fetch` (CORS preflight, the SSE body read as it arrives, `x-ratelimit-remaining` exposed to the
//! page), shows a generated image in a plain `<img>` and plays generated speech in a plain `<audio>` through the
//! signed media URLs the answers carry (no credentials on those loads). The driver (`tests/python/browser.py`)
//! collects every console error, uncaught exception, CORS refusal and failed load: there must be none. The usage
//! records keep the token's user.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "mock/media.rs"]
mod media_mock;

use actix_web::{web, App, HttpResponse, HttpServer};
use common::mock::{reply_text, MockConfig, MockServer};
use common::Gateway;
use media_mock::MediaMock;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The page, as a browser client of the gateway would write it.
const PAGE: &str = include_str!("browser/page.html");

/// The page's backend: it knows the gateway and holds the workspace's API key.
struct Backend {
    gateway: String,
    key: String,
}

/// `GET /`: the page.
async fn page() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(PAGE)
}

/// `GET /token`: a session token for the browser, minted with the API key, and where the gateway is.
async fn token(backend: web::Data<Backend>) -> HttpResponse {
    let session = json!({"expires_in": 600, "models": ["gpt-4", "flux-1-schnell", "eleven-labs-tts"],
        "user": "browser-test"});
    let minted = reqwest::Client::new()
        .post(format!("{}/api/v1/sessions", backend.gateway))
        .header("X-API-Key", &backend.key)
        .json(&session)
        .send()
        .await;
    let minted = match minted {
        Ok(response) => response,
        Err(e) => return HttpResponse::BadGateway().body(format!("POST /api/v1/sessions: {e}")),
    };
    let status = minted.status();
    let body = minted.text().await.unwrap_or_default();
    let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    match answer["access_token"].as_str() {
        Some(token) if status.is_success() => {
            HttpResponse::Ok().json(json!({"token": token, "gateway": backend.gateway}))
        }
        _ => HttpResponse::BadGateway().body(format!("POST /api/v1/sessions answered {status}: {body}")),
    }
}

/// The Python that runs the driver (it needs only the standard library, so `python3` will do).
fn python() -> PathBuf {
    common::python().unwrap_or_else(|| PathBuf::from("python3"))
}

#[actix_web::test]
async fn a_browser_page_on_another_origin_streams_chat_shows_an_image_and_plays_speech_with_a_session_token() {
    // The page's server listens first: its origin goes into the gateway's CORS configuration.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let page_origin = format!("http://{}", listener.local_addr().unwrap());

    let chat = MockServer::start(MockConfig::default()).await.unwrap();
    let media = MediaMock::start().await.unwrap();
    let mut env = common::mock_env(&chat);
    env.insert("BFL_BASE_URL".into(), media.url());
    env.insert("BFL_API_KEY".into(), "bfl-test".into());
    env.insert("ELEVENLABS_BASE_URL".into(), media.url());
    env.insert("ELEVENLABS_API_KEY".into(), "xi-test".into());
    let origin = page_origin.clone();
    let gw = Gateway::start(env, move |c| {
        c.upstream.poll_interval_ms = 5;
        c.server.cors_allowed_origins = vec![origin];
    })
    .await;
    let (workspace, key) = gw.workspace("1000", 1000, 10, 1_000_000).await;

    let backend = web::Data::new(Backend { gateway: gw.url.clone(), key: key.clone() });
    let server = HttpServer::new(move || {
        App::new().app_data(backend.clone()).route("/", web::get().to(page)).route("/token", web::get().to(token))
    })
    .workers(1)
    .shutdown_timeout(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let page_server = server.handle();
    actix_web::rt::spawn(server);

    // The browser runs as a child process, so that both servers keep serving while it works.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/browser.py");
    let python = python();
    let mut driver = tokio::process::Command::new(&python);
    driver.arg(&script).arg(format!("{page_origin}/")).args(["--timeout", "40"]).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(240), driver.output())
        .await
        .expect("the browser driver did not finish within 240 s")
        .unwrap_or_else(|e| panic!("cannot run {} {}: {e}", python.display(), script.display()));
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if output.status.code() == Some(3) {
        assert!(std::env::var_os("CI").is_none(), "CI must run the browser test, but chromium is missing:\n{stderr}");
        eprintln!("SKIPPED: chromium not installed (make setup installs it)");
        page_server.stop(false).await;
        gw.stop().await;
        return;
    }
    assert!(output.status.success(), "the browser driver failed ({}):\n{stdout}\n{stderr}", output.status);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the driver's report is not JSON ({e}):\n{stdout}\n{stderr}"));
    let result = &report["result"];

    // Nothing went wrong in the browser: no console error, exception, CORS refusal or failed load.
    let errors: Vec<&str> = report["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert!(
        errors.is_empty(),
        "the browser reported {} error(s):\n{}\n\nthe page's result: {result}\n\nthe driver:\n{stderr}",
        errors.len(),
        errors.join("\n")
    );
    assert_eq!(report["timed_out"], false, "the page never set window.__result:\n{stderr}");
    assert!(result.get("error").is_none(), "the page failed: {result}");

    // The chat completion streamed in, word by word, to its `[DONE]`, and the rate-limit header was readable.
    assert_eq!(result["done"], true, "no [DONE] event: {result}");
    assert!(result["deltas"].as_u64().unwrap_or(0) > 0, "no delta event: {result}");
    let expected = reply_text("Say hello to the browser", 12);
    assert_eq!(result["tokens"].as_str(), Some(expected.as_str()), "{result}");
    assert!(result["ratelimit_remaining"].is_string(), "x-ratelimit-remaining is not exposed to the page: {result}");

    // The image loaded through its signed URL, at the size asked for.
    let image = &result["image"];
    assert_eq!((image["width"].as_u64(), image["height"].as_u64()), (Some(256), Some(320)), "{result}");
    let image_url = image["url"].as_str().unwrap();
    assert!(image_url.starts_with(&gw.url), "{image_url}");
    assert!(image_url.contains("sig=") && image_url.contains("expires="), "not a signed URL: {image_url}");
    assert!(!image_url.contains(&key), "the API key is in the media URL: {image_url}");

    // The speech loaded through its signed URL and has its length.
    let audio = &result["audio"];
    let audio_url = audio["url"].as_str().unwrap();
    assert!(audio_url.contains("sig=") && audio_url.contains("expires="), "not a signed URL: {audio_url}");
    assert!(audio["duration"].as_f64().unwrap_or(0.0) > 0.5, "{result}");

    // Outside the browser too: the signed URL needs no credentials, and its signature is what grants access.
    let client = reqwest::Client::new();
    let signed = client.get(image_url).send().await.unwrap();
    assert_eq!(signed.status(), 200, "{image_url}");
    assert!(signed.headers()["content-type"].to_str().unwrap().starts_with("image/png"), "{image_url}");
    let tampered = image_url.replace("sig=", "sig=0");
    assert!(!client.get(&tampered).send().await.unwrap().status().is_success(), "{tampered} was served");
    let unsigned = image_url.split('?').next().unwrap();
    assert!(!client.get(unsigned).send().await.unwrap().status().is_success(), "{unsigned} was served");
    assert!(media.calls("/v1/flux-schnell") >= 1);
    assert_eq!(media.calls("/v1/text-to-speech"), 1);

    // The three calls the page made are on the workspace's usage, under the token's user.
    gw.state.engine().flush_usage().await;
    let users: Vec<Option<String>> =
        sqlx::query_scalar("SELECT user FROM usage WHERE workspace_id = ? ORDER BY created_at")
            .bind(workspace.as_str())
            .fetch_all(gw.state.store.sqlite_pool().unwrap())
            .await
            .unwrap();
    assert_eq!(users.len(), 3, "chat, image and speech: {users:?}");
    assert!(users.iter().all(|u| u.as_deref() == Some("browser-test")), "{users:?}");

    page_server.stop(false).await;
    gw.stop().await;
}
