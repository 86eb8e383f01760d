//! Tasks with weighted revisions (000) end to end against the mock upstreams: definitions through the admin API,
//! revision selection (weight, session, id, tag) with live weight changes, templates, every output format (json
//! with its schema and repair, text, csv, pdf parsed back with pdftotext, image, audio), fallbacks, the bad
//! paths, and the per-revision statistics of an A/B test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "mock/media.rs"]
mod media_mock;

use common::mock::{Fault, MockConfig, MockServer};
use common::{error_code, mock_env, Gateway};
use media_mock::MediaMock;
use reqwest::Method;
use serde_json::{json, Value};

struct Setup {
    mock: MockServer,
    media: MediaMock,
    gw: Gateway,
}

async fn setup_with(tweak: impl FnOnce(&mut switchyard::config::Config)) -> Setup {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let media = MediaMock::start().await.unwrap();
    let mut env = mock_env(&mock);
    env.insert("BFL_BASE_URL".into(), media.url());
    env.insert("BFL_API_KEY".into(), "bfl-test".into());
    env.insert("ELEVENLABS_BASE_URL".into(), media.url());
    env.insert("ELEVENLABS_API_KEY".into(), "xi-test".into());
    let gw = Gateway::start(env, |c| {
        c.upstream.poll_interval_ms = 5;
        c.pool.retry_base_ms = 1;
        tweak(c);
    })
    .await;
    Setup { mock, media, gw }
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

async fn put_task(gw: &Gateway, slug: &str, task: Value) -> Value {
    let response = gw.admin(Method::PUT, &format!("/admin/tasks/{slug}")).json(&task).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

async fn run(gw: &Gateway, slug: &str, query: &str, input: Value) -> reqwest::Response {
    gw.post(&format!("/api/v1/tasks/{slug}/run{query}")).json(&json!({ "task_input": input })).send().await.unwrap()
}

async fn run_ok(gw: &Gateway, slug: &str, query: &str, input: Value) -> Value {
    let response = run(gw, slug, query, input).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

fn revision(id: &str, weight: u32, model: &str, prompt: &str) -> Value {
    json!({"id": id, "weight": weight, "model": model, "user_prompt": prompt})
}

fn text_task(revisions: Vec<Value>) -> Value {
    json!({"description": "Translate", "output_format": "text", "revisions": revisions})
}

/// The user message the mock received last.
fn last_user_text(mock: &MockServer) -> String {
    let body = mock.last_request().unwrap().body;
    let messages = body["messages"].as_array().unwrap();
    let user = messages.iter().rev().find(|m| m["role"] == "user").unwrap();
    match &user["content"] {
        Value::String(text) => text.clone(),
        parts => parts[0]["text"].as_str().unwrap().to_owned(),
    }
}

#[actix_web::test]
async fn a_text_task_runs_its_revision_with_the_input_filled_in() {
    let Setup { mock, gw, .. } = setup().await;
    let mut rev = revision("v1", 1, "gpt-4", "Translate {{text}} into {{language}}.");
    rev["tag"] = json!("stable");
    rev["system_prompt"] = json!("You are a translator for {{audience}}.");
    rev["params"] = json!({"temperature": 0.2, "max_tokens": 50});
    put_task(&gw, "translate", text_task(vec![rev])).await;
    let input = json!({"text": "Good morning", "language": "French", "audience": "tourists"});
    let answer = run_ok(&gw, "translate", "?reporting_group=cohort-a", input.clone()).await;
    assert_eq!(answer["object"], "task.run");
    assert_eq!(answer["task"], "translate");
    assert_eq!(answer["revision"], json!({"id": "v1", "tag": "stable"}));
    assert_eq!(answer["output_format"], "text");
    assert_eq!(answer["input"], input, "the input comes back for audit");
    assert_eq!(answer["reporting_group"], "cohort-a");
    assert_eq!(answer["metadata"]["model"], "gpt-4");
    assert!(answer["metadata"]["credits_charged"].as_f64().unwrap() > 0.0);
    assert!(answer["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(answer["metadata"]["tokens"], answer["usage"]);
    let sent = mock.last_request().unwrap().body;
    assert_eq!(sent["messages"][0], json!({"role": "system", "content": "You are a translator for tourists."}));
    assert_eq!(last_user_text(&mock), "Translate Good morning into French.");
    assert_eq!(sent["temperature"], 0.2);
    assert_eq!(sent["max_tokens"], 50);
    assert_eq!(answer["output"], common::mock::reply_text("Translate Good morning into French.", 12));
    // The usage record names the task and the revision.
    let summary: Value =
        gw.get("/api/billing/usage/summary?group_by=revision").send().await.unwrap().json().await.unwrap();
    assert_eq!(summary["data"][0]["key"], "v1", "{summary}");
    let tasks: Value = gw.get("/api/v1/tasks").send().await.unwrap().json().await.unwrap();
    let listed = tasks["data"].as_array().unwrap().iter().find(|t| t["slug"] == "translate").unwrap().clone();
    assert_eq!(listed["variables"], json!(["text", "language", "audience"]));
    gw.stop().await;
}

#[actix_web::test]
async fn missing_variables_are_named_and_input_values_are_never_expanded() {
    let Setup { mock, gw, .. } = setup().await;
    put_task(&gw, "translate", text_task(vec![revision("v1", 1, "gpt-4", "Translate {{text}} into {{language}}.")]))
        .await;
    let before = gw.wallet(&gw.key).await;
    let response = run(&gw, "translate", "", json!({"other": 1})).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_variable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("`text`") && message.contains("`language`"), "{message}");
    // A value that looks like a placeholder is data.
    run_ok(&gw, "translate", "", json!({"text": "{{language}}", "language": "{{text}} and {{secret}}"})).await;
    assert_eq!(last_user_text(&mock), "Translate {{language}} into {{text}} and {{secret}}.");
    // Numbers and objects are inserted as JSON.
    run_ok(&gw, "translate", "", json!({"text": 42, "language": {"code": "fr"}})).await;
    assert_eq!(last_user_text(&mock), "Translate 42 into {\"code\":\"fr\"}.");
    let calls = mock.calls();
    // The wrong body shapes.
    let response = gw
        .post("/api/v1/tasks/translate/run")
        .json(&json!({"input_params": {"text": "x", "language": "y"}}))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_field");
    assert!(body["error"]["message"].as_str().unwrap().contains("task_input"));
    let response = gw.post("/api/v1/tasks/translate/run").json(&json!({"task_input": "text"})).send().await.unwrap();
    assert_eq!(error_code(response).await.0, 400);
    assert_eq!(error_code(run(&gw, "nope", "", json!({})).await).await, (404, "not_found".to_owned()));
    let response = run(&gw, "translate", "?revision_id=v9", json!({"text": "a", "language": "b"})).await;
    assert_eq!(error_code(response).await, (404, "not_found".to_owned()));
    let response = run(&gw, "translate", "?revision_tag=beta", json!({"text": "a", "language": "b"})).await;
    assert_eq!(error_code(response).await, (404, "not_found".to_owned()));
    assert_eq!(mock.calls(), calls, "nothing reached the provider");
    let after = gw.settled(&gw.key).await;
    assert!(after.0 < before.0 && after.1 == 0);
    gw.stop().await;
}

#[actix_web::test]
async fn weights_shift_traffic_live_sessions_stick_and_tags_and_ids_pick() {
    let Setup { gw, .. } = setup().await;
    let mut b = revision("b", 0, "sim-chat", "B: {{q}}");
    b["tag"] = json!("candidate");
    let mut old = revision("old", 5, "sim-chat", "Old: {{q}}");
    old["active"] = json!(false);
    put_task(&gw, "ab", text_task(vec![revision("a", 100, "sim-chat", "A: {{q}}"), b, old])).await;
    let revision_of = |answer: Value| answer["revision"]["id"].as_str().unwrap().to_owned();
    for _ in 0..10 {
        assert_eq!(revision_of(run_ok(&gw, "ab", "", json!({"q": "x"})).await), "a");
    }
    // A rollout step: the weights change, and the very next runs follow.
    let patch = |id: &str, body: Value| gw.admin(Method::PATCH, &format!("/admin/tasks/ab/revisions/{id}")).json(&body);
    assert_eq!(patch("b", json!({"weight": 100})).send().await.unwrap().status(), 200);
    assert_eq!(patch("a", json!({"weight": 0})).send().await.unwrap().status(), 200);
    for _ in 0..10 {
        assert_eq!(revision_of(run_ok(&gw, "ab", "", json!({"q": "x"})).await), "b");
    }
    // Half and half: a session keeps its revision.
    patch("a", json!({"weight": 50})).send().await.unwrap();
    patch("b", json!({"weight": 50})).send().await.unwrap();
    let mut seen = std::collections::HashSet::new();
    for session in ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8"] {
        let mut revisions = std::collections::HashSet::new();
        for _ in 0..4 {
            let answer: Value = gw
                .post("/api/v1/tasks/ab/run")
                .header("X-Session-Id", session)
                .json(&json!({"task_input": {"q": "x"}}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            revisions.insert(revision_of(answer));
        }
        assert_eq!(revisions.len(), 1, "session {session} moved between revisions");
        seen.extend(revisions);
    }
    assert_eq!(seen.len(), 2, "eight sessions all landed on one revision of a 50/50 split");
    // Tags and ids; an inactive revision is not run even by id.
    assert_eq!(revision_of(run_ok(&gw, "ab", "?revision_tag=candidate", json!({"q": "x"})).await), "b");
    assert_eq!(revision_of(run_ok(&gw, "ab", "?revision_id=a", json!({"q": "x"})).await), "a");
    assert_eq!(run(&gw, "ab", "?revision_id=old", json!({"q": "x"})).await.status(), 404);
    // Bad weights are refused: all zero, or negative.
    patch("a", json!({"weight": 0})).send().await.unwrap();
    let response = patch("b", json!({"weight": 0})).send().await.unwrap();
    assert_eq!(error_code(response).await.0, 400);
    let response = patch("b", json!({"weight": -1})).send().await.unwrap();
    assert_eq!(error_code(response).await.0, 400);
    // Changes are stored: a restart loads them.
    let catalogue = switchyard_actors::Catalogue::builtin().unwrap();
    let reloaded = switchyard::tasks::load("", &catalogue, &gw.state.store).await.unwrap();
    let task = reloaded.load().get("", "ab").cloned().unwrap();
    assert_eq!(task.revision("b").unwrap().weight, 50);
    gw.stop().await;
}

#[actix_web::test]
async fn json_answers_are_validated_repaired_once_then_refused() {
    let Setup { mock, gw, .. } = setup().await;
    let input = json!({"text": "Jane Doe, CTO at Acme, jane@acme.io"});
    let good = r#"{"name": "Jane Doe", "email": "jane@acme.io", "company": "Acme", "role": "CTO"}"#;
    // Valid at once.
    mock.push_reply(good);
    let answer = run_ok(&gw, "extract-contact", "", input.clone()).await;
    assert_eq!(answer["output"]["email"], "jane@acme.io");
    assert_eq!(answer["metadata"]["repaired"], false);
    assert_eq!(mock.last_request().unwrap().body["response_format"], json!({"type": "json_object"}));
    // Prose first, then valid: repaired, and both calls charged.
    mock.push_reply("Sure! Jane Doe works at Acme.");
    mock.push_reply(&format!("```json\n{good}\n```"));
    let before = gw.settled(&gw.key).await.0;
    let answer = run_ok(&gw, "extract-contact", "", input.clone()).await;
    assert_eq!(answer["metadata"]["repaired"], true);
    assert_eq!(answer["output"]["name"], "Jane Doe");
    let repair = mock.last_request().unwrap().body;
    let messages = repair["messages"].as_array().unwrap();
    assert_eq!(messages[messages.len() - 2]["content"], "Sure! Jane Doe works at Acme.");
    assert!(messages.last().unwrap()["content"].as_str().unwrap().contains("not valid"));
    let charged = (answer["metadata"]["credits_charged"].as_f64().unwrap() * 1000.0).round() as i64;
    assert_eq!(before - gw.settled(&gw.key).await.0, charged, "the two calls, reported as one run's cost");
    // A schema violation twice: 502 invalid_model_output.
    mock.push_reply(r#"{"name": "Jane"}"#);
    mock.push_reply(r#"{"name": "Jane", "email": "not an email"}"#);
    let response = run(&gw, "extract-contact", "", input).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_model_output", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("email"), "{body}");
    gw.stop().await;
}

fn pdftotext(pdf: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.pdf");
    std::fs::write(&path, pdf).unwrap();
    let out = std::process::Command::new("pdftotext")
        .args([path.to_str().unwrap(), "-"])
        .output()
        .expect("pdftotext is needed for the pdf task test (make setup installs poppler-utils)");
    assert!(out.status.success(), "pdftotext: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[actix_web::test]
async fn csv_and_pdf_answers_become_files() {
    let Setup { mock, gw, .. } = setup().await;
    put_task(
        &gw,
        "inventory",
        json!({"output_format": "csv", "revisions": [revision("v1", 1, "gpt-4", "List the items in {{text}}")]}),
    )
    .await;
    mock.push_reply("item,qty\napple,3\n\"pear, green\",5\n");
    let answer = run_ok(&gw, "inventory", "", json!({"text": "the basket"})).await;
    assert_eq!(answer["output"], "item,qty\napple,3\n\"pear, green\",5");
    let file = &answer["files"][0];
    assert_eq!(file["content_type"], "text/csv");
    let csv = gw.client.get(file["url"].as_str().unwrap()).bearer_auth(&gw.key).send().await.unwrap();
    let text = csv.text().await.unwrap();
    let rows: Vec<Vec<String>> = csv_rows(&text);
    assert_eq!(rows, vec![vec!["apple", "3"], vec!["pear, green", "5"]]);
    // Not CSV twice: refused.
    mock.push_reply("a,b\n1,2,3\n");
    mock.push_reply("a,b\n1\n");
    let response = run(&gw, "inventory", "", json!({"text": "x"})).await;
    assert_eq!(error_code(response).await, (502, "invalid_model_output".to_owned()));
    // The built-in pdf task: markdown in, a real PDF out, its text readable again.
    let minutes =
        "# Minutes of the budget meeting\n\nAttendees: Ana, Bo.\n\n## Decisions\n\n- The budget is approved.\n\n"
            .to_owned()
            + &"Follow-up items were discussed at length. ".repeat(120);
    mock.push_reply(&minutes);
    let answer = run_ok(&gw, "meeting-minutes", "", json!({"notes": "budget ok", "date": "2026-11-22"})).await;
    let file = &answer["files"][0];
    assert_eq!(file["content_type"], "application/pdf");
    let pdf = gw.client.get(file["url"].as_str().unwrap()).bearer_auth(&gw.key).send().await.unwrap();
    let text = pdftotext(&pdf.bytes().await.unwrap());
    assert!(text.contains("Minutes of the budget meeting"), "{text}");
    assert!(text.contains("The budget is approved."), "{text}");
    assert!(text.matches("Follow-up items were discussed").count() >= 100, "the long text was kept across pages");
    assert!(text.contains('\u{c}'), "more than one page");
    gw.stop().await;
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    // A small reader for the test: quoted fields with commas, no embedded quotes.
    text.lines()
        .skip(1)
        .map(|line| {
            let mut fields = Vec::new();
            let mut current = String::new();
            let mut quoted = false;
            for c in line.chars() {
                match c {
                    '"' => quoted = !quoted,
                    ',' if !quoted => fields.push(std::mem::take(&mut current)),
                    c => current.push(c),
                }
            }
            fields.push(current);
            fields
        })
        .collect()
}

#[actix_web::test]
async fn image_and_audio_tasks_render_their_template_into_the_prompt() {
    let Setup { media, gw, .. } = setup().await;
    let mut image = revision("v1", 1, "flux-1-schnell", "A poster of {{subject}} in {{style}} style");
    image["params"] = json!({"width": 512, "height": 256});
    put_task(&gw, "poster", json!({"output_format": "image", "revisions": [image]})).await;
    let answer = run_ok(&gw, "poster", "", json!({"subject": "a lighthouse", "style": "art deco"})).await;
    assert_eq!(answer["files"][0]["content_type"], "image/png");
    assert!(media.calls("/v1/flux-schnell") >= 1);
    let b64 = answer["output"]["b64_json"].as_str().unwrap();
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    assert_eq!(&png[16..24], &[0, 0, 2, 0, 0, 0, 1, 0], "512 x 256");
    let mut speech = revision("v1", 1, "eleven-labs-tts", "Hello {{name}}, your order {{order}} has shipped.");
    speech["params"] = json!({"voice": "21m00Tcm4TlvDq8ikWAM", "output_format": "wav_16000"});
    put_task(&gw, "notify", json!({"output_format": "audio", "revisions": [speech]})).await;
    let answer = run_ok(&gw, "notify", "", json!({"name": "Ana", "order": "A-17"})).await;
    assert_eq!(media.last_request().unwrap().json()["text"], "Hello Ana, your order A-17 has shipped.");
    assert_eq!(answer["files"][0]["content_type"], "audio/wav");
    let seconds = answer["output"]["duration_seconds"].as_f64().unwrap();
    assert!((seconds - media_mock::tts_seconds("Hello Ana, your order A-17 has shipped.")).abs() < 0.01);
    // The usage records carry the task and revision for image and speech too.
    let summary: Value = gw.get("/api/billing/usage/summary?group_by=task").send().await.unwrap().json().await.unwrap();
    let keys: Vec<&str> = summary["data"].as_array().unwrap().iter().filter_map(|g| g["key"].as_str()).collect();
    assert_eq!(keys, ["notify", "poster"]);
    gw.stop().await;
}

#[actix_web::test]
async fn reporting_group_and_manual_fallback_may_come_in_the_body_and_win_over_the_query() {
    let Setup { gw, mock: _mock, .. } = setup().await;
    let mut rev = revision("v1", 1, "gpt-4", "Say {{x}}");
    rev["fallback_model"] = json!("claude-3-haiku");
    put_task(&gw, "say", text_task(vec![rev])).await;
    let body = json!({"task_input": {"x": "hi"}, "reporting_group": "cohort-b", "use_fallback_model": true});
    let response = gw.post("/api/v1/tasks/say/run?reporting_group=cohort-a").json(&body).send().await.unwrap();
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["reporting_group"], "cohort-b");
    assert_eq!(answer["metadata"]["fallback"]["reason"], "manual");
    assert_eq!(answer["metadata"]["model"], "claude-3-haiku");
    // The same fields as multipart text; a flag that is not a boolean is refused by name.
    let form = reqwest::multipart::Form::new()
        .text("task_input", r#"{"x": "hi"}"#)
        .text("reporting_group", "cohort-c")
        .text("use_fallback_model", "false");
    let response = gw.post("/api/v1/tasks/say/run").multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        (answer["reporting_group"].as_str(), answer["metadata"]["model"].as_str()),
        (Some("cohort-c"), Some("gpt-4"))
    );
    let bad = json!({"task_input": {"x": "hi"}, "use_fallback_model": "yes"});
    let response = gw.post("/api/v1/tasks/say/run").json(&bad).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["param"], "use_fallback_model", "{error}");
    gw.stop().await;
}

#[actix_web::test]
async fn a_failing_model_falls_back_to_the_revisions_backup() {
    let Setup { mock, gw, .. } = setup_with(|c| c.pool.max_retries = 0).await;
    let mut rev = revision("v1", 1, "gpt-4", "Say {{x}}");
    rev["fallback_model"] = json!("claude-3-haiku");
    put_task(&gw, "say", text_task(vec![rev])).await;
    mock.set_fault(Fault::Status { status: 500, retry_after: None }, Some(1));
    let answer = run_ok(&gw, "say", "", json!({"x": "hi"})).await;
    assert_eq!(answer["metadata"]["model"], "claude-3-haiku");
    assert_eq!(answer["metadata"]["fallback"]["used"], true);
    assert_eq!(answer["metadata"]["fallback"]["primary_model"], "gpt-4");
    assert_eq!(mock.last_request().unwrap().path, "/v1/messages");
    // Manual fallback: straight to the backup.
    let answer = run_ok(&gw, "say", "?use_fallback_model=true", json!({"x": "hi"})).await;
    assert_eq!(answer["metadata"]["fallback"]["reason"], "manual");
    let metrics = gw.client.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"switchyard_task_runs_total{outcome="fallback",revision="v1",task="say"} 2"#),
        "{metrics}"
    );
    gw.stop().await;
}

#[actix_web::test]
async fn a_task_needing_an_image_sends_it_to_the_vision_model() {
    let Setup { mock, gw, .. } = setup().await;
    put_task(
        &gw,
        "describe",
        json!({"output_format": "text", "image_required": true,
            "revisions": [revision("v1", 1, "gpt-4-turbo", "Describe this picture for {{audience}}")]}),
    )
    .await;
    let response = run(&gw, "describe", "", json!({"audience": "children"})).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["param"], "image", "{body}");
    let png = media_mock::png(16, 16, 3);
    let form = reqwest::multipart::Form::new().text("task_input", r#"{"audience": "children"}"#).part(
        "image",
        reqwest::multipart::Part::bytes(png.clone()).file_name("cat.png").mime_str("image/png").unwrap(),
    );
    let response = gw.post("/api/v1/tasks/describe/run").multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let sent = mock.last_request().unwrap().body;
    let parts = sent["messages"].as_array().unwrap().last().unwrap()["content"].as_array().unwrap().clone();
    assert_eq!(parts[0]["text"], "Describe this picture for children");
    use base64::Engine as _;
    let url = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(&png));
    assert_eq!(parts[1]["image_url"]["url"], url);
    // Text bytes are not an image.
    let form = reqwest::multipart::Form::new().text("task_input", r#"{"audience": "x"}"#).part(
        "image",
        reqwest::multipart::Part::bytes(b"hello".to_vec()).file_name("x.png").mime_str("image/png").unwrap(),
    );
    let response = gw.post("/api/v1/tasks/describe/run").multipart(form).send().await.unwrap();
    assert_eq!(error_code(response).await.0, 415);
    gw.stop().await;
}

#[actix_web::test]
async fn a_task_whose_model_left_the_catalogue_says_so() {
    // The operator's task file names gpt-4; the operator's catalogue no longer has it.
    let dir = tempfile::tempdir().unwrap();
    let file = "output_format = \"text\"\n[[revisions]]\nid = \"v1\"\nmodel = \"gpt-4\"\nuser_prompt = \"Say {{x}}\"\n";
    std::fs::write(dir.path().join("legacy.toml"), file).unwrap();
    let catalogue = switchyard_actors::Catalogue::BUILTIN.replace("[models.gpt-4]", "[models.gpt-4-retired]");
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let tasks_dir = dir.path().to_string_lossy().into_owned();
    let gw = Gateway::with_catalogue(mock_env(&mock), &catalogue, |c| c.tasks.dir = tasks_dir).await;
    let before = gw.wallet(&gw.key).await;
    let response = run(&gw, "legacy", "", json!({"x": "hi"})).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (503, Some("provider_unavailable")), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("`gpt-4`") && message.contains("`v1`"), "{message}");
    assert_eq!(mock.calls(), 0);
    assert_eq!(gw.wallet(&gw.key).await, before);
    // Saving such a task through the admin API is refused.
    let definition = text_task(vec![revision("v1", 1, "gpt-4", "Say {{x}}")]);
    let response = gw.admin(Method::PUT, "/admin/tasks/legacy").json(&definition).send().await.unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["param"], "revisions[0].model", "{body}");
    gw.stop().await;
}

#[actix_web::test]
async fn text_tasks_stream_and_other_formats_do_not() {
    let Setup { gw, .. } = setup().await;
    let response =
        run(&gw, "summarize", "?revision_tag=demo&stream=true", json!({"text": "A long story.", "sentences": 2})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-switchyard-revision"], "demo");
    let events = common::sse_data(&response.text().await.unwrap());
    assert_eq!(events.last().unwrap(), "[DONE]");
    let response = run(&gw, "extract-contact", "?stream=true", json!({"text": "x"})).await;
    assert_eq!(error_code(response).await, (400, "invalid_field".to_owned()));
    gw.stop().await;
}

#[actix_web::test]
async fn revision_stats_read_off_an_ab_test() {
    let Setup { mock, gw, .. } = setup_with(|c| c.pool.max_retries = 0).await;
    put_task(
        &gw,
        "ab",
        text_task(vec![revision("a", 1, "gpt-4", "A {{q}}"), revision("b", 1, "gpt-3.5-turbo", "B {{q}}")]),
    )
    .await;
    for _ in 0..3 {
        run_ok(&gw, "ab", "?revision_id=a", json!({"q": "x"})).await;
    }
    run_ok(&gw, "ab", "?revision_id=b", json!({"q": "x"})).await;
    mock.set_fault(Fault::Status { status: 500, retry_after: None }, Some(10));
    assert_eq!(run(&gw, "ab", "?revision_id=b", json!({"q": "x"})).await.status(), 502);
    let stats: Value = gw.get("/api/v1/tasks/ab/revisions/stats").send().await.unwrap().json().await.unwrap();
    let by = |id: &str| stats["revisions"].as_array().unwrap().iter().find(|r| r["revision"] == id).unwrap().clone();
    let (a, b) = (by("a"), by("b"));
    assert_eq!(a["requests"], 3);
    assert_eq!(a["errors"], 0);
    assert!(a["latency_ms_p50"].is_u64() && a["latency_ms_p95"].is_u64());
    assert!(a["mean_credits"].as_f64().unwrap() > b["mean_credits"].as_f64().unwrap(), "gpt-4 costs more");
    assert_eq!(b["requests"], 2);
    assert_eq!(b["errors"], 1);
    assert_eq!(b["error_rate"], 0.5);
    let response = gw.get("/api/v1/tasks/nope/revisions/stats").send().await.unwrap();
    assert_eq!(error_code(response).await.0, 404);
    let response = gw.get("/api/v1/tasks/ab/revisions/stats?from=yesterday").send().await.unwrap();
    assert_eq!(error_code(response).await.0, 400);
    gw.stop().await;
}

#[actix_web::test]
async fn the_admin_task_api_checks_definitions_and_owns_them_per_workspace() {
    let Setup { gw, .. } = setup().await;
    let cases = [
        (json!({"output_format": "text", "revisions": [revision("v1", 1, "flux-1-pro", "x")]}), "revisions[0].model"),
        (
            json!({"output_format": "text", "revisions": [revision("v1", 1, "gpt-4", "x {{ }}")]}),
            "revisions[0].user_prompt",
        ),
        (json!({"output_format": "xml", "revisions": []}), "output_format"),
        (json!({"output_format": "text", "schema": {"type": "object"}, "revisions": []}), "schema"),
        (json!({"output_format": "json", "schema": {"type": 12}, "revisions": []}), "schema"),
        (
            json!({"output_format": "text", "revisions": [{"id": "v1", "model": "gpt-4", "user_prompt": "x",
                "params": {"colour": "red"}}]}),
            "revisions[0].params",
        ),
    ];
    for (body, param) in cases {
        let response = gw.admin(Method::PUT, "/admin/tasks/bad").json(&body).send().await.unwrap();
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["param"], param, "{body}: {error}");
    }
    // A workspace's own task shadows the shared one for that workspace only.
    let (workspace, key) = gw.workspace("100", 1000, 10, 1_000_000).await;
    let own = text_task(vec![revision("mine", 1, "sim-chat", "Own {{q}}")]);
    let response = gw
        .admin(Method::PUT, &format!("/admin/tasks/summarize?workspace_id={workspace}"))
        .json(&own)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mine: Value = gw
        .client
        .post(format!("{}/api/v1/tasks/summarize/run", gw.url))
        .bearer_auth(&key)
        .json(&json!({"task_input": {"q": "x"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["revision"]["id"], "mine");
    let shared = run_ok(&gw, "summarize", "?revision_tag=demo", json!({"text": "t", "sentences": 1})).await;
    assert_eq!(shared["revision"]["id"], "demo");
    // Revisions are added and conflicts refused; a deleted task is gone.
    let added = gw
        .admin(Method::POST, "/admin/tasks/summarize/revisions")
        .json(&revision("v3", 0, "sim-chat", "Third {{text}} {{sentences}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);
    let again = gw
        .admin(Method::POST, "/admin/tasks/summarize/revisions")
        .json(&revision("v3", 0, "sim-chat", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    assert_eq!(gw.admin(Method::DELETE, "/admin/tasks/summarize").send().await.unwrap().status(), 204);
    assert_eq!(run(&gw, "summarize", "", json!({"text": "t", "sentences": 1})).await.status(), 404);
    assert_eq!(gw.admin(Method::DELETE, "/admin/tasks/summarize").send().await.unwrap().status(), 404);
    // A workspace key never reaches the admin API.
    let response = gw.client.get(format!("{}/admin/tasks", gw.url)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(error_code(response).await, (403, "admin_only".to_owned()));
    gw.stop().await;
}
