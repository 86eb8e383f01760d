//! Task runs (000): `POST /api/v1/tasks/{task}/run` picks a revision (id, tag, session or weight), fills its prompt
//! from `task_input`, runs it on the revision's model (with its fallback) and shapes the answer by the task's
//! output format: json (checked against the schema, one repair attempt), text, csv, pdf, image or audio. Also the
//! per-revision statistics of an A/B test, and the list of tasks a workspace sees.

use super::body::{from_object, parse_object, read_json};
use super::chat::{self, ChatCall, ChatOutcome, Completed, Delivery, Face, Metadata, UsageOut};
use super::errors::{ApiError, ErrorBody};
use super::form::{self, FileInput, FileKind};
use crate::auth::Principal;
use crate::state::{now_unix, AppState};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Instant;
use switchyard_actors::chat::{ChatRequest, InlineImage, Message, Role};
use switchyard_actors::tasks::{OutputFormat, Revision, SelectError, Selector, TaskSpec, Template};
use switchyard_actors::ModelSpec;
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/api/v1/tasks").route(web::get().to(list_tasks)))
        .service(super::resource("/api/v1/tasks/{task}/run").route(web::post().to(run_task)))
        .service(super::resource("/api/v1/tasks/{task}/revisions/stats").route(web::get().to(revision_stats)));
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
        let run = execute(&state, &principal, &slug, query, &req, body, started);
        return super::idempotency::guard(&state, &req, &principal, &fingerprint, run).await;
    }
    let raw = read_json(&req, payload, state.config.server.max_body_bytes).await?;
    let run = async {
        let body = RunBody { object: parse_object(&raw)?, file: None };
        execute(&state, &principal, &slug, query, &req, body, started).await
    };
    super::idempotency::guard(&state, &req, &principal, &raw, run).await
}

/// What a run has settled on before it calls a model.
struct Plan<'a> {
    task: &'a TaskSpec,
    revision: &'a Revision,
    /// The revision's model, its fallback chain set to the revision's fallback model.
    model: ModelSpec,
    system: Option<String>,
    prompt: String,
    image: Option<FileInput>,
    reporting_group: Option<String>,
    use_fallback: bool,
    started: Instant,
}

impl Plan<'_> {
    fn task_ref(&self) -> Option<(String, String)> {
        Some((self.task.slug.clone(), self.revision.id.clone()))
    }

    /// The revision's `params` as the output format's parameters (checked when the task was saved).
    fn params<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
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
            super::errors::ErrorType::UnavailableError,
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
        reporting_group: chat::check_reporting_group(query.reporting_group)?,
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

enum RunAnswer {
    Run(Box<TaskRun>),
    Stream(HttpResponse),
}

fn task_run(plan: &Plan<'_>, id: String, output: Value, files: Vec<RunFile>, metadata: RunMetadata) -> TaskRun {
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

/// Chat parameters a revision may set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatParams {
    max_tokens: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    stop: Option<Vec<String>>,
}

/// Checks a revision's `params` for its output format (the admin API calls it before saving).
pub fn check_params(format: OutputFormat, params: &Map<String, Value>) -> Result<(), String> {
    let object = Value::Object(params.clone());
    let result = match format.modality() {
        switchyard_actors::catalogue::Modality::Chat => serde_json::from_value::<ChatParams>(object).map(|_| ()),
        switchyard_actors::catalogue::Modality::Image => serde_json::from_value::<ImageParams>(object).map(|_| ()),
        _ => serde_json::from_value::<AudioParams>(object).map(|_| ()),
    };
    result.map_err(|e| e.to_string())
}

/// The usage records' endpoint for a run, and for its repair attempt (counted in the run's tokens and credits, not
/// as a request of its own).
const RUN_ENDPOINT: &str = "/api/v1/tasks/run";
const REPAIR_ENDPOINT: &str = "/api/v1/tasks/run#repair";

const JSON_INSTRUCTION: &str = "Answer with a single JSON object and nothing else: no prose, no code fences.";
const CSV_INSTRUCTION: &str =
    "Answer with CSV only: a header row, then one row per record, comma-separated, quoted where needed, no prose.";

