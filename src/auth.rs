//! API keys: generated with 256 bits of entropy, stored as SHA-256 hashes, resolved from an in-memory cache so no
//! request reads the database, and compared in constant time.

use crate::store::{KeyRecord, Plan, Store, Workspace};
use actix_web::HttpRequest;
use dashmap::DashMap;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

pub const KEY_PREFIX: &str = "sy_live_";

/// Who is calling: resolved from the API key on every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub workspace_id: String,
    pub workspace_name: String,
    pub plan: Plan,
}

pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A new key: `sy_live_` and 64 hex digits (32 random bytes).
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

struct CachedKey {
    hash: [u8; 32],
    principal: Principal,
}

/// Live keys by hash. Written by the admin API and at start; read by every request.
#[derive(Clone, Default)]
pub struct KeyCache {
    keys: Arc<DashMap<[u8; 32], CachedKey>>,
}

impl KeyCache {
    /// Fills the cache with every unrevoked key.
    pub async fn load(store: &Store) -> Result<Self, sqlx::Error> {
        let cache = KeyCache::default();
        let workspaces: std::collections::HashMap<String, Workspace> =
            store.workspaces().await?.into_iter().map(|w| (w.id.clone(), w)).collect();
        for key in store.keys(None).await? {
            if let (None, Some(workspace)) = (key.revoked_at, workspaces.get(&key.workspace_id)) {
                cache.insert(&key, workspace);
            }
        }
        Ok(cache)
    }

    pub fn insert(&self, key: &KeyRecord, workspace: &Workspace) {
        let principal = Principal {
            key_id: key.id.clone(),
            workspace_id: workspace.id.clone(),
            workspace_name: workspace.name.clone(),
            plan: workspace.plan,
        };
        self.keys.insert(key.key_hash, CachedKey { hash: key.key_hash, principal });
    }

    pub fn remove(&self, hash: &[u8; 32]) {
        self.keys.remove(hash);
    }

    pub fn resolve(&self, key: &str) -> Option<Principal> {
        let hash = hash_key(key);
        let entry = self.keys.get(&hash)?;
        bool::from(entry.hash.ct_eq(&hash)).then(|| entry.principal.clone())
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The key a request presents: `X-API-Key: KEY` or `Authorization: Bearer KEY`.
pub fn presented_key(req: &HttpRequest) -> Option<&str> {
    if let Some(key) = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(key.trim()).filter(|k| !k.is_empty());
    }
    let auth = req.headers().get(actix_web::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_prefixed() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 64);
    }

    #[test]
    fn cache_resolves_only_the_exact_key() {
        let cache = KeyCache::default();
        let key = generate_key();
        let record = KeyRecord {
            id: "key_1".into(),
            workspace_id: "ws_1".into(),
            name: "k".into(),
            key_hash: hash_key(&key),
            prefix: key[..12].into(),
            created_at: 0,
            revoked_at: None,
        };
        let plan = Plan { requests_per_minute: 1, concurrent_requests: 1, tokens_per_minute: 1 };
        let workspace =
            Workspace { id: "ws_1".into(), name: "w".into(), credits: Default::default(), plan, created_at: 0 };
        cache.insert(&record, &workspace);
        assert_eq!(cache.resolve(&key).map(|p| p.workspace_id), Some("ws_1".to_owned()));
        assert!(cache.resolve(&format!("{key}x")).is_none());
        cache.remove(&record.key_hash);
        assert!(cache.resolve(&key).is_none());
    }
}
