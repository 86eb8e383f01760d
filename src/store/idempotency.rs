//! Idempotency keys: a request's claim on its key, and the response kept for replay.

use super::{Store, StoreResult};
use sqlx::Row;

/// A response kept for replay (status 0: the first request is still running).
pub struct KeptResponse {
    pub body_hash: Vec<u8>,
    pub status: i64,
    pub content_type: String,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Store {
    /// Claims `key` for a request whose path and body hash to `digest`, first forgetting a claim older than
    /// `expired_before`. True when this request holds the key now.
    pub async fn claim_idempotency(
        &self,
        workspace_id: &str,
        key: &str,
        digest: &[u8],
        now: i64,
        expired_before: i64,
    ) -> StoreResult<bool> {
        sqlx::query("DELETE FROM idempotency WHERE workspace_id = ? AND key = ? AND created_at < ?")
            .bind(workspace_id)
            .bind(key)
            .bind(expired_before)
            .execute(&self.pool)
            .await?;
        let claimed = sqlx::query(
            "INSERT INTO idempotency (workspace_id, key, body_hash, status, content_type, headers, body, created_at) \
             VALUES (?, ?, ?, 0, '', '', x'', ?) ON CONFLICT DO NOTHING",
        )
        .bind(workspace_id)
        .bind(key)
        .bind(digest)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(claimed == 1)
    }

    /// What the key holds: the first request's hash, and its response once kept.
    pub async fn idempotent_response(&self, workspace_id: &str, key: &str) -> StoreResult<Option<KeptResponse>> {
        let row = sqlx::query(
            "SELECT body_hash, status, content_type, headers, body FROM idempotency WHERE workspace_id = ? AND key = ?",
        )
        .bind(workspace_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(KeptResponse {
            body_hash: row.try_get("body_hash")?,
            status: row.try_get("status")?,
            content_type: row.try_get("content_type")?,
            headers: row.try_get("headers")?,
            body: row.try_get("body")?,
        }))
    }

    /// Keeps a finished response under its key.
    pub async fn keep_idempotent(
        &self,
        workspace_id: &str,
        key: &str,
        status: u16,
        content_type: String,
        headers: String,
        body: Vec<u8>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE idempotency SET status = ?, content_type = ?, headers = ?, body = ? WHERE workspace_id = ? AND key = ?",
        )
        .bind(i64::from(status))
        .bind(content_type)
        .bind(headers)
        .bind(body)
        .bind(workspace_id)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Frees a key whose request is still marked running (it failed without a charge).
    pub async fn release_idempotency(&self, workspace_id: &str, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM idempotency WHERE workspace_id = ? AND key = ? AND status = 0")
            .bind(workspace_id)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
