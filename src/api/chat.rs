//! Chat through the gateway, shared by both faces (`/api/v1/task` and `/v1/chat/completions`): the request
//! bodies, validation against the catalogue, the upstream call, and the response objects, whole or streamed.

use super::errors::ApiError;
use crate::metrics::StreamGauge;
use crate::state::{now_unix, AppState};
use actix_web::{web, HttpResponse};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::time::{Duration, Instant};
use switchyard_actors::{
    ChatEvent, ChatRequest, ChatResponse, ChatStream, Message, ModelSpec, ProviderError, Role, Usage,
};
use utoipa::ToSchema;

/// Which API the caller speaks: it decides object names and id prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Face {
    Task,
    OpenAi,
}

impl Face {
    fn object(self) -> &'static str {
        match self {
            Face::Task => "task.completion",
            Face::OpenAi => "chat.completion",
        }
    }

    fn chunk_object(self) -> &'static str {
        match self {
            Face::Task => "task.completion.chunk",
            Face::OpenAi => "chat.completion.chunk",
        }
    }

    fn new_id(self) -> String {
        let id = crate::auth::new_id("x");
        match self {
            Face::Task => format!("task_{}", &id[2..]),
            Face::OpenAi => format!("chatcmpl-{}", &id[2..]),
        }
    }
}

/// One chat message as callers send it.
#[derive(Debug, Deserialize, ToSchema)]
pub struct MessageIn {
    /// `system`, `user` or `assistant` (`developer` is taken as `system`).
    pub role: String,
    /// Text, or an array of `{"type": "text", "text": ...}` parts.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub content: Option<ContentIn>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ContentIn {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

/// `stop`: one sequence or up to four.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StopIn {
    One(String),
    Many(Vec<String>),
}

/// The validated parts of a chat request, common to both faces.
pub struct ChatInput {
    pub messages: Vec<MessageIn>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Option<StopIn>,
}

/// Checks a chat request against the model's limits and turns it into the engine's request.
pub fn prepare(model: &ModelSpec, input: ChatInput) -> Result<ChatRequest, ApiError> {
    if input.messages.is_empty() {
        return Err(ApiError::invalid_field("messages", "`messages` must hold at least one message"));
    }
    let mut messages = Vec::with_capacity(input.messages.len());
    for (i, m) in input.messages.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(ApiError::invalid_field(
                    &format!("messages[{i}].role"),
                    format!("Unsupported role `{other}`: use system, user or assistant"),
                ))
            }
        };
        let content = match m.content {
            None => String::new(),
            Some(ContentIn::Text(text)) => text,
            Some(ContentIn::Parts(parts)) => {
                let mut text = String::new();
                for part in parts {
                    match (part.kind.as_str(), part.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        (kind, _) => {
                            return Err(ApiError::invalid_field(
                                &format!("messages[{i}].content"),
                                format!("Unsupported content part `{kind}`: only text parts are accepted"),
                            ))
                        }
                    }
                }
                text
            }
        };
        messages.push(Message { role, content });
    }
    if !messages.iter().any(|m| m.role != Role::System) {
        return Err(ApiError::invalid_field("messages", "`messages` needs at least one user or assistant message"));
    }
    let max_tokens = match input.max_tokens {
        None => model.default_max_tokens,
        Some(0) => return Err(ApiError::invalid_field("max_tokens", "`max_tokens` must be at least 1")),
        Some(n) if n > model.max_output_tokens => {
            return Err(ApiError::invalid_field(
                "max_tokens",
                format!("`max_tokens` is {n}, but {} allows at most {}", model.name, model.max_output_tokens),
            ))
        }
        Some(n) => n,
    };
    if let Some(t) = input.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::invalid_field("temperature", "`temperature` must be between 0 and 2"));
        }
    }
    if let Some(p) = input.top_p {
        if !(0.0..=1.0).contains(&p) {
            return Err(ApiError::invalid_field("top_p", "`top_p` must be between 0 and 1"));
        }
    }
    let stop = match input.stop {
        None => vec![],
        Some(StopIn::One(s)) => vec![s],
        Some(StopIn::Many(v)) => v,
    };
    if stop.len() > 4 || stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid_field("stop", "`stop` takes up to 4 non-empty sequences"));
    }
    Ok(ChatRequest { messages, max_tokens, temperature: input.temperature, top_p: input.top_p, stop })
}

/// The time spent upstream, left on the response for the overhead measurement.
#[derive(Clone, Copy, Debug)]
pub struct UpstreamTime(pub Duration);

