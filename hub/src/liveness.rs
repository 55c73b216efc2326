//! Who is online: heartbeat deadlines, connection sessions, stale last wills, flap damping.
//!
//! Pure logic, owned by the tracker task; time comes from `tokio::time` so tests pause it.
//!
//! # Rules
//! - **Online** when a hello, heartbeat or telemetry arrives from a module that has an open
//!   connection (a message without one is a leftover of a closed connection and cannot prove
//!   anything).
//! - **Offline** when the connection closes (clean DISCONNECT or lost), when its last will
//!   arrives, or when no message arrives within its timeout.
//! - **Timeout**, first match: the module's own setting (registry) > the hub's
//!   `--heartbeat-timeout` > 3 × the interval announced in its hello > 15 s.
//! - **Deadlines** sit in a timer wheel ([`DelayQueue`]): one entry per module, reset in O(1) by
//!   each message; nothing scans all modules.
//! - **Sessions** (as Sparkplug's bdSeq): each connection gets a number. A disconnect for an older
//!   session, or a last will while a newer connection is open, is stale: counted and ignored.
//! - **Flap damping**: a module that changes state more than `max_transitions` times within
//!   `window` is *flapping*: its changes are tracked but not emitted. Once it has been stable for
//!   `hold`, the clients get its current state once (if it differs from what they last saw).

use std::{
    collections::VecDeque,
    task::{Context, Poll},
    time::Duration,
};

use mc_protocol::ModuleId;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::time::{DelayQueue, delay_queue::Key};

/// Default liveness timeout when a module announced no interval.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// Timeout = this many announced heartbeat intervals.
pub const INTERVAL_MULTIPLIER: u32 = 3;
/// Longest liveness timeout, whatever its source (the timer wheel holds about two years).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Shortest liveness timeout.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(100);

/// A module's liveness timeout, by the rule in the module docs: its own setting, else the
/// hub's, else [`INTERVAL_MULTIPLIER`] × its announced interval, else [`DEFAULT_TIMEOUT`];
/// clamped to [`MIN_TIMEOUT`]..=[`MAX_TIMEOUT`]. Serial link sessions expire by it too, but
/// never sooner than 3 heartbeat intervals
/// ([`session_expiry`](crate::ingest::serial::link::session_expiry)).
pub fn timeout(
    own: Option<Duration>,
    hub: Option<Duration>,
    announced: Option<Duration>,
) -> Duration {
    own.or(hub)
        .or(announced.map(|i| i * INTERVAL_MULTIPLIER))
        .unwrap_or(DEFAULT_TIMEOUT)
        .clamp(MIN_TIMEOUT, MAX_TIMEOUT)
}

/// Liveness settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct LivenessConfig {
    /// Hub-wide timeout overriding the announced interval (`--heartbeat-timeout`).
    #[serde(with = "crate::config::opt_duration")]
    pub heartbeat_timeout: Option<Duration>,
    /// Flap damping.
    pub flap: FlapDamping,
}

/// Flap damping settings (see the module docs for the rule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct FlapDamping {
    /// More state changes than this within `window` means flapping.
    pub max_transitions: usize,
    /// The observation window.
    #[serde(with = "crate::config::duration")]
    pub window: Duration,
    /// How long a flapping module must be stable before its state is emitted again.
    #[serde(with = "crate::config::duration")]
    pub hold: Duration,
}

impl Default for FlapDamping {
    fn default() -> Self {
        Self {
            max_transitions: 6,
            window: Duration::from_secs(60),
            hold: Duration::from_secs(10),
        }
    }
}

/// Why a module went offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfflineReason {
    /// No message within the timeout.
    Timeout,
    /// Its last will arrived.
    Will,
    /// It sent a clean MQTT DISCONNECT.
    Disconnect,
    /// Its connection dropped without DISCONNECT.
    ConnectionLost,
}

/// A change the clients must hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LivenessChange {
    /// The module is online.
    Online(ModuleId),
    /// The module is offline.
    Offline(ModuleId, OfflineReason),
}

