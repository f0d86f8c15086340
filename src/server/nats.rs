//! The router on NATS (SPEC §2, §6, §8): each shard's own client subscribes, in queue
//! groups, to decide requests, ExecResults, assignment acks and admin calls, so the server
//! spreads messages over shards as SO_REUSEPORT spreads HTTP connections. Shard 0 alone
//! also answers the NATS service API (`nats_service`).
//!
//! A message is handled inside the client's connection task, synchronously, when it can
//! be: a decision — for any tenant, on whichever shard's subject it arrived — is made and
//! published before the next message is read (no allocation beyond the answer). A
//! message that must wait — one only the tenant's owner can answer (`crate::shard`), a
//! policy with extension stages, an admin write — is copied and finished by a task of
//! its own; at most `ASYNC_TASKS_PER_SHARD_MAX` of those run per shard, beyond which
//! requests are answered `overloaded` at once.
//!
//! Replies carry the contract headers (`tenant_id`, `trace_id`, `traceparent`,
//! `version`) and `status`, the HTTP status the same answer has over HTTP, so a NATS
//! client can classify an answer without parsing it. A decide message without a reply
//! subject cannot be answered: it is counted and logged.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use shards::ShardId;

use super::handoff::{Job, Outgoing, Reply, Route};
use super::service::owned;
use super::shard::{reply, reply_of, Ids, ShardCtx};
use super::stats::Count;
use crate::config::NatsConfig;
use crate::contract::{
    context_ids, decode_decide, encode_contract_error, ExecAssignmentAck, ExecResult, Headers,
    UsageEvent,
};
use crate::decide::SessionNote;
use crate::extensions::{CallOutcome, Registry};
use crate::metrics::{Counter, ExtraMetric, NatsEndpoint, ShedCause, Transport};
use crate::shard::{self as core, Assigner, Step};
use crate::transport::http::Stop;
use crate::transport::nats::{Client, ClientOptions, ClientStats, HeaderBlock, Msg};

/// Queue groups of the subscriptions other than decide (whose group is configured): one
/// router instance of the group gets each message.
pub const RESULT_QUEUE_GROUP: &str = "router-result-group";
pub const ACK_QUEUE_GROUP: &str = "router-ack-group";
pub const ADMIN_QUEUE_GROUP: &str = "router-admin-group";
/// Publish attempts of one assignment are spaced by this times the attempt number.
const ASSIGNMENT_RETRY_STEP_MS: u64 = 10;

/// `[nats]`, resolved: the client's options and the subjects.
#[derive(Debug)]
pub struct NatsSettings {
    pub client: ClientOptions,
    pub config: NatsConfig,
}

impl NatsSettings {
    pub fn from_config(config: &NatsConfig) -> anyhow::Result<NatsSettings> {
        let client = ClientOptions::from_config(config)?
            .ok_or_else(|| anyhow::anyhow!("nats.url is empty"))?;
        Ok(NatsSettings {
            client,
            config: config.clone(),
        })
    }
}

/// Calls per extension (registry order) and outcome, one table per shard.
#[derive(Debug)]
pub struct ExtensionCalls {
    counts: Box<[[Counter; OUTCOMES.len()]]>,
    /// Stages naming no registered extension.
    unregistered: [Counter; OUTCOMES.len()],
}

const OUTCOMES: [(CallOutcome, &str); 7] = [
    (CallOutcome::Ok, "ok"),
    (CallOutcome::Rejected, "rejected"),
    (CallOutcome::Failed, "failed"),
    (CallOutcome::Timeout, "timeout"),
    (CallOutcome::Unavailable, "unavailable"),
    (CallOutcome::NotFound, "not_found"),
    (CallOutcome::CircuitOpen, "circuit_open"),
];

impl ExtensionCalls {
    pub fn new(extensions: usize) -> ExtensionCalls {
        ExtensionCalls {
            counts: (0..extensions).map(|_| Default::default()).collect(),
            unregistered: Default::default(),
        }
    }

