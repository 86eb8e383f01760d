//! Configuration: `config/default.toml` compiled in, a `--config` file layered over it, then environment
//! variables `SWITCHYARD__SECTION__KEY`. Unknown keys are refused with an error that names them.

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchyard_actors::engine::dispatch::RetryPolicy;
use switchyard_actors::engine::pool::BreakerConfig;
use switchyard_actors::engine::EngineConfig;
use switchyard_actors::providers::SimulatorConfig;
use switchyard_actors::{Catalogue, Credits, Timeouts};

pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub upstream: UpstreamConfig,
    pub limits: LimitsConfig,
    pub pool: PoolConfig,
    pub billing: BillingConfig,
    pub media: MediaConfig,
    pub realtime: RealtimeConfig,
    pub simulator: SimulatorSection,
    pub embeddings: EmbeddingsConfig,
    pub vectors: VectorsConfig,
    pub catalogue: CatalogueConfig,
    pub tasks: TasksConfig,
    pub bootstrap: BootstrapConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: String,
    pub data_dir: PathBuf,
    pub workers: usize,
    pub max_body_bytes: usize,
    pub shutdown_timeout_secs: u64,
    /// On SIGTERM, how long `/readyz` answers 503 while the gateway still serves, before it stops accepting.
    pub drain_secs: u64,
    pub public_url: String,
    /// Origins (exact, e.g. `https://app.example.com`) whose pages may call the gateway; empty: no CORS headers.
    pub cors_allowed_origins: Vec<String>,
    pub request_head_timeout_ms: u64,
    pub keep_alive_secs: u64,
    pub body_idle_secs: u64,
    pub body_min_bytes_per_sec: u64,
    pub client_stall_secs: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Empty: SQLite in the data directory. `postgres://…`: a PostgreSQL server.
    pub url: String,
    /// With PostgreSQL: a gateway not heard from for this long has its holds released by the others.
    pub instance_timeout_secs: u64,
    /// With PostgreSQL: how often each gateway reads the keys, plans and session revocations the others changed
    /// (with Redis too they are told at once, and this is the fallback).
    pub poll_secs: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Empty: keys' limits counted in this process. `redis://…`: counted in Redis, shared by every gateway.
    pub url: String,
    /// How long a concurrency slot's lease lives unrenewed (a stopped gateway's slots come back after it).
    pub lease_secs: u64,
    /// Put before every name the gateway gives a Redis entry (several deployments can share one Redis).
    pub prefix: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub connect_timeout_ms: u64,
    pub first_byte_timeout_ms: u64,
    pub between_chunks_timeout_ms: u64,
    pub total_timeout_ms: u64,
    pub poll_interval_ms: u64,
    pub max_response_bytes: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub session_idle_secs: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub max_retries: u32,
    pub retry_base_ms: u64,
    pub retry_max_backoff_ms: u64,
    pub max_retry_after_secs: u64,
    pub breaker_failures: u32,
    pub breaker_open_secs: u64,
    pub provider_max_in_flight: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingConfig {
    pub import_interval_ms: u64,
    pub checkpoint_interval_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Empty: files under the data directory. `s3://bucket/prefix`: an S3-compatible store shared by the gateways.
    pub url: String,
    pub max_upload_bytes: u64,
    pub upload_ttl_secs: u64,
    /// How long a signed media URL (in responses) opens without credentials.
    pub url_ttl_secs: u64,
}

