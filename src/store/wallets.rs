//! Wallets shared by several gateways, on PostgreSQL (`SharedWallets`). A reservation is one statement: the
//! balance check and the hold together (`UPDATE … WHERE credits - reserved >= amount`, which PostgreSQL re-checks
//! on the locked row, so concurrent reservations from any number of gateways never overspend). A settlement is one
//! statement too: the hold deleted, the reservation given back, the usage record inserted (its trigger debits it);
//! a hold already gone inserts nothing, so a hold settles once. Each gateway beats every few seconds in
//! `instances`; any gateway's beat releases the holds of one not seen for `dead_after`.

use super::{to_i64, Store};
use futures::future::BoxFuture;
use sqlx::{PgPool, Row};
use std::sync::Arc;
use std::time::Duration;
use switchyard_actors::engine::ledger::{HoldId, LedgerError, SettledHold, SharedWallets, UsageRecord, Wallet};
use switchyard_actors::Credits;

pub struct PgWallets {
    pool: PgPool,
    instance: String,
    dead_after: Duration,
}

impl Store {
    /// The store's wallets as books shared by gateways, for the gateway `instance`; `None` on SQLite.
    pub fn shared_wallets(&self, instance: &str, dead_after: Duration) -> Option<Arc<PgWallets>> {
        match &self.pool {
            super::Pool::Postgres(pool) => {
                Some(Arc::new(PgWallets { pool: pool.clone(), instance: instance.to_owned(), dead_after }))
            }
            super::Pool::Sqlite(_) => None,
        }
    }
}

/// A write that failed: an outage (retried by the ledger until the database answers) unless the server refused
/// the data for good, which no retry changes: SQLSTATE class 22 (bad data), 23 (a constraint) or 42 (the statement).
/// Anything else (a lost connection, a failover's read-only replica, a lock timeout) passes.
fn failed(e: sqlx::Error) -> LedgerError {
    let permanent = |code: &str| ["22", "23", "42"].iter().any(|class| code.starts_with(class));
    match &e {
        sqlx::Error::Database(refusal) if refusal.code().is_some_and(|code| permanent(&code)) => {
            LedgerError::Refused(e.to_string())
        }
        _ => LedgerError::Store(e.to_string()),
    }
}

const RESERVE: &str = "WITH w AS ( \
        UPDATE workspaces SET reserved_milli = reserved_milli + $2 \
        WHERE id = $1 AND credits_milli - reserved_milli >= $2 RETURNING id) \
    INSERT INTO holds (workspace_id, amount_milli, instance, created_at) SELECT id, $2, $3, $4 FROM w RETURNING id";

/// $1 the hold; $2 the cost; $3 whether to store a record; $4.. the record's columns.
const SETTLE: &str = "WITH h AS ( \
        DELETE FROM holds WHERE id = $1 RETURNING workspace_id, amount_milli), \
    w AS ( \
        UPDATE workspaces SET reserved_milli = reserved_milli - h.amount_milli \
        FROM h WHERE workspaces.id = h.workspace_id RETURNING workspaces.id), \
    u AS ( \
        INSERT INTO usage (id, created_at, workspace_id, key_id, model, provider, endpoint, reporting_group, task, \
            revision, prompt_tokens, completion_tokens, units, credits_milli, latency_ms, ttft_ms, status, \
            fallback_used, fallback_reason, primary_model, attempts, output_bytes, modality, pixels, \"user\", \
            session_id) \
        SELECT $4, $5, h.workspace_id, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
            LEAST(GREATEST($2, 0), h.amount_milli), $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27 \
        FROM h WHERE $3 ON CONFLICT DO NOTHING RETURNING id) \
    SELECT h.workspace_id, h.amount_milli, LEAST(GREATEST($2, 0), h.amount_milli) AS charge, \
        (SELECT COUNT(*) FROM w) AS freed, (SELECT COUNT(*) FROM u) AS stored FROM h";

/// $1 this gateway; $2 the dead line (ms): a gateway other than this one not seen since is gone. What it left is
/// freed: its holds (their credits given back) and the idempotency keys of its requests still running (a claim of a
/// gateway too old to name itself, `''`, waits out its key's 24 hours).
const SWEEP: &str = "WITH live AS (SELECT id FROM instances WHERE seen_at >= $2 UNION ALL SELECT $1::text), \
    dead AS ( \
        DELETE FROM holds WHERE instance NOT IN (SELECT id FROM live) RETURNING workspace_id, amount_milli), \
    claims AS ( \
        DELETE FROM idempotency WHERE status = 0 AND instance <> '' AND instance NOT IN (SELECT id FROM live) \
        RETURNING 1), \
    sums AS (SELECT workspace_id, SUM(amount_milli) AS amount FROM dead GROUP BY workspace_id), \
    given AS ( \
        UPDATE workspaces SET reserved_milli = reserved_milli - sums.amount FROM sums \
        WHERE workspaces.id = sums.workspace_id RETURNING 1) \
    SELECT COUNT(*) AS holds, (SELECT COUNT(*) FROM given) AS wallets, (SELECT COUNT(*) FROM claims) AS claims \
    FROM dead";

