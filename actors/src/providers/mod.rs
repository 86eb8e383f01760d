//! Providers behind one contract. Each provider is a module with private wire types and conversions; the closed
//! `Provider` enum dispatches to them, so adding a provider is a new variant the compiler walks you through.

mod anthropic;
mod bfl;
mod elevenlabs;
mod elevenlabs_ws;
mod http;
mod openai;
mod openai_audio;
mod simulator;
pub mod sse;

use crate::catalogue::{Catalogue, ModelSpec, ProviderKind};
use crate::chat::{ChatRequest, ChatResponse, ChatStream};
use crate::error::ProviderError;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use elevenlabs_ws::{connect_socket, socket_base, SpeechSocket, SpeechSocketRequest, TextSender};
pub use simulator::SimulatorConfig;

/// Bounds on every upstream call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Until the response head (and, for streams, each later wait is `between_chunks`).
    pub first_byte: Duration,
    pub between_chunks: Duration,
    pub total: Duration,
    /// How often an asynchronous job (an image) is polled.
    pub poll_interval: Duration,
    /// The most an upstream may send as one whole body or one stream event; more is a protocol error, never
    /// memory without bound.
    pub max_body_bytes: usize,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(60),
            between_chunks: Duration::from_secs(30),
            total: Duration::from_secs(600),
            poll_interval: Duration::from_millis(500),
            max_body_bytes: 64 << 20,
        }
    }
}

/// The contract every provider fulfils. Requests are already validated; `model.upstream` is the id to send.
#[allow(async_fn_in_trait)]
pub trait ChatProvider {
    async fn chat(&self, model: &ModelSpec, request: &ChatRequest) -> Result<ChatResponse, ProviderError>;
    /// Resolves once the upstream has accepted the request (its response head arrived), so a failure here
    /// happens before the first byte reaches the client and a fallback can still serve.
    async fn chat_stream(&self, model: &ModelSpec, request: &ChatRequest) -> Result<ChatStream, ProviderError>;
}

/// One configured provider, with its upstreams (several keys or base URLs share one pooled client).
pub enum Provider {
    OpenAi(Vec<openai::OpenAi>),
    Anthropic(Vec<anthropic::Anthropic>),
    Simulator(simulator::Simulator),
    Bfl(Vec<bfl::Bfl>),
    ElevenLabs(Vec<elevenlabs::ElevenLabs>),
    /// Models inside the gateway (the embedder), available once loaded.
    Local(LocalModels),
    /// Configured in the catalogue but missing its key: every call answers `ProviderError::Unavailable`.
    Unavailable {
        name: String,
        variable: String,
    },
}

/// Loads the embedder (blocking).
pub type EmbedderLoader = Box<dyn FnOnce() -> Result<crate::embed::Embedder, String> + Send>;

/// How the embedder comes to be: loaded already, loaded on first use, or unavailable (why).
pub enum EmbedderPlan {
    Loaded(Result<crate::embed::Embedder, String>),
    /// Loads it (on a thread of the blocking pool) the first time an embedding model is used.
    OnFirstUse(EmbedderLoader),
}

/// The in-process models: the embedder, installed after start as a plan. Every `local` provider shares one.
#[derive(Clone, Default)]
pub struct LocalModels {
    inner: Arc<LocalInner>,
}

#[derive(Default)]
struct LocalInner {
    loaded: tokio::sync::OnceCell<Result<crate::embed::Embedder, String>>,
    loader: std::sync::Mutex<Option<EmbedderLoader>>,
}

impl LocalModels {
    /// Installs the embedder's plan; only the first call counts.
    pub fn install(&self, plan: EmbedderPlan) {
        match plan {
            EmbedderPlan::Loaded(result) => {
                let _ = self.inner.loaded.set(result);
            }
            EmbedderPlan::OnFirstUse(load) => {
                if let Ok(mut loader) = self.inner.loader.lock() {
                    if loader.is_none() && !self.inner.loaded.initialized() {
                        *loader = Some(load);
                    }
                }
            }
        }
    }

    /// The embedder when loaded, or why it is not (loaded yet, or at all).
    pub fn embedder(&self) -> Result<&crate::embed::Embedder, String> {
        match self.inner.loaded.get() {
            Some(Ok(embedder)) => Ok(embedder),
            Some(Err(reason)) => Err(reason.clone()),
            None if self.loads_on_first_use() => Err("the embedding model is not loaded yet".into()),
            None => Err("the embedding model is still loading".into()),
        }
    }

