//! The realtime layer: Socket.IO on axum. Sockets authenticate with the login session cookie,
//! join their rooms, and [`EventsManager`] targets events at everyone, admins, a page or a user.
//!
//! Every event is one entry of a stream with process-wide offsets, kept a while in the
//! [`replay`] buffer so that a client that reconnects resumes where it stopped
//! (`docs/REALTIME.md`).

pub mod adapter;
pub mod delivery;
pub mod events;
pub mod replay;
pub mod rooms;

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use socketioxide::{extract::TryData, handler::ConnectHandler};

use crate::{
    config::RealtimeConfig, metrics::Metrics, store::Store, web::auth::session_token_from_headers,
};
use adapter::{Io, RootNamespace, Socket};
use delivery::{Clients, SlowClientLimits};
use replay::{Audience, ReplayBounds, ReplayBuffer, ResumePoint, Viewer};
use rooms::Page;

/// Emits events to targeted audiences, each with its stream offset. Cheap to clone; any task may
/// hold one.
#[derive(Clone)]
pub struct EventsManager {
    io: Io,
    metrics: Metrics,
    /// The stream: offsets, replay buffer and the clients it is delivered to. Held across
    /// "assign offset, keep, deliver" so that every socket receives events in offset order,
    /// and while a socket registers and gets what it missed, so that nothing falls between
    /// its replay and its live events.
    stream: Arc<tokio::sync::Mutex<Stream>>,
    /// The stream's head, readable without the lock (a socket notes it when it authenticates).
    head: Arc<std::sync::atomic::AtomicU64>,
    /// What dashboards are told about reconnecting (`GET /api/realtime/config`).
    client_defaults: ClientDefaults,
    /// Cluster mode: events go through the shared stream (`cluster::relay`) and come back to
    /// every hub, this one included, through [`apply_shared`](Self::apply_shared).
    relay: Option<crate::cluster::relay::Relay>,
    /// Cluster mode: what this handle emits is published once per key, whichever hub sends
    /// it first (each hub applies the registry change log; see [`once`](Self::once)).
    once: Option<Arc<str>>,
}

/// Reconnection settings for dashboards: the answer of `GET /api/realtime/config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientDefaults {
    /// Attempts before a dashboard gives up; `null`: never.
    pub max_reconnect_attempts: Option<u32>,
    /// First delay between attempts, in milliseconds.
    pub reconnect_delay: u64,
    /// Longest delay between attempts, in milliseconds.
    pub max_reconnect_delay: u64,
}

impl ClientDefaults {
    fn from_config(config: &RealtimeConfig) -> Self {
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            max_reconnect_attempts: Some(config.max_reconnect_attempts).filter(|n| *n > 0),
            reconnect_delay: ms(config.reconnect_delay),
            max_reconnect_delay: ms(config.max_reconnect_delay),
        }
    }
}

/// What the stream lock guards.
pub struct Stream {
    /// Offsets and what is kept for resuming clients.
    pub replay: ReplayBuffer,
    /// The registered sockets, each served with its own backpressure.
    clients: Clients,
}

impl std::ops::Deref for Stream {
    type Target = ReplayBuffer;
    fn deref(&self) -> &ReplayBuffer {
        &self.replay
    }
}

impl std::ops::DerefMut for Stream {
    fn deref_mut(&mut self) -> &mut ReplayBuffer {
        &mut self.replay
    }
}

/// How often clients that are behind are retried (and checked against their limits) when no
/// event comes to do it.
const CATCH_UP_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

impl EventsManager {
    /// Wraps a Socket.IO handle and its root namespace ([`adapter::builder`]); starts a new
    /// stream epoch.
    pub fn new(io: Io, root: RootNamespace, metrics: Metrics, config: &RealtimeConfig) -> Self {
        let epoch = format!("{:032x}", rand::random::<u128>());
        let bytes = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let bounds = ReplayBounds {
            capacity: config.replay_capacity,
            max_bytes: bytes(config.replay_max_bytes),
            max_age: config.replay_max_age,
            max_missed: config.replay_max_missed,
            max_missed_bytes: bytes(config.replay_max_missed_bytes),
        };
        let limits = SlowClientLimits {
            max_backlog_bytes: bytes(config.slow_client_max_backlog),
            max_lag: config.slow_client_timeout,
        };
        Self {
            io,
            stream: Arc::new(tokio::sync::Mutex::new(Stream {
                replay: ReplayBuffer::new(epoch, bounds),
                clients: Clients::new(limits, metrics.clone(), root),
            })),
            head: Arc::default(),
            metrics,
            client_defaults: ClientDefaults::from_config(config),
            relay: None,
            once: None,
        }
    }

