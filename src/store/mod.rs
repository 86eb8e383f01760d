//! Persistence of workspaces and API keys in SQLite (WAL) through sqlx, the same code path PostgreSQL will take.

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Row, SqliteConnection, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use switchyard_actors::engine::ledger::{LedgerStore, LedgerWrite, UsageRecord};
use switchyard_actors::Credits;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS workspaces (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    credits_milli INTEGER NOT NULL,
    requests_per_minute INTEGER NOT NULL,
    concurrent_requests INTEGER NOT NULL,
    tokens_per_minute INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    key_hash BLOB NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX IF NOT EXISTS api_keys_workspace ON api_keys(workspace_id);
CREATE TABLE IF NOT EXISTS usage (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    workspace_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    reporting_group TEXT,
    task TEXT,
    revision TEXT,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    units INTEGER NOT NULL,
    credits_milli INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL,
    ttft_ms INTEGER,
    status TEXT NOT NULL,
    fallback_used INTEGER NOT NULL,
    fallback_reason TEXT,
    primary_model TEXT,
    attempts INTEGER NOT NULL,
    output_bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_workspace_time ON usage(workspace_id, created_at);
-- The debit and its usage record are one write: a record cannot exist without its charge, nor the reverse.
CREATE TRIGGER IF NOT EXISTS usage_debit AFTER INSERT ON usage WHEN NEW.credits_milli <> 0
BEGIN
    UPDATE workspaces SET credits_milli = credits_milli - NEW.credits_milli WHERE id = NEW.workspace_id;
END;
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    -- pending (no data yet), uploaded (checked, staged), completed (published as media_ref)
    status TEXT NOT NULL,
    sha256 TEXT,
    -- the blob of the last complete PUT
    object TEXT,
    media_ref TEXT
);
CREATE TABLE IF NOT EXISTS media (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    object TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    workspace_id TEXT NOT NULL,
    key TEXT NOT NULL,
    body_hash BLOB NOT NULL,
    status INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, key)
);
CREATE TABLE IF NOT EXISTS tasks (
    workspace_id TEXT NOT NULL,
    slug TEXT NOT NULL,
    definition TEXT,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, slug)
);
"#;

/// Changes to the schema after [`SCHEMA`], in order: a database at `PRAGMA user_version` n has had the first n.
const MIGRATIONS: &[&str] = &[
    // 1: what a usage record's units are (by modality), and the pixels of the images made.
    "ALTER TABLE usage ADD COLUMN modality TEXT; ALTER TABLE usage ADD COLUMN pixels INTEGER NOT NULL DEFAULT 0;",
    // 2: browser sessions (tokens minted by a key), the user and session of a usage record, a key's models.
    "CREATE TABLE sessions (id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, key_id TEXT NOT NULL, user TEXT, \
     models TEXT, max_credits_milli INTEGER, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, \
     revoked_at INTEGER); \
     CREATE INDEX sessions_workspace ON sessions(workspace_id); \
     ALTER TABLE usage ADD COLUMN user TEXT; ALTER TABLE usage ADD COLUMN session_id TEXT; \
     CREATE INDEX usage_session ON usage(session_id) WHERE session_id IS NOT NULL; \
     ALTER TABLE api_keys ADD COLUMN models TEXT;",
];

/// Usage columns, in the order `insert_usage` binds them.
const USAGE_COLUMNS: &str =
    "INSERT OR IGNORE INTO usage (id, created_at, workspace_id, key_id, model, provider, endpoint, \
    reporting_group, task, revision, prompt_tokens, completion_tokens, units, credits_milli, latency_ms, ttft_ms, \
    status, fallback_used, fallback_reason, primary_model, attempts, output_bytes, modality, pixels, user, \
    session_id) ";

/// Rows per statement: 26 parameters each, well under SQLite's limit of 32,766.
const USAGE_ROWS_PER_STATEMENT: usize = 500;

/// Applies the migrations a database has not had yet, each with its version bump in one transaction.
async fn migrate(pool: &SqlitePool) -> Result<(), String> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(pool)
        .await
        .map_err(|e| format!("cannot read the schema version: {e}"))?;
    for (done, migration) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        let mut tx = pool.begin().await.map_err(|e| format!("migration {}: {e}", done + 1))?;
        let sql = format!("{migration} PRAGMA user_version = {};", done + 1);
        sqlx::raw_sql(&sql).execute(&mut *tx).await.map_err(|e| format!("migration {}: {e}", done + 1))?;
        tx.commit().await.map_err(|e| format!("migration {}: {e}", done + 1))?;
    }
    Ok(())
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub requests_per_minute: u32,
    pub concurrent_requests: u32,
    pub tokens_per_minute: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub credits: Credits,
    pub plan: Plan,
    pub created_at: i64,
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    /// The usage importer's own connection, opened from the importer's thread on first use so that SQLite's
    /// thread behind it inherits the importer's background scheduling class.
    writer: Arc<tokio::sync::Mutex<Option<SqliteConnection>>>,
    options: SqliteConnectOptions,
}

