//! Encoding DecideResponse and ErrorResponse (SPEC §4) into a caller's reused buffer.
//!
//! Why borrowed views with hand-written `Serialize`: a decision is assembled from pieces
//! that live in different places (the request's metadata, the policy's ids, metadata
//! merged by post-processors, the extension log). Views over them serialize straight into
//! the output `Vec<u8>` through serde_json, with no intermediate `Value` or `String`, so
//! the only allocation is the buffer growing, and a buffer reused across requests stops
//! growing after warm-up. Error messages are written through `Display` (serde's
//! `collect_str`), so even a `ContractError` is encoded without rendering it first.
//!
//! Invariants of the output: keys are never repeated (request metadata that collides with
//! `tenant_id`, `executed_extensions` or a post-processor key is dropped); an unknown
//! expected figure is `null`, never a made-up 0; optional members are left out, not null.

use std::fmt;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use super::code::ErrorCode;
use super::error::{ContractError, ErrorDetails};
use super::types::{ExecutedExtension, Metadata, Reason, Scalar};

/// Keys of `decision.metadata` that the router writes itself.
const RESERVED_METADATA_KEYS: [&str; 2] = ["tenant_id", "executed_extensions"];

/// Integral floats below this magnitude are printed as integers when echoing metadata,
/// so a client's `"tier": 3` comes back as `3`, not `3.0`. (2^53: exact in an f64.)
pub const INTEGRAL_F64_ABS_MAX: f64 = 9_007_199_254_740_992.0;

/// Everything a DecideResponse says, borrowed from wherever it lives.
#[derive(Debug, Clone, Copy)]
pub struct DecisionBody<'a> {
    pub provider_id: &'a str,
    /// The shadow provider that also gets a copy of the call: `decision.shadow`.
    pub shadow_provider_id: Option<&'a str>,
    pub reason: Reason,
    /// `None` when the provider declares no figure and none was observed yet: `null`.
    pub expected_latency_ms: Option<f64>,
    pub expected_cost: Option<f64>,
    pub policy_id: &'a str,
    pub policy_version: &'a str,
    pub tenant_id: &'a str,
    /// The request's metadata, echoed into `decision.metadata`.
    pub metadata: &'a Metadata<'a>,
    /// Metadata merged by post-processors; wins over request metadata, later over earlier.
    pub extra_metadata: &'a [(Box<str>, serde_json::Value)],
    pub executed_extensions: &'a [ExecutedExtension],
    /// The steps taken, when the request asked to `explain`.
    pub explanation: Option<&'a [String]>,
    pub request_id: &'a str,
    pub trace_id: Option<&'a str>,
}

/// Appends `{"ok":true,"decision":{…},"context":{…}}` (SPEC §4) to `out`.
/// Clear `out` first to reuse it.
pub fn encode_decision(out: &mut Vec<u8>, body: &DecisionBody<'_>) {
    write_json(out, &DecisionEnvelope(body));
}

/// Appends `{"ok":false,"error":{"code","message","details"},"context":{…}}` to `out`.
pub fn encode_error(
    out: &mut Vec<u8>,
    code: ErrorCode,
    message: &str,
    details: &ErrorDetails<'_>,
    request_id: Option<&str>,
    trace_id: Option<&str>,
) {
    let context = Context {
        request_id,
        trace_id,
    };
    write_json(
        out,
        &ErrorEnvelope {
            code,
            message: &message,
            details,
            context,
        },
    );
}

/// `encode_error` for a refused request, writing the message without rendering it first.
pub fn encode_contract_error(
    out: &mut Vec<u8>,
    error: &ContractError,
    request_id: Option<&str>,
    trace_id: Option<&str>,
) {
    let context = Context {
        request_id,
        trace_id,
    };
    let details = error.details();
    let envelope = ErrorEnvelope {
        code: error.code(),
        message: error,
        details: &details,
        context,
    };
    write_json(out, &envelope);
}

/// Serializing into a `Vec` only fails if a view is buggy (every key here is a string).
pub(super) fn write_json(out: &mut Vec<u8>, value: &impl Serialize) {
    serde_json::to_writer(out, value).expect("serializing a contract view into a Vec");
}

struct DecisionEnvelope<'s, 'a>(&'s DecisionBody<'a>);

impl Serialize for DecisionEnvelope<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let body = self.0;
        let context = Context {
            request_id: Some(body.request_id),
            trace_id: body.trace_id,
        };
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("ok", &true)?;
        map.serialize_entry("decision", &DecisionView(body))?;
        map.serialize_entry("context", &context)?;
        map.end()
    }
}

