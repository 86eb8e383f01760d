//! Limits shared by several gateways. A key's counters live in one place every gateway reaches (Redis, through
//! `SharedLimits`), and each admission is one atomic step there: the request counted against the minute's window,
//! the tokens reserved, and a concurrency lease taken. A lease expires unless its gateway renews it (every third of
//! its life, for all the leases it holds), so the slots of a gateway that was killed come back by themselves.

use super::{Grant, Limits, Rejection};
use dashmap::DashMap;
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// An admission as the shared counters gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedGrant {
    pub grant: Grant,
    /// The start (Unix seconds, the shared clock's) of the window the request was counted in.
    pub window: u64,
}

/// What a request gives back when it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Return {
    pub key: String,
    /// The concurrency lease, if the request took one.
    pub lease: Option<String>,
    pub window: u64,
    /// Tokens used minus tokens reserved, when the request reported its use.
    pub correction: Option<i64>,
}

/// Where shared limits are kept (Redis, in the edge's store).
pub trait SharedLimits: Send + Sync + 'static {
    /// Admits one request of `key` under `limits` reserving `tokens`; with a `lease`, also takes a concurrency slot
    /// under that name for `lease_for`. A refusal says how long the key's window has left (by the shared clock).
    fn admit(
        &self,
        key: &str,
        limits: Limits,
        tokens: u64,
        lease: Option<&str>,
        lease_for: Duration,
    ) -> BoxFuture<'static, Result<SharedGrant, (Rejection, Duration)>>;

    /// Gives back a request's lease and corrects its token reservation.
    fn release(&self, ended: Return) -> BoxFuture<'static, Result<(), String>>;

    /// Extends the leases named (key, lease) to `lease_for` from now.
    fn renew(&self, leases: Vec<(String, String)>, lease_for: Duration) -> BoxFuture<'static, Result<(), String>>;

    /// Holds `amount` millicredits of a browser session's cap of `limit` if it allows them; the count begins at
    /// `spent` when the session has none yet and lives `ttl` (the token's life) past its last use.
    fn budget_hold(
        &self,
        session: &str,
        limit: i64,
        spent: i64,
        amount: i64,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<bool, String>>;

    /// Adds `delta` to a session's count (a hold settled for less, or given back).
    fn budget_adjust(&self, session: &str, delta: i64) -> BoxFuture<'static, Result<(), String>>;
}

/// The shared limits and the leases this gateway holds in them.
pub(super) struct Shared {
    pub(super) limits: Arc<dyn SharedLimits>,
    pub(super) lease_for: Duration,
    prefix: String,
    next: AtomicU64,
    /// Live leases: lease → key.
    live: DashMap<String, String>,
}

impl Shared {
    /// The shared limits with leases named after `gateway` that last `lease_for`; spawns the renewal (which ends
    /// when the returned value is dropped).
    pub(super) fn start(limits: Arc<dyn SharedLimits>, gateway: &str, lease_for: Duration) -> Arc<Shared> {
        let shared = Arc::new(Shared {
            limits,
            lease_for,
            prefix: format!("{gateway}-{:x}-", rand::random::<u32>()),
            next: AtomicU64::new(0),
            live: DashMap::new(),
        });
        let weak: Weak<Shared> = Arc::downgrade(&shared);
        let every = (lease_for / 3).max(Duration::from_millis(100));
        actix::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { break };
                let leases: Vec<(String, String)> =
                    shared.live.iter().map(|e| (e.value().clone(), e.key().clone())).collect();
                if leases.is_empty() {
                    continue;
                }
                let renewal = shared.limits.renew(leases, shared.lease_for);
                drop(shared);
                if let Err(error) = renewal.await {
                    tracing::warn!(%error, "shared limits: the leases could not be renewed");
                }
            }
        });
        shared
    }

    /// A new lease's name for `key`, counted as live until `end`.
    pub(super) fn lease(&self, key: &str) -> String {
        let lease = format!("{}{}", self.prefix, self.next.fetch_add(1, Ordering::Relaxed));
        self.live.insert(lease.clone(), key.to_owned());
        lease
    }

    /// Stops renewing `lease` (its admission failed, or its request ended).
    pub(super) fn forget(&self, lease: &str) {
        self.live.remove(lease);
    }

    /// Gives back what a request held, in the background; a failure is logged (the lease then expires).
    pub(super) fn end(&self, ended: Return) {
        if let Some(lease) = &ended.lease {
            self.forget(lease);
        }
        let release = self.limits.release(ended);
        super::super::supervise::spawn_logged("giving back a request's shared lease", "it expires", release);
    }

    /// Leases this gateway holds now.
    pub(super) fn live(&self) -> usize {
        self.live.len()
    }
}
