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
//! A server in another process (`--server-pid`) is measured the same way, from outside:
//! the sum over its threads (`/proc/PID/task/*`), or with `--server-pid-tree` over the
//! process and every descendant (nginx's master and workers), the tree listed anew at each
//! sample so that a worker restarted mid-run is still counted. A thread or process that
//! ends inside the window takes its CPU time with it; the servers measured keep theirs
//! for the whole run.
//!
//! Why `schedstat` before `stat`: `stat`'s utime and stime are whole clock ticks (10 ms),
//! per thread, so over a 3 s window of a lightly loaded nginx (three processes at a few
//! tenths of a core) the rounding alone is several percent. `schedstat`'s first field is
//! the same on-CPU time in nanoseconds; `stat` is read only when a kernel lacks it.
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
/// Threads of a process looked at when summing its CPU time.
const TASKS_MAX: usize = 4096;
/// Entries of `/proc` looked at when listing a process tree's descendants.
const PROCESSES_MAX: usize = 65_536;

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

/// The parent's pid from the text of a `/proc/PID/stat` file (field 4).
pub fn parse_ppid(stat: &str) -> Option<u32> {
    let close = stat.rfind(')')?;
    stat.get(close + 1..)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Nanoseconds on a CPU from the text of a `/proc/.../schedstat` file (its first field).
pub fn parse_schedstat_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

fn ticks_per_s() -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(per_s).ok().filter(|&t| t > 0)
}

/// One thread's `(comm, CPU time in ns)` from its `/proc/.../task/TID` directory:
/// `schedstat` when the kernel has it, else `stat`'s ticks. `None` when the thread has
/// ended (between listing and reading).
fn task_cpu_ns(task: &std::path::Path) -> Option<(String, u64)> {
    let stat = read_proc(task.join("stat").to_str()?)?;
    let (comm, ticks) = parse_stat(&stat)?;
    let ns = match read_proc(task.join("schedstat").to_str()?) {
        Some(text) => parse_schedstat_ns(&text)?,
        None => ticks.saturating_mul(1_000_000_000) / ticks_per_s()?,
    };
    Some((comm.to_owned(), ns))
}

/// The CPU time of process `pid`'s threads whose comm `keep` accepts, ns; `None` when the
/// process does not exist (or has ended).
fn process_cpu_ns(pid: u32, keep: impl Fn(&str, u32) -> bool) -> Option<u64> {
    let mut total: u64 = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .take(TASKS_MAX)
    {
        let Ok(entry) = entry else { continue };
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        if let Some((comm, ns)) = task_cpu_ns(&entry.path()) {
            if keep(&comm, tid) {
                total = total.saturating_add(ns);
            }
        }
    }
    Some(total)
}

/// `pid` and every process descended from it, parents first.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.take(PROCESSES_MAX).filter_map(Result::ok) {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let ppid = read_proc(&format!("/proc/{child}/stat")).and_then(|t| parse_ppid(&t));
            if let Some(ppid) = ppid {
                parent_of.push((child, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while let Some(&parent) = tree.get(i) {
        tree.extend(
            parent_of
                .iter()
                .filter(|&&(child, ppid)| ppid == parent && child != pid)
                .map(|&(child, _)| child),
        );
        i += 1;
    }
    tree
}

/// Whose CPU time is the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCpu {
    /// This process's threads other than the client threads and the main thread: the
    /// router (or bare responder) started in-process.
    InProcess,
    /// Another process (`--server-pid`), with its descendants when `tree`
    /// (`--server-pid-tree`).
    Pid { pid: u32, tree: bool },
}

impl ServerCpu {
    /// CPU seconds used so far; `None` when it cannot be read (the process is gone).
    pub fn cpu_s(&self) -> Option<f64> {
        let ns = match *self {
            ServerCpu::InProcess => {
                let main = std::process::id();
                process_cpu_ns(main, |comm, tid| {
                    tid != main && !comm.starts_with(CLIENT_THREAD_PREFIX)
                })?
            }
            ServerCpu::Pid { pid, tree: false } => process_cpu_ns(pid, |_, _| true)?,
            ServerCpu::Pid { pid, tree: true } => {
                let root = process_cpu_ns(pid, |_, _| true)?;
                process_tree(pid)
                    .into_iter()
                    .skip(1)
                    .filter_map(|p| process_cpu_ns(p, |_, _| true))
                    .fold(root, u64::saturating_add)
            }
        };
        Some(ns as f64 / 1e9)
    }

    /// What is measured, for the report: `router threads in this process`, `process 42`,
    /// `process 42 and its descendants`.
    pub fn describe(&self) -> String {
        match *self {
            ServerCpu::InProcess => "server threads in this process".to_owned(),
            ServerCpu::Pid { pid, tree: false } => format!("process {pid}"),
            ServerCpu::Pid { pid, tree: true } => format!("process {pid} and its descendants"),
        }
    }
}

/// Whether process `pid` exists (its `/proc/PID/stat` is readable).
pub fn process_exists(pid: u32) -> bool {
    pid != 0 && read_proc(&format!("/proc/{pid}/stat")).is_some()
}

/// This process's resident memory, MiB.
pub fn rss_mb() -> Option<f64> {
    let kb = parse_vm_rss_kb(&read_proc("/proc/self/status")?)?;
    Some(kb as f64 / 1024.0)
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
        assert_eq!(parse_ppid(stat), Some(1));
        assert_eq!(
            parse_schedstat_ns("2061094386 120906213 8471\n"),
            Some(2061094386)
        );
        assert_eq!(parse_schedstat_ns(""), None);
    }

    /// This process has a resident size and its own threads' CPU time is readable.
    #[test]
    fn reads_this_process() {
        assert!(rss_mb().is_some_and(|mb| mb > 0.0));
        let in_process = ServerCpu::InProcess.cpu_s();
        assert!(in_process.is_some_and(|s| s >= 0.0));
        let me = ServerCpu::Pid {
            pid: std::process::id(),
            tree: true,
        };
        assert!(me.cpu_s().is_some_and(|s| s > 0.0));
        assert!(process_exists(std::process::id()));
        assert!(!process_exists(0));
        let env = Env::detect("shardline bench");
        assert!(env.cores >= 1);
        assert_eq!(env.command_line, "shardline bench");
    }
}
