//! Golden bytes: these pin the native wire format. If one of these tests fails, the change breaks
//! every deployed module: bump `NATIVE_VERSION` instead of editing the expected bytes.

use mc_protocol::{
    Command, CommandAction, FirmwareVersion, Heartbeat, Hello, ProtocolError, Readings, Telemetry,
    codec::{self, Encoding, MAX_JSON_LEN, MAX_NATIVE_LEN, json, native},
};

fn hello() -> Hello {
    Hello {
        fw: FirmwareVersion::new("1.0.0").unwrap(),
        heartbeat_ms: 5000,
    }
}

fn telemetry() -> Telemetry {
    let mut readings = Readings::new();
    readings.push("temperature", 21.5).unwrap();
    readings.push("battery", 3.71).unwrap();
    Telemetry { seq: 42, readings }
}

#[test]
fn hello_golden() {
    let bytes = native::to_vec(&hello()).unwrap();
    // version, len 5, "1.0.0", varint 5000
    assert_eq!(
        bytes,
        [0x01, 0x05, b'1', b'.', b'0', b'.', b'0', 0x88, 0x27]
    );
    assert_eq!(native::decode::<Hello>(&bytes).unwrap(), hello());
}

#[test]
fn heartbeat_golden() {
    let hb = Heartbeat {
        seq: 7,
        uptime_ms: 1234,
    };
    let bytes = native::to_vec(&hb).unwrap();
    assert_eq!(bytes, [0x01, 0x07, 0xD2, 0x09]);
    assert_eq!(native::decode::<Heartbeat>(&bytes).unwrap(), hb);
}

#[test]
fn telemetry_golden() {
    let bytes = native::to_vec(&telemetry()).unwrap();
    let mut expected = vec![0x01, 42, 2, 11];
    expected.extend_from_slice(b"temperature");
    expected.extend_from_slice(&21.5f32.to_le_bytes());
    expected.push(7);
    expected.extend_from_slice(b"battery");
    expected.extend_from_slice(&3.71f32.to_le_bytes());
    assert_eq!(bytes, expected);
    assert_eq!(native::decode::<Telemetry>(&bytes).unwrap(), telemetry());
}

#[test]
fn command_golden() {
    let cmd = Command {
        id: 3,
        action: CommandAction::SetHeartbeatInterval { ms: 1000 },
    };
    assert_eq!(
        native::to_vec(&cmd).unwrap(),
        [0x01, 0x03, 0x00, 0xE8, 0x07]
    );
    let reboot = Command {
        id: 4,
        action: CommandAction::Reboot,
    };
    assert_eq!(native::to_vec(&reboot).unwrap(), [0x01, 0x04, 0x03]);
}

#[test]
fn json_matches_the_documented_contract() {
    assert_eq!(
        json::to_vec(&hello()).unwrap(),
        br#"{"fw":"1.0.0","heartbeatMs":5000}"#
    );
    assert_eq!(
        json::to_vec(&Heartbeat {
            seq: 7,
            uptime_ms: 1234
        })
        .unwrap(),
        br#"{"seq":7,"uptimeMs":1234}"#
    );
    assert_eq!(
        json::to_vec(&telemetry()).unwrap(),
        br#"{"seq":42,"readings":{"temperature":21.5,"battery":3.71}}"#
    );
    let cmd = Command {
        id: 3,
        action: CommandAction::SetHeartbeatInterval { ms: 1000 },
    };
    assert_eq!(
        json::to_vec(&cmd).unwrap(),
        br#"{"id":3,"action":{"setHeartbeatInterval":{"ms":1000}}}"#
    );
    assert_eq!(
        json::to_vec(&Command {
            id: 4,
            action: CommandAction::Reboot
        })
        .unwrap(),
        br#"{"id":4,"action":"reboot"}"#
    );
}

#[test]
fn detect_picks_the_encoding() {
    let native_bytes = native::to_vec(&telemetry()).unwrap();
    let json_bytes = json::to_vec(&telemetry()).unwrap();
    assert_eq!(Encoding::detect(&native_bytes), Encoding::Native);
    assert_eq!(Encoding::detect(&json_bytes), Encoding::Json);
    assert_eq!(
        codec::decode::<Telemetry>(&native_bytes).unwrap(),
        telemetry()
    );
    assert_eq!(
        codec::decode::<Telemetry>(&json_bytes).unwrap(),
        telemetry()
    );
    // seq 123 is 0x7B = '{' in postcard; the version byte keeps it unambiguous.
    let t = Telemetry {
        seq: 123,
        readings: Readings::new(),
    };
    assert_eq!(
        codec::decode::<Telemetry>(&native::to_vec(&t).unwrap()).unwrap(),
        t
    );
}