mod idempotency;
mod keys;
mod media;
mod sessions;
mod usage;

pub use idempotency::KeptResponse;
pub use keys::KeyRecord;
pub use media::{MediaRow, Upload};
pub use sessions::SessionRow;
pub use usage::{RunRecord, UsageKey, UsageTotals};

pub type StoreResult<T> = Result<T, sqlx::Error>;

impl Store {
    /// Opens (creating if needed) `switchyard.db` in the data directory, in WAL mode.
    pub async fn open(data_dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| format!("cannot create data directory {}: {e}", data_dir.display()))?;
        let path = data_dir.join("switchyard.db");
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|e| format!("bad database path: {e}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5))
            // Checkpoints (and their fsyncs) run in the background (`checkpoint`), never inside a request's commit.
            .pragma("wal_autocheckpoint", "0")
            // After a checkpoint resets the WAL, its file is cut back to 64 MiB (a burst can grow it far beyond).
            .pragma("journal_size_limit", "67108864");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await
            .map_err(|e| format!("cannot open database {}: {e}", path.display()))?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await.map_err(|e| format!("cannot create schema: {e}"))?;
        migrate(&pool).await?;
        Ok(Store { pool, writer: Arc::new(tokio::sync::Mutex::new(None)), options })
    }

    /// Stores usage records left in the journal by an earlier process.
    pub async fn import_usage(&self, records: Vec<UsageRecord>) -> Result<(), String> {
        let mut connection = self.pool.acquire().await.map_err(|e| e.to_string())?;
        insert_usage(&mut connection, &records).await
    }

    /// Moves the write-ahead log into the database, without blocking writers.
    async fn checkpoint(&self) -> Result<(), String> {
        let mut writer = self.writer().await?;
        let connection = writer.as_mut().ok_or("no writer connection")?;
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(connection).await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn writer(&self) -> Result<tokio::sync::MutexGuard<'_, Option<SqliteConnection>>, String> {
        let mut writer = self.writer.lock().await;
        if writer.is_none() {
            *writer = Some(self.options.connect().await.map_err(|e| format!("cannot open the usage writer: {e}"))?);
        }
        Ok(writer)
    }

