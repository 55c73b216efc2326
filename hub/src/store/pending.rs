//! Unknown modules that tried to connect: counted, never given access, claimable by admins.

use mc_protocol::ModuleId;
use serde::Serialize;

use super::{Store, StoreError, unix_now, with_pool};

/// An unregistered module that tried to connect.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct PendingModule {
    /// The module id it presented.
    #[serde(rename = "moduleId")]
    pub id: String,
    /// How many connection attempts.
    pub attempts: i64,
    /// First attempt (Unix seconds).
    pub first_seen: i64,
    /// Last attempt (Unix seconds).
    pub last_seen: i64,
    /// Address of the last attempt.
    pub last_address: String,
}

/// Most pending entries kept: a flood of made-up ids must not fill the disk.
const MAX_PENDING: i64 = 10_000;

impl Store {
    /// Counts a connection attempt by the unregistered module `id` from `address`.
    pub async fn record_pending(&self, id: &ModuleId, address: &str) -> Result<(), StoreError> {
        let now = unix_now();
        with_pool!(&self.pool, p => {
            sqlx::query(
                "INSERT INTO pending_modules (id, attempts, first_seen, last_seen, last_address)
                 SELECT $1, 1, $2, $2, $3 WHERE (SELECT COUNT(*) FROM pending_modules) < $4
                 ON CONFLICT (id) DO UPDATE SET
                    attempts = pending_modules.attempts + 1, last_seen = excluded.last_seen,
                    last_address = excluded.last_address",
            )
            .bind(id.as_str())
            .bind(now)
            .bind(address)
            .bind(MAX_PENDING)
            .execute(p)
            .await
            .map(drop)
        })?;
        Ok(())
    }

    /// Pending modules, most recent attempt first.
    pub async fn pending_modules(&self) -> Result<Vec<PendingModule>, StoreError> {
        Ok(with_pool!(&self.pool, p => {
            sqlx::query_as::<_, PendingModule>(
                "SELECT id, attempts, first_seen, last_seen, last_address
                 FROM pending_modules ORDER BY last_seen DESC, id",
            )
            .fetch_all(p)
            .await
        })?)
    }

    /// Forgets a pending module; true if it was there.
    pub async fn delete_pending(&self, id: &ModuleId) -> Result<bool, StoreError> {
        let deleted = with_pool!(&self.pool, p => {
            sqlx::query("DELETE FROM pending_modules WHERE id = $1")
                .bind(id.as_str())
                .execute(p)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(deleted > 0)
    }
}
