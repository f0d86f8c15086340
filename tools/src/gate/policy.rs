//! The gate policy: which bound each metric must stay within, and the gate's flags.
//!
//! Format (Beamline's `policy_cp1.json`, which is also ours):
//! `{"rules": {<metric>: {"relative": {"max_pct_increase": p, "max_pct_decrease": p},
//! "absolute": {"equals": x, "max": x, "min": x}}}, "gate": {<flag>: bool}}`. A metric may
//! carry several bounds; each is one rule. Other top-level keys (`version`, comments) are
//! ignored, but inside `rules` and `gate` an unknown key is an error: a misspelt bound
//! would otherwise check nothing and pass.
//!
//! Flags (absent = false): `require_candidate_exit_code_zero` (Beamline spells it
//! `require_candidate_ct_exit_code_zero`; either being true requires it),
//! `require_all_metrics_present`, and `p99_not_applicable`: the reports measure no latency
//! (instruction counts, say), so the gate adds no default p99 rule and does not fail for
//! want of a p99 metric. Rules the policy states on p99 metrics still apply.

use std::path::Path;

use serde_json::{Map, Value};

use super::json::{boolean, child, number, object, parse, ROOT};
use super::{GateError, RULES_MAX};

/// One bound a metric must stay within. Relative bounds compare with the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// candidate ≤ base + |base| × pct / 100 (for base > 0: base × (1 + pct/100)).
    MaxPctIncrease(f64),
    /// candidate ≥ base − |base| × pct / 100 (for base > 0: base × (1 − pct/100)).
    MaxPctDecrease(f64),
    /// candidate = x, exactly (meant for counters such as `errors_total`).
    Equals(f64),
    /// candidate ≤ x.
    Max(f64),
    /// candidate ≥ x.
    Min(f64),
}

const RELATIVE: &str = "relative";
const ABSOLUTE: &str = "absolute";
const RELATIVE_BOUNDS: &str = "max_pct_increase or max_pct_decrease";
const ABSOLUTE_BOUNDS: &str = "equals, max or min";

impl Bound {
    /// `relative` or `absolute`, as in the policy.
    pub fn kind(self) -> &'static str {
        if self.is_relative() {
            RELATIVE
        } else {
            ABSOLUTE
        }
    }

    /// The bound's key in the policy.
    pub fn name(self) -> &'static str {
        match self {
            Bound::MaxPctIncrease(_) => "max_pct_increase",
            Bound::MaxPctDecrease(_) => "max_pct_decrease",
            Bound::Equals(_) => "equals",
            Bound::Max(_) => "max",
            Bound::Min(_) => "min",
        }
    }

    /// The percentage or the absolute value.
    pub fn value(self) -> f64 {
        match self {
            Bound::MaxPctIncrease(x)
            | Bound::MaxPctDecrease(x)
            | Bound::Equals(x)
            | Bound::Max(x)
            | Bound::Min(x) => x,
        }
    }

    /// Relative bounds need the baseline's value; absolute ones do not.
    pub fn is_relative(self) -> bool {
        matches!(self, Bound::MaxPctIncrease(_) | Bound::MaxPctDecrease(_))
    }

    fn from_key(kind: &str, key: &str, value: f64) -> Option<Bound> {
        Some(match (kind, key) {
            (RELATIVE, "max_pct_increase") => Bound::MaxPctIncrease(value),
            (RELATIVE, "max_pct_decrease") => Bound::MaxPctDecrease(value),
            (ABSOLUTE, "equals") => Bound::Equals(value),
            (ABSOLUTE, "max") => Bound::Max(value),
            (ABSOLUTE, "min") => Bound::Min(value),
            _ => return None,
        })
    }
}

/// Where a rule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Written in the policy.
    Policy,
    /// Added by the gate because the policy had no rule on a p99 metric.
    DefaultP99,
}

/// One metric and one bound.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub metric: String,
    pub bound: Bound,
    pub origin: Origin,
}

