//! The extension registry: one JSON file per extension in `server.extensions_dir`, in
//! Beamline's format, loaded once at start (and on reload) into an immutable, id-sorted
//! table; and the resolution of a policy's stage against it.
//!
//! Strict like policies (`core/src/policy/parse.rs`): unknown keys, duplicate keys, duplicate
//! ids and out-of-range values are errors, each reported with its file and JSON path, all
//! at once. A misspelt `"timeout_m": 50` must not load as the default timeout. Problems use
//! the policy documents' `PolicyError` shape (`file: $.path: message`) so that `config
//! check` and the admin API print both kinds of document alike.
//!
//! Why the entries are sorted by id and not hashed: the registry is small (at most
//! `EXTENSIONS_MAX`), a binary search is a handful of comparisons, and id order is the
//! order every listing (health, `config check`) wants.

use std::borrow::Cow;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde_json::value::RawValue;

use crate::contract::is_nats_subject;
use crate::decide::StageOutcome;
use crate::policy::json::{
    check_structure, expected, parse_root, shown, string, Json, Obj, Problems,
};
use crate::policy::{PolicyError, Stage, StageKind, NAME_CHARS_MAX, RETRIES_MAX, TIMEOUT_MS_MAX};

/// Registry entries (files) in one directory.
pub const EXTENSIONS_MAX: usize = 256;
/// One registry file, in bytes.
pub const EXTENSION_FILE_BYTES_MAX: usize = 64 * 1024;
/// An entry's `timeout_ms` (the same range as a stage's override, Beamline's schema).
pub const EXTENSION_TIMEOUT_MS_MAX: u32 = TIMEOUT_MS_MAX;
/// An entry's `retry` as written (Beamline's range for a stage's override).
pub const EXTENSION_RETRY_FIELD_MAX: u32 = RETRIES_MAX;
/// Retries actually made after timeouts, whatever the entry or the stage asks for: each
/// one costs a full timeout, and four calls to one stage is already a slow request.
pub const EXTENSION_RETRIES_MAX: u32 = 3;
/// An entry's `subject`, in bytes (NATS' practical subject length).
pub const SUBJECT_BYTES_MAX: usize = 256;

const _: () = assert!(EXTENSION_RETRIES_MAX <= EXTENSION_RETRY_FIELD_MAX);

const KEYS: &[&str] = &[
    "id",
    "type",
    "subject",
    "timeout_ms",
    "retry",
    "enabled",
    "config",
    "metadata",
];

/// What an extension is for; `Provider` entries are listed but never run as stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtensionKind {
    Pre,
    Validator,
    Post,
    Provider,
}

impl ExtensionKind {
    /// The registry's `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ExtensionKind::Pre => "pre",
            ExtensionKind::Validator => "validator",
            ExtensionKind::Post => "post",
            ExtensionKind::Provider => "provider",
        }
    }

    /// The entry kind a policy stage of `kind` must name.
    pub fn of_stage(kind: StageKind) -> Self {
        match kind {
            StageKind::Pre => ExtensionKind::Pre,
            StageKind::Validator => ExtensionKind::Validator,
            StageKind::Post => ExtensionKind::Post,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "pre" => Some(ExtensionKind::Pre),
            "validator" => Some(ExtensionKind::Validator),
            "post" => Some(ExtensionKind::Post),
            "provider" => Some(ExtensionKind::Provider),
            _ => None,
        }
    }
}

impl fmt::Display for ExtensionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One registry entry.
#[derive(Debug, Clone)]
pub struct Extension {
    /// `^[a-z0-9_]+$`, as a policy stage's `id` must be.
    pub id: Box<str>,
    pub kind: ExtensionKind,
    /// A publishable NATS subject (no wildcards).
    pub subject: Box<str>,
    pub timeout_ms: u32,
    /// As written (0 to `EXTENSION_RETRY_FIELD_MAX`); `resolve` caps it.
    pub retry: u32,
    pub enabled: bool,
    /// A JSON object (`{}` when absent), sent to the extension merged with the stage's.
    pub config: Box<RawValue>,
    /// A JSON object (`{}` when absent): descriptive only, never sent.
    pub metadata: Box<RawValue>,
    /// The file the entry came from, for messages.
    pub source: Box<str>,
}

