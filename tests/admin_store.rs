//! The admin side over a real directory: the policy store's atomic writes and rollback,
//! table distribution to shards, the reload watcher (file changes and SIGHUP), and the
//! `/admin/v1/…` routes end to end. Each test works in its own temp directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shardline::admin::*;
use shardline::contract::{decode_decide, Headers};
use shardline::decide::breaker::BreakerState;
use shardline::decide::{decide, Now, Observed, Outcome, ShardState, StateConfig};
use shardline::policy::RoutingTable;

const BASIC: &str = r#"{"version":"1.0","providers":[
    {"name":"openai","weight":70},{"name":"anthropic","weight":30}]}"#;
const BASIC_V2: &str = r#"{"version":"2.0","providers":[{"name":"mistral","weight":100}]}"#;
const BREAKER: &str = r#"{"version":"1.0","providers":[
    {"name":"openai","weight":50},{"name":"anthropic","weight":50}],
    "circuit_breaker":{"enabled":true,"failure_threshold":1,"timeout_ms":1000}}"#;
const LIMITED: &str = r#"{"version":"1.0","providers":[
    {"name":"openai","weight":50},{"name":"anthropic","weight":50}],
    "sticky":{"enabled":true,"session_key":"user_id","ttl":"10m"},
    "rate_limit":{"enabled":true,"requests_per_second":1,"burst":1}}"#;
const INVALID: &str = r#"{"version":"1.0","providers":[{"name":"openai","wieght":70}]}"#;

const ROOT: &str = "root-token-0123456789abcdef";
const ACME: &str = "acme-token-0123456789abcdef";
const MS: u64 = 1_000_000;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let path = std::env::temp_dir().join(format!("shardline-admin-{pid}-{name}-{n}"));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.0.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Names starting with a dot anywhere in the tree (temp and backup files).
fn dot_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            found.push(name);
        } else if entry.path().is_dir() {
            found.extend(dot_files(&entry.path()));
        }
    }
    found
}

fn load(dir: &Path) -> RoutingTable {
    RoutingTable::load_dir(dir).expect("directory loads")
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------
// The store

/// A put creates the tenant directory and the file, byte for byte, and leaves no temp file.
#[test]
fn put_creates_dirs_and_files_atomically() {
    let dir = TempDir::new("put");
    let store = PolicyStore::open(dir.path()).unwrap();
    let outcome = store.put("acme", "gold", BASIC.as_bytes()).unwrap();
    assert!(outcome.created);
    let path = dir.path().join("acme/gold.json");
    assert_eq!(fs::read(&path).unwrap(), BASIC.as_bytes());
    assert_eq!(
        store.get("acme", "gold").unwrap().as_deref(),
        Some(BASIC.as_bytes())
    );
    let again = store.put("acme", "gold", BASIC_V2.as_bytes()).unwrap();
    assert!(!again.created);
    assert_eq!(fs::read(&path).unwrap(), BASIC_V2.as_bytes());
    assert!(
        dot_files(dir.path()).is_empty(),
        "{:?}",
        dot_files(dir.path())
    );
    assert_eq!(store.get("acme", "silver").unwrap(), None);
    assert_eq!(store.get("nobody", "gold").unwrap(), None);
}

/// An invalid document is refused with every problem, and the stored one is untouched.
#[test]
fn invalid_put_leaves_the_old_file() {
    let dir = TempDir::new("invalid");
    let store = PolicyStore::open(dir.path()).unwrap();
    store.put("acme", "gold", BASIC.as_bytes()).unwrap();
    let err = store.put("acme", "gold", INVALID.as_bytes()).unwrap_err();
    let StoreError::Invalid(problems) = err else {
        panic!("expected Invalid, got {err:?}");
    };
    assert!(
        problems.iter().any(|p| p.path.contains("wieght")),
        "{problems:?}"
    );
    let stored = fs::read(dir.path().join("acme/gold.json")).unwrap();
    assert_eq!(stored, BASIC.as_bytes());
    let big = vec![b' '; shardline::policy::POLICY_FILE_BYTES_MAX + 1];
    let err = store.put("acme", "gold", &big).unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err:?}");
    assert!(store.put("acme", "new", b"not json").is_err());
    assert!(!dir.path().join("acme/new.json").exists());
    assert!(dot_files(dir.path()).is_empty());
}

