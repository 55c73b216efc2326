//! The tracker: the one task that owns every module's liveness and cached state. Transports
//! send it [`ModuleEvent`]s; it decides what changed and emits exactly that. Web handlers ask it
//! for snapshots over a channel, so no lock is ever shared.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, SystemTime},
};

use mc_protocol::{Encoding, ModuleId};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{
    cluster::{
        Cluster,
        live::SharedLive,
        relay::{Guard, Kind, ModuleChange},
    },
    commands::queue::{CommandQueue, Forget},
    connections::Transport,
    ingest::ModuleEvent,
    liveness::{LivenessChange, LivenessConfig, LivenessTracker, OfflineReason},
    metrics::Metrics,
    realtime::{EventsManager, events},
    state::{Deadbands, StateCache, TelemetryOutcome},
    store::{DirtyModules, ModuleSnapshot, STATE_FLUSH_INTERVAL, StoredModuleState},
};

/// Capacity of the event channel into the tracker; a full channel slows transports down
/// (backpressure) instead of growing memory.
pub const EVENT_CHANNEL_CAPACITY: usize = 16 * 1024;
/// How long a web handler waits for the tracker before answering 503.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Most events handled in one batch before the tracker lets other tasks run.
const MAX_BATCH: usize = 256;

/// What the tracker knows of a module beyond liveness and readings.
#[derive(Debug, Clone, Default)]
struct ModuleInfo {
    owner: Option<i64>,
    encoding: Option<Encoding>,
    fw: Option<String>,
    heartbeat_ms: Option<u32>,
    last_seen: Option<SystemTime>,
    /// The transport of its latest connection.
    transport: Option<Transport>,
    /// Its own liveness timeout from the registry (milliseconds).
    timeout_ms: Option<u64>,
    /// The connection (liveness session) on which it last said hello. Equal to the current
    /// session: its current connection has subscribed to its commands (the module contract:
    /// subscribe, then hello first), so queued commands can go. Messages carry no session, so
    /// a late heartbeat or telemetry of a replaced connection, handled after the new one's
    /// `Connected`, does not count: only a hello after that `Connected` does.
    greeted: Option<u64>,
    /// Marked dirty for the state writer since its last flush: marking it again is a no-op,
    /// so every message after the first skips that set lookup until the next flush.
    marked: bool,
}

/// The live view of one module, for snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveModule {
    /// Online as clients see it.
    pub online: bool,
    /// Last message time.
    pub last_seen: Option<SystemTime>,
    /// Last known readings.
    pub readings: BTreeMap<String, f32>,
    /// Revision of the readings.
    pub rev: u64,
    /// Readings are last known values of an offline module.
    pub stale: bool,
    /// Firmware version from the last hello.
    pub fw: Option<String>,
    /// The encoding of its last hello (commands are sent in it).
    pub encoding: Option<Encoding>,
    /// The transport of its latest connection (kept after it closes): the command router
    /// never publishes over MQTT to a module that came over serial.
    pub transport: Option<Transport>,
    /// It is online and said hello on its current connection: a command sent now reaches it.
    /// Unlike `online` (damped for clients), false from the moment a new connection opens
    /// until that connection's hello.
    pub ready: bool,
}

/// Counters the tracker keeps, for tests and stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackerCounters {
    /// From liveness.
    pub liveness: crate::liveness::LivenessCounters,
    /// From the state cache.
    pub state: crate::state::StateCounters,
    /// Events for modules the tracker never saw connect.
    pub unknown_module: u64,
    /// Modules clients currently see online.
    pub online_modules: usize,
}

enum Query {
    Snapshot(oneshot::Sender<HashMap<ModuleId, LiveModule>>),
    Module(ModuleId, oneshot::Sender<Option<LiveModule>>),
    /// Offer the module's queued commands if it is ready; answers whether it is.
    OfferQueued(ModuleId, oneshot::Sender<bool>),
    Counters(oneshot::Sender<TrackerCounters>),
}

/// Handle to the tracker task; cheap to clone.
#[derive(Clone)]
pub struct TrackerHandle {
    events: mpsc::Sender<ModuleEvent>,
    queries: mpsc::Sender<Query>,
    /// Cluster mode: every module's shared state, for what this hub's tracker does not own.
    shared: Option<Cluster>,
}

impl TrackerHandle {
    /// Cluster mode: snapshots and counters cover every module of the cluster (the shared
    /// state), the local tracker's own modules first (it knows more: whether each is ready).
    pub fn with_shared(mut self, cluster: Cluster) -> Self {
        self.shared = Some(cluster);
        self
    }

