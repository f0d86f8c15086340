//! Policy budgets in the decision (`budget`): admission refuses a request once a window
//! holds its limit and resets with the window; a `metadata.<key>` budget counts each
//! value apart and ignores requests without the key; decisions reserve their provider's
//! expected cost and results settle it, in the window the decision was made in, once;
//! a reservation without a result settles at its reserved figure when it expires; the
//! ledgers survive a save and restore and a reload that keeps the budget's scope and
//! window. Policies are parsed from JSON, as an operator writes them.

use std::borrow::Cow;

use super::budget::{Exceeded, Limits, Spent, WindowSpend, RESERVATION_TTL_MS};
use super::tests::{request, Shard};
use super::*;
use crate::contract::{ErrorCode, Scalar};
use crate::policy::{parse_policy, Policy, RoutingTable};

const MS: u64 = 1_000_000;
const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;
/// 2023-11-14 23:00:00 UTC: the start of an hour, and so of a minute.
const T0: u64 = 1_700_002_800_000;

fn parsed(json: &str) -> Policy {
    match parse_policy("acme", "default", "test.json", json.as_bytes()) {
        Ok(policy) => policy,
        Err(errors) => panic!("policy rejected: {errors:?}"),
    }
}

/// A shard deciding for acme/default as `json` declares it.
fn shard(json: &str) -> Shard {
    Shard::new(parsed(json))
}

/// The clock at wall-clock `unix_ms` (the monotonic clock moves along with it).
fn at(unix_ms: u64) -> Now {
    Now {
        mono_ns: (unix_ms - T0 + 1_000) * MS,
        unix_ms,
    }
}

/// A request with request id `id` and, when given, metadata `user`.
fn req<'a>(id: &'a str, user: Option<&'a str>) -> DecideRequest<'a> {
    let mut r = request("acme", "default");
    r.request_id = Cow::Borrowed(id);
    if let Some(user) = user {
        r.metadata
            .entries
            .push((Cow::Borrowed("user"), Scalar::Str(Cow::Borrowed(user))));
    }
    r
}

/// The provider `r` is routed to at `unix_ms`, or the refusal.
fn pick(shard: &mut Shard, r: &DecideRequest<'_>, unix_ms: u64) -> Result<String, DecideError> {
    let d = decide(&shard.table, &mut shard.state, r, at(unix_ms))?;
    Ok(shard
        .table
        .policy(d.slot)
        .provider(d.provider)
        .name
        .to_string())
}

/// The budget refusal `r` gets at `unix_ms`, checking its code and retry delay.
#[track_caller]
fn refused(shard: &mut Shard, r: &DecideRequest<'_>, unix_ms: u64) -> Exceeded {
    let err = pick(shard, r, unix_ms).expect_err("expected a budget refusal");
    assert_eq!(err.code(), ErrorCode::BudgetExceeded, "{err}");
    let exceeded = err.budget_exceeded().expect("budget details").clone();
    assert_eq!(
        err.retry_after_ms(),
        Some(exceeded.reset_at_ms - unix_ms),
        "retry when the window resets"
    );
    exceeded
}

fn exceeded(
    scope: &str,
    value: &str,
    window: &'static str,
    measure: &'static str,
    (limit, spent): (f64, f64),
    reset_at_ms: u64,
) -> Exceeded {
    Exceeded {
        scope: scope.into(),
        value: value.into(),
        window,
        measure,
        limit,
        spent,
        reset_at_ms,
        short: false,
        held: false,
    }
}

/// `provider`'s result for request `id`, costing `cost`, settled in the budgets.
fn settle(shard: &mut Shard, id: &str, provider: &str, cost: f64) -> bool {
    let call = ("acme", Some(id), provider);
    shard
        .state
        .settle_budget(&shard.table, call, (Some(cost), None))
}

fn spent(requests: u64, cost: f64) -> Spent {
    Spent {
        requests,
        cost,
        tokens: 0,
    }
}

/// (requests, committed cost) and (open, reserved cost) of each report at `unix_ms`.
fn figures(shard: &Shard, unix_ms: u64) -> Vec<(Spent, Spent)> {
    shard
        .state
        .budget_reports(&shard.table, "acme", unix_ms)
        .iter()
        .map(|r| (r.spent, r.reserved))
        .collect()
}

