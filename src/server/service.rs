//! The router's HTTP routes (SPEC §2, §9): decide, results, health, readiness, metrics,
//! the shard map, the tenant list, and the admin API. A decision is made on the shard the
//! connection landed on; only what the shard's core says needs the owner (an idempotency
//! key, an ExecResult; `crate::shard`) is handed to it through the ring.
//!
//! `/v1/results` and (with `[auth] decide = "token"`) `/v1/decide` check the bearer token
//! before the body is decoded, and the token's tenant once the body named the tenant; see
//! `access` for the order and why.
//!
//! The same service answers the operations listener (`Listener::Ops`), where only the
//! operations routes exist: health, readiness, metrics, the shard map and the admin API.
//! `/healthz` means "this process runs and the shard answering serves" (shard 0 on the
//! operations listener), never "not busy": readiness and load are `/readyz`'s and the
//! metrics'.

use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

use shards::ShardId;

use super::access::Ignored;
use super::handoff::{Job, Outgoing, OwnedHeaders, Reply, Route};
use super::shard::{Ids, ShardCtx};
use super::stats::Count;
use crate::admin::{AdminRequest, AdminResponse, AuthError, Permission};
use crate::contract::{
    context_ids, decode_decide, encode_contract_error, encode_error, ErrorCode, ErrorDetails,
    ExecResult, Headers,
};
use crate::decide::Now;
use crate::metrics::Transport;
use crate::shard::{self as core, Answered, Decided, Step};
use crate::transport::http::{Method, Request, Response, Service};

const CONTENT_TYPE_PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

pub struct RouterService {
    pub ctx: Rc<ShardCtx>,
    /// Which listener this instance serves, for `shardline_requests_total{transport}`.
    pub transport: Transport,
    pub listener: Listener,
}

/// The kind of listener a `RouterService` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Decisions and results (and, with `admin.on_data_port`, the admin API).
    Data,
    /// `server.ops_listen`: health, readiness, metrics, the shard map, the admin API.
    Ops,
}

/// Invalid documents listed by name in `/readyz` (the rest are counted).
const READY_INVALID_SHOWN_MAX: usize = super::POLICY_INVALID_SERIES_MAX;

impl Service for RouterService {
    fn call<'a>(
        &'a self,
        req: &'a Request<'a>,
        resp: &'a mut Response,
    ) -> impl Future<Output = ()> + 'a {
        self.route(req, resp)
    }
}

/// Contract headers from HTTP headers; the `X-` forms are accepted too (SPEC §2).
fn contract_headers<'a>(req: &Request<'a>) -> Headers<'a> {
    Headers {
        tenant_id: req
            .header("x-tenant-id")
            .or_else(|| req.header("tenant_id")),
        trace_id: req.header("x-trace-id").or_else(|| req.header("trace_id")),
        traceparent: req.header("traceparent"),
        version: req.header("version"),
    }
}

pub(super) fn owned(h: &Headers<'_>, authorization: Option<&str>) -> OwnedHeaders {
    OwnedHeaders {
        tenant_id: h.tenant_id.map(Into::into),
        trace_id: h.trace_id.map(Into::into),
        traceparent: h.traceparent.map(Into::into),
        version: h.version.map(Into::into),
        authorization: authorization.map(Into::into),
    }
}

/// A job for the tenant's owner, carrying what the owner needs of the request.
fn forward(route: Route, tenant: &str, req: &Request<'_>, headers: &Headers<'_>) -> Job {
    Job {
        route,
        tenant: tenant.into(),
        path: req.path.into(),
        body: req.body.to_vec(),
        headers: owned(headers, None),
    }
}

fn apply(resp: &mut Response, answered: Answered) {
    resp.status = answered.status;
    resp.retry_after_s = answered.retry_after_s;
}

fn apply_reply(resp: &mut Response, reply: Reply) {
    resp.status = reply.status;
    resp.retry_after_s = reply.retry_after_s;
    resp.body = reply.body;
}

