//! A composed session's state as the protocol describes it: its configuration (`session.update` merges into it,
//! `session.created/updated` report it) and its conversation (the items a response is made from).

use super::audio::Format;
use serde_json::{json, Value};
use switchyard_actors::{Message, Role};

/// OpenAI's realtime voices: a client that names one gets the text-to-speech model's default voice.
const OPENAI_VOICES: &[&str] =
    &["alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse", "marin", "cedar"];

/// Server voice activity detection, as `audio.input.turn_detection` sets it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TurnDetection {
    /// 0 to 1: how loud a frame must be to count as speech.
    pub threshold: f64,
    pub prefix_padding_ms: u64,
    pub silence_duration_ms: u64,
    /// Start a response when the speaker stops.
    pub create_response: bool,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub id: String,
    pub model: String,
    pub instructions: String,
    /// `["audio"]` (spoken, with its transcript) or `["text"]`.
    pub audio_out: bool,
    pub input_format: Format,
    pub output_format: Format,
    pub voice: String,
    /// The language of the input audio, if the client said.
    pub language: Option<String>,
    pub turn_detection: Option<TurnDetection>,
    /// The output allowance of each response (`None`: the model's default).
    pub max_output_tokens: Option<u32>,
    pub transcription_model: String,
}

impl Config {
    pub fn new(model: &str, voice: &str, transcription_model: &str) -> Config {
        Config {
            id: crate::auth::new_id("sess"),
            model: model.to_owned(),
            instructions: String::new(),
            audio_out: true,
            input_format: Format::Pcm,
            output_format: Format::Pcm,
            voice: voice.to_owned(),
            language: None,
            turn_detection: Some(TurnDetection {
                threshold: 0.5,
                prefix_padding_ms: 300,
                silence_duration_ms: 500,
                create_response: true,
            }),
            max_output_tokens: None,
            transcription_model: transcription_model.to_owned(),
        }
    }

    /// Merges a `session.update`'s `session` into the configuration; a value the session cannot take is refused
    /// with its path and the reason, and nothing is changed.
    pub fn update(&mut self, session: &Value, default_voice: &str) -> Result<(), (String, String)> {
        let mut next = self.clone();
        let bad = |path: &str, why: String| Err((path.to_owned(), why));
        if let Some(instructions) = session.get("instructions") {
            match instructions.as_str() {
                Some(text) => next.instructions = text.to_owned(),
                None => return bad("session.instructions", "must be a string".into()),
            }
        }
        if let Some(modalities) = session.get("output_modalities").or_else(|| session.get("modalities")) {
            let list: Vec<&str> =
                modalities.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            next.audio_out = match list.as_slice() {
                ["text"] => false,
                l if l.contains(&"audio") => true,
                _ => return bad("session.output_modalities", "must be [\"audio\"] or [\"text\"]".into()),
            };
        }
        if let Some(max) = session.get("max_output_tokens").or_else(|| session.get("max_response_output_tokens")) {
            next.max_output_tokens = match max {
                Value::String(s) if s == "inf" => None,
                Value::Number(n) => {
                    match n.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|n| (1..=4096).contains(n)) {
                        Some(n) => Some(n),
                        None => return bad("session.max_output_tokens", "must be 1 to 4096, or \"inf\"".into()),
                    }
                }
                _ => return bad("session.max_output_tokens", "must be 1 to 4096, or \"inf\"".into()),
            };
        }
        let input = session.pointer("/audio/input");
        let output = session.pointer("/audio/output");
        let format_in = input.and_then(|i| i.get("format")).or_else(|| session.get("input_audio_format"));
        if let Some(format) = format_in {
            next.input_format = Format::parse(format).map_err(|e| ("session.audio.input.format".to_owned(), e))?;
        }
        let format_out = output.and_then(|o| o.get("format")).or_else(|| session.get("output_audio_format"));
        if let Some(format) = format_out {
            next.output_format = Format::parse(format).map_err(|e| ("session.audio.output.format".to_owned(), e))?;
        }
        if let Some(voice) = output.and_then(|o| o.get("voice")).or_else(|| session.get("voice")) {
            match voice.as_str().map(str::trim).filter(|v| !v.is_empty() && v.len() <= 100) {
                Some(v) if OPENAI_VOICES.contains(&v.to_ascii_lowercase().as_str()) => {
                    next.voice = default_voice.to_owned()
                }
                Some(v) => next.voice = v.to_owned(),
                None => return bad("session.audio.output.voice", "must be a voice name or id".into()),
            }
        }
        let transcription =
            input.and_then(|i| i.get("transcription")).or_else(|| session.get("input_audio_transcription"));
        if let Some(language) = transcription.and_then(|t| t.get("language")).and_then(Value::as_str) {
            next.language = Some(language.to_owned());
        }
        let detection = input.and_then(|i| i.get("turn_detection")).or_else(|| session.get("turn_detection"));
        if let Some(detection) = detection {
            next.turn_detection = match detection {
                Value::Null => None,
                Value::Object(d) => match d.get("type").and_then(Value::as_str) {
                    Some("server_vad") | Some("semantic_vad") | None => {
                        let number = |key: &str, default: f64| d.get(key).and_then(Value::as_f64).unwrap_or(default);
                        let threshold = number("threshold", 0.5);
                        if !(0.0..=1.0).contains(&threshold) {
                            return bad("session.audio.input.turn_detection.threshold", "must be 0 to 1".into());
                        }
                        Some(TurnDetection {
                            threshold,
                            prefix_padding_ms: number("prefix_padding_ms", 300.0).clamp(0.0, 10_000.0) as u64,
                            silence_duration_ms: number("silence_duration_ms", 500.0).clamp(50.0, 10_000.0) as u64,
                            create_response: d.get("create_response").and_then(Value::as_bool).unwrap_or(true),
                        })
                    }
                    Some(other) => {
                        return bad("session.audio.input.turn_detection.type", format!("`{other}` is not server_vad"))
                    }
                },
                _ => return bad("session.audio.input.turn_detection", "must be an object or null".into()),
            };
        }
        *self = next;
        Ok(())
    }

    /// The `session` object of `session.created` and `session.updated`.
    pub fn to_json(&self) -> Value {
        let turn_detection = match self.turn_detection {
            None => Value::Null,
            Some(d) => json!({"type": "server_vad", "threshold": d.threshold, "prefix_padding_ms": d.prefix_padding_ms,
                              "silence_duration_ms": d.silence_duration_ms, "create_response": d.create_response,
                              "interrupt_response": false}),
        };
        json!({
            "type": "realtime",
            "object": "realtime.session",
            "id": self.id,
            "model": self.model,
            "output_modalities": [if self.audio_out { "audio" } else { "text" }],
            "instructions": self.instructions,
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": self.max_output_tokens.map_or(json!("inf"), |n| json!(n)),
            "audio": {
                "input": {
                    "format": self.input_format.to_json(),
                    "transcription": {"model": self.transcription_model, "language": self.language},
                    "noise_reduction": null,
                    "turn_detection": turn_detection,
                },
                "output": {"format": self.output_format.to_json(), "voice": self.voice, "speed": 1.0},
            },
        })
    }
}

