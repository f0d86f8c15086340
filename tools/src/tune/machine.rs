//! Reading the machine's current settings from `/proc` and `/sys`, under a root directory.
//!
//! The root is injectable (`--root DIR`) so that tests build a fake `/proc` and `/sys` tree
//! and `tune check` reads it exactly as it reads a real node; nothing here writes. A file
//! that does not exist is `None` (the kernel lacks the knob, or the machine the feature:
//! a VM has no cpufreq), which `check` reports as not applicable rather than as a
//! difference nobody can fix.

use std::io::Read;
use std::path::{Path, PathBuf};

use shards::topology::parse_cpu_list;
use shards::CoreId;

/// Bytes read from one `/proc` or `/sys` file (a cpu list of 1024 cores fits).
pub const KNOB_BYTES_MAX: u64 = 16 << 10;
/// Interrupts inspected under `/proc/irq` (a large node has a few thousand).
pub const IRQS_MAX: usize = 8192;
/// Processes scanned under `/proc` to find nats-server.
pub const PROCESSES_MAX: usize = 65_536;
/// Idle states read per core (the kernel's `CPUIDLE_STATE_MAX` is 10).
pub const IDLE_STATES_MAX: usize = 16;

/// The machine under `root` (`/` for the live one).
#[derive(Debug, Clone)]
pub struct Machine {
    root: PathBuf,
}

/// One interrupt and the cores it may run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Irq {
    pub number: u32,
    pub cores: Vec<CoreId>,
}

impl Machine {
    pub fn new(root: &Path) -> Machine {
        Machine {
            root: root.to_path_buf(),
        }
    }

    /// A file's contents, trimmed; `None` when it is absent or unreadable.
    pub fn read(&self, path: &str) -> Option<String> {
        let full = self.root.join(path.trim_start_matches('/'));
        let mut text = String::new();
        let file = std::fs::File::open(full).ok()?;
        file.take(KNOB_BYTES_MAX).read_to_string(&mut text).ok()?;
        Some(text.trim().to_owned())
    }

    /// A sysctl by its dotted name.
    pub fn sysctl(&self, key: &str) -> Option<String> {
        self.read(&sysctl_path(key))
    }

    /// The online cores, from `/sys/devices/system/cpu/online`.
    pub fn online_cores(&self) -> Option<Vec<CoreId>> {
        let text = self.read("sys/devices/system/cpu/online")?;
        parse_cpu_list(&text).ok().filter(|c| !c.is_empty())
    }

    /// The cpufreq governor of one core.
    pub fn governor(&self, core: CoreId) -> Option<String> {
        let cpu = core.0;
        self.read(&format!(
            "sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"
        ))
    }

    /// Exit latencies (µs) of the idle states enabled on one core; `None` without cpuidle.
    pub fn enabled_idle_latencies(&self, core: CoreId) -> Option<Vec<u64>> {
        let dir = format!("sys/devices/system/cpu/cpu{}/cpuidle", core.0);
        let mut latencies = Vec::new();
        for state in 0..IDLE_STATES_MAX {
            let Some(latency) = self.read(&format!("{dir}/state{state}/latency")) else {
                break;
            };
            let disabled = self.read(&format!("{dir}/state{state}/disable"));
            if disabled.as_deref() != Some("1") {
                latencies.push(latency.parse().unwrap_or(u64::MAX));
            }
        }
        (!latencies.is_empty()).then_some(latencies)
    }

    /// The selected transparent huge page mode (the bracketed word).
    pub fn transparent_hugepages(&self) -> Option<String> {
        let text = self.read("sys/kernel/mm/transparent_hugepage/enabled")?;
        let start = text.find('[')?;
        let end = text[start..].find(']')? + start;
        Some(text[start + 1..end].to_owned())
    }

    /// The kernel command line.
    pub fn cmdline(&self) -> Option<String> {
        self.read("proc/cmdline")
    }

    /// Every numbered interrupt with a readable affinity, ascending.
    pub fn irqs(&self) -> Vec<Irq> {
        let Ok(entries) = std::fs::read_dir(self.root.join("proc/irq")) else {
            return Vec::new();
        };
        let mut numbers: Vec<u32> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .take(IRQS_MAX)
            .collect();
        numbers.sort_unstable();
        let affinity = |n: u32| self.read(&format!("proc/irq/{n}/smp_affinity_list"));
        let irq = |n| {
            let cores = parse_cpu_list(&affinity(n)?).ok()?;
            Some(Irq { number: n, cores })
        };
        numbers.into_iter().filter_map(irq).collect()
    }

    /// The allowed cores of every running nats-server, by pid.
    pub fn nats_servers(&self) -> Vec<(u32, Vec<CoreId>)> {
        let Ok(entries) = std::fs::read_dir(self.root.join("proc")) else {
            return Vec::new();
        };
        let pids = entries
            .filter_map(Result::ok)
            .take(PROCESSES_MAX)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok());
        let mut found: Vec<(u32, Vec<CoreId>)> = pids
            .filter(|pid| self.read(&format!("proc/{pid}/comm")).as_deref() == Some("nats-server"))
            .filter_map(|pid| {
                let status = self.read(&format!("proc/{pid}/status"))?;
                let line = status
                    .lines()
                    .find(|l| l.starts_with("Cpus_allowed_list:"))?;
                let list = line.split_once(':')?.1;
                Some((pid, parse_cpu_list(list).ok()?))
            })
            .collect();
        found.sort_unstable();
        found
    }
}

/// `/proc/sys` path of a dotted sysctl name.
pub fn sysctl_path(key: &str) -> String {
    format!("proc/sys/{}", key.replace('.', "/"))
}

/// The value of `name=` on a kernel command line (the last one wins, as in the kernel);
/// `Some("")` for a bare flag.
pub fn boot_param<'a>(cmdline: &'a str, name: &str) -> Option<&'a str> {
    let args = cmdline.split(" -- ").next().unwrap_or("");
    args.split_whitespace()
        .rev()
        .find_map(|arg| match arg.split_once('=') {
            Some((key, value)) if key == name => Some(value),
            None if arg == name => Some(""),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_params_stop_at_the_init_arguments() {
        let line = "quiet isolcpus=1-3 nohz_full=1-3 -- isolcpus=9";
        assert_eq!(boot_param(line, "isolcpus"), Some("1-3"));
        assert_eq!(boot_param(line, "quiet"), Some(""));
        assert_eq!(boot_param(line, "rcu_nocbs"), None);
    }
}
