//! `firmware-sim`: runs simulated MC station modules against an MQTT broker, or one module on a
//! serial line (a device node, or a pty it creates for the hub), until Ctrl-C or SIGTERM.
//! Parses flags (or `SIM_*` environment variables), sets up tracing and calls the library;
//! everything testable lives in `firmware_sim`.

use std::{io::Write, path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::{
    ArgGroup, ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum, error::ErrorKind,
    parser::ValueSource,
};
use firmware_sim::{ModuleCredentials, QoS, SerialLink, SerialSimConfig, SimConfig, credentials};
use mc_protocol::{Encoding, ModuleId};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Simulated MC station modules: the same protocol as real firmware, over MQTT or over a
/// serial line.
#[derive(Debug, Parser)]
#[command(
    version,
    override_usage = "firmware-sim [--mqtt HOST:PORT] (--credentials FILE [--modules N] | --id ID --password TOKEN) [OPTIONS]
       firmware-sim (--pty LINK_PATH | --serial PATH[@BAUD]) --module ID [OPTIONS]"
)]
#[command(group(ArgGroup::new("serial_line").args(["serial", "pty"])))]
struct Cli {
    /// Drive the serial device PATH (a USB-serial adapter, a UART) at BAUD, 8N1 (default
    /// 115200), instead of MQTT. It must exist at start; later losses are reopened with backoff.
    #[arg(
        long,
        env = "SIM_SERIAL",
        value_name = "PATH[@BAUD]",
        help_heading = "Serial line (instead of MQTT)"
    )]
    serial: Option<String>,
    /// Create a pseudo-terminal and a symlink LINK_PATH to its slave /dev/pts/N for the hub
    /// (`hub --serial LINK_PATH`), instead of MQTT. Prints `serial link ready: LINK_PATH ->
    /// /dev/pts/N` on stdout; the symlink is removed on exit.
    #[arg(
        long,
        env = "SIM_PTY",
        value_name = "LINK_PATH",
        help_heading = "Serial line (instead of MQTT)"
    )]
    pty: Option<PathBuf>,
    /// The module's id on the serial line. One module per line (point to point, address 0).
    #[arg(
        long,
        env = "SIM_MODULE",
        value_name = "ID",
        help_heading = "Serial line (instead of MQTT)"
    )]
    module: Vec<String>,

    /// Broker address, host:port.
    #[arg(
        long,
        env = "SIM_MQTT",
        default_value = "127.0.0.1:1883",
        help_heading = "MQTT"
    )]
    mqtt: String,
    /// File with one `ID PASSWORD` per line (blank lines and `#` comments allowed).
    #[arg(
        long,
        env = "SIM_CREDENTIALS",
        conflicts_with_all = ["id", "password"],
        help_heading = "MQTT"
    )]
    credentials: Option<PathBuf>,
    /// Run the first N modules of the credentials file (default: all of them).
    #[arg(
        long,
        env = "SIM_MODULES",
        requires = "credentials",
        help_heading = "MQTT"
    )]
    modules: Option<usize>,
    /// Run a single module with this id (with --password).
    #[arg(long, env = "SIM_ID", requires = "password", help_heading = "MQTT")]
    id: Option<String>,
    /// Password (token) of the single module given by --id.
    #[arg(
        long,
        env = "SIM_PASSWORD",
        requires = "id",
        hide_env_values = true,
        help_heading = "MQTT"
    )]
    password: Option<String>,
    /// Payload encoding.
    #[arg(long, env = "SIM_ENCODING", value_enum, default_value_t = EncodingArg::Native, help_heading = "MQTT")]
    encoding: EncodingArg,
    /// MQTT keep-alive.
    #[arg(long, env = "SIM_KEEP_ALIVE", default_value = "10s", value_parser = humantime::parse_duration, help_heading = "MQTT")]
    keep_alive: Duration,
    /// QoS of heartbeats and telemetry (hellos always use 1).
    #[arg(long, env = "SIM_QOS", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1), help_heading = "MQTT")]
    qos: u8,

    /// Heartbeat interval at boot.
    #[arg(long, env = "SIM_HEARTBEAT", default_value = "5s", value_parser = humantime::parse_duration, help_heading = "Module (both modes)")]
    heartbeat: Duration,
    /// Telemetry interval at boot.
    #[arg(long, env = "SIM_TELEMETRY", default_value = "2s", value_parser = humantime::parse_duration, help_heading = "Module (both modes)")]
    telemetry: Duration,
    /// Every N telemetry periods, send all readings (in between only changed ones; 0 = never).
    #[arg(
        long,
        env = "SIM_FULL_REPORT_EVERY",
        default_value_t = 10,
        help_heading = "Module (both modes)"
    )]
    full_report_every: u32,
    /// Seed of the sensor generators (same seed, same readings).
    #[arg(
        long,
        env = "SIM_SEED",
        default_value_t = 0,
        help_heading = "Module (both modes)"
    )]
    seed: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EncodingArg {
    Native,
    Json,
}

