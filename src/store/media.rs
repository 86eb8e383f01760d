//! Media rows (uploaded and generated objects of a workspace) and resumable uploads. The bytes live in the blob
//! store (`crate::media`); these rows say whose they are and where.

use super::{Cols, Store, StoreResult};

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
                            created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// The insert of a media row on `$executor` (a pool or a transaction, either engine's).
macro_rules! insert_media {
    ($m:expr, $executor:expr) => {
        sqlx::query(INSERT_MEDIA)
            .bind(&$m.id)
            .bind(&$m.workspace_id)
            .bind(&$m.filename)
            .bind(&$m.content_type)
            .bind($m.bytes as i64)
            .bind(&$m.sha256)
            .bind(&$m.object)
            .bind($m.created_at)
            .execute($executor)
    };
}

impl Store {
    pub async fn insert_media(&self, m: &MediaRow) -> StoreResult<()> {
        on_pool!(self, pool => insert_media!(m, pool).await.map(|_| ()))
    }

    /// A media object of `workspace_id`: its filename, content type and blob name.
    pub async fn media(&self, workspace_id: &str, id: &str) -> StoreResult<Option<(String, String, String)>> {
        on_pool!(self, pool => {
            let row =
                sqlx::query("SELECT filename, content_type, object FROM media WHERE id = $1 AND workspace_id = $2")
                    .bind(id)
                    .bind(workspace_id)
                    .fetch_optional(pool)
                    .await?;
            row.map(|r| Ok((r.text("filename")?, r.text("content_type")?, r.text("object")?))).transpose()
        })
    }

    /// Media objects stored, and their bytes.
    pub async fn media_totals(&self) -> StoreResult<(i64, i64)> {
        on_pool!(self, pool => {
            let row = sqlx::query("SELECT COUNT(*) AS n, CAST(COALESCE(SUM(bytes), 0) AS BIGINT) AS b FROM media")
                .fetch_one(pool)
                .await?;
            Ok((row.int("n")?, row.int("b")?))
        })
    }

    /// The workspace a media object belongs to.
    pub async fn media_owner(&self, id: &str) -> StoreResult<Option<String>> {
        on_pool!(self, pool => {
            sqlx::query_scalar("SELECT workspace_id FROM media WHERE id = $1").bind(id).fetch_optional(pool).await
        })
    }

    /// Opens an upload of `bytes` bytes, valid until `expires_at`.
    pub async fn insert_upload(&self, id: &str, upload: &Upload) -> StoreResult<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO uploads (id, workspace_id, filename, content_type, bytes, expires_at, status) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending')",
            )
            .bind(id)
            .bind(&upload.workspace_id)
            .bind(&upload.filename)
            .bind(&upload.content_type)
            .bind(upload.bytes as i64)
            .bind(upload.expires_at)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    pub async fn upload(&self, id: &str) -> StoreResult<Option<Upload>> {
        on_pool!(self, pool => {
            let row = sqlx::query(
                "SELECT workspace_id, filename, content_type, bytes, expires_at, status, sha256, object, media_ref \
                 FROM uploads WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?;
            row.map(|r| upload_from_row(&r)).transpose()
        })
    }

    /// Points an upload at the bytes just received; false when it was completed meanwhile.
    pub async fn mark_uploaded(&self, id: &str, sha256: &str, object: &str) -> StoreResult<bool> {
        let updated = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE uploads SET status = 'uploaded', sha256 = $1, object = $2 \
                 WHERE id = $3 AND status != 'completed'",
            )
            .bind(sha256)
            .bind(object)
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    /// Completes upload `id` as media `m` in one transaction, if it still points at `m.object`; false when the
    /// upload changed meanwhile.
    pub async fn complete_upload(&self, id: &str, m: &MediaRow) -> StoreResult<bool> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let claimed = sqlx::query(
                "UPDATE uploads SET status = 'completed', media_ref = $1 \
                 WHERE id = $2 AND status = 'uploaded' AND object = $3",
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
            insert_media!(m, &mut *tx).await?;
            tx.commit().await?;
            Ok(true)
        })
    }
}

fn upload_from_row(r: &impl Cols) -> StoreResult<Upload> {
    Ok(Upload {
        workspace_id: r.text("workspace_id")?,
        filename: r.text("filename")?,
        content_type: r.text("content_type")?,
        bytes: u64::try_from(r.int("bytes")?).unwrap_or(0),
        expires_at: r.int("expires_at")?,
        status: r.text("status")?,
        sha256: r.text_opt("sha256")?,
        object: r.text_opt("object")?,
        media_ref: r.text_opt("media_ref")?,
    })
}
