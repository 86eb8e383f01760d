//! Keys' limits shared by several gateways in Redis (`redis.url`): each test makes several session registries on one
//! Redis, one per "gateway", as separate gateway processes would. Requests per minute, concurrency and tokens per
//! minute stay exact under concurrency across them; a gateway that stops renewing its leases (killed) has its
//! concurrency slots come back; an unreachable Redis refuses with a retryable error, never admits blindly.
//! SKIPPED without Redis; under `make test` it is always there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "common/backends.rs"]
mod backends;

use std::sync::Arc;
use std::time::Duration;
use switchyard::store::RedisLimits;
use switchyard_actors::engine::metrics::EngineMetrics;
use switchyard_actors::engine::session::{Limits, Rejection, SessionRegistry, SharedLimits, SharedSetup};

const PLAN: Limits = Limits { requests_per_minute: 1_000_000, concurrent_requests: 1_000, tokens_per_minute: 1 << 40 };

async fn limits(url: &str, prefix: &str) -> Arc<dyn SharedLimits> {
    RedisLimits::connect(url, prefix).await.unwrap()
}

/// `n` gateways' sessions on one Redis (a prefix of the test's own), leases lasting `lease_for`.
async fn gateways(test: &str, n: usize, lease_for: Duration) -> Option<(Vec<SessionRegistry>, String, String)> {
    let (url, prefix) = backends::redis_url(test)?;
    let mut registries = Vec::new();
    for i in 0..n {
        let setup = SharedSetup { limits: limits(&url, &prefix).await, gateway: format!("gw{i}"), lease_for };
        registries.push(SessionRegistry::with(Duration::from_secs(60), EngineMetrics::unregistered(), Some(setup)));
    }
    Some((registries, url, prefix))
}

#[actix_web::test]
async fn requests_per_minute_are_exact_across_gateways() {
    let Some((gws, ..)) = gateways("rpm", 3, Duration::from_secs(30)).await else { return };
    let plan = Limits { requests_per_minute: 50, ..PLAN };
    let asks = (0..200).map(|i| gws[i % 3].admit("key-rpm", plan, 1));
    let results = futures::future::join_all(asks).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 50, "exactly the plan's requests per minute");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        let Rejection::Requests { grant } = refused else { panic!("refused for the rate: {refused:?}") };
        assert_eq!((grant.limit, grant.remaining), (50, 0));
    }
    // Another key has its own window.
    assert!(gws[1].admit("key-other", plan, 1).await.is_ok());
    // A refused key is refused again (locally now, its minute known spent) on every gateway.
    for gw in &gws {
        assert!(matches!(gw.admit("key-rpm", plan, 1).await, Err(Rejection::Requests { .. })));
    }
}

