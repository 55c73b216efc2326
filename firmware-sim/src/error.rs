//! Errors of the simulator library. Runtime trouble (broker down, bad password, invalid
//! commands, a serial line that fails) is not an error here: a module logs it, counts it and
//! keeps trying, as firmware would. Only configuration can be refused, and a serial line that
//! cannot be opened at start.

use std::{io, path::PathBuf, time::Duration};

use mc_protocol::{ModuleId, ProtocolError};

/// A [`crate::SimConfig`] or module list that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// `broker` is not `host:port`.
    #[error("invalid broker address {0:?}: expected host:port, e.g. 127.0.0.1:1883")]
    InvalidBroker(String),
    /// An interval outside what the protocol allows.
    #[error("{what} interval {value:?} out of range ({min:?}..={max:?})")]
    InvalidInterval {
        /// Which setting.
        what: &'static str,
        /// The refused value.
        value: Duration,
        /// Smallest allowed.
        min: Duration,
        /// Largest allowed.
        max: Duration,
    },
    /// The MQTT keep-alive must be zero (off) or at least one second.
    #[error("keep-alive {0:?} must be 0 or at least 1 s")]
    InvalidKeepAlive(Duration),
    /// `fw` is not a valid firmware version string.
    #[error("invalid firmware version {value:?}: {source}")]
    InvalidFirmwareVersion {
        /// The refused value.
        value: String,
        /// What is wrong with it.
        source: ProtocolError,
    },
    /// Two modules with the same id would kick each other off the broker forever.
    #[error("module {0} appears twice")]
    DuplicateModule(ModuleId),
    /// Not `PATH[@BAUD]` with a baud rate above zero.
    #[error("invalid serial device {0:?}: expected PATH[@BAUD], e.g. /dev/ttyUSB0@115200")]
    InvalidSerialDevice(String),
    /// The serial device cannot be opened (missing, busy, no permission).
    #[error("cannot open serial device {}: {source}", path.display())]
    OpenSerial {
        /// The device.
        path: PathBuf,
        /// Why.
        source: tokio_serial::Error,
    },
    /// No pseudo-terminal could be made.
    #[error("cannot create a pseudo-terminal: {0}")]
    CreatePty(tokio_serial::Error),
    /// The `--pty` link path holds something other than a symlink, which the simulator will
    /// not replace.
    #[error("{} exists and is not a symlink: refusing to replace it", .0.display())]
    LinkPathOccupied(PathBuf),
    /// The `--pty` symlink cannot be made (missing directory, no permission).
    #[error("cannot create the symlink {}: {source}", path.display())]
    LinkPath {
        /// Where the symlink should go.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// A credentials file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// Not `ID PASSWORD`.
    #[error("line {line}: expected `ID PASSWORD`")]
    Malformed {
        /// 1-based line number.
        line: usize,
    },
    /// The id breaks the module id rule.
    #[error("line {line}: {source}")]
    InvalidId {
        /// 1-based line number.
        line: usize,
        /// What is wrong with the id.
        source: ProtocolError,
    },
    /// The same id twice.
    #[error("line {line}: module {id} appears twice")]
    Duplicate {
        /// 1-based line number of the second occurrence.
        line: usize,
        /// The repeated id.
        id: ModuleId,
    },
    /// Fewer modules in the file than asked for.
    #[error("{wanted} modules requested but the file has only {found}")]
    NotEnough {
        /// How many were asked for.
        wanted: usize,
        /// How many the file has.
        found: usize,
    },
}
