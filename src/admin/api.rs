//! The `/admin/v1/…` routes (SPEC §8), transport-agnostic: `Admin::handle` takes the
//! method, path, `Authorization` value and body, and returns status and JSON body.
//!
//! | route                                   | methods          | scope            |
//! |-----------------------------------------|------------------|------------------|
//! | `/admin/v1/policies`                    | GET              | filtered         |
//! | `/admin/v1/policies/{tenant}`           | GET              | tenant           |
//! | `/admin/v1/policies/{tenant}/{policy}`  | GET, PUT, DELETE | tenant           |
//! | `/admin/v1/reload`                      | POST             | all tenants      |
//! | `/admin/v1/dry-run`                     | POST             | the body's tenant|
//! | `/admin/v1/circuits/{tenant}`           | GET              | tenant           |
//! | `/admin/v1/budgets/{tenant}`            | GET              | tenant           |
//! | `/admin/v1/cluster`                     | GET              | all tenants      |
//!
//! Order of checks: the token first (401 for anything without a valid token, so routes
//! cannot be probed anonymously), then the route (404) and method (405), then the scope
//! (403), then the input (400). A tenant-scoped token gets 403 for another tenant whether
//! or not that tenant exists, so it learns nothing about other tenants. Another tenant's
//! broken document does not stop a put (it only affects its own policy); when a put is
//! rejected for a table-wide reason, other tenants' problems are counted, not shown.
//!
//! Where a request runs (`placement`): puts, deletes, gets and reloads do blocking file
//! I/O with fsync, so a transport runs them off the shard executors (e.g. glommio's
//! `spawn_blocking`). Listing reads only the published table. Dry-run and circuits read
//! one shard's `ShardState`, which must be the state of the tenant's *owner* shard (the
//! only one with that tenant's breakers and sessions): the caller runs them there and
//! passes that shard's table and state in `ShardView`. Those two do no I/O.
//!
//! A dry-run decides against a copy of what that one decision reads on the owner
//! (`ShardState::dry_run_copy`: its policy's state, the random source, its session's
//! sticky entry): it sees the current circuits, sessions and buckets, and changes none of
//! them, at a cost that does not grow with the shard's other tenants or its sticky table.
//! The answer has the DecideResponse shape, with `explain` forced on, since the steps taken
//! are what a dry-run is for.
//! No extension is called (a dry-run does no I/O): required stages answer
//! `extension_unavailable` and optional ones are reported `skipped`, as `decide` does.

use std::borrow::Cow;
use std::sync::Arc;

use super::auth::{shown, AuthError, Scope, Tokens};
use super::reply::{
    AdminResponse, CircuitRow, Circuits, InvalidRow, PolicyList, PolicyRow, Reloaded, Written,
    PROBLEMS_SHOWN_MAX,
};
use super::store::{PolicyStore, StoreError};
use super::table::{delete_policy, put_policy, reload_all, PublishError, TableHandle};
use crate::answer::encode_outcome;
use crate::cluster::ClusterNode;
use crate::contract::{context_ids, decode_decide, encode_contract_error, ErrorCode, Headers};
use crate::decide::breaker::BreakerState;
use crate::decide::{decide, Now, ShardState};
use crate::policy::{is_tenant_id, PolicyError, PolicySlot, RoutingTable};

const PREFIX: &str = "/admin/v1/";

/// One admin request, as a transport received it.
#[derive(Debug, Clone, Copy)]
pub struct AdminRequest<'a> {
    /// `GET`, `PUT`, `POST`, `DELETE` (case-sensitive, as in HTTP).
    pub method: &'a str,
    /// The path without the query, e.g. `/admin/v1/policies/acme`.
    pub path: &'a str,
    /// The query string, if any; no route reads one yet.
    pub query: Option<&'a str>,
    /// The `Authorization` header value; `None` when absent.
    pub authorization: Option<&'a str>,
    pub body: &'a [u8],
}

