use std::path::PathBuf;

use super::*;
use crate::policy::{OnFail, Stage, StageKind};

const PRE: &str = r#"{"id":"normalize_text","type":"pre","subject":"ext.pre.normalize.v1",
    "timeout_ms":100,"retry":1,"enabled":true,"config":{"lowercase":false,"locale":"en"},
    "metadata":{"version":"v1"}}"#;

fn one(doc: &str) -> Result<Extension, Vec<String>> {
    parse_extension("x.json", doc.as_bytes())
        .map_err(|list| list.iter().map(ToString::to_string).collect())
}

fn registry(docs: &[(&str, &str)]) -> Registry {
    Registry::from_documents(docs.iter().map(|(s, d)| (*s, d.as_bytes()))).unwrap()
}

fn entry(id: &str, kind: &str, extra: &str) -> String {
    format!(r#"{{"id":"{id}","type":"{kind}","subject":"ext.{id}","timeout_ms":200{extra}}}"#)
}

fn stage(id: &str, kind: StageKind) -> Stage {
    Stage {
        id: id.into(),
        kind,
        required: true,
        on_fail: OnFail::Block,
        config: None,
        timeout_ms: None,
        retry: None,
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shardline-ext-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The Beamline fixtures, from `SHARDLINE_COMPAT_DIR` or beside the checkout (as
/// `tests/compat_beamline.rs` finds them); `None` when neither exists.
fn beamline_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("SHARDLINE_COMPAT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/compat/beamline")
        });
    let dir = dir.join("extensions");
    dir.is_dir().then_some(dir)
}

/// Every Beamline extension fixture loads, with its fields as written.
#[test]
fn beamline_fixtures_load() {
    let Some(dir) = beamline_dir() else {
        println!("Beamline fixtures not found (set SHARDLINE_COMPAT_DIR); nothing to check");
        return;
    };
    let reg = Registry::load_dir(&dir).unwrap();
    let ids: Vec<&str> = reg.iter().map(|e| &*e.id).collect();
    assert_eq!(
        ids,
        ["mask_pii", "normalize_text", "pii_guard", "test_provider"]
    );
    let provider = reg.get("test_provider").unwrap();
    assert_eq!(provider.kind, ExtensionKind::Provider);
    assert_eq!(&*provider.subject, "beamline.provider.test_provider.v1");
    assert_eq!((provider.timeout_ms, provider.retry), (5000, 1));
    let guard = reg.get("pii_guard").unwrap();
    assert_eq!(guard.kind, ExtensionKind::Validator);
    assert!(guard.enabled);
    assert_eq!(guard.config.get(), "{}");
    assert!(guard.metadata.get().contains("PII detection validator"));
}

/// The bundled registry is Beamline's four entries and loads as is.
#[test]
fn bundled_registry_loads() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/extensions");
    let reg = Registry::load_dir(&dir).unwrap();
    assert_eq!(reg.len(), 4);
    assert_eq!(reg.get("normalize_text").unwrap().kind, ExtensionKind::Pre);
    assert_eq!(reg.get("mask_pii").unwrap().kind, ExtensionKind::Post);
}

