//! Images through `POST /api/v1/task` (001): Flux models. The image is stored as media of the caller's workspace
//! and answered as `image.generation` with both a URL (served by the gateway) and the bytes in base64.

use super::call::Metadata;
use super::call::{Billed, CallSpec, Measured};
use super::errors::ApiError;
use super::form::{file_input, FileInput, FileKind};
use crate::auth::Principal;
use crate::clock::now_unix;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::time::Instant;
use switchyard_actors::catalogue::ImageLimits;
use switchyard_actors::engine::dispatch::ImageAttempt;
use switchyard_actors::image::ImageRequest;
use switchyard_actors::ModelSpec;
use switchyard_actors::Warning;
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
    /// `png` (default) or `jpeg`.
    pub output_format: Option<String>,
    /// An image to start from: a `media_ref` (JSON), or the file itself (multipart).
    pub image: Option<String>,
    pub reporting_group: Option<String>,
    pub use_fallback_model: Option<bool>,
    /// The task and revision a run is for (set by task runs, never by callers).
    #[serde(skip)]
    pub task: Option<(String, String)>,
}

#[derive(Serialize, ToSchema)]
pub struct ImageData {
    /// Served by the gateway (`GET /api/media/{media_ref}`, with the caller's key).
    pub url: String,
    pub b64_json: String,
    pub media_ref: String,
    pub content_type: String,
}

/// What an image generation used (001's usage tracking).
#[derive(Serialize, ToSchema)]
pub struct ImageUsage {
    pub images: u64,
    /// Width × height of the image made.
    pub pixels: u64,
    /// Bytes of the images produced.
    pub output_bytes: u64,
    /// Time from the request to the stored image, in milliseconds.
    pub processing_ms: u64,
}

/// `image.generation`
#[derive(Serialize, ToSchema)]
pub struct ImageGeneration {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub model: String,
    pub data: Vec<ImageData>,
    pub usage: ImageUsage,
    /// Parameters the upstream was sent with other values than asked (absent when none were changed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub warnings: Vec<Warning>,
    pub metadata: Metadata,
}

/// Whole pixels a side may be asked (sizes within it land on the model's grid, with a warning).
const SIDE: std::ops::RangeInclusive<u32> = 1..=8192;
/// Steps a request may ask (more than a model takes is capped, with a warning).
const STEPS: std::ops::RangeInclusive<u32> = 1..=150;
/// Guidance a request may ask (outside a model's range it is clamped, with a warning).
const GUIDANCE: std::ops::RangeInclusive<f64> = 0.0..=30.0;

/// The request as asked, with defaults filled in. Values no image model could mean are refused; values one model
/// cannot take are fitted per model ([`switchyard_actors::image::fit`]) and reported in `warnings`.
fn check(limits: &ImageLimits, body: &ImageTaskRequest) -> Result<ImageRequest, ApiError> {
    let prompt = body.prompt.trim();
    if prompt.is_empty() || prompt.chars().count() > 4000 {
        return Err(ApiError::invalid_field("prompt", "`prompt` must be 1 to 4000 characters"));
    }
    let size = |field: &str, value: Option<u32>, default: u32| -> Result<u32, ApiError> {
        let value = value.unwrap_or(default);
        if !SIDE.contains(&value) {
            return Err(ApiError::invalid_field(field, format!("`{field}` must be from 1 to {} pixels", SIDE.end())));
        }
        Ok(value)
    };
    let width = size("width", body.width, limits.default_width)?;
    let height = size("height", body.height, limits.default_height)?;
    if body.num_inference_steps.is_some_and(|s| !STEPS.contains(&s)) {
        let message = format!("`num_inference_steps` must be from 1 to {}", STEPS.end());
        return Err(ApiError::invalid_field("num_inference_steps", message));
    }
    if body.guidance_scale.is_some_and(|g| !GUIDANCE.contains(&g)) {
        let message = format!("`guidance_scale` must be from 0 to {}", GUIDANCE.end());
        return Err(ApiError::invalid_field("guidance_scale", message));
    }
    let output_format = match body.output_format.as_deref() {
        None | Some("png") => "png",
        Some("jpeg" | "jpg") => "jpeg",
        Some(_) => return Err(ApiError::invalid_field("output_format", "`output_format` is `png` or `jpeg`")),
    };
    Ok(ImageRequest {
        prompt: prompt.to_owned(),
        width,
        height,
        steps: body.num_inference_steps,
        guidance: body.guidance_scale,
        seed: body.seed,
        output_format: output_format.to_owned(),
        image_prompt: None,
        upstream: None,
    })
}

