//! The fuzz targets: each generates structured inputs of its format and checks one input
//! against the properties that must hold for every input (no panic is checked by the
//! runner; these add the invariants that are cheap to state).
//!
//! `check` derives everything it varies (limits, split points, headers) from the input's
//! own bytes, so a saved input replays exactly, whatever seed found it. It returns a short
//! label of the outcome (`Complete`, `Err(MissingHost)`): the runner keeps inputs with new
//! labels as mutation sources, a cheap stand-in for coverage feedback.

use crate::corpus::Corpus;
use crate::rng::Rng;

mod chunked;
mod contract;
mod http;
mod nats;
mod policy;

/// The outcome label of an input that passed, or why it broke an invariant.
pub type Checked = Result<String, String>;

pub struct Target {
    pub name: &'static str,
    pub what: &'static str,
    pub generate: fn(&mut Rng, &Corpus) -> Vec<u8>,
    pub check: fn(&[u8]) -> Checked,
    /// Tokens of the format, inserted by mutation.
    pub dictionary: &'static [&'static [u8]],
}

pub const TARGETS: &[Target] = &[
    http::TARGET,
    chunked::TARGET,
    contract::DECIDE,
    contract::RESULT,
    policy::TARGET,
    nats::TARGET,
];

pub fn find(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// `Err` with a message when `cond` fails: invariants read as assertions.
pub fn ensure(cond: bool, message: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(message())
    }
}

/// The variant name of a `Debug` value (`BodyTooLarge { max: 16 }` → `BodyTooLarge`).
pub fn variant(debug: &str) -> String {
    debug
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or("")
        .to_owned()
}
