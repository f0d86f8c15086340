//! The JSON reads shared by the report and policy parsers: parse with a size-checked
//! input, refuse duplicate keys, and typed reads that fail with the file and JSON path.
//!
//! Why a duplicate-key pass: `serde_json::Value` keeps only the last of two equal keys, so
//! a policy naming `latency_p99_us` twice would silently lose one of its rules.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess};
use serde_json::{Map, Value};

use super::GateError;

/// The root of every JSON path in messages.
pub(crate) const ROOT: &str = "$";

/// Parses one document, refusing duplicate keys anywhere in it.
pub(crate) fn parse(file: &Path, bytes: &[u8]) -> Result<Value, GateError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        let message = e.to_string();
        let position = format!(" at line {} column {}", e.line(), e.column());
        GateError::Json {
            file: file.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: message
                .strip_suffix(&position)
                .unwrap_or(&message)
                .to_string(),
        }
    })?;
    let found = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = Unique {
        path: ROOT.to_string(),
        found: &found,
    };
    if seed.deserialize(&mut de).is_err() {
        let (path, key) = found
            .into_inner()
            .expect("valid JSON fails only on a duplicate");
        return Err(GateError::DuplicateKey {
            file: file.to_path_buf(),
            path,
            key,
        });
    }
    Ok(value)
}

/// `$.a` + `b` → `$.a.b`; keys that are not plain identifiers are quoted: `$.a["p 99"]`.
pub(crate) fn child(path: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain {
        format!("{path}.{key}")
    } else {
        format!("{path}[{key:?}]")
    }
}

/// The JSON type of a value, for "expected X, found Y".
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(file: &Path, path: &str, expected: &'static str, value: &Value) -> GateError {
    GateError::WrongType {
        file: file.to_path_buf(),
        path: path.to_string(),
        expected,
        found: kind(value),
    }
}

pub(crate) fn object<'v>(
    file: &Path,
    path: &str,
    value: &'v Value,
) -> Result<&'v Map<String, Value>, GateError> {
    value
        .as_object()
        .ok_or_else(|| wrong_type(file, path, "an object", value))
}

pub(crate) fn number(file: &Path, path: &str, value: &Value) -> Result<f64, GateError> {
    value
        .as_f64()
        .ok_or_else(|| wrong_type(file, path, "a number", value))
}

pub(crate) fn boolean(file: &Path, path: &str, value: &Value) -> Result<bool, GateError> {
    value
        .as_bool()
        .ok_or_else(|| wrong_type(file, path, "a boolean", value))
}

/// Walks a document, recording the first duplicate key (path of its object, key).
struct Unique<'f> {
    path: String,
    found: &'f RefCell<Option<(String, String)>>,
}

impl<'de> DeserializeSeed<'de> for Unique<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> de::Visitor<'de> for Unique<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = child(&self.path, &key);
            if !seen.insert(key.clone()) {
                *self.found.borrow_mut() = Some((self.path, key));
                return Err(de::Error::custom("duplicate key"));
            }
            map.next_value_seed(Unique {
                path,
                found: self.found,
            })?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            let seed = Unique {
                path: format!("{}[{index}]", self.path),
                found: self.found,
            };
            if seq.next_element_seed(seed)?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> &'static Path {
        Path::new("p.json")
    }

    #[test]
    fn paths_quote_keys_that_are_not_identifiers() {
        assert_eq!(child("$", "rules"), "$.rules");
        assert_eq!(child("$.rules", "p 99"), "$.rules[\"p 99\"]");
        assert_eq!(child("$", ""), "$[\"\"]");
    }

    #[test]
    fn invalid_json_names_the_line() {
        let err = parse(file(), b"{\n  \"a\": 1,\n}").unwrap_err();
        let GateError::Json { line, file, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!((line, file.as_path()), (3, self::file()));
        let err = parse(self::file(), b"{\"a\": tru}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.json: not valid JSON (line 1, column 10): expected ident"
        );
    }

    /// A key given twice is refused with the path of its object, however deep.
    #[test]
    fn duplicate_keys_are_refused_with_their_path() {
        let doc =
            br#"{"rules": {"a": {"absolute": {"max": 1}}, "a": {}}, "x": [{"k": 1, "k": 2}]}"#;
        let err = parse(file(), doc).unwrap_err();
        let GateError::DuplicateKey { path, key, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!((path.as_str(), key.as_str()), ("$.rules", "a"));
        let err = parse(file(), br#"{"x": [1, {"k": 1, "k": 2}]}"#).unwrap_err();
        assert!(
            err.to_string().contains("$.x[1]: duplicate key \"k\""),
            "{err}"
        );
    }

    #[test]
    fn typed_reads_name_the_expected_and_found_types() {
        let err = number(file(), "$.metrics.rps", &Value::from("fast")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.json: $.metrics.rps: expected a number, found a string"
        );
        assert!(boolean(file(), "$", &Value::Null).is_err());
        assert!(object(file(), "$", &Value::from(1)).is_err());
    }
}
