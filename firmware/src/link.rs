//! The serial link driver: [`ModuleCore`] over a byte stream, as `hardware/PROTOCOL.md`
//! specifies it. A board (or the simulator) gives it a [`Transport`] and a [`Clock`] and calls
//! [`SerialFirmware::poll`] whenever bytes arrive or the returned deadline passes:
//!
//! ```text
//! loop {
//!     let deadline = firmware.poll(&mut uart, &clock)?;
//!     sleep_until_interrupt_or(deadline); // UART RX or timer
//! }
//! ```
//!
//! What it adds to the core: COBS/CRC framing (through `mc-protocol`), the handshake (hello
//! repeated with backoff until the hub accepts, again after a refusal, a reboot or a link loss),
//! telemetry by reading index, command acknowledgements (retransmissions are answered from the
//! core's memory of the last command, never executed twice), link error reports (rate-limited),
//! and address filtering for a future multidrop bus.

use core::time::Duration;

use mc_protocol::{
    Command, CommandAction, ModuleId,
    link::{
        ADDRESS_BROADCAST, Accept, Accumulated, Ack, CommandResult, Downlink, FrameAccumulator,
        FrameError, LINK_VERSION, LinkError, LinkHello, LinkTelemetry, MAX_WIRE_LEN, RefuseReason,
        Uplink, crc::crc16, decode_downlink, encode_uplink,
    },
    message::MAX_READINGS,
};

use crate::{
    Backoff, Clock, CommandRejected, ModuleCore, Outgoing, Output, Sensors, TelemetryReport,
    Transport,
};

/// First wait for an `Accept` before the hello is sent again.
pub const HELLO_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between hellos (while the hub refuses or is absent).
pub const HELLO_RETRY_MAX: Duration = Duration::from_secs(30);
/// At most one link error report per this interval; errors within it are counted and dropped,
/// never delayed: a noisy line must not be answered with more noise.
pub const ERROR_REPORT_INTERVAL: Duration = Duration::from_millis(250);
/// How many recently sent frames are remembered to recognise their echo.
const ECHO_MEMORY: usize = 4;
/// Poll at least this often while nothing is scheduled.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Who the module is on the link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Sent in every hello; must be registered in the hub.
    pub module: ModuleId,
    /// [`mc_protocol::link::ADDRESS_POINT_TO_POINT`] (0) alone on a line; 1..=247 on a bus.
    pub address: u8,
}

/// Where the handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Saying hello until the hub accepts.
    Handshaking,
    /// Accepted: heartbeats and telemetry flow.
    Accepted,
}

/// What the link saw, for a board's diagnostics (and the simulator's statistics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// Frames written.
    pub frames_sent: u32,
    /// Frames received and decoded (for this module's address or broadcast).
    pub frames_received: u32,
    /// Frames received that could not be used (CRC, COBS, too long, malformed...).
    pub frames_rejected: u32,
    /// Hellos sent.
    pub hellos: u32,
    /// `Accept`s that started a session.
    pub accepts: u32,
    /// `Refuse`s received.
    pub refusals: u32,
    /// `Error`s the hub reported about our frames.
    pub errors_from_hub: u32,
    /// Commands executed (retransmissions not counted).
    pub commands: u32,
    /// Frames ignored as the echo of our own (half-duplex buses).
    pub echoes: u32,
    /// Link error reports not sent because of the rate limit.
    pub reports_dropped: u32,
}

/// A module on a serial link: the firmware core plus framing and handshake.
#[derive(Debug)]
pub struct SerialFirmware<S> {
    config: LinkConfig,
    core: ModuleCore<S>,
    state: LinkState,
    /// Cuts the incoming bytes into frames.
    rx: FrameAccumulator,
    /// When the next hello goes out while handshaking.
    next_hello: Option<Duration>,
    /// Hello retry delays.
    backoff: Backoff,
    /// Jitter for the backoff (xorshift32; seeded from the module id so that modules on one
    /// hub do not retry in lockstep).
    rng: u32,
    /// The heartbeat interval the hub last heard in a hello of ours. The core announces a
    /// hello on every `connected` and after an interval change; a hello repeating what the
    /// hub already knows (the handshake's) is not sent again, any other is.
    announced_heartbeat_ms: Option<u32>,
    /// CRC and length of the last few frames sent: on a half-duplex bus that echoes, a frame
    /// identical to one of ours is our own echo, never the hub's (an echoed uplink could even
    /// decode as a downlink command).
    sent: [(u16, u16); ECHO_MEMORY],
    /// Where the next entry of `sent` goes.
    sent_next: usize,
    /// A link error to report, and when the last report went out.
    error_to_report: Option<LinkError>,
    last_error_report: Option<Duration>,
    /// What the link saw.
    counters: LinkCounters,
}

