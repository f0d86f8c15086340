//! Worker messages (SPEC §6): the ExecAssignment the router publishes after a decision,
//! the ExecResult and ExecAssignmentAck workers send back, and the UsageEvent the router
//! publishes for each result.
//!
//! Why owned types here, when requests borrow: these outlive the buffer they came from.
//! An assignment is handed to the NATS bridge thread through a ring; a result arrives on
//! that thread and crosses to the shard that owns the tenant. They are one per pushed
//! assignment or per result, off the decision's hot path, so an allocation each is fine.
//! Raw JSON (the task payload, options) is kept as `Box<RawValue>`: copied once, never
//! re-parsed. Incoming messages go through the same lenient reader and field-naming
//! checks as DecideRequest; unknown fields are ignored.
//!
//! Sans-IO: nothing here reads a clock or draws random numbers. The caller supplies the
//! random bytes of an assignment id and the current time of a usage event.

use std::fmt;

use serde::de::MapAccess;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::check;
use super::encode::{write_json, DecisionBody};
use super::error::{ContractError, Found, Rule};
use super::field::{
    bytes_within, no_duplicate, object, optional_bool, optional_non_negative, optional_str,
    required_str, tenant_id, trace_id, version, whole_number,
};
use super::limits::*;
use super::loose::{read, read_object, skip, Fields, Loose, Shaped};
use super::request::{Headers, CONTRACT_VERSION};
use super::types::{DecideRequest, Scalar};

/// Where workers publish ExecResults.
pub const RESULT_SUBJECT: &str = "caf.exec.result.v1";
/// Where workers publish ExecAssignmentAcks.
pub const ACK_SUBJECT: &str = "caf.exec.assign.v1.ack";
/// Where the router publishes UsageEvents.
pub const USAGE_SUBJECT: &str = "beamline.usage.v1.metered";
/// `executor.channel` of an assignment: the worker is reached over NATS.
pub const EXECUTOR_CHANNEL: &str = "nats";

/// Integral numbers below this magnitude are written as JSON integers (2^53, exact in f64).
const INTEGRAL_F64_ABS_MAX: f64 = 9_007_199_254_740_992.0;

/// An assignment's id: a random (version 4) UUID, lowercase and hyphenated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AssignmentId(Box<str>);

