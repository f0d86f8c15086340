//! `tune check`: the profile against the machine, one row per setting with the command
//! that fixes a difference.
//!
//! Pure over its inputs: the profile, the core plan, a `Machine` (which reads under an
//! injectable root) and what the router's config says (`RouterValues`). A setting the
//! machine does not have at all (a sysctl of a newer kernel, cpufreq on a VM) is `N/A`, not
//! `DIFF`: `--strict` must be passable on hardware where the knob does not exist.

use std::fmt;
use std::path::PathBuf;

use shards::topology::{format_cpu_list, parse_cpu_list};
use shards::{CoreId, PollMode};

use super::cores::CorePlan;
use super::machine::{boot_param, Machine};
use super::profile::{poll_name, Expect, Profile, Setting};

/// How a setting compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Diff,
    /// The machine has no such setting; nothing to fix.
    NotApplicable,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "OK",
            Status::Diff => "DIFF",
            Status::NotApplicable => "N/A",
        })
    }
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub setting: String,
    pub expected: String,
    pub actual: String,
    pub status: Status,
    /// The command that makes `actual` equal `expected` ("-" when nothing is to be done).
    pub fix: String,
}

/// Every row of one check.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    pub fn count(&self, status: Status) -> usize {
        self.rows.iter().filter(|r| r.status == status).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header = ["SETTING", "EXPECTED", "ACTUAL", "STATUS", "FIX"];
        let mut width = header.map(str::len);
        for r in &self.rows {
            width[0] = width[0].max(r.setting.len());
            width[1] = width[1].max(r.expected.len());
            width[2] = width[2].max(r.actual.len());
        }
        let [w0, w1, w2, w3, _] = width;
        let [h0, h1, h2, h3, h4] = header;
        writeln!(f, "{h0:w0$}  {h1:w1$}  {h2:w2$}  {h3:w3$}  {h4}")?;
        for r in &self.rows {
            let status = r.status.to_string();
            let (s, e, a) = (&r.setting, &r.expected, &r.actual);
            writeln!(f, "{s:w0$}  {e:w1$}  {a:w2$}  {status:w3$}  {}", r.fix)?;
        }
        let (ok, diff) = (self.count(Status::Ok), self.count(Status::Diff));
        let na = self.count(Status::NotApplicable);
        writeln!(f, "{ok} OK, {diff} DIFF, {na} N/A")
    }
}

/// The router config's settings `check` compares, each read by the router's own parser
/// or the one-line reason it could not be.
#[derive(Debug, Clone)]
pub struct RouterValues {
    /// The config file, named in the fix hints.
    pub path: PathBuf,
    /// `server.cores` resolved on the plan's machine, as the router would resolve it there.
    pub cores: Result<Vec<CoreId>, String>,
    /// `server.poll`, environment overrides applied.
    pub poll: Result<PollMode, String>,
}

/// Checks every setting of `profile` on `machine`. `router` is what the router's config
/// says; `None` when there is no config to check.
pub fn check(
    profile: &Profile,
    plan: &CorePlan,
    machine: &Machine,
    router: Option<&RouterValues>,
) -> Report {
    let mut rows = Vec::new();
    for (key, setting) in &profile.sysctl {
        rows.push(sysctl_row(key, setting, machine));
    }
    cpu_rows(profile, plan, machine, &mut rows);
    let cmdline = machine.cmdline();
    for (name, setting) in &profile.boot {
        rows.push(boot_row(name, setting, plan, cmdline.as_deref()));
    }
    rows.push(irq_row(plan, machine));
    rows.push(nats_row(plan, machine));
    rows.push(router_row(plan, router.map(|r| &r.cores)));
    if let Some(poll) = &profile.router.poll {
        rows.push(poll_row(poll, router));
    }
    Report { rows }
}

fn row(setting: String, expected: String, actual: Option<String>, ok: bool, fix: String) -> Row {
    let status = match (&actual, ok) {
        (None, _) => Status::NotApplicable,
        (Some(_), true) => Status::Ok,
        (Some(_), false) => Status::Diff,
    };
    let fix = if status == Status::Diff {
        fix
    } else {
        "-".into()
    };
    let actual = actual.unwrap_or_else(|| "absent".into());
    Row {
        setting,
        expected,
        actual,
        status,
        fix,
    }
}

