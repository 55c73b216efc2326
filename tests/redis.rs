//! A real Redis for the cluster tests: `redis-server` on a free loopback port, no persistence,
//! killed on drop. From Debian's `redis-server` package, which the test command installs; if
//! the binary is missing, the test fails saying so (never skips).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio::net::TcpStream;

use crate::{DEADLINE, mosquitto::free_port};

/// A running `redis-server`.
pub struct Redis {
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
    dir: PathBuf,
}

fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("REDIS_SERVER_BIN") {
        return bin.into();
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain([
        "/usr/bin",
        "/usr/sbin",
        "/usr/local/bin",
    ]) {
        let candidate = Path::new(dir).join("redis-server");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("redis-server not found: install Debian's `redis-server` package (scripts/test does)");
}

fn spawn(port: u16, dir: &Path, log: &Path) -> Child {
    Command::new(binary())
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(["--logfile"])
        .arg(log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts")
}

impl Redis {
    /// Starts redis-server with its files in `dir` and waits until it answers.
    pub async fn start(dir: &Path) -> Self {
        let port = free_port();
        let log = dir.join("redis.log");
        let mut r = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child: spawn(port, dir, &log),
            log,
            dir: dir.to_owned(),
        };
        r.wait().await;
        r
    }

    /// Kills it (SIGKILL: everything it held is lost, as it keeps nothing on disk) and starts
    /// it again on the same port.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(self.addr.port(), &self.dir, &self.log);
        self.wait().await;
    }

    async fn wait(&mut self) {
        let r = self;
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while TcpStream::connect(r.addr).await.is_err() {
            if let Ok(Some(status)) = r.child.try_wait() {
                panic!(
                    "redis-server exited ({status}): {}",
                    std::fs::read_to_string(&r.log).unwrap_or_default()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server not listening within {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
