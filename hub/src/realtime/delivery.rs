//! Per-client delivery with explicit backpressure (`docs/REALTIME.md`, "Slow clients").
//!
//! Every registered socket gets each event its viewer may see, straight into its Socket.IO
//! buffer (bounded by socketioxide: `[realtime] socket-buffer`, 1,024 packets). When that
//! buffer is full — the client stopped reading, or reads slower than events come — the event
//! goes to the client's [`Backlog`]
//! instead, and so does every later event for it until the backlog is drained, so that the
//! client still receives events in stream order. The backlog coalesces: a module's telemetry
//! deltas merge into one (the latest value of each reading, `fromRev` telling the revisions it
//! covers), its online/offline flips keep the last one, stats and profile updates keep the
//! newest. What cannot be merged (a module added or removed, a login) is kept as is.
//!
//! A backlog is bounded in bytes and in age ([`SlowClientLimits`]). Past either bound the
//! client is cut off: its backlog is dropped at once (the hub's memory never grows with a
//! stuck client), nothing more is sent to it, and it is disconnected as soon as its buffer
//! takes the disconnect packet (or by the Engine.IO heartbeat, which closes a socket whose
//! buffer stays full). It reconnects and resynchronises like after any disconnection: replay
//! from its last offset, or a snapshot. Other clients never wait for a slow one: a send never
//! blocks, and a slow client costs only its bounded backlog.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use serde::Deserialize;
use serde_json::value::RawValue;
use socketioxide::{SocketError, socket::Sid};
use tokio::time::Instant;

use super::{
    adapter::{Encoded, RootNamespace, Socket},
    events::{self, TelemetryUpdated},
    replay::{Audience, Viewer},
};
use crate::metrics::Metrics;

/// How far a slow client may fall behind before it is cut off and must resynchronise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowClientLimits {
    /// Most bytes of events held for one client (payload sizes, after coalescing).
    pub max_backlog_bytes: usize,
    /// Longest time a client may stay behind (its buffer full, events held for it).
    pub max_lag: Duration,
}

/// The registered sockets and how each is being served.
pub struct Clients {
    by_socket: foldhash::HashMap<Sid, Client>,
    /// Sockets by user, and the admins' sockets: an event for a module or a user costs what its
    /// recipients cost, however many other sockets are connected.
    by_user: foldhash::HashMap<i64, Vec<Sid>>,
    admins: foldhash::HashSet<Sid>,
    limits: SlowClientLimits,
    metrics: Metrics,
    /// What sends an event, encoded once, to each socket.
    root: RootNamespace,
}

/// One registered socket.
pub struct Client {
    socket: Socket,
    /// What it may see.
    pub viewer: Viewer,
    /// The login session it connected with (a logout disconnects it).
    pub session_hash: String,
    state: ClientState,
}

enum ClientState {
    /// Its buffer takes events as they come.
    Live,
    /// Its buffer was full: events wait here, coalesced, until it drains.
    Behind(Backlog),
    /// It fell too far behind: nothing more is sent; it is being disconnected.
    CutOff,
}

/// What a send to one socket did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Ok,
    Full,
    Closed,
}

/// One event on its way to its sockets, encoded at most once: at the first socket that takes
/// it live.
struct Outgoing<'a> {
    event: &'static str,
    payload: &'a Arc<RawValue>,
    offset: u64,
    encoded: std::cell::OnceCell<Option<Encoded>>,
}

impl Outgoing<'_> {
    fn encoded(&self) -> Option<&Encoded> {
        self.encoded
            .get_or_init(|| {
                encode(
                    self.event,
                    &**self.payload,
                    self.offset,
                    self.payload.get().len(),
                )
            })
            .as_ref()
    }
}

/// `event` with its arguments, or `None` (logged) if they do not encode.
fn encode<T: serde::Serialize + ?Sized>(
    event: &str,
    data: &T,
    offset: u64,
    size_hint: usize,
) -> Option<Encoded> {
    match Encoded::event(event, data, offset, size_hint) {
        Ok(encoded) => Some(encoded),
        Err(e) => {
            // Payloads were serialized once already: not expected; the event is skipped.
            tracing::error!(event, error = %e, "event does not encode");
            None
        }
    }
}

