//! Judging a candidate: every rule becomes one `PASS`, `FAIL` or `SKIP` line with the
//! numbers behind it, then a summary. Pure: no I/O, so every boundary is unit-tested.
//!
//! Invariants:
//! - p99 is always enforced. If the policy has no rule on a p99 metric, a default
//!   `relative max_pct_increase DEFAULT_P99_MAX_PCT_INCREASE` is added on each p99 metric
//!   both reports have; if they share none, that is a `FAIL`. A rule on a p99 metric is
//!   never skipped: a missing p99 fails even without `require_all_metrics_present`.
//!   Only a policy that declares `p99_not_applicable` (its reports measure no latency)
//!   goes without the default rule.
//! - Bounds are inclusive: a candidate exactly at the limit passes.
//! - A relative limit is `base ± |base| × pct / 100`. With a base of 0 the limit is 0
//!   whatever the percentage (no increase is allowed over nothing), so the rule acts as
//!   an absolute `max 0` (increase) or `min 0` (decrease), and the line says so.
//! - `SKIP` lines (a metric missing without `require_all_metrics_present`, an exit code
//!   the policy does not require) are not counted as rules; the summary reports them.

use std::fmt;

use super::policy::{is_p99, Bound, GatePolicy, Origin, Rule};
use super::report::{Candidate, Metrics, Sample};

/// The default p99 budget when the policy has none: +20 % over the baseline.
pub const DEFAULT_P99_MAX_PCT_INCREASE: f64 = 20.0;

/// The subject of the exit-code line.
const EXIT_CODE_SUBJECT: &str = "candidate_exit_code equals 0";

/// The verdict of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    /// Not checked, and not a failure.
    Skip,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        })
    }
}

/// One line of the verdict: `PASS latency_p99_us relative max_pct_increase 20: base …`.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub status: Status,
    /// The metric and rule (`latency_p99_us relative max_pct_increase 20`).
    pub subject: String,
    /// The numbers and any note.
    pub detail: String,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.subject, self.detail)
    }
}

/// Every line of one gate run; `Display` prints them and the summary line.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// How many candidate runs the candidate's values are the median of.
    pub runs: usize,
    /// Printed above the verdict (conditions judged anyway).
    pub notes: Vec<String>,
    pub checks: Vec<Check>,
}

impl Outcome {
    fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// No line failed.
    pub fn passed(&self) -> bool {
        self.count(Status::Fail) == 0
    }