/// The shard a request runs on: see the module doc on which shard that must be.
#[derive(Debug, Clone, Copy)]
pub struct ShardView<'a> {
    /// The table `state` belongs to (the shard's `ShardTable::table()`).
    pub table: &'a RoutingTable,
    /// The owner shard's state, for dry-run and circuits; `None` elsewhere.
    pub state: Option<&'a ShardState>,
    pub now: Now,
}

/// Where a transport must run a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement<'a> {
    /// Reads only the published table: any shard or thread.
    Anywhere,
    /// Blocking file I/O: a thread that may block, not a shard executor.
    Blocking,
    /// Reads this tenant's state: its owner shard, with that shard's `ShardView`.
    OwnerShard(Cow<'a, str>),
}

/// Where `req` must run; requests that will be refused anyway are `Anywhere`.
pub fn placement<'a>(req: &AdminRequest<'a>) -> Placement<'a> {
    match Route::parse(req.path) {
        Some(Route::Circuits(tenant) | Route::Budgets(tenant)) => {
            Placement::OwnerShard(Cow::Borrowed(tenant))
        }
        Some(Route::DryRun) => match decode_decide(req.body, &Headers::default()) {
            Ok(decide_req) => Placement::OwnerShard(decide_req.tenant_id),
            Err(_) => Placement::Anywhere,
        },
        Some(Route::Policy(..) | Route::Reload) => Placement::Blocking,
        Some(Route::Policies | Route::TenantPolicies(_) | Route::Cluster) | None => {
            Placement::Anywhere
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Policies,
    TenantPolicies(&'a str),
    Policy(&'a str, &'a str),
    Reload,
    DryRun,
    Circuits(&'a str),
    Budgets(&'a str),
    Cluster,
}

impl<'a> Route<'a> {
    fn parse(path: &'a str) -> Option<Self> {
        let rest = path.strip_prefix(PREFIX)?;
        let mut parts = rest.split('/');
        let first = parts.next()?;
        let second = parts.next();
        let third = parts.next();
        if parts.next().is_some() || [second, third].contains(&Some("")) {
            return None;
        }
        match (first, second, third) {
            ("policies", None, None) => Some(Route::Policies),
            ("policies", Some(t), None) => Some(Route::TenantPolicies(t)),
            ("policies", Some(t), Some(p)) => Some(Route::Policy(t, p)),
            ("reload", None, None) => Some(Route::Reload),
            ("dry-run", None, None) => Some(Route::DryRun),
            ("circuits", Some(t), None) => Some(Route::Circuits(t)),
            ("budgets", Some(t), None) => Some(Route::Budgets(t)),
            ("cluster", None, None) => Some(Route::Cluster),
            _ => None,
        }
    }

    fn allow(self) -> &'static str {
        match self {
            Route::Policy(..) => "GET, PUT, DELETE",
            Route::Reload | Route::DryRun => "POST",
            Route::Policies
            | Route::TenantPolicies(_)
            | Route::Circuits(_)
            | Route::Budgets(_)
            | Route::Cluster => "GET",
        }
    }
}

/// A policy put or delete that a cluster node makes through its policy bucket
/// (docs/CLUSTER.md) instead of its directory, checked as a local write would be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterWrite {
    pub tenant: String,
    pub policy_id: String,
    /// The document; `None` for a delete.
    pub body: Option<Vec<u8>>,
    /// `?revision=N`: the revision the writer based its change on (0: the policy must not
    /// exist yet). Without it the write expects the revision this node last saw.
    pub expected: Option<u64>,
}

/// Whether `req` is a write a cluster node makes through its bucket: a policy put or
/// delete. Everything else is answered by `Admin::handle`, as on one node.
pub fn is_cluster_write(req: &AdminRequest<'_>) -> bool {
    matches!(Route::parse(req.path), Some(Route::Policy(..)))
        && matches!(req.method, "PUT" | "DELETE")
}

/// The `revision` query parameter: `Ok(None)` when absent.
fn expected_revision(query: Option<&str>) -> Result<Option<u64>, AdminResponse> {
    let Some(value) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("revision="))
    else {
        return Ok(None);
    };
    value.parse().map(Some).map_err(|_| {
        let message = format!(
            "query parameter revision={} is not a revision number",
            shown(value)
        );
        AdminResponse::error(ErrorCode::InvalidRequest, &message)
    })
}

/// 200 or 201 for a write made through the cluster's bucket, with its revision.
pub fn cluster_written(
    created: bool,
    tenant: &str,
    policy_id: &str,
    generation: u64,
    revision: u64,
) -> AdminResponse {
    let body = Written {
        ok: true,
        tenant,
        policy_id,
        generation,
        revision: Some(revision),
    };
    AdminResponse::json(if created { 201 } else { 200 }, &body)
}

/// 409 `conflict`: a compare-and-set found the policy at another revision.
pub fn conflict(tenant: &str, policy_id: &str, expected: u64, current: u64) -> AdminResponse {
    let message = format!(
        "policy {tenant}/{policy_id} changed: it is at revision {current}, not {expected}; \
         read it again and retry with ?revision={current}"
    );
    AdminResponse::conflict(&message, expected, current)
}

/// A handler's answer; `Err` is an error answer, so `?` can return early.
type Reply = Result<AdminResponse, AdminResponse>;

impl From<AuthError> for AdminResponse {
    fn from(err: AuthError) -> Self {
        AdminResponse::auth(&err)
    }
}

/// The admin API over one policy store and the table it publishes.
#[derive(Debug)]
pub struct Admin {
    tokens: Arc<Tokens>,
    store: Arc<PolicyStore>,
    handle: TableHandle,
    /// On a cluster node: the bucket revisions the listing shows (for compare-and-set),
    /// and the members `GET /admin/v1/cluster` lists.
    cluster: Option<Arc<ClusterNode>>,
}

impl Admin {
    pub fn new(tokens: Tokens, store: Arc<PolicyStore>, handle: TableHandle) -> Self {
        Self::with_shared_tokens(Arc::new(tokens), store, handle)
    }

    /// With the tokens the data-plane routes check too (one list, one set of permissions).
    pub fn with_shared_tokens(
        tokens: Arc<Tokens>,
        store: Arc<PolicyStore>,
        handle: TableHandle,
    ) -> Self {
        Admin {
            tokens,
            store,
            handle,
            cluster: None,
        }
    }

    /// On a cluster node: list each policy with its bucket revision, and the members.
    pub fn with_cluster(mut self, cluster: Arc<ClusterNode>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    pub fn table(&self) -> &TableHandle {
        &self.handle
    }

    pub fn store(&self) -> &Arc<PolicyStore> {
        &self.store
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// Answers one request; see the module doc for the routes and the order of checks.
    pub fn handle(&self, req: AdminRequest<'_>, shard: ShardView<'_>) -> AdminResponse {
        let scope = match self.tokens.authorize(req.authorization) {
            Ok(scope) => scope,
            Err(err) => return err.into(),
        };
        let Some(route) = Route::parse(req.path) else {
            let message = format!("no admin route {} {}", shown(req.method), shown(req.path));
            return AdminResponse::error_status(404, ErrorCode::InvalidRequest, &message);
        };
        let allow = route.allow();
        if !allow.split(", ").any(|m| m == req.method) {
            return method_not_allowed(&req, allow);
        }
        let reply = match (route, req.method) {
            (Route::Policies, _) => self.list(&scope, None),
            (Route::TenantPolicies(tenant), _) => self.list(&scope, Some(tenant)),
            (Route::Policy(tenant, id), "GET") => self.get(&scope, tenant, id),
            (Route::Policy(tenant, id), "PUT") => self.put(&scope, tenant, id, req.body),
            (Route::Policy(tenant, id), _) => self.delete(&scope, tenant, id),
            (Route::Reload, _) => self.reload(&scope),
            (Route::DryRun, _) => dry_run(&scope, req.body, &shard),
            (Route::Circuits(tenant), _) => circuits(&scope, tenant, &shard),
            (Route::Budgets(tenant), _) => budgets(&scope, tenant, &shard),
            (Route::Cluster, _) => self.cluster_view(&scope, req.query),
        };
        reply.unwrap_or_else(|err| err)
    }

    /// The checks `handle` makes of a policy put or delete (token, route, method, scope,
    /// ids, document), in its order, without writing anything: the write a cluster node
    /// then makes through its bucket, or the answer refusing it.
    pub fn check_cluster_write(
        &self,
        req: &AdminRequest<'_>,
    ) -> Result<ClusterWrite, AdminResponse> {
        let scope = self.tokens.authorize(req.authorization)?;
        let Some(Route::Policy(tenant, id)) = Route::parse(req.path) else {
            let message = format!("no admin route {} {}", shown(req.method), shown(req.path));
            return Err(AdminResponse::error_status(
                404,
                ErrorCode::InvalidRequest,
                &message,
            ));
        };
        scope.require(tenant)?;
        let body = match req.method {
            "PUT" => {
                self.store
                    .check(tenant, id, req.body)
                    .map_err(|err| store_error(tenant, id, err))?;
                Some(req.body.to_vec())
            }
            "DELETE" => {
                self.store
                    .check_ids(tenant, id)
                    .map_err(|err| store_error(tenant, id, err))?;
                None
            }
            _ => return Err(method_not_allowed(req, Route::Policy(tenant, id).allow())),
        };
        Ok(ClusterWrite {
            tenant: tenant.to_owned(),
            policy_id: id.to_owned(),
            body,
            expected: expected_revision(req.query)?,
        })
    }

    /// The members as this node sees them, the partitions each owns, and with
    /// `?tenant=T` the node owning T. All tenants' scope: it shows the whole cluster.
    fn cluster_view(&self, scope: &Scope, query: Option<&str>) -> Reply {
        scope.require_all()?;
        let Some(cluster) = &self.cluster else {
            let message = "this router is not a cluster node (cluster.enabled = false)";
            return Err(AdminResponse::error_status(
                404,
                ErrorCode::InvalidRequest,
                message,
            ));
        };
        let tenant = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|pair| pair.strip_prefix("tenant="));
        if let Some(t) = tenant.filter(|t| !is_tenant_id(t)) {
            let message = format!("query parameter tenant={} is not a tenant id", shown(t));
            return Err(AdminResponse::error(ErrorCode::InvalidRequest, &message));
        }
        let now = cluster.now_ms();
        let members = cluster.members();
        let rows: Vec<serde_json::Value> = members
            .rows(now)
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "node_id": r.node_id,
                    "instance": r.instance,
                    "shards": r.shards,
                    "last_heard_ms_ago": r.last_heard_ms_ago,
                    "partitions_owned": r.partitions_owned,
                })
            })
            .collect();
        let mut body = serde_json::json!({
            "ok": true,
            "node_id": members.me(),
            "partitions": crate::cluster::members::PARTITIONS,
            "members": rows,
        });
        if let Some(t) = tenant {
            body["tenant"] = serde_json::json!({
                "tenant": t,
                "partition": crate::cluster::members::partition_of(t),
                "owner": members.owner_of(t, now),
            });
        }
        Ok(AdminResponse::json(200, &body))
    }

    fn list(&self, scope: &Scope, tenant: Option<&str>) -> Reply {
        if let Some(tenant) = tenant {
            check_tenant(scope, tenant)?;
        }
        let (generation, table) = self.handle.current();
        let mut policies: Vec<PolicyRow<'_>> = table
            .policies()
            .iter()
            .filter(|p| scope.allows(&p.tenant) && tenant.is_none_or(|t| *p.tenant == *t))
            .map(|p| PolicyRow {
                tenant: &p.tenant,
                policy_id: &p.id,
                version: &p.version,
                providers: p.providers.len(),
                revision: self
                    .cluster
                    .as_ref()
                    .and_then(|c| c.mirror.revision(&p.tenant, &p.id).ok())
                    .map(|r| r.revision),
            })
            .collect();
        policies.sort_by(|a, b| (a.tenant, a.policy_id).cmp(&(b.tenant, b.policy_id)));
        let list = PolicyList {
            ok: true,
            generation,
            policies,
        };
        Ok(AdminResponse::json(200, &list))
    }

    fn get(&self, scope: &Scope, tenant: &str, id: &str) -> Reply {
        scope.require(tenant)?;
        match self.store.get(tenant, id) {
            Ok(Some(document)) => Ok(AdminResponse::raw(200, document)),
            Ok(None) => Err(policy_not_found(tenant, id)),
            Err(err) => Err(store_error(tenant, id, err)),
        }
    }

    fn put(&self, scope: &Scope, tenant: &str, id: &str, body: &[u8]) -> Reply {
        scope.require(tenant)?;
        let published = put_policy(&self.handle, &self.store, tenant, id, body)
            .map_err(|err| publish_error(scope, tenant, id, err))?;
        let generation = published.report.generation;
        log::info!("admin: put policy {tenant}/{id}, table generation {generation}");
        let status = if published.created { 201 } else { 200 };
        Ok(written(status, tenant, id, generation))
    }

    fn delete(&self, scope: &Scope, tenant: &str, id: &str) -> Reply {
        scope.require(tenant)?;
        let deleted = delete_policy(&self.handle, &self.store, tenant, id)
            .map_err(|err| publish_error(scope, tenant, id, err))?;
        let Some(published) = deleted else {
            return Err(policy_not_found(tenant, id));
        };
        let generation = published.report.generation;
        log::info!("admin: deleted policy {tenant}/{id}, table generation {generation}");
        Ok(written(200, tenant, id, generation))
    }

    fn reload(&self, scope: &Scope) -> Reply {
        scope.require_all()?;
        match reload_all(&self.handle, &self.store) {
            Ok(report) => {
                log::info!("admin: reloaded, table generation {}", report.generation);
                super::table::log_invalid("an admin reload", &report.invalid);
                let invalid = report.invalid.iter().take(PROBLEMS_SHOWN_MAX);
                let invalid = invalid
                    .map(|bad| InvalidRow {
                        tenant: &bad.tenant,
                        policy_id: &bad.policy,
                        kept: bad.kept,
                        problems: bad.problems.iter().map(PolicyError::to_string).collect(),
                    })
                    .collect();
                let reloaded = Reloaded {
                    ok: true,
                    generation: report.generation,
                    policies: report.policies,
                    changed: report.changed,
                    invalid,
                    invalid_omitted: report.invalid.len().saturating_sub(PROBLEMS_SHOWN_MAX),
                };
                Ok(AdminResponse::json(200, &reloaded))
            }
            Err(problems) => {
                let message = "the policy directory does not load; the current table stays";
                let lines = problems.iter().map(PolicyError::to_string).collect();
                Err(AdminResponse::problems(message, lines))
            }
        }
    }
}

