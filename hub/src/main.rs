//! The `hub` binary: parse the command line, set up logging, call the library.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use mc_hub::{
    Config, Listeners,
    config::LogFormat,
    store::{NewModule, NewUser, Store},
};
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
    User(UserCommand),
    /// Manage the module registry.
    #[command(subcommand)]
    Module(ModuleCommand),
}

#[derive(Args, Clone, Default)]
struct ServeArgs {
    /// HTTP + Socket.IO listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "HUB_HTTP")]
    http: Option<std::net::SocketAddr>,
    /// MQTT listen address [default: 0.0.0.0:1883].
    #[arg(long, env = "HUB_MQTT")]
    mqtt: Option<std::net::SocketAddr>,
    /// Data directory [default: ./hub-data].
    #[arg(long, env = "HUB_DATA_DIR")]
    data_dir: Option<PathBuf>,
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
}

#[derive(Args)]
struct DataDirArg {
    /// Data directory [default: ./hub-data].
    #[arg(long, env = "HUB_DATA_DIR", default_value = "./hub-data")]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        password: String,
        /// Make the user an admin.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        data: DataDirArg,
    },
}

#[derive(Subcommand)]
enum ModuleCommand {
    /// Register a module; prints its MQTT password on the last line.
    Add {
        /// Module id, e.g. MC-1001-STN.
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long = "type", default_value = "station")]
        kind: String,
        /// Email of the owning user.
        #[arg(long)]
        owner: Option<String>,
        /// Liveness timeout for this module (e.g. `30s`), overriding the hub's.
        #[arg(long, value_parser = humantime::parse_duration)]
        heartbeat_timeout: Option<Duration>,
        #[command(flatten)]
        data: DataDirArg,
    },
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.http {
            config.http = v;
        }
        if let Some(v) = self.mqtt {
            config.mqtt = v;
        }
        if let Some(v) = self.data_dir {
            config.data_dir = v;
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

async fn open_store(data_dir: &std::path::Path) -> anyhow::Result<Store> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    Ok(Store::open(data_dir, Config::default().session_ttl).await?)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    init_tracing(config.log_format);
    let listeners = Listeners::bind(&config).await?;
    let shutdown = CancellationToken::new();
    let hub = mc_hub::start(config, listeners, shutdown.clone()).await?;
    println!(
        "mc-hub listening: dashboard http://{}  MQTT {}",
        hub.http_addr, hub.mqtt_addr
    );
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
        _ = wait_for_signal() => false,
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

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::User(UserCommand::Add {
            email,
            name,
            password,
            admin,
            data,
        })) => {
            let store = open_store(&data.data_dir).await?;
            let user = store
                .create_user(NewUser {
                    email,
                    name,
                    password,
                    is_admin: admin,
                })
                .await?;
            println!(
                "created user {} ({}){}",
                user.id,
                user.email,
                if admin { " [admin]" } else { "" }
            );
            Ok(())
        }
        Some(Command::Module(ModuleCommand::Add {
            id,
            name,
            kind,
            owner,
            heartbeat_timeout,
            data,
        })) => {
            let id = id
                .parse()
                .map_err(|e| anyhow::anyhow!("module id {id:?}: {e}"))?;
            use mc_hub::liveness::{MAX_TIMEOUT, MIN_TIMEOUT};
            if let Some(t) = heartbeat_timeout
                && !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&t)
            {
                anyhow::bail!(
                    "--heartbeat-timeout {}: must be between {} and {}",
                    humantime::format_duration(t),
                    humantime::format_duration(MIN_TIMEOUT),
                    humantime::format_duration(MAX_TIMEOUT)
                );
            }
            let store = open_store(&data.data_dir).await?;
            let (module, token) = store
                .create_module(NewModule {
                    id,
                    name,
                    kind,
                    owner_email: owner,
                    heartbeat_timeout,
                })
                .await?;
            println!("registered module {} ({})", module.id, module.name);
            println!("{token}");
            Ok(())
        }
    }
}