impl AssignmentId {
    /// Builds a UUIDv4 from 16 random bytes supplied by the caller (who owns the RNG),
    /// setting the version and variant bits.
    pub fn from_random_bytes(mut bytes: [u8; 16]) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let mut text = String::with_capacity(36);
        for (i, byte) in bytes.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                text.push('-');
            }
            text.push(char::from(HEX[usize::from(byte >> 4)]));
            text.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        debug_assert!(check::is_uuid_v4(&text));
        AssignmentId(text.into_boxed_str())
    }

    pub fn parse(text: &str) -> Result<Self, ContractError> {
        if !check::is_uuid_v4(text) {
            return Err(ContractError::invalid(
                "assignment_id",
                Rule::Uuid4,
                Found::text(text),
            ));
        }
        Ok(AssignmentId(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AssignmentId {
    type Error = ContractError;

    fn try_from(text: String) -> Result<Self, ContractError> {
        AssignmentId::parse(&text)
    }
}

impl From<AssignmentId> for String {
    fn from(id: AssignmentId) -> String {
        id.0.into()
    }
}

impl fmt::Display for AssignmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `executor`: who runs the job and how it is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Executor {
    pub provider_id: String,
    pub channel: String,
}

/// `job`: the request's task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Box<RawValue>>,
}

/// `correlation`: the ids that tie the job to its trace and workflow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentCorrelation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
}

/// `decision`: why this executor was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignmentDecision {
    pub provider_id: String,
    /// A `Reason` word; a string here so that newer routers' reasons still decode.
    pub reason: String,
    pub priority: u8,
    pub expected_latency_ms: Option<f64>,
    pub expected_cost: Option<f64>,
    pub policy_id: String,
    pub policy_version: String,
    /// Metadata merged by post-processors, if any.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

/// ExecAssignment (SPEC §6), published on the request's `assignment_subject`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecAssignment {
    pub version: String,
    pub assignment_id: AssignmentId,
    pub request_id: String,
    pub tenant_id: String,
    pub executor: Executor,
    pub job: Job,
    /// The request's `options` object, verbatim (`{}` when it had none).
    pub options: Box<RawValue>,
    pub correlation: AssignmentCorrelation,
    pub decision: AssignmentDecision,
    /// The request's metadata.
    pub metadata: Map<String, Value>,
    /// W3C `traceparent` of the request, sent as a header, not in the body.
    #[serde(skip)]
    pub traceparent: Option<String>,
    /// A shadow copy of the call (`"shadow": true`; absent on the primary's assignment):
    /// the worker runs it on `executor.provider_id` and reports its result with
    /// `"shadow": true`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub shadow: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl ExecAssignment {
    /// The assignment for `request`, decided as `decision`, under the caller's id.
    pub fn new(
        assignment_id: AssignmentId,
        request: &DecideRequest<'_>,
        decision: &DecisionBody<'_>,
    ) -> Self {
        assert_eq!(
            request.tenant_id, decision.tenant_id,
            "decision for another tenant"
        );
        let options = match request.options {
            Some(raw) => raw.to_owned(),
            None => RawValue::from_string("{}".to_owned()).expect("{} is JSON"),
        };
        let metadata = request.metadata.entries.iter();
        let correlation = request.correlation.as_ref();
        ExecAssignment {
            version: CONTRACT_VERSION.to_owned(),
            assignment_id,
            request_id: request.request_id.clone().into_owned(),
            tenant_id: request.tenant_id.clone().into_owned(),
            executor: Executor {
                provider_id: decision.provider_id.to_owned(),
                channel: EXECUTOR_CHANNEL.to_owned(),
            },
            job: Job {
                kind: request.task.kind.clone().into_owned(),
                payload_ref: request
                    .task
                    .payload_ref
                    .as_ref()
                    .map(|r| r.clone().into_owned()),
                payload: request.task.payload.map(ToOwned::to_owned),
            },
            options,
            correlation: AssignmentCorrelation {
                trace_id: request.trace_id.as_ref().map(|id| id.clone().into_owned()),
                run_id: correlation.map(|c| c.run_id.clone().into_owned()),
                flow_id: correlation.map(|c| c.flow_id.clone().into_owned()),
                step_id: correlation.map(|c| c.step_id.clone().into_owned()),
            },
            decision: assignment_decision(decision),
            metadata: metadata
                .map(|(k, v)| (k.clone().into_owned(), scalar_value(v)))
                .collect(),
            traceparent: request.traceparent.as_ref().map(|t| t.clone().into_owned()),
            shadow: false,
        }
    }

    /// The shadow copy of this assignment, under its own id, for `provider_id`: the same
    /// job, options and decision, marked `shadow`.
    pub fn shadow_copy(&self, assignment_id: AssignmentId, provider_id: &str) -> Self {
        assert!(!self.shadow, "a shadow of a shadow");
        assert_ne!(
            self.executor.provider_id, provider_id,
            "a shadow is never the primary"
        );
        let mut copy = self.clone();
        copy.assignment_id = assignment_id;
        copy.executor.provider_id = provider_id.to_owned();
        copy.shadow = true;
        copy
    }

    /// Appends the assignment's JSON to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        write_json(out, self);
    }

    /// The NATS headers to publish it with (SPEC §6): `tenant_id`, `version`, and
    /// `trace_id` and `traceparent` when known.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("tenant_id", Some(self.tenant_id.as_str())),
            ("version", Some(self.version.as_str())),
            ("trace_id", self.correlation.trace_id.as_deref()),
            ("traceparent", self.traceparent.as_deref()),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
    }
}