#[test]
fn delete_removes_the_file() {
    let dir = TempDir::new("delete");
    let store = PolicyStore::open(dir.path()).unwrap();
    store.put("acme", "gold", BASIC.as_bytes()).unwrap();
    assert!(store.delete("acme", "gold").unwrap());
    assert!(!dir.path().join("acme/gold.json").exists());
    assert!(!store.delete("acme", "gold").unwrap());
    assert!(!store.delete("nobody", "gold").unwrap());
    assert!(dot_files(dir.path()).is_empty());
}

/// No id can name a path outside `DIR/<tenant>/<id>.json`.
#[test]
fn traversal_is_rejected() {
    let dir = TempDir::new("traversal");
    let store_dir = dir.path().join("policies");
    fs::create_dir(&store_dir).unwrap();
    let store = PolicyStore::open(&store_dir).unwrap();
    let bytes = BASIC.as_bytes();
    for tenant in ["..", ".", "../acme", "a/b", ".hidden", "", "acme\0"] {
        let err = store.put(tenant, "gold", bytes).unwrap_err();
        assert!(
            matches!(err, StoreError::TenantId(_)),
            "{tenant:?}: {err:?}"
        );
        assert!(store.get(tenant, "gold").is_err() && store.delete(tenant, "gold").is_err());
    }
    for id in [
        "..",
        ".",
        "../../escape",
        "x/y",
        ".gold",
        "",
        "gold.json/..",
    ] {
        let err = store.put("acme", id, bytes).unwrap_err();
        assert!(matches!(err, StoreError::PolicyId(_)), "{id:?}: {err:?}");
        assert!(store.get("acme", id).is_err() && store.delete("acme", id).is_err());
    }
    let entries: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "only the store directory exists");
    assert_eq!(fs::read_dir(&store_dir).unwrap().count(), 0);
}

/// What the store writes is what a fresh load of the directory reads.
#[test]
fn a_new_load_sees_the_put() {
    let dir = TempDir::new("persist");
    let store = PolicyStore::open(dir.path()).unwrap();
    store.put("acme", "gold", BASIC.as_bytes()).unwrap();
    store.put("globex", "default", BASIC_V2.as_bytes()).unwrap();
    let table = load(dir.path());
    let gold = table.policy(table.lookup("acme", "gold").unwrap());
    assert_eq!(gold.providers.len(), 2);
    assert_eq!(&*gold.providers[0].name, "openai");
    let globex = table.policy(table.lookup("globex", "default").unwrap());
    assert_eq!(&*globex.version, "2.0");
    let all = store.list(&Scope::All).unwrap();
    let expected = [("acme", "gold"), ("globex", "default")];
    let expected: Vec<_> = expected.map(|(t, p)| (t.to_owned(), p.to_owned())).into();
    assert_eq!(all, expected);
    let acme = store.list(&Scope::Tenant("acme".into())).unwrap();
    assert_eq!(acme, expected[..1]);
}

// ---------------------------------------------------------------------------------------
// Distribution: TableHandle, ShardTable, reload / put / delete with rollback

