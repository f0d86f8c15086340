//! `shardline tune`: the node's kernel and CPU settings against a profile in
//! `tuning/profiles/`.
//!
//! A p99 budget of microseconds is lost as easily to the machine as to the code: an
//! interrupt landing on a shard core, a deep idle state, a frequency ramp, a page
//! migration. The profiles say what the node should look like and why; `check` reads the
//! machine and says what differs and the command that fixes it; `plan` prints every
//! command without running one. Nothing here writes to the machine: applying is a reviewed
//! act (`scripts/apply_tuning.sh` for the sysctls, with a saved copy to restore).
//!
//! Layout: `profile` (the TOML files), `cores` (rules → a core plan for any core count),
//! `machine` (reads `/proc` and `/sys` under an injectable root, for tests), `check` and
//! `plan` (pure renderings). This module resolves the arguments. The router's config is
//! read by the caller (`RouterConfig`): this crate sits below the router's library, so it
//! cannot parse the router's config itself, and one parser means one meaning of
//! `server.cores` and `server.poll`.

mod check;
mod cores;
mod machine;
mod plan;
mod profile;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use shards::{CoreId, CoreSelection, PollMode, Topology};

pub use check::{check, Report, RouterValues, Row, Status};
pub use cores::{CorePlan, CoreRules, Rule, CORE_OVERRIDES_MAX};
pub use machine::{Machine, IDLE_STATES_MAX, IRQS_MAX, KNOB_BYTES_MAX, PROCESSES_MAX};
pub use plan::{render, sysctl_conf, sysctl_steps, SysctlStep};
pub use profile::{
    load, Profile, BOOT_PARAMS_MAX, BUILT_IN, PROFILES_DIR_DEFAULT, PROFILE_BYTES_MAX,
};
pub use profile::{poll_name, RouterSettings, POLL_MODES};
pub use profile::{Expect, Scalar, Setting, SYSCTLS_MAX, VALUE_BYTES_MAX};

/// Why a tune command could not run (exit 2); differences are not errors.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// No file at the profile's path.
    #[error("{}: no such profile (available: {available}); give a name or a path, \
             and --profiles-dir if the profiles are elsewhere", path.display())]
    ProfileNotFound { path: PathBuf, available: String },
    /// The profile file exists but cannot be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The profile does not parse or breaks a rule.
    #[error("{}: invalid profile: {reason}", path.display())]
    InvalidProfile { path: PathBuf, reason: String },
    /// `--cores` is not a count or a cpu list.
    #[error("--cores {input:?}: give a count (8) or a cpu list (0-7)")]
    Cores { input: String },
    /// The machine's online cores could not be read and no `--cores` was given.
    #[error("cannot read {}/sys/devices/system/cpu/online; give --cores", root.display())]
    NoCores { root: PathBuf },
    /// The profile's core rules cannot be met on this core count.
    #[error("profile {profile}: {reason}")]
    Plan { profile: String, reason: String },
}

/// `shardline tune …`.
#[derive(Debug, Clone, Subcommand)]
pub enum TuneCommand {
    /// Compare the machine with a profile: one row per setting with the command that
    /// fixes it. Exit 0 (1 with --strict and a DIFF; 2 when it cannot run).
    Check(CheckArgs),
    /// Print the commands and kernel arguments for a profile; changes nothing.
    Plan(PlanArgs),
}

/// What both commands take.
#[derive(Debug, Clone, Args)]
pub struct ProfileArgs {
    /// A profile name (a built-in profile: dev, low-latency, throughput; or one in
    /// --profiles-dir) or a path to a profile file.
    #[arg(long)]
    pub profile: String,
    /// Look profile names up in this directory instead of the built-in profiles.
    #[arg(long)]
    pub profiles_dir: Option<PathBuf>,
    /// The machine's cores, instead of the online ones: a count (8 = cores 0-7) or a cpu
    /// list (0-3,8-11).
    #[arg(long)]
    pub cores: Option<String>,
    /// Read /proc and /sys under this directory instead of / (tests, another machine's
    /// copy).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
}

/// `tune check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// The router's config, whose `server.cores` is checked against the core plan and
    /// `server.poll` against the profile [default: config/shardline.toml; without one,
    /// those rows are N/A].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Exit 1 when any setting differs.
    #[arg(long)]
    pub strict: bool,
}

