//! The decision as phases (SPEC §5, §7): admit (lookup, rate limit, deadline) → pre →
//! validators → select → post → finish.
//!
//! Extensions are NATS calls, and the engine does no I/O: so the engine stops between
//! phases, the transport runs each stage's call, and reports its outcome with `apply`.
//! `decide` in the parent module drives the phases for a transport that can run no
//! extension: required stages then answer `extension_unavailable`, optional ones are
//! reported as `skipped`.

use super::budget::{self, Reservation, Room};
use super::condition::RuleCtx;
use super::error::DecideError;
use super::select::{expected, explain, Selection, Selector};
use super::shadow;
use super::state::ShardState;
use super::Now;
use crate::contract::{DecideRequest, ExecutedExtension, ExtensionStatus, Reason, Scalar};
use crate::policy::{OnFail, Policy, PolicySlot, ProviderIdx, RoutingTable, Stage, StageKind};

/// What running one stage came to, as the transport saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum StageOutcome {
    /// The stage answered. Pre: `metadata` merges into the request's; validators: the
    /// request is valid; post: `metadata` merges into the decision's.
    Ok {
        metadata: Vec<(Box<str>, serde_json::Value)>,
    },
    /// A validator answered "invalid" / `status: reject`.
    Rejected { message: Box<str> },
    /// The stage answered with an error.
    Failed { message: Box<str> },
    /// No answer in time (after its retries).
    Timeout,
    /// No transport or responder could take the call.
    Unavailable,
    /// The stage id is not in the extension registry.
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Extensions,
    Selected,
}

/// A decided request, ready to encode.
#[derive(Debug, Clone)]
pub struct Decision {
    pub slot: PolicySlot,
    pub provider: ProviderIdx,
    /// The provider that also gets a copy of the call (`shadow`), never `provider`.
    pub shadow: Option<ProviderIdx>,
    pub reason: Reason,
    pub expected_latency_ms: Option<f64>,
    pub expected_cost: Option<f64>,
    pub executed_extensions: Vec<ExecutedExtension>,
    /// Metadata merged by pre-processors (over the request's).
    pub request_metadata: Vec<(Box<str>, Scalar<'static>)>,
    /// Metadata merged by post-processors (into the decision's).
    pub decision_metadata: Vec<(Box<str>, serde_json::Value)>,
    pub explanation: Option<Vec<String>>,
}

/// A request past admission, between phases.
#[derive(Debug)]
pub struct Pending<'t> {
    pub slot: PolicySlot,
    pub policy: &'t Policy,
    phase: Phase,
    selection: Option<(Selection, Option<f64>, Option<f64>)>,
    shadow: Option<ProviderIdx>,
    /// What the request's budgets leave for its call; `None` when none counts it.
    room: Option<Room>,
    executed: Vec<ExecutedExtension>,
    overlay: Vec<(Box<str>, Scalar<'static>)>,
    decision_metadata: Vec<(Box<str>, serde_json::Value)>,
    explain: Option<Vec<String>>,
}

/// Steps 1–3: policy lookup, rate limit, deadline; then the budgets (`budget`).
pub fn admit<'t>(
    table: &'t RoutingTable,
    state: &mut ShardState,
    req: &DecideRequest<'_>,
    now: Now,
) -> Result<Pending<'t>, DecideError> {
    assert_eq!(
        state.policies.len(),
        table.len(),
        "shard state built for another table"
    );
    let Some(slot) = table.lookup(&req.tenant_id, &req.policy_id) else {
        return Err(DecideError::PolicyNotFound {
            tenant: req.tenant_id.as_ref().into(),
            policy: req.policy_id.as_ref().into(),
        });
    };
    let policy = table.policy(slot);
    let mut explain = req.explain.then(Vec::new);
    explain!(
        explain,
        "policy {}/{} version {}",
        policy.tenant,
        policy.id,
        policy.version
    );
    if let Err(retry_after_ms) = state.take_token(slot, now.mono_ns) {
        if let Some(bucket) = &state.policies[slot.get()].bucket {
            let limit = bucket.limit();
            return Err(DecideError::RateLimited {
                policy: policy.id.clone(),
                rps: limit.requests_per_second,
                burst: limit.burst,
                retry_after_ms,
            });
        }
    }
    if let Some(deadline_unix_ms) = req.deadline_unix_ms {
        if deadline_unix_ms <= now.unix_ms {
            let late_ms = now.unix_ms - deadline_unix_ms;
            return Err(DecideError::DeadlineExceeded {
                deadline_unix_ms,
                late_ms,
            });
        }
    }
    let mut room = None;
    if !policy.budgets.is_empty() {
        let books = &mut state.policies[slot.get()].budgets;
        room = budget::admit(policy, books, &req.metadata, now.unix_ms)
            .map_err(|e| DecideError::budget(&policy.id, e, now.unix_ms))?;
        if let Some(room) = &room {
            explain!(
                explain,
                "budgets: {} counted; left for this call: cost {}, tokens {}",
                room.applied.count_ones(),
                room.cost,
                room.tokens
            );
        }
    }
    Ok(Pending {
        slot,
        policy,
        phase: Phase::Extensions,
        selection: None,
        shadow: None,
        room,
        executed: Vec::new(),
        overlay: Vec::new(),
        decision_metadata: Vec::new(),
        explain,
    })
}