fn written(status: u16, tenant: &str, policy_id: &str, generation: u64) -> AdminResponse {
    let body = Written {
        ok: true,
        tenant,
        policy_id,
        generation,
        revision: None,
    };
    AdminResponse::json(status, &body)
}

fn method_not_allowed(req: &AdminRequest<'_>, allow: &'static str) -> AdminResponse {
    let message = format!(
        "method {} is not allowed on {}; allowed: {allow}",
        shown(req.method),
        shown(req.path)
    );
    let mut reply = AdminResponse::error_status(405, ErrorCode::InvalidRequest, &message);
    reply.allow = Some(allow);
    reply
}

/// Scope first, then the id's shape (a tenant token gets 403 for anything else).
fn check_tenant(scope: &Scope, tenant: &str) -> Result<(), AdminResponse> {
    scope.require(tenant)?;
    if !is_tenant_id(tenant) || tenant.starts_with('.') {
        let message = StoreError::TenantId(shown(tenant).into()).to_string();
        return Err(AdminResponse::error(ErrorCode::InvalidRequest, &message));
    }
    Ok(())
}

fn policy_not_found(tenant: &str, id: &str) -> AdminResponse {
    let message = format!("tenant {} has no policy '{}'", shown(tenant), shown(id));
    AdminResponse::error(ErrorCode::PolicyNotFound, &message)
}

