//! The admin API's answers: success bodies, and errors in the ErrorResponse envelope of
//! SPEC §4 (`{"ok":false,"error":{"code","message","details"},"context":{}}`).
//!
//! Errors with a fixed set of details go through the contract's `encode_error`. A refused
//! policy has a list of problems, which `ErrorDetails` has no field for, so that one is
//! written here in the same envelope with `details.problems: ["path: message", …]`.
//! The admin path is not the hot path: bodies are built with serde derive and allocate.

use serde::Serialize;

use super::auth::AuthError;
use crate::contract::{encode_error, ErrorCode, ErrorDetails};

/// Problems listed in one answer; the rest are counted in `details.problems_omitted`.
pub const PROBLEMS_SHOWN_MAX: usize = 100;

/// An answer: HTTP status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminResponse {
    /// A 401 should go out with `WWW-Authenticate: Bearer` (RFC 6750 §3).
    pub status: u16,
    pub body: Vec<u8>,
    /// For 405: the methods the route accepts, for the `Allow` header (RFC 9110 §15.5.6).
    pub allow: Option<&'static str>,
    /// For 429: seconds until a retry can pass, for the `Retry-After` header.
    pub retry_after_s: Option<u64>,
}

impl AdminResponse {
    /// A body that is already JSON (a stored policy document, a DecideResponse).
    pub fn raw(status: u16, body: Vec<u8>) -> Self {
        AdminResponse {
            status,
            body,
            allow: None,
            retry_after_s: None,
        }
    }

    pub(super) fn json(status: u16, value: &impl Serialize) -> Self {
        let body = serde_json::to_vec(value).expect("admin bodies have string keys");
        Self::raw(status, body)
    }

    /// An ErrorResponse with the code's own status.
    pub(super) fn error(code: ErrorCode, message: &str) -> Self {
        Self::error_status(code.http_status(), code, message)
    }

    /// An ErrorResponse with a status other than the code's (404 and 405 for routing).
    pub fn error_status(status: u16, code: ErrorCode, message: &str) -> Self {
        let mut body = Vec::new();
        encode_error(
            &mut body,
            code,
            message,
            &ErrorDetails::default(),
            None,
            None,
        );
        Self::raw(status, body)
    }

    /// 429 `rate_limited`: the token's admin writes are spent for now.
    pub fn write_rate_limited(retry_after_s: u64) -> Self {
        let mut body = Vec::new();
        let details = ErrorDetails {
            retry_after_ms: Some(retry_after_s * 1_000),
            ..ErrorDetails::default()
        };
        let message = "too many admin writes with this token (admin.writes_per_second)";
        encode_error(
            &mut body,
            ErrorCode::RateLimited,
            message,
            &details,
            None,
            None,
        );
        let mut reply = Self::raw(ErrorCode::RateLimited.http_status(), body);
        reply.retry_after_s = Some(retry_after_s);
        reply
    }

    /// 409 `conflict` with the revisions a compare-and-set expected and found.
    pub(super) fn conflict(message: &str, expected: u64, current: u64) -> Self {
        let envelope = ConflictEnvelope {
            ok: false,
            error: ConflictError {
                code: ErrorCode::Conflict.as_str(),
                message,
                details: Revisions {
                    expected_revision: expected,
                    current_revision: current,
                },
            },
            context: Empty {},
        };
        Self::json(ErrorCode::Conflict.http_status(), &envelope)
    }

    pub fn auth(err: &AuthError) -> Self {
        Self::error(err.code(), &err.to_string())
    }

    /// 400 `invalid_request` with `details.problems`.
    pub(super) fn problems(message: &str, problems: Vec<String>) -> Self {
        let omitted = problems.len().saturating_sub(PROBLEMS_SHOWN_MAX);
        let mut problems = problems;
        problems.truncate(PROBLEMS_SHOWN_MAX);
        let envelope = ProblemsEnvelope {
            ok: false,
            error: ProblemsError {
                code: ErrorCode::InvalidRequest.as_str(),
                message,
                details: ProblemsDetails {
                    problems,
                    problems_omitted: omitted,
                },
            },
            context: Empty {},
        };
        Self::json(ErrorCode::InvalidRequest.http_status(), &envelope)
    }
}

