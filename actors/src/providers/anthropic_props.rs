//! Property tests of the Anthropic stream and body parsers, and of the request's turn merging: any event data and
//! any body are an answer or an error, never a panic; a well-formed stream's deltas add up to its text.

// The one JSON strategy, compiled into each props module that uses it.
#[allow(clippy::duplicate_mod)]
#[path = "props_json.rs"]
mod props_json;

use super::*;
use crate::catalogue::Catalogue;
use crate::chat::Message;
use proptest::prelude::*;
use serde_json::{json, Value};

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

const WORDS: &[&str] = &[
    "type",
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "ping",
    "error",
    "overloaded_error",
    "message",
    "delta",
    "text",
    "text_delta",
    "stop_reason",
    "usage",
    "input_tokens",
    "output_tokens",
];

fn json() -> BoxedStrategy<Value> {
    props_json::json(WORDS)
}

/// The chat events `next_event` makes of `events`.
fn parse(events: Vec<Result<SseEvent, ProviderError>>) -> Vec<Result<ChatEvent, ProviderError>> {
    let state = StreamState {
        events: futures::stream::iter(events).boxed(),
        provider: "anthropic".into(),
        usage: Usage::default(),
        finish: None,
        done: false,
    };
    futures::executor::block_on(futures::stream::unfold(state, next_event).collect())
}

/// An event as Anthropic frames it: its type in `event:` and in the data.
fn event(value: Value) -> Result<SseEvent, ProviderError> {
    let kind = value.get("type").and_then(Value::as_str).map(str::to_owned);
    Ok(SseEvent { event: kind, data: value.to_string() })
}

/// Deltas, then exactly one end: a finish or an error, and nothing after it.
fn well_ended(out: &[Result<ChatEvent, ProviderError>]) -> Result<(), TestCaseError> {
    let (last, body) = out.split_last().ok_or_else(|| TestCaseError::fail("no end"))?;
    for item in body {
        prop_assert!(matches!(item, Ok(ChatEvent::Delta(text)) if !text.is_empty()), "{:?}", item);
    }
    prop_assert!(matches!(last, Ok(ChatEvent::Finish { .. }) | Err(_)), "{:?}", last);
    Ok(())
}

fn deltas(out: &[Result<ChatEvent, ProviderError>]) -> String {
    out.iter()
        .filter_map(|e| match e {
            Ok(ChatEvent::Delta(t)) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// A message as the upstream streams it: start (with the prompt's usage), blocks of text deltas with pings among
/// them, the stop reason and output usage, stop.
fn stream(blocks: &[Vec<String>], reason: Option<&str>, input: u64, output: u64) -> Vec<Value> {
    let mut out = vec![
        json!({"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": input, "output_tokens": 1}}}),
    ];
    for (i, block) in blocks.iter().enumerate() {
        out.push(json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}));
        out.push(json!({"type": "ping"}));
        for piece in block {
            out.push(
                json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": piece}}),
            );
        }
        out.push(json!({"type": "content_block_stop", "index": i}));
    }
    out.push(json!({"type": "message_delta", "delta": {"stop_reason": reason}, "usage": {"output_tokens": output}}));
    out.push(json!({"type": "message_stop"}));
    out
}

fn expected_reason(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("max_tokens") => FinishReason::Length,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("refusal") => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

fn catalogue() -> &'static Catalogue {
    static CATALOGUE: std::sync::OnceLock<Catalogue> = std::sync::OnceLock::new();
    CATALOGUE.get_or_init(|| Catalogue::builtin().expect("the built-in catalogue parses"))
}

fn message() -> impl Strategy<Value = Message> {
    let role = prop::sample::select(&[Role::System, Role::User, Role::Assistant][..]);
    (role, ".{0,10}").prop_map(|(role, text)| Message::text(role, text))
}

