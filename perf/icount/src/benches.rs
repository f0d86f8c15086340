//! The measured code. Each benchmark builds its inputs and hands one operation to
//! `warm_then_measure`: `WARMUP_ITERATIONS` uncounted (sticky entries exist, buffers have
//! grown, lazy statics are set), then `ITERATIONS` inside `measured`, the one function
//! callgrind counts in (`--toggle-collect`). One benchmark runs per process, so the one
//! symbol serves them all.
//!
//! Determinism: the shard state takes a fixed seed (`StateConfig::default`), the routing
//! table hashes with fixed seeds (`from_policies_fixed_hash`), time is a `Now` that
//! advances by a fixed step, and nothing here reads a clock or does I/O. So a count
//! changes only when the code, the compiler or the machine does.
//!
//! Why one generic `measured` and not a function per benchmark: identical bodies get folded
//! into one symbol by the optimiser, and the others then count nothing.

use std::hint::black_box;
use std::mem::MaybeUninit;

use shardline::answer::encode_outcome;
use shardline::contract::{decode_decide, Headers};
use shardline::decide::sync::policy_key;
use shardline::decide::{
    decide, Now, Observed, Outcome, Peer, Placement, ShardState, StateConfig, SyncMsg,
};
use shardline::policy::{parse_policy, RoutingTable};
use shardline::server::handoff::{Msg, Reply};
use shardline::shard::{ShardConfig, ShardCore, Step};
use shardline::transport::http::{
    parse_request, ChunkedDecoder, HttpLimits, Parsed, HEADERS_CEILING_MAX,
};
use shards::ring::{ring, Consumer, Producer};
use shards::{Batch, Mesh, ShardEnd, ShardId};

/// Operations counted per benchmark; the reported count is the total divided by this.
pub const ITERATIONS: u64 = 100;
/// Operations run before counting starts.
pub const WARMUP_ITERATIONS: u64 = 100;
/// Slots of the measured ring: the server's default.
const RING_SLOTS: usize = 1024;

/// A benchmark: its metric name and its body (setup, warm-up, one measured call).
pub struct Bench {
    pub name: &'static str,
    pub run: fn(),
}

/// Every benchmark, in report order.
pub const BENCHES: [Bench; 8] = [
    Bench {
        name: "decide_weighted",
        run: decide_weighted,
    },
    Bench {
        name: "shard_core_decide_leased",
        run: shard_core_decide_leased,
    },
    Bench {
        name: "decide_sticky_hit",
        run: decide_sticky_hit,
    },
    Bench {
        name: "decide_least_latency_8",
        run: decide_least_latency_8,
    },
    Bench {
        name: "decide_budgeted_settled",
        run: decide_budgeted_settled,
    },
    Bench {
        name: "ring_push_pop",
        run: ring_push_pop,
    },
    Bench {
        name: "mesh_send_drain",
        run: mesh_send_drain,
    },
    Bench {
        name: "http_parse",
        run: http_parse,
    },
];

/// The callgrind `--toggle-collect` pattern of `measured`, demangled; `*` stands for the
/// crate name. The fixed end keeps closures (`…::measured::{{closure}}`) from matching:
/// entering one would toggle counting off again.
pub const MEASURED_PATTERN: &str = "*::benches::measured";

/// Runs `op` uncounted to steady state, then counted.
fn warm_then_measure(mut op: impl FnMut()) {
    for _ in 0..WARMUP_ITERATIONS {
        op();
    }
    measured(&mut op);
}

/// The counted region: `ITERATIONS` operations.
#[inline(never)]
fn measured<F: FnMut()>(op: &mut F) {
    for _ in 0..ITERATIONS {
        op();
    }
}

#[path = "../../../benches/fixtures/policies.rs"]
mod fixtures;
use fixtures::{BUDGETED, LEAST_LATENCY_8, STICKY, TYPICAL as WEIGHTED_REQUEST, WEIGHTED};