/// Realtime voice sessions. A chat model is made a voice agent with `speech_to_text` and `text_to_speech`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealtimeConfig {
    /// Transcribes committed input audio (a `transcription` model of the catalogue).
    pub speech_to_text: String,
    /// Speaks the chat model's answer as it is written (a `speech` model; ElevenLabs' `stream-input` socket,
    /// its fallbacks over HTTP).
    pub text_to_speech: String,
    /// Streams a composed session's input audio, as it is appended, into ElevenLabs' realtime speech-to-text
    /// socket (`streaming_transcription_model`, billed per second of audio sent); a turn whose socket fails is
    /// transcribed over HTTP by `speech_to_text` at commit, as when this is off.
    pub streaming_transcription: bool,
    pub streaming_transcription_model: String,
    /// The longest a session may last, and the longest it may sit with no frame either way.
    pub max_session_secs: u64,
    pub idle_secs: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorSection {
    pub ttft_ms: u64,
    pub tokens_per_second: u32,
    pub reply_tokens: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsConfig {
    /// The directory `.ci/fetch-models` fills; empty turns embeddings off.
    pub cache_dir: String,
    pub threads: usize,
    pub queue: usize,
    /// Load the model at start rather than on first use (first embedding requests then wait no load).
    pub preload: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VectorBackend {
    Auto,
    Embedded,
    Qdrant,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorsConfig {
    pub backend: VectorBackend,
    pub collection_prefix: String,
    pub chunk_characters: usize,
    pub chunk_overlap: usize,
    pub max_documents: usize,
    pub max_chunks: usize,
    pub max_top_k: usize,
    /// The HNSW search beam (both backends); 0 leaves the store's default.
    pub search_ef: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueConfig {
    pub path: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TasksConfig {
    /// A directory of `<slug>.toml` task files; empty for none.
    pub dir: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapConfig {
    pub credits: Credits,
    pub requests_per_minute: u32,
    pub concurrent_requests: u32,
    pub tokens_per_minute: u32,
}

/// How many values a metric label that callers choose may take (see the README's metrics section).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Workspaces named in `workspace` labels; the rest are counted as `_other`.
    pub max_workspaces: usize,
    /// Values of each other free label (reporting groups, tasks, revisions); the rest are `_other`.
    pub max_label_values: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// The defaults, a file over them (if given), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, String> {
        Self::load_with_env(file, Env::prefixed("SWITCHYARD__").split("__"))
    }

    /// As `load`, with the environment layer supplied (tests pass a fixed one).
    pub fn load_with_env(file: Option<&Path>, env: Env) -> Result<Self, String> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(format!("config file {} does not exist", path.display()));
            }
            figment = figment.merge(Toml::file(path));
        }
        let config: Config = figment.merge(env).extract().map_err(|e| describe(&e))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let server = &self.server;
        for (name, value) in [
            ("server.max_body_bytes", server.max_body_bytes as u64),
            ("server.request_head_timeout_ms", server.request_head_timeout_ms),
            ("server.body_idle_secs", server.body_idle_secs),
        ] {
            if value == 0 {
                return Err(format!("{name} must be greater than 0"));
            }
        }
        let u = &self.upstream;
        for (name, value) in [
            ("upstream.connect_timeout_ms", u.connect_timeout_ms),
            ("upstream.first_byte_timeout_ms", u.first_byte_timeout_ms),
            ("upstream.between_chunks_timeout_ms", u.between_chunks_timeout_ms),
            ("upstream.total_timeout_ms", u.total_timeout_ms),
            ("upstream.max_response_bytes", u.max_response_bytes),
        ] {
            if value == 0 {
                return Err(format!("{name} must be greater than 0"));
            }
        }
        let v = &self.vectors;
        if v.chunk_characters < 100 || v.chunk_overlap * 2 > v.chunk_characters {
            return Err("vectors.chunk_characters must be at least 100 and twice vectors.chunk_overlap".into());
        }
        if v.max_documents == 0 || v.max_chunks == 0 || v.max_top_k == 0 {
            return Err("vectors.max_documents, max_chunks and max_top_k must be greater than 0".into());
        }
        if v.search_ef > 4096 {
            return Err("vectors.search_ef must be from 0 (the store's default) to 4096".into());
        }
        if self.bootstrap.credits.milli() < 0 {
            return Err("bootstrap.credits must not be negative".into());
        }
        Ok(())
    }

    pub fn timeouts(&self) -> Timeouts {
        let u = &self.upstream;
        Timeouts {
            connect: Duration::from_millis(u.connect_timeout_ms),
            first_byte: Duration::from_millis(u.first_byte_timeout_ms),
            between_chunks: Duration::from_millis(u.between_chunks_timeout_ms),
            total: Duration::from_millis(u.total_timeout_ms),
            poll_interval: Duration::from_millis(u.poll_interval_ms.max(1)),
            max_body_bytes: usize::try_from(u.max_response_bytes).unwrap_or(usize::MAX),
        }
    }

    pub fn engine(&self) -> EngineConfig {
        let p = &self.pool;
        EngineConfig {
            session_idle: Duration::from_secs(self.limits.session_idle_secs.max(1)),
            breaker: BreakerConfig {
                failure_threshold: p.breaker_failures.max(1),
                open_for: Duration::from_secs(p.breaker_open_secs),
            },
            retry: RetryPolicy {
                max_retries: p.max_retries,
                base: Duration::from_millis(p.retry_base_ms),
                max_backoff: Duration::from_millis(p.retry_max_backoff_ms),
                max_retry_after: Duration::from_secs(p.max_retry_after_secs),
                budget: Duration::from_millis(self.upstream.total_timeout_ms),
            },
            provider_max_in_flight: p.provider_max_in_flight.max(1),
            writer_capacity: 8192,
            import_every: Duration::from_millis(self.billing.import_interval_ms.max(1)),
            maintain_every: Duration::from_millis(self.billing.checkpoint_interval_ms.max(10)),
        }
    }

    pub fn simulator(&self) -> SimulatorConfig {
        SimulatorConfig {
            ttft: Duration::from_millis(self.simulator.ttft_ms),
            tokens_per_second: self.simulator.tokens_per_second,
            reply_tokens: self.simulator.reply_tokens,
        }
    }

    /// The catalogue named by `catalogue.path`, or the built-in one.
    pub fn catalogue(&self) -> Result<Catalogue, String> {
        if self.catalogue.path.trim().is_empty() {
            return Catalogue::builtin();
        }
        let text = std::fs::read_to_string(&self.catalogue.path)
            .map_err(|e| format!("cannot read model catalogue {}: {e}", self.catalogue.path))?;
        Catalogue::parse(&text)
    }
}

/// Figment's errors, one line each, with the key path they concern.
fn describe(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|e| {
            let path = e.path.join(".");
            if path.is_empty() {
                format!("configuration: {}", e.kind)
            } else {
                format!("configuration key `{path}`: {}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use std::io::Write;

    fn no_env() -> Env {
        Env::prefixed("SWITCHYARD_TEST_UNUSED_PREFIX__")
    }

    #[test]
    fn defaults_load() {
        let config = Config::load_with_env(None, no_env()).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:8080");
        assert_eq!(config.bootstrap.credits.milli(), 1_000_000);
        config.catalogue().unwrap();
    }

    #[test]
    fn a_file_layers_over_the_defaults() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[server]\nlisten = \"127.0.0.1:9999\"").unwrap();
        let config = Config::load_with_env(Some(file.path()), no_env()).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:9999");
        assert_eq!(config.server.max_body_bytes, 1_048_576);
    }

    #[test]
    fn unknown_keys_are_named() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[server]\nlisten_port = 80").unwrap();
        let error = Config::load_with_env(Some(file.path()), no_env()).unwrap_err();
        assert!(error.contains("listen_port"), "{error}");
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[serverz]\nx = 1").unwrap();
        let error = Config::load_with_env(Some(file.path()), no_env()).unwrap_err();
        assert!(error.contains("serverz"), "{error}");
    }

    #[test]
    fn environment_overrides_with_double_underscores() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SWITCHYARD__SERVER__LISTEN", "127.0.0.1:7777");
            jail.set_env("SWITCHYARD__SIMULATOR__TTFT_MS", "15");
            let config = Config::load(None).map_err(figment::Error::from)?;
            assert_eq!(config.server.listen, "127.0.0.1:7777");
            assert_eq!(config.simulator.ttft_ms, 15);
            Ok(())
        });
    }

    #[test]
    fn wrong_types_and_zero_timeouts_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SWITCHYARD__SERVER__WORKERS", "many");
            let error = Config::load(None).unwrap_err();
            assert!(error.contains("server.workers"), "{error}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("SWITCHYARD__UPSTREAM__TOTAL_TIMEOUT_MS", "0");
            let error = Config::load(None).unwrap_err();
            assert!(error.contains("upstream.total_timeout_ms"), "{error}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("SWITCHYARD__VECTORS__SEARCH_EF", "100000");
            let error = Config::load(None).unwrap_err();
            assert!(error.contains("vectors.search_ef"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let error = Config::load_with_env(Some(Path::new("/nonexistent/x.toml")), no_env()).unwrap_err();
        assert!(error.contains("does not exist"));
    }
}
