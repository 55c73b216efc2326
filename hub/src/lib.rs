//! mc-hub: the telemetry hub for MC station modules.
//!
//! # Layout (follow a message from a module to a browser)
//! - [`broker`]: the hub's own MQTT server for modules ([`broker::gateway`]: authenticates
//!   modules, runs their sessions with their topic ACL, reports connection lifecycles), or its
//!   client of an external broker ([`broker::external`]).
//! - [`ingest`]: transports → typed [`ingest::ModuleEvent`]s ([`ingest::mqtt`] decodes payloads;
//!   [`ingest::serial`] serves modules on serial ports with the native link protocol).
//! - [`connections`]: every live module connection, whatever its transport, and the hub-wide
//!   session numbers; the registry closes connections through it, commands are routed by it.
//! - [`tracker`]: the single owner of module state; it drives [`liveness`] (online/offline,
//!   deadlines, damping) and [`state`] (cache, revisions, diff) and emits only real changes.
//! - [`realtime`]: Socket.IO rooms and [`realtime::EventsManager`]; event names and payloads in
//!   [`realtime::events`].
//! - [`web`]: the axum app: login/session, snapshot API, commands, embedded dashboard.
//! - [`commands`]: hub → module commands, over MQTT (to the module's connection, or through the
//!   external broker) or serial
//!   (sent by the port task, acknowledged by the module); queued while a module is offline.
//! - [`store`]: SQLite (users, sessions, module registry, module state snapshots).
//!   [`config`]: settings. [`demo`]: `hub --demo`. [`metrics`]: counters.
//!
//! [`start`] takes its listeners and a shutdown token from the caller, so tests bind
//! `127.0.0.1:0` and run a real hub in one line.

pub mod authz;
pub mod broker;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod connections;
pub mod demo;
pub mod ingest;
pub mod liveness;
pub mod metrics;
pub mod process;
pub mod realtime;
pub mod registry;
pub mod state;
pub mod stats;
pub mod store;
pub mod tracker;
pub mod web;

use std::{net::SocketAddr, sync::Arc};

use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use config::Config;
use metrics::Metrics;
use store::Store;
use tracker::{Tracker, TrackerHandle};

/// Errors that stop the hub from starting.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A listen address cannot be bound.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// HTTP or MQTT.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why (address in use, permission denied...).
        source: std::io::Error,
    },
    /// The database cannot be used.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The cluster (Redis) cannot be joined.
    #[error("cannot join the cluster: {0}")]
    Cluster(#[from] cluster::ClusterError),
    /// Demo setup failed.
    #[error("demo setup failed: {0}")]
    Demo(String),
}

/// The hub's listening sockets, bound before start so that callers (tests) can use port 0.
pub struct Listeners {
    /// HTTP + Socket.IO.
    pub http: TcpListener,
    /// MQTT, for the embedded broker (none with an external broker).
    pub mqtt: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses of `config`, with a clear error for each.
    pub async fn bind(config: &Config) -> Result<Self, HubError> {
        let bind = async |what, addr| {
            TcpListener::bind(addr)
                .await
                .map_err(|source| HubError::Bind { what, addr, source })
        };
        Ok(Self {
            http: bind("HTTP", config.http).await?,
            mqtt: match config.broker.url {
                Some(_) => None,
                None => Some(bind("MQTT", config.mqtt).await?),
            },
        })
    }
}

/// A started hub: its addresses and handles, for callers and tests.
pub struct RunningHub {
    /// Where HTTP listens.
    pub http_addr: SocketAddr,
    /// Where modules connect over MQTT: the embedded broker's listener, or the external
    /// broker (its first address).
    pub mqtt_addr: SocketAddr,
    /// The database.
    pub store: Store,
    /// Counters.
    pub metrics: Metrics,
    /// The tracker.
    pub tracker: TrackerHandle,
    /// Realtime events and sockets.
    pub realtime: realtime::EventsManager,
    /// Demo credentials, when demo mode is on.
    pub demo: Option<demo::DemoInfo>,
    /// The serial ports served (each is opened, and reopened, in the background).
    pub serial_ports: Vec<config::SerialPortSpec>,
    /// Live module connections, MQTT and serial.
    pub connections: connections::LiveConnections,
    tasks: TaskTracker,
}

