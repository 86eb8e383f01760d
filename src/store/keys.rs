//! API keys: their records (hashes, never the keys), revocation, and the models each may run.

use super::{Cols, Store, StoreResult};

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
        on_pool!(self, pool => {
            sqlx::query(&format!("INSERT INTO api_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"))
                .bind(&k.id)
                .bind(&k.workspace_id)
                .bind(&k.name)
                .bind(k.key_hash.as_slice())
                .bind(&k.prefix)
                .bind(k.created_at)
                .bind(k.revoked_at)
                .bind(models_text(&k.models))
                .execute(pool)
                .await
                .map(|_| ())
        })
    }

    pub async fn keys(&self, workspace_id: Option<&str>) -> StoreResult<Vec<KeyRecord>> {
        on_pool!(self, pool => {
            let rows = match workspace_id {
                Some(id) => {
                    sqlx::query(&format!(
                        "SELECT {COLUMNS} FROM api_keys WHERE workspace_id = $1 ORDER BY created_at, id"
                    ))
                    .bind(id)
                    .fetch_all(pool)
                    .await?
                }
                None => sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys")).fetch_all(pool).await?,
            };
            rows.iter().map(key_from_row).collect()
        })
    }

    pub async fn key(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        on_pool!(self, pool => {
            let row = sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            row.map(|r| key_from_row(&r)).transpose()
        })
    }

    /// Marks a key revoked; answers the record, or `None` when no such key exists.
    pub async fn revoke_key(&self, id: &str, now: i64) -> StoreResult<Option<KeyRecord>> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(pool)
                .await
                .map(|_| ())?
        });
        self.key(id).await
    }

    /// Sets the models a key may run (`None`: every model); answers the record, or `None` when no such key exists.
    pub async fn set_key_models(&self, id: &str, models: &Option<Vec<String>>) -> StoreResult<Option<KeyRecord>> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE api_keys SET models = $1 WHERE id = $2")
                .bind(models_text(models))
                .bind(id)
                .execute(pool)
                .await
                .map(|_| ())?
        });
        self.key(id).await
    }
}

fn key_from_row(row: &impl Cols) -> StoreResult<KeyRecord> {
    let hash = row.bytes("key_hash")?;
    let key_hash: [u8; 32] =
        hash.try_into().map_err(|_| sqlx::Error::Decode("api_keys.key_hash is not 32 bytes".into()))?;
    let models = row
        .text_opt("models")?
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|e| sqlx::Error::Decode(format!("api_keys.models: {e}").into()))?;
    Ok(KeyRecord {
        id: row.text("id")?,
        workspace_id: row.text("workspace_id")?,
        name: row.text("name")?,
        key_hash,
        prefix: row.text("prefix")?,
        created_at: row.int("created_at")?,
        revoked_at: row.int_opt("revoked_at")?,
        models,
    })
}
