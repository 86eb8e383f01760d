//! The engine: a `Session` per API key (limits), the `ProviderPool` (health, circuits) and the `BillingLedger`
//! (wallets, holds, the usage journal). Each is a small state behind its own lock, used on the request's own
//! thread: no message and no wake-up of another thread on a request's way (a cross-thread wake-up costs 70–85 µs on
//! a 2-core machine), and as many workers as there are cores share them exactly. A panic inside one is caught,
//! counted as a restart, and its state repaired (`supervise`). The `RevisionRouter` (task edits) stays an actor.

pub mod budget;
pub mod call;
pub mod dispatch;
pub mod journal;
pub mod ledger;
pub mod metrics;
pub mod pool;
pub mod router;
pub mod session;
pub mod supervise;

use crate::catalogue::Catalogue;
use crate::credits::Credits;
use crate::providers::ProviderSet;
use actix::{Addr, Supervisor};
use dispatch::RetryPolicy;
use ledger::Wallet;
use ledger::{BillingLedger, HoldId, LedgerError, LedgerStore, UsageRecord};
use metrics::EngineMetrics;
use pool::{BreakerConfig, PoolRejection, ProviderPool};
use session::SessionRegistry;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    pub session_idle: Duration,
    pub breaker: BreakerConfig,
    pub retry: RetryPolicy,
    pub provider_max_in_flight: u32,
    pub writer_capacity: usize,
    /// How often the journal is imported into the store.
    pub import_every: Duration,
    /// How often the store gets its upkeep (a WAL checkpoint).
    pub maintain_every: Duration,
}

/// What the engine starts from: the committed balances, the usage journal and the store behind it, the metrics, and
/// the tasks loaded at start.
pub struct Opening {
    pub wallets: Vec<(String, Credits)>,
    pub journal: journal::UsageJournal,
    pub store: Arc<dyn LedgerStore>,
    pub metrics: EngineMetrics,
    pub tasks: router::TaskSnapshot,
    /// Books shared with other gateways (PostgreSQL), or `None` to keep them in memory.
    pub shared: Option<Arc<dyn ledger::SharedWallets>>,
    /// Keys' counters shared with other gateways (Redis), or `None` to keep them in memory.
    pub limits: Option<session::SharedSetup>,
}

/// Handles to the engine's parts.
#[derive(Clone)]
pub struct Engine {
    pub sessions: SessionRegistry,
    pub ledger: BillingLedger,
    pub pool: ProviderPool,
    pub metrics: EngineMetrics,
    pub retry: RetryPolicy,
    /// The tasks as runs see them (read without a message).
    pub tasks: router::TaskSnapshot,
    /// Where task changes go.
    pub router: Addr<router::RevisionRouter>,
    journal: ledger::Journal,
    stored: tokio::sync::watch::Receiver<u64>,
    _importer: Arc<actix::Arbiter>,
}

impl Engine {
    /// Starts the engine: its background work (the sessions' sweep, the usage writer, the router) on the current
    /// arbiter, the journal's importer on a thread of its own.
    pub fn start(config: EngineConfig, catalogue: &Catalogue, providers: &ProviderSet, opening: Opening) -> Engine {
        let Opening { wallets, journal, store, metrics, tasks, shared, limits } = opening;
        let journal = ledger::Journal::new(journal);
        let importer = Arc::new(actix::Arbiter::new());
        let stored = ledger::spawn_importer(
            &importer.handle(),
            journal.clone(),
            store.clone(),
            config.import_every,
            config.maintain_every,
        );
        let writer = ledger::spawn_writer(store, config.writer_capacity);
        let ledger_metrics = metrics.clone();
        let ledger_journal = journal.clone();
        let mut ledger = BillingLedger::new(wallets, ledger_journal, writer, ledger_metrics);
        if let Some(shared) = shared {
            ledger = ledger.with_shared(shared);
        }
        let upstreams: Vec<(String, u32, usize)> = catalogue
            .providers
            .keys()
            .map(|name| {
                let count = providers.get(name).map_or(1, |p| p.upstream_count());
                (name.clone(), config.provider_max_in_flight, count)
            })
            .collect();
        let pool = ProviderPool::new(upstreams, config.breaker, metrics.clone());
        let sessions = SessionRegistry::with(config.session_idle, metrics.clone(), limits);
        let router_tasks = tasks.clone();
        let router_metrics = metrics.clone();
        let router = Supervisor::start(move |_| router::RevisionRouter::new(router_tasks, router_metrics));
        Engine {
            sessions,
            ledger,
            pool,
            metrics,
            retry: config.retry,
            tasks,
            router,
            journal,
            stored,
            _importer: importer,
        }
    }

    /// Waits (at most 5 s) until every usage record committed so far is in the store, for readers of the store.
    pub async fn flush_usage(&self) {
        let target = self.journal.appended();
        let mut stored = self.stored.clone();
        let _ = tokio::time::timeout(Duration::from_secs(5), stored.wait_for(|n| *n >= target)).await;
    }

    /// Usage records settled but not yet in the store.
    pub fn usage_backlog(&self) -> u64 {
        self.journal.appended().saturating_sub(*self.stored.borrow())
    }

    /// An upstream of `provider` for one attempt, preferring any not in `avoid` (those that just failed).
    pub fn pick(&self, provider: &str, avoid: &[usize]) -> Result<usize, PoolRejection> {
        self.pool.pick(provider, avoid)
    }

    pub async fn reserve(&self, workspace_id: &str, amount: Credits) -> Result<HoldId, LedgerError> {
        let started = Instant::now();
        let result = self.ledger.reserve(workspace_id, amount).await;
        self.metrics.hot.reserve_seconds.observe(started.elapsed().as_secs_f64());
        result
    }

    /// Settles and returns once the usage record is committed.
    pub async fn settle(&self, hold: HoldId, cost: Credits, record: UsageRecord) -> Result<Credits, LedgerError> {
        let started = Instant::now();
        let result = self.ledger.settle(hold, cost, record).await;
        self.metrics.hot.settle_seconds.observe(started.elapsed().as_secs_f64());
        result
    }

    /// Settles without waiting for the commit.
    pub fn settle_detached(&self, hold: HoldId, cost: Credits, record: UsageRecord) {
        self.ledger.settle_detached(hold, cost, record);
    }

    pub fn release(&self, hold: HoldId, record: Option<UsageRecord>) {
        self.ledger.release(hold, record);
    }

    /// A workspace's wallet as the ledger holds it now (balance, and what calls in flight hold).
    pub async fn wallet(&self, workspace_id: &str) -> Option<Wallet> {
        self.ledger.wallet(workspace_id).await
    }
}
