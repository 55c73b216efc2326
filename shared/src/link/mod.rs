//! The native serial link: how a module without a network stack talks to the hub over a UART,
//! an RS-485 adapter or USB CDC. Byte-level specification with examples: `hardware/PROTOCOL.md`.
//!
//! # Layout
//! - [`message`]: [`Uplink`] (module → hub) and [`Downlink`] (hub → module): the handshake
//!   ([`LinkHello`] / [`Accept`] / [`RefuseReason`]), heartbeats, telemetry by reading index
//!   ([`LinkTelemetry`]), commands and their [`Ack`]s, and [`LinkError`] reports.
//! - [`frame`]: address byte + postcard + CRC-16, COBS-framed with a `0x00` delimiter; the
//!   [`FrameAccumulator`] that cuts a byte stream into frames whatever the read sizes.
//! - `json` (with `std`): JSON lines, the same conversation for quick prototypes.
//! - [`cobs`], [`crc`]: the two algorithms, total functions (no panic on any input).
//!
//! Everything here works without `std` and without an allocator: firmware encodes into a
//! `[u8; MAX_WIRE_LEN]` and decodes in place.

pub mod cobs;
pub mod crc;
pub mod frame;
#[cfg(feature = "std")]
pub mod json;
pub mod message;

pub use frame::{
    ADDRESS_BROADCAST, ADDRESS_MAX, ADDRESS_POINT_TO_POINT, Accumulated, DELIMITER,
    FrameAccumulator, FrameError, MAX_ENCODED_LEN, MAX_FRAME_LEN, MAX_WIRE_LEN, decode_downlink,
    decode_uplink, encode_downlink, encode_uplink,
};
#[cfg(feature = "std")]
pub use frame::{downlink_to_vec, uplink_to_vec};
pub use message::{
    Accept, Ack, CommandResult, Downlink, LINK_VERSION, LinkError, LinkHello, LinkTelemetry,
    RefuseReason, Uplink,
};