    /// Tasks changed through the admin API: (workspace id or "" for shared, slug, definition as JSON). A `None`
    /// definition is a deletion, kept so that a task from `config/tasks/` stays deleted across restarts.
    pub async fn tasks(&self) -> StoreResult<Vec<(String, String, Option<String>)>> {
        let rows = sqlx::query("SELECT workspace_id, slug, definition FROM tasks").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get("workspace_id")?, r.try_get("slug")?, r.try_get("definition")?))).collect()
    }

    /// Stores a task's definition (`None`: deleted).
    pub async fn put_task(&self, workspace_id: &str, slug: &str, definition: Option<&str>) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO tasks (workspace_id, slug, definition, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (workspace_id, slug) DO UPDATE SET definition = excluded.definition, \
             updated_at = excluded.updated_at",
        )
        .bind(workspace_id)
        .bind(slug)
        .bind(definition)
        .bind(crate::clock::now_unix())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every workspace's committed balance, for the ledger at start.
    pub async fn balances(&self) -> StoreResult<Vec<(String, Credits)>> {
        let rows = sqlx::query("SELECT id, credits_milli FROM workspaces").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get("id")?, Credits::from_milli(r.try_get("credits_milli")?)))).collect()
    }

    async fn commit_batch(&self, batch: Vec<LedgerWrite>) -> Result<(), String> {
        let mut usage: Vec<UsageRecord> = Vec::new();
        let mut top_ups = Vec::new();
        for write in batch {
            match write {
                LedgerWrite::Usage(record) => usage.push(*record),
                LedgerWrite::TopUp { workspace_id, amount } => top_ups.push((workspace_id, amount)),
            }
        }
        if !usage.is_empty() {
            let mut writer = self.writer().await?;
            let connection = writer.as_mut().ok_or("no writer connection")?;
            insert_usage(connection, &usage).await?;
        }
        // Top-ups are rare and an operator waits for them: they take the pool, not the background writer.
        for (workspace_id, amount) in top_ups {
            sqlx::query("UPDATE workspaces SET credits_milli = credits_milli + ? WHERE id = ?")
                .bind(amount.milli())
                .bind(workspace_id)
                .execute(&self.pool)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ())
    }

    pub async fn workspace_count(&self) -> StoreResult<i64> {
        sqlx::query("SELECT COUNT(*) FROM workspaces").fetch_one(&self.pool).await?.try_get(0)
    }

    pub async fn insert_workspace(&self, w: &Workspace) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO workspaces (id, name, credits_milli, requests_per_minute, concurrent_requests, \
             tokens_per_minute, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&w.id)
        .bind(&w.name)
        .bind(w.credits.milli())
        .bind(i64::from(w.plan.requests_per_minute))
        .bind(i64::from(w.plan.concurrent_requests))
        .bind(i64::from(w.plan.tokens_per_minute))
        .bind(w.created_at)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    pub async fn workspace(&self, id: &str) -> StoreResult<Option<Workspace>> {
        let row = sqlx::query(
            "SELECT id, name, credits_milli, requests_per_minute, concurrent_requests, tokens_per_minute, \
             created_at FROM workspaces WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| workspace_from_row(&r)).transpose()
    }

    pub async fn workspaces(&self) -> StoreResult<Vec<Workspace>> {
        let rows = sqlx::query(
            "SELECT id, name, credits_milli, requests_per_minute, concurrent_requests, tokens_per_minute, \
             created_at FROM workspaces",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(workspace_from_row).collect()
    }
}

fn to_u32(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn workspace_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<Workspace> {
    Ok(Workspace {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        credits: Credits::from_milli(row.try_get("credits_milli")?),
        plan: Plan {
            requests_per_minute: to_u32(row.try_get("requests_per_minute")?),
            concurrent_requests: to_u32(row.try_get("concurrent_requests")?),
            tokens_per_minute: to_u32(row.try_get("tokens_per_minute")?),
        },
        created_at: row.try_get("created_at")?,
    })
}

/// One multi-row statement per chunk: a single round trip to SQLite's thread, atomic with the debits its trigger
/// makes. A record already stored is skipped (and so is its debit): importing the journal again after a crash
/// changes nothing twice. Only the full chunk's statement is kept prepared: each shorter count is another SQL text,
/// and sqlx would keep up to 100 of them (about 2.5 KiB a row each) on the connection.
async fn insert_usage(connection: &mut SqliteConnection, usage: &[UsageRecord]) -> Result<(), String> {
    for chunk in usage.chunks(USAGE_ROWS_PER_STATEMENT) {
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(USAGE_COLUMNS);
        insert.push_values(chunk, |mut row, r| {
            row.push_bind(&r.id)
                .push_bind(r.created_at)
                .push_bind(&r.workspace_id)
                .push_bind(&r.key_id)
                .push_bind(&r.model)
                .push_bind(&r.provider)
                .push_bind(&r.endpoint)
                .push_bind(&r.reporting_group)
                .push_bind(&r.task)
                .push_bind(&r.revision)
                .push_bind(to_i64(r.prompt_tokens))
                .push_bind(to_i64(r.completion_tokens))
                .push_bind(to_i64(r.units))
                .push_bind(r.credits_milli)
                .push_bind(to_i64(r.latency_ms))
                .push_bind(r.ttft_ms.map(to_i64))
                .push_bind(&r.status)
                .push_bind(r.fallback_used)
                .push_bind(&r.fallback_reason)
                .push_bind(&r.primary_model)
                .push_bind(i64::from(r.attempts))
                .push_bind(to_i64(r.output_bytes))
                .push_bind(&r.modality)
                .push_bind(to_i64(r.pixels))
                .push_bind(&r.user)
                .push_bind(&r.session_id);
        });
        let full = chunk.len() == USAGE_ROWS_PER_STATEMENT;
        insert.build().persistent(full).execute(&mut *connection).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

impl LedgerStore for Store {
    fn commit(&self, batch: Vec<LedgerWrite>) -> futures::future::BoxFuture<'static, Result<(), String>> {
        let store = self.clone();
        Box::pin(async move { store.commit_batch(batch).await })
    }

    fn maintain(&self) -> futures::future::BoxFuture<'static, Result<(), String>> {
        let store = self.clone();
        Box::pin(async move { store.checkpoint().await })
    }
}