/// The same request for the sticky policy; every call after the first is a sticky hit.
const STICKY_REQUEST: &[u8] = br#"{"version":"1","request_id":"req-7f3a9c2e","tenant_id":"acme",
"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","task":{"type":"chat",
"payload_ref":"s3://acme/prompts/7f3a9c2e.json"},"policy_id":"sticky",
"metadata":{"user_id":"u-42","region":"eu-west-1"}}"#;

/// What a transport holds while it answers decide requests on one shard.
struct RoundTrip {
    table: RoutingTable,
    state: ShardState,
    /// On the heap, as a connection's read buffer is: a static's alignment moves with the
    /// code around it, and copies from it would count differently from build to build.
    body: Vec<u8>,
    out: Vec<u8>,
    mono_ns: u64,
}

impl RoundTrip {
    fn new(body: &'static [u8]) -> RoundTrip {
        let policy = |id, doc: &str| parse_policy("acme", id, id, doc.as_bytes()).expect("policy");
        let policies = vec![policy("weighted", WEIGHTED), policy("sticky", STICKY)];
        let table = RoutingTable::from_policies_fixed_hash(policies).expect("table");
        let state = ShardState::new(&table, StateConfig::default(), 0);
        RoundTrip {
            table,
            state,
            body: body.to_vec(),
            out: Vec::with_capacity(4096),
            mono_ns: 1_000_000_000,
        }
    }

    /// decode → decide → encode, as the HTTP transport runs them; a millisecond later
    /// each time, well inside the sticky TTL.
    #[inline(never)]
    fn step(&mut self) -> usize {
        self.mono_ns += 1_000_000;
        let now = Now {
            mono_ns: self.mono_ns,
            unix_ms: 1_800_000_000_000,
        };
        let req = decode_decide(black_box(&self.body), &Headers::default()).expect("request");
        let outcome = decide(&self.table, &mut self.state, &req, now);
        assert!(outcome.is_ok(), "the measured request is decided");
        self.out.clear();
        encode_outcome(&mut self.out, &self.table, &req, &outcome);
        black_box(self.out.len())
    }
}

fn decide_weighted() {
    let mut rt = RoundTrip::new(WEIGHTED_REQUEST);
    warm_then_measure(|| {
        rt.step();
    });
}

fn decide_sticky_hit() {
    let mut rt = RoundTrip::new(STICKY_REQUEST);
    warm_then_measure(|| {
        rt.step();
    });
}

/// `decide` alone (no decode, no encode) with `least_latency` over eight providers, each
/// measured by one result with a different latency: two weighted draws and two scores,
/// the engine's share of a balanced request, as the criterion bench
/// `decide/least_latency_8` times it.
fn decide_least_latency_8() {
    let id = "least_latency";
    let policy = parse_policy("acme", id, id, LEAST_LATENCY_8.as_bytes()).expect("policy");
    let table = RoutingTable::from_policies_fixed_hash(vec![policy]).expect("table");
    let mut state = ShardState::new(&table, StateConfig::default(), 0);
    let slot = table.lookup("acme", id).expect("policy");
    for (i, p) in table.policy(slot).providers.iter().enumerate() {
        let observed = Observed {
            outcome: Some(Outcome::Success),
            latency_ms: Some(200.0 + 50.0 * i as f64),
            cost: None,
        };
        state.record_result(&table, "acme", &p.name, observed, 1);
    }
    let body =
        String::from_utf8_lossy(WEIGHTED_REQUEST).replace("\"weighted\"", "\"least_latency\"");
    let req = decode_decide(body.as_bytes(), &Headers::default()).expect("request");
    let mut mono_ns = 1_000_000_000u64;
    warm_then_measure(|| {
        mono_ns += 1_000_000;
        let now = Now {
            mono_ns,
            unix_ms: 1_800_000_000_000,
        };
        let outcome = decide(&table, &mut state, black_box(&req), now);
        black_box(outcome.is_ok());
    });
}

