//! One chat request's way through the pool: the fallback chain, retries with backoff and jitter, circuit
//! breakers. All of it happens before the first byte reaches the client; after that, nothing is retried.

use super::pool::{Lease, Outcome, PoolRejection};
use super::Engine;
use crate::catalogue::{Catalogue, ModelSpec};
use crate::chat::{ChatEvent, ChatRequest, ChatResponse, ChatStream};
use crate::error::{ProviderError, TimeoutPhase};
use crate::providers::{Provider, ProviderSet};
use futures::StreamExt;
use rand::Rng;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries on the same model after the first attempt.
    pub max_retries: u32,
    pub base: Duration,
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this moves on to the fallback instead of waiting.
    pub max_retry_after: Duration,
    /// The most one request may spend upstream, every attempt, wait and fallback included; when it runs out the
    /// request fails with a timeout instead of trying on.
    pub budget: Duration,
}

impl RetryPolicy {
    /// Exponential backoff with full jitter (half fixed, half random), at least `retry_after`.
    pub fn backoff(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self.base.saturating_mul(1u32 << retry.min(16)).min(self.max_backoff);
        let half = exp / 2;
        let jitter = rand::thread_rng().gen_range(0..=half.as_micros() as u64);
        let wait = half + Duration::from_micros(jitter);
        retry_after.map_or(wait, |ra| wait.max(ra))
    }
}

pub enum Answer {
    Whole(ChatResponse),
    /// The first event already arrived; `rest` follows.
    Stream {
        first: ChatEvent,
        rest: ChatStream,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FallbackUsed {
    pub reason: String,
    pub primary_model: String,
}

/// The answer and who gave it.
pub struct Served<T = Answer> {
    pub model: ModelSpec,
    pub answer: T,
    pub lease: Lease,
    pub fallback: Option<FallbackUsed>,
    pub attempts: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DispatchError {
    Provider(ProviderError),
    Pool { provider: String, rejection: PoolRejection },
}

pub struct Failed {
    pub error: DispatchError,
    pub attempts: u32,
}

/// Why a model was left for the next in the chain (a metric label and the `fallback.reason` field).
fn reason(error: &DispatchError) -> &'static str {
    match error {
        DispatchError::Provider(e) => e.kind(),
        DispatchError::Pool { rejection: PoolRejection::CircuitOpen, .. } => "circuit_open",
        DispatchError::Pool { rejection: PoolRejection::Overloaded, .. } => "overloaded",
        DispatchError::Pool { rejection: PoolRejection::UnknownProvider, .. } => "unknown_provider",
    }
}

/// One kind of call the pool can make on any model of a fallback chain (a chat, an image, speech).
#[allow(async_fn_in_trait)]
pub trait Attempt {
    type Output;
    /// Calls upstream number `upstream` of `provider` for `model`. Success means the answer has begun: for a
    /// stream, its first event arrived, so nothing after this is retried.
    async fn run(&self, provider: &Provider, upstream: usize, model: &ModelSpec)
        -> Result<Self::Output, ProviderError>;

    /// Whether `model` can serve this request at all; a fallback that cannot is passed over.
    fn serves(&self, _model: &ModelSpec) -> bool {
        true
    }
}

/// A chat, whole or streamed.
pub struct ChatAttempt<'a> {
    pub request: &'a ChatRequest,
    pub stream: bool,
}

impl Attempt for ChatAttempt<'_> {
    type Output = Answer;

    async fn run(&self, provider: &Provider, upstream: usize, model: &ModelSpec) -> Result<Answer, ProviderError> {
        let mut request = self.request.clone();
        request.max_tokens = request.max_tokens.min(model.max_output_tokens);
        if !self.stream {
            return provider.chat(upstream, model, &request).await.map(Answer::Whole);
        }
        let mut rest = provider.chat_stream(upstream, model, &request).await?;
        match rest.next().await {
            Some(Ok(first)) => Ok(Answer::Stream { first, rest }),
            Some(Err(e)) => Err(e),
            None => Err(ProviderError::Protocol { provider: model.provider.clone(), message: "empty stream".into() }),
        }
    }
}

/// One image. Each model of the chain gets the request fitted to its own limits ([`crate::image::fit`]).
pub struct ImageAttempt<'a> {
    pub request: &'a crate::image::ImageRequest,
}

