//! Reading and parsing request bodies: size limit (413), content type (415), and JSON errors that say which field
//! is wrong and how (invalid_json, missing_field, unknown_field, invalid_field). `Json<T>` is the extractor every
//! handler with a JSON body takes; `read_json` serves those that keep the raw bytes (idempotency fingerprints).

use super::errors::ApiError;
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use bytes::BytesMut;
use futures::future::LocalBoxFuture;
use futures::StreamExt;
use serde::de::DeserializeOwned;

/// A JSON object body parsed into `T`, within `server.max_body_bytes`.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let raw = RawJson::from_request(req, payload);
        Box::pin(async move { Ok(Json(parse(&raw.await?.0)?)) })
    }
}

/// A JSON body as its bytes, within `server.max_body_bytes`: for handlers that fingerprint it (idempotency)
/// before they parse it.
pub struct RawJson(pub bytes::Bytes);

impl FromRequest for RawJson {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let payload = payload.take();
        Box::pin(async move {
            let limit = req.app_data::<web::Data<AppState>>().map_or(1 << 20, |s| s.config.server.max_body_bytes);
            Ok(RawJson(read_json(&req, payload, limit).await?))
        })
    }
}

/// Reads a JSON body within `limit` bytes.
pub async fn read_json(
    req: &HttpRequest,
    mut payload: impl futures::Stream<Item = Result<bytes::Bytes, actix_web::error::PayloadError>> + Unpin,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    if let Some(content_type) = req.headers().get(actix_web::http::header::CONTENT_TYPE) {
        let text = content_type.to_str().unwrap_or("");
        let essence = text.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") && !essence.is_empty() {
            return Err(ApiError::unsupported_media_type(essence));
        }
    }
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::payload_too_large(limit));
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::body_broke(&e, |e| ApiError::invalid_json(format!("could not read the request body: {e}")))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::payload_too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses a body that must be a JSON object into `T`: in one pass when it is well formed and fits `T`; otherwise
/// through `parse_object` and `from_object`, whose errors name what is wrong.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    match parse_well_formed(body) {
        Some(parsed) => Ok(parsed),
        None => from_object(parse_object(body)?),
    }
}

/// A JSON object body parsed straight into `T`, or `None` when it is not a well-formed object that fits `T`.
pub fn parse_well_formed<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed = T::deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    Some(parsed)
}

/// Parses a body that must be a JSON object.
pub fn parse_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_json("Request body is empty: send a JSON object"));
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid_json("Request body must be a JSON object")),
        Err(e) => Err(ApiError::invalid_json(format!("Malformed JSON: {e}"))),
    }
}

/// Deserializes a parsed object into `T`, naming the offending field on failure.
pub fn from_object<T: DeserializeOwned>(object: serde_json::Map<String, serde_json::Value>) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(serde_json::Value::Object(object)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        classify(&path, &message)
    })
}

fn join(path: &str, field: &str) -> String {
    if path == "." || path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn quoted(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    Some(&message[start..end])
}

fn classify(path: &str, message: &str) -> ApiError {
    if let Some(field) = message.strip_prefix("missing field ").and_then(quoted) {
        return ApiError::missing_field(&join(path, field));
    }
    if let Some(field) = message.strip_prefix("unknown field ").and_then(quoted) {
        // The path already ends at the unknown field.
        let param = if path == "." || path.is_empty() { field.to_owned() } else { path.to_owned() };
        return ApiError::unknown_field(&param);
    }
    let param = if path == "." { "body".to_owned() } else { path.to_owned() };
    ApiError::invalid_field(&param, format!("Invalid value for `{param}`: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    fn parse(text: &str) -> Result<Body, ApiError> {
        let parsed = super::parse::<Body>(text.as_bytes());
        let slow = from_object::<Body>(parse_object(text.as_bytes())?);
        assert_eq!(parsed.is_ok(), slow.is_ok(), "{text}");
        parsed
    }

    #[test]
    fn names_the_field_that_is_wrong() {
        assert_eq!(parse("{").unwrap_err().code(), "invalid_json");
        assert_eq!(parse("[1]").unwrap_err().code(), "invalid_json");
        assert_eq!(parse("").unwrap_err().code(), "invalid_json");
        let missing = parse("{}").unwrap_err();
        assert_eq!((missing.code(), missing.detail.param.as_deref()), ("missing_field", Some("name")));
        let unknown = parse(r#"{"name":"a","nmae":1}"#).unwrap_err();
        assert_eq!((unknown.code(), unknown.detail.param.as_deref()), ("unknown_field", Some("nmae")));
        let wrong = parse(r#"{"name":"a","inner":{"count":"x"}}"#).unwrap_err();
        assert_eq!((wrong.code(), wrong.detail.param.as_deref()), ("invalid_field", Some("inner.count")));
        assert_eq!(
            parse(r#"{"name":"a","name":"b"}"#).unwrap().name,
            "b",
            "the last of a field given twice, as before"
        );
        assert_eq!(parse(" {\"name\":\"a\"} ").unwrap().name, "a");
        assert_eq!(parse(r#"{"name":"a"} x"#).unwrap_err().code(), "invalid_json");
        let nested_missing = parse(r#"{"name":"a","inner":{}}"#).unwrap_err();
        assert_eq!(nested_missing.detail.param.as_deref(), Some("inner.count"));
    }
}