/// The windows of the policy's only ledger, as the state file would save them.
fn windows(shard: &Shard) -> Vec<WindowSpend> {
    // At time 0 every window is still to come: all are saved.
    let saved = shard.state.save_budgets(&shard.table, 0);
    assert_eq!(saved.ledgers.len(), 1, "{saved:?}");
    saved.ledgers[0].ledger.windows.iter().copied().collect()
}

fn window(start_ms: u64, requests: u64, cost: f64, (open, reserved): (u64, f64)) -> WindowSpend {
    WindowSpend {
        start_ms,
        end_ms: start_ms + MINUTE_MS,
        requests,
        cost,
        tokens: 0,
        open,
        reserved_cost: reserved,
        reserved_tokens: 0,
        ..WindowSpend::default()
    }
}

/// Only `dear`, declared at 1.0 a call, under a tenant budget of `budget`.
fn dear_only(budget: &str) -> String {
    format!(
        r#"{{"version":"1.0","providers":[{{"name":"dear","weight":100,"cost":1.0}}],"budgets":[{budget}]}}"#
    )
}

/// Three decisions a minute pass; the fourth is refused until the minute ends, naming
/// the budget, its limit and what the window holds; the next minute starts from zero.
#[test]
fn max_requests_refuses_until_the_window_resets() {
    let mut shard = shard(
        r#"{"version":"1.0","providers":[{"name":"openai","weight":100}],"budgets":[{"scope":"tenant","window":"1m","max_requests":3}]}"#,
    );
    let ids = ["r-1", "r-2", "r-3", "r-4", "r-5", "r-6", "r-7"];
    for (i, id) in ids[..3].iter().enumerate() {
        let t = T0 + 10_000 + i as u64 * 1_000;
        assert_eq!(pick(&mut shard, &req(id, None), t).unwrap(), "openai");
    }
    let end = T0 + MINUTE_MS;
    assert_eq!(
        refused(&mut shard, &req("r-4", None), T0 + 13_000),
        exceeded("tenant", "", "1m", "requests", (3.0, 3.0), end)
    );
    assert_eq!(
        refused(&mut shard, &req("r-4", None), end - 1),
        exceeded("tenant", "", "1m", "requests", (3.0, 3.0), end),
        "still refused in the window's last millisecond"
    );
    let reports = shard.state.budget_reports(&shard.table, "acme", end - 1);
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].spent, spent(3, 0.0), "refusals are not counted");
    assert_eq!(
        reports[0].remaining,
        Limits {
            max_cost: None,
            max_tokens: None,
            max_requests: Some(0),
        }
    );

    for (i, id) in ids[4..].iter().enumerate() {
        let t = end + i as u64 * 1_000;
        assert_eq!(pick(&mut shard, &req(id, None), t).unwrap(), "openai");
    }
    assert_eq!(
        refused(&mut shard, &req("r-8", None), end + 5_000),
        exceeded("tenant", "", "1m", "requests", (3.0, 3.0), end + MINUTE_MS)
    );
}

/// A `metadata.user` budget gives each user their own three requests; a request without
/// the key (or whose value is not a string or number) is neither counted nor refused.
#[test]
fn a_metadata_budget_counts_each_value_apart() {
    let mut shard = shard(
        r#"{"version":"1.0","providers":[{"name":"openai","weight":100}],"budgets":[{"scope":"metadata.user","window":"1m","max_requests":3}]}"#,
    );
    let t = T0 + 1_000;
    for user in ["ann", "bob"] {
        for id in ["r-1", "r-2", "r-3"] {
            assert_eq!(pick(&mut shard, &req(id, Some(user)), t).unwrap(), "openai");
        }
    }
    let end = T0 + MINUTE_MS;
    for user in ["ann", "bob"] {
        assert_eq!(
            refused(&mut shard, &req("r-4", Some(user)), t),
            exceeded("metadata.user", user, "1m", "requests", (3.0, 3.0), end)
        );
    }
    assert_eq!(
        pick(&mut shard, &req("r-1", Some("cy")), t).unwrap(),
        "openai"
    );
    for _ in 0..10 {
        assert_eq!(pick(&mut shard, &req("r-5", None), t).unwrap(), "openai");
    }
    let mut flagged = req("r-6", None);
    flagged
        .metadata
        .entries
        .push((Cow::Borrowed("user"), Scalar::Bool(true)));
    assert_eq!(pick(&mut shard, &flagged, t).unwrap(), "openai");

    let reports = shard.state.budget_reports(&shard.table, "acme", t);
    let counted: Vec<_> = reports
        .iter()
        .map(|r| (r.scope.as_str(), r.value.as_deref(), r.spent.requests))
        .collect();
    assert_eq!(
        counted,
        [
            ("metadata.user", Some("ann"), 3),
            ("metadata.user", Some("bob"), 3),
            ("metadata.user", Some("cy"), 1),
        ]
    );
}