impl<'t> Pending<'t> {
    /// The policy's stages of one kind, in the order they must run.
    pub fn stages(&self, kind: StageKind) -> &'t [Stage] {
        match kind {
            StageKind::Pre => &self.policy.pre,
            StageKind::Validator => &self.policy.validators,
            StageKind::Post => &self.policy.post,
        }
    }

    /// Metadata merged by pre-processors so far.
    pub fn request_metadata(&self) -> &[(Box<str>, Scalar<'static>)] {
        &self.overlay
    }

    /// Reports one stage's outcome. Pre and validator stages must be applied before
    /// `select`, post stages after it; a failure of a required stage is the request's error.
    pub fn apply(&mut self, stage: &Stage, outcome: StageOutcome) -> Result<(), DecideError> {
        let expected = if stage.kind == StageKind::Post {
            Phase::Selected
        } else {
            Phase::Extensions
        };
        assert_eq!(
            self.phase, expected,
            "stage {} applied out of phase",
            stage.id
        );
        let status = match outcome {
            StageOutcome::Ok { metadata } => {
                self.merge(stage.kind, metadata);
                ExtensionStatus::Ok
            }
            StageOutcome::Rejected { message } => return self.rejected(stage, message),
            failed => return self.failed(stage, failed),
        };
        self.record(stage, status);
        Ok(())
    }

    fn merge(&mut self, kind: StageKind, metadata: Vec<(Box<str>, serde_json::Value)>) {
        for (k, v) in metadata {
            if kind == StageKind::Post {
                upsert(&mut self.decision_metadata, k, v);
            } else if let Some(s) = scalar_of(v) {
                upsert(&mut self.overlay, k, s);
            }
        }
    }

    fn rejected(&mut self, stage: &Stage, message: Box<str>) -> Result<(), DecideError> {
        assert_eq!(stage.kind, StageKind::Validator, "only validators reject");
        match stage.on_fail {
            OnFail::Block => Err(DecideError::ValidatorBlocked {
                id: stage.id.clone(),
                message,
            }),
            OnFail::Warn | OnFail::Ignore => {
                explain!(
                    self.explain,
                    "validator {} rejected ({message}); continuing",
                    stage.id
                );
                self.record(stage, ExtensionStatus::Failed);
                Ok(())
            }
        }
    }

    fn failed(&mut self, stage: &Stage, outcome: StageOutcome) -> Result<(), DecideError> {
        if !stage.required {
            let status = match outcome {
                StageOutcome::Timeout => ExtensionStatus::Timeout,
                StageOutcome::Unavailable | StageOutcome::NotFound => ExtensionStatus::Skipped,
                _ => ExtensionStatus::Failed,
            };
            explain!(
                self.explain,
                "optional stage {}: {}",
                stage.id,
                status.as_str()
            );
            self.record(stage, status);
            return Ok(());
        }
        let id = stage.id.clone();
        Err(match (outcome, stage.kind) {
            (StageOutcome::Timeout, _) => DecideError::ExtensionTimeout { id },
            (StageOutcome::Unavailable, _) => DecideError::ExtensionUnavailable { id },
            (StageOutcome::NotFound, _) => DecideError::ExtensionNotFound { id },
            (StageOutcome::Failed { message }, StageKind::Pre) => {
                DecideError::PreProcessorFailed { id, message }
            }
            (StageOutcome::Failed { message }, StageKind::Post) => {
                DecideError::PostProcessorFailed { id, message }
            }
            (StageOutcome::Failed { message }, StageKind::Validator) => {
                DecideError::ValidatorBlocked { id, message }
            }
            (other, _) => unreachable!("not a failure: {other:?}"),
        })
    }

    fn record(&mut self, stage: &Stage, status: ExtensionStatus) {
        let kind = match stage.kind {
            StageKind::Pre => "pre",
            StageKind::Validator => "validator",
            StageKind::Post => "post",
        };
        self.executed.push(ExecutedExtension {
            id: stage.id.clone(),
            kind,
            status,
        });
    }

    /// Steps 5–9.
    pub fn select(
        &mut self,
        state: &mut ShardState,
        req: &DecideRequest<'_>,
        now: Now,
    ) -> Result<(), DecideError> {
        assert_eq!(self.phase, Phase::Extensions, "select runs once");
        if self.room.is_some() && self.policy.has_stages() {
            // Extension calls ran since admission and other requests were decided
            // meanwhile: what is left is read again, as the decision will count it.
            let books = &mut state.policies[self.slot.get()].budgets;
            self.room = budget::admit(self.policy, books, &req.metadata, now.unix_ms)
                .map_err(|e| DecideError::budget(&self.policy.id, e, now.unix_ms))?;
        }
        let selector = Selector {
            policy: self.policy,
            slot: self.slot,
            ctx: RuleCtx {
                req,
                overlay: &self.overlay,
                no_candidates: None,
            },
            now_ns: now.mono_ns,
            owner: state.owns_slot(self.slot),
            now_unix_ms: now.unix_ms,
            explain: &mut self.explain,
            sticky_write: None,
            room: self.room.as_ref(),
        };
        let sel = match (selector.run(state), &self.room) {
            (Err(DecideError::DecisionFailed(ex)), Some(room)) if ex.by_budget > 0 => {
                let ps = state.policy(self.slot);
                let figures = (0..self.policy.providers.len()).map(|i| {
                    let idx = ProviderIdx(i as u8);
                    let cost = expected(self.policy, ps, idx).1.unwrap_or(0.0);
                    (cost, ps.providers[i].tokens.get().unwrap_or(0.0))
                });
                let books = &ps.budgets;
                let exceeded = budget::refusal(self.policy, books, room, figures, now.unix_ms);
                return Err(DecideError::budget(&self.policy.id, exceeded, now.unix_ms));
            }
            (sel, _) => sel?,
        };
        let (latency, cost) = expected(self.policy, state.policy(self.slot), sel.provider);
        if let Some(room) = self.room {
            self.reserve(state, req, &room, (sel.provider, cost), now);
        }
        explain!(
            self.explain,
            "chose {} ({})",
            self.policy.provider(sel.provider).name,
            sel.reason.as_str()
        );
        self.shadow = shadow::draw(self.policy, sel.provider, &mut state.rng, &mut self.explain);
        self.selection = Some((sel, latency, cost));
        self.phase = Phase::Selected;
        Ok(())
    }

    /// Counts the decision in its budgets and keeps its reservation for its result.
    fn reserve(
        &mut self,
        state: &mut ShardState,
        req: &DecideRequest<'_>,
        room: &Room,
        (provider, cost): (ProviderIdx, Option<f64>),
        now: Now,
    ) {
        let ps = &mut state.policies[self.slot.get()];
        let tokens = ps.providers[provider.get()].tokens.get();
        let cost = cost.unwrap_or(0.0).clamp(0.0, budget::SPEND_MAX);
        let spend = (cost, tokens.map_or(0, |t| t.ceil() as u64));
        let counted = budget::reserve(self.policy, &mut ps.budgets, room, spend, now.unix_ms);
        let name = &self.policy.provider(provider).name;
        let key = budget::reservation_key(&req.tenant_id, &req.request_id, name);
        let reservation = Reservation {
            policy: ps.rendezvous_key,
            decided_ms: now.unix_ms,
            expires_ms: now.unix_ms + budget::RESERVATION_TTL_MS,
            cost: spend.0,
            tokens: spend.1,
            count: 1,
            budgets: counted.budgets,
            starts: counted.starts,
            applied: counted.applied,
        };
        if let Some(old) = state.reservations.take_apart(key, &reservation) {
            // Settled at what it reserved, as if its result were lost: the key's next
            // result settles this decision, in this decision's windows. One of another
            // policy (the same request id and provider there) is settled against its own
            // policy once the table is at hand.
            if old.policy == reservation.policy {
                budget::settle(self.policy, &mut ps.budgets, &old, (None, None));
            } else {
                state.reservations.deferred.push(old);
            }
        }
        state.reservations.insert(key, reservation);
        state.budget_changes += 1;
        explain!(
            self.explain,
            "budgets: reserved cost {}, tokens {} until the result",
            spend.0,
            spend.1
        );
    }

    /// The provider chosen by `select`, for post-processors that want it.
    pub fn selected(&self) -> Option<ProviderIdx> {
        self.selection.map(|(s, _, _)| s.provider)
    }

    pub fn finish(self) -> Decision {
        let (sel, expected_latency_ms, expected_cost) =
            self.selection.expect("finish called before select");
        Decision {
            slot: self.slot,
            provider: sel.provider,
            shadow: self.shadow,
            reason: sel.reason,
            expected_latency_ms,
            expected_cost,
            executed_extensions: self.executed,
            request_metadata: self.overlay,
            decision_metadata: self.decision_metadata,
            explanation: self.explain,
        }
    }
}

fn upsert<V>(list: &mut Vec<(Box<str>, V)>, key: Box<str>, value: V) {
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => list.push((key, value)),
    }
}

/// Request metadata is string → scalar (SPEC §3); a pre-processor's non-scalar is dropped.
fn scalar_of(v: serde_json::Value) -> Option<Scalar<'static>> {
    match v {
        serde_json::Value::String(s) => Some(Scalar::Str(s.into())),
        serde_json::Value::Number(n) => n.as_f64().map(Scalar::Num),
        serde_json::Value::Bool(b) => Some(Scalar::Bool(b)),
        serde_json::Value::Null => Some(Scalar::Null),
        _ => None,
    }
}
