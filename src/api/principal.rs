//! Who is calling, as extractors: `Principal` (an API key resolved from the key cache, no database read),
//! `Admitted` (a principal whose session let one more request in), and `Admin` (the operator's key).

use super::errors::ApiError;
use super::limits;
use crate::auth::{self, presented_key, Principal};
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

fn authenticate(req: &HttpRequest) -> Result<Principal, ApiError> {
    let state = state(req)?;
    let key = presented_key(req).ok_or_else(ApiError::missing_api_key)?;
    state.keys.resolve(key).ok_or_else(ApiError::invalid_api_key)
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
    let key = presented_key(req).ok_or_else(ApiError::missing_api_key)?;
    if bool::from(auth::hash_key(key).ct_eq(&admin_hash)) {
        return Ok(Admin);
    }
    if state.keys.resolve(key).is_some() {
        return Err(ApiError::admin_only());
    }
    Err(ApiError::invalid_api_key())
}
