//! Media uploads (002): `init` hands out an upload URL, the bytes are `PUT` there (checked against the declared
//! size and, from the bytes themselves, the declared type), `complete` publishes them as a `media_ref`, and
//! `GET /api/media/{media_ref}` reads them back. Everything is confined to the caller's workspace.

use super::body::{from_object, parse_object, read_json};
use super::errors::{ApiError, ErrorBody};
use crate::auth::{new_id, Principal};
use crate::media::{agrees, canonical, check_filename, sniff};
use crate::state::{now_unix, AppState};
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use tokio::io::AsyncWriteExt;
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/api/media/upload/init").route(web::post().to(init)))
        .service(super::resource("/api/media/upload/complete").route(web::post().to(complete)))
        .service(super::resource("/api/media/upload/{upload_id}").route(web::put().to(put)))
        .service(super::resource("/api/media/{media_ref}").route(web::get().to(download)));
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InitUpload {
    /// A label for the file (not a path).
    pub filename: String,
    /// One of the accepted types; checked against the bytes.
    pub content_type: String,
    /// The exact size of what will be PUT.
    pub bytes: u64,
}

#[derive(Serialize, ToSchema)]
pub struct UploadTicket {
    pub upload_id: String,
    /// `PUT` the bytes here (the id is the credential; no key needed).
    pub upload_url: String,
    pub method: &'static str,
    /// RFC 3339.
    pub expires_at: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteUpload {
    pub upload_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct MediaObject {
    pub media_ref: String,
    pub filename: String,
    pub content_type: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Serialize, ToSchema)]
pub struct Uploaded {
    pub upload_id: String,
    pub bytes: u64,
    pub sha256: String,
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

pub(crate) fn public_url(state: &AppState, req: &HttpRequest) -> String {
    if !state.config.server.public_url.is_empty() {
        return state.config.server.public_url.trim_end_matches('/').to_owned();
    }
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

#[utoipa::path(post, path = "/api/media/upload/init", tag = "media", request_body = InitUpload,
    responses((status = 201, body = UploadTicket), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn init(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let _permit = super::limits::admit(&state, &req, &principal, 0).await?;
    let body = read_json(&req, payload, state.config.server.max_body_bytes).await?;
    let body: InitUpload = from_object(parse_object(&body)?)?;
    check_filename(&body.filename).map_err(|why| ApiError::invalid_field("filename", format!("`filename` {why}")))?;
    let content_type = canonical(&body.content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(&body.content_type).with_param("content_type"))?;
    let limit = state.config.media.max_upload_bytes;
    if body.bytes == 0 {
        return Err(ApiError::invalid_field("bytes", "`bytes` must be at least 1"));
    }
    if body.bytes > limit {
        return Err(ApiError::payload_too_large(limit as usize).with_param("bytes"));
    }
    let id = new_id("upl");
    let expires = now_unix() + state.config.media.upload_ttl_secs as i64;
    sqlx::query(
        "INSERT INTO uploads (id, workspace_id, filename, content_type, bytes, expires_at, status) \
         VALUES (?, ?, ?, ?, ?, ?, 'pending')",
    )
    .bind(&id)
    .bind(&principal.workspace_id)
    .bind(&body.filename)
    .bind(content_type)
    .bind(body.bytes as i64)
    .bind(expires)
    .execute(state.store.pool())
    .await
    .map_err(ApiError::store)?;
    let upload_url = format!("{}/api/media/upload/{id}", public_url(&state, &req));
    Ok(HttpResponse::Created().json(UploadTicket {
        upload_id: id,
        upload_url,
        method: "PUT",
        expires_at: rfc3339(expires),
    }))
}

struct Upload {
    workspace_id: String,
    filename: String,
    content_type: String,
    bytes: u64,
    expires_at: i64,
    status: String,
    sha256: Option<String>,
    object: Option<String>,
    media_ref: Option<String>,
}

async fn upload(state: &AppState, id: &str) -> Result<Option<Upload>, ApiError> {
    let row = sqlx::query(
        "SELECT workspace_id, filename, content_type, bytes, expires_at, status, sha256, object, media_ref FROM uploads \
         WHERE id = ?",
    )
    .bind(id)
    .fetch_optional(state.store.pool())
    .await
    .map_err(ApiError::store)?;
    row.map(|r| {
        Ok(Upload {
            workspace_id: r.try_get("workspace_id")?,
            filename: r.try_get("filename")?,
            content_type: r.try_get("content_type")?,
            bytes: r.try_get::<i64, _>("bytes")? as u64,
            expires_at: r.try_get("expires_at")?,
            status: r.try_get("status")?,
            sha256: r.try_get("sha256")?,
            object: r.try_get("object")?,
            media_ref: r.try_get("media_ref")?,
        })
    })
    .transpose()
    .map_err(ApiError::store)
}

fn no_upload(id: &str) -> ApiError {
    ApiError::not_found(format!("No upload `{id}`"))
}

#[utoipa::path(put, path = "/api/media/upload/{upload_id}", tag = "media",
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = Uploaded), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn put(
    state: web::Data<AppState>,
    id: web::Path<String>,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let upload = upload(&state, &id).await?.ok_or_else(|| no_upload(&id))?;
    if upload.expires_at < now_unix() {
        return Err(ApiError::invalid_field("upload_id", "This upload has expired: start a new one"));
    }
    if upload.status == "completed" {
        return Err(ApiError::invalid_field("upload_id", "This upload is already complete"));
    }
    // A fresh staging name per attempt: a retried PUT never writes into a file another attempt is writing.
    let staging = new_id("stg");
    let mut file = state.media.stage(&staging).await.map_err(|e| ApiError::internal(format!("media: {e}")))?;
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    let mut head: Vec<u8> = Vec::with_capacity(64);
    let failure = loop {
        let chunk = match payload.next().await {
            None => break None,
            Some(Err(e)) => break Some(ApiError::invalid_field("body", format!("The upload broke off: {e}"))),
            Some(Ok(chunk)) => chunk,
        };
        received += chunk.len() as u64;
        if received > upload.bytes {
            break Some(ApiError::payload_too_large(upload.bytes as usize).with_param("bytes"));
        }
        if head.len() < 64 {
            head.extend_from_slice(&chunk[..chunk.len().min(64 - head.len())]);
        }
        hasher.update(&chunk);
        if let Err(e) = file.write_all(&chunk).await {
            break Some(ApiError::internal(format!("media: {e}")));
        }
    };
    let failure = failure.or_else(|| {
        (received != upload.bytes).then(|| {
            ApiError::invalid_field("bytes", format!("Declared {} bytes but received {received}", upload.bytes))
        })
    });
    let failure = failure.or_else(|| {
        let sniffed = sniff(&head);
        (!sniffed.is_some_and(|s| agrees(&upload.content_type, s))).then(|| {
            let what = sniffed.unwrap_or("an unrecognised format");
            ApiError::unsupported_media_type(&upload.content_type)
                .with_message(format!("Declared {} but the bytes are {what}", upload.content_type))
        })
    });
    let flushed = file.flush().await.and(file.shutdown().await);
    drop(file);
    if let Some(error) = failure.or_else(|| flushed.err().map(|e| ApiError::internal(format!("media: {e}")))) {
        let _ = state.media.discard(&staging).await;
        return Err(error);
    }
    let sha256 = hex::encode(hasher.finalize());
    // Each complete PUT becomes an object of its own; the upload points at the latest, until it is completed.
    let object = format!("{}/{staging}", upload.workspace_id);
    if let Err(e) = state.media.publish(&staging, &object).await {
        let _ = state.media.discard(&staging).await;
        return Err(ApiError::internal(format!("media: {e}")));
    }
    let updated = sqlx::query(
        "UPDATE uploads SET status = 'uploaded', sha256 = ?, object = ? WHERE id = ? AND status != 'completed'",
    )
    .bind(&sha256)
    .bind(&object)
    .bind(&id)
    .execute(state.store.pool())
    .await
    .map_err(ApiError::store)?
    .rows_affected();
    if updated != 1 {
        return Err(ApiError::invalid_field("upload_id", "This upload was completed while the bytes arrived"));
    }
    Ok(HttpResponse::Ok().json(Uploaded { upload_id: id, bytes: received, sha256 }))
}

#[utoipa::path(post, path = "/api/media/upload/complete", tag = "media", request_body = CompleteUpload,
    responses((status = 200, body = MediaObject), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn complete(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let _permit = super::limits::admit(&state, &req, &principal, 0).await?;
    let body = read_json(&req, payload, state.config.server.max_body_bytes).await?;
    let body: CompleteUpload = from_object(parse_object(&body)?)?;
    let id = body.upload_id;
    let upload = upload(&state, &id).await?.filter(|u| u.workspace_id == principal.workspace_id);
    let upload = upload.ok_or_else(|| no_upload(&id))?;
    let object = |media_ref: String, sha256: String| MediaObject {
        media_ref,
        filename: upload.filename.clone(),
        content_type: upload.content_type.clone(),
        bytes: upload.bytes,
        sha256,
    };
    let blob = match (upload.status.as_str(), upload.media_ref.clone(), upload.sha256.clone(), upload.object.clone()) {
        ("completed", Some(media_ref), Some(sha256), _) => {
            return Ok(HttpResponse::Ok().json(object(media_ref, sha256)))
        }
        ("uploaded", _, Some(_), Some(blob)) => blob,
        _ => {
            return Err(ApiError::invalid_field(
                "upload_id",
                "Nothing was uploaded yet: PUT the bytes to the upload URL first",
            ))
        }
    };
    if upload.expires_at < now_unix() {
        return Err(ApiError::invalid_field("upload_id", "This upload has expired: start a new one"));
    }
    let sha256 = upload.sha256.clone().unwrap_or_default();
    let media_ref = new_id("med");
    let mut tx = state.store.pool().begin().await.map_err(ApiError::store)?;
    let claimed = sqlx::query(
        "UPDATE uploads SET status = 'completed', media_ref = ? WHERE id = ? AND status = 'uploaded' AND object = ?",
    )
    .bind(&media_ref)
    .bind(&id)
    .bind(&blob)
    .execute(&mut *tx)
    .await
    .map_err(ApiError::store)?
    .rows_affected();
    if claimed != 1 {
        return Err(ApiError::invalid_field("upload_id", "This upload changed while completing; retry"));
    }
    sqlx::query(
        "INSERT INTO media (id, workspace_id, filename, content_type, bytes, sha256, object, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&media_ref)
    .bind(&principal.workspace_id)
    .bind(&upload.filename)
    .bind(&upload.content_type)
    .bind(upload.bytes as i64)
    .bind(&sha256)
    .bind(&blob)
    .bind(now_unix())
    .execute(&mut *tx)
    .await
    .map_err(ApiError::store)?;
    tx.commit().await.map_err(ApiError::store)?;
    Ok(HttpResponse::Ok().json(object(media_ref, sha256)))
}

#[utoipa::path(get, path = "/api/media/{media_ref}", tag = "media",
    responses((status = 200, description = "The bytes, with their content type"), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn download(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    media_ref: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let _permit = super::limits::admit(&state, &req, &principal, 0).await?;
    let media_ref = media_ref.into_inner();
    let media = super::form::load_media(&state, &principal.workspace_id, &media_ref).await?;
    let (filename, content_type, bytes) = (media.filename, media.content_type, media.bytes);
    let disposition = format!("inline; filename=\"{}\"", filename.replace(['"', '\\'], "_"));
    Ok(HttpResponse::Ok().content_type(content_type).insert_header(("content-disposition", disposition)).body(bytes))
}