impl<S: Sensors> SerialFirmware<S> {
    /// A module that will say hello on its first [`Self::poll`].
    pub fn new(config: LinkConfig, core: ModuleCore<S>) -> Self {
        let seed = config
            .module
            .as_bytes()
            .iter()
            .fold(0x811C_9DC5u32, |h, &b| {
                (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
            });
        Self {
            config,
            core,
            state: LinkState::Handshaking,
            rx: FrameAccumulator::new(),
            next_hello: Some(Duration::ZERO),
            backoff: Backoff::new(HELLO_RETRY, HELLO_RETRY_MAX),
            rng: seed | 1,
            announced_heartbeat_ms: None,
            sent: [(0, 0); ECHO_MEMORY],
            sent_next: 0,
            error_to_report: None,
            last_error_report: None,
            counters: LinkCounters::default(),
        }
    }

    /// Reads what arrived, runs the core's timers, writes what is due; returns the time by
    /// which `poll` must run again (earlier if bytes arrive). A transport error is returned as
    /// is: the caller decides (a closed port: [`Self::link_lost`], then reopen).
    pub fn poll<T: Transport, C: Clock>(
        &mut self,
        transport: &mut T,
        clock: &C,
    ) -> Result<Duration, T::Error> {
        let now = clock.now();
        let mut buf = [0u8; 64];
        loop {
            let n = transport.read(&mut buf)?;
            if n == 0 {
                break;
            }
            for &byte in &buf[..n.min(buf.len())] {
                let frame = match self.rx.push(byte) {
                    None => continue,
                    Some(Accumulated::Frame(frame)) => {
                        if is_echo(&self.sent, frame) {
                            self.counters.echoes = self.counters.echoes.wrapping_add(1);
                            continue;
                        }
                        decode_downlink(frame)
                    }
                    Some(Accumulated::Overflow { discarded }) => {
                        Err(FrameError::TooLong { len: discarded })
                    }
                };
                self.receive(frame, now, transport)?;
            }
        }
        if self.core.poll_timeout().is_some_and(|due| due <= now) {
            self.core.tick(now);
        }
        self.drain_core(now, transport)?;
        // After the core: a reboot it just performed says hello at once.
        if self.state == LinkState::Handshaking && self.next_hello.is_some_and(|due| due <= now) {
            self.send_hello(transport)?;
            let jitter = self.jitter();
            let delay = self.backoff.next_delay(jitter);
            self.next_hello = Some(now + delay);
        }
        if let Some(error) = self.error_to_report.take() {
            if self
                .last_error_report
                .is_none_or(|at| now >= at + ERROR_REPORT_INTERVAL)
            {
                self.last_error_report = Some(now);
                self.send(transport, &Uplink::Error(error))?;
            } else {
                self.counters.reports_dropped = self.counters.reports_dropped.wrapping_add(1);
            }
        }
        let deadline = [self.core.poll_timeout(), self.next_hello_if_handshaking()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + IDLE_POLL);
        Ok(deadline.max(now))
    }

    /// The line is gone (port closed, cable unplugged): drop the partial frame and start over
    /// with a hello as soon as [`Self::poll`] runs on a working transport again.
    pub fn link_lost(&mut self) {
        self.rx.reset();
        self.core.disconnected();
        self.state = LinkState::Handshaking;
        self.next_hello = Some(Duration::ZERO);
        self.backoff.reset();
    }

    /// Where the handshake stands.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// What the link saw so far.
    pub fn counters(&self) -> LinkCounters {
        self.counters
    }

    /// The firmware core (intervals, uptime, sensors).
    pub fn core(&self) -> &ModuleCore<S> {
        &self.core
    }

    /// The firmware core, for fault injection in the simulator.
    pub fn core_mut(&mut self) -> &mut ModuleCore<S> {
        &mut self.core
    }

    /// This module's link settings.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    fn next_hello_if_handshaking(&self) -> Option<Duration> {
        match self.state {
            LinkState::Handshaking => self.next_hello,
            LinkState::Accepted => None,
        }
    }

