//! A spending cap shared by the calls of one browser session: each call holds the most it can cost before it goes
//! upstream, and settles what it really cost, so concurrent calls can never together spend past the cap.

use std::sync::atomic::{AtomicI64, Ordering};

#[derive(Debug)]
pub struct Budget {
    /// Millicredits the session may spend.
    limit: i64,
    /// Millicredits spent, plus those held by calls in flight.
    used: AtomicI64,
}

impl Budget {
    /// A cap of `limit` millicredits of which `spent` are spent already.
    pub fn new(limit: i64, spent: i64) -> Self {
        Budget { limit, used: AtomicI64::new(spent) }
    }

    /// Holds `amount` if the cap allows it.
    pub fn try_hold(&self, amount: i64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(amount).filter(|next| *next <= self.limit)
            })
            .is_ok()
    }

    /// Replaces a hold of `held` with the `cost` really charged.
    pub fn settle(&self, held: i64, cost: i64) {
        self.used.fetch_add(cost - held, Ordering::AcqRel);
    }

    /// Gives a hold back (nothing was charged).
    pub fn release(&self, held: i64) {
        self.used.fetch_sub(held, Ordering::AcqRel);
    }

    /// Millicredits left to hold.
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
        budget.settle(10, 4);
        budget.release(10);
        assert_eq!(budget.left(), 16);
    }
}
