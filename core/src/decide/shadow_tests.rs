//! Shadow traffic in the decision (`shadow`): the share of decisions that get a shadow
//! matches the ratio under a fixed seed, a shadow is never the primary, `explain` says
//! why a shadow was or was not added.

use super::tests::{policy, provider, request};
use super::*;
use crate::policy::{Policy, ProviderIdx, RoutingTable, Shadow};

const NOW: Now = Now {
    mono_ns: 1_000_000_000,
    unix_ms: 1_700_000_000_000,
};

/// `providers` with `(provider index, ratio in ppm)` as the policy's shadow list.
fn shadowed(providers: Vec<crate::policy::Provider>, shadow: &[(u8, u32)]) -> Policy {
    let mut p = policy("acme", "default", providers);
    p.shadow = shadow
        .iter()
        .map(|&(i, ppm)| Shadow {
            provider: ProviderIdx(i),
            ppm,
        })
        .collect();
    p.check();
    p
}

struct Run {
    table: RoutingTable,
    state: ShardState,
}

impl Run {
    fn new(policy: Policy, seed: u64) -> Self {
        let table = RoutingTable::from_policies(vec![policy]).expect("table");
        let config = StateConfig {
            seed,
            ..StateConfig::default()
        };
        let state = ShardState::new(&table, config, 0);
        Run { table, state }
    }

    fn decide(&mut self, explain: bool) -> Decision {
        let mut req = request("acme", "default");
        req.explain = explain;
        decide(&self.table, &mut self.state, &req, NOW).expect("decided")
    }
}

/// Over 20 000 decisions with a fixed seed, a 10 % shadow is added to 10 % ± 3 points.
#[test]
fn shadow_share_matches_the_ratio() {
    let p = shadowed(
        vec![provider("openai", 100), provider("new_model", 0)],
        &[(1, 100_000)],
    );
    let mut run = Run::new(p, 11);
    let n = 20_000;
    let mut shadows = 0;
    for _ in 0..n {
        let d = run.decide(false);
        assert_eq!(d.provider, ProviderIdx(0));
        if let Some(s) = d.shadow {
            assert_eq!(s, ProviderIdx(1));
            shadows += 1;
        }
    }
    let share = f64::from(shadows) / f64::from(n);
    assert!((0.07..=0.13).contains(&share), "shadow share {share}");
}

/// Two entries share one draw: each gets its own ratio, never both at once.
#[test]
fn entries_partition_one_draw() {
    let p = shadowed(
        vec![
            provider("openai", 100),
            provider("new_model", 0),
            provider("other_model", 0),
        ],
        &[(1, 200_000), (2, 300_000)],
    );
    let mut run = Run::new(p, 5);
    let n = 20_000;
    let mut counts = [0u32; 3];
    for _ in 0..n {
        counts[run.decide(false).shadow.map_or(0, |s| s.get())] += 1;
    }
    let share = |c: u32| f64::from(c) / f64::from(n);
    assert!((0.17..=0.23).contains(&share(counts[1])), "{counts:?}");
    assert!((0.27..=0.33).contains(&share(counts[2])), "{counts:?}");
}

/// A shadow drawn equal to the primary is not added, and `explain` says so; otherwise
/// it is added and `explain` says that too.
#[test]
fn never_shadows_the_primary() {
    let p = shadowed(
        vec![provider("openai", 50), provider("anthropic", 50)],
        &[(1, 1_000_000)],
    );
    let mut run = Run::new(p, 3);
    let (mut on_openai, mut on_anthropic) = (0, 0);
    for _ in 0..2_000 {
        let d = run.decide(true);
        let steps = d.explanation.expect("explained").join("\n");
        if d.provider == ProviderIdx(1) {
            on_anthropic += 1;
            assert_eq!(d.shadow, None);
            assert!(steps.contains("no shadow: anthropic was drawn but is the primary"));
        } else {
            on_openai += 1;
            assert_eq!(d.shadow, Some(ProviderIdx(1)));
            assert!(
                steps.contains("shadow anthropic added (ratio 1)"),
                "{steps}"
            );
        }
    }
    assert!(on_openai > 0 && on_anthropic > 0);
}

/// A decision outside the ratios says why it has no shadow.
#[test]
fn explain_says_when_no_shadow_was_drawn() {
    let p = shadowed(
        vec![provider("openai", 100), provider("new_model", 0)],
        &[(1, 1)],
    );
    let mut run = Run::new(p, 9);
    let d = run.decide(true);
    assert_eq!(d.shadow, None);
    let steps = d.explanation.expect("explained");
    assert!(steps
        .iter()
        .any(|s| s.contains("fell outside the shadow ratios")));
}
