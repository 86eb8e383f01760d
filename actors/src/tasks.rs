//! Tasks (000): a named prompt with revisions whose traffic is split by weight. This module holds the definitions,
//! their validation against the catalogue, the `{{variable}}` templates and the revision selection. The
//! `RevisionRouter` actor (`engine::router`) owns the live set and publishes it as an immutable snapshot.

use crate::catalogue::{Catalogue, Modality};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// What a task answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Json,
    Text,
    Csv,
    Pdf,
    Image,
    Audio,
}

impl OutputFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Json => "json",
            OutputFormat::Text => "text",
            OutputFormat::Csv => "csv",
            OutputFormat::Pdf => "pdf",
            OutputFormat::Image => "image",
            OutputFormat::Audio => "audio",
        }
    }

    /// The kind of model that produces this output.
    pub fn modality(self) -> Modality {
        match self {
            OutputFormat::Json | OutputFormat::Text | OutputFormat::Csv | OutputFormat::Pdf => Modality::Chat,
            OutputFormat::Image => Modality::Image,
            OutputFormat::Audio => Modality::Speech,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_weight() -> u32 {
    1
}

/// One version of a task's prompt, with the model that runs it and its share of the traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revision {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Share of the traffic among the active revisions (0 takes none unless asked for by id or tag).
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default = "default_true")]
    pub active: bool,
    pub model: String,
    /// Used when the model fails before answering, or when the caller asks for it (`use_fallback_model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// The prompt, with `{{variable}}` placeholders filled from `task_input`.
    pub user_prompt: String,
    /// Model parameters: `temperature`, `max_tokens`, `top_p`, `stop` (chat); `width`, `height`, … (image);
    /// `voice`, `voice_settings`, `output_format` (audio).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// A task: its output, its inputs and its revisions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Set from the path or the file name; a body may repeat it.
    #[serde(default)]
    pub slug: String,
    #[serde(default)]
    pub description: String,
    pub output_format: OutputFormat,
    /// Whether a run must send an image (multipart `image`, or an `image` media_ref in `task_input`).
    #[serde(default)]
    pub image_required: bool,
    /// JSON Schema the output must satisfy (json tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
    #[serde(default)]
    pub revisions: Vec<Revision>,
}

/// A problem with a task definition: which field, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid { field: field.into(), message: message.into() }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Slugs, revision ids and tags: letters, digits, `-`, `_` and `.`, 1 to 64 characters.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

impl TaskSpec {
    /// Checks the definition on its own and against `catalogue`. `strict_models`: refuse models the catalogue does
    /// not have (the admin API); tasks loaded from storage keep them, and a run says what is missing.
    pub fn validate(&self, catalogue: &Catalogue, strict_models: bool) -> Result<(), Invalid> {
        if !valid_name(&self.slug) {
            return Err(Invalid::new("slug", "a task slug is 1 to 64 letters, digits, `-`, `_` or `.`"));
        }
        if self.schema.is_some() && self.output_format != OutputFormat::Json {
            return Err(Invalid::new("schema", "only json tasks take a schema"));
        }
        if let Some(schema) = &self.schema {
            if !schema.is_object() {
                return Err(Invalid::new("schema", "the schema must be a JSON Schema object"));
            }
        }
        if self.image_required && self.output_format.modality() != Modality::Chat {
            return Err(Invalid::new("image_required", "only chat-based tasks (json, text, csv, pdf) take an image"));
        }
        let mut ids = BTreeSet::new();
        let mut tags = BTreeSet::new();
        for (i, revision) in self.revisions.iter().enumerate() {
            let at = |field: &str| format!("revisions[{i}].{field}");
            if !valid_name(&revision.id) {
                return Err(Invalid::new(at("id"), "a revision id is 1 to 64 letters, digits, `-`, `_` or `.`"));
            }
            if !ids.insert(revision.id.as_str()) {
                return Err(Invalid::new(at("id"), format!("revision id `{}` is used twice", revision.id)));
            }
            if let Some(tag) = &revision.tag {
                if !valid_name(tag) {
                    return Err(Invalid::new(at("tag"), "a tag is 1 to 64 letters, digits, `-`, `_` or `.`"));
                }
                if revision.active && !tags.insert(tag.as_str()) {
                    return Err(Invalid::new(at("tag"), format!("tag `{tag}` is on two active revisions")));
                }
            }
            if revision.user_prompt.trim().is_empty() {
                return Err(Invalid::new(at("user_prompt"), "the user prompt is empty"));
            }
            Template::parse(&revision.user_prompt).map_err(|m| Invalid::new(at("user_prompt"), m))?;
            if let Some(system) = &revision.system_prompt {
                Template::parse(system).map_err(|m| Invalid::new(at("system_prompt"), m))?;
            }
            let wanted = self.output_format.modality();
            for (field, name) in std::iter::once(("model", Some(&revision.model)))
                .chain([("fallback_model", revision.fallback_model.as_ref())])
            {
                let Some(name) = name else { continue };
                match catalogue.model(name) {
                    Some(model) if model.modality != wanted => {
                        return Err(Invalid::new(
                            at(field),
                            format!(
                                "`{name}` is a {} model; a {} task needs a {} model",
                                model.modality.as_str(),
                                self.output_format.as_str(),
                                wanted.as_str()
                            ),
                        ))
                    }
                    None if strict_models => {
                        return Err(Invalid::new(at(field), format!("`{name}` is not in the model catalogue")))
                    }
                    _ => {}
                }
            }
            if revision.fallback_model.as_deref() == Some(revision.model.as_str()) {
                return Err(Invalid::new(at("fallback_model"), "the fallback model is the model itself"));
            }
        }
        if self.revisions.iter().any(|r| r.active) && self.revisions.iter().filter(|r| r.active).all(|r| r.weight == 0)
        {
            return Err(Invalid::new("revisions", "the active revisions' weights are all zero: no traffic could flow"));
        }
        Ok(())
    }

