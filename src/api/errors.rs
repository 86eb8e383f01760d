//! The one error envelope of API.md, and the one exhaustive map from engine errors to it.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use std::fmt;
use switchyard_actors::ProviderError;
use utoipa::ToSchema;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    InvalidRequestError,
    AuthenticationError,
    InsufficientCreditsError,
    PermissionError,
    NotFoundError,
    ConflictError,
    RateLimitError,
    UpstreamError,
    UnavailableError,
    ApiError,
}

/// `{"error": {"message", "type", "code", "param"}}`
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: ErrorType,
    pub code: &'static str,
    pub param: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: ErrorDetail,
    /// Seconds, for `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: ErrorType, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, detail: ErrorDetail { message: message.into(), kind, code, param: None }, retry_after: None }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.detail.param = Some(param.into());
        self
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.detail.message = message.into();
        self
    }

    pub fn code(&self) -> &'static str {
        self.detail.code
    }

    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorType::InvalidRequestError, code, message)
    }

    pub fn invalid_json(message: impl Into<String>) -> Self {
        ApiError::bad("invalid_json", message)
    }

    pub fn missing_field(field: &str) -> Self {
        ApiError::bad("missing_field", format!("Missing required field: {field}")).with_param(field)
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        ApiError::bad("invalid_field", message).with_param(field)
    }

    pub fn unknown_field(field: &str) -> Self {
        ApiError::bad("unknown_field", format!("Unknown field: {field}")).with_param(field)
    }

    /// The prompt and the output allowance do not fit the model's context window (OpenAI's code and wording).
    pub fn context_length_exceeded(model: &str, window: u32, prompt: u64, completion: u32) -> Self {
        ApiError::bad(
            "context_length_exceeded",
            format!(
                "This model's maximum context length is {window} tokens. However, you requested at least {} tokens \
                 ({prompt} in the messages, {completion} in the completion). Please reduce the length of the \
                 messages or the completion ({model}).",
                prompt + u64::from(completion)
            ),
        )
        .with_param("messages")
    }

    pub fn unsupported_model(model: &str) -> Self {
        ApiError::bad("unsupported_model", format!("Unsupported task type: {model}")).with_param("model")
    }

    pub fn invalid_scope(message: impl Into<String>) -> Self {
        ApiError::bad("invalid_scope", message).with_param("scope")
    }

    /// A field the platform manages (`resources`, `alias`, `collection`, `namespace`) or refuses (`hardware_tier`).
    pub fn forbidden_field(path: &str, message: impl Into<String>) -> Self {
        ApiError::bad("forbidden_field", message).with_param(path)
    }

    pub fn unsupported_mode(message: impl Into<String>) -> Self {
        ApiError::bad("unsupported_mode", message).with_param("mode")
    }

    /// A model whose provider is not configured (its key variable unset), with the reason.
    pub fn provider_unavailable(reason: String) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorType::UnavailableError, "provider_unavailable", reason)
    }

    /// The in-process embedding model is not loaded (its files are missing, or it failed to start).
    pub fn embeddings_unavailable(reason: &str) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::UnavailableError,
            "provider_unavailable",
            format!("Embedding models are unavailable ({reason}). Fetch them with `make models` and restart, or set SWITCHYARD__EMBEDDINGS__CACHE_DIR to where they are."),
        )
    }

    /// The request body stopped coming (`server.body_idle_secs`, `server.body_min_bytes_per_sec`).
    pub fn request_timeout() -> Self {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorType::InvalidRequestError,
            "request_timeout",
            "The request body stopped coming: send it without long pauses",
        )
    }

    /// A body that could not be read: 408 when the pace bound ended it, otherwise what `broke` makes of the error.
    pub fn body_broke(e: &actix_web::error::PayloadError, broke: impl FnOnce(String) -> ApiError) -> Self {
        if super::pace::is_timeout(e) {
            ApiError::request_timeout()
        } else {
            broke(e.to_string())
        }
    }

    pub fn payload_too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorType::InvalidRequestError,
            "payload_too_large",
            format!("Request body is larger than the limit of {limit} bytes"),
        )
    }

    pub fn unsupported_media_type(got: &str) -> Self {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorType::InvalidRequestError,
            "unsupported_media_type",
            format!("Unsupported Content-Type `{got}`: send application/json"),
        )
    }

    pub fn missing_api_key() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorType::AuthenticationError,
            "missing_api_key",
            "Missing API key: send it as `X-API-Key: KEY` or `Authorization: Bearer KEY`",
        )
    }

    /// Two credential headers of one kind (a client adding its own to a library's, say): which was meant is
    /// unknowable, so neither is used.
    pub fn ambiguous_api_key() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorType::AuthenticationError,
            "invalid_api_key",
            "More than one API key was sent (two `X-API-Key` or two `Authorization` headers): send exactly one",
        )
    }

    pub fn invalid_api_key() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorType::AuthenticationError,
            "invalid_api_key",
            "Invalid API key: it is unknown or has been revoked",
        )
    }

    pub fn invalid_token() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorType::AuthenticationError,
            "invalid_token",
            "Invalid session token: it was not signed by this gateway, was altered, or the key that made it is revoked",
        )
    }

    pub fn expired_token() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorType::AuthenticationError,
            "expired_token",
            "The session token has expired: get a new one from POST /api/v1/sessions",
        )
    }

    pub fn revoked_token() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorType::AuthenticationError,
            "revoked_token",
            "The session token was revoked",
        )
    }

    pub fn model_not_allowed(model: &str) -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorType::PermissionError,
            "model_not_allowed",
            format!("This key or session token may not run `{model}`"),
        )
        .with_param("model")
    }

    /// A session token where only the API key will do (minting tokens, the admin API).
    pub fn api_key_required(what: &str) -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorType::PermissionError,
            "api_key_required",
            format!("A session token cannot {what}: use the API key (server to server)"),
        )
    }

    pub fn invalid_signature() -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorType::PermissionError,
            "invalid_signature",
            "This media URL's signature is not valid: use the URL as the gateway gave it",
        )
    }

    pub fn expired_url() -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorType::PermissionError,
            "expired_url",
            "This media URL has expired: fetch it with your API key or session token, or ask for the media again",
        )
    }

    pub fn admin_only() -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorType::PermissionError,
            "admin_only",
            "This endpoint takes the operator's admin key, not a workspace API key",
        )
    }

    /// A 429 in the seed's wording, with `Retry-After`.
    pub fn rate_limited(code: &'static str, reset: u64, now: u64) -> Self {
        let when = time::OffsetDateTime::from_unix_timestamp(reset as i64)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_else(|| reset.to_string());
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorType::RateLimitError,
            code,
            format!("Rate limit exceeded. Reset at {when}"),
        );
        error.retry_after =
            Some(if code == "concurrency_limit_exceeded" { 1 } else { reset.saturating_sub(now).max(1) });
        error
    }

    pub fn insufficient_credits() -> Self {
        ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            ErrorType::InsufficientCreditsError,
            "insufficient_credits",
            "Insufficient credits for this operation",
        )
    }

    pub fn overloaded(message: impl Into<String>) -> Self {
        let mut error =
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorType::UnavailableError, "overloaded", message);
        error.retry_after = Some(1);
        error
    }

    pub fn idempotency_conflict(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, ErrorType::ConflictError, "idempotency_conflict", message)
    }

    /// A task run without a value for some of its template's variables; names every one.
    pub fn missing_variable(task: &str, missing: &[String]) -> Self {
        let list = missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ");
        ApiError::bad("missing_variable", format!("Task `{task}` needs these variables in `task_input`: {list}"))
            .with_param(format!("task_input.{}", missing.first().map(String::as_str).unwrap_or("")))
    }

    /// The model answered, but not in the form the task promises (after one repair attempt).
    pub fn invalid_model_output(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_GATEWAY, ErrorType::UpstreamError, "invalid_model_output", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, ErrorType::NotFoundError, "not_found", message)
    }

    pub fn method_not_allowed() -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorType::InvalidRequestError,
            "method_not_allowed",
            "Method not allowed on this path",
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!(%message, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::ApiError,
            "internal_error",
            "Internal error; the gateway's log has the details",
        )
    }

    pub fn store(e: sqlx::Error) -> Self {
        ApiError::internal(format!("database: {e}"))
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: self.detail.clone() }
    }
}

