//! Text, JSON and CSV runs: the instruction for the format, the chat call, one repair attempt when the answer
//! does not parse or fails the schema, and the CSV or PDF file the answer becomes.

use super::files::store_file;
use super::plan::{task_run, Plan, RunAnswer, REPAIR_ENDPOINT, RUN_ENDPOINT};
use super::wire::RunMetadata;
use crate::api::chat::{self, ChatCall, ChatOutcome, Completed, Delivery, Face};
use crate::api::errors::ApiError;
use crate::auth::Principal;
use crate::state::AppState;
use crate::tasks::ChatParams;
use actix_web::{web, HttpRequest};
use base64::Engine as _;
use serde_json::Value;
use switchyard_actors::chat::{ChatRequest, InlineImage, Message, Role};
use switchyard_actors::tasks::OutputFormat;

const JSON_INSTRUCTION: &str = "Answer with a single JSON object and nothing else: no prose, no code fences.";
const CSV_INSTRUCTION: &str =
    "Answer with CSV only: a header row, then one row per record, comma-separated, quoted where needed, no prose.";

pub(super) async fn run_chat(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    principal: &Principal,
    plan: &Plan<'_>,
    stream: bool,
) -> Result<RunAnswer, ApiError> {
    let params: ChatParams = plan.params()?;
    let format = plan.task.output_format;
    let mut system = plan.system.clone().unwrap_or_default();
    let extra = match format {
        OutputFormat::Json => {
            let schema = plan.task.schema.as_ref().map(|s| format!(" It must satisfy this JSON Schema: {s}"));
            Some(format!("{JSON_INSTRUCTION}{}", schema.unwrap_or_default()))
        }
        OutputFormat::Csv => Some(CSV_INSTRUCTION.to_owned()),
        _ => None,
    };
    if let Some(extra) = extra {
        if !system.is_empty() {
            system.push_str("\n\n");
        }
        system.push_str(&extra);
    }
    let mut messages = Vec::new();
    if !system.is_empty() {
        messages.push(Message::text(Role::System, system));
    }
    let mut user = Message::text(Role::User, plan.prompt.clone());
    if let Some(image) = &plan.image {
        user.images.push(InlineImage {
            media_type: image.content_type.to_owned(),
            data_base64: base64::engine::general_purpose::STANDARD.encode(&image.bytes),
        });
    }
    messages.push(user);
    let model = &plan.model;
    let asked = params.max_tokens.map(|n| n.clamp(1, model.max_output_tokens.max(1)));
    let max_tokens = chat::fit_context(model, &messages, asked)?;
    let request = ChatRequest {
        messages,
        max_tokens,
        temperature: params.temperature,
        top_p: params.top_p,
        stop: params.stop.unwrap_or_default(),
        json: format == OutputFormat::Json,
    };
    let call = |request: ChatRequest, stream: bool, endpoint: &'static str| ChatCall {
        face: Face::Task,
        principal,
        model,
        request,
        delivery: Delivery { stream, usage_chunk: false },
        reporting_group: plan.reporting_group.clone(),
        use_fallback: plan.use_fallback,
        started: plan.started,
        endpoint,
        task: plan.task_ref(),
    };
    let first = match chat::run(state, req, call(request.clone(), stream, RUN_ENDPOINT)).await? {
        ChatOutcome::Stream(response) => return Ok(RunAnswer::Stream(response)),
        ChatOutcome::Whole(done) => done,
    };
    let check = |text: &str| -> Result<Value, String> {
        match format {
            OutputFormat::Json => check_json(text, plan.task.schema.as_ref()),
            OutputFormat::Csv => crate::render::csv(text).map(|(csv, _, _)| Value::String(csv)),
            _ => Ok(Value::String(text.to_owned())),
        }
    };
    let (done, output, repaired, credits, spent_tokens) = match check(&first.answer.text) {
        Ok(output) => (first, output, false, None, (0, 0)),
        Err(problem) => {
            // One repair attempt: the answer and what is wrong with it go back to the model.
            let mut retry = request.clone();
            retry.messages.push(Message::text(Role::Assistant, first.answer.text.clone()));
            retry.messages.push(Message::text(
                Role::User,
                format!("That answer is not valid: {problem}. Answer again with only the corrected output."),
            ));
            let second = match chat::run(state, req, call(retry, false, REPAIR_ENDPOINT)).await? {
                ChatOutcome::Whole(done) => done,
                ChatOutcome::Stream(_) => return Err(ApiError::internal("a repair attempt streamed")),
            };
            let spent =
                switchyard_actors::Credits(first.metadata.credits_charged.0 + second.metadata.credits_charged.0);
            let first_tokens = (first.answer.usage.prompt_tokens, first.answer.usage.completion_tokens);
            match check(&second.answer.text) {
                Ok(output) => (second, output, true, Some(spent), first_tokens),
                Err(problem) => {
                    return Err(ApiError::invalid_model_output(format!(
                        "The model's {} answer was not valid, even after a repair attempt: {problem}",
                        format.as_str()
                    )))
                }
            }
        }
    };
    let Completed { id, answer, mut metadata, model: _, upstream: _ } = *done;
    if let Some(spent) = credits {
        metadata.credits_charged = spent;
    }
    let mut files = Vec::new();
    let output = match format {
        OutputFormat::Csv => {
            let text = output.as_str().unwrap_or_default().to_owned();
            let file =
                store_file(state, req, principal, &format!("{}.csv", plan.task.slug), "text/csv", text.as_bytes())
                    .await?;
            files.push(file);
            Value::String(text)
        }
        OutputFormat::Pdf => {
            let title = plan.task.description.clone();
            let text = answer.text.clone();
            let pdf = tokio::task::spawn_blocking(move || crate::render::pdf(&title, &text))
                .await
                .map_err(|e| ApiError::internal(format!("pdf: {e}")))?;
            let filename = format!("{}.pdf", plan.task.slug);
            files.push(store_file(state, req, principal, &filename, "application/pdf", &pdf).await?);
            Value::String(answer.text.clone())
        }
        _ => output,
    };
    let tokens = switchyard_actors::Usage {
        prompt_tokens: answer.usage.prompt_tokens + spent_tokens.0,
        completion_tokens: answer.usage.completion_tokens + spent_tokens.1,
    };
    let metadata = RunMetadata { call: metadata, repaired, tokens: Some(tokens.into()) };
    let mut run = task_run(plan, id, output, files, metadata);
    run.usage = Some(tokens.into());
    Ok(RunAnswer::Run(Box::new(run)))
}

