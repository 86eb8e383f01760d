//! `BillingLedger`: a wallet per workspace (balance and reserved), integer millicredits. A request reserves the
//! most it can cost before any upstream call, settles what it really cost after, and releases the rest. A
//! settlement is committed to the usage journal before the ledger answers, so before the caller reports the cost;
//! the importer then group-commits the journal into the store, where each record and its debit are one write.
//! Holds live in memory only and the balance moves only at settlement, so a process that dies leaves no hold
//! behind: on start every wallet's `reserved` is zero and its balance is what the committed usage left.

use super::journal::UsageJournal;
use super::metrics::EngineMetrics;
use super::supervise::guarded;
use crate::credits::Credits;
use actix::{Actor, Context, Handler, Message, ResponseFuture, Supervised};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

mod writer;

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
    #[error("the ledger is restarting")]
    Unavailable,
}

#[derive(Message)]
#[rtype(result = "Result<HoldId, LedgerError>")]
pub struct Reserve {
    pub workspace_id: String,
    pub amount: Credits,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HoldId(pub u64);

/// Charges `cost` (capped at the hold) with its usage record, frees the hold, and answers once committed.
#[derive(Message)]
#[rtype(result = "Result<Credits, LedgerError>")]
pub struct Settle {
    pub hold: HoldId,
    pub cost: Credits,
    pub record: UsageRecord,
}

/// Frees a hold with nothing charged (the call failed). A zero-credit record may still be kept for statistics.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release {
    pub hold: HoldId,
    pub record: Option<UsageRecord>,
}

#[derive(Message)]
#[rtype(result = "Result<Credits, LedgerError>")]
pub struct TopUp {
    pub workspace_id: String,
    pub amount: Credits,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct OpenWallet {
    pub workspace_id: String,
    pub balance: Credits,
}

#[derive(Message)]
#[rtype(result = "Option<Wallet>")]
pub struct GetWallet {
    pub workspace_id: String,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

struct Hold {
    workspace_id: String,
    amount: Credits,
}

type Ack = oneshot::Sender<Result<(), String>>;

/// The journal as the ledger (appending, on the engine's thread) and the importer (taking batches, on a thread of
/// its own) share it. The importer polls rather than being woken, so a settlement never pays for a wake-up.
#[derive(Clone)]
pub struct Journal {
    pub file: Arc<std::sync::Mutex<UsageJournal>>,
}

impl Journal {
    pub fn new(journal: UsageJournal) -> Self {
        Journal { file: Arc::new(std::sync::Mutex::new(journal)) }
    }

    fn append(&self, record: &UsageRecord) -> Result<(), String> {
        let mut file = self.file.lock().map_err(|_| "the journal lock is poisoned".to_owned())?;
        file.append(record).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Records appended so far.
    pub fn appended(&self) -> u64 {
        self.file.lock().map(|f| f.appended()).unwrap_or(0)
    }
}

pub struct BillingLedger {
    wallets: HashMap<String, Wallet>,
    holds: HashMap<u64, Hold>,
    next_hold: u64,
    journal: Journal,
    writer: mpsc::Sender<(LedgerWrite, Option<Ack>)>,
    metrics: EngineMetrics,
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
        BillingLedger { wallets, holds: HashMap::new(), next_hold: 1, journal, writer, metrics }
    }

    fn reserve(&mut self, msg: Reserve) -> Result<HoldId, LedgerError> {
        let wallet =
            self.wallets.get_mut(&msg.workspace_id).ok_or(LedgerError::UnknownWorkspace(msg.workspace_id.clone()))?;
        let amount = Credits(msg.amount.0.max(0));
        if wallet.available().0 < amount.0 {
            return Err(LedgerError::Insufficient { available: wallet.available(), needed: amount });
        }
        wallet.reserved.0 += amount.0;
        let id = self.next_hold;
        self.next_hold += 1;
        self.holds.insert(id, Hold { workspace_id: msg.workspace_id, amount });
        Ok(HoldId(id))
    }

    /// Applies a settlement and commits it to the journal; if the journal refuses it, nothing changes.
    fn settle(&mut self, msg: Settle) -> Result<Credits, LedgerError> {
        let hold = self.holds.remove(&msg.hold.0).ok_or(LedgerError::UnknownHold(msg.hold.0))?;
        let charge = Credits(msg.cost.0.clamp(0, hold.amount.0));
        if let Some(wallet) = self.wallets.get_mut(&hold.workspace_id) {
            wallet.reserved.0 -= hold.amount.0;
            wallet.balance.0 -= charge.0;
        }
        let mut record = msg.record;
        record.workspace_id = hold.workspace_id.clone();
        record.credits_milli = charge.0;
        if let Err(e) = self.journal.append(&record) {
            // Not committed: undo, so memory matches what is durable.
            if let Some(wallet) = self.wallets.get_mut(&hold.workspace_id) {
                wallet.balance.0 += charge.0;
            }
            tracing::error!(error = %e, "usage journal refused a record");
            return Err(LedgerError::Store(e));
        }
        Ok(charge)
    }

