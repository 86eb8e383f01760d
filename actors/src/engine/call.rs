//! One billed model call, from admission to settlement: the caller's `Session` admits it, the `BillingLedger`
//! holds the most it can cost, the `ProviderPool` serves it down its fallback chain, and the ledger settles what
//! it really cost with its usage record. Every surface (chat, images, speech, embeddings, runs, tasks) goes
//! through this one type, whole or streamed, so no surface does the bookkeeping by hand.
//!
//! However a call ends, its hold is settled or released exactly once: `settle` (the answer reached its client),
//! `fail` (nothing is charged), and `Drop` (the client left before either: the hold is released).

use super::budget::{Budget, BudgetHold};
use super::dispatch::{dispatch_with, Answer, Attempt, ChatAttempt, DispatchError, FallbackUsed};
use super::ledger::{HoldId, LedgerError, UsageRecord};
use super::pool::{Lease, Outcome};
use super::session::{Grant, Limits, Permit, Rejection};
use super::Engine;
use crate::catalogue::Catalogue;
use crate::chat::ChatRequest;
use crate::credits::Credits;
use crate::error::ProviderError;
use crate::providers::{Provider, ProviderSet};
use crate::vectors::now_millis;
use crate::ModelSpec;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Who calls which model, and how.
pub struct CallSpec<'a> {
    pub key_id: &'a str,
    pub workspace_id: &'a str,
    /// The caller's plan, enforced by its `Session`.
    pub limits: Limits,
    pub model: &'a ModelSpec,
    /// Go straight to the model's fallback chain.
    pub use_fallback: bool,
    pub reporting_group: Option<String>,
    pub endpoint: &'static str,
    /// The usage record's id (answered to the client as the response's id).
    pub id: String,
    pub started: Instant,
    /// The task and revision a run is for (kept on the usage record).
    pub task: Option<(String, String)>,
    /// The browser session the call is made under, if any.
    pub session: Option<SessionSpend>,
    /// The models the caller may run (`None`: all): the chain passes over the others.
    pub allowed: Option<Arc<[String]>>,
    /// Made inside a concurrency slot the caller already holds (a realtime session's responses).
    pub within_slot: bool,
}

/// A browser session's part in a call: kept on the usage record, and its spending cap held against.
#[derive(Clone, Debug)]
pub struct SessionSpend {
    pub id: String,
    pub user: Option<String>,
    pub budget: Option<Arc<Budget>>,
}

/// An attempt restricted to the models a caller may run.
struct Allowed<'a, A> {
    inner: &'a A,
    models: Option<&'a [String]>,
}

impl<A: Attempt> Attempt for Allowed<'_, A> {
    type Output = A::Output;

    async fn run(&self, provider: &Provider, upstream: usize, model: &ModelSpec) -> Result<A::Output, ProviderError> {
        self.inner.run(provider, upstream, model).await
    }

    fn serves(&self, model: &ModelSpec) -> bool {
        self.models.is_none_or(|m| m.contains(&model.name)) && self.inner.serves(model)
    }
}

/// Why a call did not go ahead, or failed upstream.
#[derive(Debug)]
pub enum CallError {
    /// `use_fallback` on a model that has no fallback.
    NoFallback { model: String },
    /// The caller's session refused it (rate, concurrency or tokens), or was restarting.
    Refused(Rejection),
    /// The wallet cannot cover the most the call can cost (`grant`: the session's state at admission).
    Insufficient { grant: Grant },
    /// The ledger could not hold the cost (it is restarting).
    Unheld { grant: Grant, error: LedgerError },
    /// The ledger failed (it is restarting, or its journal cannot be written).
    Ledger(LedgerError),
    /// Every model of the chain failed, or the pool refused.
    Dispatch(DispatchError),
    /// The call was already settled or released.
    Closed,
}

/// The model that answered, for the record and the response.
#[derive(Clone)]
pub struct Answered {
    pub model: ModelSpec,
    pub attempts: u32,
    pub fallback: Option<FallbackUsed>,
    /// Time spent upstream (retries and fallbacks included).
    pub upstream: Duration,
}

/// What a settled call used: the usage record's counts.
#[derive(Clone, Copy, Debug, Default)]
pub struct Measured {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Characters, images, audio milliseconds or inputs, for non-token models.
    pub units: u64,
    pub output_bytes: u64,
    /// Width × height of the images made.
    pub pixels: u64,
}

/// A call between its reservation and its settlement.
pub struct Call {
    engine: Engine,
    hold: Option<HoldId>,
    pub record: UsageRecord,
    permit: Permit,
    /// Admitted against the tokens-per-minute budget: the settlement corrects it with the tokens really used.
    counts_tokens: bool,
    /// A streamed answer's upstream, reported when the stream ends.
    lease: Option<Lease>,
    started: Instant,
    /// The session's cap and the millicredits held against it.
    budget: Option<BudgetHold>,
    allowed: Option<Arc<[String]>>,
}

