//! Faults injected on demand, per module, through [`crate::SimModule::inject`].
//!
//! They reproduce what goes wrong in the field, so the hub's liveness tracking, last-will
//! handling, duplicate filtering and input validation can be tested on purpose rather than by
//! luck. Faults that concern the firmware (heartbeats, bursts) go to the state machine,
//! [`mc_firmware::ModuleCore`]; those that concern the link or the raw payload are handled by
//! the transport (the `mqtt` module).

use rand::Rng;

/// A fault to inject into one simulated module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Stop sending heartbeats (telemetry continues): the hub should declare the module dead
    /// after its liveness timeout even though the connection is up.
    StopHeartbeats,
    /// Send a heartbeat now and resume the schedule.
    ResumeHeartbeats,
    /// Close the TCP connection without an MQTT DISCONNECT, as a power loss or a dead radio
    /// would: the broker publishes the `offline` last will. The module reconnects after
    /// [`crate::SimConfig::drop_pause`], or earlier on [`Fault::Reconnect`].
    DropConnection,
    /// Clean MQTT DISCONNECT (no last will); stay offline until [`Fault::Reconnect`].
    Disconnect,
    /// Connect now if offline (after `Disconnect` or during a `DropConnection` pause).
    Reconnect,
    /// Publish random bytes on the telemetry topic (never a valid message).
    SendGarbage,
    /// Publish the exact same payload as the last telemetry message again (same seq): a
    /// duplicate, as QoS 1 redelivery produces.
    RepeatTelemetry,
    /// Send this many telemetry messages back to back (consecutive seqs), each with every
    /// reading whether or not it changed.
    Burst(u32),
}

/// Random bytes that no decoder accepts: the first byte is ≥ 0x80, so it is neither JSON (`{`)
/// nor a known native protocol version.
pub fn garbage(rng: &mut impl Rng) -> Vec<u8> {
    let len = rng.random_range(1..=64);
    let mut bytes = vec![0u8; len];
    rng.fill(&mut bytes[..]);
    bytes[0] |= 0x80;
    bytes
}

#[cfg(test)]
mod tests {
    use mc_protocol::{Telemetry, codec};

    use super::*;

    #[test]
    fn garbage_never_decodes() {
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let bytes = garbage(&mut rng);
            assert!(!bytes.is_empty() && bytes.len() <= 64);
            assert!(codec::decode::<Telemetry>(&bytes).is_err());
        }
    }
}
