//! What a run has settled on before it calls a model (`Plan`), and its answer shaped as `task.run`.

use super::wire::{RevisionRef, RunFile, RunMetadata, TaskRun};
use crate::api::errors::ApiError;
use crate::api::form::FileInput;
use crate::clock::now_unix;
use actix_web::HttpResponse;
use serde_json::{Map, Value};
use std::time::Instant;
use switchyard_actors::tasks::{Revision, TaskSpec};
use switchyard_actors::ModelSpec;

/// The usage records' endpoint for a run, and for its repair attempt (counted in the run's tokens and credits, not
/// as a request of its own).
pub(super) const RUN_ENDPOINT: &str = "/api/v1/tasks/run";
pub(super) const REPAIR_ENDPOINT: &str = "/api/v1/tasks/run#repair";

/// What a run has settled on before it calls a model.
pub(super) struct Plan<'a> {
    pub(super) task: &'a TaskSpec,
    pub(super) revision: &'a Revision,
    /// The revision's model, its fallback chain set to the revision's fallback model.
    pub(super) model: ModelSpec,
    pub(super) system: Option<String>,
    pub(super) prompt: String,
    pub(super) image: Option<FileInput>,
    pub(super) reporting_group: Option<String>,
    pub(super) use_fallback: bool,
    pub(super) started: Instant,
}

impl Plan<'_> {
    pub(super) fn task_ref(&self) -> Option<(String, String)> {
        Some((self.task.slug.clone(), self.revision.id.clone()))
    }

    /// The revision's `params` as the output format's parameters (checked when the task was saved).
    pub(super) fn params<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_value(Value::Object(self.revision.params.clone()))
            .map_err(|e| ApiError::internal(format!("revision `{}` params: {e}", self.revision.id)))
    }
}

pub(super) enum RunAnswer {
    Run(Box<TaskRun>),
    Stream(HttpResponse),
}

pub(super) fn task_run(
    plan: &Plan<'_>,
    id: String,
    output: Value,
    files: Vec<RunFile>,
    metadata: RunMetadata,
) -> TaskRun {
    TaskRun {
        id,
        object: "task.run",
        created: now_unix(),
        task: plan.task.slug.clone(),
        revision: RevisionRef { id: plan.revision.id.clone(), tag: plan.revision.tag.clone() },
        output,
        output_format: plan.task.output_format.as_str(),
        files,
        usage: None,
        metadata,
        input: Map::new(),
        reporting_group: plan.reporting_group.clone(),
    }
}