    /// Whether the embedder is usable: loaded, or to be loaded on first use.
    pub fn usable(&self) -> Result<(), String> {
        if self.loads_on_first_use() {
            return Ok(());
        }
        self.embedder().map(|_| ())
    }

    fn loads_on_first_use(&self) -> bool {
        !self.inner.loaded.initialized() && self.inner.loader.lock().is_ok_and(|l| l.is_some())
    }

    /// The embedder, loaded now if this is its first use (the callers that come meanwhile wait for the one load).
    pub async fn load(&self) -> Result<&crate::embed::Embedder, String> {
        let loaded = self
            .inner
            .loaded
            .get_or_init(|| async {
                let load = self.inner.loader.lock().ok().and_then(|mut l| l.take());
                let Some(load) = load else {
                    return Err("the embedding model is not installed".to_owned());
                };
                match tokio::task::spawn_blocking(load).await {
                    Ok(result) => result,
                    Err(e) => Err(format!("the embedding loader failed: {e}")),
                }
            })
            .await;
        loaded.as_ref().map_err(Clone::clone)
    }
}

impl Provider {
    pub fn is_available(&self) -> bool {
        match self {
            Provider::Unavailable { .. } => false,
            Provider::Local(local) => local.usable().is_ok(),
            Provider::OpenAi(_)
            | Provider::Anthropic(_)
            | Provider::Simulator(_)
            | Provider::Bfl(_)
            | Provider::ElevenLabs(_) => true,
        }
    }

    /// What the operator must set to make this provider usable, when it is unavailable.
    pub fn missing_variable(&self) -> Option<&str> {
        match self {
            Provider::Unavailable { variable, .. } => Some(variable),
            Provider::OpenAi(_)
            | Provider::Anthropic(_)
            | Provider::Simulator(_)
            | Provider::Bfl(_)
            | Provider::ElevenLabs(_) => None,
            Provider::Local(local) => local.usable().err().map(|_| "the embedding model files (run `make models`)"),
        }
    }

    pub fn is_simulator(&self) -> bool {
        matches!(self, Provider::Simulator(_))
    }

    /// How many upstreams (base URL and key pairs) the provider balances over.
    pub fn upstream_count(&self) -> usize {
        match self {
            Provider::OpenAi(u) => u.len(),
            Provider::Anthropic(u) => u.len(),
            Provider::Bfl(u) => u.len(),
            Provider::ElevenLabs(u) => u.len(),
            Provider::Simulator(_) | Provider::Local(_) | Provider::Unavailable { .. } => 1,
        }
    }

    fn unavailable(name: &str, variable: &str) -> ProviderError {
        ProviderError::Unavailable { provider: name.to_owned(), variable: variable.to_owned() }
    }

    fn no_upstream(upstream: usize) -> ProviderError {
        ProviderError::Connection { provider: "?".into(), message: format!("no upstream #{upstream}") }
    }

    fn wrong_kind(model: &ModelSpec, what: &str) -> ProviderError {
        ProviderError::Protocol {
            provider: model.provider.clone(),
            message: format!("this provider does not do {what}"),
        }
    }

    /// An image from upstream number `upstream`.
    pub async fn generate_image(
        &self,
        upstream: usize,
        model: &ModelSpec,
        request: &crate::image::ImageRequest,
    ) -> Result<crate::image::ImageResult, ProviderError> {
        match self {
            Provider::Bfl(u) => {
                u.get(upstream).ok_or_else(|| Self::no_upstream(upstream))?.generate(model, request).await
            }
            Provider::Unavailable { name, variable } => Err(Provider::unavailable(name, variable)),
            Provider::OpenAi(_)
            | Provider::Anthropic(_)
            | Provider::Simulator(_)
            | Provider::ElevenLabs(_)
            | Provider::Local(_) => Err(Self::wrong_kind(model, "images")),
        }
    }

    fn speech_upstream(&self, upstream: usize, model: &ModelSpec) -> Result<&elevenlabs::ElevenLabs, ProviderError> {
        match self {
            Provider::ElevenLabs(u) => u.get(upstream).ok_or_else(|| Self::no_upstream(upstream)),
            Provider::Unavailable { name, variable } => Err(Provider::unavailable(name, variable)),
            Provider::OpenAi(_)
            | Provider::Anthropic(_)
            | Provider::Simulator(_)
            | Provider::Bfl(_)
            | Provider::Local(_) => Err(Self::wrong_kind(model, "speech")),
        }
    }