/// A parsed policy.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GatePolicy {
    /// Sorted by metric; per metric, in `Bound`'s order.
    pub rules: Vec<Rule>,
    pub require_exit_code_zero: bool,
    pub require_all_metrics_present: bool,
    pub p99_not_applicable: bool,
}

/// Our spelling and Beamline's of the exit-code flag.
pub const EXIT_CODE_FLAGS: [&str; 2] = [
    "require_candidate_exit_code_zero",
    "require_candidate_ct_exit_code_zero",
];
/// The missing-metric flag.
pub const ALL_METRICS_FLAG: &str = "require_all_metrics_present";
/// The flag of reports that have no latency to enforce.
pub const NO_P99_FLAG: &str = "p99_not_applicable";

/// Reads a policy document.
pub fn parse_policy(file: &Path, bytes: &[u8]) -> Result<GatePolicy, GateError> {
    let doc = parse(file, bytes)?;
    let top = object(file, ROOT, &doc)?;
    let rules_path = child(ROOT, "rules");
    let Some(rules) = top.get("rules") else {
        return Err(GateError::WrongType {
            file: file.to_path_buf(),
            path: rules_path,
            expected: "an object",
            found: "nothing",
        });
    };
    let mut policy = GatePolicy::default();
    for (metric, rule) in object(file, &rules_path, rules)? {
        let path = child(&rules_path, metric);
        parse_metric_rules(file, &path, metric, rule, &mut policy.rules)?;
    }
    if let Some(gate) = top.get("gate") {
        parse_flags(file, &child(ROOT, "gate"), gate, &mut policy)?;
    }
    Ok(policy)
}

/// One metric's rule object: `{"relative": {...}, "absolute": {...}}`.
fn parse_metric_rules(
    file: &Path,
    path: &str,
    metric: &str,
    rule: &Value,
    out: &mut Vec<Rule>,
) -> Result<(), GateError> {
    let kinds = object(file, path, rule)?;
    let unknown = kinds.keys().find(|k| *k != RELATIVE && *k != ABSOLUTE);
    if let Some(kind) = unknown {
        return Err(unknown_key(
            file,
            path,
            "rule kind",
            kind,
            "relative or absolute",
        ));
    }
    if kinds.is_empty() {
        return Err(empty(file, path));
    }
    for kind in [RELATIVE, ABSOLUTE] {
        let Some(bounds) = kinds.get(kind) else {
            continue;
        };
        let path = child(path, kind);
        let bounds = object(file, &path, bounds)?;
        if bounds.is_empty() {
            return Err(empty(file, &path));
        }
        for bound in parse_bounds(file, &path, kind, bounds)? {
            if out.len() == RULES_MAX {
                return Err(GateError::TooMany {
                    file: file.to_path_buf(),
                    path: path.clone(),
                    what: "rules",
                    max: RULES_MAX,
                });
            }
            let metric = metric.to_string();
            out.push(Rule {
                metric,
                bound,
                origin: Origin::Policy,
            });
        }
    }
    Ok(())
}

/// The bounds of one kind, in `Bound`'s order (increase before decrease, then equals,
/// max, min), whatever the document's order.
fn parse_bounds(
    file: &Path,
    path: &str,
    kind: &str,
    bounds: &Map<String, Value>,
) -> Result<Vec<Bound>, GateError> {
    let mut out = Vec::with_capacity(bounds.len());
    for (key, value) in bounds {
        let bound_path = child(path, key);
        let x = number(file, &bound_path, value)?;
        let Some(bound) = Bound::from_key(kind, key, x) else {
            let expected = if kind == RELATIVE {
                RELATIVE_BOUNDS
            } else {
                ABSOLUTE_BOUNDS
            };
            let what = if kind == RELATIVE {
                "relative bound"
            } else {
                "absolute bound"
            };
            return Err(unknown_key(file, path, what, key, expected));
        };
        if bound.is_relative() && x < 0.0 {
            return Err(GateError::NegativePercent {
                file: file.to_path_buf(),
                path: bound_path,
                value: x,
            });
        }
        out.push(bound);
    }
    out.sort_by_key(|b| order(*b));
    Ok(out)
}

