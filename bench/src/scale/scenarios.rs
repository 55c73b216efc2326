//! The scenarios, each against one freshly started target:
//!
//! - **fan-in** / **fan-out**: a load fleet and some consumers; open-loop steps of rising rate
//!   until a step fails (p99 > 25 ms, loss above `max_loss`, or the generator could not send);
//!   the highest passing rate is the *max sustained* rate. With `refine`, up to two more steps
//!   at the geometric mean of the highest pass and the lowest failure above it narrow it.
//! - **idle + mass offline**: `idle_dashboards` Socket.IO connections of a user who owns no
//!   module (RSS before and after = memory per dashboard), then `modules` connections that only
//!   said hello (RSS before and after = memory per module connection), dropped at once without
//!   DISCONNECT; the time until one dashboard of the owner has all the offline events.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use hdrhistogram::Histogram;

use crate::{
    consumers::Consumers,
    fleet::{IdleFleet, LoadFleet, check_fd_limit},
    procstat,
    sink::{Clock, Sink},
    targets::{self, Kind, Target, Tools},
};

/// Extra steps between the last pass and the first failure (full runs). Each one halves the
/// gap on a log scale: three take the default grid's ~2x steps to 2^(1/8) ≈ 1.09x, so the
/// ratio of two targets' sustained rates is known to about ±9 %, not ±19 % as with two.
const MAX_REFINEMENTS: usize = 3;
/// Refine while the first failure is more than this many times the last pass.
const REFINE_RATIO: f64 = 1.1;
/// Pause after a failed step.
const SETTLE: Duration = Duration::from_secs(3);

/// Load at the first rate before the first step, not measured.
const WARMUP: Duration = Duration::from_secs(2);

/// A step passes at or below this p99.
pub const P99_LIMIT_MS: f64 = 25.0;

/// A fan-in or fan-out scenario.
#[derive(Debug, Clone)]
pub struct FanPlan {
    /// Publishing modules.
    pub modules: usize,
    /// Dashboards.
    pub dashboards: usize,
    /// Plain Mosquitto's MQTT subscribers, its dashboards (fan-in: as many as the dashboards
    /// unless told otherwise; 1 is the floor: each message delivered once).
    pub subscribers: usize,
    /// Offered rates, msgs/s in total, ascending.
    pub rates: Vec<f64>,
}

/// The idle-capacity and mass-offline scenario.
#[derive(Debug, Clone)]
pub struct OfflinePlan {
    /// Module connections held, then dropped.
    pub modules: usize,
    /// Idle dashboards for the per-dashboard memory.
    pub idle_dashboards: usize,
    /// Why `modules` is below the 10,000 the issue asks for, if it is.
    pub limited_by: Option<String>,
}

/// How steps run.
#[derive(Debug, Clone)]
pub struct StepPlan {
    /// Load per step.
    pub duration: Duration,
    /// Start of each step not sampled for latency.
    pub warmup: Duration,
    /// Largest loss (fraction) that still passes.
    pub max_loss: f64,
    /// One extra step between the last pass and the first failure.
    pub refine: bool,
}

/// One step's numbers.
#[derive(Debug, Clone)]
pub struct Step {
    /// Offered msgs/s.
    pub rate: f64,
    /// Messages sent.
    pub sent: u64,
    /// Messages the generator could not queue, and connections that failed a write.
    pub dropped: u64,
    /// Fraction lost at the worst consumer (sequence gaps at measuring consumers, missing
    /// counts at the others).
    pub loss: f64,
    /// Latency at the measuring consumers, merged, µs.
    pub latency: Histogram<u64>,
    /// Events delivered to all consumers, per second.
    pub deliveries_per_s: f64,
    /// Target CPU seconds over the step (load + drain).
    pub cpu_s: f64,
    /// Target RSS at the end, KiB.
    pub rss_kib: u64,
    /// The bench's own CPU over the step, % of one core: near 100, the load side (generator and
    /// consumers) may be what limits the step, not the target.
    pub load_cpu_pct: f64,
    /// Consumers the target disconnected during the step (the hub cuts off a dashboard that
    /// stays behind; they are reconnected before the next step).
    pub cut_off: usize,
    /// Whether the step sustained its rate.
    pub pass: bool,
    /// A second try of a rate whose first try failed.
    pub retry: bool,
}

