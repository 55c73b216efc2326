//! Modules on serial ports, against the real hub over real pseudo-terminals.
//!
//! The test plays the module on the master side of a pty pair; the hub opens the slave through
//! a symlink in the test's temp dir (as `/dev/serial/by-id/...`), so "unplug" drops the pair
//! and "replug" makes a new pair and re-points the symlink, without restarting the hub.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mc_e2e::{DEADLINE, Dashboard, TestHub, about, eventually, start_hub};
use mc_hub::config::{Framing, SerialPortSpec};
use mc_protocol::{
    Command, CommandAction, FirmwareVersion, Heartbeat, ModuleId, ReadingName,
    link::{
        self, Accept, Accumulated, Ack, CommandResult, Downlink, FrameAccumulator, LINK_VERSION,
        LinkError, LinkHello, LinkTelemetry, MAX_ENCODED_LEN, RefuseReason, Uplink,
    },
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, WriteHalf},
    sync::mpsc,
    task::JoinHandle,
};
use tokio_serial::{SerialPort, SerialStream};

/// The readings every test module announces, in index order.
const READINGS: [&str; 2] = ["temperature", "humidity"];
/// Long enough that no session expires or times out during a test.
const HEARTBEAT_MS: u32 = 60_000;

/// One end of a serial cable: the module's side of a pty pair whose other side the hub opens
/// through a symlink.
struct Cable {
    writer: WriteHalf<SerialStream>,
    /// Bytes written so far.
    sent: u64,
    downlinks: mpsc::UnboundedReceiver<(u8, Downlink)>,
    /// Every byte the hub wrote, as it came.
    line: Arc<Mutex<Vec<u8>>>,
    reader: JoinHandle<()>,
    /// Kept open so that the master never reads EIO while the hub has the slave closed.
    _slave: SerialStream,
}

impl Cable {
    /// A new pty pair, with `link` (re-)pointed at its slave.
    fn plug(link: &Path) -> Self {
        let (master, slave) = SerialStream::pair().expect("pty pair");
        let slave_path = slave.name().expect("slave pty path");
        let staged = link.with_extension("new");
        let _ = std::fs::remove_file(&staged);
        std::os::unix::fs::symlink(&slave_path, &staged).expect("symlink");
        std::fs::rename(&staged, link).expect("re-point symlink");
        let (mut rd, writer) = tokio::io::split(master);
        let (tx, downlinks) = mpsc::unbounded_channel();
        let line = Arc::new(Mutex::new(Vec::new()));
        let seen = line.clone();
        let reader = tokio::spawn(async move {
            let mut frames = FrameAccumulator::new();
            let mut buf = [0u8; 512];
            while let Ok(n @ 1..) = rd.read(&mut buf).await {
                seen.lock().expect("line").extend_from_slice(&buf[..n]);
                for &byte in &buf[..n] {
                    match frames.push(byte) {
                        Some(Accumulated::Frame(frame)) => {
                            let decoded = link::decode_downlink(frame).expect("hub frames decode");
                            let _ = tx.send(decoded);
                        }
                        Some(Accumulated::Overflow { .. }) => {
                            panic!("the hub sent an overlong frame")
                        }
                        None => {}
                    }
                }
            }
        });
        Self {
            writer,
            sent: 0,
            downlinks,
            line,
            reader,
            _slave: slave,
        }
    }

    /// Pulls the plug: both ends of the pty close.
    fn unplug(self) {
        self.reader.abort();
    }

    /// What the hub writes when it opens the port: a delimiter (whatever a write cut short
    /// left on the line ends there), then `Refuse(HandshakeRequired)` to address 0, so that a
    /// module with a long heartbeat interval says hello at once.
    async fn told_to_say_hello(&mut self) {
        let refusal = Downlink::Refuse(RefuseReason::HandshakeRequired);
        self.expect(refusal.clone()).await;
        let mut expected = vec![0x00];
        expected.extend(link::downlink_to_vec(0, &refusal).expect("encodes"));
        assert_eq!(self.line(), expected);
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write to pty");
        self.sent += bytes.len() as u64;
    }

    async fn send(&mut self, address: u8, message: &Uplink) {
        let frame = link::uplink_to_vec(address, message).expect("encodes");
        self.send_raw(&frame).await;
    }

    /// The next frame from the hub.
    async fn next(&mut self) -> (u8, Downlink) {
        match tokio::time::timeout(DEADLINE, self.downlinks.recv()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => panic!("cable reader stopped"),
            Err(_) => panic!("nothing from the hub within {DEADLINE:?}"),
        }
    }

    /// Asserts that the next frame from the hub is `expected`, to address 0.
    async fn expect(&mut self, expected: Downlink) {
        assert_eq!(self.next().await, (0, expected));
    }

    /// Every byte the hub wrote so far.
    fn line(&self) -> Vec<u8> {
        self.line.lock().expect("line").clone()
    }

