//! The module state machine, sans I/O: what a station module does, without knowing how bytes
//! travel or what time it is.
//!
//! Real boards and the simulator run this same code, so it uses no tokio, no MQTT, no allocation
//! and no clock. The driver (the simulator's MQTT transport, or a board's main loop) feeds it
//! inputs and drains its outputs:
//!
//! - inputs: [`ModuleCore::connected`], [`ModuleCore::disconnected`], [`ModuleCore::tick`],
//!   [`ModuleCore::command`], plus the fault hooks ([`ModuleCore::stop_heartbeats`],
//!   [`ModuleCore::burst`], ...);
//! - outputs: call [`ModuleCore::poll_output`] until it returns `None` after every input;
//! - timers: [`ModuleCore::poll_timeout`] says when the next [`ModuleCore::tick`] is needed.
//!
//! Every input takes `now`, the time since the *process* (or board) started
//! ([`crate::io::Clock`]). The core keeps its own boot instant, so a `Reboot` command resets the
//! uptime without the driver's clock moving.
//!
//! On each connection the module sends, in this order: a [`Hello`], a first [`Heartbeat`] and a
//! first telemetry message with every reading (so the hub has liveness and full state right
//! away), then heartbeats and telemetry on their own intervals; telemetry reports by exception
//! ([`crate::telemetry`]). Sequence numbers start at 0 at boot, increment per message of their
//! kind, and survive reconnections (only a reboot resets them).

use core::time::Duration;

use mc_protocol::{
    Command, CommandAction, FirmwareVersion, Heartbeat, Hello,
    message::{HEARTBEAT_MS_RANGE, MAX_READINGS, TELEMETRY_MS_RANGE},
};

use crate::{
    sensors::Sensors,
    telemetry::{ExceptionFilter, TelemetryReport},
};

/// The firmware's factory settings, restored by a reboot.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Announced in every hello.
    pub fw: FirmwareVersion,
    /// Heartbeat interval at boot; must be within [`HEARTBEAT_MS_RANGE`].
    pub heartbeat: Duration,
    /// Telemetry interval at boot; must be within [`TELEMETRY_MS_RANGE`].
    pub telemetry: Duration,
    /// Every this many telemetry periods, a message carries all readings even if they did not
    /// move (periods skipped for having nothing to report count too); 1 = every message is
    /// full, 0 = only the full reports after connecting and on `ResendState`. The simulator
    /// uses 10. See [`crate::telemetry`].
    pub full_report_every: u32,
}

/// A protocol message the module wants published on its topic.
#[allow(
    clippy::large_enum_variant,
    reason = "firmware has no allocator to box into; an output is moved once and consumed at once"
)]
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// On `mc/<id>/hello`, once per connection and after a heartbeat interval change.
    Hello(Hello),
    /// On `mc/<id>/heartbeat`.
    Heartbeat(Heartbeat),
    /// On `mc/<id>/telemetry`, after [`TelemetryReport::to_telemetry`] with
    /// [`Sensors::names`] (MQTT), or as is by index (serial link).
    Telemetry(TelemetryReport),
}

/// What the driver must do next.
#[allow(
    clippy::large_enum_variant,
    reason = "firmware has no allocator to box into; an output is moved once and consumed at once"
)]
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Publish this message (only emitted while connected).
    Publish(Outgoing),
    /// The module rebooted (uptime, sequence numbers and intervals are already reset): close the
    /// connection cleanly, call [`ModuleCore::disconnected`], then connect again.
    Reboot,
}

/// Why a well-formed command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandRejected {
    /// `SetHeartbeatInterval` outside [`HEARTBEAT_MS_RANGE`].
    HeartbeatIntervalOutOfRange(u32),
    /// `SetTelemetryInterval` outside [`TELEMETRY_MS_RANGE`].
    TelemetryIntervalOutOfRange(u32),
}

impl core::fmt::Display for CommandRejected {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::HeartbeatIntervalOutOfRange(ms) => {
                write!(f, "heartbeat interval {ms} ms out of range")
            }
            Self::TelemetryIntervalOutOfRange(ms) => {
                write!(f, "telemetry interval {ms} ms out of range")
            }
        }
    }
}

/// The last command a module executed, remembered to recognise its retransmissions
/// ([`ModuleCore::command`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastCommand {
    /// The command's id, chosen by the hub.
    pub id: u32,
    /// What came of it; a retransmission gets the same answer.
    pub result: Result<(), CommandRejected>,
}

