//! Reading the usage records back: a workspace's totals by group, and a task's runs for its A/B figures.

use super::{Store, StoreResult};
use sqlx::Row;

/// What a summary groups by: one of these fixed columns or expressions, never caller text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageKey {
    Model,
    ReportingGroup,
    ApiKey,
    Day,
    Task,
    Revision,
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
        }
    }
}

/// One group's totals.
#[derive(Clone, Debug, Default)]
pub struct UsageTotals {
    pub key: Option<String>,
    pub requests: i64,
    pub errors: i64,
    pub fallbacks: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub credits_milli: i64,
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
             SUM(prompt_tokens) AS prompt, SUM(completion_tokens) AS completion, SUM(credits_milli) AS credits \
             FROM usage WHERE workspace_id = ? AND created_at >= ? AND created_at < ? GROUP BY grp ORDER BY grp",
            key.expression()
        );
        let rows = sqlx::query(&sql).bind(workspace_id).bind(from_ms).bind(to_ms).fetch_all(&self.pool).await?;
        let sum = |row: &sqlx::sqlite::SqliteRow, name: &str| -> StoreResult<i64> {
            Ok(row.try_get::<Option<i64>, _>(name)?.unwrap_or(0))
        };
        rows.iter()
            .map(|row| {
                Ok(UsageTotals {
                    key: row.try_get("grp")?,
                    requests: row.try_get("requests")?,
                    errors: sum(row, "errors")?,
                    fallbacks: sum(row, "fallbacks")?,
                    prompt_tokens: sum(row, "prompt")?,
                    completion_tokens: sum(row, "completion")?,
                    credits_milli: sum(row, "credits")?,
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
