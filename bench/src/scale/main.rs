//! `scale-bench`: mc-hub side by side with its peers, in one run, under one load generator
//! (issue 7). Started by `bench/scale/run`, which builds everything and raises the file limit.
//!
//! # Layout
//! - `main.rs`: flags, the plan (`--quick` or full), the order of runs, writing the report.
//! - [`targets`]: starting the systems under test as processes (hub, hub on Mosquitto, the Node
//!   reference, plain Mosquitto) on free ports, pinned to the target CPUs.
//! - [`mqtt`]: a minimal MQTT 3.1.1 client; [`fleet`]: simulated modules on it, the open-loop
//!   generator.
//! - [`consumers`]: dashboards (the raw Socket.IO client of `mc_bench::dashboard`) or a plain
//!   subscriber, each with a [`sink`]: counts, latency (HdrHistogram), loss from `seq` gaps.
//! - [`scenarios`]: fan-in, fan-out (steps up to the max sustained rate), idle + mass offline.
//! - [`serial`]: the serial line rate, hub only, from `pipeline-bench --serial`.
//! - [`procstat`]: CPU seconds and RSS of target processes from `/proc`.
//! - [`report`]: markdown tables and ratios; [`plot`]: the latency-vs-load SVG.

mod consumers;
mod fleet;
mod http;
mod mqtt;
mod plot;
mod procstat;
mod report;
mod scenarios;
mod serial;
mod sink;
mod targets;

use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::{Context, Result, bail};
use clap::Parser;

use report::{FanResults, Report, Runs};
use scenarios::{FanPlan, OfflinePlan, StepPlan};
use sink::Clock;
use targets::{Kind, Tools};

/// mc-hub vs Mosquitto vs the Node reference: fan-in, fan-out, idle capacity, mass offline,
/// serial line rate. Prints a markdown report and writes it, with an SVG plot, to `--out`.
#[derive(Parser, Debug)]
#[command(name = "scale-bench")]
struct Args {
    /// Short smoke run: small fleets, three short steps per fan scenario, one repeat.
    #[arg(long)]
    quick: bool,
    /// Scenarios to run (fan-in, fan-out, offline, serial); default all.
    #[arg(long = "scenario", value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Targets to run (hub, hub-mosquitto, node-ref, mosquitto); default all.
    #[arg(long = "target", value_delimiter = ',')]
    targets: Vec<String>,
    /// Repeats of each scenario per target (the report shows medians); default 1 quick, 3 full.
    #[arg(long)]
    repeat: Option<usize>,
    /// Seconds of load per step (default 2 quick, 5 full).
    #[arg(long)]
    step_seconds: Option<f64>,
    /// Modules for fan-in (default 200 quick, 1000 full).
    #[arg(long)]
    fan_in_modules: Option<usize>,
    /// Dashboards for fan-in (default 2 quick, 4 full).
    #[arg(long)]
    fan_in_dashboards: Option<usize>,
    /// Plain Mosquitto's MQTT subscribers in fan-in (default: as many as the dashboards, the
    /// same deliveries per message as every other target; 1 is the floor).
    #[arg(long)]
    mosquitto_subscribers: Option<usize>,
    /// Offered rates for fan-in, msgs/s.
    #[arg(long, value_delimiter = ',')]
    fan_in_rates: Vec<f64>,
    /// Modules for fan-out (default 10).
    #[arg(long)]
    fan_out_modules: Option<usize>,
    /// Dashboards for fan-out (default 50 quick, 200 full).
    #[arg(long)]
    fan_out_dashboards: Option<usize>,
    /// Offered rates for fan-out, msgs/s (each reaches every dashboard).
    #[arg(long, value_delimiter = ',')]
    fan_out_rates: Vec<f64>,
    /// Module connections for idle capacity and mass offline (default 1000 quick, 10000 full).
    #[arg(long)]
    offline_modules: Option<usize>,
    /// Idle dashboards for the per-dashboard memory (default 100 quick, 1000 full).
    #[arg(long)]
    idle_dashboards: Option<usize>,
    /// Largest loss (percent) a sustained step may have.
    #[arg(long, default_value_t = 0.1)]
    max_loss_pct: f64,
    /// CPUs for the targets (`taskset -c` list).
    #[arg(long, default_value = "0")]
    target_cpus: String,
    /// CPUs for the bench itself (load generator and consumers).
    #[arg(long, default_value = "1")]
    load_cpus: String,
    /// Do not pin anything.
    #[arg(long)]
    no_pin: bool,
    /// Directory with the release `hub` and `pipeline-bench` binaries.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// The Node reference (with node_modules).
    #[arg(long, default_value = "bench/peers/node-ref")]
    node_ref: PathBuf,
    /// Where the report and the plot go.
    #[arg(long, default_value = "target/scale-bench")]
    out: PathBuf,
    /// Smoke check: fail unless every fan run delivered its first step (loss ≤ 1 %, latency
    /// sampled), whatever the latency; for the test command, where speed is not the question.
    #[arg(long)]
    require_delivery: bool,
}

