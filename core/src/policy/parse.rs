//! Parses one policy document (JSON-DSL 1.0, legacy, or a mix of both; SPEC §5) into the
//! compiled `Policy`, collecting every problem with its JSON path.
//!
//! The original's policy store kept documents of an older, unversioned form
//! (`compat/beamline/schemas/policy.store.schema.json`): `policy_id`, `tenant_id`, a
//! `weights` map of 0.0–1.0 fractions and `sticky{…, ttl_sec}`. A root without `version`
//! that names `policy_id` or `tenant_id` is read as that form, so such documents migrate
//! unchanged: the weights are the legacy fractions, and both ids must agree with where the
//! document is stored (a document of another tenant must not route this one's traffic).
//!
//! Strictness is deliberate: unknown keys, duplicate keys and out-of-range values are
//! errors, because a typo in a routing policy (`"wieght": 0`) must not load as a silently
//! different policy. Deprecated Beamline keys (`metadata`, `defaults`, `escalate_on`,
//! `health_check`) and `providers[].priority` are accepted and ignored, so that every
//! Beamline document still loads.
//!
//! Normalisation (see `model.rs` for the invariants):
//! - weights become units of `WEIGHT_UNITS_FULL`: a JSON-DSL integer `w` (0–100) is
//!   `w * 10_000`; a `weights` map whose values are all ≤ 1.0 holds fractions
//!   (`round(f * 1_000_000)`), otherwise the map is on the 0–100 scale;
//! - providers keep declaration order (`providers`, then `weights`), then every fallback
//!   target not declared is appended with weight 0 (a fallback-only provider);
//! - a sticky block without `ttl` or `ttl_seconds` gets `STICKY_TTL_DEFAULT_MS`.

use std::fmt;

use serde_json::value::RawValue;

use super::json::{
    array, boolean, check_structure, expected, float_in, index_path, int_in, key_path, parse_root,
    shown, string, Json, Obj, Problems,
};
use super::model::*;
use super::when::compile_when;

/// A policy document, in bytes (a file, or an admin PUT body).
pub const POLICY_FILE_BYTES_MAX: usize = 1 << 20;
/// Provider names, extension ids and the sticky session key (Beamline's `maxLength`).
pub const NAME_CHARS_MAX: usize = 255;
/// A tenant id (SPEC §3: `^[A-Za-z0-9_.-]{1,64}$`).
pub const TENANT_ID_BYTES_MAX: usize = 64;
/// A policy id (a file stem): `^[A-Za-z0-9_.-]{1,128}$`.
pub const POLICY_ID_BYTES_MAX: usize = 128;
/// The document's `version` string (`^[0-9]+\.[0-9]+$`).
pub const VERSION_BYTES_MAX: usize = 16;
/// Capability tags of one provider.
pub const CAPABILITIES_PER_PROVIDER_MAX: usize = 32;
/// One capability tag.
pub const CAPABILITY_BYTES_MAX: usize = 64;
/// A provider's declared `expected_latency_ms` (an hour).
pub const PROVIDER_LATENCY_MS_MAX: f64 = 3_600_000.0;
/// A provider's declared `cost` per call.
pub const PROVIDER_COST_MAX: f64 = 1_000_000.0;
/// Sticky TTL when a policy gives neither `ttl` nor `ttl_seconds` (Beamline's "10m").
pub const STICKY_TTL_DEFAULT_MS: u64 = 600_000;
/// A JSON-DSL weight (and a `weights` map value on the 0–100 scale).
pub const WEIGHT_POINTS_MAX: u32 = 100;
/// A policy's or an extension stage's `timeout_ms` (Beamline's schema range).
pub const TIMEOUT_MS_MAX: u32 = 300_000;
/// A fallback rule's or an extension stage's `retry`.
pub const RETRIES_MAX: u32 = 10;
/// A fallback backoff's `base_ms`.
pub const BACKOFF_BASE_MS_MAX: u32 = 10_000;
/// A fallback backoff's `max_ms`.
pub const BACKOFF_DELAY_MS_MAX: u32 = 60_000;
/// A rate limit's `requests_per_second`.
pub const RATE_LIMIT_RPS_MAX: u32 = 1_000_000;
/// `balance.half_life_ms` at least: shorter than a call, it forgets what was just learnt.
pub const HALF_LIFE_MS_MIN: u64 = 100;
/// `balance.half_life_ms` at most: longer, a provider's bad minute weighs for hours.
pub const HALF_LIFE_MS_MAX: u64 = 3_600_000;
/// A rate limit's `burst`.
pub const RATE_LIMIT_BURST_MAX: u32 = 1_000_000;
/// A provider's `rpm`: requests per minute (a thousand a second fits many times over).
pub const PROVIDER_RPM_MAX: u32 = 100_000_000;
/// A provider's `tpm`: tokens per minute (the largest published tiers are ~10^8).
pub const PROVIDER_TPM_MAX: u32 = 4_000_000_000;
/// A budget's `max_cost`: a policy's spend is counted in the providers' own cost unit.
pub const BUDGET_COST_MAX: f64 = 1e12;
/// A budget's `max_tokens` and `max_requests`.
pub const BUDGET_COUNT_MAX: i64 = 1 << 50;
/// A policy's `cooldown_ms`: an hour; a provider out longer than that needs an operator.
pub const COOLDOWN_MS_MAX: u64 = 3_600_000;
/// Entries of a policy's `shadow` list: a few candidates under evaluation at once.
pub const SHADOWS_PER_POLICY_MAX: usize = 4;
/// `version` of a policy-store document (it has none): below every versioned format.
pub const STORE_FORM_VERSION: &str = "0.0";
/// One JSON-DSL weight point in weight units.
const WEIGHT_UNITS_PER_POINT: u32 = WEIGHT_UNITS_FULL / WEIGHT_POINTS_MAX;

