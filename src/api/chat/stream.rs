//! A streamed chat: the SSE body, and the bill that settles it once however the stream ends.

use super::wire::{frame, Chunk, ChunkChoice, Delta, UsageOut};
use super::{Delivery, Face};
use crate::api::call::{upstream_error, Billed, Measured, Metadata};
use crate::api::errors::ApiError;
use crate::metrics::StreamGauge;
use crate::state::AppState;
use actix_web::web;
use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use std::convert::Infallible;
use switchyard_actors::engine::call::Answered;
use switchyard_actors::engine::pool::Outcome;
use switchyard_actors::{ChatEvent, ChatStream, Credits, ProviderError, Usage};

/// Frames already made wait for at most this much more before they are handed on together.
const COALESCE_BYTES: usize = 16 * 1024;

/// A stream's bill. However the stream ends, the call is settled once: for the whole answer when it finishes,
/// for what was delivered when it breaks, and, if the client leaves (the stream is dropped), by `Drop`.
pub struct StreamBill {
    billed: Billed,
    answered: Answered,
    prompt_estimate: u64,
    delivered: String,
    deltas: u64,
}

impl StreamBill {
    pub(super) fn new(billed: Billed, answered: Answered, prompt_estimate: u64) -> Self {
        StreamBill { billed, answered, prompt_estimate, delivered: String::new(), deltas: 0 }
    }

    /// Notes text that reached the client.
    pub fn delivered(&mut self, text: &str) {
        self.delivered.push_str(text);
        self.deltas += 1;
    }

    /// The usage so far when the stream did not finish: the prompt estimate and what reached the client.
    pub fn partial_usage(&self) -> Usage {
        let completion = self.deltas.max(switchyard_actors::chat::estimate_tokens(&self.delivered));
        Usage { prompt_tokens: self.prompt_estimate, completion_tokens: completion }
    }

    /// The cost and the counts of `usage`, priced by the model that answered.
    fn charge(&self, usage: Usage) -> (Credits, Measured) {
        let cost = self.answered.model.pricing.cost(usage.prompt_tokens, usage.completion_tokens);
        let measured = Measured {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            output_bytes: self.delivered.len() as u64,
            ..Default::default()
        };
        (cost, measured)
    }

    /// Settles `usage` and answers the response's metadata (or why the ledger failed).
    pub async fn settle(&mut self, usage: Usage, status: &str, outcome: Outcome) -> Result<Metadata, ApiError> {
        let (cost, measured) = self.charge(usage);
        self.billed.settle_as(&self.answered, cost, measured, status, outcome).await
    }
}

impl StreamBill {
    /// The usage record's id.
    pub fn id(&self) -> &str {
        self.billed.id()
    }
}

impl Drop for StreamBill {
    fn drop(&mut self) {
        let (cost, measured) = self.charge(self.partial_usage());
        self.billed.settle_detached(cost, measured, "abandoned", Outcome::Neutral);
    }
}

/// The SSE body: a role chunk, one chunk per delta, the finishing chunk with usage and metadata, then `[DONE]`.
/// A failure part way sends one error frame and ends without `[DONE]`. If the client leaves, this stream is
/// dropped, and with it the upstream request; the bill is settled for what was generated.
#[allow(clippy::too_many_arguments)]
pub(super) fn sse_body(
    state: web::Data<AppState>,
    face: Face,
    model: String,
    first: ChatEvent,
    mut events: ChatStream,
    delivery: Delivery,
    mut billing: StreamBill,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
    async_stream::stream! {
        let _in_flight = StreamGauge::new(&state.metrics.streams_in_flight);
        // The stream's id is its usage record's id.
        let id = billing.billed.id().to_owned();
        let created = crate::clock::now_unix();
        let chunk = |choices: &[ChunkChoice<'_>], usage: Option<UsageOut>, metadata: Option<&Metadata>| {
            frame(&Chunk { id: &id, object: face.chunk_object(), created, model: &model, choices, usage, metadata })
        };
        let role = ChunkChoice { index: 0, delta: Delta { role: Some("assistant"), content: Some("") }, finish_reason: None };
        yield Ok(chunk(&[role], None, None));
        let ended = || Err(ProviderError::Connection {
            provider: model.clone(),
            message: "stream ended without finishing".into(),
        });
        // Deltas the upstream has already sent are framed into one write (one syscall, not one each); a delta is
        // never held back waiting for the next. The texts count as delivered when their frames are handed on.
        let mut out = BytesMut::new();
        let mut held: Vec<String> = Vec::new();
        let mut next = Some(Ok(first));
        loop {
            // What is framed goes out before waiting, and before anything that is not a delta.
            if !out.is_empty() && !matches!(next, Some(Ok(ChatEvent::Delta(_)))) {
                held.drain(..).for_each(|text| billing.delivered(&text));
                yield Ok(out.split().freeze());
            }
            let event = match next.take() {
                Some(event) => event,
                None => events.next().await.unwrap_or_else(ended),
            };
            match event {
                Ok(ChatEvent::Delta(text)) => {
                    let choice = ChunkChoice { index: 0, delta: Delta { role: None, content: Some(&text) }, finish_reason: None };
                    out.extend_from_slice(&chunk(&[choice], None, None));
                    held.push(text);
                    if out.len() < COALESCE_BYTES {
                        next = events.next().now_or_never().map(|ready| ready.unwrap_or_else(ended));
                    }
                }
                Ok(ChatEvent::Finish { reason, usage }) => {
                    state.metrics.record_tokens(&model, &usage);
                    let metadata = match billing.settle(usage, "ok", Outcome::Success).await {
                        Ok(metadata) => metadata,
                        Err(error) => {
                            yield Ok(frame(&error.body()));
                            break;
                        }
                    };
                    let done = ChunkChoice { index: 0, delta: Delta { role: None, content: None }, finish_reason: Some(reason.as_str()) };
                    if delivery.usage_chunk {
                        yield Ok(chunk(&[done], None, None));
                        yield Ok(chunk(&[], Some(usage.into()), Some(&metadata)));
                    } else {
                        yield Ok(chunk(&[done], Some(usage.into()), Some(&metadata)));
                    }
                    yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
                    break;
                }
                Err(e) => {
                    let usage = billing.partial_usage();
                    let _ = billing.settle(usage, "cut", Outcome::Failure).await;
                    let error = upstream_error(&state, e);
                    yield Ok(frame(&error.body()));
                    break;
                }
            }
        }
    }
}