/// `decide` alone under two budgets (admission in the tenant's and the user's ledger, the
/// candidate filter, the reservation), then the settlement of its result: what budgets
/// add per call, as the criterion bench `decide/budgeted_and_settled` times it.
fn decide_budgeted_settled() {
    let id = "budgeted";
    let policy = parse_policy("acme", id, id, BUDGETED.as_bytes()).expect("policy");
    let table = RoutingTable::from_policies_fixed_hash(vec![policy]).expect("table");
    let mut state = ShardState::new(&table, StateConfig::default(), 0);
    let body = String::from_utf8_lossy(WEIGHTED_REQUEST).replace("\"weighted\"", "\"budgeted\"");
    let req = decode_decide(body.as_bytes(), &Headers::default()).expect("request");
    let mut mono_ns = 1_000_000_000u64;
    warm_then_measure(|| {
        mono_ns += 1_000_000;
        let now = Now {
            mono_ns,
            unix_ms: 1_800_000_000_000,
        };
        let d = decide(&table, &mut state, black_box(&req), now).expect("decision");
        let name = &table.policy(d.slot).provider(d.provider).name;
        let call = ("acme", Some(&*req.request_id), &**name);
        black_box(state.settle_budget(&table, call, (Some(0.002), Some(300))));
    });
}

/// The request path of a shard deciding another shard's tenant under a rate limit, as
/// every transport runs it: decode → `ShardCore::decide` (the lifecycle's choice, a token
/// from the lease the owner granted, the engine, the answer) — the whole core path with
/// no crossing.
fn shard_core_decide_leased() {
    let doc = WEIGHTED.replace(
        r#""circuit_breaker":{"enabled":true}}"#,
        r#""circuit_breaker":{"enabled":true},"rate_limit":{"enabled":true,"requests_per_second":1000000,"burst":1000000}}"#,
    );
    assert_ne!(
        doc, WEIGHTED,
        "the fixture changed: the rate limit was not added"
    );
    let policy = parse_policy("acme", "weighted", "weighted", doc.as_bytes()).expect("policy");
    let table = RoutingTable::from_policies_fixed_hash(vec![policy]).expect("table");
    let config = ShardConfig {
        state: StateConfig::default(),
        idempotency_entries: 1024,
        idempotency_bytes: 1 << 20,
        idempotency_ttl_ms: 600_000,
        results_dedup_bytes: 1 << 20,
        results_seen_ttl_ms: 600_000,
    };
    let mut core = ShardCore::new(Placement::new(Peer(0), 2, |_| Peer(1)), &table, config, 0);
    let body = WEIGHTED_REQUEST.to_vec();
    let mut out = Vec::with_capacity(4096);
    let mut mono_ns = 1_000_000_000u64;
    let mut now = || {
        mono_ns += 1_000_000;
        Now {
            mono_ns,
            unix_ms: 1_800_000_000_000,
        }
    };
    // Warm the lease as the owner would: the first request finds it cold and asks.
    let req = decode_decide(&body, &Headers::default()).expect("request");
    let first = now();
    assert!(matches!(
        core.decide(&table, &req, first, &mut out),
        Step::NeedsOwner { .. }
    ));
    core.sync_outbox(&table, first).clear();
    let grant = SyncMsg::LeaseGrant {
        key: policy_key(&table.policies()[0]),
        seq: 1,
        tokens: 1_000_000_000,
        expires_ns: u64::MAX / 2,
        next_ns: 0,
    };
    core.on_sync(&table, 1, grant, first);
    warm_then_measure(|| {
        let req = decode_decide(black_box(&body), &Headers::default()).expect("request");
        out.clear();
        let step = core.decide(&table, &req, now(), &mut out);
        assert!(matches!(step, Step::Answered(_)), "decided where it landed");
        black_box(out.len());
    });
}

