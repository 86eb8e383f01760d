//! Realtime voice over WebSocket, in the OpenAI Realtime protocol (GA event names): `GET /v1/realtime?model=…` (also
//! at `/api/v1/realtime`). The caller is authenticated, admitted and its model checked before the upgrade, so every
//! refusal is a plain HTTP answer (401, 402, 403, 429, 503), never an accepted socket that closes at once. Credentials:
//! an API key (`Authorization`, `X-API-Key` or `api-key`), a session token as Bearer, as `?token=`, or in the
//! `openai-insecure-api-key.<token>` subprotocol (browsers; `realtime` is echoed back). Realtime models of the
//! catalogue are relayed to their provider's realtime API (`relay.rs`), billed per `response.done`.
//! `POST /v1/realtime/client_secrets` mints a browser secret in OpenAI's shape (`ek_…`, one of our session tokens).

mod composed;
pub mod elevenlabs;
mod meter;
mod relay;
pub mod secrets;

use super::errors::{ApiError, ErrorBody};
use super::principal::resolve;
use crate::auth::Principal;
use crate::state::AppState;
use actix_web::http::header::{HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use std::time::Duration;
use switchyard_actors::catalogue::Modality;
use switchyard_actors::providers::socket_base;
use switchyard_actors::{Credits, ModelSpec};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub fn configure(cfg: &mut web::ServiceConfig) {
    for path in ["/v1/realtime", "/api/v1/realtime"] {
        cfg.service(super::resource(path).route(web::get().to(connect)));
    }
    cfg.service(super::resource("/v1/realtime/client_secrets").route(web::post().to(secrets::create)));
    elevenlabs::configure(cfg);
}

/// The largest frame a client may send (base64 audio of about 20 s at 24 kHz).
const MAX_FRAME: usize = 1 << 20;
const INSECURE_KEY: &str = "openai-insecure-api-key.";

#[derive(Debug, Deserialize)]
pub struct RealtimeQuery {
    pub model: Option<String>,
    /// A session token (read by the credential check on the upgrade).
    #[serde(rename = "token")]
    pub _token: Option<String>,
}

/// The subprotocols a browser offered.
fn subprotocols(req: &HttpRequest) -> Vec<String> {
    req.headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_owned()))
        .filter(|p| !p.is_empty())
        .collect()
}

/// The caller, from whichever place its client puts the credential.
fn principal(state: &AppState, req: &HttpRequest, offered: &[String]) -> Result<Principal, ApiError> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(|k| k.trim().to_owned());
    let from_header = crate::api::principal::presented(req)?
        .map(str::to_owned)
        .or_else(|| header("api-key"))
        .or_else(|| header("xi-api-key"));
    let from_protocol = || offered.iter().find_map(|p| p.strip_prefix(INSECURE_KEY)).map(str::to_owned);
    let credential = from_header.or_else(from_protocol).ok_or_else(ApiError::missing_api_key)?;
    resolve(state, &credential)
}

/// An `error` event in the protocol's shape.
pub fn error_event(code: &str, message: &str) -> String {
    serde_json::json!({"type": "error", "event_id": crate::auth::new_id("event"),
           "error": {"type": "invalid_request_error", "code": code, "message": message}})
    .to_string()
}

/// A session's clock: it ends at its maximum length, or after a while with no frame either way.
pub struct Lifetime {
    opened: std::time::Instant,
    last: std::time::Instant,
    max: Duration,
    idle: Duration,
}

impl Lifetime {
    pub fn new(state: &AppState) -> Lifetime {
        let now = std::time::Instant::now();
        let realtime = &state.config.realtime;
        Lifetime {
            opened: now,
            last: now,
            max: Duration::from_secs(realtime.max_session_secs),
            idle: Duration::from_secs(realtime.idle_secs),
        }
    }

    /// A frame went one way or the other.
    pub fn touch(&mut self) {
        self.last = std::time::Instant::now();
    }