fn store_error(tenant: &str, id: &str, err: StoreError) -> AdminResponse {
    match err {
        StoreError::TenantId(_) | StoreError::PolicyId(_) => {
            AdminResponse::error(ErrorCode::InvalidRequest, &err.to_string())
        }
        StoreError::TooLarge { .. } => {
            AdminResponse::error(ErrorCode::PayloadTooLarge, &err.to_string())
        }
        StoreError::Invalid(problems) => {
            let message = format!("policy {tenant}/{id} is invalid; nothing was changed");
            let lines = problems
                .iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect();
            AdminResponse::problems(&message, lines)
        }
        StoreError::Io { .. } => {
            log::error!("admin: policy store failed for {tenant}/{id}: {err}");
            AdminResponse::error(ErrorCode::Internal, &err.public_message())
        }
    }
}

fn publish_error(scope: &Scope, tenant: &str, id: &str, err: PublishError) -> AdminResponse {
    match err {
        PublishError::Store(err) => store_error(tenant, id, err),
        PublishError::Rejected(problems) => {
            let message = "the routing table would not load with this change; \
                           nothing was changed";
            AdminResponse::problems(message, scoped_problems(scope, &problems))
        }
    }
}

/// Problems a scope may read: a tenant token sees its own tenant's and a count of others.
fn scoped_problems(scope: &Scope, problems: &[PolicyError]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut hidden = 0usize;
    for p in problems {
        let tenant = p.source.split('/').next().unwrap_or("");
        if scope.allows(tenant) {
            lines.push(p.to_string());
        } else {
            hidden += 1;
        }
    }
    if hidden > 0 {
        lines.push(format!(
            "{hidden} problem(s) outside this tenant's policies; an operator must fix them"
        ));
    }
    lines
}

