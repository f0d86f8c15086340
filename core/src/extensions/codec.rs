//! The body of an extension call (SPEC §7) and the reading of its reply.
//!
//! A call is `{"trace_id", "tenant_id", "payload", "metadata", "config"}`: the task payload
//! is written as the raw bytes the request carried (never re-serialised), metadata is the
//! request's with what earlier pre-processors merged over it, config the merged config.
//!
//! Replies are read leniently in shape (unknown members are ignored: an extension may say
//! more than we need) but strictly in size: at most `REPLY_BYTES_MAX` bytes and
//! `REPLY_METADATA_ENTRIES_MAX` metadata entries, because a reply's metadata lands in the
//! request and the decision. Anything unreadable is `Failed`, never a panic: the stage's
//! `mode`/`on_fail` then decides whether the request fails.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::contract::{Metadata, Scalar, ScalarView, METADATA_KEY_BYTES_MAX};
use crate::decide::StageOutcome;
use crate::policy::StageKind;

/// A reply body, in bytes.
pub const REPLY_BYTES_MAX: usize = 256 * 1024;
/// Entries of a reply's `metadata` (as many as a request may carry).
pub const REPLY_METADATA_ENTRIES_MAX: usize = crate::contract::METADATA_ENTRIES_MAX;
/// A reply's `reason`/`message`/`error` as kept in an outcome; longer ones are cut.
pub const REPLY_MESSAGE_BYTES_MAX: usize = 512;

/// What one stage call sends.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// Omitted from the body when the request has none.
    pub trace_id: Option<&'a str>,
    pub tenant_id: &'a str,
    /// The current task payload (a pre-processor may have replaced the request's);
    /// `null` when the task has only a `payload_ref`.
    pub payload: Option<&'a RawValue>,
    /// The request's metadata.
    pub metadata: &'a Metadata<'a>,
    /// Merged by earlier pre-processors (`Pending::request_metadata`); wins over the
    /// request's entry of the same key.
    pub merged: &'a [(Box<str>, Scalar<'static>)],
    /// `Resolved::config`.
    pub config: &'a RawValue,
}

/// Appends the call's JSON body to `out`.
pub fn encode_call(out: &mut Vec<u8>, call: &Call<'_>) {
    serde_json::to_writer(out, &CallView(call)).expect("serializing a call into a Vec");
}

struct CallView<'c, 'a>(&'c Call<'a>);

impl Serialize for CallView<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let call = self.0;
        let mut map = serializer.serialize_map(None)?;
        if let Some(trace_id) = call.trace_id {
            map.serialize_entry("trace_id", trace_id)?;
        }
        map.serialize_entry("tenant_id", call.tenant_id)?;
        map.serialize_entry("payload", &call.payload)?;
        map.serialize_entry("metadata", &MetadataView(call))?;
        map.serialize_entry("config", call.config)?;
        map.end()
    }
}

struct MetadataView<'c, 'a>(&'c Call<'a>);

impl Serialize for MetadataView<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let call = self.0;
        let merged = |key: &str| call.merged.iter().any(|(k, _)| &**k == key);
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in &call.metadata.entries {
            if !merged(key) {
                map.serialize_entry(&**key, &ScalarView(value))?;
            }
        }
        for (key, value) in call.merged {
            map.serialize_entry(&**key, &ScalarView(value))?;
        }
        map.end()
    }
}

/// A reply, read.
#[derive(Debug, Clone)]
pub struct StageReply {
    pub outcome: StageOutcome,
    /// Pre-processors only: the object that replaces the task payload.
    pub payload: Option<Box<RawValue>>,
}

impl PartialEq for StageReply {
    fn eq(&self, other: &Self) -> bool {
        self.outcome == other.outcome
            && self.payload.as_ref().map(|p| p.get()) == other.payload.as_ref().map(|p| p.get())
    }
}

impl StageReply {
    fn failed(message: impl Into<Box<str>>) -> Self {
        StageReply {
            outcome: StageOutcome::Failed {
                message: message.into(),
            },
            payload: None,
        }
    }
}

/// The members a reply may have; others are ignored.
#[derive(Deserialize)]
struct ReplyDoc<'a> {
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(default)]
    metadata: Option<Entries>,
    #[serde(default)]
    valid: Option<bool>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