impl Engine {
    /// Admits a call (reserving `tokens` of the caller's tokens-per-minute) and holds `cost_of` the dearest model
    /// of its chain.
    pub async fn begin(
        &self,
        catalogue: &Catalogue,
        spec: CallSpec<'_>,
        tokens: u64,
        cost_of: impl Fn(&ModelSpec) -> Credits,
    ) -> Result<Call, CallError> {
        let model = spec.model;
        if spec.use_fallback && model.fallback.is_empty() {
            return Err(CallError::NoFallback { model: model.name.clone() });
        }
        let admitted = if spec.within_slot {
            self.sessions.admit_within(spec.key_id, spec.limits, tokens).await
        } else {
            self.sessions.admit(spec.key_id, spec.limits, tokens).await
        };
        let permit = admitted.map_err(CallError::Refused)?;
        let allowed = spec.allowed.clone();
        let chain = (!spec.use_fallback)
            .then_some(model)
            .into_iter()
            .chain(model.fallback.iter().filter_map(|n| catalogue.model(n)))
            .filter(|m| allowed.as_deref().is_none_or(|a| a.contains(&m.name)));
        let most = chain.map(cost_of).max().unwrap_or(Credits::ZERO);
        // The session's cap first: a call it refuses holds nothing on the wallet.
        let budget = match spec.session.as_ref().and_then(|s| s.budget.clone()) {
            Some(budget) => match budget.hold(most.milli()).await {
                Ok(Some(held)) => Some(held),
                Ok(None) => {
                    self.metrics.rejections.with_label_values(&["session_credits"]).inc();
                    return Err(CallError::Insufficient { grant: permit.grant() });
                }
                Err(rejection) => return Err(CallError::Refused(rejection)),
            },
            None => None,
        };
        let hold = match self.reserve(spec.workspace_id, most).await {
            Ok(hold) => hold,
            Err(error) => {
                drop(budget);
                if let LedgerError::Insufficient { .. } = error {
                    self.metrics.rejections.with_label_values(&["insufficient_credits"]).inc();
                    return Err(CallError::Insufficient { grant: permit.grant() });
                }
                return Err(CallError::Unheld { grant: permit.grant(), error });
            }
        };
        let record = UsageRecord {
            id: spec.id,
            created_at: now_millis(),
            workspace_id: spec.workspace_id.to_owned(),
            key_id: spec.key_id.to_owned(),
            model: model.name.clone(),
            provider: model.provider.clone(),
            modality: model.modality.as_str().to_owned(),
            endpoint: spec.endpoint.to_owned(),
            reporting_group: spec.reporting_group,
            primary_model: Some(model.name.clone()),
            task: spec.task.as_ref().map(|t| t.0.clone()),
            revision: spec.task.map(|t| t.1),
            user: spec.session.as_ref().and_then(|s| s.user.clone()),
            session_id: spec.session.map(|s| s.id),
            ..Default::default()
        };
        Ok(Call {
            engine: self.clone(),
            hold: Some(hold),
            record,
            permit,
            counts_tokens: tokens > 0,
            lease: None,
            started: spec.started,
            budget,
            allowed,
        })
    }
}

impl Call {
    /// The caller's rate-limit state at admission.
    pub fn grant(&self) -> Grant {
        self.permit.grant()
    }

    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// Runs `attempt` down the chain of `model`. On success the upstream is reported healthy; on failure the
    /// hold is released (the record says `error`) and nothing is charged.
    pub async fn dispatch<A: Attempt>(
        &mut self,
        catalogue: &Catalogue,
        providers: &ProviderSet,
        model: &ModelSpec,
        use_fallback: bool,
        attempt: &A,
    ) -> Result<(Answered, A::Output), CallError> {
        let (answered, output, lease) = self.serve(catalogue, providers, model, use_fallback, attempt).await?;
        lease.report(Outcome::Success);
        Ok((answered, output))
    }

    /// A chat, whole or streamed. A whole answer's upstream is reported healthy now; a stream's when it ends
    /// (by the settlement that closes it).
    pub async fn dispatch_chat(
        &mut self,
        catalogue: &Catalogue,
        providers: &ProviderSet,
        model: &ModelSpec,
        use_fallback: bool,
        request: &ChatRequest,
        stream: bool,
    ) -> Result<(Answered, Answer), CallError> {
        let attempt = ChatAttempt { request, stream };
        let (answered, answer, lease) = self.serve(catalogue, providers, model, use_fallback, &attempt).await?;
        match answer {
            Answer::Whole(_) => lease.report(Outcome::Success),
            Answer::Stream { .. } => self.lease = Some(lease),
        }
        Ok((answered, answer))
    }

