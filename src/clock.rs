//! The gateway's clock: Unix seconds for API objects (`created`) and the rows that keep them.

pub fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
