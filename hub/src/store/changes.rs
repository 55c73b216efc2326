//! The registry change log, filled by triggers (migration 0003) in the same transaction as each
//! change, whoever made it. The hub reads it to apply the effects of every change.

use super::{Store, StoreError};

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
        let (seq,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM registry_changes")
            .fetch_one(&self.pool)
            .await?;
        Ok(seq)
    }

    /// Changes after position `seq`, oldest first (at most `limit`).
    pub async fn changes_after(
        &self,
        seq: i64,
        limit: i64,
    ) -> Result<Vec<RegistryChange>, StoreError> {
        Ok(sqlx::query_as::<_, RegistryChange>(
            "SELECT seq, kind, module_id, user_id, owner_before, owner_after
             FROM registry_changes WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Forgets changes older than `max_age_secs` (they have long been applied).
    pub async fn prune_changes(&self, max_age_secs: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM registry_changes WHERE at < unixepoch() - ?")
            .bind(max_age_secs)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
