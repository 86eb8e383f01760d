//! The application state every handler shares: configuration, catalogue, providers, store, key cache, metrics.

use crate::auth::{self, KeyCache};
use crate::clock::now_unix;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{KeyRecord, Notice, Plan, RedisLimits, Store, Workspace};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use switchyard_actors::engine::journal::UsageJournal;
use switchyard_actors::engine::ledger::SharedWallets;
use switchyard_actors::engine::session::{SharedLimits, SharedSetup};
use switchyard_actors::engine::Engine;
use switchyard_actors::{Catalogue, Credits, ProviderSet};

pub struct AppState {
    pub config: Arc<Config>,
    pub catalogue: Arc<Catalogue>,
    pub providers: ProviderSet,
    pub store: Store,
    pub keys: KeyCache,
    /// Browser session tokens and media URL signatures.
    pub sessions: Arc<crate::sessions::Sessions>,
    pub metrics: Metrics,
    /// SHA-256 of `SWITCHYARD_ADMIN_KEY`; the admin API is off when unset.
    pub admin_key: Option<[u8; 32]>,
    /// Uploaded and generated media.
    pub media: Arc<dyn crate::media::BlobStore>,
    /// Scoped vector data (embedded Qdrant engine, or a Qdrant server).
    pub vectors: Arc<dyn switchyard_actors::vectors::VectorStore>,
    /// Which vector backend is in use: `embedded` or `qdrant`.
    pub vector_backend: &'static str,
    /// Serialises the admin API's task edits (each one reads, changes and stores a whole task).
    pub task_edits: tokio::sync::Mutex<()>,
    /// The tasks, handed to the revision router when the engine starts (and read by runs through the engine).
    tasks: switchyard_actors::engine::router::TaskSnapshot,
    /// The engine's actors, started on the first HTTP worker's arbiter (see `start_engine`).
    engine: OnceLock<Engine>,
    /// Committed balances read at start, handed to the ledger when the engine starts.
    opening_balances: Vec<(String, Credits)>,
    /// The usage journal, handed to the ledger when the engine starts.
    journal: std::sync::Mutex<Option<UsageJournal>>,
    /// With PostgreSQL: the wallets shared with the other gateways on it.
    shared: Option<Arc<crate::store::PgWallets>>,
    /// With Redis: the keys' limits shared with the other gateways on it.
    limits: Option<Arc<dyn SharedLimits>>,
    /// With PostgreSQL and Redis: the channel the gateways tell each other their changes on.
    notices: Option<crate::store::Notices>,
    /// This gateway's id among several (`instance_id`).
    pub instance: String,
    /// Set when the gateway is stopping: `/readyz` answers 503 (`server.drain_secs`).
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Held for as long as the state lives: no other gateway may use this data directory.
    _data_dir_lock: std::fs::File,
}

/// What the first start with an empty data directory created, to be printed once.
#[derive(Debug)]
pub struct Bootstrap {
    pub workspace_id: String,
    pub api_key: String,
}

