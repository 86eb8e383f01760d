//! `POST /api/runs` (002): run a published model in one of its modes. `execute` runs the model (chat, image,
//! embedding); `index` and `search` embed their inputs and keep them in the vector store under the caller's
//! workspace and `scope`. Also `GET /api/knowledge-bases` and `DELETE /api/knowledge-bases/{model}/{scope}`.

use super::billed::{Billed, CallSpec};
use super::body::{from_object, parse_object, read_json};
use super::chat::{self, ChatCall, ChatOutcome, Delivery, Face, Metadata};
use super::embeddings::{embed_billed, embedding_model, settle, texts_of};
use super::errors::{ApiError, ErrorBody};
use super::task::RoutingQuery;
use crate::auth::Principal;
use crate::state::{now_unix, AppState};
use actix_web::{web, HttpRequest, HttpResponse};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};
use switchyard_actors::catalogue::Modality;
use switchyard_actors::vectors::{validate_filter, Chunk, StoreResult, Tenant};
use switchyard_actors::ModelSpec;
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/api/runs").route(web::post().to(create_run)));
    cfg.service(super::resource("/api/knowledge-bases").route(web::get().to(list_knowledge_bases)));
    cfg.service(super::resource("/api/knowledge-bases/{model}/{scope}").route(web::delete().to(delete_knowledge_base)));
}

/// Fields the platform manages: refused anywhere in a request.
const PLATFORM_FIELDS: [&str; 4] = ["resources", "alias", "collection", "namespace"];
/// Execution options a run may set.
const OPTIONS: [&str; 1] = ["timeout_ms"];

/// A run (002). `mode` defaults to `execute`; `scope` is required for `index` and `search`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The model's slug (see `GET /api/marketplace/models`).
    pub model: String,
    /// `execute` (default), `index` or `search`.
    pub mode: Option<String>,
    /// The vector namespace: `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`, per workspace.
    pub scope: Option<String>,
    /// The model input; its shape depends on the model and mode.
    #[schema(value_type = Object)]
    pub input: Value,
    /// Model parameters (an object).
    #[schema(value_type = Object)]
    pub params: Option<Value>,
    /// Execution options: `timeout_ms` only.
    #[schema(value_type = Object)]
    pub options: Option<Value>,
    pub reporting_group: Option<String>,
    pub use_fallback_model: Option<bool>,
}

/// `{"id", "object": "run", "status", "mode", "model", "scope", "output", "usage", "credits_charged", "metadata"}`
#[derive(Serialize, ToSchema)]
pub struct RunResponse {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub status: &'static str,
    pub mode: String,
    pub model: String,
    pub scope: Option<String>,
    #[schema(value_type = Object)]
    pub output: Value,
    #[schema(value_type = Object)]
    pub usage: Value,
    #[schema(value_type = f64)]
    pub credits_charged: switchyard_actors::Credits,
    pub metadata: Metadata,
}

/// A scope: starts with a letter or digit; letters, digits, `.`, `_`, `-`; at most 64 characters.
pub fn check_scope(scope: &str) -> Result<(), ApiError> {
    let mut chars = scope.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if first_ok && rest_ok && scope.len() <= 64 {
        return Ok(());
    }
    Err(ApiError::invalid_scope(format!(
        "Invalid scope `{}`: a scope starts with a letter or number, may contain letters, numbers, `.`, `_` and `-`, and is at most 64 characters",
        scope.chars().take(80).collect::<String>()
    )))
}

/// The first platform-managed field (or `hardware_tier`) anywhere in `value`, with its path.
fn forbidden(value: &Value, path: &str) -> Option<(String, String)> {
    match value {
        Value::Object(map) => map.iter().find_map(|(key, inner)| {
            let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            if PLATFORM_FIELDS.contains(&key.as_str()) {
                return Some((
                    here.clone(),
                    format!("`{here}`: {key} is managed by the platform and must not be supplied"),
                ));
            }
            if key == "hardware_tier" {
                return Some((
                    here.clone(),
                    format!(
                        "`{here}`: do not send hardware_tier; hardware is resolved from the published model release"
                    ),
                ));
            }
            forbidden(inner, &here)
        }),
        Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, inner)| forbidden(inner, &format!("{path}[{i}]")))
        }
        _ => None,
    }
}