impl Step {
    /// Percentile of latency, ms (NaN without samples).
    pub fn pct_ms(&self, p: f64) -> f64 {
        if self.latency.is_empty() {
            return f64::NAN;
        }
        self.latency.value_at_quantile(p / 100.0) as f64 / 1000.0
    }

    /// Target CPU seconds per 10,000 messages.
    pub fn cpu_per_10k(&self) -> f64 {
        if self.sent == 0 {
            return f64::NAN;
        }
        self.cpu_s * 10_000.0 / self.sent as f64
    }
}

/// A fan scenario's result for one target.
#[derive(Debug, Clone)]
pub struct FanRun {
    /// Steps in the order run.
    pub steps: Vec<Step>,
    /// Peak RSS of the target over the scenario, KiB.
    pub peak_rss_kib: u64,
}

impl FanRun {
    /// The highest passing rate and its step.
    pub fn max_sustained(&self) -> Option<&Step> {
        self.steps
            .iter()
            .filter(|s| s.pass)
            .max_by(|a, b| a.rate.total_cmp(&b.rate))
    }
}

/// Runs a fan scenario against a fresh `kind`.
pub async fn fan(
    kind: Kind,
    tools: &Tools,
    plan: &FanPlan,
    steps: &StepPlan,
    clock: Clock,
) -> Result<FanRun> {
    check_fd_limit(plan.modules + plan.dashboards)?;
    let mut target = targets::start(kind, tools, plan.modules).await?;
    let result = fan_on(&mut target, plan, steps, clock).await;
    target.stop().await;
    result
}

