//! API keys: generated with 256 bits of entropy, stored as SHA-256 hashes, resolved from an in-memory cache so no
//! request reads the database, and compared in constant time.

use crate::sessions::Claims;
use crate::store::{KeyRecord, Plan, Store, Workspace};
use actix_web::HttpRequest;
use dashmap::DashMap;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

pub const KEY_PREFIX: &str = "sy_live_";

/// Who is calling: resolved from the API key (or a session token it minted) on every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub workspace_id: String,
    pub workspace_name: String,
    pub plan: Plan,
    /// The models the caller may run (`None`: all): the key's list, and within it a session token's.
    pub models: Option<Arc<[String]>>,
    /// The browser session, when the caller presented a session token rather than the key itself.
    pub session: Option<Arc<Claims>>,
    /// Calls are made inside a concurrency slot the caller already holds (a realtime session's): each counts
    /// against the requests and tokens per minute, not again against the concurrency.
    pub holds_slot: bool,
}

impl Principal {
    /// Whether the caller may run `model`.
    pub fn may_run(&self, model: &str) -> bool {
        self.models.as_deref().is_none_or(|models| models.iter().any(|m| m == model))
    }
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
    // Time first (milliseconds, 48 bits), then 48 random bits: ids sort by creation, so the store's indexes on
    // them grow at one end (a usage import then touches a page or two of the id index, not one page per record),
    // and two ids made in the same millisecond still differ by chance of 2^-48.
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    bytes[..6].copy_from_slice(&(millis as u64).to_be_bytes()[2..]);
    rand::thread_rng().fill_bytes(&mut bytes[6..]);
    let mut id = String::with_capacity(prefix.len() + 1 + 24);
    id.push_str(prefix);
    id.push('_');
    id.push_str(&hex::encode(bytes));
    id
}

struct CachedKey {
    hash: [u8; 32],
    principal: Principal,
}

/// Live keys by hash (and their principals by key id, for session tokens). Written by the admin API and at start;
/// read by every request.
#[derive(Clone, Default)]
pub struct KeyCache {
    keys: Arc<DashMap<[u8; 32], CachedKey>>,
    by_id: Arc<DashMap<String, Principal>>,
    /// Counts this gateway's own changes; held while a change or a refresh is applied (never by `resolve`).
    changes: Arc<std::sync::Mutex<u64>>,
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

    /// Brings the cache to what the store holds now: keys made, changed (models, the workspace's plan) or revoked
    /// through another gateway on the same database. A refresh that overlapped a change made here is dropped (the
    /// next one brings both): a key made or revoked here is never undone by an older read.
    pub async fn refresh(&self, store: &Store) -> Result<(), sqlx::Error> {
        let before = *self.changed();
        let fresh = KeyCache::load(store).await?;
        let changes = self.changed();
        if *changes != before {
            return Ok(());
        }
        self.keys.retain(|hash, _| fresh.keys.contains_key(hash));
        self.by_id.retain(|id, _| fresh.by_id.contains_key(id));
        for entry in fresh.keys.iter() {
            let principal = entry.value().principal.clone();
            self.by_id.insert(principal.key_id.clone(), principal.clone());
            self.keys.insert(*entry.key(), CachedKey { hash: entry.value().hash, principal });
        }
        Ok(())
    }

    fn changed(&self) -> std::sync::MutexGuard<'_, u64> {
        self.changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn insert(&self, key: &KeyRecord, workspace: &Workspace) {
        *self.changed() += 1;
        let principal = Principal {
            key_id: key.id.clone(),
            workspace_id: workspace.id.clone(),
            workspace_name: workspace.name.clone(),
            plan: workspace.plan,
            models: key.models.clone().map(Arc::from),
            session: None,
            holds_slot: false,
        };
        self.by_id.insert(key.id.clone(), principal.clone());
        self.keys.insert(key.key_hash, CachedKey { hash: key.key_hash, principal });
    }

    pub fn remove(&self, hash: &[u8; 32]) {
        *self.changed() += 1;
        if let Some((_, key)) = self.keys.remove(hash) {
            self.by_id.remove(&key.principal.key_id);
        }
    }

    /// The principal of a live key, by its id.
    pub fn by_id(&self, key_id: &str) -> Option<Principal> {
        self.by_id.get(key_id).map(|p| p.clone())
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

/// Whether a credential header comes more than once (which one was meant cannot be told).
pub fn ambiguous_key(req: &HttpRequest) -> bool {
    let headers = req.headers();
    headers.get_all("x-api-key").nth(1).is_some()
        || headers.get_all(actix_web::http::header::AUTHORIZATION).nth(1).is_some()
}

/// The credential a request presents: `X-API-Key: KEY` or `Authorization: Bearer KEY|TOKEN`, and on a WebSocket
/// upgrade (where browsers cannot set headers) the `token` query parameter.
pub fn presented_key(req: &HttpRequest) -> Option<&str> {
    if let Some(key) = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(key.trim()).filter(|k| !k.is_empty());
    }
    if let Some(auth) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        let (scheme, token) = auth.to_str().ok()?.trim().split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|k| !k.is_empty());
    }
    let upgrade = req.headers().get(actix_web::http::header::UPGRADE).and_then(|v| v.to_str().ok());
    if upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        return req.query_string().split('&').find_map(|pair| pair.strip_prefix("token=")).filter(|t| !t.is_empty());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_lead_with_their_millisecond_and_never_repeat() {
        let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let before = now();
        let mut ids: Vec<String> = (0..1000).map(|_| new_id("x")).collect();
        let after = now();
        for id in &ids {
            assert!(id.starts_with("x_") && id.len() == 26 && id[2..].chars().all(|c| c.is_ascii_hexdigit()), "{id}");
            // Fixed-width hex of the time first: a later millisecond sorts later.
            let millis = u64::from_str_radix(&id[2..14], 16).unwrap();
            assert!((before..=after).contains(&millis), "{id}: {millis} not in {before}..={after}");
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 1000, "ids made in the same millisecond differ");
    }

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
            models: None,
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

    #[test]
    fn a_token_rides_in_the_query_only_on_a_websocket_upgrade() {
        use actix_web::test::TestRequest;
        let upgrade =
            TestRequest::get().uri("/v1/realtime?model=m&token=sy_st_abc.def").insert_header(("upgrade", "websocket"));
        assert_eq!(presented_key(&upgrade.to_http_request()), Some("sy_st_abc.def"));
        let plain = TestRequest::get().uri("/v1/models?token=sy_st_abc.def").to_http_request();
        assert_eq!(presented_key(&plain), None);
        let header = TestRequest::get().uri("/x?token=ignored").insert_header(("authorization", "Bearer sy_st_1.2"));
        assert_eq!(presented_key(&header.insert_header(("upgrade", "websocket")).to_http_request()), Some("sy_st_1.2"));
    }
}
