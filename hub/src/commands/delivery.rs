//! The delivery task: sends queued commands ([`super::queue`]) once their module is back, and
//! drops those whose time ran out.
//!
//! One task owns the deliveries in flight (a [`JoinSet`], so shutdown cancels them) and the
//! expiry timer (the earliest deadline in the queue). A module's commands go out one at a
//! time, in order, through the same [`CommandRouter`] path as a command for an online module:
//! published on `mc/<id>/cmd` in the module's encoding, or sent down its serial line and
//! acknowledged. Modules are served concurrently: a serial module waiting for its acks does not
//! hold up another module.

use std::future::pending;

use mc_protocol::Encoding;
use tokio::{
    sync::mpsc,
    task::JoinSet,
    time::{Instant, sleep_until},
};
use tokio_util::sync::CancellationToken;

use super::{
    CommandError, CommandRouter,
    queue::{Delivering, Ready, Signal},
};
use crate::ingest::serial::CommandFailure;

/// Runs until shutdown: delivers when the tracker signals that a module with queued commands
/// is ready, expires commands at their deadline.
pub async fn run(
    router: CommandRouter,
    mut signals: mpsc::Receiver<Signal>,
    shutdown: CancellationToken,
) {
    let queue = router.queue().clone();
    let mut deliveries = JoinSet::new();
    loop {
        let expiry = queue.next_expiry();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            Some(done) = deliveries.join_next() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "a delivery of queued commands failed");
                }
            }
            _ = async {
                match expiry {
                    Some(at) => sleep_until(at).await,
                    None => pending().await,
                }
            } => {
                queue.expire(Instant::now());
            }
            signal = signals.recv() => match signal {
                None => return,
                // Only wakes the loop: the new command's deadline may be the next one.
                Some(Signal::Queued) => {}
                Some(Signal::Ready(ready)) => {
                    if let Some(delivering) = queue.start_delivery(&ready.module) {
                        deliveries.spawn(deliver(router.clone(), delivering, ready));
                    }
                }
            },
        }
    }
}

/// Sends `delivering`'s commands until none is left, or until one cannot go now.
async fn deliver(router: CommandRouter, mut delivering: Delivering, ready: Ready) {
    let encoding = ready.encoding.unwrap_or(Encoding::Native);
    while let Some(queued) = delivering.take_next() {
        let module = delivering.module();
        let id = queued.command.id;
        let sent = router
            .deliver(module, queued.command.clone(), encoding, ready.transport)
            .await;
        match sent {
            Ok(delivery) => {
                tracing::info!(%module, id, ?delivery, "queued command delivered");
                delivering.delivered();
            }
            // The link went (or is full) under us: the command waits for the next message.
            Err(
                e @ (CommandError::Offline
                | CommandError::Busy
                | CommandError::Link(_)
                | CommandError::NotAcknowledged(CommandFailure::SessionEnded)),
            ) => {
                tracing::debug!(%module, id, error = %e, "queued command kept for later");
                delivering.put_back(queued);
                return;
            }
            // The module got it and did not acknowledge it (every attempt timed out), or it
            // was never valid: sending it again would not help (and it may have run).
            Err(e) => {
                tracing::warn!(%module, id, error = %e, "queued command failed: dropped");
                delivering.failed();
            }
        }
    }
}