/// The state of one module, reading its sensors through `S`.
#[derive(Debug, Clone)]
pub struct ModuleCore<S> {
    /// Factory settings, restored on reboot.
    config: CoreConfig,
    /// Sampled once per telemetry period; keeps running across reboots (the weather does not
    /// reboot).
    sensors: S,
    /// Current heartbeat interval (changed by command).
    heartbeat_interval: Duration,
    /// Current telemetry interval (changed by command).
    telemetry_interval: Duration,
    /// `now` at the last boot; uptime is measured from here.
    booted_at: Duration,
    /// True between `connected` and `disconnected`: messages are only produced while online.
    online: bool,
    /// Seq of the next heartbeat.
    heartbeat_seq: u32,
    /// Seq of the next telemetry message actually sent (a skipped period consumes none).
    telemetry_seq: u32,
    /// When the next heartbeat is due (while online).
    next_heartbeat: Option<Duration>,
    /// When the next telemetry period is due (while online).
    next_telemetry: Option<Duration>,
    /// Fault: the heartbeat task "hangs"; telemetry continues.
    heartbeats_stopped: bool,
    /// Pending outputs, drained by `poll_output` in this order.
    reboot_due: bool,
    /// A hello is owed (new connection, or a heartbeat interval change).
    hello_due: bool,
    /// A heartbeat is owed (new connection, its deadline, or heartbeats resumed).
    heartbeat_due: bool,
    /// Telemetry periods still to report (each may turn out to have nothing to send).
    telemetry_due: u32,
    /// Burst messages still to send: always sent, each with every reading.
    burst_due: u32,
    /// What was last reported and when the next full report is due (report-by-exception).
    reports: ExceptionFilter,
    /// The last command executed, so a retransmission is answered without running it again.
    /// Survives reboots: see [`ModuleCore::command`].
    last_command: Option<LastCommand>,
}

impl<S: Sensors> ModuleCore<S> {
    /// A module that booted at `now`, not yet connected.
    pub fn new(config: CoreConfig, sensors: S, now: Duration) -> Self {
        Self {
            heartbeat_interval: config.heartbeat,
            telemetry_interval: config.telemetry,
            config,
            sensors,
            booted_at: now,
            online: false,
            heartbeat_seq: 0,
            telemetry_seq: 0,
            next_heartbeat: None,
            next_telemetry: None,
            heartbeats_stopped: false,
            reboot_due: false,
            hello_due: false,
            heartbeat_due: false,
            telemetry_due: 0,
            burst_due: 0,
            reports: ExceptionFilter::new(),
            last_command: None,
        }
    }

    /// The link is up (MQTT: ConnAck received and the command topic subscribed).
    pub fn connected(&mut self, now: Duration) {
        self.online = true;
        self.hello_due = true;
        self.heartbeat_due = !self.heartbeats_stopped;
        // The hub may have restarted or missed messages while we were away: start it off with
        // the full state.
        self.reports.request_full();
        self.telemetry_due = 1;
        self.next_heartbeat = Some(now + self.heartbeat_interval);
        self.next_telemetry = Some(now + self.telemetry_interval);
    }

    /// The link is down: nothing is produced (and nothing queued) until `connected`.
    pub fn disconnected(&mut self) {
        self.online = false;
        self.hello_due = false;
        self.heartbeat_due = false;
        self.telemetry_due = 0;
        self.burst_due = 0;
        self.next_heartbeat = None;
        self.next_telemetry = None;
    }

    /// Time has passed; call at (or after) [`Self::poll_timeout`].
    pub fn tick(&mut self, now: Duration) {
        if let Some(due) = advance(&mut self.next_heartbeat, self.heartbeat_interval, now)
            && due
            && !self.heartbeats_stopped
        {
            self.heartbeat_due = true;
        }
        if let Some(true) = advance(&mut self.next_telemetry, self.telemetry_interval, now) {
            self.telemetry_due = self.telemetry_due.saturating_add(1);
        }
    }

    /// A command from the hub (already decoded and validated by the protocol crate).
    ///
    /// **De-duplicated by id**: a command with the same id as the last one returns the last
    /// one's result again without executing it. A serial link retransmits a command whose
    /// acknowledgement was lost, and MQTT QoS 1 may deliver one twice; running it again would
    /// at best announce a second hello, at worst reboot twice. Only the last id is kept, which
    /// covers a retransmission that follows its original (a stop-and-wait link retransmits
    /// before it sends anything newer). Ids are the hub's: it must not reuse the id of a
    /// module's last command for a different command.
    ///
    /// The memory survives [`CommandAction::Reboot`]: the acknowledgement of a reboot is the
    /// message most likely to be lost (the link goes down right after it), so its
    /// retransmission typically arrives *after* the reboot, and a module that forgot would
    /// reboot again, lose that acknowledgement too, and so on. A board that really resets its
    /// MCU on [`Output::Reboot`] keeps [`Self::last_command`] in memory that survives the reset
    /// (retained RAM, a backup register) and hands it back with [`Self::restore_last_command`].
    pub fn command(&mut self, now: Duration, command: &Command) -> Result<(), CommandRejected> {
        if let Some(last) = self.last_command
            && last.id == command.id
        {
            return last.result;
        }
        let result = self.execute(now, command);
        self.last_command = Some(LastCommand {
            id: command.id,
            result,
        });
        result
    }

    /// Settings the hub asked for outside a command (a serial link's `Accept`): applied like
    /// the matching commands, but not remembered as "the last command" (they have no id).
    pub fn apply_settings(
        &mut self,
        now: Duration,
        heartbeat_ms: u32,
        telemetry_ms: u32,
    ) -> Result<(), CommandRejected> {
        if u128::from(heartbeat_ms) != self.heartbeat_interval.as_millis() {
            let action = CommandAction::SetHeartbeatInterval { ms: heartbeat_ms };
            self.execute(now, &Command { id: 0, action })?;
        }
        if u128::from(telemetry_ms) != self.telemetry_interval.as_millis() {
            let action = CommandAction::SetTelemetryInterval { ms: telemetry_ms };
            self.execute(now, &Command { id: 0, action })?;
        }
        Ok(())
    }

