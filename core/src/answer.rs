//! Turns an engine outcome into the wire answer, for every transport alike: a decision
//! becomes a DecideResponse, a `DecideError` an ErrorResponse with its code and details.
//! The bytes go into the caller's reused buffer; the success path does not allocate.

use crate::contract::{
    encode_decision, encode_error, BudgetDetails, DecideRequest, DecisionBody, ErrorDetails,
};
use crate::decide::{DecideError, Decision};
use crate::policy::RoutingTable;

/// Appends the answer to `req` to `out`.
pub fn encode_outcome(
    out: &mut Vec<u8>,
    table: &RoutingTable,
    req: &DecideRequest<'_>,
    outcome: &Result<Decision, DecideError>,
) {
    match outcome {
        Ok(decision) => encode_decided(out, table, req, decision),
        Err(err) => encode_decide_error(out, req, err),
    }
}

fn encode_decided(out: &mut Vec<u8>, table: &RoutingTable, req: &DecideRequest<'_>, d: &Decision) {
    with_body(table, req, d, |body| encode_decision(out, body));
}

/// Calls `f` with the wire view of decision `d` (the answer, and the assignment's
/// `decision` part).
pub fn with_body<R>(
    table: &RoutingTable,
    req: &DecideRequest<'_>,
    d: &Decision,
    f: impl FnOnce(&DecisionBody<'_>) -> R,
) -> R {
    let policy = table.policy(d.slot);
    // Pre-processors' metadata joins the echo only when extensions ran (rare: allocates).
    let merged;
    let extra: &[(Box<str>, serde_json::Value)] = if d.request_metadata.is_empty() {
        &d.decision_metadata
    } else {
        merged = pre_then_post(d);
        &merged
    };
    let body = DecisionBody {
        provider_id: &policy.provider(d.provider).name,
        shadow_provider_id: d.shadow.map(|idx| &*policy.provider(idx).name),
        reason: d.reason,
        expected_latency_ms: d.expected_latency_ms,
        expected_cost: d.expected_cost,
        policy_id: &policy.id,
        policy_version: &policy.version,
        tenant_id: &req.tenant_id,
        metadata: &req.metadata,
        extra_metadata: extra,
        executed_extensions: &d.executed_extensions,
        explanation: d.explanation.as_deref(),
        request_id: &req.request_id,
        trace_id: req.trace_id.as_deref(),
    };
    f(&body)
}

fn pre_then_post(d: &Decision) -> Vec<(Box<str>, serde_json::Value)> {
    let pre = d
        .request_metadata
        .iter()
        .map(|(k, v)| (k.clone(), scalar_json(v)));
    pre.chain(d.decision_metadata.iter().cloned()).collect()
}

/// As the encoder echoes request metadata: an integral number stays an integer, so a
/// pre-processor's `"tier": 3` comes back as `3`, not `3.0`.
fn scalar_json(v: &crate::contract::Scalar<'_>) -> serde_json::Value {
    use crate::contract::{Scalar, INTEGRAL_F64_ABS_MAX};
    match v {
        Scalar::Str(s) => serde_json::Value::String(s.to_string()),
        Scalar::Num(n) if n.fract() == 0.0 && n.abs() < INTEGRAL_F64_ABS_MAX => {
            serde_json::Value::from(*n as i64)
        }
        Scalar::Num(n) => {
            serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, Into::into)
        }
        Scalar::Bool(b) => serde_json::Value::Bool(*b),
        Scalar::Null => serde_json::Value::Null,
    }
}

/// Appends the ErrorResponse for an engine error.
pub fn encode_decide_error(out: &mut Vec<u8>, req: &DecideRequest<'_>, err: &DecideError) {
    let details = ErrorDetails {
        retry_after_ms: err.retry_after_ms(),
        extension_id: err.extension_id(),
        budget: err.budget_exceeded().map(|b| BudgetDetails {
            scope: &b.scope,
            value: &b.value,
            window: b.window,
            measure: b.measure,
            limit: b.limit,
            spent: b.spent,
            reset_at_ms: b.reset_at_ms,
        }),
        ..ErrorDetails::default()
    };
    let message = err.to_string();
    encode_error(
        out,
        err.code(),
        &message,
        &details,
        Some(&req.request_id),
        req.trace_id.as_deref(),
    );
}
