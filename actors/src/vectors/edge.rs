//! The embedded backend: Qdrant's engine in process (`qdrant-edge` 0.7.2), one shard directory per collection
//! under a root directory.
//!
//! Shard calls block, so every call runs on tokio's blocking pool. Per shard, a gate orders writes against flushes:
//! updates and queries share it, a flush holds it alone (the engine's flush panics if it meets a held lock, so it
//! is also guarded against that and retried). Index calls answer once their points are flushed, and concurrent
//! calls share one flush (group commit). Optimisation (merging segments and building the HNSW index past the
//! indexing threshold) runs on a background thread at the lowest normal priority when a shard has been written and
//! then left quiet for a moment, never on a request's path.

use super::{
    candidates, prepare_points, valid_collection, validate_filter, Chunk, Hit, MetadataFilter, StoreResult, Tenant,
    TenantInfo, VectorStore,
};
use futures::future::BoxFuture;
use qdrant_edge::external::uuid::Uuid;
use qdrant_edge::{
    AnyVariants, Condition, CountRequest, CreateIndex, Direction, Distance, EdgeConfig, EdgeConfigBuilder, EdgeShard,
    EdgeVectorParamsBuilder, FacetRequest, FacetValue, FieldCondition, FieldIndexOperations, Filter,
    IntegerIndexParams, JsonPath, KeywordIndexParams, Match, OrderBy, OrderByInterface, PayloadFieldSchema,
    PayloadSchemaParams, PointId, PointInsertOperations, PointOperations, PointStructPersisted, QuantizationConfig,
    QuantizationSearchParams, QueryRequest, ScoringQuery, ScrollRequest, SearchParams, UpdateOperation, VectorInternal,
    WithPayloadInterface, WithVector,
};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

/// A shard is optimised once writes have paused this long...
const QUIET_BEFORE_OPTIMIZE: Duration = Duration::from_millis(1500);
/// ...or when it has waited this long under a steady stream of writes.
const MAX_OPTIMIZE_DELAY: Duration = Duration::from_secs(30);

struct Shard {
    engine: EdgeShard,
    /// Updates and queries share it; a flush holds it alone.
    gate: RwLock<()>,
    /// Write sequence numbers, for group commit: `written` counts updates, `flushed` the last one on disk.
    written: AtomicU64,
    flushed: Mutex<u64>,
    /// When the shard was first written since its last optimisation, and when last written.
    dirty_since: Mutex<Option<Instant>>,
    last_write: Mutex<Instant>,
    optimizing: AtomicBool,
}

