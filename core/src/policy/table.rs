//! The routing table: every tenant's compiled policies, immutable once built.
//!
//! A shard reads one `RoutingTable` and a reload builds a whole new one that is swapped in
//! atomically (SPEC §1), so the table has no mutation API at all: no lock, no partial state
//! a request could observe. Policies live in one `Vec` indexed by `PolicySlot` so that
//! per-shard policy state (sticky maps, buckets, breakers) can be a parallel `Vec`; the
//! tenant map answers `(tenant, policy id) → slot` without allocating, and
//! `(tenant, provider) → every (slot, provider index)` so that one ExecResult can feed the
//! breaker of that provider in every policy of its tenant.
//!
//! On disk a config directory holds `DIR/<tenant>/<policy>.json`; dot-files and non-`.json`
//! files are ignored, names are read in sorted order so that slots are deterministic, and
//! sizes and counts are bounded (`POLICY_FILE_BYTES_MAX`, `DIR_ENTRIES_MAX`, …).
//!
//! Two ways to load a directory. `load_dir` is all-or-nothing: one bad document and there
//! is no table (`serve --strict-policies`, and tools). `load_dir_per_document` confines a
//! bad document to its own (tenant, policy): every other document loads, and the bad one
//! keeps the version a previous table had (else it is absent) and is reported in
//! `InvalidPolicy`. Why per document: one tenant's typo must not stop every other tenant's
//! writes or the next restart. Only what no document owns is still fatal: the directory
//! itself unreadable, or a whole-table limit (`TENANTS_MAX`, `POLICIES_MAX`) passed.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use foldhash::fast::SeedableRandomState;

use super::model::{Policy, PolicySlot, ProviderIdx};
use super::parse::{is_tenant_id, parse_policy, PolicyError, POLICY_FILE_BYTES_MAX};

/// Tenants in one table.
pub const TENANTS_MAX: usize = 10_000;
/// Policies of one tenant.
pub const POLICIES_PER_TENANT_MAX: usize = 1_000;
/// Policies in one table, all tenants together.
pub const POLICIES_MAX: usize = 100_000;
/// Entries read from one directory (files of any kind, and subdirectories).
pub const DIR_ENTRIES_MAX: usize = 100_000;

const _: () = assert!(POLICIES_MAX <= u32::MAX as usize);
const _: () = assert!(POLICIES_PER_TENANT_MAX <= POLICIES_MAX);

/// Seeded at random per table in production (tenant and provider names are chosen by
/// clients, so their hashes must not be predictable); fixed only for measurements.
type Map<K, V> = HashMap<K, V, SeedableRandomState>;

#[derive(Debug, Default)]
struct TenantPolicies {
    by_id: Map<Box<str>, PolicySlot>,
    /// Every policy of the tenant that names the provider, in slot order.
    by_provider: Map<Box<str>, Box<[(PolicySlot, ProviderIdx)]>>,
    /// Some policy of the tenant has extension stages.
    has_stages: bool,
    /// Some policy of the tenant has budgets.
    has_budgets: bool,
    /// Some policy of the tenant is decided on the tenant's owner (`Policy::owner_decides`).
    owner_decides: bool,
}

/// All tenants' policies; see the module doc.
#[derive(Debug, Default)]
pub struct RoutingTable {
    policies: Vec<Policy>,
    tenants: Map<Box<str>, TenantPolicies>,
    /// Some policy has budgets: without, a request pays no lookup for them.
    any_budgets: bool,
    /// Some policy is decided on its tenant's owner.
    any_owner_decides: bool,
}

impl RoutingTable {
    /// Builds the table; slot `i` is `policies[i]`. A repeated (tenant, id) is an error.
    pub fn from_policies(policies: Vec<Policy>) -> Result<Self, Vec<PolicyError>> {
        Self::build(policies, SeedableRandomState::random)
    }

    /// As `from_policies`, with hash seeds fixed so that lookups execute the same
    /// instructions in every process: for instruction-count measurements. Never serve
    /// from it: a client could pick tenant or provider names that collide.
    pub fn from_policies_fixed_hash(policies: Vec<Policy>) -> Result<Self, Vec<PolicyError>> {
        Self::build(policies, SeedableRandomState::fixed)
    }

