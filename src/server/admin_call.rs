//! An admin call placed where it must run (`admin::placement`), for every transport:
//! reads anywhere, owner-state calls (dry-run, circuits) on the tenant's owner shard, and
//! writes and reloads on glommio's blocking pool, since they fsync.
//!
//! The token is checked first, on the accepting shard, before `placement` decodes a body,
//! before a copy of the body is queued to the blocking pool or handed to another shard:
//! an unauthenticated request costs one constant-time comparison and is answered 401 by
//! the shard it reached. A write (put, delete, reload) then takes one unit of the token's
//! `admin.writes_per_second` or is answered 429. The admin API checks the token again
//! where the request runs (its scope decides what may be touched); that second check is
//! cheap and keeps `Admin::handle` safe for any caller.

use std::rc::Rc;

use super::access::Queued;
use super::handoff::{Job, OwnedHeaders, Route};
use super::shard::{Ids, ShardCtx};
use crate::admin::{placement, AdminRequest, AdminResponse, Placement, ShardView};
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
            Placement::Blocking => self.admin_blocking(req, now).await,
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
        let method = match req.method {
            "GET" => "GET",
            "PUT" => "PUT",
            "POST" => "POST",
            "DELETE" => "DELETE",
            _ => "OTHER",
        };
        let (path, query) = (req.path.to_owned(), req.query.map(str::to_owned));
        let authorization = req.authorization.map(str::to_owned);
        let body = req.body.to_vec();
        self.shared.access.queued(Queued::Blocking);
        glommio::executor()
            .spawn_blocking(move || {
                let admin = shared.admin.as_ref().expect("admin configured");
                let (_, table) = shared.handle.current();
                let areq = AdminRequest {
                    method,
                    path: &path,
                    query: query.as_deref(),
                    authorization: authorization.as_deref(),
                    body: &body,
                };
                let view = ShardView {
                    table: &table,
                    state: None,
                    now,
                };
                admin.handle(areq, view)
            })
            .await
    }
}