const SCENARIOS: [&str; 4] = ["fan-in", "fan-out", "offline", "serial"];

/// Which scenarios with which sizes.
struct Plan {
    fan_in: FanPlan,
    fan_out: FanPlan,
    offline: OfflinePlan,
    steps: StepPlan,
    repeat: usize,
    serial_seconds: u64,
}

fn plan(a: &Args) -> Plan {
    let q = a.quick;
    let or = |v: &Vec<f64>, quick: &[f64], full: &[f64]| -> Vec<f64> {
        if !v.is_empty() {
            v.clone()
        } else if q {
            quick.to_vec()
        } else {
            full.to_vec()
        }
    };
    let fan_in_dashboards = a.fan_in_dashboards.unwrap_or(if q { 2 } else { 4 });
    Plan {
        fan_in: FanPlan {
            modules: a.fan_in_modules.unwrap_or(if q { 200 } else { 1000 }),
            dashboards: fan_in_dashboards,
            subscribers: a.mosquitto_subscribers.unwrap_or(fan_in_dashboards),
            rates: or(
                &a.fan_in_rates,
                &[1000.0, 4000.0, 16000.0, 64000.0],
                &[1000.0, 2000.0, 5000.0, 10000.0, 20000.0, 40000.0, 80000.0],
            ),
        },
        fan_out: FanPlan {
            modules: a.fan_out_modules.unwrap_or(10),
            // Plain Mosquitto does not run fan-out (see `run`).
            subscribers: 1,
            dashboards: a.fan_out_dashboards.unwrap_or(if q { 50 } else { 200 }),
            rates: or(
                &a.fan_out_rates,
                &[100.0, 400.0, 1600.0, 6400.0],
                &[100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0],
            ),
        },
        offline: offline_plan(a),
        steps: StepPlan {
            duration: Duration::from_secs_f64(a.step_seconds.unwrap_or(if q { 2.0 } else { 5.0 })),
            warmup: Duration::from_millis(if q { 500 } else { 1000 }),
            max_loss: a.max_loss_pct / 100.0,
            refine: !q,
        },
        repeat: a.repeat.unwrap_or(if q { 1 } else { 3 }),
        serial_seconds: if q { 2 } else { 5 },
    }
}

/// Modules for idle + mass offline: 10,000 (quick: 1,000) unless the open-file limit cannot
/// hold them: every target keeps one descriptor per module connection, and this process holds
/// the modules' ends and the idle dashboards; then the most it can, the same for every target.
fn offline_plan(a: &Args) -> OfflinePlan {
    let wanted = if a.quick { 1000 } else { 10_000 };
    let idle_dashboards = a
        .idle_dashboards
        .unwrap_or(if a.quick { 100 } else { 1000 });
    if let Some(n) = a.offline_modules {
        return OfflinePlan {
            modules: n,
            idle_dashboards,
            limited_by: None,
        };
    }
    let hard = fleet::fd_hard_limit();
    let fits = hard.map_or(wanted, |h| {
        ((h.saturating_sub(1024) as usize).saturating_sub(idle_dashboards) / 500 * 500).min(wanted)
    });
    OfflinePlan {
        modules: fits,
        idle_dashboards,
        limited_by: (fits < wanted).then(|| {
            format!(
                "the open-file limit here is {} (hard; raising it needs CAP_SYS_RESOURCE, which \
                 this machine does not grant) and the bench holds one descriptor per module \
                 and per idle dashboard, so {fits} is the most it can hold; every target ran \
                 with {fits}",
                hard.unwrap_or(0)
            )
        }),
    }
}

