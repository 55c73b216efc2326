//! The hub's configuration: one struct, defaults here, overridable by a TOML file (`--config`),
//! then by environment variables (`HUB_*`) and flags. Validated before anything starts.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{liveness::LivenessConfig, state::Deadbands, store::Database};

/// Everything the hub can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// HTTP + Socket.IO listen address. Default `127.0.0.1:8080`.
    pub http: SocketAddr,
    /// MQTT listen address (embedded broker). Default `0.0.0.0:1883`. Not used with an
    /// external broker (`[broker] url`).
    pub mqtt: SocketAddr,
    /// An external MQTT broker instead of the embedded one (`broker::external`).
    pub broker: crate::broker::external::BrokerConfig,
    /// Several hubs as one, on Redis (`cluster`).
    pub cluster: crate::cluster::ClusterConfig,
    /// Where the SQLite database lives (`hub.db`). Default `./hub-data`.
    pub data_dir: PathBuf,
    /// The database, as a URL: `postgres://user:password@host:port/db` for a PostgreSQL
    /// database several hubs may share (it must exist; the hub creates its tables), or
    /// `sqlite://PATH`. Default none: SQLite at `<data-dir>/hub.db`. `--database`,
    /// `HUB_DATABASE`.
    pub database: Option<Database>,
    /// Largest MQTT packet a module may send, in bytes. Default 8 KiB (a 4 KiB JSON payload
    /// plus topic and headers fits).
    pub max_packet: usize,
    /// Obsolete (the embedded broker's log, before the hub served MQTT itself): accepted so
    /// that older configuration files still load, ignored with a warning.
    pub mqtt_log_segment_bytes: Option<u64>,
    /// Obsolete, see `mqtt-log-segment-bytes`.
    pub mqtt_log_segments: Option<u64>,
    /// HTTP connections served at once; one more is closed at once (`web::serve`). Default
    /// 4096.
    pub http_max_connections: usize,
    /// An HTTP connection that has not sent a complete request head within this is closed
    /// (slow or idle clients holding connections). Default 10 s.
    #[serde(with = "duration")]
    pub http_header_timeout: Duration,
    /// An HTTP request (its body included) that takes longer is answered 408 (a body sent a
    /// byte at a time must not hold a connection). Socket.IO is not concerned. Default 30 s.
    #[serde(with = "duration")]
    pub http_request_timeout: Duration,
    /// Lifetime of a login session. Default 7 days.
    #[serde(with = "duration")]
    pub session_ttl: Duration,
    /// A session unused for this long ends. Default 1 day.
    #[serde(with = "duration")]
    pub session_idle: Duration,
    /// Liveness timeouts and flap damping.
    pub liveness: LivenessConfig,
    /// Per-reading deadbands (absolute), e.g. `temperature = 0.05`. Default none.
    pub deadbands: Deadbands,
    /// Per-module rate limit on incoming messages.
    pub ingest: IngestConfig,
    /// Realtime delivery settings.
    pub realtime: RealtimeConfig,
    /// Commands for modules that are offline: how many wait, and for how long.
    pub commands: CommandsConfig,
    /// Origins (`scheme://host[:port]`) besides the hub's own that browsers may use for
    /// Socket.IO and state-changing requests. Default none.
    pub allowed_origins: Vec<String>,
    /// Demo mode: demo users and simulated modules.
    pub demo: DemoConfig,
    /// Log format: `text` or `json`.
    pub log_format: LogFormat,
    /// Serial ports with modules speaking the native link protocol, as `PATH[@BAUD][:json]`
    /// (baud default [`DEFAULT_BAUD`]; `:json` for JSON lines), e.g. `["/dev/ttyUSB0@115200"]`.
    /// Default none.
    pub serial: Vec<SerialPortSpec>,
}

/// Baud rate of a serial port given without one (the link protocol's default).
pub const DEFAULT_BAUD: u32 = 115_200;
/// Baud rates the hub accepts: what common UARTs and USB adapters can be set to.
pub const BAUD_RANGE: std::ops::RangeInclusive<u32> = 50..=4_000_000;

/// A serial port to serve: its path, line speed (8N1, no flow control) and framing. Written
/// `PATH[@BAUD][:json]` in flags, the environment and the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialPortSpec {
    /// The device, or a stable symlink to it (`/dev/serial/by-id/...`): opened anew on every
    /// reopen, so a re-pointed symlink is followed.
    pub path: PathBuf,
    /// Line speed.
    pub baud: u32,
    /// How messages travel on the line.
    pub framing: Framing,
}

/// How messages travel on a serial line (`hardware/PROTOCOL.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// COBS frames with address and CRC-16 (§1–6): the default, for real modules.
    #[default]
    Binary,
    /// One JSON object per line (§7), for prototypes; a port written with the suffix `:json`.
    JsonLines,
}

/// The suffix that marks a JSON-lines port.
const JSON_SUFFIX: &str = ":json";

impl std::str::FromStr for SerialPortSpec {
    type Err = String;

