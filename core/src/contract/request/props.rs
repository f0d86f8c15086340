//! Property tests: whatever bytes arrive, `decode_decide` returns (never panics), and a
//! refusal is always an `invalid_request` whose message names a field or says the JSON
//! is malformed.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{json, Map, Value};

use super::*;
use crate::contract::ErrorCode;

/// Keys the decoder knows, mixed into generated objects so that checks beyond the first
/// one are reached.
const KNOWN_KEYS: [&str; 26] = [
    "version",
    "request_id",
    "tenant_id",
    "trace_id",
    "task",
    "policy_id",
    "constraints",
    "metadata",
    "attempt",
    "push_assignment",
    "assignment_subject",
    "options",
    "deadline",
    "run_id",
    "flow_id",
    "step_id",
    "idempotency_key",
    "explain",
    "type",
    "payload",
    "payload_ref",
    "exclude",
    "only",
    "order",
    "count",
    "deadline_ms",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(&KNOWN_KEYS[..]).prop_map(str::to_owned),
        1 => ".{0,12}",
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (0u64..2_000).prop_map(Value::from),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        ".{0,40}".prop_map(Value::String),
        Just(json!("4bf92f3577b34da6a3ce929d0e0e4736")),
        Just(json!("01ARZ3NDEKTSV4RRFFQ69G5FAV")),
        Just(json!("caf.exec.assign.v1")),
    ]
}

/// Arbitrary JSON of bounded depth and size, biased towards request-shaped objects.
fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 96, 10, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(key(), inner, 0..10).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn valid_request() -> Value {
    json!({
        "version": "1", "request_id": "r-1", "tenant_id": "acme",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "task": {"type": "chat", "payload": {"q": "hi"}},
        "constraints": {"max_cost": 0.5, "exclude": ["a"]},
        "metadata": {"user_id": "u-1", "n": 2},
        "attempt": {"previous_provider": "openai", "status": "timeout", "count": 1},
        "options": {"deadline_ms": 1_700_000_000_000u64},
        "run_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "flow_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "step_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "idempotency_key": "k", "explain": true
    })
}

/// The outcome every input must have: `Ok`, or an invalid_request that explains itself.
fn assert_well_behaved(body: &[u8]) -> Result<(), TestCaseError> {
    if let Err(err) = decode_decide(body, &Headers::default()) {
        let message = err.to_string();
        prop_assert_eq!(err.code(), ErrorCode::InvalidRequest);
        prop_assert!(!err.field().is_empty());
        prop_assert!(
            message.starts_with(&format!("{}: ", err.field())),
            "{}",
            message
        );
        let explained = err.rule() == Rule::Json && message.contains("malformed JSON")
            || err.rule() != Rule::Json && message.len() > err.field().len() + 2;
        prop_assert!(explained, "{}", message);
        prop_assert!(message.len() < 400, "message too long: {}", message);
    }
    Ok(())
}

proptest! {
    // Failing cases are saved beside this file (`props.proptest-regressions`) and replayed.
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        assert_well_behaved(&serde_json::to_vec(&value).unwrap())?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in vec(any::<u8>(), 0..256)) {
        assert_well_behaved(&body)?;
    }

    /// A valid request with one field replaced by arbitrary JSON.
    #[test]
    fn field_replacement_never_panics(key in key(), value in json_value()) {
        let mut request = valid_request();
        request[key.as_str()] = value;
        assert_well_behaved(&serde_json::to_vec(&request).unwrap())?;
    }

    /// A valid request's bytes with a few bytes overwritten, inserted or cut.
    #[test]
    fn byte_mutations_never_panic(
        edits in vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut body = serde_json::to_vec(&valid_request()).unwrap();
        for (at, byte, op) in edits {
            let i = at.index(body.len());
            match op {
                0 => body[i] = byte,
                1 => body.insert(i, byte),
                _ => { body.remove(i); }
            }
        }
        assert_well_behaved(&body)?;
        body.truncate(cut.index(body.len() + 1));
        assert_well_behaved(&body)?;
    }
}

/// The property's base case really is valid, so mutations start from an accepted request.
#[test]
fn valid_request_is_accepted() {
    let body = serde_json::to_vec(&valid_request()).unwrap();
    decode_decide(&body, &Headers::default()).unwrap();
    let _: Map<String, Value> = serde_json::from_slice(&body).unwrap();
}
