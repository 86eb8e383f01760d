//! Reading the usage records back: a workspace's totals by group, and a task's runs for its A/B figures.

use super::{Store, StoreResult};
use sqlx::Row;
use switchyard_actors::Credits;

/// What a summary groups by: one of these fixed columns or expressions, never caller text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageKey {
    Model,
    ReportingGroup,
    ApiKey,
    Day,
    Task,
    Revision,
    Modality,
    User,
    Session,
}

impl UsageKey {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "model" => UsageKey::Model,
            "reporting_group" => UsageKey::ReportingGroup,
            "api_key" => UsageKey::ApiKey,
            "day" => UsageKey::Day,
            "task" => UsageKey::Task,
            "revision" => UsageKey::Revision,
            "modality" => UsageKey::Modality,
            "user" => UsageKey::User,
            "session" => UsageKey::Session,
            _ => return None,
        })
    }

    fn expression(self) -> &'static str {
        match self {
            UsageKey::Model => "model",
            UsageKey::ReportingGroup => "reporting_group",
            UsageKey::ApiKey => "key_id",
            UsageKey::Day => "strftime('%Y-%m-%d', created_at / 1000, 'unixepoch')",
            UsageKey::Task => "task",
            UsageKey::Revision => "revision",
            UsageKey::Modality => "modality",
            UsageKey::User => "user",
            UsageKey::Session => "session_id",
        }
    }
}

/// One group's totals: what 001's usage tracking promises (model, tokens, characters or audio seconds, images and
/// pixels, processing time, output size), summed.
#[derive(Clone, Debug, Default, serde::Serialize, utoipa::ToSchema)]
pub struct UsageTotals {
    /// The group's value (a model, a reporting group, an API key id, a day, a task, a revision or a modality);
    /// null for records without one.
    pub key: Option<String>,
    pub requests: i64,
    pub errors: i64,
    pub fallbacks: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// Characters spoken (text-to-speech).
    pub characters: i64,
    /// Seconds of audio taken in (speech-to-speech, transcription), to the millisecond.
    pub audio_seconds: f64,
    pub images: i64,
    pub pixels: i64,
    /// Texts embedded (embeddings, indexed chunks, search queries).
    pub embedding_inputs: i64,
    /// Bytes produced: text, images, audio.
    pub output_bytes: i64,
    /// Processing time summed over the requests, in milliseconds (request in to answer settled).
    pub processing_ms: i64,
    #[schema(value_type = f64)]
    pub credits: Credits,
    #[serde(skip)]
    audio_ms: i64,
}

impl UsageTotals {
    /// An empty total under `key`.
    pub fn named(key: Option<String>) -> Self {
        UsageTotals { key, ..Default::default() }
    }

    /// Adds another group's counts to this one.
    pub fn add(&mut self, other: &UsageTotals) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.fallbacks += other.fallbacks;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
        self.characters += other.characters;
        self.audio_ms += other.audio_ms;
        self.audio_seconds = self.audio_ms as f64 / 1000.0;
        self.images += other.images;
        self.pixels += other.pixels;
        self.embedding_inputs += other.embedding_inputs;
        self.output_bytes += other.output_bytes;
        self.processing_ms += other.processing_ms;
        self.credits.0 += other.credits.0;
    }
}

/// One usage record of a task run, as the A/B figures read it.
pub struct RunRecord {
    pub revision: Option<String>,
    pub endpoint: String,
    pub status: String,
    pub fallback_used: bool,
    pub latency_ms: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub credits_milli: i64,
}

impl Store {
    /// A workspace's usage from `from_ms` (inclusive) to `to_ms` (exclusive), by `key`, in key order.
    pub async fn usage_summary(
        &self,
        workspace_id: &str,
        key: UsageKey,
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<Vec<UsageTotals>> {
        let sql = format!(
            "SELECT {} AS grp, COUNT(*) AS requests, SUM(status = 'error') AS errors, SUM(fallback_used) AS fallbacks, \
             SUM(prompt_tokens) AS prompt, SUM(completion_tokens) AS completion, SUM(credits_milli) AS credits, \
             SUM(CASE WHEN modality = 'speech' THEN units ELSE 0 END) AS characters, \
             SUM(CASE WHEN modality IN ('speech_to_speech', 'transcription') THEN units ELSE 0 END) AS audio_ms, \
             SUM(CASE WHEN modality = 'image' THEN units ELSE 0 END) AS images, SUM(pixels) AS pixels, \
             SUM(CASE WHEN modality = 'embedding' THEN units ELSE 0 END) AS inputs, \
             SUM(output_bytes) AS output_bytes, SUM(latency_ms) AS processing_ms \
             FROM usage WHERE workspace_id = ? AND created_at >= ? AND created_at < ? GROUP BY grp ORDER BY grp",
            key.expression()
        );
        let rows = sqlx::query(&sql).bind(workspace_id).bind(from_ms).bind(to_ms).fetch_all(&self.pool).await?;
        let sum = |row: &sqlx::sqlite::SqliteRow, name: &str| -> StoreResult<i64> {
            Ok(row.try_get::<Option<i64>, _>(name)?.unwrap_or(0))
        };
        rows.iter()
            .map(|row| {
                let (prompt_tokens, completion_tokens) = (sum(row, "prompt")?, sum(row, "completion")?);
                let audio_ms = sum(row, "audio_ms")?;
                Ok(UsageTotals {
                    key: row.try_get("grp")?,
                    requests: row.try_get("requests")?,
                    errors: sum(row, "errors")?,
                    fallbacks: sum(row, "fallbacks")?,
                    prompt_tokens,
                    completion_tokens,
                    total_tokens: prompt_tokens + completion_tokens,
                    characters: sum(row, "characters")?,
                    audio_seconds: audio_ms as f64 / 1000.0,
                    images: sum(row, "images")?,
                    pixels: sum(row, "pixels")?,
                    embedding_inputs: sum(row, "inputs")?,
                    output_bytes: sum(row, "output_bytes")?,
                    processing_ms: sum(row, "processing_ms")?,
                    credits: Credits(sum(row, "credits")?),
                    audio_ms,
                })
            })
            .collect()
    }

    /// The usage records of task `task` of a workspace from `from_ms` (inclusive) to `to_ms` (exclusive).
    pub async fn task_runs(
        &self,
        workspace_id: &str,
        task: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<Vec<RunRecord>> {
        let rows = sqlx::query(
            "SELECT revision, endpoint, status, fallback_used, latency_ms, prompt_tokens, completion_tokens, \
             credits_milli FROM usage WHERE workspace_id = ? AND task = ? AND created_at >= ? AND created_at < ?",
        )
        .bind(workspace_id)
        .bind(task)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RunRecord {
                    revision: row.try_get("revision")?,
                    endpoint: row.try_get("endpoint")?,
                    status: row.try_get("status")?,
                    fallback_used: row.try_get("fallback_used")?,
                    latency_ms: row.try_get("latency_ms")?,
                    prompt_tokens: row.try_get("prompt_tokens")?,
                    completion_tokens: row.try_get("completion_tokens")?,
                    credits_milli: row.try_get("credits_milli")?,
                })
            })
            .collect()
    }
}
