//! Why the gate could not judge a candidate: unusable input, never a regression (that is a
//! `FAIL` line, exit 1). Every variant names the file, and those about content name the
//! JSON path (`$.rules.rps.relative.max_pct_decrease`), so a broken report or policy is
//! fixed without guessing; the binary maps all of them to exit 2.

use std::path::PathBuf;

/// Why `gate::run` (or one of its parsers) refused its input.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// A file or directory could not be opened or read.
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    /// A file is larger than `GATE_FILE_BYTES_MAX`.
    #[error("{}: larger than {max} bytes", file.display())]
    TooLarge { file: PathBuf, max: u64 },
    /// The text is not JSON (or a number does not fit a double).
    #[error("{}: not valid JSON (line {line}, column {column}): {message}", file.display())]
    Json {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// An object has the same key twice; JSON parsers would silently keep one of them.
    #[error("{}: {path}: duplicate key {key:?}", file.display())]
    DuplicateKey {
        file: PathBuf,
        path: String,
        key: String,
    },
    /// A value has the wrong type: a metric that is not a number, a flag that is not a
    /// boolean, rules that are not an object.
    #[error("{}: {path}: expected {expected}, found {found}", file.display())]
    WrongType {
        file: PathBuf,
        path: String,
        expected: &'static str,
        found: &'static str,
    },
    /// A report with neither known shape.
    #[error(
        "{}: $: not a perf report: expected a \"metrics\" object (Beamline) or a \
         \"latency_us\" object (Shardline bench report)",
        file.display()
    )]
    NotAReport { file: PathBuf },
    /// A policy key the gate does not know: a rule kind, a bound or a gate flag. Refused
    /// rather than ignored, since a misspelt rule would silently check nothing.
    #[error("{}: {path}: unknown {what} {found:?} (expected {expected})", file.display())]
    Unknown {
        file: PathBuf,
        path: String,
        what: &'static str,
        found: String,
        expected: &'static str,
    },
    /// A relative bound below zero (an "increase" of -5 % is a typo, not a tighter rule).
    #[error("{}: {path}: percentage must be zero or more, found {value}", file.display())]
    NegativePercent {
        file: PathBuf,
        path: String,
        value: f64,
    },
    /// A rule object with no bound in it would check nothing.
    #[error("{}: {path}: empty rule: give at least one bound", file.display())]
    EmptyRule { file: PathBuf, path: String },
    /// A report holds both shapes and they disagree on one metric.
    #[error(
        "{}: {path}: metric {metric:?} is {first} from the bench fields but {second} here",
        file.display()
    )]
    ConflictingMetric {
        file: PathBuf,
        path: String,
        metric: String,
        first: f64,
        second: f64,
    },
    /// More metrics or rules in one file than the gate's named limits.
    #[error("{}: {path}: more than {max} {what}", file.display())]
    TooMany {
        file: PathBuf,
        path: String,
        what: &'static str,
        max: usize,
    },
    /// A candidate measured under other conditions than the baseline (see `conditions`).
    #[error(
        "{}: measured under other conditions than the baseline {}: {fields}; the gate would \
         judge the load, not the code: rerun the candidate under the baseline's conditions, \
         or take a baseline under these, or pass --allow-different-conditions",
        candidate.display(), baseline.display()
    )]
    DifferentConditions {
        baseline: PathBuf,
        candidate: PathBuf,
        fields: String,
    },
    /// A report that does not record its conditions (older build, another format).
    #[error(
        "{}: $.conditions: absent (a report of an older build, or another format), so the \
         gate cannot tell whether it is comparable with the other reports; rerun it with \
         this build, or pass --allow-different-conditions",
        file.display()
    )]
    UnknownConditions { file: PathBuf },
    /// A rule on a latency the report has as `null`: its run had no successful answer.
    #[error(
        "{}: {path}: null: the run had no successful answer (latency_samples 0), so the \
         rule on {metric} cannot be judged; look at the run's errors and rerun it",
        file.display()
    )]
    NoLatency {
        file: PathBuf,
        path: String,
        metric: String,
    },
    /// More candidate runs than `CANDIDATE_RUNS_MAX`.
    #[error("{count} candidate reports: at most {max} runs are compared")]
    TooManyRuns { count: usize, max: usize },
    /// No candidate report was given, or `--runs-dir` holds no `*.json` file.
    #[error("no candidate report{}", dir.as_ref().map_or(" given".to_string(),
        |d| format!(": {} holds no *.json file", d.display())))]
    NoCandidate { dir: Option<PathBuf> },
}