impl AppState {
    /// Builds the state; `env` reads provider variables and `SWITCHYARD_ADMIN_KEY` (the process environment in
    /// production, a fixed map in tests).
    pub async fn build(
        config: Config,
        catalogue: Catalogue,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Self, Option<Bootstrap>), String> {
        let providers = ProviderSet::new(&catalogue, env, config.timeouts(), config.simulator())?;
        let data_dir_lock = lock_data_dir(&config.server.data_dir)?;
        let store = Store::connect(Some(&config.database.url), &config.server.data_dir).await?;
        let bootstrap =
            bootstrap(&store, &config).await.map_err(|e| format!("cannot create the default workspace: {e}"))?;
        let keys = KeyCache::load(&store).await.map_err(|e| format!("cannot load API keys: {e}"))?;
        let sessions = open_sessions(&store, &config).await?;
        let revoked = store.revoked_sessions(now_unix()).await.map_err(|e| format!("cannot load sessions: {e}"))?;
        for (id, expires_at) in revoked {
            sessions.revoke(&id, expires_at);
        }
        let bounds = crate::metrics::LabelBounds {
            workspaces: config.metrics.max_workspaces,
            values: config.metrics.max_label_values,
        };
        let instance = instance_id();
        let metrics = Metrics::new(bounds, &instance).map_err(|e| format!("cannot build metrics: {e}"))?;
        // Usage committed to the journal by an earlier process goes into the store before wallets are read.
        let journal_dir = config.server.data_dir.join("journal");
        let config_media_dir = config.server.data_dir.join("media");
        let left = UsageJournal::replay(&journal_dir).map_err(|e| format!("cannot read the usage journal: {e}"))?;
        if !left.is_empty() {
            tracing::info!(records = left.len(), "importing usage left in the journal");
            store.import_usage(left).await.map_err(|e| format!("cannot import the usage journal: {e}"))?;
        }
        UsageJournal::clear(&journal_dir).map_err(|e| format!("cannot clear the usage journal: {e}"))?;
        let journal = UsageJournal::open(&journal_dir).map_err(|e| format!("cannot open the usage journal: {e}"))?;
        let shared = shared_wallets(&store, &config, &instance).await?;
        let freed = store
            .release_abandoned_claims(&instance)
            .await
            .map_err(|e| format!("cannot free abandoned idempotency keys: {e}"))?;
        if freed > 0 {
            tracing::info!(freed, "freed the idempotency keys of requests a stopped gateway left running");
        }
        // Shared books are read from the database on each use; only the in-memory books start from the balances.
        let opening_balances = match shared {
            Some(_) => Vec::new(),
            None => store.balances().await.map_err(|e| format!("cannot load wallets: {e}"))?,
        };
        let redis = match config.redis.url.trim() {
            "" => None,
            url => Some(RedisLimits::connect(url, &config.redis.prefix).await?),
        };
        // Changes told through Redis matter only to gateways that share one database.
        let notices = redis.as_ref().filter(|_| shared.is_some()).map(|redis| redis.notices());
        let limits = redis.map(|redis| redis as Arc<dyn SharedLimits>);
        let tasks = crate::tasks::load(&config.tasks.dir, &catalogue, &store).await?;
        providers.install_local(plan_embedder(&config, &catalogue).await);
        let embedding_models: Vec<String> = catalogue
            .models
            .values()
            .filter(|m| m.modality == switchyard_actors::catalogue::Modality::Embedding)
            .map(|m| m.name.clone())
            .collect();
        let (vectors, vector_backend) = open_vectors(&config, &embedding_models, env).await?;
        let media: Arc<dyn crate::media::BlobStore> = match config.media.url.trim() {
            "" => Arc::new(
                crate::media::LocalBlobStore::new(config_media_dir)
                    .map_err(|e| format!("cannot create the media directory: {e}"))?,
            ),
            url => Arc::new(crate::media::S3BlobStore::open(url, env).await?),
        };
        let admin_key = env("SWITCHYARD_ADMIN_KEY").filter(|k| !k.trim().is_empty()).map(|k| auth::hash_key(k.trim()));
        let state = AppState {
            config: Arc::new(config),
            catalogue: Arc::new(catalogue),
            providers,
            store,
            keys,
            sessions: Arc::new(sessions.with_shared_budgets(limits.clone())),
            metrics,
            admin_key,
            engine: OnceLock::new(),
            media,
            opening_balances,
            task_edits: tokio::sync::Mutex::new(()),
            vectors,
            vector_backend,
            tasks,
            journal: std::sync::Mutex::new(Some(journal)),
            shared,
            limits,
            notices,
            instance,
            draining: Arc::default(),
            _data_dir_lock: data_dir_lock,
        };
        Ok((state, bootstrap))
    }
}

