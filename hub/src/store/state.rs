//! Module state snapshots: each module's last known readings, revision, last-seen time and
//! hello data, so that a restarted hub shows them (marked stale) before the modules report
//! again.
//!
//! The tracker owns the live state; it marks a module *dirty* when it hears from it and hands
//! the dirty modules' snapshots to one [`StateWriter`] task every [`STATE_FLUSH_INTERVAL`],
//! which writes them in one transaction. So the hot path (one message) costs a set insert, and
//! the disk sees one commit per second whatever the message rate. At most one batch waits for
//! the writer (a channel of one): while the writer is slow the tracker keeps the modules dirty
//! and sends their newest state next time, so memory stays bounded by the number of modules.
//!
//! A batch that fails (disk full, read-only disk) hands its module ids back ([`Unsaved`]): the
//! tracker marks them dirty again and sends their then current state once a backoff has passed
//! (1 s, doubling up to [`MAX_RETRY_BACKOFF`]). Without that, a module that went quiet after a
//! failed batch would never be written again, and a restart would bring back older readings,
//! `rev` and last-seen time. The ids go back, not the snapshots: what is retried is always the
//! newest state, a module removed meanwhile is not resurrected, and the set of ids is bounded by
//! the number of modules like the dirty set.
//!
//! The writer has its own connection, with `synchronous = NORMAL` on SQLite and
//! `synchronous_commit = off` for each batch's transaction on PostgreSQL: a snapshot is worth
//! less than an fsync per second (it is re-reported by the module), and it survives a kill of
//! the hub process as it is (see the [store docs](super)).

use std::{
    collections::HashSet,
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use mc_protocol::ModuleId;
use sqlx::sqlite::{SqlitePoolOptions, SqliteSynchronous};
use tokio::{sync::mpsc, time::Instant};

use super::{Database, Pool, StoreError, connect_options, connect_postgres, unix_now, with_pool};
use crate::{metrics::Metrics, process};

/// How often the tracker hands dirty module states to the writer.
pub const STATE_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait before modules of failed batches are sent again: a disk that stays full is
/// tried twice a minute, not every second (each failure is logged and counted).
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(30);

/// A module's state as the tracker hands it to the writer.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleSnapshot {
    /// The module.
    pub module_id: ModuleId,
    /// Its readings, in first-seen order (the dashboard's order).
    pub readings: Vec<(String, f32)>,
    /// The revision of the readings (clients detect gaps with it; it continues after restart).
    pub rev: u64,
    /// When the hub last heard from it.
    pub last_seen: Option<SystemTime>,
    /// Firmware version from its last hello.
    pub fw: Option<String>,
    /// Heartbeat interval from its last hello, in milliseconds.
    pub heartbeat_ms: Option<u32>,
}

/// A snapshot read back at startup, with the owner the registry has for the module now.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredModuleState {
    /// The saved state.
    pub snapshot: ModuleSnapshot,
    /// The module's owner (events about it go to them and to admins).
    pub owner_id: Option<i64>,
}

/// The snapshot table, over its own connection (see the module docs).
#[derive(Clone, Debug)]
pub struct StateStore {
    pool: Pool,
}

/// Name prefix of the writer's SQLite thread (sqlx runs each SQLite connection on a thread of
/// its own), by which [`lower_writer_priority`] finds it. Linux keeps 15 bytes of a name.
const WRITER_THREAD: &str = "mc-state-db";

/// Moves the writer's SQLite thread to the background ([`process::background_threads`]):
/// its batch, once a second, used to take the core from the realtime path for tens of
/// milliseconds on a busy hub. Not fatal when it fails: the batches are then as before.
fn lower_writer_priority() {
    match process::background_threads(WRITER_THREAD) {
        Ok(0) if cfg!(target_os = "linux") => {
            tracing::warn!(
                "the state writer's database thread was not found: it keeps its priority"
            );
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot lower the state writer's priority");
        }
    }
}

