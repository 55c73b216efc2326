//! A module on a serial line, against a test that plays the hub on the other end of a real pty:
//! it opens the link path with tokio-serial as the hub does, cuts frames with the protocol's
//! accumulator and decodes them with its decoder. Real I/O, so real time: every wait has a
//! deadline and waits for a condition, never for a fixed time.

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    time::Duration,
};

use firmware_sim::{
    Fault, LinkState, SerialLink, SerialSimConfig, SerialSimulation, SerialStatus, SimError,
    sensors::names,
};
use mc_protocol::{
    Command, CommandAction, ModuleId,
    link::{
        ADDRESS_POINT_TO_POINT, Accept, Accumulated, Ack, CommandResult, Downlink,
        FrameAccumulator, FrameError, LINK_VERSION, LinkHello, Uplink, decode_uplink,
        downlink_to_vec,
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    time::{Instant, timeout},
};
use tokio_serial::{SerialPortBuilderExt, SerialStream};
use tokio_util::sync::CancellationToken;

use crate::broker::DEADLINE;

const MODULE: &str = "MC-1001-STN";
const HEARTBEAT: Duration = Duration::from_millis(400);
const TELEMETRY: Duration = Duration::from_millis(250);

/// One decoded frame, or why the hub's decoder refused it.
type Frame = Result<Uplink, FrameError>;

/// The hub's end of the line.
struct HubEnd {
    port: SerialStream,
    frames: FrameAccumulator,
    received: VecDeque<Frame>,
}

impl HubEnd {
    /// Opens a port as the hub does (8N1, exclusive; a symlink is followed).
    fn open(path: &Path) -> Self {
        let port = tokio_serial::new(path.to_string_lossy(), 115_200)
            .open_native_async()
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        Self::new(port)
    }

    fn new(port: SerialStream) -> Self {
        Self {
            port,
            frames: FrameAccumulator::new(),
            received: VecDeque::new(),
        }
    }

    /// The next frame the module sent, decoded or refused.
    async fn next(&mut self) -> Frame {
        let deadline = Instant::now() + DEADLINE;
        let mut buf = [0u8; 512];
        loop {
            if let Some(frame) = self.received.pop_front() {
                return frame;
            }
            let n = tokio::time::timeout_at(deadline, self.port.read(&mut buf))
                .await
                .expect("a frame from the module in time")
                .expect("the line works");
            assert!(n > 0, "the line hung up");
            for &byte in &buf[..n] {
                match self.frames.push(byte) {
                    None => {}
                    Some(Accumulated::Frame(f)) => {
                        self.received
                            .push_back(decode_uplink(f).map(|(_, message)| message));
                    }
                    Some(Accumulated::Overflow { discarded }) => self
                        .received
                        .push_back(Err(FrameError::TooLong { len: discarded })),
                }
            }
        }
    }

    /// Skips frames until one satisfies `wanted`; returns it with the frames skipped.
    async fn until(
        &mut self,
        what: &str,
        mut wanted: impl FnMut(&Frame) -> bool,
    ) -> (Frame, Vec<Frame>) {
        let deadline = Instant::now() + DEADLINE;
        let mut skipped = Vec::new();
        loop {
            assert!(Instant::now() < deadline, "no {what}; got {skipped:?}");
            let frame = self.next().await;
            if wanted(&frame) {
                return (frame, skipped);
            }
            skipped.push(frame);
        }
    }

    /// Skips frames until a valid one satisfies `wanted`, and returns it.
    async fn wait_for(&mut self, what: &str, wanted: impl Fn(&Uplink) -> bool) -> Uplink {
        let (frame, _) = self.until(what, |f| f.as_ref().is_ok_and(&wanted)).await;
        frame.expect("a valid frame")
    }

    async fn hello(&mut self) -> LinkHello {
        match self
            .until("hello", |f| matches!(f, Ok(Uplink::Hello(_))))
            .await
        {
            (Ok(Uplink::Hello(hello)), _) => hello,
            _ => unreachable!(),
        }
    }

    async fn send(&mut self, message: &Downlink) {
        let bytes = downlink_to_vec(ADDRESS_POINT_TO_POINT, message).unwrap();
        self.port
            .write_all(&bytes)
            .await
            .expect("write to the module");
    }

    /// Waits for a hello, accepts it with the module's own intervals, and checks the heartbeat
    /// and full telemetry that must follow at once.
    async fn accept(&mut self) -> LinkHello {
        let hello = self.hello().await;
        self.send(&Downlink::Accept(Accept {
            protocol: LINK_VERSION,
            heartbeat_ms: hello.heartbeat_ms,
            telemetry_ms: hello.telemetry_ms,
        }))
        .await;
        let first = self.next().await;
        assert!(matches!(first, Ok(Uplink::Heartbeat(_))), "{first:?}");
        match self.next().await {
            Ok(Uplink::Telemetry(t)) => {
                assert_eq!(
                    t.mask,
                    (1 << names::ALL.len()) - 1,
                    "every reading, by index"
                );
                assert_eq!(t.values.len(), names::ALL.len());
            }
            other => panic!("expected full telemetry, got {other:?}"),
        }
        hello
    }

    /// Reads until the line hangs up (end of file or an error such as EIO).
    async fn hang_up(&mut self) {
        let mut buf = [0u8; 512];
        let read_until_closed = async {
            loop {
                match self.port.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        timeout(DEADLINE, read_until_closed)
            .await
            .expect("the hub's port hangs up");
    }
}

struct Setup {
    sim: SerialSimulation,
    shutdown: CancellationToken,
    link: PathBuf,
    /// Holds the link's directory.
    _dir: tempfile::TempDir,
}

fn config(link: SerialLink) -> SerialSimConfig {
    SerialSimConfig {
        heartbeat: HEARTBEAT,
        telemetry: TELEMETRY,
        seed: 11,
        fw: "3.1.4".into(),
        ..SerialSimConfig::new(link)
    }
}

/// A module behind a fresh pty, linked at `<tempdir>/tty`.
fn start_pty() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("tty");
    let shutdown = CancellationToken::new();
    let sim = firmware_sim::start_serial(
        config(SerialLink::pty(&link)),
        ModuleId::new(MODULE).unwrap(),
        shutdown.clone(),
    )
    .expect("start");
    Setup {
        sim,
        shutdown,
        link,
        _dir: dir,
    }
}

async fn wait_status(
    sim: &SerialSimulation,
    what: &str,
    condition: impl Fn(&SerialStatus) -> bool,
) {
    let mut status = sim.watch_status();
    timeout(DEADLINE, status.wait_for(|s| condition(s)))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", sim.status()))
        .expect("the module task is running");
}

async fn stop(setup: Setup) {
    setup.shutdown.cancel();
    timeout(DEADLINE, setup.sim.stopped())
        .await
        .expect("the module stops after shutdown");
    assert!(
        setup.link.symlink_metadata().is_err(),
        "the symlink is removed on exit"
    );
}

fn target(link: &Path) -> PathBuf {
    std::fs::read_link(link).expect("the link is a symlink")
}

#[tokio::test]
async fn hello_carries_the_schema_then_heartbeats_and_telemetry_by_index() {
    let setup = start_pty();
    let slave = setup.sim.pty_slave().expect("a pty");
    assert_eq!(target(&setup.link), slave, "the link points at the slave");
    assert!(
        !setup.sim.status().hub_present,
        "nobody opened the port yet"
    );

    let mut hub = HubEnd::open(&setup.link);
    let hello = hub.accept().await;
    assert_eq!(hello.protocol, LINK_VERSION);
    assert_eq!(hello.module.as_str(), MODULE);
    assert_eq!(hello.fw.as_str(), "3.1.4");
    assert_eq!(
        (hello.heartbeat_ms, hello.telemetry_ms),
        (HEARTBEAT.as_millis() as u32, TELEMETRY.as_millis() as u32)
    );
    let readings: Vec<&str> = hello.readings.iter().map(|r| r.as_str()).collect();
    assert_eq!(readings, names::ALL);

    // The schedule runs: heartbeats with consecutive seqs, telemetry between them.
    let mut beats = Vec::new();
    while beats.len() < 3 {
        let (frame, _) = hub
            .until("heartbeat", |f| matches!(f, Ok(Uplink::Heartbeat(_))))
            .await;
        if let Ok(Uplink::Heartbeat(h)) = frame {
            beats.push(h.seq);
        }
    }
    assert_eq!(beats, [1, 2, 3]);
    wait_status(&setup.sim, "accepted", |s| s.state == LinkState::Accepted).await;
    assert!(setup.sim.is_accepted());
    let stats = setup.sim.stats();
    assert_eq!((stats.connects, stats.hellos), (1, 1));
    assert!(stats.heartbeats >= 4 && stats.telemetry >= 1, "{stats:?}");
    stop(setup).await;
}

#[tokio::test]
async fn commands_are_acknowledged_and_a_repeated_id_is_not_executed_again() {
    let setup = start_pty();
    let mut hub = HubEnd::open(&setup.link);
    hub.accept().await;

    let reboot = Downlink::Command(Command {
        id: 7,
        action: CommandAction::Reboot,
    });
    let acked = |m: &Uplink| {
        matches!(
            m,
            Uplink::Ack(Ack {
                command: 7,
                result: CommandResult::Done
            })
        )
    };
    hub.send(&reboot).await;
    hub.wait_for("ack of the reboot", acked).await;
    // Rebooted: it starts over with a hello, which the hub accepts.
    hub.accept().await;

    // The hub missed the ack and sends the same command again: the same ack, no reboot.
    hub.send(&reboot).await;
    hub.wait_for("ack of the retransmission", acked).await;
    let mut beats = 0;
    let (_, between) = hub
        .until("two heartbeats after the ack", |f| {
            beats += usize::from(matches!(f, Ok(Uplink::Heartbeat(_))));
            beats == 2
        })
        .await;
    assert!(
        !between.iter().any(|f| matches!(f, Ok(Uplink::Hello(_)))),
        "a retransmitted reboot must not reboot: {between:?}"
    );
    assert_eq!(setup.sim.link_counters().commands, 1, "executed once");

    // ResendState: acknowledged, then every reading.
    hub.send(&Downlink::Command(Command {
        id: 8,
        action: CommandAction::ResendState,
    }))
    .await;
    hub.wait_for("ack of resend", |m| {
        matches!(m, Uplink::Ack(Ack { command: 8, .. }))
    })
    .await;
    hub.wait_for(
        "full telemetry",
        |m| matches!(m, Uplink::Telemetry(t) if t.values.len() == names::ALL.len()),
    )
    .await;
    assert_eq!(setup.sim.stats().commands, 2);
    stop(setup).await;
}

/// Injects `fault`, then expects the first frame it damages to be refused as `refused` says,
/// and the frame after it to be intact.
async fn damaged_then_intact(
    hub: &mut HubEnd,
    sim: &SerialSimulation,
    fault: Fault,
    refused: impl Fn(&FrameError) -> bool,
) {
    sim.inject(fault);
    // Frames already on their way before the fault took effect arrive intact first.
    let (bad, _) = hub
        .until(&format!("a frame damaged by {fault:?}"), |f| f.is_err())
        .await;
    let error = bad.unwrap_err();
    assert!(refused(&error), "{fault:?}: {error:?}");
    let next = hub.next().await;
    assert!(
        next.is_ok(),
        "the frame after {fault:?} is intact: {next:?}"
    );
}

#[tokio::test]
async fn line_faults_damage_exactly_what_they_claim() {
    let setup = start_pty();
    let mut hub = HubEnd::open(&setup.link);
    hub.accept().await;
    let sim = &setup.sim;

    // One byte wrong: the CRC catches it, always.
    damaged_then_intact(&mut hub, sim, Fault::CorruptBytes, |e| {
        *e == FrameError::Crc
    })
    .await;
    // Half a frame: invalid COBS, too short or a wrong CRC.
    damaged_then_intact(&mut hub, sim, Fault::TruncateFrame, |e| {
        matches!(e, FrameError::Cobs | FrameError::TooShort | FrameError::Crc)
    })
    .await;
    // Noise glued to the next frame.
    damaged_then_intact(&mut hub, sim, Fault::LineNoise(24), |e| {
        matches!(e, FrameError::Cobs | FrameError::TooShort | FrameError::Crc)
    })
    .await;
    // Noise longer than any frame: reported as such.
    damaged_then_intact(&mut hub, sim, Fault::LineNoise(2000), |e| {
        matches!(e, FrameError::TooLong { .. })
    })
    .await;
    // Garbage is an intact frame with content the hub cannot read.
    damaged_then_intact(&mut hub, sim, Fault::SendGarbage, |e| {
        matches!(e, FrameError::UnknownMessage { .. })
    })
    .await;
    assert_eq!(sim.status().frames_damaged, 2, "corrupt + truncate");
    assert_eq!(sim.stats().garbage, 1);

    // A wrong baud rate: only garbage (with zeros in it, so several refused frames) for the
    // garbled frames, then intact frames again.
    sim.inject(Fault::BaudMismatch(3));
    let (_, _) = hub.until("garbled frames", |f| f.is_err()).await;
    let mut refused = 1;
    let mut intact_in_a_row = 0;
    while intact_in_a_row < 3 {
        match hub.next().await {
            Ok(_) => intact_in_a_row += 1,
            Err(_) => {
                assert_eq!(intact_in_a_row, 0, "garbage only while garbling");
                refused += 1;
            }
        }
    }
    assert!(
        refused >= 3,
        "three garbled frames hear as {refused} refused ones"
    );
    assert_eq!(sim.status().frames_damaged, 2 + 3);
    // Through all of it the module stayed accepted: damage is the hub's problem.
    assert!(sim.is_accepted());
    stop(setup).await;
}

#[tokio::test]
async fn a_stall_holds_the_line_and_nothing_is_lost() {
    let setup = start_pty();
    let mut hub = HubEnd::open(&setup.link);
    hub.accept().await;
    let stall = Duration::from_millis(1500);
    let injected = Instant::now();
    setup.sim.inject(Fault::Stall(stall));
    wait_status(&setup.sim, "the stall", |s| s.stalled).await;
    // The module does not read during the stall: the command waits in the line.
    hub.send(&Downlink::Command(Command {
        id: 21,
        action: CommandAction::ResendState,
    }))
    .await;
    let (_, before) = hub
        .until("the ack", |f| {
            matches!(f, Ok(Uplink::Ack(Ack { command: 21, .. })))
        })
        .await;
    assert!(injected.elapsed() >= stall, "answered only after the stall");
    // The heartbeats made during the stall were queued, not lost: consecutive seqs.
    let seqs: Vec<u32> = before
        .iter()
        .filter_map(|f| match f {
            Ok(Uplink::Heartbeat(h)) => Some(h.seq),
            _ => None,
        })
        .collect();
    assert!(seqs.len() >= 2, "{before:?}");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert!(!setup.sim.status().stalled);
    stop(setup).await;
}

#[tokio::test]
async fn the_hub_closing_and_reopening_the_port_gets_a_fresh_hello() {
    let setup = start_pty();
    let mut hub = HubEnd::open(&setup.link);
    hub.accept().await;
    wait_status(&setup.sim, "the hub", |s| s.hub_present).await;
    drop(hub);
    wait_status(&setup.sim, "the hub gone", |s| !s.hub_present).await;
    assert!(!setup.sim.is_accepted());
    // Same pty, same link: the module says hello as soon as the port is open again.
    let mut hub = HubEnd::open(&setup.link);
    hub.accept().await;
    assert_eq!(
        setup.sim.status().opens,
        1,
        "the line itself never went away"
    );
    assert_eq!(setup.sim.stats().connects, 2);
    stop(setup).await;
}

#[tokio::test]
async fn unplug_hangs_up_and_removes_the_link_replug_makes_a_new_pty() {
    let setup = start_pty();
    let first = setup.sim.pty_slave().unwrap();
    let mut hub = HubEnd::open(&setup.link);
    hub.accept().await;

    setup.sim.inject(Fault::Unplug);
    hub.hang_up().await;
    wait_status(&setup.sim, "unplugged", |s| !s.plugged).await;
    assert!(setup.link.symlink_metadata().is_err(), "the link is gone");
    assert!(!first.exists(), "and so is the slave");
    assert!(setup.sim.pty_slave().is_none());

    // Plugged in again: a new pty behind the same link; a fresh hello once the hub opens it.
    setup.sim.inject(Fault::Replug);
    wait_status(&setup.sim, "plugged in", |s| s.plugged).await;
    let second = setup.sim.pty_slave().unwrap();
    assert_eq!(target(&setup.link), second);
    let mut hub = HubEnd::open(&setup.link);
    hub.accept().await;

    // Replugged while in use: another /dev/pts/N; the hub's port hangs up.
    setup.sim.inject(Fault::Replug);
    hub.hang_up().await;
    wait_status(&setup.sim, "a third pty", |s| {
        s.pty_slave.as_ref().is_some_and(|p| *p != second)
    })
    .await;
    let third = setup.sim.pty_slave().unwrap();
    assert_eq!(target(&setup.link), third);
    assert!(!second.exists());
    let mut hub = HubEnd::open(&setup.link);
    hub.accept().await;
    let status = setup.sim.status();
    assert_eq!((status.opens, status.losses), (3, 0));
    stop(setup).await;
}

/// A "device" for `--serial`: a pty pair made by the test, whose master plays the hub, behind a
/// symlink that the test can re-point (as a by-id link follows a USB adapter).
struct Device {
    hub: HubEnd,
    /// Keeps the slave open on the test's side too, so the master never reads EIO while the
    /// module has it closed.
    _slave: SerialStream,
}

fn device(link: &Path) -> Device {
    let (master, slave) = SerialStream::pair().expect("pty pair");
    let path = tokio_serial::SerialPort::name(&slave).expect("slave name");
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(&path, link).unwrap();
    Device {
        hub: HubEnd::new(master),
        _slave: slave,
    }
}

#[tokio::test]
async fn a_device_is_opened_at_its_baud_and_reopened_when_it_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyUSB-sim");
    let mut adapter = device(&link);
    let shutdown = CancellationToken::new();
    let spec = format!("{}@57600", link.display());
    let sim = firmware_sim::start_serial(
        config(SerialLink::device(&spec).unwrap()),
        ModuleId::new(MODULE).unwrap(),
        shutdown.clone(),
    )
    .expect("start");
    assert!(
        sim.status().hub_present,
        "a device's far end is assumed there"
    );
    adapter.hub.accept().await;
    assert!(sim.pty_slave().is_none());

    // The adapter is pulled out: the module notices and retries; plugged in again (a new
    // device behind the same by-id link), it is reopened and says hello.
    drop(adapter);
    wait_status(&sim, "the loss", |s| s.losses == 1).await;
    let mut adapter = device(&link);
    wait_status(&sim, "the reopen", |s| s.opens == 2 && s.plugged).await;
    adapter.hub.accept().await;

    // Unplug and Replug by fault: closed, then opened again.
    sim.inject(Fault::Unplug);
    wait_status(&sim, "unplugged", |s| !s.plugged).await;
    sim.inject(Fault::Replug);
    wait_status(&sim, "replugged", |s| s.plugged && s.opens == 3).await;
    adapter.hub.accept().await;

    shutdown.cancel();
    timeout(DEADLINE, sim.stopped()).await.expect("stops");
    assert!(
        link.symlink_metadata().is_ok(),
        "a device's link is not ours to remove"
    );
}

#[tokio::test]
async fn start_refuses_what_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    let id = || ModuleId::new(MODULE).unwrap();
    let start = |link| firmware_sim::start_serial(config(link), id(), CancellationToken::new());

    let file = dir.path().join("file");
    std::fs::write(&file, "precious").unwrap();
    assert!(matches!(
        start(SerialLink::pty(&file)),
        Err(SimError::LinkPathOccupied(_))
    ));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
    assert!(matches!(
        start(SerialLink::pty(dir.path().join("missing/tty"))),
        Err(SimError::LinkPath { .. })
    ));
    assert!(matches!(
        start(SerialLink::device("/nonexistent/ttyUSB9").unwrap()),
        Err(SimError::OpenSerial { .. })
    ));
    let bad = SerialSimConfig {
        telemetry: Duration::ZERO,
        ..config(SerialLink::pty(dir.path().join("tty")))
    };
    assert!(matches!(
        firmware_sim::start_serial(bad, id(), CancellationToken::new()),
        Err(SimError::InvalidInterval { .. })
    ));
    // A stale symlink from a crashed run is replaced.
    let stale = dir.path().join("stale");
    std::os::unix::fs::symlink("/dev/pts/nonexistent", &stale).unwrap();
    let shutdown = CancellationToken::new();
    let sim = firmware_sim::start_serial(config(SerialLink::pty(&stale)), id(), shutdown.clone())
        .expect("a stale link is replaced");
    assert_eq!(Some(target(&stale)), sim.pty_slave());
    shutdown.cancel();
    timeout(DEADLINE, sim.stopped()).await.expect("stops");
}