    /// Text to speech from upstream number `upstream`; resolves once the first audio arrived.
    pub async fn speak(
        &self,
        upstream: usize,
        model: &ModelSpec,
        request: &crate::speech::SpeechRequest,
    ) -> Result<crate::speech::AudioStream, ProviderError> {
        match self {
            Provider::OpenAi(u) => {
                u.get(upstream).ok_or_else(|| Self::no_upstream(upstream))?.speak(model, request).await
            }
            _ => self.speech_upstream(upstream, model)?.speak(model, request).await,
        }
    }

    /// A text-to-speech socket (ElevenLabs' `stream-input`) on upstream number `upstream`: text goes in as it is
    /// written, audio comes out as it is made. Resolves once the socket is open.
    pub async fn speech_socket(
        &self,
        upstream: usize,
        model: &ModelSpec,
        request: &SpeechSocketRequest,
    ) -> Result<SpeechSocket, ProviderError> {
        self.speech_upstream(upstream, model)?.speech_socket(model, request).await
    }

    /// Speech to speech from upstream number `upstream`; resolves once the first audio arrived.
    pub async fn convert(
        &self,
        upstream: usize,
        model: &ModelSpec,
        request: &crate::speech::ConvertRequest,
    ) -> Result<crate::speech::AudioStream, ProviderError> {
        self.speech_upstream(upstream, model)?.convert(model, request).await
    }

    /// Speech to text from upstream number `upstream`.
    pub async fn transcribe(
        &self,
        upstream: usize,
        model: &ModelSpec,
        request: &crate::speech::TranscribeRequest,
    ) -> Result<crate::speech::Transcript, ProviderError> {
        match self {
            Provider::OpenAi(u) => {
                u.get(upstream).ok_or_else(|| Self::no_upstream(upstream))?.transcribe(model, request).await
            }
            _ => self.speech_upstream(upstream, model)?.transcribe(model, request).await,
        }
    }

    /// A whole answer from upstream number `upstream`.
    pub async fn chat(
        &self,
        upstream: usize,
        model: &ModelSpec,
        request: &ChatRequest,
    ) -> Result<ChatResponse, ProviderError> {
        match self {
            Provider::OpenAi(u) => {
                u.get(upstream).ok_or_else(|| Self::no_upstream(upstream))?.chat(model, request).await
            }
            Provider::Anthropic(u) => {
                u.get(upstream).ok_or_else(|| Self::no_upstream(upstream))?.chat(model, request).await
            }
            Provider::Simulator(p) => p.chat(model, request).await,
            Provider::Bfl(_) | Provider::ElevenLabs(_) | Provider::Local(_) => Err(Self::wrong_kind(model, "chat")),
            Provider::Unavailable { name, variable } => Err(Provider::unavailable(name, variable)),
        }
    }

    /// A streamed answer from upstream number `upstream`.
    pub async fn chat_stream(
        &self,
        upstream: usize,
        model: &ModelSpec,
        request: &ChatRequest,
    ) -> Result<ChatStream, ProviderError> {
        match self {
            Provider::OpenAi(u) => {
                u.get(upstream).ok_or_else(|| Self::no_upstream(upstream))?.chat_stream(model, request).await
            }
            Provider::Anthropic(u) => {
                u.get(upstream).ok_or_else(|| Self::no_upstream(upstream))?.chat_stream(model, request).await
            }
            Provider::Simulator(p) => p.chat_stream(model, request).await,
            Provider::Bfl(_) | Provider::ElevenLabs(_) | Provider::Local(_) => Err(Self::wrong_kind(model, "chat")),
            Provider::Unavailable { name, variable } => Err(Provider::unavailable(name, variable)),
        }
    }
}

/// Every provider of the catalogue, built once: one pooled HTTP client per provider.
#[derive(Clone)]
pub struct ProviderSet {
    providers: Arc<BTreeMap<String, Provider>>,
}

