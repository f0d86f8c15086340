//! Why a wire message was refused, in a form both a person and a program can use.
//!
//! A `ContractError` names the field (a dotted path such as `task.type` or
//! `metadata.user_id`), the rule it broke and what was found instead. Its `Display` is the
//! message a gateway developer reads (`tenant_id: must match ^[A-Za-z0-9_.-]{1,64}$ (got
//! 65 bytes)`); `details()` is the same information as `error.details` for programs.
//! Offending values are quoted only up to `VALUE_SHOWN_CHARS_MAX` characters, escaped, so
//! an error never echoes a huge or binary input back. The message is rendered only when
//! asked for: building an error allocates nothing beyond a short excerpt.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;

use super::code::ErrorCode;
use super::limits::VALUE_SHOWN_CHARS_MAX;

/// `error.details.reason` for a version other than "1" (SPEC §3).
pub const VERSION_UNSUPPORTED: &str = "VERSION_UNSUPPORTED";

/// The JSON type a value has, or should have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl JsonKind {
    /// With its article, as used in messages: "a string", "an object".
    pub fn as_str(self) -> &'static str {
        match self {
            JsonKind::Null => "null",
            JsonKind::Bool => "a boolean",
            JsonKind::Number => "a number",
            JsonKind::String => "a string",
            JsonKind::Array => "an array",
            JsonKind::Object => "an object",
        }
    }

    /// The kind of a raw JSON text, from its first byte (serde_json trims whitespace).
    pub fn of_raw(raw: &str) -> JsonKind {
        match raw.trim_start().as_bytes().first() {
            Some(b'{') => JsonKind::Object,
            Some(b'[') => JsonKind::Array,
            Some(b'"') => JsonKind::String,
            Some(b't' | b'f') => JsonKind::Bool,
            Some(b'n') => JsonKind::Null,
            _ => JsonKind::Number,
        }
    }
}

