//! The modules connected right now, whatever their transport, and the hub-wide numbering of
//! their sessions.
//!
//! Both transports register each accepted connection here: the MQTT gateway after
//! authentication, a serial port task after an accepted hello. From this one map the hub
//! - closes a module's connection when the registry says so (disabled, removed, token rotated:
//!   [`crate::registry`]);
//! - routes a command to the transport that carries the module ([`crate::commands`]);
//! - refuses a second serial link for a module that another link already carries (unless
//!   that link is a serial session which has not heard its module for a heartbeat interval:
//!   the module moved to another port, the old adapter is still plugged in).
//!
//! Session numbers come from one counter, so that the tracker can tell a takeover from a stale
//! disconnect whichever transports the old and the new connection use.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use mc_protocol::ModuleId;
use serde::Serialize;
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::ingest::serial::PortRequest;

/// How a module reaches the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Through the MQTT gateway.
    Mqtt,
    /// On a serial port, with the native link protocol.
    Serial,
}

/// The connection that carries a module.
#[derive(Debug, Clone)]
pub enum Link {
    /// An MQTT connection (authenticated by the module's token): one the gateway serves, with
    /// the way to its socket, or (`None`) a session inferred behind an external broker, where
    /// commands go through the broker.
    Mqtt(Option<MqttRoute>),
    /// A link session on a serial port (trusted like a cable: no token).
    Serial(SerialRoute),
}

/// Where the gateway takes commands for one of its connections.
#[derive(Debug, Clone)]
pub struct MqttRoute {
    /// Encoded command payloads; the connection publishes them on the module's command topic.
    pub commands: Arc<CommandSlot>,
}

/// Commands waiting to be written to one gateway connection: a short queue and a wake-up.
/// Commands are rare and every idle module connection has one of these, so it allocates
/// nothing until a command comes (a channel would hold a block of slots per connection), and
/// the connection polls it ([`poll_ready`](Self::poll_ready)) instead of holding a
/// `Notified` future in its task for as long as it lives.
#[derive(Debug, Default)]
pub struct CommandSlot {
    queue: Mutex<std::collections::VecDeque<Vec<u8>>>,
    /// Set by a push, taken by the poll that reports it: a wake-up is never lost.
    woken: std::sync::atomic::AtomicBool,
    waker: futures_util::task::AtomicWaker,
    closed: std::sync::atomic::AtomicBool,
}

/// Why a command could not be queued for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotError {
    /// [`CommandSlot::CAPACITY`] commands wait already: the module stopped reading.
    Full,
    /// The connection ended.
    Closed,
}

impl CommandSlot {
    /// Commands that may wait at once.
    pub const CAPACITY: usize = 8;

    /// Queues an encoded command and wakes the connection up.
    pub fn push(&self, payload: Vec<u8>) -> Result<(), SlotError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SlotError::Closed);
        }
        let mut queue = self.queue.lock().map_err(|_| SlotError::Closed)?;
        if queue.len() >= Self::CAPACITY {
            return Err(SlotError::Full);
        }
        queue.push_back(payload);
        drop(queue);
        self.woken.store(true, Ordering::Release);
        self.waker.wake();
        Ok(())
    }

    /// Ready when a command may be waiting; pending, the task is woken by the next push (a
    /// wake-up is never lost: one that comes while nobody polls is kept for the next poll).
    /// One task polls a slot: the latest waker registered is the one woken.
    pub fn poll_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.woken.swap(false, Ordering::AcqRel) {
            return std::task::Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A push between the first check and the registration woke nobody: look again.
        if self.woken.swap(false, Ordering::AcqRel) {
            return std::task::Poll::Ready(());
        }
        std::task::Poll::Pending
    }

    /// Takes every waiting command, oldest first.
    pub fn take(&self) -> std::collections::VecDeque<Vec<u8>> {
        self.queue
            .lock()
            .map(|mut queue| std::mem::take(&mut *queue))
            .unwrap_or_default()
    }

    /// The connection ended: later commands are refused as [`SlotError::Closed`].
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

