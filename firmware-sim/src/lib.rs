//! Simulated MC station modules.
//!
//! Each simulated module speaks exactly the protocol real firmware speaks, over MQTT or over a
//! serial line, so the hub's tests drive it with this crate and hardware developers use it
//! before a board exists. Tests start N MQTT modules in-process with one call to [`start`], or
//! a module on a serial line with [`start_serial`]; the `firmware-sim` binary does the same
//! from the command line.
//!
//! # Layout
//! The module's behaviour is not here: [`mc_firmware::ModuleCore`], the `no_std` state machine
//! real boards run (hello / heartbeat / telemetry scheduling, report-by-exception, commands),
//! its reconnection [`mc_firmware::Backoff`], and on a serial line the board's link driver
//! [`mc_firmware::SerialFirmware`] (framing, handshake, acks). This crate gives them sensors, a
//! clock and a link:
//! - [`sensors`]: seeded, deterministic generators (temperature, humidity, battery, RSSI,
//!   pressure) implementing [`mc_firmware::Sensors`].
//! - [`faults`]: the faults tests inject ([`Fault`]), and the byte-level damage of the serial
//!   ones.
//! - `mqtt`: the MQTT transport: one task per module drives a [`mc_firmware::ModuleCore`] with
//!   rumqttc (a fresh client and event loop per connection, polled in its own task).
//! - [`serial`]: the serial transport: one task per module drives
//!   [`mc_firmware::SerialFirmware`] over in-memory buffers it moves to and from the line;
//!   [`SerialSimConfig`], [`start_serial`] and the handle [`SerialSimulation`].
//!   - `line`: the line opened, a device node (tokio-serial) or a pty master, as one byte
//!     stream.
//!   - `pty`: pseudo-terminals and the symlink the hub opens (`--pty`).
//! - [`credentials`]: [`ModuleCredentials`] and the `ID PASSWORD` file format.
//! - [`stats`]: per-module counters ([`SimStats`]).
//! - this file: [`SimConfig`], [`start`], and the handles [`Simulation`] / [`SimModule`].
//!
//! # The contract with the hub
//! Over MQTT: client id = username = module id, password = token, clean session, keep-alive
//! 10 s, last will `offline` on `mc/<id>/status` (QoS 1, not retained). After every ConnAck:
//! subscribe `mc/<id>/cmd` (QoS 1), publish a hello (QoS 1), a heartbeat and a telemetry
//! message with every reading, then heartbeats and telemetry on their intervals (QoS
//! [`SimConfig::periodic_qos`]). Telemetry reports by exception: only the readings that changed,
//! every [`SimConfig::full_report_every`]-th period all of them, nothing when nothing changed.
//!
//! Over a serial line: `hardware/PROTOCOL.md`, byte for byte, since the driver is the boards'
//! own; point to point (address 0), one module per line.
#![forbid(unsafe_code)]

pub mod credentials;
pub mod error;
pub mod faults;
mod line;
mod mqtt;
mod pty;
pub mod sensors;
pub mod serial;
pub mod stats;

use std::{sync::Arc, time::Duration};

use mc_firmware::CoreConfig;
use mc_protocol::{
    Encoding, FirmwareVersion, ModuleId,
    message::{HEARTBEAT_MS_RANGE, TELEMETRY_MS_RANGE},
};
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use crate::{
    credentials::ModuleCredentials,
    error::{CredentialsError, SimError},
    faults::Fault,
    serial::{SerialLink, SerialSimConfig, SerialSimulation, SerialStatus, start_serial},
    stats::SimStats,
};
pub use mc_firmware::{LinkState, link::LinkCounters};
pub use rumqttc::QoS;

use crate::stats::Counters;