    /// `PATH`, `PATH@BAUD`, either with `:json`; ranges are checked by [`Config::validate`].
    fn from_str(s: &str) -> Result<Self, String> {
        let (rest, framing) = match s.strip_suffix(JSON_SUFFIX) {
            Some(rest) => (rest, Framing::JsonLines),
            None => (s, Framing::Binary),
        };
        let (path, baud) = match rest.rsplit_once('@') {
            Some((path, baud)) => {
                let baud = baud.parse::<u32>().map_err(|_| {
                    format!(
                        "{s:?}: expected PATH[@BAUD][:json] with a numeric baud rate, e.g. {path}@115200"
                    )
                })?;
                (path, baud)
            }
            None => (rest, DEFAULT_BAUD),
        };
        Ok(Self {
            path: PathBuf::from(path.trim()),
            baud,
            framing,
        })
    }
}

impl std::fmt::Display for SerialPortSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.path.display(), self.baud)?;
        match self.framing {
            Framing::Binary => Ok(()),
            Framing::JsonLines => f.write_str(JSON_SUFFIX),
        }
    }
}

impl Serialize for SerialPortSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SerialPortSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Realtime delivery settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RealtimeConfig {
    /// Under load, events are gathered for this long before being emitted, so that each
    /// dashboard socket writes a batch at once: less CPU per event when one event fans out to
    /// many dashboards, at the price of up to this much (plus a timer tick) of added latency.
    /// Default `0ms` (off); see BENCHMARKS.md for when `2ms` pays.
    #[serde(with = "duration")]
    pub batch_window: Duration,
    /// Push `rt_global_stats_updated` to admins (`REALTIME_ENABLE_STATS=false` turns it off).
    pub enable_stats: bool,
    /// How often stats are pushed at most.
    #[serde(with = "duration")]
    pub stats_interval: Duration,
    /// Largest message a dashboard may send, in bytes, on every transport (WebSocket frames
    /// and messages included); a bigger one closes that socket. Default 64 KiB.
    pub max_message: usize,
    /// Events kept for clients that resume after a short disconnection (`docs/REALTIME.md`).
    /// Default 50,000 (`REALTIME_REPLAY_CAPACITY`).
    pub replay_capacity: usize,
    /// Events older than this are not replayed. Default 5 min (`REALTIME_REPLAY_MAX_AGE`).
    #[serde(with = "duration")]
    pub replay_max_age: Duration,
    /// A resuming client that missed more events than this fetches a snapshot instead.
    /// Default 5,000 (`REALTIME_REPLAY_MAX_MISSED`); at most `replay-capacity`.
    pub replay_max_missed: usize,
    /// Payload bytes kept for replay at most; the oldest events fall out first. Default 32 MiB
    /// (`REALTIME_REPLAY_MAX_BYTES`), between 64 KiB and 16 GiB.
    pub replay_max_bytes: u64,
    /// A resuming client whose missed events weigh more payload bytes than this fetches a
    /// snapshot instead. Default 1 MiB (`REALTIME_REPLAY_MAX_MISSED_BYTES`), between 1 KiB and
    /// `replay-max-bytes`.
    pub replay_max_missed_bytes: u64,
    /// Dashboards give up reconnecting after this many attempts; 0: never. Default 0
    /// (`REALTIME_MAX_RECONNECT_ATTEMPTS`). Served by `GET /api/realtime/config`.
    pub max_reconnect_attempts: u32,
    /// Dashboards wait this long before their first reconnection attempt. Default 1 s
    /// (`REALTIME_RECONNECT_DELAY`).
    #[serde(with = "duration")]
    pub reconnect_delay: Duration,
    /// The longest dashboards wait between attempts (the delay grows up to it). Default 30 s
    /// (`REALTIME_MAX_RECONNECT_DELAY`).
    #[serde(with = "duration")]
    pub max_reconnect_delay: Duration,
    /// Compress the realtime WebSocket (permessage-deflate) for clients that offer it. Each
    /// compressed socket holds ~285 KiB of deflate state; `false` sends every client the
    /// direct, uncompressed path. Default `true` (`REALTIME_WS_DEFLATE`).
    pub ws_deflate: bool,
    /// Most payload bytes held, coalesced, for a dashboard that stopped reading
    /// (`docs/REALTIME.md`, "Slow clients"); past it the dashboard is disconnected and
    /// resynchronises when it reconnects. Default 1 MiB (`REALTIME_SLOW_CLIENT_MAX_BACKLOG`),
    /// between 4 KiB and 1 GiB.
    pub slow_client_max_backlog: u64,
    /// Longest a dashboard behind (its socket buffer full) may take nothing before it is
    /// disconnected the same way. Default 30 s (`REALTIME_SLOW_CLIENT_TIMEOUT`).
    #[serde(with = "duration")]
    pub slow_client_timeout: Duration,
    /// Events a dashboard socket's send buffer holds before the hub starts holding them for it
    /// (coalesced, in its backlog). Large enough for a whole tracker batch to every socket
    /// (socketioxide's default of 128 overflowed under bursts and merged updates of clients
    /// that were keeping up). Allocated as used, so an idle socket does not pay for it.
    /// Default 1,024 (`REALTIME_SOCKET_BUFFER`), between 16 and 65,536.
    pub socket_buffer: usize,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            batch_window: Duration::ZERO,
            enable_stats: true,
            stats_interval: Duration::from_secs(1),
            max_message: 64 * 1024,
            replay_capacity: 50_000,
            replay_max_age: Duration::from_secs(5 * 60),
            replay_max_missed: 5_000,
            replay_max_bytes: 32 * 1024 * 1024,
            replay_max_missed_bytes: 1024 * 1024,
            max_reconnect_attempts: 0,
            reconnect_delay: Duration::from_secs(1),
            max_reconnect_delay: Duration::from_secs(30),
            ws_deflate: true,
            slow_client_max_backlog: 1024 * 1024,
            slow_client_timeout: Duration::from_secs(30),
            socket_buffer: 1024,
        }
    }
}

