//! ElevenLabs' own WebSocket protocols, relayed for apps built on its SDKs: text to speech
//! `GET /v1/text-to-speech/{voice_id}/stream-input` and realtime speech to text `GET /v1/speech-to-text/realtime`.
//! The caller authenticates with the gateway's credentials (an API key as `xi-api-key`, `Authorization` or
//! `X-API-Key`; a session token as Bearer or `?token=`) before the upgrade; upstream the gateway's ElevenLabs key is
//! used. Frames pass as they come; the client's are read only to count what is billed: characters of text (speech)
//! and seconds of audio (transcription). Billing goes in blocks: a block's cost is held before the frames that use
//! it are forwarded, and settled (one usage record each) when full or when the socket ends, so the wallet is never
//! overspent and nothing is charged twice (`meter.rs`). A wallet that cannot cover the next block ends the socket
//! with an error message and close code 1008.

use super::meter::{Meter, Unit};
use super::{error_event, upgrade, MAX_FRAME};
use crate::api::errors::{ApiError, ErrorBody};
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::CloseCode;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use switchyard_actors::catalogue::Modality;
use switchyard_actors::engine::session::Permit;
use switchyard_actors::ModelSpec;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as Up;

/// Characters of text one speech block holds.
const SPEECH_BLOCK: u64 = 2_000;
/// Milliseconds of audio one transcription block holds.
const TRANSCRIPTION_BLOCK: u64 = 60_000;
const PING_EVERY: Duration = Duration::from_secs(20);
const SLOW_CONSUMER: Duration = Duration::from_secs(5);

/// Which protocol, and how its client frames are measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Characters of `text`.
    Speech,
    /// Milliseconds of `audio_base_64` at the session's `audio_format` (bytes per millisecond).
    Transcription { bytes_per_ms: u64 },
}

impl Kind {
    fn block(self) -> u64 {
        match self {
            Kind::Speech => SPEECH_BLOCK,
            Kind::Transcription { .. } => TRANSCRIPTION_BLOCK,
        }
    }

    fn unit(self) -> Unit {
        match self {
            Kind::Speech => Unit::Characters,
            Kind::Transcription { .. } => Unit::AudioMillis,
        }
    }

    /// What a client message uses (and whether it is JSON at all).
    fn measure(self, text: &str) -> Option<u64> {
        let message: Value = serde_json::from_str(text).ok()?;
        match self {
            Kind::Speech => {
                Some(message.get("text").and_then(Value::as_str).map_or(0, |t| t.trim().chars().count() as u64))
            }
            Kind::Transcription { bytes_per_ms } => {
                let audio = message.get("audio_base_64").and_then(Value::as_str).unwrap_or_default();
                let padding = audio.bytes().rev().take_while(|b| *b == b'=').count();
                let bytes = (audio.len() / 4 * 3).saturating_sub(padding) as u64;
                Some(bytes.div_ceil(bytes_per_ms.max(1)))
            }
        }
    }
}

