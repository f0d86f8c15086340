//! Decisions whose policy has extension stages (SPEC §7), on the shard the request landed
//! on (`Step::CallStages`): the engine's phases with the stages' NATS requests in between.
//!
//! The engine stops between phases (`decide::pipeline`); this drives it. A stage is
//! resolved in the registry, checked against its breaker, sent through the shard's own
//! NATS client with its timeout, retried only on timeouts (`RetryPlan`), and its reply
//! decoded into the outcome the engine applies. No borrow of the shard's state is held
//! across a call, so the shard keeps deciding other requests meanwhile.
//!
//! A routing table published while the stages run would leave the admitted slot pointing
//! into the old table's state: the decision is then refused as `overloaded` (retry), which
//! is rare (a reload during a call) and never wrong.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use shards::ShardId;

use super::handoff::{Job, Reply};
use super::shard::{borrowed, reply, Ids, ShardCtx};
use super::stats::Count;
use crate::contract::{decode_decide, DecideRequest};
use crate::decide::{admit, DecideError, Decision, Now, StageOutcome};
use crate::extensions::{decode_reply, encode_call, Call, CallOutcome, RetryPlan};
use crate::policy::{RoutingTable, Stage, StageKind};
use crate::shard::{self as core, Decided, Step};
use crate::transport::nats::RequestError;

/// Requests a shard answers asynchronously at once (NATS handoffs, extension pipelines);
/// beyond it new ones are shed with `overloaded`.
pub const ASYNC_TASKS_PER_SHARD_MAX: usize = 4_096;

/// The routing table changed while the stages ran.
struct Reloaded;

impl ShardCtx {
    /// Counts one more asynchronous task, unless `ASYNC_TASKS_PER_SHARD_MAX` are running
    /// (then the caller sheds). The task decrements `tasks` when it ends.
    pub fn begin_task(&self) -> bool {
        let n = self.tasks.get();
        if n >= ASYNC_TASKS_PER_SHARD_MAX {
            return false;
        }
        self.tasks.set(n + 1);
        true
    }

    /// A decide job with stages (handed over by a peer, or a NATS message that waits),
    /// decoded again from its owned bytes.
    pub async fn decide_job_stages(self: &Rc<Self>, job: &Job) -> Reply {
        let headers = borrowed(&job.headers);
        let mut body = Vec::with_capacity(512);
        let decided = match decode_decide(&job.body, &headers) {
            Ok(req) => {
                let now = self.shared.now();
                match self.decide_step(&req, now, &mut body) {
                    Step::Answered(decided) => decided,
                    Step::CallStages => self.decide_stages(&req, &mut body).await,
                    // A table adopted since the job was taken made the policy one its
                    // owner decides (budgets, a provider `rpm`): it goes there now.
                    Step::NeedsOwner { owner } => {
                        return self
                            .hand_off(ShardId(owner), job.clone(), Ids::default())
                            .await
                    }
                    Step::NeedsOwnerNode => return self.relay_to_owner_node(job).await,
                }
            }
            Err(err) => Decided {
                answered: core::invalid(&err, &mut body),
                assignment: None,
            },
        };
        reply(decided, body)
    }

    /// Ends a `Step::NeedsOwnerNode` of a decide job (handed over by a peer, or a NATS
    /// message that waits): the tenant's owner node's answer (`cluster::forward::relay`).
    pub async fn relay_to_owner_node(self: &Rc<Self>, job: &Job) -> Reply {
        let headers = borrowed(&job.headers);
        let mut body = Vec::new();
        let who = match decode_decide(&job.body, &headers) {
            Ok(req) => crate::cluster::forward::Forwarded::of(&req),
            Err(err) => return reply(self.invalid(&err, &mut body), body),
        };
        let pairs = crate::cluster::forward::header_pairs(&headers);
        let relayed = crate::cluster::forward::relay(self, &job.body, &pairs, &who, false);
        let (status, body) = relayed.await;
        Reply {
            status,
            retry_after_s: crate::cluster::forward::retry_after_s(&body),
            body,
            assignment: None,
        }
    }

    /// Ends a `Step::CallStages`: runs `req`'s extension stages and writes the answer to
    /// `out`.
    pub async fn decide_stages(
        self: &Rc<Self>,
        req: &DecideRequest<'_>,
        out: &mut Vec<u8>,
    ) -> Decided {
        let started = std::time::Instant::now();
        let now = self.shared.now();
        let metrics = self.shared.metrics(self.id);
        let (generation, table) = {
            let table = self.table.borrow();
            (table.generation(), Arc::clone(table.table()))
        };
        let mut payload = None;
        let decided = match self.run(&table, generation, req, now, &mut payload).await {
            Ok(outcome) => {
                let start = out.len();
                let now = self.shared.now();
                let payload = payload.as_deref();
                self.core
                    .borrow_mut()
                    .conclude(&table, req, &outcome, payload, now, start, out)
            }
            Err(Reloaded) => Decided {
                answered: core::overloaded(
                    "the routing table changed while extensions ran; retry",
                    Some(&req.request_id),
                    req.trace_id.as_deref(),
                    out,
                ),
                assignment: None,
            },
        };
        metrics.answered(&decided.answered, started.elapsed());
        self.note_state();
        self.flush_sync(self.shared.now());
        decided
    }

