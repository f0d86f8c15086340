//! Which cores this process may use, and which of them the operator selected.
//!
//! The usable set is the process affinity mask (`sched_getaffinity`) intersected with the
//! cgroup cpuset when one is readable. The kernel already clamps the affinity mask to the
//! cpuset, so the intersection is belt and braces: it also catches a container runtime that
//! narrows the cpuset after the process started, and it lets the error name both sources.
//!
//! Why not `std::thread::available_parallelism` or glommio's `CpuSet::online`: the first
//! returns a count, not which cores, and the second lists the machine's online CPUs, not the
//! ones this process is allowed to pin to. Pinning to a core outside the mask fails at
//! executor start with an `EINVAL` that names no cause; we refuse earlier, with the list.
//!
//! Cores are selected in ascending order; shard `i` runs on the `i`-th selected core.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::id::{CoreId, CORES_MAX, SHARDS_MAX};

/// Longest cpu list text we parse (a full 1024-core list as single numbers is ~4.9 KB).
pub const CPU_LIST_BYTES_MAX: usize = 8192;

/// cgroup v2 file with the cpus this cgroup may run on, relative to the cgroup directory.
const CGROUP_V2_FILE: &str = "cpuset.cpus.effective";
/// cgroup v1 equivalent, relative to the cpuset hierarchy's cgroup directory.
const CGROUP_V1_FILE: &str = "cpuset.effective_cpus";
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Errors of core discovery and selection. Each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The text is not a cpu list such as `0-3,8,10-11`.
    #[error("invalid cpu list {input:?}: {reason}")]
    CpuListSyntax {
        /// The offending text (truncated to `CPU_LIST_BYTES_MAX`).
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A cpu number at or above `CORES_MAX`.
    #[error("cpu {cpu} is out of range: cpu numbers must be below {CORES_MAX}")]
    CpuOutOfRange {
        /// The number given.
        cpu: usize,
    },
    /// `sched_getaffinity` failed; this is unexpected on Linux.
    #[error("cannot read the process cpu affinity (sched_getaffinity): {0}")]
    Affinity(#[source] std::io::Error),
    /// A cgroup cpuset file exists but does not parse.
    #[error("cannot parse cgroup cpuset file {}: {reason}", path.display())]
    CgroupCpuset {
        /// The file read.
        path: PathBuf,
        /// Why it did not parse.
        reason: String,
    },
    /// The affinity mask and the cgroup cpuset have no core in common.
    #[error(
        "no usable core: affinity mask is [{affinity}] and the cgroup cpuset is [{cpuset}]; \
         widen one of them (taskset, docker --cpuset-cpus, systemd AllowedCPUs=)"
    )]
    NoUsableCores {
        /// The affinity mask as a cpu list.
        affinity: String,
        /// The cgroup cpuset as a cpu list.
        cpuset: String,
    },
    /// `--cores` is not `all`, a count, or a cpu list.
    #[error(
        "invalid core selection {input:?}: use `all`, a count such as `4`, or a cpu list \
         such as `0-3,6` (one core: `5-5`)"
    )]
    SelectionSyntax {
        /// The text given.
        input: String,
    },
    /// A count of zero cores.
    #[error("a core count of 0 selects nothing: use at least 1 or `all`")]
    ZeroCores,
    /// More cores requested than are usable.
    #[error("{requested} cores requested but only {available} are usable ([{usable}])")]
    NotEnoughCores {
        /// Cores asked for.
        requested: usize,
        /// Cores usable.
        available: usize,
        /// The usable set as a cpu list.
        usable: String,
    },
    /// A listed core is outside the usable set.
    #[error(
        "core {core} is not usable by this process: the usable set (affinity mask ∩ cgroup \
         cpuset) is [{usable}]"
    )]
    CoreNotUsable {
        /// The core asked for.
        core: CoreId,
        /// The usable set as a cpu list.
        usable: String,
    },
    /// The same core listed twice: two shards on one core defeat thread-per-core.
    #[error("core {core} is listed twice: each shard needs a core of its own")]
    DuplicateCore {
        /// The repeated core.
        core: CoreId,
    },
    /// The selection has more cores than the runtime supports shards.
    #[error("{requested} cores selected but at most {SHARDS_MAX} shards are supported")]
    TooManyShards {
        /// Cores selected.
        requested: usize,
    },
}

