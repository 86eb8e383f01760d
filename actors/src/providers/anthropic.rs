//! Anthropic's Messages API: wire types, the system prompt mapping and its SSE events.

use super::http::Upstream;
use super::sse::{self, SseEvent};
use super::ChatProvider;
use crate::catalogue::ModelSpec;
use crate::chat::{ChatEvent, ChatRequest, ChatResponse, ChatStream, FinishReason, Role, Usage};
use crate::error::ProviderError;
use futures::stream::StreamExt;
use serde::{Deserialize, Serialize};

const API_VERSION: &str = "2023-06-01";

pub struct Anthropic {
    upstream: Upstream,
}

impl Anthropic {
    pub(crate) fn new(upstream: Upstream) -> Self {
        Anthropic { upstream }
    }

    fn request(&self, model: &ModelSpec, request: &ChatRequest, stream: bool) -> reqwest::RequestBuilder {
        let body = to_wire(model, request, stream);
        let builder = self.upstream.post("/v1/messages").header("anthropic-version", API_VERSION).json(&body);
        match &self.upstream.key {
            Some(key) => builder.header("x-api-key", key),
            None => builder,
        }
    }
}

/// System messages become the top-level `system`; consecutive turns of one role are merged, because the
/// Messages API wants user and assistant turns to alternate.
fn to_wire<'a>(model: &'a ModelSpec, request: &'a ChatRequest, stream: bool) -> WireRequest<'a> {
    let mut system = Vec::new();
    let mut messages: Vec<WireMessage> = Vec::new();
    for message in &request.messages {
        let role = match message.role {
            Role::System => {
                system.push(message.content.as_str());
                continue;
            }
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        let blocks = || -> Vec<serde_json::Value> {
            let mut blocks: Vec<serde_json::Value> = message
                .images
                .iter()
                .map(|image| {
                    serde_json::json!({"type": "image", "source": {"type": "base64",
                        "media_type": image.media_type, "data": image.data_base64}})
                })
                .collect();
            blocks.push(serde_json::json!({"type": "text", "text": message.content}));
            blocks
        };
        match messages.last_mut() {
            Some(last) if last.role == role => match (&mut last.content, message.images.is_empty()) {
                (WireContent::Text(text), true) => {
                    text.push_str("\n\n");
                    text.push_str(&message.content);
                }
                (WireContent::Text(text), false) => {
                    let mut merged = vec![serde_json::json!({"type": "text", "text": text})];
                    merged.extend(blocks());
                    last.content = WireContent::Blocks(merged);
                }
                (WireContent::Blocks(existing), _) => existing.extend(blocks()),
            },
            _ if message.images.is_empty() => {
                messages.push(WireMessage { role, content: WireContent::Text(message.content.clone()) })
            }
            _ => messages.push(WireMessage { role, content: WireContent::Blocks(blocks()) }),
        }
    }
    WireRequest {
        model: &model.upstream,
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        messages,
        max_tokens: request.max_tokens,
        temperature: request.temperature,
        top_p: request.top_p,
        stop_sequences: (!request.stop.is_empty()).then_some(&request.stop),
        stream,
    }
}

impl ChatProvider for Anthropic {
    async fn chat(&self, model: &ModelSpec, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let deadline = self.upstream.deadline();
        let response = self.upstream.send(self.request(model, request, false), deadline, error_message).await?;
        let body = self.upstream.body(response, deadline).await?;
        let wire: WireResponse =
            serde_json::from_slice(&body).map_err(|e| self.upstream.protocol(format!("bad message JSON: {e}")))?;
        let text: String = wire.content.into_iter().filter_map(|block| block.text).collect();
        Ok(ChatResponse {
            text,
            finish_reason: stop_reason(wire.stop_reason.as_deref()),
            usage: Usage { prompt_tokens: wire.usage.input_tokens, completion_tokens: wire.usage.output_tokens },
        })
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
            usage: Usage::default(),
            finish: None,
            done: false,
        };
        Ok(futures::stream::unfold(state, next_event).boxed())
    }
}

struct StreamState {
    events: futures::stream::BoxStream<'static, Result<SseEvent, ProviderError>>,
    provider: String,
    usage: Usage,
    finish: Option<FinishReason>,
    done: bool,
}

impl StreamState {
    fn fail(mut self, error: ProviderError) -> Option<(Result<ChatEvent, ProviderError>, StreamState)> {
        self.done = true;
        Some((Err(error), self))
    }

    fn protocol(&self, message: String) -> ProviderError {
        ProviderError::Protocol { provider: self.provider.clone(), message }
    }
}

