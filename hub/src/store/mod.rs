//! The embedded database: SQLite in the data directory, created and migrated on first start.
//!
//! WAL mode lets the `hub user add` / `hub module add` commands write while a hub is running; a
//! busy timeout makes the two wait for each other instead of failing.
//!
//! # Durability (docs/RELIABILITY.md, "Durability")
//! SQLite's `synchronous` level is per connection, so each class of table gets its own:
//! - [`Store`]'s pool (users, sessions, module registry: writes the API acknowledges) runs with
//!   `synchronous = FULL`: every commit is fsynced before the API answers, so an acknowledged
//!   write survives a process kill *and* a power loss. It costs one fsync per commit, which
//!   these human-paced writes do not notice (measured in RELIABILITY.md).
//! - [`StateStore`] (module state snapshots, which modules re-report anyway) is one dedicated
//!   connection with `synchronous = NORMAL`: a commit reaches the OS (it survives `kill -9`),
//!   only a power loss or OS crash may drop the last snapshots.

mod changes;
mod check;
mod modules;
mod pending;
mod sessions;
mod state;
mod users;

use std::{path::Path, str::FromStr, time::Duration};

use sqlx::{
    SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

pub use changes::RegistryChange;
pub use check::{IntegrityReport, check_database};
pub use modules::{ModulePatch, ModuleRecord, NewModule, hash_token};
pub use pending::PendingModule;
pub use sessions::SessionToken;
pub use state::{
    DirtyModules, ModuleSnapshot, STATE_FLUSH_INTERVAL, StateStore, StateWriter, StoredModuleState,
};
pub use users::{NewUser, User, UserPatch};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("cannot open database {path}: {source}")]
    Open {
        /// The database file.
        path: String,
        /// Why.
        source: sqlx::Error,
    },
    /// Migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    /// A stored value could not be read back (e.g. a snapshot's readings).
    #[error("bad stored value: {0}")]
    Decode(String),
    /// A unique key is already taken.
    #[error("{0} already exists")]
    Conflict(String),
    /// Password hashing failed.
    #[error("password hashing failed")]
    Hash,
}

/// Why a database operation failed, coarsely: what an operator must do differs (free disk
/// space, remount the data directory read-write, or read the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// `SQLITE_FULL` or `ENOSPC`: the disk (or `max_page_count`) is full.
    DiskFull,
    /// `SQLITE_READONLY` or `EROFS`: the database or its directory cannot be written.
    ReadOnly,
    /// `SQLITE_IOERR`: the operating system failed a read or write.
    Io,
    /// `SQLITE_BUSY`/`SQLITE_LOCKED` after the busy timeout.
    Busy,
    /// Anything else (a bug, corruption, a constraint).
    Other,
}

impl StoreErrorKind {
    /// The label of `mc_store_errors_total{kind}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DiskFull => "disk_full",
            Self::ReadOnly => "read_only",
            Self::Io => "io",
            Self::Busy => "busy",
            Self::Other => "other",
        }
    }
}

impl StoreError {
    /// What kind of failure this is (see [`StoreErrorKind`]).
    pub fn kind(&self) -> StoreErrorKind {
        match self {
            Self::Query(e) | Self::Open { source: e, .. } => sqlx_error_kind(e),
            _ => StoreErrorKind::Other,
        }
    }
}

/// Classifies by SQLite's primary result code (the low byte of the extended code sqlx gives),
/// or by the OS error of an I/O failure.
fn sqlx_error_kind(e: &sqlx::Error) -> StoreErrorKind {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
            match code & 0xff {
                13 => StoreErrorKind::DiskFull,
                8 => StoreErrorKind::ReadOnly,
                10 => StoreErrorKind::Io,
                5 | 6 => StoreErrorKind::Busy,
                _ => StoreErrorKind::Other,
            }
        }
        sqlx::Error::Io(io) => match io.raw_os_error() {
            Some(28) => StoreErrorKind::DiskFull,
            Some(30) => StoreErrorKind::ReadOnly,
            _ => StoreErrorKind::Io,
        },
        _ => StoreErrorKind::Other,
    }
}

/// The connection settings every pool shares; only `synchronous` differs (module docs).
fn connect_options(
    path: &Path,
    synchronous: SqliteSynchronous,
) -> Result<SqliteConnectOptions, sqlx::Error> {
    Ok(SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10)))
}

/// The database file in a data directory.
pub fn database_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("hub.db")
}

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    /// Sessions older than this are refused (absolute expiry).
    session_ttl: Duration,
    /// Sessions unused for longer than this are refused (idle expiry).
    session_idle: Duration,
}

/// Default idle expiry of sessions.
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(24 * 3600);

/// Seconds since the Unix epoch, as stored in the database.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating and migrating if needed) `hub.db` in `data_dir`.
    pub async fn open(data_dir: &Path, session_ttl: Duration) -> Result<Self, StoreError> {
        let path = database_path(data_dir);
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        // FULL: these are the writes the API acknowledges (module docs).
        let options = connect_options(&path, SqliteSynchronous::Full).map_err(open_err)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self {
            pool,
            session_ttl,
            session_idle: DEFAULT_SESSION_IDLE,
        })
    }

    /// The same store with another idle expiry for sessions.
    pub fn with_session_idle(mut self, idle: Duration) -> Self {
        self.session_idle = idle;
        self
    }
}

