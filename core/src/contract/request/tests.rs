//! One test (or more) per rule of SPEC §3, each checking the accept side and the reject
//! side, and that the message names the field.

use std::borrow::Cow;

use serde_json::{json, Value};

use super::*;
use crate::contract::error::VERSION_UNSUPPORTED;
use crate::contract::ErrorCode;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const UUID4: &str = "4bf92f35-77b3-4da6-a3ce-929d0e0e4736";
const ULID_A: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
const ULID_B: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAW";

fn full() -> Value {
    json!({
        "version": "1", "request_id": "r-1", "tenant_id": "acme", "trace_id": TRACE,
        "task": {"type": "chat", "payload": {"messages": [{"role": "user", "content": "hi"}]}},
        "policy_id": "gold",
        "constraints": {"max_latency_ms": 500, "max_cost": 0.01,
                        "exclude": ["slowco"], "require": ["vision"],
                        "only": ["openai", "anthropic"], "order": ["anthropic"]},
        "metadata": {"user_id": "u-42", "tier": 3, "beta": true, "note": null},
        "attempt": {"previous_provider": "openai", "status": "timeout", "count": 2},
        "push_assignment": true, "assignment_subject": "caf.exec.assign.v1",
        "options": {"priority": 5, "deadline_ms": 1_900_000_000_000u64},
        "deadline": 1_800_000_000_000u64,
        "run_id": ULID_A, "flow_id": UUID4, "step_id": ULID_B,
        "idempotency_key": "idem-1", "explain": true,
        "some_future_field": {"nested": [1, 2, {"x": null}]}
    })
}

fn minimal() -> Value {
    let task = json!({"type": "chat", "payload_ref": "s3://b/k"});
    json!({"request_id": "r-1", "tenant_id": "acme", "task": task})
}

/// The required fields, for hand-written bodies: `format!("{{{REQUIRED},…}}")`.
const REQUIRED: &str = r#""request_id":"r","tenant_id":"t","task":{"type":"a","payload_ref":"r"}"#;

/// `base` with the dotted `path` set to `value` (`Value::Null` placeholder removal aside).
fn with(mut base: Value, path: &str, value: Value) -> Value {
    let mut at = &mut base;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            at[part] = value;
            break;
        }
        at = &mut at[part];
    }
    base
}

fn without(mut base: Value, path: &str) -> Value {
    let (parent, last) = match path.rsplit_once('.') {
        Some((parent, last)) => (parent.split('.').collect::<Vec<_>>(), last),
        None => (Vec::new(), path),
    };
    let mut at = &mut base;
    for part in parent {
        at = &mut at[part];
    }
    at.as_object_mut().unwrap().remove(last);
    base
}

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

fn accept(value: Value) {
    let body = bytes(&value);
    if let Err(err) = decode_decide(&body, &Headers::default()) {
        panic!("rejected {value}: {err}");
    }
}

fn reject_with(body: &[u8], headers: &Headers<'_>, field: &str, rule: &str) -> String {
    let err = decode_decide(body, headers).expect_err("must be rejected");
    assert_eq!(err.code(), ErrorCode::InvalidRequest);
    assert_eq!(err.field(), field, "{err}");
    assert_eq!(err.rule().code(), rule, "{err}");
    let message = err.to_string();
    assert!(message.starts_with(&format!("{field}: ")), "{message}");
    message
}

fn reject(value: Value, field: &str, rule: &str) -> String {
    reject_with(&bytes(&value), &Headers::default(), field, rule)
}

#[test]
fn full_request_decodes_every_field() {
    let body = bytes(&full());
    let req = decode_decide(&body, &Headers::default()).unwrap();
    assert_eq!(req.request_id, "r-1");
    assert_eq!(req.tenant_id, "acme");
    assert_eq!(req.trace_id.as_deref(), Some(TRACE));
    assert_eq!(req.task.kind, "chat");
    let payload: Value = serde_json::from_str(req.task.payload.unwrap().get()).unwrap();
    assert_eq!(payload, full()["task"]["payload"]);
    assert_eq!(req.task.payload_ref, None);
    assert_eq!(req.policy_id, "gold");
    assert_eq!(req.constraints.max_latency_ms, Some(500.0));
    assert_eq!(req.constraints.max_cost, Some(0.01));
    assert_eq!(req.constraints.exclude, vec!["slowco"]);
    assert_eq!(req.constraints.require, vec!["vision"]);
    assert_eq!(req.constraints.only, vec!["openai", "anthropic"]);
    assert_eq!(req.constraints.order, vec!["anthropic"]);
    assert_eq!(
        req.metadata.get("user_id"),
        Some(&Scalar::Str("u-42".into()))
    );
    assert_eq!(req.metadata.get("tier"), Some(&Scalar::Num(3.0)));
    assert_eq!(req.metadata.get("beta"), Some(&Scalar::Bool(true)));
    assert_eq!(req.metadata.get("note"), Some(&Scalar::Null));
    let attempt = req.attempt.unwrap();
    assert_eq!(
        (&*attempt.previous_provider, &*attempt.status, attempt.count),
        ("openai", "timeout", 2)
    );
    assert!(req.push_assignment);
    assert_eq!(
        req.assignment_subject.as_deref(),
        Some("caf.exec.assign.v1")
    );
    let options: Value = serde_json::from_str(req.options.unwrap().get()).unwrap();
    assert_eq!(options, full()["options"]);
    assert_eq!(
        req.deadline_unix_ms,
        Some(1_800_000_000_000),
        "the earlier of the two"
    );
    let correlation = req.correlation.unwrap();
    assert_eq!(
        (&*correlation.run_id, &*correlation.flow_id),
        (ULID_A, UUID4)
    );
    assert_eq!(correlation.step_id, ULID_B);
    assert_eq!(req.idempotency_key.as_deref(), Some("idem-1"));
    assert!(req.explain);
}

