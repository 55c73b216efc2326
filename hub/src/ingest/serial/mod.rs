//! Serial ingest: modules on serial ports (UART, USB CDC, RS-485 adapters) speaking the native
//! link protocol of [`mc_protocol::link`] (`hardware/PROTOCOL.md`). A module on a serial port
//! is a first-class module: same registry, liveness, diff and events as over MQTT.
//!
//! # Layout
//! - [`port`]: one task per configured port. Opens it (8N1, no flow control), reopens it with
//!   [`backoff`] when it is missing or disappears, cuts the byte stream into frames with a
//!   [`FrameAccumulator`](mc_protocol::link::FrameAccumulator) (COBS frames, or JSON lines on
//!   a `:json` port: [`mc_protocol::link::json`]), writes the replies.
//! - [`link`]: the link sessions of one port by address: handshake against the registry,
//!   [`ModuleEvent`]s for the tracker, commands and acks, refusals and error replies. Both
//!   framings meet there as one [`link::Inbound`] message type.
//! - [`backoff`]: reopen delays.
//!
//! ```text
//! /dev/ttyUSB0 ──bytes──▶ port task ──frames──▶ LinkSessions ──ModuleEvent──▶ tracker
//!      ▲                     │ ▲                    │ claim/remove
//!      └── replies, commands ┘ └── PortRequest ─┐   ▼
//!                                  commands::CommandRouter ◀── LiveConnections (routes)
//! ```

pub mod backoff;
pub mod link;
pub mod port;

use std::time::Duration;

use mc_protocol::{Command, link::CommandResult};
use tokio::sync::{mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use link::CommandFailure;

use super::ModuleEvent;
use crate::{config::SerialPortSpec, connections::LiveConnections, metrics::Metrics, store::Store};

/// What every port task needs.
#[derive(Clone)]
pub struct SerialContext {
    /// The registry: hellos are checked against it, unknown modules recorded as pending.
    pub store: Store,
    /// Where module events go (the tracker).
    pub events: mpsc::Sender<ModuleEvent>,
    /// Counters.
    pub metrics: Metrics,
    /// Live connections and session numbers, shared with the MQTT gateway.
    pub connections: LiveConnections,
    /// The hub's liveness timeout (`--heartbeat-timeout`), which silent sessions expire by
    /// (never sooner than 3 heartbeat intervals: [`link::session_expiry`]).
    pub heartbeat_timeout: Option<Duration>,
    /// The per-module rate limit, shared with MQTT ingest.
    pub limiter: super::rate::ModuleRateLimiter,
}

/// A request for a port task from elsewhere in the hub.
#[derive(Debug)]
pub enum PortRequest {
    /// Send `command` to the module at `address` if `session` is still its session there;
    /// the module's result, or why there is none, goes to `reply`.
    Command {
        /// The module's address on the port.
        address: u8,
        /// The session the route was read from.
        session: u64,
        /// What to send.
        command: Command,
        /// The outcome.
        reply: oneshot::Sender<Result<CommandResult, CommandFailure>>,
    },
}

/// Requests queued for one port task; a full queue answers "busy".
pub const REQUEST_QUEUE: usize = 64;

/// Starts one task per port on `tasks`; they run until `shutdown`.
pub fn start(
    ports: &[SerialPortSpec],
    ctx: &SerialContext,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) {
    for spec in ports {
        // every log line of the port's task says which port (JSON logs: a span field)
        let span = tracing::info_span!("ingest", transport = "serial", port = %spec.path.display());
        tasks.spawn(tracing::Instrument::instrument(
            port::run(spec.clone(), ctx.clone(), shutdown.clone()),
            span,
        ));
    }
}
