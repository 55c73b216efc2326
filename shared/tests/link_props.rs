//! Properties of the serial link: any valid message survives encode → line → accumulator →
//! decode unchanged, whatever the read boundaries; no input makes a decoder or the accumulator
//! panic; damage to a frame is detected and never spoils the next frame.

use mc_protocol::{
    Command, CommandAction, FirmwareVersion, Heartbeat, ModuleId, ReadingName,
    link::{
        Accept, Accumulated, Ack, CommandResult, Downlink, FrameAccumulator, FrameError,
        LINK_VERSION, LinkError, LinkHello, LinkTelemetry, MAX_ENCODED_LEN, RefuseReason, Uplink,
        decode_downlink, decode_uplink, downlink_to_vec, uplink_to_vec,
    },
};
use proptest::prelude::*;

fn telemetry() -> impl Strategy<Value = Uplink> {
    (
        any::<u32>(),
        proptest::collection::vec(-1e9f32..1e9, 0..=32),
    )
        .prop_map(|(seq, vals)| {
            let mask = if vals.len() == 32 {
                u32::MAX
            } else {
                (1u32 << vals.len()) - 1
            };
            Uplink::Telemetry(LinkTelemetry {
                seq,
                mask,
                values: vals.into_iter().collect(),
            })
        })
}

fn hello() -> impl Strategy<Value = Uplink> {
    (
        "[A-Z0-9][A-Za-z0-9_-]{2,31}",
        "[ -~]{1,16}",
        100u32..=86_400_000,
        100u32..=86_400_000,
        proptest::collection::btree_set("[a-z][a-z0-9_.-]{0,23}", 0..=32),
    )
        .prop_map(|(id, fw, hb, tm, names)| {
            Uplink::Hello(LinkHello {
                protocol: LINK_VERSION,
                module: ModuleId::new(&id).unwrap(),
                fw: FirmwareVersion::new(&fw).unwrap(),
                heartbeat_ms: hb,
                telemetry_ms: tm,
                readings: names.iter().map(|n| ReadingName::new(n).unwrap()).collect(),
            })
        })
}

fn uplink() -> impl Strategy<Value = Uplink> {
    prop_oneof![
        hello(),
        (any::<u32>(), any::<u64>())
            .prop_map(|(seq, uptime_ms)| Uplink::Heartbeat(Heartbeat { seq, uptime_ms })),
        telemetry(),
        (any::<u32>(), 0..3u8).prop_map(|(command, r)| Uplink::Ack(Ack {
            command,
            result: [
                CommandResult::Done,
                CommandResult::InvalidArgument,
                CommandResult::Unsupported
            ][usize::from(r)],
        })),
        any::<u8>().prop_map(|v| Uplink::Error(LinkError::VersionMismatch { supported: v })),
    ]
}

fn downlink() -> impl Strategy<Value = Downlink> {
    let ms = 100u32..=86_400_000;
    prop_oneof![
        (any::<u8>(), ms.clone(), ms.clone()).prop_map(|(protocol, hb, tm)| Downlink::Accept(
            Accept {
                protocol,
                heartbeat_ms: hb,
                telemetry_ms: tm
            }
        )),
        (any::<u32>(), ms.clone()).prop_map(|(id, ms)| Downlink::Command(Command {
            id,
            action: CommandAction::SetHeartbeatInterval { ms }
        })),
        (any::<u32>(), ms).prop_map(|(id, ms)| Downlink::Command(Command {
            id,
            action: CommandAction::SetTelemetryInterval { ms }
        })),
        any::<u32>().prop_map(|id| Downlink::Command(Command {
            id,
            action: CommandAction::Reboot
        })),
        Just(Downlink::Refuse(RefuseReason::HandshakeRequired)),
        Just(Downlink::Error(LinkError::CrcMismatch)),
    ]
}

