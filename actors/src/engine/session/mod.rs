//! `Session`: one per API key, made on first use, retired after a while idle. It enforces the workspace plan
//! exactly: requests per minute, concurrent requests and tokens per minute. Admission hands out a `Permit`, an RAII
//! guard that gives the concurrency slot back when dropped. A session is a small state behind its own lock, so
//! admission runs on the request's own thread, whichever worker that is: no message, no wake-up of another thread,
//! and the keys' sessions scale with the workers (a key's lock is held for a few counter updates).
//!
//! Several gateways share their keys' counters (`shared`, Redis): admission then asks the shared counters, and the
//! session keeps only what cannot break exactness: a key whose requests per minute are spent is refused locally
//! until its window ends (the count of a window never goes down).

mod shared;

pub use shared::{Return, SharedGrant, SharedLimits};

use super::metrics::EngineMetrics;
use super::supervise::{guarded, lock};
use dashmap::DashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
/// The plan a key is held to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub requests_per_minute: u32,
    pub concurrent_requests: u32,
    pub tokens_per_minute: u64,
}

/// What the rate-limit headers report after an admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub limit: u32,
    pub remaining: u32,
    /// Unix seconds when the current window ends.
    pub reset: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    Requests {
        grant: Grant,
    },
    Concurrency {
        grant: Grant,
    },
    Tokens {
        grant: Grant,
    },
    /// The session could not be reached (restarting); the caller may retry.
    Unavailable,
    /// The shared counters could not be reached; the caller may retry.
    Unreachable,
}

impl Rejection {
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Requests { .. } => "rate_limit_exceeded",
            Rejection::Concurrency { .. } => "concurrency_limit_exceeded",
            Rejection::Tokens { .. } => "token_limit_exceeded",
            Rejection::Unavailable => "overloaded",
            Rejection::Unreachable => "limits_unreachable",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Admitted {
    pub grant: Grant,
    window: u64,
    slot: bool,
}

/// A shared admission's part of a permit: what goes back when it ends.
struct Held {
    shared: Arc<shared::Shared>,
    key: String,
    lease: Option<String>,
}

/// A shared admission under way. If its caller gives up while the question is out (the future dropped: a client
/// gone, a run's timeout), the lease it may have taken is given back, never renewed for as long as the gateway runs.
struct Asking(Option<Held>);

impl Asking {
    /// The admission was answered: what it took is the permit's to give back now.
    fn answered(mut self) -> Option<Held> {
        self.0.take()
    }
}

impl Drop for Asking {
    fn drop(&mut self) {
        if let Some(Held { shared, key, lease: Some(lease) }) = self.0.take() {
            shared.end(shared::Return { key, lease: Some(lease), window: 0, correction: None });
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCounters {
    pub requests: u32,
    pub tokens: u64,
    pub in_flight: u32,
}

struct SessionState {
    window_start: u64,
    counters: SessionCounters,
    last_used: Instant,
    /// Left the registry: a caller that still found it starts a fresh session.
    retired: bool,
    /// With shared counters: the key's requests per minute are spent until then, and the window's grant.
    spent: Option<(Instant, Grant)>,
}

/// One key's limits.
pub struct Session {
    state: Mutex<SessionState>,
}

impl SessionState {
    fn admit(&mut self, limits: Limits, tokens: u64, now: u64, slot: bool) -> Result<Admitted, Rejection> {
        if now >= self.window_start + 60 || now < self.window_start {
            self.window_start = now;
            self.counters.requests = 0;
            self.counters.tokens = 0;
        }
        let reset = self.window_start + 60;
        let grant = |requests: u32| Grant {
            limit: limits.requests_per_minute,
            remaining: limits.requests_per_minute.saturating_sub(requests),
            reset,
        };
        if self.counters.requests >= limits.requests_per_minute {
            return Err(Rejection::Requests { grant: grant(self.counters.requests) });
        }
        if slot && self.counters.in_flight >= limits.concurrent_requests {
            return Err(Rejection::Concurrency { grant: grant(self.counters.requests) });
        }
        if self.counters.tokens.saturating_add(tokens) > limits.tokens_per_minute {
            return Err(Rejection::Tokens { grant: grant(self.counters.requests) });
        }
        self.counters.requests += 1;
        self.counters.in_flight += u32::from(slot);
        self.counters.tokens += tokens;
        self.last_used = Instant::now();
        Ok(Admitted { grant: grant(self.counters.requests), window: self.window_start, slot })
    }

    /// With shared counters, only the concurrency this gateway's requests hold (for the idle sweep).
    fn admit_shared(&mut self, admitted: SharedGrant, slot: bool) -> Admitted {
        self.counters.in_flight += u32::from(slot);
        self.last_used = Instant::now();
        Admitted { grant: admitted.grant, window: admitted.window, slot }
    }

    fn release(&mut self, permit: &Permit) {
        if permit.held.is_some() {
            self.counters.in_flight -= u32::from(permit.admitted.slot).min(self.counters.in_flight);
            self.last_used = Instant::now();
            return;
        }
        if permit.admitted.slot {
            self.counters.in_flight = self.counters.in_flight.saturating_sub(1);
        }
        if let (Some(used), true) = (permit.tokens_used, permit.admitted.window == self.window_start) {
            self.counters.tokens = self.counters.tokens.saturating_sub(permit.tokens_reserved).saturating_add(used);
        }
        self.last_used = Instant::now();
    }
}

/// An admitted request's hold on its session: dropping it frees the concurrency slot.
pub struct Permit {
    session: Arc<Session>,
    registry: Weak<RegistryInner>,
    admitted: Admitted,
    tokens_reserved: u64,
    tokens_used: Option<u64>,
    held: Option<Held>,
}

impl Permit {
    pub fn grant(&self) -> Grant {
        self.admitted.grant
    }

    /// The tokens the request really used, to correct the tokens-per-minute reservation.
    pub fn record_tokens(&mut self, used: u64) {
        self.tokens_used = Some(used);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let permit = &*self;
        let state = &permit.session.state;
        match permit.registry.upgrade() {
            Some(registry) => {
                let _ = guarded("session", state, &registry.metrics.restarts, |s| s.release(permit), |_| ());
            }
            None => lock(state).release(permit),
        }
        if let Some(held) = self.held.take() {
            let correction = self.tokens_used.map(|used| used as i64 - self.tokens_reserved as i64);
            let window = self.admitted.window;
            held.shared.end(Return { key: held.key, lease: held.lease, window, correction });
        }
    }
}

struct RegistryInner {
    sessions: DashMap<String, Arc<Session>>,
    idle: Duration,
    metrics: EngineMetrics,
    shared: Option<Arc<shared::Shared>>,
}

/// Counters shared with other gateways: where they are, this gateway's name, how long a lease lives unrenewed.
pub struct SharedSetup {
    pub limits: Arc<dyn SharedLimits>,
    pub gateway: String,
    pub lease_for: Duration,
}

/// Finds or makes the session of a key; retires idle ones in the background.
#[derive(Clone)]
pub struct SessionRegistry {
    inner: Arc<RegistryInner>,
}

impl SessionRegistry {
    /// A registry whose sessions retire after `idle` without a request in flight. Call inside the runtime: it
    /// spawns the sweep that retires them (which ends when the registry is dropped).
    pub fn new(idle: Duration, metrics: EngineMetrics) -> Self {
        Self::with(idle, metrics, None)
    }

    /// A registry whose keys' counters are shared with other gateways when `shared` says where.
    pub fn with(idle: Duration, metrics: EngineMetrics, shared: Option<SharedSetup>) -> Self {
        let shared = shared.map(|s| shared::Shared::start(s.limits, &s.gateway, s.lease_for));
        let inner = Arc::new(RegistryInner { sessions: DashMap::new(), idle, metrics, shared });
        let weak = Arc::downgrade(&inner);
        let every = idle.min(Duration::from_secs(5)).max(Duration::from_millis(50));
        actix::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                SessionRegistry { inner }.sweep();
            }
        });
        SessionRegistry { inner }
    }

