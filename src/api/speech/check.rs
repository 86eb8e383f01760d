//! A speech request checked against its model: voice, voice settings, output format, language, the input
//! audio's length.

use crate::api::errors::ApiError;
use crate::api::form::FileInput;
use crate::auth::Principal;
use crate::state::AppState;
use serde_json::Value;
use switchyard_actors::catalogue::AudioLimits;
use switchyard_actors::speech::{format_content_type, OUTPUT_FORMATS};
use switchyard_actors::ModelSpec;

pub(super) fn limits(model: &ModelSpec) -> Result<&AudioLimits, ApiError> {
    model.audio.as_ref().ok_or_else(|| ApiError::internal(format!("speech model {} has no limits", model.name)))
}

pub(super) fn seconds(millis: u64) -> f64 {
    millis as f64 / 1000.0
}

/// The voice to use: the request's, or the model's default.
pub(super) fn check_voice(model: &ModelSpec, voice: Option<String>) -> Result<String, ApiError> {
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
pub(super) fn check_output_format(model: &ModelSpec, format: Option<String>) -> Result<String, ApiError> {
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

pub(super) fn check_language(language: Option<String>) -> Result<Option<String>, ApiError> {
    match language {
        None => Ok(None),
        Some(l) if (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_lowercase()) => Ok(Some(l)),
        Some(_) => Err(ApiError::invalid_field("language", "`language` is an ISO 639 code such as `en` or `deu`")),
    }
}

/// The length of an input file, within the model's limit.
pub(super) async fn input_duration(model: &ModelSpec, audio: &FileInput) -> Result<u64, ApiError> {
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
pub(super) async fn audio_input(
    state: &AppState,
    principal: &Principal,
    file: Option<FileInput>,
    media_ref: Option<String>,
) -> Result<FileInput, ApiError> {
    let kind = crate::api::form::FileKind::Audio;
    let audio = crate::api::form::file_input(state, &principal.workspace_id, "audio", kind, file, media_ref).await?;
    audio.ok_or_else(|| {
        ApiError::missing_field("audio")
            .with_message("`audio` is required: send the file (multipart) or a `media_ref` from an upload")
    })
}
