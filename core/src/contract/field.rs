//! Field checks shared by every incoming message (DecideRequest, ExecResult,
//! ExecAssignmentAck): each takes the field's path and its loosely read value (see
//! `loose`) and returns the typed value or a `ContractError` naming the field and rule.
//!
//! JSON `null` in an optional field means "absent". Header values win over body fields,
//! and the body field is then not read at all.

use std::borrow::Cow;

use super::check;
use super::error::{ContractError, Found, JsonKind, Rule};
use super::limits::{TENANT_ID_BYTES_MAX, TENANT_ID_PATTERN};
use super::loose::{Loose, Shaped};
use super::request::CONTRACT_VERSION;

pub fn no_duplicate(duplicate: Option<&'static str>) -> Result<(), ContractError> {
    match duplicate {
        Some(field) => Err(ContractError::invalid(
            field,
            Rule::Duplicate,
            Found::Nothing,
        )),
        None => Ok(()),
    }
}

pub fn type_error(
    field: impl Into<Cow<'static, str>>,
    expected: JsonKind,
    found: JsonKind,
) -> ContractError {
    ContractError::invalid(field, Rule::Type(expected), Found::Kind(found))
}

pub fn optional_str<'a>(
    field: &'static str,
    value: Option<Loose<'a>>,
) -> Result<Option<Cow<'a, str>>, ContractError> {
    match value {
        None | Some(Loose::Null) => Ok(None),
        Some(Loose::Str(s)) => Ok(Some(s)),
        Some(other) => Err(type_error(field, JsonKind::String, other.kind())),
    }
}

pub fn required_str<'a>(
    field: &'static str,
    value: Option<Loose<'a>>,
) -> Result<Cow<'a, str>, ContractError> {
    optional_str(field, value)?
        .ok_or_else(|| ContractError::invalid(field, Rule::Required, Found::Nothing))
}

pub fn bytes_within(
    field: &'static str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<(), ContractError> {
    if (min..=max).contains(&value.len()) {
        return Ok(());
    }
    let rule = Rule::Bytes { min, max };
    Err(ContractError::invalid(
        field,
        rule,
        Found::Bytes(value.len()),
    ))
}

/// `^[A-Za-z0-9_.-]{1,max}$`, quoting `pattern` in the message.
pub fn id_pattern(
    field: &'static str,
    value: &str,
    max: usize,
    pattern: &'static str,
) -> Result<(), ContractError> {
    let rule = Rule::Pattern(pattern);
    if value.is_empty() || value.len() > max {
        return Err(ContractError::invalid(
            field,
            rule,
            Found::Bytes(value.len()),
        ));
    }
    if !check::is_id_chars(value) {
        return Err(ContractError::invalid(field, rule, Found::text(value)));
    }
    Ok(())
}

pub fn optional_bool(field: &'static str, value: Option<Loose<'_>>) -> Result<bool, ContractError> {
    match value {
        None | Some(Loose::Null) => Ok(false),
        Some(Loose::Bool(b)) => Ok(b),
        Some(other) => Err(type_error(field, JsonKind::Bool, other.kind())),
    }
}

/// A finite number ≥ 0 (serde_json never yields NaN or infinities).
pub fn optional_non_negative(
    field: &'static str,
    value: Option<Loose<'_>>,
) -> Result<Option<f64>, ContractError> {
    match value {
        None | Some(Loose::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if x >= 0.0 => Ok(Some(x)),
            Some(_) => Err(ContractError::invalid(field, Rule::NonNegative, v.found())),
            None => Err(type_error(field, JsonKind::Number, v.kind())),
        },
    }
}

/// A whole number in `min..=max`; `rule` describes the range in the message.
pub fn whole_number(
    field: &'static str,
    value: &Loose<'_>,
    (min, max): (u64, u64),
    rule: Rule,
) -> Result<u64, ContractError> {
    match *value {
        Loose::U64(n) if (min..=max).contains(&n) => Ok(n),
        Loose::U64(_) | Loose::I64(_) | Loose::F64(_) => {
            Err(ContractError::invalid(field, rule, value.found()))
        }
        _ => Err(type_error(field, JsonKind::Number, value.kind())),
    }
}

/// An optional object field: its fields, `None` if absent or null, or a type error.
pub fn object<T>(
    field: &'static str,
    value: Option<Shaped<T>>,
) -> Result<Option<T>, ContractError> {
    match value {
        None | Some(Shaped::Other(JsonKind::Null)) => Ok(None),
        Some(Shaped::Object(fields)) => Ok(Some(fields)),
        Some(Shaped::Other(kind)) => Err(type_error(field, JsonKind::Object, kind)),
    }
}

/// The version header wins; otherwise the body's `version`, if any, must be "1".
pub fn version(body: Option<Loose<'_>>, header: Option<&str>) -> Result<(), ContractError> {
    let (field, found) = match (header, body) {
        (Some(CONTRACT_VERSION), _) => return Ok(()),
        (Some(other), _) => ("headers.version", Found::text(other)),
        (None, None | Some(Loose::Null)) => return Ok(()),
        (None, Some(Loose::Str(s))) if s == CONTRACT_VERSION => return Ok(()),
        (None, Some(other)) => ("version", other.found()),
    };
    Err(ContractError::invalid(field, Rule::Version, found))
}

/// From the header if given (the body field is then ignored), else the body; required.
pub fn tenant_id<'a>(
    body: Option<Loose<'a>>,
    header: Option<&'a str>,
) -> Result<Cow<'a, str>, ContractError> {
    let (field, value) = match header {
        Some(value) => ("headers.tenant_id", Cow::Borrowed(value)),
        None => match optional_str("tenant_id", body)? {
            Some(value) => ("tenant_id", value),
            None => {
                let rule = Rule::AnyOf("a tenant_id field or header");
                return Err(ContractError::invalid("tenant_id", rule, Found::Nothing));
            }
        },
    };
    id_pattern(field, &value, TENANT_ID_BYTES_MAX, TENANT_ID_PATTERN)?;
    Ok(value)
}

/// From the header if given (the body field is then ignored), else the body; optional.
pub fn trace_id<'a>(
    body: Option<Loose<'a>>,
    header: Option<&'a str>,
) -> Result<Option<Cow<'a, str>>, ContractError> {
    let (field, value) = match header {
        Some(value) => ("headers.trace_id", Cow::Borrowed(value)),
        None => match optional_str("trace_id", body)? {
            Some(value) => ("trace_id", value),
            None => return Ok(None),
        },
    };
    if !check::is_trace_id(&value) {
        return Err(ContractError::invalid(
            field,
            Rule::TraceId,
            Found::text(&value),
        ));
    }
    Ok(Some(value))
}