const _: () = assert!(WEIGHT_UNITS_PER_POINT * WEIGHT_POINTS_MAX == WEIGHT_UNITS_FULL);
const _: () = assert!(BACKOFF_BASE_MS_MAX <= BACKOFF_DELAY_MS_MAX);
const _: () = assert!(STICKY_TTL_DEFAULT_MS <= STICKY_TTL_MS_MAX);
const _: () = assert!(HALF_LIFE_MS_MIN <= HALF_LIFE_MS_DEFAULT);
const _: () = assert!(HALF_LIFE_MS_DEFAULT <= HALF_LIFE_MS_MAX);
const _: () = assert!(COOLDOWN_MS_DEFAULT <= COOLDOWN_MS_MAX);

/// One problem of a policy document, shown as `{source}: {path}: {message}`.
///
/// Why no `thiserror` derive: it takes a field named `source` for the error's cause and
/// requires it to be an `Error`; here it is the document's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file path or name the document came from.
    pub source: String,
    /// Where in the document: a JSON path such as `$.providers[1].weight`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.source, self.path, self.message)
    }
}

impl std::error::Error for PolicyError {}

/// A policy document's root keys: `$head` (what tells the two forms apart) and the body
/// keys both forms share, written once.
macro_rules! root_keys {
    ($($head:literal),*) => {
        &[
            $($head,)*
            "providers",
            "weights",
            "fallbacks",
            "fallback",
            "sticky",
            "pre",
            "validators",
            "post",
            "circuit_breaker",
            "rate_limit",
            "balance",
            "timeout_ms",
            "cooldown_ms",
            "shadow",
            "budgets",
            "metadata",
            "defaults",
            "escalate_on",
            "health_check",
        ]
    };
}

const ROOT_KEYS: &[&str] = root_keys!("version");

/// The root keys of the unversioned policy-store form: the JSON-DSL's without `version`,
/// plus the ids the store kept inside the document.
const STORE_ROOT_KEYS: &[&str] = root_keys!("policy_id", "tenant_id");

/// Parses and normalises one policy of `tenant`; `source` names the document in messages.
/// Returns every problem found (up to `ERRORS_PER_DOCUMENT_MAX`), never panics on input.
pub fn parse_policy(
    tenant: &str,
    policy_id: &str,
    source: &str,
    bytes: &[u8],
) -> Result<Policy, Vec<PolicyError>> {
    let mut problems = Problems::new(source);
    check_ids(&mut problems, tenant, policy_id);
    let Some(root) = read_document(&mut problems, bytes) else {
        return Err(problems.into_vec());
    };
    check_structure(&mut problems, "$", &root, 0);
    let policy = compile(&mut problems, &root, tenant, policy_id);
    match policy {
        Some(policy) if problems.is_empty() => {
            policy.check();
            Ok(policy)
        }
        _ => Err(problems.into_vec()),
    }
}

/// Whether `s` is a valid tenant id (`^[A-Za-z0-9_.-]{1,64}$`).
pub fn is_tenant_id(s: &str) -> bool {
    is_id(s, TENANT_ID_BYTES_MAX)
}

/// Whether `s` is a valid policy id (`^[A-Za-z0-9_.-]{1,128}$`).
pub fn is_policy_id(s: &str) -> bool {
    is_id(s, POLICY_ID_BYTES_MAX)
}

fn is_id(s: &str, bytes_max: usize) -> bool {
    let ok_byte = |b: u8| b.is_ascii_alphanumeric() || b"_.-".contains(&b);
    (1..=bytes_max).contains(&s.len()) && s.bytes().all(ok_byte)
}

fn check_ids(problems: &mut Problems, tenant: &str, policy_id: &str) {
    if !is_tenant_id(tenant) {
        let message = format!(
            "tenant id {:?} must match ^[A-Za-z0-9_.-]{{1,{TENANT_ID_BYTES_MAX}}}$",
            shown(tenant)
        );
        problems.add("$", message);
    }
    if !is_policy_id(policy_id) {
        let message = format!(
            "policy id {:?} must match ^[A-Za-z0-9_.-]{{1,{POLICY_ID_BYTES_MAX}}}$",
            shown(policy_id)
        );
        problems.add("$", message);
    }
}

fn read_document(problems: &mut Problems, bytes: &[u8]) -> Option<Json> {
    if bytes.len() > POLICY_FILE_BYTES_MAX {
        let message = format!("{} bytes; at most {POLICY_FILE_BYTES_MAX}", bytes.len());
        problems.add("$", message);
        return None;
    }
    if let Err(e) = std::str::from_utf8(bytes) {
        problems.add(
            "$",
            format!("not UTF-8 (invalid byte at offset {})", e.valid_up_to()),
        );
        return None;
    }
    parse_root(problems, bytes)
}

