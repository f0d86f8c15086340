//! The first of the two steps of decoding a message: read the JSON once, keep every
//! field's value as whatever JSON type it is, and check nothing yet.
//!
//! Why not `#[derive(Deserialize)]` on the target types: serde's errors for a wrong type
//! (`invalid type: integer 5, expected a string at line 1 column 20`) do not name the
//! field, quote the input back, and stop at the first problem inside serde where we cannot
//! attach our rules. Here the only errors are JSON syntax errors; a wrong type, a repeated
//! key or too many entries is *recorded* and judged in the second step, which then knows
//! the field path and the rule. The reader still makes a single pass, borrows every
//! string without escapes from the input (`Cow::Borrowed`), captures raw values as
//! `&RawValue` slices, and never grows a list past its limit (extra entries are skipped).
//! Its own recursion follows the fixed shape of the message (object → object → scalar);
//! anything nested deeper is skipped (`IgnoredAny`) or captured (`RawValue`), both of which
//! serde_json scans iteratively, so no input can exhaust the stack.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::error::{shown_key, ContractError, Found, JsonKind, Rule};

/// A JSON value as first read: scalars kept (strings borrowed when possible), containers
/// skipped and remembered only by their kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Loose<'de> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(Cow<'de, str>),
    Array,
    Object,
}

impl Loose<'_> {
    pub fn kind(&self) -> JsonKind {
        match self {
            Loose::Null => JsonKind::Null,
            Loose::Bool(_) => JsonKind::Bool,
            Loose::U64(_) | Loose::I64(_) | Loose::F64(_) => JsonKind::Number,
            Loose::Str(_) => JsonKind::String,
            Loose::Array => JsonKind::Array,
            Loose::Object => JsonKind::Object,
        }
    }

    /// The value as a number, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Loose::U64(n) => Some(n as f64),
            Loose::I64(n) => Some(n as f64),
            Loose::F64(x) => Some(x),
            _ => None,
        }
    }

    /// What to quote back when this value breaks a rule.
    pub fn found(&self) -> Found {
        match self {
            Loose::U64(n) => Found::Int(i128::from(*n)),
            Loose::I64(n) => Found::Int(i128::from(*n)),
            Loose::F64(x) => Found::Float(*x),
            Loose::Str(s) => Found::text(s),
            other => Found::Kind(other.kind()),
        }
    }
}

/// The value-independent `visit_*` methods of a visitor that accepts any JSON value and
/// reports non-matching ones through `self.other(kind)`.
macro_rules! visit_scalars_as_other {
    () => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(self.other(JsonKind::Null))
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(self.other(JsonKind::Bool))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(self.other(JsonKind::Number))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(self.other(JsonKind::Number))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(self.other(JsonKind::Number))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(self.other(JsonKind::String))
        }
    };
}

fn drain_seq<'de, A: SeqAccess<'de>>(seq: &mut A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Skips the value of an ignored key (unknown fields are allowed for forward compatibility).
pub fn skip<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<IgnoredAny>().map(|_| ())
}

/// Reads the value of the known key `name` into `slot`; a repeated key is recorded in
/// `duplicate` (the first one wins, and the message will name it) and its value skipped.
pub fn read<'de, T, A>(
    slot: &mut Option<T>,
    name: &'static str,
    duplicate: &mut Option<&'static str>,
    map: &mut A,
) -> Result<(), A::Error>
where
    T: Deserialize<'de>,
    A: MapAccess<'de>,
{
    if slot.is_some() {
        duplicate.get_or_insert(name);
        return skip(map);
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

impl<'de> Deserialize<'de> for Loose<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LooseVisitor)
    }
}

struct LooseVisitor;

impl<'de> Visitor<'de> for LooseVisitor {
    type Value = Loose<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Loose::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Loose::Bool(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Loose::U64(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Loose::I64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Loose::F64(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(&mut seq)?;
        Ok(Loose::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        drain_map(&mut map)?;
        Ok(Loose::Object)
    }
}

/// An object key, borrowed when it has no escapes.
pub struct Key<'de>(pub Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(v)))
    }
}

/// An object whose keys a type knows how to read, field by field.
pub trait Fields<'de>: Default {
    /// Reads (or skips) the value of `key`. Must not fail except on a JSON syntax error:
    /// problems are recorded in `self` for the checking step.
    fn field<A: MapAccess<'de>>(&mut self, key: Cow<'de, str>, map: &mut A)
        -> Result<(), A::Error>;
}

/// A field that should hold an object: the object's fields, or the kind found instead.
#[derive(Debug)]
pub enum Shaped<T> {
    Object(T),
    Other(JsonKind),
}

impl<'de, T: Fields<'de>> Deserialize<'de> for Shaped<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ShapedVisitor(PhantomData))
    }
}

struct ShapedVisitor<T>(PhantomData<T>);

impl<T> ShapedVisitor<T> {
    fn other(self, kind: JsonKind) -> Shaped<T> {
        Shaped::Other(kind)
    }
}

impl<'de, T: Fields<'de>> Visitor<'de> for ShapedVisitor<T> {
    type Value = Shaped<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    visit_scalars_as_other!();
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(&mut seq)?;
        Ok(self.other(JsonKind::Array))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = T::default();
        while let Some(Key(key)) = map.next_key()? {
            fields.field(key, &mut map)?;
        }
        Ok(Shaped::Object(fields))
    }
}

/// A field that should hold an array of at most `CAP` items: the first `CAP` items (the
/// rest are skipped but counted in `total`), or the kind found instead.
#[derive(Debug)]
pub enum Listed<'de, const CAP: usize> {
    Items {
        items: Vec<Loose<'de>>,
        total: usize,
    },
    Other(JsonKind),
}

