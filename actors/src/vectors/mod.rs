//! Vector storage behind one trait, with the tenant (a workspace and a scope) enforced inside the store layer: every
//! search, count and delete carries the tenant's filter, so no handler can forget it. Two backends behave the
//! same: `edge` (Qdrant's engine in process, `qdrant-edge`, the default) and `remote` (a Qdrant server, over gRPC
//! with `qdrant-client`).
//!
//! A collection holds one embedding model's vectors. Points carry the payload fields `tenant` (keyword, indexed
//! with `is_tenant`), `workspace` (keyword, indexed), `doc_id` (keyword, indexed), `chunk` (the chunk's number in
//! its document), `text`, `metadata` (the caller's object) and `updated_at` (Unix milliseconds, integer index with
//! range and lookup).

pub mod edge;
pub mod remote;

use futures::future::BoxFuture;
use serde_json::{Map, Value};

/// Who owns points: a workspace and one of its scopes. Stored as one keyword, `"<workspace_id>/<scope>"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant {
    pub workspace_id: String,
    pub scope: String,
}

impl Tenant {
    pub fn key(&self) -> String {
        format!("{}/{}", self.workspace_id, self.scope)
    }
}

/// One chunk of one document, embedded.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    pub doc_id: String,
    /// The chunk's number within its document, from 0.
    pub chunk: u32,
    pub text: String,
    pub metadata: Map<String, Value>,
    pub vector: Vec<f32>,
}

/// A search hit.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub doc_id: String,
    pub chunk: u32,
    pub score: f32,
    pub text: String,
    pub metadata: Map<String, Value>,
}

impl Hit {
    /// A hit from a stored point's payload (the layout described at the top of this module) and its score.
    pub fn from_payload(payload: &Map<String, Value>, score: f32) -> Hit {
        let text = |field: &str| payload.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
        Hit {
            doc_id: text("doc_id"),
            chunk: payload.get("chunk").and_then(Value::as_u64).unwrap_or_default() as u32,
            score,
            text: text("text"),
            metadata: payload.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default(),
        }
    }
}

/// Conditions on `metadata`: every key must equal its value (strings, numbers, booleans), or be one of the values
/// when the value is an array. Keys are metadata field names (letters, digits, `_`, `-`).
pub type MetadataFilter = Map<String, Value>;

/// Most conditions one filter may hold, and most values one array condition may list.
pub const MAX_FILTER_KEYS: usize = 16;
pub const MAX_FILTER_VALUES: usize = 64;

/// Checks a metadata filter: field names of letters, digits, `_` and `-` (at most 64), values strings, integers,
/// numbers, booleans, or non-empty arrays of strings or of integers.
pub fn validate_filter(filter: &MetadataFilter) -> Result<(), String> {
    if filter.len() > MAX_FILTER_KEYS {
        return Err(format!("filter: at most {MAX_FILTER_KEYS} fields"));
    }
    for (name, value) in filter {
        if name.is_empty()
            || name.len() > 64
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!("filter: field name `{name}` must be 1-64 letters, digits, `_` or `-`"));
        }
        match value {
            Value::String(_) | Value::Bool(_) | Value::Number(_) => {}
            Value::Array(values) => {
                let strings = values.iter().all(Value::is_string);
                let integers = values.iter().all(|v| v.is_i64());
                if values.is_empty() || values.len() > MAX_FILTER_VALUES || !(strings || integers) {
                    return Err(format!(
                        "filter `{name}`: an array must hold 1-{MAX_FILTER_VALUES} strings or 1-{MAX_FILTER_VALUES} integers"
                    ));
                }
            }
            Value::Null | Value::Object(_) => {
                return Err(format!("filter `{name}`: the value must be a string, number, boolean or array"))
            }
        }
    }
    Ok(())
}

/// Collection names (they become directory names in the embedded store): letters, digits, `-`, `_` and `.`, not
/// starting with `.`, at most 128 characters.
pub fn valid_collection(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// What one tenant holds in one collection.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantInfo {
    pub tenant: Tenant,
    pub documents: u64,
    pub points: u64,
    /// Unix milliseconds of the newest point.
    pub updated_at: i64,
}

pub type StoreResult<T> = Result<T, String>;

