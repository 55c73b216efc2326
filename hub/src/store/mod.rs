//! The database: SQLite in the data directory (the default), created and migrated on first
//! start, or a PostgreSQL server shared by several hubs ([`Database`]).
//!
//! Each query is written once, in SQL both dialects accept (`$1` placeholders, which sqlx's
//! SQLite driver binds by number; `RETURNING`; `ON CONFLICT`; booleans compared with `NOT`),
//! and run on whichever pool the store holds ([`with_pool!`]). Only what really differs is
//! branched: the migrations (`migrations/` for SQLite, `migrations-postgres/` for PostgreSQL,
//! same numbers and meaning, checked by a test), connection settings, `hub db check`, and
//! the classification of errors.
//!
//! With SQLite, WAL mode lets the `hub user add` / `hub module add` commands write while a hub
//! is running; a busy timeout makes the two wait for each other instead of failing. With
//! PostgreSQL, any number of hubs and CLIs share the database: migrations take sqlx's advisory
//! lock, and the registry change log is ordered by commit (migration 0003), so each hub's
//! [`crate::registry::RegistryWatcher`] applies every change, whoever made it.
//!
//! # Durability (docs/RELIABILITY.md, "Durability")
//! Each class of table gets its own level:
//! - [`Store`]'s pool (users, sessions, module registry: writes the API acknowledges): SQLite
//!   runs with `synchronous = FULL`, PostgreSQL with `synchronous_commit = on` (set on every
//!   connection, whatever the server's default): every commit is on disk (and, with a
//!   synchronous standby, replicated) before the API answers, so an acknowledged write survives
//!   a process kill *and* a power loss. It costs one fsync per commit, which these human-paced
//!   writes do not notice (measured in RELIABILITY.md).
//! - [`StateStore`] (module state snapshots, which modules re-report anyway) is one dedicated
//!   connection: SQLite with `synchronous = NORMAL`, PostgreSQL with `SET LOCAL
//!   synchronous_commit = off` in each batch's transaction. A commit reaches the OS (SQLite) or
//!   the WAL buffers flushed within `wal_writer_delay` (PostgreSQL); only a power loss or OS
//!   (or database server) crash may drop the last snapshots.

mod changes;
mod check;
pub(crate) mod database;
mod modules;
mod pending;
#[cfg(any(test, feature = "test-postgres"))]
pub mod postgres_server;
mod sessions;
mod state;
mod users;

use std::{path::Path, str::FromStr, time::Duration};

