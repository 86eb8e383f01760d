//! Speech through `POST /api/v1/task` (001) and the OpenAI faces: text-to-speech (`speech.generation`),
//! speech-to-speech (`speech.generation`) and speech-to-text (`transcription`). Audio from upstream is stored as
//! media as it arrives; a stream that breaks off is never stored, answered as success, or charged.

use super::billed::{Answered, Billed, CallSpec};
use super::chat::Metadata;
use super::errors::ApiError;
use super::form::FileInput;
use crate::auth::Principal;
use crate::state::{now_unix, AppState};
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Instant;
use switchyard_actors::catalogue::AudioLimits;
use switchyard_actors::engine::dispatch::{ConvertAttempt, SpeechAttempt, TranscribeAttempt};
use switchyard_actors::speech::{
    format_content_type, format_extension, AudioStream, ConvertRequest, SpeechRequest, TranscribeRequest, Word,
    OUTPUT_FORMATS,
};
use switchyard_actors::{Credits, ModelSpec};
use utoipa::ToSchema;

/// A text-to-speech task (001). Unknown fields are refused by name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpeechTaskRequest {
    /// `eleven-labs-tts`.
    pub model: String,
    pub text: String,
    /// A voice name (`adam`, `Rachel`: any case) or a voice id. Defaults to the model's voice.
    pub voice: Option<String>,
    /// `stability`, `similarity_boost`, `style` (0 to 1), `use_speaker_boost` (true/false), `speed` (0.7 to 1.2).
    #[schema(value_type = Option<Object>)]
    pub voice_settings: Option<Value>,
    /// e.g. `mp3_44100_128`, `wav_44100`, `pcm_24000`, `ulaw_8000`.
    pub output_format: Option<String>,
    pub reporting_group: Option<String>,
    pub use_fallback_model: Option<bool>,
}

/// A speech-to-speech task (001): `audio` as a file (multipart) or a `media_ref`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversionTaskRequest {
    /// `eleven-labs-sts`.
    pub model: String,
    /// A `media_ref` (JSON), or the file itself (multipart).
    pub audio: Option<String>,
    pub voice: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub voice_settings: Option<Value>,
    pub output_format: Option<String>,
    pub reporting_group: Option<String>,
    pub use_fallback_model: Option<bool>,
}

/// A speech-to-text task (001): `audio` as a file (multipart) or a `media_ref`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TranscriptionTaskRequest {
    /// `eleven-labs-stt`.
    pub model: String,
    /// A `media_ref` (JSON), or the file itself (multipart).
    pub audio: Option<String>,
    /// ISO 639-1 or 639-3 code; detected when absent.
    pub language: Option<String>,
    pub reporting_group: Option<String>,
    pub use_fallback_model: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct AudioOut {
    /// Served by the gateway (`GET /api/media/{media_ref}`, with the caller's key).
    pub url: String,
    pub b64_json: String,
    pub media_ref: String,
    pub content_type: String,
    pub format: String,
    pub bytes: u64,
    pub duration_seconds: Option<f64>,
}

#[derive(Serialize, ToSchema, Default)]
pub struct SpeechUsage {
    /// Characters spoken (text-to-speech).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub characters: Option<u64>,
    /// Seconds of audio taken in (speech-to-speech, speech-to-text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_seconds: Option<f64>,
    /// Seconds of audio produced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_seconds: Option<f64>,
}

/// `speech.generation`
#[derive(Serialize, ToSchema)]
pub struct SpeechGeneration {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub model: String,
    pub audio: AudioOut,
    pub usage: SpeechUsage,
    pub metadata: Metadata,
}

/// `transcription`
#[derive(Serialize, ToSchema)]
pub struct Transcription {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub model: String,
    pub text: String,
    pub language: Option<String>,
    pub language_probability: Option<f64>,
    pub duration_seconds: f64,
    #[schema(value_type = Vec<Object>)]
    pub words: Vec<Word>,
    pub usage: SpeechUsage,
    pub metadata: Metadata,
}

fn limits(model: &ModelSpec) -> Result<&AudioLimits, ApiError> {
    model.audio.as_ref().ok_or_else(|| ApiError::internal(format!("speech model {} has no limits", model.name)))
}

fn seconds(millis: u64) -> f64 {
    millis as f64 / 1000.0
}

/// The voice to use: the request's, or the model's default.
fn check_voice(model: &ModelSpec, voice: Option<String>) -> Result<String, ApiError> {
    let voice = voice.or_else(|| model.audio.as_ref().and_then(|l| l.default_voice.clone()));
    match voice {
        None => Err(ApiError::missing_field("voice")),
        Some(v) if v.trim().is_empty() || v.chars().count() > 100 || v.chars().any(char::is_control) => {
            Err(ApiError::invalid_field("voice", "`voice` must be a voice name or id of 1 to 100 characters"))
        }
        Some(v) => Ok(v.trim().to_owned()),
    }
}

