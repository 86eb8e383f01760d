//! `ProviderPool`: per provider a cap on requests in flight, and per upstream (a base URL and key) a circuit
//! breaker and an in-flight count. It decides which upstream a request uses (fewest in flight, open circuits
//! skipped); the request's own task does the I/O and reports back, so no token passes through its mailbox.

use super::metrics::EngineMetrics;
use super::supervise::guarded;
use actix::{Actor, Addr, Context, Handler, Message, Supervised};
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit refuses requests before one probe is let through.
    pub open_for: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Breaker {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

impl Breaker {
    fn gauge(&self) -> i64 {
        match self {
            Breaker::Closed { .. } => 0,
            Breaker::HalfOpen { .. } => 1,
            Breaker::Open { .. } => 2,
        }
    }
}

struct UpstreamHealth {
    in_flight: u32,
    breaker: Breaker,
}

struct ProviderHealth {
    cap: u32,
    in_flight: u32,
    upstreams: Vec<UpstreamHealth>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolRejection {
    /// The provider has as many requests in flight as its cap allows.
    Overloaded,
    /// Every upstream's circuit is open.
    CircuitOpen,
    UnknownProvider,
}

#[derive(Message)]
#[rtype(result = "Result<usize, PoolRejection>")]
pub struct Pick {
    pub provider: String,
    /// Upstreams that just failed this request: another is preferred while one is usable.
    pub avoid: Vec<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A failure that counts against the upstream's health (5xx, 429, connection, timeout).
    Failure,
    /// Neither: the request was invalid, or the caller left.
    Neutral,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Report {
    pub provider: String,
    pub upstream: usize,
    pub outcome: Outcome,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

/// The circuit state of every upstream of a provider: 0 closed, 1 half-open, 2 open.
#[derive(Message)]
#[rtype(result = "Vec<i64>")]
pub struct Circuits {
    pub provider: String,
}

pub struct ProviderPool {
    providers: HashMap<String, ProviderHealth>,
    breaker: BreakerConfig,
    metrics: EngineMetrics,
}

impl ProviderPool {
    /// `providers`: each provider's name, in-flight cap and number of upstreams.
    pub fn new(
        providers: impl IntoIterator<Item = (String, u32, usize)>,
        breaker: BreakerConfig,
        metrics: EngineMetrics,
    ) -> Self {
        let providers = providers
            .into_iter()
            .map(|(name, cap, upstreams)| {
                let upstreams = (0..upstreams.max(1))
                    .map(|_| UpstreamHealth { in_flight: 0, breaker: Breaker::Closed { failures: 0 } })
                    .collect();
                (name, ProviderHealth { cap, in_flight: 0, upstreams })
            })
            .collect();
        ProviderPool { providers, breaker, metrics }
    }

    fn pick(&mut self, provider: &str, avoid: &[usize]) -> Result<usize, PoolRejection> {
        let health = self.providers.get_mut(provider).ok_or(PoolRejection::UnknownProvider)?;
        if health.in_flight >= health.cap {
            return Err(PoolRejection::Overloaded);
        }
        let now = Instant::now();
        for upstream in health.upstreams.iter_mut() {
            if matches!(upstream.breaker, Breaker::Open { until } if now >= until) {
                upstream.breaker = Breaker::HalfOpen { probing: false };
            }
        }
        let chosen = health
            .upstreams
            .iter()
            .enumerate()
            .filter(|(_, u)| match u.breaker {
                Breaker::Closed { .. } => true,
                Breaker::HalfOpen { probing } => !probing,
                Breaker::Open { .. } => false,
            })
            .min_by_key(|(i, u)| (avoid.contains(i), u.in_flight))
            .map(|(i, _)| i);
        let Some(index) = chosen else {
            return Err(PoolRejection::CircuitOpen);
        };
        let upstream = &mut health.upstreams[index];
        if let Breaker::HalfOpen { probing } = &mut upstream.breaker {
            *probing = true;
        }
        upstream.in_flight += 1;
        health.in_flight += 1;
        self.publish(provider, index);
        Ok(index)
    }

    fn report(&mut self, msg: &Report) {
        let Some(health) = self.providers.get_mut(&msg.provider) else { return };
        let Some(upstream) = health.upstreams.get_mut(msg.upstream) else { return };
        upstream.in_flight = upstream.in_flight.saturating_sub(1);
        health.in_flight = health.in_flight.saturating_sub(1);
        upstream.breaker = match (msg.outcome, upstream.breaker) {
            (Outcome::Success, _) => Breaker::Closed { failures: 0 },
            (Outcome::Failure, Breaker::Closed { failures }) if failures + 1 >= self.breaker.failure_threshold => {
                Breaker::Open { until: Instant::now() + self.breaker.open_for }
            }
            (Outcome::Failure, Breaker::Closed { failures }) => Breaker::Closed { failures: failures + 1 },
            (Outcome::Failure, Breaker::HalfOpen { .. }) => {
                Breaker::Open { until: Instant::now() + self.breaker.open_for }
            }
            (Outcome::Failure, open @ Breaker::Open { .. }) => open,
            (Outcome::Neutral, Breaker::HalfOpen { .. }) => Breaker::HalfOpen { probing: false },
            (Outcome::Neutral, other) => other,
        };
        self.publish(&msg.provider, msg.upstream);
    }

    fn publish(&self, provider: &str, upstream: usize) {
        if let Some(u) = self.providers.get(provider).and_then(|h| h.upstreams.get(upstream)) {
            self.metrics.circuit_state.with_label_values(&[provider, &upstream.to_string()]).set(u.breaker.gauge());
        }
    }
}

impl Actor for ProviderPool {
    type Context = Context<Self>;
}

impl Supervised for ProviderPool {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!("provider pool restarting");
    }
}

impl Handler<Pick> for ProviderPool {
    type Result = Result<usize, PoolRejection>;

    fn handle(&mut self, msg: Pick, ctx: &mut Context<Self>) -> Self::Result {
        self.metrics.hot.pool_backlog.dec();
        let restarts = self.metrics.restarts.clone();
        guarded::<Self, _>("pool", ctx, &restarts, || self.pick(&msg.provider, &msg.avoid))
            .unwrap_or(Err(PoolRejection::Overloaded))
    }
}

impl Handler<Report> for ProviderPool {
    type Result = ();

    fn handle(&mut self, msg: Report, ctx: &mut Context<Self>) {
        let restarts = self.metrics.restarts.clone();
        let _ = guarded::<Self, _>("pool", ctx, &restarts, || self.report(&msg));
    }
}

impl Handler<Circuits> for ProviderPool {
    type Result = Vec<i64>;

    fn handle(&mut self, msg: Circuits, _: &mut Context<Self>) -> Vec<i64> {
        self.providers
            .get(&msg.provider)
            .map(|h| h.upstreams.iter().map(|u| u.breaker.gauge()).collect())
            .unwrap_or_default()
    }
}

impl Handler<Crash> for ProviderPool {
    type Result = ();

    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        let restarts = self.metrics.restarts.clone();
        let _ = guarded::<Self, _>("pool", ctx, &restarts, || panic!("injected panic"));
    }
}

/// A request's use of one upstream. Report how it went; if dropped unreported, it counts as neutral.
pub struct Lease {
    pool: Addr<ProviderPool>,
    pub provider: String,
    pub upstream: usize,
    reported: bool,
}

impl Lease {
    pub fn new(pool: Addr<ProviderPool>, provider: String, upstream: usize) -> Self {
        Lease { pool, provider, upstream, reported: false }
    }

    pub fn report(mut self, outcome: Outcome) {
        self.reported = true;
        self.pool.do_send(Report { provider: self.provider.clone(), upstream: self.upstream, outcome });
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.reported {
            self.pool.do_send(Report {
                provider: std::mem::take(&mut self.provider),
                upstream: self.upstream,
                outcome: Outcome::Neutral,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix::Supervisor;

    fn pool(upstreams: usize, cap: u32) -> Addr<ProviderPool> {
        let breaker = BreakerConfig { failure_threshold: 3, open_for: Duration::from_millis(100) };
        Supervisor::start(move |_| {
            ProviderPool::new([("p".to_owned(), cap, upstreams)], breaker, EngineMetrics::unregistered())
        })
    }

    async fn pick(pool: &Addr<ProviderPool>) -> Result<usize, PoolRejection> {
        pool.send(Pick { provider: "p".into(), avoid: vec![] }).await.unwrap()
    }

    fn report(pool: &Addr<ProviderPool>, upstream: usize, outcome: Outcome) {
        pool.do_send(Report { provider: "p".into(), upstream, outcome });
    }

    #[actix::test]
    async fn balances_by_fewest_in_flight() {
        let pool = pool(3, 100);
        let picks = [pick(&pool).await.unwrap(), pick(&pool).await.unwrap(), pick(&pool).await.unwrap()];
        let mut sorted = picks;
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2]);
        report(&pool, 1, Outcome::Success);
        assert_eq!(pick(&pool).await.unwrap(), 1);
    }

    #[actix::test]
    async fn a_retry_prefers_another_upstream() {
        let pool = pool(3, 100);
        let avoided = pool.send(Pick { provider: "p".into(), avoid: vec![0, 1] }).await.unwrap().unwrap();
        assert_eq!(avoided, 2);
        report(&pool, 2, Outcome::Neutral);
        // With every upstream avoided, one is still given.
        assert!(pool.send(Pick { provider: "p".into(), avoid: vec![0, 1, 2] }).await.unwrap().is_ok());
    }

    #[actix::test]
    async fn caps_requests_in_flight() {
        let pool = pool(1, 2);
        pick(&pool).await.unwrap();
        pick(&pool).await.unwrap();
        assert_eq!(pick(&pool).await, Err(PoolRejection::Overloaded));
        report(&pool, 0, Outcome::Neutral);
        assert!(pick(&pool).await.is_ok());
    }

    #[actix::test]
    async fn circuit_opens_probes_half_open_and_closes_on_success() {
        let pool = pool(1, 100);
        for _ in 0..3 {
            let u = pick(&pool).await.unwrap();
            report(&pool, u, Outcome::Failure);
        }
        assert_eq!(pick(&pool).await, Err(PoolRejection::CircuitOpen));
        assert_eq!(pool.send(Circuits { provider: "p".into() }).await.unwrap(), vec![2]);
        tokio::time::sleep(Duration::from_millis(120)).await;
        // Half-open: one probe goes through, a second waits for its outcome.
        let probe = pick(&pool).await.unwrap();
        assert_eq!(pick(&pool).await, Err(PoolRejection::CircuitOpen));
        report(&pool, probe, Outcome::Success);
        assert!(pick(&pool).await.is_ok());
        assert_eq!(pool.send(Circuits { provider: "p".into() }).await.unwrap(), vec![0]);
    }

    #[actix::test]
    async fn open_circuits_are_skipped_for_healthy_upstreams() {
        let pool = pool(2, 100);
        for _ in 0..3 {
            report(&pool, 0, Outcome::Failure);
        }
        for _ in 0..4 {
            assert_eq!(pick(&pool).await.unwrap(), 1);
        }
    }

    #[actix::test]
    async fn a_panicking_pool_is_restarted() {
        let pool = pool(1, 100);
        pool.do_send(Crash);
        assert!(pick(&pool).await.is_ok());
    }
}
