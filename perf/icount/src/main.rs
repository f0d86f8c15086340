//! `icount`: the perf gate CI can trust. It counts the instructions the hot path executes
//! under callgrind and judges the counts with `shardline gate` against a committed
//! baseline (`perf/icount/baseline.json`) under `perf/icount/policy.json`.
//!
//! Why instruction counts: on a shared 2-core machine wall-clock time moves by tens of
//! percent with the neighbours' load; the instructions a fixed input executes do not move
//! at all (the measured code is deterministic, see `benches`), so a small threshold can
//! fail a build without flaking.
//!
//! Why our own harness and not gungraun (formerly iai-callgrind): that crate needs its
//! runner binary installed at the library's exact version (`cargo install` on every fresh
//! CI machine), brings its own baseline store and regression checks where we already have
//! a gate, and selects the measured region by its own macros. Here a benchmark is a plain
//! function selected with callgrind's `--toggle-collect`, its count is the `summary:` line
//! of callgrind's output, and the comparison is `shardline_tools::gate`: one comparator for
//! every perf figure, with the same PASS/FAIL lines and exit codes.
//!
//! Usage (through `scripts/icount_gate.sh`): no argument measures and gates (exit 0 pass,
//! 1 a count rose past its limit, 2 unusable input or a failed measurement);
//! `--update` measures and writes the baseline; `--run NAME` runs one benchmark and is
//! what the driver starts under valgrind.

mod benches;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use serde_json::{json, Map, Value};
use shardline_tools::gate::{self, Bound, GateInputs, GatePolicy, Metrics};

use benches::{BENCHES, ITERATIONS, MEASURED_PATTERN};

/// The production allocator, so that the measured code allocates as it does in service.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Paths relative to the repository root (the driver makes it the working directory).
const BASELINE: &str = "perf/icount/baseline.json";
const POLICY: &str = "perf/icount/policy.json";
const ARTIFACTS: &str = "_artifacts/icount";
const CANDIDATE: &str = "_artifacts/icount/candidate.json";
/// Metric names are the benchmark's name behind this prefix.
const METRIC_PREFIX: &str = "icount_";
/// The command that rewrites the baseline, for messages and the baseline itself.
const UPDATE_COMMAND: &str = "scripts/icount_gate.sh --update";

/// Exit code of unusable input or a failed measurement (the gate's own convention).
const EXIT_UNUSABLE: u8 = 2;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["--run", name] => run_one(name),
        [] => measure_and_gate(false),
        ["--update"] => measure_and_gate(true),
        _ => {
            eprintln!("usage: icount [--update]   (--run NAME is internal)");
            ExitCode::from(EXIT_UNUSABLE)
        }
    }
}

/// Inside valgrind: one benchmark's setup, warm-up and measured call.
fn run_one(name: &str) -> ExitCode {
    match BENCHES.iter().find(|b| b.name == name) {
        Some(bench) => {
            (bench.run)();
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("icount: no benchmark named {name}");
            ExitCode::from(EXIT_UNUSABLE)
        }
    }
}

fn measure_and_gate(update: bool) -> ExitCode {
    match try_measure_and_gate(update) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("icount: {message}");
            ExitCode::from(EXIT_UNUSABLE)
        }
    }
}

fn try_measure_and_gate(update: bool) -> Result<ExitCode, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::env::set_current_dir(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    std::fs::create_dir_all(ARTIFACTS).map_err(|e| format!("{ARTIFACTS}: {e}"))?;
    let mut metrics = Map::new();
    for bench in &BENCHES {
        let count = count_instructions(&exe, bench.name)?;
        metrics.insert(format!("{METRIC_PREFIX}{}", bench.name), json!(count));
    }
    let report = json!({ "metrics": metrics, "conditions": conditions(), "env": environment() });
    let text = serde_json::to_string_pretty(&report).expect("JSON of numbers and strings") + "\n";
    let written = if update { BASELINE } else { CANDIDATE };
    std::fs::write(written, &text).map_err(|e| format!("{written}: {e}"))?;
    if update {
        for (name, count) in &metrics {
            println!("{name} {count}");
        }
        println!("icount: baseline written to {BASELINE}");
        return Ok(ExitCode::SUCCESS);
    }
    judge(&metrics, &report["env"])
}

/// Instructions per operation of one benchmark: callgrind's total over the measured call,
/// divided by the operations it ran, rounded.
fn count_instructions(exe: &Path, name: &str) -> Result<u64, String> {
    let out_file = PathBuf::from(format!("{ARTIFACTS}/{name}.callgrind"));
    let output = Command::new("valgrind")
        // A fixed environment: its size moves the stack, and with it alignment-dependent
        // paths of memcpy and friends.
        .env_clear()
        .arg("--tool=callgrind")
        .arg("--collect-atstart=no")
        .arg(format!("--toggle-collect={MEASURED_PATTERN}"))
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(exe)
        .args(["--run", name])
        .output()
        .map_err(|e| {
            format!("cannot run valgrind ({e}); install it: apt-get install -y valgrind")
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "{name}: valgrind exited {}:\n{stderr}",
            output.status
        ));
    }
    let text =
        std::fs::read_to_string(&out_file).map_err(|e| format!("{}: {e}", out_file.display()))?;
    let total = callgrind_total(&text)
        .ok_or_else(|| format!("{}: no summary: or totals: line", out_file.display()))?;
    if total == 0 {
        return Err(format!(
            "{name}: nothing counted; does {MEASURED_PATTERN} still name the measured function?"
        ));
    }
    Ok((total + ITERATIONS / 2) / ITERATIONS)
}