impl AppState {
    /// Starts the engine once (its background work on the current arbiter: `app()` calls it from the first HTTP
    /// worker to build its app). Its parts are shared by every worker.
    pub fn start_engine(&self) -> &Engine {
        self.engine.get_or_init(|| {
            let opening = switchyard_actors::engine::Opening {
                wallets: self.opening_balances.clone(),
                journal: self.take_journal(),
                store: Arc::new(self.store.clone()),
                metrics: self.metrics.engine.clone(),
                tasks: self.tasks.clone(),
                shared: self.shared.clone().map(|s| s as Arc<dyn SharedWallets>),
                limits: self.limits.clone().map(|limits| SharedSetup {
                    limits,
                    gateway: self.instance.clone(),
                    lease_for: Duration::from_secs(self.config.redis.lease_secs.max(1)),
                }),
            };
            if let Some(shared) = self.shared.clone() {
                beat(shared, self.config.database.instance_timeout_secs);
                self.follow_other_gateways();
            }
            Engine::start(self.config.engine(), &self.catalogue, &self.providers, opening)
        })
    }

    /// With several gateways on one database: what another gateway changes reaches this one within a second (each
    /// reads them every second; its own changes take effect at once): keys made, revoked or given other models,
    /// workspaces' plans, and revoked session tokens.
    fn follow_other_gateways(&self) {
        let (store, sessions, keys) = (self.store.clone(), self.sessions.clone(), self.keys.clone());
        if let Some(notices) = &self.notices {
            let (store, sessions, keys) = (store.clone(), sessions.clone(), keys.clone());
            notices.follow(move |notice| match notice {
                Notice::SessionRevoked { id, expires_at } => sessions.revoke(&id, expires_at),
                Notice::KeysChanged => {
                    let (store, sessions, keys) = (store.clone(), sessions.clone(), keys.clone());
                    tokio::spawn(async move { read_changes(&store, &sessions, &keys).await });
                }
            });
        }
        let every = Duration::from_secs(self.config.database.poll_secs.max(1));
        actix_rt::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                read_changes(&store, &sessions, &keys).await;
            }
        });
    }

    /// Tells the other gateways on the same database of a change made here, at once (with Redis; without it they
    /// read it within `database.poll_secs`).
    pub fn notify(&self, notice: &Notice) {
        if let Some(notices) = &self.notices {
            notices.publish(notice);
        }
    }

    fn take_journal(&self) -> UsageJournal {
        let taken = self.journal.lock().ok().and_then(|mut j| j.take());
        match taken {
            Some(journal) => journal,
            // Only reachable if the engine were started twice, which `OnceLock` prevents.
            None => unreachable!("the usage journal was already handed to the engine"),
        }
    }

    pub fn engine(&self) -> &Engine {
        self.start_engine()
    }

    /// Why a model cannot serve now, or `None` when it can.
    pub fn unavailable_reason(&self, model: &switchyard_actors::ModelSpec) -> Option<String> {
        let provider = self.providers.for_model(model);
        if provider.is_some_and(|p| p.is_available()) {
            return None;
        }
        Some(match provider.and_then(|p| p.missing_variable()) {
            _ if model.modality == switchyard_actors::catalogue::Modality::Embedding => format!(
                "embedding models are unavailable ({}): fetch the files with `make models`",
                self.providers.embeddings_usable().err().unwrap_or_default()
            ),
            Some(variable) => format!("provider `{}` is not configured: set {variable}", model.provider),
            None => format!("provider `{}` is not configured", model.provider),
        })
    }
}

/// The embedding model's plan: loaded on first use (or at start with `embeddings.preload`) when the catalogue has
/// an embedding model and its files are there; otherwise why it is unavailable. The gateway starts either way.
async fn plan_embedder(config: &Config, catalogue: &Catalogue) -> switchyard_actors::providers::EmbedderPlan {
    use switchyard_actors::catalogue::Modality;
    use switchyard_actors::embed::{Embedder, EmbeddingFiles};
    use switchyard_actors::providers::EmbedderPlan;
    let unavailable = |reason: String| EmbedderPlan::Loaded(Err(reason));
    if !catalogue.models.values().any(|m| m.modality == Modality::Embedding) {
        return unavailable("the catalogue has no embedding model".into());
    }
    let e = &config.embeddings;
    if e.cache_dir.trim().is_empty() {
        return unavailable("embeddings are turned off: embeddings.cache_dir is empty".into());
    }
    let files = EmbeddingFiles::in_cache(std::path::Path::new(&e.cache_dir));
    let missing = files.missing();
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|p| p.display().to_string()).collect();
        tracing::warn!(
            "embedding models are unavailable (missing {}); fetch them with `make models` (into {})",
            list.join(", "),
            e.cache_dir
        );
        return unavailable(format!("missing {}", list.join(", ")));
    }
    let (threads, queue, cache_dir) = (e.threads, e.queue, e.cache_dir.clone());
    let load = move || {
        let started = Embedder::start(&files, threads, queue);
        match &started {
            Ok(_) => tracing::info!(%cache_dir, "embedding model loaded"),
            Err(reason) => tracing::warn!(%cache_dir, "embedding models are unavailable: {reason}"),
        }
        started
    };
    if !e.preload {
        return EmbedderPlan::OnFirstUse(Box::new(load));
    }
    let loaded = tokio::task::spawn_blocking(load).await.map_err(|e| format!("the embedding loader failed: {e}"));
    EmbedderPlan::Loaded(loaded.and_then(|r| r))
}

