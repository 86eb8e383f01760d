//! The session's limits, exact under concurrency; slots, tokens, restarts and retirement.

use super::*;

fn registry(idle: Duration) -> SessionRegistry {
    SessionRegistry::new(idle, EngineMetrics::unregistered())
}

const PLAN: Limits = Limits { requests_per_minute: 50, concurrent_requests: 1000, tokens_per_minute: 1_000_000 };

#[actix::test]
async fn admits_exactly_the_requests_per_minute_under_concurrency() {
    let sessions = registry(Duration::from_secs(60));
    let mut results = Vec::new();
    for _ in 0..200 {
        results.push(sessions.admit("k", PLAN, 1).await);
    }
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
                let admit = |plan| futures::executor::block_on(sessions.admit("k", plan, 1));
                let (mut admitted, mut most_in_flight) = (0, 0);
                for _ in 0..1_000 {
                    if let Ok(permit) = admit(plan) {
                        admitted += 1;
                        let in_flight = futures::executor::block_on(sessions.inspect("k")).map_or(0, |c| c.in_flight);
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
    let sessions = SessionRegistry::new(Duration::from_secs(60), metrics.clone());
    let _held = sessions.admit("k", PLAN, 1).await.unwrap();
    sessions.crash("k");
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
