//! Admission through the caller's `Session`: every authenticated request takes a permit, and its rate-limit
//! state goes on the response as `X-RateLimit-*` headers (added by the middleware in `lib.rs`).

use super::errors::ApiError;
use crate::auth::Principal;
use crate::state::AppState;
use actix_web::{HttpMessage, HttpRequest};
use switchyard_actors::engine::session::{Grant, Limits, Permit, Rejection};

/// The caller's rate-limit state, left on the request for the response's headers.
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    limit: u32,
    remaining: u32,
    /// Unix seconds.
    reset: u64,
}

impl RateLimit {
    /// Sets the headers: limit, remaining, reset (Unix seconds).
    pub fn write_headers(&self, headers: &mut actix_web::http::header::HeaderMap) {
        use actix_web::http::header::HeaderName;
        headers.insert(HeaderName::from_static("x-ratelimit-limit"), self.limit.into());
        headers.insert(HeaderName::from_static("x-ratelimit-remaining"), self.remaining.into());
        headers.insert(HeaderName::from_static("x-ratelimit-reset"), self.reset.into());
    }
}

/// The plan of `principal` as its session enforces it.
pub fn of(principal: &Principal) -> Limits {
    let plan = principal.plan;
    Limits {
        requests_per_minute: plan.requests_per_minute,
        concurrent_requests: plan.concurrent_requests,
        tokens_per_minute: u64::from(plan.tokens_per_minute),
    }
}

/// Leaves a grant's state on the request, for the response's headers.
pub fn note(req: &HttpRequest, grant: Grant) {
    let Grant { limit, remaining, reset } = grant;
    req.extensions_mut().insert(RateLimit { limit, remaining, reset });
}

/// A refusal in API.md's terms (429 with its reset, or 503 while the session restarts).
pub fn refused(req: &HttpRequest, rejection: Rejection) -> ApiError {
    match rejection {
        Rejection::Requests { grant } | Rejection::Concurrency { grant } | Rejection::Tokens { grant } => {
            note(req, grant);
            ApiError::rate_limited(rejection.reason(), grant.reset, crate::clock::now_unix() as u64)
        }
        Rejection::Unavailable => ApiError::overloaded("The caller's session is restarting; retry"),
        Rejection::Unreachable => ApiError::overloaded("The shared rate limiter cannot be reached; retry"),
    }
}

/// Admits one request of `principal` that calls no model (listings, media, wallet reads).
pub async fn admit(state: &AppState, req: &HttpRequest, principal: &Principal) -> Result<Permit, ApiError> {
    match state.engine().sessions.admit(&principal.key_id, of(principal), 0).await {
        Ok(permit) => {
            note(req, permit.grant());
            Ok(permit)
        }
        Err(rejection) => Err(refused(req, rejection)),
    }
}
