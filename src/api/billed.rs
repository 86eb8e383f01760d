//! One billed call to a non-token model (images, speech): admission, a reservation for the dearest model of the
//! chain, the dispatch through the pool, and settlement with its usage record. Chat has its own path (token
//! estimates, SSE); everything else shares this one, so the record and the `metadata` are built in one place.

use super::chat::{dispatch_error, now_millis, FallbackOut, HoldGuard, Metadata};
use super::errors::ApiError;
use super::limits;
use crate::auth::Principal;
use crate::state::AppState;
use actix_web::HttpRequest;
use std::time::Instant;
use switchyard_actors::engine::dispatch::{dispatch_with, Attempt, FallbackUsed, Served};
use switchyard_actors::engine::ledger::UsageRecord;
use switchyard_actors::engine::pool::Outcome;
use switchyard_actors::engine::session::Permit;
use switchyard_actors::engine::Engine;
use switchyard_actors::{Credits, ModelSpec};

/// Who is calling which model, and how.
pub struct CallSpec<'a> {
    pub principal: &'a Principal,
    pub model: &'a ModelSpec,
    pub use_fallback: bool,
    pub reporting_group: Option<String>,
    pub endpoint: &'static str,
    /// The prefix of the usage record's id (`img`, `spc`, `stt`).
    pub id_prefix: &'static str,
    pub started: Instant,
    /// The task and revision a run is for (kept on the usage record).
    pub task: Option<(String, String)>,
}

/// What the model that answered was, for the record and the response metadata.
#[derive(Clone)]
pub struct Answered {
    pub model: ModelSpec,
    pub attempts: u32,
    pub fallback: Option<FallbackUsed>,
}

/// A call between its reservation and its settlement. Dropped unsettled (the client left, or an error), its hold
/// is released and nothing is charged.
pub struct Billed {
    engine: Engine,
    guard: HoldGuard,
    pub record: UsageRecord,
    primary: String,
    reporting_group: Option<String>,
    started: Instant,
    _permit: Permit,
}

impl Billed {
    /// Admits the call and reserves the most it can cost: `cost_of` the dearest model of its chain.
    pub async fn begin(
        state: &AppState,
        req: &HttpRequest,
        spec: &CallSpec<'_>,
        cost_of: impl Fn(&ModelSpec) -> Credits,
    ) -> Result<Billed, ApiError> {
        let model = spec.model;
        if spec.use_fallback && model.fallback.is_empty() {
            return Err(ApiError::invalid_field(
                "use_fallback_model",
                format!("Model {} has no fallback model", model.name),
            ));
        }
        let engine = state.engine();
        let permit = limits::admit(state, req, spec.principal, 0).await?;
        let chain = (!spec.use_fallback)
            .then_some(model)
            .into_iter()
            .chain(model.fallback.iter().filter_map(|n| state.catalogue.model(n)));
        let most = chain.map(cost_of).max().unwrap_or(Credits::ZERO);
        let hold = super::chat::reserve(engine, &spec.principal.workspace_id, most).await?;
        let record = UsageRecord {
            id: crate::auth::new_id(spec.id_prefix),
            created_at: now_millis(),
            workspace_id: spec.principal.workspace_id.clone(),
            key_id: spec.principal.key_id.clone(),
            model: model.name.clone(),
            provider: model.provider.clone(),
            endpoint: spec.endpoint.into(),
            reporting_group: spec.reporting_group.clone(),
            primary_model: Some(model.name.clone()),
            task: spec.task.as_ref().map(|t| t.0.clone()),
            revision: spec.task.as_ref().map(|t| t.1.clone()),
            ..Default::default()
        };
        Ok(Billed {
            engine: engine.clone(),
            guard: HoldGuard { engine: engine.clone(), hold: Some(hold) },
            record,
            primary: model.name.clone(),
            reporting_group: spec.reporting_group.clone(),
            started: spec.started,
            _permit: permit,
        })
    }

    /// Runs `attempt` down the chain. A failure releases the hold (recording the error) and maps onto API.md.
    pub async fn dispatch<A: Attempt>(
        &mut self,
        state: &AppState,
        spec: &CallSpec<'_>,
        attempt: &A,
    ) -> Result<(Answered, A::Output), ApiError> {
        let upstream_started = Instant::now();
        let dispatched =
            dispatch_with(&self.engine, &state.catalogue, &state.providers, spec.model, spec.use_fallback, attempt)
                .await;
        match dispatched {
            Ok(Served { model, answer, lease, fallback, attempts }) => {
                lease.report(Outcome::Success);
                super::chat::observe_upstream(state, &model, upstream_started.elapsed());
                let answered = Answered { model, attempts, fallback };
                self.record.model = answered.model.name.clone();
                self.record.provider = answered.model.provider.clone();
                self.record.attempts = answered.attempts;
                self.record.fallback_used = answered.fallback.is_some();
                self.record.fallback_reason = answered.fallback.as_ref().map(|f| f.reason.clone());
                Ok((answered, answer))
            }
            Err(failed) => {
                self.record.attempts = failed.attempts;
                self.fail("error");
                Err(dispatch_error(state, failed.error))
            }
        }
    }

    /// Ends the call with nothing charged; the record says why (`error`, `cut`).
    pub fn fail(&mut self, status: &str) {
        self.record.status = status.into();
        self.record.latency_ms = self.started.elapsed().as_millis() as u64;
        if let Some(hold) = self.guard.take() {
            self.engine.release(hold, Some(self.record.clone()));
        }
    }

    /// Charges `cost` for `units` (characters, images, audio milliseconds) and `output_bytes`; the usage record is
    /// committed before this returns. Answers the response's `metadata`.
    pub async fn settle(
        mut self,
        answered: &Answered,
        cost: Credits,
        units: u64,
        output_bytes: u64,
    ) -> Result<Metadata, ApiError> {
        self.record.units = units;
        self.record.output_bytes = output_bytes;
        self.record.status = "ok".into();
        self.record.latency_ms = self.started.elapsed().as_millis() as u64;
        let hold = self.guard.take().ok_or_else(|| ApiError::internal("hold already settled"))?;
        let charged = self
            .engine
            .settle(hold, cost, self.record.clone())
            .await
            .map_err(|e| ApiError::internal(format!("ledger: {e}")))?;
        Ok(self.metadata(answered, charged))
    }

    /// Charges without waiting: the client left part way and has no response to complete.
    pub fn settle_detached(mut self, cost: Credits, units: u64, output_bytes: u64, status: &str) {
        self.record.units = units;
        self.record.output_bytes = output_bytes;
        self.record.status = status.into();
        self.record.latency_ms = self.started.elapsed().as_millis() as u64;
        if let Some(hold) = self.guard.take() {
            self.engine.settle_detached(hold, cost, self.record.clone());
        }
    }

    pub fn id(&self) -> &str {
        &self.record.id
    }

    fn metadata(&self, answered: &Answered, charged: Credits) -> Metadata {
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