    /// Where transports send module events.
    pub fn events(&self) -> mpsc::Sender<ModuleEvent> {
        self.events.clone()
    }

    /// The live view of every module that ever connected; `None` if the tracker does not
    /// answer within [`QUERY_TIMEOUT`].
    pub async fn snapshot(&self) -> Option<HashMap<ModuleId, LiveModule>> {
        let local = self.ask(Query::Snapshot).await?;
        let Some(cluster) = &self.shared else {
            return Some(local);
        };
        let shared = tokio::time::timeout(QUERY_TIMEOUT, crate::cluster::live::all(cluster))
            .await
            .ok()?
            .map_err(|e| tracing::warn!(error = %e, "cannot read shared module states"))
            .ok()?;
        let mut all: HashMap<ModuleId, LiveModule> = shared
            .into_iter()
            .map(|(id, live)| (id, live.to_live()))
            .collect();
        all.extend(local);
        Some(all)
    }

    async fn ask<T>(&self, query: impl FnOnce(oneshot::Sender<T>) -> Query) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let exchange = async {
            self.queries.send(query(tx)).await.ok()?;
            rx.await.ok()
        };
        tokio::time::timeout(QUERY_TIMEOUT, exchange)
            .await
            .ok()
            .flatten()
    }

    /// The live view of one module, if it ever connected; `None` also if the tracker does not
    /// answer within [`QUERY_TIMEOUT`] (a command handler must not hang on a stuck tracker).
    pub async fn module(&self, id: &ModuleId) -> Option<LiveModule> {
        if let Some(local) = self.ask(|tx| Query::Module(id.clone(), tx)).await.flatten() {
            return Some(local);
        }
        let cluster = self.shared.as_ref()?;
        tokio::time::timeout(QUERY_TIMEOUT, crate::cluster::live::one(cluster, id))
            .await
            .ok()?
            .ok()
            .flatten()
            .map(|live| live.to_live())
    }

    /// A command was just queued for `id`: if the module is ready (see [`LiveModule::ready`]),
    /// its queued commands are offered to the delivery task now rather than at its next
    /// message. The tracker task handles this and the module's hello one after the other:
    /// either the hello was first (and this offers), or it comes after and finds the command
    /// queued.
    /// Returns whether it was ready (`None`: no answer within [`QUERY_TIMEOUT`]).
    pub async fn offer_queued(&self, id: &ModuleId) -> Option<bool> {
        self.ask(|tx| Query::OfferQueued(id.clone(), tx)).await
    }

    /// The tracker's counters.
    pub async fn counters(&self) -> Option<TrackerCounters> {
        let mut counters = self.ask(Query::Counters).await?;
        if let Some(cluster) = &self.shared {
            counters.online_modules =
                tokio::time::timeout(QUERY_TIMEOUT, crate::cluster::live::online_count(cluster))
                    .await
                    .ok()?
                    .ok()?;
        }
        Some(counters)
    }

    /// Module events waiting for the tracker, and how many its queue holds (`/metrics`).
    pub fn queue_depth(&self) -> (usize, usize) {
        let max = self.events.max_capacity();
        (max - self.events.capacity(), max)
    }
}

/// The tracker task's state.
pub struct Tracker {
    liveness: LivenessTracker,
    state: StateCache,
    modules: foldhash::HashMap<ModuleId, ModuleInfo>,
    emitter: EventsManager,
    metrics: Metrics,
    unknown_module: u64,
    /// Under load, wait this long after an event so that more join it (see [`Tracker::run`]).
    batch_window: Duration,
    events_rx: mpsc::Receiver<ModuleEvent>,
    queries_rx: mpsc::Receiver<Query>,
    /// Commands waiting for offline modules: told when a module can take them, and when a
    /// module is removed.
    commands: Option<CommandQueue>,
    /// Modules whose state changed since the last snapshot flush (`None`: not persisted).
    persisted: Option<DirtyModules>,
    /// Cluster mode: which modules this hub owns, and the modules whose shared state
    /// (last seen, firmware) changed without an event since the last flush.
    cluster: Option<(Cluster, HashSet<ModuleId>)>,
}

