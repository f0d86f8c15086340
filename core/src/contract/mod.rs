//! The v1 wire contract (SPEC §3–§6): request and response types, validation, the error
//! codes, and the worker messages. Transports hand bytes and header values in; everything
//! that leaves the router as JSON is encoded here.
//!
//! - `request`: `decode_decide`, bytes + `Headers` → a validated, borrowing `DecideRequest`.
//! - `encode`: DecideResponse / ErrorResponse into a caller's reused buffer.
//! - `worker`: ExecAssignment out, ExecResult / ExecAssignmentAck in, UsageEvent out.
//! - `error`: `ContractError` (always `invalid_request`), naming field and rule.
//! - `limits`: every bound on a client-controlled value, as a named constant.
//! - `loose`, `field`, `check`: the lenient first-pass reader, the field checks shared by
//!   all incoming messages, and the string-format predicates they use.

mod check;
mod code;
mod encode;
pub(crate) use encode::ScalarView;
mod error;
mod field;
mod limits;
mod loose;
mod request;
mod types;
mod worker;

pub use check::is_nats_subject;
pub use code::ErrorCode;
pub use encode::{
    encode_contract_error, encode_decision, encode_error, DecisionBody, INTEGRAL_F64_ABS_MAX,
};
pub use error::{
    BudgetDetails, ContractError, ErrorDetails, Found, JsonKind, Rule, VERSION_UNSUPPORTED,
};
pub use limits::*;
pub use request::{
    context_ids, decode_decide, ContextIds, Headers, ASSIGNMENT_SUBJECT_DEFAULT, CONTRACT_VERSION,
    POLICY_ID_DEFAULT,
};
pub use types::*;
pub use worker::{
    AckStatus, AssignmentCorrelation, AssignmentDecision, AssignmentId, ExecAssignment,
    ExecAssignmentAck, ExecResult, ExecStatus, Executor, Job, Usage, UsageEvent, ACK_SUBJECT,
    EXECUTOR_CHANNEL, RESULT_SUBJECT, USAGE_SUBJECT,
};
