//! Wallets shared by several gateways on PostgreSQL (`SharedWallets`): each test opens the store several times, one
//! pool and one instance id per "gateway", as separate gateway processes would. Exactness under concurrency across
//! them, settlement once, and the holds of a gateway gone silent coming back. SKIPPED without PostgreSQL; under
//! `make test` it is always there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "common/backends.rs"]
mod backends;

use std::sync::Arc;
use std::time::Duration;
use switchyard::store::{Plan, Store, Workspace};
use switchyard_actors::engine::ledger::{LedgerError, SharedWallets, UsageRecord, Wallet};
use switchyard_actors::Credits;

/// `n` gateways' books on one new database holding workspace `ws` with `credits` millicredits.
async fn gateways(test: &str, n: usize, credits: i64, dead_after: Duration) -> Option<Vec<Arc<dyn SharedWallets>>> {
    let url = backends::postgres_database(test).await?;
    let dir = tempfile::tempdir().unwrap();
    let mut books: Vec<Arc<dyn SharedWallets>> = Vec::new();
    for i in 0..n {
        let store = Store::connect(Some(&url), dir.path()).await.unwrap();
        if i == 0 {
            let plan = Plan { requests_per_minute: 1_000_000, concurrent_requests: 1_000, tokens_per_minute: 1 << 30 };
            let workspace = Workspace {
                id: "ws".into(),
                name: "shared".into(),
                credits: Credits::from_milli(credits),
                plan,
                created_at: 1,
            };
            store.insert_workspace(&workspace).await.unwrap();
        }
        let shared = store.shared_wallets(&format!("gw-{i}"), dead_after).expect("PostgreSQL shares wallets");
        shared.heartbeat().await.unwrap();
        books.push(shared);
    }
    Some(books)
}

fn record(id: usize) -> UsageRecord {
    UsageRecord {
        id: format!("u{id:06}"),
        created_at: 1_000,
        workspace_id: "ws".into(),
        key_id: "key".into(),
        model: "m".into(),
        provider: "p".into(),
        endpoint: "/v1/chat/completions".into(),
        modality: "chat".into(),
        status: "ok".into(),
        attempts: 1,
        ..Default::default()
    }
}

async fn wallet(books: &Arc<dyn SharedWallets>) -> Wallet {
    books.wallet("ws").await.unwrap().unwrap()
}

#[actix_web::test]
async fn a_wallet_worth_k_calls_serves_exactly_k_of_4k_spread_over_three_gateways() {
    const K: usize = 50;
    let Some(books) = gateways("exact_k", 3, 30 * K as i64, Duration::from_secs(60)).await else { return };
    // 4K calls at once, round-robin over the three gateways; each holds 30 and is charged 30.
    let calls = (0..4 * K).map(|i| {
        let books = books[i % 3].clone();
        async move {
            let hold = match books.reserve("ws", Credits::from_milli(30)).await {
                Ok(hold) => hold,
                Err(LedgerError::Insufficient { .. }) => return false,
                Err(e) => panic!("{e}"),
            };
            let (_, charged) = books.settle(hold, Credits::from_milli(30), Some(record(i))).await.unwrap();
            assert_eq!(charged.milli(), 30);
            true
        }
    });
    let served = futures::future::join_all(calls).await.into_iter().filter(|s| *s).count();
    assert_eq!(served, K, "exactly K calls fit");
    assert_eq!(wallet(&books[1]).await, Wallet { balance: Credits::ZERO, reserved: Credits::ZERO });
}

#[actix_web::test]
async fn charges_are_capped_at_the_hold_settle_once_and_release_gives_everything_back() {
    let Some(books) = gateways("settle_once", 2, 1_000, Duration::from_secs(60)).await else { return };
    let (a, b) = (&books[0], &books[1]);
    let hold = a.reserve("ws", Credits::from_milli(100)).await.unwrap();
    assert_eq!(wallet(b).await, Wallet { balance: Credits::from_milli(1_000), reserved: Credits::from_milli(100) });
    // Another gateway may settle it (the hold is in the shared books); a cost past the hold is capped.
    let (held, charged) = b.settle(hold, Credits::from_milli(250), Some(record(1))).await.unwrap();
    assert_eq!((held.workspace_id.as_str(), held.amount.milli(), charged.milli()), ("ws", 100, 100));
    let again = a.settle(hold, Credits::from_milli(5), Some(record(2))).await;
    assert_eq!(again, Err(LedgerError::UnknownHold(hold.0)), "a hold settles once");
    assert_eq!(wallet(a).await, Wallet { balance: Credits::from_milli(900), reserved: Credits::ZERO });
    // A record the database refuses for good (a NUL in a text) is told apart from an outage (retried while it lasts);
    // the hold stays until freed without it.
    let refused = a.reserve("ws", Credits::from_milli(10)).await.unwrap();
    let mut bad = record(9);
    bad.model = "m\0".into();
    assert!(matches!(a.settle(refused, Credits::ZERO, Some(bad)).await, Err(LedgerError::Refused(_))));
    a.settle(refused, Credits::ZERO, None).await.unwrap();
    // A release (no record) and a failed call (a zero-credit record) charge nothing.
    let released = a.reserve("ws", Credits::from_milli(400)).await.unwrap();
    let failed = b.reserve("ws", Credits::from_milli(400)).await.unwrap();
    assert!(matches!(a.reserve("ws", Credits::from_milli(101)).await, Err(LedgerError::Insufficient { .. })));
    a.settle(released, Credits::ZERO, None).await.unwrap();
    let mut error = record(3);
    error.status = "error".into();
    b.settle(failed, Credits::ZERO, Some(error)).await.unwrap();
    assert_eq!(wallet(b).await, Wallet { balance: Credits::from_milli(900), reserved: Credits::ZERO });
    // Top-ups and the errors that name what is wrong.
    assert_eq!(a.top_up("ws", Credits::from_milli(100)).await.unwrap().milli(), 1_000);
    assert_eq!(a.top_up("nope", Credits::from_milli(1)).await, Err(LedgerError::UnknownWorkspace("nope".into())));
    assert_eq!(a.reserve("nope", Credits::from_milli(1)).await, Err(LedgerError::UnknownWorkspace("nope".into())));
    assert_eq!(a.wallet("nope").await.unwrap(), None);
}

