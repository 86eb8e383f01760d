//! The engine's metrics: rejections, retries, fallbacks, circuit states, ledger latency, restarts, sessions.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct EngineMetrics {
    pub rejections: IntCounterVec,
    pub retries: IntCounterVec,
    pub fallbacks: IntCounterVec,
    pub circuit_state: IntGaugeVec,
    pub ledger_latency: HistogramVec,
    pub restarts: IntCounterVec,
    pub sessions: prometheus::IntGauge,
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
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let rejections = IntCounterVec::new(
            Opts::new("rejections_total", "Requests refused before any upstream call, by reason"),
            &["reason"],
        )?;
        let retries = IntCounterVec::new(Opts::new("retries_total", "Upstream retries by provider"), &["provider"])?;
        let fallbacks = IntCounterVec::new(
            Opts::new("fallbacks_total", "Requests served by a fallback model, by primary model and reason"),
            &["primary_model", "reason"],
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
        let sessions = prometheus::IntGauge::new("sessions_active", "API key sessions alive")?;
        registry.register(Box::new(rejections.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(fallbacks.clone()))?;
        registry.register(Box::new(circuit_state.clone()))?;
        registry.register(Box::new(ledger_latency.clone()))?;
        registry.register(Box::new(restarts.clone()))?;
        registry.register(Box::new(sessions.clone()))?;
        let hot = HotMetrics {
            reserve_seconds: ledger_latency.with_label_values(&["reserve"]),
            settle_seconds: ledger_latency.with_label_values(&["settle"]),
        };
        Ok(EngineMetrics { hot, rejections, retries, fallbacks, circuit_state, ledger_latency, restarts, sessions })
    }

    /// Metrics for tests, in a registry of their own.
    pub fn unregistered() -> Self {
        match Self::new(&Registry::new()) {
            Ok(m) => m,
            Err(e) => unreachable!("fresh registry refused metrics: {e}"),
        }
    }
}
