//! Module connections inferred from what modules publish, for an external broker
//! (`broker::external`): the hub is then one more client of the broker and never sees modules
//! connect or disconnect, so it reads the protocol's own signs instead.
//!
//! - A **hello** opens a session: modules say hello on every connection (and again on the same
//!   connection after an interval change, which opening a new session also handles).
//! - A **heartbeat or telemetry** from a module without a session opens one too: the module was
//!   connected before this hub heard it (the hub restarted, or its broker link came back).
//! - Its **will** (or its own `offline` before a clean disconnect) ends the session. Messages
//!   that arrive within [`LEFTOVER_GRACE`] after that without a hello are leftovers of the
//!   ended connection (they update readings, they do not bring it back online); after it, a
//!   message again proves the module is there.
//! - Silence is still the tracker's timeout, as with the embedded broker.
//! - In a cluster, a will that arrives within [`LEFTOVER_GRACE`] after a hello opened the
//!   module's session belongs to the connection before (the hello proves a new one): another
//!   hub forwarded it, and forwarding can overtake. It is passed on as stale (the tracker
//!   counts it). A module that dies that soon after its hello goes offline by its timeout.
//!
//! Sessions take numbers from the same counter as every other connection and a place in
//! [`LiveConnections`], so commands find MQTT modules and a module live on a serial port is
//! not also taken over from MQTT. An unknown or disabled module (the broker's ACL should have
//! refused it) is rejected and counted.

use std::collections::HashMap;

use mc_protocol::ModuleId;
use tokio::time::{Duration, Instant};

use super::ModuleEvent;
use crate::{
    connections::{Link, LiveConnections, Transport},
    metrics::Metrics,
    store::Store,
};

/// How long after a module's will a message without a hello is taken for a leftover of the
/// ended connection. The broker sends a client's messages in order and its will after them,
/// so this only covers reordering between QoS levels; a module that lost its connection
/// reconnects with a hello anyway.
pub const LEFTOVER_GRACE: Duration = Duration::from_secs(2);
/// Ended sessions remembered at most (for the leftover rule); the oldest are forgotten first.
const MAX_ENDED: usize = 100_000;

/// What to do with one message.
#[derive(Debug, PartialEq, Eq)]
enum Inference {
    /// Pass it on (its session is open, or it is a leftover).
    Forward,
    /// Open a session first, then pass it on.
    Open,
    /// The session ended (its will).
    End(u64),
}

/// The inferred sessions of one hub.
pub struct InferredSessions {
    store: Store,
    connections: LiveConnections,
    metrics: Metrics,
    /// When each module's last session ended by its will.
    ended: HashMap<ModuleId, Instant>,
    /// When each module's current session was opened by a hello (a will arriving just after
    /// belongs to the connection before it: in a cluster, forwarding can reorder them).
    greeted: HashMap<ModuleId, Instant>,
    /// Cluster mode: a module whose session opens here may have been another hub's: its
    /// shared state goes to the tracker first ([`ModuleEvent::Adopted`]).
    cluster: Option<crate::cluster::Cluster>,
}

impl InferredSessions {
    /// Sessions registered in `connections`; records read from `store`.
    pub fn new(store: Store, connections: LiveConnections, metrics: Metrics) -> Self {
        Self {
            store,
            connections,
            metrics,
            ended: HashMap::new(),
            greeted: HashMap::new(),
            cluster: None,
        }
    }

    /// Cluster mode (see the field).
    pub fn with_cluster(mut self, cluster: Option<crate::cluster::Cluster>) -> Self {
        self.cluster = cluster;
        self
    }

    /// The events `event` stands for, in order: a `Connected` before it when it opens a
    /// session, `Ended` instead of a will that ends one; nothing when it is rejected.
    pub async fn admit(&mut self, event: ModuleEvent) -> Vec<ModuleEvent> {
        let mut out = Vec::new();
        self.admit_into(event, &mut out).await;
        out
    }

    /// [`admit`](Self::admit), appending to `out`: the ingest loop reuses one vector instead
    /// of allocating one per message.
    pub async fn admit_into(&mut self, event: ModuleEvent, out: &mut Vec<ModuleEvent>) {
        let Some(module) = module_of(&event) else {
            return out.push(event);
        };
        let now = Instant::now();
        let current = self.current(module);
        // The common case (a message of an open session) without cloning the id.
        let ended = match current {
            Some(_) => None,
            None => self.ended.get(module).copied(),
        };
        let inference = infer(&event, current, ended, now);
        if inference == Inference::Forward {
            return out.push(event);
        }
        let module = module.clone();
        out.extend(self.admit_slow(event, module, inference, now).await);
    }

