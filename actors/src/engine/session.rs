//! `Session`: one actor per API key, started on first use, retired after a while idle, restarted by its
//! supervisor. It enforces the workspace plan exactly: requests per minute, concurrent requests and tokens per
//! minute. Admission hands out a `Permit`, an RAII guard that gives the concurrency slot back when dropped.

use super::metrics::EngineMetrics;
use super::supervise::guarded;
use actix::{Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message, Supervised, Supervisor};
use dashmap::DashMap;
use std::sync::Arc;
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

/// Asks for one request's admission, reserving `tokens` of the tokens-per-minute budget.
#[derive(Message)]
#[rtype(result = "Result<Admitted, Rejection>")]
pub struct Admit {
    pub limits: Limits,
    pub tokens: u64,
    /// Unix seconds, from the caller's clock.
    pub now: u64,
    /// Takes a concurrency slot. A call made inside one its caller already holds (a realtime session's
    /// responses) counts against the rate and the tokens, not again against the concurrency.
    pub slot: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct Admitted {
    pub grant: Grant,
    window: u64,
    generation: u64,
    slot: bool,
}

/// Gives back a concurrency slot, and corrects the token reservation with what was used.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release {
    slot: bool,
    tokens_reserved: u64,
    tokens_used: Option<u64>,
    window: u64,
    generation: u64,
}

/// Makes the actor panic: for supervision tests.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

/// Reads the counters (tests and diagnostics).
#[derive(Message)]
#[rtype(result = "SessionCounters")]
pub struct Inspect;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCounters {
    pub requests: u32,
    pub tokens: u64,
    pub in_flight: u32,
}

pub struct Session {
    key: String,
    registry: SessionRegistry,
    window_start: u64,
    counters: SessionCounters,
    /// Changes when a session is created; releases from an earlier incarnation are ignored.
    generation: u64,
    last_used: Instant,
    retired: bool,
}

impl Session {
    fn admit(&mut self, msg: &Admit) -> Result<Admitted, Rejection> {
        if msg.now >= self.window_start + 60 || msg.now < self.window_start {
            self.window_start = msg.now;
            self.counters.requests = 0;
            self.counters.tokens = 0;
        }
        let limits = msg.limits;
        let reset = self.window_start + 60;
        let grant = |requests: u32| Grant {
            limit: limits.requests_per_minute,
            remaining: limits.requests_per_minute.saturating_sub(requests),
            reset,
        };
        if self.counters.requests >= limits.requests_per_minute {
            return Err(Rejection::Requests { grant: grant(self.counters.requests) });
        }
        if msg.slot && self.counters.in_flight >= limits.concurrent_requests {
            return Err(Rejection::Concurrency { grant: grant(self.counters.requests) });
        }
        if self.counters.tokens.saturating_add(msg.tokens) > limits.tokens_per_minute {
            return Err(Rejection::Tokens { grant: grant(self.counters.requests) });
        }
        self.counters.requests += 1;
        self.counters.in_flight += u32::from(msg.slot);
        self.counters.tokens += msg.tokens;
        self.last_used = Instant::now();
        let window = self.window_start;
        Ok(Admitted { grant: grant(self.counters.requests), window, generation: self.generation, slot: msg.slot })
    }

    fn release(&mut self, msg: &Release) {
        if msg.generation != self.generation {
            return;
        }
        if msg.slot {
            self.counters.in_flight = self.counters.in_flight.saturating_sub(1);
        }
        if let (Some(used), true) = (msg.tokens_used, msg.window == self.window_start) {
            self.counters.tokens = self.counters.tokens.saturating_sub(msg.tokens_reserved).saturating_add(used);
        }
        self.last_used = Instant::now();
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let idle = self.registry.inner.idle;
        ctx.run_interval(idle.min(Duration::from_secs(5)).max(Duration::from_millis(50)), move |act, ctx| {
            if act.retired {
                ctx.stop();
            } else if act.counters.in_flight == 0 && act.last_used.elapsed() >= idle {
                // Retire: leave the registry, answer any late message with `Unavailable` (the caller starts a
                // fresh session), and stop for good once nobody holds an address.
                act.retired = true;
                let me = ctx.address();
                act.registry.inner.sessions.remove_if(&act.key, |_, addr| *addr == me);
                act.registry.inner.metrics.sessions.dec();
                ctx.stop();
            }
        });
    }
}

