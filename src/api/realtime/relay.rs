//! The relay: client frames go upstream and upstream frames come back as they arrive, with only each event's `type`
//! peeked. Each `response.create` holds the most a response can cost first (refused with an `error` event, and not
//! sent upstream, when the wallet or the session's cap cannot cover it), and each `response.done` settles one
//! response at what its `usage` says: one usage record per response. Both legs are pinged; a leg that closes or
//! fails closes the other, and responses still held are released, never charged twice.

use super::error_event;
use crate::api::call::{Answered, Billed, CallSpec, Measured};
use crate::api::errors::ApiError;
use crate::auth::Principal;
use crate::state::AppState;
use actix_web::{web, HttpRequest};
use actix_ws::CloseCode;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use switchyard_actors::engine::pool::Outcome;
use switchyard_actors::engine::session::Permit;
use switchyard_actors::realtime::RealtimeUsage;
use switchyard_actors::{Credits, ModelSpec};
use tokio_tungstenite::tungstenite::Message as Up;

type Upstream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const PING_EVERY: Duration = Duration::from_secs(20);
/// A client that does not take an event for this long is a slow consumer.
const SLOW_CONSUMER: Duration = Duration::from_secs(5);

/// The fewest output tokens worth a response: a wallet that covers fewer is refused.
const FEWEST_TOKENS: u64 = 16;
/// Bytes of an audio delta event besides its base64 payload.
const EVENT_OVERHEAD: usize = 160;

/// Milliseconds of PCM16 at 24 kHz in an event of `frame` bytes (base64 payload: 4 characters for 3 bytes).
fn audio_ms(frame: usize) -> u64 {
    (frame.saturating_sub(EVENT_OVERHEAD) as u64 * 3 / 4) / 48
}

/// A response held: its bill, when it began, and what the relay saw of it.
struct Held {
    billed: Billed,
    started: Instant,
    streamed: Streamed,
}

#[derive(Default)]
struct Streamed {
    input_ms: u64,
    audio_out_ms: u64,
    text_chars: u64,
}

impl Held {
    /// Notes an upstream event of this response: audio and text deltas, measured by their size.
    fn saw(&mut self, text: &str) {
        if text.contains("output_audio.delta") {
            self.streamed.audio_out_ms += audio_ms(text.len());
        } else if text.contains("transcript.delta") || text.contains("output_text.delta") {
            let event: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            self.streamed.text_chars += event["delta"].as_str().map_or(0, |d| d.chars().count() as u64);
        }
    }
}

/// What a client's frame leads to.
enum Step {
    Forward(String),
    Refuse(String),
    Nothing,
}

pub struct Relay {
    pub state: web::Data<AppState>,
    pub req: HttpRequest,
    pub principal: Principal,
    pub model: ModelSpec,
    /// The session's concurrency slot, held while the socket is open.
    pub _permit: Permit,
}

/// The least a response can be held for: its whole context in, the fewest output tokens worth a response out.
pub fn least(model: &ModelSpec) -> Credits {
    RealtimeUsage::most(&model.pricing, u64::from(model.context_window), FEWEST_TOKENS)
}

fn spec<'a>(principal: &'a Principal, model: &'a ModelSpec) -> CallSpec<'a> {
    CallSpec {
        principal,
        model,
        use_fallback: false,
        reporting_group: None,
        endpoint: "/v1/realtime",
        id_prefix: "rt",
        started: Instant::now(),
        task: None,
    }
}

/// The `type` of an event, if the frame is a JSON object with one.
fn event_type(text: &str) -> Option<String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map.get("type").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