impl RealtimeConfig {
    /// Applies the `REALTIME_*` environment variables of the replay, reconnection and
    /// WebSocket compression settings (over the file's values); `var` looks a variable up
    /// (`|k| std::env::var(k).ok()`). Durations are milliseconds (`1500`) or text (`1.5s`,
    /// `5min`); switches `true`/`false` (or `1`/`0`, `yes`/`no`, `on`/`off`).
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn number<T: std::str::FromStr>(
            setting: &'static str,
            text: &str,
        ) -> Result<T, ConfigError> {
            text.trim().parse().map_err(|_| ConfigError::Invalid {
                setting,
                message: format!("{text:?}; expected a non-negative integer"),
            })
        }
        fn duration(setting: &'static str, text: &str) -> Result<Duration, ConfigError> {
            let text = text.trim();
            match text.parse::<u64>() {
                Ok(ms) => Ok(Duration::from_millis(ms)),
                Err(_) => humantime::parse_duration(text).map_err(|e| ConfigError::Invalid {
                    setting,
                    message: format!("{text:?}: {e}; expected milliseconds or e.g. 1s, 5min"),
                }),
            }
        }
        fn switch(setting: &'static str, text: &str) -> Result<bool, ConfigError> {
            match text.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(ConfigError::Invalid {
                    setting,
                    message: format!("{text:?}; expected true or false"),
                }),
            }
        }
        if let Some(v) = var("REALTIME_REPLAY_CAPACITY") {
            self.replay_capacity = number("REALTIME_REPLAY_CAPACITY", &v)?;
        }
        if let Some(v) = var("REALTIME_REPLAY_MAX_AGE") {
            self.replay_max_age = duration("REALTIME_REPLAY_MAX_AGE", &v)?;
        }
        if let Some(v) = var("REALTIME_REPLAY_MAX_MISSED") {
            self.replay_max_missed = number("REALTIME_REPLAY_MAX_MISSED", &v)?;
        }
        if let Some(v) = var("REALTIME_REPLAY_MAX_BYTES") {
            self.replay_max_bytes = number("REALTIME_REPLAY_MAX_BYTES", &v)?;
        }
        if let Some(v) = var("REALTIME_REPLAY_MAX_MISSED_BYTES") {
            self.replay_max_missed_bytes = number("REALTIME_REPLAY_MAX_MISSED_BYTES", &v)?;
        }
        if let Some(v) = var("REALTIME_MAX_RECONNECT_ATTEMPTS") {
            self.max_reconnect_attempts = number("REALTIME_MAX_RECONNECT_ATTEMPTS", &v)?;
        }
        if let Some(v) = var("REALTIME_RECONNECT_DELAY") {
            self.reconnect_delay = duration("REALTIME_RECONNECT_DELAY", &v)?;
        }
        if let Some(v) = var("REALTIME_MAX_RECONNECT_DELAY") {
            self.max_reconnect_delay = duration("REALTIME_MAX_RECONNECT_DELAY", &v)?;
        }
        if let Some(v) = var("REALTIME_WS_DEFLATE") {
            self.ws_deflate = switch("REALTIME_WS_DEFLATE", &v)?;
        }
        if let Some(v) = var("REALTIME_SLOW_CLIENT_MAX_BACKLOG") {
            self.slow_client_max_backlog = number("REALTIME_SLOW_CLIENT_MAX_BACKLOG", &v)?;
        }
        if let Some(v) = var("REALTIME_BATCH_WINDOW") {
            self.batch_window = duration("REALTIME_BATCH_WINDOW", &v)?;
        }
        if let Some(v) = var("REALTIME_SOCKET_BUFFER") {
            self.socket_buffer = number("REALTIME_SOCKET_BUFFER", &v)?;
        }
        if let Some(v) = var("REALTIME_SLOW_CLIENT_TIMEOUT") {
            self.slow_client_timeout = duration("REALTIME_SLOW_CLIENT_TIMEOUT", &v)?;
        }
        Ok(())
    }

    /// Checks the replay and reconnection settings.
    fn validate(&self) -> Result<(), ConfigError> {
        within(
            "realtime.replay-capacity",
            &self.replay_capacity,
            1..=10_000_000,
            format!("{} events", self.replay_capacity),
            "1 and 10,000,000",
        )?;
        if self.replay_max_missed > self.replay_capacity {
            return Err(ConfigError::Invalid {
                setting: "realtime.replay-max-missed",
                message: format!(
                    "{} events is more than realtime.replay-capacity ({})",
                    self.replay_max_missed, self.replay_capacity
                ),
            });
        }
        const MAX_BYTES: std::ops::RangeInclusive<u64> = 64 * 1024..=16 * 1024 * 1024 * 1024;
        if !MAX_BYTES.contains(&self.replay_max_bytes) {
            return Err(ConfigError::Invalid {
                setting: "realtime.replay-max-bytes",
                message: format!(
                    "{} bytes; must be between 64 KiB and 16 GiB",
                    self.replay_max_bytes
                ),
            });
        }
        within(
            "realtime.replay-max-missed-bytes",
            &self.replay_max_missed_bytes,
            1024..=self.replay_max_bytes,
            format!("{} bytes", self.replay_max_missed_bytes),
            &format!(
                "1 KiB and realtime.replay-max-bytes ({})",
                self.replay_max_bytes
            ),
        )?;
        within(
            "realtime.socket-buffer",
            &self.socket_buffer,
            16..=65_536,
            format!("{} events", self.socket_buffer),
            "16 and 65,536",
        )?;
        within(
            "realtime.slow-client-max-backlog",
            &self.slow_client_max_backlog,
            4 * 1024..=1024 * 1024 * 1024,
            format!("{} bytes", self.slow_client_max_backlog),
            "4 KiB and 1 GiB",
        )?;
        within(
            "realtime.slow-client-timeout",
            &self.slow_client_timeout,
            Duration::from_millis(100)..=Duration::from_secs(3600),
            humantime::format_duration(self.slow_client_timeout),
            "100ms and 1h",
        )?;
        if self.max_reconnect_delay < self.reconnect_delay {
            return Err(ConfigError::Invalid {
                setting: "realtime.max-reconnect-delay",
                message: format!(
                    "{} is shorter than realtime.reconnect-delay ({})",
                    humantime::format_duration(self.max_reconnect_delay),
                    humantime::format_duration(self.reconnect_delay)
                ),
            });
        }
        Ok(())
    }
}