/// Settings shared by every module of a simulation. Defaults are those of real firmware.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Broker address, `host:port` (an optional `mqtt://` or `tcp://` prefix is accepted).
    /// Default `127.0.0.1:1883`.
    pub broker: String,
    /// Heartbeat interval at boot (announced in the hello). Default 5 s.
    pub heartbeat: Duration,
    /// Telemetry interval at boot. Default 2 s.
    pub telemetry: Duration,
    /// Every this many telemetry periods, a message carries all readings (in between, only
    /// those that changed); 1 = always all, 0 = only after connecting and on `ResendState`.
    /// Default 10 ([`mc_firmware::CoreConfig::full_report_every`]).
    pub full_report_every: u32,
    /// Payload encoding. Default native (version byte + postcard).
    pub encoding: Encoding,
    /// MQTT keep-alive: the broker fires the last will after 1.5× this without traffic.
    /// Default 10 s.
    pub keep_alive: Duration,
    /// Seeds the sensor generators; with the module's index it makes a run reproducible.
    /// Default 0.
    pub seed: u64,
    /// Firmware version announced in hellos. Default this crate's version.
    pub fw: String,
    /// QoS of heartbeats and telemetry (hellos always use QoS 1). Default at most once.
    pub periodic_qos: QoS,
    /// How long a module stays offline after [`Fault::DropConnection`] before reconnecting by
    /// itself. Default 3 s.
    pub drop_pause: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            broker: "127.0.0.1:1883".into(),
            heartbeat: Duration::from_secs(5),
            telemetry: Duration::from_secs(2),
            full_report_every: 10,
            encoding: Encoding::Native,
            keep_alive: Duration::from_secs(10),
            seed: 0,
            fw: env!("CARGO_PKG_VERSION").into(),
            periodic_qos: QoS::AtMostOnce,
            drop_pause: Duration::from_secs(3),
        }
    }
}

/// A [`SimConfig`] checked and turned into what the module tasks need.
#[derive(Debug)]
pub(crate) struct Validated {
    pub host: String,
    pub port: u16,
    /// The firmware's factory settings, checked.
    pub core: CoreConfig,
    pub config: SimConfig,
}

impl SimConfig {
    /// Checks every setting; [`try_start`] calls it, the CLI calls it for a clear early error.
    pub fn validate(&self) -> Result<(), SimError> {
        self.validated().map(drop)
    }

    fn validated(&self) -> Result<Validated, SimError> {
        let (host, port) = parse_broker(&self.broker)?;
        let core = core_config(
            self.heartbeat,
            self.telemetry,
            self.full_report_every,
            &self.fw,
        )?;
        if !self.keep_alive.is_zero() && self.keep_alive < Duration::from_secs(1) {
            return Err(SimError::InvalidKeepAlive(self.keep_alive));
        }
        Ok(Validated {
            host,
            port,
            core,
            config: self.clone(),
        })
    }
}

/// The firmware settings every link shares ([`SimConfig`], [`SerialSimConfig`]), checked once
/// here.
pub(crate) fn core_config(
    heartbeat: Duration,
    telemetry: Duration,
    full_report_every: u32,
    fw: &str,
) -> Result<CoreConfig, SimError> {
    check_interval("heartbeat", heartbeat, &HEARTBEAT_MS_RANGE)?;
    check_interval("telemetry", telemetry, &TELEMETRY_MS_RANGE)?;
    let fw = FirmwareVersion::new(fw).map_err(|source| SimError::InvalidFirmwareVersion {
        value: fw.to_owned(),
        source,
    })?;
    Ok(CoreConfig {
        fw,
        heartbeat,
        telemetry,
        full_report_every,
    })
}

fn parse_broker(broker: &str) -> Result<(String, u16), SimError> {
    let invalid = || SimError::InvalidBroker(broker.to_owned());
    let rest = broker
        .strip_prefix("mqtt://")
        .or_else(|| broker.strip_prefix("tcp://"))
        .unwrap_or(broker);
    let (host, port) = rest.rsplit_once(':').ok_or_else(invalid)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| invalid())?;
    if host.is_empty() || port == 0 {
        return Err(invalid());
    }
    Ok((host.to_owned(), port))
}

fn check_interval(
    what: &'static str,
    value: Duration,
    range: &std::ops::RangeInclusive<u32>,
) -> Result<(), SimError> {
    let min = Duration::from_millis(u64::from(*range.start()));
    let max = Duration::from_millis(u64::from(*range.end()));
    if value < min || value > max {
        return Err(SimError::InvalidInterval {
            what,
            value,
            min,
            max,
        });
    }
    Ok(())
}

/// Starts one task per module; they stop when `shutdown` is cancelled (clean DISCONNECT).
///
/// Each module connects right away and keeps reconnecting (with backoff) while the broker is
/// unreachable or refuses it. Module `i` of `modules` draws its readings from `(config.seed, i)`.
///
/// # Panics
/// On an invalid `config` or duplicate module ids (a programming error in a test); use
/// [`try_start`] for input from outside the process. Like `tokio::spawn`, it must be called
/// within a Tokio runtime.
pub fn start(
    config: SimConfig,
    modules: Vec<ModuleCredentials>,
    shutdown: CancellationToken,
) -> Simulation {
    match try_start(config, modules, shutdown) {
        Ok(sim) => sim,
        Err(e) => panic!("firmware_sim::start: {e}"),
    }
}

