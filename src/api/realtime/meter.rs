//! Billing by the block, for the sockets the gateway keeps to ElevenLabs (relayed in `elevenlabs.rs`, and a composed
//! session's speech-to-text in `composed/listener.rs`). A block's cost is held before the frames that use it go
//! upstream, and settled (one usage record each) when full or at the end, so the wallet is never overspent and
//! nothing is charged twice. A meter dropped with a block unsettled charges what it used, as it stood.

use crate::api::call::{Answered, Billed, CallSpec, Measured};
use crate::api::errors::ApiError;
use crate::auth::Principal;
use crate::state::AppState;
use actix_web::{web, HttpRequest};
use std::time::Instant;
use switchyard_actors::engine::pool::Outcome;
use switchyard_actors::{Credits, ModelSpec};

/// What a meter counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Characters of text (speech), at the model's per-character price.
    Characters,
    /// Milliseconds of audio (transcription), at the model's per-second price.
    AudioMillis,
}

impl Unit {
    fn cost(self, model: &ModelSpec, units: u64) -> Credits {
        match self {
            Unit::Characters => model.pricing.characters_cost(units),
            Unit::AudioMillis => model.pricing.audio_cost(units),
        }
    }

    fn id_prefix(self) -> &'static str {
        match self {
            Unit::Characters => "speech",
            Unit::AudioMillis => "stt",
        }
    }
}

/// A socket's bill: the block held now, and what it has used.
pub struct Meter {
    state: web::Data<AppState>,
    req: HttpRequest,
    principal: Principal,
    model: ModelSpec,
    unit: Unit,
    block: u64,
    billed: Option<Billed>,
    used: u64,
    started: Instant,
    /// Full blocks kept unsettled (with when they were held) until `settle` or `release`: set by `keep_full_blocks`.
    full: Vec<(Billed, Instant)>,
    keep_full: bool,
}

impl Meter {
    /// Holds the first block (`block` units) of `model`, for `principal`.
    pub async fn begin(
        state: &web::Data<AppState>,
        req: &HttpRequest,
        principal: &Principal,
        model: &ModelSpec,
        unit: Unit,
        block: u64,
    ) -> Result<Meter, ApiError> {
        let mut meter = Meter {
            state: state.clone(),
            req: req.clone(),
            principal: principal.clone(),
            model: model.clone(),
            unit,
            block: block.max(1),
            billed: None,
            used: 0,
            started: Instant::now(),
            full: Vec::new(),
            keep_full: false,
        };
        meter.hold().await?;
        Ok(meter)
    }

    /// Full blocks are kept held, not settled, until `settle` (all charged) or `release` (none): for what may still
    /// be given back whole (a composed turn whose transcript falls back to HTTP).
    pub fn keep_full_blocks(mut self) -> Meter {
        self.keep_full = true;
        self
    }

    async fn hold(&mut self) -> Result<(), ApiError> {
        let spec = CallSpec {
            principal: &self.principal,
            model: &self.model,
            use_fallback: false,
            reporting_group: None,
            endpoint: "/v1/realtime",
            id_prefix: self.unit.id_prefix(),
            started: Instant::now(),
            task: None,
        };
        let (unit, block) = (self.unit, self.block);
        let billed = Billed::begin(&self.state, &self.req, &spec, spec.new_id(), 0, |m| unit.cost(m, block)).await?;
        self.billed = Some(billed);
        self.used = 0;
        self.started = Instant::now();
        Ok(())
    }

    /// Counts `units` against the block, settling (or keeping) it and holding the next when it is full.
    pub async fn take(&mut self, mut units: u64) -> Result<(), ApiError> {
        while self.used + units > self.block {
            units -= self.block - self.used;
            self.used = self.block;
            if self.keep_full {
                if let Some(billed) = self.billed.take() {
                    self.full.push((billed, self.started));
                }
            } else {
                self.settle_current().await;
            }
            self.hold().await?;
        }
        self.used += units;
        Ok(())
    }

    fn answered(&self, started: Instant) -> Answered {
        Answered { model: self.model.clone(), attempts: 1, fallback: None, upstream: started.elapsed() }
    }

    /// Charges one block for `units` (a block that used nothing is released); answers its id and charge.
    async fn settle_one(&self, mut billed: Billed, units: u64, started: Instant) -> Option<(String, Credits)> {
        if units == 0 {
            billed.fail("ok");
            return None;
        }
        let cost = self.unit.cost(&self.model, units);
        let measured = Measured { units, ..Default::default() };
        match billed.settle_as(&self.answered(started), cost, measured, "ok", Outcome::Success).await {
            Ok(metadata) => Some((billed.id().to_owned(), metadata.credits_charged)),
            Err(e) => {
                tracing::warn!(error = %e.detail.message, "could not settle a socket's block");
                None
            }
        }
    }

    async fn settle_current(&mut self) -> Option<(String, Credits)> {
        let billed = self.billed.take()?;
        self.settle_one(billed, self.used, self.started).await
    }

    /// Charges every block for what it used. Answers the first record's id and the credits charged in all.
    pub async fn settle(&mut self) -> Option<(String, Credits)> {
        let mut charged: Option<(String, Credits)> = None;
        let mut add = |one: Option<(String, Credits)>| {
            if let Some((id, credits)) = one {
                match charged.as_mut() {
                    Some((_, total)) => *total = Credits(total.0 + credits.0),
                    None => charged = Some((id, credits)),
                }
            }
        };
        for (billed, started) in std::mem::take(&mut self.full) {
            add(self.settle_one(billed, self.block, started).await);
        }
        add(self.settle_current().await);
        charged
    }

    /// Ends the bill with nothing charged (zero-credit records with `status` say why).
    pub fn release(&mut self, status: &str) {
        for (mut billed, _) in self.full.drain(..) {
            billed.fail(status);
        }
        if let Some(mut billed) = self.billed.take() {
            billed.fail(status);
        }
    }
}

impl Drop for Meter {
    /// A socket whose task ended without settling (the runtime stopping it) is charged what it used, once.
    fn drop(&mut self) {
        let mut left: Vec<(Billed, u64)> = self.full.drain(..).map(|(b, _)| (b, self.block)).collect();
        left.extend(self.billed.take().map(|b| (b, self.used)));
        for (mut billed, units) in left {
            if units == 0 {
                billed.fail("ok");
                continue;
            }
            let measured = Measured { units, ..Default::default() };
            billed.settle_detached(self.unit.cost(&self.model, units), measured, "abandoned", Outcome::Neutral);
        }
    }
}