/// Per-module rate limit on what modules send (`ingest::rate`), MQTT and serial alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct IngestConfig {
    /// Messages per second one module may send, sustained; the excess is dropped and counted
    /// (`mc_rejected_total{reason="rate_limited"}`). 0 turns the limit off. Default 50
    /// (`INGEST_MODULE_RATE`).
    pub module_rate: f64,
    /// Messages one module may send at once above that rate. Default 200
    /// (`INGEST_MODULE_BURST`), at least 1.
    pub module_burst: f64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            module_rate: 50.0,
            module_burst: 200.0,
        }
    }
}

impl IngestConfig {
    /// Applies `INGEST_MODULE_RATE` and `INGEST_MODULE_BURST`; `var` looks a variable up.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for (name, field) in [
            ("INGEST_MODULE_RATE", &mut self.module_rate),
            ("INGEST_MODULE_BURST", &mut self.module_burst),
        ] {
            if let Some(v) = var(name) {
                *field = v.trim().parse().map_err(|_| ConfigError::Invalid {
                    setting: name,
                    message: format!("{v:?}; expected a number"),
                })?;
            }
        }
        Ok(())
    }

    /// The limit to apply, `None` when off.
    pub fn rate_limit(&self) -> Option<crate::ingest::rate::RateLimit> {
        (self.module_rate > 0.0).then_some(crate::ingest::rate::RateLimit {
            per_second: self.module_rate,
            burst: self.module_burst,
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.module_rate.is_finite() && (0.0..=1_000_000.0).contains(&self.module_rate)) {
            return Err(ConfigError::Invalid {
                setting: "ingest.module-rate",
                message: format!(
                    "{} messages/s; must be between 0 (off) and 1,000,000",
                    self.module_rate
                ),
            });
        }
        if !(self.module_burst.is_finite() && (1.0..=1_000_000.0).contains(&self.module_burst)) {
            return Err(ConfigError::Invalid {
                setting: "ingest.module-burst",
                message: format!(
                    "{} messages; must be between 1 and 1,000,000",
                    self.module_burst
                ),
            });
        }
        Ok(())
    }
}

/// Commands for modules that are offline (`[commands]`): the hub keeps them and sends them when
/// the module is back, because the embedded broker keeps nothing for a module that is not
/// connected (`hub/src/commands/queue.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CommandsConfig {
    /// A queued command not delivered within this long is dropped (and counted): a command is
    /// meant for now, not for whenever the module comes back. Default 5 min, between 1 s and
    /// 1 day.
    #[serde(with = "duration")]
    pub queue_ttl: Duration,
    /// Commands that may wait per module; one more is refused with 503. 0 turns queueing off
    /// (a command for an offline module is refused with 409). Default 16, at most 1024.
    pub max_queued: usize,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        Self {
            queue_ttl: Duration::from_secs(5 * 60),
            max_queued: 16,
        }
    }
}

impl CommandsConfig {
    /// Checks the TTL and the bound.
    fn validate(&self) -> Result<(), ConfigError> {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(24 * 3600));
        if !(min..=max).contains(&self.queue_ttl) {
            return Err(ConfigError::Invalid {
                setting: "commands.queue-ttl",
                message: format!(
                    "{}; must be between {} and {}",
                    humantime::format_duration(self.queue_ttl),
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            });
        }
        if self.max_queued > 1024 {
            return Err(ConfigError::Invalid {
                setting: "commands.max-queued",
                message: format!("{} commands; must be between 0 and 1024", self.max_queued),
            });
        }
        Ok(())
    }
}

