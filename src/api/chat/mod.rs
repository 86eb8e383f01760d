//! Chat through the gateway, shared by both faces (`/api/v1/task` and `/v1/chat/completions`): the request
//! bodies and their validation against the catalogue (here), the response objects (`wire`), and the SSE stream
//! with its bill (`stream`). The call itself is a billed call (`super::call`), like every other model's.

mod stream;
pub mod wire;

pub use stream::StreamBill;

use super::call::{Billed, CallSpec, Measured, Metadata, UpstreamTime};
use super::errors::ApiError;
use crate::auth::Principal;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use std::time::{Duration, Instant};
use switchyard_actors::engine::dispatch::Answer;
use switchyard_actors::{ChatEvent, ChatRequest, ChatResponse, ChatStream, Message, ModelSpec, Role};
use utoipa::ToSchema;
pub use wire::{AssistantMessage, Choice, Completion, UsageOut};

/// Which API the caller speaks: it decides object names and id prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Face {
    Task,
    OpenAi,
}

impl Face {
    pub(crate) fn object(self) -> &'static str {
        match self {
            Face::Task => "task.completion",
            Face::OpenAi => "chat.completion",
        }
    }

    pub(crate) fn chunk_object(self) -> &'static str {
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
        messages.push(Message::text(role, content));
    }
    if !messages.iter().any(|m| m.role != Role::System) {
        return Err(ApiError::invalid_field("messages", "`messages` needs at least one user or assistant message"));
    }
    let max_tokens = match input.max_tokens {
        None => fit_context(model, &messages, None)?,
        Some(0) => return Err(ApiError::invalid_field("max_tokens", "`max_tokens` must be at least 1")),
        Some(n) if n > model.max_output_tokens => {
            return Err(ApiError::invalid_field(
                "max_tokens",
                format!("`max_tokens` is {n}, but {} allows at most {}", model.name, model.max_output_tokens),
            ))
        }
        Some(n) => fit_context(model, &messages, Some(n))?,
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
    Ok(ChatRequest { messages, max_tokens, temperature: input.temperature, top_p: input.top_p, stop, json: false })
}

/// How the caller wants the answer.
#[derive(Clone, Copy, Debug)]
pub struct Delivery {
    pub stream: bool,
    /// OpenAI's `stream_options.include_usage`: usage in a chunk of its own with no choices.
    pub usage_chunk: bool,
}

/// Everything a chat call needs beyond the prepared request.
pub struct ChatCall<'a> {
    pub face: Face,
    pub principal: &'a Principal,
    pub model: &'a ModelSpec,
    pub request: ChatRequest,
    pub delivery: Delivery,
    pub reporting_group: Option<String>,
    pub use_fallback: bool,
    pub started: Instant,
    pub endpoint: &'static str,
    /// The task and revision a run is for (kept on the usage record).
    pub task: Option<(String, String)>,
}

/// Fewest tokens `messages` can take: every word is at least one token in the providers' tokenizers, so a prompt
/// refused by this count could never have fitted.
fn prompt_floor(messages: &[Message]) -> u64 {
    messages.iter().map(|m| m.content.split_whitespace().count() as u64).sum()
}

/// The output allowance within the model's context window: `asked` when the prompt and it fit (400
/// `context_length_exceeded` when they cannot), else the model's default, shortened to what the window leaves.
pub fn fit_context(model: &ModelSpec, messages: &[Message], asked: Option<u32>) -> Result<u32, ApiError> {
    let window = u64::from(model.context_window);
    let floor = prompt_floor(messages);
    let wanted = asked.unwrap_or(model.default_max_tokens);
    let left = window.saturating_sub(floor);
    match asked {
        Some(n) if floor + u64::from(n) > window => {
            Err(ApiError::context_length_exceeded(&model.name, model.context_window, floor, n))
        }
        None if left == 0 => Err(ApiError::context_length_exceeded(&model.name, model.context_window, floor, 1)),
        _ => Ok(wanted.min(u32::try_from(left).unwrap_or(u32::MAX))),
    }
}

/// A bound no tokenizer exceeds: a token is at least one character, plus a few per message for the framing.
pub fn prompt_bound(request: &ChatRequest) -> u64 {
    request.messages.iter().map(|m| m.content.chars().count() as u64 + 8).sum()
}

fn prompt_estimate(request: &ChatRequest) -> u64 {
    request.messages.iter().map(|m| switchyard_actors::chat::estimate_tokens(&m.content) + 4).sum()
}

/// A whole answer, settled: what a caller that post-processes the text (task runs) needs.
pub struct Completed {
    pub id: String,
    pub answer: ChatResponse,
    pub metadata: Metadata,
    pub model: ModelSpec,
    pub upstream: Duration,
}

