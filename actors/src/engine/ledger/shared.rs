//! Wallets shared by several gateways. The books live in a database (PostgreSQL) instead of this process: each
//! reservation is one atomic statement with its balance check, each settlement one statement that frees the hold,
//! stores the usage record and debits it, so a hold settles at most once whichever gateway asks. Every hold names
//! the gateway that took it; a gateway that stops beating (killed, cut off) has its holds released by any other
//! (`heartbeat`), so its credits come back.

use super::{HoldId, LedgerError, UsageRecord, Wallet};
use crate::credits::Credits;
use futures::future::BoxFuture;

/// A hold as a settlement found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettledHold {
    pub workspace_id: String,
    pub amount: Credits,
}

/// Where shared books are kept (the store implements it on PostgreSQL).
pub trait SharedWallets: Send + Sync + 'static {
    /// Holds `amount` of the workspace's credits if its wallet has them free; the hold's id.
    fn reserve(&self, workspace_id: &str, amount: Credits) -> BoxFuture<'static, Result<HoldId, LedgerError>>;

    /// Frees `hold`, and with a `record` stores it charged `cost` capped at the hold (the debit in the same
    /// statement). Answers the hold and the charge; `UnknownHold` when it was settled or released already.
    fn settle(
        &self,
        hold: HoldId,
        cost: Credits,
        record: Option<UsageRecord>,
    ) -> BoxFuture<'static, Result<(SettledHold, Credits), LedgerError>>;

    fn wallet(&self, workspace_id: &str) -> BoxFuture<'static, Result<Option<Wallet>, LedgerError>>;

    /// Adds credits; the new balance.
    fn top_up(&self, workspace_id: &str, amount: Credits) -> BoxFuture<'static, Result<Credits, LedgerError>>;

    /// Says this gateway is alive, and releases the holds of gateways that have not said so for a while: how many.
    fn heartbeat(&self) -> BoxFuture<'static, Result<u64, String>>;
}