impl Link {
    /// Which transport.
    pub fn transport(&self) -> Transport {
        match self {
            Self::Mqtt(_) => Transport::Mqtt,
            Self::Serial(_) => Transport::Serial,
        }
    }

    /// True when both are the same way in: MQTT, or the same port and address. A new session
    /// on the same way in replaces the old one (a reconnect); on another way in, it competes.
    fn same_way_in(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Mqtt(_), Self::Mqtt(_)) => true,
            (Self::Serial(a), Self::Serial(b)) => a.port == b.port && a.address == b.address,
            _ => false,
        }
    }
}

/// Where a serial module is: the port task to ask and the address on that port.
#[derive(Debug, Clone)]
pub struct SerialRoute {
    /// The port's path, as configured.
    pub port: Arc<str>,
    /// The module's address on the port (0 point to point).
    pub address: u8,
    /// The port task's request queue (commands).
    pub requests: mpsc::Sender<PortRequest>,
    /// When the session last heard its module: a hello on another port takes the module over
    /// from a session that went quiet instead of being refused as a duplicate.
    pub presence: Presence,
}

/// When a serial session last heard its module, and how often the module speaks at least
/// (its heartbeat interval). Written by the session's port task at every frame, read by
/// [`LiveConnections::claim`] for a hello on another port; cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Presence(Arc<Mutex<Heard>>);

#[derive(Debug, Clone, Copy)]
struct Heard {
    at: Instant,
    heartbeat: Duration,
}

impl Presence {
    /// Heard at `at`; the module speaks at least every `heartbeat`.
    pub fn new(at: Instant, heartbeat: Duration) -> Self {
        Self(Arc::new(Mutex::new(Heard { at, heartbeat })))
    }

    /// The module spoke at `at`.
    pub fn heard(&self, at: Instant) {
        if let Ok(mut heard) = self.0.lock() {
            heard.at = at;
        }
    }

    /// The module now speaks at least every `heartbeat` (a new interval was acknowledged).
    pub fn set_heartbeat(&self, heartbeat: Duration) {
        if let Ok(mut heard) = self.0.lock() {
            heard.heartbeat = heartbeat;
        }
    }

    /// True if the module was heard within its heartbeat interval before `now`: it is still
    /// there (two boards flashed with the same id, not a module that moved).
    pub fn is_recent(&self, now: Instant) -> bool {
        self.0
            .lock()
            .map_or(true, |h| now.saturating_duration_since(h.at) <= h.heartbeat)
    }
}

#[derive(Debug)]
struct Entry {
    session: u64,
    /// Cancelled to close the connection.
    token: CancellationToken,
    link: Link,
}

/// Live connections by module, and the session counter; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct LiveConnections {
    inner: Arc<Mutex<HashMap<ModuleId, Entry>>>,
    /// The last session number handed out.
    sessions: Arc<AtomicU64>,
}