#[test]
fn minimal_request_gets_defaults() {
    let body = bytes(&minimal());
    let req = decode_decide(&body, &Headers::default()).unwrap();
    assert_eq!(req.policy_id, POLICY_ID_DEFAULT);
    assert_eq!(req.task.payload_ref.as_deref(), Some("s3://b/k"));
    assert!(req.task.payload.is_none());
    assert!(req.trace_id.is_none() && req.traceparent.is_none());
    assert!(req.constraints.is_empty());
    assert!(req.metadata.entries.is_empty());
    assert!(req.attempt.is_none() && req.correlation.is_none());
    assert!(!req.push_assignment && !req.explain);
    assert_eq!(req.assignment_subject, None);
    assert_eq!(req.options.map(|raw| raw.get()), None);
    assert_eq!(req.deadline_unix_ms, None);
    assert_eq!(req.idempotency_key, None);
}

/// An escape-free request is decoded without copying any string: every `Cow` borrows
/// from the body, and the raw payload and options are slices of it.
#[test]
fn escape_free_request_borrows_every_string() {
    let body = bytes(&full());
    let req = decode_decide(&body, &Headers::default()).unwrap();
    let borrowed = |cow: &Cow<'_, str>| matches!(cow, Cow::Borrowed(_));
    let mut strings = vec![
        &req.request_id,
        &req.tenant_id,
        &req.task.kind,
        &req.policy_id,
    ];
    strings.extend(req.trace_id.as_ref());
    strings.extend(req.assignment_subject.as_ref());
    strings.extend(req.idempotency_key.as_ref());
    strings.extend(
        req.constraints
            .exclude
            .iter()
            .chain(&req.constraints.require)
            .chain(&req.constraints.only)
            .chain(&req.constraints.order),
    );
    let attempt = req.attempt.as_ref().unwrap();
    strings.extend([&attempt.previous_provider, &attempt.status]);
    let correlation = req.correlation.as_ref().unwrap();
    strings.extend([
        &correlation.run_id,
        &correlation.flow_id,
        &correlation.step_id,
    ]);
    for (key, value) in &req.metadata.entries {
        strings.push(key);
        if let Scalar::Str(value) = value {
            strings.push(value);
        }
    }
    for s in strings {
        assert!(borrowed(s), "{s:?} was copied");
    }
    let range = body.as_ptr_range();
    for raw in [req.task.payload.unwrap(), req.options.unwrap()] {
        assert!(
            range.contains(&raw.get().as_ptr()),
            "raw value is not a slice of the body"
        );
    }
}

#[test]
fn escaped_strings_are_unescaped_into_owned() {
    let body = br#"{"request_id":"r\u002d1","tenant_id":"acme",
                    "task":{"type":"c\"hat","payload_ref":"x"}}"#;
    let req = decode_decide(body, &Headers::default()).unwrap();
    assert!(matches!(req.request_id, Cow::Owned(ref s) if s == "r-1"));
    assert_eq!(req.task.kind, "c\"hat");
}

#[test]
fn version_must_be_1() {
    accept(without(full(), "version"));
    accept(with(minimal(), "version", json!("1")));
    accept(with(minimal(), "version", Value::Null));
    let message = reject(with(minimal(), "version", json!("2")), "version", "version");
    assert!(message.contains("\"2\""), "{message}");
    reject(with(minimal(), "version", json!(1)), "version", "version");
    let body = bytes(&with(minimal(), "version", json!("1.1")));
    let err = decode_decide(&body, &Headers::default()).unwrap_err();
    assert_eq!(err.details().reason, Some(VERSION_UNSUPPORTED));
}

#[test]
fn version_header_is_checked_and_wins() {
    let body = bytes(&minimal());
    let two = Headers {
        version: Some("2"),
        ..Headers::default()
    };
    reject_with(&body, &two, "headers.version", "version");
    let body_two = bytes(&with(minimal(), "version", json!("2")));
    let one = Headers {
        version: Some("1"),
        ..Headers::default()
    };
    assert!(
        decode_decide(&body_two, &one).is_ok(),
        "the header wins over the body"
    );
}

#[test]
fn request_id_is_1_to_128_bytes() {
    accept(with(
        minimal(),
        "request_id",
        json!("x".repeat(REQUEST_ID_BYTES_MAX)),
    ));
    reject(without(minimal(), "request_id"), "request_id", "required");
    reject(
        with(minimal(), "request_id", Value::Null),
        "request_id",
        "required",
    );
    reject(
        with(minimal(), "request_id", json!("")),
        "request_id",
        "length",
    );
    let long = json!("x".repeat(REQUEST_ID_BYTES_MAX + 1));
    let message = reject(with(minimal(), "request_id", long), "request_id", "length");
    assert_eq!(message, "request_id: must be 1–128 bytes (got 129 bytes)");
    let message = reject(
        with(minimal(), "request_id", json!(7)),
        "request_id",
        "type",
    );
    assert_eq!(message, "request_id: must be a string (got a number)");
}