/// Demo mode settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DemoConfig {
    /// Start the demo.
    pub enabled: bool,
    /// How many simulated modules. Default 24.
    pub modules: usize,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            modules: 24,
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            mqtt: SocketAddr::from(([0, 0, 0, 0], 1883)),
            broker: Default::default(),
            cluster: Default::default(),
            data_dir: PathBuf::from("./hub-data"),
            database: None,
            max_packet: 8 * 1024,
            mqtt_log_segment_bytes: None,
            mqtt_log_segments: None,
            http_max_connections: 4096,
            http_header_timeout: Duration::from_secs(10),
            http_request_timeout: Duration::from_secs(30),
            session_ttl: Duration::from_secs(7 * 24 * 3600),
            session_idle: crate::store::DEFAULT_SESSION_IDLE,
            liveness: LivenessConfig::default(),
            deadbands: Deadbands::default(),
            ingest: IngestConfig::default(),
            realtime: RealtimeConfig::default(),
            commands: CommandsConfig::default(),
            allowed_origins: Vec::new(),
            demo: DemoConfig::default(),
            log_format: LogFormat::Text,
            serial: Vec::new(),
        }
    }
}

/// Configuration errors, each saying what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this struct.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting {setting}: {message}")]
    Invalid {
        /// Which setting.
        setting: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The data directory cannot be used.
    #[error("data directory {path} is not usable: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            // TOML's message quotes the offending line, which may be a database URL.
            message: crate::store::database::redact_passwords(&e.to_string()),
        })
    }

    /// The database the hub uses: [`Config::database`], else SQLite in the data directory.
    pub fn database(&self) -> Database {
        self.database
            .clone()
            .unwrap_or_else(|| Database::in_data_dir(&self.data_dir))
    }

    /// Checks values and prepares the SQLite database's directory (created if missing, must be
    /// writable); a PostgreSQL database needs no directory.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.broker.validate()?;
        self.cluster.validate(self.broker.url.is_some())?;
        if self.cluster.redis.is_some() && !self.serial.is_empty() {
            return Err(ConfigError::Invalid {
                setting: "serial",
                message: "serial ports are served by a hub on its own; in a cluster, modules reach the hubs through the MQTT broker".into(),
            });
        }
        if self.demo.enabled && self.broker.url.is_some() {
            return Err(ConfigError::Invalid {
                setting: "demo",
                message: "the demo runs on the embedded broker; leave [broker] url unset for it"
                    .into(),
            });
        }
        within(
            "realtime.max-message",
            &self.realtime.max_message,
            1024..=16 * 1024 * 1024,
            format!("{} bytes", self.realtime.max_message),
            "1 KiB and 16 MiB",
        )?;
        within(
            "http-request-timeout",
            &self.http_request_timeout,
            Duration::from_millis(100)..=Duration::from_secs(3600),
            humantime::format_duration(self.http_request_timeout),
            "100ms and 1h",
        )?;
        within(
            "http-max-connections",
            &self.http_max_connections,
            1..=1_000_000,
            self.http_max_connections,
            "1 and 1,000,000",
        )?;
        within(
            "http-header-timeout",
            &self.http_header_timeout,
            Duration::from_millis(100)..=Duration::from_secs(600),
            humantime::format_duration(self.http_header_timeout),
            "100ms and 10min",
        )?;
        within(
            "max-packet",
            &self.max_packet,
            1024..=1024 * 1024,
            format!("{} bytes", self.max_packet),
            "1 KiB and 1 MiB",
        )?;
        use crate::liveness::{MAX_TIMEOUT, MIN_TIMEOUT};
        let day = Duration::from_secs(24 * 3600);
        let ranges = [
            (
                "heartbeat-timeout",
                self.liveness.heartbeat_timeout,
                MIN_TIMEOUT,
                MAX_TIMEOUT,
            ),
            (
                "liveness.flap.window",
                Some(self.liveness.flap.window),
                Duration::from_secs(1),
                day,
            ),
            (
                "liveness.flap.hold",
                Some(self.liveness.flap.hold),
                Duration::ZERO,
                day,
            ),
            (
                "session-ttl",
                Some(self.session_ttl),
                Duration::from_secs(60),
                365 * day,
            ),
            (
                "session-idle",
                Some(self.session_idle),
                Duration::from_secs(120),
                365 * day,
            ),
            (
                "realtime.batch-window",
                Some(self.realtime.batch_window),
                Duration::ZERO,
                Duration::from_millis(100),
            ),
            (
                "realtime.stats-interval",
                Some(self.realtime.stats_interval),
                Duration::from_millis(100),
                Duration::from_secs(3600),
            ),
            (
                "realtime.replay-max-age",
                Some(self.realtime.replay_max_age),
                Duration::ZERO,
                day,
            ),
            (
                "realtime.reconnect-delay",
                Some(self.realtime.reconnect_delay),
                Duration::ZERO,
                Duration::from_secs(600),
            ),
            (
                "realtime.max-reconnect-delay",
                Some(self.realtime.max_reconnect_delay),
                Duration::ZERO,
                Duration::from_secs(3600),
            ),
        ];
        for (setting, value, min, max) in ranges {
            if let Some(v) = value
                && !(min..=max).contains(&v)
            {
                return Err(ConfigError::Invalid {
                    setting,
                    message: format!(
                        "{}; must be between {} and {}",
                        humantime::format_duration(v),
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                });
            }
        }
        if let Some(bad) = self.allowed_origins.iter().find(|o| {
            let rest = o
                .strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"));
            !rest.is_some_and(|r| !r.is_empty() && !r.contains('/'))
        }) {
            return Err(ConfigError::Invalid {
                setting: "allowed-origins",
                message: format!(
                    "{bad:?}; expected scheme://host[:port], e.g. https://dash.example.com"
                ),
            });
        }
        if self.liveness.flap.max_transitions == 0 {
            return Err(ConfigError::Invalid {
                setting: "liveness.flap.max-transitions",
                message: "must be at least 1".into(),
            });
        }
        if self
            .deadbands
            .0
            .values()
            .any(|d| !d.is_finite() || *d < 0.0)
        {
            return Err(ConfigError::Invalid {
                setting: "deadbands",
                message: "each deadband must be a finite number >= 0".into(),
            });
        }
        self.realtime.validate()?;
        self.ingest.validate()?;
        self.commands.validate()?;
        self.validate_serial()?;
        let dir = match self.database() {
            Database::Postgres(_) => return Ok(()),
            Database::Sqlite(path) => match path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
                _ => PathBuf::from("."),
            },
        };
        let dir_err = |source| ConfigError::DataDir {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(dir_err)?;
        let probe = dir.join(".write-test");
        std::fs::write(&probe, b"ok").map_err(dir_err)?;
        let _ = std::fs::remove_file(probe);
        Ok(())
    }
}

