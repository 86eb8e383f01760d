//! The remote backend: a Qdrant server over gRPC (`qdrant-client`), with the embedded backend's layout and
//! semantics (see `edge/`): one Qdrant collection per embedding model, named `<prefix><collection>`, created on
//! first index with cosine dense vectors and the payload indexes `tenant` (keyword, `is_tenant`), `workspace`,
//! `doc_id` (keywords) and `updated_at` (integer, range and lookup).
//!
//! Every write waits for the server to apply it (`wait=true`), so a search right after an index call sees it and
//! `flush` has nothing left to do. The URL is the server's gRPC endpoint (port 6334 by default, not the REST port
//! 6333); `https://` URLs use TLS (rustls, with the system's root certificates).

use super::{
    best_per_document, candidates, prepare_points, valid_collection, Chunk, Hit, MetadataFilter, StoreResult, Tenant,
    TenantInfo, VectorStore,
};
use futures::future::BoxFuture;
use qdrant_client::qdrant::{
    facet_value, payload_index_params::IndexParams, Condition, CountPointsBuilder, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, DeletePointsBuilder, Direction, Distance, FacetCountsBuilder, FieldType, Filter,
    IntegerIndexParamsBuilder, KeywordIndexParamsBuilder, OrderBy, PayloadIncludeSelector, PointStruct, Query,
    QueryPointsBuilder, Range, ScrollPointsBuilder, SearchParamsBuilder, UpsertPointsBuilder, VectorParamsBuilder,
};
use qdrant_client::{Payload, Qdrant};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod errors;
mod filters;

use errors::{applied, describe, failure, is_not_found};
use filters::{keyword, metadata_conditions, tenant_condition, tenant_filter, to_json};

/// Points per upsert request.
const UPSERT_BATCH: usize = 256;
/// Most tenants one facet request lists per collection (as in the embedded store).
const FACET_LIMIT: u64 = 100_000;
/// Time allowed for one request (writes wait for the server to apply them), and for connecting.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The vector store on a Qdrant server.
#[derive(Clone)]
pub struct QdrantStore {
    inner: Arc<Inner>,
    /// The HNSW search beam; `None` for the server's default.
    search_ef: Option<u64>,
}

struct Inner {
    client: Qdrant,
    dimensions: usize,
    prefix: String,
    /// Collections known to exist with their payload indexes (so index calls skip the check).
    ready: Mutex<HashSet<String>>,
}

/// Connects to the Qdrant server at `url` (its gRPC endpoint, e.g. `http://localhost:6334`) and checks that it
/// answers. `prefix` starts the name of every Qdrant collection this store uses and no other (e.g. `switchyard_`).
pub async fn connect(url: &str, api_key: Option<String>, dimensions: usize, prefix: &str) -> StoreResult<QdrantStore> {
    if dimensions == 0 {
        return Err("the vector store needs vectors of at least one dimension".into());
    }
    // `tenants` reads every collection whose name starts with the prefix: an empty one would take in collections
    // that are not this store's.
    if !valid_collection(prefix) {
        return Err(format!(
            "invalid Qdrant collection prefix `{prefix}`: 1-128 letters, digits, `-`, `_` or `.`, not starting with `.`"
        ));
    }
    let api_key = api_key.filter(|key| !key.is_empty());
    // The compatibility check would block on a private runtime and print to stdout: check health here instead.
    let client = Qdrant::from_url(url)
        .api_key(api_key)
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .skip_compatibility_check()
        .build()
        .map_err(|e| format!("invalid Qdrant URL `{url}`: {}", describe(&e)))?;
    let health = client.health_check().await.map_err(|e| {
        format!(
            "the Qdrant server at {url} does not answer (the URL must be its gRPC port, usually 6334): {}",
            describe(&e)
        )
    })?;
    tracing::info!(url, version = %health.version, "connected to the Qdrant server");
    Ok(QdrantStore {
        inner: Arc::new(Inner { client, dimensions, prefix: prefix.to_string(), ready: Mutex::new(HashSet::new()) }),
        search_ef: None,
    })
}

impl QdrantStore {
    /// Searches with a beam of `ef` candidates, as the embedded store does (`vectors.search_ef`).
    pub fn with_search_ef(mut self, ef: usize) -> Self {
        self.search_ef = Some(ef as u64);
        self
    }

    /// Deletes the Qdrant collection behind `collection`, every tenant's points with it; answers whether it
    /// existed.
    pub async fn delete_collection(&self, collection: &str) -> StoreResult<bool> {
        let name = self.inner.name(collection)?;
        self.inner.forget(&name);
        match self.inner.client.delete_collection(name.as_str()).await {
            Ok(response) => Ok(response.result),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(failure("delete", &name, &e)),
        }
    }
}

