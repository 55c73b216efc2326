//! The hub as a client of an external MQTT broker (Mosquitto here; EMQX or HiveMQ in
//! production) instead of its embedded one: `[broker] url = "mqtt://mc-hub@broker:1883"`.
//!
//! ```text
//! module ──MQTT──▶ external broker ──$share/<group>/mc/+/…──▶ hub (MQTT 5 client) ──▶ ingest
//!                   auth + ACL from                       commands ◀── mc/<id>/cmd
//!                   `hub export mosquitto-acl`
//! ```
//!
//! - **Shared subscription** (`$share/<group>/…`, MQTT 5): several hubs in one group split the
//!   modules' messages between them instead of each receiving all of them.
//! - **Persistent session** (`clean start = false`, `session-expiry`): while the hub reconnects
//!   (its own restart, a broker restart, a network blip), the broker keeps what arrives at
//!   QoS 1 (hellos, wills) for it.
//! - **Liveness** comes from what modules publish, since the hub no longer sees connections
//!   ([`crate::ingest::sessions`]); while the link is down, silence proves nothing, so the
//!   tracker holds its timeouts ([`crate::ingest::ModuleEvent::BrokerLink`]).
//! - **Security** is the broker's job: it authenticates modules and enforces their topic ACL
//!   (`broker::mosquitto`); the hub checks topics again (a module id it does not know, or a
//!   disabled one, is rejected and counted).

use std::{path::PathBuf, time::Duration};

use rumqttc::v5::{
    AsyncClient, Event, EventLoop, MqttOptions,
    mqttbytes::{QoS, v5::Filter, v5::Packet},
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    config::ConfigError,
    connections::LiveConnections,
    ingest::{ModuleEvent, mqtt::decode, rate::ModuleRateLimiter, sessions::InferredSessions},
    metrics::Metrics,
    store::Store,
};

/// Default shared-subscription group: every hub of one deployment consumes in the same group.
pub const DEFAULT_SHARE_GROUP: &str = "mc-hub";
/// Default MQTT username of the hub.
pub const DEFAULT_USERNAME: &str = "mc-hub";
/// The topics the hub consumes (not `cmd`: those are its own commands).
pub const UPSTREAM_FILTERS: [&str; 4] = [
    "mc/+/hello",
    "mc/+/heartbeat",
    "mc/+/telemetry",
    "mc/+/status",
];
/// Requests the client may queue (commands) before `try_publish` refuses.
const REQUEST_CAPACITY: usize = 1024;
/// Batches of polled packets (one per socket read, up to ten packets) waiting for the ingest
/// loop; a full queue holds the poller back.
const POLLED_BATCHES: usize = 32;
/// Longest wait between two reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(10);

/// `[broker]`: where the external broker is, and how the hub logs in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct BrokerConfig {
    /// `mqtt://[USER@]HOST[:PORT]` of an external broker; none (the default) runs the embedded
    /// broker. `--broker`, `HUB_BROKER`.
    pub url: Option<String>,
    /// File whose first line is the hub's broker password (`HUB_BROKER_PASSWORD` wins).
    pub password_file: Option<PathBuf>,
    /// The password itself: from `HUB_BROKER_PASSWORD` only, never from the config file.
    #[serde(skip)]
    pub password: Option<String>,
    /// The hub's MQTT client id: stable across restarts so that its persistent session (and
    /// what the broker kept for it) is found again; unique per hub instance. Default
    /// `mc-hub-<hostname>`.
    pub client_id: Option<String>,
    /// Shared-subscription group. Default `mc-hub`.
    pub share_group: String,
    /// How long the broker keeps the hub's session (and QoS 1 messages for it) while the hub
    /// is away. Default 5 min. In a cluster the hubs use no persistent session (the others take
    /// the messages while one is away).
    #[serde(with = "crate::config::duration")]
    pub session_expiry: Duration,
    /// MQTT keep-alive of the hub's connection. Default 15 s.
    #[serde(with = "crate::config::duration")]
    pub keep_alive: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            url: None,
            password_file: None,
            password: None,
            client_id: None,
            share_group: DEFAULT_SHARE_GROUP.to_owned(),
            session_expiry: Duration::from_secs(300),
            keep_alive: Duration::from_secs(15),
        }
    }
}