    /// Says hello as `id` at address 0 and expects the hub's `Accept`.
    async fn hello_accepted(&mut self, id: &str) {
        self.send(0, &hello(id)).await;
        self.expect(accept(HEARTBEAT_MS)).await;
    }

    /// Hello, `Accept`, and the heartbeat the firmware sends right after it: the hub now
    /// knows the line works both ways, and the module is online.
    async fn online(&mut self, id: &str) {
        self.hello_accepted(id).await;
        self.send(0, &heartbeat(1)).await;
    }

    /// The frames up to the next `Accept` (of a hello with `heartbeat_ms`): the commands
    /// before it, in order.
    async fn commands_until_accept(&mut self, heartbeat_ms: u32) -> Vec<Command> {
        let mut commands = Vec::new();
        loop {
            match self.next().await {
                (0, Downlink::Command(command)) => commands.push(command),
                (0, accepted) if accepted == accept(heartbeat_ms) => return commands,
                other => panic!("expected commands, then an Accept; got {other:?}"),
            }
        }
    }

    async fn telemetry(&mut self, seq: u32, mask: u32, values: &[f32]) {
        let message = Uplink::Telemetry(LinkTelemetry {
            seq,
            mask,
            values: heapless::Vec::from_slice(values).expect("fits"),
        });
        self.send(0, &message).await;
    }
}

fn hello(id: &str) -> Uplink {
    let mut readings = heapless::Vec::new();
    for name in READINGS {
        readings
            .push(ReadingName::new(name).expect("valid"))
            .expect("fits");
    }
    Uplink::Hello(LinkHello {
        protocol: LINK_VERSION,
        module: ModuleId::new(id).expect("valid id"),
        fw: FirmwareVersion::new("2.1.0").expect("valid"),
        heartbeat_ms: HEARTBEAT_MS,
        telemetry_ms: 1_000,
        readings,
    })
}

/// The hub's answer to a hello announcing `heartbeat_ms` (it echoes the module's intervals).
fn accept(heartbeat_ms: u32) -> Downlink {
    Downlink::Accept(Accept {
        protocol: LINK_VERSION,
        heartbeat_ms,
        telemetry_ms: 1_000,
    })
}

fn hello_every(id: &str, heartbeat_ms: u32) -> Uplink {
    let Uplink::Hello(mut hello) = hello(id) else {
        unreachable!()
    };
    hello.heartbeat_ms = heartbeat_ms;
    Uplink::Hello(hello)
}

fn heartbeat(seq: u32) -> Uplink {
    Uplink::Heartbeat(Heartbeat {
        seq,
        uptime_ms: u64::from(seq) * 1_000,
    })
}

/// A hub serving one serial port at `<temp dir>/ttyMC0` (a symlink), the cable plugged in,
/// an admin with a dashboard, and the port open (its first words read).
struct Bench {
    t: TestHub,
    dash: Dashboard,
    cable: Cable,
    link: PathBuf,
    _dir: tempfile::TempDir,
}

async fn bench(modules: &[&str]) -> Bench {
    let dir = tempfile::tempdir().expect("temp dir");
    let link = dir.path().join("ttyMC0");
    let cable = Cable::plug(&link);
    let spec = SerialPortSpec {
        path: link.clone(),
        baud: 115_200,
        framing: Framing::Binary,
    };
    let t = start_hub(|c| c.serial = vec![spec]).await;
    t.add_user("admin@x.io", true).await;
    for id in modules {
        t.add_module(id, None).await;
    }
    let dash = t.dashboard("admin@x.io").await;
    let bench = Bench {
        t,
        dash,
        cable,
        link,
        _dir: dir,
    };
    let port = bench.port();
    eventually("the hub opens the serial port", || port.is_open()).await;
    let mut bench = bench;
    bench.cable.told_to_say_hello().await;
    bench
}

impl Bench {
    fn port(&self) -> std::sync::Arc<mc_hub::metrics::SerialPortMetrics> {
        self.t.hub.metrics.serial_port(&self.link.to_string_lossy())
    }

    async fn admin(&self) -> String {
        self.t.login("admin@x.io").await
    }
}

