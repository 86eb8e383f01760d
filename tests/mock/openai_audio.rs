//! OpenAI's audio endpoints, for the mock upstream (`server.rs`), with real audio (`synth.rs`):
//! `POST /v1/audio/speech` (JSON `model`, `input`, `voice`, `response_format`, `speed` → the audio bytes; `pcm` is
//! 24 kHz 16-bit little-endian, as OpenAI's) and `POST /v1/audio/transcriptions` (multipart `file`, `model`,
//! `language`, `response_format` `json` or `verbose_json`, `timestamp_granularities[]`).

use super::http::{find_header, parse_multipart, Request, Response};
use super::synth::{ffmpeg_on_path, pcm_tone, samples_for, to_mp3, tts_seconds, wav, wav_duration};
use serde_json::{json, Value};

/// OpenAI's sample rate for speech.
pub const SPEECH_RATE: u32 = 24_000;
const SPEECH_MODELS: [&str; 3] = ["tts-1", "tts-1-hd", "gpt-4o-mini-tts"];
const TRANSCRIPTION_MODELS: [&str; 3] = ["whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"];
pub const VOICES: [&str; 11] =
    ["alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse"];

fn error(status: u16, message: &str, param: Option<&str>) -> Response {
    Response::json(
        status,
        json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": null}}),
    )
}

/// `POST /v1/audio/speech`
pub async fn speech(req: &Request) -> Response {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&req.body) else {
        return error(400, "We could not parse the JSON body of your request.", None);
    };
    let model = body.get("model").and_then(Value::as_str).unwrap_or_default();
    if !SPEECH_MODELS.contains(&model) {
        return error(400, &format!("Invalid model '{model}'"), Some("model"));
    }
    let Some(input) = body.get("input").and_then(Value::as_str).filter(|i| !i.is_empty()) else {
        return error(400, "Missing required parameter: 'input'.", Some("input"));
    };
    if input.chars().count() > 4096 {
        return error(400, "'input' is too long: at most 4096 characters", Some("input"));
    }
    let voice = body.get("voice").and_then(Value::as_str).unwrap_or_default();
    if !VOICES.contains(&voice) {
        return error(400, &format!("Invalid value for 'voice': '{voice}'"), Some("voice"));
    }
    if let Some(speed) = body.get("speed") {
        if !speed.as_f64().is_some_and(|s| (0.25..=4.0).contains(&s)) {
            return error(400, "'speed' must be between 0.25 and 4.0", Some("speed"));
        }
    }
    if let Some(extra) = body
        .keys()
        .find(|k| !["model", "input", "voice", "response_format", "speed", "instructions"].contains(&k.as_str()))
    {
        return error(400, &format!("Unrecognized request argument supplied: {extra}"), Some(extra));
    }
    let pcm = pcm_tone(SPEECH_RATE, samples_for(SPEECH_RATE, tts_seconds(input)));
    match body.get("response_format").and_then(Value::as_str).unwrap_or("mp3") {
        "pcm" => Response::new(200, "audio/pcm", pcm),
        "wav" => Response::new(200, "audio/wav", wav(SPEECH_RATE, &pcm)),
        "mp3" if ffmpeg_on_path() => match to_mp3(wav(SPEECH_RATE, &pcm), SPEECH_RATE, 160).await {
            Ok(mp3) => Response::new(200, "audio/mpeg", mp3),
            Err(e) => error(500, &format!("ffmpeg: {e}"), None),
        },
        "mp3" => error(501, "mp3 output needs ffmpeg on PATH (mock)", None),
        other @ ("opus" | "aac" | "flac") => error(501, &format!("{other} is not made by the mock"), None),
        other => error(400, &format!("Invalid value for 'response_format': '{other}'"), Some("response_format")),
    }
}

/// The language OpenAI names in `verbose_json` for an ISO 639-1 code.
fn language_name(code: &str) -> &str {
    match code {
        "en" => "english",
        "de" => "german",
        "fr" => "french",
        "es" => "spanish",
        other => other,
    }
}

/// `POST /v1/audio/transcriptions`
pub fn transcription(req: &Request) -> Response {
    let content_type = find_header(&req.headers, "content-type").unwrap_or("");
    let Some(parts) = parse_multipart(content_type, &req.body) else {
        return error(400, "Could not parse multipart form", None);
    };
    let text_of =
        |name: &str| parts.iter().find(|p| p.name == name).map(|p| String::from_utf8_lossy(&p.data).into_owned());
    let Some(file) = parts.iter().find(|p| p.name == "file" && p.filename.is_some()) else {
        return error(400, "Missing required parameter: 'file'.", Some("file"));
    };
    let model = text_of("model").unwrap_or_default();
    if !TRANSCRIPTION_MODELS.contains(&model.as_str()) {
        return error(400, &format!("Invalid model '{model}'"), Some("model"));
    }
    let n = file.data.len();
    let text = format!("transcribed {n} bytes");
    let duration = wav_duration(&file.data).unwrap_or(n as f64 / 16_000.0);
    let language = text_of("language").unwrap_or_else(|| "en".into());
    match text_of("response_format").as_deref().unwrap_or("json") {
        "json" => Response::json(200, json!({"text": text})),
        "text" => Response::new(200, "text/plain", text),
        "verbose_json" => {
            let tokens: Vec<&str> = text.split(' ').collect();
            let slot = duration / tokens.len() as f64;
            let round = |x: f64| (x * 100.0).round() / 100.0;
            let words_wanted = parts.iter().any(|p| p.name == "timestamp_granularities[]" && p.data == b"word");
            let mut out = json!({"task": "transcribe", "language": language_name(&language), "duration": round(duration),
                "text": text, "segments": [{"id": 0, "start": 0.0, "end": round(duration), "text": text}]});
            if words_wanted {
                let words: Vec<Value> = tokens
                    .iter()
                    .enumerate()
                    .map(|(i, w)| json!({"word": w, "start": round(slot * i as f64), "end": round(slot * (i as f64 + 0.9))}))
                    .collect();
                out["words"] = json!(words);
            }
            Response::json(200, out)
        }
        other => error(400, &format!("Invalid value for 'response_format': '{other}'"), Some("response_format")),
    }
}
