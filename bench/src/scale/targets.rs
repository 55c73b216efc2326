//! The systems under test, each started as its own processes on its own free loopback ports,
//! pinned to the target CPUs (`taskset -c`), with a temp directory removed at the end:
//!
//! | target | processes | modules connect to | consumer |
//! |---|---|---|---|
//! | `hub` | `hub serve` (embedded broker) | the hub's MQTT port | Socket.IO dashboards |
//! | `hub-mosquitto` | `mosquitto` + `hub serve --broker mqtt://mc-hub@…` | Mosquitto | Socket.IO dashboards |
//! | `node-ref` | `node bench/peers/node-ref/server.mjs` (aedes in-process) | its MQTT port | Socket.IO dashboards |
//! | `mosquitto` | `mosquitto` | Mosquitto | plain MQTT subscribers (`mc/+/telemetry`, `mc/+/status`), as many as the dashboards |
//!
//! The hub is set up through its own CLI (`hub user add`) and API (`POST /api/modules`, which
//! hands out each module's token); its per-module rate limit is off (`INGEST_MODULE_RATE=0`:
//! the fan-out scenario drives a few modules far above 50 msg/s, and neither peer limits) and it
//! logs warnings only. Behind Mosquitto, the hub writes Mosquitto's password and ACL files
//! itself (`hub export mosquitto-acl`); plain Mosquitto gets the same rules from the bench
//! (`mosquitto_passwd`, an ACL of the export's shape). Both run the hub's example Mosquitto settings.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use futures_util::{StreamExt, stream};
use tokio::{io::AsyncWriteExt, net::TcpStream, process::Command};

use crate::{
    fleet::{ModuleCred, creds},
    http,
    sink::module_id,
};

/// Dashboard user of every target: owns every module.
pub const EMAIL: &str = "bench@bench.local";
/// A second user, owning nothing: its dashboards are the idle ones (no module event reaches
/// them, so they do not change what the first user's dashboards measure).
pub const IDLE_EMAIL: &str = "idle@bench.local";
/// Its password.
pub const PASSWORD: &str = "bench-password";
/// Username of the plain subscriber on Mosquitto.
const SUBSCRIBER: &str = "bench-sub";
/// Username of the hub on Mosquitto.
const HUB_USER: &str = "mc-hub";
/// Requests in flight while registering modules through the hub's API.
const REGISTER_CONCURRENCY: usize = 8;

/// Which system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// mc-hub with its embedded broker.
    Hub,
    /// mc-hub consuming from Mosquitto (external-broker mode).
    HubMosquitto,
    /// The Node.js reference of the seed design.
    NodeRef,
    /// Plain Mosquitto with plain MQTT subscribers: the floor for fan-in.
    Mosquitto,
}

impl Kind {
    /// Every target, in report order.
    pub const ALL: [Kind; 4] = [
        Kind::Hub,
        Kind::HubMosquitto,
        Kind::NodeRef,
        Kind::Mosquitto,
    ];

    /// Its name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hub => "hub",
            Kind::HubMosquitto => "hub-mosquitto",
            Kind::NodeRef => "node-ref",
            Kind::Mosquitto => "mosquitto",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .with_context(|| {
                format!("unknown target {s:?} (hub, hub-mosquitto, node-ref, mosquitto)")
            })
    }

    /// Whether its consumers are Socket.IO dashboards (else MQTT subscribers).
    pub fn has_dashboards(self) -> bool {
        self != Kind::Mosquitto
    }
}

/// Where the programs are, and which CPUs the targets run on.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The release `hub` binary.
    pub hub: PathBuf,
    /// `bench/peers/node-ref` (with `node_modules`).
    pub node_ref: PathBuf,
    /// `node`.
    pub node: PathBuf,
    /// `mosquitto`.
    pub mosquitto: PathBuf,
    /// `mosquitto_passwd`.
    pub mosquitto_passwd: PathBuf,
    /// `taskset -c` list for the targets (none: not pinned).
    pub cpus: Option<String>,
}

