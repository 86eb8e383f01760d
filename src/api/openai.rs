//! The OpenAI-compatible face: `POST /v1/chat/completions` and `GET /v1/models`, so OpenAI SDKs work unchanged.

use super::body::{parse, Json, RawJson};
use super::chat::{self, ChatCall, ChatInput, Completion, Delivery, Face, MessageIn, StopIn};
use super::docs::{Authenticated, JsonBody, ModelCall};
use super::errors::{ApiError, ErrorBody};
use super::principal::Admitted;
use crate::auth::Principal;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/v1/chat/completions").route(web::post().to(chat_completions)))
        .service(super::resource("/v1/images/generations").route(web::post().to(images_generations)))
        .service(super::resource("/v1/audio/speech").route(web::post().to(audio_speech)))
        .service(super::resource("/v1/audio/transcriptions").route(web::post().to(audio_transcriptions)))
        .service(super::resource("/v1/models").route(web::get().to(list_models)));
}

/// OpenAI's chat completion request. Fields OpenAI accepts and the gateway does not use are ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<MessageIn>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Option<StopIn>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    /// Only 1 is supported.
    pub n: Option<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "openai",
    request_body = ChatCompletionRequest,
    responses((status = 200, description = "`chat.completion`, or an SSE stream of `chat.completion.chunk`", body = Completion), Authenticated, ModelCall, JsonBody, (status = 400, description = "invalid_json, missing_field, invalid_field, unsupported_model", body = ErrorBody)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn chat_completions(
    state: web::Data<AppState>,
    principal: Principal,
    query: web::Query<super::call::RoutingQuery>,
    req: HttpRequest,
    RawJson(body): RawJson,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    super::idempotency::guard(
        &state,
        &req,
        &principal,
        &body,
        // Boxed: a future is moved (copied) as it is handed on, and this one is large.
        Box::pin(run(&state, &principal, query.into_inner(), &req, &body, started)),
    )
    .await
}

async fn run(
    state: &web::Data<AppState>,
    principal: &Principal,
    query: super::call::RoutingQuery,
    req: &HttpRequest,
    body: &[u8],
    started: Instant,
) -> Result<HttpResponse, ApiError> {
    let body: ChatCompletionRequest = parse(body)?;
    let model = state.catalogue.model(&body.model).ok_or_else(|| ApiError::unsupported_model(&body.model))?;
    if body.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid_field("n", "Only `n = 1` is supported"));
    }
    let input = ChatInput {
        messages: body.messages,
        max_tokens: body.max_completion_tokens.or(body.max_tokens),
        temperature: body.temperature,
        top_p: body.top_p,
        stop: body.stop,
    };
    let request = chat::prepare(model, input)?;
    let usage_chunk = body.stream_options.is_some_and(|o| o.include_usage);
    let delivery = Delivery { stream: body.stream, usage_chunk };
    let call = ChatCall {
        face: Face::OpenAi,
        principal,
        model,
        request,
        delivery,
        reporting_group: super::call::check_reporting_group(query.reporting_group)?,
        use_fallback: query.use_fallback_model.unwrap_or(false),
        started,
        endpoint: "/v1/chat/completions",
        task: None,
    };
    chat::respond(state, req, call).await
}

#[derive(Serialize, ToSchema)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelEntry>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelEntry {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub owned_by: String,
    pub modality: &'static str,
    /// False when the provider's key is not configured.
    pub available: bool,
    /// The variable to set when unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable_reason: Option<String>,
    /// True for the built-in simulator, which is not a real model.
    pub simulator: bool,
    pub context_window: u32,
    pub max_output_tokens: u32,
    pub fallback: Vec<String>,
}

