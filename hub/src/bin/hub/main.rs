//! The `hub` binary: parse the command line, set up logging, call the library.
//!
//! - this file: `hub [serve]` and its flags;
//! - [`manage`]: `hub user ...`, `hub module ...` and `hub db check`;
//! - [`export`]: `hub export mosquitto-acl`.

mod export;
mod manage;

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use mc_hub::{Config, Listeners, config::LogFormat};
use tokio_util::sync::CancellationToken;

/// mc-hub: telemetry hub for MC station modules.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (the default).
    Serve(ServeArgs),
    /// Manage users.
    #[command(subcommand)]
    User(manage::UserCommand),
    /// Manage the module registry.
    #[command(subcommand)]
    Module(manage::ModuleCommand),
    /// Database maintenance.
    #[command(subcommand)]
    Db(manage::DbCommand),
    /// Configuration for other systems, generated from the registry.
    #[command(subcommand)]
    Export(export::ExportCommand),
}

#[derive(Args, Clone, Default)]
struct ServeArgs {
    /// HTTP + Socket.IO listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "HUB_HTTP")]
    http: Option<std::net::SocketAddr>,
    /// MQTT listen address [default: 0.0.0.0:1883].
    #[arg(long, env = "HUB_MQTT")]
    mqtt: Option<std::net::SocketAddr>,
    /// External MQTT broker, `mqtt://[USER@]HOST[:PORT]` (password: HUB_BROKER_PASSWORD or
    /// `[broker] password-file`), instead of the embedded one [default: embedded].
    #[arg(long, env = "HUB_BROKER", value_name = "URL")]
    broker: Option<String>,
    /// Redis of a cluster of hubs, `redis://HOST[:PORT][/DB]` (needs --broker) [default: a hub
    /// on its own].
    #[arg(long, env = "HUB_REDIS", value_name = "URL")]
    redis: Option<String>,
    /// This hub's name in the cluster (unique, stable) [default: the broker client id].
    #[arg(long, env = "HUB_INSTANCE")]
    instance: Option<String>,
    /// Data directory [default: ./hub-data].
    #[arg(long, env = "HUB_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL: `postgres://user:password@host:port/db` (a database several hubs may
    /// share) or `sqlite://PATH` [default: SQLite at <data-dir>/hub.db].
    #[arg(long, env = "HUB_DATABASE", value_name = "URL")]
    database: Option<String>,
    /// Liveness timeout for every module, e.g. `2s` [default: 3 × announced interval, else 15s].
    #[arg(long, env = "HUB_HEARTBEAT_TIMEOUT", value_parser = humantime::parse_duration)]
    heartbeat_timeout: Option<Duration>,
    /// TOML configuration file (flags and environment override it).
    #[arg(long, env = "HUB_CONFIG")]
    config: Option<PathBuf>,
    /// Demo mode: demo users and simulated modules.
    #[arg(long, env = "HUB_DEMO")]
    demo: bool,
    /// Number of simulated modules in demo mode [default: 24].
    #[arg(long, env = "HUB_DEMO_MODULES")]
    demo_modules: Option<usize>,
    /// Origin allowed besides the hub's own for Socket.IO and state-changing requests
    /// (repeatable, or comma-separated in the environment), e.g. `https://dash.example.com`.
    #[arg(
        long = "allowed-origin",
        env = "HUB_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,
    /// Push global stats to admins [default: true] (the seed's variable name).
    #[arg(long, env = "REALTIME_ENABLE_STATS")]
    enable_stats: Option<bool>,
    /// Log format [default: text].
    #[arg(long, env = "HUB_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Serial port with a module speaking the native link, as `PATH[@BAUD][:json]` (baud
    /// default 115200; `:json` for JSON lines; repeatable, or comma-separated in the
    /// environment), e.g. `/dev/ttyUSB0@115200`.
    #[arg(
        long = "serial",
        env = "HUB_SERIAL",
        value_delimiter = ',',
        value_name = "PATH[@BAUD][:json]"
    )]
    serial: Vec<mc_hub::config::SerialPortSpec>,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        // Replay, reconnection and WebSocket compression settings (REALTIME_REPLAY_*,
        // REALTIME_*RECONNECT*, REALTIME_WS_DEFLATE).
        config.realtime.apply_env(|k| std::env::var(k).ok())?;
        // Per-module rate limit (INGEST_MODULE_RATE, INGEST_MODULE_BURST).
        config.ingest.apply_env(|k| std::env::var(k).ok())?;
        // The external broker's password (HUB_BROKER_PASSWORD).
        config.broker.apply_env(|k| std::env::var(k).ok());
        if let Some(v) = self.http {
            config.http = v;
        }
        if let Some(v) = self.mqtt {
            config.mqtt = v;
        }
        if let Some(v) = self.broker {
            config.broker.url = Some(v);
        }
        if let Some(v) = self.redis {
            config.cluster.redis = Some(v);
        }
        if let Some(v) = self.instance {
            config.cluster.instance = Some(v);
        }
        if let Some(v) = self.data_dir {
            config.data_dir = v;
        }
        if let Some(v) = self.database {
            config.database = Some(manage::parse_database(&v)?);
        }
        if let Some(v) = self.heartbeat_timeout {
            config.liveness.heartbeat_timeout = Some(v);
        }
        if self.demo {
            config.demo.enabled = true;
        }
        if let Some(v) = self.demo_modules {
            config.demo.modules = v;
        }
        if !self.allowed_origins.is_empty() {
            config.allowed_origins = self.allowed_origins;
        }
        if let Some(v) = self.enable_stats {
            config.realtime.enable_stats = v;
        }
        if let Some(v) = self.log_format {
            config.log_format = v;
        }
        if !self.serial.is_empty() {
            config.serial = self.serial;
        }
        Ok(config)
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn"));
    // Logs on stderr; stdout carries only what the user asked for (addresses, demo logins).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    init_tracing(config.log_format);
    let listeners = Listeners::bind(&config).await?;
    let shutdown = CancellationToken::new();
    let hub = mc_hub::start(config, listeners, shutdown.clone()).await?;
    let signals = shutdown_signals();
    println!(
        "mc-hub listening: dashboard http://{}  MQTT {}",
        hub.http_addr, hub.mqtt_addr
    );
    for port in &hub.serial_ports {
        println!("serial modules on {port}");
    }
    if let Some(demo) = &hub.demo {
        println!("demo: {} simulated modules", demo.modules.len());
        println!(
            "demo admin login: {} / {}",
            mc_hub::demo::ADMIN_EMAIL,
            demo.admin_password
        );
        println!(
            "demo user login:  {} / {}",
            mc_hub::demo::USER_EMAIL,
            demo.user_password
        );
    }
    let internal_failure = tokio::select! {
        _ = signals => false,
        _ = shutdown.cancelled() => true,
    };
    tracing::info!("shutting down");
    shutdown.cancel();
    if tokio::time::timeout(Duration::from_secs(10), hub.stopped())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop within 10s");
    }
    if internal_failure {
        anyhow::bail!("the hub stopped after an internal failure (see the log above)");
    }
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers *now* and returns a future that completes on
/// either. Installed before the hub says it is listening: a supervisor (or a test) that sends
/// SIGTERM right after that line must get a graceful shutdown, never the default "die at once".
fn shutdown_signals() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                (Ok(mut one), Err(_)) | (Err(_), Ok(mut one)) => {
                    one.recv().await;
                }
                (Err(_), Err(_)) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// One malloc arena instead of glibc's default of one per thread that allocates (tokio's
/// workers, its blocking pool, SQLite's threads). Measured in the scale bench (fan-in, 1,000
/// modules, 2,000 msgs/s, BENCHMARKS.md): 46.4 MiB RSS with the default, 44.5 with two
/// arenas, 34.1 with one, at the same CPU per message (small allocations are served from each
/// thread's cache without the arena's lock). Runs before any thread exists; an operator's
/// `MALLOC_ARENA_MAX` wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before any other thread
        // exists, so no allocation races with it.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::User(command)) => manage::user_command(command).await,
        Some(Command::Module(command)) => manage::module_command(command).await,
        Some(Command::Db(command)) => manage::db_command(command).await,
        Some(Command::Export(command)) => export::export_command(command).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole cause chain, whatever RUST_BACKTRACE says: scripts and
            // people read it.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
