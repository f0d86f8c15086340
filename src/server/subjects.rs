//! Which subjects a request may name in `assignment_subject`.
//!
//! The router publishes ExecAssignments with its own NATS credentials, so a subject taken
//! from the request unchecked would let any caller publish, as the router, to any subject
//! those credentials reach (usage, results, another team's work queue): a confused deputy.
//! A request-named subject must therefore match one of `nats.assignment_subjects_allowed`
//! (NATS wildcard rules: `*` is one token, a final `>` is one or more tokens). The subject
//! configured in `nats.assignment_subject`, and the contract's default (which stands for
//! it), are always accepted: the router publishes there anyway.
//!
//! Checked where a request is accepted (HTTP and NATS alike), whether or not NATS is
//! connected, so a caller learns of a refused subject at once rather than when NATS
//! comes back. Matching walks both subjects token by token without allocating.

use crate::contract::{ContractError, DecideRequest, Found, Rule, ASSIGNMENT_SUBJECT_DEFAULT};

/// The setting named in a refusal.
const SETTING: &str = "the router's nats.assignment_subjects_allowed";

/// The subjects a request may name, resolved from `[nats]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentSubjects {
    configured: Box<str>,
    patterns: Box<[Box<str>]>,
}

impl AssignmentSubjects {
    /// `configured` is `nats.assignment_subject`; `patterns` were validated by the config.
    pub fn new(configured: &str, patterns: &[String]) -> AssignmentSubjects {
        AssignmentSubjects {
            configured: configured.into(),
            patterns: patterns.iter().map(|p| p.as_str().into()).collect(),
        }
    }

    pub fn allows(&self, subject: &str) -> bool {
        subject == ASSIGNMENT_SUBJECT_DEFAULT
            || subject == &*self.configured
            || self.patterns.iter().any(|p| subject_matches(p, subject))
    }

    /// `invalid_request` naming `assignment_subject` when the request names a subject
    /// that is not allowed.
    pub fn check(&self, req: &DecideRequest<'_>) -> Result<(), ContractError> {
        match req.assignment_subject.as_deref() {
            Some(subject) if !self.allows(subject) => Err(ContractError::invalid(
                "assignment_subject",
                Rule::NotAllowed(SETTING),
                Found::text(subject),
            )),
            _ => Ok(()),
        }
    }
}

/// Whether `subject` (no wildcards) matches `pattern` under NATS rules: tokens are
/// separated by `.`; `*` matches exactly one token; `>` as the last token matches one or
/// more remaining tokens; any other token matches only itself.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut pattern = pattern.split('.');
    let mut subject = subject.split('.');
    loop {
        match (pattern.next(), subject.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) => return pattern.next().is_none(),
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The NATS rules, case by case.
    #[test]
    fn wildcard_rules() {
        let yes = [
            ("caf.exec.assign.v1", "caf.exec.assign.v1"),
            ("caf.exec.assign.v1.>", "caf.exec.assign.v1.gpu"),
            ("caf.exec.assign.v1.>", "caf.exec.assign.v1.gpu.eu"),
            ("caf.*.assign.v1", "caf.exec.assign.v1"),
            ("*", "a"),
            (">", "a.b.c"),
            ("a.*.*", "a.b.c"),
        ];
        for (p, s) in yes {
            assert!(subject_matches(p, s), "{p} should match {s}");
        }
        let no = [
            // `>` needs at least one token.
            ("caf.exec.assign.v1.>", "caf.exec.assign.v1"),
            ("caf.exec.assign.v1", "caf.exec.assign.v1.gpu"),
            ("caf.exec.assign.v1", "caf.exec.assign.v2"),
            ("caf.exec.assign.v1", "caf.exec.assign"),
            // `*` is exactly one token.
            ("caf.*", "caf.exec.assign"),
            ("caf.*", "caf"),
            ("caf.exec.assign.v1.>", "beamline.usage.v1.metered"),
            ("caf.exec.assign.v1.>", "caf.exec.result.v1"),
            // Tokens compare whole, not as prefixes.
            ("caf.exec", "caf.exe"),
            ("caf.exec", "caf.execute"),
        ];
        for (p, s) in no {
            assert!(!subject_matches(p, s), "{p} should not match {s}");
        }
    }

    /// The default list lets the configured and default subjects through and nothing
    /// outside `caf.exec.assign.v1[.…]`.
    #[test]
    fn defaults() {
        let allowed = [
            "caf.exec.assign.v1".to_owned(),
            "caf.exec.assign.v1.>".to_owned(),
        ];
        let subjects = AssignmentSubjects::new("team.assign", &allowed);
        assert!(subjects.allows("caf.exec.assign.v1"));
        assert!(subjects.allows("caf.exec.assign.v1.gpu"));
        assert!(subjects.allows("team.assign"));
        assert!(!subjects.allows("beamline.usage.v1.metered"));
        assert!(!subjects.allows("caf.exec.result.v1"));
        let none = AssignmentSubjects::new("caf.exec.assign.v1", &[]);
        assert!(none.allows("caf.exec.assign.v1"));
        assert!(!none.allows("caf.exec.assign.v1.gpu"));
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof!["[a-c]{1,2}", Just("x".to_owned())]
    }

    fn subject() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(token(), 1..6)
    }

    /// A reference reading of the rules over token lists, by recursion.
    fn reference(pattern: &[&str], subject: &[&str]) -> bool {
        match (pattern.split_first(), subject.split_first()) {
            (None, None) => true,
            (Some((&">", [])), Some(_)) => true,
            (Some((&"*", p)), Some((_, s))) => reference(p, s),
            (Some((p0, p)), Some((s0, s))) => p0 == s0 && reference(p, s),
            _ => false,
        }
    }

    proptest! {
        /// The matcher agrees with the reference on random patterns (tokens replaced by
        /// `*`, a tail by `>`) and subjects.
        #[test]
        fn agrees_with_reference(
            s in subject(),
            p in subject(),
            stars in prop::collection::vec(any::<bool>(), 6),
            tail in any::<bool>(),
            derive in any::<bool>(),
        ) {
            // Half the patterns are derived from the subject, so that matches are common.
            let mut p: Vec<String> = if derive { s.clone() } else { p };
            for (t, star) in p.iter_mut().zip(&stars) {
                if *star {
                    *t = "*".to_owned();
                }
            }
            if tail {
                let keep = p.len().saturating_sub(1).max(1);
                p.truncate(keep);
                p.push(">".to_owned());
            }
            let (pj, sj) = (p.join("."), s.join("."));
            let pt: Vec<&str> = p.iter().map(String::as_str).collect();
            let st: Vec<&str> = s.iter().map(String::as_str).collect();
            prop_assert_eq!(subject_matches(&pj, &sj), reference(&pt, &st), "{} vs {}", pj, sj);
            // A pattern without wildcards matches only itself.
            prop_assert_eq!(subject_matches(&sj, &sj), true);
        }
    }
}