    pub fn expired(&self) -> bool {
        self.opened.elapsed() > self.max || self.last.elapsed() > self.idle
    }

    /// Counts the session's end by `reason`, and its length.
    pub fn close(&self, state: &AppState, reason: &str) {
        state.metrics.realtime_closed.with_label_values(&[reason]).inc();
        state.metrics.realtime_duration.observe(self.opened.elapsed().as_secs_f64());
    }
}

/// `ws://…/realtime?model=…` from the provider's `http://…` base URL.
fn upstream_url(base: &str, model: &str) -> String {
    format!("{}/realtime?model={model}", socket_base(base))
}

/// A provider that refused the socket, in API.md's terms (502).
fn refused_upstream(model: &ModelSpec, e: tokio_tungstenite::tungstenite::Error) -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::BAD_GATEWAY,
        super::errors::ErrorType::UpstreamError,
        "provider_error",
        format!("provider `{}` refused the realtime connection: {e}", model.provider),
    )
}

/// The OpenAI Realtime protocol over WebSocket: relayed for realtime models, played by the gateway for chat models.
#[utoipa::path(get, path = "/v1/realtime", tag = "realtime",
    params(("model" = String, Query, description = "A realtime model (relayed) or any chat model (a voice agent)"),
           ("token" = Option<String>, Query, description = "A session token (browsers; or the `openai-insecure-api-key.<secret>` subprotocol)")),
    responses(super::docs::SocketUpgrade,
        (status = 400, description = "missing_field, unsupported_model: not a realtime or chat model", body = ErrorBody),
        (status = 503, description = "provider_unavailable: the provider or the voice models are not configured", body = ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn connect(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
    query: web::Query<RealtimeQuery>,
) -> Result<HttpResponse, ApiError> {
    let offered = subprotocols(&req);
    let mut principal = principal(&state, &req, &offered)?;
    let name = query.model.clone().ok_or_else(|| ApiError::missing_field("model"))?;
    let model = state.catalogue.model(&name).ok_or_else(|| ApiError::unsupported_model(&name))?.clone();
    if !matches!(model.modality, Modality::Realtime | Modality::Chat) {
        return Err(ApiError::unsupported_model(&name).with_message(format!(
            "{name} is not a realtime or chat model: the realtime models are {}, and any chat model is a voice agent",
            state
                .catalogue
                .models
                .values()
                .filter(|m| m.modality == Modality::Realtime)
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if !principal.may_run(&model.name) {
        return Err(ApiError::model_not_allowed(&model.name));
    }
    if let Some(reason) = state.unavailable_reason(&model) {
        return Err(ApiError::provider_unavailable(reason));
    }
    if model.modality == Modality::Chat {
        return composed(state, req, body, principal, model, &offered).await;
    }
    let provider = state.providers.for_model(&model).ok_or_else(|| ApiError::unsupported_model(&name))?;
    let (base, key) = provider.realtime_target().ok_or_else(|| ApiError::unsupported_model(&name))?;
    // One concurrent request while the socket is open; its responses are made inside that slot.
    let permit = super::limits::admit(&state, &req, &principal).await?;
    principal.holds_slot = true;
    afford(&state, &principal, relay::least(&model)).await?;
    let mut request = upstream_url(&base, &model.upstream)
        .into_client_request()
        .map_err(|e| ApiError::internal(format!("realtime upstream URL: {e}")))?;
    if let Some(key) = key {
        let value = tokio_tungstenite::tungstenite::http::HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| ApiError::internal("the provider key is not a valid header"))?;
        request.headers_mut().insert("authorization", value);
    }
    let (upstream, _) =
        switchyard_actors::providers::connect_socket(request).await.map_err(|e| refused_upstream(&model, e))?;
    let (response, session, stream) = upgrade(&req, body, &offered)?;
    let relay = relay::Relay { state: state.clone(), req: req.clone(), principal, model, _permit: permit };
    actix_web::rt::spawn(relay.run(session, stream.max_frame_size(MAX_FRAME), upstream));
    Ok(response)
}

/// Accepts the upgrade, echoing `realtime` when the client offered it (browsers abort otherwise).
fn upgrade(
    req: &HttpRequest,
    body: web::Payload,
    offered: &[String],
) -> Result<(HttpResponse, actix_ws::Session, actix_ws::MessageStream), ApiError> {
    let (mut response, session, stream) =
        actix_ws::handle(req, body).map_err(|e| ApiError::invalid_field("upgrade", e.to_string()))?;
    if offered.iter().any(|p| p == "realtime") {
        response.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("realtime"));
    }
    Ok((response, session, stream))
}

/// Refuses the upgrade (402) when the wallet cannot cover `most`, one response at the least.
async fn afford(state: &AppState, principal: &Principal, most: Credits) -> Result<(), ApiError> {
    let available = wallet_available(state, &principal.workspace_id).await;
    if available < most {
        return Err(ApiError::insufficient_credits());
    }
    Ok(())
}

/// What the workspace's wallet has free (its balance less its holds).
pub async fn wallet_available(state: &AppState, workspace_id: &str) -> Credits {
    state.engine().wallet(workspace_id).await.map_or(Credits::ZERO, |w| w.available())
}

/// A chat model as a voice agent: the session's speech-to-text and text-to-speech models are the configured ones.
async fn composed(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
    mut principal: Principal,
    chat: ModelSpec,
    offered: &[String],
) -> Result<HttpResponse, ApiError> {
    let voice_model = |name: &str| -> Result<ModelSpec, ApiError> {
        let model = state.catalogue.model(name).ok_or_else(|| {
            ApiError::provider_unavailable(format!("the realtime voice model `{name}` is not in the catalogue"))
        })?;
        match state.unavailable_reason(model) {
            Some(reason) => Err(ApiError::provider_unavailable(reason)),
            None => Ok(model.clone()),
        }
    };
    let stt = voice_model(&state.config.realtime.speech_to_text)?;
    let tts = voice_model(&state.config.realtime.text_to_speech)?;
    // Streaming transcription is an improvement, never a condition: without its model, turns go over HTTP.
    let listen = match state.config.realtime.streaming_transcription {
        false => None,
        true => voice_model(&state.config.realtime.streaming_transcription_model)
            .inspect_err(|e| tracing::warn!(error = %e.detail.message, "streaming transcription unavailable"))
            .ok(),
    };
    let permit = super::limits::admit(&state, &req, &principal).await?;
    principal.holds_slot = true;
    // The voice models are part of the chat model's session: a key or token limited to the chat model may use them.
    if let Some(models) = &principal.models {
        let mut list = models.to_vec();
        list.extend([stt.name.clone(), tts.name.clone()]);
        list.extend(listen.as_ref().map(|m| m.name.clone()));
        principal.models = Some(list.into());
    }
    afford(&state, &principal, chat.pricing.cost(1_000, 64)).await?;
    let (response, session, stream) = upgrade(&req, body, offered)?;
    let default_voice = tts.audio.as_ref().and_then(|a| a.default_voice.clone()).unwrap_or_default();
    let transcription_model = listen.as_ref().unwrap_or(&stt).name.clone();
    let config = composed::Config::new(&chat.name, &default_voice, &transcription_model);
    let ctx = composed::Ctx { state: state.clone(), req: req.clone(), principal, chat, stt, tts, listen };
    let composed = composed::Composed { config, ctx: std::rc::Rc::new(ctx), _permit: permit };
    actix_web::rt::spawn(composed.run(session, stream.max_frame_size(MAX_FRAME)));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::upstream_url;

    #[test]
    fn the_upstream_socket_url_follows_the_base_url() {
        assert_eq!(
            upstream_url("https://api.openai.com/v1", "gpt-realtime"),
            "wss://api.openai.com/v1/realtime?model=gpt-realtime"
        );
        assert_eq!(upstream_url("http://127.0.0.1:9/v1/", "m"), "ws://127.0.0.1:9/v1/realtime?model=m");
    }
}