/// Answers an image task as `image.generation`.
pub async fn respond(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    principal: &Principal,
    model: &ModelSpec,
    body: ImageTaskRequest,
    image: Option<FileInput>,
    started: Instant,
) -> Result<HttpResponse, ApiError> {
    let generation = generate(state, req, principal, model, body, image, started, "/api/v1/task").await?;
    Ok(HttpResponse::Ok().insert_header(("x-switchyard-model", generation.model.as_str())).json(generation))
}

/// Admits, reserves the dearest image of the chain, generates, stores, settles. `image` is an image to start
/// from (the request's file, or its `image` media_ref).
#[allow(clippy::too_many_arguments)]
pub async fn generate(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    principal: &Principal,
    model: &ModelSpec,
    body: ImageTaskRequest,
    image: Option<FileInput>,
    started: Instant,
    endpoint: &'static str,
) -> Result<ImageGeneration, ApiError> {
    let limits =
        model.image.as_ref().ok_or_else(|| ApiError::internal(format!("image model {} has no limits", model.name)))?;
    let mut request = check(limits, &body)?;
    let image = file_input(state, &principal.workspace_id, "image", FileKind::Image, image, body.image).await?;
    request.image_prompt = image.map(|i| i.bytes);
    let spec = CallSpec {
        principal,
        model,
        use_fallback: body.use_fallback_model.unwrap_or(false),
        reporting_group: super::call::check_reporting_group(body.reporting_group)?,
        endpoint,
        id_prefix: "img",
        started,
        task: body.task.clone(),
    };
    let mut billed = Billed::begin(state, req, &spec, spec.new_id(), 0, |m| m.pricing.per_image).await?;
    let (answered, image) = billed.dispatch(state, &spec, &ImageAttempt { request: &request }).await?;
    let content_type = crate::media::sniff(&image.bytes).unwrap_or("image/png").to_owned();
    let filename = if content_type == "image/jpeg" { "image.jpg" } else { "image.png" };
    let stored = match crate::media::store_generated(
        &state.media,
        &state.store,
        &principal.workspace_id,
        filename,
        &content_type,
        &image.bytes,
    )
    .await
    {
        Ok(stored) => stored,
        Err(e) => {
            billed.fail("error");
            return Err(ApiError::internal(format!("media: {e}")));
        }
    };
    let id = billed.id().to_owned();
    let (sent, warnings) = switchyard_actors::image::fit(&answered.model, &request);
    let pixels = u64::from(sent.width) * u64::from(sent.height);
    let measured = Measured { units: 1, pixels, output_bytes: stored.bytes, ..Default::default() };
    let metadata = billed.settle(&answered, answered.model.pricing.per_image, measured).await?;
    let url = super::form::media_url(state, req, &principal.workspace_id, &stored.media_ref);
    Ok(ImageGeneration {
        id,
        object: "image.generation",
        created: now_unix(),
        model: answered.model.name.clone(),
        data: vec![ImageData {
            url,
            b64_json: base64::engine::general_purpose::STANDARD.encode(&image.bytes),
            media_ref: stored.media_ref,
            content_type,
        }],
        usage: ImageUsage { images: 1, pixels, output_bytes: stored.bytes, processing_ms: metadata.latency_ms },
        warnings,
        metadata,
    })
}