/// Why a directory did not load.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The directory exists but cannot be listed, or a file in it cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// More `.json` files than `EXTENSIONS_MAX`.
    #[error("{}: more than {EXTENSIONS_MAX} extension files", dir.display())]
    TooMany { dir: PathBuf },
    /// Files that are not valid entries, or ids used twice: every problem, each naming
    /// its file and field.
    #[error("{}", ProblemList(problems))]
    Invalid { problems: Vec<PolicyError> },
}

struct ProblemList<'p>(&'p [PolicyError]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Why a policy's stage cannot run; `outcome` is what the engine is told instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    /// No entry has the stage's id → `NotFound` (`extension_not_found` when required).
    #[error("not in the extension registry")]
    NotFound,
    /// The entry has `enabled: false` → `Unavailable` (`extension_unavailable` when
    /// required): it exists but is switched off, which is an operating state, not a typo.
    #[error("disabled in the extension registry")]
    Disabled,
    /// The entry is of another type (a `pre` stage naming a validator, or any stage naming
    /// a provider) → `NotFound`: there is no extension of the stage's type with that id.
    #[error("the registry entry is a {entry} extension, not a {stage} one")]
    KindMismatch {
        stage: ExtensionKind,
        entry: ExtensionKind,
    },
}

impl Unresolved {
    /// The outcome to apply to the engine for a stage that cannot run.
    pub fn outcome(self) -> StageOutcome {
        match self {
            Unresolved::NotFound | Unresolved::KindMismatch { .. } => StageOutcome::NotFound,
            Unresolved::Disabled => StageOutcome::Unavailable,
        }
    }
}

/// A stage ready to call: the registry entry with the stage's overrides applied.
#[derive(Debug, Clone)]
pub struct Resolved<'r> {
    pub extension: &'r Extension,
    /// The stage's `timeout_ms`, else the entry's.
    pub timeout_ms: u32,
    /// The stage's `retry`, else the entry's, at most `EXTENSION_RETRIES_MAX`.
    pub retry: u32,
    /// The entry's `config` with the stage's top-level keys over it.
    pub config: Cow<'r, RawValue>,
}

impl Resolved<'_> {
    pub fn subject(&self) -> &str {
        &self.extension.subject
    }

    /// The worst-case time the stage can take: every attempt timing out.
    pub fn budget_ms(&self) -> u64 {
        u64::from(self.timeout_ms) * (1 + u64::from(self.retry))
    }
}

/// The loaded registry: entries sorted by id, ids unique.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    entries: Box<[Extension]>,
}

