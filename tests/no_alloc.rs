//! Proves that `decide` does not touch the heap on the weighted, sticky-hit and balanced
//! (`least_latency`, `least_outstanding`, `lowest_cost`) paths, with per-request
//! constraints or providers' own limits or a shadow drawn, nor
//! the shard core's whole local path around it (the lifecycle's choice, the engine, the
//! encoded answer into a reused buffer) on a shard that does not own the tenant (STYLE:
//! allocate at shard start, not per request), nor the load generator's recording of an
//! outcome into its run and per-second histograms, with a counting global allocator.
//! Only the counting thread's allocations count, on a counter of its own: the test
//! harness's own thread may allocate at any moment (it did, on a loaded machine, while the
//! test ran), and so may the other tests' threads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::cell::Cell;

use shardline::contract::{Constraints, DecideRequest, Metadata, Reason, Scalar, Task};
use shardline::decide::sync::policy_key;
use shardline::decide::{decide, Now, Peer, Placement, ShardState, StateConfig, SyncMsg};
use shardline::policy::{Policy, Provider, RoutingTable, Sticky, WeightTable};
use shardline::shard::{Counted, ShardConfig, ShardCore, Step};
use shardline_tools::bench::record::Recorder;
use shardline_tools::bench::timeline::Timeline;
use shardline_tools::bench::wire::{Code, Outcome};

struct Counting;

thread_local! {
    /// Whether this thread's allocations are counted (const-initialised: reading it from
    /// inside the allocator allocates nothing).
    static COUNTED: Cell<bool> = const { Cell::new(false) };
    /// This thread's counted allocations.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    if COUNTED.with(Cell::get) {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn policy(id: &str, sticky: bool) -> Policy {
    let names = ["openai", "anthropic", "mistral", "cohere"];
    let providers: Box<[Provider]> = names
        .iter()
        .zip([40u32, 30, 20, 10])
        .map(|(n, w)| Provider {
            name: (*n).into(),
            weight: w * 10_000,
            expected_latency_ms: Some(300.0),
            cost: Some(0.001),
            capabilities: Box::new([]),
            limits: Default::default(),
        })
        .collect();
    Policy {
        tenant: "acme".into(),
        id: id.into(),
        version: "1.0".into(),
        weights: WeightTable::new(&providers),
        providers,
        fallbacks: Box::new([]),
        legacy_fallback: None,
        sticky: sticky.then(|| Sticky {
            session_key: "user_id".into(),
            ttl_ms: 600_000,
        }),
        circuit_breaker: Some(Default::default()),
        rate_limit: Some(shardline::policy::RateLimit {
            requests_per_second: 1_000_000,
            burst: 1_000_000,
        }),
        balance: Default::default(),
        pre: Box::new([]),
        validators: Box::new([]),
        post: Box::new([]),
        timeout_ms: None,
        cooldown_ms: 10_000,
        shadow: Box::new([]),
        budgets: Box::new([]),
    }
}

fn request<'a>(policy: &'a str, user: &'a str) -> DecideRequest<'a> {
    DecideRequest {
        request_id: Cow::Borrowed("r-1"),
        tenant_id: Cow::Borrowed("acme"),
        trace_id: None,
        traceparent: None,
        task: Task {
            kind: Cow::Borrowed("chat"),
            payload_ref: Some(Cow::Borrowed("p")),
            payload: None,
        },
        policy_id: Cow::Borrowed(policy),
        constraints: Constraints::default(),
        metadata: Metadata {
            entries: vec![(Cow::Borrowed("user_id"), Scalar::Str(Cow::Borrowed(user)))],
        },
        attempt: None,
        push_assignment: false,
        assignment_subject: None,
        options: None,
        deadline_unix_ms: None,
        correlation: None,
        idempotency_key: None,
        explain: false,
    }
}

fn count<R>(f: impl FnOnce() -> R) -> (u64, R) {
    let before = ALLOCATIONS.with(Cell::get);
    COUNTED.with(|c| c.set(true));
    let r = f();
    COUNTED.with(|c| c.set(false));
    (ALLOCATIONS.with(Cell::get) - before, r)
}

