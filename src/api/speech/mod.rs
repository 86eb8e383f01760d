//! Speech through `POST /api/v1/task` (001) and the OpenAI faces: text-to-speech (`speech.generation`),
//! speech-to-speech (`speech.generation`) and speech-to-text (`transcription`). Audio from upstream is stored as
//! media as it arrives; a stream that breaks off is never stored, answered as success, or charged.

mod check;
mod stream;
mod wire;

use crate::api::call::{Answered, Billed, CallSpec, Measured};
use crate::api::errors::ApiError;
use crate::api::form::FileInput;
use crate::auth::Principal;
use crate::clock::now_unix;
use crate::state::AppState;
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine as _;
use bytes::Bytes;
use check::{audio_input, check_language, check_output_format, check_voice, input_duration, limits, seconds};
use futures::StreamExt;
use std::time::Instant;
use switchyard_actors::engine::dispatch::{ConvertAttempt, SpeechAttempt, TranscribeAttempt};
use switchyard_actors::speech::{
    format_content_type, format_extension, AudioStream, ConvertRequest, SpeechRequest, TranscribeRequest,
};
use switchyard_actors::{Credits, ModelSpec, Warning};

pub use check::check_voice_settings;
pub use stream::stream_audio;
pub use wire::{
    AudioOut, ConversionTaskRequest, SpeechGeneration, SpeechTaskRequest, SpeechUsage, Transcription,
    TranscriptionTaskRequest,
};

/// A text-to-speech call, checked.
pub struct SpeakCall {
    pub request: SpeechRequest,
    pub reporting_group: Option<String>,
    pub use_fallback: bool,
    /// The task and revision a run is for.
    pub task: Option<(String, String)>,
    /// What the response says was not used as asked.
    pub warnings: Vec<Warning>,
}

impl SpeakCall {
    pub fn check(model: &ModelSpec, body: SpeechTaskRequest) -> Result<SpeakCall, ApiError> {
        let limits = limits(model)?;
        let characters = body.text.chars().count();
        if body.text.trim().is_empty() {
            return Err(ApiError::invalid_field("text", "`text` must not be empty"));
        }
        if characters > limits.max_characters as usize {
            return Err(ApiError::invalid_field(
                "text",
                format!("`text` is {characters} characters; {} takes at most {}", model.name, limits.max_characters),
            ));
        }
        Ok(SpeakCall {
            request: SpeechRequest {
                text: body.text,
                voice: check_voice(model, body.voice)?,
                voice_settings: check_voice_settings(body.voice_settings)?,
                output_format: check_output_format(model, body.output_format)?,
            },
            reporting_group: crate::api::call::check_reporting_group(body.reporting_group)?,
            use_fallback: body.use_fallback_model.unwrap_or(false),
            task: None,
            warnings: Vec::new(),
        })
    }

    fn characters(&self) -> u64 {
        self.request.text.chars().count() as u64
    }
}

/// Audio on its way: the call's bill, who answered, and the stream.
pub struct Speaking {
    pub billed: Billed,
    pub answered: Answered,
    pub stream: AudioStream,
    pub format: String,
    /// What the finished audio costs at the answering model's price.
    pub cost: Credits,
    /// Characters (text-to-speech) or input milliseconds (speech-to-speech), for the usage record.
    pub units: u64,
    pub usage: SpeechUsage,
    pub warnings: Vec<Warning>,
}

/// Starts text-to-speech: admitted, reserved, and the first audio received.
pub async fn start_speech(
    state: &AppState,
    req: &HttpRequest,
    principal: &Principal,
    model: &ModelSpec,
    call: SpeakCall,
    started: Instant,
    endpoint: &'static str,
) -> Result<Speaking, ApiError> {
    let characters = call.characters();
    let spec = CallSpec {
        principal,
        model,
        use_fallback: call.use_fallback,
        reporting_group: call.reporting_group,
        endpoint,
        id_prefix: "speech",
        started,
        task: call.task,
    };
    let mut billed =
        Billed::begin(state, req, &spec, spec.new_id(), 0, |m| m.pricing.characters_cost(characters)).await?;
    let (answered, stream) = billed.dispatch(state, &spec, &SpeechAttempt { request: &call.request }).await?;
    let cost = answered.model.pricing.characters_cost(characters);
    // What the answering model was sent (a fallback may take other voices and formats), and what changed.
    let (sent, fitted) = switchyard_actors::speech::fit(&answered.model, &call.request)
        .unwrap_or_else(|_| (call.request.clone(), Vec::new()));
    let mut warnings = call.warnings;
    warnings.extend(fitted);
    Ok(Speaking {
        billed,
        answered,
        stream,
        format: sent.output_format,
        cost,
        units: characters,
        usage: SpeechUsage { characters: Some(characters), ..Default::default() },
        warnings,
    })
}