    async fn run(
        &self,
        table: &RoutingTable,
        generation: u64,
        req: &DecideRequest<'_>,
        now: Now,
        payload: &mut Option<Box<RawValue>>,
    ) -> Result<Result<Decision, DecideError>, Reloaded> {
        let admitted = admit(table, self.core.borrow_mut().state_mut(), req, now);
        let mut pending = match admitted {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        for kind in [StageKind::Pre, StageKind::Validator] {
            for stage in pending.stages(kind) {
                let merged = pending.request_metadata();
                let outcome = self.call_stage(stage, req, merged, payload).await;
                if let Err(e) = pending.apply(stage, outcome) {
                    return Ok(Err(e));
                }
            }
        }
        let now = self.shared.now();
        self.refresh(now);
        if self.table.borrow().generation() != generation {
            return Err(Reloaded);
        }
        if let Err(e) = pending.select(self.core.borrow_mut().state_mut(), req, now) {
            return Ok(Err(e));
        }
        // Post-processors see the request as the pre-processors left it, like later
        // pre-processors and validators do: the payload and the merged metadata.
        for stage in pending.stages(StageKind::Post) {
            let merged = pending.request_metadata();
            let outcome = self.call_stage(stage, req, merged, payload).await;
            if let Err(e) = pending.apply(stage, outcome) {
                return Ok(Err(e));
            }
        }
        Ok(Ok(pending.finish()))
    }

    /// One stage: resolve, check its breaker, call (retrying timeouts), decode.
    async fn call_stage(
        &self,
        stage: &Stage,
        req: &DecideRequest<'_>,
        merged: &[(Box<str>, crate::contract::Scalar<'static>)],
        payload: &mut Option<Box<RawValue>>,
    ) -> StageOutcome {
        let registry = Arc::clone(&self.shared.registry);
        let index = registry.index_of(&stage.id);
        let resolved = match registry.resolve(stage) {
            Ok(resolved) => resolved,
            Err(unresolved) => {
                let outcome = unresolved.outcome();
                self.count_call(&stage.id, index, CallOutcome::of(&outcome));
                return outcome;
            }
        };
        let now_ns = self.shared.now().mono_ns;
        if !self.breakers.borrow_mut().allows(&stage.id, now_ns) {
            self.count_metric(index, CallOutcome::CircuitOpen);
            return StageOutcome::Unavailable;
        }
        let Some(client) = self.nats.get().cloned() else {
            return StageOutcome::Unavailable;
        };
        let mut body = Vec::with_capacity(256);
        let call = Call {
            trace_id: req.trace_id.as_deref(),
            tenant_id: &req.tenant_id,
            payload: payload.as_deref().or(req.task.payload),
            metadata: &req.metadata,
            merged,
            config: &resolved.config,
        };
        encode_call(&mut body, &call);
        let mut headers = vec![("tenant_id", &*req.tenant_id)];
        if let Some(trace) = req.trace_id.as_deref() {
            headers.push(("trace_id", trace));
        }
        let mut plan = RetryPlan::new(&resolved);
        let outcome = loop {
            let timeout = Duration::from_millis(u64::from(plan.timeout_ms()));
            match client
                .request(resolved.subject(), &headers, &body, timeout)
                .await
            {
                Ok(reply) => {
                    let decoded = decode_reply(stage.kind, &reply.payload);
                    if let Some(p) = decoded.payload {
                        *payload = Some(p);
                    }
                    break decoded.outcome;
                }
                Err(RequestError::Timeout(_)) if plan.next_attempt().is_some() => {}
                Err(RequestError::Timeout(_)) => break StageOutcome::Timeout,
                Err(_) => break StageOutcome::Unavailable,
            }
        };
        let now_ns = self.shared.now().mono_ns;
        {
            let mut breakers = self.breakers.borrow_mut();
            breakers.count_retries(&stage.id, plan.retries_used());
            breakers.observe(&stage.id, &outcome, now_ns);
        }
        self.count_metric(index, CallOutcome::of(&outcome));
        outcome
    }

    /// Counts a call that never reached the breaker table's `observe`.
    fn count_call(&self, id: &str, index: Option<usize>, outcome: CallOutcome) {
        self.breakers.borrow_mut().count(id, outcome);
        self.count_metric(index, outcome);
    }

    fn count_metric(&self, index: Option<usize>, outcome: CallOutcome) {
        self.shared.extension_calls[self.id.index()].count(index, outcome);
    }
}
