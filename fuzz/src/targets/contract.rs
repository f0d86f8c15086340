//! The DecideRequest and ExecResult decoders. Properties: a request that decodes, printed
//! back as JSON, decodes to the same request (the decoder keeps nothing it cannot give
//! back, and reads nothing two ways); one that does not decode gets an error response that
//! is itself valid JSON, and the error path's second, lenient read does not fail.

use serde_json::{json, Value};
use shardline::contract::{
    context_ids, decode_decide, encode_contract_error, ContractError, DecideRequest, ExecResult,
    Headers, Scalar,
};

use super::{ensure, variant, Checked, Target};
use crate::corpus::Corpus;
use crate::json::mutate_document;
use crate::rng::Rng;

const DECIDE_KEYS: &[&str] = &[
    "version",
    "request_id",
    "tenant_id",
    "trace_id",
    "task",
    "type",
    "payload_ref",
    "payload",
    "policy_id",
    "constraints",
    "max_latency_ms",
    "max_cost",
    "exclude",
    "require",
    "only",
    "order",
    "metadata",
    "attempt",
    "previous_provider",
    "status",
    "count",
    "push_assignment",
    "assignment_subject",
    "options",
    "deadline_ms",
    "deadline",
    "run_id",
    "flow_id",
    "step_id",
    "idempotency_key",
    "explain",
];

const RESULT_KEYS: &[&str] = &[
    "version",
    "assignment_id",
    "request_id",
    "status",
    "provider_id",
    "latency_ms",
    "cost",
    "tenant_id",
    "trace_id",
    "error_code",
    "error_message",
    "timestamp",
    "job",
    "type",
    "usage",
    "input_tokens",
    "output_tokens",
];

const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"null",
    b"true",
    b"1e999",
    b"-",
    b"\"request_id\":\"r\",",
    b"\"tenant_id\":\"acme\",",
    b"\xc3\x28",
];

pub const DECIDE: Target = Target {
    name: "decide",
    what: "DecideRequest decoder (core/src/contract/request.rs)",
    generate: generate_decide,
    check: check_decide,
    dictionary: JSON_TOKENS,
};

pub const RESULT: Target = Target {
    name: "result",
    what: "ExecResult decoder (core/src/contract/worker.rs)",
    generate: generate_result,
    check: check_result,
    dictionary: JSON_TOKENS,
};

fn generate_decide(rng: &mut Rng, corpus: &Corpus) -> Vec<u8> {
    let seed = rng.pick(&corpus.requests).clone();
    if rng.one_in(4) {
        return seed;
    }
    mutate_document(rng, &seed, DECIDE_KEYS)
}

/// Header values picked from the input's bytes: absent, valid, or breaking their rule.
fn headers(rng: &mut Rng) -> Headers<'static> {
    Headers {
        tenant_id: *rng.pick(&[None, None, Some("acme"), Some(""), Some("bad tenant!")]),
        trace_id: *rng.pick(&[
            None,
            None,
            Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            Some("x"),
        ]),
        traceparent: *rng.pick(&[
            None,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("00-zz"),
        ]),
        version: *rng.pick(&[None, None, Some("1"), Some("2")]),
    }
}

fn check_decide(input: &[u8]) -> Checked {
    let mut rng = Rng::from_bytes(input);
    let headers = headers(&mut rng);
    match decode_decide(input, &headers) {
        Ok(request) => {
            let printed = print_decide(&request);
            let back = Headers {
                traceparent: headers.traceparent,
                ..Headers::default()
            };
            let again = decode_decide(printed.as_bytes(), &back);
            let same = again
                .as_ref()
                .is_ok_and(|r| format!("{r:?}") == format!("{request:?}"));
            ensure(same, || {
                format!("decoded {request:?}\nprinted {printed}\ndecodes to {again:?}")
            })?;
            Ok("Ok".to_owned())
        }
        Err(err) => {
            let ids = context_ids(input, &headers);
            error_response_is_json(&err, ids.request_id.as_deref(), ids.trace_id.as_deref())?;
            Ok(format!(
                "Err({}:{})",
                err.field(),
                variant(&format!("{:?}", err.rule()))
            ))
        }
    }
}

fn error_response_is_json(
    err: &ContractError,
    request_id: Option<&str>,
    trace_id: Option<&str>,
) -> Result<(), String> {
    let mut out = Vec::new();
    encode_contract_error(&mut out, err, request_id, trace_id);
    let parsed = serde_json::from_slice::<Value>(&out);
    ensure(parsed.is_ok(), || {
        format!(
            "error response is not JSON: {}",
            String::from_utf8_lossy(&out)
        )
    })
}

