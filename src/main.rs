//! The `shardline` command: a thin shell over the library. Subcommands parse arguments,
//! read files and the clock, and print; all decisions are the library's.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
        /// Refuse to start if any policy document is invalid (as `server.strict_policies`);
        /// by default an invalid document is reported and left out.
        #[arg(long)]
        strict_policies: bool,
    },
    /// The router's config file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Decide offline: one request (a JSON document), or one per line of JSON Lines input.
    Decide {
        /// The router's config file (as `serve` takes it: its `server.policies_dir` is
        /// used), or a config directory holding `policies/<tenant>/<policy>.json`, or the
        /// policies directory itself.
        #[arg(long, default_value = CONFIG_PATH_DEFAULT)]
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
    /// A live view of a running router from its /metrics: per shard req/s, p50/p99,
    /// errors, sheds, crossings, circuits opened, NATS and stalls; `q` quits.
    Top(shardline_tools::top::TopArgs),
    /// The node's kernel and CPU-affinity settings against a profile in tuning/profiles/.
    Tune {
        #[command(subcommand)]
        command: shardline_tools::tune::TuneCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load and validate a config (environment overrides applied), print it with secrets
    /// redacted, then run every check `serve` makes before it listens (policies, cores,
    /// extensions, certificates, io_uring, memlock) without listening; exit 1 on any
    /// problem, printing the message `serve` would.
    Check {
        #[arg(default_value = CONFIG_PATH_DEFAULT)]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate policy files or directories; print every problem; exit 1 if any. A config
    /// directory (one holding `policies/`) or a config file (`.toml`) checks its policies
    /// and its extension registry.
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Write every policy of a directory (`DIR/<tenant>/<policy>.json`) to the cluster's
    /// policy bucket (`cluster.policy_bucket`, created when missing) over the config's
    /// NATS; the running nodes apply it. Nothing is written unless every document is
    /// valid.
    Push {
        /// The policies directory.
        dir: PathBuf,
        /// The router config naming the NATS servers and the bucket.
        #[arg(long, default_value = CONFIG_PATH_DEFAULT)]
        config: PathBuf,
        /// Also delete the bucket's policies that the directory does not hold.
        #[arg(long)]
        prune: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            config,
            strict_policies,
        } => run_serve(&config, strict_policies),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => run_config_check(&file),
        Command::Decide { config, request } => run_decide(&config, &request),
        Command::Policy {
            command: PolicyCommand::Check { paths },
        } => run_check(&paths),
        Command::Policy {
            command: PolicyCommand::Push { dir, config, prune },
        } => run_push(&dir, &config, prune),
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
        Command::Top(args) => shardline_tools::top::run(&args)
            .map(|()| ExitCode::SUCCESS)
            .map_err(anyhow::Error::msg),
        Command::Tune { command } => {
            let config = shardline_tools::tune::RouterConfig {
                default_path: Path::new(CONFIG_PATH_DEFAULT),
                cores: &config_cores,
                poll: &config_poll,
            };
            shardline_tools::tune::run(&command, &config).map_err(Into::into)
        }
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

/// A config file's `server.cores`, for `tune check` (the tools cannot read the router's
/// config themselves); the first line of the load error when it does not load.
fn config_cores(path: &Path) -> std::result::Result<shards::CoreSelection, String> {
    // As `serve` resolves it: one meaning of `server.cores`.
    Ok(ServerSettings::from_config(&tune_config(path)?).cores)
}

/// A config file's `server.poll`, for `tune check`, as `serve` would run its shards.
fn config_poll(path: &Path) -> std::result::Result<shards::PollMode, String> {
    Ok(ServerSettings::from_config(&tune_config(path)?).poll)
}

/// The config as `serve` loads it (environment overrides applied), or the first line of
/// the load error: a table cell, not a report.
fn tune_config(path: &Path) -> std::result::Result<Config, String> {
    Config::load(path).map_err(|e| {
        let first = e.to_string();
        let first = first.lines().next().unwrap_or("").to_owned();
        format!("{}: {first}", path.display())
    })
}

/// Where a `--config` or `policy check` argument keeps its policies and extensions: a
/// config file names them (`server.policies_dir`, `server.extensions_dir`); a config
/// directory holds `policies/` and `extensions/`; any other directory is the policies
/// directory itself (no registry).
struct ConfigDirs {
    policies: PathBuf,
    extensions: Option<PathBuf>,
}

fn is_config_file(path: &Path) -> bool {
    path.is_file() || path.extension().is_some_and(|e| e == "toml")
}

fn config_dirs(config: &Path) -> Result<ConfigDirs> {
    if is_config_file(config) {
        let loaded =
            Config::load(config).map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
        return Ok(ConfigDirs {
            policies: loaded.server.policies_dir,
            extensions: Some(loaded.server.extensions_dir),
        });
    }
    let nested = config.join("policies");
    Ok(if nested.is_dir() {
        ConfigDirs {
            policies: nested,
            extensions: Some(config.join("extensions")),
        }
    } else {
        ConfigDirs {
            policies: config.to_path_buf(),
            extensions: None,
        }
    })
}

fn load_table(config: &Path) -> Result<RoutingTable> {
    let dirs = config_dirs(config)?;
    if !dirs.policies.is_dir() {
        bail!("{}: no such config directory", dirs.policies.display());
    }
    shardline::preflight::load_policies(&dirs.policies)
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

fn run_push(dir: &Path, config: &Path, prune: bool) -> Result<ExitCode> {
    let loaded = Config::load(config).map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    let pushed = shardline::cluster::push::push(dir, &loaded, prune)?;
    for p in &pushed {
        let verb = if p.deleted { "deleted" } else { "put" };
        println!(
            "{verb} {}/{} revision {}",
            p.tenant, p.policy_id, p.revision
        );
    }
    println!(
        "{} change(s) written to bucket {}",
        pushed.len(),
        loaded.cluster.policy_bucket
    );
    Ok(ExitCode::SUCCESS)
}

fn run_check(paths: &[PathBuf]) -> Result<ExitCode> {
    let mut policy_paths = Vec::with_capacity(paths.len());
    let mut registries = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    for path in paths {
        let is_config_dir = path.join("policies").is_dir();
        if !(is_config_dir || path.extension().is_some_and(|e| e == "toml")) {
            policy_paths.push(path.clone());
            continue;
        }
        match config_dirs(path) {
            Ok(dirs) => {
                policy_paths.push(dirs.policies);
                registries.extend(dirs.extensions);
            }
            Err(err) => problems.push(format!("{err:#}")),
        }
    }
    let report = check_paths(&policy_paths);
    problems.extend(report.problems.iter().map(ToString::to_string));
    let mut files_checked = report.files_checked;
    for dir in &registries {
        match Registry::load_dir(dir) {
            Ok(registry) => files_checked += registry.len(),
            Err(err) => problems.push(format!("invalid extension registry: {err}")),
        }
    }
    for problem in &problems {
        println!("{problem}");
    }
    let invalid = problems.len();
    println!("{files_checked} file(s) checked, {invalid} problem(s)");
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
    let unusable = |e: shardline_tools::gate::GateError| anyhow::anyhow!("gate: {e}");
    if let Some(dir) = runs_dir {
        candidates.extend(shardline_tools::gate::runs_in_dir(dir).map_err(unusable)?);
    }
    let outcome = shardline_tools::gate::run(&shardline_tools::gate::GateInputs {
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

/// The config as `serve` reads it, then `serve`'s own preflight (the same function), so
/// that `ok` here means `serve` gets as far as listening. A preflight failure is printed
/// as `serve` prints it, on standard error.
fn run_config_check(file: &Path) -> Result<ExitCode> {
    let config = match Config::load(file) {
        Ok(config) => config,
        Err(err) => {
            println!("{}: {err}", file.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    print!("{}", config.redacted_summary());
    let checked = match shardline::preflight::check(&ServerSettings::from_config(&config)) {
        Ok(checked) => checked,
        Err(err) => {
            eprintln!("shardline: {err:#}");
            println!("# {}: not ok (serve would refuse to start)", file.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let server = &config.server;
    let invalid = &checked.policies.invalid;
    if invalid.is_empty() {
        println!("# {}: policies load", server.policies_dir.display());
    } else {
        // Not a failure: serve starts and serves every other document (without
        // --strict-policies); `policy check` shows each problem.
        println!(
            "# {}: policies load except {} invalid document(s), left out: {}",
            server.policies_dir.display(),
            invalid.len(),
            invalid
                .iter()
                .map(|bad| format!("{}/{}", bad.tenant, bad.policy))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let extensions = checked.registry.len();
    println!(
        "# {}: {extensions} extension(s)",
        server.extensions_dir.display()
    );
    let memlock = checked
        .kernel
        .memlock_limit_bytes
        .map_or_else(|| "unlimited".to_owned(), |b| format!("{b} bytes"));
    println!(
        "# cores {}: {} shard(s); io_uring available; memlock {memlock} (needs {} bytes)",
        shards::topology::format_cpu_list(&checked.cores),
        checked.cores.len(),
        checked.kernel.memlock_need_bytes,
    );
    println!("# {}: ok", file.display());
    Ok(ExitCode::SUCCESS)
}

fn run_serve(file: &Path, strict_policies: bool) -> Result<ExitCode> {
    let config = Config::load(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let logging = &config.logging;
    shardline::logging::init(logging.level, logging.format, logging.repeats_per_window)?;
    let mut settings = ServerSettings::from_config(&config);
    settings.strict_policies |= strict_policies;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    // Under systemd (`Type=notify`): READY=1 once every shard serves, STOPPING=1 when the
    // drain begins, WATCHDOG=1 from the shard watchdog (config/systemd/shardline.service).
    let notify = shardline::server::notify::Notifier::from_env().map(Arc::new);
    settings.notify = notify.clone();
    let mut server = Server::start(settings)?;
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
    if let Some(addr) = server.ops_addr() {
        let admin = if server.shared().admin.is_some() {
            ", admin API"
        } else {
            ""
        };
        log::info!("operations listener on http://{addr} (health, readiness, metrics{admin})");
    }
    if let Some(notify) = &notify {
        notify.send(&format!(
            "READY=1\nSTATUS=serving on {} with {} shard(s)",
            server.local_addr(),
            server.shard_count()
        ));
    }
    let signal = match wait_signal(&mut server, &mut signals) {
        Ok(signal) => signal,
        Err(exit) => return Ok(shard_died(&exit)),
    };
    let grace = Duration::from_millis(config.server.drain_grace_ms);
    log::info!(
        "signal {signal:?}: /readyz answers 503; serving {} ms more before stopping",
        grace.as_millis()
    );
    // A second signal means the operator will not wait for the drain: end now.
    std::thread::Builder::new()
        .name("second-signal".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                log::warn!("second signal {signal}: exiting at once, without draining");
                log::logger().flush();
                std::process::exit(1);
            }
        })?;
    server.begin_stop();
    if let Some(notify) = &notify {
        notify.send("STOPPING=1\nSTATUS=draining");
    }
    // The grace still watches the shards: a dead one ends the process as it would before.
    let grace_ends = Instant::now() + grace;
    while let Some(left) = grace_ends.checked_duration_since(Instant::now()) {
        if let Some(exit) = server.wait_shard_exit(left.min(Duration::from_millis(100))) {
            return Ok(shard_died(&exit));
        }
    }
    log::info!("stopping: listeners close, answering requests in flight");
    server.stop()?;
    log::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Exit status of `serve` when a shard died: EX_SOFTWARE, an internal error.
const EXIT_SHARD_DIED: u8 = 70;

/// Waits for SIGTERM/SIGINT, watching the shards meanwhile: a shard that ends on its own
/// (a panic) comes back as `Err`.
fn wait_signal(
    server: &mut Server,
    signals: &mut signal_hook::iterator::Signals,
) -> std::result::Result<i32, shards::ShardExit> {
    loop {
        if let Some(signal) = signals.pending().next() {
            return Ok(signal);
        }
        if let Some(exit) = server.wait_shard_exit(Duration::from_millis(100)) {
            return Err(exit);
        }
    }
}

/// A dead shard's tenants cannot be served and its peers' handoffs to it cannot be
/// answered; restarting one shard in place would lose its state and its rings' in-flight
/// messages. The process ends instead, at once and non-zero, for its supervisor to
/// restart it clean (docs/OPERATIONS.md).
fn shard_died(exit: &shards::ShardExit) -> ExitCode {
    let why = match &exit.panic {
        Some(message) => format!("panicked: {message}"),
        None => "left its loop".to_owned(),
    };
    log::error!(
        "shard {} {why}; exiting with status {EXIT_SHARD_DIED} so that the supervisor restarts \
         the router",
        exit.shard
    );
    log::logger().flush();
    // Not a graceful stop: the stop protocol needs every shard, and one is gone.
    std::process::exit(i32::from(EXIT_SHARD_DIED));
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

/// Writes one SVG overlaying the router line of each report (its spectrum when it has one),
/// labelled by file stem.
fn run_plot(out: &Path, reports: &[PathBuf]) -> Result<ExitCode> {
    use shardline_tools::bench::plot;
    if reports.len() > plot::SERIES_MAX {
        bail!("at most {} reports per plot", plot::SERIES_MAX);
    }
    let mut series = Vec::with_capacity(reports.len());
    for path in reports {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let report: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        let points = plot::side_points(&report).with_context(|| {
            format!(
                "{}: no latency_spectrum nor latency_us percentiles",
                path.display()
            )
        })?;
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        series.push((stem.into_owned(), points));
    }
    std::fs::write(out, plot::svg(&series))
        .with_context(|| format!("{}: cannot write", out.display()))?;
    eprintln!("plot written to {}", out.display());
    Ok(ExitCode::SUCCESS)
}
