//! The store's schema moves forward in place: a data directory made by an older gateway opens with its records
//! kept and the new columns and tables added, and opening it again changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::Row;
use switchyard::store::Store;

#[actix_web::test]
async fn an_older_data_directory_is_migrated_in_place_once() {
    let dir = tempfile::tempdir().unwrap();
    // The usage table as the first release made it, with one record.
    {
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("switchyard.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE usage (id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, workspace_id TEXT NOT NULL, \
             key_id TEXT NOT NULL, model TEXT NOT NULL, provider TEXT NOT NULL, endpoint TEXT NOT NULL, \
             reporting_group TEXT, task TEXT, revision TEXT, prompt_tokens INTEGER NOT NULL, \
             completion_tokens INTEGER NOT NULL, units INTEGER NOT NULL, credits_milli INTEGER NOT NULL, \
             latency_ms INTEGER NOT NULL, ttft_ms INTEGER, status TEXT NOT NULL, fallback_used INTEGER NOT NULL, \
             fallback_reason TEXT, primary_model TEXT, attempts INTEGER NOT NULL, output_bytes INTEGER NOT NULL); \
             INSERT INTO usage VALUES ('old', 1, 'ws', 'k', 'gpt-4', 'openai', '/api/v1/task', NULL, NULL, NULL, \
             3, 4, 0, 0, 10, NULL, 'ok', 0, NULL, 'gpt-4', 1, 20);",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    for _ in 0..2 {
        let store = Store::open(dir.path()).await.unwrap();
        let row = sqlx::query("SELECT id, modality, pixels, output_bytes FROM usage")
            .fetch_one(store.sqlite_pool().unwrap())
            .await
            .unwrap();
        assert_eq!(row.get::<String, _>("id"), "old");
        assert_eq!(row.get::<Option<String>, _>("modality"), None);
        assert_eq!((row.get::<i64, _>("pixels"), row.get::<i64, _>("output_bytes")), (0, 20));
        let version: i64 =
            sqlx::query_scalar("PRAGMA user_version").fetch_one(store.sqlite_pool().unwrap()).await.unwrap();
        assert_eq!(version, 3);
        store.close().await;
    }
}