/// Runs a scenario, and once more if a target process died under it (on a shared machine,
/// another engineer's test cleanup can stop our Mosquitto); the retry is noted in the report.
async fn retry_if_died<T, F, Fut>(notes: &mut Vec<String>, label: &str, f: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    match f().await {
        Err(e) if format!("{e:#}").contains(" exited (") => {
            let first = format!("{e:#}");
            let first = first.lines().next().unwrap_or_default();
            eprintln!("  {label}: a target process died ({first}); running it again");
            notes.push(format!(
                "{label}: a target process died during the run ({first}); it was run again"
            ));
            f().await
        }
        r => r,
    }
}

/// Pins this process (and so every thread it starts later) to `cpus`.
fn pin_self(cpus: &str) -> Result<()> {
    let status = Command::new("taskset")
        .args(["-pc", cpus, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("run taskset")?;
    if !status.success() {
        bail!("taskset -pc {cpus} failed");
    }
    Ok(())
}

fn which(program: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} not found (apt-get install mosquitto nodejs)"))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or("?".into(), |kib| {
            format!("{:.1} GiB", kib / 1024.0 / 1024.0)
        });
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "{cpu}, {cpus} CPUs, {mem}; load average at start {}",
        load.join(" ")
    )
}

fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = !args.no_pin && cpus >= 2;
    let machine = machine();
    if pin {
        pin_self(&args.load_cpus)?;
    } else if !args.no_pin {
        eprintln!("scale-bench: fewer than 2 CPUs, nothing pinned");
    }
    // One worker: the bench has one core; more threads would only contend on it.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async {
        // On SIGINT or SIGTERM the run is dropped, and with it every target: their processes
        // are killed (`kill_on_drop`) and their temp directories removed.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("SIGTERM handler")?;
        tokio::select! {
            r = run(args, pin, machine) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            _ = term.recv() => bail!("terminated"),
        }
    })
}

