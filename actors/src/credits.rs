//! Credits as integers: the ledger counts millicredits, so the API can show at most three decimals exactly.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// An amount of credits, held as millicredits (1 credit = 1000).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Credits(pub i64);

impl Credits {
    pub const ZERO: Credits = Credits(0);

    pub fn from_milli(milli: i64) -> Self {
        Credits(milli)
    }

    pub fn milli(self) -> i64 {
        self.0
    }

    /// In credits, for metrics (not for money: a float is not exact).
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// Parses a decimal such as `12`, `0.5` or `-3.125`; more than three decimals is an error, never rounded.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let valid = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() && frac.is_empty() || !valid(whole) || !valid(frac) {
            return Err(format!("`{text}` is not a decimal number"));
        }
        if frac.len() > 3 {
            return Err(format!("`{text}` has more than 3 decimals"));
        }
        let whole: i64 =
            if whole.is_empty() { 0 } else { whole.parse().map_err(|_| format!("`{text}` is too large"))? };
        let mut milli_frac = 0i64;
        for (i, b) in frac.bytes().enumerate() {
            milli_frac += i64::from(b - b'0') * 10i64.pow(2 - i as u32);
        }
        let milli = whole
            .checked_mul(1000)
            .and_then(|w| w.checked_add(milli_frac))
            .ok_or_else(|| format!("`{text}` is too large"))?;
        Ok(Credits(if negative { -milli } else { milli }))
    }

    /// The value as a JSON number with at most three decimals.
    pub fn to_json(self) -> serde_json::Value {
        let n: serde_json::Number = match self.to_string().parse() {
            Ok(n) => n,
            Err(_) => serde_json::Number::from(self.0 / 1000),
        };
        serde_json::Value::Number(n)
    }
}

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (whole, frac) = (abs / 1000, abs % 1000);
        if frac == 0 {
            write!(f, "{sign}{whole}")
        } else {
            let frac = format!("{frac:03}");
            write!(f, "{sign}{whole}.{}", frac.trim_end_matches('0'))
        }
    }
}

impl Serialize for Credits {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Credits {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let text = match &value {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) => s.clone(),
            other => return Err(serde::de::Error::custom(format!("expected a number of credits, got {other}"))),
        };
        Credits::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimals_exactly() {
        assert_eq!(Credits::parse("12").map(Credits::milli), Ok(12_000));
        assert_eq!(Credits::parse("0.5").map(Credits::milli), Ok(500));
        assert_eq!(Credits::parse("-3.125").map(Credits::milli), Ok(-3125));
        assert_eq!(Credits::parse(".25").map(Credits::milli), Ok(250));
    }

    #[test]
    fn refuses_more_than_three_decimals_and_junk() {
        assert!(Credits::parse("0.0001").is_err());
        assert!(Credits::parse("abc").is_err());
        assert!(Credits::parse("").is_err());
        assert!(Credits::parse("1e5").is_err());
    }

    #[test]
    fn displays_with_at_most_three_decimals() {
        assert_eq!(Credits(1500).to_string(), "1.5");
        assert_eq!(Credits(2000).to_string(), "2");
        assert_eq!(Credits(-1).to_string(), "-0.001");
        assert_eq!(Credits(1500).to_json(), serde_json::json!(1.5));
    }
}
