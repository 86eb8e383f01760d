//! Persistence of workspaces, keys, tasks, usage, media rows, idempotency and sessions, through sqlx on one of two
//! engines: SQLite in the data directory (WAL; the default) or a PostgreSQL server (`database.url`). Every query
//! is one text for both, run by [`on_pool!`] on whichever pool is open: `$n` placeholders, `ON CONFLICT`, sums
//! cast to BIGINT, integers read as i64. Where the engines truly differ (the day of a timestamp, upkeep, the
//! schema's history) the code says so by engine.

use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, PgPool, Row, SqliteConnection, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use switchyard_actors::engine::ledger::{LedgerStore, LedgerWrite, UsageRecord};
use switchyard_actors::Credits;

/// Usage columns, in the order `insert_usage` binds them.
const USAGE_COLUMNS: &str = "INSERT INTO usage (id, created_at, workspace_id, key_id, model, provider, endpoint, \
    reporting_group, task, revision, prompt_tokens, completion_tokens, units, credits_milli, latency_ms, ttft_ms, \
    status, fallback_used, fallback_reason, primary_model, attempts, output_bytes, modality, pixels, \"user\", \
    session_id) ";

/// Rows per statement: 26 parameters each, well under SQLite's limit of 32,766 (and PostgreSQL's 65,535).
const USAGE_ROWS_PER_STATEMENT: usize = 500;

