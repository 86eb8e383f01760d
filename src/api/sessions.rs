//! Browser session tokens (002: `Authorization: Bearer <access_token>` for signed-in browser sessions):
//! `POST /api/v1/sessions` mints one with an API key, `DELETE /api/v1/sessions/{id}` revokes one before it expires.

use super::body::Json;
use super::docs::{Authenticated, JsonBody};
use super::errors::{ApiError, ErrorBody};
use super::principal::Admitted;
use crate::auth::Principal;
use crate::clock::now_unix;
use crate::sessions::Claims;
use crate::state::AppState;
use crate::store::{Notice, SessionRow};
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use switchyard_actors::Credits;
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/api/v1/sessions").route(web::post().to(create_session)));
    cfg.service(super::resource("/api/v1/sessions/{id}").route(web::delete().to(delete_session)));
}

const EXPIRES_IN: std::ops::RangeInclusive<i64> = 60..=86_400;

/// A session to mint. Unknown fields are refused by name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// Seconds the token lives: 60 to 86400 (default 900).
    pub expires_in: Option<i64>,
    /// The models the token may run, within the key's (default: the key's).
    pub models: Option<Vec<String>>,
    /// The most the token may spend, in credits (default: no cap but the wallet).
    #[schema(value_type = Option<f64>)]
    pub max_credits: Option<Credits>,
    /// Who the browser user is, kept on the usage records (1 to 256 characters).
    pub user: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SessionView {
    pub object: &'static str,
    pub id: String,
    /// `Authorization: Bearer <access_token>`, or `?token=` on a WebSocket upgrade.
    pub access_token: String,
    pub token_type: &'static str,
    /// Unix seconds.
    pub expires_at: i64,
    pub workspace_id: String,
    /// The models the token may run; null: every model its key may run.
    pub models: Option<Vec<String>>,
    #[schema(value_type = Option<f64>)]
    pub max_credits: Option<Credits>,
    pub user: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/sessions", tag = "sessions", request_body = CreateSession,
    responses((status = 201, body = SessionView), Authenticated, JsonBody,
        (status = 400, description = "invalid_field, unknown_field", body = ErrorBody),
        (status = 403, description = "model_not_allowed; api_key_required (a token cannot mint a token)", body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn create_session(
    state: web::Data<AppState>,
    Admitted { principal, .. }: Admitted,
    Json(body): Json<CreateSession>,
) -> Result<HttpResponse, ApiError> {
    if principal.session.is_some() {
        return Err(ApiError::api_key_required("mint another session token"));
    }
    let expires_in = body.expires_in.unwrap_or(900);
    if !EXPIRES_IN.contains(&expires_in) {
        return Err(ApiError::invalid_field("expires_in", "`expires_in` must be 60 to 86400 seconds"));
    }
    if let Some(models) = &body.models {
        super::admin::check_models(&state, "models", models)?;
        if let Some(model) = models.iter().find(|m| !principal.may_run(m)) {
            return Err(ApiError::model_not_allowed(model).with_param("models"));
        }
    }
    if body.max_credits.is_some_and(|c| c.milli() <= 0) {
        return Err(ApiError::invalid_field("max_credits", "`max_credits` must be more than 0"));
    }
    if let Some(user) = &body.user {
        if user.trim().is_empty() || user.chars().count() > 256 || user.chars().any(char::is_control) {
            return Err(ApiError::invalid_field("user", "`user` must be 1 to 256 printable characters"));
        }
    }
    let max = body.max_credits.map(|c| c.milli());
    let (row, access_token) = mint(&state, &principal, body.models, max, body.user, expires_in).await?;
    let models = row.models.or_else(|| principal.models.as_deref().map(<[String]>::to_vec));
    Ok(HttpResponse::Created().json(SessionView {
        object: "session",
        access_token,
        id: row.id,
        token_type: "Bearer",
        expires_at: row.expires_at,
        workspace_id: row.workspace_id,
        models,
        max_credits: row.max_credits_milli.map(Credits::from_milli),
        user: row.user,
    }))
}

/// Records a session of the caller's key and answers it with its signed token (checked fields only).
pub async fn mint(
    state: &AppState,
    principal: &Principal,
    models: Option<Vec<String>>,
    max_credits_milli: Option<i64>,
    user: Option<String>,
    expires_in: i64,
) -> Result<(SessionRow, String), ApiError> {
    let now = now_unix();
    let row = SessionRow {
        id: crate::auth::new_id("ses"),
        workspace_id: principal.workspace_id.clone(),
        key_id: principal.key_id.clone(),
        user,
        models,
        max_credits_milli,
        created_at: now,
        expires_at: now + expires_in,
        revoked_at: None,
    };
    state.store.insert_session(&row).await.map_err(ApiError::store)?;
    let claims = Claims {
        sid: row.id.clone(),
        kid: row.key_id.clone(),
        ws: row.workspace_id.clone(),
        exp: row.expires_at,
        models: row.models.clone(),
        max: row.max_credits_milli,
        user: row.user.clone(),
    };
    let token = state.sessions.mint(&claims);
    Ok((row, token))
}

#[derive(Serialize, ToSchema)]
pub struct SessionRevoked {
    pub id: String,
    pub object: &'static str,
    pub revoked: bool,
}

#[utoipa::path(delete, path = "/api/v1/sessions/{id}", tag = "sessions",
    responses((status = 200, body = SessionRevoked), Authenticated,
        (status = 404, description = "not_found: no such session in the caller's workspace", body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete_session(
    state: web::Data<AppState>,
    Admitted { principal, .. }: Admitted,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    // A token may end its own session (a browser signing out), never another.
    if principal.session.as_ref().is_some_and(|s| s.sid != id.as_str()) {
        return Err(ApiError::not_found(format!("No session `{id}`")));
    }
    let expires =
        state.store.revoke_session(&principal.workspace_id, &id, now_unix()).await.map_err(ApiError::store)?;
    let expires = expires.ok_or_else(|| ApiError::not_found(format!("No session `{id}`")))?;
    state.sessions.revoke(&id, expires);
    state.notify(&Notice::SessionRevoked { id: id.as_str().to_owned(), expires_at: expires });
    Ok(HttpResponse::Ok().json(SessionRevoked { id: id.into_inner(), object: "session", revoked: true }))
}