fn assignment_decision(decision: &DecisionBody<'_>) -> AssignmentDecision {
    let mut metadata = Map::new();
    for (key, value) in decision.extra_metadata {
        metadata.insert(key.to_string(), value.clone());
    }
    AssignmentDecision {
        provider_id: decision.provider_id.to_owned(),
        reason: decision.reason.as_str().to_owned(),
        priority: decision.reason.priority(),
        expected_latency_ms: decision.expected_latency_ms,
        expected_cost: decision.expected_cost,
        policy_id: decision.policy_id.to_owned(),
        policy_version: decision.policy_version.to_owned(),
        metadata,
    }
}

/// A metadata scalar as JSON; integral numbers as integers, as the client likely sent them.
fn scalar_value(scalar: &Scalar<'_>) -> Value {
    match scalar {
        Scalar::Str(s) => Value::String(s.clone().into_owned()),
        Scalar::Num(x) if x.fract() == 0.0 && x.abs() < INTEGRAL_F64_ABS_MAX => {
            Value::from(*x as i64)
        }
        Scalar::Num(x) => Value::from(*x),
        Scalar::Bool(b) => Value::Bool(*b),
        Scalar::Null => Value::Null,
    }
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecStatus {
    Success,
    Error,
    Timeout,
    Cancelled,
    /// The provider refused the call for its rate limit (a 429): cools the provider down
    /// (`cooldown_ms`) without counting against its circuit.
    #[serde(rename = "rate_limited")]
    RateLimited,
}

impl ExecStatus {
    pub const ALL: [ExecStatus; 5] = [
        ExecStatus::Success,
        ExecStatus::Error,
        ExecStatus::Timeout,
        ExecStatus::Cancelled,
        ExecStatus::RateLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExecStatus::Success => "success",
            ExecStatus::Error => "error",
            ExecStatus::Timeout => "timeout",
            ExecStatus::Cancelled => "cancelled",
            ExecStatus::RateLimited => "rate_limited",
        }
    }

    fn parse(text: &str) -> Result<Self, ContractError> {
        let rule = Rule::OneOf("success, error, timeout, cancelled, rate_limited");
        ExecStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| ContractError::invalid("status", rule, Found::text(text)))
    }
}

/// ExecResult (SPEC §6), from a worker on `caf.exec.result.v1` or a gateway on
/// `POST /v1/results`. A gateway that called the provider itself has no assignment, so
/// either id suffices; figures a worker did not measure stay `None` rather than 0, so
/// they do not drag the latency and cost averages down.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecResult {
    pub assignment_id: Option<String>,
    pub request_id: Option<String>,
    pub status: ExecStatus,
    pub provider_id: String,
    pub latency_ms: Option<f64>,
    pub cost: Option<f64>,
    /// From the `tenant_id` header if given, else the body.
    pub tenant_id: String,
    pub trace_id: Option<String>,
    pub error_code: Option<String>,
    /// Cut to `WORKER_MESSAGE_BYTES_MAX`.
    pub error_message: Option<String>,
    /// When the job ended, Unix milliseconds (`timestamp`), if the worker said.
    pub timestamp_unix_ms: Option<u64>,
    /// `job.type`, when the worker echoed the job.
    pub job_type: Option<String>,
    /// Tokens the call used (`usage`), when the worker counted them.
    pub usage: Option<Usage>,
    /// The call was a shadow copy (`"shadow": true`, as its assignment said): it is
    /// counted apart and touches no breaker, average, usage or cooldown.
    pub shadow: bool,
}

/// An ExecResult's optional `usage {input_tokens, output_tokens}` (SPEC §12); a member
/// left out counts 0. What a provider's `tpm` is counted from, and forwarded in the
/// UsageEvent for metering.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    pub fn total(self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

