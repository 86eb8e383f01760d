//! Embeddings: the in-process model behind a billed call (admission, a reservation of `per_input` for every text,
//! settlement after), shared by `POST /api/runs` and the OpenAI-compatible `POST /v1/embeddings`.

use super::body::{parse, RawJson};
use super::call::Metadata;
use super::call::{Answered, Billed, CallSpec, Measured};
use super::docs::{Authenticated, IdempotencyKey, ModelCall};
use super::errors::{ApiError, ErrorBody};
use crate::auth::Principal;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::time::Instant;
use switchyard_actors::catalogue::Modality;
use switchyard_actors::ModelSpec;
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/v1/embeddings").route(web::post().to(create_embeddings)));
}

/// Most texts one call embeds.
pub const MAX_INPUTS: usize = 2048;
/// Longest text accepted, in characters (the model reads its first 256 tokens; index mode chunks instead).
pub const MAX_INPUT_CHARS: usize = 100_000;

/// An embedding model of the catalogue, or the error a request naming `name` gets.
pub fn embedding_model<'a>(state: &'a AppState, name: &str) -> Result<&'a ModelSpec, ApiError> {
    let model = state.catalogue.model(name).ok_or_else(|| ApiError::unsupported_model(name))?;
    if model.modality != Modality::Embedding {
        return Err(ApiError::unsupported_model(name)
            .with_message(format!("{name} is not an embedding model (its modality is {})", model.modality.as_str())));
    }
    Ok(model)
}

/// A rough token count for usage reports (the model reads at most 256 tokens of each text).
fn estimate_tokens(texts: &[String]) -> u64 {
    texts.iter().map(|t| switchyard_actors::chat::estimate_tokens(t).min(256)).sum()
}

/// Embeds `texts` as a billed call that is still open: the caller stores what it must, then settles (or drops
/// the `Billed`, which releases the hold and charges nothing).
pub async fn embed_billed(
    state: &AppState,
    req: &HttpRequest,
    spec: &CallSpec<'_>,
    texts: Vec<String>,
) -> Result<(Vec<Vec<f32>>, Billed, Answered), ApiError> {
    let embedder =
        state.providers.embedder().await.map_err(|reason| ApiError::embeddings_unavailable(&reason))?.clone();
    let inputs = texts.len() as u64;
    let mut billed = Billed::begin(state, req, spec, spec.new_id(), 0, |m| m.pricing.inputs_cost(inputs)).await?;
    billed.record().prompt_tokens = estimate_tokens(&texts);
    billed.record().units = inputs;
    let upstream = Instant::now();
    match embedder.embed(texts).await {
        Ok(vectors) => {
            state.metrics.observe_embedding(inputs, upstream.elapsed());
            let answered =
                Answered { model: spec.model.clone(), attempts: 1, fallback: None, upstream: upstream.elapsed() };
            Ok((vectors, billed, answered))
        }
        Err(e) => {
            billed.fail("error");
            Err(ApiError::internal(format!("embedding failed: {e}")))
        }
    }
}

/// Settles an embedding call: `inputs` texts at the model's `per_input`.
pub async fn settle(mut billed: Billed, answered: &Answered, inputs: u64) -> Result<Metadata, ApiError> {
    let measured = Measured { prompt_tokens: billed.record().prompt_tokens, units: inputs, ..Default::default() };
    billed.settle(answered, answered.model.pricing.inputs_cost(inputs), measured).await
}

