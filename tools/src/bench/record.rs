//! What one client thread records, and how the threads' records merge.
//!
//! Every measured request (intended after the warmup) ends in exactly one bucket:
//! answered 200, error (by code), shed (by code) or timeout. So
//! `sent == answered + errors + sheds + timeouts` must hold at the end of a run; `Counts`
//! checks it, and the report prints the check. Warmup requests are recorded nowhere.
//!
//! Latency goes into an HDR histogram with microsecond units, 3 significant figures and a
//! 60 s ceiling (larger values are recorded as the ceiling). Only answered-200 requests are
//! timed: errors, sheds and timeouts are counted, not averaged in, so a router that fails
//! fast cannot look faster for it. Open-loop runs also record the send lag (actual send
//! minus intended time), which is how precise the pacing was.
//!
//! Outcomes resolved with `resolve_at` also go into the `Timeline`, by the second they
//! arrived in (`timeline.rs`).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use super::timeline::Timeline;
use super::wire::{Code, Outcome};

/// The histogram's ceiling, in µs.
pub const LATENCY_US_MAX: u64 = 60_000_000;
/// Significant figures kept by the histograms.
pub const LATENCY_SIGFIGS: u8 = 3;
/// Distinct error (or shed) codes counted by name; later ones count as `other`.
pub const CODES_MAX: usize = 32;
/// The name codes beyond `CODES_MAX` are counted under.
pub const OTHER_CODE: &str = "other";

/// A histogram of µs values from 1 µs to `LATENCY_US_MAX`.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGFIGS)
        .expect("constant histogram bounds are valid")
}

/// Counts by code name, bounded to `CODES_MAX` names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeCounts {
    counts: BTreeMap<String, u64>,
    /// Scratch for `http_<status>` names, so counting allocates only on a new name.
    name: String,
}

impl CodeCounts {
    pub fn add(&mut self, code: Code<'_>, n: u64) {
        code.write_name(&mut self.name);
        self.add_name_scratch(n);
    }

    fn add_name_scratch(&mut self, n: u64) {
        if let Some(count) = self.counts.get_mut(self.name.as_str()) {
            *count += n;
            return;
        }
        let key = if self.counts.len() < CODES_MAX {
            self.name.clone()
        } else {
            OTHER_CODE.to_owned()
        };
        *self.counts.entry(key).or_insert(0) += n;
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    pub fn by_code(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }

    pub fn merge(&mut self, other: &CodeCounts) {
        for (name, &n) in &other.counts {
            self.name.clear();
            self.name.push_str(name);
            self.add_name_scratch(n);
        }
    }
}

/// The outcome counts of one run (or thread) and their invariant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub sent: u64,
    pub answered: u64,
    pub errors: u64,
    pub sheds: u64,
    pub timeouts: u64,
}

impl Counts {
    /// `sent == answered + errors + sheds + timeouts`: every request sent was resolved
    /// exactly once.
    pub fn add_up(&self) -> bool {
        self.sent == self.answered + self.errors + self.sheds + self.timeouts
    }
}

