//! The `switchyard` command: `serve` runs the gateway, `check-config` validates configuration and catalogue.

use actix_web::{web, HttpServer};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use switchyard::config::{Config, LogFormat};
use switchyard::state::AppState;

/// mimalloc rather than glibc's malloc: a request makes a few hundred small allocations, and glibc's took about a
/// tenth of the gateway's CPU (`perf` under load); mimalloc measured 6–10% less CPU per request at the same idle
/// memory (built without transparent huge pages, which put 28 MiB more in the idle RSS).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "switchyard", version, about = "A self-hosted AI gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// A TOML file layered over the built-in defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on (default 127.0.0.1:8080; port 0 picks a free one).
        #[arg(long)]
        listen: Option<String>,
        /// Where the database and media live (default ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Check the configuration and the model catalogue, then exit.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Index a JSONL file of documents (`{"id", "text", "metadata"}` per line) into a scope, through the API.
    /// Resumable: run it again to continue where it stopped, or after appending lines.
    Index {
        /// The embedding model, e.g. all-minilm-l6-v2.
        #[arg(long)]
        model: String,
        /// The scope to index into.
        #[arg(long)]
        scope: String,
        /// The JSONL file.
        file: PathBuf,
        /// The gateway's URL.
        #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// An API key of the workspace to index into.
        #[arg(long, env = "SWITCHYARD_API_KEY", hide_env_values = true)]
        api_key: String,
        /// Documents per request.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Where progress is kept (default: FILE.progress.json beside the file).
        #[arg(long)]
        state: Option<PathBuf>,
        /// Ignore earlier progress and index the whole file again.
        #[arg(long)]
        restart: bool,
    },
    /// Make a new key for signing session tokens and media URLs, keeping the previous one for checking (tokens and
    /// URLs signed before keep working until they expire). Takes effect when the gateway starts.
    RotateSessionKey {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where the database and keys live (default: the configuration's).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, listen, data_dir } => serve(config, listen, data_dir),
        Command::CheckConfig { config } => check_config(config),
        Command::RotateSessionKey { config, data_dir } => rotate_session_key(config, data_dir),
        Command::Index { model, scope, file, url, api_key, batch, state, restart } => {
            use std::io::IsTerminal;
            let args = switchyard::index_cli::IndexArgs {
                url,
                api_key,
                model,
                scope,
                file,
                batch,
                state_file: state,
                restart,
                progress: std::io::stderr().is_terminal(),
            };
            index(&args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("switchyard: {message}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout)]
fn index(args: &switchyard::index_cli::IndexArgs) -> Result<(), String> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("cannot start: {e}"))?;
    let summary = runtime.block_on(switchyard::index_cli::run(args))?;
    if summary.already > 0 {
        println!("{} documents were indexed by an earlier run", summary.already);
    }
    println!(
        "indexed {} documents ({} chunks) into scope `{}` of {}; charged {} credits",
        summary.documents,
        summary.chunks,
        args.scope,
        args.model,
        switchyard_actors::Credits(summary.credits_milli)
    );
    Ok(())
}

#[allow(clippy::print_stdout)]
fn rotate_session_key(file: Option<PathBuf>, data_dir: Option<PathBuf>) -> Result<(), String> {
    let config = Config::load(file.as_deref())?;
    let dir = data_dir.unwrap_or(config.server.data_dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !config.database.url.trim().is_empty() {
        // Several gateways share their keys in the database: rotate them there.
        let url = config.database.url.clone();
        let id = actix_web::rt::System::new().block_on(async move {
            let store = switchyard::store::Store::connect(Some(&url), &dir).await?;
            let keys = store
                .shared_secret("session-keys", switchyard::sessions::new_keys_json)
                .await
                .map_err(|e| format!("cannot read the shared session keys: {e}"))?;
            let (keys, id) = switchyard::sessions::rotate_json(&keys)?;
            store.put_secret("session-keys", &keys).await.map_err(|e| format!("cannot store the new keys: {e}"))?;
            Ok::<_, String>(id)
        })?;
        println!("new session signing key {id} in the database; restart the gateways to use it");
        return Ok(());
    }
    let id = switchyard::sessions::rotate(&dir)?;
    println!("new session signing key {id} in {}; restart the gateway to use it", dir.display());
    Ok(())
}

#[allow(clippy::print_stdout)]
fn check_config(file: Option<PathBuf>) -> Result<(), String> {
    let config = Config::load(file.as_deref())?;
    let catalogue = config.catalogue()?;
    let env = |name: &str| std::env::var(name).ok();
    let providers = switchyard_actors::ProviderSet::new(&catalogue, &env, config.timeouts(), config.simulator())?;
    println!("configuration ok: listen {}, data dir {}", config.server.listen, config.server.data_dir.display());
    for model in catalogue.models.values() {
        let status = match providers.for_model(model) {
            Some(p) if p.is_simulator() => "available (simulator)".to_owned(),
            Some(p) if p.is_available() => "available".to_owned(),
            Some(p) => format!("unavailable: set {}", p.missing_variable().unwrap_or("its key")),
            None => "no provider".to_owned(),
        };
        println!("  {:<16} {:<10} {status}", model.name, model.provider);
    }
    Ok(())
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // qdrant-edge reads Qdrant's process-wide flags, which only Qdrant's own main initialises (their defaults are
    // what we want), and warns on every read; those warnings say nothing to an operator.
    let filter = ["qdrant_edge::common::flags=error", "qdrant_edge::common::mmap=error"]
        .iter()
        .filter_map(|d| d.parse().ok())
        .fold(filter, |filter, directive| filter.add_directive(directive));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// The listening socket, with a queue of 4,096 connections not yet accepted (the kernel caps it at `somaxconn`):
/// the standard library's 128 drops connections when thousands arrive at once.
fn bind(listen: &str) -> std::io::Result<std::net::TcpListener> {
    use std::net::ToSocketAddrs;
    let addr = listen
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address"))?;
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// On SIGTERM or SIGINT (Ctrl-C): `/readyz` answers 503 at once, so a load balancer stops sending new requests,
/// while the gateway serves on for `drain` (`server.drain_secs`); then it stops accepting and gives the requests and
/// streams in flight `server.shutdown_timeout_secs` to finish. A second signal stops it at once.
async fn stop_on_signals(
    server: actix_web::dev::ServerHandle,
    draining: std::sync::Arc<std::sync::atomic::AtomicBool>,
    drain: Duration,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot listen for SIGTERM and SIGINT; stop the gateway with SIGKILL");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    draining.store(true, std::sync::atomic::Ordering::SeqCst);
    tracing::info!(drain_secs = drain.as_secs(), "stopping: /readyz answers 503, serving on while drained");
    let graceful = async {
        tokio::time::sleep(drain).await;
        tracing::info!("stopping: no new connections; requests in flight finish");
        server.stop(true).await;
    };
    tokio::select! {
        _ = graceful => {}
        _ = term.recv() => stop_now(),
        _ = int.recv() => stop_now(),
    }
}

/// A second signal: the process leaves at once, as SIGKILL would (actix ignores a second stop once a graceful one
/// has begun). Calls in flight are dropped uncharged; what was settled is in the journal or the database.
fn stop_now() {
    tracing::warn!("second signal: stopping at once");
    std::process::exit(1);
}

#[allow(clippy::print_stdout)]
fn serve(file: Option<PathBuf>, listen: Option<String>, data_dir: Option<PathBuf>) -> Result<(), String> {
    let mut config = Config::load(file.as_deref())?;
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    if let Some(dir) = data_dir {
        config.server.data_dir = dir;
    }
    init_logging(&config);
    // Every connection is an open file: the soft limit (often 1,024) goes up to the hard one, as Go's runtime does.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }
    let catalogue = config.catalogue()?;
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let env = |name: &str| std::env::var(name).ok();
        let (state, bootstrap) = AppState::build(config.clone(), catalogue, &env).await?;
        let listener =
            bind(&config.server.listen).map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
        let addr = listener.local_addr().map_err(|e| format!("cannot read the listening address: {e}"))?;
        let url = if config.server.public_url.is_empty() {
            format!("http://{addr}")
        } else {
            config.server.public_url.trim_end_matches('/').to_owned()
        };
        if let Some(b) = &bootstrap {
            println!("First start: created workspace `default` ({}).", b.workspace_id);
            println!("API key (shown once, keep it): {}", b.api_key);
        }
        if state.admin_key.is_none() {
            tracing::info!("admin API off: set SWITCHYARD_ADMIN_KEY to turn it on");
        }
        let unavailable: Vec<String> = state
            .catalogue
            .models
            .values()
            .filter_map(|m| {
                state.providers.for_model(m).and_then(|p| p.missing_variable()).map(|v| format!("{} ({v})", m.name))
            })
            .collect();
        if let Err(reason) = state.providers.embeddings_usable() {
            if state.catalogue.models.values().any(|m| m.modality == switchyard_actors::catalogue::Modality::Embedding)
            {
                println!("Embedding models unavailable ({reason}): fetch them with `make models`, then restart.");
            }
        }
        if !unavailable.is_empty() {
            tracing::info!(models = %unavailable.join(", "), "models unavailable until their provider variable is set");
        }
        let state_instance = state.instance.clone();
        let draining = state.draining.clone();
        let data = web::Data::new(state);
        let stall = Some(config.server.client_stall_secs).filter(|s| *s > 0).map(Duration::from_secs);
        let mut server = HttpServer::new(move || switchyard::app(data.clone()))
            .on_connect(move |connection, _| {
                if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
                    let _ = tcp.set_nodelay(true);
                    if stall.is_some() {
                        let _ = socket2::SockRef::from(tcp).set_tcp_user_timeout(stall);
                    }
                }
            })
            .client_request_timeout(Duration::from_millis(config.server.request_head_timeout_ms))
            .keep_alive(match config.server.keep_alive_secs {
                0 => actix_web::http::KeepAlive::Disabled,
                secs => actix_web::http::KeepAlive::Timeout(Duration::from_secs(secs)),
            })
            .shutdown_timeout(config.server.shutdown_timeout_secs)
            .disable_signals()
            .listen(listener)
            .map_err(|e| format!("cannot start the server: {e}"))?;
        if config.server.workers > 0 {
            server = server.workers(config.server.workers);
        }
        println!("Switchyard listening on {url}");
        tracing::info!(%addr, gateway = %state_instance, "listening");
        let server = server.run();
        let drain = Duration::from_secs(config.server.drain_secs);
        actix_web::rt::spawn(stop_on_signals(server.handle(), draining, drain));
        server.await.map_err(|e| format!("server failed: {e}"))
    })
}
