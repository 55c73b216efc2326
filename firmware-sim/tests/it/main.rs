//! Integration tests: simulated modules against an embedded rumqttd broker on a free loopback
//! port. One test binary for the crate (link time); one module per concern.

mod broker;
mod protocol;
