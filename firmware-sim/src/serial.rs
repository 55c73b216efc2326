//! A simulated module on a serial line, running the real firmware link driver.
//!
//! One Tokio task per module drives [`mc_firmware::SerialFirmware`] — the driver a board runs
//! in its main loop — through std implementations of the driver's two traits:
//! - a [`Clock`] over [`tokio::time::Instant`], counted from the task's start (so tests may
//!   pause time);
//! - a [`Transport`] made of two in-memory buffers, which the task fills from and flushes to
//!   the line, so that [`SerialFirmware::poll`] never blocks (as a UART's ring buffers do
//!   for a board).
//!
//! The task waits for bytes from the hub, for room on the line, for the deadline the driver
//! returned, for a fault or for shutdown; feeds the bytes, polls the driver, and queues what
//! it wrote for the line — damaged first if a fault says so, frame by frame ([`Fault`]).
//!
//! The line is a device node ([`SerialLink::Device`], through tokio-serial) or a pty the task
//! makes itself ([`SerialLink::Pty`], see `pty`). When it fails (end of file, `EIO`: a USB
//! adapter pulled out) the driver is told ([`SerialFirmware::link_lost`]) and the line is
//! opened again with backoff. A pty's master reading `EIO` is different: nobody has the slave
//! open (the hub has not opened the port yet, or closed it to reopen it); the module then
//! waits, probing every 100 ms, and says hello as soon as the hub is there.