async fn fan_on(
    target: &mut Target,
    plan: &FanPlan,
    steps: &StepPlan,
    clock: Clock,
) -> Result<FanRun> {
    let dashboards = if target.kind.has_dashboards() {
        plan.dashboards
    } else {
        plan.subscribers
    };
    // The first and the last dashboard measure: the last is the one a broadcast reaches last.
    let measure = [0, dashboards - 1];
    let mut consumers =
        Consumers::connect(&target.consumer, clock, dashboards, &measure, plan.modules).await?;
    let mut fleet = LoadFleet::connect(target.mqtt, &target.creds).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Warm-up, not measured: the first messages of a fresh process (V8's JIT, first
    // allocations, the first state snapshot) are nobody's steady state.
    if let Some(first) = plan.rates.first() {
        let before: Vec<u64> = consumers
            .sinks
            .iter()
            .map(|s| Sink::count(&s.telemetry))
            .collect();
        let sent = fleet.open_loop(&clock, *first, WARMUP).await?;
        drain(&consumers, &before, sent.sent).await;
    }
    let mut run = FanRun {
        steps: Vec::new(),
        peak_rss_kib: 0,
    };
    for rate in &plan.rates {
        let pass = run_step(
            target,
            &mut fleet,
            &mut consumers,
            &mut run,
            *rate,
            steps,
            clock,
        )
        .await?;
        if !pass {
            break;
        }
    }
    // Bisect (geometrically) between the highest pass and the lowest failure above it.
    for _ in 0..if steps.refine { MAX_REFINEMENTS } else { 0 } {
        let Some(low) = run.max_sustained().map(|s| s.rate) else {
            break;
        };
        let Some(high) = run
            .steps
            .iter()
            .filter(|s| !s.pass && s.rate > low)
            .map(|s| s.rate)
            .min_by(f64::total_cmp)
        else {
            break;
        };
        if high / low <= REFINE_RATIO {
            break;
        }
        let rate = (low * high).sqrt().round();
        run_step(
            target,
            &mut fleet,
            &mut consumers,
            &mut run,
            rate,
            steps,
            clock,
        )
        .await?;
    }
    run.peak_rss_kib = procstat::peak_kib(&target.pids());
    fleet.close().await;
    consumers.close().await;
    target.check_alive()?;
    Ok(run)
}

/// Runs a step at `rate`, and once more if it fails (a shared machine has hiccups: one
/// scheduler stall or GC pause can fail a step that the system sustains); whether either passed.
async fn run_step(
    target: &Target,
    fleet: &mut LoadFleet,
    consumers: &mut Consumers,
    run: &mut FanRun,
    rate: f64,
    steps: &StepPlan,
    clock: Clock,
) -> Result<bool> {
    for retry in [false, true] {
        if try_step(target, fleet, consumers, run, rate, steps, clock, retry).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Runs one step into `run` and reports it; whether it passed.
#[allow(clippy::too_many_arguments)]
async fn try_step(
    target: &Target,
    fleet: &mut LoadFleet,
    consumers: &mut Consumers,
    run: &mut FanRun,
    rate: f64,
    steps: &StepPlan,
    clock: Clock,
    retry: bool,
) -> Result<bool> {
    // A failed step may leave the target busy and dashboards cut off: let it settle, and bring
    // every dashboard back, so that each step starts from the same state.
    if run.steps.last().is_some_and(|s| !s.pass) {
        tokio::time::sleep(SETTLE).await;
    }
    consumers.reconnect_closed().await?;
    let mut step = step(target, fleet, consumers, rate, steps, clock).await?;
    step.retry = retry;
    eprintln!(
        "  {:<14} {:>8.0} msg/s: p50 {:.2} ms, p99 {:.2} ms, loss {:.3} %, cpu {:.2} s/10k, load core {:.0} %, cut off {}, {}",
        target.kind.name(),
        rate,
        step.pct_ms(50.0),
        step.pct_ms(99.0),
        step.loss * 100.0,
        step.cpu_per_10k(),
        step.load_cpu_pct,
        step.cut_off,
        match (step.pass, retry) {
            (true, _) => "pass",
            (false, false) => "FAIL (trying again)",
            (false, true) => "FAIL",
        }
    );
    let pass = step.pass;
    run.steps.push(step);
    Ok(pass)
}

/// One open-loop step at `rate`.
async fn step(
    target: &Target,
    fleet: &mut LoadFleet,
    consumers: &Consumers,
    rate: f64,
    plan: &StepPlan,
    clock: Clock,
) -> Result<Step> {
    let pids = target.pids();
    let counts_before: Vec<u64> = consumers
        .sinks
        .iter()
        .map(|s| Sink::count(&s.telemetry))
        .collect();
    let warmup_until = clock.now_us() + plan.warmup.as_micros() as u64;
    let first = fleet.next_seqs();
    for s in consumers.measuring() {
        s.begin_step(&first, warmup_until);
    }
    let before = procstat::sample(&pids);
    let own_before = procstat::cpu_seconds(std::process::id());
    let started = std::time::Instant::now();
    let write_errors = fleet
        .write_errors
        .load(std::sync::atomic::Ordering::Relaxed);
    let sent = fleet.open_loop(&clock, rate, plan.duration).await?;
    drain(consumers, &counts_before, sent.sent).await;
    let after = procstat::sample(&pids);
    let load_cpu_pct = (procstat::cpu_seconds(std::process::id()) - own_before)
        / started.elapsed().as_secs_f64()
        * 100.0;
    let last = fleet.last_seqs();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut loss = 0.0f64;
    let expected = sent.sent + sent.dropped;
    for s in consumers.measuring() {
        let d = s.end_step(&last).context("a measuring sink")?;
        latency.add(&d.latency)?;
        loss = loss.max(d.lost as f64 / expected.max(1) as f64);
    }
    let mut delivered = 0u64;
    for (s, before) in consumers.sinks.iter().zip(&counts_before) {
        let got = Sink::count(&s.telemetry).saturating_sub(*before);
        delivered += got;
        if !s.measures() {
            loss = loss.max(expected.saturating_sub(got) as f64 / expected.max(1) as f64);
        }
    }
    let on_time = sent.elapsed.as_secs_f64() <= plan.duration.as_secs_f64() * 1.05;
    let mut step = Step {
        rate,
        sent: sent.sent,
        dropped: sent.dropped
            + fleet
                .write_errors
                .load(std::sync::atomic::Ordering::Relaxed)
                .saturating_sub(write_errors),
        loss,
        latency,
        deliveries_per_s: delivered as f64 / plan.duration.as_secs_f64(),
        cpu_s: after.cpu_s - before.cpu_s,
        rss_kib: after.rss_kib,
        load_cpu_pct,
        cut_off: consumers.closed(),
        pass: false,
        retry: false,
    };
    step.pass =
        step.dropped == 0 && on_time && loss <= plan.max_loss && step.pct_ms(99.0) <= P99_LIMIT_MS;
    Ok(step)
}

/// Waits until every consumer has `sent` more events than before, or nothing moved for 500 ms
/// (at most 5 s).
async fn drain(consumers: &Consumers, before: &[u64], sent: u64) {
    let total = |c: &Consumers| -> u64 { c.sinks.iter().map(|s| Sink::count(&s.telemetry)).sum() };
    let mut last = total(consumers);
    let mut still = 0;
    for _ in 0..100 {
        let done = consumers
            .sinks
            .iter()
            .zip(before)
            .all(|(s, b)| Sink::count(&s.telemetry) >= b + sent);
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = total(consumers);
        still = if now == last { still + 1 } else { 0 };
        last = now;
        if still >= 10 {
            return;
        }
    }
}

/// Idle capacity and mass offline for one target.
#[derive(Debug, Clone, Default)]
pub struct OfflineRun {
    /// Module connections held.
    pub modules: usize,
    /// Online events seen before the drop (plain Mosquitto: none, it has no such event).
    pub online_seen: u64,
    /// Target RSS with no module connected, KiB.
    pub rss_base_kib: u64,
    /// Target RSS with every module connected and idle, KiB.
    pub rss_idle_kib: u64,
    /// Target file descriptors before and with the modules connected.
    pub fds_base: usize,
    /// With the modules connected.
    pub fds_idle: usize,
    /// Offline events (or wills) the dashboard got within the deadline.
    pub offline_seen: u64,
    /// From the drop to the last offline event, ms (`None`: not all arrived).
    pub all_offline_ms: Option<f64>,
    /// Target CPU seconds from the drop until all offline events arrived.
    pub drop_cpu_s: f64,
    /// Idle dashboards connected for the per-dashboard figure (0: not measured).
    pub dashboards: usize,
    /// RSS before and after connecting them, KiB.
    pub rss_dash_before_kib: u64,
    /// RSS after connecting them, KiB.
    pub rss_dash_after_kib: u64,
    /// Peak RSS over the scenario, KiB.
    pub peak_rss_kib: u64,
}

impl OfflineRun {
    /// Bytes of target memory per idle module connection.
    pub fn per_module_bytes(&self) -> f64 {
        (self.rss_idle_kib as f64 - self.rss_base_kib as f64) * 1024.0 / self.modules.max(1) as f64
    }

    /// File descriptors the target holds per module connection.
    pub fn fds_per_module(&self) -> f64 {
        (self.fds_idle as f64 - self.fds_base as f64) / self.modules.max(1) as f64
    }

    /// Bytes of target memory per idle dashboard (NaN when not measured).
    pub fn per_dashboard_bytes(&self) -> f64 {
        if self.dashboards == 0 {
            return f64::NAN;
        }
        (self.rss_dash_after_kib as f64 - self.rss_dash_before_kib as f64) * 1024.0
            / self.dashboards as f64
    }
}

/// How long the dashboard may take to hear of every dropped module.
const OFFLINE_DEADLINE: Duration = Duration::from_secs(30);

/// Runs idle capacity + mass offline against a fresh `kind`.
pub async fn offline(
    kind: Kind,
    tools: &Tools,
    plan: &OfflinePlan,
    clock: Clock,
) -> Result<OfflineRun> {
    check_fd_limit(plan.modules + plan.idle_dashboards)?;
    let mut target = targets::start(kind, tools, plan.modules).await?;
    let result = offline_on(&mut target, plan, clock).await;
    target.stop().await;
    result
}

/// Waits until `f` holds (checked every 20 ms) or `deadline` passes; whether it held.
async fn wait_for(deadline: Duration, f: impl Fn() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

async fn offline_on(target: &mut Target, plan: &OfflinePlan, clock: Clock) -> Result<OfflineRun> {
    let pids = target.pids();
    let n = plan.modules;
    let watcher = Consumers::connect(&target.consumer, clock, 1, &[], n).await?;
    let sink = watcher.sinks.first().context("no consumer")?.clone();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut run = OfflineRun {
        modules: n,
        ..OfflineRun::default()
    };
    // Memory is measured only while it grows (idle dashboards, then modules), never after
    // something was freed: a GC'd runtime or an allocator reuses freed memory, and a delta
    // measured after a drop would count what was already there.
    let idle = match &target.idle_consumer {
        Some(consumer) if plan.idle_dashboards > 0 => {
            run.rss_dash_before_kib = procstat::sample(&pids).rss_kib;
            let idle = Consumers::connect(consumer, clock, plan.idle_dashboards, &[], 0).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            run.rss_dash_after_kib = procstat::sample(&pids).rss_kib;
            run.dashboards = plan.idle_dashboards;
            eprintln!(
                "  {:<14} {} idle dashboards: {:.0} B/dashboard",
                target.kind.name(),
                run.dashboards,
                run.per_dashboard_bytes()
            );
            Some(idle)
        }
        _ => None,
    };
    run.rss_base_kib = procstat::sample(&pids).rss_kib;
    run.fds_base = procstat::fds(&pids);
    let fleet = IdleFleet::connect(target.mqtt, &target.creds).await?;
    if target.kind.has_dashboards() {
        let all_online = wait_for(Duration::from_secs(60), || {
            Sink::count(&sink.online) >= n as u64
        })
        .await;
        ensure!(
            all_online,
            "only {} of {n} modules came online within 60 s",
            Sink::count(&sink.online)
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    run.online_seen = Sink::count(&sink.online);
    run.rss_idle_kib = procstat::sample(&pids).rss_kib;
    run.fds_idle = procstat::fds(&pids);

    let cpu_before = procstat::sample(&pids).cpu_s;
    let offline_before = Sink::count(&sink.offline);
    let dropped_at = clock.now_us();
    fleet.drop_all();
    let all = wait_for(OFFLINE_DEADLINE, || {
        Sink::count(&sink.offline) >= offline_before + n as u64
    })
    .await;
    run.drop_cpu_s = procstat::sample(&pids).cpu_s - cpu_before;
    run.offline_seen = Sink::count(&sink.offline) - offline_before;
    if all {
        let last = sink
            .last_offline_us
            .load(std::sync::atomic::Ordering::Relaxed);
        run.all_offline_ms = Some(last.saturating_sub(dropped_at) as f64 / 1000.0);
    }
    eprintln!(
        "  {:<14} {n} modules: {:.0} B and {:.1} fds per connection idle; offline {} of {n} in {}",
        target.kind.name(),
        run.per_module_bytes(),
        run.fds_per_module(),
        run.offline_seen,
        run.all_offline_ms
            .map_or("— (deadline passed)".into(), |ms| format!("{ms:.0} ms")),
    );
    run.peak_rss_kib = procstat::peak_kib(&pids);
    if let Some(idle) = idle {
        idle.close().await;
    }
    watcher.close().await;
    target.check_alive()?;
    Ok(run)
}