/// A missing directory is an empty registry; other files and dot-files are ignored.
#[test]
fn directory_rules() {
    let missing = std::env::temp_dir().join("shardline-ext-does-not-exist");
    assert!(Registry::load_dir(&missing).unwrap().is_empty());
    let dir = temp_dir("rules");
    std::fs::write(dir.join("a.json"), entry("alpha", "pre", "")).unwrap();
    std::fs::write(dir.join(".b.json"), "not json").unwrap();
    std::fs::write(dir.join("README.md"), "not json").unwrap();
    std::fs::create_dir(dir.join("sub.json")).unwrap();
    let reg = Registry::load_dir(&dir).unwrap();
    assert_eq!(reg.iter().map(|e| &*e.id).collect::<Vec<_>>(), ["alpha"]);
    assert!(reg.get("alpha").unwrap().source.ends_with("a.json"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Defaults: retry 0, enabled, empty config and metadata.
#[test]
fn optional_fields_default() {
    let ext = one(r#"{"id":"a","type":"post","subject":"s.a","timeout_ms":5}"#).unwrap();
    assert_eq!((ext.retry, ext.enabled), (0, true));
    assert_eq!((ext.config.get(), ext.metadata.get()), ("{}", "{}"));
    let ext = one(PRE).unwrap();
    assert_eq!((ext.timeout_ms, ext.retry), (100, 1));
}

/// Each bad file is refused with its file, JSON path and the exact reason.
#[test]
fn bad_files_name_file_and_field() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"id":"a","type":"pre","subject":"s","timeout_ms":5,"timout":1}"#,
            "x.json: $.timout: unknown key (known: id, type, subject, timeout_ms, retry, \
             enabled, config, metadata)",
        ),
        (
            r#"{"id":"a","type":"pre","timeout_ms":5}"#,
            "x.json: $.subject: missing (required)",
        ),
        (
            r#"{"id":"a","type":"pre","subject":"s"}"#,
            "x.json: $.timeout_ms: missing (required)",
        ),
        (
            r#"{"id":"a","type":"router","subject":"s","timeout_ms":5}"#,
            r#"x.json: $.type: unknown type "router" (pre, validator, post, provider)"#,
        ),
        (
            r#"{"id":"A-1","type":"pre","subject":"s","timeout_ms":5}"#,
            r#"x.json: $.id: extension id "A-1" must match ^[a-z0-9_]+$ (1 to 255 characters)"#,
        ),
        (
            r#"{"id":"a","type":"pre","subject":"s.*","timeout_ms":5}"#,
            concat!(
                r#"x.json: $.subject: "s.*" is not a NATS subject one can publish to "#,
                "(dot-separated tokens, no spaces, no * or >)"
            ),
        ),
        (
            r#"{"id":"a","type":"pre","subject":"s","timeout_ms":0}"#,
            "x.json: $.timeout_ms: must be from 1 to 300000, got 0",
        ),
        (
            r#"{"id":"a","type":"pre","subject":"s","timeout_ms":5,"retry":11}"#,
            "x.json: $.retry: must be from 0 to 10, got 11",
        ),
        (
            r#"{"id":"a","type":"pre","subject":"s","timeout_ms":5,"enabled":"yes"}"#,
            "x.json: $.enabled: expected true or false, got a string",
        ),
        (
            r#"{"id":"a","type":"pre","subject":"s","timeout_ms":5,"config":[]}"#,
            "x.json: $.config: expected an object, got an array",
        ),
        (
            r#"{"id":"a","id":"b","type":"pre","subject":"s","timeout_ms":5}"#,
            "x.json: $.id: duplicate key",
        ),
        ("[1]", "x.json: $: expected an object, got an array"),
    ];
    for (doc, want) in cases {
        let got = one(doc).unwrap_err();
        assert_eq!(got, [*want], "for {doc}");
    }
    let got = one("{").unwrap_err();
    assert!(
        got[0].starts_with("x.json: $: not valid JSON: EOF"),
        "{got:?}"
    );
    let long = format!(
        r#"{{"id":"a","type":"pre","subject":"s","timeout_ms":5,"config":{{"x":"{}"}}}}"#,
        "y".repeat(EXTENSION_FILE_BYTES_MAX)
    );
    assert_eq!(
        one(&long).unwrap_err(),
        ["x.json: $: more than 65536 bytes"]
    );
    let subject = "s".repeat(SUBJECT_BYTES_MAX + 1);
    let doc = format!(r#"{{"id":"a","type":"pre","subject":"{subject}","timeout_ms":5}}"#);
    assert_eq!(
        one(&doc).unwrap_err(),
        ["x.json: $.subject: 257 bytes; at most 256"]
    );
}

/// All problems of a file are reported at once.
#[test]
fn every_problem_at_once() {
    let got = one(r#"{"id":"","type":1,"subject":"a b","timeout_ms":-1}"#).unwrap_err();
    assert_eq!(got.len(), 4, "{got:?}");
}

/// The same id in two files is refused, naming both; problems of several files add up.
#[test]
fn duplicate_ids_and_several_files() {
    let a = entry("alpha", "pre", "");
    let b = entry("alpha", "post", "");
    let c = r#"{"id":"gamma"}"#;
    let docs = [
        ("a.json", a.as_bytes()),
        ("b.json", b.as_bytes()),
        ("c.json", c.as_bytes()),
    ];
    let Err(RegistryError::Invalid { problems }) = Registry::from_documents(docs) else {
        panic!("loaded");
    };
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "c.json: $.type: missing (required)",
            "c.json: $.subject: missing (required)",
            "c.json: $.timeout_ms: missing (required)",
            r#"b.json: $.id: duplicate extension id "alpha" (also in a.json)"#,
        ]
    );
    let err = Registry::from_documents(docs).unwrap_err().to_string();
    assert_eq!(err.lines().count(), 4);
}