/// Weighted (with and without writing a sticky entry), sticky-hit and new-epoch session
/// decisions allocate nothing. The counter is real: building the request above does allocate.
#[test]
fn decide_does_not_allocate() {
    let table = RoutingTable::from_policies(vec![policy("plain", false), policy("sticky", true)])
        .expect("table");
    let mut state = ShardState::new(&table, StateConfig::default(), 0);
    let users: Vec<String> = (0..1_000).map(|u| format!("user-{u}")).collect();
    let (n, plain) = count(|| request("plain", "u"));
    assert!(n > 0, "the counting allocator counts");
    let sticky: Vec<DecideRequest> = users.iter().map(|u| request("sticky", u)).collect();

    // Pass 2 is one TTL (600 s) later: every session is in its next epoch, re-ranked and
    // its entry rewritten.
    for (i, reason) in [
        (0u64, Reason::Weighted),
        (1, Reason::Sticky),
        (2, Reason::Weighted),
    ] {
        for (j, req) in sticky.iter().enumerate() {
            let now = Now {
                mono_ns: i * 1_000 + j as u64,
                unix_ms: 1 + i / 2 * 600_000,
            };
            let (n, d) = count(|| decide(&table, &mut state, req, now).expect("decision"));
            assert_eq!(n, 0, "sticky policy, pass {i}: {n} allocations");
            assert_eq!(d.reason, reason);
        }
    }
    for t in 0..1_000u64 {
        let now = Now {
            mono_ns: 10_000 + t,
            unix_ms: 1,
        };
        let (n, d) = count(|| decide(&table, &mut state, &plain, now).expect("decision"));
        assert_eq!(n, 0, "weighted path: {n} allocations");
        assert_eq!(d.reason, Reason::Weighted);
    }
}

/// Every `balance` strategy decides without allocating, with results (and so measured
/// scores, in-flight counts and replicated estimates) between the decisions.
#[test]
fn balanced_decisions_do_not_allocate() {
    use shardline::decide::{Observed, Outcome};
    use shardline::policy::{Balance, BalanceStrategy};
    let strategies = [
        (BalanceStrategy::LeastLatency, "latency"),
        (BalanceStrategy::LeastOutstanding, "outstanding"),
        (BalanceStrategy::LowestCost, "cost"),
    ];
    let policies = strategies
        .iter()
        .map(|&(strategy, id)| Policy {
            balance: Balance {
                strategy,
                ..Balance::default()
            },
            ..policy(id, false)
        })
        .collect();
    let table = RoutingTable::from_policies(policies).expect("table");
    let mut state = ShardState::new(&table, StateConfig::default(), 0);
    let observed = Observed {
        outcome: Some(Outcome::Success),
        latency_ms: Some(250.0),
        cost: Some(0.002),
    };
    for (_, id) in strategies {
        let req = request(id, "u");
        for t in 0..1_000u64 {
            let now = Now {
                mono_ns: 1_000_000 * (t + 1),
                unix_ms: 1,
            };
            let (n, d) = count(|| decide(&table, &mut state, &req, now).expect("decision"));
            assert_eq!(n, 0, "{id}, decision {t}: {n} allocations");
            let name = &table.policy(d.slot).provider(d.provider).name;
            state.record_result(&table, "acme", name, observed, now.mono_ns);
        }
    }
}

