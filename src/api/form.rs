//! Requests with files: `multipart/form-data` bodies (fields plus one `audio`, `image` or `file` part), and
//! `media_ref`s in JSON bodies. Either way the handler gets the same `FileInput`, whose content type was read from
//! the bytes, never taken from a header.

use super::body::{parse_object, RawJson};
use super::errors::ApiError;
use crate::media::sniff;
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use bytes::{Bytes, BytesMut};
use futures::future::LocalBoxFuture;
use futures::StreamExt;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// A file handed to a model: uploaded in this request or earlier (a `media_ref`).
#[derive(Clone, Debug)]
pub struct FileInput {
    pub filename: String,
    /// Recognised from the bytes.
    pub content_type: &'static str,
    pub bytes: Bytes,
}

/// What kind of file a field must carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Audio,
    Image,
}

impl FileKind {
    fn of_field(name: &str) -> Option<FileKind> {
        match name {
            "audio" | "file" => Some(FileKind::Audio),
            "image" => Some(FileKind::Image),
            _ => None,
        }
    }

    fn accepts(self, content_type: &str) -> bool {
        match self {
            FileKind::Audio => content_type.starts_with("audio/"),
            FileKind::Image => content_type.starts_with("image/"),
        }
    }

    fn noun(self) -> &'static str {
        match self {
            FileKind::Audio => "audio",
            FileKind::Image => "an image",
        }
    }
}

/// Checks that `bytes` in field `field` are what the field takes, from their signature.
pub fn recognise(field: &str, kind: FileKind, bytes: &[u8]) -> Result<&'static str, ApiError> {
    let sniffed = sniff(&bytes[..bytes.len().min(64)]);
    match sniffed {
        Some(content_type) if kind.accepts(content_type) => Ok(content_type),
        other => Err(ApiError::unsupported_media_type(other.unwrap_or("an unrecognised format"))
            .with_param(field)
            .with_message(format!(
                "`{field}` must be {}; its bytes are {}",
                kind.noun(),
                other.unwrap_or("of no recognised format")
            ))),
    }
}

/// A parsed multipart body: the text fields as a JSON object, the one file, and a fingerprint of both that does
/// not depend on the boundary (for `Idempotency-Key`).
pub struct Form {
    pub fields: Map<String, Value>,
    pub file: Option<(String, FileInput)>,
    pub fingerprint: Vec<u8>,
}

/// Limits on a multipart body.
pub const MAX_PARTS: usize = 32;
pub const MAX_FIELD_BYTES: usize = 1024 * 1024;

/// Fields whose text is JSON (numbers, booleans, objects, arrays); every other field is a string.
const JSON_FIELDS: &[&str] = &[
    "messages",
    "max_tokens",
    "temperature",
    "top_p",
    "stream",
    "use_fallback_model",
    "width",
    "height",
    "num_inference_steps",
    "guidance_scale",
    "seed",
    "voice_settings",
    "speed",
];

/// A model call's body: JSON, or `multipart/form-data` with its fields and one file. Read whole (within
/// `server.max_body_bytes`, or `media.max_upload_bytes` for a form) before the handler runs; a JSON body is parsed
/// by `parts`, inside the idempotency guard.
/// A body's fields, and the file a form carried (its field name and bytes).
pub type Parts = (Map<String, Value>, Option<(String, FileInput)>);

pub struct CallBody {
    /// What the `Idempotency-Key` fingerprint is taken of: the JSON bytes, or the form's digest.
    pub fingerprint: Bytes,
    form: Option<Parts>,
}

impl CallBody {
    /// The body's bytes when it is JSON (not a form).
    pub fn json(&self) -> Option<&[u8]> {
        self.form.is_none().then_some(&self.fingerprint[..])
    }

    /// The body's fields and its file (a form's).
    pub fn parts(self) -> Result<Parts, ApiError> {
        match self.form {
            Some(form) => Ok(form),
            None => Ok((parse_object(&self.fingerprint)?, None)),
        }
    }
}