impl Tracker {
    /// A tracker and its handle.
    pub fn new(
        liveness: LivenessConfig,
        deadbands: Deadbands,
        batch_window: Duration,
        emitter: EventsManager,
        metrics: Metrics,
    ) -> (Self, TrackerHandle) {
        let (events, events_rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        let (queries, queries_rx) = mpsc::channel(64);
        let tracker = Self {
            liveness: LivenessTracker::new(liveness),
            state: StateCache::new(deadbands),
            modules: foldhash::HashMap::default(),
            emitter,
            metrics,
            unknown_module: 0,
            batch_window,
            events_rx,
            queries_rx,
            commands: None,
            persisted: None,
            cluster: None,
        };
        (
            tracker,
            TrackerHandle {
                events,
                queries,
                shared: None,
            },
        )
    }

    /// Tells `queue` when a module with queued commands can take them (at its messages)
    /// and drops a removed module's commands.
    pub fn with_command_queue(mut self, queue: CommandQueue) -> Self {
        self.commands = Some(queue);
        self
    }

    /// Cluster mode: tracks only the modules this hub owns, publishes their shared state
    /// (`cluster::live`), adopts modules from it.
    pub fn with_cluster(mut self, cluster: Cluster) -> Self {
        self.cluster = Some((cluster, HashSet::new()));
        self
    }

    /// Saves module states through `dirty` (see [`crate::store::StateWriter`]).
    pub fn persist_states(&mut self, dirty: DirtyModules) {
        self.persisted = Some(dirty);
    }

    /// Puts back the states saved before a restart: each module is offline with its last
    /// readings marked stale and its last-seen time, and nothing is emitted (clients saw it go
    /// offline, or see it offline in their snapshot now): no offline storm at startup. When it
    /// connects and speaks, the usual online event follows.
    pub fn restore(&mut self, states: Vec<StoredModuleState>) {
        for StoredModuleState { snapshot, owner_id } in states {
            let id = snapshot.module_id;
            self.state.restore(&id, &snapshot.readings, snapshot.rev);
            self.modules.insert(
                id,
                ModuleInfo {
                    owner: owner_id,
                    fw: snapshot.fw,
                    heartbeat_ms: snapshot.heartbeat_ms,
                    last_seen: snapshot.last_seen,
                    ..ModuleInfo::default()
                },
            );
        }
    }

    /// Runs until shutdown (or until every sender is gone).
    ///
    /// Events are handled in batches, so that each dashboard socket is woken once per batch and
    /// writes many events with one syscall instead of one per event: the per-socket writes,
    /// not the diff, are what costs CPU (BENCHMARKS.md, "Batching by scheduler pass"). Woken
    /// by the first event, the tracker yields once before taking the batch: the connections
    /// that the same pass made ready hand over what they read first (without it, tokio runs a
    /// task woken by another right after it, and batches were one event long). That adds no
    /// timer and no delay to a quiet hub. With a non-zero `batch_window`, under load (an event
    /// arriving within `batch_window` of the previous one) the tracker waits `batch_window`
    /// instead: bigger batches at a fixed latency price.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut last_event = tokio::time::Instant::now();
        let mut flush = tokio::time::interval(STATE_FLUSH_INTERVAL);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Deadlines and queries before events: a steady stream of events must not starve
            // offline detection or snapshot requests (events come in batches, so they still
            // get most of the time under load).
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return self.flush_states_final().await,
                change = self.liveness.next_change() => self.emit_liveness(change).await,
                Some(query) = self.queries_rx.recv() => self.answer(query),
                _ = flush.tick(), if self.persisted.is_some() || self.cluster.is_some() => {
                    self.flush_states();
                    self.flush_shared().await;
                }
                received = self.events_rx.recv_many(&mut batch, MAX_BATCH) => {
                    if received == 0 {
                        return self.flush_states_final().await;
                    }
                    let now = tokio::time::Instant::now();
                    let busy = now.duration_since(last_event) < self.batch_window;
                    last_event = now;
                    if batch.len() < MAX_BATCH {
                        if busy {
                            tokio::time::sleep(self.batch_window).await;
                        } else {
                            // Let the connections that are ready hand over what they read
                            // first: one batch per scheduler pass, so that each dashboard
                            // socket writes a pass's events with one syscall.
                            tokio::task::yield_now().await;
                        }
                        while batch.len() < MAX_BATCH {
                            match self.events_rx.try_recv() {
                                Ok(event) => batch.push(event),
                                Err(_) => break,
                            }
                        }
                    }
                    for event in batch.drain(..) {
                        self.handle(event).await;
                    }
                },
            }
        }
    }

    async fn handle(&mut self, event: ModuleEvent) {
        // Cluster mode: a module another hub owns now (views converging, a message forwarded
        // on an older view) is not this hub's to track: taking it would make two deciders.
        if let Some((cluster, _)) = &self.cluster
            && let Some(module) = event.module()
            && !matches!(
                event,
                ModuleEvent::Unregistered(_) | ModuleEvent::Registered(_)
            )
            && !cluster.owns(module.as_str())
        {
            self.metrics.reject("not_owner");
            return;
        }
        match event {
            ModuleEvent::Connected {
                record,
                session,
                transport,
            } => {
                let timeout = record.heartbeat_timeout_ms.map(Duration::from_millis);
                self.liveness.connected(&record.id, session, timeout);
                self.state.restart_sequence(&record.id);
                let info = self.modules.entry(record.id.clone()).or_default();
                info.owner = record.owner_id;
                info.timeout_ms = record.heartbeat_timeout_ms;
                info.transport = Some(transport);
            }
            ModuleEvent::Registered(record) => {
                if let Some(info) = self.modules.get_mut(&record.id) {
                    info.owner = record.owner_id;
                    info.timeout_ms = record.heartbeat_timeout_ms;
                }
            }
            ModuleEvent::Adopted(id, shared) => self.adopt(id, *shared),
            ModuleEvent::OwnersChanged => self.release_others(),
            ModuleEvent::RepublishShared => self.republish_shared().await,
            ModuleEvent::Unregistered(module) => {
                if let Some(dirty) = &mut self.persisted {
                    dirty.forget(&module);
                }
                // Its shared state goes behind this hub's last entries about it (every hub
                // sends this: the owner's is the one that counts).
                if let Some((_, dirty)) = &mut self.cluster {
                    dirty.remove(&module);
                    let change = ModuleChange {
                        id: module.to_string(),
                        guard: Guard::None,
                        state: None,
                    };
                    self.emitter.publish_state(Kind::Forget, change).await;
                }
                self.liveness.remove(&module);
                self.state.remove(&module);
                self.modules.remove(&module);
                if let Some(queue) = &self.commands {
                    queue.forget(&module, Forget::Removed);
                }
            }
            ModuleEvent::ConnectAborted { module, session } => {
                self.liveness.aborted(&module, session);
            }
            ModuleEvent::Disconnected {
                module,
                session,
                clean,
            } => {
                let reason = if clean {
                    OfflineReason::Disconnect
                } else {
                    OfflineReason::ConnectionLost
                };
                if let Some(change) = self.liveness.disconnected(&module, session, reason) {
                    self.emit_liveness(change).await;
                }
            }
            ModuleEvent::Will(module) => {
                if let Some(change) = self.liveness.will(&module) {
                    self.emit_liveness(change).await;
                }
            }
            ModuleEvent::Ended { module, session } => {
                if let Some(change) =
                    self.liveness
                        .disconnected(&module, session, OfflineReason::Will)
                {
                    self.emit_liveness(change).await;
                }
            }
            ModuleEvent::BrokerLink { up } => {
                if up {
                    self.liveness.release_timeouts();
                } else {
                    self.liveness.hold_timeouts();
                }
            }
            ModuleEvent::Hello(module, hello, encoding) => {
                let session = self.liveness.session(&module);
                let Some(info) = self.seen(&module) else {
                    return;
                };
                info.greeted = session;
                info.encoding = Some(encoding);
                info.fw = Some(hello.fw.to_string());
                info.heartbeat_ms = Some(hello.heartbeat_ms);
                self.state.restart_sequence(&module);
                let announced = Duration::from_millis(u64::from(hello.heartbeat_ms));
                if let Some(change) = self.liveness.seen(&module, Some(announced)) {
                    self.emit_liveness(change).await;
                }
                self.offer_if_queued(&module);
            }
            ModuleEvent::Heartbeat(module, _) => {
                if self.seen(&module).is_none() {
                    return;
                }
                if let Some(change) = self.liveness.seen(&module, None) {
                    self.emit_liveness(change).await;
                }
                self.offer_if_queued(&module);
            }
            ModuleEvent::Telemetry(module, telemetry) => {
                let Some(info) = self.seen(&module) else {
                    return;
                };
                let owner = info.owner;
                if let Some(change) = self.liveness.seen(&module, None) {
                    self.emit_liveness(change).await;
                }
                self.offer_if_queued(&module);
                let outcome = self.state.apply(&module, &telemetry);
                // A leftover message of a closed connection updates the readings, but they stay
                // marked stale until the module is back.
                if !self.liveness.is_online(&module) {
                    self.state.set_stale(&module, true);
                }
                match outcome {
                    TelemetryOutcome::Changed(mut diff) => {
                        // Borrowed: nothing is allocated per reading on this path.
                        let payload = events::TelemetryUpdatedRef {
                            module_id: module.as_str(),
                            telemetry: events::SortedReadings::new(&mut diff.changed),
                            rev: diff.rev,
                            ts: events::Timestamp(SystemTime::now()),
                        };
                        let change = self.cluster_change(&module, Guard::Rev(diff.rev));
                        self.emitter
                            .emit_module_change(
                                owner,
                                events::RT_TELEMETRY_UPDATED,
                                &payload,
                                change,
                            )
                            .await;
                    }
                    TelemetryOutcome::Unchanged => self.metrics.telemetry_unchanged.inc(),
                    TelemetryOutcome::Duplicate => self.metrics.reject("duplicate_seq"),
                    TelemetryOutcome::OutOfOrder => self.metrics.reject("out_of_order_seq"),
                }
            }
        }
    }

    /// [`offer_queued`](Self::offer_queued) at a module's message, when commands wait at all:
    /// only then the module's lookups (every message passes here).
    fn offer_if_queued(&self, module: &ModuleId) {
        if self.commands.as_ref().is_some_and(|q| q.depth() > 0) {
            self.offer_queued(module);
        }
    }

    /// `module` spoke: if its current connection said hello, the moment it can take its
    /// queued commands (why this and not CONNACK or the online transition:
    /// [`crate::commands::queue`]). A message of a closed or replaced connection is no such
    /// sign. Returns whether the module is ready.
    fn offer_queued(&self, module: &ModuleId) -> bool {
        let Some(info) = self
            .modules
            .get(module)
            .filter(|i| self.is_ready(module, i))
        else {
            return false;
        };
        if let Some(queue) = &self.commands
            && queue.depth() > 0
        {
            queue.module_ready(module, info.encoding, info.transport);
        }
        true
    }

    /// Online, and said hello on its current connection (see [`ModuleInfo::greeted`]).
    fn is_ready(&self, module: &ModuleId, info: &ModuleInfo) -> bool {
        info.greeted.is_some()
            && info.greeted == self.liveness.session(module)
            && self.liveness.is_online(module)
    }

    /// Cluster mode: takes over a module another hub owned, as clients see it (its shared
    /// state): nothing is emitted. An online one gets a full timeout from now to speak to its
    /// new owner. Ignored if this hub already tracks it (its own state is newer).
    fn adopt(&mut self, id: ModuleId, shared: SharedLive) {
        if self.modules.contains_key(&id) {
            return;
        }
        self.liveness.adopt(
            &id,
            shared.online,
            shared.timeout_ms.map(Duration::from_millis),
            shared
                .heartbeat_ms
                .map(|ms| Duration::from_millis(u64::from(ms))),
        );
        let readings: Vec<(String, f32)> = shared
            .readings
            .iter()
            .map(|(n, v)| (n.clone(), *v))
            .collect();
        self.state.restore(&id, &readings, shared.rev);
        self.state.set_stale(&id, shared.stale);
        tracing::debug!(module = %id, online = shared.online, rev = shared.rev, "module adopted");
        self.modules.insert(
            id,
            ModuleInfo {
                owner: shared.owner,
                encoding: shared.encoding(),
                fw: shared.fw.clone(),
                heartbeat_ms: shared.heartbeat_ms,
                timeout_ms: shared.timeout_ms,
                last_seen: shared.last_seen(),
                transport: Some(Transport::Mqtt),
                greeted: None,
                marked: false,
            },
        );
    }

    /// Cluster mode: forgets, without a word to clients, the modules another hub owns now
    /// (their new owner adopts them from the shared state).
    fn release_others(&mut self) {
        let Some((cluster, dirty)) = &mut self.cluster else {
            return;
        };
        let gone: Vec<ModuleId> = self
            .modules
            .keys()
            .filter(|id| !cluster.owns(id.as_str()))
            .cloned()
            .collect();
        for id in &gone {
            dirty.remove(id);
            if let Some(persisted) = &mut self.persisted {
                persisted.forget(id);
            }
            self.liveness.remove(id);
            self.state.remove(id);
            self.modules.remove(id);
            // Its hello goes to the new owner now: commands queued here would only expire.
            if let Some(queue) = &self.commands {
                queue.forget(id, Forget::HandedOver);
            }
        }
        if !gone.is_empty() {
            tracing::info!(modules = gone.len(), "modules handed over to other hubs");
        }
    }

    /// Cluster mode: the module's shared state now, for the relay (`guard`: when to publish
    /// it); none without a cluster (nothing to build on the single-hub path).
    fn cluster_change(&self, id: &ModuleId, guard: Guard) -> Option<ModuleChange> {
        self.cluster.as_ref()?;
        Some(self.shared_change(id, guard))
    }

    /// The module's shared state now, for the relay (`guard`: when to publish it).
    fn shared_change(&self, id: &ModuleId, guard: Guard) -> ModuleChange {
        let info = self.modules.get(id);
        let state = self.state.get(id);
        let live = SharedLive {
            online: self.liveness.visible_online(id),
            owner: info.and_then(|i| i.owner),
            last_seen_ms: info
                .and_then(|i| i.last_seen)
                .map(crate::cluster::live::millis),
            readings: state.map(readings_by_name).unwrap_or_default(),
            rev: state.map_or(0, |s| s.rev),
            stale: state.is_some_and(|s| s.stale),
            fw: info.and_then(|i| i.fw.clone()),
            heartbeat_ms: info.and_then(|i| i.heartbeat_ms),
            timeout_ms: info.and_then(|i| i.timeout_ms),
            json: info.and_then(|i| i.encoding).map(|e| e == Encoding::Json),
        };
        ModuleChange {
            id: id.to_string(),
            guard,
            state: serde_json::to_string(&live).ok(),
        }
    }

    /// Cluster mode: after Redis lost the shared state, every module this hub owns publishes
    /// its full state again (online flag and revision included).
    async fn republish_shared(&mut self) {
        let ids: Vec<ModuleId> = self.modules.keys().cloned().collect();
        for id in &ids {
            let guard = Guard::Reset {
                rev: self.state.get(id).map_or(0, |s| s.rev),
                online: self.liveness.visible_online(id),
            };
            let change = self.shared_change(id, guard);
            self.emitter.publish_state(Kind::StateOnly, change).await;
        }
        tracing::info!(modules = ids.len(), "shared module states published again");
    }

    /// Cluster mode: publishes the shared state of modules that spoke without changing
    /// anything clients are told of (last seen, firmware), once per flush interval.
    async fn flush_shared(&mut self) {
        let Some((_, dirty)) = &mut self.cluster else {
            return;
        };
        let modules: Vec<ModuleId> = dirty.drain().collect();
        for id in modules {
            if self.modules.contains_key(&id) {
                let change = self.shared_change(&id, Guard::None);
                self.emitter.publish_state(Kind::StateOnly, change).await;
            }
        }
    }

    /// Records that `module` spoke; `None` (counted) if it never connected.
    fn seen(&mut self, module: &ModuleId) -> Option<&mut ModuleInfo> {
        match self.modules.get_mut(module) {
            Some(info) => {
                info.last_seen = Some(SystemTime::now());
                if !info.marked
                    && let Some(dirty) = &mut self.persisted
                {
                    dirty.mark(module);
                    info.marked = true;
                }
                if let Some((_, shared)) = &mut self.cluster {
                    shared.insert(module.clone());
                }
                Some(info)
            }
            None => {
                self.unknown_module += 1;
                self.metrics.reject("unknown_module");
                None
            }
        }
    }

    async fn emit_liveness(&mut self, change: LivenessChange) {
        match change {
            LivenessChange::Online(module) => {
                let info = self.modules.get(&module).cloned().unwrap_or_default();
                tracing::info!(module = %module, "module online");
                let payload = events::ModuleOnline {
                    module_id: module.to_string(),
                    last_seen: events::timestamp(info.last_seen.unwrap_or_else(SystemTime::now)),
                    fw: info.fw,
                    heartbeat_ms: info.heartbeat_ms,
                };
                let change = self.cluster_change(&module, Guard::Online(true));
                self.emitter
                    .emit_module_change(info.owner, events::RT_MODULE_ONLINE, &payload, change)
                    .await;
            }
            LivenessChange::Offline(module, reason) => {
                self.state.set_stale(&module, true);
                let owner = self.modules.get(&module).and_then(|i| i.owner);
                tracing::info!(module = %module, ?reason, "module offline");
                let payload = events::ModuleOffline {
                    module_id: module.to_string(),
                    disconnected_at: events::timestamp(SystemTime::now()),
                    reason,
                };
                let change = self.cluster_change(&module, Guard::Online(false));
                self.emitter
                    .emit_module_change(owner, events::RT_MODULE_OFFLINE, &payload, change)
                    .await;
            }
        }
    }

    /// Hands the modules that changed since the last flush to the state writer.
    fn flush_states(&mut self) {
        if let Some(dirty) = &mut self.persisted {
            dirty.flush(|id| snapshot_of(&self.modules, &self.state, id));
            // Whatever the flush took (or left for later), the next message marks again.
            for info in self.modules.values_mut() {
                info.marked = false;
            }
        }
    }

    /// At shutdown: the last flush, so that a graceful stop loses no state.
    async fn flush_states_final(&mut self) {
        if let Some(dirty) = &mut self.persisted {
            dirty
                .flush_final(|id| snapshot_of(&self.modules, &self.state, id))
                .await;
        }
    }

    fn live_view(&self, id: &ModuleId, info: &ModuleInfo) -> LiveModule {
        let state = self.state.get(id);
        LiveModule {
            online: self.liveness.visible_online(id),
            last_seen: info.last_seen,
            readings: state.map(readings_by_name).unwrap_or_default(),
            rev: state.map_or(0, |s| s.rev),
            stale: state.is_some_and(|s| s.stale),
            fw: info.fw.clone(),
            encoding: info.encoding,
            transport: info.transport,
            ready: self.is_ready(id, info),
        }
    }

    fn answer(&self, query: Query) {
        match query {
            Query::Snapshot(reply) => {
                let snapshot = self
                    .modules
                    .iter()
                    .map(|(id, info)| (id.clone(), self.live_view(id, info)))
                    .collect();
                let _ = reply.send(snapshot);
            }
            Query::Module(id, reply) => {
                let _ = reply.send(self.modules.get(&id).map(|info| self.live_view(&id, info)));
            }
            Query::OfferQueued(id, reply) => {
                let _ = reply.send(self.offer_queued(&id));
            }
            Query::Counters(reply) => {
                let _ = reply.send(TrackerCounters {
                    liveness: self.liveness.counters(),
                    state: self.state.counters(),
                    unknown_module: self.unknown_module,
                    online_modules: self.liveness.visible_online_count(),
                });
            }
        }
    }
}