/// A shard sees nothing new until a publish; then it adopts the table once, and a breaker
/// that was open stays open across the swap.
#[test]
fn shard_table_adopts_and_keeps_breakers() {
    let dir = TempDir::new("shard");
    dir.write("acme/gold.json", BREAKER);
    let store = PolicyStore::open(dir.path()).unwrap();
    let handle = TableHandle::new(load(dir.path()));
    let mut shard = ShardTable::new(handle.clone());
    let mut state = ShardState::new(shard.table(), StateConfig::default(), 0);
    assert!(!shard.refresh(&mut state, 0), "nothing published yet");
    let failure = Observed {
        outcome: Some(Outcome::Failure),
        latency_ms: None,
        cost: None,
    };
    let effect = state.record_result(shard.table(), "acme", "openai", failure, MS);
    assert_eq!(effect.opened, 1);

    let published = put_policy(&handle, &store, "acme", "aaa", BASIC.as_bytes()).unwrap();
    assert!(published.created);
    assert_eq!(published.report.generation, 2);
    assert_eq!(handle.generation(), 2);
    assert!(shard.refresh(&mut state, 2 * MS));
    assert_eq!(shard.generation(), 2);
    assert!(!shard.refresh(&mut state, 3 * MS), "adopted once");
    let slot = shard.table().lookup("acme", "gold").unwrap();
    let breaker = state.policy(slot).providers[0].breaker.state();
    assert!(matches!(breaker, BreakerState::Open { .. }), "{breaker:?}");
}

/// Another tenant's broken document does not stop a write (it is reported and left out);
/// a write whose own document does not load is undone, byte for byte, and nothing is
/// published; a reload of the same directory is idempotent.
#[test]
fn rejected_changes_roll_back() {
    let dir = TempDir::new("rollback");
    dir.write("acme/gold.json", BASIC);
    let store = PolicyStore::open(dir.path()).unwrap();
    let handle = TableHandle::new(load(dir.path()));
    dir.write("globex/broken.json", "{");

    let published = put_policy(&handle, &store, "acme", "gold", BASIC_V2.as_bytes()).unwrap();
    assert_eq!(published.report.generation, 2);
    let broken: Vec<_> = published.report.invalid.iter().map(|b| &b.policy).collect();
    assert_eq!(
        broken,
        ["broken"],
        "the other tenant's document is reported"
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("acme/gold.json")).unwrap(),
        BASIC_V2
    );
    // The written document itself does not load: refused before anything changes.
    let err = put_policy(&handle, &store, "acme", "new", b"{").unwrap_err();
    assert!(!matches!(err, PublishError::Rejected(_)), "{err:?}");
    assert!(!dir.path().join("acme/new.json").exists());
    assert_eq!(handle.generation(), 2, "nothing more was published");
    assert!(
        dot_files(dir.path()).is_empty(),
        "{:?}",
        dot_files(dir.path())
    );

    fs::remove_file(dir.path().join("globex/broken.json")).unwrap();
    let report = reload(&handle, &store).unwrap();
    assert_eq!(
        (report.generation, report.changed, report.invalid.len()),
        (2, false, 0),
        "same policies, nothing invalid"
    );
    dir.write("acme/silver.json", BASIC_V2);
    let report = reload(&handle, &store).unwrap();
    assert_eq!(
        (report.generation, report.policies, report.changed),
        (3, 2, true)
    );
    let deleted = delete_policy(&handle, &store, "acme", "silver")
        .unwrap()
        .unwrap();
    assert_eq!(deleted.report.generation, 4);
    assert_eq!(
        delete_policy(&handle, &store, "acme", "silver").unwrap(),
        None
    );
}

// ---------------------------------------------------------------------------------------
// The watcher