    /// What is not a plain forward: a session opens or ends.
    async fn admit_slow(
        &mut self,
        event: ModuleEvent,
        module: ModuleId,
        inference: Inference,
        now: Instant,
    ) -> Vec<ModuleEvent> {
        match inference {
            Inference::Forward => vec![event],
            // A will right after a hello: the hello came from a new connection, so the will is
            // the previous one's, reordered on its way (a hub forwarded it). Stale: the tracker
            // counts it, as a will with a newer connection open.
            Inference::End(_)
                if self.cluster.is_some()
                    && self
                        .greeted
                        .get(&module)
                        .is_some_and(|at| now.duration_since(*at) < LEFTOVER_GRACE) =>
            {
                vec![event]
            }
            Inference::End(session) => {
                self.greeted.remove(&module);
                self.connections.remove(&module, session);
                if self.ended.len() >= MAX_ENDED {
                    self.ended
                        .retain(|_, at| now.duration_since(*at) < LEFTOVER_GRACE);
                }
                self.ended.insert(module.clone(), now);
                vec![ModuleEvent::Ended { module, session }]
            }
            Inference::Open => match self.open(&module).await {
                Some(connected) => {
                    self.ended.remove(&module);
                    if self.cluster.is_some() && matches!(event, ModuleEvent::Hello(..)) {
                        if self.greeted.len() >= MAX_ENDED {
                            self.greeted
                                .retain(|_, at| now.duration_since(*at) < LEFTOVER_GRACE);
                        }
                        self.greeted.insert(module.clone(), now);
                    }
                    match self.adoption(&module).await {
                        Some(adopted) => vec![adopted, connected, event],
                        None => vec![connected, event],
                    }
                }
                None => Vec::new(),
            },
        }
    }

    /// The module's open MQTT session, if any. The registry closes sessions through
    /// [`LiveConnections`] (removal, disabling, token rotation), so a closed one is gone here
    /// too and the next message looks the module up again.
    fn current(&self, module: &ModuleId) -> Option<u64> {
        match self.connections.link(module) {
            Some((session, Link::Mqtt(_))) => Some(session),
            _ => None,
        }
    }

    /// Cluster mode: the module's shared state, for the tracker to adopt if it does not track
    /// the module yet (it ignores it otherwise).
    async fn adoption(&self, module: &ModuleId) -> Option<ModuleEvent> {
        let cluster = self.cluster.as_ref()?;
        match crate::cluster::live::one(cluster, module).await {
            Ok(shared) => shared.map(|s| ModuleEvent::Adopted(module.clone(), Box::new(s))),
            Err(e) => {
                tracing::warn!(%module, error = %e, "cannot read the module's shared state; it starts afresh here");
                None
            }
        }
    }

    async fn open(&mut self, module: &ModuleId) -> Option<ModuleEvent> {
        let record = match self.store.module(module).await {
            Ok(Some(record)) if !record.disabled => record,
            Ok(Some(_)) => {
                self.metrics.reject("module_disabled");
                tracing::warn!(%module, "message from a disabled module (check the broker's password file: re-export it)");
                return None;
            }
            Ok(None) => {
                self.metrics.reject("unknown_module");
                tracing::warn!(%module, "message from an unregistered module (check the broker's ACL: re-export it)");
                return None;
            }
            Err(e) => {
                self.metrics.reject("store_unavailable");
                tracing::error!(%module, error = %e, "cannot read the registry; message dropped");
                return None;
            }
        };
        let session = self.connections.next_session();
        if let Err(other) = self.connections.claim(module, session, Link::Mqtt(None)) {
            self.metrics.reject("duplicate_link");
            tracing::warn!(%module, carried_by = ?other, "module already live on another link; MQTT message dropped");
            return None;
        }
        tracing::debug!(%module, session, "session opened (inferred)");
        Some(ModuleEvent::Connected {
            record,
            session,
            transport: Transport::Mqtt,
        })
    }
}

fn module_of(event: &ModuleEvent) -> Option<&ModuleId> {
    match event {
        ModuleEvent::Hello(m, ..)
        | ModuleEvent::Heartbeat(m, _)
        | ModuleEvent::Telemetry(m, _)
        | ModuleEvent::Will(m) => Some(m),
        _ => None,
    }
}

/// The rules in the module docs: `current` is the module's open session, `ended` when its last
/// one ended by its will.
fn infer(
    event: &ModuleEvent,
    current: Option<u64>,
    ended: Option<Instant>,
    now: Instant,
) -> Inference {
    match (event, current) {
        (ModuleEvent::Hello(..), _) => Inference::Open,
        (ModuleEvent::Will(_), Some(session)) => Inference::End(session),
        (ModuleEvent::Will(_), None) => Inference::Forward,
        (_, Some(_)) => Inference::Forward,
        (_, None) if ended.is_some_and(|at| now.duration_since(at) < LEFTOVER_GRACE) => {
            Inference::Forward
        }
        (_, None) => Inference::Open,
    }
}