    fn build(
        policies: Vec<Policy>,
        hasher: fn() -> SeedableRandomState,
    ) -> Result<Self, Vec<PolicyError>> {
        let mut problems = Vec::new();
        if policies.len() > POLICIES_MAX {
            let message = format!("{} policies; at most {POLICIES_MAX}", policies.len());
            problems.push(table_error("routing table", message));
            return Err(problems);
        }
        let mut tenants: Map<Box<str>, TenantPolicies> = Map::with_hasher(hasher());
        let mut refs: Map<(&str, &str), Vec<(PolicySlot, ProviderIdx)>> =
            Map::with_hasher(hasher());
        for (i, policy) in policies.iter().enumerate() {
            policy.check();
            let slot = PolicySlot(i as u32);
            let source = format!("{}/{}", policy.tenant, policy.id);
            if !tenants.contains_key(&policy.tenant) && tenants.len() == TENANTS_MAX {
                problems.push(table_error(
                    &source,
                    format!("more than {TENANTS_MAX} tenants"),
                ));
                continue;
            }
            let tenant = tenants
                .entry(policy.tenant.clone())
                .or_insert_with(|| TenantPolicies {
                    by_id: Map::with_hasher(hasher()),
                    by_provider: Map::with_hasher(hasher()),
                    has_stages: false,
                    has_budgets: false,
                    owner_decides: false,
                });
            if tenant.by_id.contains_key(&policy.id) {
                problems.push(table_error(&source, "duplicate policy id for this tenant"));
                continue;
            }
            if tenant.by_id.len() == POLICIES_PER_TENANT_MAX {
                let message = format!("more than {POLICIES_PER_TENANT_MAX} policies in a tenant");
                problems.push(table_error(&source, message));
                continue;
            }
            tenant.by_id.insert(policy.id.clone(), slot);
            tenant.has_stages |= policy.has_stages();
            tenant.has_budgets |= !policy.budgets.is_empty();
            tenant.owner_decides |= policy.owner_decides();
            for (p, provider) in policy.providers.iter().enumerate() {
                let key = (&*policy.tenant, &*provider.name);
                refs.entry(key)
                    .or_default()
                    .push((slot, ProviderIdx(p as u8)));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        for ((tenant, provider), slots) in refs {
            let entry = tenants
                .get_mut(tenant)
                .expect("every referenced tenant was inserted");
            entry.by_provider.insert(provider.into(), slots.into());
        }
        let any_budgets = policies.iter().any(|p| !p.budgets.is_empty());
        let any_owner_decides = policies.iter().any(Policy::owner_decides);
        Ok(RoutingTable {
            policies,
            tenants,
            any_budgets,
            any_owner_decides,
        })
    }

    /// Loads `DIR/<tenant>/<policy>.json`; every problem of every file is returned.
    pub fn load_dir(dir: &Path) -> Result<Self, Vec<PolicyError>> {
        let mut scan = Scan::default();
        scan_config_dir(dir, &mut scan);
        if !scan.problems.is_empty() {
            return Err(scan.problems);
        }
        Self::from_policies(scan.policies)
    }

    /// Loads `DIR/<tenant>/<policy>.json` document by document; see the module doc. A
    /// document that does not load keeps its version in `previous`, if it had one. `Err`
    /// only when the directory cannot be listed or the table passes a whole-table limit.
    pub fn load_dir_per_document(
        dir: &Path,
        previous: &RoutingTable,
    ) -> Result<DirLoad, Vec<PolicyError>> {
        Self::load_dir_per_document_reusing(dir, previous, &mut ParsedFiles::default())
    }

    /// `load_dir_per_document`, parsing only the files that changed since `parsed` saw
    /// them (by size, modification and change time, inode); the rest are the policies
    /// parsed then. The directory is still listed and every file stat'ed, so what is
    /// published is what the directory holds now.
    pub fn load_dir_per_document_reusing(
        dir: &Path,
        previous: &RoutingTable,
        parsed: &mut ParsedFiles,
    ) -> Result<DirLoad, Vec<PolicyError>> {
        parsed.round += 1;
        let mut scan = Scan {
            reuse: Some(std::mem::take(parsed)),
            ..Scan::default()
        };
        scan_config_dir(dir, &mut scan);
        let mut reused = scan.reuse.take().expect("put back by the scan");
        // Files no longer listed are forgotten: the cache never outgrows the directory.
        reused.files.retain(|_, f| f.seen == reused.round);
        *parsed = reused;
        if scan.unreadable {
            return Err(scan.problems);
        }
        let (policies, invalid) = keep_previous(scan.policies, scan.invalid, previous);
        let table = Self::from_policies(policies)?;
        Ok(DirLoad { table, invalid })
    }

    /// The slot of a tenant's policy; does not allocate.
    pub fn lookup(&self, tenant: &str, policy_id: &str) -> Option<PolicySlot> {
        self.tenants.get(tenant)?.by_id.get(policy_id).copied()
    }

    /// Whether any policy of `tenant` has extension stages (a cheap pre-check before
    /// decoding a request to find its policy).
    pub fn tenant_has_stages(&self, tenant: &str) -> bool {
        self.tenants.get(tenant).is_some_and(|t| t.has_stages)
    }

    /// Whether any policy of `tenant` has budgets.
    pub fn tenant_has_budgets(&self, tenant: &str) -> bool {
        self.any_budgets && self.tenants.get(tenant).is_some_and(|t| t.has_budgets)
    }

    /// Whether `tenant`'s policy `policy_id` is decided on the tenant's owner
    /// (`Policy::owner_decides`); a cheap no when no policy of the table is.
    pub fn owner_decides(&self, tenant: &str, policy_id: &str) -> bool {
        self.any_owner_decides
            && self.tenants.get(tenant).is_some_and(|t| {
                t.owner_decides
                    && t.by_id
                        .get(policy_id)
                        .is_some_and(|s| self.policies[s.get()].owner_decides())
            })
    }

    /// Panics on a slot this table did not hand out (a bug, not an input error).
    pub fn policy(&self, slot: PolicySlot) -> &Policy {
        &self.policies[slot.get()]
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// Every (policy, provider index) of `tenant` naming `provider`; empty if none.
    pub fn provider_refs(&self, tenant: &str, provider: &str) -> &[(PolicySlot, ProviderIdx)] {
        self.tenants
            .get(tenant)
            .and_then(|t| t.by_provider.get(provider))
            .map_or(&[], |refs| refs)
    }

    /// Tenant ids, in no particular order.
    pub fn tenants(&self) -> impl Iterator<Item = &str> + '_ {
        self.tenants.keys().map(|t| &**t)
    }

    /// The number of policies.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

/// Inserts, where each invalid document would have been, the version `previous` served:
/// the policy itself, or for `ANY_POLICY` every policy of a tenant none of whose
/// documents loaded now.
fn keep_previous(
    loaded: Vec<Policy>,
    invalid: Vec<(usize, InvalidPolicy)>,
    previous: &RoutingTable,
) -> (Vec<Policy>, Vec<InvalidPolicy>) {
    let mut out = Vec::with_capacity(loaded.len() + invalid.len());
    let mut reported = Vec::with_capacity(invalid.len());
    let mut loaded_iter = loaded.iter();
    let mut taken = 0;
    for (at, mut bad) in invalid {
        out.extend(loaded_iter.by_ref().take(at - taken).cloned());
        taken = at;
        if bad.policy == ANY_POLICY {
            let tenant_loaded = loaded.iter().any(|p| *p.tenant == *bad.tenant);
            let old = previous
                .policies()
                .iter()
                .filter(|p| *p.tenant == *bad.tenant && !tenant_loaded);
            let before = out.len();
            out.extend(old.cloned());
            bad.kept = out.len() > before;
        } else if let Some(slot) = previous.lookup(&bad.tenant, &bad.policy) {
            out.push(previous.policy(slot).clone());
            bad.kept = true;
        }
        reported.push(bad);
    }
    out.extend(loaded_iter.cloned());
    (out, reported)
}

fn table_error(source: &str, message: impl Into<String>) -> PolicyError {
    PolicyError {
        source: source.to_owned(),
        path: "$".to_owned(),
        message: message.into(),
    }
}

/// What `shardline policy check PATH...` found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Policy files read (whether or not they were valid).
    pub files_checked: usize,
    /// Every problem, in path order.
    pub problems: Vec<PolicyError>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks policy files and directories without building a table. A file's tenant is its
/// directory's name (or `_` when that is not a tenant id); a directory holding `.json` files
/// is a tenant directory, any other directory a config directory of tenant directories.
pub fn check_paths(paths: &[PathBuf]) -> CheckReport {
    let mut scan = Scan::default();
    for path in paths {
        match fs::metadata(path) {
            Err(e) => scan.problems.push(io_error(path, "cannot read", &e)),
            Ok(meta) if meta.is_dir() => match holds_policy_files(path) {
                Ok(true) => scan_tenant_dir(path, &tenant_of_dir(path), &mut scan),
                Ok(false) => scan_config_dir(path, &mut scan),
                Err(e) => scan.problems.push(e),
            },
            Ok(_) => {
                let tenant = path.parent().map_or_else(|| "_".to_owned(), tenant_of_dir);
                let id = path
                    .file_stem()
                    .map(|s| s.to_string_lossy())
                    .unwrap_or_default();
                scan.load(path, &tenant, &id);
            }
        }
    }
    CheckReport {
        files_checked: scan.files,
        problems: scan.problems,
    }
}

fn tenant_of_dir(dir: &Path) -> String {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if is_tenant_id(name) {
        name.to_owned()
    } else {
        "_".to_owned()
    }
}

/// Policies parsed by earlier scans, by path, with the file's stamp when it was read;
/// see `RoutingTable::load_dir_per_document_reusing`. Why stamps and not a content hash: hashing
/// would read every file again, which is most of what a reparse costs.
#[derive(Debug, Default)]
pub struct ParsedFiles {
    files: HashMap<PathBuf, ParsedFile>,
    /// Documents parsed (not reused) so far.
    parsed: u64,
    round: u64,
}

#[derive(Debug)]
struct ParsedFile {
    stamp: Stamp,
    policy: Policy,
    seen: u64,
}

/// What changes when a file's content may have: size, mtime, ctime (set by the kernel on
/// every write or rename, not by the writer), and the inode (an atomic replace is a new
/// inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    dev: u64,
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(path).ok()?;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Some(Stamp {
            len: m.len(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
        })
    }
}

impl ParsedFiles {
    /// Documents parsed so far (reused ones are not counted).
    pub fn parsed(&self) -> u64 {
        self.parsed
    }

    /// Forgets every parsed file: the next scan parses everything.
    pub fn clear(&mut self) {
        self.files.clear();
    }

    fn load(&mut self, path: &Path, tenant: &str, id: &str) -> Result<Policy, Vec<PolicyError>> {
        // Stamped before reading: a change during the read leaves an older stamp, so the
        // next scan parses the file again rather than keeping a stale policy.
        let stamp = Stamp::of(path);
        if let (Some(stamp), Some(f)) = (stamp, self.files.get_mut(path)) {
            if f.stamp == stamp && *f.policy.tenant == *tenant && *f.policy.id == *id {
                f.seen = self.round;
                return Ok(f.policy.clone());
            }
        }
        self.parsed += 1;
        let policy = load_file(path, tenant, id);
        match (&policy, stamp) {
            (Ok(p), Some(stamp)) => {
                let (policy, seen) = (p.clone(), self.round);
                let file = ParsedFile {
                    stamp,
                    policy,
                    seen,
                };
                self.files.insert(path.to_owned(), file);
            }
            _ => drop(self.files.remove(path)),
        }
        policy
    }
}

/// Policies and problems gathered while walking directories.
#[derive(Default)]
struct Scan {
    policies: Vec<Policy>,
    problems: Vec<PolicyError>,
    /// Documents that did not load, each with the index in `policies` where it would
    /// have been, so a kept version takes the same slot order as a loaded one.
    invalid: Vec<(usize, InvalidPolicy)>,
    /// The config directory itself could not be listed: nothing per document to keep.
    unreadable: bool,
    files: usize,
    /// Set by `load_dir_per_document_reusing`.
    reuse: Option<ParsedFiles>,
}

impl Scan {
    fn load(&mut self, path: &Path, tenant: &str, policy_id: &str) {
        self.files += 1;
        let loaded = match &mut self.reuse {
            Some(reuse) => reuse.load(path, tenant, policy_id),
            None => load_file(path, tenant, policy_id),
        };
        match loaded {
            Ok(policy) => self.policies.push(policy),
            Err(problems) => self.fail(tenant, policy_id, problems),
        }
    }

    /// Records problems that belong to one (tenant, policy), or `ANY_POLICY` of a tenant.
    fn fail(&mut self, tenant: &str, policy: &str, problems: Vec<PolicyError>) {
        let invalid = InvalidPolicy {
            tenant: tenant.to_owned(),
            policy: policy.to_owned(),
            problems: problems.clone(),
            kept: false,
        };
        self.invalid.push((self.policies.len(), invalid));
        self.problems.extend(problems);
    }
}

/// The policy id of an `InvalidPolicy` that concerns a whole tenant directory (it could
/// not be listed, or holds too many files) or a stray entry that is no tenant's.
pub const ANY_POLICY: &str = "*";

/// A document that did not load (SPEC §8: it affects only its own tenant and policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPolicy {
    /// The tenant directory's name (`_` for an entry outside any tenant directory).
    pub tenant: String,
    /// The policy id (the file's stem), or `ANY_POLICY`.
    pub policy: String,
    /// Why, at least one.
    pub problems: Vec<PolicyError>,
    /// The table still serves the version an earlier table had.
    pub kept: bool,
}

/// What `load_dir_per_document` built: the table, and the documents left out of it.
#[derive(Debug, Default)]
pub struct DirLoad {
    pub table: RoutingTable,
    /// In directory order.
    pub invalid: Vec<InvalidPolicy>,
}

fn scan_config_dir(dir: &Path, scan: &mut Scan) {
    let entries = match list_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            scan.problems.push(e);
            scan.unreadable = true;
            return;
        }
    };
    for entry in entries {
        let source = entry.path.display().to_string();
        match entry.kind {
            Kind::Dir if is_tenant_id(&entry.name) => {
                scan_tenant_dir(&entry.path, &entry.name, scan)
            }
            Kind::Dir => {
                let message = "a tenant directory name must match ^[A-Za-z0-9_.-]{1,64}$";
                scan.fail("_", ANY_POLICY, vec![table_error(&source, message)]);
            }
            Kind::PolicyFile => {
                let message = "a policy file belongs in a tenant directory: DIR/<tenant>/<id>.json";
                scan.fail("_", ANY_POLICY, vec![table_error(&source, message)]);
            }
            Kind::Other => {}
        }
    }
}

