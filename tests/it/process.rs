//! The hub as a separate process (the real `hub` binary), so a test can kill it with SIGKILL
//! and restart it on the same ports and data directory: the browser tests (hub restarts seen
//! by a dashboard) and the durability tests (nothing acknowledged is lost).
//!
//! `MC_HUB_BIN` may name a prebuilt `hub` binary; otherwise it is built with cargo (once per
//! run) so it always embeds the current pages.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::OnceLock,
    time::Duration,
};

use mc_hub::store::Database;
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// The hub process saying it listens.
pub(crate) const HUB_START_DEADLINE: Duration = Duration::from_secs(60);

/// The `hub` binary: `MC_HUB_BIN`, else built once per test run with the cargo that builds the
/// tests (same profile and target directory), so it embeds the current `static/` files.
pub(crate) fn hub_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("MC_HUB_BIN") {
            return PathBuf::from(bin);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
        let mut build = std::process::Command::new(cargo);
        build.args([
            "build",
            "-p",
            "mc-hub",
            "--bin",
            "hub",
            // The features the tests build mc-hub with: its library is then compiled once.
            "--features",
            "test-postgres",
            "--message-format=json-render-diagnostics",
        ]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        let output = build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo runs to build the hub binary");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert!(
            output.status.success(),
            "building the hub binary failed:\n{}",
            lines[lines.len().saturating_sub(60)..].join("\n")
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "hub")
            .find_map(|v| v["executable"].as_str().map(PathBuf::from))
            .expect("cargo reports the hub executable")
    })
    .clone()
}

/// The kernel's ephemeral port range (`ip_local_port_range`): ports it hands out to outgoing
/// connections and to `bind(0)`.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(str::parse::<u16>);
            Some((parts.next()?.ok()?, parts.next()?.ok()?))
        })
        .unwrap_or((32768, 60999))
}

/// A loopback port for the hub, free now and outside the ephemeral range: the hub is killed
/// with SIGKILL and restarted on the same ports, and an ephemeral port could meanwhile be taken
/// by any outgoing connection (tests run in parallel). Random below the range (above 10000, or
/// 1024 when the range starts lower), never the same twice in this process, checked bindable.
pub(crate) fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static TAKEN: OnceLock<std::sync::Mutex<std::collections::HashSet<u16>>> = OnceLock::new();
    let taken = TAKEN.get_or_init(Default::default);
    let (low, _) = ephemeral_range();
    let floor: u16 = if low > 20_000 { 10_000 } else { 1024 };
    assert!(
        low > floor + 100,
        "ephemeral range starts at {low}: no room for fixed ports"
    );
    let span = u64::from(low - floor);
    for attempt in 0u64..10_000 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(attempt);
        hasher.write_u32(std::process::id());
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let port = floor + u16::try_from(hasher.finish() % span).expect("port below the range");
        let mut taken = taken.lock().expect("port set");
        if taken.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.insert(port);
            return port;
        }
    }
    panic!("no free port between {floor} and {low}");
}

/// The hub as a child process with fixed ports and a data directory that outlives restarts.
pub(crate) struct HubProcess {
    bin: PathBuf,
    /// The data directory, kept across restarts.
    pub(crate) data_dir: PathBuf,
    /// The PostgreSQL database (`--database`) when the tests run on PostgreSQL
    /// (`mc_e2e::on_postgres`); SQLite in `data_dir` otherwise.
    pub(crate) postgres: Option<Database>,
    log: PathBuf,
    /// HTTP + Socket.IO, the same port after every restart.
    pub(crate) http: SocketAddr,
    /// MQTT, the same port after every restart.
    pub(crate) mqtt: SocketAddr,
    child: Option<Child>,
    /// More arguments for `hub serve` (e.g. `--config FILE`).
    pub(crate) serve_args: Vec<String>,
}

impl HubProcess {
    pub(crate) async fn new(dir: &Path) -> Self {
        let data_dir = dir.join("data");
        let postgres = if mc_e2e::on_postgres() {
            Some(mc_e2e::test_database(&data_dir).await)
        } else {
            None
        };
        Self {
            bin: hub_binary(),
            data_dir,
            postgres,
            log: dir.join("hub.log"),
            http: SocketAddr::from(([127, 0, 0, 1], free_port())),
            mqtt: SocketAddr::from(([127, 0, 0, 1], free_port())),
            child: None,
            serve_args: Vec::new(),
        }
    }

    /// The hub's database.
    pub(crate) fn database(&self) -> Database {
        self.postgres
            .clone()
            .unwrap_or_else(|| Database::in_data_dir(&self.data_dir))
    }

    /// `--database URL` when on PostgreSQL.
    fn database_args(&self) -> Vec<String> {
        match self.postgres.as_ref().and_then(Database::postgres_url) {
            Some(url) => vec!["--database".into(), url.into()],
            None => Vec::new(),
        }
    }

    /// Runs `hub ARGS --data-dir DIR [--database URL]` and returns what it did, whatever its
    /// exit status.
    pub(crate) async fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.bin)
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(self.database_args())
            // A caller that gives up on it (a timeout) must not leave it running.
            .kill_on_drop(true)
            .output()
            .await
            .expect("hub CLI runs")
    }

    /// Runs a management command (`hub user ...`, `hub module ...`); returns its stdout.
    pub(crate) async fn manage(&self, args: &[&str]) -> String {
        let output = self.cli(args).await;
        assert!(
            output.status.success(),
            "hub {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Starts the hub and waits for its "listening" line; retried while the ports are still
    /// held by the previous (killed) process.
    pub(crate) async fn start(&mut self) {
        assert!(self.child.is_none(), "hub already running");
        let deadline = tokio::time::Instant::now() + HUB_START_DEADLINE;
        loop {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .expect("hub log file");
            let mut child = Command::new(&self.bin)
                .arg("serve")
                .arg("--http")
                .arg(self.http.to_string())
                .arg("--mqtt")
                .arg(self.mqtt.to_string())
                .arg("--data-dir")
                .arg(&self.data_dir)
                .args(self.database_args())
                .args(["--heartbeat-timeout", "3s"])
                .args(&self.serve_args)
                .env(
                    "RUST_LOG",
                    std::env::var("HUB_RUST_LOG").unwrap_or_else(|_| "info,rumqttd=off".into()),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log))
                .kill_on_drop(true)
                .spawn()
                .expect("hub binary starts");
            let stdout = child.stdout.take().expect("stdout piped");
            let mut lines = BufReader::new(stdout).lines();
            let listening = tokio::time::timeout_at(deadline, async {
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains("listening") {
                        return true;
                    }
                }
                false
            })
            .await;
            match listening {
                Ok(true) => {
                    // Keep draining stdout so the hub never blocks on a full pipe.
                    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                    self.child = Some(child);
                    return;
                }
                Ok(false) if tokio::time::Instant::now() < deadline => {
                    let _ = child.wait().await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                _ => panic!(
                    "the hub did not start within {HUB_START_DEADLINE:?}; log:\n{}",
                    self.log_tail()
                ),
            }
        }
    }

    /// SIGKILL, no shutdown of any kind; waits until the process is gone.
    pub(crate) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// The running hub's process id.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    pub(crate) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}