/// How the bench consumes what a target emits.
#[derive(Debug, Clone)]
pub enum Consumer {
    /// Log in, then Socket.IO dashboards with the session cookie.
    Dashboards {
        /// HTTP address.
        http: SocketAddr,
        /// `mc_session=…`.
        cookie: String,
    },
    /// An MQTT subscriber with these credentials.
    Subscriber {
        /// Broker address.
        addr: SocketAddr,
        /// Username and client id.
        user: String,
        /// Password.
        password: String,
    },
}

/// One started process; killed when dropped.
struct Process {
    name: &'static str,
    child: tokio::process::Child,
    log: PathBuf,
}

impl Process {
    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// The last lines of its log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Fails with its log if it has exited.
    fn check_alive(&mut self) -> Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!(
                "{} exited ({status}); its log:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }
}

/// A running target.
pub struct Target {
    /// Which one.
    pub kind: Kind,
    /// Where modules connect.
    pub mqtt: SocketAddr,
    /// Where the bench consumes.
    pub consumer: Consumer,
    /// Dashboards of a user who owns no module (none for plain Mosquitto).
    pub idle_consumer: Option<Consumer>,
    /// The registered modules (index `i` is `BENCH-i`).
    pub creds: Vec<ModuleCred>,
    procs: Vec<Process>,
    /// Removed on drop (after the processes are killed: fields drop in order).
    _dir: tempfile::TempDir,
}

impl Target {
    /// Pids of its processes (for CPU and memory).
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(Process::pid).collect()
    }

    /// Fails with a process's log if one has died.
    pub fn check_alive(&mut self) -> Result<()> {
        self.procs.iter_mut().try_for_each(Process::check_alive)
    }

    /// Kills its processes and waits for them.
    pub async fn stop(mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill().await;
        }
    }
}

/// A free loopback port (bound, then released: the target binds it right after).
fn free_port() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Two distinct free ports.
fn free_ports() -> Result<(SocketAddr, SocketAddr)> {
    let a = std::net::TcpListener::bind("127.0.0.1:0")?;
    let b = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?, b.local_addr()?))
}

/// A command for `program`, pinned to the target CPUs when asked.
fn pinned(tools: &Tools, program: &Path) -> Command {
    match &tools.cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Spawns `cmd` with its output in `dir/<name>.log`.
fn spawn(name: &'static str, mut cmd: Command, dir: &Path) -> Result<Process> {
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
    let err = out.try_clone()?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {name}"))?;
    Ok(Process { name, child, log })
}

/// Waits until `addr` accepts TCP connections (and `proc` is still alive).
async fn wait_listening(p: &mut Process, addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        p.check_alive()?;
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not listen on {addr} within 30 s; its log:\n{}",
                p.name,
                p.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `kind` with `modules` registered modules.
pub async fn start(kind: Kind, tools: &Tools, modules: usize) -> Result<Target> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("mc-scale-{}.", kind.name()))
        .tempdir()
        .context("temp dir")?;
    match kind {
        Kind::Hub => start_hub(tools, modules, dir, false).await,
        Kind::HubMosquitto => {
            ensure_external_broker_mode(tools).await?;
            start_hub(tools, modules, dir, true).await
        }
        Kind::NodeRef => start_node_ref(tools, modules, dir).await,
        Kind::Mosquitto => {
            let creds = creds(modules, bench_token);
            let password = bench_secret("subscriber");
            write_bench_auth(tools, dir.path(), &creds, &password).await?;
            let broker = start_mosquitto(tools, dir.path()).await?;
            Ok(Target {
                kind,
                mqtt: broker.addr,
                consumer: Consumer::Subscriber {
                    addr: broker.addr,
                    user: SUBSCRIBER.into(),
                    password,
                },
                idle_consumer: None,
                creds,
                procs: vec![broker.process],
                _dir: dir,
            })
        }
    }
}

