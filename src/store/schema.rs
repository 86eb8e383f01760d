//! The schema of each engine and how it moves forward. SQLite: [`SQLITE_SCHEMA`] then [`SQLITE_MIGRATIONS`], counted
//! by `PRAGMA user_version` (data directories made by earlier releases). PostgreSQL: [`POSTGRES_MIGRATIONS`], the
//! first of which is the whole schema of today, counted in `schema_version`, applied under an advisory lock so
//! that several gateways starting at once apply each migration once. A new change is one more entry in both lists.

use sqlx::{PgPool, SqlitePool};

pub const SQLITE_SCHEMA: &str = r#"
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

/// Changes to the schema after [`SQLITE_SCHEMA`], in order: a database at `PRAGMA user_version` n has had the
/// first n.
pub const SQLITE_MIGRATIONS: &[&str] = &[
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
    // 3: the gateway running an idempotency key's first request (a restarted gateway frees its predecessor's).
    "ALTER TABLE idempotency ADD COLUMN instance TEXT NOT NULL DEFAULT '';",
];

/// PostgreSQL's schema, in order: a database at `schema_version` n has had the first n. Integers are BIGINT
/// (SQLite's INTEGER: i64 on both sides), bytes BYTEA, a usage record's `fallback_used` a BOOLEAN.
pub const POSTGRES_MIGRATIONS: &[&str] = &[
    // 1: the schema of SQLite's version 2.
    r#"
CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    credits_milli BIGINT NOT NULL,
    requests_per_minute BIGINT NOT NULL,
    concurrent_requests BIGINT NOT NULL,
    tokens_per_minute BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    key_hash BYTEA NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    models TEXT
);
CREATE INDEX api_keys_workspace ON api_keys(workspace_id);
CREATE TABLE usage (
    id TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    workspace_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    reporting_group TEXT,
    task TEXT,
    revision TEXT,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    units BIGINT NOT NULL,
    credits_milli BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    ttft_ms BIGINT,
    status TEXT NOT NULL,
    fallback_used BOOLEAN NOT NULL,
    fallback_reason TEXT,
    primary_model TEXT,
    attempts BIGINT NOT NULL,
    output_bytes BIGINT NOT NULL,
    modality TEXT,
    pixels BIGINT NOT NULL DEFAULT 0,
    "user" TEXT,
    session_id TEXT
);
CREATE INDEX usage_workspace_time ON usage(workspace_id, created_at);
CREATE INDEX usage_session ON usage(session_id) WHERE session_id IS NOT NULL;
-- The debit and its usage record are one write: a record cannot exist without its charge, nor the reverse.
CREATE FUNCTION usage_debit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE workspaces SET credits_milli = credits_milli - NEW.credits_milli WHERE id = NEW.workspace_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER usage_debit AFTER INSERT ON usage FOR EACH ROW WHEN (NEW.credits_milli <> 0)
    EXECUTE FUNCTION usage_debit();
CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    status TEXT NOT NULL,
    sha256 TEXT,
    object TEXT,
    media_ref TEXT
);
CREATE TABLE media (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    object TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE idempotency (
    workspace_id TEXT NOT NULL,
    key TEXT NOT NULL,
    body_hash BYTEA NOT NULL,
    status BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, key)
);
CREATE TABLE tasks (
    workspace_id TEXT NOT NULL,
    slug TEXT NOT NULL,
    definition TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, slug)
);
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    "user" TEXT,
    models TEXT,
    max_credits_milli BIGINT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX sessions_workspace ON sessions(workspace_id);
"#,
    // 2: wallets shared by gateways: what calls in flight hold, each hold (and the gateway that took it), and the
    // gateways' heartbeats.
    r#"
ALTER TABLE workspaces ADD COLUMN reserved_milli BIGINT NOT NULL DEFAULT 0;
CREATE TABLE holds (
    id BIGSERIAL PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    amount_milli BIGINT NOT NULL,
    instance TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX holds_instance ON holds(instance);
CREATE TABLE instances (id TEXT PRIMARY KEY, seen_at BIGINT NOT NULL);
"#,
    // 3: secrets every gateway must hold the same (the session-token signing keys).
    "CREATE TABLE secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // 4: the gateway running an idempotency key's first request (the keys of a gateway gone silent are freed).
    "ALTER TABLE idempotency ADD COLUMN instance TEXT NOT NULL DEFAULT ''; \
     CREATE INDEX idempotency_running ON idempotency(instance) WHERE status = 0;",
];

/// Creates SQLite's tables and applies the migrations it has not had yet, each with its version bump in one
/// transaction.
pub async fn migrate_sqlite(pool: &SqlitePool) -> Result<(), String> {
    sqlx::raw_sql(SQLITE_SCHEMA).execute(pool).await.map_err(|e| format!("cannot create schema: {e}"))?;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(pool)
        .await
        .map_err(|e| format!("cannot read the schema version: {e}"))?;
    for (done, migration) in SQLITE_MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        let mut tx = pool.begin().await.map_err(|e| format!("migration {}: {e}", done + 1))?;
        let sql = format!("{migration} PRAGMA user_version = {};", done + 1);
        sqlx::raw_sql(&sql).execute(&mut *tx).await.map_err(|e| format!("migration {}: {e}", done + 1))?;
        tx.commit().await.map_err(|e| format!("migration {}: {e}", done + 1))?;
    }
    Ok(())
}

/// Brings a PostgreSQL database to the newest schema: one transaction holding an advisory lock (one gateway
/// migrates, the others wait and then find nothing left to do).
pub async fn migrate_postgres(pool: &PgPool) -> Result<(), String> {
    let fail = |e: sqlx::Error| format!("cannot migrate the PostgreSQL schema: {e}");
    let mut tx = pool.begin().await.map_err(fail)?;
    // The lock's key: "switchyard" as a number, any fixed value other applications are unlikely to take.
    sqlx::query("SELECT pg_advisory_xact_lock(7583693147268)").execute(&mut *tx).await.map_err(fail)?;
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    let version: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM schema_version").fetch_one(&mut *tx).await.map_err(fail)?;
    let version = usize::try_from(version.unwrap_or(0)).unwrap_or(0);
    for (done, migration) in POSTGRES_MIGRATIONS.iter().enumerate().skip(version) {
        let step = |e: sqlx::Error| format!("PostgreSQL migration {}: {e}", done + 1);
        sqlx::raw_sql(migration).execute(&mut *tx).await.map_err(step)?;
        sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
            .bind(i64::try_from(done + 1).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(step)?;
    }
    tx.commit().await.map_err(fail)
}
