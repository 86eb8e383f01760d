//! The speech request bodies and response objects: `speech.generation` and `transcription`.

use crate::api::call::Metadata;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_actors::speech::Word;
use switchyard_actors::Warning;
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
    /// Bytes produced: the audio (speech), the transcript's text (transcription).
    pub output_bytes: u64,
    /// Time from the request to the stored answer, in milliseconds.
    pub processing_ms: u64,
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
    /// Parameters not used as asked (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub warnings: Vec<Warning>,
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
