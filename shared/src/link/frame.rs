//! Frames: how a [`Uplink`]/[`Downlink`] message becomes bytes on the line and back.
//!
//! ```text
//! raw     = address (1 byte) | postcard(message) | CRC-16/CCITT-FALSE of address+message (LE)
//! on line = COBS(raw) | 0x00
//! ```
//!
//! The receiver feeds every byte to a [`FrameAccumulator`], which cuts frames at `0x00` and
//! discards (and reports) anything longer than [`MAX_ENCODED_LEN`]; [`decode_uplink`] /
//! [`decode_downlink`] then undo COBS, check the CRC, decode and validate. Any error concerns one
//! frame only: the next delimiter starts afresh.

use serde::{Serialize, de::DeserializeOwned};

use super::{
    LINK_VERSION, LinkError,
    cobs::{self, max_encoded_len},
    crc,
    message::{DOWNLINK_VARIANTS, Downlink, UPLINK_VARIANTS, Uplink},
};
use crate::{ProtocolError, message::Message};

/// Longest raw frame (address + message + CRC) either side sends or accepts. A hello with 32
/// reading names of 24 characters fits; a Cortex-M0 can afford two buffers of it.
pub const MAX_FRAME_LEN: usize = 1024;
/// Longest COBS-encoded frame, delimiter excluded: more bytes without a `0x00` are discarded.
pub const MAX_ENCODED_LEN: usize = max_encoded_len(MAX_FRAME_LEN);
/// Size of a buffer that holds any encoded frame with its delimiter.
pub const MAX_WIRE_LEN: usize = MAX_ENCODED_LEN + 1;
/// The frame delimiter.
pub const DELIMITER: u8 = 0x00;
/// Address of a module alone on its line (UART, USB CDC). RS-485 multidrop modules use
/// 1..=247; the hub answers to the address a frame came from.
pub const ADDRESS_POINT_TO_POINT: u8 = 0;
/// Highest multidrop address (the Modbus convention: 248..=254 reserved).
pub const ADDRESS_MAX: u8 = 247;
/// Reserved for hub → every module on a bus (no module answers a broadcast).
pub const ADDRESS_BROADCAST: u8 = 0xFF;

/// Why a frame was not used. Each maps to the [`LinkError`] reported to the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// More than [`MAX_ENCODED_LEN`] bytes before a delimiter (`len` of them were discarded).
    TooLong {
        /// Bytes discarded.
        len: usize,
    },
    /// Not valid COBS: the bytes were damaged on the line.
    Cobs,
    /// Too short to hold an address, a message and a CRC.
    TooShort,
    /// The CRC does not match.
    Crc,
    /// The message tag is not one this side knows.
    UnknownMessage {
        /// The first byte of the message (its tag, if below 0x80).
        tag: u8,
    },
    /// Intact frame, undecodable content (wrong field types, truncated, trailing bytes).
    Malformed,
    /// Decoded, but breaks a protocol rule (NaN reading, interval out of range...).
    Invalid(ProtocolError),
    /// A hello in a protocol version this side does not speak (the rest is not decoded).
    VersionMismatch {
        /// The version the hello announced.
        protocol: u8,
    },
    /// A hello that does not decode or breaks a rule (bad reading name, duplicate names,
    /// interval out of range): the hub refuses it ([`super::RefuseReason::InvalidHello`]).
    InvalidHello(ProtocolError),
    /// Encoding only: the message does not fit in [`MAX_FRAME_LEN`] or in the output buffer.
    Overflow,
}

impl FrameError {
    /// The error to report to the peer.
    pub const fn link_error(&self) -> LinkError {
        match self {
            Self::TooLong { .. } | Self::Overflow => LinkError::FrameTooLong,
            Self::Cobs | Self::TooShort | Self::Crc => LinkError::CrcMismatch,
            Self::UnknownMessage { .. } => LinkError::UnknownMessage,
            Self::Malformed | Self::Invalid(_) | Self::InvalidHello(_) => LinkError::Malformed,
            Self::VersionMismatch { .. } => LinkError::VersionMismatch {
                supported: LINK_VERSION,
            },
        }
    }

