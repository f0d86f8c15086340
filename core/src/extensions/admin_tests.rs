use serde_json::{json, Value};

use super::*;
use crate::decide::StageOutcome;
use crate::policy::parse_policy;

const MS: u64 = 1_000_000;

fn registry() -> Registry {
    let docs = [
        r#"{"id":"normalize_text","type":"pre","subject":"ext.pre.n","timeout_ms":100,"retry":1}"#,
        r#"{"id":"pii_guard","type":"validator","subject":"ext.v.pii","timeout_ms":200}"#,
        r#"{"id":"content_filter","type":"validator","subject":"ext.v.cf","timeout_ms":50,
            "enabled":false}"#,
        r#"{"id":"mask_pii","type":"post","subject":"ext.post.m","timeout_ms":150,"retry":5}"#,
    ];
    Registry::from_documents(docs.iter().map(|d| ("r.json", d.as_bytes()))).unwrap()
}

fn policy(extra: &str) -> Policy {
    let doc = format!(
        r#"{{"version":"1.0","providers":[{{"name":"openai","weight":100}}],
        "pre":[{{"id":"normalize_text","mode":"required","timeout_ms":80}},
               {{"id":"add_context","mode":"optional"}}],
        "validators":[{{"id":"pii_guard","on_fail":"block"}},
                      {{"id":"content_filter","on_fail":"warn"}}],
        "post":[{{"id":"mask_pii","mode":"required"}}]{extra}}}"#
    );
    parse_policy("acme", "full", "full.json", doc.as_bytes()).unwrap()
}

fn parse(body: Vec<u8>) -> Value {
    serde_json::from_slice(&body).unwrap()
}

/// Each entry with its breaker state and counters, in id order.
#[test]
fn health_lists_entries_with_breakers_and_counters() {
    let reg = registry();
    let mut breakers = ExtensionBreakers::new(&reg);
    for i in 0..5 {
        breakers.observe("mask_pii", &StageOutcome::Timeout, i * MS);
    }
    breakers.count_retries("mask_pii", 4);
    breakers.observe("nope", &StageOutcome::NotFound, 0);
    let body = parse(extension_health(&reg, &breakers, 10 * MS));
    assert_eq!(body["ok"], json!(true));
    let ids: Vec<&str> = body["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["content_filter", "mask_pii", "normalize_text", "pii_guard"]
    );
    let mask = &body["extensions"][1];
    assert_eq!(mask["type"], json!("post"));
    assert_eq!(mask["subject"], json!("ext.post.m"));
    assert_eq!(mask["breaker"], json!("open"));
    assert_eq!(mask["retry"], json!(EXTENSION_RETRIES_MAX));
    assert_eq!(mask["counters"]["timeout"], json!(5));
    assert_eq!(mask["counters"]["retries"], json!(4));
    assert_eq!(body["extensions"][0]["enabled"], json!(false));
    assert_eq!(body["extensions"][2]["breaker"], json!("closed"));
    assert_eq!(body["unregistered"]["not_found"], json!(1));
    // After the cool-down the next call would be a probe.
    let later = parse(extension_health(&reg, &breakers, 20_000 * MS));
    assert_eq!(later["extensions"][1]["breaker"], json!("half_open"));
}

/// Counts, limits, the budget of the stages that would run, and a warning for each that
/// cannot or is cut back.
#[test]
fn complexity_of_a_full_policy() {
    let body = parse(pipeline_complexity(&policy(""), &registry()));
    assert_eq!(body["tenant"], json!("acme"));
    assert_eq!(body["policy_id"], json!("full"));
    assert_eq!(
        body["stages"],
        json!({"pre": 2, "validators": 2, "post": 1, "total": 5})
    );
    assert_eq!(body["limits"], json!({"total_max": 10, "per_type_max": 5}));
    // normalize_text 80 × 2, pii_guard 200 × 1, mask_pii 150 × (1 + 3).
    assert_eq!(body["latency_budget_ms"], json!(160 + 200 + 600));
    let first = &body["extensions"][0];
    assert_eq!(
        *first,
        json!({"id": "normalize_text", "type": "pre", "required": true,
               "subject": "ext.pre.n", "timeout_ms": 80, "retry": 1, "budget_ms": 160})
    );
    assert_eq!(body["extensions"][1]["subject"], Value::Null);
    assert_eq!(
        body["warnings"],
        json!([
            "pre stage add_context: not in the extension registry; skipped (optional)",
            "validator stage content_filter: disabled in the extension registry; \
             skipped (optional)",
            "post stage mask_pii: retry 5 is capped at 3",
        ])
    );
}

/// A budget over the policy's own timeout is warned about; a required missing stage says
/// which error requests will get.
#[test]
fn complexity_warns_about_budget_and_required_stages() {
    let body = parse(pipeline_complexity(
        &policy(r#","timeout_ms":500"#),
        &registry(),
    ));
    let warnings = body["warnings"].as_array().unwrap();
    assert_eq!(
        warnings.last().unwrap(),
        "worst-case extension latency 960 ms exceeds the policy's timeout_ms 500"
    );
    let body = parse(pipeline_complexity(&policy(""), &Registry::default()));
    assert_eq!(body["latency_budget_ms"], json!(0));
    assert_eq!(
        body["warnings"][0],
        "pre stage normalize_text: not in the extension registry; fails requests with \
         extension_not_found"
    );
}

/// Beamline's extension policies against Beamline's registry: every stage either resolves
/// or is warned about (when the fixtures are present; see `tests/compat_beamline.rs`).
#[test]
fn beamline_policies_against_beamline_registry() {
    let dir = std::env::var_os("SHARDLINE_COMPAT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/compat/beamline")
        });
    if !dir.join("extensions").is_dir() {
        println!("Beamline fixtures not found (set SHARDLINE_COMPAT_DIR); nothing to check");
        return;
    }
    let reg = Registry::load_dir(&dir.join("extensions")).unwrap();
    let bytes = std::fs::read(dir.join("policies/extensions_full.json")).unwrap();
    let full = parse_policy("beamline", "extensions_full", "full", &bytes).unwrap();
    let body = parse(pipeline_complexity(&full, &reg));
    assert_eq!(body["stages"]["total"], json!(7));
    // normalize_text 100, pii_guard 200, mask_pii 150; the other four are not registered.
    assert_eq!(body["latency_budget_ms"], json!(450));
    assert_eq!(body["warnings"].as_array().unwrap().len(), 4);
}