#[actix_web::test]
async fn the_holds_of_a_gateway_gone_silent_come_back_and_its_late_settlement_charges_nothing() {
    let Some(books) = gateways("gone_silent", 2, 1_000, Duration::from_millis(500)).await else { return };
    let (gone, alive) = (&books[0], &books[1]);
    let holds = [
        gone.reserve("ws", Credits::from_milli(300)).await.unwrap(),
        gone.reserve("ws", Credits::from_milli(200)).await.unwrap(),
    ];
    let own = alive.reserve("ws", Credits::from_milli(100)).await.unwrap();
    assert_eq!(wallet(alive).await.reserved.milli(), 600);
    // While `gone` still beats, nothing of its is released.
    assert_eq!(alive.heartbeat().await.unwrap(), 0);
    // `gone` stops beating; past the timeout, the next beat of any other gateway releases its holds (not its own).
    let mut released = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        released += alive.heartbeat().await.unwrap();
        if released > 0 {
            break;
        }
    }
    assert_eq!(released, 2);
    assert_eq!(wallet(alive).await, Wallet { balance: Credits::from_milli(1_000), reserved: Credits::from_milli(100) });
    // It comes back and settles late: the holds are gone, so nothing is charged twice or at all.
    assert_eq!(
        gone.settle(holds[0], Credits::from_milli(300), Some(record(1))).await,
        Err(LedgerError::UnknownHold(holds[0].0))
    );
    alive.settle(own, Credits::from_milli(60), Some(record(2))).await.unwrap();
    assert_eq!(wallet(alive).await, Wallet { balance: Credits::from_milli(940), reserved: Credits::ZERO });
}

#[actix_web::test]
async fn the_idempotency_keys_a_gateway_gone_silent_left_running_are_freed_and_no_others() {
    let Some(url) = backends::postgres_database("abandoned_claims").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let dead_after = Duration::from_millis(500);
    let (gone, alive) =
        (Store::connect(Some(&url), dir.path()).await.unwrap(), Store::connect(Some(&url), dir.path()).await.unwrap());
    let beats =
        [gone.shared_wallets("gw-gone", dead_after).unwrap(), alive.shared_wallets("gw-alive", dead_after).unwrap()];
    for beat in &beats {
        beat.heartbeat().await.unwrap();
    }
    assert!(gone.claim_idempotency("ws", "left", b"h1", "gw-gone", 1, 0).await.unwrap());
    assert!(alive.claim_idempotency("ws", "running", b"h2", "gw-alive", 1, 0).await.unwrap());
    assert!(
        alive.claim_idempotency("ws", "old", b"h3", "", 1, 0).await.unwrap(),
        "as a gateway too old to name itself"
    );
    // Both beat: nothing is freed, whichever gateway beats.
    for beat in &beats {
        beat.heartbeat().await.unwrap();
    }
    for key in ["left", "running", "old"] {
        assert_eq!(alive.idempotent_response("ws", key).await.unwrap().unwrap().status, 0, "{key}");
    }
    // `gw-gone` stops beating: past the timeout the other's beat frees its running claim, and a retry runs.
    tokio::time::sleep(Duration::from_millis(700)).await;
    beats[1].heartbeat().await.unwrap();
    assert!(alive.idempotent_response("ws", "left").await.unwrap().is_none(), "the silent gateway's claim");
    assert!(alive.claim_idempotency("ws", "left", b"h1", "gw-alive", 2, 0).await.unwrap());
    assert_eq!(alive.idempotent_response("ws", "running").await.unwrap().unwrap().status, 0, "a live gateway's claim");
    assert_eq!(alive.idempotent_response("ws", "old").await.unwrap().unwrap().status, 0, "an unnamed claim waits");
}