#[test]
fn tenant_id_matches_its_pattern() {
    accept(with(minimal(), "tenant_id", json!("Acme_corp.eu-1")));
    accept(with(
        minimal(),
        "tenant_id",
        json!("t".repeat(TENANT_ID_BYTES_MAX)),
    ));
    let long = json!("t".repeat(TENANT_ID_BYTES_MAX + 1));
    let message = reject(with(minimal(), "tenant_id", long), "tenant_id", "pattern");
    assert_eq!(
        message,
        "tenant_id: must match ^[A-Za-z0-9_.-]{1,64}$ (got 65 bytes)"
    );
    let message = reject(
        with(minimal(), "tenant_id", json!("ac me")),
        "tenant_id",
        "pattern",
    );
    assert!(message.ends_with(r#"(got "ac me")"#), "{message}");
    reject(
        with(minimal(), "tenant_id", json!("")),
        "tenant_id",
        "pattern",
    );
    reject(
        with(minimal(), "tenant_id", json!(["acme"])),
        "tenant_id",
        "type",
    );
    let message = reject(without(minimal(), "tenant_id"), "tenant_id", "required");
    assert!(message.contains("field or header"), "{message}");
}

/// A header value wins over the body field, and is what gets validated.
#[test]
fn tenant_and_trace_headers_override_body() {
    let body = bytes(&with(
        with(minimal(), "tenant_id", json!("ac me")),
        "trace_id",
        json!("bad"),
    ));
    let headers = Headers {
        tenant_id: Some("from-header"),
        trace_id: Some(UUID4),
        ..Headers::default()
    };
    let req = decode_decide(&body, &headers).unwrap();
    assert_eq!(req.tenant_id, "from-header");
    assert_eq!(req.trace_id.as_deref(), Some(UUID4));
    let no_tenant = bytes(&without(minimal(), "tenant_id"));
    let req = decode_decide(&no_tenant, &headers).unwrap();
    assert_eq!(req.tenant_id, "from-header");
    let bad = Headers {
        tenant_id: Some("a/b"),
        ..Headers::default()
    };
    reject_with(&bytes(&minimal()), &bad, "headers.tenant_id", "pattern");
    let bad = Headers {
        trace_id: Some("nope"),
        ..Headers::default()
    };
    reject_with(&bytes(&minimal()), &bad, "headers.trace_id", "format");
}

#[test]
fn trace_id_is_32_hex_or_uuid() {
    accept(with(minimal(), "trace_id", json!(TRACE)));
    accept(with(minimal(), "trace_id", json!(TRACE.to_uppercase())));
    accept(with(
        minimal(),
        "trace_id",
        json!("4bf92f35-77b3-1da6-a3ce-929d0e0e4736"),
    ));
    accept(with(minimal(), "trace_id", Value::Null));
    reject(
        with(minimal(), "trace_id", json!(&TRACE[1..])),
        "trace_id",
        "format",
    );
    reject(
        with(minimal(), "trace_id", json!("g".repeat(32))),
        "trace_id",
        "format",
    );
    reject(with(minimal(), "trace_id", json!(12)), "trace_id", "type");
}

/// A malformed `traceparent` is dropped (W3C Trace Context), not a reason to refuse.
#[test]
fn traceparent_header_is_kept_only_when_well_formed() {
    let body = bytes(&minimal());
    let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = Headers {
        traceparent: Some(good),
        ..Headers::default()
    };
    assert_eq!(
        decode_decide(&body, &headers)
            .unwrap()
            .traceparent
            .as_deref(),
        Some(good)
    );
    let headers = Headers {
        traceparent: Some("garbage"),
        ..Headers::default()
    };
    assert_eq!(decode_decide(&body, &headers).unwrap().traceparent, None);
}

#[test]
fn task_needs_type_and_payload_or_ref() {
    accept(with(minimal(), "task", json!({"type": "t", "payload": {}})));
    accept(with(
        minimal(),
        "task",
        json!({"type": "t", "payload": {}, "payload_ref": "r"}),
    ));
    accept(with(
        minimal(),
        "task",
        json!({"type": "t", "payload": null, "payload_ref": "r"}),
    ));
    reject(without(minimal(), "task"), "task", "required");
    reject(with(minimal(), "task", json!("chat")), "task", "type");
    reject(
        with(minimal(), "task", json!({"payload_ref": "r"})),
        "task.type",
        "required",
    );
    reject(
        with(minimal(), "task", json!({"type": "", "payload_ref": "r"})),
        "task.type",
        "length",
    );
    reject(
        with(minimal(), "task", json!({"type": 3, "payload_ref": "r"})),
        "task.type",
        "type",
    );
    let message = reject(
        with(minimal(), "task", json!({"type": "t"})),
        "task",
        "required",
    );
    assert!(
        message.contains("payload_ref") && message.contains("payload"),
        "{message}"
    );
    let array = json!({"type": "t", "payload": [1]});
    let message = reject(with(minimal(), "task", array), "task.payload", "type");
    assert_eq!(message, "task.payload: must be an object (got an array)");
    let empty_ref = json!({"type": "t", "payload_ref": ""});
    reject(
        with(minimal(), "task", empty_ref),
        "task.payload_ref",
        "length",
    );
    let number_ref = json!({"type": "t", "payload_ref": 5});
    reject(
        with(minimal(), "task", number_ref),
        "task.payload_ref",
        "type",
    );
    let long_type = json!({"type": "t".repeat(TASK_TYPE_BYTES_MAX + 1), "payload_ref": "r"});
    reject(with(minimal(), "task", long_type), "task.type", "length");
}

/// The raw payload is forwarded to workers, so its nesting is bounded by us (serde_json
/// does not bound a raw capture).
#[test]
fn task_payload_depth_is_bounded() {
    let nest = |depth: usize| {
        let inner = format!("{}{}", "[".repeat(depth - 1), "]".repeat(depth - 1));
        format!(
            r#"{{"request_id":"r","tenant_id":"t",
                 "task":{{"type":"x","payload":{{"a":{inner}}}}}}}"#
        )
    };
    let ok = nest(FORWARDED_DEPTH_MAX);
    assert!(decode_decide(ok.as_bytes(), &Headers::default()).is_ok());
    let deep = nest(FORWARDED_DEPTH_MAX + 1);
    reject_with(
        deep.as_bytes(),
        &Headers::default(),
        "task.payload",
        "depth",
    );
}