fn compile(problems: &mut Problems, root: &Json, tenant: &str, id: &str) -> Option<Policy> {
    let store_form = is_store_form(root);
    let keys = if store_form {
        STORE_ROOT_KEYS
    } else {
        ROOT_KEYS
    };
    let obj = Obj::read(problems, "$", root, keys)?;
    let version = if store_form {
        read_store_form(problems, obj, tenant, id);
        Some(STORE_FORM_VERSION)
    } else {
        read_version(problems, obj)
    };
    let routing = read_routing(problems, obj);
    let sticky = obj
        .get("sticky")
        .and_then(|v| read_sticky(problems, &obj.path_of("sticky"), v, store_form));
    let circuit_breaker = obj
        .get("circuit_breaker")
        .and_then(|v| read_breaker(problems, &obj.path_of("circuit_breaker"), v));
    let rate_limit = obj
        .get("rate_limit")
        .and_then(|v| read_rate_limit(problems, &obj.path_of("rate_limit"), v));
    let balance = obj
        .get("balance")
        .map(|v| read_balance(problems, &obj.path_of("balance"), v))
        .unwrap_or_default();
    let pre = read_stages(problems, obj, StageKind::Pre);
    let validators = read_stages(problems, obj, StageKind::Validator);
    let post = read_stages(problems, obj, StageKind::Post);
    let stages = pre.len() + validators.len() + post.len();
    if stages > STAGES_MAX {
        let message = format!("{stages} extension stages; at most {STAGES_MAX} in all");
        problems.add("$", message);
    }
    let timeout_ms = obj
        .int(problems, "timeout_ms", 1, TIMEOUT_MS_MAX.into())
        .map(|t| t as u32);
    let cooldown_ms = obj
        .int(problems, "cooldown_ms", 0, COOLDOWN_MS_MAX as i64)
        .map_or(COOLDOWN_MS_DEFAULT, |ms| ms as u64);
    let shadow = match obj.get("shadow") {
        Some(v) => read_shadow(problems, &obj.path_of("shadow"), v, &routing.providers),
        None => Box::default(),
    };
    let budgets = match obj.get("budgets") {
        Some(v) => read_budgets(problems, &obj.path_of("budgets"), v),
        None => Box::default(),
    };
    read_deprecated(problems, obj);
    let version = version?;
    Some(Policy {
        tenant: tenant.into(),
        id: id.into(),
        version: version.into(),
        weights: WeightTable::new(&routing.providers),
        providers: routing.providers.into(),
        fallbacks: routing.fallbacks.into(),
        legacy_fallback: routing.legacy_fallback,
        sticky,
        circuit_breaker,
        rate_limit,
        balance,
        pre: pre.into(),
        validators: validators.into(),
        post: post.into(),
        timeout_ms,
        cooldown_ms,
        shadow,
        budgets,
    })
}

/// An object without `version` that names `policy_id` or `tenant_id`: see the module doc.
fn is_store_form(root: &Json) -> bool {
    let Json::Obj(members) = root else {
        return false;
    };
    let has = |key: &str| members.iter().any(|(k, _)| k == key);
    !has("version") && (has("policy_id") || has("tenant_id"))
}

/// The store form's own rules: both ids, agreeing with where the document is stored, and
/// a non-empty `weights` map of fractions (the 0–100 scale did not exist there).
fn read_store_form(problems: &mut Problems, obj: Obj, tenant: &str, id: &str) {
    for (key, stored_under, what) in [
        ("tenant_id", tenant, "tenant"),
        ("policy_id", id, "policy id"),
    ] {
        let Some(v) = obj.required(problems, key) else {
            continue;
        };
        let path = obj.path_of(key);
        if let Some(s) = string(problems, &path, v) {
            if s != stored_under {
                let message = format!(
                    "{:?} differs from the {what} the document is stored under ({:?})",
                    shown(s),
                    shown(stored_under)
                );
                problems.add(&path, message);
            }
        }
    }
    let Some(Json::Obj(members)) = obj.required(problems, "weights") else {
        return;
    };
    let path = obj.path_of("weights");
    if members.is_empty() {
        problems.add(&path, "must name at least one provider");
    }
    for (name, value) in members {
        if let Json::Num(n) = value {
            if n.as_f64().is_some_and(|f| f > 1.0) {
                let message =
                    format!("must be from 0.0 to 1.0 in a document without version, got {n}");
                problems.add(&key_path(&path, name), message);
            }
        }
    }
}

fn read_version<'j>(problems: &mut Problems, obj: Obj<'j, '_>) -> Option<&'j str> {
    let v = obj.required(problems, "version")?;
    let path = obj.path_of("version");
    let s = string(problems, &path, v)?;
    let well_formed = s.len() <= VERSION_BYTES_MAX
        && s.split_once('.').is_some_and(|(major, minor)| {
            let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
            digits(major) && digits(minor)
        });
    if !well_formed {
        problems.add(
            &path,
            format!("{:?} must look like \"1.0\" (^[0-9]+\\.[0-9]+$)", shown(s)),
        );
        return None;
    }
    Some(s)
}

/// Providers and fallbacks: fallback targets are resolved to indices, appending undeclared
/// ones as fallback-only providers.
struct Routing {
    providers: Vec<Provider>,
    fallbacks: Vec<FallbackRule>,
    legacy_fallback: Option<LegacyFallback>,
}

fn read_routing(problems: &mut Problems, obj: Obj) -> Routing {
    let problems_before = problems.len();
    let mut providers = Vec::new();
    if let Some(v) = obj.get("providers") {
        read_provider_list(problems, &obj.path_of("providers"), v, &mut providers);
    }
    if let Some(v) = obj.get("weights") {
        read_weight_map(problems, &obj.path_of("weights"), v, &mut providers);
    }
    if obj.get("providers").is_none() && obj.get("weights").is_none() {
        problems.add(
            "$",
            "missing both `providers` and `weights`; give at least one",
        );
    }
    let mut fallbacks = Vec::new();
    if let Some(v) = obj.get("fallbacks") {
        read_fallbacks(
            problems,
            &obj.path_of("fallbacks"),
            v,
            &mut providers,
            &mut fallbacks,
        );
    }
    let legacy_fallback = obj
        .get("fallback")
        .and_then(|v| read_legacy_fallback(problems, &obj.path_of("fallback"), v, &mut providers));
    let routable = providers.iter().any(|p| p.weight > 0);
    // Judged only on a clean section: a provider dropped for a typo would mislead it.
    let clean = problems.len() == problems_before;
    if clean && !routable && fallbacks.is_empty() && legacy_fallback.is_none() {
        problems.add(
            "$",
            "nothing to route to: no provider has a weight > 0 and no fallback",
        );
    }
    Routing {
        providers,
        fallbacks,
        legacy_fallback,
    }
}

const PROVIDER_KEYS: &[&str] = &[
    "name",
    "weight",
    "priority",
    "expected_latency_ms",
    "cost",
    "capabilities",
    "rpm",
    "tpm",
];

fn read_provider_list(problems: &mut Problems, path: &str, v: &Json, out: &mut Vec<Provider>) {
    let Some(items) = array(problems, path, v) else {
        return;
    };
    if items.is_empty() {
        problems.add(path, "must list at least one provider");
    }
    for (i, item) in items.iter().enumerate() {
        let at = index_path(path, i);
        if let Some(provider) = read_provider(problems, &at, item) {
            if !add_provider(problems, &key_path(&at, "name"), out, provider) {
                return;
            }
        }
    }
}