/// The message a shard hands over: the server's own type, a reply with an empty body
/// (moving it allocates nothing, so the count is the ring's).
fn message() -> Msg {
    let reply = Reply {
        status: 200,
        retry_after_s: None,
        body: Vec::new(),
        assignment: None,
    };
    Msg::Reply { slot: 7, reply }
}

/// One push and one pop on one thread; the message goes round again. The count includes
/// moving the 40-odd-byte message in and out of `held`, as a shard moves it in and out of
/// its own state.
#[inline(never)]
fn push_pop(producer: &mut Producer<Msg>, consumer: &mut Consumer<Msg>, held: &mut Option<Msg>) {
    let msg = held.take().expect("the message came back");
    if producer.try_push(msg).is_err() {
        unreachable!("an empty ring has room");
    }
    *held = consumer.try_pop();
}

fn ring_push_pop() {
    let (mut producer, mut consumer) = ring::<Msg>(RING_SLOTS);
    let mut held = Some(message());
    warm_then_measure(|| push_pop(&mut producer, &mut consumer, &mut held));
    black_box(held);
}

/// A handoff as the server makes it: `try_send` (push, fence, wake check) from one
/// shard's end, `drain_into` (round-robin over inbound rings) on the other's.
#[inline(never)]
fn send_drain(
    from: &mut ShardEnd<Msg>,
    to: &mut ShardEnd<Msg>,
    batch: &mut Batch<Msg>,
    held: &mut Option<Msg>,
) {
    let msg = held.take().expect("the message came back");
    if from.try_send(ShardId(1), msg).is_err() {
        unreachable!("an empty ring to a live shard has room");
    }
    to.drain_into(batch);
    *held = batch.drain().next().map(|envelope| envelope.msg);
}

fn mesh_send_drain() {
    let mut ends = Mesh::<Msg>::new(2, RING_SLOTS).into_ends();
    let mut to = ends.pop().expect("shard 1");
    let mut from = ends.pop().expect("shard 0");
    let mut batch = Batch::with_limit(1);
    let mut held = Some(message());
    warm_then_measure(|| send_drain(&mut from, &mut to, &mut batch, &mut held));
    black_box(held);
}

/// A decide request as `shardline bench` sends it, with the contract headers a client
/// adds: eight headers and the 330-byte body.
fn http_request() -> Vec<u8> {
    let mut head = String::from(
        "POST /v1/decide HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
         User-Agent: shardline-client/1.0\r\nAccept: application/json\r\n\
         Content-Type: application/json\r\nX-Tenant-Id: acme\r\n\
         traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
         Connection: keep-alive\r\n",
    );
    head += &format!("Content-Length: {}\r\n\r\n", WEIGHTED_REQUEST.len());
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(WEIGHTED_REQUEST);
    bytes
}

/// What a connection holds between reads.
struct Connection {
    buf: Vec<u8>,
    limits: HttpLimits,
    decoder: ChunkedDecoder,
    body: Vec<u8>,
}

impl Connection {
    /// One `parse_request` over the buffered request, as the connection calls it.
    #[inline(never)]
    fn parse(&mut self) -> usize {
        let mut storage = [const { MaybeUninit::uninit() }; HEADERS_CEILING_MAX];
        let headers = &mut storage[..self.limits.headers_max];
        let parsed = parse_request(
            black_box(&self.buf),
            headers,
            &self.limits,
            &mut self.decoder,
            &mut self.body,
        );
        match parsed {
            Ok(Parsed::Complete { request, len }) => black_box(request.headers.len() + len),
            other => panic!("the measured request parses whole: {other:?}"),
        }
    }
}

fn http_parse() {
    let mut conn = Connection {
        buf: http_request(),
        limits: HttpLimits::default(),
        decoder: ChunkedDecoder::default(),
        body: Vec::new(),
    };
    warm_then_measure(|| {
        conn.parse();
    });
}