#[derive(Serialize)]
struct ProblemsEnvelope<'a> {
    ok: bool,
    error: ProblemsError<'a>,
    context: Empty,
}

#[derive(Serialize)]
struct ProblemsError<'a> {
    code: &'static str,
    message: &'a str,
    details: ProblemsDetails,
}

#[derive(Serialize)]
struct ProblemsDetails {
    problems: Vec<String>,
    #[serde(skip_serializing_if = "is_zero")]
    problems_omitted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct ConflictEnvelope<'a> {
    ok: bool,
    error: ConflictError<'a>,
    context: Empty,
}

#[derive(Serialize)]
struct ConflictError<'a> {
    code: &'static str,
    message: &'a str,
    details: Revisions,
}

#[derive(Serialize)]
struct Revisions {
    expected_revision: u64,
    current_revision: u64,
}

/// One row of a policy listing.
#[derive(Serialize)]
pub(super) struct PolicyRow<'a> {
    pub tenant: &'a str,
    pub policy_id: &'a str,
    pub version: &'a str,
    pub providers: usize,
    /// A cluster node's listing: the bucket revision, what `?revision=` expects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

#[derive(Serialize)]
pub(super) struct PolicyList<'a> {
    pub ok: bool,
    pub generation: u64,
    pub policies: Vec<PolicyRow<'a>>,
}

/// The answer to a put or delete.
#[derive(Serialize)]
pub(super) struct Written<'a> {
    pub ok: bool,
    pub tenant: &'a str,
    pub policy_id: &'a str,
    pub generation: u64,
    /// A cluster node's write: the bucket revision it made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

#[derive(Serialize)]
pub(super) struct Reloaded<'a> {
    pub ok: bool,
    pub generation: u64,
    pub policies: usize,
    pub changed: bool,
    /// Documents left out, at most `PROBLEMS_SHOWN_MAX`; each keeps its last good version
    /// if it had one.
    pub invalid: Vec<InvalidRow<'a>>,
    #[serde(skip_serializing_if = "is_zero")]
    pub invalid_omitted: usize,
}

/// One document a load left out.
#[derive(Serialize)]
pub(super) struct InvalidRow<'a> {
    pub tenant: &'a str,
    pub policy_id: &'a str,
    /// Its previous version is still served.
    pub kept: bool,
    pub problems: Vec<String>,
}

#[derive(Serialize)]
pub(super) struct CircuitRow<'a> {
    pub policy_id: &'a str,
    pub provider: &'a str,
    pub state: &'static str,
    /// The policy configures a breaker; without one the state is always `closed`.
    pub enabled: bool,
}

#[derive(Serialize)]
pub(super) struct Circuits<'a> {
    pub ok: bool,
    pub tenant: &'a str,
    pub circuits: Vec<CircuitRow<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The problems envelope has the ErrorResponse shape, and long lists are cut.
    #[test]
    fn problems_use_the_error_envelope() {
        let many = (0..PROBLEMS_SHOWN_MAX + 3)
            .map(|i| format!("$: p{i}"))
            .collect();
        let reply = AdminResponse::problems("bad", many);
        assert_eq!(reply.status, 400);
        let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"]["code"], "invalid_request");
        assert_eq!(v["error"]["message"], "bad");
        let details = &v["error"]["details"];
        assert_eq!(
            details["problems"].as_array().unwrap().len(),
            PROBLEMS_SHOWN_MAX
        );
        assert_eq!(details["problems_omitted"], 3);
        assert_eq!(v["context"], serde_json::json!({}));
    }

    #[test]
    fn routing_errors_keep_their_status() {
        let reply = AdminResponse::error_status(405, ErrorCode::InvalidRequest, "no");
        assert_eq!(reply.status, 405);
        let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(v["error"]["code"], "invalid_request");
    }
}
