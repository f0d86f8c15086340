//! Why a decision was not made. Each variant maps to one wire code (`code`), in one place.

use thiserror::Error;

use super::budget::Exceeded;
use crate::contract::ErrorCode;

/// Counts behind a `decision_failed`, so the message says what emptied the candidates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exclusions {
    pub providers: usize,
    pub by_constraints: usize,
    pub by_open_circuit: usize,
    /// Providers at their own `rpm`/`tpm` or cooling down after a `rate_limited` result.
    pub by_limits: usize,
    /// Providers whose expected spend would pass what a budget has left.
    pub by_budget: usize,
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
    /// A budget's window holds its limit, or no provider's expected spend fits what is left.
    #[error(
        "policy '{policy}': budget {scope}{} over {window} is spent ({measure} {spent} of \
         {limit}); it resets at {reset_at_ms} (Unix ms)",
        shown_value(&.exceeded.value),
        scope = .exceeded.scope,
        window = .exceeded.window,
        measure = .exceeded.measure,
        spent = .exceeded.spent,
        limit = .exceeded.limit,
        reset_at_ms = .exceeded.reset_at_ms
    )]
    BudgetExceeded {
        policy: Box<str>,
        exceeded: Box<Exceeded>,
        retry_after_ms: u64,
    },
    /// Step 3: the request's deadline passed before routing started.
    #[error("the request's deadline passed {late_ms} ms ago (deadline {deadline_unix_ms})")]
    DeadlineExceeded { deadline_unix_ms: u64, late_ms: u64 },
    /// Step 9: nothing left to route to.
    #[error(
        "no provider available: {} of {} excluded by constraints, {} by open circuits, {} by \
         provider rate limits or cooldowns, {} by budgets; {} fallback(s) tried",
        .0.by_constraints, .0.providers, .0.by_open_circuit, .0.by_limits, .0.by_budget,
        .0.fallbacks_tried
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

fn shown_value(value: &str) -> String {
    if value.is_empty() {
        String::new()
    } else {
        format!(" (value {value:?})")
    }
}

impl DecideError {
    /// `budget_exceeded` for `policy`, decided at `now_ms`.
    pub fn budget(policy: &str, exceeded: Exceeded, now_ms: u64) -> Self {
        DecideError::BudgetExceeded {
            policy: policy.into(),
            retry_after_ms: {
                let reset = exceeded.reset_at_ms.saturating_sub(now_ms).max(1);
                if exceeded.held {
                    reset.min(super::budget::HELD_RETRY_MS)
                } else {
                    reset
                }
            },
            exceeded: Box::new(exceeded),
        }
    }

    /// The budget refusal's details.
    pub fn budget_exceeded(&self) -> Option<&Exceeded> {
        match self {
            DecideError::BudgetExceeded { exceeded, .. } => Some(exceeded),
            _ => None,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            DecideError::PolicyNotFound { .. } => ErrorCode::PolicyNotFound,
            DecideError::RateLimited { .. } => ErrorCode::RateLimited,
            DecideError::BudgetExceeded { .. } => ErrorCode::BudgetExceeded,
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
            DecideError::RateLimited { retry_after_ms, .. }
            | DecideError::BudgetExceeded { retry_after_ms, .. } => Some(*retry_after_ms),
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