impl Supervised for Session {
    fn restarting(&mut self, _: &mut Context<Self>) {
        if !self.retired {
            tracing::warn!("session restarting");
        }
    }
}

impl Handler<Admit> for Session {
    type Result = Result<Admitted, Rejection>;

    fn handle(&mut self, msg: Admit, ctx: &mut Context<Self>) -> Self::Result {
        self.registry.inner.metrics.hot.session_backlog.dec();
        if self.retired {
            return Err(Rejection::Unavailable);
        }
        let metrics = self.registry.inner.metrics.clone();
        guarded::<Self, _>("session", ctx, &metrics.restarts, || self.admit(&msg))
            .unwrap_or(Err(Rejection::Unavailable))
    }
}

impl Handler<Release> for Session {
    type Result = ();

    fn handle(&mut self, msg: Release, ctx: &mut Context<Self>) {
        let metrics = self.registry.inner.metrics.clone();
        let _ = guarded::<Self, _>("session", ctx, &metrics.restarts, || self.release(&msg));
    }
}

impl Handler<Crash> for Session {
    type Result = ();

    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        let metrics = self.registry.inner.metrics.clone();
        let _ = guarded::<Self, _>("session", ctx, &metrics.restarts, || panic!("injected panic"));
    }
}

impl Handler<Inspect> for Session {
    type Result = actix::MessageResult<Inspect>;

    fn handle(&mut self, _: Inspect, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(self.counters)
    }
}

/// An admitted request's hold on its session: dropping it frees the concurrency slot.
pub struct Permit {
    session: Addr<Session>,
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
        self.session.do_send(Release {
            slot: self.admitted.slot,
            tokens_reserved: self.tokens_reserved,
            tokens_used: self.tokens_used,
            window: self.admitted.window,
            generation: self.admitted.generation,
        });
    }
}

struct RegistryInner {
    sessions: DashMap<String, Addr<Session>>,
    arbiter: actix::ArbiterHandle,
    idle: Duration,
    metrics: EngineMetrics,
    generations: std::sync::atomic::AtomicU64,
}

/// Finds or starts the session of a key, on the engine's arbiter.
#[derive(Clone)]
pub struct SessionRegistry {
    inner: Arc<RegistryInner>,
}

impl SessionRegistry {
    pub fn new(arbiter: actix::ArbiterHandle, idle: Duration, metrics: EngineMetrics) -> Self {
        SessionRegistry {
            inner: Arc::new(RegistryInner {
                sessions: DashMap::new(),
                arbiter,
                idle,
                metrics,
                generations: std::sync::atomic::AtomicU64::new(1),
            }),
        }
    }

