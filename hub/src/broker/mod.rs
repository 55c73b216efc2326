//! MQTT: the hub's own MQTT server for modules (the default, one binary), or its client of an
//! external broker ([`external`], for several hubs).
//!
//! ```text
//! module ──TCP──▶ gateway (--mqtt port): CONNECT, credentials ──▶ session: ACL, acks, keep-alive
//!                    │ Connected / Disconnected                     │ publishes, wills
//!                    ▼                                              ▼
//!                 tracker ◀──────────────────────────────────── ingest::mqtt::decode
//!  commands ──▶ live connections ──▶ the module's connection ──▶ PUBLISH mc/<id>/cmd
//! ```
//!
//! Why the hub terminates MQTT itself instead of running a general broker (rumqttd, until
//! issue 7): every client is a module, and a module's whole contract is narrow — publish on
//! its own four topics, subscribe to its own command topic, one subscriber (the hub) for
//! everything it publishes. A broker in between cost a second loopback hop and three
//! descriptors per module, and ~65 KB of fixed per-connection buffers (rumqttd allocates two
//! 200-packet queues per connection, not configurable); it had no per-client ACL, no hook for
//! a connection's start and end, and refused a wrong password by dropping the TCP connection.
//! Serving the protocol here ([`gateway`], [`session`], [`packet`]) gives one descriptor and a
//! few KB per idle module, publishes decoded straight from the socket's buffer, TCP
//! backpressure when the tracker is behind, and no internal port to bypass the ACL through.
//! What a module may do is the same over an external broker, where the broker enforces it
//! from `hub export mosquitto-acl` ([`mosquitto`]).

pub mod external;
pub mod gateway;
pub mod mosquitto;
pub mod packet;
pub mod session;