/// `tune plan`.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// Print only the sysctls, as `key = value` lines (what scripts/apply_tuning.sh reads).
    #[arg(long)]
    pub sysctl_conf: bool,
}

/// What `tune check` needs of the router's config, given by the binary that knows it.
pub struct RouterConfig<'a> {
    /// The config looked for when `--config` is not given.
    pub default_path: &'a Path,
    /// A config file's `server.cores`, or a one-line reason it cannot be read.
    pub cores: &'a dyn Fn(&Path) -> Result<CoreSelection, String>,
    /// A config file's `server.poll`, or a one-line reason it cannot be read.
    pub poll: &'a dyn Fn(&Path) -> Result<PollMode, String>,
}

/// Runs a tune command, printing to standard output.
pub fn run(command: &TuneCommand, config: &RouterConfig<'_>) -> Result<ExitCode, TuneError> {
    match command {
        TuneCommand::Check(args) => {
            let (profile, plan, machine) = prepare(&args.profile)?;
            // The default config is looked for, not required: on a node without the
            // repository there is nothing to compare, which is not a difference.
            let default = config.default_path;
            let path = match &args.config {
                Some(path) => Some(path.as_path()),
                None => default.exists().then_some(default),
            };
            let router = path.map(|path| router_values(config, path, &plan));
            let report = check(&profile, &plan, &machine, router.as_ref());
            print!("{report}");
            let failed = args.strict && report.count(Status::Diff) > 0;
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        TuneCommand::Plan(args) => {
            let (profile, plan, machine) = prepare(&args.profile)?;
            if args.sysctl_conf {
                print!("{}", sysctl_conf(&profile, &machine));
            } else {
                print!("{}", render(&profile, &plan, &machine));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Loads the profile, finds the machine's cores and makes the core plan.
fn prepare(args: &ProfileArgs) -> Result<(Profile, CorePlan, Machine), TuneError> {
    let profile = load(&args.profile, args.profiles_dir.as_deref())?;
    let machine = Machine::new(&args.root);
    let cores = match &args.cores {
        Some(text) => parse_cores(text)?,
        None => machine.online_cores().ok_or_else(|| TuneError::NoCores {
            root: args.root.clone(),
        })?,
    };
    let plan = profile
        .cores
        .plan(&cores)
        .map_err(|reason| TuneError::Plan {
            profile: profile.name.clone(),
            reason,
        })?;
    Ok((profile, plan, machine))
}

/// `--cores`: a count `n` means cores `0..n`; anything else is a cpu list.
fn parse_cores(text: &str) -> Result<Vec<CoreId>, TuneError> {
    let bad = || TuneError::Cores {
        input: text.to_owned(),
    };
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let n: usize = text.parse().map_err(|_| bad())?;
        if n == 0 || n > shards::CORES_MAX {
            return Err(bad());
        }
        return Ok((0..n).map(CoreId).collect());
    }
    let cores = shards::topology::parse_cpu_list(text).map_err(|_| bad())?;
    if cores.is_empty() {
        return Err(bad());
    }
    Ok(cores)
}

/// What `check` compares of the config at `path`: its `server.cores` resolved on the
/// plan's machine, and its `server.poll`.
fn router_values(config: &RouterConfig<'_>, path: &Path, plan: &CorePlan) -> RouterValues {
    RouterValues {
        path: path.to_path_buf(),
        cores: router_cores(config, path, plan),
        poll: (config.poll)(path),
    }
}

/// The router config's `server.cores` resolved on the plan's machine, as the server would
/// resolve it there; or a one-line reason.
fn router_cores(
    config: &RouterConfig<'_>,
    path: &Path,
    plan: &CorePlan,
) -> Result<Vec<CoreId>, String> {
    let selection = (config.cores)(path)?;
    let topology = Topology::from_parts(&plan.cores, None).map_err(|e| e.to_string())?;
    topology.select(&selection).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_flag_takes_a_count_or_a_list() {
        assert_eq!(parse_cores("2").unwrap(), vec![CoreId(0), CoreId(1)]);
        assert_eq!(parse_cores("4-5").unwrap(), vec![CoreId(4), CoreId(5)]);
        assert!(parse_cores("0").is_err());
        assert!(parse_cores("two").is_err());
    }
}
