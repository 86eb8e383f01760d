//! Images through `POST /api/v1/task` (001): Flux models. The image is stored as media of the caller's workspace
//! and answered as `image.generation` with both a URL (served by the gateway) and the bytes in base64.

use super::chat::{dispatch_error, now_millis, FallbackOut, HoldGuard, Metadata};
use super::errors::ApiError;
use super::limits;
use crate::auth::Principal;
use crate::state::{now_unix, AppState};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::time::Instant;
use switchyard_actors::catalogue::ImageLimits;
use switchyard_actors::engine::dispatch::{dispatch_with, ImageAttempt};
use switchyard_actors::engine::ledger::UsageRecord;
use switchyard_actors::engine::pool::Outcome;
use switchyard_actors::image::ImageRequest;
use switchyard_actors::{Credits, ModelSpec};
use utoipa::ToSchema;

/// An image task (001). Unknown fields are refused by name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageTaskRequest {
    /// `flux-1-pro`, `flux-1-dev` or `flux-1-schnell`.
    pub model: String,
    pub prompt: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub num_inference_steps: Option<u32>,
    pub guidance_scale: Option<f64>,
    pub seed: Option<u64>,
    pub reporting_group: Option<String>,
    pub use_fallback_model: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct ImageData {
    /// Served by the gateway (`GET /api/media/{media_ref}`, with the caller's key).
    pub url: String,
    pub b64_json: String,
    pub media_ref: String,
    pub content_type: String,
}

/// `image.generation`
#[derive(Serialize, ToSchema)]
pub struct ImageGeneration {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub model: String,
    pub data: Vec<ImageData>,
    pub metadata: Metadata,
}

fn check(model: &ModelSpec, limits: &ImageLimits, body: &ImageTaskRequest) -> Result<ImageRequest, ApiError> {
    let prompt = body.prompt.trim();
    if prompt.is_empty() || prompt.chars().count() > 4000 {
        return Err(ApiError::invalid_field("prompt", "`prompt` must be 1 to 4000 characters"));
    }
    let size = |field: &str, value: Option<u32>, default: u32| -> Result<u32, ApiError> {
        let value = value.unwrap_or(default);
        if value < limits.min_size || value > limits.max_size || !value.is_multiple_of(limits.size_multiple) {
            return Err(ApiError::invalid_field(
                field,
                format!(
                    "`{field}` must be a multiple of {} from {} to {} for {}",
                    limits.size_multiple, limits.min_size, limits.max_size, model.name
                ),
            ));
        }
        Ok(value)
    };
    let width = size("width", body.width, limits.default_width)?;
    let height = size("height", body.height, limits.default_height)?;
    let steps = match (body.num_inference_steps, limits.max_steps) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(ApiError::invalid_field(
                "num_inference_steps",
                format!("{} does not take `num_inference_steps`", model.name),
            ))
        }
        (Some(steps), Some(max)) if steps == 0 || steps > max => {
            return Err(ApiError::invalid_field(
                "num_inference_steps",
                format!("`num_inference_steps` must be from 1 to {max} for {}", model.name),
            ))
        }
        (Some(steps), Some(_)) => Some(steps),
    };
    let guidance = match (body.guidance_scale, limits.min_guidance, limits.max_guidance) {
        (None, _, _) => None,
        (Some(g), Some(min), Some(max)) if (min..=max).contains(&g) => Some(g),
        (Some(_), Some(min), Some(max)) => {
            return Err(ApiError::invalid_field(
                "guidance_scale",
                format!("`guidance_scale` must be from {min} to {max} for {}", model.name),
            ))
        }
        (Some(_), _, _) => {
            return Err(ApiError::invalid_field(
                "guidance_scale",
                format!("{} does not take `guidance_scale`", model.name),
            ))
        }
    };
    Ok(ImageRequest { prompt: prompt.to_owned(), width, height, steps, guidance, seed: body.seed })
}

/// Answers an image task as `image.generation`.
pub async fn respond(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    principal: &Principal,
    model: &ModelSpec,
    body: ImageTaskRequest,
    started: Instant,
) -> Result<HttpResponse, ApiError> {
    let generation = generate(state, req, principal, model, body, started).await?;
    Ok(HttpResponse::Ok().insert_header(("x-switchyard-model", generation.model.as_str())).json(generation))
}