/// The checks of 002 and API.md that do not depend on the model: answers the request and its options.
fn check(object: Map<String, Value>) -> Result<(RunRequest, Option<Duration>), ApiError> {
    if let Some((path, message)) = forbidden(&Value::Object(object.clone()), "") {
        return Err(ApiError::forbidden_field(&path, message));
    }
    if object.contains_key("parameters") {
        return Err(ApiError::unknown_field("parameters")
            .with_message("Unknown field: parameters. Use `params`, not `parameters`"));
    }
    let request: RunRequest = from_object(object)?;
    if let Some(params) = &request.params {
        if !params.is_object() {
            return Err(ApiError::invalid_field("params", "`params` must be a JSON object"));
        }
    }
    let mut timeout = None;
    match &request.options {
        None => {}
        Some(Value::Object(options)) => {
            for (key, value) in options {
                if !OPTIONS.contains(&key.as_str()) {
                    return Err(ApiError::unknown_field(&format!("options.{key}")).with_message(format!(
                        "Unknown execution option `{key}`: the allowed options are {}",
                        OPTIONS.join(", ")
                    )));
                }
                match value.as_u64() {
                    Some(ms @ 1..=600_000) => timeout = Some(Duration::from_millis(ms)),
                    _ => {
                        return Err(ApiError::invalid_field(
                            "options.timeout_ms",
                            "`options.timeout_ms` must be an integer from 1 to 600000",
                        ))
                    }
                }
            }
        }
        Some(_) => return Err(ApiError::invalid_field("options", "`options` must be a JSON object")),
    }
    if let Some(scope) = &request.scope {
        check_scope(scope)?;
    }
    if !request.input.is_object() {
        return Err(ApiError::invalid_field("input", "`input` must be a JSON object"));
    }
    Ok((request, timeout))
}