    /// Cluster mode: publishes through `relay` instead of delivering at once.
    pub fn with_relay(mut self, relay: crate::cluster::relay::Relay) -> Self {
        self.relay = Some(relay);
        self
    }

    /// Whether events go through the cluster's shared stream.
    pub fn is_shared(&self) -> bool {
        self.relay.is_some()
    }

    /// A handle whose events are published once per `key` (plus event and audience) across
    /// the cluster: every hub applies registry change `key`, one copy of each event reaches
    /// clients. Without a cluster, the same handle.
    pub fn once(&self, key: impl std::fmt::Display) -> Self {
        let mut this = self.clone();
        if this.relay.is_some() {
            this.once = Some(key.to_string().into());
        }
        this
    }

    fn once_key(&self, what: impl std::fmt::Display) -> Option<String> {
        self.once.as_ref().map(|k| format!("{k}:{what}"))
    }

    /// Cluster mode: joins the shared stream at `head` of `epoch`, keeping `backfill` (the
    /// newest entries, oldest first) for resuming clients; returns the offset to read after.
    pub async fn join_shared(
        &self,
        epoch: String,
        head: u64,
        backfill: Vec<crate::cluster::relay::Incoming>,
    ) -> u64 {
        let start = backfill
            .first()
            .map_or(head, |first| first.offset.saturating_sub(1));
        self.stream.lock().await.replay.start_at(epoch, start);
        self.head.store(start, std::sync::atomic::Ordering::Release);
        let last = backfill.last().map_or(head, |e| e.offset.max(head));
        self.apply_shared(backfill).await;
        last
    }

    /// Cluster mode: the shared stream started over (Redis lost it, a new epoch): every client
    /// is cut off and reconnects to a snapshot, since no offset of the old epoch means
    /// anything now.
    pub async fn restart_shared(&self, epoch: String, head: u64) {
        let mut stream = self.stream.lock().await;
        stream.replay.start_over(epoch, head);
        stream.clients.cut_off_where(|_| true);
        if let Some(ns) = self.io.of("/")
            && let Err(e) = ns.disconnect().await
        {
            tracing::debug!(error = %e, "could not disconnect some sockets");
        }
        self.head.store(head, std::sync::atomic::Ordering::Release);
    }

    /// Cluster mode: entries read back from the shared stream, in offset order: kept for
    /// replay and delivered to this hub's sockets, barriers and session ends applied here.
    pub async fn apply_shared(&self, entries: Vec<crate::cluster::relay::Incoming>) {
        use crate::cluster::relay::Kind;
        let mut stream = self.stream.lock().await;
        let now = tokio::time::Instant::now();
        for entry in entries {
            match entry.kind {
                Kind::Event => {
                    let Some((event, payload)) = entry.event else {
                        continue;
                    };
                    let kept = stream.replay.push_at(
                        entry.offset,
                        entry.audience,
                        replay::Entry::Event {
                            event,
                            payload: payload.clone(),
                        },
                        now,
                    );
                    if kept {
                        stream
                            .clients
                            .deliver(entry.audience, event, &payload, entry.offset, now);
                        self.metrics.emitted(event);
                    }
                }
                Kind::Barrier { user_id, cut_off } => {
                    let kept = stream.replay.push_at(
                        entry.offset,
                        Audience::User(user_id),
                        replay::Entry::Barrier,
                        now,
                    );
                    if kept && cut_off {
                        stream
                            .clients
                            .cut_off_where(|c| c.viewer.user_id == user_id);
                        if let Err(e) = self.io.to(rooms::user(user_id)).disconnect().await {
                            tracing::debug!(error = %e, "could not disconnect some sockets of a user");
                        }
                    }
                }
                Kind::SessionEnded { token_hash } => {
                    if entry.offset > stream.replay.head() {
                        stream.replay.skip_to(entry.offset);
                        stream
                            .clients
                            .cut_off_where(|c| c.session_hash == token_hash);
                        if let Err(e) = self.io.to(rooms::session(&token_hash)).disconnect().await {
                            tracing::debug!(error = %e, "could not disconnect some sockets of a session");
                        }
                    }
                }
                Kind::StateOnly | Kind::Forget => {}
            }
        }
        self.head
            .store(stream.replay.head(), std::sync::atomic::Ordering::Release);
    }

