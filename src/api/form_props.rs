//! Property tests of multipart forms and file recognition: any bytes, names and boundaries are a form or a 4xx,
//! never a panic; well-formed forms give back their fields and file, split anywhere, under a fingerprint that does
//! not depend on the boundary.

// The one JSON strategy, compiled into each props module that uses it.
#[allow(clippy::duplicate_mod)]
#[path = "props_json.rs"]
mod props_json;

use super::*;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::test::TestRequest;
use proptest::prelude::*;
use std::future::Future;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

const WORDS: &[&str] = &["messages", "role", "content", "user", "stream", "speed", "seed", "width"];

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Signatures the sniffer knows, and none.
const HEADS: &[&[u8]] = &[b"", PNG, b"RIFF\0\0\0\0WAVE", b"OggS", b"fLaC", b"GIF89a", b"%PDF-", b"ID3"];

fn request(content_type: &str) -> HttpRequest {
    TestRequest::default().insert_header((CONTENT_TYPE, content_type)).to_http_request()
}

/// `read_form` over `body` cut at the given points. The body is all there at once, so a form still pending after
/// many polls never completes: that fails the test instead of hanging it.
fn read(req: &HttpRequest, body: &[u8], cuts: &[prop::sample::Index], max_file: usize) -> Result<Form, ApiError> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(body.len() + 1)).collect();
    at.extend([0, body.len()]);
    at.sort_unstable();
    let chunks: Vec<Result<Bytes, actix_web::error::PayloadError>> =
        at.windows(2).map(|w| Ok(Bytes::copy_from_slice(&body[w[0]..w[1]]))).collect();
    let mut future = std::pin::pin!(read_form(req, futures::stream::iter(chunks), max_file));
    let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
    for _ in 0..10_000 {
        if let std::task::Poll::Ready(result) = future.as_mut().poll(&mut cx) {
            return result;
        }
    }
    panic!("read_form hangs: still pending after the whole body {:?}", String::from_utf8_lossy(body));
}

fn client_error(e: &ApiError) -> Result<(), TestCaseError> {
    prop_assert!(e.status.is_client_error(), "{} {:?}", e.status, e.detail);
    prop_assert!(!e.detail.message.is_empty());
    Ok(())
}

/// One part of a generated form.
#[derive(Clone, Debug)]
enum Part {
    Field(String, String),
    File { field: String, filename: String, bytes: Vec<u8> },
}

/// Text fields (JSON in the fields that take JSON), `tags[]` items, and at most one file of the kind its field
/// takes.
fn parts() -> impl Strategy<Value = Vec<Part>> {
    let json_field = (prop::sample::select(JSON_FIELDS), props_json::json(WORDS))
        .prop_map(|(name, value)| Part::Field(name.to_owned(), value.to_string()));
    let text_field = ("[a-z_]{1,8}", ".{0,20}")
        .prop_filter("not a file field", |(name, _)| FileKind::of_field(name).is_none())
        .prop_map(|(name, text)| Part::Field(name, text));
    let item = ".{0,8}".prop_map(|text| Part::Field("tags[]".to_owned(), text));
    let file = (
        prop::sample::select(&["audio", "file", "image"][..]),
        "[a-z]{1,8}\\.[a-z]{3}",
        prop::collection::vec(any::<u8>(), 0..48),
    )
        .prop_map(|(field, filename, tail)| {
            let head: Vec<u8> = if field == "image" { PNG.to_vec() } else { [&b"RIFF\0\0\0\0WAVE"[..]].concat() };
            Part::File { field: field.to_owned(), filename, bytes: [head, tail].concat() }
        });
    (
        prop::collection::vec(prop_oneof![2 => text_field, 1 => json_field, 1 => item], 0..36),
        prop::option::of(file),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut parts, file, at)| {
            if let Some(file) = file {
                parts.insert(at.index(parts.len() + 1), file);
            }
            parts
        })
}