    async fn serve<A: Attempt>(
        &mut self,
        catalogue: &Catalogue,
        providers: &ProviderSet,
        model: &ModelSpec,
        use_fallback: bool,
        attempt: &A,
    ) -> Result<(Answered, A::Output, Lease), CallError> {
        let upstream_started = Instant::now();
        let allowed = self.allowed.clone();
        let attempt = Allowed { inner: attempt, models: allowed.as_deref() };
        match dispatch_with(&self.engine, catalogue, providers, model, use_fallback, &attempt).await {
            Ok(served) => {
                let answered = Answered {
                    model: served.model,
                    attempts: served.attempts,
                    fallback: served.fallback,
                    upstream: upstream_started.elapsed(),
                };
                let record = &mut self.record;
                record.model = answered.model.name.clone();
                record.provider = answered.model.provider.clone();
                record.attempts = answered.attempts;
                record.fallback_used = answered.fallback.is_some();
                record.fallback_reason = answered.fallback.as_ref().map(|f| f.reason.clone());
                Ok((answered, served.answer, served.lease))
            }
            Err(failed) => {
                self.record.attempts = failed.attempts;
                self.fail("error");
                Err(CallError::Dispatch(failed.error))
            }
        }
    }

    /// Charges `cost` for what was `measured` and waits until the usage record is committed: the response that
    /// reports the charge completes only after. Answers the credits charged.
    pub async fn settle(&mut self, cost: Credits, measured: Measured) -> Result<Credits, CallError> {
        self.settle_as(cost, measured, "ok", Outcome::Success).await
    }

    /// Settles with another status than `ok` (`cut`: a stream broke part way and is charged for what it sent).
    pub async fn settle_as(
        &mut self,
        cost: Credits,
        measured: Measured,
        status: &str,
        outcome: Outcome,
    ) -> Result<Credits, CallError> {
        let Some((hold, record)) = self.close(measured, status, outcome) else {
            return Err(CallError::Closed);
        };
        // The session's cap counts the cost before the charge is written: a settlement abandoned or failed part way
        // may have been charged, and the cap errs on the side of having been.
        self.settle_budget(cost);
        self.engine.settle(hold, cost, record).await.map_err(CallError::Ledger)
    }

    /// Charges without waiting: the client left part way and has no response to complete. Does nothing once the
    /// call is settled.
    pub fn settle_detached(&mut self, cost: Credits, measured: Measured, status: &str, outcome: Outcome) {
        if let Some((hold, record)) = self.close(measured, status, outcome) {
            self.settle_budget(cost);
            self.engine.settle_detached(hold, cost, record);
        }
    }

    /// Ends the call with nothing charged; the record says why (`error`, `cut`).
    pub fn fail(&mut self, status: &str) {
        self.record.status = status.into();
        self.record.latency_ms = self.started.elapsed().as_millis() as u64;
        if self.counts_tokens {
            self.permit.record_tokens(0);
        }
        if let Some(hold) = self.hold.take() {
            self.engine.release(hold, Some(self.record.clone()));
        }
        self.budget = None;
    }

    /// The session's hold becomes the cost charged.
    fn settle_budget(&mut self, cost: Credits) {
        if let Some(budget) = self.budget.take() {
            budget.settle(cost.milli());
        }
    }

    /// Takes the hold with the finished record: `None` once already settled.
    fn close(&mut self, measured: Measured, status: &str, outcome: Outcome) -> Option<(HoldId, UsageRecord)> {
        let hold = self.hold.take()?;
        if let Some(lease) = self.lease.take() {
            lease.report(outcome);
        }
        if self.counts_tokens {
            self.permit.record_tokens(measured.prompt_tokens + measured.completion_tokens);
        }
        // The call is over: its record leaves with the hold (only its id stays, for whoever still asks).
        let mut record = std::mem::take(&mut self.record);
        self.record.id.clone_from(&record.id);
        record.prompt_tokens = measured.prompt_tokens;
        record.completion_tokens = measured.completion_tokens;
        record.units = measured.units;
        record.pixels = measured.pixels;
        record.output_bytes = measured.output_bytes;
        record.status = status.to_owned();
        record.latency_ms = self.started.elapsed().as_millis() as u64;
        Some((hold, record))
    }
}

impl Drop for Call {
    /// A call dropped unsettled (the client left, or the handler returned an error) charges nothing.
    fn drop(&mut self) {
        if let Some(hold) = self.hold.take() {
            self.engine.release(hold, None);
        }
    }
}
