//! The operator's task API under `/admin/tasks`: define, read and delete tasks, add revisions and change their
//! weight, tag or active flag. Every change is stored (it survives a restart) and then handed to the
//! `RevisionRouter`, which publishes it to the next run: a weight change is a gradual rollout, live.
//! `?workspace_id=` makes a task that workspace's own; without it the task is shared by every workspace.

use crate::api::body::Json;
use crate::api::docs::{AdminOnly, Idempotent, JsonBody};
use crate::api::errors::ApiError;
use crate::api::principal::Admin;
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use futures::future::LocalBoxFuture;
use serde::{Deserialize, Serialize};
use switchyard_actors::engine::router::{PutTask, RemoveTask};
use switchyard_actors::tasks::{valid_name, Revision, TaskSpec};
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(crate::api::resource("/admin/tasks").route(web::get().to(list)))
        .service(
            crate::api::resource("/admin/tasks/{task}")
                .route(web::get().to(get))
                .route(web::put().to(put))
                .route(web::delete().to(delete)),
        )
        .service(crate::api::resource("/admin/tasks/{task}/revisions").route(web::post().to(add_revision)))
        .service(crate::api::resource("/admin/tasks/{task}/revisions/{id}").route(web::patch().to(patch_revision)));
}

/// Whose task: a workspace's own, or (absent) shared by all.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    pub workspace_id: Option<String>,
}

/// A change to one revision; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevisionPatch {
    pub weight: Option<u32>,
    /// A new tag; `""` removes it.
    pub tag: Option<String>,
    pub active: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct AdminTaskList {
    pub object: &'static str,
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<TaskSpec>,
}

/// Whose tasks an operator's request is about: `?workspace_id=` (which must exist), or the shared ones (`""`).
/// Extracted after the admin key is checked, so a stranger learns nothing about workspaces.
pub struct Owned(String);

impl FromRequest for Owned {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let query = web::Query::<Owner>::from_request(&req, &mut Payload::None).await?;
            Admin::from_request(&req, &mut Payload::None).await?;
            let state = req.app_data::<web::Data<AppState>>().ok_or_else(|| ApiError::internal("no state"))?;
            Ok(Owned(owner(state, query.into_inner()).await?))
        })
    }
}

async fn owner(state: &AppState, owner: Owner) -> Result<String, ApiError> {
    match owner.workspace_id {
        None => Ok(String::new()),
        Some(id) => match state.store.workspace(&id).await.map_err(ApiError::store)? {
            Some(_) => Ok(id),
            None => Err(ApiError::not_found(format!("No workspace `{id}`")).with_param("workspace_id")),
        },
    }
}

fn no_task(slug: &str) -> ApiError {
    ApiError::not_found(format!("No task `{slug}`"))
}

/// Validates `task` fully (models must be in the catalogue), stores it, and publishes it.
async fn save(state: &AppState, workspace_id: &str, task: TaskSpec) -> Result<TaskSpec, ApiError> {
    task.validate(&state.catalogue, true).map_err(|e| ApiError::invalid_field(&e.field, e.message))?;
    crate::tasks::check_schema(&task).map_err(|e| ApiError::invalid_field("schema", e))?;
    for (i, revision) in task.revisions.iter().enumerate() {
        crate::tasks::check_params(task.output_format, &revision.params)
            .map_err(|e| ApiError::invalid_field(&format!("revisions[{i}].params"), e))?;
    }
    let definition = serde_json::to_string(&task).map_err(|e| ApiError::internal(e.to_string()))?;
    state.store.put_task(workspace_id, &task.slug, Some(&definition)).await.map_err(ApiError::store)?;
    state
        .engine()
        .router
        .send(PutTask { workspace_id: workspace_id.to_owned(), task: task.clone() })
        .await
        .map_err(|e| ApiError::internal(format!("revision router: {e}")))?;
    Ok(task)
}

/// The task stored under exactly this owner (a workspace's edits never touch the shared task).
fn current(state: &AppState, workspace_id: &str, slug: &str) -> Option<TaskSpec> {
    state.engine().tasks.load().get_exact(workspace_id, slug).map(|t| TaskSpec::clone(t))
}

#[utoipa::path(get, path = "/admin/tasks", tag = "admin", params(Owner),
    responses((status = 200, body = AdminTaskList), AdminOnly),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list(state: web::Data<AppState>, Owned(workspace_id): Owned) -> Result<HttpResponse, ApiError> {
    let data = state.engine().tasks.load().visible(&workspace_id).iter().map(|t| TaskSpec::clone(t)).collect();
    Ok(HttpResponse::Ok().json(AdminTaskList { object: "list", data }))
}