/// Admits, reserves the dearest image of the chain, generates, stores, settles.
pub async fn generate(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    principal: &Principal,
    model: &ModelSpec,
    body: ImageTaskRequest,
    started: Instant,
) -> Result<ImageGeneration, ApiError> {
    let limits = model.image.ok_or_else(|| ApiError::internal(format!("image model {} has no limits", model.name)))?;
    let request = check(model, &limits, &body)?;
    let use_fallback = body.use_fallback_model.unwrap_or(false);
    if use_fallback && model.fallback.is_empty() {
        return Err(ApiError::invalid_field(
            "use_fallback_model",
            format!("Model {} has no fallback model", model.name),
        ));
    }
    let reporting_group = super::chat::check_reporting_group(body.reporting_group)?;
    let engine = state.engine();
    let _permit = limits::admit(state, req, principal, 0).await?;
    let chain = (!use_fallback)
        .then_some(model)
        .into_iter()
        .chain(model.fallback.iter().filter_map(|n| state.catalogue.model(n)));
    let most = chain.map(|m| m.pricing.per_image).max().unwrap_or(Credits::ZERO);
    let hold = super::chat::reserve(engine, &principal.workspace_id, most).await?;
    let mut guard = HoldGuard { engine: engine.clone(), hold: Some(hold) };
    let mut record = UsageRecord {
        id: crate::auth::new_id("img"),
        created_at: now_millis(),
        workspace_id: principal.workspace_id.clone(),
        key_id: principal.key_id.clone(),
        model: model.name.clone(),
        provider: model.provider.clone(),
        endpoint: "/api/v1/task".into(),
        reporting_group: reporting_group.clone(),
        ..Default::default()
    };
    let attempt = ImageAttempt { request: &request };
    let served = match dispatch_with(engine, &state.catalogue, &state.providers, model, use_fallback, &attempt).await {
        Ok(served) => served,
        Err(failed) => {
            record.status = "error".into();
            record.attempts = failed.attempts;
            record.latency_ms = started.elapsed().as_millis() as u64;
            if let Some(hold) = guard.take() {
                engine.release(hold, Some(record));
            }
            return Err(dispatch_error(state, failed.error));
        }
    };
    served.lease.report(Outcome::Success);
    let image = served.answer;
    let content_type = crate::media::sniff(&image.bytes).unwrap_or("image/png").to_owned();
    let (media_ref, _) =
        crate::media::store_generated(state, &principal.workspace_id, "image.png", &content_type, &image.bytes)
            .await
            .map_err(|e| ApiError::internal(format!("media: {e}")))?;
    record.model = served.model.name.clone();
    record.provider = served.model.provider.clone();
    record.units = 1;
    record.output_bytes = image.bytes.len() as u64;
    record.attempts = served.attempts;
    record.fallback_used = served.fallback.is_some();
    record.fallback_reason = served.fallback.as_ref().map(|f| f.reason.clone());
    record.primary_model = Some(model.name.clone());
    record.status = "ok".into();
    record.latency_ms = started.elapsed().as_millis() as u64;
    let id = record.id.clone();
    let hold = guard.take().ok_or_else(|| ApiError::internal("hold already settled"))?;
    let charged = engine
        .settle(hold, served.model.pricing.per_image, record)
        .await
        .map_err(|e| ApiError::internal(format!("ledger: {e}")))?;
    let metadata = Metadata {
        model: served.model.name.clone(),
        provider: served.model.provider.clone(),
        credits_charged: charged,
        latency_ms: started.elapsed().as_millis() as u64,
        attempts: served.attempts,
        fallback: FallbackOut {
            used: served.fallback.is_some(),
            reason: served.fallback.as_ref().map(|f| f.reason.clone()),
            primary_model: model.name.clone(),
            model: served.model.name.clone(),
        },
        reporting_group,
    };
    let url = format!("{}/api/media/{media_ref}", super::media::public_url(state, req));
    Ok(ImageGeneration {
        id,
        object: "image.generation",
        created: now_unix(),
        model: served.model.name.clone(),
        data: vec![ImageData {
            url,
            b64_json: base64::engine::general_purpose::STANDARD.encode(&image.bytes),
            media_ref,
            content_type,
        }],
        metadata,
    })
}
