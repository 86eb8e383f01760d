//! The Qdrant filters the remote store builds (keyword matches, the tenant filter, the metadata conditions) and
//! payloads read back as JSON.

use crate::vectors::{validate_filter, MetadataFilter, StoreResult, Tenant};
use qdrant_client::qdrant::r#match::MatchValue;
use qdrant_client::qdrant::{Condition, Filter, Range, RepeatedIntegers, RepeatedStrings};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// A keyword match; explicit, as the client turns a `String` holding whitespace into a full-text match.
pub(super) fn keyword(field: &str, value: &str) -> Condition {
    Condition::matches(field, MatchValue::Keyword(value.to_string()))
}

pub(super) fn tenant_condition(tenant: &Tenant) -> Condition {
    keyword("tenant", &tenant.key())
}

pub(super) fn tenant_filter(tenant: &Tenant) -> Filter {
    Filter::must([tenant_condition(tenant)])
}

/// The metadata conditions, as Qdrant conditions on `metadata.<key>` (checked by [`validate_filter`] first).
pub(super) fn metadata_conditions(filter: &MetadataFilter) -> StoreResult<Vec<Condition>> {
    validate_filter(filter)?;
    let mut conditions = Vec::new();
    for (name, value) in filter {
        let path = format!("metadata.{name}");
        let condition = match value {
            Value::String(s) => Condition::matches(path, MatchValue::Keyword(s.clone())),
            Value::Bool(b) => Condition::matches(path, MatchValue::Boolean(*b)),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Condition::matches(path, MatchValue::Integer(i)),
                None => {
                    let f = n.as_f64().unwrap_or_default();
                    Condition::range(path, Range { gte: Some(f), lte: Some(f), ..Range::default() })
                }
            },
            Value::Array(values) => {
                if values.iter().all(Value::is_string) {
                    let strings = values.iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
                    Condition::matches(path, MatchValue::Keywords(RepeatedStrings { strings }))
                } else {
                    let integers = values.iter().filter_map(Value::as_i64).collect();
                    Condition::matches(path, MatchValue::Integers(RepeatedIntegers { integers }))
                }
            }
            Value::Null | Value::Object(_) => return Err(format!("filter `{name}`: unsupported value")),
        };
        conditions.push(condition);
    }
    Ok(conditions)
}

pub(super) fn to_json(payload: HashMap<String, qdrant_client::qdrant::Value>) -> Map<String, Value> {
    payload.into_iter().map(|(k, v)| (k, v.into_json())).collect()
}