#[cfg(test)]
mod tests {
    use mc_protocol::{Encoding, FirmwareVersion, Heartbeat, Hello};

    use super::*;
    use crate::store::NewModule;

    fn id(s: &str) -> ModuleId {
        ModuleId::new(s).expect("valid id")
    }

    fn heartbeat(m: &ModuleId) -> ModuleEvent {
        ModuleEvent::Heartbeat(
            m.clone(),
            Heartbeat {
                seq: 1,
                uptime_ms: 1000,
            },
        )
    }

    fn hello(m: &ModuleId) -> ModuleEvent {
        let hello = Hello {
            fw: FirmwareVersion::new("1.0.0").expect("fw"),
            heartbeat_ms: 1000,
        };
        ModuleEvent::Hello(m.clone(), hello, Encoding::Json)
    }

    #[test]
    fn the_rules() {
        let m = id("MC-1");
        let t0 = Instant::now();
        let later = t0 + LEFTOVER_GRACE;
        assert_eq!(infer(&hello(&m), Some(3), None, t0), Inference::Open);
        assert_eq!(infer(&hello(&m), None, Some(t0), t0), Inference::Open);
        assert_eq!(infer(&heartbeat(&m), Some(3), None, t0), Inference::Forward);
        assert_eq!(infer(&heartbeat(&m), None, None, t0), Inference::Open);
        // Just after its will: a leftover. Later: the module is evidently there.
        assert_eq!(
            infer(&heartbeat(&m), None, Some(t0), t0),
            Inference::Forward
        );
        assert_eq!(
            infer(&heartbeat(&m), None, Some(t0), later),
            Inference::Open
        );
        assert_eq!(
            infer(&ModuleEvent::Will(m.clone()), Some(3), None, t0),
            Inference::End(3)
        );
        assert_eq!(
            infer(&ModuleEvent::Will(m.clone()), None, None, t0),
            Inference::Forward
        );
    }

    // Real time: the store's pool has timeouts of its own. Nothing here waits.
    #[tokio::test]
    async fn sessions_open_end_and_refuse_what_the_registry_does_not_allow() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), Duration::from_secs(3600))
            .await
            .expect("store");
        for name in ["MC-1", "MC-OFF"] {
            store
                .create_module(NewModule {
                    id: id(name),
                    name: name.into(),
                    kind: "test".into(),
                    owner_email: None,
                    heartbeat_timeout: None,
                })
                .await
                .expect("module");
        }
        store
            .update_module(
                &id("MC-OFF"),
                crate::store::ModulePatch {
                    disabled: Some(true),
                    ..Default::default()
                },
            )
            .await
            .expect("disable");
        let connections = LiveConnections::default();
        let metrics = Metrics::default();
        let mut sessions = InferredSessions::new(store, connections.clone(), metrics.clone());
        let m = id("MC-1");

        // A heartbeat of a module already connected when the hub started: session 1 opens.
        let out = sessions.admit(heartbeat(&m)).await;
        assert!(matches!(
            out.as_slice(),
            [
                ModuleEvent::Connected {
                    session: 1,
                    transport: Transport::Mqtt,
                    ..
                },
                ModuleEvent::Heartbeat(..)
            ]
        ));
        assert_eq!(connections.transport(&m), Some(Transport::Mqtt));
        assert!(matches!(
            sessions.admit(heartbeat(&m)).await.as_slice(),
            [ModuleEvent::Heartbeat(..)]
        ));
        // Its will ends it; a heartbeat just after is a leftover; a hello opens session 2.
        assert!(matches!(
            sessions
                .admit(ModuleEvent::Will(m.clone()))
                .await
                .as_slice(),
            [ModuleEvent::Ended { session: 1, .. }]
        ));
        assert_eq!(connections.transport(&m), None);
        assert!(matches!(
            sessions.admit(heartbeat(&m)).await.as_slice(),
            [ModuleEvent::Heartbeat(..)]
        ));
        assert!(matches!(
            sessions.admit(hello(&m)).await.as_slice(),
            [
                ModuleEvent::Connected { session: 2, .. },
                ModuleEvent::Hello(..)
            ]
        ));
        // The registry closes it (say its token was rotated): the next message looks it up again.
        assert!(connections.close(&m));
        assert!(matches!(
            sessions.admit(heartbeat(&m)).await.as_slice(),
            [
                ModuleEvent::Connected { session: 3, .. },
                ModuleEvent::Heartbeat(..)
            ]
        ));

        // Unknown and disabled modules are refused and counted.
        assert!(sessions.admit(heartbeat(&id("MC-NOPE"))).await.is_empty());
        assert!(sessions.admit(hello(&id("MC-OFF"))).await.is_empty());
        assert_eq!(metrics.rejected("unknown_module"), 1);
        assert_eq!(metrics.rejected("module_disabled"), 1);
    }
}
