//! `GET /api/billing/wallet` and `GET /api/billing/usage/summary`, each confined to the caller's workspace.

use super::docs::Authenticated;
use super::errors::{ApiError, ErrorBody};
use super::principal::Admitted;
use crate::state::AppState;
use crate::store::{UsageKey, UsageTotals};
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use switchyard_actors::Credits;
use utoipa::{IntoParams, ToSchema};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/api/billing/wallet").route(web::get().to(wallet)))
        .service(super::resource("/api/billing/usage/summary").route(web::get().to(usage_summary)));
}

#[derive(Serialize, ToSchema)]
pub struct WalletView {
    pub object: &'static str,
    pub workspace_id: String,
    /// Credits left after every settled charge.
    #[schema(value_type = f64)]
    pub balance: Credits,
    /// Credits held for requests in flight.
    #[schema(value_type = f64)]
    pub reserved: Credits,
    /// `balance - reserved`: what new requests can use.
    #[schema(value_type = f64)]
    pub available: Credits,
}

#[utoipa::path(get, path = "/api/billing/wallet", tag = "billing",
    responses((status = 200, body = WalletView), Authenticated),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn wallet(
    state: web::Data<AppState>,
    Admitted { principal, .. }: Admitted,
) -> Result<HttpResponse, ApiError> {
    let wallet = state.engine().wallet(&principal.workspace_id).await.unwrap_or_default();
    Ok(HttpResponse::Ok().json(WalletView {
        object: "wallet",
        workspace_id: principal.workspace_id,
        balance: wallet.balance,
        reserved: wallet.reserved,
        available: wallet.available(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    /// Start (inclusive): RFC 3339, `YYYY-MM-DD` or Unix seconds. Default: 30 days ago.
    pub from: Option<String>,
    /// End (exclusive), same forms. Default: now.
    pub to: Option<String>,
    /// `model` (default), `reporting_group`, `api_key`, `day`, `task`, `revision`, `modality`, `user` or `session`
    /// (a browser session token's user and id).
    pub group_by: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UsageSummary {
    pub object: &'static str,
    pub workspace_id: String,
    /// Unix seconds.
    pub from: i64,
    pub to: i64,
    pub group_by: String,
    pub data: Vec<UsageTotals>,
    pub total: UsageTotals,
}

/// Parses a time bound to Unix seconds.
#[utoipa::path(get, path = "/api/billing/usage/summary", tag = "billing", params(SummaryQuery),
    responses((status = 200, body = UsageSummary), Authenticated, (status = 400, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn usage_summary(
    state: web::Data<AppState>,
    Admitted { principal, .. }: Admitted,
    query: web::Query<SummaryQuery>,
) -> Result<HttpResponse, ApiError> {
    let (from, to) = super::query::time_range(query.from.as_deref(), query.to.as_deref())?;
    let group_by = query.group_by.clone().unwrap_or_else(|| "model".to_owned());
    let key = UsageKey::parse(&group_by).ok_or_else(|| {
        ApiError::invalid_field(
            "group_by",
            format!(
                "Unknown group_by `{group_by}`: use model, reporting_group, api_key, day, task, revision, modality, user or session"
            ),
        )
    })?;
    // Records committed to the journal but not yet imported are waited for, so the summary matches the wallet.
    state.engine().flush_usage().await;
    let data = state
        .store
        .usage_summary(&principal.workspace_id, key, from * 1000, to * 1000)
        .await
        .map_err(ApiError::store)?;
    let mut total = UsageTotals::named(None);
    for group in &data {
        total.add(group);
    }
    Ok(HttpResponse::Ok().json(UsageSummary {
        object: "usage.summary",
        workspace_id: principal.workspace_id,
        from,
        to,
        group_by,
        data,
        total,
    }))
}
