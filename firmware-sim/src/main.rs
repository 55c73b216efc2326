//! `firmware-sim`: runs simulated MC station modules against an MQTT broker until Ctrl-C or
//! SIGTERM. Parses flags (or `SIM_*` environment variables), sets up tracing and calls the
//! library; everything testable lives in `firmware_sim`.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use firmware_sim::{ModuleCredentials, QoS, SimConfig, credentials};
use mc_protocol::{Encoding, ModuleId};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Simulated MC station modules: the same MQTT protocol as real firmware.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Broker address, host:port.
    #[arg(long, env = "SIM_MQTT", default_value = "127.0.0.1:1883")]
    mqtt: String,
    /// File with one `ID PASSWORD` per line (blank lines and `#` comments allowed).
    #[arg(long, env = "SIM_CREDENTIALS", conflicts_with_all = ["id", "password"])]
    credentials: Option<PathBuf>,
    /// Run the first N modules of the credentials file (default: all of them).
    #[arg(long, env = "SIM_MODULES", requires = "credentials")]
    modules: Option<usize>,
    /// Run a single module with this id (with --password).
    #[arg(long, env = "SIM_ID", requires = "password")]
    id: Option<String>,
    /// Password (token) of the single module given by --id.
    #[arg(long, env = "SIM_PASSWORD", requires = "id", hide_env_values = true)]
    password: Option<String>,
    /// Heartbeat interval at boot.
    #[arg(long, env = "SIM_HEARTBEAT", default_value = "5s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// Telemetry interval at boot.
    #[arg(long, env = "SIM_TELEMETRY", default_value = "2s", value_parser = humantime::parse_duration)]
    telemetry: Duration,
    /// Every N telemetry periods, send all readings (in between only changed ones; 0 = never).
    #[arg(long, env = "SIM_FULL_REPORT_EVERY", default_value_t = 10)]
    full_report_every: u32,
    /// Payload encoding.
    #[arg(long, env = "SIM_ENCODING", value_enum, default_value_t = EncodingArg::Native)]
    encoding: EncodingArg,
    /// MQTT keep-alive.
    #[arg(long, env = "SIM_KEEP_ALIVE", default_value = "10s", value_parser = humantime::parse_duration)]
    keep_alive: Duration,
    /// Seed of the sensor generators (same seed, same readings).
    #[arg(long, env = "SIM_SEED", default_value_t = 0)]
    seed: u64,
    /// QoS of heartbeats and telemetry (hellos always use 1).
    #[arg(long, env = "SIM_QOS", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EncodingArg {
    Native,
    Json,
}

impl Cli {
    fn config(&self) -> SimConfig {
        SimConfig {
            broker: self.mqtt.clone(),
            heartbeat: self.heartbeat,
            telemetry: self.telemetry,
            full_report_every: self.full_report_every,
            encoding: match self.encoding {
                EncodingArg::Native => Encoding::Native,
                EncodingArg::Json => Encoding::Json,
            },
            keep_alive: self.keep_alive,
            seed: self.seed,
            periodic_qos: if self.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            ..SimConfig::default()
        }
    }

    fn modules(&self) -> anyhow::Result<Vec<ModuleCredentials>> {
        if let (Some(id), Some(password)) = (&self.id, &self.password) {
            let id = ModuleId::new(id).with_context(|| format!("--id {id:?}"))?;
            return Ok(vec![ModuleCredentials::new(id, password.clone())]);
        }
        let Some(path) = &self.credentials else {
            bail!("no modules: give --credentials FILE (with --modules N) or --id ID --password P");
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading credentials file {}", path.display()))?;
        let all = credentials::parse(&text).with_context(|| format!("in {}", path.display()))?;
        let modules = match self.modules {
            Some(n) => credentials::take_first(all, n)
                .with_context(|| format!("--modules {n} with {}", path.display()))?,
            None => all,
        };
        if modules.is_empty() {
            bail!("{} lists no modules", path.display());
        }
        Ok(modules)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = cli.config();
    config.validate().context("invalid settings")?;
    let modules = cli.modules()?;
    let count = modules.len();

    let shutdown = CancellationToken::new();
    let sim = firmware_sim::try_start(config, modules, shutdown.clone())
        .context("starting the simulation")?;
    tracing::info!(modules = count, broker = %cli.mqtt, "simulation running; Ctrl-C to stop");

    shutdown_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    let totals = sim.total_stats();
    sim.stopped().await;
    tracing::info!(?totals, "stopped");
    Ok(())
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
