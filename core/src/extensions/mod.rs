//! The sans-IO half of the extensions pipeline (SPEC §7): everything about a stage call
//! except sending it. The NATS transport drives it, per stage of `Pending::stages(kind)`:
//!
//! 1. `Registry::resolve(stage)` → `Resolved` (subject, timeout, retry, merged config), or
//!    `Unresolved`, whose `outcome()` is applied to the engine at once;
//! 2. `ExtensionBreakers::allows(id, now_ns)`: an open breaker → `Unavailable`, no call;
//! 3. `encode_call` → the request body; send it with a `RetryPlan` (only timeouts are
//!    retried, at most `EXTENSION_RETRIES_MAX` times);
//! 4. `decode_reply(kind, body)` → `StageReply` (a pre-processor's new payload, and the
//!    `StageOutcome` for `Pending::apply`); `ExtensionBreakers::observe` feeds the breaker
//!    and the counters.
//!
//! Why a separate module and not inside `decide`: the engine knows stages only by id and
//! outcome, so it stays the same whether extensions run over NATS, in a test, or not at
//! all; the registry is reloaded on its own schedule, independently of policies.
//!
//! Choices, each documented where it is made:
//! - the registry is strict (unknown keys and duplicate ids are errors), like policies;
//! - a stage's `config` is merged shallowly over the entry's (a stage key wins whole);
//! - a disabled entry is `Unavailable`, a missing or wrong-type entry is `NotFound`;
//! - replies are lenient in shape (extra members ignored) and strict in size;
//! - a validator's rejection counts as a success for its breaker.
//!
//! No I/O except `Registry::load_dir`, no clock: time comes in as `now_ns`.

mod admin;
mod breakers;
mod codec;
mod registry;
mod retry;

pub use admin::{extension_health, pipeline_complexity};
pub use breakers::{CallOutcome, ExtensionBreakers, ExtensionCounters, EXTENSION_BREAKER};
pub use codec::{
    decode_reply, encode_call, Call, StageReply, REPLY_BYTES_MAX, REPLY_MESSAGE_BYTES_MAX,
    REPLY_METADATA_ENTRIES_MAX,
};
pub use registry::{
    parse_extension, Extension, ExtensionKind, Registry, RegistryError, Resolved, Unresolved,
    EXTENSIONS_MAX, EXTENSION_FILE_BYTES_MAX, EXTENSION_RETRIES_MAX, EXTENSION_RETRY_FIELD_MAX,
    EXTENSION_TIMEOUT_MS_MAX, SUBJECT_BYTES_MAX,
};
pub use retry::RetryPlan;