/// Sends an encoded event to `socket` without waiting (`None`: skipped, see [`encode`]).
fn send(root: &RootNamespace, socket: &Socket, event: Option<&Encoded>) -> Sent {
    // Asked here because the adapter cannot tell: a broadcast to a socket id that is gone
    // reaches no one and succeeds, where `emit` said `Closed`.
    if !socket.connected() {
        return Sent::Closed;
    }
    let Some(event) = event else {
        return Sent::Ok;
    };
    match root.send(socket.id, event) {
        Ok(()) => Sent::Ok,
        Err(SocketError::InternalChannelFull) => Sent::Full,
        Err(SocketError::Closed) => Sent::Closed,
    }
}

impl Clients {
    /// No clients yet.
    pub fn new(limits: SlowClientLimits, metrics: Metrics, root: RootNamespace) -> Self {
        Self {
            by_socket: foldhash::HashMap::default(),
            by_user: foldhash::HashMap::default(),
            admins: foldhash::HashSet::default(),
            limits,
            metrics,
            root,
        }
    }

    /// Starts delivering to `socket` (it joined its rooms under the same stream lock).
    pub fn add(&mut self, socket: Socket, viewer: Viewer, session_hash: String) {
        self.by_user
            .entry(viewer.user_id)
            .or_default()
            .push(socket.id);
        if viewer.is_admin {
            self.admins.insert(socket.id);
        }
        self.by_socket.insert(
            socket.id,
            Client {
                socket,
                viewer,
                session_hash,
                state: ClientState::Live,
            },
        );
    }

    /// Stops delivering to a socket that went away.
    pub fn remove(&mut self, sid: Sid) {
        let Some(client) = self.by_socket.remove(&sid) else {
            return;
        };
        self.admins.remove(&sid);
        if let Some(sockets) = self.by_user.get_mut(&client.viewer.user_id) {
            sockets.retain(|s| *s != sid);
            if sockets.is_empty() {
                self.by_user.remove(&client.viewer.user_id);
            }
        }
    }

    /// Stops delivering to every client `which` selects and disconnects them: at once when
    /// their buffer takes the disconnect packet, else at every tick until it does (a full
    /// buffer refuses it, and the client could start reading again before the heartbeat
    /// notices).
    pub fn cut_off_where(&mut self, which: impl Fn(&Client) -> bool) {
        let mut gone = Vec::new();
        for (sid, c) in &mut self.by_socket {
            if which(c) {
                c.state = ClientState::CutOff;
                if c.disconnect() == Sent::Closed {
                    gone.push(*sid);
                }
            }
        }
        for sid in gone {
            self.remove(sid);
        }
    }

    /// Number of registered clients.
    pub fn len(&self) -> usize {
        self.by_socket.len()
    }

    /// Whether no client is registered.
    pub fn is_empty(&self) -> bool {
        self.by_socket.is_empty()
    }

    /// Clients behind now, and the entries and bytes held for them (`/metrics`).
    pub fn backlog_depth(&self) -> (usize, usize, usize) {
        self.by_socket
            .values()
            .filter_map(|c| match &c.state {
                ClientState::Behind(b) => Some(b),
                _ => None,
            })
            .fold((0, 0, 0), |(n, e, b), backlog| {
                (n + 1, e + backlog.len(), b + backlog.bytes())
            })
    }

