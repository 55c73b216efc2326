//! Faults injected on demand, per module, through [`crate::SimModule::inject`] (MQTT) or
//! [`crate::SerialSimulation::inject`] (serial line).
//!
//! They reproduce what goes wrong in the field, so the hub's liveness tracking, last-will
//! handling, duplicate filtering, frame checks and input validation can be tested on purpose
//! rather than by luck. Faults that concern the firmware (heartbeats, bursts) go to the state
//! machine, [`mc_firmware::ModuleCore`]; those that concern the link or the raw bytes are
//! handled by the transport task (`mqtt`, `serial`). A fault that means nothing on a module's
//! link (an MQTT disconnect on a serial line, a bit flip over MQTT) is ignored with a debug log.
//!
//! The byte-level damage done on a serial line is computed here, by pure functions over one
//! encoded frame (COBS bytes and delimiter), so that each claim in [`Fault`]'s documentation is
//! checked by a unit test against the protocol's own decoder.

use mc_protocol::link::{DELIMITER, MAX_FRAME_LEN, cobs, crc};
use rand::Rng;

/// A fault to inject into one simulated module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Stop sending heartbeats (telemetry continues): the hub should declare the module dead
    /// after its liveness timeout even though the connection is up.
    StopHeartbeats,
    /// Send a heartbeat now and resume the schedule.
    ResumeHeartbeats,
    /// Close the TCP connection without an MQTT DISCONNECT, as a power loss or a dead radio
    /// would: the broker publishes the `offline` last will. The module reconnects after
    /// [`crate::SimConfig::drop_pause`], or earlier on [`Fault::Reconnect`].
    DropConnection,
    /// Clean MQTT DISCONNECT (no last will); stay offline until [`Fault::Reconnect`].
    Disconnect,
    /// Connect now if offline (after `Disconnect` or during a `DropConnection` pause).
    Reconnect,
    /// Publish random bytes on the telemetry topic (never a valid message).
    SendGarbage,
    /// Publish the exact same payload as the last telemetry message again (same seq): a
    /// duplicate, as QoS 1 redelivery produces.
    RepeatTelemetry,
    /// Send this many telemetry messages back to back (consecutive seqs), each with every
    /// reading whether or not it changed.
    Burst(u32),

    // Serial line only: what a UART, a cable or a USB-serial adapter does wrong.
    /// Serial: damage the next frame the module sends: 1 to 8 random bits of one of its data
    /// bytes flip (never a COBS code byte, never into a `0x00`), so the frame still arrives
    /// whole, with one byte wrong. CRC-16 detects every error burst of up to 16 bits, so the
    /// hub always rejects it (`CrcMismatch`); the frame after it is intact.
    CorruptBytes,
    /// Serial: the next frame the module sends stops halfway: its first half, then a delimiter.
    /// The hub rejects it (invalid COBS, too short or CRC); the frame after it is intact.
    TruncateFrame,
    /// Serial: this many random bytes on the line now, between two frames, none of them a
    /// delimiter, as a noisy cable produces. The noise and the module's next frame reach the
    /// hub as one damaged frame (`CrcMismatch`, or `FrameTooLong` beyond 1029 bytes); the
    /// frame after that is intact.
    LineNoise(u32),
    /// Serial: the line stops for this long (a USB host not polling, a flow-control hold): the
    /// module neither reads nor writes. The firmware keeps running, so its frames queue up in
    /// the transmit queue while the hub's wait in the line; both flow at once afterwards.
    Stall(std::time::Duration),
    /// Serial: the next this many frames reach the hub the way a receiver at twice the
    /// module's baud rate hears them (a module at 57,600 on a hub at 115,200): every byte is
    /// resampled from its 8N1 waveform, framing errors read as `0x00`, so the hub sees short
    /// garbage frames and never a valid one. The garbage's tail may glue onto the next intact
    /// frame and spoil it too, as on a real line; the frames after that are intact.
    BaudMismatch(u32),
    /// Serial: pull the cable. `--pty`: the master closes (the hub's reads hit end of file or
    /// EIO, the `/dev/pts/N` node vanishes) and the symlink is removed; a device: the port is
    /// closed. The firmware loses its link (it says hello again once plugged in); the line
    /// stays unplugged until [`Fault::Replug`].
    Unplug,
    /// Serial: plug the cable in. `--pty`: a NEW pty pair, and the symlink re-pointed at its
    /// slave, as a USB adapter re-enumerates; the firmware says hello as soon as the hub opens
    /// it. A device: the port is opened again (retried with backoff while it fails). On a line
    /// that is plugged in: a pty is replaced, the new pair made before the old one closes (so
    /// it always gets another `/dev/pts/N`; the hub's open port hangs up); a device is closed
    /// and reopened.
    Replug,
}