/// An `rt_telemetry_updated` payload without what differs between modules by nature.
fn shape(mut event: Value) -> Value {
    let fields = event.as_object_mut().expect("object");
    fields.remove("moduleId");
    assert!(fields.remove("ts").is_some_and(|ts| ts.is_string()));
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_module_goes_online_and_its_telemetry_diff_matches_mqtt() {
    let mut b = bench(&["MC-SER-1"]).await;
    let password = b.t.add_module("MC-MQTT-1", None).await;
    b.cable.online("MC-SER-1").await;
    let online = b.dash.expect("rt_module_online", about("MC-SER-1")).await;
    assert_eq!(online["fw"], "2.1.0");
    assert_eq!(online["heartbeatMs"], HEARTBEAT_MS);

    let mqtt = b.t.module("MC-MQTT-1", &password).await;
    mqtt.hello(HEARTBEAT_MS).await;
    b.dash.expect("rt_module_online", about("MC-MQTT-1")).await;

    // Full telemetry, then a partial one (report by exception), then one that changes nothing:
    // the same readings over MQTT give the same events.
    b.cable.telemetry(1, 0b11, &[21.5, 40.25]).await;
    let serial_full = b
        .dash
        .expect("rt_telemetry_updated", about("MC-SER-1"))
        .await;
    mqtt.telemetry(1, json!({"temperature": 21.5, "humidity": 40.25}))
        .await;
    let mqtt_full = b
        .dash
        .expect("rt_telemetry_updated", about("MC-MQTT-1"))
        .await;
    assert_eq!(
        serial_full["telemetry"],
        json!({"temperature": 21.5, "humidity": 40.25})
    );
    assert_eq!(shape(serial_full), shape(mqtt_full));

    b.cable.telemetry(2, 0b01, &[21.75]).await;
    b.cable.telemetry(3, 0b11, &[21.75, 40.25]).await; // no change: no event
    b.cable.telemetry(4, 0b10, &[41.0]).await;
    mqtt.telemetry(2, json!({"temperature": 21.75})).await;
    mqtt.telemetry(3, json!({"temperature": 21.75, "humidity": 40.25}))
        .await;
    mqtt.telemetry(4, json!({"humidity": 41.0})).await;
    let by_module = |id: &'static str, seen: &[(String, Value)]| -> Vec<Value> {
        seen.iter()
            .filter(|(e, d)| e == "rt_telemetry_updated" && d["moduleId"] == id)
            .map(|(_, d)| shape(d.clone()))
            .collect()
    };
    // Both modules' last updates, in whichever order the two transports deliver them.
    let at_rev_3 = |seen: &[(String, Value)], id: &str| {
        seen.iter()
            .any(|(e, d)| e == "rt_telemetry_updated" && d["moduleId"] == id && d["rev"] == 3)
    };
    let mut seen = Vec::new();
    while !(at_rev_3(&seen, "MC-SER-1") && at_rev_3(&seen, "MC-MQTT-1")) {
        seen.push(b.dash.next().await);
    }
    let serial = by_module("MC-SER-1", &seen);
    assert_eq!(serial.len(), 2, "{seen:?}");
    assert_eq!(
        serial[0],
        json!({"telemetry": {"temperature": 21.75}, "rev": 2})
    );
    assert_eq!(serial, by_module("MC-MQTT-1", &seen));

    // The snapshot says how each live module is connected.
    let admin = b.admin().await;
    let (status, body) = b.t.call(&admin, "GET", "/api/modules", None).await;
    assert_eq!(status, 200);
    let module = |id: &str| {
        body["modules"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["moduleId"] == id).cloned())
            .expect("listed")
    };
    let serial = module("MC-SER-1");
    assert_eq!(serial["transport"], "serial");
    assert_eq!(serial["online"], true);
    assert_eq!(
        serial["readings"],
        json!({"temperature": 21.75, "humidity": 41.0})
    );
    assert_eq!(module("MC-MQTT-1")["transport"], "mqtt");

    let port = b.port();
    assert_eq!(port.frames_in.get(), 6, "hello, heartbeat, 4 telemetry");
    assert_eq!(port.frames_out.get(), 2, "the refusal at open, the Accept");
    assert_eq!(port.frame_errors.get(), 0);
}

