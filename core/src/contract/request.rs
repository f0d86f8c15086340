//! Decoding a DecideRequest (SPEC §3): bytes and header values in, a validated
//! `DecideRequest` borrowing from the bytes out, or a `ContractError` naming the field.
//!
//! Why borrowed: this runs for every decision, so a request without JSON escapes is
//! decoded without copying a single string (`Cow::Borrowed` into the body); only
//! `metadata` and the constraint lists allocate a `Vec`, and only when present.
//! `task.payload` and `options` stay `&RawValue` slices because the router never looks
//! inside a payload, and reads one key (`deadline_ms`) of the options: it forwards both.
//!
//! Decoding is two steps (see `loose`): one pass reads the JSON into loosely typed slots,
//! then the checks below apply SPEC §3 field by field, in the order of its table, and
//! stop at the first broken rule. Header values win over body fields and the body field
//! is then ignored. JSON `null` in an optional field means "absent". Unknown fields are
//! ignored (forward compatibility); a repeated known key is refused, since the two
//! values could be read differently by two parsers.

use std::borrow::Cow;

use serde::de::MapAccess;
use serde_json::value::RawValue;

use super::check;
use super::error::{shown_key, ContractError, Found, JsonKind, Rule};
use super::field::{
    bytes_within, id_pattern, no_duplicate, object, optional_bool, optional_non_negative,
    optional_str, required_str, tenant_id, trace_id, type_error, version, whole_number,
};
use super::limits::*;
use super::loose::{read, read_object, skip, Fields, Listed, Loose, Shaped};
use super::types::{Attempt, Constraints, Correlation, DecideRequest, Metadata, Scalar, Task};

/// The only version of the contract.
pub const CONTRACT_VERSION: &str = "1";
/// `policy_id` when the request names none.
pub const POLICY_ID_DEFAULT: &str = "default";
/// `assignment_subject` when `push_assignment` is set and none is given (SPEC §3).
pub const ASSIGNMENT_SUBJECT_DEFAULT: &str = "caf.exec.assign.v1";

/// Header values, as a transport found them (HTTP maps `X-Tenant-ID` / `X-Trace-ID` to
/// `tenant_id` / `trace_id` itself). A header wins over the body field of the same name.
/// Pass `None` for an absent header: an empty value is a value, and breaks its rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Headers<'a> {
    pub tenant_id: Option<&'a str>,
    pub trace_id: Option<&'a str>,
    /// W3C `traceparent`; kept only if well-formed (an invalid one is dropped, as W3C
    /// Trace Context asks, rather than failing the request).
    pub traceparent: Option<&'a str>,
    pub version: Option<&'a str>,
}

#[derive(Default)]
struct WireRequest<'a> {
    version: Option<Loose<'a>>,
    request_id: Option<Loose<'a>>,
    tenant_id: Option<Loose<'a>>,
    trace_id: Option<Loose<'a>>,
    task: Option<Shaped<WireTask<'a>>>,
    policy_id: Option<Loose<'a>>,
    constraints: Option<Shaped<WireConstraints<'a>>>,
    metadata: Option<Shaped<WireMetadata<'a>>>,
    attempt: Option<Shaped<WireAttempt<'a>>>,
    push_assignment: Option<Loose<'a>>,
    assignment_subject: Option<Loose<'a>>,
    options: Option<&'a RawValue>,
    deadline: Option<Loose<'a>>,
    run_id: Option<Loose<'a>>,
    flow_id: Option<Loose<'a>>,
    step_id: Option<Loose<'a>>,
    idempotency_key: Option<Loose<'a>>,
    explain: Option<Loose<'a>>,
    duplicate: Option<&'static str>,
}