/// A module's readings by name, as snapshots and the shared state carry them.
fn readings_by_name(state: &crate::state::ModuleState) -> BTreeMap<String, f32> {
    state
        .readings
        .iter()
        .map(|(n, v)| (n.to_string(), *v))
        .collect()
}

/// What the state writer saves of `id` (`None` once it is gone from the tracker).
fn snapshot_of(
    modules: &foldhash::HashMap<ModuleId, ModuleInfo>,
    state: &StateCache,
    id: &ModuleId,
) -> Option<ModuleSnapshot> {
    let info = modules.get(id)?;
    let state = state.get(id);
    Some(ModuleSnapshot {
        module_id: id.clone(),
        readings: state.map_or_else(Vec::new, |s| {
            s.readings
                .iter()
                .map(|(n, v)| (n.to_string(), *v))
                .collect()
        }),
        rev: state.map_or(0, |s| s.rev),
        last_seen: info.last_seen,
        fw: info.fw.clone(),
        heartbeat_ms: info.heartbeat_ms,
    })
}

#[cfg(test)]
mod tests {
    use mc_protocol::{
        Command, CommandAction, FirmwareVersion, Heartbeat, message::Hello, message::Telemetry,
    };

    use super::*;
    use crate::{
        commands::queue::Signal,
        config::{CommandsConfig, RealtimeConfig},
        store::ModuleRecord,
    };

