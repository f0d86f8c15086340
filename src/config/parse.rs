//! TOML text → `Config`, reporting every unknown key and mistyped value with its path.
//!
//! The document is first parsed into a `toml::Table` (syntax errors, with line and
//! column). Then each `section.key` is deserialized alone, inside an otherwise empty
//! config: the types' own `deny_unknown_fields` and field types decide, so there is no
//! second list of keys to keep in sync, and each failure is known to belong to that key.
//! Elements of arrays of tables (`admin.tokens`) are checked one by one the same way.
//! Only when no key fails is the whole table deserialized.
//!
//! Also here: the value types with their own TOML forms (`Cores`, `Secret`) and the
//! serializers that keep paths lossless-enough and URLs free of credentials.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use toml::{Table, Value};

use super::bounds::CORE_ID_MAX;
use super::{Config, ConfigError, Problem};
use crate::logging::{is_sensitive_key, redact_into, REDACTED};

/// Parses a whole document (paths unresolved, not validated). Keys that cannot be read
/// are reported and left at their defaults, so that validation can still report the
/// problems of every other key in the same pass.
pub(super) fn parse_document(text: &str) -> Result<(Config, Vec<Problem>), ConfigError> {
    let mut table: Table = text.parse().map_err(|e| syntax_error(text, &e))?;
    let mut problems = Vec::new();
    let mut unreadable = Vec::new();
    for (name, value) in &table {
        match check_section(name, value, &mut problems) {
            Unreadable::Nothing => {}
            Unreadable::Section => unreadable.push((name.clone(), None)),
            Unreadable::Keys(keys) => {
                unreadable.extend(keys.into_iter().map(|k| (name.clone(), Some(k))))
            }
        }
    }
    for (section, key) in unreadable {
        match (key, table.get_mut(&section)) {
            (Some(key), Some(Value::Table(keys))) => drop(keys.remove(&key)),
            _ => drop(table.remove(&section)),
        }
    }
    // By key, whatever order the table iterates in.
    problems.sort_by(|a, b| a.key.cmp(&b.key));
    let config = Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| invalid("config", &e))?;
    Ok((config, problems))
}

/// Line and column of the error, and its message. Not toml's own rendering: that quotes
/// the offending line, which may hold a secret.
fn syntax_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let offset = error.span().map_or(0, |span| span.start.min(text.len()));
    let before = text.as_bytes()[..offset].split(|&b| b == b'\n');
    let (line, column) = before.enumerate().last().map_or((1, 1), |(i, tail)| {
        (i + 1, String::from_utf8_lossy(tail).chars().count() + 1)
    });
    let message = error.message().trim_end().replace('\n', "; ");
    ConfigError::Syntax {
        line,
        column,
        message,
    }
}

fn invalid(key: &str, error: &toml::de::Error) -> ConfigError {
    ConfigError::check(vec![problem(key, error)]).unwrap_err()
}

/// A problem for `key`. serde's type errors quote the value; under a key that names a
/// secret the message is replaced so the value is not shown.
fn problem(key: &str, error: &toml::de::Error) -> Problem {
    let message = error.message().trim_end();
    let quotes_value = message.starts_with("invalid type") || message.starts_with("invalid value");
    if quotes_value && key.split('.').any(is_sensitive_key) {
        return Problem::new(key, "wrong type or value (not shown: it may be a secret)");
    }
    Problem::new(key, message)
}

/// Deserializes a config holding only `section = value`.
fn try_section(section: &str, value: Value) -> Result<(), toml::de::Error> {
    let mut table = Table::new();
    table.insert(section.to_owned(), value);
    Value::Table(table).try_into::<Config>().map(drop)
}

fn single(key: &str, value: &Value) -> Value {
    let mut table = Table::new();
    table.insert(key.to_owned(), value.clone());
    Value::Table(table)
}

/// What of a section could not be read.
enum Unreadable {
    Nothing,
    Section,
    Keys(Vec<String>),
}

fn check_section(section: &str, value: &Value, problems: &mut Vec<Problem>) -> Unreadable {
    let Err(error) = try_section(section, value.clone()) else {
        return Unreadable::Nothing;
    };
    let known = try_section(section, Value::Table(Table::new())).is_ok();
    let Some(keys) = value.as_table().filter(|_| known) else {
        // An unknown section, or a known one that is not a table.
        problems.push(problem(section, &error));
        return Unreadable::Section;
    };
    let mut unreadable = Vec::new();
    for (key, value) in keys {
        let Err(error) = try_section(section, single(key, value)) else {
            continue;
        };
        let path = format!("{section}.{key}");
        let before = problems.len();
        for (i, element) in value.as_array().into_iter().flatten().enumerate() {
            let one = Value::Array(vec![element.clone()]);
            if let Err(error) = try_section(section, single(key, &one)) {
                problems.push(problem(&format!("{path}[{i}]"), &error));
            }
        }
        if problems.len() == before {
            problems.push(problem(&path, &error));
        }
        unreadable.push(key.clone());
    }
    Unreadable::Keys(unreadable)
}

/// `server.cores`: which CPU cores get a shard.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Cores {
    /// Every core this process may run on.
    #[default]
    All,
    /// The first `n` usable cores.
    Count(usize),
    /// Exactly these CPU numbers.
    List(Vec<usize>),
}