/// One conversation item: a message and its text (for user audio, its transcript once it came).
#[derive(Clone, Debug)]
pub struct Item {
    pub id: String,
    pub role: Role,
    pub text: String,
    /// User audio: transcribed yet?
    pub audio: bool,
}

impl Item {
    /// The item as the protocol shows it.
    pub fn to_json(&self, status: &str) -> Value {
        let role = match self.role {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        let content = match (self.role, self.audio) {
            (Role::User, true) => json!([{"type": "input_audio", "transcript": self.text}]),
            (Role::Assistant, true) => json!([{"type": "output_audio", "transcript": self.text}]),
            (Role::Assistant, false) => json!([{"type": "output_text", "text": self.text}]),
            _ => json!([{"type": "input_text", "text": self.text}]),
        };
        json!({"id": self.id, "object": "realtime.item", "type": "message", "status": status, "role": role,
               "content": content})
    }
}

/// The chat messages of a response: the instructions, then every item with text.
pub fn messages(instructions: &str, items: &[Item]) -> Vec<Message> {
    let system = (!instructions.trim().is_empty()).then(|| Message {
        role: Role::System,
        content: instructions.to_owned(),
        images: Vec::new(),
    });
    system
        .into_iter()
        .chain(items.iter().filter(|i| !i.text.trim().is_empty()).map(|i| Message {
            role: i.role,
            content: i.text.clone(),
            images: Vec::new(),
        }))
        .collect()
}

/// A `conversation.item.create`'s item: a message with text parts (`input_text`, `text`, `output_text`).
pub fn item_from(value: &Value) -> Result<Item, String> {
    if value.get("type").and_then(Value::as_str).unwrap_or("message") != "message" {
        return Err("only `message` items are taken (no function calls: the session has no tools)".into());
    }
    let role = match value.get("role").and_then(Value::as_str) {
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("system") | Some("developer") => Role::System,
        _ => return Err("`item.role` must be user, assistant or system".into()),
    };
    let parts = value.get("content").and_then(Value::as_array).ok_or("`item.content` must be an array of parts")?;
    let mut text = String::new();
    for part in parts {
        match part.get("type").and_then(Value::as_str) {
            Some("input_text" | "text" | "output_text") => {
                text.push_str(part.get("text").and_then(Value::as_str).unwrap_or_default());
            }
            Some("input_audio") => {
                return Err("audio parts are sent with input_audio_buffer.append and commit, not in an item".into())
            }
            other => return Err(format!("content part type `{}` is not taken", other.unwrap_or("(none)"))),
        }
    }
    if text.trim().is_empty() {
        return Err("the item has no text".into());
    }
    let id = value.get("id").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| crate::auth::new_id("item"));
    Ok(Item { id, role, text, audio: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_merges_or_is_refused_whole() {
        let mut config = Config::new("claude-3-haiku", "Rachel", "eleven-labs-stt");
        let update = json!({"type": "realtime", "instructions": "Be brief.", "output_modalities": ["audio"],
            "audio": {"input": {"turn_detection": null}, "output": {"voice": "alloy", "format": {"type": "audio/pcmu"}}}});
        config.update(&update, "Rachel").unwrap();
        assert_eq!(config.instructions, "Be brief.");
        assert_eq!(config.voice, "Rachel");
        assert_eq!(config.output_format, Format::Pcmu);
        assert!(config.turn_detection.is_none());
        let bad = json!({"instructions": "changed", "audio": {"input": {"format": {"type": "audio/opus"}}}});
        let (path, _) = config.update(&bad, "Rachel").unwrap_err();
        assert_eq!(path, "session.audio.input.format");
        assert_eq!(config.instructions, "Be brief.", "a refused update changes nothing");
        assert_eq!(config.to_json()["audio"]["output"]["format"]["type"], "audio/pcmu");
    }

    #[test]
    fn items_become_messages() {
        let item = item_from(&json!({"type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "Hello"}]}))
        .unwrap();
        assert_eq!(item.text, "Hello");
        assert!(item_from(&json!({"type": "function_call"})).is_err());
        assert!(item_from(&json!({"role": "user", "content": [{"type": "input_audio", "audio": "AA"}]})).is_err());
        let messages = messages("Be brief.", &[item]);
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].role, Role::System);
    }
}