#[utoipa::path(
    post,
    path = "/api/runs",
    tag = "runs",
    request_body = RunRequest,
    params(RoutingQuery, ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for 24 h")),
    responses(
        (status = 200, description = "The run, finished", body = RunResponse),
        (status = 400, description = "invalid_json, missing_field, invalid_field, unknown_field, unsupported_model, invalid_scope, forbidden_field, unsupported_mode", body = ErrorBody),
        (status = 401, description = "missing_api_key, invalid_api_key", body = ErrorBody),
        (status = 402, description = "insufficient_credits", body = ErrorBody),
        (status = 409, description = "idempotency_conflict", body = ErrorBody),
        (status = 429, description = "rate_limit_exceeded, concurrency_limit_exceeded, token_limit_exceeded", body = ErrorBody),
        (status = 503, description = "provider_unavailable (embedding model files missing, provider key unset), overloaded", body = ErrorBody),
        (status = 504, description = "timeout: `options.timeout_ms` passed", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn create_run(
    state: web::Data<AppState>,
    principal: Principal,
    query: web::Query<RoutingQuery>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let body = read_json(&req, payload, state.config.server.max_body_bytes).await?;
    let run = async {
        let (request, timeout) = check(parse_object(&body)?)?;
        let work = run(&state, &principal, query.into_inner(), &req, request, started);
        let response = match timeout {
            None => work.await?,
            Some(limit) => tokio::time::timeout(limit, work).await.map_err(|_| {
                ApiError::new(
                    actix_web::http::StatusCode::GATEWAY_TIMEOUT,
                    super::errors::ErrorType::UpstreamError,
                    "timeout",
                    format!(
                        "The run did not finish within options.timeout_ms ({} ms); nothing was charged",
                        limit.as_millis()
                    ),
                )
            })??,
        };
        Ok(HttpResponse::Ok().insert_header(("x-switchyard-model", response.model.as_str())).json(response))
    };
    super::idempotency::guard(&state, &req, &principal, &body, run).await
}

async fn run(
    state: &web::Data<AppState>,
    principal: &Principal,
    query: RoutingQuery,
    req: &HttpRequest,
    request: RunRequest,
    started: Instant,
) -> Result<RunResponse, ApiError> {
    let model = state.catalogue.model(&request.model).ok_or_else(|| ApiError::unsupported_model(&request.model))?;
    let mode = request.mode.clone().unwrap_or_else(|| "execute".into());
    if !["execute", "index", "search"].contains(&mode.as_str()) {
        return Err(ApiError::unsupported_mode(format!(
            "Unknown mode `{}`: the modes are execute, index and search",
            mode.chars().take(40).collect::<String>()
        )));
    }
    if !model.modes().contains(&mode.as_str()) {
        let modes = model.modes();
        return Err(ApiError::unsupported_mode(if modes.is_empty() {
            format!("{} does not run through /api/runs: use POST /api/v1/task", model.name)
        } else {
            format!("{} does not support mode `{mode}`; its modes are {}", model.name, modes.join(", "))
        }));
    }
    let reporting_group = chat::check_reporting_group(request.reporting_group.or(query.reporting_group))?;
    let use_fallback = request.use_fallback_model.unwrap_or(false) || query.use_fallback_model.unwrap_or(false);
    let scope = request.scope.clone();
    if mode != "execute" && scope.is_none() {
        return Err(ApiError::invalid_scope(format!("`scope` is required for mode {mode}")));
    }
    let Value::Object(input) = request.input else {
        return Err(ApiError::invalid_field("input", "`input` must be a JSON object"));
    };
    let params = match request.params {
        Some(Value::Object(params)) => params,
        _ => Map::new(),
    };
    let spec = CallSpec {
        principal,
        model,
        use_fallback,
        reporting_group,
        endpoint: "/api/runs",
        id_prefix: "run",
        started,
        task: None,
    };
    let (id, output, usage, metadata) = match (mode.as_str(), model.modality) {
        ("index", _) => index(state, req, &spec, scope.as_deref().unwrap_or_default(), input, params).await?,
        ("search", _) => search(state, req, &spec, scope.as_deref().unwrap_or_default(), input, params).await?,
        (_, Modality::Embedding) => execute_embedding(state, req, &spec, input, params).await?,
        (_, Modality::Chat) => execute_chat(state, req, spec, input, params).await?,
        (_, Modality::Image) => execute_image(state, req, principal, model, spec, input, params).await?,
        (_, Modality::Speech | Modality::SpeechToSpeech | Modality::Transcription) => {
            return Err(ApiError::unsupported_mode(format!("{} runs through POST /api/v1/task", model.name)))
        }
    };
    Ok(RunResponse {
        id,
        object: "run",
        created: now_unix(),
        status: "succeeded",
        mode,
        model: metadata.model.clone(),
        scope,
        output,
        usage,
        credits_charged: metadata.credits_charged,
        metadata,
    })
}

type Ran = (String, Value, Value, Metadata);

fn no_params(params: &Map<String, Value>, mode: &str) -> Result<(), ApiError> {
    match params.keys().next() {
        Some(key) => Err(ApiError::unknown_field(&format!("params.{key}"))
            .with_message(format!("Unknown parameter `{key}`: mode {mode} of an embedding model takes no params"))),
        None => Ok(()),
    }
}

fn only_keys(input: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    match input.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(ApiError::unknown_field(&format!("input.{key}"))
            .with_message(format!("Unknown field: input.{key} (this mode takes {})", allowed.join(", ")))),
        None => Ok(()),
    }
}

async fn execute_embedding(
    state: &AppState,
    req: &HttpRequest,
    spec: &CallSpec<'_>,
    mut input: Map<String, Value>,
    params: Map<String, Value>,
) -> Result<Ran, ApiError> {
    no_params(&params, "execute")?;
    only_keys(&input, &["texts", "text"])?;
    let texts = match (input.remove("texts"), input.remove("text")) {
        (Some(texts), None) => texts_of("input.texts", texts)?,
        (None, Some(text)) => texts_of("input.text", text)?,
        (None, None) => return Err(ApiError::missing_field("input.texts")),
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_field("input", "Give `input.texts` or `input.text`, not both"))
        }
    };
    let inputs = texts.len() as u64;
    let (vectors, billed, answered) = embed_billed(state, req, spec, texts).await?;
    let id = billed.id().to_owned();
    let metadata = settle(billed, &answered, inputs).await?;
    let dimensions = spec.model.embedding.map_or(0, |e| e.dimensions);
    Ok((id, json!({"embeddings": vectors, "dimensions": dimensions}), json!({"inputs": inputs}), metadata))
}