/// The rule a field broke. `Display` is the human phrase, `code()` the stable word
/// written to `error.details.rule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The body (or the named field's value) is not well-formed JSON: a syntax error,
    /// bytes that are not UTF-8, nesting deeper than serde_json's 128 levels, or a
    /// number too large for an f64.
    Json,
    /// The value has the wrong JSON type.
    Type(JsonKind),
    /// A required field is absent (or null).
    Required,
    /// At least one of the listed fields must be present.
    AnyOf(&'static str),
    /// A string's length in bytes is outside `min..=max`.
    Bytes { min: usize, max: usize },
    /// An object key's length in bytes is outside `min..=max`.
    KeyBytes { min: usize, max: usize },
    /// A string does not match the quoted pattern.
    Pattern(&'static str),
    /// Not 32 hex characters and not a UUID.
    TraceId,
    /// Not a UUIDv4 and not a ULID.
    RunId,
    /// Not a UUIDv4.
    Uuid4,
    /// Not a NATS subject one can publish to.
    Subject,
    /// A number that must be finite and not negative.
    NonNegative,
    /// A whole number outside `min..=max`.
    Integer { min: u64, max: u64 },
    /// An absolute Unix time in milliseconds outside `min..=max`.
    UnixMs { min: u64, max: u64 },
    /// A metadata value that is an object or an array.
    Scalar,
    /// More entries than allowed.
    Entries { max: usize },
    /// A list that must name at least one entry is empty.
    NotEmpty,
    /// Nesting deeper than allowed.
    Depth { max: usize },
    /// A key given twice in one object.
    Duplicate,
    /// `run_id`, `flow_id` and `step_id` are given together or not at all.
    AllOrNone,
    /// A version other than "1".
    Version,
    /// Not one of the listed words.
    OneOf(&'static str),
    /// A well-formed value the router's configuration does not allow (the message names
    /// the setting).
    NotAllowed(&'static str),
}

impl Rule {
    /// The stable name of the rule, for `error.details.rule`.
    pub fn code(self) -> &'static str {
        match self {
            Rule::Json => "json",
            Rule::Type(_) | Rule::Scalar => "type",
            Rule::Required | Rule::AnyOf(_) => "required",
            Rule::Bytes { .. } | Rule::KeyBytes { .. } => "length",
            Rule::Pattern(_) => "pattern",
            Rule::TraceId | Rule::RunId | Rule::Uuid4 | Rule::Subject => "format",
            Rule::NonNegative | Rule::Integer { .. } | Rule::UnixMs { .. } => "range",
            Rule::Entries { .. } | Rule::NotEmpty => "count",
            Rule::Depth { .. } => "depth",
            Rule::Duplicate => "duplicate",
            Rule::AllOrNone => "all_or_none",
            Rule::Version => "version",
            Rule::OneOf(_) => "enum",
            Rule::NotAllowed(_) => "not_allowed",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Rule::Json => f.write_str("malformed JSON"),
            Rule::Type(kind) => write!(f, "must be {}", kind.as_str()),
            Rule::Required => f.write_str("is required"),
            Rule::AnyOf(fields) => write!(f, "needs {fields}"),
            Rule::Bytes { min, max } => write!(f, "must be {min}–{max} bytes"),
            Rule::KeyBytes { min, max } => write!(f, "keys must be {min}–{max} bytes"),
            Rule::Pattern(pattern) => write!(f, "must match {pattern}"),
            Rule::TraceId => f.write_str("must be 32 hex characters or a UUID"),
            Rule::RunId => f.write_str("must be a UUIDv4 or a ULID"),
            Rule::Uuid4 => f.write_str("must be a UUIDv4"),
            Rule::Subject => f.write_str(
                "must be a NATS subject: non-empty tokens of printable ASCII separated by \
                 '.', without wildcards ('*', '>')",
            ),
            Rule::NonNegative => f.write_str("must be a non-negative number"),
            Rule::Integer { min, max } => write!(f, "must be a whole number from {min} to {max}"),
            Rule::UnixMs { min, max } => write!(
                f,
                "must be an absolute Unix time in milliseconds, from {min} to {max}"
            ),
            Rule::Scalar => f.write_str("must be a string, number, boolean or null"),
            Rule::Entries { max } => write!(f, "must have at most {max} entries"),
            Rule::NotEmpty => {
                f.write_str("must name at least one entry (leave it out for no limit)")
            }
            Rule::Depth { max } => write!(f, "must nest at most {max} levels deep"),
            Rule::Duplicate => f.write_str("must not be given twice"),
            Rule::AllOrNone => {
                f.write_str("is missing: run_id, flow_id and step_id go together (all or none)")
            }
            Rule::Version => f.write_str("unsupported version; only \"1\" is accepted"),
            Rule::OneOf(words) => write!(f, "must be one of {words}"),
            Rule::NotAllowed(setting) => write!(f, "is not allowed by {setting}"),
        }
    }
}

/// What was found instead, quoted back briefly.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// Nothing worth quoting (a missing field, a duplicate key).
    Nothing,
    Kind(JsonKind),
    /// A string's length, when the length is what is wrong.
    Bytes(usize),
    Int(i128),
    Float(f64),
    Entries(usize),
    /// A value cut to `VALUE_SHOWN_CHARS_MAX` characters, with its full length in bytes.
    Text {
        excerpt: Box<str>,
        bytes: usize,
    },
}

impl Found {
    /// Quotes `value`, cut short if long.
    pub fn text(value: &str) -> Found {
        Found::Text {
            excerpt: excerpt(value).into(),
            bytes: value.len(),
        }
    }
}

/// At most `VALUE_SHOWN_CHARS_MAX` characters of `value`, cut at a character boundary.
pub fn excerpt(value: &str) -> &str {
    match value.char_indices().nth(VALUE_SHOWN_CHARS_MAX) {
        Some((end, _)) => &value[..end],
        None => value,
    }
}

/// A client-chosen key as it may appear in a field path: cut short and escaped, so that
/// control characters or quotes in a key cannot garble a message or a log line.
pub fn shown_key(key: &str) -> String {
    excerpt(key).escape_debug().to_string()
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Nothing => Ok(()),
            Found::Kind(kind) => write!(f, " (got {})", kind.as_str()),
            Found::Bytes(n) => write!(f, " (got {n} bytes)"),
            Found::Int(n) => write!(f, " (got {n})"),
            // `{:?}` keeps the fraction (`3.0`), so a refused float never reads as an integer.
            Found::Float(x) => write!(f, " (got {x:?})"),
            Found::Entries(n) => write!(f, " (got {n})"),
            Found::Text { excerpt, bytes } if excerpt.len() < *bytes => {
                write!(f, " (got {excerpt:?}…, {bytes} bytes)")
            }
            Found::Text { excerpt, .. } => write!(f, " (got {excerpt:?})"),
        }
    }
}

/// A message that breaks the v1 contract. Every variant maps to `invalid_request`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContractError {
    /// The body is not one well-formed JSON document. `field` is the top-level field
    /// whose value was being read when the parser stopped, or `body`.
    #[error("{field}: malformed JSON ({detail})")]
    Malformed {
        field: Cow<'static, str>,
        /// serde_json's description with line and column; it never quotes the input.
        detail: Box<str>,
    },
    /// A field (or header) breaks a rule of SPEC §3 or §6.
    #[error("{field}: {rule}{found}")]
    Invalid {
        field: Cow<'static, str>,
        rule: Rule,
        found: Found,
    },
}

