//! The firmware core of an MC station module: what a module does, sans I/O, so that real boards
//! and the simulator (`firmware-sim`) run the same code.
//!
//! # Layout
//! - [`module`]: [`ModuleCore`], the state machine: connected / disconnected / tick / command
//!   in, hello / heartbeat / telemetry out; commands de-duplicated by id.
//! - [`sensors`]: the [`Sensors`] trait: a board reads hardware, the simulator draws seeded
//!   random walks.
//! - [`telemetry`]: report-by-exception with deadbands, and [`TelemetryReport`], a telemetry
//!   message by reading index (named for MQTT by [`TelemetryReport::to_telemetry`]).
//! - [`backoff`]: reconnection delays (exponential, jittered; the caller supplies randomness).
//! - [`io`]: [`Clock`] and [`Transport`], what a link driver needs from a board.
//! - [`link`]: [`SerialFirmware`], the serial link driver (framing, handshake, acks) over a
//!   [`Transport`] and a [`Clock`]: what a board's main loop (and `firmware-sim --serial`) runs.
//!
//! Data flow: the driver (the simulator's MQTT task, a board's main loop) reads its clock, feeds
//! [`ModuleCore`] its inputs, drains [`ModuleCore::poll_output`], and encodes each message with
//! `mc-protocol` for its link.
//!
//! `no_std` always, no allocator, no `unsafe`: it builds for `thumbv7em-none-eabihf` and
//! `thumbv6m-none-eabi`. The only dependencies are the protocol crate (without `std`) and
//! `heapless`.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod backoff;
pub mod io;
pub mod link;
pub mod module;
pub mod sensors;
pub mod telemetry;

pub use backoff::Backoff;
pub use io::{Clock, Transport};
pub use link::{LinkConfig, LinkState, SerialFirmware};
pub use module::{CommandRejected, CoreConfig, LastCommand, ModuleCore, Outgoing, Output};
pub use sensors::Sensors;
pub use telemetry::TelemetryReport;