/// The `sysctl -w` command that sets `key` to what `expect` asks.
pub fn sysctl_command(key: &str, expect: &Expect) -> String {
    let value = match expect {
        Expect::Equal(v) => v.clone(),
        Expect::AtLeast(min) => min.to_string(),
    };
    if value.contains(' ') {
        format!("sysctl -w {key}=\"{value}\"")
    } else {
        format!("sysctl -w {key}={value}")
    }
}

fn sysctl_row(key: &str, setting: &Setting, machine: &Machine) -> Row {
    let expect = setting.expect();
    let actual = machine
        .sysctl(key)
        .map(|v| super::profile::fold_whitespace(&v));
    let ok = actual.as_deref().is_some_and(|a| expect.met_by(a));
    let fix = sysctl_command(key, &expect);
    row(format!("sysctl {key}"), expect.to_string(), actual, ok, fix)
}

fn cpu_rows(profile: &Profile, plan: &CorePlan, machine: &Machine, rows: &mut Vec<Row>) {
    let cpu = &profile.cpu;
    if let Some(governor) = &cpu.governor {
        let want = governor.expect().to_string();
        let actual = by_core(&plan.cores, |c| machine.governor(c));
        let ok = actual.as_deref() == Some(want.as_str());
        let fix = format!("cpupower -c all frequency-set -g {want}");
        rows.push(row("cpu governor".into(), want, actual, ok, fix));
    }
    if let Some(idle) = &cpu.idle_latency_us_max {
        let want: u64 = idle.expect().to_string().parse().unwrap_or(0);
        let deepest = plan
            .shards
            .iter()
            .map(|&c| machine.enabled_idle_latencies(c));
        let deepest: Option<Vec<Vec<u64>>> = deepest.collect();
        let deepest = deepest.map(|per_core| per_core.into_iter().flatten().max().unwrap_or(0));
        let ok = deepest.is_some_and(|d| d <= want);
        let shards = format_cpu_list(&plan.shards);
        let fix = format!("cpupower -c {shards} idle-set -D {want}");
        let setting = format!("cpu idle exit latency (cores {shards})");
        let actual = deepest.map(|d| format!("{d} us"));
        rows.push(row(setting, format!("<= {want} us"), actual, ok, fix));
    }
    if let Some(thp) = &cpu.transparent_hugepages {
        let want = thp.expect().to_string();
        let actual = machine.transparent_hugepages();
        let ok = actual.as_deref() == Some(want.as_str());
        let fix = format!("echo {want} > /sys/kernel/mm/transparent_hugepage/enabled");
        rows.push(row("transparent hugepages".into(), want, actual, ok, fix));
    }
}

/// One value when every core agrees, else `value on LIST` per distinct value; `None`
/// when no core has the file.
fn by_core(cores: &[CoreId], read: impl Fn(CoreId) -> Option<String>) -> Option<String> {
    let mut groups: Vec<(String, Vec<CoreId>)> = Vec::new();
    for &core in cores {
        let value = read(core).unwrap_or_else(|| "absent".into());
        match groups.iter_mut().find(|(v, _)| *v == value) {
            Some((_, list)) => list.push(core),
            None => groups.push((value, vec![core])),
        }
    }
    match groups.as_slice() {
        [(only, _)] if only == "absent" => None,
        [(only, _)] => Some(only.clone()),
        _ => {
            let parts = groups
                .iter()
                .map(|(v, c)| format!("{v} on {}", format_cpu_list(c)));
            Some(parts.collect::<Vec<_>>().join(", "))
        }
    }
}

/// A boot parameter's value as (flags, cpu set), so `1-3` equals `1,2,3` and flag order
/// does not matter.
fn boot_value_key(value: &str) -> (Vec<String>, Vec<CoreId>) {
    let (mut flags, mut cpus) = (Vec::new(), String::new());
    for part in value.split(',').filter(|p| !p.is_empty()) {
        if part.starts_with(|c: char| c.is_ascii_digit()) {
            cpus.push_str(part);
            cpus.push(',');
        } else {
            flags.push(part.to_owned());
        }
    }
    flags.sort();
    let cpus = parse_cpu_list(cpus.trim_end_matches(',')).unwrap_or_default();
    (flags, cpus)
}