/// Each decision reserves the provider's declared cost; with 0.5 left the only provider
/// (1.0 a call) is no candidate, so the request is refused for cost; a result settling
/// one call at 0.1 makes room again, and the next reservation is its observed cost.
#[test]
fn decisions_reserve_cost_and_results_settle_it() {
    let mut shard = shard(&dear_only(
        r#"{"scope":"tenant","window":"1h","max_cost":2.5}"#,
    ));
    let t = T0 + 1_000;
    assert_eq!(pick(&mut shard, &req("r-1", None), t).unwrap(), "dear");
    assert_eq!(figures(&shard, t), [(spent(1, 1.0), spent(1, 1.0))]);
    assert_eq!(pick(&mut shard, &req("r-2", None), t).unwrap(), "dear");
    assert_eq!(figures(&shard, t), [(spent(2, 2.0), spent(2, 2.0))]);

    let end = T0 + HOUR_MS;
    let mut explained = req("r-3", None);
    explained.explain = true;
    assert_eq!(
        refused(&mut shard, &explained, t),
        exceeded("tenant", "", "1h", "cost", (2.5, 2.0), end),
        "admitted with 0.5 left, then no provider fits"
    );
    assert_eq!(
        figures(&shard, t),
        [(spent(2, 2.0), spent(2, 2.0))],
        "a refused request reserves nothing"
    );
    let reports = shard.state.budget_reports(&shard.table, "acme", t);
    assert_eq!(reports[0].remaining.max_cost, Some(0.5));
    assert_eq!(
        (reports[0].window_start_ms, reports[0].reset_at_ms),
        (T0, end)
    );

    assert!(settle(&mut shard, "r-1", "dear", 0.1));
    assert_eq!(figures(&shard, t), [(spent(2, 1.1), spent(1, 1.0))]);
    let observed = Observed {
        outcome: Some(Outcome::Success),
        latency_ms: None,
        cost: Some(0.1),
    };
    shard
        .state
        .record_result(&shard.table, "acme", "dear", observed, at(t).mono_ns);

    assert_eq!(pick(&mut shard, &req("r-3", None), t + 1).unwrap(), "dear");
    let reports = shard.state.budget_reports(&shard.table, "acme", t + 1);
    assert_eq!(reports[0].spent, spent(3, 0.1 + (1.0 + 0.1)));
    assert_eq!(reports[0].reserved, spent(2, 1.0 + 0.1));
}

/// With 0.5 of the budget left, the provider at 1.0 a call is no candidate but the one at
/// 0.01 is: every decision goes to it, and `explain` says why the other was left out.
#[test]
fn a_nearly_spent_budget_still_admits_the_cheaper_provider() {
    let mut shard = shard(
        r#"{"version":"1.0","providers":[{"name":"cheap","weight":50,"cost":0.01},{"name":"dear","weight":50,"cost":1.0}],"budgets":[{"scope":"tenant","window":"1h","max_cost":2.5}]}"#,
    );
    let t = T0 + 1_000;
    for id in ["d-1", "d-2"] {
        let mut r = req(id, None);
        r.constraints.only = vec![Cow::Borrowed("dear")];
        assert_eq!(pick(&mut shard, &r, t).unwrap(), "dear");
    }
    let ids: Vec<String> = (0..40).map(|i| format!("c-{i}")).collect();
    let mut committed = 2.0;
    for id in &ids {
        let mut r = req(id, None);
        r.explain = true;
        let d = decide(&shard.table, &mut shard.state, &r, at(t)).expect("decision");
        assert_eq!(
            &*shard.table.policy(d.slot).provider(d.provider).name,
            "cheap"
        );
        let steps = d.explanation.expect("explained");
        assert!(
            steps
                .iter()
                .any(|s| s == "candidate dear: not usable (OverBudget)"),
            "{steps:?}"
        );
        assert!(
            steps
                .iter()
                .any(|s| s == "budgets: reserved cost 0.01, tokens 0 until the result"),
            "{steps:?}"
        );
        committed += 0.01;
    }
    assert_eq!(
        figures(&shard, t),
        [(spent(42, committed), spent(42, committed))]
    );
}

