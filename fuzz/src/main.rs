//! `shardline-fuzz`: fuzzes the parsers and decoders that read untrusted bytes (HTTP
//! requests, chunked bodies, DecideRequest and ExecResult, policy documents, the NATS
//! protocol) on stable Rust.
//!
//! Two engines drive the same checks (`targets`):
//! - the default one here: structure-aware generation (valid requests, policies, NATS
//!   lines, from the repository's own fixtures) plus byte- and JSON-level mutation, with
//!   inputs that reach a new outcome kept as mutation sources. Seeded, so a run is
//!   reproducible from the seed it prints; no instrumentation, so it builds with the rest
//!   of the workspace and runs in `scripts/test.sh`;
//! - libFuzzer, coverage-guided, with `--features libfuzzer` and the sanitizer-coverage
//!   flags (`scripts/fuzz_coverage.sh`), seeded with this engine's inputs.
//!
//! Every input runs under a time bound (a watchdog thread) and `catch_unwind`; a panic, a
//! broken invariant or an overrun writes the input to a file and prints how to replay it.

#![cfg_attr(feature = "libfuzzer", no_main)]
#![cfg_attr(feature = "libfuzzer", allow(dead_code, unused_imports))]

mod corpus;
mod json;
mod mutate;
mod rng;
mod targets;

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;

use corpus::Corpus;
use rng::{fnv1a, Rng};
use targets::{Target, TARGETS};

/// Inputs kept as mutation sources per target (the rest are generated afresh).
const POOL_INPUTS_MAX: usize = 4096;

#[derive(Parser)]
#[command(version, about = "Fuzz Shardline's parsers and decoders (stable Rust)")]
struct Args {
    /// A target (http, chunked, decide, result, policy, nats) or `all`.
    #[arg(long, default_value = "all")]
    target: String,
    /// Seconds per target.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Stop a target after this many inputs (instead of, or before, `--seconds`).
    #[arg(long)]
    inputs: Option<u64>,
    /// Seed of the input stream; printed, and random when not given.
    #[arg(long)]
    seed: Option<u64>,
    /// Longest one input may take before it counts as a hang.
    #[arg(long, default_value_t = 5_000)]
    input_ms: u64,
    /// Where failing inputs are written.
    #[arg(long, default_value = "target/fuzz-failures")]
    out: PathBuf,
    /// Run one saved input through `--target` (not `all`) and report.
    #[arg(long)]
    replay: Option<PathBuf>,
    /// Write `--inputs` (default 500) generated inputs per target into DIR/<target>/, as a
    /// seed corpus for the coverage-guided engine, and exit.
    #[arg(long)]
    write_corpus: Option<PathBuf>,
}

