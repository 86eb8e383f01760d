//! A task run's wire shapes: its query, its body, and `task.run`.

use crate::api::call::Metadata;
use crate::api::chat::UsageOut;
use crate::api::form::FileInput;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

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

/// `{"task_input": {...}}`: values for the prompt's `{{variables}}`; `reporting_group` and `use_fallback_model`
/// may come here or in the query (the body wins).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    #[schema(value_type = Object)]
    pub task_input: Map<String, Value>,
    /// Kept on the usage record for segmented analytics.
    pub reporting_group: Option<String>,
    /// Go straight to the revision's fallback model.
    pub use_fallback_model: Option<bool>,
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
pub(super) struct RunBody {
    pub(super) object: Map<String, Value>,
    pub(super) file: Option<(String, FileInput)>,
}
