//! An admin call placed where it must run (`admin::placement`), for every transport:
//! reads anywhere, owner-state calls (dry-run, circuits) on the tenant's owner shard, and
//! writes and reloads on glommio's blocking pool, since they fsync. On a cluster node a
//! policy put or delete goes to the policy bucket first (`admin_cluster_write`).
//!
//! The token is checked first, on the accepting shard, before `placement` decodes a body,
//! before a copy of the body is queued to the blocking pool or handed to another shard:
//! an unauthenticated request costs one constant-time comparison and is answered 401 by
//! the shard it reached. A write (put, delete, reload) then takes one unit of the token's
//! `admin.writes_per_second` or is answered 429. The admin API checks the token again
//! where the request runs (its scope decides what may be touched); that second check is
//! cheap and keeps `Admin::handle` safe for any caller.

use std::rc::Rc;
use std::sync::Arc;

use super::access::Queued;
use super::handoff::{Job, OwnedHeaders, Route};
use super::shard::{Ids, ShardCtx};
use crate::admin::{
    cluster_written, conflict, is_cluster_write, placement, AdminRequest, AdminResponse, Placement,
    ShardView,
};
use crate::cluster::{ClusterNode, WriteError};
use crate::contract::ErrorCode;
use crate::decide::Now;

/// Whether a request changes the store: put, delete, reload.
fn is_write(req: &AdminRequest<'_>) -> bool {
    matches!(req.method, "PUT" | "DELETE")
        || (req.method == "POST" && req.path.trim_end_matches('/') == "/admin/v1/reload")
}

impl ShardCtx {
    /// Answers one admin request; the admin API must be configured.
    pub async fn admin_call(self: &Rc<Self>, req: AdminRequest<'_>, now: Now) -> AdminResponse {
        let access = &self.shared.access;
        let grant = match access.admin_token(req.authorization, now.mono_ns) {
            Ok(grant) => grant,
            Err(err) => return AdminResponse::auth(&err),
        };
        if is_write(&req) {
            if let Err(retry_after_s) = access.admin_write(grant.index, now.mono_ns) {
                return AdminResponse::write_rate_limited(retry_after_s);
            }
        }
        let answer = self.admin_placed(req, now).await;
        if answer.status == 403 {
            access.admin_forbidden(now.mono_ns);
        }
        answer
    }

    async fn admin_placed(self: &Rc<Self>, req: AdminRequest<'_>, now: Now) -> AdminResponse {
        let admin = self.shared.admin.as_ref().expect("admin API configured");
        match placement(&req) {
            Placement::Anywhere => {
                let table = self.table.borrow();
                let view = ShardView {
                    table: table.table(),
                    state: None,
                    now,
                };
                admin.handle(req, view)
            }
            Placement::Blocking => match &self.shared.cluster {
                Some(cluster) if is_cluster_write(&req) => {
                    self.admin_cluster_write(req, Arc::clone(cluster)).await
                }
                _ => self.admin_blocking(req, now).await,
            },
            Placement::OwnerShard(tenant) => {
                let owner = self.shared.partition.shard_of(&tenant);
                let route = if req.method == "POST" {
                    Route::AdminDryRun
                } else {
                    Route::AdminCircuits
                };
                let job = Job {
                    route,
                    tenant: tenant.as_ref().into(),
                    path: req.path.into(),
                    body: req.body.to_vec(),
                    headers: OwnedHeaders {
                        authorization: req.authorization.map(Into::into),
                        ..OwnedHeaders::default()
                    },
                };
                let reply = if owner == self.id {
                    self.admin_here(&job, now)
                } else {
                    self.shared.access.queued(Queued::Handoff);
                    self.hand_off(owner, job, Ids::default()).await
                };
                AdminResponse::raw(reply.status, reply.body)
            }
        }
    }