impl Fault {
    /// True for the faults that only mean something on an MQTT connection.
    pub fn is_mqtt_only(&self) -> bool {
        matches!(
            self,
            Self::DropConnection | Self::Disconnect | Self::Reconnect
        )
    }

    /// True for the faults that only mean something on a serial line.
    pub fn is_serial_only(&self) -> bool {
        matches!(
            self,
            Self::CorruptBytes
                | Self::TruncateFrame
                | Self::LineNoise(_)
                | Self::Stall(_)
                | Self::BaudMismatch(_)
                | Self::Unplug
                | Self::Replug
        )
    }
}

/// Random bytes that no decoder accepts: the first byte is ≥ 0x80, so it is neither JSON (`{`)
/// nor a known native protocol version.
pub fn garbage(rng: &mut impl Rng) -> Vec<u8> {
    let len = rng.random_range(1..=64);
    let mut bytes = vec![0u8; len];
    rng.fill(&mut bytes[..]);
    bytes[0] |= 0x80;
    bytes
}

/// The receiver's rate over the module's in [`Fault::BaudMismatch`]: the hub samples twice as
/// fast as the module sends.
pub const WRONG_BAUD_SPEED: f64 = 2.0;

/// The positions of the COBS code bytes in an encoded frame (delimiter excluded); every other
/// byte is a data byte, copied verbatim from the raw frame.
fn cobs_code_positions(encoded: &[u8]) -> Vec<usize> {
    let mut codes = Vec::new();
    let mut at = 0;
    while at < encoded.len() {
        codes.push(at);
        // A code byte `c` is followed by `c - 1` data bytes; 0 never occurs in a valid frame.
        at += usize::from(encoded[at].max(1));
    }
    codes
}

/// [`Fault::CorruptBytes`]: `frame` (encoded, delimiter included) with 1 to 8 bits of one data
/// byte flipped. The result is still one frame of the same length, with no new `0x00`; it
/// differs from the original in one raw byte, which the CRC always catches.
pub fn corrupt_frame(frame: &[u8], rng: &mut impl Rng) -> Vec<u8> {
    let mut out = frame.to_vec();
    let encoded_len = frame.len().saturating_sub(1); // the delimiter stays
    let codes = cobs_code_positions(&frame[..encoded_len]);
    let data: Vec<usize> = (0..encoded_len).filter(|i| !codes.contains(i)).collect();
    // Every frame has data bytes (at least part of the CRC is non-zero); should one not, a
    // code byte is damaged instead, which breaks the COBS structure just as surely.
    let candidates = if data.is_empty() { codes } else { data };
    let Some(&at) = candidates.get(rng.random_range(0..candidates.len().max(1))) else {
        return out;
    };
    loop {
        let mask: u8 = rng.random_range(1..=u8::MAX);
        if out[at] ^ mask != DELIMITER {
            out[at] ^= mask;
            return out;
        }
    }
}

/// [`Fault::TruncateFrame`]: the first half of `frame`'s bytes, then a delimiter.
pub fn truncate_frame(frame: &[u8]) -> Vec<u8> {
    let encoded_len = frame.len().saturating_sub(1);
    let mut out = frame[..encoded_len / 2].to_vec();
    out.push(DELIMITER);
    out
}

