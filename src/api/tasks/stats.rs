//! `GET /api/v1/tasks/{task}/revisions/stats`: an A/B test's figures per revision, from the usage records.

use super::plan::REPAIR_ENDPOINT;
use crate::api::docs::Authenticated;
use crate::api::errors::{ApiError, ErrorBody};
use crate::api::principal::Admitted;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `from` / `to` of the statistics: RFC 3339 times or Unix seconds.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RevisionStats {
    pub revision: String,
    pub tag: Option<String>,
    pub weight: Option<u32>,
    pub active: Option<bool>,
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub fallbacks: u64,
    pub fallback_rate: f64,
    pub latency_ms_p50: Option<u64>,
    pub latency_ms_p95: Option<u64>,
    pub mean_prompt_tokens: f64,
    pub mean_completion_tokens: f64,
    /// Mean credits per request.
    pub mean_credits: f64,
    pub credits: f64,
}

#[derive(Serialize, ToSchema)]
pub struct StatsResponse {
    pub task: String,
    pub from: i64,
    pub to: i64,
    pub revisions: Vec<RevisionStats>,
}

/// The value at quantile `q` of sorted `values` (nearest rank).
fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[utoipa::path(get, path = "/api/v1/tasks/{task}/revisions/stats", tag = "tasks",
    params(("task" = String, Path, description = "The task's slug"), StatsQuery),
    responses((status = 200, body = StatsResponse), Authenticated, (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn revision_stats(
    state: web::Data<AppState>,
    Admitted { principal, .. }: Admitted,
    path: web::Path<String>,
    query: web::Query<StatsQuery>,
) -> Result<HttpResponse, ApiError> {
    let slug = path.into_inner();
    let task = state.engine().tasks.load().get(&principal.workspace_id, &slug).cloned();
    let (from, to) = crate::api::query::time_range(query.from.as_deref(), query.to.as_deref())?;
    state.engine().flush_usage().await;
    let rows =
        state.store.task_runs(&principal.workspace_id, &slug, from * 1000, to * 1000).await.map_err(ApiError::store)?;
    if task.is_none() && rows.is_empty() {
        return Err(ApiError::not_found(format!("No task `{slug}`")));
    }
    #[derive(Default)]
    struct Acc {
        requests: u64,
        errors: u64,
        fallbacks: u64,
        latencies: Vec<u64>,
        prompt: u64,
        completion: u64,
        credits: i64,
    }
    let mut by_revision: std::collections::BTreeMap<String, Acc> = Default::default();
    if let Some(task) = &task {
        for revision in &task.revisions {
            by_revision.entry(revision.id.clone()).or_default();
        }
    }
    for row in rows {
        let acc = by_revision.entry(row.revision.unwrap_or_default()).or_default();
        if row.endpoint != REPAIR_ENDPOINT {
            acc.requests += 1;
            acc.errors += u64::from(row.status != "ok");
            acc.fallbacks += u64::from(row.fallback_used);
            acc.latencies.push(row.latency_ms.max(0) as u64);
        }
        acc.prompt += row.prompt_tokens.max(0) as u64;
        acc.completion += row.completion_tokens.max(0) as u64;
        acc.credits += row.credits_milli;
    }
    let revisions = by_revision
        .into_iter()
        .map(|(id, mut acc)| {
            acc.latencies.sort_unstable();
            let n = acc.requests.max(1) as f64;
            let rate = |k: u64| if acc.requests == 0 { 0.0 } else { k as f64 / acc.requests as f64 };
            let spec = task.as_ref().and_then(|t| t.revision(&id));
            RevisionStats {
                tag: spec.and_then(|r| r.tag.clone()),
                weight: spec.map(|r| r.weight),
                active: spec.map(|r| r.active),
                requests: acc.requests,
                errors: acc.errors,
                error_rate: rate(acc.errors),
                fallbacks: acc.fallbacks,
                fallback_rate: rate(acc.fallbacks),
                latency_ms_p50: quantile(&acc.latencies, 0.5),
                latency_ms_p95: quantile(&acc.latencies, 0.95),
                mean_prompt_tokens: if acc.requests == 0 { 0.0 } else { acc.prompt as f64 / n },
                mean_completion_tokens: if acc.requests == 0 { 0.0 } else { acc.completion as f64 / n },
                mean_credits: if acc.requests == 0 { 0.0 } else { acc.credits as f64 / 1000.0 / n },
                credits: acc.credits as f64 / 1000.0,
                revision: id,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(StatsResponse { task: slug, from, to, revisions }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&values, 0.5), Some(50));
        assert_eq!(quantile(&values, 0.95), Some(95));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