async fn run_chat(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    principal: &Principal,
    plan: &Plan<'_>,
    stream: bool,
) -> Result<RunAnswer, ApiError> {
    let params: ChatParams = plan.params()?;
    let format = plan.task.output_format;
    let mut system = plan.system.clone().unwrap_or_default();
    let extra = match format {
        OutputFormat::Json => {
            let schema = plan.task.schema.as_ref().map(|s| format!(" It must satisfy this JSON Schema: {s}"));
            Some(format!("{JSON_INSTRUCTION}{}", schema.unwrap_or_default()))
        }
        OutputFormat::Csv => Some(CSV_INSTRUCTION.to_owned()),
        _ => None,
    };
    if let Some(extra) = extra {
        if !system.is_empty() {
            system.push_str("\n\n");
        }
        system.push_str(&extra);
    }
    let mut messages = Vec::new();
    if !system.is_empty() {
        messages.push(Message::text(Role::System, system));
    }
    let mut user = Message::text(Role::User, plan.prompt.clone());
    if let Some(image) = &plan.image {
        user.images.push(InlineImage {
            media_type: image.content_type.to_owned(),
            data_base64: base64::engine::general_purpose::STANDARD.encode(&image.bytes),
        });
    }
    messages.push(user);
    let model = &plan.model;
    let request = ChatRequest {
        messages,
        max_tokens: params.max_tokens.unwrap_or(model.default_max_tokens).clamp(1, model.max_output_tokens.max(1)),
        temperature: params.temperature,
        top_p: params.top_p,
        stop: params.stop.unwrap_or_default(),
        json: format == OutputFormat::Json,
    };
    let call = |request: ChatRequest, stream: bool, endpoint: &'static str| ChatCall {
        face: Face::Task,
        principal,
        model,
        request,
        delivery: Delivery { stream, usage_chunk: false },
        reporting_group: plan.reporting_group.clone(),
        use_fallback: plan.use_fallback,
        started: plan.started,
        endpoint,
        task: plan.task_ref(),
    };
    let first = match chat::run(state, req, call(request.clone(), stream, RUN_ENDPOINT)).await? {
        ChatOutcome::Stream(response) => return Ok(RunAnswer::Stream(response)),
        ChatOutcome::Whole(done) => done,
    };
    let check = |text: &str| -> Result<Value, String> {
        match format {
            OutputFormat::Json => check_json(text, plan.task.schema.as_ref()),
            OutputFormat::Csv => crate::render::csv(text).map(|(csv, _, _)| Value::String(csv)),
            _ => Ok(Value::String(text.to_owned())),
        }
    };
    let (done, output, repaired, credits, spent_tokens) = match check(&first.answer.text) {
        Ok(output) => (first, output, false, None, (0, 0)),
        Err(problem) => {
            // One repair attempt: the answer and what is wrong with it go back to the model.
            let mut retry = request.clone();
            retry.messages.push(Message::text(Role::Assistant, first.answer.text.clone()));
            retry.messages.push(Message::text(
                Role::User,
                format!("That answer is not valid: {problem}. Answer again with only the corrected output."),
            ));
            let second = match chat::run(state, req, call(retry, false, REPAIR_ENDPOINT)).await? {
                ChatOutcome::Whole(done) => done,
                ChatOutcome::Stream(_) => return Err(ApiError::internal("a repair attempt streamed")),
            };
            let spent =
                switchyard_actors::Credits(first.metadata.credits_charged.0 + second.metadata.credits_charged.0);
            let first_tokens = (first.answer.usage.prompt_tokens, first.answer.usage.completion_tokens);
            match check(&second.answer.text) {
                Ok(output) => (second, output, true, Some(spent), first_tokens),
                Err(problem) => {
                    return Err(ApiError::invalid_model_output(format!(
                        "The model's {} answer was not valid, even after a repair attempt: {problem}",
                        format.as_str()
                    )))
                }
            }
        }
    };
    let Completed { id, answer, mut metadata, model: _, upstream: _ } = *done;
    if let Some(spent) = credits {
        metadata.credits_charged = spent;
    }
    let mut files = Vec::new();
    let output = match format {
        OutputFormat::Csv => {
            let text = output.as_str().unwrap_or_default().to_owned();
            let file =
                store_file(state, req, principal, &format!("{}.csv", plan.task.slug), "text/csv", text.as_bytes())
                    .await?;
            files.push(file);
            Value::String(text)
        }
        OutputFormat::Pdf => {
            let title = plan.task.description.clone();
            let text = answer.text.clone();
            let pdf = tokio::task::spawn_blocking(move || crate::render::pdf(&title, &text))
                .await
                .map_err(|e| ApiError::internal(format!("pdf: {e}")))?;
            let filename = format!("{}.pdf", plan.task.slug);
            files.push(store_file(state, req, principal, &filename, "application/pdf", &pdf).await?);
            Value::String(answer.text.clone())
        }
        _ => output,
    };
    let tokens = switchyard_actors::Usage {
        prompt_tokens: answer.usage.prompt_tokens + spent_tokens.0,
        completion_tokens: answer.usage.completion_tokens + spent_tokens.1,
    };
    let metadata = RunMetadata { call: metadata, repaired, tokens: Some(tokens.into()) };
    let mut run = task_run(plan, id, output, files, metadata);
    run.usage = Some(tokens.into());
    Ok(RunAnswer::Run(Box::new(run)))
}

