//! Composed realtime sessions: any chat model as a voice agent. The gateway plays the server side of the OpenAI
//! Realtime protocol itself. Committed input audio (by the client, or by server voice activity detection) is
//! transcribed by the speech-to-text model (a billed call; with `realtime.streaming_transcription`, streamed as it
//! is appended into ElevenLabs' realtime speech-to-text socket, `listener.rs`, with HTTP as its fallback), the
//! conversation goes to the chat model as a stream, and its text, as it is written, to the text-to-speech model
//! (`speaker.rs`), whose audio comes back as `response.output_audio.delta`. Every part is one billed call on the one
//! path; `response.done` says what each part was charged. The session holds one concurrency slot while open; its calls count against the rate.

mod audio;
mod listener;
mod session;
mod speaker;
mod turn;
mod vad;

use super::error_event;
use crate::api::form::FileInput;
use crate::api::speech::{transcribe, TranscribeCall};
use crate::auth::Principal;
use crate::state::AppState;
use actix_web::{web, HttpRequest};
use actix_ws::CloseCode;
use base64::Engine as _;
use serde_json::{json, Value};
pub use session::Config;
use session::Item;
use std::rc::Rc;
use std::time::{Duration, Instant};
use switchyard_actors::engine::session::Permit;
use switchyard_actors::{ModelSpec, Role};
use tokio::sync::{mpsc, oneshot};
use turn::{Ask, Turned};

/// What every part of a session shares.
pub struct Ctx {
    pub state: web::Data<AppState>,
    pub req: HttpRequest,
    /// The caller, with calls made inside the session's slot, and the voice models allowed beside the chat model.
    pub principal: Principal,
    pub chat: ModelSpec,
    pub stt: ModelSpec,
    pub tts: ModelSpec,
    /// The streaming speech-to-text model, when input audio goes to its socket as it is appended.
    pub listen: Option<ModelSpec>,
}

/// A response's events on their way to the client (bounded: a response waits for a slow client, never buffers
/// for it).
pub type Out = mpsc::Sender<String>;

/// The session's own events (answers to client events, transcripts): never waited on, so handling a client event
/// can never wait on a response that waits on the loop. They are few per client event, and a client that does not
/// read is closed as a slow consumer.
#[derive(Clone)]
pub struct Notes(mpsc::UnboundedSender<String>);

impl Notes {
    pub async fn send(&self, text: String) -> Result<(), String> {
        self.0.send(text).map_err(|e| e.0)
    }

    pub fn try_send(&self, text: String) -> Result<(), String> {
        self.0.send(text).map_err(|e| e.0)
    }
}

const PING_EVERY: Duration = Duration::from_secs(20);
const SLOW_CONSUMER: Duration = Duration::from_secs(5);
/// The most input audio the buffer holds (10 minutes at 24 kHz).
const MAX_BUFFER_SAMPLES: usize = 24_000 * 600;
/// The least audio a commit takes, as OpenAI's.
const MIN_COMMIT_MS: u64 = 100;

pub struct Composed {
    pub ctx: Rc<Ctx>,
    pub config: Config,
    /// The session's concurrency slot, held while the socket is open.
    pub _permit: Permit,
}

/// A response under way: its task, and how to cancel it.
struct Running {
    task: tokio::task::JoinHandle<Turned>,
    cancel: Option<oneshot::Sender<()>>,
}

/// The conversation and the input audio buffer.
struct Conversation {
    items: Vec<Item>,
    /// PCM16 at the input format's rate.
    buffer: Vec<i16>,
    vad: vad::Vad,
    running: Option<Running>,
    /// The id of the user item the audio being spoken will become (named at `speech_started`, or when its
    /// transcription socket opens).
    next_item: Option<String>,
    /// The buffer's audio on its way into the speech-to-text socket (streaming transcription).
    listener: Option<listener::Listener>,
    /// Where a response sends its events.
    turn_out: Out,
}

fn event(kind: &str, mut body: Value) -> String {
    body["type"] = json!(kind);
    body["event_id"] = json!(crate::auth::new_id("event"));
    body.to_string()
}

