//! `BillingLedger`: a wallet per workspace (balance and reserved), integer millicredits. A request reserves the
//! most it can cost before any upstream call, settles what it really cost after, and releases the rest. A
//! settlement is committed to the usage journal before the ledger answers, so before the caller reports the cost;
//! the importer then group-commits the journal into the store, where each record and its debit are one write.
//! Holds live in memory only and the balance moves only at settlement, so a process that dies leaves no hold
//! behind: on start every wallet's `reserved` is zero and its balance is what the committed usage left.
//! The books sit behind one lock taken for a few integer updates, so reservations and settlements run on the
//! request's own thread, whichever worker that is, exact under any concurrency.
//! Several gateways sharing one wallet keep the books in the database instead (`shared`, `SharedWallets`): the same
//! calls, each a statement there.

use super::journal::{Refused, UsageJournal};
use super::metrics::EngineMetrics;
use super::supervise::{guarded, lock};
use crate::credits::Credits;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

mod shared;
mod writer;

pub use shared::{SettledHold, SharedWallets};
pub use writer::{spawn_importer, spawn_writer};

/// One request's usage, as recorded.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct UsageRecord {
    pub id: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub workspace_id: String,
    pub key_id: String,
    pub model: String,
    pub provider: String,
    pub endpoint: String,
    pub reporting_group: Option<String>,
    pub task: Option<String>,
    pub revision: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Characters (speech), audio milliseconds (speech-to-speech, transcription), images or inputs (embeddings):
    /// what `modality` is priced in.
    pub units: u64,
    /// The model's modality (`chat`, `image`, `speech`, `speech_to_speech`, `transcription`, `embedding`).
    pub modality: String,
    /// Width × height of the images made.
    pub pixels: u64,
    /// The browser session's user and id, for calls made with a session token.
    pub user: Option<String>,
    pub session_id: Option<String>,
    /// Millicredits charged; set by the ledger at settlement.
    pub credits_milli: i64,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    /// `ok`, `cut` (the stream broke part way), `abandoned` (the client left), `error`.
    pub status: String,
    pub fallback_used: bool,
    pub fallback_reason: Option<String>,
    pub primary_model: Option<String>,
    pub attempts: u32,
    pub output_bytes: u64,
}

/// A durable write the ledger asks of its store.
#[derive(Clone, Debug, PartialEq)]
pub enum LedgerWrite {
    /// A usage record; its `credits_milli` are debited from the workspace in the same write.
    Usage(Box<UsageRecord>),
    TopUp {
        workspace_id: String,
        amount: Credits,
    },
}

/// Where the ledger's writes go (SQLite now, PostgreSQL later). `commit` writes a batch atomically.
pub trait LedgerStore: Send + Sync + 'static {
    fn commit(&self, batch: Vec<LedgerWrite>) -> BoxFuture<'static, Result<(), String>>;

    /// Periodic upkeep run by the importer, on its thread (SQLite: a WAL checkpoint).
    fn maintain(&self) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wallet {
    pub balance: Credits,
    pub reserved: Credits,
}