    fn session(&self, key: &str) -> Addr<Session> {
        if let Some(addr) = self.inner.sessions.get(key) {
            return addr.clone();
        }
        self.inner
            .sessions
            .entry(key.to_owned())
            .or_insert_with(|| {
                let registry = self.clone();
                let key = key.to_owned();
                let generation = self.inner.generations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.inner.metrics.sessions.inc();
                Supervisor::start_in_arbiter(&self.inner.arbiter, move |_| Session {
                    key,
                    registry,
                    window_start: 0,
                    counters: SessionCounters::default(),
                    generation,
                    last_used: Instant::now(),
                    retired: false,
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
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        for _ in 0..3 {
            let session = self.session(key);
            self.inner.metrics.hot.session_backlog.inc();
            match session.send(Admit { limits, tokens, now, slot }).await {
                Ok(Ok(admitted)) => {
                    return Ok(Permit { session, admitted, tokens_reserved: tokens, tokens_used: None });
                }
                Ok(Err(Rejection::Unavailable)) | Err(_) => {
                    // Retired or restarting: drop the stale address and try a fresh session.
                    self.inner.sessions.remove_if(key, |_, addr| *addr == session);
                }
                Ok(Err(rejection)) => {
                    self.inner.metrics.rejections.with_label_values(&[rejection.reason()]).inc();
                    return Err(rejection);
                }
            }
        }
        Err(Rejection::Unavailable)
    }

    /// The session's counters, if it is alive.
    pub async fn inspect(&self, key: &str) -> Option<SessionCounters> {
        let addr = self.inner.sessions.get(key).map(|a| a.clone())?;
        addr.send(Inspect).await.ok()
    }

    /// Injects a panic into a key's session (supervision tests).
    pub fn crash(&self, key: &str) {
        if let Some(addr) = self.inner.sessions.get(key) {
            addr.do_send(Crash);
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
        SessionRegistry::new(actix::Arbiter::current(), idle, EngineMetrics::unregistered())
    }

    const PLAN: Limits = Limits { requests_per_minute: 50, concurrent_requests: 1000, tokens_per_minute: 1_000_000 };

    #[actix::test]
    async fn admits_exactly_the_requests_per_minute_under_concurrency() {
        let sessions = registry(Duration::from_secs(60));
        let attempts = (0..200).map(|_| sessions.admit("k", PLAN, 1));
        let results = futures::future::join_all(attempts).await;
        let admitted = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(admitted, 50);
        assert!(results.iter().filter_map(|r| r.as_ref().err()).all(|e| matches!(e, Rejection::Requests { .. })));
    }

    #[actix::test]
    async fn concurrency_slots_come_back_when_permits_drop() {
        let sessions = registry(Duration::from_secs(60));
        let plan = Limits { concurrent_requests: 2, ..PLAN };
        let a = sessions.admit("k", plan, 1).await.unwrap();
        let _b = sessions.admit("k", plan, 1).await.unwrap();
        assert!(matches!(sessions.admit("k", plan, 1).await, Err(Rejection::Concurrency { .. })));
        drop(a);
        assert!(sessions.admit("k", plan, 1).await.is_ok());
    }

    #[actix::test]
    async fn token_reservations_are_corrected_after_use() {
        let sessions = registry(Duration::from_secs(60));
        let plan = Limits { tokens_per_minute: 100, ..PLAN };
        let mut permit = sessions.admit("k", plan, 80).await.unwrap();
        assert!(matches!(sessions.admit("k", plan, 30).await, Err(Rejection::Tokens { .. })));
        permit.record_tokens(10);
        drop(permit);
        assert!(sessions.admit("k", plan, 80).await.is_ok());
        assert_eq!(sessions.inspect("k").await.unwrap().tokens, 90);
    }

    #[actix::test]
    async fn keys_are_limited_separately() {
        let sessions = registry(Duration::from_secs(60));
        let plan = Limits { requests_per_minute: 1, ..PLAN };
        assert!(sessions.admit("a", plan, 1).await.is_ok());
        assert!(sessions.admit("b", plan, 1).await.is_ok());
        assert!(sessions.admit("a", plan, 1).await.is_err());
    }

    #[actix::test]
    async fn a_panicking_session_is_restarted_and_serves_again() {
        let metrics = EngineMetrics::unregistered();
        let sessions = SessionRegistry::new(actix::Arbiter::current(), Duration::from_secs(60), metrics.clone());
        let _held = sessions.admit("k", PLAN, 1).await.unwrap();
        sessions.crash("k");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(metrics.restarts.with_label_values(&["session"]).get(), 1);
        assert!(sessions.admit("k", PLAN, 1).await.is_ok());
        // The counters survived the restart.
        assert_eq!(sessions.inspect("k").await.unwrap().requests, 2);
    }

    #[actix::test]
    async fn idle_sessions_retire_and_come_back_fresh() {
        let sessions = registry(Duration::from_millis(60));
        drop(sessions.admit("k", PLAN, 1).await.unwrap());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(sessions.is_empty());
        assert!(sessions.admit("k", PLAN, 1).await.is_ok());
        assert_eq!(sessions.len(), 1);
    }
}
