//! Every Beamline policy fixture loads and decides (SPEC §5: "The Beamline fixtures must
//! all load and decide"). The fixtures are read from `SHARDLINE_COMPAT_DIR` or from
//! `../shared/compat/beamline` beside the checkout; they are not copied into the project.

use std::borrow::Cow;
use std::path::PathBuf;

use shardline::contract::{Attempt, Constraints, DecideRequest, ErrorCode, Metadata, Reason};
use shardline::contract::{Scalar, Task};
use shardline::decide::{decide, Now, ShardState, StateConfig};
use shardline::policy::{parse_policy, Policy, RoutingTable};

fn compat_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("SHARDLINE_COMPAT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/compat/beamline")
        });
    dir.join("policies").is_dir().then_some(dir)
}

fn load() -> Option<Vec<Policy>> {
    let dir = compat_dir()?.join("policies");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let policies = files
        .iter()
        .map(|f| {
            let id = f.file_stem().unwrap().to_str().unwrap();
            let bytes = std::fs::read(f).expect("read fixture");
            parse_policy("beamline", id, &f.display().to_string(), &bytes)
                .unwrap_or_else(|e| panic!("{} does not load: {e:?}", f.display()))
        })
        .collect();
    Some(policies)
}

fn request<'a>(policy: &'a str, attempt: Option<Attempt<'a>>) -> DecideRequest<'a> {
    DecideRequest {
        request_id: Cow::Borrowed("compat-1"),
        tenant_id: Cow::Borrowed("beamline"),
        trace_id: None,
        traceparent: None,
        task: Task {
            kind: "chat".into(),
            payload_ref: Some("p".into()),
            payload: None,
        },
        policy_id: Cow::Borrowed(policy),
        constraints: Constraints::default(),
        metadata: Metadata {
            entries: vec![("user_id".into(), Scalar::Str("u-42".into()))],
        },
        attempt,
        push_assignment: false,
        assignment_subject: None,
        options: None,
        deadline_unix_ms: None,
        correlation: None,
        idempotency_key: None,
        explain: true,
    }
}

/// A policy whose required extension cannot run (no extension transport here) must say
/// `extension_unavailable`; every other fixture must choose one of its providers.
#[test]
fn every_beamline_fixture_loads_and_decides() {
    let Some(policies) = load() else {
        println!("Beamline fixtures not found (set SHARDLINE_COMPAT_DIR); nothing to check");
        return;
    };
    let count = policies.len();
    println!("loaded {count} Beamline policy fixtures");
    assert!(count >= 13, "expected the 13 CP1 fixtures, found {count}");
    let blocking: Vec<(String, bool)> = policies
        .iter()
        .map(|p| {
            let required = p
                .pre
                .iter()
                .chain(&p.validators)
                .chain(&p.post)
                .any(|s| s.required);
            (p.id.to_string(), required)
        })
        .collect();
    let table = RoutingTable::from_policies(policies).expect("table");
    let mut state = ShardState::new(&table, StateConfig::default(), 0);
    let now = Now {
        mono_ns: 1,
        unix_ms: 1,
    };
    for (id, required) in &blocking {
        let outcome = decide(&table, &mut state, &request(id, None), now);
        match (outcome, required) {
            (Err(e), true) => assert_eq!(e.code(), ErrorCode::ExtensionUnavailable, "{id}"),
            (Ok(d), false) => {
                let name = &table.policy(d.slot).provider(d.provider).name;
                println!("{id}: {name} ({})", d.reason.as_str());
                assert!(
                    matches!(d.reason, Reason::Weighted | Reason::Sticky),
                    "{id}"
                );
            }
            (other, _) => panic!("{id}: unexpected {other:?}"),
        }
    }
}

/// Beamline's retry-then-fallback fixtures behave as written: `complex_fallbacks` retries
/// a timeout three times, then goes to anthropic.
#[test]
fn beamline_fallback_chain() {
    let Some(policies) = load() else { return };
    let table = RoutingTable::from_policies(policies).expect("table");
    let mut state = ShardState::new(&table, StateConfig::default(), 0);
    let now = Now {
        mono_ns: 1,
        unix_ms: 1,
    };
    let mut pick = |count, status| {
        let attempt = Attempt {
            previous_provider: "openai".into(),
            status,
            count,
        };
        let d = decide(
            &table,
            &mut state,
            &request("complex_fallbacks", Some(attempt)),
            now,
        )
        .expect("decision");
        (
            table.policy(d.slot).provider(d.provider).name.to_string(),
            d.reason,
        )
    };
    assert_eq!(pick(3, "timeout".into()), ("openai".into(), Reason::Retry));
    assert_eq!(
        pick(4, "timeout".into()),
        ("anthropic".into(), Reason::Fallback)
    );
    assert_eq!(pick(3, "503".into()), ("cohere".into(), Reason::Fallback));
    assert_eq!(
        pick(2, "429".into()),
        ("local_llm".into(), Reason::Fallback)
    );
}
