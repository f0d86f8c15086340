//! Shadow traffic (`shadow [{provider, ratio}]`, SPEC §12): after the primary is chosen,
//! a share of decisions also names a shadow provider, to which the gateway (or the
//! assignment publisher) sends a copy of the call so a candidate provider can be judged
//! on real traffic.
//!
//! Invariants: at most one shadow per decision (the policy's ratios add up to ≤ 1, so one
//! draw partitions the unit interval); a shadow is never the primary (then none is added);
//! a policy without `shadow` draws nothing, so its decisions and the random sequence of
//! the weighted draw are exactly what they were. A shadow is not a candidate: its circuit,
//! limits and constraints are not consulted, because its call is a copy whose outcome
//! steers nothing (its results are counted apart, `ExecResult::shadow`).
//!
//! Why the engine's seeded generator and not a hash of the request id: tests need a fixed
//! seed to check the share, and a gateway's retry of a request need not get the same copy.

use super::rng::Rng;
use super::select::explain;
use crate::policy::{Policy, ProviderIdx, SHADOW_PPM_FULL};

/// The shadow for a decision whose primary is `primary`, if one is drawn.
pub(super) fn draw(
    policy: &Policy,
    primary: ProviderIdx,
    rng: &mut Rng,
    steps: &mut Option<Vec<String>>,
) -> Option<ProviderIdx> {
    if policy.shadow.is_empty() {
        return None;
    }
    let mut point = rng.below(u64::from(SHADOW_PPM_FULL));
    let Some(drawn) = policy.shadow.iter().find(|s| {
        let hit = point < u64::from(s.ppm);
        point = point.saturating_sub(u64::from(s.ppm));
        hit
    }) else {
        explain!(
            steps,
            "no shadow: this decision fell outside the shadow ratios"
        );
        return None;
    };
    let name = &policy.provider(drawn.provider).name;
    if drawn.provider == primary {
        explain!(steps, "no shadow: {name} was drawn but is the primary");
        return None;
    }
    let share = f64::from(drawn.ppm) / f64::from(SHADOW_PPM_FULL);
    explain!(steps, "shadow {name} added (ratio {share})");
    Some(drawn.provider)
}
