//! The ledger's tests: reservations, settlement, a failing store, restarts and top-ups, over an in-memory store.

use super::*;
use actix::{Addr, Supervisor};
use std::sync::Mutex;

#[derive(Default)]
struct MemoryStore {
    writes: Mutex<Vec<LedgerWrite>>,
    fail: std::sync::atomic::AtomicBool,
}

impl LedgerStore for MemoryStore {
    fn commit(&self, batch: Vec<LedgerWrite>) -> BoxFuture<'static, Result<(), String>> {
        let fail = self.fail.load(std::sync::atomic::Ordering::SeqCst);
        if !fail {
            self.writes.lock().unwrap().extend(batch);
        }
        Box::pin(async move {
            if fail {
                Err("disk full".into())
            } else {
                Ok(())
            }
        })
    }
}

fn ledger(store: Arc<MemoryStore>, balance: i64) -> Addr<BillingLedger> {
    let dir = tempfile::tempdir().unwrap().keep();
    let journal = Journal::new(UsageJournal::open(&dir).unwrap());
    spawn_importer(
        &actix::Arbiter::current(),
        journal.clone(),
        store.clone(),
        std::time::Duration::from_millis(2),
        std::time::Duration::from_secs(1),
    );
    let writer = spawn_writer(store, 1024);
    let metrics = EngineMetrics::unregistered();
    Supervisor::start(move |_| BillingLedger::new([("ws".to_owned(), Credits(balance))], journal, writer, metrics))
}

/// Waits for the importer to hand `n` writes to the store.
async fn stored(store: &MemoryStore, n: usize) -> Vec<LedgerWrite> {
    for _ in 0..200 {
        if store.writes.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    store.writes.lock().unwrap().clone()
}

async fn wallet(ledger: &Addr<BillingLedger>) -> Wallet {
    ledger.send(GetWallet { workspace_id: "ws".into() }).await.unwrap().unwrap()
}

#[actix::test]
async fn reserve_fails_when_balance_short() {
    let ledger = ledger(Arc::default(), 100);
    let hold = ledger.send(Reserve { workspace_id: "ws".into(), amount: Credits(60) }).await.unwrap().unwrap();
    let short = ledger.send(Reserve { workspace_id: "ws".into(), amount: Credits(41) }).await.unwrap();
    assert!(matches!(short, Err(LedgerError::Insufficient { .. })));
    ledger.send(Release { hold, record: None }).await.unwrap();
    assert!(ledger.send(Reserve { workspace_id: "ws".into(), amount: Credits(100) }).await.unwrap().is_ok());
}

#[actix::test]
async fn exactly_k_of_4k_parallel_reservations_fit_and_nothing_stays_reserved() {
    let store = Arc::new(MemoryStore::default());
    let ledger = ledger(store.clone(), 7 * 30);
    let attempts = (0..28).map(|_| {
        let ledger = ledger.clone();
        async move {
            let hold = ledger.send(Reserve { workspace_id: "ws".into(), amount: Credits(30) }).await.unwrap().ok()?;
            let record = UsageRecord { status: "ok".into(), ..Default::default() };
            ledger.send(Settle { hold, cost: Credits(30), record }).await.unwrap().ok()
        }
    });
    let served = futures::future::join_all(attempts).await.into_iter().flatten().count();
    assert_eq!(served, 7);
    let wallet = wallet(&ledger).await;
    assert_eq!(wallet, Wallet { balance: Credits(0), reserved: Credits(0) });
    assert_eq!(stored(&store, 7).await.len(), 7);
}

#[actix::test]
async fn settle_charges_at_most_the_hold_and_records_it() {
    let store = Arc::new(MemoryStore::default());
    let ledger = ledger(store.clone(), 1000);
    let hold = ledger.send(Reserve { workspace_id: "ws".into(), amount: Credits(50) }).await.unwrap().unwrap();
    let charged =
        ledger.send(Settle { hold, cost: Credits(80), record: UsageRecord::default() }).await.unwrap().unwrap();
    assert_eq!(charged, Credits(50));
    assert_eq!(wallet(&ledger).await, Wallet { balance: Credits(950), reserved: Credits(0) });
    let first = stored(&store, 1).await[0].clone();
    assert!(matches!(&first, LedgerWrite::Usage(r) if r.credits_milli == 50 && r.workspace_id == "ws"));
    // A hold is settled once: a second settlement is refused.
    let again = ledger.send(Settle { hold, cost: Credits(1), record: UsageRecord::default() }).await.unwrap();
    assert_eq!(again, Err(LedgerError::UnknownHold(hold.0)));
}

#[actix::test]
async fn a_store_that_fails_keeps_the_records_in_the_journal_until_it_recovers() {
    let store = Arc::new(MemoryStore::default());
    store.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let ledger = ledger(store.clone(), 100);
    let hold = ledger.send(Reserve { workspace_id: "ws".into(), amount: Credits(10) }).await.unwrap().unwrap();
    let result = ledger.send(Settle { hold, cost: Credits(10), record: UsageRecord::default() }).await.unwrap();
    assert_eq!(result, Ok(Credits(10)));
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(store.writes.lock().unwrap().is_empty());
    store.fail.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(stored(&store, 1).await.len(), 1);
    assert_eq!(wallet(&ledger).await, Wallet { balance: Credits(90), reserved: Credits(0) });
}

#[actix::test]
async fn a_panicking_ledger_is_restarted_with_its_wallets() {
    let ledger = ledger(Arc::default(), 100);
    let _hold = ledger.send(Reserve { workspace_id: "ws".into(), amount: Credits(10) }).await.unwrap().unwrap();
    ledger.do_send(Crash);
    let wallet = wallet(&ledger).await;
    assert_eq!(wallet, Wallet { balance: Credits(100), reserved: Credits(10) });
    assert!(ledger.send(Reserve { workspace_id: "ws".into(), amount: Credits(90) }).await.unwrap().is_ok());
}

#[actix::test]
async fn unknown_workspaces_and_top_ups() {
    let store = Arc::new(MemoryStore::default());
    let ledger = ledger(store.clone(), 0);
    let missing = ledger.send(Reserve { workspace_id: "nope".into(), amount: Credits(1) }).await.unwrap();
    assert!(matches!(missing, Err(LedgerError::UnknownWorkspace(_))));
    let balance = ledger.send(TopUp { workspace_id: "ws".into(), amount: Credits(5) }).await.unwrap().unwrap();
    assert_eq!(balance, Credits(5));
    assert_eq!(stored(&store, 1).await.len(), 1);
}
