//! `mc-bench`: benchmarks of the hub. Binaries: `pipeline-bench` (`src/main.rs`, the hub
//! in-process), `scale-bench` (`src/scale/`, the hub and its peers as separate processes),
//! `compression-bench`.
//!
//! # Layout (the parts the binaries share)
//! - [`load`]: simulated modules (rumqttc), the open-loop schedule, the send log for latency.
//! - [`dashboard`]: login and a minimal raw-WebSocket Socket.IO client that hands every text
//!   message to a [`dashboard::TextSink`].

pub mod dashboard;
pub mod load;
