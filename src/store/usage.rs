//! Reading the usage records back: a workspace's totals by group, and a task's runs for its A/B figures.

use super::{Cols, Pool, Store, StoreResult};
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

    /// The column or expression, as `pool`'s engine writes it.
    fn expression(self, pool: &Pool) -> &'static str {
        match self {
            UsageKey::Model => "model",
            UsageKey::ReportingGroup => "reporting_group",
            UsageKey::ApiKey => "key_id",
            UsageKey::Day => match pool {
                Pool::Sqlite(_) => "strftime('%Y-%m-%d', created_at / 1000, 'unixepoch')",
                Pool::Postgres(_) => "to_char(to_timestamp(created_at / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
            },
            UsageKey::Task => "task",
            UsageKey::Revision => "revision",
            UsageKey::Modality => "modality",
            UsageKey::User => "\"user\"",
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

/// A sum of either engine as an i64 (PostgreSQL sums BIGINTs into NUMERIC).
fn sum(expression: &str, name: &str) -> String {
    format!("CAST(SUM({expression}) AS BIGINT) AS {name}")
}

impl Store {
    /// A workspace's usage from `from_ms` (inclusive) to `to_ms` (exclusive), by `key`, in key order (no key
    /// first).
    pub async fn usage_summary(
        &self,
        workspace_id: &str,
        key: UsageKey,
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<Vec<UsageTotals>> {
        let sums = [
            sum("CASE WHEN status = 'error' THEN 1 ELSE 0 END", "errors"),
            sum("CASE WHEN fallback_used THEN 1 ELSE 0 END", "fallbacks"),
            sum("prompt_tokens", "prompt"),
            sum("completion_tokens", "completion"),
            sum("credits_milli", "credits"),
            sum("CASE WHEN modality = 'speech' THEN units ELSE 0 END", "characters"),
            sum("CASE WHEN modality IN ('speech_to_speech', 'transcription') THEN units ELSE 0 END", "audio_ms"),
            sum("CASE WHEN modality = 'image' THEN units ELSE 0 END", "images"),
            sum("pixels", "pixels"),
            sum("CASE WHEN modality = 'embedding' THEN units ELSE 0 END", "inputs"),
            sum("output_bytes", "output_bytes"),
            sum("latency_ms", "processing_ms"),
        ]
        .join(", ");
        let sql = format!(
            "SELECT {} AS grp, COUNT(*) AS requests, {sums} FROM usage \
             WHERE workspace_id = $1 AND created_at >= $2 AND created_at < $3 GROUP BY grp",
            key.expression(&self.pool)
        );
        let mut totals = on_pool!(self, pool => {
            let rows = sqlx::query(&sql).bind(workspace_id).bind(from_ms).bind(to_ms).fetch_all(pool).await?;
            rows.iter().map(totals_from_row).collect::<StoreResult<Vec<_>>>()?
        });
        // Sorted here, not by the engine: PostgreSQL's text order follows the database's locale.
        totals.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(totals)
    }

    /// A workspace's records as (id, credits charged in millicredits, status), oldest first.
    pub async fn usage_rows(&self, workspace_id: &str) -> StoreResult<Vec<(String, i64, String)>> {
        on_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT id, credits_milli, status FROM usage WHERE workspace_id = $1 ORDER BY created_at, id",
            )
            .bind(workspace_id)
            .fetch_all(pool)
            .await?;
            rows.iter().map(|r| Ok((r.text("id")?, r.int("credits_milli")?, r.text("status")?))).collect()
        })
    }

    /// The usage records of task `task` of a workspace from `from_ms` (inclusive) to `to_ms` (exclusive).
    pub async fn task_runs(
        &self,
        workspace_id: &str,
        task: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<Vec<RunRecord>> {
        on_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT revision, endpoint, status, fallback_used, latency_ms, prompt_tokens, completion_tokens, \
                 credits_milli FROM usage WHERE workspace_id = $1 AND task = $2 AND created_at >= $3 \
                 AND created_at < $4",
            )
            .bind(workspace_id)
            .bind(task)
            .bind(from_ms)
            .bind(to_ms)
            .fetch_all(pool)
            .await?;
            rows.iter().map(run_from_row).collect()
        })
    }
}

fn totals_from_row(row: &impl Cols) -> StoreResult<UsageTotals> {
    let sum = |name: &str| -> StoreResult<i64> { Ok(row.int_opt(name)?.unwrap_or(0)) };
    let (prompt_tokens, completion_tokens) = (sum("prompt")?, sum("completion")?);
    let audio_ms = sum("audio_ms")?;
    Ok(UsageTotals {
        key: row.text_opt("grp")?,
        requests: row.int("requests")?,
        errors: sum("errors")?,
        fallbacks: sum("fallbacks")?,
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
        characters: sum("characters")?,
        audio_seconds: audio_ms as f64 / 1000.0,
        images: sum("images")?,
        pixels: sum("pixels")?,
        embedding_inputs: sum("inputs")?,
        output_bytes: sum("output_bytes")?,
        processing_ms: sum("processing_ms")?,
        credits: Credits(sum("credits")?),
        audio_ms,
    })
}

fn run_from_row(row: &impl Cols) -> StoreResult<RunRecord> {
    Ok(RunRecord {
        revision: row.text_opt("revision")?,
        endpoint: row.text("endpoint")?,
        status: row.text("status")?,
        fallback_used: row.flag("fallback_used")?,
        latency_ms: row.int("latency_ms")?,
        prompt_tokens: row.int("prompt_tokens")?,
        completion_tokens: row.int("completion_tokens")?,
        credits_milli: row.int("credits_milli")?,
    })
}
