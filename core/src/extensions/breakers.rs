//! A circuit breaker and call counters per extension (SPEC §7: "each extension has its own
//! circuit breaker"), one set per shard, like the providers' breakers.
//!
//! The state machine is the providers' (`decide::breaker`), with `EXTENSION_BREAKER` as its
//! configuration: extensions have no per-policy thresholds, and a stage that keeps failing
//! should stop costing every request its full timeout quickly, so the cool-down is shorter
//! than a provider's and one probe at a time is enough.
//!
//! What feeds the breaker: a call that got an answer (`Ok`, `Rejected`: the extension
//! works, it just said no) is a success; `Failed`, `Timeout` and `Unavailable` (no
//! responder) are failures; `NotFound` and a refused call (`circuit_open`) made no call
//! and change nothing.
//!
//! Capacity is fixed at construction: one slot per registry entry, indexed like the
//! registry (id order). A new registry (reload) means new breakers: ids may have gone.

use crate::decide::breaker::{Availability, Breaker, BreakerState, Outcome, Transition};
use crate::decide::StageOutcome;
use crate::policy::BreakerConfig;

use super::registry::Registry;

/// The breaker configuration of every extension: open after 5 consecutive failures or a
/// 50% error rate over a minute (once 20 calls are in it); half-open after a 10 s
/// cool-down, letting one probe call through; its success closes the breaker, its failure
/// opens it for another cool-down.
pub const EXTENSION_BREAKER: BreakerConfig = BreakerConfig {
    failure_threshold: 5,
    success_threshold: 1,
    timeout_ms: 10_000,
    half_open_max_calls: 1,
    error_rate_threshold: 0.5,
    error_rate_window_ms: 60_000,
    error_rate_min_calls: 20,
};

// A half-open round must be able to close the breaker by itself.
const _: () = assert!(EXTENSION_BREAKER.success_threshold <= EXTENSION_BREAKER.half_open_max_calls);

/// How one stage call ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Ok,
    Rejected,
    Failed,
    Timeout,
    /// No responder, or the entry is disabled.
    Unavailable,
    NotFound,
    /// Refused by the extension's open breaker: no call was made.
    CircuitOpen,
}

impl CallOutcome {
    pub fn of(outcome: &StageOutcome) -> Self {
        match outcome {
            StageOutcome::Ok { .. } => CallOutcome::Ok,
            StageOutcome::Rejected { .. } => CallOutcome::Rejected,
            StageOutcome::Failed { .. } => CallOutcome::Failed,
            StageOutcome::Timeout => CallOutcome::Timeout,
            StageOutcome::Unavailable => CallOutcome::Unavailable,
            StageOutcome::NotFound => CallOutcome::NotFound,
        }
    }

    /// What the breaker learns from it: `Some(true)` a success, `Some(false)` a failure,
    /// `None` nothing (no call was made).
    pub fn breaker_ok(self) -> Option<bool> {
        match self {
            CallOutcome::Ok | CallOutcome::Rejected => Some(true),
            CallOutcome::Failed | CallOutcome::Timeout | CallOutcome::Unavailable => Some(false),
            CallOutcome::NotFound | CallOutcome::CircuitOpen => None,
        }
    }
}

/// Calls of one extension by outcome, and the retries made after timeouts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExtensionCounters {
    pub ok: u64,
    pub rejected: u64,
    pub failed: u64,
    pub timeout: u64,
    pub unavailable: u64,
    pub not_found: u64,
    pub circuit_open: u64,
    pub retries: u64,
}

impl ExtensionCounters {
    fn add(&mut self, outcome: CallOutcome) {
        let n = match outcome {
            CallOutcome::Ok => &mut self.ok,
            CallOutcome::Rejected => &mut self.rejected,
            CallOutcome::Failed => &mut self.failed,
            CallOutcome::Timeout => &mut self.timeout,
            CallOutcome::Unavailable => &mut self.unavailable,
            CallOutcome::NotFound => &mut self.not_found,
            CallOutcome::CircuitOpen => &mut self.circuit_open,
        };
        *n = n.saturating_add(1);
    }
}

