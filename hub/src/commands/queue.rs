//! Commands waiting for their module: the hub's offline queue.
//!
//! The embedded broker keeps nothing for a module that is not connected (rumqttd has no offline
//! queue, even for a persistent QoS 1 session), and a serial line has no broker at all. So a
//! command for a registered module that is offline, or whose link is closing, waits here: per
//! module, in order, at most `[commands] max-queued` of them (one more is [`QueueError::Full`]),
//! each for at most `[commands] queue-ttl`. A command is meant for about now; one that waited
//! longer is dropped and counted ([`CommandQueue::expire`]), never sent late.
//!
//! # When a module is ready
//! The tracker calls [`CommandQueue::module_ready`] at every hello, heartbeat and telemetry of a
//! module it holds online *and whose current connection said hello*, not at CONNACK and not at
//! the online transition alone:
//! - **MQTT**: a module subscribes to `mc/<id>/cmd` after CONNECT, so CONNACK (or the
//!   gateway's "connected") comes before the module can receive anything. Its first message
//!   is the robust sign: the module sends SUBSCRIBE before it publishes (`firmware-sim` and the
//!   module contract do), the gateway forwards its packets in order on one connection, and the
//!   broker's router handles them in order, so when the hub has received a publish of the
//!   module, the router has its subscription, and a command published now reaches it. Seeing
//!   the SUBSCRIBE pass the gateway would not be enough: the packet might still be on its way to
//!   the router when the hub's own publish arrives there through the local link. The message
//!   must be the *current* connection's, and messages carry no session: when a module's new
//!   connection replaces an old one, a late heartbeat or telemetry of the old one may reach the
//!   tracker after the new one's `Connected`, before the new one subscribed. So the tracker
//!   waits for the hello after the latest `Connected` (the module contract: subscribe, then
//!   hello first) and offers queued commands from then on
//!   ([`crate::tracker::LiveModule::ready`]). The web handler's direct sends use the same flag,
//!   not the damped `online` clients see.
//! - **serial**: a module is online once a heartbeat follows its accepted hello; its link
//!   session is in [`crate::connections::LiveConnections`] from the hello on.
//! - **every message, not only the first**: a command put back because its link failed under
//!   it goes out with the next message at the latest. When nothing is queued this costs the
//!   tracker one atomic load per message. A command queued while its module's hello was on its
//!   way is offered by the web handler asking the tracker after queueing
//!   ([`crate::tracker::TrackerHandle::offer_queued`]): the tracker task handles both the
//!   question and the hello, one after the other, and the command is queued before either: if
//!   the hello comes first the question offers the command, if it comes second it finds it
//!   queued.
//!
//! Sending is [`super::delivery`]'s job; this module only keeps the commands, their order and
//! their deadlines. It is shared state behind a short synchronous lock (never held across an
//! `.await`), like [`crate::connections::LiveConnections`]: the web handlers, the tracker and
//! the delivery task each touch it briefly.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use mc_protocol::{Command, Encoding, ModuleId};
use tokio::{sync::mpsc, time::Instant};

use crate::{config::CommandsConfig, connections::Transport, metrics::Metrics};

/// How many signals may wait for the delivery task. A signal lost to a full channel costs
/// nothing: the module's next message sends another.
const SIGNAL_CAPACITY: usize = 1024;

/// Why a command was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// Queueing is off (`[commands] max-queued = 0`).
    #[error("commands for offline modules are not queued")]
    Off,
    /// The module already has `max-queued` commands waiting.
    #[error("too many commands waiting for this module")]
    Full,
}

/// Why a module's queued commands are dropped ([`CommandQueue::forget`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forget {
    /// The module was removed from the registry.
    Removed,
    /// The module was disabled.
    Disabled,
    /// Cluster mode: another hub owns the module now (its queue starts empty there).
    HandedOver,
}

/// A command waiting for its module.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    /// The command, with the id it will be sent with (and was answered with).
    pub command: Command,
    /// When it is dropped if still here (the runtime's clock: testable with paused time).
    pub expires_at: Instant,
    /// The same moment on the wall clock, for the API's `expiresAt`.
    pub expires_wall: SystemTime,
}

/// What the delivery task hears from the queue.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// A module with waiting commands spoke while online: send them now.
    Ready(Ready),
    /// A command was queued: its deadline may be the next one.
    Queued,
}

