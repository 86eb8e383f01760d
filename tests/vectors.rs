//! Runs API (002) with the real embedding model and the embedded Qdrant engine: index then search on the fixture
//! corpus, scope isolation, concurrency, billing, the OpenAI embeddings face, the marketplace, and every
//! validation rule of 002.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{error_code, models_dir, with_embeddings, Gateway};
use serde_json::{json, Value};
use std::collections::HashMap;

const MODEL: &str = "all-minilm-l6-v2";

fn corpus() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/corpus.jsonl")).unwrap();
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn queries() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/queries.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

async fn gateway() -> Option<Gateway> {
    let dir = models_dir()?;
    Some(
        Gateway::start(HashMap::from([("SWITCHYARD_ADMIN_KEY".into(), common::ADMIN_KEY.into())]), |c| {
            with_embeddings(c, &dir)
        })
        .await,
    )
}

async fn post_run(gw: &Gateway, key: &str, body: Value) -> reqwest::Response {
    gw.client.post(format!("{}/api/runs", gw.url)).bearer_auth(key).json(&body).send().await.unwrap()
}

async fn run_ok(gw: &Gateway, key: &str, body: Value) -> Value {
    let response = post_run(gw, key, body).await;
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    answer
}

async fn index(gw: &Gateway, key: &str, scope: &str, documents: Value) -> Value {
    run_ok(gw, key, json!({"model": MODEL, "mode": "index", "scope": scope, "input": {"documents": documents}})).await
}

async fn search(gw: &Gateway, key: &str, scope: &str, query: &str, top_k: u64, filter: Value) -> Vec<Value> {
    let answer = run_ok(
        gw,
        key,
        json!({"model": MODEL, "mode": "search", "scope": scope, "input": {"query": query, "top_k": top_k, "filter": filter}}),
    )
    .await;
    answer["output"]["matches"].as_array().unwrap().clone()
}

