//! Realtime (voice over WebSocket) usage: what one response of a session used, as OpenAI's `response.done` reports
//! it, and what it costs at a model's prices (text, audio and cached input tokens priced apart).

use crate::catalogue::Pricing;
use crate::credits::Credits;
use serde::Deserialize;

/// `response.done`'s `response.usage`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RealtimeUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub input_token_details: InputDetails,
    pub output_token_details: OutputDetails,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct InputDetails {
    pub text_tokens: u64,
    pub audio_tokens: u64,
    pub cached_tokens: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct OutputDetails {
    pub text_tokens: u64,
    pub audio_tokens: u64,
}

impl RealtimeUsage {
    /// What the response costs, rounded up to the millicredit. Cached input is priced as cached, whether it was
    /// text or audio; the rest of the input at its own kind's price.
    pub fn cost(&self, p: &Pricing) -> Credits {
        let i = self.input_token_details;
        let o = self.output_token_details;
        let cached = i.cached_tokens.min(i.text_tokens + i.audio_tokens);
        let cached_audio = cached.saturating_sub(i.text_tokens);
        let cached_text = cached - cached_audio;
        let parts = [
            (i.text_tokens - cached_text, p.prompt_per_1k),
            (i.audio_tokens - cached_audio, p.audio_prompt_per_1k),
            (cached, p.cached_prompt_per_1k),
            (o.text_tokens, p.completion_per_1k),
            (o.audio_tokens, p.audio_completion_per_1k),
        ];
        let milli: u128 = parts.iter().map(|(n, price)| u128::from(*n) * price.milli().max(0) as u128).sum();
        Credits(i64::try_from(milli.div_ceil(1000)).unwrap_or(i64::MAX))
    }

    /// What a response that never reached its `response.done` (the provider or the client went away) used, as far
    /// as the relay saw it: input audio at one token per 100 ms, output audio at one per 50 ms (OpenAI's rates), and
    /// text out at one token per four characters.
    pub fn estimate(input_audio_ms: u64, output_audio_ms: u64, output_text_chars: u64) -> RealtimeUsage {
        let input = InputDetails { audio_tokens: input_audio_ms / 100, ..Default::default() };
        let output = OutputDetails { text_tokens: output_text_chars.div_ceil(4), audio_tokens: output_audio_ms / 50 };
        RealtimeUsage {
            input_tokens: input.audio_tokens,
            output_tokens: output.text_tokens + output.audio_tokens,
            input_token_details: input,
            output_token_details: output,
        }
    }

    /// The most one response can cost: its whole context as audio in, `max_output` tokens as audio out.
    pub fn most(p: &Pricing, context: u64, max_output: u64) -> Credits {
        let dearest_in = p.audio_prompt_per_1k.milli().max(p.prompt_per_1k.milli()).max(0) as u128;
        let dearest_out = p.audio_completion_per_1k.milli().max(p.completion_per_1k.milli()).max(0) as u128;
        let milli = u128::from(context) * dearest_in + u128::from(max_output) * dearest_out;
        Credits(i64::try_from(milli.div_ceil(1000)).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_token_is_priced_apart() {
        let p = Pricing {
            prompt_per_1k: Credits(4_000),
            completion_per_1k: Credits(16_000),
            audio_prompt_per_1k: Credits(32_000),
            audio_completion_per_1k: Credits(64_000),
            cached_prompt_per_1k: Credits(400),
            ..Default::default()
        };
        let usage: RealtimeUsage = serde_json::from_str(
            r#"{"total_tokens": 1700, "input_tokens": 1200, "output_tokens": 500,
                "input_token_details": {"text_tokens": 200, "audio_tokens": 1000, "cached_tokens": 300},
                "output_token_details": {"text_tokens": 100, "audio_tokens": 400}}"#,
        )
        .unwrap_or_default();
        // Cached: 200 text + 100 audio. Then 0 text in, 900 audio in, 300 cached, 100 text out, 400 audio out.
        let expected = 900 * 32 + 300 * 400 / 1000 + 100 * 16 + 400 * 64;
        assert_eq!(usage.cost(&p), Credits(expected));
        assert_eq!(RealtimeUsage::default().cost(&p), Credits(0));
        assert_eq!(RealtimeUsage::most(&p, 1000, 100), Credits(32_000 + 6_400));
    }
}
