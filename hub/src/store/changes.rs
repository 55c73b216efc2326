//! The registry change log, filled by triggers (migration 0003) in the same transaction as each
//! change, whoever made it. The hub reads it to apply the effects of every change.
//!
//! Readers rely on `seq` growing in commit order: a reader that has seen a change never later
//! finds one with a smaller `seq`. SQLite has one writer at a time; on PostgreSQL the triggers
//! take a transaction-level advisory lock before they draw a `seq` (migration 0003), so
//! concurrent writers (several hubs, the CLI) commit their changes in `seq` order too.

use super::{Store, StoreError, unix_now, with_pool};

/// One change to the registry.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RegistryChange {
    /// Position in the log.
    pub seq: i64,
    /// `module_added`, `module_updated`, `module_token`, `module_removed`, `user_profile`,
    /// `user_access` or `user_deleted`.
    pub kind: String,
    /// The module concerned.
    pub module_id: Option<String>,
    /// The user concerned.
    pub user_id: Option<i64>,
    /// The module's owner before the change.
    pub owner_before: Option<i64>,
    /// The module's owner after the change.
    pub owner_after: Option<i64>,
}

impl Store {
    /// The newest change's position (0 when the log is empty).
    pub async fn last_change(&self) -> Result<i64, StoreError> {
        let (seq,): (i64,) = with_pool!(&self.pool, p => {
            sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM registry_changes")
                .fetch_one(p)
                .await
        })?;
        Ok(seq)
    }