impl QdrantStore {
    /// Creates, at start, the collections of `collections` (the catalogue's embedding models) and every collection
    /// of this store's prefix already on the server, with their payload indexes, so the first index call finds them
    /// ready and a collection made by an older release gains an index added since.
    pub async fn prepare(&self, collections: &[String]) -> StoreResult<()> {
        let listed = self.inner.client.list_collections().await.map_err(|e| failure("list", "collections", &e))?;
        let mut names: Vec<String> = listed
            .collections
            .into_iter()
            .map(|c| c.name)
            .filter(|name| name.starts_with(&self.inner.prefix))
            .collect();
        for collection in collections {
            names.push(self.inner.name(collection)?);
        }
        names.sort();
        names.dedup();
        for name in names {
            self.inner.ensure_collection(&name).await?;
        }
        Ok(())
    }
}

impl Inner {
    /// The Qdrant collection name of a store collection.
    fn name(&self, collection: &str) -> StoreResult<String> {
        if !valid_collection(collection) {
            return Err(format!("invalid collection name `{collection}`"));
        }
        Ok(format!("{}{collection}", self.prefix))
    }

    fn forget(&self, name: &str) {
        if let Ok(mut ready) = self.ready.lock() {
            ready.remove(name);
        }
    }

    /// Creates the collection and its payload indexes unless this store has seen them already.
    async fn ensure_collection(&self, name: &str) -> StoreResult<()> {
        if self.ready.lock().map(|ready| ready.contains(name)).unwrap_or(false) {
            return Ok(());
        }
        let exists = self.client.collection_exists(name).await.map_err(|e| failure("look up", name, &e))?;
        if !exists {
            let request = CreateCollectionBuilder::new(name)
                .vectors_config(VectorParamsBuilder::new(self.dimensions as u64, Distance::Cosine));
            if let Err(e) = self.client.create_collection(request).await {
                // Another caller (or another gateway) may have created it meanwhile.
                let now_exists = self.client.collection_exists(name).await.unwrap_or(false);
                if !now_exists {
                    return Err(failure("create", name, &e));
                }
            }
        }
        // Creating an index that already exists with the same schema is a no-op on the server.
        let keyword = |is_tenant: bool| KeywordIndexParamsBuilder::default().is_tenant(is_tenant).build();
        let indexes: [(&str, FieldType, IndexParams); 4] = [
            ("tenant", FieldType::Keyword, keyword(true).into()),
            ("workspace", FieldType::Keyword, keyword(false).into()),
            ("doc_id", FieldType::Keyword, keyword(false).into()),
            ("updated_at", FieldType::Integer, IntegerIndexParamsBuilder::new(true, true).build().into()),
        ];
        for (field, field_type, params) in indexes {
            let request =
                CreateFieldIndexCollectionBuilder::new(name, field, field_type).field_index_params(params).wait(true);
            let response = self
                .client
                .create_field_index(request)
                .await
                .map_err(|e| failure(&format!("index the payload field {field} of"), name, &e))?;
            applied(&response, "index a payload field of", name)?;
        }
        if let Ok(mut ready) = self.ready.lock() {
            ready.insert(name.to_string());
        }
        Ok(())
    }

    async fn upsert(&self, name: &str, points: &[PointStruct]) -> StoreResult<()> {
        for batch in points.chunks(UPSERT_BATCH) {
            let request = || UpsertPointsBuilder::new(name, batch.to_vec()).wait(true);
            let response = match self.client.upsert_points(request()).await {
                Ok(response) => response,
                // The collection was deleted behind this store's back: create it again, once.
                Err(e) if is_not_found(&e) => {
                    self.forget(name);
                    self.ensure_collection(name).await?;
                    self.client.upsert_points(request()).await.map_err(|e| failure("write to", name, &e))?
                }
                Err(e) => return Err(failure("write to", name, &e)),
            };
            applied(&response, "write to", name)?;
        }
        Ok(())
    }

