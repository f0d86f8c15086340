//! The v1 wire types (SPEC §3–§4) as the engine reads them.
//!
//! Requests borrow from the input buffer (`Cow` falls back to owned only for strings with
//! JSON escapes), so decoding a typical request copies no string; `task.payload` and
//! `options` stay unparsed `RawValue` slices because the router only forwards them.

use std::borrow::Cow;

use serde_json::value::RawValue;

/// A metadata or literal value: metadata maps strings to scalars (SPEC §3).
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Str(Cow<'a, str>),
    Num(f64),
    Bool(bool),
    Null,
}

/// Request metadata in document order; keys are unique (duplicates are rejected).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metadata<'a> {
    pub entries: Vec<(Cow<'a, str>, Scalar<'a>)>,
}

impl<'a> Metadata<'a> {
    pub fn get(&self, key: &str) -> Option<&Scalar<'a>> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

#[derive(Debug, Clone)]
pub struct Task<'a> {
    /// `task.type`, non-empty; the fallback context calls it `message_type`.
    pub kind: Cow<'a, str>,
    pub payload_ref: Option<Cow<'a, str>>,
    /// A JSON object, kept raw.
    pub payload: Option<&'a RawValue>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Constraints<'a> {
    pub max_latency_ms: Option<f64>,
    pub max_cost: Option<f64>,
    pub exclude: Vec<Cow<'a, str>>,
    pub require: Vec<Cow<'a, str>>,
    /// Provider ids this request may go to; empty means every provider. Never empty on
    /// the wire: `only: []` is refused, since it would allow nothing.
    pub only: Vec<Cow<'a, str>>,
    /// Provider ids in the order the gateway prefers them: the first that is a candidate
    /// is chosen, before the balancing strategy (docs/API.md, Constraints).
    pub order: Vec<Cow<'a, str>>,
}

impl Constraints<'_> {
    pub fn is_empty(&self) -> bool {
        self.max_latency_ms.is_none()
            && self.max_cost.is_none()
            && self.exclude.is_empty()
            && self.require.is_empty()
            && self.only.is_empty()
            && self.order.is_empty()
    }
}

/// A gateway's retry after a failed call (SPEC §3).
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt<'a> {
    pub previous_provider: Cow<'a, str>,
    pub status: Cow<'a, str>,
    /// Calls already made to `previous_provider`; at least 1 (the default).
    pub count: u32,
}

/// `run_id`, `flow_id`, `step_id`: all or none, each a UUIDv4 or a ULID.
#[derive(Debug, Clone, PartialEq)]
pub struct Correlation<'a> {
    pub run_id: Cow<'a, str>,
    pub flow_id: Cow<'a, str>,
    pub step_id: Cow<'a, str>,
}

/// A validated DecideRequest, with header values already applied over body fields.
#[derive(Debug, Clone)]
pub struct DecideRequest<'a> {
    pub request_id: Cow<'a, str>,
    pub tenant_id: Cow<'a, str>,
    pub trace_id: Option<Cow<'a, str>>,
    /// W3C `traceparent`, from the header only.
    pub traceparent: Option<Cow<'a, str>>,
    pub task: Task<'a>,
    /// Defaults to `"default"`.
    pub policy_id: Cow<'a, str>,
    pub constraints: Constraints<'a>,
    pub metadata: Metadata<'a>,
    pub attempt: Option<Attempt<'a>>,
    pub push_assignment: bool,
    /// Defaults to `caf.exec.assign.v1` when `push_assignment` is set.
    pub assignment_subject: Option<Cow<'a, str>>,
    /// A JSON object, copied into an ExecAssignment.
    pub options: Option<&'a RawValue>,
    /// Absolute deadline in Unix milliseconds, from `options.deadline_ms` or `deadline`.
    pub deadline_unix_ms: Option<u64>,
    pub correlation: Option<Correlation<'a>>,
    pub idempotency_key: Option<Cow<'a, str>>,
    pub explain: bool,
}

/// Why a provider was chosen, with its wire priority (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Sticky,
    Weighted,
    Retry,
    Fallback,
    CircuitBreakerFallback,
}

impl Reason {
    pub const ALL: [Reason; 5] = [
        Reason::Sticky,
        Reason::Weighted,
        Reason::Retry,
        Reason::Fallback,
        Reason::CircuitBreakerFallback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Sticky => "sticky",
            Reason::Weighted => "weighted",
            Reason::Retry => "retry",
            Reason::Fallback => "fallback",
            Reason::CircuitBreakerFallback => "circuit_breaker_fallback",
        }
    }

    pub fn priority(self) -> u8 {
        match self {
            Reason::Sticky => 100,
            Reason::Weighted | Reason::Retry => 50,
            Reason::Fallback => 25,
            Reason::CircuitBreakerFallback => 20,
        }
    }
}

/// What happened to one extension stage, reported in `executed_extensions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtensionStatus {
    Ok,
    /// Not run: no transport could reach it and the stage is optional.
    Skipped,
    /// Ran and failed (or rejected, for a validator that only warns); the stage is optional.
    Failed,
    Timeout,
}

impl ExtensionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExtensionStatus::Ok => "ok",
            ExtensionStatus::Skipped => "skipped",
            ExtensionStatus::Failed => "failed",
            ExtensionStatus::Timeout => "timeout",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutedExtension {
    pub id: Box<str>,
    /// `pre`, `validator` or `post`.
    pub kind: &'static str,
    pub status: ExtensionStatus,
}