/// Parses a JSON answer (code fences tolerated) and checks it against the schema.
fn check_json(text: &str, schema: Option<&Value>) -> Result<Value, String> {
    let value: Value =
        serde_json::from_str(crate::render::strip_fences(text)).map_err(|e| format!("it is not JSON ({e})"))?;
    if let Some(schema) = schema {
        let validator = jsonschema::validator_for(schema).map_err(|e| format!("the task's schema is invalid: {e}"))?;
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .take(5)
            .map(|e| {
                let at = e.instance_path.to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        if !errors.is_empty() {
            return Err(format!("it does not match the schema ({})", errors.join("; ")));
        }
    }
    Ok(value)
}

async fn store_file(
    state: &AppState,
    req: &HttpRequest,
    principal: &Principal,
    filename: &str,
    content_type: &str,
    bytes: &[u8],
) -> Result<RunFile, ApiError> {
    let stored = crate::media::store_generated(state, &principal.workspace_id, filename, content_type, bytes)
        .await
        .map_err(|e| ApiError::internal(format!("media: {e}")))?;
    Ok(RunFile {
        url: format!("{}/api/media/{}", super::media::public_url(state, req), stored.media_ref),
        media_ref: stored.media_ref,
        filename: filename.to_owned(),
        content_type: content_type.to_owned(),
        bytes: stored.bytes,
    })
}

/// Image parameters a revision may set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageParams {
    width: Option<u32>,
    height: Option<u32>,
    num_inference_steps: Option<u32>,
    guidance_scale: Option<f64>,
    seed: Option<u64>,
    output_format: Option<String>,
}

async fn run_image(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    principal: &Principal,
    plan: &Plan<'_>,
) -> Result<RunAnswer, ApiError> {
    let params: ImageParams = plan.params()?;
    let body = super::image::ImageTaskRequest {
        model: plan.model.name.clone(),
        prompt: plan.prompt.clone(),
        width: params.width,
        height: params.height,
        num_inference_steps: params.num_inference_steps,
        guidance_scale: params.guidance_scale,
        seed: params.seed,
        output_format: params.output_format,
        image: None,
        reporting_group: plan.reporting_group.clone(),
        use_fallback_model: Some(plan.use_fallback),
        task: plan.task_ref(),
    };
    let generation = super::image::generate(state, req, principal, &plan.model, body, None, plan.started).await?;
    let data = generation.data.into_iter().next().ok_or_else(|| ApiError::internal("no image"))?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(&data.b64_json).map(|b| b.len()).unwrap_or(0);
    let extension = if data.content_type == "image/jpeg" { "jpg" } else { "png" };
    let file = RunFile {
        media_ref: data.media_ref.clone(),
        url: data.url.clone(),
        filename: format!("{}.{extension}", plan.task.slug),
        content_type: data.content_type.clone(),
        bytes: bytes as u64,
    };
    let output = serde_json::json!({"url": data.url, "media_ref": data.media_ref, "b64_json": data.b64_json});
    let metadata = RunMetadata { call: generation.metadata, repaired: false, tokens: None };
    Ok(RunAnswer::Run(Box::new(task_run(plan, generation.id, output, vec![file], metadata))))
}

/// Speech parameters a revision may set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AudioParams {
    voice: Option<String>,
    voice_settings: Option<Value>,
    output_format: Option<String>,
}

