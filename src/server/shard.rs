//! One shard: its state (`ShardCore`), its end of the ring mesh, and its main loop.
//!
//! Every transport runs a request through the same two calls: `decide_step` asks the
//! shard's core what to do (answer made here, extension stages, or the tenant's owner)
//! and, for the steps that wait, `decide_stages` or `hand_off` finish it. The ring is one
//! more transport: a request handed over by a peer runs through `decide_step` too.
//!
//! Tasks of a shard (one per connection, the mesh loop) share the shard's context through
//! `Rc` + `RefCell`: they run on one thread and never hold a borrow across an `.await`,
//! so no borrow can conflict. Nothing here is shared with another shard except through
//! the rings, the published routing table and the metrics counters.

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use futures_lite::future;
use shards::{Batch, Inbound, Outbox, ShardEnd, ShardId, TrySendError};

use super::handoff::{self, Job, Msg, OwnedHeaders, Pending, PendingTable, Reply, Route};
use super::stats::Count;
use super::Shared;
use crate::admin::{AdminRequest, ShardTable, ShardView};
use crate::contract::{decode_decide, DecideRequest, ExecResult, Headers};
use crate::decide::{Now, Peer, Placement, SessionNote};
use crate::extensions::ExtensionBreakers;
use crate::metrics::ShedCause;
use crate::shard::{self as core, Answered, Decided, ShardCore, Step};
use crate::transport::nats::Client;

/// Capacity of a shard's reused answer buffer; one grown past it (a long explanation) is
/// not kept.
const ANSWER_BUF_BYTES: usize = 4 << 10;

/// A shard's state, shared by its tasks.
pub struct ShardCtx {
    pub id: ShardId,
    pub shared: Arc<Shared>,
    pub table: RefCell<ShardTable>,
    /// The shard's decide-side state and the lifecycle's choices.
    pub core: RefCell<ShardCore>,
    pub outbox: RefCell<Outbox<Msg>>,
    pub pending: Pending,
    /// The shard's NATS client, once started (NATS on).
    pub nats: OnceCell<Client>,
    /// The shard's view of every extension's health.
    pub breakers: RefCell<ExtensionBreakers>,
    /// The answer buffer of NATS decisions made at once, reused message after message.
    pub answer_buf: RefCell<Vec<u8>>,
    /// Requests this shard answers asynchronously (handoffs and pipelines of NATS
    /// messages, jobs with extension stages), bounded by `ASYNC_TASKS_PER_SHARD_MAX`.
    pub tasks: Cell<usize>,
    /// The budgets' change count last handed to the state file, and when.
    budgets_saved: Cell<(u64, Option<std::time::Instant>)>,
}

