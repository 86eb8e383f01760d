//! A run from its request to its answer: the revision picked, the prompt filled, the output format's runner
//! called, and the answer shaped as `task.run`.

use super::chat::run_chat;
use super::files::{run_audio, run_image};
use super::{RevisionRef, RunBody, RunFile, RunMetadata, RunQuery, RunRequest, TaskRun};
use crate::api::body::from_object;
use crate::api::errors::ApiError;
use crate::api::form::{self, FileInput, FileKind};
use crate::auth::Principal;
use crate::clock::now_unix;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Instant;
use switchyard_actors::tasks::{OutputFormat, Revision, SelectError, Selector, TaskSpec, Template};
use switchyard_actors::ModelSpec;

/// What a run has settled on before it calls a model.
pub(super) struct Plan<'a> {
    pub(super) task: &'a TaskSpec,
    pub(super) revision: &'a Revision,
    /// The revision's model, its fallback chain set to the revision's fallback model.
    pub(super) model: ModelSpec,
    pub(super) system: Option<String>,
    pub(super) prompt: String,
    pub(super) image: Option<FileInput>,
    pub(super) reporting_group: Option<String>,
    pub(super) use_fallback: bool,
    pub(super) started: Instant,
}

impl Plan<'_> {
    pub(super) fn task_ref(&self) -> Option<(String, String)> {
        Some((self.task.slug.clone(), self.revision.id.clone()))
    }

    /// The revision's `params` as the output format's parameters (checked when the task was saved).
    pub(super) fn params<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_value(Value::Object(self.revision.params.clone()))
            .map_err(|e| ApiError::internal(format!("revision `{}` params: {e}", self.revision.id)))
    }
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
pub(super) async fn execute(
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
    let input = body.task_input;
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
        reporting_group: crate::api::call::check_reporting_group(query.reporting_group)?,
        use_fallback: query.use_fallback_model.unwrap_or(false),
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

pub(super) enum RunAnswer {
    Run(Box<TaskRun>),
    Stream(HttpResponse),
}

pub(super) fn task_run(
    plan: &Plan<'_>,
    id: String,
    output: Value,
    files: Vec<RunFile>,
    metadata: RunMetadata,
) -> TaskRun {
    TaskRun {
        id,
        object: "task.run",
        created: now_unix(),
        task: plan.task.slug.clone(),
        revision: RevisionRef { id: plan.revision.id.clone(), tag: plan.revision.tag.clone() },
        output,
        output_format: plan.task.output_format.as_str(),
        files,
        usage: None,
        metadata,
        input: Map::new(),
        reporting_group: plan.reporting_group.clone(),
    }
}