#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "openai",
    responses((status = 200, description = "Every model of the catalogue, with availability", body = ModelList), Authenticated),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list_models(state: web::Data<AppState>, _admitted: Admitted) -> Result<HttpResponse, ApiError> {
    let data = state
        .catalogue
        .models
        .values()
        .map(|m| {
            let provider = state.providers.for_model(m);
            let reason = state.unavailable_reason(m);
            ModelEntry {
                id: m.name.clone(),
                object: "model",
                created: 0,
                owned_by: m.provider.clone(),
                modality: m.modality.as_str(),
                available: reason.is_none(),
                unavailable_reason: reason,
                simulator: provider.is_some_and(|p| p.is_simulator()),
                context_window: m.context_window,
                max_output_tokens: m.max_output_tokens,
                fallback: m.fallback.clone(),
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(ModelList { object: "list", data }))
}

/// OpenAI's image request, mapped onto the catalogue's image models.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ImagesRequest {
    pub model: String,
    pub prompt: String,
    /// Only 1.
    pub n: Option<u32>,
    /// `WIDTHxHEIGHT`, e.g. `1024x768`.
    pub size: Option<String>,
    /// `url` (default) or `b64_json`.
    pub response_format: Option<String>,
    pub seed: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct ImagesResponse {
    pub created: i64,
    pub data: Vec<ImageOut>,
}

#[derive(Serialize, ToSchema)]
pub struct ImageOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b64_json: Option<String>,
    pub revised_prompt: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/images/generations",
    tag = "openai",
    request_body = ImagesRequest,
    responses((status = 200, body = ImagesResponse), Authenticated, ModelCall, (status = 400, description = "invalid_json, missing_field, invalid_field, unsupported_model", body = ErrorBody)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn images_generations(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    Json(body): Json<ImagesRequest>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let model = state.catalogue.model(&body.model).ok_or_else(|| ApiError::unsupported_model(&body.model))?;
    if model.modality != switchyard_actors::catalogue::Modality::Image {
        return Err(ApiError::unsupported_model(&body.model));
    }
    if body.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid_field("n", "Only `n = 1` is supported"));
    }
    let b64 = match body.response_format.as_deref() {
        None | Some("url") => false,
        Some("b64_json") => true,
        Some(_) => return Err(ApiError::invalid_field("response_format", "`response_format` is `url` or `b64_json`")),
    };
    let (width, height) = match body.size.as_deref() {
        None | Some("auto") => (None, None),
        Some(size) => {
            let parsed = size.split_once('x').and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)));
            let (w, h) =
                parsed.ok_or_else(|| ApiError::invalid_field("size", "`size` is `WIDTHxHEIGHT`, e.g. `1024x768`"))?;
            (Some(w), Some(h))
        }
    };
    let task = super::image::ImageTaskRequest {
        model: body.model.clone(),
        prompt: body.prompt,
        width,
        height,
        num_inference_steps: None,
        guidance_scale: None,
        seed: body.seed,
        output_format: None,
        image: None,
        reporting_group: None,
        use_fallback_model: None,
        task: None,
    };
    let generation =
        super::image::generate(&state, &req, &principal, model, task, None, started, "/v1/images/generations").await?;
    let data = generation
        .data
        .into_iter()
        .map(|d| ImageOut { url: (!b64).then_some(d.url), b64_json: b64.then_some(d.b64_json), revised_prompt: None })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header(("x-switchyard-model", generation.model.as_str()))
        .json(ImagesResponse { created: generation.created, data }))
}

/// OpenAI's speech request, mapped onto the catalogue's text-to-speech models. Fields OpenAI accepts and the
/// gateway does not use (`instructions`, `stream_format`) are ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SpeechCreateRequest {
    /// A text-to-speech model of the catalogue, e.g. `eleven-labs-tts`.
    pub model: String,
    pub input: String,
    /// A voice name or id of the provider (e.g. `Rachel`, `adam`).
    pub voice: String,
    /// `mp3` (default), `wav`, `pcm` (24 kHz 16-bit mono), or a provider format such as `mp3_44100_128`.
    pub response_format: Option<String>,
    /// 0.7 to 1.2.
    pub speed: Option<f64>,
}

/// OpenAI's format names as the model makes them: its own format of the codec when its catalogue lists formats,
/// else ElevenLabs' (mp3 at 44.1 kHz 128 kbps, WAV at 44.1 kHz, PCM at 24 kHz as OpenAI's).
fn speech_format(model: &switchyard_actors::ModelSpec, format: Option<&str>) -> Result<Option<String>, ApiError> {
    let codec = match format {
        None => "mp3",
        Some(name @ ("mp3" | "wav" | "pcm")) => name,
        Some(_) => "",
    };
    let own = model.audio.as_ref().and_then(|a| a.output_formats.iter().find(|f| f.starts_with(codec)).cloned());
    if let Some(own) = own.filter(|_| !codec.is_empty()) {
        return Ok(Some(own));
    }
    Ok(Some(match format {
        None | Some("mp3") => "mp3_44100_128".to_owned(),
        Some("wav") => "wav_44100".to_owned(),
        Some("pcm") => "pcm_24000".to_owned(),
        Some(native) if switchyard_actors::speech::format_content_type(native).is_some() => native.to_owned(),
        Some(other) => {
            return Err(ApiError::invalid_field(
                "response_format",
                format!("`response_format` `{other}` is not available: use mp3, wav or pcm"),
            ))
        }
    }))
}