impl Attempt for ImageAttempt<'_> {
    type Output = crate::image::ImageResult;

    async fn run(
        &self,
        provider: &Provider,
        upstream: usize,
        model: &ModelSpec,
    ) -> Result<crate::image::ImageResult, ProviderError> {
        let (request, _) = crate::image::fit(model, self.request);
        provider.generate_image(upstream, model, &request).await
    }
}

/// Text to speech: the answer has begun once the first audio arrived. Each model of the chain gets the request
/// fitted to it ([`crate::speech::fit`]); one that makes no audio of the codec asked is passed over.
pub struct SpeechAttempt<'a> {
    pub request: &'a crate::speech::SpeechRequest,
}

impl Attempt for SpeechAttempt<'_> {
    type Output = crate::speech::AudioStream;

    async fn run(
        &self,
        provider: &Provider,
        upstream: usize,
        model: &ModelSpec,
    ) -> Result<crate::speech::AudioStream, ProviderError> {
        let (request, _) = crate::speech::fit(model, self.request).map_err(|message| ProviderError::Rejected {
            provider: model.provider.clone(),
            status: 400,
            message,
        })?;
        provider.speak(upstream, model, &request).await
    }

    fn serves(&self, model: &ModelSpec) -> bool {
        crate::speech::fit(model, self.request).is_ok()
    }
}

/// Speech to speech: the answer has begun once the first audio arrived.
pub struct ConvertAttempt<'a> {
    pub request: &'a crate::speech::ConvertRequest,
}

impl Attempt for ConvertAttempt<'_> {
    type Output = crate::speech::AudioStream;

    async fn run(
        &self,
        provider: &Provider,
        upstream: usize,
        model: &ModelSpec,
    ) -> Result<crate::speech::AudioStream, ProviderError> {
        provider.convert(upstream, model, self.request).await
    }
}

/// A text-to-speech socket: begun once it is open. Only `model` itself serves (its fallbacks speak over HTTP,
/// which the caller reaches with a `SpeechAttempt` of the whole text).
pub struct SpeechSocketAttempt<'a> {
    pub request: &'a crate::providers::SpeechSocketRequest,
    pub model: &'a str,
}

impl Attempt for SpeechSocketAttempt<'_> {
    type Output = crate::providers::SpeechSocket;

    async fn run(
        &self,
        provider: &Provider,
        upstream: usize,
        model: &ModelSpec,
    ) -> Result<crate::providers::SpeechSocket, ProviderError> {
        provider.speech_socket(upstream, model, self.request).await
    }

    fn serves(&self, model: &ModelSpec) -> bool {
        model.name == self.model
    }
}

/// Speech to text.
pub struct TranscribeAttempt<'a> {
    pub request: &'a crate::speech::TranscribeRequest,
}

impl Attempt for TranscribeAttempt<'_> {
    type Output = crate::speech::Transcript;

    async fn run(
        &self,
        provider: &Provider,
        upstream: usize,
        model: &ModelSpec,
    ) -> Result<crate::speech::Transcript, ProviderError> {
        provider.transcribe(upstream, model, self.request).await
    }
}

/// Runs a chat on the first model of its chain that answers. `manual_fallback` skips the primary.
pub async fn dispatch(
    engine: &Engine,
    catalogue: &Catalogue,
    providers: &ProviderSet,
    primary: &ModelSpec,
    manual_fallback: bool,
    request: &ChatRequest,
    stream: bool,
) -> Result<Served, Failed> {
    dispatch_with(engine, catalogue, providers, primary, manual_fallback, &ChatAttempt { request, stream }).await
}