/// A result settles in the window its decision was made in, however late it comes: the
/// first minute gets its actual cost and loses its reservation, the second minute (with
/// a decision of its own still waiting) is left as it was.
#[test]
fn a_late_result_settles_in_its_decisions_window() {
    let mut shard = shard(&dear_only(
        r#"{"scope":"tenant","window":"1m","max_cost":10}"#,
    ));
    let (w1, w2) = (T0, T0 + MINUTE_MS);
    assert_eq!(
        pick(&mut shard, &req("r-1", None), w1 + 10_000).unwrap(),
        "dear"
    );
    assert!(!settle(&mut shard, "r-0", "dear", 0.5), "no such decision");
    assert_eq!(windows(&shard), [window(w1, 1, 0.0, (1, 1.0))]);

    assert_eq!(
        pick(&mut shard, &req("r-2", None), w2 + 5_000).unwrap(),
        "dear"
    );
    shard.state.expire_reservations(&shard.table, w2 + 15_000);
    assert!(settle(&mut shard, "r-1", "dear", 0.25), "r-1, at w2 + 15 s");
    assert_eq!(
        windows(&shard),
        [window(w1, 1, 0.25, (0, 0.0)), window(w2, 1, 0.0, (1, 1.0))]
    );
    assert_eq!(
        figures(&shard, w2 + 15_000),
        [(spent(1, 1.0), spent(1, 1.0))],
        "the current window holds only its own decision"
    );

    // r-2's result comes in the third minute, and settles in the second.
    shard
        .state
        .expire_reservations(&shard.table, w2 + MINUTE_MS + 1);
    assert!(settle(&mut shard, "r-2", "dear", 0.75));
    assert_eq!(
        windows(&shard),
        [window(w1, 1, 0.25, (0, 0.0)), window(w2, 1, 0.75, (0, 0.0))]
    );
}

/// A reservation whose result never comes is settled at its reserved figure when it has
/// waited `RESERVATION_TTL_MS`, not before; its late result then finds nothing to settle
/// and counts nothing more.
#[test]
fn an_expired_reservation_settles_at_its_reserved_figure_once() {
    let mut shard = shard(&dear_only(
        r#"{"scope":"tenant","window":"1h","max_cost":10}"#,
    ));
    let t = T0 + 1_000;
    assert_eq!(pick(&mut shard, &req("r-1", None), t).unwrap(), "dear");
    let due = t + RESERVATION_TTL_MS;
    shard.state.expire_reservations(&shard.table, due - 1);
    assert_eq!(shard.state.reservation_counts(), (1, 0, 0, 0));
    assert_eq!(figures(&shard, due - 1), [(spent(1, 1.0), spent(1, 1.0))]);

    shard.state.expire_reservations(&shard.table, due);
    assert_eq!(shard.state.reservation_counts(), (0, 1, 0, 0));
    assert_eq!(figures(&shard, due), [(spent(1, 1.0), spent(0, 0.0))]);
    assert_eq!(
        shard.state.budget_reports(&shard.table, "acme", due)[0]
            .remaining
            .max_cost,
        Some(9.0)
    );

    assert!(!settle(&mut shard, "r-1", "dear", 0.1), "already settled");
    assert_eq!(shard.state.reservation_counts(), (0, 1, 1, 0));
    assert_eq!(figures(&shard, due), [(spent(1, 1.0), spent(0, 0.0))]);
}

