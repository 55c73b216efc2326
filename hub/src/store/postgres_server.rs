//! A throwaway PostgreSQL server for tests: `initdb` in a temporary directory, `postgres` on a
//! free loopback port, killed (and its directory removed) on drop.
//!
//! Tests never skip PostgreSQL: when the server cannot be started (binaries missing, `initdb`
//! failing), [`PostgresServer::start`] says why and the test fails. `scripts/test` installs
//! Debian's `postgresql` package when its binaries are missing.
//!
//! - Binaries: `$PG_BINDIR`, else `pg_config --bindir`, else the newest
//!   `/usr/lib/postgresql/*/bin`.
//! - `postgres` refuses to run as root: as root, the server runs as the `postgres` system user
//!   (the directory is given to it).
//! - [`PostgresServer::shared`] is one server per test process (an `initdb` costs a second or
//!   two); each test takes its own database on it ([`PostgresServer::create_database`]). It is
//!   stopped when the process exits, and it dies with the process if that is killed.
//! - The server runs with `fsync = off`: tests kill hubs, not the database server, and an
//!   acknowledged commit is in the server's WAL (written to the OS) either way.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::{Connection, postgres::PgConnection};

use super::Database;

/// How long a server may take to accept connections (a loaded 2-core machine).
const START_DEADLINE: Duration = Duration::from_secs(60);
/// The superuser `initdb` creates (trust authentication on loopback only).
const SUPERUSER: &str = "hub";

/// A running PostgreSQL server; stopped on drop.
#[derive(Debug)]
pub struct PostgresServer {
    /// The postmaster (behind a lock so that the `atexit` handler can stop the shared one).
    child: Mutex<Child>,
    /// Its port on 127.0.0.1.
    port: u16,
    /// Data directory, socket and log; removed after the server stopped.
    dir: Mutex<Option<tempfile::TempDir>>,
}

/// The process-wide server of [`PostgresServer::shared`].
static SHARED: OnceLock<Result<PostgresServer, String>> = OnceLock::new();
/// Databases created in this process (their names).
static DATABASES: AtomicU32 = AtomicU32::new(0);

impl PostgresServer {
    /// Starts a server, or says why it cannot.
    pub fn start() -> Result<Self, String> {
        Self::start_with(|command| command.spawn())
    }

