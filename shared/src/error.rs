//! Protocol errors. Hand-written (no `thiserror`) so they exist in `no_std` builds too.

use core::fmt;

/// Everything that can be wrong with bytes that claim to be an MC protocol message or topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// A module id is empty, too long, or uses a character outside the allowed set.
    InvalidModuleId,
    /// A reading name is empty, too long, or uses a character outside the allowed set.
    InvalidReadingName,
    /// A firmware version string is empty or too long.
    InvalidFirmwareVersion,
    /// A reading value is NaN or infinite.
    NonFiniteReading,
    /// The same reading name appears twice in one telemetry message.
    DuplicateReading,
    /// A telemetry message carries more readings than [`crate::message::MAX_READINGS`].
    TooManyReadings,
    /// A heartbeat interval outside [`crate::message::HEARTBEAT_MS_RANGE`].
    InvalidHeartbeatInterval,
    /// A telemetry interval outside [`crate::message::TELEMETRY_MS_RANGE`].
    InvalidTelemetryInterval,
    /// The encoded message is longer than the encoding's limit.
    TooLarge {
        /// Length of the rejected input in bytes.
        len: usize,
        /// The limit it exceeded.
        max: usize,
    },
    /// A native payload starts with an unknown protocol version byte.
    UnsupportedVersion(u8),
    /// The payload is empty.
    Empty,
    /// The bytes do not decode as the expected message (wrong type, truncated, trailing bytes,
    /// invalid UTF-8, unknown field...).
    Malformed,
    /// The output buffer is too small for the encoded message.
    BufferTooSmall,
    /// The topic is not of the form `mc/<module id>/<kind>`.
    InvalidTopic,
}

impl ProtocolError {
    /// A short stable label, used as a metric/log reason (`reason="non_finite"`).
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::InvalidModuleId => "invalid_module_id",
            Self::InvalidReadingName => "invalid_reading_name",
            Self::InvalidFirmwareVersion => "invalid_firmware_version",
            Self::NonFiniteReading => "non_finite",
            Self::DuplicateReading => "duplicate_reading",
            Self::TooManyReadings => "too_many_readings",
            Self::InvalidHeartbeatInterval => "invalid_heartbeat_interval",
            Self::InvalidTelemetryInterval => "invalid_telemetry_interval",
            Self::TooLarge { .. } => "too_large",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::Empty => "empty",
            Self::Malformed => "malformed",
            Self::BufferTooSmall => "buffer_too_small",
            Self::InvalidTopic => "invalid_topic",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidModuleId => f.write_str(
                "invalid module id (3-32 chars: A-Z a-z 0-9 '-' '_', starting with a letter or digit)",
            ),
            Self::InvalidReadingName => f.write_str(
                "invalid reading name (1-24 chars: a-z A-Z 0-9 '_' '.' '-', starting with a letter)",
            ),
            Self::InvalidFirmwareVersion => f.write_str("invalid firmware version (1-16 chars)"),
            Self::NonFiniteReading => f.write_str("reading value is NaN or infinite"),
            Self::DuplicateReading => f.write_str("reading name appears twice"),
            Self::TooManyReadings => write!(
                f,
                "too many readings (max {})",
                crate::message::MAX_READINGS
            ),
            Self::InvalidHeartbeatInterval => write!(
                f,
                "heartbeat interval out of range ({}..={} ms)",
                crate::message::HEARTBEAT_MS_RANGE.start(),
                crate::message::HEARTBEAT_MS_RANGE.end()
            ),
            Self::InvalidTelemetryInterval => write!(
                f,
                "telemetry interval out of range ({}..={} ms)",
                crate::message::TELEMETRY_MS_RANGE.start(),
                crate::message::TELEMETRY_MS_RANGE.end()
            ),
            Self::TooLarge { len, max } => write!(f, "message too large ({len} > {max} bytes)"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
            Self::Empty => f.write_str("empty payload"),
            Self::Malformed => f.write_str("malformed message"),
            Self::BufferTooSmall => f.write_str("output buffer too small"),
            Self::InvalidTopic => f.write_str("topic is not mc/<module id>/<kind>"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ProtocolError {}