impl Wallet {
    pub fn available(&self) -> Credits {
        Credits(self.balance.0 - self.reserved.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("Insufficient credits for this operation")]
    Insufficient { available: Credits, needed: Credits },
    #[error("no wallet for workspace `{0}`")]
    UnknownWorkspace(String),
    #[error("unknown hold {0}")]
    UnknownHold(u64),
    #[error("the usage record could not be stored: {0}")]
    Store(String),
    /// The shared books' database refused the write for good (a constraint, bad data): retrying cannot help.
    #[error("the database refused the write: {0}")]
    Refused(String),
    #[error("the ledger is restarting")]
    Unavailable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HoldId(pub u64);

struct Hold {
    workspace_id: String,
    amount: Credits,
}

type Ack = oneshot::Sender<Result<(), String>>;

/// The journal as the ledger (appending, on the thread of the request it settles) and the importer (taking batches, on a thread of
/// its own) share it. The importer polls rather than being woken, so a settlement never pays for a wake-up.
#[derive(Clone)]
pub struct Journal {
    pub file: Arc<std::sync::Mutex<UsageJournal>>,
}

impl Journal {
    pub fn new(journal: UsageJournal) -> Self {
        Journal { file: Arc::new(std::sync::Mutex::new(journal)) }
    }

    /// Commits a record; a refused one comes back with why.
    fn append(&self, record: UsageRecord) -> Result<(), Box<Refused>> {
        let Ok(mut file) = self.file.lock() else {
            return Err(Box::new(Refused { error: std::io::Error::other("the journal lock is poisoned"), record }));
        };
        file.append(record)
    }

    /// Records appended so far.
    pub fn appended(&self) -> u64 {
        self.file.lock().map(|f| f.appended()).unwrap_or(0)
    }
}

/// What the lock guards: the wallets and the holds on them.
struct Books {
    wallets: HashMap<String, Wallet>,
    holds: HashMap<u64, Hold>,
    next_hold: u64,
}

impl Books {
    fn reserve(&mut self, workspace_id: &str, amount: Credits) -> Result<HoldId, LedgerError> {
        let wallet =
            self.wallets.get_mut(workspace_id).ok_or_else(|| LedgerError::UnknownWorkspace(workspace_id.to_owned()))?;
        let amount = Credits(amount.0.max(0));
        if wallet.available().0 < amount.0 {
            return Err(LedgerError::Insufficient { available: wallet.available(), needed: amount });
        }
        wallet.reserved.0 += amount.0;
        let id = self.next_hold;
        self.next_hold += 1;
        self.holds.insert(id, Hold { workspace_id: workspace_id.to_owned(), amount });
        Ok(HoldId(id))
    }

    /// Frees a hold and charges `cost` (capped at the hold): the hold and the charge.
    fn settle(&mut self, hold: HoldId, cost: Credits) -> Result<(Hold, Credits), LedgerError> {
        let hold = self.holds.remove(&hold.0).ok_or(LedgerError::UnknownHold(hold.0))?;
        let charge = Credits(cost.0.clamp(0, hold.amount.0));
        if let Some(wallet) = self.wallets.get_mut(&hold.workspace_id) {
            wallet.reserved.0 -= hold.amount.0;
            wallet.balance.0 -= charge.0;
        }
        Ok((hold, charge))
    }

    fn release(&mut self, hold: HoldId) -> Option<Hold> {
        let hold = self.holds.remove(&hold.0)?;
        if let Some(wallet) = self.wallets.get_mut(&hold.workspace_id) {
            wallet.reserved.0 -= hold.amount.0;
        }
        Some(hold)
    }

    /// The invariant a repair restores: each wallet's `reserved` is the sum of its holds.
    fn recount_reserved(&mut self) {
        for wallet in self.wallets.values_mut() {
            wallet.reserved = Credits::ZERO;
        }
        for hold in self.holds.values() {
            if let Some(wallet) = self.wallets.get_mut(&hold.workspace_id) {
                wallet.reserved.0 += hold.amount.0;
            }
        }
    }
}

struct LedgerInner {
    books: Mutex<Books>,
    journal: Journal,
    writer: mpsc::Sender<(LedgerWrite, Option<Ack>)>,
    metrics: EngineMetrics,
}

/// A handle on the ledger (cheap to clone; every clone is the same ledger).
#[derive(Clone)]
pub struct BillingLedger {
    inner: Arc<LedgerInner>,
    /// Books shared with other gateways, when there are: then `inner`'s books stay empty.
    shared: Option<Arc<dyn SharedWallets>>,
}

impl BillingLedger {
    /// A ledger over the wallets' committed balances. `writer` is the group-commit queue (see `spawn_writer`).
    pub fn new(
        wallets: impl IntoIterator<Item = (String, Credits)>,
        journal: Journal,
        writer: mpsc::Sender<(LedgerWrite, Option<Ack>)>,
        metrics: EngineMetrics,
    ) -> Self {
        let wallets =
            wallets.into_iter().map(|(id, balance)| (id, Wallet { balance, reserved: Credits::ZERO })).collect();
        let books = Mutex::new(Books { wallets, holds: HashMap::new(), next_hold: 1 });
        BillingLedger { inner: Arc::new(LedgerInner { books, journal, writer, metrics }), shared: None }
    }

    /// This ledger with its books in `shared` (other gateways' too) rather than in memory.
    pub fn with_shared(mut self, shared: Arc<dyn SharedWallets>) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Whether the books are shared with other gateways.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    fn guarded<R>(&self, body: impl FnOnce(&mut Books) -> R) -> Option<R> {
        guarded("ledger", &self.inner.books, &self.inner.metrics.restarts, body, Books::recount_reserved)
    }

    /// Holds `amount` of the workspace's credits if its wallet can cover it.
    pub async fn reserve(&self, workspace_id: &str, amount: Credits) -> Result<HoldId, LedgerError> {
        if let Some(shared) = &self.shared {
            return shared.reserve(workspace_id, amount).await;
        }
        self.guarded(|books| books.reserve(workspace_id, amount)).unwrap_or(Err(LedgerError::Unavailable))
    }

    /// Charges `cost` (capped at the hold) with its usage record, frees the hold, and returns once the record is
    /// committed (to the journal, or with shared books to the database); if it is refused, nothing is charged.
    pub async fn settle(&self, hold: HoldId, cost: Credits, record: UsageRecord) -> Result<Credits, LedgerError> {
        match &self.shared {
            Some(shared) => Self::settle_shared(shared.clone(), self.inner.metrics.clone(), hold, cost, record).await,
            None => self.settle_local(hold, cost, record),
        }
    }

    /// Settles without waiting for the commit (a client that left has no response to complete).
    pub fn settle_detached(&self, hold: HoldId, cost: Credits, record: UsageRecord) {
        match &self.shared {
            Some(shared) => {
                let settle = Self::settle_shared(shared.clone(), self.inner.metrics.clone(), hold, cost, record);
                spawn_or_log("settle", async move { settle.await.map(|_| ()) });
            }
            None => {
                let _ = self.settle_local(hold, cost, record);
            }
        }
    }

    async fn settle_shared(
        shared: Arc<dyn SharedWallets>,
        metrics: EngineMetrics,
        hold: HoldId,
        cost: Credits,
        record: UsageRecord,
    ) -> Result<Credits, LedgerError> {
        let counted = metrics.money.hold_end(&record.workspace_id, &record);
        match shared.settle(hold, cost, Some(record)).await {
            Ok((held, charge)) => {
                counted.count(held.amount, charge);
                Ok(charge)
            }
            Err(error @ (LedgerError::Store(_) | LedgerError::Refused(_))) => {
                // The database could not take it (or would not take the record): nothing is charged, and the hold
                // is freed once it can.
                let unrecorded = UsageRecord { status: "released".into(), ..Default::default() };
                spawn_or_log("release", release_shared(shared, metrics, hold, None, unrecorded));
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    fn settle_local(&self, hold: HoldId, cost: Credits, mut record: UsageRecord) -> Result<Credits, LedgerError> {
        let (hold, charge) = self.guarded(|books| books.settle(hold, cost)).unwrap_or(Err(LedgerError::Unavailable))?;
        let counted = self.inner.metrics.money.hold_end(&hold.workspace_id, &record);
        record.workspace_id = hold.workspace_id;
        record.credits_milli = charge.0;
        if let Err(refused) = self.inner.journal.append(record) {
            // Not committed: undo, so memory matches what is durable.
            let Refused { error, record } = *refused;
            if let Some(wallet) = lock(&self.inner.books).wallets.get_mut(&record.workspace_id) {
                wallet.balance.0 += charge.0;
            }
            tracing::error!(%error, "usage journal refused a record");
            return Err(LedgerError::Store(error.to_string()));
        }
        counted.count(hold.amount, charge);
        Ok(charge)
    }

    /// Frees a hold with nothing charged (the call failed). A zero-credit record may still be kept for statistics.
    pub fn release(&self, hold: HoldId, record: Option<UsageRecord>) {
        if let Some(shared) = &self.shared {
            let unrecorded = UsageRecord { status: "released".into(), ..Default::default() };
            let release = release_shared(shared.clone(), self.inner.metrics.clone(), hold, record, unrecorded);
            spawn_or_log("release", release);
            return;
        }
        let Some(hold) = self.guarded(|books| books.release(hold)).flatten() else { return };
        let Some(mut record) = record else {
            let unrecorded = UsageRecord { status: "released".into(), ..Default::default() };
            self.inner.metrics.money.hold_end(&hold.workspace_id, &unrecorded).count(hold.amount, Credits::ZERO);
            return;
        };
        self.inner.metrics.money.hold_end(&hold.workspace_id, &record).count(hold.amount, Credits::ZERO);
        record.workspace_id = hold.workspace_id;
        record.credits_milli = 0;
        if let Err(refused) = self.inner.journal.append(record) {
            tracing::warn!(error = %refused.error, "usage journal refused a zero-credit record");
        }
    }

    /// Adds credits to a wallet; answers the new balance once the top-up is committed to the store.
    pub async fn top_up(&self, workspace_id: &str, amount: Credits) -> Result<Credits, LedgerError> {
        if let Some(shared) = &self.shared {
            return shared.top_up(workspace_id, amount).await;
        }
        let balance = {
            let mut books = lock(&self.inner.books);
            let wallet = books
                .wallets
                .get_mut(workspace_id)
                .ok_or_else(|| LedgerError::UnknownWorkspace(workspace_id.into()))?;
            wallet.balance.0 += amount.0;
            wallet.balance
        };
        let write = LedgerWrite::TopUp { workspace_id: workspace_id.to_owned(), amount };
        let (ack, committed) = oneshot::channel();
        let writer = &self.inner.writer;
        writer.send((write, Some(ack))).await.map_err(|_| LedgerError::Store("the writer stopped".into()))?;
        committed.await.unwrap_or_else(|_| Err("the writer stopped".into())).map_err(LedgerError::Store)?;
        Ok(balance)
    }

    /// Opens a new workspace's wallet (a wallet already open is left as it is).
    pub fn open_wallet(&self, workspace_id: &str, balance: Credits) {
        let mut books = lock(&self.inner.books);
        books.wallets.entry(workspace_id.to_owned()).or_insert(Wallet { balance, reserved: Credits::ZERO });
    }

    /// The wallet now (with shared books, as the database has it; `None` also when it cannot be read).
    pub async fn wallet(&self, workspace_id: &str) -> Option<Wallet> {
        if let Some(shared) = &self.shared {
            return shared
                .wallet(workspace_id)
                .await
                .inspect_err(|e| tracing::warn!(error = %e, "cannot read a shared wallet"))
                .ok()
                .flatten();
        }
        lock(&self.inner.books).wallets.get(workspace_id).copied()
    }

    /// Injects a panic (supervision tests): caught, counted, the reservations recounted, and the ledger serves on.
    pub fn crash(&self) {
        let _ = self.guarded(|_| panic!("injected panic"));
    }
}

/// Frees a shared hold (storing `record` at no charge, if any), retrying while the database cannot be reached
/// (every 0.1 s at first, then every 5 s), so a hold outlives an outage only as long as the outage lasts.
async fn release_shared(
    shared: Arc<dyn SharedWallets>,
    metrics: EngineMetrics,
    hold: HoldId,
    mut record: Option<UsageRecord>,
    unrecorded: UsageRecord,
) -> Result<(), LedgerError> {
    let counted = record.as_ref().map(|r| metrics.money.hold_end(&r.workspace_id, r));
    let mut wait = std::time::Duration::from_millis(100);
    let held = loop {
        match shared.settle(hold, Credits::ZERO, record.clone()).await {
            Ok((held, _)) => break held,
            Err(LedgerError::Store(error)) => {
                tracing::warn!(%error, hold = hold.0, "shared ledger: cannot free a hold yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
            Err(LedgerError::Refused(error)) if record.is_some() => {
                // The record is what the database will not take: the hold is freed without it.
                tracing::error!(%error, hold = hold.0, "shared ledger: a failed call's record was refused; dropped");
                record = None;
            }
            Err(LedgerError::UnknownHold(_)) => {
                // The failed settlement had committed as the connection broke: it stands, charged and recorded.
                tracing::warn!(hold = hold.0, "shared ledger: the hold was settled after all; nothing to free");
                return Ok(());
            }
            Err(error) => return Err(error),
        }
    };
    let counted = counted.unwrap_or_else(|| metrics.money.hold_end(&held.workspace_id, &unrecorded));
    counted.count(held.amount, Credits::ZERO);
    Ok(())
}

/// Runs a shared-books write that nobody waits for on this thread's runtime; its failure is logged.
fn spawn_or_log(what: &'static str, work: impl std::future::Future<Output = Result<(), LedgerError>> + Send + 'static) {
    let logged = async move {
        if let Err(error) = work.await {
            tracing::error!(%error, "shared ledger: {what} failed");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(_) => {
            tokio::spawn(logged);
        }
        Err(_) => tracing::error!("shared ledger: {what} outside a runtime; the hold expires with its gateway"),
    }
}

#[cfg(test)]
mod tests;