/// A result settles its decision once: the same result again, one naming another
/// provider, and one without a request id settle nothing. Two decisions of one request
/// id and provider (a retry) wait for two results.
#[test]
fn a_result_settles_its_decision_once() {
    let mut shard = shard(&dear_only(
        r#"{"scope":"tenant","window":"1h","max_cost":10}"#,
    ));
    let t = T0 + 1_000;
    assert_eq!(pick(&mut shard, &req("r-1", None), t).unwrap(), "dear");
    assert!(settle(&mut shard, "r-1", "dear", 0.25));
    assert!(
        !settle(&mut shard, "r-1", "dear", 0.25),
        "the same result again"
    );
    assert!(!settle(&mut shard, "r-1", "other", 0.25));
    let no_id = ("acme", None, "dear");
    assert!(!shard
        .state
        .settle_budget(&shard.table, no_id, (Some(0.25), None)));
    assert_eq!(figures(&shard, t), [(spent(1, 0.25), spent(0, 0.0))]);
    assert_eq!(shard.state.reservation_counts(), (0, 0, 3, 0));

    for _ in 0..2 {
        assert_eq!(pick(&mut shard, &req("r-2", None), t).unwrap(), "dear");
    }
    assert_eq!(
        shard.state.reservation_counts().0,
        1,
        "one key, two decisions"
    );
    assert_eq!(figures(&shard, t), [(spent(3, 2.25), spent(2, 2.0))]);
    assert!(settle(&mut shard, "r-2", "dear", 0.5));
    assert_eq!(figures(&shard, t), [(spent(3, 1.75), spent(1, 1.0))]);
    assert!(settle(&mut shard, "r-2", "dear", 0.5));
    assert!(!settle(&mut shard, "r-2", "dear", 0.5));
    assert_eq!(figures(&shard, t), [(spent(3, 1.25), spent(0, 0.0))]);
}

/// A retry of one request to one provider in the next window cannot share the first
/// decision's reservation (its result would settle in the first window and leave the
/// second's reservation open for good): the first is settled at what it reserved, and
/// the key's result settles the retry, in its own window.
#[test]
fn a_retry_in_the_next_window_leaves_no_reservation_open() {
    let mut shard = shard(&dear_only(
        r#"{"scope":"tenant","window":"1m","max_cost":10}"#,
    ));
    let (w1, w2) = (T0, T0 + MINUTE_MS);
    assert_eq!(
        pick(&mut shard, &req("r-1", None), w2 - 1_000).unwrap(),
        "dear"
    );
    assert_eq!(
        pick(&mut shard, &req("r-1", None), w2 + 1_000).unwrap(),
        "dear"
    );
    assert_eq!(shard.state.reservation_counts().0, 1);
    assert_eq!(
        windows(&shard),
        [window(w1, 1, 1.0, (0, 0.0)), window(w2, 1, 0.0, (1, 1.0))]
    );
    assert!(settle(&mut shard, "r-1", "dear", 0.25));
    assert!(!settle(&mut shard, "r-1", "dear", 0.5), "nothing left open");
    assert_eq!(
        windows(&shard),
        [window(w1, 1, 1.0, (0, 0.0)), window(w2, 1, 0.25, (0, 0.0))]
    );
}

/// What `save_budgets` writes (through JSON, as a state file) restores into a fresh
/// state over the same table: the same reports, the same refusals, and an open
/// reservation that a result after the restart still settles.
#[test]
fn saved_budgets_restore_ledgers_and_open_reservations() {
    let json = r#"{"version":"1.0","providers":[{"name":"dear","weight":100,"cost":1.0}],"budgets":[{"scope":"tenant","window":"1h","max_cost":10},{"scope":"metadata.user","window":"1m","max_requests":3}]}"#;
    let mut before = shard(json);
    let t = T0 + 1_000;
    for id in ["r-1", "r-2"] {
        assert_eq!(pick(&mut before, &req(id, Some("ann")), t).unwrap(), "dear");
    }
    assert!(settle(&mut before, "r-1", "dear", 0.25));
    let saved = before.state.save_budgets(&before.table, t);
    let text = serde_json::to_string(&saved).expect("saved");

    let mut after = shard(json);
    let restored = serde_json::from_str(&text).expect("read back");
    assert_eq!(saved, restored);
    assert_eq!(
        after.state.restore_budgets(&after.table, &restored),
        (2, 1),
        "the tenant's and ann's ledgers, r-2's reservation"
    );
    let reports = |s: &Shard| s.state.budget_reports(&s.table, "acme", t);
    assert_eq!(reports(&after), reports(&before));
    assert_eq!(
        figures(&after, t),
        [
            (spent(2, 1.25), spent(1, 1.0)),
            (spent(2, 1.25), spent(1, 1.0)),
        ]
    );

    assert!(settle(&mut after, "r-2", "dear", 0.5));
    assert!(!settle(&mut after, "r-2", "dear", 0.5));
    assert_eq!(
        figures(&after, t),
        [
            (spent(2, 0.75), spent(0, 0.0)),
            (spent(2, 0.75), spent(0, 0.0)),
        ]
    );
    assert_eq!(
        pick(&mut after, &req("r-3", Some("ann")), t).unwrap(),
        "dear"
    );
    assert_eq!(
        refused(&mut after, &req("r-4", Some("ann")), t),
        exceeded(
            "metadata.user",
            "ann",
            "1m",
            "requests",
            (3.0, 3.0),
            T0 + MINUTE_MS
        ),
        "ann's two requests before the restart count"
    );
}