/// The options of MQTT mode, refused next to `--serial` / `--pty` when given on the command
/// line (a `SIM_*` variable left in the environment is ignored instead).
const MQTT_ONLY: [&str; 8] = [
    "mqtt",
    "credentials",
    "modules",
    "id",
    "password",
    "encoding",
    "keep_alive",
    "qos",
];

impl Cli {
    /// Parses the command line; exits with clap's usage error when the two modes' options are
    /// mixed.
    fn parse_checked() -> Self {
        let matches = Self::command().get_matches();
        let cli = Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        if let Some(clash) = cli.mode_clash(&matches) {
            Self::command()
                .error(ErrorKind::ArgumentConflict, clash)
                .exit();
        }
        cli
    }

    fn mode_clash(&self, matches: &ArgMatches) -> Option<String> {
        let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
        if self.serial.is_some() || self.pty.is_some() {
            MQTT_ONLY.iter().find(|id| given(id)).map(|id| {
                format!(
                    "--{} is an MQTT option: it cannot be used with --serial or --pty",
                    id.replace('_', "-")
                )
            })
        } else if given("module") {
            Some("--module names the module on a serial line (--serial or --pty); over MQTT, use --id".into())
        } else {
            None
        }
    }
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

    /// The serial mode's settings, if `--serial` or `--pty` was given.
    fn serial(&self) -> anyhow::Result<Option<(SerialSimConfig, ModuleId)>> {
        let link = match (&self.serial, &self.pty) {
            (Some(spec), _) => SerialLink::device(spec)?,
            (None, Some(link_path)) => SerialLink::pty(link_path),
            (None, None) => return Ok(None),
        };
        let module = match self.module.as_slice() {
            [] => bail!("give the module's id on the serial line: --module ID"),
            [id] => ModuleId::new(id).with_context(|| format!("--module {id:?}"))?,
            _ => bail!(
                "one --module per serial line for now (point to point, address 0; RS-485 \
                 multidrop is reserved): run one firmware-sim per line"
            ),
        };
        Ok(Some((
            SerialSimConfig::with_firmware_of(link, &self.config()),
            module,
        )))
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
    let cli = Cli::parse_checked();
    if let Some((config, module)) = cli.serial()? {
        return run_serial(config, module).await;
    }
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

/// One module on a serial line until Ctrl-C or SIGTERM.
async fn run_serial(config: SerialSimConfig, module: ModuleId) -> anyhow::Result<()> {
    config.validate().context("invalid settings")?;
    let link = config.link.clone();
    let shutdown = CancellationToken::new();
    let sim = firmware_sim::start_serial(config, module.clone(), shutdown.clone())
        .context("starting the simulation")?;
    match (&link, sim.pty_slave()) {
        (SerialLink::Pty { link_path }, Some(slave)) => {
            // For scripts: one line on stdout, once the hub can open the link.
            let mut stdout = std::io::stdout().lock();
            writeln!(
                stdout,
                "serial link ready: {} -> {}",
                link_path.display(),
                slave.display()
            )?;
            stdout.flush()?;
            tracing::info!(%module, link = %link_path.display(), "module running; open the link with `hub --serial {}`; Ctrl-C to stop", link_path.display());
        }
        _ => tracing::info!(%module, ?link, "module running; Ctrl-C to stop"),
    }

    shutdown_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    let (stats, status) = (sim.stats(), sim.status());
    sim.stopped().await;
    tracing::info!(?stats, link = ?status.link, "stopped");
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