impl Registry {
    /// Loads every `*.json` file of `dir` (not recursively; other files and names starting
    /// with `.` are ignored). A missing directory is an empty registry: extensions are
    /// optional, and a policy naming one then gets `extension_not_found`.
    pub fn load_dir(dir: &Path) -> Result<Registry, RegistryError> {
        let listing = match fs::read_dir(dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Registry::default()),
            Err(source) => {
                let path = dir.to_owned();
                return Err(RegistryError::Io { path, source });
            }
        };
        let files = list_files(dir, listing)?;
        if files.len() > EXTENSIONS_MAX {
            return Err(RegistryError::TooMany {
                dir: dir.to_owned(),
            });
        }
        let mut documents = Vec::with_capacity(files.len());
        for path in files {
            let bytes = read_bounded(&path).map_err(|source| RegistryError::Io {
                path: path.clone(),
                source,
            })?;
            documents.push((path.display().to_string(), bytes));
        }
        Registry::from_documents(documents.iter().map(|(s, b)| (s.as_str(), b.as_slice())))
    }

    /// Builds a registry from `(source name, bytes)` documents; no I/O.
    pub fn from_documents<'d>(
        documents: impl IntoIterator<Item = (&'d str, &'d [u8])>,
    ) -> Result<Registry, RegistryError> {
        let mut problems = Vec::new();
        let mut entries: Vec<Extension> = Vec::new();
        for (i, (source, bytes)) in documents.into_iter().enumerate() {
            if i == EXTENSIONS_MAX {
                problems.push(PolicyError {
                    source: source.into(),
                    path: "$".into(),
                    message: format!("more than {EXTENSIONS_MAX} extensions; not loaded"),
                });
                break;
            }
            match parse_extension(source, bytes) {
                Ok(ext) => entries.push(ext),
                Err(list) => problems.extend(list),
            }
        }
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        for pair in entries.windows(2) {
            if pair[0].id == pair[1].id {
                problems.push(PolicyError {
                    source: pair[1].source.to_string(),
                    path: "$.id".into(),
                    message: format!(
                        "duplicate extension id {:?} (also in {})",
                        shown(&pair[1].id),
                        pair[0].source
                    ),
                });
            }
        }
        if !problems.is_empty() {
            return Err(RegistryError::Invalid { problems });
        }
        Ok(Registry {
            entries: entries.into(),
        })
    }

    pub fn get(&self, id: &str) -> Option<&Extension> {
        self.index_of(id).map(|i| &self.entries[i])
    }

    /// The entry's position in id order (`ExtensionBreakers` are indexed alike).
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.entries.binary_search_by(|e| (*e.id).cmp(id)).ok()
    }

    /// Entries in id order.
    pub fn iter(&self) -> std::slice::Iter<'_, Extension> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The stage's entry with its overrides, or why it cannot run. Allocates only when both
    /// the entry and the stage carry a non-empty `config` (the merge).
    pub fn resolve(&self, stage: &Stage) -> Result<Resolved<'_>, Unresolved> {
        let extension = self.get(&stage.id).ok_or(Unresolved::NotFound)?;
        let wanted = ExtensionKind::of_stage(stage.kind);
        if extension.kind != wanted {
            return Err(Unresolved::KindMismatch {
                stage: wanted,
                entry: extension.kind,
            });
        }
        if !extension.enabled {
            return Err(Unresolved::Disabled);
        }
        let retry = stage.retry.unwrap_or(extension.retry);
        Ok(Resolved {
            extension,
            timeout_ms: stage.timeout_ms.unwrap_or(extension.timeout_ms),
            retry: retry.min(EXTENSION_RETRIES_MAX),
            config: merge_config(&extension.config, stage.config.as_deref()),
        })
    }
}

/// Shallow merge: a stage's key replaces the entry's key whole. Why not a deep merge (or
/// RFC 7386): the operator reading a policy then sees exactly the value the extension gets
/// for each key it overrides, without working out a recursive merge in their head.
fn merge_config<'r>(base: &'r RawValue, over: Option<&RawValue>) -> Cow<'r, RawValue> {
    let Some(over) = over.filter(|o| !is_empty_object(o)) else {
        return Cow::Borrowed(base);
    };
    if is_empty_object(base) {
        return Cow::Owned(over.to_owned());
    }
    type Map = serde_json::Map<String, serde_json::Value>;
    let mut merged: Map = serde_json::from_str(base.get()).expect("registry config is an object");
    let over: Map = serde_json::from_str(over.get()).expect("stage config is an object");
    merged.extend(over);
    Cow::Owned(serde_json::value::to_raw_value(&merged).expect("a JSON map serializes"))
}

fn is_empty_object(v: &RawValue) -> bool {
    let s = v.get().trim();
    s.starts_with('{') && s[1..].trim_start() == "}"
}

fn list_files(dir: &Path, listing: fs::ReadDir) -> Result<Vec<PathBuf>, RegistryError> {
    let mut files = Vec::new();
    for entry in listing {
        let path = entry
            .map_err(|source| RegistryError::Io {
                path: dir.to_owned(),
                source,
            })?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(".");
        if name.starts_with('.') || path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        // Follows symlinks, as the policy directory does.
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => files.push(path),
            Ok(_) => {}
            Err(source) => return Err(RegistryError::Io { path, source }),
        }
        if files.len() > EXTENSIONS_MAX {
            break;
        }
    }
    files.sort();
    Ok(files)
}

