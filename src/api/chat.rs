//! Chat through the gateway, shared by both faces (`/api/v1/task` and `/v1/chat/completions`): the request
//! bodies, validation against the catalogue, the upstream call, and the response objects, whole or streamed.

use super::errors::ApiError;
use super::limits;
use crate::auth::Principal;
use crate::metrics::StreamGauge;
use crate::state::{now_unix, AppState};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::time::{Duration, Instant};
use switchyard_actors::engine::dispatch::{dispatch, Answer, DispatchError};
use switchyard_actors::engine::ledger::{HoldId, LedgerError, UsageRecord};
use switchyard_actors::engine::pool::{Lease, Outcome, PoolRejection};
use switchyard_actors::engine::session::Permit;
use switchyard_actors::engine::Engine;
use switchyard_actors::{
    ChatEvent, ChatRequest, ChatResponse, ChatStream, Credits, Message, ModelSpec, ProviderError, Role, Usage,
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
        messages.push(Message::text(role, content));
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
    Ok(ChatRequest { messages, max_tokens, temperature: input.temperature, top_p: input.top_p, stop, json: false })
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

/// What happened to the request: who answered, what it cost, whether a fallback served.
#[derive(Clone, Serialize, ToSchema)]
pub struct Metadata {
    /// The model that answered.
    pub model: String,
    pub provider: String,
    /// Credits charged for this request (at most 3 decimals).
    #[schema(value_type = f64)]
    pub credits_charged: Credits,
    pub latency_ms: u64,
    /// Upstream attempts made (retries and fallbacks included); the request is charged once.
    pub attempts: u32,
    pub fallback: FallbackOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reporting_group: Option<String>,
}

#[derive(Clone, Serialize, ToSchema)]
pub struct FallbackOut {
    pub used: bool,
    /// Why the primary model was not used: `manual`, `rate_limited`, `upstream`, `timeout`, `connection`,
    /// `unavailable`, `circuit_open`, `overloaded`, `protocol`, `bad_credentials`.
    pub reason: Option<String>,
    pub primary_model: String,
    pub model: String,
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
    pub metadata: Metadata,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a Metadata>,
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

/// `reporting_group`: 1 to 128 printable characters.
pub fn check_reporting_group(group: Option<String>) -> Result<Option<String>, ApiError> {
    match group {
        Some(g) if g.is_empty() || g.chars().count() > 128 || g.chars().any(char::is_control) => {
            Err(ApiError::invalid_field("reporting_group", "`reporting_group` must be 1 to 128 printable characters"))
        }
        other => Ok(other),
    }
}

/// A bound no tokenizer exceeds: a token is at least one character, plus a few per message for the framing.
fn prompt_bound(request: &ChatRequest) -> u64 {
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
            let body = completion(id, face, &model, answer, metadata);
            let mut response = HttpResponse::Ok().insert_header(("x-switchyard-model", model.name.as_str())).json(body);
            response.extensions_mut().insert(UpstreamTime(upstream));
            Ok(response)
        }
    }
}