use std::{
    collections::VecDeque,
    convert::Infallible,
    io,
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use mc_firmware::{
    Backoff, Clock, LinkConfig, LinkState, ModuleCore, SerialFirmware, Transport,
    link::LinkCounters,
};
use mc_protocol::{
    ModuleId,
    link::{ADDRESS_POINT_TO_POINT, CommandResult, DELIMITER, Uplink, decode_uplink},
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::{
    sync::{mpsc, watch},
    time::{Instant, sleep_until},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, info, warn};

use crate::{
    SimConfig, SimError, SimStats,
    faults::{self, Fault, WRONG_BAUD_SPEED},
    line::{Line, Transfer},
    pty::{self, is_hangup},
    sensors::SimSensors,
    stats::Counters,
};

/// Baud rate of `--serial PATH` without `@BAUD` (the protocol's default line settings).
pub const DEFAULT_BAUD: u32 = 115_200;
/// Bytes the module may have waiting for the line; frames beyond are dropped, as a UART's
/// transmit buffer overflows while the line is stalled.
pub const TX_QUEUE_MAX: usize = 64 * 1024;
/// How often a pty is checked for the hub opening (again) its slave.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// First delay before a failed line is opened again; doubles up to [`REOPEN_MAX`].
const REOPEN_INITIAL: Duration = Duration::from_millis(250);
/// Longest delay between attempts to open a failed line.
const REOPEN_MAX: Duration = Duration::from_secs(5);

/// Where a serial module's line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialLink {
    /// A serial device node — a USB-serial adapter, a UART, any tty — opened at `baud`, 8N1,
    /// no flow control, exclusively. It must open at start; later failures (the adapter
    /// pulled out) are retried with backoff.
    Device {
        /// E.g. `/dev/ttyUSB0` or a `/dev/serial/by-id/...` symlink (followed at each open).
        path: PathBuf,
        /// Line speed; both ends must agree.
        baud: u32,
    },
    /// A pseudo-terminal the simulator creates: `link_path` becomes a symlink to its slave
    /// `/dev/pts/N`, which the hub opens; the symlink is removed when the simulation stops.
    Pty {
        /// Where the symlink goes; an existing symlink there is replaced, anything else is
        /// refused.
        link_path: PathBuf,
    },
}

impl SerialLink {
    /// A device from `PATH[@BAUD]`, as `--serial` (and the hub's `--serial`) take it; the baud
    /// rate defaults to [`DEFAULT_BAUD`].
    pub fn device(spec: &str) -> Result<Self, SimError> {
        let invalid = || SimError::InvalidSerialDevice(spec.to_owned());
        let (path, baud) = match spec.rsplit_once('@') {
            Some((path, baud)) => (path, baud.parse().map_err(|_| invalid())?),
            None => (spec, DEFAULT_BAUD),
        };
        if path.is_empty() || baud == 0 {
            return Err(invalid());
        }
        Ok(Self::Device {
            path: path.into(),
            baud,
        })
    }

    /// A pty whose slave `link_path` will point at.
    pub fn pty(link_path: impl Into<PathBuf>) -> Self {
        Self::Pty {
            link_path: link_path.into(),
        }
    }
}

/// Settings of a module on a serial line. The firmware settings are those of [`SimConfig`],
/// with the same meaning, defaults and checks; MQTT's (broker, encoding, keep-alive, QoS) have
/// no equivalent on a serial line.
#[derive(Debug, Clone)]
pub struct SerialSimConfig {
    /// The line.
    pub link: SerialLink,
    /// Heartbeat interval at boot (announced in the hello). Default 5 s.
    pub heartbeat: Duration,
    /// Telemetry interval at boot. Default 2 s.
    pub telemetry: Duration,
    /// Every this many telemetry periods, a message carries all readings; see
    /// [`SimConfig::full_report_every`]. Default 10.
    pub full_report_every: u32,
    /// Seeds the sensor generators and the random damage of line faults. Default 0.
    pub seed: u64,
    /// Firmware version announced in hellos. Default this crate's version.
    pub fw: String,
}

impl SerialSimConfig {
    /// Real firmware's defaults on `link`.
    pub fn new(link: SerialLink) -> Self {
        Self::with_firmware_of(link, &SimConfig::default())
    }

    /// The firmware settings of `config` (an MQTT simulation's) on `link`.
    pub fn with_firmware_of(link: SerialLink, config: &SimConfig) -> Self {
        Self {
            link,
            heartbeat: config.heartbeat,
            telemetry: config.telemetry,
            full_report_every: config.full_report_every,
            seed: config.seed,
            fw: config.fw.clone(),
        }
    }

    /// Checks every setting; [`start_serial`] calls it, the CLI calls it for an early error.
    pub fn validate(&self) -> Result<(), SimError> {
        self.core_config().map(drop)
    }

    fn core_config(&self) -> Result<mc_firmware::CoreConfig, SimError> {
        let core = crate::core_config(
            self.heartbeat,
            self.telemetry,
            self.full_report_every,
            &self.fw,
        )?;
        if let SerialLink::Device { path, baud } = &self.link
            && (path.as_os_str().is_empty() || *baud == 0)
        {
            return Err(SimError::InvalidSerialDevice(format!(
                "{}@{baud}",
                path.display()
            )));
        }
        Ok(core)
    }
}

/// Starts one module on a serial line; it stops when `shutdown` is cancelled.
///
/// The line is opened here, so that a missing device, a pty that cannot be made or a
/// `link_path` that cannot be written is an error now rather than a retry loop. The module
/// then says hello as soon as the line is up (for a pty: as soon as the hub opens the slave)
/// and repeats it with backoff until accepted. One module per line: point to point, address 0.
///
/// Like `tokio::spawn`, it must be called within a Tokio runtime.
pub fn start_serial(
    config: SerialSimConfig,
    module: ModuleId,
    shutdown: CancellationToken,
) -> Result<SerialSimulation, SimError> {
    let core = config.core_config()?;
    let line = open_line(&config.link)?;
    let (faults_tx, faults_rx) = mpsc::unbounded_channel();
    let counters = Arc::new(Counters::default());
    let firmware = SerialFirmware::new(
        LinkConfig {
            module: module.clone(),
            address: ADDRESS_POINT_TO_POINT,
        },
        ModuleCore::new(core, SimSensors::new(config.seed, 0), Duration::ZERO),
    );
    let task = SerialTask::new(
        module.clone(),
        config.link,
        firmware,
        line,
        StdRng::seed_from_u64(config.seed ^ 0x5E41_A1F0),
        faults_rx,
        Arc::clone(&counters),
        shutdown,
    );
    let (status_tx, status) = watch::channel(task.status());
    let tracker = TaskTracker::new();
    tracker.spawn(task.run(status_tx));
    tracker.close();
    Ok(SerialSimulation {
        id: module,
        faults: faults_tx,
        counters,
        status,
        tracker,
    })
}

/// Opens `link` for the first time or again.
fn open_line(link: &SerialLink) -> Result<Line, SimError> {
    match link {
        SerialLink::Device { path, baud } => {
            Line::open_device(path, *baud).map_err(|source| SimError::OpenSerial {
                path: path.clone(),
                source,
            })
        }
        SerialLink::Pty { link_path } => {
            if pty::occupied(link_path) {
                return Err(SimError::LinkPathOccupied(link_path.clone()));
            }
            let line = Line::open_pty().map_err(SimError::CreatePty)?;
            if let Some(slave) = line.pty_slave() {
                pty::point_link(link_path, slave).map_err(|source| SimError::LinkPath {
                    path: link_path.clone(),
                    source,
                })?;
            }
            Ok(line)
        }
    }
}

/// What a serial module and its line are doing; [`SerialSimulation::status`] takes a snapshot,
/// [`SerialSimulation::watch_status`] follows changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialStatus {
    /// The line is open: the device is open, or the pty exists (not lost, not unplugged).
    pub plugged: bool,
    /// Someone is at the far end. For a pty: the hub has the slave open. For a device: the
    /// same as `plugged` (a UART cannot see its peer).
    pub hub_present: bool,
    /// Stopped by [`Fault::Stall`] right now.
    pub stalled: bool,
    /// The firmware's handshake.
    pub state: LinkState,
    /// The firmware driver's own counters (frames, hellos, accepts, commands...).
    pub link: LinkCounters,
    /// For a pty that exists: its slave, `/dev/pts/N`, which the symlink points at.
    pub pty_slave: Option<PathBuf>,
    /// Times the line was opened (the first time included; a pty: pairs created).
    pub opens: u64,
    /// Times the line failed by itself (end of file or an I/O error; not [`Fault::Unplug`]).
    pub losses: u64,
    /// Bytes read from the line.
    pub bytes_read: u64,
    /// Bytes written to the line.
    pub bytes_written: u64,
    /// Frames damaged by [`Fault::CorruptBytes`], [`Fault::TruncateFrame`] or
    /// [`Fault::BaudMismatch`].
    pub frames_damaged: u64,
    /// Bytes dropped because the transmit queue was full ([`TX_QUEUE_MAX`]).
    pub tx_dropped: u64,
}