/// How many nearest chunks a search looks at to find `documents` distinct documents (several chunks of one
/// document may be near the query).
pub fn candidates(documents: usize) -> usize {
    documents.saturating_mul(4).min(400)
}

/// The first hit of each document, in order, at most `documents` of them.
pub fn best_per_document(hits: impl IntoIterator<Item = Hit>, documents: usize) -> Vec<Hit> {
    let mut seen = std::collections::HashSet::new();
    hits.into_iter().filter(|hit| seen.insert(hit.doc_id.clone())).take(documents).collect()
}

/// The vector store. Every call names the collection (the embedding model) and, where data is read or removed, the
/// tenant: the store adds the tenant condition itself.
pub trait VectorStore: Send + Sync + 'static {
    /// Replaces the documents of `chunks` (every earlier chunk of the same `doc_id` of the tenant is removed) with
    /// these chunks. Point ids derive from (tenant, doc_id, chunk).
    fn index(&self, collection: &str, tenant: &Tenant, chunks: Vec<Chunk>) -> BoxFuture<'static, StoreResult<()>>;
    /// The `documents` nearest documents of the tenant, optionally filtered on metadata: for each, its chunk
    /// nearest the query, best first. The chunks looked at are the [`candidates`] nearest; fewer documents come
    /// back when those hold fewer.
    fn search(
        &self,
        collection: &str,
        tenant: &Tenant,
        vector: Vec<f32>,
        documents: usize,
        filter: Option<MetadataFilter>,
    ) -> BoxFuture<'static, StoreResult<Vec<Hit>>>;
    /// Points the tenant holds in the collection.
    fn count(&self, collection: &str, tenant: &Tenant) -> BoxFuture<'static, StoreResult<u64>>;
    /// Removes every point of the tenant; answers how many there were.
    fn delete_tenant(&self, collection: &str, tenant: &Tenant) -> BoxFuture<'static, StoreResult<u64>>;
    /// Every tenant of `workspace_id` in every collection, as (collection, info).
    fn tenants(&self, workspace_id: &str) -> BoxFuture<'static, StoreResult<Vec<(String, TenantInfo)>>>;
    /// Makes everything written durable (and, for the embedded store, builds indexes off the request path).
    fn flush(&self) -> BoxFuture<'static, StoreResult<()>>;
    /// Every collection and the points it holds, all tenants together (for the operators' metrics).
    fn points(&self) -> BoxFuture<'static, StoreResult<Vec<(String, u64)>>>;
}

/// An index call's points, ready for either backend: (point id, vector, payload) each, in the payload layout
/// described at the top of this module, and each document's new chunk count (its chunks numbered at or past it
/// are left from a longer earlier version, and are removed).
pub struct PreparedPoints {
    pub points: Vec<(String, Vec<f32>, Map<String, Value>)>,
    pub chunk_counts: std::collections::HashMap<String, u32>,
}

pub fn prepare_points(tenant: &Tenant, chunks: Vec<Chunk>) -> PreparedPoints {
    let updated_at = now_millis();
    let mut chunk_counts: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    let mut points = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        let count = chunk_counts.entry(chunk.doc_id.clone()).or_default();
        *count = (*count).max(chunk.chunk + 1);
        let id = point_id(tenant, &chunk.doc_id, chunk.chunk);
        let mut payload = Map::new();
        payload.insert("tenant".into(), Value::String(tenant.key()));
        payload.insert("workspace".into(), Value::String(tenant.workspace_id.clone()));
        payload.insert("doc_id".into(), Value::String(chunk.doc_id));
        payload.insert("chunk".into(), Value::from(chunk.chunk));
        payload.insert("text".into(), Value::String(chunk.text));
        payload.insert("metadata".into(), Value::Object(chunk.metadata));
        payload.insert("updated_at".into(), Value::from(updated_at));
        points.push((id, chunk.vector, payload));
    }
    PreparedPoints { points, chunk_counts }
}

