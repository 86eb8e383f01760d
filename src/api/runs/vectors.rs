//! Modes `index` and `search`: documents chunked, embedded and kept under the caller's workspace and scope, and
//! queries answered with each matching document's best chunk.

use super::Ran;
use crate::api::call::{Billed, CallSpec};
use crate::api::embeddings::{embed_billed, settle};
use crate::api::errors::ApiError;
use crate::state::AppState;
use actix_web::HttpRequest;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::time::Instant;
use switchyard_actors::vectors::{validate_filter, Chunk, StoreResult, Tenant};

/// A document of an index run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DocumentIn {
    id: Option<String>,
    text: Option<String>,
    media_ref: Option<String>,
    metadata: Option<Value>,
}

/// Metadata keys, like filter fields: letters, digits, `_`, `-`; values scalars or arrays of scalars.
pub(super) fn check_metadata(path: &str, metadata: Option<Value>) -> Result<Map<String, Value>, ApiError> {
    let map = match metadata {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(ApiError::invalid_field(path, format!("`{path}` must be a JSON object"))),
    };
    if map.len() > 32 || serde_json::to_vec(&map).map_or(0, |v| v.len()) > 8192 {
        return Err(ApiError::invalid_field(path, format!("`{path}` holds at most 32 fields and 8 KB")));
    }
    for (key, value) in &map {
        let key_ok = !key.is_empty()
            && key.len() <= 64
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let scalar = |v: &Value| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_));
        let value_ok = match value {
            Value::Array(items) => items.iter().all(scalar),
            other => scalar(other),
        };
        if !key_ok || !value_ok {
            return Err(ApiError::invalid_field(
                &format!("{path}.{key}"),
                format!("`{path}`: keys are 1-64 letters, digits, `_` or `-`; values are strings, numbers, booleans or arrays of them"),
            ));
        }
    }
    Ok(map)
}

pub(super) fn check_doc_id(path: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.chars().count() > 256 || id.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(path, format!("`{path}` must be 1 to 256 printable characters")));
    }
    Ok(())
}

/// A document's text: given inline, or a text file uploaded as media.
pub(super) async fn document_text(
    state: &AppState,
    workspace_id: &str,
    path: &str,
    doc: &mut DocumentIn,
) -> Result<String, ApiError> {
    match (doc.text.take(), doc.media_ref.take()) {
        (Some(text), None) => Ok(text),
        (None, Some(media_ref)) => {
            let media = crate::api::form::load_media(state, workspace_id, &media_ref).await?;
            let textual = media.content_type.starts_with("text/")
                || matches!(media.content_type.as_str(), "application/json" | "application/x-ndjson");
            if media.content_type.starts_with("image/") {
                return Err(ApiError::invalid_field(
                    &format!("{path}.media_ref"),
                    format!(
                        "The media `{media_ref}` is an image ({}); images cannot be indexed or searched: that needs an \
                         image-text embedding model (CLIP-style), and none is installed (none ships from a package \
                         registry). Index and search text: a `text`, or a text file's media_ref",
                        media.content_type
                    ),
                ));
            }
            if !textual {
                return Err(ApiError::invalid_field(
                    &format!("{path}.media_ref"),
                    format!("The media `{media_ref}` is {}, not a text file", media.content_type),
                ));
            }
            String::from_utf8(media.bytes.to_vec()).map_err(|_| {
                ApiError::invalid_field(
                    &format!("{path}.media_ref"),
                    format!("The media `{media_ref}` is not UTF-8 text"),
                )
            })
        }
        (None, None) => Err(ApiError::missing_field(&format!("{path}.text"))),
        (Some(_), Some(_)) => {
            Err(ApiError::invalid_field(path, format!("Give `{path}.text` or `{path}.media_ref`, not both")))
        }
    }
}

