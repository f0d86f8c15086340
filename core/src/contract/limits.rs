//! Every bound the contract puts on a message, in one place.
//!
//! A gateway sends us strings we store (sticky keys, idempotency keys), echo (metadata,
//! request ids) and forward (payloads, options), so nothing a client controls is unbounded:
//! each length, count and depth below is checked while decoding, and a message that breaks
//! one is refused with `invalid_request` naming the field. The numbers are generous for
//! real traffic and small enough that a shard's tables stay predictable.
//!
//! Nesting cannot exhaust the stack: the decoder's own recursion follows the fixed shape of
//! the message (at most three levels), and values it skips or captures raw are scanned by
//! serde_json iteratively. Raw values forwarded to workers (`task.payload`, `options`) are
//! bounded by `FORWARDED_DEPTH_MAX` so that serde_json-based workers (limit 128) can read
//! them. The body size itself is the transport's limit (SPEC: 1 MiB, configurable),
//! checked before any of this runs.

/// `request_id`: 1–128 bytes (SPEC §3).
pub const REQUEST_ID_BYTES_MAX: usize = 128;
/// `tenant_id`: `^[A-Za-z0-9_.-]{1,64}$` (SPEC §3).
pub const TENANT_ID_BYTES_MAX: usize = 64;
/// `policy_id`: `^[A-Za-z0-9_.-]{1,128}$`.
pub const POLICY_ID_BYTES_MAX: usize = 128;
/// `task.type`, also the fallback context's `message_type`.
pub const TASK_TYPE_BYTES_MAX: usize = 128;
/// `task.payload_ref`: room for a URL or an object-store key.
pub const PAYLOAD_REF_BYTES_MAX: usize = 2048;
/// Nesting of `task.payload` and `options`, forwarded raw to workers that must parse them.
pub const FORWARDED_DEPTH_MAX: usize = 64;
/// A provider id: `constraints.exclude[]`, `only[]`, `order[]`, `attempt.previous_provider`,
/// results.
pub const PROVIDER_ID_BYTES_MAX: usize = 128;
/// A capability tag in `constraints.require[]`.
pub const CAPABILITY_BYTES_MAX: usize = 128;
/// Entries in each of `constraints.exclude`, `require`, `only` and `order`.
pub const CONSTRAINT_LIST_ENTRIES_MAX: usize = 64;
/// Entries in `metadata`.
pub const METADATA_ENTRIES_MAX: usize = 64;
/// A `metadata` key.
pub const METADATA_KEY_BYTES_MAX: usize = 128;
/// A `metadata` string value (sticky session keys are read from here).
pub const METADATA_VALUE_BYTES_MAX: usize = 1024;
/// `attempt.status` (`timeout`, `5xx`, `rate_limited`, `429`, …).
pub const ATTEMPT_STATUS_BYTES_MAX: usize = 64;
/// `attempt.count`: calls already made to the previous provider for this request.
pub const ATTEMPT_COUNT_MAX: u64 = 1_000;
/// `assignment_subject`: a NATS subject.
pub const NATS_SUBJECT_BYTES_MAX: usize = 256;
/// `idempotency_key`: 1–256 bytes (SPEC §3).
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 256;
/// Earliest absolute deadline accepted: 2000-01-01T00:00:00Z. Anything smaller is almost
/// surely a duration sent by mistake (Beamline's assignments used relative `deadline_ms`),
/// and is refused with a message that says so instead of failing as already past.
pub const DEADLINE_UNIX_MS_MIN: u64 = 946_684_800_000;
/// Latest Unix time in milliseconds accepted anywhere: 9999-12-31T23:59:59.999Z.
pub const UNIX_MS_MAX: u64 = 253_402_300_799_999;
/// Worker result ids (`assignment_id`, `request_id`) and `error_code`.
pub const RESULT_ID_BYTES_MAX: usize = 128;
/// `error_message` in results and `message` in acks: longer ones are cut, not refused,
/// so that a verbose worker still feeds the circuit breaker.
pub const WORKER_MESSAGE_BYTES_MAX: usize = 4096;
/// `usage.input_tokens` and `usage.output_tokens` of one ExecResult, each: a billion
/// tokens is past any call, and the sum stays exact in every counter it feeds.
pub const USAGE_TOKENS_MAX: u64 = 1_000_000_000;
/// Characters of an offending value quoted back in an error message.
pub const VALUE_SHOWN_CHARS_MAX: usize = 32;

/// The patterns quoted in error messages; tests check they match the byte limits.
pub const TENANT_ID_PATTERN: &str = "^[A-Za-z0-9_.-]{1,64}$";
pub const POLICY_ID_PATTERN: &str = "^[A-Za-z0-9_.-]{1,128}$";

const _: () = assert!(DEADLINE_UNIX_MS_MIN < UNIX_MS_MAX);
// Unix milliseconds must survive a trip through a JavaScript number (f64) unchanged.
const _: () = assert!(UNIX_MS_MAX < (1 << 53));
// `Attempt::count` is a u32.
const _: () = assert!(ATTEMPT_COUNT_MAX <= u32::MAX as u64);
// Quoting a value in a message must never quote more than the longest legal id.
const _: () = assert!(VALUE_SHOWN_CHARS_MAX <= TENANT_ID_BYTES_MAX);
// serde_json stops at 128 levels; forwarded JSON must stay readable by serde_json-based
// workers even once wrapped in an ExecAssignment.
const _: () = assert!(FORWARDED_DEPTH_MAX + 4 < 128);

#[cfg(test)]
mod tests {
    use super::*;

    /// The patterns quoted to clients state the same bounds the code enforces.
    #[test]
    fn patterns_match_byte_limits() {
        let tenant = format!("^[A-Za-z0-9_.-]{{1,{TENANT_ID_BYTES_MAX}}}$");
        let policy = format!("^[A-Za-z0-9_.-]{{1,{POLICY_ID_BYTES_MAX}}}$");
        assert_eq!(TENANT_ID_PATTERN, tenant);
        assert_eq!(POLICY_ID_PATTERN, policy);
    }
}
