//! Browser sessions: the tokens a key minted (for revocation, and for a token's spend after a restart). Tokens
//! are checked without these rows; only minting, revoking and a session's first use after a start read them.

use super::{Store, StoreResult};
use sqlx::Row;

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
        sqlx::query(
            "INSERT INTO sessions (id, workspace_id, key_id, user, models, max_credits_milli, created_at, expires_at, \
             revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    /// Revokes a session of `workspace_id`: answers its expiry, or `None` when the workspace has no such session.
    pub async fn revoke_session(&self, workspace_id: &str, id: &str, now: i64) -> StoreResult<Option<i64>> {
        sqlx::query("UPDATE sessions SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? AND workspace_id = ?")
            .bind(now)
            .bind(id)
            .bind(workspace_id)
            .execute(&self.pool)
            .await?;
        sqlx::query_scalar("SELECT expires_at FROM sessions WHERE id = ? AND workspace_id = ?")
            .bind(id)
            .bind(workspace_id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Revoked sessions not yet expired at `now`: (id, expires_at).
    pub async fn revoked_sessions(&self, now: i64) -> StoreResult<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT id, expires_at FROM sessions WHERE revoked_at IS NOT NULL AND expires_at > ?")
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("id")?, r.try_get("expires_at")?))).collect()
    }

    /// What a session's usage records have charged, in millicredits.
    pub async fn session_spent(&self, id: &str) -> StoreResult<i64> {
        let spent: Option<i64> = sqlx::query_scalar("SELECT SUM(credits_milli) FROM usage WHERE session_id = ?")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        Ok(spent.unwrap_or(0))
    }
}