fn owner_state<'v>(shard: &ShardView<'v>, route: &str) -> Result<&'v ShardState, AdminResponse> {
    shard.state.ok_or_else(|| {
        log::error!("admin: {route} was run without the owner shard's state");
        let message = format!("{route} must run on the tenant's owner shard");
        AdminResponse::error(ErrorCode::Internal, &message)
    })
}

/// Decides against a copy of what the decision reads on the owner; see the module doc.
fn dry_run(scope: &Scope, body: &[u8], shard: &ShardView<'_>) -> Reply {
    let headers = Headers::default();
    let mut req = match decode_decide(body, &headers) {
        Ok(req) => req,
        Err(err) => {
            let ids = context_ids(body, &headers);
            let mut out = Vec::new();
            let (request_id, trace_id) = (ids.request_id.as_deref(), ids.trace_id.as_deref());
            encode_contract_error(&mut out, &err, request_id, trace_id);
            return Err(AdminResponse::raw(err.code().http_status(), out));
        }
    };
    scope.require(&req.tenant_id)?;
    let state = owner_state(shard, "dry-run")?;
    req.explain = true;
    let mut scratch = state.dry_run_copy(shard.table, &req, shard.now.mono_ns);
    let outcome = decide(shard.table, &mut scratch, &req, shard.now);
    let status = outcome
        .as_ref()
        .map_or_else(|e| e.code().http_status(), |_| 200);
    let mut out = Vec::new();
    encode_outcome(&mut out, shard.table, &req, &outcome);
    Ok(AdminResponse::raw(status, out))
}