    fn tracker() -> (Tracker, TrackerHandle, CommandQueue, mpsc::Receiver<Signal>) {
        let (builder, root) = crate::realtime::adapter::builder();
        let (_layer, io) = builder.build_layer();
        let metrics = Metrics::default();
        let emitter = EventsManager::new(io, root, metrics.clone(), &RealtimeConfig::default());
        let (tracker, handle) = Tracker::new(
            LivenessConfig::default(),
            Deadbands::default(),
            Duration::ZERO,
            emitter,
            metrics.clone(),
        );
        let config = CommandsConfig {
            queue_ttl: Duration::from_secs(600),
            max_queued: 16,
        };
        let (queue, signals) = CommandQueue::new(&config, metrics);
        let tracker = tracker.with_command_queue(queue.clone());
        (tracker, handle, queue, signals)
    }

    fn connected(id: &str, session: u64) -> ModuleEvent {
        ModuleEvent::Connected {
            record: ModuleRecord::for_tests(id, None),
            session,
            transport: Transport::Mqtt,
        }
    }

    fn hello(id: &ModuleId) -> ModuleEvent {
        let hello = Hello {
            fw: FirmwareVersion::new("1.0.0").unwrap(),
            heartbeat_ms: 5000,
        };
        ModuleEvent::Hello(id.clone(), hello, Encoding::Json)
    }