fn read_provider(problems: &mut Problems, path: &str, v: &Json) -> Option<Provider> {
    let o = Obj::read(problems, path, v, PROVIDER_KEYS)?;
    let name = o.required(problems, "name");
    let name = name.and_then(|v| provider_name(problems, &o.path_of("name"), v));
    let weight = o.required(problems, "weight");
    let weight = weight.and_then(|v| {
        int_in(
            problems,
            &o.path_of("weight"),
            v,
            0,
            WEIGHT_POINTS_MAX.into(),
        )
    });
    // Beamline's `priority` (0–100): accepted, not used for routing.
    o.int(problems, "priority", 0, 100);
    let expected_latency_ms = o.float(
        problems,
        "expected_latency_ms",
        0.0,
        PROVIDER_LATENCY_MS_MAX,
    );
    let cost = o.float(problems, "cost", 0.0, PROVIDER_COST_MAX);
    let capabilities = match o.get("capabilities") {
        Some(v) => read_capabilities(problems, &o.path_of("capabilities"), v),
        None => Box::default(),
    };
    let limits = ProviderLimits {
        rpm: o
            .int(problems, "rpm", 1, PROVIDER_RPM_MAX.into())
            .map(|n| n as u32),
        tpm: o
            .int(problems, "tpm", 1, PROVIDER_TPM_MAX.into())
            .map(|n| n as u32),
    };
    Some(Provider {
        name: name?.into(),
        weight: weight? as u32 * WEIGHT_UNITS_PER_POINT,
        expected_latency_ms,
        cost,
        capabilities,
        limits,
    })
}

fn read_capabilities(problems: &mut Problems, path: &str, v: &Json) -> Box<[Box<str>]> {
    let Some(items) = array(problems, path, v) else {
        return Box::default();
    };
    if items.len() > CAPABILITIES_PER_PROVIDER_MAX {
        let message = format!(
            "{} tags; at most {CAPABILITIES_PER_PROVIDER_MAX}",
            items.len()
        );
        problems.add(path, message);
        return Box::default();
    }
    let mut tags: Vec<Box<str>> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = index_path(path, i);
        let Some(tag) = string(problems, &at, item) else {
            continue;
        };
        if tag.is_empty() || tag.len() > CAPABILITY_BYTES_MAX {
            problems.add(
                &at,
                format!("a tag needs 1 to {CAPABILITY_BYTES_MAX} bytes"),
            );
        } else if tags.iter().any(|t| &**t == tag) {
            problems.add(&at, format!("duplicate capability {:?}", shown(tag)));
        } else {
            tags.push(tag.into());
        }
    }
    tags.into()
}

/// A provider name (`^[a-z0-9_]+$`, 1–255), as in `providers`, `weights` and `to`.
fn provider_name<'j>(problems: &mut Problems, path: &str, v: &'j Json) -> Option<&'j str> {
    let name = string(problems, path, v)?;
    check_provider_name(problems, path, name).then_some(name)
}

fn check_provider_name(problems: &mut Problems, path: &str, name: &str) -> bool {
    let ok_byte = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    let ok = (1..=NAME_CHARS_MAX).contains(&name.len()) && name.bytes().all(ok_byte);
    if !ok {
        let message = format!(
            "provider name {:?} must match ^[a-z0-9_]+$ (1 to {NAME_CHARS_MAX} characters)",
            shown(name)
        );
        problems.add(path, message);
    }
    ok
}

/// Appends `provider` unless its name is taken or the policy is full; `false` when full.
fn add_provider(
    problems: &mut Problems,
    path: &str,
    providers: &mut Vec<Provider>,
    provider: Provider,
) -> bool {
    if providers.iter().any(|p| p.name == provider.name) {
        problems.add(
            path,
            format!("duplicate provider {:?}", shown(&provider.name)),
        );
        return true;
    }
    if providers.len() == PROVIDERS_PER_POLICY_MAX {
        let message = format!("more than {PROVIDERS_PER_POLICY_MAX} providers in one policy");
        problems.add(path, message);
        return false;
    }
    providers.push(provider);
    true
}

/// The `weights` map: fractions when every value is ≤ 1.0, else the 0–100 scale.
fn read_weight_map(problems: &mut Problems, path: &str, v: &Json, out: &mut Vec<Provider>) {
    let Json::Obj(members) = v else {
        expected(problems, path, "an object of provider name to weight", v);
        return;
    };
    let mut entries = Vec::with_capacity(members.len().min(PROVIDERS_PER_POLICY_MAX));
    for (name, value) in members {
        let at = key_path(path, name);
        let weight = float_in(problems, &at, value, 0.0, WEIGHT_POINTS_MAX.into());
        if check_provider_name(problems, &at, name) {
            entries.extend(weight.map(|w| (at, name, w)));
        }
    }
    let fractions = entries.iter().all(|&(_, _, w)| w <= 1.0);
    let scale = if fractions {
        WEIGHT_UNITS_FULL
    } else {
        WEIGHT_UNITS_PER_POINT
    };
    for (at, name, w) in entries {
        if out.iter().any(|p| *p.name == **name) {
            problems.add(
                &at,
                format!("{:?} is declared in both providers and weights", name),
            );
            continue;
        }
        let provider = bare_provider(name, (w * f64::from(scale)).round() as u32);
        if !add_provider(problems, &at, out, provider) {
            return;
        }
    }
}

/// A provider with a name and a weight but no declared figures.
fn bare_provider(name: &str, weight: u32) -> Provider {
    Provider {
        name: name.into(),
        weight,
        expected_latency_ms: None,
        cost: None,
        capabilities: Box::default(),
        limits: ProviderLimits::default(),
    }
}

