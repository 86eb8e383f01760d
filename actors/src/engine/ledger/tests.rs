//! The ledger's tests: reservations, settlement, a failing store, restarts and top-ups, over an in-memory store.

use super::*;
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

fn ledger(store: Arc<MemoryStore>, balance: i64) -> BillingLedger {
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
    BillingLedger::new([("ws".to_owned(), Credits(balance))], journal, writer, metrics)
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

async fn wallet(ledger: &BillingLedger) -> Wallet {
    ledger.wallet("ws").await.unwrap()
}

#[actix::test]
async fn reserve_fails_when_balance_short() {
    let ledger = ledger(Arc::default(), 100);
    let hold = ledger.reserve("ws", Credits(60)).await.unwrap();
    let short = ledger.reserve("ws", Credits(41)).await;
    assert!(matches!(short, Err(LedgerError::Insufficient { .. })));
    ledger.release(hold, None);
    assert!(ledger.reserve("ws", Credits(100)).await.is_ok());
}

#[actix::test]
async fn exactly_k_of_4k_parallel_reservations_fit_and_nothing_stays_reserved() {
    let store = Arc::new(MemoryStore::default());
    let ledger = ledger(store.clone(), 7 * 30);
    let attempts = (0..28).map(|_| {
        let ledger = ledger.clone();
        async move {
            let hold = ledger.reserve("ws", Credits(30)).await.ok()?;
            let record = UsageRecord { status: "ok".into(), ..Default::default() };
            ledger.settle(hold, Credits(30), record).await.ok()
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
    let hold = ledger.reserve("ws", Credits(50)).await.unwrap();
    let charged = ledger.settle(hold, Credits(80), UsageRecord::default()).await.unwrap();
    assert_eq!(charged, Credits(50));
    assert_eq!(wallet(&ledger).await, Wallet { balance: Credits(950), reserved: Credits(0) });
    let first = stored(&store, 1).await[0].clone();
    assert!(matches!(&first, LedgerWrite::Usage(r) if r.credits_milli == 50 && r.workspace_id == "ws"));
    // A hold is settled once: a second settlement is refused.
    let again = ledger.settle(hold, Credits(1), UsageRecord::default()).await;
    assert_eq!(again, Err(LedgerError::UnknownHold(hold.0)));
}

#[actix::test]
async fn a_store_that_fails_keeps_the_records_in_the_journal_until_it_recovers() {
    let store = Arc::new(MemoryStore::default());
    store.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let ledger = ledger(store.clone(), 100);
    let hold = ledger.reserve("ws", Credits(10)).await.unwrap();
    let result = ledger.settle(hold, Credits(10), UsageRecord::default()).await;
    assert_eq!(result, Ok(Credits(10)));
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(store.writes.lock().unwrap().is_empty());
    store.fail.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(stored(&store, 1).await.len(), 1);
    assert_eq!(wallet(&ledger).await, Wallet { balance: Credits(90), reserved: Credits(0) });
}

#[actix::test]
async fn an_importer_far_behind_reads_the_journal_back_and_stores_every_record_once() {
    let store = Arc::new(MemoryStore::default());
    store.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let count = crate::engine::journal::HELD_MAX + 50;
    let ledger = ledger(store.clone(), count as i64);
    for i in 0..count {
        let hold = ledger.reserve("ws", Credits(1)).await.unwrap();
        let record = UsageRecord { id: i.to_string(), status: "ok".into(), ..Default::default() };
        assert_eq!(ledger.settle(hold, Credits(1), record).await, Ok(Credits(1)));
    }
    store.fail.store(false, std::sync::atomic::Ordering::SeqCst);
    let writes = stored(&store, count).await;
    let ids: std::collections::HashSet<String> = writes
        .iter()
        .filter_map(|w| match w {
            LedgerWrite::Usage(record) => Some(record.id.clone()),
            LedgerWrite::TopUp { .. } => None,
        })
        .collect();
    assert_eq!((writes.len(), ids.len()), (count, count));
    assert_eq!(wallet(&ledger).await, Wallet { balance: Credits(0), reserved: Credits(0) });
}

#[actix::test]
async fn a_panicking_ledger_is_repaired_with_its_wallets_and_holds() {
    let ledger = ledger(Arc::default(), 100);
    let _hold = ledger.reserve("ws", Credits(10)).await.unwrap();
    ledger.crash();
    let wallet = wallet(&ledger).await;
    assert_eq!(wallet, Wallet { balance: Credits(100), reserved: Credits(10) });
    assert!(ledger.reserve("ws", Credits(90)).await.is_ok());
}

#[actix::test]
async fn unknown_workspaces_and_top_ups() {
    let store = Arc::new(MemoryStore::default());
    let ledger = ledger(store.clone(), 0);
    let missing = ledger.reserve("nope", Credits(1)).await;
    assert!(matches!(missing, Err(LedgerError::UnknownWorkspace(_))));
    let balance = ledger.top_up("ws", Credits(5)).await.unwrap();
    assert_eq!(balance, Credits(5));
    assert_eq!(stored(&store, 1).await.len(), 1);
}

#[actix::test]
async fn reservations_from_many_threads_at_once_stay_exact() {
    let store = Arc::new(MemoryStore::default());
    let ledger = ledger(store.clone(), 1_000 * 7);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                let mut served = 0;
                for _ in 0..500 {
                    if let Ok(hold) = futures::executor::block_on(ledger.reserve("ws", Credits(10))) {
                        let record = UsageRecord { status: "ok".into(), ..Default::default() };
                        let settled = futures::executor::block_on(ledger.settle(hold, Credits(7), record));
                        served += usize::from(settled.is_ok());
                    }
                }
                served
            })
        })
        .collect();
    let mut served: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    // Whatever is left is spent one call at a time, until a hold no longer fits.
    while let Ok(hold) = ledger.reserve("ws", Credits(10)).await {
        served += usize::from(ledger.settle(hold, Credits(7), UsageRecord::default()).await.is_ok());
    }
    // Each call held 10 and was charged 7: every credit is accounted for, none spent twice, nothing left held.
    let wallet = wallet(&ledger).await;
    assert_eq!(wallet.reserved, Credits(0));
    assert_eq!(wallet.balance, Credits(7_000 - 7 * i64::try_from(served).unwrap()));
    assert!(wallet.balance.0 >= 0 && wallet.balance.0 < 10, "{wallet:?} after {served}");
    assert_eq!(stored(&store, served).await.len(), served);
}