    /// Sends one event (`payload`, at `offset`) to every client whose viewer `audience`
    /// admits.
    pub fn deliver(
        &mut self,
        audience: Audience,
        event: &'static str,
        payload: &Arc<RawValue>,
        offset: u64,
        now: Instant,
    ) {
        // The recipients: from the indexes for targeted events, else every socket. No list is
        // built: this runs for every event (the indexes and `by_socket` are separate fields).
        let mut gone = Vec::new();
        let outgoing = Outgoing {
            event,
            payload,
            offset,
            encoded: std::cell::OnceCell::new(),
        };
        {
            let Self {
                by_socket,
                by_user,
                admins,
                limits,
                metrics,
                root,
            } = self;
            let owner_sockets = |owner: Option<i64>| {
                owner
                    .and_then(|id| by_user.get(&id))
                    .into_iter()
                    .flatten()
                    // an admin owner's sockets are among the admins already
                    .filter(|s| !admins.contains(*s))
            };
            let mut deliver = |sid: Sid, client: &mut Client| {
                // The indexes narrow; the audience decides (one rule: `Audience::admits`).
                if audience.admits(&client.viewer)
                    && client.deliver(metrics, *limits, root, &outgoing, now) == Sent::Closed
                {
                    gone.push(sid);
                }
            };
            if let Audience::Everyone | Audience::Page(_) = audience {
                for (sid, client) in by_socket.iter_mut() {
                    deliver(*sid, client);
                }
            } else {
                let visit = |sid: &Sid| {
                    if let Some(client) = by_socket.get_mut(sid) {
                        deliver(*sid, client);
                    }
                };
                match audience {
                    Audience::Admins => admins.iter().for_each(visit),
                    Audience::User(id) => by_user.get(&id).into_iter().flatten().for_each(visit),
                    Audience::Module { owner } => {
                        admins.iter().chain(owner_sockets(owner)).for_each(visit)
                    }
                    Audience::Everyone | Audience::Page(_) => {}
                }
            }
        }
        for sid in gone {
            self.remove(sid);
        }
    }

    /// Sends what waits for clients that are behind, cuts off those past the limits, and
    /// retries disconnecting those cut off (run on a timer: a client that drains its buffer
    /// while no event comes must still get its backlog).
    pub fn tick(&mut self, now: Instant) {
        let mut gone = Vec::new();
        for (sid, client) in &mut self.by_socket {
            if !client.socket.connected() {
                gone.push(*sid);
                continue;
            }
            if client.catch_up(&self.metrics, self.limits, &self.root, now) == Sent::Closed {
                gone.push(*sid);
            }
        }
        for sid in gone {
            self.remove(sid);
        }
    }
}

impl Client {
    /// Sends one event, or holds it in the backlog while the client is behind.
    fn deliver(
        &mut self,
        metrics: &Metrics,
        limits: SlowClientLimits,
        root: &RootNamespace,
        out: &Outgoing<'_>,
        now: Instant,
    ) -> Sent {
        let Outgoing {
            event,
            payload,
            offset,
            ..
        } = *out;
        match &mut self.state {
            ClientState::Live => match send(root, &self.socket, out.encoded()) {
                Sent::Full => {
                    let mut backlog = Backlog::new(now);
                    backlog.push(event, payload, offset);
                    metrics.dashboard_events_deferred.inc();
                    tracing::debug!(socket = %self.socket.id, "client fell behind: coalescing its events");
                    self.state = ClientState::Behind(backlog);
                    Sent::Ok
                }
                sent => sent,
            },
            ClientState::Behind(backlog) => {
                metrics.dashboard_events_deferred.inc();
                if backlog.push(event, payload, offset) == Pushed::Coalesced {
                    metrics.dashboard_events_coalesced.inc();
                }
                self.catch_up(metrics, limits, root, now)
            }
            ClientState::CutOff => Sent::Ok,
        }
    }

    /// Its socket's id.
    pub fn sid(&self) -> Sid {
        self.socket.id
    }

