//! Mode `execute`: a published model run once (embeddings, chat, an image).

use super::Ran;
use crate::api::body::from_object;
use crate::api::call::CallSpec;
use crate::api::chat::{self, ChatCall, ChatOutcome, Delivery, Face};
use crate::api::embeddings::{embed_billed, settle, texts_of};
use crate::api::errors::ApiError;
use crate::auth::Principal;
use crate::state::AppState;
use actix_web::{web, HttpRequest};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use switchyard_actors::ModelSpec;

/// The task body a run's input and params make for `model` (the contract has kept their fields apart; errors are
/// located in `input` or `params` by it).
pub(super) fn task_body<T: serde::de::DeserializeOwned>(
    model: &ModelSpec,
    input: Map<String, Value>,
    params: Map<String, Value>,
) -> Result<T, ApiError> {
    let mut object = params;
    object.extend(input);
    object.insert("model".into(), Value::String(model.name.clone()));
    from_object(object)
}

pub(super) async fn execute_embedding(
    state: &AppState,
    req: &HttpRequest,
    spec: &CallSpec<'_>,
    mut input: Map<String, Value>,
) -> Result<Ran, ApiError> {
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

/// Chat through a run: `input.messages` (or `input.prompt`), `params` max_tokens, temperature, top_p, stop.
pub(super) async fn execute_chat(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    spec: CallSpec<'_>,
    mut input: Map<String, Value>,
    params: Map<String, Value>,
) -> Result<Ran, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ChatParams {
        max_tokens: Option<u32>,
        temperature: Option<f64>,
        top_p: Option<f64>,
        stop: Option<chat::StopIn>,
    }
    let params: ChatParams = from_object(params)?;
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
pub(super) async fn execute_image(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    principal: &Principal,
    model: &ModelSpec,
    spec: CallSpec<'_>,
    input: Map<String, Value>,
    params: Map<String, Value>,
) -> Result<Ran, ApiError> {
    let mut body: crate::api::image::ImageTaskRequest = task_body(model, input, params)?;
    body.reporting_group = spec.reporting_group.clone();
    body.use_fallback_model = Some(spec.use_fallback);
    let generation =
        crate::api::image::generate(state, req, principal, model, body, None, spec.started, "/api/runs").await?;
    let images: Vec<Value> = generation
        .data
        .iter()
        .map(|d| json!({"url": d.url, "media_ref": d.media_ref, "content_type": d.content_type}))
        .collect();
    let mut output = json!({"images": images});
    if !generation.warnings.is_empty() {
        output["warnings"] = json!(generation.warnings);
    }
    Ok((generation.id, output, json!(generation.usage), generation.metadata))
}