/// A parsed `mqtt://[USER@]HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or address.
    pub host: String,
    /// Port (1883 when not given).
    pub port: u16,
    /// Username (`mc-hub` when not given).
    pub username: String,
}

impl std::str::FromStr for BrokerUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let rest = match s.split_once("://") {
            Some(("mqtt" | "tcp", rest)) => rest,
            Some(("mqtts" | "ssl", _)) => {
                return Err(format!(
                    "{s:?}: TLS to the broker is not built in; reach it over a private network or a TLS tunnel (stunnel, a sidecar) on loopback"
                ));
            }
            _ => return Err(format!("{s:?}: expected mqtt://[USER@]HOST[:PORT]")),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.contains('?') {
            return Err(format!(
                "{s:?}: expected mqtt://[USER@]HOST[:PORT] (no path)"
            ));
        }
        let (username, hostport) = match rest.rsplit_once('@') {
            Some((user, _)) if user.contains(':') => {
                return Err(format!(
                    "{s:?}: do not put the password in the URL; use HUB_BROKER_PASSWORD or [broker] password-file"
                ));
            }
            Some((user, hostport)) if !user.is_empty() => (user.to_owned(), hostport),
            Some(_) => return Err(format!("{s:?}: empty username")),
            None => (DEFAULT_USERNAME.to_owned(), rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            // [v6]:port
            Some((host, port)) if !host.ends_with(']') || hostport.starts_with('[') => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{s:?}: bad port {port:?}"))?;
                (host, port)
            }
            _ => (hostport, 1883),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{s:?}: no host"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            username,
        })
    }
}

impl BrokerConfig {
    /// Applies `HUB_BROKER` and `HUB_BROKER_PASSWORD`; `var` looks a variable up.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        if let Some(url) = var("HUB_BROKER").filter(|v| !v.is_empty()) {
            self.url = Some(url);
        }
        if let Some(password) = var("HUB_BROKER_PASSWORD") {
            self.password = Some(password);
        }
    }

    /// The external broker, if one is configured (checked by [`validate`](Self::validate)).
    pub fn external(&self) -> Result<Option<BrokerUrl>, ConfigError> {
        self.url
            .as_deref()
            .map(|u| {
                u.parse().map_err(|message| ConfigError::Invalid {
                    setting: "broker.url",
                    message,
                })
            })
            .transpose()
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.external()?;
        let group_ok = !self.share_group.is_empty()
            && self.share_group.len() <= 64
            && !self.share_group.contains(['/', '+', '#']);
        if !group_ok {
            return Err(ConfigError::Invalid {
                setting: "broker.share-group",
                message: format!(
                    "{:?}; 1 to 64 characters without '/', '+' or '#'",
                    self.share_group
                ),
            });
        }
        if let Some(id) = &self.client_id
            && (id.is_empty() || id.len() > 128)
        {
            return Err(ConfigError::Invalid {
                setting: "broker.client-id",
                message: format!("{id:?}; 1 to 128 characters"),
            });
        }
        let ranges = [
            (
                "broker.session-expiry",
                self.session_expiry,
                Duration::ZERO,
                Duration::from_secs(u32::MAX as u64),
            ),
            (
                "broker.keep-alive",
                self.keep_alive,
                Duration::from_secs(5),
                Duration::from_secs(3600),
            ),
        ];
        for (setting, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::Invalid {
                    setting,
                    message: format!(
                        "{}; must be between {} and {}",
                        humantime::format_duration(value),
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                });
            }
        }
        Ok(())
    }

    /// The hub's password: `HUB_BROKER_PASSWORD`, else the first line of `password-file`,
    /// else none (a broker that allows the hub without one).
    pub fn resolve_password(&self) -> Result<Option<String>, ConfigError> {
        if let Some(p) = &self.password {
            return Ok(Some(p.clone()));
        }
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
            setting: "broker.password-file",
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        Ok(Some(text.lines().next().unwrap_or_default().to_owned()))
    }

    /// The client id to use: the configured one, or `mc-hub-<hostname>`.
    pub fn client_id(&self) -> String {
        self.client_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "local".to_owned());
            format!("mc-hub-{host}")
        })
    }
}

