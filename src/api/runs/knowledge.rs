//! `GET /api/knowledge-bases` and `DELETE /api/knowledge-bases/{model}/{scope}`: what a workspace has indexed.

use super::check::check_scope;
use crate::api::docs::Authenticated;
use crate::api::embeddings::embedding_model;
use crate::api::errors::{ApiError, ErrorBody};
use crate::api::principal::Admitted;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use serde_json::json;
use std::time::Instant;
use switchyard_actors::vectors::Tenant;
use utoipa::ToSchema;

/// One scope's data in one collection.
#[derive(Serialize, ToSchema)]
pub struct KnowledgeBase {
    /// The embedding model (one collection per model).
    pub model: String,
    pub collection: String,
    pub scope: String,
    pub documents: u64,
    pub points: u64,
    /// RFC 3339 time of the newest point.
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct KnowledgeBaseList {
    pub object: &'static str,
    /// `embedded` or `qdrant`.
    pub backend: &'static str,
    pub data: Vec<KnowledgeBase>,
}

fn rfc3339_millis(millis: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

fn collection_name(state: &AppState, model: &str) -> String {
    if state.vector_backend == "qdrant" {
        format!("{}{model}", state.config.vectors.collection_prefix)
    } else {
        model.to_owned()
    }
}

#[utoipa::path(
    get,
    path = "/api/knowledge-bases",
    tag = "runs",
    responses((status = 200, description = "The caller's indexed data by model, collection and scope", body = KnowledgeBaseList), Authenticated),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list_knowledge_bases(
    state: web::Data<AppState>,
    Admitted { principal, .. }: Admitted,
) -> Result<HttpResponse, ApiError> {
    let listed = state
        .vectors
        .tenants(&principal.workspace_id)
        .await
        .map_err(|e| ApiError::internal(format!("vector store: {e}")))?;
    let data = listed
        .into_iter()
        .map(|(model, info)| KnowledgeBase {
            collection: collection_name(&state, &model),
            model,
            scope: info.tenant.scope,
            documents: info.documents,
            points: info.points,
            updated_at: rfc3339_millis(info.updated_at),
        })
        .collect();
    Ok(HttpResponse::Ok().json(KnowledgeBaseList { object: "list", backend: state.vector_backend, data }))
}

#[utoipa::path(
    delete,
    path = "/api/knowledge-bases/{model}/{scope}",
    tag = "runs",
    params(("model" = String, Path), ("scope" = String, Path)),
    responses(
        (status = 200, description = "The scope's data is gone", body = Object),
        (status = 400, description = "invalid_scope, unsupported_model", body = ErrorBody),
        (status = 404, description = "not_found: nothing indexed under that scope", body = ErrorBody),
        Authenticated,
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn delete_knowledge_base(
    state: web::Data<AppState>,
    Admitted { principal, .. }: Admitted,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (model, scope) = path.into_inner();
    let model = embedding_model(&state, &model)?;
    check_scope(&scope)?;
    let tenant = Tenant { workspace_id: principal.workspace_id.clone(), scope: scope.clone() };
    let deleted = Instant::now();
    let result = state.vectors.delete_tenant(&model.name, &tenant).await;
    state.metrics.observe_vectors("delete", result.is_ok(), deleted.elapsed());
    let points = result.map_err(|e| ApiError::internal(format!("vector store: {e}")))?;
    if points == 0 {
        return Err(ApiError::not_found(format!("Nothing is indexed for {} under scope `{scope}`", model.name)));
    }
    Ok(HttpResponse::Ok().json(json!({
        "object": "knowledge_base.deleted", "model": model.name, "scope": scope, "deleted": true, "points": points
    })))
}