    pub fn count(&self, index: Option<usize>, outcome: CallOutcome) {
        let i = OUTCOMES
            .iter()
            .position(|(o, _)| *o == outcome)
            .expect("listed");
        match index.and_then(|x| self.counts.get(x)) {
            Some(row) => row[i].inc(),
            None => self.unregistered[i].inc(),
        }
    }
}

/// Starts the shard's client and its subscriptions; the returned task ends once the
/// shard's NATS work has drained after `stop`.
pub fn start(
    ctx: &Rc<ShardCtx>,
    settings: &Arc<NatsSettings>,
    stop: Stop,
) -> glommio::task::JoinHandle<()> {
    let stats = Arc::clone(&ctx.shared.nats[ctx.id.index()]);
    let seed = ctx.shared.settings.shard.state.seed ^ u64::from(ctx.id.0);
    let client = Client::start(settings.client.clone(), stats, seed);
    let _ = ctx.nats.set(client.clone());
    let config = &settings.config;
    {
        let mut core = ctx.core.borrow_mut();
        core.set_assigner(Some(Assigner {
            subject: config.assignment_subject.as_str().into(),
            allowlist: config
                .assignment_tenants_allowlist
                .iter()
                .map(|t| t.as_str().into())
                .collect(),
        }));
        // Stages are NATS requests: this shard can call them now.
        core.set_extensions(true);
    }
    let sids = subscribe_all(ctx, &client, config);
    // Every shard runs its buckets at the shares the owner nodes grant, takes part in
    // its node's queue group for the results the other nodes forward, and decides what
    // they forward to it as the tenant's owner.
    if let Some(cluster) = &ctx.shared.cluster {
        crate::cluster::shares::start(ctx, &client, cluster);
        crate::cluster::allowances::start(ctx, &client, cluster);
        crate::cluster::results::subscribe(ctx, &client, cluster);
        crate::cluster::forward::subscribe(ctx, &client, cluster);
    }
    // One mirror per process, on shard 0's client, as the service API.
    if let (0, Some(cluster)) = (ctx.id.0, &ctx.shared.cluster) {
        let mirror = Arc::clone(cluster).run_mirror(client.clone(), seed);
        glommio::spawn_local(mirror).detach();
        let membership = Arc::clone(cluster).run_membership(client.clone());
        glommio::spawn_local(membership).detach();
    }
    let ctx = Rc::clone(ctx);
    glommio::spawn_local(async move {
        stop.wait().await;
        // No new work; what is in flight finishes, then buffered replies are flushed.
        for sid in sids {
            client.unsubscribe(sid);
        }
        let deadline = std::time::Instant::now() + ctx.shared.settings.http.drain_timeout;
        while ctx.tasks.get() > 0 && std::time::Instant::now() < deadline {
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        }
        client.close().await;
    })
    .detach()
}