/// Everything one client thread measured.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// µs from intended send to the answer's arrival, answered-200 requests only.
    pub latency: Histogram<u64>,
    /// Open loop: µs from intended to actual send.
    pub send_lag: Histogram<u64>,
    pub sent: u64,
    pub answered: u64,
    pub timeouts: u64,
    pub errors: CodeCounts,
    pub sheds: CodeCounts,
    /// Open loop: requests that found every connection busy at their intended time.
    pub behind_no_connection: u64,
    /// Open loop: requests intended in the window but never sent.
    pub unsent: u64,
    /// Connection attempts that failed (not requests).
    pub connect_errors: u64,
    /// The outcomes second by second; empty unless made `with_timeline`.
    pub timeline: Timeline,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            latency: histogram(),
            send_lag: histogram(),
            sent: 0,
            answered: 0,
            timeouts: 0,
            errors: CodeCounts::default(),
            sheds: CodeCounts::default(),
            behind_no_connection: 0,
            unsent: 0,
            connect_errors: 0,
            timeline: Timeline::default(),
        }
    }

    /// A recorder that also keeps `timeline` (allocated now, for the whole run).
    pub fn with_timeline(timeline: Timeline) -> Recorder {
        Recorder {
            timeline,
            ..Recorder::new()
        }
    }

    /// Records how one sent request ended; `latency_us` is used for `Outcome::Ok` only.
    pub fn resolve(&mut self, outcome: Outcome<'_>, latency_us: u64) {
        match outcome {
            Outcome::Ok => {
                self.answered += 1;
                self.latency.saturating_record(latency_us);
            }
            Outcome::Shed(code) => self.sheds.add(code, 1),
            Outcome::Error(code) => self.errors.add(code, 1),
            Outcome::Timeout => self.timeouts += 1,
        }
    }

    /// `resolve`, and the outcome goes into the timeline at `at_ns` (since the run's
    /// start), the time it arrived.
    pub fn resolve_at(&mut self, outcome: Outcome<'_>, latency_us: u64, at_ns: u64) {
        self.resolve(outcome, latency_us);
        let latency = (outcome == Outcome::Ok).then_some(latency_us);
        self.timeline.record(at_ns, latency);
    }

    pub fn counts(&self) -> Counts {
        Counts {
            sent: self.sent,
            answered: self.answered,
            errors: self.errors.total(),
            sheds: self.sheds.total(),
            timeouts: self.timeouts,
        }
    }

    /// Adds another thread's record into this one.
    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides: addition cannot fail.
        self.latency.add(&other.latency).expect("same bounds");
        self.send_lag.add(&other.send_lag).expect("same bounds");
        self.sent += other.sent;
        self.answered += other.answered;
        self.timeouts += other.timeouts;
        self.errors.merge(&other.errors);
        self.sheds.merge(&other.sheds);
        self.behind_no_connection += other.behind_no_connection;
        self.unsent += other.unsent;
        self.connect_errors += other.connect_errors;
        self.timeline.merge(&other.timeline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(outcomes: &[Outcome<'_>]) -> Recorder {
        let mut r = Recorder::new();
        for (i, &o) in outcomes.iter().enumerate() {
            r.sent += 1;
            r.resolve(o, 100 + i as u64);
        }
        r
    }

    /// Each outcome lands in one bucket, so the invariant holds; one lost request breaks it.
    #[test]
    fn counts_add_up() {
        let mut r = resolved(&[
            Outcome::Ok,
            Outcome::Ok,
            Outcome::Shed(Code::Named("rate_limited")),
            Outcome::Error(Code::Named("policy_not_found")),
            Outcome::Error(Code::Status(500)),
            Outcome::Timeout,
        ]);
        let c = r.counts();
        assert_eq!(
            (c.sent, c.answered, c.errors, c.sheds, c.timeouts),
            (6, 2, 2, 1, 1)
        );
        assert!(c.add_up());
        assert_eq!(r.latency.len(), 2, "only answers are timed");
        assert_eq!(r.errors.by_code()["http_500"], 1);
        r.sent += 1;
        assert!(!r.counts().add_up());
    }

    /// Merging threads adds counts, codes and histograms.
    #[test]
    fn merges_threads() {
        let mut a = resolved(&[Outcome::Ok, Outcome::Error(Code::Named("internal"))]);
        let b = resolved(&[Outcome::Error(Code::Named("internal")), Outcome::Timeout]);
        a.merge(&b);
        assert_eq!(a.sent, 4);
        assert_eq!(a.errors.by_code()["internal"], 2);
        assert_eq!(a.timeouts, 1);
        assert!(a.counts().add_up());
    }

    /// Past `CODES_MAX` names, new codes share one `other` entry and nothing is lost.
    #[test]
    fn code_names_are_bounded() {
        let mut counts = CodeCounts::default();
        for status in 0..(CODES_MAX as u16 + 10) {
            counts.add(Code::Status(400 + status), 1);
        }
        assert_eq!(counts.by_code().len(), CODES_MAX + 1);
        assert_eq!(counts.by_code()[OTHER_CODE], 10);
        assert_eq!(counts.total(), CODES_MAX as u64 + 10);
    }

    /// Values past the ceiling are kept, as the ceiling.
    #[test]
    fn saturates_at_the_ceiling() {
        let mut r = Recorder::new();
        r.sent = 1;
        r.resolve(Outcome::Ok, LATENCY_US_MAX * 10);
        assert!(r.latency.max() >= LATENCY_US_MAX);
        assert!(r.latency.max() < LATENCY_US_MAX + LATENCY_US_MAX / 100);
    }
}