    /// Retires the sessions idle for `idle` with nothing in flight.
    fn sweep(&self) {
        let idle = self.inner.idle;
        let mut retired = 0;
        self.inner.sessions.retain(|_, session| {
            let mut state = lock(&session.state);
            let retire = state.counters.in_flight == 0 && state.last_used.elapsed() >= idle;
            state.retired |= retire;
            retired += i64::from(retire);
            !retire
        });
        self.inner.metrics.sessions.sub(retired);
    }

    fn session(&self, key: &str) -> Arc<Session> {
        if let Some(session) = self.inner.sessions.get(key) {
            return session.clone();
        }
        self.inner
            .sessions
            .entry(key.to_owned())
            .or_insert_with(|| {
                self.inner.metrics.sessions.inc();
                Arc::new(Session {
                    state: Mutex::new(SessionState {
                        window_start: 0,
                        counters: SessionCounters::default(),
                        last_used: Instant::now(),
                        retired: false,
                        spent: None,
                    }),
                })
            })
            .clone()
    }

    /// Admits one request for `key` under `limits`, reserving `tokens`.
    pub async fn admit(&self, key: &str, limits: Limits, tokens: u64) -> Result<Permit, Rejection> {
        self.admit_as(key, limits, tokens, true).await
    }

    /// Admits a call made inside a concurrency slot the caller already holds (a realtime session's response):
    /// it counts against the requests and tokens per minute, not again against the concurrency.
    pub async fn admit_within(&self, key: &str, limits: Limits, tokens: u64) -> Result<Permit, Rejection> {
        self.admit_as(key, limits, tokens, false).await
    }