/// A module that can receive its queued commands, and how to reach it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ready {
    /// Whose commands.
    pub module: ModuleId,
    /// The encoding of its latest hello (MQTT commands go out in it).
    pub encoding: Option<Encoding>,
    /// The transport of its latest connection, as the tracker knows it.
    pub transport: Option<Transport>,
}

/// The commands of every module; cheap to clone.
#[derive(Debug, Clone)]
pub struct CommandQueue(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    ttl: Duration,
    max_queued: usize,
    /// Commands waiting now, over all modules (not those being sent): the gauge, and the
    /// tracker's lock-free "nothing is queued" check at every module message.
    depth: AtomicUsize,
    /// To the delivery task.
    signals: mpsc::Sender<Signal>,
    metrics: Metrics,
}

#[derive(Debug, Default)]
struct State {
    /// Only modules with commands waiting or being sent.
    modules: HashMap<ModuleId, ModuleQueue>,
    /// Numbers each module entry, so that a delivery of a module that was removed (and maybe
    /// queued for again) cannot touch the new entry.
    next_epoch: u64,
}

#[derive(Debug)]
struct ModuleQueue {
    epoch: u64,
    waiting: VecDeque<Queued>,
    /// A delivery is sending this module's commands: one at a time, in order.
    delivering: bool,
}

impl CommandQueue {
    /// An empty queue with `config`'s bound and TTL, and the receiver of its [`Signal`]s (for
    /// the delivery task).
    pub fn new(config: &CommandsConfig, metrics: Metrics) -> (Self, mpsc::Receiver<Signal>) {
        let (signals, rx) = mpsc::channel(SIGNAL_CAPACITY);
        let shared = Shared {
            state: Mutex::default(),
            ttl: config.queue_ttl,
            max_queued: config.max_queued,
            depth: AtomicUsize::new(0),
            signals,
            metrics,
        };
        (Self(Arc::new(shared)), rx)
    }

    /// The state; a poisoned lock is taken as is: every change under it is a few plain
    /// collection operations that leave it consistent, and refusing it would lose commands.
    fn state(&self) -> MutexGuard<'_, State> {
        self.0
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// False when `max-queued` is 0: commands for offline modules are refused.
    pub fn is_enabled(&self) -> bool {
        self.0.max_queued > 0
    }

    /// Queues `command` for `module` behind its other commands; returns when it expires.
    pub fn push(&self, module: &ModuleId, command: Command) -> Result<SystemTime, QueueError> {
        if !self.is_enabled() {
            return Err(QueueError::Off);
        }
        let queued = Queued {
            command,
            expires_at: Instant::now() + self.0.ttl,
            expires_wall: SystemTime::now() + self.0.ttl,
        };
        let expires = queued.expires_wall;
        {
            let mut guard = self.state();
            let state = &mut *guard;
            let entry = state.modules.entry(module.clone()).or_insert_with(|| {
                state.next_epoch += 1;
                ModuleQueue {
                    epoch: state.next_epoch,
                    waiting: VecDeque::new(),
                    delivering: false,
                }
            });
            if entry.waiting.len() >= self.0.max_queued {
                return Err(QueueError::Full);
            }
            tracing::info!(%module, id = queued.command.id, action = ?queued.command.action, "command queued for an offline module");
            entry.waiting.push_back(queued);
            self.0.depth.fetch_add(1, Ordering::Relaxed);
        }
        self.0.metrics.commands_queued.inc();
        let _ = self.0.signals.try_send(Signal::Queued);
        Ok(expires)
    }

    /// True if `module` has commands waiting or being sent: a new command must join them
    /// rather than overtake them.
    pub fn is_pending(&self, module: &ModuleId) -> bool {
        self.state().modules.contains_key(module)
    }

    /// `module` is online and spoke (see the module docs): if commands wait for it and none is
    /// being sent, the delivery task is told to send them. Never blocks (the tracker calls it).
    pub fn module_ready(
        &self,
        module: &ModuleId,
        encoding: Option<Encoding>,
        transport: Option<Transport>,
    ) {
        if self.0.depth.load(Ordering::Relaxed) == 0 {
            return;
        }
        let waiting = self
            .state()
            .modules
            .get(module)
            .is_some_and(|q| !q.waiting.is_empty() && !q.delivering);
        if waiting {
            let ready = Ready {
                module: module.clone(),
                encoding,
                transport,
            };
            // Full: the delivery task is behind; the module's next message asks again.
            let _ = self.0.signals.try_send(Signal::Ready(ready));
        }
    }