    /// A short stable label for metrics and logs.
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::TooLong { .. } => "frame_too_long",
            Self::Cobs => "cobs",
            Self::TooShort => "frame_too_short",
            Self::Crc => "crc_mismatch",
            Self::UnknownMessage { .. } => "unknown_message",
            Self::Malformed => "malformed",
            Self::Invalid(e) => e.reason(),
            Self::VersionMismatch { .. } => "version_mismatch",
            Self::InvalidHello(_) => "invalid_hello",
            Self::Overflow => "frame_overflow",
        }
    }
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TooLong { len } => write!(
                f,
                "frame too long ({len} bytes without delimiter, max {MAX_ENCODED_LEN})"
            ),
            Self::Cobs => f.write_str("corrupt frame (invalid COBS)"),
            Self::TooShort => f.write_str("frame too short"),
            Self::Crc => f.write_str("CRC mismatch"),
            Self::UnknownMessage { tag } => write!(f, "unknown message tag {tag}"),
            Self::Malformed => f.write_str("malformed message"),
            Self::Invalid(e) => write!(f, "invalid message: {e}"),
            Self::VersionMismatch { protocol } => write!(
                f,
                "hello in link protocol version {protocol} (this side speaks {LINK_VERSION})"
            ),
            Self::InvalidHello(e) => write!(f, "invalid hello: {e}"),
            Self::Overflow => f.write_str("message does not fit in a frame"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FrameError {}

/// Encodes a module → hub frame into `out` (delimiter included); returns the bytes to send.
pub fn encode_uplink<'a>(
    address: u8,
    msg: &Uplink,
    out: &'a mut [u8],
) -> Result<&'a [u8], FrameError> {
    encode(address, msg, out)
}

/// Encodes a hub → module frame into `out` (delimiter included); returns the bytes to send.
pub fn encode_downlink<'a>(
    address: u8,
    msg: &Downlink,
    out: &'a mut [u8],
) -> Result<&'a [u8], FrameError> {
    encode(address, msg, out)
}

/// [`encode_uplink`] into a new vector.
#[cfg(feature = "std")]
pub fn uplink_to_vec(address: u8, msg: &Uplink) -> Result<Vec<u8>, FrameError> {
    let mut out = [0u8; MAX_WIRE_LEN];
    Ok(encode_uplink(address, msg, &mut out)?.to_vec())
}

/// [`encode_downlink`] into a new vector.
#[cfg(feature = "std")]
pub fn downlink_to_vec(address: u8, msg: &Downlink) -> Result<Vec<u8>, FrameError> {
    let mut out = [0u8; MAX_WIRE_LEN];
    Ok(encode_downlink(address, msg, &mut out)?.to_vec())
}

fn encode<'a, M: Serialize>(
    address: u8,
    msg: &M,
    out: &'a mut [u8],
) -> Result<&'a [u8], FrameError> {
    let mut raw = [0u8; MAX_FRAME_LEN];
    raw[0] = address;
    let body_len = postcard::to_slice(msg, &mut raw[1..MAX_FRAME_LEN - 2])
        .map_err(|_| FrameError::Overflow)?
        .len();
    let crc_at = 1 + body_len;
    let crc = crc::crc16(&raw[..crc_at]).to_le_bytes();
    raw[crc_at..crc_at + 2].copy_from_slice(&crc);
    let raw_len = crc_at + 2;
    let n = cobs::encode(&raw[..raw_len], out).ok_or(FrameError::Overflow)?;
    *out.get_mut(n).ok_or(FrameError::Overflow)? = DELIMITER;
    Ok(&out[..=n])
}

/// Decodes a module → hub frame (the bytes between two delimiters; decoded in place):
/// the sender's address and the message.
///
/// A hello is looked at before it is decoded: its first field is the protocol version, in
/// every version, so a hello from a newer module is reported as [`FrameError::VersionMismatch`]
/// whatever the rest of it looks like; a hello that then fails to decode or breaks a rule is
/// [`FrameError::InvalidHello`], which the hub answers with a refusal rather than an error.
pub fn decode_uplink(frame: &mut [u8]) -> Result<(u8, Uplink), FrameError> {
    let (address, body) = open(frame, UPLINK_VARIANTS)?;
    let is_hello = body.first() == Some(&HELLO_TAG);
    if is_hello
        && let Some(&protocol) = body.get(1)
        && protocol != LINK_VERSION
    {
        return Err(FrameError::VersionMismatch { protocol });
    }
    let msg = match take_all::<Uplink>(body) {
        Ok(msg) => msg,
        Err(_) if is_hello => return Err(FrameError::InvalidHello(ProtocolError::Malformed)),
        Err(e) => return Err(e),
    };
    match &msg {
        Uplink::Hello(hello) => hello.validate().map_err(FrameError::InvalidHello)?,
        Uplink::Telemetry(t) => {
            if t.mask.count_ones() as usize != t.values.len() {
                return Err(FrameError::Invalid(ProtocolError::Malformed));
            }
            if t.values.iter().any(|v| !v.is_finite()) {
                return Err(FrameError::Invalid(ProtocolError::NonFiniteReading));
            }
        }
        Uplink::Heartbeat(_) | Uplink::Ack(_) | Uplink::Error(_) => {}
    }
    Ok((address, msg))
}

