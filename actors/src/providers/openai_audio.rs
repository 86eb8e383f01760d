//! OpenAI's audio API: text-to-speech (`POST /audio/speech`, streamed) and speech-to-text
//! (`POST /audio/transcriptions`, `verbose_json` with word timestamps). The requests come fitted to the model
//! (`speech::fit`): one of its voices, one of its formats (`mp3_24000_160`, `wav_24000`, `pcm_24000`), and `speed`
//! as the only voice setting.

use super::openai::{error_message, OpenAi};
use crate::catalogue::ModelSpec;
use crate::error::ProviderError;
use crate::speech::{AudioStream, SpeechRequest, TranscribeRequest, Transcript, Word};
use serde::{Deserialize, Serialize};

/// OpenAI's `response_format` for one of our output formats.
fn response_format(format: &str) -> &'static str {
    match format.split('_').next() {
        Some("wav") => "wav",
        Some("pcm") => "pcm",
        _ => "mp3",
    }
}

/// The ISO 639-1 code for a language OpenAI names in full (`english`); other names pass through.
fn language_code(name: &str) -> String {
    const NAMES: [(&str, &str); 12] = [
        ("english", "en"),
        ("german", "de"),
        ("french", "fr"),
        ("spanish", "es"),
        ("italian", "it"),
        ("portuguese", "pt"),
        ("dutch", "nl"),
        ("polish", "pl"),
        ("japanese", "ja"),
        ("chinese", "zh"),
        ("korean", "ko"),
        ("russian", "ru"),
    ];
    NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map_or_else(|| name.to_owned(), |(_, c)| (*c).to_owned())
}

impl OpenAi {
    fn keyed(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.upstream.key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// Text to speech, streamed as it is generated.
    pub async fn speak(&self, model: &ModelSpec, request: &SpeechRequest) -> Result<AudioStream, ProviderError> {
        let deadline = self.upstream.deadline();
        let body = WireSpeech {
            model: &model.upstream,
            input: &request.text,
            voice: &request.voice,
            response_format: response_format(&request.output_format),
            speed: request.voice_settings.as_ref().and_then(|s| s.get("speed")).and_then(serde_json::Value::as_f64),
        };
        let http = self.keyed(self.upstream.post("/audio/speech")).json(&body);
        let response = self.upstream.send(http, deadline, error_message).await?;
        self.upstream.audio(response, deadline).await
    }

    /// Audio to text, with word timestamps.
    pub async fn transcribe(
        &self,
        model: &ModelSpec,
        request: &TranscribeRequest,
    ) -> Result<Transcript, ProviderError> {
        let deadline = self.upstream.deadline();
        let file = self.upstream.file_part(&request.audio, &request.filename, &request.content_type)?;
        let mut form = reqwest::multipart::Form::new()
            .part("file", file)
            .text("model", model.upstream.clone())
            .text("response_format", "verbose_json")
            .text("timestamp_granularities[]", "word");
        if let Some(language) = &request.language {
            form = form.text("language", language.clone());
        }
        let http = self.keyed(self.upstream.post("/audio/transcriptions")).multipart(form);
        let response = self.upstream.send(http, deadline, error_message).await?;
        let wire: WireTranscript = serde_json::from_slice(&self.upstream.body(response, deadline).await?)
            .map_err(|e| self.upstream.protocol(format!("bad transcript: {e}")))?;
        Ok(Transcript {
            text: wire.text,
            language: wire.language.as_deref().map(language_code),
            language_probability: None,
            words: wire.words.into_iter().map(|w| Word { text: w.word, start: w.start, end: w.end }).collect(),
        })
    }
}

#[derive(Serialize)]
struct WireSpeech<'a> {
    model: &'a str,
    input: &'a str,
    voice: &'a str,
    response_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    speed: Option<f64>,
}

#[derive(Deserialize)]
struct WireTranscript {
    text: String,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    words: Vec<WireWord>,
}

#[derive(Deserialize)]
struct WireWord {
    word: String,
    start: f64,
    end: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_languages_map_to_openais() {
        assert_eq!(response_format("mp3_24000_160"), "mp3");
        assert_eq!(response_format("wav_24000"), "wav");
        assert_eq!(response_format("pcm_24000"), "pcm");
        assert_eq!(language_code("English"), "en");
        assert_eq!(language_code("klingon"), "klingon");
    }
}