    /// Sends the backlog in order as far as the buffer takes it; back to live when it is
    /// empty. Cuts the client off when the backlog is past the limits.
    fn catch_up(
        &mut self,
        metrics: &Metrics,
        limits: SlowClientLimits,
        root: &RootNamespace,
        now: Instant,
    ) -> Sent {
        match &mut self.state {
            ClientState::Live => Sent::Ok,
            ClientState::CutOff => self.disconnect(),
            ClientState::Behind(backlog) => {
                while let Some((offset, pending)) = backlog.first() {
                    let encoded = match pending {
                        Pending::Event { event, payload } => {
                            encode(event, &**payload, offset, payload.get().len())
                        }
                        Pending::Telemetry(update) => encode(
                            events::RT_TELEMETRY_UPDATED,
                            update,
                            offset,
                            MERGED_TELEMETRY_SIZE,
                        ),
                    };
                    let sent = send(root, &self.socket, encoded.as_ref());
                    match sent {
                        Sent::Ok => backlog.pop_first(now),
                        Sent::Full => break,
                        Sent::Closed => return Sent::Closed,
                    }
                }
                if backlog.is_empty() {
                    tracing::debug!(socket = %self.socket.id, "client caught up");
                    self.state = ClientState::Live;
                    return Sent::Ok;
                }
                let too_big = backlog.bytes() > limits.max_backlog_bytes;
                let too_old = backlog.stalled_for(now) > limits.max_lag;
                if too_big || too_old {
                    metrics.dashboard_slow_cutoffs.inc();
                    metrics.dashboard_backlog_dropped.add(backlog.len() as u64);
                    tracing::warn!(
                        socket = %self.socket.id,
                        user_id = self.viewer.user_id,
                        held = backlog.len(),
                        bytes = backlog.bytes(),
                        stalled_ms = backlog.stalled_for(now).as_millis() as u64,
                        "client too far behind: disconnecting it (it resynchronises when it reconnects)"
                    );
                    self.state = ClientState::CutOff;
                    return self.disconnect();
                }
                Sent::Ok
            }
        }
    }

    /// Asks the socket to disconnect; the disconnect packet needs room in its buffer, so this
    /// is retried until it fits (or the Engine.IO heartbeat closes the socket).
    fn disconnect(&self) -> Sent {
        match self.socket.clone().disconnect() {
            Ok(()) => Sent::Closed,
            Err(socketioxide::SocketError::Closed) => Sent::Closed,
            Err(socketioxide::SocketError::InternalChannelFull) => Sent::Ok,
        }
    }
}

/// Whether a pushed event took a new place in the backlog or merged into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// A new entry.
    Queued,
    /// It replaced or merged into an older entry of the same subject.
    Coalesced,
}

/// One entry waiting for a client.
#[derive(Debug, Clone)]
pub enum Pending {
    /// An event as it was emitted.
    Event {
        /// Its name.
        event: &'static str,
        /// Its payload.
        payload: Arc<RawValue>,
    },
    /// Telemetry deltas of one module merged: each reading's latest value, `rev` the newest
    /// revision and `from_rev` the oldest one merged.
    Telemetry(TelemetryUpdated),
}

/// What an entry costs besides its payload (tree node, map entry, reference counts), so that
/// the byte limit bounds memory, not just payload.
pub const ENTRY_OVERHEAD: usize = 96;

/// Buffer first allocated for a merged telemetry update (a module id, a revision, a few
/// readings): most fit; a larger one grows it.
const MERGED_TELEMETRY_SIZE: usize = 256;

impl Pending {
    fn bytes(&self) -> usize {
        ENTRY_OVERHEAD
            + match self {
                Self::Event { payload, .. } => payload.get().len(),
                Self::Telemetry(t) => telemetry_bytes(t),
            }
    }
}

/// Close to the JSON size of a telemetry update: `"name":value,` per reading plus the fixed
/// fields.
fn telemetry_bytes(t: &TelemetryUpdated) -> usize {
    96 + t.module_id.len() + t.telemetry.keys().map(|k| k.len() + 16).sum::<usize>()
}

/// What an event is about, for coalescing: a later event with the same subject supersedes it
/// (or merges into it, for telemetry).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    Telemetry(String),
    Liveness(String),
    ModuleUpdated(String),
    Profile(i64),
    Stats,
}