/// Runs `attempt` on the first model of the chain that answers: retries with backoff on each model (another
/// upstream first), then its fallbacks in order. `manual_fallback` skips the primary.
pub async fn dispatch_with<A: Attempt>(
    engine: &Engine,
    catalogue: &Catalogue,
    providers: &ProviderSet,
    primary: &ModelSpec,
    manual_fallback: bool,
    attempt: &A,
) -> Result<Served<A::Output>, Failed> {
    let mut chain: Vec<&ModelSpec> = Vec::with_capacity(1 + primary.fallback.len());
    if !manual_fallback {
        chain.push(primary);
    }
    chain.extend(primary.fallback.iter().filter_map(|name| catalogue.model(name)));
    let mut attempts = 0;
    let ends = tokio::time::Instant::now() + engine.retry.budget;
    let out_of_time =
        |model: &ModelSpec| ProviderError::Timeout { provider: model.provider.clone(), phase: TimeoutPhase::Total };
    let mut first_error: Option<DispatchError> = None;
    let mut first_reason: Option<&'static str> = manual_fallback.then_some("manual");
    'chain: for model in chain {
        let Some(provider) = providers.for_model(model) else { continue };
        if !attempt.serves(model) {
            continue;
        }
        let mut retry = 0;
        let mut failed_upstreams: Vec<usize> = Vec::new();
        loop {
            attempts += 1;
            // Whether the request's budget ran out during the attempt (not the upstream's fault).
            let mut cut = false;
            let error = match engine.pick(&model.provider, &failed_upstreams) {
                Err(rejection) => DispatchError::Pool { provider: model.provider.clone(), rejection },
                Ok(upstream) => {
                    let lease = Lease::new(engine.pool.clone(), model.provider.clone(), upstream);
                    let ran = tokio::time::timeout_at(ends, attempt.run(provider, upstream, model)).await;
                    cut = ran.is_err();
                    match ran.unwrap_or_else(|_| Err(out_of_time(model))) {
                        Ok(answer) => {
                            let fallback = first_reason.map(|reason| {
                                engine.metrics.fallbacks.with_label_values(&[&primary.name, &model.name, reason]).inc();
                                FallbackUsed { reason: reason.to_owned(), primary_model: primary.name.clone() }
                            });
                            return Ok(Served { model: model.clone(), answer, lease, fallback, attempts });
                        }
                        Err(e) => {
                            let counts = !cut
                                && matches!(
                                    e,
                                    ProviderError::RateLimited { .. }
                                        | ProviderError::Upstream { .. }
                                        | ProviderError::Connection { .. }
                                        | ProviderError::Timeout { .. }
                                        | ProviderError::Protocol { .. }
                                        | ProviderError::BadCredentials { .. }
                                );
                            failed_upstreams.push(lease.upstream);
                            lease.report(if counts { Outcome::Failure } else { Outcome::Neutral });
                            DispatchError::Provider(e)
                        }
                    }
                }
            };
            // The caller's own mistake: no other model would do better.
            if let DispatchError::Provider(e @ ProviderError::Rejected { .. }) = &error {
                return Err(Failed { error: DispatchError::Provider(e.clone()), attempts });
            }
            // The budget ran out during the attempt: no retry, no fallback, and the client is told it timed out.
            if cut {
                return Err(Failed { error: DispatchError::Provider(out_of_time(model)), attempts });
            }
            let retry_after = match &error {
                DispatchError::Provider(ProviderError::RateLimited { retry_after, .. }) => *retry_after,
                _ => None,
            };
            let retryable = matches!(&error, DispatchError::Provider(e) if e.is_retryable())
                && retry < engine.retry.max_retries
                && retry_after.is_none_or(|ra| ra <= engine.retry.max_retry_after);
            // A wait that would outlast the budget is not waited: the next model of the chain is tried instead.
            let wait = retryable.then(|| engine.retry.backoff(retry, retry_after));
            if let Some(wait) = wait.filter(|w| tokio::time::Instant::now() + *w < ends) {
                retry += 1;
                engine.metrics.retries.with_label_values(&[&model.provider]).inc();
                tracing::debug!(model = %model.name, retry, wait_ms = wait.as_millis() as u64, "retrying");
                tokio::time::sleep(wait).await;
                continue;
            }
            first_reason.get_or_insert(reason(&error));
            tracing::debug!(model = %model.name, reason = reason(&error), "moving to the next model of the chain");
            // The primary's failure is the one to report when the whole chain fails: it is what the caller asked for.
            first_error.get_or_insert(error);
            if tokio::time::Instant::now() >= ends {
                break 'chain;
            }
            break;
        }
    }
    let error = first_error.unwrap_or(DispatchError::Pool {
        provider: primary.provider.clone(),
        rejection: PoolRejection::UnknownProvider,
    });
    Err(Failed { error, attempts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_honours_retry_after() {
        let policy = RetryPolicy {
            max_retries: 3,
            base: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(5),
            budget: Duration::from_secs(600),
        };
        for retry in 0..6 {
            let exp = Duration::from_millis(100 * (1 << retry)).min(Duration::from_secs(1));
            let wait = policy.backoff(retry, None);
            assert!(wait >= exp / 2 && wait <= exp, "retry {retry}: {wait:?}");
        }
        assert!(policy.backoff(0, Some(Duration::from_secs(2))) >= Duration::from_secs(2));
    }
}
