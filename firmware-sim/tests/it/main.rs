//! Integration tests: simulated modules against an embedded rumqttd broker on a free loopback
//! port, and a module on a serial line against a test playing the hub on a real pty. One test
//! binary for the crate (link time); one module per concern.

mod broker;
mod protocol;
mod serial;