async fn next_event(mut st: StreamState) -> Option<(Result<ChatEvent, ProviderError>, StreamState)> {
    if st.done {
        return None;
    }
    loop {
        let event = match st.events.next().await {
            Some(Ok(event)) => event,
            Some(Err(e)) => return st.fail(e),
            None => {
                let error = ProviderError::Connection {
                    provider: st.provider.clone(),
                    message: "stream ended without message_stop".to_owned(),
                };
                return st.fail(error);
            }
        };
        let wire: WireEvent = match serde_json::from_str(&event.data) {
            Ok(wire) => wire,
            Err(e) => {
                let error = st.protocol(format!("bad `{}` event: {e}", event.event.as_deref().unwrap_or("?")));
                return st.fail(error);
            }
        };
        match wire {
            WireEvent::MessageStart { message } => {
                st.usage.prompt_tokens = message.usage.input_tokens;
                st.usage.completion_tokens = message.usage.output_tokens;
            }
            WireEvent::ContentBlockDelta { delta } => {
                if let Some(text) = delta.text.filter(|t| !t.is_empty()) {
                    return Some((Ok(ChatEvent::Delta(text)), st));
                }
            }
            WireEvent::MessageDelta { delta, usage } => {
                if let Some(reason) = delta.stop_reason.as_deref() {
                    st.finish = Some(stop_reason(Some(reason)));
                }
                if let Some(usage) = usage {
                    st.usage.completion_tokens = usage.output_tokens;
                    if let Some(input) = usage.input_tokens {
                        st.usage.prompt_tokens = input;
                    }
                }
            }
            WireEvent::MessageStop {} => {
                st.done = true;
                let event = ChatEvent::Finish { reason: st.finish.unwrap_or(FinishReason::Stop), usage: st.usage };
                return Some((Ok(event), st));
            }
            WireEvent::Error { error } => {
                let status = if error.kind == "overloaded_error" { 529 } else { 500 };
                let error = ProviderError::Upstream { provider: st.provider.clone(), status, message: error.message };
                return st.fail(error);
            }
            WireEvent::Ping {}
            | WireEvent::ContentBlockStart {}
            | WireEvent::ContentBlockStop {}
            | WireEvent::Other => {}
        }
    }
}

fn stop_reason(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("max_tokens") => FinishReason::Length,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("refusal") => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// The message of an Anthropic error body: `{"type":"error","error":{"type":..,"message":..}}`.
fn error_message(body: &[u8]) -> Option<String> {
    let wire: WireErrorBody = serde_json::from_slice(body).ok()?;
    Some(format!("{}: {}", wire.error.kind, wire.error.message))
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<WireMessage>,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<&'a Vec<String>>,
    stream: bool,
}

#[derive(Serialize)]
struct WireMessage {
    role: &'static str,
    content: WireContent,
}

/// A turn's content: plain text, or blocks (images and text).
#[derive(Serialize)]
#[serde(untagged)]
enum WireContent {
    Text(String),
    Blocks(Vec<serde_json::Value>),
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    content: Vec<WireBlock>,
    stop_reason: Option<String>,
    usage: WireUsage,
}

#[derive(Deserialize)]
struct WireBlock {
    text: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    MessageStart {
        message: WireStartMessage,
    },
    ContentBlockStart {},
    ContentBlockDelta {
        delta: WireDelta,
    },
    ContentBlockStop {},
    MessageDelta {
        delta: WireMessageDelta,
        usage: Option<WireDeltaUsage>,
    },
    MessageStop {},
    Ping {},
    Error {
        error: WireError,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct WireStartMessage {
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Deserialize)]
struct WireDelta {
    text: Option<String>,
}

#[derive(Deserialize)]
struct WireMessageDelta {
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireDeltaUsage {
    #[serde(default)]
    output_tokens: u64,
    input_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct WireErrorBody {
    error: WireError,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(rename = "type")]
    kind: String,
    message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::Catalogue;
    use crate::chat::Message;

    #[test]
    fn system_messages_move_to_the_top_and_turns_alternate() {
        let catalogue = Catalogue::builtin().unwrap();
        let model = catalogue.model("claude-3-haiku").unwrap();
        let msg = |role, content: &str| Message::text(role, content);
        let request = ChatRequest {
            messages: vec![
                msg(Role::System, "be brief"),
                msg(Role::User, "a"),
                msg(Role::User, "b"),
                msg(Role::Assistant, "c"),
            ],
            max_tokens: 10,
            temperature: None,
            top_p: None,
            stop: vec![],
            json: false,
        };
        let wire = serde_json::to_value(to_wire(model, &request, true)).unwrap();
        assert_eq!(wire["system"], "be brief");
        assert_eq!(wire["messages"].as_array().unwrap().len(), 2);
        assert_eq!(wire["messages"][0]["content"], "a\n\nb");
        assert_eq!(wire["model"], "claude-3-haiku-20240307");
    }

    #[test]
    fn unknown_events_are_ignored() {
        let event: WireEvent = serde_json::from_str(r#"{"type":"something_new","x":1}"#).unwrap();
        assert!(matches!(event, WireEvent::Other));
        let start = r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#;
        assert!(matches!(serde_json::from_str(start).unwrap(), WireEvent::ContentBlockStart {}));
        assert!(matches!(serde_json::from_str(r#"{"type":"message_stop"}"#).unwrap(), WireEvent::MessageStop {}));
    }
}

#[cfg(test)]
#[path = "anthropic_props.rs"]
mod props;