    /// Changes after position `seq`, oldest first (at most `limit`).
    pub async fn changes_after(
        &self,
        seq: i64,
        limit: i64,
    ) -> Result<Vec<RegistryChange>, StoreError> {
        Ok(with_pool!(&self.pool, p => {
            sqlx::query_as::<_, RegistryChange>(
                "SELECT seq, kind, module_id, user_id, owner_before, owner_after
                 FROM registry_changes WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(seq)
            .bind(limit)
            .fetch_all(p)
            .await
        })?)
    }

    /// Forgets changes older than `max_age_secs` (they have long been applied).
    pub async fn prune_changes(&self, max_age_secs: i64) -> Result<(), StoreError> {
        with_pool!(&self.pool, p => {
            sqlx::query("DELETE FROM registry_changes WHERE at < $1")
                .bind(unix_now() - max_age_secs)
                .execute(p)
                .await
                .map(drop)
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::store::{
        ModulePatch, NewModule, NewUser, UserPatch,
        tests::{Backend, backend_tests, test_store},
    };

    backend_tests!(every_registry_change_is_logged_in_order);

    /// The triggers of migrations 0003 and 0004 log the same changes on both backends: real
    /// changes only (a patch that changes nothing logs nothing), owners before and after, the
    /// owner's loss when a user is deleted.
    async fn every_registry_change_is_logged_in_order(backend: Backend) {
        let (_db, store) = test_store(backend).await;
        assert_eq!(store.last_change().await.unwrap(), 0);
        let ada = store
            .create_user(NewUser {
                email: "ada@example.com".into(),
                name: "Ada".into(),
                password: "pw".into(),
                is_admin: false,
            })
            .await
            .unwrap();
        let id = "MC-1".parse().unwrap();
        store
            .create_module(NewModule {
                id: "MC-1".parse().unwrap(),
                name: "One".into(),
                kind: "station".into(),
                owner_email: Some("ADA@example.com".into()),
                heartbeat_timeout: Some(Duration::from_secs(30)),
            })
            .await
            .unwrap();
        let same = ModulePatch {
            name: Some("One".into()),
            ..ModulePatch::default()
        };
        store.update_module(&id, same).await.unwrap();
        let patch = ModulePatch {
            name: Some("Uno".into()),
            heartbeat_timeout: Some(None),
            disabled: Some(true),
            ..ModulePatch::default()
        };
        let module = store.update_module(&id, patch).await.unwrap().unwrap();
        assert_eq!(
            (
                module.name.as_str(),
                module.heartbeat_timeout_ms,
                module.disabled
            ),
            ("Uno", None, true)
        );
        store.rotate_module_token(&id).await.unwrap();
        let admin = UserPatch {
            is_admin: Some(true),
            name: Some("Ada L".into()),
            ..UserPatch::default()
        };
        store.update_user(ada.id, admin).await.unwrap();
        assert!(store.delete_user(ada.id).await.unwrap());
        assert_eq!(store.module(&id).await.unwrap().unwrap().owner_id, None);
        assert!(store.delete_module(&id).await.unwrap());

        let changes = store.changes_after(0, 100).await.unwrap();
        /// Kind, module, user, owner before and after.
        type Logged<'a> = (
            &'a str,
            Option<&'a str>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
        );
        let log: Vec<Logged> = changes
            .iter()
            .map(|c| {
                (
                    c.kind.as_str(),
                    c.module_id.as_deref(),
                    c.user_id,
                    c.owner_before,
                    c.owner_after,
                )
            })
            .collect();
        let a = Some(ada.id);
        let mut user_deletion = log[6..8].to_vec();
        // Within one statement, the order of the triggers differs (SQLite logs the foreign
        // key's cascade first, PostgreSQL the deletion); the watcher's effects do not depend
        // on it.
        user_deletion.sort();
        assert_eq!(
            [&log[..6], &user_deletion, &log[8..]].concat(),
            [
                ("module_added", Some("MC-1"), None, None, a),
                ("module_access", Some("MC-1"), None, None, None),
                ("module_updated", Some("MC-1"), None, a, a),
                ("module_token", Some("MC-1"), None, None, None),
                ("user_access", None, a, None, None),
                ("user_profile", None, a, None, None),
                ("module_updated", Some("MC-1"), None, a, None),
                ("user_deleted", None, a, None, None),
                ("module_removed", Some("MC-1"), None, None, None),
            ]
        );
        assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(store.last_change().await.unwrap(), changes[8].seq);
        assert_eq!(
            store.changes_after(changes[6].seq, 1).await.unwrap().len(),
            1
        );
        store.prune_changes(3600).await.unwrap();
        assert_eq!(store.changes_after(0, 100).await.unwrap().len(), 9);
        store.prune_changes(-10).await.unwrap();
        assert!(store.changes_after(0, 100).await.unwrap().is_empty());
    }
}

#[cfg(test)]
mod commit_order {
    use std::time::Duration;

    use crate::store::{
        NewModule, Store,
        tests::{Backend, TestDb, backend_tests},
    };

    backend_tests!(a_reader_following_the_log_misses_no_concurrent_change);

    /// What every hub's watcher relies on: reading "changes after the last `seq` seen" while
    /// other processes write never skips a change (a change committed late with a smaller
    /// `seq` would be skipped for good). Two writers on their own pools, a reader polling.
    async fn a_reader_following_the_log_misses_no_concurrent_change(backend: Backend) {
        let db = TestDb::new(backend).await;
        let open = || Store::connect(&db.database, Duration::from_secs(60));
        let (reader, a, b) = (
            open().await.unwrap(),
            open().await.unwrap(),
            open().await.unwrap(),
        );
        let writer = |store: Store, prefix: &'static str| {
            tokio::spawn(async move {
                for i in 0..40 {
                    store
                        .create_module(NewModule {
                            id: format!("MC-{prefix}-{i}").parse().unwrap(),
                            name: "x".into(),
                            kind: "station".into(),
                            owner_email: None,
                            heartbeat_timeout: None,
                        })
                        .await
                        .unwrap();
                }
            })
        };
        let writers = [writer(a, "A"), writer(b, "B")];
        let mut seen = Vec::new();
        let mut last = 0;
        while writers.iter().any(|w| !w.is_finished()) {
            for change in reader.changes_after(last, 1000).await.unwrap() {
                last = change.seq;
                seen.push(change.seq);
            }
            tokio::task::yield_now().await;
        }
        for w in writers {
            w.await.unwrap();
        }
        seen.extend(
            reader
                .changes_after(last, 1000)
                .await
                .unwrap()
                .iter()
                .map(|c| c.seq),
        );
        let all: Vec<i64> = reader
            .changes_after(0, 1000)
            .await
            .unwrap()
            .iter()
            .map(|c| c.seq)
            .collect();
        assert_eq!(all.len(), 80);
        assert_eq!(seen, all, "the reader skipped changes");
    }
}