#[cfg(not(feature = "libfuzzer"))]
fn main() -> ExitCode {
    let args = Args::parse();
    let targets: Vec<&'static Target> = if args.target == "all" {
        TARGETS.iter().collect()
    } else if let Some(target) = targets::find(&args.target) {
        vec![target]
    } else {
        let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
        eprintln!(
            "unknown target {:?}; targets: {}, all",
            args.target,
            names.join(", ")
        );
        return ExitCode::from(2);
    };
    if let Some(file) = &args.replay {
        return match targets.as_slice() {
            [target] => replay(target, file),
            _ => {
                eprintln!("--replay needs one --target");
                ExitCode::from(2)
            }
        };
    }
    let seed = args.seed.unwrap_or_else(random_seed);
    let corpus = Corpus::load();
    if let Some(dir) = &args.write_corpus {
        return write_corpus(&targets, &corpus, seed, args.inputs.unwrap_or(500), dir);
    }
    println!(
        "shardline-fuzz: seed {seed}, {} s or {} inputs per target, {} ms per input; corpus: \
         {} requests, {} policies",
        args.seconds,
        args.inputs
            .map_or("unbounded".to_owned(), |n| n.to_string()),
        args.input_ms,
        corpus.requests.len(),
        corpus.policies.len()
    );
    let corpus = Arc::new(corpus);
    let mut failed = false;
    for target in targets {
        let report = run(target, &corpus, seed, &args);
        println!(
            "{:<8} {:>9} inputs in {:>5.1} s ({:>7.0}/s), {:>4} outcome kinds, {} — {}",
            target.name,
            report.inputs,
            report.elapsed.as_secs_f64(),
            report.inputs as f64 / report.elapsed.as_secs_f64().max(1e-9),
            report.kinds,
            if report.failure.is_some() {
                "FAILED"
            } else {
                "0 failures"
            },
            target.what
        );
        if let Some(failure) = report.failure {
            println!("{failure}");
            failed = true;
            break;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

struct Report {
    inputs: u64,
    elapsed: Duration,
    kinds: usize,
    failure: Option<String>,
}

/// What the worker and the watchdog share: the input being checked and when it started
/// (milliseconds since the run began, plus one; 0 between inputs).
struct Current {
    input: Mutex<Vec<u8>>,
    started_ms: AtomicU64,
}

fn run(target: &'static Target, corpus: &Arc<Corpus>, seed: u64, args: &Args) -> Report {
    let begin = Instant::now();
    let current = Arc::new(Current {
        input: Mutex::new(Vec::new()),
        started_ms: AtomicU64::new(0),
    });
    let deadline = Duration::from_secs(args.seconds);
    let inputs_max = args.inputs.unwrap_or(u64::MAX);
    let worker = {
        let (corpus, current) = (Arc::clone(corpus), Arc::clone(&current));
        std::thread::Builder::new()
            .name(format!("fuzz-{}", target.name))
            .spawn(move || fuzz(target, &corpus, seed, begin, deadline, inputs_max, &current))
            .expect("spawn the fuzz worker")
    };
    let bound = Duration::from_millis(args.input_ms);
    while !worker.is_finished() {
        std::thread::sleep(Duration::from_millis(20));
        let started = current.started_ms.load(Ordering::Acquire);
        let now_ms = begin.elapsed().as_millis() as u64 + 1;
        if started != 0 && now_ms.saturating_sub(started) > bound.as_millis() as u64 {
            let input = current.input.lock().map(|i| i.clone()).unwrap_or_default();
            let what = if input.is_empty() {
                format!("generating an input took longer than {} ms", args.input_ms)
            } else {
                format!("an input ran longer than {} ms", args.input_ms)
            };
            println!(
                "{}",
                failure(target, seed, &args.out, "hang", &what, &input)
            );
            // The worker is stuck inside the target: end the process rather than wait.
            std::process::exit(1);
        }
    }
    let (inputs, kinds, failure_found) = worker.join().expect("the worker catches panics");
    Report {
        inputs,
        elapsed: begin.elapsed(),
        kinds,
        failure: failure_found
            .map(|(kind, what, input)| failure(target, seed, &args.out, kind, &what, &input)),
    }
}

type Found = Option<(&'static str, String, Vec<u8>)>;

/// The worker: generate, mutate, check, until the time or the input count is used up or
/// an input fails. Returns the inputs tried, the outcome kinds seen, and the failure.
fn fuzz(
    target: &Target,
    corpus: &Corpus,
    seed: u64,
    begin: Instant,
    deadline: Duration,
    inputs_max: u64,
    current: &Current,
) -> (u64, usize, Found) {
    let mut rng = Rng::new(seed ^ fnv1a(target.name.as_bytes()));
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let mut kinds: HashSet<String> = HashSet::new();
    let mut inputs = 0;
    while inputs < inputs_max && begin.elapsed() < deadline {
        // Generation is timed too (a generator that blows up is a harness bug, but must
        // not stall the run); meanwhile the shared input is empty.
        let started = begin.elapsed().as_millis() as u64 + 1;
        current.input.lock().expect("never poisoned").clear();
        current.started_ms.store(started, Ordering::Release);
        let input = next_input(&mut rng, target, corpus, &pool);
        current
            .input
            .lock()
            .expect("never poisoned: no panic inside")
            .extend_from_slice(&input);
        let checked = catch_unwind(AssertUnwindSafe(|| (target.check)(&input)));
        current.started_ms.store(0, Ordering::Release);
        inputs += 1;
        match checked {
            Ok(Ok(kind)) => {
                if kinds.len() < POOL_INPUTS_MAX * 4 && kinds.insert(kind) {
                    if pool.len() < POOL_INPUTS_MAX {
                        pool.push(input);
                    } else {
                        let i = rng.below(pool.len());
                        pool[i] = input;
                    }
                }
            }
            Ok(Err(violation)) => {
                return (inputs, kinds.len(), Some(("invariant", violation, input)))
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "a panic".to_owned());
                return (inputs, kinds.len(), Some(("panic", message, input)));
            }
        }
    }
    (inputs, kinds.len(), None)
}

/// A fresh structured input, a mutated one, or a mutated pool input.
fn next_input(rng: &mut Rng, target: &Target, corpus: &Corpus, pool: &[Vec<u8>]) -> Vec<u8> {
    let mut input = match rng.below(8) {
        0 | 1 => (target.generate)(rng, corpus),
        2 | 3 => {
            let mut input = (target.generate)(rng, corpus);
            mutate::mutate(rng, &mut input, target.dictionary, pool);
            input
        }
        _ if pool.is_empty() => (target.generate)(rng, corpus),
        _ => {
            let mut input = rng.pick(pool).clone();
            mutate::mutate(rng, &mut input, target.dictionary, pool);
            input
        }
    };
    input.truncate(mutate::INPUT_BYTES_MAX);
    input
}

/// Saves a failing input and says how to replay it.
fn failure(target: &Target, seed: u64, out: &Path, kind: &str, what: &str, input: &[u8]) -> String {
    let file = out.join(format!("{}-{kind}-{:016x}.bin", target.name, fnv1a(input)));
    let saved = std::fs::create_dir_all(out).and_then(|()| std::fs::write(&file, input));
    let shown: String = String::from_utf8_lossy(&input[..input.len().min(512)]).into_owned();
    let place = match saved {
        Ok(()) => format!("saved to {}", file.display()),
        Err(e) => format!("could not save to {}: {e}", file.display()),
    };
    format!(
        "FAILURE ({kind}) in {} with seed {seed}: {what}\ninput ({} bytes, {place}): {shown:?}\n\
         replay: cargo run -p shardline-fuzz -- --target {} --replay {}",
        target.name,
        input.len(),
        target.name,
        file.display()
    )
}

fn replay(target: &Target, file: &Path) -> ExitCode {
    let input = match std::fs::read(file) {
        Ok(input) => input,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    match catch_unwind(AssertUnwindSafe(|| (target.check)(&input))) {
        Ok(Ok(kind)) => {
            println!("{}: passes ({kind})", file.display());
            ExitCode::SUCCESS
        }
        Ok(Err(violation)) => {
            println!("{}: invariant broken: {violation}", file.display());
            ExitCode::FAILURE
        }
        Err(_) => {
            println!("{}: panicked (message above)", file.display());
            ExitCode::FAILURE
        }
    }
}

fn write_corpus(
    targets: &[&Target],
    corpus: &Corpus,
    seed: u64,
    count: u64,
    dir: &Path,
) -> ExitCode {
    for target in targets {
        let mut rng = Rng::new(seed ^ fnv1a(target.name.as_bytes()));
        let target_dir = dir.join(target.name);
        if let Err(e) = std::fs::create_dir_all(&target_dir) {
            eprintln!("{}: {e}", target_dir.display());
            return ExitCode::from(2);
        }
        for n in 0..count {
            let input = next_input(&mut rng, target, corpus, &[]);
            let file = target_dir.join(format!("seed-{n:05}"));
            if let Err(e) = std::fs::write(&file, input) {
                eprintln!("{}: {e}", file.display());
                return ExitCode::from(2);
            }
        }
        println!(
            "{}: {count} inputs in {}",
            target.name,
            target_dir.display()
        );
    }
    ExitCode::SUCCESS
}

// libFuzzer's entry: the target named by `FUZZ_TARGET`, its violations as panics (which
// libFuzzer reports and saves as crashes).
#[cfg(feature = "libfuzzer")]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    static TARGET: std::sync::OnceLock<&'static Target> = std::sync::OnceLock::new();
    let target = TARGET.get_or_init(|| {
        let name = std::env::var("FUZZ_TARGET").unwrap_or_default();
        targets::find(&name).unwrap_or_else(|| panic!("set FUZZ_TARGET to a target, not {name:?}"))
    });
    if let Err(violation) = (target.check)(data) {
        panic!("{}: {violation}", target.name);
    }
});