/// A reload that keeps a budget's scope and window keeps its spend and its open
/// reservations under the new limit; a budget whose window changed starts afresh.
#[test]
fn a_reload_keeps_spend_while_scope_and_window_stay() {
    let mut shard = shard(&dear_only(
        r#"{"scope":"tenant","window":"1h","max_requests":3},{"scope":"metadata.user","window":"1m","max_requests":2}"#,
    ));
    let t = T0 + 1_000;
    for (id, user) in [("r-1", "ann"), ("r-2", "ann"), ("r-3", "bob")] {
        assert_eq!(pick(&mut shard, &req(id, Some(user)), t).unwrap(), "dear");
    }
    assert_eq!(
        refused(&mut shard, &req("r-4", None), t),
        exceeded("tenant", "", "1h", "requests", (3.0, 3.0), T0 + HOUR_MS)
    );

    // The user budget moves to a day (first now); the tenant's limit goes up to 5.
    let new = RoutingTable::from_policies(vec![parsed(&dear_only(
        r#"{"scope":"metadata.user","window":"1d","max_requests":2},{"scope":"tenant","window":"1h","max_requests":5}"#,
    ))])
    .expect("table");
    shard.state.adopt(&shard.table, &new, at(t).mono_ns);
    shard.table = new;

    let reports = shard.state.budget_reports(&shard.table, "acme", t);
    let seen: Vec<_> = reports
        .iter()
        .map(|r| {
            (
                r.scope.as_str(),
                r.window,
                r.limits.max_requests,
                r.spent.requests,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("metadata.user", "1d", Some(2), 0),
            ("tenant", "1h", Some(5), 3)
        ]
    );
    assert!(
        settle(&mut shard, "r-1", "dear", 0.25),
        "reserved before the reload"
    );
    assert_eq!(reports_cost(&shard, t), 0.25 + 2.0);

    for id in ["r-5", "r-6"] {
        let r = req(id, Some("ann"));
        assert_eq!(pick(&mut shard, &r, t).unwrap(), "dear", "ann's day is new");
    }
    assert_eq!(
        refused(&mut shard, &req("r-7", None), t),
        exceeded("tenant", "", "1h", "requests", (5.0, 5.0), T0 + HOUR_MS)
    );
}

/// The tenant budget's committed cost (the policy's last report).
fn reports_cost(shard: &Shard, unix_ms: u64) -> f64 {
    let reports = shard.state.budget_reports(&shard.table, "acme", unix_ms);
    reports.last().expect("a report").spent.cost
}

/// The tenant budget's (requests, committed cost) and (open, reserved cost) at `unix_ms`.
fn tenant_figures(shard: &Shard, unix_ms: u64) -> (Spent, Spent) {
    let reports = shard.state.budget_reports(&shard.table, "acme", unix_ms);
    let r = reports
        .iter()
        .find(|r| r.scope == "tenant")
        .expect("a tenant row");
    (r.spent, r.reserved)
}

/// A reload that adds a provider keeps the open reservations settleable: they are keyed
/// by (tenant, policy id), not by the provider list.
#[test]
fn a_reload_that_adds_a_provider_keeps_reservations_settleable() {
    let budget = r#"{"scope":"tenant","window":"1h","max_cost":100}"#;
    let mut shard = shard(&dear_only(budget));
    let t = T0 + 1_000;
    for id in ["r-1", "r-2"] {
        assert_eq!(pick(&mut shard, &req(id, None), t).unwrap(), "dear");
    }
    let json = format!(
        r#"{{"version":"1.0","providers":[{{"name":"dear","weight":100,"cost":1.0}},{{"name":"cheap","weight":0,"cost":0.1}}],"budgets":[{budget}]}}"#
    );
    let new = RoutingTable::from_policies(vec![parsed(&json)]).expect("table");
    shard.state.adopt(&shard.table, &new, at(t).mono_ns);
    shard.table = new;
    assert!(settle(&mut shard, "r-1", "dear", 0.5));
    assert!(settle(&mut shard, "r-2", "dear", 0.5));
    let (spent, reserved) = tenant_figures(&shard, t);
    assert_eq!((spent.requests, spent.cost), (2, 1.0));
    assert_eq!(
        (reserved.requests, reserved.cost),
        (0, 0.0),
        "nothing left open"
    );
}

/// Extension stages run between admission and selection, and other requests are decided
/// meanwhile: selection reads the budget again, so two requests admitted together do not
/// both pass a limit of one.
#[test]
fn selection_after_stages_reads_the_budget_again() {
    let json = r#"{"version":"1.0","providers":[{"name":"dear","weight":100,"cost":1.0}],
        "pre":[{"id":"enrich","mode":"optional"}],
        "budgets":[{"scope":"tenant","window":"1h","max_requests":1}]}"#;
    let mut shard = shard(json);
    let t = T0 + 1_000;
    let (a, b) = (req("r-a", None), req("r-b", None));
    let mut pa = pipeline::admit(&shard.table, &mut shard.state, &a, at(t)).expect("admitted");
    let mut pb = pipeline::admit(&shard.table, &mut shard.state, &b, at(t)).expect("admitted");
    for p in [&mut pa, &mut pb] {
        for stage in p.stages(crate::policy::StageKind::Pre) {
            p.apply(stage, StageOutcome::Unavailable).expect("optional");
        }
    }
    pa.select(&mut shard.state, &a, at(t))
        .expect("the first fits");
    let err = pb
        .select(&mut shard.state, &b, at(t))
        .expect_err("the second is over the limit");
    assert_eq!(err.code(), ErrorCode::BudgetExceeded, "{err}");
    assert_eq!(tenant_figures(&shard, t).0.requests, 1);
}