#[derive(Serialize, ToSchema)]
pub struct UsageOut {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl From<Usage> for UsageOut {
    fn from(u: Usage) -> Self {
        UsageOut { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens, total_tokens: u.total() }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: String,
}

#[derive(Serialize, ToSchema)]
pub struct Choice {
    pub index: u32,
    pub message: AssistantMessage,
    pub finish_reason: &'static str,
}

/// `task.completion` (or `chat.completion` on the OpenAI face).
#[derive(Serialize, ToSchema)]
pub struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: UsageOut,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

/// How the caller wants the answer.
#[derive(Clone, Copy, Debug)]
pub struct Delivery {
    pub stream: bool,
    /// OpenAI's `stream_options.include_usage`: usage in a chunk of its own with no choices.
    pub usage_chunk: bool,
}

/// Runs a prepared chat request and answers it, whole or as an SSE stream.
pub async fn respond(
    state: &web::Data<AppState>,
    face: Face,
    model: &ModelSpec,
    request: ChatRequest,
    delivery: Delivery,
    started: Instant,
) -> Result<HttpResponse, ApiError> {
    let provider = state
        .providers
        .for_model(model)
        .ok_or_else(|| ApiError::internal(format!("model {} has no provider", model.name)))?;
    let upstream_started = Instant::now();
    if !delivery.stream {
        let result = provider.chat(0, model, &request).await;
        let upstream = upstream_started.elapsed();
        observe_upstream(state, model, upstream);
        let answer = result.map_err(|e| upstream_error(state, e))?;
        state.metrics.record_tokens(&model.name, &answer.usage);
        let mut response = HttpResponse::Ok().json(completion(face, model, answer));
        response.extensions_mut().insert(UpstreamTime(upstream));
        return Ok(response);
    }
    let mut events = provider.chat_stream(0, model, &request).await.map_err(|e| upstream_error(state, e))?;
    // Wait for the first event before answering, so a failure up to here is still a plain error response
    // (and, later, a fallback): nothing has reached the client yet.
    let first = match events.next().await {
        Some(Ok(event)) => event,
        Some(Err(e)) => return Err(upstream_error(state, e)),
        None => {
            let e = ProviderError::Protocol { provider: model.provider.clone(), message: "empty stream".into() };
            return Err(upstream_error(state, e));
        }
    };
    observe_upstream(state, model, upstream_started.elapsed());
    state.metrics.ttft.with_label_values(&[&model.name]).observe(started.elapsed().as_secs_f64());
    let body = sse_body(state.clone(), face, model.name.clone(), first, events, delivery);
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

fn observe_upstream(state: &AppState, model: &ModelSpec, elapsed: Duration) {
    state.metrics.upstream_duration.with_label_values(&[&model.provider, &model.name]).observe(elapsed.as_secs_f64());
}

fn upstream_error(state: &AppState, e: ProviderError) -> ApiError {
    let provider = match &e {
        ProviderError::Unavailable { provider, .. }
        | ProviderError::RateLimited { provider, .. }
        | ProviderError::Rejected { provider, .. }
        | ProviderError::BadCredentials { provider, .. }
        | ProviderError::Upstream { provider, .. }
        | ProviderError::Connection { provider, .. }
        | ProviderError::Timeout { provider, .. }
        | ProviderError::Protocol { provider, .. } => provider.clone(),
    };
    state.metrics.upstream_errors.with_label_values(&[&provider, e.kind()]).inc();
    tracing::warn!(provider = %provider, kind = e.kind(), error = %e, "upstream call failed");
    ApiError::from(e)
}

fn completion(face: Face, model: &ModelSpec, answer: ChatResponse) -> Completion {
    Completion {
        id: face.new_id(),
        object: face.object(),
        created: now_unix(),
        model: model.name.clone(),
        choices: vec![Choice {
            index: 0,
            message: AssistantMessage { role: "assistant", content: answer.text },
            finish_reason: answer.finish_reason.as_str(),
        }],
        usage: answer.usage.into(),
    }
}

fn frame<T: Serialize>(value: &T) -> Bytes {
    let mut buffer = Vec::with_capacity(192);
    buffer.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut buffer, value).is_err() {
        buffer.truncate(6);
        buffer.extend_from_slice(
            br#"{"error":{"message":"serialization failed","type":"api_error","code":"internal_error","param":null}}"#,
        );
    }
    buffer.extend_from_slice(b"\n\n");
    Bytes::from(buffer)
}

/// The SSE body: a role chunk, one chunk per delta, the finishing chunk with usage, then `[DONE]`. A failure
/// part way sends one error frame and ends without `[DONE]`. If the client leaves, this stream is dropped, and
/// with it the upstream request.
fn sse_body(
    state: web::Data<AppState>,
    face: Face,
    model: String,
    first: ChatEvent,
    mut events: ChatStream,
    delivery: Delivery,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
    async_stream::stream! {
        let _in_flight = StreamGauge::new(&state.metrics.streams_in_flight);
        let id = face.new_id();
        let created = now_unix();
        let chunk = |choices: &[ChunkChoice<'_>], usage: Option<UsageOut>| {
            frame(&Chunk { id: &id, object: face.chunk_object(), created, model: &model, choices, usage })
        };
        let role = ChunkChoice { index: 0, delta: Delta { role: Some("assistant"), content: Some("") }, finish_reason: None };
        yield Ok(chunk(&[role], None));
        let mut next = Some(Ok(first));
        loop {
            let event = match next.take() {
                Some(event) => event,
                None => match events.next().await {
                    Some(event) => event,
                    None => Err(ProviderError::Connection {
                        provider: model.clone(),
                        message: "stream ended without finishing".into(),
                    }),
                },
            };
            match event {
                Ok(ChatEvent::Delta(text)) => {
                    let choice = ChunkChoice { index: 0, delta: Delta { role: None, content: Some(&text) }, finish_reason: None };
                    yield Ok(chunk(&[choice], None));
                }
                Ok(ChatEvent::Finish { reason, usage }) => {
                    state.metrics.record_tokens(&model, &usage);
                    let done = ChunkChoice { index: 0, delta: Delta { role: None, content: None }, finish_reason: Some(reason.as_str()) };
                    if delivery.usage_chunk {
                        yield Ok(chunk(&[done], None));
                        yield Ok(chunk(&[], Some(usage.into())));
                    } else {
                        yield Ok(chunk(&[done], Some(usage.into())));
                    }
                    yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
                    break;
                }
                Err(e) => {
                    let error = upstream_error(&state, e);
                    yield Ok(frame(&error.body()));
                    break;
                }
            }
        }
    }
}
