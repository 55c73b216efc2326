//! The report: markdown tables (summary per scenario with ratios to the Node reference and to
//! plain Mosquitto, every step, the targets with verdicts) and the plot's panels.
//! Repeats are summarised by their median.

use std::fmt::Write;

use crate::{
    plot::{Panel, Series},
    scenarios::{FanPlan, FanRun, OfflinePlan, OfflineRun, P99_LIMIT_MS, Step, StepPlan},
    targets::Kind,
};

/// One target's repeats of a scenario; an `Err` is a run that failed, with why.
pub type Runs<T> = Vec<(Kind, Vec<Result<T, String>>)>;

/// A fan scenario's results.
pub struct FanResults {
    /// `fan-in` or `fan-out`.
    pub name: &'static str,
    /// What ran.
    pub plan: FanPlan,
    /// Per target.
    pub runs: Runs<FanRun>,
}

/// Everything the report shows.
pub struct Report {
    /// How the bench was started.
    pub command: String,
    /// Machine description.
    pub machine: String,
    /// When (UTC).
    pub date: String,
    /// Step settings.
    pub steps: StepPlan,
    /// Fan scenarios that ran.
    pub fan: Vec<FanResults>,
    /// Idle + mass offline, if it ran.
    pub offline: Option<(OfflinePlan, Runs<OfflineRun>)>,
    /// Serial table (hub only), if it ran.
    pub serial: Option<Result<String, String>>,
    /// What happened during the run that the tables do not show (retried runs).
    pub notes: Vec<String>,
}

