//! What the kernel says about this process (Linux `/proc/self`), for `GET /metrics`. Elsewhere,
//! or when a file cannot be read, the values are `None` and the metrics are left out.

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

#[cfg(test)]
mod tests {
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
}