    /// Writes and reloads touch the disk (fsync): run them on glommio's blocking pool so
    /// the shard keeps serving.
    async fn admin_blocking(&self, req: AdminRequest<'_>, now: Now) -> AdminResponse {
        let shared = self.shared.clone();
        let req = OwnedRequest::from(&req);
        self.shared.access.queued(Queued::Blocking);
        glommio::executor()
            .spawn_blocking(move || {
                let admin = shared.admin.as_ref().expect("admin configured");
                let (_, table) = shared.handle.current();
                let view = ShardView {
                    table: &table,
                    state: None,
                    now,
                };
                admin.handle(req.borrowed(), view)
            })
            .await
    }

    /// A policy put or delete on a cluster node: checked as a local write (on the
    /// blocking pool: a document can be a MiB of JSON), written to the bucket with
    /// compare-and-set over this shard's NATS client, then applied to this node's mirror
    /// at once, so the writer reads its write; the other nodes get it through their watch.
    async fn admin_cluster_write(
        &self,
        req: AdminRequest<'_>,
        cluster: Arc<ClusterNode>,
    ) -> AdminResponse {
        let shared = self.shared.clone();
        let owned = OwnedRequest::from(&req);
        self.shared.access.queued(Queued::Blocking);
        let checked = glommio::executor()
            .spawn_blocking(move || {
                let admin = shared.admin.as_ref().expect("admin configured");
                admin.check_cluster_write(&owned.borrowed())
            })
            .await;
        let write = match checked {
            Ok(write) => write,
            Err(answer) => return answer,
        };
        let (tenant, id) = (&write.tenant, &write.policy_id);
        let Some(client) = self.nats.get() else {
            let message = "this node has no NATS client for the policy bucket";
            return AdminResponse::error_status(503, ErrorCode::Internal, message);
        };
        let written = match cluster.write(client, &write).await {
            Ok(written) => written,
            Err(WriteError::Conflict { expected, current }) => {
                return conflict(tenant, id, expected, current)
            }
            Err(WriteError::NotFound) => {
                let message = format!("tenant {tenant} has no policy '{id}'");
                return AdminResponse::error_status(404, ErrorCode::PolicyNotFound, &message);
            }
            Err(err @ (WriteError::NotSynced | WriteError::Bucket(_))) => {
                log::warn!("admin: policy {tenant}/{id} not written: {err}");
                return AdminResponse::error_status(503, ErrorCode::Internal, &err.to_string());
            }
        };
        let event = ClusterNode::applied_event(&write, written.revision);
        let node = Arc::clone(&cluster);
        let generation = glommio::executor()
            .spawn_blocking(move || node.mirror.apply(&[event]))
            .await;
        let verb = if write.body.is_some() {
            "put"
        } else {
            "deleted"
        };
        log::info!(
            "admin: {verb} policy {tenant}/{id} at bucket revision {}, table generation \
             {generation}",
            written.revision
        );
        cluster_written(written.created, tenant, id, generation, written.revision)
    }
}

/// An admin request's parts, owned, to cross to the blocking pool.
struct OwnedRequest {
    method: &'static str,
    path: String,
    query: Option<String>,
    authorization: Option<String>,
    body: Vec<u8>,
}

impl OwnedRequest {
    fn from(req: &AdminRequest<'_>) -> Self {
        OwnedRequest {
            method: match req.method {
                "GET" => "GET",
                "PUT" => "PUT",
                "POST" => "POST",
                "DELETE" => "DELETE",
                _ => "OTHER",
            },
            path: req.path.to_owned(),
            query: req.query.map(str::to_owned),
            authorization: req.authorization.map(str::to_owned),
            body: req.body.to_vec(),
        }
    }

    fn borrowed(&self) -> AdminRequest<'_> {
        AdminRequest {
            method: self.method,
            path: &self.path,
            query: self.query.as_deref(),
            authorization: self.authorization.as_deref(),
            body: &self.body,
        }
    }
}