/// This gateway's id among several (metrics, logs, its holds in shared wallets): the host, the process and a random
/// part, e.g. `web-1-4211-9f3a`.
fn instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.').take(40).collect())
        .filter(|h: &String| !h.is_empty())
        .unwrap_or_else(|| "gw".into());
    format!("{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
}

/// The session-token keys: in the data directory, or with PostgreSQL in the database, so that a token minted
/// through one gateway is good on all of them.
async fn open_sessions(store: &Store, config: &Config) -> Result<crate::sessions::Sessions, String> {
    if store.engine() != "postgres" {
        return crate::sessions::Sessions::open(&config.server.data_dir)
            .map_err(|e| format!("cannot open the session keys: {e}"));
    }
    let keys = store
        .shared_secret("session-keys", crate::sessions::new_keys_json)
        .await
        .map_err(|e| format!("cannot read the shared session keys: {e}"))?;
    crate::sessions::Sessions::from_json(&keys)
}

/// With PostgreSQL, the wallets as books shared by every gateway on it, this one registered (its first beat, which
/// also releases what gateways gone since held).
async fn shared_wallets(
    store: &Store,
    config: &Config,
    instance: &str,
) -> Result<Option<Arc<crate::store::PgWallets>>, String> {
    let dead_after = Duration::from_secs(config.database.instance_timeout_secs.max(1));
    let Some(shared) = store.shared_wallets(instance, dead_after) else { return Ok(None) };
    let released = shared.heartbeat().await.map_err(|e| format!("cannot register with the shared wallets: {e}"))?;
    tracing::info!(instance, released, "wallets shared through PostgreSQL");
    Ok(Some(shared))
}

/// Locks the data directory for this gateway: its SQLite database, usage journal and running idempotency claims are
/// its own, and a second gateway started on it (another port, the same directory) would take them for a dead
/// predecessor's. The lock is the kernel's (`flock`), so it goes with the process however it ends.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))?;
    let path = dir.join("switchyard.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another gateway is running on the data directory {}: give each gateway its own (server.data_dir, \
             --data-dir)",
            dir.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// Reads what the other gateways changed: revoked session tokens, and the keys (made, revoked, changed).
async fn read_changes(store: &Store, sessions: &crate::sessions::Sessions, keys: &KeyCache) {
    match store.revoked_sessions(now_unix()).await {
        Ok(revoked) => revoked.into_iter().for_each(|(id, expires_at)| sessions.revoke(&id, expires_at)),
        Err(error) => tracing::warn!(%error, "cannot read the sessions revoked by other gateways"),
    }
    if let Err(error) = keys.refresh(store).await {
        tracing::warn!(%error, "cannot read the keys other gateways changed");
    }
}

/// Beats for this gateway every `timeout / 5`, on the current arbiter, for as long as it runs (each beat also frees
/// what gateways gone silent left: their holds and their idempotency keys).
fn beat(shared: Arc<crate::store::PgWallets>, timeout_secs: u64) {
    let every = Duration::from_millis((timeout_secs.max(1) * 1000 / 5).max(200));
    actix_rt::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match shared.heartbeat().await {
                Ok(0) => {}
                Ok(released) => tracing::warn!(released, "released the holds of a gateway gone silent"),
                Err(error) => tracing::warn!(%error, "shared wallets: heartbeat failed"),
            }
        }
    });
}

