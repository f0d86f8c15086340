//! What the load generator asks of the operating system: pinning, precise timers, and
//! the figures a report records about the machine and the in-process router.
//!
//! Why per-thread CPU time from `/proc/self/task/*/stat` rather than `/proc/self/stat`:
//! with an embedded router the process also holds the client threads, and their CPU time
//! is the load generator's, not the router's. Summing every task except the client
//! threads (named `bench-N`) and the main thread gives the router's own CPU time.
//! `VmRSS` cannot be split that way; it includes the client's buffers and histograms
//! (a few MiB).
//!
//! Sharing the process is not free for the router: glommio issues
//! `membarrier(PRIVATE_EXPEDITED)` each time an executor goes to sleep, and that
//! interrupts every CPU running a thread of the process, the client's included. Measured
//! against the same router in its own process (`perf stat`, 5,000 req/s, 2-core VM), the
//! difference in the router's CPU time and latency was within run-to-run noise; a
//! `--target` run against `shardline serve` is the check when in doubt.

use std::io;
use std::process::Command;

use serde::Serialize;

/// The client threads' name prefix (`bench-0`, `bench-1`, …).
pub const CLIENT_THREAD_PREFIX: &str = "bench-";
/// Bytes read from one `/proc` file.
const PROC_FILE_BYTES_MAX: u64 = 64 * 1024;
/// Threads of this process looked at when summing the router's CPU time.
const TASKS_MAX: usize = 4096;

/// Pins the calling thread to `core`.
pub fn pin_current_thread(core: usize) -> io::Result<()> {
    if core >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "core out of range",
        ));
    }
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET stays within it (checked).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(core, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of that size.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the calling thread's timer slack to 1 ns: its sleeps end when asked, not up to
/// 50 µs later (the default slack), which pacing to the microsecond needs.
pub fn precise_timers() {
    // SAFETY: PR_SET_TIMERSLACK takes one unsigned long and affects this thread only.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
}

fn read_proc(path: &str) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(PROC_FILE_BYTES_MAX).read_to_string(&mut text))
        .ok()?;
    Some(text)
}

/// `VmRSS` in kB from the text of `/proc/PID/status`.
pub fn parse_vm_rss_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `(comm, utime + stime in clock ticks)` from the text of a `/proc/.../stat` file.
pub fn parse_stat(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    // After the comm: field 3 (state) is index 0, so utime (14) is 11 and stime (15) 12.
    let mut rest = stat.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((comm, utime + stime))
}

/// This process's resident memory, MiB.
pub fn rss_mb() -> Option<f64> {
    let kb = parse_vm_rss_kb(&read_proc("/proc/self/status")?)?;
    Some(kb as f64 / 1024.0)
}

/// CPU seconds used so far by this process's threads other than the client threads and
/// the main thread: the embedded router's.
pub fn router_cpu_s() -> Option<f64> {
    let pid = std::process::id().to_string();
    let mut ticks = 0;
    for entry in std::fs::read_dir("/proc/self/task").ok()?.take(TASKS_MAX) {
        let Ok(entry) = entry else { continue };
        let tid = entry.file_name();
        if tid.to_str() == Some(pid.as_str()) {
            continue;
        }
        let path = entry.path().join("stat");
        // A thread may end between listing and reading; it is skipped.
        let Some(text) = path.to_str().and_then(read_proc) else {
            continue;
        };
        if let Some((comm, t)) = parse_stat(&text) {
            if !comm.starts_with(CLIENT_THREAD_PREFIX) {
                ticks += t;
            }
        }
    }
    // SAFETY: sysconf has no preconditions.
    let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_s > 0).then(|| ticks as f64 / per_s as f64)
}

/// The machine and the command a report was taken with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Env {
    pub cpu_model: String,
    /// CPUs this process may run on.
    pub cores: usize,
    pub kernel: String,
    /// `git rev-parse HEAD` in the working directory; `null` outside a repository.
    pub git_commit: Option<String>,
    pub command_line: String,
}

impl Env {
    pub fn detect(command_line: &str) -> Env {
        let cpu_model = read_proc("/proc/cpuinfo")
            .and_then(|t| {
                let line = t.lines().find(|l| l.starts_with("model name"))?;
                Some(line.split_once(':')?.1.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = read_proc("/proc/sys/kernel/osrelease")
            .map_or_else(|| "unknown".into(), |k| k.trim().to_owned());
        Env {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel,
            git_commit: git_commit(),
            command_line: command_line.to_owned(),
        }
    }
}

fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !commit.is_empty()).then_some(commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two /proc formats the report reads, including a comm with spaces and parens.
    #[test]
    fn parses_proc_files() {
        let status = "Name:\tshardline\nVmPeak:\t  99 kB\nVmRSS:\t   20480 kB\nThreads: 4\n";
        assert_eq!(parse_vm_rss_kb(status), Some(20480));
        let stat = "4242 (shard-0 (x)) S 1 4242 4242 0 -1 4194368 100 0 0 0 250 50 0 0 20 0";
        assert_eq!(parse_stat(stat), Some(("shard-0 (x)", 300)));
        assert_eq!(parse_stat("garbage"), None);
    }

    /// This process has a resident size and its own threads' CPU time is readable.
    #[test]
    fn reads_this_process() {
        assert!(rss_mb().is_some_and(|mb| mb > 0.0));
        assert!(router_cpu_s().is_some());
        let env = Env::detect("shardline bench");
        assert!(env.cores >= 1);
        assert_eq!(env.command_line, "shardline bench");
    }
}