/// Counters for what liveness ignored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LivenessCounters {
    /// Last wills that arrived while a newer connection was open.
    pub stale_wills: u64,
    /// Disconnects of connections that had already been replaced.
    pub stale_disconnects: u64,
    /// State changes not emitted because the module was flapping.
    pub damped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    Silence,
    Settle,
}

#[derive(Debug, Default)]
struct Entry {
    session: Option<u64>,
    /// The connection `session` replaced, restored if the new one never gets through.
    previous_session: Option<u64>,
    online: bool,
    announced: Option<Duration>,
    own_timeout: Option<Duration>,
    silence_key: Option<Key>,
    settle_key: Option<Key>,
    transitions: Transitions,
    emitted_online: bool,
    offline_reason: Option<OfflineReason>,
}

impl Entry {
    /// This module's timeout (see [`timeout`]).
    fn timeout(&self, config: &LivenessConfig) -> Duration {
        timeout(self.own_timeout, config.heartbeat_timeout, self.announced)
    }
}

/// A module's recent state changes, oldest first, for flap damping. Nearly every module has
/// had one (it came online) and keeps it for as long as it stays: that one is held inline, and
/// a list is allocated only while it changes more often (a `VecDeque` for everyone cost 32
/// bytes in the entry and 80 on the heap per module).
#[derive(Debug, Default)]
enum Transitions {
    #[default]
    None,
    One(Instant),
    #[expect(
        clippy::box_collection,
        reason = "boxed, the list takes 8 bytes of every entry instead of 32"
    )]
    Many(Box<VecDeque<Instant>>),
}

impl Transitions {
    /// Records a change at `now`, then forgets those older than `window` and all but the
    /// newest `keep` (at least the one just recorded); how many are left.
    fn record(&mut self, now: Instant, window: Duration, keep: usize) -> usize {
        let recent = |t: &Instant| now.duration_since(*t) <= window;
        match self {
            Self::One(t) if recent(t) && keep >= 2 => {
                *self = Self::Many(Box::new(VecDeque::from([*t, now])));
            }
            Self::None | Self::One(_) => *self = Self::One(now),
            Self::Many(times) => {
                times.push_back(now);
                while times.front().is_some_and(|t| !recent(t)) || times.len() > keep.max(1) {
                    times.pop_front();
                }
                if times.len() == 1 {
                    *self = Self::One(now);
                }
            }
        }
        self.len()
    }

    fn len(&self) -> usize {
        match self {
            Self::None => 0,
            Self::One(_) => 1,
            Self::Many(times) => times.len(),
        }
    }
}

/// The liveness state of every module; see the module docs.
#[derive(Debug)]
pub struct LivenessTracker {
    config: LivenessConfig,
    entries: foldhash::HashMap<ModuleId, Entry>,
    deadlines: DelayQueue<(ModuleId, Deadline)>,
    counters: LivenessCounters,
    /// Timeouts are held: the hub cannot hear modules right now (see
    /// [`hold_timeouts`](Self::hold_timeouts)).
    held: bool,
}

impl LivenessTracker {
    /// An empty tracker.
    pub fn new(config: LivenessConfig) -> Self {
        Self {
            config,
            entries: foldhash::HashMap::default(),
            deadlines: DelayQueue::new(),
            counters: LivenessCounters::default(),
            held: false,
        }
    }

    /// What was ignored so far.
    pub fn counters(&self) -> LivenessCounters {
        self.counters
    }

    /// Whether `module` is online (as tracked, before damping).
    pub fn is_online(&self, module: &ModuleId) -> bool {
        self.entries.get(module).is_some_and(|e| e.online)
    }

    /// The current connection of `module` (the latest opened and not closed), if any.
    pub fn session(&self, module: &ModuleId) -> Option<u64> {
        self.entries.get(module).and_then(|e| e.session)
    }

    /// Whether clients currently see `module` online (after damping).
    pub fn visible_online(&self, module: &ModuleId) -> bool {
        self.entries.get(module).is_some_and(|e| e.emitted_online)
    }

