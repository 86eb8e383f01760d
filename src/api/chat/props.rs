//! Property tests of request parsing on both chat faces and the Tasks API: any body is a request or a 4xx in the
//! error envelope, never a panic; the one-pass and the diagnosing parse agree; valid chat requests are accepted as
//! sent.

// The one JSON strategy, compiled into each props module that uses it.
#[allow(clippy::duplicate_mod)]
#[path = "../props_json.rs"]
mod props_json;

use super::*;
use crate::api::body::{from_object, parse, parse_object, parse_well_formed};
use crate::api::errors::ErrorType;
use crate::api::image::ImageTaskRequest;
use crate::api::openai::ChatCompletionRequest;
use crate::api::speech::{ConversionTaskRequest, SpeechTaskRequest, TranscriptionTaskRequest};
use crate::api::task::TaskChatRequest;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;
use switchyard_actors::catalogue::{Catalogue, Modality};

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

const WORDS: &[&str] = &[
    "model",
    "messages",
    "role",
    "content",
    "user",
    "system",
    "assistant",
    "developer",
    "type",
    "text",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "stream",
    "prompt",
    "voice",
    "input",
    "sim-chat",
    "gpt-4",
];

fn json() -> BoxedStrategy<Value> {
    props_json::json(WORDS)
}

fn catalogue() -> &'static Catalogue {
    static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
    CATALOGUE.get_or_init(|| Catalogue::builtin().expect("the built-in catalogue parses"))
}

fn chat_models() -> Vec<&'static ModelSpec> {
    catalogue().models.values().filter(|m| m.modality == Modality::Chat).collect()
}

fn any_model() -> impl Strategy<Value = &'static ModelSpec> {
    prop::sample::select(chat_models())
}

/// A 4xx in the envelope: a client error of the invalid-request kind with a code.
fn client_error(e: &ApiError) -> Result<(), TestCaseError> {
    prop_assert!(e.status.is_client_error(), "{} {:?}", e.status, e.detail);
    prop_assert_eq!(e.detail.kind, ErrorType::InvalidRequestError);
    prop_assert!(!e.code().is_empty() && !e.detail.message.is_empty());
    let body = serde_json::to_value(crate::api::errors::ErrorBody { error: e.detail.clone() })
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(body["error"]["message"].is_string() && body["error"]["type"].is_string());
    Ok(())
}

/// `T` from `body`: the result of `parse`, checked against the diagnosing path (the same verdict) and, when it is
/// an error, for its envelope.
fn parsed<T: DeserializeOwned>(body: &[u8]) -> Result<Option<T>, TestCaseError> {
    let fast = parse_well_formed::<T>(body).is_some();
    let slow = parse_object(body).and_then(from_object::<T>);
    if fast {
        prop_assert!(
            slow.is_ok(),
            "parsed in one pass, refused by the diagnosing path: {:?}",
            slow.as_ref().err().map(|e| &e.detail)
        );
    }
    match parse::<T>(body) {
        Ok(value) => {
            prop_assert!(slow.is_ok());
            Ok(Some(value))
        }
        Err(e) => {
            prop_assert!(slow.is_err());
            client_error(&e)?;
            Ok(None)
        }
    }
}

fn role() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(&["system", "developer", "user", "assistant"][..]).prop_map(str::to_owned),
        1 => ".{0,8}",
    ]
    .boxed()
}

fn content() -> BoxedStrategy<Value> {
    let part = (prop_oneof![Just("text".to_owned()), ".{0,6}"], prop::option::of(".{0,10}"))
        .prop_map(|(kind, text)| json!({"type": kind, "text": text}));
    prop_oneof![
        ".{0,20}".prop_map(Value::String),
        prop::collection::vec(part, 0..3).prop_map(Value::Array),
        Just(Value::Null),
        json(),
    ]
    .boxed()
}

/// Bodies close to a chat request: every field present or not, well typed or any JSON, and maybe a stray field.
fn near_request() -> BoxedStrategy<Map<String, Value>> {
    let names: Vec<String> = chat_models().iter().map(|m| m.name.clone()).collect();
    let model = prop_oneof![3 => prop::sample::select(names).prop_map(Value::String), 1 => json()];
    let message = prop_oneof![
        3 => (role(), content()).prop_map(|(role, content)| json!({"role": role, "content": content})),
        1 => json(),
    ];
    let messages = prop_oneof![3 => prop::collection::vec(message, 0..4).prop_map(Value::Array), 1 => json()];
    let number = || prop_oneof![any::<u32>().prop_map(Value::from), (-1.0f64..3.0).prop_map(Value::from), json()];
    let stop = prop_oneof![
        ".{0,4}".prop_map(Value::String),
        prop::collection::vec(".{0,4}", 0..6).prop_map(|v| json!(v)),
        json()
    ];
    let extra = (".{1,8}", json());
    (
        (prop::option::of(model), prop::option::of(messages), prop::option::of(number())),
        (prop::option::of(number()), prop::option::of(number()), prop::option::of(stop)),
        (prop::option::of(any::<bool>()), prop::option::of(extra)),
    )
        .prop_map(|((model, messages, max_tokens), (temperature, top_p, stop), (stream, extra))| {
            let mut object = Map::new();
            let fields = [
                ("model", model),
                ("messages", messages),
                ("max_tokens", max_tokens),
                ("temperature", temperature),
                ("top_p", top_p),
                ("stop", stop),
                ("stream", stream.map(Value::Bool)),
            ];
            for (key, value) in fields {
                if let Some(value) = value {
                    object.insert(key.to_owned(), value);
                }
            }
            if let Some((key, value)) = extra {
                object.insert(key, value);
            }
            object
        })
        .boxed()
}

