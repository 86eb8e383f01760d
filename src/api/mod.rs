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

/// A resource whose other methods answer 405 in the error envelope.
pub fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(|| async { HttpResponse::from_error(ApiError::method_not_allowed()) }))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    task::configure(cfg);
    tasks::configure(cfg);
    runs::configure(cfg);
    embeddings::configure(cfg);
    marketplace::configure(cfg);
    billing::configure(cfg);
    media::configure(cfg);
    openai::configure(cfg);
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
