//! The replay buffer: the recent events of the stream, so that a client that lost its
//! connection for a moment resumes from its last offset instead of fetching a full snapshot
//! (`docs/REALTIME.md`).
//!
//! Every event emitted through [`super::EventsManager`] gets the next offset of one process-wide
//! sequence and is kept here with its audience, so that a resuming client gets exactly the
//! events its user and page are entitled to. The buffer is bounded by count, by payload bytes
//! and by age. What falls out leaves a watermark per audience (the highest offset dropped), so
//! that a client whose own audiences lost nothing after its offset still resumes, however quiet
//! it was and however busy others were. A client behind a dropped event it was entitled to, one
//! that missed more than `max_missed` events or `max_missed_bytes` bytes, or one whose user's
//! entitlement changed after its offset (a barrier, [`ReplayBuffer::push_barrier`]) gets
//! `resumed: false` and fetches a snapshot instead.
//!
//! Pure logic, no I/O: the caller passes the time (so tests use any clock) and holds the lock
//! that orders emits.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use serde_json::value::RawValue;
use tokio::time::Instant;

use super::rooms::Page;

/// Who an event was sent to: what a socket must be to receive it (live or replayed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Every connected client.
    Everyone,
    /// Admins only.
    Admins,
    /// The clients of one page.
    Page(Page),
    /// Every tab of one user.
    User(i64),
    /// Whoever may see a module ([`crate::authz::module_audience`]): admins and its owner at
    /// emit time.
    Module {
        /// The owner when the event was emitted (none: admins only).
        owner: Option<i64>,
    },
}

/// What a socket is, as far as entitlement goes: its user (as of now) and page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    /// The user.
    pub user_id: i64,
    /// Whether the user is an admin now.
    pub is_admin: bool,
    /// The page the socket named at handshake.
    pub page: Page,
}

impl Audience {
    /// Whether `viewer` receives events sent to this audience: the same rule as the rooms a
    /// socket joins ([`super::rooms`]).
    pub fn admits(self, viewer: &Viewer) -> bool {
        match self {
            Self::Everyone => true,
            Self::Admins => viewer.is_admin,
            Self::Page(page) => viewer.page == page,
            Self::User(id) => viewer.user_id == id,
            Self::Module { owner } => viewer.is_admin || owner == Some(viewer.user_id),
        }
    }
}

/// What an entry of the stream is.
#[derive(Debug, Clone)]
pub enum Entry {
    /// An event, sent live to its audience and replayed to it.
    Event {
        /// The event name ([`super::events`]).
        event: &'static str,
        /// The payload, serialized once and shared: sent live and replayed as is.
        payload: Arc<RawValue>,
    },
    /// The entitlement of the audience's user changed here (promoted, demoted, disabled, a
    /// module reassigned to or from them): never sent, never replayed; a client of that user
    /// whose offset is before it cannot resume (its state was built with other rights).
    Barrier,
}

/// One entry of the stream, as kept for replay.
#[derive(Debug)]
pub struct Recorded {
    /// Its stream offset.
    pub offset: u64,
    /// Who it was sent to (a barrier: `User(id)`).
    pub audience: Audience,
    /// An event or a barrier.
    pub entry: Entry,
    /// When it was emitted (for the age bound).
    pub at: Instant,
}

impl Recorded {
    /// The payload's size in bytes (0 for a barrier): what the byte bounds count.
    fn bytes(&self) -> usize {
        match &self.entry {
            Entry::Event { payload, .. } => payload.get().len(),
            Entry::Barrier => 0,
        }
    }
}

/// Bounds of the buffer ([`crate::config::RealtimeConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayBounds {
    /// Most entries kept (at least 1).
    pub capacity: usize,
    /// Most payload bytes kept (the newest event is kept whatever its size).
    pub max_bytes: usize,
    /// Events older than this fall out.
    pub max_age: Duration,
    /// A client that missed more events than this gets a snapshot instead.
    pub max_missed: usize,
    /// A client whose missed events weigh more payload bytes than this gets a snapshot instead.
    pub max_missed_bytes: usize,
}