/// A document of an index run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentIn {
    id: Option<String>,
    text: Option<String>,
    media_ref: Option<String>,
    metadata: Option<Value>,
}

/// Metadata keys, like filter fields: letters, digits, `_`, `-`; values scalars or arrays of scalars.
fn check_metadata(path: &str, metadata: Option<Value>) -> Result<Map<String, Value>, ApiError> {
    let map = match metadata {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(ApiError::invalid_field(path, format!("`{path}` must be a JSON object"))),
    };
    if map.len() > 32 || serde_json::to_vec(&map).map_or(0, |v| v.len()) > 8192 {
        return Err(ApiError::invalid_field(path, format!("`{path}` holds at most 32 fields and 8 KB")));
    }
    for (key, value) in &map {
        let key_ok = !key.is_empty()
            && key.len() <= 64
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let scalar = |v: &Value| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_));
        let value_ok = match value {
            Value::Array(items) => items.iter().all(scalar),
            other => scalar(other),
        };
        if !key_ok || !value_ok {
            return Err(ApiError::invalid_field(
                &format!("{path}.{key}"),
                format!("`{path}`: keys are 1-64 letters, digits, `_` or `-`; values are strings, numbers, booleans or arrays of them"),
            ));
        }
    }
    Ok(map)
}

fn check_doc_id(path: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.chars().count() > 256 || id.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(path, format!("`{path}` must be 1 to 256 printable characters")));
    }
    Ok(())
}

/// A document's text: given inline, or a text file uploaded as media.
async fn document_text(
    state: &AppState,
    workspace_id: &str,
    path: &str,
    doc: &mut DocumentIn,
) -> Result<String, ApiError> {
    match (doc.text.take(), doc.media_ref.take()) {
        (Some(text), None) => Ok(text),
        (None, Some(media_ref)) => {
            let media = super::form::load_media(state, workspace_id, &media_ref).await?;
            let textual = media.content_type.starts_with("text/")
                || matches!(media.content_type.as_str(), "application/json" | "application/x-ndjson");
            if !textual {
                return Err(ApiError::invalid_field(
                    &format!("{path}.media_ref"),
                    format!("The media `{media_ref}` is {}, not a text file", media.content_type),
                ));
            }
            String::from_utf8(media.bytes.to_vec()).map_err(|_| {
                ApiError::invalid_field(
                    &format!("{path}.media_ref"),
                    format!("The media `{media_ref}` is not UTF-8 text"),
                )
            })
        }
        (None, None) => Err(ApiError::missing_field(&format!("{path}.text"))),
        (Some(_), Some(_)) => {
            Err(ApiError::invalid_field(path, format!("Give `{path}.text` or `{path}.media_ref`, not both")))
        }
    }
}