fn subscribe_all(ctx: &Rc<ShardCtx>, client: &Client, config: &NatsConfig) -> Vec<u64> {
    let on = |f: fn(&Rc<ShardCtx>, &Client, Msg<'_>)| {
        let ctx = Rc::clone(ctx);
        Rc::new(move |client: &Client, msg: Msg<'_>| f(&ctx, client, msg))
    };
    let admin_subject = format!("{}.*", config.admin_subject);
    let (shard_subject, shard_group) = shard_decide_subject(config, ctx.id);
    let subscriptions: [(&str, &str, crate::transport::nats::Handler); 5] = [
        (
            &config.decide_subject,
            &config.decide_queue_group,
            on(on_decide),
        ),
        (&shard_subject, &shard_group, on(on_decide)),
        (&config.result_subject, RESULT_QUEUE_GROUP, on(on_result)),
        (&config.ack_subject, ACK_QUEUE_GROUP, on(on_ack)),
        (
            &admin_subject,
            ADMIN_QUEUE_GROUP,
            on(super::nats_admin::on_admin),
        ),
    ];
    let mut sids = Vec::with_capacity(subscriptions.len());
    for (subject, queue, handler) in subscriptions {
        let skip_admin = ctx.shared.admin.is_none() && subject == admin_subject;
        if skip_admin {
            continue;
        }
        match client.subscribe(subject, Some(queue), handler) {
            Ok(sid) => sids.push(sid),
            Err(e) => log::error!("nats: cannot subscribe to {subject}: {e}"),
        }
    }
    // One responder per process: every instance answers discovery, so one per shard
    // would count this router once per shard.
    if ctx.id.0 == 0 {
        sids.extend(super::nats_service::subscribe(ctx, client));
    }
    sids
}

/// The decide subject of one shard, for shard-aware clients (as HTTP's shard ports):
/// `<decide_subject>.shard.<i>` in queue group `<decide_queue_group>.shard.<i>`. A client
/// that computes the tenant's owner (`/v1/shards`) sends there, so that even requests
/// only the owner answers (idempotency keys) skip the handoff; router instances with the
/// same shard count share the group, so one of them answers.
pub fn shard_decide_subject(config: &NatsConfig, shard: shards::ShardId) -> (String, String) {
    (
        format!("{}.shard.{}", config.decide_subject, shard.0),
        format!("{}.shard.{}", config.decide_queue_group, shard.0),
    )
}

/// Contract headers of a NATS message (header names as SPEC §2 spells them).
pub fn contract_headers<'a>(block: Option<HeaderBlock<'a>>) -> Headers<'a> {
    let get = |name| block.and_then(|b| b.get(name));
    Headers {
        tenant_id: get("tenant_id").or_else(|| get("X-Tenant-ID")),
        trace_id: get("trace_id").or_else(|| get("X-Trace-ID")),
        traceparent: get("traceparent"),
        version: get("version"),
    }
}

/// `answer`, counted for `endpoint` (the service API's STATS): an error when its status is
/// 400 or more, and the time since `received_ns` (monotonic) when given.
pub fn answer_for(
    ctx: &Rc<ShardCtx>,
    client: &Client,
    reply: &str,
    ids: &ReplyIds<'_>,
    r: &Reply,
    (endpoint, received_ns): (NatsEndpoint, Option<u64>),
) {
    let counters = &ctx.shared.metrics(ctx.id).nats_endpoints[endpoint.index()];
    if r.status >= 400 {
        counters.errors.inc();
    }
    if let Some(t0) = received_ns {
        let took = ctx.shared.now().mono_ns.saturating_sub(t0);
        counters.processing_ns.add(took);
    }
    answer(ctx, client, reply, ids, r);
}

/// Publishes an answer to `reply` with the contract headers, then any assignment.
pub fn answer(ctx: &Rc<ShardCtx>, client: &Client, reply: &str, ids: &ReplyIds<'_>, r: &Reply) {
    let mut status = [0u8; 3];
    let status = status_text(r.status, &mut status);
    let mut headers: [(&str, &str); 5] = [("status", status); 5];
    let mut n = 1;
    for (name, value) in [
        ("tenant_id", ids.tenant_id),
        ("trace_id", ids.trace_id),
        ("traceparent", ids.traceparent),
        ("version", Some(crate::contract::CONTRACT_VERSION)),
    ] {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            headers[n] = (name, v);
            n += 1;
        }
    }
    publish_or_shed(ctx, client, reply, &headers[..n], &r.body);
    if let Some(assignment) = &r.assignment {
        push_assignment(ctx, client, assignment);
    }
}

fn status_text(status: u16, buf: &mut [u8; 3]) -> &str {
    let s = status.clamp(100, 999);
    *buf = [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ];
    std::str::from_utf8(buf).expect("digits")
}

fn publish_or_shed(
    ctx: &ShardCtx,
    client: &Client,
    subject: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    if let Err(e) = client.publish(subject, None, headers, body) {
        ctx.shared.metrics(ctx.id).shed(ShedCause::NatsFull).inc();
        log::warn!("nats: reply to {subject} dropped: {e}");
    }
}