fn boot_row(name: &str, setting: &Setting, plan: &CorePlan, cmdline: Option<&str>) -> Row {
    let want = plan.fill(&setting.expect().to_string());
    let actual = cmdline.map(|c| boot_param(c, name).map_or("absent".into(), str::to_owned));
    let ok = actual
        .as_deref()
        .is_some_and(|a| boot_value_key(a) == boot_value_key(&want));
    let fix = format!("grubby --update-kernel=ALL --args={name}={want} && reboot");
    row(format!("boot {name}"), want, actual, ok, fix)
}

fn irq_row(plan: &CorePlan, machine: &Machine) -> Row {
    let allowed = format_cpu_list(&plan.irq);
    let irqs = machine.irqs();
    let actual = (!irqs.is_empty()).then(|| {
        let stray: Vec<String> = irqs
            .iter()
            .filter(|i| i.cores.iter().any(|c| !plan.irq.contains(c)))
            .map(|i| i.number.to_string())
            .collect();
        match stray.len() {
            0 => format!("all {} on {allowed}", irqs.len()),
            n if n <= 6 => format!("{n} elsewhere: {}", stray.join(",")),
            n => format!("{n} elsewhere: {},...", stray[..6].join(",")),
        }
    });
    let ok = actual.as_deref().is_some_and(|a| a.starts_with("all "));
    let fix = format!(
        "systemctl stop irqbalance; for f in /proc/irq/*/smp_affinity_list; \
         do echo {allowed} > \"$f\"; done"
    );
    row(
        "irq affinity".into(),
        format!("within {allowed}"),
        actual,
        ok,
        fix,
    )
}

fn nats_row(plan: &CorePlan, machine: &Machine) -> Row {
    let allowed = format_cpu_list(&plan.nats);
    let servers = machine.nats_servers();
    let actual = (!servers.is_empty()).then(|| {
        let parts = servers
            .iter()
            .map(|(pid, c)| format!("pid {pid} on {}", format_cpu_list(c)));
        parts.collect::<Vec<_>>().join(", ")
    });
    let ok = servers
        .iter()
        .all(|(_, cores)| cores.iter().all(|c| plan.nats.contains(c)));
    let pids: Vec<String> = servers.iter().map(|(pid, _)| pid.to_string()).collect();
    let fix = format!("taskset -apc {allowed} {}", pids.join(" "));
    let mut nats = row(
        "nats-server cores".into(),
        format!("within {allowed}"),
        actual,
        ok,
        fix,
    );
    if nats.status == Status::NotApplicable {
        nats.actual = "not running".into();
    }
    nats
}

/// A cpu list as `server.cores` reads it: a lone number there is a count, so one core
/// `N` is written `N-N`.
pub fn cores_value(cores: &[CoreId]) -> String {
    let list = format_cpu_list(cores);
    if list.contains([',', '-']) {
        list
    } else {
        format!("{list}-{list}")
    }
}

fn router_row(plan: &CorePlan, router_cores: Option<&Result<Vec<CoreId>, String>>) -> Row {
    let expected = format!("within {}", format_cpu_list(&plan.shards));
    let shards = cores_value(&plan.shards);
    let fix = format!("server.cores = \"{shards}\" (or SHARDLINE_SERVER_CORES={shards})");
    let (actual, ok) = match router_cores {
        None => (None, false),
        Some(Ok(cores)) => {
            let within = cores.iter().all(|c| plan.shards.contains(c));
            (Some(format_cpu_list(cores)), within)
        }
        Some(Err(reason)) => (Some(reason.clone()), false),
    };
    no_config(row("router server.cores".into(), expected, actual, ok, fix))
}

/// Names the missing config instead of calling it `absent`, which reads as a knob the
/// machine lacks.
fn no_config(mut router: Row) -> Row {
    if router.status == Status::NotApplicable {
        router.actual = "no config (give --config)".into();
    }
    router
}