pub(super) async fn index(
    state: &AppState,
    req: &HttpRequest,
    spec: &CallSpec<'_>,
    scope: &str,
    mut input: Map<String, Value>,
) -> Result<Ran, ApiError> {
    let limits = &state.config.vectors;
    let documents = input.remove("documents").ok_or_else(|| ApiError::missing_field("input.documents"))?;
    let Value::Array(documents) = documents else {
        return Err(ApiError::invalid_field("input.documents", "`input.documents` must be an array of documents"));
    };
    if documents.is_empty() || documents.len() > limits.max_documents {
        return Err(ApiError::invalid_field(
            "input.documents",
            format!("`input.documents` must hold 1 to {} documents", limits.max_documents),
        ));
    }
    let workspace_id = &spec.principal.workspace_id;
    let mut ids = Vec::with_capacity(documents.len());
    let mut chunks = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, value) in documents.into_iter().enumerate() {
        let path = format!("input.documents[{i}]");
        let mut doc: DocumentIn = serde_json::from_value(value).map_err(|e| {
            let message = e.to_string();
            match message.strip_prefix("unknown field `").and_then(|m| m.split('`').next()) {
                Some(field) => ApiError::unknown_field(&format!("{path}.{field}")),
                None => ApiError::invalid_field(&path, format!("`{path}`: {message}")),
            }
        })?;
        let text = document_text(state, workspace_id, &path, &mut doc).await?;
        let metadata = check_metadata(&format!("{path}.metadata"), doc.metadata.take())?;
        let id = match doc.id.take() {
            Some(id) => {
                check_doc_id(&format!("{path}.id"), &id)?;
                id
            }
            // No id: one derived from the text, so indexing the same text again replaces it.
            None => {
                use sha2::{Digest, Sha256};
                format!("doc_{}", &hex::encode(Sha256::digest(text.as_bytes()))[..24])
            }
        };
        if !seen.insert(id.clone()) {
            return Err(ApiError::invalid_field(&format!("{path}.id"), format!("Document id `{id}` appears twice")));
        }
        let pieces = switchyard_actors::chunk::chunk_text(&text, limits.chunk_characters, limits.chunk_overlap);
        if pieces.is_empty() {
            return Err(ApiError::invalid_field(&format!("{path}.text"), format!("`{path}.text` is blank")));
        }
        for (n, piece) in pieces.into_iter().enumerate() {
            chunks.push(Chunk {
                doc_id: id.clone(),
                chunk: n as u32,
                text: piece,
                metadata: metadata.clone(),
                vector: Vec::new(),
            });
        }
        if chunks.len() > limits.max_chunks {
            return Err(ApiError::invalid_field(
                "input.documents",
                format!("These documents make more than {} chunks: send them in smaller requests", limits.max_chunks),
            ));
        }
        ids.push(id);
    }
    let texts: Vec<String> = chunks.iter().map(|c| c.text.clone()).collect();
    let inputs = texts.len() as u64;
    let (vectors, mut billed, answered) = embed_billed(state, req, spec, texts).await?;
    for (chunk, vector) in chunks.iter_mut().zip(vectors) {
        chunk.vector = vector;
    }
    let tenant = Tenant { workspace_id: workspace_id.clone(), scope: scope.to_owned() };
    store_call(state, "index", &mut billed, state.vectors.index(&spec.model.name, &tenant, chunks)).await?;
    let id = billed.id().to_owned();
    let metadata = settle(billed, &answered, inputs).await?;
    let documents = ids.len();
    Ok((
        id,
        json!({"indexed": ids, "documents": documents, "chunks": inputs}),
        json!({"inputs": inputs, "documents": documents, "chunks": inputs}),
        metadata,
    ))
}

/// One vector store call, timed in the metrics; when it fails, the charge held for the run is released.
pub(super) async fn store_call<T>(
    state: &AppState,
    operation: &str,
    billed: &mut Billed,
    call: BoxFuture<'static, StoreResult<T>>,
) -> Result<T, ApiError> {
    let started = Instant::now();
    let result = call.await;
    state.metrics.observe_vectors(operation, result.is_ok(), started.elapsed());
    result.map_err(|e| {
        billed.fail("error");
        ApiError::internal(format!("vector store: {e}"))
    })
}

pub(super) async fn search(
    state: &AppState,
    req: &HttpRequest,
    spec: &CallSpec<'_>,
    scope: &str,
    mut input: Map<String, Value>,
) -> Result<Ran, ApiError> {
    let max_top_k = state.config.vectors.max_top_k;
    let top_k = match input.remove("top_k") {
        None => 5,
        Some(value) => match value.as_u64() {
            Some(k) if (1..=max_top_k as u64).contains(&k) => k as usize,
            _ => {
                return Err(ApiError::invalid_field(
                    "input.top_k",
                    format!("`input.top_k` must be an integer from 1 to {max_top_k}"),
                ))
            }
        },
    };
    let filter = match input.remove("filter") {
        None | Some(Value::Null) => None,
        Some(Value::Object(filter)) => {
            validate_filter(&filter).map_err(|e| ApiError::invalid_field("input.filter", e))?;
            Some(filter)
        }
        Some(_) => return Err(ApiError::invalid_field("input.filter", "`input.filter` must be a JSON object")),
    };
    let mut doc = DocumentIn {
        id: None,
        text: match input.remove("query") {
            None => None,
            Some(Value::String(query)) => Some(query),
            Some(_) => return Err(ApiError::invalid_field("input.query", "`input.query` must be a string")),
        },
        media_ref: match input.remove("media_ref") {
            None => None,
            Some(Value::String(r)) => Some(r),
            Some(_) => return Err(ApiError::invalid_field("input.media_ref", "`input.media_ref` must be a string")),
        },
        metadata: None,
    };
    if doc.text.is_none() && doc.media_ref.is_none() {
        return Err(ApiError::missing_field("input.query"));
    }
    let query = document_text(state, &spec.principal.workspace_id, "input", &mut doc).await?;
    if query.trim().is_empty() || query.chars().count() > crate::api::embeddings::MAX_INPUT_CHARS {
        return Err(ApiError::invalid_field(
            "input.query",
            "`input.query` must be non-blank and at most 100000 characters",
        ));
    }
    let (mut vectors, mut billed, answered) = embed_billed(state, req, spec, vec![query]).await?;
    let vector = vectors.pop().unwrap_or_default();
    let tenant = Tenant { workspace_id: spec.principal.workspace_id.clone(), scope: scope.to_owned() };
    // The store answers each document's best chunk.
    let search = state.vectors.search(&spec.model.name, &tenant, vector, top_k, filter);
    let hits = store_call(state, "search", &mut billed, search).await?;
    let matches: Vec<Value> = hits
        .into_iter()
        .map(|hit| json!({"id": hit.doc_id, "score": hit.score, "text": hit.text, "chunk": hit.chunk, "metadata": hit.metadata}))
        .collect();
    let id = billed.id().to_owned();
    let metadata = settle(billed, &answered, 1).await?;
    Ok((id, json!({"matches": matches}), json!({"inputs": 1}), metadata))
}