    fn heartbeat(id: &ModuleId, seq: u32) -> ModuleEvent {
        ModuleEvent::Heartbeat(
            id.clone(),
            Heartbeat {
                seq,
                uptime_ms: u64::from(seq) * 5000,
            },
        )
    }

    fn telemetry(id: &ModuleId, seq: u32) -> ModuleEvent {
        ModuleEvent::Telemetry(
            id.clone(),
            Box::new(Telemetry {
                seq,
                readings: Default::default(),
            }),
        )
    }

    /// How many times the queue was told the module is ready since the last call.
    fn offers(signals: &mut mpsc::Receiver<Signal>) -> usize {
        std::iter::from_fn(|| signals.try_recv().ok())
            .filter(|s| matches!(s, Signal::Ready(_)))
            .count()
    }

    fn ready(tracker: &Tracker, id: &ModuleId) -> bool {
        let info = &tracker.modules[id];
        tracker.live_view(id, info).ready
    }

    /// Queued commands are offered only once the current connection said hello: not for a late
    /// message of the connection it replaced, nor on the damped `online` clients see.
    #[tokio::test(start_paused = true)]
    async fn queued_commands_wait_for_the_hello_of_the_current_connection() {
        let (mut tracker, _handle, queue, mut signals) = tracker();
        let m = ModuleId::new("MC-A").unwrap();
        tracker.handle(connected("MC-A", 1)).await;
        assert!(!ready(&tracker, &m), "connected, no hello yet");
        tracker.handle(hello(&m)).await;
        assert!(ready(&tracker, &m));
        queue
            .push(
                &m,
                Command {
                    id: 1,
                    action: CommandAction::Reboot,
                },
            )
            .unwrap();
        tracker.handle(heartbeat(&m, 1)).await;
        assert_eq!(offers(&mut signals), 1, "ready: offered at its messages");

        // A new connection takes over; late messages of the old one are handled after its
        // `Connected`, before the new one subscribed and said hello.
        tracker.handle(connected("MC-A", 2)).await;
        tracker.handle(heartbeat(&m, 2)).await;
        tracker.handle(telemetry(&m, 1)).await;
        assert_eq!(
            offers(&mut signals),
            0,
            "not for the old connection's messages"
        );
        let view = tracker.live_view(&m, &tracker.modules[&m]);
        assert!(view.online && !view.ready, "online for clients, not ready");
        let (tx, mut rx) = oneshot::channel();
        tracker.answer(Query::OfferQueued(m.clone(), tx));
        assert_eq!(rx.try_recv(), Ok(false));
        assert_eq!(
            offers(&mut signals),
            0,
            "nor for the web handler's question"
        );

        tracker.handle(hello(&m)).await;
        assert_eq!(offers(&mut signals), 1, "the new connection's hello");
        let (tx, mut rx) = oneshot::channel();
        tracker.answer(Query::OfferQueued(m.clone(), tx));
        assert_eq!(rx.try_recv(), Ok(true));
        assert_eq!(offers(&mut signals), 1);

        // A connection that never got through: the one before it is current again, and it
        // said hello.
        tracker.handle(connected("MC-A", 3)).await;
        tracker.handle(heartbeat(&m, 3)).await;
        assert_eq!(offers(&mut signals), 0);
        tracker
            .handle(ModuleEvent::ConnectAborted {
                module: m.clone(),
                session: 3,
            })
            .await;
        tracker.handle(heartbeat(&m, 4)).await;
        assert_eq!(offers(&mut signals), 1);

        // Gone: nothing offered, whatever arrives late.
        tracker
            .handle(ModuleEvent::Disconnected {
                module: m.clone(),
                session: 2,
                clean: true,
            })
            .await;
        tracker.handle(telemetry(&m, 2)).await;
        assert_eq!(offers(&mut signals), 0);
        assert!(!ready(&tracker, &m));
    }

    /// A tracker that does not answer (stuck, or busy for longer than a handler may wait)
    /// gives `None` after [`QUERY_TIMEOUT`], for every query.
    #[tokio::test(start_paused = true)]
    async fn queries_give_up_after_the_timeout() {
        let (_tracker, handle, _queue, _signals) = tracker();
        let m = ModuleId::new("MC-A").unwrap();
        let asked = tokio::time::timeout(QUERY_TIMEOUT * 2, async {
            (handle.module(&m).await, handle.offer_queued(&m).await)
        })
        .await;
        assert_eq!(asked, Ok((None, None)));
    }
}