    /// An event about a module whose shared state `change` describes (cluster mode: published
    /// only if the guard holds, with the state, in one step). Without a cluster (or a change),
    /// a plain emit to the module's audience.
    pub async fn emit_module_change<T: Serialize + ?Sized>(
        &self,
        owner: Option<i64>,
        event: &'static str,
        data: &T,
        change: Option<crate::cluster::relay::ModuleChange>,
    ) {
        let audience = Audience::Module { owner };
        let (Some(relay), Some(change)) = (&self.relay, change) else {
            return self.emit(audience, event, data).await;
        };
        let Some(payload) = self.serialize(event, data) else {
            return;
        };
        relay
            .publish(crate::cluster::relay::Outgoing {
                kind: crate::cluster::relay::Kind::Event,
                audience,
                event: Some((event, payload)),
                module: Some(change),
                once: None,
            })
            .await;
    }

    /// Cluster mode: a module's shared state changed without an event (last seen, firmware;
    /// `Kind::StateOnly`), or goes with the module (`Kind::Forget`).
    pub async fn publish_state(
        &self,
        kind: crate::cluster::relay::Kind,
        change: crate::cluster::relay::ModuleChange,
    ) {
        if let Some(relay) = &self.relay {
            relay
                .publish(crate::cluster::relay::Outgoing {
                    kind,
                    audience: Audience::Everyone,
                    event: None,
                    module: Some(change),
                    once: None,
                })
                .await;
        }
    }

    fn serialize<T: Serialize + ?Sized>(
        &self,
        event: &'static str,
        data: &T,
    ) -> Option<Arc<serde_json::value::RawValue>> {
        match serde_json::value::to_raw_value(data) {
            Ok(p) => Some(p.into()),
            Err(e) => {
                self.metrics.emit_errors.inc();
                tracing::error!(event, error = %e, "event payload does not serialize");
                None
            }
        }
    }

    /// Cluster mode: publishes a control entry (barrier, session end) through the relay.
    async fn publish_control(&self, kind: crate::cluster::relay::Kind, audience: Audience) -> bool {
        let Some(relay) = &self.relay else {
            return false;
        };
        let once = self.once_key(format!("{kind:?}"));
        relay
            .publish(crate::cluster::relay::Outgoing {
                kind,
                audience,
                event: None,
                module: None,
                once,
            })
            .await;
        true
    }

    /// Retries the clients that are behind until `shutdown` (see [`delivery`]).
    pub async fn run_catch_up(self, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(CATCH_UP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = tokio::time::Instant::now();
            self.stream.lock().await.clients.tick(now);
        }
    }

    /// To every connected client.
    pub async fn broadcast<T: Serialize + ?Sized>(&self, event: &'static str, data: &T) {
        self.emit(Audience::Everyone, event, data).await;
    }

    /// To admins only.
    pub async fn emit_to_admins<T: Serialize + ?Sized>(&self, event: &'static str, data: &T) {
        self.emit(Audience::Admins, event, data).await;
    }

    /// To the clients of one page.
    pub async fn emit_to_page<T: Serialize + ?Sized>(
        &self,
        page: Page,
        event: &'static str,
        data: &T,
    ) {
        self.emit(Audience::Page(page), event, data).await;
    }

    /// To every tab of one user.
    pub async fn emit_to_user<T: Serialize + ?Sized>(
        &self,
        user_id: i64,
        event: &'static str,
        data: &T,
    ) {
        self.emit(Audience::User(user_id), event, data).await;
    }