impl<'a> Fields<'a> for WireRequest<'a> {
    fn field<A: MapAccess<'a>>(&mut self, key: Cow<'a, str>, map: &mut A) -> Result<(), A::Error> {
        let dup = &mut self.duplicate;
        match &*key {
            "version" => read(&mut self.version, "version", dup, map),
            "request_id" => read(&mut self.request_id, "request_id", dup, map),
            "tenant_id" => read(&mut self.tenant_id, "tenant_id", dup, map),
            "trace_id" => read(&mut self.trace_id, "trace_id", dup, map),
            "task" => read(&mut self.task, "task", dup, map),
            "policy_id" => read(&mut self.policy_id, "policy_id", dup, map),
            "constraints" => read(&mut self.constraints, "constraints", dup, map),
            "metadata" => read(&mut self.metadata, "metadata", dup, map),
            "attempt" => read(&mut self.attempt, "attempt", dup, map),
            "push_assignment" => read(&mut self.push_assignment, "push_assignment", dup, map),
            "assignment_subject" => {
                read(&mut self.assignment_subject, "assignment_subject", dup, map)
            }
            "options" => read(&mut self.options, "options", dup, map),
            "deadline" => read(&mut self.deadline, "deadline", dup, map),
            "run_id" => read(&mut self.run_id, "run_id", dup, map),
            "flow_id" => read(&mut self.flow_id, "flow_id", dup, map),
            "step_id" => read(&mut self.step_id, "step_id", dup, map),
            "idempotency_key" => read(&mut self.idempotency_key, "idempotency_key", dup, map),
            "explain" => read(&mut self.explain, "explain", dup, map),
            _ => skip(map),
        }
    }
}

#[derive(Default)]
struct WireTask<'a> {
    kind: Option<Loose<'a>>,
    payload_ref: Option<Loose<'a>>,
    payload: Option<&'a RawValue>,
    duplicate: Option<&'static str>,
}

impl<'a> Fields<'a> for WireTask<'a> {
    fn field<A: MapAccess<'a>>(&mut self, key: Cow<'a, str>, map: &mut A) -> Result<(), A::Error> {
        let dup = &mut self.duplicate;
        match &*key {
            "type" => read(&mut self.kind, "task.type", dup, map),
            "payload_ref" => read(&mut self.payload_ref, "task.payload_ref", dup, map),
            "payload" => read(&mut self.payload, "task.payload", dup, map),
            _ => skip(map),
        }
    }
}

type WireList<'a> = Listed<'a, CONSTRAINT_LIST_ENTRIES_MAX>;

#[derive(Default)]
struct WireConstraints<'a> {
    max_latency_ms: Option<Loose<'a>>,
    max_cost: Option<Loose<'a>>,
    exclude: Option<WireList<'a>>,
    require: Option<WireList<'a>>,
    only: Option<WireList<'a>>,
    order: Option<WireList<'a>>,
    duplicate: Option<&'static str>,
}

impl<'a> Fields<'a> for WireConstraints<'a> {
    fn field<A: MapAccess<'a>>(&mut self, key: Cow<'a, str>, map: &mut A) -> Result<(), A::Error> {
        let dup = &mut self.duplicate;
        match &*key {
            "max_latency_ms" => read(
                &mut self.max_latency_ms,
                "constraints.max_latency_ms",
                dup,
                map,
            ),
            "max_cost" => read(&mut self.max_cost, "constraints.max_cost", dup, map),
            "exclude" => read(&mut self.exclude, "constraints.exclude", dup, map),
            "require" => read(&mut self.require, "constraints.require", dup, map),
            "only" => read(&mut self.only, "constraints.only", dup, map),
            "order" => read(&mut self.order, "constraints.order", dup, map),
            _ => skip(map),
        }
    }
}

/// Metadata entries in document order; at most `METADATA_ENTRIES_MAX` are kept.
#[derive(Default)]
struct WireMetadata<'a> {
    entries: Vec<(Cow<'a, str>, Loose<'a>)>,
    total: usize,
    duplicate: Option<Cow<'a, str>>,
}

impl<'a> Fields<'a> for WireMetadata<'a> {
    fn field<A: MapAccess<'a>>(&mut self, key: Cow<'a, str>, map: &mut A) -> Result<(), A::Error> {
        self.total += 1;
        if self.entries.len() >= METADATA_ENTRIES_MAX {
            return skip(map);
        }
        if self.entries.iter().any(|(seen, _)| *seen == key) {
            self.duplicate.get_or_insert(key);
            return skip(map);
        }
        let value = map.next_value()?;
        self.entries.push((key, value));
        Ok(())
    }
}

#[derive(Default)]
struct WireAttempt<'a> {
    previous_provider: Option<Loose<'a>>,
    status: Option<Loose<'a>>,
    count: Option<Loose<'a>>,
    duplicate: Option<&'static str>,
}