impl Shard {
    fn update(&self, operation: UpdateOperation) -> StoreResult<()> {
        {
            let _shared = self.gate.read().map_err(|_| "vector store lock poisoned".to_string())?;
            self.engine.update(operation).map_err(|e| format!("vector store update failed: {e}"))?;
        }
        let now = Instant::now();
        if let Ok(mut dirty) = self.dirty_since.lock() {
            dirty.get_or_insert(now);
        }
        if let Ok(mut last) = self.last_write.lock() {
            *last = now;
        }
        self.written.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Makes every update so far durable; one flush serves every caller waiting at the time.
    fn flush(&self) -> StoreResult<()> {
        let target = self.written.load(Ordering::SeqCst);
        let mut flushed = self.flushed.lock().map_err(|_| "vector store lock poisoned".to_string())?;
        if *flushed >= target {
            return Ok(());
        }
        let covering = self.written.load(Ordering::SeqCst);
        let _alone = self.gate.write().map_err(|_| "vector store lock poisoned".to_string())?;
        // The engine's flush expects its locks free; the optimiser can hold the segment lock for a moment.
        for _ in 0..400 {
            if catch_unwind(AssertUnwindSafe(|| self.engine.flush())).is_ok() {
                *flushed = covering;
                return Ok(());
            }
            // Shard work runs on tokio's blocking pool (or the optimiser's own thread), never on an async worker.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(5));
        }
        Err("vector store flush could not complete".into())
    }

    fn query(&self, request: QueryRequest) -> StoreResult<Vec<qdrant_edge::ScoredPoint>> {
        let _shared = self.gate.read().map_err(|_| "vector store lock poisoned".to_string())?;
        self.engine.query(request).map_err(|e| format!("vector search failed: {e}"))
    }

    fn payloads(&self, ids: &[PointId]) -> StoreResult<Vec<qdrant_edge::Record>> {
        let _shared = self.gate.read().map_err(|_| "vector store lock poisoned".to_string())?;
        self.engine
            .retrieve(ids, Some(WithPayloadInterface::Bool(true)), Some(WithVector::Bool(false)))
            .map_err(|e| format!("vector store read failed: {e}"))
    }

    fn count(&self, filter: Filter) -> StoreResult<u64> {
        let _shared = self.gate.read().map_err(|_| "vector store lock poisoned".to_string())?;
        self.engine
            .count(CountRequest { filter: Some(filter), exact: true })
            .map(|n| n as u64)
            .map_err(|e| format!("vector count failed: {e}"))
    }

    /// Optimises when due; answers whether it ran.
    fn optimize_if_due(&self, now: Instant) -> bool {
        let due = {
            let (Ok(dirty), Ok(last)) = (self.dirty_since.lock(), self.last_write.lock()) else { return false };
            match *dirty {
                Some(since) => {
                    now.duration_since(*last) >= QUIET_BEFORE_OPTIMIZE
                        || now.duration_since(since) >= MAX_OPTIMIZE_DELAY
                }
                None => false,
            }
        };
        if !due || self.optimizing.swap(true, Ordering::SeqCst) {
            return false;
        }
        if let Ok(mut dirty) = self.dirty_since.lock() {
            *dirty = None;
        }
        let started = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| self.engine.optimize())) {
            Ok(Ok(changed)) => {
                if changed {
                    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "vector shard optimised");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "vector shard optimisation failed"),
            Err(_) => tracing::warn!("vector shard optimisation panicked"),
        }
        self.optimizing.store(false, Ordering::SeqCst);
        // Written while optimising? Stay due; either way, make the new segments durable.
        let _ = self.flush_all();
        true
    }

    /// A flush even when no update is pending (after optimisation rewrote segments).
    fn flush_all(&self) -> StoreResult<()> {
        self.written.fetch_add(1, Ordering::SeqCst);
        self.flush()
    }
}

/// How a search walks the index.
#[derive(Clone, Copy, Debug)]
pub enum Beam {
    /// Every point of the tenant compared, no HNSW, no quantization.
    Exact,
    /// HNSW with a beam of this many candidates.
    Ef(usize),
}

/// The embedded vector store.
pub struct EdgeStore {
    root: PathBuf,
    dimensions: usize,
    /// The HNSW search beam; `None` for the engine's default (its `ef_construct`, 100).
    search_ef: Option<usize>,
    shards: Arc<Mutex<HashMap<String, Arc<Shard>>>>,
    stop: Arc<AtomicBool>,
}