impl StateStore {
    /// Opens a connection to the database of `data_dir`, which [`super::Store::open`] has
    /// created and migrated.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::connect(&Database::in_data_dir(data_dir)).await
    }

    /// Opens a connection to `database`, which [`super::Store::connect`] has created and
    /// migrated.
    pub async fn connect(database: &Database) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: database.to_string(),
            source,
        };
        let pool = match database {
            Database::Sqlite(path) => {
                // NORMAL: snapshots are re-reported by the modules (module docs).
                let options = connect_options(path, SqliteSynchronous::Normal)
                    .map_err(open_err)?
                    .create_if_missing(false)
                    .thread_name(|id| format!("{WRITER_THREAD}-{id}"));
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    // each connection the pool opens (it may replace one) has a new thread
                    .after_connect(|_, _| {
                        lower_writer_priority();
                        Box::pin(async { Ok(()) })
                    })
                    .connect_with(options)
                    .await
                    .map_err(open_err)?;
                Pool::Sqlite(pool)
            }
            // `on` for the connection; each batch lowers it for its own transaction (`write`).
            Database::Postgres(url) => {
                Pool::Postgres(connect_postgres(url, 1, "on").await.map_err(open_err)?)
            }
        };
        Ok(Self { pool })
    }

    /// Writes `batch` in one transaction. A module removed from the registry in the meantime
    /// is skipped (its row went with it, by the foreign key), not an error.
    ///
    /// Rows go [`ROWS_PER_STATEMENT`] to a statement: one round trip to the database thread
    /// per row cost more than the rows themselves (a sixth of the hub's CPU per message at
    /// 1,000 modules, BENCHMARKS.md). The sizes used are powers of two, so that the few
    /// statements there are stay prepared in the connection's cache.
    pub async fn write(&self, batch: &[ModuleSnapshot]) -> Result<(), StoreError> {
        let now = unix_now();
        // One row per module (the last snapshot wins): an upsert may not touch a row twice.
        let mut seen = HashSet::with_capacity(batch.len());
        let mut rows = Vec::with_capacity(batch.len());
        for snapshot in batch.iter().rev() {
            if !seen.insert(&snapshot.module_id) {
                continue;
            }
            let readings = serde_json::to_string(&snapshot.readings)
                .map_err(|e| StoreError::Decode(format!("readings: {e}")))?;
            rows.push((snapshot, readings));
        }
        rows.reverse();
        let postgres = matches!(self.pool, Pool::Postgres(_));
        with_pool!(&self.pool, p => async {
            let mut tx = p.begin().await?;
            if postgres {
                // The durability of SQLite's NORMAL (module docs), for this transaction only.
                sqlx::query("SET LOCAL synchronous_commit = off")
                    .execute(&mut *tx)
                    .await?;
            }
            let mut rest = &rows[..];
            while !rest.is_empty() {
                let n = statement_rows(rest.len());
                let (chunk, after) = rest.split_at(n);
                rest = after;
                let mut query = sqlx::query(upsert_statement(n));
                for (snapshot, readings) in chunk {
                    query = query
                        .bind(snapshot.module_id.as_str())
                        .bind(readings.as_str())
                        .bind(i64::try_from(snapshot.rev).unwrap_or(i64::MAX))
                        .bind(snapshot.last_seen.map(unix_millis))
                        .bind(snapshot.fw.as_deref())
                        .bind(snapshot.heartbeat_ms.map(i64::from));
                }
                query.bind(now).execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await)?;
        Ok(())
    }

    /// Every saved snapshot of a registered module, with its current owner. A row that does
    /// not decode is logged and skipped: one bad row must not keep the hub from starting.
    pub async fn load(&self) -> Result<Vec<StoredModuleState>, StoreError> {
        type Row = (
            String,
            String,
            i64,
            Option<i64>,
            Option<String>,
            Option<i64>,
            Option<i64>,
        );
        let rows: Vec<Row> = with_pool!(&self.pool, p => {
            sqlx::query_as(
                "SELECT s.module_id, s.readings, s.rev, s.last_seen_ms, s.fw, s.heartbeat_ms,
                        m.owner_id
                 FROM module_state s JOIN modules m ON m.id = s.module_id",
            )
            .fetch_all(p)
            .await
        })?;
        let mut states = Vec::with_capacity(rows.len());
        for (id, readings, rev, last_seen_ms, fw, heartbeat_ms, owner_id) in rows {
            let decoded = ModuleId::new(&id)
                .map_err(|e| format!("module id {id:?}: {e}"))
                .and_then(|module_id| {
                    let readings: Vec<(String, f32)> = serde_json::from_str(&readings)
                        .map_err(|e| format!("readings of {id}: {e}"))?;
                    Ok(ModuleSnapshot {
                        module_id,
                        readings,
                        rev: u64::try_from(rev).unwrap_or(0),
                        last_seen: last_seen_ms
                            .and_then(|ms| u64::try_from(ms).ok())
                            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
                        fw,
                        heartbeat_ms: heartbeat_ms.and_then(|ms| u32::try_from(ms).ok()),
                    })
                });
            match decoded {
                Ok(snapshot) => states.push(StoredModuleState { snapshot, owner_id }),
                Err(e) => tracing::warn!(error = %e, "skipping a saved module state"),
            }
        }
        Ok(states)
    }

    /// The connection, for tests (e.g. to cap `max_page_count`).
    #[cfg(test)]
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }
}