#[derive(Default)]
struct WireUsage<'a> {
    input_tokens: Option<Loose<'a>>,
    output_tokens: Option<Loose<'a>>,
    duplicate: Option<&'static str>,
}

impl<'a> Fields<'a> for WireUsage<'a> {
    fn field<A: MapAccess<'a>>(
        &mut self,
        key: std::borrow::Cow<'a, str>,
        map: &mut A,
    ) -> Result<(), A::Error> {
        let dup = &mut self.duplicate;
        match &*key {
            "input_tokens" => read(&mut self.input_tokens, "usage.input_tokens", dup, map),
            "output_tokens" => read(&mut self.output_tokens, "usage.output_tokens", dup, map),
            _ => skip(map),
        }
    }
}

#[derive(Default)]
struct WireResult<'a> {
    version: Option<Loose<'a>>,
    assignment_id: Option<Loose<'a>>,
    request_id: Option<Loose<'a>>,
    status: Option<Loose<'a>>,
    provider_id: Option<Loose<'a>>,
    latency_ms: Option<Loose<'a>>,
    cost: Option<Loose<'a>>,
    tenant_id: Option<Loose<'a>>,
    trace_id: Option<Loose<'a>>,
    error_code: Option<Loose<'a>>,
    error_message: Option<Loose<'a>>,
    timestamp: Option<Loose<'a>>,
    job: Option<Shaped<WireJob<'a>>>,
    usage: Option<Shaped<WireUsage<'a>>>,
    shadow: Option<Loose<'a>>,
    duplicate: Option<&'static str>,
}

impl<'a> Fields<'a> for WireResult<'a> {
    fn field<A: MapAccess<'a>>(
        &mut self,
        key: std::borrow::Cow<'a, str>,
        map: &mut A,
    ) -> Result<(), A::Error> {
        let dup = &mut self.duplicate;
        match &*key {
            "version" => read(&mut self.version, "version", dup, map),
            "assignment_id" => read(&mut self.assignment_id, "assignment_id", dup, map),
            "request_id" => read(&mut self.request_id, "request_id", dup, map),
            "status" => read(&mut self.status, "status", dup, map),
            "provider_id" => read(&mut self.provider_id, "provider_id", dup, map),
            "latency_ms" => read(&mut self.latency_ms, "latency_ms", dup, map),
            "cost" => read(&mut self.cost, "cost", dup, map),
            "tenant_id" => read(&mut self.tenant_id, "tenant_id", dup, map),
            "trace_id" => read(&mut self.trace_id, "trace_id", dup, map),
            "error_code" => read(&mut self.error_code, "error_code", dup, map),
            "error_message" => read(&mut self.error_message, "error_message", dup, map),
            "timestamp" => read(&mut self.timestamp, "timestamp", dup, map),
            "job" => read(&mut self.job, "job", dup, map),
            "usage" => read(&mut self.usage, "usage", dup, map),
            "shadow" => read(&mut self.shadow, "shadow", dup, map),
            _ => skip(map),
        }
    }
}

#[derive(Default)]
struct WireJob<'a> {
    kind: Option<Loose<'a>>,
    duplicate: Option<&'static str>,
}

impl<'a> Fields<'a> for WireJob<'a> {
    fn field<A: MapAccess<'a>>(
        &mut self,
        key: std::borrow::Cow<'a, str>,
        map: &mut A,
    ) -> Result<(), A::Error> {
        match &*key {
            "type" => read(&mut self.kind, "job.type", &mut self.duplicate, map),
            _ => skip(map),
        }
    }
}