/// The handle of one module on a serial line.
#[derive(Debug)]
pub struct SerialSimulation {
    /// The module's id.
    id: ModuleId,
    /// To the module's task; unbounded so that `inject` never blocks or fails.
    faults: mpsc::UnboundedSender<Fault>,
    /// Written by the module's task (hellos, heartbeats, telemetry put on the line...).
    counters: Arc<Counters>,
    /// Published by the module's task after every step.
    status: watch::Receiver<SerialStatus>,
    /// The module's task, so [`SerialSimulation::stopped`] can wait for it.
    tracker: TaskTracker,
}

impl SerialSimulation {
    /// The module's id.
    pub fn id(&self) -> &ModuleId {
        &self.id
    }

    /// Injects a fault; returns at once. Faults that only concern MQTT are ignored.
    pub fn inject(&self, fault: Fault) {
        if self.faults.send(fault).is_err() {
            debug!(module = %self.id, ?fault, "fault ignored: module stopped");
        }
    }

    /// A snapshot of the module's counters. On a serial line: `connects` counts accepted
    /// handshakes; `hellos`, `heartbeats` and `telemetry` the frames put on the line (damaged
    /// or not, repeats included); `commands` the commands executed (retransmissions
    /// excluded); `rejected_commands` those acknowledged with another result than `Done`;
    /// `garbage` the frames sent by [`Fault::SendGarbage`].
    pub fn stats(&self) -> SimStats {
        self.counters.snapshot()
    }

    /// The firmware driver's counters.
    pub fn link_counters(&self) -> LinkCounters {
        self.status.borrow().link
    }

    /// What the module and its line are doing now.
    pub fn status(&self) -> SerialStatus {
        self.status.borrow().clone()
    }

    /// Follows [`Self::status`]: `changed().await` or `wait_for(..)` on the receiver.
    pub fn watch_status(&self) -> watch::Receiver<SerialStatus> {
        self.status.clone()
    }

    /// True while the hub has accepted the module's hello on a working line.
    pub fn is_accepted(&self) -> bool {
        let status = self.status.borrow();
        status.hub_present && status.state == LinkState::Accepted
    }

    /// The pty's slave, `/dev/pts/N`, while there is one (`--pty` only).
    pub fn pty_slave(&self) -> Option<PathBuf> {
        self.status.borrow().pty_slave.clone()
    }

    /// Waits until the module's task has finished (after `shutdown` is cancelled; a pty's
    /// symlink is removed by then).
    pub async fn stopped(self) {
        self.tracker.wait().await;
    }
}

/// The firmware's clock: time since the task was made ("power on"), on Tokio's clock.
#[derive(Debug)]
struct TaskClock {
    epoch: Instant,
}

impl Clock for TaskClock {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }
}

/// The driver's transport: bytes the task read and the driver has not taken yet, and bytes the
/// driver wrote and the task has not taken yet. Never blocks and never fails: the I/O and its
/// errors belong to the task.
#[derive(Debug, Default)]
struct Buffers {
    rx: VecDeque<u8>,
    tx: Vec<u8>,
}

impl Transport for Buffers {
    type Error = Infallible;

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let n = buf.len().min(self.rx.len());
        for (dst, src) in buf.iter_mut().zip(self.rx.drain(..n)) {
            *dst = src;
        }
        Ok(n)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Infallible> {
        self.tx.extend_from_slice(bytes);
        Ok(())
    }
}

/// Damage waiting for the next frame(s) the module sends, in the order it was injected.
#[derive(Debug)]
enum FrameFault {
    Corrupt,
    Truncate,
    Baud { frames: u32 },
}

/// Where the line stands.
#[derive(Debug)]
enum LineState {
    /// Open. `hub_present`: for a pty, whether the hub has the slave open (if not, it is
    /// probed again at `probe_at`); always true for a device.
    Open {
        line: Line,
        hub_present: bool,
        probe_at: Option<Instant>,
    },
    /// Failed by itself: opened again at `retry_at`.
    Lost { retry_at: Instant },
    /// Unplugged by [`Fault::Unplug`]: closed until [`Fault::Replug`].
    Unplugged,
}

/// What woke the task.
#[derive(Debug)]
enum Event {
    Shutdown,
    Fault(Fault),
    Line(Transfer),
    Timer,
}

/// The line's own counters (see [`SerialStatus`]).
#[derive(Debug, Default)]
struct LineCounters {
    opens: u64,
    losses: u64,
    bytes_read: u64,
    bytes_written: u64,
    frames_damaged: u64,
    tx_dropped: u64,
}