    /// To admins and every tab of one user (each socket once).
    pub async fn emit_to_admins_and_user<T: Serialize + ?Sized>(
        &self,
        user_id: i64,
        event: &'static str,
        data: &T,
    ) {
        self.emit_to_module_audience(Some(user_id), event, data)
            .await;
    }

    /// To whoever may see a module ([`crate::authz::module_audience`]), each socket once.
    pub async fn emit_to_module_audience<T: Serialize + ?Sized>(
        &self,
        owner: Option<i64>,
        event: &'static str,
        data: &T,
    ) {
        self.emit(Audience::Module { owner }, event, data).await;
    }

    /// Assigns the next offset, keeps the event for replay and emits `(payload, offset)` to its
    /// audience, all under the stream lock (the local adapter's emit only queues packets).
    async fn emit<T: Serialize + ?Sized>(&self, audience: Audience, event: &'static str, data: &T) {
        let Some(payload) = self.serialize(event, data) else {
            return;
        };
        if let Some(relay) = &self.relay {
            let once = self.once_key(format_args!(
                "{event}:{}",
                crate::cluster::relay::audience_code(audience)
            ));
            relay
                .publish(crate::cluster::relay::Outgoing {
                    kind: crate::cluster::relay::Kind::Event,
                    audience,
                    event: Some((event, payload)),
                    module: None,
                    once,
                })
                .await;
            return;
        }
        let mut stream = self.stream.lock().await;
        let now = tokio::time::Instant::now();
        let offset = stream.replay.push(audience, event, payload.clone(), now);
        self.head
            .store(offset, std::sync::atomic::Ordering::Release);
        stream
            .clients
            .deliver(audience, event, &payload, offset, now);
        drop(stream);
        self.metrics.emitted(event);
    }

    /// This process's stream epoch.
    pub async fn epoch(&self) -> String {
        self.stream.lock().await.epoch().to_owned()
    }

    /// The offset of the last event emitted.
    pub async fn head(&self) -> u64 {
        self.stream.lock().await.head()
    }

    /// Reconnection settings for dashboards.
    pub fn client_defaults(&self) -> ClientDefaults {
        self.client_defaults
    }

