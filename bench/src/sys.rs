//! What the bench reads from Linux: resident memory, per-thread CPU time, and thread pinning.
//!
//! Threads are grouped by name: the hub runtime's workers are `hub-rt`, rumqttd's router thread
//! is `router-<id>`, SQLite workers are `sqlx-sqlite-*`; all of those are "hub side". The load
//! runtime's workers are `load-rt`; everything else (the main thread) is "load side" too.

use std::{
    collections::{HashMap, HashSet},
    fs,
    process::{Command, Stdio},
};

/// Resident set size of this process, in KiB.
pub fn rss_kib() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Every thread of this process: (tid, name).
fn threads() -> Vec<(u32, String)> {
    let Ok(dir) = fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let tid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = fs::read_to_string(e.path().join("comm")).ok()?;
        Some((tid, comm.trim().to_owned()))
    })
    .collect()
}

/// The group a thread belongs to, by name.
pub fn group(name: &str) -> &'static str {
    if name.starts_with("hub-rt") || name.starts_with("sqlx") {
        "hub"
    } else if name.starts_with("router-") {
        "router"
    } else if name.starts_with("load-rt") {
        "load"
    } else {
        "other"
    }
}

/// CPU ticks (user + system, `USER_HZ` = 100 per second on Linux) consumed so far, per group.
pub fn cpu_ticks() -> HashMap<&'static str, u64> {
    let mut out = HashMap::new();
    for (tid, name) in threads() {
        let Ok(stat) = fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised name start at field 3 (state); utime is 14, stime 15.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
            .sum();
        *out.entry(group(&name)).or_default() += ticks;
    }
    out
}

/// Time on CPU in nanoseconds (first field of `/proc/self/task/<tid>/schedstat`) consumed so
/// far, per thread: (group, ns) by tid. Finer than [`cpu_ticks`]' 10 ms; subtract two samples
/// with [`cpu_ns_delta`], which copes with threads that come and go (sqlx workers do).
pub fn cpu_ns() -> HashMap<u32, (&'static str, u64)> {
    let mut out = HashMap::new();
    for (tid, name) in threads() {
        let Ok(stat) = fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")) else {
            continue;
        };
        if let Some(ns) = stat
            .split_whitespace()
            .next()
            .and_then(|f| f.parse::<u64>().ok())
        {
            out.insert(tid, (group(&name), ns));
        }
    }
    out
}

/// Nanoseconds on CPU between two [`cpu_ns`] samples for the threads whose name starts with
/// `prefix` (threads that exited in between are lost; threads born in between count whole).
pub fn cpu_ns_delta(
    before: &HashMap<u32, (&'static str, u64)>,
    after: &HashMap<u32, (&'static str, u64)>,
    names: &HashMap<u32, String>,
    prefix: &str,
) -> u64 {
    after
        .iter()
        .filter(|(tid, _)| names.get(tid).is_some_and(|n| n.starts_with(prefix)))
        .map(|(tid, (_, ns))| ns.saturating_sub(before.get(tid).map_or(0, |(_, b)| *b)))
        .sum()
}

/// Thread names by tid.
pub fn thread_names() -> HashMap<u32, String> {
    threads().into_iter().collect()
}

/// Linux reports thread CPU time in units of `USER_HZ`, which is 100 on every mainstream arch.
pub const TICKS_PER_SEC: f64 = 100.0;

/// Pins hub-side threads to CPU 0 and every other thread to CPU 1 (with `taskset -p`, so no
/// unsafe code), each thread once. Threads created later inherit their creator's affinity, so
/// calling [`Pinner::pin_new`] after each hub start is enough.
pub struct Pinner {
    enabled: bool,
    done: HashSet<u32>,
}

impl Pinner {
    /// Pinning is on when asked and when there are at least two CPUs and `taskset` works.
    pub fn new(wanted: bool) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let taskset = Command::new("taskset")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        Self {
            enabled: wanted && cpus >= 2 && taskset,
            done: HashSet::new(),
        }
    }

    /// Whether threads are actually pinned.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Pins threads not seen before.
    pub fn pin_new(&mut self) {
        if !self.enabled {
            return;
        }
        for (tid, name) in threads() {
            if !self.done.insert(tid) {
                continue;
            }
            let cpu = match group(&name) {
                "hub" | "router" => "0",
                _ => "1",
            };
            let _ = Command::new("taskset")
                .args(["-pc", cpu, &tid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
