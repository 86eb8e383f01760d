//! The Prometheus registry: request counts and durations, upstream time, gateway overhead, time to first token,
//! tokens, streams in flight and upstream errors. Labels stay low-cardinality (route patterns, model names).

mod operators;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
pub use switchyard_actors::engine::metrics::LabelBounds;

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub overhead: HistogramVec,
    pub ttft: HistogramVec,
    pub tokens: IntCounterVec,
    pub streams_in_flight: IntGauge,
    pub upstream_errors: IntCounterVec,
    /// Task runs by task, revision and outcome (`ok`, `fallback`, `error`): an A/B test on a dashboard.
    pub task_runs: IntCounterVec,
    pub task_run_duration: HistogramVec,
    /// Texts embedded, and the time one embedding call took (queueing included).
    pub embedded_texts: prometheus::IntCounter,
    pub embedding_duration: prometheus::Histogram,
    /// Vector store operations (index, search, delete) by outcome, and their time.
    pub vector_ops: IntCounterVec,
    pub vector_duration: HistogramVec,
    /// Realtime sockets open, and how each ended (`client`, `upstream`, `slow_consumer`, `expired`).
    pub realtime_open: IntGauge,
    pub realtime_closed: IntCounterVec,
    /// How long sessions lasted; time from `response.create` to a composed response's first audio; audio
    /// seconds in and out (`direction`); composed responses by how they ended (`completed`, `cancelled`,
    /// `failed`).
    pub realtime_duration: prometheus::Histogram,
    pub realtime_first_audio: prometheus::Histogram,
    pub realtime_audio_seconds: prometheus::CounterVec,
    pub realtime_responses: IntCounterVec,
    pub engine: switchyard_actors::engine::metrics::EngineMetrics,
    pub operators: operators::Operators,
}

const LATENCY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];
const OVERHEAD_BUCKETS: &[f64] =
    &[0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_15, 0.000_25, 0.000_5, 0.001, 0.0025, 0.005, 0.01, 0.05];

