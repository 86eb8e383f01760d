//! Property tests of the OpenAI stream and body parsers: any event data and any body are an answer or an error,
//! never a panic, and a well-formed stream's deltas add up to its text, however its bytes were split.

// The one JSON strategy, compiled into each props module that uses it.
#[allow(clippy::duplicate_mod)]
#[path = "props_json.rs"]
mod props_json;

use super::*;
use crate::chat::Usage;
use proptest::prelude::*;
use serde_json::{json, Value};

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

const WORDS: &[&str] = &[
    "choices",
    "delta",
    "content",
    "role",
    "assistant",
    "finish_reason",
    "stop",
    "length",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "error",
    "message",
    "[DONE]",
];

fn json() -> BoxedStrategy<Value> {
    props_json::json(WORDS)
}

const PROMPT_ESTIMATE: u64 = 7;

/// The chat events `next_event` makes of `events`.
fn parse(events: Vec<Result<SseEvent, ProviderError>>) -> Vec<Result<ChatEvent, ProviderError>> {
    let state = StreamState {
        events: futures::stream::iter(events).boxed(),
        provider: "openai".into(),
        prompt_estimate: PROMPT_ESTIMATE,
        finish: None,
        usage: None,
        completion_chars: String::new(),
        done: false,
    };
    futures::executor::block_on(futures::stream::unfold(state, next_event).collect())
}

fn data(text: String) -> Result<SseEvent, ProviderError> {
    Ok(SseEvent { event: None, data: text })
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

/// A completion cut into pieces, with its end and maybe its usage.
fn answer() -> impl Strategy<Value = (Vec<String>, Option<&'static str>, Option<(u64, u64)>)> {
    let reasons = prop::sample::select(&["stop", "length", "content_filter", "tool_calls", "function_call", "x"][..]);
    (prop::collection::vec(".{0,8}", 0..10), prop::option::of(reasons), prop::option::of((any::<u64>(), any::<u64>())))
}

/// The stream's chunks as the upstream sends them: a role delta, the pieces (empty ones too), the finish reason,
/// usage in a chunk with no choices, then `[DONE]`.
fn chunks(pieces: &[String], reason: Option<&str>, usage: Option<(u64, u64)>) -> Vec<String> {
    let mut out = vec![json!({"choices": [{"delta": {"role": "assistant"}, "finish_reason": null}]}).to_string()];
    out.extend(
        pieces
            .iter()
            .map(|p| json!({"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]}).to_string()),
    );
    out.push(json!({"choices": [{"delta": {}, "finish_reason": reason}]}).to_string());
    if let Some((prompt, completion)) = usage {
        out.push(
            json!({"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}).to_string(),
        );
    }
    out.push("[DONE]".to_owned());
    out
}

fn expected_reason(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("length") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

proptest! {
    #![proptest_config(config())]

    /// Any JSON, any text, in any order, as event data: deltas then one end (a finish or an error), no panic.
    #[test]
    fn props_openai_any_event_data_ends_in_a_finish_or_an_error(
        items in prop::collection::vec(prop_oneof![json().prop_map(|v| v.to_string()), ".{0,20}"], 0..8),
    ) {
        let out = parse(items.into_iter().map(data).collect());
        well_ended(&out)?;
    }

    /// Well-formed chunks: the deltas add up to the text, the finish reason and usage are the upstream's (or the
    /// estimate when it sent none).
    #[test]
    fn props_openai_deltas_add_up_to_the_text((pieces, reason, usage) in answer()) {
        let out = parse(chunks(&pieces, reason, usage).into_iter().map(data).collect());
        well_ended(&out)?;
        let text: String = out.iter().filter_map(|e| match e { Ok(ChatEvent::Delta(t)) => Some(t.as_str()), _ => None }).collect();
        prop_assert_eq!(&text, &pieces.concat());
        let usage = usage.map_or(
            Usage { prompt_tokens: PROMPT_ESTIMATE, completion_tokens: crate::chat::estimate_tokens(&text) },
            |(p, c)| Usage { prompt_tokens: p, completion_tokens: c },
        );
        prop_assert_eq!(out.last(), Some(&Ok(ChatEvent::Finish { reason: expected_reason(reason), usage })));
    }

    /// The same chunks as SSE bytes, split anywhere and decoded by `sse::events`: the same text.
    #[test]
    fn props_openai_text_survives_any_split_of_the_bytes(
        (pieces, reason, usage) in answer(),
        crlf in any::<bool>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let eol = if crlf { "\r\n" } else { "\n" };
        let bytes: Vec<u8> = chunks(&pieces, reason, usage)
            .iter()
            .flat_map(|c| format!(": keep-alive{eol}data: {c}{eol}{eol}").into_bytes())
            .collect();
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        at.extend([0, bytes.len()]);
        at.sort_unstable();
        let split: Vec<Result<bytes::Bytes, ProviderError>> =
            at.windows(2).map(|w| Ok(bytes::Bytes::copy_from_slice(&bytes[w[0]..w[1]]))).collect();
        let events = sse::events(futures::stream::iter(split).boxed(), "openai".into(), bytes.len() + 1);
        let events: Vec<_> = futures::executor::block_on(events.collect());
        let out = parse(events);
        well_ended(&out)?;
        let text: String = out.iter().filter_map(|e| match e { Ok(ChatEvent::Delta(t)) => Some(t.as_str()), _ => None }).collect();
        prop_assert_eq!(text, pieces.concat());
        let finished = matches!(out.last(), Some(Ok(ChatEvent::Finish { .. })));
        prop_assert!(finished, "{:?}", out.last());
    }

    /// An error chunk ends the stream with the upstream's message.
    #[test]
    fn props_openai_an_error_chunk_ends_the_stream(pieces in prop::collection::vec(".{1,8}", 0..4), message in ".{0,20}") {
        let mut items = chunks(&pieces, None, None);
        items.insert(items.len() - 1, json!({"error": {"message": message}}).to_string());
        let out = parse(items.into_iter().map(data).collect());
        well_ended(&out)?;
        prop_assert_eq!(out.len(), pieces.len() + 1);
        let upstream = matches!(out.last(), Some(Err(ProviderError::Upstream { message: m, .. })) if *m == message);
        prop_assert!(upstream, "{:?}", out.last());
    }

    /// Whole answers and error bodies: any bytes or JSON parse or fail, never panic; well-formed ones keep their
    /// text and message.
    #[test]
    fn props_openai_bodies_parse_or_fail(
        value in json(),
        bytes in prop::collection::vec(any::<u8>(), 0..64),
        text in ".{0,30}",
    ) {
        let _ = serde_json::from_value::<WireResponse>(value.clone());
        let _ = serde_json::from_slice::<WireResponse>(&bytes);
        let _ = error_message(value.to_string().as_bytes());
        let _ = error_message(&bytes);
        let body = json!({"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]});
        let wire: WireResponse = serde_json::from_value(body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(wire.choices.into_iter().next().and_then(|c| c.message.content), Some(text.clone()));
        let error = json!({"error": {"message": text, "type": "invalid_request_error"}}).to_string();
        prop_assert_eq!(error_message(error.as_bytes()), Some(text));
    }
}
