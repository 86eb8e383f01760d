//! What operators watch beside the traffic: error answers by workspace and code, the gateway's build, its
//! process (CPU, memory, open files), and gauges read when Prometheus scrapes (wallets, the usage journal's
//! backlog, the media store, vector points).

use prometheus::{GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct Operators {
    /// Every error answer, by workspace (`_none` when the caller was not identified) and API.md code.
    pub api_errors: IntCounterVec,
    /// Committed balance and credits held right now, for the workspaces with a label of their own.
    pub wallet_balance: GaugeVec,
    pub wallet_reserved: GaugeVec,
    /// Usage records settled but not yet in the store.
    pub journal_pending: IntGauge,
    pub media_bytes: IntGauge,
    pub media_objects: IntGauge,
    pub vector_points: IntGaugeVec,
    /// The process's own collector (`process_*`, unprefixed, as every exporter names them).
    pub process: Registry,
}

impl Operators {
    /// `gateway`: this gateway's instance id (several gateways on one database tell themselves apart by it).
    pub fn new(registry: &Registry, gateway: &str) -> Result<Self, prometheus::Error> {
        let api_errors = IntCounterVec::new(
            Opts::new("api_errors_total", "Error answers by workspace and error code"),
            &["workspace", "code"],
        )?;
        let wallet_balance = GaugeVec::new(
            Opts::new("wallet_balance_credits", "A workspace's committed credit balance"),
            &["workspace"],
        )?;
        let wallet_reserved = GaugeVec::new(
            Opts::new("wallet_reserved_credits", "Credits a workspace has held for calls in flight"),
            &["workspace"],
        )?;
        let journal_pending =
            IntGauge::new("usage_journal_pending_records", "Usage records settled but not yet in the store")?;
        let media_bytes = IntGauge::new("media_store_bytes", "Bytes of media stored (uploads and outputs)")?;
        let media_objects = IntGauge::new("media_objects", "Media objects stored")?;
        let vector_points =
            IntGaugeVec::new(Opts::new("vector_points", "Points in each vector collection"), &["collection"])?;
        let build_info = IntGaugeVec::new(
            Opts::new("build_info", "The gateway's version and instance id (the value is always 1)"),
            &["version", "gateway"],
        )?;
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION"), gateway]).set(1);
        registry.register(Box::new(api_errors.clone()))?;
        registry.register(Box::new(wallet_balance.clone()))?;
        registry.register(Box::new(wallet_reserved.clone()))?;
        registry.register(Box::new(journal_pending.clone()))?;
        registry.register(Box::new(media_bytes.clone()))?;
        registry.register(Box::new(media_objects.clone()))?;
        registry.register(Box::new(vector_points.clone()))?;
        registry.register(Box::new(build_info))?;
        let process = Registry::new();
        process.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(Operators {
            api_errors,
            wallet_balance,
            wallet_reserved,
            journal_pending,
            media_bytes,
            media_objects,
            vector_points,
            process,
        })
    }
}