fn unix_millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Most rows one upsert statement carries (7 parameters each: well under SQLite's 32,766 and
/// PostgreSQL's 65,535).
const ROWS_PER_STATEMENT: usize = 256;

/// Rows for the next statement of `left`: the largest power of two that fits, at most
/// [`ROWS_PER_STATEMENT`] (so at most 9 distinct statements, all cached once prepared).
fn statement_rows(left: usize) -> usize {
    let n = left.min(ROWS_PER_STATEMENT);
    1 << n.ilog2()
}

/// The upsert of `rows` rows (a power of two up to [`ROWS_PER_STATEMENT`]), built once.
fn upsert_statement(rows: usize) -> &'static str {
    static STATEMENTS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        (0..=ROWS_PER_STATEMENT.ilog2())
            .map(|power| upsert_sql(1 << power))
            .collect()
    });
    STATEMENTS[rows.ilog2() as usize].as_str()
}

/// The upsert of `rows` snapshots: `$1..$6` the first row's values, and so on; the last
/// parameter is `updated_at`. The same text on SQLite and PostgreSQL (a CTE of `VALUES` with
/// named columns; the `WHERE` also keeps SQLite's upsert unambiguous after a `SELECT`).
fn upsert_sql(rows: usize) -> String {
    use std::fmt::Write as _;
    let mut sql = String::from(
        "WITH v (module_id, readings, rev, last_seen_ms, fw, heartbeat_ms) AS (VALUES ",
    );
    for row in 0..rows {
        let p = row * 6;
        let _ = write!(
            sql,
            "{}(${}, ${}, ${}, ${}, ${}, ${})",
            if row == 0 { "" } else { ", " },
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5,
            p + 6
        );
    }
    let _ = write!(
        sql,
        ") INSERT INTO module_state
             (module_id, readings, rev, last_seen_ms, fw, heartbeat_ms, updated_at)
         SELECT v.module_id, v.readings, v.rev, v.last_seen_ms, v.fw, v.heartbeat_ms, ${}
         FROM v WHERE EXISTS (SELECT 1 FROM modules WHERE id = v.module_id)
         ON CONFLICT (module_id) DO UPDATE SET
             readings = excluded.readings, rev = excluded.rev,
             last_seen_ms = excluded.last_seen_ms, fw = excluded.fw,
             heartbeat_ms = excluded.heartbeat_ms, updated_at = excluded.updated_at",
        rows * 6 + 1
    );
    sql
}

/// The task that writes the tracker's batches (see the module docs).
pub struct StateWriter {
    /// Where batches are written.
    store: StateStore,
    /// Batches from the tracker; the task ends when the tracker drops its sender, after the
    /// last batch (the tracker flushes once more when it stops), so a graceful shutdown loses
    /// nothing.
    batches: mpsc::Receiver<Vec<ModuleSnapshot>>,
    /// Where the modules of a failed batch go back to the tracker.
    unsaved: Unsaved,
    /// `mc_store_errors_total{kind}` counts failed batches.
    metrics: Metrics,
}

impl StateWriter {
    /// A writer to `store` and the tracker's side of it ([`DirtyModules`], for
    /// [`crate::tracker::Tracker::persist_states`]), joined by a channel of one batch.
    pub fn new(store: StateStore, metrics: Metrics) -> (Self, DirtyModules) {
        let (batches, rx) = mpsc::channel(1);
        let unsaved = Unsaved::default();
        let writer = Self {
            store,
            batches: rx,
            unsaved: unsaved.clone(),
            metrics,
        };
        let dirty = DirtyModules {
            dirty: foldhash::HashSet::default(),
            batches,
            unsaved,
        };
        (writer, dirty)
    }