    /// The last command executed, if any (for a board that resets for real on reboot).
    pub fn last_command(&self) -> Option<LastCommand> {
        self.last_command
    }

    /// Puts back the memory of [`Self::last_command`] after a hardware reset, so that a
    /// retransmitted command is still recognised.
    pub fn restore_last_command(&mut self, last: LastCommand) {
        self.last_command = Some(last);
    }

    fn execute(&mut self, now: Duration, command: &Command) -> Result<(), CommandRejected> {
        match command.action {
            CommandAction::SetHeartbeatInterval { ms } => {
                if !HEARTBEAT_MS_RANGE.contains(&ms) {
                    return Err(CommandRejected::HeartbeatIntervalOutOfRange(ms));
                }
                self.heartbeat_interval = Duration::from_millis(u64::from(ms));
                if self.online {
                    self.hello_due = true;
                    self.next_heartbeat = Some(now + self.heartbeat_interval);
                }
            }
            CommandAction::SetTelemetryInterval { ms } => {
                if !TELEMETRY_MS_RANGE.contains(&ms) {
                    return Err(CommandRejected::TelemetryIntervalOutOfRange(ms));
                }
                self.telemetry_interval = Duration::from_millis(u64::from(ms));
                if self.online {
                    self.next_telemetry = Some(now + self.telemetry_interval);
                }
            }
            // "Resend state" means "send a telemetry message with every reading, now".
            CommandAction::ResendState => {
                if self.online {
                    self.reports.request_full();
                    self.telemetry_due = self.telemetry_due.saturating_add(1);
                }
            }
            CommandAction::Reboot => self.reboot_due = true,
        }
        Ok(())
    }

    /// Fault: stop sending heartbeats (telemetry continues), as if the heartbeat task hung.
    pub fn stop_heartbeats(&mut self) {
        self.heartbeats_stopped = true;
        self.heartbeat_due = false;
    }

    /// Fault cleared: send a heartbeat right away and resume the schedule.
    pub fn resume_heartbeats(&mut self) {
        self.heartbeats_stopped = false;
        self.heartbeat_due = self.online;
    }

    /// Fault: `n` telemetry messages back to back, each with every reading, so that a burst is
    /// `n` messages whatever the sensors do (ignored while offline).
    pub fn burst(&mut self, n: u32) {
        if self.online {
            self.burst_due = self.burst_due.saturating_add(n);
        }
    }

    /// The next thing to do, if any. Call repeatedly until `None` after every input.
    pub fn poll_output(&mut self, now: Duration) -> Option<Output> {
        if self.reboot_due {
            self.reboot(now);
            return Some(Output::Reboot);
        }
        if !self.online {
            return None;
        }
        if self.hello_due {
            self.hello_due = false;
            return Some(Output::Publish(Outgoing::Hello(Hello {
                fw: self.config.fw.clone(),
                heartbeat_ms: millis_u32(self.heartbeat_interval),
            })));
        }
        if self.heartbeat_due {
            self.heartbeat_due = false;
            let seq = self.heartbeat_seq;
            self.heartbeat_seq = seq.wrapping_add(1);
            return Some(Output::Publish(Outgoing::Heartbeat(Heartbeat {
                seq,
                uptime_ms: self.uptime(now).as_millis() as u64,
            })));
        }
        // Periods with nothing to report produce nothing: try the next one.
        while self.telemetry_due > 0 || self.burst_due > 0 {
            let burst = self.telemetry_due == 0;
            if burst {
                self.burst_due -= 1;
            } else {
                self.telemetry_due -= 1;
            }
            if let Some(report) = self.next_report(burst) {
                return Some(Output::Publish(Outgoing::Telemetry(report)));
            }
        }
        None
    }