    /// Joins a freshly authenticated socket to its rooms and greets it with `rt_session`: where
    /// the stream stands and, when it resumes, what it missed (`docs/REALTIME.md`).
    async fn register(&self, socket: &Socket) {
        let Some(user) = socket.extensions.get::<SocketUser>() else {
            return;
        };
        let handshake = socket
            .extensions
            .get::<ClientHandshake>()
            .unwrap_or_default();
        handshake.count(&self.metrics);
        let viewer = Viewer {
            user_id: user.user_id,
            is_admin: user.is_admin,
            page: user.page,
        };
        let (epoch, offset, missed) = {
            let mut stream = self.stream.lock().await;
            socket.join(rooms::user(user.user_id));
            if user.is_admin {
                socket.join(rooms::ADMINS);
            }
            socket.join(user.page.room());
            socket.join(rooms::session(&user.session_hash));
            // The client may have gone while this waited for the lock: socketioxide removed it
            // from its rooms already, and the joins above would keep it there forever. Its
            // close marks it disconnected before it leaves its rooms, so either it sees our
            // joins or we see it disconnected.
            if !socket.connected() {
                socket.leave_all();
                tracing::debug!(socket = %socket.id, "client gone before it registered");
                return;
            }
            // Its rights were read when it authenticated; if they changed since (a barrier
            // for its user came after), it must reconnect to get the current ones.
            if stream.barrier_after(user.user_id, user.authenticated_at) {
                socket.leave_all();
                drop(stream);
                tracing::info!(socket = %socket.id, user_id = user.user_id, "rights changed while the client connected: disconnecting it");
                if let Err(e) = socket.clone().disconnect() {
                    tracing::debug!(socket = %socket.id, error = %e, "could not disconnect client");
                }
                return;
            }
            stream
                .clients
                .add(socket.clone(), viewer, user.session_hash.clone());
            let missed = if handshake.resumes_someone_else(&user) {
                Err(replay::NotResumed::EntitlementChanged)
            } else {
                stream.missed(
                    handshake.resume.as_ref(),
                    &viewer,
                    tokio::time::Instant::now(),
                )
            };
            let missed = missed.map(|events| {
                events
                    .into_iter()
                    .filter_map(|r| match &r.entry {
                        replay::Entry::Event { event, payload } => {
                            Some(events::MissedEvent(event, payload.clone(), r.offset))
                        }
                        // `missed` refuses to resume past a barrier: never reached.
                        replay::Entry::Barrier => None,
                    })
                    .collect::<Vec<_>>()
            });
            (stream.epoch().to_owned(), stream.head(), missed)
        };
        // Sent after the lock: live events may arrive first; clients queue them (the contract).
        let resumed = missed.is_ok();
        if let Err(reason) = &missed
            && handshake.resume.is_some()
        {
            tracing::debug!(socket = %socket.id, ?reason, "client cannot resume: snapshot");
        }
        if resumed {
            self.metrics.resumes.inc();
        }
        tracing::info!(socket = %socket.id, user_id = user.user_id, page = user.page.as_str(), resumed, "client registered");
        let info = events::SessionInfo {
            user_id: user.user_id,
            is_admin: user.is_admin,
            page: user.page.as_str().to_owned(),
            epoch,
            offset,
            resumed,
            missed: missed.unwrap_or_default(),
        };
        if let Err(e) = socket.emit(events::RT_SESSION, &info) {
            // Without its session the client would wait forever: make it reconnect (retried
            // until its buffer takes the disconnect packet).
            tracing::warn!(socket = %socket.id, error = %e, "could not greet client: disconnecting it");
            let sid = socket.id;
            self.stream
                .lock()
                .await
                .clients
                .cut_off_where(|c| c.sid() == sid);
            return;
        }
        let events = self.clone();
        socket.on_disconnect(async move |socket: Socket| {
            events.stream.lock().await.clients.remove(socket.id);
            tracing::info!(socket = %socket.id, "client unregistered");
        });
    }

    /// Disconnects every socket opened with the session whose token hashes to `token_hash`.
    pub async fn disconnect_session(&self, token_hash: &str) {
        let ended = crate::cluster::relay::Kind::SessionEnded {
            token_hash: token_hash.to_owned(),
        };
        if self.publish_control(ended, Audience::Everyone).await {
            return;
        }
        // Nothing more reaches them, even those whose buffer is too full for the disconnect
        // packet (the heartbeat closes those).
        self.stream
            .lock()
            .await
            .clients
            .cut_off_where(|c| c.session_hash == token_hash);
        if let Err(e) = self.io.to(rooms::session(token_hash)).disconnect().await {
            tracing::debug!(error = %e, "could not disconnect some sockets of a session");
        }
    }

    /// A user's rights changed (promoted, demoted, disabled, deleted...): no client of theirs
    /// may resume from before this point (a barrier in the stream), and every socket of theirs
    /// (all sessions) is disconnected, so that they reconnect (or not) with the rights they have
    /// now. Both under the stream lock: no event reaches those sockets after the barrier.
    pub async fn access_changed(&self, user_id: i64) {
        let barrier = crate::cluster::relay::Kind::Barrier {
            user_id,
            cut_off: true,
        };
        if self.publish_control(barrier, Audience::User(user_id)).await {
            return;
        }
        let mut stream = self.stream.lock().await;
        let offset = stream.push_barrier(user_id, tokio::time::Instant::now());
        self.head
            .store(offset, std::sync::atomic::Ordering::Release);
        stream
            .clients
            .cut_off_where(|c| c.viewer.user_id == user_id);
        if let Err(e) = self.io.to(rooms::user(user_id)).disconnect().await {
            tracing::debug!(error = %e, "could not disconnect some sockets of a user");
        }
        drop(stream);
    }

