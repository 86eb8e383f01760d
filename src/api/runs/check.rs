//! The checks of 002 and API.md that do not depend on the model: platform-managed fields, execution options,
//! the scope's shape.

use super::RunRequest;
use crate::api::body::from_object;
use crate::api::errors::ApiError;
use serde_json::{Map, Value};
use std::time::Duration;

/// Fields the platform manages: refused anywhere in a request.
const PLATFORM_FIELDS: [&str; 4] = ["resources", "alias", "collection", "namespace"];
/// Execution options a run may set.
const OPTIONS: [&str; 1] = ["timeout_ms"];

/// A scope: starts with a letter or digit; letters, digits, `.`, `_`, `-`; at most 64 characters.
pub fn check_scope(scope: &str) -> Result<(), ApiError> {
    let mut chars = scope.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if first_ok && rest_ok && scope.len() <= 64 {
        return Ok(());
    }
    Err(ApiError::invalid_scope(format!(
        "Invalid scope `{}`: a scope starts with a letter or number, may contain letters, numbers, `.`, `_` and `-`, and is at most 64 characters",
        scope.chars().take(80).collect::<String>()
    )))
}

/// The first platform-managed field (or `hardware_tier`) anywhere in `value`, with its path.
fn forbidden(value: &Value, path: &str) -> Option<(String, String)> {
    match value {
        Value::Object(map) => map.iter().find_map(|(key, inner)| {
            let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            if PLATFORM_FIELDS.contains(&key.as_str()) {
                return Some((
                    here.clone(),
                    format!("`{here}`: {key} is managed by the platform and must not be supplied"),
                ));
            }
            if key == "hardware_tier" {
                return Some((
                    here.clone(),
                    format!(
                        "`{here}`: do not send hardware_tier; hardware is resolved from the published model release"
                    ),
                ));
            }
            forbidden(inner, &here)
        }),
        Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, inner)| forbidden(inner, &format!("{path}[{i}]")))
        }
        _ => None,
    }
}

/// The checks of 002 and API.md that do not depend on the model: answers the request and its options.
pub(super) fn check(object: Map<String, Value>) -> Result<(RunRequest, Option<Duration>), ApiError> {
    if let Some((path, message)) = forbidden(&Value::Object(object.clone()), "") {
        return Err(ApiError::forbidden_field(&path, message));
    }
    if object.contains_key("parameters") {
        return Err(ApiError::unknown_field("parameters")
            .with_message("Unknown field: parameters. Use `params`, not `parameters`"));
    }
    let request: RunRequest = from_object(object)?;
    if let Some(params) = &request.params {
        if !params.is_object() {
            return Err(ApiError::invalid_field("params", "`params` must be a JSON object"));
        }
    }
    let mut timeout = None;
    match &request.options {
        None => {}
        Some(Value::Object(options)) => {
            for (key, value) in options {
                if !OPTIONS.contains(&key.as_str()) {
                    return Err(ApiError::unknown_field(&format!("options.{key}")).with_message(format!(
                        "Unknown execution option `{key}`: the allowed options are {}",
                        OPTIONS.join(", ")
                    )));
                }
                match value.as_u64() {
                    Some(ms @ 1..=600_000) => timeout = Some(Duration::from_millis(ms)),
                    _ => {
                        return Err(ApiError::invalid_field(
                            "options.timeout_ms",
                            "`options.timeout_ms` must be an integer from 1 to 600000",
                        ))
                    }
                }
            }
        }
        Some(_) => return Err(ApiError::invalid_field("options", "`options` must be a JSON object")),
    }
    if let Some(scope) = &request.scope {
        check_scope(scope)?;
    }
    if !request.input.is_object() {
        return Err(ApiError::invalid_field("input", "`input` must be a JSON object"));
    }
    Ok((request, timeout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scopes_follow_the_rest_api_rules() {
        for good in ["test", "a", "A.b_c-9", &"x".repeat(64)] {
            assert!(check_scope(good).is_ok(), "{good}");
        }
        for bad in ["", ".a", "-a", "_a", "a b", "a/b", "é", &"x".repeat(65)] {
            assert_eq!(check_scope(bad).map_err(|e| e.code()), Err("invalid_scope"), "{bad}");
        }
    }

    #[test]
    fn platform_fields_are_found_at_any_depth() {
        let v = json!({"input": {"documents": [{"metadata": {"namespace": "x"}}]}});
        assert_eq!(forbidden(&v, "").map(|f| f.0), Some("input.documents[0].metadata.namespace".into()));
        assert!(forbidden(&json!({"input": {"text": "collection"}}), "").is_none());
        assert_eq!(
            forbidden(&json!({"options": {"hardware_tier": "gpu"}}), "").map(|f| f.0),
            Some("options.hardware_tier".into())
        );
    }
}

#[cfg(test)]
#[path = "check_props.rs"]
mod props;