impl ExecResult {
    /// Decodes and validates an ExecResult; header values win over body fields.
    pub fn decode(body: &[u8], headers: &Headers<'_>) -> Result<Self, ContractError> {
        let wire: WireResult<'_> = read_object(body)?;
        no_duplicate(wire.duplicate)?;
        version(wire.version, headers.version)?;
        let assignment_id = optional_id("assignment_id", wire.assignment_id)?;
        let request_id = optional_id("request_id", wire.request_id)?;
        if assignment_id.is_none() && request_id.is_none() {
            let rule = Rule::AnyOf("assignment_id or request_id");
            return Err(ContractError::invalid(
                "assignment_id",
                rule,
                Found::Nothing,
            ));
        }
        let status = ExecStatus::parse(&required_str("status", wire.status)?)?;
        let provider_id = required_str("provider_id", wire.provider_id)?;
        bytes_within("provider_id", &provider_id, 1, PROVIDER_ID_BYTES_MAX)?;
        let error_code = optional_id("error_code", wire.error_code)?;
        let timestamp_unix_ms = match wire.timestamp {
            None | Some(Loose::Null) => None,
            Some(at) => {
                let rule = Rule::UnixMs {
                    min: 0,
                    max: UNIX_MS_MAX,
                };
                Some(whole_number("timestamp", &at, (0, UNIX_MS_MAX), rule)?)
            }
        };
        Ok(ExecResult {
            assignment_id,
            request_id,
            status,
            provider_id: provider_id.into_owned(),
            latency_ms: optional_non_negative("latency_ms", wire.latency_ms)?,
            cost: optional_non_negative("cost", wire.cost)?,
            tenant_id: tenant_id(wire.tenant_id, headers.tenant_id)?.into_owned(),
            trace_id: trace_id(wire.trace_id, headers.trace_id)?.map(|id| id.into_owned()),
            error_code,
            error_message: worker_message("error_message", wire.error_message)?,
            timestamp_unix_ms,
            job_type: job_type(wire.job)?,
            usage: usage(wire.usage)?,
            shadow: optional_bool("shadow", wire.shadow)?,
        })
    }

    /// The result as the wire carries it, so that `decode` gives it back whole: what a
    /// cluster node forwards to the others (docs/CLUSTER.md, "Results reach every node").
    pub fn encode(&self) -> Vec<u8> {
        let mut out = serde_json::json!({
            "version": CONTRACT_VERSION,
            "status": self.status.as_str(),
            "provider_id": self.provider_id,
            "tenant_id": self.tenant_id,
        });
        let set = |out: &mut serde_json::Value, key: &str, value: serde_json::Value| {
            out[key] = value;
        };
        if let Some(v) = &self.assignment_id {
            set(&mut out, "assignment_id", v.as_str().into());
        }
        if let Some(v) = &self.request_id {
            set(&mut out, "request_id", v.as_str().into());
        }
        if let Some(v) = self.latency_ms {
            set(&mut out, "latency_ms", v.into());
        }
        if let Some(v) = self.cost {
            set(&mut out, "cost", v.into());
        }
        if let Some(v) = &self.trace_id {
            set(&mut out, "trace_id", v.as_str().into());
        }
        if let Some(v) = &self.error_code {
            set(&mut out, "error_code", v.as_str().into());
        }
        if let Some(v) = &self.error_message {
            set(&mut out, "error_message", v.as_str().into());
        }
        if let Some(v) = self.timestamp_unix_ms {
            set(&mut out, "timestamp", v.into());
        }
        if let Some(v) = &self.job_type {
            set(&mut out, "job", serde_json::json!({ "type": v }));
        }
        if let Some(u) = self.usage {
            let usage = serde_json::json!({
                "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
            });
            set(&mut out, "usage", usage);
        }
        if self.shadow {
            set(&mut out, "shadow", true.into());
        }
        serde_json::to_vec(&out).expect("string keys")
    }

    /// The provider refused the call for its own rate limit: status `rate_limited`, or
    /// an error whose `error_code` is `429` or `rate_limited`. Such a result cools the
    /// provider down and does not count against its circuit.
    pub fn rate_limited(&self) -> bool {
        self.status == ExecStatus::RateLimited
            || (self.status == ExecStatus::Error
                && matches!(self.error_code.as_deref(), Some("429" | "rate_limited")))
    }

