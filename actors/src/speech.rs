//! The engine's speech types: text-to-speech, speech-to-speech and speech-to-text, independent of any wire format.

use crate::catalogue::ModelSpec;
use crate::error::ProviderError;
use crate::warning::Warning;
use bytes::Bytes;
use futures::stream::BoxStream;
use serde_json::{json, Value};

/// The output formats a speech model can be asked for (`codec_rate[_kbps]`: ElevenLabs' names, and OpenAI's
/// `mp3_24000_160`), with the content type each produces.
pub const OUTPUT_FORMATS: &[(&str, &str)] = &[
    ("mp3_24000_160", "audio/mpeg"),
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

/// What ElevenLabs makes: every format but OpenAI's mp3.
fn elevenlabs_formats() -> impl Iterator<Item = &'static str> {
    OUTPUT_FORMATS.iter().map(|(name, _)| *name).filter(|name| *name != "mp3_24000_160")
}

/// A format's codec, sample rate and bitrate (0 when it has none).
fn parts(format: &str) -> (&str, u32, u32) {
    let mut it = format.split('_');
    let codec = it.next().unwrap_or_default();
    let number = |part: Option<&str>| part.and_then(|p| p.parse().ok()).unwrap_or(0);
    (codec, number(it.next()), number(it.next()))
}

/// The request as `model` takes it: its voices, its nearest output format of the same codec, its voice settings;
/// one warning per change. `Err` (why) when the model makes no audio of the codec asked.
pub fn fit(model: &ModelSpec, request: &SpeechRequest) -> Result<(SpeechRequest, Vec<Warning>), String> {
    let mut out = request.clone();
    let mut warnings = Vec::new();
    let Some(limits) = &model.audio else { return Ok((out, warnings)) };
    let characters = request.text.chars().count();
    if limits.max_characters > 0 && characters > limits.max_characters as usize {
        return Err(format!("{} speaks at most {} characters, not {characters}", model.name, limits.max_characters));
    }
    let formats: Vec<&str> = if limits.output_formats.is_empty() {
        elevenlabs_formats().collect()
    } else {
        limits.output_formats.iter().map(String::as_str).collect()
    };
    if !formats.contains(&request.output_format.as_str()) {
        let (codec, rate, kbps) = parts(&request.output_format);
        let nearest = formats
            .iter()
            .filter(|f| parts(f).0 == codec)
            .min_by_key(|f| {
                let (_, r, k) = parts(f);
                u64::from(r.abs_diff(rate)) * 1000 + u64::from(k.abs_diff(kbps))
            })
            .ok_or_else(|| format!("{} makes no {codec} audio", model.name))?;
        let message = format!(
            "{} makes {}; the nearest to {} is {nearest}",
            model.name,
            formats.join(", "),
            request.output_format
        );
        warnings.push(Warning::new("output_format", json!(request.output_format), json!(nearest), message));
        out.output_format = (*nearest).to_owned();
    }
    if !limits.voices.is_empty() {
        match limits.voices.iter().find(|v| v.eq_ignore_ascii_case(request.voice.trim())) {
            Some(voice) => out.voice = voice.clone(),
            None => {
                let default = limits.default_voice.clone().unwrap_or_else(|| limits.voices[0].clone());
                let message = format!(
                    "{} has the voices {}; `{}` is not one",
                    model.name,
                    limits.voices.join(", "),
                    request.voice
                );
                warnings.push(Warning::new("voice", json!(request.voice), json!(default), message));
                out.voice = default;
            }
        }
    }
    if let (Some(taken), Some(Value::Object(settings))) = (&limits.voice_settings, &request.voice_settings) {
        let (kept, dropped): (Vec<_>, Vec<_>) = settings.iter().partition(|(k, _)| taken.contains(k));
        for (key, value) in &dropped {
            let message = format!("{} takes no voice setting `{key}`; it was not sent", model.name);
            warnings.push(Warning::new(&format!("voice_settings.{key}"), (*value).clone(), Value::Null, message));
        }
        let kept: serde_json::Map<String, Value> = kept.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        out.voice_settings = (!kept.is_empty()).then_some(Value::Object(kept));
    }
    Ok((out, warnings))
}

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