/// A file written behind the API's back is loaded within a few intervals; a broken one is
/// reported as invalid and left out, and the table that serves does not change.
#[test]
fn watcher_reloads_on_file_changes() {
    let dir = TempDir::new("watch");
    dir.write("acme/gold.json", BASIC);
    let store = Arc::new(PolicyStore::open(dir.path()).unwrap());
    let handle = TableHandle::new(load(dir.path()));
    let interval = Duration::from_millis(50);
    let watcher = Watcher::spawn(handle.clone(), Arc::clone(&store), interval).unwrap();

    dir.write("acme/silver.json", BASIC_V2);
    wait_until("the new policy", || {
        handle.current().1.lookup("acme", "silver").is_some()
    });
    assert!(watcher.stats().reloads_ok.load(Ordering::Relaxed) >= 1);
    let generation = handle.generation();

    dir.write("acme/broken.json", "{");
    wait_until("the broken document reported", || {
        handle
            .invalid()
            .iter()
            .any(|bad| (bad.tenant.as_str(), bad.policy.as_str()) == ("acme", "broken"))
    });
    assert_eq!(handle.generation(), generation, "the serving table stays");
    let (_, table) = handle.current();
    assert!(table.lookup("acme", "gold").is_some() && table.lookup("acme", "broken").is_none());
    watcher.stop();
}

/// SIGHUP reloads even when no file changed. The flag is registered by `spawn`, before
/// the signal is raised, so the signal cannot terminate the test process.
#[test]
fn watcher_reloads_on_sighup() {
    let dir = TempDir::new("sighup");
    dir.write("acme/gold.json", BASIC);
    let store = Arc::new(PolicyStore::open(dir.path()).unwrap());
    let handle = TableHandle::new(load(dir.path()));
    let interval = Duration::from_millis(50);
    let watcher = Watcher::spawn(handle.clone(), store, interval).unwrap();
    std::thread::sleep(3 * interval);
    assert_eq!(
        watcher.stats().reloads_ok.load(Ordering::Relaxed),
        0,
        "nothing changed"
    );
    signal_hook::low_level::raise(signal_hook::consts::SIGHUP).unwrap();
    wait_until("a SIGHUP reload", || {
        watcher.stats().reloads_ok.load(Ordering::Relaxed) >= 1
    });
    assert_eq!(
        handle.generation(),
        1,
        "same policies: nothing new published"
    );
    watcher.stop();
}

// ---------------------------------------------------------------------------------------
// The API

struct Fixture {
    dir: TempDir,
    admin: Admin,
}

impl Fixture {
    fn new(name: &str) -> Self {
        let dir = TempDir::new(name);
        dir.write("acme/default.json", BASIC);
        dir.write("globex/default.json", BASIC);
        let store = Arc::new(PolicyStore::open(dir.path()).unwrap());
        let handle = TableHandle::new(load(dir.path()));
        let tokens = Tokens::new(&[(ROOT, None), (ACME, Some("acme"))]).unwrap();
        let admin = Admin::new(tokens, store, handle);
        Fixture { dir, admin }
    }

    /// A request answered from the published table with no shard state.
    fn call(&self, token: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
        let (_, table) = self.admin.table().current();
        let view = ShardView {
            table: &table,
            state: None,
            now: now(0),
        };
        self.call_on(token, method, path, body, view)
    }

    fn call_on(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: &str,
        view: ShardView<'_>,
    ) -> (u16, Value) {
        let auth = format!("Bearer {token}");
        let req = AdminRequest {
            method,
            path,
            query: None,
            authorization: (!token.is_empty()).then_some(&*auth),
            body: body.as_bytes(),
        };
        let reply = self.admin.handle(req, view);
        let value = serde_json::from_slice(&reply.body).expect("a JSON body");
        (reply.status, value)
    }
}