/// Runs a chat call to its outcome: the answer whole and settled, or a stream that settles as it ends.
pub async fn run(state: &web::Data<AppState>, req: &HttpRequest, call: ChatCall<'_>) -> Result<ChatOutcome, ApiError> {
    let model = call.model;
    if call.use_fallback && model.fallback.is_empty() {
        return Err(ApiError::invalid_field(
            "use_fallback_model",
            format!("Model {} has no fallback model", model.name),
        ));
    }
    let engine = state.engine();
    let estimate = prompt_estimate(&call.request);
    let mut permit = limits::admit(state, req, call.principal, estimate + u64::from(call.request.max_tokens)).await?;
    // The most the request can cost: the dearest model of its chain at the full output allowance.
    let bound = prompt_bound(&call.request);
    let chain = (!call.use_fallback)
        .then_some(model)
        .into_iter()
        .chain(model.fallback.iter().filter_map(|n| state.catalogue.model(n)));
    let most = chain
        .map(|m| m.pricing.cost(bound, u64::from(call.request.max_tokens.min(m.max_output_tokens))))
        .max()
        .unwrap_or(Credits::ZERO);
    let hold = reserve(engine, &call.principal.workspace_id, most).await?;
    // Until it is settled or handed to a stream, a client that leaves (the handler is dropped) releases the hold.
    let mut guard = HoldGuard { engine: engine.clone(), hold: Some(hold) };
    let mut record = UsageRecord {
        id: call.face.new_id(),
        created_at: now_millis(),
        workspace_id: call.principal.workspace_id.clone(),
        key_id: call.principal.key_id.clone(),
        model: model.name.clone(),
        provider: model.provider.clone(),
        endpoint: call.endpoint.to_owned(),
        reporting_group: call.reporting_group.clone(),
        task: call.task.as_ref().map(|t| t.0.clone()),
        revision: call.task.as_ref().map(|t| t.1.clone()),
        ..Default::default()
    };
    let upstream_started = Instant::now();
    let dispatched = dispatch(
        engine,
        &state.catalogue,
        &state.providers,
        model,
        call.use_fallback,
        &call.request,
        call.delivery.stream,
    )
    .await;
    let upstream = upstream_started.elapsed();
    let served = match dispatched {
        Ok(served) => served,
        Err(failed) => {
            record.status = "error".into();
            record.attempts = failed.attempts;
            record.latency_ms = call.started.elapsed().as_millis() as u64;
            if let Some(hold) = guard.take() {
                engine.release(hold, Some(record));
            }
            permit.record_tokens(0);
            return Err(dispatch_error(state, failed.error));
        }
    };
    observe_upstream(state, &served.model, upstream);
    record.model = served.model.name.clone();
    record.provider = served.model.provider.clone();
    record.attempts = served.attempts;
    record.fallback_used = served.fallback.is_some();
    record.fallback_reason = served.fallback.as_ref().map(|f| f.reason.clone());
    record.primary_model = Some(model.name.clone());
    let mut metadata = Metadata {
        model: served.model.name.clone(),
        provider: served.model.provider.clone(),
        credits_charged: Credits::ZERO,
        latency_ms: 0,
        attempts: served.attempts,
        fallback: FallbackOut {
            used: served.fallback.is_some(),
            reason: served.fallback.as_ref().map(|f| f.reason.clone()),
            primary_model: model.name.clone(),
            model: served.model.name.clone(),
        },
        reporting_group: call.reporting_group.clone(),
    };
    let served_model = served.model.clone();
    match served.answer {
        Answer::Whole(answer) => {
            served.lease.report(Outcome::Success);
            let usage = answer.usage;
            state.metrics.record_tokens(&served_model.name, &usage);
            let cost = served_model.pricing.cost(usage.prompt_tokens, usage.completion_tokens);
            record.prompt_tokens = usage.prompt_tokens;
            record.completion_tokens = usage.completion_tokens;
            record.status = "ok".into();
            record.latency_ms = call.started.elapsed().as_millis() as u64;
            record.output_bytes = answer.text.len() as u64;
            let id = record.id.clone();
            let hold = guard.take().ok_or_else(|| ApiError::internal("hold already settled"))?;
            let charged =
                engine.settle(hold, cost, record).await.map_err(|e| ApiError::internal(format!("ledger: {e}")))?;
            permit.record_tokens(usage.total());
            metadata.credits_charged = charged;
            metadata.latency_ms = call.started.elapsed().as_millis() as u64;
            Ok(ChatOutcome::Whole(Box::new(Completed { id, answer, metadata, model: served_model, upstream })))
        }
        Answer::Stream { first, rest } => {
            state.metrics.ttft.with_label_values(&[&served_model.name]).observe(call.started.elapsed().as_secs_f64());
            record.ttft_ms = Some(call.started.elapsed().as_millis() as u64);
            let billing = StreamBilling {
                engine: engine.clone(),
                hold: guard.take(),
                record,
                pricing_model: served_model.clone(),
                prompt_estimate: estimate,
                delivered: String::new(),
                deltas: 0,
                permit: Some(permit),
                lease: Some(served.lease),
                started: call.started,
            };
            let body = sse_body(
                state.clone(),
                call.face,
                served_model.name.clone(),
                first,
                rest,
                call.delivery,
                billing,
                metadata,
            );
            Ok(ChatOutcome::Stream(
                HttpResponse::Ok()
                    .content_type("text/event-stream")
                    .insert_header(("Cache-Control", "no-cache"))
                    .insert_header(("X-Accel-Buffering", "no"))
                    .insert_header(("x-switchyard-model", served_model.name.as_str()))
                    .streaming(body),
            ))
        }
    }
}

