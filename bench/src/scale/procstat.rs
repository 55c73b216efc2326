//! What Linux says about a target's processes: CPU time (`/proc/<pid>/stat`, all threads) and
//! resident memory (`/proc/<pid>/status`).

use std::fs;

/// Linux reports CPU time in `USER_HZ` ticks, 100 per second on every mainstream arch.
const TICKS_PER_SEC: f64 = 100.0;

/// CPU seconds (user + system, every thread) a process consumed so far; 0 if it is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised name start at field 3 (state); utime is 14, stime 15.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    ticks as f64 / TICKS_PER_SEC
}

fn status_kib(pid: u32, key: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Resident set size now, KiB (0 if the process is gone).
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// Peak resident set size, KiB.
pub fn hwm_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// Open file descriptors of `pids`, summed (sockets included).
pub fn fds(pids: &[u32]) -> usize {
    pids.iter()
        .filter_map(|p| fs::read_dir(format!("/proc/{p}/fd")).ok())
        .map(|d| d.count())
        .sum()
}

/// A sample over several processes (a target can be two: the hub and Mosquitto).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// CPU seconds so far, summed.
    pub cpu_s: f64,
    /// RSS now, KiB, summed.
    pub rss_kib: u64,
}

/// Samples `pids` now.
pub fn sample(pids: &[u32]) -> Sample {
    Sample {
        cpu_s: pids.iter().map(|p| cpu_seconds(*p)).sum(),
        rss_kib: pids.iter().map(|p| rss_kib(*p)).sum(),
    }
}

/// Peak RSS of `pids`, summed, KiB.
pub fn peak_kib(pids: &[u32]) -> u64 {
    pids.iter().map(|p| hwm_kib(*p)).sum()
}