    pub fn revision(&self, id: &str) -> Option<&Revision> {
        self.revisions.iter().find(|r| r.id == id)
    }
}

/// How a run names its revision.
#[derive(Clone, Copy, Debug, Default)]
pub struct Selector<'a> {
    pub revision_id: Option<&'a str>,
    pub revision_tag: Option<&'a str>,
    /// `X-Session-Id`: the same session keeps landing on the same revision.
    pub session: Option<&'a str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelectError {
    /// No active revision with this id.
    UnknownId(String),
    UnknownTag(String),
    /// The task has no active revision with traffic.
    NoTraffic,
}

/// FNV-1a: a stable hash, the same in every process and release.
fn stable_hash(parts: &[&str]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for byte in part.bytes().chain([0xff]) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
    }
    hash
}

impl TaskSpec {
    /// Picks the revision for a run: by id or tag when asked (active ones only), else by weight; sticky for a
    /// session, random (`roll` in `0..1`) otherwise.
    pub fn select(&self, selector: Selector<'_>, roll: f64) -> Result<&Revision, SelectError> {
        if let Some(id) = selector.revision_id {
            return self.revisions.iter().find(|r| r.id == id && r.active).ok_or(SelectError::UnknownId(id.to_owned()));
        }
        if let Some(tag) = selector.revision_tag {
            return self
                .revisions
                .iter()
                .find(|r| r.active && r.tag.as_deref() == Some(tag))
                .ok_or(SelectError::UnknownTag(tag.to_owned()));
        }
        let total: u64 = self.revisions.iter().filter(|r| r.active).map(|r| u64::from(r.weight)).sum();
        if total == 0 {
            return Err(SelectError::NoTraffic);
        }
        let point = match selector.session {
            Some(session) => stable_hash(&[&self.slug, session]) % total,
            None => ((roll.clamp(0.0, 1.0) * total as f64) as u64).min(total - 1),
        };
        let mut cumulative = 0;
        for revision in self.revisions.iter().filter(|r| r.active) {
            cumulative += u64::from(revision.weight);
            if point < cumulative {
                return Ok(revision);
            }
        }
        Err(SelectError::NoTraffic)
    }
}

/// A prompt template: text with `{{name}}` placeholders (names are letters, digits, `_`, `.` and `-`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template<'a> {
    pieces: Vec<Piece<'a>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Variable(&'a str),
}