#[test]
fn repeated_keys_inside_task_are_refused() {
    let body =
        br#"{"request_id":"r","tenant_id":"t","task":{"type":"a","type":"b","payload_ref":"r"}}"#;
    reject_with(body, &Headers::default(), "task.type", "duplicate");
}

#[test]
fn policy_id_defaults_and_matches_its_pattern() {
    accept(with(minimal(), "policy_id", json!("gold.v2_eu-1")));
    accept(with(
        minimal(),
        "policy_id",
        json!("p".repeat(POLICY_ID_BYTES_MAX)),
    ));
    let long = json!("p".repeat(POLICY_ID_BYTES_MAX + 1));
    let message = reject(with(minimal(), "policy_id", long), "policy_id", "pattern");
    assert!(message.contains("^[A-Za-z0-9_.-]{1,128}$"), "{message}");
    reject(
        with(minimal(), "policy_id", json!("../etc")),
        "policy_id",
        "pattern",
    );
    reject(
        with(minimal(), "policy_id", json!("")),
        "policy_id",
        "pattern",
    );
    reject(
        with(minimal(), "policy_id", json!(true)),
        "policy_id",
        "type",
    );
}

#[test]
fn constraint_numbers_are_non_negative() {
    accept(with(
        minimal(),
        "constraints",
        json!({"max_latency_ms": 0, "max_cost": 0.0}),
    ));
    accept(with(
        minimal(),
        "constraints",
        json!({"max_latency_ms": null}),
    ));
    accept(with(minimal(), "constraints", Value::Null));
    let negative = json!({"max_latency_ms": -1});
    let message = reject(
        with(minimal(), "constraints", negative),
        "constraints.max_latency_ms",
        "range",
    );
    assert_eq!(
        message,
        "constraints.max_latency_ms: must be a non-negative number (got -1)"
    );
    let negative = json!({"max_cost": -0.5});
    reject(
        with(minimal(), "constraints", negative),
        "constraints.max_cost",
        "range",
    );
    let text = json!({"max_cost": "cheap"});
    reject(
        with(minimal(), "constraints", text),
        "constraints.max_cost",
        "type",
    );
    reject(
        with(minimal(), "constraints", json!([1])),
        "constraints",
        "type",
    );
}

#[test]
fn constraint_lists_are_bounded_lists_of_strings() {
    let full_list: Vec<String> = (0..CONSTRAINT_LIST_ENTRIES_MAX)
        .map(|i| format!("p{i}"))
        .collect();
    accept(with(
        minimal(),
        "constraints",
        json!({"exclude": full_list, "require": []}),
    ));
    let too_many: Vec<String> = (0..=CONSTRAINT_LIST_ENTRIES_MAX)
        .map(|i| format!("p{i}"))
        .collect();
    let message = reject(
        with(minimal(), "constraints", json!({"exclude": too_many})),
        "constraints.exclude",
        "count",
    );
    assert_eq!(
        message,
        "constraints.exclude: must have at most 64 entries (got 65)"
    );
    let mixed = json!({"require": ["ok", 2]});
    reject(
        with(minimal(), "constraints", mixed),
        "constraints.require[1]",
        "type",
    );
    let empty = json!({"exclude": [""]});
    reject(
        with(minimal(), "constraints", empty),
        "constraints.exclude[0]",
        "length",
    );
    let scalar = json!({"exclude": "openai"});
    reject(
        with(minimal(), "constraints", scalar),
        "constraints.exclude",
        "type",
    );
}

