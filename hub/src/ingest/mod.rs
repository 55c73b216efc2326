//! Transports turn bytes into typed [`ModuleEvent`]s for the tracker: [`mqtt`] (payloads the
//! broker forwards) and [`serial`] (frames on serial ports). Everything that can be
//! wrong with the bytes is decided here (and counted); the tracker only sees valid messages.

pub mod mqtt;
pub mod rate;
pub mod serial;
pub mod sessions;

use mc_protocol::{Encoding, Heartbeat, Hello, ModuleId, Telemetry};

use crate::{connections::Transport, store::ModuleRecord};

/// Something that happened to a module, in the order it happened on its connection.
#[derive(Debug, Clone)]
pub enum ModuleEvent {
    /// An authenticated connection opened; `session` numbers connections hub-wide.
    Connected {
        /// The module's registry entry, read at authentication.
        record: ModuleRecord,
        /// This connection's number.
        session: u64,
        /// How it reaches the hub: a command for a serial module must never fall back to
        /// MQTT while its link is going away ([`crate::commands`]).
        transport: Transport,
    },
    /// That connection was registered but the broker never accepted it.
    ConnectAborted {
        /// Whose.
        module: ModuleId,
        /// Which connection.
        session: u64,
    },
    /// That connection closed.
    Disconnected {
        /// Whose.
        module: ModuleId,
        /// Which connection.
        session: u64,
        /// True for a clean MQTT DISCONNECT (no last will). A serial link session always ends
        /// unclean (port lost, closed by the hub, silent, replaced): no will follows, and the
        /// module is offline at once either way.
        clean: bool,
    },
    /// Birth certificate, and the encoding the module speaks (commands go back in it).
    Hello(ModuleId, Hello, Encoding),
    /// Alive.
    Heartbeat(ModuleId, Heartbeat),
    /// Readings (boxed: up to 32 inline readings would make every event ~1 KiB).
    Telemetry(ModuleId, Box<Telemetry>),
    /// Its last will (`offline` on `mc/<id>/status`).
    Will(ModuleId),
    /// Behind an external broker: the session `session` (inferred, [`sessions`]) ended with
    /// the module's will, or its own `offline` before a clean disconnect.
    Ended {
        /// Whose.
        module: ModuleId,
        /// Which session.
        session: u64,
    },
    /// Cluster mode: this hub now owns the module, which clients see as its shared state says
    /// (`cluster::live`): adopt it without emitting anything (ignored if already known).
    Adopted(ModuleId, Box<crate::cluster::live::SharedLive>),
    /// Cluster mode: the members changed; let go (silently) of modules owned elsewhere now.
    OwnersChanged,
    /// Cluster mode: Redis lost the shared state (the stream started over): publish the full
    /// state of every module this hub owns again.
    RepublishShared,
    /// Behind an external broker: the hub's link to it went down or came back. While it is
    /// down the hub hears nothing, so silence proves nothing: liveness timeouts are held.
    BrokerLink {
        /// Whether the link is up (consuming) now.
        up: bool,
    },
    /// Its registry entry changed (owner, timeout...).
    Registered(ModuleRecord),
    /// It was removed from the registry: forget it.
    Unregistered(ModuleId),
}

impl ModuleEvent {
    /// The module the event is about, if it is about one.
    pub fn module(&self) -> Option<&ModuleId> {
        match self {
            Self::Connected { record, .. } | Self::Registered(record) => Some(&record.id),
            Self::ConnectAborted { module, .. }
            | Self::Disconnected { module, .. }
            | Self::Ended { module, .. }
            | Self::Hello(module, ..)
            | Self::Heartbeat(module, _)
            | Self::Telemetry(module, _)
            | Self::Will(module)
            | Self::Adopted(module, _)
            | Self::Unregistered(module) => Some(module),
            Self::BrokerLink { .. } | Self::OwnersChanged | Self::RepublishShared => None,
        }
    }
}