/// The task of one module on a serial line.
struct SerialTask {
    id: ModuleId,
    link: SerialLink,
    /// The same driver a board runs.
    firmware: SerialFirmware<SimSensors>,
    clock: TaskClock,
    /// Between the task and the driver.
    buffers: Buffers,
    line: LineState,
    /// Bytes for the line (faults applied), written as the line takes them.
    out: Vec<u8>,
    /// When the driver wants to be polled next, while the line is up.
    next_poll: Option<Instant>,
    /// Set by [`Fault::Stall`]: no reading or writing until then.
    stalled_until: Option<Instant>,
    frame_faults: VecDeque<FrameFault>,
    /// The last telemetry frame as sent, for [`Fault::RepeatTelemetry`].
    last_telemetry: Option<Vec<u8>>,
    reopen: Backoff,
    /// Damage, noise and backoff jitter; seeded, so a run can be replayed.
    rng: StdRng,
    faults: mpsc::UnboundedReceiver<Fault>,
    counters: Arc<Counters>,
    line_counters: LineCounters,
    shutdown: CancellationToken,
}

impl SerialTask {
    #[allow(clippy::too_many_arguments, reason = "called once, by start_serial")]
    fn new(
        id: ModuleId,
        link: SerialLink,
        firmware: SerialFirmware<SimSensors>,
        line: Line,
        rng: StdRng,
        faults: mpsc::UnboundedReceiver<Fault>,
        counters: Arc<Counters>,
        shutdown: CancellationToken,
    ) -> Self {
        let now = Instant::now();
        let mut task = Self {
            id,
            link,
            firmware,
            clock: TaskClock { epoch: now },
            buffers: Buffers::default(),
            line: LineState::Unplugged,
            out: Vec::new(),
            next_poll: None,
            stalled_until: None,
            frame_faults: VecDeque::new(),
            last_telemetry: None,
            reopen: Backoff::new(REOPEN_INITIAL, REOPEN_MAX),
            rng,
            faults,
            counters,
            line_counters: LineCounters::default(),
            shutdown,
        };
        task.plugged_in(line, now);
        task
    }

    async fn run(mut self, status: watch::Sender<SerialStatus>) {
        let mut buf = [0u8; 1024];
        // Power on: on a device, the hello goes out at once.
        self.poll_firmware();
        loop {
            let event = self.next_event(&mut buf).await;
            let now = Instant::now();
            match event {
                Event::Shutdown => break,
                Event::Fault(fault) => self.on_fault(fault, now),
                Event::Line(Transfer::Read(Ok(0))) => self.line_failed("end of file", now),
                Event::Line(Transfer::Read(Ok(n))) => self.received(&buf[..n]),
                Event::Line(Transfer::Read(Err(e)) | Transfer::Wrote(Err(e))) => {
                    self.io_failed(&e, now);
                }
                Event::Line(Transfer::Wrote(Ok(n))) => {
                    self.out.drain(..n.min(self.out.len()));
                    self.line_counters.bytes_written += n as u64;
                }
                Event::Timer => self.on_timer(now),
            }
            self.poll_firmware();
            let snapshot = self.status();
            status.send_if_modified(|s| {
                let changed = *s != snapshot;
                *s = snapshot;
                changed
            });
        }
        self.close_line();
        self.lose_link();
        status.send_modify(|s| *s = self.status());
        debug!(module = %self.id, "stopped");
    }

