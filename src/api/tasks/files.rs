//! Runs whose answer is a file: images and speech, and the files text runs leave (CSV, PDF).

use super::plan::{task_run, Plan, RunAnswer, RUN_ENDPOINT};
use super::wire::{RunFile, RunMetadata};
use crate::api::errors::ApiError;
use crate::auth::Principal;
use crate::state::AppState;
use crate::tasks::{AudioParams, ImageParams};
use actix_web::{web, HttpRequest};
use base64::Engine as _;

pub(super) async fn store_file(
    state: &AppState,
    req: &HttpRequest,
    principal: &Principal,
    filename: &str,
    content_type: &str,
    bytes: &[u8],
) -> Result<RunFile, ApiError> {
    let stored = crate::media::store_generated(
        &state.media,
        &state.store,
        &principal.workspace_id,
        filename,
        content_type,
        bytes,
    )
    .await
    .map_err(|e| ApiError::internal(format!("media: {e}")))?;
    Ok(RunFile {
        url: crate::api::form::media_url(state, req, &principal.workspace_id, &stored.media_ref),
        media_ref: stored.media_ref,
        filename: filename.to_owned(),
        content_type: content_type.to_owned(),
        bytes: stored.bytes,
    })
}

pub(super) async fn run_image(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    principal: &Principal,
    plan: &Plan<'_>,
) -> Result<RunAnswer, ApiError> {
    let params: ImageParams = plan.params()?;
    let body = crate::api::image::ImageTaskRequest {
        model: plan.model.name.clone(),
        prompt: plan.prompt.clone(),
        width: params.width,
        height: params.height,
        num_inference_steps: params.num_inference_steps,
        guidance_scale: params.guidance_scale,
        seed: params.seed,
        output_format: params.output_format,
        image: None,
        reporting_group: plan.reporting_group.clone(),
        use_fallback_model: Some(plan.use_fallback),
        task: plan.task_ref(),
    };
    let generation =
        crate::api::image::generate(state, req, principal, &plan.model, body, None, plan.started, RUN_ENDPOINT).await?;
    let data = generation.data.into_iter().next().ok_or_else(|| ApiError::internal("no image"))?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(&data.b64_json).map(|b| b.len()).unwrap_or(0);
    let extension = if data.content_type == "image/jpeg" { "jpg" } else { "png" };
    let file = RunFile {
        media_ref: data.media_ref.clone(),
        url: data.url.clone(),
        filename: format!("{}.{extension}", plan.task.slug),
        content_type: data.content_type.clone(),
        bytes: bytes as u64,
    };
    let output = serde_json::json!({"url": data.url, "media_ref": data.media_ref, "b64_json": data.b64_json});
    let metadata = RunMetadata { call: generation.metadata, repaired: false, tokens: None };
    Ok(RunAnswer::Run(Box::new(task_run(plan, generation.id, output, vec![file], metadata))))
}

pub(super) async fn run_audio(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    principal: &Principal,
    plan: &Plan<'_>,
) -> Result<RunAnswer, ApiError> {
    let params: AudioParams = plan.params()?;
    let body = crate::api::speech::SpeechTaskRequest {
        model: plan.model.name.clone(),
        text: plan.prompt.clone(),
        voice: params.voice,
        voice_settings: params.voice_settings,
        output_format: params.output_format,
        reporting_group: plan.reporting_group.clone(),
        use_fallback_model: Some(plan.use_fallback),
    };
    let mut call = crate::api::speech::SpeakCall::check(&plan.model, body)?;
    call.task = plan.task_ref();
    let speaking =
        crate::api::speech::start_speech(state, req, principal, &plan.model, call, plan.started, RUN_ENDPOINT).await?;
    let generation = crate::api::speech::finish_audio(state, req, &principal.workspace_id, speaking).await?;
    let audio = &generation.audio;
    let file = RunFile {
        media_ref: audio.media_ref.clone(),
        url: audio.url.clone(),
        filename: format!("{}.{}", plan.task.slug, switchyard_actors::speech::format_extension(&audio.format)),
        content_type: audio.content_type.clone(),
        bytes: audio.bytes,
    };
    let output = serde_json::json!({"url": audio.url, "media_ref": audio.media_ref,
        "content_type": audio.content_type, "duration_seconds": audio.duration_seconds});
    let metadata = RunMetadata { call: generation.metadata, repaired: false, tokens: None };
    Ok(RunAnswer::Run(Box::new(task_run(plan, generation.id, output, vec![file], metadata))))
}