/// Publishes an ExecAssignment; a full outbound buffer is retried a bounded number of
/// times, spaced, from a task of its own. Retrying tasks count against the shard's bound
/// of asynchronous work: when it is spent the assignment is dropped and counted.
/// A decision's shadow copy, if any, follows its primary's assignment the same way.
pub fn push_assignment(ctx: &Rc<ShardCtx>, client: &Client, a: &Outgoing) {
    push_one(ctx, client, a);
    if let Some(shadow) = &a.shadow {
        push_one(ctx, client, shadow);
    }
}

fn push_one(ctx: &Rc<ShardCtx>, client: &Client, a: &Outgoing) {
    let metrics = ctx.shared.metrics(ctx.id);
    if publish_assignment(client, a) {
        metrics.assignments.inc();
        return;
    }
    let retries = ctx
        .shared
        .nats_settings
        .as_ref()
        .map_or(0, |s| s.config.assignment_retries_max);
    if retries == 0 || !ctx.begin_task() {
        metrics.shed(ShedCause::NatsFull).inc();
        log::warn!(
            "nats: assignment to {} dropped: outbound buffer full",
            a.subject
        );
        return;
    }
    let (ctx, client, a) = (Rc::clone(ctx), client.clone(), a.clone());
    glommio::spawn_local(async move {
        let metrics = ctx.shared.metrics(ctx.id);
        let mut sent = false;
        for attempt in 1..=u64::from(retries) {
            let delay = std::time::Duration::from_millis(ASSIGNMENT_RETRY_STEP_MS * attempt);
            glommio::timer::sleep(delay).await;
            sent = publish_assignment(&client, &a);
            if sent {
                break;
            }
        }
        if sent {
            metrics.assignments.inc();
        } else {
            metrics.shed(ShedCause::NatsFull).inc();
            log::warn!(
                "nats: assignment to {} dropped after {retries} retries",
                a.subject
            );
        }
        ctx.tasks.set(ctx.tasks.get() - 1);
    })
    .detach();
}

fn publish_assignment(client: &Client, a: &Outgoing) -> bool {
    let headers: Vec<(&str, &str)> = a.headers.iter().map(|(k, v)| (*k, &**v)).collect();
    client.publish(&a.subject, None, &headers, &a.body).is_ok()
}

/// The ids a reply echoes in its headers.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReplyIds<'a> {
    pub tenant_id: Option<&'a str>,
    pub trace_id: Option<&'a str>,
    pub traceparent: Option<&'a str>,
}

