//! `hub db check`: consistency checks on the hub's database, without changing it (no
//! migration, no creation): run it on a copy, after a crash, or next to running hubs.
//!
//! - SQLite: its own `integrity_check` (every page, index and constraint) and
//!   `foreign_key_check`.
//! - PostgreSQL: the server guards its pages itself, so the check is what can go wrong
//!   between a hub and a shared server: can it connect, is the schema the one this hub's
//!   migrations make (every migration applied, none failed half-way, same checksums, none
//!   unknown, i.e. left by a newer hub), and do rows point at rows that do not exist
//!   (foreign keys are enforced, but a restore with triggers off or a manual repair can leave
//!   orphans). In a read-only transaction.

use std::path::Path;

use sqlx::{
    ConnectOptions, Connection,
    postgres::PgConnection,
    sqlite::{SqliteConnectOptions, SqliteConnection},
};

use super::{Database, POSTGRES_MIGRATIONS, StoreError, database_path};

/// What the checks found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityReport {
    /// `["ok"]` when sound, else the findings: SQLite's `PRAGMA integrity_check`; on
    /// PostgreSQL, the schema's migrations that are missing, failed, changed or unknown.
    pub integrity: Vec<String>,
    /// One line per row whose reference dangles (`PRAGMA foreign_key_check` on SQLite, a query
    /// per reference on PostgreSQL).
    pub foreign_keys: Vec<String>,
}

impl IntegrityReport {
    /// Both checks passed.
    pub fn is_ok(&self) -> bool {
        self.integrity == ["ok"] && self.foreign_keys.is_empty()
    }
}

/// Checks `database` (module docs). A database that does not exist, or a server that cannot be
/// reached, is an error rather than a report.
pub async fn check_store(database: &Database) -> Result<IntegrityReport, StoreError> {
    match database {
        Database::Sqlite(path) => check_sqlite(path).await,
        Database::Postgres(url) => check_postgres(database, url).await,
    }
}

/// Runs `integrity_check` (every page, index and constraint; `quick_check` skips the index
/// contents, and the database is small enough for the full one) and `foreign_key_check` on the
/// database of `data_dir`, read-only. A WAL left by a killed hub is read, not replayed into the
/// file: the check sees exactly what the next hub will see.
pub async fn check_database(data_dir: &Path) -> Result<IntegrityReport, StoreError> {
    check_sqlite(&database_path(data_dir)).await
}

async fn check_sqlite(path: &Path) -> Result<IntegrityReport, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    let mut conn: SqliteConnection = SqliteConnectOptions::new()
        .filename(path)
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

/// The references of the schema, as `(table, key column, column, parent table)`: every row
/// whose `column` is set must find its parent.
const REFERENCES: [(&str, &str, &str, &str); 3] = [
    ("modules", "id", "owner_id", "users"),
    ("sessions", "user_id", "user_id", "users"),
    ("module_state", "module_id", "module_id", "modules"),
];

async fn check_postgres(database: &Database, url: &str) -> Result<IntegrityReport, StoreError> {
    let open_err = |source| StoreError::Open {
        path: database.to_string(),
        source,
    };
    // Read-only for the whole session: the check cannot change anything, even by mistake.
    let mut conn: PgConnection = Database::postgres_options(url)
        .map_err(open_err)?
        .options([("default_transaction_read_only", "on")])
        .connect()
        .await
        .map_err(open_err)?;
    let mut integrity = Vec::new();
    let (has_table,): (bool,) =
        sqlx::query_as("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&mut conn)
            .await?;
    if !has_table {
        integrity.push(
            "no hub schema in this database (no _sqlx_migrations table): has a hub been started on it?"
                .to_owned(),
        );
        conn.close().await?;
        return Ok(IntegrityReport {
            integrity,
            foreign_keys: Vec::new(),
        });
    }
    let applied: Vec<(i64, String, bool, Vec<u8>)> = sqlx::query_as(
        "SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(&mut conn)
    .await?;
    integrity.extend(migration_findings(&applied));
    let mut foreign_keys = Vec::new();
    for (table, key, column, parent) in REFERENCES {
        // Static names from REFERENCES, never input.
        let orphans: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT t.{key}::text FROM {table} t
             WHERE t.{column} IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE p.id = t.{column})
             ORDER BY 1 LIMIT 1000"
        )))
        .fetch_all(&mut conn)
        .await?;
        foreign_keys.extend(
            orphans.into_iter().map(|(row,)| {
                format!("{table} row {row}: reference {column} to {parent} not found")
            }),
        );
    }
    conn.close().await?;
    if integrity.is_empty() {
        integrity.push("ok".to_owned());
    }
    Ok(IntegrityReport {
        integrity,
        foreign_keys,
    })
}