impl LiveConnections {
    /// A new hub-wide session number (never 0, never reused while the hub runs).
    pub fn next_session(&self) -> u64 {
        self.sessions.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers the gateway's connection `session` of `module`; the token is cancelled to
    /// close it. The entry it replaces, whatever its transport, is closed: the newest
    /// connection wins (an MQTT takeover).
    pub fn insert(&self, module: &ModuleId, session: u64, link: Link) -> CancellationToken {
        self.insert_token(CancellationToken::new(), module, session, link)
    }

    /// Like [`insert`](Self::insert), with a token that `parent` cancels too (the hub's
    /// shutdown: the connection needs no watch of its own for it). Born cancelled if `parent`
    /// already is.
    pub fn insert_under(
        &self,
        parent: &CancellationToken,
        module: &ModuleId,
        session: u64,
        link: Link,
    ) -> CancellationToken {
        self.insert_token(parent.child_token(), module, session, link)
    }

    fn insert_token(
        &self,
        token: CancellationToken,
        module: &ModuleId,
        session: u64,
        link: Link,
    ) -> CancellationToken {
        let entry = Entry {
            session,
            token: token.clone(),
            link,
        };
        let replaced = match self.inner.lock() {
            Ok(mut map) => map.insert(module.clone(), entry),
            Err(_) => None,
        };
        if let Some(old) = replaced {
            old.token.cancel();
        }
        token
    }

    /// Like [`insert`](Self::insert), unless another way in already carries `module`: then
    /// nothing changes and the transport that carries it is returned. A serial session that has
    /// not heard its module within its heartbeat interval does not count: it is closed (its
    /// token cancelled) and this connection takes its place.
    pub fn claim(
        &self,
        module: &ModuleId,
        session: u64,
        link: Link,
    ) -> Result<CancellationToken, Transport> {
        let now = Instant::now();
        let mut map = self.inner.lock().map_err(|_| link.transport())?;
        if let Some(existing) = map.get(module)
            && !existing.link.same_way_in(&link)
        {
            match &existing.link {
                Link::Serial(route) if !route.presence.is_recent(now) => {}
                other => return Err(other.transport()),
            }
        }
        let token = CancellationToken::new();
        let way_in = link.clone();
        let replaced = map.insert(
            module.clone(),
            Entry {
                session,
                token: token.clone(),
                link,
            },
        );
        drop(map);
        if let Some(quiet) = replaced.filter(|old| !old.link.same_way_in(&way_in)) {
            quiet.token.cancel();
        }
        Ok(token)
    }

    /// Forgets connection `session` (only if it is still the registered one).
    pub fn remove(&self, module: &ModuleId, session: u64) {
        if let Ok(mut map) = self.inner.lock()
            && map.get(module).is_some_and(|e| e.session == session)
        {
            map.remove(module);
        }
    }

    /// Closes the module's connection, whatever its transport (disabled, removed); true if
    /// it had one.
    pub fn close(&self, module: &ModuleId) -> bool {
        self.close_if(module, |_| true)
    }

    /// Closes the module's connection if it was authenticated by its token (MQTT), after a
    /// token rotation; a serial link has no token and stays up. True if one was closed.
    pub fn close_token_authenticated(&self, module: &ModuleId) -> bool {
        self.close_if(module, |link| matches!(link, Link::Mqtt(_)))
    }

    fn close_if(&self, module: &ModuleId, pred: impl Fn(&Link) -> bool) -> bool {
        let entry = self.inner.lock().ok().and_then(|mut map| {
            if map.get(module).is_some_and(|e| pred(&e.link)) {
                map.remove(module)
            } else {
                None
            }
        });
        match entry {
            Some(entry) => {
                entry.token.cancel();
                true
            }
            None => false,
        }
    }

    /// Forgets (without closing) every connection for which `keep` is false: in cluster mode,
    /// the inferred MQTT sessions of modules another hub owns now.
    pub fn retain(&self, keep: impl Fn(&ModuleId, &Link) -> bool) {
        if let Ok(mut map) = self.inner.lock() {
            map.retain(|module, entry| keep(module, &entry.link));
        }
    }

    /// The module's current connection: its session and link.
    pub fn link(&self, module: &ModuleId) -> Option<(u64, Link)> {
        let map = self.inner.lock().ok()?;
        map.get(module).map(|e| (e.session, e.link.clone()))
    }

    /// The transport of the module's current connection.
    pub fn transport(&self, module: &ModuleId) -> Option<Transport> {
        let map = self.inner.lock().ok()?;
        map.get(module).map(|e| e.link.transport())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A serial route whose module was heard just now and heartbeats every minute.
    fn serial(port: &str, address: u8) -> Link {
        serial_heard(
            port,
            address,
            Presence::new(Instant::now(), Duration::from_secs(60)),
        )
    }

    fn serial_heard(port: &str, address: u8, presence: Presence) -> Link {
        let (requests, _) = mpsc::channel(1);
        Link::Serial(SerialRoute {
            port: port.into(),
            address,
            requests,
            presence,
        })
    }

    #[test]
    fn sessions_are_numbered_hub_wide() {
        let live = LiveConnections::default();
        let a = live.next_session();
        let b = live.clone().next_session();
        assert!(a > 0 && b > a);
    }

    #[test]
    fn another_way_in_is_refused_the_same_way_in_replaces() {
        let live = LiveConnections::default();
        let m = ModuleId::new("MC-1").unwrap();
        let first = live.claim(&m, 1, serial("/dev/a", 0)).unwrap();
        assert_eq!(
            live.claim(&m, 2, serial("/dev/b", 0)).unwrap_err(),
            Transport::Serial
        );
        assert_eq!(
            live.claim(&m, 2, serial("/dev/a", 5)).unwrap_err(),
            Transport::Serial
        );
        let second = live.claim(&m, 3, serial("/dev/a", 0)).unwrap();
        assert!(!first.is_cancelled(), "its port task ends it");
        live.remove(&m, 1);
        assert_eq!(
            live.link(&m).map(|(s, _)| s),
            Some(3),
            "stale remove ignored"
        );
        // An MQTT takeover closes the serial session.
        live.insert(&m, 4, Link::Mqtt(None));
        assert!(second.is_cancelled());
        assert_eq!(live.transport(&m), Some(Transport::Mqtt));
        assert_eq!(
            live.claim(&m, 5, serial("/dev/a", 0)).unwrap_err(),
            Transport::Mqtt
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_serial_session_quiet_for_a_heartbeat_interval_is_taken_over_not_a_duplicate() {
        let live = LiveConnections::default();
        let m = ModuleId::new("MC-1").unwrap();
        let heartbeat = Duration::from_secs(60);
        let presence = Presence::new(Instant::now(), heartbeat);
        let old = live
            .claim(&m, 1, serial_heard("/dev/a", 0, presence.clone()))
            .unwrap();
        // Heard within its interval: still there, a second board with the same id.
        tokio::time::advance(heartbeat).await;
        assert_eq!(
            live.claim(&m, 2, serial("/dev/b", 0)).unwrap_err(),
            Transport::Serial
        );
        presence.heard(Instant::now());
        tokio::time::advance(heartbeat - Duration::from_millis(1)).await;
        assert!(live.claim(&m, 3, serial("/dev/b", 0)).is_err());
        // Quiet for longer than its interval: the module moved; the old session is closed.
        tokio::time::advance(Duration::from_millis(2)).await;
        let new = live.claim(&m, 4, serial("/dev/b", 0)).unwrap();
        assert!(old.is_cancelled(), "its port task ends it");
        assert!(!new.is_cancelled());
        assert_eq!(live.link(&m).map(|(s, _)| s), Some(4));
        live.remove(&m, 1);
        assert_eq!(
            live.link(&m).map(|(s, _)| s),
            Some(4),
            "stale remove ignored"
        );
        // A shorter interval, once acknowledged, counts at once.
        let quick = Presence::new(Instant::now(), heartbeat);
        live.claim(&m, 5, serial_heard("/dev/b", 0, quick.clone()))
            .unwrap();
        quick.set_heartbeat(Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(live.claim(&m, 6, serial("/dev/c", 0)).is_ok());
        // MQTT is never taken over by a serial hello.
        live.insert(&m, 7, Link::Mqtt(None));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(
            live.claim(&m, 8, serial("/dev/a", 0)).unwrap_err(),
            Transport::Mqtt
        );
    }

    #[tokio::test]
    async fn a_command_slot_queues_wakes_bounds_and_closes() {
        let slot = CommandSlot::default();
        slot.push(b"1".to_vec()).unwrap();
        slot.push(b"2".to_vec()).unwrap();
        // The wake-up came before anyone waited: it is not lost.
        tokio::time::timeout(
            Duration::from_secs(5),
            std::future::poll_fn(|cx| slot.poll_ready(cx)),
        )
        .await
        .expect("woken");
        assert_eq!(slot.take(), [b"1".to_vec(), b"2".to_vec()]);
        for _ in 0..CommandSlot::CAPACITY {
            slot.push(Vec::new()).unwrap();
        }
        assert_eq!(slot.push(Vec::new()), Err(SlotError::Full));
        slot.close();
        assert_eq!(slot.push(Vec::new()), Err(SlotError::Closed));
    }

    #[test]
    fn a_command_slot_wakes_the_task_polling_it_once_per_push() {
        struct Wakes(AtomicU64);
        impl futures_util::task::ArcWake for Wakes {
            fn wake_by_ref(this: &Arc<Self>) {
                this.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let wakes = Arc::new(Wakes(AtomicU64::new(0)));
        let waker = futures_util::task::waker(wakes.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let slot = CommandSlot::default();
        assert!(slot.poll_ready(&mut cx).is_pending(), "nothing pushed yet");
        slot.push(b"1".to_vec()).unwrap();
        assert_eq!(
            wakes.0.load(Ordering::Relaxed),
            1,
            "the push woke the poller"
        );
        assert!(slot.poll_ready(&mut cx).is_ready());
        assert!(
            slot.poll_ready(&mut cx).is_pending(),
            "one wake-up is reported once"
        );
        assert_eq!(slot.take(), [b"1".to_vec()]);
    }

    #[test]
    fn a_newer_gateway_connection_closes_the_older_one() {
        let live = LiveConnections::default();
        let m = ModuleId::new("MC-1").unwrap();
        let old = live.insert(&m, 1, Link::Mqtt(None));
        let new = live.insert(&m, 2, Link::Mqtt(None));
        assert!(old.is_cancelled(), "taken over");
        assert!(!new.is_cancelled());
        live.remove(&m, 1);
        assert_eq!(live.link(&m).map(|(s, _)| s), Some(2), "a stale removal");
    }

    #[test]
    fn a_connection_registered_under_the_shutdown_token_closes_with_it() {
        let live = LiveConnections::default();
        let shutdown = CancellationToken::new();
        let a = live.insert_under(
            &shutdown,
            &ModuleId::new("MC-1").unwrap(),
            1,
            Link::Mqtt(None),
        );
        let b = live.insert_under(
            &shutdown,
            &ModuleId::new("MC-2").unwrap(),
            2,
            Link::Mqtt(None),
        );
        b.cancel();
        assert!(
            !a.is_cancelled() && !shutdown.is_cancelled(),
            "closing one closes only it"
        );
        shutdown.cancel();
        assert!(a.is_cancelled());
        // Registered after shutdown began: closed from the start, not missed.
        let late = live.insert_under(
            &shutdown,
            &ModuleId::new("MC-3").unwrap(),
            3,
            Link::Mqtt(None),
        );
        assert!(late.is_cancelled());
    }

    #[test]
    fn token_rotation_closes_only_token_authenticated_links() {
        let live = LiveConnections::default();
        let (s, q) = (
            ModuleId::new("MC-S").unwrap(),
            ModuleId::new("MC-Q").unwrap(),
        );
        let serial_token = live.claim(&s, 1, serial("/dev/a", 0)).unwrap();
        let mqtt_token = live.insert(&q, 2, Link::Mqtt(None));
        assert!(!live.close_token_authenticated(&s));
        assert!(!serial_token.is_cancelled());
        assert!(live.close_token_authenticated(&q));
        assert!(mqtt_token.is_cancelled());
        assert!(live.close(&s), "disable and removal close any link");
        assert!(serial_token.is_cancelled());
        assert!(live.link(&s).is_none());
    }
}