    /// When the next [`Self::tick`] is needed; `None` while offline (nothing is scheduled).
    pub fn poll_timeout(&self) -> Option<Duration> {
        match (self.next_heartbeat, self.next_telemetry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time since the last boot.
    pub fn uptime(&self, now: Duration) -> Duration {
        now.saturating_sub(self.booted_at)
    }

    /// True while the link is up.
    pub fn is_online(&self) -> bool {
        self.online
    }

    /// The firmware version announced in hellos.
    pub fn firmware_version(&self) -> &FirmwareVersion {
        &self.config.fw
    }

    /// Current heartbeat interval.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// Current telemetry interval.
    pub fn telemetry_interval(&self) -> Duration {
        self.telemetry_interval
    }

    /// The sensors: [`Sensors::names`] names the readings of a [`TelemetryReport`].
    pub fn sensors(&self) -> &S {
        &self.sensors
    }

    /// The sensors, for a driver that configures them while running (the names must not
    /// change).
    pub fn sensors_mut(&mut self) -> &mut S {
        &mut self.sensors
    }

    /// Samples the sensors for one telemetry period and keeps what is worth sending; a report
    /// takes the next sequence number, a period with nothing to send takes none.
    fn next_report(&mut self, force_full: bool) -> Option<TelemetryReport> {
        let count = self.sensors.names().len().min(MAX_READINGS);
        // A reading the sensors leave unset stays NaN, and non-finite values are never sent.
        let mut values = [f32::NAN; MAX_READINGS];
        let values = &mut values[..count];
        self.sensors.sample(values);
        let sensors = &self.sensors;
        let report = self.reports.report(
            self.telemetry_seq,
            values,
            |index| sensors.deadband(index),
            self.config.full_report_every,
            force_full,
        )?;
        self.telemetry_seq = self.telemetry_seq.wrapping_add(1);
        Some(report)
    }

    /// Back to factory state: new boot instant, sequence numbers from 0, factory intervals,
    /// nothing reported yet, offline, nothing pending. Kept: fault flags (the simulator's, not
    /// the firmware's) and the last command (see [`Self::command`]).
    fn reboot(&mut self, now: Duration) {
        self.disconnected();
        self.reboot_due = false;
        self.booted_at = now;
        self.heartbeat_seq = 0;
        self.telemetry_seq = 0;
        self.heartbeat_interval = self.config.heartbeat;
        self.telemetry_interval = self.config.telemetry;
        self.reports = ExceptionFilter::new();
    }
}

/// Moves a periodic deadline past `now`. Returns `None` when there is no schedule, else whether
/// the deadline had passed. A late tick does not produce a backlog of messages: missed periods
/// are skipped, like a firmware timer would.
fn advance(next: &mut Option<Duration>, interval: Duration, now: Duration) -> Option<bool> {
    let deadline = (*next)?;
    if deadline > now {
        return Some(false);
    }
    let mut following = deadline + interval;
    if following <= now {
        following = now + interval;
    }
    *next = Some(following);
    Some(true)
}

fn millis_u32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        format,
        string::{String, ToString},
        vec,
        vec::Vec,
    };

    use mc_protocol::ReadingName;

    use super::*;

    const HB: Duration = Duration::from_secs(5);
    const TM: Duration = Duration::from_secs(2);
    const NAMES: [&str; 5] = ["temperature", "humidity", "battery", "rssi", "pressure"];

    /// Where test readings come from.
    #[derive(Debug, Clone)]
    enum Source {
        /// Every reading changes on every sample, so every period has something to report.
        Changing,
        /// One row per sample; the last row repeats once the script runs out.
        Script(VecDeque<Vec<f32>>, Vec<f32>),
    }

    #[derive(Debug, Clone)]
    struct TestSensors {
        names: Vec<ReadingName>,
        deadbands: Vec<f32>,
        source: Source,
        /// Number of `sample` calls: one per telemetry period.
        samples: u32,
    }

    impl TestSensors {
        fn changing() -> Self {
            Self {
                names: NAMES.iter().map(|n| ReadingName::new(n).unwrap()).collect(),
                deadbands: vec![0.0; NAMES.len()],
                source: Source::Changing,
                samples: 0,
            }
        }

        /// `rows[k][i]`: reading i of sample k; one reading per column, named after `NAMES`.
        fn scripted(deadbands: &[f32], rows: &[&[f32]]) -> Self {
            Self {
                names: NAMES[..deadbands.len()]
                    .iter()
                    .map(|n| ReadingName::new(n).unwrap())
                    .collect(),
                deadbands: deadbands.to_vec(),
                source: Source::Script(rows.iter().map(|r| r.to_vec()).collect(), Vec::new()),
                samples: 0,
            }
        }
    }

    impl Sensors for TestSensors {
        fn names(&self) -> &[ReadingName] {
            &self.names
        }

        fn sample(&mut self, values: &mut [f32]) {
            assert_eq!(values.len(), self.names.len().min(MAX_READINGS));
            self.samples += 1;
            match &mut self.source {
                Source::Changing => {
                    for (i, v) in values.iter_mut().enumerate() {
                        *v = self.samples as f32 + i as f32 / 10.0;
                    }
                }
                Source::Script(rows, last) => {
                    if let Some(row) = rows.pop_front() {
                        *last = row;
                    }
                    values.copy_from_slice(last);
                }
            }
        }

