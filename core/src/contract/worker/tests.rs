//! Worker messages: the assignment built from a decision, and the validation of what
//! workers send back.

use serde_json::{json, Value};

use super::*;
use crate::contract::request::decode_decide;
use crate::contract::types::{Metadata, Reason};
use crate::contract::ErrorCode;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const ASSIGNMENT: &str = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b";

fn decision<'a>(metadata: &'a Metadata<'a>, extra: &'a [(Box<str>, Value)]) -> DecisionBody<'a> {
    DecisionBody {
        provider_id: "anthropic",
        shadow_provider_id: None,
        reason: Reason::Fallback,
        expected_latency_ms: Some(800.0),
        expected_cost: None,
        policy_id: "gold",
        policy_version: "2.1",
        tenant_id: "acme",
        metadata,
        extra_metadata: extra,
        executed_extensions: &[],
        explanation: None,
        request_id: "r-1",
        trace_id: Some(TRACE),
    }
}

fn request_body() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "request_id": "r-1", "tenant_id": "acme", "trace_id": TRACE,
        "task": {"type": "chat", "payload": {"prompt": "hi"}},
        "metadata": {"user_id": "u-42", "tier": 3, "score": 0.5},
        "options": {"priority": 7, "retry": {"max_attempts": 2, "backoff_ms": 200}},
        "run_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "flow_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "step_id": "01ARZ3NDEKTSV4RRFFQ69G5FAW", "push_assignment": true
    }))
    .unwrap()
}

#[test]
fn assignment_ids_are_uuid_v4() {
    let id = AssignmentId::from_random_bytes([0xff; 16]);
    assert_eq!(id.as_str(), "ffffffff-ffff-4fff-bfff-ffffffffffff");
    let id = AssignmentId::from_random_bytes([0; 16]);
    assert_eq!(id.as_str(), "00000000-0000-4000-8000-000000000000");
    let id = AssignmentId::from_random_bytes(*b"0123456789abcdef");
    assert!(check::is_uuid_v4(id.as_str()), "{id}");
    assert_eq!(
        AssignmentId::parse(ASSIGNMENT).unwrap().as_str(),
        ASSIGNMENT
    );
    let err = AssignmentId::parse("6f1c2a3b-4d5e-1f60-8a7b-9c0d1e2f3a4b").unwrap_err();
    assert_eq!((err.field(), err.rule()), ("assignment_id", Rule::Uuid4));
}

