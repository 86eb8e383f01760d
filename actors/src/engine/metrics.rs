//! The engine's metrics: rejections, retries, fallbacks, circuit states, ledger latency, restarts, sessions, and
//! the money (billed calls and credits by workspace and model).

use super::ledger::UsageRecord;
use crate::credits::Credits;
use prometheus::{CounterVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};

/// The label value for what is past a label's budget.
pub const OTHER: &str = "_other";

/// The values one label may take in the export: the first `max` distinct values seen keep their own, the rest are
/// counted as `_other`, so a caller choosing new values (workspaces, reporting groups) cannot grow `/metrics`
/// without bound.
#[derive(Clone)]
pub struct LabelBudget {
    max: usize,
    seen: Arc<RwLock<HashSet<Box<str>>>>,
}

impl LabelBudget {
    pub fn new(max: usize) -> Self {
        LabelBudget { max, seen: Arc::default() }
    }

    /// `value`, or `_other` once `max` other values have been seen. The empty value is always itself.
    pub fn admit<'a>(&self, value: &'a str) -> &'a str {
        if value.is_empty() || self.seen.read().is_ok_and(|seen| seen.contains(value)) {
            return value;
        }
        let Ok(mut seen) = self.seen.write() else { return OTHER };
        if seen.contains(value) || seen.len() < self.max {
            seen.insert(value.into());
            value
        } else {
            OTHER
        }
    }

    /// The values that have their own label.
    pub fn admitted(&self) -> Vec<String> {
        self.seen.read().map(|seen| seen.iter().map(|v| v.to_string()).collect()).unwrap_or_default()
    }
}

/// How many values the labels that callers choose may take.
#[derive(Clone, Copy, Debug)]
pub struct LabelBounds {
    pub workspaces: usize,
    /// Each of reporting group, task and revision.
    pub values: usize,
}

impl Default for LabelBounds {
    fn default() -> Self {
        LabelBounds { workspaces: 100, values: 100 }
    }
}

/// Billed calls and their credits, counted where each hold ends (settled or released).
#[derive(Clone)]
pub struct MoneyMetrics {
    pub calls: IntCounterVec,
    pub reserved: CounterVec,
    pub charged: CounterVec,
    pub refunded: CounterVec,
    pub workspaces: LabelBudget,
    groups: LabelBudget,
    tasks: LabelBudget,
    revisions: LabelBudget,
    /// The label sets of `credits_charged_total`: each label is bounded, and so is their product.
    charged_series: LabelBudget,
}

/// The most label sets `credits_charged_total` exports; calls past it are counted with every label `_other`.
pub const CHARGED_SERIES_MAX: usize = 5_000;

/// The counters one hold's end adds to, resolved before the usage record is handed to the journal.
pub struct HoldEnd {
    calls: prometheus::IntCounter,
    reserved: prometheus::Counter,
    charged: prometheus::Counter,
    refunded: prometheus::Counter,
}

impl HoldEnd {
    /// Counts the call: `held` reserved, `charge` of it charged, the rest refunded.
    pub fn count(self, held: Credits, charge: Credits) {
        self.calls.inc();
        self.reserved.inc_by(held.as_f64());
        self.charged.inc_by(charge.as_f64());
        self.refunded.inc_by(Credits((held.0 - charge.0).max(0)).as_f64());
    }
}

impl MoneyMetrics {
    fn new(registry: &Registry, bounds: LabelBounds) -> Result<Self, prometheus::Error> {
        let calls = IntCounterVec::new(
            Opts::new("calls_total", "Billed calls ended, by workspace, model and usage-record status"),
            &["workspace", "model", "status"],
        )?;
        let reserved = CounterVec::new(
            Opts::new("credits_reserved_total", "Credits held for calls, counted when each hold ends"),
            &["workspace", "model"],
        )?;
        let charged = CounterVec::new(
            Opts::new("credits_charged_total", "Credits charged at settlement"),
            &["workspace", "model", "task", "revision", "reporting_group"],
        )?;
        let refunded = CounterVec::new(
            Opts::new("credits_refunded_total", "Credits held but not charged (failed calls, unspent holds)"),
            &["workspace", "model"],
        )?;
        registry.register(Box::new(calls.clone()))?;
        registry.register(Box::new(reserved.clone()))?;
        registry.register(Box::new(charged.clone()))?;
        registry.register(Box::new(refunded.clone()))?;
        Ok(MoneyMetrics {
            calls,
            reserved,
            charged,
            refunded,
            workspaces: LabelBudget::new(bounds.workspaces),
            groups: LabelBudget::new(bounds.values),
            tasks: LabelBudget::new(bounds.values),
            revisions: LabelBudget::new(bounds.values),
            charged_series: LabelBudget::new(CHARGED_SERIES_MAX),
        })
    }

