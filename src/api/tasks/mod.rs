//! Task runs (000): `POST /api/v1/tasks/{task}/run` picks a revision (id, tag, session or weight), fills its prompt
//! from `task_input`, runs it on the revision's model (with its fallback) and shapes the answer by the task's
//! output format: json (checked against the schema, one repair attempt), text, csv, pdf, image or audio. Also the
//! per-revision statistics of an A/B test, and the list of tasks a workspace sees.

pub(crate) mod admin;
mod chat;
mod files;
mod plan;
pub(crate) mod run;
pub(crate) mod stats;
pub(crate) mod view;
mod wire;

use actix_web::web;

pub use admin::{AdminTaskList, RevisionPatch};
pub use stats::{RevisionStats, StatsResponse};
pub use view::{RevisionView, TaskList, TaskView};
pub use wire::{RevisionRef, RunFile, RunMetadata, RunQuery, RunRequest, TaskRun};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(crate::api::resource("/api/v1/tasks").route(web::get().to(view::list_tasks)))
        .service(crate::api::resource("/api/v1/tasks/{task}/run").route(web::post().to(run::run_task)))
        .service(
            crate::api::resource("/api/v1/tasks/{task}/revisions/stats").route(web::get().to(stats::revision_stats)),
        );
    admin::configure(cfg);
}
