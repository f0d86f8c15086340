//! The admin side (SPEC §8): bearer-token scopes, the on-disk policy store, distribution of
//! new routing tables to the shards, the reload watcher, and the `/admin/v1/…` routes.
//!
//! Transport-agnostic: a request is (method, path, query, `Authorization` value, body) and
//! the answer is (HTTP status, JSON body). HTTP and NATS (`beamline.router.v1.admin.*`)
//! map onto `Admin::handle`; `placement` tells them where a request must run.
//!
//! Module map:
//! - `auth`: `Tokens` (constant-time bearer check) → `Scope` (all tenants, or one) and
//!   `Permissions` (`admin`, `results`, `decide`), shared with the data-plane routes.
//! - `store`: `PolicyStore`, `DIR/<tenant>/<policy>.json` with atomic, fsynced writes
//!   that can be rolled back; every write is serialised by the store's mutex.
//! - `table`: `TableHandle` (the published table and its generation), `ShardTable` (a
//!   shard's cached copy, adopted between requests), and `reload` / `put_policy` /
//!   `delete_policy`, which persist and publish under the store's mutex.
//! - `watch`: a background thread reloading on SIGHUP and on file changes (polling).
//! - `api`: routing, scope checks and the JSON answers.
//!
//! Invariant: the published table is always one that
//! `RoutingTable::load_dir_per_document` built from the directory as it was under the
//! store's mutex (plus, for each document that did not load, its last good version); the
//! scan lists and stats every file and reuses only the parses of files whose stamps did not
//! change. A write whose own document would not load, or that would make the table as a
//! whole fail, is undone on disk and never published.

mod api;
mod auth;
mod reply;
mod store;
mod table;
mod watch;

pub use api::{
    cluster_written, conflict, is_cluster_write, placement, Admin, AdminRequest, ClusterWrite,
    Placement, ShardView,
};
pub(crate) use auth::shown;
pub use auth::{
    token_length_problem, AuthError, Grant, Permission, Permissions, Scope, TokenConfigError,
    TokenSpec, Tokens, AUTH_FAILURE_REASONS, TOKENS_MAX, TOKEN_BYTES_MAX, TOKEN_BYTES_MIN,
};
pub use reply::{AdminResponse, PROBLEMS_SHOWN_MAX};
pub use store::{Change, PolicyStore, PutOutcome, StoreError, StoreWriter, TEMP_NAMES_MAX};
pub use table::{
    delete_policy, log_invalid, put_policy, reload, reload_all, reload_with, PublishError,
    Published, ReloadReport, ShardTable, TableHandle, Versioned,
};
pub use watch::{WatchStats, Watcher, WATCH_INTERVAL_MS};