/// Events held for one client that is behind, in delivery order, coalesced by subject.
#[derive(Debug)]
pub struct Backlog {
    /// When the client last took something (or fell behind): the age limit counts from here,
    /// so a client that drains steadily is not cut off.
    progress_at: Instant,
    /// Entries by offset, each with the subject later events may merge into. A full state
    /// (liveness, module, stats, profile) moves to the offset of the newest event; merged
    /// telemetry stays at the offset of the oldest update it holds, so that a resume from any
    /// offset the client got replays every update it might miss (those it already holds come
    /// again with a revision it knows, and are dropped). Sending in this order keeps offsets
    /// increasing at the client, and once it has an entry's offset it has everything up to it.
    entries: BTreeMap<u64, (Pending, Option<Subject>)>,
    /// The entry (by offset) of each subject that later events may merge into.
    subjects: HashMap<Subject, u64>,
    bytes: usize,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubjectFields {
    module_id: Option<String>,
    id: Option<i64>,
}

impl Backlog {
    /// Empty; the client fell behind at `since`.
    pub fn new(since: Instant) -> Self {
        Self {
            progress_at: since,
            entries: BTreeMap::new(),
            subjects: HashMap::new(),
            bytes: 0,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held: payload sizes plus [`ENTRY_OVERHEAD`] per entry.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The next entry to send and its offset.
    pub fn first(&self) -> Option<(u64, &Pending)> {
        self.entries.first_key_value().map(|(o, (p, _))| (*o, p))
    }

    /// Removes the entry [`Backlog::first`] returned (it was sent at `now`).
    pub fn pop_first(&mut self, now: Instant) {
        if let Some((offset, (pending, subject))) = self.entries.pop_first() {
            self.bytes -= pending.bytes();
            if let Some(subject) = subject
                && self.subjects.get(&subject) == Some(&offset)
            {
                self.subjects.remove(&subject);
            }
            self.progress_at = now;
        }
    }

    /// How long the client has taken nothing.
    pub fn stalled_for(&self, now: Instant) -> std::time::Duration {
        now.duration_since(self.progress_at)
    }

    /// Holds one event, merging it with an older one of the same subject.
    pub fn push(&mut self, event: &'static str, payload: &Arc<RawValue>, offset: u64) -> Pushed {
        let fields = serde_json::from_str::<SubjectFields>(payload.get()).ok();
        let module = fields.as_ref().and_then(|f| f.module_id.clone());
        let subject = match (event, module) {
            (events::RT_TELEMETRY_UPDATED, Some(m)) => Some(Subject::Telemetry(m)),
            (events::RT_MODULE_ONLINE | events::RT_MODULE_OFFLINE, Some(m)) => {
                Some(Subject::Liveness(m))
            }
            (events::RT_MODULE_UPDATED, Some(m)) => Some(Subject::ModuleUpdated(m)),
            (events::RT_MODULE_ADDED | events::RT_MODULE_REMOVED, Some(m)) => {
                // A new life of the module starts (or it ends): nothing later merges into
                // what came before.
                for s in [
                    Subject::Telemetry(m.clone()),
                    Subject::Liveness(m.clone()),
                    Subject::ModuleUpdated(m),
                ] {
                    self.subjects.remove(&s);
                }
                None
            }
            (events::RT_USER_PROFILE_UPDATED, _) => fields.and_then(|f| f.id).map(Subject::Profile),
            (events::RT_GLOBAL_STATS_UPDATED, _) => Some(Subject::Stats),
            _ => None,
        };
        let pending = match event {
            events::RT_TELEMETRY_UPDATED => {
                match serde_json::from_str::<TelemetryUpdated>(payload.get()) {
                    Ok(t) => Pending::Telemetry(t),
                    Err(_) => Pending::Event {
                        event,
                        payload: payload.clone(),
                    },
                }
            }
            _ => Pending::Event {
                event,
                payload: payload.clone(),
            },
        };
        let Some(subject) = subject else {
            self.bytes += pending.bytes();
            self.entries.insert(offset, (pending, None));
            return Pushed::Queued;
        };
        let older = self.subjects.get(&subject).copied();
        match (older.and_then(|o| self.entries.get_mut(&o)), pending) {
            // Telemetry merges in place (see `entries`).
            (Some((Pending::Telemetry(held), _)), Pending::Telemetry(mut newer)) => {
                self.bytes -= telemetry_bytes(held);
                let from = held.from_rev.unwrap_or(held.rev);
                held.telemetry.append(&mut newer.telemetry);
                held.rev = newer.rev;
                held.ts = newer.ts;
                held.from_rev = Some(from);
                self.bytes += telemetry_bytes(held);
                Pushed::Coalesced
            }
            // A full state replaces the older one and takes the newest place.
            (Some(_), pending) => {
                if let Some((old, _)) = older.and_then(|o| self.entries.remove(&o)) {
                    self.bytes -= old.bytes();
                }
                self.bytes += pending.bytes();
                self.entries
                    .insert(offset, (pending, Some(subject.clone())));
                self.subjects.insert(subject, offset);
                Pushed::Coalesced
            }
            (None, pending) => {
                self.bytes += pending.bytes();
                self.entries
                    .insert(offset, (pending, Some(subject.clone())));
                self.subjects.insert(subject, offset);
                Pushed::Queued
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn raw(v: serde_json::Value) -> Arc<RawValue> {
        serde_json::value::to_raw_value(&v).unwrap().into()
    }

    fn telemetry(module: &str, rev: u64, readings: serde_json::Value) -> Arc<RawValue> {
        raw(json!({"moduleId": module, "telemetry": readings, "rev": rev, "ts": format!("t{rev}")}))
    }

    /// (offset, event name, JSON) of every entry, in delivery order.
    fn drain(backlog: &mut Backlog) -> Vec<(u64, &'static str, serde_json::Value)> {
        let mut out = Vec::new();
        while let Some((offset, pending)) = backlog.first() {
            let (event, value) = match pending {
                Pending::Event { event, payload } => {
                    (*event, serde_json::from_str(payload.get()).unwrap())
                }
                Pending::Telemetry(t) => (
                    events::RT_TELEMETRY_UPDATED,
                    serde_json::to_value(t).unwrap(),
                ),
            };
            out.push((offset, event, value));
            backlog.pop_first(Instant::now());
        }
        assert_eq!(backlog.bytes(), 0, "bytes are accounted back to zero");
        out
    }

    #[test]
    fn telemetry_of_a_module_merges_into_its_latest_values_with_the_revs_covered() {
        let mut b = Backlog::new(Instant::now());
        let t = events::RT_TELEMETRY_UPDATED;
        assert_eq!(
            b.push(t, &telemetry("A", 5, json!({"t": 1.0, "h": 50.0})), 10),
            Pushed::Queued
        );
        assert_eq!(
            b.push(t, &telemetry("B", 9, json!({"t": 7.0})), 11),
            Pushed::Queued
        );
        assert_eq!(
            b.push(t, &telemetry("A", 6, json!({"t": 2.0})), 12),
            Pushed::Coalesced
        );
        assert_eq!(
            b.push(t, &telemetry("A", 7, json!({"p": 3.0})), 13),
            Pushed::Coalesced
        );
        assert_eq!(b.len(), 2);
        // A's updates merged at the place of the oldest (see `Backlog::entries`).
        assert_eq!(
            drain(&mut b),
            vec![
                (
                    10,
                    t,
                    json!({"moduleId": "A", "telemetry": {"t": 2.0, "h": 50.0, "p": 3.0},
                           "rev": 7, "fromRev": 5, "ts": "t7"})
                ),
                (
                    11,
                    t,
                    json!({"moduleId": "B", "telemetry": {"t": 7.0}, "rev": 9, "ts": "t9"})
                ),
            ]
        );
    }

    #[test]
    fn liveness_stats_and_profiles_keep_the_newest_and_the_rest_is_kept_in_order() {
        let mut b = Backlog::new(Instant::now());
        let on = raw(json!({"moduleId": "A", "lastSeen": "x"}));
        let off = raw(json!({"moduleId": "A", "disconnectedAt": "y", "reason": "timeout"}));
        b.push(events::RT_MODULE_ONLINE, &on, 1);
        b.push(events::RT_USER_LOGGED_IN, &raw(json!({"id": 1})), 2);
        assert_eq!(
            b.push(events::RT_MODULE_OFFLINE, &off, 3),
            Pushed::Coalesced
        );
        b.push(
            events::RT_GLOBAL_STATS_UPDATED,
            &raw(json!({"stats": 1})),
            4,
        );
        b.push(events::RT_USER_LOGGED_IN, &raw(json!({"id": 2})), 5);
        assert_eq!(
            b.push(
                events::RT_GLOBAL_STATS_UPDATED,
                &raw(json!({"stats": 2})),
                6
            ),
            Pushed::Coalesced
        );
        b.push(
            events::RT_USER_PROFILE_UPDATED,
            &raw(json!({"id": 1, "name": "a"})),
            7,
        );
        b.push(
            events::RT_USER_PROFILE_UPDATED,
            &raw(json!({"id": 2, "name": "b"})),
            8,
        );
        b.push(
            events::RT_USER_PROFILE_UPDATED,
            &raw(json!({"id": 1, "name": "c"})),
            9,
        );
        let got: Vec<_> = drain(&mut b).into_iter().map(|(o, e, _)| (o, e)).collect();
        assert_eq!(
            got,
            vec![
                (2, events::RT_USER_LOGGED_IN),
                (3, events::RT_MODULE_OFFLINE),
                (5, events::RT_USER_LOGGED_IN),
                (6, events::RT_GLOBAL_STATS_UPDATED),
                (8, events::RT_USER_PROFILE_UPDATED),
                (9, events::RT_USER_PROFILE_UPDATED),
            ]
        );
    }

    #[test]
    fn a_module_removed_and_added_again_starts_afresh() {
        let mut b = Backlog::new(Instant::now());
        let t = events::RT_TELEMETRY_UPDATED;
        b.push(t, &telemetry("A", 3, json!({"old": 1.0})), 1);
        b.push(events::RT_MODULE_REMOVED, &raw(json!({"moduleId": "A"})), 2);
        b.push(
            events::RT_MODULE_ADDED,
            &raw(json!({"moduleId": "A", "name": "n", "type": "k"})),
            3,
        );
        assert_eq!(
            b.push(t, &telemetry("A", 1, json!({"new": 2.0})), 4),
            Pushed::Queued
        );
        let got = drain(&mut b);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].2["telemetry"], json!({"old": 1.0}));
        assert_eq!(got[3].2["telemetry"], json!({"new": 2.0}));
        assert!(got[3].2.get("fromRev").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_age_limit_counts_from_the_last_progress() {
        let mut b = Backlog::new(Instant::now());
        b.push(events::RT_USER_LOGGED_IN, &raw(json!({"id": 1})), 1);
        b.push(events::RT_USER_LOGGED_IN, &raw(json!({"id": 2})), 2);
        tokio::time::advance(std::time::Duration::from_secs(20)).await;
        assert_eq!(b.stalled_for(Instant::now()).as_secs(), 20);
        b.pop_first(Instant::now());
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        assert_eq!(
            b.stalled_for(Instant::now()).as_secs(),
            5,
            "it took one: progress"
        );
    }

    #[test]
    fn bytes_follow_what_is_held() {
        let mut b = Backlog::new(Instant::now());
        let t = events::RT_TELEMETRY_UPDATED;
        b.push(t, &telemetry("A", 1, json!({"a": 1.0})), 1);
        let one = b.bytes();
        b.push(t, &telemetry("A", 2, json!({"a": 2.0})), 2);
        assert_eq!(
            b.bytes(),
            one,
            "a merge with the same readings holds the same"
        );
        b.push(t, &telemetry("A", 3, json!({"bb": 2.0})), 3);
        assert!(b.bytes() > one);
        let event = raw(json!({"id": 1, "name": "someone"}));
        b.push(events::RT_USER_LOGGED_IN, &event, 4);
        assert!(b.bytes() >= one + event.get().len() + ENTRY_OVERHEAD);
    }
}
