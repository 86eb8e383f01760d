//! Property tests of the SSE decoder: the events do not depend on how the bytes were split, any bytes are safe,
//! and an event past the bound is an error after at most the bound and one chunk held.

use super::*;
use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

/// One line of an event block.
#[derive(Clone, Debug)]
enum Line {
    Event(String),
    Data(String),
    /// `data` alone, or `data:` without a space: an empty data line.
    BareData(bool),
    Comment(String),
    /// Fields the decoder ignores (`id`, `retry`, anything unknown), with or without a value.
    Other(String, Option<String>),
}

/// A line's text: anything but CR and LF.
fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[^\r\n]{0,12}", "[ :a-z{}\"]{0,12}", Just(" leading space".to_owned())]
}

fn line() -> impl Strategy<Value = Line> {
    let field = "[a-z]{1,6}".prop_filter("a field the decoder reads", |f| f != "data" && f != "event");
    prop_oneof![
        1 => text().prop_map(Line::Event),
        3 => text().prop_map(Line::Data),
        1 => any::<bool>().prop_map(Line::BareData),
        1 => text().prop_map(Line::Comment),
        1 => (field, prop::option::of(text())).prop_map(|(f, v)| Line::Other(f, v)),
    ]
}

/// A stream of event blocks, all with one line ending (LF, CRLF or CR).
fn stream() -> impl Strategy<Value = (&'static str, Vec<Vec<Line>>)> {
    let eol = prop::sample::select(&["\n", "\r\n", "\r"][..]);
    (eol, prop::collection::vec(prop::collection::vec(line(), 0..5), 0..8))
}

fn encode(eol: &str, blocks: &[Vec<Line>]) -> Vec<u8> {
    let mut out = String::new();
    for block in blocks {
        for line in block {
            match line {
                Line::Event(v) => out.push_str(&format!("event: {v}")),
                Line::Data(v) => out.push_str(&format!("data: {v}")),
                Line::BareData(colon) => out.push_str(if *colon { "data:" } else { "data" }),
                Line::Comment(v) => out.push_str(&format!(":{v}")),
                Line::Other(f, Some(v)) => out.push_str(&format!("{f}: {v}")),
                Line::Other(f, None) => out.push_str(f),
            }
            out.push_str(eol);
        }
        out.push_str(eol);
    }
    out.into_bytes()
}

/// The events the blocks stand for: those with data, their data lines joined by LF, the last `event` name.
fn model(blocks: &[Vec<Line>]) -> Vec<SseEvent> {
    let mut events = Vec::new();
    for block in blocks {
        let mut event = SseEvent::default();
        let mut data: Option<Vec<&str>> = None;
        for line in block {
            match line {
                Line::Event(v) => event.event = Some(v.clone()),
                Line::Data(v) => data.get_or_insert_with(Vec::new).push(v),
                Line::BareData(_) => data.get_or_insert_with(Vec::new).push(""),
                Line::Comment(_) | Line::Other(..) => {}
            }
        }
        if let Some(data) = data {
            event.data = data.join("\n");
            events.push(event);
        }
    }
    events
}

/// `input` cut at the given points (any number, anywhere, repeated or not).
fn split(input: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
    at.push(0);
    at.push(input.len());
    at.sort_unstable();
    at.windows(2).map(|w| input[w[0]..w[1]].to_vec()).collect()
}

/// Everything the decoder hands out for `pieces` pushed one after another, and whether something is left over.
fn decode(pieces: &[Vec<u8>]) -> (Vec<SseEvent>, bool) {
    let mut decoder = SseDecoder::default();
    let mut out = Vec::new();
    for piece in pieces {
        decoder.push(piece);
        while let Some(event) = decoder.next_event() {
            out.push(event);
        }
    }
    (out, decoder.has_partial())
}

/// `events` over `pieces`; also how many bytes it pulled from the chunk stream.
fn run_events(pieces: Vec<Vec<u8>>, bound: usize) -> (Vec<Result<SseEvent, ProviderError>>, usize) {
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = pulled.clone();
    let chunks = futures::stream::iter(pieces.into_iter().map(move |piece| {
        counter.fetch_add(piece.len(), Ordering::SeqCst);
        Ok(Bytes::from(piece))
    }))
    .boxed();
    let got = futures::executor::block_on(events(chunks, "p".into(), bound).collect::<Vec<_>>());
    (got, pulled.load(Ordering::SeqCst))
}

