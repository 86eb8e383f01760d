//! The model catalogue (`config/models.toml`): providers, models, limits, prices and fallback chains.

use crate::credits::Credits;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The wire protocol a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI's Chat Completions API, also spoken by Mistral, vLLM, llama.cpp and Ollama.
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
    /// The built-in simulator: deterministic text, no account needed.
    Simulator,
    /// Black Forest Labs' asynchronous image API (Flux): submit, poll, fetch.
    Bfl,
    /// ElevenLabs: text-to-speech, speech-to-speech and speech-to-text.
    Elevenlabs,
    /// Models run inside the gateway (the embedding model): no account, no network.
    Local,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Simulator => "simulator",
            ProviderKind::Bfl => "bfl",
            ProviderKind::Elevenlabs => "elevenlabs",
            ProviderKind::Local => "local",
        }
    }

    fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::Openai => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Simulator => None,
            ProviderKind::Bfl => Some("https://api.bfl.ai"),
            ProviderKind::Elevenlabs => Some("https://api.elevenlabs.io"),
            ProviderKind::Local => None,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    pub kind: ProviderKind,
    /// The base URL when its variable is unset (defaults per kind).
    #[serde(default)]
    pub base_url: Option<String>,
    /// The environment variable that overrides the base URL, e.g. `OPENAI_BASE_URL`.
    #[serde(default)]
    pub base_url_env: Option<String>,
    /// The environment variable holding the provider key, e.g. `OPENAI_API_KEY`.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Whether the provider is unusable without a key (local servers often need none).
    #[serde(default = "default_true")]
    pub key_required: bool,
    #[serde(default)]
    pub description: String,
}

impl ProviderSpec {
    /// The base URL in force, given a way to read the environment.
    pub fn resolve_base_url(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
        self.base_url_env
            .as_deref()
            .and_then(env)
            .filter(|v| !v.trim().is_empty())
            .or_else(|| self.base_url.clone())
            .or_else(|| self.kind.default_base_url().map(str::to_owned))
            .map(|url| url.trim_end_matches('/').to_owned())
    }
}

fn default_true() -> bool {
    true
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Modality {
    #[default]
    Chat,
    Image,
    /// Text in, audio out (text-to-speech).
    Speech,
    /// Audio in, the same words in another voice out.
    SpeechToSpeech,
    /// Audio in, text out (speech-to-text).
    Transcription,
    /// Text in, a vector out; also indexes and searches scoped vector data.
    Embedding,
    /// A voice conversation over a WebSocket (`/v1/realtime`), speech and text both ways.
    Realtime,
}

impl Modality {
    pub fn as_str(self) -> &'static str {
        match self {
            Modality::Chat => "chat",
            Modality::Image => "image",
            Modality::Speech => "speech",
            Modality::SpeechToSpeech => "speech_to_speech",
            Modality::Transcription => "transcription",
            Modality::Embedding => "embedding",
            Modality::Realtime => "realtime",
        }
    }

    /// Whether the model takes an audio file (`audio`).
    pub fn takes_audio(self) -> bool {
        matches!(self, Modality::SpeechToSpeech | Modality::Transcription)
    }
}

/// What a speech model accepts: text length for text-to-speech, audio length for audio in, and its defaults.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioLimits {
    /// Text-to-speech: the longest `text`, in characters.
    #[serde(default)]
    pub max_characters: u32,
    /// Audio in: the longest input, in seconds.
    #[serde(default)]
    pub max_seconds: u32,
    /// The voice (name or id) used when a request names none.
    #[serde(default)]
    pub default_voice: Option<String>,
    /// The `output_format` used when a request names none, e.g. `mp3_44100_128`.
    #[serde(default)]
    pub default_output_format: Option<String>,
    /// The voices the model has (any case); empty: any name or id its provider resolves. Another voice asked is
    /// answered in `default_voice`, with a warning.
    #[serde(default)]
    pub voices: Vec<String>,
    /// The output formats the model makes; empty: ElevenLabs' formats. Another format asked is answered in the
    /// nearest of the same codec, with a warning (none of the codec: the model does not serve the request).
    #[serde(default)]
    pub output_formats: Vec<String>,
    /// The voice settings the model takes; absent: all. Others are not sent, with a warning.
    #[serde(default)]
    pub voice_settings: Option<Vec<String>>,
}