    /// Writes batches until the tracker is gone. A failed batch (disk full, read-only disk) is
    /// logged and counted, and its modules go back to the tracker (module docs): the realtime
    /// path never waits for the disk, and nothing is lost for good once the disk works again.
    pub async fn run(mut self) {
        while let Some(batch) = self.batches.recv().await {
            match self.store.write(&batch).await {
                Ok(()) => self.unsaved.saved(),
                Err(e) => {
                    let kind = e.kind();
                    self.metrics.store_error(kind.as_str());
                    let backoff = self
                        .unsaved
                        .failed(batch.iter().map(|s| &s.module_id), Instant::now());
                    tracing::warn!(
                        error = %e,
                        kind = kind.as_str(),
                        modules = batch.len(),
                        retry_in = ?backoff,
                        "module state snapshot not saved"
                    );
                }
            }
        }
    }
}

/// Modules whose snapshot the writer could not save, on their way back to the tracker's dirty
/// set, and when to try again. Shared by the writer and [`DirtyModules`] behind a short lock
/// (never held across an `.await`), taken once per batch and once per flush.
#[derive(Debug, Clone, Default)]
pub(crate) struct Unsaved(Arc<Mutex<UnsavedState>>);

#[derive(Debug, Default)]
struct UnsavedState {
    /// To be marked dirty again; each module at most once.
    modules: HashSet<ModuleId>,
    /// Batches failed in a row: sets the backoff.
    failures: u32,
    /// No batch is sent before this (the disk failed just now).
    retry_at: Option<Instant>,
}

impl Unsaved {
    /// A poisoned lock is taken as is: each change under it is a few set operations.
    fn lock(&self) -> MutexGuard<'_, UnsavedState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A batch of `modules` failed at `now`: they go back, and the next batch waits for the
    /// returned backoff.
    fn failed<'a>(&self, modules: impl Iterator<Item = &'a ModuleId>, now: Instant) -> Duration {
        let mut state = self.lock();
        state.modules.extend(modules.cloned());
        state.failures = state.failures.saturating_add(1);
        let backoff = STATE_FLUSH_INTERVAL
            .saturating_mul(1 << state.failures.saturating_sub(1).min(16))
            .min(MAX_RETRY_BACKOFF);
        state.retry_at = Some(now + backoff);
        backoff
    }

    /// A batch was written: the disk works, no more backoff.
    fn saved(&self) {
        let mut state = self.lock();
        state.failures = 0;
        state.retry_at = None;
    }
}

/// The tracker's side of persistence: which modules changed since the last flush, and the
/// channel to the [`StateWriter`]. Marking costs one set lookup per message; the set holds each
/// module at most once, so it is bounded by the number of modules.
#[derive(Debug)]
pub struct DirtyModules {
    dirty: foldhash::HashSet<ModuleId>,
    batches: mpsc::Sender<Vec<ModuleSnapshot>>,
    /// Modules of failed batches, merged back into `dirty` at each flush.
    unsaved: Unsaved,
}

impl DirtyModules {
    /// `module`'s state changed (a message arrived).
    pub fn mark(&mut self, module: &ModuleId) {
        if !self.dirty.contains(module) {
            self.dirty.insert(module.clone());
        }
    }

    /// `module` was unregistered: nothing to write for it.
    pub fn forget(&mut self, module: &ModuleId) {
        self.dirty.remove(module);
        self.unsaved.lock().modules.remove(module);
    }

    /// Takes back the modules of failed batches; false while their backoff runs (nothing is
    /// sent then, everything stays dirty).
    fn take_unsaved(&mut self, now: Instant) -> bool {
        let mut unsaved = self.unsaved.lock();
        self.dirty.extend(unsaved.modules.drain());
        unsaved.retry_at.is_none_or(|at| now >= at)
    }

