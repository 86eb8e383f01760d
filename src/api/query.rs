//! Query values several surfaces share: time ranges (`from`, `to`) in RFC 3339, `YYYY-MM-DD` or Unix seconds.

use super::errors::ApiError;

fn parse_time(field: &str, value: &str) -> Result<i64, ApiError> {
    use time::format_description::well_known::Rfc3339;
    let value = value.trim();
    if let Ok(seconds) = value.parse::<i64>() {
        return Ok(seconds);
    }
    if let Ok(t) = time::OffsetDateTime::parse(value, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let day = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(date) = time::Date::parse(value, &day) {
        return Ok(date.midnight().assume_utc().unix_timestamp());
    }
    Err(ApiError::invalid_field(field, format!("`{field}` must be RFC 3339, YYYY-MM-DD or Unix seconds")))
}

/// A time range in Unix seconds: `from` (default 30 days ago) inclusive, `to` (default now) exclusive.
pub fn time_range(from: Option<&str>, to: Option<&str>) -> Result<(i64, i64), ApiError> {
    let now = crate::clock::now_unix();
    let from = from.map(|v| parse_time("from", v)).transpose()?.unwrap_or(now - 30 * 86_400);
    let to = to.map(|v| parse_time("to", v)).transpose()?.unwrap_or(now + 1);
    if to <= from {
        return Err(ApiError::invalid_field("to", "`to` must be after `from`"));
    }
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bounds_take_three_forms() {
        assert_eq!(parse_time("from", "86400").unwrap(), 86_400);
        assert_eq!(parse_time("from", "1970-01-02").unwrap(), 86_400);
        assert_eq!(parse_time("from", "1970-01-02T00:00:00Z").unwrap(), 86_400);
        assert_eq!(parse_time("from", "yesterday").unwrap_err().code(), "invalid_field");
    }
}