fn now(ms: u64) -> Now {
    Now {
        mono_ns: ms * MS,
        unix_ms: 1_700_000_000_000 + ms,
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// Create, read, replace, list and delete a policy through the routes.
#[test]
fn api_crud() {
    let f = Fixture::new("crud");
    let path = "/admin/v1/policies/acme/gold";
    let (status, v) = f.call(ROOT, "PUT", path, BASIC);
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        (v["ok"].as_bool(), v["generation"].as_u64()),
        (Some(true), Some(2))
    );
    assert_eq!(
        (&v["tenant"], &v["policy_id"]),
        (&"acme".into(), &"gold".into())
    );
    let (status, v) = f.call(ROOT, "GET", path, "");
    assert_eq!(
        (status, v.clone()),
        (200, serde_json::from_str(BASIC).unwrap())
    );
    let (status, v) = f.call(ROOT, "PUT", path, BASIC_V2);
    assert_eq!((status, v["generation"].as_u64()), (200, Some(3)));

    let (status, v) = f.call(ROOT, "GET", "/admin/v1/policies/acme", "");
    assert_eq!(status, 200);
    let rows = v["policies"].as_array().unwrap();
    let ids: Vec<_> = rows
        .iter()
        .map(|r| r["policy_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["default", "gold"]);
    assert_eq!(
        (&rows[1]["version"], &rows[1]["providers"]),
        (&"2.0".into(), &1.into())
    );

    let (status, v) = f.call(ROOT, "DELETE", path, "");
    assert_eq!((status, v["generation"].as_u64()), (200, Some(4)));
    let (status, v) = f.call(ROOT, "GET", path, "");
    assert_eq!((status, code(&v)), (404, "policy_not_found"));
    let (status, v) = f.call(ROOT, "DELETE", path, "");
    assert_eq!((status, code(&v)), (404, "policy_not_found"));
    assert!(!f.dir.path().join("acme/gold.json").exists());
}

/// An invalid document answers 400 with every problem as "path: message"; the stored
/// document and the table stay.
#[test]
fn api_invalid_put_lists_problems() {
    let f = Fixture::new("problems");
    let path = "/admin/v1/policies/acme/default";
    let (status, v) = f.call(ROOT, "PUT", path, INVALID);
    assert_eq!((status, code(&v)), (400, "invalid_request"), "{v}");
    let problems = v["error"]["details"]["problems"].as_array().unwrap();
    assert!(!problems.is_empty());
    assert!(
        problems
            .iter()
            .all(|p| p.as_str().unwrap().starts_with("$")),
        "{problems:?}"
    );
    assert_eq!(v["ok"], false);
    let stored = fs::read_to_string(f.dir.path().join("acme/default.json")).unwrap();
    assert_eq!(stored, BASIC);
    assert_eq!(f.admin.table().generation(), 1);
    let (status, v) = f.call(ROOT, "PUT", "/admin/v1/policies/acme/..", BASIC);
    assert_eq!((status, code(&v)), (400, "invalid_request"));
    let big = " ".repeat(shardline::policy::POLICY_FILE_BYTES_MAX + 1);
    let (status, v) = f.call(ROOT, "PUT", path, &big);
    assert_eq!((status, code(&v)), (413, "payload_too_large"));
}

#[test]
fn api_authentication_and_routing() {
    let f = Fixture::new("auth");
    let (status, v) = f.call("", "GET", "/admin/v1/policies", "");
    assert_eq!((status, code(&v)), (401, "unauthorized"));
    let (status, v) = f.call(
        "wrong-token-0123456789abcd",
        "GET",
        "/admin/v1/policies",
        "",
    );
    assert_eq!((status, code(&v)), (401, "unauthorized"));
    let (status, v) = f.call("", "GET", "/admin/v1/nothing", "");
    assert_eq!(status, 401, "routes are not probed anonymously: {v}");
    let (status, v) = f.call(ROOT, "GET", "/admin/v1/nothing", "");
    assert_eq!((status, code(&v)), (404, "invalid_request"));
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/admin/v1/nothing"));
    let (_, table) = f.admin.table().current();
    let view = ShardView {
        table: &table,
        state: None,
        now: now(0),
    };
    let auth = format!("Bearer {ROOT}");
    let req = AdminRequest {
        method: "DELETE",
        path: "/admin/v1/reload",
        query: None,
        authorization: Some(&auth),
        body: b"",
    };
    let reply = f.admin.handle(req, view);
    assert_eq!((reply.status, reply.allow), (405, Some("POST")));
}

/// A tenant token sees and changes only its own tenant; every other tenant is 403.
#[test]
fn api_scope_isolation() {
    let f = Fixture::new("scope");
    let (status, v) = f.call(ACME, "GET", "/admin/v1/policies", "");
    assert_eq!(status, 200);
    let tenants: Vec<_> = v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["tenant"])
        .collect();
    assert_eq!(tenants, [&Value::from("acme")]);
    let (_, v) = f.call(ROOT, "GET", "/admin/v1/policies", "");
    assert_eq!(v["policies"].as_array().unwrap().len(), 2);

    let forbidden = [
        ("GET", "/admin/v1/policies/globex", ""),
        ("GET", "/admin/v1/policies/globex/default", ""),
        ("PUT", "/admin/v1/policies/globex/default", BASIC_V2),
        ("PUT", "/admin/v1/policies/globex/new", BASIC),
        ("DELETE", "/admin/v1/policies/globex/default", ""),
        ("GET", "/admin/v1/circuits/globex", ""),
        ("POST", "/admin/v1/reload", ""),
        (
            "POST",
            "/admin/v1/dry-run",
            &decide_body("globex", "default"),
        ),
    ];
    for (method, path, body) in forbidden {
        let (status, v) = f.call(ACME, method, path, body);
        assert_eq!((status, code(&v)), (403, "forbidden"), "{method} {path}");
    }
    let stored = fs::read_to_string(f.dir.path().join("globex/default.json")).unwrap();
    assert_eq!(stored, BASIC);
    assert!(!f.dir.path().join("globex/new.json").exists());
    let (status, _) = f.call(ACME, "PUT", "/admin/v1/policies/acme/gold", BASIC);
    assert_eq!(status, 201);
    let (status, _) = f.call(ACME, "GET", "/admin/v1/policies/acme/gold", "");
    assert_eq!(status, 200);
}

/// Another tenant's broken file does not refuse a tenant token's put, and the answer does
/// not name the other tenant's document.
#[test]
fn api_hides_other_tenants_problems() {
    let f = Fixture::new("hidden");
    f.dir.write("globex/broken.json", "{");
    let (status, v) = f.call(ACME, "PUT", "/admin/v1/policies/acme/gold", BASIC);
    assert_eq!(status, 201, "{v}");
    assert!(!v.to_string().contains("globex"), "{v}");
    assert!(f.dir.path().join("acme/gold.json").exists());
}

/// Reload answers the generation; a document that does not load is listed with its
/// problems and keeps its last good version, while the rest of the table is published.
#[test]
fn api_reload() {
    let f = Fixture::new("reload");
    let (status, v) = f.call(ROOT, "POST", "/admin/v1/reload", "");
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["generation"].as_u64(), v["policies"].as_u64()),
        (Some(1), Some(2))
    );
    f.dir.write("acme/gold.json", BASIC_V2);
    let (_, v) = f.call(ROOT, "POST", "/admin/v1/reload", "");
    assert_eq!(
        (v["generation"].as_u64(), v["policies"].as_u64()),
        (Some(2), Some(3))
    );
    f.dir.write("acme/gold.json", INVALID);
    let (status, v) = f.call(ROOT, "POST", "/admin/v1/reload", "");
    assert_eq!(status, 200, "{v}");
    let invalid = v["invalid"].as_array().unwrap();
    assert_eq!(invalid.len(), 1, "{v}");
    assert_eq!(
        (
            &invalid[0]["tenant"],
            &invalid[0]["policy_id"],
            &invalid[0]["kept"]
        ),
        (&json!("acme"), &json!("gold"), &json!(true)),
        "{v}"
    );
    let problem = invalid[0]["problems"][0].as_str().unwrap();
    assert!(problem.starts_with("acme/gold.json: $"), "{problem}");
    assert_eq!(
        f.admin.table().generation(),
        2,
        "the good version still serves"
    );
}