#[utoipa::path(
    post,
    path = "/v1/audio/speech",
    tag = "openai",
    request_body = SpeechCreateRequest,
    responses((status = 200, description = "The audio bytes, streamed as they are generated", content_type = "audio/mpeg"), Authenticated, ModelCall, (status = 400, description = "invalid_json, missing_field, invalid_field, unsupported_model", body = ErrorBody)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn audio_speech(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    Json(body): Json<SpeechCreateRequest>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let model = state.catalogue.model(&body.model).ok_or_else(|| ApiError::unsupported_model(&body.model))?;
    if model.modality != switchyard_actors::catalogue::Modality::Speech {
        return Err(ApiError::unsupported_model(&body.model));
    }
    let task = super::speech::SpeechTaskRequest {
        model: body.model.clone(),
        text: body.input,
        voice: Some(body.voice),
        voice_settings: body.speed.map(|speed| serde_json::json!({ "speed": speed })),
        output_format: speech_format(model, body.response_format.as_deref())?,
        reporting_group: None,
        use_fallback_model: None,
    };
    let call = super::speech::SpeakCall::check(model, task)?;
    let speaking =
        super::speech::start_speech(&state, &req, &principal, model, call, started, "/v1/audio/speech").await?;
    Ok(super::speech::stream_audio(state.clone(), principal.workspace_id.clone(), speaking))
}

/// OpenAI's transcription response (`json`); `verbose_json` adds language, duration and words.
#[derive(Serialize, ToSchema)]
pub struct TranscriptionOut {
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<WordOut>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<Vec<serde_json::Value>>,
    pub usage: TranscriptionUsage,
}

#[derive(Serialize, ToSchema)]
pub struct WordOut {
    pub word: String,
    pub start: f64,
    pub end: f64,
}

#[derive(Serialize, ToSchema)]
pub struct TranscriptionUsage {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub seconds: f64,
}

/// The multipart fields of OpenAI's transcription request; unknown fields are refused by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TranscriptionFields {
    model: String,
    language: Option<String>,
    /// Accepted for compatibility; the provider takes no prompt.
    #[allow(dead_code)]
    prompt: Option<String>,
    response_format: Option<String>,
    /// Accepted for compatibility; the provider takes no temperature.
    #[allow(dead_code)]
    temperature: Option<f64>,
    timestamp_granularities: Option<Vec<String>>,
}

#[utoipa::path(
    post,
    path = "/v1/audio/transcriptions",
    tag = "openai",
    request_body(content_type = "multipart/form-data", description = "`file` (audio), `model`, `language`, `response_format` (json, text, verbose_json)"),
    responses((status = 200, body = TranscriptionOut), Authenticated, ModelCall, JsonBody, (status = 400, description = "invalid_json, missing_field, invalid_field, unknown_field, unsupported_model", body = ErrorBody)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn audio_transcriptions(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    if !super::form::is_multipart(&req) {
        return Err(ApiError::unsupported_media_type(
            req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("none"),
        )
        .with_message("Send the audio as multipart/form-data, in a part named `file`"));
    }
    let form = super::form::read_form(&req, payload, state.config.media.max_upload_bytes as usize).await?;
    let body: TranscriptionFields = super::body::from_object(form.fields)?;
    let model = state.catalogue.model(&body.model).ok_or_else(|| ApiError::unsupported_model(&body.model))?;
    if model.modality != switchyard_actors::catalogue::Modality::Transcription {
        return Err(ApiError::unsupported_model(&body.model));
    }
    let verbose = match body.response_format.as_deref() {
        None | Some("json") => Some(false),
        Some("verbose_json") => Some(true),
        Some("text") => None,
        Some(other) => {
            return Err(ApiError::invalid_field(
                "response_format",
                format!("`response_format` `{other}` is not available: use json, verbose_json or text"),
            ))
        }
    };
    let audio = match form.file {
        Some((field, file)) if field == "file" => file,
        Some((field, _)) => return Err(ApiError::invalid_field(&field, "The audio goes in a part named `file`")),
        None => return Err(ApiError::missing_field("file")),
    };
    let language = match body.language {
        Some(l) if l.is_empty() => None,
        other => other,
    };
    let call = super::speech::TranscribeCall { audio, language, reporting_group: None, use_fallback: false };
    let t =
        super::speech::transcribe(&state, &req, &principal, model, call, started, "/v1/audio/transcriptions").await?;
    let model_header = ("x-switchyard-model", t.model.clone());
    let Some(verbose) = verbose else {
        return Ok(HttpResponse::Ok()
            .insert_header(model_header)
            .content_type("text/plain; charset=utf-8")
            .body(t.text));
    };
    let words = verbose && body.timestamp_granularities.as_ref().is_none_or(|g| g.iter().any(|g| g == "word"));
    let out = TranscriptionOut {
        text: t.text,
        task: verbose.then_some("transcribe"),
        language: if verbose { t.language } else { None },
        duration: verbose.then_some(t.duration_seconds),
        words: words
            .then(|| t.words.into_iter().map(|w| WordOut { word: w.text, start: w.start, end: w.end }).collect()),
        segments: verbose.then(Vec::new),
        usage: TranscriptionUsage { kind: "duration", seconds: t.duration_seconds },
    };
    Ok(HttpResponse::Ok().insert_header(model_header).json(out))
}