    /// How many modules clients currently see online.
    pub fn visible_online_count(&self) -> usize {
        self.entries.values().filter(|e| e.emitted_online).count()
    }

    /// A connection for `module` opened as `session`; `own_timeout` comes from the registry.
    pub fn connected(&mut self, module: &ModuleId, session: u64, own_timeout: Option<Duration>) {
        let entry = self.entries.entry(module.clone()).or_default();
        entry.previous_session = entry.session.replace(session);
        entry.own_timeout = own_timeout;
    }

    /// A message arrived; `announced` is the heartbeat interval of a hello.
    pub fn seen(
        &mut self,
        module: &ModuleId,
        announced: Option<Duration>,
    ) -> Option<LivenessChange> {
        let now = Instant::now();
        let entry = self.entries.get_mut(module)?;
        entry.session?;
        if announced.is_some() {
            entry.announced = announced;
        }
        let timeout = entry.timeout(&self.config);
        match &entry.silence_key {
            Some(key) => self.deadlines.reset_at(key, now + timeout),
            None => {
                entry.silence_key = Some(
                    self.deadlines
                        .insert_at((module.clone(), Deadline::Silence), now + timeout),
                )
            }
        }
        if entry.online {
            return None;
        }
        self.transition(module, true, None, now)
    }

    /// The connection `session` of `module` closed.
    pub fn disconnected(
        &mut self,
        module: &ModuleId,
        session: u64,
        reason: OfflineReason,
    ) -> Option<LivenessChange> {
        let entry = self.entries.get_mut(module)?;
        if entry.session != Some(session) {
            if entry.previous_session == Some(session) {
                entry.previous_session = None;
            }
            self.counters.stale_disconnects += 1;
            return None;
        }
        entry.session = None;
        self.go_offline(module, reason)
    }

    /// The connection `session` was registered but never reached the broker: the connection it
    /// would have replaced (if still open) is the current one again.
    pub fn aborted(&mut self, module: &ModuleId, session: u64) {
        if let Some(entry) = self.entries.get_mut(module)
            && entry.session == Some(session)
        {
            entry.session = entry.previous_session.take();
        }
    }

    /// The last will of `module` arrived.
    pub fn will(&mut self, module: &ModuleId) -> Option<LivenessChange> {
        let entry = self.entries.get_mut(module)?;
        if entry.session.is_some() {
            // A newer connection is open: this will belongs to a connection already replaced.
            self.counters.stale_wills += 1;
            return None;
        }
        self.go_offline(module, OfflineReason::Will)
    }

    /// Cluster mode: takes over `module` from another hub, as clients see it (`online`),
    /// without a transition: nothing to emit. Online, it gets a full timeout from now to speak
    /// (it then needs a connection, as any module). Ignored if already tracked.
    pub fn adopt(
        &mut self,
        module: &ModuleId,
        online: bool,
        own_timeout: Option<Duration>,
        announced: Option<Duration>,
    ) {
        if self.entries.contains_key(module) {
            return;
        }
        let mut entry = Entry {
            online,
            emitted_online: online,
            own_timeout,
            announced,
            ..Entry::default()
        };
        if online {
            let at = Instant::now() + entry.timeout(&self.config);
            entry.silence_key = Some(
                self.deadlines
                    .insert_at((module.clone(), Deadline::Silence), at),
            );
        }
        self.entries.insert(module.clone(), entry);
    }

    /// The hub cannot hear modules for now (its external broker link is down): silence then
    /// proves nothing, so no module goes offline by timeout until
    /// [`release_timeouts`](Self::release_timeouts). Wills and disconnects still count.
    pub fn hold_timeouts(&mut self) {
        self.held = true;
    }

    /// The hub hears modules again: every online module gets a full timeout from now to speak
    /// (without this, a link outage longer than the timeouts would end in an offline storm of
    /// modules that never went away).
    pub fn release_timeouts(&mut self) {
        self.held = false;
        let now = Instant::now();
        for entry in self.entries.values().filter(|e| e.online) {
            if let Some(key) = &entry.silence_key {
                self.deadlines
                    .reset_at(key, now + entry.timeout(&self.config));
            }
        }
    }