    /// `initdb`, then the postmaster, started by `spawn` (the shared server sets its
    /// parent-death signal there) on a free port; another port if that one was taken meanwhile.
    fn start_with(spawn: impl Fn(&mut Command) -> std::io::Result<Child>) -> Result<Self, String> {
        let bin = bindir()?;
        let dir = tempfile::Builder::new()
            .prefix("mc-hub-pg-")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir for PostgreSQL: {e}"))?;
        let owner = server_user()?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| format!("cannot give {} to postgres: {e}", dir.path().display()))?;
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8"])
            .args(["--locale=C.UTF-8", "--no-sync", "--no-instructions"])
            .stdin(Stdio::null());
        as_server_user(&mut initdb, owner);
        let out = initdb
            .output()
            .map_err(|e| format!("cannot run {}: {e}", bin.join("initdb").display()))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let log_path = dir.path().join("postgres.log");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port()?;
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| format!("cannot open the PostgreSQL log: {e}"))?;
            if let Some((uid, gid)) = owner {
                let _ = std::os::unix::fs::chown(&log_path, Some(uid), Some(gid));
            }
            let log_err = log
                .try_clone()
                .map_err(|e| format!("cannot share the PostgreSQL log: {e}"))?;
            let mut postgres = Command::new(bin.join("postgres"));
            postgres
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
                .arg("-c")
                .arg(format!("unix_socket_directories={}", dir.path().display()))
                .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
                .args(["-c", "max_connections=300", "-c", "shared_buffers=32MB"])
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err);
            as_server_user(&mut postgres, owner);
            let mut child = spawn(&mut postgres)
                .map_err(|e| format!("cannot start {}: {e}", bin.join("postgres").display()))?;
            match wait_ready(&mut child, port, &bin, &log_path) {
                Ok(()) => {
                    return Ok(Self {
                        child: Mutex::new(child),
                        port,
                        dir: Mutex::new(Some(dir)),
                    });
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    // Another process took the free port between our check and the bind.
                    if attempt < 3 && e.contains("already in use") {
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// The process-wide server, started on first use; stopped when the process exits.
    /// Panics (failing the test) with the reason when it cannot start.
    pub fn shared() -> &'static PostgresServer {
        let server = SHARED.get_or_init(|| {
            // Started from a thread that lives as long as the process, so that the kernel's
            // parent-death signal (set below) fires when the process dies, not when the test
            // thread that came first ends.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("postgres-keeper".into())
                .spawn(move || {
                    let started = Self::start_with(|command| {
                        use std::os::unix::process::CommandExt;
                        // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
                        unsafe {
                            command.pre_exec(|| {
                                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                                Ok(())
                            });
                        }
                        command.spawn()
                    });
                    let _ = tx.send(started);
                    loop {
                        std::thread::park();
                    }
                })
                .map_err(|e| format!("cannot start the postgres keeper thread: {e}"))
                .and_then(|_| {
                    rx.recv()
                        .map_err(|_| "the postgres keeper thread died".to_owned())?
                })
                .inspect(|_| {
                    // SAFETY: registers a plain `extern "C" fn`.
                    unsafe { libc::atexit(stop_shared) };
                })
        });
        match server {
            Ok(server) => server,
            Err(reason) => panic!("PostgreSQL test server unavailable: {reason}"),
        }
    }

    /// A URL for database `name` as the superuser.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a fresh, empty database and returns it. Panics (failing the test) if the
    /// server does not take it.
    pub async fn create_database(&self) -> Database {
        let name = format!(
            "hub_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = PgConnection::connect(&self.url("postgres"))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the PostgreSQL test server: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        let _ = conn.close().await;
        Database::Postgres(self.url(&name))
    }

    /// A fresh database on the [shared](Self::shared) server.
    pub async fn fresh_database() -> Database {
        Self::shared().create_database().await
    }

    /// Stops the server (immediate shutdown: the data is thrown away) and removes its
    /// directory.
    fn stop(&self) {
        let mut child = lock(&self.child);
        if let Ok(None) = child.try_wait() {
            // SIGQUIT: the postmaster stops its backends and exits at once.
            // SAFETY: kill(2) on our own child, which has not been reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGQUIT) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        drop(lock(&self.dir).take());
    }
}

/// A poisoned lock is taken as is: what it guards is a process handle or a directory.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `atexit` handler: stops the shared server and removes its directory.
extern "C" fn stop_shared() {
    if let Some(Ok(server)) = SHARED.get() {
        server.stop();
    }
}

/// Waits until the server on `port` accepts connections (`pg_isready`), or fails with its log.
fn wait_ready(child: &mut Child, port: u16, bin: &Path, log: &Path) -> Result<(), String> {
    let log = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("postgres exited at start ({status}): {}", log()));
        }
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-U", SUPERUSER, "-d", "postgres"])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "postgres did not accept connections within {START_DEADLINE:?}: {}",
                log()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where the PostgreSQL binaries are (module docs).
fn bindir() -> Result<PathBuf, String> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("PG_BINDIR").map(PathBuf::from) {
        return if has_server(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "PG_BINDIR={} has no initdb/postgres",
                dir.display()
            ))
        };
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_server(&dir) {
            return Ok(dir);
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_server(dir))
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, dir)| dir).ok_or_else(|| {
        "no PostgreSQL server binaries (initdb, postgres) found via $PG_BINDIR, `pg_config \
         --bindir` or /usr/lib/postgresql/*/bin; install Debian's `postgresql` package \
         (scripts/test does)"
            .to_owned()
    })
}

/// As root, the uid and gid of the `postgres` system user (the server refuses to run as root);
/// otherwise `None`: the server runs as the current user.
fn server_user() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|e| format!("cannot read /etc/passwd: {e}"))?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))?
        })
        .map(Some)
        .ok_or_else(|| {
            "running as root, and there is no `postgres` system user to run the server as \
             (Debian's postgresql package creates it)"
                .to_owned()
        })
}

fn as_server_user(command: &mut Command, owner: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
        // The server resolves paths relative to its working directory at start.
        command.current_dir("/");
    }
}

/// A loopback port free now (the server binds it a moment later; a clash fails the start
/// loudly rather than silently).
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An owned server answers, and is gone (process and directory) once dropped.
    #[tokio::test]
    async fn a_server_serves_and_is_stopped_on_drop() {
        let server = PostgresServer::start().unwrap_or_else(|e| panic!("{e}"));
        let mut conn = PgConnection::connect(&server.url("postgres"))
            .await
            .unwrap();
        let (one,): (i32,) = sqlx::query_as("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(one, 1);
        conn.close().await.unwrap();
        let dir = lock(&server.dir)
            .as_ref()
            .map(|d| d.path().to_owned())
            .unwrap();
        let port = server.port;
        drop(server);
        assert!(!dir.exists(), "directory removed");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "nothing listens on {port} any more"
        );
    }
}
