//! The replay buffer: the recent events of the stream, so that a client that lost its
//! connection for a moment resumes from its last offset instead of fetching a full snapshot
//! (`docs/REALTIME.md`).
//!
//! Every event emitted through [`super::EventsManager`] gets the next offset of one process-wide
//! sequence and is kept here with its audience, so that a resuming client gets exactly the
//! events its user and page are entitled to. The buffer is bounded by count and by age; a client
//! behind the oldest kept event, or one that missed more than `max_missed` events, gets
//! `resumed: false` and fetches a snapshot instead.
//!
//! Pure logic, no I/O: the caller passes the time (so tests use any clock) and holds the lock
//! that orders emits.

use std::{collections::VecDeque, time::Duration};

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

/// One event of the stream, as kept for replay.
#[derive(Debug)]
pub struct Recorded {
    /// Its stream offset.
    pub offset: u64,
    /// Who it was sent to.
    pub audience: Audience,
    /// The event name ([`super::events`]).
    pub event: &'static str,
    /// The payload, serialized once: sent live and replayed as is.
    pub payload: Box<RawValue>,
    /// When it was emitted (for the age bound).
    pub at: Instant,
}

/// Bounds of the buffer ([`crate::config::RealtimeConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayBounds {
    /// Most events kept (at least 1).
    pub capacity: usize,
    /// Events older than this fall out.
    pub max_age: Duration,
    /// A client that missed more events than this gets a snapshot instead.
    pub max_missed: usize,
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
    /// Events after its offset have fallen out of the buffer (or the offset is from the future).
    TooOld,
    /// It missed more than the replay cap.
    TooManyMissed,
}

/// The recent events of the stream and the offset sequence. One per hub process.
#[derive(Debug)]
pub struct ReplayBuffer {
    /// This process's epoch: offsets of another epoch mean nothing here.
    epoch: String,
    /// Kept events, oldest first, offsets strictly increasing.
    events: VecDeque<Recorded>,
    /// The last offset assigned (0: none yet).
    head: u64,
    bounds: ReplayBounds,
}

impl ReplayBuffer {
    /// An empty stream of process `epoch`.
    pub fn new(epoch: String, bounds: ReplayBounds) -> Self {
        Self {
            epoch,
            events: VecDeque::new(),
            head: 0,
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

    /// Number of events kept now.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event is kept.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Assigns the next offset to an event, keeps it (dropping what falls out of the bounds) and
    /// returns it, for the caller to emit it.
    pub fn push(
        &mut self,
        audience: Audience,
        event: &'static str,
        payload: Box<RawValue>,
        now: Instant,
    ) -> &Recorded {
        self.head += 1;
        self.prune(now);
        while self.events.len() >= self.bounds.capacity.max(1) {
            self.events.pop_front();
        }
        let index = self.events.len();
        self.events.push_back(Recorded {
            offset: self.head,
            audience,
            event,
            payload,
            at: now,
        });
        &self.events[index]
    }

    /// Drops the events older than the age bound.
    fn prune(&mut self, now: Instant) {
        while let Some(oldest) = self.events.front() {
            if now.saturating_duration_since(oldest.at) > self.bounds.max_age {
                self.events.pop_front();
            } else {
                break;
            }
        }
    }

    /// The events after `from` that `viewer` is entitled to, oldest first, when the client can
    /// resume; why not otherwise.
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
        // Every offset after `from.offset` must still be here.
        let first_kept = self.events.front().map_or(self.head + 1, |r| r.offset);
        if from.offset > self.head || from.offset + 1 < first_kept {
            return Err(NotResumed::TooOld);
        }
        let start = self.events.partition_point(|r| r.offset <= from.offset);
        let mut missed = Vec::new();
        for recorded in self.events.range(start..) {
            if recorded.audience.admits(viewer) {
                if missed.len() == self.bounds.max_missed {
                    return Err(NotResumed::TooManyMissed);
                }
                missed.push(recorded);
            }
        }
        Ok(missed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH: &str = "epoch-1";

    fn bounds(capacity: usize, max_age_s: u64, max_missed: usize) -> ReplayBounds {
        ReplayBounds {
            capacity,
            max_age: Duration::from_secs(max_age_s),
            max_missed,
        }
    }

    fn payload(n: u64) -> Box<RawValue> {
        serde_json::value::to_raw_value(&serde_json::json!({ "n": n })).unwrap()
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

    #[test]
    fn offsets_increase_from_one_and_payloads_are_kept_verbatim() {
        let now = Instant::now();
        let mut b = ReplayBuffer::new(EPOCH.into(), bounds(10, 60, 100));
        assert_eq!(b.head(), 0);
        let first = b.push(Audience::Everyone, "e", payload(7), now);
        assert_eq!((first.offset, first.payload.get()), (1, r#"{"n":7}"#));
        assert_eq!(b.push(Audience::Everyone, "e", payload(8), now).offset, 2);
        assert_eq!(b.head(), 2);
        // A client that applied everything resumes with nothing missed.
        assert_eq!(
            b.missed(at(2).as_ref(), &ALICE, now).map(|m| m.len()),
            Ok(0)
        );
        // One that never saw anything of this epoch (offset 0) gets all of it.
        let missed = b.missed(at(0).as_ref(), &ALICE, now).unwrap();
        assert_eq!(offsets(&missed), [1, 2]);
        assert_eq!(missed[1].payload.get(), r#"{"n":8}"#);
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
}