#[actix_web::test]
async fn concurrency_is_exact_across_gateways_and_slots_come_back() {
    let Some((gws, ..)) = gateways("concurrency", 3, Duration::from_secs(30)).await else { return };
    let plan = Limits { concurrent_requests: 5, ..PLAN };
    let asks = (0..60).map(|i| gws[i % 3].admit("key-c", plan, 1));
    let results = futures::future::join_all(asks).await;
    let (held, refused): (Vec<_>, Vec<_>) = results.into_iter().partition(|r| r.is_ok());
    assert_eq!(held.len(), 5, "exactly the plan's concurrency");
    assert!(refused.iter().all(|r| matches!(r, Err(Rejection::Concurrency { .. }))));
    assert_eq!(gws.iter().map(|g| g.shared_leases()).sum::<usize>(), 5, "leases of refused requests are not kept");
    // A call inside a slot already held (a realtime session's response) takes no second slot.
    assert!(gws[0].admit_within("key-c", plan, 1).await.is_ok());
    drop(held);
    // The slots go back in the background: all five are free again soon.
    let mut again = Vec::new();
    for _ in 0..100 {
        while again.len() < 5 {
            match gws[again.len() % 3].admit("key-c", plan, 1).await {
                Ok(permit) => again.push(permit),
                Err(_) => break,
            }
        }
        if again.len() == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(again.len(), 5, "the slots came back");
    assert!(matches!(gws[2].admit("key-c", plan, 1).await, Err(Rejection::Concurrency { .. })));
}

#[actix_web::test]
async fn a_live_gateway_keeps_its_slots_and_a_stopped_ones_come_back() {
    let Some((gws, url, prefix)) = gateways("leases", 1, Duration::from_millis(900)).await else { return };
    let plan = Limits { concurrent_requests: 3, ..PLAN };
    // A gateway in a runtime of its own takes every slot and stops (its runtime ends: no more renewals) without
    // giving them back, as a killed process would.
    let (url2, prefix2) = (url.clone(), prefix.clone());
    let taken = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let setup = SharedSetup {
                limits: limits(&url2, &prefix2).await,
                gateway: "doomed".into(),
                lease_for: Duration::from_millis(900),
            };
            let gw = SessionRegistry::with(Duration::from_secs(60), EngineMetrics::unregistered(), Some(setup));
            let permits: Vec<_> = futures::future::join_all((0..3).map(|_| gw.admit("key-l", plan, 1))).await;
            let taken = permits.iter().filter(|p| p.is_ok()).count();
            std::mem::forget(permits);
            taken
        })
    })
    .join()
    .unwrap();
    assert_eq!(taken, 3);
    assert!(matches!(gws[0].admit("key-l", plan, 1).await, Err(Rejection::Concurrency { .. })));
    // This gateway's own leases outlive their first term: it renews them.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let mine: Vec<_> = futures::future::join_all((0..3).map(|_| gws[0].admit("key-l", plan, 1))).await;
    let back = mine.iter().filter(|p| p.is_ok()).count();
    assert_eq!(back, 3, "the stopped gateway's slots came back");
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let other = SessionRegistry::with(
        Duration::from_secs(60),
        EngineMetrics::unregistered(),
        Some(SharedSetup { limits: limits(&url, &prefix).await, gateway: "other".into(), lease_for: Duration::ZERO }),
    );
    assert!(
        matches!(other.admit("key-l", plan, 1).await, Err(Rejection::Concurrency { .. })),
        "a live gateway's leases are renewed past their term"
    );
    drop(mine);
}