/// Unix milliseconds now.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// A point id from (tenant, doc_id, chunk): stable, so indexing a document again replaces its points. A UUID made
/// from SHA-256 (version 8 layout), as Qdrant ids are integers or UUIDs.
pub fn point_id(tenant: &Tenant, doc_id: &str, chunk: u32) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in [tenant.workspace_id.as_str(), tenant.scope.as_str(), doc_id] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher.update(chunk.to_le_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_ids_are_stable_uuids_and_differ_by_tenant() {
        let a = Tenant { workspace_id: "ws_1".into(), scope: "docs".into() };
        let b = Tenant { workspace_id: "ws_2".into(), scope: "docs".into() };
        assert_eq!(point_id(&a, "d1", 0), point_id(&a, "d1", 0));
        assert_ne!(point_id(&a, "d1", 0), point_id(&b, "d1", 0));
        assert_ne!(point_id(&a, "d1", 0), point_id(&a, "d1", 1));
        assert_eq!(point_id(&a, "d1", 0).len(), 36);
    }
}

/// One scenario every backend must pass: tenant isolation, metadata filters, re-indexing that replaces a document,
/// counting, listing tenants, deleting a tenant and unknown collections. Workspace ids carry a random suffix, so a
/// shared server can run it again and again. Stores must be opened with [`conformance::DIMENSIONS`].
#[cfg(test)]
pub(crate) mod conformance {
    use super::{Chunk, MetadataFilter, Tenant, VectorStore};
    use serde_json::{json, Map};

    /// Vectors of the scenario have this many dimensions.
    pub const DIMENSIONS: usize = 8;