    /// The counters a call with this record ends on.
    pub fn hold_end(&self, workspace_id: &str, record: &UsageRecord) -> HoldEnd {
        let workspace = self.workspaces.admit(workspace_id);
        let model = record.model.as_str();
        let task = self.tasks.admit(record.task.as_deref().unwrap_or(""));
        let revision = self.revisions.admit(record.revision.as_deref().unwrap_or(""));
        let group = self.groups.admit(record.reporting_group.as_deref().unwrap_or(""));
        let series = format!("{workspace}\u{1}{model}\u{1}{task}\u{1}{revision}\u{1}{group}");
        let charged = if self.charged_series.admit(&series) == OTHER {
            self.charged.with_label_values(&[OTHER; 5])
        } else {
            self.charged.with_label_values(&[workspace, model, task, revision, group])
        };
        HoldEnd {
            calls: self.calls.with_label_values(&[workspace, model, &record.status]),
            reserved: self.reserved.with_label_values(&[workspace, model]),
            charged,
            refunded: self.refunded.with_label_values(&[workspace, model]),
        }
    }
}

#[derive(Clone)]
pub struct EngineMetrics {
    pub rejections: IntCounterVec,
    pub retries: IntCounterVec,
    pub fallbacks: IntCounterVec,
    pub circuit_state: IntGaugeVec,
    pub ledger_latency: HistogramVec,
    pub restarts: IntCounterVec,
    pub sessions: prometheus::IntGauge,
    pub money: MoneyMetrics,
    /// Handles for the labels every request touches, resolved once.
    pub hot: HotMetrics,
}

#[derive(Clone)]
pub struct HotMetrics {
    pub reserve_seconds: prometheus::Histogram,
    pub settle_seconds: prometheus::Histogram,
}

const LEDGER_BUCKETS: &[f64] =
    &[0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25];

impl EngineMetrics {
    /// Builds the metrics and registers them (a registry with the `switchyard` prefix in production).
    pub fn new(registry: &Registry, bounds: LabelBounds) -> Result<Self, prometheus::Error> {
        let rejections = IntCounterVec::new(
            Opts::new("rejections_total", "Requests refused before any upstream call, by reason"),
            &["reason"],
        )?;
        let retries = IntCounterVec::new(Opts::new("retries_total", "Upstream retries by provider"), &["provider"])?;
        let fallbacks = IntCounterVec::new(
            Opts::new("fallbacks_total", "Requests served by a fallback model: from which model, to which, and why"),
            &["from_model", "to_model", "reason"],
        )?;
        let circuit_state = IntGaugeVec::new(
            Opts::new("circuit_state", "Circuit breaker per upstream: 0 closed, 1 half-open, 2 open"),
            &["provider", "upstream"],
        )?;
        let ledger_latency = HistogramVec::new(
            HistogramOpts::new("ledger_seconds", "Time to reserve and to settle (settle includes the usage commit)")
                .buckets(LEDGER_BUCKETS.to_vec()),
            &["operation"],
        )?;
        let restarts = IntCounterVec::new(
            Opts::new("actor_restarts_total", "Engine parts restarted after a panic, by part"),
            &["actor"],
        )?;
        // Each part's series exists from the start, at zero, so a dashboard shows "no restarts" rather than nothing.
        for part in ["session", "ledger", "pool", "revision_router"] {
            restarts.with_label_values(&[part]);
        }
        let sessions = prometheus::IntGauge::new("sessions_active", "API key sessions alive")?;
        registry.register(Box::new(rejections.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(fallbacks.clone()))?;
        registry.register(Box::new(circuit_state.clone()))?;
        registry.register(Box::new(ledger_latency.clone()))?;
        registry.register(Box::new(restarts.clone()))?;
        registry.register(Box::new(sessions.clone()))?;
        let money = MoneyMetrics::new(registry, bounds)?;
        let hot = HotMetrics {
            reserve_seconds: ledger_latency.with_label_values(&["reserve"]),
            settle_seconds: ledger_latency.with_label_values(&["settle"]),
        };
        Ok(EngineMetrics {
            hot,
            rejections,
            retries,
            fallbacks,
            circuit_state,
            ledger_latency,
            restarts,
            sessions,
            money,
        })
    }

    /// Metrics for tests, in a registry of their own.
    pub fn unregistered() -> Self {
        match Self::new(&Registry::new(), LabelBounds::default()) {
            Ok(m) => m,
            Err(e) => unreachable!("fresh registry refused metrics: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_budget_keeps_its_first_values_and_folds_the_rest() {
        let budget = LabelBudget::new(2);
        assert_eq!(budget.admit("a"), "a");
        assert_eq!(budget.admit("b"), "b");
        assert_eq!(budget.admit("c"), OTHER);
        assert_eq!(budget.admit("a"), "a");
        assert_eq!(budget.admit(""), "");
        let mut admitted = budget.admitted();
        admitted.sort();
        assert_eq!(admitted, ["a", "b"]);
    }
}