/// Every (policy, provider) breaker of `tenant` on the owner shard, in slot order.
fn circuits(scope: &Scope, tenant: &str, shard: &ShardView<'_>) -> Reply {
    check_tenant(scope, tenant)?;
    let state = owner_state(shard, "circuits")?;
    let mut rows = Vec::new();
    for (i, policy) in shard.table.policies().iter().enumerate() {
        if *policy.tenant != *tenant {
            continue;
        }
        let policy_state = state.policy(PolicySlot(i as u32));
        for (provider, ps) in policy.providers.iter().zip(policy_state.providers.iter()) {
            rows.push(CircuitRow {
                policy_id: &policy.id,
                provider: &provider.name,
                state: effective_state(ps.breaker.state(), shard.now.mono_ns),
                enabled: policy.circuit_breaker.is_some(),
            });
        }
    }
    let body = Circuits {
        ok: true,
        tenant,
        circuits: rows,
    };
    Ok(AdminResponse::json(200, &body))
}

/// Every budget of `tenant`'s policies on the owner shard: the current window of each
/// (policy, budget, scope value), with what is spent, reserved and left.
fn budgets(scope: &Scope, tenant: &str, shard: &ShardView<'_>) -> Reply {
    check_tenant(scope, tenant)?;
    let state = owner_state(shard, "budgets")?;
    let reports = state.budget_reports(shard.table, tenant, shard.now.unix_ms);
    let body = serde_json::json!({
        "ok": true,
        "tenant": tenant,
        "now_ms": shard.now.unix_ms,
        "budgets": reports,
    });
    Ok(AdminResponse::json(200, &body))
}

