//! `GET /api/media/{media_ref}`: a media object's bytes, as a browser's `<img>`, `<audio>` or `<video>` expects
//! them (`Content-Type`, `Content-Length`, `Accept-Ranges` and single byte ranges, `Cache-Control`). Opened with
//! the caller's key or session token, or with no credentials through a signed URL (`?expires=…&sig=…`, as
//! responses give it) until it expires.

use super::errors::{ApiError, ErrorBody};
use super::principal::Admitted;
use crate::clock::now_unix;
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde::Deserialize;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    /// Unix seconds after which the signed URL no longer opens.
    pub expires: Option<i64>,
    /// The gateway's signature of the workspace, the media and `expires`.
    pub sig: Option<String>,
}

#[utoipa::path(get, path = "/api/media/{media_ref}", tag = "media", params(Signed),
    responses((status = 200, description = "The bytes, with their content type"),
        (status = 206, description = "The byte range asked for"),
        (status = 400, description = "invalid_field: a signed URL needs both `expires` and `sig`", body = ErrorBody),
        (status = 401, description = "missing_api_key (neither credentials nor a signature)", body = ErrorBody),
        (status = 403, description = "invalid_signature, expired_url", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 416, description = "range_not_satisfiable", body = ErrorBody)),
    security((), ("api_key" = []), ("bearer" = [])))]
pub async fn download(
    state: web::Data<AppState>,
    req: HttpRequest,
    media_ref: web::Path<String>,
    signed: web::Query<Signed>,
) -> Result<HttpResponse, ApiError> {
    let media_ref = media_ref.into_inner();
    let now = now_unix();
    let (workspace_id, cache) = match (signed.expires, signed.sig.as_deref()) {
        (Some(expires), Some(sig)) => {
            // A media_ref that does not exist and a bad signature look the same: nothing leaks.
            let owner = state.store.media_owner(&media_ref).await.map_err(ApiError::store)?;
            let owner = owner.filter(|ws| state.sessions.verify_media(ws, &media_ref, expires, sig));
            let owner = owner.ok_or_else(ApiError::invalid_signature)?;
            if expires <= now {
                return Err(ApiError::expired_url());
            }
            (owner, format!("private, max-age={}", expires - now))
        }
        (None, None) => {
            let Admitted { principal, .. } = Admitted::from_request(&req, &mut Payload::None).await?;
            (principal.workspace_id, "private, no-cache".to_owned())
        }
        _ => {
            return Err(ApiError::invalid_field("sig", "A signed media URL carries both `expires` and `sig`"));
        }
    };
    let media = super::form::load_media(&state, &workspace_id, &media_ref).await?;
    let disposition = format!("inline; filename=\"{}\"", media.filename.replace(['"', '\\', '\r', '\n'], "_"));
    let total = media.bytes.len() as u64;
    let span = range(&req, total)?;
    let mut response = match span {
        None => {
            let mut ok = HttpResponse::Ok();
            ok.insert_header((header::CONTENT_LENGTH, total));
            ok
        }
        Some((start, end)) => {
            let mut partial = HttpResponse::PartialContent();
            partial.insert_header((header::CONTENT_RANGE, format!("bytes {start}-{end}/{total}")));
            partial
        }
    };
    let body = match span {
        None => media.bytes,
        Some((start, end)) => media.bytes.slice(start as usize..=end as usize),
    };
    Ok(response
        .content_type(media.content_type)
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header(("content-disposition", disposition))
        .body(body))
}

/// The one byte range a `Range: bytes=…` header asks for (first and last byte, inclusive), `None` for the whole
/// body (no header, or several ranges, which are answered whole as RFC 9110 allows).
fn range(req: &HttpRequest, total: u64) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(value) = req.headers().get(header::RANGE).and_then(|v| v.to_str().ok()) else { return Ok(None) };
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let unsatisfiable = || {
        ApiError::new(
            actix_web::http::StatusCode::RANGE_NOT_SATISFIABLE,
            super::errors::ErrorType::InvalidRequestError,
            "range_not_satisfiable",
            format!("The range `{spec}` is outside the {total} bytes"),
        )
    };
    let (first, last) = spec.split_once('-').ok_or_else(unsatisfiable)?;
    let (first, last) = (first.trim(), last.trim());
    let (start, end) = match (first.parse::<u64>(), last.parse::<u64>()) {
        (Ok(start), Ok(end)) => (start, end.min(total.saturating_sub(1))),
        (Ok(start), Err(_)) if last.is_empty() => (start, total.saturating_sub(1)),
        (Err(_), Ok(suffix)) if first.is_empty() && suffix > 0 => {
            (total.saturating_sub(suffix), total.saturating_sub(1))
        }
        _ => return Err(unsatisfiable()),
    };
    if total == 0 || start > end || start >= total {
        return Err(unsatisfiable());
    }
    Ok(Some((start, end)))
}