/// [`Fault::LineNoise`]: `n` random bytes, none of them a delimiter.
pub fn line_noise(n: usize, rng: &mut impl Rng) -> Vec<u8> {
    (0..n).map(|_| rng.random_range(1..=u8::MAX)).collect()
}

/// [`Fault::SendGarbage`] on a serial line: an intact frame (valid COBS and CRC, from
/// `address`) whose content is [`garbage`]. Its first byte, the message tag, is at least
/// 0x80, so the hub reports it as an unknown message: the line worked, the content is wrong.
pub fn garbage_frame(address: u8, rng: &mut impl Rng) -> Vec<u8> {
    let mut raw = vec![address];
    raw.extend(garbage(rng));
    raw.extend(crc::crc16(&raw).to_le_bytes());
    let mut out = vec![0u8; cobs::max_encoded_len(MAX_FRAME_LEN) + 1];
    let n = cobs::encode(&raw, &mut out).unwrap_or(0);
    out.truncate(n);
    out.push(DELIMITER);
    out
}

/// The 8N1 waveform of `bytes`, one entry per bit time: per byte a start bit (low), 8 data
/// bits least significant first, a stop bit (high).
fn uart_bits(bytes: &[u8]) -> Vec<bool> {
    let mut bits = Vec::with_capacity(bytes.len() * 10);
    for &byte in bytes {
        bits.push(false);
        bits.extend((0..8).map(|i| byte >> i & 1 == 1));
        bits.push(true);
    }
    bits
}

/// [`Fault::BaudMismatch`]: what a UART receiving at `speed` times the sender's baud rate reads
/// from `bytes` sent at 8N1. The receiver waits for the line to go low (a start bit), checks it
/// half a bit later, samples 8 data bits in the middle of its own bit times and then the stop
/// bit; a low stop bit is a framing error, which a Linux tty in raw mode delivers as `0x00`.
/// Between bytes and after the last one the line idles high.
pub fn heard_at_wrong_baud(bytes: &[u8], speed: f64) -> Vec<u8> {
    let bits = uart_bits(bytes);
    // Time is counted in the sender's bit times.
    let level = |t: f64| -> bool {
        let i = t.floor();
        i < 0.0 || bits.get(i as usize).copied().unwrap_or(true)
    };
    let bit = 1.0 / speed; // one receiver bit time
    let mut heard = Vec::new();
    let mut t = 0.0_f64;
    loop {
        // The next low level at or after `t`.
        let mut i = t.floor() as usize;
        while i < bits.len() && bits[i] {
            i += 1;
        }
        if i >= bits.len() {
            return heard;
        }
        let start = t.max(i as f64);
        if level(start + bit / 2.0) {
            t = start + bit / 2.0; // a glitch, not a start bit
            continue;
        }
        let mut byte = 0u8;
        for j in 0..8 {
            if level(start + (f64::from(j) + 1.5) * bit) {
                byte |= 1 << j;
            }
        }
        let stop = start + 9.5 * bit;
        heard.push(if level(stop) { byte } else { 0x00 });
        t = stop;
    }
}

#[cfg(test)]
mod tests {
    use mc_protocol::{
        Heartbeat, Telemetry, codec,
        link::{FrameAccumulator, FrameError, LinkTelemetry, Uplink, decode_uplink, uplink_to_vec},
    };
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    /// Frames of every size the module sends: a heartbeat, a full telemetry message.
    fn frames() -> Vec<Vec<u8>> {
        let heartbeat = Uplink::Heartbeat(Heartbeat {
            seq: 7,
            uptime_ms: 1234,
        });
        let telemetry = Uplink::Telemetry(LinkTelemetry {
            seq: 42,
            mask: 0b1_1111,
            values: [21.5, 48.0, 3.9, -71.0, 1013.2].into_iter().collect(),
        });
        [heartbeat, telemetry]
            .iter()
            .map(|m| uplink_to_vec(0, m).unwrap())
            .collect()
    }