fn scan_tenant_dir(dir: &Path, tenant: &str, scan: &mut Scan) {
    let entries = match list_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            scan.fail(tenant, ANY_POLICY, vec![e]);
            return;
        }
    };
    let files = entries.iter().filter(|e| e.kind == Kind::PolicyFile);
    for (i, entry) in files.enumerate() {
        if i == POLICIES_PER_TENANT_MAX {
            let message = format!("more than {POLICIES_PER_TENANT_MAX} policy files");
            let problem = table_error(&dir.display().to_string(), message);
            scan.fail(tenant, ANY_POLICY, vec![problem]);
            return;
        }
        let id = entry
            .name
            .strip_suffix(".json")
            .expect("a policy file ends in .json");
        scan.load(&entry.path, tenant, id);
    }
}

fn holds_policy_files(dir: &Path) -> Result<bool, PolicyError> {
    Ok(list_dir(dir)?.iter().any(|e| e.kind == Kind::PolicyFile))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    /// A regular file named `*.json`.
    PolicyFile,
    Other,
}

struct Entry {
    name: String,
    path: PathBuf,
    kind: Kind,
}

/// The directory's entries but dot-files, sorted by name, following symlinks.
fn list_dir(dir: &Path) -> Result<Vec<Entry>, PolicyError> {
    let read = fs::read_dir(dir).map_err(|e| io_error(dir, "cannot list", &e))?;
    let mut entries = Vec::new();
    for (i, entry) in read.enumerate() {
        if i == DIR_ENTRIES_MAX {
            let message = format!("more than {DIR_ENTRIES_MAX} entries");
            return Err(table_error(&dir.display().to_string(), message));
        }
        let entry = entry.map_err(|e| io_error(dir, "cannot list", &e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let kind = match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => Kind::Dir,
            Ok(meta) if meta.is_file() && name.ends_with(".json") => Kind::PolicyFile,
            Ok(_) => Kind::Other,
            Err(e) => return Err(io_error(&path, "cannot read", &e)),
        };
        entries.push(Entry { name, path, kind });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// Reads at most `POLICY_FILE_BYTES_MAX` bytes of `path` and parses them.
fn load_file(path: &Path, tenant: &str, policy_id: &str) -> Result<Policy, Vec<PolicyError>> {
    let source = path.display().to_string();
    let too_big = || {
        let message = format!("larger than {POLICY_FILE_BYTES_MAX} bytes");
        vec![table_error(&source, message)]
    };
    let mut file = fs::File::open(path).map_err(|e| vec![io_error(path, "cannot open", &e)])?;
    let len = file
        .metadata()
        .map_err(|e| vec![io_error(path, "cannot read", &e)])?
        .len();
    if len > POLICY_FILE_BYTES_MAX as u64 {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(len as usize);
    let limit = POLICY_FILE_BYTES_MAX as u64 + 1;
    let read = file.by_ref().take(limit).read_to_end(&mut bytes);
    read.map_err(|e| vec![io_error(path, "cannot read", &e)])?;
    if bytes.len() > POLICY_FILE_BYTES_MAX {
        return Err(too_big());
    }
    parse_policy(tenant, policy_id, &source, &bytes)
}

fn io_error(path: &Path, what: &str, e: &std::io::Error) -> PolicyError {
    table_error(&path.display().to_string(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests;