fn order(bound: Bound) -> u8 {
    match bound {
        Bound::MaxPctIncrease(_) => 0,
        Bound::MaxPctDecrease(_) => 1,
        Bound::Equals(_) => 2,
        Bound::Max(_) => 3,
        Bound::Min(_) => 4,
    }
}

fn parse_flags(
    file: &Path,
    path: &str,
    gate: &Value,
    policy: &mut GatePolicy,
) -> Result<(), GateError> {
    for (flag, value) in object(file, path, gate)? {
        let on = boolean(file, &child(path, flag), value)?;
        if EXIT_CODE_FLAGS.contains(&flag.as_str()) {
            policy.require_exit_code_zero |= on;
        } else if flag == ALL_METRICS_FLAG {
            policy.require_all_metrics_present = on;
        } else if flag == NO_P99_FLAG {
            policy.p99_not_applicable = on;
        } else {
            let expected = "require_candidate_exit_code_zero, \
                            require_candidate_ct_exit_code_zero, require_all_metrics_present \
                            or p99_not_applicable";
            return Err(unknown_key(file, path, "gate flag", flag, expected));
        }
    }
    Ok(())
}

fn unknown_key(
    file: &Path,
    path: &str,
    what: &'static str,
    found: &str,
    expected: &'static str,
) -> GateError {
    GateError::Unknown {
        file: file.to_path_buf(),
        path: path.to_string(),
        what,
        found: found.to_string(),
        expected,
    }
}

fn empty(file: &Path, path: &str) -> GateError {
    GateError::EmptyRule {
        file: file.to_path_buf(),
        path: path.to_string(),
    }
}