impl EdgeStore {
    /// Opens (creating when needed) the store under `root`, loading every collection already there, and starts the
    /// background optimiser.
    pub fn open(root: &Path, dimensions: usize) -> StoreResult<Self> {
        std::fs::create_dir_all(root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        let mut shards = HashMap::new();
        let entries = std::fs::read_dir(root).map_err(|e| format!("cannot read {}: {e}", root.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if entry.path().is_dir() && valid_collection(&name) {
                let shard = open_shard(&entry.path(), dimensions)?;
                shards.insert(name, Arc::new(shard));
            }
        }
        let store = EdgeStore {
            root: root.to_path_buf(),
            dimensions,
            search_ef: None,
            shards: Arc::new(Mutex::new(shards)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let weak = Arc::downgrade(&store.shards);
        let stop = store.stop.clone();
        std::thread::Builder::new()
            .name("vector-optimizer".into())
            .spawn(move || optimizer_loop(weak, stop))
            .map_err(|e| format!("cannot start the vector optimiser: {e}"))?;
        Ok(store)
    }

    /// Searches with a beam of `ef` candidates (at least the number of candidates asked for): smaller is faster
    /// and finds slightly fewer of the true nearest neighbours; the benchmark reports the recall it keeps.
    pub fn with_search_ef(mut self, ef: usize) -> Self {
        self.search_ef = Some(ef);
        self
    }

    /// Searches with the given `beam` rather than the store's own: for benchmarks and tools that measure what the
    /// beam costs in accuracy (against [`Beam::Exact`], whose cost grows with the tenant's size).
    pub fn search_beam(
        &self,
        collection: &str,
        tenant: &Tenant,
        vector: Vec<f32>,
        documents: usize,
        beam: Beam,
    ) -> BoxFuture<'static, StoreResult<Vec<Hit>>> {
        let params = match beam {
            Beam::Exact => SearchParams { exact: true, ..SearchParams::default() },
            Beam::Ef(ef) => approximate(Some(ef)),
        };
        self.search_with(collection, tenant, vector, documents, None, params)
    }

    fn search_with(
        &self,
        collection: &str,
        tenant: &Tenant,
        vector: Vec<f32>,
        documents: usize,
        filter: Option<MetadataFilter>,
        params: SearchParams,
    ) -> BoxFuture<'static, StoreResult<Vec<Hit>>> {
        let shard = self.shard(collection, false);
        let tenant = tenant.clone();
        blocking(move || match shard? {
            Some(shard) => search_blocking(&shard, &tenant, vector, documents, filter, params),
            None => Ok(Vec::new()),
        })
    }

    fn shard(&self, collection: &str, create: bool) -> StoreResult<Option<Arc<Shard>>> {
        if !valid_collection(collection) {
            return Err(format!("invalid collection name `{collection}`"));
        }
        let mut shards = self.shards.lock().map_err(|_| "vector store lock poisoned".to_string())?;
        if let Some(shard) = shards.get(collection) {
            return Ok(Some(shard.clone()));
        }
        if !create {
            return Ok(None);
        }
        let shard = Arc::new(open_shard(&self.root.join(collection), self.dimensions)?);
        shards.insert(collection.to_string(), shard.clone());
        Ok(Some(shard))
    }

    /// Optimises every collection now (merging segments, building HNSW past the threshold), waiting for an
    /// optimisation already under way, then flushes. Blocking: for tools and benchmarks, not the request path.
    pub fn optimize_now(&self) -> StoreResult<()> {
        for (_, shard) in self.all_shards() {
            while shard.optimizing.swap(true, Ordering::SeqCst) {
                // Blocking by contract (see above): never called from an async worker.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(Duration::from_millis(50));
            }
            let result = catch_unwind(AssertUnwindSafe(|| shard.engine.optimize()));
            shard.optimizing.store(false, Ordering::SeqCst);
            match result {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("vector shard optimisation failed: {e}")),
                Err(_) => return Err("vector shard optimisation panicked".into()),
            }
            if let Ok(mut dirty) = shard.dirty_since.lock() {
                *dirty = None;
            }
            shard.flush_all()?;
        }
        Ok(())
    }

    /// A collection's segments, points and vectors already in an HNSW index, for operators and benchmarks.
    pub fn stats(&self, collection: &str) -> StoreResult<Option<(usize, usize, usize)>> {
        Ok(self.shard(collection, false)?.map(|shard| {
            let info = shard.engine.info();
            (info.segments_count, info.points_count, info.indexed_vectors_count)
        }))
    }

    fn all_shards(&self) -> Vec<(String, Arc<Shard>)> {
        self.shards
            .lock()
            .map(|shards| shards.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

impl Drop for EdgeStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for (_, shard) in self.all_shards() {
            let _ = shard.flush_all();
        }
    }
}

fn optimizer_loop(shards: Weak<Mutex<HashMap<String, Arc<Shard>>>>, stop: Arc<AtomicBool>) {
    // Requests first: the HNSW build (on threads this one starts, which inherit the priority) gets the cores
    // only while embedding and searching leave them idle.
    crate::background::lower_priority("vector optimiser");
    while !stop.load(Ordering::SeqCst) {
        // The optimiser's own thread, not an async worker.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_millis(250));
        let Some(shards) = shards.upgrade() else { return };
        let list: Vec<Arc<Shard>> = shards.lock().map(|s| s.values().cloned().collect()).unwrap_or_default();
        drop(shards);
        for shard in list {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            shard.optimize_if_due(Instant::now());
        }
    }
}

/// Scalar (int8) quantization of the indexed segments, kept in RAM: the HNSW search compares 384-byte codes
/// instead of 1,536-byte vectors (a quarter of the memory traffic, which is what a search right after the model
/// has run waits on), and the candidates found are rescored with the original vectors.
fn quantization() -> StoreResult<QuantizationConfig> {
    // `ScalarQuantization` is not re-exported by qdrant-edge; its serde form is the documented Qdrant one.
    serde_json::from_value(serde_json::json!({"scalar": {"type": "int8", "quantile": 0.99, "always_ram": true}}))
        .map_err(|e| format!("quantization config: {e}"))
}

/// How far beyond the candidates asked for the int8 codes look; the original vectors then rescore them all, so
/// results are ordered, and answered, by their true cosine (the engine's default for int8 codes is to return their
/// estimate). In `make bench` the recall of the exact top 5 documents is 100% at 10k and 100k chunks, and the
/// search time did not move beyond the noise.
const OVERSAMPLING: f64 = 2.0;

/// The parameters of an approximate search with a beam of `ef` (`None`: the engine's default).
fn approximate(ef: Option<usize>) -> SearchParams {
    let quantization =
        QuantizationSearchParams { ignore: false, rescore: Some(true), oversampling: Some(OVERSAMPLING) };
    SearchParams { hnsw_ef: ef, quantization: Some(quantization), ..SearchParams::default() }
}

fn open_shard(path: &Path, dimensions: usize) -> StoreResult<Shard> {
    let exists = path.join("edge_config.json").is_file();
    let engine = if exists {
        // Shards written by an earlier version get quantization now; the optimiser rebuilds their segments.
        let mut config = EdgeConfig::load(path)
            .transpose()
            .map_err(|e| format!("cannot read the vector shard config in {}: {e}", path.display()))?;
        if let Some(config) = config.as_mut() {
            config.quantization_config = Some(quantization()?);
        }
        EdgeShard::load(path, config).map_err(|e| format!("cannot load the vector shard {}: {e}", path.display()))?
    } else {
        std::fs::create_dir_all(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let config = EdgeConfigBuilder::new()
            .vector("", EdgeVectorParamsBuilder::new(dimensions, Distance::Cosine).build())
            .quantization_config(quantization()?)
            .build();
        let engine = EdgeShard::new(path, config)
            .map_err(|e| format!("cannot create the vector shard {}: {e}", path.display()))?;
        let keyword = |is_tenant: bool| {
            PayloadFieldSchema::FieldParams(PayloadSchemaParams::Keyword(KeywordIndexParams {
                is_tenant: Some(is_tenant),
                ..KeywordIndexParams::default()
            }))
        };
        let integer = PayloadFieldSchema::FieldParams(PayloadSchemaParams::Integer(IntegerIndexParams {
            lookup: Some(true),
            range: Some(true),
            ..IntegerIndexParams::default()
        }));
        for (field, schema) in [
            ("tenant", keyword(true)),
            ("workspace", keyword(false)),
            ("doc_id", keyword(false)),
            ("updated_at", integer),
        ] {
            engine
                .update(UpdateOperation::FieldIndexOperation(FieldIndexOperations::CreateIndex(CreateIndex {
                    field_name: key(field),
                    field_schema: Some(schema),
                })))
                .map_err(|e| format!("cannot index the payload field {field}: {e}"))?;
        }
        engine.flush();
        engine
    };
    let shard = Shard {
        engine,
        gate: RwLock::new(()),
        written: AtomicU64::new(0),
        flushed: Mutex::new(0),
        dirty_since: Mutex::new(None),
        last_write: Mutex::new(Instant::now()),
        optimizing: AtomicBool::new(false),
    };
    // Optimise once after loading too: a previous run may have stopped before it did.
    if let Ok(mut dirty) = shard.dirty_since.lock() {
        *dirty = Some(Instant::now());
    }
    Ok(shard)
}

/// A payload path. Only fixed field names and checked metadata names (letters, digits, `_`, `-`) get here, and
/// those always parse.
fn key(path: &str) -> JsonPath {
    path.parse().unwrap_or_else(|()| unreachable!("payload path `{path}` was not checked"))
}

fn keyword(field: &str, value: &str) -> Condition {
    Condition::Field(FieldCondition::new_match(key(field), Match::from(value.to_string())))
}

fn integer(field: &str, value: i64) -> Condition {
    Condition::Field(FieldCondition::new_match(key(field), Match::from(value)))
}

fn all_of(conditions: Vec<Condition>) -> Filter {
    Filter { must: Some(conditions), ..Filter::default() }
}

fn tenant_filter(tenant: &Tenant) -> Filter {
    all_of(vec![keyword("tenant", &tenant.key())])
}

/// The metadata conditions, as Qdrant conditions on `metadata.<key>` (checked by [`validate_filter`] first).
fn metadata_conditions(filter: &MetadataFilter) -> StoreResult<Vec<Condition>> {
    validate_filter(filter)?;
    let mut conditions = Vec::new();
    for (name, value) in filter {
        let path = key(&format!("metadata.{name}"));
        let condition = match value {
            Value::String(s) => FieldCondition::new_match(path, Match::from(s.clone())),
            Value::Bool(b) => FieldCondition::new_match(path, Match::from(*b)),
            Value::Number(n) => match n.as_i64() {
                Some(i) => FieldCondition::new_match(path, Match::from(i)),
                None => {
                    let f = n.as_f64().unwrap_or_default();
                    let exact = qdrant_edge::external::ordered_float::OrderedFloat(f);
                    FieldCondition::new_range(
                        path,
                        qdrant_edge::Range { lt: None, gt: None, gte: Some(exact), lte: Some(exact) },
                    )
                }
            },
            Value::Array(values) => {
                if values.iter().all(Value::is_string) {
                    let strings: Vec<String> = values.iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
                    FieldCondition::new_match(path, Match::from(strings))
                } else {
                    let ints: Vec<i64> = values.iter().filter_map(Value::as_i64).collect();
                    FieldCondition::new_match(path, Match::from(AnyVariants::Integers(ints.into_iter().collect())))
                }
            }
            Value::Null | Value::Object(_) => return Err(format!("filter `{name}`: unsupported value")),
        };
        conditions.push(Condition::Field(condition));
    }
    Ok(conditions)
}

fn uuid_id(id: &str) -> StoreResult<PointId> {
    Uuid::parse_str(id).map(PointId::Uuid).map_err(|e| format!("bad point id: {e}"))
}

fn index_blocking(shard: &Shard, tenant: &Tenant, chunks: Vec<Chunk>) -> StoreResult<()> {
    if chunks.is_empty() {
        return Ok(());
    }
    let prepared = prepare_points(tenant, chunks);
    let mut points = Vec::with_capacity(prepared.points.len());
    for (id, vector, payload) in prepared.points {
        points.push(PointStructPersisted {
            id: uuid_id(&id)?,
            vector: qdrant_edge::VectorStructPersisted::Single(vector),
            payload: Some(qdrant_edge::Payload(payload)),
        });
    }
    for batch in points.chunks(256) {
        shard.update(UpdateOperation::PointOperation(PointOperations::UpsertPoints(
            PointInsertOperations::PointsList(batch.to_vec()),
        )))?;
    }
    // Chunks past each document's new end are left from an earlier, longer version: remove them.
    let stale: Vec<Condition> = prepared
        .chunk_counts
        .iter()
        .map(|(doc, count)| {
            Condition::Filter(all_of(vec![
                keyword("doc_id", doc),
                Condition::Field(FieldCondition::new_range(
                    key("chunk"),
                    qdrant_edge::Range {
                        lt: None,
                        gt: None,
                        gte: Some(qdrant_edge::external::ordered_float::OrderedFloat(f64::from(*count))),
                        lte: None,
                    },
                )),
            ]))
        })
        .collect();
    let mut filter = tenant_filter(tenant);
    filter.should = Some(stale);
    shard.update(UpdateOperation::PointOperation(PointOperations::DeletePointsByFilter(filter)))?;
    shard.flush()
}

fn search_blocking(
    shard: &Shard,
    tenant: &Tenant,
    vector: Vec<f32>,
    documents: usize,
    filter: Option<MetadataFilter>,
    params: SearchParams,
) -> StoreResult<Vec<Hit>> {
    let mut conditions = vec![keyword("tenant", &tenant.key())];
    if let Some(filter) = &filter {
        conditions.extend(metadata_conditions(filter)?);
    }
    if documents == 0 {
        return Ok(Vec::new());
    }
    let request = QueryRequest {
        prefetches: Vec::new(),
        query: Some(ScoringQuery::Vector(qdrant_edge::QueryEnum::Nearest(qdrant_edge::NamedQuery {
            query: VectorInternal::Dense(vector),
            using: None,
        }))),
        filter: Some(all_of(conditions)),
        score_threshold: None,
        limit: candidates(documents),
        offset: 0,
        params: Some(params),
        with_vector: WithVector::Bool(false),
        with_payload: WithPayloadInterface::Bool(false),
    };
    let points = shard.query(request)?;
    // Payloads (document id, text, metadata) are read for the best candidates only, as many as documents are still
    // missing: with one chunk per document near the query, the first read is the only one.
    let mut hits: Vec<Hit> = Vec::with_capacity(documents);
    let mut seen = HashSet::new();
    let mut rest = points.as_slice();
    while hits.len() < documents && !rest.is_empty() {
        let (batch, after) = rest.split_at((documents - hits.len()).min(rest.len()));
        rest = after;
        let ids: Vec<PointId> = batch.iter().map(|point| point.id).collect();
        // A point removed since the query (its document indexed again) is skipped.
        let mut payloads: HashMap<PointId, Value> =
            shard.payloads(&ids)?.into_iter().filter_map(|r| Some((r.id, Value::Object(r.payload?.0)))).collect();
        for point in batch {
            let Some(Value::Object(payload)) = payloads.remove(&point.id) else { continue };
            let hit = Hit::from_payload(&payload, point.score);
            if seen.insert(hit.doc_id.clone()) {
                hits.push(hit);
            }
        }
    }
    Ok(hits)
}

fn tenants_blocking(shard: &Shard, workspace_id: &str) -> StoreResult<Vec<TenantInfo>> {
    let _shared = shard.gate.read().map_err(|_| "vector store lock poisoned".to_string())?;
    let facets = shard
        .engine
        .facet(FacetRequest {
            key: key("tenant"),
            limit: 100_000,
            filter: Some(all_of(vec![keyword("workspace", workspace_id)])),
            exact: true,
        })
        .map_err(|e| format!("vector store facet failed: {e}"))?;
    drop(_shared);
    let prefix = format!("{workspace_id}/");
    let mut out = Vec::new();
    for hit in facets.hits {
        let FacetValue::Keyword(tenant_key) = hit.value else { continue };
        let Some(scope) = tenant_key.strip_prefix(&prefix) else { continue };
        let tenant = Tenant { workspace_id: workspace_id.to_string(), scope: scope.to_string() };
        let mut first_chunks = tenant_filter(&tenant);
        if let Some(must) = first_chunks.must.as_mut() {
            must.push(integer("chunk", 0));
        }
        let documents = shard.count(first_chunks)?;
        let newest = {
            let _shared = shard.gate.read().map_err(|_| "vector store lock poisoned".to_string())?;
            shard
                .engine
                .scroll(ScrollRequest {
                    offset: None,
                    limit: Some(1),
                    filter: Some(tenant_filter(&tenant)),
                    with_payload: Some(WithPayloadInterface::Bool(true)),
                    with_vector: WithVector::Bool(false),
                    order_by: Some(OrderByInterface::Struct(OrderBy {
                        key: key("updated_at"),
                        direction: Some(Direction::Desc),
                        start_from: None,
                    })),
                })
                .map_err(|e| format!("vector store scroll failed: {e}"))?
                .0
        };
        let updated_at = newest
            .first()
            .and_then(|r| r.payload.as_ref())
            .and_then(|p| p.0.get("updated_at"))
            .and_then(Value::as_i64)
            .unwrap_or_default();
        out.push(TenantInfo { tenant, documents, points: hit.count as u64, updated_at });
    }
    out.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    Ok(out)
}

/// Runs blocking shard work on tokio's blocking pool.
fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> BoxFuture<'static, StoreResult<T>> {
    Box::pin(
        async move { tokio::task::spawn_blocking(work).await.map_err(|e| format!("vector store task failed: {e}"))? },
    )
}

impl VectorStore for EdgeStore {
    fn index(&self, collection: &str, tenant: &Tenant, chunks: Vec<Chunk>) -> BoxFuture<'static, StoreResult<()>> {
        if let Some(bad) = chunks.iter().find(|c| c.vector.len() != self.dimensions) {
            let message = format!("vector of {} dimensions, expected {}", bad.vector.len(), self.dimensions);
            return Box::pin(async move { Err(message) });
        }
        let shard = self.shard(collection, true);
        let tenant = tenant.clone();
        blocking(move || match shard? {
            Some(shard) => index_blocking(&shard, &tenant, chunks),
            None => Err("collection missing".into()),
        })
    }

    fn search(
        &self,
        collection: &str,
        tenant: &Tenant,
        vector: Vec<f32>,
        documents: usize,
        filter: Option<MetadataFilter>,
    ) -> BoxFuture<'static, StoreResult<Vec<Hit>>> {
        self.search_with(collection, tenant, vector, documents, filter, approximate(self.search_ef))
    }

