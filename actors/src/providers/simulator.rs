//! The built-in simulator provider: deterministic text at a configurable pace, so the gateway can be tried and
//! benchmarked with no provider account. The same messages always give the same answer.

use super::ChatProvider;
use crate::catalogue::ModelSpec;
use crate::chat::{estimate_tokens, ChatEvent, ChatRequest, ChatResponse, ChatStream, FinishReason, Usage};
use crate::error::ProviderError;
use futures::stream::StreamExt;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimulatorConfig {
    /// Time to the first token.
    pub ttft: Duration,
    /// Tokens per second after the first; 0 means as fast as possible.
    pub tokens_per_second: u32,
    /// How many tokens an answer has when `max_tokens` does not cut it short.
    pub reply_tokens: u32,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig { ttft: Duration::ZERO, tokens_per_second: 0, reply_tokens: 24 }
    }
}

const WORDS: &[&str] = &[
    "the",
    "gateway",
    "routes",
    "every",
    "request",
    "through",
    "one",
    "key",
    "and",
    "one",
    "wallet",
    "while",
    "tokens",
    "stream",
    "back",
    "as",
    "they",
    "arrive",
    "from",
    "a",
    "simulated",
    "model",
    "that",
    "never",
    "sleeps",
    "unless",
    "asked",
    "to",
    "so",
    "benchmarks",
    "measure",
    "only",
    "overhead",
];

pub struct Simulator {
    config: SimulatorConfig,
}

impl Simulator {
    pub fn new(config: SimulatorConfig) -> Self {
        Simulator { config }
    }

    /// The answer's tokens (each a word, later ones with a leading space) and why it stopped.
    fn answer(&self, request: &ChatRequest) -> (Vec<String>, FinishReason, Usage) {
        let seed = request.messages.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, m| {
            m.content.bytes().fold(hash, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
        });
        let wanted = self.config.reply_tokens.max(1);
        let count = wanted.min(request.max_tokens);
        let reason = if count < wanted { FinishReason::Length } else { FinishReason::Stop };
        let tokens: Vec<String> = (0..count as u64)
            .map(|i| {
                let word = WORDS[((seed >> 7).wrapping_add(i * 7) % WORDS.len() as u64) as usize];
                if i == 0 {
                    word.to_owned()
                } else {
                    format!(" {word}")
                }
            })
            .collect();
        let prompt_tokens = request.messages.iter().map(|m| estimate_tokens(&m.content) + 4).sum();
        (tokens, reason, Usage { prompt_tokens, completion_tokens: u64::from(count) })
    }

    fn interval(&self) -> Duration {
        match self.config.tokens_per_second {
            0 => Duration::ZERO,
            rate => Duration::from_secs(1) / rate,
        }
    }
}

impl ChatProvider for Simulator {
    async fn chat(&self, _model: &ModelSpec, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let (tokens, finish_reason, usage) = self.answer(request);
        let pace = self.config.ttft + self.interval() * (tokens.len().saturating_sub(1) as u32);
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
        Ok(ChatResponse { text: tokens.concat(), finish_reason, usage })
    }

    async fn chat_stream(&self, _model: &ModelSpec, request: &ChatRequest) -> Result<ChatStream, ProviderError> {
        let (tokens, reason, usage) = self.answer(request);
        let (ttft, interval) = (self.config.ttft, self.interval());
        let deltas = futures::stream::iter(tokens.into_iter().enumerate()).then(move |(i, token)| async move {
            let wait = if i == 0 { ttft } else { interval };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            Ok(ChatEvent::Delta(token))
        });
        let finish = futures::stream::once(async move { Ok(ChatEvent::Finish { reason, usage }) });
        Ok(deltas.chain(finish).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::Catalogue;
    use crate::chat::{Message, Role};

    fn request(text: &str, max_tokens: u32) -> ChatRequest {
        ChatRequest {
            messages: vec![Message::text(Role::User, text)],
            max_tokens,
            temperature: None,
            top_p: None,
            stop: vec![],
            json: false,
        }
    }

    #[tokio::test]
    async fn same_messages_same_answer_and_stream_matches_whole() {
        let catalogue = Catalogue::builtin().unwrap();
        let model = catalogue.model("sim-chat").unwrap();
        let sim = Simulator::new(SimulatorConfig::default());
        let a = sim.chat(model, &request("hello", 100)).await.unwrap();
        let b = sim.chat(model, &request("hello", 100)).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(a.usage.completion_tokens, 24);
        let mut stream = sim.chat_stream(model, &request("hello", 100)).await.unwrap();
        let mut text = String::new();
        let mut finished = None;
        while let Some(event) = stream.next().await {
            match event.unwrap() {
                ChatEvent::Delta(t) => text.push_str(&t),
                ChatEvent::Finish { reason, usage } => finished = Some((reason, usage)),
            }
        }
        assert_eq!(text, a.text);
        assert_eq!(finished, Some((FinishReason::Stop, a.usage)));
    }

    #[tokio::test]
    async fn max_tokens_cuts_the_answer_with_length() {
        let catalogue = Catalogue::builtin().unwrap();
        let model = catalogue.model("sim-chat").unwrap();
        let sim = Simulator::new(SimulatorConfig::default());
        let answer = sim.chat(model, &request("hello", 3)).await.unwrap();
        assert_eq!(answer.usage.completion_tokens, 3);
        assert_eq!(answer.finish_reason, FinishReason::Length);
        assert_eq!(answer.text.split(' ').count(), 3);
    }
}