/// The index of provider `name`, appending it as fallback-only if not declared.
fn target(
    problems: &mut Problems,
    path: &str,
    providers: &mut Vec<Provider>,
    name: &str,
) -> Option<ProviderIdx> {
    let idx = match providers.iter().position(|p| &*p.name == name) {
        Some(i) => i,
        None => {
            if !add_provider(problems, path, providers, bare_provider(name, 0)) {
                return None;
            }
            providers.len() - 1
        }
    };
    u8::try_from(idx).ok().map(ProviderIdx)
}

const RULE_KEYS: &[&str] = &["when", "to", "retry", "backoff"];

fn read_fallbacks(
    problems: &mut Problems,
    path: &str,
    v: &Json,
    providers: &mut Vec<Provider>,
    out: &mut Vec<FallbackRule>,
) {
    let Some(items) = array(problems, path, v) else {
        return;
    };
    if items.len() > FALLBACK_RULES_MAX {
        let message = format!("{} rules; at most {FALLBACK_RULES_MAX}", items.len());
        problems.add(path, message);
    }
    for (i, item) in items.iter().take(FALLBACK_RULES_MAX).enumerate() {
        out.extend(read_rule(problems, &index_path(path, i), item, providers));
    }
}

fn read_rule(
    problems: &mut Problems,
    path: &str,
    v: &Json,
    providers: &mut Vec<Provider>,
) -> Option<FallbackRule> {
    let o = Obj::read(problems, path, v, RULE_KEYS)?;
    let when = o.required(problems, "when");
    let when = when.map(|v| compile_when(problems, &o.path_of("when"), v));
    let retry = o.int(problems, "retry", 0, RETRIES_MAX.into()).unwrap_or(1) as u32;
    let backoff = o
        .get("backoff")
        .and_then(|v| read_backoff(problems, &o.path_of("backoff"), v));
    let to_path = o.path_of("to");
    let to = o
        .required(problems, "to")
        .and_then(|v| provider_name(problems, &to_path, v))?;
    let to = target(problems, &to_path, providers, to)?;
    Some(FallbackRule {
        when: when?,
        retry,
        to,
        backoff,
    })
}

fn read_backoff(problems: &mut Problems, path: &str, v: &Json) -> Option<Backoff> {
    let o = Obj::read(
        problems,
        path,
        v,
        &["strategy", "base_ms", "max_ms", "jitter"],
    )?;
    let strategy = match o.string(problems, "strategy") {
        None | Some("exponential") => BackoffStrategy::Exponential,
        Some("linear") => BackoffStrategy::Linear,
        Some("fixed") => BackoffStrategy::Fixed,
        Some(other) => {
            let message = format!(
                "unknown strategy {:?} (exponential, linear, fixed)",
                shown(other)
            );
            problems.add(&o.path_of("strategy"), message);
            BackoffStrategy::Exponential
        }
    };
    let base_ms = o.int(problems, "base_ms", 1, BACKOFF_BASE_MS_MAX.into());
    let base_ms = base_ms.unwrap_or(100) as u32;
    let max_ms = o.int(problems, "max_ms", 1, BACKOFF_DELAY_MS_MAX.into());
    let max_ms = max_ms.unwrap_or(5_000) as u32;
    if base_ms > max_ms {
        let message = format!("base_ms {base_ms} exceeds max_ms {max_ms}");
        problems.add(path, message);
    }
    let jitter = o.boolean(problems, "jitter").unwrap_or(true);
    Some(Backoff {
        strategy,
        base_ms,
        max_ms,
        jitter,
    })
}

/// The legacy `fallback {provider, conditions}`.
fn read_legacy_fallback(
    problems: &mut Problems,
    path: &str,
    v: &Json,
    providers: &mut Vec<Provider>,
) -> Option<LegacyFallback> {
    let o = Obj::read(problems, path, v, &["provider", "conditions"])?;
    let mut statuses: Vec<Box<str>> = Vec::new();
    let mut on_all_failed = true;
    if let Some(v) = o.get("conditions") {
        let at = o.path_of("conditions");
        let items = array(problems, &at, v).unwrap_or_default();
        if items.len() > LIST_LITERALS_MAX {
            problems.add(
                &at,
                format!("{} conditions; at most {LIST_LITERALS_MAX}", items.len()),
            );
        }
        for (i, item) in items.iter().take(LIST_LITERALS_MAX).enumerate() {
            match string(problems, &index_path(&at, i), item) {
                Some("") => problems.add(&index_path(&at, i), "empty condition"),
                Some(s) => statuses.push(s.into()),
                None => {}
            }
        }
        on_all_failed =
            statuses.is_empty() || statuses.iter().any(|s| &**s == "all_providers_failed");
        statuses.retain(|s| &**s != "all_providers_failed");
    }
    let to_path = o.path_of("provider");
    let name = o
        .required(problems, "provider")
        .and_then(|v| string(problems, &to_path, v))?;
    if !(1..=NAME_CHARS_MAX).contains(&name.chars().count()) {
        problems.add(&to_path, format!("needs 1 to {NAME_CHARS_MAX} characters"));
        return None;
    }
    let to = target(problems, &to_path, providers, name)?;
    Some(LegacyFallback {
        to,
        statuses: statuses.into(),
        on_all_failed,
    })
}