pub(crate) fn on_decide(ctx: &Rc<ShardCtx>, client: &Client, msg: Msg<'_>) {
    let metrics = ctx.shared.metrics(ctx.id);
    metrics.request(Transport::Nats).inc();
    let Some(reply_to) = msg.reply else {
        metrics.nats_no_reply.inc();
        log::warn!(
            "nats: decide message on {} without a reply subject dropped",
            msg.subject
        );
        return;
    };
    let headers = contract_headers(msg.headers);
    let now = ctx.shared.now();
    ctx.refresh(now);
    let subjects = &ctx.shared.settings.assignment_subjects;
    let req =
        decode_decide(msg.payload, &headers).and_then(|req| subjects.check(&req).map(|()| req));
    let req = match req {
        Ok(req) => req,
        Err(err) => return answer_invalid(ctx, client, reply_to, &msg, &headers, &err),
    };
    let ids = ReplyIds {
        tenant_id: Some(&req.tenant_id),
        trace_id: req.trace_id.as_deref(),
        traceparent: req.traceparent.as_deref(),
    };
    use crate::cluster::forward::{self, Where};
    match forward::destination(ctx, &req) {
        Where::Here => {}
        // Forwarded here by a node that takes us for the owner: decided here, never a
        // second hop.
        Where::There(..) if forward::forwarded(&msg) => {}
        Where::There(node, shard) => {
            let dest = (node, shard);
            return decide_at_owner_node(ctx, client, dest, &msg, &headers, &req, reply_to);
        }
        Where::NotYet => return not_yet(ctx, client, reply_to, &ids, &req),
    }
    let mut body = ctx.take_answer_buf();
    let step = ctx.decide_step(&req, now, &mut body);
    if let Step::Answered(decided) = step {
        let reply = reply(decided, body);
        answer_for(ctx, client, reply_to, &ids, &reply, DECIDE);
        return ctx.return_answer_buf(reply.body);
    }
    ctx.return_answer_buf(body);
    // Forwarded here by a node that takes us for the owner, and this node's allowance
    // cannot take it: never a second hop.
    let stays = matches!(step, Step::NeedsOwnerNode) && forward::forwarded(&msg);
    if stays {
        return not_yet(ctx, client, reply_to, &ids, &req);
    }
    if !ctx.begin_task() {
        metrics.shed(ShedCause::NatsFull).inc();
        let ids_shed = Ids {
            request_id: Some(&req.request_id),
            trace_id: req.trace_id.as_deref(),
        };
        let reply = super::shard::shed("too many NATS requests in flight on this shard", ids_shed);
        return answer_for(ctx, client, reply_to, &ids, &reply, DECIDE);
    }
    let job = Job {
        route: Route::Decide,
        tenant: req.tenant_id.as_ref().into(),
        path: "".into(),
        body: msg.payload.to_vec(),
        headers: owned(&headers, None),
    };
    // A request for the owner leaves its session's entry to note here (`decide_at_owner`).
    let note = match step {
        Step::NeedsOwner { .. } => ctx.session_note(&req, now),
        _ => None,
    };
    decide_later(
        ctx,
        client,
        step,
        note,
        job,
        OwnedReplyIds::of(&req),
        reply_to.into(),
    );
}

/// A decision only the tenant's owner node can make (`cluster::forward`): sent there,
/// and its answer relayed, by a task of its own (counted by `begin_task`).
fn decide_at_owner_node(
    ctx: &Rc<ShardCtx>,
    client: &Client,
    dest: (String, u16),
    msg: &Msg<'_>,
    headers: &Headers<'_>,
    req: &crate::contract::DecideRequest<'_>,
    reply_to: &str,
) {
    let Some(cluster) = ctx.shared.cluster.clone() else {
        return;
    };
    let ids = OwnedReplyIds::of(req);
    if !ctx.begin_task() {
        ctx.shared.metrics(ctx.id).shed(ShedCause::NatsFull).inc();
        let reply = super::shard::shed("too many NATS requests in flight on this shard", ids.ids());
        return answer_for(ctx, client, reply_to, &ids.reply_ids(), &reply, DECIDE);
    }
    let payload = msg.payload.to_vec();
    let pairs = crate::cluster::forward::header_pairs(headers);
    let who = crate::cluster::forward::Forwarded::of(req);
    let reply_to: Box<str> = reply_to.into();
    let (ctx, client) = (Rc::clone(ctx), client.clone());
    glommio::spawn_local(async move {
        let timeout = ctx.shared.settings.handoff_timeout;
        let there = crate::cluster::forward::decide_there(
            &cluster, &client, dest, &payload, &pairs, &who, timeout,
        );
        let (status, body) = there.await;
        let reply = Reply {
            status,
            body,
            ..Reply::default()
        };
        answer_for(&ctx, &client, &reply_to, &ids.reply_ids(), &reply, DECIDE);
        ctx.tasks.set(ctx.tasks.get() - 1);
    })
    .detach();
}

/// An invalid request: the contract error, with the ids that could be read.
fn answer_invalid(
    ctx: &Rc<ShardCtx>,
    client: &Client,
    reply_to: &str,
    msg: &Msg<'_>,
    headers: &Headers<'_>,
    err: &crate::contract::ContractError,
) {
    let ids = context_ids(msg.payload, headers);
    let mut body = Vec::with_capacity(256);
    let (rid, tid) = (ids.request_id.as_deref(), ids.trace_id.as_deref());
    encode_contract_error(&mut body, err, rid, tid);
    ctx.shared.metrics(ctx.id).count_code(err.code());
    let reply = Reply {
        status: err.code().http_status(),
        body,
        ..Reply::default()
    };
    let ids = ReplyIds {
        tenant_id: headers.tenant_id,
        trace_id: tid.or(headers.trace_id),
        traceparent: headers.traceparent,
    };
    answer_for(ctx, client, reply_to, &ids, &reply, DECIDE);
}