/// A refused token check (401 or 403) in the contract's error format.
fn refused(resp: &mut Response, err: &AuthError) {
    let code = err.code();
    resp.status = code.http_status();
    let message = err.to_string();
    encode_error(
        &mut resp.body,
        code,
        &message,
        &ErrorDetails::default(),
        None,
        None,
    );
    if resp.status == 401 {
        let _ = resp.extra_headers.push("WWW-Authenticate", "Bearer");
    }
}

/// A routing refusal (no such route, wrong listener, admin off) in the contract's error
/// format: `invalid_request` with the HTTP status that says why.
fn route_error(resp: &mut Response, status: u16, message: &str) {
    resp.status = status;
    encode_error(
        &mut resp.body,
        ErrorCode::InvalidRequest,
        message,
        &ErrorDetails::default(),
        None,
        None,
    );
}

fn not_found(resp: &mut Response, req: &Request<'_>) {
    let message = format!("no route {} {}", req.method.as_str(), req.path);
    route_error(resp, 404, &message);
}

fn not_on_ops_listener(resp: &mut Response, req: &Request<'_>) {
    let message = format!(
        "no route {} {} on the operations listener: it serves /healthz, /readyz, /metrics, \
         /v1/shards and /admin/v1/...; decisions and results are on the data port",
        req.method.as_str(),
        req.path
    );
    route_error(resp, 404, &message);
}

/// An admin path while the admin API is off: 404 as before, but saying why, so an
/// operator does not hunt for a wrong path or a typo in the route.
fn admin_off(resp: &mut Response, enabled: bool) {
    let message = if enabled {
        "the admin API is off: no token with the admin scope is configured \
         (admin.tokens or the admin.token_env variable)"
    } else {
        "the admin API is off (admin.enabled = false)"
    };
    route_error(resp, 404, message);
}

/// The admin API is off the data port (`admin.on_data_port = false`): say where it is.
fn admin_on_ops_listener(resp: &mut Response, ops: Option<std::net::SocketAddr>) {
    let at = ops.map_or_else(|| "server.ops_listen".to_owned(), |a| a.to_string());
    let message = format!(
        "the admin API is not served on the data port (admin.on_data_port = false); \
         it is served on the operations listener {at}"
    );
    route_error(resp, 421, &message);
}

fn method_not_allowed(resp: &mut Response, req: &Request<'_>, allow: &'static str) {
    let message = format!(
        "{} does not accept {}; use {allow}",
        req.path,
        req.method.as_str()
    );
    let _ = resp.extra_headers.push("Allow", allow);
    route_error(resp, 405, &message);
}

