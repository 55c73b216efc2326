//! An embedded rumqttd broker for tests, with a local link that sees every module topic and can
//! publish commands.

use std::{
    collections::HashMap,
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex},
    time::Duration,
};

use rumqttd::{
    Broker, Config, ConnectionSettings, Notification, RouterConfig, ServerSettings, local::LinkTx,
};
use tokio::{sync::mpsc, time::Instant};

/// Generous: the machine may be busy building other crates.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A message the broker routed on `mc/+/+`.
#[derive(Debug, Clone)]
pub struct Seen {
    pub topic: String,
    pub payload: Vec<u8>,
}

pub struct TestBroker {
    /// `host:port` for `SimConfig::broker`.
    pub addr: String,
    /// Every message on `mc/+/+`, in routing order.
    messages: mpsc::UnboundedReceiver<Seen>,
    /// Everything received so far, for order checks.
    pub log: Vec<Seen>,
    /// The local link, to publish commands as the hub would.
    link_tx: Arc<Mutex<LinkTx>>,
}

fn free_port() -> u16 {
    // rumqttd cannot listen on port 0: borrow a free port from the OS and give it back.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

impl TestBroker {
    pub fn start() -> Self {
        let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let server = ServerSettings {
            name: "v4".into(),
            listen,
            tls: None,
            next_connection_delay_ms: 1,
            connections: ConnectionSettings {
                connection_timeout_ms: 5_000,
                max_payload_size: 20_480,
                max_inflight_count: 100,
                auth: None,
                external_auth: None,
                dynamic_filters: true,
            },
        };
        let config = Config {
            id: 0,
            router: RouterConfig {
                max_connections: 1_000,
                max_outgoing_packet_count: 200,
                max_segment_size: 100 * 1024 * 1024,
                max_segment_count: 10,
                ..RouterConfig::default()
            },
            v4: Some(HashMap::from([("v4".to_owned(), server)])),
            ..Config::default()
        };
        let mut broker = Broker::new(config);
        let (mut link_tx, mut link_rx) = broker.link("test").expect("local link");
        link_tx.subscribe("mc/+/+").expect("subscribe");
        std::thread::spawn(move || {
            // Blocks for the life of the test process; an error means the port was taken.
            if let Err(e) = broker.start() {
                eprintln!("test broker stopped: {e}");
            }
        });

        let (tx, messages) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            loop {
                match link_rx.recv() {
                    Ok(Some(Notification::Forward(forward))) => {
                        let seen = Seen {
                            topic: String::from_utf8_lossy(&forward.publish.topic).into_owned(),
                            payload: forward.publish.payload.to_vec(),
                        };
                        if tx.send(seen).is_err() {
                            return;
                        }
                    }
                    // Flow control: after draining, tell the router to resume forwarding.
                    Ok(Some(Notification::Unschedule)) => {
                        if link_rx.ready().is_err() {
                            return;
                        }
                    }
                    // Spurious wake-ups and acks: keep looping.
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        Self {
            addr: listen.to_string(),
            messages,
            log: Vec::new(),
            link_tx: Arc::new(Mutex::new(link_tx)),
        }
    }

    /// Publishes `payload` on `topic` as the hub would.
    pub fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.link_tx
            .lock()
            .expect("link lock")
            .publish(topic.to_owned(), payload)
            .expect("local publish");
    }

    /// Waits (up to [`DEADLINE`]) for a message matching `want`, logging everything seen.
    pub async fn wait_for(&mut self, what: &str, mut want: impl FnMut(&Seen) -> bool) -> Seen {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let seen = tokio::time::timeout_at(deadline, self.messages.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; saw {:#?}", self.log))
                .expect("broker link closed");
            self.log.push(seen.clone());
            if want(&seen) {
                return seen;
            }
        }
    }
}

/// Waits (up to [`DEADLINE`]) until `condition` holds, polling.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