    /// Forgets `module` (unregistered).
    pub fn remove(&mut self, module: &ModuleId) {
        if let Some(entry) = self.entries.remove(module) {
            for key in [entry.silence_key, entry.settle_key].into_iter().flatten() {
                self.deadlines.remove(&key);
            }
        }
    }

    fn go_offline(&mut self, module: &ModuleId, reason: OfflineReason) -> Option<LivenessChange> {
        let entry = self.entries.get_mut(module)?;
        if let Some(key) = entry.silence_key.take() {
            self.deadlines.remove(&key);
        }
        if !entry.online {
            return None;
        }
        self.transition(module, false, Some(reason), Instant::now())
    }

    /// Applies a state change and decides, by the damping rule, whether clients hear of it.
    fn transition(
        &mut self,
        module: &ModuleId,
        online: bool,
        reason: Option<OfflineReason>,
        now: Instant,
    ) -> Option<LivenessChange> {
        let flap = &self.config.flap;
        let entry = self.entries.get_mut(module)?;
        entry.online = online;
        if reason.is_some() {
            entry.offline_reason = reason;
        }
        let recent = entry
            .transitions
            .record(now, flap.window, flap.max_transitions + 1);
        let flapping = recent > flap.max_transitions;
        if flapping || entry.settle_key.is_some() {
            self.counters.damped += 1;
            match &entry.settle_key {
                Some(key) => self.deadlines.reset_at(key, now + flap.hold),
                None => {
                    entry.settle_key = Some(
                        self.deadlines
                            .insert_at((module.clone(), Deadline::Settle), now + flap.hold),
                    )
                }
            }
            return None;
        }
        Self::emit_if_changed(module, entry)
    }

    fn emit_if_changed(module: &ModuleId, entry: &mut Entry) -> Option<LivenessChange> {
        if entry.online == entry.emitted_online {
            return None;
        }
        entry.emitted_online = entry.online;
        Some(if entry.online {
            LivenessChange::Online(module.clone())
        } else {
            LivenessChange::Offline(
                module.clone(),
                entry.offline_reason.unwrap_or(OfflineReason::Timeout),
            )
        })
    }

    /// Drives the deadlines: ready with the next change to emit; pending while there is none.
    pub fn poll_change(&mut self, cx: &mut Context<'_>) -> Poll<LivenessChange> {
        loop {
            let Poll::Ready(Some(expired)) = self.deadlines.poll_expired(cx) else {
                return Poll::Pending;
            };
            let (module, deadline) = expired.into_inner();
            let Some(entry) = self.entries.get_mut(&module) else {
                continue;
            };
            let change = match deadline {
                Deadline::Silence => {
                    entry.silence_key = None;
                    if !entry.online {
                        continue;
                    }
                    if self.held {
                        let at = Instant::now() + entry.timeout(&self.config);
                        entry.silence_key = Some(
                            self.deadlines
                                .insert_at((module.clone(), Deadline::Silence), at),
                        );
                        continue;
                    }
                    self.transition(&module, false, Some(OfflineReason::Timeout), Instant::now())
                }
                Deadline::Settle => {
                    entry.settle_key = None;
                    Self::emit_if_changed(&module, entry)
                }
            };
            if let Some(change) = change {
                return Poll::Ready(change);
            }
        }
    }

    /// Waits for the next change to emit.
    pub async fn next_change(&mut self) -> LivenessChange {
        std::future::poll_fn(|cx| self.poll_change(cx)).await
    }