/// Reads at most one byte past the limit, so that `parse_extension` reports the size.
fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(EXTENSION_FILE_BYTES_MAX as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Parses one registry file; `source` names it in messages. Every problem is returned.
pub fn parse_extension(source: &str, bytes: &[u8]) -> Result<Extension, Vec<PolicyError>> {
    let mut problems = Problems::new(source);
    let Some(root) = read_document(&mut problems, bytes) else {
        return Err(problems.into_vec());
    };
    check_structure(&mut problems, "$", &root, 0);
    let ext = Obj::read(&mut problems, "$", &root, KEYS).and_then(|o| compile(&mut problems, o));
    match ext {
        Some(mut ext) if problems.is_empty() => {
            ext.source = source.into();
            Ok(ext)
        }
        _ => Err(problems.into_vec()),
    }
}

fn read_document(problems: &mut Problems, bytes: &[u8]) -> Option<Json> {
    if bytes.len() > EXTENSION_FILE_BYTES_MAX {
        problems.add("$", format!("more than {EXTENSION_FILE_BYTES_MAX} bytes"));
        return None;
    }
    parse_root(problems, bytes)
}

fn compile(problems: &mut Problems, o: Obj) -> Option<Extension> {
    let id = read_id(problems, o);
    let kind = read_kind(problems, o);
    let subject = read_subject(problems, o);
    let timeout_ms = o.required(problems, "timeout_ms").and(o.int(
        problems,
        "timeout_ms",
        1,
        EXTENSION_TIMEOUT_MS_MAX.into(),
    ));
    let retry = o.int(problems, "retry", 0, EXTENSION_RETRY_FIELD_MAX.into());
    let enabled = o.boolean(problems, "enabled");
    let config = read_object(problems, o, "config");
    let metadata = read_object(problems, o, "metadata");
    Some(Extension {
        id: id?.into(),
        kind: kind?,
        subject: subject?.into(),
        timeout_ms: timeout_ms? as u32,
        retry: retry.map_or(0, |r| r as u32),
        enabled: enabled.unwrap_or(true),
        config: config?,
        metadata: metadata?,
        source: "".into(),
    })
}

fn read_id<'j>(problems: &mut Problems, o: Obj<'j, '_>) -> Option<&'j str> {
    let path = o.path_of("id");
    let id = o
        .required(problems, "id")
        .and_then(|v| string(problems, &path, v))?;
    let ok_byte = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    if (1..=NAME_CHARS_MAX).contains(&id.len()) && id.bytes().all(ok_byte) {
        return Some(id);
    }
    let message = format!(
        "extension id {:?} must match ^[a-z0-9_]+$ (1 to {NAME_CHARS_MAX} characters)",
        shown(id)
    );
    problems.add(&path, message);
    None
}

fn read_kind(problems: &mut Problems, o: Obj) -> Option<ExtensionKind> {
    let path = o.path_of("type");
    let s = o
        .required(problems, "type")
        .and_then(|v| string(problems, &path, v))?;
    let kind = ExtensionKind::parse(s);
    if kind.is_none() {
        let message = format!(
            "unknown type {:?} (pre, validator, post, provider)",
            shown(s)
        );
        problems.add(&path, message);
    }
    kind
}

fn read_subject<'j>(problems: &mut Problems, o: Obj<'j, '_>) -> Option<&'j str> {
    let path = o.path_of("subject");
    let s = o
        .required(problems, "subject")
        .and_then(|v| string(problems, &path, v))?;
    if s.len() > SUBJECT_BYTES_MAX {
        let message = format!("{} bytes; at most {SUBJECT_BYTES_MAX}", s.len());
        problems.add(&path, message);
        return None;
    }
    if !is_nats_subject(s) {
        let message = format!(
            "{:?} is not a NATS subject one can publish to (dot-separated tokens, \
             no spaces, no * or >)",
            shown(s)
        );
        problems.add(&path, message);
        return None;
    }
    Some(s)
}

/// An optional object member kept raw; `{}` when absent.
fn read_object(problems: &mut Problems, o: Obj, key: &str) -> Option<Box<RawValue>> {
    let Some(v) = o.get(key) else {
        return Some(RawValue::from_string("{}".into()).expect("{} is JSON"));
    };
    if !matches!(v, Json::Obj(_)) {
        expected(problems, &o.path_of(key), "an object", v);
        return None;
    }
    match serde_json::value::to_raw_value(v) {
        Ok(raw) => Some(raw),
        Err(e) => {
            problems.add(&o.path_of(key), format!("cannot keep {key}: {e}"));
            None
        }
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