    /// The key duplicates are recognised by (SPEC §6): the assignment id, else the
    /// request id (with the provider: `shard::ShardCore` adds it, so a retry of one
    /// request on another provider is not taken for a duplicate).
    pub fn dedup_key(&self) -> &str {
        let key = self.assignment_id.as_deref().or(self.request_id.as_deref());
        key.expect("decode ensures one of the ids")
    }
}

/// `usage`: an object of whole token counts, each at most `USAGE_TOKENS_MAX`.
fn usage(value: Option<Shaped<WireUsage<'_>>>) -> Result<Option<Usage>, ContractError> {
    let Some(wire) = object("usage", value)? else {
        return Ok(None);
    };
    no_duplicate(wire.duplicate)?;
    let count = |field: &'static str, v: Option<Loose<'_>>| match v {
        None | Some(Loose::Null) => Ok(0),
        Some(v) => {
            let rule = Rule::Integer {
                min: 0,
                max: USAGE_TOKENS_MAX,
            };
            whole_number(field, &v, (0, USAGE_TOKENS_MAX), rule)
        }
    };
    Ok(Some(Usage {
        input_tokens: count("usage.input_tokens", wire.input_tokens)?,
        output_tokens: count("usage.output_tokens", wire.output_tokens)?,
    }))
}

/// An optional 1–`RESULT_ID_BYTES_MAX`-byte string.
fn optional_id(
    field: &'static str,
    value: Option<Loose<'_>>,
) -> Result<Option<String>, ContractError> {
    let Some(id) = optional_str(field, value)? else {
        return Ok(None);
    };
    bytes_within(field, &id, 1, RESULT_ID_BYTES_MAX)?;
    Ok(Some(id.into_owned()))
}

/// A free-text message from a worker, cut (not refused) at `WORKER_MESSAGE_BYTES_MAX`.
fn worker_message(
    field: &'static str,
    value: Option<Loose<'_>>,
) -> Result<Option<String>, ContractError> {
    let Some(text) = optional_str(field, value)? else {
        return Ok(None);
    };
    let mut end = text.len().min(WORKER_MESSAGE_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Ok(Some(text[..end].to_owned()))
}

fn job_type(value: Option<Shaped<WireJob<'_>>>) -> Result<Option<String>, ContractError> {
    let Some(job) = object("job", value)? else {
        return Ok(None);
    };
    no_duplicate(job.duplicate)?;
    let Some(kind) = optional_str("job.type", job.kind)? else {
        return Ok(None);
    };
    bytes_within("job.type", &kind, 1, TASK_TYPE_BYTES_MAX)?;
    Ok(Some(kind.into_owned()))
}

/// A worker's answer to an assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckStatus {
    Accepted,
    Rejected,
    /// The worker failed to process the assignment (Beamline workers send it).
    Error,
}

impl AckStatus {
    pub const ALL: [AckStatus; 3] = [AckStatus::Accepted, AckStatus::Rejected, AckStatus::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            AckStatus::Accepted => "accepted",
            AckStatus::Rejected => "rejected",
            AckStatus::Error => "error",
        }
    }
}

/// ExecAssignmentAck (SPEC §6), on `caf.exec.assign.v1.ack`; counted and logged only,
/// so everything but the id and status is optional and unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecAssignmentAck {
    pub assignment_id: String,
    pub status: AckStatus,
    /// Cut to `WORKER_MESSAGE_BYTES_MAX`.
    pub message: Option<String>,
    pub request_id: Option<String>,
    /// From the `tenant_id` header if given, else the body.
    pub tenant_id: Option<String>,
    pub trace_id: Option<String>,
}