async fn run_audio(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    principal: &Principal,
    plan: &Plan<'_>,
) -> Result<RunAnswer, ApiError> {
    let params: AudioParams = plan.params()?;
    let body = super::speech::SpeechTaskRequest {
        model: plan.model.name.clone(),
        text: plan.prompt.clone(),
        voice: params.voice,
        voice_settings: params.voice_settings,
        output_format: params.output_format,
        reporting_group: plan.reporting_group.clone(),
        use_fallback_model: Some(plan.use_fallback),
    };
    let mut call = super::speech::SpeakCall::check(&plan.model, body)?;
    call.task = plan.task_ref();
    let speaking =
        super::speech::start_speech(state, req, principal, &plan.model, call, plan.started, "/api/v1/tasks/run")
            .await?;
    let generation = super::speech::finish_audio(state, req, &principal.workspace_id, speaking).await?;
    let audio = &generation.audio;
    let file = RunFile {
        media_ref: audio.media_ref.clone(),
        url: audio.url.clone(),
        filename: format!("{}.{}", plan.task.slug, switchyard_actors::speech::format_extension(&audio.format)),
        content_type: audio.content_type.clone(),
        bytes: audio.bytes,
    };
    let output = serde_json::json!({"url": audio.url, "media_ref": audio.media_ref,
        "content_type": audio.content_type, "duration_seconds": audio.duration_seconds});
    let metadata = RunMetadata { call: generation.metadata, repaired: false, tokens: None };
    Ok(RunAnswer::Run(Box::new(task_run(plan, generation.id, output, vec![file], metadata))))
}

/// A task as a workspace sees it.
#[derive(Serialize, ToSchema)]
pub struct TaskView {
    pub slug: String,
    pub description: String,
    pub output_format: &'static str,
    pub image_required: bool,
    /// The `{{variables}}` a run must supply in `task_input`.
    pub variables: Vec<String>,
    pub revisions: Vec<RevisionView>,
    /// Shared by every workspace (built in, or made by the operator), or this workspace's own.
    pub shared: bool,
}

#[derive(Serialize, ToSchema)]
pub struct RevisionView {
    pub id: String,
    pub tag: Option<String>,
    pub weight: u32,
    pub active: bool,
    pub model: String,
    pub fallback_model: Option<String>,
}

pub fn task_view(task: &TaskSpec, shared: bool) -> TaskView {
    let mut variables: Vec<String> = Vec::new();
    for revision in &task.revisions {
        let texts = std::iter::once(revision.user_prompt.as_str()).chain(revision.system_prompt.as_deref());
        for text in texts {
            if let Ok(template) = Template::parse(text) {
                for name in template.variables() {
                    if !variables.iter().any(|v| v == name) {
                        variables.push(name.to_owned());
                    }
                }
            }
        }
    }
    TaskView {
        slug: task.slug.clone(),
        description: task.description.clone(),
        output_format: task.output_format.as_str(),
        image_required: task.image_required,
        variables,
        revisions: task
            .revisions
            .iter()
            .map(|r| RevisionView {
                id: r.id.clone(),
                tag: r.tag.clone(),
                weight: r.weight,
                active: r.active,
                model: r.model.clone(),
                fallback_model: r.fallback_model.clone(),
            })
            .collect(),
        shared,
    }
}

#[derive(Serialize, ToSchema)]
pub struct TaskList {
    pub object: &'static str,
    pub data: Vec<TaskView>,
}