fn decide_body(tenant: &str, policy: &str) -> String {
    format!(
        r#"{{"request_id":"r-1","tenant_id":"{tenant}","policy_id":"{policy}",
            "task":{{"type":"chat","payload_ref":"s3://x"}},"metadata":{{"user_id":"u-1"}}}}"#
    )
}

/// A dry-run decides against a copy: it writes no sticky session and spends no token of
/// the real state, however often it runs.
#[test]
fn api_dry_run_changes_nothing() {
    let f = Fixture::new("dry");
    let (status, _) = f.call(ROOT, "PUT", "/admin/v1/policies/acme/limited", LIMITED);
    assert_eq!(status, 201);
    let (_, table) = f.admin.table().current();
    let mut state = ShardState::new(&table, StateConfig::default(), 0);
    let body = decide_body("acme", "limited");
    for _ in 0..3 {
        let view = ShardView {
            table: &table,
            state: Some(&state),
            now: now(1),
        };
        let (status, v) = f.call_on(ACME, "POST", "/admin/v1/dry-run", &body, view);
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["decision"]["reason"], "weighted");
        assert!(
            v["decision"]["explanation"].is_array(),
            "explain is forced on"
        );
    }
    assert_eq!(state.sticky_len(), 0);
    let req = decode_decide(body.as_bytes(), &Headers::default()).unwrap();
    assert!(
        decide(&table, &mut state, &req, now(1)).is_ok(),
        "the burst token is unspent"
    );
    assert_eq!(state.sticky_len(), 1);
    let err = decide(&table, &mut state, &req, now(1)).unwrap_err();
    assert_eq!(err.code().as_str(), "rate_limited");

    let view = ShardView {
        table: &table,
        state: Some(&state),
        now: now(1),
    };
    let (status, v) = f.call_on(ROOT, "POST", "/admin/v1/dry-run", "{}", view);
    assert_eq!((status, code(&v)), (400, "invalid_request"));
    let (status, v) = f.call(ROOT, "POST", "/admin/v1/dry-run", &body);
    assert_eq!(
        (status, code(&v)),
        (500, "internal"),
        "no owner state given"
    );
}

