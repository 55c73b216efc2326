//! What travels on a serial link: [`Uplink`] (module → hub) and [`Downlink`] (hub → module).
//!
//! Postcard encodes an enum as its variant index (a varint) followed by the fields in declaration
//! order, so **variant and field order are the wire format**: new variants go at the end, and
//! `Uplink::Hello` stays variant 0 with `protocol` as its first field forever, so that any future
//! hub can read an old module's hello and answer with a version mismatch.

use serde::{Deserialize, Serialize};

use crate::{
    Command, FirmwareVersion, Heartbeat, ModuleId, ProtocolError, ReadingName, Readings, Telemetry,
    message::{HEARTBEAT_MS_RANGE, MAX_READINGS, TELEMETRY_MS_RANGE},
};

/// The version of the link protocol described in `hardware/PROTOCOL.md`.
pub const LINK_VERSION: u8 = 1;

/// Module → hub.
#[allow(
    clippy::large_enum_variant,
    reason = "no allocator on firmware; a message is built, encoded and dropped"
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Uplink {
    /// 0 — the handshake: sent when the link comes up, after a `Refuse`, and until accepted.
    Hello(LinkHello),
    /// 1 — still alive.
    Heartbeat(Heartbeat),
    /// 2 — readings, by index into the hello's reading list.
    Telemetry(LinkTelemetry),
    /// 3 — a command was carried out (or refused).
    Ack(Ack),
    /// 4 — a frame from the hub could not be used.
    Error(LinkError),
}

/// Number of [`Uplink`] variants: a tag at or above it is an unknown message.
pub const UPLINK_VARIANTS: u8 = 5;

/// Hub → module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Downlink {
    /// 0 — the hello is accepted; run with these settings.
    Accept(Accept),
    /// 1 — do something; answer with an [`Ack`] carrying the same id.
    Command(Command),
    /// 2 — a frame from the module could not be used.
    Error(LinkError),
    /// 3 — the module is not (or no longer) accepted; it should say hello again later.
    Refuse(RefuseReason),
}

/// Number of [`Downlink`] variants.
pub const DOWNLINK_VARIANTS: u8 = 4;

/// The module's birth certificate on a serial link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkHello {
    /// The link protocol version the module speaks ([`LINK_VERSION`]). First field, forever.
    pub protocol: u8,
    /// Who it is; must be registered in the hub (a serial port is trusted like a cable).
    pub module: ModuleId,
    /// Firmware version.
    pub fw: FirmwareVersion,
    /// Interval between heartbeats; the hub derives the module's liveness timeout from it.
    pub heartbeat_ms: u32,
    /// Interval between telemetry samples.
    pub telemetry_ms: u32,
    /// The reading names, once: telemetry then refers to them by index, which keeps a telemetry
    /// frame with 8 readings at about 43 bytes on the line.
    pub readings: heapless::Vec<ReadingName, MAX_READINGS>,
}

impl LinkHello {
    /// Checks ranges and unique reading names (the protocol version is the hub's business).
    pub fn validate(&self) -> Result<(), ProtocolError> {
        if !HEARTBEAT_MS_RANGE.contains(&self.heartbeat_ms) {
            return Err(ProtocolError::InvalidHeartbeatInterval);
        }
        if !TELEMETRY_MS_RANGE.contains(&self.telemetry_ms) {
            return Err(ProtocolError::InvalidTelemetryInterval);
        }
        for (i, name) in self.readings.iter().enumerate() {
            if self.readings[..i].contains(name) {
                return Err(ProtocolError::DuplicateReading);
            }
        }
        Ok(())
    }
}

/// Readings by index: bit `i` of `mask` says reading `i` (of the hello's list) is present, and
/// `values` holds the present ones in index order. A module may send all its readings or only
/// those that changed (report by exception).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkTelemetry {
    /// Same meaning as [`Telemetry::seq`].
    pub seq: u32,
    /// Which readings are present.
    pub mask: u32,
    /// Their values, lowest index first.
    pub values: heapless::Vec<f32, MAX_READINGS>,
}

impl LinkTelemetry {
    /// Names the readings with the hello's list, checking that the mask and values agree, that
    /// every index exists and that every value is finite.
    pub fn to_telemetry(&self, names: &[ReadingName]) -> Result<Telemetry, ProtocolError> {
        if self.mask.count_ones() as usize != self.values.len() {
            return Err(ProtocolError::Malformed);
        }
        let mut readings = Readings::new();
        let mut values = self.values.iter();
        for bit in 0..32 {
            if self.mask & (1 << bit) == 0 {
                continue;
            }
            let name = names.get(bit).ok_or(ProtocolError::Malformed)?;
            let value = *values.next().ok_or(ProtocolError::Malformed)?;
            readings.push(name.as_str(), value)?;
        }
        Ok(Telemetry {
            seq: self.seq,
            readings,
        })
    }
}

/// The hub's answer to a hello.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Accept {
    /// The link protocol version the hub speaks.
    pub protocol: u8,
    /// Heartbeat interval the hub wants (usually the module's own).
    pub heartbeat_ms: u32,
    /// Telemetry interval the hub wants (usually the module's own).
    pub telemetry_ms: u32,
}

/// The answer to a [`Command`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ack {
    /// The command's id.
    pub command: u32,
    /// What came of it.
    pub result: CommandResult,
}

/// What came of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CommandResult {
    /// 0 — done (for a reboot: about to reboot).
    Done,
    /// 1 — an argument is out of the module's range.
    InvalidArgument,
    /// 2 — the module does not implement this action.
    Unsupported,
}

/// Why the hub refuses a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RefuseReason {
    /// 0 — no module with this id is registered (the hub lists it as pending for an admin).
    UnknownModule,
    /// 1 — the module is registered but disabled.
    Disabled,
    /// 2 — traffic without an accepted hello (e.g. the hub restarted): say hello again.
    HandshakeRequired,
    /// 3 — the hello breaks a rule (interval out of range, duplicate reading names...).
    InvalidHello,
    /// 4 — another link already carries this module id.
    Duplicate,
}

/// Link-level errors, reported by whichever side received the bad frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LinkError {
    /// 0 — more than the maximum frame length before a delimiter; discarded.
    FrameTooLong,
    /// 1 — the CRC does not match (line noise, or a baud rate mismatch).
    CrcMismatch,
    /// 2 — a message tag this side does not know (a newer peer).
    UnknownMessage,
    /// 3 — the peer speaks another link protocol version; `supported` is ours.
    VersionMismatch {
        /// The version this side speaks.
        supported: u8,
    },
    /// 4 — the frame is intact but its content does not decode or breaks a rule.
    Malformed,
}

impl LinkError {
    /// Number of codes (variant tags) in this protocol version.
    pub const CODES: usize = 5;

    /// The code's tag on the wire, `0..CODES`: an index for per-code counters.
    pub const fn code(self) -> usize {
        match self {
            Self::FrameTooLong => 0,
            Self::CrcMismatch => 1,
            Self::UnknownMessage => 2,
            Self::VersionMismatch { .. } => 3,
            Self::Malformed => 4,
        }
    }

    /// A short stable label for metrics and logs (the same words as
    /// [`super::FrameError::reason`] where they overlap).
    pub const fn reason(self) -> &'static str {
        match self {
            Self::FrameTooLong => "frame_too_long",
            Self::CrcMismatch => "crc_mismatch",
            Self::UnknownMessage => "unknown_message",
            Self::VersionMismatch { .. } => "version_mismatch",
            Self::Malformed => "malformed",
        }
    }
}
