//! Each modality's contract for `POST /api/runs`: per mode, the `input` fields and `params` a run takes and what its
//! `output` holds. The marketplace shows it, and runs refuse any input field outside it: one table, two readers.

use super::errors::ApiError;
use serde::Serialize;
use serde_json::{Map, Value};
use switchyard_actors::catalogue::Modality;

/// One field of a run's `input` or `params`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Field {
    #[serde(skip)]
    pub name: &'static str,
    /// JSON type: `string`, `integer`, `number`, `boolean`, `object`, `array`, or `media_ref` (a string naming an
    /// upload of the caller's workspace).
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub required: bool,
    pub description: &'static str,
}

/// What one mode takes and answers.
#[derive(Clone, Copy, Debug)]
pub struct Mode {
    pub mode: &'static str,
    pub input: &'static [Field],
    pub params: &'static [Field],
    pub output: &'static str,
}

const fn field(name: &'static str, kind: &'static str, required: bool, description: &'static str) -> Field {
    Field { name, kind, required, description }
}

const CHAT: &[Mode] = &[Mode {
    mode: "execute",
    input: &[
        field("messages", "array", false, "Chat messages ({role, content}); give `messages` or `prompt`"),
        field("prompt", "string", false, "One user message; give `messages` or `prompt`"),
    ],
    params: &[
        field("max_tokens", "integer", false, "At most the model's max_output_tokens; the default is the model's"),
        field("temperature", "number", false, "0 to 2"),
        field("top_p", "number", false, "0 to 1"),
        field("stop", "array", false, "Up to 4 stop strings (or one string)"),
    ],
    output: "{text, finish_reason}",
}];

const IMAGE: &[Mode] = &[Mode {
    mode: "execute",
    input: &[
        field("prompt", "string", true, "What to draw, 1 to 4000 characters"),
        field("image", "media_ref", false, "An image to start from"),
    ],
    params: &[
        field("width", "integer", false, "Pixels; fitted to the model's sizes, with a warning"),
        field("height", "integer", false, "Pixels; fitted to the model's sizes, with a warning"),
        field("num_inference_steps", "integer", false, "1 to 150; capped to what the model takes, with a warning"),
        field("guidance_scale", "number", false, "0 to 30; fitted to what the model takes, with a warning"),
        field("seed", "integer", false, "For a repeatable image"),
        field("output_format", "string", false, "`png` (default) or `jpeg`"),
    ],
    output: "{images: [{url, media_ref, content_type}], warnings?}",
}];

const VOICE_PARAMS: &[Field] = &[
    field("voice", "string", false, "A voice name (any case) or id; the model's default otherwise"),
    field("voice_settings", "object", false, "stability, similarity_boost, style (0 to 1), use_speaker_boost, speed"),
    field("output_format", "string", false, "e.g. mp3_44100_128 (default), wav_44100, pcm_24000, ulaw_8000"),
];

const SPEECH: &[Mode] = &[Mode {
    mode: "execute",
    input: &[field("text", "string", true, "The text to speak, up to the model's max_characters")],
    params: VOICE_PARAMS,
    output: "{audio: {url, media_ref, content_type, format, bytes, duration_seconds}, warnings?}",
}];

const SPEECH_TO_SPEECH: &[Mode] = &[Mode {
    mode: "execute",
    input: &[field("audio", "media_ref", true, "The speech to say again in another voice")],
    params: VOICE_PARAMS,
    output: "{audio: {url, media_ref, content_type, format, bytes, duration_seconds}}",
}];

const TRANSCRIPTION: &[Mode] = &[Mode {
    mode: "execute",
    input: &[field("audio", "media_ref", true, "The speech to transcribe")],
    params: &[field("language", "string", false, "ISO 639-1 or 639-3 code; detected when absent")],
    output: "{text, language, language_probability, duration_seconds, words}",
}];