proptest! {
    #![proptest_config(config())]

    /// Any JSON, any text, in any order, as event data: deltas then one end (a finish or an error), no panic.
    #[test]
    fn props_anthropic_any_event_data_ends_in_a_finish_or_an_error(
        items in prop::collection::vec(prop_oneof![
            json().prop_map(event),
            ".{0,20}".prop_map(|t| Ok(SseEvent { event: None, data: t })),
        ], 0..8),
    ) {
        well_ended(&parse(items))?;
    }

    /// Well-formed events: the deltas add up to the text; the stop reason and the usage are the upstream's.
    #[test]
    fn props_anthropic_deltas_add_up_to_the_text(
        blocks in prop::collection::vec(prop::collection::vec(".{0,8}", 0..6), 0..4),
        reason in prop::option::of(prop::sample::select(&["end_turn", "max_tokens", "tool_use", "refusal", "x"][..])),
        input in any::<u64>(),
        output in any::<u64>(),
    ) {
        let out = parse(stream(&blocks, reason, input, output).into_iter().map(event).collect());
        well_ended(&out)?;
        prop_assert_eq!(deltas(&out), blocks.concat().concat());
        let usage = Usage { prompt_tokens: input, completion_tokens: output };
        prop_assert_eq!(out.last(), Some(&Ok(ChatEvent::Finish { reason: expected_reason(reason), usage })));
    }

    /// An error event ends the stream: 529 when overloaded, else 500, with the upstream's message.
    #[test]
    fn props_anthropic_an_error_event_ends_the_stream(
        pieces in prop::collection::vec(".{1,8}", 0..4),
        overloaded in any::<bool>(),
        message in ".{0,20}",
    ) {
        let mut items = stream(std::slice::from_ref(&pieces), None, 1, 1);
        let kind = if overloaded { "overloaded_error" } else { "api_error" };
        items.insert(items.len() - 1, json!({"type": "error", "error": {"type": kind, "message": message}}));
        let out = parse(items.into_iter().map(event).collect());
        well_ended(&out)?;
        prop_assert_eq!(deltas(&out), pieces.concat());
        let status = if overloaded { 529 } else { 500 };
        let upstream = matches!(
            out.last(),
            Some(Err(ProviderError::Upstream { status: s, message: m, .. })) if *s == status && *m == message
        );
        prop_assert!(upstream, "{:?}", out.last());
    }

    /// Whole answers and error bodies: any bytes or JSON parse or fail, never panic; a well-formed message's text
    /// is its text blocks in order.
    #[test]
    fn props_anthropic_bodies_parse_or_fail(
        value in json(),
        bytes in prop::collection::vec(any::<u8>(), 0..64),
        texts in prop::collection::vec(".{0,8}", 0..5),
        message in ".{0,20}",
    ) {
        let _ = serde_json::from_value::<WireResponse>(value.clone());
        let _ = serde_json::from_slice::<WireResponse>(&bytes);
        let _ = error_message(value.to_string().as_bytes());
        let _ = error_message(&bytes);
        let mut content: Vec<Value> = texts.iter().map(|t| json!({"type": "text", "text": t})).collect();
        content.insert(0, json!({"type": "tool_use", "id": "t", "name": "f", "input": {}}));
        let body = json!({"content": content, "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 2}});
        let wire: WireResponse = serde_json::from_value(body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let text: String = wire.content.into_iter().filter_map(|b| b.text).collect();
        prop_assert_eq!(text, texts.concat());
        let error = json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}}).to_string();
        prop_assert_eq!(error_message(error.as_bytes()), Some(format!("invalid_request_error: {message}")));
    }

    /// Any messages: system text goes to `system`, turns alternate, every other text is kept in order.
    #[test]
    fn props_anthropic_turns_alternate(messages in prop::collection::vec(message(), 0..8)) {
        let model = catalogue().model("claude-3-haiku").ok_or_else(|| TestCaseError::fail("no claude-3-haiku"))?;
        let request = ChatRequest { messages: messages.clone(), max_tokens: 10, temperature: None, top_p: None, stop: vec![], json: false };
        let wire = to_wire(model, &request, false);
        for pair in wire.messages.windows(2) {
            prop_assert_ne!(pair[0].role, pair[1].role);
        }
        let system: Vec<&str> = messages.iter().filter(|m| m.role == Role::System).map(|m| m.content.as_str()).collect();
        prop_assert_eq!(wire.system, (!system.is_empty()).then(|| system.join("\n\n")));
        let turns: Vec<&str> = wire.messages.iter().map(|m| match &m.content { WireContent::Text(t) => t.as_str(), WireContent::Blocks(_) => "" }).collect();
        let kept: Vec<&str> = messages.iter().filter(|m| m.role != Role::System).map(|m| m.content.as_str()).collect();
        prop_assert_eq!(turns.join("\n\n"), kept.join("\n\n"));
    }
}
