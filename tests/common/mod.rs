//! Shared test harness: a gateway served in process on 127.0.0.1 port 0, wired to a mock upstream.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod backends;
pub mod load;
#[path = "../mock/server.rs"]
pub mod mock;
pub mod pair;
pub mod process;
pub mod ws;

use actix_web::{web, HttpServer};
use std::collections::HashMap;
use switchyard::config::Config;
use switchyard::state::AppState;

pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

pub struct Gateway {
    pub url: String,
    pub key: String,
    pub state: web::Data<AppState>,
    pub client: reqwest::Client,
    handle: actix_web::dev::ServerHandle,
    _dir: tempfile::TempDir,
}

/// The configuration tests start from: defaults, nothing from the process environment.
/// Embeddings are off (tests that need the model turn them on with [`with_embeddings`]), so that every other test
/// gateway starts without loading it.
pub fn test_config() -> Config {
    let mut config =
        Config::load_with_env(None, figment::providers::Env::prefixed("SWITCHYARD_TESTS_NEVER_SET__")).unwrap();
    config.embeddings.cache_dir = String::new();
    config.embeddings.threads = 1;
    config
}

/// The model files `make setup` fetches (`.cache/models`), or `None` (and a SKIPPED line) when they are missing
/// outside CI; in CI they must be there.
pub fn models_dir() -> Option<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/models");
    switchyard_actors::embed::EmbeddingFiles::for_tests(&dir).map(|_| dir.to_string_lossy().into_owned())
}