/// `store_form`: the policy store's `ttl_sec` is accepted as `ttl_seconds`.
fn read_sticky(problems: &mut Problems, path: &str, v: &Json, store_form: bool) -> Option<Sticky> {
    let keys: &[&str] = if store_form {
        &["enabled", "session_key", "ttl", "ttl_seconds", "ttl_sec"]
    } else {
        &["enabled", "session_key", "ttl", "ttl_seconds"]
    };
    let o = Obj::read(problems, path, v, keys)?;
    let enabled = o.required(problems, "enabled");
    let enabled = enabled.and_then(|v| boolean(problems, &o.path_of("enabled"), v));
    let session_key = o.string(problems, "session_key").unwrap_or("session_id");
    if !(1..=NAME_CHARS_MAX).contains(&session_key.chars().count()) {
        let message = format!("needs 1 to {NAME_CHARS_MAX} characters");
        problems.add(&o.path_of("session_key"), message);
    }
    let ttl = o.string(problems, "ttl").and_then(|s| match parse_ttl(s) {
        Ok(ms) => Some(ms),
        Err(message) => {
            problems.add(&o.path_of("ttl"), message);
            None
        }
    });
    let max_s = (STICKY_TTL_MS_MAX / 1000) as i64;
    let ttl_seconds = o
        .int(problems, "ttl_seconds", 1, max_s)
        .or_else(|| o.int(problems, "ttl_sec", 1, max_s))
        .map(|s| s as u64 * 1000);
    if let (Some(a), Some(b)) = (ttl, ttl_seconds) {
        if a != b {
            let message = format!(
                "ttl ({} s) and ttl_seconds ({} s) disagree",
                a / 1000,
                b / 1000
            );
            problems.add(path, message + "; give one, or the same duration in both");
        }
    }
    let ttl_ms = ttl.or(ttl_seconds).unwrap_or(STICKY_TTL_DEFAULT_MS);
    enabled?.then(|| Sticky {
        session_key: session_key.into(),
        ttl_ms,
    })
}

/// `"10m"` → 600_000: digits then `s`, `m` or `h`; 1 s to `STICKY_TTL_MS_MAX`.
fn parse_ttl(s: &str) -> Result<u64, String> {
    let (digits, unit_ms) = match s.as_bytes().last() {
        Some(b's') => (&s[..s.len() - 1], 1_000),
        Some(b'm') => (&s[..s.len() - 1], 60_000),
        Some(b'h') => (&s[..s.len() - 1], 3_600_000),
        _ => ("", 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{:?} must be a duration like \"30s\", \"10m\" or \"1h\"",
            shown(s)
        ));
    }
    let ms = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_ms));
    match ms {
        Some(ms) if (1..=STICKY_TTL_MS_MAX).contains(&ms) => Ok(ms),
        _ => {
            let hours = STICKY_TTL_MS_MAX / 3_600_000;
            Err(format!("{:?} must be from 1s to {hours}h", shown(s)))
        }
    }
}

const BREAKER_KEYS: &[&str] = &[
    "enabled",
    "failure_threshold",
    "success_threshold",
    "timeout_ms",
    "half_open_max_calls",
    "error_rate_threshold",
    "error_rate_window_seconds",
    "error_rate_min_calls",
];

/// Ranges and defaults are those of Beamline's schema, plus `error_rate_min_calls`.
fn read_breaker(problems: &mut Problems, path: &str, v: &Json) -> Option<BreakerConfig> {
    let o = Obj::read(problems, path, v, BREAKER_KEYS)?;
    let d = BreakerConfig::default();
    let mut int = |key: &str, min: u32, max: u32, default: u32| {
        let n = o.int(problems, key, min.into(), max.into());
        n.map_or(default, |n| n as u32)
    };
    let failure_threshold = int("failure_threshold", 1, 100, d.failure_threshold);
    let success_threshold = int("success_threshold", 1, 10, d.success_threshold);
    let timeout_ms = int("timeout_ms", 1_000, 300_000, d.timeout_ms as u32);
    let half_open_max_calls = int("half_open_max_calls", 1, 100, d.half_open_max_calls);
    let window_s = (d.error_rate_window_ms / 1000) as u32;
    let window_s = int("error_rate_window_seconds", 1, 3_600, window_s);
    let error_rate_min_calls = int("error_rate_min_calls", 1, 10_000, d.error_rate_min_calls);
    let error_rate_threshold = o.float(problems, "error_rate_threshold", 0.0, 1.0);
    let config = BreakerConfig {
        failure_threshold,
        success_threshold,
        timeout_ms: timeout_ms.into(),
        half_open_max_calls,
        error_rate_threshold: error_rate_threshold.unwrap_or(d.error_rate_threshold),
        error_rate_window_ms: u64::from(window_s) * 1000,
        error_rate_min_calls,
    };
    let enabled = o.boolean(problems, "enabled").unwrap_or(false);
    enabled.then_some(config)
}

fn read_rate_limit(problems: &mut Problems, path: &str, v: &Json) -> Option<RateLimit> {
    let o = Obj::read(
        problems,
        path,
        v,
        &["enabled", "requests_per_second", "burst"],
    )?;
    let enabled = o.boolean(problems, "enabled").unwrap_or(false);
    let rps = o
        .int(
            problems,
            "requests_per_second",
            1,
            RATE_LIMIT_RPS_MAX.into(),
        )
        .map(|n| n as u32);
    let burst = o.int(problems, "burst", 1, RATE_LIMIT_BURST_MAX.into());
    let burst = burst.map(|n| n as u32);
    if enabled && o.get("requests_per_second").is_none() {
        problems.add(
            &o.path_of("requests_per_second"),
            "required when enabled is true",
        );
    }
    let requests_per_second = rps.filter(|_| enabled)?;
    let burst = burst.unwrap_or(requests_per_second);
    Some(RateLimit {
        requests_per_second,
        burst,
    })
}

const BALANCE_STRATEGIES: &str = "weighted, least_latency, least_outstanding, lowest_cost";

/// `shadow [{provider, ratio}]`: each provider is one of the policy's (so a shadow's
/// results can be told from its primary's and its name obeys the provider rules), named
/// once; each ratio is in (0, 1] and, since a decision gets at most one shadow, the
/// ratios add up to at most 1.
fn read_shadow(
    problems: &mut Problems,
    path: &str,
    v: &Json,
    providers: &[Provider],
) -> Box<[Shadow]> {
    let Some(items) = array(problems, path, v) else {
        return Box::default();
    };
    if items.len() > SHADOWS_PER_POLICY_MAX {
        let message = format!("{} entries; at most {SHADOWS_PER_POLICY_MAX}", items.len());
        problems.add(path, message);
        return Box::default();
    }
    let mut out: Vec<Shadow> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = index_path(path, i);
        out.extend(read_shadow_entry(problems, &at, item, providers, &out));
    }
    let total: u32 = out.iter().map(|s| s.ppm).sum();
    if total > SHADOW_PPM_FULL {
        let message = format!(
            "ratios add up to {}; a decision gets at most one shadow, so at most 1",
            f64::from(total) / f64::from(SHADOW_PPM_FULL)
        );
        problems.add(path, message);
    }
    out.into()
}