impl<'a> Fields<'a> for WireAttempt<'a> {
    fn field<A: MapAccess<'a>>(&mut self, key: Cow<'a, str>, map: &mut A) -> Result<(), A::Error> {
        let dup = &mut self.duplicate;
        match &*key {
            "previous_provider" => read(
                &mut self.previous_provider,
                "attempt.previous_provider",
                dup,
                map,
            ),
            "status" => read(&mut self.status, "attempt.status", dup, map),
            "count" => read(&mut self.count, "attempt.count", dup, map),
            _ => skip(map),
        }
    }
}

/// The one key of `options` the router reads; the rest is forwarded untouched.
#[derive(Default)]
struct WireOptions<'a> {
    deadline_ms: Option<Loose<'a>>,
    duplicate: Option<&'static str>,
}

impl<'a> Fields<'a> for WireOptions<'a> {
    fn field<A: MapAccess<'a>>(&mut self, key: Cow<'a, str>, map: &mut A) -> Result<(), A::Error> {
        match &*key {
            "deadline_ms" => read(
                &mut self.deadline_ms,
                "options.deadline_ms",
                &mut self.duplicate,
                map,
            ),
            _ => skip(map),
        }
    }
}

/// Decodes and validates a DecideRequest (SPEC §3). Strings without JSON escapes are
/// borrowed from `body`; header values win over body fields.
pub fn decode_decide<'a>(
    body: &'a [u8],
    headers: &Headers<'a>,
) -> Result<DecideRequest<'a>, ContractError> {
    let wire: WireRequest<'a> = read_object(body)?;
    no_duplicate(wire.duplicate)?;
    version(wire.version, headers.version)?;
    let request_id = required_str("request_id", wire.request_id)?;
    bytes_within("request_id", &request_id, 1, REQUEST_ID_BYTES_MAX)?;
    let tenant_id = tenant_id(wire.tenant_id, headers.tenant_id)?;
    let trace_id = trace_id(wire.trace_id, headers.trace_id)?;
    let traceparent = headers
        .traceparent
        .filter(|value| check::is_traceparent(value));
    let task = task(wire.task)?;
    let policy_id = policy_id(wire.policy_id)?;
    let constraints = constraints(wire.constraints)?;
    let metadata = metadata(wire.metadata)?;
    let attempt = attempt(wire.attempt)?;
    let push_assignment = optional_bool("push_assignment", wire.push_assignment)?;
    let assignment_subject = assignment_subject(wire.assignment_subject, push_assignment)?;
    let (options, options_deadline) = options(wire.options)?;
    let deadline = optional_unix_ms("deadline", wire.deadline)?;
    let correlation = correlation(wire.run_id, wire.flow_id, wire.step_id)?;
    let idempotency_key = optional_str("idempotency_key", wire.idempotency_key)?;
    if let Some(key) = &idempotency_key {
        bytes_within("idempotency_key", key, 1, IDEMPOTENCY_KEY_BYTES_MAX)?;
    }
    Ok(DecideRequest {
        request_id,
        tenant_id,
        trace_id,
        traceparent: traceparent.map(Cow::Borrowed),
        task,
        policy_id,
        constraints,
        metadata,
        attempt,
        push_assignment,
        assignment_subject,
        options,
        deadline_unix_ms: earliest(options_deadline, deadline),
        correlation,
        idempotency_key,
        explain: optional_bool("explain", wire.explain)?,
    })
}

/// The ids to echo in the `context` of an error response when `decode_decide` failed:
/// read again, leniently, from whatever parses; a value that breaks its rule is left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextIds<'a> {
    pub request_id: Option<Cow<'a, str>>,
    pub trace_id: Option<Cow<'a, str>>,
}

/// See `ContextIds`. Meant for the error path only: it reads the body a second time.
pub fn context_ids<'a>(body: &'a [u8], headers: &Headers<'a>) -> ContextIds<'a> {
    let wire = read_object::<WireRequest<'a>>(body).unwrap_or_default();
    let request_id = required_str("request_id", wire.request_id)
        .ok()
        .filter(|id| bytes_within("request_id", id, 1, REQUEST_ID_BYTES_MAX).is_ok());
    ContextIds {
        request_id,
        trace_id: trace_id(wire.trace_id, headers.trace_id).ok().flatten(),
    }
}

fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// An absolute deadline: whole Unix milliseconds, not before 2000 (a duration sent by
/// mistake would otherwise read as long past).
fn optional_unix_ms(
    field: &'static str,
    value: Option<Loose<'_>>,
) -> Result<Option<u64>, ContractError> {
    let (min, max) = (DEADLINE_UNIX_MS_MIN, UNIX_MS_MAX);
    match value {
        None | Some(Loose::Null) => Ok(None),
        Some(v) => whole_number(field, &v, (min, max), Rule::UnixMs { min, max }).map(Some),
    }
}

fn task<'a>(value: Option<Shaped<WireTask<'a>>>) -> Result<Task<'a>, ContractError> {
    let task = object("task", value)?
        .ok_or_else(|| ContractError::invalid("task", Rule::Required, Found::Nothing))?;
    no_duplicate(task.duplicate)?;
    let kind = required_str("task.type", task.kind)?;
    bytes_within("task.type", &kind, 1, TASK_TYPE_BYTES_MAX)?;
    let payload_ref = optional_str("task.payload_ref", task.payload_ref)?;
    if let Some(payload_ref) = &payload_ref {
        bytes_within("task.payload_ref", payload_ref, 1, PAYLOAD_REF_BYTES_MAX)?;
    }
    let payload = task
        .payload
        .filter(|raw| JsonKind::of_raw(raw.get()) != JsonKind::Null);
    if let Some(raw) = payload {
        forwarded_object("task.payload", raw)?;
    }
    if payload.is_none() && payload_ref.is_none() {
        let rule = Rule::AnyOf("payload_ref (a string) or payload (an object)");
        return Err(ContractError::invalid("task", rule, Found::Nothing));
    }
    Ok(Task {
        kind,
        payload_ref,
        payload,
    })
}

/// A raw value forwarded to workers: an object, nested at most `FORWARDED_DEPTH_MAX`
/// levels (the raw capture itself does not bound nesting).
fn forwarded_object(field: &'static str, raw: &RawValue) -> Result<(), ContractError> {
    let kind = JsonKind::of_raw(raw.get());
    if kind != JsonKind::Object {
        return Err(type_error(field, JsonKind::Object, kind));
    }
    let depth = check::json_depth(raw.get());
    if depth > FORWARDED_DEPTH_MAX {
        let rule = Rule::Depth {
            max: FORWARDED_DEPTH_MAX,
        };
        return Err(ContractError::invalid(
            field,
            rule,
            Found::Int(depth as i128),
        ));
    }
    Ok(())
}

fn policy_id(value: Option<Loose<'_>>) -> Result<Cow<'_, str>, ContractError> {
    match optional_str("policy_id", value)? {
        None => Ok(Cow::Borrowed(POLICY_ID_DEFAULT)),
        Some(id) => {
            id_pattern("policy_id", &id, POLICY_ID_BYTES_MAX, POLICY_ID_PATTERN)?;
            Ok(id)
        }
    }
}

fn constraints<'a>(
    value: Option<Shaped<WireConstraints<'a>>>,
) -> Result<Constraints<'a>, ContractError> {
    let Some(wire) = object("constraints", value)? else {
        return Ok(Constraints::default());
    };
    no_duplicate(wire.duplicate)?;
    Ok(Constraints {
        max_latency_ms: optional_non_negative("constraints.max_latency_ms", wire.max_latency_ms)?,
        max_cost: optional_non_negative("constraints.max_cost", wire.max_cost)?,
        exclude: string_list("constraints.exclude", wire.exclude, PROVIDER_ID_BYTES_MAX)?,
        require: string_list("constraints.require", wire.require, CAPABILITY_BYTES_MAX)?,
        only: provider_list("constraints.only", wire.only, true)?,
        order: provider_list("constraints.order", wire.order, false)?,
    })
}

/// `only` and `order`: provider ids, each at most once. An empty `only` is refused: an
/// allow-list that allows nothing is a gateway's bug, and reading it as "no restriction"
/// would send the request where the gateway meant it not to go.
fn provider_list<'a>(
    field: &'static str,
    value: Option<WireList<'a>>,
    non_empty: bool,
) -> Result<Vec<Cow<'a, str>>, ContractError> {
    let present = matches!(value, Some(Listed::Items { .. }));
    let ids = string_list(field, value, PROVIDER_ID_BYTES_MAX)?;
    if non_empty && present && ids.is_empty() {
        return Err(ContractError::invalid(
            field,
            Rule::NotEmpty,
            Found::Nothing,
        ));
    }
    for (i, id) in ids.iter().enumerate() {
        if ids[..i].contains(id) {
            let at = format!("{field}[{i}]");
            return Err(ContractError::invalid(at, Rule::Duplicate, Found::text(id)));
        }
    }
    Ok(ids)
}