#[utoipa::path(get, path = "/admin/tasks/{task}", tag = "admin", params(("task" = String, Path), Owner),
    responses((status = 200, description = "The task's definition"), AdminOnly),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    path: web::Path<String>,
    Owned(workspace_id): Owned,
) -> Result<HttpResponse, ApiError> {
    let slug = path.into_inner();
    let task = state.engine().tasks.load().get(&workspace_id, &slug).cloned().ok_or_else(|| no_task(&slug))?;
    Ok(HttpResponse::Ok().json(&*task))
}

#[utoipa::path(put, path = "/admin/tasks/{task}", tag = "admin", params(("task" = String, Path), Owner),
    request_body(content = Object, description = "`description`, `output_format`, `image_required`, `schema`, `revisions`"),
    responses((status = 200, description = "The task as stored"), JsonBody, AdminOnly),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn put(
    state: web::Data<AppState>,
    path: web::Path<String>,
    Owned(workspace_id): Owned,
    Json(mut task): Json<TaskSpec>,
) -> Result<HttpResponse, ApiError> {
    let slug = path.into_inner();
    if !valid_name(&slug) {
        return Err(ApiError::invalid_field("task", "A task slug is 1 to 64 letters, digits, `-`, `_` or `.`"));
    }
    if !task.slug.is_empty() && task.slug != slug {
        return Err(ApiError::invalid_field("slug", "The body's slug differs from the path's"));
    }
    task.slug = slug;
    let _edit = state.task_edits.lock().await;
    let task = save(&state, &workspace_id, task).await?;
    Ok(HttpResponse::Ok().json(task))
}

#[utoipa::path(delete, path = "/admin/tasks/{task}", tag = "admin", params(("task" = String, Path), Owner),
    responses((status = 204), AdminOnly),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn delete(
    state: web::Data<AppState>,
    path: web::Path<String>,
    Owned(workspace_id): Owned,
) -> Result<HttpResponse, ApiError> {
    let slug = path.into_inner();
    let _edit = state.task_edits.lock().await;
    if current(&state, &workspace_id, &slug).is_none() {
        return Err(no_task(&slug));
    }
    state.store.put_task(&workspace_id, &slug, None).await.map_err(ApiError::store)?;
    state
        .engine()
        .router
        .send(RemoveTask { workspace_id, slug })
        .await
        .map_err(|e| ApiError::internal(format!("revision router: {e}")))?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/admin/tasks/{task}/revisions", tag = "admin", params(("task" = String, Path), Owner),
    request_body(content = Object, description = "`id`, `tag`, `weight`, `active`, `model`, `fallback_model`, `system_prompt`, `user_prompt`, `params`"),
    responses((status = 201, description = "The task with its new revision"), JsonBody, AdminOnly, Idempotent),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn add_revision(
    state: web::Data<AppState>,
    path: web::Path<String>,
    Owned(workspace_id): Owned,
    Json(revision): Json<Revision>,
) -> Result<HttpResponse, ApiError> {
    let slug = path.into_inner();
    let _edit = state.task_edits.lock().await;
    let mut task = current(&state, &workspace_id, &slug).ok_or_else(|| no_task(&slug))?;
    if task.revision(&revision.id).is_some() {
        return Err(ApiError::new(
            actix_web::http::StatusCode::CONFLICT,
            crate::api::errors::ErrorType::ConflictError,
            "revision_exists",
            format!("Task `{slug}` already has a revision `{}`", revision.id),
        )
        .with_param("id"));
    }
    task.revisions.push(revision);
    let task = save(&state, &workspace_id, task).await?;
    Ok(HttpResponse::Created().json(task))
}

#[utoipa::path(patch, path = "/admin/tasks/{task}/revisions/{id}", tag = "admin",
    params(("task" = String, Path), ("id" = String, Path), Owner), request_body = RevisionPatch,
    responses((status = 200, description = "The task as changed"), JsonBody, AdminOnly),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn patch_revision(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    Owned(workspace_id): Owned,
    Json(patch): Json<RevisionPatch>,
) -> Result<HttpResponse, ApiError> {
    let (slug, id) = path.into_inner();
    let _edit = state.task_edits.lock().await;
    let mut task = current(&state, &workspace_id, &slug).ok_or_else(|| no_task(&slug))?;
    let revision = task
        .revisions
        .iter_mut()
        .find(|r| r.id == id)
        .ok_or_else(|| ApiError::not_found(format!("Task `{slug}` has no revision `{id}`")))?;
    if let Some(weight) = patch.weight {
        revision.weight = weight;
    }
    if let Some(tag) = patch.tag {
        revision.tag = (!tag.is_empty()).then_some(tag);
    }
    if let Some(active) = patch.active {
        revision.active = active;
    }
    let task = save(&state, &workspace_id, task).await?;
    Ok(HttpResponse::Ok().json(task))
}
