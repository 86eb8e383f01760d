//! Background work that must yield to requests.

/// Gives the calling thread the lowest normal priority (nice 19): when a request wakes up, the scheduler runs it
/// before this thread, and threads this one starts (SQLite's behind the usage importer's connection, the HNSW
/// build pool of the vector optimiser) inherit that. Not the idle class: under sustained load that could starve
/// the work forever. `what` names the work in the debug log when the priority cannot be changed.
pub fn lower_priority(what: &str) {
    use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
    let low = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other);
    if let Err(e) =
        thread_priority::set_thread_priority_and_policy(thread_priority::thread_native_id(), ThreadPriority::Min, low)
    {
        tracing::debug!(error = ?e, "could not lower the priority of the {what}");
    }
}