    async fn index(&self, collection: &str, tenant: &Tenant, chunks: Vec<Chunk>) -> StoreResult<()> {
        let name = self.name(collection)?;
        self.ensure_collection(&name).await?;
        if chunks.is_empty() {
            return Ok(());
        }
        let prepared = prepare_points(tenant, chunks);
        let mut points = Vec::with_capacity(prepared.points.len());
        for (id, vector, payload) in prepared.points {
            let payload = Payload::try_from(Value::Object(payload)).map_err(|e| format!("bad payload: {e}"))?;
            points.push(PointStruct::new(id, vector, payload));
        }
        self.upsert(&name, &points).await?;
        // Chunks past each document's new end are left from an earlier, longer version: remove them.
        let stale: Vec<Condition> = prepared
            .chunk_counts
            .iter()
            .map(|(doc, count)| {
                Filter::must([
                    keyword("doc_id", doc),
                    Condition::range("chunk", Range { gte: Some(f64::from(*count)), ..Range::default() }),
                ])
                .into()
            })
            .collect();
        let filter = Filter { must: vec![tenant_condition(tenant)], should: stale, ..Filter::default() };
        let response = self
            .client
            .delete_points(DeletePointsBuilder::new(name.as_str()).points(filter).wait(true))
            .await
            .map_err(|e| failure("remove stale chunks from", &name, &e))?;
        applied(&response, "remove stale chunks from", &name)
    }

    async fn search(
        &self,
        collection: &str,
        tenant: &Tenant,
        vector: Vec<f32>,
        documents: usize,
        filter: Option<MetadataFilter>,
        search_ef: Option<u64>,
    ) -> StoreResult<Vec<Hit>> {
        let name = self.name(collection)?;
        let mut conditions = vec![tenant_condition(tenant)];
        if let Some(filter) = &filter {
            conditions.extend(metadata_conditions(filter)?);
        }
        if documents == 0 {
            return Ok(Vec::new());
        }
        let mut request = QueryPointsBuilder::new(name.as_str())
            .query(Query::new_nearest(vector))
            .filter(Filter::must(conditions))
            .limit(candidates(documents) as u64)
            .with_payload(true)
            .with_vectors(false);
        if let Some(ef) = search_ef {
            request = request.params(SearchParamsBuilder::default().hnsw_ef(ef));
        }
        let response = match self.client.query(request).await {
            Ok(response) => response,
            Err(e) if is_not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(failure("search", &name, &e)),
        };
        let hits = response.result.into_iter().map(|point| Hit::from_payload(&to_json(point.payload), point.score));
        Ok(best_per_document(hits, documents))
    }

    /// Exact count of the points matching `filter`; `None` when the collection does not exist.
    async fn count_matching(&self, name: &str, filter: Filter) -> StoreResult<Option<u64>> {
        let request = CountPointsBuilder::new(name).filter(filter).exact(true);
        match self.client.count(request).await {
            Ok(response) => Ok(Some(response.result.map(|r| r.count).unwrap_or_default())),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(failure("count the points of", name, &e)),
        }
    }

    async fn count(&self, collection: &str, tenant: &Tenant) -> StoreResult<u64> {
        let name = self.name(collection)?;
        Ok(self.count_matching(&name, tenant_filter(tenant)).await?.unwrap_or_default())
    }

    async fn delete_tenant(&self, collection: &str, tenant: &Tenant) -> StoreResult<u64> {
        let name = self.name(collection)?;
        let before = self.count_matching(&name, tenant_filter(tenant)).await?.unwrap_or_default();
        if before > 0 {
            let request = DeletePointsBuilder::new(name.as_str()).points(tenant_filter(tenant)).wait(true);
            match self.client.delete_points(request).await {
                Ok(response) => applied(&response, "delete a tenant from", &name)?,
                Err(e) if is_not_found(&e) => return Ok(0),
                Err(e) => return Err(failure("delete a tenant from", &name, &e)),
            }
        }
        Ok(before)
    }

    /// The tenants of `workspace_id` in one Qdrant collection; empty when it is gone.
    async fn tenants_in(&self, name: &str, workspace_id: &str) -> StoreResult<Vec<TenantInfo>> {
        let request = FacetCountsBuilder::new(name, "tenant")
            .filter(Filter::must([keyword("workspace", workspace_id)]))
            .limit(FACET_LIMIT)
            .exact(true);
        let facets = match self.client.facet(request).await {
            Ok(response) => response,
            Err(e) if is_not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(failure("list the tenants of", name, &e)),
        };
        let prefix = format!("{workspace_id}/");
        let mut out = Vec::new();
        for hit in facets.hits {
            let Some(facet_value::Variant::StringValue(tenant_key)) = hit.value.and_then(|v| v.variant) else {
                continue;
            };
            let Some(scope) = tenant_key.strip_prefix(&prefix) else { continue };
            let tenant = Tenant { workspace_id: workspace_id.to_string(), scope: scope.to_string() };
            let first_chunks = Filter::must([tenant_condition(&tenant), Condition::matches("chunk", 0i64)]);
            let documents = self.count_matching(name, first_chunks).await?.unwrap_or_default();
            let newest = ScrollPointsBuilder::new(name)
                .filter(tenant_filter(&tenant))
                .limit(1)
                .with_payload(PayloadIncludeSelector { fields: vec!["updated_at".to_string()] })
                .with_vectors(false)
                .order_by(OrderBy {
                    key: "updated_at".to_string(),
                    direction: Some(Direction::Desc as i32),
                    start_from: None,
                });
            let newest = match self.client.scroll(newest).await {
                Ok(response) => response.result,
                Err(e) if is_not_found(&e) => return Ok(Vec::new()),
                Err(e) => return Err(failure("find the newest point of", name, &e)),
            };
            let updated_at = newest
                .into_iter()
                .next()
                .and_then(|point| point.payload.get("updated_at").and_then(|v| v.as_integer()))
                .unwrap_or_default();
            out.push(TenantInfo { tenant, documents, points: hit.count, updated_at });
        }
        out.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        Ok(out)
    }

