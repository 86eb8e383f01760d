//! `GET /api/v1/tasks`: the tasks a workspace sees, as it sees them.

use crate::api::docs::Authenticated;
use crate::api::errors::ApiError;
use crate::api::principal::Admitted;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use switchyard_actors::tasks::{TaskSpec, Template};
use utoipa::ToSchema;

/// A task as a workspace sees it.
#[derive(Serialize, ToSchema)]
pub struct TaskView {
    pub slug: String,
    pub description: String,
    pub output_format: &'static str,
    pub image_required: bool,
    /// The `{{variables}}` a run must supply in `task_input`.
    pub variables: Vec<String>,
    pub revisions: Vec<RevisionView>,
    /// Shared by every workspace (built in, or made by the operator), or this workspace's own.
    pub shared: bool,
}

#[derive(Serialize, ToSchema)]
pub struct RevisionView {
    pub id: String,
    pub tag: Option<String>,
    pub weight: u32,
    pub active: bool,
    pub model: String,
    pub fallback_model: Option<String>,
}

pub fn task_view(task: &TaskSpec, shared: bool) -> TaskView {
    let mut variables: Vec<String> = Vec::new();
    for revision in &task.revisions {
        let texts = std::iter::once(revision.user_prompt.as_str()).chain(revision.system_prompt.as_deref());
        for text in texts {
            if let Ok(template) = Template::parse(text) {
                for name in template.variables() {
                    if !variables.iter().any(|v| v == name) {
                        variables.push(name.to_owned());
                    }
                }
            }
        }
    }
    TaskView {
        slug: task.slug.clone(),
        description: task.description.clone(),
        output_format: task.output_format.as_str(),
        image_required: task.image_required,
        variables,
        revisions: task
            .revisions
            .iter()
            .map(|r| RevisionView {
                id: r.id.clone(),
                tag: r.tag.clone(),
                weight: r.weight,
                active: r.active,
                model: r.model.clone(),
                fallback_model: r.fallback_model.clone(),
            })
            .collect(),
        shared,
    }
}

#[derive(Serialize, ToSchema)]
pub struct TaskList {
    pub object: &'static str,
    pub data: Vec<TaskView>,
}

#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks",
    responses((status = 200, body = TaskList), Authenticated),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list_tasks(
    state: web::Data<AppState>,
    Admitted { principal, .. }: Admitted,
) -> Result<HttpResponse, ApiError> {
    let snapshot = state.engine().tasks.load();
    let data = snapshot
        .visible(&principal.workspace_id)
        .iter()
        .map(|t| task_view(t, snapshot.get_exact(&principal.workspace_id, &t.slug).is_none()))
        .collect();
    Ok(HttpResponse::Ok().json(TaskList { object: "list", data }))
}