/// The answer while no node can decide `req` yet (`cluster::forward::not_yet`).
fn not_yet(
    ctx: &Rc<ShardCtx>,
    client: &Client,
    reply_to: &str,
    ids: &ReplyIds<'_>,
    req: &crate::contract::DecideRequest<'_>,
) {
    let (status, body) =
        crate::cluster::forward::not_yet(&crate::cluster::forward::Forwarded::of(req));
    let reply = Reply {
        status,
        body,
        ..Reply::default()
    };
    answer_for(ctx, client, reply_to, ids, &reply, DECIDE);
}

/// A decision that must wait (`Step::CallStages` or `Step::NeedsOwner`): a task of its
/// own, counted by `begin_task`, finishes the step and answers.
fn decide_later(
    ctx: &Rc<ShardCtx>,
    client: &Client,
    step: Step,
    note: Option<SessionNote>,
    job: Job,
    ids: OwnedReplyIds,
    to: Box<str>,
) {
    let (ctx, client) = (Rc::clone(ctx), client.clone());
    glommio::spawn_local(async move {
        let reply = match step {
            Step::NeedsOwner { owner } => {
                ctx.decide_at_owner(ShardId(owner), job, ids.ids(), note)
                    .await
            }
            Step::NeedsOwnerNode => ctx.relay_to_owner_node(&job).await,
            // `Answered` never waits; the stages run from the message's own copy.
            Step::CallStages | Step::Answered(_) => ctx.decide_job_stages(&job).await,
        };
        answer_for(&ctx, &client, &to, &ids.reply_ids(), &reply, DECIDE);
        ctx.tasks.set(ctx.tasks.get() - 1);
    })
    .detach();
}

/// A request's ids, kept for a reply sent after the message's buffer is gone.
struct OwnedReplyIds {
    request_id: Box<str>,
    tenant_id: Box<str>,
    trace_id: Option<Box<str>>,
    traceparent: Option<Box<str>>,
}

impl OwnedReplyIds {
    fn of(req: &crate::contract::DecideRequest<'_>) -> Self {
        OwnedReplyIds {
            request_id: req.request_id.as_ref().into(),
            tenant_id: req.tenant_id.as_ref().into(),
            trace_id: req.trace_id.as_deref().map(Into::into),
            traceparent: req.traceparent.as_deref().map(Into::into),
        }
    }

    fn ids(&self) -> Ids<'_> {
        Ids {
            request_id: Some(&self.request_id),
            trace_id: self.trace_id.as_deref(),
        }
    }

    fn reply_ids(&self) -> ReplyIds<'_> {
        ReplyIds {
            tenant_id: Some(&self.tenant_id),
            trace_id: self.trace_id.as_deref(),
            traceparent: self.traceparent.as_deref(),
        }
    }
}

/// Decisions are counted, not timed, per answer: `decision_latency` times them.
const DECIDE: (NatsEndpoint, Option<u64>) = (NatsEndpoint::Decide, None);

/// An ExecResult (SPEC §6): to the tenant's owner, which feeds breakers and averages and
/// publishes the usage event. Answered only when the message has a reply subject.
fn on_result(ctx: &Rc<ShardCtx>, client: &Client, msg: Msg<'_>) {
    take_result(ctx, client, msg, false);
}

