//! `Session`: one per API key, made on first use, retired after a while idle. It enforces the workspace plan
//! exactly: requests per minute, concurrent requests and tokens per minute. Admission hands out a `Permit`, an RAII
//! guard that gives the concurrency slot back when dropped. A session is a small state behind its own lock, so
//! admission runs on the request's own thread, whichever worker that is: no message, no wake-up of another thread,
//! and the keys' sessions scale with the workers (a key's lock is held for a few counter updates).

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
}

impl Rejection {
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Requests { .. } => "rate_limit_exceeded",
            Rejection::Concurrency { .. } => "concurrency_limit_exceeded",
            Rejection::Tokens { .. } => "token_limit_exceeded",
            Rejection::Unavailable => "overloaded",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Admitted {
    pub grant: Grant,
    window: u64,
    slot: bool,
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

    fn release(&mut self, permit: &Permit) {
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
    }
}

struct RegistryInner {
    sessions: DashMap<String, Arc<Session>>,
    idle: Duration,
    metrics: EngineMetrics,
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
        let inner = Arc::new(RegistryInner { sessions: DashMap::new(), idle, metrics });
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
                    }),
                })
            })
            .clone()
    }

    /// Admits one request for `key` under `limits`, reserving `tokens`.
    pub fn admit(&self, key: &str, limits: Limits, tokens: u64) -> Result<Permit, Rejection> {
        self.admit_as(key, limits, tokens, true)
    }

    /// Admits a call made inside a concurrency slot the caller already holds (a realtime session's response):
    /// it counts against the requests and tokens per minute, not again against the concurrency.
    pub fn admit_within(&self, key: &str, limits: Limits, tokens: u64) -> Result<Permit, Rejection> {
        self.admit_as(key, limits, tokens, false)
    }

    fn admit_as(&self, key: &str, limits: Limits, tokens: u64, slot: bool) -> Result<Permit, Rejection> {
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
                Some(Ok(admitted)) => {
                    let registry = Arc::downgrade(&self.inner);
                    return Ok(Permit { session, registry, admitted, tokens_reserved: tokens, tokens_used: None });
                }
                // Retired between the lookup and the lock: a fresh session takes over.
                Some(Err(Rejection::Unavailable)) => {}
                Some(Err(rejection)) => {
                    self.inner.metrics.rejections.with_label_values(&[rejection.reason()]).inc();
                    return Err(rejection);
                }
                None => return Err(Rejection::Unavailable),
            }
        }
        Err(Rejection::Unavailable)
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
mod tests {
    use super::*;

    fn registry(idle: Duration) -> SessionRegistry {
        SessionRegistry::new(idle, EngineMetrics::unregistered())
    }

    const PLAN: Limits = Limits { requests_per_minute: 50, concurrent_requests: 1000, tokens_per_minute: 1_000_000 };

    #[actix::test]
    async fn admits_exactly_the_requests_per_minute_under_concurrency() {
        let sessions = registry(Duration::from_secs(60));
        let results: Vec<_> = (0..200).map(|_| sessions.admit("k", PLAN, 1)).collect();
        let admitted = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(admitted, 50);
        assert!(results.iter().filter_map(|r| r.as_ref().err()).all(|e| matches!(e, Rejection::Requests { .. })));
    }

    #[actix::test]
    async fn admission_from_many_threads_at_once_stays_exact() {
        let sessions = registry(Duration::from_secs(60));
        let plan = Limits { requests_per_minute: 1_000, concurrent_requests: 3, ..PLAN };
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let sessions = sessions.clone();
                std::thread::spawn(move || {
                    let (mut admitted, mut most_in_flight) = (0, 0);
                    for _ in 0..1_000 {
                        if let Ok(permit) = sessions.admit("k", plan, 1) {
                            admitted += 1;
                            let in_flight =
                                futures::executor::block_on(sessions.inspect("k")).map_or(0, |c| c.in_flight);
                            most_in_flight = most_in_flight.max(in_flight);
                            drop(permit);
                        }
                    }
                    (admitted, most_in_flight)
                })
            })
            .collect();
        let results: Vec<(u32, u32)> = threads.into_iter().map(|t| t.join().unwrap_or_default()).collect();
        assert_eq!(results.iter().map(|r| r.0).sum::<u32>(), 1_000, "exactly the requests per minute");
        assert!(results.iter().all(|r| r.1 <= 3), "never more in flight than the plan: {results:?}");
        assert_eq!(sessions.inspect("k").await.map(|c| c.in_flight), Some(0));
    }

    #[actix::test]
    async fn concurrency_slots_come_back_when_permits_drop() {
        let sessions = registry(Duration::from_secs(60));
        let plan = Limits { concurrent_requests: 2, ..PLAN };
        let a = sessions.admit("k", plan, 1).unwrap();
        let _b = sessions.admit("k", plan, 1).unwrap();
        assert!(matches!(sessions.admit("k", plan, 1), Err(Rejection::Concurrency { .. })));
        drop(a);
        assert!(sessions.admit("k", plan, 1).is_ok());
    }

    #[actix::test]
    async fn token_reservations_are_corrected_after_use() {
        let sessions = registry(Duration::from_secs(60));
        let plan = Limits { tokens_per_minute: 100, ..PLAN };
        let mut permit = sessions.admit("k", plan, 80).unwrap();
        assert!(matches!(sessions.admit("k", plan, 30), Err(Rejection::Tokens { .. })));
        permit.record_tokens(10);
        drop(permit);
        assert!(sessions.admit("k", plan, 80).is_ok());
        assert_eq!(sessions.inspect("k").await.unwrap().tokens, 90);
    }

    #[actix::test]
    async fn keys_are_limited_separately() {
        let sessions = registry(Duration::from_secs(60));
        let plan = Limits { requests_per_minute: 1, ..PLAN };
        assert!(sessions.admit("a", plan, 1).is_ok());
        assert!(sessions.admit("b", plan, 1).is_ok());
        assert!(sessions.admit("a", plan, 1).is_err());
    }

    #[actix::test]
    async fn a_panicking_session_is_restarted_and_serves_again() {
        let metrics = EngineMetrics::unregistered();
        let sessions = SessionRegistry::new(Duration::from_secs(60), metrics.clone());
        let _held = sessions.admit("k", PLAN, 1).unwrap();
        sessions.crash("k");
        assert_eq!(metrics.restarts.with_label_values(&["session"]).get(), 1);
        assert!(sessions.admit("k", PLAN, 1).is_ok());
        // The counters survived the restart.
        assert_eq!(sessions.inspect("k").await.unwrap().requests, 2);
    }

    #[actix::test]
    async fn idle_sessions_retire_and_come_back_fresh() {
        let sessions = registry(Duration::from_millis(60));
        drop(sessions.admit("k", PLAN, 1).unwrap());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(sessions.is_empty());
        assert!(sessions.admit("k", PLAN, 1).is_ok());
        assert_eq!(sessions.len(), 1);
    }
}