#[derive(Default)]
struct WireAck<'a> {
    assignment_id: Option<Loose<'a>>,
    status: Option<Loose<'a>>,
    message: Option<Loose<'a>>,
    request_id: Option<Loose<'a>>,
    tenant_id: Option<Loose<'a>>,
    trace_id: Option<Loose<'a>>,
    duplicate: Option<&'static str>,
}

impl<'a> Fields<'a> for WireAck<'a> {
    fn field<A: MapAccess<'a>>(
        &mut self,
        key: std::borrow::Cow<'a, str>,
        map: &mut A,
    ) -> Result<(), A::Error> {
        let dup = &mut self.duplicate;
        match &*key {
            "assignment_id" => read(&mut self.assignment_id, "assignment_id", dup, map),
            "status" => read(&mut self.status, "status", dup, map),
            "message" => read(&mut self.message, "message", dup, map),
            "request_id" => read(&mut self.request_id, "request_id", dup, map),
            "tenant_id" => read(&mut self.tenant_id, "tenant_id", dup, map),
            "trace_id" => read(&mut self.trace_id, "trace_id", dup, map),
            _ => skip(map),
        }
    }
}

impl ExecAssignmentAck {
    /// Decodes and validates an ack; header values win over body fields.
    pub fn decode(body: &[u8], headers: &Headers<'_>) -> Result<Self, ContractError> {
        let wire: WireAck<'_> = read_object(body)?;
        no_duplicate(wire.duplicate)?;
        let assignment_id = optional_id("assignment_id", wire.assignment_id)?.ok_or_else(|| {
            ContractError::invalid("assignment_id", Rule::Required, Found::Nothing)
        })?;
        let status = required_str("status", wire.status)?;
        let rule = Rule::OneOf("accepted, rejected, error");
        let status = AckStatus::ALL
            .into_iter()
            .find(|known| known.as_str() == status)
            .ok_or_else(|| ContractError::invalid("status", rule, Found::text(&status)))?;
        let tenant = match (headers.tenant_id, &wire.tenant_id) {
            (None, None | Some(Loose::Null)) => None,
            _ => Some(tenant_id(wire.tenant_id, headers.tenant_id)?.into_owned()),
        };
        Ok(ExecAssignmentAck {
            assignment_id,
            status,
            message: worker_message("message", wire.message)?,
            request_id: optional_id("request_id", wire.request_id)?,
            tenant_id: tenant,
            trace_id: trace_id(wire.trace_id, headers.trace_id)?.map(|id| id.into_owned()),
        })
    }
}

/// UsageEvent (SPEC §6), published on `beamline.usage.v1.metered` for each new result.
/// Unknown figures are `null`, as in the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageEvent {
    pub tenant_id: String,
    pub provider_id: String,
    pub assignment_id: Option<String>,
    pub request_id: Option<String>,
    pub status: ExecStatus,
    pub latency_ms: Option<f64>,
    pub cost: Option<f64>,
    /// Unix milliseconds: when the job ended if the worker said, else when it was metered.
    pub timestamp: u64,
    pub trace_id: Option<String>,
    /// The job's type, when the result named it (Beamline's `event_type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// The result's `usage`, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl UsageEvent {
    /// The event for `result`, metered at `now_unix_ms` (the caller's clock).
    pub fn from_result(result: &ExecResult, now_unix_ms: u64) -> Self {
        UsageEvent {
            tenant_id: result.tenant_id.clone(),
            provider_id: result.provider_id.clone(),
            assignment_id: result.assignment_id.clone(),
            request_id: result.request_id.clone(),
            status: result.status,
            latency_ms: result.latency_ms,
            cost: result.cost,
            timestamp: result.timestamp_unix_ms.unwrap_or(now_unix_ms),
            trace_id: result.trace_id.clone(),
            event_type: result.job_type.clone(),
            usage: result.usage,
        }
    }

    /// Appends the event's JSON to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        write_json(out, self);
    }
}

#[cfg(test)]
mod tests;
