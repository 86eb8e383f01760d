//! The operator's admin API under `/admin/`: on only when `SWITCHYARD_ADMIN_KEY` is set, and only for that key.

use super::body::Json;
use super::docs::{AdminOnly, JsonBody};
use super::errors::ApiError;
use super::principal::Admin;
use crate::auth::{self};
use crate::clock::now_unix;
use crate::state::{create_key, AppState};
use crate::store::{Notice, Plan, Workspace};
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use switchyard_actors::engine::ledger::LedgerError;
use switchyard_actors::Credits;
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/admin/workspaces").route(web::post().to(create_workspace)))
        .service(super::resource("/admin/workspaces/{id}").route(web::get().to(get_workspace)))
        .service(super::resource("/admin/workspaces/{id}/keys").route(web::post().to(create_workspace_key)))
        .service(super::resource("/admin/workspaces/{id}/credits").route(web::post().to(top_up)))
        .service(
            super::resource("/admin/keys/{id}").route(web::delete().to(revoke_key)).route(web::patch().to(update_key)),
        );
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    pub name: String,
    /// Opening balance, at most 3 decimals.
    #[serde(default)]
    #[schema(value_type = f64)]
    pub credits: Credits,
    /// Defaults to the bootstrap plan of the configuration.
    pub plan: Option<Plan>,
}

#[derive(Serialize, ToSchema)]
pub struct WorkspaceView {
    pub id: String,
    pub name: String,
    #[schema(value_type = f64)]
    pub credits: Credits,
    pub plan: Plan,
    pub created: i64,
    pub keys: Vec<KeyView>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    pub created: i64,
    pub revoked: bool,
    pub models: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
pub struct NewKey {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    /// The key itself: shown this once, stored only as a hash.
    pub key: String,
    pub created: i64,
    /// The models the key may run; null: every model.
    pub models: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    /// The models the key may run (others are 403 `model_not_allowed`); absent: every model.
    pub models: Option<Vec<String>>,
}

/// `PATCH /admin/keys/{id}`: what may change on a key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    /// The models the key may run; null: every model.
    pub models: Option<Vec<String>>,
}

/// A key's model list: models of the catalogue, at least one.
pub fn check_models(state: &AppState, field: &str, models: &[String]) -> Result<(), ApiError> {
    if models.is_empty() || models.len() > 200 {
        return Err(ApiError::invalid_field(field, format!("`{field}` must list 1 to 200 models")));
    }
    if let Some(unknown) = models.iter().find(|m| state.catalogue.model(m).is_none()) {
        let message =
            format!("`{field}`: no model `{}` in the catalogue", unknown.chars().take(80).collect::<String>());
        return Err(ApiError::invalid_field(field, message));
    }
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUp {
    /// Credits to add; more than 0, at most 3 decimals.
    #[schema(value_type = f64)]
    pub credits: Credits,
}

#[derive(Serialize, ToSchema)]
pub struct Balance {
    pub id: String,
    #[schema(value_type = f64)]
    pub credits: Credits,
}

#[derive(Serialize, ToSchema)]
pub struct Revoked {
    pub id: String,
    pub revoked: bool,
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field("name", "`name` must be 1 to 100 printable characters"));
    }
    Ok(())
}

fn check_plan(plan: &Plan) -> Result<(), ApiError> {
    for (field, value) in [
        ("plan.requests_per_minute", plan.requests_per_minute),
        ("plan.concurrent_requests", plan.concurrent_requests),
        ("plan.tokens_per_minute", plan.tokens_per_minute),
    ] {
        if value == 0 {
            return Err(ApiError::invalid_field(field, format!("`{field}` must be at least 1")));
        }
    }
    Ok(())
}

async fn workspace_view(state: &AppState, workspace: Workspace) -> Result<WorkspaceView, ApiError> {
    let keys = state.store.keys(Some(&workspace.id)).await.map_err(ApiError::store)?;
    // The ledger holds the live balance; the store's is the committed one.
    let wallet = state.engine().wallet(&workspace.id).await;
    Ok(WorkspaceView {
        id: workspace.id,
        name: workspace.name,
        credits: wallet.map_or(workspace.credits, |w| w.balance),
        plan: workspace.plan,
        created: workspace.created_at,
        keys: keys
            .into_iter()
            .map(|k| KeyView {
                id: k.id,
                name: k.name,
                prefix: k.prefix,
                created: k.created_at,
                revoked: k.revoked_at.is_some(),
                models: k.models,
            })
            .collect(),
    })
}

#[utoipa::path(post, path = "/admin/workspaces", tag = "admin", request_body = CreateWorkspace,
    responses((status = 201, body = WorkspaceView), JsonBody, AdminOnly),
    security(("bearer" = [])))]
pub async fn create_workspace(
    state: web::Data<AppState>,
    _admin: Admin,
    Json(body): Json<CreateWorkspace>,
) -> Result<HttpResponse, ApiError> {
    check_name(&body.name)?;
    if body.credits.milli() < 0 {
        return Err(ApiError::invalid_field("credits", "`credits` must not be negative"));
    }
    let b = &state.config.bootstrap;
    let plan = body.plan.unwrap_or(Plan {
        requests_per_minute: b.requests_per_minute,
        concurrent_requests: b.concurrent_requests,
        tokens_per_minute: b.tokens_per_minute,
    });
    check_plan(&plan)?;
    let workspace =
        Workspace { id: auth::new_id("ws"), name: body.name, credits: body.credits, plan, created_at: now_unix() };
    state.store.insert_workspace(&workspace).await.map_err(ApiError::store)?;
    state.engine().ledger.open_wallet(&workspace.id, workspace.credits);
    tracing::info!(workspace = %workspace.id, "workspace created");
    Ok(HttpResponse::Created().json(workspace_view(&state, workspace).await?))
}