#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks",
    responses((status = 200, body = TaskList), (status = 401, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list_tasks(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let _permit = super::limits::admit(&state, &req, &principal, 0).await?;
    let snapshot = state.engine().tasks.load();
    let data = snapshot
        .visible(&principal.workspace_id)
        .iter()
        .map(|t| task_view(t, snapshot.get_exact(&principal.workspace_id, &t.slug).is_none()))
        .collect();
    Ok(HttpResponse::Ok().json(TaskList { object: "list", data }))
}

/// `from` / `to` of the statistics: RFC 3339 times or Unix seconds.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RevisionStats {
    pub revision: String,
    pub tag: Option<String>,
    pub weight: Option<u32>,
    pub active: Option<bool>,
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub fallbacks: u64,
    pub fallback_rate: f64,
    pub latency_ms_p50: Option<u64>,
    pub latency_ms_p95: Option<u64>,
    pub mean_prompt_tokens: f64,
    pub mean_completion_tokens: f64,
    /// Mean credits per request.
    pub mean_credits: f64,
    pub credits: f64,
}

#[derive(Serialize, ToSchema)]
pub struct StatsResponse {
    pub task: String,
    pub from: i64,
    pub to: i64,
    pub revisions: Vec<RevisionStats>,
}

/// The value at quantile `q` of sorted `values` (nearest rank).
fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[utoipa::path(get, path = "/api/v1/tasks/{task}/revisions/stats", tag = "tasks",
    params(("task" = String, Path, description = "The task's slug"), StatsQuery),
    responses((status = 200, body = StatsResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn revision_stats(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    query: web::Query<StatsQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    use sqlx::Row;
    let _permit = super::limits::admit(&state, &req, &principal, 0).await?;
    let slug = path.into_inner();
    let task = state.engine().tasks.load().get(&principal.workspace_id, &slug).cloned();
    let (from, to) = super::billing::time_range(query.from.as_deref(), query.to.as_deref())?;
    state.engine().flush_usage().await;
    let rows = sqlx::query(
        "SELECT revision, endpoint, status, fallback_used, latency_ms, prompt_tokens, completion_tokens, credits_milli \
         FROM usage WHERE workspace_id = ? AND task = ? AND created_at >= ? AND created_at < ?",
    )
    .bind(&principal.workspace_id)
    .bind(&slug)
    .bind(from * 1000)
    .bind(to * 1000)
    .fetch_all(state.store.pool())
    .await
    .map_err(ApiError::store)?;
    if task.is_none() && rows.is_empty() {
        return Err(ApiError::not_found(format!("No task `{slug}`")));
    }
    #[derive(Default)]
    struct Acc {
        requests: u64,
        errors: u64,
        fallbacks: u64,
        latencies: Vec<u64>,
        prompt: u64,
        completion: u64,
        credits: i64,
    }
    let mut by_revision: std::collections::BTreeMap<String, Acc> = Default::default();
    if let Some(task) = &task {
        for revision in &task.revisions {
            by_revision.entry(revision.id.clone()).or_default();
        }
    }
    for row in rows {
        let revision: Option<String> = row.try_get("revision").map_err(ApiError::store)?;
        let acc = by_revision.entry(revision.unwrap_or_default()).or_default();
        let status: String = row.try_get("status").map_err(ApiError::store)?;
        let endpoint: String = row.try_get("endpoint").map_err(ApiError::store)?;
        if endpoint != REPAIR_ENDPOINT {
            acc.requests += 1;
            acc.errors += u64::from(status != "ok");
            acc.fallbacks += u64::from(row.try_get::<bool, _>("fallback_used").map_err(ApiError::store)?);
            acc.latencies.push(row.try_get::<i64, _>("latency_ms").map_err(ApiError::store)?.max(0) as u64);
        }
        acc.prompt += row.try_get::<i64, _>("prompt_tokens").map_err(ApiError::store)?.max(0) as u64;
        acc.completion += row.try_get::<i64, _>("completion_tokens").map_err(ApiError::store)?.max(0) as u64;
        acc.credits += row.try_get::<i64, _>("credits_milli").map_err(ApiError::store)?;
    }
    let revisions = by_revision
        .into_iter()
        .map(|(id, mut acc)| {
            acc.latencies.sort_unstable();
            let n = acc.requests.max(1) as f64;
            let rate = |k: u64| if acc.requests == 0 { 0.0 } else { k as f64 / acc.requests as f64 };
            let spec = task.as_ref().and_then(|t| t.revision(&id));
            RevisionStats {
                tag: spec.and_then(|r| r.tag.clone()),
                weight: spec.map(|r| r.weight),
                active: spec.map(|r| r.active),
                requests: acc.requests,
                errors: acc.errors,
                error_rate: rate(acc.errors),
                fallbacks: acc.fallbacks,
                fallback_rate: rate(acc.fallbacks),
                latency_ms_p50: quantile(&acc.latencies, 0.5),
                latency_ms_p95: quantile(&acc.latencies, 0.95),
                mean_prompt_tokens: if acc.requests == 0 { 0.0 } else { acc.prompt as f64 / n },
                mean_completion_tokens: if acc.requests == 0 { 0.0 } else { acc.completion as f64 / n },
                mean_credits: if acc.requests == 0 { 0.0 } else { acc.credits as f64 / 1000.0 / n },
                credits: acc.credits as f64 / 1000.0,
                revision: id,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(StatsResponse { task: slug, from, to, revisions }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_answers_are_parsed_and_checked_against_the_schema() {
        let schema = serde_json::json!({"type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}}});
        assert!(check_json("```json\n{\"name\": \"Jane\"}\n```", Some(&schema)).is_ok());
        assert!(check_json("{\"name\": 3}", Some(&schema)).unwrap_err().contains("/name"));
        assert!(check_json("Sure! Here it is", Some(&schema)).unwrap_err().contains("not JSON"));
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&values, 0.5), Some(50));
        assert_eq!(quantile(&values, 0.95), Some(95));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