        fn deadband(&self, index: usize) -> f32 {
            self.deadbands[index]
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config(full_report_every: u32) -> CoreConfig {
        CoreConfig {
            fw: FirmwareVersion::new("1.2.3").unwrap(),
            heartbeat: HB,
            telemetry: TM,
            full_report_every,
        }
    }

    fn core_at(now: Duration) -> ModuleCore<TestSensors> {
        ModuleCore::new(config(10), TestSensors::changing(), now)
    }

    /// A connected core at 0 whose handshake has been drained, except for the first telemetry
    /// report, which is returned.
    fn connected(
        sensors: TestSensors,
        full_report_every: u32,
    ) -> (ModuleCore<TestSensors>, TelemetryReport) {
        let mut core = ModuleCore::new(config(full_report_every), sensors, ms(0));
        core.stop_heartbeats();
        core.connected(ms(0));
        let mut out = drain(&mut core, ms(0)).into_iter();
        assert!(matches!(
            out.next(),
            Some(Output::Publish(Outgoing::Hello(_)))
        ));
        let first = match out.next() {
            Some(Output::Publish(Outgoing::Telemetry(t))) => t,
            other => panic!("{other:?}"),
        };
        assert_eq!(out.next(), None);
        (core, first)
    }

    fn drain<S: Sensors>(core: &mut ModuleCore<S>, now: Duration) -> Vec<Output> {
        std::iter::from_fn(|| core.poll_output(now)).collect()
    }

    /// Short labels make sequences easy to assert.
    fn labels(outputs: &[Output]) -> Vec<String> {
        outputs
            .iter()
            .map(|o| match o {
                Output::Publish(Outgoing::Hello(h)) => format!("hello {}", h.heartbeat_ms),
                Output::Publish(Outgoing::Heartbeat(h)) => format!("hb {} {}", h.seq, h.uptime_ms),
                Output::Publish(Outgoing::Telemetry(t)) => format!("tm {}", t.seq),
                Output::Reboot => "reboot".into(),
            })
            .collect()
    }

    /// Telemetry as `seq: index=value ...`, to assert what each report carries.
    fn reports(outputs: &[Output]) -> Vec<String> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Publish(Outgoing::Telemetry(t)) => Some(describe(t)),
                _ => None,
            })
            .collect()
    }

    fn describe(t: &TelemetryReport) -> String {
        let mut s = format!("{}:", t.seq);
        for (i, v) in t.readings() {
            s += &format!(" {i}={v}");
        }
        s
    }

    /// Runs the core from `from` to `to`, ticking whenever it asks, and collects the outputs.
    fn run_outputs<S: Sensors>(
        core: &mut ModuleCore<S>,
        from: Duration,
        to: Duration,
    ) -> Vec<Output> {
        let mut out = drain(core, from);
        while let Some(t) = core.poll_timeout() {
            if t > to {
                break;
            }
            core.tick(t);
            out.extend(drain(core, t));
        }
        out
    }

    fn run(core: &mut ModuleCore<TestSensors>, from: Duration, to: Duration) -> Vec<String> {
        labels(&run_outputs(core, from, to))
    }

    fn cmd(action: CommandAction) -> Command {
        cmd_id(1, action)
    }

    fn cmd_id(id: u32, action: CommandAction) -> Command {
        Command { id, action }
    }

    #[test]
    fn silent_until_connected() {
        let mut core = core_at(ms(0));
        assert!(drain(&mut core, ms(10_000)).is_empty());
        assert_eq!(core.poll_timeout(), None);
        core.tick(ms(20_000));
        assert!(drain(&mut core, ms(20_000)).is_empty());
        assert_eq!(core.sensors().samples, 0, "no sampling while offline");
    }

    #[test]
    fn handshake_is_hello_then_heartbeat_then_full_telemetry() {
        let mut core = core_at(ms(0));
        core.connected(ms(1_000));
        let out = drain(&mut core, ms(1_000));
        assert_eq!(labels(&out), ["hello 5000", "hb 0 1000", "tm 0"]);
        match &out[0] {
            Output::Publish(Outgoing::Hello(h)) => assert_eq!(h.fw.as_str(), "1.2.3"),
            other => panic!("{other:?}"),
        }
        match &out[2] {
            Output::Publish(Outgoing::Telemetry(t)) => {
                assert_eq!((t.len(), t.mask), (5, 0b11111));
                let telemetry = t.to_telemetry(core.sensors().names());
                assert_eq!(telemetry.seq, 0);
                assert_eq!(telemetry.readings.len(), 5);
                assert_eq!(telemetry.readings.get("humidity"), Some(1.1));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn heartbeats_and_telemetry_follow_their_own_schedules() {
        let mut core = core_at(ms(0));
        core.connected(ms(0));
        let out = run(&mut core, ms(0), ms(10_000));
        assert_eq!(
            out,
            [
                "hello 5000",
                "hb 0 0",
                "tm 0",
                "tm 1", // 2 s
                "tm 2", // 4 s
                "hb 1 5000",
                "tm 3", // 6 s
                "tm 4", // 8 s
                "hb 2 10000",
                "tm 5", // 10 s: heartbeat deadline first (same instant), then telemetry
            ]
        );
        assert_eq!(core.poll_timeout(), Some(ms(12_000)));
    }

    #[test]
    fn late_tick_skips_missed_periods() {
        let mut core = core_at(ms(0));
        core.connected(ms(0));
        drain(&mut core, ms(0));
        core.tick(ms(60_000));
        assert_eq!(
            labels(&drain(&mut core, ms(60_000))),
            ["hb 1 60000", "tm 1"]
        );
        assert_eq!(core.poll_timeout(), Some(ms(62_000)));
    }

    #[test]
    fn sequences_survive_reconnection() {
        let mut core = core_at(ms(0));
        core.connected(ms(0));
        run(&mut core, ms(0), ms(5_000));
        core.disconnected();
        assert_eq!(core.poll_timeout(), None);
        core.tick(ms(7_000));
        assert!(drain(&mut core, ms(7_000)).is_empty());
        core.connected(ms(8_000));
        assert_eq!(
            labels(&drain(&mut core, ms(8_000))),
            ["hello 5000", "hb 2 8000", "tm 3"]
        );
    }

    #[test]
    fn set_heartbeat_interval_announces_and_reschedules() {
        let mut core = core_at(ms(0));
        core.connected(ms(0));
        drain(&mut core, ms(0));
        core.command(
            ms(1_000),
            &cmd(CommandAction::SetHeartbeatInterval { ms: 1_000 }),
        )
        .unwrap();
        assert_eq!(core.heartbeat_interval(), ms(1_000));
        assert_eq!(labels(&drain(&mut core, ms(1_000))), ["hello 1000"]);
        let out = run(&mut core, ms(1_000), ms(3_000));
        assert_eq!(out, ["hb 1 2000", "tm 1", "hb 2 3000"]);
    }

    #[test]
    fn set_telemetry_interval_reschedules() {
        let mut core = core_at(ms(0));
        core.connected(ms(0));
        drain(&mut core, ms(0));
        core.command(
            ms(500),
            &cmd(CommandAction::SetTelemetryInterval { ms: 500 }),
        )
        .unwrap();
        assert!(
            drain(&mut core, ms(500)).is_empty(),
            "no hello for telemetry"
        );
        assert_eq!(run(&mut core, ms(500), ms(2_000)), ["tm 1", "tm 2", "tm 3"]);
    }

    #[test]
    fn out_of_range_intervals_are_rejected_and_change_nothing() {
        let mut core = core_at(ms(0));
        core.connected(ms(0));
        drain(&mut core, ms(0));
        assert_eq!(
            core.command(
                ms(0),
                &cmd_id(1, CommandAction::SetHeartbeatInterval { ms: 5 })
            ),
            Err(CommandRejected::HeartbeatIntervalOutOfRange(5))
        );
        assert_eq!(
            core.command(
                ms(0),
                &cmd_id(2, CommandAction::SetTelemetryInterval { ms: 0 })
            ),
            Err(CommandRejected::TelemetryIntervalOutOfRange(0))
        );
        assert_eq!(core.heartbeat_interval(), HB);
        assert_eq!(core.telemetry_interval(), TM);
        assert!(drain(&mut core, ms(0)).is_empty());
    }

    #[test]
    fn resend_state_sends_full_telemetry_now() {
        let (mut core, _) = connected(TestSensors::scripted(&[0.0, 0.0], &[&[1.0, 5.0]]), 0);
        core.command(ms(300), &cmd(CommandAction::ResendState))
            .unwrap();
        assert_eq!(reports(&drain(&mut core, ms(300))), ["1: 0=1 1=5"]);
    }

    #[test]
    fn reboot_resets_uptime_sequences_and_intervals() {
        let mut core = core_at(ms(0));
        core.connected(ms(0));
        run(&mut core, ms(0), ms(10_000));
        core.command(
            ms(10_000),
            &cmd_id(1, CommandAction::SetHeartbeatInterval { ms: 1_000 }),
        )
        .unwrap();
        drain(&mut core, ms(10_000));
        core.command(ms(10_500), &cmd_id(2, CommandAction::Reboot))
            .unwrap();
        assert_eq!(labels(&drain(&mut core, ms(10_500))), ["reboot"]);
        assert!(!core.is_online());
        assert_eq!(core.heartbeat_interval(), HB);
        assert_eq!(core.uptime(ms(10_500)), Duration::ZERO);
        // The driver closes the link and connects again.
        core.disconnected();
        core.connected(ms(11_000));
        assert_eq!(
            labels(&drain(&mut core, ms(11_000))),
            ["hello 5000", "hb 0 500", "tm 0"]
        );
    }

    #[test]
    fn stopped_heartbeats_leave_telemetry_running() {
        let mut core = core_at(ms(0));
        core.connected(ms(0));
        drain(&mut core, ms(0));
        core.stop_heartbeats();
        assert_eq!(
            run(&mut core, ms(0), ms(10_000)),
            ["tm 1", "tm 2", "tm 3", "tm 4", "tm 5"]
        );
        core.resume_heartbeats();
        assert_eq!(labels(&drain(&mut core, ms(10_100))), ["hb 1 10100"]);
    }

    #[test]
    fn stopped_heartbeats_stay_stopped_across_reconnect() {
        let mut core = core_at(ms(0));
        core.stop_heartbeats();
        core.connected(ms(0));
        assert_eq!(labels(&drain(&mut core, ms(0))), ["hello 5000", "tm 0"]);
    }

    #[test]
    fn burst_sends_n_full_telemetry_messages_with_increasing_seq() {
        // Readings that never change: a burst still sends every message, in full.
        let (mut core, _) = connected(TestSensors::scripted(&[0.0, 0.0], &[&[1.0, 2.0]]), 0);
        core.burst(3);
        assert_eq!(
            reports(&drain(&mut core, ms(100))),
            ["1: 0=1 1=2", "2: 0=1 1=2", "3: 0=1 1=2"]
        );
        core.disconnected();
        core.burst(3);
        assert!(
            drain(&mut core, ms(200)).is_empty(),
            "no burst while offline"
        );
    }

    #[test]
    fn one_sample_per_telemetry_period() {
        let mut core = core_at(ms(0));
        core.connected(ms(0));
        run(&mut core, ms(0), ms(10_000));
        assert_eq!(core.sensors().samples, 6, "at 0, 2, 4, 6, 8 and 10 s");
    }

    // Report-by-exception.

    #[test]
    fn deadband_keeps_small_changes_and_sends_large_ones() {
        let (mut core, first) = connected(
            TestSensors::scripted(
                &[0.5, 0.0],
                &[
                    &[20.0, 50.0],
                    &[20.4, 50.0], // temperature within its deadband; humidity unchanged
                    &[20.4, 50.5], // humidity moved: only humidity
                    &[19.25, 50.5], // temperature moved by 0.75 > 0.5 since last reported
                    &[19.75, 50.5], // by exactly the deadband: not reported
                ],
            ),
            0,
        );
        assert_eq!(describe(&first), "0: 0=20 1=50");
        let out = run_outputs(&mut core, ms(0), ms(8_000));
        assert_eq!(reports(&out), ["1: 1=50.5", "2: 0=19.25"]);
    }

    #[test]
    fn slow_drift_is_reported_once_it_adds_up() {
        // Each step is below the deadband, but the distance from the last *reported* value grows.
        let (mut core, _) = connected(
            TestSensors::scripted(
                &[0.5],
                &[
                    &[20.0],
                    &[20.2],
                    &[20.4],
                    &[20.6],
                    &[20.8],
                    &[21.0],
                    &[21.2],
                ],
            ),
            0,
        );
        let out = run_outputs(&mut core, ms(0), ms(12_000));
        assert_eq!(reports(&out), ["1: 0=20.6", "2: 0=21.2"]);
    }

    #[test]
    fn zero_deadband_reports_any_change() {
        let (mut core, _) = connected(
            TestSensors::scripted(&[0.0], &[&[1.0], &[1.0], &[1.001], &[1.001]]),
            0,
        );
        let out = run_outputs(&mut core, ms(0), ms(6_000));
        assert_eq!(reports(&out), ["1: 0=1.001"]);
    }

    #[test]
    fn nothing_to_report_sends_nothing_and_keeps_the_seq() {
        let (mut core, first) = connected(
            TestSensors::scripted(&[0.0], &[&[7.0], &[7.0], &[7.0], &[7.0], &[8.0]]),
            0,
        );
        assert_eq!(first.seq, 0);
        let out = run_outputs(&mut core, ms(0), ms(6_000));
        assert!(out.is_empty(), "{out:?}");
        let out = run_outputs(&mut core, ms(6_000), ms(8_000));
        assert_eq!(reports(&out), ["1: 0=8"], "the next message takes seq 1");
        assert_eq!(core.sensors().samples, 5);
    }

    #[test]
    fn every_nth_period_is_a_full_report() {
        // Only reading 1 changes; every 3rd period carries both readings.
        let rows: Vec<Vec<f32>> = (0..8).map(|k| vec![5.0, k as f32]).collect();
        let rows: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        let (mut core, first) = connected(TestSensors::scripted(&[0.0, 0.0], &rows), 3);
        assert_eq!(describe(&first), "0: 0=5 1=0");
        let out = run_outputs(&mut core, ms(0), ms(14_000));
        assert_eq!(
            reports(&out),
            [
                "1: 1=1",
                "2: 1=2",
                "3: 0=5 1=3", // 3rd period after the full report at connect
                "4: 1=4",
                "5: 1=5",
                "6: 0=5 1=6",
                "7: 1=7",
            ]
        );
    }

    #[test]
    fn full_reports_come_even_when_nothing_changes() {
        // So a lost partial report is repaired: skipped periods count towards the next full one.
        let (mut core, _) = connected(TestSensors::scripted(&[0.0], &[&[5.0]]), 3);
        let out = run_outputs(&mut core, ms(0), ms(12_000));
        assert_eq!(reports(&out), ["1: 0=5", "2: 0=5"], "at 6 s and 12 s");
    }

    #[test]
    fn full_report_every_one_sends_everything_every_time() {
        let (mut core, _) = connected(TestSensors::scripted(&[0.0, 0.0], &[&[1.0, 2.0]]), 1);
        let out = run_outputs(&mut core, ms(0), ms(4_000));
        assert_eq!(reports(&out), ["1: 0=1 1=2", "2: 0=1 1=2"]);
    }

    #[test]
    fn every_connection_starts_with_a_full_report() {
        let (mut core, first) = connected(TestSensors::scripted(&[0.0, 0.0], &[&[1.0, 2.0]]), 0);
        assert_eq!(describe(&first), "0: 0=1 1=2");
        assert!(run_outputs(&mut core, ms(0), ms(4_000)).is_empty());
        core.disconnected();
        core.connected(ms(5_000));
        let out = drain(&mut core, ms(5_000));
        assert_eq!(reports(&out), ["1: 0=1 1=2"]);
    }

    #[test]
    fn resend_state_makes_the_next_report_full_then_back_to_changes() {
        let (mut core, _) = connected(
            TestSensors::scripted(&[0.0, 0.0], &[&[1.0, 2.0], &[1.0, 2.0], &[1.0, 3.0]]),
            0,
        );
        core.command(ms(100), &cmd(CommandAction::ResendState))
            .unwrap();
        assert_eq!(reports(&drain(&mut core, ms(100))), ["1: 0=1 1=2"]);
        let out = run_outputs(&mut core, ms(100), ms(2_000));
        assert_eq!(reports(&out), ["2: 1=3"]);
    }

    #[test]
    fn non_finite_values_are_never_reported() {
        let (mut core, first) = connected(
            TestSensors::scripted(
                &[0.0, 0.0, 0.0],
                &[
                    &[f32::NAN, 2.0, f32::INFINITY],
                    &[f32::NAN, 3.0, f32::NEG_INFINITY],
                    &[1.0, 3.0, f32::NAN],
                    &[f32::NAN, f32::NAN, f32::NAN],
                ],
            ),
            0,
        );
        assert_eq!(describe(&first), "0: 1=2", "the full report skips them too");
        let out = run_outputs(&mut core, ms(0), ms(6_000));
        assert_eq!(reports(&out), ["1: 1=3", "2: 0=1"]);
        // A full report of nothing finite is nothing: no message, no seq.
        core.command(ms(6_100), &cmd(CommandAction::ResendState))
            .unwrap();
        assert!(drain(&mut core, ms(6_100)).is_empty());
        core.burst(1);
        assert!(drain(&mut core, ms(6_200)).is_empty());
    }

    #[test]
    fn readings_beyond_the_protocol_limit_are_ignored() {
        let mut sensors = TestSensors::changing();
        sensors.names = (0..MAX_READINGS + 3)
            .map(|i| ReadingName::new(&format!("r{i}")).unwrap())
            .collect();
        sensors.deadbands = vec![0.0; sensors.names.len()];
        let (_, first) = connected(sensors, 0);
        assert_eq!(first.len(), MAX_READINGS);
        assert_eq!(first.mask, u32::MAX);
    }

    #[test]
    fn reports_name_their_readings_with_the_sensor_names() {
        let (core, first) = connected(TestSensors::scripted(&[0.0, 0.0], &[&[21.5, 48.0]]), 0);
        let telemetry = first.to_telemetry(core.sensors().names());
        assert_eq!(telemetry.readings.get("temperature"), Some(21.5));
        assert_eq!(telemetry.readings.get("humidity"), Some(48.0));
    }

    // Command de-duplication.

    #[test]
    fn a_retransmitted_reboot_does_not_reboot_again() {
        let mut core = core_at(ms(0));
        core.connected(ms(0));
        drain(&mut core, ms(0));
        let reboot = cmd_id(7, CommandAction::Reboot);
        assert_eq!(core.command(ms(1_000), &reboot), Ok(()));
        assert_eq!(
            core.command(ms(1_000), &reboot),
            Ok(()),
            "before the reboot"
        );
        assert_eq!(labels(&drain(&mut core, ms(1_000))), ["reboot"]);
        core.disconnected();
        core.connected(ms(1_500));
        assert_eq!(
            labels(&drain(&mut core, ms(1_500))),
            ["hello 5000", "hb 0 500", "tm 0"]
        );
        // The acknowledgement was lost with the link: the hub sends it again.
        assert_eq!(core.command(ms(2_000), &reboot), Ok(()), "same answer");
        assert!(drain(&mut core, ms(2_000)).is_empty(), "no second reboot");
        assert_eq!(core.uptime(ms(2_000)), ms(1_000));
        // A new reboot (new id) does reboot.
        core.command(ms(3_000), &cmd_id(8, CommandAction::Reboot))
            .unwrap();
        assert_eq!(labels(&drain(&mut core, ms(3_000))), ["reboot"]);
    }

    #[test]
    fn a_repeated_command_returns_the_same_result_without_running() {
        let mut core = core_at(ms(0));
        core.connected(ms(0));
        drain(&mut core, ms(0));
        let set = cmd_id(3, CommandAction::SetHeartbeatInterval { ms: 1_000 });
        core.command(ms(100), &set).unwrap();
        assert_eq!(labels(&drain(&mut core, ms(100))), ["hello 1000"]);
        core.command(ms(200), &set).unwrap();
        assert!(drain(&mut core, ms(200)).is_empty(), "no second hello");

        let bad = cmd_id(4, CommandAction::SetTelemetryInterval { ms: 1 });
        let refused = Err(CommandRejected::TelemetryIntervalOutOfRange(1));
        assert_eq!(core.command(ms(300), &bad), refused);
        assert_eq!(core.command(ms(300), &bad), refused);
        assert_eq!(
            core.last_command(),
            Some(LastCommand {
                id: 4,
                result: refused
            })
        );

        // Same id as an *earlier* command but not the last: a new command.
        core.command(ms(400), &set).unwrap();
        assert_eq!(labels(&drain(&mut core, ms(400))), ["hello 1000"]);
    }

    #[test]
    fn a_restored_last_command_is_recognised_after_a_hardware_reset() {
        let mut core = core_at(ms(0));
        core.connected(ms(0));
        drain(&mut core, ms(0));
        let reboot = cmd_id(9, CommandAction::Reboot);
        core.command(ms(0), &reboot).unwrap();
        let kept = core.last_command().unwrap();
        // The board resets: a fresh core, given back what survived in retained RAM.
        let mut core = core_at(ms(5_000));
        core.restore_last_command(kept);
        core.connected(ms(5_000));
        drain(&mut core, ms(5_000));
        assert_eq!(core.command(ms(5_100), &reboot), Ok(()));
        assert!(drain(&mut core, ms(5_100)).is_empty());
    }

    #[test]
    fn command_errors_read_well() {
        assert_eq!(
            CommandRejected::HeartbeatIntervalOutOfRange(5).to_string(),
            "heartbeat interval 5 ms out of range"
        );
    }
}