/// Feeds `line` to an accumulator in chunks of the given sizes; returns every frame's outcome.
fn feed_chunks(line: &[u8], chunks: &[usize]) -> Vec<Result<(u8, Uplink), FrameError>> {
    let mut acc = FrameAccumulator::new();
    let mut out = Vec::new();
    let mut rest = line;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        for &b in chunk {
            match acc.push(b) {
                Some(Accumulated::Frame(f)) => out.push(decode_uplink(f)),
                Some(Accumulated::Overflow { discarded }) => {
                    out.push(Err(FrameError::TooLong { len: discarded }))
                }
                None => {}
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn uplinks_round_trip_through_any_read_sizes(
        msgs in proptest::collection::vec((0u8..=247, uplink()), 1..8),
        chunks in proptest::collection::vec(1usize..64, 1..8),
    ) {
        let mut line = Vec::new();
        for (address, msg) in &msgs {
            line.extend(uplink_to_vec(*address, msg).unwrap());
        }
        let got = feed_chunks(&line, &chunks);
        let want: Vec<_> = msgs.into_iter().map(Ok).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn downlinks_round_trip(address in any::<u8>(), msg in downlink()) {
        let line = downlink_to_vec(address, &msg).unwrap();
        prop_assert!(line.len() <= MAX_ENCODED_LEN + 1);
        let mut frame = line[..line.len() - 1].to_vec();
        prop_assert_eq!(decode_downlink(&mut frame).unwrap(), (address, msg));
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut a = bytes.clone();
        let _ = decode_uplink(&mut a);
        let mut b = bytes.clone();
        let _ = decode_downlink(&mut b);
        let mut acc = FrameAccumulator::new();
        for byte in bytes {
            if let Some(Accumulated::Frame(f)) = acc.push(byte) {
                let _ = decode_uplink(f);
            }
        }
    }

    /// Any corruption of one data byte (not a COBS code byte, not into a delimiter) is caught
    /// by the CRC — guaranteed, a CRC-16 detects every error burst up to 16 bits — and the
    /// frame after it arrives intact.
    #[test]
    fn damage_is_detected_and_contained(
        first in uplink(),
        second in uplink(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut line = uplink_to_vec(0, &first).unwrap();
        let encoded = &line[..line.len() - 1];
        let mut code_bytes = vec![false; encoded.len()];
        let mut next_code = 0;
        while next_code < encoded.len() {
            code_bytes[next_code] = true;
            next_code += usize::from(encoded[next_code]);
        }
        let data: Vec<usize> = (0..encoded.len())
            .filter(|&i| !code_bytes[i] && encoded[i] != flip)
            .collect();
        prop_assume!(!data.is_empty());
        let i = data[at.index(data.len())];
        line[i] ^= flip;
        line.extend(uplink_to_vec(0, &second).unwrap());
        let got = feed_chunks(&line, &[7]);
        prop_assert_eq!(got.len(), 2);
        prop_assert_eq!(&got[0], &Err(FrameError::Crc));
        prop_assert_eq!(&got[1], &Ok((0, second)));
    }

    /// Garbage longer than a frame is discarded as one overflow, then framing recovers.
    #[test]
    fn overlong_garbage_is_discarded(extra in 1usize..3000, msg in uplink()) {
        let mut line = vec![0x55u8; MAX_ENCODED_LEN + extra];
        line.push(0);
        line.extend(uplink_to_vec(0, &msg).unwrap());
        let got = feed_chunks(&line, &[100]);
        prop_assert_eq!(got.len(), 2);
        prop_assert_eq!(&got[0], &Err(FrameError::TooLong { len: MAX_ENCODED_LEN + extra }));
        prop_assert_eq!(&got[1], &Ok((0, msg)));
    }
}

#[test]
fn rule_breaking_messages_are_refused_after_decoding() {
    // NaN reading.
    let nan = Uplink::Telemetry(LinkTelemetry {
        seq: 1,
        mask: 1,
        values: [f32::NAN].into_iter().collect(),
    });
    let mut frame = uplink_to_vec(0, &nan).unwrap();
    frame.pop();
    assert!(matches!(
        decode_uplink(&mut frame),
        Err(FrameError::Invalid(_))
    ));
    // Mask and values disagree.
    let bad_mask = Uplink::Telemetry(LinkTelemetry {
        seq: 1,
        mask: 0b111,
        values: [1.0].into_iter().collect(),
    });
    let mut frame = uplink_to_vec(0, &bad_mask).unwrap();
    frame.pop();
    assert!(matches!(
        decode_uplink(&mut frame),
        Err(FrameError::Invalid(_))
    ));
    // A command interval out of range.
    let cmd = Downlink::Command(Command {
        id: 1,
        action: CommandAction::SetHeartbeatInterval { ms: 5 },
    });
    let mut frame = downlink_to_vec(0, &cmd).unwrap();
    frame.pop();
    assert!(matches!(
        decode_downlink(&mut frame),
        Err(FrameError::Invalid(_))
    ));
}

#[test]
fn unknown_tags_are_reported_as_unknown_messages() {
    // A valid frame whose tag is one past the last uplink variant.
    let raw_body = [0u8, 5, 1, 2, 3];
    let crc = mc_protocol::link::crc::crc16(&raw_body).to_le_bytes();
    let mut raw = raw_body.to_vec();
    raw.extend(crc);
    let mut enc = [0u8; 16];
    let n = mc_protocol::link::cobs::encode(&raw, &mut enc).unwrap();
    assert_eq!(
        decode_uplink(&mut enc[..n]),
        Err(FrameError::UnknownMessage { tag: 5 })
    );
    assert_eq!(
        FrameError::UnknownMessage { tag: 5 }.link_error(),
        LinkError::UnknownMessage
    );
}

/// A hello is judged by its version before anything else: a newer module's hello, whatever it
/// carries after the version byte, is a version mismatch (never "malformed"), so every hub can
/// tell a newer module which version it speaks.
#[test]
fn hellos_are_checked_for_their_version_first() {
    let frame_of = |body: &[u8]| {
        let mut raw = vec![0u8];
        raw.extend_from_slice(body);
        let crc = mc_protocol::link::crc::crc16(&raw).to_le_bytes();
        raw.extend(crc);
        let mut enc = [0u8; 64];
        let n = mc_protocol::link::cobs::encode(&raw, &mut enc).unwrap();
        enc[..n].to_vec()
    };
    // tag 0 (hello), protocol 2, then fields version 1 does not know.
    let mut v2 = frame_of(&[0, 2, 0xAA, 0xBB, 0xCC]);
    assert_eq!(
        decode_uplink(&mut v2),
        Err(FrameError::VersionMismatch { protocol: 2 })
    );
    assert_eq!(
        FrameError::VersionMismatch { protocol: 2 }.link_error(),
        LinkError::VersionMismatch {
            supported: LINK_VERSION
        }
    );
    // A version 1 hello that does not decode (a reading name with a slash).
    let mut bad_name = frame_of(&[
        0, 1, 3, b'M', b'C', b'1', 1, b'1', 0x88, 0x27, 0xd0, 0x0f, 1, 3, b'a', b'/', b'b',
    ]);
    assert_eq!(
        decode_uplink(&mut bad_name),
        Err(FrameError::InvalidHello(
            mc_protocol::ProtocolError::Malformed
        ))
    );
    // A version 1 hello that decodes but breaks a rule (duplicate names).
    let dup = Uplink::Hello(LinkHello {
        protocol: LINK_VERSION,
        module: ModuleId::new("MC-1").unwrap(),
        fw: FirmwareVersion::new("1").unwrap(),
        heartbeat_ms: 5000,
        telemetry_ms: 2000,
        readings: ["t", "t"]
            .iter()
            .map(|n| ReadingName::new(n).unwrap())
            .collect(),
    });
    let mut frame = uplink_to_vec(0, &dup).unwrap();
    frame.pop();
    assert_eq!(
        decode_uplink(&mut frame),
        Err(FrameError::InvalidHello(
            mc_protocol::ProtocolError::DuplicateReading
        ))
    );
}

/// `LinkError::code` is the tag postcard puts on the wire (per-code counters index by it).
#[test]
fn link_error_codes_are_their_wire_tags() {
    let all = [
        LinkError::FrameTooLong,
        LinkError::CrcMismatch,
        LinkError::UnknownMessage,
        LinkError::VersionMismatch { supported: 1 },
        LinkError::Malformed,
    ];
    assert_eq!(all.len(), LinkError::CODES);
    for e in all {
        let mut frame = uplink_to_vec(0, &Uplink::Error(e)).unwrap();
        frame.pop();
        let n = mc_protocol::link::cobs::decode_in_place(&mut frame).unwrap();
        // address, Error tag (4), then the code's tag
        assert_eq!(usize::from(frame[..n][2]), e.code(), "{e:?}");
    }
}