/// Stores the whole stream as media (as it arrives) and settles; a stream that breaks off is discarded and
/// answered 502, with nothing charged.
pub(crate) async fn finish_audio(
    state: &AppState,
    req: &HttpRequest,
    workspace_id: &str,
    speaking: Speaking,
) -> Result<SpeechGeneration, ApiError> {
    let Speaking { mut billed, answered, stream, format, cost, units, mut usage, warnings } = speaking;
    let content_type = format_content_type(&format).unwrap_or("application/octet-stream");
    let mut writer = crate::media::MediaWriter::create(&state.media, workspace_id)
        .await
        .map_err(|e| ApiError::internal(format!("media: {e}")))?;
    let mut audio = Vec::with_capacity(stream.first.len() * 8);
    let mut chunks = futures::stream::iter([Ok(stream.first)]).chain(stream.rest);
    while let Some(chunk) = chunks.next().await {
        let written = match chunk {
            Ok(chunk) => {
                audio.extend_from_slice(&chunk);
                writer.write(&chunk).await.map_err(|e| ApiError::internal(format!("media: {e}")))
            }
            Err(e) => {
                tracing::warn!(error = %e, "the audio stream broke off");
                Err(ApiError::from(e).with_message("The provider's audio stream broke off before the end"))
            }
        };
        if let Err(error) = written {
            writer.abort().await;
            billed.fail("cut");
            return Err(error);
        }
    }
    let audio = Bytes::from(audio);
    let duration = match crate::audio::raw_duration_ms(&format, audio.len() as u64) {
        Some(ms) => Some(ms),
        None => crate::audio::duration_ms_blocking(audio.clone(), content_type).await,
    };
    usage.output_seconds = duration.map(seconds);
    let filename = format!("speech.{}", format_extension(&format));
    let stored = match writer.finish(&state.store, &filename, content_type).await {
        Ok(stored) => stored,
        Err(e) => {
            billed.fail("error");
            return Err(ApiError::internal(format!("media: {e}")));
        }
    };
    let id = billed.id().to_owned();
    let metadata =
        billed.settle(&answered, cost, Measured { units, output_bytes: stored.bytes, ..Default::default() }).await?;
    usage.output_bytes = stored.bytes;
    usage.processing_ms = metadata.latency_ms;
    let url = crate::api::form::media_url(state, req, workspace_id, &stored.media_ref);
    Ok(SpeechGeneration {
        id,
        object: "speech.generation",
        created: now_unix(),
        model: answered.model.name.clone(),
        audio: AudioOut {
            url,
            b64_json: base64::engine::general_purpose::STANDARD.encode(&audio),
            media_ref: stored.media_ref,
            content_type: content_type.to_owned(),
            format,
            bytes: stored.bytes,
            duration_seconds: duration.map(seconds),
        },
        usage,
        warnings,
        metadata,
    })
}

/// Answers a text-to-speech task as `speech.generation`.
pub async fn respond_speech(
    state: &AppState,
    req: &HttpRequest,
    principal: &Principal,
    model: &ModelSpec,
    body: SpeechTaskRequest,
    file: Option<FileInput>,
    started: Instant,
) -> Result<HttpResponse, ApiError> {
    let mut call = SpeakCall::check(model, body)?;
    if let Some(file) = file {
        // 001's multipart example sends an `audio` file with text-to-speech: taken, not used, and said so.
        let message = format!(
            "{} speaks `text`; the audio file was not used (eleven-labs-sts speaks an audio file in another voice)",
            model.name
        );
        call.warnings.push(Warning::new("audio", file.filename.clone().into(), serde_json::Value::Null, message));
    }
    let speaking = start_speech(state, req, principal, model, call, started, "/api/v1/task").await?;
    let generation = finish_audio(state, req, &principal.workspace_id, speaking).await?;
    Ok(HttpResponse::Ok().insert_header(("x-switchyard-model", generation.model.as_str())).json(generation))
}

/// Answers a speech-to-speech task as `speech.generation`.
pub async fn respond_conversion(
    state: &AppState,
    req: &HttpRequest,
    principal: &Principal,
    model: &ModelSpec,
    body: ConversionTaskRequest,
    file: Option<FileInput>,
    started: Instant,
) -> Result<HttpResponse, ApiError> {
    let generation = convert(state, req, principal, model, body, file, started, "/api/v1/task").await?;
    Ok(HttpResponse::Ok().insert_header(("x-switchyard-model", generation.model.as_str())).json(generation))
}