/// OpenAI's embeddings request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    /// `all-minilm-l6-v2`.
    pub model: String,
    /// A string or an array of strings (token arrays are not accepted).
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
    /// `float` (default) or `base64` (little-endian f32).
    pub encoding_format: Option<String>,
    /// Must equal the model's dimensions when given.
    pub dimensions: Option<u32>,
    pub user: Option<String>,
    pub reporting_group: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EmbeddingItem {
    pub object: &'static str,
    pub index: usize,
    /// An array of floats, or a base64 string with `encoding_format: base64`.
    #[schema(value_type = Object)]
    pub embedding: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct EmbeddingsUsage {
    pub prompt_tokens: u64,
    pub total_tokens: u64,
}

/// `{"object": "list", "data": [...], "model", "usage"}`
#[derive(Serialize, ToSchema)]
pub struct EmbeddingsResponse {
    pub object: &'static str,
    pub data: Vec<EmbeddingItem>,
    pub model: String,
    pub usage: EmbeddingsUsage,
    pub metadata: Metadata,
}

/// Texts from a `string | string[]` field: each non-empty, within the limits.
pub fn texts_of(field: &str, value: serde_json::Value) -> Result<Vec<String>, ApiError> {
    let texts = match value {
        serde_json::Value::String(text) => vec![text],
        serde_json::Value::Array(items) => {
            let mut texts = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    serde_json::Value::String(text) => texts.push(text),
                    _ => {
                        return Err(ApiError::invalid_field(
                            &format!("{field}[{i}]"),
                            format!(
                                "`{field}` must be a string or an array of strings (token arrays are not accepted)"
                            ),
                        ))
                    }
                }
            }
            texts
        }
        _ => return Err(ApiError::invalid_field(field, format!("`{field}` must be a string or an array of strings"))),
    };
    if texts.is_empty() || texts.len() > MAX_INPUTS {
        return Err(ApiError::invalid_field(field, format!("`{field}` must hold 1 to {MAX_INPUTS} texts")));
    }
    for (i, text) in texts.iter().enumerate() {
        if text.trim().is_empty() || text.chars().count() > MAX_INPUT_CHARS {
            return Err(ApiError::invalid_field(
                &format!("{field}[{i}]"),
                format!("each text must be non-blank and at most {MAX_INPUT_CHARS} characters"),
            ));
        }
    }
    Ok(texts)
}

#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "openai",
    request_body = EmbeddingsRequest,
    params(IdempotencyKey),
    responses((status = 200, description = "One embedding per input, in order", body = EmbeddingsResponse), Authenticated, ModelCall, (status = 400, description = "invalid_json, missing_field, invalid_field, unknown_field, unsupported_model", body = ErrorBody), (status = 503, description = "provider_unavailable: the embedding model files are missing", body = ErrorBody)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn create_embeddings(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    RawJson(body): RawJson,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let run = async {
        let request: EmbeddingsRequest = parse(&body)?;
        let model = embedding_model(&state, &request.model)?;
        let dimensions = model.embedding.map_or(0, |e| e.dimensions);
        if request.dimensions.is_some_and(|d| d != dimensions) {
            return Err(ApiError::invalid_field(
                "dimensions",
                format!("{} makes vectors of {dimensions} dimensions only", model.name),
            ));
        }
        let base64 = match request.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(_) => {
                return Err(ApiError::invalid_field("encoding_format", "`encoding_format` is `float` or `base64`"))
            }
        };
        let texts = texts_of("input", request.input)?;
        let spec = CallSpec {
            principal: &principal,
            model,
            use_fallback: false,
            reporting_group: super::call::check_reporting_group(request.reporting_group)?,
            endpoint: "/v1/embeddings",
            id_prefix: "emb",
            started,
            task: None,
        };
        let inputs = texts.len() as u64;
        let tokens = estimate_tokens(&texts);
        let (vectors, billed, answered) = embed_billed(&state, &req, &spec, texts).await?;
        let metadata = settle(billed, &answered, inputs).await?;
        let data = vectors
            .into_iter()
            .enumerate()
            .map(|(index, vector)| EmbeddingItem {
                object: "embedding",
                index,
                embedding: if base64 {
                    let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                    serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    serde_json::json!(vector)
                },
            })
            .collect();
        Ok(HttpResponse::Ok().insert_header(("x-switchyard-model", model.name.as_str())).json(EmbeddingsResponse {
            object: "list",
            data,
            model: model.name.clone(),
            usage: EmbeddingsUsage { prompt_tokens: tokens, total_tokens: tokens },
            metadata,
        }))
    };
    super::idempotency::guard(&state, &req, &principal, &body, run).await
}
