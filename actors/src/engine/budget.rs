//! A spending cap shared by the calls of one browser session: each call holds the most it can cost before it goes
//! upstream, and settles what it really cost, so concurrent calls can never together spend past the cap. With
//! several gateways the count lives in Redis (`SharedLimits::budget_hold`), so the cap holds across all of them.

use super::session::{Rejection, SharedLimits};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One call's hold on its session's cap: settled with what the call was charged, or given back when dropped
/// unsettled (the call failed, or was abandoned before it was charged).
pub struct BudgetHold {
    budget: Arc<Budget>,
    amount: Option<i64>,
}

impl BudgetHold {
    /// The hold becomes the `cost` really charged.
    pub fn settle(mut self, cost: i64) {
        if let Some(amount) = self.amount.take() {
            self.budget.adjust(cost - amount);
        }
    }
}

impl Drop for BudgetHold {
    fn drop(&mut self) {
        if let Some(amount) = self.amount.take() {
            self.budget.adjust(-amount);
        }
    }
}

/// Where a shared cap is counted: the shared limits, the session's entry, and how long it must live (the token's
/// remaining life).
pub struct SharedBudget {
    pub limits: Arc<dyn SharedLimits>,
    pub session: String,
    pub ttl: Duration,
}

pub struct Budget {
    /// Millicredits the session may spend.
    limit: i64,
    /// Millicredits spent, plus those held by calls in flight (here, or, when shared, as the count began).
    used: AtomicI64,
    shared: Option<SharedBudget>,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget").field("limit", &self.limit).field("shared", &self.shared.is_some()).finish()
    }
}

impl Budget {
    /// A cap of `limit` millicredits of which `spent` are spent already.
    pub fn new(limit: i64, spent: i64) -> Self {
        Budget { limit, used: AtomicI64::new(spent), shared: None }
    }

    /// A cap counted in the shared limits, begun (by the first gateway to use it) at `spent`.
    pub fn shared(limit: i64, spent: i64, shared: SharedBudget) -> Self {
        Budget { limit, used: AtomicI64::new(spent), shared: Some(shared) }
    }

    /// Holds `amount` if the cap allows it (`None` when it does not); `Unreachable` when the shared count cannot be
    /// reached. The shared question runs on by itself if the caller gives up waiting (its future dropped), and a
    /// hold it took then is given back, so an abandoned call never shrinks the cap.
    pub async fn hold(self: &Arc<Self>, amount: i64) -> Result<Option<BudgetHold>, Rejection> {
        let Some(shared) = &self.shared else {
            return Ok(self.try_hold(amount).then(|| BudgetHold { budget: self.clone(), amount: Some(amount) }));
        };
        let spent = self.used.load(Ordering::Acquire);
        let asked = shared.limits.budget_hold(&shared.session, self.limit, spent, amount, shared.ttl);
        // The hold is made in the task: if nobody takes it (the caller gone, before or after the answer), it is
        // dropped with the channel, and its `Drop` gives it back.
        let (answer, answered) = tokio::sync::oneshot::channel();
        let budget = self.clone();
        tokio::spawn(async move {
            let held = asked.await.map(|held| held.then(|| BudgetHold { budget, amount: Some(amount) }));
            let _ = answer.send(held);
        });
        match answered.await {
            Ok(Ok(held)) => Ok(held),
            Ok(Err(error)) => {
                tracing::warn!(%error, "shared limits: a session's spending cap cannot be reached");
                Err(Rejection::Unreachable)
            }
            Err(_) => Err(Rejection::Unreachable),
        }
    }

    /// Holds `amount` if the cap allows it (this process's count).
    pub fn try_hold(&self, amount: i64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(amount).filter(|next| *next <= self.limit)
            })
            .is_ok()
    }

    fn adjust(&self, delta: i64) {
        let Some(shared) = &self.shared else {
            self.used.fetch_add(delta, Ordering::AcqRel);
            return;
        };
        let adjust = shared.limits.budget_adjust(&shared.session, delta);
        super::supervise::spawn_logged("correcting a session's shared spending cap", "the cap counts the hold", adjust);
    }

    /// Millicredits left to hold (this process's count).
    pub fn left(&self) -> i64 {
        self.limit - self.used.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::Budget;
    use std::sync::Arc;

    #[test]
    fn concurrent_holds_never_pass_the_cap() {
        let budget = Arc::new(Budget::new(1_000, 100));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let b = budget.clone();
                std::thread::spawn(move || (0..100).filter(|_| b.try_hold(10)).count())
            })
            .collect();
        let held: usize = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
        assert_eq!(held, 90);
        assert_eq!(budget.left(), 0);
        let held = super::BudgetHold { budget: budget.clone(), amount: Some(10) };
        held.settle(4);
        drop(super::BudgetHold { budget: budget.clone(), amount: Some(10) });
        assert_eq!(budget.left(), 16);
    }
}