/// `only` and `order` are lists of provider ids bounded like `exclude`; an id may appear
/// once; `only: []` (an allow-list allowing nothing) is refused, `order: []` and `null`
/// mean no order.
#[test]
fn only_and_order_are_bounded_lists_of_distinct_provider_ids() {
    let full_list: Vec<String> = (0..CONSTRAINT_LIST_ENTRIES_MAX)
        .map(|i| format!("p{i}"))
        .collect();
    accept(with(
        minimal(),
        "constraints",
        json!({"only": full_list, "order": full_list}),
    ));
    accept(with(
        minimal(),
        "constraints",
        json!({"only": null, "order": []}),
    ));
    for field in ["only", "order"] {
        let path = format!("constraints.{field}");
        let too_many: Vec<String> = (0..=CONSTRAINT_LIST_ENTRIES_MAX)
            .map(|i| format!("p{i}"))
            .collect();
        let message = reject(
            with(minimal(), "constraints", json!({field: too_many})),
            &path,
            "count",
        );
        assert_eq!(
            message,
            format!("{path}: must have at most 64 entries (got 65)")
        );
        let long = "x".repeat(PROVIDER_ID_BYTES_MAX + 1);
        reject(
            with(minimal(), "constraints", json!({field: ["openai", long]})),
            &format!("{path}[1]"),
            "length",
        );
        reject(
            with(minimal(), "constraints", json!({field: [""]})),
            &format!("{path}[0]"),
            "length",
        );
        reject(
            with(minimal(), "constraints", json!({field: "openai"})),
            &path,
            "type",
        );
        reject(
            with(minimal(), "constraints", json!({field: [1]})),
            &format!("{path}[0]"),
            "type",
        );
        let twice = json!({field: ["openai", "anthropic", "openai"]});
        let message = reject(
            with(minimal(), "constraints", twice),
            &format!("{path}[2]"),
            "duplicate",
        );
        assert_eq!(
            message,
            format!("{path}[2]: must not be given twice (got \"openai\")")
        );
    }
    let message = reject(
        with(minimal(), "constraints", json!({"only": []})),
        "constraints.only",
        "count",
    );
    assert_eq!(
        message,
        "constraints.only: must name at least one entry (leave it out for no limit)"
    );
    let body = format!(r#"{{{REQUIRED},"constraints":{{"only":["a"],"only":["b"]}}}}"#);
    reject_with(
        body.as_bytes(),
        &Headers::default(),
        "constraints.only",
        "duplicate",
    );
}

#[test]
fn metadata_maps_strings_to_scalars() {
    accept(with(
        minimal(),
        "metadata",
        json!({"a": "x", "b": 1.5, "c": false, "d": null}),
    ));
    accept(with(minimal(), "metadata", json!({})));
    let nested = json!({"user": {"id": 1}});
    let message = reject(with(minimal(), "metadata", nested), "metadata.user", "type");
    assert_eq!(
        message,
        "metadata.user: must be a string, number, boolean or null (got an object)"
    );
    reject(
        with(minimal(), "metadata", json!({"tags": ["a"]})),
        "metadata.tags",
        "type",
    );
    reject(
        with(minimal(), "metadata", json!("k=v")),
        "metadata",
        "type",
    );
}

#[test]
fn metadata_is_bounded() {
    let entries = |n: usize| {
        let map: serde_json::Map<String, Value> =
            (0..n).map(|i| (format!("k{i}"), json!(i))).collect();
        Value::Object(map)
    };
    accept(with(minimal(), "metadata", entries(METADATA_ENTRIES_MAX)));
    let message = reject(
        with(minimal(), "metadata", entries(METADATA_ENTRIES_MAX + 1)),
        "metadata",
        "count",
    );
    assert!(message.ends_with("(got 65)"), "{message}");
    let long_key = json!({"k".repeat(METADATA_KEY_BYTES_MAX + 1): 1});
    let message = reject(with(minimal(), "metadata", long_key), "metadata", "length");
    assert!(message.contains("keys must be 1–128 bytes"), "{message}");
    reject(
        with(minimal(), "metadata", json!({"": 1})),
        "metadata",
        "length",
    );
    let long_value = json!({"k": "v".repeat(METADATA_VALUE_BYTES_MAX + 1)});
    reject(
        with(minimal(), "metadata", long_value),
        "metadata.k",
        "length",
    );
    accept(with(
        minimal(),
        "metadata",
        json!({"k": "v".repeat(METADATA_VALUE_BYTES_MAX)}),
    ));
}

#[test]
fn metadata_keys_are_unique() {
    let body = br#"{"request_id":"r","tenant_id":"t","task":{"type":"a","payload_ref":"r"},
                    "metadata":{"user_id":"u1","x":1,"user_id":"u2"}}"#;
    let message = reject_with(body, &Headers::default(), "metadata.user_id", "duplicate");
    assert_eq!(message, "metadata.user_id: must not be given twice");
}

#[test]
fn attempt_needs_provider_and_status() {
    let attempt = |v: Value| with(minimal(), "attempt", v);
    let body = bytes(&attempt(
        json!({"previous_provider": "openai", "status": "5xx"}),
    ));
    assert_eq!(
        decode_decide(&body, &Headers::default())
            .unwrap()
            .attempt
            .unwrap()
            .count,
        1
    );
    reject(
        attempt(json!({"status": "5xx"})),
        "attempt.previous_provider",
        "required",
    );
    reject(
        attempt(json!({"previous_provider": "", "status": "5xx"})),
        "attempt.previous_provider",
        "length",
    );
    reject(
        attempt(json!({"previous_provider": "o"})),
        "attempt.status",
        "required",
    );
    reject(
        attempt(json!({"previous_provider": "o", "status": ""})),
        "attempt.status",
        "length",
    );
    reject(
        attempt(json!({"previous_provider": "o", "status": 429})),
        "attempt.status",
        "type",
    );
    reject(attempt(json!(true)), "attempt", "type");
}

