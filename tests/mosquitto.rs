//! A real Mosquitto for the external-broker tests: started from a generated config on a free
//! loopback port, reloaded with SIGHUP, killed on drop. And [`Link`], a TCP relay that can cut
//! the hub off its broker (a network partition) while modules stay connected.
//!
//! Mosquitto comes from Debian's `mosquitto` package, which the test command installs; if the
//! binary is missing, the test fails saying so (never skips).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::DEADLINE;

/// A running `mosquitto`.
pub struct Mosquitto {
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    child: Child,
    config: PathBuf,
    log: PathBuf,
}

/// The mosquitto binary: `MOSQUITTO_BIN`, else `mosquitto` on PATH or in /usr/sbin.
fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("MOSQUITTO_BIN") {
        return bin.into();
    }
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/usr/local/sbin"])
    {
        let candidate = Path::new(dir).join("mosquitto");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "mosquitto not found (PATH, /usr/sbin): install Debian's `mosquitto` package (scripts/test does)"
    );
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Mosquitto {
    /// Starts mosquitto in `dir` with password and ACL files `passwd`/`acl` (which must exist),
    /// on `port` (0: a free one), and waits until it accepts connections.
    pub async fn start(dir: &Path, passwd: &Path, acl: &Path, port: u16) -> Self {
        let port = if port == 0 { free_port() } else { port };
        let config = dir.join("mosquitto.conf");
        let log = dir.join("mosquitto.log");
        // `user root`: when the tests run as root, stay root so the temp files stay readable
        // (mosquitto would switch to its own user); ignored when not run as root.
        let text = format!(
            "user root\n\
             per_listener_settings false\n\
             listener {port} 127.0.0.1\n\
             allow_anonymous false\n\
             password_file {}\n\
             acl_file {}\n\
             persistence false\n\
             max_queued_messages 100000\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n\
             log_type information\n\
             connection_messages true\n",
            passwd.display(),
            acl.display()
        );
        std::fs::write(&config, text).expect("write mosquitto.conf");
        let mut m = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child: spawn(&config, &log),
            config,
            log,
        };
        m.wait_listening().await;
        m
    }

    async fn wait_listening(&mut self) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "mosquitto exited ({status}) before listening on {}: {}",
                    self.addr,
                    self.log_text()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "mosquitto not listening on {} within {DEADLINE:?}: {}",
                self.addr,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGHUP: mosquitto reloads its password and ACL files. Returns once the log shows the
    /// reload.
    pub async fn reload(&self) {
        let before = self.log_text().matches("Reloading config").count();
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -HUP mosquitto");
        crate::eventually("mosquitto reloaded its config", || {
            self.log_text().matches("Reloading config").count() > before
        })
        .await;
    }

    /// Kills it (SIGKILL) and starts it again on the same port with the same files.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.config, &self.log);
        self.wait_listening().await;
    }
}

fn spawn(config: &Path, log: &Path) -> Child {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("mosquitto log file");
    let stderr = log_file.try_clone().expect("log file handle");
    Command::new(binary())
        .arg("-c")
        .arg(config)
        .stdout(Stdio::from(log_file))
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("mosquitto starts")
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay from a loopback port to `target`: the hub connects through it, so a test can
/// cut the hub off its broker (every relayed connection closed, new ones refused) and
/// restore it, while the modules' own connections to the broker stay up.
pub struct Link {
    /// Where to connect instead of the target.
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    cut: Arc<std::sync::Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl Link {
    /// Starts relaying to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("relay listens");
        let addr = listener.local_addr().expect("relay address");
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let (up2, cut2, stop2) = (up.clone(), cut.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop2.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let token = cut2.lock().map(|t| t.clone()).unwrap_or_default();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Self {
            addr,
            up,
            cut,
            stop,
        }
    }

    /// Closes every relayed connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        if let Ok(mut token) = self.cut.lock() {
            token.cancel();
            *token = CancellationToken::new();
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