/// The state as the next request would see it: an open circuit whose timeout has passed
/// is half-open (breakers apply that transition lazily, when next read).
fn effective_state(state: BreakerState, now_ns: u64) -> &'static str {
    match state {
        BreakerState::Open { until_ns } if now_ns >= until_ns => "half_open",
        other => other.name(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_exactly() {
        assert_eq!(Route::parse("/admin/v1/policies"), Some(Route::Policies));
        let tenant = Route::parse("/admin/v1/policies/acme");
        assert_eq!(tenant, Some(Route::TenantPolicies("acme")));
        let policy = Route::parse("/admin/v1/policies/acme/gold");
        assert_eq!(policy, Some(Route::Policy("acme", "gold")));
        assert_eq!(Route::parse("/admin/v1/reload"), Some(Route::Reload));
        assert_eq!(Route::parse("/admin/v1/dry-run"), Some(Route::DryRun));
        let circuits = Route::parse("/admin/v1/circuits/acme");
        assert_eq!(circuits, Some(Route::Circuits("acme")));
        for path in [
            "/admin/v1/",
            "/admin/v1/policies/",
            "/admin/v1/policies//gold",
            "/admin/v1/policies/acme/gold/x",
            "/admin/v1/circuits",
            "/admin/v1/tenants/acme/shard",
            "/admin/v2/policies",
            "/v1/decide",
        ] {
            assert_eq!(Route::parse(path), None, "{path}");
        }
    }

    #[test]
    fn an_elapsed_open_circuit_reads_half_open() {
        let open = BreakerState::Open { until_ns: 100 };
        assert_eq!(effective_state(open, 99), "open");
        assert_eq!(effective_state(open, 100), "half_open");
        assert_eq!(effective_state(BreakerState::Closed, 0), "closed");
    }

    /// A tenant token never reads another tenant's problems, only how many there are.
    #[test]
    fn problems_are_scoped() {
        let problem = |source: &str| PolicyError {
            source: source.into(),
            path: "$".into(),
            message: "bad".into(),
        };
        let problems = [
            problem("acme/a.json"),
            problem("globex/b.json"),
            problem(""),
        ];
        let acme = scoped_problems(&Scope::Tenant("acme".into()), &problems);
        assert_eq!(acme.len(), 2);
        assert_eq!(acme[0], "acme/a.json: $: bad");
        assert!(acme[1].starts_with("2 problem(s) outside"), "{}", acme[1]);
        assert_eq!(scoped_problems(&Scope::All, &problems).len(), 3);
    }
}