    /// Waits for the next thing to do. Reading and writing only while the line is up and not
    /// stalled; writing only when there is something to write.
    async fn next_event(&mut self, buf: &mut [u8]) -> Event {
        let wake = self.next_wake();
        let flowing = self.stalled_until.is_none();
        let line = match &mut self.line {
            LineState::Open {
                line,
                hub_present: true,
                ..
            } if flowing => Some(line),
            _ => None,
        };
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => Event::Shutdown,
            Some(fault) = self.faults.recv() => Event::Fault(fault),
            () = sleep_until_opt(wake) => Event::Timer,
            transfer = transfer(line, &self.out, buf) => Event::Line(transfer),
        }
    }

    /// The earliest timer: the driver's deadline, the end of a stall, a reopen, a pty probe.
    fn next_wake(&self) -> Option<Instant> {
        let line = match &self.line {
            LineState::Open { probe_at, .. } => *probe_at,
            LineState::Lost { retry_at } => Some(*retry_at),
            LineState::Unplugged => None,
        };
        [self.next_poll, self.stalled_until, line]
            .into_iter()
            .flatten()
            .min()
    }

    /// The line is open and someone is at the far end: the driver runs.
    fn up(&self) -> bool {
        matches!(
            self.line,
            LineState::Open {
                hub_present: true,
                ..
            }
        )
    }

    fn on_timer(&mut self, now: Instant) {
        if self.stalled_until.is_some_and(|until| until <= now) {
            self.stalled_until = None;
            debug!(module = %self.id, "stall over");
        }
        match &self.line {
            LineState::Lost { retry_at } if *retry_at <= now => self.reconnect(now),
            LineState::Open {
                probe_at: Some(at), ..
            } if *at <= now => self.probe(now),
            _ => {}
        }
    }

    /// Runs the driver if the line is up, and takes what it wrote.
    fn poll_firmware(&mut self) {
        if !self.up() {
            self.next_poll = None;
            return;
        }
        let Ok(deadline) = self.firmware.poll(&mut self.buffers, &self.clock);
        // Never a deadline in the past: the driver did everything that was due.
        let soonest = Instant::now() + Duration::from_millis(1);
        self.next_poll = Some((self.clock.epoch + deadline).max(soonest));
        self.take_frames();
        let link = self.firmware.counters();
        self.counters
            .connects
            .store(u64::from(link.accepts), Ordering::Relaxed);
        self.counters
            .commands
            .store(u64::from(link.commands), Ordering::Relaxed);
        self.counters
            .set_connected(self.firmware.state() == LinkState::Accepted);
    }

    /// Moves the frames the driver wrote to the line's queue, counting them and applying
    /// pending damage.
    fn take_frames(&mut self) {
        let Some(end) = self.buffers.tx.iter().rposition(|b| *b == DELIMITER) else {
            return;
        };
        let bytes: Vec<u8> = self.buffers.tx.drain(..=end).collect();
        for frame in bytes.split_inclusive(|b| *b == DELIMITER) {
            self.count(frame);
            let sent = self.damage(frame);
            self.enqueue(&sent);
        }
    }

    fn count(&mut self, frame: &[u8]) {
        let mut copy = frame[..frame.len() - 1].to_vec();
        let Ok((_, message)) = decode_uplink(&mut copy) else {
            return;
        };
        let c = &self.counters;
        match message {
            Uplink::Hello(_) => Counters::bump(&c.hellos),
            Uplink::Heartbeat(_) => Counters::bump(&c.heartbeats),
            Uplink::Telemetry(_) => {
                Counters::bump(&c.telemetry);
                self.last_telemetry = Some(frame.to_vec());
            }
            Uplink::Ack(ack) if ack.result != CommandResult::Done => {
                Counters::bump(&c.rejected_commands);
            }
            Uplink::Ack(_) | Uplink::Error(_) => {}
        }
    }

    /// `frame` as the hub will get it: damaged by the first pending frame fault, if any.
    fn damage(&mut self, frame: &[u8]) -> Vec<u8> {
        let Some(fault) = self.frame_faults.front_mut() else {
            return frame.to_vec();
        };
        self.line_counters.frames_damaged += 1;
        match fault {
            FrameFault::Corrupt => {
                self.frame_faults.pop_front();
                faults::corrupt_frame(frame, &mut self.rng)
            }
            FrameFault::Truncate => {
                self.frame_faults.pop_front();
                faults::truncate_frame(frame)
            }
            FrameFault::Baud { frames } => {
                *frames -= 1;
                if *frames == 0 {
                    self.frame_faults.pop_front();
                }
                faults::heard_at_wrong_baud(frame, WRONG_BAUD_SPEED)
            }
        }
    }

    /// Queues bytes for the line, unless the queue is full.
    fn enqueue(&mut self, bytes: &[u8]) {
        if self.out.len() + bytes.len() > TX_QUEUE_MAX {
            self.line_counters.tx_dropped += bytes.len() as u64;
            debug!(module = %self.id, bytes = bytes.len(), "transmit queue full: dropped");
            return;
        }
        self.out.extend_from_slice(bytes);
    }

    fn received(&mut self, bytes: &[u8]) {
        self.line_counters.bytes_read += bytes.len() as u64;
        self.buffers.rx.extend(bytes);
    }

    fn io_failed(&mut self, error: &io::Error, now: Instant) {
        let pty = matches!(&self.line, LineState::Open { line, .. } if line.pty_slave().is_some());
        if pty && is_hangup(error) {
            self.hub_left(now);
        } else {
            self.line_failed(&error.to_string(), now);
        }
    }

    /// A pty's slave was closed by the hub: wait for it to come back.
    fn hub_left(&mut self, now: Instant) {
        if let LineState::Open {
            hub_present,
            probe_at,
            ..
        } = &mut self.line
        {
            *hub_present = false;
            *probe_at = Some(now + PROBE_INTERVAL);
        }
        info!(module = %self.id, "the hub closed the port; waiting for it to open it again");
        self.lose_link();
    }

    /// Checks whether the hub has opened a pty's slave.
    fn probe(&mut self, now: Instant) {
        let LineState::Open {
            line,
            hub_present,
            probe_at,
        } = &mut self.line
        else {
            return;
        };
        if line.pty_slave().is_none() {
            *probe_at = None;
            return;
        }
        let mut buf = [0u8; 1024];
        let result = line.probe(&mut buf);
        match result {
            Err(e) if is_hangup(&e) => *probe_at = Some(now + PROBE_INTERVAL),
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                self.line_failed(&e.to_string(), now);
            }
            // Open: nothing waiting (WouldBlock), or bytes already.
            result => {
                *hub_present = true;
                *probe_at = None;
                info!(module = %self.id, "the hub opened the port");
                if let Ok(n) = result {
                    self.received(&buf[..n]);
                }
            }
        }
    }

    /// The line failed by itself: tell the driver, and open it again after a while.
    fn line_failed(&mut self, reason: &str, now: Instant) {
        let delay = self.reopen.next_delay(self.rng.random());
        warn!(module = %self.id, line = %self.link_name(), "serial line lost ({reason}); reopening in {delay:?}");
        self.close_line();
        self.lose_link();
        self.line_counters.losses += 1;
        self.line = LineState::Lost {
            retry_at: now + delay,
        };
    }

    /// Opens the line again (after a failure, or on [`Fault::Replug`]).
    fn reconnect(&mut self, now: Instant) {
        match open_line(&self.link) {
            Ok(line) => {
                self.reopen.reset();
                self.plugged_in(line, now);
            }
            Err(e) => {
                let delay = self.reopen.next_delay(self.rng.random());
                debug!(module = %self.id, "cannot open the line: {e}; retry in {delay:?}");
                self.line = LineState::Lost {
                    retry_at: now + delay,
                };
            }
        }
    }

    fn plugged_in(&mut self, line: Line, now: Instant) {
        self.line_counters.opens += 1;
        match line.pty_slave() {
            Some(slave) => info!(
                module = %self.id,
                link = %self.link_name(),
                slave = %slave.display(),
                "pty ready; waiting for the hub to open it"
            ),
            None => info!(module = %self.id, line = %self.link_name(), "serial line open"),
        }
        // A device is there at once; a pty's slave only once the hub opens it.
        let hub_present = line.pty_slave().is_none();
        self.line = LineState::Open {
            line,
            hub_present,
            probe_at: (!hub_present).then_some(now),
        };
    }

    /// Closes the line if it is open; a pty's symlink goes with it.
    fn close_line(&mut self) {
        let old = std::mem::replace(&mut self.line, LineState::Unplugged);
        self.discard(old);
    }

    /// Closes a line taken out of `self.line`; a pty's symlink goes with it unless it points
    /// at a newer pty already.
    fn discard(&self, old: LineState) {
        if let LineState::Open { line, .. } = old
            && let (Some(slave), SerialLink::Pty { link_path }) = (line.pty_slave(), &self.link)
        {
            pty::remove_link(link_path, slave);
        }
    }

    /// The driver has no line any more: it starts over with a hello on the next one. Whatever
    /// was on its way is lost, as on a real cable.
    fn lose_link(&mut self) {
        self.firmware.link_lost();
        self.buffers = Buffers::default();
        self.out.clear();
        self.next_poll = None;
        self.stalled_until = None;
        self.counters.set_connected(false);
    }

    fn on_fault(&mut self, fault: Fault, now: Instant) {
        info!(module = %self.id, ?fault, "fault injected");
        let up = self.up();
        match fault {
            Fault::StopHeartbeats => self.firmware.core_mut().stop_heartbeats(),
            Fault::ResumeHeartbeats => self.firmware.core_mut().resume_heartbeats(),
            Fault::Burst(n) => self.firmware.core_mut().burst(n),
            Fault::SendGarbage if up => {
                let frame = faults::garbage_frame(ADDRESS_POINT_TO_POINT, &mut self.rng);
                self.enqueue(&frame);
                Counters::bump(&self.counters.garbage);
            }
            Fault::RepeatTelemetry if up => match self.last_telemetry.clone() {
                Some(frame) => {
                    self.enqueue(&frame);
                    Counters::bump(&self.counters.telemetry);
                }
                None => debug!(module = %self.id, "no telemetry sent yet: nothing to repeat"),
            },
            Fault::LineNoise(n) if up => {
                let noise = faults::line_noise(n as usize, &mut self.rng);
                self.enqueue(&noise);
            }
            Fault::SendGarbage | Fault::RepeatTelemetry | Fault::LineNoise(_) => {
                debug!(module = %self.id, ?fault, "line down: nothing sent");
            }
            Fault::CorruptBytes => self.frame_faults.push_back(FrameFault::Corrupt),
            Fault::TruncateFrame => self.frame_faults.push_back(FrameFault::Truncate),
            Fault::BaudMismatch(0) => {}
            Fault::BaudMismatch(frames) => {
                self.frame_faults.push_back(FrameFault::Baud { frames });
            }
            Fault::Stall(duration) => match self.line {
                LineState::Open { .. } => {
                    let until = now + duration;
                    self.stalled_until = Some(self.stalled_until.map_or(until, |u| u.max(until)));
                }
                _ => debug!(module = %self.id, "no line to stall"),
            },
            Fault::Unplug => {
                if !matches!(self.line, LineState::Unplugged) {
                    info!(module = %self.id, line = %self.link_name(), "unplugged");
                }
                self.close_line();
                self.lose_link();
            }
            // A pty: the new pair first, so that it gets another /dev/pts/N (as a
            // re-enumerated USB adapter does) and the symlink moves in one step. A device is
            // opened exclusively: closed first.
            Fault::Replug if matches!(self.link, SerialLink::Pty { .. }) => {
                let old = std::mem::replace(&mut self.line, LineState::Unplugged);
                self.lose_link();
                self.reconnect(now);
                self.discard(old);
            }
            Fault::Replug => {
                self.close_line();
                self.lose_link();
                self.reconnect(now);
            }
            Fault::DropConnection | Fault::Disconnect | Fault::Reconnect => {
                debug!(module = %self.id, ?fault, "MQTT fault: ignored on a serial line");
            }
        }
    }

    fn link_name(&self) -> String {
        match &self.link {
            SerialLink::Device { path, baud } => format!("{}@{baud}", path.display()),
            SerialLink::Pty { link_path } => link_path.display().to_string(),
        }
    }

    fn status(&self) -> SerialStatus {
        let (plugged, hub_present, pty_slave) = match &self.line {
            LineState::Open {
                line, hub_present, ..
            } => (true, *hub_present, line.pty_slave().map(Path::to_path_buf)),
            LineState::Lost { .. } | LineState::Unplugged => (false, false, None),
        };
        let c = &self.line_counters;
        SerialStatus {
            plugged,
            hub_present,
            stalled: self.stalled_until.is_some(),
            state: self.firmware.state(),
            link: self.firmware.counters(),
            pty_slave,
            opens: c.opens,
            losses: c.losses,
            bytes_read: c.bytes_read,
            bytes_written: c.bytes_written,
            frames_damaged: c.frames_damaged,
            tx_dropped: c.tx_dropped,
        }
    }
}

