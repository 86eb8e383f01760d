//! What can go wrong between the gateway and a provider, in terms the API layer maps onto its error table.

use std::time::Duration;

/// The phase of an upstream call that ran out of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutPhase {
    Connect,
    FirstByte,
    BetweenChunks,
    Total,
}

impl TimeoutPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutPhase::Connect => "connect",
            TimeoutPhase::FirstByte => "first byte",
            TimeoutPhase::BetweenChunks => "gap between chunks",
            TimeoutPhase::Total => "total",
        }
    }
}

#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum ProviderError {
    /// The provider has no credentials configured; `variable` is what the operator must set.
    #[error("provider `{provider}` is not configured: set {variable}")]
    Unavailable { provider: String, variable: String },
    /// The provider answered 429.
    #[error("provider `{provider}` is rate limiting requests (upstream 429): {message}")]
    RateLimited { provider: String, retry_after: Option<Duration>, message: String },
    /// The provider refused the request as invalid (upstream 400/404/413/422).
    #[error("provider `{provider}` rejected the request: {message}")]
    Rejected { provider: String, status: u16, message: String },
    /// The provider refused our credentials (upstream 401/403): an operator problem, not the caller's.
    #[error("provider `{provider}` rejected the gateway's credentials (upstream {status}); check {variable}")]
    BadCredentials { provider: String, status: u16, variable: String },
    /// The provider failed (5xx, 529, or an error event inside a stream).
    #[error("provider `{provider}` failed (upstream {status}): {message}")]
    Upstream { provider: String, status: u16, message: String },
    /// The connection could not be made or broke.
    #[error("provider `{provider}` connection failed: {message}")]
    Connection { provider: String, message: String },
    #[error("provider `{provider}` timed out ({} timeout)", phase.as_str())]
    Timeout { provider: String, phase: TimeoutPhase },
    /// The provider sent something that does not follow its own wire format.
    #[error("provider `{provider}` sent a malformed response: {message}")]
    Protocol { provider: String, message: String },
}

impl ProviderError {
    /// Whether trying again (the same or another upstream) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. }
                | ProviderError::Upstream { .. }
                | ProviderError::Connection { .. }
                | ProviderError::Timeout { .. }
        )
    }

    /// A low-cardinality name for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Unavailable { .. } => "unavailable",
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::Rejected { .. } => "rejected",
            ProviderError::BadCredentials { .. } => "bad_credentials",
            ProviderError::Upstream { .. } => "upstream",
            ProviderError::Connection { .. } => "connection",
            ProviderError::Timeout { .. } => "timeout",
            ProviderError::Protocol { .. } => "protocol",
        }
    }
}
