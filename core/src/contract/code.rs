//! The error codes of SPEC §4 and their HTTP statuses (SPEC §2), in one place: every
//! layer's typed error maps to exactly one `ErrorCode`, and only here does a code become
//! a string or a status.

/// Every error code of the v1 contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidRequest,
    Unauthorized,
    Forbidden,
    PolicyNotFound,
    PayloadTooLarge,
    RateLimited,
    BudgetExceeded,
    Overloaded,
    DecisionFailed,
    ExtensionNotFound,
    ExtensionTimeout,
    ExtensionUnavailable,
    ValidatorBlocked,
    PreProcessorFailed,
    PostProcessorFailed,
    DeadlineExceeded,
    /// An admin write lost a compare-and-set: the policy changed since the revision named.
    Conflict,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::InvalidRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::PolicyNotFound,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::BudgetExceeded,
        ErrorCode::Overloaded,
        ErrorCode::DecisionFailed,
        ErrorCode::ExtensionNotFound,
        ErrorCode::ExtensionTimeout,
        ErrorCode::ExtensionUnavailable,
        ErrorCode::ValidatorBlocked,
        ErrorCode::PreProcessorFailed,
        ErrorCode::PostProcessorFailed,
        ErrorCode::DeadlineExceeded,
        ErrorCode::Conflict,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::PolicyNotFound => "policy_not_found",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::BudgetExceeded => "budget_exceeded",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::DecisionFailed => "decision_failed",
            ErrorCode::ExtensionNotFound => "extension_not_found",
            ErrorCode::ExtensionTimeout => "extension_timeout",
            ErrorCode::ExtensionUnavailable => "extension_unavailable",
            ErrorCode::ValidatorBlocked => "validator_blocked",
            ErrorCode::PreProcessorFailed => "pre_processor_failed",
            ErrorCode::PostProcessorFailed => "post_processor_failed",
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status of SPEC §2. Extension failures are a bad (502) or late (504)
    /// upstream; `extension_not_found` is a configuration fault of ours, hence 502 too.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::PolicyNotFound => 404,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::Conflict => 409,
            ErrorCode::RateLimited | ErrorCode::BudgetExceeded => 429,
            ErrorCode::Overloaded => 503,
            ErrorCode::DecisionFailed | ErrorCode::Internal => 500,
            ErrorCode::ExtensionTimeout | ErrorCode::DeadlineExceeded => 504,
            ErrorCode::ExtensionNotFound
            | ErrorCode::ExtensionUnavailable
            | ErrorCode::ValidatorBlocked
            | ErrorCode::PreProcessorFailed
            | ErrorCode::PostProcessorFailed => 502,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