impl ShardCtx {
    pub fn new(id: ShardId, shared: Arc<Shared>, outbox: Outbox<Msg>) -> Rc<Self> {
        let table = ShardTable::new(shared.handle.clone());
        let now = shared.now();
        let mut config = shared.settings.shard;
        config.state.seed ^= u64::from(id.0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let partition = shared.partition;
        let shards = partition.shard_count() as u32;
        let placement = Placement::new(Peer(u32::from(id.0)), shards, move |tenant: &str| {
            Peer(u32::from(partition.shard_of(tenant).0))
        });
        let core = ShardCore::new(placement, table.table(), config, now.mono_ns);
        shared.metrics(id).table_generation.set(table.generation());
        let pending = PendingTable::new(shared.partition.shard_count(), shared.settings.ring_slots);
        let breakers = RefCell::new(ExtensionBreakers::new(&shared.registry));
        Rc::new(ShardCtx {
            id,
            nats: OnceCell::new(),
            breakers,
            tasks: Cell::new(0),
            budgets_saved: Cell::new((0, None)),
            answer_buf: RefCell::new(Vec::with_capacity(ANSWER_BUF_BYTES)),
            table: RefCell::new(table),
            core: RefCell::new(core),
            outbox: RefCell::new(outbox),
            pending,
            shared,
        })
    }

    /// Takes this shard's tenants' budgets from the state file read at start.
    pub fn restore_budgets(&self) {
        let table = self.table.borrow();
        let mut core = self.core.borrow_mut();
        let saved = self.shared.budgets.restored();
        let (ledgers, reservations) = core.state_mut().restore_budgets(table.table(), saved);
        if ledgers + reservations > 0 {
            log::info!(
                "shard {}: {ledgers} budget ledger(s), {reservations} reservation(s) restored",
                self.id
            );
        }
        let changes = core.state().budget_changes();
        if self.shared.budgets.restored_any() {
            // At once, even empty: the writer joins every shard's latest snapshot and
            // waits for all of them, so a shard not started yet never loses its tenants.
            let saved = core
                .state()
                .save_budgets(table.table(), self.shared.now().unix_ms);
            self.shared.budgets.put(self.id.index(), saved);
        }
        self.budgets_saved.set((changes, None));
    }

    /// Hands the state file a snapshot of this shard's budgets when they changed and
    /// `budget_file::SAVE_EVERY` passed since the last one (`last`: whatever the time).
    pub fn save_budgets(&self, now: Now, last: bool) {
        let (saved_at, when) = self.budgets_saved.get();
        let core = self.core.borrow();
        let changes = core.state().budget_changes();
        let (open, expired, unmatched, _) = core.state().reservation_counts();
        let metrics = self.shared.metrics(self.id);
        metrics.budget_reservations.set(open as u64);
        metrics.budget_expired.set(expired);
        metrics.budget_unmatched.set(unmatched);
        let due = when.is_none_or(|t| t.elapsed() >= super::budget_file::SAVE_EVERY);
        if changes == saved_at || !(due || last) {
            return;
        }
        let table = self.table.borrow();
        let saved = core.state().save_budgets(table.table(), now.unix_ms);
        self.shared.budgets.put(self.id.index(), saved);
        self.budgets_saved
            .set((changes, Some(std::time::Instant::now())));
    }

    /// Adopts a newly published routing table, if any (one atomic load when none).
    pub fn refresh(&self, now: Now) {
        let mut table = self.table.borrow_mut();
        if table.generation() != self.shared.handle.generation() {
            table.refresh(self.core.borrow_mut().state_mut(), now.mono_ns);
            self.shared
                .metrics(self.id)
                .table_generation
                .set(table.generation());
        }
    }

    /// Publishes the state gauges, and the circuits it half-opened, after a decision.
    pub fn note_state(&self) {
        let (sticky, half_opened, idempotency_bytes, unstored) = {
            let mut core = self.core.borrow_mut();
            let unstored = core.take_unstored();
            let idempotency_bytes = core.idempotency_bytes() as u64;
            let state = core.state_mut();
            let sticky = state.sticky_len() as u64;
            (
                sticky,
                state.take_half_opened(),
                idempotency_bytes,
                unstored,
            )
        };
        let metrics = self.shared.metrics(self.id);
        metrics.sticky_entries.set(sticky);
        metrics.idempotency_bytes.set(idempotency_bytes);
        metrics.idempotency_unstored.add(unstored);
        metrics
            .breaker_transition(crate::metrics::BreakerTransition::HalfOpened)
            .add(half_opened);
    }

    /// The reused answer buffer, empty; give it back with `return_answer_buf`.
    pub fn take_answer_buf(&self) -> Vec<u8> {
        std::mem::take(&mut *self.answer_buf.borrow_mut())
    }

    pub fn return_answer_buf(&self, mut buf: Vec<u8>) {
        if buf.capacity() <= ANSWER_BUF_BYTES {
            buf.clear();
            *self.answer_buf.borrow_mut() = buf;
        }
    }

    pub fn owns(&self, tenant: &str) -> bool {
        self.core.borrow().owns(tenant)
    }

    /// The first step of every decide request, whichever transport brought it: the
    /// core's choice, made against this shard's table and state. An answer made here is
    /// in `out` and counted; `CallStages` continues with `decide_stages`, `NeedsOwner`
    /// with `hand_off`.
    pub fn decide_step(&self, req: &DecideRequest<'_>, now: Now, out: &mut Vec<u8>) -> Step {
        let started = std::time::Instant::now();
        let step = {
            let table = self.table.borrow();
            let mut core = self.core.borrow_mut();
            core.decide(table.table(), req, now, out)
        };
        if let Step::Answered(decided) = &step {
            self.shared
                .metrics(self.id)
                .answered(&decided.answered, started.elapsed());
            self.note_state();
        }
        // A request for the owner goes first and the lease ask it queued after it (in
        // `hand_off`): the ring keeps their order, so the owner decides the request from
        // its bucket before it leases tokens out.
        if !matches!(step, Step::NeedsOwner { .. }) {
            self.flush_sync(now);
        }
        step
    }

    /// The first step of every ExecResult (validated, and known to the table): taken here
    /// by the tenant's owner — breakers and averages, the metrics, and (NATS on) the
    /// usage event of a result not seen before — or `NeedsOwner`.
    /// `from_node`: the result was accepted by another node of the cluster, which has
    /// published its usage and forwarded it to every node; this node only learns from it.
    pub fn result_step(
        &self,
        result: &ExecResult,
        now: Now,
        out: &mut Vec<u8>,
        from_node: bool,
    ) -> Step {
        let (step, dedup_bytes) = {
            let table = self.table.borrow();
            let mut core = self.core.borrow_mut();
            let step = core.result(table.table(), result, now, out);
            (step, core.results_dedup_bytes() as u64)
        };
        if let Step::Answered(decided) = &step {
            let metrics = self.shared.metrics(self.id);
            metrics.answered(&decided.answered, std::time::Duration::ZERO);
            metrics.results_dedup_bytes.set(dedup_bytes);
            if let core::Counted::ResultAccepted { .. } = decided.answered.counted {
                self.flush_sync(now);
                if let (Some(client), false) = (self.nats.get(), from_node) {
                    super::nats::publish_usage(self, client, result, now.unix_ms);
                    if let Some(cluster) = &self.shared.cluster {
                        crate::cluster::results::forward(cluster, client, result);
                    }
                }
            }
        }
        step
    }

    /// Sends the state protocol's messages (`decide::sync`: leases, probes, replicas)
    /// queued by the core, after its time-driven work. A message goes only where the ring
    /// has room beyond what requests and replies may need (`handoff::sync_fits`); one
    /// that does not fit is dropped and counted, never waited for: the protocol repairs
    /// it. Called after every piece of work that may queue one, and by the keep-alive
    /// task.
    pub fn flush_sync(&self, now: Now) {
        let ring_slots = self.shared.settings.ring_slots;
        let table = self.table.borrow();
        let mut core = self.core.borrow_mut();
        let queued = core.sync_outbox(table.table(), now);
        if queued.is_empty() {
            return;
        }
        let metrics = self.shared.metrics(self.id);
        let mut outbox = self.outbox.borrow_mut();
        for (to, msg) in queued.drain(..) {
            let to = ShardId::from_index(to.index());
            if !handoff::sync_fits(outbox.depth_to(to), ring_slots) {
                metrics.shed(ShedCause::SyncDropped).inc();
                continue;
            }
            match outbox.try_send(to, Msg::Sync(msg)) {
                Ok(()) | Err(TrySendError::Closed(_)) => {}
                Err(TrySendError::Full(_)) => metrics.shed(ShedCause::SyncDropped).inc(),
            }
        }
        let dropped = core.state_mut().take_sync_dropped();
        metrics.shed(ShedCause::SyncDropped).add(dropped);
    }

    /// A decide request only the owner can answer now (an idempotency key, a cold lease):
    /// handed to it, and its session (`note`, from `session_note` before the request
    /// left) noted here once the answer names the provider, so this shard labels the
    /// session's next answer `sticky` as if it had decided this one itself.
    pub async fn decide_at_owner(
        &self,
        to: ShardId,
        job: Job,
        ids: Ids<'_>,
        note: Option<SessionNote>,
    ) -> Reply {
        let reply = self.hand_off(to, job, ids).await;
        let Some(note) = note.filter(|_| reply.status == 200) else {
            return reply;
        };
        #[derive(serde::Deserialize)]
        struct Decided<'a> {
            #[serde(borrow)]
            decision: Chosen<'a>,
        }
        #[derive(serde::Deserialize)]
        struct Chosen<'a> {
            provider_id: &'a str,
        }
        if let Ok(answer) = serde_json::from_slice::<Decided<'_>>(&reply.body) {
            let table = self.table.borrow();
            let provider = answer.decision.provider_id;
            let mut core = self.core.borrow_mut();
            core.state_mut().note_session(table.table(), note, provider);
        }
        reply
    }

    /// The session entry a request handed to the owner should leave here
    /// (`decide_at_owner`).
    pub fn session_note(&self, req: &DecideRequest<'_>, now: Now) -> Option<SessionNote> {
        let table = self.table.borrow();
        self.core
            .borrow()
            .state()
            .session_note(table.table(), req, now)
    }

    /// Sends `job` to `to` and waits for its reply; sheds with `overloaded` when the
    /// in-flight budget to that shard is spent, its ring is full, or it has not answered
    /// within `server.handoff_timeout_ms` (a stalled owner must not hold the request
    /// forever; its late reply frees the slot, see `handoff`). A shed answer echoes
    /// `ids` (the request's `request_id` and `trace_id`, when known) in its `context`.
    pub async fn hand_off(&self, to: ShardId, job: Job, ids: Ids<'_>) -> Reply {
        let metrics = self.shared.metrics(self.id);
        let Some(slot) = self.pending.borrow_mut().reserve(to) else {
            metrics.shed_handoff_budget();
            return shed("too many requests in flight to the tenant's shard", ids);
        };
        let sent = self.outbox.borrow_mut().try_send(
            to,
            Msg::Request {
                slot,
                job: Box::new(job),
            },
        );
        match sent {
            Ok(()) => {
                metrics.handoff_out();
                self.flush_sync(self.shared.now());
                let deadline = self.shared.settings.handoff_timeout;
                let answered = async { Some(handoff::wait(&self.pending, slot).await) };
                let expired = async {
                    glommio::timer::sleep(deadline).await;
                    None
                };
                match future::or(answered, expired).await {
                    Some(reply) => reply,
                    None => {
                        metrics.shed(ShedCause::HandoffTimeout).inc();
                        let message = format!(
                            "the tenant's shard {to} did not answer within {} ms",
                            deadline.as_millis()
                        );
                        shed(&message, ids)
                    }
                }
            }
            Err(e) => {
                self.pending.borrow_mut().cancel(slot);
                match e {
                    TrySendError::Full(_) => {
                        metrics.shed_ring_full();
                        shed("the tenant's shard is overloaded", ids)
                    }
                    TrySendError::Closed(_) => shed("the tenant's shard is stopping", ids),
                }
            }
        }
    }

    /// Runs a job handed over by another shard, as its tenant's owner, through the same
    /// steps as a request that arrived here. `None` when the job went to a task of its
    /// own (a decision with extension stages): that task sends the reply.
    fn run_job(self: &Rc<Self>, job: Box<Job>, from: ShardId, slot: u32) -> Option<Reply> {
        let now = self.shared.now();
        self.refresh(now);
        if matches!(job.route, Route::AdminDryRun | Route::AdminCircuits) {
            return Some(self.admin_here(&job, now));
        }
        let headers = borrowed(&job.headers);
        let mut body = Vec::with_capacity(512);
        let step = match job.route {
            Route::Decide => match decode_decide(&job.body, &headers) {
                Ok(req) => self.decide_step(&req, now, &mut body),
                Err(err) => Step::Answered(self.invalid(&err, &mut body)),
            },
            _ => match ExecResult::decode(&job.body, &headers) {
                Ok(result) => {
                    let from_node = job.route == Route::NodeResult;
                    self.result_step(&result, now, &mut body, from_node)
                }
                Err(err) => Step::Answered(self.invalid(&err, &mut body)),
            },
        };
        match step {
            Step::Answered(decided) => Some(reply(decided, body)),
            Step::CallStages => {
                let ctx = Rc::clone(self);
                self.tasks.set(self.tasks.get() + 1);
                glommio::spawn_local(async move {
                    let reply = ctx.decide_job_stages(&job).await;
                    ctx.send_reply(from, slot, reply);
                    ctx.tasks.set(ctx.tasks.get() - 1);
                })
                .detach();
                None
            }
            Step::NeedsOwnerNode => {
                let ctx = Rc::clone(self);
                self.tasks.set(self.tasks.get() + 1);
                glommio::spawn_local(async move {
                    let reply = ctx.relay_to_owner_node(&job).await;
                    ctx.send_reply(from, slot, reply);
                    ctx.tasks.set(ctx.tasks.get() - 1);
                })
                .detach();
                None
            }
            Step::NeedsOwner { owner } => panic!(
                "shard {} got tenant {} owned by shard {owner}",
                self.id, job.tenant
            ),
        }
    }

    /// Writes and counts a validation failure.
    pub(super) fn invalid(
        &self,
        err: &crate::contract::ContractError,
        out: &mut Vec<u8>,
    ) -> Decided {
        let answered = core::invalid(err, out);
        let metrics = self.shared.metrics(self.id);
        metrics.answered(&answered, std::time::Duration::ZERO);
        Decided {
            answered,
            assignment: None,
        }
    }

    fn send_reply(&self, to: ShardId, slot: u32, reply: Reply) {
        let msg = Msg::Reply { slot, reply };
        match self.outbox.borrow_mut().try_send(to, msg) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            // The in-flight bound (handoff module doc) makes this impossible.
            Err(TrySendError::Full(_)) => panic!("reply ring to {to} full"),
        }
    }

    /// An owner-placed admin call (dry-run, circuits) against this shard's state.
    pub fn admin_here(&self, job: &Job, now: Now) -> Reply {
        let Some(admin) = &self.shared.admin else {
            return Reply {
                status: 404,
                ..Reply::default()
            };
        };
        let method = if job.route == Route::AdminDryRun {
            "POST"
        } else {
            "GET"
        };
        let table = self.table.borrow();
        let core = self.core.borrow();
        let req = AdminRequest {
            method,
            path: &job.path,
            query: None,
            authorization: job.headers.authorization.as_deref(),
            body: &job.body,
        };
        let view = ShardView {
            table: table.table(),
            state: Some(core.state()),
            now,
        };
        let resp = admin.handle(req, view);
        Reply {
            status: resp.status,
            body: resp.body,
            ..Reply::default()
        }
    }

    /// Serves the peers: jobs for tenants we own, replies to jobs we sent, results the
    /// owners accepted.
    fn serve_batch(self: &Rc<Self>, batch: &mut Batch<Msg>) {
        // One clock read for the batch's protocol messages, and one flush after them.
        let mut synced: Option<Now> = None;
        for envelope in batch.drain() {
            match envelope.msg {
                Msg::Request { slot, job } => {
                    self.shared.metrics(self.id).handoff_in();
                    if let Some(reply) = self.run_job(job, envelope.from, slot) {
                        self.send_reply(envelope.from, slot, reply);
                    }
                }
                Msg::Reply { slot, reply } => {
                    self.pending
                        .borrow_mut()
                        .complete(envelope.from, slot, reply);
                }
                Msg::Sync(msg) => {
                    let now = *synced.get_or_insert_with(|| {
                        let now = self.shared.now();
                        self.refresh(now);
                        now
                    });
                    let table = self.table.borrow();
                    let from = envelope.from.0;
                    self.core
                        .borrow_mut()
                        .on_sync(table.table(), from, msg, now);
                }
            }
        }
        if let Some(now) = synced {
            self.flush_sync(now);
        }
    }
}