impl Composed {
    pub async fn run(mut self, mut client: actix_ws::Session, mut from_client: actix_ws::MessageStream) {
        let state = self.ctx.state.clone();
        let _open = crate::metrics::StreamGauge::new(&state.metrics.realtime_open);
        let (turn_out, mut events) = mpsc::channel::<String>(64);
        let (notes, mut noted) = mpsc::unbounded_channel::<String>();
        let out = Notes(notes);
        let mut conversation = Conversation {
            items: Vec::new(),
            buffer: Vec::new(),
            vad: vad::Vad::default(),
            running: None,
            next_item: None,
            listener: None,
            turn_out,
        };
        let mut ping = tokio::time::interval(PING_EVERY);
        let mut lifetime = super::Lifetime::new(&state);
        let _ = out.send(event("session.created", json!({"session": self.config.to_json()}))).await;
        let (reason, code) = loop {
            if lifetime.expired() {
                let _ = client.text(error_event("session_expired", "The session reached its time limit")).await;
                break ("expired", CloseCode::Normal);
            }
            tokio::select! {
                frame = from_client.recv() => {
                    lifetime.touch();
                    match frame {
                        Some(Ok(actix_ws::Message::Text(text))) => self.client_event(&text, &mut conversation, &out).await,
                        Some(Ok(actix_ws::Message::Binary(_))) => {
                            let _ = out.send(error_event("invalid_event", "Binary frames are not part of the protocol: send JSON events")).await;
                        }
                        Some(Ok(actix_ws::Message::Ping(bytes))) => {
                            if client.pong(&bytes).await.is_err() {
                                break ("client", CloseCode::Normal);
                            }
                        }
                        Some(Ok(actix_ws::Message::Close(_))) | None => break ("client", CloseCode::Normal),
                        Some(Err(e)) => {
                            // A frame over the limit, or broken framing: said, then closed (the stream cannot go on).
                            let _ = client.text(error_event("invalid_frame", &format!("The frame was refused: {e}"))).await;
                            break ("client", CloseCode::Size);
                        }
                        Some(Ok(_)) => {}
                    }
                }
                Some(text) = noted.recv() => {
                    lifetime.touch();
                    match tokio::time::timeout(SLOW_CONSUMER, client.text(text)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break ("client", CloseCode::Normal),
                        Err(_) => break ("slow_consumer", CloseCode::Again),
                    }
                }
                Some(text) = events.recv() => {
                    lifetime.touch();
                    match tokio::time::timeout(SLOW_CONSUMER, client.text(text)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break ("client", CloseCode::Normal),
                        Err(_) => break ("slow_consumer", CloseCode::Again),
                    }
                }
                turned = finished(&mut conversation.running) => {
                    conversation.running = None;
                    if let Ok(turned) = turned {
                        let direction = "out";
                        state.metrics.realtime_audio_seconds.with_label_values(&[direction]).inc_by(turned.audio_seconds);
                        state.metrics.realtime_responses.with_label_values(&[turned.status]).inc();
                        if !turned.item.text.is_empty() {
                            conversation.items.push(turned.item);
                        }
                    }
                }
                _ = ping.tick() => {
                    if client.ping(b"").await.is_err() {
                        break ("client", CloseCode::Normal);
                    }
                }
            }
        };
        lifetime.close(&state, reason);
        // A response still running stops its upstream calls; what it generated is charged as its bills drop.
        if let Some(running) = conversation.running.take() {
            running.task.abort();
        }
        let _ = client.close(Some(actix_ws::CloseReason { code, description: None })).await;
    }

    async fn client_event(&mut self, text: &str, conversation: &mut Conversation, out: &Notes) {
        let parsed: Value = match serde_json::from_str(text) {
            Ok(Value::Object(map)) => Value::Object(map),
            _ => {
                let _ = out.send(error_event("invalid_event", "Every event is a JSON object with a `type`")).await;
                return;
            }
        };
        let kind = parsed.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
        let refused = match kind.as_str() {
            "session.update" => self.update(&parsed, out).await,
            "input_audio_buffer.append" => self.append(&parsed, conversation, out).await,
            "input_audio_buffer.commit" => self.commit(conversation, out).await,
            "input_audio_buffer.clear" => {
                conversation.buffer.clear();
                conversation.vad.reset();
                conversation.next_item = None;
                // Its socket is let go: the audio it was sent is charged, as sent.
                conversation.listener = None;
                let _ = out.send(event("input_audio_buffer.cleared", json!({}))).await;
                Ok(())
            }
            "conversation.item.create" => Self::create_item(&parsed, conversation, out).await,
            "conversation.item.delete" => Self::delete_item(&parsed, conversation, out).await,
            "response.create" => self.respond(parsed.get("response"), conversation),
            "response.cancel" => match conversation.running.as_mut().and_then(|r| r.cancel.take()) {
                Some(cancel) => {
                    let _ = cancel.send(());
                    Ok(())
                }
                None => Err(("response_cancel_not_active", "There is no response in progress to cancel".to_owned())),
            },
            "" => Err(("invalid_event", "Every event is a JSON object with a `type`".to_owned())),
            other => Err(("unknown_event", format!("`{other}` is not a client event of the realtime protocol"))),
        };
        if let Err((code, message)) = refused {
            let _ = out.send(error_event(code, &message)).await;
        }
    }