    fn count(&self, collection: &str, tenant: &Tenant) -> BoxFuture<'static, StoreResult<u64>> {
        let shard = self.shard(collection, false);
        let filter = tenant_filter(tenant);
        blocking(move || match shard? {
            Some(shard) => shard.count(filter),
            None => Ok(0),
        })
    }

    fn delete_tenant(&self, collection: &str, tenant: &Tenant) -> BoxFuture<'static, StoreResult<u64>> {
        let shard = self.shard(collection, false);
        let filter = tenant_filter(tenant);
        blocking(move || match shard? {
            Some(shard) => {
                let before = shard.count(filter.clone())?;
                if before > 0 {
                    shard.update(UpdateOperation::PointOperation(PointOperations::DeletePointsByFilter(filter)))?;
                    shard.flush()?;
                }
                Ok(before)
            }
            None => Ok(0),
        })
    }

    fn tenants(&self, workspace_id: &str) -> BoxFuture<'static, StoreResult<Vec<(String, TenantInfo)>>> {
        let shards = self.all_shards();
        let workspace_id = workspace_id.to_string();
        blocking(move || {
            let mut out = Vec::new();
            for (collection, shard) in shards {
                for info in tenants_blocking(&shard, &workspace_id)? {
                    out.push((collection.clone(), info));
                }
            }
            out.sort_by(|a, b| (&a.0, &a.1.tenant).cmp(&(&b.0, &b.1.tenant)));
            Ok(out)
        })
    }

    fn flush(&self) -> BoxFuture<'static, StoreResult<()>> {
        let shards = self.all_shards();
        blocking(move || {
            for (_, shard) in shards {
                shard.flush_all()?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance::{self, chunk, tenant, unit};
    use super::*;

    /// Opens the store under `dir`, indexes `n` one-chunk documents `d0..` (8 dimensions) into collection `m`, and
    /// closes it again.
    async fn fill(dir: &Path, t: &Tenant, n: u32) -> Result<(), String> {
        let store = EdgeStore::open(dir, 8)?;
        let chunks: Vec<Chunk> = (0..n).map(|i| chunk(&format!("d{i}"), 0, unit(i), "en")).collect();
        store.index("m", t, chunks).await
    }

    /// A narrow search beam still answers (the engine keeps at least as many candidates as asked for), and on
    /// segments small enough to be searched plainly every beam agrees with exact search.
    #[tokio::test]
    async fn a_narrow_beam_agrees_with_exact_search() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let t = tenant("ws_1", "docs");
        fill(dir.path(), &t, 200).await?;
        let store = EdgeStore::open(dir.path(), 8)?.with_search_ef(1);
        let ids = |hits: Vec<Hit>| hits.into_iter().map(|h| h.doc_id).collect::<Vec<_>>();
        for seed in [3, 70, 199] {
            let exact = ids(store.search_beam("m", &t, unit(seed), 10, Beam::Exact).await?);
            assert_eq!(exact.len(), 10);
            assert_eq!(exact[0], format!("d{seed}"));
            assert_eq!(ids(store.search("m", &t, unit(seed), 10, None).await?), exact);
            assert_eq!(ids(store.search_beam("m", &t, unit(seed), 10, Beam::Ef(4)).await?), exact);
        }
        assert!(store.search_beam("m", &tenant("ws_2", "docs"), unit(3), 10, Beam::Exact).await?.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn tenants_are_isolated_and_reindexing_replaces() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let store = EdgeStore::open(dir.path(), conformance::DIMENSIONS)?;
        conformance::run(&store, "m").await
    }

    /// A shard written before quantization was configured opens, answers, and gains the quantization config (the
    /// optimiser then rebuilds its segments with it).
    #[tokio::test]
    async fn shards_without_quantization_are_upgraded() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let t = tenant("ws_1", "docs");
        // The layout an earlier version wrote: the same shard without quantization.
        fill(dir.path(), &t, 50).await?;
        let config_file = dir.path().join("m").join("edge_config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&config_file).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        config.as_object_mut().map(|c| c.remove("quantization_config"));
        std::fs::write(&config_file, config.to_string()).map_err(|e| e.to_string())?;

        let store = EdgeStore::open(dir.path(), 8)?;
        store.optimize_now()?;
        let hits = store.search("m", &t, unit(7), 1, None).await?;
        assert_eq!(hits[0].doc_id, "d7");
        assert_eq!(store.count("m", &t).await?, 50);
        let saved = std::fs::read_to_string(&config_file).map_err(|e| e.to_string())?;
        assert!(saved.contains(r#""scalar":{"type":"int8""#), "{saved}");
        Ok(())
    }

    #[tokio::test]
    async fn data_survives_reopening() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let t = tenant("ws_1", "docs");
        fill(dir.path(), &t, 300).await?;
        let store = EdgeStore::open(dir.path(), 8)?;
        assert_eq!(store.count("m", &t).await?, 300);
        let hits = store.search("m", &t, unit(7), 1, None).await?;
        assert_eq!(hits[0].doc_id, "d7");
        Ok(())
    }
}