/// What an embedding model produces and takes.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingLimits {
    /// The length of its vectors.
    pub dimensions: u32,
    /// The most tokens one input is read to; longer documents are chunked before embedding.
    pub max_tokens: u32,
}

/// What an image model accepts: sizes (a range and a step), inference steps and guidance.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageLimits {
    pub min_size: u32,
    pub max_size: u32,
    pub size_multiple: u32,
    pub default_width: u32,
    pub default_height: u32,
    /// `None`: the model takes no step count (a request's is not sent, with a warning).
    #[serde(default)]
    pub max_steps: Option<u32>,
    /// The upstream model sent requests that set steps or guidance, when the model's own takes neither (FLUX1.1
    /// [pro] takes neither; FLUX.1 [pro] takes both). Steps and guidance limits are then that upstream's.
    #[serde(default)]
    pub steps_upstream: Option<String>,
    #[serde(default)]
    pub max_guidance: Option<f64>,
    #[serde(default)]
    pub min_guidance: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    /// Credits per 1,000 prompt tokens.
    #[serde(default)]
    pub prompt_per_1k: Credits,
    /// Credits per 1,000 completion tokens.
    #[serde(default)]
    pub completion_per_1k: Credits,
    /// Realtime: credits per 1,000 audio tokens in and out, and per 1,000 cached input tokens.
    #[serde(default)]
    pub audio_prompt_per_1k: Credits,
    #[serde(default)]
    pub audio_completion_per_1k: Credits,
    #[serde(default)]
    pub cached_prompt_per_1k: Credits,
    /// Credits per generated image.
    #[serde(default)]
    pub per_image: Credits,
    /// Credits per 1,000 characters of text spoken.
    #[serde(default)]
    pub per_1k_characters: Credits,
    /// Credits per second of audio taken in.
    #[serde(default)]
    pub per_audio_second: Credits,
    /// Credits per text embedded (each input, each indexed chunk, each search query).
    #[serde(default)]
    pub per_input: Credits,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The model's name in the catalogue (the table key).
    #[serde(skip)]
    pub name: String,
    pub provider: String,
    /// The model id sent upstream.
    pub upstream: String,
    #[serde(default)]
    pub modality: Modality,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub context_window: u32,
    #[serde(default)]
    pub max_output_tokens: u32,
    /// Used when a request sets no `max_tokens`.
    #[serde(default)]
    pub default_max_tokens: u32,
    /// For image models: what a request may ask for.
    #[serde(default)]
    pub image: Option<ImageLimits>,
    /// For speech models: text and audio lengths, default voice and output format.
    #[serde(default)]
    pub audio: Option<AudioLimits>,
    /// For embedding models: dimensions and input length.
    #[serde(default)]
    pub embedding: Option<EmbeddingLimits>,
    #[serde(default)]
    pub pricing: Pricing,
    /// Models tried in order when this one fails before the first byte.
    #[serde(default)]
    pub fallback: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    #[serde(default)]
    providers: BTreeMap<String, ProviderSpec>,
    #[serde(default)]
    models: BTreeMap<String, ModelSpec>,
}

/// The catalogue, validated: every model names a known provider and its fallbacks exist.
#[derive(Clone, Debug)]
pub struct Catalogue {
    pub providers: BTreeMap<String, ProviderSpec>,
    pub models: BTreeMap<String, ModelSpec>,
}

impl Catalogue {
    /// The catalogue shipped in the binary.
    pub const BUILTIN: &'static str = include_str!("../../config/models.toml");

    pub fn builtin() -> Result<Self, String> {
        Self::parse(Self::BUILTIN)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: CatalogueFile = toml::from_str(text).map_err(|e| format!("model catalogue: {e}"))?;
        let mut models = file.models;
        for (name, model) in models.iter_mut() {
            model.name = name.clone();
        }
        let catalogue = Catalogue { providers: file.providers, models };
        catalogue.validate()?;
        Ok(catalogue)
    }

