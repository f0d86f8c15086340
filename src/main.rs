//! The `shardline` command: a thin shell over the library. Subcommands parse arguments,
//! read files and the clock, and print; all decisions are the library's.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use shardline::answer::encode_outcome;
use shardline::config::{Config, CONFIG_PATH_DEFAULT};
use shardline::contract::{context_ids, decode_decide, encode_contract_error, Headers};
use shardline::decide::{decide, Now, ShardState, StateConfig};
use shardline::extensions::Registry;
use shardline::policy::{check_paths, RoutingTable};
use shardline::server::{Server, ServerSettings};

/// mimalloc: faster small allocations than glibc malloc and no cross-thread arena
/// contention between shards.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Largest input `decide` reads (one document or a whole JSON Lines file).
const INPUT_BYTES_MAX: u64 = 64 << 20;

#[derive(Parser)]
#[command(
    name = "shardline",
    version,
    about = "Routing decisions for AI/LLM traffic"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve decisions over HTTP, one pinned shard per core, until SIGTERM or SIGINT.
    Serve {
        /// The router's config file.
        #[arg(long, default_value = CONFIG_PATH_DEFAULT)]
        config: PathBuf,
    },
    /// The router's config file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Decide offline: one request (a JSON document), or one per line of JSON Lines input.
    Decide {
        /// Config directory holding `policies/<tenant>/<policy>.json` (or the policies
        /// directory itself).
        #[arg(long, default_value = "config")]
        config: PathBuf,
        /// Request file, or `-` for standard input.
        #[arg(long, default_value = "-")]
        request: String,
    },
    /// Policy documents.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The perf gate: judge a candidate perf report against a baseline under a policy;
    /// one PASS/FAIL/SKIP line per rule. Exit 0 pass, 1 fail, 2 unusable input (also: a
    /// candidate measured under other conditions, a latency rule on a run with no
    /// successful answer).
    Gate {
        /// Baseline report (Beamline or Shardline bench format).
        #[arg(long)]
        baseline: PathBuf,
        /// Gate policy (rules per metric and gate flags).
        #[arg(long)]
        policy: PathBuf,
        /// Candidate report; repeat for several runs (each metric is then their median).
        #[arg(long)]
        candidate: Vec<PathBuf>,
        /// A directory whose `*.json` files are more candidate runs.
        #[arg(long)]
        runs_dir: Option<PathBuf>,
        /// Exit code of the candidate's benchmark run, for the policy's exit-code flag.
        #[arg(long, allow_negative_numbers = true)]
        candidate_exit_code: Option<i32>,
        /// Judge a candidate even when its recorded conditions (mode, rate or concurrency,
        /// connections, duration, shards, transport, target) differ from the baseline's or
        /// are not recorded; the differences are printed above the verdict. Without it
        /// such a candidate is refused (exit 2).
        #[arg(long)]
        allow_different_conditions: bool,
        /// Run `shardline bench BENCH_ARGS` this many times first and gate on the median
        /// of the runs (reports kept in `_artifacts/gate-runs/`).
        #[arg(long, value_name = "N", requires = "bench_args")]
        runs: Option<u32>,
        /// With `--runs`: the bench arguments, after `--`.
        #[arg(last = true, value_name = "BENCH_ARGS")]
        bench_args: Vec<String>,
    },
    /// Load-test a router over HTTP (open loop at a fixed rate, or closed loop) and report
    /// client-side latency; optionally against the bare HTTP responder too.
    Bench(Box<shardline::bench::BenchArgs>),
    /// Overlay the latency-by-percentile lines of several bench reports (e.g. before and
    /// after) in one SVG; each line is labelled with its file's stem.
    Plot {
        /// The SVG file to write.
        #[arg(long)]
        out: PathBuf,
        /// Bench reports (`--out` JSON of `shardline bench`).
        #[arg(required = true)]
        reports: Vec<PathBuf>,
    },
    /// The node's kernel and CPU-affinity settings against a profile in tuning/profiles/.
    Tune {
        #[command(subcommand)]
        command: shardline::tune::TuneCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load and validate a config (environment overrides applied), print it with secrets
    /// redacted; exit 1 on any problem.
    Check {
        #[arg(default_value = CONFIG_PATH_DEFAULT)]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate policy files or directories; print every problem; exit 1 if any.
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => run_serve(&config),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => run_config_check(&file),
        Command::Decide { config, request } => run_decide(&config, &request),
        Command::Policy {
            command: PolicyCommand::Check { paths },
        } => run_check(&paths),
        Command::Gate {
            baseline,
            policy,
            candidate,
            runs_dir,
            candidate_exit_code,
            allow_different_conditions,
            runs,
            bench_args,
        } => bench_runs(runs, &bench_args).and_then(|(mut ran, code)| {
            ran.extend(candidate);
            run_gate(
                &baseline,
                &policy,
                ran,
                runs_dir.as_deref(),
                (candidate_exit_code.or(code), allow_different_conditions),
            )
        }),
        Command::Bench(args) => run_bench(&args),
        Command::Plot { out, reports } => run_plot(&out, &reports),
        Command::Tune { command } => shardline::tune::run(&command).map_err(Into::into),
    };
    // Buffered log lines reach stderr before the process ends.
    shardline::logging::flush();
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("shardline: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn policies_dir(config: &Path) -> PathBuf {
    let nested = config.join("policies");
    if nested.is_dir() {
        nested
    } else {
        config.to_path_buf()
    }
}

fn load_table(config: &Path) -> Result<RoutingTable> {
    let dir = policies_dir(config);
    if !dir.is_dir() {
        bail!("{}: no such config directory", dir.display());
    }
    RoutingTable::load_dir(&dir).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid policies:\n  {}", lines.join("\n  "))
    })
}