/// The same request id and provider decided under two policies of the tenant: the first
/// policy's reservation is settled at its reserved figure, the second's by the result;
/// neither stays open, neither is settled twice.
#[test]
fn one_request_id_under_two_policies_leaves_nothing_open() {
    let doc = dear_only(r#"{"scope":"tenant","window":"1h","max_cost":100}"#);
    let policy = |id: &str| parse_policy("acme", id, "test.json", doc.as_bytes()).unwrap();
    let table = RoutingTable::from_policies(vec![policy("a"), policy("b")]).expect("table");
    let mut state = ShardState::new(&table, StateConfig::default(), 0);
    let t = T0 + 1_000;
    for id in ["a", "b"] {
        let mut r = req("same", None);
        r.policy_id = Cow::Borrowed(id);
        decide(&table, &mut state, &r, at(t)).expect("decided");
    }
    state.expire_reservations(&table, t);
    let call = ("acme", Some("same"), "dear");
    assert!(state.settle_budget(&table, call, (Some(0.25), None)));
    assert!(!state.settle_budget(&table, call, (Some(0.25), None)));
    let reports = state.budget_reports(&table, "acme", t);
    let by_policy: Vec<_> = reports
        .iter()
        .map(|r| (&*r.policy_id, r.spent.cost, r.reserved.requests))
        .collect();
    assert_eq!(by_policy, [("a", 1.0, 0), ("b", 0.25, 0)]);
}

/// A wall clock stepped back counts the decision in the newest window, and its result
/// settles it there.
#[test]
fn a_decision_under_a_clock_stepped_back_settles() {
    let mut shard = shard(&dear_only(
        r#"{"scope":"tenant","window":"1m","max_cost":100}"#,
    ));
    let t = T0 + MINUTE_MS + 1_000;
    assert_eq!(pick(&mut shard, &req("r-1", None), t).unwrap(), "dear");
    assert_eq!(
        pick(&mut shard, &req("r-2", None), t - MINUTE_MS).unwrap(),
        "dear"
    );
    assert!(settle(&mut shard, "r-2", "dear", 0.5));
    let (spent, reserved) = tenant_figures(&shard, t);
    assert_eq!((spent.requests, spent.cost), (2, 1.5));
    assert_eq!(
        (reserved.requests, reserved.cost),
        (1, 1.0),
        "only r-1 open"
    );
}

/// A result's cost past any budget (`1e308`) counts as the largest spend one call may
/// count: the sums stay finite and the saved state reads back.
#[test]
fn an_absurd_cost_keeps_the_ledger_finite() {
    let mut shard = shard(&dear_only(
        r#"{"scope":"tenant","window":"1h","max_cost":100}"#,
    ));
    let t = T0 + 1_000;
    for id in ["r-1", "r-2"] {
        assert_eq!(pick(&mut shard, &req(id, None), t).unwrap(), "dear");
    }
    for id in ["r-1", "r-2"] {
        assert!(settle(&mut shard, id, "dear", 1e308));
    }
    let (spent, _) = tenant_figures(&shard, t);
    assert_eq!(spent.cost, 2.0 * budget::SPEND_MAX);
    let saved = shard.state.save_budgets(&shard.table, t);
    let text = serde_json::to_string(&saved).expect("saved");
    let back: budget::Saved = serde_json::from_str(&text).expect("reads back");
    assert_eq!(back, saved);
}

/// When a provider fits the cost left but not the tokens, the refusal names tokens.
#[test]
fn a_refusal_for_tokens_says_tokens() {
    let json = r#"{"version":"1.0","providers":[{"name":"dear","weight":100,"cost":1.0}],
        "budgets":[{"scope":"tenant","window":"1h","max_cost":100,"max_tokens":1000}]}"#;
    let mut shard = shard(json);
    let t = T0 + 1_000;
    assert_eq!(pick(&mut shard, &req("r-1", None), t).unwrap(), "dear");
    // The result as the shard core feeds it: the provider's averages, then the budget.
    let observed = Observed {
        outcome: Some(Outcome::Success),
        latency_ms: Some(100.0),
        cost: Some(1.0),
    };
    let signal = LimitSignal {
        tokens: Some(900),
        rate_limited: false,
    };
    let table = &shard.table;
    shard
        .state
        .record_result_with(table, "acme", "dear", (observed, signal), at(t).mono_ns);
    let call = ("acme", Some("r-1"), "dear");
    assert!(shard
        .state
        .settle_budget(table, call, (Some(1.0), Some(900))));
    // dear now expects 900 tokens a call: 100 are left.
    let refusal = refused(&mut shard, &req("r-2", None), t);
    assert_eq!(
        (refusal.measure, refusal.limit, refusal.spent),
        ("tokens", 1000.0, 900.0)
    );
}

