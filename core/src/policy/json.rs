//! A JSON tree that keeps every object member in document order, duplicates included, and
//! the typed reads the policy compiler makes from it, each recording a problem with its
//! JSON path instead of stopping.
//!
//! Why not `serde_json::Value`: it keeps only the last of two equal keys, so a document with
//! `"weight": 10, …, "weight": 90` would silently load as 90. Why not serde structs with
//! `deny_unknown_fields`: serde stops at the first error, and an operator fixing a policy
//! wants every problem of the document at once, each with its path.
//!
//! Invariant: the tree is only built from input already bounded by `POLICY_FILE_BYTES_MAX`
//! and serde_json's recursion limit (128); `check_structure` then enforces the tighter
//! `DOCUMENT_DEPTH_MAX` and reports duplicate keys.

use std::collections::HashSet;
use std::fmt;

use foldhash::fast::RandomState;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Number;

use super::parse::PolicyError;

/// Nesting of a policy document, objects and arrays together (the formats need 7).
pub const DOCUMENT_DEPTH_MAX: usize = 32;
/// Problems listed for one document; the rest are summarised in one last entry.
pub const ERRORS_PER_DOCUMENT_MAX: usize = 100;
/// Characters of a key or value quoted back in a message.
const SHOWN_CHARS_MAX: usize = 64;

/// One JSON value; objects keep all members, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Num(Number),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// The value's type as a message names it ("expected an integer, got a string").
    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Num(_) => "a number",
            Json::Str(_) => "a string",
            Json::Arr(_) => "an array",
            Json::Obj(_) => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Num(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Num(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Number::from_f64(v)
            .map(Json::Num)
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Arr(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            members.push((key, value));
        }
        Ok(Json::Obj(members))
    }
}

