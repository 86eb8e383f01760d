//! `POST /api/runs` (002): run a published model in one of its modes, with the inputs its contract shows
//! (`contract.rs`). `execute` runs the model (chat, image, speech, speech-to-speech, transcription, embedding); `index` and `search` embed their inputs and keep them in the vector store under the caller's
//! workspace and `scope`. Also `GET /api/knowledge-bases` and `DELETE /api/knowledge-bases/{model}/{scope}`.

mod check;
mod execute;
pub(crate) mod knowledge;
mod speech;
mod vectors;

use super::body::{parse_object, RawJson};
use super::call::{CallSpec, Metadata, RoutingQuery};
use super::contract;
use super::errors::{ApiError, ErrorBody};
use crate::api::docs::{Authenticated, IdempotencyKey, Idempotent, ModelCall};
use crate::auth::Principal;
use crate::clock::now_unix;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use check::check;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Instant;
use switchyard_actors::catalogue::Modality;
use utoipa::ToSchema;

pub use check::check_scope;
pub use knowledge::{KnowledgeBase, KnowledgeBaseList};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/api/runs").route(web::post().to(create_run)));
    cfg.service(super::resource("/api/knowledge-bases").route(web::get().to(knowledge::list_knowledge_bases)));
    cfg.service(
        super::resource("/api/knowledge-bases/{model}/{scope}")
            .route(web::delete().to(knowledge::delete_knowledge_base)),
    );
}

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

#[utoipa::path(
    post,
    path = "/api/runs",
    tag = "runs",
    request_body = RunRequest,
    params(RoutingQuery, IdempotencyKey),
    responses((status = 200, description = "The run, finished", body = RunResponse), Authenticated, ModelCall, Idempotent, (status = 400, description = "invalid_json, missing_field, invalid_field, unknown_field, unsupported_model, invalid_scope, forbidden_field, unsupported_mode", body = ErrorBody), (status = 503, description = "provider_unavailable (embedding model files missing, provider key unset), overloaded", body = ErrorBody), (status = 504, description = "timeout: `options.timeout_ms` passed", body = ErrorBody)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn create_run(
    state: web::Data<AppState>,
    principal: Principal,
    query: web::Query<RoutingQuery>,
    req: HttpRequest,
    RawJson(body): RawJson,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
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
    let Some(contract) = contract::mode(model.modality, &mode) else {
        if contract::names(model.modality).is_empty() {
            return Err(ApiError::unsupported_mode(format!(
                "{} is a realtime model: open a WebSocket at /v1/realtime?model={}",
                model.name, model.name
            )));
        }
        let modes = contract::names(model.modality).join(", ");
        return Err(ApiError::unsupported_mode(format!(
            "{} does not support mode `{mode}`; its modes are {modes}",
            model.name
        )));
    };
    let reporting_group = crate::api::call::check_reporting_group(request.reporting_group.or(query.reporting_group))?;
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
    contract.check(&model.name, &input, &params)?;
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
    let ran = match (mode.as_str(), model.modality) {
        ("index", _) => vectors::index(state, req, &spec, scope.as_deref().unwrap_or_default(), input).await,
        ("search", _) => vectors::search(state, req, &spec, scope.as_deref().unwrap_or_default(), input).await,
        (_, Modality::Embedding) => execute::execute_embedding(state, req, &spec, input).await,
        (_, Modality::Chat) => execute::execute_chat(state, req, spec, input, params).await,
        (_, Modality::Image) => execute::execute_image(state, req, principal, model, spec, input, params).await,
        (_, Modality::Speech | Modality::SpeechToSpeech | Modality::Transcription) => {
            speech::execute(state, req, spec, input, params).await
        }
        // Realtime models have no contract (no modes): refused above.
        (_, Modality::Realtime) => Err(ApiError::unsupported_mode(format!("{} has no run modes", model.name))),
    };
    let (id, output, usage, metadata) = ran.map_err(|e| contract.locate(e))?;
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

pub(super) type Ran = (String, Value, Value, Metadata);