    /// Commands waiting now, over all modules.
    pub fn depth(&self) -> usize {
        self.0.depth.load(Ordering::Relaxed)
    }

    /// Drops (and counts) every command of `module`, which was removed from the registry or
    /// disabled (`why`, for the log): it must not run them whenever it comes back, maybe much
    /// later. A delivery running for it stops before its next command. Returns how many.
    pub fn forget(&self, module: &ModuleId, why: Forget) -> usize {
        let dropped = self
            .state()
            .modules
            .remove(module)
            .map_or(0, |q| q.waiting.len());
        if dropped > 0 {
            self.0.depth.fetch_sub(dropped, Ordering::Relaxed);
            self.0.metrics.commands_dropped.add(dropped as u64);
            tracing::info!(%module, dropped, ?why, "module gone: its queued commands are dropped");
        }
        dropped
    }

    /// Drops (and counts) the commands whose deadline is `now` or past; returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let mut expired = 0;
        self.state().modules.retain(|module, q| {
            q.waiting.retain(|queued| {
                let keep = queued.expires_at > now;
                if !keep {
                    tracing::info!(%module, id = queued.command.id, "queued command expired before its module came back");
                    expired += 1;
                }
                keep
            });
            q.delivering || !q.waiting.is_empty()
        });
        self.dropped_expired(expired);
        expired
    }

    fn dropped_expired(&self, n: usize) {
        if n > 0 {
            self.0.depth.fetch_sub(n, Ordering::Relaxed);
            self.0.metrics.commands_expired.add(n as u64);
        }
    }

    /// The earliest deadline of a waiting command.
    pub fn next_expiry(&self) -> Option<Instant> {
        if self.depth() == 0 {
            return None;
        }
        self.state()
            .modules
            .values()
            .flat_map(|q| q.waiting.iter().map(|c| c.expires_at))
            .min()
    }

    /// Starts sending `module`'s commands, unless none wait or a delivery already runs.
    pub fn start_delivery(&self, module: &ModuleId) -> Option<Delivering> {
        let mut state = self.state();
        let q = state.modules.get_mut(module)?;
        if q.delivering || q.waiting.is_empty() {
            return None;
        }
        q.delivering = true;
        Some(Delivering {
            queue: self.clone(),
            module: module.clone(),
            epoch: q.epoch,
            active: true,
        })
    }
}

/// The right to send one module's queued commands (one delivery per module at a time). Dropped
/// (also when the delivery task is cancelled), it lets the next delivery start.
#[derive(Debug)]
pub struct Delivering {
    queue: CommandQueue,
    module: ModuleId,
    epoch: u64,
    /// Still marked as delivering in the queue.
    active: bool,
}

impl Delivering {
    /// Whose commands.
    pub fn module(&self) -> &ModuleId {
        &self.module
    }

    /// The next command to send, oldest first; expired ones are dropped on the way (counted).
    /// `None` when none is left (or the module was removed): the delivery is over, and a
    /// command queued from now on waits for the module's next message.
    pub fn take_next(&mut self) -> Option<Queued> {
        if !self.active {
            return None;
        }
        let now = Instant::now();
        let mut expired = 0;
        let queue = self.queue.clone();
        let mut state = queue.state();
        let next = match state.modules.get_mut(&self.module) {
            Some(q) if q.epoch == self.epoch => loop {
                match q.waiting.pop_front() {
                    Some(queued) if queued.expires_at <= now => expired += 1,
                    Some(queued) => {
                        queue.0.depth.fetch_sub(1, Ordering::Relaxed);
                        break Some(queued);
                    }
                    None => break None,
                }
            },
            _ => None,
        };
        if next.is_none() {
            self.finish(&mut state);
        }
        drop(state);
        queue.dropped_expired(expired);
        next
    }

    /// The last command from [`Delivering::take_next`] reached its module.
    pub fn delivered(&self) {
        self.queue.0.metrics.commands_delivered_from_queue.inc();
    }

