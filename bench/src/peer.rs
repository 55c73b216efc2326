//! The reference point: the same load into a bare rumqttd broker (no gateway, no auth, no
//! tracker, no Socket.IO), consumed by one plain rumqttc subscriber that decodes each payload.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use mc_protocol::{Telemetry, codec};
use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS};
use rumqttd::{ConnectionSettings, Router, ServerSettings, protocol::v4::V4};
use tokio::task::JoinSet;

use crate::{
    dashboard::EventSink,
    load::{Latencies, SendLog, module_index},
};

/// The settings the hub's embedded rumqttd router had before the hub served MQTT itself
/// (issue 7), kept so that the peer's figures stay comparable with earlier runs.
fn router_config() -> rumqttd::RouterConfig {
    rumqttd::RouterConfig {
        max_connections: 100_000,
        max_outgoing_packet_count: 1024,
        max_segment_size: 1024 * 1024,
        max_segment_count: 2,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    }
}

/// Starts a bare broker (router thread + a listener task on the current runtime) with the
/// hub's former router settings; returns its address.
pub fn start_broker(tasks: &mut JoinSet<()>) -> Result<SocketAddr> {
    let router = Router::new(0, router_config());
    let router_tx = router.spawn();
    // rumqttd cannot bind port 0: reserve a free port first.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let settings = ServerSettings {
        name: "peer-v4".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: 64 * 1024,
            max_inflight_count: 256,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let mut server = rumqttd::Server::new(settings, router_tx, V4);
    tasks.spawn(async move {
        let _ = server.start(rumqttd::LinkType::Remote).await;
    });
    Ok(addr)
}

/// Subscribes to every telemetry topic and feeds `sink`-like counters; returns once subscribed.
pub async fn subscribe(
    addr: SocketAddr,
    log: Arc<SendLog>,
    latencies: Arc<Latencies>,
    tasks: &mut JoinSet<()>,
) -> Result<Arc<EventSink>> {
    let sink = Arc::new(EventSink::new(None));
    let mut opts = MqttOptions::new("peer-subscriber", addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(60))
        .set_max_packet_size(1024 * 1024, 64 * 1024);
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let counts = sink.clone();
    tasks.spawn(async move {
        let mut subscribed_tx = Some(subscribed_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe("mc/+/telemetry", QoS::AtMostOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let now = log.now_us();
                    counts.count_one();
                    let module = p.topic.split('/').nth(1).and_then(module_index);
                    if let (Some(module), Ok(t)) = (module, codec::decode::<Telemetry>(&p.payload))
                        && let Some(sent) = log.sent_at(module, t.seq)
                    {
                        latencies.record(sent, now);
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
        .await
        .context("peer subscriber not subscribed within 10 s")?
        .context("peer subscriber stopped")?;
    Ok(sink)
}
