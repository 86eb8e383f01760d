//! ElevenLabs: text-to-speech and speech-to-speech streamed (`…/stream`), speech-to-text (`/v1/speech-to-text`),
//! voices by name through `/v1/voices` (cached). Authenticated with `xi-api-key`.

use super::http::Upstream;
use crate::catalogue::ModelSpec;
use crate::error::ProviderError;
use crate::speech::{AudioStream, ConvertRequest, SpeechRequest, TranscribeRequest, Transcript, Word};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How long the voice list is trusted before it is fetched again.
const VOICES_TTL: Duration = Duration::from_secs(300);

/// The account's voices as (id, name), and when they were fetched.
type VoiceList = Vec<(String, String)>;

pub struct ElevenLabs {
    pub(crate) upstream: Upstream,
    voices: Mutex<Option<(Instant, VoiceList)>>,
}

/// Voice ids are 20 letters and digits; anything else is a name to look up.
fn looks_like_id(voice: &str) -> bool {
    voice.len() == 20 && voice.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl ElevenLabs {
    pub(crate) fn new(upstream: Upstream) -> Self {
        ElevenLabs { upstream, voices: Mutex::new(None) }
    }

    fn keyed(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.upstream.key {
            Some(key) => builder.header("xi-api-key", key),
            None => builder,
        }
    }

    fn cached_voices(&self) -> Option<VoiceList> {
        let guard = self.voices.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.as_ref().filter(|(at, _)| at.elapsed() < VOICES_TTL).map(|(_, list)| list.clone())
    }

    /// A voice id for `voice`: ids pass through, names are looked up (case-insensitive) in the account's voices.
    pub(crate) async fn voice_id(&self, voice: &str, deadline: Instant) -> Result<String, ProviderError> {
        if looks_like_id(voice) {
            return Ok(voice.to_owned());
        }
        let voices = match self.cached_voices() {
            Some(list) => list,
            None => {
                let request = self.keyed(self.upstream.client.get(format!("{}/v1/voices", self.upstream.base_url)));
                let response = self.upstream.send(request, deadline, error_message).await?;
                let list: WireVoices = serde_json::from_slice(&self.upstream.body(response, deadline).await?)
                    .map_err(|e| self.upstream.protocol(format!("bad voice list: {e}")))?;
                let list: VoiceList = list.voices.into_iter().map(|v| (v.voice_id, v.name)).collect();
                *self.voices.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((Instant::now(), list.clone()));
                list
            }
        };
        let wanted = voice.trim();
        // "Rachel" matches "Rachel" and also "Rachel - calm narrator" style names by their first word.
        let found = voices.iter().find(|(_, name)| name.eq_ignore_ascii_case(wanted)).or_else(|| {
            voices
                .iter()
                .find(|(_, name)| name.split([' ', '-']).next().is_some_and(|first| first.eq_ignore_ascii_case(wanted)))
        });
        match found {
            Some((id, _)) => Ok(id.clone()),
            None => {
                let names: Vec<&str> = voices.iter().map(|(_, n)| n.as_str()).take(20).collect();
                Err(ProviderError::Rejected {
                    provider: self.upstream.name.clone(),
                    status: 400,
                    message: format!("unknown voice `{wanted}`; available voices: {}", names.join(", ")),
                })
            }
        }
    }

    /// Text to speech, streamed as it is generated.
    pub async fn speak(&self, model: &ModelSpec, request: &SpeechRequest) -> Result<AudioStream, ProviderError> {
        let deadline = self.upstream.deadline();
        let voice = self.voice_id(&request.voice, deadline).await?;
        let url = format!("{}/v1/text-to-speech/{voice}/stream", self.upstream.base_url);
        let body = WireSpeech {
            text: &request.text,
            model_id: &model.upstream,
            voice_settings: request.voice_settings.as_ref(),
        };
        let http = self
            .keyed(self.upstream.client.post(url))
            .query(&[("output_format", request.output_format.as_str())])
            .json(&body);
        let response = self.upstream.send(http, deadline, error_message).await?;
        self.upstream.audio(response, deadline).await
    }

    /// Audio to audio in another voice, streamed.
    pub async fn convert(&self, model: &ModelSpec, request: &ConvertRequest) -> Result<AudioStream, ProviderError> {
        let deadline = self.upstream.deadline();
        let voice = self.voice_id(&request.voice, deadline).await?;
        let url = format!("{}/v1/speech-to-speech/{voice}/stream", self.upstream.base_url);
        let audio = self.upstream.file_part(&request.audio, &request.filename, &request.content_type)?;
        let mut form = reqwest::multipart::Form::new().part("audio", audio).text("model_id", model.upstream.clone());
        if let Some(settings) = &request.voice_settings {
            form = form.text("voice_settings", settings.to_string());
        }
        let http = self
            .keyed(self.upstream.client.post(url))
            .query(&[("output_format", request.output_format.as_str())])
            .multipart(form);
        let response = self.upstream.send(http, deadline, error_message).await?;
        self.upstream.audio(response, deadline).await
    }

    /// Audio to text.
    pub async fn transcribe(
        &self,
        model: &ModelSpec,
        request: &TranscribeRequest,
    ) -> Result<Transcript, ProviderError> {
        let deadline = self.upstream.deadline();
        let url = format!("{}/v1/speech-to-text", self.upstream.base_url);
        let file = self.upstream.file_part(&request.audio, &request.filename, &request.content_type)?;
        let mut form = reqwest::multipart::Form::new().text("model_id", model.upstream.clone()).part("file", file);
        if let Some(language) = &request.language {
            form = form.text("language_code", language.clone());
        }
        let http = self.keyed(self.upstream.client.post(url)).multipart(form);
        let response = self.upstream.send(http, deadline, error_message).await?;
        let wire: WireTranscript = serde_json::from_slice(&self.upstream.body(response, deadline).await?)
            .map_err(|e| self.upstream.protocol(format!("bad transcript: {e}")))?;
        Ok(Transcript {
            text: wire.text,
            language: wire.language_code,
            language_probability: wire.language_probability,
            words: wire
                .words
                .into_iter()
                .filter(|w| w.kind.as_deref().is_none_or(|k| k == "word"))
                .map(|w| Word { text: w.text, start: w.start.unwrap_or(0.0), end: w.end.unwrap_or(0.0) })
                .collect(),
        })
    }
}

/// ElevenLabs' errors: `{"detail": {"status", "message"}}`, FastAPI's `{"detail": [{"loc", "msg"}]}`, or a string.
fn error_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    match &value["detail"] {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Object(detail) => detail.get("message").and_then(|m| m.as_str()).map(str::to_owned),
        serde_json::Value::Array(items) => Some(
            items
                .iter()
                .map(|i| format!("{}: {}", i["loc"], i["msg"].as_str().unwrap_or("invalid")))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        _ => None,
    }
}

#[derive(Serialize)]
struct WireSpeech<'a> {
    text: &'a str,
    model_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    voice_settings: Option<&'a serde_json::Value>,
}

