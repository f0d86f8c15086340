use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::policy::{DOCUMENT_DEPTH_MAX, ERRORS_PER_DOCUMENT_MAX};

const BEAMLINE_POLICIES: &str = "/work/shared/compat/beamline/policies";

fn parse(json: &str) -> Result<Policy, Vec<PolicyError>> {
    parse_policy("acme", "default", "test.json", json.as_bytes())
}

fn ok(json: &str) -> Policy {
    match parse(json) {
        Ok(policy) => policy,
        Err(errors) => panic!("expected to load, got:\n{}", lines(&errors)),
    }
}

fn lines(errors: &[PolicyError]) -> String {
    errors.iter().map(|e| format!("  {e}\n")).collect()
}

/// Asserts the document is rejected with a problem at exactly `path` whose message contains
/// `needle`.
#[track_caller]
fn rejects(json: &str, path: &str, needle: &str) {
    let errors = parse(json).expect_err("expected the document to be rejected");
    let hit = errors
        .iter()
        .any(|e| e.path == path && e.message.contains(needle));
    assert!(
        hit,
        "no problem at {path} containing {needle:?}; got:\n{}",
        lines(&errors)
    );
}

/// A minimal valid JSON-DSL document with `extra` members appended at the root.
fn doc(extra: &str) -> String {
    let sep = if extra.is_empty() { "" } else { "," };
    format!(r#"{{"version":"1.0","providers":[{{"name":"openai","weight":100}}]{sep}{extra}}}"#)
}

/// The single fallback rule's condition of a document with `when`.
fn when(when: &str) -> Box<[Clause]> {
    let policy = ok(&doc(&format!(
        r#""fallbacks":[{{"when":{when},"to":"anthropic"}}]"#
    )));
    policy.fallbacks[0].when.clauses.clone()
}

#[track_caller]
fn when_rejects(when: &str, path_suffix: &str, needle: &str) {
    let json = doc(&format!(
        r#""fallbacks":[{{"when":{when},"to":"anthropic"}}]"#
    ));
    rejects(&json, &format!("$.fallbacks[0].when{path_suffix}"), needle);
}

fn var(v: ContextVar) -> Operand {
    Operand::Var(v)
}

fn s(v: &str) -> Literal {
    Literal::Str(v.into())
}

fn clause(op: Op, lhs: Operand, rhs: Operand) -> Clause {
    Clause { op, lhs, rhs }
}

/// Every Beamline fixture loads (the compatibility promise of SPEC §5).
#[test]
fn beamline_fixtures_all_load() {
    let dir = Path::new(BEAMLINE_POLICIES);
    if !dir.is_dir() {
        println!("note: {BEAMLINE_POLICIES} is absent; Beamline fixtures not checked");
        return;
    }
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let source = path.display().to_string();
        if let Err(errors) = parse_policy("beamline", "fixture", &source, &bytes) {
            panic!("{source} does not load:\n{}", lines(&errors));
        }
        count += 1;
    }
    assert_eq!(count, 13, "the Beamline fixture set has 13 policies");
}

/// Beamline's default fixture: weights, an appended fallback-only provider, sticky 10m.
#[test]
fn beamline_default_normalises() {
    let path = Path::new(BEAMLINE_POLICIES).join("default.json");
    let Ok(bytes) = std::fs::read(&path) else {
        println!("note: {} is absent; skipped", path.display());
        return;
    };
    let policy = parse_policy("acme", "default", "default.json", &bytes).unwrap();
    let names: Vec<&str> = policy.providers.iter().map(|p| &*p.name).collect();
    assert_eq!(names, ["openai", "anthropic", "local_llm"]);
    let weights: Vec<u32> = policy.providers.iter().map(|p| p.weight).collect();
    assert_eq!(weights, [700_000, 300_000, 0]);
    assert_eq!(policy.weights.total, 1_000_000);
    assert_eq!(policy.fallbacks[0].retry, 2);
    assert_eq!(policy.fallbacks[1].to, ProviderIdx(2));
    let sticky = policy.sticky.unwrap();
    assert_eq!((&*sticky.session_key, sticky.ttl_ms), ("user_id", 600_000));
    assert_eq!(&*policy.version, "1.0");
    assert!(policy.circuit_breaker.is_none() && policy.rate_limit.is_none());
}

#[test]
fn dsl_weights_become_units() {
    let policy = ok(r#"{"version":"1.0","providers":[
        {"name":"openai","weight":70},{"name":"anthropic","weight":30},
        {"name":"mistral","weight":0}]}"#);
    let weights: Vec<u32> = policy.providers.iter().map(|p| p.weight).collect();
    assert_eq!(weights, [700_000, 300_000, 0]);
    assert_eq!(&*policy.weights.cumulative, [700_000, 1_000_000, 1_000_000]);
    assert_eq!(policy.weighted_mask(), 0b011);
}

