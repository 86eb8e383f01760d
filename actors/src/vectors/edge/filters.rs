//! The payload filters the embedded store builds: field paths, keyword and integer matches, the tenant filter,
//! the metadata conditions, and point ids from their UUID strings.

use crate::vectors::{validate_filter, MetadataFilter, StoreResult, Tenant};
use qdrant_edge::external::uuid::Uuid;
use qdrant_edge::{AnyVariants, Condition, FieldCondition, Filter, JsonPath, Match, PointId};
use serde_json::Value;

/// A payload path. Only fixed field names and checked metadata names (letters, digits, `_`, `-`) get here, and
/// those always parse.
pub(super) fn key(path: &str) -> JsonPath {
    path.parse().unwrap_or_else(|()| unreachable!("payload path `{path}` was not checked"))
}

pub(super) fn keyword(field: &str, value: &str) -> Condition {
    Condition::Field(FieldCondition::new_match(key(field), Match::from(value.to_string())))
}

pub(super) fn integer(field: &str, value: i64) -> Condition {
    Condition::Field(FieldCondition::new_match(key(field), Match::from(value)))
}

pub(super) fn all_of(conditions: Vec<Condition>) -> Filter {
    Filter { must: Some(conditions), ..Filter::default() }
}

pub(super) fn tenant_filter(tenant: &Tenant) -> Filter {
    all_of(vec![keyword("tenant", &tenant.key())])
}

/// The metadata conditions, as Qdrant conditions on `metadata.<key>` (checked by [`validate_filter`] first).
pub(super) fn metadata_conditions(filter: &MetadataFilter) -> StoreResult<Vec<Condition>> {
    validate_filter(filter)?;
    let mut conditions = Vec::new();
    for (name, value) in filter {
        let path = key(&format!("metadata.{name}"));
        let condition = match value {
            Value::String(s) => FieldCondition::new_match(path, Match::from(s.clone())),
            Value::Bool(b) => FieldCondition::new_match(path, Match::from(*b)),
            Value::Number(n) => match n.as_i64() {
                Some(i) => FieldCondition::new_match(path, Match::from(i)),
                None => {
                    let f = n.as_f64().unwrap_or_default();
                    let exact = qdrant_edge::external::ordered_float::OrderedFloat(f);
                    FieldCondition::new_range(
                        path,
                        qdrant_edge::Range { lt: None, gt: None, gte: Some(exact), lte: Some(exact) },
                    )
                }
            },
            Value::Array(values) => {
                if values.iter().all(Value::is_string) {
                    let strings: Vec<String> = values.iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
                    FieldCondition::new_match(path, Match::from(strings))
                } else {
                    let ints: Vec<i64> = values.iter().filter_map(Value::as_i64).collect();
                    FieldCondition::new_match(path, Match::from(AnyVariants::Integers(ints.into_iter().collect())))
                }
            }
            Value::Null | Value::Object(_) => return Err(format!("filter `{name}`: unsupported value")),
        };
        conditions.push(Condition::Field(condition));
    }
    Ok(conditions)
}

pub(super) fn uuid_id(id: &str) -> StoreResult<PointId> {
    Uuid::parse_str(id).map(PointId::Uuid).map_err(|e| format!("bad point id: {e}"))
}