const EMBEDDING: &[Mode] = &[
    Mode {
        mode: "execute",
        input: &[
            field("texts", "array", false, "Texts to embed; give `texts` or `text`"),
            field("text", "string", false, "One text to embed; give `texts` or `text`"),
        ],
        params: &[],
        output: "{embeddings, dimensions}",
    },
    Mode {
        mode: "index",
        input: &[field(
            "documents",
            "array",
            true,
            "Documents {id?, text | media_ref (a text file), metadata?}, chunked and embedded into the scope",
        )],
        params: &[],
        output: "{indexed: [ids], documents, chunks}",
    },
    Mode {
        mode: "search",
        input: &[
            field("query", "string", false, "The text to search for; give `query` or `media_ref`"),
            field("media_ref", "media_ref", false, "A text file to search for"),
            field("top_k", "integer", false, "Matches to answer, 1 to vectors.max_top_k (default 5)"),
            field("filter", "object", false, "Metadata values the matches must have"),
        ],
        params: &[],
        output: "{matches: [{id, score, text, chunk, metadata}]}",
    },
];

/// The modes of a modality, each with its contract.
pub fn modes(modality: Modality) -> &'static [Mode] {
    match modality {
        Modality::Chat => CHAT,
        Modality::Image => IMAGE,
        Modality::Speech => SPEECH,
        Modality::SpeechToSpeech => SPEECH_TO_SPEECH,
        Modality::Transcription => TRANSCRIPTION,
        Modality::Embedding => EMBEDDING,
        // A conversation over a WebSocket (`/v1/realtime`), not a run.
        Modality::Realtime => &[],
    }
}

/// The names of a modality's modes.
pub fn names(modality: Modality) -> Vec<&'static str> {
    modes(modality).iter().map(|m| m.mode).collect()
}

/// One mode's contract, if the modality has that mode.
pub fn mode(modality: Modality, mode: &str) -> Option<&'static Mode> {
    modes(modality).iter().find(|m| m.mode == mode)
}

fn fields(fields: &[Field]) -> Value {
    let map: Map<String, Value> =
        fields.iter().map(|f| (f.name.to_owned(), serde_json::to_value(f).unwrap_or(Value::Null))).collect();
    Value::Object(map)
}

/// The contract as the marketplace shows it: `{mode: {input: {field: {type, required, description}}, params, output}}`.
pub fn describe(modality: Modality) -> Value {
    let map: Map<String, Value> = modes(modality)
        .iter()
        .map(|m| {
            let described =
                serde_json::json!({"input": fields(m.input), "params": fields(m.params), "output": m.output});
            (m.mode.to_owned(), described)
        })
        .collect();
    Value::Object(map)
}

fn field_names(fields: &[Field]) -> String {
    if fields.is_empty() {
        return "none".to_owned();
    }
    fields.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
}

impl Mode {
    /// An error of the model's own checks, its `param` named where the run's body has it (`input.…`, `params.…`).
    pub fn locate(&self, error: ApiError) -> ApiError {
        let Some(param) = error.detail.param.clone() else { return error };
        let root = param.split(['.', '[']).next().unwrap_or_default();
        if self.input.iter().any(|f| f.name == root) {
            return error.with_param(format!("input.{param}"));
        }
        if self.params.iter().any(|f| f.name == root) {
            return error.with_param(format!("params.{param}"));
        }
        error
    }

    /// Refuses an input field or a param outside the contract, and a required input missing.
    pub fn check(&self, model: &str, input: &Map<String, Value>, params: &Map<String, Value>) -> Result<(), ApiError> {
        if let Some(key) = input.keys().find(|k| !self.input.iter().any(|f| f.name == k.as_str())) {
            return Err(ApiError::unknown_field(&format!("input.{key}")).with_message(format!(
                "Unknown field: input.{key} (mode {} of {model} takes {})",
                self.mode,
                field_names(self.input)
            )));
        }
        if let Some(key) = params.keys().find(|k| !self.params.iter().any(|f| f.name == k.as_str())) {
            return Err(ApiError::unknown_field(&format!("params.{key}")).with_message(format!(
                "Unknown parameter `{key}`: mode {} of {model} takes {}",
                self.mode,
                field_names(self.params)
            )));
        }
        if let Some(missing) = self.input.iter().find(|f| f.required && !input.contains_key(f.name)) {
            return Err(ApiError::missing_field(&format!("input.{}", missing.name)));
        }
        Ok(())
    }
}