/// The assignment carries the request's task, options, ids and metadata, and the
/// decision, in the shape of SPEC §6.
#[test]
fn assignment_is_built_from_request_and_decision() {
    let body = request_body();
    let request = decode_decide(&body, &Headers::default()).unwrap();
    let extra = [("moderation".into(), json!("passed"))];
    let decision = decision(&request.metadata, &extra);
    let id = AssignmentId::parse(ASSIGNMENT).unwrap();
    let assignment = ExecAssignment::new(id, &request, &decision);
    let mut out = Vec::new();
    assignment.encode(&mut out);
    let value: Value = serde_json::from_slice(&out).unwrap();
    let expected = json!({
        "version": "1", "assignment_id": ASSIGNMENT, "request_id": "r-1", "tenant_id": "acme",
        "executor": {"provider_id": "anthropic", "channel": "nats"},
        "job": {"type": "chat", "payload": {"prompt": "hi"}},
        "options": {"priority": 7, "retry": {"max_attempts": 2, "backoff_ms": 200}},
        "correlation": {"trace_id": TRACE, "run_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
                        "flow_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
                        "step_id": "01ARZ3NDEKTSV4RRFFQ69G5FAW"},
        "decision": {"provider_id": "anthropic", "reason": "fallback", "priority": 25,
                     "expected_latency_ms": 800.0, "expected_cost": null,
                     "policy_id": "gold", "policy_version": "2.1",
                     "metadata": {"moderation": "passed"}},
        "metadata": {"user_id": "u-42", "tier": 3, "score": 0.5},
    });
    assert_eq!(value, expected);
    let back: ExecAssignment = serde_json::from_slice(&out).unwrap();
    assert_eq!(back.assignment_id.as_str(), ASSIGNMENT);
    assert_eq!(back.job.payload.unwrap().get(), r#"{"prompt":"hi"}"#);
}

/// A shadow copy is the same assignment under its own id, for the shadow provider,
/// marked `"shadow": true`; the primary's assignment has no `shadow` member at all.
#[test]
fn shadow_copy_is_marked_and_keeps_the_job() {
    let body = request_body();
    let request = decode_decide(&body, &Headers::default()).unwrap();
    let decision = decision(&request.metadata, &[]);
    let primary = ExecAssignment::new(
        AssignmentId::parse(ASSIGNMENT).unwrap(),
        &request,
        &decision,
    );
    let copy_id = AssignmentId::from_random_bytes([7; 16]);
    let copy = primary.shadow_copy(copy_id, "new_model");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    primary.encode(&mut a);
    copy.encode(&mut b);
    let (a, b): (Value, Value) = (
        serde_json::from_slice(&a).unwrap(),
        serde_json::from_slice(&b).unwrap(),
    );
    assert!(a.get("shadow").is_none());
    assert_eq!(b["shadow"], json!(true));
    assert_eq!(b["executor"]["provider_id"], "new_model");
    assert_ne!(b["assignment_id"], a["assignment_id"]);
    assert_eq!((&b["job"], &b["options"]), (&a["job"], &a["options"]));
    assert_eq!(b["decision"], a["decision"]);
    let back: ExecAssignment = serde_json::from_slice(&serde_json::to_vec(&b).unwrap()).unwrap();
    assert!(back.shadow);
}

#[test]
fn assignment_without_options_or_ids_is_minimal() {
    let body =
        br#"{"request_id":"r","tenant_id":"acme","task":{"type":"t","payload_ref":"s3://x"}}"#;
    let request = decode_decide(body, &Headers::default()).unwrap();
    let decision = decision(&request.metadata, &[]);
    let assignment = ExecAssignment::new(
        AssignmentId::from_random_bytes([7; 16]),
        &request,
        &decision,
    );
    let mut out = Vec::new();
    assignment.encode(&mut out);
    let value: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(value["options"], json!({}));
    assert_eq!(value["correlation"], json!({}));
    assert_eq!(value["job"], json!({"type": "t", "payload_ref": "s3://x"}));
    assert_eq!(value["metadata"], json!({}));
    assert!(!value["decision"]
        .as_object()
        .unwrap()
        .contains_key("metadata"));
    let headers: Vec<_> = assignment.headers().collect();
    assert_eq!(headers, [("tenant_id", "acme"), ("version", "1")]);
}

#[test]
fn assignment_headers_carry_trace_context() {
    let body = request_body();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = Headers {
        traceparent: Some(traceparent),
        ..Headers::default()
    };
    let request = decode_decide(&body, &headers).unwrap();
    let decision = decision(&request.metadata, &[]);
    let assignment = ExecAssignment::new(
        AssignmentId::from_random_bytes([1; 16]),
        &request,
        &decision,
    );
    let headers: Vec<_> = assignment.headers().collect();
    let expected = [
        ("tenant_id", "acme"),
        ("version", "1"),
        ("trace_id", TRACE),
        ("traceparent", traceparent),
    ];
    assert_eq!(headers, expected);
    let mut out = Vec::new();
    assignment.encode(&mut out);
    assert!(
        !String::from_utf8(out).unwrap().contains("traceparent"),
        "a header, not a field"
    );
}

fn result() -> Value {
    json!({
        "assignment_id": ASSIGNMENT, "request_id": "r-1", "status": "success",
        "provider_id": "anthropic", "latency_ms": 812.5, "cost": 0.0031,
        "tenant_id": "acme", "trace_id": TRACE, "timestamp": 1_700_000_000_123u64,
        "job": {"type": "chat"}, "worker_id": "w-9"
    })
}

fn decode_result(value: &Value) -> Result<ExecResult, ContractError> {
    ExecResult::decode(&serde_json::to_vec(value).unwrap(), &Headers::default())
}

fn reject_result(value: Value, field: &str, rule: &str) -> String {
    let err = decode_result(&value).expect_err("must be rejected");
    assert_eq!(err.code(), ErrorCode::InvalidRequest);
    assert_eq!((err.field(), err.rule().code()), (field, rule), "{err}");
    err.to_string()
}

#[test]
fn result_decodes_and_ignores_unknown_fields() {
    let result = decode_result(&result()).unwrap();
    assert_eq!(result.assignment_id.as_deref(), Some(ASSIGNMENT));
    assert_eq!(result.request_id.as_deref(), Some("r-1"));
    assert_eq!(result.status, ExecStatus::Success);
    assert_eq!(result.provider_id, "anthropic");
    assert_eq!(
        (result.latency_ms, result.cost),
        (Some(812.5), Some(0.0031))
    );
    assert_eq!(result.tenant_id, "acme");
    assert_eq!(result.trace_id.as_deref(), Some(TRACE));
    assert_eq!(result.timestamp_unix_ms, Some(1_700_000_000_123));
    assert_eq!(result.job_type.as_deref(), Some("chat"));
    assert_eq!((&result.error_code, &result.error_message), (&None, &None));
    assert_eq!(result.dedup_key(), ASSIGNMENT);
}

#[test]
fn result_needs_one_id_a_status_a_provider_and_a_tenant() {
    let mut only_request = result();
    only_request
        .as_object_mut()
        .unwrap()
        .remove("assignment_id");
    assert_eq!(decode_result(&only_request).unwrap().dedup_key(), "r-1");
    let mut no_ids = only_request.clone();
    no_ids.as_object_mut().unwrap().remove("request_id");
    let message = reject_result(no_ids, "assignment_id", "required");
    assert!(message.contains("assignment_id or request_id"), "{message}");
    let mut no_status = result();
    no_status.as_object_mut().unwrap().remove("status");
    reject_result(no_status, "status", "required");
    let message = reject_result(json!({"status": "done"}).merged(result()), "status", "enum");
    assert!(
        message.contains("success, error, timeout, cancelled, rate_limited"),
        "{message}"
    );
    for status in ExecStatus::ALL {
        let value = json!({"status": status.as_str()}).merged(result());
        assert_eq!(decode_result(&value).unwrap().status, status);
    }
    reject_result(
        json!({"provider_id": ""}).merged(result()),
        "provider_id",
        "length",
    );
    reject_result(
        json!({"tenant_id": "ac me"}).merged(result()),
        "tenant_id",
        "pattern",
    );
    reject_result(
        json!({"tenant_id": null}).merged(result()),
        "tenant_id",
        "required",
    );
    reject_result(
        json!({"assignment_id": ""}).merged(result()),
        "assignment_id",
        "length",
    );
}

#[test]
fn result_figures_are_non_negative_and_optional() {
    reject_result(
        json!({"latency_ms": -1}).merged(result()),
        "latency_ms",
        "range",
    );
    reject_result(json!({"cost": -0.01}).merged(result()), "cost", "range");
    reject_result(json!({"cost": "free"}).merged(result()), "cost", "type");
    let value = json!({"latency_ms": null, "cost": null, "timestamp": null}).merged(result());
    let result = decode_result(&value).unwrap();
    assert_eq!(
        (result.latency_ms, result.cost, result.timestamp_unix_ms),
        (None, None, None)
    );
    reject_result(
        json!({"timestamp": 1.5}).merged(self::result()),
        "timestamp",
        "range",
    );
    reject_result(
        json!({"timestamp": "now"}).merged(self::result()),
        "timestamp",
        "type",
    );
    reject_result(
        json!({"trace_id": "x"}).merged(self::result()),
        "trace_id",
        "format",
    );
    reject_result(json!({"job": [1]}).merged(self::result()), "job", "type");
}

/// Headers win over the body, as for DecideRequest.
/// `usage` is optional; its members are whole token counts (a missing one is 0), bounded
/// by `USAGE_TOKENS_MAX`. A `rate_limited` status, or an error with code `429`, is a
/// refusal for the provider's rate limit; another error is not.
#[test]
fn result_usage_and_rate_limited() {
    assert_eq!(decode_result(&result()).unwrap().usage, None);
    let used = json!({"usage": {"input_tokens": 1200, "output_tokens": 300}}).merged(result());
    let usage = decode_result(&used).unwrap().usage.unwrap();
    assert_eq!(
        (usage.input_tokens, usage.output_tokens, usage.total()),
        (1200, 300, 1500)
    );
    let half = json!({"usage": {"output_tokens": 7, "cached": true}}).merged(result());
    assert_eq!(decode_result(&half).unwrap().usage.unwrap().total(), 7);
    let null = json!({"usage": null}).merged(result());
    assert_eq!(decode_result(&null).unwrap().usage, None);
    let too_many = json!({"usage": {"input_tokens": USAGE_TOKENS_MAX + 1}}).merged(result());
    reject_result(too_many, "usage.input_tokens", "range");
    let fraction = json!({"usage": {"output_tokens": 1.5}}).merged(result());
    reject_result(fraction, "usage.output_tokens", "range");
    reject_result(json!({"usage": 12}).merged(result()), "usage", "type");

    let status = |s: &str, code: Option<&str>| {
        let mut v = json!({"status": s}).merged(result());
        if let Some(code) = code {
            v["error_code"] = json!(code);
        }
        decode_result(&v).unwrap().rate_limited()
    };
    assert!(status("rate_limited", None));
    assert!(status("error", Some("429")));
    assert!(status("error", Some("rate_limited")));
    assert!(!status("error", Some("500")) && !status("error", None));
    assert!(!status("success", Some("429")), "a success is a success");
}

/// `shadow` is an optional boolean; absent or null is a primary's result.
#[test]
fn result_shadow_flag() {
    assert!(!decode_result(&result()).unwrap().shadow);
    let mut v = result();
    v["shadow"] = json!(true);
    assert!(decode_result(&v).unwrap().shadow);
    v["shadow"] = Value::Null;
    assert!(!decode_result(&v).unwrap().shadow);
    v["shadow"] = json!("yes");
    reject_result(v, "shadow", "type");
}

#[test]
fn result_headers_win() {
    let body = serde_json::to_vec(&json!({"tenant_id": "bad tenant"}).merged(result())).unwrap();
    let headers = Headers {
        tenant_id: Some("acme"),
        trace_id: Some(TRACE),
        ..Headers::default()
    };
    assert_eq!(
        ExecResult::decode(&body, &headers).unwrap().tenant_id,
        "acme"
    );
    let headers = Headers {
        version: Some("2"),
        ..Headers::default()
    };
    let err = ExecResult::decode(&body, &headers).unwrap_err();
    assert_eq!(err.field(), "headers.version");
}

/// A verbose worker still feeds the breaker: a long error message is cut, not refused.
#[test]
fn long_error_messages_are_cut_at_a_char_boundary() {
    let long = "é".repeat(WORKER_MESSAGE_BYTES_MAX);
    let value = json!({"status": "error", "error_code": "E_UPSTREAM", "error_message": long});
    let result = decode_result(&value.merged(result())).unwrap();
    let message = result.error_message.unwrap();
    assert_eq!(message.len(), WORKER_MESSAGE_BYTES_MAX);
    assert!(message.chars().all(|c| c == 'é'));
    assert_eq!(result.error_code.as_deref(), Some("E_UPSTREAM"));
    let long_code = json!({"error_code": "E".repeat(RESULT_ID_BYTES_MAX + 1)});
    reject_result(long_code.merged(self::result()), "error_code", "length");
}

#[test]
fn malformed_results_are_refused() {
    for body in [&b""[..], b"{", b"[]", b"{\"status\": \"success\"} x"] {
        let err = ExecResult::decode(body, &Headers::default()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidRequest);
    }
    let body = br#"{"status":"success","status":"error"}"#;
    let err = ExecResult::decode(body, &Headers::default()).unwrap_err();
    assert_eq!((err.field(), err.rule()), ("status", Rule::Duplicate));
}

#[test]
fn acks_decode_leniently() {
    let body = br#"{"assignment_id":"a-1","status":"rejected","message":"no capacity",
                    "worker_id":"w-2","ts":1,"extra":{"nested":[1]}}"#;
    let ack = ExecAssignmentAck::decode(body, &Headers::default()).unwrap();
    assert_eq!(ack.assignment_id, "a-1");
    assert_eq!(ack.status, AckStatus::Rejected);
    assert_eq!(ack.message.as_deref(), Some("no capacity"));
    assert_eq!(
        (ack.tenant_id, ack.request_id, ack.trace_id),
        (None, None, None)
    );
    let headers = Headers {
        tenant_id: Some("acme"),
        ..Headers::default()
    };
    let ack = ExecAssignmentAck::decode(br#"{"assignment_id":"a","status":"accepted"}"#, &headers);
    assert_eq!(ack.unwrap().tenant_id.as_deref(), Some("acme"));
    let ack = ExecAssignmentAck::decode(
        br#"{"assignment_id":"a","status":"error"}"#,
        &Headers::default(),
    );
    assert_eq!(ack.unwrap().status, AckStatus::Error);
}

#[test]
fn acks_need_an_id_and_a_known_status() {
    let err =
        ExecAssignmentAck::decode(br#"{"status":"accepted"}"#, &Headers::default()).unwrap_err();
    assert_eq!((err.field(), err.rule()), ("assignment_id", Rule::Required));
    let err = ExecAssignmentAck::decode(
        br#"{"assignment_id":"a","status":"ok"}"#,
        &Headers::default(),
    );
    let err = err.unwrap_err();
    assert_eq!(err.field(), "status");
    assert!(
        err.to_string().contains("accepted, rejected, error"),
        "{err}"
    );
    let body = br#"{"assignment_id":"a","status":"accepted","tenant_id":"a b"}"#;
    let err = ExecAssignmentAck::decode(body, &Headers::default()).unwrap_err();
    assert_eq!(err.field(), "tenant_id");
}

#[test]
fn usage_event_follows_the_result() {
    let result = decode_result(&result()).unwrap();
    let event = UsageEvent::from_result(&result, 1_800_000_000_000);
    assert_eq!(
        event.timestamp, 1_700_000_000_123,
        "the worker's time when given"
    );
    let mut out = Vec::new();
    event.encode(&mut out);
    let value: Value = serde_json::from_slice(&out).unwrap();
    let expected = json!({
        "tenant_id": "acme", "provider_id": "anthropic", "assignment_id": ASSIGNMENT,
        "request_id": "r-1", "status": "success", "latency_ms": 812.5, "cost": 0.0031,
        "timestamp": 1_700_000_000_123u64, "trace_id": TRACE, "event_type": "chat"
    });
    assert_eq!(value, expected);
    assert_eq!(serde_json::from_slice::<UsageEvent>(&out).unwrap(), event);
    let bare = json!({"timestamp": null, "latency_ms": null, "job": null}).merged(self::result());
    let event = UsageEvent::from_result(&decode_result(&bare).unwrap(), 42);
    assert_eq!(
        (event.timestamp, event.latency_ms, &event.event_type),
        (42, None, &None)
    );
    let mut out = Vec::new();
    event.encode(&mut out);
    let value: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(value["latency_ms"], Value::Null, "unknown, not 0");
    assert!(value.get("usage").is_none(), "no usage, no member: {value}");
    let used = json!({"usage": {"input_tokens": 5, "output_tokens": 7}}).merged(self::result());
    let event = UsageEvent::from_result(&decode_result(&used).unwrap(), 42);
    let mut out = Vec::new();
    event.encode(&mut out);
    let value: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        value["usage"],
        json!({"input_tokens": 5, "output_tokens": 7})
    );
    assert_eq!(serde_json::from_slice::<UsageEvent>(&out).unwrap(), event);
}

/// `json!({...}).merged(base)`: `base` with the given keys replaced.
trait Merged {
    fn merged(self, base: Value) -> Value;
}

impl Merged for Value {
    fn merged(self, mut base: Value) -> Value {
        for (key, value) in self.as_object().unwrap() {
            base[key] = value.clone();
        }
        base
    }
}

/// What a cluster node forwards decodes to the very result it accepted: every field, the
/// optional ones absent or present.
#[test]
fn an_encoded_result_decodes_to_itself() {
    let full = json!({
        "version": "1",
        "assignment_id": "a-1",
        "request_id": "r-1",
        "status": "rate_limited",
        "provider_id": "openai",
        "latency_ms": 412.5,
        "cost": 0.0021,
        "tenant_id": "acme",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "error_code": "429",
        "error_message": "slow down",
        "timestamp": 1_700_000_000_123u64,
        "job": {"type": "chat"},
        "usage": {"input_tokens": 12, "output_tokens": 34},
        "shadow": true
    });
    let minimal =
        json!({"request_id": "r-2", "status": "success", "provider_id": "p", "tenant_id": "t"});
    for value in [full, minimal] {
        let result =
            ExecResult::decode(&serde_json::to_vec(&value).unwrap(), &Headers::default()).unwrap();
        let again = ExecResult::decode(&result.encode(), &Headers::default()).unwrap();
        assert_eq!(again, result, "{value}");
    }
}
