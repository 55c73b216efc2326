//! The MC module protocol: the "interface control document" shared by the hub, the simulator and
//! real firmware.
//!
//! # Layout
//! - [`module_id`]: [`ModuleId`], the validated identity of a module (`MC-1001-STN`).
//! - [`message`]: what travels: [`Hello`], [`Heartbeat`], [`Telemetry`] (module → hub) and
//!   [`Command`] (hub → module), with their limits.
//! - [`topic`]: the MQTT topic table (`mc/<id>/<kind>`), built and parsed.
//! - [`codec`]: the two encodings of every message: postcard (native, compact, `no_std`) and JSON
//!   (for any MQTT tool or third-party firmware; needs the `std` feature).
//! - [`link`]: the native serial link (COBS frames with CRC, handshake, telemetry by index,
//!   acknowledged commands), specified byte by byte in `hardware/PROTOCOL.md`.
//! - [`error`]: typed errors, hand-written so that they work without `std`.
//!
//! No I/O and no runtime here: only types, tables and encodings. With default features off the
//! crate is `no_std` and needs no allocator; it builds for `thumbv7em-none-eabihf`.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod error;
pub mod link;
pub mod message;
pub mod module_id;
pub mod topic;

pub use codec::Encoding;
pub use error::ProtocolError;
pub use message::{
    Command, CommandAction, FirmwareVersion, Heartbeat, Hello, Reading, ReadingName, Readings,
    Telemetry,
};
pub use module_id::ModuleId;
pub use topic::{ModuleTopic, TopicKind};

/// Payload of the `mc/<id>/status` last-will message: the broker publishes it when the module's
/// connection dies without a clean DISCONNECT.
pub const STATUS_OFFLINE: &[u8] = b"offline";
/// Payload a module may publish (retained) on `mc/<id>/status` right after connecting.
pub const STATUS_ONLINE: &[u8] = b"online";