    /// What a user may see changed without their rights changing (a module reassigned to or
    /// from them): their connected sockets stay and get the events that tell it, but no client
    /// of theirs may resume from before this point.
    pub async fn resume_barrier(&self, user_id: i64) {
        let barrier = crate::cluster::relay::Kind::Barrier {
            user_id,
            cut_off: false,
        };
        if self.publish_control(barrier, Audience::User(user_id)).await {
            return;
        }
        let offset = self
            .stream
            .lock()
            .await
            .push_barrier(user_id, tokio::time::Instant::now());
        self.head
            .store(offset, std::sync::atomic::Ordering::Release);
    }

    /// Holds the stream as a long emit would: until the guard drops, nothing is emitted and no
    /// socket registers (tests of what happens meanwhile).
    #[doc(hidden)]
    pub async fn hold_stream(&self) -> tokio::sync::OwnedMutexGuard<Stream> {
        self.stream.clone().lock_owned().await
    }

    /// Every room of the socket ids (connected or not) found in any of `rooms`: empty when no
    /// socket id is left in them (tests: sockets that are gone must leave no room entry behind).
    #[doc(hidden)]
    pub async fn rooms_held(&self, rooms: Vec<String>) -> Vec<String> {
        match self.io.to(rooms).rooms().await {
            Ok(held) => held.into_iter().map(|r| r.to_string()).collect(),
            Err(e) => {
                tracing::debug!(error = %e, "could not list rooms");
                Vec::new()
            }
        }
    }

    /// Number of connected sockets on this hub.
    pub fn connected_clients(&self) -> usize {
        self.io.sockets().len()
    }

    /// Connected sockets and the number of distinct users behind them.
    pub fn connected_clients_and_users(&self) -> (usize, usize) {
        let sockets = self.io.sockets();
        let users = self.online_users();
        (sockets.len(), users.len())
    }

    /// Connected dashboards by page, and the users they belong to (`/metrics`): one pass over
    /// the sockets.
    pub fn clients_by_page(&self) -> (std::collections::BTreeMap<&'static str, usize>, usize) {
        let mut by_page = std::collections::BTreeMap::from([
            (Page::Modules.as_str(), 0),
            (Page::Admin.as_str(), 0),
        ]);
        let mut users = std::collections::HashSet::new();
        for socket in self.io.sockets() {
            if let Some(user) = socket.extensions.get::<SocketUser>() {
                *by_page.entry(user.page.as_str()).or_default() += 1;
                users.insert(user.user_id);
            }
        }
        (by_page, users.len())
    }

    /// Events and bytes held for replay (`/metrics`).
    pub async fn replay_depth(&self) -> (usize, usize) {
        let stream = self.stream.lock().await;
        (stream.len(), stream.bytes())
    }

    /// Clients behind now, and the entries and payload bytes held for them (`/metrics`).
    pub async fn slow_clients(&self) -> (usize, usize, usize) {
        self.stream.lock().await.clients.backlog_depth()
    }

    /// Sockets events are delivered to (tests: a socket that left must not stay).
    #[doc(hidden)]
    pub async fn delivery_clients(&self) -> usize {
        self.stream.lock().await.clients.len()
    }

    /// The users with at least one connected socket.
    pub fn online_users(&self) -> std::collections::HashSet<i64> {
        self.io
            .sockets()
            .iter()
            .filter_map(|s| s.extensions.get::<SocketUser>().map(|u| u.user_id))
            .collect()
    }
}

/// Longest disconnection a client may report (`reconnectMs`, 10 min); longer reports count as
/// this.
const MAX_RECONNECT_MS: u64 = 600_000;
/// Most failed attempts one client report counts (`connectErrors`).
const MAX_REPORTED_CONNECT_ERRORS: u64 = 100;

/// What a client tells about itself in its handshake besides its page (`docs/REALTIME.md`);
/// malformed fields are ignored, never a reason to refuse the connection.
#[derive(Debug, Clone, Default, PartialEq)]
struct ClientHandshake {
    /// Where it stopped in the stream.
    resume: Option<ResumePoint>,
    /// Who it was when it stopped (`resume.userId`, `resume.isAdmin`, both optional).
    resumed_as: (Option<i64>, Option<bool>),
    /// How long it was disconnected, clamped to `0..=MAX_RECONNECT_MS`.
    reconnect_ms: Option<u64>,
    /// Failed attempts since its last connection, clamped to `0..=MAX_REPORTED_CONNECT_ERRORS`.
    connect_errors: Option<u64>,
}