async fn index(
    state: &AppState,
    req: &HttpRequest,
    spec: &CallSpec<'_>,
    scope: &str,
    mut input: Map<String, Value>,
    params: Map<String, Value>,
) -> Result<Ran, ApiError> {
    no_params(&params, "index")?;
    only_keys(&input, &["documents"])?;
    let limits = &state.config.vectors;
    let documents = input.remove("documents").ok_or_else(|| ApiError::missing_field("input.documents"))?;
    let Value::Array(documents) = documents else {
        return Err(ApiError::invalid_field("input.documents", "`input.documents` must be an array of documents"));
    };
    if documents.is_empty() || documents.len() > limits.max_documents {
        return Err(ApiError::invalid_field(
            "input.documents",
            format!("`input.documents` must hold 1 to {} documents", limits.max_documents),
        ));
    }
    let workspace_id = &spec.principal.workspace_id;
    let mut ids = Vec::with_capacity(documents.len());
    let mut chunks = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, value) in documents.into_iter().enumerate() {
        let path = format!("input.documents[{i}]");
        let mut doc: DocumentIn = serde_json::from_value(value).map_err(|e| {
            let message = e.to_string();
            match message.strip_prefix("unknown field `").and_then(|m| m.split('`').next()) {
                Some(field) => ApiError::unknown_field(&format!("{path}.{field}")),
                None => ApiError::invalid_field(&path, format!("`{path}`: {message}")),
            }
        })?;
        let text = document_text(state, workspace_id, &path, &mut doc).await?;
        let metadata = check_metadata(&format!("{path}.metadata"), doc.metadata.take())?;
        let id = match doc.id.take() {
            Some(id) => {
                check_doc_id(&format!("{path}.id"), &id)?;
                id
            }
            // No id: one derived from the text, so indexing the same text again replaces it.
            None => {
                use sha2::{Digest, Sha256};
                format!("doc_{}", &hex::encode(Sha256::digest(text.as_bytes()))[..24])
            }
        };
        if !seen.insert(id.clone()) {
            return Err(ApiError::invalid_field(&format!("{path}.id"), format!("Document id `{id}` appears twice")));
        }
        let pieces = switchyard_actors::chunk::chunk_text(&text, limits.chunk_characters, limits.chunk_overlap);
        if pieces.is_empty() {
            return Err(ApiError::invalid_field(&format!("{path}.text"), format!("`{path}.text` is blank")));
        }
        for (n, piece) in pieces.into_iter().enumerate() {
            chunks.push(Chunk {
                doc_id: id.clone(),
                chunk: n as u32,
                text: piece,
                metadata: metadata.clone(),
                vector: Vec::new(),
            });
        }
        if chunks.len() > limits.max_chunks {
            return Err(ApiError::invalid_field(
                "input.documents",
                format!("These documents make more than {} chunks: send them in smaller requests", limits.max_chunks),
            ));
        }
        ids.push(id);
    }
    let texts: Vec<String> = chunks.iter().map(|c| c.text.clone()).collect();
    let inputs = texts.len() as u64;
    let (vectors, mut billed, answered) = embed_billed(state, req, spec, texts).await?;
    for (chunk, vector) in chunks.iter_mut().zip(vectors) {
        chunk.vector = vector;
    }
    let tenant = Tenant { workspace_id: workspace_id.clone(), scope: scope.to_owned() };
    store_call(state, "index", &mut billed, state.vectors.index(&spec.model.name, &tenant, chunks)).await?;
    let id = billed.id().to_owned();
    let metadata = settle(billed, &answered, inputs).await?;
    let documents = ids.len();
    Ok((
        id,
        json!({"indexed": ids, "documents": documents, "chunks": inputs}),
        json!({"inputs": inputs, "documents": documents, "chunks": inputs}),
        metadata,
    ))
}