/// A `metadata.<key>` budget counts at most `SCOPE_VALUES_MAX` values: one more value is
/// refused (`scope_values`) while every counted one is in a live window; once those
/// windows end and their results are in, the ledgers go and a new value is admitted.
#[test]
fn a_metadata_budget_counts_a_bounded_number_of_values() {
    use super::budget::SCOPE_VALUES_MAX;
    let mut shard = shard(&dear_only(
        r#"{"scope":"metadata.user","window":"1m","max_requests":10}"#,
    ));
    let t = T0 + 1_000;
    let users: Vec<String> = (0..=SCOPE_VALUES_MAX).map(|i| format!("u-{i}")).collect();
    for (i, user) in users[..SCOPE_VALUES_MAX].iter().enumerate() {
        let id = format!("r-{i}");
        assert_eq!(pick(&mut shard, &req(&id, Some(user)), t).unwrap(), "dear");
        assert!(settle(&mut shard, &id, "dear", 0.5));
    }
    let last = &users[SCOPE_VALUES_MAX];
    let refusal = refused(&mut shard, &req("r-over", Some(last)), t);
    assert_eq!(refusal.measure, "scope_values");
    let full = SCOPE_VALUES_MAX as f64;
    assert_eq!((refusal.limit, refusal.spent), (full, full));
    assert_eq!(&*refusal.value, last.as_str());
    let next_minute = T0 + MINUTE_MS + 1_000;
    assert_eq!(
        pick(&mut shard, &req("r-later", Some(last)), next_minute).unwrap(),
        "dear"
    );
}
