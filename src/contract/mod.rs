//! The v1 wire contract (SPEC §3–§6): request and response types, validation, the error
//! codes, and the worker messages. Transports hand bytes and header values in; everything
//! that leaves the router as JSON is encoded here.

mod code;
mod types;

pub use code::ErrorCode;
pub use types::*;