impl ProviderSet {
    /// Builds the providers, reading base URLs and keys through `env` (the process environment in production).
    pub fn new(
        catalogue: &Catalogue,
        env: &dyn Fn(&str) -> Option<String>,
        timeouts: Timeouts,
        simulator: SimulatorConfig,
    ) -> Result<Self, String> {
        let mut providers = BTreeMap::new();
        let local = LocalModels::default();
        for (name, spec) in &catalogue.providers {
            let key = spec.api_key_env.as_deref().and_then(env).filter(|k| !k.trim().is_empty());
            let provider = match spec.kind {
                ProviderKind::Simulator => Provider::Simulator(simulator::Simulator::new(simulator)),
                ProviderKind::Local => Provider::Local(local.clone()),
                ProviderKind::Openai | ProviderKind::Anthropic | ProviderKind::Bfl | ProviderKind::Elevenlabs
                    if key.is_none() && spec.key_required =>
                {
                    let variable = spec.api_key_env.clone().unwrap_or_else(|| "an API key".to_owned());
                    Provider::Unavailable { name: name.clone(), variable }
                }
                kind @ (ProviderKind::Openai
                | ProviderKind::Anthropic
                | ProviderKind::Bfl
                | ProviderKind::Elevenlabs) => {
                    let base_urls =
                        spec.resolve_base_url(env).ok_or_else(|| format!("provider `{name}` has no base URL"))?;
                    let key_variable = spec.api_key_env.clone().unwrap_or_default();
                    let client = std::sync::Arc::new(http::HttpClient::new(name, timeouts)?);
                    // Several keys or base URLs, comma-separated, make several upstreams to balance over.
                    let keys: Vec<Option<String>> = match &key {
                        Some(keys) => keys
                            .split(',')
                            .map(|k| Some(k.trim().to_owned()))
                            .filter(|k| k.as_deref() != Some(""))
                            .collect(),
                        None => vec![None],
                    };
                    let mut upstreams = Vec::new();
                    for base_url in
                        base_urls.split(',').map(|u| u.trim().trim_end_matches('/')).filter(|u| !u.is_empty())
                    {
                        for key in &keys {
                            upstreams.push(http::Upstream::new(
                                name,
                                base_url,
                                key.clone(),
                                &key_variable,
                                timeouts,
                                client.clone(),
                            ));
                        }
                    }
                    if upstreams.is_empty() {
                        return Err(format!("provider `{name}` has no usable base URL or key"));
                    }
                    match kind {
                        ProviderKind::Openai => {
                            Provider::OpenAi(upstreams.into_iter().map(openai::OpenAi::new).collect())
                        }
                        ProviderKind::Anthropic => {
                            Provider::Anthropic(upstreams.into_iter().map(anthropic::Anthropic::new).collect())
                        }
                        ProviderKind::Bfl => Provider::Bfl(upstreams.into_iter().map(bfl::Bfl::new).collect()),
                        ProviderKind::Elevenlabs => {
                            Provider::ElevenLabs(upstreams.into_iter().map(elevenlabs::ElevenLabs::new).collect())
                        }
                        ProviderKind::Simulator => Provider::Simulator(simulator::Simulator::new(simulator)),
                        ProviderKind::Local => Provider::Local(local.clone()),
                    }
                }
            };
            providers.insert(name.clone(), provider);
        }
        Ok(ProviderSet { providers: Arc::new(providers) })
    }

    /// The in-process models of every `local` provider (one embedder serves them all).
    pub fn install_local(&self, plan: EmbedderPlan) {
        if let Some(local) = self.local() {
            local.install(plan);
        }
    }

    /// The one `LocalModels` every `local` provider shares.
    pub fn local(&self) -> Option<&LocalModels> {
        self.providers.values().find_map(|p| match p {
            Provider::Local(local) => Some(local),
            _ => None,
        })
    }

    /// Whether embeddings can serve (now, or once loaded on first use), or why not.
    pub fn embeddings_usable(&self) -> Result<(), String> {
        self.local().map_or_else(|| Err("no `local` provider in the catalogue".into()), LocalModels::usable)
    }

    /// The embedder, loaded on its first use.
    pub async fn embedder(&self) -> Result<&crate::embed::Embedder, String> {
        match self.local() {
            Some(local) => local.load().await,
            None => Err("no `local` provider in the catalogue".into()),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.providers.get(name)
    }

    pub fn for_model(&self, model: &ModelSpec) -> Option<&Provider> {
        self.providers.get(&model.provider)
    }
}

impl Provider {
    /// Where a realtime WebSocket for this provider goes: its first upstream's base URL (`http…`, to be turned into
    /// `ws…`) and key. `None` for providers without a realtime API.
    pub fn realtime_target(&self) -> Option<(String, Option<String>)> {
        match self {
            Provider::OpenAi(upstreams) => {
                upstreams.first().map(|o| (o.upstream.base_url.clone(), o.upstream.key.clone()))
            }
            _ => None,
        }
    }

    /// Where a provider's own WebSocket APIs go (ElevenLabs' `stream-input` and realtime speech to text): its first
    /// upstream's base URL and key.
    pub fn socket_target(&self) -> Option<(String, Option<String>)> {
        match self {
            Provider::ElevenLabs(upstreams) => {
                upstreams.first().map(|e| (e.upstream.base_url.clone(), e.upstream.key.clone()))
            }
            _ => self.realtime_target(),
        }
    }
}