#[actix_web::test]
async fn an_admission_given_up_while_redis_answers_keeps_no_slot() {
    let Some((gws, ..)) = gateways("cancelled", 1, Duration::from_secs(30)).await else { return };
    let plan = Limits { concurrent_requests: 2, ..PLAN };
    // Each admission is polled once (the question sent) and dropped before the answer, as a client that leaves or
    // a run's timeout does; Redis still takes each lease, and the gateway must give every one back.
    let mut given_up = 0;
    for _ in 0..20 {
        let mut admission = Box::pin(gws[0].admit("key-x", plan, 1));
        if futures::poll!(admission.as_mut()).is_pending() {
            given_up += 1;
        }
    }
    assert!(given_up >= 10, "only {given_up} of 20 were still waiting for Redis when dropped");
    let mut held = Vec::new();
    for _ in 0..100 {
        if gws[0].shared_leases() == held.len() {
            match gws[0].admit("key-x", plan, 1).await {
                Ok(permit) => held.push(permit),
                Err(Rejection::Concurrency { .. }) => {}
                Err(other) => panic!("{other:?}"),
            }
        }
        if held.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(held.len(), 2, "the plan's whole concurrency is served again");
    assert_eq!(gws[0].shared_leases(), 2, "no abandoned lease is renewed");
}

#[actix_web::test]
async fn a_session_cap_hold_given_up_while_redis_answers_is_given_back() {
    use switchyard_actors::engine::budget::{Budget, SharedBudget};
    let Some((url, prefix)) = backends::redis_url("cap_cancel") else { return };
    let shared =
        SharedBudget { limits: limits(&url, &prefix).await, session: "ses_x".into(), ttl: Duration::from_secs(60) };
    let budget = Arc::new(Budget::shared(1_000, 0, shared));
    // Abandoned while Redis answers (a client that left): two of these fit the cap and are held there.
    let mut given_up = 0;
    for _ in 0..10 {
        let mut hold = Box::pin(budget.hold(400));
        if futures::poll!(hold.as_mut()).is_pending() {
            given_up += 1;
        }
    }
    assert!(given_up >= 5, "only {given_up} of 10 were still waiting for Redis when dropped");
    // Every one is given back: soon the whole cap can be held again.
    let whole = hold_soon(&budget, 1_000).await.expect("the abandoned holds were never given back");
    assert!(budget.hold(1).await.unwrap().is_none(), "the cap is exact: nothing past it");
    whole.settle(250);
    assert!(hold_soon(&budget, 750).await.is_some(), "a settled hold keeps only its charge");
}

/// A hold of `amount` on `budget` once the corrections sent in the background have landed (within 5 s).
async fn hold_soon(
    budget: &Arc<switchyard_actors::engine::budget::Budget>,
    amount: i64,
) -> Option<switchyard_actors::engine::budget::BudgetHold> {
    for _ in 0..100 {
        if let Some(hold) = budget.hold(amount).await.unwrap() {
            return Some(hold);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[actix_web::test]
async fn token_reservations_are_corrected_across_gateways() {
    let Some((gws, ..)) = gateways("tokens", 2, Duration::from_secs(30)).await else { return };
    let plan = Limits { tokens_per_minute: 100, ..PLAN };
    let mut permit = gws[0].admit("key-t", plan, 80).await.unwrap();
    assert!(matches!(gws[1].admit("key-t", plan, 30).await, Err(Rejection::Tokens { .. })));
    permit.record_tokens(10);
    drop(permit);
    let mut admitted = None;
    for _ in 0..100 {
        if let Ok(permit) = gws[1].admit("key-t", plan, 80).await {
            admitted = Some(permit);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted.is_some(), "the 70 tokens not used went back to the window");
    assert!(matches!(gws[0].admit("key-t", plan, 11).await, Err(Rejection::Tokens { .. })), "10 + 80 of 100 used");
}

#[actix_web::test]
async fn an_unreachable_redis_refuses_admission_as_retryable() {
    let Some((url, prefix)) = backends::redis_url("unreachable") else { return };
    let Some(server) = PrivateRedis::start().await else { return };
    let setup = SharedSetup {
        limits: limits(&server.url, &prefix).await,
        gateway: "gw".into(),
        lease_for: Duration::from_secs(30),
    };
    let gw = SessionRegistry::with(Duration::from_secs(60), EngineMetrics::unregistered(), Some(setup));
    assert!(gw.admit("key-u", PLAN, 1).await.is_ok());
    drop(server);
    let refused = gw.admit("key-u", PLAN, 1).await;
    assert!(matches!(refused, Err(Rejection::Unreachable)), "{:?}", refused.err());
    assert_eq!(Rejection::Unreachable.reason(), "limits_unreachable");
    drop(url);
}

#[actix_web::test]
async fn bad_redis_urls_are_clear_startup_errors() {
    let error = |url: &'static str| async move { RedisLimits::connect(url, "t:").await.err().unwrap() };
    assert!(error("http://127.0.0.1:6379").await.contains("must begin with redis://"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url: &'static str = format!("redis://:hunter2@127.0.0.1:{port}/0").leak();
    let unreachable = error(url).await;
    assert!(unreachable.contains("cannot reach Redis"), "{unreachable}");
    assert!(!unreachable.contains("hunter2"), "the password is never shown: {unreachable}");
}

/// A redis-server of the test's own, on a free port, killed when dropped.
struct PrivateRedis {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl PrivateRedis {
    async fn start() -> Option<PrivateRedis> {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let spawned = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if !backends::required() => {
                eprintln!("SKIPPED: no redis-server to start ({e})");
                return None;
            }
            Err(e) => panic!("redis-server: {e}"),
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Some(PrivateRedis { child, url: format!("redis://127.0.0.1:{port}"), _dir: dir })
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
