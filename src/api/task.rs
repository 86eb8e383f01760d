//! `POST /api/v1/task`: the model-based Tasks API (001). The model's modality picks the body shape: chat, image,
//! text-to-speech, speech-to-speech, speech-to-text. JSON, or `multipart/form-data` with one file.

use super::body::from_object;
use super::call::RoutingQuery;
use super::chat::{self, ChatCall, ChatInput, Completion, Delivery, Face, MessageIn, StopIn};
use super::docs::{Authenticated, IdempotencyKey, Idempotent, JsonBody, ModelCall};
use super::errors::{ApiError, ErrorBody};
use super::form::{CallBody, FileInput};
use crate::auth::Principal;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use std::time::Instant;
use switchyard_actors::catalogue::Modality;
use switchyard_actors::ModelSpec;
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/api/v1/task").route(web::post().to(create_task)));
}

/// A chat task. Unknown fields are refused by name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskChatRequest {
    /// A chat model of the catalogue, e.g. `gpt-4`, `claude-3-sonnet`, `mixtral-8x7b`, `sim-chat`.
    pub model: String,
    pub messages: Vec<MessageIn>,
    /// Defaults to the model's `default_max_tokens`.
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Option<StopIn>,
    /// Answer as Server-Sent Events: `task.completion.chunk` objects, usage in the last, then `[DONE]`.
    #[serde(default)]
    pub stream: bool,
    /// Kept on the usage record for segmented analytics.
    pub reporting_group: Option<String>,
    /// Go straight to the model's fallback.
    pub use_fallback_model: Option<bool>,
}

#[utoipa::path(
    post,
    path = "/api/v1/task",
    tag = "tasks",
    request_body(content = TaskChatRequest, description = "A chat task; for other models `ImageTaskRequest`, `SpeechTaskRequest`, `ConversionTaskRequest` or `TranscriptionTaskRequest`. JSON, or multipart/form-data with the file in `audio` or `image`"),
    params(RoutingQuery, IdempotencyKey),
    responses((status = 200, description = "The completion (with `stream: true`, an SSE stream of `task.completion.chunk`), `image.generation` (`ImageGeneration`), `speech.generation` (`SpeechGeneration`) or `transcription` (`Transcription`)", body = Completion), Authenticated, ModelCall, Idempotent, JsonBody, (status = 400, description = "invalid_json, missing_field, invalid_field, unknown_field, unsupported_model", body = ErrorBody)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn create_task(
    state: web::Data<AppState>,
    principal: Principal,
    query: web::Query<RoutingQuery>,
    req: HttpRequest,
    body: CallBody,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let query = query.into_inner();
    let fingerprint = body.fingerprint.clone();
    // Boxed: the futures of every modality's path are large, and a future is moved (copied) as it is handed on.
    let run = Box::pin(async {
        if let Some((model, chat)) = body.json().and_then(|json| chat_in_one_pass(&state, json)) {
            return chat_task(&state, &principal, query, &req, model, chat, started).await;
        }
        let (object, file) = body.parts()?;
        Box::pin(run(&state, &principal, query, &req, object, file, started)).await
    });
    super::idempotency::guard(&state, &req, &principal, &fingerprint, run).await
}

/// A well-formed JSON chat task, parsed in one pass; `None` sends the body down the general path, which finds what
/// is wrong with it (or that the model is not a chat model).
fn chat_in_one_pass<'s>(state: &'s AppState, json: &[u8]) -> Option<(&'s ModelSpec, TaskChatRequest)> {
    let chat: TaskChatRequest = super::body::parse_well_formed(json)?;
    let model = state.catalogue.model(&chat.model).filter(|m| m.modality == Modality::Chat)?;
    Some((model, chat))
}

/// Body fields win over the query's; `use_fallback_model` holds if either says so.
fn routing(
    query: &RoutingQuery,
    reporting_group: Option<String>,
    use_fallback: Option<bool>,
) -> (Option<String>, Option<bool>) {
    (
        reporting_group.or_else(|| query.reporting_group.clone()),
        Some(use_fallback.unwrap_or(false) || query.use_fallback_model.unwrap_or(false)),
    )
}