    /// `gate: PASS (6 rules)` or `gate: FAIL (2 of 6 rules failed, 1 skipped)`.
    pub fn summary(&self) -> String {
        let failed = self.count(Status::Fail);
        let rules = failed + self.count(Status::Pass);
        let skipped = match self.count(Status::Skip) {
            0 => String::new(),
            n => format!(", {n} skipped"),
        };
        let noun = if rules == 1 { "rule" } else { "rules" };
        if failed == 0 {
            format!("gate: PASS ({rules} {noun}{skipped})")
        } else {
            format!("gate: FAIL ({failed} of {rules} {noun} failed{skipped})")
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for note in &self.notes {
            writeln!(f, "{note}")?;
        }
        if self.runs > 1 {
            writeln!(f, "candidate: median of {} runs", self.runs)?;
        }
        for check in &self.checks {
            writeln!(f, "{check}")?;
        }
        writeln!(f, "{}", self.summary())
    }
}

/// Judges the candidate against the baseline under the policy.
pub fn evaluate(
    policy: &GatePolicy,
    baseline: &Metrics,
    candidate: &Candidate,
    exit_code: Option<i32>,
) -> Outcome {
    let (rules, no_p99) = with_default_p99(policy, baseline, candidate);
    let mut checks: Vec<Check> = rules
        .iter()
        .map(|rule| {
            check_rule(
                rule,
                baseline,
                candidate,
                policy.require_all_metrics_present,
            )
        })
        .collect();
    checks.extend(no_p99);
    checks.push(check_exit_code(policy.require_exit_code_zero, exit_code));
    Outcome {
        runs: candidate.runs(),
        notes: Vec::new(),
        checks,
    }
}

/// The policy's rules, plus the default p99 rule when the policy has none on p99; or,
/// when no p99 metric is in both reports, the failing line that says p99 cannot be checked.
fn with_default_p99(
    policy: &GatePolicy,
    baseline: &Metrics,
    candidate: &Candidate,
) -> (Vec<Rule>, Option<Check>) {
    let mut rules = policy.rules.clone();
    if policy.p99_not_applicable || rules.iter().any(|r| is_p99(&r.metric)) {
        return (rules, None);
    }
    let shared = baseline
        .keys()
        .filter(|m| is_p99(m) && candidate.reports(m));
    let before = rules.len();
    rules.extend(shared.map(|metric| Rule {
        metric: metric.clone(),
        bound: Bound::MaxPctIncrease(DEFAULT_P99_MAX_PCT_INCREASE),
        origin: Origin::DefaultP99,
    }));
    let no_p99 = (rules.len() == before).then(|| Check {
        status: Status::Fail,
        subject: "p99 (default rule)".into(),
        detail: "the policy has no p99 rule and no p99 metric is in both baseline and \
                 candidate, so p99 cannot be enforced"
            .into(),
    });
    (rules, no_p99)
}

fn subject(rule: &Rule) -> String {
    let b = rule.bound;
    format!("{} {} {} {}", rule.metric, b.kind(), b.name(), b.value())
}

fn check_rule(rule: &Rule, baseline: &Metrics, candidate: &Candidate, require_all: bool) -> Check {
    let base = baseline.get(&rule.metric).copied();
    let value = match candidate.sample(&rule.metric) {
        Sample::Median(value) => Ok(value),
        Sample::Missing => Err("missing from the candidate".to_string()),
        Sample::Partial { missing, runs } => {
            Err(format!("missing in {missing} of {runs} candidate runs"))
        }
    };
    let value = match (value, base) {
        (Err(why), _) => Err(why),
        (Ok(_), None) if rule.bound.is_relative() => Err("missing from the baseline".into()),
        (Ok(value), _) => Ok(value),
    };
    let mut check = match value {
        Ok(value) => judge(rule.bound, base, value),
        Err(why) => missing(rule, require_all, why),
    };
    check.subject = subject(rule);
    if rule.origin == Origin::DefaultP99 {
        check.detail += " (default rule: the policy has none on p99, and p99 is always enforced)";
    }
    check
}

fn missing(rule: &Rule, require_all: bool, why: String) -> Check {
    let (status, note) = if is_p99(&rule.metric) {
        (Status::Fail, "a p99 rule is never skipped")
    } else if require_all {
        (Status::Fail, "require_all_metrics_present")
    } else {
        (Status::Skip, "require_all_metrics_present is off")
    };
    Check {
        status,
        subject: String::new(),
        detail: format!("{why} ({note})"),
    }
}

/// The limit a bound puts on the candidate, and whether the candidate is within it.
fn judge(bound: Bound, base: Option<f64>, value: f64) -> Check {
    let relative = |sign: f64, pct: f64| {
        let base = base.expect("relative rules are judged with a baseline");
        base + sign * base.abs() * pct / 100.0
    };
    let limit = match bound {
        Bound::MaxPctIncrease(pct) => relative(1.0, pct),
        Bound::MaxPctDecrease(pct) => relative(-1.0, pct),
        Bound::Equals(x) | Bound::Max(x) | Bound::Min(x) => x,
    };
    let pass = match bound {
        Bound::MaxPctIncrease(_) | Bound::Max(_) => value <= limit,
        Bound::MaxPctDecrease(_) | Bound::Min(_) => value >= limit,
        Bound::Equals(_) => value == limit,
    };
    let mut detail = match base {
        Some(base) => format!("base {base} candidate {value} limit {limit}"),
        None => format!("candidate {value} limit {limit}"),
    };
    if bound.is_relative() && base == Some(0.0) {
        detail += match bound {
            Bound::MaxPctIncrease(_) => " (base is 0: no relative room, so candidate <= 0)",
            _ => " (base is 0: no relative room, so candidate >= 0)",
        };
    }
    Check {
        status: if pass { Status::Pass } else { Status::Fail },
        subject: String::new(),
        detail,
    }
}

fn check_exit_code(required: bool, exit_code: Option<i32>) -> Check {
    let (status, detail) = match (required, exit_code) {
        (true, Some(0)) => (Status::Pass, "candidate 0".to_string()),
        (true, Some(code)) => (Status::Fail, format!("candidate {code}")),
        (true, None) => (
            Status::Fail,
            "required by the policy but not given (pass --candidate-exit-code)".to_string(),
        ),
        (false, Some(code)) => (
            Status::Skip,
            format!("not required by the policy (given {code})"),
        ),
        (false, None) => (Status::Skip, "not required by the policy".to_string()),
    };
    Check {
        status,
        subject: EXIT_CODE_SUBJECT.into(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(pairs: &[(&str, f64)]) -> Metrics {
        pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()
    }

    fn policy(rules: &[(&str, Bound)]) -> GatePolicy {
        GatePolicy {
            rules: rules
                .iter()
                .map(|&(metric, bound)| Rule {
                    metric: metric.into(),
                    bound,
                    origin: Origin::Policy,
                })
                .collect(),
            ..GatePolicy::default()
        }
    }

    /// The line about `metric`.
    fn line<'o>(outcome: &'o Outcome, metric: &str) -> &'o Check {
        let prefix = format!("{metric} ");
        let found = outcome
            .checks
            .iter()
            .find(|c| c.subject.starts_with(&prefix));
        found.unwrap_or_else(|| panic!("no line on {metric}:\n{outcome}"))
    }

    /// The first line of the verdict on one rule, base and candidate value.
    fn one(bound: Bound, base: f64, value: f64) -> Check {
        let outcome = evaluate(
            &policy(&[("m", bound), ("p99", Bound::Max(1.0))]),
            &metrics(&[("m", base), ("p99", 1.0)]),
            &Candidate::from_runs(&[metrics(&[("m", value), ("p99", 1.0)])]),
            None,
        );
        outcome.checks[0].clone()
    }

    fn status(bound: Bound, base: f64, value: f64) -> Status {
        one(bound, base, value).status
    }

    /// Each bound passes exactly at its limit and fails just past it.
    #[test]
    fn every_bound_passes_at_the_limit_and_fails_past_it() {
        use Status::{Fail, Pass};
        let cases = [
            (Bound::MaxPctIncrease(20.0), 180.0, 216.0, Pass),
            (Bound::MaxPctIncrease(20.0), 180.0, 216.001, Fail),
            (Bound::MaxPctIncrease(15.0), 99.0, 113.85, Pass),
            (Bound::MaxPctIncrease(15.0), 99.0, 113.86, Fail),
            (Bound::MaxPctDecrease(10.0), 100.0, 90.0, Pass),
            (Bound::MaxPctDecrease(10.0), 100.0, 89.999, Fail),
            (Bound::MaxPctDecrease(10.0), 35000.0, 31500.0, Pass),
            (Bound::MaxPctDecrease(10.0), 35000.0, 31499.0, Fail),
            (Bound::Equals(0.0), 0.0, 0.0, Pass),
            (Bound::Equals(0.0), 0.0, 1.0, Fail),
            (Bound::Max(150.0), 0.0, 150.0, Pass),
            (Bound::Max(150.0), 0.0, 150.5, Fail),
            (Bound::Min(10.0), 0.0, 10.0, Pass),
            (Bound::Min(10.0), 0.0, 9.5, Fail),
        ];
        for (bound, base, value, want) in cases {
            assert_eq!(status(bound, base, value), want, "{bound:?} {base} {value}");
        }
    }

    #[test]
    fn lines_show_base_candidate_and_limit() {
        let check = one(Bound::MaxPctIncrease(20.0), 180.0, 190.0);
        assert_eq!(
            check.to_string(),
            "PASS m relative max_pct_increase 20: base 180 candidate 190 limit 216"
        );
        let check = one(Bound::Max(150.0), 180.0, 190.0);
        assert_eq!(
            check.to_string(),
            "FAIL m absolute max 150: base 180 candidate 190 limit 150"
        );
    }

    /// Absolute rules need no baseline value.
    #[test]
    fn absolute_rules_need_no_baseline() {
        let outcome = evaluate(
            &policy(&[
                ("errors_total", Bound::Equals(0.0)),
                ("p99", Bound::Max(5.0)),
            ]),
            &Metrics::new(),
            &Candidate::from_runs(&[metrics(&[("errors_total", 0.0), ("p99", 4.0)])]),
            None,
        );
        assert_eq!(
            outcome.checks[0].to_string(),
            "PASS errors_total absolute equals 0: candidate 0 limit 0"
        );
        assert!(outcome.passed(), "{outcome}");
    }

    /// With a base of 0 a relative increase allows nothing above 0, and the line says why;
    /// a relative decrease from 0 allows nothing below 0.
    #[test]
    fn zero_base_has_no_relative_room() {
        assert_eq!(status(Bound::MaxPctIncrease(50.0), 0.0, 0.0), Status::Pass);
        let check = one(Bound::MaxPctIncrease(50.0), 0.0, 1.0);
        assert_eq!(check.status, Status::Fail);
        assert!(check
            .detail
            .ends_with("limit 0 (base is 0: no relative room, so candidate <= 0)"));
        assert_eq!(status(Bound::MaxPctDecrease(10.0), 0.0, 0.0), Status::Pass);
        let check = one(Bound::MaxPctDecrease(10.0), 0.0, -1.0);
        assert_eq!(check.status, Status::Fail);
        assert!(check.detail.contains("candidate >= 0"), "{check}");
    }

    /// A negative base still gets room in the bound's direction (|base| scales the room).
    #[test]
    fn negative_base_room_goes_the_right_way() {
        assert_eq!(
            status(Bound::MaxPctIncrease(10.0), -100.0, -90.0),
            Status::Pass
        );
        assert_eq!(
            status(Bound::MaxPctIncrease(10.0), -100.0, -89.0),
            Status::Fail
        );
        assert_eq!(
            status(Bound::MaxPctDecrease(10.0), -100.0, -110.0),
            Status::Pass
        );
        assert_eq!(
            status(Bound::MaxPctDecrease(10.0), -100.0, -111.0),
            Status::Fail
        );
    }

    fn with_missing(require_all: bool, candidate: &[Metrics]) -> Outcome {
        let mut p = policy(&[
            ("rps", Bound::MaxPctDecrease(10.0)),
            ("latency_p99_us", Bound::MaxPctIncrease(20.0)),
        ]);
        p.require_all_metrics_present = require_all;
        let base = metrics(&[("rps", 100.0), ("latency_p99_us", 100.0)]);
        evaluate(&p, &base, &Candidate::from_runs(candidate), None)
    }

    /// Without `require_all_metrics_present` a missing metric is skipped; with it, fails.
    #[test]
    fn missing_metric_skips_or_fails_by_flag() {
        let only_p99 = [metrics(&[("latency_p99_us", 100.0)])];
        let outcome = with_missing(false, &only_p99);
        assert_eq!(
            line(&outcome, "rps").to_string(),
            "SKIP rps relative max_pct_decrease 10: missing from the candidate \
             (require_all_metrics_present is off)"
        );
        assert!(outcome.passed());
        assert_eq!(outcome.summary(), "gate: PASS (1 rule, 2 skipped)");
        let outcome = with_missing(true, &only_p99);
        assert_eq!(line(&outcome, "rps").status, Status::Fail);
        assert!(line(&outcome, "rps")
            .detail
            .ends_with("(require_all_metrics_present)"));
        assert_eq!(
            outcome.summary(),
            "gate: FAIL (1 of 2 rules failed, 1 skipped)"
        );
    }

    /// A p99 rule whose metric is missing fails even when missing metrics may be skipped.
    #[test]
    fn missing_p99_always_fails() {
        let outcome = with_missing(false, &[metrics(&[("rps", 100.0)])]);
        let p99 = line(&outcome, "latency_p99_us");
        assert_eq!(p99.status, Status::Fail, "{p99}");
        assert!(p99.detail.contains("a p99 rule is never skipped"), "{p99}");
    }

    /// A metric only some runs report is not compared against the others' median.
    #[test]
    fn metric_missing_in_some_runs_is_missing() {
        let runs = [
            metrics(&[("latency_p99_us", 100.0), ("rps", 100.0)]),
            metrics(&[("latency_p99_us", 100.0)]),
        ];
        let outcome = with_missing(true, &runs);
        assert_eq!(line(&outcome, "rps").status, Status::Fail);
        assert!(line(&outcome, "rps")
            .detail
            .starts_with("missing in 1 of 2 candidate runs"));
    }

    #[test]
    fn relative_rule_with_metric_missing_from_baseline() {
        let outcome = evaluate(
            &policy(&[
                ("rps", Bound::MaxPctDecrease(10.0)),
                ("p99", Bound::Max(1.0)),
            ]),
            &metrics(&[("p99", 1.0)]),
            &Candidate::from_runs(&[metrics(&[("rps", 5.0), ("p99", 1.0)])]),
            None,
        );
        assert_eq!(line(&outcome, "rps").status, Status::Skip);
        assert!(line(&outcome, "rps")
            .detail
            .starts_with("missing from the baseline"));
    }

    /// The candidate is the median of its runs: one bad run of three does not fail it.
    #[test]
    fn median_of_runs_is_judged() {
        let run = |p99: f64| metrics(&[("latency_p99_us", p99)]);
        let p = policy(&[("latency_p99_us", Bound::MaxPctIncrease(20.0))]);
        let base = run(180.0);
        let candidate = Candidate::from_runs(&[run(200.0), run(900.0), run(190.0)]);
        let outcome = evaluate(&p, &base, &candidate, None);
        assert!(outcome.passed(), "{outcome}");
        assert!(outcome
            .to_string()
            .starts_with("candidate: median of 3 runs\n"));
        assert!(outcome.checks[0].detail.contains("candidate 200 limit 216"));
        let candidate = Candidate::from_runs(&[run(900.0), run(220.0), run(190.0)]);
        assert!(!evaluate(&p, &base, &candidate, None).passed());
    }

    /// With no p99 rule in the policy, the gate enforces +20 % on every shared p99 metric
    /// and says it did.
    #[test]
    fn default_p99_rule_is_added_when_the_policy_has_none() {
        let p = policy(&[("rps", Bound::MaxPctDecrease(10.0))]);
        let base = metrics(&[
            ("rps", 100.0),
            ("latency_p99_us", 180.0),
            ("latency_p999_us", 1.0),
        ]);
        let run = |p99: f64| {
            metrics(&[
                ("rps", 100.0),
                ("latency_p99_us", p99),
                ("latency_p999_us", 1e6),
            ])
        };
        let outcome = evaluate(&p, &base, &Candidate::from_runs(&[run(216.0)]), None);
        assert_eq!(outcome.checks.len(), 3, "{outcome}");
        let default = &outcome.checks[1];
        assert_eq!(default.status, Status::Pass);
        assert_eq!(
            default.subject,
            "latency_p99_us relative max_pct_increase 20"
        );
        assert!(default
            .detail
            .contains("(default rule: the policy has none on p99"));
        let outcome = evaluate(&p, &base, &Candidate::from_runs(&[run(217.0)]), None);
        assert_eq!(
            outcome.summary(),
            "gate: FAIL (1 of 2 rules failed, 1 skipped)"
        );
    }

    /// A policy rule on p99 (whatever its bound) replaces the default.
    #[test]
    fn policy_p99_rule_replaces_the_default() {
        let p = policy(&[("latency_p99_ms", Bound::Max(300.0))]);
        let m = metrics(&[("latency_p99_ms", 250.0)]);
        let outcome = evaluate(
            &p,
            &m,
            &Candidate::from_runs(std::slice::from_ref(&m)),
            None,
        );
        assert_eq!(outcome.checks.len(), 2);
        assert_eq!(outcome.summary(), "gate: PASS (1 rule, 1 skipped)");
    }

    /// A policy for reports without latency (instruction counts) declares so and is judged
    /// on its own rules alone: no default p99 rule, no failure for want of one.
    #[test]
    fn p99_not_applicable_drops_the_default_rule() {
        let mut p = policy(&[("icount_x", Bound::MaxPctIncrease(5.0))]);
        p.p99_not_applicable = true;
        let base = metrics(&[("icount_x", 1000.0), ("latency_p99_us", 1.0)]);
        let cand = metrics(&[("icount_x", 1050.0), ("latency_p99_us", 9.0)]);
        let outcome = evaluate(&p, &base, &Candidate::from_runs(&[cand]), None);
        assert_eq!(outcome.checks.len(), 2, "{outcome}");
        assert_eq!(
            outcome.checks[0].to_string(),
            "PASS icount_x relative max_pct_increase 5: base 1000 candidate 1050 limit 1050"
        );
        assert_eq!(outcome.summary(), "gate: PASS (1 rule, 1 skipped)");
    }

    /// Reports that share no p99 metric cannot pass a gate that always enforces p99.
    #[test]
    fn no_shared_p99_fails() {
        let p = policy(&[("rps", Bound::MaxPctDecrease(10.0))]);
        let base = metrics(&[("rps", 100.0), ("latency_p99_ms", 200.0)]);
        let cand = metrics(&[("rps", 100.0), ("latency_p99_us", 200.0)]);
        let outcome = evaluate(&p, &base, &Candidate::from_runs(&[cand]), None);
        let line = &outcome.checks[1];
        assert_eq!(line.status, Status::Fail);
        assert!(line
            .to_string()
            .starts_with("FAIL p99 (default rule): the policy has no p99"));
        assert!(!outcome.passed());
    }

    /// The exit-code requirement: 0 passes, anything else or nothing fails; not required
    /// is a skip whatever the code.
    #[test]
    fn exit_code_requirement() {
        let line = |required: bool, code: Option<i32>| {
            let mut p = policy(&[("p99", Bound::Max(1.0))]);
            p.require_exit_code_zero = required;
            let m = metrics(&[("p99", 1.0)]);
            let outcome = evaluate(
                &p,
                &m,
                &Candidate::from_runs(std::slice::from_ref(&m)),
                code,
            );
            outcome.checks.last().unwrap().clone()
        };
        assert_eq!(
            line(true, Some(0)).to_string(),
            "PASS candidate_exit_code equals 0: candidate 0"
        );
        assert_eq!(
            line(true, Some(3)).to_string(),
            "FAIL candidate_exit_code equals 0: candidate 3"
        );
        let missing = line(true, None);
        assert_eq!(missing.status, Status::Fail);
        assert!(missing.detail.contains("--candidate-exit-code"));
        assert_eq!(line(false, Some(3)).status, Status::Skip);
        assert_eq!(line(false, None).status, Status::Skip);
    }

    #[test]
    fn summary_counts_rules_failures_and_skips() {
        let check = |status| Check {
            status,
            subject: "s".into(),
            detail: "d".into(),
        };
        let outcome = |statuses: &[Status]| Outcome {
            notes: Vec::new(),
            runs: 1,
            checks: statuses.iter().map(|&s| check(s)).collect(),
        };
        use Status::{Fail, Pass, Skip};
        assert_eq!(outcome(&[Pass; 6]).summary(), "gate: PASS (6 rules)");
        let two_failed = outcome(&[Pass, Fail, Pass, Fail, Pass, Pass]);
        assert_eq!(two_failed.summary(), "gate: FAIL (2 of 6 rules failed)");
        assert_eq!(
            outcome(&[Pass, Skip]).summary(),
            "gate: PASS (1 rule, 1 skipped)"
        );
        assert_eq!(
            outcome(&[Pass, Fail]).to_string(),
            "PASS s: d\nFAIL s: d\ngate: FAIL (1 of 2 rules failed)\n"
        );
    }
}