/// Why a `cores` text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected \"all\", a count (4) or a CPU list (\"0-3,6\"; one core is \"5-5\")")]
pub struct CoresSyntax;

impl FromStr for Cores {
    type Err = CoresSyntax;

    /// Grammar (the runtime's `--cores`): `all` | a decimal count | a CPU list with `,` or
    /// `-` (`0-3,6`). A range's end is at most `CORE_ID_MAX`, so a list stays small.
    fn from_str(text: &str) -> Result<Cores, CoresSyntax> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("all") {
            return Ok(Cores::All);
        }
        if !text.contains([',', '-']) {
            return text.parse().map(Cores::Count).map_err(|_| CoresSyntax);
        }
        let mut cores = Vec::new();
        for item in text.split(',').map(str::trim) {
            let (first, last) = item.split_once('-').unwrap_or((item, item));
            let first: usize = first.trim().parse().map_err(|_| CoresSyntax)?;
            let last: usize = last.trim().parse().map_err(|_| CoresSyntax)?;
            if first > last || last > CORE_ID_MAX {
                return Err(CoresSyntax);
            }
            cores.extend(first..=last);
        }
        Ok(Cores::List(cores))
    }
}

impl fmt::Display for Cores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cores::All => f.write_str("all"),
            Cores::Count(n) => write!(f, "{n}"),
            Cores::List(cores) => {
                for (i, core) in cores.iter().enumerate() {
                    write!(f, "{}{core}", if i == 0 { "" } else { "," })?;
                }
                Ok(())
            }
        }
    }
}

struct CoresVisitor;

impl<'de> Visitor<'de> for CoresVisitor {
    type Value = Cores;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"all\", a count, a list of CPU numbers, or a CPU list string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Cores, E> {
        text.parse().map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Cores, E> {
        usize::try_from(n)
            .map(Cores::Count)
            .map_err(|_| E::custom(format!("a core count cannot be negative (got {n})")))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Cores, E> {
        usize::try_from(n)
            .map(Cores::Count)
            .map_err(|_| E::custom("core count too large"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Cores, A::Error> {
        let mut cores = Vec::new();
        while let Some(core) = seq.next_element::<usize>()? {
            if core > CORE_ID_MAX {
                let message = format!("CPU numbers go up to {CORE_ID_MAX} (got {core})");
                return Err(de::Error::custom(message));
            }
            cores.push(core);
        }
        Ok(Cores::List(cores))
    }
}

impl<'de> Deserialize<'de> for Cores {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cores, D::Error> {
        d.deserialize_any(CoresVisitor)
    }
}

impl Serialize for Cores {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Cores::All => s.serialize_str("all"),
            Cores::Count(n) => s.serialize_u64(*n as u64),
            Cores::List(cores) => s.collect_seq(cores),
        }
    }
}

/// A credential: readable through `expose`, and nowhere else. `Debug` and `Serialize`
/// print `[REDACTED]` (or `""` when unset), so a config can be logged or dumped safely.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that needs it (an auth check, a connect).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn shown(&self) -> &'static str {
        if self.0.is_empty() {
            ""
        } else {
            REDACTED
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({:?})", self.shown())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.shown())
    }
}

/// Paths as (lossy) UTF-8, so a non-UTF-8 path cannot make a summary fail.
pub(super) fn ser_path<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// Unset optional paths are `""` in the file, as documented there.
pub(super) fn ser_opt_path<S: Serializer>(path: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.as_deref().map_or("".into(), Path::to_string_lossy))
}

/// `""` reads as unset.
pub(super) fn de_opt_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let path = PathBuf::deserialize(d)?;
    Ok((!path.as_os_str().is_empty()).then_some(path))
}

pub(super) fn ser_opt_addr<S: Serializer>(
    addr: &Option<std::net::SocketAddr>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match addr {
        Some(addr) => s.collect_str(addr),
        None => s.serialize_str(""),
    }
}

/// `""` reads as off; anything else must be an `IP:port` address.
pub(super) fn de_opt_addr<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    optional_addr(&text).map_err(de::Error::custom)
}

/// `""` (or blanks) = `None`; else an `IP:port` address.
pub(super) fn optional_addr(text: &str) -> Result<Option<std::net::SocketAddr>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("expected an IP:port address or \"\" (off), got {text:?}"))
}

/// A URL with user-info and credential-bearing query parameters redacted.
pub fn redacted_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    redact_into(url, &mut out);
    out
}

/// `nats.url`: one or more server URLs, which may carry `user:password@` or a token in
/// the query. `Debug` and `Serialize` show it redacted; `as_str` gives it whole, to connect.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct NatsUrls(String);

impl NatsUrls {
    pub fn new(urls: impl Into<String>) -> NatsUrls {
        NatsUrls(urls.into())
    }

    /// The URLs with any credentials in them.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The comma-separated URLs, trimmed, empty entries skipped.
    pub fn servers(&self) -> impl Iterator<Item = &str> {
        self.0.split(',').map(str::trim).filter(|s| !s.is_empty())
    }

    /// The URLs with credentials replaced by `[REDACTED]`, safe to log.
    pub fn redacted(&self) -> String {
        redacted_url(&self.0)
    }
}

impl fmt::Debug for NatsUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NatsUrls({:?})", self.redacted())
    }
}

impl Serialize for NatsUrls {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}