impl ClientHandshake {
    /// Reads `{resume: {epoch, offset}, reconnectMs, connectErrors}` from the handshake's auth.
    fn parse(auth: Option<&Value>) -> Self {
        let Some(auth) = auth else {
            return Self::default();
        };
        let resume = auth.get("resume").and_then(|r| {
            Some(ResumePoint {
                epoch: r.get("epoch")?.as_str()?.to_owned(),
                offset: r.get("offset")?.as_u64()?,
            })
        });
        // JSON numbers, finite; fractions and out-of-range values are clamped.
        let clamped = |key: &str, max: u64| {
            let n = auth.get(key)?.as_f64().filter(|n| n.is_finite())?;
            Some(n.clamp(0.0, max as f64) as u64)
        };
        let resumed_as = auth.get("resume").map_or((None, None), |r| {
            (
                r.get("userId").and_then(Value::as_i64),
                r.get("isAdmin").and_then(Value::as_bool),
            )
        });
        Self {
            resumed_as: if resume.is_some() {
                resumed_as
            } else {
                (None, None)
            },
            resume,
            reconnect_ms: clamped("reconnectMs", MAX_RECONNECT_MS),
            connect_errors: clamped("connectErrors", MAX_REPORTED_CONNECT_ERRORS),
        }
    }

    /// Counts this connection in the health numbers.
    fn count(&self, metrics: &Metrics) {
        if self.resume.is_some() || self.reconnect_ms.is_some() {
            metrics.reconnections.inc();
        }
        if let Some(ms) = self.reconnect_ms {
            metrics.reconnect_samples.inc();
            metrics.reconnect_ms_total.add(ms);
        }
        if let Some(n) = self.connect_errors {
            metrics.client_connect_errors.add(n);
        }
    }

    /// Whether the client says it stopped as another user, or with other rights, than `user`:
    /// what it holds was built for them, so it cannot resume.
    fn resumes_someone_else(&self, user: &SocketUser) -> bool {
        let (user_id, is_admin) = self.resumed_as;
        user_id.is_some_and(|id| id != user.user_id)
            || is_admin.is_some_and(|admin| admin != user.is_admin)
    }
}

/// Refusal reasons sent to the client as `connect_error` messages.
#[derive(Debug, thiserror::Error)]
enum ConnectRefusal {
    #[error("unauthorized")]
    Unauthorized,
    #[error("forbidden page")]
    ForbiddenPage,
    #[error("unavailable")]
    Unavailable,
}

/// The authenticated user of a socket, kept in its extensions.
#[derive(Debug, Clone)]
pub struct SocketUser {
    /// User id.
    pub user_id: i64,
    /// Admin flag.
    pub is_admin: bool,
    /// Page named at handshake.
    pub page: Page,
    /// SHA-256 of the session token it connected with.
    pub session_hash: String,
    /// The stream head when its rights were read (a barrier after it means they may be
    /// stale).
    pub authenticated_at: u64,
}

/// Registers the namespace and its handlers: every Socket.IO handler of the hub is here.
pub fn register_handlers(io: &Io, store: Store, events: EventsManager) {
    let metrics = events.metrics.clone();
    let head = events.head.clone();
    io.ns(
        "/",
        (async move |socket: Socket| events.register(&socket).await).with(
            async move |socket: Socket, TryData(auth): TryData<Value>| {
                // Noted before the rights are read: a barrier pushed meanwhile is after it.
                let authenticated_at = head.load(std::sync::atomic::Ordering::Acquire);
                let result = authenticate(&store, &socket, auth.ok(), authenticated_at).await;
                if let Err(refusal) = &result {
                    metrics.connection_errors.inc();
                    tracing::debug!(socket = %socket.id, %refusal, "client refused");
                }
                result
            },
        ),
    );
}