/// [`start`], returning configuration errors instead of panicking.
pub fn try_start(
    config: SimConfig,
    modules: Vec<ModuleCredentials>,
    shutdown: CancellationToken,
) -> Result<Simulation, SimError> {
    let validated = Arc::new(config.validated()?);
    for (i, m) in modules.iter().enumerate() {
        if modules[..i].iter().any(|other| other.id == m.id) {
            return Err(SimError::DuplicateModule(m.id.clone()));
        }
    }
    let tracker = TaskTracker::new();
    let handles = modules
        .into_iter()
        .enumerate()
        .map(|(index, credentials)| {
            let (faults_tx, faults_rx) = mpsc::unbounded_channel();
            let counters = Arc::new(Counters::default());
            let id = credentials.id.clone();
            let task = mqtt::ModuleTask::new(
                Arc::clone(&validated),
                credentials,
                u32::try_from(index).unwrap_or(u32::MAX),
                faults_rx,
                Arc::clone(&counters),
                shutdown.clone(),
            );
            tracker.spawn(task.run());
            SimModule {
                id,
                faults: faults_tx,
                counters,
            }
        })
        .collect();
    tracker.close();
    Ok(Simulation {
        modules: handles,
        tracker,
    })
}

/// The running simulation: a handle per module and the tasks behind them.
#[derive(Debug)]
pub struct Simulation {
    /// In the order given to [`start`].
    modules: Vec<SimModule>,
    /// Every module task, so [`Simulation::stopped`] can wait for them.
    tracker: TaskTracker,
}

impl Simulation {
    /// The module with this id.
    pub fn module(&self, id: &str) -> Option<&SimModule> {
        self.modules.iter().find(|m| m.id.as_str() == id)
    }

    /// All modules, in the order given to [`start`].
    pub fn modules(&self) -> &[SimModule] {
        &self.modules
    }

    /// The sum of every module's counters.
    pub fn total_stats(&self) -> SimStats {
        self.modules
            .iter()
            .map(SimModule::stats)
            .fold(SimStats::default(), |a, b| a + b)
    }

    /// Waits until every module task has finished (after `shutdown` is cancelled, each one
    /// disconnects cleanly first).
    pub async fn stopped(self) {
        self.tracker.wait().await;
    }
}

/// The handle of one simulated module.
#[derive(Debug, Clone)]
pub struct SimModule {
    /// The module's id.
    id: ModuleId,
    /// To the module's task; unbounded so that `inject` never blocks or fails.
    faults: mpsc::UnboundedSender<Fault>,
    /// Written by the module's task.
    counters: Arc<Counters>,
}

impl SimModule {
    /// The module's id.
    pub fn id(&self) -> &ModuleId {
        &self.id
    }

    /// Injects a fault; returns at once. Ignored once the simulation has stopped.
    pub fn inject(&self, fault: Fault) {
        if self.faults.send(fault).is_err() {
            tracing::debug!(module = %self.id, ?fault, "fault ignored: module stopped");
        }
    }

    /// A snapshot of the module's counters.
    pub fn stats(&self) -> SimStats {
        self.counters.snapshot()
    }

    /// True while the module has an MQTT connection (ConnAck received, not yet lost).
    pub fn is_connected(&self) -> bool {
        self.counters.is_connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        SimConfig::default().validate().unwrap();
    }

    #[test]
    fn broker_addresses() {
        assert_eq!(
            parse_broker("127.0.0.1:1883").unwrap(),
            ("127.0.0.1".into(), 1883)
        );
        assert_eq!(
            parse_broker("mqtt://broker.local:1884").unwrap(),
            ("broker.local".into(), 1884)
        );
        assert_eq!(parse_broker("[::1]:1883").unwrap(), ("::1".into(), 1883));
        for bad in ["", "localhost", "host:", ":1883", "host:99999", "host:0"] {
            assert!(parse_broker(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_bad_settings() {
        let bad = [
            SimConfig {
                heartbeat: Duration::from_millis(10),
                ..SimConfig::default()
            },
            SimConfig {
                telemetry: Duration::ZERO,
                ..SimConfig::default()
            },
            SimConfig {
                keep_alive: Duration::from_millis(500),
                ..SimConfig::default()
            },
            SimConfig {
                fw: "a-very-long-firmware-version".into(),
                ..SimConfig::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }

    #[tokio::test]
    async fn duplicate_modules_are_refused() {
        let id = ModuleId::new("MC-1").unwrap();
        let modules = vec![
            ModuleCredentials::new(id.clone(), "a"),
            ModuleCredentials::new(id, "b"),
        ];
        let err = try_start(SimConfig::default(), modules, CancellationToken::new()).unwrap_err();
        assert!(matches!(err, SimError::DuplicateModule(_)));
    }
}