fn read_shadow_entry(
    problems: &mut Problems,
    path: &str,
    v: &Json,
    providers: &[Provider],
    seen: &[Shadow],
) -> Option<Shadow> {
    let o = Obj::read(problems, path, v, &["provider", "ratio"])?;
    let name = o.required(problems, "provider");
    let name = name.and_then(|v| provider_name(problems, &o.path_of("provider"), v));
    let ratio = o.required(problems, "ratio");
    let ratio = ratio.and_then(|v| float_in(problems, &o.path_of("ratio"), v, 0.0, 1.0));
    let ppm = match ratio {
        Some(r) if r > 0.0 => ((r * f64::from(SHADOW_PPM_FULL)).round() as u32).max(1),
        Some(_) => {
            problems.add(&o.path_of("ratio"), "must be above 0 (and at most 1)");
            return None;
        }
        None => return None,
    };
    let name = name?;
    let at = o.path_of("provider");
    let Some(i) = providers.iter().position(|p| &*p.name == name) else {
        let message = format!(
            "unknown provider {:?}; a shadow names one of the policy's providers \
             (declare a shadow-only one with weight 0)",
            shown(name)
        );
        problems.add(&at, message);
        return None;
    };
    let provider = ProviderIdx(i as u8);
    if seen.iter().any(|s| s.provider == provider) {
        problems.add(&at, format!("duplicate shadow provider {:?}", shown(name)));
        return None;
    }
    Some(Shadow { provider, ppm })
}

const BUDGET_WINDOWS: &str = "1m, 1h, 1d, 30d, calendar_day, calendar_month";

/// `budgets [{scope, window, max_cost, max_tokens, max_requests}]`: each entry needs a
/// window and at least one limit; two entries may not count the same scope over the same
/// window (one would always hide the other's limits).
fn read_budgets(problems: &mut Problems, path: &str, v: &Json) -> Box<[Budget]> {
    let Some(items) = array(problems, path, v) else {
        return Box::default();
    };
    if items.len() > BUDGETS_PER_POLICY_MAX {
        let message = format!("{} entries; at most {BUDGETS_PER_POLICY_MAX}", items.len());
        problems.add(path, message);
        return Box::default();
    }
    let mut out: Vec<Budget> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = index_path(path, i);
        let Some(budget) = read_budget(problems, &at, item) else {
            continue;
        };
        if out
            .iter()
            .any(|b| b.scope == budget.scope && b.window == budget.window)
        {
            let message = format!(
                "a second budget of scope {} over window {}; put its limits in one entry",
                budget.scope_name(),
                budget.window.as_str()
            );
            problems.add(&at, message);
            continue;
        }
        out.push(budget);
    }
    out.into()
}

fn read_budget(problems: &mut Problems, path: &str, v: &Json) -> Option<Budget> {
    let keys = ["scope", "window", "max_cost", "max_tokens", "max_requests"];
    let o = Obj::read(problems, path, v, &keys)?;
    let scope = match o.string(problems, "scope") {
        None | Some("tenant") => Some(BudgetScope::Tenant),
        Some(s) => match s.strip_prefix("metadata.") {
            Some(key) if is_policy_id(key) => Some(BudgetScope::Metadata(key.into())),
            _ => {
                let message = format!(
                    "scope {:?} must be \"tenant\" or \"metadata.<key>\" with a key of \
                     ^[A-Za-z0-9_.-]{{1,{POLICY_ID_BYTES_MAX}}}$",
                    shown(s)
                );
                problems.add(&o.path_of("scope"), message);
                None
            }
        },
    };
    let window = o.required(problems, "window");
    let window = match window.and_then(|w| string(problems, &o.path_of("window"), w)) {
        Some(w) => BudgetWindow::parse(w).or_else(|| {
            let message = format!("unknown window {:?} ({BUDGET_WINDOWS})", shown(w));
            problems.add(&o.path_of("window"), message);
            None
        }),
        None => None,
    };
    let max_cost = o.float(problems, "max_cost", 0.0, BUDGET_COST_MAX);
    let count =
        |problems: &mut Problems, key| o.int(problems, key, 1, BUDGET_COUNT_MAX).map(|n| n as u64);
    let max_tokens = count(problems, "max_tokens");
    let max_requests = count(problems, "max_requests");
    let any_limit = ["max_cost", "max_tokens", "max_requests"]
        .iter()
        .any(|k| o.get(k).is_some());
    if !any_limit {
        problems.add(path, "a budget needs max_cost, max_tokens or max_requests");
        return None;
    }
    if max_cost.is_none() && max_tokens.is_none() && max_requests.is_none() {
        return None;
    }
    Some(Budget {
        scope: scope?,
        window: window?,
        max_cost,
        max_tokens,
        max_requests,
    })
}

/// `balance {strategy, explore_ratio, half_life_ms}`; each member optional.
fn read_balance(problems: &mut Problems, path: &str, v: &Json) -> Balance {
    let d = Balance::default();
    let Some(o) = Obj::read(
        problems,
        path,
        v,
        &["strategy", "explore_ratio", "half_life_ms"],
    ) else {
        return d;
    };
    let strategy = match o.string(problems, "strategy") {
        None | Some("weighted") => BalanceStrategy::Weighted,
        Some("least_latency") => BalanceStrategy::LeastLatency,
        Some("least_outstanding") => BalanceStrategy::LeastOutstanding,
        Some("lowest_cost") => BalanceStrategy::LowestCost,
        Some(other) => {
            let message = format!("unknown strategy {:?} ({BALANCE_STRATEGIES})", shown(other));
            problems.add(&o.path_of("strategy"), message);
            BalanceStrategy::Weighted
        }
    };
    let explore_ppm = o
        .float(problems, "explore_ratio", 0.0, 1.0)
        .map_or(d.explore_ppm, |r| {
            (r * f64::from(EXPLORE_PPM_FULL)).round() as u32
        });
    let half_life_ms = o
        .int(
            problems,
            "half_life_ms",
            HALF_LIFE_MS_MIN as i64,
            HALF_LIFE_MS_MAX as i64,
        )
        .map_or(d.half_life_ms, |n| n as u64);
    Balance {
        strategy,
        explore_ppm,
        half_life_ms,
    }
}