use sqlx::{
    PgPool, SqlitePool,
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

pub use changes::RegistryChange;
pub use check::{IntegrityReport, check_database, check_store};
pub use database::Database;
pub use modules::{ModulePatch, ModuleRecord, NewModule, hash_token};
pub use pending::PendingModule;
pub use sessions::SessionToken;
pub use state::{
    DirtyModules, ModuleSnapshot, STATE_FLUSH_INTERVAL, StateStore, StateWriter, StoredModuleState,
};
pub use users::{NewUser, User, UserPatch};

/// The SQLite migrations, embedded.
pub(crate) static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
/// The PostgreSQL migrations, embedded: the same versions and meaning as
/// [`SQLITE_MIGRATIONS`] in PostgreSQL's dialect (a test keeps the two in step).
pub(crate) static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate!("./migrations-postgres");

/// A connection pool of either backend. Queries are written once and run on either through
/// [`with_pool!`].
#[derive(Clone, Debug)]
pub(crate) enum Pool {
    /// A SQLite file.
    Sqlite(SqlitePool),
    /// A PostgreSQL database.
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to the concrete pool (`&SqlitePool` or `&PgPool`): the same
/// source compiles once per backend, so a query string and its binds are written once.
macro_rules! with_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::store::Pool::Sqlite($p) => $body,
            $crate::store::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use with_pool;

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
    /// `SQLITE_FULL`, SQLSTATE `53100` or `ENOSPC`: the disk (or `max_page_count`) is full.
    DiskFull,
    /// `SQLITE_READONLY`, SQLSTATE `25006` (a read-only transaction: a standby) or `EROFS`:
    /// the database or its directory cannot be written.
    ReadOnly,
    /// `SQLITE_IOERR` or SQLSTATE class `58`: the operating system failed a read or write.
    Io,
    /// `SQLITE_BUSY`/`SQLITE_LOCKED` after the busy timeout; on PostgreSQL a serialization
    /// failure, a deadlock, a lock timeout, or a server out of connections or starting.
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

/// Classifies a database error by backend (SQLite's primary result code, PostgreSQL's
/// SQLSTATE), or by the OS error of an I/O failure, so that the API answers a full or
/// read-only disk the same way (507, 503) whichever database the hub uses.
fn sqlx_error_kind(e: &sqlx::Error) -> StoreErrorKind {
    match e {
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                return sqlstate_kind(pg.code());
            }
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

/// PostgreSQL's SQLSTATE (appendix A of its manual) to the same kinds as SQLite's codes.
fn sqlstate_kind(code: &str) -> StoreErrorKind {
    match code {
        // disk_full
        "53100" => StoreErrorKind::DiskFull,
        // read_only_sql_transaction: a hot standby, or `default_transaction_read_only`.
        "25006" => StoreErrorKind::ReadOnly,
        // serialization_failure, deadlock_detected, lock_not_available; too_many_connections
        // and cannot_connect_now (the server is starting): retry later.
        "40001" | "40P01" | "55P03" | "53300" | "57P03" => StoreErrorKind::Busy,
        // Class 58, system errors: io_error, undefined_file, duplicate_file...
        c if c.starts_with("58") => StoreErrorKind::Io,
        _ => StoreErrorKind::Other,
    }
}

/// The connection settings every SQLite pool shares; only `synchronous` differs (module docs).
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
        .busy_timeout(Duration::from_secs(10))
        .pragma("cache_size", format!("-{SQLITE_CACHE_KIB}")))
}

/// Page cache per SQLite connection, KiB (SQLite's default is 2,000). The hub has five
/// connections, and each filled its cache with the registry and state pages it touched: at
/// 10,000 modules ~400 bytes of resident memory per module (BENCHMARKS.md). A miss is a read
/// from the OS's page cache, a few microseconds, on paths that are rare (handshakes, admin
/// pages) or batched (the state writer).
const SQLITE_CACHE_KIB: u32 = 256;

/// How long a PostgreSQL query may wait for a row lock before failing as `busy` (SQLite's
/// busy timeout, for the same human-paced writes): a stuck transaction of another hub or CLI
/// must not hang API requests.
const POSTGRES_LOCK_TIMEOUT: &str = "10s";

/// Connects to PostgreSQL with `synchronous_commit` set explicitly (module docs: a server or
/// database default of `off` must not weaken acknowledged writes).
async fn connect_postgres(
    url: &str,
    max_connections: u32,
    synchronous_commit: &str,
) -> Result<PgPool, sqlx::Error> {
    let options = Database::postgres_options(url)?.options([
        ("synchronous_commit", synchronous_commit),
        ("lock_timeout", POSTGRES_LOCK_TIMEOUT),
    ]);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
}

/// The database file in a data directory.
pub fn database_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("hub.db")
}

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
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
        Self::connect(&Database::in_data_dir(data_dir), session_ttl).await
    }

    /// Opens `database` and brings its schema up to date: a SQLite file is created if
    /// missing; a PostgreSQL database must exist. Hubs starting at once on one PostgreSQL
    /// database migrate one after the other (sqlx holds an advisory lock while it migrates).
    pub async fn connect(database: &Database, session_ttl: Duration) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: database.to_string(),
            source,
        };
        let pool = match database {
            Database::Sqlite(path) => {
                // FULL: these are the writes the API acknowledges (module docs).
                let options = connect_options(path, SqliteSynchronous::Full).map_err(open_err)?;
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(options)
                    .await
                    .map_err(open_err)?;
                SQLITE_MIGRATIONS.run(&pool).await?;
                Pool::Sqlite(pool)
            }
            Database::Postgres(url) => {
                // `on`: these are the writes the API acknowledges (module docs).
                let pool = connect_postgres(url, 4, "on").await.map_err(open_err)?;
                POSTGRES_MIGRATIONS.run(&pool).await?;
                Pool::Postgres(pool)
            }
        };
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

    /// Closes the pool's connections (a PostgreSQL server counts them; tests that start many
    /// stores give them back).
    pub async fn close(&self) {
        with_pool!(&self.pool, p => p.close().await)
    }
}

