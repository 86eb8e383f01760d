//! `POST /api/v1/tasks/{task}/run`: the request read (JSON or multipart), the revision picked and its prompt
//! filled, then the output format's runner.

use super::chat::run_chat;
use super::files::{run_audio, run_image};
use super::plan::{Plan, RunAnswer};
use super::wire::{RunBody, RunQuery, RunRequest, TaskRun};
use crate::api::body::from_object;
use crate::api::docs::{Authenticated, IdempotencyKey, Idempotent, JsonBody, ModelCall};
use crate::api::errors::{ApiError, ErrorBody};
use crate::api::form::{self, CallBody, FileKind};
use crate::auth::Principal;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Instant;
use switchyard_actors::tasks::{OutputFormat, SelectError, Selector, TaskSpec, Template};

#[utoipa::path(
    post,
    path = "/api/v1/tasks/{task}/run",
    tag = "tasks",
    params(("task" = String, Path, description = "The task's slug"), RunQuery,
        ("X-Session-Id" = Option<String>, Header, description = "Keeps a session on one revision"),
        IdempotencyKey),
    request_body(content = RunRequest, description = "JSON, or multipart/form-data with `task_input` (JSON text) and an `image` file when the task has `image_required`"),
    responses((status = 200, description = "`task.run`; with `stream=true` on a text task, SSE `task.completion.chunk`", body = TaskRun), Authenticated, ModelCall, Idempotent, JsonBody, (status = 400, description = "invalid_json, missing_field, invalid_field, unknown_field, missing_variable", body = ErrorBody), (status = 404, description = "unknown task, or no active revision with that id or tag", body = ErrorBody), (status = 502, description = "provider_error, invalid_model_output", body = ErrorBody)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn run_task(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    query: web::Query<RunQuery>,
    req: HttpRequest,
    body: CallBody,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let slug = path.into_inner();
    let query = query.into_inner();
    let fingerprint = body.fingerprint.clone();
    let run = async {
        let (object, file) = body.parts()?;
        execute(&state, &principal, &slug, query, &req, RunBody { object, file }, started).await
    };
    crate::api::idempotency::guard(&state, &req, &principal, &fingerprint, run).await
}

fn input_value(input: &Map<String, Value>, name: &str) -> Option<String> {
    match input.get(name)? {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

fn select_error(slug: &str, error: SelectError) -> ApiError {
    match error {
        SelectError::UnknownId(id) => {
            ApiError::not_found(format!("Task `{slug}` has no active revision `{id}`")).with_param("revision_id")
        }
        SelectError::UnknownTag(tag) => {
            ApiError::not_found(format!("Task `{slug}` has no active revision tagged `{tag}`"))
                .with_param("revision_tag")
        }
        SelectError::NoTraffic => ApiError::not_found(format!("Task `{slug}` has no active revision to run")),
    }
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    state: &web::Data<AppState>,
    principal: &Principal,
    slug: &str,
    query: RunQuery,
    req: &HttpRequest,
    body: RunBody,
    started: Instant,
) -> Result<HttpResponse, ApiError> {
    let RunBody { mut object, file } = body;
    if object.contains_key("input_params") {
        return Err(ApiError::invalid_field(
            "input_params",
            "Use `task_input`, not `input_params`: this API takes its variables in `task_input`",
        ));
    }
    // Multipart sends `task_input` as JSON text.
    if let Some(Value::String(text)) = object.get("task_input") {
        let parsed: Value = serde_json::from_str(text)
            .map_err(|_| ApiError::invalid_field("task_input", "`task_input` must be a JSON object"))?;
        object.insert("task_input".into(), parsed);
    }
    // ...and `use_fallback_model` as text.
    if let Some(Value::String(flag)) = object.get("use_fallback_model") {
        let flag = match flag.trim() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(ApiError::invalid_field("use_fallback_model", "`use_fallback_model` must be true or false"))
            }
        };
        object.insert("use_fallback_model".into(), Value::Bool(flag));
    }
    let body: RunRequest = from_object(object)?;
    let snapshot = state.engine().tasks.load();
    let task: Arc<TaskSpec> = snapshot
        .get(&principal.workspace_id, slug)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("No task `{slug}`")))?;
    drop(snapshot);
    let session =
        match req.headers().get("x-session-id") {
            None => None,
            Some(v) => Some(v.to_str().ok().filter(|s| !s.is_empty() && s.len() <= 256).ok_or_else(|| {
                ApiError::invalid_field("X-Session-Id", "`X-Session-Id` must be 1 to 256 characters")
            })?),
        };
    let selector =
        Selector { revision_id: query.revision_id.as_deref(), revision_tag: query.revision_tag.as_deref(), session };
    let revision = task.select(selector, rand::random::<f64>()).map_err(|e| select_error(slug, e))?;
    let input = body.task_input.clone();
    // The image: the request's file, or a media_ref in `task_input.image`.
    let uploaded = match file {
        Some((field, file)) if field == "image" => Some(file),
        Some((field, _)) => return Err(ApiError::invalid_field(&field, "A task takes its file in `image`")),
        None => None,
    };
    let image_ref = input.get("image").and_then(Value::as_str).map(str::to_owned);
    let image = if task.image_required {
        let image = form::file_input(state, &principal.workspace_id, "image", FileKind::Image, uploaded, image_ref)
            .await?
            .ok_or_else(|| {
                ApiError::missing_field("image").with_message(format!(
                    "Task `{slug}` needs an image: send it as a multipart `image` file, or a media_ref in `task_input.image`"
                ))
            })?;
        Some(image)
    } else if uploaded.is_some() {
        return Err(ApiError::invalid_field("image", format!("Task `{slug}` takes no image")));
    } else {
        None
    };
    // Fill the templates in one pass each: a value is data, never a template again.
    let value = |name: &str| input_value(&input, name);
    let user = Template::parse(&revision.user_prompt).map_err(|e| ApiError::internal(format!("task template: {e}")));
    let system = revision.system_prompt.as_deref().map(Template::parse).transpose();
    let (user, system) = (user?, system.map_err(|e| ApiError::internal(format!("task template: {e}")))?);
    let mut missing = Vec::new();
    let system = match system.map(|t| t.render(value)) {
        None => None,
        Some(Ok(text)) => Some(text),
        Some(Err(names)) => {
            missing.extend(names);
            None
        }
    };
    let prompt = match user.render(value) {
        Ok(text) => text,
        Err(names) => {
            missing.extend(names.into_iter().filter(|n| !missing.contains(n)).collect::<Vec<_>>());
            String::new()
        }
    };
    if !missing.is_empty() {
        return Err(ApiError::missing_variable(slug, &missing));
    }
    let model = state.catalogue.model(&revision.model).ok_or_else(|| {
        ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            crate::api::errors::ErrorType::UnavailableError,
            "provider_unavailable",
            format!(
                "Model `{}` of task `{slug}` revision `{}` is no longer in the model catalogue",
                revision.model, revision.id
            ),
        )
    })?;
    let mut model = model.clone();
    if let Some(fallback) = &revision.fallback_model {
        model.fallback = state.catalogue.model(fallback).map(|f| vec![f.name.clone()]).unwrap_or_default();
    }
    let plan = Plan {
        task: &task,
        revision,
        model,
        system,
        prompt,
        image,
        reporting_group: crate::api::call::check_reporting_group(body.reporting_group.or(query.reporting_group))?,
        use_fallback: body.use_fallback_model.or(query.use_fallback_model).unwrap_or(false),
        started,
    };
    let stream = query.stream.unwrap_or(false);
    if stream && task.output_format != OutputFormat::Text {
        return Err(ApiError::invalid_field("stream", "Only text tasks stream"));
    }
    let labels = [task.slug.as_str(), revision.id.as_str()];
    let result = match task.output_format {
        OutputFormat::Text | OutputFormat::Json | OutputFormat::Csv | OutputFormat::Pdf => {
            run_chat(state, req, principal, &plan, stream).await
        }
        OutputFormat::Image => run_image(state, req, principal, &plan).await,
        OutputFormat::Audio => run_audio(state, req, principal, &plan).await,
    };
    let outcome = match &result {
        Ok(RunAnswer::Run(run)) if run.metadata.call.fallback.used => "fallback",
        Ok(_) => "ok",
        Err(_) => "error",
    };
    state.metrics.task_runs.with_label_values(&[labels[0], labels[1], outcome]).inc();
    state.metrics.task_run_duration.with_label_values(&labels).observe(started.elapsed().as_secs_f64());
    match result? {
        RunAnswer::Stream(mut response) => {
            if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&revision.id) {
                response
                    .headers_mut()
                    .insert(actix_web::http::header::HeaderName::from_static("x-switchyard-revision"), value);
            }
            Ok(response)
        }
        RunAnswer::Run(mut run) => {
            run.input = input;
            let model = run.metadata.call.model.clone();
            Ok(HttpResponse::Ok()
                .insert_header(("x-switchyard-model", model.as_str()))
                .insert_header(("x-switchyard-revision", run.revision.id.clone()))
                .json(run))
        }
    }
}