#[test]
fn attempt_count_is_a_whole_number_from_1() {
    let count = |v: Value| {
        with(
            minimal(),
            "attempt",
            json!({"previous_provider": "o", "status": "s", "count": v}),
        )
    };
    accept(count(json!(1)));
    accept(count(json!(ATTEMPT_COUNT_MAX)));
    accept(count(Value::Null));
    reject(count(json!(0)), "attempt.count", "range");
    reject(count(json!(-1)), "attempt.count", "range");
    reject(
        count(json!(ATTEMPT_COUNT_MAX + 1)),
        "attempt.count",
        "range",
    );
    let message = reject(count(json!(1.5)), "attempt.count", "range");
    assert!(message.ends_with("(got 1.5)"), "{message}");
    let message = reject(count(json!(2.0)), "attempt.count", "range");
    assert!(message.ends_with("(got 2.0)"), "{message}");
    reject(count(json!("2")), "attempt.count", "type");
}

/// 20-digit numbers overflow u64 or land far out of range; either way a clear range error.
#[test]
fn attempt_count_with_20_digits_is_refused_clearly() {
    for digits in ["12345678901234567890", "99999999999999999999"] {
        let body = format!(
            r#"{{"request_id":"r","tenant_id":"t","task":{{"type":"a","payload_ref":"r"}},
                "attempt":{{"previous_provider":"o","status":"s","count":{digits}}}}}"#
        );
        let message = reject_with(
            body.as_bytes(),
            &Headers::default(),
            "attempt.count",
            "range",
        );
        assert!(
            message.contains("must be a whole number from 1 to 1000"),
            "{message}"
        );
    }
}

#[test]
fn push_assignment_defaults_the_subject() {
    let body = bytes(&with(minimal(), "push_assignment", json!(true)));
    let req = decode_decide(&body, &Headers::default()).unwrap();
    assert_eq!(
        req.assignment_subject.as_deref(),
        Some(ASSIGNMENT_SUBJECT_DEFAULT)
    );
    let body = bytes(&with(minimal(), "push_assignment", json!(false)));
    assert_eq!(
        decode_decide(&body, &Headers::default())
            .unwrap()
            .assignment_subject,
        None
    );
    reject(
        with(minimal(), "push_assignment", json!("yes")),
        "push_assignment",
        "type",
    );
}

#[test]
fn assignment_subject_is_a_publishable_nats_subject() {
    accept(with(
        minimal(),
        "assignment_subject",
        json!("caf.exec.assign.gpu"),
    ));
    for bad in [
        "caf.exec.*",
        "caf.>",
        "caf..assign",
        "caf exec",
        ".caf",
        "caf\r\nPUB",
    ] {
        let message = reject(
            with(minimal(), "assignment_subject", json!(bad)),
            "assignment_subject",
            "format",
        );
        assert!(message.contains("NATS subject"), "{message}");
    }
    reject(
        with(minimal(), "assignment_subject", json!("")),
        "assignment_subject",
        "length",
    );
    let long = json!("a".repeat(NATS_SUBJECT_BYTES_MAX + 1));
    reject(
        with(minimal(), "assignment_subject", long),
        "assignment_subject",
        "length",
    );
    reject(
        with(minimal(), "assignment_subject", json!(1)),
        "assignment_subject",
        "type",
    );
}