    /// Everything a hub's receiver makes of `line`: one result per frame.
    fn receive(line: &[u8]) -> Vec<Result<(u8, Uplink), FrameError>> {
        let mut acc = FrameAccumulator::new();
        let mut out = Vec::new();
        for &b in line {
            match acc.push(b) {
                None => {}
                Some(mc_protocol::link::Accumulated::Frame(f)) => out.push(decode_uplink(f)),
                Some(mc_protocol::link::Accumulated::Overflow { discarded }) => {
                    out.push(Err(FrameError::TooLong { len: discarded }))
                }
            }
        }
        out
    }

    #[test]
    fn corrupted_frames_always_fail_the_crc_and_stay_one_frame() {
        let mut rng = StdRng::seed_from_u64(1);
        for frame in frames() {
            for _ in 0..2000 {
                let bad = corrupt_frame(&frame, &mut rng);
                assert_eq!(bad.len(), frame.len());
                assert_eq!(bad.iter().filter(|b| **b == 0).count(), 1, "{bad:02x?}");
                assert_eq!(bad.iter().zip(&frame).filter(|(a, b)| a != b).count(), 1);
                let mut line = bad;
                line.extend(&frame);
                let got = receive(&line);
                assert_eq!(got.len(), 2);
                assert_eq!(
                    got[0],
                    Err(FrameError::Crc),
                    "one byte wrong: the CRC says so"
                );
                assert!(got[1].is_ok(), "the next frame is intact");
            }
        }
    }

    #[test]
    fn truncated_frames_fail_and_the_next_one_is_intact() {
        for frame in frames() {
            let mut line = truncate_frame(&frame);
            assert!(line.len() < frame.len());
            line.extend(&frame);
            let got = receive(&line);
            assert_eq!(got.len(), 2);
            assert!(got[0].is_err());
            assert!(got[1].is_ok());
        }
    }

    #[test]
    fn noise_spoils_the_next_frame_only() {
        let mut rng = StdRng::seed_from_u64(2);
        for n in [1, 10, 200, 2000] {
            let noise = line_noise(n, &mut rng);
            assert_eq!(noise.len(), n);
            assert!(!noise.contains(&0));
            for frame in frames() {
                let mut line = noise.clone();
                line.extend(&frame);
                line.extend(&frame);
                let got = receive(&line);
                assert_eq!(got.len(), 2, "noise and the first frame arrive as one");
                assert!(got[0].is_err());
                if n > 1000 {
                    assert!(matches!(got[0], Err(FrameError::TooLong { .. })));
                }
                assert!(got[1].is_ok());
            }
        }
    }

    #[test]
    fn garbage_frames_are_intact_but_unknown() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..1000 {
            let mut frame = garbage_frame(0, &mut rng);
            assert_eq!(frame.pop(), Some(0));
            assert!(!frame.contains(&0));
            assert!(matches!(
                decode_uplink(&mut frame),
                Err(FrameError::UnknownMessage { tag }) if tag >= 0x80
            ));
        }
    }

    #[test]
    fn the_right_baud_rate_hears_every_byte() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(heard_at_wrong_baud(&bytes, 1.0), bytes);
    }

    #[test]
    fn a_wrong_baud_rate_hears_garbage_with_zeros_and_never_a_frame() {
        for frame in frames() {
            let heard = heard_at_wrong_baud(&frame, WRONG_BAUD_SPEED);
            assert!(heard.len() > frame.len(), "twice as fast: more bytes");
            assert!(
                heard.iter().filter(|b| **b == 0).count() > 1,
                "{heard:02x?}"
            );
            assert!(receive(&heard).iter().all(Result::is_err), "{heard:02x?}");
        }
        // A hub at half the module's rate hears fewer bytes, garbage too.
        let slow = heard_at_wrong_baud(&frames()[1], 0.5);
        assert!(slow.len() < frames()[1].len());
        assert_ne!(slow, frames()[1]);
    }

    #[test]
    fn garbage_never_decodes() {
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let bytes = garbage(&mut rng);
            assert!(!bytes.is_empty() && bytes.len() <= 64);
            assert!(codec::decode::<Telemetry>(&bytes).is_err());
        }
    }
}