/// A result over NATS: from a worker (`from_node` false), or accepted by another node of
/// the cluster and forwarded here (`cluster::results`), which only feeds this node's state.
pub(crate) fn take_result(ctx: &Rc<ShardCtx>, client: &Client, msg: Msg<'_>, from_node: bool) {
    let metrics = ctx.shared.metrics(ctx.id);
    let counted = (NatsEndpoint::Results, Some(ctx.shared.now().mono_ns));
    let counters = &metrics.nats_endpoints[NatsEndpoint::Results.index()];
    counters.received.inc();
    let headers = contract_headers(msg.headers);
    let result = match ExecResult::decode(msg.payload, &headers) {
        Ok(result) => result,
        Err(err) => {
            metrics.results_rejected.inc();
            if msg.reply.is_none() {
                counters.errors.inc();
            }
            log::warn!("nats: invalid ExecResult on {}: {err}", msg.subject);
            if let Some(reply_to) = msg.reply {
                let mut body = Vec::new();
                let answered = core::invalid(&err, &mut body);
                let ids = ReplyIds::default();
                answer_for(
                    ctx,
                    client,
                    reply_to,
                    &ids,
                    &reply_of(answered, body),
                    counted,
                );
            }
            return;
        }
    };
    let now = ctx.shared.now();
    ctx.refresh(now);
    // No token over NATS (its permissions say who may publish here), but a result must
    // name a tenant and a provider the table knows, or it is ignored and counted.
    let (tenant, provider) = (result.tenant_id.as_str(), result.provider_id.as_str());
    let checked = super::access::Ignored::check(ctx.table.borrow().table(), tenant, provider);
    if let Err(why) = checked {
        ctx.shared
            .access
            .ignored(why, tenant, provider, now.mono_ns);
        if msg.reply.is_none() {
            counters.errors.inc();
        }
        if let Some(reply_to) = msg.reply {
            let mut body = Vec::new();
            let code = crate::contract::ErrorCode::PolicyNotFound;
            let message = why.message(tenant, provider);
            let details = crate::contract::ErrorDetails::default();
            crate::contract::encode_error(&mut body, code, &message, &details, None, None);
            let reply = Reply {
                status: code.http_status(),
                body,
                ..Reply::default()
            };
            answer_for(ctx, client, reply_to, &ReplyIds::default(), &reply, counted);
        }
        return;
    }
    let mut body = Vec::new();
    let owner_shard = match ctx.result_step(&result, now, &mut body, from_node) {
        Step::Answered(decided) => {
            if let Some(reply_to) = msg.reply {
                let reply = reply(decided, body);
                answer_for(ctx, client, reply_to, &ReplyIds::default(), &reply, counted);
            }
            return;
        }
        Step::NeedsOwner { owner } => ShardId(owner),
        Step::CallStages | Step::NeedsOwnerNode => {
            unreachable!("results have no stages and spend no budget")
        }
    };
    let reply_to: Option<Box<str>> = msg.reply.map(Into::into);
    let job = Job {
        route: if from_node {
            Route::NodeResult
        } else {
            Route::Results
        },
        tenant: result.tenant_id.as_str().into(),
        path: "".into(),
        body: msg.payload.to_vec(),
        headers: owned(&headers, None),
    };
    if !ctx.begin_task() {
        metrics.shed(ShedCause::NatsFull).inc();
        if let Some(reply_to) = reply_to {
            let reply = super::shard::shed("too many NATS requests in flight", Ids::default());
            answer_for(
                ctx,
                client,
                &reply_to,
                &ReplyIds::default(),
                &reply,
                counted,
            );
        }
        return;
    }
    let (ctx, client) = (Rc::clone(ctx), client.clone());
    glommio::spawn_local(async move {
        let reply = ctx.hand_off(owner_shard, job, Ids::default()).await;
        if let Some(reply_to) = reply_to {
            answer_for(
                &ctx,
                &client,
                &reply_to,
                &ReplyIds::default(),
                &reply,
                counted,
            );
        }
        ctx.tasks.set(ctx.tasks.get() - 1);
    })
    .detach();
}

