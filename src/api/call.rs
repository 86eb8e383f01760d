//! The edge's side of a billed model call. The engine's `Call` owns the bookkeeping (admission, the hold, the
//! dispatch down the fallback chain, settlement); this module adds what is HTTP's: the caller's principal, the
//! rate-limit headers, the API.md errors, the upstream metrics, and the `metadata` every billed response carries.
//! Every surface that calls a model (chat, images, speech, embeddings, task runs, runs) begins here.

use super::errors::ApiError;
use super::limits;
use crate::auth::Principal;
use crate::state::AppState;
use actix_web::HttpRequest;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use switchyard_actors::engine::call::{self, Call, CallError};
use switchyard_actors::engine::dispatch::{Answer, Attempt, DispatchError};
use switchyard_actors::engine::ledger::{LedgerError, UsageRecord};
use switchyard_actors::engine::pool::{Outcome, PoolRejection};
use switchyard_actors::{ChatRequest, Credits, ModelSpec, ProviderError};
use utoipa::ToSchema;

pub use switchyard_actors::engine::call::{Answered, Measured};

/// Query parameters every model call accepts (000): body fields of the same name win.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct RoutingQuery {
    /// Kept on the usage record for segmented analytics.
    pub reporting_group: Option<String>,
    /// Go straight to the model's fallback.
    pub use_fallback_model: Option<bool>,
}

/// `reporting_group`: 1 to 128 printable characters.
pub fn check_reporting_group(group: Option<String>) -> Result<Option<String>, ApiError> {
    match group {
        Some(g) if g.is_empty() || g.chars().count() > 128 || g.chars().any(char::is_control) => {
            Err(ApiError::invalid_field("reporting_group", "`reporting_group` must be 1 to 128 printable characters"))
        }
        other => Ok(other),
    }
}

/// Who is calling which model, and how.
pub struct CallSpec<'a> {
    pub principal: &'a Principal,
    pub model: &'a ModelSpec,
    pub use_fallback: bool,
    pub reporting_group: Option<String>,
    pub endpoint: &'static str,
    /// The prefix of the usage record's id (`img`, `spc`, `stt`, `run`).
    pub id_prefix: &'static str,
    pub started: Instant,
    /// The task and revision a run is for (kept on the usage record).
    pub task: Option<(String, String)>,
}

impl CallSpec<'_> {
    /// A fresh id for a call of this spec.
    pub fn new_id(&self) -> String {
        crate::auth::new_id(self.id_prefix)
    }
}

/// What happened to the request: who answered, what it cost, whether a fallback served.
#[derive(Clone, Serialize, ToSchema)]
pub struct Metadata {
    /// The model that answered.
    pub model: String,
    pub provider: String,
    /// Credits charged for this request (at most 3 decimals).
    #[schema(value_type = f64)]
    pub credits_charged: Credits,
    pub latency_ms: u64,
    /// Upstream attempts made (retries and fallbacks included); the request is charged once.
    pub attempts: u32,
    pub fallback: FallbackOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reporting_group: Option<String>,
}

#[derive(Clone, Serialize, ToSchema)]
pub struct FallbackOut {
    pub used: bool,
    /// Why the primary model was not used: `manual`, `rate_limited`, `upstream`, `timeout`, `connection`,
    /// `unavailable`, `circuit_open`, `overloaded`, `protocol`, `bad_credentials`.
    pub reason: Option<String>,
    pub primary_model: String,
    pub model: String,
}

/// The time spent upstream, left on the response for the overhead measurement.
#[derive(Clone, Copy, Debug)]
pub struct UpstreamTime(pub Duration);

/// A billed call between its reservation and its settlement. Dropped unsettled (the client left, or an error),
/// its hold is released and nothing is charged.
pub struct Billed {
    call: Call,
    primary: String,
    reporting_group: Option<String>,
    started: Instant,
}

/// A session's spending cap: made on its first call since the start, from what its usage records have charged.
async fn session_budget(
    state: &AppState,
    id: &str,
    max: i64,
    exp: i64,
) -> Result<std::sync::Arc<switchyard_actors::engine::budget::Budget>, ApiError> {
    let spent = if state.sessions.has_budget(id) {
        0
    } else {
        state.engine().flush_usage().await;
        state.store.session_spent(id).await.map_err(ApiError::store)?
    };
    Ok(state.sessions.budget(id, max, exp, || spent))
}