/// What the ingest side of the external link needs.
pub struct ExternalIngest {
    /// Tracker events.
    pub events: mpsc::Sender<ModuleEvent>,
    /// Counters.
    pub metrics: Metrics,
    /// Per-module rate limit.
    pub limiter: ModuleRateLimiter,
    /// Registry lookups when a module's session opens.
    pub store: Store,
    /// Live connections (commands are routed by them).
    pub connections: LiveConnections,
    /// Cluster mode: messages for modules other hubs own are forwarded to them, and theirs
    /// for ours arrive in `inbox`.
    pub cluster: Option<ClusterIngest>,
}

/// The cluster side of the external ingest.
pub struct ClusterIngest {
    /// Membership and ownership.
    pub cluster: crate::cluster::Cluster,
    /// Sends to other hubs' inboxes.
    pub forwarder: crate::cluster::forward::Forwarder,
    /// Messages other hubs forwarded to this one.
    pub inbox: mpsc::Receiver<(bytes::Bytes, bytes::Bytes)>,
}

/// Connects to the external broker in the background (retrying until shutdown) and returns
/// the client commands are published with.
pub fn start(
    config: &BrokerConfig,
    url: &BrokerUrl,
    ingest: ExternalIngest,
    tasks: &tokio_util::task::TaskTracker,
    shutdown: &CancellationToken,
) -> Result<AsyncClient, ConfigError> {
    // One hub: a persistent session keeps what arrives while it restarts. Several hubs: none,
    // since brokers go on handing a shared subscription's messages to a member whose session
    // lives on, and a dead hub's share would wait for it instead of reaching the others.
    let in_cluster = ingest.cluster.is_some();
    let expiry = if in_cluster {
        0
    } else {
        config.session_expiry.as_secs().min(u32::MAX as u64) as u32
    };
    let mut options = MqttOptions::new(config.client_id(), url.host.clone(), url.port);
    options
        .set_keep_alive(config.keep_alive)
        .set_clean_start(in_cluster)
        .set_session_expiry_interval(Some(expiry))
        .set_credentials(
            url.username.clone(),
            config.resolve_password()?.unwrap_or_default(),
        );
    let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    let filters: Vec<Filter> = UPSTREAM_FILTERS
        .iter()
        .map(|f| {
            Filter::new(
                format!("$share/{}/{f}", config.share_group),
                QoS::AtLeastOnce,
            )
        })
        .collect();
    tasks.spawn(tracing::Instrument::instrument(
        run(
            eventloop,
            client.clone(),
            filters,
            ingest,
            shutdown.clone(),
        ),
        tracing::info_span!("ingest", transport = "mqtt", broker = %format!("{}:{}", url.host, url.port)),
    ));
    Ok(client)
}

