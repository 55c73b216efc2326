//! Applies registry changes to the running hub, whoever made them (the HTTP API, the `hub` CLI
//! in another process, or another hub on the same PostgreSQL database): events to the right audiences, closed connections for rotated tokens,
//! disabled and removed modules, dropped command queues of disabled modules, closed sockets for
//! disabled or deleted users, tracker updates.
//!
//! Changes are read from the change log that database triggers fill in the same transaction as
//! each change (on PostgreSQL, in commit order, so that several hubs on one database each apply
//! every change: `store::changes`). The HTTP handlers wake the watcher at once; changes from
//! other processes are picked up within [`POLL_INTERVAL`].

use std::{sync::Arc, time::Duration};

use mc_protocol::ModuleId;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    authz,
    commands::queue::{CommandQueue, Forget},
    connections::LiveConnections,
    ingest::ModuleEvent,
    realtime::{EventsManager, events},
    store::{RegistryChange, Store, StoreError},
    tracker::TrackerHandle,
};

/// How often the change log is read when nobody signals a change.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Changes older than this are pruned from the log.
const KEEP_CHANGES_SECS: i64 = 3600;

/// Wakes the watcher after a change made in this process; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct RegistryNotifier(Arc<Notify>);

impl RegistryNotifier {
    /// Something changed: apply it now rather than at the next poll.
    pub fn changed(&self) {
        self.0.notify_one();
    }
}

/// What applying changes needs.
pub struct RegistryWatcher {
    /// The registry and its change log.
    pub store: Store,
    /// Emits events, closes sockets.
    pub events: EventsManager,
    /// Learns owners and removals.
    pub tracker: TrackerHandle,
    /// Closes module connections.
    pub connections: LiveConnections,
    /// Drops the queued commands of a disabled module.
    pub commands: CommandQueue,
    /// Wake-ups from this process.
    pub notifier: RegistryNotifier,
    /// Counts applied changes.
    pub metrics: crate::metrics::Metrics,
}

impl RegistryWatcher {
    /// Applies changes until shutdown, starting after the newest change present now.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut last = match self.store.last_change().await {
            Ok(seq) => seq,
            Err(e) => {
                tracing::error!(error = %e, "registry change log unavailable");
                0
            }
        };
        let mut polls: u32 = 0;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.notifier.0.notified() => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
            match self.apply_after(last).await {
                Ok(seq) => last = seq,
                Err(e) => tracing::warn!(error = %e, "could not read registry changes"),
            }
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(7200)
                && let Err(e) = self.store.prune_changes(KEEP_CHANGES_SECS).await
            {
                tracing::warn!(error = %e, "could not prune registry changes");
            }
        }
    }

    async fn apply_after(&self, mut last: i64) -> Result<i64, StoreError> {
        loop {
            let changes = self.store.changes_after(last, 256).await?;
            let Some(newest) = changes.last().map(|c| c.seq) else {
                return Ok(last);
            };
            for change in changes {
                self.apply(change).await?;
                self.metrics.registry_changes_applied.inc();
            }
            last = newest;
        }
    }

    async fn apply(&self, change: RegistryChange) -> Result<(), StoreError> {
        // Every hub of a cluster applies each change (its local effects: connections, tracker,
        // queue); its events reach clients once, from whichever hub publishes first.
        let emitter = self.events.once(format!("reg:{}", change.seq));
        let module = change
            .module_id
            .as_deref()
            .and_then(|id| ModuleId::new(id).ok());
        match (change.kind.as_str(), module, change.user_id) {
            ("module_added", Some(id), _) => {
                let Some(record) = self.store.module(&id).await? else {
                    return Ok(());
                };
                let added = events::ModuleAdded {
                    module_id: record.id.to_string(),
                    name: record.name,
                    kind: record.kind,
                    user_id: record.owner_id,
                };
                emitter
                    .emit_to_module_audience(record.owner_id, events::RT_MODULE_ADDED, &added)
                    .await;
            }
            ("module_updated", Some(id), _) => {
                let Some(record) = self.store.module(&id).await? else {
                    return Ok(());
                };
                let _ = self
                    .tracker
                    .events()
                    .send(ModuleEvent::Registered(record.clone()))
                    .await;
                if change.owner_before != change.owner_after {
                    // What the former and the new owner see changed: neither may resume across
                    // it (their live sockets get the events below).
                    for user in [change.owner_before, change.owner_after]
                        .into_iter()
                        .flatten()
                    {
                        emitter.resume_barrier(user).await;
                    }
                }
                let updated = events::ModuleUpdated {
                    module_id: record.id.to_string(),
                    name: record.name.clone(),
                    kind: record.kind.clone(),
                };
                emitter
                    .emit_to_module_audience(record.owner_id, events::RT_MODULE_UPDATED, &updated)
                    .await;
                if let Some(former) = change
                    .owner_before
                    .filter(|f| Some(*f) != change.owner_after)
                {
                    // The former owner no longer sees it: for them it is gone. Unless they are an
                    // admin (admins see every module, authz::can_manage_module): their pages keep it.
                    let former_is_admin = self
                        .store
                        .user(former)
                        .await?
                        .is_some_and(|user| authz::is_admin(&user));
                    if former_is_admin {
                        return Ok(());
                    }
                    let removed = events::ModuleRemoved {
                        module_id: record.id.to_string(),
                        user_id: Some(former),
                    };
                    emitter
                        .emit_to_user(former, events::RT_MODULE_REMOVED, &removed)
                        .await;
                }
            }
            ("module_access", Some(id), _) => {
                let disabled = self.store.module(&id).await?.is_some_and(|r| r.disabled);
                if disabled {
                    if self.connections.close(&id) {
                        tracing::info!(module = %id, "module disabled: connection closed");
                    }
                    // Not kept for when it is enabled again, maybe much later.
                    self.commands.forget(&id, Forget::Disabled);
                }
            }
            // Serial links have no token: they stay up.
            ("module_token", Some(id), _) => {
                if self.connections.close_token_authenticated(&id) {
                    tracing::info!(module = %id, "token rotated: connection closed");
                }
            }
            ("module_removed", Some(id), _) => {
                self.connections.close(&id);
                let _ = self
                    .tracker
                    .events()
                    .send(ModuleEvent::Unregistered(id.clone()))
                    .await;
                let removed = events::ModuleRemoved {
                    module_id: id.to_string(),
                    user_id: change.owner_before,
                };
                emitter
                    .emit_to_module_audience(
                        change.owner_before,
                        events::RT_MODULE_REMOVED,
                        &removed,
                    )
                    .await;
            }
            ("user_profile", _, Some(user_id)) => {
                let Some(user) = self.store.user(user_id).await? else {
                    return Ok(());
                };
                let event = events::UserProfileUpdated {
                    id: user.id,
                    name: user.name,
                    email: user.email,
                };
                emitter
                    .emit_to_admins_and_user(user.id, events::RT_USER_PROFILE_UPDATED, &event)
                    .await;
            }
            // Disabled, re-enabled, promoted, demoted or deleted: close the user's sockets, so
            // that they reconnect (or not) with the rights they have now, and with a snapshot:
            // no client of theirs resumes across the change.
            ("user_access" | "user_deleted", _, Some(user_id)) => {
                emitter.access_changed(user_id).await;
            }
            (kind, _, _) => tracing::debug!(kind, "registry change without effect"),
        }
        Ok(())
    }
}
