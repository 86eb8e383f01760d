//! ElevenLabs' text-to-speech WebSocket, `GET /v1/text-to-speech/{voice_id}/stream-input`: text is sent as it is
//! written (`{"text": "…", "try_trigger_generation": true}`, `flush` to speak what is buffered, `{"text": ""}` to
//! end) and audio comes back as it is made (`{"audio": base64, "isFinal": …, "alignment": …}`, then
//! `{"isFinal": true}`). The socket reports no usage: the characters sent are what is billed.

use super::elevenlabs::ElevenLabs;
use crate::catalogue::ModelSpec;
use crate::error::{ProviderError, TimeoutPhase};
use base64::Engine as _;
use bytes::Bytes;
use futures::stream::{BoxStream, SplitSink};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What a socket speaks: a voice (id or name), an output format of ElevenLabs' (`pcm_24000`, `ulaw_8000`, …) and
/// voice settings as given.
#[derive(Clone, Debug, PartialEq)]
pub struct SpeechSocketRequest {
    pub voice: String,
    pub output_format: String,
    pub voice_settings: Option<Value>,
}

/// An open text-to-speech socket: `text` writes, `audio` reads (decoded), concurrently.
pub struct SpeechSocket {
    pub text: TextSender,
    pub audio: BoxStream<'static, Result<Bytes, ProviderError>>,
}

/// The writing half: text as it is written, then the end.
pub struct TextSender {
    sink: SplitSink<Socket, Message>,
    provider: String,
    /// Characters sent so far (what the socket is billed by).
    pub characters: u64,
}

impl TextSender {
    async fn send(&mut self, body: Value) -> Result<(), ProviderError> {
        let provider = self.provider.clone();
        self.sink
            .send(Message::text(body.to_string()))
            .await
            .map_err(|e| ProviderError::Connection { provider, message: format!("speech socket: {e}") })
    }

    /// Sends text to be spoken (generation starts once enough has arrived).
    pub async fn write(&mut self, text: &str) -> Result<(), ProviderError> {
        if text.is_empty() {
            return Ok(());
        }
        self.characters += text.chars().count() as u64;
        self.send(json!({"text": text, "try_trigger_generation": true})).await
    }

    /// Speaks whatever is buffered now (the end of a sentence).
    pub async fn flush(&mut self) -> Result<(), ProviderError> {
        self.send(json!({"text": " ", "flush": true})).await
    }

    /// No more text: the rest is spoken, `isFinal` follows, and the socket closes.
    pub async fn finish(&mut self) -> Result<(), ProviderError> {
        self.send(json!({"text": ""})).await
    }
}

type Connected = (Socket, tokio_tungstenite::tungstenite::handshake::client::Response);

/// Opens a WebSocket to a provider the way every upstream socket of the gateway is opened: TCP_NODELAY (frames go
/// out as written), and a 16 KiB read buffer rather than tungstenite's 128 KiB, which it zero-fills on reads and so
/// keeps resident per session.
pub async fn connect_socket(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
) -> Result<Connected, tokio_tungstenite::tungstenite::Error> {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(16 * 1024);
    tokio_tungstenite::connect_async_with_config(request, Some(config), true).await
}

/// `ws(s)://…` from an `http(s)://…` base URL.
pub fn socket_base(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        format!("ws://{}", base.strip_prefix("http://").unwrap_or(base))
    }
}

/// The audio of one server message: `Some(bytes)` for audio, `None` when the message ends the stream.
fn audio_of(provider: &str, text: &str) -> Result<Option<Option<Bytes>>, ProviderError> {
    let protocol = |message: String| ProviderError::Protocol { provider: provider.to_owned(), message };
    let message: Value = serde_json::from_str(text).map_err(|e| protocol(format!("bad speech socket message: {e}")))?;
    if let Some(error) =
        message.get("error").or_else(|| message.get("message").filter(|_| message.get("audio").is_none()))
    {
        let text = error.as_str().map(str::to_owned).unwrap_or_else(|| error.to_string());
        return Err(ProviderError::Upstream { provider: provider.to_owned(), status: 500, message: text });
    }
    if let Some(audio) = message.get("audio").and_then(Value::as_str).filter(|a| !a.is_empty()) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(audio)
            .map_err(|e| protocol(format!("bad audio in the speech socket: {e}")))?;
        return Ok(Some(Some(Bytes::from(bytes))));
    }
    if message.get("isFinal").and_then(Value::as_bool) == Some(true) {
        return Ok(None);
    }
    Ok(Some(None))
}