impl FromRequest for CallBody {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if !is_multipart(req) {
            let json = RawJson::from_request(req, payload);
            return Box::pin(async move { Ok(CallBody { fingerprint: json.await?.0, form: None }) });
        }
        let req = req.clone();
        let payload = payload.take();
        Box::pin(async move {
            let state = req.app_data::<web::Data<AppState>>().ok_or_else(|| ApiError::internal("no state"))?;
            let form = read_form(&req, payload, state.config.media.max_upload_bytes as usize).await?;
            Ok(CallBody { fingerprint: Bytes::from(form.fingerprint), form: Some((form.fields, form.file)) })
        })
    }
}

pub fn is_multipart(req: &HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"))
}

fn field_value(name: &str, text: String) -> Result<Value, ApiError> {
    if !JSON_FIELDS.contains(&name) {
        return Ok(Value::String(text));
    }
    serde_json::from_str(&text).map_err(|_| {
        ApiError::invalid_field(name, format!("`{name}` must be a JSON value (a number, true/false, or an object)"))
    })
}

/// A multipart reader's error: 408 when the body stopped coming, else a malformed body.
fn multipart_error(e: actix_multipart::MultipartError) -> ApiError {
    let malformed = |e: String| ApiError::invalid_json(format!("Malformed multipart body: {e}"));
    match e {
        actix_multipart::MultipartError::Payload(p) => ApiError::body_broke(&p, malformed),
        e => malformed(e.to_string()),
    }
}

/// Reads a `multipart/form-data` body: at most `MAX_PARTS` parts, text fields of at most `MAX_FIELD_BYTES`, one
/// file of at most `max_file` bytes in a field named `audio`, `image` or `file`.
pub async fn read_form(
    req: &HttpRequest,
    payload: impl futures::Stream<Item = Result<Bytes, actix_web::error::PayloadError>> + 'static,
    max_file: usize,
) -> Result<Form, ApiError> {
    let mut multipart = actix_multipart::Multipart::new(req.headers(), payload);
    let mut fields = Map::new();
    let mut file: Option<(String, FileInput)> = None;
    let mut parts = 0;
    let mut fingerprint = Sha256::new();
    while let Some(part) = multipart.next().await {
        let mut part = part.map_err(multipart_error)?;
        parts += 1;
        if parts > MAX_PARTS {
            return Err(ApiError::invalid_field(
                "body",
                format!("A multipart body may have at most {MAX_PARTS} parts"),
            ));
        }
        let name = part.name().unwrap_or("").to_owned();
        if name.is_empty() {
            return Err(ApiError::invalid_field("body", "Every multipart part needs a name"));
        }
        let filename = part.content_disposition().and_then(|d| d.get_filename()).map(str::to_owned);
        let kind = FileKind::of_field(&name);
        let is_file = filename.is_some();
        if is_file && kind.is_none() {
            return Err(ApiError::unknown_field(&name)
                .with_message(format!("Unexpected file in `{name}`: files go in `audio`, `image` or `file`")));
        }
        let limit = if is_file { max_file } else { MAX_FIELD_BYTES };
        let mut data = BytesMut::new();
        while let Some(chunk) = part.next().await {
            let chunk = chunk.map_err(multipart_error)?;
            if data.len() + chunk.len() > limit {
                return Err(ApiError::payload_too_large(limit).with_param(name.as_str()));
            }
            data.extend_from_slice(&chunk);
        }
        // `name[]` fields (OpenAI's `timestamp_granularities[]`) may repeat: they make an array.
        if is_file && name.ends_with("[]") {
            return Err(ApiError::invalid_field(&name, format!("`{name}` takes text, not a file")));
        }
        if let Some(list) = name.strip_suffix("[]") {
            let text = String::from_utf8(data.to_vec())
                .map_err(|_| ApiError::invalid_field(&name, format!("`{name}` must be UTF-8 text")))?;
            fingerprint.update(name.as_bytes());
            fingerprint.update([0]);
            fingerprint.update(text.as_bytes());
            fingerprint.update([0xff]);
            let entry = fields.entry(list.to_owned()).or_insert_with(|| Value::Array(Vec::new()));
            match entry {
                Value::Array(items) => items.push(Value::String(text)),
                _ => return Err(ApiError::invalid_field(list, format!("`{list}` is given more than once"))),
            }
            continue;
        }
        if fields.contains_key(&name) || file.as_ref().is_some_and(|(f, _)| *f == name) {
            return Err(ApiError::invalid_field(&name, format!("`{name}` is given more than once")));
        }
        fingerprint.update(name.as_bytes());
        fingerprint.update([0]);
        match (is_file, kind) {
            (true, Some(kind)) => {
                if file.is_some() {
                    return Err(ApiError::invalid_field(&name, "Send one file per request"));
                }
                if data.is_empty() {
                    return Err(ApiError::invalid_field(&name, format!("`{name}` is an empty file")));
                }
                let content_type = recognise(&name, kind, &data)?;
                let filename = filename.unwrap_or_default();
                crate::media::check_filename(&filename)
                    .map_err(|why| ApiError::invalid_field(&name, format!("The file name {why}")))?;
                fingerprint.update(filename.as_bytes());
                fingerprint.update([0]);
                fingerprint.update(Sha256::digest(&data));
                file = Some((name, FileInput { filename, content_type, bytes: data.freeze() }));
            }
            _ => {
                let text = String::from_utf8(data.to_vec())
                    .map_err(|_| ApiError::invalid_field(&name, format!("`{name}` must be UTF-8 text")))?;
                fingerprint.update(text.as_bytes());
                fields.insert(name.clone(), field_value(&name, text)?);
            }
        }
        fingerprint.update([0xff]);
    }
    if parts == 0 {
        return Err(ApiError::invalid_json("The multipart body has no parts"));
    }
    Ok(Form { fields, file, fingerprint: fingerprint.finalize().to_vec() })
}