fn input(
    messages: Vec<MessageIn>,
    max_tokens: Option<u32>,
    t: Option<f64>,
    p: Option<f64>,
    stop: Option<StopIn>,
) -> ChatInput {
    ChatInput { messages, max_tokens, temperature: t, top_p: p, stop }
}

/// A valid message: a role, and text or text parts.
fn valid_message() -> impl Strategy<Value = (String, Vec<String>, bool)> {
    (
        prop::sample::select(&["system", "developer", "user", "assistant"][..]).prop_map(str::to_owned),
        prop::collection::vec(".{0,12}", 1..3),
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes, any JSON, any object: each request type parses or is a 4xx; the two parse paths agree.
    #[test]
    fn props_chat_any_body_parses_or_is_a_4xx(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            json().prop_map(|v| v.to_string().into_bytes()),
            near_request().prop_map(|o| Value::Object(o).to_string().into_bytes()),
        ],
    ) {
        parsed::<TaskChatRequest>(&body)?;
        parsed::<ChatCompletionRequest>(&body)?;
        parsed::<ImageTaskRequest>(&body)?;
        parsed::<SpeechTaskRequest>(&body)?;
        parsed::<ConversionTaskRequest>(&body)?;
        parsed::<TranscriptionTaskRequest>(&body)?;
    }

    /// Near-valid chat bodies on both faces: parsed, then checked against a chat model, each step an answer or a
    /// 4xx; what passes fits the model.
    #[test]
    fn props_chat_near_requests_prepare_or_are_a_4xx(object in near_request(), model in any_model()) {
        let body = Value::Object(object).to_string().into_bytes();
        if let Some(task) = parsed::<TaskChatRequest>(&body)? {
            let prepared = prepare(model, input(task.messages, task.max_tokens, task.temperature, task.top_p, task.stop));
            match prepared {
                Ok(request) => {
                    prop_assert!(request.max_tokens >= 1 && request.max_tokens <= model.max_output_tokens.max(model.default_max_tokens));
                    prop_assert!(request.stop.len() <= 4);
                    prop_assert!(request.messages.iter().any(|m| m.role != Role::System));
                }
                Err(e) => client_error(&e)?,
            }
        }
        if let Some(openai) = parsed::<ChatCompletionRequest>(&body)? {
            let max_tokens = openai.max_completion_tokens.or(openai.max_tokens);
            if let Err(e) = prepare(model, input(openai.messages, max_tokens, openai.temperature, openai.top_p, openai.stop)) {
                client_error(&e)?;
            }
        }
    }

    /// Valid chat requests are accepted as sent: roles, texts (parts joined), limits and stop sequences.
    #[test]
    fn props_chat_valid_requests_are_accepted(
        model in any_model(),
        system in prop::collection::vec(valid_message(), 0..3),
        turns in prop::collection::vec(valid_message(), 1..4),
        max_tokens in prop::option::of(any::<prop::sample::Index>()),
        temperature in prop::option::of(0.0f64..=2.0),
        top_p in prop::option::of(0.0f64..=1.0),
        stop in prop::option::of(prop::collection::vec(".{1,4}", 0..=4)),
    ) {
        let turns: Vec<_> = turns
            .into_iter()
            .map(|(role, text, parts)| (if role == "system" || role == "developer" { "user".to_owned() } else { role }, text, parts))
            .collect();
        let all: Vec<_> = system.iter().chain(&turns).cloned().collect();
        let messages: Vec<Value> = all
            .iter()
            .map(|(role, texts, parts)| {
                let content = if *parts {
                    Value::Array(texts.iter().map(|t| json!({"type": "text", "text": t})).collect())
                } else {
                    Value::String(texts.concat())
                };
                json!({"role": role, "content": content})
            })
            .collect();
        let room = model.max_output_tokens.min(model.context_window.saturating_sub(200)).max(1);
        let max_tokens = max_tokens.map(|i| 1 + i.index(room as usize) as u32);
        let body = json!({
            "model": model.name, "messages": messages, "max_tokens": max_tokens,
            "temperature": temperature, "top_p": top_p, "stop": stop,
        });
        let task = parse::<TaskChatRequest>(body.to_string().as_bytes()).map_err(|e| TestCaseError::fail(format!("{:?}", e.detail)))?;
        let request = prepare(model, input(task.messages, task.max_tokens, task.temperature, task.top_p, task.stop))
            .map_err(|e| TestCaseError::fail(format!("{:?}", e.detail)))?;
        let got: Vec<(Role, &str)> = request.messages.iter().map(|m| (m.role, m.content.as_str())).collect();
        let texts: Vec<String> = all.iter().map(|(_, texts, _)| texts.concat()).collect();
        let want: Vec<(Role, &str)> = all
            .iter()
            .zip(&texts)
            .map(|((role, _, _), text)| (match role.as_str() { "user" => Role::User, "assistant" => Role::Assistant, _ => Role::System }, text.as_str()))
            .collect();
        prop_assert_eq!(got, want);
        if let Some(n) = max_tokens {
            prop_assert_eq!(request.max_tokens, n);
        }
        // Within an ulp: serde_json parses floats fast, not always correctly rounded (no `float_roundtrip`).
        let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= f64::EPSILON * a.abs().max(1.0),
            (a, b) => a == b,
        };
        prop_assert!(close(request.temperature, temperature), "{:?} {:?}", request.temperature, temperature);
        prop_assert!(close(request.top_p, top_p), "{:?} {:?}", request.top_p, top_p);
        prop_assert_eq!(request.stop, stop.unwrap_or_default());
    }
}