/// The ids of a handed-off request, for the `context` of a shed answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ids<'a> {
    pub request_id: Option<&'a str>,
    pub trace_id: Option<&'a str>,
}

/// An answer made on this shard, as a reply any transport can write.
pub fn reply(decided: Decided, body: Vec<u8>) -> Reply {
    Reply {
        status: decided.answered.status,
        retry_after_s: decided.answered.retry_after_s,
        body,
        assignment: decided.assignment,
    }
}

/// A written answer with no assignment, as a reply.
pub fn reply_of(answered: Answered, body: Vec<u8>) -> Reply {
    reply(
        Decided {
            answered,
            assignment: None,
        },
        body,
    )
}

pub(crate) fn shed(message: &str, ids: Ids<'_>) -> Reply {
    let mut body = Vec::with_capacity(160);
    let answered = core::overloaded(message, ids.request_id, ids.trace_id, &mut body);
    Reply {
        status: answered.status,
        retry_after_s: answered.retry_after_s,
        body,
        assignment: None,
    }
}

pub fn borrowed(h: &OwnedHeaders) -> Headers<'_> {
    Headers {
        tenant_id: h.tenant_id.as_deref(),
        trace_id: h.trace_id.as_deref(),
        traceparent: h.traceparent.as_deref(),
        version: h.version.as_deref(),
    }
}