/// The compiled validator of a schema, compiled once: compiling builds the draft's meta-schema (megabytes of
/// allocation), far more than checking an answer. Kept by the schema's text; a handful of tasks' schemas, so the
/// cache starts over past 256 rather than tracking use.
fn validator(schema: &Value) -> Result<std::sync::Arc<jsonschema::Validator>, String> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    static COMPILED: Mutex<Option<HashMap<String, Arc<jsonschema::Validator>>>> = Mutex::new(None);
    let text = schema.to_string();
    if let Some(known) = COMPILED.lock().ok().and_then(|c| c.as_ref().and_then(|c| c.get(&text).cloned())) {
        return Ok(known);
    }
    let compiled =
        Arc::new(jsonschema::validator_for(schema).map_err(|e| format!("the task's schema is invalid: {e}"))?);
    if let Ok(mut cache) = COMPILED.lock() {
        let cache = cache.get_or_insert_with(HashMap::new);
        if cache.len() >= 256 {
            cache.clear();
        }
        cache.insert(text, compiled.clone());
    }
    Ok(compiled)
}

/// Parses a JSON answer (code fences tolerated) and checks it against the schema.
fn check_json(text: &str, schema: Option<&Value>) -> Result<Value, String> {
    let value: Value =
        serde_json::from_str(crate::render::strip_fences(text)).map_err(|e| format!("it is not JSON ({e})"))?;
    if let Some(schema) = schema {
        let validator = validator(schema)?;
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .take(5)
            .map(|e| {
                let at = e.instance_path.to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        if !errors.is_empty() {
            return Err(format!("it does not match the schema ({})", errors.join("; ")));
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_answers_are_parsed_and_checked_against_the_schema() {
        let schema = serde_json::json!({"type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}}});
        assert!(check_json("```json\n{\"name\": \"Jane\"}\n```", Some(&schema)).is_ok());
        assert!(check_json("{\"name\": 3}", Some(&schema)).unwrap_err().contains("/name"));
        assert!(check_json("Sure! Here it is", Some(&schema)).unwrap_err().contains("not JSON"));
        // The second check of the same schema uses the validator compiled by the first.
        assert!(std::sync::Arc::ptr_eq(&validator(&schema).unwrap(), &validator(&schema).unwrap()));
    }
}