/// Whether this hub binary has the external-broker mode (`hub serve --broker`).
pub async fn has_external_broker_mode(tools: &Tools) -> bool {
    Command::new(&tools.hub)
        .args(["serve", "--help"])
        .output()
        .await
        .is_ok_and(|help| String::from_utf8_lossy(&help.stdout).contains("--broker"))
}

/// A hub binary without the external-broker mode fails the `hub-mosquitto` target here rather
/// than pretending.
async fn ensure_external_broker_mode(tools: &Tools) -> Result<()> {
    if !has_external_broker_mode(tools).await {
        bail!(
            "hub-mosquitto needs the hub's external-broker mode (`hub serve --broker \
             mqtt://USER@HOST:PORT`, password in HUB_BROKER_PASSWORD), which this hub binary \
             ({}) does not have: pull it (`git pull /work/main main`) and rebuild",
            tools.hub.display()
        );
    }
    Ok(())
}

/// Runs a `hub` CLI command to completion, with `stdin` as its standard input.
async fn hub_cli(
    tools: &Tools,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: &str,
) -> Result<String> {
    let mut child = Command::new(&tools.hub)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run hub {}", args.join(" ")))?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    ensure!(
        out.status.success(),
        "hub {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A running Mosquitto.
struct Broker {
    process: Process,
    addr: SocketAddr,
}

/// Tokens for targets that do not issue their own (Mosquitto, the Node reference): random
/// enough that no run reuses another's, which is all a bench needs.
fn bench_token(i: usize) -> String {
    bench_secret(&format!("{i:05}"))
}

/// A password for the bench's own accounts (the subscriber, the hub on Mosquitto).
fn bench_secret(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("tok-{label}-{nanos:09}-{:08x}", std::process::id())
}

/// Plain Mosquitto's `passwd` and `acl` in `dir`, in the form `hub export mosquitto-acl`
/// writes (`hub/src/broker/mosquitto.rs`): a block per module (its own upstream topics, its own
/// `cmd`), and the subscriber with the hub's rules. The same ACL shape matters: Mosquitto checks
/// every delivery against the reader's rules, and patterns would cost the floor more than the
/// hub's per-user rules cost the hub.
async fn write_bench_auth(
    tools: &Tools,
    dir: &Path,
    creds: &[ModuleCred],
    password: &str,
) -> Result<()> {
    let passwd = dir.join("passwd");
    let mut lines: String = creds
        .iter()
        .map(|c| format!("{}:{}\n", c.id, c.token))
        .collect();
    lines.push_str(&format!("{SUBSCRIBER}:{password}\n"));
    std::fs::write(&passwd, lines).context("write the password file")?;
    let hashed = Command::new(&tools.mosquitto_passwd)
        .arg("-U")
        .arg(&passwd)
        .status()
        .await
        .context("run mosquitto_passwd -U")?;
    ensure!(hashed.success(), "mosquitto_passwd -U failed");
    let mut acl = format!(
        "user {SUBSCRIBER}\ntopic read mc/+/hello\ntopic read mc/+/heartbeat\n\
         topic read mc/+/telemetry\ntopic read mc/+/status\ntopic write mc/+/cmd\n\n"
    );
    for c in creds {
        let id = &c.id;
        acl.push_str(&format!(
            "user {id}\ntopic write mc/{id}/hello\ntopic write mc/{id}/heartbeat\n\
             topic write mc/{id}/telemetry\ntopic write mc/{id}/status\ntopic read mc/{id}/cmd\n\n"
        ));
    }
    std::fs::write(dir.join("acl"), acl).context("write the ACL file")?;
    Ok(())
}

/// Starts Mosquitto on a free port with `dir/passwd` and `dir/acl`. The settings are those of
/// the hub's example config (`hub export mosquitto-acl`) plus Nagle off, for both Mosquitto
/// targets, so that plain Mosquitto is at its best as the floor.
async fn start_mosquitto(tools: &Tools, dir: &Path) -> Result<Broker> {
    let addr = free_port()?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "user root\nper_listener_settings false\nlistener {port} 127.0.0.1\n\
             allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\npersistence false\n\
             max_queued_messages 100000\nmax_inflight_messages 1000\nmax_connections -1\n\
             set_tcp_nodelay true\nlog_dest stderr\nlog_type error\nlog_type warning\n",
            port = addr.port(),
            passwd = dir.join("passwd").display(),
            acl = dir.join("acl").display(),
        ),
    )?;
    let mut cmd = pinned(tools, &tools.mosquitto);
    cmd.arg("-c").arg(&conf);
    let mut process = spawn("mosquitto", cmd, dir)?;
    wait_listening(&mut process, addr).await?;
    Ok(Broker { process, addr })
}