/// One vector store call, timed in the metrics; when it fails, the charge held for the run is released.
async fn store_call<T>(
    state: &AppState,
    operation: &str,
    billed: &mut Billed,
    call: BoxFuture<'static, StoreResult<T>>,
) -> Result<T, ApiError> {
    let started = Instant::now();
    let result = call.await;
    state.metrics.observe_vectors(operation, result.is_ok(), started.elapsed());
    result.map_err(|e| {
        billed.fail("error");
        ApiError::internal(format!("vector store: {e}"))
    })
}

async fn search(
    state: &AppState,
    req: &HttpRequest,
    spec: &CallSpec<'_>,
    scope: &str,
    mut input: Map<String, Value>,
    params: Map<String, Value>,
) -> Result<Ran, ApiError> {
    no_params(&params, "search")?;
    only_keys(&input, &["query", "media_ref", "top_k", "filter"])?;
    let max_top_k = state.config.vectors.max_top_k;
    let top_k = match input.remove("top_k") {
        None => 5,
        Some(value) => match value.as_u64() {
            Some(k) if (1..=max_top_k as u64).contains(&k) => k as usize,
            _ => {
                return Err(ApiError::invalid_field(
                    "input.top_k",
                    format!("`input.top_k` must be an integer from 1 to {max_top_k}"),
                ))
            }
        },
    };
    let filter = match input.remove("filter") {
        None | Some(Value::Null) => None,
        Some(Value::Object(filter)) => {
            validate_filter(&filter).map_err(|e| ApiError::invalid_field("input.filter", e))?;
            Some(filter)
        }
        Some(_) => return Err(ApiError::invalid_field("input.filter", "`input.filter` must be a JSON object")),
    };
    let mut doc = DocumentIn {
        id: None,
        text: match input.remove("query") {
            None => None,
            Some(Value::String(query)) => Some(query),
            Some(_) => return Err(ApiError::invalid_field("input.query", "`input.query` must be a string")),
        },
        media_ref: match input.remove("media_ref") {
            None => None,
            Some(Value::String(r)) => Some(r),
            Some(_) => return Err(ApiError::invalid_field("input.media_ref", "`input.media_ref` must be a string")),
        },
        metadata: None,
    };
    if doc.text.is_none() && doc.media_ref.is_none() {
        return Err(ApiError::missing_field("input.query"));
    }
    let query = document_text(state, &spec.principal.workspace_id, "input", &mut doc).await?;
    if query.trim().is_empty() || query.chars().count() > super::embeddings::MAX_INPUT_CHARS {
        return Err(ApiError::invalid_field(
            "input.query",
            "`input.query` must be non-blank and at most 100000 characters",
        ));
    }
    let (mut vectors, mut billed, answered) = embed_billed(state, req, spec, vec![query]).await?;
    let vector = vectors.pop().unwrap_or_default();
    let tenant = Tenant { workspace_id: spec.principal.workspace_id.clone(), scope: scope.to_owned() };
    // The store answers each document's best chunk.
    let search = state.vectors.search(&spec.model.name, &tenant, vector, top_k, filter);
    let hits = store_call(state, "search", &mut billed, search).await?;
    let matches: Vec<Value> = hits
        .into_iter()
        .map(|hit| json!({"id": hit.doc_id, "score": hit.score, "text": hit.text, "chunk": hit.chunk, "metadata": hit.metadata}))
        .collect();
    let id = billed.id().to_owned();
    let metadata = settle(billed, &answered, 1).await?;
    Ok((id, json!({"matches": matches}), json!({"inputs": 1}), metadata))
}

