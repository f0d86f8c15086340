//! One shard's request lifecycle, sans-IO: what happens to a decide request or an
//! ExecResult once a transport has decoded it, whichever transport (HTTP, NATS, the ring
//! from a peer shard) brought it.
//!
//! The transports used to make the same choice three times — "owner here? pipeline? hand
//! off?" — each with its own copy of the decide path. `ShardCore` makes it once and says
//! what the driver must do next (`Step`): the answer is written; the request goes to the
//! tenant's owner shard; or extension stages must be called first. The drivers keep only
//! what needs I/O: reading the clock, sockets, the ring, NATS calls, metrics.
//!
//! **Decisions are local-first.** Every shard holds a `ShardState` with slots for every
//! policy of the table, so the shard a request lands on decides it, with no wait on
//! another shard. What still crosses to the tenant's owner, and why:
//! - a request with an `idempotency_key`: the key's remembered answer lives on the owner,
//!   and a retry must get it wherever it lands;
//! - a request of a policy with budgets or a provider `rpm`: its spend is reserved where
//!   its result will settle it, in the owner's one ledger (`decide::budget`), and a
//!   provider's requests per minute are counted once for the node (`decide::usage`);
//! - ExecResults: the owner de-duplicates them and feeds the breakers and averages; what
//!   they changed then reaches every other shard as the owner's replicas (the state
//!   protocol's `SyncMsg`, a transition or cooldown at once, averages coalesced), so that
//!   every shard's breakers open and close on the same results and its averages follow
//!   them. Transitions are counted by the owner only (`shardline_breaker_transitions_total`).
//!
//! Rate limits: a non-owner shard spends tokens from a lease the owner grants; while its
//! lease is cold the request goes to the owner.

pub mod cache;

use serde_json::value::RawValue;

use crate::answer::encode_outcome;
use crate::contract::{
    encode_contract_error, encode_error, AssignmentId, ContractError, DecideRequest, ErrorCode,
    ErrorDetails, ExecAssignment, ExecResult, ExecStatus, Reason, ASSIGNMENT_SUBJECT_DEFAULT,
};
use crate::decide::rng::Rng;
use crate::decide::{
    decide, DecideError, Decision, LimitSignal, Now, Observed, Outcome, Peer, Placement,
    ShardState, StateConfig, SyncMsg,
};
use crate::policy::RoutingTable;

use cache::{CacheLimits, Fingerprint, Inserted, TtlCache, CACHE_ENTRIES_MAX};

const NS_PER_MS: u64 = 1_000_000;
/// The de-duplication charge of results that match no policy: not a valid tenant id.
const UNMATCHED_RESULTS: &[u8] = b"";

/// Sizes of a shard's state.
#[derive(Debug, Clone, Copy)]
pub struct ShardConfig {
    pub state: StateConfig,
    pub idempotency_entries: usize,
    /// Bytes the idempotency cache may hold (keys, answers, overhead), shared fairly by
    /// the tenants (`cache` module doc).
    pub idempotency_bytes: usize,
    pub idempotency_ttl_ms: u64,
    /// Bytes of ExecResult ids remembered for de-duplication (shared fairly by the
    /// tenants), and for how long.
    pub results_dedup_bytes: usize,
    pub results_seen_ttl_ms: u64,
}

/// The outcome of one call, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    Decided(Reason),
    Replayed,
    Failed(ErrorCode),
    ResultAccepted {
        status: ExecStatus,
        opened: usize,
        half_opened: usize,
        closed: usize,
    },
    ResultDuplicate,
    /// A shadow call's result (`ExecResult::shadow`): counted apart, applied to nothing.
    ResultShadow(ExecStatus),
}

/// A written answer: HTTP status, `Retry-After` seconds, and what to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    pub status: u16,
    pub retry_after_s: Option<u64>,
    pub counted: Counted,
}

/// A NATS message to publish: subject, headers, body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outgoing {
    pub subject: Box<str>,
    pub headers: Vec<(&'static str, Box<str>)>,
    pub body: Vec<u8>,
    /// The shadow copy (`"shadow": true`) for the decision's shadow provider, published
    /// right after this one.
    pub shadow: Option<Box<Outgoing>>,
}

/// An answer written to the caller's buffer, and the ExecAssignment to publish after it
/// (the request asked for one and assignments are on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub answered: Answered,
    pub assignment: Option<Box<Outgoing>>,
}

