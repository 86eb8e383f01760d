//! Browser sessions: the tokens a key minted (for revocation, and for a token's spend after a restart). Tokens
//! are checked without these rows; only minting, revoking and a session's first use after a start read them.

use super::{Cols, Store, StoreResult};

#[derive(Clone, Debug, PartialEq)]
pub struct SessionRow {
    pub id: String,
    pub workspace_id: String,
    pub key_id: String,
    pub user: Option<String>,
    pub models: Option<Vec<String>>,
    pub max_credits_milli: Option<i64>,
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

impl Store {
    pub async fn insert_session(&self, s: &SessionRow) -> StoreResult<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO sessions (id, workspace_id, key_id, \"user\", models, max_credits_milli, created_at, \
                 expires_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&s.id)
            .bind(&s.workspace_id)
            .bind(&s.key_id)
            .bind(&s.user)
            .bind(s.models.as_ref().map(|m| serde_json::to_string(m).unwrap_or_default()))
            .bind(s.max_credits_milli)
            .bind(s.created_at)
            .bind(s.expires_at)
            .bind(s.revoked_at)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    /// Revokes a session of `workspace_id`: answers its expiry, or `None` when the workspace has no such session.
    pub async fn revoke_session(&self, workspace_id: &str, id: &str, now: i64) -> StoreResult<Option<i64>> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE sessions SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND workspace_id = $3")
                .bind(now)
                .bind(id)
                .bind(workspace_id)
                .execute(pool)
                .await?;
            sqlx::query_scalar("SELECT expires_at FROM sessions WHERE id = $1 AND workspace_id = $2")
                .bind(id)
                .bind(workspace_id)
                .fetch_optional(pool)
                .await
        })
    }

    /// Revoked sessions not yet expired at `now`: (id, expires_at).
    pub async fn revoked_sessions(&self, now: i64) -> StoreResult<Vec<(String, i64)>> {
        on_pool!(self, pool => {
            let rows =
                sqlx::query("SELECT id, expires_at FROM sessions WHERE revoked_at IS NOT NULL AND expires_at > $1")
                    .bind(now)
                    .fetch_all(pool)
                    .await?;
            rows.iter().map(|r| Ok((r.text("id")?, r.int("expires_at")?))).collect()
        })
    }

    /// What a session's usage records have charged, in millicredits.
    pub async fn session_spent(&self, id: &str) -> StoreResult<i64> {
        let spent: Option<i64> = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT CAST(SUM(credits_milli) AS BIGINT) FROM usage WHERE session_id = $1")
                .bind(id)
                .fetch_one(pool)
                .await?
        });
        Ok(spent.unwrap_or(0))
    }

    /// The secret `name` every gateway on this database shares: the one stored, or `make()`'s when there is none
    /// yet (the first gateway to ask stores it; the others read it). PostgreSQL only.
    pub async fn shared_secret(&self, name: &str, make: impl FnOnce() -> String) -> StoreResult<String> {
        let super::Pool::Postgres(pool) = &self.pool else {
            return Err(sqlx::Error::Configuration("shared secrets live in PostgreSQL".into()));
        };
        sqlx::query("INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(make())
            .execute(pool)
            .await?;
        sqlx::query_scalar("SELECT value FROM secrets WHERE name = $1").bind(name).fetch_one(pool).await
    }

    /// Runs `work` holding PostgreSQL's advisory lock `key`, taken by a transaction of its own so that it is freed
    /// when this process dies half way: gateways starting together on one database take turns. SQLite, which one
    /// process owns, just runs it.
    pub async fn exclusively<T>(
        &self,
        key: i64,
        work: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let super::Pool::Postgres(pool) = &self.pool else { return work.await };
        let mut lock = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(key).execute(&mut *lock).await?;
        let done = work.await;
        // Ending the transaction frees the lock (a connection that cannot even do that is closed, which frees it too).
        let _ = lock.rollback().await;
        done
    }

    /// Replaces the shared secret `name` (PostgreSQL only).
    pub async fn put_secret(&self, name: &str, value: &str) -> StoreResult<()> {
        let super::Pool::Postgres(pool) = &self.pool else {
            return Err(sqlx::Error::Configuration("shared secrets live in PostgreSQL".into()));
        };
        sqlx::query("INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = $2")
            .bind(name)
            .bind(value)
            .execute(pool)
            .await
            .map(|_| ())
    }
}