impl Store {
    /// Number of users and of registered modules (for stats).
    pub async fn counts(&self) -> Result<(u64, u64), StoreError> {
        let (users, modules): (i64, i64) =
            sqlx::query_as("SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM modules)")
                .fetch_one(&self.pool)
                .await?;
        Ok((users.max(0) as u64, modules.max(0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) async fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Duration::from_secs(3600))
            .await
            .unwrap();
        (dir, store)
    }

    /// The durability levels of the module docs, on every connection: FULL (2) on each of the
    /// main pool's connections (held at once, so that each is a different one), NORMAL (1) on
    /// the snapshot writer's.
    #[tokio::test]
    async fn the_main_pool_syncs_fully_and_the_snapshot_connection_normally() {
        let (dir, store) = temp_store().await;
        let mut held = Vec::new();
        for _ in 0..store.pool.options().get_max_connections() {
            let mut conn = store.pool.acquire().await.unwrap();
            let (level,): (i64,) = sqlx::query_as("PRAGMA synchronous")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(level, 2, "FULL on main pool connection {}", held.len());
            held.push(conn);
        }
        assert_eq!(held.len(), 4);
        let states = StateStore::open(dir.path()).await.unwrap();
        assert_eq!(states.pool().options().get_max_connections(), 1);
        let (level,): (i64,) = sqlx::query_as("PRAGMA synchronous")
            .fetch_one(states.pool())
            .await
            .unwrap();
        assert_eq!(level, 1, "NORMAL on the snapshot connection");
    }

    /// The cost of `synchronous = FULL` against NORMAL per commit, on the disk of
    /// `MC_MEASURE_DIR` (default: the temp dir). Figures in docs/RELIABILITY.md. Run with
    /// `cargo test -p mc-hub --release synchronous_cost -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore = "a measurement, not a test"]
    async fn synchronous_cost() {
        let base = std::env::var_os("MC_MEASURE_DIR").map(std::path::PathBuf::from);
        for level in [SqliteSynchronous::Normal, SqliteSynchronous::Full] {
            let dir = match &base {
                Some(b) => tempfile::tempdir_in(b).unwrap(),
                None => tempfile::tempdir().unwrap(),
            };
            let options = connect_options(&dir.path().join("m.db"), level).unwrap();
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .unwrap();
            sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
                .execute(&pool)
                .await
                .unwrap();
            let n = 500u32;
            let start = std::time::Instant::now();
            for _ in 0..n {
                sqlx::query("INSERT INTO t (v) VALUES (?)")
                    .bind("x".repeat(200))
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            let per_commit = start.elapsed() / n;
            println!("synchronous={level:?}: {per_commit:?} per commit ({n} commits)");
        }
    }

    #[tokio::test]
    async fn users_modules_sessions_round_trip() {
        let (_dir, store) = temp_store().await;
        let user = store
            .create_user(NewUser {
                email: "ada@example.com".into(),
                name: "Ada".into(),
                password: "correct horse".into(),
                is_admin: false,
            })
            .await
            .unwrap();
        assert!(
            store
                .verify_login("ADA@example.com", "correct horse")
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .verify_login("ada@example.com", "wrong")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .verify_login("nobody@example.com", "x")
                .await
                .unwrap()
                .is_none()
        );
        let dup = store
            .create_user(NewUser {
                email: "ada@example.com".into(),
                name: "Other".into(),
                password: "x".into(),
                is_admin: false,
            })
            .await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))));

        let (module, token) = store
            .create_module(NewModule {
                id: "MC-1001-STN".parse().unwrap(),
                name: "Roof".into(),
                kind: "weather".into(),
                owner_email: Some("ada@example.com".into()),
                heartbeat_timeout: None,
            })
            .await
            .unwrap();
        assert_eq!(module.owner_id, Some(user.id));
        let found = store.module(&module.id).await.unwrap().unwrap();
        assert!(found.token_matches(&token));
        assert!(!found.token_matches("wrong"));

        let session = store.create_session(user.id).await.unwrap();
        let back = store.session_user(session.as_str()).await.unwrap().unwrap();
        assert_eq!(back.id, user.id);
        // Idle expiry: a session unused for longer than the idle TTL is refused.
        sqlx::query("UPDATE sessions SET last_seen_at = last_seen_at - 100000")
            .execute(&store.pool)
            .await
            .unwrap();
        assert!(
            store
                .session_user(session.as_str())
                .await
                .unwrap()
                .is_none()
        );
        let fresh = store.create_session(user.id).await.unwrap();
        assert!(store.session_user(fresh.as_str()).await.unwrap().is_some());
        store.delete_session(session.as_str()).await.unwrap();
        assert!(
            store
                .session_user(session.as_str())
                .await
                .unwrap()
                .is_none()
        );
    }
}
