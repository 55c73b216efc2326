//! The module state machine, sans I/O: what a station module does, without knowing how bytes
//! travel or what time it is.
//!
//! This is the part that later moves into the `no_std` firmware core shared with real boards, so
//! it uses no tokio, no MQTT, no allocation and no clock. The driver (the simulator's MQTT
//! transport, or a board's main loop) feeds it inputs and drains its outputs:
//!
//! - inputs: [`ModuleCore::connected`], [`ModuleCore::disconnected`], [`ModuleCore::tick`],
//!   [`ModuleCore::command`], plus the fault hooks ([`ModuleCore::stop_heartbeats`],
//!   [`ModuleCore::burst`], ...);
//! - outputs: call [`ModuleCore::poll_output`] until it returns `None` after every input;
//! - timers: [`ModuleCore::poll_timeout`] says when the next [`ModuleCore::tick`] is needed.
//!
//! Every input takes `now`, the time since the *process* (or board) started. The core keeps its
//! own boot instant, so a `Reboot` command resets the uptime without the driver's clock moving.
//!
//! On each connection the module sends, in this order: a [`Hello`], a first [`Heartbeat`] and a
//! first [`Telemetry`] (so the hub has liveness and full state right away), then heartbeats and
//! telemetry on their own intervals. Sequence numbers start at 0 at boot, increment per message
//! of their kind, and survive reconnections (only a reboot resets them).

use core::time::Duration;

use mc_protocol::{
    Command, CommandAction, FirmwareVersion, Heartbeat, Hello, Telemetry,
    message::HEARTBEAT_MS_RANGE,
};

use crate::sensors::Sensors;

/// Telemetry intervals a module accepts: 100 ms to 24 h (the same bounds as heartbeats).
pub const TELEMETRY_MS_RANGE: core::ops::RangeInclusive<u32> = 100..=86_400_000;

/// The firmware's factory settings, restored by a reboot.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Announced in every hello.
    pub fw: FirmwareVersion,
    /// Heartbeat interval at boot; must be within [`HEARTBEAT_MS_RANGE`].
    pub heartbeat: Duration,
    /// Telemetry interval at boot; must be within [`TELEMETRY_MS_RANGE`].
    pub telemetry: Duration,
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
    /// On `mc/<id>/telemetry`.
    Telemetry(Telemetry),
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

/// The state of one module.
#[derive(Debug, Clone)]
pub struct ModuleCore {
    /// Factory settings, restored on reboot.
    config: CoreConfig,
    /// Produces the readings of each telemetry message; keeps running across reboots (the
    /// weather does not reboot).
    sensors: Sensors,
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
    /// Seq of the next telemetry message.
    telemetry_seq: u32,
    /// When the next heartbeat is due (while online).
    next_heartbeat: Option<Duration>,
    /// When the next telemetry message is due (while online).
    next_telemetry: Option<Duration>,
    /// Fault: the heartbeat task "hangs"; telemetry continues.
    heartbeats_stopped: bool,
    /// Pending outputs, drained by `poll_output` in this order.
    reboot_due: bool,
    hello_due: bool,
    heartbeat_due: bool,
    /// Number of telemetry messages still to send (more than one after a burst).
    telemetry_due: u32,
}