    fn validate(&self) -> Result<(), String> {
        for (name, model) in &self.models {
            if !self.providers.contains_key(&model.provider) {
                return Err(format!("model catalogue: model `{name}` names unknown provider `{}`", model.provider));
            }
            if let Some(fallback) =
                model.fallback.iter().filter_map(|f| self.models.get(f)).find(|f| f.modality != model.modality)
            {
                return Err(format!(
                    "model catalogue: model `{name}` falls back to `{}`, which is not a {} model",
                    fallback.name,
                    model.modality.as_str()
                ));
            }
            if model.modality == Modality::Image {
                let Some(limits) = &model.image else {
                    return Err(format!("model catalogue: image model `{name}` needs an `image` table of limits"));
                };
                let sizes_ok = limits.size_multiple > 0
                    && limits.min_size <= limits.max_size
                    && limits.min_size.is_multiple_of(limits.size_multiple)
                    && limits.max_size.is_multiple_of(limits.size_multiple)
                    && (limits.min_size..=limits.max_size).contains(&limits.default_width)
                    && (limits.min_size..=limits.max_size).contains(&limits.default_height);
                if !sizes_ok {
                    return Err(format!("model catalogue: image model `{name}` has inconsistent size limits"));
                }
                continue;
            }
            if model.modality == Modality::Embedding {
                match model.embedding {
                    Some(limits) if limits.dimensions > 0 && limits.max_tokens > 0 => {}
                    _ => {
                        return Err(format!(
                            "model catalogue: embedding model `{name}` needs `embedding = {{ dimensions, max_tokens }}`"
                        ))
                    }
                }
                if !model.fallback.is_empty() {
                    return Err(format!("model catalogue: embedding model `{name}` cannot fall back (vectors differ)"));
                }
                continue;
            }
            // A realtime model priced per second of audio (a provider's own streaming transcription) has no tokens.
            if model.modality == Modality::Realtime && model.pricing.per_audio_second.milli() > 0 {
                continue;
            }
            if matches!(model.modality, Modality::Speech | Modality::SpeechToSpeech | Modality::Transcription) {
                let Some(limits) = &model.audio else {
                    return Err(format!("model catalogue: speech model `{name}` needs an `audio` table of limits"));
                };
                if model.modality == Modality::Speech && limits.max_characters == 0 {
                    return Err(format!("model catalogue: text-to-speech model `{name}` needs `max_characters`"));
                }
                if model.modality.takes_audio() && limits.max_seconds == 0 {
                    return Err(format!("model catalogue: model `{name}` takes audio and needs `max_seconds`"));
                }
                continue;
            }
            if model.default_max_tokens == 0 || model.default_max_tokens > model.max_output_tokens {
                return Err(format!(
                    "model catalogue: model `{name}`: default_max_tokens must be between 1 and max_output_tokens"
                ));
            }
            if model.max_output_tokens > model.context_window {
                return Err(format!("model catalogue: model `{name}`: max_output_tokens exceeds context_window"));
            }
            for fallback in &model.fallback {
                if fallback == name {
                    return Err(format!("model catalogue: model `{name}` lists itself as its fallback"));
                }
                if !self.models.contains_key(fallback) {
                    return Err(format!("model catalogue: model `{name}` falls back to unknown model `{fallback}`"));
                }
            }
        }
        Ok(())
    }

    pub fn model(&self, name: &str) -> Option<&ModelSpec> {
        self.models.get(name)
    }

