use proptest::prelude::*;
use serde_json::json;

use super::*;

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.into()).unwrap()
}

fn ok(metadata: Vec<(&str, serde_json::Value)>) -> StageOutcome {
    StageOutcome::Ok {
        metadata: metadata.into_iter().map(|(k, v)| (k.into(), v)).collect(),
    }
}

fn failed(message: &str) -> StageOutcome {
    StageOutcome::Failed {
        message: message.into(),
    }
}

fn outcome(kind: StageKind, body: &str) -> StageOutcome {
    decode_reply(kind, body.as_bytes()).outcome
}

/// The body carries the payload bytes as sent, request metadata with merged entries over
/// it, and the config.
#[test]
fn call_body() {
    let payload = raw(r#"{"text" : "Hi",  "n":1.50}"#);
    let config = raw(r#"{"lowercase":true}"#);
    let metadata = Metadata {
        entries: vec![
            ("user_id".into(), Scalar::Str("u-42".into())),
            ("lang".into(), Scalar::Str("de".into())),
            ("n".into(), Scalar::Num(3.0)),
        ],
    };
    let merged = [
        ("lang".into(), Scalar::Str("en".into())),
        ("ok".into(), Scalar::Bool(true)),
    ];
    let call = Call {
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        tenant_id: "acme",
        payload: Some(&payload),
        metadata: &metadata,
        merged: &merged,
        config: &config,
    };
    let mut out = b"prefix:".to_vec();
    encode_call(&mut out, &call);
    let want = concat!(
        r#"prefix:{"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","tenant_id":"acme","#,
        r#""payload":{"text" : "Hi",  "n":1.50},"#,
        r#""metadata":{"user_id":"u-42","n":3,"lang":"en","ok":true},"#,
        r#""config":{"lowercase":true}}"#,
    );
    assert_eq!(std::str::from_utf8(&out).unwrap(), want);
}

/// Without a trace id or payload: no `trace_id` member, `payload: null`.
#[test]
fn call_body_minimal() {
    let config = raw("{}");
    let metadata = Metadata::default();
    let call = Call {
        trace_id: None,
        tenant_id: "t",
        payload: None,
        metadata: &metadata,
        merged: &[],
        config: &config,
    };
    let mut out = Vec::new();
    encode_call(&mut out, &call);
    assert_eq!(
        out,
        br#"{"tenant_id":"t","payload":null,"metadata":{},"config":{}}"#
    );
}

/// A pre-processor's payload replaces the task's; its metadata merges.
#[test]
fn pre_reply() {
    let reply = decode_reply(
        StageKind::Pre,
        br#"{"payload":{"text":"hi"},"metadata":{"lang":"en","score":0.5},"extra":[1]}"#,
    );
    assert_eq!(reply.payload.as_ref().unwrap().get(), r#"{"text":"hi"}"#);
    assert_eq!(
        reply.outcome,
        ok(vec![("lang", json!("en")), ("score", json!(0.5))])
    );
    let bare = decode_reply(StageKind::Pre, b"{}");
    assert_eq!((bare.outcome, bare.payload.is_none()), (ok(vec![]), true));
    let nulls = decode_reply(StageKind::Pre, br#"{"payload":null,"metadata":null}"#);
    assert_eq!((nulls.outcome, nulls.payload.is_none()), (ok(vec![]), true));
    assert_eq!(
        outcome(StageKind::Pre, r#"{"payload":"text"}"#),
        failed("reply's payload is not a JSON object")
    );
}

/// A post-processor's metadata merges; a payload is ignored.
#[test]
fn post_reply() {
    let reply = decode_reply(
        StageKind::Post,
        br#"{"status":"ok","payload":{"x":1},"metadata":{"masked":true,"masked":false}}"#,
    );
    assert!(reply.payload.is_none());
    assert_eq!(reply.outcome, ok(vec![("masked", json!(false))]));
}

/// Both validator forms, both verdicts, and their disagreement.
#[test]
fn validator_reply_forms() {
    let v = StageKind::Validator;
    assert_eq!(outcome(v, r#"{"valid":true}"#), ok(vec![]));
    assert_eq!(outcome(v, r#"{"status":"ok"}"#), ok(vec![]));
    assert_eq!(outcome(v, r#"{"valid":true,"status":"ok"}"#), ok(vec![]));
    let rejected = |m: &str| StageOutcome::Rejected { message: m.into() };
    assert_eq!(
        outcome(
            v,
            r#"{"valid":false,"reason":"contains an e-mail address"}"#
        ),
        rejected("contains an e-mail address")
    );
    assert_eq!(
        outcome(v, r#"{"status":"reject","message":"PII"}"#),
        rejected("PII")
    );
    assert_eq!(outcome(v, r#"{"valid":false}"#), rejected("rejected"));
    assert_eq!(
        outcome(v, r#"{"valid":true,"status":"reject"}"#),
        failed("reply's valid and status disagree")
    );
    assert_eq!(
        outcome(v, r#"{"metadata":{}}"#),
        failed("reply has neither valid nor status")
    );
    assert_eq!(
        outcome(v, r#"{"status":"maybe"}"#),
        failed(r#"unknown reply status "maybe""#)
    );
    assert_eq!(
        outcome(v, r#"{"valid":"yes"}"#),
        failed(concat!(
            "reply is not readable: invalid type: string \"yes\", ",
            "expected a boolean at line 1 column 14"
        ))
    );
}

/// Error-shaped replies are `Failed` for every kind, with the extension's message.
#[test]
fn error_replies() {
    for kind in [StageKind::Pre, StageKind::Validator, StageKind::Post] {
        assert_eq!(
            outcome(kind, r#"{"error":"model down"}"#),
            failed("model down")
        );
        assert_eq!(
            outcome(
                kind,
                r#"{"ok":false,"error":{"code":"E1","message":"bad input"}}"#
            ),
            failed("bad input")
        );
        assert_eq!(
            outcome(kind, r#"{"error":{"code":7}}"#),
            failed(r#"{"code":7}"#)
        );
        assert_eq!(
            outcome(kind, r#"{"status":"error","message":"boom"}"#),
            failed("boom")
        );
        assert_eq!(
            outcome(kind, r#"{"status":"failed"}"#),
            failed("reply status failed")
        );
        assert_eq!(outcome(kind, "[1,2]"), failed("reply is not a JSON object"));
        assert_eq!(outcome(kind, ""), failed("reply is not a JSON object"));
        let broken = outcome(kind, "{\"valid\":");
        assert!(matches!(broken, StageOutcome::Failed { .. }), "{broken:?}");
    }
    // `"error": null` is no error.
    assert_eq!(outcome(StageKind::Post, r#"{"error":null}"#), ok(vec![]));
}

/// Size limits: the body, the metadata entries and key length, and long messages.
#[test]
fn reply_limits() {
    let big = vec![b' '; REPLY_BYTES_MAX + 1];
    assert_eq!(
        decode_reply(StageKind::Post, &big).outcome,
        failed("reply of 262145 bytes; at most 262144")
    );
    let many: serde_json::Map<String, serde_json::Value> = (0..=REPLY_METADATA_ENTRIES_MAX)
        .map(|i| (format!("k{i}"), json!(i)))
        .collect();
    let body = json!({ "metadata": many }).to_string();
    let StageOutcome::Failed { message } = outcome(StageKind::Post, &body) else {
        panic!("accepted");
    };
    assert!(
        message.contains("more than 64 metadata entries"),
        "{message}"
    );
    let long_key = json!({ "metadata": { "k".repeat(129): 1 } }).to_string();
    let StageOutcome::Failed { message } = outcome(StageKind::Pre, &long_key) else {
        panic!("accepted");
    };
    assert!(message.contains("longer than 128 bytes"), "{message}");
    let long = json!({ "error": "é".repeat(REPLY_MESSAGE_BYTES_MAX) }).to_string();
    let StageOutcome::Failed { message } = outcome(StageKind::Pre, &long) else {
        panic!("accepted");
    };
    assert_eq!(message.len(), REPLY_MESSAGE_BYTES_MAX);
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        prop::sample::select(vec!["ok", "reject", "error", "failed", "", "x"])
            .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        let keys = prop::sample::select(vec![
            "payload", "metadata", "valid", "status", "reason", "message", "error", "k",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(keys.prop_map(String::from), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Arbitrary bytes never make the reader panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for kind in [StageKind::Pre, StageKind::Validator, StageKind::Post] {
            let _ = decode_reply(kind, &bytes);
        }
    }

    /// Arbitrary JSON built from the reply's member names never panics, and a pre reply's
    /// payload, when kept, is always an object.
    #[test]
    fn arbitrary_json_never_panics(value in arb_json()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        for kind in [StageKind::Pre, StageKind::Validator, StageKind::Post] {
            let reply = decode_reply(kind, &bytes);
            if let Some(p) = reply.payload {
                prop_assert!(p.get().starts_with('{'), "payload {}", p.get());
            }
        }
    }
}