/// A chat call's outcome: a whole answer (settled), or a streaming response already under way.
pub enum ChatOutcome {
    Whole(Box<Completed>),
    Stream(HttpResponse),
}

/// Admits, reserves, runs the request through the pool and answers it, whole or as an SSE stream; the charge is
/// settled (and its usage record committed) before the response that reports it completes.
pub async fn respond(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    call: ChatCall<'_>,
) -> Result<HttpResponse, ApiError> {
    let face = call.face;
    match run(state, req, call).await? {
        ChatOutcome::Stream(response) => Ok(response),
        ChatOutcome::Whole(done) => {
            let Completed { id, answer, metadata, model, upstream } = *done;
            let body = wire::completion(id, face, &model, answer, metadata);
            let mut response = HttpResponse::Ok().insert_header(("x-switchyard-model", model.name.as_str())).json(body);
            response.extensions_mut().insert(UpstreamTime(upstream));
            Ok(response)
        }
    }
}

/// Runs a chat call to its outcome: the answer whole and settled, or a stream that settles as it ends.
pub async fn run(state: &web::Data<AppState>, req: &HttpRequest, call: ChatCall<'_>) -> Result<ChatOutcome, ApiError> {
    let (face, delivery) = (call.face, call.delivery);
    match start(state, req, call).await? {
        Started::Whole(done) => Ok(ChatOutcome::Whole(done)),
        Started::Stream(streaming) => {
            let Streaming { model, first, rest, bill } = *streaming;
            let body = stream::sse_body(state.clone(), face, model.name.clone(), first, rest, delivery, bill);
            Ok(ChatOutcome::Stream(
                HttpResponse::Ok()
                    .content_type("text/event-stream")
                    .insert_header(("Cache-Control", "no-cache"))
                    .insert_header(("X-Accel-Buffering", "no"))
                    .insert_header(("x-switchyard-model", model.name.as_str()))
                    .streaming(body),
            ))
        }
    }
}

/// A streamed chat under way: the model that answers, its first event, the rest, and the bill that settles it.
pub struct Streaming {
    pub model: ModelSpec,
    pub first: ChatEvent,
    pub rest: ChatStream,
    pub bill: StreamBill,
}

/// A chat call begun: whole and settled, or streaming.
pub enum Started {
    Whole(Box<Completed>),
    Stream(Box<Streaming>),
}

/// Admits, reserves and runs a chat call: a whole answer comes back settled, a stream with its bill.
pub async fn start(state: &AppState, req: &HttpRequest, call: ChatCall<'_>) -> Result<Started, ApiError> {
    let model = call.model;
    let estimate = prompt_estimate(&call.request);
    // The most the request can cost: the dearest model of its chain at the full output allowance.
    let bound = prompt_bound(&call.request);
    let max_tokens = call.request.max_tokens;
    let spec = CallSpec {
        principal: call.principal,
        model,
        use_fallback: call.use_fallback,
        reporting_group: call.reporting_group,
        endpoint: call.endpoint,
        id_prefix: "",
        started: call.started,
        task: call.task,
    };
    let tokens = estimate + u64::from(max_tokens);
    let cost_of = |m: &ModelSpec| m.pricing.cost(bound, u64::from(max_tokens.min(m.max_output_tokens)));
    let mut billed = Billed::begin(state, req, &spec, call.face.new_id(), tokens, cost_of).await?;
    let (answered, answer) = billed.dispatch_chat(state, &spec, &call.request, call.delivery.stream).await?;
    let served = answered.model.clone();
    match answer {
        Answer::Whole(answer) => {
            let usage = answer.usage;
            state.metrics.record_tokens(&served.name, &usage);
            let cost = served.pricing.cost(usage.prompt_tokens, usage.completion_tokens);
            let measured = Measured {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                output_bytes: answer.text.len() as u64,
                ..Default::default()
            };
            let id = billed.id().to_owned();
            let metadata = billed.settle(&answered, cost, measured).await?;
            let upstream = answered.upstream;
            Ok(Started::Whole(Box::new(Completed { id, answer, metadata, model: served, upstream })))
        }
        Answer::Stream { first, rest } => {
            state.metrics.ttft.with_label_values(&[&served.name]).observe(call.started.elapsed().as_secs_f64());
            billed.record().ttft_ms = Some(call.started.elapsed().as_millis() as u64);
            let bill = StreamBill::new(billed, answered, estimate);
            Ok(Started::Stream(Box::new(Streaming { model: served, first, rest, bill })))
        }
    }
}

#[cfg(test)]
mod props;