impl ContractError {
    pub fn invalid(field: impl Into<Cow<'static, str>>, rule: Rule, found: Found) -> Self {
        ContractError::Invalid {
            field: field.into(),
            rule,
            found,
        }
    }

    /// The wire code: a broken contract is always the caller's `invalid_request`.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::InvalidRequest
    }

    /// The field path: `tenant_id`, `task.type`, `metadata.user_id`, `headers.version`,
    /// or `body` for the document as a whole.
    pub fn field(&self) -> &str {
        match self {
            ContractError::Malformed { field, .. } | ContractError::Invalid { field, .. } => field,
        }
    }

    pub fn rule(&self) -> Rule {
        match self {
            ContractError::Malformed { .. } => Rule::Json,
            ContractError::Invalid { rule, .. } => *rule,
        }
    }

    /// `error.details` for the error body: field, rule, and `VERSION_UNSUPPORTED` as the
    /// reason for a version mismatch.
    pub fn details(&self) -> ErrorDetails<'_> {
        let rule = self.rule();
        ErrorDetails {
            field: Some(self.field()),
            rule: Some(rule.code()),
            reason: (rule == Rule::Version).then_some(VERSION_UNSUPPORTED),
            ..ErrorDetails::default()
        }
    }
}

/// `error.details` (SPEC §4): only the keys that are set are written; none is `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ErrorDetails<'a> {
    /// For `rate_limited` and `overloaded`: when to try again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// The offending field, for `invalid_request`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'a str>,
    /// The broken rule's code (`Rule::code`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'a str>,
    /// A machine-readable reason such as `VERSION_UNSUPPORTED`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// The extension involved, for the extension error codes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extension_id: Option<&'a str>,
    /// For `budget_exceeded`: which budget, and how far it is spent.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetDetails<'a>>,
}

/// `budget_exceeded`'s details (SPEC §12): the budget's `scope` and `window`, the scope
/// `value` for a `metadata.<key>` budget, the `measure` that ran out (`requests`, `cost`,
/// `tokens` or `scope_values`), its `limit`, what is `spent`, and `reset_at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BudgetDetails<'a> {
    pub scope: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub value: &'a str,
    pub window: &'a str,
    pub measure: &'a str,
    pub limit: f64,
    pub spent: f64,
    pub reset_at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long values are cut in messages, at a character boundary, with their length.
    #[test]
    fn found_text_is_cut_and_escaped() {
        let long = "é".repeat(100);
        let shown = Found::text(&long).to_string();
        assert!(shown.contains("…, 200 bytes"), "{shown}");
        assert_eq!(shown.matches('é').count(), VALUE_SHOWN_CHARS_MAX);
        let shown = Found::text("a\"b\nc").to_string();
        assert_eq!(shown, r#" (got "a\"b\nc")"#);
    }

    #[test]
    fn message_names_field_rule_and_found() {
        let err = ContractError::invalid(
            "tenant_id",
            Rule::Pattern(crate::contract::limits::TENANT_ID_PATTERN),
            Found::Bytes(65),
        );
        assert_eq!(
            err.to_string(),
            "tenant_id: must match ^[A-Za-z0-9_.-]{1,64}$ (got 65 bytes)"
        );
        assert_eq!(err.code(), ErrorCode::InvalidRequest);
        let details = err.details();
        assert_eq!(details.field, Some("tenant_id"));
        assert_eq!(details.rule, Some("pattern"));
        assert_eq!(details.reason, None);
    }

    #[test]
    fn version_error_carries_reason() {
        let err = ContractError::invalid("version", Rule::Version, Found::text("2"));
        assert_eq!(err.details().reason, Some(VERSION_UNSUPPORTED));
        assert_eq!(
            err.to_string(),
            "version: unsupported version; only \"1\" is accepted (got \"2\")"
        );
    }

    #[test]
    fn raw_kind_is_read_from_first_byte() {
        assert_eq!(JsonKind::of_raw("{}"), JsonKind::Object);
        assert_eq!(JsonKind::of_raw(" [1]"), JsonKind::Array);
        assert_eq!(JsonKind::of_raw("\"x\""), JsonKind::String);
        assert_eq!(JsonKind::of_raw("false"), JsonKind::Bool);
        assert_eq!(JsonKind::of_raw("null"), JsonKind::Null);
        assert_eq!(JsonKind::of_raw("-1.5"), JsonKind::Number);
    }
}