fn poll_row(poll: &Setting, router: Option<&RouterValues>) -> Row {
    let want = poll.expect().to_string();
    let (actual, ok) = match router.map(|r| &r.poll) {
        None => (None, false),
        Some(Ok(mode)) => (Some(poll_name(mode).to_owned()), poll_name(mode) == want),
        Some(Err(reason)) => (Some(reason.clone()), false),
    };
    let config = router.map_or_else(String::new, |r| r.path.display().to_string());
    let fix = format!("set server.poll = \"{want}\" in {config} (or SHARDLINE_SERVER_POLL={want})");
    no_config(row("router server.poll".into(), want, actual, ok, fix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_values_compare_as_flags_and_cpu_sets() {
        let a = boot_value_key("managed_irq,domain,1-3");
        assert_eq!(a, boot_value_key("domain,managed_irq,1,2,3"));
        assert_ne!(a, boot_value_key("domain,1-3"));
    }

    #[test]
    fn per_core_values_are_grouped() {
        let cores = [CoreId(0), CoreId(1), CoreId(2)];
        let read = |c: CoreId| Some(if c.0 == 0 { "powersave" } else { "performance" }.into());
        assert_eq!(
            by_core(&cores, read).as_deref(),
            Some("powersave on 0, performance on 1-2")
        );
        assert_eq!(by_core(&cores, |_| None), None);
    }

    /// The `router server.poll` row of low-latency's check on 4 cores against a config
    /// that says `poll`, or against no config at all.
    fn poll_row_for(poll: Option<Result<PollMode, String>>) -> Row {
        let profile = super::super::profile::load("low-latency", None).unwrap();
        let cores: Vec<CoreId> = (0..4).map(CoreId).collect();
        let plan = profile.cores.plan(&cores).unwrap();
        let machine = Machine::new(std::path::Path::new("/nonexistent-shardline-root"));
        let router = poll.map(|poll| RouterValues {
            path: PathBuf::from("node/shardline.toml"),
            cores: Ok(plan.shards.clone()),
            poll,
        });
        let report = check(&profile, &plan, &machine, router.as_ref());
        let found = report
            .rows
            .iter()
            .find(|r| r.setting == "router server.poll");
        found.expect("a router server.poll row").clone()
    }

    #[test]
    fn poll_row_compares_the_configs_mode_with_the_profiles() {
        let ok = poll_row_for(Some(Ok(PollMode::Busy)));
        assert_eq!((ok.status, ok.actual.as_str()), (Status::Ok, "busy"));
        assert_eq!(ok.fix, "-");

        let spin = std::time::Duration::from_micros(50);
        let diff = poll_row_for(Some(Ok(PollMode::Adaptive(spin))));
        assert_eq!(diff.status, Status::Diff);
        assert_eq!(
            (diff.expected.as_str(), diff.actual.as_str()),
            ("busy", "adaptive")
        );
        let fix =
            "set server.poll = \"busy\" in node/shardline.toml (or SHARDLINE_SERVER_POLL=busy)";
        assert_eq!(diff.fix, fix);

        let broken = poll_row_for(Some(Err("shardline.toml: server.poll: bad".into())));
        assert_eq!(broken.status, Status::Diff);
        assert!(broken.actual.contains("server.poll: bad"), "{broken:?}");
    }

    /// Without a config there is nothing to compare, which is not a difference; the row
    /// words it as the cores row does.
    #[test]
    fn poll_row_without_a_config_is_not_applicable() {
        let na = poll_row_for(None);
        assert_eq!(na.status, Status::NotApplicable);
        assert_eq!(na.actual, "no config (give --config)");
        assert_eq!(na.fix, "-");
    }

    #[test]
    fn a_profile_without_a_router_poll_has_no_poll_row() {
        let mut profile = super::super::profile::load("dev", None).unwrap();
        profile.router.poll = None;
        let plan = profile.cores.plan(&[CoreId(0)]).unwrap();
        let machine = Machine::new(std::path::Path::new("/nonexistent-shardline-root"));
        let report = check(&profile, &plan, &machine, None);
        assert!(report
            .rows
            .iter()
            .all(|r| r.setting != "router server.poll"));
        assert!(report
            .rows
            .iter()
            .any(|r| r.setting == "router server.cores"));
    }
}
