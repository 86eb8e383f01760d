//! Arbitrary JSON for the providers' property tests: any shape, with the wire formats' own words among the keys and
//! strings so that generated values often get past the first `type` or field check. Included by each `*_props.rs`.

use proptest::prelude::*;
use serde_json::{Map, Number, Value};

/// Any JSON value (depth at most 4): nulls, booleans, integers, finite floats, strings, arrays and objects; keys and
/// strings are drawn from `words` half of the time.
pub(super) fn json(words: &'static [&'static str]) -> BoxedStrategy<Value> {
    let word = move || prop_oneof![prop::sample::select(words).prop_map(str::to_owned), ".{0,10}"];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        word().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((word(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
    .boxed()
}