    /// What it holds: modules, pending deadlines, and the longest transition history (the soak
    /// test checks these stay bounded).
    #[cfg(test)]
    fn footprint(&self) -> (usize, usize, usize) {
        let longest = self
            .entries
            .values()
            .map(|e| e.transitions.len())
            .max()
            .unwrap_or(0);
        (self.entries.len(), self.deadlines.len(), longest)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use LivenessChange::*;

    fn id(s: &str) -> ModuleId {
        ModuleId::new(s).unwrap()
    }

    fn tracker() -> LivenessTracker {
        LivenessTracker::new(LivenessConfig::default())
    }

    /// The next change, if one happens within `within` of paused time.
    async fn change_within(t: &mut LivenessTracker, within: Duration) -> Option<LivenessChange> {
        tokio::time::timeout(within, t.next_change()).await.ok()
    }

    #[tokio::test(start_paused = true)]
    async fn online_on_first_message_offline_after_three_intervals() {
        let mut t = tracker();
        let m = id("MC-1001-STN");
        t.connected(&m, 1, None);
        assert_eq!(
            t.seen(&m, Some(Duration::from_secs(5))),
            Some(Online(m.clone()))
        );
        assert_eq!(t.seen(&m, None), None, "already online: no event");
        // Heartbeats keep it alive.
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(10)).await;
            assert_eq!(t.seen(&m, None), None);
        }
        assert_eq!(
            change_within(&mut t, Duration::from_millis(14_900)).await,
            None
        );
        assert_eq!(
            change_within(&mut t, Duration::from_millis(200)).await,
            Some(Offline(m.clone(), OfflineReason::Timeout))
        );
        // Back when it speaks again.
        assert_eq!(t.seen(&m, None), Some(Online(m)));
    }

    #[test]
    fn transitions_keep_the_recent_ones_and_allocate_only_while_flapping() {
        let window = Duration::from_secs(60);
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut t = Transitions::default();
        assert_eq!(t.len(), 0);
        assert_eq!(t.record(at(0), window, 3), 1);
        assert!(
            matches!(t, Transitions::One(_)),
            "one change is held inline"
        );
        assert_eq!(t.record(at(10), window, 3), 2);
        assert_eq!(t.record(at(20), window, 3), 3);
        assert_eq!(t.record(at(30), window, 3), 3, "only the newest `keep`");
        assert_eq!(
            t.record(at(85), window, 3),
            2,
            "10 s and 20 s fell out of the window"
        );
        assert_eq!(t.record(at(200), window, 3), 1);
        assert!(
            matches!(t, Transitions::One(x) if x == at(200)),
            "back inline once stable"
        );
        assert_eq!(
            t.record(at(400), window, 3),
            1,
            "an old one inline falls out too"
        );
        assert_eq!(t.record(at(401), window, 1), 1, "keep 1: only the newest");
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_precedence_module_over_hub_over_announced() {
        let config = LivenessConfig {
            heartbeat_timeout: Some(Duration::from_secs(4)),
            ..Default::default()
        };
        let mut t = LivenessTracker::new(config);
        let (a, b) = (id("MOD-A"), id("MOD-B"));
        t.connected(&a, 1, None);
        t.connected(&b, 2, Some(Duration::from_secs(2)));
        t.seen(&a, Some(Duration::from_secs(60)));
        t.seen(&b, Some(Duration::from_secs(60)));
        assert_eq!(
            change_within(&mut t, Duration::from_millis(2100)).await,
            Some(Offline(b, OfflineReason::Timeout))
        );
        assert_eq!(
            change_within(&mut t, Duration::from_millis(2000)).await,
            Some(Offline(a, OfflineReason::Timeout))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn default_timeout_without_hello() {
        let mut t = tracker();
        let m = id("MC-1");
        t.connected(&m, 1, None);
        assert_eq!(t.seen(&m, None), Some(Online(m.clone())));
        assert_eq!(
            change_within(&mut t, DEFAULT_TIMEOUT - Duration::from_millis(10)).await,
            None
        );
        assert!(
            change_within(&mut t, Duration::from_millis(20))
                .await
                .is_some()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn messages_without_an_open_connection_prove_nothing() {
        let mut t = tracker();
        let m = id("MC-1");
        assert_eq!(t.seen(&m, None), None);
        t.connected(&m, 1, None);
        t.seen(&m, None);
        assert_eq!(
            t.disconnected(&m, 1, OfflineReason::Disconnect),
            Some(Offline(m.clone(), OfflineReason::Disconnect))
        );
        assert_eq!(t.seen(&m, None), None, "late message after disconnect");
        assert!(!t.is_online(&m));
    }

    #[tokio::test(start_paused = true)]
    async fn stale_will_and_stale_disconnect_after_reconnect_are_ignored() {
        let mut t = tracker();
        let m = id("MC-1");
        t.connected(&m, 1, None);
        t.seen(&m, None);
        // The module reconnects (session 2) before the old connection's end is noticed.
        t.connected(&m, 2, None);
        t.seen(&m, None);
        assert_eq!(t.disconnected(&m, 1, OfflineReason::ConnectionLost), None);
        assert_eq!(t.will(&m), None);
        assert!(t.is_online(&m));
        assert_eq!(t.counters().stale_wills, 1);
        assert_eq!(t.counters().stale_disconnects, 1);
        // A will with no open connection is believed.
        t.disconnected(&m, 2, OfflineReason::ConnectionLost);
        assert_eq!(t.will(&m), None, "already offline: nothing more to say");
    }

    #[tokio::test(start_paused = true)]
    async fn held_timeouts_wait_for_the_link_and_then_give_a_full_timeout() {
        let mut t = tracker();
        let (a, b) = (id("MC-A"), id("MC-B"));
        for (m, session) in [(&a, 1), (&b, 2)] {
            t.connected(m, session, None);
            t.seen(m, Some(Duration::from_secs(5)));
        }
        // The broker link goes down: a minute of silence takes nobody offline...
        t.hold_timeouts();
        assert_eq!(change_within(&mut t, Duration::from_secs(60)).await, None);
        assert!(t.is_online(&a) && t.is_online(&b));
        // ...but a will still does.
        assert_eq!(
            t.disconnected(&b, 2, OfflineReason::Will),
            Some(Offline(b.clone(), OfflineReason::Will))
        );
        // Back: a full timeout (3 × 5 s) from now, not from the last message.
        t.release_timeouts();
        assert_eq!(
            change_within(&mut t, Duration::from_millis(14_900)).await,
            None
        );
        assert_eq!(
            change_within(&mut t, Duration::from_millis(200)).await,
            Some(Offline(a, OfflineReason::Timeout))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_aborted_takeover_gives_the_session_back() {
        let mut t = tracker();
        let m = id("MC-1");
        t.connected(&m, 1, None);
        t.seen(&m, None);
        t.connected(&m, 2, None);
        t.aborted(&m, 2);
        assert_eq!(t.seen(&m, None), None, "still online through session 1");
        assert!(t.is_online(&m));
        assert_eq!(
            t.disconnected(&m, 1, OfflineReason::ConnectionLost),
            Some(Offline(m.clone(), OfflineReason::ConnectionLost))
        );
        // An aborted attempt after the old connection ended restores nothing.
        t.connected(&m, 3, None);
        t.aborted(&m, 3);
        assert_eq!(t.seen(&m, None), None, "no open connection");
    }

    #[tokio::test(start_paused = true)]
    async fn will_marks_offline_when_no_connection_is_open() {
        let mut t = tracker();
        let m = id("MC-1");
        t.connected(&m, 1, None);
        t.seen(&m, None);
        // Connection end not observed (e.g. an external broker): the will decides.
        t.entries.get_mut(&m).unwrap().session = None;
        assert_eq!(t.will(&m), Some(Offline(m, OfflineReason::Will)));
    }

    #[tokio::test(start_paused = true)]
    async fn flapping_is_damped_then_settles_to_the_current_state() {
        let mut t = tracker();
        let m = id("MC-1");
        let max = FlapDamping::default().max_transitions;
        let mut emitted = 0;
        for session in 0..20u64 {
            t.connected(&m, session, None);
            emitted += t.seen(&m, None).is_some() as usize;
            tokio::time::advance(Duration::from_millis(500)).await;
            emitted += t
                .disconnected(&m, session, OfflineReason::ConnectionLost)
                .is_some() as usize;
            tokio::time::advance(Duration::from_millis(500)).await;
        }
        assert_eq!(emitted, max, "only the first changes reach clients");
        assert!(t.counters().damped > 0);
        // It comes back and stays: after the hold, clients hear it once.
        t.connected(&m, 100, None);
        t.seen(&m, None);
        let hold = FlapDamping::default().hold;
        let change = change_within(&mut t, hold + Duration::from_millis(100)).await;
        let expected_online = max % 2 == 0; // clients last saw "offline" after an even number
        if expected_online {
            assert_eq!(change, Some(Online(m)));
        } else {
            assert_eq!(change, None, "clients already see it online");
        }
    }

    /// Soak in simulated time: 1,000 modules for a simulated day (see [`soak`]).
    #[tokio::test(start_paused = true)]
    async fn soak_a_day_of_flapping_reconnecting_modules_without_drift_or_growth() {
        soak(1000, 1).await;
    }

    /// The long soak (`docs/RELIABILITY.md`): `SOAK_MODULES` modules (default 5,000) for
    /// `SOAK_DAYS` simulated days (default 7). Run it in release:
    /// `cargo test --release -p mc-hub --lib soak_long -- --ignored --nocapture`.
    #[tokio::test(start_paused = true)]
    #[ignore = "long: minutes of CPU"]
    async fn soak_long() {
        let var = |k: &str, default: u64| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let started = std::time::Instant::now();
        let (modules, days) = (var("SOAK_MODULES", 5000) as usize, var("SOAK_DAYS", 7));
        let report = soak(modules, days).await;
        println!(
            "soak: {modules} modules, {days} simulated days in {:.1} s of CPU time: {report}",
            started.elapsed().as_secs_f64()
        );
    }

    /// Steady modules, flappers, ones that fall silent, takeovers with late stale disconnects
    /// and wills, registry churn — checked every simulated minute against a model of who is
    /// online (no drift), the clients' view (the emitted changes) checked after a quiet period
    /// every 6 hours, and the tracker's footprint bounded throughout. Returns a summary.
    async fn soak(modules: usize, days: u64) -> String {
        const STEP: Duration = Duration::from_secs(10);
        let steps = days * 24 * 360;
        let total_modules = modules;
        // Not a multiple of the step: deadlines never tie with a check.
        const TIMEOUT: Duration = Duration::from_secs(95);
        let config = LivenessConfig {
            heartbeat_timeout: Some(TIMEOUT),
            ..Default::default()
        };
        let hold = config.flap.hold;
        let mut t = LivenessTracker::new(config);

        #[derive(Default, Clone)]
        struct Model {
            session: Option<u64>,
            /// The session a takeover replaced, whose disconnect (and will) arrive late.
            stale: Option<u64>,
            online_until: Option<Instant>,
            silent_until: Option<Instant>,
        }
        impl Model {
            fn online(&self, now: Instant) -> bool {
                self.online_until.is_some_and(|u| now < u)
            }
        }
        let ids: Vec<ModuleId> = (0..total_modules)
            .map(|i| id(&format!("MC-{i}-SOAK")))
            .collect();
        let mut models = vec![Model::default(); total_modules];
        // What clients were told, by applying every emitted change in order.
        let mut seen_by_clients = vec![false; total_modules];
        let index: HashMap<ModuleId, usize> = ids
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, m)| (m, i))
            .collect();
        let apply = |change: LivenessChange, seen: &mut Vec<bool>| match change {
            Online(m) => {
                let i = index[&m];
                assert!(!seen[i], "{m}: online twice in a row");
                seen[i] = true;
            }
            Offline(m, _) => {
                let i = index[&m];
                assert!(seen[i], "{m}: offline twice in a row");
                seen[i] = false;
            }
        };
        let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut chance = move |per_mille: u64| next() % 1000 < per_mille;
        let mut sessions = 0u64;
        let mut footprints = Vec::new();

        let mut checks = 0u64;
        for step in 0..steps {
            let now = Instant::now();
            // Every 6 simulated hours, a quiet period: no flapping for longer than the hold.
            let quiet = step % 2160 >= 2160 - (hold.as_secs() / STEP.as_secs() + 2);
            for (i, m) in ids.iter().enumerate() {
                let model = &mut models[i];
                let class = i % 10;
                // registry churn: forgotten and registered again
                if chance(1) && class == 9 {
                    t.remove(m);
                    *model = Model::default();
                    seen_by_clients[i] = false;
                    continue;
                }
                if let Some(old) = model.stale.take() {
                    assert_eq!(t.disconnected(m, old, OfflineReason::ConnectionLost), None);
                    assert_eq!(t.will(m), None, "a will while a newer connection is open");
                }
                let flapper = class < 2;
                if model.session.is_none() || (flapper && !quiet && chance(300)) {
                    match model.session.take() {
                        Some(s) if flapper => {
                            if let Some(c) = t.disconnected(m, s, OfflineReason::Disconnect) {
                                apply(c, &mut seen_by_clients);
                            }
                            model.online_until = None;
                            continue;
                        }
                        _ => {
                            sessions += 1;
                            t.connected(m, sessions, None);
                            model.session = Some(sessions);
                        }
                    }
                }
                if class == 8 && chance(10) {
                    // takeover: a new connection; the old one's end arrives next step
                    model.stale = model.session;
                    sessions += 1;
                    t.connected(m, sessions, None);
                    model.session = Some(sessions);
                }
                if class == 7 && model.silent_until.is_none() && chance(10) {
                    model.silent_until = Some(now + Duration::from_secs(200));
                }
                if model.silent_until.is_some_and(|u| now >= u) {
                    model.silent_until = None;
                }
                let speaks = (step + i as u64).is_multiple_of(3) || flapper;
                if speaks && model.silent_until.is_none() && model.session.is_some() {
                    if let Some(c) = t.seen(m, None) {
                        apply(c, &mut seen_by_clients);
                    }
                    model.online_until = Some(now + TIMEOUT);
                }
                if class == 0 && chance(2) {
                    // a dropped connection, back at the next step
                    if let Some(s) = model.session.take()
                        && let Some(c) = t.disconnected(m, s, OfflineReason::ConnectionLost)
                    {
                        apply(c, &mut seen_by_clients);
                    }
                    model.online_until = None;
                }
            }
            // Time passes; deadlines fire in order.
            let end = now + STEP;
            while let Ok(change) = tokio::time::timeout_at(end, t.next_change()).await {
                apply(change, &mut seen_by_clients);
            }
            let now = Instant::now();
            if step % 6 == 0 {
                checks += 1;
                for (i, m) in ids.iter().enumerate() {
                    assert_eq!(
                        t.is_online(m),
                        models[i].online(now),
                        "step {step}: {m} drifted from the model"
                    );
                }
            }
            if step % 2160 == 2159 {
                for (i, m) in ids.iter().enumerate() {
                    assert_eq!(
                        t.visible_online(m),
                        t.is_online(m),
                        "step {step}: {m} settled"
                    );
                    assert_eq!(
                        seen_by_clients[i],
                        t.visible_online(m),
                        "step {step}: {m} clients"
                    );
                }
                let (entries, deadlines, longest) = t.footprint();
                assert!(entries <= total_modules, "{entries} entries");
                assert!(deadlines <= 2 * entries, "{deadlines} deadlines");
                assert!(longest <= FlapDamping::default().max_transitions + 1);
                footprints.push((entries, deadlines));
            }
        }
        assert_eq!(footprints.len() as u64, days * 4);
        let c = t.counters();
        assert!(c.damped > 1000, "the flappers were damped");
        assert!(c.stale_disconnects > 100 && c.stale_wills > 100);
        format!(
            "{checks} model checks of every module passed; {sessions} connections; \
             {} damped changes, {} stale disconnects, {} stale wills; footprint (modules, \
             deadlines) at each 6-hour checkpoint: first {:?}, last {:?}, max {:?}",
            c.damped,
            c.stale_disconnects,
            c.stale_wills,
            footprints.first(),
            footprints.last(),
            footprints.iter().max()
        )
    }
}
