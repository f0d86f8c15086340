//! The encoded shapes of SPEC §4, checked by parsing the output back.

use std::borrow::Cow;

use serde_json::{json, Value};

use super::*;
use crate::contract::error::{Found, Rule, VERSION_UNSUPPORTED};
use crate::contract::types::ExtensionStatus;

fn metadata() -> Metadata<'static> {
    Metadata {
        entries: vec![
            (Cow::Borrowed("user_id"), Scalar::Str(Cow::Borrowed("u-42"))),
            (Cow::Borrowed("tier"), Scalar::Num(3.0)),
            (Cow::Borrowed("ratio"), Scalar::Num(0.25)),
            (Cow::Borrowed("beta"), Scalar::Bool(true)),
            (Cow::Borrowed("note"), Scalar::Null),
        ],
    }
}

fn body<'a>(metadata: &'a Metadata<'a>) -> DecisionBody<'a> {
    DecisionBody {
        provider_id: "openai",
        shadow_provider_id: None,
        reason: Reason::Weighted,
        expected_latency_ms: Some(420.0),
        expected_cost: Some(0.002),
        policy_id: "default",
        policy_version: "1.0",
        tenant_id: "acme",
        metadata,
        extra_metadata: &[],
        executed_extensions: &[],
        explanation: None,
        request_id: "r-1",
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
    }
}