impl<'a> Template<'a> {
    pub fn parse(text: &'a str) -> Result<Template<'a>, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Text(&rest[..open]));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| "a `{{` is never closed with `}}`".to_owned())?;
            let name = after[..close].trim();
            let ok =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !ok {
                return Err(format!("`{{{{{}}}}}` is not a variable name", &after[..close]));
            }
            pieces.push(Piece::Variable(name));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest));
        }
        Ok(Template { pieces })
    }

    /// The variables, in order of first use.
    pub fn variables(&self) -> Vec<&'a str> {
        let mut seen = Vec::new();
        for piece in &self.pieces {
            if let Piece::Variable(name) = piece {
                if !seen.contains(name) {
                    seen.push(*name);
                }
            }
        }
        seen
    }

    /// Fills the placeholders in one pass: a value is inserted as data, never read again as a template.
    /// `Err` lists every variable `value` has no value for.
    pub fn render(&self, value: impl Fn(&str) -> Option<String>) -> Result<String, Vec<String>> {
        let mut out = String::new();
        let mut missing = Vec::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Variable(name) => match value(name) {
                    Some(v) => out.push_str(&v),
                    None => {
                        if !missing.iter().any(|m: &String| m == name) {
                            missing.push((*name).to_owned());
                        }
                    }
                },
            }
        }
        if missing.is_empty() {
            Ok(out)
        } else {
            Err(missing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(id: &str, weight: u32) -> Revision {
        Revision {
            id: id.into(),
            tag: None,
            weight,
            active: true,
            model: "sim-chat".into(),
            fallback_model: None,
            system_prompt: None,
            user_prompt: "Summarise {{text}}".into(),
            params: Default::default(),
        }
    }

    fn task(revisions: Vec<Revision>) -> TaskSpec {
        TaskSpec {
            slug: "summarise".into(),
            description: String::new(),
            output_format: OutputFormat::Text,
            image_required: false,
            schema: None,
            revisions,
        }
    }

    #[test]
    fn templates_render_once_and_name_every_missing_variable() {
        let t = Template::parse("Translate {{text}} into {{ language }}; again: {{text}}").unwrap();
        assert_eq!(t.variables(), ["text", "language"]);
        let value = |n: &str| (n == "text").then(|| "{{language}}".to_owned());
        assert_eq!(t.render(value), Err(vec!["language".to_owned()]));
        let value = |n: &str| Some(if n == "text" { "{{language}}".to_owned() } else { "French".to_owned() });
        assert_eq!(t.render(value).unwrap(), "Translate {{language}} into French; again: {{language}}");
        assert!(Template::parse("broken {{text").is_err());
        assert!(Template::parse("bad {{a b}}").is_err());
    }

    #[test]
    fn weighted_selection_converges_to_the_weights() {
        use rand::{Rng, SeedableRng};
        let task = task(vec![revision("a", 70), revision("b", 20), revision("c", 10), revision("off", 0)]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let n = 100_000;
        let mut counts = std::collections::HashMap::new();
        for _ in 0..n {
            let r = task.select(Selector::default(), rng.gen::<f64>()).unwrap();
            *counts.entry(r.id.clone()).or_insert(0) += 1;
        }
        // Within 1 percentage point of each weight (about 4.5 standard deviations for 100,000 draws).
        for (id, share) in [("a", 0.70), ("b", 0.20), ("c", 0.10)] {
            let got = f64::from(counts[id]) / f64::from(n);
            assert!((got - share).abs() < 0.01, "{id}: {got}");
        }
        assert!(!counts.contains_key("off"), "a zero weight takes no traffic");
    }

    #[test]
    fn sessions_stick_and_ids_and_tags_pick_active_revisions_only() {
        let mut b = revision("b", 50);
        b.tag = Some("candidate".into());
        let mut old = revision("old", 50);
        old.active = false;
        let task = task(vec![revision("a", 50), b, old]);
        for session in ["user-1", "user-2", "user-3", "user-4"] {
            let first = task.select(Selector { session: Some(session), ..Default::default() }, 0.0).unwrap().id.clone();
            for roll in [0.1, 0.5, 0.99] {
                let again = task.select(Selector { session: Some(session), ..Default::default() }, roll).unwrap();
                assert_eq!(again.id, first);
            }
        }
        let by_tag = Selector { revision_tag: Some("candidate"), ..Default::default() };
        assert_eq!(task.select(by_tag, 0.0).unwrap().id, "b");
        let inactive = Selector { revision_id: Some("old"), ..Default::default() };
        assert_eq!(task.select(inactive, 0.0), Err(SelectError::UnknownId("old".into())));
    }

    #[test]
    fn definitions_are_checked_against_the_catalogue() {
        let catalogue = Catalogue::builtin().unwrap();
        assert!(task(vec![revision("a", 1)]).validate(&catalogue, true).is_ok());
        let mut wrong = revision("a", 1);
        wrong.model = "flux-1-pro".into();
        assert_eq!(task(vec![wrong]).validate(&catalogue, true).unwrap_err().field, "revisions[0].model");
        let mut gone = revision("a", 1);
        gone.model = "gpt-9".into();
        assert!(task(vec![gone.clone()]).validate(&catalogue, true).is_err());
        assert!(task(vec![gone]).validate(&catalogue, false).is_ok(), "kept when loaded, refused when saved");
        assert!(task(vec![revision("a", 0), revision("b", 0)]).validate(&catalogue, true).is_err());
        assert!(task(vec![revision("a", 1), revision("a", 1)]).validate(&catalogue, true).is_err());
    }
}

#[cfg(test)]
#[path = "tasks_props.rs"]
mod props;
