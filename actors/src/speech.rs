//! The engine's speech types: text-to-speech, speech-to-speech and speech-to-text, independent of any wire format.

use crate::error::ProviderError;
use bytes::Bytes;
use futures::stream::BoxStream;

/// The output formats a speech model can be asked for (ElevenLabs' names), with the content type each produces.
pub const OUTPUT_FORMATS: &[(&str, &str)] = &[
    ("mp3_22050_32", "audio/mpeg"),
    ("mp3_44100_32", "audio/mpeg"),
    ("mp3_44100_64", "audio/mpeg"),
    ("mp3_44100_96", "audio/mpeg"),
    ("mp3_44100_128", "audio/mpeg"),
    ("mp3_44100_192", "audio/mpeg"),
    ("pcm_8000", "audio/pcm"),
    ("pcm_16000", "audio/pcm"),
    ("pcm_22050", "audio/pcm"),
    ("pcm_24000", "audio/pcm"),
    ("pcm_44100", "audio/pcm"),
    ("pcm_48000", "audio/pcm"),
    ("wav_8000", "audio/wav"),
    ("wav_16000", "audio/wav"),
    ("wav_22050", "audio/wav"),
    ("wav_24000", "audio/wav"),
    ("wav_44100", "audio/wav"),
    ("wav_48000", "audio/wav"),
    ("ulaw_8000", "audio/basic"),
];

/// The content type of an output format, if the format is known.
pub fn format_content_type(format: &str) -> Option<&'static str> {
    OUTPUT_FORMATS.iter().find(|(name, _)| *name == format).map(|(_, ct)| *ct)
}

/// The file extension for an output format's files.
pub fn format_extension(format: &str) -> &'static str {
    match format.split('_').next() {
        Some("mp3") => "mp3",
        Some("wav") => "wav",
        Some("ulaw") => "ulaw",
        _ => "pcm",
    }
}

/// Text to speak.
#[derive(Clone, Debug, PartialEq)]
pub struct SpeechRequest {
    pub text: String,
    /// A voice id, or a voice name the provider resolves (case-insensitive).
    pub voice: String,
    /// Provider voice settings (`stability`, `similarity_boost`, `style`, `use_speaker_boost`, `speed`), as given.
    pub voice_settings: Option<serde_json::Value>,
    /// One of `OUTPUT_FORMATS`.
    pub output_format: String,
}

/// Audio to speak again in another voice.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvertRequest {
    pub audio: Bytes,
    pub filename: String,
    pub content_type: String,
    pub voice: String,
    pub voice_settings: Option<serde_json::Value>,
    pub output_format: String,
}

/// Audio to transcribe.
#[derive(Clone, Debug, PartialEq)]
pub struct TranscribeRequest {
    pub audio: Bytes,
    pub filename: String,
    pub content_type: String,
    /// ISO 639 code, or `None` to detect.
    pub language: Option<String>,
}

/// Audio as it arrives from upstream: the response head has come; the chunks follow.
pub struct AudioStream {
    pub content_type: String,
    /// The first chunk (already received, so the answer has begun).
    pub first: Bytes,
    pub rest: BoxStream<'static, Result<Bytes, ProviderError>>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Word {
    pub text: String,
    pub start: f64,
    pub end: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Transcript {
    pub text: String,
    pub language: Option<String>,
    pub language_probability: Option<f64>,
    pub words: Vec<Word>,
}
