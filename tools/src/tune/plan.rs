//! `tune plan`: the commands and kernel arguments that make a machine match a profile.
//!
//! It prints and never executes: changing a node's kernel settings is the operator's act,
//! reviewed before it is run (`scripts/apply_tuning.sh` applies the sysctl part, and saves
//! what it changed so that it can be put back). Every command carries the profile's reason
//! as a comment, so the printed plan explains itself.

use std::fmt::Write as _;

use shards::topology::format_cpu_list;

use super::check::{cores_value, sysctl_command};
use super::cores::CorePlan;
use super::machine::Machine;
use super::profile::{fold_whitespace, Expect, Profile};

/// What applying one sysctl of a profile does on a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SysctlStep {
    /// Change `from` (the machine's value) to `to`.
    Set { from: String, to: String },
    /// The machine already meets the profile (equal, or above a minimum): left alone.
    Keep { current: String },
    /// The kernel has no such sysctl.
    Absent,
}

/// Every sysctl of `profile` with what applying it would do on `machine`: the one list
/// `tune plan` prints and `--sysctl-conf` hands to `scripts/apply_tuning.sh`, so the two
/// always agree. A minimum the machine already exceeds is kept: applying a profile never
/// lowers a limit someone raised.
pub fn sysctl_steps<'p>(profile: &'p Profile, machine: &Machine) -> Vec<(&'p str, SysctlStep)> {
    let mut steps = Vec::with_capacity(profile.sysctl.len());
    for (key, setting) in &profile.sysctl {
        let expect = setting.expect();
        let step = match machine.sysctl(key) {
            None => SysctlStep::Absent,
            Some(current) if expect.met_by(&current) => SysctlStep::Keep {
                current: fold_whitespace(&current),
            },
            Some(current) => SysctlStep::Set {
                from: fold_whitespace(&current),
                to: target(&expect),
            },
        };
        steps.push((key.as_str(), step));
    }
    steps
}

fn target(expect: &Expect) -> String {
    match expect {
        Expect::Equal(v) => v.clone(),
        Expect::AtLeast(min) => min.to_string(),
    }
}

/// The full plan as shell text: comments, then commands an operator can paste as root.
/// Only what differs on `machine` gets a command; the rest is listed as a comment.
pub fn render(profile: &Profile, plan: &CorePlan, machine: &Machine) -> String {
    let mut out = String::new();
    let all = format_cpu_list(&plan.cores);
    let n = plan.cores.len();
    let _ = writeln!(out, "# Profile {}: {}", profile.name, profile.description);
    let _ = writeln!(
        out,
        "# Machine: {n} core(s) ({all}). Run as root; nothing here has run."
    );
    core_section(&mut out, profile, plan);
    systemd_section(&mut out, profile, plan);
    boot_section(&mut out, profile, plan);
    let _ = writeln!(
        out,
        "\n# sysctl (scripts/apply_tuning.sh --apply does these, --restore undoes)"
    );
    for (key, step) in sysctl_steps(profile, machine) {
        let setting = &profile.sysctl[key];
        let expect = setting.expect();
        let _ = match step {
            SysctlStep::Set { from, .. } => {
                let command = sysctl_command(key, &expect);
                writeln!(out, "{command}  # was {from}: {}", setting.why)
            }
            SysctlStep::Keep { current } => {
                writeln!(
                    out,
                    "# ok: {key} = {current} (profile: {expect}), left alone"
                )
            }
            SysctlStep::Absent => writeln!(out, "# skip: {key} is not on this kernel"),
        };
    }
    cpu_section(&mut out, profile, plan);
    out
}

fn core_section(out: &mut String, profile: &Profile, plan: &CorePlan) {
    let list = |cores: &[_]| format_cpu_list(cores);
    let shards = cores_value(&plan.shards);
    let _ = writeln!(out, "\n# Core plan: {}", profile.cores.why);
    let _ = writeln!(out, "#   shards        {}", list(&plan.shards));
    let _ = writeln!(out, "#   irq           {}", list(&plan.irq));
    let _ = writeln!(out, "#   nats-server   {}", list(&plan.nats));
    let _ = writeln!(out, "#   housekeeping  {}", list(&plan.housekeeping));
    let _ = writeln!(
        out,
        "\n# Router: server.cores = \"{shards}\" in the config, or:"
    );
    let _ = writeln!(out, "export SHARDLINE_SERVER_CORES={shards}");
    if let Some(poll) = &profile.router.poll {
        let mode = poll.expect();
        let _ = writeln!(out, "# Router: server.poll = \"{mode}\" in the config, or:");
        let _ = writeln!(out, "export SHARDLINE_SERVER_POLL={mode}  # {}", poll.why);
    }
    let nats = list(&plan.nats);
    let _ = writeln!(
        out,
        "# nats-server on its cores (start it under taskset, or move it):"
    );
    let _ = writeln!(out, "taskset -apc {nats} \"$(pidof nats-server)\"");
    if plan.irq != plan.cores {
        let irq = list(&plan.irq);
        let _ = writeln!(
            out,
            "# Interrupts to {irq}; irqbalance would move them back:"
        );
        let _ = writeln!(out, "systemctl stop irqbalance");
        let _ = writeln!(
            out,
            "for f in /proc/irq/*/smp_affinity_list; do echo {irq} > \"$f\" 2>/dev/null; done"
        );
    }
    if plan.housekeeping != plan.cores {
        let hk = list(&plan.housekeeping);
        let _ = writeln!(
            out,
            "# Everything else systemd starts, on the housekeeping cores:"
        );
        for slice in ["system.slice", "user.slice", "init.scope"] {
            let _ = writeln!(
                out,
                "systemctl set-property --runtime {slice} AllowedCPUs={hk}"
            );
        }
    }
}