/// An array of 1–`bytes_max`-byte strings, at most `CONSTRAINT_LIST_ENTRIES_MAX` long.
fn string_list<'a>(
    field: &'static str,
    value: Option<WireList<'a>>,
    bytes_max: usize,
) -> Result<Vec<Cow<'a, str>>, ContractError> {
    let (items, total) = match value {
        None | Some(Listed::Other(JsonKind::Null)) => return Ok(Vec::new()),
        Some(Listed::Other(kind)) => return Err(type_error(field, JsonKind::Array, kind)),
        Some(Listed::Items { items, total }) => (items, total),
    };
    if total > CONSTRAINT_LIST_ENTRIES_MAX {
        let rule = Rule::Entries {
            max: CONSTRAINT_LIST_ENTRIES_MAX,
        };
        return Err(ContractError::invalid(field, rule, Found::Entries(total)));
    }
    let rule = Rule::Bytes {
        min: 1,
        max: bytes_max,
    };
    let at = |i: usize| format!("{field}[{i}]");
    let item = |(i, item): (usize, Loose<'a>)| match item {
        Loose::Str(s) if (1..=bytes_max).contains(&s.len()) => Ok(s),
        Loose::Str(s) => Err(ContractError::invalid(at(i), rule, Found::Bytes(s.len()))),
        other => Err(type_error(at(i), JsonKind::String, other.kind())),
    };
    items.into_iter().enumerate().map(item).collect()
}

fn metadata<'a>(value: Option<Shaped<WireMetadata<'a>>>) -> Result<Metadata<'a>, ContractError> {
    let Some(wire) = object("metadata", value)? else {
        return Ok(Metadata::default());
    };
    if wire.total > METADATA_ENTRIES_MAX {
        let rule = Rule::Entries {
            max: METADATA_ENTRIES_MAX,
        };
        return Err(ContractError::invalid(
            "metadata",
            rule,
            Found::Entries(wire.total),
        ));
    }
    if let Some(key) = wire.duplicate {
        let field = format!("metadata.{}", shown_key(&key));
        return Err(ContractError::invalid(
            field,
            Rule::Duplicate,
            Found::Nothing,
        ));
    }
    let mut entries = Vec::with_capacity(wire.entries.len());
    for (key, value) in wire.entries {
        if key.is_empty() || key.len() > METADATA_KEY_BYTES_MAX {
            let rule = Rule::KeyBytes {
                min: 1,
                max: METADATA_KEY_BYTES_MAX,
            };
            return Err(ContractError::invalid("metadata", rule, Found::text(&key)));
        }
        let scalar = metadata_value(&key, value)?;
        entries.push((key, scalar));
    }
    Ok(Metadata { entries })
}

fn metadata_value<'a>(key: &str, value: Loose<'a>) -> Result<Scalar<'a>, ContractError> {
    let field = || format!("metadata.{}", shown_key(key));
    Ok(match value {
        Loose::Str(s) if s.len() <= METADATA_VALUE_BYTES_MAX => Scalar::Str(s),
        Loose::Str(s) => {
            let rule = Rule::Bytes {
                min: 0,
                max: METADATA_VALUE_BYTES_MAX,
            };
            return Err(ContractError::invalid(field(), rule, Found::Bytes(s.len())));
        }
        Loose::Null => Scalar::Null,
        Loose::Bool(b) => Scalar::Bool(b),
        Loose::U64(n) => Scalar::Num(n as f64),
        Loose::I64(n) => Scalar::Num(n as f64),
        Loose::F64(x) => Scalar::Num(x),
        other @ (Loose::Array | Loose::Object) => {
            return Err(ContractError::invalid(field(), Rule::Scalar, other.found()));
        }
    })
}