/// Polls the connection until shutdown: decodes what modules publish (or forwards it to the
/// module's owner in a cluster), infers their sessions, and reports the link's state to the
/// tracker.
async fn run(
    eventloop: EventLoop,
    client: AsyncClient,
    filters: Vec<Filter>,
    ingest: ExternalIngest,
    shutdown: CancellationToken,
) {
    let ExternalIngest {
        events,
        metrics,
        limiter,
        store,
        connections,
        cluster,
    } = ingest;
    let mut sessions = InferredSessions::new(store, connections, metrics.clone())
        .with_cluster(cluster.as_ref().map(|c| c.cluster.clone()));
    // The event loop runs in its own task: its `poll` may be in the middle of writing a packet,
    // so it is never cancelled by a `select!` here; a bounded channel keeps backpressure. It
    // passes packets in batches (what one read from the socket brought), and they are
    // handled here one by one.
    let (polled_tx, mut polled) = mpsc::channel(POLLED_BATCHES);
    let mut batch = Vec::new().into_iter();
    let mut admitted = Vec::new();
    let poller = tokio::spawn(poll(eventloop, polled_tx));
    let (mut forwarded, forwarder) = match cluster {
        Some(c) => (Some(c.inbox), Some((c.cluster, c.forwarder))),
        None => (None, None),
    };
    let mut up = false;
    let set_up = |up: bool| {
        metrics
            .mqtt_ingest_up
            .store(up, std::sync::atomic::Ordering::Relaxed);
    };
    loop {
        let (topic, payload) = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some((topic, payload)) = async { forwarded.as_mut()?.recv().await }, if forwarded.is_some() => {
                // Sent on another hub's view of the members; on this one's, a third hub owns
                // it (views converge within a refresh): not ours to decide.
                if let Some((cluster, _)) = &forwarder
                    && owner_elsewhere(cluster, &topic).is_some()
                {
                    metrics.reject("not_owner");
                    continue;
                }
                (topic, payload)
            }
            polled = next_polled(&mut batch, &mut polled) => match polled {
                None => break,
                Some(Ok(Packet::ConnAck(ack))) => {
                    // A session the broker kept still has its subscriptions; subscribe anyway
                    // (idempotent) in case it was created by an older configuration.
                    if let Err(e) = client.try_subscribe_many(filters.clone()) {
                        tracing::error!(error = %e, "cannot subscribe to module topics");
                    }
                    tracing::info!(session_present = ack.session_present, "connected to the external broker");
                    continue;
                }
                Some(Ok(Packet::SubAck(ack))) => {
                    let refused = ack.return_codes.iter().any(|c| {
                        !matches!(c, rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_))
                    });
                    if refused {
                        tracing::error!(?ack.return_codes, "the broker refused the hub's subscriptions (check its ACL for the hub's user and that shared subscriptions are allowed)");
                    } else if !up {
                        up = true;
                        set_up(true);
                        if events.send(ModuleEvent::BrokerLink { up: true }).await.is_err() {
                            break;
                        }
                    }
                    continue;
                }
                Some(Ok(Packet::Publish(publish))) => {
                    if let Some((cluster, forwarder)) = &forwarder
                        && let Some(owner) = owner_elsewhere(cluster, &publish.topic)
                    {
                        forwarder
                            .forward(cluster.keys.inbox(&owner), &publish.topic, &publish.payload)
                            .await;
                        continue;
                    }
                    (publish.topic, publish.payload)
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    if up {
                        up = false;
                        set_up(false);
                        tracing::error!(error = %e, "external broker link lost; reconnecting (module timeouts are held meanwhile)");
                        if events.send(ModuleEvent::BrokerLink { up: false }).await.is_err() {
                            break;
                        }
                    }
                    continue;
                }
            },
        };
        let Some(event) = decode(&topic, &payload, &metrics, &limiter) else {
            continue;
        };
        metrics.messages_ingested.inc();
        metrics.mqtt_messages_ingested.inc();
        sessions.admit_into(event, &mut admitted).await;
        for event in admitted.drain(..) {
            if events.send(event).await.is_err() {
                set_up(false);
                poller.abort();
                return;
            }
        }
    }
    set_up(false);
    // A clean DISCONNECT: the broker keeps the session (and queues for it) until it expires.
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = next_polled(&mut batch, &mut polled).await {}
    })
    .await;
    poller.abort();
}

/// The next packet (or error) the poller passed on: from the batch at hand, else from the
/// next batch; `None` once the poller is gone.
async fn next_polled(
    batch: &mut std::vec::IntoIter<Result<Packet, String>>,
    polled: &mut mpsc::Receiver<Vec<Result<Packet, String>>>,
) -> Option<Result<Packet, String>> {
    loop {
        if let Some(item) = batch.next() {
            return Some(item);
        }
        // Cancel-safe: a batch is either received whole or left in the channel.
        *batch = polled.recv().await?.into_iter();
    }
}

