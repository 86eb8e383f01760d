//! The edge: one file per surface, each exporting `configure`. Handlers parse, call the engine, and answer in
//! the API.md shapes; every error leaves through `errors::ApiError`.

pub mod admin;
pub mod billing;
pub mod body;
pub mod call;
pub mod chat;
pub mod contract;
pub mod cors;
pub mod docs;
pub mod download;
pub mod embeddings;
pub mod errors;
pub mod form;
pub mod idempotency;
pub mod image;
pub mod limits;
pub mod marketplace;
pub mod media;
pub mod openai;
pub mod openapi;
pub mod ops;
pub mod pace;
pub mod principal;
pub mod query;
pub mod realtime;
pub mod runs;
pub mod sessions;
pub mod speech;
pub mod task;
pub mod tasks;

use actix_web::{web, HttpResponse};
use errors::ApiError;

/// A resource whose other methods answer 405 in the error envelope, carrying its route (the metrics' label).
pub fn resource(path: &str) -> actix_web::Resource {
    web::resource(path)
        .app_data(Route::new(path))
        .default_service(web::to(|| async { HttpResponse::from_error(ApiError::method_not_allowed()) }))
}

/// A resource's path pattern, found on every request it serves (`HttpRequest::app_data`) without matching the
/// path again, with its latency histograms resolved once.
#[derive(Clone)]
pub struct Route {
    pub pattern: &'static str,
    histograms: std::sync::Arc<std::sync::OnceLock<RouteHistograms>>,
}

/// The per-route series of `http_request_duration_seconds` and `gateway_overhead_seconds`.
pub struct RouteHistograms {
    pub duration: prometheus::Histogram,
    pub overhead: prometheus::Histogram,
}

impl Route {
    fn new(path: &str) -> Route {
        Route { pattern: intern(path), histograms: Default::default() }
    }

    /// This route's histograms in `metrics` (the one registry of the application the route belongs to).
    pub fn histograms(&self, metrics: &crate::metrics::Metrics) -> &RouteHistograms {
        self.histograms.get_or_init(|| RouteHistograms {
            duration: metrics.request_duration.with_label_values(&[self.pattern]),
            overhead: metrics.overhead.with_label_values(&[self.pattern]),
        })
    }
}

/// One `'static` copy of each route pattern, however many workers build the application.
fn intern(path: &str) -> &'static str {
    static PATTERNS: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut patterns = PATTERNS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(known) = patterns.iter().find(|p| **p == path) {
        return known;
    }
    let leaked: &'static str = Box::leak(path.to_owned().into_boxed_str());
    patterns.push(leaked);
    leaked
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    // The busiest routes first: the router tries resources in this order, and every pattern with a parameter
    // tried before a match costs a regex search.
    openai::configure(cfg);
    task::configure(cfg);
    tasks::configure(cfg);
    runs::configure(cfg);
    embeddings::configure(cfg);
    marketplace::configure(cfg);
    billing::configure(cfg);
    media::configure(cfg);
    sessions::configure(cfg);
    realtime::configure(cfg);
    admin::configure(cfg);
    ops::configure(cfg);
    openapi::configure(cfg);
}

/// Answers for paths no route matches.
pub async fn not_found() -> HttpResponse {
    HttpResponse::from_error(ApiError::not_found("No such route"))
}

pub fn path_error(e: actix_web::error::PathError, _: &actix_web::HttpRequest) -> actix_web::Error {
    ApiError::invalid_field("path", format!("Invalid path parameter: {e}")).into()
}

pub fn query_error(e: actix_web::error::QueryPayloadError, _: &actix_web::HttpRequest) -> actix_web::Error {
    ApiError::invalid_field("query", format!("Invalid query string: {e}")).into()
}
