use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = format!("shardline-policy-{}-{n}-{name}", std::process::id());
        let path = std::env::temp_dir().join(dir);
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, relative: &str, contents: &str) -> PathBuf {
        let path = self.0.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn policy_json(providers: &[&str]) -> String {
    let list: Vec<String> = providers
        .iter()
        .map(|p| format!(r#"{{"name":"{p}","weight":10}}"#))
        .collect();
    format!(r#"{{"version":"1.0","providers":[{}]}}"#, list.join(","))
}

fn ids(table: &RoutingTable) -> Vec<String> {
    table
        .policies()
        .iter()
        .map(|p| format!("{}/{}", p.tenant, p.id))
        .collect()
}

fn messages(errors: &[PolicyError]) -> String {
    errors.iter().map(|e| format!("  {e}\n")).collect()
}

/// Tenants and files are read in sorted order, so slots do not depend on the file system;
/// dot-files, dot-directories, non-`.json` files and nested directories are ignored.
#[test]
fn load_dir_reads_sorted_and_skips_noise() {
    let dir = TempDir::new("sorted");
    dir.write("zeta/default.json", &policy_json(&["openai"]));
    dir.write("acme/b.json", &policy_json(&["openai"]));
    dir.write("acme/a.json", &policy_json(&["openai"]));
    dir.write("acme/.a.json.swp", "garbage");
    dir.write("acme/.hidden.json", "garbage");
    dir.write("acme/notes.txt", "garbage");
    dir.write("acme/archive/old.json", "garbage");
    dir.write(".git/config.json", "garbage");
    dir.write("README.md", "garbage");
    let table = RoutingTable::load_dir(dir.path()).unwrap();
    assert_eq!(ids(&table), ["acme/a", "acme/b", "zeta/default"]);
    assert_eq!(table.len(), 3);
    assert_eq!(table.lookup("acme", "b"), Some(PolicySlot(1)));
    assert_eq!(table.lookup("zeta", "default"), Some(PolicySlot(2)));
    assert_eq!(table.lookup("acme", "default"), None);
    assert_eq!(table.lookup("nobody", "a"), None);
    assert_eq!(&*table.policy(PolicySlot(2)).tenant, "zeta");
    let mut tenants: Vec<&str> = table.tenants().collect();
    tenants.sort_unstable();
    assert_eq!(tenants, ["acme", "zeta"]);
}

/// `provider_refs` lists every policy of the tenant naming the provider, fallback-only
/// providers included, and nothing across tenants.
#[test]
fn provider_refs_span_a_tenants_policies() {
    let dir = TempDir::new("refs");
    dir.write("acme/a.json", &policy_json(&["openai", "anthropic"]));
    let with_fallback = r#"{"version":"1.0","providers":[{"name":"anthropic","weight":1}],
        "fallback":{"provider":"local_llm"}}"#;
    dir.write("acme/b.json", with_fallback);
    dir.write("globex/a.json", &policy_json(&["anthropic"]));
    let table = RoutingTable::load_dir(dir.path()).unwrap();
    let refs = table.provider_refs("acme", "anthropic");
    assert_eq!(
        refs,
        [
            (PolicySlot(0), ProviderIdx(1)),
            (PolicySlot(1), ProviderIdx(0))
        ]
    );
    assert_eq!(
        table.provider_refs("acme", "local_llm"),
        [(PolicySlot(1), ProviderIdx(1))]
    );
    assert_eq!(
        table.provider_refs("globex", "anthropic"),
        [(PolicySlot(2), ProviderIdx(0))]
    );
    assert!(table.provider_refs("acme", "cohere").is_empty());
    assert!(table.provider_refs("initech", "openai").is_empty());
}

#[test]
fn load_dir_reports_every_file_problem() {
    let dir = TempDir::new("problems");
    let bad_weight = dir.write("acme/a.json", r#"{"version":"1.0","weights":{"x":-1}}"#);
    let bad_json = dir.write("globex/b.json", "{");
    dir.write("globex/c.json", &policy_json(&["openai"]));
    let errors = RoutingTable::load_dir(dir.path()).unwrap_err();
    assert_eq!(errors.len(), 2, "{}", messages(&errors));
    assert_eq!(errors[0].source, bad_weight.display().to_string());
    assert_eq!(errors[0].path, "$.weights.x");
    assert_eq!(errors[1].source, bad_json.display().to_string());
    assert!(errors[1].message.contains("not valid JSON"));
}

#[test]
fn load_dir_rejects_bad_layout() {
    let dir = TempDir::new("layout");
    dir.write("bad tenant/a.json", &policy_json(&["openai"]));
    dir.write("stray.json", &policy_json(&["openai"]));
    dir.write("acme/bad id.json", &policy_json(&["openai"]));
    let errors = RoutingTable::load_dir(dir.path()).unwrap_err();
    let text = messages(&errors);
    assert_eq!(errors.len(), 3, "{text}");
    assert!(
        text.contains("bad tenant: $: a tenant directory name must match"),
        "{text}"
    );
    assert!(text.contains("stray.json: $: a policy file belongs in a tenant directory"));
    assert!(text.contains("policy id \"bad id\" must match"), "{text}");
    let missing = RoutingTable::load_dir(&dir.path().join("absent")).unwrap_err();
    assert!(
        missing[0].message.starts_with("cannot list"),
        "{}",
        messages(&missing)
    );
}

#[test]
fn load_dir_bounds_file_size() {
    let dir = TempDir::new("size");
    let padding = "x".repeat(POLICY_FILE_BYTES_MAX);
    let json = format!(r#"{{"version":"1.0","weights":{{"a":1}},"metadata":{{"p":"{padding}"}}}}"#);
    dir.write("acme/big.json", &json);
    let errors = RoutingTable::load_dir(dir.path()).unwrap_err();
    assert!(
        errors[0].message.contains("larger than 1048576 bytes"),
        "{}",
        messages(&errors)
    );
}

#[test]
fn empty_dir_is_an_empty_table() {
    let dir = TempDir::new("empty");
    let table = RoutingTable::load_dir(dir.path()).unwrap();
    assert!(table.is_empty() && table.tenants().next().is_none());
}

#[test]
fn from_policies_rejects_duplicate_ids() {
    let json = policy_json(&["openai"]);
    let policy = parse_policy("acme", "default", "a", json.as_bytes()).unwrap();
    let other = parse_policy("globex", "default", "b", json.as_bytes()).unwrap();
    let table = RoutingTable::from_policies(vec![policy.clone(), other.clone()]).unwrap();
    assert_eq!(table.lookup("globex", "default"), Some(PolicySlot(1)));
    let errors = RoutingTable::from_policies(vec![policy.clone(), other, policy]).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].to_string(),
        "acme/default: $: duplicate policy id for this tenant"
    );
}

/// The example configuration shipped in `config/policies` loads, and initech's policy only
/// has optional extensions, so it decides without an extension transport; it also shows
/// `balance`.
#[test]
fn example_config_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/policies");
    let table = match RoutingTable::load_dir(&dir) {
        Ok(table) => table,
        Err(errors) => panic!("example config does not load:\n{}", messages(&errors)),
    };
    let expected = [
        "acme/default",
        "acme/premium",
        "globex/default",
        "initech/default",
    ];
    assert_eq!(ids(&table), expected);
    let acme = table.policy(table.lookup("acme", "default").unwrap());
    assert!(acme.circuit_breaker.is_some() && acme.rate_limit.is_some());
    assert!(acme
        .providers
        .iter()
        .all(|p| p.cost.is_some() && !p.capabilities.is_empty()));
    let globex = table.policy(table.lookup("globex", "default").unwrap());
    assert!(globex.legacy_fallback.is_some());
    let initech = table.policy(table.lookup("initech", "default").unwrap());
    assert_eq!(
        initech.balance.strategy,
        crate::policy::BalanceStrategy::LeastLatency
    );
    let stages = initech
        .pre
        .iter()
        .chain(&initech.validators)
        .chain(&initech.post);
    assert!(stages.clone().count() > 0 && stages.clone().all(|s| !s.required));
}

/// Residency as capability tags: acme's example policy tags every provider with its
/// region, so a request with `require: ["region:eu"]` is only ever routed to the EU
/// providers, and `only` narrows further within them.
#[test]
fn example_config_routes_by_region_tags() {
    use crate::contract::{decode_decide, Headers};
    use crate::decide::{decide, Now, ShardState, StateConfig};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/policies");
    let table = RoutingTable::load_dir(&dir).expect("example config");
    let acme = table.policy(table.lookup("acme", "default").unwrap());
    let regions: Vec<(&str, &str)> = acme
        .providers
        .iter()
        .map(|p| {
            let tag = p.capabilities.iter().find(|c| c.starts_with("region:"));
            (&*p.name, tag.map_or("none", |t| &**t))
        })
        .collect();
    assert_eq!(
        regions,
        [
            ("openai", "region:us"),
            ("anthropic", "region:us"),
            ("mistral", "region:eu"),
            ("local_llm", "region:eu"),
        ]
    );
    let mut state = ShardState::new(&table, StateConfig::default(), 0);
    let body = |only: &str| {
        format!(
            r#"{{"request_id":"r","tenant_id":"acme","task":{{"type":"chat","payload":{{}}}},
                "constraints":{{"require":["region:eu"]{only}}}}}"#
        )
    };
    let mut seen = std::collections::BTreeSet::new();
    for (only, allowed) in [
        ("", &["mistral", "local_llm"][..]),
        (r#","only":["local_llm","openai"]"#, &["local_llm"][..]),
    ] {
        let body = body(only);
        let req = decode_decide(body.as_bytes(), &Headers::default()).expect("request");
        for t in 0..200 {
            let now = Now {
                mono_ns: t,
                unix_ms: 1_767_225_600_000,
            };
            let d = decide(&table, &mut state, &req, now).expect("decision");
            let name = &*table.policy(d.slot).provider(d.provider).name;
            assert!(allowed.contains(&name), "{name} for {only:?}");
            seen.insert(name.to_owned());
        }
    }
    assert_eq!(seen.len(), 2, "both EU providers drawn: {seen:?}");
}

#[test]
fn check_paths_accepts_files_and_both_kinds_of_directory() {
    let dir = TempDir::new("check");
    let good = dir.write("cfg/acme/a.json", &policy_json(&["openai"]));
    dir.write("cfg/acme/b.json", r#"{"version":"1.0","providers":[]}"#);
    dir.write("cfg/globex/a.json", &policy_json(&["openai"]));
    let loose = dir.write("odd dir/x.json", &policy_json(&["openai"]));
    let config = check_paths(&[dir.path().join("cfg")]);
    assert_eq!((config.files_checked, config.problems.len()), (3, 1));
    assert_eq!(config.problems[0].path, "$.providers");
    let tenant = check_paths(&[dir.path().join("cfg/acme")]);
    assert_eq!((tenant.files_checked, tenant.problems.len()), (2, 1));
    let files = check_paths(&[good, loose]);
    assert!(
        files.is_ok() && files.files_checked == 2,
        "{}",
        messages(&files.problems)
    );
    let missing = check_paths(&[dir.path().join("nope.json")]);
    assert_eq!(missing.files_checked, 0);
    assert!(missing.problems[0].message.starts_with("cannot read"));
}

#[test]
fn check_paths_validates_the_file_stem() {
    let dir = TempDir::new("stem");
    let file = dir.write("acme/bad name.json", &policy_json(&["openai"]));
    let report = check_paths(&[file]);
    assert!(report.problems[0]
        .message
        .contains("policy id \"bad name\""));
}

/// Per document: a broken file is left out and reported, the others load; with a previous
/// table the broken one keeps its old version in the slot order a loaded one would have.
#[test]
fn per_document_load_keeps_the_last_good_version() {
    let dir = TempDir::new("per-document");
    dir.write("acme/a.json", &policy_json(&["x"]));
    dir.write("acme/b.json", &policy_json(&["y"]));
    dir.write("globex/c.json", &policy_json(&["z"]));
    let first =
        RoutingTable::load_dir_per_document(dir.path(), &RoutingTable::default()).expect("loads");
    assert!(first.invalid.is_empty());

    dir.write("acme/a.json", r#"{"version":"1.0","providers":"none"}"#);
    dir.write("acme/new.json", r#"{"version":"#);
    assert!(
        RoutingTable::load_dir(dir.path()).is_err(),
        "strict refuses"
    );
    let next = RoutingTable::load_dir_per_document(dir.path(), &first.table).expect("loads");
    assert_eq!(ids(&next.table), ["acme/a", "acme/b", "globex/c"]);
    let a = next.table.lookup("acme", "a").unwrap();
    assert_eq!(
        &*next.table.policy(a).providers[0].name,
        "x",
        "the old version"
    );
    let reported: Vec<_> = next
        .invalid
        .iter()
        .map(|b| (b.tenant.as_str(), b.policy.as_str(), b.kept))
        .collect();
    assert_eq!(reported, [("acme", "a", true), ("acme", "new", false)]);
    assert!(next.invalid.iter().all(|b| !b.problems.is_empty()));

    fs::remove_dir_all(dir.path()).unwrap();
    assert!(
        RoutingTable::load_dir_per_document(dir.path(), &next.table).is_err(),
        "an unreadable directory is no table at all"
    );
}
