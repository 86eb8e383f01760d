//! Property tests of the run checks: scopes pass exactly when they follow the rules (a letter or digit first, then
//! letters, digits, `.`, `_`, `-`, at most 64 in all); any request object is a run or a 4xx, never a panic; a
//! platform-managed field is found at any depth.

// The one JSON strategy, compiled into each props module that uses it.
#[allow(clippy::duplicate_mod)]
#[path = "../props_json.rs"]
mod props_json;

use super::*;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

const WORDS: &[&str] = &[
    "model",
    "mode",
    "scope",
    "input",
    "params",
    "options",
    "timeout_ms",
    "reporting_group",
    "use_fallback_model",
    "execute",
    "index",
    "search",
    "documents",
    "text",
    "namespace",
    "collection",
    "alias",
    "resources",
    "hardware_tier",
    "parameters",
];

/// The rule, written out on its own.
fn follows_the_rules(scope: &str) -> bool {
    let ok = |c: char, first: bool| c.is_ascii_alphanumeric() || (!first && matches!(c, '.' | '_' | '-'));
    scope.chars().count() <= 64 && scope.chars().enumerate().all(|(i, c)| ok(c, i == 0)) && !scope.is_empty()
}

fn refused(scope: &str) -> Result<(), TestCaseError> {
    match check_scope(scope) {
        Ok(()) => Err(TestCaseError::fail(format!("{scope:?} was accepted"))),
        Err(e) => {
            prop_assert_eq!(e.code(), "invalid_scope");
            prop_assert_eq!(e.status.as_u16(), 400);
            prop_assert_eq!(e.detail.param.as_deref(), Some("scope"));
            Ok(())
        }
    }
}

/// `value` with `key` set deep inside it, at the path `steps` picks (into objects and arrays it finds, else here).
fn plant(value: &mut Value, steps: &[prop::sample::Index], key: &str) {
    match (value, steps.split_first()) {
        (Value::Object(map), Some((step, rest))) if !map.is_empty() => {
            let i = step.index(map.len());
            if let Some((_, inner)) = map.iter_mut().nth(i) {
                if inner.is_object() || inner.is_array() {
                    return plant(inner, rest, key);
                }
            }
            map.insert(key.to_owned(), Value::Bool(true));
        }
        (Value::Array(items), Some((step, rest))) if !items.is_empty() => {
            let i = step.index(items.len());
            if !items[i].is_object() && !items[i].is_array() {
                items[i] = Value::Object(Map::new());
            }
            plant(&mut items[i], rest, key);
        }
        (Value::Object(map), _) => {
            map.insert(key.to_owned(), Value::Bool(true));
        }
        (other, _) => *other = serde_json::json!({ key: true }),
    }
}

proptest! {
    #![proptest_config(config())]

    /// Scopes made by the rules pass.
    #[test]
    fn props_scope_valid_scopes_pass(scope in "[A-Za-z0-9][A-Za-z0-9._-]{0,63}") {
        prop_assert!(check_scope(&scope).is_ok(), "{:?}", scope);
    }

    /// Any string: no panic, and accepted exactly when it follows the rules.
    #[test]
    fn props_scope_any_string_is_judged_by_the_rules(scope in prop_oneof![".{0,80}", "[A-Za-z0-9._ /é-]{0,70}"]) {
        if follows_the_rules(&scope) {
            prop_assert!(check_scope(&scope).is_ok(), "{:?}", scope);
        } else {
            refused(&scope)?;
        }
    }

    /// Valid characters past 64, a bad first character, or one bad character anywhere: refused.
    #[test]
    fn props_scope_broken_rules_are_refused(
        long in "[A-Za-z0-9][A-Za-z0-9._-]{64,100}",
        good in "[A-Za-z0-9][A-Za-z0-9._-]{0,62}",
        first in "[._-]",
        bad in "[^A-Za-z0-9._-]",
        at in any::<prop::sample::Index>(),
    ) {
        refused(&long)?;
        refused(&format!("{first}{good}"))?;
        let mut chars: Vec<char> = good.chars().collect();
        chars.insert(at.index(chars.len() + 1), bad.chars().next().unwrap_or(' '));
        refused(&chars.into_iter().collect::<String>())?;
    }

    /// Any object: a run and its options, or a 4xx.
    #[test]
    fn props_scope_any_run_object_is_checked_or_a_4xx(value in props_json::json(WORDS), input in props_json::json(WORDS)) {
        let mut object = match value {
            Value::Object(map) => map,
            other => Map::from_iter([("input".to_owned(), other)]),
        };
        object.entry("model").or_insert_with(|| Value::String("m".into()));
        object.entry("input").or_insert(input);
        match check(object) {
            Ok((request, timeout)) => {
                prop_assert!(request.input.is_object());
                prop_assert!(timeout.is_none_or(|t| t.as_millis() >= 1 && t.as_millis() <= 600_000));
                if let Some(scope) = &request.scope {
                    prop_assert!(follows_the_rules(scope));
                }
            }
            Err(e) => prop_assert!(e.status.is_client_error(), "{} {:?}", e.status, e.detail),
        }
    }

    /// A platform-managed field planted anywhere in a request is refused with its path.
    #[test]
    fn props_scope_platform_fields_are_found_anywhere(
        input in props_json::json(WORDS),
        key in prop::sample::select(&["resources", "alias", "collection", "namespace", "hardware_tier"][..]),
        steps in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
    ) {
        let mut request = serde_json::json!({"model": "m", "input": input});
        plant(&mut request, &steps, key);
        let found = forbidden(&request, "");
        prop_assert!(found.is_some(), "{} not found in {}", key, request);
        let object = match request {
            Value::Object(map) => map,
            _ => return Err(TestCaseError::fail("not an object")),
        };
        let e = check(object).err().ok_or_else(|| TestCaseError::fail("accepted"))?;
        prop_assert_eq!(e.code(), "forbidden_field");
    }
}
