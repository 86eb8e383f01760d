//! Admission through the caller's `Session`: every authenticated request takes a permit, and its rate-limit
//! state goes on the response as `X-RateLimit-*` headers (added by the middleware in `lib.rs`).

use super::errors::ApiError;
use crate::auth::Principal;
use crate::state::AppState;
use actix_web::{HttpMessage, HttpRequest};
use switchyard_actors::engine::session::{Grant, Limits, Permit, Rejection};

/// Admits one request of `principal`, reserving `tokens` of its tokens-per-minute budget.
pub async fn admit(
    state: &AppState,
    req: &HttpRequest,
    principal: &Principal,
    tokens: u64,
) -> Result<Permit, ApiError> {
    let plan = principal.plan;
    let limits = Limits {
        requests_per_minute: plan.requests_per_minute,
        concurrent_requests: plan.concurrent_requests,
        tokens_per_minute: u64::from(plan.tokens_per_minute),
    };
    match state.engine().sessions.admit(&principal.key_id, limits, tokens).await {
        Ok(permit) => {
            req.extensions_mut().insert(permit.grant());
            Ok(permit)
        }
        Err(rejection) => {
            let now = crate::state::now_unix() as u64;
            match rejection {
                Rejection::Requests { grant } | Rejection::Concurrency { grant } | Rejection::Tokens { grant } => {
                    req.extensions_mut().insert(grant);
                    Err(ApiError::rate_limited(rejection.reason(), grant.reset, now))
                }
                Rejection::Unavailable => Err(ApiError::overloaded("The caller's session is restarting; retry")),
            }
        }
    }
}

/// The headers for a grant: limit, remaining, reset (Unix seconds).
pub fn headers(grant: &Grant) -> [(&'static str, String); 3] {
    [
        ("x-ratelimit-limit", grant.limit.to_string()),
        ("x-ratelimit-remaining", grant.remaining.to_string()),
        ("x-ratelimit-reset", grant.reset.to_string()),
    ]
}
