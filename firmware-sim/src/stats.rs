//! Per-module counters: written by the module's task, read by anyone holding its
//! [`crate::SimModule`] handle (tests wait on them, the CLI reports them). Atomics rather than
//! messages because readers only want a snapshot and must never block the module.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A snapshot of one module's counters since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Successful connections (ConnAck received).
    pub connects: u64,
    /// Hello messages handed to the MQTT client.
    pub hellos: u64,
    /// Heartbeats handed to the MQTT client.
    pub heartbeats: u64,
    /// Telemetry messages handed to the MQTT client, repeats and bursts included.
    pub telemetry: u64,
    /// Messages received on the command topic, valid or not.
    pub commands: u64,
    /// Commands that did not decode or were refused (out-of-range values).
    pub rejected_commands: u64,
    /// Garbage payloads sent by the `SendGarbage` fault.
    pub garbage: u64,
}

impl std::ops::Add for SimStats {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            connects: self.connects + o.connects,
            hellos: self.hellos + o.hellos,
            heartbeats: self.heartbeats + o.heartbeats,
            telemetry: self.telemetry + o.telemetry,
            commands: self.commands + o.commands,
            rejected_commands: self.rejected_commands + o.rejected_commands,
            garbage: self.garbage + o.garbage,
        }
    }
}

/// The live counters behind [`SimStats`], shared between a module task and its handle.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connects: AtomicU64,
    pub hellos: AtomicU64,
    pub heartbeats: AtomicU64,
    pub telemetry: AtomicU64,
    pub commands: AtomicU64,
    pub rejected_commands: AtomicU64,
    pub garbage: AtomicU64,
    /// True between ConnAck and the loss (or close) of that connection.
    pub connected: AtomicBool,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> SimStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SimStats {
            connects: get(&self.connects),
            hellos: get(&self.hellos),
            heartbeats: get(&self.heartbeats),
            telemetry: get(&self.telemetry),
            commands: get(&self.commands),
            rejected_commands: get(&self.rejected_commands),
            garbage: get(&self.garbage),
        }
    }
}
