//! End-to-end tests: one binary, one module per area.

mod access;
mod authz;
mod backpressure;
mod bad_input;
mod browser;
mod c_reference;
mod commands;
mod compression;
mod durability;
mod hostile;
mod js_clients;
mod liveness;
mod mqtt;
mod ops;
mod postgres;
mod process;
mod registry;
mod rejects;
mod replay;
mod serial;
mod serial_sim;
mod simulator;
mod soak;
mod stats;
mod telemetry;
mod users;