impl Billed {
    /// Admits the call (reserving `tokens` of the caller's tokens-per-minute) and reserves the most it can cost:
    /// `cost_of` the dearest model of its chain. `id` becomes the usage record's and the response's id.
    pub async fn begin(
        state: &AppState,
        req: &HttpRequest,
        spec: &CallSpec<'_>,
        id: String,
        tokens: u64,
        cost_of: impl Fn(&ModelSpec) -> Credits,
    ) -> Result<Billed, ApiError> {
        let principal = spec.principal;
        if !principal.may_run(&spec.model.name) {
            return Err(ApiError::model_not_allowed(&spec.model.name));
        }
        let session = match &principal.session {
            None => None,
            Some(claims) => Some(call::SessionSpend {
                id: claims.sid.clone(),
                user: claims.user.clone(),
                budget: match claims.max {
                    None => None,
                    Some(max) => Some(session_budget(state, &claims.sid, max, claims.exp).await?),
                },
            }),
        };
        let engine_spec = call::CallSpec {
            key_id: &principal.key_id,
            workspace_id: &principal.workspace_id,
            limits: limits::of(principal),
            model: spec.model,
            use_fallback: spec.use_fallback,
            reporting_group: spec.reporting_group.clone(),
            endpoint: spec.endpoint,
            id,
            started: spec.started,
            task: spec.task.clone(),
            session,
            allowed: principal.models.clone(),
            within_slot: principal.holds_slot,
        };
        match state.engine().begin(&state.catalogue, engine_spec, tokens, cost_of).await {
            Ok(call) => {
                limits::note(req, call.grant());
                Ok(Billed {
                    call,
                    primary: spec.model.name.clone(),
                    reporting_group: spec.reporting_group.clone(),
                    started: spec.started,
                })
            }
            Err(e) => Err(call_error(state, req, e)),
        }
    }

    /// Runs `attempt` down the chain. A failure releases the hold (recording the error) and maps onto API.md.
    pub async fn dispatch<A: Attempt>(
        &mut self,
        state: &AppState,
        spec: &CallSpec<'_>,
        attempt: &A,
    ) -> Result<(Answered, A::Output), ApiError> {
        let dispatched =
            self.call.dispatch(&state.catalogue, &state.providers, spec.model, spec.use_fallback, attempt).await;
        let (answered, output) = dispatched.map_err(|e| call_error_of(state, e))?;
        observe_upstream(state, &answered.model, answered.upstream);
        Ok((answered, output))
    }

    /// A chat, whole or streamed (a stream's upstream is reported when its settlement closes it).
    pub async fn dispatch_chat(
        &mut self,
        state: &AppState,
        spec: &CallSpec<'_>,
        request: &ChatRequest,
        stream: bool,
    ) -> Result<(Answered, Answer), ApiError> {
        let (catalogue, providers) = (&state.catalogue, &state.providers);
        let dispatched =
            self.call.dispatch_chat(catalogue, providers, spec.model, spec.use_fallback, request, stream).await;
        let (answered, answer) = dispatched.map_err(|e| call_error_of(state, e))?;
        observe_upstream(state, &answered.model, answered.upstream);
        Ok((answered, answer))
    }

    /// The usage record as it stands (for fields only the surface knows, such as time to first token).
    pub fn record(&mut self) -> &mut UsageRecord {
        &mut self.call.record
    }

    pub fn id(&self) -> &str {
        self.call.id()
    }

    /// Ends the call with nothing charged; the record says why (`error`, `cut`).
    pub fn fail(&mut self, status: &str) {
        self.call.fail(status);
    }

    /// Charges `cost` for what was `measured`; the usage record is committed before this returns. Answers the
    /// response's `metadata`.
    pub async fn settle(
        mut self,
        answered: &Answered,
        cost: Credits,
        measured: Measured,
    ) -> Result<Metadata, ApiError> {
        self.settle_as(answered, cost, measured, "ok", Outcome::Success).await
    }

    /// Settles with a status other than `ok` (a stream cut part way is charged for what it delivered).
    pub async fn settle_as(
        &mut self,
        answered: &Answered,
        cost: Credits,
        measured: Measured,
        status: &str,
        outcome: Outcome,
    ) -> Result<Metadata, ApiError> {
        let charged = self.call.settle_as(cost, measured, status, outcome).await.map_err(settle_error)?;
        Ok(self.metadata(answered, charged))
    }

    /// Charges without waiting: the client left part way and has no response to complete.
    pub fn settle_detached(&mut self, cost: Credits, measured: Measured, status: &str, outcome: Outcome) {
        self.call.settle_detached(cost, measured, status, outcome);
    }