fn read_input(request: &str) -> Result<Vec<u8>> {
    let mut input = Vec::new();
    if request == "-" {
        std::io::stdin()
            .lock()
            .take(INPUT_BYTES_MAX)
            .read_to_end(&mut input)?;
    } else {
        std::fs::File::open(request)
            .with_context(|| format!("{request}: cannot open"))?
            .take(INPUT_BYTES_MAX)
            .read_to_end(&mut input)?;
    }
    Ok(input)
}

/// One JSON document, or JSON Lines when the first non-empty line is itself a complete
/// document and more lines follow.
fn split_requests(input: &[u8]) -> Vec<&[u8]> {
    let lines: Vec<&[u8]> = input
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .collect();
    let first_is_whole = lines
        .first()
        .is_some_and(|l| serde_json::from_slice::<serde::de::IgnoredAny>(l).is_ok());
    if lines.len() > 1 && first_is_whole {
        lines
    } else {
        vec![input]
    }
}

fn run_decide(config: &Path, request: &str) -> Result<ExitCode> {
    let table = load_table(config)?;
    let input = read_input(request)?;
    let clock = Instant::now();
    let mut state = ShardState::new(
        &table,
        StateConfig {
            seed: seed(),
            ..Default::default()
        },
        0,
    );
    let mut stdout = std::io::stdout().lock();
    let mut out = Vec::with_capacity(4096);
    let mut all_ok = true;
    for body in split_requests(&input) {
        out.clear();
        let headers = Headers::default();
        let now = Now {
            mono_ns: clock.elapsed().as_nanos() as u64,
            unix_ms: unix_ms(),
        };
        match decode_decide(body, &headers) {
            Ok(req) => {
                let outcome = decide(&table, &mut state, &req, now);
                all_ok &= outcome.is_ok();
                encode_outcome(&mut out, &table, &req, &outcome);
            }
            Err(err) => {
                all_ok = false;
                let ids = context_ids(body, &headers);
                encode_contract_error(
                    &mut out,
                    &err,
                    ids.request_id.as_deref(),
                    ids.trace_id.as_deref(),
                );
            }
        }
        out.push(b'\n');
        stdout.write_all(&out)?;
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A per-run seed for the weighted draw (not cryptographic; the OS's hasher keys suffice).
fn seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(unix_ms())
}

fn run_check(paths: &[PathBuf]) -> Result<ExitCode> {
    let report = check_paths(paths);
    for problem in &report.problems {
        println!("{problem}");
    }
    let invalid = report.problems.len();
    println!(
        "{} file(s) checked, {invalid} problem(s)",
        report.files_checked
    );
    Ok(if invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `--runs N -- BENCH_ARGS`: N bench runs by this same binary; their reports, and the
/// first non-zero exit code (for `require_candidate_exit_code_zero`).
fn bench_runs(runs: Option<u32>, args: &[String]) -> Result<(Vec<PathBuf>, Option<i32>)> {
    const RUNS_MAX: u32 = 100;
    let Some(n) = runs else {
        return Ok((Vec::new(), None));
    };
    anyhow::ensure!((1..=RUNS_MAX).contains(&n), "--runs: 1..={RUNS_MAX}");
    let dir = PathBuf::from("_artifacts/gate-runs");
    std::fs::create_dir_all(&dir)?;
    let exe = std::env::current_exe()?;
    let (mut reports, mut code) = (Vec::new(), 0);
    for i in 1..=n {
        let out = dir.join(format!("run-{i}.json"));
        eprintln!("gate: bench run {i} of {n}");
        let status = std::process::Command::new(&exe)
            .arg("bench")
            .args(args)
            .arg("--out")
            .arg(&out)
            .status()?;
        let c = status.code().unwrap_or(1);
        if code == 0 {
            code = c;
        }
        reports.push(out);
    }
    Ok((reports, Some(code)))
}

fn run_gate(
    baseline: &Path,
    policy: &Path,
    mut candidates: Vec<PathBuf>,
    runs_dir: Option<&Path>,
    (exit_code, allow_different_conditions): (Option<i32>, bool),
) -> Result<ExitCode> {
    // The gate's messages already name the file and the cause: no error chain appended.
    let unusable = |e: shardline::gate::GateError| anyhow::anyhow!("gate: {e}");
    if let Some(dir) = runs_dir {
        candidates.extend(shardline::gate::runs_in_dir(dir).map_err(unusable)?);
    }
    let outcome = shardline::gate::run(&shardline::gate::GateInputs {
        baseline,
        policy,
        candidates: &candidates,
        exit_code,
        allow_different_conditions,
    })
    .map_err(unusable)?;
    print!("{outcome}");
    Ok(if outcome.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run_config_check(file: &Path) -> Result<ExitCode> {
    match Config::load(file) {
        Ok(config) => {
            print!("{}", config.redacted_summary());
            let dir = &config.server.extensions_dir;
            match Registry::load_dir(dir) {
                Ok(registry) => println!("# {}: {} extension(s)", dir.display(), registry.len()),
                Err(err) => {
                    println!("{err}");
                    return Ok(ExitCode::FAILURE);
                }
            }
            println!("# {}: ok", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            println!("{}: {err}", file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn run_serve(file: &Path) -> Result<ExitCode> {
    let config = Config::load(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let logging = &config.logging;
    shardline::logging::init(logging.level, logging.format, logging.repeats_per_window)?;
    let settings = ServerSettings::from_config(&config);
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    let server = Server::start(settings)?;
    log::info!(
        "serving on http://{} with {} shard(s); admin API {}",
        server.local_addr(),
        server.shard_count(),
        if server.shared().admin.is_some() {
            "on"
        } else {
            "off (no token configured)"
        },
    );
    if let Some(addr) = server.tls_addr() {
        log::info!("serving on https://{addr}");
    }
    let signal = signals.forever().next();
    log::info!("signal {signal:?}: stopping, answering requests in flight");
    server.stop()?;
    log::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Exit code of a run that completed but measured failures, not the router: over
/// `--max-error-ratio`, nothing sent, or no successful answer.
const EXIT_BENCH_FAILED: u8 = 3;

/// Runs the benchmark; prints the summary, writes the JSON report if asked (also for a
/// failed run, to see why). Exit 1 when the request counts do not add up (a load-generator
/// bug), 3 when the run is not a measurement (`Report::failures`), 2 when it could not run.
fn run_bench(args: &shardline::bench::BenchArgs) -> Result<ExitCode> {
    let command_line: Vec<String> = std::env::args().collect();
    let settings = args.settings(command_line.join(" "))?;
    let report = shardline::bench::run(&settings)?;
    print!("{}", report.summary());
    if let Some(out) = &args.out {
        let written = report
            .write_files(out)
            .with_context(|| format!("{}: cannot write the report", out.display()))?;
        let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
        eprintln!("report written to {}", names.join(", "));
    }
    if !report.counts_ok() {
        eprintln!("shardline bench: request counts do not add up; see the summary");
        return Ok(ExitCode::FAILURE);
    }
    let failures = report.failures();
    if !failures.is_empty() {
        eprintln!("shardline bench: FAILED, the figures describe failures, not the router:");
        for why in &failures {
            eprintln!("  {why}");
        }
        return Ok(ExitCode::from(EXIT_BENCH_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes one SVG overlaying the router line of each report, labelled by file stem.
fn run_plot(out: &Path, reports: &[PathBuf]) -> Result<ExitCode> {
    use shardline::bench::plot;
    if reports.len() > plot::SERIES_MAX {
        bail!("at most {} reports per plot", plot::SERIES_MAX);
    }
    let mut series = Vec::with_capacity(reports.len());
    for path in reports {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let report: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        let points = plot::points_of(&report["latency_us"])
            .with_context(|| format!("{}: no latency_us percentiles", path.display()))?;
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        series.push((stem.into_owned(), points));
    }
    std::fs::write(out, plot::svg(&series))
        .with_context(|| format!("{}: cannot write", out.display()))?;
    eprintln!("plot written to {}", out.display());
    Ok(ExitCode::SUCCESS)
}