    fn receive<T: Transport>(
        &mut self,
        frame: Result<(u8, Downlink), FrameError>,
        now: Duration,
        transport: &mut T,
    ) -> Result<(), T::Error> {
        let (address, msg) = match frame {
            Ok(frame) => frame,
            Err(e) => {
                self.counters.frames_rejected = self.counters.frames_rejected.wrapping_add(1);
                self.error_to_report = Some(e.link_error());
                return Ok(());
            }
        };
        if address != self.config.address && address != ADDRESS_BROADCAST {
            return Ok(()); // another module's frame on a shared bus
        }
        self.counters.frames_received = self.counters.frames_received.wrapping_add(1);
        match msg {
            Downlink::Accept(accept) => self.accepted(&accept, now),
            Downlink::Command(command) if address != ADDRESS_BROADCAST => {
                self.command(&command, now, transport)?;
            }
            Downlink::Command(_) => {} // commands are never broadcast in version 1
            Downlink::Refuse(reason) => self.refused(reason, now),
            Downlink::Error(_) => {
                self.counters.errors_from_hub = self.counters.errors_from_hub.wrapping_add(1);
            }
        }
        Ok(())
    }

    fn accepted(&mut self, accept: &Accept, now: Duration) {
        if accept.protocol != LINK_VERSION {
            self.error_to_report = Some(LinkError::VersionMismatch {
                supported: LINK_VERSION,
            });
            return;
        }
        if self.state == LinkState::Accepted {
            return; // the answer to a hello announcing new intervals
        }
        self.counters.accepts = self.counters.accepts.wrapping_add(1);
        self.state = LinkState::Accepted;
        self.next_hello = None;
        self.backoff.reset();
        self.core.connected(now);
        // Version 1 hubs echo the module's own intervals. Should a hub want others, the core
        // applies them (and a changed heartbeat interval is announced by a new hello, which
        // the hub then accepts as is); out-of-range wishes are reported as malformed.
        if self
            .core
            .apply_settings(now, accept.heartbeat_ms, accept.telemetry_ms)
            .is_err()
        {
            self.error_to_report = Some(LinkError::Malformed);
        }
    }

    fn refused(&mut self, reason: RefuseReason, now: Duration) {
        self.counters.refusals = self.counters.refusals.wrapping_add(1);
        self.core.disconnected();
        self.state = LinkState::Handshaking;
        let jitter = self.jitter();
        self.next_hello = Some(match reason {
            // The hub lost our session (restart, port reopened): say hello right away.
            RefuseReason::HandshakeRequired => {
                self.backoff.reset();
                now
            }
            // Waiting for an admin: retry, ever more slowly.
            _ => now + self.backoff.next_delay(jitter),
        });
    }

    fn command<T: Transport>(
        &mut self,
        command: &Command,
        now: Duration,
        transport: &mut T,
    ) -> Result<(), T::Error> {
        if self.state != LinkState::Accepted {
            return Ok(()); // the hub only commands accepted modules; a stale frame
        }
        let retransmission = self.core.last_command().is_some_and(|l| l.id == command.id);
        let result = match self.core.command(now, command) {
            Ok(()) => CommandResult::Done,
            Err(
                CommandRejected::HeartbeatIntervalOutOfRange(_)
                | CommandRejected::TelemetryIntervalOutOfRange(_),
            ) => CommandResult::InvalidArgument,
        };
        if !retransmission {
            self.counters.commands = self.counters.commands.wrapping_add(1);
        }
        // Acknowledge before acting on it: a reboot would otherwise swallow its own ack.
        self.send(
            transport,
            &Uplink::Ack(Ack {
                command: command.id,
                result,
            }),
        )?;
        // A retransmitted interval change means the hub missed our answer, and perhaps the
        // hello that announced the new interval with it: announce it again.
        if retransmission
            && result == CommandResult::Done
            && matches!(command.action, CommandAction::SetHeartbeatInterval { .. })
        {
            self.send_hello(transport)?;
        }
        Ok(())
    }