async fn run(args: Args, pin: bool, machine: String) -> Result<()> {
    let plan = plan(&args);
    let scenarios: Vec<String> = if args.scenarios.is_empty() {
        SCENARIOS.iter().map(|s| s.to_string()).collect()
    } else {
        args.scenarios.clone()
    };
    for s in &scenarios {
        if !SCENARIOS.contains(&s.as_str()) {
            bail!("unknown scenario {s:?} (fan-in, fan-out, offline, serial)");
        }
    }
    let kinds: Vec<Kind> = if args.targets.is_empty() {
        Kind::ALL.to_vec()
    } else {
        args.targets
            .iter()
            .map(|t| Kind::parse(t))
            .collect::<Result<_>>()?
    };
    let tools = Tools {
        hub: args.bin_dir.join("hub"),
        node_ref: std::fs::canonicalize(&args.node_ref)
            .with_context(|| format!("{} not found", args.node_ref.display()))?,
        node: which("node")?,
        mosquitto: which("mosquitto")?,
        mosquitto_passwd: which("mosquitto_passwd")?,
        cpus: pin.then(|| args.target_cpus.clone()),
    };
    let needs_hub = kinds
        .iter()
        .any(|k| matches!(k, Kind::Hub | Kind::HubMosquitto))
        || (scenarios.iter().any(|s| s == "serial") && kinds.contains(&Kind::Hub));
    if needs_hub && !tools.hub.is_file() {
        bail!(
            "{} not found: build it first (cargo build --release -p mc-hub --bin hub)",
            tools.hub.display()
        );
    }
    let clock = Clock::new();
    let has = |s: &str| scenarios.iter().any(|x| x == s);
    let mut failures = Vec::new();
    let mut notes = Vec::new();
    let tools_have_broker_mode = targets::has_external_broker_mode(&tools).await;

    let mut fan = Vec::new();
    for (name, fplan) in [("fan-in", &plan.fan_in), ("fan-out", &plan.fan_out)] {
        if !has(name) {
            continue;
        }
        let mut runs: Runs<scenarios::FanRun> = Vec::new();
        for kind in &kinds {
            // Plain Mosquitto has no dashboards to fan out to.
            if name == "fan-out" && *kind == Kind::Mosquitto {
                continue;
            }
            let mut reps = Vec::new();
            for rep in 0..plan.repeat {
                eprintln!("{name} #{}: {}", rep + 1, kind.name());
                let r = retry_if_died(
                    &mut notes,
                    &format!("{name} #{} {}", rep + 1, kind.name()),
                    || scenarios::fan(*kind, &tools, fplan, &plan.steps, clock),
                )
                .await;
                if let Err(e) = &r {
                    eprintln!("  {} failed: {e:#}", kind.name());
                    failures.push(format!("{name}/{}: {e:#}", kind.name()));
                }
                let failed = r.is_err();
                reps.push(r.map_err(|e| format!("{e:#}")));
                if failed && *kind == Kind::HubMosquitto && !tools_have_broker_mode {
                    break; // its mode is missing: repeating says nothing more
                }
            }
            runs.push((*kind, reps));
        }
        if args.require_delivery {
            for (kind, reps) in &runs {
                for run in reps.iter().filter_map(|r| r.as_ref().ok()) {
                    match run.steps.first() {
                        Some(s) if s.loss <= 0.01 && !s.latency.is_empty() => {}
                        Some(s) => failures.push(format!(
                            "{name}/{}: the first step ({:.0} msgs/s) lost {:.1} % ({} latency samples)",
                            kind.name(),
                            s.rate,
                            s.loss * 100.0,
                            s.latency.len()
                        )),
                        None => failures.push(format!("{name}/{}: no step ran", kind.name())),
                    }
                }
            }
        }
        fan.push(FanResults {
            name,
            plan: fplan.clone(),
            runs,
        });
    }

    let offline = if has("offline") {
        let mut runs: Runs<scenarios::OfflineRun> = Vec::new();
        for kind in &kinds {
            let mut reps = Vec::new();
            for rep in 0..plan.repeat {
                eprintln!("idle + mass offline #{}: {}", rep + 1, kind.name());
                let r = retry_if_died(
                    &mut notes,
                    &format!("offline #{} {}", rep + 1, kind.name()),
                    || scenarios::offline(*kind, &tools, &plan.offline, clock),
                )
                .await;
                if let Err(e) = &r {
                    eprintln!("  {} failed: {e:#}", kind.name());
                    failures.push(format!("offline/{}: {e:#}", kind.name()));
                }
                let failed = r.is_err();
                reps.push(r.map_err(|e| format!("{e:#}")));
                if failed && *kind == Kind::HubMosquitto && !tools_have_broker_mode {
                    break;
                }
            }
            runs.push((*kind, reps));
        }
        Some((plan.offline.clone(), runs))
    } else {
        None
    };

    let serial = if has("serial") && kinds.contains(&Kind::Hub) {
        eprintln!("serial line rate: hub (pipeline-bench --serial)");
        let r = serial::run(
            &args.bin_dir.join("pipeline-bench"),
            plan.serial_seconds,
            plan.repeat,
        )
        .await
        .map_err(|e| format!("{e:#}"));
        if let Err(e) = &r {
            failures.push(format!("serial: {e}"));
        }
        Some(r)
    } else {
        None
    };

    let report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine,
        date: now_utc(),
        steps: plan.steps.clone(),
        fan,
        offline,
        serial,
        notes,
    };
    let markdown = report::markdown(&report);
    println!("{markdown}");
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let md_path = args.out.join("report.md");
    std::fs::write(&md_path, &markdown).with_context(|| format!("write {}", md_path.display()))?;
    let panels = report::panels(&report);
    if !panels.is_empty() {
        let svg_path = args.out.join("latency-vs-load.svg");
        let caption = format!(
            "scale-bench {}, {}; each target's median run",
            report.date,
            if args.quick { "quick" } else { "full" }
        );
        std::fs::write(&svg_path, plot::svg(&panels, &caption))
            .with_context(|| format!("write {}", svg_path.display()))?;
        eprintln!("wrote {} and {}", md_path.display(), svg_path.display());
    } else {
        eprintln!("wrote {}", md_path.display());
    }
    if !failures.is_empty() {
        bail!(
            "{} run(s) failed (the report shows them):\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}