#[utoipa::path(get, path = "/admin/workspaces/{id}", tag = "admin",
    responses((status = 200, body = WorkspaceView), AdminOnly),
    security(("bearer" = [])))]
pub async fn get_workspace(
    state: web::Data<AppState>,
    id: web::Path<String>,
    _admin: Admin,
) -> Result<HttpResponse, ApiError> {
    let workspace = state.store.workspace(&id).await.map_err(ApiError::store)?;
    let workspace = workspace.ok_or_else(|| ApiError::not_found(format!("No workspace `{id}`")))?;
    Ok(HttpResponse::Ok().json(workspace_view(&state, workspace).await?))
}

#[utoipa::path(post, path = "/admin/workspaces/{id}/keys", tag = "admin", request_body = CreateKey,
    responses((status = 201, body = NewKey), JsonBody, AdminOnly),
    security(("bearer" = [])))]
pub async fn create_workspace_key(
    state: web::Data<AppState>,
    id: web::Path<String>,
    _admin: Admin,
    Json(body): Json<CreateKey>,
) -> Result<HttpResponse, ApiError> {
    check_name(&body.name)?;
    if let Some(models) = &body.models {
        check_models(&state, "models", models)?;
    }
    let workspace = state.store.workspace(&id).await.map_err(ApiError::store)?;
    let workspace = workspace.ok_or_else(|| ApiError::not_found(format!("No workspace `{id}`")))?;
    let (record, key) =
        create_key(&state.store, &workspace.id, &body.name, body.models).await.map_err(ApiError::store)?;
    state.keys.insert(&record, &workspace);
    state.notify(&Notice::KeysChanged);
    tracing::info!(workspace = %workspace.id, key = %record.id, "API key created");
    Ok(HttpResponse::Created().json(NewKey {
        id: record.id,
        workspace_id: workspace.id,
        name: record.name,
        key,
        created: record.created_at,
        models: record.models,
    }))
}

#[utoipa::path(post, path = "/admin/workspaces/{id}/credits", tag = "admin", request_body = TopUp,
    responses((status = 200, body = Balance), JsonBody, AdminOnly),
    security(("bearer" = [])))]
pub async fn top_up(
    state: web::Data<AppState>,
    id: web::Path<String>,
    _admin: Admin,
    Json(body): Json<TopUp>,
) -> Result<HttpResponse, ApiError> {
    if body.credits.milli() <= 0 {
        return Err(ApiError::invalid_field("credits", "`credits` must be more than 0"));
    }
    let balance = match state.engine().ledger.top_up(&id, body.credits).await {
        Ok(balance) => balance,
        Err(LedgerError::UnknownWorkspace(_)) => return Err(ApiError::not_found(format!("No workspace `{id}`"))),
        Err(e) => return Err(ApiError::internal(format!("ledger: {e}"))),
    };
    tracing::info!(workspace = %id, credits = %body.credits, "credits added");
    Ok(HttpResponse::Ok().json(Balance { id: id.into_inner(), credits: balance }))
}

#[utoipa::path(delete, path = "/admin/keys/{id}", tag = "admin",
    responses((status = 200, body = Revoked), AdminOnly),
    security(("bearer" = [])))]
pub async fn revoke_key(
    state: web::Data<AppState>,
    id: web::Path<String>,
    _admin: Admin,
) -> Result<HttpResponse, ApiError> {
    let record = state.store.revoke_key(&id, now_unix()).await.map_err(ApiError::store)?;
    let record = record.ok_or_else(|| ApiError::not_found(format!("No API key `{id}`")))?;
    state.keys.remove(&record.key_hash);
    state.notify(&Notice::KeysChanged);
    tracing::info!(key = %record.id, "API key revoked");
    Ok(HttpResponse::Ok().json(Revoked { id: record.id, revoked: true }))
}

#[utoipa::path(patch, path = "/admin/keys/{id}", tag = "admin", request_body = UpdateKey,
    responses((status = 200, body = KeyView), JsonBody, AdminOnly),
    security(("bearer" = [])))]
pub async fn update_key(
    state: web::Data<AppState>,
    id: web::Path<String>,
    _admin: Admin,
    Json(body): Json<UpdateKey>,
) -> Result<HttpResponse, ApiError> {
    if let Some(models) = &body.models {
        check_models(&state, "models", models)?;
    }
    let record = state.store.set_key_models(&id, &body.models).await.map_err(ApiError::store)?;
    let record = record.ok_or_else(|| ApiError::not_found(format!("No API key `{id}`")))?;
    if record.revoked_at.is_none() {
        let workspace = state.store.workspace(&record.workspace_id).await.map_err(ApiError::store)?;
        if let Some(workspace) = workspace {
            state.keys.insert(&record, &workspace);
        }
    }
    state.notify(&Notice::KeysChanged);
    tracing::info!(key = %record.id, "API key updated");
    Ok(HttpResponse::Ok().json(KeyView {
        id: record.id,
        name: record.name,
        prefix: record.prefix,
        created: record.created_at,
        revoked: record.revoked_at.is_some(),
        models: record.models,
    }))
}