#[test]
fn non_finite_readings_are_typed_errors() {
    // JSON cannot spell NaN, but a number too big for f32 becomes infinite.
    let e = json::decode::<Telemetry>(br#"{"seq":1,"readings":{"t":1e39}}"#).unwrap_err();
    assert_eq!(e, ProtocolError::NonFiniteReading);
    // Native: hand-craft a NaN.
    let mut bytes = vec![0x01, 1, 1, 1, b't'];
    bytes.extend_from_slice(&f32::NAN.to_le_bytes());
    assert_eq!(
        native::decode::<Telemetry>(&bytes).unwrap_err(),
        ProtocolError::NonFiniteReading
    );
}

#[test]
fn rule_violations_are_typed_errors() {
    let dup = br#"{"seq":1,"readings":{"t":1,"t":2}}"#;
    assert_eq!(
        json::decode::<Telemetry>(dup).unwrap_err(),
        ProtocolError::DuplicateReading
    );
    let bad_name = br#"{"seq":1,"readings":{"a b":1}}"#;
    assert_eq!(
        json::decode::<Telemetry>(bad_name).unwrap_err(),
        ProtocolError::InvalidReadingName
    );
    let many: String = (0..40)
        .map(|i| format!("\"r{i}\":{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let many = format!(r#"{{"seq":1,"readings":{{{many}}}}}"#);
    assert_eq!(
        json::decode::<Telemetry>(many.as_bytes()).unwrap_err(),
        ProtocolError::TooManyReadings
    );
    let cmd = br#"{"id":1,"action":{"setTelemetryInterval":{"ms":0}}}"#;
    assert_eq!(
        json::decode::<Command>(cmd).unwrap_err(),
        ProtocolError::InvalidTelemetryInterval
    );
    let hello = br#"{"fw":"1.0.0","heartbeatMs":1}"#;
    assert_eq!(
        json::decode::<Hello>(hello).unwrap_err(),
        ProtocolError::InvalidHeartbeatInterval
    );
}

#[test]
fn malformed_and_oversized_inputs_are_refused() {
    for bad in [
        &b""[..],
        b"{",
        b"{}",
        br#"{"seq":"x","readings":{}}"#,
        br#"{"seq":1,"readings":{},"extra":1}"#,
        br#"{"seq":-1,"readings":{}}"#,
        b"{\"seq\":1,\"readings\":{\"t\xff\":1}}",
    ] {
        assert!(codec::decode::<Telemetry>(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        native::decode::<Heartbeat>(&[0x02, 1, 1]).unwrap_err(),
        ProtocolError::UnsupportedVersion(2)
    );
    assert_eq!(
        native::decode::<Heartbeat>(&[0x01, 0x07]).unwrap_err(),
        ProtocolError::Malformed
    );
    assert_eq!(
        native::decode::<Heartbeat>(&[0x01, 7, 1, 9]).unwrap_err(),
        ProtocolError::Malformed
    );
    let big = vec![0x01; MAX_NATIVE_LEN + 1];
    assert!(matches!(
        native::decode::<Heartbeat>(&big),
        Err(ProtocolError::TooLarge { .. })
    ));
    let mut big_json = b"{".to_vec();
    big_json.resize(MAX_JSON_LEN + 1, b' ');
    assert!(matches!(
        json::decode::<Heartbeat>(&big_json),
        Err(ProtocolError::TooLarge { .. })
    ));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn telemetry_round_trips_in_both_encodings(seq: u32, values in proptest::collection::vec(-1e6f32..1e6, 0..32)) {
            let mut readings = Readings::new();
            for (i, v) in values.iter().enumerate() {
                readings.push(&format!("r{i}"), *v).unwrap();
            }
            let t = Telemetry { seq, readings };
            prop_assert_eq!(native::decode::<Telemetry>(&native::to_vec(&t).unwrap()).unwrap(), t.clone());
            prop_assert_eq!(json::decode::<Telemetry>(&json::to_vec(&t).unwrap()).unwrap(), t);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = codec::decode::<Telemetry>(&bytes);
            let _ = codec::decode::<Hello>(&bytes);
            let _ = codec::decode::<Heartbeat>(&bytes);
            let _ = codec::decode::<Command>(&bytes);
        }
    }
}