/// Publishes the UsageEvent of a newly accepted result.
pub(super) fn publish_usage(
    ctx: &ShardCtx,
    client: &Client,
    result: &ExecResult,
    now_unix_ms: u64,
) {
    let Some(settings) = &ctx.shared.nats_settings else {
        return;
    };
    let event = UsageEvent::from_result(result, now_unix_ms);
    let mut body = Vec::with_capacity(256);
    event.encode(&mut body);
    let mut headers = vec![("tenant_id", result.tenant_id.as_str())];
    if let Some(trace) = result.trace_id.as_deref() {
        headers.push(("trace_id", trace));
    }
    if client
        .publish(&settings.config.usage_subject, None, &headers, &body)
        .is_ok()
    {
        ctx.shared.metrics(ctx.id).usage_events.inc();
    } else {
        ctx.shared.metrics(ctx.id).shed(ShedCause::NatsFull).inc();
    }
}

fn on_ack(ctx: &Rc<ShardCtx>, _client: &Client, msg: Msg<'_>) {
    let headers = contract_headers(msg.headers);
    match ExecAssignmentAck::decode(msg.payload, &headers) {
        Ok(ack) => {
            ctx.shared.metrics(ctx.id).assignment_acks.inc();
            log::debug!(
                "nats: assignment {} acknowledged: {:?}",
                ack.assignment_id,
                ack.status
            );
        }
        Err(err) => log::warn!("nats: invalid ExecAssignmentAck on {}: {err}", msg.subject),
    }
}

/// NATS and extension series for the scrape.
pub fn metric_series(
    nats: &[Arc<ClientStats>],
    calls: &[ExtensionCalls],
    registry: &Registry,
) -> Vec<ExtraMetric> {
    let mut out = Vec::new();
    for (shard, s) in nats.iter().enumerate() {
        nats_series(&mut out, shard, s);
    }
    // Not `shardline_extension_calls_total`: that is the shards' own family (by `status`),
    // and a second family of the same name would be dropped by the renderer.
    let help = "Extension calls by extension and outcome (all shards).";
    let names = registry.iter().map(|e| &*e.id).chain(["unregistered"]);
    for (i, name) in names.enumerate() {
        for (j, (_, outcome)) in OUTCOMES.iter().enumerate() {
            let total: u64 = calls
                .iter()
                .map(|c| c.counts.get(i).unwrap_or(&c.unregistered)[j].get())
                .sum();
            let m = ExtraMetric::counter("shardline_extension_outcomes_total", help, total as f64);
            out.push(m.label("extension", name).label("outcome", outcome));
        }
    }
    out
}

fn nats_series(out: &mut Vec<ExtraMetric>, shard: usize, s: &ClientStats) {
    let gauge = |name, help, v: &std::sync::atomic::AtomicU64| {
        ExtraMetric::gauge(name, help, v.load(Relaxed) as f64).label("shard", shard)
    };
    let counter = |name, help, v: &std::sync::atomic::AtomicU64| {
        ExtraMetric::counter(name, help, v.load(Relaxed) as f64).label("shard", shard)
    };
    out.extend([
        gauge(
            "shardline_nats_connected",
            "1 while the shard's NATS connection is up.",
            &s.connected,
        ),
        counter(
            "shardline_nats_reconnects_total",
            "NATS connection attempts after the first, successful or not.",
            &s.reconnects,
        ),
        counter(
            "shardline_nats_connect_failures_total",
            "NATS connection attempts that failed.",
            &s.connect_failures,
        ),
        counter(
            "shardline_nats_outbound_full_total",
            "NATS publishes refused: outbound buffer full.",
            &s.outbound_full,
        ),
        counter(
            "shardline_nats_requests_timed_out_total",
            "Router-made NATS requests with no reply in time.",
            &s.requests_timed_out,
        ),
        counter(
            "shardline_nats_bytes_in_total",
            "Bytes read from NATS.",
            &s.bytes_in,
        ),
        counter(
            "shardline_nats_bytes_out_total",
            "Bytes written to NATS.",
            &s.bytes_out,
        ),
    ]);
    let help = "NATS messages by direction.";
    for (direction, v) in [("in", &s.msgs_in), ("out", &s.msgs_out)] {
        out.push(counter("shardline_nats_messages_total", help, v).label("direction", direction));
    }
}