/// Speech-to-speech: the audio (the request's file, or its `audio` media_ref) said again in another voice.
#[allow(clippy::too_many_arguments)]
pub async fn convert(
    state: &AppState,
    req: &HttpRequest,
    principal: &Principal,
    model: &ModelSpec,
    body: ConversionTaskRequest,
    file: Option<FileInput>,
    started: Instant,
    endpoint: &'static str,
) -> Result<SpeechGeneration, ApiError> {
    let voice = check_voice(model, body.voice)?;
    let voice_settings = check_voice_settings(body.voice_settings)?;
    let output_format = check_output_format(model, body.output_format)?;
    let reporting_group = crate::api::call::check_reporting_group(body.reporting_group)?;
    let audio = audio_input(state, principal, file, body.audio).await?;
    let millis = input_duration(model, &audio).await?;
    let request = ConvertRequest {
        audio: audio.bytes,
        filename: audio.filename,
        content_type: audio.content_type.to_owned(),
        voice,
        voice_settings,
        output_format: output_format.clone(),
    };
    let spec = CallSpec {
        principal,
        model,
        use_fallback: body.use_fallback_model.unwrap_or(false),
        reporting_group,
        endpoint,
        id_prefix: "speech",
        started,
        task: None,
    };
    let mut billed = Billed::begin(state, req, &spec, spec.new_id(), 0, |m| m.pricing.audio_cost(millis)).await?;
    let (answered, stream) = billed.dispatch(state, &spec, &ConvertAttempt { request: &request }).await?;
    let cost = answered.model.pricing.audio_cost(millis);
    let speaking = Speaking {
        billed,
        answered,
        stream,
        format: output_format,
        cost,
        units: millis,
        usage: SpeechUsage { input_seconds: Some(seconds(millis)), ..Default::default() },
        warnings: Vec::new(),
    };
    finish_audio(state, req, &principal.workspace_id, speaking).await
}

/// A speech-to-text call, checked.
pub struct TranscribeCall {
    pub audio: FileInput,
    pub language: Option<String>,
    pub reporting_group: Option<String>,
    pub use_fallback: bool,
}

/// Transcribes: the audio's length is read first (it sets the price), then the pool runs the call.
pub async fn transcribe(
    state: &AppState,
    req: &HttpRequest,
    principal: &Principal,
    model: &ModelSpec,
    call: TranscribeCall,
    started: Instant,
    endpoint: &'static str,
) -> Result<Transcription, ApiError> {
    let millis = input_duration(model, &call.audio).await?;
    let request = TranscribeRequest {
        audio: call.audio.bytes,
        filename: call.audio.filename,
        content_type: call.audio.content_type.to_owned(),
        language: call.language,
    };
    let spec = CallSpec {
        principal,
        model,
        use_fallback: call.use_fallback,
        reporting_group: call.reporting_group,
        endpoint,
        id_prefix: "stt",
        started,
        task: None,
    };
    let mut billed = Billed::begin(state, req, &spec, spec.new_id(), 0, |m| m.pricing.audio_cost(millis)).await?;
    let (answered, transcript) = billed.dispatch(state, &spec, &TranscribeAttempt { request: &request }).await?;
    let id = billed.id().to_owned();
    let cost = answered.model.pricing.audio_cost(millis);
    let measured = Measured { units: millis, output_bytes: transcript.text.len() as u64, ..Default::default() };
    let metadata = billed.settle(&answered, cost, measured).await?;
    Ok(Transcription {
        id,
        object: "transcription",
        created: now_unix(),
        model: answered.model.name.clone(),
        text: transcript.text,
        language: transcript.language,
        language_probability: transcript.language_probability,
        duration_seconds: seconds(millis),
        words: transcript.words,
        usage: SpeechUsage {
            input_seconds: Some(seconds(millis)),
            output_bytes: measured.output_bytes,
            processing_ms: metadata.latency_ms,
            ..Default::default()
        },
        metadata,
    })
}

/// Answers a speech-to-text task as `transcription`.
pub async fn respond_transcription(
    state: &AppState,
    req: &HttpRequest,
    principal: &Principal,
    model: &ModelSpec,
    body: TranscriptionTaskRequest,
    file: Option<FileInput>,
    started: Instant,
) -> Result<HttpResponse, ApiError> {
    let transcription = transcribe_task(state, req, principal, model, body, file, started, "/api/v1/task").await?;
    Ok(HttpResponse::Ok().insert_header(("x-switchyard-model", transcription.model.as_str())).json(transcription))
}

/// Speech-to-text of the request's file, or its `audio` media_ref.
#[allow(clippy::too_many_arguments)]
pub async fn transcribe_task(
    state: &AppState,
    req: &HttpRequest,
    principal: &Principal,
    model: &ModelSpec,
    body: TranscriptionTaskRequest,
    file: Option<FileInput>,
    started: Instant,
    endpoint: &'static str,
) -> Result<Transcription, ApiError> {
    let language = check_language(body.language)?;
    let reporting_group = crate::api::call::check_reporting_group(body.reporting_group)?;
    let call = TranscribeCall {
        audio: audio_input(state, principal, file, body.audio).await?,
        language,
        reporting_group,
        use_fallback: body.use_fallback_model.unwrap_or(false),
    };
    transcribe(state, req, principal, model, call, started, endpoint).await
}
