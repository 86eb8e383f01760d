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
use serde_json::Value;
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

pub fn most(model: &ModelSpec) -> Credits {
    RealtimeUsage::most(&model.pricing, u64::from(model.context_window), u64::from(model.max_output_tokens))
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
        let mut held: VecDeque<(Billed, Instant)> = VecDeque::new();
        let mut ping = tokio::time::interval(PING_EVERY);
        let mut lifetime = super::Lifetime::new(&self.state);
        let (reason, code) = loop {
            if lifetime.expired() {
                let _ = client.text(error_event("session_expired", "The session reached its time limit")).await;
                break ("expired", CloseCode::Normal);
            }
            tokio::select! {
                frame = from_client.recv() => {
                    lifetime.touch();
                    let step = match frame {
                        Some(Ok(actix_ws::Message::Text(text))) => self.client_frame(text.to_string(), &mut held).await,
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
                        Some(Ok(actix_ws::Message::Close(_))) | None | Some(Err(_)) => break ("client", CloseCode::Normal),
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
                        Some(Ok(Up::Close(_))) | None | Some(Err(_)) => {
                            // A response cut off upstream ends with an error event, never a silent stop.
                            if !held.is_empty() {
                                let cut = error_event(
                                    "upstream_closed",
                                    "The provider closed the session during a response; it was not charged",
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
        // Responses still held were not finished: their holds are released as they drop.
        drop(held);
        let _ = to_upstream.send(Up::Close(None)).await;
        let _ = client.close(Some(actix_ws::CloseReason { code, description: None })).await;
    }

    /// What to do with a client's text frame: forward it (holding a response's cost first), or refuse it.
    async fn client_frame(&self, text: String, held: &mut VecDeque<(Billed, Instant)>) -> Step {
        let Some(kind) = event_type(&text) else {
            return Step::Refuse(error_event("invalid_event", "Every event is a JSON object with a `type`"));
        };
        if kind == "response.create" {
            match self.hold().await {
                Ok(billed) => held.push_back((billed, Instant::now())),
                Err(e) => return Step::Refuse(error_event(e.detail.code, &e.detail.message)),
            }
        }
        Step::Forward(text)
    }

    /// Holds the most one response can cost (the wallet and the session's cap re-checked at each response).
    async fn hold(&self) -> Result<Billed, ApiError> {
        let spec = spec(&self.principal, &self.model);
        Billed::begin(&self.state, &self.req, &spec, spec.new_id(), 0, most).await
    }

    /// Settles the oldest held response at what `response.done` reports it used.
    async fn settle(&self, held: &mut VecDeque<(Billed, Instant)>, text: &str) {
        let Some((mut billed, started)) = held.pop_front() else {
            tracing::warn!("response.done with no response held");
            return;
        };
        let done: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let status = done["response"]["status"].as_str().unwrap_or("completed").to_owned();
        let usage: RealtimeUsage = serde_json::from_value(done["response"]["usage"].clone()).unwrap_or_default();
        let cost = usage.cost(&self.model.pricing);
        let answered = Answered { model: self.model.clone(), attempts: 1, fallback: None, upstream: started.elapsed() };
        let measured = Measured {
            prompt_tokens: usage.input_tokens,
            completion_tokens: usage.output_tokens,
            units: usage.output_token_details.audio_tokens,
            ..Default::default()
        };
        let settled = if status == "completed" {
            billed.settle(&answered, cost, measured).await.map(|_| ())
        } else {
            // Cancelled, incomplete or failed part way: charged for what it used, and said so on the record.
            billed.settle_as(&answered, cost, measured, "cut", Outcome::Success).await.map(|_| ())
        };
        if let Err(e) = settled {
            tracing::warn!(error = %e.detail.message, "could not settle a realtime response");
        }
    }
}