/// More entries than `EXTENSIONS_MAX` are refused.
#[test]
fn too_many_entries() {
    let docs: Vec<String> = (0..=EXTENSIONS_MAX)
        .map(|i| entry(&format!("e{i}"), "pre", ""))
        .collect();
    let err = Registry::from_documents(docs.iter().map(|d| ("d.json", d.as_bytes())));
    let text = err.unwrap_err().to_string();
    assert_eq!(text, "d.json: $: more than 256 extensions; not loaded");
}

/// Registry values apply when the stage overrides nothing; its overrides win otherwise,
/// and the retry is capped.
#[test]
fn resolve_overrides() {
    let reg = registry(&[("a.json", PRE)]);
    let mut s = stage("normalize_text", StageKind::Pre);
    let r = reg.resolve(&s).unwrap();
    assert_eq!(
        (r.subject(), r.timeout_ms, r.retry),
        ("ext.pre.normalize.v1", 100, 1)
    );
    assert_eq!(r.config.get(), r#"{"lowercase":false,"locale":"en"}"#);
    assert!(matches!(r.config, Cow::Borrowed(_)));
    assert_eq!(r.budget_ms(), 200);

    s.timeout_ms = Some(40);
    s.retry = Some(10);
    s.config = Some(RawValue::from_string(r#"{"lowercase":true,"trim":1}"#.into()).unwrap());
    let r = reg.resolve(&s).unwrap();
    assert_eq!((r.timeout_ms, r.retry), (40, EXTENSION_RETRIES_MAX));
    assert_eq!(
        r.config.get(),
        r#"{"locale":"en","lowercase":true,"trim":1}"#
    );
}

/// A stage config over an empty registry config is passed through untouched.
#[test]
fn resolve_config_without_registry_config() {
    let reg = registry(&[("a.json", &entry("a", "post", ""))]);
    let mut s = stage("a", StageKind::Post);
    s.config = Some(RawValue::from_string(r#"{"mask_email":true}"#.into()).unwrap());
    assert_eq!(
        reg.resolve(&s).unwrap().config.get(),
        r#"{"mask_email":true}"#
    );
    s.config = Some(RawValue::from_string("{}".into()).unwrap());
    assert_eq!(reg.resolve(&s).unwrap().config.get(), "{}");
}

/// Not found, disabled and a kind mismatch, and the outcome each maps to.
#[test]
fn resolve_failures() {
    let off = entry("off", "validator", r#","enabled":false"#);
    let reg = registry(&[
        ("v.json", &entry("guard", "validator", "")),
        ("p.json", &entry("prov", "provider", "")),
        ("o.json", &off),
    ]);
    let missing = reg.resolve(&stage("nope", StageKind::Pre)).unwrap_err();
    assert_eq!(missing, Unresolved::NotFound);
    assert_eq!(missing.outcome(), StageOutcome::NotFound);

    let disabled = reg
        .resolve(&stage("off", StageKind::Validator))
        .unwrap_err();
    assert_eq!(disabled, Unresolved::Disabled);
    assert_eq!(disabled.outcome(), StageOutcome::Unavailable);

    let wrong = reg.resolve(&stage("guard", StageKind::Pre)).unwrap_err();
    assert_eq!(
        wrong.to_string(),
        "the registry entry is a validator extension, not a pre one"
    );
    assert_eq!(wrong.outcome(), StageOutcome::NotFound);
    let provider = reg.resolve(&stage("prov", StageKind::Post)).unwrap_err();
    assert!(matches!(
        provider,
        Unresolved::KindMismatch {
            entry: ExtensionKind::Provider,
            ..
        }
    ));

    assert!(reg.resolve(&stage("guard", StageKind::Validator)).is_ok());
    assert_eq!(reg.index_of("prov"), Some(2));
}

/// A file that cannot be read is an I/O error naming that file, not the directory.
#[test]
fn unreadable_file_is_named() {
    let dir = temp_dir("dangling");
    std::os::unix::fs::symlink(dir.join("gone.json"), dir.join("x.json")).unwrap();
    let err = Registry::load_dir(&dir).unwrap_err();
    let RegistryError::Io { path, .. } = &err else {
        panic!("{err}");
    };
    assert!(path.ends_with("x.json"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