/// Per-request constraints (`exclude`, `require`, `only`, `order`), on the weighted and
/// the session paths, decide without allocating: the lists are read where they lie.
#[test]
fn constrained_decisions_do_not_allocate() {
    let table = RoutingTable::from_policies(vec![policy("plain", false), policy("sticky", true)])
        .expect("table");
    let mut state = ShardState::new(&table, StateConfig::default(), 0);
    let ids = |list: &[&'static str]| list.iter().map(|&n| Cow::Borrowed(n)).collect();
    let constrained = |policy| {
        let mut req = request(policy, "u-7");
        req.constraints = Constraints {
            exclude: ids(&["cohere"]),
            only: ids(&["openai", "anthropic", "mistral"]),
            order: ids(&["unknown", "mistral", "openai"]),
            ..Constraints::default()
        };
        req
    };
    let (plain, sticky) = (constrained("plain"), constrained("sticky"));
    for t in 0..1_000u64 {
        let now = Now {
            mono_ns: 1_000 + t,
            unix_ms: 1,
        };
        for req in [&plain, &sticky] {
            let (n, d) = count(|| decide(&table, &mut state, req, now).expect("decision"));
            assert_eq!(n, 0, "{}, decision {t}: {n} allocations", req.policy_id);
            let name = &table.policy(d.slot).provider(d.provider).name;
            assert!(**name != *"cohere", "excluded");
            if req.policy_id == "plain" {
                assert_eq!(&**name, "mistral", "the order's first candidate");
            }
        }
    }
}

/// Providers' own limits cost no allocation either: decisions counted against `rpm`,
/// results' tokens against `tpm`, and a cooldown started by a `rate_limited` result.
#[test]
fn provider_limits_do_not_allocate() {
    use shardline::decide::{LimitSignal, Observed, Outcome};
    use shardline::policy::ProviderLimits;
    let mut limited = policy("limited", false);
    for p in limited.providers.iter_mut() {
        p.limits = ProviderLimits {
            rpm: Some(1_000),
            tpm: Some(100_000),
        };
    }
    let table = RoutingTable::from_policies(vec![limited]).expect("table");
    let mut state = ShardState::new(&table, StateConfig::default(), 0);
    let req = request("limited", "u");
    let observed = Observed {
        outcome: Some(Outcome::Success),
        latency_ms: Some(250.0),
        cost: None,
    };
    for t in 0..2_000u64 {
        let now = Now {
            mono_ns: 1_000_000 * (t + 1),
            unix_ms: 1,
        };
        let signal = LimitSignal {
            tokens: Some(40),
            rate_limited: t == 999,
        };
        let (n, d) = count(|| {
            let d = decide(&table, &mut state, &req, now).expect("decision");
            let name = &table.policy(d.slot).provider(d.provider).name;
            state.record_result_with(&table, "acme", name, (observed, signal), now.mono_ns);
            d
        });
        assert_eq!(n, 0, "decision and result {t}: {n} allocations");
        assert_eq!(d.reason, Reason::Weighted);
    }
}

/// A decision for a tenant another shard owns goes through the shard core's whole local
/// path — the choice, the engine, the answer written into a reused buffer — without
/// allocating.
#[test]
fn the_shard_core_decides_another_shards_tenant_without_allocating() {
    let table = RoutingTable::from_policies(vec![policy("plain", false)]).expect("table");
    let config = ShardConfig {
        state: StateConfig::default(),
        idempotency_entries: 64,
        idempotency_bytes: 1 << 20,
        idempotency_ttl_ms: 60_000,
        results_dedup_bytes: 1 << 20,
        results_seen_ttl_ms: 60_000,
    };
    // Shard 0 of two; every tenant is shard 1's.
    let placement = Placement::new(Peer(0), 2, |_| Peer(1));
    let mut core = ShardCore::new(placement, &table, config, 0);
    let req = request("plain", "u");
    let mut out = Vec::with_capacity(4 << 10);
    // The policy is rate-limited: the shard's first request goes to the owner with an ask
    // for a lease (a cold lease), and the owner's grant warms it.
    let cold = Now {
        mono_ns: 1_000,
        unix_ms: 1,
    };
    let step = core.decide(&table, &req, cold, &mut out);
    assert!(matches!(step, Step::NeedsOwner { owner: 1 }), "{step:?}");
    assert_eq!(core.sync_outbox(&table, cold).len(), 1, "one lease ask");
    core.sync_outbox(&table, cold).clear();
    let grant = SyncMsg::LeaseGrant {
        key: policy_key(&table.policies()[0]),
        seq: 1,
        tokens: 2_000,
        expires_ns: u64::MAX / 2,
        next_ns: 0,
    };
    core.on_sync(&table, 1, grant, cold);
    for t in 0..1_000u64 {
        out.clear();
        let now = Now {
            mono_ns: 10_000 + t,
            unix_ms: 1,
        };
        let (n, step) = count(|| core.decide(&table, &req, now, &mut out));
        assert_eq!(n, 0, "shard core, local path, request {t}: {n} allocations");
        match step {
            Step::Answered(d) => {
                assert_eq!(d.answered.counted, Counted::Decided(Reason::Weighted));
            }
            other => panic!("not decided here: {other:?}"),
        }
    }
    assert!(out.starts_with(b"{"), "an answer was written");
}

/// The bench records answers, failures by a code already seen, and outcomes past the
/// timeline's end without touching the heap: every second's histogram exists before the
/// run. The counter is real: the first sight of a code name allocates.
#[test]
fn the_bench_records_outcomes_without_allocating() {
    const S: u64 = 1_000_000_000;
    let start = 7 * S;
    let mut rec = Recorder::with_timeline(Timeline::for_window(start, start + 5 * S, S));
    let internal = Outcome::Error(Code::Named("internal"));
    let (first, ()) = count(|| rec.resolve_at(internal, 0, start));
    assert!(first > 0, "a new code name is stored");
    let (n, ()) = count(|| {
        for i in 0..10_000u64 {
            let at = start + i * (S / 2_000);
            rec.resolve_at(Outcome::Ok, 100 + i % 5_000, at);
            rec.resolve_at(internal, 0, at);
            rec.resolve_at(Outcome::Timeout, 0, at + 60 * S);
        }
    });
    assert_eq!(n, 0, "allocations while recording");
    let seconds = rec.timeline.seconds();
    assert!(seconds[..5].iter().all(|s| s.latency.len() == 2_000));
    assert_eq!(seconds[0].failed, 2_001);
    assert_eq!(rec.timeline.late(), 10_000);
}

/// Shadow traffic costs no allocation: drawing the shadow, and encoding the answer with
/// its `decision.shadow` into a reused buffer.
#[test]
fn shadow_decisions_do_not_allocate() {
    use shardline::answer::encode_outcome;
    use shardline::policy::{ProviderIdx, Shadow};
    let mut shadowed = policy("shadowed", false);
    shadowed.shadow = Box::new([Shadow {
        provider: ProviderIdx(2),
        ppm: 500_000,
    }]);
    shadowed.check();
    let table = RoutingTable::from_policies(vec![shadowed]).expect("table");
    let mut state = ShardState::new(&table, StateConfig::default(), 0);
    let req = request("shadowed", "u");
    let mut out = Vec::with_capacity(4096);
    let mut shadows = 0;
    for t in 0..2_000u64 {
        let now = Now {
            mono_ns: 1_000 + t,
            unix_ms: 1,
        };
        let (n, shadow) = count(|| {
            let outcome = decide(&table, &mut state, &req, now);
            out.clear();
            encode_outcome(&mut out, &table, &req, &outcome);
            outcome.expect("decision").shadow
        });
        assert_eq!(n, 0, "decision {t}: {n} allocations");
        if shadow.is_some() {
            shadows += 1;
            assert!(out.windows(9).any(|w| w == b"\"shadow\":"));
        }
    }
    assert!(
        shadows > 500,
        "{shadows} shadows in 2000 decisions at ratio 0.5"
    );
}

/// A decision of a policy with budgets — the admission check, the candidate filter, the
/// reservation — and its result's settlement allocate nothing once the scope value's
/// ledger exists and the reservations' room has grown to the flow's size.
#[test]
fn budgeted_decisions_and_their_results_do_not_allocate() {
    use shardline::policy::{Budget, BudgetScope, BudgetWindow};
    let mut budgeted = policy("budgeted", false);
    budgeted.budgets = Box::new([
        Budget {
            scope: BudgetScope::Tenant,
            window: BudgetWindow::CalendarMonth,
            max_cost: Some(1e9),
            max_tokens: Some(1 << 40),
            max_requests: None,
        },
        Budget {
            scope: BudgetScope::Metadata("user_id".into()),
            window: BudgetWindow::DAY,
            max_cost: None,
            max_tokens: None,
            max_requests: Some(1 << 40),
        },
    ]);
    budgeted.check();
    let table = RoutingTable::from_policies(vec![budgeted]).expect("table");
    let mut state = ShardState::new(&table, StateConfig::default(), 0);
    let ids: Vec<String> = (0..64).map(|i| format!("r-{i}")).collect();
    let mut requests: Vec<DecideRequest<'_>> = ids
        .iter()
        .map(|id| {
            let mut req = request("budgeted", "u");
            req.request_id = Cow::Borrowed(id);
            req
        })
        .collect();
    let now = |t: u64| Now {
        mono_ns: 1_000 + t,
        unix_ms: 1_800_000_000_000 + t,
    };
    let mut round = |t: u64, counted: bool, requests: &mut [DecideRequest<'_>]| {
        let req = &requests[(t % 64) as usize];
        let (n, _) = count(|| {
            let d = decide(&table, &mut state, req, now(t)).expect("decision");
            let name = &table.policy(d.slot).provider(d.provider).name;
            let call = ("acme", Some(&*req.request_id), &**name);
            assert!(state.settle_budget(&table, call, (Some(0.002), Some(30))));
        });
        if counted {
            assert_eq!(n, 0, "decision and result {t}: {n} allocations");
        }
    };
    for t in 0..500 {
        round(t, false, &mut requests);
    }
    for t in 500..2_500 {
        round(t, true, &mut requests);
    }
    requests.clear();
}