    fn drain_core<T: Transport>(
        &mut self,
        now: Duration,
        transport: &mut T,
    ) -> Result<(), T::Error> {
        while let Some(output) = self.core.poll_output(now) {
            match output {
                Output::Publish(Outgoing::Hello(hello)) => {
                    // A heartbeat interval the hub has not heard yet: announce it with a new
                    // hello (the hub accepts it without an offline flap). The connect hello
                    // repeating the handshake is not sent again.
                    if self.announced_heartbeat_ms != Some(hello.heartbeat_ms) {
                        self.send_hello(transport)?;
                    }
                }
                Output::Publish(Outgoing::Heartbeat(heartbeat)) => {
                    self.send(transport, &Uplink::Heartbeat(heartbeat))?;
                }
                Output::Publish(Outgoing::Telemetry(report)) => {
                    self.send(transport, &Uplink::Telemetry(link_telemetry(report)))?;
                }
                Output::Reboot => {
                    // The core is back to factory state and offline: start over.
                    self.rx.reset();
                    self.state = LinkState::Handshaking;
                    self.next_hello = Some(now);
                    self.backoff.reset();
                }
            }
        }
        Ok(())
    }

    fn send_hello<T: Transport>(&mut self, transport: &mut T) -> Result<(), T::Error> {
        let names = self.core.sensors().names();
        let hello = LinkHello {
            protocol: LINK_VERSION,
            module: self.config.module.clone(),
            fw: self.core.firmware_version().clone(),
            heartbeat_ms: millis_u32(self.core.heartbeat_interval()),
            telemetry_ms: millis_u32(self.core.telemetry_interval()),
            readings: names.iter().take(MAX_READINGS).cloned().collect(),
        };
        self.counters.hellos = self.counters.hellos.wrapping_add(1);
        self.announced_heartbeat_ms = Some(hello.heartbeat_ms);
        self.send(transport, &Uplink::Hello(hello))
    }

    fn send<T: Transport>(&mut self, transport: &mut T, msg: &Uplink) -> Result<(), T::Error> {
        let mut out = [0u8; MAX_WIRE_LEN];
        // Every uplink the core builds fits a frame (at most 32 names of 24 bytes); should
        // one not, dropping it is the only safe thing a firmware can do.
        let Ok(bytes) = encode_uplink(self.config.address, msg, &mut out) else {
            return Ok(());
        };
        // Remember it (without its delimiter, as the accumulator will cut an echo).
        let encoded = &bytes[..bytes.len().saturating_sub(1)];
        self.sent[self.sent_next] = (crc16(encoded), encoded.len() as u16);
        self.sent_next = (self.sent_next + 1) % ECHO_MEMORY;
        transport.write(bytes)?;
        self.counters.frames_sent = self.counters.frames_sent.wrapping_add(1);
        Ok(())
    }

    /// Uniform in `[0, 1)`.
    fn jitter(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        f64::from(x) / (f64::from(u32::MAX) + 1.0)
    }
}

/// True when `frame` (still encoded) is one of the frames in `sent` (CRC and length). The CRC
/// is computed only when a length matches, and once: this runs on every received frame.
fn is_echo(sent: &[(u16, u16)], frame: &[u8]) -> bool {
    let Ok(len) = u16::try_from(frame.len()) else {
        return false;
    };
    if len == 0 || !sent.iter().any(|&(_, l)| l == len) {
        return false;
    }
    let crc = crc16(frame);
    sent.contains(&(crc, len))
}

/// The core's report as it travels on the link (by index, which the hello named).
fn link_telemetry(report: TelemetryReport) -> LinkTelemetry {
    LinkTelemetry {
        seq: report.seq,
        mask: report.mask,
        values: report.values,
    }
}