/// Circuits show the owner shard's breakers, and a dry-run avoids an open one.
#[test]
fn api_circuits_and_dry_run_see_open_breakers() {
    let f = Fixture::new("circuits");
    let (status, _) = f.call(ROOT, "PUT", "/admin/v1/policies/acme/guarded", BREAKER);
    assert_eq!(status, 201);
    let (_, table) = f.admin.table().current();
    let mut state = ShardState::new(&table, StateConfig::default(), 0);
    let failure = Observed {
        outcome: Some(Outcome::Failure),
        latency_ms: None,
        cost: None,
    };
    state.record_result(&table, "acme", "openai", failure, MS);
    let view = |ms: u64| ShardView {
        table: &table,
        state: Some(&state),
        now: now(ms),
    };
    let (status, v) = f.call_on(ACME, "GET", "/admin/v1/circuits/acme", "", view(2));
    assert_eq!(status, 200, "{v}");
    let rows = v["circuits"].as_array().unwrap();
    let guarded: Vec<_> = rows
        .iter()
        .filter(|r| r["policy_id"] == "guarded")
        .collect();
    assert_eq!(guarded.len(), 2);
    assert_eq!(
        (&guarded[0]["provider"], &guarded[0]["state"]),
        (&"openai".into(), &"open".into())
    );
    assert_eq!(guarded[1]["state"], "closed");
    assert!(rows
        .iter()
        .all(|r| r["enabled"] == (r["policy_id"] == "guarded")));

    let body = decide_body("acme", "guarded");
    for _ in 0..5 {
        let (status, v) = f.call_on(ACME, "POST", "/admin/v1/dry-run", &body, view(2));
        assert_eq!(
            (status, &v["decision"]["provider_id"]),
            (200, &"anthropic".into())
        );
    }
    let (_, v) = f.call_on(ACME, "GET", "/admin/v1/circuits/acme", "", view(2_000));
    let rows = v["circuits"].as_array().unwrap();
    let openai = rows.iter().find(|r| r["policy_id"] == "guarded").unwrap();
    assert_eq!(
        openai["state"], "half_open",
        "the open timeout (1 s) has passed"
    );
    let (status, v) = f.call_on(ROOT, "GET", "/admin/v1/circuits/nobody", "", view(2));
    assert_eq!(
        (status, v["circuits"].as_array().map(Vec::len)),
        (200, Some(0))
    );
}