/// What the driver does next with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The answer is in the caller's buffer.
    Answered(Decided),
    /// Only the tenant's owner, shard `owner`, can answer (see the module doc): send the
    /// request there and relay its answer. Nothing was written.
    NeedsOwner { owner: u16 },
    /// Only the tenant's owner *node* can answer: this node's allowance of a budget
    /// could not take the decision (`decide::allowance`), which the owner node decides
    /// against the budget itself. Nothing was written.
    NeedsOwnerNode,
    /// The policy has extension stages and this shard can call them: run
    /// `decide::admit`, the stages and `select` against `state_mut()`, then `conclude`.
    /// Nothing was written.
    CallStages,
}

/// A remembered first answer to an idempotency key.
#[derive(Debug, Clone)]
struct Replay {
    status: u16,
    body: Box<[u8]>,
}

/// One shard's decide-side state and the choices made with it.
pub struct ShardCore {
    shard: u16,
    state: ShardState,
    idempotency: TtlCache<Replay>,
    results_seen: TtlCache<()>,
    /// Decided answers too large for their tenant's share of the idempotency cache, not
    /// remembered since the last `take_unstored`.
    unstored: u64,
    /// Set when assignments are on (NATS): how they are made.
    assign: Option<Assigner>,
    /// Whether this shard can call extension stages (NATS on). Without, stages are
    /// `Unavailable` and the decision is made at once.
    extensions: bool,
    ids: Rng,
}

impl std::fmt::Debug for ShardCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardCore")
            .field("shard", &self.shard)
            .field("state", &self.state)
            .field("extensions", &self.extensions)
            .finish_non_exhaustive()
    }
}

impl ShardCore {
    /// The core of one shard: `placement` says which it is, how many there are, and
    /// every tenant's owner (the partition function, given by the runtime). The state is
    /// placed at once: leases, replicas and probes follow it (`decide::sync`).
    pub fn new(
        placement: Placement,
        table: &RoutingTable,
        config: ShardConfig,
        now_ns: u64,
    ) -> Self {
        let seed = config.state.seed;
        let shard = placement.me.0 as u16;
        let mut state = ShardState::new(table, config.state, now_ns);
        state.place(table, placement);
        ShardCore {
            shard,
            state,
            idempotency: TtlCache::new(
                CacheLimits {
                    entries_max: config.idempotency_entries,
                    bytes_max: config.idempotency_bytes,
                    ttl_ns: config.idempotency_ttl_ms * NS_PER_MS,
                },
                seed ^ 1,
            ),
            // Bounded by bytes alone: an entry is a fixed small charge, so the bytes bound
            // is an entry bound too.
            results_seen: TtlCache::new(
                CacheLimits {
                    entries_max: CACHE_ENTRIES_MAX,
                    bytes_max: config.results_dedup_bytes,
                    ttl_ns: config.results_seen_ttl_ms * NS_PER_MS,
                },
                seed ^ 2,
            ),
            unstored: 0,
            assign: None,
            extensions: false,
            ids: Rng::new(seed ^ 3),
        }
    }

    /// This shard's index.
    pub fn shard(&self) -> u16 {
        self.shard
    }

    /// The owner shard of `tenant`.
    pub fn owner_of(&self, tenant: &str) -> u16 {
        self.state.placement().owner_of(tenant).0 as u16
    }

    pub fn owns(&self, tenant: &str) -> bool {
        self.owner_of(tenant) == self.shard
    }

    /// Turns assignments on (`Some`) or off.
    pub fn set_assigner(&mut self, assign: Option<Assigner>) {
        self.assign = assign;
    }

    /// Says whether this shard can call extension stages.
    pub fn set_extensions(&mut self, on: bool) {
        self.extensions = on;
    }

    /// The engine's state: buckets, breakers, averages, sessions.
    pub fn state(&self) -> &ShardState {
        &self.state
    }

    pub fn state_mut(&mut self) -> &mut ShardState {
        &mut self.state
    }

    /// Bytes the idempotency cache holds (as charged).
    pub fn idempotency_bytes(&self) -> usize {
        self.idempotency.bytes()
    }

    /// Bytes the ExecResult de-duplication set holds (as charged).
    pub fn results_dedup_bytes(&self) -> usize {
        self.results_seen.bytes()
    }

    /// Answers not remembered since the last call (too large for the tenant's share).
    pub fn take_unstored(&mut self) -> u64 {
        std::mem::take(&mut self.unstored)
    }

