//! The blocking shard work behind the store's calls: indexing a tenant's chunks, searching, and listing tenants.

use super::filters::{all_of, integer, key, keyword, metadata_conditions, tenant_filter, uuid_id};
use super::shard::Shard;
use crate::vectors::{candidates, prepare_points, Chunk, Hit, MetadataFilter, StoreResult, Tenant, TenantInfo};
use qdrant_edge::{
    Condition, Direction, FacetRequest, FacetValue, FieldCondition, OrderBy, OrderByInterface, PointId,
    PointInsertOperations, PointOperations, PointStructPersisted, QueryRequest, ScoringQuery, ScrollRequest,
    SearchParams, UpdateOperation, VectorInternal, WithPayloadInterface, WithVector,
};
use serde_json::Value;
use std::collections::{HashMap, HashSet};

pub(super) fn index_blocking(shard: &Shard, tenant: &Tenant, chunks: Vec<Chunk>) -> StoreResult<()> {
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

pub(super) fn search_blocking(
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

pub(super) fn tenants_blocking(shard: &Shard, workspace_id: &str) -> StoreResult<Vec<TenantInfo>> {
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
        let documents = shard.count(Some(first_chunks))?;
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