impl<'de, const CAP: usize> Deserialize<'de> for Listed<'de, CAP> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ListedVisitor::<CAP>)
    }
}

struct ListedVisitor<const CAP: usize>;

impl<const CAP: usize> ListedVisitor<CAP> {
    fn other<'de>(self, kind: JsonKind) -> Listed<'de, CAP> {
        Listed::Other(kind)
    }
}

impl<'de, const CAP: usize> Visitor<'de> for ListedVisitor<CAP> {
    type Value = Listed<'de, CAP>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    visit_scalars_as_other!();
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        let mut total = 0;
        loop {
            if items.len() < CAP {
                match seq.next_element::<Loose<'de>>()? {
                    Some(item) => items.push(item),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            total += 1;
        }
        Ok(Listed::Items { items, total })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        drain_map(&mut map)?;
        Ok(self.other(JsonKind::Object))
    }
}

/// Where the top-level reader is, so that a syntax error can name the field it was in.
struct Top<'de, T> {
    fields: T,
    reading: Option<Cow<'de, str>>,
    not_object: Option<JsonKind>,
}

struct TopVisitor<'s, 'de, T>(&'s mut Top<'de, T>);

impl<T> TopVisitor<'_, '_, T> {
    fn other(self, kind: JsonKind) {
        self.0.not_object = Some(kind);
    }
}

impl<'de, T: Fields<'de>> Visitor<'de> for TopVisitor<'_, 'de, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    visit_scalars_as_other!();
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        drain_seq(&mut seq)?;
        self.other(JsonKind::Array);
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            self.0.reading = Some(key.clone());
            self.0.fields.field(key, &mut map)?;
            self.0.reading = None;
        }
        Ok(())
    }
}

/// Reads `body` as one JSON object into `T`. Fails only if the body is not well-formed
/// JSON (naming the top-level field being read when the parser stopped) or is not an
/// object; everything else is left to the caller's checks.
pub fn read_object<'de, T: Fields<'de>>(body: &'de [u8]) -> Result<T, ContractError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut top = Top {
        fields: T::default(),
        reading: None,
        not_object: None,
    };
    let parsed = de
        .deserialize_any(TopVisitor(&mut top))
        .and_then(|()| de.end());
    if let Err(err) = parsed {
        let field = match top.reading {
            Some(key) if !key.is_empty() => Cow::Owned(shown_key(&key)),
            _ => Cow::Borrowed("body"),
        };
        let detail = err.to_string().into_boxed_str();
        return Err(ContractError::Malformed { field, detail });
    }
    match top.not_object {
        Some(kind) => Err(ContractError::invalid(
            "body",
            Rule::Type(JsonKind::Object),
            Found::Kind(kind),
        )),
        None => Ok(top.fields),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Debug)]
    struct Probe<'de> {
        a: Option<Loose<'de>>,
        list: Option<Listed<'de, 2>>,
        duplicate: Option<&'static str>,
    }

    impl<'de> Fields<'de> for Probe<'de> {
        fn field<A: MapAccess<'de>>(
            &mut self,
            key: Cow<'de, str>,
            map: &mut A,
        ) -> Result<(), A::Error> {
            match &*key {
                "a" => read(&mut self.a, "a", &mut self.duplicate, map),
                "list" => read(&mut self.list, "list", &mut self.duplicate, map),
                _ => skip(map),
            }
        }
    }

    #[test]
    fn scalars_are_kept_and_strings_borrowed() {
        let probe: Probe = read_object(br#"{"a":"plain","zzz":[1,{"x":2}]}"#).unwrap();
        assert!(matches!(probe.a, Some(Loose::Str(Cow::Borrowed("plain")))));
        let probe: Probe = read_object(br#"{"a":"esc\"aped"}"#).unwrap();
        assert!(matches!(probe.a, Some(Loose::Str(Cow::Owned(_)))));
        let probe: Probe = read_object(br#"{"a":-3}"#).unwrap();
        assert_eq!(probe.a, Some(Loose::I64(-3)));
    }

    #[test]
    fn wrong_kinds_and_duplicates_are_recorded_not_raised() {
        let probe: Probe = read_object(br#"{"a":{"deep":[1]},"a":2}"#).unwrap();
        assert_eq!(probe.a, Some(Loose::Object));
        assert_eq!(probe.duplicate, Some("a"));
    }

    /// A list never holds more than its cap, however long the input.
    #[test]
    fn lists_stop_at_cap_but_count_all() {
        let probe: Probe = read_object(br#"{"list":[1,"x",[2],{},5]}"#).unwrap();
        match probe.list {
            Some(Listed::Items { items, total }) => {
                assert_eq!(items.len(), 2);
                assert_eq!(total, 5);
            }
            other => panic!("{other:?}"),
        }
        let probe: Probe = read_object(br#"{"list":"no"}"#).unwrap();
        assert!(matches!(probe.list, Some(Listed::Other(JsonKind::String))));
    }

    #[test]
    fn syntax_errors_name_the_field_being_read() {
        let err = read_object::<Probe>(br#"{"a": [1, 2"#).unwrap_err();
        assert_eq!(err.field(), "a");
        assert!(err.to_string().starts_with("a: malformed JSON ("), "{err}");
        let err = read_object::<Probe>(br#"{"a": 1} x"#).unwrap_err();
        assert_eq!(err.field(), "body");
        let err = read_object::<Probe>(br#"{"": [1"#).unwrap_err();
        assert_eq!(err.field(), "body", "an empty key is no field name");
        let err = read_object::<Probe>(b"[1]").unwrap_err();
        assert_eq!(err.to_string(), "body: must be an object (got an array)");
    }
}