fn encode(parts: &[Part], boundary: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match part {
            Part::Field(name, text) => {
                out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n{text}").as_bytes(),
                );
            }
            Part::File { field, filename, bytes } => {
                out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
                        .as_bytes(),
                );
                out.extend_from_slice(bytes);
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// A form's fields, and its file as (field, file name, bytes).
type Expected = (Map<String, Value>, Option<(String, String, Vec<u8>)>);

/// What `read_form` should answer for `parts`: the fields (later duplicates refused), or `None` for a refusal.
fn model(parts: &[Part]) -> Option<Expected> {
    if parts.is_empty() || parts.len() > MAX_PARTS {
        return None;
    }
    let mut fields = Map::new();
    let mut file = None;
    for part in parts {
        match part {
            Part::Field(name, text) if name == "tags[]" => {
                fields
                    .entry("tags")
                    .or_insert_with(|| Value::Array(Vec::new()))
                    .as_array_mut()?
                    .push(Value::String(text.clone()));
            }
            Part::Field(name, text) => {
                if fields.contains_key(name) {
                    return None;
                }
                let value = if JSON_FIELDS.contains(&name.as_str()) {
                    serde_json::from_str(text).ok()?
                } else {
                    Value::String(text.clone())
                };
                fields.insert(name.clone(), value);
            }
            Part::File { field, filename, bytes } => file = Some((field.clone(), filename.clone(), bytes.clone())),
        }
    }
    Some((fields, file))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

proptest! {
    #![proptest_config(config())]

    /// Any field name, kind and bytes: the sniffed type when it is the kind the field takes, else a 415 that names
    /// the field.
    #[test]
    fn props_form_recognise_any_bytes(
        field in ".{0,12}",
        image in any::<bool>(),
        head in prop::sample::select(HEADS),
        tail in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        let kind = if image { FileKind::Image } else { FileKind::Audio };
        let bytes = [head, &tail[..]].concat();
        match recognise(&field, kind, &bytes) {
            Ok(content_type) => {
                prop_assert!(kind.accepts(content_type));
                prop_assert_eq!(Some(content_type), sniff(&bytes[..bytes.len().min(64)]));
            }
            Err(e) => {
                prop_assert_eq!(e.status.as_u16(), 415);
                prop_assert_eq!(e.detail.param.as_deref(), Some(field.as_str()));
            }
        }
    }

    /// Any field and text: JSON fields take JSON (else a 400 naming the field), every other field its text as is.
    #[test]
    fn props_form_field_values(
        name in prop_oneof![prop::sample::select(JSON_FIELDS).prop_map(str::to_owned), ".{0,10}"],
        text in prop_oneof![".{0,20}", props_json::json(WORDS).prop_map(|v| v.to_string())],
    ) {
        let got = field_value(&name, text.clone());
        if !JSON_FIELDS.contains(&name.as_str()) {
            prop_assert_eq!(got.ok(), Some(Value::String(text)));
        } else {
            match (got, serde_json::from_str::<Value>(&text)) {
                (Ok(value), Ok(expected)) => prop_assert_eq!(value, expected),
                (Err(e), Err(_)) => {
                    prop_assert_eq!(e.status.as_u16(), 400);
                    prop_assert_eq!(e.detail.param.as_deref(), Some(name.as_str()));
                }
                (got, expected) => prop_assert!(false, "{:?} vs {:?}", got.map_err(|e| e.detail), expected),
            }
        }
    }

    /// Well-formed forms, split anywhere: their fields and file, or the refusal they call for (too many parts, a
    /// field twice, bad JSON); the fingerprint does not depend on the boundary.
    #[test]
    fn props_form_well_formed_forms_read_back(
        parts in parts(),
        boundaries in ("[A-Za-z0-9]{8,30}", "[A-Za-z0-9'()+_,./:=?-]{1,40}"),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let (one, two) = boundaries;
        for boundary in [&one, &two] {
            let body = encode(&parts, boundary);
            let delimiter = format!("\r\n--{boundary}");
            prop_assume!(parts.iter().all(|p| match p {
                Part::Field(_, text) => !contains(text.as_bytes(), delimiter.as_bytes()) && !text.starts_with(&delimiter[2..]),
                Part::File { bytes, .. } => !contains(bytes, delimiter.as_bytes()),
            }));
            prop_assume!(!body.is_empty());
        }
        let ct = |b: &str| format!("multipart/form-data; boundary=\"{b}\"");
        let first = read(&request(&ct(&one)), &encode(&parts, &one), &cuts, 1 << 20);
        let second = read(&request(&ct(&two)), &encode(&parts, &two), &[], 1 << 20);
        match (model(&parts), first) {
            (Some((fields, file)), Ok(form)) => {
                prop_assert_eq!(&form.fields, &fields);
                let got = form.file.as_ref().map(|(f, input)| (f.clone(), input.filename.clone(), input.bytes.to_vec()));
                prop_assert_eq!(got, file);
                let second = second.map_err(|e| TestCaseError::fail(format!("{:?}", e.detail)))?;
                prop_assert_eq!(&second.fields, &fields);
                prop_assert_eq!(form.fingerprint, second.fingerprint);
            }
            (None, Err(e)) => {
                client_error(&e)?;
                prop_assert!(second.is_err());
            }
            (expected, got) => prop_assert!(false, "expected {:?}, got {:?}", expected, got.map(|f| f.fields).map_err(|e| e.detail)),
        }
    }

    /// Any bytes under any boundary, or a well-formed form cut short or with bytes changed: a form or a 4xx.
    #[test]
    fn props_form_any_bytes_are_a_form_or_a_4xx(
        parts in parts(),
        boundary in "[A-Za-z0-9_-]{1,20}",
        noise in prop::collection::vec(any::<u8>(), 0..200),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
        which in 0..3u8,
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut body = encode(&parts, &boundary);
        match which {
            0 => body = noise,
            1 => body.truncate(cut.index(body.len() + 1)),
            _ => {
                for (at, byte) in &damage {
                    if !body.is_empty() {
                        let i = at.index(body.len());
                        body[i] = *byte;
                    }
                }
            }
        }
        let req = request(&format!("multipart/form-data; boundary={boundary}"));
        if let Err(e) = read(&req, &body, &cuts, 64) {
            client_error(&e)?;
        }
    }

    /// Any content type at all (visible ASCII): a form or a 4xx.
    #[test]
    fn props_form_any_content_type(content_type in "[ -~]{0,60}", body in prop::collection::vec(any::<u8>(), 0..64)) {
        let req = request(&content_type);
        if let Err(e) = read(&req, &body, &[], 64) {
            client_error(&e)?;
        }
    }
}

/// The minimal inputs `props_form_any_bytes_are_a_form_or_a_4xx` found, both in actix-multipart 0.7.2 (hence 0.8: fixed in 0.8.2
/// and 0.8.0): a body cut off after a field's CRLF never completes (the parser waits for a boundary at EOF), and a
/// one-character boundary with a short first line panics (an out-of-range slice in `skip_until_boundary`).
#[test]
fn props_form_known_multipart_bugs() {
    let cut_off = "--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n";
    let got = read(&request("multipart/form-data; boundary=B"), cut_off.as_bytes(), &[], 64);
    assert_eq!(got.err().map(|e| e.status.as_u16()), Some(400));
    let got = read(&request("multipart/form-data; boundary=a"), b"\n", &[], 64);
    assert_eq!(got.err().map(|e| e.status.as_u16()), Some(400));
}