impl Relay {
    pub async fn run(
        self,
        mut client: actix_ws::Session,
        mut from_client: actix_ws::MessageStream,
        upstream: Upstream,
    ) {
        let _open = crate::metrics::StreamGauge::new(&self.state.metrics.realtime_open);
        let (mut to_upstream, mut from_upstream) = upstream.split();
        let mut held: VecDeque<Held> = VecDeque::new();
        let mut ping = tokio::time::interval(PING_EVERY);
        let mut lifetime = super::Lifetime::new(&self.state);
        // Input audio appended since the last response was asked for (for the estimate of a response cut off).
        let mut pending_input_ms = 0u64;
        // A close frame of the provider's, passed on to the client as it came.
        let mut passed: Option<actix_ws::CloseReason> = None;
        let (reason, code) = loop {
            if lifetime.expired() {
                let _ = client.text(error_event("session_expired", "The session reached its time limit")).await;
                break ("expired", CloseCode::Normal);
            }
            tokio::select! {
                frame = from_client.recv() => {
                    lifetime.touch();
                    let step = match frame {
                        Some(Ok(actix_ws::Message::Text(text))) => self.client_frame(text.to_string(), &mut held, &mut pending_input_ms).await,
                        Some(Ok(actix_ws::Message::Binary(_))) => Step::Refuse(error_event(
                            "invalid_event",
                            "Binary frames are not part of the protocol: send JSON events",
                        )),
                        Some(Ok(actix_ws::Message::Ping(bytes))) => {
                            if client.pong(&bytes).await.is_err() {
                                break ("client", CloseCode::Normal);
                            }
                            Step::Nothing
                        }
                        Some(Ok(actix_ws::Message::Close(_))) | None => break ("client", CloseCode::Normal),
                        Some(Err(e)) => {
                            // A frame over the limit, or broken framing: said, then closed (the stream cannot go on).
                            let _ = client.text(error_event("invalid_frame", &format!("The frame was refused: {e}"))).await;
                            break ("client", CloseCode::Size);
                        }
                        Some(Ok(_)) => Step::Nothing,
                    };
                    match step {
                        Step::Forward(text) => {
                            if to_upstream.send(Up::text(text)).await.is_err() {
                                break ("upstream", CloseCode::Error);
                            }
                        }
                        Step::Refuse(event) => {
                            if client.text(event).await.is_err() {
                                break ("client", CloseCode::Normal);
                            }
                        }
                        Step::Nothing => {}
                    }
                }
                frame = from_upstream.next() => {
                    lifetime.touch();
                    match frame {
                        Some(Ok(Up::Text(text))) => {
                            if text.contains("\"response.done\"") && event_type(&text).as_deref() == Some("response.done") {
                                self.settle(&mut held, &text).await;
                            } else if let Some(front) = held.front_mut() {
                                front.saw(&text);
                            }
                            // A client that falls this far behind is told and closed (1013), never buffered for.
                            match tokio::time::timeout(SLOW_CONSUMER, client.text(text.as_str().to_owned())).await {
                                Ok(Ok(())) => {}
                                Ok(Err(_)) => break ("client", CloseCode::Normal),
                                Err(_) => break ("slow_consumer", CloseCode::Again),
                            }
                        }
                        Some(Ok(Up::Ping(bytes))) => {
                            if to_upstream.send(Up::Pong(bytes)).await.is_err() {
                                break ("upstream", CloseCode::Error);
                            }
                        }
                        Some(Ok(Up::Close(frame))) if held.is_empty() => {
                            // The provider ended the session between responses: its close code is passed on.
                            passed = frame.map(|f| actix_ws::CloseReason {
                                code: u16::from(f.code).into(),
                                description: Some(f.reason.to_string()).filter(|r| !r.is_empty()),
                            });
                            break ("upstream", CloseCode::Normal);
                        }
                        Some(Ok(Up::Close(_))) | None | Some(Err(_)) => {
                            // A response cut off upstream ends with an error event, never a silent stop.
                            if !held.is_empty() {
                                let cut = error_event(
                                    "upstream_closed",
                                    "The provider closed the session during a response; it is charged for what was streamed",
                                );
                                let _ = client.text(cut).await;
                            }
                            break ("upstream", CloseCode::Error);
                        }
                        Some(Ok(_)) => {}
                    }
                }
                _ = ping.tick() => {
                    if client.ping(b"").await.is_err() {
                        break ("client", CloseCode::Normal);
                    }
                    if to_upstream.send(Up::Ping(Vec::new().into())).await.is_err() {
                        break ("upstream", CloseCode::Error);
                    }
                }
            }
        };
        lifetime.close(&self.state, reason);
        // A response under way when the session ended is charged for what was streamed; those not begun are released.
        if let Some(front) = held.pop_front() {
            self.settle_cut(front).await;
        }
        drop(held);
        let _ = to_upstream.send(Up::Close(None)).await;
        let _ = client.close(passed.or(Some(actix_ws::CloseReason { code, description: None }))).await;
    }

