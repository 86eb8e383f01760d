//! An incremental Server-Sent Events decoder: bytes in, events out, however the bytes were split.

use crate::error::ProviderError;
use bytes::{Buf, Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Accumulates bytes and hands out complete events.
#[derive(Default)]
pub struct SseDecoder {
    buffer: BytesMut,
    /// How far the buffer is known to hold no boundary (a large event arriving in pieces is scanned once).
    scanned: usize,
}

impl SseDecoder {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete event, if the buffer holds one. Events without data (comments, keep-alives) are skipped.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            // A boundary may straddle what was scanned and what came since: step back over its first bytes.
            let from = self.scanned.saturating_sub(3);
            let Some((end, sep)) = find_boundary(&self.buffer[from..]).map(|(end, sep)| (from + end, sep)) else {
                self.scanned = self.buffer.len();
                return None;
            };
            self.scanned = 0;
            let block = self.buffer.split_to(end);
            self.buffer.advance(sep);
            if let Some(event) = parse_block(&block) {
                return Some(event);
            }
        }
    }

    /// Bytes held that are not yet a whole event.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    /// Whether anything but whitespace is left over (an event cut off part way).
    pub fn has_partial(&self) -> bool {
        self.buffer.iter().any(|b| !b.is_ascii_whitespace())
    }
}

fn find_boundary(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buf.len() {
        match (buf[i], buf[i + 1]) {
            (b'\n', b'\n') => return Some((i, 2)),
            (b'\r', b'\n') if buf.get(i + 2..i + 4) == Some(b"\r\n") => return Some((i, 4)),
            (b'\r', b'\r') => return Some((i, 2)),
            _ => i += 1,
        }
    }
    None
}

fn parse_block(block: &[u8]) -> Option<SseEvent> {
    let text = String::from_utf8_lossy(block);
    let mut event = SseEvent::default();
    let mut has_data = false;
    for line in text.split(['\n', '\r']) {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event.event = Some(value.to_owned()),
            "data" => {
                if has_data {
                    event.data.push('\n');
                }
                event.data.push_str(value);
                has_data = true;
            }
            _ => {}
        }
    }
    has_data.then_some(event)
}

/// Turns a chunk stream into an event stream. A body that ends in the middle of an event is an error, and so is
/// an event larger than `max_event_bytes` (it is not held in memory beyond that).
pub fn events(
    chunks: BoxStream<'static, Result<Bytes, ProviderError>>,
    provider: String,
    max_event_bytes: usize,
) -> BoxStream<'static, Result<SseEvent, ProviderError>> {
    futures::stream::unfold(Some((chunks, SseDecoder::default())), move |state| {
        let provider = provider.clone();
        async move {
            let (mut chunks, mut decoder) = state?;
            loop {
                if let Some(event) = decoder.next_event() {
                    return Some((Ok(event), Some((chunks, decoder))));
                }
                // What is held now is one event still arriving.
                if decoder.pending() > max_event_bytes {
                    let message = format!("the upstream sent more than {max_event_bytes} bytes in one event");
                    return Some((Err(ProviderError::Protocol { provider, message }), None));
                }
                match chunks.next().await {
                    Some(Ok(chunk)) => decoder.push(&chunk),
                    Some(Err(e)) => return Some((Err(e), None)),
                    None if decoder.has_partial() => {
                        let message = "stream ended in the middle of an event".to_owned();
                        return Some((Err(ProviderError::Connection { provider, message }), None));
                    }
                    None => return None,
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], split: usize) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::default();
        let mut out = Vec::new();
        for piece in input.chunks(split) {
            decoder.push(piece);
            while let Some(event) = decoder.next_event() {
                out.push(event);
            }
        }
        out
    }

    #[test]
    fn decodes_events_however_the_bytes_are_split() {
        let input = b"event: message_start\ndata: {\"a\":1}\n\n: keep-alive\n\ndata: x\ndata: y\n\ndata: [DONE]\n\n";
        for split in [1, 2, 3, 7, 1000] {
            let events = decode_all(input, split);
            assert_eq!(events.len(), 3, "split {split}");
            assert_eq!(events[0].event.as_deref(), Some("message_start"));
            assert_eq!(events[0].data, "{\"a\":1}");
            assert_eq!(events[1].data, "x\ny");
            assert_eq!(events[2].data, "[DONE]");
        }
    }

    #[test]
    fn handles_crlf_framing() {
        for split in [1, 2, 3, 5, 100] {
            let events = decode_all(b"data: one\r\n\r\ndata: two\r\n\r\n", split);
            assert_eq!(events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(), ["one", "two"], "split {split}");
        }
    }

    fn chunked(input: &'static [u8], split: usize) -> BoxStream<'static, Result<Bytes, ProviderError>> {
        futures::stream::iter(input.chunks(split).map(|c| Ok(Bytes::from_static(c)))).boxed()
    }

    #[tokio::test]
    async fn an_event_past_the_bound_is_an_error_not_memory() {
        let big: &'static [u8] =
            Box::leak(format!("data: {}\n\ndata: after\n\n", "x".repeat(5000)).into_bytes().into());
        let got: Vec<_> = events(chunked(big, 64), "p".into(), 1000).collect().await;
        assert_eq!(got.len(), 1);
        assert!(matches!(&got[0], Err(ProviderError::Protocol { message, .. }) if message.contains("1000 bytes")));
        // Many small events in one chunk, together past the bound: each is whole and within it.
        let burst: &'static [u8] = Box::leak("data: 0123456789\n\n".repeat(100).into_bytes().into());
        let got: Vec<_> = events(chunked(burst, burst.len()), "p".into(), 100).collect().await;
        assert_eq!(got.iter().filter(|e| e.is_ok()).count(), 100);
        // The same stream under a bound it fits: both events, whole.
        let got: Vec<_> = events(chunked(big, 64), "p".into(), 10_000).collect().await;
        let data: Vec<_> = got.into_iter().map(|e| e.map(|e| e.data.len())).collect::<Result<_, _>>().unwrap();
        assert_eq!(data, [5000, 5]);
    }

    #[test]
    fn reports_a_partial_event() {
        let mut decoder = SseDecoder::default();
        decoder.push(b"data: {\"cut");
        assert!(decoder.next_event().is_none());
        assert!(decoder.has_partial());
    }
}

#[cfg(test)]
#[path = "sse_props.rs"]
mod props;
