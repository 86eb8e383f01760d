//! Task runs (000): `POST /api/v1/tasks/{task}/run` picks a revision (id, tag, session or weight), fills its prompt
//! from `task_input`, runs it on the revision's model (with its fallback) and shapes the answer by the task's
//! output format: json (checked against the schema, one repair attempt), text, csv, pdf, image or audio. Also the
//! per-revision statistics of an A/B test, and the list of tasks a workspace sees.

pub(crate) mod admin;
mod chat;
mod files;
mod plan;
pub(crate) mod stats;
pub(crate) mod view;

use super::body::{parse_object, read_json};
use super::call::Metadata;
use super::chat::UsageOut;
use super::errors::{ApiError, ErrorBody};
use super::form::{self, FileInput};
use crate::auth::Principal;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Instant;
use utoipa::ToSchema;

pub use admin::{AdminTaskList, RevisionPatch};
pub use stats::{RevisionStats, StatsResponse};
pub use view::{RevisionView, TaskList, TaskView};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(crate::api::resource("/api/v1/tasks").route(web::get().to(view::list_tasks)))
        .service(crate::api::resource("/api/v1/tasks/{task}/run").route(web::post().to(run_task)))
        .service(
            crate::api::resource("/api/v1/tasks/{task}/revisions/stats").route(web::get().to(stats::revision_stats)),
        );
    admin::configure(cfg);
}

/// Query parameters of a run.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunQuery {
    /// Run this revision (it must be active).
    pub revision_id: Option<String>,
    /// Run the active revision with this tag.
    pub revision_tag: Option<String>,
    /// Kept on the usage record for segmented analytics.
    pub reporting_group: Option<String>,
    /// Go straight to the revision's fallback model.
    pub use_fallback_model: Option<bool>,
    /// Text tasks: answer as Server-Sent Events (`task.completion.chunk`).
    pub stream: Option<bool>,
}

/// `{"task_input": {...}}`: values for the prompt's `{{variables}}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    #[schema(value_type = Object)]
    pub task_input: Map<String, Value>,
}

#[derive(Serialize, ToSchema)]
pub struct RevisionRef {
    pub id: String,
    pub tag: Option<String>,
}

/// A file the run produced (stored as media of the workspace).
#[derive(Serialize, ToSchema, Clone)]
pub struct RunFile {
    pub media_ref: String,
    pub url: String,
    pub filename: String,
    pub content_type: String,
    pub bytes: u64,
}

/// `task.run`
#[derive(Serialize, ToSchema)]
pub struct TaskRun {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub task: String,
    pub revision: RevisionRef,
    /// JSON for json tasks; the text for text, csv and pdf tasks; `{url, media_ref}` for image and audio tasks.
    #[schema(value_type = Object)]
    pub output: Value,
    pub output_format: &'static str,
    pub files: Vec<RunFile>,
    /// Tokens, for chat-based tasks.
    pub usage: Option<UsageOut>,
    pub metadata: RunMetadata,
    /// The task_input, for audit.
    #[schema(value_type = Object)]
    pub input: Map<String, Value>,
    pub reporting_group: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RunMetadata {
    #[serde(flatten)]
    pub call: Metadata,
    /// Whether a json or csv answer needed the repair attempt.
    pub repaired: bool,
    /// Tokens, for chat-based tasks (the repair attempt's included).
    pub tokens: Option<UsageOut>,
}

/// A run's request, parsed: its fields and the file sent with it.
struct RunBody {
    object: Map<String, Value>,
    file: Option<(String, FileInput)>,
}

#[utoipa::path(
    post,
    path = "/api/v1/tasks/{task}/run",
    tag = "tasks",
    params(("task" = String, Path, description = "The task's slug"), RunQuery,
        ("X-Session-Id" = Option<String>, Header, description = "Keeps a session on one revision"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for 24 h")),
    request_body(content = RunRequest, description = "JSON, or multipart/form-data with `task_input` (JSON text) and an `image` file when the task has `image_required`"),
    responses(
        (status = 200, description = "`task.run`; with `stream=true` on a text task, SSE `task.completion.chunk`", body = TaskRun),
        (status = 400, description = "invalid_json, missing_field, invalid_field, unknown_field, missing_variable", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 402, body = ErrorBody),
        (status = 404, description = "unknown task, or no active revision with that id or tag", body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 502, description = "provider_error, invalid_model_output", body = ErrorBody),
        (status = 503, body = ErrorBody), (status = 504, body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn run_task(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    query: web::Query<RunQuery>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let slug = path.into_inner();
    let query = query.into_inner();
    if form::is_multipart(&req) {
        let form = form::read_form(&req, payload, state.config.media.max_upload_bytes as usize).await?;
        let fingerprint = form.fingerprint.clone();
        let body = RunBody { object: form.fields, file: form.file };
        let run = plan::execute(&state, &principal, &slug, query, &req, body, started);
        return crate::api::idempotency::guard(&state, &req, &principal, &fingerprint, run).await;
    }
    let raw = read_json(&req, payload, state.config.server.max_body_bytes).await?;
    let run = async {
        let body = RunBody { object: parse_object(&raw)?, file: None };
        plan::execute(&state, &principal, &slug, query, &req, body, started).await
    };
    crate::api::idempotency::guard(&state, &req, &principal, &raw, run).await
}