impl SharedWallets for PgWallets {
    fn reserve(&self, workspace_id: &str, amount: Credits) -> BoxFuture<'static, Result<HoldId, LedgerError>> {
        let (pool, instance, workspace_id) = (self.pool.clone(), self.instance.clone(), workspace_id.to_owned());
        let amount = amount.milli().max(0);
        Box::pin(async move {
            let held: Option<i64> = sqlx::query_scalar(RESERVE)
                .bind(&workspace_id)
                .bind(amount)
                .bind(&instance)
                .bind(crate::clock::now_millis())
                .fetch_optional(&pool)
                .await
                .map_err(failed)?;
            if let Some(id) = held {
                return Ok(HoldId(u64::try_from(id).unwrap_or(0)));
            }
            let available: Option<i64> =
                sqlx::query_scalar("SELECT credits_milli - reserved_milli FROM workspaces WHERE id = $1")
                    .bind(&workspace_id)
                    .fetch_optional(&pool)
                    .await
                    .map_err(failed)?;
            match available {
                Some(available) => Err(LedgerError::Insufficient {
                    available: Credits::from_milli(available),
                    needed: Credits::from_milli(amount),
                }),
                None => Err(LedgerError::UnknownWorkspace(workspace_id)),
            }
        })
    }

    fn settle(
        &self,
        hold: HoldId,
        cost: Credits,
        record: Option<UsageRecord>,
    ) -> BoxFuture<'static, Result<(SettledHold, Credits), LedgerError>> {
        let pool = self.pool.clone();
        Box::pin(async move {
            let stores = record.is_some();
            let r = record.unwrap_or_default();
            let row = sqlx::query(SETTLE)
                .bind(i64::try_from(hold.0).unwrap_or(i64::MAX))
                .bind(cost.milli())
                .bind(stores)
                .bind(&r.id)
                .bind(r.created_at)
                .bind(&r.key_id)
                .bind(&r.model)
                .bind(&r.provider)
                .bind(&r.endpoint)
                .bind(&r.reporting_group)
                .bind(&r.task)
                .bind(&r.revision)
                .bind(to_i64(r.prompt_tokens))
                .bind(to_i64(r.completion_tokens))
                .bind(to_i64(r.units))
                .bind(to_i64(r.latency_ms))
                .bind(r.ttft_ms.map(to_i64))
                .bind(&r.status)
                .bind(r.fallback_used)
                .bind(&r.fallback_reason)
                .bind(&r.primary_model)
                .bind(i64::from(r.attempts))
                .bind(to_i64(r.output_bytes))
                .bind(&r.modality)
                .bind(to_i64(r.pixels))
                .bind(&r.user)
                .bind(&r.session_id)
                .fetch_optional(&pool)
                .await
                .map_err(failed)?;
            let row = row.ok_or(LedgerError::UnknownHold(hold.0))?;
            let held = SettledHold {
                workspace_id: row.try_get("workspace_id").map_err(failed)?,
                amount: Credits::from_milli(row.try_get("amount_milli").map_err(failed)?),
            };
            Ok((held, Credits::from_milli(row.try_get("charge").map_err(failed)?)))
        })
    }

    fn wallet(&self, workspace_id: &str) -> BoxFuture<'static, Result<Option<Wallet>, LedgerError>> {
        let (pool, workspace_id) = (self.pool.clone(), workspace_id.to_owned());
        Box::pin(async move {
            let row: Option<(i64, i64)> =
                sqlx::query_as("SELECT credits_milli, reserved_milli FROM workspaces WHERE id = $1")
                    .bind(&workspace_id)
                    .fetch_optional(&pool)
                    .await
                    .map_err(failed)?;
            Ok(row.map(|(balance, reserved)| Wallet {
                balance: Credits::from_milli(balance),
                reserved: Credits::from_milli(reserved),
            }))
        })
    }

    fn top_up(&self, workspace_id: &str, amount: Credits) -> BoxFuture<'static, Result<Credits, LedgerError>> {
        let (pool, workspace_id) = (self.pool.clone(), workspace_id.to_owned());
        Box::pin(async move {
            let balance: Option<i64> = sqlx::query_scalar(
                "UPDATE workspaces SET credits_milli = credits_milli + $2 WHERE id = $1 RETURNING credits_milli",
            )
            .bind(&workspace_id)
            .bind(amount.milli())
            .fetch_optional(&pool)
            .await
            .map_err(failed)?;
            balance.map(Credits::from_milli).ok_or(LedgerError::UnknownWorkspace(workspace_id))
        })
    }

    fn heartbeat(&self) -> BoxFuture<'static, Result<u64, String>> {
        let (pool, instance) = (self.pool.clone(), self.instance.clone());
        let dead_after = i64::try_from(self.dead_after.as_millis()).unwrap_or(i64::MAX);
        Box::pin(async move {
            let now = crate::clock::now_millis();
            sqlx::query(
                "INSERT INTO instances (id, seen_at) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
            )
            .bind(&instance)
            .bind(now)
            .execute(&pool)
            .await
            .map_err(|e| e.to_string())?;
            let swept = sqlx::query(SWEEP)
                .bind(&instance)
                .bind(now.saturating_sub(dead_after))
                .fetch_one(&pool)
                .await
                .map_err(|e| e.to_string())?;
            let (swept, claims): (i64, i64) = (swept.get("holds"), swept.get("claims"));
            if claims > 0 {
                tracing::warn!(claims, "freed the idempotency keys a gateway gone silent left running");
            }
            // Gateways long gone, with nothing held any more, leave the table.
            sqlx::query(
                "DELETE FROM instances i WHERE seen_at < $1 \
                 AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.instance = i.id)",
            )
            .bind(now.saturating_sub(dead_after.saturating_mul(10)))
            .execute(&pool)
            .await
            .map_err(|e| e.to_string())?;
            Ok(u64::try_from(swept).unwrap_or(0))
        })
    }
}
