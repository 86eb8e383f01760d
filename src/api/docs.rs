//! The error rows the OpenAPI annotations share, one type per kind of route: a handler names the kinds it is
//! (`responses((status = 200, ...), Authenticated, JsonBody)`) and adds rows only for what is its own. A row the
//! handler writes itself replaces the shared one with the same status.

use std::collections::BTreeMap;
use utoipa::openapi::{Content, Ref, RefOr, Response, ResponseBuilder};
use utoipa::IntoResponses;

fn rows(rows: &[(&str, &str)]) -> BTreeMap<String, RefOr<Response>> {
    rows.iter()
        .map(|(status, codes)| {
            let body = Content::new(Some(Ref::from_schema_name("ErrorBody")));
            let response = ResponseBuilder::new().description(*codes).content("application/json", body).build();
            ((*status).to_owned(), RefOr::T(response))
        })
        .collect()
}

/// A route for API keys (and browser sessions): who is calling, and their session's limits.
pub struct Authenticated;

impl IntoResponses for Authenticated {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        rows(&[
            ("401", "missing_api_key, invalid_api_key"),
            ("429", "rate_limit_exceeded, concurrency_limit_exceeded, token_limit_exceeded"),
        ])
    }
}

/// A WebSocket route: every refusal comes before the upgrade, as plain HTTP.
pub struct SocketUpgrade;

impl IntoResponses for SocketUpgrade {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut answers = rows(&[
            ("401", "missing_api_key, invalid_api_key, invalid_token, expired_token, revoked_token"),
            ("402", "insufficient_credits: the wallet cannot cover the least the socket holds"),
            ("403", "model_not_allowed"),
            ("429", "rate_limit_exceeded, concurrency_limit_exceeded (the socket holds one concurrent request)"),
            ("502", "provider_error: the provider refused the connection"),
            ("503", "provider_unavailable"),
        ]);
        let switching = ResponseBuilder::new().description("Switching Protocols: the socket is open").build();
        answers.insert("101".to_owned(), RefOr::T(switching));
        answers
    }
}

/// A route with a JSON body.
pub struct JsonBody;

impl IntoResponses for JsonBody {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        rows(&[
            ("400", "invalid_json, missing_field, invalid_field, unknown_field"),
            ("408", "request_timeout: the body stopped coming"),
            ("413", "payload_too_large"),
            ("415", "unsupported_media_type"),
        ])
    }
}

/// A route that calls a model: billed, served by a provider.
pub struct ModelCall;

impl IntoResponses for ModelCall {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        rows(&[
            ("402", "insufficient_credits"),
            ("502", "provider_error"),
            ("503", "provider_unavailable, overloaded"),
            ("504", "provider_timeout"),
        ])
    }
}

/// A route that takes `Idempotency-Key`.
pub struct Idempotent;

impl IntoResponses for Idempotent {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        rows(&[("409", "idempotency_conflict")])
    }
}

/// An operator's route under `/admin/`.
pub struct AdminOnly;

impl IntoResponses for AdminOnly {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        rows(&[
            ("401", "missing_api_key, invalid_api_key"),
            ("403", "admin_only: a workspace key is not the admin key"),
            ("404", "not_found; also every admin route while SWITCHYARD_ADMIN_KEY is unset"),
        ])
    }
}

/// The `Idempotency-Key` header of a model call.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// Replays the first response for 24 h.
    #[serde(rename = "Idempotency-Key")]
    pub key: Option<String>,
}