/// What is wrong with the applied migrations `(version, description, success, checksum)`
/// against the ones this hub carries; nothing when they are the same.
fn migration_findings(applied: &[(i64, String, bool, Vec<u8>)]) -> Vec<String> {
    let mut findings = Vec::new();
    for migration in POSTGRES_MIGRATIONS.iter() {
        match applied.iter().find(|(v, ..)| *v == migration.version) {
            None => findings.push(format!(
                "migration {} ({}) is not applied: start a hub to apply it",
                migration.version, migration.description
            )),
            Some((_, _, false, _)) => findings.push(format!(
                "migration {} ({}) failed half-way",
                migration.version, migration.description
            )),
            Some((_, _, true, checksum)) if checksum[..] != migration.checksum[..] => findings
                .push(format!(
                    "migration {} ({}) differs from this hub's (checksum)",
                    migration.version, migration.description
                )),
            Some(_) => {}
        }
    }
    for (version, description, ..) in applied {
        if !POSTGRES_MIGRATIONS.iter().any(|m| m.version == *version) {
            findings.push(format!(
                "migration {version} ({description}) is unknown to this hub (a newer hub's?)"
            ));
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{
        Pool,
        tests::{Backend, TestDb, temp_store, test_store},
    };

    #[tokio::test]
    async fn a_fresh_database_checks_ok_and_a_damaged_one_does_not() {
        let (dir, store) = temp_store().await;
        let report = check_database(dir.path()).await.unwrap();
        assert!(report.is_ok(), "{report:?}");

        // A module whose owner does not exist (written with foreign keys off).
        let Pool::Sqlite(pool) = &store.pool else {
            unreachable!()
        };
        let mut conn = pool.acquire().await.unwrap();
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

    /// On PostgreSQL: sound after migration; an orphan (written with triggers off, as a
    /// restore may) and a changed or missing migration are found; a database without the
    /// hub's schema, or none at all, is not ok.
    #[tokio::test]
    async fn postgres_checks_find_orphans_and_migration_drift() {
        let (db, store) = test_store(Backend::Postgres).await;
        let report = check_store(&db.database).await.unwrap();
        assert!(report.is_ok(), "{report:?}");

        let Pool::Postgres(pool) = &store.pool else {
            unreachable!()
        };
        let mut conn = pool.acquire().await.unwrap();
        // `replica` skips the foreign key triggers (a superuser's restore does the same).
        sqlx::query("SET session_replication_role = replica")
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
        sqlx::query("SET session_replication_role = DEFAULT")
            .execute(&mut *conn)
            .await
            .unwrap();
        let report = check_store(&db.database).await.unwrap();
        assert!(!report.is_ok());
        assert_eq!(report.integrity, ["ok"]);
        assert_eq!(
            report.foreign_keys,
            ["modules row MC-9: reference owner_id to users not found"]
        );

        sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 2")
            .execute(&mut *conn)
            .await
            .unwrap();
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 5")
            .execute(&mut *conn)
            .await
            .unwrap();
        drop(conn);
        let report = check_store(&db.database).await.unwrap();
        assert_eq!(report.integrity.len(), 2, "{report:?}");
        assert!(report.integrity[0].contains("migration 2"), "{report:?}");
        assert!(report.integrity[1].contains("migration 5"), "{report:?}");

        let empty = TestDb::new(Backend::Postgres).await;
        let report = check_store(&empty.database).await.unwrap();
        assert!(!report.is_ok());
        assert!(report.integrity[0].contains("no hub schema"), "{report:?}");
        let Database::Postgres(url) = &empty.database else {
            unreachable!()
        };
        let missing = Database::Postgres(format!("{}_missing", url));
        assert!(check_store(&missing).await.is_err());
    }
}