pub(crate) fn to_i64(value: u64) -> i64 {
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

/// The open pool: one engine or the other.
#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the store's pool, whichever engine it is: the body is written once and
/// compiled for each.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}

/// What the readers take from a row of either engine.
pub(crate) trait Cols {
    fn text(&self, column: &str) -> StoreResult<String>;
    fn text_opt(&self, column: &str) -> StoreResult<Option<String>>;
    fn int(&self, column: &str) -> StoreResult<i64>;
    fn int_opt(&self, column: &str) -> StoreResult<Option<i64>>;
    fn bytes(&self, column: &str) -> StoreResult<Vec<u8>>;
    fn flag(&self, column: &str) -> StoreResult<bool>;
}

macro_rules! cols_for {
    ($($row:ty),*) => {$(
        impl Cols for $row {
            fn text(&self, column: &str) -> StoreResult<String> { self.try_get(column) }
            fn text_opt(&self, column: &str) -> StoreResult<Option<String>> { self.try_get(column) }
            fn int(&self, column: &str) -> StoreResult<i64> { self.try_get(column) }
            fn int_opt(&self, column: &str) -> StoreResult<Option<i64>> { self.try_get(column) }
            fn bytes(&self, column: &str) -> StoreResult<Vec<u8>> { self.try_get(column) }
            fn flag(&self, column: &str) -> StoreResult<bool> { self.try_get(column) }
        }
    )*};
}
cols_for!(sqlx::sqlite::SqliteRow, sqlx::postgres::PgRow);

/// One multi-row statement per chunk of records, on `$connection` (either engine's): a single round trip, atomic
/// with the debits its trigger makes. A record already stored is skipped (and so is its debit): importing the
/// journal again after a crash, or two gateways importing the same record, changes nothing twice. Only the full
/// chunk's statement is kept prepared: each shorter count is another SQL text, and sqlx would keep up to 100 of
/// them (about 2.5 KiB a row each) on the connection.
macro_rules! insert_usage {
    ($connection:expr, $usage:expr) => {{
        let mut result: Result<(), String> = Ok(());
        for chunk in $usage.chunks(USAGE_ROWS_PER_STATEMENT) {
            let mut insert = sqlx::QueryBuilder::new(USAGE_COLUMNS);
            insert.push_values(chunk, |mut row, r: &UsageRecord| {
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
            insert.push(" ON CONFLICT DO NOTHING");
            let full = chunk.len() == USAGE_ROWS_PER_STATEMENT;
            if let Err(e) = insert.build().persistent(full).execute($connection).await {
                result = Err(e.to_string());
                break;
            }
        }
        result
    }};
}

#[derive(Clone)]
pub struct Store {
    pub(crate) pool: Pool,
    /// SQLite's usage importer's own connection, opened from the importer's thread on first use so that SQLite's
    /// thread behind it inherits the importer's background scheduling class.
    writer: Arc<tokio::sync::Mutex<Option<SqliteConnection>>>,
    options: Option<SqliteConnectOptions>,
}

mod idempotency;
mod keys;
mod limits;
mod media;
mod notices;
pub mod schema;
mod sessions;
mod usage;
mod wallets;

pub use idempotency::KeptResponse;
pub use keys::KeyRecord;
pub use limits::RedisLimits;
pub use media::{MediaRow, Upload};
pub use notices::{Notice, Notices};
pub use sessions::SessionRow;
pub use usage::{RunRecord, UsageKey, UsageTotals};
pub use wallets::PgWallets;

pub type StoreResult<T> = Result<T, sqlx::Error>;

impl Store {
    /// Opens the store `url` names (`postgres://…`), or, with none, `switchyard.db` in the data directory.
    pub async fn connect(url: Option<&str>, data_dir: &Path) -> Result<Self, String> {
        match url.map(str::trim).filter(|u| !u.is_empty()) {
            None => Self::open(data_dir).await,
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Self::open_postgres(url).await
            }
            Some(url) if url.starts_with("sqlite:") => Err(format!(
                "database.url `{url}`: SQLite is the default, in the data directory; leave database.url empty"
            )),
            Some(url) => Err(format!("database.url `{}`: only postgres:// URLs are supported", redact(url))),
        }
    }

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
        schema::migrate_sqlite(&pool).await?;
        Ok(Store { pool: Pool::Sqlite(pool), writer: Arc::new(tokio::sync::Mutex::new(None)), options: Some(options) })
    }

    /// Connects to PostgreSQL and brings its schema up to date.
    async fn open_postgres(url: &str) -> Result<Self, String> {
        let shown = redact(url);
        let options =
            PgConnectOptions::from_str(url).map_err(|e| format!("database.url `{shown}` is not valid: {e}"))?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| format!("cannot connect to PostgreSQL at `{shown}`: {e}"))?;
        schema::migrate_postgres(&pool).await?;
        Ok(Store { pool: Pool::Postgres(pool), writer: Arc::new(tokio::sync::Mutex::new(None)), options: None })
    }

    /// `sqlite` or `postgres`.
    pub fn engine(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// The SQLite pool, when that is the engine (tests read rows with it).
    pub fn sqlite_pool(&self) -> Option<&SqlitePool> {
        match &self.pool {
            Pool::Sqlite(pool) => Some(pool),
            Pool::Postgres(_) => None,
        }
    }

    /// Closes the pool's connections.
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }

    /// Stores usage records left in the journal by an earlier process.
    pub async fn import_usage(&self, records: Vec<UsageRecord>) -> Result<(), String> {
        on_pool!(self, pool => {
            let mut connection = pool.acquire().await.map_err(|e| e.to_string())?;
            insert_usage!(&mut *connection, &records)
        })
    }

    /// SQLite: moves the write-ahead log into the database, without blocking writers. PostgreSQL keeps its own.
    async fn checkpoint(&self) -> Result<(), String> {
        if let Pool::Postgres(_) = self.pool {
            return Ok(());
        }
        let mut writer = self.writer().await?;
        let connection = writer.as_mut().ok_or("no writer connection")?;
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(connection).await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn writer(&self) -> Result<tokio::sync::MutexGuard<'_, Option<SqliteConnection>>, String> {
        let mut writer = self.writer.lock().await;
        if writer.is_none() {
            let options = self.options.as_ref().ok_or("the usage writer is SQLite's")?;
            *writer = Some(options.connect().await.map_err(|e| format!("cannot open the usage writer: {e}"))?);
        }
        Ok(writer)
    }

    /// Tasks changed through the admin API: (workspace id or "" for shared, slug, definition as JSON). A `None`
    /// definition is a deletion, kept so that a task from `config/tasks/` stays deleted across restarts.
    pub async fn tasks(&self) -> StoreResult<Vec<(String, String, Option<String>)>> {
        on_pool!(self, pool => {
            let rows = sqlx::query("SELECT workspace_id, slug, definition FROM tasks").fetch_all(pool).await?;
            rows.iter().map(|r| Ok((r.text("workspace_id")?, r.text("slug")?, r.text_opt("definition")?))).collect()
        })
    }

    /// Stores a task's definition (`None`: deleted).
    pub async fn put_task(&self, workspace_id: &str, slug: &str, definition: Option<&str>) -> StoreResult<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO tasks (workspace_id, slug, definition, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (workspace_id, slug) DO UPDATE SET definition = excluded.definition, \
                 updated_at = excluded.updated_at",
            )
            .bind(workspace_id)
            .bind(slug)
            .bind(definition)
            .bind(crate::clock::now_unix())
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    /// Every workspace's committed balance, for the ledger at start.
    pub async fn balances(&self) -> StoreResult<Vec<(String, Credits)>> {
        on_pool!(self, pool => {
            let rows = sqlx::query("SELECT id, credits_milli FROM workspaces").fetch_all(pool).await?;
            rows.iter().map(|r| Ok((r.text("id")?, Credits::from_milli(r.int("credits_milli")?)))).collect()
        })
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
            match &self.pool {
                Pool::Sqlite(_) => {
                    let mut writer = self.writer().await?;
                    let connection = writer.as_mut().ok_or("no writer connection")?;
                    insert_usage!(&mut *connection, &usage)?;
                }
                Pool::Postgres(pool) => {
                    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
                    insert_usage!(&mut *tx, &usage)?;
                    tx.commit().await.map_err(|e| e.to_string())?;
                }
            }
        }
        // Top-ups are rare and an operator waits for them: they take the pool, not the background writer.
        for (workspace_id, amount) in top_ups {
            on_pool!(self, pool => {
                sqlx::query("UPDATE workspaces SET credits_milli = credits_milli + $1 WHERE id = $2")
                    .bind(amount.milli())
                    .bind(workspace_id)
                    .execute(pool)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())?
            });
        }
        Ok(())
    }

    pub async fn ping(&self) -> StoreResult<()> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
    }

    pub async fn workspace_count(&self) -> StoreResult<i64> {
        on_pool!(self, pool => sqlx::query_scalar("SELECT COUNT(*) FROM workspaces").fetch_one(pool).await)
    }

    pub async fn insert_workspace(&self, w: &Workspace) -> StoreResult<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO workspaces (id, name, credits_milli, requests_per_minute, concurrent_requests, \
                 tokens_per_minute, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&w.id)
            .bind(&w.name)
            .bind(w.credits.milli())
            .bind(i64::from(w.plan.requests_per_minute))
            .bind(i64::from(w.plan.concurrent_requests))
            .bind(i64::from(w.plan.tokens_per_minute))
            .bind(w.created_at)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    pub async fn workspace(&self, id: &str) -> StoreResult<Option<Workspace>> {
        on_pool!(self, pool => {
            let row = sqlx::query(&format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            row.map(|r| workspace_from_row(&r)).transpose()
        })
    }

    pub async fn workspaces(&self) -> StoreResult<Vec<Workspace>> {
        on_pool!(self, pool => {
            let rows = sqlx::query(&format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces ORDER BY created_at, id"))
                .fetch_all(pool)
                .await?;
            rows.iter().map(workspace_from_row).collect()
        })
    }
}

const WORKSPACE_COLUMNS: &str =
    "id, name, credits_milli, requests_per_minute, concurrent_requests, tokens_per_minute, created_at";

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`: a URL as logs and errors may show it.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &credentials[..colon], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn to_u32(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn workspace_from_row(row: &impl Cols) -> StoreResult<Workspace> {
    Ok(Workspace {
        id: row.text("id")?,
        name: row.text("name")?,
        credits: Credits::from_milli(row.int("credits_milli")?),
        plan: Plan {
            requests_per_minute: to_u32(row.int("requests_per_minute")?),
            concurrent_requests: to_u32(row.int("concurrent_requests")?),
            tokens_per_minute: to_u32(row.int("tokens_per_minute")?),
        },
        created_at: row.int("created_at")?,
    })
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