/// Parses kernel cpu list syntax (`0-3,5`, whitespace and a trailing newline allowed)
/// into a sorted list without duplicates. The empty string is the empty set.
pub fn parse_cpu_list(input: &str) -> Result<Vec<CoreId>, TopologyError> {
    let syntax = |reason| TopologyError::CpuListSyntax {
        input: truncate(input, CPU_LIST_BYTES_MAX).to_owned(),
        reason,
    };
    if input.len() > CPU_LIST_BYTES_MAX {
        return Err(syntax("longer than CPU_LIST_BYTES_MAX"));
    }
    let mut present = [false; CORES_MAX];
    let text = input.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    for part in text.split(',') {
        let part = part.trim();
        let (low, high) = match part.split_once('-') {
            Some((low, high)) => (parse_cpu(low, syntax)?, parse_cpu(high, syntax)?),
            None => {
                let cpu = parse_cpu(part, syntax)?;
                (cpu, cpu)
            }
        };
        if low > high {
            return Err(syntax("a range runs backwards (use low-high)"));
        }
        present[low..=high].iter_mut().for_each(|p| *p = true);
    }
    Ok(collect_set(&present))
}

fn parse_cpu(
    text: &str,
    syntax: impl Fn(&'static str) -> TopologyError,
) -> Result<usize, TopologyError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(syntax("empty element"));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax("elements must be decimal cpu numbers or ranges"));
    }
    let cpu: usize = text.parse().map_err(|_| syntax("cpu number too large"))?;
    if cpu >= CORES_MAX {
        return Err(TopologyError::CpuOutOfRange { cpu });
    }
    Ok(cpu)
}

fn collect_set(present: &[bool; CORES_MAX]) -> Vec<CoreId> {
    let cores = present.iter().enumerate().filter(|(_, p)| **p);
    cores.map(|(cpu, _)| CoreId(cpu)).collect()
}

fn truncate(text: &str, bytes_max: usize) -> &str {
    let mut end = text.len().min(bytes_max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Formats a sorted core list in kernel cpu list syntax, collapsing runs: `0-3,5`.
pub fn format_cpu_list(cores: &[CoreId]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < cores.len() {
        let start = cores[i].0;
        let mut end = start;
        while i + 1 < cores.len() && cores[i + 1].0 == end + 1 {
            end += 1;
            i += 1;
        }
        let sep = if out.is_empty() { "" } else { "," };
        let _ = match end > start {
            true => write!(out, "{sep}{start}-{end}"),
            false => write!(out, "{sep}{start}"),
        };
        i += 1;
    }
    out
}

/// The operator's choice of cores (`--cores`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum CoreSelection {
    /// Every usable core.
    #[default]
    All,
    /// The first `n` usable cores in ascending order.
    Count(usize),
    /// Exactly these cores; each must be usable.
    List(Vec<CoreId>),
}

impl FromStr for CoreSelection {
    type Err = TopologyError;

    /// Grammar: `all` | a decimal count (`4`) | a cpu list containing `,` or `-`
    /// (`0-3,6`; a single core is written `5-5` because `5` is a count).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("all") {
            return Ok(CoreSelection::All);
        }
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            let count = text.parse().map_err(|_| TopologyError::SelectionSyntax {
                input: truncate(text, CPU_LIST_BYTES_MAX).to_owned(),
            })?;
            return Ok(CoreSelection::Count(count));
        }
        if text.contains([',', '-']) {
            return parse_cpu_list(text).map(CoreSelection::List);
        }
        Err(TopologyError::SelectionSyntax {
            input: truncate(text, CPU_LIST_BYTES_MAX).to_owned(),
        })
    }
}

/// The cores this process may pin shards to, sorted ascending, never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    usable: Vec<CoreId>,
}

impl Topology {
    /// Reads the affinity mask and the cgroup cpuset of the calling process.
    pub fn detect() -> Result<Topology, TopologyError> {
        let affinity = affinity_mask()?;
        let cpuset = cgroup_cpuset()?;
        Topology::from_parts(&affinity, cpuset.as_deref())
    }

    /// Intersects an affinity mask with an optional cpuset (both sorted). Pure, for tests
    /// and for callers that learn the sets some other way.
    pub fn from_parts(
        affinity: &[CoreId],
        cpuset: Option<&[CoreId]>,
    ) -> Result<Topology, TopologyError> {
        let usable: Vec<CoreId> = match cpuset {
            Some(set) => affinity
                .iter()
                .filter(|c| set.contains(c))
                .copied()
                .collect(),
            None => affinity.to_vec(),
        };
        if usable.is_empty() {
            return Err(TopologyError::NoUsableCores {
                affinity: format_cpu_list(affinity),
                cpuset: cpuset.map_or_else(|| "unrestricted".into(), format_cpu_list),
            });
        }
        Ok(Topology { usable })
    }

    /// The usable cores, ascending.
    pub fn usable(&self) -> &[CoreId] {
        &self.usable
    }

