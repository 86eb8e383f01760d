//! Media rows (uploaded and generated objects of a workspace) and resumable uploads. The bytes live in the blob
//! store (`crate::media`); these rows say whose they are and where.

use super::{Store, StoreResult};
use sqlx::Row;

/// A media object as recorded.
pub struct MediaRow {
    pub id: String,
    pub workspace_id: String,
    pub filename: String,
    pub content_type: String,
    pub bytes: u64,
    pub sha256: String,
    /// The blob's name in the blob store.
    pub object: String,
    pub created_at: i64,
}

/// An upload in progress (`pending`, `uploaded`) or done (`completed`).
pub struct Upload {
    pub workspace_id: String,
    pub filename: String,
    pub content_type: String,
    pub bytes: u64,
    pub expires_at: i64,
    pub status: String,
    pub sha256: Option<String>,
    pub object: Option<String>,
    pub media_ref: Option<String>,
}

const INSERT_MEDIA: &str = "INSERT INTO media (id, workspace_id, filename, content_type, bytes, sha256, object, \
                            created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)";

/// The insert of a media row, ready to run on the pool or in a transaction.
fn insert_media(m: &MediaRow) -> sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'_>> {
    sqlx::query(INSERT_MEDIA)
        .bind(&m.id)
        .bind(&m.workspace_id)
        .bind(&m.filename)
        .bind(&m.content_type)
        .bind(m.bytes as i64)
        .bind(&m.sha256)
        .bind(&m.object)
        .bind(m.created_at)
}

impl Store {
    pub async fn insert_media(&self, m: &MediaRow) -> StoreResult<()> {
        insert_media(m).execute(&self.pool).await?;
        Ok(())
    }

    /// A media object of `workspace_id`: its filename, content type and blob name.
    pub async fn media(&self, workspace_id: &str, id: &str) -> StoreResult<Option<(String, String, String)>> {
        let row = sqlx::query("SELECT filename, content_type, object FROM media WHERE id = ? AND workspace_id = ?")
            .bind(id)
            .bind(workspace_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("filename")?, r.try_get("content_type")?, r.try_get("object")?))).transpose()
    }

    /// Opens an upload of `bytes` bytes, valid until `expires_at`.
    /// The workspace a media object belongs to.
    /// Media objects stored, and their bytes.
    pub async fn media_totals(&self) -> StoreResult<(i64, i64)> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n, COALESCE(SUM(bytes), 0) AS b FROM media").fetch_one(&self.pool).await?;
        Ok((row.try_get("n")?, row.try_get("b")?))
    }

    pub async fn media_owner(&self, id: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT workspace_id FROM media WHERE id = ?").bind(id).fetch_optional(&self.pool).await
    }

    pub async fn insert_upload(&self, id: &str, upload: &Upload) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO uploads (id, workspace_id, filename, content_type, bytes, expires_at, status) \
             VALUES (?, ?, ?, ?, ?, ?, 'pending')",
        )
        .bind(id)
        .bind(&upload.workspace_id)
        .bind(&upload.filename)
        .bind(&upload.content_type)
        .bind(upload.bytes as i64)
        .bind(upload.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn upload(&self, id: &str) -> StoreResult<Option<Upload>> {
        let row = sqlx::query(
            "SELECT workspace_id, filename, content_type, bytes, expires_at, status, sha256, object, media_ref \
             FROM uploads WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Upload {
                workspace_id: r.try_get("workspace_id")?,
                filename: r.try_get("filename")?,
                content_type: r.try_get("content_type")?,
                bytes: r.try_get::<i64, _>("bytes")? as u64,
                expires_at: r.try_get("expires_at")?,
                status: r.try_get("status")?,
                sha256: r.try_get("sha256")?,
                object: r.try_get("object")?,
                media_ref: r.try_get("media_ref")?,
            })
        })
        .transpose()
    }

    /// Points an upload at the bytes just received; false when it was completed meanwhile.
    pub async fn mark_uploaded(&self, id: &str, sha256: &str, object: &str) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE uploads SET status = 'uploaded', sha256 = ?, object = ? WHERE id = ? AND status != 'completed'",
        )
        .bind(sha256)
        .bind(object)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    /// Completes upload `id` as media `m` in one transaction, if it still points at `m.object`; false when the
    /// upload changed meanwhile.
    pub async fn complete_upload(&self, id: &str, m: &MediaRow) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(
            "UPDATE uploads SET status = 'completed', media_ref = ? WHERE id = ? AND status = 'uploaded' AND object = ?",
        )
        .bind(&m.id)
        .bind(id)
        .bind(&m.object)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed != 1 {
            return Ok(false);
        }
        insert_media(m).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }
}