#[derive(Debug, Clone, Default)]
struct Slot {
    breaker: Breaker,
    counters: ExtensionCounters,
}

/// The breakers and counters of one registry's extensions.
#[derive(Debug, Clone)]
pub struct ExtensionBreakers {
    config: BreakerConfig,
    ids: Box<[Box<str>]>,
    slots: Box<[Slot]>,
    /// Stages naming an id the registry does not have (always `not_found`).
    unregistered: ExtensionCounters,
}

impl ExtensionBreakers {
    /// One closed breaker per entry of `registry`, with `EXTENSION_BREAKER`.
    pub fn new(registry: &Registry) -> Self {
        Self::with_config(registry, EXTENSION_BREAKER)
    }

    pub fn with_config(registry: &Registry, config: BreakerConfig) -> Self {
        ExtensionBreakers {
            config,
            ids: registry.iter().map(|e| e.id.clone()).collect(),
            slots: vec![Slot::default(); registry.len()].into(),
            unregistered: ExtensionCounters::default(),
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn slot(&mut self, id: &str) -> Option<&mut Slot> {
        let i = self.ids.binary_search_by(|k| (**k).cmp(id)).ok()?;
        Some(&mut self.slots[i])
    }

    fn slot_ref(&self, id: &str) -> Option<&Slot> {
        let i = self.ids.binary_search_by(|k| (**k).cmp(id)).ok()?;
        Some(&self.slots[i])
    }

    /// Whether a call to `id` may go out now. A half-open breaker spends its probe; an
    /// open one refuses, counting `circuit_open` (the stage's outcome is then
    /// `Unavailable`, applied without a call and without `observe`). An id not in the
    /// registry is allowed: resolution reports it first.
    pub fn allows(&mut self, id: &str, now_ns: u64) -> bool {
        let config = self.config.clone();
        let Some(slot) = self.slot(id) else {
            return true;
        };
        match slot.breaker.availability(&config, now_ns) {
            Availability::Closed => true,
            Availability::Probe => {
                slot.breaker.on_selected(&config, now_ns);
                true
            }
            Availability::Open => {
                slot.counters.add(CallOutcome::CircuitOpen);
                false
            }
        }
    }

    /// Feeds one call's result to `id`'s breaker; returns the transition it caused.
    pub fn record(&mut self, id: &str, ok: bool, now_ns: u64) -> Option<Transition> {
        let config = self.config.clone();
        let slot = self.slot(id)?;
        let outcome = if ok {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        slot.breaker.record(&config, outcome, now_ns)
    }

    /// Counts one outcome for `id` (in `unregistered` when the registry lacks it).
    pub fn count(&mut self, id: &str, outcome: CallOutcome) {
        match self.slot(id) {
            Some(slot) => slot.counters.add(outcome),
            None => self.unregistered.add(outcome),
        }
    }

    /// Counts retries made after timeouts (`RetryPlan::retries_used`).
    pub fn count_retries(&mut self, id: &str, retries: u32) {
        let counters = match self.slot(id) {
            Some(slot) => &mut slot.counters,
            None => &mut self.unregistered,
        };
        counters.retries = counters.retries.saturating_add(u64::from(retries));
    }

    /// `count` and, when a call was made, `record`: the one call a transport makes after
    /// a stage's final outcome.
    pub fn observe(&mut self, id: &str, outcome: &StageOutcome, now_ns: u64) -> Option<Transition> {
        let counted = CallOutcome::of(outcome);
        self.count(id, counted);
        self.record(id, counted.breaker_ok()?, now_ns)
    }

    /// The breaker's state as the next call would see it (`closed`, `open`, `half_open`):
    /// an open breaker whose cool-down has passed reads half-open.
    pub fn state(&self, id: &str, now_ns: u64) -> Option<&'static str> {
        let state = self.slot_ref(id)?.breaker.state();
        Some(match state {
            BreakerState::Open { until_ns } if now_ns >= until_ns => "half_open",
            other => other.name(),
        })
    }

    pub fn counters(&self, id: &str) -> Option<&ExtensionCounters> {
        self.slot_ref(id).map(|s| &s.counters)
    }

    pub fn unregistered(&self) -> &ExtensionCounters {
        &self.unregistered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn registry() -> Registry {
        let doc = |id: &str| {
            format!(r#"{{"id":"{id}","type":"pre","subject":"ext.{id}","timeout_ms":100}}"#)
        };
        let (a, b) = (doc("alpha"), doc("beta"));
        Registry::from_documents([("a.json", a.as_bytes()), ("b.json", b.as_bytes())]).unwrap()
    }

    /// closed → open after 5 failures → (10 s later) half-open with one probe → closed
    /// after its success; time is injected.
    #[test]
    fn open_half_open_close() {
        let mut b = ExtensionBreakers::new(&registry());
        for i in 0..4 {
            assert!(b.allows("alpha", i * MS));
            assert_eq!(b.observe("alpha", &StageOutcome::Timeout, i * MS), None);
        }
        let opened = b.observe(
            "alpha",
            &StageOutcome::Failed {
                message: "x".into(),
            },
            5 * MS,
        );
        assert_eq!(opened, Some(Transition::Opened));
        assert_eq!(b.state("alpha", 6 * MS), Some("open"));
        assert!(!b.allows("alpha", 6 * MS));
        assert_eq!(b.counters("alpha").unwrap().circuit_open, 1);
        // The other extension is unaffected.
        assert!(b.allows("beta", 6 * MS));

        let t = 5 * MS + 10_000 * MS;
        assert_eq!(b.state("alpha", t), Some("half_open"));
        assert!(b.allows("alpha", t), "the probe goes out");
        assert!(!b.allows("alpha", t), "one probe at a time");
        let ok = StageOutcome::Ok { metadata: vec![] };
        assert_eq!(b.observe("alpha", &ok, t + MS), Some(Transition::Closed));
        assert_eq!(b.state("alpha", t + MS), Some("closed"));
        assert!(b.allows("alpha", t + 2 * MS));
        assert!(b.allows("alpha", t + 2 * MS));
        let c = b.counters("alpha").unwrap();
        assert_eq!((c.ok, c.failed, c.timeout, c.circuit_open), (1, 1, 4, 2));
    }

    /// A failed probe re-opens the breaker for another cool-down.
    #[test]
    fn failed_probe_reopens() {
        let mut b = ExtensionBreakers::new(&registry());
        for _ in 0..5 {
            b.record("beta", false, 0);
        }
        let t = 10_000 * MS;
        assert!(b.allows("beta", t));
        assert_eq!(b.record("beta", false, t), Some(Transition::Opened));
        assert!(!b.allows("beta", t + 9_999 * MS));
        assert!(b.allows("beta", t + 10_000 * MS));
    }

    /// Rejections are successes: a strict validator does not trip its own breaker.
    #[test]
    fn rejections_keep_the_breaker_closed() {
        let mut b = ExtensionBreakers::new(&registry());
        let rejected = StageOutcome::Rejected {
            message: "no".into(),
        };
        for i in 0..50 {
            b.observe("alpha", &rejected, i * MS);
        }
        assert_eq!(b.state("alpha", 50 * MS), Some("closed"));
        assert_eq!(b.counters("alpha").unwrap().rejected, 50);
    }

    /// Ids the registry lacks are counted apart and never refused.
    #[test]
    fn unregistered_ids() {
        let mut b = ExtensionBreakers::new(&registry());
        assert!(b.allows("gamma", 0));
        assert_eq!(b.observe("gamma", &StageOutcome::NotFound, 0), None);
        b.count_retries("gamma", 2);
        b.count_retries("alpha", 3);
        assert_eq!(b.unregistered().not_found, 1);
        assert_eq!(b.unregistered().retries, 2);
        assert_eq!(b.counters("alpha").unwrap().retries, 3);
        assert_eq!(b.state("gamma", 0), None);
    }
}