    /// What to do with a client's text frame: forward it (holding a response's cost first), or refuse it.
    async fn client_frame(&self, text: String, held: &mut VecDeque<Held>, pending_input_ms: &mut u64) -> Step {
        let Some(kind) = event_type(&text) else {
            return Step::Refuse(error_event("invalid_event", "Every event is a JSON object with a `type`"));
        };
        match kind.as_str() {
            "input_audio_buffer.append" => *pending_input_ms += audio_ms(text.len()),
            "input_audio_buffer.clear" => *pending_input_ms = 0,
            "response.create" => match self.hold(&text).await {
                Ok((billed, text)) => {
                    let streamed = Streamed { input_ms: std::mem::take(pending_input_ms), ..Default::default() };
                    held.push_back(Held { billed, started: Instant::now(), streamed });
                    return Step::Forward(text);
                }
                Err(e) => return Step::Refuse(error_event(e.detail.code, &e.detail.message)),
            },
            _ => {}
        }
        Step::Forward(text)
    }

    /// Holds what one response can cost (the wallet and the session's cap re-checked at each response). When the
    /// wallet cannot cover the response's whole output allowance, `max_output_tokens` is clamped to what it covers
    /// and the event is sent on with it; a wallet that covers too few tokens is refused.
    async fn hold(&self, text: &str) -> Result<(Billed, String), ApiError> {
        let pricing = &self.model.pricing;
        let context = u64::from(self.model.context_window);
        let mut event: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let asked = event.pointer("/response/max_output_tokens").and_then(Value::as_u64);
        let allowance = asked.unwrap_or(u64::MAX).min(u64::from(self.model.max_output_tokens));
        let available = super::wallet_available(&self.state, &self.principal.workspace_id).await.milli();
        let input = RealtimeUsage::most(pricing, context, 0).milli();
        let per_1k = RealtimeUsage::most(pricing, 0, 1000).milli().max(1);
        let covered = u64::try_from(available - input).map_or(0, |left| left.saturating_mul(1000) / per_1k as u64);
        let mut text = text.to_owned();
        let output = if covered < allowance {
            if covered < FEWEST_TOKENS {
                return Err(ApiError::insufficient_credits());
            }
            if let Some(response) = event.as_object_mut().map(|e| e.entry("response").or_insert_with(|| json!({}))) {
                response["max_output_tokens"] = json!(covered);
            }
            text = event.to_string();
            covered
        } else {
            allowance
        };
        let spec = spec(&self.principal, &self.model);
        let cost = |m: &ModelSpec| RealtimeUsage::most(&m.pricing, u64::from(m.context_window), output);
        let billed = Billed::begin(&self.state, &self.req, &spec, spec.new_id(), 0, cost).await?;
        Ok((billed, text))
    }

    /// Charges a held response for `usage`, with `status` on its record.
    async fn charge(&self, mut billed: Billed, started: Instant, usage: RealtimeUsage, status: &str, outcome: Outcome) {
        let cost = usage.cost(&self.model.pricing);
        let answered = Answered { model: self.model.clone(), attempts: 1, fallback: None, upstream: started.elapsed() };
        let measured = Measured {
            prompt_tokens: usage.input_tokens,
            completion_tokens: usage.output_tokens,
            units: usage.output_token_details.audio_tokens,
            ..Default::default()
        };
        if let Err(e) = billed.settle_as(&answered, cost, measured, status, outcome).await {
            tracing::warn!(error = %e.detail.message, status, "could not settle a realtime response");
        }
    }

    /// Charges a response that never reached its `response.done` for what the relay saw streamed.
    async fn settle_cut(&self, held: Held) {
        let Held { billed, started, streamed } = held;
        let usage = RealtimeUsage::estimate(streamed.input_ms, streamed.audio_out_ms, streamed.text_chars);
        self.charge(billed, started, usage, "cut", Outcome::Failure).await;
    }

    /// Settles the oldest held response at what `response.done` reports it used.
    async fn settle(&self, held: &mut VecDeque<Held>, text: &str) {
        let Some(Held { billed, started, .. }) = held.pop_front() else {
            tracing::warn!("response.done with no response held");
            return;
        };
        let done: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let usage: RealtimeUsage = serde_json::from_value(done["response"]["usage"].clone()).unwrap_or_default();
        // Cancelled, incomplete or failed part way: charged for what it used, and said so on the record.
        let status =
            if done["response"]["status"].as_str().unwrap_or("completed") == "completed" { "ok" } else { "cut" };
        self.charge(billed, started, usage, status, Outcome::Success).await;
    }
}