/// Chat through a run: `input.messages` (or `input.prompt`), `params` max_tokens, temperature, top_p, stop.
async fn execute_chat(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    spec: CallSpec<'_>,
    mut input: Map<String, Value>,
    params: Map<String, Value>,
) -> Result<Ran, ApiError> {
    only_keys(&input, &["messages", "prompt"])?;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ChatParams {
        max_tokens: Option<u32>,
        temperature: Option<f64>,
        top_p: Option<f64>,
        stop: Option<chat::StopIn>,
    }
    let params: ChatParams = from_object(params).map_err(|e| match e.detail.param.clone() {
        Some(param) if !param.starts_with("params") => e.with_param(format!("params.{param}")),
        _ => e,
    })?;
    let messages = match (input.remove("messages"), input.remove("prompt")) {
        (Some(messages), None) => serde_json::from_value::<Vec<chat::MessageIn>>(messages)
            .map_err(|e| ApiError::invalid_field("input.messages", format!("`input.messages`: {e}")))?,
        (None, Some(Value::String(prompt))) => {
            vec![chat::MessageIn { role: "user".into(), content: Some(chat::ContentIn::Text(prompt)) }]
        }
        (None, Some(_)) => return Err(ApiError::invalid_field("input.prompt", "`input.prompt` must be a string")),
        (None, None) => return Err(ApiError::missing_field("input.messages")),
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_field("input", "Give `input.messages` or `input.prompt`, not both"))
        }
    };
    let request = chat::prepare(
        spec.model,
        chat::ChatInput {
            messages,
            max_tokens: params.max_tokens,
            temperature: params.temperature,
            top_p: params.top_p,
            stop: params.stop,
        },
    )?;
    let call = ChatCall {
        face: Face::Task,
        principal: spec.principal,
        model: spec.model,
        request,
        delivery: Delivery { stream: false, usage_chunk: false },
        reporting_group: spec.reporting_group,
        use_fallback: spec.use_fallback,
        started: spec.started,
        endpoint: "/api/runs",
        task: None,
    };
    match chat::run(state, req, call).await? {
        ChatOutcome::Whole(done) => {
            let usage = done.answer.usage;
            Ok((
                done.id,
                json!({"text": done.answer.text, "finish_reason": done.answer.finish_reason.as_str()}),
                json!({"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                       "total_tokens": usage.prompt_tokens + usage.completion_tokens}),
                done.metadata,
            ))
        }
        ChatOutcome::Stream(_) => Err(ApiError::internal("a run does not stream")),
    }
}

/// An image through a run: `input.prompt` (and `input.image`, a media_ref), `params` as `POST /api/v1/task`.
async fn execute_image(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    principal: &Principal,
    model: &ModelSpec,
    spec: CallSpec<'_>,
    mut input: Map<String, Value>,
    params: Map<String, Value>,
) -> Result<Ran, ApiError> {
    only_keys(&input, &["prompt", "image"])?;
    let mut object = params;
    for key in ["model", "prompt", "image", "reporting_group", "use_fallback_model"] {
        if object.contains_key(key) {
            return Err(ApiError::unknown_field(&format!("params.{key}")));
        }
    }
    object.insert("model".into(), Value::String(model.name.clone()));
    match input.remove("prompt") {
        Some(prompt) => object.insert("prompt".into(), prompt),
        None => return Err(ApiError::missing_field("input.prompt")),
    };
    if let Some(image) = input.remove("image") {
        object.insert("image".into(), image);
    }
    let mut body: super::image::ImageTaskRequest = from_object(object)?;
    body.reporting_group = spec.reporting_group.clone();
    body.use_fallback_model = Some(spec.use_fallback);
    let generation = super::image::generate(state, req, principal, model, body, None, spec.started).await?;
    let images: Vec<Value> = generation
        .data
        .iter()
        .map(|d| json!({"url": d.url, "media_ref": d.media_ref, "content_type": d.content_type}))
        .collect();
    Ok((generation.id, json!({"images": images}), json!({"images": images.len()}), generation.metadata))
}

/// One scope's data in one collection.
#[derive(Serialize, ToSchema)]
pub struct KnowledgeBase {
    /// The embedding model (one collection per model).
    pub model: String,
    pub collection: String,
    pub scope: String,
    pub documents: u64,
    pub points: u64,
    /// RFC 3339 time of the newest point.
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct KnowledgeBaseList {
    pub object: &'static str,
    /// `embedded` or `qdrant`.
    pub backend: &'static str,
    pub data: Vec<KnowledgeBase>,
}

fn rfc3339_millis(millis: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

fn collection_name(state: &AppState, model: &str) -> String {
    if state.vector_backend == "qdrant" {
        format!("{}{model}", state.config.vectors.collection_prefix)
    } else {
        model.to_owned()
    }
}

#[utoipa::path(
    get,
    path = "/api/knowledge-bases",
    tag = "runs",
    responses(
        (status = 200, description = "The caller's indexed data by model, collection and scope", body = KnowledgeBaseList),
        (status = 401, description = "missing_api_key, invalid_api_key", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list_knowledge_bases(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let _permit = super::limits::admit(&state, &req, &principal, 0).await?;
    let listed = state
        .vectors
        .tenants(&principal.workspace_id)
        .await
        .map_err(|e| ApiError::internal(format!("vector store: {e}")))?;
    let data = listed
        .into_iter()
        .map(|(model, info)| KnowledgeBase {
            collection: collection_name(&state, &model),
            model,
            scope: info.tenant.scope,
            documents: info.documents,
            points: info.points,
            updated_at: rfc3339_millis(info.updated_at),
        })
        .collect();
    Ok(HttpResponse::Ok().json(KnowledgeBaseList { object: "list", backend: state.vector_backend, data }))
}

#[utoipa::path(
    delete,
    path = "/api/knowledge-bases/{model}/{scope}",
    tag = "runs",
    params(("model" = String, Path), ("scope" = String, Path)),
    responses(
        (status = 200, description = "The scope's data is gone", body = Object),
        (status = 400, description = "invalid_scope, unsupported_model", body = ErrorBody),
        (status = 404, description = "not_found: nothing indexed under that scope", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn delete_knowledge_base(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let _permit = super::limits::admit(&state, &req, &principal, 0).await?;
    let (model, scope) = path.into_inner();
    let model = embedding_model(&state, &model)?;
    check_scope(&scope)?;
    let tenant = Tenant { workspace_id: principal.workspace_id.clone(), scope: scope.clone() };
    let deleted = Instant::now();
    let result = state.vectors.delete_tenant(&model.name, &tenant).await;
    state.metrics.observe_vectors("delete", result.is_ok(), deleted.elapsed());
    let points = result.map_err(|e| ApiError::internal(format!("vector store: {e}")))?;
    if points == 0 {
        return Err(ApiError::not_found(format!("Nothing is indexed for {} under scope `{scope}`", model.name)));
    }
    Ok(HttpResponse::Ok().json(json!({
        "object": "knowledge_base.deleted", "model": model.name, "scope": scope, "deleted": true, "points": points
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_follow_the_rest_api_rules() {
        for good in ["test", "a", "A.b_c-9", &"x".repeat(64)] {
            assert!(check_scope(good).is_ok(), "{good}");
        }
        for bad in ["", ".a", "-a", "_a", "a b", "a/b", "é", &"x".repeat(65)] {
            assert_eq!(check_scope(bad).map_err(|e| e.code()), Err("invalid_scope"), "{bad}");
        }
    }

    #[test]
    fn platform_fields_are_found_at_any_depth() {
        let v = json!({"input": {"documents": [{"metadata": {"namespace": "x"}}]}});
        assert_eq!(forbidden(&v, "").map(|f| f.0), Some("input.documents[0].metadata.namespace".into()));
        assert!(forbidden(&json!({"input": {"text": "collection"}}), "").is_none());
        assert_eq!(
            forbidden(&json!({"options": {"hardware_tier": "gpu"}}), "").map(|f| f.0),
            Some("options.hardware_tier".into())
        );
    }
}