/// Decodes a hub → module frame (the bytes between two delimiters; decoded in place):
/// the destination address and the message.
pub fn decode_downlink(frame: &mut [u8]) -> Result<(u8, Downlink), FrameError> {
    let (address, body) = open(frame, DOWNLINK_VARIANTS)?;
    let msg = take_all::<Downlink>(body)?;
    if let Downlink::Command(command) = &msg {
        command.validate().map_err(FrameError::Invalid)?;
    }
    Ok((address, msg))
}

/// The tag of `Uplink::Hello`, frozen in every protocol version.
const HELLO_TAG: u8 = 0;

/// Undoes COBS and checks length, CRC and tag range; returns the address and the message bytes.
fn open(frame: &mut [u8], variants: u8) -> Result<(u8, &[u8]), FrameError> {
    if frame.len() > MAX_ENCODED_LEN {
        return Err(FrameError::TooLong { len: frame.len() });
    }
    let len = cobs::decode_in_place(frame).ok_or(FrameError::Cobs)?;
    let raw = &frame[..len];
    // address, at least a one-byte tag, CRC
    if raw.len() < 4 {
        return Err(FrameError::TooShort);
    }
    let (covered, crc_bytes) = raw.split_at(raw.len() - 2);
    if crc::crc16(covered).to_le_bytes() != [crc_bytes[0], crc_bytes[1]] {
        return Err(FrameError::Crc);
    }
    let (&address, body) = covered.split_first().ok_or(FrameError::TooShort)?;
    let tag = body.first().copied().ok_or(FrameError::TooShort)?;
    if tag >= variants {
        return Err(FrameError::UnknownMessage { tag });
    }
    Ok((address, body))
}

/// Decodes a message that must use every byte of `body`.
fn take_all<M: DeserializeOwned>(body: &[u8]) -> Result<M, FrameError> {
    let (msg, rest) = postcard::take_from_bytes::<M>(body).map_err(|_| FrameError::Malformed)?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed);
    }
    Ok(msg)
}

/// What [`FrameAccumulator::push`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Accumulated<'a> {
    /// A complete frame (without its delimiter), ready for `decode_*`.
    Frame(&'a mut [u8]),
    /// A run of bytes longer than [`MAX_ENCODED_LEN`] ended; it was discarded.
    Overflow {
        /// How many bytes were discarded.
        discarded: usize,
    },
}

/// Cuts a byte stream into frames at each `0x00`, whatever the reads' sizes. Bytes beyond
/// [`MAX_ENCODED_LEN`] without a delimiter are discarded up to the next delimiter and reported
/// once; empty frames (`0x00 0x00`) are skipped, so a sender may prefix frames with a `0x00` to
/// flush line noise.
#[derive(Debug)]
pub struct FrameAccumulator {
    buf: [u8; MAX_ENCODED_LEN],
    /// Bytes of the current frame in `buf`.
    len: usize,
    /// Bytes dropped since the current frame overflowed; 0 while not overflowing.
    discarded: usize,
    /// Where frames end: [`DELIMITER`] for COBS frames, `b'\n'` for JSON lines.
    delimiter: u8,
}

impl Default for FrameAccumulator {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameAccumulator {
    /// An empty accumulator for COBS frames (cut at `0x00`).
    pub const fn new() -> Self {
        Self::with_delimiter(DELIMITER)
    }

    /// An empty accumulator cutting at `delimiter` (`b'\n'` for [`super::json`] lines).
    pub const fn with_delimiter(delimiter: u8) -> Self {
        Self {
            buf: [0; MAX_ENCODED_LEN],
            len: 0,
            discarded: 0,
            delimiter,
        }
    }

    /// Takes one byte; returns a frame or an overflow report when `byte` is a delimiter.
    pub fn push(&mut self, byte: u8) -> Option<Accumulated<'_>> {
        if byte == self.delimiter {
            let len = core::mem::take(&mut self.len);
            let discarded = core::mem::take(&mut self.discarded);
            if discarded > 0 {
                return Some(Accumulated::Overflow { discarded });
            }
            if len == 0 {
                return None;
            }
            return Some(Accumulated::Frame(&mut self.buf[..len]));
        }
        if self.discarded > 0 {
            self.discarded += 1;
        } else if self.len == MAX_ENCODED_LEN {
            self.discarded = self.len + 1;
            self.len = 0;
        } else {
            self.buf[self.len] = byte;
            self.len += 1;
        }
        None
    }

    /// Drops a partial frame (the port was closed mid-frame); returns how many bytes it had.
    pub fn reset(&mut self) -> usize {
        let dropped = self.len + self.discarded;
        self.len = 0;
        self.discarded = 0;
        dropped
    }

    /// True when bytes of an unfinished frame are waiting for their delimiter.
    pub fn is_mid_frame(&self) -> bool {
        self.len > 0 || self.discarded > 0
    }
}