impl From<ProviderError> for ApiError {
    fn from(e: ProviderError) -> Self {
        let message = e.to_string();
        match e {
            ProviderError::Unavailable { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorType::UnavailableError,
                "provider_unavailable",
                message,
            ),
            ProviderError::RateLimited { retry_after, .. } => {
                let mut error =
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorType::UnavailableError, "overloaded", message);
                error.retry_after = Some(retry_after.map_or(1, |d| d.as_secs().max(1)));
                error
            }
            ProviderError::Rejected { status: 404, .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, ErrorType::UpstreamError, "provider_error", message)
            }
            // The gateway counts a prompt's tokens from below, so a provider may still find it too long: the
            // client gets the code the gateway's own check gives.
            ProviderError::Rejected { message: ref upstream, .. } if too_long(upstream) => {
                ApiError::bad("context_length_exceeded", message).with_param("messages")
            }
            ProviderError::Rejected { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, ErrorType::InvalidRequestError, "provider_rejected", message)
            }
            ProviderError::BadCredentials { .. }
            | ProviderError::Upstream { .. }
            | ProviderError::Connection { .. }
            | ProviderError::Protocol { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, ErrorType::UpstreamError, "provider_error", message)
            }
            ProviderError::Timeout { .. } => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, ErrorType::UpstreamError, "provider_timeout", message)
            }
        }
    }
}

/// Whether a provider's refusal says the prompt does not fit the model's context (OpenAI's and Mistral's
/// "maximum context length", Anthropic's "prompt is too long").
fn too_long(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("maximum context length") || message.contains("prompt is too long")
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.detail.code, self.detail.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after {
            response.insert_header(("Retry-After", seconds.to_string()));
        }
        response.json(self.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn upstream_failures_are_not_passed_off_as_ours() {
        let limited = ApiError::from(ProviderError::RateLimited {
            provider: "openai".into(),
            retry_after: Some(Duration::from_secs(7)),
            message: "slow down".into(),
        });
        assert_eq!(limited.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(limited.code(), "overloaded");
        assert_eq!(limited.retry_after, Some(7));
        let failed =
            ApiError::from(ProviderError::Upstream { provider: "openai".into(), status: 500, message: "x".into() });
        assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
        assert_eq!(failed.code(), "provider_error");
    }

    #[test]
    fn unavailable_names_the_variable() {
        let error =
            ApiError::from(ProviderError::Unavailable { provider: "openai".into(), variable: "OPENAI_API_KEY".into() });
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(error.detail.message.contains("OPENAI_API_KEY"));
    }

    #[test]
    fn envelope_has_the_four_fields() {
        let body = serde_json::to_value(ApiError::unsupported_model("invalid-model").body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {"message": "Unsupported task type: invalid-model",
                "type": "invalid_request_error", "code": "unsupported_model", "param": "model"}})
        );
    }
}
