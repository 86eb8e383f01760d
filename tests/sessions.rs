//! Browser session tokens, model lists, CORS and signed media URLs, in process: every error the browser issue
//! names (invalid, expired, revoked, forged and tampered tokens; a token on the admin API and minting a token;
//! models outside a key's or a token's list; a token's spending cap, exact under concurrency), the bad inputs of
//! the new routes, and the media URL's signature, expiry and byte ranges.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "mock/media.rs"]
mod media_mock;

use common::mock::{MockConfig, MockServer};
use common::{error_code, Gateway};
use media_mock::MediaMock;
use serde_json::{json, Value};
use switchyard::sessions::Claims;

const ORIGIN: &str = "http://app.example.test";

async fn setup() -> (MockServer, MediaMock, Gateway) {
    let chat = MockServer::start(MockConfig::default()).await.unwrap();
    let media = MediaMock::start().await.unwrap();
    media.set_pending_polls(1);
    let mut env = common::mock_env(&chat);
    env.insert("BFL_BASE_URL".into(), media.url());
    env.insert("BFL_API_KEY".into(), "bfl-test".into());
    let gw = Gateway::start(env, |c| {
        c.upstream.poll_interval_ms = 5;
        c.server.cors_allowed_origins = vec![ORIGIN.to_owned()];
    })
    .await;
    (chat, media, gw)
}