/// The instruction total of a callgrind output file (`summary:`, or `totals:` in files
/// that have no summary line), first event (Ir).
fn callgrind_total(text: &str) -> Option<u64> {
    let line = |key: &str| text.lines().find_map(|l| l.strip_prefix(key));
    let value = line("summary:").or_else(|| line("totals:"))?;
    value.split_whitespace().next()?.parse().ok()
}

/// What the gate requires equal between baseline and candidate (`shardline gate` refuses
/// reports measured otherwise): what is counted, and over how many operations. The
/// toolchain and machine are in `env`, and a compiler change is a note, not a refusal.
fn conditions() -> Value {
    json!({
        "measurement": "callgrind instructions per operation",
        "iterations": ITERATIONS,
    })
}

/// What a count depends on besides the code: compiler, valgrind, CPU (it selects the libc
/// and SIMD paths), kernel, and the commit measured.
fn environment() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpu
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok();
    json!({
        "unit": format!("instructions per operation (callgrind Ir / {ITERATIONS})"),
        "rustc": command_line_of("rustc", &["--version"]),
        "valgrind": command_line_of("valgrind", &["--version"]),
        "cpu_model": cpu_model,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "kernel": kernel.map(|k| k.trim().to_string()),
        "git_commit": command_line_of("git", &["rev-parse", "HEAD"]),
        "command_line": UPDATE_COMMAND,
    })
}

/// The first line a command prints, or `None` if it cannot run.
fn command_line_of(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    output
        .status
        .success()
        .then(|| text.lines().next().unwrap_or("").to_string())
}

/// Runs the gate over the candidate just written, then says what it cannot: counts that
/// fell past the threshold, and a compiler other than the baseline's.
fn judge(metrics: &Map<String, Value>, env: &Value) -> Result<ExitCode, String> {
    let policy = read_policy()?;
    for name in metrics.keys() {
        if !policy.rules.iter().any(|r| &r.metric == name) {
            return Err(format!("{POLICY} has no rule for {name}: add one"));
        }
    }
    let candidates = [PathBuf::from(CANDIDATE)];
    let inputs = GateInputs {
        baseline: Path::new(BASELINE),
        policy: Path::new(POLICY),
        candidates: &candidates,
        exit_code: None,
        allow_different_conditions: false,
    };
    let outcome = gate::run(&inputs).map_err(|e| e.to_string())?;
    print!("{outcome}");
    let baseline = read_baseline()?;
    for note in notes(&policy, &baseline.0, metrics) {
        println!("{note}");
    }
    let (was, now) = (baseline.1["rustc"].as_str(), env["rustc"].as_str());
    if was != now {
        let show = |v: Option<&str>| v.unwrap_or("an unknown rustc").to_string();
        println!(
            "NOTE baseline taken with {}, measured with {}: a compiler change moves counts; \
             re-baseline with {UPDATE_COMMAND} if that is the cause",
            show(was),
            show(now)
        );
    }
    Ok(if outcome.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn read_policy() -> Result<GatePolicy, String> {
    let bytes = std::fs::read(POLICY).map_err(|e| format!("{POLICY}: {e}"))?;
    gate::parse_policy(Path::new(POLICY), &bytes).map_err(|e| e.to_string())
}

/// The baseline's metrics and its `env` object.
fn read_baseline() -> Result<(Metrics, Value), String> {
    let bytes = std::fs::read(BASELINE).map_err(|e| format!("{BASELINE}: {e}"))?;
    let metrics = gate::parse_report(Path::new(BASELINE), &bytes).map_err(|e| e.to_string())?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{BASELINE}: {e}"))?;
    Ok((metrics, doc["env"].clone()))
}

/// A line for each count that fell by more than its rule lets it rise: the gain is real
/// (counts do not drift), and keeping the old baseline would let it be lost unnoticed.
fn notes(policy: &GatePolicy, baseline: &Metrics, metrics: &Map<String, Value>) -> Vec<String> {
    let mut notes = Vec::new();
    for rule in &policy.rules {
        let Bound::MaxPctIncrease(pct) = rule.bound else {
            continue;
        };
        let base = baseline.get(&rule.metric).copied();
        let value = metrics.get(&rule.metric).and_then(Value::as_f64);
        let (Some(base), Some(value)) = (base, value) else {
            continue;
        };
        if value < base * (1.0 - pct / 100.0) {
            let fall = (base - value) / base * 100.0;
            notes.push(format!(
                "NOTE {} fell {fall:.1} % (base {base} candidate {value}): \
                 re-baseline with {UPDATE_COMMAND} to keep the gain",
                rule.metric
            ));
        }
    }
    notes
}