async fn run(
    state: &web::Data<AppState>,
    principal: &Principal,
    query: RoutingQuery,
    req: &HttpRequest,
    object: serde_json::Map<String, serde_json::Value>,
    file: Option<(String, FileInput)>,
    started: Instant,
) -> Result<HttpResponse, ApiError> {
    if object.contains_key("input_params") {
        return Err(ApiError::invalid_field(
            "input_params",
            "Use `task_input`, not `input_params`: this API takes its variables in `task_input`",
        ));
    }
    let model_name = match object.get("model") {
        Some(serde_json::Value::String(name)) => name.clone(),
        Some(_) => return Err(ApiError::invalid_field("model", "`model` must be a string")),
        None => return Err(ApiError::missing_field("model")),
    };
    let model = state.catalogue.model(&model_name).ok_or_else(|| ApiError::unsupported_model(&model_name))?;
    // The one file a model takes, in the field it takes it in.
    let wanted = match model.modality {
        Modality::Image => Some("image"),
        Modality::SpeechToSpeech | Modality::Transcription => Some("audio"),
        // Text-to-speech takes no file, but 001's multipart example sends one: it is taken and not used, with a
        // warning in the answer.
        Modality::Speech => Some("audio"),
        Modality::Chat | Modality::Embedding | Modality::Realtime => None,
    };
    if model.modality == Modality::Realtime {
        return Err(ApiError::unsupported_model(&model_name).with_message(format!(
            "{} is a realtime model: open a WebSocket at /v1/realtime?model={}",
            model.name, model.name
        )));
    }
    if model.modality == Modality::Embedding {
        return Err(ApiError::unsupported_model(&model_name).with_message(format!(
            "{} is an embedding model: use POST /api/runs (modes execute, index, search) or POST /v1/embeddings",
            model.name
        )));
    }
    let file = match (file, wanted) {
        (None, _) => None,
        (Some((field, file)), Some(wanted)) if field == wanted => Some(file),
        (Some((field, _)), _) => {
            return Err(ApiError::invalid_field(
                &field,
                match wanted {
                    Some(wanted) => format!("{} takes its file in `{wanted}`, not `{field}`", model.name),
                    None => format!("{} takes no file", model.name),
                },
            ))
        }
    };
    match model.modality {
        Modality::Image => {
            let mut body: super::image::ImageTaskRequest = from_object(object)?;
            (body.reporting_group, body.use_fallback_model) =
                routing(&query, body.reporting_group, body.use_fallback_model);
            super::image::respond(state, req, principal, model, body, file, started).await
        }
        Modality::Speech => {
            let mut body: super::speech::SpeechTaskRequest = from_object(object)?;
            (body.reporting_group, body.use_fallback_model) =
                routing(&query, body.reporting_group, body.use_fallback_model);
            super::speech::respond_speech(state, req, principal, model, body, file, started).await
        }
        Modality::SpeechToSpeech => {
            let mut body: super::speech::ConversionTaskRequest = from_object(object)?;
            (body.reporting_group, body.use_fallback_model) =
                routing(&query, body.reporting_group, body.use_fallback_model);
            super::speech::respond_conversion(state, req, principal, model, body, file, started).await
        }
        Modality::Transcription => {
            let mut body: super::speech::TranscriptionTaskRequest = from_object(object)?;
            (body.reporting_group, body.use_fallback_model) =
                routing(&query, body.reporting_group, body.use_fallback_model);
            super::speech::respond_transcription(state, req, principal, model, body, file, started).await
        }
        Modality::Chat | Modality::Embedding | Modality::Realtime => {
            let body: TaskChatRequest = from_object(object)?;
            chat_task(state, principal, query, req, model, body, started).await
        }
    }
}

async fn chat_task(
    state: &web::Data<AppState>,
    principal: &Principal,
    query: RoutingQuery,
    req: &HttpRequest,
    model: &ModelSpec,
    body: TaskChatRequest,
    started: Instant,
) -> Result<HttpResponse, ApiError> {
    let (reporting_group, use_fallback) = routing(&query, body.reporting_group, body.use_fallback_model);
    let input = ChatInput {
        messages: body.messages,
        max_tokens: body.max_tokens,
        temperature: body.temperature,
        top_p: body.top_p,
        stop: body.stop,
    };
    let request = chat::prepare(model, input)?;
    let delivery = Delivery { stream: body.stream, usage_chunk: false };
    let call = ChatCall {
        face: Face::Task,
        principal,
        model,
        request,
        delivery,
        reporting_group: super::call::check_reporting_group(reporting_group)?,
        use_fallback: use_fallback.unwrap_or(false),
        started,
        endpoint: "/api/v1/task",
        task: None,
    };
    chat::respond(state, req, call).await
}