/// Reserves `most` for a request: 402 when the wallet cannot cover it.
pub(crate) async fn reserve(engine: &Engine, workspace_id: &str, most: Credits) -> Result<HoldId, ApiError> {
    match engine.reserve(workspace_id, most).await {
        Ok(hold) => Ok(hold),
        Err(LedgerError::Insufficient { .. }) => {
            engine.metrics.rejections.with_label_values(&["insufficient_credits"]).inc();
            Err(ApiError::insufficient_credits())
        }
        Err(e) => Err(ApiError::internal(format!("ledger: {e}"))),
    }
}

/// Releases a hold nobody settled: the request was abandoned before an answer reached its client.
pub(crate) struct HoldGuard {
    pub(crate) engine: Engine,
    pub(crate) hold: Option<HoldId>,
}

impl HoldGuard {
    pub(crate) fn take(&mut self) -> Option<HoldId> {
        self.hold.take()
    }
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        if let Some(hold) = self.hold.take() {
            self.engine.release(hold, None);
        }
    }
}

pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub(crate) fn observe_upstream(state: &AppState, model: &ModelSpec, elapsed: Duration) {
    state.metrics.upstream_duration.with_label_values(&[&model.provider, &model.name]).observe(elapsed.as_secs_f64());
}

pub(crate) fn dispatch_error(state: &AppState, error: DispatchError) -> ApiError {
    match error {
        DispatchError::Provider(e) => upstream_error(state, e),
        DispatchError::Pool { provider, rejection } => match rejection {
            PoolRejection::Overloaded => {
                ApiError::overloaded(format!("Provider `{provider}` has as many requests in flight as it allows"))
            }
            PoolRejection::CircuitOpen => ApiError::overloaded(format!(
                "Provider `{provider}` is failing: its circuit breaker is open; retry shortly"
            )),
            PoolRejection::UnknownProvider => ApiError::internal(format!("unknown provider {provider}")),
        },
    }
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

fn completion(id: String, face: Face, model: &ModelSpec, answer: ChatResponse, metadata: Metadata) -> Completion {
    Completion {
        id,
        object: face.object(),
        created: now_unix(),
        model: model.name.clone(),
        choices: vec![Choice {
            index: 0,
            message: AssistantMessage { role: "assistant", content: answer.text },
            finish_reason: answer.finish_reason.as_str(),
        }],
        usage: answer.usage.into(),
        metadata,
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

/// A stream's bill. However the stream ends, the hold is settled once: for the whole answer when it finishes,
/// for what was delivered when it breaks, and, if the client leaves (the stream is dropped), by `Drop`.
struct StreamBilling {
    engine: Engine,
    hold: Option<HoldId>,
    record: UsageRecord,
    pricing_model: ModelSpec,
    prompt_estimate: u64,
    delivered: String,
    deltas: u64,
    permit: Option<Permit>,
    lease: Option<Lease>,
    started: Instant,
}

impl StreamBilling {
    fn delivered(&mut self, text: &str) {
        self.delivered.push_str(text);
        self.deltas += 1;
    }

    /// The usage so far when the stream did not finish: the prompt estimate and what reached the client.
    fn partial_usage(&self) -> Usage {
        let completion = self.deltas.max(switchyard_actors::chat::estimate_tokens(&self.delivered));
        Usage { prompt_tokens: self.prompt_estimate, completion_tokens: completion }
    }

    /// Takes the hold with the record to settle it: `None` once already settled.
    fn close(&mut self, usage: Usage, status: &str, outcome: Outcome) -> Option<(HoldId, Credits, UsageRecord)> {
        let hold = self.hold.take()?;
        if let Some(lease) = self.lease.take() {
            lease.report(outcome);
        }
        if let Some(permit) = self.permit.as_mut() {
            permit.record_tokens(usage.total());
        }
        let mut record = std::mem::take(&mut self.record);
        record.prompt_tokens = usage.prompt_tokens;
        record.completion_tokens = usage.completion_tokens;
        record.status = status.to_owned();
        record.latency_ms = self.started.elapsed().as_millis() as u64;
        record.output_bytes = self.delivered.len() as u64;
        let cost = self.pricing_model.pricing.cost(usage.prompt_tokens, usage.completion_tokens);
        Some((hold, cost, record))
    }
}

impl Drop for StreamBilling {
    fn drop(&mut self) {
        let usage = self.partial_usage();
        if let Some((hold, cost, record)) = self.close(usage, "abandoned", Outcome::Neutral) {
            self.engine.settle_detached(hold, cost, record);
        }
    }
}

/// The SSE body: a role chunk, one chunk per delta, the finishing chunk with usage and metadata, then `[DONE]`.
/// A failure part way sends one error frame and ends without `[DONE]`. If the client leaves, this stream is
/// dropped, and with it the upstream request; the bill is settled for what was generated.
#[allow(clippy::too_many_arguments)]
fn sse_body(
    state: web::Data<AppState>,
    face: Face,
    model: String,
    first: ChatEvent,
    mut events: ChatStream,
    delivery: Delivery,
    mut billing: StreamBilling,
    mut metadata: Metadata,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
    async_stream::stream! {
        let _in_flight = StreamGauge::new(&state.metrics.streams_in_flight);
        // The stream's id is its usage record's id.
        let id = billing.record.id.clone();
        let created = now_unix();
        let chunk = |choices: &[ChunkChoice<'_>], usage: Option<UsageOut>, metadata: Option<&Metadata>| {
            frame(&Chunk { id: &id, object: face.chunk_object(), created, model: &model, choices, usage, metadata })
        };
        let role = ChunkChoice { index: 0, delta: Delta { role: Some("assistant"), content: Some("") }, finish_reason: None };
        yield Ok(chunk(&[role], None, None));
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
                    let frame = chunk(&[choice], None, None);
                    billing.delivered(&text);
                    yield Ok(frame);
                }
                Ok(ChatEvent::Finish { reason, usage }) => {
                    state.metrics.record_tokens(&model, &usage);
                    if let Some((hold, cost, record)) = billing.close(usage, "ok", Outcome::Success) {
                        match billing.engine.settle(hold, cost, record).await {
                            Ok(charged) => metadata.credits_charged = charged,
                            Err(e) => {
                                let error = ApiError::internal(format!("ledger: {e}"));
                                yield Ok(frame(&error.body()));
                                break;
                            }
                        }
                    }
                    metadata.latency_ms = billing.started.elapsed().as_millis() as u64;
                    let done = ChunkChoice { index: 0, delta: Delta { role: None, content: None }, finish_reason: Some(reason.as_str()) };
                    if delivery.usage_chunk {
                        yield Ok(chunk(&[done], None, None));
                        yield Ok(chunk(&[], Some(usage.into()), Some(&metadata)));
                    } else {
                        yield Ok(chunk(&[done], Some(usage.into()), Some(&metadata)));
                    }
                    yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
                    break;
                }
                Err(e) => {
                    let usage = billing.partial_usage();
                    if let Some((hold, cost, record)) = billing.close(usage, "cut", Outcome::Failure) {
                        let _ = billing.engine.settle(hold, cost, record).await;
                    }
                    let error = upstream_error(&state, e);
                    yield Ok(frame(&error.body()));
                    break;
                }
            }
        }
    }
}