fn attempt<'a>(
    value: Option<Shaped<WireAttempt<'a>>>,
) -> Result<Option<Attempt<'a>>, ContractError> {
    let Some(wire) = object("attempt", value)? else {
        return Ok(None);
    };
    no_duplicate(wire.duplicate)?;
    let previous_provider = required_str("attempt.previous_provider", wire.previous_provider)?;
    bytes_within(
        "attempt.previous_provider",
        &previous_provider,
        1,
        PROVIDER_ID_BYTES_MAX,
    )?;
    let status = required_str("attempt.status", wire.status)?;
    bytes_within("attempt.status", &status, 1, ATTEMPT_STATUS_BYTES_MAX)?;
    let count = match wire.count {
        None | Some(Loose::Null) => 1,
        Some(count) => {
            let range = (1, ATTEMPT_COUNT_MAX);
            let rule = Rule::Integer {
                min: 1,
                max: ATTEMPT_COUNT_MAX,
            };
            whole_number("attempt.count", &count, range, rule)?
        }
    };
    Ok(Some(Attempt {
        previous_provider,
        status,
        count: u32::try_from(count).expect("ATTEMPT_COUNT_MAX fits a u32"),
    }))
}

fn assignment_subject(
    value: Option<Loose<'_>>,
    push_assignment: bool,
) -> Result<Option<Cow<'_, str>>, ContractError> {
    let field = "assignment_subject";
    match optional_str(field, value)? {
        None if push_assignment => Ok(Some(Cow::Borrowed(ASSIGNMENT_SUBJECT_DEFAULT))),
        None => Ok(None),
        Some(subject) => {
            bytes_within(field, &subject, 1, NATS_SUBJECT_BYTES_MAX)?;
            if !check::is_nats_subject(&subject) {
                return Err(ContractError::invalid(
                    field,
                    Rule::Subject,
                    Found::text(&subject),
                ));
            }
            Ok(Some(subject))
        }
    }
}

/// `options` as a raw object, and its `deadline_ms` if any.
fn options(value: Option<&RawValue>) -> Result<(Option<&RawValue>, Option<u64>), ContractError> {
    let Some(raw) = value else {
        return Ok((None, None));
    };
    if JsonKind::of_raw(raw.get()) == JsonKind::Null {
        return Ok((None, None));
    }
    forwarded_object("options", raw)?;
    let wire: WireOptions<'_> = read_object(raw.get().as_bytes())?;
    no_duplicate(wire.duplicate)?;
    let deadline = options_deadline(wire.deadline_ms)?;
    Ok((Some(raw), deadline))
}

/// `options.deadline_ms` is an absolute Unix time in milliseconds, but Beamline gateways
/// send it as a relative budget for the worker (seconds to a minute). A value before 2000
/// is therefore read as such a budget: forwarded in `options`, and no routing deadline.
fn options_deadline(value: Option<Loose<'_>>) -> Result<Option<u64>, ContractError> {
    let field = "options.deadline_ms";
    let (min, max) = (0, UNIX_MS_MAX);
    match value {
        None | Some(Loose::Null) => Ok(None),
        Some(v) => {
            let ms = whole_number(field, &v, (min, max), Rule::UnixMs { min, max })?;
            Ok((ms >= DEADLINE_UNIX_MS_MIN).then_some(ms))
        }
    }
}

fn correlation<'a>(
    run_id: Option<Loose<'a>>,
    flow_id: Option<Loose<'a>>,
    step_id: Option<Loose<'a>>,
) -> Result<Option<Correlation<'a>>, ContractError> {
    let run_id = optional_str("run_id", run_id)?;
    let flow_id = optional_str("flow_id", flow_id)?;
    let step_id = optional_str("step_id", step_id)?;
    let (run_id, flow_id, step_id) = match (run_id, flow_id, step_id) {
        (None, None, None) => return Ok(None),
        (Some(run_id), Some(flow_id), Some(step_id)) => (run_id, flow_id, step_id),
        (run_id, flow_id, _) => {
            let missing = match (run_id, flow_id) {
                (None, _) => "run_id",
                (_, None) => "flow_id",
                _ => "step_id",
            };
            return Err(ContractError::invalid(
                missing,
                Rule::AllOrNone,
                Found::Nothing,
            ));
        }
    };
    for (field, id) in [
        ("run_id", &run_id),
        ("flow_id", &flow_id),
        ("step_id", &step_id),
    ] {
        if !check::is_run_id(id) {
            return Err(ContractError::invalid(field, Rule::RunId, Found::text(id)));
        }
    }
    Ok(Some(Correlation {
        run_id,
        flow_id,
        step_id,
    }))
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
