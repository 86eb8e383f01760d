//! CORS for browser pages on the origins of `server.cors_allowed_origins` (exact matches; none by default, and then
//! no CORS header is ever sent). A preflight from an allowed origin is answered here, before any credential is
//! asked for; every other answer to it (errors included) names the origin and exposes the headers a browser client
//! reads.

use crate::state::AppState;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::Method;
use actix_web::HttpResponse;

/// Response headers a page's script may read.
const EXPOSED: &str = "x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset, retry-after, x-request-id, \
                       x-switchyard-model, x-switchyard-overhead-us, x-switchyard-warnings, content-length, \
                       content-range, accept-ranges";
const METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
const HEADERS: &str = "authorization, content-type, x-api-key, idempotency-key, range";

/// The request's `Origin`, when it is one the gateway answers to.
pub fn allowed_origin(state: &AppState, headers: &HeaderMap) -> Option<HeaderValue> {
    let origins = &state.config.server.cors_allowed_origins;
    if origins.is_empty() {
        return None;
    }
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    origins.iter().any(|allowed| allowed == text).then(|| origin.clone())
}

/// Whether a request is a CORS preflight.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a preflight from an allowed origin: no credentials needed, cached for ten minutes.
pub fn preflight(origin: HeaderValue) -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, METHODS))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, HEADERS))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
        .insert_header((header::VARY, "Origin"))
        .finish()
}

/// Names the allowed origin on an answer and exposes the headers a browser client reads.
pub fn decorate(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED));
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}