/// The request as a client would send it, every header value moved into the body.
fn print_decide(r: &DecideRequest<'_>) -> String {
    let s = |v: &str| serde_json::to_string(v).expect("a str prints");
    let mut fields = vec![
        r#""version":"1""#.to_owned(),
        format!(r#""request_id":{}"#, s(&r.request_id)),
        format!(r#""tenant_id":{}"#, s(&r.tenant_id)),
        format!(r#""policy_id":{}"#, s(&r.policy_id)),
        format!(r#""push_assignment":{}"#, r.push_assignment),
        format!(r#""explain":{}"#, r.explain),
    ];
    if let Some(trace_id) = &r.trace_id {
        fields.push(format!(r#""trace_id":{}"#, s(trace_id)));
    }
    let mut task = vec![format!(r#""type":{}"#, s(&r.task.kind))];
    if let Some(payload_ref) = &r.task.payload_ref {
        task.push(format!(r#""payload_ref":{}"#, s(payload_ref)));
    }
    if let Some(payload) = r.task.payload {
        task.push(format!(r#""payload":{}"#, payload.get()));
    }
    fields.push(format!(r#""task":{{{}}}"#, task.join(",")));
    let c = &r.constraints;
    let list = |v: &[std::borrow::Cow<'_, str>]| {
        let items: Vec<String> = v.iter().map(|x| s(x)).collect();
        format!("[{}]", items.join(","))
    };
    let mut constraints = vec![
        format!(r#""exclude":{}"#, list(&c.exclude)),
        format!(r#""require":{}"#, list(&c.require)),
        format!(r#""order":{}"#, list(&c.order)),
    ];
    if !c.only.is_empty() {
        constraints.push(format!(r#""only":{}"#, list(&c.only)));
    }
    if let Some(ms) = c.max_latency_ms {
        constraints.push(format!(r#""max_latency_ms":{}"#, json!(ms)));
    }
    if let Some(cost) = c.max_cost {
        constraints.push(format!(r#""max_cost":{}"#, json!(cost)));
    }
    fields.push(format!(r#""constraints":{{{}}}"#, constraints.join(",")));
    let metadata: Vec<String> = r
        .metadata
        .entries
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::Str(text) => s(text),
                Scalar::Num(n) => json!(n).to_string(),
                Scalar::Bool(b) => b.to_string(),
                Scalar::Null => "null".to_owned(),
            };
            format!("{}:{v}", s(k))
        })
        .collect();
    fields.push(format!(r#""metadata":{{{}}}"#, metadata.join(",")));
    if let Some(a) = &r.attempt {
        fields.push(format!(
            r#""attempt":{{"previous_provider":{},"status":{},"count":{}}}"#,
            s(&a.previous_provider),
            s(&a.status),
            a.count
        ));
    }
    if let Some(subject) = &r.assignment_subject {
        fields.push(format!(r#""assignment_subject":{}"#, s(subject)));
    }
    if let Some(options) = r.options {
        fields.push(format!(r#""options":{}"#, options.get()));
    }
    if let Some(deadline) = r.deadline_unix_ms {
        fields.push(format!(r#""deadline":{deadline}"#));
    }
    if let Some(c) = &r.correlation {
        fields.push(format!(
            r#""run_id":{},"flow_id":{},"step_id":{}"#,
            s(&c.run_id),
            s(&c.flow_id),
            s(&c.step_id)
        ));
    }
    if let Some(key) = &r.idempotency_key {
        fields.push(format!(r#""idempotency_key":{}"#, s(key)));
    }
    format!("{{{}}}", fields.join(","))
}

const RESULT_SEED: &[u8] =
    br#"{"version":"1","assignment_id":"f47ac10b-58cc-4372-a567-0e02b2c3d479",
"request_id":"r-1","status":"error","provider_id":"openai","latency_ms":812.5,"cost":0.0031,
"tenant_id":"acme","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","error_code":"upstream_5xx",
"error_message":"bad gateway","timestamp":1767225600000,"job":{"type":"chat"},
"usage":{"input_tokens":1200,"output_tokens":300}}"#;

fn generate_result(rng: &mut Rng, _corpus: &Corpus) -> Vec<u8> {
    if rng.one_in(4) {
        return RESULT_SEED.to_vec();
    }
    mutate_document(rng, RESULT_SEED, RESULT_KEYS)
}

fn check_result(input: &[u8]) -> Checked {
    let mut rng = Rng::from_bytes(input);
    let headers = headers(&mut rng);
    match ExecResult::decode(input, &headers) {
        Ok(result) => {
            let _ = result.dedup_key();
            let printed = json!({
                "version": "1",
                "assignment_id": result.assignment_id,
                "request_id": result.request_id,
                "status": result.status.as_str(),
                "provider_id": result.provider_id,
                "latency_ms": result.latency_ms,
                "cost": result.cost,
                "tenant_id": result.tenant_id,
                "trace_id": result.trace_id,
                "error_code": result.error_code,
                "error_message": result.error_message,
                "timestamp": result.timestamp_unix_ms,
                "job": result.job_type.as_ref().map(|t| json!({"type": t})),
                "usage": result.usage.map(|u| json!({
                    "input_tokens": u.input_tokens,
                    "output_tokens": u.output_tokens,
                })),
            })
            .to_string();
            let again = ExecResult::decode(printed.as_bytes(), &Headers::default());
            ensure(again.as_ref() == Ok(&result), || {
                format!("decoded {result:?}\nprinted {printed}\ndecodes to {again:?}")
            })?;
            Ok(format!("Ok({})", result.status.as_str()))
        }
        Err(err) => {
            error_response_is_json(&err, None, None)?;
            Ok(format!(
                "Err({}:{})",
                err.field(),
                variant(&format!("{:?}", err.rule()))
            ))
        }
    }
}