async fn authenticate(
    store: &Store,
    socket: &Socket,
    auth: Option<Value>,
    authenticated_at: u64,
) -> Result<(), ConnectRefusal> {
    let token = session_token_from_headers(&socket.req_parts().headers)
        .ok_or(ConnectRefusal::Unauthorized)?;
    let user = store
        .session_user(&token)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "session lookup failed");
            ConnectRefusal::Unavailable
        })?
        .ok_or(ConnectRefusal::Unauthorized)?;
    let page = match auth
        .as_ref()
        .and_then(|a| a.get("page"))
        .and_then(Value::as_str)
    {
        None => Page::Modules,
        Some(name) => Page::parse(name).ok_or(ConnectRefusal::ForbiddenPage)?,
    };
    if !crate::authz::can_open_page(&user, page) {
        return Err(ConnectRefusal::ForbiddenPage);
    }
    socket.extensions.insert(SocketUser {
        user_id: user.id,
        is_admin: user.is_admin,
        page,
        session_hash: crate::store::hash_token(&token),
        authenticated_at,
    });
    socket
        .extensions
        .insert(ClientHandshake::parse(auth.as_ref()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn handshake_fields_are_read_leniently_and_clamped() {
        let parsed = ClientHandshake::parse(Some(&json!({
            "page": "admin",
            "resume": {"epoch": "e1", "offset": 42},
            "reconnectMs": 1500.7,
            "connectErrors": 3,
        })));
        assert_eq!(
            parsed,
            ClientHandshake {
                resume: Some(ResumePoint {
                    epoch: "e1".into(),
                    offset: 42
                }),
                resumed_as: (None, None),
                reconnect_ms: Some(1500),
                connect_errors: Some(3),
            }
        );
        let as_who = ClientHandshake::parse(Some(&json!({
            "resume": {"epoch": "e1", "offset": 42, "userId": 7, "isAdmin": true},
        })));
        assert_eq!(as_who.resumed_as, (Some(7), Some(true)));
        let user = |user_id, is_admin| SocketUser {
            user_id,
            is_admin,
            page: Page::Modules,
            session_hash: String::new(),
            authenticated_at: 0,
        };
        assert!(!as_who.resumes_someone_else(&user(7, true)));
        assert!(as_who.resumes_someone_else(&user(7, false)));
        assert!(as_who.resumes_someone_else(&user(8, true)));
        // Not saying who it was: only the hub's barriers can tell.
        assert!(!parsed.resumes_someone_else(&user(8, false)));
        let clamped = ClientHandshake::parse(Some(&json!({
            "reconnectMs": 1e12, "connectErrors": -5,
        })));
        assert_eq!(clamped.reconnect_ms, Some(MAX_RECONNECT_MS));
        assert_eq!(clamped.connect_errors, Some(0));
        let huge = ClientHandshake::parse(Some(
            &json!({"connectErrors": 99_999, "reconnectMs": 600_001}),
        ));
        assert_eq!(huge.reconnect_ms, Some(600_000));
        assert_eq!(huge.connect_errors, Some(MAX_REPORTED_CONNECT_ERRORS));
        for malformed in [
            json!({"resume": "yes", "reconnectMs": "soon", "connectErrors": null}),
            json!({"resume": {"epoch": 1, "offset": 2}}),
            json!({"resume": {"epoch": "e", "offset": -1}}),
            json!({"resume": {"epoch": "e"}}),
            json!("not an object"),
            json!(null),
        ] {
            assert_eq!(
                ClientHandshake::parse(Some(&malformed)),
                ClientHandshake::default(),
                "{malformed}"
            );
        }
        assert_eq!(ClientHandshake::parse(None), ClientHandshake::default());
    }

    #[test]
    fn client_defaults_map_zero_attempts_to_unlimited() {
        let mut config = RealtimeConfig::default();
        let d = ClientDefaults::from_config(&config);
        assert_eq!(
            serde_json::to_value(d).unwrap(),
            json!({"maxReconnectAttempts": null, "reconnectDelay": 1000, "maxReconnectDelay": 30000})
        );
        config.max_reconnect_attempts = 4;
        assert_eq!(
            ClientDefaults::from_config(&config).max_reconnect_attempts,
            Some(4)
        );
    }
}