    /// A validated decide request, wherever it came from: answered here into `out`
    /// (a repeated idempotency key gets the first answer), sent to the owner, or sent
    /// through the extension stages. The one place that choice is made.
    pub fn decide(
        &mut self,
        table: &RoutingTable,
        req: &DecideRequest<'_>,
        now: Now,
        out: &mut Vec<u8>,
    ) -> Step {
        let owner = self.owner_of(&req.tenant_id);
        if owner != self.shard && must_cross(table, req) {
            return Step::NeedsOwner { owner };
        }
        if owner != self.shard
            && self
                .state
                .lease_cold(table, &req.tenant_id, &req.policy_id, now.mono_ns)
        {
            return Step::NeedsOwner { owner };
        }
        if let Some(answered) = self.replay(req, now, out) {
            return Step::Answered(Decided {
                answered,
                assignment: None,
            });
        }
        if self.extensions && has_stages(table, req) {
            return Step::CallStages;
        }
        let start = out.len();
        let outcome = decide(table, &mut self.state, req, now);
        if let Err(e) = &outcome {
            if e.budget_exceeded().is_some_and(|x| x.short) {
                return Step::NeedsOwnerNode;
            }
        }
        let owned = owner == self.shard;
        Step::Answered(self.settle(owned, table, req, &outcome, None, now, start, out))
    }

    /// The remembered answer to a repeated idempotency key, written to `out`.
    fn replay(&mut self, req: &DecideRequest<'_>, now: Now, out: &mut Vec<u8>) -> Option<Answered> {
        let key = self.idempotency_key(req)?;
        let replay = self.idempotency.get(key, now.mono_ns)?;
        out.extend_from_slice(&replay.body);
        Some(Answered {
            status: replay.status,
            retry_after_s: None,
            counted: Counted::Replayed,
        })
    }

    fn idempotency_key(&self, req: &DecideRequest<'_>) -> Option<Fingerprint> {
        let k = req.idempotency_key.as_ref()?;
        Some(
            self.idempotency
                .fingerprint(&[req.tenant_id.as_bytes(), k.as_bytes()]),
        )
    }

    /// Encodes an outcome (appended to `out` from `start`), remembers it under the
    /// idempotency key and makes the assignment. `payload` is the task payload as
    /// pre-processors left it, if they did. Ends a `Step::CallStages`.
    #[allow(clippy::too_many_arguments)]
    pub fn conclude(
        &mut self,
        table: &RoutingTable,
        req: &DecideRequest<'_>,
        outcome: &Result<Decision, DecideError>,
        payload: Option<&RawValue>,
        now: Now,
        start: usize,
        out: &mut Vec<u8>,
    ) -> Decided {
        let owned = self.owns(&req.tenant_id);
        self.settle(owned, table, req, outcome, payload, now, start, out)
    }

