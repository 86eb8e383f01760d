//! Mode `execute` of the speech models: text-to-speech (`input.text`), speech-to-speech and transcription
//! (`input.audio`, a media_ref), with `params` as `POST /api/v1/task` takes them, through the same calls.

use super::execute::task_body;
use super::Ran;
use crate::api::call::CallSpec;
use crate::api::errors::ApiError;
use crate::api::speech::{
    convert, finish_audio, start_speech, transcribe_task, ConversionTaskRequest, SpeakCall, SpeechGeneration,
    SpeechTaskRequest, TranscriptionTaskRequest,
};
use crate::state::AppState;
use actix_web::{web, HttpRequest};
use serde_json::{json, Map, Value};
use switchyard_actors::catalogue::Modality;

fn generation_ran(generation: SpeechGeneration) -> Ran {
    let audio = &generation.audio;
    let mut output = json!({"audio": {"url": audio.url, "media_ref": audio.media_ref, "content_type": audio.content_type,
        "format": audio.format, "bytes": audio.bytes, "duration_seconds": audio.duration_seconds}});
    if !generation.warnings.is_empty() {
        output["warnings"] = json!(generation.warnings);
    }
    (generation.id, output, json!(generation.usage), generation.metadata)
}

pub(super) async fn execute(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    spec: CallSpec<'_>,
    input: Map<String, Value>,
    params: Map<String, Value>,
) -> Result<Ran, ApiError> {
    let (principal, model, started) = (spec.principal, spec.model, spec.started);
    match model.modality {
        Modality::Speech => {
            let mut body: SpeechTaskRequest = task_body(model, input, params)?;
            (body.reporting_group, body.use_fallback_model) = (spec.reporting_group.clone(), Some(spec.use_fallback));
            let call = SpeakCall::check(model, body)?;
            let speaking = start_speech(state, req, principal, model, call, started, "/api/runs").await?;
            Ok(generation_ran(finish_audio(state, req, &principal.workspace_id, speaking).await?))
        }
        Modality::SpeechToSpeech => {
            let mut body: ConversionTaskRequest = task_body(model, input, params)?;
            (body.reporting_group, body.use_fallback_model) = (spec.reporting_group.clone(), Some(spec.use_fallback));
            Ok(generation_ran(convert(state, req, principal, model, body, None, started, "/api/runs").await?))
        }
        _ => {
            let mut body: TranscriptionTaskRequest = task_body(model, input, params)?;
            (body.reporting_group, body.use_fallback_model) = (spec.reporting_group.clone(), Some(spec.use_fallback));
            let transcription = transcribe_task(state, req, principal, model, body, None, started, "/api/runs").await?;
            let output = json!({"text": transcription.text, "language": transcription.language,
                "language_probability": transcription.language_probability,
                "duration_seconds": transcription.duration_seconds, "words": transcription.words});
            Ok((transcription.id, output, json!(transcription.usage), transcription.metadata))
        }
    }
}