impl RunningHub {
    /// Waits until every task has stopped (after the shutdown token was cancelled).
    pub async fn stopped(self) {
        self.tasks.wait().await;
    }
}

/// Starts the hub on `listeners`; it runs until `shutdown` is cancelled.
pub async fn start(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<RunningHub, HubError> {
    config.validate()?;
    let database = config.database();
    // The URL's password is masked (`Database`'s Display).
    tracing::info!(%database, "opening the database");
    let store = Store::connect(&database, config.session_ttl)
        .await?
        .with_session_idle(config.session_idle);
    let metrics = Metrics::default();
    let tasks = TaskTracker::new();
    let http_addr = local_addr(&listeners.http, "HTTP")?;
    let external = config.broker.external()?;

    // Realtime: Socket.IO handlers and the events manager.
    let (socketio, root_namespace) = realtime::adapter::builder();
    let (socketio_layer, io) = socketio
        // Polling bodies (max_payload) and WebSocket messages/frames are capped alike.
        .max_payload(config.realtime.max_message as u64)
        .ws_max_message_size(config.realtime.max_message)
        .ws_max_frame_size(config.realtime.max_message)
        .max_buffer_size(config.realtime.socket_buffer)
        // What dashboards send is small (a page join, pings); bigger messages take more
        // reads. 4 KiB (engineioxide's default) made an idle dashboard cost 12.8 KB, 1 KiB 10.1.
        .ws_read_buffer_size(1024)
        .build_layer();
    // A cluster: join it first (membership, the shared event stream).
    let cluster = match &config.cluster.redis {
        Some(_) => {
            let instance = config
                .cluster
                .instance
                .clone()
                .unwrap_or_else(|| config.broker.client_id());
            let cluster = cluster::Cluster::join(&config.cluster, instance).await?;
            tasks.spawn(cluster::membership::run(cluster.clone(), shutdown.clone()));
            tracing::info!(instance = %cluster.instance, members = ?cluster.members().list(), "joined the cluster");
            Some(cluster)
        }
        None => None,
    };
    let mut emitter = realtime::EventsManager::new(
        io.clone(),
        root_namespace,
        metrics.clone(),
        &config.realtime,
    );
    let mut consume_from = None;
    if let Some(cluster) = &cluster {
        let relay = cluster::relay::start_publisher(cluster, metrics.clone(), &tasks, &shutdown);
        emitter = emitter.with_relay(relay);
        let (epoch, head) = cluster::relay::epoch_and_head(cluster)
            .await
            .map_err(cluster::ClusterError::from)?;
        let backfill = cluster::relay::backfill(cluster, config.realtime.replay_capacity)
            .await
            .map_err(cluster::ClusterError::from)?;
        let from = emitter.join_shared(epoch, head, backfill).await;
        consume_from = Some(from);
    }
    realtime::register_handlers(&io, store.clone(), emitter.clone());
    let events = emitter.clone();
    let realtime_handle = emitter.clone();
    tasks.spawn(emitter.clone().run_catch_up(shutdown.clone()));

    // Commands for offline modules wait here; the tracker says when their module is back.
    let (command_queue, queue_signals) =
        commands::queue::CommandQueue::new(&config.commands, metrics.clone());
    // The tracker owns module state.
    let (mut tracker, tracker_handle) = Tracker::new(
        config.liveness.clone(),
        config.deadbands.clone(),
        config.realtime.batch_window,
        emitter,
        metrics.clone(),
    );
    tracker = tracker.with_command_queue(command_queue.clone());
    let tracker_handle = match &cluster {
        Some(cluster) => {
            tracker = tracker.with_cluster(cluster.clone());
            tracker_handle.with_shared(cluster.clone())
        }
        None => tracker_handle,
    };
    // Module states: the last known ones come back (stale), changes are saved in batches. In
    // a cluster, modules are adopted from the shared state instead.
    let state_store = store::StateStore::connect(&database).await?;
    if cluster.is_none() {
        tracker.restore(state_store.load().await?);
    }
    let (state_writer, dirty) = store::StateWriter::new(state_store, metrics.clone());
    tracker.persist_states(dirty);
    tasks.spawn(state_writer.run());
    // A hub without its tracker is no hub: if the task ever fails, stop everything (loudly)
    // rather than keep accepting modules whose events go nowhere.
    // The shared stream's consumer starts once the tracker can hear of a lost stream.
    if let (Some(cluster), Some(from)) = (&cluster, consume_from) {
        tasks.spawn(cluster::relay::consume(
            cluster.clone(),
            realtime_handle.clone(),
            tracker_handle.events(),
            from,
            shutdown.clone(),
        ));
    }
    let tracker_task = tokio::spawn(tracker.run(shutdown.clone()));
    let stop_all = shutdown.clone();
    tasks.spawn(async move {
        if let Err(e) = tracker_task.await {
            tracing::error!(error = %e, "tracker task failed: stopping the hub");
        }
        stop_all.cancel();
    });

    // MQTT: the embedded broker behind its gateway, or an external broker.
    let limiter = ingest::rate::ModuleRateLimiter::new(config.ingest.rate_limit());
    let connections = connections::LiveConnections::default();
    let (mqtt_out, mqtt_addr) = match (&external, listeners.mqtt) {
        (Some(url), _) => {
            let cluster_ingest = cluster.as_ref().map(|cluster| {
                let (inbox_tx, inbox) = tokio::sync::mpsc::channel(4096);
                tasks.spawn(cluster::forward::receive(
                    cluster.clone(),
                    inbox_tx,
                    shutdown.clone(),
                ));
                tasks.spawn(cluster::live::follow_ownership(
                    cluster.clone(),
                    tracker_handle.events(),
                    connections.clone(),
                    shutdown.clone(),
                ));
                broker::external::ClusterIngest {
                    cluster: cluster.clone(),
                    forwarder: cluster::forward::Forwarder::start(cluster, &tasks, &shutdown),
                    inbox,
                }
            });
            let ingest = broker::external::ExternalIngest {
                events: tracker_handle.events(),
                metrics: metrics.clone(),
                limiter: limiter.clone(),
                store: store.clone(),
                connections: connections.clone(),
                cluster: cluster_ingest,
            };
            let client = broker::external::start(&config.broker, url, ingest, &tasks, &shutdown)?;
            let addr = tokio::net::lookup_host((url.host.as_str(), url.port))
                .await
                .ok()
                .and_then(|mut addrs| addrs.next())
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], url.port)));
            (Some(client), addr)
        }
        (None, Some(mqtt_listener)) => {
            let mqtt_addr = local_addr(&mqtt_listener, "MQTT")?;
            start_gateway(
                &config,
                &store,
                &metrics,
                &tracker_handle,
                &limiter,
                &connections,
                mqtt_listener,
                &tasks,
                &shutdown,
            );
            (None, mqtt_addr)
        }
        (None, None) => {
            return Err(HubError::Config(config::ConfigError::Invalid {
                setting: "mqtt",
                message: "no MQTT listener was bound for the embedded broker".into(),
            }));
        }
    };
    let commands =
        commands::CommandRouter::new(mqtt_out, connections.clone(), command_queue.clone());
    tasks.spawn(commands::delivery::run(
        commands.clone(),
        queue_signals,
        shutdown.clone(),
    ));

    // Serial: one task per port, opened (and reopened) in the background.
    let serial = ingest::serial::SerialContext {
        store: store.clone(),
        events: tracker_handle.events(),
        metrics: metrics.clone(),
        connections: connections.clone(),
        heartbeat_timeout: config.liveness.heartbeat_timeout,
        limiter,
    };
    ingest::serial::start(&config.serial, &serial, &tasks, &shutdown);

    // HTTP.
    let registry_notifier = registry::RegistryNotifier::default();
    let state = web::AppState {
        store: store.clone(),
        tracker: tracker_handle.clone(),
        session_ttl: config.session_ttl,
        commands,
        connections: connections.clone(),
        events,
        throttle: Arc::default(),
        registry: registry_notifier.clone(),
        stats: Arc::new(stats::StatsCollector::new(
            store.clone(),
            tracker_handle.clone(),
            realtime_handle.clone(),
            metrics.clone(),
        )),
        metrics: metrics.clone(),
        remote_commands: cluster.clone().map(cluster::commands::RemoteCommands::new),
    };
    if let Some(remote) = state.remote_commands.clone() {
        let for_peers = state.clone();
        tasks.spawn(cluster::commands::serve(
            remote,
            move |module, action| {
                web::commands::execute_for_peer(for_peers.clone(), module, action)
            },
            shutdown.clone(),
        ));
    }
    let origins = web::origin::OriginPolicy {
        allowed: Arc::new(config.allowed_origins.clone()),
        metrics: metrics.clone(),
    };
    let deflate = web::ws_deflate::WsDeflateLayer::new(
        config.realtime.max_message,
        config.realtime.ws_deflate,
    );
    let app = web::app(
        state,
        socketio_layer,
        deflate,
        origins,
        config.http_request_timeout,
    );
    let watcher = registry::RegistryWatcher {
        store: store.clone(),
        events: realtime_handle.clone(),
        tracker: tracker_handle.clone(),
        connections: connections.clone(),
        commands: command_queue.clone(),
        notifier: registry_notifier,
        metrics: metrics.clone(),
    };
    tasks.spawn(watcher.run(shutdown.clone()));
    if config.realtime.enable_stats {
        let collector = stats::StatsCollector::new(
            store.clone(),
            tracker_handle.clone(),
            realtime_handle.clone(),
            metrics.clone(),
        );
        tasks.spawn(stats::run(
            collector,
            config.realtime.stats_interval,
            shutdown.clone(),
        ));
    }
    tasks.spawn(web::serve::serve(
        listeners.http,
        app,
        web::serve::ServeLimits {
            max_connections: config.http_max_connections,
            header_timeout: config.http_header_timeout,
        },
        metrics.clone(),
        tasks.clone(),
        shutdown.clone(),
    ));

    let demo = if config.demo.enabled {
        Some(
            demo::start(&config, &store, mqtt_addr, &tasks, &shutdown)
                .await
                .map_err(|e| HubError::Demo(format!("{e:#}")))?,
        )
    } else {
        None
    };

    tasks.close();
    tracing::info!(%http_addr, %mqtt_addr, "hub started");
    Ok(RunningHub {
        http_addr,
        mqtt_addr,
        store,
        metrics,
        tracker: tracker_handle,
        realtime: realtime_handle,
        demo,
        serial_ports: config.serial.clone(),
        connections,
        tasks,
    })
}

/// The hub's own MQTT server: the gateway on `listener`.
#[allow(clippy::too_many_arguments)]
fn start_gateway(
    config: &Config,
    store: &Store,
    metrics: &Metrics,
    tracker: &TrackerHandle,
    limiter: &ingest::rate::ModuleRateLimiter,
    connections: &connections::LiveConnections,
    listener: TcpListener,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) {
    if config.mqtt_log_segment_bytes.is_some() || config.mqtt_log_segments.is_some() {
        tracing::warn!(
            "mqtt-log-segment-bytes and mqtt-log-segments are no longer used (the hub serves MQTT itself, with no broker log): remove them"
        );
    }
    // MQTT ingest is up as long as the gateway runs (readiness).
    metrics
        .mqtt_ingest_up
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let gateway = Arc::new(broker::gateway::Gateway::new(
        store.clone(),
        tracker.events(),
        metrics.clone(),
        limiter.clone(),
        config.max_packet,
        connections.clone(),
    ));
    tasks.spawn(gateway.run(listener, tasks.clone(), shutdown.clone()));
}

fn local_addr(listener: &TcpListener, what: &'static str) -> Result<SocketAddr, HubError> {
    listener.local_addr().map_err(|source| HubError::Bind {
        what,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}
