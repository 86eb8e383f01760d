//! Supervision of the engine's shared state: an operation that panics is caught where it runs, counted as a restart
//! of its part (`switchyard_actor_restarts_total{actor}`), logged, and its state repaired, so one bad request never
//! takes a key's limits, the wallets or the provider pool down with it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `state`; a lock left poisoned (which `guarded` never does) is taken over as it is.
pub fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `body` on the locked state. If it panics: counts and logs a restart of `part`, lets `repair` restore the
/// state's invariants, and returns `None`.
pub fn guarded<T, R>(
    part: &'static str,
    state: &Mutex<T>,
    restarts: &prometheus::IntCounterVec,
    body: impl FnOnce(&mut T) -> R,
    repair: impl FnOnce(&mut T),
) -> Option<R> {
    let mut state = lock(state);
    match catch_unwind(AssertUnwindSafe(|| body(&mut state))) {
        Ok(value) => Some(value),
        Err(panic) => {
            let message = panic_message(&*panic);
            tracing::error!(actor = part, %message, "engine part panicked; its state is repaired and it serves on");
            restarts.with_label_values(&[part]).inc();
            repair(&mut state);
            None
        }
    }
}

/// Runs an actor's handler body; if it panics, counts and logs it and stops the actor so its supervisor restarts it.
pub fn guarded_actor<A, R>(
    actor: &'static str,
    ctx: &mut A::Context,
    restarts: &prometheus::IntCounterVec,
    body: impl FnOnce() -> R,
) -> Option<R>
where
    A: actix::Actor,
    A::Context: actix::ActorContext + actix::AsyncContext<A>,
{
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => Some(value),
        Err(panic) => {
            tracing::error!(actor, message = %panic_message(&*panic), "actor panicked; its supervisor restarts it");
            restarts.with_label_values(&[actor]).inc();
            actix::ActorContext::stop(ctx);
            None
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Runs `work` (a write to a shared backend that nobody waits for) on the current runtime; a failure is logged as
/// `what` failed, with the consequence `then`.
pub fn spawn_logged(
    what: &'static str,
    then: &'static str,
    work: impl std::future::Future<Output = Result<(), String>> + Send + 'static,
) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                if let Err(error) = work.await {
                    tracing::warn!(%error, "{what} failed; {then}");
                }
            });
        }
        Err(_) => tracing::warn!("{what} outside a runtime; {then}"),
    }
}
