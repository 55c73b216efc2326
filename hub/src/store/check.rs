//! `hub db check`: SQLite's own consistency checks on a data directory's database, without
//! changing it (no migration, no creation): run it on a copy, after a crash, or next to a
//! running hub.

use std::path::Path;

use sqlx::{
    ConnectOptions, Connection,
    sqlite::{SqliteConnectOptions, SqliteConnection},
};

use super::{StoreError, database_path};

/// What the checks found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityReport {
    /// `PRAGMA integrity_check`: `["ok"]` for a sound file, else SQLite's findings.
    pub integrity: Vec<String>,
    /// `PRAGMA foreign_key_check`: one line per row whose reference dangles.
    pub foreign_keys: Vec<String>,
}

impl IntegrityReport {
    /// Both checks passed.
    pub fn is_ok(&self) -> bool {
        self.integrity == ["ok"] && self.foreign_keys.is_empty()
    }
}

/// Runs `integrity_check` (every page, index and constraint; `quick_check` skips the index
/// contents, and the database is small enough for the full one) and `foreign_key_check` on the
/// database of `data_dir`, read-only. A WAL left by a killed hub is read, not replayed into the
/// file: the check sees exactly what the next hub will see.
pub async fn check_database(data_dir: &Path) -> Result<IntegrityReport, StoreError> {
    let path = database_path(data_dir);
    let open_err = |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    let mut conn: SqliteConnection = SqliteConnectOptions::new()
        .filename(&path)
        .read_only(true)
        .create_if_missing(false)
        .connect()
        .await
        .map_err(open_err)?;
    let integrity: Vec<(String,)> = sqlx::query_as("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await?;
    let foreign_keys: Vec<(String, Option<i64>, String, i64)> =
        sqlx::query_as("PRAGMA foreign_key_check")
            .fetch_all(&mut conn)
            .await?;
    conn.close().await?;
    Ok(IntegrityReport {
        integrity: integrity.into_iter().map(|(line,)| line).collect(),
        foreign_keys: foreign_keys
            .into_iter()
            .map(|(table, rowid, parent, fk)| {
                let row = rowid.map_or_else(|| "?".into(), |r| r.to_string());
                format!("{table} row {row}: reference {fk} to {parent} not found")
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_store;

    #[tokio::test]
    async fn a_fresh_database_checks_ok_and_a_damaged_one_does_not() {
        let (dir, store) = temp_store().await;
        let report = check_database(dir.path()).await.unwrap();
        assert!(report.is_ok(), "{report:?}");

        // A module whose owner does not exist (written with foreign keys off).
        let mut conn = store.pool.acquire().await.unwrap();
        sqlx::query("PRAGMA foreign_keys = OFF")
            .execute(&mut *conn)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO modules (id, name, owner_id, token_hash, created_at)
             VALUES ('MC-9', 'x', 4242, 'h', 0)",
        )
        .execute(&mut *conn)
        .await
        .unwrap();
        sqlx::query("PRAGMA foreign_keys = ON")
            .execute(&mut *conn)
            .await
            .unwrap();
        drop(conn);
        let report = check_database(dir.path()).await.unwrap();
        assert!(!report.is_ok());
        assert_eq!(report.foreign_keys.len(), 1, "{report:?}");
    }

    #[tokio::test]
    async fn a_missing_database_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_database(dir.path()).await.is_err());
    }
}
