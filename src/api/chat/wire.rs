//! The chat response objects as both faces answer them: `task.completion` / `chat.completion`, whole, and their
//! chunks when streamed.

use super::Face;
use crate::api::call::Metadata;
use bytes::Bytes;
use serde::Serialize;
use switchyard_actors::{ChatResponse, ModelSpec, Usage};
use utoipa::ToSchema;

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
    pub metadata: Metadata,
}

#[derive(Serialize)]
pub(super) struct Chunk<'a> {
    pub(super) id: &'a str,
    pub(super) object: &'static str,
    pub(super) created: i64,
    pub(super) model: &'a str,
    pub(super) choices: &'a [ChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) usage: Option<UsageOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) metadata: Option<&'a Metadata>,
}

#[derive(Serialize)]
pub(super) struct ChunkChoice<'a> {
    pub(super) index: u32,
    pub(super) delta: Delta<'a>,
    pub(super) finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
pub(super) struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) content: Option<&'a str>,
}

pub(super) fn completion(
    id: String,
    face: Face,
    model: &ModelSpec,
    answer: ChatResponse,
    metadata: Metadata,
) -> Completion {
    Completion {
        id,
        object: face.object(),
        created: crate::clock::now_unix(),
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

pub(super) fn frame<T: Serialize>(value: &T) -> Bytes {
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