async fn knowledge_bases(gw: &Gateway, key: &str) -> Vec<Value> {
    let listed: Value = gw
        .client
        .get(format!("{}/api/knowledge-bases", gw.url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    listed["data"].as_array().unwrap().clone()
}

fn milli(value: &Value) -> i64 {
    (value.as_f64().unwrap() * 1000.0).round() as i64
}

#[actix_web::test]
async fn index_then_search_finds_the_relevant_document_first() {
    let Some(gw) = gateway().await else { return };
    let key = gw.key.clone();
    let before = gw.settled(&key).await.0;
    let answer = index(&gw, &key, "corpus", Value::Array(corpus())).await;
    assert_eq!(answer["object"], "run");
    assert_eq!(answer["status"], "succeeded");
    assert_eq!(answer["mode"], "index");
    assert_eq!(answer["scope"], "corpus");
    assert_eq!(answer["output"]["documents"], 40);
    let chunks = answer["output"]["chunks"].as_i64().unwrap();
    assert!(chunks > 40, "the long documents are chunked: {chunks}");
    // Priced per input: one millicredit per chunk embedded, charged exactly once.
    assert_eq!(milli(&answer["credits_charged"]), chunks);
    assert_eq!(before - gw.settled(&key).await.0, chunks);

    for q in queries() {
        let matches = search(&gw, &key, "corpus", q["query"].as_str().unwrap(), 3, q["filter"].clone()).await;
        assert_eq!(matches[0]["id"], q["expected"], "{}: {matches:?}", q["query"]);
        let score = matches[0]["score"].as_f64().unwrap();
        assert!(score > 0.2 && score <= 1.0001, "{score}");
        assert!(!matches[0]["text"].as_str().unwrap().is_empty());
        assert!(matches[0]["metadata"]["topic"].is_string());
        if let Some(topic) = q["filter"]["topic"].as_str() {
            assert!(matches.iter().all(|m| m["metadata"]["topic"] == topic), "{matches:?}");
        }
        // One match per document, best first.
        let ids: std::collections::HashSet<_> = matches.iter().map(|m| m["id"].to_string()).collect();
        assert_eq!(ids.len(), matches.len());
        assert!(matches.windows(2).all(|w| w[0]["score"].as_f64() >= w[1]["score"].as_f64()));
    }

    // Knowledge bases count documents and points; indexing a long document again with a short text replaces it.
    let listed = knowledge_bases(&gw, &key).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["model"], MODEL);
    assert_eq!(listed[0]["scope"], "corpus");
    assert_eq!(listed[0]["documents"], 40);
    assert_eq!(listed[0]["points"], chunks);
    assert!(listed[0]["updated_at"].as_str().unwrap().starts_with("20"));
    let long = corpus().into_iter().find(|d| d["id"] == "rust-borrow-checker").unwrap();
    let long_chunks = switchyard_actors::chunk::chunk_text(long["text"].as_str().unwrap(), 1000, 200).len() as i64;
    index(&gw, &key, "corpus", json!([{"id": "rust-borrow-checker", "text": "Ownership rules, in short.", "metadata": {"topic": "technology"}}])).await;
    let listed = knowledge_bases(&gw, &key).await;
    assert_eq!(listed[0]["documents"], 40);
    assert_eq!(listed[0]["points"], chunks - long_chunks + 1);
    gw.stop().await;
}

#[actix_web::test]
async fn scopes_are_isolated_between_workspaces_and_within_one() {
    let Some(gw) = gateway().await else { return };
    let a = gw.key.clone();
    let (_, b) = gw.workspace("100", 600, 8, 100_000).await;
    let doc = |id: &str, text: &str| json!([{"id": id, "text": text}]);
    index(&gw, &a, "shared", doc("a1", "The lighthouse keeper trimmed the lamp wick every evening.")).await;
    index(&gw, &a, "other", doc("x1", "The lighthouse keeper trimmed the lamp wick every evening.")).await;
    index(&gw, &b, "shared", doc("b1", "The lighthouse keeper trimmed the lamp wick every evening.")).await;
    let ids = |matches: Vec<Value>| matches.iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    let q = "who looked after the lamp";
    assert_eq!(ids(search(&gw, &a, "shared", q, 10, Value::Null).await), vec!["a1"]);
    assert_eq!(ids(search(&gw, &a, "other", q, 10, Value::Null).await), vec!["x1"]);
    assert_eq!(ids(search(&gw, &b, "shared", q, 10, Value::Null).await), vec!["b1"]);
    assert!(search(&gw, &b, "other", q, 10, Value::Null).await.is_empty());

    let scopes =
        |listed: Vec<Value>| listed.iter().map(|k| k["scope"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(scopes(knowledge_bases(&gw, &a).await), vec!["other", "shared"]);
    assert_eq!(scopes(knowledge_bases(&gw, &b).await), vec!["shared"]);

    let delete = |key: String, scope: &str| {
        gw.client.delete(format!("{}/api/knowledge-bases/{MODEL}/{scope}", gw.url)).bearer_auth(key).send()
    };
    let response = delete(a.clone(), "shared").await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["points"], 1);
    assert!(search(&gw, &a, "shared", q, 10, Value::Null).await.is_empty());
    assert_eq!(
        ids(search(&gw, &b, "shared", q, 10, Value::Null).await),
        vec!["b1"],
        "b's scope of the same name stays"
    );
    assert_eq!(ids(search(&gw, &a, "other", q, 10, Value::Null).await), vec!["x1"], "a's other scope stays");
    assert_eq!(error_code(delete(a.clone(), "shared").await.unwrap()).await, (404, "not_found".into()));
    assert_eq!(error_code(delete(a.clone(), "bad scope").await.unwrap()).await.1, "invalid_scope");
    let response = gw
        .client
        .delete(format!("{}/api/knowledge-bases/sim-chat/shared", gw.url))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (400, "unsupported_model".into()));
    gw.stop().await;
}

#[actix_web::test]
async fn index_and_search_run_concurrently() {
    let Some(gw) = gateway().await else { return };
    let key = gw.key.clone();
    let docs = corpus();
    index(&gw, &key, "busy", Value::Array(docs[..10].to_vec())).await;
    let mut work = Vec::new();
    for (i, batch) in docs[10..].chunks(5).enumerate() {
        let (gw, key) = (&gw, key.clone());
        let batch = Value::Array(batch.to_vec());
        work.push(Box::pin(async move {
            index(gw, &key, "busy", batch).await;
            let found =
                search(gw, &key, "busy", "How do green plants make their own food out of sunshine?", 1, Value::Null)
                    .await;
            assert_eq!(found[0]["id"], "photosynthesis", "search {i} during indexing");
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>);
    }
    futures::future::join_all(work).await;
    let listed = knowledge_bases(&gw, &key).await;
    assert_eq!(listed[0]["documents"], 40);
    gw.stop().await;
}

#[actix_web::test]
async fn runs_are_billed_once_refused_without_credits_and_replayed_by_idempotency_key() {
    let Some(gw) = gateway().await else { return };
    let (_, poor) = gw.workspace("0.002", 600, 8, 100_000).await;
    // Three documents cost 0.003 credits: refused before anything is embedded or stored.
    let three = json!([{"id": "1", "text": "one"}, {"id": "2", "text": "two"}, {"id": "3", "text": "three"}]);
    let response =
        post_run(&gw, &poor, json!({"model": MODEL, "mode": "index", "scope": "s", "input": {"documents": three}}))
            .await;
    assert_eq!(error_code(response).await, (402, "insufficient_credits".into()));
    assert!(knowledge_bases(&gw, &poor).await.is_empty());
    // The same request twice under one Idempotency-Key: one charge, the first answer replayed.
    let key = gw.key.clone();
    let body = json!({"model": MODEL, "mode": "index", "scope": "idem", "input": {"documents": three}});
    let before = gw.settled(&key).await.0;
    let send = || {
        gw.client
            .post(format!("{}/api/runs", gw.url))
            .bearer_auth(&key)
            .header("idempotency-key", "idx-1")
            .json(&body)
            .send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    let second: Value = send().await.unwrap().json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    assert_eq!(before - gw.settled(&key).await.0, 3);
    // Execute on the embedding model: vectors, unit length, one per text.
    let answer = run_ok(&gw, &key, json!({"model": MODEL, "input": {"texts": ["a cat", "a dog"]}})).await;
    let vectors = answer["output"]["embeddings"].as_array().unwrap();
    assert_eq!(vectors.len(), 2);
    assert_eq!(answer["output"]["dimensions"], 384);
    let norm: f64 = vectors[0].as_array().unwrap().iter().map(|x| x.as_f64().unwrap().powi(2)).sum();
    assert!((norm - 1.0).abs() < 1e-3, "{norm}");
    assert_eq!(milli(&answer["credits_charged"]), 2);
    gw.stop().await;
}

#[actix_web::test]
async fn the_openai_embeddings_face_and_the_marketplace() {
    let Some(gw) = gateway().await else { return };
    let key = gw.key.clone();
    // The model loads on its first use, not at start; it is listed as available all the same.
    let local = gw.state.providers.local().unwrap();
    assert!(local.embedder().err().unwrap().contains("not loaded yet"));
    let listed: Value = gw.get(&format!("/api/marketplace/models/{MODEL}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["available"], true, "{listed}");
    let post = |body: Value| gw.client.post(format!("{}/v1/embeddings", gw.url)).bearer_auth(&key).json(&body).send();
    let answer: Value =
        post(json!({"model": MODEL, "input": ["first text", "second text"]})).await.unwrap().json().await.unwrap();
    assert_eq!(answer["object"], "list");
    assert!(local.embedder().is_ok(), "loaded by the first request");
    assert_eq!(answer["data"][1]["index"], 1);
    assert_eq!(answer["data"][0]["embedding"].as_array().unwrap().len(), 384);
    assert!(answer["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let base64: Value = post(json!({"model": MODEL, "input": "first text", "encoding_format": "base64"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    use base64::Engine as _;
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(base64["data"][0]["embedding"].as_str().unwrap()).unwrap();
    let floats: Vec<f32> = bytes.chunks(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let listed: Vec<f64> =
        answer["data"][0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert!(floats.iter().zip(&listed).all(|(a, b)| (f64::from(*a) - b).abs() < 1e-6));
    for (body, code) in [
        (json!({"model": MODEL, "input": [[1, 2, 3]]}), "invalid_field"),
        (json!({"model": MODEL, "input": ""}), "invalid_field"),
        (json!({"model": MODEL, "input": []}), "invalid_field"),
        (json!({"model": MODEL, "input": "x", "dimensions": 512}), "invalid_field"),
        (json!({"model": MODEL, "input": "x", "encoding_format": "int8"}), "invalid_field"),
        (json!({"model": "sim-chat", "input": "x"}), "unsupported_model"),
        (json!({"model": MODEL}), "missing_field"),
    ] {
        assert_eq!(error_code(post(body.clone()).await.unwrap()).await, (400, code.into()), "{body}");
    }

    let get = |path: &str| gw.client.get(format!("{}{path}", gw.url)).bearer_auth(&key).send();
    let listed: Value = get("/api/marketplace/models?modality=embedding").await.unwrap().json().await.unwrap();
    let data = listed["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["slug"], MODEL);
    assert_eq!(data[0]["modes"], json!(["execute", "index", "search"]));
    assert_eq!(data[0]["pricing"], json!({"per_input": 0.001}));
    assert_eq!(data[0]["limits"]["dimensions"], 384);
    assert_eq!(data[0]["available"], true);
    let searchable: Value = get("/api/marketplace/models?mode=search").await.unwrap().json().await.unwrap();
    assert_eq!(searchable["data"].as_array().unwrap().len(), 1);
    let all: Value = get("/api/marketplace/models").await.unwrap().json().await.unwrap();
    assert_eq!(all["data"].as_array().unwrap().len(), gw.state.catalogue.models.len());
    let sim: Value = get("/api/marketplace/models/sim-chat").await.unwrap().json().await.unwrap();
    assert_eq!(sim["simulator"], true);
    assert_eq!(sim["modes"], json!(["execute"]));
    assert_eq!(sim["limits"]["context_window"], 32768);
    let gpt: Value = get("/api/marketplace/models/gpt-4").await.unwrap().json().await.unwrap();
    assert_eq!(gpt["available"], false);
    assert!(gpt["unavailable_reason"].as_str().unwrap().contains("OPENAI_API_KEY"));
    assert_eq!(error_code(get("/api/marketplace/models/nope").await.unwrap()).await, (404, "not_found".into()));
    assert_eq!(error_code(get("/api/marketplace/models?modality=video").await.unwrap()).await.1, "invalid_field");
    assert_eq!(error_code(get("/api/marketplace/models?mode=train").await.unwrap()).await.1, "invalid_field");
    gw.stop().await;
}

/// `embeddings.preload` loads the model at start.
#[actix_web::test]
async fn preload_loads_the_model_at_start() {
    let Some(dir) = models_dir() else { return };
    let gw = Gateway::start(HashMap::new(), |c| {
        with_embeddings(c, &dir);
        c.embeddings.preload = true;
    })
    .await;
    assert!(gw.state.providers.local().unwrap().embedder().is_ok());
    gw.stop().await;
}

/// Without the model files the gateway still serves; embedding runs say plainly what is missing.
#[actix_web::test]
async fn without_the_model_files_embedding_runs_are_unavailable_and_say_why() {
    let gw = Gateway::start(HashMap::new(), |c| c.embeddings.cache_dir = "/nonexistent/models".into()).await;
    let response =
        post_run(&gw, &gw.key, json!({"model": MODEL, "mode": "search", "scope": "s", "input": {"query": "x"}})).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "provider_unavailable", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("make models"), "{body}");
    let model: Value = gw.get(&format!("/api/marketplace/models/{MODEL}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(model["available"], false);
    assert!(model["unavailable_reason"].as_str().unwrap().contains("missing"), "{model}");
    // Nothing was charged for the refused run.
    assert_eq!(gw.wallet(&gw.key).await.1, 0);
    gw.stop().await;
}

/// Every rule of the REST API document, each refused with its code before anything is embedded or charged.
#[actix_web::test]
async fn run_requests_are_checked_as_the_rest_api_says() {
    let gw = Gateway::start(HashMap::new(), |_| {}).await;
    let key = gw.key.clone();
    let index = |extra: Value| {
        let mut body = json!({"model": MODEL, "mode": "index", "scope": "docs", "input": {"documents": [{"id": "d", "text": "t"}]}});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let search = |input: Value| json!({"model": MODEL, "mode": "search", "scope": "docs", "input": input});
    let long = "x".repeat(65);
    let cases: Vec<(Value, &str, &str)> = vec![
        // scope
        (json!({"model": MODEL, "mode": "index", "input": {"documents": [{"text": "t"}]}}), "invalid_scope", "scope"),
        (index(json!({"scope": ""})), "invalid_scope", "scope"),
        (index(json!({"scope": ".hidden"})), "invalid_scope", "scope"),
        (index(json!({"scope": "-x"})), "invalid_scope", "scope"),
        (index(json!({"scope": "a b"})), "invalid_scope", "scope"),
        (index(json!({"scope": "a/b"})), "invalid_scope", "scope"),
        (index(json!({"scope": long})), "invalid_scope", "scope"),
        (index(json!({"scope": 7})), "invalid_field", "scope"),
        // params must be an object
        (index(json!({"params": "fast"})), "invalid_field", "params"),
        (index(json!({"params": [1]})), "invalid_field", "params"),
        (index(json!({"parameters": {}})), "unknown_field", "parameters"),
        (index(json!({"params": {"batch": 3}})), "unknown_field", "params.batch"),
        // options: only the allowed ones; hardware_tier refused
        (index(json!({"options": {"hardware_tier": "gpu-l4"}})), "forbidden_field", "options.hardware_tier"),
        (index(json!({"options": {"priority": "high"}})), "unknown_field", "options.priority"),
        (index(json!({"options": "x"})), "invalid_field", "options"),
        (index(json!({"options": {"timeout_ms": 0}})), "invalid_field", "options.timeout_ms"),
        // platform-managed fields, anywhere
        (index(json!({"resources": {"gpu": 1}})), "forbidden_field", "resources"),
        (index(json!({"alias": "prod"})), "forbidden_field", "alias"),
        (index(json!({"collection": "c"})), "forbidden_field", "collection"),
        (index(json!({"namespace": "n"})), "forbidden_field", "namespace"),
        (
            index(json!({"input": {"documents": [{"id": "d", "text": "t", "metadata": {"collection": "x"}}]}})),
            "forbidden_field",
            "input.documents[0].metadata.collection",
        ),
        (index(json!({"params": {"namespace": "n"}})), "forbidden_field", "params.namespace"),
        // model, mode, input
        (index(json!({"model": "no-such-model"})), "unsupported_model", "model"),
        (index(json!({"mode": "train"})), "unsupported_mode", "mode"),
        (json!({"model": "sim-chat", "mode": "index", "scope": "docs", "input": {}}), "unsupported_mode", "mode"),
        (
            json!({"model": "eleven-labs-tts", "mode": "search", "scope": "s", "input": {"text": "hi"}}),
            "unsupported_mode",
            "mode",
        ),
        (json!({"model": MODEL, "mode": "index", "scope": "docs"}), "missing_field", "input"),
        (index(json!({"input": ["x"]})), "invalid_field", "input"),
        (index(json!({"colour": "red"})), "unknown_field", "colour"),
        // index input
        (index(json!({"input": {}})), "missing_field", "input.documents"),
        (index(json!({"input": {"documents": []}})), "invalid_field", "input.documents"),
        (index(json!({"input": {"documents": "d"}})), "invalid_field", "input.documents"),
        (index(json!({"input": {"documents": [{"id": "d"}]}})), "missing_field", "input.documents[0].text"),
        (
            index(json!({"input": {"documents": [{"id": "d", "text": "   "}]}})),
            "invalid_field",
            "input.documents[0].text",
        ),
        (
            index(json!({"input": {"documents": [{"id": "d", "text": "t", "media_ref": "med_x"}]}})),
            "invalid_field",
            "input.documents[0]",
        ),
        (
            index(json!({"input": {"documents": [{"id": "d", "text": "a"}, {"id": "d", "text": "b"}]}})),
            "invalid_field",
            "input.documents[1].id",
        ),
        (index(json!({"input": {"documents": [{"id": "", "text": "a"}]}})), "invalid_field", "input.documents[0].id"),
        (
            index(json!({"input": {"documents": [{"id": "d", "text": "a", "title": "T"}]}})),
            "unknown_field",
            "input.documents[0].title",
        ),
        (
            index(json!({"input": {"documents": [{"id": "d", "text": "a", "metadata": {"a": {"b": 1}}}]}})),
            "invalid_field",
            "input.documents[0].metadata.a",
        ),
        (
            index(json!({"input": {"documents": [{"id": "d", "text": "a", "metadata": "m"}]}})),
            "invalid_field",
            "input.documents[0].metadata",
        ),
        (index(json!({"input": {"documents": [{"text": "a"}], "extra": 1}})), "unknown_field", "input.extra"),
        // search input
        (search(json!({})), "missing_field", "input.query"),
        (search(json!({"query": 5})), "invalid_field", "input.query"),
        (search(json!({"query": "  "})), "invalid_field", "input.query"),
        (search(json!({"query": "q", "top_k": 0})), "invalid_field", "input.top_k"),
        (search(json!({"query": "q", "top_k": 101})), "invalid_field", "input.top_k"),
        (search(json!({"query": "q", "top_k": "3"})), "invalid_field", "input.top_k"),
        (search(json!({"query": "q", "filter": {"topic": {"$eq": "x"}}})), "invalid_field", "input.filter"),
        (search(json!({"query": "q", "filter": {"bad key": "x"}})), "invalid_field", "input.filter"),
        (search(json!({"query": "q", "filter": {"tags": [1, "a"]}})), "invalid_field", "input.filter"),
        (search(json!({"query": "q", "filter": "topic=x"})), "invalid_field", "input.filter"),
        (search(json!({"query": "q", "media_ref": "med_x"})), "invalid_field", "input"),
        // execute input
        (json!({"model": MODEL, "input": {}}), "missing_field", "input.texts"),
        (json!({"model": MODEL, "input": {"texts": [1]}}), "invalid_field", "input.texts[0]"),
        (json!({"model": "sim-chat", "input": {}}), "missing_field", "input.messages"),
        (
            json!({"model": "sim-chat", "input": {"prompt": "hi"}, "params": {"max_tokens": "x"}}),
            "invalid_field",
            "params.max_tokens",
        ),
    ];
    for (body, code, param) in cases {
        let response = post_run(&gw, &key, body.clone()).await;
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        assert_eq!((status, answer["error"]["code"].as_str().unwrap_or_default()), (400, code), "{body} -> {answer}");
        assert_eq!(answer["error"]["param"].as_str().unwrap_or_default(), param, "{body} -> {answer}");
    }
    // Another workspace's media, or none: 404 as for any media.
    let response = post_run(&gw, &key, search(json!({"media_ref": "med_nope"}))).await;
    assert_eq!(error_code(response).await, (404, "not_found".into()));
    // A scope of exactly 64 characters is fine (then the missing model files answer, not the scope rule).
    let response = post_run(&gw, &key, index(json!({"scope": "s".repeat(64)}))).await;
    assert_eq!(error_code(response).await.1, "provider_unavailable");
    // Nothing of all that was charged.
    assert_eq!(gw.wallet(&key).await.1, 0);
    let settled = gw.settled(&key).await.0;
    // Execute on a chat model runs the chat path, billed like any chat.
    let answer =
        run_ok(&gw, &key, json!({"model": "sim-chat", "input": {"prompt": "hello"}, "params": {"max_tokens": 5}}))
            .await;
    assert_eq!(answer["mode"], "execute");
    assert!(!answer["output"]["text"].as_str().unwrap().is_empty());
    assert_eq!(answer["usage"]["completion_tokens"], 5);
    assert!(milli(&answer["credits_charged"]) > 0);
    assert_eq!(settled - gw.settled(&key).await.0, milli(&answer["credits_charged"]));
    // options.timeout_ms bounds a run.
    let answer =
        run_ok(&gw, &key, json!({"model": "sim-chat", "input": {"messages": [{"role": "user", "content": "hi"}]}, "options": {"timeout_ms": 30000}})).await;
    assert_eq!(answer["status"], "succeeded");
    gw.stop().await;
}