#[test]
fn options_is_an_object_kept_raw() {
    let body = bytes(&with(
        minimal(),
        "options",
        json!({"priority": 1, "retry": {"max_attempts": 2}}),
    ));
    let req = decode_decide(&body, &Headers::default()).unwrap();
    assert_eq!(
        req.options.unwrap().get(),
        r#"{"priority":1,"retry":{"max_attempts":2}}"#
    );
    let nested = |depth: usize| {
        let inner = format!("{}{}", "[".repeat(depth - 1), "]".repeat(depth - 1));
        let body = format!(r#"{{{REQUIRED},"options":{{"x":{inner}}}}}"#);
        decode_decide(body.as_bytes(), &Headers::default()).map(|_| ())
    };
    assert!(nested(FORWARDED_DEPTH_MAX).is_ok());
    let err = nested(FORWARDED_DEPTH_MAX + 1).unwrap_err();
    assert_eq!((err.field(), err.rule().code()), ("options", "depth"));
    assert_eq!(req.deadline_unix_ms, None);
    accept(with(minimal(), "options", Value::Null));
    reject(with(minimal(), "options", json!([1])), "options", "type");
    reject(with(minimal(), "options", json!("fast")), "options", "type");
}

#[test]
fn deadline_comes_from_options_or_top_level_whichever_is_earlier() {
    let deadline_of = |v: Value| {
        let body = bytes(&v);
        decode_decide(&body, &Headers::default())
            .unwrap()
            .deadline_unix_ms
    };
    let at = 1_700_000_000_000u64;
    assert_eq!(
        deadline_of(with(minimal(), "options", json!({"deadline_ms": at}))),
        Some(at)
    );
    assert_eq!(
        deadline_of(with(minimal(), "deadline", json!(at))),
        Some(at)
    );
    let both = with(
        with(minimal(), "deadline", json!(at + 5)),
        "options",
        json!({"deadline_ms": at}),
    );
    assert_eq!(deadline_of(both), Some(at));
    let both = with(
        with(minimal(), "deadline", json!(at)),
        "options",
        json!({"deadline_ms": at + 5}),
    );
    assert_eq!(deadline_of(both), Some(at));
}

/// Beamline gateways send `options.deadline_ms` as a relative worker budget: it is
/// forwarded, and is not a routing deadline.
#[test]
fn relative_options_deadline_is_a_budget() {
    let body = bytes(&with(minimal(), "options", json!({"deadline_ms": 5000})));
    let req = decode_decide(&body, &Headers::default()).unwrap();
    assert_eq!(req.deadline_unix_ms, None);
    assert!(req.options.unwrap().get().contains("5000"));
    reject(
        with(minimal(), "options", json!({"deadline_ms": -1})),
        "options.deadline_ms",
        "range",
    );
}

/// A duration sent as the top-level `deadline` is refused with a message saying so.
#[test]
fn deadline_must_be_absolute_unix_ms() {
    let message = reject(
        with(minimal(), "deadline", json!(5000)),
        "deadline",
        "range",
    );
    assert!(
        message.contains("absolute Unix time in milliseconds"),
        "{message}"
    );
    reject(
        with(minimal(), "deadline", json!(1.7e12)),
        "deadline",
        "range",
    );
    reject(
        with(minimal(), "deadline", json!(UNIX_MS_MAX + 1)),
        "deadline",
        "range",
    );
    reject(
        with(minimal(), "deadline", json!("2030-01-01")),
        "deadline",
        "type",
    );
    let body = br#"{"request_id":"r","tenant_id":"t","task":{"type":"a","payload_ref":"r"},
                    "options":{"deadline_ms":1700000000000,"deadline_ms":1800000000000}}"#;
    reject_with(
        body,
        &Headers::default(),
        "options.deadline_ms",
        "duplicate",
    );
}

#[test]
fn run_flow_step_ids_come_all_or_none() {
    let ids = |run: Value, flow: Value, step: Value| {
        with(
            with(with(minimal(), "run_id", run), "flow_id", flow),
            "step_id",
            step,
        )
    };
    accept(ids(
        json!(UUID4),
        json!(ULID_A),
        json!(ULID_A.to_lowercase()),
    ));
    accept(ids(Value::Null, Value::Null, Value::Null));
    let message = reject(
        ids(json!(ULID_A), Value::Null, json!(ULID_B)),
        "flow_id",
        "all_or_none",
    );
    assert!(message.contains("all or none"), "{message}");
    reject(
        ids(Value::Null, json!(ULID_A), json!(ULID_B)),
        "run_id",
        "all_or_none",
    );
    reject(
        ids(json!(ULID_A), json!(ULID_B), Value::Null),
        "step_id",
        "all_or_none",
    );
    let v1 = json!("4bf92f35-77b3-1da6-a3ce-929d0e0e4736");
    let message = reject(ids(json!(ULID_A), v1, json!(ULID_B)), "flow_id", "format");
    assert!(message.contains("UUIDv4 or a ULID"), "{message}");
    reject(
        ids(
            json!("8ZZZZZZZZZZZZZZZZZZZZZZZZZ"),
            json!(ULID_A),
            json!(ULID_B),
        ),
        "run_id",
        "format",
    );
    reject(
        ids(json!(1), json!(ULID_A), json!(ULID_B)),
        "run_id",
        "type",
    );
}

#[test]
fn idempotency_key_is_1_to_256_bytes() {
    accept(with(
        minimal(),
        "idempotency_key",
        json!("k".repeat(IDEMPOTENCY_KEY_BYTES_MAX)),
    ));
    reject(
        with(minimal(), "idempotency_key", json!("")),
        "idempotency_key",
        "length",
    );
    let long = json!("k".repeat(IDEMPOTENCY_KEY_BYTES_MAX + 1));
    reject(
        with(minimal(), "idempotency_key", long),
        "idempotency_key",
        "length",
    );
    reject(
        with(minimal(), "idempotency_key", json!(5)),
        "idempotency_key",
        "type",
    );
}

#[test]
fn explain_is_a_boolean() {
    let body = bytes(&with(minimal(), "explain", json!(true)));
    assert!(decode_decide(&body, &Headers::default()).unwrap().explain);
    reject(with(minimal(), "explain", json!(1)), "explain", "type");
}

/// Unknown fields anywhere are ignored, so newer gateways can talk to this router.
#[test]
fn unknown_fields_are_ignored() {
    let mut value = with(minimal(), "x_new", json!({"deep": [[{"a": 1}]]}));
    value["task"]["priority_hint"] = json!("high");
    value["constraints"] = json!({"max_tokens": 100});
    value["attempt"] = json!({"previous_provider": "o", "status": "s", "reason": "later"});
    accept(value);
}