    /// Hands the dirty modules' current state (`snapshot`) to the writer, unless it is still
    /// busy with the previous batch or backing off after a failed one: then they stay dirty for
    /// the next flush, and newer state replaces what would have waited.
    pub fn flush(&mut self, snapshot: impl Fn(&ModuleId) -> Option<ModuleSnapshot>) {
        if !self.take_unsaved(Instant::now()) || self.dirty.is_empty() {
            return;
        }
        match self.batches.try_reserve() {
            Ok(permit) => permit.send(self.dirty.drain().filter_map(|m| snapshot(&m)).collect()),
            Err(mpsc::error::TrySendError::Full(())) => {
                tracing::debug!(
                    modules = self.dirty.len(),
                    "state writer busy: flush deferred"
                );
            }
            Err(mpsc::error::TrySendError::Closed(())) => self.dirty.clear(),
        }
    }

    /// The last flush, at shutdown: waits for the writer to take it, backoff or not (one last
    /// try: the disk may work again).
    pub async fn flush_final(&mut self, snapshot: impl Fn(&ModuleId) -> Option<ModuleSnapshot>) {
        self.take_unsaved(Instant::now());
        if self.dirty.is_empty() {
            return;
        }
        if let Ok(permit) = self.batches.reserve().await {
            permit.send(self.dirty.drain().filter_map(|m| snapshot(&m)).collect());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{
        NewModule, StoreErrorKind,
        tests::{Backend, backend_tests, temp_store, test_store},
    };

    fn snapshot(id: &str, rev: u64, t: f32) -> ModuleSnapshot {
        ModuleSnapshot {
            module_id: ModuleId::new(id).unwrap(),
            readings: vec![("temperature".into(), t), ("humidity".into(), 40.5)],
            rev,
            last_seen: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            fw: Some("1.2.3".into()),
            heartbeat_ms: Some(5000),
        }
    }

    async fn register(store: &super::super::Store, id: &str) {
        store
            .create_module(NewModule {
                id: id.parse().unwrap(),
                name: id.into(),
                kind: "station".into(),
                owner_email: None,
                heartbeat_timeout: None,
            })
            .await
            .unwrap();
    }

    backend_tests!(
        snapshots_round_trip_and_follow_the_registry,
        the_modules_of_a_failed_batch_are_written_once_the_disk_works_again,
        a_batch_spanning_several_statements_writes_every_row_once,
    );

    #[test]
    fn statements_carry_powers_of_two_up_to_the_cap() {
        let sizes = |mut left: usize| {
            let mut out = Vec::new();
            while left > 0 {
                let n = statement_rows(left);
                out.push(n);
                left -= n;
            }
            out
        };
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(45), [32, 8, 4, 1]);
        assert_eq!(sizes(256), [256]);
        assert_eq!(sizes(1000), [256, 256, 256, 128, 64, 32, 8]);
        let sql = upsert_sql(2);
        assert!(
            sql.contains("($1, $2, $3, $4, $5, $6), ($7, $8, $9, $10, $11, $12)"),
            "{sql}"
        );
        assert!(sql.contains("$13"), "updated_at comes last: {sql}");
    }

    /// 45 rows (statements of 32, 8, 4 and 1), with an unregistered module, a module twice
    /// (the later snapshot wins) and empty optional fields.
    async fn a_batch_spanning_several_statements_writes_every_row_once(backend: Backend) {
        let (db, store) = test_store(backend).await;
        let ids: Vec<String> = (0..44).map(|i| format!("MC-{}", 100 + i)).collect();
        for id in &ids {
            register(&store, id).await;
        }
        let mut batch: Vec<ModuleSnapshot> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| snapshot(id, i as u64 + 1, i as f32))
            .collect();
        batch[7].fw = None;
        batch[7].last_seen = None;
        batch[7].heartbeat_ms = None;
        batch.push(snapshot("MC-GONE", 1, 1.0));
        batch.push(snapshot("MC-100", 99, 99.5));
        let states = StateStore::connect(&db.database).await.unwrap();
        states.write(&batch).await.unwrap();
        let mut loaded: Vec<ModuleSnapshot> = states
            .load()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.snapshot)
            .collect();
        loaded.sort_by(|a, b| a.module_id.as_str().cmp(b.module_id.as_str()));
        let mut expected: Vec<ModuleSnapshot> = batch[1..44].to_vec();
        expected.push(snapshot("MC-100", 99, 99.5));
        expected.sort_by(|a, b| a.module_id.as_str().cmp(b.module_id.as_str()));
        assert_eq!(loaded, expected);
    }

    async fn snapshots_round_trip_and_follow_the_registry(backend: Backend) {
        let (db, store) = test_store(backend).await;
        register(&store, "MC-1").await;
        register(&store, "MC-2").await;
        let states = StateStore::connect(&db.database).await.unwrap();
        states
            .write(&[snapshot("MC-1", 3, 21.5), snapshot("MC-GONE", 1, 1.0)])
            .await
            .unwrap();
        states.write(&[snapshot("MC-1", 4, 22.25)]).await.unwrap();
        let loaded = states.load().await.unwrap();
        assert_eq!(loaded.len(), 1, "unregistered modules are skipped");
        assert_eq!(loaded[0].snapshot, snapshot("MC-1", 4, 22.25));
        assert_eq!(loaded[0].owner_id, None);

        store.delete_module(&"MC-1".parse().unwrap()).await.unwrap();
        assert!(
            states.load().await.unwrap().is_empty(),
            "removed with the module"
        );
    }

    /// The writer's SQLite thread runs in the background class; the store's other
    /// connections (logins, the registry) keep theirs.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_writers_database_thread_runs_in_the_background() {
        let (dir, _store) = temp_store().await;
        let states = StateStore::open(dir.path()).await.unwrap();
        states.write(&[]).await.unwrap();
        let threads: Vec<(String, Option<i32>)> = process::threads()
            .unwrap()
            .into_iter()
            .map(|(name, tid)| (name, process::tests::thread_policy(tid)))
            .collect();
        let writers: Vec<_> = threads
            .iter()
            .filter(|(name, _)| name.starts_with(WRITER_THREAD))
            .collect();
        assert!(!writers.is_empty(), "no writer thread among {threads:?}");
        for (name, policy) in writers {
            assert_eq!(*policy, Some(libc::SCHED_BATCH), "{name}");
        }
        assert!(
            threads
                .iter()
                .any(|(name, policy)| name.starts_with("sqlx-sqlite")
                    && *policy == Some(libc::SCHED_OTHER)),
            "the store's own connections keep their priority: {threads:?}"
        );
    }

    /// A full database (simulated with `max_page_count`) gives a `DiskFull` error that the
    /// writer counts; the data already written stays readable.
    #[tokio::test]
    async fn a_full_database_is_a_disk_full_error() {
        let (dir, store) = temp_store().await;
        for i in 0..50 {
            register(&store, &format!("MC-{i}")).await;
        }
        let states = StateStore::open(dir.path()).await.unwrap();
        let Pool::Sqlite(pool) = states.pool() else {
            unreachable!()
        };
        let (pages,): (i64,) = sqlx::query_as("PRAGMA page_count")
            .fetch_one(pool)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA max_page_count = {pages}"
        )))
        .execute(pool)
        .await
        .unwrap();
        let batch: Vec<_> = (0..50)
            .map(|i| {
                let mut s = snapshot(&format!("MC-{i}"), 1, 1.0);
                s.readings = (0..32)
                    .map(|r| (format!("reading-{r}"), r as f32))
                    .collect();
                s
            })
            .collect();
        let error = states.write(&batch).await.unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::DiskFull, "{error}");

        let metrics = Metrics::default();
        let (writer, mut dirty) = StateWriter::new(states.clone(), metrics.clone());
        for s in &batch {
            dirty.mark(&s.module_id);
        }
        dirty
            .flush_final(|id| batch.iter().find(|s| &s.module_id == id).cloned())
            .await;
        drop(dirty);
        writer.run().await;
        assert_eq!(metrics.store_errors().get("disk_full"), Some(&1));
        assert!(states.load().await.unwrap().is_empty());
    }

    /// A failed batch gives its modules back: they are written once the disk works again, with
    /// their state of then, although they never speak again.
    async fn the_modules_of_a_failed_batch_are_written_once_the_disk_works_again(backend: Backend) {
        let (db, store) = test_store(backend).await;
        register(&store, "MC-1").await;
        register(&store, "MC-2").await;
        let states = StateStore::connect(&db.database).await.unwrap();
        let metrics = Metrics::default();
        let (writer, mut dirty) = StateWriter::new(states.clone(), metrics.clone());
        let writer = tokio::spawn(writer.run());
        let current = |rev| move |id: &ModuleId| Some(snapshot(id.as_str(), rev, 20.0));

        // The writer's only connection refuses writes (as on a read-only disk, or a PostgreSQL
        // standby): the batch fails.
        let read_only = |on: bool| match backend {
            Backend::Sqlite => format!("PRAGMA query_only = {}", if on { "ON" } else { "OFF" }),
            Backend::Postgres => format!(
                "SET default_transaction_read_only = {}",
                if on { "on" } else { "off" }
            ),
        };
        with_pool!(states.pool(), p => {
            sqlx::query(sqlx::AssertSqlSafe(read_only(true))).execute(p).await.map(drop)
        })
        .unwrap();
        dirty.mark(&"MC-1".parse().unwrap());
        dirty.mark(&"MC-2".parse().unwrap());
        dirty.flush(current(1));
        for _ in 0..500 {
            if !metrics.store_errors().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(metrics.store_errors().values().sum::<u64>(), 1);
        assert_eq!(metrics.store_errors().get("read_only"), Some(&1));

        // Neither module speaks again; the disk works again. During the backoff they wait in
        // the dirty set; after it, their state of now is written.
        with_pool!(states.pool(), p => {
            sqlx::query(sqlx::AssertSqlSafe(read_only(false))).execute(p).await.map(drop)
        })
        .unwrap();
        dirty.flush(current(2));
        assert_eq!(dirty.dirty.len(), 2, "dirty again");
        assert_eq!(
            dirty.batches.capacity(),
            1,
            "nothing sent during the backoff"
        );
        tokio::time::sleep(STATE_FLUSH_INTERVAL).await;
        dirty.flush(current(3));
        assert!(dirty.dirty.is_empty(), "sent after the backoff");
        drop(dirty);
        writer.await.unwrap();
        let mut saved: Vec<_> = states
            .load()
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.snapshot.module_id.to_string(), s.snapshot.rev))
            .collect();
        saved.sort();
        assert_eq!(saved, [("MC-1".into(), 3), ("MC-2".into(), 3)]);
        assert_eq!(metrics.store_errors().values().sum::<u64>(), 1);
    }

    /// Backoff after failed batches: 1 s, doubling, at most [`MAX_RETRY_BACKOFF`]; none once a
    /// batch is written. A module removed meanwhile is not sent again.
    #[tokio::test(start_paused = true)]
    async fn failed_batches_back_off_and_a_removed_module_is_not_retried() {
        let (batches, mut rx) = mpsc::channel(1);
        let unsaved = Unsaved::default();
        let mut dirty = DirtyModules {
            dirty: foldhash::HashSet::default(),
            batches,
            unsaved: unsaved.clone(),
        };
        let (a, b): (ModuleId, ModuleId) = ("MC-A".parse().unwrap(), "MC-B".parse().unwrap());
        let current = |id: &ModuleId| Some(snapshot(id.as_str(), 1, 1.0));
        let mut sent = || rx.try_recv().map_or(0, |batch| batch.len());

        let delays: Vec<u64> = (0..8)
            .map(|_| {
                unsaved
                    .failed([&a, &b].into_iter(), Instant::now())
                    .as_secs()
            })
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        dirty.flush(current);
        assert_eq!(sent(), 0, "backing off");
        assert_eq!(dirty.dirty.len(), 2, "the failed modules are dirty again");
        tokio::time::advance(Duration::from_secs(29)).await;
        dirty.flush(current);
        assert_eq!(sent(), 0);
        dirty.forget(&b);
        tokio::time::advance(Duration::from_secs(1)).await;
        dirty.flush(current);
        assert_eq!(
            sent(),
            1,
            "the backoff is over: the module still registered is sent"
        );

        unsaved.failed([&a, &b].into_iter(), Instant::now());
        dirty.forget(&b);
        unsaved.saved();
        dirty.flush(current);
        assert_eq!(sent(), 1, "a written batch ends the backoff");
        assert_eq!(
            unsaved.failed([&a].into_iter(), Instant::now()),
            STATE_FLUSH_INTERVAL,
            "and starts it over"
        );
    }
}