/// In a cluster, the owner of the module a message is about when it is another hub.
fn owner_elsewhere(cluster: &crate::cluster::Cluster, topic: &[u8]) -> Option<std::sync::Arc<str>> {
    let topic = std::str::from_utf8(topic).ok()?;
    let module = mc_protocol::ModuleTopic::parse(topic).ok()?.module;
    cluster
        .members()
        .owner(module.as_str())
        .filter(|owner| **owner != *cluster.instance)
}

/// Polls the event loop, passing incoming packets (and errors) on; after an error, waits
/// before the next attempt (backoff 0.5 s … 10 s, reset by a successful connection).
///
/// One `poll` reads what the socket holds and parses up to ten packets into the event loop's
/// queue; those already parsed go on together with the first, one channel message (and one
/// wake-up of the ingest loop) per read instead of one per packet.
async fn poll(mut eventloop: EventLoop, out: mpsc::Sender<Vec<Result<Packet, String>>>) {
    let mut failures = 0u32;
    loop {
        let mut next = Some(eventloop.poll().await);
        // The first packet and those its read parsed along with it (packets are large: no
        // regrowing).
        let mut items = Vec::with_capacity(1 + eventloop.state.events.len());
        let mut disconnected = false;
        while let Some(polled) = next.take() {
            match polled {
                Ok(Event::Incoming(packet)) => {
                    if matches!(packet, Packet::ConnAck(_)) {
                        failures = 0;
                    }
                    items.push(Ok(packet));
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                    disconnected = true;
                    break;
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => {
                    if failures == 0 || failures.is_power_of_two() {
                        tracing::warn!(error = %e, attempts = failures + 1, "external broker unreachable or connection lost; retrying");
                    }
                    failures = failures.saturating_add(1);
                    items.push(Err(e.to_string()));
                    break;
                }
            }
            // What the last read parsed already waits here; `poll` would return it at once.
            next = eventloop.state.events.pop_front().map(Ok);
        }
        let failed = matches!(items.last(), Some(Err(_)));
        if !items.is_empty() && out.send(items).await.is_err() {
            return;
        }
        if disconnected {
            return;
        }
        if failed {
            let delay =
                Duration::from_millis(250 * 2u64.pow(failures.min(6))).min(MAX_RECONNECT_DELAY);
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let u: BrokerUrl = "mqtt://broker.lan:1884".parse().expect("valid");
        assert_eq!(
            u,
            BrokerUrl {
                host: "broker.lan".into(),
                port: 1884,
                username: "mc-hub".into()
            }
        );
        let u: BrokerUrl = "mqtt://hub-a@127.0.0.1".parse().expect("valid");
        assert_eq!(
            (u.host.as_str(), u.port, u.username.as_str()),
            ("127.0.0.1", 1883, "hub-a")
        );
        let u: BrokerUrl = "mqtt://[::1]:1885/".parse().expect("valid");
        assert_eq!((u.host.as_str(), u.port), ("::1", 1885));
        for bad in [
            "broker:1883",
            "http://broker",
            "mqtt://user:secret@broker",
            "mqtts://broker",
            "mqtt://broker:0",
            "mqtt://broker:99999",
            "mqtt://broker/x",
            "mqtt://",
            "mqtt://@broker",
        ] {
            assert!(bad.parse::<BrokerUrl>().is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn settings_are_checked() {
        let ok = BrokerConfig {
            url: Some("mqtt://localhost".into()),
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        for bad in [
            BrokerConfig {
                url: Some("localhost".into()),
                ..Default::default()
            },
            BrokerConfig {
                share_group: "a/b".into(),
                ..Default::default()
            },
            BrokerConfig {
                keep_alive: Duration::from_secs(1),
                ..Default::default()
            },
            BrokerConfig {
                client_id: Some(String::new()),
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let mut env = BrokerConfig::default();
        env.apply_env(|k| match k {
            "HUB_BROKER" => Some("mqtt://b".into()),
            "HUB_BROKER_PASSWORD" => Some("pw".into()),
            _ => None,
        });
        assert_eq!(env.url.as_deref(), Some("mqtt://b"));
        assert_eq!(env.resolve_password().ok().flatten().as_deref(), Some("pw"));
    }
}
