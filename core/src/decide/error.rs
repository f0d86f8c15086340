//! Why a decision was not made. Each variant maps to one wire code (`code`), in one place.

use thiserror::Error;

use crate::contract::ErrorCode;

/// Counts behind a `decision_failed`, so the message says what emptied the candidates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exclusions {
    pub providers: usize,
    pub by_constraints: usize,
    pub by_open_circuit: usize,
    /// Providers at their own `rpm`/`tpm` or cooling down after a `rate_limited` result.
    pub by_limits: usize,
    pub fallbacks_tried: usize,
}

#[derive(Debug, Clone, Error, PartialEq)]
pub enum DecideError {
    /// Step 1: no policy for (tenant, policy id).
    #[error("tenant {tenant} has no policy '{policy}'")]
    PolicyNotFound { tenant: Box<str>, policy: Box<str> },
    /// Step 2: the policy's token bucket is empty.
    #[error(
        "policy '{policy}' allows {rps} requests/s (burst {burst}); retry in {retry_after_ms} ms"
    )]
    RateLimited {
        policy: Box<str>,
        rps: u32,
        burst: u32,
        retry_after_ms: u64,
    },
    /// Step 3: the request's deadline passed before routing started.
    #[error("the request's deadline passed {late_ms} ms ago (deadline {deadline_unix_ms})")]
    DeadlineExceeded { deadline_unix_ms: u64, late_ms: u64 },
    /// Step 9: nothing left to route to.
    #[error(
        "no provider available: {} of {} excluded by constraints, {} by open circuits, {} by \
         provider rate limits or cooldowns; {} fallback(s) tried",
        .0.by_constraints, .0.providers, .0.by_open_circuit, .0.by_limits, .0.fallbacks_tried
    )]
    DecisionFailed(Exclusions),
    /// A required stage could not be reached (no transport, no responder).
    #[error("required extension '{id}' is unavailable")]
    ExtensionUnavailable { id: Box<str> },
    /// A required stage did not answer in time.
    #[error("required extension '{id}' timed out")]
    ExtensionTimeout { id: Box<str> },
    /// A required stage is not in the extension registry.
    #[error("required extension '{id}' is not in the extension registry")]
    ExtensionNotFound { id: Box<str> },
    /// A blocking validator rejected the request (or could not judge it).
    #[error("validator '{id}' blocked the request: {message}")]
    ValidatorBlocked { id: Box<str>, message: Box<str> },
    #[error("pre-processor '{id}' failed: {message}")]
    PreProcessorFailed { id: Box<str>, message: Box<str> },
    #[error("post-processor '{id}' failed: {message}")]
    PostProcessorFailed { id: Box<str>, message: Box<str> },
}

impl DecideError {
    pub fn code(&self) -> ErrorCode {
        match self {
            DecideError::PolicyNotFound { .. } => ErrorCode::PolicyNotFound,
            DecideError::RateLimited { .. } => ErrorCode::RateLimited,
            DecideError::DeadlineExceeded { .. } => ErrorCode::DeadlineExceeded,
            DecideError::DecisionFailed(_) => ErrorCode::DecisionFailed,
            DecideError::ExtensionUnavailable { .. } => ErrorCode::ExtensionUnavailable,
            DecideError::ExtensionTimeout { .. } => ErrorCode::ExtensionTimeout,
            DecideError::ExtensionNotFound { .. } => ErrorCode::ExtensionNotFound,
            DecideError::ValidatorBlocked { .. } => ErrorCode::ValidatorBlocked,
            DecideError::PreProcessorFailed { .. } => ErrorCode::PreProcessorFailed,
            DecideError::PostProcessorFailed { .. } => ErrorCode::PostProcessorFailed,
        }
    }

    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            DecideError::RateLimited { retry_after_ms, .. } => Some(*retry_after_ms),
            _ => None,
        }
    }

    /// The extension a pipeline error is about.
    pub fn extension_id(&self) -> Option<&str> {
        match self {
            DecideError::ExtensionUnavailable { id }
            | DecideError::ExtensionTimeout { id }
            | DecideError::ExtensionNotFound { id }
            | DecideError::ValidatorBlocked { id, .. }
            | DecideError::PreProcessorFailed { id, .. }
            | DecideError::PostProcessorFailed { id, .. } => Some(id),
            _ => None,
        }
    }
}
