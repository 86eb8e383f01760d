//! Supervision helpers: a handler that panics stops its actor, and the actor's `Supervisor` restarts it.

use actix::{Actor, ActorContext, AsyncContext};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs a handler body; if it panics, counts and logs it and stops the actor so its supervisor restarts it.
pub fn guarded<A, R>(
    actor: &'static str,
    ctx: &mut A::Context,
    restarts: &prometheus::IntCounterVec,
    body: impl FnOnce() -> R,
) -> Option<R>
where
    A: Actor,
    A::Context: ActorContext + AsyncContext<A>,
{
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => Some(value),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            tracing::error!(actor, %message, "actor panicked; its supervisor restarts it");
            restarts.with_label_values(&[actor]).inc();
            ctx.stop();
            None
        }
    }
}