/// Median of the finite values (NaN if none).
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn num(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "–".into()
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

/// Medians of one target's repeats of a fan scenario.
#[derive(Debug, Clone)]
pub struct FanSummary {
    /// Which target.
    pub kind: Kind,
    /// Max sustained msgs/s per successful repeat (0: not even the first step).
    pub sustained_runs: Vec<f64>,
    /// Their median.
    pub sustained: f64,
    /// p50 / p99 ms at the max sustained step (medians over repeats).
    pub p50: f64,
    /// p99 ms.
    pub p99: f64,
    /// CPU-s per 10k messages at the max sustained step.
    pub cpu_10k: f64,
    /// Peak RSS, MiB.
    pub peak_rss_mib: f64,
    /// Errors of failed repeats.
    pub errors: Vec<String>,
}

/// Summarises each target of a fan scenario.
pub fn fan_summaries(r: &FanResults) -> Vec<FanSummary> {
    r.runs
        .iter()
        .map(|(kind, runs)| {
            let ok: Vec<&FanRun> = runs.iter().filter_map(|r| r.as_ref().ok()).collect();
            let at_max = |f: &dyn Fn(&crate::scenarios::Step) -> f64| {
                median(ok.iter().filter_map(|r| r.max_sustained()).map(f))
            };
            let sustained_runs: Vec<f64> = ok
                .iter()
                .map(|r| r.max_sustained().map_or(0.0, |s| s.rate))
                .collect();
            FanSummary {
                kind: *kind,
                sustained: median(sustained_runs.iter().copied()),
                sustained_runs,
                p50: at_max(&|s| s.pct_ms(50.0)),
                p99: at_max(&|s| s.pct_ms(99.0)),
                cpu_10k: at_max(&|s| s.cpu_per_10k()),
                peak_rss_mib: median(ok.iter().map(|r| r.peak_rss_kib as f64 / 1024.0)),
                errors: runs
                    .iter()
                    .filter_map(|r| r.as_ref().err().cloned())
                    .collect(),
            }
        })
        .collect()
}

fn find(s: &[FanSummary], kind: Kind) -> Option<&FanSummary> {
    s.iter()
        .find(|x| x.kind == kind && !x.sustained_runs.is_empty())
}

/// "1 MQTT subscriber", "4 MQTT subscribers": plain Mosquitto's consumers.
fn subscribers(n: usize) -> String {
    format!("{n} MQTT subscriber{}", if n == 1 { "" } else { "s" })
}

fn fan_section(out: &mut String, r: &FanResults, steps: &StepPlan) {
    let sums = fan_summaries(r);
    let node = find(&sums, Kind::NodeRef);
    let mosq = find(&sums, Kind::Mosquitto);
    let _ = writeln!(
        out,
        "\n### {}: {} modules → {} dashboards{}, {} s steps\n",
        r.name,
        r.plan.modules,
        r.plan.dashboards,
        if r.runs.iter().any(|(kind, _)| *kind == Kind::Mosquitto) {
            format!(" (plain Mosquitto: {})", subscribers(r.plan.subscribers))
        } else {
            String::new()
        },
        steps.duration.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| target | max sustained msgs/s (median; runs) | × node-ref | × mosquitto | p50 ms | p99 ms | CPU-s / 10k msgs | peak RSS MiB | RSS × node-ref |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in &sums {
        if s.sustained_runs.is_empty() {
            let _ = writeln!(
                out,
                "| {} | **failed**: {} | | | | | | | |",
                s.kind.name(),
                s.errors
                    .first()
                    .map_or("", |e| e.as_str())
                    .replace('\n', " ")
            );
            continue;
        }
        let runs: Vec<String> = s.sustained_runs.iter().map(|v| format!("{v:.0}")).collect();
        let _ = writeln!(
            out,
            "| {} | **{}** ({}) | {} | {} | {} | {} | {} | {} | {} |",
            s.kind.name(),
            num(s.sustained, 0),
            runs.join(", "),
            node.map_or("–".into(), |n| ratio(s.sustained, n.sustained)),
            mosq.map_or("–".into(), |m| ratio(s.sustained, m.sustained)),
            num(s.p50, 2),
            num(s.p99, 2),
            num(s.cpu_10k, 3),
            num(s.peak_rss_mib, 1),
            node.map_or("–".into(), |n| ratio(s.peak_rss_mib, n.peak_rss_mib)),
        );
    }
    by_rate_section(out, r);
    let _ = writeln!(
        out,
        "\nEvery step ({} msgs/s offered in total, round-robin over the modules; pass = p99 ≤ {P99_LIMIT_MS} ms, loss ≤ {} %, nothing dropped by the generator, no consumer cut off; a failed step is tried once more, and the rate passes if either try does; after a failed step the target gets 3 s to settle and cut-off dashboards are reconnected):\n",
        r.name,
        steps.max_loss * 100.0
    );
    let _ = writeln!(
        out,
        "| target | run | offered msgs/s | sent | not sent | loss % | p50 ms | p99 ms | max ms | deliveries/s | CPU-s / 10k | RSS MiB | load core % | consumers cut off | |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for (kind, runs) in &r.runs {
        for (i, run) in runs.iter().enumerate() {
            let Ok(run) = run else { continue };
            for s in &run.steps {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {:.1} | {:.0} | {} | {} |",
                    kind.name(),
                    i + 1,
                    s.rate,
                    s.sent,
                    s.dropped,
                    num(s.loss * 100.0, 3),
                    num(s.pct_ms(50.0), 2),
                    num(s.pct_ms(99.0), 2),
                    num(s.pct_ms(100.0), 1),
                    s.deliveries_per_s,
                    num(s.cpu_per_10k(), 3),
                    s.rss_kib as f64 / 1024.0,
                    s.load_cpu_pct,
                    s.cut_off,
                    match (s.pass, s.retry) {
                        (true, false) => "pass",
                        (true, true) => "pass (2nd try)",
                        (false, _) => "**fail**",
                    }
                );
            }
        }
    }
}

/// Per planned rate and target: CPU-s per 10k messages, RSS and p99, medians over the runs
/// that passed that rate (a cell is empty where none did): the targets compared at equal load.
fn by_rate_section(out: &mut String, r: &FanResults) {
    let cell = |kind: Kind, rate: f64, f: &dyn Fn(&Step) -> f64| {
        let runs = r.runs.iter().find(|(k, _)| *k == kind).map(|(_, r)| r);
        median(
            runs.into_iter()
                .flatten()
                .filter_map(|r| r.as_ref().ok())
                .filter_map(|r| passed_at(r, rate))
                .map(f),
        )
    };
    type Metric<'a> = (&'a str, usize, &'a dyn Fn(&Step) -> f64);
    let metrics: [Metric; 3] = [
        ("CPU-s per 10k messages", 3, &|s: &Step| s.cpu_per_10k()),
        ("RSS MiB", 1, &|s: &Step| s.rss_kib as f64 / 1024.0),
        ("p99 ms", 2, &|s: &Step| s.pct_ms(99.0)),
    ];
    for (name, digits, f) in metrics {
        let _ = writeln!(
            out,
            "\n{name} at each planned rate (median over the runs that sustained it; – none did):\n"
        );
        let header: Vec<String> = r.plan.rates.iter().map(|v| format!("{v:.0}")).collect();
        let _ = writeln!(out, "| target | {} |", header.join(" | "));
        let _ = writeln!(out, "|---|{}", "---:|".repeat(header.len()));
        for (kind, _) in &r.runs {
            let cells: Vec<String> = r
                .plan
                .rates
                .iter()
                .map(|rate| num(cell(*kind, *rate, f), digits))
                .collect();
            let _ = writeln!(out, "| {} | {} |", kind.name(), cells.join(" | "));
        }
    }
}

/// The step of `run` that passed at `rate`, if one did.
fn passed_at(run: &FanRun, rate: f64) -> Option<&Step> {
    run.steps.iter().find(|s| s.pass && s.rate == rate)
}

/// The highest planned rate that every run of each of `kinds` passed.
pub fn common_rate(r: &FanResults, kinds: &[Kind]) -> Option<f64> {
    let runs: Vec<&FanRun> = r
        .runs
        .iter()
        .filter(|(k, _)| kinds.contains(k))
        .flat_map(|(_, runs)| runs.iter().filter_map(|r| r.as_ref().ok()))
        .collect();
    if runs.is_empty() {
        return None;
    }
    r.plan
        .rates
        .iter()
        .copied()
        .filter(|rate| runs.iter().all(|run| passed_at(run, *rate).is_some()))
        .max_by(f64::total_cmp)
}

/// Medians of one target's idle/offline repeats.
struct OfflineSummary {
    kind: Kind,
    ok: usize,
    per_module: f64,
    fds: f64,
    per_dashboard: f64,
    all_offline_ms: f64,
    complete: usize,
    offline_seen: f64,
    drop_cpu: f64,
    errors: Vec<String>,
}

fn offline_summaries(runs: &Runs<OfflineRun>) -> Vec<OfflineSummary> {
    runs.iter()
        .map(|(kind, runs)| {
            let ok: Vec<&OfflineRun> = runs.iter().filter_map(|r| r.as_ref().ok()).collect();
            OfflineSummary {
                kind: *kind,
                ok: ok.len(),
                per_module: median(ok.iter().map(|r| r.per_module_bytes())),
                fds: median(ok.iter().map(|r| r.fds_per_module())),
                per_dashboard: median(ok.iter().map(|r| r.per_dashboard_bytes())),
                // A run that missed the deadline counts as infinitely slow.
                all_offline_ms: median(ok.iter().map(|r| r.all_offline_ms.unwrap_or(f64::MAX))),
                complete: ok.iter().filter(|r| r.all_offline_ms.is_some()).count(),
                offline_seen: median(ok.iter().map(|r| r.offline_seen as f64)),
                drop_cpu: median(ok.iter().map(|r| r.drop_cpu_s)),
                errors: runs
                    .iter()
                    .filter_map(|r| r.as_ref().err().cloned())
                    .collect(),
            }
        })
        .collect()
}

fn offline_section(out: &mut String, plan: &OfflinePlan, runs: &Runs<OfflineRun>) {
    let sums = offline_summaries(runs);
    let node = sums.iter().find(|s| s.kind == Kind::NodeRef && s.ok > 0);
    let _ = writeln!(
        out,
        "\n### Idle capacity and mass offline: {} module connections, then {} idle dashboards\n",
        plan.modules, plan.idle_dashboards
    );
    if let Some(why) = &plan.limited_by {
        let _ = writeln!(out, "Not 10,000 modules: {why}\n");
    }
    let _ = writeln!(
        out,
        "| target | B / idle module connection | × node-ref | fds / connection | offline events received (of {}) | all offline after ms (complete runs) | × node-ref | CPU-s for the drop | B / idle dashboard | × node-ref |",
        plan.modules
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in &sums {
        if s.ok == 0 {
            let _ = writeln!(
                out,
                "| {} | **failed**: {} | | | | | | | |",
                s.kind.name(),
                s.errors
                    .first()
                    .map_or("", |e| e.as_str())
                    .replace('\n', " ")
            );
            continue;
        }
        let ms = if s.all_offline_ms >= f64::MAX / 2.0 {
            "not all within 30 s".to_owned()
        } else {
            format!("**{:.0}**", s.all_offline_ms)
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.0} | {} ({}/{}) | {} | {} | {} | {} |",
            s.kind.name(),
            num(s.per_module, 0),
            node.map_or("–".into(), |n| ratio(s.per_module, n.per_module)),
            num(s.fds, 1),
            s.offline_seen,
            ms,
            s.complete,
            s.ok,
            node.filter(|n| s.all_offline_ms < f64::MAX / 2.0 && n.all_offline_ms < f64::MAX / 2.0)
                .map_or("–".into(), |n| ratio(s.all_offline_ms, n.all_offline_ms)),
            num(s.drop_cpu, 2),
            num(s.per_dashboard, 0),
            node.map_or("–".into(), |n| ratio(s.per_dashboard, n.per_dashboard)),
        );
    }
}

fn targets_section(out: &mut String, r: &Report) {
    let _ = writeln!(out, "\n### The issue's targets\n");
    let _ = writeln!(out, "| target | measured | verdict |");
    let _ = writeln!(out, "|---|---|---|");
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "**met**",
        Some(false) => "**not met**",
        None => "not measured",
    };
    for f in &r.fan {
        let sums = fan_summaries(f);
        let (hub, node) = (find(&sums, Kind::Hub), find(&sums, Kind::NodeRef));
        let measured = match (hub, node) {
            (Some(h), Some(n)) => format!(
                "hub {} msgs/s vs node-ref {} msgs/s: **{}**",
                num(h.sustained, 0),
                num(n.sustained, 0),
                ratio(h.sustained, n.sustained)
            ),
            _ => "hub or node-ref missing".into(),
        };
        let ok = hub.zip(node).map(|(h, n)| h.sustained >= 5.0 * n.sustained);
        let _ = writeln!(
            out,
            "| ≥ 5× node-ref sustained throughput ({}) | {measured} | {} |",
            f.name,
            verdict(ok)
        );
        if f.name == "fan-in" {
            let rss_at = |kind: Kind, rate: f64| {
                let runs = f.runs.iter().find(|(k, _)| *k == kind).map(|(_, r)| r);
                median(
                    runs.into_iter()
                        .flatten()
                        .filter_map(|r| r.as_ref().ok())
                        .filter_map(|r| passed_at(r, rate))
                        .map(|s| s.rss_kib as f64 / 1024.0),
                )
            };
            let mem = common_rate(f, &[Kind::Hub, Kind::NodeRef])
                .map(|rate| (rate, rss_at(Kind::Hub, rate), rss_at(Kind::NodeRef, rate)));
            let _ = writeln!(
                out,
                "| ≤ 0.25× node-ref memory (fan-in, RSS at the same load) | {} | {} |",
                mem.map_or("–".into(), |(rate, h, n)| format!(
                    "at {rate:.0} msgs/s: hub {h:.1} MiB vs node-ref {n:.1} MiB: **{}** (peak over all steps: {} vs {} MiB)",
                    ratio(h, n),
                    hub.map_or("–".into(), |h| num(h.peak_rss_mib, 1)),
                    node.map_or("–".into(), |n| num(n.peak_rss_mib, 1)),
                )),
                verdict(mem.map(|(_, h, n)| h <= 0.25 * n))
            );
            let mosq = find(&sums, Kind::Mosquitto);
            let hm = find(&sums, Kind::HubMosquitto);
            let cpu_at = |kind: Kind, rate: f64| {
                let runs = f.runs.iter().find(|(k, _)| *k == kind).map(|(_, r)| r);
                median(
                    runs.into_iter()
                        .flatten()
                        .filter_map(|r| r.as_ref().ok())
                        .filter_map(|r| passed_at(r, rate))
                        .map(|s| s.cpu_per_10k()),
                )
            };
            let measured = match (hm, mosq) {
                (Some(h), Some(m)) => {
                    let throughput = 1.0 - h.sustained / m.sustained;
                    let cpu = common_rate(f, &[Kind::HubMosquitto, Kind::Mosquitto]).map(|rate| {
                        (
                            rate,
                            cpu_at(Kind::HubMosquitto, rate) / cpu_at(Kind::Mosquitto, rate) - 1.0,
                        )
                    });
                    // The embedded hub against the same floor: what a user saves by not
                    // running a broker at all.
                    let embedded_ok =
                        find(&sums, Kind::Hub).map(|e| 1.0 - e.sustained / m.sustained <= 0.2);
                    let embedded_verdict = verdict(embedded_ok);
                    let verdict = verdict(Some(throughput <= 0.2));
                    let cpu_text = cpu.map_or(String::new(), |(rate, c)| {
                        format!(
                            "; CPU per message at {rate:.0} msgs/s (hub + Mosquitto vs Mosquitto alone): **{:+.0} %**",
                            c * 100.0
                        )
                    });
                    let embedded = match find(&sums, Kind::Hub) {
                        Some(e) => {
                            let cpu = common_rate(f, &[Kind::Hub, Kind::Mosquitto]).map_or(
                                String::new(),
                                |rate| {
                                    format!(
                                        ", CPU per message at {rate:.0} msgs/s {:+.0} %",
                                        (cpu_at(Kind::Hub, rate) / cpu_at(Kind::Mosquitto, rate)
                                            - 1.0)
                                            * 100.0
                                    )
                                },
                            );
                            format!(
                                ". The embedded hub (no Mosquitto): {} vs {} msgs/s ({}){cpu}",
                                num(e.sustained, 0),
                                num(m.sustained, 0),
                                ratio(e.sustained, m.sustained),
                            )
                        }
                        None => String::new(),
                    };
                    (
                        format!(
                            "throughput: {} vs {} msgs/s, {}{cpu_text}{}{embedded}",
                            num(h.sustained, 0),
                            num(m.sustained, 0),
                            if throughput <= 0.0 {
                                "no throughput overhead".to_owned()
                            } else {
                                format!("overhead {:.0} %", throughput * 100.0)
                            },
                            if throughput < -0.2 {
                                " (plain Mosquitto writes every message to each subscriber; behind Mosquitto the hub takes it once and fans it out itself)"
                            } else {
                                ""
                            }
                        ),
                        if embedded_ok.is_some() {
                            format!(
                                "{embedded_verdict} for the embedded hub, {verdict} behind Mosquitto (throughput; hub and Mosquitto share one core)"
                            )
                        } else {
                            format!("{verdict} for throughput")
                        },
                    )
                }
                (None, _) => (
                    format!(
                        "hub-mosquitto did not run ({})",
                        sums.iter()
                            .find(|s| s.kind == Kind::HubMosquitto)
                            .and_then(|s| s.errors.first())
                            .map_or("not selected".into(), |e| first_line(e)),
                    ),
                    "not measured".to_owned(),
                ),
                (Some(_), None) => ("mosquitto did not run".into(), "not measured".to_owned()),
            };
            let _ = writeln!(
                out,
                "| hub overhead over plain Mosquitto fan-in ≤ 20 % (the embedded hub, and hub-mosquitto, vs mosquitto with {}) | {} | {} |",
                subscribers(f.plan.subscribers),
                measured.0,
                measured.1
            );
        }
    }
    if let Some((plan, runs)) = &r.offline {
        let sums = offline_summaries(runs);
        let hub = sums.iter().find(|s| s.kind == Kind::Hub && s.ok > 0);
        let node = sums.iter().find(|s| s.kind == Kind::NodeRef && s.ok > 0);
        let _ = writeln!(
            out,
            "| mass offline ({} modules) fully emitted within 1 s | {} | {} |",
            plan.modules,
            hub.map_or("hub did not run".into(), |h| {
                if h.all_offline_ms >= f64::MAX / 2.0 {
                    "hub: not all within 30 s".into()
                } else {
                    format!("hub: {:.0} ms (median)", h.all_offline_ms)
                }
            }),
            if plan.modules >= 10_000 {
                verdict(hub.map(|h| h.all_offline_ms <= 1000.0))
            } else if plan.limited_by.is_some() {
                "not measured at 10,000 (open-file limit, see below)"
            } else {
                "not measured at 10,000"
            }
        );
        let mem = hub.zip(node);
        let _ = writeln!(
            out,
            "| ≤ 0.25× node-ref memory (per idle connection) | {} | {} |",
            mem.map_or("–".into(), |(h, n)| format!(
                "module connection {} B vs {} B ({}); dashboard {} B vs {} B ({})",
                num(h.per_module, 0),
                num(n.per_module, 0),
                ratio(h.per_module, n.per_module),
                num(h.per_dashboard, 0),
                num(n.per_dashboard, 0),
                ratio(h.per_dashboard, n.per_dashboard)
            )),
            verdict(mem.map(|(h, n)| h.per_module <= 0.25 * n.per_module
                && h.per_dashboard <= 0.25 * n.per_dashboard))
        );
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}

/// The whole report as markdown.
pub fn markdown(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Scale bench: mc-hub vs its peers ({})\n", r.date);
    let _ = writeln!(out, "- command: `{}`", r.command);
    let _ = writeln!(out, "- machine: {}", r.machine);
    let _ = writeln!(
        out,
        "- each target is its own processes on its own loopback ports, pinned to the target CPU; the bench (load + consumers) to the other; ratios are to the medians of the peers"
    );
    for note in &r.notes {
        let _ = writeln!(out, "- note: {note}");
    }
    targets_section(&mut out, r);
    for f in &r.fan {
        fan_section(&mut out, f, &r.steps);
    }
    if let Some((plan, runs)) = &r.offline {
        offline_section(&mut out, plan, runs);
    }
    if let Some(serial) = &r.serial {
        let _ = writeln!(
            out,
            "\n### Serial line rate (hub only: node-ref has no serial link, Mosquitto is MQTT only)\n\n`pipeline-bench --serial`, medians:\n"
        );
        match serial {
            Ok(table) => {
                let _ = writeln!(out, "{table}");
            }
            Err(e) => {
                let _ = writeln!(out, "**failed**: {e}");
            }
        }
    }
    out
}

/// The plot's panels: for each fan scenario, each target's steps of its median repeat.
pub fn panels(r: &Report) -> Vec<Panel> {
    r.fan
        .iter()
        .map(|f| {
            let sums = fan_summaries(f);
            let series = f
                .runs
                .iter()
                .filter_map(|(kind, runs)| {
                    let target = sums.iter().find(|s| s.kind == *kind)?.sustained;
                    // The repeat whose max sustained rate is closest to the median.
                    let run = runs.iter().filter_map(|r| r.as_ref().ok()).min_by(|a, b| {
                        let d =
                            |r: &FanRun| (r.max_sustained().map_or(0.0, |s| s.rate) - target).abs();
                        d(a).total_cmp(&d(b))
                    })?;
                    // One point per rate: its last try.
                    let mut points: Vec<(f64, f64, f64)> = Vec::new();
                    for s in &run.steps {
                        points.retain(|p| p.0 != s.rate);
                        points.push((s.rate, s.pct_ms(50.0), s.pct_ms(99.0)));
                    }
                    Some(Series {
                        kind: *kind,
                        points,
                    })
                })
                .collect();
            Panel {
                title: format!(
                    "{}: {} modules → {} dashboards",
                    f.name, f.plan.modules, f.plan.dashboards
                ),
                series,
            }
        })
        .collect()
}