/// Voice settings are an object of known settings within their ranges.
pub fn check_voice_settings(settings: Option<Value>) -> Result<Option<Value>, ApiError> {
    let Some(settings) = settings else { return Ok(None) };
    let Value::Object(map) = &settings else {
        return Err(ApiError::invalid_field("voice_settings", "`voice_settings` must be an object"));
    };
    for (key, value) in map {
        let range = match key.as_str() {
            "stability" | "similarity_boost" | "style" => Some((0.0, 1.0)),
            "speed" => Some((0.7, 1.2)),
            "use_speaker_boost" => None,
            other => {
                return Err(ApiError::invalid_field(
                    "voice_settings",
                    format!(
                        "`voice_settings.{other}` is not a voice setting (stability, similarity_boost, style, \
                         use_speaker_boost, speed)"
                    ),
                ))
            }
        };
        let ok = match range {
            Some((min, max)) => value.as_f64().is_some_and(|v| (min..=max).contains(&v)),
            None => value.is_boolean(),
        };
        if !ok {
            let wanted = match range {
                Some((min, max)) => format!("a number from {min} to {max}"),
                None => "true or false".to_owned(),
            };
            return Err(ApiError::invalid_field("voice_settings", format!("`voice_settings.{key}` must be {wanted}")));
        }
    }
    Ok(Some(settings))
}

/// The output format: the request's, or the model's default; one the gateway knows.
fn check_output_format(model: &ModelSpec, format: Option<String>) -> Result<String, ApiError> {
    let format = format
        .or_else(|| model.audio.as_ref().and_then(|l| l.default_output_format.clone()))
        .unwrap_or_else(|| "mp3_44100_128".to_owned());
    if format_content_type(&format).is_none() {
        let known: Vec<&str> = OUTPUT_FORMATS.iter().map(|(f, _)| *f).collect();
        return Err(ApiError::invalid_field(
            "output_format",
            format!("Unknown `output_format` `{format}`; one of: {}", known.join(", ")),
        ));
    }
    Ok(format)
}

fn check_language(language: Option<String>) -> Result<Option<String>, ApiError> {
    match language {
        None => Ok(None),
        Some(l) if (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_lowercase()) => Ok(Some(l)),
        Some(_) => Err(ApiError::invalid_field("language", "`language` is an ISO 639 code such as `en` or `deu`")),
    }
}

/// The length of an input file, within the model's limit.
async fn input_duration(model: &ModelSpec, audio: &FileInput) -> Result<u64, ApiError> {
    let limits = limits(model)?;
    let millis =
        crate::audio::duration_ms_blocking(audio.bytes.clone(), audio.content_type).await.ok_or_else(|| {
            ApiError::invalid_field(
                "audio",
                format!("Could not read the {} audio: is the file complete?", audio.content_type),
            )
        })?;
    if millis == 0 {
        return Err(ApiError::invalid_field("audio", "The audio is empty"));
    }
    if millis > u64::from(limits.max_seconds) * 1000 {
        return Err(ApiError::invalid_field(
            "audio",
            format!(
                "The audio is {:.1} s long; {} takes at most {} s",
                seconds(millis),
                model.name,
                limits.max_seconds
            ),
        ));
    }
    Ok(millis)
}

/// The audio a task takes: the file sent with it, or the media it names. Required.
async fn audio_input(
    state: &AppState,
    principal: &Principal,
    file: Option<FileInput>,
    media_ref: Option<String>,
) -> Result<FileInput, ApiError> {
    let kind = super::form::FileKind::Audio;
    let audio = super::form::file_input(state, &principal.workspace_id, "audio", kind, file, media_ref).await?;
    audio.ok_or_else(|| {
        ApiError::missing_field("audio")
            .with_message("`audio` is required: send the file (multipart) or a `media_ref` from an upload")
    })
}