    async fn update(&mut self, parsed: &Value, out: &Notes) -> Result<(), (&'static str, String)> {
        let session = parsed.get("session").cloned().unwrap_or(Value::Null);
        let default_voice = self.ctx.tts.audio.as_ref().and_then(|a| a.default_voice.clone()).unwrap_or_default();
        self.config
            .update(&session, &default_voice)
            .map_err(|(path, why)| ("invalid_value", format!("`{path}` {why}")))?;
        let _ = out.send(event("session.updated", json!({"session": self.config.to_json()}))).await;
        Ok(())
    }

    async fn append(
        &mut self,
        parsed: &Value,
        conversation: &mut Conversation,
        out: &Notes,
    ) -> Result<(), (&'static str, String)> {
        let audio = parsed
            .get("audio")
            .and_then(Value::as_str)
            .ok_or(("missing_field", "`audio` (base64) is required".to_owned()))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(audio)
            .map_err(|_| ("invalid_audio", "`audio` is not base64".to_owned()))?;
        let format = self.config.input_format;
        let samples = format.decode(&bytes).map_err(|why| ("invalid_audio", why))?;
        if conversation.buffer.len() + samples.len() > MAX_BUFFER_SAMPLES {
            return Err((
                "input_audio_buffer_full",
                "The input audio buffer holds at most 10 minutes: commit or clear it".into(),
            ));
        }
        self.ctx
            .state
            .metrics
            .realtime_audio_seconds
            .with_label_values(&["in"])
            .inc_by(samples.len() as f64 / f64::from(format.rate()));
        conversation.buffer.extend_from_slice(&samples);
        if let Some(model) = &self.ctx.listen {
            // The turn's socket opens with its first audio (`listener.rs` says why then).
            let listener = conversation.listener.get_or_insert_with(|| {
                let item_id = conversation.next_item.get_or_insert_with(|| crate::auth::new_id("item")).clone();
                let language = self.config.language.clone();
                listener::Listener::open(self.ctx.clone(), model.clone(), item_id, language, format.rate(), out.clone())
            });
            listener.hear(&samples, format.rate());
        }
        let Some(detection) = self.config.turn_detection else { return Ok(()) };
        for turn in conversation.vad.feed(&samples, format.rate(), &detection) {
            match turn {
                // The user item the speech will become is named now, as OpenAI does, and kept for the commit.
                vad::Turn::Started(ms) => {
                    let item_id = conversation.next_item.get_or_insert_with(|| crate::auth::new_id("item")).clone();
                    let started = json!({"audio_start_ms": ms, "item_id": item_id});
                    let _ = out.send(event("input_audio_buffer.speech_started", started)).await;
                }
                vad::Turn::Stopped(ms) => {
                    let item_id = conversation.next_item.get_or_insert_with(|| crate::auth::new_id("item")).clone();
                    let stopped = json!({"audio_end_ms": ms, "item_id": item_id});
                    let _ = out.send(event("input_audio_buffer.speech_stopped", stopped)).await;
                    self.commit(conversation, out).await?;
                    if detection.create_response && conversation.running.is_none() {
                        self.respond(None, conversation)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Commits the input audio: a user item, transcribed by the speech-to-text model (a billed call).
    async fn commit(&mut self, conversation: &mut Conversation, out: &Notes) -> Result<(), (&'static str, String)> {
        let format = self.config.input_format;
        let millis = conversation.buffer.len() as u64 * 1000 / u64::from(format.rate());
        if millis < MIN_COMMIT_MS {
            return Err((
                "input_audio_buffer_commit_empty",
                format!("The buffer holds {millis} ms of audio; a commit takes at least {MIN_COMMIT_MS} ms"),
            ));
        }
        let samples = std::mem::take(&mut conversation.buffer);
        conversation.vad.reset();
        let item_id = conversation.next_item.take().unwrap_or_else(|| crate::auth::new_id("item"));
        let previous = conversation.items.last().map(|i| i.id.clone());
        let _ = out
            .send(event("input_audio_buffer.committed", json!({"previous_item_id": previous, "item_id": item_id})))
            .await;
        let pending = Item { id: item_id.clone(), role: Role::User, text: String::new(), audio: true };
        let _ = out
            .send(event(
                "conversation.item.added",
                json!({"previous_item_id": previous, "item": pending.to_json("completed")}),
            ))
            .await;
        let heard = match conversation.listener.take() {
            Some(listener) => listener.commit().await,
            None => None,
        };
        let transcribed = match heard {
            Some(heard) => {
                let model = self.ctx.listen.as_ref().map(|m| m.name.clone());
                let (id, credits) = heard.charged.map_or((None, None), |(id, c)| (Some(id), Some(c)));
                let usage = json!({"type": "duration", "seconds": heard.seconds, "id": id, "model": model,
                                   "credits_charged": credits});
                Ok((heard.text, usage))
            }
            // Over HTTP: streaming is off, or the turn's socket failed or gave no transcript in time.
            None => self.transcribe(&samples).await,
        };
        let item = match transcribed {
            Ok((text, usage)) => {
                let item = Item { text: text.clone(), ..pending };
                let _ = out
                    .send(event(
                        "conversation.item.input_audio_transcription.completed",
                        json!({"item_id": item_id, "content_index": 0, "transcript": text, "usage": usage}),
                    ))
                    .await;
                item
            }
            Err(e) => {
                let error = json!({"type": e.detail.kind, "code": e.detail.code, "message": e.detail.message});
                let _ = out
                    .send(event(
                        "conversation.item.input_audio_transcription.failed",
                        json!({"item_id": item_id, "content_index": 0, "error": error}),
                    ))
                    .await;
                pending
            }
        };
        let _ = out.send(event("conversation.item.done", json!({"item": item.to_json("completed")}))).await;
        conversation.items.push(item);
        Ok(())
    }

    /// The buffer's audio transcribed over HTTP by the speech-to-text model: its text and `usage`.
    async fn transcribe(&self, samples: &[i16]) -> Result<(String, Value), crate::api::errors::ApiError> {
        let rate = self.config.input_format.rate();
        let call = TranscribeCall {
            audio: FileInput {
                filename: "input.wav".into(),
                content_type: "audio/wav",
                bytes: audio::wav(samples, rate).into(),
            },
            language: self.config.language.clone(),
            reporting_group: None,
            use_fallback: false,
        };
        let ctx = &self.ctx;
        let t =
            transcribe(&ctx.state, &ctx.req, &ctx.principal, &ctx.stt, call, Instant::now(), "/v1/realtime").await?;
        let usage = json!({"type": "duration", "seconds": t.duration_seconds, "id": t.id, "model": t.model,
                           "credits_charged": t.metadata.credits_charged});
        Ok((t.text, usage))
    }

    async fn create_item(
        parsed: &Value,
        conversation: &mut Conversation,
        out: &Notes,
    ) -> Result<(), (&'static str, String)> {
        let item =
            session::item_from(parsed.get("item").unwrap_or(&Value::Null)).map_err(|why| ("invalid_value", why))?;
        let previous = conversation.items.last().map(|i| i.id.clone());
        let json = item.to_json("completed");
        let _ = out.send(event("conversation.item.added", json!({"previous_item_id": previous, "item": json}))).await;
        let _ = out.send(event("conversation.item.done", json!({"previous_item_id": previous, "item": json}))).await;
        conversation.items.push(item);
        Ok(())
    }

    async fn delete_item(
        parsed: &Value,
        conversation: &mut Conversation,
        out: &Notes,
    ) -> Result<(), (&'static str, String)> {
        let id = parsed.get("item_id").and_then(Value::as_str).unwrap_or_default();
        let before = conversation.items.len();
        conversation.items.retain(|i| i.id != id);
        if conversation.items.len() == before {
            return Err(("item_not_found", format!("No item `{id}` in the conversation")));
        }
        let _ = out.send(event("conversation.item.deleted", json!({"item_id": id}))).await;
        Ok(())
    }

    /// Starts a response (one at a time), with the overrides a `response.create` may carry.
    fn respond(&self, options: Option<&Value>, conversation: &mut Conversation) -> Result<(), (&'static str, String)> {
        if conversation.running.is_some() {
            return Err((
                "conversation_already_has_active_response",
                "A response is in progress: wait for its response.done, or cancel it".into(),
            ));
        }
        let mut config = self.config.clone();
        if let Some(options) = options.filter(|o| o.is_object()) {
            let default_voice = config.voice.clone();
            config.update(options, &default_voice).map_err(|(path, why)| {
                ("invalid_value", format!("`{}` {why}", path.replacen("session", "response", 1)))
            })?;
        }
        let messages = session::messages(&config.instructions, &conversation.items);
        if !messages.iter().any(|m| m.role == Role::User) {
            return Err((
                "conversation_empty",
                "The conversation has no user message yet: commit audio or create an item first".into(),
            ));
        }
        let ask = Ask {
            response_id: crate::auth::new_id("resp"),
            item_id: crate::auth::new_id("item"),
            messages,
            audio_out: config.audio_out,
            format: config.output_format,
            voice: config.voice.clone(),
            max_output_tokens: config.max_output_tokens,
        };
        let (cancel, cancelled) = oneshot::channel();
        let ctx = self.ctx.clone();
        let out = conversation.turn_out.clone();
        let task = actix_web::rt::spawn(async move { turn::respond(&ctx, ask, &out, cancelled).await });
        conversation.running = Some(Running { task, cancel: Some(cancel) });
        Ok(())
    }
}

/// Waits for the running response to end (for ever when none runs).
async fn finished(running: &mut Option<Running>) -> Result<Turned, tokio::task::JoinError> {
    match running.as_mut() {
        Some(running) => (&mut running.task).await,
        None => std::future::pending().await,
    }
}