impl RouterService {
    async fn route(&self, req: &Request<'_>, resp: &mut Response) {
        let now = self.ctx.shared.now();
        self.ctx.refresh(now);
        self.ctx
            .shared
            .metrics(self.ctx.id)
            .request(self.transport)
            .inc();
        let get = matches!(req.method, Method::Get | Method::Head);
        let ops_route = matches!(req.path, "/healthz" | "/readyz" | "/metrics" | "/v1/shards")
            || req.path.starts_with("/admin/");
        if self.listener == Listener::Ops && !ops_route {
            return not_on_ops_listener(resp, req);
        }
        match req.path {
            "/v1/decide" if req.method == Method::Post => self.decide(req, resp, now).await,
            "/v1/results" if req.method == Method::Post => self.results(req, resp, now).await,
            "/v1/decide" | "/v1/results" => method_not_allowed(resp, req, "POST"),
            "/healthz" if get => resp.body.extend_from_slice(br#"{"ok":true}"#),
            "/readyz" if get => self.ready(resp),
            "/metrics" if get => self.metrics(resp),
            "/v1/shards" if get => self.shard_map(resp),
            "/v1/tenants" if get => self.tenants(resp),
            "/healthz" | "/readyz" | "/metrics" | "/v1/shards" | "/v1/tenants" => {
                method_not_allowed(resp, req, "GET")
            }
            p if p.starts_with("/admin/") => self.admin(req, resp, now).await,
            _ => not_found(resp, req),
        }
    }

    async fn decide(&self, req: &Request<'_>, resp: &mut Response, now: Now) {
        let ctx = &self.ctx;
        let access = &ctx.shared.access;
        let grant = match access.decide_token(req.header("authorization"), now.mono_ns) {
            Ok(grant) => grant,
            Err(err) => return self.refuse(resp, &err),
        };
        let headers = contract_headers(req);
        let subjects = &ctx.shared.settings.assignment_subjects;
        let decoded = decode_decide(req.body, &headers)
            .and_then(|decoded| subjects.check(&decoded).map(|()| decoded));
        let decoded = match decoded {
            Ok(decoded) => decoded,
            Err(err) => {
                let ids = context_ids(req.body, &headers);
                let (rid, tid) = (ids.request_id.as_deref(), ids.trace_id.as_deref());
                encode_contract_error(&mut resp.body, &err, rid, tid);
                resp.status = err.code().http_status();
                ctx.shared.metrics(ctx.id).count_code(err.code());
                return;
            }
        };
        #[cfg(feature = "fault-injection")]
        crate::fault::on_decide(ctx.id, &decoded.tenant_id);
        let tenant = &decoded.tenant_id;
        if let Err(err) = access.tenant(grant.as_ref(), Permission::Decide, tenant, now.mono_ns) {
            return self.refuse(resp, &err);
        }
        use crate::cluster::forward::{self, Where};
        match forward::destination(ctx, &decoded) {
            Where::Here => {}
            Where::There(node, shard) => {
                let dest = (node, shard);
                return self
                    .decide_at_owner_node(dest, req, &headers, &decoded, resp)
                    .await;
            }
            Where::NotYet => {
                let (status, body) = forward::not_yet(&forward::Forwarded::of(&decoded));
                resp.status = status;
                resp.body = body;
                resp.retry_after_s = Some(1);
                return;
            }
        }
        let decided = match ctx.decide_step(&decoded, now, &mut resp.body) {
            Step::Answered(decided) => decided,
            Step::CallStages => ctx.decide_stages(&decoded, &mut resp.body).await,
            Step::NeedsOwner { owner } => {
                let job = forward(Route::Decide, decoded.tenant_id.as_ref(), req, &headers);
                let ids = Ids {
                    request_id: Some(&decoded.request_id),
                    trace_id: decoded.trace_id.as_deref(),
                };
                let note = ctx.session_note(&decoded, now);
                let mut reply = ctx.decide_at_owner(ShardId(owner), job, ids, note).await;
                self.push_assignment(reply.assignment.take().as_deref());
                return apply_reply(resp, reply);
            }
            Step::NeedsOwnerNode => {
                let pairs = forward::header_pairs(&headers);
                let who = forward::Forwarded::of(&decoded);
                let (status, body) = forward::relay(ctx, req.body, &pairs, &who, false).await;
                resp.retry_after_s = forward::retry_after_s(&body);
                resp.status = status;
                resp.body = body;
                return;
            }
        };
        self.push_assignment(decided.assignment.as_deref());
        apply(resp, decided.answered);
    }

    /// A decision only the tenant's owner node can make (`cluster::forward`): its answer,
    /// relayed.
    async fn decide_at_owner_node(
        &self,
        dest: (String, u16),
        req: &Request<'_>,
        headers: &Headers<'_>,
        decoded: &crate::contract::DecideRequest<'_>,
        resp: &mut Response,
    ) {
        let ctx = &self.ctx;
        let (Some(cluster), Some(client)) = (&ctx.shared.cluster, ctx.nats.get()) else {
            return;
        };
        let pairs = crate::cluster::forward::header_pairs(headers);
        let who = crate::cluster::forward::Forwarded::of(decoded);
        let timeout = ctx.shared.settings.handoff_timeout;
        let there = crate::cluster::forward::decide_there(
            cluster, client, dest, req.body, &pairs, &who, timeout,
        );
        let (status, body) = there.await;
        if matches!(status, 429 | 503) {
            resp.retry_after_s = crate::cluster::forward::retry_after_s(&body);
        }
        resp.status = status;
        resp.body = body;
    }

    /// A decision over HTTP that asked for an assignment: published on this shard's NATS
    /// connection as the answer leaves.
    fn push_assignment(&self, assignment: Option<&Outgoing>) {
        if let (Some(a), Some(client)) = (assignment, self.ctx.nats.get()) {
            super::nats::push_assignment(&self.ctx, client, a);
        }
    }

    fn refuse(&self, resp: &mut Response, err: &AuthError) {
        refused(resp, err);
        self.ctx.shared.metrics(self.ctx.id).count_code(err.code());
    }

    async fn results(&self, req: &Request<'_>, resp: &mut Response, now: Now) {
        let ctx = &self.ctx;
        let access = &ctx.shared.access;
        let grant = match access.results_token(req.header("authorization"), now.mono_ns) {
            Ok(grant) => grant,
            Err(err) => return self.refuse(resp, &err),
        };
        let headers = contract_headers(req);
        let result = match ExecResult::decode(req.body, &headers) {
            Ok(result) => result,
            Err(err) => {
                let answered = core::invalid(&err, &mut resp.body);
                ctx.shared.metrics(ctx.id).results_rejected.inc();
                return apply(resp, answered);
            }
        };
        let (tenant, provider) = (result.tenant_id.as_str(), result.provider_id.as_str());
        if let Err(err) = access.tenant(grant.as_ref(), Permission::Results, tenant, now.mono_ns) {
            return self.refuse(resp, &err);
        }
        let checked = Ignored::check(ctx.table.borrow().table(), tenant, provider);
        if let Err(why) = checked {
            access.ignored(why, tenant, provider, now.mono_ns);
            let code = ErrorCode::PolicyNotFound;
            resp.status = code.http_status();
            let message = why.message(tenant, provider);
            encode_error(
                &mut resp.body,
                code,
                &message,
                &ErrorDetails::default(),
                None,
                None,
            );
            return;
        }
        match ctx.result_step(&result, now, &mut resp.body, false) {
            Step::Answered(Decided { answered, .. }) => apply(resp, answered),
            Step::CallStages | Step::NeedsOwnerNode => {
                unreachable!("results have no stages and spend no budget")
            }
            Step::NeedsOwner { owner } => {
                let job = forward(Route::Results, result.tenant_id.as_str(), req, &headers);
                apply_reply(
                    resp,
                    ctx.hand_off(ShardId(owner), job, Ids::default()).await,
                );
            }
        }
    }

    fn ready(&self, resp: &mut Response) {
        let shared = &self.ctx.shared;
        let ready = shared.is_ready();
        resp.status = if ready { 200 } else { 503 };
        let nats = if shared.nats.is_empty() {
            "null".to_owned()
        } else {
            let up = shared
                .nats
                .iter()
                .filter(|s| s.connected.load(Relaxed) == 1);
            format!(r#"{{"connected_shards":{}}}"#, up.count())
        };
        let stalled: Vec<String> = shared.heartbeats.stalled().map(|s| s.to_string()).collect();
        let body = format!(
            r#"{{"ok":{ready},"shards":{},"stopping":{},"nats":{nats},"stalled_shards":[{}],"policies":"#,
            shared.partition.shard_count(),
            shared.is_stopping(),
            stalled.join(",")
        );
        resp.body.extend_from_slice(body.as_bytes());
        let invalid = shared.handle.invalid();
        let shown: Vec<_> = invalid
            .iter()
            .take(READY_INVALID_SHOWN_MAX)
            .map(|bad| {
                serde_json::json!({"tenant": bad.tenant, "policy_id": bad.policy,
                "kept": bad.kept, "problems": bad.problems.len()})
            })
            .collect();
        let mut policies = serde_json::json!({
            "invalid_count": invalid.len(),
            "invalid": shown,
        });
        if let Some(cluster) = &shared.cluster {
            // Not ready until the bucket has been read once: until then this node may
            // serve policies the cluster has changed or removed.
            policies["bucket_synced"] = cluster.mirror.synced().into();
        }
        serde_json::to_writer(&mut resp.body, &policies).expect("JSON into a Vec");
        resp.body.push(b'}');
    }

    fn metrics(&self, resp: &mut Response) {
        resp.content_type = CONTENT_TYPE_PROMETHEUS;
        let mut text = String::with_capacity(16 * 1024);
        self.ctx.shared.render_metrics(&mut text);
        resp.body.extend_from_slice(text.as_bytes());
    }

    fn shard_map(&self, resp: &mut Response) {
        let shared = &self.ctx.shared;
        let base = shared.settings.shard_port_base;
        let body = serde_json::json!({
            "ok": true,
            "shards": shared.partition.shard_count(),
            "this_shard": self.ctx.id.0,
            "partition": {
                "function": "jump_consistent_hash(fnv1a_64(utf8(tenant_id)), shards)",
                "fnv1a_64": {"offset_basis": "0xcbf29ce484222325", "prime": "0x100000001b3"},
                "jump_consistent_hash": "Lamping & Veach 2014, 64-bit key, returns 0..shards",
            },
            "shard_ports": if base == 0 { serde_json::Value::Null } else {
                serde_json::json!({"base": base, "port_of_shard": "base + shard"})
            },
            "nats_shard_subjects": shared.nats_settings.as_ref().map(|n| serde_json::json!({
                "subject_of_shard": format!("{}.shard.<shard>", n.config.decide_subject),
            })),
        });
        serde_json::to_writer(&mut resp.body, &body).expect("JSON into a Vec");
    }

    /// The ids of the tenants with at least one policy loaded, sorted; nothing of the
    /// policies themselves. Public like `/v1/shards`: a tenant id is an identifier every
    /// gateway request carries, not a secret (docs/API.md), and a client (the load
    /// generator) needs them to send requests that can be answered.
    fn tenants(&self, resp: &mut Response) {
        let table = self.ctx.table.borrow();
        let mut ids: Vec<&str> = table.table().tenants().collect();
        ids.sort_unstable();
        let body = serde_json::json!({"ok": true, "tenants": ids});
        serde_json::to_writer(&mut resp.body, &body).expect("JSON into a Vec");
    }

    async fn admin(&self, req: &Request<'_>, resp: &mut Response, now: Now) {
        if self.ctx.shared.admin.is_none() {
            return admin_off(resp, self.ctx.shared.settings.admin_enabled);
        }
        let settings = &self.ctx.shared.settings;
        if self.listener == Listener::Data && !settings.admin_on_data_port {
            return admin_on_ops_listener(resp, settings.ops_listen);
        }
        let areq = AdminRequest {
            method: req.method.as_str(),
            path: req.path,
            query: req.query,
            authorization: req.header("authorization"),
            body: req.body,
        };
        write_admin(resp, self.ctx.admin_call(areq, now).await);
    }
}

fn write_admin(resp: &mut Response, answer: AdminResponse) {
    resp.status = answer.status;
    resp.body = answer.body;
    if let Some(allow) = answer.allow {
        let _ = resp.extra_headers.push("Allow", allow);
    }
    if answer.status == 401 {
        let _ = resp.extra_headers.push("WWW-Authenticate", "Bearer");
    }
    resp.retry_after_s = answer.retry_after_s;
}
