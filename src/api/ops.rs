//! Operations: liveness, readiness and Prometheus metrics (the OpenAPI document is served by `openapi`).

use super::errors::{ApiError, ErrorBody};
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/healthz").route(web::get().to(healthz)))
        .service(super::resource("/readyz").route(web::get().to(readyz)))
        .service(super::resource("/metrics").route(web::get().to(metrics)));
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Health), (status = 503, description = "the database does not answer, or the gateway is stopping", body = ErrorBody)))]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::overloaded("Not ready: the gateway is stopping (draining)"));
    }
    state.store.ping().await.map_err(|e| {
        let mut error = ApiError::store(e);
        error.status = actix_web::http::StatusCode::SERVICE_UNAVAILABLE;
        error.detail.kind = super::errors::ErrorType::UnavailableError;
        error.detail.code = "overloaded";
        error.detail.message = "Not ready: the database does not answer".into();
        error
    })?;
    Ok(HttpResponse::Ok().json(Health { status: "ready" }))
}

#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    refresh(&state).await;
    let text = state.metrics.render().map_err(|e| ApiError::internal(format!("metrics: {e}")))?;
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(text))
}

/// The gauges read when Prometheus scrapes: wallets of the workspaces with labels of their own, the usage journal's
/// backlog, the media store and the vector collections. One that cannot be read keeps its last value (and says so
/// in the log).
async fn refresh(state: &AppState) {
    let engine = state.engine();
    let operators = &state.metrics.operators;
    for workspace in state.metrics.engine.money.workspaces.admitted() {
        if let Some(wallet) = engine.ledger.wallet(&workspace).await {
            operators.wallet_balance.with_label_values(&[&workspace]).set(wallet.balance.as_f64());
            operators.wallet_reserved.with_label_values(&[&workspace]).set(wallet.reserved.as_f64());
        }
    }
    operators.journal_pending.set(i64::try_from(engine.usage_backlog()).unwrap_or(i64::MAX));
    match state.store.media_totals().await {
        Ok((objects, bytes)) => {
            operators.media_objects.set(objects);
            operators.media_bytes.set(bytes);
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the media totals"),
    }
    match state.vectors.points().await {
        Ok(collections) => {
            for (collection, points) in collections {
                operators
                    .vector_points
                    .with_label_values(&[&collection])
                    .set(i64::try_from(points).unwrap_or(i64::MAX));
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count the vector points"),
    }
}