#[test]
fn legacy_fractions_round_to_units() {
    let policy = ok(r#"{"version":"1.0","weights":{"openai":0.1234567,"cohere":0.8765433}}"#);
    assert_eq!(policy.providers[0].weight, 123_457);
    assert_eq!(policy.providers[1].weight, 876_543);
}

/// A map with any value above 1.0 is on the 0–100 scale; all ≤ 1.0 means fractions.
#[test]
fn weights_map_scale_is_detected() {
    let hundred = ok(r#"{"version":"1.0","weights":{"openai":70,"cohere":30.5}}"#);
    assert_eq!(hundred.providers[0].weight, 700_000);
    assert_eq!(hundred.providers[1].weight, 305_000);
    let fractions = ok(r#"{"version":"1.0","weights":{"openai":1,"cohere":0.5}}"#);
    assert_eq!(fractions.providers[0].weight, 1_000_000);
    assert_eq!(fractions.providers[1].weight, 500_000);
}

#[test]
fn mixed_providers_and_weights_keep_order() {
    let policy = ok(
        r#"{"version":"1.0","providers":[{"name":"openai","weight":60}],
        "weights":{"cohere":0.4},"fallback":{"provider":"local_llm"}}"#,
    );
    let names: Vec<&str> = policy.providers.iter().map(|p| &*p.name).collect();
    assert_eq!(names, ["openai", "cohere", "local_llm"]);
    assert_eq!(policy.providers[1].weight, 400_000);
    rejects(
        r#"{"version":"1.0","providers":[{"name":"openai","weight":60}],"weights":{"openai":40}}"#,
        "$.weights.openai",
        "both providers and weights",
    );
}

/// Fallback targets not declared are appended once, with weight 0, after the declared ones.
#[test]
fn fallback_targets_append_fallback_only_providers() {
    let policy = ok(&doc(r#""fallbacks":[
        {"when":{"status":"timeout"},"to":"anthropic"},
        {"when":{"status":"5xx"},"to":"openai"},
        {"when":{"status":"429"},"to":"anthropic"}],
        "fallback":{"provider":"local_llm","conditions":["timeout"]}"#));
    let names: Vec<&str> = policy.providers.iter().map(|p| &*p.name).collect();
    assert_eq!(names, ["openai", "anthropic", "local_llm"]);
    let tos: Vec<u8> = policy.fallbacks.iter().map(|r| r.to.0).collect();
    assert_eq!(tos, [1, 0, 1]);
    let extra = &policy.providers[1];
    assert_eq!(
        (extra.weight, extra.cost, extra.capabilities.len()),
        (0, None, 0)
    );
    let legacy = policy.legacy_fallback.unwrap();
    assert_eq!(legacy.to, ProviderIdx(2));
    assert_eq!(&*legacy.statuses, [Box::from("timeout")]);
    assert!(!legacy.on_all_failed);
}

#[test]
fn legacy_fallback_conditions() {
    let all = |conditions: &str| {
        let json =
            format!(r#"{{"version":"1.0","weights":{{"openai":1}},"fallback":{conditions}}}"#);
        ok(&json).legacy_fallback.unwrap()
    };
    assert!(all(r#"{"provider":"local_llm"}"#).on_all_failed);
    assert!(all(r#"{"provider":"local_llm","conditions":[]}"#).on_all_failed);
    let mixed = all(r#"{"provider":"local_llm","conditions":["all_providers_failed","5xx"]}"#);
    assert!(mixed.on_all_failed);
    assert_eq!(&*mixed.statuses, [Box::from("5xx")]);
}

#[test]
fn shardline_provider_figures() {
    let policy = ok(
        r#"{"version":"1.0","providers":[{"name":"openai","weight":100,"priority":7,
        "expected_latency_ms":420.5,"cost":0.002,"capabilities":["vision","tools"]}]}"#,
    );
    let p = &policy.providers[0];
    assert_eq!((p.expected_latency_ms, p.cost), (Some(420.5), Some(0.002)));
    assert_eq!(&*p.capabilities, [Box::from("vision"), Box::from("tools")]);
}

#[test]
fn when_scalar_and_list_forms() {
    assert_eq!(
        *when(r#"{"status":"timeout","message_type":["chat","completion"]}"#),
        [
            clause(Op::Eq, var(ContextVar::Status), Operand::Lit(s("timeout"))),
            clause(
                Op::In,
                var(ContextVar::MessageType),
                Operand::List([s("chat"), s("completion")].into())
            ),
        ]
    );
    let metadata = when(r#"{"premium":true,"region":null,"tier":3}"#);
    assert_eq!(metadata[0].rhs, Operand::Lit(Literal::Bool(true)));
    assert_eq!(metadata[1].rhs, Operand::Lit(Literal::Null));
    assert_eq!(metadata[2].rhs, Operand::Lit(Literal::Num(3.0)));
}

/// Each operator spelling compiles, in the object form and in the operator-key form.
#[test]
fn when_every_operator_compiles() {
    let ops = [
        ("==", Op::Eq),
        ("!=", Op::Ne),
        (">", Op::Gt),
        ("<", Op::Lt),
        (">=", Op::Ge),
        ("<=", Op::Le),
        ("in", Op::In),
    ];
    for (text, op) in ops {
        let object = when(&format!(r#"{{"count":{{"{text}":2}}}}"#));
        let expected = clause(
            op,
            var(ContextVar::AttemptCount),
            Operand::Lit(Literal::Num(2.0)),
        );
        assert_eq!(
            &*object,
            std::slice::from_ref(&expected),
            "object form of {text}"
        );
        let keyed = when(&format!(r#"{{"{text}":[{{"var":"attempt.count"}},2]}}"#));
        assert_eq!(*keyed, [expected], "operator-key form of {text}");
    }
}

#[test]
fn when_operator_variants() {
    let range = when(r#"{"count":{">=":2,"<":5}}"#);
    assert_eq!(range.len(), 2);
    assert_eq!((range[0].op, range[1].op), (Op::Ge, Op::Lt));
    let reversed = when(r#"{"<":[1000,{"var":"constraints.max_latency_ms"}]}"#);
    let lit = Operand::Lit(Literal::Num(1000.0));
    assert_eq!(
        *reversed,
        [clause(Op::Lt, lit, var(ContextVar::MaxLatencyMs))]
    );
    let list = when(r#"{"in":[{"var":"status"},["timeout","5xx"]]}"#);
    assert_eq!(list[0].rhs, Operand::List([s("timeout"), s("5xx")].into()));
    let two_vars = when(r#"{"previous_provider":{"var":"metadata.preferred"}}"#);
    let preferred = var(ContextVar::Metadata("preferred".into()));
    assert_eq!(
        *two_vars,
        [clause(Op::Eq, var(ContextVar::PreviousProvider), preferred)]
    );
    let in_list = when(r#"{"status":{"in":["timeout","5xx"]}}"#);
    assert_eq!(in_list[0].op, Op::In);
    assert!(when("{}").is_empty(), "an empty when always matches");
}

#[test]
fn when_variable_names_resolve() {
    let cases = [
        ("status", ContextVar::Status),
        ("attempt.status", ContextVar::Status),
        ("previous_provider", ContextVar::PreviousProvider),
        ("attempt.previous_provider", ContextVar::PreviousProvider),
        ("message_type", ContextVar::MessageType),
        ("task.type", ContextVar::MessageType),
        ("tenant_id", ContextVar::TenantId),
        ("count", ContextVar::AttemptCount),
        ("attempt.count", ContextVar::AttemptCount),
        ("max_latency_ms", ContextVar::MaxLatencyMs),
        ("constraints.max_latency_ms", ContextVar::MaxLatencyMs),
        ("max_cost", ContextVar::MaxCost),
        ("constraints.max_cost", ContextVar::MaxCost),
        (
            "metadata.user_tier",
            ContextVar::Metadata("user_tier".into()),
        ),
        ("metadata.count", ContextVar::Metadata("count".into())),
        ("region", ContextVar::Metadata("region".into())),
    ];
    for (name, expected) in cases {
        let clauses = when(&format!(r#"{{"==":[{{"var":"{name}"}},null]}}"#));
        assert_eq!(clauses[0].lhs, var(expected), "{name}");
    }
}

#[test]
fn when_rejects_ill_typed_clauses() {
    when_rejects(r#"{">":[{"var":"count"},[1,2]]}"#, "[\">\"]", "`in`");
    when_rejects(r#"{"count":{">":[1,2]}}"#, ".count[\">\"]", "`in`");
    when_rejects(
        r#"{"==":["status","timeout"]}"#,
        "[\"==\"]",
        "two constants",
    );
    when_rejects(r#"{"in":[["a"],{"var":"status"}]}"#, ".in", "right-hand");
    when_rejects(r#"{"status":{">":"a"}}"#, ".status[\">\"]", "no order");
    when_rejects(
        r#"{"region":{">":"a"}}"#,
        ".region[\">\"]",
        "needs a number",
    );
    when_rejects(r#"{"count":"2"}"#, ".count", "is a number");
    when_rejects(r#"{"status":429}"#, ".status", "quote the value");
    when_rejects(r#"{"status":[429,"5xx"]}"#, ".status", "quote the value");
    when_rejects(r#"{"count":{"var":"status"}}"#, ".count", "string variable");
    when_rejects(
        r#"{"count":{">=":true}}"#,
        ".count[\">=\"]",
        "needs a number",
    );
}

#[test]
fn when_rejects_malformed_forms() {
    when_rejects(
        r#"{">=":[{"var":"count"},2,3]}"#,
        "[\">=\"]",
        "exactly 2 operands",
    );
    when_rejects(r#"{">=":{"var":"count"}}"#, "[\">=\"]", "expected an array");
    when_rejects(
        r#"{"count":{"=>":2}}"#,
        ".count[\"=>\"]",
        "unknown operator",
    );
    when_rejects(r#"{"count":{}}"#, ".count", "empty object");
    when_rejects(r#"{"status":[]}"#, ".status", "1 to 64 values");
    when_rejects(
        r#"{"status":[["a"]]}"#,
        ".status[0]",
        "expected a string, number",
    );
    when_rejects(
        r#"{"status":{"in":[{"x":1}]}}"#,
        ".status.in[0]",
        "expected a string",
    );
    when_rejects(
        r#"{"==":[{"var":1},2]}"#,
        "[\"==\"][0].var",
        "variable name",
    );
    when_rejects(
        r#"{"==":[{"var":"x","y":1},2]}"#,
        "[\"==\"][0]",
        "{\"var\": \"name\"}",
    );
    when_rejects(
        r#"{"constraints.exclude":"x"}"#,
        "[\"constraints.exclude\"]",
        "unknown var",
    );
    when_rejects(r#"{"metadata":"x"}"#, ".metadata", "unknown variable");
    when_rejects(
        r#"{"metadata.":"x"}"#,
        "[\"metadata.\"]",
        "unknown variable",
    );
    when_rejects(r#"{"bad key":"x"}"#, "[\"bad key\"]", "neither an operator");
    when_rejects(r#"["status"]"#, "", "expected an object");
}

#[test]
fn when_limits() {
    let values: Vec<String> = (0..=LIST_LITERALS_MAX)
        .map(|i| format!("\"s{i}\""))
        .collect();
    when_rejects(
        &format!(r#"{{"status":[{}]}}"#, values.join(",")),
        ".status",
        "1 to 64",
    );
    let keys: Vec<String> = (0..=CLAUSES_PER_RULE_MAX)
        .map(|i| format!("\"k{i}\":1"))
        .collect();
    when_rejects(
        &format!("{{{}}}", keys.join(",")),
        "",
        "17 clauses; at most 16",
    );
    let keys: Vec<String> = (0..CLAUSES_PER_RULE_MAX)
        .map(|i| format!("\"k{i}\":1"))
        .collect();
    assert_eq!(
        when(&format!("{{{}}}", keys.join(","))).len(),
        CLAUSES_PER_RULE_MAX
    );
}

#[test]
fn fallback_rule_defaults_and_backoff() {
    let policy = ok(&doc(r#""fallbacks":[{"when":{},"to":"anthropic"},
        {"when":{},"to":"anthropic","retry":0,"backoff":{}},
        {"when":{},"to":"anthropic","backoff":{"strategy":"fixed","base_ms":50,"max_ms":50,
         "jitter":false}}]"#));
    assert_eq!(
        (
            policy.fallbacks[0].retry,
            policy.fallbacks[0].backoff.as_ref()
        ),
        (1, None)
    );
    let default = policy.fallbacks[1].backoff.clone().unwrap();
    let expected = Backoff {
        strategy: BackoffStrategy::Exponential,
        base_ms: 100,
        max_ms: 5_000,
        jitter: true,
    };
    assert_eq!((policy.fallbacks[1].retry, default), (0, expected));
    let fixed = policy.fallbacks[2].backoff.clone().unwrap();
    assert_eq!(
        (fixed.strategy, fixed.base_ms, fixed.jitter),
        (BackoffStrategy::Fixed, 50, false)
    );
}

#[test]
fn fallback_rule_rejections() {
    let rule = |body: &str| doc(&format!(r#""fallbacks":[{{{body}}}]"#));
    rejects(
        &rule(r#""to":"anthropic""#),
        "$.fallbacks[0].when",
        "missing",
    );
    rejects(&rule(r#""when":{}"#), "$.fallbacks[0].to", "missing");
    rejects(
        &rule(r#""when":{},"to":"Anthropic""#),
        "$.fallbacks[0].to",
        "^[a-z0-9_]+$",
    );
    rejects(
        &rule(r#""when":{},"to":"x","retry":11"#),
        "$.fallbacks[0].retry",
        "0 to 10",
    );
    rejects(
        &rule(r#""when":{},"to":"x","if":{}"#),
        "$.fallbacks[0].if",
        "unknown key",
    );
}

#[test]
fn backoff_rejections() {
    let rule = |body: &str| doc(&format!(r#""fallbacks":[{{{body}}}]"#));
    let backoff = |b: &str| rule(&format!(r#""when":{{}},"to":"x","backoff":{b}"#));
    rejects(
        &backoff(r#"{"base_ms":900,"max_ms":100}"#),
        "$.fallbacks[0].backoff",
        "exceeds",
    );
    rejects(
        &backoff(r#"{"strategy":"random"}"#),
        "$.fallbacks[0].backoff.strategy",
        "unknown",
    );
    rejects(
        &backoff(r#"{"base_ms":0}"#),
        "$.fallbacks[0].backoff.base_ms",
        "1 to 10000",
    );
    rejects(
        &backoff(r#"{"max_ms":60001}"#),
        "$.fallbacks[0].backoff.max_ms",
        "1 to 60000",
    );
    rejects(
        &backoff(r#"{"jitter":"yes"}"#),
        "$.fallbacks[0].backoff.jitter",
        "true or false",
    );
}

#[test]
fn legacy_fallback_rejections() {
    let legacy = |f: &str| doc(&format!(r#""fallback":{f}"#));
    rejects(
        &legacy(r#"{"conditions":[]}"#),
        "$.fallback.provider",
        "missing",
    );
    rejects(
        &legacy(r#"{"provider":""}"#),
        "$.fallback.provider",
        "1 to 255",
    );
    rejects(
        &legacy(r#"{"provider":"x","conditions":[1]}"#),
        "$.fallback.conditions[0]",
        "string",
    );
    rejects(
        &legacy(r#"{"provider":"x","when":[]}"#),
        "$.fallback.when",
        "unknown key",
    );
}

#[test]
fn fallback_rules_limit() {
    let rule = r#"{"when":{},"to":"anthropic"}"#;
    let rules = vec![rule; FALLBACK_RULES_MAX + 1].join(",");
    rejects(
        &doc(&format!(r#""fallbacks":[{rules}]"#)),
        "$.fallbacks",
        "33 rules; at most 32",
    );
    let rules = vec![rule; FALLBACK_RULES_MAX].join(",");
    assert_eq!(
        ok(&doc(&format!(r#""fallbacks":[{rules}]"#)))
            .fallbacks
            .len(),
        32
    );
}

#[test]
fn sticky_ttl_forms() {
    let ttl = |sticky: &str| {
        ok(&doc(&format!(r#""sticky":{sticky}"#)))
            .sticky
            .map(|s| s.ttl_ms)
    };
    assert_eq!(ttl(r#"{"enabled":true,"ttl":"30s"}"#), Some(30_000));
    assert_eq!(ttl(r#"{"enabled":true,"ttl":"10m"}"#), Some(600_000));
    assert_eq!(
        ttl(r#"{"enabled":true,"ttl":"24h"}"#),
        Some(STICKY_TTL_MS_MAX)
    );
    assert_eq!(
        ttl(r#"{"enabled":true,"ttl_seconds":3600}"#),
        Some(3_600_000)
    );
    assert_eq!(
        ttl(r#"{"enabled":true,"ttl":"1h","ttl_seconds":3600}"#),
        Some(3_600_000)
    );
    assert_eq!(ttl(r#"{"enabled":true}"#), Some(STICKY_TTL_DEFAULT_MS));
    assert_eq!(ttl(r#"{"enabled":false,"ttl":"1h"}"#), None);
    let sticky = ok(&doc(r#""sticky":{"enabled":true}"#)).sticky.unwrap();
    assert_eq!(&*sticky.session_key, "session_id");
}

#[test]
fn sticky_rejections() {
    let sticky = |body: &str| doc(&format!(r#""sticky":{body}"#));
    let both = sticky(r#"{"enabled":true,"ttl":"10m","ttl_seconds":3600}"#);
    rejects(
        &both,
        "$.sticky",
        "ttl (600 s) and ttl_seconds (3600 s) disagree",
    );
    rejects(&sticky(r#"{"ttl":"10m"}"#), "$.sticky.enabled", "missing");
    for bad in ["0s", "25h", "99999999999999999999h"] {
        let json = sticky(&format!(r#"{{"enabled":true,"ttl":"{bad}"}}"#));
        rejects(&json, "$.sticky.ttl", "from 1s to 24h");
    }
    for bad in ["10d", "m", "", "1.5h", "-1s", "10 m"] {
        let json = sticky(&format!(r#"{{"enabled":true,"ttl":"{bad}"}}"#));
        rejects(&json, "$.sticky.ttl", "duration like");
    }
    let seconds = sticky(r#"{"enabled":true,"ttl_seconds":86401}"#);
    rejects(&seconds, "$.sticky.ttl_seconds", "1 to 86400");
    rejects(
        &sticky(r#"{"enabled":true,"session_key":""}"#),
        "$.sticky.session_key",
        "1 to",
    );
    rejects(
        &sticky(r#"{"enabled":"yes"}"#),
        "$.sticky.enabled",
        "true or false",
    );
    rejects(
        &sticky(r#"{"enabled":true,"ttl_ms":5}"#),
        "$.sticky.ttl_ms",
        "unknown key",
    );
}

#[test]
fn circuit_breaker_defaults_and_values() {
    let breaker = |b: &str| ok(&doc(&format!(r#""circuit_breaker":{b}"#))).circuit_breaker;
    assert_eq!(
        breaker(r#"{"enabled":true}"#),
        Some(BreakerConfig::default())
    );
    assert_eq!(breaker(r#"{}"#), None, "disabled by default");
    assert_eq!(breaker(r#"{"enabled":false,"failure_threshold":3}"#), None);
    assert_eq!(ok(&doc("")).circuit_breaker, None);
    let custom = breaker(
        r#"{"enabled":true,"failure_threshold":10,"success_threshold":3,"timeout_ms":30000,
        "half_open_max_calls":1,"error_rate_threshold":0.25,"error_rate_window_seconds":120,
        "error_rate_min_calls":50}"#,
    );
    let expected = BreakerConfig {
        failure_threshold: 10,
        success_threshold: 3,
        timeout_ms: 30_000,
        half_open_max_calls: 1,
        error_rate_threshold: 0.25,
        error_rate_window_ms: 120_000,
        error_rate_min_calls: 50,
    };
    assert_eq!(custom, Some(expected));
}

#[test]
fn circuit_breaker_rejections() {
    let breaker = |b: &str| doc(&format!(r#""circuit_breaker":{b}"#));
    let cases = [
        (
            r#"{"failure_threshold":0}"#,
            "failure_threshold",
            "1 to 100",
        ),
        (
            r#"{"success_threshold":11}"#,
            "success_threshold",
            "1 to 10",
        ),
        (r#"{"timeout_ms":999}"#, "timeout_ms", "1000 to 300000"),
        (
            r#"{"half_open_max_calls":101}"#,
            "half_open_max_calls",
            "1 to 100",
        ),
        (
            r#"{"error_rate_threshold":1.5}"#,
            "error_rate_threshold",
            "0 to 1",
        ),
        (
            r#"{"error_rate_window_seconds":3601}"#,
            "error_rate_window_seconds",
            "1 to 3600",
        ),
        (
            r#"{"error_rate_min_calls":0}"#,
            "error_rate_min_calls",
            "1 to 10000",
        ),
        (r#"{"enabled":1}"#, "enabled", "true or false"),
        (r#"{"treshold":1}"#, "treshold", "unknown key"),
    ];
    for (body, key, needle) in cases {
        rejects(&breaker(body), &format!("$.circuit_breaker.{key}"), needle);
    }
}

/// `balance`: absent means today's weighted draw; each member is optional with its
/// default; every strategy name is accepted.
#[test]
fn balance_forms_and_defaults() {
    let balance = |b: &str| ok(&doc(&format!(r#""balance":{b}"#))).balance;
    assert_eq!(ok(&doc("")).balance, Balance::default());
    assert_eq!(Balance::default().strategy, BalanceStrategy::Weighted);
    assert_eq!(balance("{}"), Balance::default());
    for strategy in [
        BalanceStrategy::Weighted,
        BalanceStrategy::LeastLatency,
        BalanceStrategy::LeastOutstanding,
        BalanceStrategy::LowestCost,
    ] {
        let b = balance(&format!(r#"{{"strategy":"{}"}}"#, strategy.as_str()));
        assert_eq!(b.strategy, strategy);
        assert_eq!(b.explore_ppm, 50_000);
        assert_eq!(b.half_life_ms, 10_000);
    }
    let b = balance(r#"{"strategy":"least_latency","explore_ratio":0.25,"half_life_ms":2500}"#);
    assert_eq!(
        b,
        Balance {
            strategy: BalanceStrategy::LeastLatency,
            explore_ppm: 250_000,
            half_life_ms: 2_500,
        }
    );
    assert_eq!(balance(r#"{"explore_ratio":0}"#).explore_ppm, 0);
    assert_eq!(balance(r#"{"explore_ratio":1}"#).explore_ppm, 1_000_000);
}

/// A document whose providers are openai (100), new_model and other_model (0), with
/// `shadow` set to `list`.
fn shadowed(list: &str) -> String {
    format!(
        r#"{{"version":"1.0","providers":[{{"name":"openai","weight":100}},{{"name":"new_model","weight":0}},{{"name":"other_model","weight":0}}],"shadow":{list}}}"#
    )
}

/// `shadow`: absent means none; each entry names a provider of the policy and a ratio,
/// kept in parts per million; a shadow-only provider has weight 0.
#[test]
fn shadow_forms() {
    assert!(ok(&doc("")).shadow.is_empty());
    assert!(ok(&shadowed("[]")).shadow.is_empty());
    let p = ok(&shadowed(
        r#"[{"provider":"new_model","ratio":0.1},{"provider":"other_model","ratio":0.9}]"#,
    ));
    assert_eq!(
        &*p.shadow,
        &[
            Shadow {
                provider: ProviderIdx(1),
                ppm: 100_000,
            },
            Shadow {
                provider: ProviderIdx(2),
                ppm: 900_000,
            },
        ]
    );
    let p = ok(&shadowed(r#"[{"provider":"openai","ratio":1}]"#));
    assert_eq!(p.shadow[0].ppm, SHADOW_PPM_FULL);
}

/// An unknown provider, a ratio outside (0, 1], ratios adding up to more than 1, a
/// repeated provider, too many entries or an unknown key is refused at its path.
#[test]
fn shadow_rejections() {
    let cases = [
        (
            r#"[{"provider":"gpt5","ratio":0.1}]"#,
            "$.shadow[0].provider",
            "unknown provider \"gpt5\"; a shadow names one of the policy's providers",
        ),
        (
            r#"[{"provider":"new-model","ratio":0.1}]"#,
            "$.shadow[0].provider",
            "must match ^[a-z0-9_]+$",
        ),
        (
            r#"[{"provider":"new_model","ratio":0}]"#,
            "$.shadow[0].ratio",
            "must be above 0",
        ),
        (
            r#"[{"provider":"new_model","ratio":1.5}]"#,
            "$.shadow[0].ratio",
            "0 to 1",
        ),
        (
            r#"[{"provider":"new_model"}]"#,
            "$.shadow[0].ratio",
            "missing (required)",
        ),
        (
            r#"[{"provider":"new_model","ratio":0.6},{"provider":"other_model","ratio":0.5}]"#,
            "$.shadow",
            "ratios add up to 1.1; a decision gets at most one shadow",
        ),
        (
            r#"[{"provider":"new_model","ratio":0.1},{"provider":"new_model","ratio":0.1}]"#,
            "$.shadow[1].provider",
            "duplicate shadow provider",
        ),
        (
            r#"[{"provider":"new_model","ratio":0.1,"mirror":true}]"#,
            "$.shadow[0].mirror",
            "unknown key",
        ),
        (
            r#"{"provider":"new_model"}"#,
            "$.shadow",
            "expected an array",
        ),
    ];
    for (list, path, needle) in cases {
        rejects(&shadowed(list), path, needle);
    }
    let five = [r#"{"provider":"new_model","ratio":0.1}"#; SHADOWS_PER_POLICY_MAX + 1];
    rejects(
        &shadowed(&format!("[{}]", five.join(","))),
        "$.shadow",
        "5 entries; at most 4",
    );
}

/// `budgets` set to `list`.
fn budgeted(list: &str) -> String {
    doc(&format!(r#""budgets":{list}"#))
}

/// `budgets`: absent means none; each entry has a window and at least one limit, a scope
/// of `tenant` (also when left out) or `metadata.<key>`, kept in order.
#[test]
fn budget_forms() {
    assert!(ok(&doc("")).budgets.is_empty());
    assert!(ok(&budgeted("[]")).budgets.is_empty());
    let p = ok(&budgeted(
        r#"[{"scope":"tenant","window":"1h","max_cost":2.0,"max_requests":100},
            {"scope":"metadata.user","window":"1m","max_requests":3},
            {"window":"calendar_month","max_tokens":1000000,"max_cost":0.5},
            {"scope":"metadata.team.id","window":"1d","max_cost":1e12}]"#,
    ));
    let budget = |scope, window, max_cost, max_tokens, max_requests| Budget {
        scope,
        window,
        max_cost,
        max_tokens,
        max_requests,
    };
    assert_eq!(
        &*p.budgets,
        &[
            budget(
                BudgetScope::Tenant,
                BudgetWindow::HOUR,
                Some(2.0),
                None,
                Some(100)
            ),
            budget(
                BudgetScope::Metadata("user".into()),
                BudgetWindow::MINUTE,
                None,
                None,
                Some(3)
            ),
            budget(
                BudgetScope::Tenant,
                BudgetWindow::CalendarMonth,
                Some(0.5),
                Some(1_000_000),
                None
            ),
            budget(
                BudgetScope::Metadata("team.id".into()),
                BudgetWindow::DAY,
                Some(BUDGET_COST_MAX),
                None,
                None
            ),
        ]
    );
    let windows = ["1m", "1h", "1d", "30d", "calendar_day", "calendar_month"];
    for name in windows {
        let p = ok(&budgeted(&format!(
            r#"[{{"window":"{name}","max_requests":1}}]"#
        )));
        assert_eq!(p.budgets[0].window.as_str(), name);
    }
    let p = ok(&budgeted(
        r#"[{"window":"1m","max_requests":1},{"window":"1h","max_requests":1},
            {"scope":"metadata.user","window":"1m","max_requests":1},
            {"scope":"metadata.team","window":"1m","max_requests":1}]"#,
    ));
    assert_eq!(p.budgets.len(), BUDGETS_PER_POLICY_MAX);
}

/// An unknown window, a bad scope, an entry without a limit, a limit out of range, two
/// entries of one scope and window, an unknown key or too many entries is refused at its
/// path.
#[test]
fn budget_rejections() {
    let cases = [
        (
            r#"[{"window":"1w","max_requests":1}]"#,
            "$.budgets[0].window",
            "unknown window \"1w\" (1m, 1h, 1d, 30d, calendar_day, calendar_month)",
        ),
        (
            r#"[{"max_requests":1}]"#,
            "$.budgets[0].window",
            "missing (required)",
        ),
        (
            r#"[{"window":60000,"max_requests":1}]"#,
            "$.budgets[0].window",
            "expected a string",
        ),
        (
            r#"[{"scope":"user","window":"1m","max_requests":1}]"#,
            "$.budgets[0].scope",
            "scope \"user\" must be \"tenant\" or \"metadata.<key>\"",
        ),
        (
            r#"[{"scope":"metadata.","window":"1m","max_requests":1}]"#,
            "$.budgets[0].scope",
            "scope \"metadata.\" must be",
        ),
        (
            r#"[{"scope":"metadata.a b","window":"1m","max_requests":1}]"#,
            "$.budgets[0].scope",
            "scope \"metadata.a b\" must be",
        ),
        (
            r#"[{"scope":"tenant","window":"1m"}]"#,
            "$.budgets[0]",
            "a budget needs max_cost, max_tokens or max_requests",
        ),
        (
            r#"[{"window":"1h","max_cost":1},{"scope":"tenant","window":"1h","max_requests":5}]"#,
            "$.budgets[1]",
            "a second budget of scope tenant over window 1h; put its limits in one entry",
        ),
        (
            r#"[{"scope":"metadata.user","window":"1m","max_cost":1},{"scope":"metadata.user","window":"1m","max_tokens":5}]"#,
            "$.budgets[1]",
            "a second budget of scope metadata.user over window 1m",
        ),
        (
            r#"[{"window":"1h","max_cost":-1}]"#,
            "$.budgets[0].max_cost",
            "must be from 0 to 1000000000000, got -1",
        ),
        (
            r#"[{"window":"1h","max_cost":"5"}]"#,
            "$.budgets[0].max_cost",
            "expected a number",
        ),
        (
            r#"[{"window":"1h","max_requests":0}]"#,
            "$.budgets[0].max_requests",
            "must be from 1 to 1125899906842624, got 0",
        ),
        (
            r#"[{"window":"1h","max_tokens":1.5}]"#,
            "$.budgets[0].max_tokens",
            "expected an integer from 1 to 1125899906842624, got 1.5",
        ),
        (
            r#"[{"window":"1h","max_requests":1,"max_spend":3}]"#,
            "$.budgets[0].max_spend",
            "unknown key (known: scope, window, max_cost, max_tokens, max_requests)",
        ),
        (r#"[1]"#, "$.budgets[0]", "expected an object"),
        (
            r#"{"window":"1h","max_requests":1}"#,
            "$.budgets",
            "expected an array",
        ),
    ];
    for (list, path, needle) in cases {
        rejects(&budgeted(list), path, needle);
    }
    let five: Vec<String> = ["1m", "1h", "1d", "30d", "calendar_day"]
        .iter()
        .map(|w| format!(r#"{{"window":"{w}","max_requests":1}}"#))
        .collect();
    rejects(
        &budgeted(&format!("[{}]", five.join(","))),
        "$.budgets",
        "5 entries; at most 4",
    );
}

/// An unknown strategy, a ratio outside 0–1, a half-life out of range or an unknown key
/// is refused at its path, naming what is allowed.
#[test]
fn balance_rejections() {
    let balance = |b: &str| doc(&format!(r#""balance":{b}"#));
    let cases = [
        (
            r#"{"strategy":"fastest"}"#,
            "strategy",
            "unknown strategy \"fastest\" (weighted, least_latency, least_outstanding, \
             lowest_cost)",
        ),
        (r#"{"strategy":1}"#, "strategy", "expected a string"),
        (r#"{"explore_ratio":1.5}"#, "explore_ratio", "0 to 1"),
        (r#"{"explore_ratio":-0.1}"#, "explore_ratio", "0 to 1"),
        (r#"{"half_life_ms":99}"#, "half_life_ms", "100 to 3600000"),
        (
            r#"{"half_life_ms":3600001}"#,
            "half_life_ms",
            "100 to 3600000",
        ),
        (r#"{"half_life_ms":1.5}"#, "half_life_ms", "an integer"),
        (r#"{"stratgey":"weighted"}"#, "stratgey", "unknown key"),
    ];
    for (body, key, needle) in cases {
        rejects(&balance(body), &format!("$.balance.{key}"), needle);
    }
    rejects(
        &balance(r#""least_latency""#),
        "$.balance",
        "expected an object",
    );
}

/// `providers[].rpm`, `providers[].tpm` and `cooldown_ms` are optional whole numbers in
/// range; without `cooldown_ms` a policy cools a provider down for 10 s.
#[test]
fn provider_limits_and_cooldown() {
    let plain = ok(&doc(""));
    assert_eq!(plain.providers[0].limits, ProviderLimits::default());
    assert_eq!(plain.cooldown_ms, COOLDOWN_MS_DEFAULT);
    let limited = ok(r#"{"version":"1.0","cooldown_ms":2500,"providers":[
        {"name":"openai","weight":50,"rpm":600,"tpm":90000},
        {"name":"anthropic","weight":50,"tpm":4000000000}]}"#);
    assert_eq!(limited.cooldown_ms, 2_500);
    assert_eq!(
        limited.providers[0].limits,
        ProviderLimits {
            rpm: Some(600),
            tpm: Some(90_000)
        }
    );
    assert_eq!(limited.providers[1].limits.tpm, Some(PROVIDER_TPM_MAX));
    assert_eq!(ok(&doc(r#""cooldown_ms":0"#)).cooldown_ms, 0);
    let provider = |extra: &str| {
        format!(r#"{{"version":"1.0","providers":[{{"name":"openai","weight":100,{extra}}}]}}"#)
    };
    rejects(
        &provider(r#""rpm":0"#),
        "$.providers[0].rpm",
        "1 to 100000000",
    );
    rejects(
        &provider(r#""rpm":100000001"#),
        "$.providers[0].rpm",
        "1 to 100000000",
    );
    assert_eq!(
        ok(&provider(r#""rpm":100000000"#)).providers[0].limits.rpm,
        Some(PROVIDER_RPM_MAX)
    );
    rejects(
        &provider(r#""rpm":1.5"#),
        "$.providers[0].rpm",
        "an integer",
    );
    rejects(
        &provider(r#""tpm":4000000001"#),
        "$.providers[0].tpm",
        "1 to 4000000000",
    );
    rejects(
        &provider(r#""tpm":"lots""#),
        "$.providers[0].tpm",
        "integer",
    );
    rejects(
        &doc(r#""cooldown_ms":3600001"#),
        "$.cooldown_ms",
        "0 to 3600000",
    );
    rejects(&doc(r#""cooldown_ms":-1"#), "$.cooldown_ms", "0 to 3600000");
}

#[test]
fn rate_limit_forms() {
    let limit = |r: &str| ok(&doc(&format!(r#""rate_limit":{r}"#))).rate_limit;
    let rl = |requests_per_second, burst| {
        Some(RateLimit {
            requests_per_second,
            burst,
        })
    };
    assert_eq!(
        limit(r#"{"enabled":true,"requests_per_second":100}"#),
        rl(100, 100)
    );
    assert_eq!(
        limit(r#"{"enabled":true,"requests_per_second":100,"burst":250}"#),
        rl(100, 250)
    );
    assert_eq!(
        limit(r#"{"enabled":false,"requests_per_second":100}"#),
        None
    );
    assert_eq!(
        limit(r#"{"requests_per_second":100}"#),
        None,
        "disabled by default"
    );
    assert_eq!(ok(&doc("")).rate_limit, None);
    let rejected = |r: &str| doc(&format!(r#""rate_limit":{r}"#));
    let missing = rejected(r#"{"enabled":true}"#);
    rejects(
        &missing,
        "$.rate_limit.requests_per_second",
        "required when enabled",
    );
    let zero = rejected(r#"{"enabled":true,"requests_per_second":0}"#);
    rejects(&zero, "$.rate_limit.requests_per_second", "1 to 1000000");
    let burst = rejected(r#"{"enabled":true,"requests_per_second":5,"burst":1000001}"#);
    rejects(&burst, "$.rate_limit.burst", "1 to 1000000");
}

#[test]
fn stages_compile() {
    let policy = ok(&doc(r#""pre":[{"id":"normalize_text","mode":"required",
        "config":{"lowercase":true, "n": [1, 2.5]},"timeout_ms":200,"retry":2},
        {"id":"add_context"}],
        "validators":[{"id":"pii_guard"},{"id":"content_filter","on_fail":"warn"},
        {"id":"audit","on_fail":"ignore"}],
        "post":[{"id":"mask_pii","mode":"optional"}]"#));
    let pre = &policy.pre[0];
    assert!(pre.required && pre.on_fail == OnFail::Block && pre.kind == StageKind::Pre);
    let config = pre.config.as_ref().unwrap().get();
    assert_eq!(config, r#"{"lowercase":true,"n":[1,2.5]}"#);
    assert_eq!((pre.timeout_ms, pre.retry), (Some(200), Some(2)));
    assert!(!policy.pre[1].required && policy.pre[1].config.is_none());
    let v: Vec<(bool, OnFail)> = policy
        .validators
        .iter()
        .map(|s| (s.required, s.on_fail))
        .collect();
    assert_eq!(
        v,
        [
            (true, OnFail::Block),
            (false, OnFail::Warn),
            (false, OnFail::Ignore)
        ]
    );
    assert_eq!(
        (policy.post[0].kind, policy.post[0].required),
        (StageKind::Post, false)
    );
}

#[test]
fn stage_rejections() {
    let pre = |s: &str| doc(&format!(r#""pre":[{s}]"#));
    rejects(
        &pre(r#"{"id":"a"},{"id":"a"}"#),
        "$.pre[1].id",
        "duplicate pre id",
    );
    rejects(&pre(r#"{"id":"Bad-Id"}"#), "$.pre[0].id", "^[a-z0-9_]+$");
    rejects(&pre(r#"{"mode":"required"}"#), "$.pre[0].id", "missing");
    rejects(
        &pre(r#"{"id":"a","mode":"always"}"#),
        "$.pre[0].mode",
        "unknown mode",
    );
    rejects(
        &pre(r#"{"id":"a","config":[]}"#),
        "$.pre[0].config",
        "expected an object",
    );
    rejects(
        &pre(r#"{"id":"a","timeout_ms":0}"#),
        "$.pre[0].timeout_ms",
        "1 to 300000",
    );
    rejects(
        &pre(r#"{"id":"a","on_fail":"warn"}"#),
        "$.pre[0].on_fail",
        "unknown key",
    );
    let validator = doc(r#""validators":[{"id":"a","on_fail":"explode"}]"#);
    rejects(&validator, "$.validators[0].on_fail", "unknown on_fail");
    let config = doc(r#""validators":[{"id":"a","config":{}}]"#);
    rejects(&config, "$.validators[0].config", "unknown key");
    rejects(&doc(r#""post":{"id":"a"}"#), "$.post", "expected an array");
}

#[test]
fn stage_limits() {
    let stages = |prefix: &str, n: usize| {
        let items: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"id":"{prefix}{i}"}}"#))
            .collect();
        items.join(",")
    };
    let six = doc(&format!(
        r#""pre":[{}]"#,
        stages("p", STAGES_PER_TYPE_MAX + 1)
    ));
    rejects(&six, "$.pre", "6 stages; at most 5 per type");
    let eleven = doc(&format!(
        r#""pre":[{}],"validators":[{}],"post":[{}]"#,
        stages("p", 5),
        stages("v", 5),
        stages("o", 1)
    ));
    rejects(&eleven, "$", "11 extension stages; at most 10");
    let ten = doc(&format!(
        r#""pre":[{}],"validators":[{}]"#,
        stages("p", 5),
        stages("v", 5)
    ));
    assert_eq!(ok(&ten).validators.len(), 5);
}

/// Provider entries that must be rejected: (entries, path, part of the message).
const PROVIDER_CASES: &[(&str, &str, &str)] = &[
    (
        r#"{"name":"a","weight":101}"#,
        "$.providers[0].weight",
        "0 to 100",
    ),
    (
        r#"{"name":"a","weight":-1}"#,
        "$.providers[0].weight",
        "0 to 100",
    ),
    (
        r#"{"name":"a","weight":0.5}"#,
        "$.providers[0].weight",
        "integer",
    ),
    (
        r#"{"name":"a","weight":1e30}"#,
        "$.providers[0].weight",
        "0 to 100",
    ),
    (
        r#"{"name":"a","weight":"50"}"#,
        "$.providers[0].weight",
        "got a string",
    ),
    (r#"{"name":"a"}"#, "$.providers[0].weight", "missing"),
    (r#"{"weight":5}"#, "$.providers[0].name", "missing"),
    (
        r#"{"name":"OpenAI","weight":5}"#,
        "$.providers[0].name",
        "^[a-z0-9_]+$",
    ),
    (
        r#"{"name":"","weight":5}"#,
        "$.providers[0].name",
        "^[a-z0-9_]+$",
    ),
    (
        r#"{"name":"a","wieght":5,"weight":5}"#,
        "$.providers[0].wieght",
        "unknown key",
    ),
    (
        r#"{"name":"a","weight":5,"priority":101}"#,
        "$.providers[0].priority",
        "0 to 100",
    ),
    (
        r#"{"name":"a","weight":5,"cost":-0.1}"#,
        "$.providers[0].cost",
        "from 0",
    ),
    (
        r#"{"name":"a","weight":5,"expected_latency_ms":"fast"}"#,
        "$.providers[0].expected_latency_ms",
        "expected a number",
    ),
    (
        r#"{"name":"a","weight":5,"capabilities":[""]}"#,
        "$.providers[0].capabilities[0]",
        "1 to",
    ),
    (
        r#"{"name":"a","weight":5,"capabilities":["x","x"]}"#,
        "$.providers[0].capabilities[1]",
        "duplicate capability",
    ),
    (
        r#"{"name":"a","weight":5},{"name":"a","weight":5}"#,
        "$.providers[1].name",
        "duplicate",
    ),
    ("5", "$.providers[0]", "expected an object"),
];

#[test]
fn provider_rejections() {
    let providers = |p: &str| format!(r#"{{"version":"1.0","providers":[{p}]}}"#);
    for &(body, path, needle) in PROVIDER_CASES {
        rejects(&providers(body), path, needle);
    }
}

#[test]
fn weights_map_rejections() {
    rejects(
        r#"{"version":"1.0","providers":[]}"#,
        "$.providers",
        "at least one",
    );
    rejects(
        r#"{"version":"1.0","weights":{"Open AI":1}}"#,
        "$.weights[\"Open AI\"]",
        "^[a-z0-9_]+$",
    );
    rejects(
        r#"{"version":"1.0","weights":{"a":101}}"#,
        "$.weights.a",
        "0 to 100",
    );
    rejects(
        r#"{"version":"1.0","weights":[1]}"#,
        "$.weights",
        "expected an object",
    );
}

#[test]
fn provider_limits() {
    let provider = |i: usize| format!(r#"{{"name":"p{i}","weight":1}}"#);
    let list = |n: usize| (0..n).map(provider).collect::<Vec<_>>().join(",");
    let max = format!(
        r#"{{"version":"1.0","providers":[{}]}}"#,
        list(PROVIDERS_PER_POLICY_MAX)
    );
    assert_eq!(ok(&max).providers.len(), PROVIDERS_PER_POLICY_MAX);
    let over = format!(r#"{{"version":"1.0","providers":[{}]}}"#, list(65));
    rejects(&over, "$.providers[64].name", "more than 64 providers");
    let via_fallback = format!(
        r#"{{"version":"1.0","providers":[{}],"fallbacks":[{{"when":{{}},"to":"extra"}}]}}"#,
        list(PROVIDERS_PER_POLICY_MAX)
    );
    rejects(&via_fallback, "$.fallbacks[0].to", "more than 64 providers");
    let tags: Vec<String> = (0..=CAPABILITIES_PER_PROVIDER_MAX)
        .map(|i| format!("\"t{i}\""))
        .collect();
    let caps = format!(
        r#"{{"version":"1.0","providers":[{{"name":"a","weight":1,"capabilities":[{}]}}]}}"#,
        tags.join(",")
    );
    rejects(&caps, "$.providers[0].capabilities", "33 tags; at most 32");
}

#[test]
fn routing_rejections() {
    rejects(
        r#"{"version":"1.0"}"#,
        "$",
        "missing both `providers` and `weights`",
    );
    let idle = r#"{"version":"1.0","providers":[{"name":"openai","weight":0}]}"#;
    rejects(idle, "$", "nothing to route to");
    let fallback_only = r#"{"version":"1.0","providers":[{"name":"openai","weight":0}],
        "fallback":{"provider":"local_llm"}}"#;
    assert_eq!(ok(fallback_only).weights.total, 0);
    assert!(parse(r#"{"version":"1.0","weights":{}}"#).is_err());
}

#[test]
fn root_rejections() {
    rejects(
        r#"{"providers":[{"name":"a","weight":1}]}"#,
        "$.version",
        "missing",
    );
    let version = |v: &str| format!(r#"{{"version":{v},"weights":{{"a":1}}}}"#);
    rejects(&version("1.0"), "$.version", "expected a string");
    for bad in [
        r#""1""#,
        r#""v1.0""#,
        r#""1.0.0""#,
        r#""1.""#,
        r#"".0""#,
        r#""00000000000000001.0""#,
    ] {
        rejects(&version(bad), "$.version", "must look like");
    }
    assert_eq!(&*ok(&version(r#""2.15""#)).version, "2.15");
    rejects(&doc(r#""fallbacs":[]"#), "$.fallbacs", "unknown key");
    rejects(&doc(r#""timeout_ms":0"#), "$.timeout_ms", "1 to 300000");
    assert_eq!(ok(&doc(r#""timeout_ms":2500"#)).timeout_ms, Some(2500));
    rejects("[]", "$", "expected an object");
    rejects("null", "$", "expected an object");
}

/// Deprecated Beamline keys load and are ignored; their shape is still checked.
#[test]
fn deprecated_keys_are_accepted() {
    let policy = ok(&doc(r#""metadata":{"owner":"ops"},"defaults":{"x":1},
        "escalate_on":["timeout"],"health_check":{"enabled":true,"interval_ms":5000}"#));
    assert_eq!(policy.providers.len(), 1);
    rejects(
        &doc(r#""metadata":"x""#),
        "$.metadata",
        "expected an object",
    );
    rejects(
        &doc(r#""escalate_on":[1]"#),
        "$.escalate_on[0]",
        "expected a string",
    );
    rejects(
        &doc(r#""health_check":{"every":1}"#),
        "$.health_check.every",
        "unknown key",
    );
}

#[test]
fn duplicate_keys_are_rejected_anywhere() {
    let root = r#"{"version":"1.0","version":"1.0","weights":{"a":1}}"#;
    rejects(root, "$.version", "duplicate key");
    let provider = r#"{"version":"1.0","providers":[{"name":"a","weight":10,"weight":90}]}"#;
    rejects(provider, "$.providers[0].weight", "duplicate key");
    rejects(
        r#"{"version":"1.0","weights":{"a":1,"a":0.5}}"#,
        "$.weights.a",
        "duplicate key",
    );
    let config = doc(r#""pre":[{"id":"a","config":{"k":1,"k":2}}]"#);
    rejects(&config, "$.pre[0].config.k", "duplicate key");
    let metadata = doc(r#""metadata":{"deep":[{"x y":1,"x y":2}]}"#);
    rejects(&metadata, "$.metadata.deep[0][\"x y\"]", "duplicate key");
}

#[test]
fn malformed_input_is_rejected() {
    let raw = |bytes: &[u8]| parse_policy("acme", "default", "raw", bytes).unwrap_err();
    assert!(raw(b"{\"version\":\"1.\xff\"}")[0]
        .message
        .contains("not UTF-8"));
    assert!(raw(b"{\"version\":")
        .first()
        .unwrap()
        .message
        .contains("not valid JSON"));
    assert!(raw(b"{} {}")[0].message.contains("trailing"));
    assert!(raw(b"")[0].message.contains("not valid JSON"));
    let huge = doc(r#""metadata":{"n":1e400}"#);
    assert!(raw(huge.as_bytes())[0].message.contains("not valid JSON"));
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(raw(deep.as_bytes())[0].message.contains("recursion limit"));
    let oversize = doc(&format!(
        r#""metadata":{{"pad":"{}"}}"#,
        "x".repeat(POLICY_FILE_BYTES_MAX)
    ));
    assert!(raw(oversize.as_bytes())[0]
        .message
        .contains("at most 1048576"));
}

#[test]
fn nesting_is_bounded() {
    let nested = |levels: usize| {
        let inner = format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        doc(&format!(r#""metadata":{{"x":{inner}}}"#))
    };
    // The root object and `metadata` are two levels.
    assert!(parse(&nested(DOCUMENT_DEPTH_MAX - 2)).is_ok());
    let too_deep = nested(DOCUMENT_DEPTH_MAX - 1);
    let path = format!("$.metadata.x{}", "[0]".repeat(DOCUMENT_DEPTH_MAX - 2));
    rejects(&too_deep, &path, "nested deeper than 32 levels");
}

/// All problems of a document come back together, not just the first.
#[test]
fn every_problem_is_reported() {
    let json = r#"{"version":"x","providers":[{"name":"A","weight":500}],"stiky":{},
        "rate_limit":{"enabled":true}}"#;
    let errors = parse(json).unwrap_err();
    let paths: Vec<&str> = errors.iter().map(|e| &*e.path).collect();
    for path in [
        "$.version",
        "$.providers[0].name",
        "$.providers[0].weight",
        "$.stiky",
        "$.rate_limit.requests_per_second",
    ] {
        assert!(paths.contains(&path), "{path} missing from {paths:?}");
    }
}

#[test]
fn problems_are_capped() {
    let keys: Vec<String> = (0..500).map(|i| format!("\"k{i}\":1")).collect();
    let errors = parse(&doc(&keys.join(","))).unwrap_err();
    assert_eq!(errors.len(), ERRORS_PER_DOCUMENT_MAX + 1);
    assert!(errors
        .last()
        .unwrap()
        .message
        .contains("the rest are not listed"));
}

#[test]
fn ids_are_validated() {
    let json = doc("");
    let errors = parse_policy("bad tenant", "x/y", "s", json.as_bytes()).unwrap_err();
    assert!(errors[0].message.contains("tenant id \"bad tenant\""));
    assert!(errors[1].message.contains("policy id \"x/y\""));
    assert!(is_tenant_id("acme.eu-1_b") && !is_tenant_id(&"a".repeat(65)) && !is_tenant_id(""));
    assert!(is_policy_id(&"a".repeat(128)) && !is_policy_id(&"a".repeat(129)));
}

#[test]
fn error_display_names_source_path_and_message() {
    let errors = parse(r#"{"version":"1.0","weights":{"a":1},"x":1}"#).unwrap_err();
    assert_eq!(
        errors[0].to_string(),
        "test.json: $.x: unknown key (known: version, providers, \
        weights, fallbacks, fallback, sticky, pre, validators, post, circuit_breaker, rate_limit, \
        balance, timeout_ms, cooldown_ms, shadow, budgets, metadata, defaults, escalate_on, health_check)"
    );
}

/// JSON values whose keys are often policy keys, so that generated documents reach deep
/// into the compiler rather than failing at the root.
fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let keys = prop::sample::select(vec![
        "version",
        "providers",
        "weights",
        "fallbacks",
        "fallback",
        "sticky",
        "pre",
        "post",
        "validators",
        "circuit_breaker",
        "rate_limit",
        "name",
        "weight",
        "when",
        "to",
        "retry",
        "backoff",
        "enabled",
        "ttl",
        "ttl_seconds",
        "id",
        "mode",
        "on_fail",
        "config",
        "var",
        "status",
        "count",
        "==",
        ">",
        "in",
        "<=",
        "provider",
        "conditions",
        "capabilities",
        "burst",
        "requests_per_second",
        "metadata.x",
        "x",
    ])
    .prop_map(String::from);
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        (-200i64..200).prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        prop::sample::select(vec![
            "1.0", "openai", "10m", "timeout", "required", "block", "0s"
        ])
        .prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(6, 96, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..8)
                .prop_map(|members| serde_json::Value::Object(members.into_iter().collect())),
        ]
    })
}

/// Keys of a `when` object: operators, known variables and metadata names.
fn when_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "==",
        "!=",
        ">",
        "<",
        ">=",
        "<=",
        "in",
        "status",
        "count",
        "attempt.count",
        "previous_provider",
        "message_type",
        "max_cost",
        "metadata.tier",
        "region",
        "x.y",
    ])
    .prop_map(String::from)
}

proptest! {
    /// Arbitrary JSON documents never make the parser panic (including `Policy::check`).
    #[test]
    fn arbitrary_json_never_panics(value in arb_json()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        let _ = parse_policy("acme", "default", "prop", &bytes);
    }

    /// A valid document with one root member replaced by an arbitrary value never panics.
    #[test]
    fn arbitrary_member_never_panics(
        key in prop::sample::select(ROOT_KEYS.to_vec()),
        value in arb_json(),
    ) {
        let mut root: serde_json::Value = serde_json::from_str(&doc("")).unwrap();
        root[key] = value;
        let _ = parse_policy("acme", "default", "prop", &serde_json::to_vec(&root).unwrap());
    }

    /// An arbitrary `when` never panics, and whatever compiles respects the clause limit.
    #[test]
    fn arbitrary_when_never_panics(
        members in prop::collection::vec((when_key(), arb_json()), 0..6),
    ) {
        let value: serde_json::Map<String, serde_json::Value> = members.into_iter().collect();
        let mut root: serde_json::Value = serde_json::from_str(&doc("")).unwrap();
        root["fallbacks"] = serde_json::json!([{"when": value, "to": "anthropic"}]);
        let bytes = serde_json::to_vec(&root).unwrap();
        if let Ok(policy) = parse_policy("acme", "default", "prop", &bytes) {
            prop_assert!(policy.fallbacks[0].when.clauses.len() <= CLAUSES_PER_RULE_MAX);
        }
    }

    /// Arbitrary bytes never make the parser panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_policy("acme", "default", "prop", &bytes);
    }
}

/// The original's policy-store form (no `version`; `policy_id`, `tenant_id`, fractions).
const STORE_FORM: &str = r#"{"policy_id":"default","tenant_id":"acme",
    "weights":{"openai":0.7,"anthropic":0.3},
    "sticky":{"enabled":true,"session_key":"user_id","ttl_sec":120}}"#;

#[test]
fn store_form_loads_with_fractional_weights() {
    let policy = ok(STORE_FORM);
    assert_eq!(&*policy.version, STORE_FORM_VERSION);
    let weights: Vec<(&str, u32)> = policy
        .providers
        .iter()
        .map(|p| (&*p.name, p.weight))
        .collect();
    assert_eq!(weights, [("openai", 700_000), ("anthropic", 300_000)]);
    let sticky = policy.sticky.expect("sticky");
    assert_eq!((&*sticky.session_key, sticky.ttl_ms), ("user_id", 120_000));
    // The same document with `version` is JSON-DSL, where the ids are unknown keys.
    let versioned = STORE_FORM.replacen('{', r#"{"version":"1.0","#, 1);
    rejects(&versioned, "$.policy_id", "unknown key");
}

#[test]
fn store_form_with_only_weights_and_ids() {
    let policy = ok(r#"{"policy_id":"default","tenant_id":"acme","weights":{"openai":1.0}}"#);
    assert_eq!(policy.providers[0].weight, 1_000_000);
    assert!(policy.sticky.is_none());
}

#[test]
fn store_form_ids_must_agree_with_where_it_is_stored() {
    let other_tenant = STORE_FORM.replace(r#""tenant_id":"acme""#, r#""tenant_id":"globex""#);
    rejects(&other_tenant, "$.tenant_id", "differs from the tenant");
    let other_id = STORE_FORM.replace(r#""policy_id":"default""#, r#""policy_id":"premium""#);
    rejects(&other_id, "$.policy_id", "differs from the policy id");
    let no_tenant = STORE_FORM.replace(r#""tenant_id":"acme","#, "");
    rejects(&no_tenant, "$.tenant_id", "missing (required)");
    rejects(
        r#"{"policy_id":"default","tenant_id":7,"weights":{"openai":1}}"#,
        "$.tenant_id",
        "expected a string",
    );
}

#[test]
fn store_form_weights_are_fractions_and_required() {
    rejects(
        r#"{"policy_id":"default","tenant_id":"acme","weights":{"openai":70,"b":30}}"#,
        "$.weights.openai",
        "from 0.0 to 1.0",
    );
    rejects(
        r#"{"policy_id":"default","tenant_id":"acme","weights":{}}"#,
        "$.weights",
        "at least one provider",
    );
    rejects(
        r#"{"policy_id":"default","tenant_id":"acme"}"#,
        "$.weights",
        "missing (required)",
    );
    rejects(
        r#"{"policy_id":"default","tenant_id":"acme","weights":{"openai":1},"wieghts":{}}"#,
        "$.wieghts",
        "unknown key",
    );
}

#[test]
fn ttl_sec_is_only_a_store_form_key() {
    rejects(
        &doc(r#""sticky":{"enabled":true,"ttl_sec":60}"#),
        "$.sticky.ttl_sec",
        "unknown key",
    );
}