/// serde's derive refuses repeated struct fields; so does this decoder, for every key.
#[test]
fn repeated_top_level_keys_are_refused() {
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Derived {
        request_id: String,
    }
    let body = br#"{"request_id":"a","request_id":"b"}"#;
    let derived = serde_json::from_slice::<Derived>(body).unwrap_err();
    assert!(derived.to_string().contains("duplicate field"), "{derived}");
    let body = format!(r#"{{{REQUIRED},"request_id":"b"}}"#);
    reject_with(
        body.as_bytes(),
        &Headers::default(),
        "request_id",
        "duplicate",
    );
    let body = format!(r#"{{"tenant_id":"t",{REQUIRED}}}"#);
    reject_with(
        body.as_bytes(),
        &Headers::default(),
        "tenant_id",
        "duplicate",
    );
}

#[test]
fn malformed_bodies_are_invalid_requests() {
    let cases: [&[u8]; 8] = [
        b"",
        b"{",
        br#"{"request_id": "r""#,
        br#"{"request_id": "r"} trailing"#,
        b"{\"request_id\": \"\xff\xfe\"}",
        b"\xef\xbb\xbf{}",
        br#"{"request_id": 1e400}"#,
        br#"{'single': 1}"#,
    ];
    for body in cases {
        let err = decode_decide(body, &Headers::default()).unwrap_err();
        assert_eq!(err.rule(), Rule::Json, "{err}");
        assert!(err.to_string().contains("malformed JSON"), "{err}");
    }
    let err = decode_decide(
        br#"{"constraints": {"max_cost": 1e400}}"#,
        &Headers::default(),
    )
    .unwrap_err();
    assert_eq!(err.field(), "constraints", "names the field being read");
    let message = reject_with(b"[1, 2]", &Headers::default(), "body", "type");
    assert_eq!(message, "body: must be an object (got an array)");
    reject_with(b"null", &Headers::default(), "body", "type");
}

/// Nesting 10 000 levels deep is consumed without recursion: a clear error, no overflow.
#[test]
fn deep_nesting_is_refused_without_overflow() {
    let (open, close) = ("[".repeat(10_000), "]".repeat(10_000));
    let err = decode_decide(open.as_bytes(), &Headers::default()).unwrap_err();
    assert_eq!(err.rule(), Rule::Json, "unterminated: {err}");
    let message = reject_with(
        format!("{open}{close}").as_bytes(),
        &Headers::default(),
        "body",
        "type",
    );
    assert_eq!(message, "body: must be an object (got an array)");
    let deep_metadata = format!(
        r#"{{"request_id":"r","tenant_id":"t","task":{{"type":"a","payload_ref":"r"}},
            "metadata":{{"a":{open}{close}}}}}"#
    );
    let message = reject_with(
        deep_metadata.as_bytes(),
        &Headers::default(),
        "metadata.a",
        "type",
    );
    assert!(message.ends_with("(got an array)"), "{message}");
    for field in [
        "metadata",
        "constraints",
        "x_unknown",
        "attempt",
        "task",
        "options",
    ] {
        let body = format!(r#"{{"{field}": {{"a": {open}"#);
        let err = decode_decide(body.as_bytes(), &Headers::default()).unwrap_err();
        assert_eq!((err.field(), err.rule()), (field, Rule::Json), "{err}");
    }
    let body = format!(
        r#"{{"request_id":"r","tenant_id":"t",
             "task":{{"type":"a","payload":{{"a":{open}{close}}}}}}}"#
    );
    reject_with(
        body.as_bytes(),
        &Headers::default(),
        "task.payload",
        "depth",
    );
    let body = format!(r#"{{"x_unknown":{open}{close},{REQUIRED}}}"#);
    assert!(
        decode_decide(body.as_bytes(), &Headers::default()).is_ok(),
        "skipped, not refused"
    );
}

/// A huge value is quoted back only as a short excerpt.
#[test]
fn messages_never_echo_huge_input() {
    let huge = "x y".repeat(400_000);
    for field in ["tenant_id", "trace_id", "assignment_subject", "policy_id"] {
        let body = bytes(&with(minimal(), field, json!(huge)));
        let err = decode_decide(&body, &Headers::default()).unwrap_err();
        assert!(
            err.to_string().len() < 200,
            "{field}: {} bytes",
            err.to_string().len()
        );
    }
    let key = "k\n".repeat(100_000);
    let body = bytes(&with(minimal(), "metadata", json!({key: {"nested": true}})));
    let err = decode_decide(&body, &Headers::default()).unwrap_err();
    assert!(
        err.to_string().len() < 200 && !err.to_string().contains('\n'),
        "{err}"
    );
}

#[test]
fn context_ids_are_recovered_for_error_responses() {
    let body = bytes(&with(
        with(minimal(), "tenant_id", json!("bad tenant")),
        "trace_id",
        json!(TRACE),
    ));
    assert!(decode_decide(&body, &Headers::default()).is_err());
    let ids = context_ids(&body, &Headers::default());
    assert_eq!(ids.request_id.as_deref(), Some("r-1"));
    assert_eq!(ids.trace_id.as_deref(), Some(TRACE));
    let headers = Headers {
        trace_id: Some(UUID4),
        ..Headers::default()
    };
    assert_eq!(
        context_ids(b"{not json", &headers).trace_id.as_deref(),
        Some(UUID4)
    );
    assert_eq!(
        context_ids(b"{not json", &Headers::default()),
        ContextIds::default()
    );
    let long_id = bytes(&with(minimal(), "request_id", json!("r".repeat(500))));
    assert_eq!(context_ids(&long_id, &Headers::default()).request_id, None);
}
