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
}

impl SseDecoder {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete event, if the buffer holds one. Events without data (comments, keep-alives) are skipped.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let (end, sep) = find_boundary(&self.buffer)?;
            let block = self.buffer.split_to(end);
            self.buffer.advance(sep);
            if let Some(event) = parse_block(&block) {
                return Some(event);
            }
        }
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

/// Turns a chunk stream into an event stream. A body that ends in the middle of an event is an error.
pub fn events(
    chunks: BoxStream<'static, Result<Bytes, ProviderError>>,
    provider: String,
) -> BoxStream<'static, Result<SseEvent, ProviderError>> {
    futures::stream::unfold(Some((chunks, SseDecoder::default())), move |state| {
        let provider = provider.clone();
        async move {
            let (mut chunks, mut decoder) = state?;
            loop {
                if let Some(event) = decoder.next_event() {
                    return Some((Ok(event), Some((chunks, decoder))));
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
        let events = decode_all(b"data: one\r\n\r\ndata: two\r\n\r\n", 3);
        assert_eq!(events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(), ["one", "two"]);
    }

    #[test]
    fn reports_a_partial_event() {
        let mut decoder = SseDecoder::default();
        decoder.push(b"data: {\"cut");
        assert!(decoder.next_event().is_none());
        assert!(decoder.has_partial());
    }
}