/// `hub export mosquitto-acl` into `dir` (the hub's own password and ACL files for Mosquitto).
async fn export_acl(tools: &Tools, data: &str, dir: &Path, password: &str) -> Result<()> {
    let out = dir.to_string_lossy();
    hub_cli(
        tools,
        &[
            "export",
            "mosquitto-acl",
            "--out",
            &out,
            "--hub-user",
            HUB_USER,
            "--data-dir",
            data,
        ],
        &[("HUB_BROKER_PASSWORD", password)],
        "",
    )
    .await?;
    Ok(())
}

/// The hub, with its embedded broker or (`external`) behind Mosquitto, set up as an operator
/// would: `hub user add`, then modules through the API; for Mosquitto, `hub export
/// mosquitto-acl` before the start (the hub's account) and after the modules (their tokens),
/// each followed by a (re)load of Mosquitto.
async fn start_hub(
    tools: &Tools,
    modules: usize,
    dir: tempfile::TempDir,
    external: bool,
) -> Result<Target> {
    let data = dir.path().join("data");
    let data_arg = data.to_string_lossy().into_owned();
    hub_cli(
        tools,
        &[
            "user",
            "add",
            "--data-dir",
            &data_arg,
            "--email",
            EMAIL,
            "--name",
            "Bench",
            "--password-stdin",
        ],
        &[],
        &format!("{PASSWORD}\n"),
    )
    .await?;
    hub_cli(
        tools,
        &[
            "user",
            "add",
            "--data-dir",
            &data_arg,
            "--email",
            IDLE_EMAIL,
            "--name",
            "Idle",
            "--password-stdin",
        ],
        &[],
        &format!("{PASSWORD}\n"),
    )
    .await?;
    let broker_password = bench_secret("hub");
    let broker = if external {
        export_acl(tools, &data_arg, dir.path(), &broker_password).await?;
        Some(start_mosquitto(tools, dir.path()).await?)
    } else {
        None
    };
    let (http, mqtt) = free_ports()?;
    let mut cmd = pinned(tools, &tools.hub);
    cmd.arg("serve")
        .arg("--http")
        .arg(http.to_string())
        .arg("--mqtt")
        .arg(mqtt.to_string())
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "warn")
        .env("INGEST_MODULE_RATE", "0");
    if let Some(b) = &broker {
        cmd.arg("--broker")
            .arg(format!("mqtt://{HUB_USER}@{}", b.addr))
            .env("HUB_BROKER_PASSWORD", &broker_password);
    }
    let mut hub = spawn("hub", cmd, dir.path())?;
    wait_listening(&mut hub, http).await?;
    let cookie = mc_bench::dashboard::login(http, EMAIL, PASSWORD)
        .await
        .context("log in to the hub")?;
    let idle_cookie = mc_bench::dashboard::login(http, IDLE_EMAIL, PASSWORD)
        .await
        .context("log in to the hub")?;
    let tokens = register_modules(http, &cookie, modules).await?;
    let creds: Vec<ModuleCred> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| ModuleCred {
            id: module_id(i),
            token,
        })
        .collect();
    let (kind, mqtt, mut procs) = match broker {
        None => (Kind::Hub, mqtt, vec![hub]),
        Some(b) => {
            export_acl(tools, &data_arg, dir.path(), &broker_password).await?;
            let hup = Command::new("kill")
                .args(["-HUP", &b.process.pid().to_string()])
                .status()
                .await?;
            ensure!(hup.success(), "could not signal Mosquitto to reload");
            tokio::time::sleep(Duration::from_millis(500)).await;
            (Kind::HubMosquitto, b.addr, vec![hub, b.process])
        }
    };
    procs.iter_mut().try_for_each(Process::check_alive)?;
    Ok(Target {
        kind,
        mqtt,
        consumer: Consumer::Dashboards { http, cookie },
        idle_consumer: Some(Consumer::Dashboards {
            http,
            cookie: idle_cookie,
        }),
        creds,
        procs,
        _dir: dir,
    })
}

