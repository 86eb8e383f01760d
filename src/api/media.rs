//! Media uploads (002): `init` hands out an upload URL, the bytes are `PUT` there (checked against the declared
//! size and, from the bytes themselves, the declared type), `complete` publishes them as a `media_ref`, and
//! `GET /api/media/{media_ref}` reads them back. Everything is confined to the caller's workspace.

use super::body::Json;
use super::docs::{Authenticated, JsonBody};
use super::errors::{ApiError, ErrorBody};
use super::principal::Admitted;
use crate::auth::new_id;
use crate::clock::now_unix;
use crate::media::{agrees, canonical, check_filename, sniff, MediaWriter};
use crate::state::AppState;
use crate::store::{MediaRow, Upload};
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/api/media/upload/init").route(web::post().to(init)))
        .service(super::resource("/api/media/upload/complete").route(web::post().to(complete)))
        .service(super::resource("/api/media/upload/{upload_id}").route(web::put().to(put)))
        .service(super::resource("/api/media/{media_ref}").route(web::get().to(super::download::download)));
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
    /// Opens in a browser without credentials until it expires (`media.url_ttl_secs`).
    pub url: String,
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

#[utoipa::path(post, path = "/api/media/upload/init", tag = "media", request_body = InitUpload,
    responses((status = 201, body = UploadTicket), JsonBody, Authenticated),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn init(
    state: web::Data<AppState>,
    Admitted { principal, .. }: Admitted,
    req: HttpRequest,
    Json(body): Json<InitUpload>,
) -> Result<HttpResponse, ApiError> {
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
    let upload = Upload {
        workspace_id: principal.workspace_id.clone(),
        filename: body.filename.clone(),
        content_type: content_type.to_owned(),
        bytes: body.bytes,
        expires_at: expires,
        status: "pending".into(),
        sha256: None,
        object: None,
        media_ref: None,
    };
    state.store.insert_upload(&id, &upload).await.map_err(ApiError::store)?;
    let upload_url = format!("{}/api/media/upload/{id}", super::form::public_url(&state, &req));
    Ok(HttpResponse::Created().json(UploadTicket {
        upload_id: id,
        upload_url,
        method: "PUT",
        expires_at: rfc3339(expires),
    }))
}

async fn upload(state: &AppState, id: &str) -> Result<Option<Upload>, ApiError> {
    state.store.upload(id).await.map_err(ApiError::store)
}

fn no_upload(id: &str) -> ApiError {
    ApiError::not_found(format!("No upload `{id}`"))
}

#[utoipa::path(put, path = "/api/media/upload/{upload_id}", tag = "media",
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = Uploaded), JsonBody, (status = 404, body = ErrorBody)))]
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
    // A fresh staging name per attempt: a retried PUT never writes into a file another attempt is writing. Whatever
    // way this ends before the bytes are published (a bad body, the client gone), the staged write is given up.
    let mut writer = MediaWriter::create(&state.media, &upload.workspace_id)
        .await
        .map_err(|e| ApiError::internal(format!("media: {e}")))?;
    let mut head: Vec<u8> = Vec::with_capacity(64);
    let failure = loop {
        let chunk = match payload.next().await {
            None => break None,
            Some(Err(e)) => {
                break Some(ApiError::body_broke(&e, |e| {
                    ApiError::invalid_field("body", format!("The upload broke off: {e}"))
                }))
            }
            Some(Ok(chunk)) => chunk,
        };
        if writer.bytes() + chunk.len() as u64 > upload.bytes {
            break Some(ApiError::payload_too_large(upload.bytes as usize).with_param("bytes"));
        }
        if head.len() < 64 {
            head.extend_from_slice(&chunk[..chunk.len().min(64 - head.len())]);
        }
        if let Err(e) = writer.write(&chunk).await {
            break Some(ApiError::internal(format!("media: {e}")));
        }
    };
    let received = writer.bytes();
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
    if let Some(error) = failure {
        writer.abort().await;
        return Err(error);
    }
    // Each complete PUT becomes an object of its own; the upload points at the latest, until it is completed.
    let object = format!("{}/{}", upload.workspace_id, writer.staging());
    let sha256 = writer.publish(&object).await.map_err(|e| ApiError::internal(format!("media: {e}")))?;
    let updated = state.store.mark_uploaded(&id, &sha256, &object).await.map_err(ApiError::store)?;
    if !updated {
        return Err(ApiError::invalid_field("upload_id", "This upload was completed while the bytes arrived"));
    }
    Ok(HttpResponse::Ok().json(Uploaded { upload_id: id, bytes: received, sha256 }))
}

#[utoipa::path(post, path = "/api/media/upload/complete", tag = "media", request_body = CompleteUpload,
    responses((status = 200, body = MediaObject), JsonBody, Authenticated, (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn complete(
    state: web::Data<AppState>,
    Admitted { principal, .. }: Admitted,
    req: HttpRequest,
    Json(body): Json<CompleteUpload>,
) -> Result<HttpResponse, ApiError> {
    let id = body.upload_id;
    let upload = upload(&state, &id).await?.filter(|u| u.workspace_id == principal.workspace_id);
    let upload = upload.ok_or_else(|| no_upload(&id))?;
    let object = |media_ref: String, sha256: String| MediaObject {
        url: super::form::media_url(&state, &req, &principal.workspace_id, &media_ref),
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
    let row = MediaRow {
        id: media_ref.clone(),
        workspace_id: principal.workspace_id.clone(),
        filename: upload.filename.clone(),
        content_type: upload.content_type.clone(),
        bytes: upload.bytes,
        sha256: sha256.clone(),
        object: blob,
        created_at: now_unix(),
    };
    if !state.store.complete_upload(&id, &row).await.map_err(ApiError::store)? {
        return Err(ApiError::invalid_field("upload_id", "This upload changed while completing; retry"));
    }
    Ok(HttpResponse::Ok().json(object(media_ref, sha256)))
}
