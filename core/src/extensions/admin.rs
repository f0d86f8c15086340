//! The admin answers about extensions (SPEC §8), behind `GET /admin/v1/…` and the NATS
//! subjects `beamline.router.v1.admin.get_extension_health` and
//! `beamline.router.v1.admin.get_pipeline_complexity`. Bodies in the admin API's style:
//! `{"ok":true, …}`, snake_case, built with serde derive (the admin path allocates).
//!
//! The latency budget is the worst case of the stages that would be called: each resolved
//! stage's `timeout_ms × (1 + retry)` with the effective (capped) retry; a stage that cannot
//! resolve makes no call and is listed as a warning instead.

use serde::Serialize;

use super::breakers::{ExtensionBreakers, ExtensionCounters};
use super::registry::{ExtensionKind, Registry, Unresolved, EXTENSION_RETRIES_MAX};
use crate::policy::{Policy, Stage, StageKind, STAGES_MAX, STAGES_PER_TYPE_MAX};

#[derive(Serialize)]
struct Health<'a> {
    ok: bool,
    extensions: Vec<HealthRow<'a>>,
    /// Stages naming ids the registry does not have.
    unregistered: &'a ExtensionCounters,
}

#[derive(Serialize)]
struct HealthRow<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    subject: &'a str,
    enabled: bool,
    timeout_ms: u32,
    retry: u32,
    breaker: &'static str,
    counters: ExtensionCounters,
}

/// Every registry entry in id order, with its breaker state at `now_ns` and its counters.
pub fn extension_health(registry: &Registry, breakers: &ExtensionBreakers, now_ns: u64) -> Vec<u8> {
    let extensions = registry
        .iter()
        .map(|e| HealthRow {
            id: &e.id,
            kind: e.kind.as_str(),
            subject: &e.subject,
            enabled: e.enabled,
            timeout_ms: e.timeout_ms,
            retry: e.retry.min(EXTENSION_RETRIES_MAX),
            breaker: breakers.state(&e.id, now_ns).unwrap_or("closed"),
            counters: breakers.counters(&e.id).copied().unwrap_or_default(),
        })
        .collect();
    let body = Health {
        ok: true,
        extensions,
        unregistered: breakers.unregistered(),
    };
    serde_json::to_vec(&body).expect("admin bodies have string keys")
}

#[derive(Serialize)]
struct Complexity<'a> {
    ok: bool,
    tenant: &'a str,
    policy_id: &'a str,
    stages: Counts,
    limits: Limits,
    /// Sum of `budget_ms` over the stages that would be called.
    latency_budget_ms: u64,
    extensions: Vec<StageRow<'a>>,
    warnings: Vec<String>,
}

#[derive(Serialize)]
struct Counts {
    pre: usize,
    validators: usize,
    post: usize,
    total: usize,
}

#[derive(Serialize)]
struct Limits {
    total_max: usize,
    per_type_max: usize,
}

#[derive(Serialize)]
struct StageRow<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    required: bool,
    /// `None` (null) when the stage cannot run.
    subject: Option<&'a str>,
    timeout_ms: Option<u32>,
    retry: Option<u32>,
    budget_ms: u64,
}

/// One policy's extension pipeline: stage counts against the limits, the worst-case
/// latency budget, and warnings about stages that cannot run or are cut back.
pub fn pipeline_complexity(policy: &Policy, registry: &Registry) -> Vec<u8> {
    let mut warnings = Vec::new();
    let mut rows = Vec::new();
    let kinds = [StageKind::Pre, StageKind::Validator, StageKind::Post];
    let stages = kinds.iter().flat_map(|k| stages_of(policy, *k).iter());
    for stage in stages {
        rows.push(stage_row(registry, stage, &mut warnings));
    }
    let latency_budget_ms = rows.iter().map(|r| r.budget_ms).sum();
    if let Some(timeout_ms) = policy.timeout_ms {
        if latency_budget_ms > u64::from(timeout_ms) {
            warnings.push(format!(
                "worst-case extension latency {latency_budget_ms} ms exceeds the policy's \
                 timeout_ms {timeout_ms}"
            ));
        }
    }
    let body = Complexity {
        ok: true,
        tenant: &policy.tenant,
        policy_id: &policy.id,
        stages: Counts {
            pre: policy.pre.len(),
            validators: policy.validators.len(),
            post: policy.post.len(),
            total: rows.len(),
        },
        limits: Limits {
            total_max: STAGES_MAX,
            per_type_max: STAGES_PER_TYPE_MAX,
        },
        latency_budget_ms,
        extensions: rows,
        warnings,
    };
    serde_json::to_vec(&body).expect("admin bodies have string keys")
}

fn stages_of(policy: &Policy, kind: StageKind) -> &[Stage] {
    match kind {
        StageKind::Pre => &policy.pre,
        StageKind::Validator => &policy.validators,
        StageKind::Post => &policy.post,
    }
}

fn stage_row<'a>(
    registry: &'a Registry,
    stage: &'a Stage,
    warnings: &mut Vec<String>,
) -> StageRow<'a> {
    let kind = ExtensionKind::of_stage(stage.kind).as_str();
    let mut row = StageRow {
        id: &stage.id,
        kind,
        required: stage.required,
        subject: None,
        timeout_ms: None,
        retry: None,
        budget_ms: 0,
    };
    match registry.resolve(stage) {
        Ok(resolved) => {
            let asked = stage.retry.unwrap_or(resolved.extension.retry);
            if asked > resolved.retry {
                warnings.push(format!(
                    "{kind} stage {}: retry {asked} is capped at {EXTENSION_RETRIES_MAX}",
                    stage.id
                ));
            }
            row.subject = Some(&resolved.extension.subject);
            row.timeout_ms = Some(resolved.timeout_ms);
            row.retry = Some(resolved.retry);
            row.budget_ms = resolved.budget_ms();
        }
        Err(why) => warnings.push(unresolved_warning(kind, stage, why)),
    }
    row
}

fn unresolved_warning(kind: &str, stage: &Stage, why: Unresolved) -> String {
    let effect = match (stage.required, why) {
        (false, _) => "skipped (optional)",
        (true, Unresolved::Disabled) => "fails requests with extension_unavailable",
        (true, _) => "fails requests with extension_not_found",
    };
    format!("{kind} stage {}: {why}; {effect}", stage.id)
}

#[cfg(test)]
#[path = "admin_tests.rs"]
mod tests;