async fn mint(gw: &Gateway, key: &str, body: Value) -> (u16, Value) {
    let response = gw
        .client
        .post(format!("{}/api/v1/sessions", gw.url))
        .header("X-API-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 20})
}

async fn task(gw: &Gateway, bearer: &str, body: &Value) -> reqwest::Response {
    gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth(bearer).json(body).send().await.unwrap()
}

#[actix_web::test]
async fn a_token_works_until_it_expires_or_is_revoked_and_never_on_the_admin_api() {
    let (_chat, _media, gw) = setup().await;
    let (workspace, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    let (status, session) =
        mint(&gw, &key, json!({"expires_in": 600, "models": ["gpt-4", "flux-1-schnell"], "user": "ada"})).await;
    assert_eq!(status, 201, "{session}");
    assert_eq!((session["object"].as_str(), session["token_type"].as_str()), (Some("session"), Some("Bearer")));
    assert_eq!(session["workspace_id"], workspace.as_str());
    assert_eq!(session["models"], json!(["gpt-4", "flux-1-schnell"]));
    let token = session["access_token"].as_str().unwrap().to_owned();
    let id = session["id"].as_str().unwrap().to_owned();
    assert!(session["expires_at"].as_i64().unwrap() > 0);

    let response = task(&gw, &token, &chat("gpt-4")).await;
    assert_eq!(response.status(), 200);
    // A model outside the token's list.
    assert_eq!(error_code(task(&gw, &token, &chat("gpt-3.5-turbo")).await).await, (403, "model_not_allowed".into()));
    // The wallet and usage read with the token; the usage summary groups by the token's user and session.
    let summary: Value = gw
        .client
        .get(format!("{}/api/billing/usage/summary?group_by=user", gw.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(summary["data"][0]["key"], "ada", "{summary}");
    assert_eq!(summary["data"][0]["requests"], 1, "{summary}");
    let by_session: Value = gw
        .client
        .get(format!("{}/api/billing/usage/summary?group_by=session", gw.url))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_session["data"][0]["key"], id.as_str(), "{by_session}");

    // A token cannot mint a token, nor reach the admin API.
    let response = gw.client.post(format!("{}/api/v1/sessions", gw.url)).bearer_auth(&token).json(&json!({})).send();
    assert_eq!(error_code(response.await.unwrap()).await, (403, "api_key_required".into()));
    let response = gw.client.get(format!("{}/admin/workspaces/{workspace}", gw.url)).bearer_auth(&token).send();
    assert_eq!(error_code(response.await.unwrap()).await, (403, "api_key_required".into()));

    // Forged (another gateway's key), tampered (its claims changed), expired, and garbage.
    let dir = tempfile::tempdir().unwrap();
    let other = switchyard::sessions::Sessions::open(dir.path()).unwrap();
    let claims = |exp: i64| Claims {
        sid: id.clone(),
        kid: gw.state.keys.resolve(&key).unwrap().key_id,
        ws: workspace.clone(),
        exp,
        models: None,
        max: None,
        user: None,
    };
    let far = switchyard::clock::now_unix() + 600;
    let forged = other.mint(&claims(far));
    let (payload, signature) = token.rsplit_once('.').unwrap();
    let tampered = format!("{}x.{signature}", payload);
    let expired = gw.state.sessions.mint(&claims(switchyard::clock::now_unix() - 1));
    for (bad, code) in [
        (forged.as_str(), "invalid_token"),
        (tampered.as_str(), "invalid_token"),
        ("sy_st_nothing", "invalid_token"),
        (expired.as_str(), "expired_token"),
    ] {
        assert_eq!(error_code(task(&gw, bad, &chat("gpt-4")).await).await, (401, code.into()), "{bad}");
    }

    // Revoked before expiry: by the key; then another workspace cannot revoke it (404), nor a second time harm.
    let (_, other_key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    let revoke =
        |by: String| gw.client.delete(format!("{}/api/v1/sessions/{id}", gw.url)).header("X-API-Key", by).send();
    assert_eq!(error_code(revoke(other_key.clone()).await.unwrap()).await, (404, "not_found".into()));
    assert_eq!(revoke(key.clone()).await.unwrap().status(), 200);
    assert_eq!(error_code(task(&gw, &token, &chat("gpt-4")).await).await, (401, "revoked_token".into()));
    // A revocation outlives a restart of the check: it is in the store too.
    let revoked = gw.state.store.revoked_sessions(switchyard::clock::now_unix()).await.unwrap();
    assert!(revoked.iter().any(|(sid, _)| *sid == id));
    let records = gw.usage(&workspace).await;
    assert_eq!(records.len(), 1);
    gw.stop().await;
}

#[actix_web::test]
async fn a_keys_model_list_bounds_its_calls_and_its_tokens() {
    let (_chat, _media, gw) = setup().await;
    let (workspace, _) = gw.workspace("100", 1000, 10, 1_000_000).await;
    let created: Value = gw
        .admin(reqwest::Method::POST, &format!("/admin/workspaces/{workspace}/keys"))
        .json(&json!({"name": "search", "models": ["gpt-3.5-turbo"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["models"], json!(["gpt-3.5-turbo"]));
    let key = created["key"].as_str().unwrap().to_owned();
    assert_eq!(error_code(task(&gw, &key, &chat("gpt-4")).await).await, (403, "model_not_allowed".into()));
    let answer: Value = task(&gw, &key, &chat("gpt-3.5-turbo")).await.json().await.unwrap();
    // gpt-3.5-turbo falls back to claude-3-haiku, which the key may not run: the chain passes over it.
    assert_eq!(answer["model"], "gpt-3.5-turbo", "{answer}");
    let response = gw
        .client
        .post(format!("{}/api/v1/task?use_fallback_model=true", gw.url))
        .bearer_auth(&key)
        .json(&chat("gpt-3.5-turbo"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16() / 100, 5, "no model of the chain is left to run");
    // A token's list stays within its key's.
    let (status, refused) = mint(&gw, &key, json!({"models": ["gpt-4"]})).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (403, Some("model_not_allowed")), "{refused}");
    let (status, session) = mint(&gw, &key, json!({})).await;
    assert_eq!((status, &session["models"]), (201, &json!(["gpt-3.5-turbo"])));
    // The admin changes the list: the key (and its tokens) follow at once.
    let id = created["id"].as_str().unwrap();
    let updated = gw.admin(reqwest::Method::PATCH, &format!("/admin/keys/{id}")).json(&json!({"models": ["gpt-4"]}));
    assert_eq!(updated.send().await.unwrap().status(), 200);
    assert_eq!(task(&gw, &key, &chat("gpt-4")).await.status(), 200);
    let token = session["access_token"].as_str().unwrap();
    assert_eq!(error_code(task(&gw, token, &chat("gpt-3.5-turbo")).await).await, (403, "model_not_allowed".into()));
    for (body, code) in [
        (json!({"models": ["no-such-model"]}), "invalid_field"),
        (json!({"models": []}), "invalid_field"),
        (json!({"models": "gpt-4"}), "invalid_field"),
        (json!({"colour": 1}), "unknown_field"),
    ] {
        let response = gw.admin(reqwest::Method::PATCH, &format!("/admin/keys/{id}")).json(&body).send().await.unwrap();
        assert_eq!(error_code(response).await.1, code, "{body}");
    }
    let response = gw.admin(reqwest::Method::PATCH, "/admin/keys/key_nope").json(&json!({"models": null})).send();
    assert_eq!(error_code(response.await.unwrap()).await, (404, "not_found".into()));
    // A revoked key takes its tokens with it.
    assert_eq!(gw.admin(reqwest::Method::DELETE, &format!("/admin/keys/{id}")).send().await.unwrap().status(), 200);
    assert_eq!(error_code(task(&gw, token, &chat("gpt-4")).await).await, (401, "invalid_token".into()));
    gw.stop().await;
}

#[actix_web::test]
async fn a_tokens_spending_cap_holds_exactly_under_concurrency_while_the_wallet_has_more() {
    let (_chat, _media, gw) = setup().await;
    let (_, key) = gw.workspace("1000", 10_000, 100, 100_000_000).await;
    // Each gpt-4 call holds the most its chain can cost, and is charged less when it settles: how many of twelve
    // pass a cap of 5 credits depends on how many settle before the rest are admitted. What never changes: some
    // pass, some are refused, and the charges stay within the cap.
    let (_, session) = mint(&gw, &key, json!({"max_credits": 5})).await;
    let token = session["access_token"].as_str().unwrap().to_owned();
    assert_eq!(session["max_credits"].as_f64(), Some(5.0));
    let body = chat("gpt-4");
    let calls = (0..12).map(|_| task(&gw, &token, &body));
    let responses = futures::future::join_all(calls).await;
    let ok = responses.iter().filter(|r| r.status() == 200).count();
    let refused = responses.iter().filter(|r| r.status() == 402).count();
    assert_eq!(ok + refused, 12);
    assert!(ok >= 1 && refused >= 1, "{ok} calls passed a cap of 5 credits, {refused} were refused");
    let last = task(&gw, &token, &chat("gpt-4")).await;
    let passed = ok + usize::from(last.status() == 200);
    let usage = gw.usage(&gw.state.keys.resolve(&key).unwrap().workspace_id).await;
    assert_eq!(usage.len(), passed, "one usage record for each call that passed, none for a refused one");
    let charged: i64 = usage.iter().map(|u| u.1).sum();
    assert!(usage.iter().all(|u| u.1 > 0), "{usage:?}");
    assert!(charged <= 5_000, "charged {charged} millicredits past a cap of 5 credits");
    if last.status() == 402 {
        let (status, code) = error_code(last).await;
        assert_eq!((status, code.as_str()), (402, "insufficient_credits"));
    }
    // The key itself is not capped.
    assert_eq!(task(&gw, &key, &chat("gpt-4")).await.status(), 200);
    gw.stop().await;
}

#[actix_web::test]
async fn minting_refuses_bad_input_by_name() {
    let (_chat, _media, gw) = setup().await;
    let (_, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    for (body, code, param) in [
        (json!({"expires_in": 10}), "invalid_field", "expires_in"),
        (json!({"expires_in": 86_401}), "invalid_field", "expires_in"),
        (json!({"expires_in": "soon"}), "invalid_field", "expires_in"),
        (json!({"models": ["no-such-model"]}), "invalid_field", "models"),
        (json!({"models": {"gpt-4": true}}), "invalid_field", "models"),
        (json!({"max_credits": -1}), "invalid_field", "max_credits"),
        (json!({"max_credits": 0}), "invalid_field", "max_credits"),
        (json!({"user": ""}), "invalid_field", "user"),
        (json!({"user": "x".repeat(300)}), "invalid_field", "user"),
        (json!({"scopes": ["all"]}), "unknown_field", "scopes"),
    ] {
        let (status, answer) = mint(&gw, &key, body.clone()).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (400, Some(code)), "{body} -> {answer}");
        assert_eq!(answer["error"]["param"], param, "{body} -> {answer}");
    }
    let response = gw.client.post(format!("{}/api/v1/sessions", gw.url)).json(&json!({})).send().await.unwrap();
    assert_eq!(error_code(response).await, (401, "missing_api_key".into()));
    let response = gw.client.delete(format!("{}/api/v1/sessions/ses_nope", gw.url)).header("X-API-Key", &key).send();
    assert_eq!(error_code(response.await.unwrap()).await, (404, "not_found".into()));
    gw.stop().await;
}

#[actix_web::test]
async fn media_urls_open_signed_until_they_expire_with_ranges_and_cors() {
    let (_chat, _media, gw) = setup().await;
    let (workspace, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    let body = json!({"model": "flux-1-schnell", "prompt": "a lake", "width": 256, "height": 256});
    let answer: Value = task(&gw, &key, &body).await.json().await.unwrap();
    let url = answer["data"][0]["url"].as_str().unwrap().to_owned();
    let media_ref = answer["data"][0]["media_ref"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&gw.url) && url.contains("expires=") && url.contains("sig="), "{url}");
    // No credentials: the signed URL opens, as a browser's media element expects.
    let whole = gw.client.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    let headers = whole.headers().clone();
    let bytes = whole.bytes().await.unwrap();
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["content-length"], bytes.len().to_string().as_str());
    assert_eq!(headers["accept-ranges"], "bytes");
    assert!(headers["cache-control"].to_str().unwrap().starts_with("private, max-age="));
    let part = gw.client.get(&url).header("Range", "bytes=8-15").send().await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], format!("bytes 8-15/{}", bytes.len()).as_str());
    assert_eq!(part.bytes().await.unwrap(), bytes.slice(8..16));
    let tail = gw.client.get(&url).header("Range", "bytes=-4").send().await.unwrap();
    assert_eq!(tail.bytes().await.unwrap(), bytes.slice(bytes.len() - 4..));
    let beyond = gw.client.get(&url).header("Range", format!("bytes={}-", bytes.len() + 10)).send().await.unwrap();
    assert_eq!(error_code(beyond).await, (416, "range_not_satisfiable".into()));
    // Tampered, expired, half-signed, or not signed and no credentials.
    let plain = format!("{}/api/media/{media_ref}", gw.url);
    let expires = switchyard::clock::now_unix() - 5;
    let stale = gw.state.sessions.sign_media(&workspace, &media_ref, expires);
    for (bad, status, code) in [
        (url.replace("sig=", "sig=A"), 403, "invalid_signature"),
        (format!("{plain}?expires={expires}&sig={stale}"), 403, "expired_url"),
        (format!("{plain}?expires=99999999999&sig={stale}"), 403, "invalid_signature"),
        (format!("{plain}?sig={stale}"), 400, "invalid_field"),
        (plain.clone(), 401, "missing_api_key"),
        (url.replace(&media_ref, "med_000000000000000000000000"), 403, "invalid_signature"),
    ] {
        let response = gw.client.get(&bad).send().await.unwrap();
        assert_eq!(error_code(response).await, (status, code.into()), "{bad}");
    }
    // With a key, the plain path keeps working.
    assert_eq!(gw.client.get(&plain).header("X-API-Key", &key).send().await.unwrap().status(), 200);

    // CORS: a preflight from the allowed origin needs no credentials; other origins get no CORS headers; errors
    // carry them too (or the page could not read them).
    let preflight = gw
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/api/v1/task", gw.url))
        .header("Origin", ORIGIN)
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-allow-origin"], ORIGIN);
    assert!(preflight.headers()["access-control-allow-headers"].to_str().unwrap().contains("authorization"));
    let foreign = gw
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/api/v1/task", gw.url))
        .header("Origin", "http://evil.example.test")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert!(foreign.headers().get("access-control-allow-origin").is_none());
    let refused = gw.client.post(format!("{}/api/v1/task", gw.url)).header("Origin", ORIGIN).json(&body).send();
    let refused = refused.await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["access-control-allow-origin"], ORIGIN);
    let ok = gw.client.post(format!("{}/api/v1/task", gw.url)).bearer_auth(&key).header("Origin", ORIGIN).json(&body);
    let ok = ok.send().await.unwrap();
    let exposed = ok.headers()["access-control-expose-headers"].to_str().unwrap().to_owned();
    assert!(exposed.contains("x-ratelimit-remaining") && exposed.contains("retry-after"), "{exposed}");
    assert!(ok.headers()["x-request-id"].to_str().unwrap().starts_with("req_"));
    let echoed = gw.client.get(format!("{}/healthz", gw.url)).header("X-Request-Id", "trace-42").send().await.unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "trace-42");
    gw.stop().await;
}