/// Reads a reply for a stage of `kind`. Never panics, whatever the bytes:
/// - any kind: an object with a non-null `error`, a `status` of `error`/`failed`, a body
///   that is not a JSON object, or one over the limits → `Failed`;
/// - pre: `payload` (an object) replaces the task payload, `metadata` merges → `Ok`;
/// - validator: `valid: true` / `status: "ok"` → `Ok`; `valid: false` /
///   `status: "reject"` → `Rejected` with `reason` (or `message`); neither, or the two
///   disagreeing → `Failed`;
/// - post: `metadata` merges → `Ok`.
pub fn decode_reply(kind: StageKind, body: &[u8]) -> StageReply {
    if body.len() > REPLY_BYTES_MAX {
        return StageReply::failed(format!(
            "reply of {} bytes; at most {REPLY_BYTES_MAX}",
            body.len()
        ));
    }
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return StageReply::failed("reply is not a JSON object");
    }
    let doc: ReplyDoc<'_> = match serde_json::from_slice(body) {
        Ok(doc) => doc,
        Err(e) => return StageReply::failed(cut(&format!("reply is not readable: {e}"))),
    };
    if let Some(error) = doc.error.filter(|e| e.get() != "null") {
        return StageReply::failed(error_message(error));
    }
    match kind {
        StageKind::Validator => validator_reply(doc),
        StageKind::Pre | StageKind::Post => processor_reply(kind, doc),
    }
}

fn validator_reply(doc: ReplyDoc<'_>) -> StageReply {
    let by_status = match doc.status.as_deref() {
        None => None,
        Some("ok") => Some(true),
        Some("reject") => Some(false),
        Some(other) => return failed_status(other, &doc),
    };
    let verdict = match (doc.valid, by_status) {
        (Some(a), Some(b)) if a != b => {
            return StageReply::failed("reply's valid and status disagree");
        }
        (Some(v), _) | (None, Some(v)) => v,
        (None, None) => return StageReply::failed("reply has neither valid nor status"),
    };
    let outcome = if verdict {
        StageOutcome::Ok {
            metadata: Vec::new(),
        }
    } else {
        let message = doc.reason.or(doc.message);
        StageOutcome::Rejected {
            message: message.as_deref().map_or("rejected".into(), cut),
        }
    };
    StageReply {
        outcome,
        payload: None,
    }
}

fn processor_reply(kind: StageKind, doc: ReplyDoc<'_>) -> StageReply {
    if let Some(status) = doc.status.as_deref().filter(|s| *s != "ok") {
        return failed_status(status, &doc);
    }
    let payload = match doc.payload.filter(|p| p.get() != "null") {
        Some(p) if kind == StageKind::Pre && !p.get().starts_with('{') => {
            return StageReply::failed("reply's payload is not a JSON object");
        }
        Some(p) if kind == StageKind::Pre => Some(p.to_owned()),
        _ => None,
    };
    let metadata = doc.metadata.map_or_else(Vec::new, |e| e.0);
    StageReply {
        outcome: StageOutcome::Ok { metadata },
        payload,
    }
}

fn failed_status(status: &str, doc: &ReplyDoc<'_>) -> StageReply {
    let said = doc.message.as_deref().or(doc.reason.as_deref());
    match (status, said) {
        ("error" | "failed", Some(m)) => StageReply::failed(cut(m)),
        ("error" | "failed", None) => StageReply::failed(format!("reply status {status}")),
        _ => StageReply::failed(cut(&format!("unknown reply status {status:?}"))),
    }
}

/// `"error": "text"`, `"error": {"message": "text", …}`, or the raw JSON, cut.
fn error_message(error: &RawValue) -> Box<str> {
    #[derive(Deserialize)]
    struct WithMessage<'a> {
        #[serde(borrow)]
        message: Cow<'a, str>,
    }
    if let Ok(text) = serde_json::from_str::<Cow<'_, str>>(error.get()) {
        return cut(&text);
    }
    if let Ok(with) = serde_json::from_str::<WithMessage<'_>>(error.get()) {
        return cut(&with.message);
    }
    cut(error.get())
}

/// At most `REPLY_MESSAGE_BYTES_MAX` bytes, cut on a character boundary.
fn cut(s: &str) -> Box<str> {
    if s.len() <= REPLY_MESSAGE_BYTES_MAX {
        return s.into();
    }
    let mut end = REPLY_MESSAGE_BYTES_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].into()
}

/// A reply's `metadata` object, bounded while it is read; a later duplicate key wins.
struct Entries(Vec<(Box<str>, serde_json::Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EntriesVisitor)
    }
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a metadata object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
        let mut entries: Vec<(Box<str>, serde_json::Value)> = Vec::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key.len() > METADATA_KEY_BYTES_MAX {
                let max = METADATA_KEY_BYTES_MAX;
                return Err(de::Error::custom(format!(
                    "a metadata key is longer than {max} bytes"
                )));
            }
            let value: serde_json::Value = map.next_value()?;
            match entries.iter().position(|(k, _)| **k == *key) {
                Some(i) => entries[i].1 = value,
                None if entries.len() == REPLY_METADATA_ENTRIES_MAX => {
                    let max = REPLY_METADATA_ENTRIES_MAX;
                    return Err(de::Error::custom(format!(
                        "more than {max} metadata entries"
                    )));
                }
                None => entries.push((key.into(), value)),
            }
        }
        Ok(Entries(entries))
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