fn millis_u32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use core::cell::Cell;
    use std::{collections::VecDeque, vec::Vec};

    use mc_protocol::{
        CommandAction, FirmwareVersion, ReadingName,
        link::{ADDRESS_POINT_TO_POINT, decode_uplink, downlink_to_vec},
    };

    use super::*;
    use crate::CoreConfig;

    struct TestClock(Cell<Duration>);

    impl Clock for TestClock {
        fn now(&self) -> Duration {
            self.0.get()
        }
    }

    /// The hub's end of the line, in memory.
    #[derive(Default)]
    struct Line {
        to_module: VecDeque<u8>,
        from_module: Vec<u8>,
    }

    impl Transport for Line {
        type Error = ();
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, ()> {
            let n = buf.len().min(self.to_module.len());
            for b in buf.iter_mut().take(n) {
                *b = self.to_module.pop_front().unwrap_or(0);
            }
            Ok(n)
        }
        fn write(&mut self, bytes: &[u8]) -> Result<(), ()> {
            self.from_module.extend_from_slice(bytes);
            Ok(())
        }
    }

    impl Line {
        fn send(&mut self, msg: &Downlink) {
            self.to_module
                .extend(downlink_to_vec(ADDRESS_POINT_TO_POINT, msg).unwrap());
        }
        /// Everything the module sent since the last call, decoded.
        fn received(&mut self) -> Vec<Uplink> {
            let bytes = core::mem::take(&mut self.from_module);
            bytes
                .split(|b| *b == 0)
                .filter(|f| !f.is_empty())
                .map(|f| decode_uplink(&mut f.to_vec()).unwrap().1)
                .collect()
        }
    }

    struct Fixed {
        names: [ReadingName; 2],
        values: [f32; 2],
    }

    impl Sensors for Fixed {
        fn names(&self) -> &[ReadingName] {
            &self.names
        }
        fn sample(&mut self, values: &mut [f32]) {
            values.copy_from_slice(&self.values);
        }
    }

    fn module() -> (SerialFirmware<Fixed>, Line, TestClock) {
        let config = CoreConfig {
            fw: FirmwareVersion::new("1.0.0").unwrap(),
            heartbeat: Duration::from_secs(5),
            telemetry: Duration::from_secs(2),
            full_report_every: 10,
        };
        let sensors = Fixed {
            names: [
                ReadingName::new("temperature").unwrap(),
                ReadingName::new("battery").unwrap(),
            ],
            values: [21.5, 3.7],
        };
        let core = ModuleCore::new(config, sensors, Duration::ZERO);
        let link = LinkConfig {
            module: ModuleId::new("MC-1001-STN").unwrap(),
            address: ADDRESS_POINT_TO_POINT,
        };
        (
            SerialFirmware::new(link, core),
            Line::default(),
            TestClock(Cell::new(Duration::ZERO)),
        )
    }

    fn kinds(msgs: &[Uplink]) -> Vec<&'static str> {
        msgs.iter()
            .map(|m| match m {
                Uplink::Hello(_) => "hello",
                Uplink::Heartbeat(_) => "heartbeat",
                Uplink::Telemetry(_) => "telemetry",
                Uplink::Ack(_) => "ack",
                Uplink::Error(_) => "error",
            })
            .collect()
    }

    fn accept() -> Downlink {
        Downlink::Accept(Accept {
            protocol: LINK_VERSION,
            heartbeat_ms: 5000,
            telemetry_ms: 2000,
        })
    }

    fn accepted() -> (SerialFirmware<Fixed>, Line, TestClock) {
        let (mut fw, mut line, clock) = module();
        fw.poll(&mut line, &clock).unwrap();
        line.received();
        line.send(&accept());
        fw.poll(&mut line, &clock).unwrap();
        line.received();
        (fw, line, clock)
    }

    #[test]
    fn says_hello_with_its_schema_until_accepted() {
        let (mut fw, mut line, clock) = module();
        fw.poll(&mut line, &clock).unwrap();
        let sent = line.received();
        let Uplink::Hello(hello) = &sent[0] else {
            panic!("{sent:?}")
        };
        assert_eq!(hello.module.as_str(), "MC-1001-STN");
        assert_eq!(hello.protocol, LINK_VERSION);
        assert_eq!((hello.heartbeat_ms, hello.telemetry_ms), (5000, 2000));
        assert_eq!(hello.readings[1].as_str(), "battery");
        // No answer: the hello is repeated, ever more slowly, and nothing else is sent.
        let mut hellos = Vec::new();
        for s in 1..=60 {
            clock.0.set(Duration::from_secs(s));
            fw.poll(&mut line, &clock).unwrap();
            let sent = line.received();
            assert!(kinds(&sent).iter().all(|k| *k == "hello"));
            if !sent.is_empty() {
                hellos.push(s);
            }
        }
        assert!(hellos.len() >= 4 && hellos.len() <= 12, "{hellos:?}");
        assert_eq!(fw.state(), LinkState::Handshaking);
    }

    #[test]
    fn accept_starts_heartbeats_and_full_telemetry_without_a_second_hello() {
        let (mut fw, mut line, clock) = module();
        fw.poll(&mut line, &clock).unwrap();
        line.received();
        line.send(&accept());
        fw.poll(&mut line, &clock).unwrap();
        let sent = line.received();
        assert_eq!(kinds(&sent), ["heartbeat", "telemetry"]);
        let Uplink::Telemetry(t) = &sent[1] else {
            unreachable!()
        };
        assert_eq!((t.mask, t.values.as_slice()), (0b11, &[21.5, 3.7][..]));
        assert_eq!(fw.state(), LinkState::Accepted);
        // The deadline returned is the next heartbeat/telemetry.
        let next = fw.poll(&mut line, &clock).unwrap();
        assert_eq!(next, Duration::from_secs(2));
    }

    #[test]
    fn commands_are_acknowledged_once_and_retransmissions_not_executed() {
        let (mut fw, mut line, clock) = accepted();
        let reboot = Downlink::Command(Command {
            id: 9,
            action: CommandAction::Reboot,
        });
        line.send(&reboot);
        fw.poll(&mut line, &clock).unwrap();
        let sent = line.received();
        assert_eq!(
            sent[0],
            Uplink::Ack(Ack {
                command: 9,
                result: CommandResult::Done
            })
        );
        // Rebooted: hello again.
        assert_eq!(kinds(&sent[1..]), ["hello"]);
        assert_eq!(fw.state(), LinkState::Handshaking);
        line.send(&accept());
        fw.poll(&mut line, &clock).unwrap();
        line.received();
        // The hub did not get the ack and sends the same command again: ack, no reboot.
        line.send(&reboot);
        fw.poll(&mut line, &clock).unwrap();
        assert_eq!(kinds(&line.received()), ["ack"]);
        assert_eq!(fw.state(), LinkState::Accepted);
        assert_eq!(fw.counters().commands, 1);
        // Out of range: refused with InvalidArgument.
        line.send(&Downlink::Command(Command {
            id: 10,
            action: CommandAction::SetTelemetryInterval { ms: 1 },
        }));
        // (decoding on the module refuses it first: the protocol validates commands)
        fw.poll(&mut line, &clock).unwrap();
        assert_eq!(kinds(&line.received()), ["error"]);
    }

    #[test]
    fn intervals_the_hub_asks_for_are_applied_and_announced() {
        let (mut fw, mut line, clock) = module();
        fw.poll(&mut line, &clock).unwrap();
        line.received();
        line.send(&Downlink::Accept(Accept {
            protocol: LINK_VERSION,
            heartbeat_ms: 1000,
            telemetry_ms: 500,
        }));
        fw.poll(&mut line, &clock).unwrap();
        let sent = line.received();
        assert_eq!(kinds(&sent), ["hello", "heartbeat", "telemetry"]);
        let Uplink::Hello(hello) = &sent[0] else {
            unreachable!()
        };
        assert_eq!((hello.heartbeat_ms, hello.telemetry_ms), (1000, 500));
        assert_eq!(fw.core().telemetry_interval(), Duration::from_millis(500));
    }

    #[test]
    fn an_interval_change_is_announced_even_when_it_arrives_with_the_accept() {
        let (mut fw, mut line, clock) = module();
        fw.poll(&mut line, &clock).unwrap();
        line.received();
        line.send(&accept());
        line.send(&Downlink::Command(Command {
            id: 5,
            action: CommandAction::SetHeartbeatInterval { ms: 60_000 },
        }));
        fw.poll(&mut line, &clock).unwrap();
        let sent = line.received();
        assert_eq!(kinds(&sent), ["ack", "hello", "heartbeat", "telemetry"]);
        let Uplink::Hello(hello) = &sent[1] else {
            unreachable!()
        };
        assert_eq!(hello.heartbeat_ms, 60_000);
        // The hub missed the ack (and maybe the hello): the retransmission is acknowledged
        // again, not executed again, and the interval announced again.
        line.send(&Downlink::Command(Command {
            id: 5,
            action: CommandAction::SetHeartbeatInterval { ms: 60_000 },
        }));
        fw.poll(&mut line, &clock).unwrap();
        assert_eq!(kinds(&line.received()), ["ack", "hello"]);
        assert_eq!(fw.counters().commands, 1);
    }

    #[test]
    fn a_module_hearing_its_own_echo_stays_quiet() {
        let (mut fw, mut line, clock) = accepted();
        let mut sent_bytes = Vec::new();
        for ms in (0..60_000).step_by(100) {
            clock.0.set(Duration::from_millis(ms));
            // Half-duplex bus: everything the module sends comes back to it, once.
            let echo = core::mem::take(&mut line.from_module);
            line.to_module.extend(echo.iter().copied());
            sent_bytes.extend(echo);
            fw.poll(&mut line, &clock).unwrap();
        }
        sent_bytes.append(&mut line.from_module);
        line.from_module = sent_bytes;
        let sent = line.received();
        assert!(!kinds(&sent).contains(&"error"), "{:?}", kinds(&sent));
        assert!(fw.counters().echoes >= 10, "{:?}", fw.counters());
        assert_eq!(fw.state(), LinkState::Accepted);
    }

    #[test]
    fn rate_limited_error_reports_are_dropped_not_delayed() {
        let (mut fw, mut line, clock) = accepted();
        line.to_module.extend([0x13, 0x37, 0x00]);
        fw.poll(&mut line, &clock).unwrap();
        assert_eq!(kinds(&line.received()), ["error"]);
        clock.0.set(Duration::from_millis(100));
        line.to_module.extend([0x13, 0x37, 0x00]);
        fw.poll(&mut line, &clock).unwrap();
        assert!(line.received().is_empty());
        clock.0.set(Duration::from_millis(1_000));
        fw.poll(&mut line, &clock).unwrap();
        assert!(
            !kinds(&line.received()).contains(&"error"),
            "a dropped report never comes later"
        );
        assert_eq!(fw.counters().reports_dropped, 1);
    }

    #[test]
    fn refusals_restart_the_handshake() {
        let (mut fw, mut line, clock) = accepted();
        line.send(&Downlink::Refuse(RefuseReason::HandshakeRequired));
        fw.poll(&mut line, &clock).unwrap();
        assert_eq!(kinds(&line.received()), ["hello"]);
        assert_eq!(fw.state(), LinkState::Handshaking);
        line.send(&Downlink::Refuse(RefuseReason::UnknownModule));
        fw.poll(&mut line, &clock).unwrap();
        assert!(line.received().is_empty(), "backs off after a real refusal");
    }

    #[test]
    fn garbage_is_reported_rate_limited_and_the_next_frame_works() {
        let (mut fw, mut line, clock) = accepted();
        for _ in 0..5 {
            line.to_module.extend([0x13, 0x37, 0x42, 0x00]);
        }
        line.send(&Downlink::Command(Command {
            id: 1,
            action: CommandAction::ResendState,
        }));
        fw.poll(&mut line, &clock).unwrap();
        let sent = line.received();
        assert_eq!(kinds(&sent), ["ack", "telemetry", "error"]);
        assert_eq!(sent[2], Uplink::Error(LinkError::CrcMismatch));
        assert_eq!(fw.counters().frames_rejected, 5);
        // Garbage too long for a frame is reported as such.
        clock.0.set(Duration::from_millis(500));
        line.to_module.extend(core::iter::repeat_n(0x55, 2000));
        line.to_module.push_back(0);
        fw.poll(&mut line, &clock).unwrap();
        assert!(
            line.received()
                .contains(&Uplink::Error(LinkError::FrameTooLong))
        );
    }

    #[test]
    fn frames_for_other_addresses_are_ignored() {
        let (mut fw, mut line, clock) = accepted();
        line.to_module.extend(
            downlink_to_vec(
                7,
                &Downlink::Command(Command {
                    id: 1,
                    action: CommandAction::Reboot,
                }),
            )
            .unwrap(),
        );
        fw.poll(&mut line, &clock).unwrap();
        assert!(line.received().is_empty());
        assert_eq!(fw.state(), LinkState::Accepted);
    }

    #[test]
    fn a_lost_link_starts_over_with_a_hello() {
        let (mut fw, mut line, clock) = accepted();
        line.to_module.extend([0x05, 0x01]); // half a frame, then the cable is pulled
        fw.poll(&mut line, &clock).unwrap();
        fw.link_lost();
        clock.0.set(Duration::from_secs(10));
        fw.poll(&mut line, &clock).unwrap();
        assert_eq!(kinds(&line.received()), ["hello"]);
    }
}