impl ModuleCore {
    /// A module that booted at `now`, not yet connected.
    pub fn new(config: CoreConfig, sensors: Sensors, now: Duration) -> Self {
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
        }
    }

    /// The link is up (MQTT: ConnAck received and the command topic subscribed).
    pub fn connected(&mut self, now: Duration) {
        self.online = true;
        self.hello_due = true;
        self.heartbeat_due = !self.heartbeats_stopped;
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
    pub fn command(&mut self, now: Duration, command: &Command) -> Result<(), CommandRejected> {
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
            // Every telemetry message carries all readings, so "resend state" means "send a
            // telemetry message now".
            CommandAction::ResendState => {
                if self.online {
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

    /// Fault: `n` telemetry messages back to back (ignored while offline).
    pub fn burst(&mut self, n: u32) {
        if self.online {
            self.telemetry_due = self.telemetry_due.saturating_add(n);
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
        if self.telemetry_due > 0 {
            self.telemetry_due -= 1;
            let seq = self.telemetry_seq;
            self.telemetry_seq = seq.wrapping_add(1);
            return Some(Output::Publish(Outgoing::Telemetry(Telemetry {
                seq,
                readings: self.sensors.sample().readings(),
            })));
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

    /// Current heartbeat interval.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// Current telemetry interval.
    pub fn telemetry_interval(&self) -> Duration {
        self.telemetry_interval
    }

    /// Back to factory state: new boot instant, sequence numbers from 0, factory intervals,
    /// offline, nothing pending. Fault flags are the simulator's, not the firmware's: kept.
    fn reboot(&mut self, now: Duration) {
        self.disconnected();
        self.reboot_due = false;
        self.booted_at = now;
        self.heartbeat_seq = 0;
        self.telemetry_seq = 0;
        self.heartbeat_interval = self.config.heartbeat;
        self.telemetry_interval = self.config.telemetry;
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
    use super::*;

    const HB: Duration = Duration::from_secs(5);
    const TM: Duration = Duration::from_secs(2);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn core_at(now: Duration) -> ModuleCore {
        let config = CoreConfig {
            fw: FirmwareVersion::new("1.2.3").unwrap(),
            heartbeat: HB,
            telemetry: TM,
        };
        ModuleCore::new(config, Sensors::new(1, 0), now)
    }

    fn drain(core: &mut ModuleCore, now: Duration) -> Vec<Output> {
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

    /// Runs the core from `from` to `to`, ticking whenever it asks, and collects labels.
    fn run(core: &mut ModuleCore, from: Duration, to: Duration) -> Vec<String> {
        let mut out = labels(&drain(core, from));
        while let Some(t) = core.poll_timeout() {
            if t > to {
                break;
            }
            core.tick(t);
            out.extend(labels(&drain(core, t)));
        }
        out
    }

    fn cmd(action: CommandAction) -> Command {
        Command { id: 1, action }
    }

    #[test]
    fn silent_until_connected() {
        let mut core = core_at(ms(0));
        assert!(drain(&mut core, ms(10_000)).is_empty());
        assert_eq!(core.poll_timeout(), None);
        core.tick(ms(20_000));
        assert!(drain(&mut core, ms(20_000)).is_empty());
    }

    #[test]
    fn handshake_is_hello_then_heartbeat_then_telemetry() {
        let mut core = core_at(ms(0));
        core.connected(ms(1_000));
        let out = drain(&mut core, ms(1_000));
        assert_eq!(labels(&out), ["hello 5000", "hb 0 1000", "tm 0"]);
        match &out[0] {
            Output::Publish(Outgoing::Hello(h)) => assert_eq!(h.fw.as_str(), "1.2.3"),
            other => panic!("{other:?}"),
        }
        match &out[2] {
            Output::Publish(Outgoing::Telemetry(t)) => assert_eq!(t.readings.len(), 5),
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
            core.command(ms(0), &cmd(CommandAction::SetHeartbeatInterval { ms: 5 })),
            Err(CommandRejected::HeartbeatIntervalOutOfRange(5))
        );
        assert_eq!(
            core.command(ms(0), &cmd(CommandAction::SetTelemetryInterval { ms: 0 })),
            Err(CommandRejected::TelemetryIntervalOutOfRange(0))
        );
        assert_eq!(core.heartbeat_interval(), HB);
        assert_eq!(core.telemetry_interval(), TM);
        assert!(drain(&mut core, ms(0)).is_empty());
    }

    #[test]
    fn resend_state_sends_telemetry_now() {
        let mut core = core_at(ms(0));
        core.connected(ms(0));
        drain(&mut core, ms(0));
        core.command(ms(300), &cmd(CommandAction::ResendState))
            .unwrap();
        assert_eq!(labels(&drain(&mut core, ms(300))), ["tm 1"]);
    }

    #[test]
    fn reboot_resets_uptime_sequences_and_intervals() {
        let mut core = core_at(ms(0));
        core.connected(ms(0));
        run(&mut core, ms(0), ms(10_000));
        core.command(
            ms(10_000),
            &cmd(CommandAction::SetHeartbeatInterval { ms: 1_000 }),
        )
        .unwrap();
        drain(&mut core, ms(10_000));
        core.command(ms(10_500), &cmd(CommandAction::Reboot))
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
    fn burst_sends_n_telemetry_messages_with_increasing_seq() {
        let mut core = core_at(ms(0));
        core.connected(ms(0));
        drain(&mut core, ms(0));
        core.burst(3);
        assert_eq!(labels(&drain(&mut core, ms(100))), ["tm 1", "tm 2", "tm 3"]);
        core.disconnected();
        core.burst(3);
        assert!(
            drain(&mut core, ms(200)).is_empty(),
            "no burst while offline"
        );
    }
}