/// A media object of `workspace_id` (404 for any other workspace's, as for one that does not exist).
pub async fn load_media(state: &AppState, workspace_id: &str, media_ref: &str) -> Result<StoredMedia, ApiError> {
    let (filename, content_type, blob) = state
        .store
        .media(workspace_id, media_ref)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::not_found(format!("No media `{media_ref}`")))?;
    let bytes = state.media.read(&blob).await.map_err(|e| ApiError::internal(format!("media: {e}")))?;
    Ok(StoredMedia { filename, content_type, bytes: Bytes::from(bytes) })
}

pub struct StoredMedia {
    pub filename: String,
    pub content_type: String,
    pub bytes: Bytes,
}

/// The file for field `field`: the one uploaded in this request, or the `media_ref` given in its place.
pub async fn file_input(
    state: &AppState,
    workspace_id: &str,
    field: &str,
    kind: FileKind,
    uploaded: Option<FileInput>,
    media_ref: Option<String>,
) -> Result<Option<FileInput>, ApiError> {
    match (uploaded, media_ref) {
        (Some(_), Some(_)) => {
            Err(ApiError::invalid_field(field, format!("Send `{field}` as a file or as a media_ref, not both")))
        }
        (Some(file), None) => Ok(Some(file)),
        (None, None) => Ok(None),
        (None, Some(media_ref)) => {
            let media = load_media(state, workspace_id, &media_ref).await.map_err(|e| e.with_param(field))?;
            let content_type = recognise(field, kind, &media.bytes)?;
            Ok(Some(FileInput { filename: media.filename, content_type, bytes: media.bytes }))
        }
    }
}

/// The base URL media links start with: `server.public_url`, or the address the request came to.
/// The URL of a media object as responses give it: absolute, and signed to open without credentials until
/// `media.url_ttl_secs` from now (`?expires=…&sig=…`); with a key or token the plain path works too.
pub fn media_url(state: &AppState, req: &HttpRequest, workspace_id: &str, media_ref: &str) -> String {
    let expires = crate::clock::now_unix() + i64::try_from(state.config.media.url_ttl_secs).unwrap_or(3600);
    let sig = state.sessions.sign_media(workspace_id, media_ref, expires);
    format!("{}/api/media/{media_ref}?expires={expires}&sig={sig}", public_url(state, req))
}

pub fn public_url(state: &AppState, req: &HttpRequest) -> String {
    if !state.config.server.public_url.is_empty() {
        return state.config.server.public_url.trim_end_matches('/').to_owned();
    }
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

#[cfg(test)]
#[path = "form_props.rs"]
mod props;
