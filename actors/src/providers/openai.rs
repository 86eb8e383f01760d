//! OpenAI's Chat Completions API (also Mistral, vLLM, llama.cpp, Ollama): wire types and conversions.

use super::http::Upstream;
use super::sse::{self, SseEvent};
use super::ChatProvider;
use crate::catalogue::ModelSpec;
use crate::chat::{estimate_tokens, ChatEvent, ChatRequest, ChatResponse, ChatStream, FinishReason, Usage};
use crate::error::ProviderError;
use futures::stream::StreamExt;
use serde::{Deserialize, Serialize};

pub struct OpenAi {
    pub(super) upstream: Upstream,
}

impl OpenAi {
    pub(crate) fn new(upstream: Upstream) -> Self {
        OpenAi { upstream }
    }

    fn request(&self, model: &ModelSpec, request: &ChatRequest, stream: bool) -> reqwest::RequestBuilder {
        let body = WireRequest {
            model: &model.upstream,
            messages: request
                .messages
                .iter()
                .map(|m| WireMessage { role: m.role.as_str(), content: wire_content(m) })
                .collect(),
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            top_p: request.top_p,
            stop: (!request.stop.is_empty()).then_some(&request.stop),
            stream,
            stream_options: stream.then_some(StreamOptions { include_usage: true }),
            response_format: request.json.then(|| serde_json::json!({"type": "json_object"})),
        };
        let builder = self.upstream.post("/chat/completions").json(&body);
        match &self.upstream.key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }
}

impl ChatProvider for OpenAi {
    async fn chat(&self, model: &ModelSpec, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let deadline = self.upstream.deadline();
        let response = self.upstream.send(self.request(model, request, false), deadline, error_message).await?;
        let body = self.upstream.body(response, deadline).await?;
        let wire: WireResponse =
            serde_json::from_slice(&body).map_err(|e| self.upstream.protocol(format!("bad completion JSON: {e}")))?;
        let choice = wire.choices.into_iter().next().ok_or_else(|| self.upstream.protocol("no choices"))?;
        let text = choice.message.content.unwrap_or_default();
        let usage = match wire.usage {
            Some(u) => Usage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens },
            None => estimated_usage(request, &text),
        };
        Ok(ChatResponse { text, finish_reason: finish_reason(choice.finish_reason.as_deref()), usage })
    }

    async fn chat_stream(&self, model: &ModelSpec, request: &ChatRequest) -> Result<ChatStream, ProviderError> {
        let deadline = self.upstream.deadline();
        let response = self.upstream.send(self.request(model, request, true), deadline, error_message).await?;
        let events = sse::events(
            self.upstream.chunks(response, deadline),
            self.upstream.name.clone(),
            self.upstream.timeouts.max_body_bytes,
        );
        let state = StreamState {
            events,
            provider: self.upstream.name.clone(),
            prompt_estimate: prompt_estimate(request),
            finish: None,
            usage: None,
            completion_chars: String::new(),
            done: false,
        };
        Ok(futures::stream::unfold(state, next_event).boxed())
    }
}

struct StreamState {
    events: futures::stream::BoxStream<'static, Result<SseEvent, ProviderError>>,
    provider: String,
    prompt_estimate: u64,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    completion_chars: String,
    done: bool,
}

async fn next_event(mut st: StreamState) -> Option<(Result<ChatEvent, ProviderError>, StreamState)> {
    if st.done {
        return None;
    }
    loop {
        let event = match st.events.next().await {
            Some(Ok(event)) => event,
            Some(Err(e)) => {
                st.done = true;
                return Some((Err(e), st));
            }
            None => {
                st.done = true;
                let message = "stream ended without [DONE]".to_owned();
                return Some((Err(ProviderError::Connection { provider: st.provider.clone(), message }), st));
            }
        };
        if event.data == "[DONE]" {
            st.done = true;
            let usage = st.usage.unwrap_or(Usage {
                prompt_tokens: st.prompt_estimate,
                completion_tokens: estimate_tokens(&st.completion_chars),
            });
            let reason = st.finish.unwrap_or(FinishReason::Stop);
            return Some((Ok(ChatEvent::Finish { reason, usage }), st));
        }
        let chunk: WireChunk = match serde_json::from_str(&event.data) {
            Ok(chunk) => chunk,
            Err(e) => {
                st.done = true;
                let message = format!("bad stream chunk: {e}");
                return Some((Err(ProviderError::Protocol { provider: st.provider.clone(), message }), st));
            }
        };
        if let Some(error) = chunk.error {
            st.done = true;
            let message = error.message.unwrap_or_else(|| "error inside the stream".to_owned());
            return Some((Err(ProviderError::Upstream { provider: st.provider.clone(), status: 500, message }), st));
        }
        if let Some(u) = chunk.usage {
            st.usage = Some(Usage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens });
        }
        let Some(choice) = chunk.choices.into_iter().next() else {
            continue;
        };
        if let Some(reason) = choice.finish_reason.as_deref() {
            st.finish = Some(finish_reason(Some(reason)));
        }
        match choice.delta.and_then(|d| d.content) {
            Some(text) if !text.is_empty() => {
                st.completion_chars.push_str(&text);
                return Some((Ok(ChatEvent::Delta(text)), st));
            }
            _ => continue,
        }
    }
}

fn finish_reason(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("length") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

fn prompt_estimate(request: &ChatRequest) -> u64 {
    request.messages.iter().map(|m| estimate_tokens(&m.content) + 4).sum()
}

fn estimated_usage(request: &ChatRequest, text: &str) -> Usage {
    Usage { prompt_tokens: prompt_estimate(request), completion_tokens: estimate_tokens(text) }
}

/// The message of an OpenAI-shaped error body.
pub(super) fn error_message(body: &[u8]) -> Option<String> {
    let wire: WireErrorBody = serde_json::from_slice(body).ok()?;
    wire.error.message
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a Vec<String>>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'a str,
    content: WireContent<'a>,
}

/// Plain text, or text and images as content parts.
#[derive(Serialize)]
#[serde(untagged)]
enum WireContent<'a> {
    Text(&'a str),
    Parts(Vec<serde_json::Value>),
}

fn wire_content(message: &crate::chat::Message) -> WireContent<'_> {
    if message.images.is_empty() {
        return WireContent::Text(&message.content);
    }
    let mut parts = vec![serde_json::json!({"type": "text", "text": message.content})];
    parts.extend(message.images.iter().map(|image| {
        let url = format!("data:{};base64,{}", image.media_type, image.data_base64);
        serde_json::json!({"type": "image_url", "image_url": {"url": url}})
    }));
    WireContent::Parts(parts)
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    choices: Vec<WireChoice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireResponseMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireResponseMessage {
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
}

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    choices: Vec<WireChunkChoice>,
    usage: Option<WireUsage>,
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireChunkChoice {
    delta: Option<WireDelta>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireDelta {
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireErrorBody {
    error: WireError,
}

#[derive(Deserialize)]
struct WireError {
    message: Option<String>,
}

#[cfg(test)]
#[path = "openai_props.rs"]
mod props;