impl Store {
    /// Number of users and of registered modules (for stats).
    pub async fn counts(&self) -> Result<(u64, u64), StoreError> {
        let (users, modules): (i64, i64) = with_pool!(&self.pool, p => {
            sqlx::query_as("SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM modules)")
                .fetch_one(p)
                .await
        })?;
        Ok((users.max(0) as u64, modules.max(0) as u64))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A backend the store's tests run on (each test runs on both: [`backend_tests!`]).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Backend {
        Sqlite,
        Postgres,
    }

    /// A fresh, empty database of one backend; dropping it removes the SQLite file (a
    /// PostgreSQL database lives as long as the test process's throwaway server).
    pub(crate) struct TestDb {
        pub(crate) dir: tempfile::TempDir,
        pub(crate) database: Database,
    }

    impl TestDb {
        pub(crate) async fn new(backend: Backend) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let database = match backend {
                Backend::Sqlite => Database::in_data_dir(dir.path()),
                Backend::Postgres => postgres_server::PostgresServer::fresh_database().await,
            };
            Self { dir, database }
        }
    }

    /// Runs the async test function `$name(Backend)` once per backend, as
    /// `$name::sqlite` and `$name::postgres`.
    macro_rules! backend_tests {
        ($($name:ident),* $(,)?) => {$(
            mod $name {
                use crate::store::tests::Backend;
                #[tokio::test]
                async fn sqlite() {
                    super::$name(Backend::Sqlite).await
                }
                #[tokio::test]
                async fn postgres() {
                    super::$name(Backend::Postgres).await
                }
            }
        )*};
    }
    pub(crate) use backend_tests;

    pub(crate) async fn temp_store() -> (tempfile::TempDir, Store) {
        let (db, store) = test_store(Backend::Sqlite).await;
        (db.dir, store)
    }

    pub(crate) async fn test_store(backend: Backend) -> (TestDb, Store) {
        let db = TestDb::new(backend).await;
        let store = Store::connect(&db.database, Duration::from_secs(3600))
            .await
            .unwrap();
        (db, store)
    }

    backend_tests!(users_modules_sessions_round_trip);

    /// Both migration sets stay in step: the same versions with the same names, so a
    /// migration added for one backend must be written for the other.
    #[test]
    fn the_sqlite_and_postgres_migrations_are_the_same_list() {
        let list = |m: &sqlx::migrate::Migrator| -> Vec<(i64, String)> {
            m.iter()
                .map(|m| (m.version, m.description.to_string()))
                .collect()
        };
        assert_eq!(list(&SQLITE_MIGRATIONS), list(&POSTGRES_MIGRATIONS));
        assert!(SQLITE_MIGRATIONS.iter().count() >= 5);
    }

    /// SQLSTATEs map to the kinds SQLite's codes map to (the API answers 507 and 503 alike).
    #[test]
    fn postgres_sqlstates_map_to_the_same_kinds() {
        for (code, kind) in [
            ("53100", StoreErrorKind::DiskFull),
            ("25006", StoreErrorKind::ReadOnly),
            ("58030", StoreErrorKind::Io),
            ("58P01", StoreErrorKind::Io),
            ("40001", StoreErrorKind::Busy),
            ("40P01", StoreErrorKind::Busy),
            ("55P03", StoreErrorKind::Busy),
            ("23505", StoreErrorKind::Other),
            ("42P01", StoreErrorKind::Other),
        ] {
            assert_eq!(sqlstate_kind(code), kind, "{code}");
        }
    }

    /// A unique violation is a `Conflict` (409) on both; a read-only PostgreSQL transaction is
    /// `ReadOnly` (503), from a real server.
    #[tokio::test]
    async fn postgres_errors_from_a_real_server() {
        let (db, store) = test_store(Backend::Postgres).await;
        let new = || NewUser {
            email: "ada@example.com".into(),
            name: "Ada".into(),
            password: "x".into(),
            is_admin: false,
        };
        store.create_user(new()).await.unwrap();
        let mut upper = new();
        upper.email = "ADA@Example.com".into();
        assert!(matches!(
            store.create_user(upper).await,
            Err(StoreError::Conflict(_))
        ));
        let Database::Postgres(url) = &db.database else {
            unreachable!()
        };
        let options = Database::postgres_options(url)
            .unwrap()
            .options([("default_transaction_read_only", "on")]);
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        let read_only = Store {
            pool: Pool::Postgres(pool),
            ..store.clone()
        };
        let e = read_only.create_user(new()).await.unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::ReadOnly, "{e}");
        let unreachable = Store::connect(
            &Database::Postgres("postgres://hub@127.0.0.1:1/none".into()),
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
        assert!(
            unreachable.to_string().contains("127.0.0.1:1"),
            "{unreachable}"
        );
    }

    /// Hubs starting at once on one PostgreSQL database migrate one after the other (sqlx's
    /// advisory lock): none fails, and the schema is there once.
    #[tokio::test]
    async fn concurrent_migrations_on_postgres_do_not_clash() {
        let db = TestDb::new(Backend::Postgres).await;
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let database = db.database.clone();
                tokio::spawn(
                    async move { Store::connect(&database, Duration::from_secs(60)).await },
                )
            })
            .collect();
        let mut stores = Vec::new();
        for open in opens {
            stores.push(open.await.unwrap().expect("concurrent start migrates"));
        }
        let report = check_store(&db.database).await.unwrap();
        assert!(report.is_ok(), "{report:?}");
        for store in &stores {
            store.close().await;
        }
    }

    /// The durability levels of the module docs on PostgreSQL: `synchronous_commit = on` on
    /// every connection of the main pool and of the snapshot writer's (which lowers it per
    /// transaction only).
    #[tokio::test]
    async fn postgres_commits_synchronously_on_every_connection() {
        let (db, store) = test_store(Backend::Postgres).await;
        let Pool::Postgres(pool) = &store.pool else {
            unreachable!()
        };
        let mut held = Vec::new();
        for _ in 0..pool.options().get_max_connections() {
            let mut conn = pool.acquire().await.unwrap();
            let (level,): (String,) = sqlx::query_as("SHOW synchronous_commit")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(level, "on", "main pool connection {}", held.len());
            held.push(conn);
        }
        let states = StateStore::connect(&db.database).await.unwrap();
        let Pool::Postgres(pool) = states.pool() else {
            unreachable!()
        };
        assert_eq!(pool.options().get_max_connections(), 1);
        let (level,): (String,) = sqlx::query_as("SHOW synchronous_commit")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(level, "on", "outside a snapshot batch");
    }

    /// The durability levels of the module docs on SQLite, on every connection: FULL (2) on
    /// each of the main pool's connections (held at once, so that each is a different one),
    /// NORMAL (1) on the snapshot writer's.
    #[tokio::test]
    async fn the_main_pool_syncs_fully_and_the_snapshot_connection_normally() {
        let (dir, store) = temp_store().await;
        let Pool::Sqlite(pool) = &store.pool else {
            unreachable!()
        };
        let mut held = Vec::new();
        for _ in 0..pool.options().get_max_connections() {
            let mut conn = pool.acquire().await.unwrap();
            let (level,): (i64,) = sqlx::query_as("PRAGMA synchronous")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(level, 2, "FULL on main pool connection {}", held.len());
            held.push(conn);
        }
        assert_eq!(held.len(), 4);
        let states = StateStore::open(dir.path()).await.unwrap();
        let Pool::Sqlite(pool) = states.pool() else {
            unreachable!()
        };
        assert_eq!(pool.options().get_max_connections(), 1);
        let (level,): (i64,) = sqlx::query_as("PRAGMA synchronous")
            .fetch_one(pool)
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

    async fn users_modules_sessions_round_trip(backend: Backend) {
        let (_db, store) = test_store(backend).await;
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
        with_pool!(&store.pool, p => {
            sqlx::query("UPDATE sessions SET last_seen_at = last_seen_at - 100000")
                .execute(p)
                .await
                .map(drop)
        })
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