impl Config {
    fn validate_serial(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            setting: "serial",
            message,
        };
        for (i, spec) in self.serial.iter().enumerate() {
            if spec.path.as_os_str().is_empty() {
                return Err(invalid(format!(
                    "{spec}: empty path; expected PATH[@BAUD][:json], e.g. /dev/ttyUSB0@115200"
                )));
            }
            if !BAUD_RANGE.contains(&spec.baud) {
                return Err(invalid(format!(
                    "{spec}: baud rate {} is out of range {}..={}",
                    spec.baud,
                    BAUD_RANGE.start(),
                    BAUD_RANGE.end()
                )));
            }
            if self.serial[..i].iter().any(|s| s.path == spec.path) {
                return Err(invalid(format!("{} is listed twice", spec.path.display())));
            }
        }
        Ok(())
    }
}

/// Serde for durations written as text: `"15s"`, `"500ms"`, `"7days"`.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` as humantime text.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Reads humantime text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Serde for optional durations written as text.
pub mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` as humantime text, or nothing.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    /// Reads humantime text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Checks that `value`, the value of `setting`, lies within `range`; the error shows it as
/// `shown` and the bounds as `bounds` ("1 KiB and 16 MiB").
fn within<T: PartialOrd>(
    setting: &'static str,
    value: &T,
    range: std::ops::RangeInclusive<T>,
    shown: impl std::fmt::Display,
    bounds: &str,
) -> Result<(), ConfigError> {
    if range.contains(value) {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            setting,
            message: format!("{shown}; must be between {bounds}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_typos_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(
            &path,
            "http = \"127.0.0.1:9000\"\n[liveness]\nheartbeat-timeout = \"2s\"\n[deadbands]\ntemperature = 0.1\n",
        )
        .unwrap();
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.http.port(), 9000);
        assert_eq!(c.liveness.heartbeat_timeout, Some(Duration::from_secs(2)));
        assert_eq!(c.deadbands.0.get("temperature"), Some(&0.1));
        assert_eq!(c.mqtt, Config::default().mqtt);

        std::fs::write(&path, "htttp = \"x\"\n").unwrap();
        let e = Config::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("htttp"), "{e}");
    }

    #[test]
    fn serial_ports_parse_from_text_and_are_validated() {
        let spec: SerialPortSpec = "/dev/ttyUSB0".parse().unwrap();
        assert_eq!(spec.path, PathBuf::from("/dev/ttyUSB0"));
        assert_eq!(spec.baud, DEFAULT_BAUD);
        let spec: SerialPortSpec = "/dev/ttyACM1@57600".parse().unwrap();
        assert_eq!(
            (spec.path.to_str(), spec.baud),
            (Some("/dev/ttyACM1"), 57_600)
        );
        assert_eq!(spec.to_string(), "/dev/ttyACM1@57600");
        assert_eq!(spec.framing, Framing::Binary);
        let json: SerialPortSpec = "/dev/ttyACM0@9600:json".parse().unwrap();
        assert_eq!((json.baud, json.framing), (9600, Framing::JsonLines));
        assert_eq!(json.to_string(), "/dev/ttyACM0@9600:json");
        let json: SerialPortSpec = "/dev/ttyACM0:json".parse().unwrap();
        assert_eq!(
            (json.baud, json.framing),
            (DEFAULT_BAUD, Framing::JsonLines)
        );
        let e = "/dev/ttyUSB0@fast".parse::<SerialPortSpec>().unwrap_err();
        assert!(e.contains("numeric baud rate"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(
            &path,
            "serial = [\"/dev/ttyUSB0@9600\", \"/dev/ttyUSB1\"]\n",
        )
        .unwrap();
        let mut c = Config::from_file(&path).unwrap();
        assert_eq!(c.serial.len(), 2);
        assert_eq!(c.serial[1].baud, DEFAULT_BAUD);
        std::fs::write(&path, "serial = [\"/dev/ttyUSB0@x\"]\n").unwrap();
        let e = Config::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("numeric baud rate"), "{e}");

        c.data_dir = dir.path().join("data");
        assert!(c.validate().is_ok());
        for bad in ["@9600", "/dev/ttyUSB0@10", "/dev/ttyUSB0@4000001"] {
            c.serial = vec![bad.parse().unwrap()];
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("invalid setting serial"), "{bad}: {e}");
        }
        c.serial = vec!["/dev/a".parse().unwrap(), "/dev/a@9600".parse().unwrap()];
        assert!(c.validate().unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn realtime_replay_and_reconnect_settings_from_file_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(
            &path,
            "[realtime]\nreplay-capacity = 10\nreplay-max-age = \"30s\"\nmax-reconnect-attempts = 5\nreconnect-delay = \"2s\"\n",
        )
        .unwrap();
        let mut c = Config::from_file(&path).unwrap();
        assert_eq!(c.realtime.replay_capacity, 10);
        assert_eq!(c.realtime.replay_max_age, Duration::from_secs(30));
        assert_eq!(c.realtime.replay_max_missed, 5_000);
        assert_eq!(c.realtime.replay_max_bytes, 32 * 1024 * 1024);
        assert_eq!(c.realtime.replay_max_missed_bytes, 1024 * 1024);
        assert_eq!(c.realtime.max_reconnect_attempts, 5);
        assert_eq!(c.realtime.reconnect_delay, Duration::from_secs(2));
        assert_eq!(c.realtime.max_reconnect_delay, Duration::from_secs(30));
        assert!(c.realtime.ws_deflate, "permessage-deflate on by default");

        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        c.realtime
            .apply_env(env(&[
                ("REALTIME_REPLAY_CAPACITY", "20"),
                ("REALTIME_REPLAY_MAX_AGE", "1min"),
                ("REALTIME_REPLAY_MAX_MISSED", "7"),
                ("REALTIME_REPLAY_MAX_BYTES", "1048576"),
                ("REALTIME_REPLAY_MAX_MISSED_BYTES", "65536"),
                ("REALTIME_MAX_RECONNECT_ATTEMPTS", "0"),
                ("REALTIME_RECONNECT_DELAY", "1500"),
                ("REALTIME_MAX_RECONNECT_DELAY", "10s"),
                ("REALTIME_WS_DEFLATE", "false"),
            ]))
            .unwrap();
        assert!(!c.realtime.ws_deflate);
        assert_eq!(c.realtime.replay_capacity, 20);
        assert_eq!(c.realtime.replay_max_age, Duration::from_secs(60));
        assert_eq!(c.realtime.replay_max_missed, 7);
        assert_eq!(c.realtime.replay_max_bytes, 1024 * 1024);
        assert_eq!(c.realtime.replay_max_missed_bytes, 64 * 1024);
        assert_eq!(c.realtime.max_reconnect_attempts, 0);
        assert_eq!(c.realtime.reconnect_delay, Duration::from_millis(1500));
        assert_eq!(c.realtime.max_reconnect_delay, Duration::from_secs(10));
        c.data_dir = dir.path().join("data");
        assert!(c.validate().is_ok());

        let e = c
            .realtime
            .apply_env(env(&[("REALTIME_RECONNECT_DELAY", "soon")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("REALTIME_RECONNECT_DELAY"), "{e}");
        let e = c
            .realtime
            .apply_env(env(&[("REALTIME_REPLAY_CAPACITY", "-1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("REALTIME_REPLAY_CAPACITY"), "{e}");
        let e = c
            .realtime
            .apply_env(env(&[("REALTIME_WS_DEFLATE", "maybe")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("REALTIME_WS_DEFLATE"), "{e}");
        c.realtime
            .apply_env(env(&[("REALTIME_WS_DEFLATE", " TRUE ")]))
            .unwrap();
        assert!(c.realtime.ws_deflate);
        std::fs::write(&path, "[realtime]\nws-deflate = true\n").unwrap();
        assert!(Config::from_file(&path).unwrap().realtime.ws_deflate);
        std::fs::write(&path, "[realtime]\nws-deflate = false\n").unwrap();
        assert!(!Config::from_file(&path).unwrap().realtime.ws_deflate);

        c.realtime.max_reconnect_delay = Duration::from_millis(100);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("max-reconnect-delay"), "{e}");
        c.realtime.max_reconnect_delay = Duration::from_secs(10);
        c.realtime.replay_capacity = 0;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("replay-capacity"), "{e}");
        c.realtime.replay_capacity = 6;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("replay-max-missed"), "{e}");
        c.realtime.replay_capacity = 7;
        assert!(c.validate().is_ok());
        for (max, missed, wrong) in [
            (1024, 1024, "replay-max-bytes"),
            (1 << 40, 1024, "replay-max-bytes"),
            (1 << 20, 100, "replay-max-missed-bytes"),
            (1 << 20, (1 << 20) + 1, "replay-max-missed-bytes"),
        ] {
            c.realtime.replay_max_bytes = max;
            c.realtime.replay_max_missed_bytes = missed;
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(wrong), "{max} {missed}: {e}");
        }
        c.realtime.replay_max_missed_bytes = 1 << 20;
        assert!(c.validate().is_ok());

        // The socket buffer and the batch window.
        assert_eq!(c.realtime.socket_buffer, 1024);
        c.realtime
            .apply_env(env(&[
                ("REALTIME_SOCKET_BUFFER", "4096"),
                ("REALTIME_BATCH_WINDOW", "2ms"),
            ]))
            .unwrap();
        assert_eq!(c.realtime.socket_buffer, 4096);
        assert_eq!(c.realtime.batch_window, Duration::from_millis(2));
        assert!(c.validate().is_ok());
        for wrong in [8, 100_000] {
            c.realtime.socket_buffer = wrong;
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("socket-buffer"), "{wrong}: {e}");
        }
        std::fs::write(&path, "[realtime]\nsocket-buffer = 256\n").unwrap();
        assert_eq!(
            Config::from_file(&path).unwrap().realtime.socket_buffer,
            256
        );
    }

    #[test]
    fn command_queue_settings_from_file_and_validated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, "[commands]\nqueue-ttl = \"90s\"\nmax-queued = 4\n").unwrap();
        let mut c = Config::from_file(&path).unwrap();
        assert_eq!(c.commands.queue_ttl, Duration::from_secs(90));
        assert_eq!(c.commands.max_queued, 4);
        std::fs::write(&path, "[commands]\nmax-queued = 2\n").unwrap();
        let defaults = Config::from_file(&path).unwrap();
        assert_eq!(defaults.commands.queue_ttl, Duration::from_secs(300));
        assert_eq!(Config::default().commands.max_queued, 16);
        std::fs::write(&path, "[commands]\nqueue-tll = \"1s\"\n").unwrap();
        let e = Config::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("queue-tll"), "{e}");

        c.data_dir = dir.path().join("data");
        assert!(c.validate().is_ok());
        c.commands.max_queued = 0;
        assert!(c.validate().is_ok(), "0 turns queueing off");
        for (ttl, max, wrong) in [
            (Duration::from_millis(999), 16, "commands.queue-ttl"),
            (Duration::from_secs(24 * 3600 + 1), 16, "commands.queue-ttl"),
            (Duration::from_secs(60), 1025, "commands.max-queued"),
        ] {
            c.commands.queue_ttl = ttl;
            c.commands.max_queued = max;
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(wrong), "{ttl:?} {max}: {e}");
        }
    }

    #[test]
    fn validation_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        assert!(c.validate().is_ok());
        c.max_packet = 10;
        assert!(c.validate().unwrap_err().to_string().contains("max-packet"));
        c.max_packet = Config::default().max_packet;
        c.liveness.heartbeat_timeout = Some(Duration::from_secs(1000 * 24 * 3600));
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("heartbeat-timeout")
        );
        c.liveness.heartbeat_timeout = None;
        c.session_ttl = Duration::ZERO;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("session-ttl")
        );
    }

    #[test]
    fn the_database_is_sqlite_in_the_data_dir_unless_a_url_says_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        let c = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        assert_eq!(
            c.database(),
            Database::Sqlite(dir.path().join("data").join("hub.db"))
        );

        std::fs::write(
            &path,
            "database = \"postgres://hub:pw@db.internal:5432/mc\"\n",
        )
        .unwrap();
        let mut c = Config::from_file(&path).unwrap();
        assert_eq!(
            c.database().postgres_url(),
            Some("postgres://hub:pw@db.internal:5432/mc")
        );
        // No data directory is created for PostgreSQL (it may not be writable at all).
        c.data_dir = dir.path().join("unused");
        assert!(c.validate().is_ok());
        assert!(!c.data_dir.exists());

        let file = dir.path().join("elsewhere").join("registry.db");
        std::fs::write(
            &path,
            format!("database = \"sqlite://{}\"\n", file.display()),
        )
        .unwrap();
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.database(), Database::Sqlite(file.clone()));
        assert!(c.validate().is_ok());
        assert!(file.parent().unwrap().is_dir(), "its directory is prepared");

        for bad in [
            "database = \"mysql://hub@db/mc\"\n",
            "database = \"postgres://hub:pw@db:port/mc\"\n",
            "database = \"hub.db\"\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = Config::from_file(&path).unwrap_err().to_string();
            assert!(
                e.contains("database") && e.contains("expected"),
                "{bad}: {e}"
            );
            assert!(!e.contains("pw@"), "the password is not repeated: {e}");
        }
    }
}