impl Metrics {
    pub fn new(bounds: LabelBounds, gateway: &str) -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("switchyard".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route, method and status"),
            &["route", "method", "status"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "Time from request to response head")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new("upstream_duration_seconds", "Time spent waiting on the provider")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["provider", "model"],
        )?;
        let overhead = HistogramVec::new(
            HistogramOpts::new("gateway_overhead_seconds", "Request time minus upstream time")
                .buckets(OVERHEAD_BUCKETS.to_vec()),
            &["route"],
        )?;
        let ttft = HistogramVec::new(
            HistogramOpts::new("time_to_first_token_seconds", "From request to the first streamed token")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["model"],
        )?;
        let tokens = IntCounterVec::new(
            Opts::new("tokens_total", "Tokens by model and direction (prompt, completion)"),
            &["model", "direction"],
        )?;
        let streams_in_flight = IntGauge::new("streams_in_flight", "SSE streams currently open")?;
        let upstream_errors = IntCounterVec::new(
            Opts::new("upstream_errors_total", "Provider failures by provider and kind"),
            &["provider", "kind"],
        )?;
        let task_runs = IntCounterVec::new(
            Opts::new("task_runs_total", "Task runs by task, revision and outcome (ok, fallback, error)"),
            &["task", "revision", "outcome"],
        )?;
        let task_run_duration = HistogramVec::new(
            HistogramOpts::new("task_run_duration_seconds", "Task run time by task and revision")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["task", "revision"],
        )?;
        let embedded_texts = prometheus::IntCounter::new("embedded_texts_total", "Texts embedded by the local model")?;
        let embedding_duration = prometheus::Histogram::with_opts(
            HistogramOpts::new("embedding_duration_seconds", "Time of one embedding call, queueing included")
                .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let vector_ops = IntCounterVec::new(
            Opts::new("vector_operations_total", "Vector store operations by kind and outcome"),
            &["operation", "outcome"],
        )?;
        let vector_duration = HistogramVec::new(
            HistogramOpts::new("vector_operation_duration_seconds", "Vector store time by operation")
                .buckets(OVERHEAD_BUCKETS.iter().chain(LATENCY_BUCKETS.iter().skip(4)).copied().collect()),
            &["operation"],
        )?;
        // Exported from the start, so dashboards have series before the first vector operation.
        for operation in ["index", "search", "delete"] {
            vector_duration.with_label_values(&[operation]);
            for outcome in ["ok", "error"] {
                vector_ops.with_label_values(&[operation, outcome]);
            }
        }
        registry.register(Box::new(embedded_texts.clone()))?;
        registry.register(Box::new(embedding_duration.clone()))?;
        registry.register(Box::new(vector_ops.clone()))?;
        registry.register(Box::new(vector_duration.clone()))?;
        registry.register(Box::new(task_runs.clone()))?;
        registry.register(Box::new(task_run_duration.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(overhead.clone()))?;
        registry.register(Box::new(ttft.clone()))?;
        registry.register(Box::new(tokens.clone()))?;
        registry.register(Box::new(streams_in_flight.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        let realtime_open = IntGauge::new("realtime_sessions_open", "Realtime WebSocket sessions open")?;
        let realtime_closed = IntCounterVec::new(
            Opts::new("realtime_sessions_closed_total", "Realtime sessions ended, by who ended them"),
            &["reason"],
        )?;
        registry.register(Box::new(realtime_open.clone()))?;
        registry.register(Box::new(realtime_closed.clone()))?;
        let realtime_duration = prometheus::Histogram::with_opts(
            HistogramOpts::new("realtime_session_duration_seconds", "How long realtime sessions lasted")
                .buckets(vec![1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0]),
        )?;
        let realtime_first_audio = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "realtime_time_to_first_audio_seconds",
                "From response.create to the first audio of a composed realtime response",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let realtime_audio_seconds = prometheus::CounterVec::new(
            Opts::new("realtime_audio_seconds_total", "Seconds of realtime audio, in from clients and out to them"),
            &["direction"],
        )?;
        let realtime_responses = IntCounterVec::new(
            Opts::new("realtime_responses_total", "Composed realtime responses by how they ended"),
            &["status"],
        )?;
        registry.register(Box::new(realtime_duration.clone()))?;
        registry.register(Box::new(realtime_first_audio.clone()))?;
        registry.register(Box::new(realtime_audio_seconds.clone()))?;
        registry.register(Box::new(realtime_responses.clone()))?;
        // Every series a dashboard shows exists from the start, at zero.
        for reason in ["client", "upstream", "slow_consumer", "expired"] {
            realtime_closed.with_label_values(&[reason]);
        }
        for direction in ["in", "out"] {
            realtime_audio_seconds.with_label_values(&[direction]);
        }
        for status in ["completed", "cancelled", "failed"] {
            realtime_responses.with_label_values(&[status]);
        }
        let engine = switchyard_actors::engine::metrics::EngineMetrics::new(&registry, bounds)?;
        let operators = operators::Operators::new(&registry, gateway)?;
        Ok(Metrics {
            engine,
            operators,
            registry,
            requests,
            request_duration,
            upstream_duration,
            overhead,
            ttft,
            tokens,
            streams_in_flight,
            upstream_errors,
            task_runs,
            task_run_duration,
            embedded_texts,
            embedding_duration,
            vector_ops,
            vector_duration,
            realtime_open,
            realtime_closed,
            realtime_duration,
            realtime_first_audio,
            realtime_audio_seconds,
            realtime_responses,
        })
    }

    pub fn observe_embedding(&self, texts: u64, elapsed: std::time::Duration) {
        self.embedded_texts.inc_by(texts);
        self.embedding_duration.observe(elapsed.as_secs_f64());
    }

    pub fn observe_vectors(&self, operation: &str, ok: bool, elapsed: std::time::Duration) {
        self.vector_ops.with_label_values(&[operation, if ok { "ok" } else { "error" }]).inc();
        self.vector_duration.with_label_values(&[operation]).observe(elapsed.as_secs_f64());
    }

    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        let mut families = self.registry.gather();
        families.extend(self.operators.process.gather());
        TextEncoder::new().encode(&families, &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }

    pub fn record_tokens(&self, model: &str, usage: &switchyard_actors::Usage) {
        self.tokens.with_label_values(&[model, "prompt"]).inc_by(usage.prompt_tokens);
        self.tokens.with_label_values(&[model, "completion"]).inc_by(usage.completion_tokens);
    }
}

/// Counts a stream as in flight for as long as it lives, however it ends.
pub struct StreamGauge(IntGauge);

impl StreamGauge {
    pub fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        StreamGauge(gauge.clone())
    }
}

impl Drop for StreamGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}
