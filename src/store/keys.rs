//! API keys: their records (hashes, never the keys), revocation, and the models each may run.

use super::{Store, StoreResult};
use sqlx::Row;

#[derive(Clone, Debug, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub key_hash: [u8; 32],
    pub prefix: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// The models the key may run; `None`: every model.
    pub models: Option<Vec<String>>,
}

const COLUMNS: &str = "id, workspace_id, name, key_hash, prefix, created_at, revoked_at, models";

fn models_text(models: &Option<Vec<String>>) -> Option<String> {
    models.as_ref().map(|m| serde_json::to_string(m).unwrap_or_else(|_| "[]".into()))
}

impl Store {
    pub async fn insert_key(&self, k: &KeyRecord) -> StoreResult<()> {
        sqlx::query(&format!("INSERT INTO api_keys ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"))
            .bind(&k.id)
            .bind(&k.workspace_id)
            .bind(&k.name)
            .bind(k.key_hash.as_slice())
            .bind(&k.prefix)
            .bind(k.created_at)
            .bind(k.revoked_at)
            .bind(models_text(&k.models))
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    pub async fn keys(&self, workspace_id: Option<&str>) -> StoreResult<Vec<KeyRecord>> {
        let rows = match workspace_id {
            Some(id) => {
                sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys WHERE workspace_id = ? ORDER BY created_at, id"))
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys")).fetch_all(&self.pool).await?,
        };
        rows.iter().map(key_from_row).collect()
    }

    pub async fn key(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| key_from_row(&r)).transpose()
    }

    /// Marks a key revoked; answers the record, or `None` when no such key exists.
    pub async fn revoke_key(&self, id: &str, now: i64) -> StoreResult<Option<KeyRecord>> {
        sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.key(id).await
    }

    /// Sets the models a key may run (`None`: every model); answers the record, or `None` when no such key exists.
    pub async fn set_key_models(&self, id: &str, models: &Option<Vec<String>>) -> StoreResult<Option<KeyRecord>> {
        sqlx::query("UPDATE api_keys SET models = ? WHERE id = ?")
            .bind(models_text(models))
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.key(id).await
    }
}

fn key_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<KeyRecord> {
    let hash: Vec<u8> = row.try_get("key_hash")?;
    let key_hash: [u8; 32] =
        hash.try_into().map_err(|_| sqlx::Error::Decode("api_keys.key_hash is not 32 bytes".into()))?;
    let models: Option<String> = row.try_get("models")?;
    let models = models
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|e| sqlx::Error::Decode(format!("api_keys.models: {e}").into()))?;
    Ok(KeyRecord {
        id: row.try_get("id")?,
        workspace_id: row.try_get("workspace_id")?,
        name: row.try_get("name")?,
        key_hash,
        prefix: row.try_get("prefix")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
        models,
    })
}