    /// The last command from [`Delivering::take_next`] was sent and failed for good (never
    /// acknowledged, or invalid): it is not put back, and it is counted.
    pub fn failed(&self) {
        self.queue.0.metrics.commands_failed.inc();
    }

    /// The last command from [`Delivering::take_next`] could not be sent in a way a later
    /// connection may fix (the link ended, the port is busy): it goes back to the front, and
    /// the delivery ends. Dropped (and counted with [`CommandQueue::forget`]'s) if the module
    /// was removed or disabled meanwhile.
    pub fn put_back(mut self, queued: Queued) {
        let queue = self.queue.clone();
        let mut state = queue.state();
        if let Some(q) = state.modules.get_mut(&self.module)
            && q.epoch == self.epoch
        {
            q.waiting.push_front(queued);
            queue.0.depth.fetch_add(1, Ordering::Relaxed);
        } else {
            queue.0.metrics.commands_dropped.inc();
        }
        self.finish(&mut state);
    }

    /// Ends the delivery under the lock, so that a command queued right after finds the
    /// module not delivering and can start the next one.
    fn finish(&mut self, state: &mut State) {
        if !std::mem::take(&mut self.active) {
            return;
        }
        if let Some(q) = state.modules.get_mut(&self.module)
            && q.epoch == self.epoch
        {
            q.delivering = false;
            if q.waiting.is_empty() {
                state.modules.remove(&self.module);
            }
        }
    }
}

impl Drop for Delivering {
    fn drop(&mut self) {
        if self.active {
            let queue = self.queue.clone();
            self.finish(&mut queue.state());
        }
    }
}

#[cfg(test)]
mod tests {
    use mc_protocol::CommandAction;

    use super::*;

    fn queue(ttl_secs: u64, max_queued: usize) -> (CommandQueue, mpsc::Receiver<Signal>) {
        let config = CommandsConfig {
            queue_ttl: Duration::from_secs(ttl_secs),
            max_queued,
        };
        CommandQueue::new(&config, Metrics::default())
    }

    fn command(id: u32) -> Command {
        Command {
            id,
            action: CommandAction::Reboot,
        }
    }

    fn module(id: &str) -> ModuleId {
        ModuleId::new(id).unwrap()
    }