/// Where a client says it stopped: the handshake's `resume`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    /// The epoch of the hub process it was connected to.
    pub epoch: String,
    /// The last offset it applied.
    pub offset: u64,
}

/// Why a client cannot resume (it fetches a snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotResumed {
    /// It presented no resume point.
    NoResumePoint,
    /// Its epoch is another process's (the hub restarted).
    OtherEpoch,
    /// Events after its offset it was entitled to have fallen out of the buffer (or the offset
    /// is from the future).
    TooOld,
    /// It missed more than the replay cap.
    TooManyMissed,
    /// What it missed weighs more than the replay byte cap.
    TooManyMissedBytes,
    /// Its user's entitlement changed after its offset (or the client says it was another user,
    /// or had other rights, when it stopped).
    EntitlementChanged,
}

/// The highest offset dropped from the buffer, per audience key: a viewer may resume from
/// `offset` only if nothing it was entitled to after `offset` was dropped.
#[derive(Debug, Default)]
struct Watermarks {
    everyone: u64,
    admins: u64,
    /// Every module event (admins receive them all, whoever the owner).
    any_module: u64,
    pages: HashMap<Page, u64>,
    /// Per user: their `User` events, their modules' events and their barriers.
    users: HashMap<i64, u64>,
}

impl Watermarks {
    fn dropped(&mut self, audience: Audience, offset: u64) {
        let raise = |mark: &mut u64| *mark = (*mark).max(offset);
        match audience {
            Audience::Everyone => raise(&mut self.everyone),
            Audience::Admins => raise(&mut self.admins),
            Audience::Page(page) => raise(self.pages.entry(page).or_default()),
            Audience::User(id) => raise(self.users.entry(id).or_default()),
            Audience::Module { owner } => {
                raise(&mut self.any_module);
                if let Some(id) = owner {
                    raise(self.users.entry(id).or_default());
                }
            }
        }
    }

    /// The highest dropped offset `viewer` was entitled to (0: none).
    fn of(&self, viewer: &Viewer) -> u64 {
        let mut mark = self
            .everyone
            .max(self.pages.get(&viewer.page).copied().unwrap_or(0))
            .max(self.users.get(&viewer.user_id).copied().unwrap_or(0));
        if viewer.is_admin {
            mark = mark.max(self.admins).max(self.any_module);
        }
        mark
    }
}

/// The recent events of the stream and the offset sequence. One per hub process.
#[derive(Debug)]
pub struct ReplayBuffer {
    /// This process's epoch: offsets of another epoch mean nothing here.
    epoch: String,
    /// Kept entries, oldest first, offsets strictly increasing.
    events: VecDeque<Recorded>,
    /// Sum of the kept payloads' sizes.
    bytes: usize,
    /// What fell out, per audience.
    dropped: Watermarks,
    /// The last offset assigned (0: none yet).
    head: u64,
    /// Each user's latest barrier (kept after it falls out): a socket authenticated before it
    /// holds rights that may be gone.
    barriers: HashMap<i64, u64>,
    bounds: ReplayBounds,
}

impl ReplayBuffer {
    /// An empty stream of process `epoch`.
    pub fn new(epoch: String, bounds: ReplayBounds) -> Self {
        Self {
            epoch,
            events: VecDeque::new(),
            bytes: 0,
            dropped: Watermarks::default(),
            head: 0,
            barriers: HashMap::new(),
            bounds,
        }
    }

