//! The admin API over NATS (SPEC §8): `<admin_subject>.<operation>` request-reply, with
//! the same tokens and answers as `/admin/v1/…`.
//!
//! The request body is a JSON object naming the operation's arguments:
//! `tenant_id`, `policy_id`, `policy` (put), `request` (dry runs). The token comes from an
//! `authorization: Bearer …` header or a `token` member. Policy operations map onto the
//! HTTP admin routes (one implementation, one set of checks); the extension operations
//! answer from the receiving shard's view (its breakers and counters), which is named in
//! the answer.

use std::rc::Rc;

use serde_json::Value;

use super::handoff::Reply;
use super::nats::{answer_for, ReplyIds};
use super::shard::{Ids, ShardCtx};
use crate::admin::{AdminRequest, AdminResponse};
use crate::contract::ErrorCode;
use crate::extensions::{extension_health, pipeline_complexity};
use crate::metrics::NatsEndpoint;
use crate::policy::{is_policy_id, is_tenant_id};
use crate::transport::nats::{Client, Msg};

/// Largest admin request body accepted over NATS (a policy document plus its envelope).
pub const ADMIN_MESSAGE_BYTES_MAX: usize = 2 << 20;
/// The operations, the last token of `<admin_subject>.<operation>`.
const OPERATIONS: [&str; 11] = [
    "list_policies",
    "get_policy",
    "put_policy",
    "delete_policy",
    "reload",
    "dry_run",
    "dry_run_pipeline",
    "get_circuit_breaker_states",
    "get_budgets",
    "get_extension_health",
    "get_pipeline_complexity",
];

pub fn on_admin(ctx: &Rc<ShardCtx>, client: &Client, msg: Msg<'_>) {
    let Some(reply_to) = msg.reply else {
        log::warn!(
            "nats: admin message on {} without a reply subject dropped",
            msg.subject
        );
        return;
    };
    let counted = (NatsEndpoint::Admin, Some(ctx.shared.now().mono_ns));
    ctx.shared.metrics(ctx.id).nats_endpoints[NatsEndpoint::Admin.index()]
        .received
        .inc();
    let op = msg.subject.rsplit('.').next().unwrap_or("").to_owned();
    let header = msg.headers.and_then(|h| h.get("authorization"));
    let body = msg.payload.to_vec();
    let header = header.map(str::to_owned);
    if !ctx.begin_task() {
        let reply = super::shard::shed(
            "too many NATS requests in flight on this shard",
            Ids::default(),
        );
        return answer_for(ctx, client, reply_to, &ReplyIds::default(), &reply, counted);
    }
    let (ctx, client, reply_to) = (Rc::clone(ctx), client.clone(), reply_to.to_owned());
    glommio::spawn_local(async move {
        let resp = call(&ctx, &op, header, &body).await;
        let reply = Reply {
            status: resp.status,
            body: resp.body,
            ..Reply::default()
        };
        answer_for(
            &ctx,
            &client,
            &reply_to,
            &ReplyIds::default(),
            &reply,
            counted,
        );
        ctx.tasks.set(ctx.tasks.get() - 1);
    })
    .detach();
}

async fn call(ctx: &Rc<ShardCtx>, op: &str, header: Option<String>, body: &[u8]) -> AdminResponse {
    if body.len() > ADMIN_MESSAGE_BYTES_MAX {
        let message = format!("admin message over {ADMIN_MESSAGE_BYTES_MAX} bytes");
        return AdminResponse::error_status(413, ErrorCode::PayloadTooLarge, &message);
    }
    // A token in a header is checked before the body is parsed; one in the body's
    // `token` member can only be read by parsing it (bounded by the size check above).
    if header.is_some() {
        let now_ns = ctx.shared.now().mono_ns;
        if let Err(err) = ctx.shared.access.admin_token(header.as_deref(), now_ns) {
            return AdminResponse::auth(&err);
        }
    }
    let args: Value = match body.iter().all(u8::is_ascii_whitespace) {
        true => Value::Object(Default::default()),
        false => match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return invalid("the admin message must be a JSON object"),
        },
    };
    if !OPERATIONS.contains(&op) {
        let known = OPERATIONS.join(", ");
        let message = format!("unknown admin operation {op:?}; known: {known}");
        return AdminResponse::error_status(404, ErrorCode::InvalidRequest, &message);
    }
    let token = args.get("token").and_then(Value::as_str);
    let authorization = header.or_else(|| token.map(|t| format!("Bearer {t}")));
    let (tenant, policy) = match ids(&args, op) {
        Ok(ids) => ids,
        Err(resp) => return resp,
    };
    let (method, path, body) = match op {
        "get_extension_health" => return health(ctx, authorization.as_deref()),
        "get_pipeline_complexity" => {
            return complexity(ctx, authorization.as_deref(), tenant, policy)
        }
        _ => route(op, &args, tenant, policy),
    };
    let req = AdminRequest {
        method,
        path: &path,
        query: None,
        authorization: authorization.as_deref(),
        body: &body,
    };
    let now = ctx.shared.now();
    let resp = ctx.admin_call(req, now).await;
    // The pipeline is shown with the dry run's answer, decision or error (a required stage
    // that cannot run is what an operator checks it for); not with a refused call.
    if op == "dry_run_pipeline" && !matches!(resp.status, 400 | 401 | 403 | 404 | 413) {
        return with_pipeline(ctx, resp, &args);
    }
    resp
}

