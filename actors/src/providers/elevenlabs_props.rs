//! Property tests of ElevenLabs' parsers: error bodies of every shape, the voice list and transcripts, and the
//! voice lookup over a cached list (no request is made: the list is always cached here).

// The one JSON strategy, compiled into each props module that uses it.
#[allow(clippy::duplicate_mod)]
#[path = "props_json.rs"]
mod props_json;

use super::super::http::{HttpClient, Upstream};
use super::super::Timeouts;
use super::*;
use proptest::prelude::*;
use serde_json::{json, Value};

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

const WORDS: &[&str] = &[
    "detail",
    "status",
    "message",
    "loc",
    "msg",
    "voices",
    "voice_id",
    "name",
    "text",
    "words",
    "type",
    "word",
    "spacing",
    "start",
    "end",
    "language_code",
];

fn json() -> BoxedStrategy<Value> {
    props_json::json(WORDS)
}

/// An ElevenLabs whose voice list is cached as `voices`: `voice_id` answers without a request.
fn with_voices(voices: VoiceList) -> Result<ElevenLabs, TestCaseError> {
    let client = std::sync::Arc::new(HttpClient::new("elevenlabs", Timeouts::default()).map_err(TestCaseError::fail)?);
    let upstream = Upstream::new("elevenlabs", "http://127.0.0.1:9", None, "KEY", Timeouts::default(), client);
    let provider = ElevenLabs::new(upstream);
    *provider.voices.lock().map_err(|_| TestCaseError::fail("poisoned"))? = Some((Instant::now(), voices));
    Ok(provider)
}

fn voice() -> impl Strategy<Value = (String, String)> {
    ("[A-Za-z0-9]{20}", prop_oneof!["[A-Za-z]{1,8}", "[A-Za-z]{1,8}( - |-| )[a-z ]{0,10}", ".{0,12}"])
}

/// Flips the case of ASCII letters where `flips` says so.
fn recase(name: &str, flips: &[bool]) -> String {
    name.chars()
        .zip(flips.iter().chain(std::iter::repeat(&false)))
        .map(|(c, flip)| {
            if *flip && c.is_ascii_uppercase() {
                c.to_ascii_lowercase()
            } else if *flip {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(config())]

    /// Any body: a message or none, never a panic; each documented shape gives its message.
    #[test]
    fn props_elevenlabs_error_bodies_parse_or_fail(
        value in json(),
        bytes in prop::collection::vec(any::<u8>(), 0..64),
        message in ".{0,20}",
        locs in prop::collection::vec(("[a-z_]{1,8}", ".{0,8}"), 1..4),
    ) {
        let _ = error_message(value.to_string().as_bytes());
        let _ = error_message(&bytes);
        let _ = error_message(json!({"detail": value}).to_string().as_bytes());
        let shaped = json!({"detail": {"status": "x", "message": message}}).to_string();
        prop_assert_eq!(error_message(shaped.as_bytes()), Some(message.clone()));
        prop_assert_eq!(error_message(json!({"detail": message}).to_string().as_bytes()), Some(message));
        let items: Vec<Value> = locs.iter().map(|(loc, msg)| json!({"loc": ["body", loc], "msg": msg})).collect();
        let joined = error_message(json!({"detail": items}).to_string().as_bytes()).unwrap_or_default();
        for (loc, msg) in &locs {
            prop_assert!(joined.contains(loc.as_str()) && joined.contains(msg.as_str()), "{}", joined);
        }
    }

    /// Voice lists and transcripts: any JSON parses or fails without a panic; well-formed ones keep every word.
    #[test]
    fn props_elevenlabs_lists_and_transcripts_parse_or_fail(
        value in json(),
        words in prop::collection::vec((".{0,6}", prop::option::of(prop::sample::select(&["word", "spacing", "audio_event"][..]))), 0..8),
    ) {
        let _ = serde_json::from_value::<WireVoices>(value.clone());
        let _ = serde_json::from_value::<WireTranscript>(value);
        let items: Vec<Value> = words.iter().enumerate().map(|(i, (text, kind))| match kind {
            Some(kind) => json!({"text": text, "start": i, "end": i + 1, "type": kind}),
            None => json!({"text": text}),
        }).collect();
        let text: String = words.iter().map(|(t, _)| t.as_str()).collect();
        let body = json!({"text": text, "language_code": "en", "language_probability": 0.9, "words": items});
        let wire: WireTranscript = serde_json::from_value(body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&wire.text, &text);
        let got: Vec<&str> = wire.words.iter().map(|w| w.text.as_str()).collect();
        let want: Vec<&str> = words.iter().map(|(t, _)| t.as_str()).collect();
        prop_assert_eq!(got, want);
    }

    /// A voice named in any ASCII case, padded with spaces, is found (by its whole name or its first word): the
    /// first voice whose whole name matches wins, else the first whose first word does.
    #[test]
    fn props_elevenlabs_voice_names_resolve(
        voices in prop::collection::vec(voice(), 1..6),
        pick in any::<prop::sample::Index>(),
        flips in prop::collection::vec(any::<bool>(), 0..24),
        first_word in any::<bool>(),
    ) {
        let provider = with_voices(voices.clone())?;
        let name = &voices[pick.index(voices.len())].1;
        let wanted = if first_word { name.split([' ', '-']).next().unwrap_or_default() } else { name.as_str() };
        prop_assume!(!wanted.is_empty() && wanted.trim() == wanted);
        let wanted = recase(wanted, &flips);
        let got = futures::executor::block_on(provider.voice_id(&format!(" {wanted} "), Instant::now() + Duration::from_secs(5)));
        let id = got.map_err(|e| TestCaseError::fail(format!("{wanted:?} not found: {e}")))?;
        let first = |n: &str| n.split([' ', '-']).next().is_some_and(|f| f.eq_ignore_ascii_case(&wanted));
        let expected = voices.iter().find(|(_, n)| n.eq_ignore_ascii_case(&wanted)).or_else(|| voices.iter().find(|(_, n)| first(n)));
        prop_assert_eq!(Some(&id), expected.map(|(id, _)| id));
    }

    /// Any name: an id of the list, the name itself when it looks like an id, or a 400 that names the voices.
    #[test]
    fn props_elevenlabs_any_voice_name_is_an_id_or_a_400(
        voices in prop::collection::vec(voice(), 0..6),
        query in prop_oneof![".{0,24}", "[A-Za-z0-9]{20}"],
    ) {
        let provider = with_voices(voices.clone())?;
        let got = futures::executor::block_on(provider.voice_id(&query, Instant::now() + Duration::from_secs(5)));
        match got {
            Ok(id) => prop_assert!(id == query || voices.iter().any(|(v, _)| *v == id), "{}", id),
            Err(ProviderError::Rejected { status: 400, message, .. }) => {
                prop_assert!(!looks_like_id(&query));
                for (_, name) in &voices {
                    prop_assert!(message.contains(name.as_str()), "{} lacks {}", message, name);
                }
            }
            Err(other) => prop_assert!(false, "{:?}", other),
        }
    }
}