    fn release(&mut self, hold: HoldId) -> Option<String> {
        let hold = self.holds.remove(&hold.0)?;
        if let Some(wallet) = self.wallets.get_mut(&hold.workspace_id) {
            wallet.reserved.0 -= hold.amount.0;
        }
        Some(hold.workspace_id)
    }

    /// The invariant a restart restores: each wallet's `reserved` is the sum of its holds.
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

    fn backlog_done(&self) {
        self.metrics.hot.ledger_backlog.dec();
    }
}

impl Actor for BillingLedger {
    type Context = Context<Self>;
}

impl Supervised for BillingLedger {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!("billing ledger restarting; recounting reservations from its holds");
        self.recount_reserved();
    }
}

impl Handler<Reserve> for BillingLedger {
    type Result = Result<HoldId, LedgerError>;

    fn handle(&mut self, msg: Reserve, ctx: &mut Context<Self>) -> Self::Result {
        self.backlog_done();
        let restarts = self.metrics.restarts.clone();
        guarded::<Self, _>("ledger", ctx, &restarts, || self.reserve(msg)).unwrap_or(Err(LedgerError::Unavailable))
    }
}

impl Handler<Settle> for BillingLedger {
    type Result = Result<Credits, LedgerError>;

    fn handle(&mut self, msg: Settle, ctx: &mut Context<Self>) -> Self::Result {
        self.backlog_done();
        let restarts = self.metrics.restarts.clone();
        guarded::<Self, _>("ledger", ctx, &restarts, || self.settle(msg)).unwrap_or(Err(LedgerError::Unavailable))
    }
}

impl Handler<Release> for BillingLedger {
    type Result = ();

    fn handle(&mut self, msg: Release, ctx: &mut Context<Self>) {
        self.backlog_done();
        let restarts = self.metrics.restarts.clone();
        let workspace = guarded::<Self, _>("ledger", ctx, &restarts, || self.release(msg.hold)).flatten();
        if let (Some(workspace_id), Some(mut record)) = (workspace, msg.record) {
            record.workspace_id = workspace_id;
            record.credits_milli = 0;
            if let Err(e) = self.journal.append(&record) {
                tracing::warn!(error = %e, "usage journal refused a zero-credit record");
            }
        }
    }
}

impl Handler<TopUp> for BillingLedger {
    type Result = ResponseFuture<Result<Credits, LedgerError>>;

    fn handle(&mut self, msg: TopUp, _: &mut Context<Self>) -> Self::Result {
        let Some(wallet) = self.wallets.get_mut(&msg.workspace_id) else {
            let id = msg.workspace_id;
            return Box::pin(async move { Err(LedgerError::UnknownWorkspace(id)) });
        };
        wallet.balance.0 += msg.amount.0;
        let balance = wallet.balance;
        let writer = self.writer.clone();
        let write = LedgerWrite::TopUp { workspace_id: msg.workspace_id, amount: msg.amount };
        Box::pin(async move {
            let (ack, committed) = oneshot::channel();
            writer.send((write, Some(ack))).await.map_err(|_| LedgerError::Store("the writer stopped".into()))?;
            committed.await.unwrap_or_else(|_| Err("the writer stopped".into())).map_err(LedgerError::Store)?;
            Ok(balance)
        })
    }
}

impl Handler<OpenWallet> for BillingLedger {
    type Result = ();

    fn handle(&mut self, msg: OpenWallet, _: &mut Context<Self>) {
        self.wallets.entry(msg.workspace_id).or_insert(Wallet { balance: msg.balance, reserved: Credits::ZERO });
    }
}

impl Handler<GetWallet> for BillingLedger {
    type Result = Option<Wallet>;

    fn handle(&mut self, msg: GetWallet, _: &mut Context<Self>) -> Self::Result {
        self.wallets.get(&msg.workspace_id).copied()
    }
}

impl Handler<Crash> for BillingLedger {
    type Result = ();

    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        let restarts = self.metrics.restarts.clone();
        let _ = guarded::<Self, _>("ledger", ctx, &restarts, || panic!("injected panic"));
    }
}

#[cfg(test)]
mod tests;