    /// Resolves a selection against the usable set: the cores to pin shards to, ascending.
    pub fn select(&self, selection: &CoreSelection) -> Result<Vec<CoreId>, TopologyError> {
        let usable = || format_cpu_list(&self.usable);
        let chosen = match selection {
            CoreSelection::All => self.usable.clone(),
            CoreSelection::Count(0) => return Err(TopologyError::ZeroCores),
            CoreSelection::Count(n) if *n > self.usable.len() => {
                return Err(TopologyError::NotEnoughCores {
                    requested: *n,
                    available: self.usable.len(),
                    usable: usable(),
                })
            }
            CoreSelection::Count(n) => self.usable[..*n].to_vec(),
            CoreSelection::List(list) => self.select_list(list)?,
        };
        if chosen.len() > SHARDS_MAX {
            return Err(TopologyError::TooManyShards {
                requested: chosen.len(),
            });
        }
        Ok(chosen)
    }

    fn select_list(&self, list: &[CoreId]) -> Result<Vec<CoreId>, TopologyError> {
        if list.is_empty() {
            return Err(TopologyError::ZeroCores);
        }
        let mut chosen = list.to_vec();
        chosen.sort_unstable();
        if let Some(pair) = chosen.windows(2).find(|w| w[0] == w[1]) {
            return Err(TopologyError::DuplicateCore { core: pair[0] });
        }
        if let Some(core) = chosen.iter().find(|c| !self.usable.contains(c)) {
            return Err(TopologyError::CoreNotUsable {
                core: *core,
                usable: format_cpu_list(&self.usable),
            });
        }
        Ok(chosen)
    }
}

/// The calling thread's affinity mask (at startup, that of the process).
fn affinity_mask() -> Result<Vec<CoreId>, TopologyError> {
    // SAFETY: cpu_set_t is a plain bitmask; all-zero is a valid (empty) value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a valid, writable cpu_set_t of `size` bytes; pid 0 is this thread.
    let rc = unsafe { libc::sched_getaffinity(0, size, &mut set) };
    if rc != 0 {
        return Err(TopologyError::Affinity(std::io::Error::last_os_error()));
    }
    // SAFETY: CPU_ISSET only reads the bitmask; every cpu < CPU_SETSIZE is in bounds.
    let cores = (0..CORES_MAX).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) });
    Ok(cores.map(CoreId).collect())
}

