//! Golden vectors of the serial link: each message below, framed, must give exactly the bytes in
//! `hardware/vectors/link-v1.txt`, and those bytes must decode back to the message. The C
//! reference (`hardware/c/`) is tested against the same file, so Rust and C agree byte for byte.
//!
//! If one of these fails, the change breaks every deployed module: bump `LINK_VERSION` and add a
//! new vector file instead of editing this one. To write the file after a deliberate addition:
//! `MC_BLESS=1 cargo test -p mc-protocol --test link_vectors`.

use std::{fmt::Write as _, path::PathBuf};

use mc_protocol::{
    Command, CommandAction, FirmwareVersion, Heartbeat, ModuleId, ReadingName,
    link::{
        Accept, Ack, CommandResult, Downlink, LINK_VERSION, LinkError, LinkHello, LinkTelemetry,
        RefuseReason, Uplink, decode_downlink, decode_uplink, downlink_to_vec, uplink_to_vec,
    },
};

fn names(list: &[&str]) -> heapless::Vec<ReadingName, 32> {
    list.iter().map(|n| ReadingName::new(n).unwrap()).collect()
}

fn values(list: &[f32]) -> heapless::Vec<f32, 32> {
    list.iter().copied().collect()
}

/// Eight readings, as in the line-rate benchmark.
const EIGHT: [&str; 8] = [
    "temperature",
    "humidity",
    "battery",
    "rssi",
    "pressure",
    "wind",
    "rain",
    "solar",
];

fn uplinks() -> Vec<(&'static str, u8, Uplink)> {
    vec![
        (
            "hello",
            0,
            Uplink::Hello(LinkHello {
                protocol: LINK_VERSION,
                module: ModuleId::new("MC-1001-STN").unwrap(),
                fw: FirmwareVersion::new("1.0.0").unwrap(),
                heartbeat_ms: 5000,
                telemetry_ms: 2000,
                readings: names(&["temperature", "battery"]),
            }),
        ),
        (
            "hello_eight_readings",
            0,
            Uplink::Hello(LinkHello {
                protocol: LINK_VERSION,
                module: ModuleId::new("MC-1002-STN").unwrap(),
                fw: FirmwareVersion::new("2.1.0-rc1").unwrap(),
                heartbeat_ms: 1000,
                telemetry_ms: 1000,
                readings: names(&EIGHT),
            }),
        ),
        (
            "heartbeat",
            0,
            Uplink::Heartbeat(Heartbeat {
                seq: 7,
                uptime_ms: 1234,
            }),
        ),
        (
            "heartbeat_multidrop_address_5",
            5,
            Uplink::Heartbeat(Heartbeat {
                seq: 300,
                uptime_ms: 86_400_000,
            }),
        ),
        (
            "telemetry_two_readings",
            0,
            Uplink::Telemetry(LinkTelemetry {
                seq: 42,
                mask: 0b11,
                values: values(&[21.5, 3.71]),
            }),
        ),
        (
            "telemetry_changed_only",
            0,
            Uplink::Telemetry(LinkTelemetry {
                seq: 43,
                mask: 0b10,
                values: values(&[3.7]),
            }),
        ),
        (
            "telemetry_eight_readings",
            0,
            Uplink::Telemetry(LinkTelemetry {
                seq: 1000,
                mask: 0xFF,
                values: values(&[21.5, 48.25, 3.71, -67.0, 1013.25, 3.5, 0.0, 412.0]),
            }),
        ),
        (
            "ack_done",
            0,
            Uplink::Ack(Ack {
                command: 3,
                result: CommandResult::Done,
            }),
        ),
        (
            "ack_invalid_argument",
            0,
            Uplink::Ack(Ack {
                command: 200,
                result: CommandResult::InvalidArgument,
            }),
        ),
        (
            "error_crc_mismatch",
            0,
            Uplink::Error(LinkError::CrcMismatch),
        ),
        (
            "error_version_mismatch",
            0,
            Uplink::Error(LinkError::VersionMismatch { supported: 1 }),
        ),
    ]
}