    /// `conclude`, told whether this shard owns the request's tenant.
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &mut self,
        owned: bool,
        table: &RoutingTable,
        req: &DecideRequest<'_>,
        outcome: &Result<Decision, DecideError>,
        payload: Option<&RawValue>,
        now: Now,
        start: usize,
        out: &mut Vec<u8>,
    ) -> Decided {
        encode_outcome(out, table, req, outcome);
        let answered = answered(outcome);
        if !owned {
            // A breaker transition is counted once, by the tenant's owner, whose breakers
            // the results feed first; a copy half-opening here is not another transition.
            self.state.take_half_opened();
        }
        // Only decisions are remembered: a retry after `rate_limited` deserves a new try.
        if let (Some(k), Ok(_)) = (self.idempotency_key(req), outcome) {
            let body: Box<[u8]> = out[start..].into();
            let bytes = body.len();
            let replay = Replay {
                status: answered.status,
                body,
            };
            let tenant = self.idempotency.tenant_key(req.tenant_id.as_bytes());
            let inserted = self
                .idempotency
                .insert_new(tenant, k, replay, bytes, now.mono_ns);
            if inserted == Inserted::TooLarge {
                self.unstored += 1;
            }
        }
        let mut assignment = None;
        if let (Ok(decision), Some(assign)) = (outcome, &self.assign) {
            if req.push_assignment && assign.allows(&req.tenant_id) {
                let id = AssignmentId::from_random_bytes(self.ids.next_bytes());
                // Drawn only for a shadow, so assignments without one keep their ids.
                let shadow_id = decision
                    .shadow
                    .map(|_| AssignmentId::from_random_bytes(self.ids.next_bytes()));
                let ids = (id, shadow_id);
                assignment = Some(Box::new(
                    assign.outgoing(table, req, decision, payload, ids),
                ));
            }
        }
        Decided {
            answered,
            assignment,
        }
    }

    /// An ExecResult (SPEC §6), validated and known to the table: fed to the breakers and
    /// averages once per id on the tenant's owner, or `NeedsOwner`.
    pub fn result(
        &mut self,
        table: &RoutingTable,
        result: &ExecResult,
        now: Now,
        out: &mut Vec<u8>,
    ) -> Step {
        let owner = self.owner_of(&result.tenant_id);
        if owner != self.shard {
            return Step::NeedsOwner { owner };
        }
        Step::Answered(Decided {
            answered: self.take_result(table, result, now, out),
            assignment: None,
        })
    }

    /// A state protocol message from shard `from` (`decide::sync`): answers and
    /// replicas it causes go to `sync_outbox`.
    pub fn on_sync(&mut self, table: &RoutingTable, from: u16, msg: SyncMsg, now: Now) {
        self.state
            .on_sync(table, Peer(u32::from(from)), msg, now.mono_ns);
    }

    /// Time-driven protocol work (coalesced replicas, the periodic resend), then the
    /// messages to send, oldest first. Call after each batch of work and from an idle
    /// timer; empty the outbox.
    pub fn sync_outbox(&mut self, table: &RoutingTable, now: Now) -> &mut Vec<(Peer, SyncMsg)> {
        self.state.poll_sync(table, now.mono_ns);
        self.state.expire_reservations(table, now.unix_ms);
        self.state.sync_outbox()
    }

    fn take_result(
        &mut self,
        table: &RoutingTable,
        result: &ExecResult,
        now: Now,
        out: &mut Vec<u8>,
    ) -> Answered {
        // Without an assignment id, a gateway's retry of the same request on another
        // provider is another call: its result counts (and settles that call's budget).
        let provider: &[u8] = match result.assignment_id {
            Some(_) => b"",
            None => result.provider_id.as_bytes(),
        };
        let key = self.results_seen.fingerprint(&[
            result.tenant_id.as_bytes(),
            result.dedup_key().as_bytes(),
            provider,
        ]);
        // Charged to its tenant when it names a provider of the tenant's policies; results
        // that match nothing share one charge, so made-up tenants cannot multiply the
        // shares and shrink a real tenant's.
        let tenant = if table
            .provider_refs(&result.tenant_id, &result.provider_id)
            .is_empty()
        {
            self.results_seen.tenant_key(UNMATCHED_RESULTS)
        } else {
            self.results_seen.tenant_key(result.tenant_id.as_bytes())
        };
        let inserted = self
            .results_seen
            .insert_new(tenant, key, (), 0, now.mono_ns);
        if inserted == Inserted::Present {
            out.extend_from_slice(br#"{"ok":true,"duplicate":true}"#);
            return Answered {
                status: 200,
                retry_after_s: None,
                counted: Counted::ResultDuplicate,
            };
        }
        if result.shadow {
            out.extend_from_slice(
                br#"{"ok":true,"duplicate":false,"shadow":true,"policies_updated":0}"#,
            );
            return Answered {
                status: 202,
                retry_after_s: None,
                counted: Counted::ResultShadow(result.status),
            };
        }
        let effect = self.state.record_result_with(
            table,
            &result.tenant_id,
            &result.provider_id,
            (observed(result), limit_signal(result)),
            now.mono_ns,
        );
        if table.tenant_has_budgets(&result.tenant_id) {
            let call = (
                &*result.tenant_id,
                result.request_id.as_deref(),
                &*result.provider_id,
            );
            let spent = (result.cost, result.usage.map(|u| u.total()));
            self.state.settle_budget(table, call, spent);
        }
        out.extend_from_slice(br#"{"ok":true,"duplicate":false,"policies_updated":"#);
        out.extend_from_slice(effect.policies.to_string().as_bytes());
        out.push(b'}');
        Answered {
            status: 202,
            retry_after_s: None,
            counted: Counted::ResultAccepted {
                status: result.status,
                opened: effect.opened,
                half_opened: effect.half_opened,
                closed: effect.closed,
            },
        }
    }
}

/// What a result tells the breakers and averages. A provider that refused the call for
/// its rate limit is not failing: its result counts for nothing here (it cools the
/// provider down instead, `limit_signal`).
pub fn observed(result: &ExecResult) -> Observed {
    let outcome = match result.status {
        _ if result.rate_limited() => None,
        ExecStatus::Success => Some(Outcome::Success),
        ExecStatus::Error | ExecStatus::Timeout => Some(Outcome::Failure),
        ExecStatus::Cancelled | ExecStatus::RateLimited => None,
    };
    Observed {
        outcome,
        latency_ms: result.latency_ms,
        cost: result.cost,
    }
}

/// What a result tells the provider's own limits: its tokens, and a refusal for its rate
/// limit (a cooldown).
pub fn limit_signal(result: &ExecResult) -> LimitSignal {
    LimitSignal {
        tokens: result.usage.map(|u| u.total()),
        rate_limited: result.rate_limited(),
    }
}

/// Whether only the tenant's owner may decide `req` (module doc). Sticky sessions need
/// not cross: a session's provider is computed the same on every shard
/// (`decide::rendezvous`).
fn must_cross(table: &RoutingTable, req: &DecideRequest<'_>) -> bool {
    req.idempotency_key.is_some() || table.owner_decides(&req.tenant_id, &req.policy_id)
}

/// Whether `req`'s policy has extension stages.
fn has_stages(table: &RoutingTable, req: &DecideRequest<'_>) -> bool {
    table.tenant_has_stages(&req.tenant_id)
        && table
            .lookup(&req.tenant_id, &req.policy_id)
            .is_some_and(|slot| table.policy(slot).has_stages())
}

fn answered(outcome: &Result<Decision, DecideError>) -> Answered {
    match outcome {
        Ok(d) => Answered {
            status: 200,
            retry_after_s: None,
            counted: Counted::Decided(d.reason),
        },
        Err(e) => {
            let code = e.code();
            let retry_after_s = e.retry_after_ms().map(|ms| ms.div_ceil(1_000));
            Answered {
                status: code.http_status(),
                retry_after_s,
                counted: Counted::Failed(code),
            }
        }
    }
}

/// Writes a validation failure (always `invalid_request`).
pub fn invalid(err: &ContractError, out: &mut Vec<u8>) -> Answered {
    encode_contract_error(out, err, None, None);
    let code = err.code();
    Answered {
        status: code.http_status(),
        retry_after_s: None,
        counted: Counted::Failed(code),
    }
}

/// Writes a shed (`overloaded`): the request could not be answered within bounds. The
/// request's ids, when known, go to `context` as in every other ErrorResponse.
pub fn overloaded(
    message: &str,
    request_id: Option<&str>,
    trace_id: Option<&str>,
    out: &mut Vec<u8>,
) -> Answered {
    let code = ErrorCode::Overloaded;
    let details = ErrorDetails {
        retry_after_ms: Some(1_000),
        ..ErrorDetails::default()
    };
    encode_error(out, code, message, &details, request_id, trace_id);
    Answered {
        status: code.http_status(),
        retry_after_s: Some(1),
        counted: Counted::Failed(code),
    }
}

/// Who gets assignments, and where they go (`[nats]`).
#[derive(Debug, Clone)]
pub struct Assigner {
    /// Used when the request named no subject of its own.
    pub subject: Box<str>,
    /// Empty = every tenant.
    pub allowlist: Box<[Box<str>]>,
}

impl Assigner {
    pub fn allows(&self, tenant: &str) -> bool {
        self.allowlist.is_empty() || self.allowlist.iter().any(|t| &**t == tenant)
    }

    /// The ExecAssignment of a decided request, ready to publish.
    fn outgoing(
        &self,
        table: &RoutingTable,
        req: &DecideRequest<'_>,
        decision: &Decision,
        payload: Option<&RawValue>,
        (id, shadow_id): (AssignmentId, Option<AssignmentId>),
    ) -> Outgoing {
        let mut assignment = crate::answer::with_body(table, req, decision, |body| {
            ExecAssignment::new(id, req, body)
        });
        if let Some(p) = payload {
            assignment.job.payload = Some(p.to_owned());
        }
        let shadow = decision.shadow.zip(shadow_id).map(|(idx, shadow_id)| {
            let name = &table.policy(decision.slot).provider(idx).name;
            let copy = assignment.shadow_copy(shadow_id, name);
            Box::new(self.encoded(req, &copy, None))
        });
        self.encoded(req, &assignment, shadow)
    }

    fn encoded(
        &self,
        req: &DecideRequest<'_>,
        assignment: &ExecAssignment,
        shadow: Option<Box<Outgoing>>,
    ) -> Outgoing {
        let mut body = Vec::with_capacity(1024);
        assignment.encode(&mut body);
        // The contract fills in the default subject; ours (config) replaces it.
        let subject = match req.assignment_subject.as_deref() {
            Some(s) if s != ASSIGNMENT_SUBJECT_DEFAULT => s.into(),
            _ => self.subject.clone(),
        };
        let headers = assignment
            .headers()
            .map(|(k, v)| (k, Box::<str>::from(v)))
            .collect();
        Outgoing {
            subject,
            headers,
            body,
            shadow,
        }
    }
}

#[cfg(test)]
mod tests;
