//! `ProviderPool`: per provider a cap on requests in flight, and per upstream (a base URL and key) a circuit
//! breaker and an in-flight count. It decides which upstream a request uses (fewest in flight, open circuits
//! skipped); the request's own task does the I/O and reports back. The pool's state is behind one lock held for a
//! few counter updates, so a pick runs on the request's own thread, whichever worker that is.

use super::metrics::EngineMetrics;
use super::supervise::{guarded, lock};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
    /// `switchyard_circuit_state{provider, upstream}`, resolved once.
    gauge: prometheus::IntGauge,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A failure that counts against the upstream's health (5xx, 429, connection, timeout).
    Failure,
    /// Neither: the request was invalid, or the caller left.
    Neutral,
}

struct PoolState {
    providers: HashMap<String, ProviderHealth>,
    breaker: BreakerConfig,
}

/// A handle on the pool (cheap to clone; every clone is the same pool).
#[derive(Clone)]
pub struct ProviderPool {
    state: Arc<Mutex<PoolState>>,
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
                    .map(|i| UpstreamHealth {
                        in_flight: 0,
                        breaker: Breaker::Closed { failures: 0 },
                        gauge: metrics.circuit_state.with_label_values(&[name.as_str(), &i.to_string()]),
                    })
                    .collect();
                (name, ProviderHealth { cap, in_flight: 0, upstreams })
            })
            .collect();
        ProviderPool { state: Arc::new(Mutex::new(PoolState { providers, breaker })), metrics }
    }

    fn guarded<R>(&self, body: impl FnOnce(&mut PoolState) -> R) -> Option<R> {
        guarded("pool", &self.state, &self.metrics.restarts, body, |_| ())
    }

    /// An upstream of `provider` for one attempt, preferring any not in `avoid` (those that just failed this
    /// request).
    pub fn pick(&self, provider: &str, avoid: &[usize]) -> Result<usize, PoolRejection> {
        self.guarded(|state| state.pick(provider, avoid)).unwrap_or(Err(PoolRejection::Overloaded))
    }

    /// How an attempt on `upstream` went: frees its place and moves its circuit.
    pub fn report(&self, provider: &str, upstream: usize, outcome: Outcome) {
        let _ = self.guarded(|state| state.report(provider, upstream, outcome));
    }

    /// The circuit state of every upstream of a provider: 0 closed, 1 half-open, 2 open.
    pub fn circuits(&self, provider: &str) -> Vec<i64> {
        let state = lock(&self.state);
        state
            .providers
            .get(provider)
            .map(|h| h.upstreams.iter().map(|u| u.breaker.gauge()).collect())
            .unwrap_or_default()
    }

    /// Injects a panic (supervision tests): caught, counted, and the pool serves on.
    pub fn crash(&self) {
        let _ = self.guarded(|_| panic!("injected panic"));
    }
}

impl PoolState {
    fn pick(&mut self, provider: &str, avoid: &[usize]) -> Result<usize, PoolRejection> {
        let health = self.providers.get_mut(provider).ok_or(PoolRejection::UnknownProvider)?;
        if health.in_flight >= health.cap {
            return Err(PoolRejection::Overloaded);
        }
        let now = Instant::now();
        for upstream in health.upstreams.iter_mut() {
            if matches!(upstream.breaker, Breaker::Open { until } if now >= until) {
                upstream.breaker = Breaker::HalfOpen { probing: false };
                upstream.gauge.set(upstream.breaker.gauge());
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
        Ok(index)
    }

    fn report(&mut self, provider: &str, upstream: usize, outcome: Outcome) {
        let Some(health) = self.providers.get_mut(provider) else { return };
        let Some(upstream) = health.upstreams.get_mut(upstream) else { return };
        upstream.in_flight = upstream.in_flight.saturating_sub(1);
        health.in_flight = health.in_flight.saturating_sub(1);
        upstream.breaker = match (outcome, upstream.breaker) {
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
        upstream.gauge.set(upstream.breaker.gauge());
    }
}

/// A request's use of one upstream. Report how it went; if dropped unreported, it counts as neutral.
pub struct Lease {
    pool: ProviderPool,
    pub provider: String,
    pub upstream: usize,
    reported: bool,
}

impl Lease {
    pub fn new(pool: ProviderPool, provider: String, upstream: usize) -> Self {
        Lease { pool, provider, upstream, reported: false }
    }

    pub fn report(mut self, outcome: Outcome) {
        self.reported = true;
        self.pool.report(&self.provider, self.upstream, outcome);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.reported {
            self.pool.report(&self.provider, self.upstream, Outcome::Neutral);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(upstreams: usize, cap: u32) -> ProviderPool {
        let breaker = BreakerConfig { failure_threshold: 3, open_for: Duration::from_millis(100) };
        ProviderPool::new([("p".to_owned(), cap, upstreams)], breaker, EngineMetrics::unregistered())
    }

    async fn pick(pool: &ProviderPool) -> Result<usize, PoolRejection> {
        pool.pick("p", &[])
    }

    fn report(pool: &ProviderPool, upstream: usize, outcome: Outcome) {
        pool.report("p", upstream, outcome);
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
        let avoided = pool.pick("p", &[0, 1]).unwrap();
        assert_eq!(avoided, 2);
        report(&pool, 2, Outcome::Neutral);
        // With every upstream avoided, one is still given.
        assert!(pool.pick("p", &[0, 1, 2]).is_ok());
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
        assert_eq!(pool.circuits("p"), vec![2]);
        tokio::time::sleep(Duration::from_millis(120)).await;
        // Half-open: one probe goes through, a second waits for its outcome.
        let probe = pick(&pool).await.unwrap();
        assert_eq!(pick(&pool).await, Err(PoolRejection::CircuitOpen));
        report(&pool, probe, Outcome::Success);
        assert!(pick(&pool).await.is_ok());
        assert_eq!(pool.circuits("p"), vec![0]);
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
        pool.crash();
        assert!(pick(&pool).await.is_ok());
    }
}