/// Bytes per millisecond of an ElevenLabs `audio_format` (`pcm_16000` by default; `ulaw_8000`).
fn bytes_per_ms(format: &str) -> Result<u64, ApiError> {
    match format {
        "ulaw_8000" => Ok(8),
        _ => match format.strip_prefix("pcm_").and_then(|r| r.parse::<u64>().ok()) {
            Some(rate @ (8000 | 16000 | 22050 | 24000 | 44100 | 48000)) => Ok((rate * 2).div_ceil(1000)),
            _ => Err(ApiError::invalid_field(
                "audio_format",
                format!("`audio_format` {format} is not one ElevenLabs takes"),
            )),
        },
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(crate::api::resource("/v1/text-to-speech/{voice_id}/stream-input").route(web::get().to(speech)));
    cfg.service(crate::api::resource("/v1/speech-to-text/realtime").route(web::get().to(transcription)));
}

/// The query, with the caller's `token` taken out and `model_id` set to the model's upstream id.
fn upstream_query(req: &HttpRequest, model: &ModelSpec) -> String {
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .filter(|(k, _)| k != "token" && k != "model_id")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.push(("model_id".into(), model.upstream.clone()));
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

fn query_value(req: &HttpRequest, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The catalogue model a socket is billed as: the ElevenLabs model whose upstream id (or name) the client named in
/// `model_id`, else the configured one. An id the catalogue does not price is refused, naming those it does.
fn model_for(state: &AppState, req: &HttpRequest, modality: Modality, default: &str) -> Result<ModelSpec, ApiError> {
    let ours = |m: &&ModelSpec| m.modality == modality && m.provider == "elevenlabs";
    let socket_model = state.catalogue.models.values().find(ours).filter(|_| modality == Modality::Realtime);
    let default = socket_model.map_or(default, |m| m.name.as_str());
    let model = match query_value(req, "model_id") {
        Some(id) => {
            state.catalogue.models.values().filter(ours).find(|m| m.upstream == id || m.name == id).ok_or_else(
                || {
                    let known: Vec<&str> =
                        state.catalogue.models.values().filter(ours).map(|m| m.upstream.as_str()).collect();
                    ApiError::unsupported_model(&id)
                        .with_message(format!("model_id `{id}` is not one the gateway prices: {}", known.join(", ")))
                },
            )?
        }
        None => state.catalogue.model(default).ok_or_else(|| ApiError::unsupported_model(default))?,
    };
    if let Some(reason) = state.unavailable_reason(model) {
        return Err(ApiError::provider_unavailable(reason));
    }
    Ok(model.clone())
}

/// ElevenLabs' text-to-speech WebSocket, relayed; billed per character sent.
#[utoipa::path(get, path = "/v1/text-to-speech/{voice_id}/stream-input", tag = "realtime",
    params(("voice_id" = String, Path), ("model_id" = Option<String>, Query), ("output_format" = Option<String>, Query)),
    responses(crate::api::docs::SocketUpgrade,
        (status = 400, description = "unsupported_model (model_id), invalid_field (audio_format)", body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn speech(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
    voice: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let model = model_for(&state, &req, Modality::Speech, &state.config.realtime.text_to_speech)?;
    let path = format!("/v1/text-to-speech/{}/stream-input", voice.into_inner());
    open(state, req, body, model, Kind::Speech, path).await
}

/// ElevenLabs' realtime speech-to-text WebSocket, relayed; billed per second of audio sent.
#[utoipa::path(get, path = "/v1/speech-to-text/realtime", tag = "realtime",
    params(("model_id" = Option<String>, Query), ("audio_format" = Option<String>, Query)),
    responses(crate::api::docs::SocketUpgrade,
        (status = 400, description = "unsupported_model (model_id), invalid_field (audio_format)", body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn transcription(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // Billed as the catalogue's ElevenLabs realtime (socket) transcription model.
    let model = model_for(&state, &req, Modality::Realtime, &state.config.realtime.speech_to_text)?;
    let format = query_value(&req, "audio_format").unwrap_or_else(|| "pcm_16000".into());
    let kind = Kind::Transcription { bytes_per_ms: bytes_per_ms(&format)? };
    open(state, req, body, model, kind, "/v1/speech-to-text/realtime".into()).await
}

/// Authenticates, admits (one concurrent request while open), holds the first block, connects upstream, upgrades.
async fn open(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
    model: ModelSpec,
    kind: Kind,
    path: String,
) -> Result<HttpResponse, ApiError> {
    let offered = super::subprotocols(&req);
    let mut principal = super::principal(&state, &req, &offered)?;
    if !principal.may_run(&model.name) {
        return Err(ApiError::model_not_allowed(&model.name));
    }
    let permit = crate::api::limits::admit(&state, &req, &principal).await?;
    principal.holds_slot = true;
    let mut meter = Meter::begin(&state, &req, &principal, &model, kind.unit(), kind.block()).await?;
    let provider = state.providers.for_model(&model).ok_or_else(|| ApiError::unsupported_model(&model.name))?;
    let (base, key) = provider.socket_target().ok_or_else(|| ApiError::unsupported_model(&model.name))?;
    let url = format!("{}{path}?{}", super::socket_base(&base), upstream_query(&req, &model));
    let mut request = url.into_client_request().map_err(|e| ApiError::internal(format!("upstream URL: {e}")))?;
    if let Some(key) = key {
        let value = tokio_tungstenite::tungstenite::http::HeaderValue::from_str(&key)
            .map_err(|_| ApiError::internal("the provider key is not a valid header"))?;
        request.headers_mut().insert("xi-api-key", value);
    }
    // A socket that never opens leaves a free `error` record (for error rates), not a free `ok` one.
    let opened = match switchyard_actors::providers::connect_socket(request).await {
        Ok((upstream, _)) => upgrade(&req, body, &offered).map(|accepted| (upstream, accepted)),
        Err(e) => Err(super::refused_upstream(&model, e)),
    };
    let (upstream, (response, session, stream)) = opened.inspect_err(|_| meter.release("error"))?;
    let relay = Relay { state: state.clone(), meter, kind, _permit: permit };
    actix_web::rt::spawn(relay.run(session, stream.max_frame_size(MAX_FRAME), upstream));
    Ok(response)
}

struct Relay {
    state: web::Data<AppState>,
    meter: Meter,
    kind: Kind,
    _permit: Permit,
}

type Upstream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// ElevenLabs' error message shape, for what the gateway itself refuses.
fn refusal(kind: Kind, code: &str, message: &str) -> String {
    match kind {
        Kind::Speech => serde_json::json!({"message": message, "error": code, "code": 1008}).to_string(),
        Kind::Transcription { .. } => {
            serde_json::json!({"message_type": "error", "error": message, "code": code}).to_string()
        }
    }
}

impl Relay {
    async fn run(
        mut self,
        mut client: actix_ws::Session,
        mut from_client: actix_ws::MessageStream,
        upstream: Upstream,
    ) {
        let _open = crate::metrics::StreamGauge::new(&self.state.metrics.realtime_open);
        let (mut to_upstream, mut from_upstream) = upstream.split();
        let mut lifetime = super::Lifetime::new(&self.state);
        let mut ping = tokio::time::interval(PING_EVERY);
        let kind = self.kind;
        let (reason, close) = loop {
            if lifetime.expired() {
                let _ = client.text(refusal(kind, "session_expired", "The session reached its time limit")).await;
                break ("expired", Some(actix_ws::CloseReason { code: CloseCode::Normal, description: None }));
            }
            tokio::select! {
                frame = from_client.recv() => {
                    lifetime.touch();
                    match frame {
                        Some(Ok(actix_ws::Message::Text(text))) => {
                            let Some(units) = kind.measure(&text) else {
                                let _ = client.text(refusal(kind, "invalid_input_message", "Every message is a JSON object")).await;
                                continue;
                            };
                            if let Err(e) = self.meter.take(units).await {
                                let _ = client.text(refusal(kind, e.detail.code, &e.detail.message)).await;
                                break ("client", Some(actix_ws::CloseReason { code: CloseCode::Policy, description: Some(e.detail.code.into()) }));
                            }
                            if let Kind::Transcription { .. } = kind {
                                self.state.metrics.realtime_audio_seconds.with_label_values(&["in"]).inc_by(units as f64 / 1000.0);
                            }
                            if to_upstream.send(Up::text(without_key(&text))).await.is_err() {
                                break ("upstream", Some(actix_ws::CloseReason { code: CloseCode::Error, description: None }));
                            }
                        }
                        Some(Ok(actix_ws::Message::Binary(_))) => {
                            let _ = client.text(error_event("invalid_event", "Binary frames are not part of the protocol")).await;
                        }
                        Some(Ok(actix_ws::Message::Ping(bytes))) => {
                            let _ = client.pong(&bytes).await;
                        }
                        Some(Ok(actix_ws::Message::Close(reason))) => {
                            let code = reason.as_ref().map_or(1000, |r| u16::from(r.code));
                            let _ = to_upstream.send(Up::Close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                                code: code.into(), reason: reason.and_then(|r| r.description).unwrap_or_default().into() }))).await;
                            break ("client", None);
                        }
                        None | Some(Err(_)) => break ("client", None),
                        Some(Ok(_)) => {}
                    }
                }
                frame = from_upstream.next() => {
                    lifetime.touch();
                    match frame {
                        Some(Ok(Up::Text(text))) => {
                            match tokio::time::timeout(SLOW_CONSUMER, client.text(text.as_str().to_owned())).await {
                                Ok(Ok(())) => {}
                                Ok(Err(_)) => break ("client", None),
                                Err(_) => break ("slow_consumer", Some(actix_ws::CloseReason { code: CloseCode::Again, description: None })),
                            }
                        }
                        Some(Ok(Up::Ping(bytes))) => {
                            let _ = to_upstream.send(Up::Pong(bytes)).await;
                        }
                        // ElevenLabs' close (1000 at the end, 1008 with its reason on an error) is passed on.
                        Some(Ok(Up::Close(frame))) => {
                            let reason = frame.map(|f| actix_ws::CloseReason {
                                code: u16::from(f.code).into(),
                                description: Some(f.reason.to_string()).filter(|r| !r.is_empty()),
                            });
                            break ("upstream", reason.or(Some(actix_ws::CloseReason { code: CloseCode::Normal, description: None })));
                        }
                        None | Some(Err(_)) => {
                            let _ = client.text(refusal(kind, "upstream_closed", "The provider closed the connection")).await;
                            break ("upstream", Some(actix_ws::CloseReason { code: CloseCode::Error, description: None }));
                        }
                        Some(Ok(_)) => {}
                    }
                }
                _ = ping.tick() => {
                    if client.ping(b"").await.is_err() {
                        break ("client", None);
                    }
                    let _ = to_upstream.send(Up::Ping(Vec::new().into())).await;
                }
            }
        };
        lifetime.close(&self.state, reason);
        // What was forwarded is charged, however the socket ended.
        self.meter.settle().await;
        let _ = to_upstream.close().await;
        let _ = client.close(close).await;
    }
}

/// A client message with its `xi_api_key` (the gateway's credential, if the client put it there) taken out.
fn without_key(text: &str) -> String {
    if !text.contains("api_key") && !text.contains("api-key") {
        return text.to_owned();
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(mut map)) => {
            map.remove("xi_api_key");
            map.remove("xi-api-key");
            Value::Object(map).to_string()
        }
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_are_measured_as_billed() {
        assert_eq!(Kind::Speech.measure(r#"{"text": "Hello world. "}"#), Some(12));
        assert_eq!(Kind::Speech.measure(r#"{"text": " ", "voice_settings": {}}"#), Some(0));
        assert_eq!(Kind::Speech.measure("nope"), None);
        // 3,200 bytes of PCM16 at 16 kHz is 100 ms.
        let audio = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, vec![0u8; 3200]);
        let chunk = format!(r#"{{"message_type": "input_audio_chunk", "audio_base_64": "{audio}"}}"#);
        assert_eq!(Kind::Transcription { bytes_per_ms: 32 }.measure(&chunk), Some(100));
        assert_eq!(bytes_per_ms("pcm_16000").ok(), Some(32));
        assert_eq!(bytes_per_ms("ulaw_8000").ok(), Some(8));
        assert!(bytes_per_ms("pcm_12345").is_err());
        assert_eq!(without_key(r#"{"text": " ", "xi_api_key": "sy_live_x"}"#), r#"{"text":" "}"#);
    }
}