/// Whether a metric name is a p99: it holds `p99` not followed by another digit
/// (`latency_p99_us`, `latency_p99_ms`, but not `latency_p999_us`, which is p99.9).
pub fn is_p99(metric: &str) -> bool {
    metric.match_indices("p99").any(|(at, _)| {
        let before = metric[..at].chars().next_back();
        let after = metric[at + 3..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Result<GatePolicy, GateError> {
        parse_policy(Path::new("p.json"), text.as_bytes())
    }

    fn rule(metric: &str, bound: Bound) -> Rule {
        Rule {
            metric: metric.into(),
            bound,
            origin: Origin::Policy,
        }
    }

    /// Every rule kind and bound is read, several bounds per metric, in a fixed order.
    #[test]
    fn reads_every_rule_kind() {
        let p = policy(
            r#"{"version": "x", "rules": {
                "p99": {"absolute": {"min": 1, "max": 150}, "relative": {"max_pct_increase": 20}},
                "rps": {"relative": {"max_pct_decrease": 10, "max_pct_increase": 500}},
                "errors_total": {"absolute": {"equals": 0}}
            }}"#,
        )
        .unwrap();
        assert_eq!(
            p.rules,
            [
                rule("errors_total", Bound::Equals(0.0)),
                rule("p99", Bound::MaxPctIncrease(20.0)),
                rule("p99", Bound::Max(150.0)),
                rule("p99", Bound::Min(1.0)),
                rule("rps", Bound::MaxPctIncrease(500.0)),
                rule("rps", Bound::MaxPctDecrease(10.0)),
            ]
        );
        assert!(!p.require_exit_code_zero && !p.require_all_metrics_present);
    }

    #[test]
    fn reads_both_spellings_of_the_exit_code_flag() {
        let flags = |gate: &str| policy(&format!(r#"{{"rules": {{}}, "gate": {gate}}}"#));
        let p = flags(r#"{"require_candidate_ct_exit_code_zero": true}"#).unwrap();
        assert!(p.require_exit_code_zero);
        let p = flags(r#"{"require_candidate_exit_code_zero": true}"#).unwrap();
        assert!(p.require_exit_code_zero);
        let p = flags(
            r#"{"require_candidate_exit_code_zero": false,
                "require_candidate_ct_exit_code_zero": true,
                "require_all_metrics_present": true}"#,
        )
        .unwrap();
        assert!(p.require_exit_code_zero && p.require_all_metrics_present);
        assert!(!p.p99_not_applicable);
        let p = flags(r#"{"p99_not_applicable": true}"#).unwrap();
        assert!(p.p99_not_applicable && !p.require_all_metrics_present);
    }

    /// Each unusable policy is a typed error with the file and the JSON path.
    #[test]
    fn unusable_policies_name_file_and_path() {
        let cases = [
            (
                r#"{"rules": {"a": {"relativ": {}}}}"#,
                "p.json: $.rules.a: unknown rule kind \"relativ\"",
            ),
            (
                r#"{"rules": {"a": {"relative": {"max_pct_increse": 1}}}}"#,
                "p.json: $.rules.a.relative: unknown relative bound \"max_pct_increse\"",
            ),
            (
                r#"{"rules": {"a": {"absolute": {"max_pct_increase": 1}}}}"#,
                "p.json: $.rules.a.absolute: unknown absolute bound \"max_pct_increase\"",
            ),
            (
                r#"{"rules": {"a": {"relative": {"max_pct_increase": -5}}}}"#,
                "p.json: $.rules.a.relative.max_pct_increase: percentage must be zero or more",
            ),
            (
                r#"{"rules": {"a": {"absolute": {"max": "150"}}}}"#,
                "p.json: $.rules.a.absolute.max: expected a number, found a string",
            ),
            (r#"{"rules": {"a": {}}}"#, "p.json: $.rules.a: empty rule"),
            (
                r#"{"rules": {"a": {"absolute": {}}}}"#,
                "p.json: $.rules.a.absolute: empty rule",
            ),
            (
                r#"{"rules": {"a": 5}}"#,
                "p.json: $.rules.a: expected an object, found a number",
            ),
            (
                r#"{"rules": []}"#,
                "p.json: $.rules: expected an object, found an array",
            ),
            (
                r#"{"version": 1}"#,
                "p.json: $.rules: expected an object, found nothing",
            ),
            (
                r#"{"rules": {}, "gate": {"require_all": true}}"#,
                "p.json: $.gate: unknown gate flag \"require_all\"",
            ),
            (
                r#"{"rules": {}, "gate": {"require_all_metrics_present": "yes"}}"#,
                "p.json: $.gate.require_all_metrics_present: expected a boolean",
            ),
            ("{\"rules\": {}", "p.json: not valid JSON"),
        ];
        for (text, message) in cases {
            let err = policy(text).unwrap_err();
            assert!(err.to_string().starts_with(message), "{text}: {err}");
        }
    }

    /// Negative absolute bounds are values, not percentages, and are allowed.
    #[test]
    fn negative_absolute_values_are_allowed() {
        let p = policy(r#"{"rules": {"drift": {"absolute": {"min": -5}}}}"#).unwrap();
        assert_eq!(p.rules, [rule("drift", Bound::Min(-5.0))]);
    }

    #[test]
    fn rules_are_bounded() {
        let many: Vec<String> = (0..=RULES_MAX)
            .map(|i| format!(r#""m{i}": {{"absolute": {{"max": 1}}}}"#))
            .collect();
        let err = policy(&format!(r#"{{"rules": {{{}}}}}"#, many.join(","))).unwrap_err();
        assert!(
            matches!(err, GateError::TooMany { max: RULES_MAX, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn p99_names() {
        for name in [
            "latency_p99_us",
            "latency_p99_ms",
            "p99",
            "p99_latency",
            "lat.p99",
        ] {
            assert!(is_p99(name), "{name}");
        }
        for name in ["latency_p999_us", "latency_p95_ms", "rps", "xp99", "p9"] {
            assert!(!is_p99(name), "{name}");
        }
    }
}