/// The cgroup cpuset, v2 then v1, or `None` when no cpuset file is readable or non-empty.
fn cgroup_cpuset() -> Result<Option<Vec<CoreId>>, TopologyError> {
    let self_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for path in cpuset_candidates(&self_cgroup, Path::new(CGROUP_ROOT)) {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        let cores = parse_cpu_list(&text).map_err(|e| TopologyError::CgroupCpuset {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        return Ok(Some(cores));
    }
    Ok(None)
}

/// Cpuset files to try, most specific first, from the text of `/proc/self/cgroup`:
/// the v2 file of our cgroup, the v2 root, the v1 file of our cpuset cgroup, the v1 root.
/// Root fallbacks cover a cgroup namespace whose paths are not visible in our mounts.
pub fn cpuset_candidates(self_cgroup: &str, root: &Path) -> Vec<PathBuf> {
    let mut v2 = Vec::new();
    let mut v1 = Vec::new();
    for line in self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let relative = path.trim_start_matches('/');
        if controllers.is_empty() {
            v2.push(root.join(relative).join(CGROUP_V2_FILE));
        } else if controllers.split(',').any(|c| c == "cpuset") {
            v1.push(root.join("cpuset").join(relative).join(CGROUP_V1_FILE));
        }
    }
    v2.push(root.join(CGROUP_V2_FILE));
    v1.push(root.join("cpuset").join(CGROUP_V1_FILE));
    let mut all = v2;
    all.extend(v1);
    all.dedup();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cores(list: &[usize]) -> Vec<CoreId> {
        list.iter().copied().map(CoreId).collect()
    }

    #[test]
    fn parses_kernel_cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,5").unwrap(), cores(&[0, 1, 2, 3, 5]));
        assert_eq!(parse_cpu_list("0-1\n").unwrap(), cores(&[0, 1]));
        assert_eq!(parse_cpu_list(" 7 , 2-3 ").unwrap(), cores(&[2, 3, 7]));
        assert_eq!(parse_cpu_list("4,4,3-4").unwrap(), cores(&[3, 4]));
        assert_eq!(parse_cpu_list("").unwrap(), cores(&[]));
        assert_eq!(parse_cpu_list("\n").unwrap(), cores(&[]));
        assert_eq!(parse_cpu_list("1023").unwrap(), cores(&[1023]));
    }

    #[test]
    fn rejects_malformed_cpu_lists() {
        for bad in ["0-", "-3", "1,,2", "a", "3-1", "0x1", "1 2", "+1", "1-2-3"] {
            let err = parse_cpu_list(bad).unwrap_err();
            assert!(
                matches!(err, TopologyError::CpuListSyntax { .. }),
                "{bad:?} gave {err}"
            );
        }
        assert!(matches!(
            parse_cpu_list("1024"),
            Err(TopologyError::CpuOutOfRange { cpu: 1024 })
        ));
        assert!(matches!(
            parse_cpu_list("99999999999999999999999"),
            Err(TopologyError::CpuListSyntax { .. })
        ));
        let long = "1,".repeat(CPU_LIST_BYTES_MAX);
        assert!(parse_cpu_list(&long).is_err());
    }

    #[test]
    fn formats_runs() {
        assert_eq!(format_cpu_list(&cores(&[0, 1, 2, 3, 5, 7, 8])), "0-3,5,7-8");
        assert_eq!(format_cpu_list(&cores(&[4])), "4");
        assert_eq!(format_cpu_list(&[]), "");
    }

    #[test]
    fn usable_is_affinity_intersect_cpuset() {
        let affinity = cores(&[0, 1, 2, 3]);
        let set = cores(&[2, 3, 4]);
        let topo = Topology::from_parts(&affinity, Some(&set)).unwrap();
        assert_eq!(topo.usable(), cores(&[2, 3]).as_slice());
        let topo = Topology::from_parts(&affinity, None).unwrap();
        assert_eq!(topo.usable().len(), 4);
        let err = Topology::from_parts(&cores(&[0]), Some(&cores(&[1]))).unwrap_err();
        assert!(err.to_string().contains("affinity mask is [0]"), "{err}");
    }

    #[test]
    fn selection_grammar() {
        assert_eq!("all".parse::<CoreSelection>().unwrap(), CoreSelection::All);
        assert_eq!(
            "3".parse::<CoreSelection>().unwrap(),
            CoreSelection::Count(3)
        );
        assert_eq!(
            "0-1,4".parse::<CoreSelection>().unwrap(),
            CoreSelection::List(cores(&[0, 1, 4]))
        );
        assert_eq!(
            "5-5".parse::<CoreSelection>().unwrap(),
            CoreSelection::List(cores(&[5]))
        );
        let err = "many".parse::<CoreSelection>().unwrap_err();
        assert!(err.to_string().contains("`all`"), "{err}");
    }

    #[test]
    fn selection_is_validated_against_usable_set() {
        let topo = Topology::from_parts(&cores(&[0, 1, 2, 5]), None).unwrap();
        assert_eq!(
            topo.select(&CoreSelection::All).unwrap(),
            cores(&[0, 1, 2, 5])
        );
        assert_eq!(
            topo.select(&CoreSelection::Count(2)).unwrap(),
            cores(&[0, 1])
        );
        let list = CoreSelection::List(cores(&[5, 1]));
        assert_eq!(topo.select(&list).unwrap(), cores(&[1, 5]));

        let err = topo.select(&CoreSelection::Count(9)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "9 cores requested but only 4 are usable ([0-2,5])"
        );
        let err = topo.select(&CoreSelection::List(cores(&[3]))).unwrap_err();
        assert!(err.to_string().starts_with("core 3 is not usable"), "{err}");
        assert!(err.to_string().contains("[0-2,5]"), "{err}");
        let err = topo
            .select(&CoreSelection::List(cores(&[1, 1])))
            .unwrap_err();
        assert!(matches!(
            err,
            TopologyError::DuplicateCore { core: CoreId(1) }
        ));
        assert!(matches!(
            topo.select(&CoreSelection::Count(0)),
            Err(TopologyError::ZeroCores)
        ));
        assert!(matches!(
            topo.select(&CoreSelection::List(vec![])),
            Err(TopologyError::ZeroCores)
        ));
    }

    #[test]
    fn cpuset_candidates_cover_v2_v1_and_roots() {
        let text = "12:cpuset,cpu:/docker/abc\n0::/system.slice/x.service\n";
        let paths = cpuset_candidates(text, Path::new("/cg"));
        let paths: Vec<_> = paths.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "/cg/system.slice/x.service/cpuset.cpus.effective",
                "/cg/cpuset.cpus.effective",
                "/cg/cpuset/docker/abc/cpuset.effective_cpus",
                "/cg/cpuset/cpuset.effective_cpus",
            ]
        );
        let roots_only = cpuset_candidates("", Path::new("/cg"));
        assert_eq!(roots_only.len(), 2);
    }

    /// Detecting on this machine yields a non-empty set that `select(All)` accepts.
    #[test]
    fn detect_on_this_machine() {
        let topo = Topology::detect().unwrap();
        assert!(!topo.usable().is_empty());
        assert_eq!(topo.select(&CoreSelection::All).unwrap(), topo.usable());
    }
}
