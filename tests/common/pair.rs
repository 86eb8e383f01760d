//! A primary and a backup upstream: OpenAI-shaped models on one mock, Anthropic-shaped on another, so the primary
//! can fail while its fallback serves.

use super::mock::MockServer;
use super::ADMIN_KEY;
use serde_json::{json, Value};
use std::collections::HashMap;

/// `flat` costs exactly 1 credit per completion token and nothing for the prompt, and the simulator always
/// answers at least `max_tokens`, so a request's reservation is exactly its cost.
pub const CATALOGUE: &str = r#"
[providers.simulator]
kind = "simulator"
key_required = false

[providers.openai]
kind = "openai"
base_url_env = "OPENAI_BASE_URL"
api_key_env = "OPENAI_API_KEY"

[providers.anthropic]
kind = "anthropic"
base_url_env = "ANTHROPIC_BASE_URL"
api_key_env = "ANTHROPIC_API_KEY"

[models.flat]
provider = "simulator"
upstream = "flat"
context_window = 1000
max_output_tokens = 100
default_max_tokens = 10
pricing = { prompt_per_1k = 0, completion_per_1k = 1000 }

[models.gpt]
provider = "openai"
upstream = "gpt-4o"
context_window = 8000
max_output_tokens = 1000
default_max_tokens = 50
pricing = { prompt_per_1k = 10, completion_per_1k = 30 }
fallback = ["claude"]

[models.claude]
provider = "anthropic"
upstream = "claude-3-5-haiku"
context_window = 8000
max_output_tokens = 1000
default_max_tokens = 50
pricing = { prompt_per_1k = 5, completion_per_1k = 25 }

# Answers as long as a test likes (tests/hostile.rs reads one of 200,000 words a byte a second).
[models.long]
provider = "openai"
upstream = "gpt-long"
context_window = 2000000
max_output_tokens = 1000000
default_max_tokens = 50
pricing = { prompt_per_1k = 0.001, completion_per_1k = 0.001 }

[models.lonely]
provider = "openai"
upstream = "gpt-4o-mini"
context_window = 8000
max_output_tokens = 1000
default_max_tokens = 50
pricing = { prompt_per_1k = 1, completion_per_1k = 2 }
"#;

pub fn admin_env() -> HashMap<String, String> {
    HashMap::from([("SWITCHYARD_ADMIN_KEY".to_owned(), ADMIN_KEY.to_owned())])
}

/// OpenAI models on `primary`, Anthropic models on `backup`, so the primary can fail while the fallback serves.
pub fn two_mock_env(primary: &MockServer, backup: &MockServer) -> HashMap<String, String> {
    let mut env = admin_env();
    env.insert("OPENAI_BASE_URL".into(), format!("{}/v1", primary.url()));
    env.insert("OPENAI_API_KEY".into(), "sk-primary".into());
    env.insert("ANTHROPIC_BASE_URL".into(), backup.url());
    env.insert("ANTHROPIC_API_KEY".into(), "backup".into());
    env
}

pub fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello there"}], "stream": stream})
}