    /// A deterministic pseudo-random unit vector.
    pub fn unit(seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        let mut v: Vec<f32> = (0..DIMENSIONS)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state % 1000) as f32 / 1000.0 - 0.5
            })
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }

    pub fn chunk(doc: &str, n: u32, vector: Vec<f32>, lang: &str) -> Chunk {
        let mut metadata = Map::new();
        metadata.insert("lang".into(), json!(lang));
        metadata.insert("year".into(), json!(2020 + n));
        Chunk { doc_id: doc.into(), chunk: n, text: format!("{doc}#{n}"), metadata, vector }
    }

    pub fn tenant(ws: &str, scope: &str) -> Tenant {
        Tenant { workspace_id: ws.into(), scope: scope.into() }
    }

    /// Fails the scenario with a message rather than panicking, so a caller can still clean up.
    macro_rules! check {
        ($cond:expr, $($what:tt)+) => {
            let passed: bool = $cond;
            if !passed {
                return Err(format!("conformance: {} (failed: {})", format!($($what)+), stringify!($cond)));
            }
        };
    }

    fn filter(value: serde_json::Value) -> Result<MetadataFilter, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    pub async fn run(store: &dyn VectorStore, collection: &str) -> Result<(), String> {
        let run = format!("{:016x}", rand::random::<u64>());
        let (ws1, ws2) = (format!("ws_1_{run}"), format!("ws_2_{run}"));
        let (a, b, c) = (tenant(&ws1, "docs"), tenant(&ws2, "docs"), tenant(&ws1, "other"));
        let d1 = vec![chunk("d1", 0, unit(1), "en"), chunk("d1", 1, unit(2), "fr")];
        store.index(collection, &a, d1).await?;
        store.index(collection, &a, vec![chunk("d2", 0, unit(5), "en")]).await?;
        store.index(collection, &b, vec![chunk("d1", 0, unit(1), "en")]).await?;
        store.index(collection, &c, vec![chunk("d9", 0, unit(1), "en")]).await?;

        let found = |hits: &[super::Hit]| hits.iter().map(|h| format!("{}#{}", h.doc_id, h.chunk)).collect::<Vec<_>>();
        let hits = store.search(collection, &a, unit(1), 10, None).await?;
        check!(found(&hits) == ["d1#0", "d2#0"], "tenant a: each document once, its best chunk: {hits:?}");
        check!(hits[0].text == "d1#0", "the chunk's text comes back: {hits:?}");
        check!(hits[0].score > 0.99, "cosine of a vector with itself, got {}", hits[0].score);
        check!(hits[0].score >= hits[1].score, "best first: {hits:?}");
        check!(hits[0].metadata.get("lang") == Some(&json!("en")), "metadata comes back: {:?}", hits[0].metadata);
        check!(hits[0].metadata.get("year") == Some(&json!(2020)), "integers stay integers: {:?}", hits[0].metadata);
        let hits = store.search(collection, &a, unit(2), 10, None).await?;
        check!(found(&hits)[0] == "d1#1", "the nearest chunk stands for its document: {hits:?}");

        let hits = store.search(collection, &a, unit(1), 10, Some(filter(json!({"lang": "fr"}))?)).await?;
        check!(found(&hits) == ["d1#1"], "a string filter keeps chunk 1 only: {hits:?}");
        let hits = store.search(collection, &a, unit(1), 10, Some(filter(json!({"year": [2021, 2030]}))?)).await?;
        check!(found(&hits) == ["d1#1"], "an integer array filter matches one chunk: {hits:?}");
        let hits = store.search(collection, &a, unit(1), 10, Some(filter(json!({"lang": ["en", "fr"]}))?)).await?;
        check!(found(&hits) == ["d1#0", "d2#0"], "a string array filter matches every chunk: {hits:?}");
        let hits = store.search(collection, &a, unit(1), 10, Some(filter(json!({"year": 2021}))?)).await?;
        check!(found(&hits) == ["d1#1"], "an integer filter: {hits:?}");
        let hits = store.search(collection, &a, unit(1), 10, Some(filter(json!({"lang": "de"}))?)).await?;
        check!(hits.is_empty(), "a filter matching nothing, got {hits:?}");
        let hits = store.search(collection, &a, unit(1), 1, None).await?;
        check!(found(&hits) == ["d1#0"], "the number of documents is a limit: {hits:?}");
        check!(store.search(collection, &a, unit(1), 0, None).await?.is_empty(), "no documents asked, none given");
        check!(
            store.search(collection, &a, unit(1), 10, Some(filter(json!({"bad name": 1}))?)).await.is_err(),
            "an invalid filter is refused"
        );

        // Indexing d1 again with one chunk removes its old second chunk, for tenant a only.
        store.index(collection, &a, vec![chunk("d1", 0, unit(3), "en")]).await?;
        let count = store.count(collection, &a).await?;
        check!(count == 2, "re-indexing d1 with one chunk leaves its 1 point and d2's, got {count}");
        let count = store.count(collection, &b).await?;
        check!(count == 1, "tenant b is untouched, got {count}");

        let listed = store.tenants(&ws1).await?;
        let scopes: Vec<(&str, &str, u64, u64)> =
            listed.iter().map(|(name, i)| (name.as_str(), i.tenant.scope.as_str(), i.documents, i.points)).collect();
        check!(scopes == vec![(collection, "docs", 2, 2), (collection, "other", 1, 1)], "tenants of {ws1}: {scopes:?}");
        check!(listed.iter().all(|(_, i)| i.tenant.workspace_id == ws1), "tenants of another workspace: {listed:?}");
        check!(listed[0].1.updated_at > 0, "updated_at is set: {listed:?}");

        let deleted = store.delete_tenant(collection, &a).await?;
        check!(deleted == 2, "deleting tenant a removes its 2 points, got {deleted}");
        check!(store.search(collection, &a, unit(1), 10, None).await?.is_empty(), "tenant a is gone");
        check!(store.count(collection, &a).await? == 0, "tenant a counts 0");
        check!(store.delete_tenant(collection, &a).await? == 0, "deleting an empty tenant answers 0");
        check!(store.search(collection, &b, unit(1), 10, None).await?.len() == 1, "tenant b keeps its point");
        let unknown = format!("{collection}_unknown");
        check!(store.search(&unknown, &b, unit(1), 10, None).await?.is_empty(), "an unknown collection finds nothing");
        check!(store.count(&unknown, &b).await? == 0, "an unknown collection counts 0");
        check!(store.delete_tenant(&unknown, &b).await? == 0, "an unknown collection deletes 0");
        check!(
            store.index(collection, &a, vec![chunk("x", 0, vec![1.0; 3], "en")]).await.is_err(),
            "a vector of the wrong size is refused"
        );
        check!(
            store.index("../escape", &a, vec![chunk("x", 0, unit(1), "en")]).await.is_err(),
            "a bad name is refused"
        );

        // Leave nothing behind on a shared server.
        store.delete_tenant(collection, &b).await?;
        store.delete_tenant(collection, &c).await?;
        store.flush().await?;
        Ok(())
    }
}
