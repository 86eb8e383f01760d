//! The `RevisionRouter`: owns the tasks and their revisions and publishes them as an immutable snapshot that every
//! run reads without a message (a lock-free load). Changes go through the actor, one at a time, each one swapping
//! in a new snapshot: a weight change shifts traffic from the next run on.

use super::metrics::EngineMetrics;
use super::supervise::guarded_actor;
use crate::tasks::TaskSpec;
use actix::{Actor, Context, Handler, Message, Supervised};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;

/// Tasks by (workspace id, slug). The workspace id is empty for tasks every workspace shares (those from
/// `config/tasks/`, or made by the operator without a workspace).
#[derive(Clone, Debug, Default)]
pub struct TaskSet {
    tasks: HashMap<(String, String), Arc<TaskSpec>>,
}

impl TaskSet {
    /// The task `slug` as `workspace_id` sees it: its own, else the shared one.
    pub fn get(&self, workspace_id: &str, slug: &str) -> Option<&Arc<TaskSpec>> {
        self.tasks
            .get(&(workspace_id.to_owned(), slug.to_owned()))
            .or_else(|| self.tasks.get(&(String::new(), slug.to_owned())))
    }

    /// The task stored exactly under (`workspace_id`, `slug`), without falling back to the shared one.
    pub fn get_exact(&self, workspace_id: &str, slug: &str) -> Option<&Arc<TaskSpec>> {
        self.tasks.get(&(workspace_id.to_owned(), slug.to_owned()))
    }

    /// Adds a task at start (before the router runs).
    pub fn insert(&mut self, workspace_id: String, task: TaskSpec) {
        self.tasks.insert((workspace_id, task.slug.clone()), Arc::new(task));
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Every task visible to `workspace_id`, its own shadowing shared ones of the same slug.
    pub fn visible(&self, workspace_id: &str) -> Vec<Arc<TaskSpec>> {
        let mut out: HashMap<&str, &Arc<TaskSpec>> = HashMap::new();
        for ((owner, slug), task) in &self.tasks {
            if owner.is_empty() {
                out.entry(slug.as_str()).or_insert(task);
            }
        }
        for ((owner, slug), task) in &self.tasks {
            if owner == workspace_id {
                out.insert(slug.as_str(), task);
            }
        }
        let mut list: Vec<Arc<TaskSpec>> = out.into_values().cloned().collect();
        list.sort_by(|a, b| a.slug.cmp(&b.slug));
        list
    }
}

/// The published snapshot: runs `load()` it; only the router stores into it.
pub type TaskSnapshot = Arc<ArcSwap<TaskSet>>;

pub struct RevisionRouter {
    snapshot: TaskSnapshot,
    metrics: EngineMetrics,
}

impl RevisionRouter {
    pub fn new(snapshot: TaskSnapshot, metrics: EngineMetrics) -> Self {
        RevisionRouter { snapshot, metrics }
    }

    fn change(&self, edit: impl FnOnce(&mut HashMap<(String, String), Arc<TaskSpec>>)) {
        let mut next = TaskSet::clone(&self.snapshot.load());
        edit(&mut next.tasks);
        self.snapshot.store(Arc::new(next));
    }
}

impl Actor for RevisionRouter {
    type Context = Context<Self>;
}

impl Supervised for RevisionRouter {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // The snapshot lives outside the actor: a restart keeps every task.
        tracing::warn!("revision router restarting");
    }
}

/// Adds or replaces a task (already validated).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PutTask {
    pub workspace_id: String,
    pub task: TaskSpec,
}

/// Removes a task; answers whether it existed.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct RemoveTask {
    pub workspace_id: String,
    pub slug: String,
}

impl Handler<PutTask> for RevisionRouter {
    type Result = ();

    fn handle(&mut self, msg: PutTask, ctx: &mut Context<Self>) {
        let restarts = self.metrics.restarts.clone();
        guarded_actor::<Self, _>("revision_router", ctx, &restarts, || {
            self.change(|tasks| {
                tasks.insert((msg.workspace_id, msg.task.slug.clone()), Arc::new(msg.task));
            })
        });
    }
}

impl Handler<RemoveTask> for RevisionRouter {
    type Result = bool;

    fn handle(&mut self, msg: RemoveTask, ctx: &mut Context<Self>) -> bool {
        let restarts = self.metrics.restarts.clone();
        guarded_actor::<Self, _>("revision_router", ctx, &restarts, || {
            let mut existed = false;
            self.change(|tasks| existed = tasks.remove(&(msg.workspace_id, msg.slug)).is_some());
            existed
        })
        .unwrap_or(false)
    }
}