    /// This process's epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The last offset assigned (0 before the first event).
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Number of entries (events and barriers) kept now.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Payload bytes kept now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Assigns the next offset to an event and keeps it (dropping what falls out of the
    /// bounds); returns the offset, for the caller to emit the event with it.
    pub fn push(
        &mut self,
        audience: Audience,
        event: &'static str,
        payload: Arc<RawValue>,
        now: Instant,
    ) -> u64 {
        self.keep(audience, Entry::Event { event, payload }, now)
    }

    /// Records that `user_id`'s entitlement changes now: a client of theirs that stopped
    /// before this point cannot resume. Takes an offset (never sent: clients see a gap).
    pub fn push_barrier(&mut self, user_id: i64, now: Instant) -> u64 {
        let offset = self.keep(Audience::User(user_id), Entry::Barrier, now);
        self.barriers.insert(user_id, offset);
        offset
    }

    /// Cluster mode: the shared stream's epoch and head as this hub joins; nothing before
    /// `head` can be replayed here except what [`push_at`](Self::push_at) adds next.
    pub fn start_at(&mut self, epoch: String, head: u64) {
        self.epoch = epoch;
        self.head = head;
        self.dropped.everyone = self.dropped.everyone.max(head);
    }

    /// Cluster mode: the shared stream started over under a new `epoch` (Redis lost it): all
    /// that was kept belongs to the old one and goes.
    pub fn start_over(&mut self, epoch: String, head: u64) {
        *self = Self::new(epoch.clone(), self.bounds);
        self.start_at(epoch, head);
    }

    /// Cluster mode: keeps an entry whose offset the shared stream assigned; false if this hub
    /// already has it. Offsets skipped on the way (entries trimmed before this hub read them)
    /// count as dropped for everyone: no client resumes across them.
    pub fn push_at(&mut self, offset: u64, audience: Audience, entry: Entry, now: Instant) -> bool {
        if offset <= self.head {
            return false;
        }
        if offset > self.head + 1 {
            self.dropped.everyone = self.dropped.everyone.max(offset - 1);
        }
        self.head = offset - 1;
        let barrier = match (&entry, audience) {
            (Entry::Barrier, Audience::User(user)) => Some(user),
            _ => None,
        };
        let offset = self.keep(audience, entry, now);
        if let Some(user) = barrier {
            self.barriers.insert(user, offset);
        }
        true
    }

    /// Cluster mode: an entry that takes an offset but is neither sent nor kept (a session's
    /// end): the head moves past it, nothing counts as dropped.
    pub fn skip_to(&mut self, offset: u64) {
        if offset > self.head + 1 {
            self.dropped.everyone = self.dropped.everyone.max(offset - 1);
        }
        self.head = self.head.max(offset);
    }

    /// Whether `user_id`'s entitlement changed after stream offset `offset`.
    pub fn barrier_after(&self, user_id: i64, offset: u64) -> bool {
        self.barriers.get(&user_id).is_some_and(|b| *b > offset)
    }

    fn keep(&mut self, audience: Audience, entry: Entry, now: Instant) -> u64 {
        self.head += 1;
        let recorded = Recorded {
            offset: self.head,
            audience,
            entry,
            at: now,
        };
        let size = recorded.bytes();
        self.prune(now);
        while !self.events.is_empty()
            && (self.events.len() >= self.bounds.capacity.max(1)
                || self.bytes.saturating_add(size) > self.bounds.max_bytes)
        {
            self.drop_oldest();
        }
        self.bytes += size;
        self.events.push_back(recorded);
        self.head
    }

    fn drop_oldest(&mut self) {
        if let Some(oldest) = self.events.pop_front() {
            self.bytes -= oldest.bytes();
            self.dropped.dropped(oldest.audience, oldest.offset);
        }
    }

    /// Drops the entries older than the age bound.
    fn prune(&mut self, now: Instant) {
        while let Some(oldest) = self.events.front() {
            if now.saturating_duration_since(oldest.at) > self.bounds.max_age {
                self.drop_oldest();
            } else {
                break;
            }
        }
    }

    /// The events after `from` that `viewer` is entitled to, oldest first (events only: a
    /// barrier among them means no resume), when the client can resume; why not otherwise.
    pub fn missed(
        &mut self,
        from: Option<&ResumePoint>,
        viewer: &Viewer,
        now: Instant,
    ) -> Result<Vec<&Recorded>, NotResumed> {
        let from = from.ok_or(NotResumed::NoResumePoint)?;
        if from.epoch != self.epoch {
            return Err(NotResumed::OtherEpoch);
        }
        self.prune(now);
        // Nothing this viewer was entitled to after `from.offset` may have fallen out.
        if from.offset > self.head || self.dropped.of(viewer) > from.offset {
            return Err(NotResumed::TooOld);
        }
        // One pass under the stream lock (it runs for every reconnecting client): a barrier
        // wins over the size limits, so once over a limit only barriers are still looked for.
        let start = self.events.partition_point(|r| r.offset <= from.offset);
        let mut missed = Vec::new();
        let mut bytes = 0usize;
        let mut over_limit = None;
        for recorded in self
            .events
            .range(start..)
            .filter(|r| r.audience.admits(viewer))
        {
            if matches!(recorded.entry, Entry::Barrier) {
                return Err(NotResumed::EntitlementChanged);
            }
            if over_limit.is_some() {
                continue;
            }
            bytes = bytes.saturating_add(recorded.bytes());
            if missed.len() == self.bounds.max_missed {
                over_limit = Some(NotResumed::TooManyMissed);
            } else if bytes > self.bounds.max_missed_bytes {
                over_limit = Some(NotResumed::TooManyMissedBytes);
            } else {
                missed.push(recorded);
            }
        }
        over_limit.map_or(Ok(missed), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH: &str = "epoch-1";

    fn bounds(capacity: usize, max_age_s: u64, max_missed: usize) -> ReplayBounds {
        ReplayBounds {
            capacity,
            max_bytes: usize::MAX,
            max_age: Duration::from_secs(max_age_s),
            max_missed,
            max_missed_bytes: usize::MAX,
        }
    }

    fn payload(n: u64) -> Arc<RawValue> {
        serde_json::value::to_raw_value(&serde_json::json!({ "n": n }))
            .unwrap()
            .into()
    }

    fn payload_of(r: &Recorded) -> &str {
        match &r.entry {
            Entry::Event { payload, .. } => payload.get(),
            Entry::Barrier => panic!("a barrier at {}", r.offset),
        }
    }

    fn at(offset: u64) -> Option<ResumePoint> {
        Some(ResumePoint {
            epoch: EPOCH.into(),
            offset,
        })
    }

    const ADMIN: Viewer = Viewer {
        user_id: 1,
        is_admin: true,
        page: Page::Admin,
    };
    const ALICE: Viewer = Viewer {
        user_id: 2,
        is_admin: false,
        page: Page::Modules,
    };
    const BOB: Viewer = Viewer {
        user_id: 3,
        is_admin: false,
        page: Page::Modules,
    };

    fn offsets(missed: &[&Recorded]) -> Vec<u64> {
        missed.iter().map(|r| r.offset).collect()
    }

    fn event(n: u64) -> Entry {
        Entry::Event {
            event: "rt_telemetry_updated",
            payload: payload(n),
        }
    }

    #[test]
    fn a_cluster_hub_keeps_the_shared_offsets_and_no_one_resumes_across_what_it_missed() {
        let now = Instant::now();
        let mut b = ReplayBuffer::new("local".into(), bounds(100, 60, 100));
        // Joined at head 10 of the shared stream: nothing before can be replayed here.
        b.start_at(EPOCH.into(), 10);
        assert_eq!(b.epoch(), EPOCH);
        assert_eq!(
            b.missed(at(9).as_ref(), &ADMIN, now).err(),
            Some(NotResumed::TooOld)
        );
        assert!(b.push_at(11, Audience::Everyone, event(11), now));
        assert!(b.push_at(12, Audience::Everyone, event(12), now));
        assert!(
            !b.push_at(12, Audience::Everyone, event(12), now),
            "already kept"
        );
        let missed = b.missed(at(10).as_ref(), &ADMIN, now).expect("resumes");
        assert_eq!(offsets(&missed), [11, 12]);
        // A session end takes an offset, is not kept, and breaks nobody's resume.
        b.skip_to(13);
        assert!(b.push_at(14, Audience::Everyone, event(14), now));
        let missed = b.missed(at(12).as_ref(), &ALICE, now).expect("resumes");
        assert_eq!(offsets(&missed), [14]);
        // Entries this hub never saw (trimmed before it read them): no resume across them.
        assert!(b.push_at(20, Audience::Everyone, event(20), now));
        assert_eq!(
            b.missed(at(14).as_ref(), &ALICE, now).err(),
            Some(NotResumed::TooOld)
        );
        assert_eq!(
            offsets(&b.missed(at(19).as_ref(), &ALICE, now).expect("resumes")),
            [20]
        );
        // A barrier from the stream counts like a local one.
        assert!(b.push_at(21, Audience::User(ALICE.user_id), Entry::Barrier, now));
        assert!(b.barrier_after(ALICE.user_id, 20));
        // The stream started over: a new epoch, nothing old resumes.
        b.start_over("epoch-2".into(), 3);
        assert_eq!((b.epoch(), b.head(), b.len()), ("epoch-2", 3, 0));
        assert_eq!(
            b.missed(at(21).as_ref(), &ALICE, now).err(),
            Some(NotResumed::OtherEpoch)
        );
    }

    #[test]
    fn offsets_increase_from_one_and_payloads_are_kept_verbatim() {
        let now = Instant::now();
        let mut b = ReplayBuffer::new(EPOCH.into(), bounds(10, 60, 100));
        assert_eq!(b.head(), 0);
        assert_eq!(b.push(Audience::Everyone, "e", payload(7), now), 1);
        assert_eq!(b.push(Audience::Everyone, "e", payload(8), now), 2);
        assert_eq!(b.head(), 2);
        // A client that applied everything resumes with nothing missed.
        assert_eq!(
            b.missed(at(2).as_ref(), &ALICE, now).map(|m| m.len()),
            Ok(0)
        );
        // One that never saw anything of this epoch (offset 0) gets all of it.
        let missed = b.missed(at(0).as_ref(), &ALICE, now).unwrap();
        assert_eq!(offsets(&missed), [1, 2]);
        assert_eq!(payload_of(missed[0]), r#"{"n":7}"#);
        assert_eq!(payload_of(missed[1]), r#"{"n":8}"#);
    }

    #[test]
    fn capacity_bounds_the_buffer_and_a_client_behind_it_cannot_resume() {
        let now = Instant::now();
        let mut b = ReplayBuffer::new(EPOCH.into(), bounds(3, 60, 100));
        for n in 1..=5 {
            b.push(Audience::Everyone, "e", payload(n), now);
        }
        assert_eq!(b.len(), 3);
        // Kept: 3, 4, 5. A client at 2 misses exactly those; one at 1 missed 2, gone.
        let missed = b.missed(at(2).as_ref(), &BOB, now).unwrap();
        assert_eq!(offsets(&missed), [3, 4, 5]);
        assert_eq!(
            b.missed(at(1).as_ref(), &BOB, now).map(|m| m.len()),
            Err(NotResumed::TooOld)
        );
        // An offset this process never assigned is not trusted either.
        assert_eq!(
            b.missed(at(6).as_ref(), &BOB, now).map(|m| m.len()),
            Err(NotResumed::TooOld)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn old_events_fall_out_by_age() {
        let mut b = ReplayBuffer::new(EPOCH.into(), bounds(100, 60, 100));
        b.push(Audience::Everyone, "e", payload(1), Instant::now());
        tokio::time::advance(Duration::from_secs(40)).await;
        b.push(Audience::Everyone, "e", payload(2), Instant::now());
        tokio::time::advance(Duration::from_secs(30)).await;
        // 70 s after the first event, 30 s after the second: only the second is kept.
        let now = Instant::now();
        assert_eq!(
            b.missed(at(0).as_ref(), &ALICE, now).map(|m| m.len()),
            Err(NotResumed::TooOld)
        );
        assert_eq!(b.len(), 1);
        let missed = b.missed(at(1).as_ref(), &ALICE, now).unwrap();
        assert_eq!(offsets(&missed), [2]);
        tokio::time::advance(Duration::from_secs(31)).await;
        let now = Instant::now();
        // Nothing kept, but a client that applied everything still resumes.
        assert_eq!(
            b.missed(at(2).as_ref(), &ALICE, now).map(|m| m.len()),
            Ok(0)
        );
        assert!(b.is_empty());
        assert_eq!(
            b.missed(at(1).as_ref(), &ALICE, now).map(|m| m.len()),
            Err(NotResumed::TooOld)
        );
    }

    #[test]
    fn a_viewer_gets_only_what_it_is_entitled_to() {
        let now = Instant::now();
        let mut b = ReplayBuffer::new(EPOCH.into(), bounds(100, 60, 100));
        let audiences = [
            Audience::Everyone,                  // 1
            Audience::Admins,                    // 2
            Audience::Page(Page::Admin),         // 3
            Audience::Page(Page::Modules),       // 4
            Audience::User(ALICE.user_id),       // 5
            Audience::User(BOB.user_id),         // 6
            Audience::Module { owner: Some(2) }, // 7: Alice's module
            Audience::Module { owner: Some(3) }, // 8: Bob's module
            Audience::Module { owner: None },    // 9: nobody's module
        ];
        for (n, audience) in audiences.into_iter().enumerate() {
            b.push(audience, "e", payload(n as u64), now);
        }
        let seen =
            |b: &mut ReplayBuffer, v: &Viewer| offsets(&b.missed(at(0).as_ref(), v, now).unwrap());
        assert_eq!(seen(&mut b, &ALICE), [1, 4, 5, 7]);
        assert_eq!(seen(&mut b, &BOB), [1, 4, 6, 8]);
        assert_eq!(seen(&mut b, &ADMIN), [1, 2, 3, 7, 8, 9]);
        // An admin on the modules page: admin events, not the admin page's.
        let admin_on_modules = Viewer {
            page: Page::Modules,
            ..ADMIN
        };
        assert_eq!(seen(&mut b, &admin_on_modules), [1, 2, 4, 7, 8, 9]);
        // Alice demoted from admin sees as a user does now, whatever she was before.
        let former_admin = Viewer {
            user_id: 1,
            is_admin: false,
            page: Page::Modules,
        };
        assert_eq!(seen(&mut b, &former_admin), [1, 4]);
    }

    #[test]
    fn no_resume_point_or_another_epoch_or_too_many_missed_means_snapshot() {
        let now = Instant::now();
        let mut b = ReplayBuffer::new(EPOCH.into(), bounds(100, 60, 2));
        for n in 1..=3 {
            b.push(Audience::Module { owner: Some(2) }, "e", payload(n), now);
        }
        b.push(Audience::User(3), "e", payload(4), now);
        assert_eq!(
            b.missed(None, &ALICE, now).map(|m| m.len()),
            Err(NotResumed::NoResumePoint)
        );
        let other = ResumePoint {
            epoch: "epoch-0".into(),
            offset: 4,
        };
        assert_eq!(
            b.missed(Some(&other), &ALICE, now).map(|m| m.len()),
            Err(NotResumed::OtherEpoch)
        );
        // Alice missed 3 of her events (cap 2); Bob only 1 of his.
        assert_eq!(
            b.missed(at(0).as_ref(), &ALICE, now).map(|m| m.len()),
            Err(NotResumed::TooManyMissed)
        );
        assert_eq!(
            offsets(&b.missed(at(1).as_ref(), &ALICE, now).unwrap()),
            [2, 3]
        );
        assert_eq!(offsets(&b.missed(at(0).as_ref(), &BOB, now).unwrap()), [4]);
    }

    #[test]
    fn a_barrier_after_the_offset_means_snapshot_for_that_user_only() {
        let now = Instant::now();
        let mut b = ReplayBuffer::new(EPOCH.into(), bounds(100, 60, 100));
        b.push(Audience::Everyone, "e", payload(1), now); // 1
        assert_eq!(b.push_barrier(ALICE.user_id, now), 2);
        b.push(Audience::Module { owner: Some(2) }, "e", payload(3), now); // 3
        assert_eq!(b.head(), 3);
        // Alice stopped before her rights changed: snapshot, whatever her rights are now.
        for alice in [
            ALICE,
            Viewer {
                is_admin: true,
                ..ALICE
            },
        ] {
            assert_eq!(
                b.missed(at(1).as_ref(), &alice, now).map(|m| m.len()),
                Err(NotResumed::EntitlementChanged)
            );
        }
        // After it: she resumes, and the barrier is never replayed.
        assert_eq!(
            offsets(&b.missed(at(2).as_ref(), &ALICE, now).unwrap()),
            [3]
        );
        // Others are not concerned; an admin resuming from before gets no barrier either.
        assert_eq!(offsets(&b.missed(at(0).as_ref(), &BOB, now).unwrap()), [1]);
        assert_eq!(
            offsets(&b.missed(at(0).as_ref(), &ADMIN, now).unwrap()),
            [1, 3]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_barrier_that_fell_out_still_refuses_older_offsets() {
        let mut b = ReplayBuffer::new(EPOCH.into(), bounds(100, 60, 100));
        b.push_barrier(ALICE.user_id, Instant::now()); // 1
        tokio::time::advance(Duration::from_secs(61)).await;
        b.push(Audience::User(BOB.user_id), "e", payload(2), Instant::now()); // 2
        assert_eq!(b.len(), 1);
        let now = Instant::now();
        assert_eq!(
            b.missed(at(0).as_ref(), &ALICE, now).map(|m| m.len()),
            Err(NotResumed::TooOld)
        );
        assert_eq!(
            b.missed(at(1).as_ref(), &ALICE, now).map(|m| m.len()),
            Ok(0)
        );
    }

    #[test]
    fn a_quiet_viewer_resumes_however_busy_the_others_were() {
        let now = Instant::now();
        let mut b = ReplayBuffer::new(EPOCH.into(), bounds(3, 60, 100));
        b.push(Audience::User(ALICE.user_id), "e", payload(1), now); // 1
        for n in 2..=10 {
            b.push(
                Audience::Module {
                    owner: Some(BOB.user_id),
                },
                "e",
                payload(n),
                now,
            );
        }
        b.push(Audience::Page(Page::Admin), "e", payload(11), now); // 11
        // Kept: 9, 10, 11. Alice stopped at 1: nothing of hers fell out since.
        assert_eq!(
            b.missed(at(1).as_ref(), &ALICE, now).map(|m| m.len()),
            Ok(0)
        );
        // Before her own event, which fell out: snapshot.
        assert_eq!(
            b.missed(at(0).as_ref(), &ALICE, now).map(|m| m.len()),
            Err(NotResumed::TooOld)
        );
        // Bob's module events fell out: Bob and admins cannot resume from 1.
        for viewer in [BOB, ADMIN] {
            assert_eq!(
                b.missed(at(1).as_ref(), &viewer, now).map(|m| m.len()),
                Err(NotResumed::TooOld),
                "{viewer:?}"
            );
        }
        assert_eq!(
            offsets(&b.missed(at(8).as_ref(), &BOB, now).unwrap()),
            [9, 10]
        );
        assert_eq!(
            offsets(&b.missed(at(8).as_ref(), &ADMIN, now).unwrap()),
            [9, 10, 11]
        );
        // A module without owner: only admins lose it.
        b.push(Audience::Module { owner: None }, "e", payload(12), now); // 12
        for n in 13..=15 {
            b.push(Audience::Page(Page::Admin), "e", payload(n), now);
        }
        assert_eq!(b.missed(at(10).as_ref(), &BOB, now).map(|m| m.len()), Ok(0));
        assert_eq!(
            b.missed(at(11).as_ref(), &ADMIN, now).map(|m| m.len()),
            Err(NotResumed::TooOld)
        );
        // Events for everyone fall out for everyone.
        for n in 16..=19 {
            b.push(Audience::Everyone, "e", payload(n), now);
        }
        assert_eq!(
            b.missed(at(15).as_ref(), &ALICE, now).map(|m| m.len()),
            Err(NotResumed::TooOld)
        );
        assert_eq!(
            offsets(&b.missed(at(16).as_ref(), &ALICE, now).unwrap()),
            [17, 18, 19]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_viewer_connected_longer_than_the_max_age_resumes() {
        let mut b = ReplayBuffer::new(EPOCH.into(), bounds(100, 60, 100));
        b.push(Audience::User(BOB.user_id), "e", payload(1), Instant::now());
        tokio::time::advance(Duration::from_secs(600)).await;
        b.push(Audience::User(BOB.user_id), "e", payload(2), Instant::now());
        let now = Instant::now();
        // Alice connected at 0, nothing was hers: she resumes with nothing missed.
        assert_eq!(
            b.missed(at(0).as_ref(), &ALICE, now).map(|m| m.len()),
            Ok(0)
        );
        assert_eq!(
            b.missed(at(0).as_ref(), &BOB, now).map(|m| m.len()),
            Err(NotResumed::TooOld)
        );
    }

    #[test]
    fn the_byte_budget_drops_the_oldest_and_keeps_the_newest() {
        let now = Instant::now();
        // Every payload here is 7 bytes (`{"n":N}`).
        let mut b = ReplayBuffer::new(
            EPOCH.into(),
            ReplayBounds {
                max_bytes: 20,
                ..bounds(100, 60, 100)
            },
        );
        for n in 1..=5 {
            b.push(Audience::Everyone, "e", payload(n), now);
        }
        assert_eq!((b.len(), b.bytes()), (2, 14));
        assert_eq!(
            offsets(&b.missed(at(3).as_ref(), &ALICE, now).unwrap()),
            [4, 5]
        );
        assert_eq!(
            b.missed(at(2).as_ref(), &ALICE, now).map(|m| m.len()),
            Err(NotResumed::TooOld)
        );
        // Barriers weigh nothing.
        b.push_barrier(BOB.user_id, now);
        assert_eq!((b.len(), b.bytes()), (3, 14));
        // An event bigger than the whole budget is kept alone.
        let big: Arc<RawValue> = serde_json::value::to_raw_value(&"x".repeat(100))
            .unwrap()
            .into();
        b.push(Audience::Everyone, "e", big, now);
        assert_eq!((b.len(), b.bytes()), (1, 102));
        assert_eq!(b.missed(at(6).as_ref(), &ALICE, now).unwrap().len(), 1);
        b.push(Audience::Everyone, "e", payload(8), now);
        assert_eq!((b.len(), b.bytes()), (1, 7));
    }

    #[test]
    fn a_resume_heavier_than_the_missed_byte_cap_means_snapshot() {
        let now = Instant::now();
        let mut b = ReplayBuffer::new(
            EPOCH.into(),
            ReplayBounds {
                max_missed_bytes: 14,
                ..bounds(100, 60, 100)
            },
        );
        for n in 1..=3 {
            b.push(Audience::User(ALICE.user_id), "e", payload(n), now);
        }
        assert_eq!(
            b.missed(at(0).as_ref(), &ALICE, now).map(|m| m.len()),
            Err(NotResumed::TooManyMissedBytes)
        );
        assert_eq!(
            offsets(&b.missed(at(1).as_ref(), &ALICE, now).unwrap()),
            [2, 3]
        );
        // Others' events weigh nothing in Bob's resume.
        assert_eq!(b.missed(at(0).as_ref(), &BOB, now).map(|m| m.len()), Ok(0));
    }
}