/// The Python that has the test requirements: `make test`'s (SWITCHYARD_TEST_PYTHON), else `.cache/venv`'s.
pub fn python() -> Option<std::path::PathBuf> {
    if let Ok(path) = std::env::var("SWITCHYARD_TEST_PYTHON") {
        return Some(path.into());
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/venv/bin/python");
    venv.exists().then_some(venv)
}

/// Turns embeddings on with the cached model files.
pub fn with_embeddings(config: &mut Config, dir: &str) {
    config.embeddings.cache_dir = dir.to_owned();
    config.embeddings.threads = 2;
}

/// Provider variables pointing every HTTP provider at the mock.
pub fn mock_env(mock: &mock::MockServer) -> HashMap<String, String> {
    let url = mock.url();
    HashMap::from([
        ("OPENAI_BASE_URL".into(), format!("{url}/v1")),
        ("OPENAI_API_KEY".into(), "sk-test-openai".into()),
        ("MISTRAL_BASE_URL".into(), format!("{url}/v1")),
        ("MISTRAL_API_KEY".into(), "test-mistral".into()),
        ("ANTHROPIC_BASE_URL".into(), url),
        ("ANTHROPIC_API_KEY".into(), "test-anthropic".into()),
        ("SWITCHYARD_ADMIN_KEY".into(), ADMIN_KEY.into()),
    ])
}

impl Gateway {
    pub async fn start(env: HashMap<String, String>, tweak: impl FnOnce(&mut Config)) -> Gateway {
        let (gateway, bootstrap) = Gateway::serve(env, tweak).await;
        Gateway { key: bootstrap.expect("a fresh data dir bootstraps a key").api_key, ..gateway }
    }

    /// A gateway over a store that already has its workspaces (a database another gateway made): no key of its
    /// own (`key` is empty).
    pub async fn start_existing(env: HashMap<String, String>, tweak: impl FnOnce(&mut Config)) -> Gateway {
        let (gateway, bootstrap) = Gateway::serve(env, tweak).await;
        assert!(bootstrap.is_none(), "the store already had workspaces");
        gateway
    }

    async fn serve(
        env: HashMap<String, String>,
        tweak: impl FnOnce(&mut Config),
    ) -> (Gateway, Option<switchyard::state::Bootstrap>) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config();
        config.server.data_dir = dir.path().to_path_buf();
        tweak(&mut config);
        let catalogue = config.catalogue().unwrap();
        let lookup = move |name: &str| env.get(name).cloned();
        let (state, bootstrap) = AppState::build(config, catalogue, &lookup).await.unwrap();
        let state = web::Data::new(state);
        let data = state.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = HttpServer::new(move || switchyard::app(data.clone()))
            .workers(1)
            .shutdown_timeout(1)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let url = format!("http://{addr}");
        (Gateway { url, key: String::new(), state, client: reqwest::Client::new(), handle, _dir: dir }, bootstrap)
    }

    /// A gateway over a catalogue of the test's own.
    pub async fn with_catalogue(
        env: HashMap<String, String>,
        catalogue: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> Gateway {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), catalogue).unwrap();
        let (_, path) = file.keep().unwrap();
        Gateway::start(env, move |c| {
            c.catalogue.path = path.to_string_lossy().into_owned();
            tweak(c);
        })
        .await
    }

    /// Creates a workspace with its own key through the admin API.
    pub async fn workspace(&self, credits: &str, rpm: u32, concurrent: u32, tpm: u32) -> (String, String) {
        let created: serde_json::Value = self
            .admin(reqwest::Method::POST, "/admin/workspaces")
            .json(&serde_json::json!({"name": "test", "credits": credits,
                "plan": {"requests_per_minute": rpm, "concurrent_requests": concurrent, "tokens_per_minute": tpm}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = created["id"].as_str().unwrap().to_owned();
        let key: serde_json::Value = self
            .admin(reqwest::Method::POST, &format!("/admin/workspaces/{id}/keys"))
            .json(&serde_json::json!({"name": "k"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (id, key["key"].as_str().unwrap().to_owned())
    }

    /// The wallet as the ledger holds it, in millicredits: (balance, reserved). A read refused 429 (a socket just
    /// closed may hold the key's only concurrency slot for a moment more) is tried again, boundedly.
    pub async fn wallet(&self, key: &str) -> (i64, i64) {
        let mut wallet = serde_json::Value::Null;
        for _ in 0..200 {
            let response =
                self.client.get(format!("{}/api/billing/wallet", self.url)).bearer_auth(key).send().await.unwrap();
            if response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS {
                wallet = response.json().await.unwrap();
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let milli = |v: &serde_json::Value| (v.as_f64().unwrap() * 1000.0).round() as i64;
        (milli(&wallet["balance"]), milli(&wallet["reserved"]))
    }

    /// Waits (bounded) until nothing is reserved in the workspace, e.g. after abandoned streams settle.
    pub async fn settled(&self, key: &str) -> (i64, i64) {
        for _ in 0..200 {
            let wallet = self.wallet(key).await;
            if wallet.1 == 0 {
                return wallet;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.wallet(key).await
    }

    /// A short chat completion with `key` (gpt-3.5-turbo): its status and body (`null` when not JSON).
    pub async fn chat(&self, key: &str) -> (u16, serde_json::Value) {
        let body =
            serde_json::json!({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hello there"}]});
        let answer = self.client.post(format!("{}/v1/chat/completions", self.url)).bearer_auth(key).json(&body).send();
        let answer = answer.await.unwrap();
        (answer.status().as_u16(), answer.json().await.unwrap_or_default())
    }

    /// The committed usage records of a workspace: (id, credits in millicredits, status).
    pub async fn usage(&self, workspace: &str) -> Vec<(String, i64, String)> {
        self.state.engine().flush_usage().await;
        self.state.store.usage_rows(workspace).await.unwrap()
    }

    /// The committed balance in the store, in millicredits.
    pub async fn stored_balance(&self, workspace: &str) -> i64 {
        self.state.engine().flush_usage().await;
        self.state.store.workspace(workspace).await.unwrap().expect("the workspace is stored").credits.milli()
    }

    /// A gateway with every provider pointed at `mock`.
    pub async fn with_mock(mock: &mock::MockServer) -> Gateway {
        Gateway::start(mock_env(mock), |_| {}).await
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.url)).bearer_auth(&self.key)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.url)).bearer_auth(&self.key)
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.url)).bearer_auth(ADMIN_KEY)
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")).map(str::to_owned))
        .collect()
}

/// The error envelope's code, or panics with the body.
pub async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    let code = body["error"]["code"].as_str().unwrap_or_else(|| panic!("no error envelope: {body}")).to_owned();
    for field in ["message", "type", "code"] {
        assert!(body["error"][field].is_string(), "envelope lacks {field}: {body}");
    }
    assert!(body["error"].get("param").is_some(), "envelope lacks param: {body}");
    (status, code)
}

/// A real WAV file: 16-bit mono PCM at 8 kHz, a 440 Hz tone.
pub fn wav(samples: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..samples)
        .flat_map(|i| {
            let v = ((i as f64 * 440.0 * std::f64::consts::TAU / 8000.0).sin() * 8000.0) as i16;
            v.to_le_bytes()
        })
        .collect();
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&8000u32.to_le_bytes());
    out.extend_from_slice(&16000u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    out
}