    async fn admit_as(&self, key: &str, limits: Limits, tokens: u64, slot: bool) -> Result<Permit, Rejection> {
        let result = match &self.inner.shared {
            None => self.admit_local(key, limits, tokens, slot),
            Some(shared) => self.admit_shared(shared, key, limits, tokens, slot).await,
        };
        if let Err(rejection) = &result {
            self.inner.metrics.rejections.with_label_values(&[rejection.reason()]).inc();
        }
        result
    }

    fn permit(&self, session: Arc<Session>, admitted: Admitted, tokens: u64, held: Option<Held>) -> Permit {
        let registry = Arc::downgrade(&self.inner);
        Permit { session, registry, admitted, tokens_reserved: tokens, tokens_used: None, held }
    }

    fn admit_local(&self, key: &str, limits: Limits, tokens: u64, slot: bool) -> Result<Permit, Rejection> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        for _ in 0..3 {
            let session = self.session(key);
            let restarts = &self.inner.metrics.restarts;
            let admitted = guarded(
                "session",
                &session.state,
                restarts,
                |s| if s.retired { Err(Rejection::Unavailable) } else { s.admit(limits, tokens, now, slot) },
                |_| (),
            );
            match admitted {
                Some(Ok(admitted)) => return Ok(self.permit(session, admitted, tokens, None)),
                // Retired between the lookup and the lock: a fresh session takes over.
                Some(Err(Rejection::Unavailable)) => {}
                Some(Err(rejection)) => return Err(rejection),
                None => return Err(Rejection::Unavailable),
            }
        }
        Err(Rejection::Unavailable)
    }

    /// Admission by the shared counters; the local session only refuses a key whose minute is known to be spent.
    async fn admit_shared(
        &self,
        shared: &Arc<shared::Shared>,
        key: &str,
        limits: Limits,
        tokens: u64,
        slot: bool,
    ) -> Result<Permit, Rejection> {
        let spent = |session: &Arc<Session>| {
            let state = lock(&session.state);
            // Only under the same plan: a plan raised since the refusal asks the shared counters again.
            state
                .spent
                .filter(|(until, grant)| Instant::now() < *until && grant.limit == limits.requests_per_minute)
                .map(|(_, grant)| grant)
        };
        if let Some(grant) = spent(&self.session(key)) {
            return Err(Rejection::Requests { grant });
        }
        let lease = slot.then(|| shared.lease(key));
        let asking = Asking(Some(Held { shared: shared.clone(), key: key.to_owned(), lease: lease.clone() }));
        let asked = Instant::now();
        let answer = shared.limits.admit(key, limits, tokens, lease.as_deref(), shared.lease_for).await;
        let admitted = match answer {
            Ok(admitted) => admitted,
            // The question may have reached Redis and taken the lease: `asking` gives it back (or it expires).
            Err((Rejection::Unreachable, _)) => return Err(Rejection::Unreachable),
            Err((rejection, window_left)) => {
                // Refused: no lease was taken, so there is nothing to give back, only to stop renewing.
                drop(asking.answered());
                if let Some(lease) = &lease {
                    shared.forget(lease);
                }
                if let Rejection::Requests { grant } = rejection {
                    // Counted from when this gateway asked, so the local refusal never outlasts the shared window.
                    lock(&self.session(key).state).spent = Some((asked + window_left, grant));
                }
                return Err(rejection);
            }
        };
        let Some(held) = asking.answered() else { return Err(Rejection::Unavailable) };
        for _ in 0..3 {
            let session = self.session(key);
            let mut state = lock(&session.state);
            if state.retired {
                continue;
            }
            let admitted = state.admit_shared(admitted, slot);
            drop(state);
            return Ok(self.permit(session, admitted, tokens, Some(held)));
        }
        let session = self.session(key);
        Ok(self.permit(
            session,
            Admitted { grant: admitted.grant, window: admitted.window, slot: false },
            tokens,
            Some(held),
        ))
    }

    /// Leases this gateway holds in the shared counters (0 without them).
    pub fn shared_leases(&self) -> usize {
        self.inner.shared.as_ref().map_or(0, |s| s.live())
    }

    /// The session's counters, if it is alive.
    pub async fn inspect(&self, key: &str) -> Option<SessionCounters> {
        let session = self.inner.sessions.get(key).map(|s| s.clone())?;
        let counters = lock(&session.state).counters;
        Some(counters)
    }

    /// Injects a panic into a key's session (supervision tests): caught, counted, and the session serves on.
    pub fn crash(&self, key: &str) {
        if let Some(session) = self.inner.sessions.get(key).map(|s| s.clone()) {
            let restarts = &self.inner.metrics.restarts;
            let _ = guarded("session", &session.state, restarts, |_| panic!("injected panic"), |_| ());
        }
    }

    pub fn len(&self) -> usize {
        self.inner.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests;
