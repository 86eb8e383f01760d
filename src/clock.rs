//! The gateway's clock: Unix seconds for API objects (`created`), milliseconds for usage records.

pub fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

pub use switchyard_actors::engine::call::now_millis;