/// Opens the vector store the configuration names: the embedded engine under the data directory, or a Qdrant
/// server at `QDRANT_URL`.
async fn open_vectors(
    config: &Config,
    collections: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Arc<dyn switchyard_actors::vectors::VectorStore>, &'static str), String> {
    use crate::config::VectorBackend;
    use switchyard_actors::vectors::{edge::EdgeStore, remote};
    let url = env("QDRANT_URL").filter(|u| !u.trim().is_empty());
    let dimensions = switchyard_actors::embed::DIMENSIONS;
    let ef = config.vectors.search_ef;
    match (config.vectors.backend, url) {
        (VectorBackend::Qdrant, None) => Err("vectors.backend is `qdrant` but QDRANT_URL is not set".into()),
        (VectorBackend::Qdrant | VectorBackend::Auto, Some(url)) => {
            let key = env("QDRANT_API_KEY").filter(|k| !k.trim().is_empty());
            let mut store = remote::connect(&url, key, dimensions, &config.vectors.collection_prefix)
                .await
                .map_err(|e| format!("cannot reach Qdrant at {url}: {e}"))?;
            if ef > 0 {
                store = store.with_search_ef(ef);
            }
            store
                .prepare(collections)
                .await
                .map_err(|e| format!("cannot prepare Qdrant's collections at {url}: {e}"))?;
            tracing::info!(%url, "vectors: Qdrant server");
            Ok((Arc::new(store), "qdrant"))
        }
        (VectorBackend::Embedded | VectorBackend::Auto, _) => {
            let root = config.server.data_dir.join("vectors");
            let mut store = tokio::task::spawn_blocking(move || EdgeStore::open(&root, dimensions))
                .await
                .map_err(|e| format!("cannot open the vector store: {e}"))??;
            if ef > 0 {
                store = store.with_search_ef(ef);
            }
            Ok((Arc::new(store), "embedded"))
        }
    }
}

/// Creates a key for a workspace (that may run `models`, or every model) and stores its hash; answers the record
/// and the key in clear (shown once).
pub async fn create_key(
    store: &Store,
    workspace_id: &str,
    name: &str,
    models: Option<Vec<String>>,
) -> Result<(KeyRecord, String), sqlx::Error> {
    let key = auth::generate_key();
    let record = KeyRecord {
        id: auth::new_id("key"),
        workspace_id: workspace_id.to_owned(),
        name: name.to_owned(),
        key_hash: auth::hash_key(&key),
        prefix: key.chars().take(auth::KEY_PREFIX.len() + 4).collect(),
        created_at: now_unix(),
        revoked_at: None,
        models,
    };
    store.insert_key(&record).await?;
    Ok((record, key))
}

/// On the first start (no workspace at all), a `default` workspace and one key for it.
async fn bootstrap(store: &Store, config: &Config) -> Result<Option<Bootstrap>, sqlx::Error> {
    // Gateways starting together on one empty database take turns: only the first finds it empty. (A number no
    // other application is likely to lock; the migrations' is one less.)
    const BOOTSTRAP_LOCK: i64 = 7_583_693_147_269;
    store
        .exclusively(BOOTSTRAP_LOCK, async {
            if store.workspace_count().await? > 0 {
                return Ok(None);
            }
            let b = &config.bootstrap;
            let workspace = Workspace {
                id: auth::new_id("ws"),
                name: "default".into(),
                credits: b.credits,
                plan: Plan {
                    requests_per_minute: b.requests_per_minute,
                    concurrent_requests: b.concurrent_requests,
                    tokens_per_minute: b.tokens_per_minute,
                },
                created_at: now_unix(),
            };
            store.insert_workspace(&workspace).await?;
            let (_, api_key) = create_key(store, &workspace.id, "default", None).await?;
            Ok(Some(Bootstrap { workspace_id: workspace.id, api_key }))
        })
        .await
}