/// A raw frame (address 0, `body`, CRC), COBS-encoded with its delimiter: for messages the
/// typed encoder cannot produce.
fn raw_frame(body: &[u8]) -> Vec<u8> {
    let mut raw = vec![0u8];
    raw.extend_from_slice(body);
    let crc = link::crc::crc16(&raw).to_le_bytes();
    raw.extend_from_slice(&crc);
    let mut out = vec![0u8; raw.len() + raw.len() / 254 + 2];
    let n = link::cobs::encode(&raw, &mut out).expect("fits");
    out.truncate(n);
    out.push(0);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_counted_and_the_next_frame_still_works() {
    let mut b = bench(&["MC-SER-2"]).await;
    b.cable.online("MC-SER-2").await;
    b.dash.expect("rt_module_online", about("MC-SER-2")).await;
    let metrics = b.t.hub.metrics.clone();

    // Garbage: not even valid COBS (code 0x13 announces more bytes than there are).
    b.cable.send_raw(&[0x13, 0x37, 0x42, 0x00]).await;
    b.cable
        .expect(Downlink::Error(LinkError::CrcMismatch))
        .await;
    // Line noise: one flipped bit in the heartbeat of PROTOCOL.md §2.
    let mut noisy = vec![0x01, 0x06, 0x01, 0x07, 0xd2, 0x09, 0x44, 0x01, 0x00];
    noisy[3] ^= 0x01;
    b.cable.send_raw(&noisy).await;
    b.cable
        .expect(Downlink::Error(LinkError::CrcMismatch))
        .await;
    // A truncated frame: the first half of a telemetry frame, then a delimiter.
    let frame = link::uplink_to_vec(
        0,
        &Uplink::Telemetry(LinkTelemetry {
            seq: 9,
            mask: 0b11,
            values: heapless::Vec::from_slice(&[1.0, 2.0]).expect("fits"),
        }),
    )
    .expect("encodes");
    b.cable.send_raw(&frame[..frame.len() / 2]).await;
    b.cable.send_raw(&[0x00]).await;
    b.cable
        .expect(Downlink::Error(LinkError::CrcMismatch))
        .await;
    // Intact frames with a message tag from the future, and with an undecodable body.
    b.cable.send_raw(&raw_frame(&[0x09, 0x01])).await;
    b.cable
        .expect(Downlink::Error(LinkError::UnknownMessage))
        .await;
    b.cable.send_raw(&raw_frame(&[0x01, 0x80])).await;
    b.cable.expect(Downlink::Error(LinkError::Malformed)).await;
    // A hello from a newer module (its version byte first, then whatever that version says),
    // and a hello that breaks a rule: told which version to speak, and refused.
    b.cable
        .send_raw(&raw_frame(&[0x00, 0x02, 0xff, 0xff, 0x07]))
        .await;
    b.cable
        .expect(Downlink::Error(LinkError::VersionMismatch {
            supported: LINK_VERSION,
        }))
        .await;
    let Uplink::Hello(mut too_fast) = hello("MC-SER-2") else {
        unreachable!()
    };
    too_fast.heartbeat_ms = 1;
    b.cable.send(0, &Uplink::Hello(too_fast)).await;
    b.cable
        .expect(Downlink::Refuse(RefuseReason::InvalidHello))
        .await;
    // An oversized run without delimiter: discarded, reported once at the next delimiter.
    b.cable.send_raw(&vec![0x01; MAX_ENCODED_LEN + 100]).await;
    b.cable.send_raw(&[0x00]).await;
    b.cable
        .expect(Downlink::Error(LinkError::FrameTooLong))
        .await;

    // The port task is neither stalled nor confused: the next frames decode normally.
    b.cable.send(0, &heartbeat(1)).await;
    b.cable.telemetry(1, 0b01, &[19.5]).await;
    let update = b
        .dash
        .expect("rt_telemetry_updated", about("MC-SER-2"))
        .await;
    assert_eq!(update["telemetry"], json!({"temperature": 19.5}));

    let port = b.port();
    assert_eq!(port.frame_errors.get(), 8);
    assert_eq!(port.error_replies_suppressed.get(), 0);
    // Garbage, noise and truncation: damaged COBS or a wrong CRC, depending on the bytes.
    assert_eq!(
        metrics.rejected("cobs")
            + metrics.rejected("crc_mismatch")
            + metrics.rejected("frame_too_short"),
        3
    );
    assert_eq!(metrics.rejected("unknown_message"), 1);
    assert_eq!(metrics.rejected("malformed"), 1);
    assert_eq!(metrics.rejected("version_mismatch"), 1);
    assert_eq!(metrics.rejected("invalid_hello"), 1);
    assert_eq!(metrics.rejected("frame_too_long"), 1);
    // Nothing else came back: the next reply is the one to this.
    b.cable.send(0, &heartbeat(2)).await;
    b.cable.send_raw(&[0xff, 0x00]).await;
    b.cable
        .expect(Downlink::Error(LinkError::CrcMismatch))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_without_handshake_unknown_or_disabled_are_refused() {
    let mut b = bench(&["MC-OFF-1", "MC-SER-3"]).await;
    let admin = b.admin().await;

    // Traffic before a hello: say hello first (to the address it came from).
    b.cable.send(0, &heartbeat(1)).await;
    b.cable
        .expect(Downlink::Refuse(RefuseReason::HandshakeRequired))
        .await;
    b.cable.send(4, &heartbeat(1)).await;
    assert_eq!(
        b.cable.next().await,
        (4, Downlink::Refuse(RefuseReason::HandshakeRequired))
    );

    // Unknown: refused, and listed for admins as pending with the port it came from.
    b.cable.send(0, &hello("MC-NEW-9")).await;
    b.cable
        .expect(Downlink::Refuse(RefuseReason::UnknownModule))
        .await;
    let (status, pending) = b.t.call(&admin, "GET", "/api/admin/pending", None).await;
    assert_eq!(status, 200);
    assert_eq!(pending["modules"][0]["moduleId"], "MC-NEW-9");
    assert_eq!(
        pending["modules"][0]["lastAddress"],
        format!("serial:{}", b.link.display())
    );

    // Disabled: refused.
    let (status, _) =
        b.t.call(
            &admin,
            "PATCH",
            "/api/modules/MC-OFF-1",
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, 200);
    b.cable.send(0, &hello("MC-OFF-1")).await;
    b.cable
        .expect(Downlink::Refuse(RefuseReason::Disabled))
        .await;
    assert_eq!(b.t.hub.metrics.rejected("module_disabled"), 1);
    assert_eq!(b.t.hub.metrics.rejected("handshake_required"), 2);

    // A live module says hello again (e.g. after a new heartbeat interval): a new session,
    // as an MQTT reconnect, without an offline flap.
    b.cable.online("MC-SER-3").await;
    b.dash.expect("rt_module_online", about("MC-SER-3")).await;
    b.cable.hello_accepted("MC-SER-3").await;
    b.cable.telemetry(1, 0b10, &[60.0]).await;
    let seen = b
        .dash
        .until("rt_telemetry_updated", about("MC-SER-3"))
        .await;
    assert!(
        !seen
            .iter()
            .any(|(e, _)| e == "rt_module_offline" || e == "rt_module_online"),
        "{seen:?}"
    );

    // A token rotation leaves its serial link up (it has no token)...
    let (status, _) =
        b.t.call(&admin, "POST", "/api/modules/MC-SER-3/token", None)
            .await;
    assert_eq!(status, 200);
    // (the rename is applied after the rotation: its event is the barrier)
    let (status, _) =
        b.t.call(
            &admin,
            "PATCH",
            "/api/modules/MC-SER-3",
            Some(json!({"name": "renamed"})),
        )
        .await;
    assert_eq!(status, 200);
    let seen = b.dash.until("rt_module_updated", about("MC-SER-3")).await;
    assert!(
        !seen.iter().any(|(e, _)| e == "rt_module_offline"),
        "{seen:?}"
    );
    b.cable.telemetry(2, 0b01, &[5.0]).await;
    b.dash
        .expect("rt_telemetry_updated", about("MC-SER-3"))
        .await;

    // ...while disabling it closes the link: the module is told, and offline at once.
    let (status, _) =
        b.t.call(
            &admin,
            "PATCH",
            "/api/modules/MC-SER-3",
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, 200);
    b.cable
        .expect(Downlink::Refuse(RefuseReason::Disabled))
        .await;
    let offline = b.dash.expect("rt_module_offline", about("MC-SER-3")).await;
    assert_eq!(offline["reason"], "connection_lost");
    b.cable.send(0, &heartbeat(2)).await;
    b.cable
        .expect(Downlink::Refuse(RefuseReason::HandshakeRequired))
        .await;
}

/// Posts a command for `MC-SER-4` in a task (a serial command waits for the module's ack,
/// which the test gives on the line meanwhile).
fn spawn_command(b: &Bench, cookie: &str, action: Value) -> JoinHandle<(u16, Value)> {
    let url = format!("{}/api/modules/MC-SER-4/commands", b.t.url);
    let cookie = cookie.to_owned();
    tokio::spawn(async move {
        let response = reqwest::Client::new()
            .post(url)
            .header("cookie", cookie)
            .json(&json!({ "action": action }))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    })
}

/// The next frame is a command to address 0; returns it.
async fn next_command(cable: &mut Cable) -> mc_protocol::Command {
    match cable.next().await {
        (0, Downlink::Command(command)) => command,
        other => panic!("expected a command, got {other:?}"),
    }
}

fn ack(command: u32, result: CommandResult) -> Uplink {
    Uplink::Ack(Ack { command, result })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_go_down_the_line_and_wait_for_the_ack() {
    let mut b = bench(&["MC-SER-4"]).await;
    b.cable.online("MC-SER-4").await;
    b.dash.expect("rt_module_online", about("MC-SER-4")).await;
    let admin = b.admin().await;

    // Acknowledged at once: 200 with the module's result.
    let request = spawn_command(&b, &admin, json!({"setTelemetryInterval": {"ms": 2000}}));
    let sent = next_command(&mut b.cable).await;
    assert_eq!(
        sent.action,
        CommandAction::SetTelemetryInterval { ms: 2000 }
    );
    b.cable.send(0, &ack(sent.id, CommandResult::Done)).await;
    let (status, body) = request.await.expect("request task");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "id": sent.id,
            "moduleId": "MC-SER-4",
            "action": {"setTelemetryInterval": {"ms": 2000}},
            "result": "done",
        })
    );

    // The first copy is lost: the hub sends the same id again; the module's answer counts.
    let request = spawn_command(&b, &admin, json!("reboot"));
    let first = next_command(&mut b.cable).await;
    let again = next_command(&mut b.cable).await;
    assert_eq!(again, first, "same command, same id");
    b.cable
        .send(0, &ack(first.id, CommandResult::Unsupported))
        .await;
    let (status, body) = request.await.expect("request task");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "unsupported");
    assert_eq!(body["id"], first.id);

    // Never acknowledged: three attempts, then 504 with the API's error shape.
    let started = Instant::now();
    let request = spawn_command(&b, &admin, json!("resendState"));
    let attempts = [
        next_command(&mut b.cable).await,
        next_command(&mut b.cable).await,
        next_command(&mut b.cable).await,
    ];
    assert!(attempts.iter().all(|c| *c == attempts[0]), "{attempts:?}");
    let (status, body) = request.await.expect("request task");
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "timeout");
    assert!(body["error"]["message"].is_string());
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited for the acks"
    );

    // No fourth copy: the next frame on the line is the next command.
    let request = spawn_command(&b, &admin, json!({"setHeartbeatInterval": {"ms": 30000}}));
    let next = next_command(&mut b.cable).await;
    assert_ne!(next.id, attempts[0].id);
    b.cable
        .send(0, &ack(next.id, CommandResult::InvalidArgument))
        .await;
    let (status, body) = request.await.expect("request task");
    assert_eq!((status, &body["result"]), (200, &json!("invalidArgument")));

    // Unchanged for MQTT modules: published, 202, no result.
    let password = b.t.add_module("MC-MQTT-4", None).await;
    let mqtt = b.t.module("MC-MQTT-4", &password).await;
    mqtt.hello(HEARTBEAT_MS).await;
    b.dash.expect("rt_module_online", about("MC-MQTT-4")).await;
    let (status, body) =
        b.t.call(
            &admin,
            "POST",
            "/api/modules/MC-MQTT-4/commands",
            Some(json!({"action": "reboot"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(body.get("result").is_none(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_hello_keeps_the_queued_commands_and_acknowledges_a_reboot() {
    let mut b = bench(&["MC-SER-4"]).await;
    b.cable.online("MC-SER-4").await;
    b.dash.expect("rt_module_online", about("MC-SER-4")).await;
    let admin = b.admin().await;

    // A new heartbeat interval, and a command queued behind it.
    let first = spawn_command(&b, &admin, json!({"setHeartbeatInterval": {"ms": 30000}}));
    let interval = next_command(&mut b.cable).await;
    let second = spawn_command(&b, &admin, json!("resendState"));
    // (the first is sent again after 1 s: by then the second waits behind it at the port)
    assert_eq!(next_command(&mut b.cable).await, interval);
    // The module acknowledges and announces the new interval in one write: the queued
    // command goes down the line before the Accept of the new session...
    let mut write =
        link::uplink_to_vec(0, &ack(interval.id, CommandResult::Done)).expect("encodes");
    write.extend(link::uplink_to_vec(0, &hello_every("MC-SER-4", 30_000)).expect("encodes"));
    b.cable.send_raw(&write).await;
    let before_accept = b.cable.commands_until_accept(30_000).await;
    let queued = before_accept
        .iter()
        .find(|c| c.id != interval.id)
        .cloned()
        .expect("the queued command was sent");
    assert_eq!(queued.action, CommandAction::ResendState);
    // ...the module runs it and acknowledges it in its new session: both callers get 200.
    b.cable.send(0, &ack(queued.id, CommandResult::Done)).await;
    for request in [first, second] {
        let (status, body) = request.await.expect("request task");
        assert_eq!((status, &body["result"]), (200, &json!("done")), "{body}");
    }

    // A reboot whose ack is lost: the module's hello after the reboot is its answer.
    let request = spawn_command(&b, &admin, json!("reboot"));
    let reboot = next_command(&mut b.cable).await;
    assert_eq!(reboot.action, CommandAction::Reboot);
    b.cable.send(0, &hello("MC-SER-4")).await;
    let resent = b.cable.commands_until_accept(HEARTBEAT_MS).await;
    assert!(resent.iter().all(|c| *c == reboot), "{resent:?}");
    let (status, body) = request.await.expect("request task");
    assert_eq!((status, &body["result"]), (200, &json!("done")), "{body}");
    assert_eq!(body["id"], reboot.id);
    // No offline flap through all this: the module was online, and still is.
    b.cable.telemetry(1, 0b01, &[18.0]).await;
    let seen = b
        .dash
        .until("rt_telemetry_updated", about("MC-SER-4"))
        .await;
    assert!(
        !seen.iter().any(|(e, _)| e == "rt_module_offline"),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_that_never_hears_the_accept_stays_offline() {
    let mut b = bench(&["MC-SER-6"]).await;
    let admin = b.admin().await;
    // The hub's transmit line is broken (or its baud rate wrong in that direction): the
    // module never hears the Accept and keeps saying hello. (The test reads the Accepts only
    // to know that the hub has handled each hello.)
    for _ in 0..3 {
        b.cable.hello_accepted("MC-SER-6").await;
    }
    // Barrier: an MQTT module coming online after that. The serial module never went online
    // (nor, therefore, offline).
    let password = b.t.add_module("MC-MQTT-6", None).await;
    let mqtt = b.t.module("MC-MQTT-6", &password).await;
    mqtt.hello(HEARTBEAT_MS).await;
    let seen = b.dash.until("rt_module_online", about("MC-MQTT-6")).await;
    // (Its rt_module_added may come late: the registry watcher polls for changes the test
    // made straight in the store.)
    assert!(
        !seen
            .iter()
            .any(|(e, d)| d["moduleId"] == "MC-SER-6" && e != "rt_module_added"),
        "{seen:?}"
    );
    let (status, body) =
        b.t.call(
            &admin,
            "POST",
            "/api/modules/MC-SER-6/commands",
            Some(json!({"action": "resendState"})),
        )
        .await;
    assert_eq!(
        (status, &body["queued"]),
        (202, &json!(true)),
        "offline: queued {body}"
    );

    // Line repaired: the heartbeat the firmware sends right after the Accept brings it online.
    b.cable.send(0, &heartbeat(1)).await;
    let online = b.dash.expect("rt_module_online", about("MC-SER-6")).await;
    assert_eq!(online["heartbeatMs"], HEARTBEAT_MS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_for_a_serial_module_whose_link_just_ended_is_not_published_over_mqtt() {
    let mut b = bench(&["MC-SER-7"]).await;
    b.cable.online("MC-SER-7").await;
    b.dash.expect("rt_module_online", about("MC-SER-7")).await;
    let admin = b.admin().await;
    // The moment after its port task deregistered the session (port lost, session closed)
    // and before the tracker hears of it: still online, no live link.
    let id: ModuleId = "MC-SER-7".parse().expect("id");
    let (session, _) = b.t.hub.connections.link(&id).expect("a live link");
    b.t.hub.connections.remove(&id, session);
    let (status, body) =
        b.t.call(
            &admin,
            "POST",
            "/api/modules/MC-SER-7/commands",
            Some(json!({"action": "resendState"})),
        )
        .await;
    // Queued for when its link is back, not published over MQTT (it would be lost).
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["queued"], true, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplugged_goes_offline_at_once_and_replugged_comes_back_without_a_restart() {
    let Bench {
        t,
        mut dash,
        mut cable,
        link,
        _dir,
    } = bench(&["MC-SER-5"]).await;
    let port = t.hub.metrics.serial_port(&link.to_string_lossy());
    cable.online("MC-SER-5").await;
    dash.expect("rt_module_online", about("MC-SER-5")).await;
    cable.telemetry(1, 0b11, &[20.0, 50.0]).await;
    dash.expect("rt_telemetry_updated", about("MC-SER-5")).await;
    // Half a frame is on the line when the cable goes.
    let frame = link::uplink_to_vec(0, &heartbeat(2)).expect("encodes");
    cable.send_raw(&frame[..4]).await;
    let sent = cable.sent;
    eventually("the hub reads the partial frame", || {
        port.bytes_in.get() == sent
    })
    .await;

    // Unplugged: the device node and its by-id symlink disappear, the hub's read fails.
    let unplugged = Instant::now();
    std::fs::remove_file(&link).expect("remove symlink");
    cable.unplug();
    let offline = dash.expect("rt_module_offline", about("MC-SER-5")).await;
    assert_eq!(offline["reason"], "connection_lost");
    let took = unplugged.elapsed();
    // Its liveness timeout is 3 minutes: only the lost port explains this.
    assert!(took < Duration::from_secs(10), "offline after {took:?}");
    eventually("the port is seen closed", || !port.is_open()).await;
    let admin = t.login("admin@x.io").await;
    let (_, body) = t.call(&admin, "GET", "/api/modules", None).await;
    assert_eq!(body["modules"][0]["online"], false, "{body}");
    assert!(body["modules"][0].get("transport").is_none(), "{body}");
    let (status, queued) = t
        .call(
            &admin,
            "POST",
            "/api/modules/MC-SER-5/commands",
            Some(json!({"action": "reboot"})),
        )
        .await;
    assert_eq!(status, 202, "offline: queued {queued}");
    eventually("the hub keeps trying to reopen", || {
        port.open_failures.get() >= 1
    })
    .await;

    // Replugged (a new pty behind the same symlink): the hub reopens the port by itself and
    // tells the module at once to say hello; its heartbeats are refused until it does, then
    // it is back.
    let mut cable = Cable::plug(&link);
    eventually("the port is reopened", || {
        port.is_open() && port.reopens.get() == 1
    })
    .await;
    assert_eq!(port.partial_frames_dropped.get(), 1);
    cable.told_to_say_hello().await;
    cable.send(0, &heartbeat(3)).await;
    cable
        .expect(Downlink::Refuse(RefuseReason::HandshakeRequired))
        .await;
    cable.online("MC-SER-5").await;
    dash.expect("rt_module_online", about("MC-SER-5")).await;
    // The command queued while it was unplugged comes down the line now.
    let (address, Downlink::Command(command)) = cable.next().await else {
        panic!("expected the queued command");
    };
    assert_eq!(address, 0);
    assert_eq!(json!(command.id), queued["id"]);
    assert_eq!(command.action, mc_protocol::CommandAction::Reboot);
    cable.send(0, &ack(command.id, CommandResult::Done)).await;
    cable.telemetry(1, 0b01, &[20.5]).await;
    let update = dash.expect("rt_telemetry_updated", about("MC-SER-5")).await;
    assert_eq!(update["telemetry"], json!({"temperature": 20.5}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_lines_port_speaks_the_same_conversation_one_line_at_a_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let link = dir.path().join("ttyJSON0");
    let (master, slave) = SerialStream::pair().expect("pty pair");
    std::os::unix::fs::symlink(slave.name().expect("slave path"), &link).expect("symlink");
    let spec: SerialPortSpec = format!("{}@9600:json", link.display())
        .parse()
        .expect("spec");
    let t = start_hub(|c| c.serial = vec![spec]).await;
    t.add_user("admin@x.io", true).await;
    t.add_module("MC-JSON-1", None).await;
    let mut dash = t.dashboard("admin@x.io").await;
    let port = t.hub.metrics.serial_port(&link.to_string_lossy());
    eventually("the hub opens the serial port", || port.is_open()).await;

    let (rd, mut wr) = tokio::io::split(master);
    let mut lines = tokio::io::BufReader::new(rd);
    // The next line that is not empty (each of the hub's writes starts with a "\n", which ends
    // whatever an earlier write cut short left on the line).
    let mut next_line = async || {
        loop {
            let mut line = String::new();
            tokio::time::timeout(
                DEADLINE,
                tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line),
            )
            .await
            .expect("a line from the hub in time")
            .expect("read");
            if line != "\n" {
                return line;
            }
        }
    };
    // Said at once when the port opens...
    assert_eq!(next_line().await, "{\"refuse\":\"handshakeRequired\"}\n");
    // ...and to any traffic before a hello.
    wr.write_all(b"{\"heartbeat\":{\"seq\":1,\"uptimeMs\":5}}\r\n")
        .await
        .expect("write");
    assert_eq!(next_line().await, "{\"refuse\":\"handshakeRequired\"}\n");
    wr.write_all(
        b"{\"hello\":{\"protocol\":1,\"module\":\"MC-JSON-1\",\"fw\":\"0.9\",\"heartbeatMs\":60000,\"telemetryMs\":2000}}\n",
    )
    .await
    .expect("write");
    assert_eq!(
        next_line().await,
        "{\"accept\":{\"protocol\":1,\"heartbeatMs\":60000,\"telemetryMs\":2000}}\n"
    );
    wr.write_all(b"{\"heartbeat\":{\"seq\":2,\"uptimeMs\":6}}\n")
        .await
        .expect("write");
    let online = dash.expect("rt_module_online", about("MC-JSON-1")).await;
    assert_eq!(online["fw"], "0.9");
    wr.write_all(b"Serial.println(oops)\n")
        .await
        .expect("write");
    assert_eq!(next_line().await, "{\"error\":\"crcMismatch\"}\n");
    wr.write_all(b"{\"telemetry\":{\"seq\":1,\"readings\":{\"soil\":0.25,\"lux\":800}}}\n")
        .await
        .expect("write");
    let update = dash
        .expect("rt_telemetry_updated", about("MC-JSON-1"))
        .await;
    assert_eq!(update["telemetry"], json!({"soil": 0.25, "lux": 800.0}));
    // A telemetry line that names a reading twice is a bad line, not a bad hello: the module
    // keeps its session (a refusal would make it start over).
    wr.write_all(b"{\"telemetry\":{\"seq\":2,\"readings\":{\"soil\":0.5,\"soil\":0.6}}}\n")
        .await
        .expect("write");
    assert_eq!(next_line().await, "{\"error\":\"malformed\"}\n");
    wr.write_all(b"{\"telemetry\":{\"seq\":3,\"readings\":{\"soil\":0.5}}}\n")
        .await
        .expect("write");
    let seen = dash.until("rt_telemetry_updated", about("MC-JSON-1")).await;
    assert!(
        !seen.iter().any(|(e, _)| e == "rt_module_offline"),
        "{seen:?}"
    );
    assert_eq!(
        seen.last().expect("barrier").1["telemetry"],
        json!({"soil": 0.5})
    );
    drop(slave);
}