/// Where each route must run, for the transport.
#[test]
fn placement_follows_the_route() {
    let req = |method, path, body: &'static str| AdminRequest {
        method,
        path,
        query: None,
        authorization: None,
        body: body.as_bytes(),
    };
    let body: &'static str = Box::leak(decide_body("acme", "default").into_boxed_str());
    let on_acme = Placement::OwnerShard("acme".into());
    assert_eq!(placement(&req("POST", "/admin/v1/dry-run", body)), on_acme);
    assert_eq!(
        placement(&req("GET", "/admin/v1/circuits/acme", "")),
        on_acme
    );
    assert_eq!(
        placement(&req("POST", "/admin/v1/dry-run", "{")),
        Placement::Anywhere
    );
    let put = req("PUT", "/admin/v1/policies/acme/gold", "");
    assert_eq!(placement(&put), Placement::Blocking);
    assert_eq!(
        placement(&req("POST", "/admin/v1/reload", "")),
        Placement::Blocking
    );
    assert_eq!(
        placement(&req("GET", "/admin/v1/policies", "")),
        Placement::Anywhere
    );
}

/// A write parses the written document, not the whole directory: with 200 policies on
/// disk, a put, a delete and the watcher-style reload after them parse one document each
/// (or none); an edit made behind the store's back is still seen; an explicit reload
/// (`reload_all`, SIGHUP and `POST /admin/v1/reload`) parses everything again.
#[test]
fn writes_reparse_only_the_changed_document() {
    let dir = TempDir::new("reparse");
    for t in 0..100 {
        dir.write(&format!("t{t}/default.json"), BASIC);
        dir.write(&format!("t{t}/second.json"), BASIC);
    }
    let store = PolicyStore::open(dir.path()).unwrap();
    let handle = TableHandle::new(load(dir.path()));
    reload(&handle, &store).unwrap();
    assert_eq!(
        store.documents_parsed(),
        200,
        "the first scan parses everything"
    );

    let before = store.documents_parsed();
    put_policy(&handle, &store, "t7", "gold", BASIC_V2.as_bytes()).unwrap();
    assert_eq!(
        store.documents_parsed() - before,
        1,
        "the put parsed only its document"
    );
    assert_eq!(handle.current().1.len(), 201);
    let before = store.documents_parsed();
    let report = reload(&handle, &store).unwrap();
    assert!(!report.changed);
    assert_eq!(
        store.documents_parsed(),
        before,
        "nothing changed, nothing parsed"
    );
    delete_policy(&handle, &store, "t7", "gold")
        .unwrap()
        .unwrap();
    assert_eq!(store.documents_parsed(), before, "a delete parses nothing");

    dir.write("t3/default.json", BASIC_V2);
    let report = reload(&handle, &store).unwrap();
    assert!(report.changed, "an edit behind the store's back is seen");
    assert_eq!(store.documents_parsed() - before, 1);
    let table = handle.current().1;
    let slot = table.lookup("t3", "default").unwrap();
    assert_eq!(&*table.policy(slot).version, "2.0");

    let before = store.documents_parsed();
    reload_all(&handle, &store).unwrap();
    assert_eq!(store.documents_parsed() - before, 200);
}