/// Byte soup rich in what SSE framing is made of.
fn soup() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"data: ".to_vec()),
        Just(b"data".to_vec()),
        Just(b"event: ".to_vec()),
        Just(b":".to_vec()),
        Just("é".as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..4),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(config())]

    /// Well-formed streams decode to the events they were made of, however the bytes are split.
    #[test]
    fn props_sse_decodes_what_was_encoded_at_any_split(
        (eol, blocks) in stream(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let input = encode(eol, &blocks);
        let expected = model(&blocks);
        let (whole, whole_partial) = decode(std::slice::from_ref(&input));
        prop_assert_eq!(&whole, &expected);
        prop_assert!(!whole_partial);
        let (pieces, partial) = decode(&split(&input, &cuts));
        prop_assert_eq!(&pieces, &expected);
        prop_assert!(!partial);
        // Through `events`, under a bound every block fits: the same events, no error.
        let (got, _) = run_events(split(&input, &cuts), input.len() + 1);
        prop_assert_eq!(got, expected.into_iter().map(Ok).collect::<Vec<_>>());
    }

    /// Any bytes (CR, LF and CRLF mixed, broken UTF-8, comments): no panic, and the same events and leftovers
    /// whether pushed whole, split anywhere, or byte by byte.
    #[test]
    fn props_sse_any_bytes_decode_the_same_at_any_split(
        input in prop_oneof![soup(), prop::collection::vec(any::<u8>(), 0..256)],
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let whole = decode(std::slice::from_ref(&input));
        prop_assert_eq!(&decode(&split(&input, &cuts)), &whole);
        let bytes: Vec<Vec<u8>> = input.iter().map(|b| vec![*b]).collect();
        prop_assert_eq!(&decode(&bytes), &whole);
    }

    /// Every block within the bound: never an error, whatever the split (the bound counts one event, not a chunk).
    /// The bound has one byte of slack: a stray blank line before an event (at most 2 bytes) is held with it.
    #[test]
    fn props_sse_events_within_the_bound_pass(
        (eol, blocks) in stream(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let bound = blocks.iter().map(|b| encode(eol, std::slice::from_ref(b)).len()).max().unwrap_or(0) + 1;
        let input = encode(eol, &blocks);
        let (got, _) = run_events(split(&input, &cuts), bound);
        prop_assert_eq!(got, model(&blocks).into_iter().map(Ok).collect::<Vec<_>>());
    }

    /// An event larger than the bound and one chunk: the events before it, then a protocol error, and nothing
    /// after; at most the bound and one chunk past its start were read.
    #[test]
    fn props_sse_an_event_past_the_bound_is_an_error(
        (eol, before) in stream(),
        bound in 3usize..300,
        chunk in 1usize..64,
        excess in 1usize..200,
    ) {
        let prefix = encode(eol, &before);
        let big = format!("data: {}{eol}{eol}data: after{eol}{eol}", "x".repeat(bound + chunk + excess));
        let input = [prefix.clone(), big.into_bytes()].concat();
        // The prefix comes whole (its events may exceed the bound: they are complete in the chunk), then chunks of
        // `chunk` bytes.
        let mut pieces = vec![prefix.clone()];
        pieces.extend(input[prefix.len()..].chunks(chunk).map(<[u8]>::to_vec));
        let (got, pulled) = run_events(pieces, bound);
        let expected = model(&before);
        prop_assert_eq!(got.len(), expected.len() + 1);
        for (got, want) in got.iter().zip(&expected) {
            prop_assert_eq!(got.as_ref().ok(), Some(want));
        }
        let last = got.last();
        prop_assert!(
            matches!(last, Some(Err(ProviderError::Protocol { message, .. })) if message.contains("bytes in one event")),
            "{:?}", last
        );
        prop_assert!(pulled <= prefix.len() + bound + chunk, "pulled {}", pulled);
    }

    /// A body that stops part way through an event is an error, never an event made of half of one.
    #[test]
    fn props_sse_a_cut_off_event_is_an_error(
        (eol, blocks) in stream(),
        tail in "[a-z]{1,10}",
    ) {
        let input = [encode(eol, &blocks), format!("data: {tail}").into_bytes()].concat();
        let (got, _) = run_events(vec![input.clone()], input.len() + 1);
        let expected = model(&blocks);
        prop_assert_eq!(got.len(), expected.len() + 1);
        let cut = matches!(got.last(), Some(Err(ProviderError::Connection { .. })));
        prop_assert!(cut, "{:?}", got.last());
    }
}
