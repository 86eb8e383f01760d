//! `Idempotency-Key` on POST routes: the same key and body within 24 hours replays the first response (and so
//! charges once); the same key with another body, or while the first is still running, gets 409. A claim names
//! the gateway running it, so one left by a gateway that stopped is freed (on SQLite at the next start,
//! `Store::release_abandoned_claims`; on PostgreSQL by the gateways' heartbeat, with the silent one's holds).

use super::errors::ApiError;
use crate::auth::Principal;
use crate::clock::now_unix;
use crate::state::AppState;
use crate::store::Store;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use sha2::{Digest, Sha256};

const TTL_SECS: i64 = 24 * 3600;
/// Responses larger than this are not kept for replay (the key then answers 409 on reuse).
const MAX_STORED: usize = 4 * 1024 * 1024;

/// What to do with a request that carries an `Idempotency-Key`.
pub enum Idempotency {
    /// No key: nothing to do.
    None,
    /// First use of the key: run the request, then `finish` the response.
    Fresh(Box<Claim>),
    /// The key was used with this body before: answer this.
    Replay(HttpResponse),
}

pub struct Claim {
    store: Store,
    workspace_id: String,
    key: String,
}

fn hash(path: &str, body: &[u8]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(path.as_bytes());
    hasher.update([0]);
    hasher.update(body);
    hasher.finalize().to_vec()
}

/// Claims the key for this request, or finds its earlier answer.
pub async fn begin(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    principal: &Principal,
    body: &[u8],
) -> Result<Idempotency, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else { return Ok(Idempotency::None) };
    let key = value.to_str().ok().map(str::trim).filter(|k| !k.is_empty() && k.len() <= 255).ok_or_else(|| {
        ApiError::invalid_field("Idempotency-Key", "`Idempotency-Key` must be 1 to 255 visible ASCII characters")
    })?;
    let digest = hash(req.path(), body);
    let now = now_unix();
    let store = &state.store;
    let expired_before = now - TTL_SECS;
    let claimed = store
        .claim_idempotency(&principal.workspace_id, key, &digest, &state.instance, now, expired_before)
        .await
        .map_err(ApiError::store)?;
    if claimed {
        return Ok(Idempotency::Fresh(Box::new(Claim {
            store: store.clone(),
            workspace_id: principal.workspace_id.clone(),
            key: key.to_owned(),
        })));
    }
    let kept =
        store.idempotent_response(&principal.workspace_id, key).await.map_err(ApiError::store)?.ok_or_else(|| {
            ApiError::idempotency_conflict("This Idempotency-Key is being reused concurrently; retry")
        })?;
    if kept.body_hash != digest {
        return Err(ApiError::idempotency_conflict(
            "This Idempotency-Key was used with a different request body or path",
        ));
    }
    if kept.status == 0 {
        return Err(ApiError::idempotency_conflict("A request with this Idempotency-Key is still in progress"));
    }
    let (content_type, headers, body) = (kept.content_type, kept.headers, kept.body);
    let status = StatusCode::from_u16(kept.status as u16).unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(status);
    response.insert_header(("content-type", content_type)).insert_header(("idempotent-replayed", "true"));
    for line in headers.lines() {
        if let Some((name, value)) = line.split_once(':') {
            response.insert_header((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    Ok(Idempotency::Replay(response.body(body)))
}

/// The part of a streamed response sent so far, kept when the stream ends or is dropped.
struct Tee {
    claim: Option<Claim>,
    status: StatusCode,
    content_type: String,
    headers: String,
    kept: Vec<u8>,
}

impl Tee {
    fn keep(&mut self, chunk: &[u8]) {
        if self.kept.len() + chunk.len() <= MAX_STORED {
            self.kept.extend_from_slice(chunk);
        }
    }

    /// Stores what was sent: a stream cut short (the client left) was charged for its part, so a replay gets that
    /// same part, never a second run.
    fn close(&mut self) {
        if let Some(claim) = self.claim.take() {
            if self.kept.is_empty() {
                claim.release();
            } else {
                let body = std::mem::take(&mut self.kept);
                actix_web::rt::spawn(claim.store(self.status, self.content_type.clone(), self.headers.clone(), body));
            }
        }
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        self.close();
    }
}

impl Claim {
    /// Keeps a successful response for replay. A whole body is stored before the response is sent, so a replay
    /// right after finds it; a stream is stored as it ends. An error (nothing was charged) frees the key instead, so
    /// the caller can try again with it.
    pub async fn finish(self, response: HttpResponse) -> HttpResponse {
        let status = response.status();
        if !status.is_success() {
            self.release();
            return response;
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_owned();
        let headers: String = response
            .headers()
            .iter()
            .filter(|(name, _)| name.as_str() == "x-switchyard-model")
            .filter_map(|(name, value)| value.to_str().ok().map(|v| format!("{name}: {v}\n")))
            .collect();
        let (head, body) = response.into_parts();
        if !content_type.starts_with("text/event-stream") {
            let bytes = match actix_web::body::to_bytes(body).await {
                Ok(bytes) => bytes,
                Err(_) => {
                    self.release();
                    return HttpResponse::from_error(ApiError::internal("could not read a response body"));
                }
            };
            self.store(status, content_type, headers, bytes.to_vec()).await;
            return head.set_body(BoxBody::new(bytes));
        }
        let mut tee = Tee { claim: Some(self), status, content_type, headers, kept: Vec::new() };
        let mut body = body;
        let stream = futures::stream::poll_fn(move |cx| {
            let polled = std::pin::Pin::new(&mut body).poll_next(cx);
            match &polled {
                std::task::Poll::Ready(Some(Ok(chunk))) => tee.keep(chunk),
                std::task::Poll::Ready(None) => tee.close(),
                _ => {}
            }
            polled
        });
        head.set_body(BoxBody::new(actix_web::body::BodyStream::new(stream)))
    }

    async fn store(self, status: StatusCode, content_type: String, headers: String, body: Vec<u8>) {
        let result = self
            .store
            .keep_idempotent(&self.workspace_id, &self.key, status.as_u16(), content_type, headers, body)
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "could not keep an idempotent response");
        }
    }

    /// Frees the key (the request failed without a charge).
    pub fn release(self) {
        actix_web::rt::spawn(async move {
            let _ = self.store.release_idempotency(&self.workspace_id, &self.key).await;
        });
    }
}

/// Runs `handler` under the request's `Idempotency-Key`, if it has one.
pub async fn guard<F>(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    principal: &Principal,
    body: &[u8],
    handler: F,
) -> Result<HttpResponse, ApiError>
where
    F: std::future::Future<Output = Result<HttpResponse, ApiError>>,
{
    match begin(state, req, principal, body).await? {
        Idempotency::None => handler.await,
        Idempotency::Replay(response) => Ok(response),
        Idempotency::Fresh(claim) => {
            let response = handler.await.unwrap_or_else(|e| e.error_response());
            Ok(claim.finish(response).await)
        }
    }
}
