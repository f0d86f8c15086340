//! `shardline tune check` and `tune plan`, run as the operator runs them, against a fake
//! `/proc` and `/sys` tree (`--root`) so that every outcome is reproducible on any box.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use shardline_tools::tune::Expect;

const PROFILES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/profiles");

fn shardline(args: &[&str]) -> Output {
    shardline_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

/// `shardline` run from `dir`, where `tune check` looks for its default config.
fn shardline_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardline"))
        .args(args)
        .current_dir(dir)
        .env_remove("SHARDLINE_SERVER_CORES")
        .env_remove("SHARDLINE_SERVER_POLL")
        .output()
        .expect("run shardline")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(root: &Path, path: &str, text: &str) {
    let file = root.join(path);
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(file, format!("{text}\n")).unwrap();
}

/// A 4-core machine tuned as the low-latency profile asks: shards on 1-3, everything else
/// on 0; plus a router config whose `server.cores` is `cores`, polling as the profile asks.
fn tuned_machine(name: &str, cores: &str) -> (PathBuf, PathBuf) {
    let root = std::env::temp_dir().join(format!("shardline-tune-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let profile = shardline_tools::tune::load("low-latency", Some(Path::new(PROFILES))).unwrap();
    for (key, setting) in &profile.sysctl {
        let value = match setting.expect() {
            Expect::Equal(v) => v.replace(' ', "\t"),
            Expect::AtLeast(min) => (min * 2).to_string(),
        };
        write(
            &root,
            &format!("proc/sys/{}", key.replace('.', "/")),
            &value,
        );
    }
    write(&root, "sys/devices/system/cpu/online", "0-3");
    for cpu in 0..4 {
        let dir = format!("sys/devices/system/cpu/cpu{cpu}");
        write(
            &root,
            &format!("{dir}/cpufreq/scaling_governor"),
            "performance",
        );
        write(&root, &format!("{dir}/cpuidle/state0/latency"), "0");
        write(&root, &format!("{dir}/cpuidle/state0/disable"), "0");
        write(&root, &format!("{dir}/cpuidle/state1/latency"), "100");
        write(&root, &format!("{dir}/cpuidle/state1/disable"), "1");
    }
    write(
        &root,
        "sys/kernel/mm/transparent_hugepage/enabled",
        "always madvise [never]",
    );
    let cmdline = "ro quiet isolcpus=domain,managed_irq,1-3 nohz_full=1,2,3 rcu_nocbs=1-3 \
                   irqaffinity=0";
    write(&root, "proc/cmdline", cmdline);
    for irq in [0, 24, 25] {
        write(&root, &format!("proc/irq/{irq}/smp_affinity_list"), "0");
    }
    write(&root, "proc/4242/comm", "nats-server");
    write(
        &root,
        "proc/4242/status",
        "Name:\tnats-server\nCpus_allowed_list:\t0",
    );
    let config = root.join("shardline.toml");
    let server = format!("[server]\ncores = \"{cores}\"\npoll = \"busy\"\n");
    fs::write(&config, server).unwrap();
    (root, config)
}

fn check(root: &Path, config: &Path, extra: &[&str]) -> Output {
    let (root, config) = (root.to_str().unwrap(), config.to_str().unwrap());
    let mut args = vec!["tune", "check", "--profile", "low-latency", "--root", root];
    args.extend(["--config", config]);
    args.extend(extra);
    shardline(&args)
}

fn row<'a>(table: &'a str, setting: &str) -> &'a str {
    let found = table.lines().find(|l| l.starts_with(setting));
    found.unwrap_or_else(|| panic!("no row {setting:?} in\n{table}"))
}

/// A machine that matches the profile passes `--strict`, with cpu lists compared as sets
/// (`nohz_full=1,2,3` is `1-3`) and `/proc/sys`'s tabs read as spaces.
#[test]
fn a_tuned_machine_is_all_ok() {
    let (root, config) = tuned_machine("ok", "1-3");
    let out = check(&root, &config, &["--strict"]);
    let table = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{table}");
    assert!(!table.contains("DIFF  "), "{table}");
    assert!(table.ends_with(" 0 DIFF, 0 N/A\n"), "{table}");
    assert!(row(&table, "boot nohz_full").contains("OK"));
    assert!(row(&table, "nats-server cores").contains("pid 4242 on 0"));
    assert!(
        row(&table, "router server.poll").contains(" busy "),
        "{table}"
    );
}

/// Each kind of difference is a DIFF row naming the fix; `--strict` turns them into exit 1
/// and without it the check still exits 0.
#[test]
fn differences_name_the_fix_and_strict_fails() {
    let (root, config) = tuned_machine("diff", "all");
    write(&root, "proc/sys/vm/swappiness", "60");
    write(&root, "proc/sys/net/core/somaxconn", "128");
    write(
        &root,
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
        "powersave",
    );
    write(
        &root,
        "sys/devices/system/cpu/cpu2/cpuidle/state1/disable",
        "0",
    );
    write(
        &root,
        "sys/kernel/mm/transparent_hugepage/enabled",
        "[always] madvise never",
    );
    write(&root, "proc/cmdline", "ro quiet nohz_full=1-2");
    write(&root, "proc/irq/25/smp_affinity_list", "0-3");
    write(&root, "proc/4242/status", "Cpus_allowed_list:\t0-3");
    fs::write(&config, "[server]\ncores = \"all\"\npoll = \"adaptive\"\n").unwrap();
    let out = check(&root, &config, &["--strict"]);
    let table = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{table}");
    let expect_diff = [
        ("sysctl vm.swappiness", "sysctl -w vm.swappiness=1"),
        (
            "sysctl net.core.somaxconn",
            "sysctl -w net.core.somaxconn=4096",
        ),
        (
            "cpu governor",
            "cpupower -c all frequency-set -g performance",
        ),
        ("cpu idle exit latency", "cpupower -c 1-3 idle-set -D 0"),
        (
            "transparent hugepages",
            "echo never > /sys/kernel/mm/transparent_hugepage/enabled",
        ),
        ("boot nohz_full", "--args=nohz_full=1-3"),
        ("boot isolcpus", "--args=isolcpus=managed_irq,domain,1-3"),
        ("irq affinity", "echo 0 > \"$f\""),
        ("nats-server cores", "taskset -apc 0 4242"),
        ("router server.cores", "SHARDLINE_SERVER_CORES=1-3"),
        ("router server.poll", "SHARDLINE_SERVER_POLL=busy"),
    ];
    for (setting, fix) in expect_diff {
        let line = row(&table, setting);
        assert!(
            line.contains(" DIFF ") && line.contains(fix),
            "{setting}: {line}"
        );
    }
    assert!(row(&table, "cpu governor").contains("powersave on 0, performance on 1-3"));
    assert!(row(&table, "irq affinity").contains("1 elsewhere: 25"));
    assert!(row(&table, "router server.cores").contains("0-3"));
    let poll = row(&table, "router server.poll");
    let fix = format!("set server.poll = \"busy\" in {}", config.display());
    assert!(poll.contains(" adaptive ") && poll.contains(&fix), "{poll}");
    let lenient = check(&root, &config, &[]);
    assert_eq!(lenient.status.code(), Some(0));
}

/// Knobs the machine lacks (a VM without cpufreq, an older kernel's sysctl) are N/A and do
/// not fail `--strict`; a config that cannot load is a DIFF saying why.
#[test]
fn absent_knobs_are_not_applicable_and_a_broken_config_differs() {
    let (root, config) = tuned_machine("absent", "1-3");
    fs::remove_file(root.join("proc/sys/kernel/io_uring_disabled")).unwrap();
    for cpu in 0..4 {
        fs::remove_dir_all(root.join(format!("sys/devices/system/cpu/cpu{cpu}/cpufreq"))).unwrap();
    }
    fs::remove_dir_all(root.join("proc/4242")).unwrap();
    let out = check(&root, &config, &["--strict"]);
    let table = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{table}");
    assert!(row(&table, "sysctl kernel.io_uring_disabled").contains("absent"));
    assert!(row(&table, "cpu governor").contains(" N/A "));
    assert!(row(&table, "nats-server cores").contains("not running"));

    fs::write(&config, "[server]\ncores = \"one\"\n").unwrap();
    let out = check(&root, &config, &["--strict"]);
    assert_eq!(out.status.code(), Some(1));
    let table = stdout(&out);
    assert!(
        row(&table, "router server.cores").contains("server.cores"),
        "{table}"
    );
    assert!(
        row(&table, "router server.poll").contains(" DIFF "),
        "{table}"
    );
}

/// Without `--config` the router rows read `config/shardline.toml` when it is there (the
/// repository's, which polls adaptively: a DIFF against low-latency naming that file), and
/// are N/A where there is none, as nothing to compare is not a difference.
#[test]
fn router_rows_use_the_default_config_or_are_not_applicable() {
    let (root, _) = tuned_machine("default-config", "1-3");
    let args = ["tune", "check", "--profile", "low-latency"];
    let args = [&args[..], &["--root", root.to_str().unwrap()]].concat();

    let table = stdout(&shardline(&args));
    let poll = row(&table, "router server.poll");
    let fix = "set server.poll = \"busy\" in config/shardline.toml";
    assert!(poll.contains(" adaptive ") && poll.contains(fix), "{table}");

    let out = shardline_in(&root, &[&args[..], &["--strict"]].concat());
    let table = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{table}");
    for setting in ["router server.cores", "router server.poll"] {
        let line = row(&table, setting);
        assert!(line.contains("no config (give --config)"), "{line}");
        assert!(line.contains(" N/A "), "{line}");
    }
}

/// The profiles' poll modes are the values the router's config takes.
#[test]
fn profile_poll_modes_are_server_poll_values() {
    for mode in shardline_tools::tune::POLL_MODES {
        assert!(mode.parse::<shardline::config::Poll>().is_ok(), "{mode}");
    }
}

/// The plan for a machine of `cores` whose sysctls all differ from the profile's.
fn plan(cores: &str) -> String {
    let root = std::env::temp_dir().join(format!("shardline-tune-plan-{}", std::process::id()));
    let profile = shardline_tools::tune::load("low-latency", None).unwrap();
    for key in profile.sysctl.keys() {
        let path = format!("proc/sys/{}", key.replace('.', "/"));
        write(&root, &path, "2");
    }
    let root = root.to_str().unwrap();
    let args = ["tune", "plan", "--profile", "low-latency", "--cores", cores];
    let out = shardline(&[&args[..], &["--root", root]].concat());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

/// One profile, two machines: on 2 cores everything but the shard shares core 0; on 8
/// cores nats-server moves to core 1 and shards take 2-7.
#[test]
fn plan_for_two_and_eight_cores() {
    let two = plan("2");
    assert!(two.contains("# Machine: 2 core(s) (0-1)."), "{two}");
    assert!(
        two.contains("#   shards        1\n#   irq           0\n"),
        "{two}"
    );
    assert!(two.contains("#   nats-server   0\n"), "{two}");
    assert!(two.contains("export SHARDLINE_SERVER_CORES=1-1\n"), "{two}");
    let args = "irqaffinity=0 isolcpus=managed_irq,domain,1 nohz_full=1 rcu_nocbs=1";
    assert!(two.contains(&format!("grubby --update-kernel=ALL --args=\"{args}\"")));
    assert!(two.contains("cpupower -c 1 idle-set -D 0  # "), "{two}");
    assert!(two.contains("sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\"  # "));

    let eight = plan("0-7");
    assert!(eight.contains("#   shards        2-7\n"), "{eight}");
    assert!(eight.contains("#   nats-server   1\n"), "{eight}");
    assert!(
        eight.contains("export SHARDLINE_SERVER_CORES=2-7\n"),
        "{eight}"
    );
    assert!(
        eight.contains("taskset -apc 1 \"$(pidof nats-server)\""),
        "{eight}"
    );
    assert!(eight.contains("nohz_full=2-7 rcu_nocbs=2-7\"\n"), "{eight}");
    assert!(eight.contains("AllowedCPUs=0\n"), "{eight}");
    let poll = "# Router: server.poll = \"busy\" in the config, or:\n\
                export SHARDLINE_SERVER_POLL=busy  # shard cores are isolated";
    assert!(eight.contains(poll), "{eight}");
}

/// The plan carries a drop-in for the packaged systemd unit: the shard cores as
/// `CPUAffinity` (and the router's core list), in its own slice once `system.slice` is
/// confined to the housekeeping cores.
#[test]
fn plan_prints_the_systemd_drop_in() {
    let eight = plan("0-7");
    let drop_in = "cat > /etc/systemd/system/shardline.service.d/cpu-affinity.conf <<'EOF'\n\
                   [Service]\n\
                   # Out of system.slice, which keeps to the housekeeping cores\n\
                   Slice=shardline.slice\n\
                   CPUAffinity=2-7\n\
                   Environment=SHARDLINE_SERVER_CORES=2-7\n\
                   Environment=SHARDLINE_SERVER_POLL=busy\n\
                   EOF\n\
                   systemctl daemon-reload && systemctl restart shardline\n";
    assert!(eight.contains(drop_in), "{eight}");
    let dev = shardline(&["tune", "plan", "--profile", "dev", "--cores", "1"]);
    let dev = stdout(&dev);
    assert!(dev.contains("[Service]\nCPUAffinity=0\n"), "{dev}");
    assert!(
        dev.contains("Environment=SHARDLINE_SERVER_POLL=adaptive\nEOF\n"),
        "{dev}"
    );
    assert!(!dev.contains("Slice="), "{dev}");
}

/// A profile that cannot place its roles on the machine says so (exit 2); the dev profile
/// plans a 1-core box with no isolation at all.
#[test]
fn plans_that_cannot_be_met_and_the_dev_profile() {
    let out = shardline(&["tune", "plan", "--profile", "low-latency", "--cores", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no core is left for shards on 1 core(s)"),
        "{err}"
    );

    let dev = shardline(&["tune", "plan", "--profile", "dev", "--cores", "1"]);
    let text = stdout(&dev);
    assert!(
        text.contains("# Kernel arguments: none for this profile."),
        "{text}"
    );
    assert!(!text.contains("irqbalance"), "{text}");

    let missing = shardline(&["tune", "plan", "--profile", "nope", "--cores", "2"]);
    assert_eq!(missing.status.code(), Some(2));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("available: dev, low-latency, throughput"),
        "{err}"
    );
}

/// `--sysctl-conf` (what scripts/apply_tuning.sh reads) never lowers a limit the machine
/// already exceeds, and a profile given as a path works from any directory.
#[test]
fn sysctl_conf_keeps_higher_limits() {
    let (root, _) = tuned_machine("conf", "1-3");
    write(&root, "proc/sys/net/core/somaxconn", "65535");
    write(&root, "proc/sys/net/core/rmem_max", "1024");
    let profile = format!("{PROFILES}/low-latency.toml");
    let args = [
        "tune",
        "plan",
        "--profile",
        &profile,
        "--sysctl-conf",
        "--cores",
        "4",
    ];
    let mut args = args.to_vec();
    args.extend(["--root", root.to_str().unwrap()]);
    let out = shardline(&args);
    let conf = stdout(&out);
    assert!(conf.contains("net.core.somaxconn = 65535\n"), "{conf}");
    assert!(conf.contains("net.core.rmem_max = 16777216\n"), "{conf}");
    assert!(
        conf.contains("net.ipv4.ip_local_port_range = 1024 65535\n"),
        "{conf}"
    );
    assert!(!conf.contains('#'), "{conf}");
}

/// `scripts/apply_tuning.sh --dry-run` works from any directory, with a profile path
/// relative to the caller, and lists every sysctl of the profile without changing one.
#[test]
fn apply_script_dry_run_lists_every_sysctl() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/apply_tuning.sh");
    let out = Command::new(script)
        .args(["--dry-run", "--profile", "profiles/dev.toml"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tuning"))
        .env("SHARDLINE_BIN", env!("CARGO_BIN_EXE_shardline"))
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for key in ["net.core.somaxconn", "kernel.io_uring_disabled"] {
        let listed = text.lines().any(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|k| k.trim_end_matches(':') == key)
        });
        assert!(listed, "{key} missing from\n{text}");
    }
    assert!(!text.contains("saved the old values"), "{text}");
}

/// `tune plan` never lowers a minimum the machine already exceeds (`tune check` calls it
/// OK), and it lists the same changes as `scripts/apply_tuning.sh --dry-run` on the same
/// machine (both reading the fake tree through `--root`).
#[test]
fn plan_keeps_higher_limits_and_agrees_with_the_apply_script() {
    let (root, config) = tuned_machine("agree", "1-3");
    write(&root, "proc/sys/net/core/somaxconn", "65535");
    write(&root, "proc/sys/net/core/rmem_max", "1024");
    write(&root, "proc/sys/net/core/busy_poll", "0");
    fs::remove_file(root.join("proc/sys/vm/stat_interval")).unwrap();
    let root_arg = root.to_str().unwrap();

    let out = shardline(&[
        "tune",
        "plan",
        "--profile",
        "low-latency",
        "--root",
        root_arg,
    ]);
    assert_eq!(out.status.code(), Some(0));
    let plan = stdout(&out);
    assert!(!plan.contains("sysctl -w net.core.somaxconn"), "{plan}");
    assert!(plan.contains("# ok: net.core.somaxconn = 65535"), "{plan}");
    assert!(
        plan.contains("sysctl -w net.core.rmem_max=16777216  # was 1024"),
        "{plan}"
    );
    let mut planned: Vec<&str> = plan
        .lines()
        .filter_map(|l| l.strip_prefix("sysctl -w "))
        .filter_map(|l| l.split('=').next())
        .collect();
    planned.sort_unstable();
    assert_eq!(planned, ["net.core.busy_poll", "net.core.rmem_max"]);

    let table = stdout(&check(&root, &config, &[]));
    assert!(
        row(&table, "sysctl net.core.somaxconn").contains(" OK "),
        "{table}"
    );

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/apply_tuning.sh");
    let out = Command::new(script)
        .args(["--dry-run", "--profile", "low-latency", "--root", root_arg])
        .env("SHARDLINE_BIN", env!("CARGO_BIN_EXE_shardline"))
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut applied: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("set   "))
        .filter_map(|l| l.split(':').next())
        .collect();
    applied.sort_unstable();
    assert_eq!(applied, planned, "{text}");
    assert!(text.contains("skip  vm.stat_interval"), "{text}");
    assert!(plan.contains("# skip: vm.stat_interval"), "{plan}");
}
