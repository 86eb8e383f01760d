//! Who is calling, as extractors: `Principal` (an API key resolved from the key cache, no database read),
//! `Admitted` (a principal whose session let one more request in), and `Admin` (the operator's key).

use super::errors::ApiError;
use super::limits;
use crate::auth::{self, presented_key, Principal};
use crate::sessions::{TokenError, TOKEN_PREFIX};
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures::future::LocalBoxFuture;
use std::future::{ready, Ready};
use subtle::ConstantTimeEq;
use switchyard_actors::engine::session::Permit;

fn state(req: &HttpRequest) -> Result<&web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>().ok_or_else(|| ApiError::internal("application state missing"))
}

/// The key a request presents, if any; more than one (two `Authorization` or two `X-API-Key` headers) is refused,
/// since which one was meant cannot be told. Every credential check starts here.
pub fn presented(req: &HttpRequest) -> Result<Option<&str>, ApiError> {
    if auth::ambiguous_key(req) {
        return Err(ApiError::ambiguous_api_key());
    }
    Ok(presented_key(req))
}

/// Counts an error answer by its code and the caller's workspace (`_none` when the credential named none). Only
/// error answers pay for finding the workspace.
pub fn count_error(state: &AppState, req: &HttpRequest, error: &ApiError) {
    let principal = presented(req).ok().flatten().and_then(|key| resolve(state, key).ok());
    let money = &state.metrics.engine.money;
    let workspace = principal.as_ref().map_or("_none", |p| money.workspaces.admit(&p.workspace_id));
    state.metrics.operators.api_errors.with_label_values(&[workspace, error.code()]).inc();
}

/// The one key a request presents.
fn the_key(req: &HttpRequest) -> Result<&str, ApiError> {
    presented(req)?.ok_or_else(ApiError::missing_api_key)
}

fn authenticate(req: &HttpRequest) -> Result<Principal, ApiError> {
    let state = state(req)?;
    let key = the_key(req)?;
    resolve(state, key)
}

/// The principal of a credential: an API key, a session token, or a session token as a realtime client secret
/// (`ek_…`).
pub fn resolve(state: &AppState, credential: &str) -> Result<Principal, ApiError> {
    let credential = credential.strip_prefix(CLIENT_SECRET_PREFIX).unwrap_or(credential);
    if credential.starts_with(TOKEN_PREFIX) {
        return token_principal(state, credential);
    }
    state.keys.resolve(credential).ok_or_else(ApiError::invalid_api_key)
}

/// What OpenAI's realtime client secrets start with; ours are session tokens behind it.
pub const CLIENT_SECRET_PREFIX: &str = "ek_";

/// A session token's principal: its key's, with the models narrowed to the token's (no database read).
fn token_principal(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    let claims = state.sessions.check(token, crate::clock::now_unix()).map_err(|e| match e {
        TokenError::Invalid => ApiError::invalid_token(),
        TokenError::Expired => ApiError::expired_token(),
        TokenError::Revoked => ApiError::revoked_token(),
    })?;
    let mut principal = state.keys.by_id(&claims.kid).ok_or_else(ApiError::invalid_token)?;
    if principal.workspace_id != claims.ws {
        return Err(ApiError::invalid_token());
    }
    if let Some(wanted) = &claims.models {
        let within: Vec<String> = wanted.iter().filter(|m| principal.may_run(m)).cloned().collect();
        principal.models = Some(within.into());
    }
    principal.session = Some(std::sync::Arc::new(claims));
    Ok(principal)
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

/// A principal admitted by its session for a request that calls no model (listings, media, wallet reads); the
/// permit is held until the handler returns.
pub struct Admitted {
    pub principal: Principal,
    _permit: Permit,
}

impl FromRequest for Admitted {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let principal = authenticate(&req)?;
            let permit = limits::admit(state(&req)?, &req, &principal).await?;
            Ok(Admitted { principal, _permit: permit })
        })
    }
}

/// The operator, presenting `SWITCHYARD_ADMIN_KEY`. With the admin API off, its routes do not exist (404).
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(require_admin(req))
    }
}

fn require_admin(req: &HttpRequest) -> Result<Admin, ApiError> {
    let state = state(req)?;
    let Some(admin_hash) = state.admin_key else {
        return Err(ApiError::not_found("The admin API is off: set SWITCHYARD_ADMIN_KEY to turn it on"));
    };
    let key = the_key(req)?;
    if bool::from(auth::hash_key(key).ct_eq(&admin_hash)) {
        return Ok(Admin);
    }
    if key.starts_with(TOKEN_PREFIX) {
        return Err(ApiError::api_key_required("use the admin API (it takes the operator's admin key)"));
    }
    if state.keys.resolve(key).is_some() {
        return Err(ApiError::admin_only());
    }
    Err(ApiError::invalid_api_key())
}
