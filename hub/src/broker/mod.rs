//! The embedded MQTT broker: rumqttd on internal loopback ports, behind our gateway.
//!
//! ```text
//! module ──TCP──▶ gateway (--mqtt port) ──▶ rumqttd v4 or v5 listener (127.0.0.1, internal)
//!                    │ auth, ACL, lifecycle          │ router
//!                    ▼                               ▼
//!                 tracker ◀──── ingest ◀──── local link (mc/+/+)
//! ```
//!
//! Why a gateway: rumqttd serves MQTT 3.1.1 and 5 on separate listeners, answers a wrong password
//! by dropping the TCP connection without a CONNACK, tells nobody when a client connects or
//! disconnects cleanly, and has no per-client topic ACL. The gateway reads the CONNECT, sends
//! proper CONNACK refusals, routes by protocol level to one port, restricts each module to its
//! own topics, and reports each connection's start and end to the tracker.

pub mod external;
pub mod gateway;
pub mod mosquitto;
pub mod packet;

use std::{net::SocketAddr, time::Duration};

use tokio::sync::oneshot;

use rumqttd::{
    ConnectionSettings, Router, RouterConfig, ServerSettings,
    local::{LinkBuilder, LinkRx, LinkTx},
    protocol::{v4::V4, v5::V5},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::store::Store;

/// Client id of the hub's own link into the router; not a valid module id, so no module can
/// take it over.
pub const HUB_LINK_ID: &str = "hub.internal";

/// Errors starting the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No free internal port.
    #[error("cannot reserve an internal broker port: {0}")]
    Port(std::io::Error),
    /// An internal listener could not start.
    #[error("internal MQTT listener on {addr} failed: {reason}")]
    Listen {
        /// Its address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The router refused the hub's link.
    #[error("cannot link the hub to the broker: {0}")]
    Link(String),
}

/// A running embedded broker.
pub struct EmbeddedBroker {
    /// Internal address of the MQTT 3.1.1 listener.
    pub v4_addr: SocketAddr,
    /// Internal address of the MQTT 5 listener.
    pub v5_addr: SocketAddr,
    /// The hub's link: publishes commands.
    pub link_tx: LinkTx,
    /// The hub's link: receives every module publish.
    pub link_rx: LinkRx,
}

/// How much the embedded broker keeps of what modules publish: its log of each subscription
/// filter (the hub's ingest link subscribes to four) holds `segments` segments of
/// `segment_bytes` (topic + payload bytes). That is the burst the ingest link may fall behind
/// by without losing messages; it also bounds memory, and more than the bytes suggest: a
/// stored message keeps alive the read buffer it was cut from (up to 10 KiB per connection
/// read in rumqttd), which a churn of short connections makes visible (the soak in
/// `tests/it/soak.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Bytes per log segment (at least 1 KiB).
    pub segment_bytes: usize,
    /// Segments kept per filter (at least 1).
    pub segments: usize,
}

impl Default for Retention {
    /// 2 × 1 MiB per filter: ~30,000 small messages of lag, several seconds at field rates.
    fn default() -> Self {
        Self {
            segment_bytes: 1024 * 1024,
            segments: 2,
        }
    }
}

/// The embedded router's settings (also used by the bench's bare-broker peer, so that the
/// comparison is like for like).
pub fn router_config(retention: Retention) -> RouterConfig {
    RouterConfig {
        max_connections: 100_000,
        max_outgoing_packet_count: 1024,
        max_segment_size: retention.segment_bytes.max(1024),
        max_segment_count: retention.segments.max(1),
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    }
}

fn free_loopback_port() -> Result<SocketAddr, BrokerError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(BrokerError::Port)?;
    listener.local_addr().map_err(BrokerError::Port)
}

/// Starts the router (its own thread: rumqttd has no shutdown API, it idles once every link is
/// gone) and the two internal listeners (tasks on `tasks`, stopped by `shutdown`).
pub async fn start(
    max_packet: usize,
    retention: Retention,
    store: Store,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<EmbeddedBroker, BrokerError> {
    let router_tx = Router::new(0, router_config(retention)).spawn();

    let settings = |name: &str, listen: SocketAddr| {
        let mut connections = ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: max_packet,
            max_inflight_count: 256,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        };
        let store = store.clone();
        // Defence in depth: the internal ports are on loopback, but check credentials again.
        connections.set_auth_handler(move |client_id: String, user: String, pass: String| {
            let store = store.clone();
            async move {
                gateway::check_credentials(&store, &client_id, Some(&user), Some(pass.as_bytes()))
                    .await
                    .is_ok()
            }
        });
        ServerSettings {
            name: name.to_owned(),
            listen,
            tls: None,
            next_connection_delay_ms: 0,
            connections,
        }
    };
    let v4_addr = free_loopback_port()?;
    let v5_addr = free_loopback_port()?;
    let mut v4 = rumqttd::Server::new(settings("internal-v4", v4_addr), router_tx.clone(), V4);
    let mut v5 = rumqttd::Server::new(settings("internal-v5", v5_addr), router_tx.clone(), V5);
    let v4_failed = spawn_listener(tasks, shutdown, async move {
        v4.start(rumqttd::LinkType::Remote).await
    });
    let v5_failed = spawn_listener(tasks, shutdown, async move {
        v5.start(rumqttd::LinkType::Remote).await
    });
    // rumqttd binds as soon as its task first runs and returns at once if it cannot: give it
    // that moment, so that an unusable internal port stops the hub instead of every module
    // connection failing later.
    let early = Duration::from_millis(200);
    let (v4_early, v5_early) = tokio::join!(
        tokio::time::timeout(early, v4_failed),
        tokio::time::timeout(early, v5_failed)
    );
    for (result, addr) in [(v4_early, v4_addr), (v5_early, v5_addr)] {
        if let Ok(Ok(reason)) = result {
            return Err(BrokerError::Listen { addr, reason });
        }
    }

    let (mut link_tx, link_rx, _ack) = LinkBuilder::new(HUB_LINK_ID, router_tx)
        .build()
        .map_err(|e| BrokerError::Link(e.to_string()))?;
    link_tx
        .subscribe(mc_protocol::topic::FILTER_ALL_MODULES)
        .map_err(|e| BrokerError::Link(e.to_string()))?;
    Ok(EmbeddedBroker {
        v4_addr,
        v5_addr,
        link_tx,
        link_rx,
    })
}

/// Runs an internal listener until shutdown; the receiver gets its error if it stops early.
fn spawn_listener<E: std::fmt::Debug>(
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
    listener: impl Future<Output = Result<(), E>> + Send + 'static,
) -> oneshot::Receiver<String> {
    let (failed_tx, failed_rx) = oneshot::channel();
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            result = listener => {
                let reason = match result {
                    Ok(()) => "stopped".to_owned(),
                    Err(e) => format!("{e:?}"),
                };
                tracing::error!(%reason, "internal MQTT listener stopped");
                let _ = failed_tx.send(reason);
            },
        }
    });
    failed_rx
}