/// Registers `BENCH-00000..` through `POST /api/modules` (owned by the caller); returns tokens.
async fn register_modules(http: SocketAddr, cookie: &str, n: usize) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Created {
        password: String,
    }
    let results: Vec<Result<String>> = stream::iter(0..n)
        .map(|i| async move {
            let body = format!(r#"{{"id":"{}","name":"Bench {i}"}}"#, module_id(i));
            let (status, body) = http::post_json(http, "/api/modules", cookie, &body).await?;
            ensure!(status == 201, "POST /api/modules answered {status}: {body}");
            let created: Created =
                serde_json::from_str(&body).context("POST /api/modules: no password")?;
            Ok(created.password)
        })
        .buffered(REGISTER_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn start_node_ref(tools: &Tools, modules: usize, dir: tempfile::TempDir) -> Result<Target> {
    let server = tools.node_ref.join("server.mjs");
    ensure!(
        tools.node_ref.join("node_modules/aedes").is_dir(),
        "{}/node_modules is missing: run `npm ci` there (bench/scale/run does)",
        tools.node_ref.display()
    );
    let creds = creds(modules, bench_token);
    let registry = serde_json::json!({
        "users": [
            { "id": 1, "email": EMAIL, "password": PASSWORD },
            { "id": 2, "email": IDLE_EMAIL, "password": PASSWORD },
        ],
        "modules": creds.iter().map(|c| serde_json::json!({
            "id": c.id, "ownerId": 1, "token": c.token,
        })).collect::<Vec<_>>(),
    });
    let registry_path = dir.path().join("registry.json");
    std::fs::write(&registry_path, registry.to_string())?;
    let (http, mqtt) = free_ports()?;
    let mut cmd = pinned(tools, &tools.node);
    cmd.arg(&server)
        .arg("--http-port")
        .arg(http.port().to_string())
        .arg("--mqtt-port")
        .arg(mqtt.port().to_string())
        .arg("--registry")
        .arg(&registry_path)
        .current_dir(&tools.node_ref)
        .env("NODE_ENV", "production");
    let mut node = spawn("node-ref", cmd, dir.path())?;
    wait_listening(&mut node, mqtt).await?;
    wait_listening(&mut node, http).await?;
    let cookie = mc_bench::dashboard::login(http, EMAIL, PASSWORD)
        .await
        .context("log in to node-ref")?;
    let idle_cookie = mc_bench::dashboard::login(http, IDLE_EMAIL, PASSWORD)
        .await
        .context("log in to node-ref")?;
    Ok(Target {
        kind: Kind::NodeRef,
        mqtt,
        consumer: Consumer::Dashboards { http, cookie },
        idle_consumer: Some(Consumer::Dashboards {
            http,
            cookie: idle_cookie,
        }),
        creds,
        procs: vec![node],
        _dir: dir,
    })
}