fn downlinks() -> Vec<(&'static str, u8, Downlink)> {
    let command = |id, action| Downlink::Command(Command { id, action });
    vec![
        (
            "accept",
            0,
            Downlink::Accept(Accept {
                protocol: LINK_VERSION,
                heartbeat_ms: 5000,
                telemetry_ms: 2000,
            }),
        ),
        (
            "command_set_heartbeat_interval",
            0,
            command(3, CommandAction::SetHeartbeatInterval { ms: 1000 }),
        ),
        (
            "command_set_telemetry_interval",
            0,
            command(4, CommandAction::SetTelemetryInterval { ms: 500 }),
        ),
        (
            "command_resend_state",
            0,
            command(5, CommandAction::ResendState),
        ),
        (
            "command_reboot_address_5",
            5,
            command(6, CommandAction::Reboot),
        ),
        (
            "refuse_unknown_module",
            0,
            Downlink::Refuse(RefuseReason::UnknownModule),
        ),
        (
            "refuse_handshake_required",
            0,
            Downlink::Refuse(RefuseReason::HandshakeRequired),
        ),
        (
            "error_frame_too_long",
            0,
            Downlink::Error(LinkError::FrameTooLong),
        ),
        (
            "error_version_mismatch",
            0,
            Downlink::Error(LinkError::VersionMismatch { supported: 1 }),
        ),
    ]
}

fn vector_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../hardware/vectors/link-v1.txt")
}

fn render() -> String {
    let mut out = String::from(
        "# Golden vectors of the MC serial link, protocol version 1 (hardware/PROTOCOL.md).\n\
         # One per line: direction (up = module->hub, down = hub->module), name, the bytes on the\n\
         # line in hex (COBS frame and its 0x00 delimiter). Checked by shared/tests/link_vectors.rs\n\
         # and by the C reference (hardware/c/test_vectors.c). Never edit: add a new file.\n",
    );
    for (name, address, msg) in uplinks() {
        let bytes = uplink_to_vec(address, &msg).unwrap();
        writeln!(out, "up {name} {}", hex::encode(bytes)).unwrap();
    }
    for (name, address, msg) in downlinks() {
        let bytes = downlink_to_vec(address, &msg).unwrap();
        writeln!(out, "down {name} {}", hex::encode(bytes)).unwrap();
    }
    out
}

#[test]
fn frames_match_the_golden_file() {
    let expected = render();
    if std::env::var_os("MC_BLESS").is_some() {
        std::fs::write(vector_file(), &expected).unwrap();
    }
    let on_disk = std::fs::read_to_string(vector_file()).unwrap();
    assert_eq!(on_disk, expected, "the link wire format changed");
}

#[test]
fn golden_frames_decode_back() {
    let on_disk = std::fs::read_to_string(vector_file()).unwrap();
    let lines: Vec<_> = on_disk
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.split(' ');
            let dir = parts.next().unwrap();
            let name = parts.next().unwrap();
            let bytes = hex::decode(parts.next().unwrap()).unwrap();
            (dir.to_owned(), name.to_owned(), bytes)
        })
        .collect();
    for (name, address, msg) in uplinks() {
        let (_, _, bytes) = lines
            .iter()
            .find(|(d, n, _)| d == "up" && n == name)
            .unwrap();
        let (last, frame) = bytes.split_last().unwrap();
        assert_eq!(*last, 0, "{name}: delimiter");
        assert!(!frame.contains(&0), "{name}: no zero inside");
        let mut frame = frame.to_vec();
        assert_eq!(decode_uplink(&mut frame).unwrap(), (address, msg), "{name}");
    }
    for (name, address, msg) in downlinks() {
        let (_, _, bytes) = lines
            .iter()
            .find(|(d, n, _)| d == "down" && n == name)
            .unwrap();
        let mut frame = bytes[..bytes.len() - 1].to_vec();
        assert_eq!(
            decode_downlink(&mut frame).unwrap(),
            (address, msg),
            "{name}"
        );
    }
}

#[test]
fn eight_readings_fit_the_line_budget() {
    // 115200 baud 8N1 carries 11,520 bytes/s; 250 frames/s leaves 46 bytes per frame.
    let (_, _, msg) = uplinks()
        .into_iter()
        .find(|(n, _, _)| *n == "telemetry_eight_readings")
        .unwrap();
    let len = uplink_to_vec(0, &msg).unwrap().len();
    assert!(len <= 46, "{len} bytes");
}