fn encode(body: &DecisionBody<'_>) -> (Vec<u8>, Value) {
    let mut out = Vec::new();
    encode_decision(&mut out, body);
    let value = serde_json::from_slice(&out).expect("valid JSON");
    (out, value)
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[test]
fn decision_has_the_spec_shape() {
    let metadata = metadata();
    let (_, value) = encode(&body(&metadata));
    assert_eq!(keys(&value), ["context", "decision", "ok"]);
    assert_eq!(value["ok"], json!(true));
    let decision = &value["decision"];
    let expected = [
        "expected_cost",
        "expected_latency_ms",
        "metadata",
        "policy_id",
        "policy_version",
        "priority",
        "provider_id",
        "reason",
    ];
    assert_eq!(keys(decision), expected);
    assert_eq!(decision["provider_id"], json!("openai"));
    assert_eq!(decision["reason"], json!("weighted"));
    assert_eq!(decision["priority"], json!(50));
    assert_eq!(decision["expected_latency_ms"], json!(420.0));
    assert_eq!(decision["expected_cost"], json!(0.002));
    assert_eq!(decision["policy_version"], json!("1.0"));
    let metadata = json!({"tenant_id": "acme", "user_id": "u-42", "tier": 3, "ratio": 0.25,
                          "beta": true, "note": null, "executed_extensions": []});
    assert_eq!(decision["metadata"], metadata);
    let context = json!({"request_id": "r-1", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"});
    assert_eq!(value["context"], context);
}

/// Integral metadata numbers come back as integers, not `3.0`.
#[test]
fn integral_metadata_numbers_print_as_integers() {
    let metadata = metadata();
    let (out, _) = encode(&body(&metadata));
    let text = std::str::from_utf8(&out).unwrap();
    assert!(text.contains(r#""tier":3,"#), "{text}");
    assert!(text.contains(r#""ratio":0.25"#), "{text}");
}

/// Unknown figures are `null`, never a made-up 0; no trace id means no `trace_id` key.
#[test]
fn unknown_figures_are_null_and_absent_ids_are_left_out() {
    let metadata = Metadata::default();
    let mut body = body(&metadata);
    body.expected_latency_ms = None;
    body.expected_cost = None;
    body.trace_id = None;
    body.reason = Reason::CircuitBreakerFallback;
    let (_, value) = encode(&body);
    assert_eq!(value["decision"]["expected_latency_ms"], Value::Null);
    assert_eq!(value["decision"]["expected_cost"], Value::Null);
    assert!(value["decision"]
        .as_object()
        .unwrap()
        .contains_key("expected_cost"));
    assert_eq!(value["decision"]["priority"], json!(20));
    assert_eq!(value["context"], json!({"request_id": "r-1"}));
    assert_eq!(
        value["decision"]["metadata"],
        json!({"tenant_id": "acme", "executed_extensions": []})
    );
}

#[test]
fn explanation_is_written_only_when_asked_for() {
    let metadata = Metadata::default();
    let steps = vec![
        "policy default v1.0".to_owned(),
        "weighted draw: openai".to_owned(),
    ];
    let mut body = body(&metadata);
    body.explanation = Some(&steps);
    let (_, value) = encode(&body);
    assert_eq!(value["decision"]["explanation"], json!(steps));
    body.explanation = None;
    let (_, value) = encode(&body);
    assert!(!value["decision"]
        .as_object()
        .unwrap()
        .contains_key("explanation"));
}

/// `decision.shadow` is `{"provider_id": …}` when a shadow was drawn, absent otherwise.
#[test]
fn shadow_is_written_only_when_drawn() {
    let metadata = Metadata::default();
    let mut body = body(&metadata);
    let (_, value) = encode(&body);
    assert!(!value["decision"]
        .as_object()
        .unwrap()
        .contains_key("shadow"));
    body.shadow_provider_id = Some("new_model");
    let (_, value) = encode(&body);
    assert_eq!(
        value["decision"]["shadow"],
        json!({"provider_id": "new_model"})
    );
    assert_eq!(value["decision"]["provider_id"], "openai");
}

#[test]
fn executed_extensions_are_listed() {
    let metadata = Metadata::default();
    let extensions = [
        ExecutedExtension {
            id: "normalize_text".into(),
            kind: "pre",
            status: ExtensionStatus::Ok,
        },
        ExecutedExtension {
            id: "pii_guard".into(),
            kind: "validator",
            status: ExtensionStatus::Timeout,
        },
    ];
    let mut body = body(&metadata);
    body.executed_extensions = &extensions;
    let (_, value) = encode(&body);
    let expected = json!([
        {"id": "normalize_text", "type": "pre", "status": "ok"},
        {"id": "pii_guard", "type": "validator", "status": "timeout"},
    ]);
    assert_eq!(
        value["decision"]["metadata"]["executed_extensions"],
        expected
    );
}

/// Post-processor metadata wins over request metadata, later over earlier, and neither
/// can shadow the keys the router writes: each key appears exactly once.
#[test]
fn merged_metadata_never_repeats_a_key() {
    let metadata = Metadata {
        entries: vec![
            (
                Cow::Borrowed("tenant_id"),
                Scalar::Str(Cow::Borrowed("spoofed")),
            ),
            (Cow::Borrowed("user_id"), Scalar::Str(Cow::Borrowed("u-1"))),
            (Cow::Borrowed("lang"), Scalar::Str(Cow::Borrowed("en"))),
        ],
    };
    let extra = [
        ("lang".into(), json!("fr")),
        ("score".into(), json!({"toxicity": 0.1})),
        ("lang".into(), json!("de")),
        ("executed_extensions".into(), json!("spoofed")),
    ];
    let mut body = body(&metadata);
    body.extra_metadata = &extra;
    let (out, value) = encode(&body);
    let expected = json!({"tenant_id": "acme", "user_id": "u-1", "lang": "de",
                          "score": {"toxicity": 0.1}, "executed_extensions": []});
    assert_eq!(value["decision"]["metadata"], expected);
    let text = std::str::from_utf8(&out).unwrap();
    for key in ["\"tenant_id\"", "\"lang\"", "\"executed_extensions\""] {
        assert_eq!(text.matches(key).count(), 1, "{key} in {text}");
    }
}

#[test]
fn every_reason_has_its_priority() {
    let metadata = Metadata::default();
    for (reason, priority) in Reason::ALL.into_iter().zip([100, 50, 50, 25, 20]) {
        let mut body = body(&metadata);
        body.reason = reason;
        let (_, value) = encode(&body);
        assert_eq!(value["decision"]["reason"], json!(reason.as_str()));
        assert_eq!(value["decision"]["priority"], json!(priority));
    }
}

/// Encoding appends into the caller's buffer; a cleared buffer is reused without growing.
#[test]
fn reused_buffer_does_not_reallocate() {
    let metadata = metadata();
    let body = body(&metadata);
    let mut out = Vec::with_capacity(16);
    encode_decision(&mut out, &body);
    let first = out.clone();
    let (capacity, ptr) = (out.capacity(), out.as_ptr());
    for _ in 0..3 {
        out.clear();
        encode_decision(&mut out, &body);
        assert_eq!(out, first);
        assert_eq!((out.capacity(), out.as_ptr()), (capacity, ptr));
    }
    let mut prefixed = b"HEAD".to_vec();
    encode_decision(&mut prefixed, &body);
    assert_eq!(&prefixed[4..], &first[..], "appends after existing bytes");
}

#[test]
fn error_has_the_spec_shape() {
    let mut out = Vec::new();
    let message = "tenant acme has no policy 'gold'";
    encode_error(
        &mut out,
        ErrorCode::PolicyNotFound,
        message,
        &ErrorDetails::default(),
        Some("r-1"),
        None,
    );
    let value: Value = serde_json::from_slice(&out).unwrap();
    let expected = json!({"ok": false,
        "error": {"code": "policy_not_found", "message": message, "details": {}},
        "context": {"request_id": "r-1"}});
    assert_eq!(value, expected);
}

#[test]
fn error_details_hold_only_present_keys() {
    let mut out = Vec::new();
    let details = ErrorDetails {
        retry_after_ms: Some(250),
        ..ErrorDetails::default()
    };
    encode_error(
        &mut out,
        ErrorCode::RateLimited,
        "slow down",
        &details,
        None,
        None,
    );
    let value: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(value["error"]["details"], json!({"retry_after_ms": 250}));
    assert_eq!(value["context"], json!({}));
    out.clear();
    let details = ErrorDetails {
        extension_id: Some("pii_guard"),
        ..ErrorDetails::default()
    };
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    encode_error(
        &mut out,
        ErrorCode::ExtensionTimeout,
        "pii_guard timed out",
        &details,
        Some("r"),
        Some(trace),
    );
    let value: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        value["error"]["details"],
        json!({"extension_id": "pii_guard"})
    );
    assert_eq!(value["context"]["trace_id"], json!(trace));
}

/// A refused request's error names the field, the rule and the reason, and the message
/// is exactly the error's `Display`, escaped as JSON.
#[test]
fn contract_error_is_encoded_with_field_rule_and_reason() {
    let error = ContractError::invalid("version", Rule::Version, Found::text("2\"\n"));
    let mut out = Vec::new();
    encode_contract_error(&mut out, &error, Some("r-1"), None);
    let value: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(value["error"]["code"], json!("invalid_request"));
    assert_eq!(value["error"]["message"], json!(error.to_string()));
    let details = json!({"field": "version", "rule": "version", "reason": VERSION_UNSUPPORTED});
    assert_eq!(value["error"]["details"], details);
    assert_eq!(value["context"], json!({"request_id": "r-1"}));
}