    /// The ids a delivery would send now, in order (the delivery then ends).
    fn drain(q: &CommandQueue, m: &ModuleId) -> Vec<u32> {
        let Some(mut delivering) = q.start_delivery(m) else {
            return Vec::new();
        };
        std::iter::from_fn(|| delivering.take_next().map(|c| c.command.id)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn commands_wait_in_order_within_their_bound() {
        let (q, mut signals) = queue(60, 3);
        let (a, b) = (module("MC-A"), module("MC-B"));
        assert!(q.start_delivery(&a).is_none(), "nothing queued");
        for id in 1..=3 {
            q.push(&a, command(id)).unwrap();
        }
        assert_eq!(q.push(&a, command(4)), Err(QueueError::Full));
        q.push(&b, command(5)).unwrap();
        assert_eq!(q.depth(), 4);
        assert_eq!(q.0.metrics.commands_queued.get(), 4);
        assert_eq!(signals.try_recv(), Ok(Signal::Queued));

        assert!(q.is_pending(&a));
        assert_eq!(drain(&q, &a), [1, 2, 3]);
        assert_eq!(q.depth(), 1);
        assert!(!q.state().modules.contains_key(&a), "entry gone once sent");
        assert_eq!(drain(&q, &b), [5]);
        assert!(!q.is_pending(&a) && !q.is_pending(&b));

        let (off, _) = queue(60, 0);
        assert_eq!(off.push(&a, command(1)), Err(QueueError::Off));
    }

    #[tokio::test(start_paused = true)]
    async fn commands_expire_after_the_ttl_and_are_counted() {
        let (q, _signals) = queue(10, 16);
        let m = module("MC-A");
        let start = Instant::now();
        let wall = q.push(&m, command(1)).unwrap();
        assert!(wall > SystemTime::now());
        tokio::time::advance(Duration::from_secs(4)).await;
        q.push(&m, command(2)).unwrap();
        assert_eq!(q.next_expiry(), Some(start + Duration::from_secs(10)));

        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(
            q.expire(Instant::now()),
            1,
            "the first one, at its deadline"
        );
        assert_eq!(q.depth(), 1);
        assert_eq!(q.next_expiry(), Some(start + Duration::from_secs(14)));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(q.expire(Instant::now()), 1);
        assert_eq!(q.next_expiry(), None);
        assert_eq!(q.0.metrics.commands_expired.get(), 2);
        assert!(!q.is_pending(&m));

        // A delivery skips (and counts) what expired before the sweep saw it.
        q.push(&m, command(3)).unwrap();
        tokio::time::advance(Duration::from_secs(5)).await;
        q.push(&m, command(4)).unwrap();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(drain(&q, &m), [4]);
        assert_eq!(q.0.metrics.commands_expired.get(), 3);
        assert_eq!(q.depth(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn one_delivery_at_a_time_and_a_failed_send_goes_back_to_the_front() {
        let (q, mut signals) = queue(60, 16);
        let m = module("MC-A");
        q.push(&m, command(1)).unwrap();
        q.push(&m, command(2)).unwrap();
        while signals.try_recv().is_ok() {}

        q.module_ready(&m, Some(Encoding::Json), Some(Transport::Mqtt));
        let Ok(Signal::Ready(ready)) = signals.try_recv() else {
            panic!("a ready signal");
        };
        assert_eq!(
            (ready.module, ready.encoding),
            (m.clone(), Some(Encoding::Json))
        );

        let mut delivering = q.start_delivery(&m).unwrap();
        assert!(q.start_delivery(&m).is_none(), "one at a time");
        q.module_ready(&m, None, None);
        assert!(signals.try_recv().is_err(), "no signal while delivering");
        let first = delivering.take_next().unwrap();
        assert_eq!(first.command.id, 1);
        delivering.delivered();
        let second = delivering.take_next().unwrap();
        q.push(&m, command(3)).unwrap();
        assert!(q.is_pending(&m), "a new command joins the queue");
        delivering.put_back(second);
        assert_eq!(q.depth(), 2);
        assert_eq!(q.0.metrics.commands_delivered_from_queue.get(), 1);
        assert_eq!(drain(&q, &m), [2, 3], "order kept");

        // A delivery dropped half way (shutdown) lets the next one start.
        q.push(&m, command(4)).unwrap();
        let delivering = q.start_delivery(&m).unwrap();
        drop(delivering);
        assert_eq!(drain(&q, &m), [4]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_removed_module_drops_its_queue_even_during_a_delivery() {
        let (q, _signals) = queue(60, 16);
        let (a, b) = (module("MC-A"), module("MC-B"));
        q.push(&a, command(1)).unwrap();
        q.push(&a, command(2)).unwrap();
        q.push(&b, command(3)).unwrap();
        assert_eq!(q.forget(&a, Forget::Removed), 2);
        assert_eq!(q.depth(), 1);
        assert!(q.start_delivery(&a).is_none());

        // Removed (and queued for again) while a command of the old entry was being sent.
        let mut delivering = q.start_delivery(&b).unwrap();
        let sending = delivering.take_next().unwrap();
        q.forget(&b, Forget::Disabled);
        q.push(&b, command(4)).unwrap();
        delivering.put_back(sending);
        assert_eq!(q.depth(), 1, "the old command is not put back");
        assert_eq!(drain(&q, &b), [4]);
        assert_eq!(
            q.0.metrics.commands_dropped.get(),
            3,
            "counted, the one being sent too"
        );
        assert_eq!(q.forget(&a, Forget::Disabled), 0, "nothing left");
        assert_eq!(q.0.metrics.commands_dropped.get(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_command_that_failed_for_good_is_counted_and_not_put_back() {
        let (q, _signals) = queue(60, 16);
        let m = module("MC-A");
        q.push(&m, command(1)).unwrap();
        q.push(&m, command(2)).unwrap();
        let mut delivering = q.start_delivery(&m).unwrap();
        assert_eq!(delivering.take_next().map(|c| c.command.id), Some(1));
        delivering.failed();
        assert_eq!(delivering.take_next().map(|c| c.command.id), Some(2));
        delivering.delivered();
        assert!(delivering.take_next().is_none());
        let m = &q.0.metrics;
        assert_eq!(
            (
                m.commands_failed.get(),
                m.commands_delivered_from_queue.get()
            ),
            (1, 1)
        );
        assert_eq!(q.depth(), 0);
    }
}
