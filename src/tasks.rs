//! Where tasks come from at start: the examples built in from `config/tasks/`, the operator's `tasks.dir`, then
//! the changes made through the admin API (stored in the database, deletions included). Later sources win.

use crate::store::Store;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use switchyard_actors::engine::router::TaskSnapshot;
use switchyard_actors::tasks::TaskSpec;
use switchyard_actors::Catalogue;

/// The example tasks shipped in the binary, as (slug, TOML).
pub const BUILTIN: &[(&str, &str)] = &[
    ("summarize", include_str!("../config/tasks/summarize.toml")),
    ("extract-contact", include_str!("../config/tasks/extract-contact.toml")),
    ("meeting-minutes", include_str!("../config/tasks/meeting-minutes.toml")),
];

/// Parses and checks one task file; the slug is the file's name.
pub fn parse_file(slug: &str, text: &str, catalogue: &Catalogue) -> Result<TaskSpec, String> {
    let task = parse_unchecked_schema(slug, text, catalogue)?;
    check_schema(&task).map_err(|e| format!("task `{slug}`: {e}"))?;
    Ok(task)
}

/// `parse_file` but for the json schema, which is compiled on the task's first run. For the built-in examples,
/// whose schemas a unit test compiles: checking a schema builds jsonschema's meta-schema validator, 5.5 MiB of heap
/// kept for the life of the process, which a gateway that never runs a json task should not carry.
fn parse_unchecked_schema(slug: &str, text: &str, catalogue: &Catalogue) -> Result<TaskSpec, String> {
    let mut task: TaskSpec = toml::from_str(text).map_err(|e| format!("task `{slug}`: {e}"))?;
    if !task.slug.is_empty() && task.slug != slug {
        return Err(format!("task file `{slug}` says its slug is `{}`", task.slug));
    }
    task.slug = slug.to_owned();
    task.validate(catalogue, false).map_err(|e| format!("task `{slug}`: {e}"))?;
    for revision in &task.revisions {
        check_params(task.output_format, &revision.params)
            .map_err(|e| format!("task `{slug}` revision `{}` params: {e}", revision.id))?;
    }
    Ok(task)
}

/// A json task's schema must compile.
pub fn check_schema(task: &TaskSpec) -> Result<(), String> {
    match &task.schema {
        Some(schema) => jsonschema::validator_for(schema).map(|_| ()).map_err(|e| format!("schema: {e}")),
        None => Ok(()),
    }
}

/// Every task at start, by (workspace id or "", slug).
pub async fn load(dir: &str, catalogue: &Catalogue, store: &Store) -> Result<TaskSnapshot, String> {
    let mut tasks: HashMap<(String, String), TaskSpec> = HashMap::new();
    for (slug, text) in BUILTIN {
        tasks.insert((String::new(), (*slug).to_owned()), parse_unchecked_schema(slug, text, catalogue)?);
    }
    if !dir.is_empty() {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("tasks.dir `{dir}`: {e}"))?;
        for entry in entries {
            let path = entry.map_err(|e| format!("tasks.dir `{dir}`: {e}"))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let slug = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let task =
                parse_file(&slug, &text, catalogue).map_err(|e| format!("{}: {e}", Path::new(&path).display()))?;
            tasks.insert((String::new(), slug), task);
        }
    }
    for (workspace_id, slug, definition) in store.tasks().await.map_err(|e| format!("cannot load tasks: {e}"))? {
        let key = (workspace_id, slug);
        let Some(definition) = definition else {
            tasks.remove(&key);
            continue;
        };
        let parsed = serde_json::from_str::<TaskSpec>(&definition)
            .map_err(|e| e.to_string())
            .and_then(|t| t.validate(catalogue, false).map(|()| t).map_err(|e| e.to_string()));
        match parsed {
            Ok(task) => {
                tasks.insert(key, task);
            }
            Err(e) => tracing::warn!(workspace = %key.0, task = %key.1, error = %e, "stored task skipped"),
        }
    }
    let snapshot = TaskSnapshot::default();
    let mut set = switchyard_actors::engine::router::TaskSet::default();
    for ((workspace_id, _), task) in tasks {
        set.insert(workspace_id, task);
    }
    snapshot.store(Arc::new(set));
    Ok(snapshot)
}

// The shapes of a revision's `params`, one per kind of output.
/// Chat parameters a revision may set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatParams {
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Option<Vec<String>>,
}

/// Checks a revision's `params` for its output format (the admin API calls it before saving).
pub fn check_params(
    format: switchyard_actors::tasks::OutputFormat,
    params: &serde_json::Map<String, Value>,
) -> Result<(), String> {
    let object = Value::Object(params.clone());
    let result = match format.modality() {
        switchyard_actors::catalogue::Modality::Chat => serde_json::from_value::<ChatParams>(object).map(|_| ()),
        switchyard_actors::catalogue::Modality::Image => serde_json::from_value::<ImageParams>(object).map(|_| ()),
        _ => serde_json::from_value::<AudioParams>(object).map(|_| ()),
    };
    result.map_err(|e| e.to_string())
}

/// Image parameters a revision may set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageParams {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub num_inference_steps: Option<u32>,
    pub guidance_scale: Option<f64>,
    pub seed: Option<u64>,
    pub output_format: Option<String>,
}

/// Speech parameters a revision may set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioParams {
    pub voice: Option<String>,
    pub voice_settings: Option<Value>,
    pub output_format: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_examples_are_valid() {
        let catalogue = Catalogue::builtin().unwrap();
        for (slug, text) in BUILTIN {
            let task = parse_file(slug, text, &catalogue).unwrap();
            task.validate(&catalogue, true).unwrap();
        }
    }
}