    pub fn provider_of(&self, model: &ModelSpec) -> Option<&ProviderSpec> {
        self.providers.get(&model.provider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalogue_has_every_chat_model_of_the_tasks_api() {
        let catalogue = Catalogue::builtin().unwrap();
        for name in [
            "gpt-4",
            "gpt-4-turbo",
            "gpt-3.5-turbo",
            "claude-3-opus",
            "claude-3-sonnet",
            "claude-3-haiku",
            "mixtral-8x7b",
            "mixtral-8x22b",
            "sim-chat",
        ] {
            let model = catalogue.model(name).unwrap_or_else(|| panic!("{name} missing"));
            assert!(!model.fallback.is_empty() || name == "sim-chat", "{name} has no fallback");
        }
    }

    #[test]
    fn rejects_unknown_provider_and_fallback() {
        let text = r#"
            [providers.p]
            kind = "simulator"
            [models.a]
            provider = "q"
            upstream = "a"
            context_window = 10
            max_output_tokens = 5
            default_max_tokens = 5
        "#;
        assert!(Catalogue::parse(text).unwrap_err().contains("unknown provider `q`"));
        let text = text.replace("\"q\"", "\"p\"") + "fallback = [\"zzz\"]\n";
        assert!(Catalogue::parse(&text).unwrap_err().contains("unknown model `zzz`"));
    }

    #[test]
    fn rejects_unknown_keys_by_name() {
        let text = "[providers.p]\nkind = \"simulator\"\ncolour = \"red\"\n";
        assert!(Catalogue::parse(text).unwrap_err().contains("colour"));
    }

    #[test]
    fn base_url_comes_from_the_variable_then_the_file_then_the_kind() {
        let spec = ProviderSpec {
            kind: ProviderKind::Openai,
            base_url: None,
            base_url_env: Some("X_BASE".into()),
            api_key_env: None,
            key_required: true,
            description: String::new(),
        };
        assert_eq!(spec.resolve_base_url(&|_| None).as_deref(), Some("https://api.openai.com/v1"));
        let set = |_: &str| Some("http://127.0.0.1:9/v1/".to_owned());
        assert_eq!(spec.resolve_base_url(&set).as_deref(), Some("http://127.0.0.1:9/v1"));
    }
}

impl Pricing {
    /// What `prompt` and `completion` tokens cost, rounded up to the millicredit.
    pub fn cost(&self, prompt: u64, completion: u64) -> Credits {
        let milli = u128::from(prompt) * self.prompt_per_1k.milli().max(0) as u128
            + u128::from(completion) * self.completion_per_1k.milli().max(0) as u128;
        Credits(i64::try_from(milli.div_ceil(1000)).unwrap_or(i64::MAX))
    }

    /// What speaking `characters` costs, rounded up to the millicredit.
    pub fn characters_cost(&self, characters: u64) -> Credits {
        let milli = u128::from(characters) * self.per_1k_characters.milli().max(0) as u128;
        Credits(i64::try_from(milli.div_ceil(1000)).unwrap_or(i64::MAX))
    }

    /// What embedding `inputs` texts costs.
    pub fn inputs_cost(&self, inputs: u64) -> Credits {
        let milli = u128::from(inputs) * self.per_input.milli().max(0) as u128;
        Credits(i64::try_from(milli).unwrap_or(i64::MAX))
    }

    /// What `millis` of audio in cost, rounded up to the millicredit.
    pub fn audio_cost(&self, millis: u64) -> Credits {
        let milli = u128::from(millis) * self.per_audio_second.milli().max(0) as u128;
        Credits(i64::try_from(milli.div_ceil(1000)).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod pricing_tests {
    use super::*;

    #[test]
    fn cost_is_integer_and_rounds_up() {
        let p = Pricing { prompt_per_1k: Credits(30_000), completion_per_1k: Credits(60_000), ..Default::default() };
        assert_eq!(p.cost(1000, 1000), Credits(90_000));
        assert_eq!(p.cost(1, 0), Credits(30));
        let cheap = Pricing { prompt_per_1k: Credits(500), completion_per_1k: Credits(1500), ..Default::default() };
        assert_eq!(cheap.cost(1, 1), Credits(2));
        assert_eq!(cheap.cost(0, 0), Credits(0));
    }

    #[test]
    fn speech_is_priced_per_character_and_per_audio_second() {
        let p = Pricing { per_1k_characters: Credits(180_000), per_audio_second: Credits(111), ..Default::default() };
        assert_eq!(p.characters_cost(1000), Credits(180_000));
        assert_eq!(p.characters_cost(1), Credits(180));
        assert_eq!(p.audio_cost(1000), Credits(111));
        assert_eq!(p.audio_cost(1), Credits(1), "a started millisecond is charged, rounded up");
        assert_eq!(p.audio_cost(0), Credits(0));
    }
}
