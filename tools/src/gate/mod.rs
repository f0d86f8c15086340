//! `shardline gate`: the perf gate. Compares a candidate perf report with a baseline under
//! a policy and says PASS or FAIL rule by rule, so a build can be gated on p99 latency.
//!
//! Inputs are Beamline's formats (`compat/beamline/perf/baseline_cp1.json`,
//! `policy_cp1.json`) and Shardline's bench report (see `report` for the metric names it
//! flattens into). The candidate may be several runs of the same benchmark; each metric's
//! candidate value is then the median of the runs, which tames the noise of a shared
//! machine (see `report`).
//!
//! The three outcomes are kept apart on purpose: `Ok(outcome)` with `outcome.passed()`
//! (exit 0), `Ok(outcome)` with a failed line (exit 1, a regression), and `Err(GateError)`
//! (exit 2, unusable input: a missing file, invalid JSON, an unknown rule, a candidate
//! measured under other conditions than the baseline (`conditions`), a latency rule on a
//! run that had no successful answer). A gate that
//! treated a typo in its policy as a pass, or as a regression, would be trusted less.
//!
//! Why not serde structs for the formats: the report formats differ in shape, unknown
//! policy keys must be refused with their JSON path, and duplicate keys must not silently
//! drop a rule; reading `serde_json::Value` step by step does all three (see `json`).
//!
//! Layout: `report` (reports and the median), `conditions` (whether two reports are
//! comparable), `policy` (rules and flags), `check` (the pure
//! verdict), and `run` here, the only function that touches the file system.

mod check;
mod conditions;
mod error;
mod json;
mod policy;
mod report;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use check::{evaluate, Check, Outcome, Status, DEFAULT_P99_MAX_PCT_INCREASE};
pub use conditions::differences;
pub use error::GateError;
pub use policy::{is_p99, parse_policy, Bound, GatePolicy, Origin, Rule};
pub use policy::{ALL_METRICS_FLAG, EXIT_CODE_FLAGS, NO_P99_FLAG};
pub use report::{latency_metric, median, parse_document, parse_report, Candidate, Metrics};
pub use report::{ReportDoc, Sample, BENCH_FIELDS, BENCH_LATENCY_KEY, CONDITIONS_KEY, METRICS_KEY};

/// Largest report or policy file read (real ones are a few hundred bytes).
pub const GATE_FILE_BYTES_MAX: u64 = 4 << 20;
/// Metrics in one report.
pub const METRICS_MAX: usize = 1024;
/// Rules in one policy.
pub const RULES_MAX: usize = 1024;
/// Candidate runs compared in one gate run.
pub const CANDIDATE_RUNS_MAX: usize = 100;

const _: () = assert!(RULES_MAX >= METRICS_MAX, "a policy can bound every metric");

/// The files of one gate run.
#[derive(Debug, Clone, Copy)]
pub struct GateInputs<'a> {
    pub baseline: &'a Path,
    pub policy: &'a Path,
    /// One report per run; at least one.
    pub candidates: &'a [PathBuf],
    /// The exit code of the candidate's benchmark run, if known.
    pub exit_code: Option<i32>,
    /// Judge even when the conditions differ or are unknown (`--allow-different-conditions`).
    pub allow_different_conditions: bool,
}

/// Reads every input, then judges the candidate.
pub fn run(inputs: &GateInputs<'_>) -> Result<Outcome, GateError> {
    let count = inputs.candidates.len();
    if count == 0 {
        return Err(GateError::NoCandidate { dir: None });
    }
    if count > CANDIDATE_RUNS_MAX {
        return Err(GateError::TooManyRuns {
            count,
            max: CANDIDATE_RUNS_MAX,
        });
    }
    let policy = parse_policy(inputs.policy, &read(inputs.policy)?)?;
    let baseline = parse_document(inputs.baseline, &read(inputs.baseline)?)?;
    let runs = inputs
        .candidates
        .iter()
        .map(|file| parse_document(file, &read(file)?))
        .collect::<Result<Vec<ReportDoc>, GateError>>()?;
    let notes = check_conditions(inputs, &baseline, &runs)?;
    let reports = std::iter::once((inputs.baseline, &baseline))
        .chain(inputs.candidates.iter().map(PathBuf::as_path).zip(&runs));
    for (file, doc) in reports {
        check_latency_measured(&policy, file, doc)?;
    }
    let metrics: Vec<Metrics> = runs.into_iter().map(|r| r.metrics).collect();
    let candidate = Candidate::from_runs(&metrics);
    let mut outcome = evaluate(&policy, &baseline.metrics, &candidate, inputs.exit_code);
    outcome.notes = notes;
    Ok(outcome)
}

