//! Switchyard: a self-hosted AI gateway. This crate is the edge (HTTP API, configuration, persistence, metrics);
//! the engine lives in `switchyard-actors`.

pub mod api;
pub mod audio;
pub mod auth;
pub mod clock;
pub mod config;
pub mod index_cli;
pub mod media;
pub mod metrics;
pub mod render;
pub mod sessions;
pub mod state;
pub mod store;
pub mod tasks;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, App, Error, HttpMessage};
use api::call::UpstreamTime;
use futures::future::LocalBoxFuture;
use state::AppState;
use std::time::Instant;

pub const OVERHEAD_HEADER: &str = "x-switchyard-overhead-us";

/// The request's id, answered as `X-Request-Id`: the client's own (printable, at most 128 bytes), else a new one.
fn request_id(headers: &actix_web::http::header::HeaderMap) -> HeaderValue {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    if let Some(given) = headers.get("x-request-id").filter(|v| v.len() <= 128 && v.to_str().is_ok()) {
        return given.clone();
    }
    let prefix = *PREFIX.get_or_init(rand::random::<u32>);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_str(&format!("req_{prefix:08x}{n:012x}")).unwrap_or(HeaderValue::from_static("req_"))
}

/// The whole application around a state, so tests build it in process exactly as `serve` does.
/// A request method as a metric label: the standard ones by name, any other a client makes up as `OTHER`, so a
/// caller cannot add series.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = Error,
        InitError = (),
    >,
> {
    state.start_engine();
    App::new()
        .app_data(state)
        .app_data(web::PathConfig::default().error_handler(api::path_error))
        .app_data(web::QueryConfig::default().error_handler(api::query_error))
        .configure(api::configure)
        .default_service(web::to(api::not_found))
        .wrap_fn(|mut req, srv| {
            let started = Instant::now();
            let state = req.app_data::<web::Data<AppState>>().cloned();
            if let Some(state) = &state {
                api::pace::guard(&mut req, &state.config.server);
            }
            let method = req.method().clone();
            let request_id = request_id(req.headers());
            let response = srv.call(req);
            async move {
                let mut response = response.await?;
                response.headers_mut().insert(HeaderName::from_static("x-request-id"), request_id);
                let Some(state) = state else {
                    return Ok(response);
                };
                let elapsed = started.elapsed();
                let route = response.request().app_data::<api::Route>().cloned();
                let pattern = route.as_ref().map_or("unmatched", |r| r.pattern);
                let histograms = route.as_ref().map(|r| r.histograms(&state.metrics));
                let upstream = response.response().extensions().get::<UpstreamTime>().copied();
                if let Some(UpstreamTime(upstream)) = upstream {
                    let overhead = elapsed.saturating_sub(upstream);
                    match histograms {
                        Some(h) => h.overhead.observe(overhead.as_secs_f64()),
                        None => state.metrics.overhead.with_label_values(&[pattern]).observe(overhead.as_secs_f64()),
                    }
                    response.headers_mut().insert(
                        HeaderName::from_static(OVERHEAD_HEADER),
                        HeaderValue::from(overhead.as_micros() as u64),
                    );
                }
                let limits = response.request().extensions().get::<api::limits::RateLimit>().copied();
                if let Some(limits) = limits {
                    limits.write_headers(response.headers_mut());
                }
                let status = response.status();
                state.metrics.requests.with_label_values(&[pattern, method_label(&method), status.as_str()]).inc();
                if let Some(error) = response.response().error().and_then(|e| e.as_error::<api::errors::ApiError>()) {
                    api::principal::count_error(&state, response.request(), error);
                }
                match histograms {
                    Some(h) => h.duration.observe(elapsed.as_secs_f64()),
                    None => state.metrics.request_duration.with_label_values(&[pattern]).observe(elapsed.as_secs_f64()),
                }
                Ok(response)
            }
        })
        .wrap_fn(|req, srv| {
            let origin =
                req.app_data::<web::Data<AppState>>().and_then(|s| api::cors::allowed_origin(s, req.headers()));
            if let Some(origin) = origin.clone().filter(|_| api::cors::is_preflight(req.method(), req.headers())) {
                let answer = req.into_response(api::cors::preflight(origin)).map_into_right_body();
                return Box::pin(async move { Ok(answer) }) as LocalBoxFuture<'static, _>;
            }
            let response = srv.call(req);
            Box::pin(async move {
                let mut response = response.await?;
                if let Some(origin) = origin {
                    api::cors::decorate(response.headers_mut(), origin);
                }
                Ok(response.map_into_left_body())
            })
        })
}