/// One task of the shard's own executor, woken `BEATS_PER_STALL` times per stall threshold
/// (every 250 ms by default), for as long as the shard runs. It beats the shard's heartbeat
/// — the beat runs only when the executor gets round to its tasks, as a request would
/// (`shards::watchdog`) — and adopts a published routing table on an idle shard: a busy
/// shard swaps on its next request anyway, but one without traffic would otherwise keep
/// the old table (and show the old generation in `/metrics`) until a request came. One
/// task and one timer for both, because every wake of an idle shard costs CPU (an
/// io_uring timeout armed, a park, an unpark) that an idle router should not spend.
pub fn keep_alive(ctx: &Rc<ShardCtx>) {
    let ctx = Rc::clone(ctx);
    let beats = Arc::clone(&ctx.shared.heartbeats);
    let period = ctx.shared.settings.stall / shards::watchdog::BEATS_PER_STALL;
    glommio::spawn_local(async move {
        loop {
            beats.beat(ctx.id);
            super::stats::record_runtime(ctx.shared.metrics(ctx.id));
            let now = ctx.shared.now();
            ctx.refresh(now);
            // An idle shard's protocol work: averages coalesced since its last request,
            // the periodic resend of circuits not closed.
            ctx.flush_sync(now);
            ctx.save_budgets(now, false);
            glommio::timer::sleep(period).await;
        }
    })
    .detach();
}

