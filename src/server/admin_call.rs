//! An admin call placed where it must run (`admin::placement`), for every transport:
//! reads anywhere, owner-state calls (dry-run, circuits) on the tenant's owner shard, and
//! writes and reloads on glommio's blocking pool, since they fsync.

use std::rc::Rc;

use super::handoff::{Job, OwnedHeaders, Route};
use super::shard::{Ids, ShardCtx};
use crate::admin::{placement, AdminRequest, AdminResponse, Placement, ShardView};
use crate::decide::Now;

impl ShardCtx {
    /// Answers one admin request; the admin API must be configured.
    pub async fn admin_call(self: &Rc<Self>, req: AdminRequest<'_>, now: Now) -> AdminResponse {
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
                    self.hand_off(owner, job, Ids::default()).await
                };
                AdminResponse {
                    status: reply.status,
                    body: reply.body,
                    allow: None,
                }
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
