//! Idempotency keys: a request's claim on its key, and the response kept for replay.

use super::{Cols, Store, StoreResult};

/// A response kept for replay (status 0: the first request is still running).
pub struct KeptResponse {
    pub body_hash: Vec<u8>,
    pub status: i64,
    pub content_type: String,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Store {
    /// Claims `key` for a request whose path and body hash to `digest`, run by the gateway `instance`, first
    /// forgetting a claim older than `expired_before`. True when this request holds the key now.
    pub async fn claim_idempotency(
        &self,
        workspace_id: &str,
        key: &str,
        digest: &[u8],
        instance: &str,
        now: i64,
        expired_before: i64,
    ) -> StoreResult<bool> {
        let claimed = on_pool!(self, pool => {
            sqlx::query("DELETE FROM idempotency WHERE workspace_id = $1 AND key = $2 AND created_at < $3")
                .bind(workspace_id)
                .bind(key)
                .bind(expired_before)
                .execute(pool)
                .await?;
            sqlx::query(
                "INSERT INTO idempotency (workspace_id, key, body_hash, status, content_type, headers, body, \
                 created_at, instance) VALUES ($1, $2, $3, 0, '', '', $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(workspace_id)
            .bind(key)
            .bind(digest)
            .bind(Vec::<u8>::new())
            .bind(now)
            .bind(instance)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(claimed == 1)
    }

    /// What the key holds: the first request's hash, and its response once kept.
    pub async fn idempotent_response(&self, workspace_id: &str, key: &str) -> StoreResult<Option<KeptResponse>> {
        on_pool!(self, pool => {
            let row = sqlx::query(
                "SELECT body_hash, status, content_type, headers, body FROM idempotency \
                 WHERE workspace_id = $1 AND key = $2",
            )
            .bind(workspace_id)
            .bind(key)
            .fetch_optional(pool)
            .await?;
            row.map(|r| kept_from_row(&r)).transpose()
        })
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
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE idempotency SET status = $1, content_type = $2, headers = $3, body = $4 \
                 WHERE workspace_id = $5 AND key = $6",
            )
            .bind(i64::from(status))
            .bind(&content_type)
            .bind(&headers)
            .bind(&body)
            .bind(workspace_id)
            .bind(key)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    /// Frees a key whose request is still marked running (it failed without a charge).
    pub async fn release_idempotency(&self, workspace_id: &str, key: &str) -> StoreResult<()> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM idempotency WHERE workspace_id = $1 AND key = $2 AND status = 0")
                .bind(workspace_id)
                .bind(key)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }

    /// Frees the keys of requests an earlier process on this SQLite database left running (it was killed, or its
    /// machine lost), so a retry runs instead of hearing "still in progress" until the key expires: SQLite has one
    /// gateway (its data directory is locked), so every running claim not of this `instance` is abandoned. With
    /// PostgreSQL nothing is done here: the gateways' heartbeat frees a silent gateway's claims with its holds.
    pub async fn release_abandoned_claims(&self, instance: &str) -> StoreResult<u64> {
        let super::Pool::Sqlite(pool) = &self.pool else { return Ok(0) };
        let done = sqlx::query("DELETE FROM idempotency WHERE status = 0 AND instance <> $1")
            .bind(instance)
            .execute(pool)
            .await?;
        Ok(done.rows_affected())
    }
}

fn kept_from_row(r: &impl Cols) -> StoreResult<KeptResponse> {
    Ok(KeptResponse {
        body_hash: r.bytes("body_hash")?,
        status: r.int("status")?,
        content_type: r.text("content_type")?,
        headers: r.text("headers")?,
        body: r.bytes("body")?,
    })
}