impl ElevenLabs {
    /// Opens a `stream-input` socket for `model` and sends its opening message.
    pub async fn speech_socket(
        &self,
        model: &ModelSpec,
        request: &SpeechSocketRequest,
    ) -> Result<SpeechSocket, ProviderError> {
        let upstream = &self.upstream;
        let deadline = upstream.deadline();
        let voice = self.voice_id(&request.voice, deadline).await?;
        let url = format!(
            "{}/v1/text-to-speech/{voice}/stream-input?model_id={}&output_format={}",
            socket_base(&upstream.base_url),
            model.upstream,
            request.output_format
        );
        let connection = |message: String| ProviderError::Connection { provider: upstream.name.clone(), message };
        let mut http = url.into_client_request().map_err(|e| connection(format!("speech socket URL: {e}")))?;
        if let Some(key) = &upstream.key {
            let value =
                HeaderValue::from_str(key).map_err(|_| connection("the provider key is not a header".into()))?;
            http.headers_mut().insert("xi-api-key", value);
        }
        let connected = tokio::time::timeout_at(deadline, connect_socket(http)).await;
        let socket = match connected {
            Err(_) => return Err(upstream.timeout(TimeoutPhase::FirstByte)),
            Ok(Ok((socket, _))) => socket,
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
                let status = response.status().as_u16();
                let body = response.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
                return Err(upstream.status_error(status, None, body.unwrap_or_default()));
            }
            Ok(Err(e)) => return Err(connection(format!("speech socket: {e}"))),
        };
        let (sink, stream) = socket.split();
        let mut text = TextSender { sink, provider: upstream.name.clone(), characters: 0 };
        let mut opening = json!({"text": " "});
        if let Some(settings) = &request.voice_settings {
            opening["voice_settings"] = settings.clone();
        }
        text.send(opening).await?;
        let provider = upstream.name.clone();
        let gap = upstream.timeouts.between_chunks;
        let audio = futures::stream::unfold(Some(stream), move |state| {
            let provider = provider.clone();
            async move {
                let mut stream = state?;
                loop {
                    let frame = match tokio::time::timeout(gap, stream.next()).await {
                        Err(_) => {
                            let e = ProviderError::Timeout { provider, phase: TimeoutPhase::BetweenChunks };
                            return Some((Err(e), None));
                        }
                        Ok(frame) => frame,
                    };
                    let text = match frame {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_))) | None => {
                            let e = ProviderError::Connection {
                                provider,
                                message: "the speech socket closed before its final message".into(),
                            };
                            return Some((Err(e), None));
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => {
                            let e = ProviderError::Connection { provider, message: format!("speech socket: {e}") };
                            return Some((Err(e), None));
                        }
                    };
                    match audio_of(&provider, text.as_str()) {
                        Ok(Some(Some(bytes))) => return Some((Ok(bytes), Some(stream))),
                        Ok(Some(None)) => continue,
                        Ok(None) => return None,
                        Err(e) => return Some((Err(e), None)),
                    }
                }
            }
        })
        .boxed();
        Ok(SpeechSocket { text, audio })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_are_audio_the_end_or_an_error() {
        let audio = base64::engine::general_purpose::STANDARD.encode([1u8, 2, 3]);
        let message = json!({"audio": audio, "isFinal": null, "alignment": {"chars": ["a"]}}).to_string();
        assert_eq!(audio_of("el", &message), Ok(Some(Some(Bytes::from_static(&[1, 2, 3])))));
        assert_eq!(audio_of("el", r#"{"audio": null, "isFinal": true}"#), Ok(None));
        assert_eq!(audio_of("el", r#"{"isFinal": false, "normalizedAlignment": {}}"#), Ok(Some(None)));
        assert!(matches!(audio_of("el", r#"{"error": "quota_exceeded"}"#), Err(ProviderError::Upstream { .. })));
        assert!(matches!(audio_of("el", "not json"), Err(ProviderError::Protocol { .. })));
        assert_eq!(socket_base("https://api.elevenlabs.io/"), "wss://api.elevenlabs.io");
        assert_eq!(socket_base("http://127.0.0.1:9"), "ws://127.0.0.1:9");
    }
}