/// The shard's main loop: serve the mesh until the stop protocol ends. On a stop request
/// the listeners stop (`stop`), and once they have drained — every request answered,
/// including those waiting on a peer — the shard declares itself quiet.
pub async fn mesh_loop(
    ctx: Rc<ShardCtx>,
    mut end: ShardEnd<Msg>,
    stop: crate::transport::http::Stop,
    servers: Vec<glommio::task::JoinHandle<()>>,
) {
    let mut batch = Batch::default();
    let mut servers = Some(servers);
    let mut drained: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>> = None;
    loop {
        let inbound = match drained.as_mut() {
            None => end.next_batch(&mut batch).await,
            Some(fut) => {
                let done = async {
                    fut.await;
                    None
                };
                match future::or(async { Some(end.next_batch(&mut batch).await) }, done).await {
                    Some(inbound) => inbound,
                    None => {
                        drained = None;
                        end.quiesce();
                        continue;
                    }
                }
            }
        };
        match inbound {
            Inbound::Messages => ctx.serve_batch(&mut batch),
            Inbound::Stopping => {
                stop.trigger();
                let handles = servers.take().unwrap_or_default();
                drained = Some(Box::pin(async move {
                    for h in handles {
                        h.await;
                    }
                }));
            }
            Inbound::Stopped => break,
        }
    }
    // Every request is answered: the budgets' last word.
    ctx.save_budgets(ctx.shared.now(), true);
}