/// Where the packaged unit's drop-in goes (`config/systemd/shardline.service`).
pub const SYSTEMD_DROP_IN: &str = "/etc/systemd/system/shardline.service.d/cpu-affinity.conf";

/// The same core plan for the router run by systemd: a drop-in on the packaged unit. Its
/// own slice, because the housekeeping step above confines `system.slice` (where a
/// service runs by default) to the housekeeping cores, and a service cannot leave its
/// slice's cpuset.
fn systemd_section(out: &mut String, profile: &Profile, plan: &CorePlan) {
    let shards = format_cpu_list(&plan.shards);
    let _ = writeln!(
        out,
        "\n# Router under systemd (the packaged unit): the shard cores in a drop-in, then restart"
    );
    let _ = writeln!(out, "mkdir -p {}", drop_in_dir());
    let _ = writeln!(out, "cat > {SYSTEMD_DROP_IN} <<'EOF'");
    let _ = writeln!(out, "[Service]");
    if plan.housekeeping != plan.cores {
        let _ = writeln!(
            out,
            "# Out of system.slice, which keeps to the housekeeping cores"
        );
        let _ = writeln!(out, "Slice=shardline.slice");
    }
    let _ = writeln!(out, "CPUAffinity={shards}");
    let _ = writeln!(
        out,
        "Environment=SHARDLINE_SERVER_CORES={}",
        cores_value(&plan.shards)
    );
    if let Some(poll) = &profile.router.poll {
        let _ = writeln!(out, "Environment=SHARDLINE_SERVER_POLL={}", poll.expect());
    }
    let _ = writeln!(out, "EOF");
    let _ = writeln!(
        out,
        "systemctl daemon-reload && systemctl restart shardline"
    );
}

fn drop_in_dir() -> &'static str {
    SYSTEMD_DROP_IN
        .rsplit_once('/')
        .map_or(SYSTEMD_DROP_IN, |(dir, _)| dir)
}

fn boot_section(out: &mut String, profile: &Profile, plan: &CorePlan) {
    if profile.boot.is_empty() {
        let _ = writeln!(out, "\n# Kernel arguments: none for this profile.");
        return;
    }
    let args: Vec<String> = profile
        .boot
        .iter()
        .map(|(name, s)| format!("{name}={}", plan.fill(&s.expect().to_string())))
        .collect();
    let args = args.join(" ");
    let _ = writeln!(out, "\n# Kernel arguments (take effect at the next boot):");
    for (name, setting) in &profile.boot {
        let _ = writeln!(out, "#   {name}: {}", setting.why);
    }
    let _ = writeln!(out, "# {args}");
    let _ = writeln!(out, "grubby --update-kernel=ALL --args=\"{args}\"");
    let _ = writeln!(
        out,
        "# (Debian/Ubuntu: append them to GRUB_CMDLINE_LINUX in /etc/default/grub, then \
         update-grub.) Then reboot."
    );
}

fn cpu_section(out: &mut String, profile: &Profile, plan: &CorePlan) {
    let cpu = &profile.cpu;
    let none = cpu.governor.is_none() && cpu.idle_latency_us_max.is_none();
    if none && cpu.transparent_hugepages.is_none() {
        return;
    }
    let _ = writeln!(
        out,
        "\n# CPU (not persistent: a tuned profile or a unit keeps them)"
    );
    if let Some(g) = &cpu.governor {
        let _ = writeln!(
            out,
            "cpupower -c all frequency-set -g {}  # {}",
            g.expect(),
            g.why
        );
    }
    if let Some(idle) = &cpu.idle_latency_us_max {
        let shards = format_cpu_list(&plan.shards);
        let _ = writeln!(
            out,
            "cpupower -c {shards} idle-set -D {}  # {}",
            idle.expect(),
            idle.why
        );
    }
    if let Some(thp) = &cpu.transparent_hugepages {
        let path = "/sys/kernel/mm/transparent_hugepage/enabled";
        let _ = writeln!(out, "echo {} > {path}  # {}", thp.expect(), thp.why);
    }
}

/// The sysctls as `key = value` lines (the sysctl.conf format) for
/// `scripts/apply_tuning.sh`. An at-least setting the machine already exceeds keeps its
/// current value: applying a profile never lowers a limit someone raised.
pub fn sysctl_conf(profile: &Profile, machine: &Machine) -> String {
    let mut out = String::new();
    for (key, step) in sysctl_steps(profile, machine) {
        let value = match step {
            SysctlStep::Set { to, .. } => to,
            SysctlStep::Keep { current } => current,
            SysctlStep::Absent => target(&profile.sysctl[key].expect()),
        };
        let _ = writeln!(out, "{key} = {value}");
    }
    out
}