struct DecisionView<'s, 'a>(&'s DecisionBody<'a>);

impl Serialize for DecisionView<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let body = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("provider_id", body.provider_id)?;
        map.serialize_entry("reason", body.reason.as_str())?;
        map.serialize_entry("priority", &body.reason.priority())?;
        map.serialize_entry("expected_latency_ms", &body.expected_latency_ms)?;
        map.serialize_entry("expected_cost", &body.expected_cost)?;
        map.serialize_entry("policy_id", body.policy_id)?;
        map.serialize_entry("policy_version", body.policy_version)?;
        map.serialize_entry("metadata", &MetadataView(body))?;
        if let Some(provider_id) = body.shadow_provider_id {
            map.serialize_entry("shadow", &ShadowView(provider_id))?;
        }
        if let Some(explanation) = body.explanation {
            map.serialize_entry("explanation", explanation)?;
        }
        map.end()
    }
}

/// `decision.shadow`: `{"provider_id": …}`, an object so that it can grow.
struct ShadowView<'a>(&'a str);

impl Serialize for ShadowView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("provider_id", self.0)?;
        map.end()
    }
}

/// `decision.metadata`: tenant_id, request metadata, post-processor metadata, then the
/// extension log; each key once.
struct MetadataView<'s, 'a>(&'s DecisionBody<'a>);

impl Serialize for MetadataView<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let body = self.0;
        let extra = body.extra_metadata;
        let in_extra = |key: &str| extra.iter().any(|(k, _)| &**k == key);
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("tenant_id", body.tenant_id)?;
        for (key, value) in &body.metadata.entries {
            if !RESERVED_METADATA_KEYS.contains(&&**key) && !in_extra(key) {
                map.serialize_entry(&**key, &ScalarView(value))?;
            }
        }
        for (i, (key, value)) in extra.iter().enumerate() {
            let overridden = extra[i + 1..].iter().any(|(later, _)| later == key);
            if !RESERVED_METADATA_KEYS.contains(&&**key) && !overridden {
                map.serialize_entry(&**key, value)?;
            }
        }
        let extensions = ExtensionsView(body.executed_extensions);
        map.serialize_entry("executed_extensions", &extensions)?;
        map.end()
    }
}

/// A metadata scalar as JSON; integral numbers as integers (`3`, not `3.0`).
pub(crate) struct ScalarView<'s, 'a>(pub &'s Scalar<'a>);

impl Serialize for ScalarView<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Scalar::Str(s) => serializer.serialize_str(s),
            Scalar::Num(x) if x.fract() == 0.0 && x.abs() < INTEGRAL_F64_ABS_MAX => {
                serializer.serialize_i64(*x as i64)
            }
            Scalar::Num(x) => serializer.serialize_f64(*x),
            Scalar::Bool(b) => serializer.serialize_bool(*b),
            Scalar::Null => serializer.serialize_unit(),
        }
    }
}

struct ExtensionsView<'s>(&'s [ExecutedExtension]);

impl Serialize for ExtensionsView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for extension in self.0 {
            seq.serialize_element(&ExtensionView(extension))?;
        }
        seq.end()
    }
}

struct ExtensionView<'s>(&'s ExecutedExtension);

impl Serialize for ExtensionView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("id", &*self.0.id)?;
        map.serialize_entry("type", self.0.kind)?;
        map.serialize_entry("status", self.0.status.as_str())?;
        map.end()
    }
}

/// `context`: the ids that let a gateway correlate the answer; absent ones are left out.
#[derive(serde::Serialize)]
struct Context<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
}

struct ErrorEnvelope<'a> {
    code: ErrorCode,
    message: &'a dyn fmt::Display,
    details: &'a ErrorDetails<'a>,
    context: Context<'a>,
}

impl Serialize for ErrorEnvelope<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("ok", &false)?;
        map.serialize_entry("error", &ErrorView(self))?;
        map.serialize_entry("context", &self.context)?;
        map.end()
    }
}

struct ErrorView<'s, 'a>(&'s ErrorEnvelope<'a>);

impl Serialize for ErrorView<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("code", self.0.code.as_str())?;
        map.serialize_entry("message", &DisplayStr(self.0.message))?;
        map.serialize_entry("details", self.0.details)?;
        map.end()
    }
}

/// A `Display` value written as a JSON string without an intermediate `String`.
struct DisplayStr<'a>(&'a dyn fmt::Display);

impl Serialize for DisplayStr<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self.0)
    }
}

#[cfg(test)]
mod tests;