/// Written back out only for extension `config` objects, which are kept as raw JSON.
impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Bool(b) => serializer.serialize_bool(*b),
            Json::Num(n) => n.serialize(serializer),
            Json::Str(s) => serializer.serialize_str(s),
            Json::Arr(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Obj(members) => {
                let mut map = serializer.serialize_map(Some(members.len()))?;
                for (key, value) in members {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

/// Parses a whole document (nothing may follow the root), reporting a syntax error as a
/// problem at `$`.
pub(crate) fn parse_root(problems: &mut Problems, bytes: &[u8]) -> Option<Json> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match Json::deserialize(&mut de).and_then(|root| de.end().map(|()| root)) {
        Ok(root) => Some(root),
        Err(e) => {
            problems.add("$", format!("not valid JSON: {e}"));
            None
        }
    }
}

/// Collects the problems of one document, bounded by `ERRORS_PER_DOCUMENT_MAX`.
pub(crate) struct Problems<'s> {
    source: &'s str,
    list: Vec<PolicyError>,
}

impl<'s> Problems<'s> {
    pub fn new(source: &'s str) -> Self {
        Problems {
            source,
            list: Vec::new(),
        }
    }

    pub fn add(&mut self, path: &str, message: impl Into<String>) {
        if self.list.len() > ERRORS_PER_DOCUMENT_MAX {
            return;
        }
        let (path, message) = if self.list.len() == ERRORS_PER_DOCUMENT_MAX {
            let summary = format!("more than {ERRORS_PER_DOCUMENT_MAX} problems; the rest");
            ("$", summary + " are not listed")
        } else {
            (path, message.into())
        };
        self.list.push(PolicyError {
            source: self.source.to_owned(),
            path: path.to_owned(),
            message,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn into_vec(self) -> Vec<PolicyError> {
        self.list
    }
}

/// `base.key`, or `base["odd key"]` when the key is not a plain identifier.
pub(crate) fn key_path(base: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain {
        format!("{base}.{key}")
    } else {
        format!("{base}[{:?}]", shown(key))
    }
}

pub(crate) fn index_path(base: &str, index: usize) -> String {
    format!("{base}[{index}]")
}

/// A string as quoted in a message: at most `SHOWN_CHARS_MAX` characters.
pub(crate) fn shown(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS_MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

/// Reports duplicate keys and nesting deeper than `DOCUMENT_DEPTH_MAX`, anywhere.
pub(crate) fn check_structure(problems: &mut Problems, path: &str, value: &Json, depth: usize) {
    let is_container = matches!(value, Json::Arr(_) | Json::Obj(_));
    if is_container && depth >= DOCUMENT_DEPTH_MAX {
        problems.add(
            path,
            format!("nested deeper than {DOCUMENT_DEPTH_MAX} levels"),
        );
        return;
    }
    match value {
        Json::Arr(items) => {
            for (i, item) in items.iter().enumerate() {
                if matches!(item, Json::Arr(_) | Json::Obj(_)) {
                    check_structure(problems, &index_path(path, i), item, depth + 1);
                }
            }
        }
        Json::Obj(members) => {
            let mut seen = HashSet::with_capacity_and_hasher(members.len(), RandomState::default());
            for (key, item) in members {
                if !seen.insert(key.as_str()) {
                    problems.add(&key_path(path, key), "duplicate key");
                }
                if matches!(item, Json::Arr(_) | Json::Obj(_)) {
                    check_structure(problems, &key_path(path, key), item, depth + 1);
                }
            }
        }
        _ => {}
    }
}

/// Reports a type mismatch: "expected X, got Y".
pub(crate) fn expected(problems: &mut Problems, path: &str, what: &str, got: &Json) {
    problems.add(path, format!("expected {what}, got {}", got.kind()));
}

/// An integer in `min..=max`; a float with no fractional part counts (as in JSON Schema).
pub(crate) fn int_in(
    problems: &mut Problems,
    path: &str,
    v: &Json,
    min: i64,
    max: i64,
) -> Option<i64> {
    let n = match v {
        Json::Num(n) => n.as_i64().or_else(|| n.as_f64().and_then(whole)),
        _ => None,
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Some(n),
        Some(n) => {
            problems.add(path, format!("must be from {min} to {max}, got {n}"));
            None
        }
        None => {
            let what = format!("an integer from {min} to {max}");
            if let Json::Num(n) = v {
                problems.add(path, format!("expected {what}, got {n}"));
            } else {
                expected(problems, path, &what, v);
            }
            None
        }
    }
}

fn whole(f: f64) -> Option<i64> {
    // i64::MAX as f64 rounds up to 2^63, so the upper bound is exclusive.
    let in_range = f >= i64::MIN as f64 && f < i64::MAX as f64;
    (f.fract() == 0.0 && in_range).then_some(f as i64)
}

/// A number in `min..=max` (JSON numbers are always finite here).
pub(crate) fn float_in(
    problems: &mut Problems,
    path: &str,
    v: &Json,
    min: f64,
    max: f64,
) -> Option<f64> {
    let Json::Num(n) = v else {
        expected(problems, path, &format!("a number from {min} to {max}"), v);
        return None;
    };
    let f = n.as_f64().filter(|f| f.is_finite());
    match f {
        Some(f) if (min..=max).contains(&f) => Some(f),
        _ => {
            problems.add(path, format!("must be from {min} to {max}, got {n}"));
            None
        }
    }
}

pub(crate) fn string<'j>(problems: &mut Problems, path: &str, v: &'j Json) -> Option<&'j str> {
    match v {
        Json::Str(s) => Some(s),
        _ => {
            expected(problems, path, "a string", v);
            None
        }
    }
}

pub(crate) fn boolean(problems: &mut Problems, path: &str, v: &Json) -> Option<bool> {
    match v {
        Json::Bool(b) => Some(*b),
        _ => {
            expected(problems, path, "true or false", v);
            None
        }
    }
}

pub(crate) fn array<'j>(problems: &mut Problems, path: &str, v: &'j Json) -> Option<&'j [Json]> {
    match v {
        Json::Arr(items) => Some(items),
        _ => {
            expected(problems, path, "an array", v);
            None
        }
    }
}

/// An object whose keys are checked against `allowed`; reads record problems under `path`.
#[derive(Clone, Copy)]
pub(crate) struct Obj<'j, 'p> {
    pub path: &'p str,
    pub members: &'j [(String, Json)],
}

impl<'j, 'p> Obj<'j, 'p> {
    /// `None` (with a problem recorded) when `v` is not an object; unknown keys are reported.
    pub fn read(
        problems: &mut Problems,
        path: &'p str,
        v: &'j Json,
        allowed: &[&str],
    ) -> Option<Self> {
        let Json::Obj(members) = v else {
            expected(problems, path, "an object", v);
            return None;
        };
        for (key, _) in members {
            if !allowed.contains(&key.as_str()) {
                let known = allowed.join(", ");
                problems.add(
                    &key_path(path, key),
                    format!("unknown key (known: {known})"),
                );
            }
        }
        Some(Obj { path, members })
    }

    /// The first member named `key` (a duplicate is reported by `check_structure`).
    pub fn get(&self, key: &str) -> Option<&'j Json> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn path_of(&self, key: &str) -> String {
        key_path(self.path, key)
    }

    /// Like `get`, recording a problem when the key is absent.
    pub fn required(&self, problems: &mut Problems, key: &str) -> Option<&'j Json> {
        let v = self.get(key);
        if v.is_none() {
            problems.add(&self.path_of(key), "missing (required)");
        }
        v
    }

    pub fn int(&self, problems: &mut Problems, key: &str, min: i64, max: i64) -> Option<i64> {
        let v = self.get(key)?;
        int_in(problems, &self.path_of(key), v, min, max)
    }

    pub fn float(&self, problems: &mut Problems, key: &str, min: f64, max: f64) -> Option<f64> {
        let v = self.get(key)?;
        float_in(problems, &self.path_of(key), v, min, max)
    }

    pub fn string(&self, problems: &mut Problems, key: &str) -> Option<&'j str> {
        let v = self.get(key)?;
        string(problems, &self.path_of(key), v)
    }

    pub fn boolean(&self, problems: &mut Problems, key: &str) -> Option<bool> {
        let v = self.get(key)?;
        boolean(problems, &self.path_of(key), v)
    }
}