/// Every candidate run's conditions against the baseline's: equal passes silently;
/// different or unknown is refused, or with `allow_different_conditions` becomes a note
/// printed above the verdict.
fn check_conditions(
    inputs: &GateInputs<'_>,
    baseline: &ReportDoc,
    runs: &[ReportDoc],
) -> Result<Vec<String>, GateError> {
    let mut notes = Vec::new();
    let allow = inputs.allow_different_conditions;
    let Some(base) = &baseline.conditions else {
        if !allow {
            return Err(GateError::UnknownConditions {
                file: inputs.baseline.to_path_buf(),
            });
        }
        notes.push(format!(
            "conditions: {} records none; judged anyway (--allow-different-conditions)",
            inputs.baseline.display()
        ));
        return Ok(notes);
    };
    for (file, run) in inputs.candidates.iter().zip(runs) {
        let Some(conditions) = &run.conditions else {
            if !allow {
                return Err(GateError::UnknownConditions { file: file.clone() });
            }
            notes.push(format!(
                "conditions: {} records none; judged anyway (--allow-different-conditions)",
                file.display()
            ));
            continue;
        };
        let fields = differences(base, conditions);
        if fields.is_empty() {
            continue;
        }
        if !allow {
            return Err(GateError::DifferentConditions {
                baseline: inputs.baseline.to_path_buf(),
                candidate: file.clone(),
                fields: fields.join(", "),
            });
        }
        notes.push(format!(
            "conditions: {} differs from the baseline in {}; judged anyway \
             (--allow-different-conditions)",
            file.display(),
            fields.join(", ")
        ));
    }
    Ok(notes)
}

/// A rule (the policy's, or the default p99 rule) on a latency the report has as `null`
/// cannot be judged: refused as unusable input rather than skipped or failed.
fn check_latency_measured(
    policy: &GatePolicy,
    file: &Path,
    doc: &ReportDoc,
) -> Result<(), GateError> {
    let default_p99 = !policy.p99_not_applicable && !policy.rules.iter().any(|r| is_p99(&r.metric));
    let judged = |metric: &str| {
        policy.rules.iter().any(|r| r.metric == metric) || (default_p99 && is_p99(metric))
    };
    match doc.null_latency.iter().find(|(metric, _)| judged(metric)) {
        Some((metric, path)) => Err(GateError::NoLatency {
            file: file.to_path_buf(),
            path: path.clone(),
            metric: metric.clone(),
        }),
        None => Ok(()),
    }
}

/// The `*.json` files of a directory of runs, sorted by name.
pub fn runs_in_dir(dir: &Path) -> Result<Vec<PathBuf>, GateError> {
    let unreadable = |source| GateError::Read {
        file: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        if path.extension().is_some_and(|e| e == "json") && path.is_file() {
            if files.len() == CANDIDATE_RUNS_MAX {
                return Err(GateError::TooManyRuns {
                    count: files.len() + 1,
                    max: CANDIDATE_RUNS_MAX,
                });
            }
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(GateError::NoCandidate {
            dir: Some(dir.to_path_buf()),
        });
    }
    files.sort();
    Ok(files)
}

/// A whole file, at most `GATE_FILE_BYTES_MAX` bytes.
fn read(file: &Path) -> Result<Vec<u8>, GateError> {
    let unreadable = |source| GateError::Read {
        file: file.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .map_err(unreadable)?
        .take(GATE_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > GATE_FILE_BYTES_MAX {
        return Err(GateError::TooLarge {
            file: file.to_path_buf(),
            max: GATE_FILE_BYTES_MAX,
        });
    }
    Ok(bytes)
}