    /// The Qdrant collections under the prefix, as (Qdrant's name, the collection's).
    async fn collections(&self) -> StoreResult<Vec<(String, String)>> {
        let listed = self
            .client
            .list_collections()
            .await
            .map_err(|e| format!("cannot list the Qdrant collections: {}", describe(&e)))?;
        Ok(listed
            .collections
            .into_iter()
            .filter_map(|description| {
                let collection = description.name.strip_prefix(&self.prefix)?.to_string();
                valid_collection(&collection).then_some((description.name, collection))
            })
            .collect())
    }

    /// Every collection under the prefix and its points.
    async fn points(&self) -> StoreResult<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for (name, collection) in self.collections().await? {
            if let Some(points) = self.count_matching(&name, Filter::default()).await? {
                out.push((collection, points));
            }
        }
        out.sort();
        Ok(out)
    }

    async fn tenants(&self, workspace_id: &str) -> StoreResult<Vec<(String, TenantInfo)>> {
        let mut out = Vec::new();
        for (name, collection) in self.collections().await? {
            for info in self.tenants_in(&name, workspace_id).await? {
                out.push((collection.clone(), info));
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1.tenant).cmp(&(&b.0, &b.1.tenant)));
        Ok(out)
    }
}

impl VectorStore for QdrantStore {
    fn index(&self, collection: &str, tenant: &Tenant, chunks: Vec<Chunk>) -> BoxFuture<'static, StoreResult<()>> {
        if let Some(bad) = chunks.iter().find(|c| c.vector.len() != self.inner.dimensions) {
            let message = format!("vector of {} dimensions, expected {}", bad.vector.len(), self.inner.dimensions);
            return Box::pin(async move { Err(message) });
        }
        let (inner, collection, tenant) = (self.inner.clone(), collection.to_string(), tenant.clone());
        Box::pin(async move { inner.index(&collection, &tenant, chunks).await })
    }

    fn search(
        &self,
        collection: &str,
        tenant: &Tenant,
        vector: Vec<f32>,
        documents: usize,
        filter: Option<MetadataFilter>,
    ) -> BoxFuture<'static, StoreResult<Vec<Hit>>> {
        let (inner, collection, tenant, ef) =
            (self.inner.clone(), collection.to_string(), tenant.clone(), self.search_ef);
        Box::pin(async move { inner.search(&collection, &tenant, vector, documents, filter, ef).await })
    }

    fn count(&self, collection: &str, tenant: &Tenant) -> BoxFuture<'static, StoreResult<u64>> {
        let (inner, collection, tenant) = (self.inner.clone(), collection.to_string(), tenant.clone());
        Box::pin(async move { inner.count(&collection, &tenant).await })
    }

    fn delete_tenant(&self, collection: &str, tenant: &Tenant) -> BoxFuture<'static, StoreResult<u64>> {
        let (inner, collection, tenant) = (self.inner.clone(), collection.to_string(), tenant.clone());
        Box::pin(async move { inner.delete_tenant(&collection, &tenant).await })
    }

    fn tenants(&self, workspace_id: &str) -> BoxFuture<'static, StoreResult<Vec<(String, TenantInfo)>>> {
        let (inner, workspace_id) = (self.inner.clone(), workspace_id.to_string());
        Box::pin(async move { inner.tenants(&workspace_id).await })
    }

    fn points(&self) -> BoxFuture<'static, StoreResult<Vec<(String, u64)>>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.points().await })
    }

    /// Every write already waited for the server to apply it.
    fn flush(&self) -> BoxFuture<'static, StoreResult<()>> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests;
