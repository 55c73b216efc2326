//! What the kernel says about this process (Linux `/proc/self`), for `GET /metrics`. Elsewhere,
//! or when a file cannot be read, the values are `None` and the metrics are left out. And the
//! one thing the hub asks of the kernel for its threads: the background class for background
//! work ([`background_threads`]).

/// A snapshot of the process's resource use.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessStats {
    /// `VmRSS`.
    pub resident_bytes: Option<usize>,
    /// `VmSize`.
    pub virtual_bytes: Option<usize>,
    /// Entries of `/proc/self/fd`.
    pub open_fds: Option<usize>,
    /// User + system CPU time (`/proc/self/stat`), in seconds.
    pub cpu_seconds: Option<f64>,
    /// `Threads`.
    pub threads: Option<usize>,
}

/// Clock ticks per second of `/proc/self/stat`'s times: 100 on every Linux platform we run on
/// (`sysconf(_SC_CLK_TCK)`, fixed by the kernel ABI for user space).
const CLOCK_TICKS: f64 = 100.0;

impl ProcessStats {
    /// Reads `/proc/self/{status,stat,fd}`.
    pub fn read() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count());
        Self {
            open_fds,
            ..Self::parse(&status, &stat)
        }
    }

    /// The fields of `status` and `stat` texts (see `proc(5)`).
    fn parse(status: &str, stat: &str) -> Self {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse::<usize>().ok())
        };
        // `pid (comm) state ...`: comm may hold spaces and parentheses; fields resume after
        // the last ')'. utime and stime are fields 14 and 15, i.e. 12th and 13th after it.
        let cpu_seconds = stat.rsplit_once(')').and_then(|(_, rest)| {
            let mut fields = rest.split_whitespace().skip(11);
            let utime: u64 = fields.next()?.parse().ok()?;
            let stime: u64 = fields.next()?.parse().ok()?;
            Some((utime + stime) as f64 / CLOCK_TICKS)
        });
        Self {
            resident_bytes: field("VmRSS").map(|kib| kib * 1024),
            virtual_bytes: field("VmSize").map(|kib| kib * 1024),
            open_fds: None,
            cpu_seconds,
            threads: field("Threads"),
        }
    }
}

/// The nice value of background threads: the lowest.
pub const BACKGROUND_NICE: i32 = 19;

/// Moves every thread of this process whose name starts with `prefix` to the background:
/// `SCHED_BATCH` at nice 19 (on Linux, both are per thread), and returns how many it moved.
/// Such a thread never preempts another when it wakes, and under contention gets about 1.5 %
/// of a core against a thread at nice 0 (weights 15 and 1,024): a thread of SQL batches, once
/// a second, no longer takes the core from the realtime path for tens of milliseconds
/// (BENCHMARKS.md), yet it keeps progressing on a saturated core, which matters as it may hold
/// the database's write lock. (`SCHED_IDLE`, a fifth of that share, would let it hold the lock
/// for seconds.) A thread that ends meanwhile is skipped. Elsewhere it does nothing and
/// returns 0.
pub fn background_threads(prefix: &str) -> std::io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        let mut moved = 0;
        for (name, tid) in threads()? {
            if !name.starts_with(prefix) {
                continue;
            }
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: `param` is a valid sched_param that outlives the call; setpriority reads
            // its three integer arguments only.
            let set = unsafe {
                libc::sched_setscheduler(tid, libc::SCHED_BATCH, &param) == 0
                    && libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, BACKGROUND_NICE)
                        == 0
            };
            if !set {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ESRCH) {
                    continue; // ended
                }
                return Err(e);
            }
            moved += 1;
        }
        Ok(moved)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = prefix;
        Ok(0)
    }
}

/// This process's threads: name and thread id (`/proc/self/task`). A thread that ends while
/// they are listed may be left out.
#[cfg(target_os = "linux")]
pub(crate) fn threads() -> std::io::Result<Vec<(String, libc::pid_t)>> {
    let mut threads = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task")? {
        let path = entry?.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue; // ended
        };
        if let Some(tid) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok())
        {
            threads.push((comm.trim_end().to_owned(), tid));
        }
    }
    Ok(threads)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn parses_status_and_a_stat_line_whose_name_has_spaces_and_parentheses() {
        let status = "Name:\thub\nVmSize:\t  204800 kB\nVmRSS:\t   10240 kB\nThreads:\t7\n";
        let stat = "4242 (hub (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 7 0";
        let p = ProcessStats::parse(status, stat);
        assert_eq!(p.resident_bytes, Some(10240 * 1024));
        assert_eq!(p.virtual_bytes, Some(204800 * 1024));
        assert_eq!(p.threads, Some(7));
        assert_eq!(p.cpu_seconds, Some(4.0));
    }

    #[test]
    fn garbage_gives_nothing_rather_than_a_panic() {
        assert_eq!(
            ProcessStats::parse("VmRSS: lots\n", "no parens"),
            ProcessStats::default()
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_memory_and_descriptors() {
        let p = ProcessStats::read();
        assert!(p.resident_bytes.is_some_and(|b| b > 0));
        assert!(p.open_fds.is_some_and(|n| n >= 3));
        assert!(p.threads.is_some_and(|n| n >= 1));
    }

    /// The nice value of thread `tid` of this process (`stat` field 19).
    #[cfg(target_os = "linux")]
    pub(crate) fn thread_nice(tid: libc::pid_t) -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        rest.split_whitespace().nth(16)?.parse().ok()
    }

    /// The scheduling policy of thread `tid` of this process (`SCHED_*`).
    #[cfg(target_os = "linux")]
    pub(crate) fn thread_policy(tid: libc::pid_t) -> Option<i32> {
        // SAFETY: sched_getscheduler reads its integer argument only.
        let policy = unsafe { libc::sched_getscheduler(tid) };
        (policy >= 0).then_some(policy)
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn moves_the_named_threads_only_to_the_background() {
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        let named = std::thread::Builder::new()
            .name("mc-bg-test".into())
            .spawn(move || {
                let _ = started.send(()); // named by now: std names a thread as it starts
                let _ = wait.recv();
            })
            .unwrap();
        running.recv().unwrap();
        let (_, tid) = threads()
            .unwrap()
            .into_iter()
            .find(|(name, _)| name == "mc-bg-test")
            .unwrap();
        // SAFETY: gettid has no arguments and cannot fail.
        let me = unsafe { libc::gettid() };
        assert_eq!(thread_policy(tid), Some(libc::SCHED_OTHER));

        assert_eq!(background_threads("mc-bg-").unwrap(), 1);
        assert_eq!(thread_policy(tid), Some(libc::SCHED_BATCH));
        assert_eq!(thread_nice(tid), Some(BACKGROUND_NICE));
        assert_eq!(
            thread_policy(me),
            Some(libc::SCHED_OTHER),
            "others keep theirs"
        );
        assert_eq!(background_threads("no-such-thread").unwrap(), 0);

        go.send(()).unwrap();
        named.join().unwrap();
    }
}
