//! The engine's chat types: what every provider is asked and what it answers, independent of any wire format.

use crate::error::ProviderError;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// Images shown with the text (vision models).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<InlineImage>,
}

impl Message {
    pub fn text(role: Role, content: impl Into<String>) -> Message {
        Message { role, content: content.into(), images: Vec::new() }
    }
}

/// An image sent inline with a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineImage {
    /// `image/png`, `image/jpeg`, `image/gif` or `image/webp`.
    pub media_type: String,
    pub data_base64: String,
}

/// A chat request after validation. `max_tokens` is always set: the caller's value or the model's default.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub max_tokens: u32,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    /// Ask for a JSON object (the provider's JSON mode where it has one).
    pub json: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ContentFilter,
    ToolCalls,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::ToolCalls => "tool_calls",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChatResponse {
    pub text: String,
    pub finish_reason: FinishReason,
    pub usage: Usage,
}

/// One event of a streamed answer. A well-formed stream yields deltas, then exactly one `Finish`.
#[derive(Clone, Debug, PartialEq)]
pub enum ChatEvent {
    Delta(String),
    Finish { reason: FinishReason, usage: Usage },
}

pub type ChatStream = BoxStream<'static, Result<ChatEvent, ProviderError>>;

/// A rough token count (about four characters a token), used where a provider reports none.
pub fn estimate_tokens(text: &str) -> u64 {
    let chars = text.chars().count() as u64;
    chars.div_ceil(4).max(u64::from(!text.is_empty()))
}