#[derive(Deserialize)]
struct WireVoices {
    voices: Vec<WireVoice>,
}

#[derive(Deserialize)]
struct WireVoice {
    voice_id: String,
    name: String,
}

#[derive(Deserialize)]
struct WireTranscript {
    text: String,
    #[serde(default)]
    language_code: Option<String>,
    #[serde(default)]
    language_probability: Option<f64>,
    #[serde(default)]
    words: Vec<WireWord>,
}

#[derive(Deserialize)]
struct WireWord {
    text: String,
    #[serde(default)]
    start: Option<f64>,
    #[serde(default)]
    end: Option<f64>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voice_ids_are_told_from_names() {
        assert!(looks_like_id("21m00Tcm4TlvDq8ikWAM"));
        assert!(!looks_like_id("Rachel"));
        assert!(!looks_like_id("21m00Tcm4TlvDq8ikWA!"));
    }

    #[test]
    fn reads_every_error_shape() {
        assert_eq!(
            error_message(br#"{"detail":{"status":"voice_not_found","message":"no such voice"}}"#).as_deref(),
            Some("no such voice")
        );
        assert_eq!(error_message(br#"{"detail":"Not Found"}"#).as_deref(), Some("Not Found"));
        assert!(error_message(br#"{"detail":[{"loc":["query","output_format"],"msg":"bad"}]}"#)
            .is_some_and(|m| m.contains("output_format") && m.contains("bad")));
    }
}

#[cfg(test)]
#[path = "elevenlabs_props.rs"]
mod props;
