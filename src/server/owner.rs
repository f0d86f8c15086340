//! What a tenant's owner shard does with a request: decide (with the idempotency cache)
//! and take results (with de-duplication). Only the owner runs these, so the state they
//! touch is never shared; the accepting shard only parses and forwards.
//!
//! Answers are written into the caller's buffer with their HTTP status, so the local path
//! writes straight into the connection's response and only a handoff copies bytes.

use crate::answer::encode_outcome;
use crate::contract::{
    decode_decide, encode_contract_error, encode_error, ContractError, DecideRequest, ErrorCode,
    ErrorDetails, ExecResult, ExecStatus, Headers, Reason,
};
use crate::decide::{decide, DecideError, Now, Observed, Outcome, ShardState, StateConfig};
use crate::policy::RoutingTable;

use super::cache::{CacheLimits, Fingerprint, Inserted, TtlCache, CACHE_ENTRIES_MAX};
use super::handoff::Outgoing;
use crate::contract::{AssignmentId, ExecAssignment, ASSIGNMENT_SUBJECT_DEFAULT};
use crate::decide::rng::Rng;

const NS_PER_MS: u64 = 1_000_000;
/// The de-duplication charge of results that match no policy: not a valid tenant id.
const UNMATCHED_RESULTS: &[u8] = b"";

/// Sizes of a shard's owner-side state.
#[derive(Debug, Clone, Copy)]
pub struct OwnerConfig {
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

/// The outcome of one owner-side call, for metrics.
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
}

/// A written answer: HTTP status, `Retry-After` seconds, and what to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    pub status: u16,
    pub retry_after_s: Option<u64>,
    pub counted: Counted,
}

/// A remembered first answer to an idempotency key.
#[derive(Debug, Clone)]
struct Replay {
    status: u16,
    body: Box<[u8]>,
}

#[derive(Debug)]
pub struct Owner {
    pub state: ShardState,
    idempotency: TtlCache<Replay>,
    results_seen: TtlCache<()>,
    /// Decided answers too large for their tenant's share of the idempotency cache, not
    /// remembered since the last `take_unstored`.
    unstored: u64,
    /// Set when NATS is on: how assignments are made.
    pub assign: Option<Assigner>,
    ids: Rng,
}

impl Owner {
    pub fn new(table: &RoutingTable, config: OwnerConfig, now_ns: u64) -> Self {
        let seed = config.state.seed;
        Owner {
            state: ShardState::new(table, config.state, now_ns),
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
            ids: Rng::new(seed ^ 3),
        }
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

    /// Decides a validated request; a repeated idempotency key gets the first answer. An
    /// ExecAssignment to publish after the answer, if the request asked for one, goes to
    /// `assignment`.
    pub fn decide(
        &mut self,
        table: &RoutingTable,
        req: &DecideRequest<'_>,
        now: Now,
        out: &mut Vec<u8>,
        assignment: &mut Option<Outgoing>,
    ) -> Answered {
        if let Some(replayed) = self.replay(req, now, out) {
            return replayed;
        }
        let start = out.len();
        let outcome = decide(table, &mut self.state, req, now);
        self.conclude(table, req, &outcome, None, now, start, out, assignment)
    }

    /// The remembered answer to a repeated idempotency key, written to `out`.
    pub fn replay(
        &mut self,
        req: &DecideRequest<'_>,
        now: Now,
        out: &mut Vec<u8>,
    ) -> Option<Answered> {
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

    /// Encodes an outcome, remembers it under the idempotency key and prepares the
    /// assignment. `payload` is the task payload as pre-processors left it, if they did.
    #[allow(clippy::too_many_arguments)]
    pub fn conclude(
        &mut self,
        table: &RoutingTable,
        req: &DecideRequest<'_>,
        outcome: &Result<crate::decide::Decision, DecideError>,
        payload: Option<&serde_json::value::RawValue>,
        now: Now,
        start: usize,
        out: &mut Vec<u8>,
        assignment: &mut Option<Outgoing>,
    ) -> Answered {
        encode_outcome(out, table, req, outcome);
        let answered = answered(outcome);
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
        if let (Ok(decision), Some(assign)) = (outcome, &self.assign) {
            if req.push_assignment && assign.allows(&req.tenant_id) {
                let id = AssignmentId::from_random_bytes(self.ids.next_bytes());
                *assignment = Some(assign.outgoing(table, req, decision, payload, id));
            }
        }
        answered
    }

    /// Decodes and decides; for requests handed over by another shard.
    pub fn decide_bytes(
        &mut self,
        table: &RoutingTable,
        body: &[u8],
        headers: &Headers<'_>,
        now: Now,
        out: &mut Vec<u8>,
        assignment: &mut Option<Outgoing>,
    ) -> Answered {
        match decode_decide(body, headers) {
            Ok(req) => self.decide(table, &req, now, out, assignment),
            Err(err) => invalid(&err, out),
        }
    }

    /// Feeds an ExecResult (SPEC §6) to the breakers and averages, once per id.
    pub fn result(
        &mut self,
        table: &RoutingTable,
        result: &ExecResult,
        now: Now,
        out: &mut Vec<u8>,
    ) -> Answered {
        let key = self
            .results_seen
            .fingerprint(&[result.tenant_id.as_bytes(), result.dedup_key().as_bytes()]);
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
        let outcome = match result.status {
            ExecStatus::Success => Some(Outcome::Success),
            ExecStatus::Error | ExecStatus::Timeout => Some(Outcome::Failure),
            ExecStatus::Cancelled => None,
        };
        let observed = Observed {
            outcome,
            latency_ms: result.latency_ms,
            cost: result.cost,
        };
        let effect = self.state.record_result(
            table,
            &result.tenant_id,
            &result.provider_id,
            observed,
            now.mono_ns,
        );
        let body = format!(
            r#"{{"ok":true,"duplicate":false,"policies_updated":{}}}"#,
            effect.policies
        );
        out.extend_from_slice(body.as_bytes());
        let counted = Counted::ResultAccepted {
            status: result.status,
            opened: effect.opened,
            half_opened: effect.half_opened,
            closed: effect.closed,
        };
        Answered {
            status: 202,
            retry_after_s: None,
            counted,
        }
    }
}

fn answered(outcome: &Result<crate::decide::Decision, DecideError>) -> Answered {
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

/// Writes a shed (`overloaded`): the caller could not get the request to its owner. The
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
        decision: &crate::decide::Decision,
        payload: Option<&serde_json::value::RawValue>,
        id: AssignmentId,
    ) -> Outgoing {
        let mut assignment = crate::answer::with_body(table, req, decision, |body| {
            ExecAssignment::new(id, req, body)
        });
        if let Some(p) = payload {
            assignment.job.payload = Some(p.to_owned());
        }
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
        }
    }
}
