//! One collection's shard: the engine with the gate that orders writes against flushes, group-commit flushing,
//! optimisation when due (and the background loop that runs it), and opening or creating a shard on disk.

use super::filters::key;
use crate::vectors::StoreResult;
use qdrant_edge::{
    CountRequest, CreateIndex, Distance, EdgeConfig, EdgeConfigBuilder, EdgeShard, EdgeVectorParamsBuilder,
    FieldIndexOperations, Filter, IntegerIndexParams, KeywordIndexParams, PayloadFieldSchema, PayloadSchemaParams,
    PointId, QuantizationConfig, QueryRequest, UpdateOperation, WithPayloadInterface, WithVector,
};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

/// A shard is optimised once writes have paused this long...
const QUIET_BEFORE_OPTIMIZE: Duration = Duration::from_millis(1500);
/// ...or when it has waited this long under a steady stream of writes.
const MAX_OPTIMIZE_DELAY: Duration = Duration::from_secs(30);

pub(super) struct Shard {
    pub(super) engine: EdgeShard,
    /// Updates and queries share it; a flush holds it alone.
    pub(super) gate: RwLock<()>,
    /// Write sequence numbers, for group commit: `written` counts updates, `flushed` the last one on disk.
    written: AtomicU64,
    flushed: Mutex<u64>,
    /// When the shard was first written since its last optimisation, and when last written.
    pub(super) dirty_since: Mutex<Option<Instant>>,
    last_write: Mutex<Instant>,
    pub(super) optimizing: AtomicBool,
}

impl Shard {
    pub(super) fn update(&self, operation: UpdateOperation) -> StoreResult<()> {
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
    pub(super) fn flush(&self) -> StoreResult<()> {
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

    pub(super) fn query(&self, request: QueryRequest) -> StoreResult<Vec<qdrant_edge::ScoredPoint>> {
        let _shared = self.gate.read().map_err(|_| "vector store lock poisoned".to_string())?;
        self.engine.query(request).map_err(|e| format!("vector search failed: {e}"))
    }

    pub(super) fn payloads(&self, ids: &[PointId]) -> StoreResult<Vec<qdrant_edge::Record>> {
        let _shared = self.gate.read().map_err(|_| "vector store lock poisoned".to_string())?;
        self.engine
            .retrieve(ids, Some(WithPayloadInterface::Bool(true)), Some(WithVector::Bool(false)))
            .map_err(|e| format!("vector store read failed: {e}"))
    }

    /// Points matching `filter` (every point with `None`).
    pub(super) fn count(&self, filter: Option<Filter>) -> StoreResult<u64> {
        let _shared = self.gate.read().map_err(|_| "vector store lock poisoned".to_string())?;
        self.engine
            .count(CountRequest { filter, exact: true })
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
    pub(super) fn flush_all(&self) -> StoreResult<()> {
        self.written.fetch_add(1, Ordering::SeqCst);
        self.flush()
    }
}

pub(super) fn optimizer_loop(shards: Weak<Mutex<HashMap<String, Arc<Shard>>>>, stop: Arc<AtomicBool>) {
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

pub(super) fn open_shard(path: &Path, dimensions: usize) -> StoreResult<Shard> {
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