    /// The response's `metadata` for a charge.
    pub fn metadata(&self, answered: &Answered, charged: Credits) -> Metadata {
        Metadata {
            model: answered.model.name.clone(),
            provider: answered.model.provider.clone(),
            credits_charged: charged,
            latency_ms: self.started.elapsed().as_millis() as u64,
            attempts: answered.attempts,
            fallback: FallbackOut {
                used: answered.fallback.is_some(),
                reason: answered.fallback.as_ref().map(|f| f.reason.clone()),
                primary_model: self.primary.clone(),
                model: answered.model.name.clone(),
            },
            reporting_group: self.reporting_group.clone(),
        }
    }
}

fn observe_upstream(state: &AppState, model: &ModelSpec, elapsed: Duration) {
    state.metrics.upstream_duration.with_label_values(&[&model.provider, &model.name]).observe(elapsed.as_secs_f64());
}

/// A call that did not go ahead, in API.md's terms; a refusal's rate-limit state goes on the response.
fn call_error(state: &AppState, req: &HttpRequest, e: CallError) -> ApiError {
    match e {
        CallError::Refused(rejection) => limits::refused(req, rejection),
        CallError::Insufficient { grant } | CallError::Unheld { grant, .. } => {
            limits::note(req, grant);
            call_error_of(state, e)
        }
        other => call_error_of(state, other),
    }
}

fn call_error_of(state: &AppState, e: CallError) -> ApiError {
    match e {
        CallError::NoFallback { model } => {
            ApiError::invalid_field("use_fallback_model", format!("Model {model} has no fallback model"))
        }
        CallError::Refused(_) => ApiError::overloaded("The caller's session is restarting; retry"),
        CallError::Insufficient { .. } => ApiError::insufficient_credits(),
        CallError::Unheld { error, .. } => ledger_error(error),
        CallError::Dispatch(e) => dispatch_error(state, e),
        e @ (CallError::Ledger(_) | CallError::Closed) => settle_error(e),
    }
}

/// The ledger's failure: 503 while the wallets' database cannot be reached (nothing was charged; retry), else 500.
fn ledger_error(error: LedgerError) -> ApiError {
    match error {
        LedgerError::Store(reason) => {
            tracing::warn!(%reason, "the wallets cannot be reached; the call is refused uncharged");
            ApiError::overloaded("The wallets cannot be written now; nothing was charged; retry")
        }
        other => ApiError::internal(format!("ledger: {other}")),
    }
}

/// A settlement that failed: the ledger could not take it, or the call was already settled. A write that failed
/// as the database went away may still have committed, so the client is not promised "nothing was charged".
fn settle_error(e: CallError) -> ApiError {
    match e {
        CallError::Ledger(LedgerError::Store(reason)) => {
            tracing::warn!(%reason, "the wallets cannot be reached; the call's settlement is left to the background");
            ApiError::overloaded(
                "The wallets cannot be written now: this call's charge is given back unless it was already \
                 recorded (see the usage records); retry",
            )
        }
        CallError::Ledger(e) => ledger_error(e),
        _ => ApiError::internal("hold already settled"),
    }
}

fn dispatch_error(state: &AppState, error: DispatchError) -> ApiError {
    match error {
        DispatchError::Provider(e) => upstream_error(state, e),
        DispatchError::Pool { provider, rejection } => match rejection {
            PoolRejection::Overloaded => {
                ApiError::overloaded(format!("Provider `{provider}` has as many requests in flight as it allows"))
            }
            PoolRejection::CircuitOpen => ApiError::overloaded(format!(
                "Provider `{provider}` is failing: its circuit breaker is open; retry shortly"
            )),
            PoolRejection::UnknownProvider => ApiError::internal(format!("unknown provider {provider}")),
        },
    }
}

/// An upstream failure, counted by provider and kind, in API.md's terms.
pub fn upstream_error(state: &AppState, e: ProviderError) -> ApiError {
    let provider = match &e {
        ProviderError::Unavailable { provider, .. }
        | ProviderError::RateLimited { provider, .. }
        | ProviderError::Rejected { provider, .. }
        | ProviderError::BadCredentials { provider, .. }
        | ProviderError::Upstream { provider, .. }
        | ProviderError::Connection { provider, .. }
        | ProviderError::Timeout { provider, .. }
        | ProviderError::Protocol { provider, .. } => provider.clone(),
    };
    state.metrics.upstream_errors.with_label_values(&[&provider, e.kind()]).inc();
    tracing::warn!(provider = %provider, kind = e.kind(), error = %e, "upstream call failed");
    ApiError::from(e)
}