const PROCESSOR_KEYS: &[&str] = &["id", "mode", "config", "timeout_ms", "retry"];
const VALIDATOR_KEYS: &[&str] = &["id", "on_fail", "timeout_ms", "retry"];

fn read_stages(problems: &mut Problems, obj: Obj, kind: StageKind) -> Vec<Stage> {
    let key = match kind {
        StageKind::Pre => "pre",
        StageKind::Validator => "validators",
        StageKind::Post => "post",
    };
    let path = obj.path_of(key);
    let items = obj
        .get(key)
        .and_then(|v| array(problems, &path, v))
        .unwrap_or_default();
    if items.len() > STAGES_PER_TYPE_MAX {
        let message = format!(
            "{} stages; at most {STAGES_PER_TYPE_MAX} per type",
            items.len()
        );
        problems.add(&path, message);
    }
    let mut stages: Vec<Stage> = Vec::with_capacity(STAGES_PER_TYPE_MAX);
    for (i, item) in items.iter().take(STAGES_PER_TYPE_MAX).enumerate() {
        let at = index_path(&path, i);
        let Some(stage) = read_stage(problems, &at, item, kind) else {
            continue;
        };
        if stages.iter().any(|s| s.id == stage.id) {
            let message = format!("duplicate {key} id {:?}", shown(&stage.id));
            problems.add(&key_path(&at, "id"), message);
        } else {
            stages.push(stage);
        }
    }
    stages
}

fn read_stage(problems: &mut Problems, path: &str, v: &Json, kind: StageKind) -> Option<Stage> {
    let keys = if kind == StageKind::Validator {
        VALIDATOR_KEYS
    } else {
        PROCESSOR_KEYS
    };
    let o = Obj::read(problems, path, v, keys)?;
    let id_path = o.path_of("id");
    let id = o
        .required(problems, "id")
        .and_then(|v| string(problems, &id_path, v));
    let ok_byte = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    let id = id.filter(|id| {
        let ok = (1..=NAME_CHARS_MAX).contains(&id.len()) && id.bytes().all(ok_byte);
        if !ok {
            let message = format!("extension id {:?} must match ^[a-z0-9_]+$", shown(id));
            problems.add(
                &id_path,
                message + &format!(" (1 to {NAME_CHARS_MAX} characters)"),
            );
        }
        ok
    });
    let (required, on_fail) = match kind {
        StageKind::Validator => read_on_fail(problems, o),
        StageKind::Pre | StageKind::Post => (read_mode(problems, o), OnFail::Block),
    };
    let config = o
        .get("config")
        .and_then(|v| raw_config(problems, &o.path_of("config"), v));
    let timeout_ms = o.int(problems, "timeout_ms", 1, TIMEOUT_MS_MAX.into());
    let retry = o.int(problems, "retry", 0, RETRIES_MAX.into());
    let (timeout_ms, retry) = (timeout_ms.map(|n| n as u32), retry.map(|n| n as u32));
    Some(Stage {
        id: id?.into(),
        kind,
        required,
        on_fail,
        config,
        timeout_ms,
        retry,
    })
}

/// `mode`: `required` fails closed, `optional` (the default) fails open.
fn read_mode(problems: &mut Problems, o: Obj) -> bool {
    match o.string(problems, "mode") {
        Some("required") => true,
        None | Some("optional") => false,
        Some(other) => {
            let message = format!("unknown mode {:?} (required, optional)", shown(other));
            problems.add(&o.path_of("mode"), message);
            false
        }
    }
}

fn read_on_fail(problems: &mut Problems, o: Obj) -> (bool, OnFail) {
    let on_fail = match o.string(problems, "on_fail") {
        None | Some("block") => OnFail::Block,
        Some("warn") => OnFail::Warn,
        Some("ignore") => OnFail::Ignore,
        Some(other) => {
            let message = format!("unknown on_fail {:?} (block, warn, ignore)", shown(other));
            problems.add(&o.path_of("on_fail"), message);
            OnFail::Block
        }
    };
    (on_fail == OnFail::Block, on_fail)
}

/// An extension's `config` object, kept as raw JSON for the transport to forward.
fn raw_config(problems: &mut Problems, path: &str, v: &Json) -> Option<Box<RawValue>> {
    if !matches!(v, Json::Obj(_)) {
        expected(problems, path, "an object", v);
        return None;
    }
    match serde_json::value::to_raw_value(v) {
        Ok(raw) => Some(raw),
        Err(e) => {
            problems.add(path, format!("cannot keep config: {e}"));
            None
        }
    }
}

/// Deprecated Beamline keys: type-checked, otherwise ignored.
fn read_deprecated(problems: &mut Problems, obj: Obj) {
    for key in ["metadata", "defaults"] {
        if let Some(v) = obj.get(key) {
            if !matches!(v, Json::Obj(_)) {
                expected(problems, &obj.path_of(key), "an object", v);
            }
        }
    }
    if let Some(v) = obj.get("escalate_on") {
        let path = obj.path_of("escalate_on");
        for (i, item) in array(problems, &path, v)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            string(problems, &index_path(&path, i), item);
        }
    }
    if let Some(v) = obj.get("health_check") {
        let keys = ["enabled", "interval_ms", "timeout_ms", "failure_threshold"];
        Obj::read(problems, &obj.path_of("health_check"), v, &keys);
    }
}

#[cfg(test)]
mod tests;