/// The next read or write on `line`; never resolves without a line.
async fn transfer(line: Option<&mut Line>, out: &[u8], buf: &mut [u8]) -> Transfer {
    match line {
        Some(line) => std::future::poll_fn(|cx| line.poll_transfer(cx, out, buf)).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    //! The task's logic over an in-memory line, under paused time: exact intervals, no waiting.
    //! The real ptys and devices are exercised by `tests/it/serial.rs`.

    use mc_protocol::{
        Command, CommandAction,
        link::{
            Accept, Accumulated, Downlink, FrameAccumulator, FrameError, LINK_VERSION,
            downlink_to_vec,
        },
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    /// The hub's end of an in-memory line.
    struct Hub {
        io: DuplexStream,
        frames: FrameAccumulator,
        received: VecDeque<Result<Uplink, FrameError>>,
    }

    impl Hub {
        /// The next frame, decoded; panics after a minute of (paused, so instant) silence.
        async fn next(&mut self) -> Result<Uplink, FrameError> {
            let mut buf = [0u8; 256];
            loop {
                if let Some(frame) = self.received.pop_front() {
                    return frame;
                }
                let n = tokio::time::timeout(Duration::from_secs(60), self.io.read(&mut buf))
                    .await
                    .expect("a frame within a minute")
                    .unwrap();
                assert!(n > 0, "the module closed the line");
                for &b in &buf[..n] {
                    match self.frames.push(b) {
                        None => {}
                        Some(Accumulated::Frame(f)) => {
                            self.received.push_back(decode_uplink(f).map(|(_, m)| m));
                        }
                        Some(Accumulated::Overflow { discarded }) => self
                            .received
                            .push_back(Err(FrameError::TooLong { len: discarded })),
                    }
                }
            }
        }

        async fn send(&mut self, msg: &Downlink) {
            let bytes = downlink_to_vec(ADDRESS_POINT_TO_POINT, msg).unwrap();
            self.io.write_all(&bytes).await.unwrap();
        }

        /// Answers the hello and takes the heartbeat and full telemetry that follow.
        async fn accept(&mut self) {
            assert!(matches!(self.next().await, Ok(Uplink::Hello(_))));
            self.send(&Downlink::Accept(Accept {
                protocol: LINK_VERSION,
                heartbeat_ms: 5000,
                telemetry_ms: 2000,
            }))
            .await;
            assert!(matches!(self.next().await, Ok(Uplink::Heartbeat(_))));
            assert!(matches!(self.next().await, Ok(Uplink::Telemetry(_))));
        }
    }

    struct Module {
        faults: mpsc::UnboundedSender<Fault>,
        status: watch::Receiver<SerialStatus>,
        shutdown: CancellationToken,
    }

    /// A module (heartbeat 5 s, telemetry 2 s) on an in-memory line.
    fn module() -> (Module, Hub) {
        let (module_end, hub_end) = tokio::io::duplex(64 * 1024);
        let config = SerialSimConfig::new(SerialLink::Device {
            path: "/nonexistent/tty".into(),
            baud: DEFAULT_BAUD,
        });
        let core = config.core_config().unwrap();
        let firmware = SerialFirmware::new(
            LinkConfig {
                module: ModuleId::new("MC-1001-STN").unwrap(),
                address: ADDRESS_POINT_TO_POINT,
            },
            ModuleCore::new(core, SimSensors::new(0, 0), Duration::ZERO),
        );
        let (faults_tx, faults_rx) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let task = SerialTask::new(
            firmware.config().module.clone(),
            config.link,
            firmware,
            Line::memory(module_end),
            StdRng::seed_from_u64(0),
            faults_rx,
            Arc::new(Counters::default()),
            shutdown.clone(),
        );
        let (status_tx, status) = watch::channel(task.status());
        tokio::spawn(task.run(status_tx));
        let hub = Hub {
            io: hub_end,
            frames: FrameAccumulator::new(),
            received: VecDeque::new(),
        };
        (
            Module {
                faults: faults_tx,
                status,
                shutdown,
            },
            hub,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_is_tokio_time_since_the_task_started() {
        let clock = TaskClock {
            epoch: Instant::now(),
        };
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(clock.now(), Duration::from_millis(1500));
    }

    #[test]
    fn the_transport_hands_over_what_it_holds_and_never_blocks() {
        let mut buffers = Buffers::default();
        let mut buf = [0u8; 4];
        assert_eq!(buffers.read(&mut buf), Ok(0));
        buffers.rx.extend(b"abcdef");
        assert_eq!(buffers.read(&mut buf), Ok(4));
        assert_eq!(&buf, b"abcd");
        assert_eq!(buffers.read(&mut buf), Ok(2));
        buffers.write(b"\x01\x02\x00").unwrap();
        buffers.write(b"\x03\x00").unwrap();
        assert_eq!(buffers.tx, b"\x01\x02\x00\x03\x00");
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_keep_their_interval_exactly() {
        let (module, mut hub) = module();
        hub.accept().await;
        let start = Instant::now();
        let mut beats = Vec::new();
        while beats.len() < 3 {
            if let Ok(Uplink::Heartbeat(h)) = hub.next().await {
                beats.push((h.seq, Instant::now() - start));
            }
        }
        assert_eq!(
            beats,
            [
                (1, Duration::from_secs(5)),
                (2, Duration::from_secs(10)),
                (3, Duration::from_secs(15))
            ]
        );
        assert_eq!(module.status.borrow().state, LinkState::Accepted);
        module.shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_holds_both_directions_then_everything_flows() {
        let (module, mut hub) = module();
        hub.accept().await;
        let stalled_at = Instant::now();
        module
            .faults
            .send(Fault::Stall(Duration::from_secs(12)))
            .unwrap();
        // A command during the stall waits in the line.
        hub.send(&Downlink::Command(Command {
            id: 5,
            action: CommandAction::ResendState,
        }))
        .await;
        let mut status = module.status.clone();
        status.wait_for(|s| s.stalled).await.unwrap();
        // Nothing until the stall ends; then the frames the firmware made meanwhile (two
        // heartbeats, telemetry), and only then the answer to the command.
        let mut seen = Vec::new();
        loop {
            let frame = hub.next().await.unwrap();
            if seen.is_empty() {
                assert_eq!(Instant::now() - stalled_at, Duration::from_secs(12));
            }
            if let Uplink::Ack(ack) = frame {
                assert_eq!(ack.command, 5);
                break;
            }
            seen.push(frame);
        }
        let heartbeats = seen
            .iter()
            .filter(|m| matches!(m, Uplink::Heartbeat(_)))
            .count();
        assert_eq!(
            heartbeats, 2,
            "made at 5 s and 10 s, sent at 12 s: {seen:?}"
        );
        assert!(!module.status.borrow().stalled);
        module.shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn frame_faults_apply_to_the_next_frames_in_order() {
        let (module, mut hub) = module();
        hub.accept().await;
        for fault in [
            Fault::CorruptBytes,
            Fault::TruncateFrame,
            Fault::SendGarbage,
        ] {
            module.faults.send(fault).unwrap();
        }
        // Garbage goes out at once; the two damaged frames are the next two the firmware
        // makes; then frames are intact again.
        assert!(matches!(
            hub.next().await,
            Err(FrameError::UnknownMessage { .. })
        ));
        assert_eq!(hub.next().await, Err(FrameError::Crc));
        assert!(hub.next().await.is_err());
        for _ in 0..3 {
            assert!(hub.next().await.is_ok());
        }
        assert_eq!(module.status.borrow().frames_damaged, 2);
        module.shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn mqtt_faults_are_ignored() {
        let (module, mut hub) = module();
        hub.accept().await;
        for fault in [Fault::DropConnection, Fault::Disconnect, Fault::Reconnect] {
            module.faults.send(fault).unwrap();
        }
        for _ in 0..3 {
            assert!(hub.next().await.is_ok());
        }
        let status = module.status.borrow().clone();
        assert!(status.plugged && status.state == LinkState::Accepted);
        module.shutdown.cancel();
    }

    #[test]
    fn device_specs() {
        assert_eq!(
            SerialLink::device("/dev/ttyUSB0").unwrap(),
            SerialLink::Device {
                path: "/dev/ttyUSB0".into(),
                baud: 115_200
            }
        );
        assert_eq!(
            SerialLink::device("/dev/ttyACM1@57600").unwrap(),
            SerialLink::Device {
                path: "/dev/ttyACM1".into(),
                baud: 57_600
            }
        );
        for bad in [
            "",
            "@9600",
            "/dev/ttyS0@",
            "/dev/ttyS0@0",
            "/dev/ttyS0@fast",
        ] {
            assert!(SerialLink::device(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn firmware_settings_are_checked_like_mqtt_ones() {
        let link = SerialLink::pty("/tmp/x");
        SerialSimConfig::new(link.clone()).validate().unwrap();
        let bad = SerialSimConfig {
            heartbeat: Duration::from_millis(10),
            ..SerialSimConfig::new(link.clone())
        };
        assert!(matches!(
            bad.validate(),
            Err(SimError::InvalidInterval {
                what: "heartbeat",
                ..
            })
        ));
        let from_mqtt = SerialSimConfig::with_firmware_of(
            link,
            &SimConfig {
                telemetry: Duration::from_millis(300),
                fw: "2.0".into(),
                ..SimConfig::default()
            },
        );
        assert_eq!(from_mqtt.telemetry, Duration::from_millis(300));
        assert_eq!(from_mqtt.fw, "2.0");
    }
}