/// The HTTP admin request (method, path, body) an operation of `OPERATIONS` maps onto.
fn route(op: &str, args: &Value, tenant: &str, policy: &str) -> (&'static str, String, Vec<u8>) {
    // A document as a JSON value, or as a string holding it (clients that forward a file).
    let raw = |k: &str| match args.get(k) {
        Some(Value::String(text)) => text.clone().into_bytes(),
        Some(v) => v.to_string().into_bytes(),
        None => Vec::new(),
    };
    let policy_path = || format!("/admin/v1/policies/{tenant}/{policy}");
    match op {
        "list_policies" if tenant.is_empty() => ("GET", "/admin/v1/policies".to_owned(), vec![]),
        "list_policies" => ("GET", format!("/admin/v1/policies/{tenant}"), vec![]),
        "get_policy" => ("GET", policy_path(), vec![]),
        "put_policy" => ("PUT", policy_path(), raw("policy")),
        "delete_policy" => ("DELETE", policy_path(), vec![]),
        "reload" => ("POST", "/admin/v1/reload".to_owned(), vec![]),
        "dry_run" | "dry_run_pipeline" => ("POST", "/admin/v1/dry-run".to_owned(), raw("request")),
        "get_circuit_breaker_states" => ("GET", format!("/admin/v1/circuits/{tenant}"), vec![]),
        "get_budgets" => ("GET", format!("/admin/v1/budgets/{tenant}"), vec![]),
        _ => unreachable!("admin operation {op:?} has no route"),
    }
}

/// `(tenant_id, policy_id)` of the message, each `""` when absent and not needed by `op`.
/// They become path segments, so anything but an id is refused: `a/b` would change the
/// route.
fn ids<'a>(args: &'a Value, op: &str) -> Result<(&'a str, &'a str), AdminResponse> {
    let (tenant_required, policy_required) = match op {
        "get_policy" | "put_policy" | "delete_policy" | "get_pipeline_complexity" => (true, true),
        "get_circuit_breaker_states" | "get_budgets" => (true, false),
        _ => (false, false),
    };
    let tenant = id_member(args, op, "tenant_id", tenant_required)?;
    let policy = id_member(args, op, "policy_id", policy_required)?;
    Ok((tenant, policy))
}

/// `key` of the admin message as a tenant or policy id: `""` when absent and optional; a
/// 400 naming the member when it is absent and required, not a string, or not an id.
fn id_member<'a>(
    args: &'a Value,
    op: &str,
    key: &str,
    required: bool,
) -> Result<&'a str, AdminResponse> {
    let (valid, pattern): (fn(&str) -> bool, _) = match key {
        "tenant_id" => (is_tenant_id, "^[A-Za-z0-9_.-]{1,64}$"),
        _ => (is_policy_id, "^[A-Za-z0-9_.-]{1,128}$"),
    };
    match args.get(key) {
        None | Some(Value::Null) if required => {
            Err(invalid(&format!("{op} needs the member {key:?}")))
        }
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(id)) if valid(id) => Ok(id),
        Some(_) => Err(invalid(&format!(
            "{key} must be a string matching {pattern}"
        ))),
    }
}

fn invalid(message: &str) -> AdminResponse {
    AdminResponse::error_status(400, ErrorCode::InvalidRequest, message)
}

fn health(ctx: &ShardCtx, authorization: Option<&str>) -> AdminResponse {
    let admin = ctx.shared.admin.as_ref().expect("admin configured");
    if let Err(err) = admin.tokens().authorize(authorization) {
        return err.into();
    }
    let now_ns = ctx.shared.now().mono_ns;
    let body = extension_health(&ctx.shared.registry, &ctx.breakers.borrow(), now_ns);
    AdminResponse::raw(200, with_shard(body, ctx))
}

fn complexity(
    ctx: &ShardCtx,
    authorization: Option<&str>,
    tenant: &str,
    policy: &str,
) -> AdminResponse {
    let admin = ctx.shared.admin.as_ref().expect("admin configured");
    let scope = match admin.tokens().authorize(authorization) {
        Ok(scope) => scope,
        Err(err) => return err.into(),
    };
    if let Err(err) = scope.require(tenant) {
        return err.into();
    }
    let table = ctx.table.borrow();
    let table = table.table();
    let Some(slot) = table.lookup(tenant, policy) else {
        let message = format!("no policy {policy:?} for tenant {tenant:?}");
        return AdminResponse::error_status(404, ErrorCode::PolicyNotFound, &message);
    };
    AdminResponse::raw(
        200,
        pipeline_complexity(table.policy(slot), &ctx.shared.registry),
    )
}

/// A dry run's answer, with the stages its policy would run (none is called).
fn with_pipeline(ctx: &ShardCtx, resp: AdminResponse, args: &Value) -> AdminResponse {
    let request = args.get("request");
    let field = |k: &str| request.and_then(|r| r.get(k)).and_then(Value::as_str);
    let tenant = field("tenant_id").unwrap_or("");
    let policy = field("policy_id").unwrap_or("default");
    let table = ctx.table.borrow();
    let table = table.table();
    let pipeline = table
        .lookup(tenant, policy)
        .map(|slot| pipeline_complexity(table.policy(slot), &ctx.shared.registry));
    let decision: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    let pipeline: Value = pipeline
        .and_then(|p| serde_json::from_slice(&p).ok())
        .unwrap_or(Value::Null);
    let ok = decision["ok"].as_bool().unwrap_or(false);
    let body = serde_json::json!({"ok": ok, "decision": decision, "pipeline": pipeline});
    AdminResponse::raw(resp.status, body.to_string().into_bytes())
}

fn with_shard(body: Vec<u8>, ctx: &ShardCtx) -> Vec<u8> {
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(mut map)) => {
            map.insert("shard".into(), Value::from(ctx.id.0));
            Value::Object(map).to_string().into_bytes()
        }
        _ => body,
    }
}