/// A text-to-speech call, checked.
pub struct SpeakCall {
    pub request: SpeechRequest,
    pub reporting_group: Option<String>,
    pub use_fallback: bool,
    /// The task and revision a run is for.
    pub task: Option<(String, String)>,
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
            reporting_group: super::chat::check_reporting_group(body.reporting_group)?,
            use_fallback: body.use_fallback_model.unwrap_or(false),
            task: None,
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
        id_prefix: "spc",
        started,
        task: call.task,
    };
    let mut billed = Billed::begin(state, req, &spec, |m| m.pricing.characters_cost(characters)).await?;
    let (answered, stream) = billed.dispatch(state, &spec, &SpeechAttempt { request: &call.request }).await?;
    let cost = answered.model.pricing.characters_cost(characters);
    Ok(Speaking {
        billed,
        answered,
        stream,
        format: call.request.output_format,
        cost,
        units: characters,
        usage: SpeechUsage { characters: Some(characters), ..Default::default() },
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
    let Speaking { mut billed, answered, stream, format, cost, units, mut usage } = speaking;
    let content_type = format_content_type(&format).unwrap_or("application/octet-stream");
    let mut writer = crate::media::MediaWriter::create(state, workspace_id)
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
    let stored = match writer.finish(state, &filename, content_type).await {
        Ok(stored) => stored,
        Err(e) => {
            billed.fail("error");
            return Err(ApiError::internal(format!("media: {e}")));
        }
    };
    let id = billed.id().to_owned();
    let metadata = billed.settle(&answered, cost, units, stored.bytes).await?;
    let url = format!("{}/api/media/{}", super::media::public_url(state, req), stored.media_ref);
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
    started: Instant,
) -> Result<HttpResponse, ApiError> {
    let call = SpeakCall::check(model, body)?;
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
    let voice = check_voice(model, body.voice)?;
    let voice_settings = check_voice_settings(body.voice_settings)?;
    let output_format = check_output_format(model, body.output_format)?;
    let reporting_group = super::chat::check_reporting_group(body.reporting_group)?;
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
        endpoint: "/api/v1/task",
        id_prefix: "sts",
        started,
        task: None,
    };
    let mut billed = Billed::begin(state, req, &spec, |m| m.pricing.audio_cost(millis)).await?;
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
    };
    let generation = finish_audio(state, req, &principal.workspace_id, speaking).await?;
    Ok(HttpResponse::Ok().insert_header(("x-switchyard-model", generation.model.as_str())).json(generation))
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
    let mut billed = Billed::begin(state, req, &spec, |m| m.pricing.audio_cost(millis)).await?;
    let (answered, transcript) = billed.dispatch(state, &spec, &TranscribeAttempt { request: &request }).await?;
    let id = billed.id().to_owned();
    let cost = answered.model.pricing.audio_cost(millis);
    let metadata = billed.settle(&answered, cost, millis, transcript.text.len() as u64).await?;
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
        usage: SpeechUsage { input_seconds: Some(seconds(millis)), ..Default::default() },
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
    let language = check_language(body.language)?;
    let reporting_group = super::chat::check_reporting_group(body.reporting_group)?;
    let call = TranscribeCall {
        audio: audio_input(state, principal, file, body.audio).await?,
        language,
        reporting_group,
        use_fallback: body.use_fallback_model.unwrap_or(false),
    };
    let transcription = transcribe(state, req, principal, model, call, started, "/api/v1/task").await?;
    Ok(HttpResponse::Ok().insert_header(("x-switchyard-model", transcription.model.as_str())).json(transcription))
}

/// Streams a started text-to-speech call to the client as raw audio bytes, storing it as it goes. The bill is
/// settled when the last byte is in; a stream that breaks off aborts the response (the client sees an incomplete
/// body, never a short file passed off as whole) and is not charged; a client that leaves is charged in full
/// (the provider spoke the whole text).
pub fn stream_audio(state: actix_web::web::Data<AppState>, workspace_id: String, speaking: Speaking) -> HttpResponse {
    let Speaking { billed, answered, stream, format, cost, units, usage: _ } = speaking;
    let content_type = format_content_type(&format).unwrap_or("application/octet-stream");
    let model_name = answered.model.name.clone();
    let body = async_stream::stream! {
        let mut bill = LeftBill { billed: Some(billed), cost, units, bytes: 0 };
        // The copy kept as media is best effort here: the client has the audio either way. A copy that cannot be
        // written whole is dropped, never published part way.
        let mut writer = match crate::media::MediaWriter::create(&state, &workspace_id).await {
            Ok(writer) => Some(writer),
            Err(e) => {
                tracing::warn!(error = %e, "could not store streamed audio");
                None
            }
        };
        let mut chunks = futures::stream::iter([Ok(stream.first)]).chain(stream.rest);
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(chunk) => {
                    if let Some(w) = writer.as_mut() {
                        if let Err(e) = w.write(&chunk).await {
                            tracing::warn!(error = %e, "could not store streamed audio");
                            if let Some(w) = writer.take() {
                                w.abort().await;
                            }
                        }
                    }
                    bill.bytes += chunk.len() as u64;
                    yield Ok::<Bytes, std::io::Error>(chunk);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the audio stream broke off");
                    if let Some(w) = writer.take() {
                        w.abort().await;
                    }
                    if let Some(mut billed) = bill.billed.take() {
                        billed.fail("cut");
                    }
                    yield Err(std::io::Error::other(format!("the provider's audio stream broke off: {e}")));
                    return;
                }
            }
        }
        if let Some(w) = writer {
            let filename = format!("speech.{}", format_extension(&format));
            if let Err(e) = w.finish(&state, &filename, content_type).await {
                tracing::warn!(error = %e, "could not store streamed audio");
            }
        }
        if let Some(billed) = bill.billed.take() {
            if let Err(e) = billed.settle(&answered, cost, units, bill.bytes).await {
                tracing::error!(error = %e.body().error.message, "could not settle a speech stream");
            }
        }
    };
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("x-switchyard-model", model_name.as_str()))
        .streaming(body)
}

/// The bill of a streamed answer the client may leave part way: charged in full when dropped unsettled.
struct LeftBill {
    billed: Option<Billed>,
    cost: Credits,
    units: u64,
    bytes: u64,
}

impl Drop for LeftBill {
    fn drop(&mut self) {
        if let Some(billed) = self.billed.take() {
            billed.settle_detached(self.cost, self.units, self.bytes, "abandoned");
        }
    }
}
