//! One NATS client thread: a glommio executor driving its share of the connections with
//! the router's own shard-native client (`transport::nats::Client`), so the generator
//! measures the client the platform uses, not a different one.
//!
//! Shape: each thread runs a fixed set of *lanes*, tasks spawned at start, each owning
//! its body buffer and sending one request at a time on connection `lane % connections`
//! through `Client::request` (which bounds the wait with `--timeout-ms`). The number of
//! lanes is the bound on requests in flight: `connections × --pipeline` in open loop,
//! `--concurrency` in closed loop (split over the threads).
//! - **Open loop**: the thread's main future is the pacer. At each intended time
//!   (`Schedule`, as the HTTP path) it hands a ticket carrying that time to an idle lane;
//!   the lane sends and latency counts from the ticket's time, so a late client or a
//!   stalled router shows up as latency (coordinated-omission correction). With every
//!   lane busy the ticket waits for one (counted once in `behind_no_connection`, the
//!   name the report shares with HTTP) and keeps its intended time.
//! - **Closed loop**: lanes send their next request as soon as the answer arrives;
//!   latency counts from the send.
//!
//! Why lanes rather than a task per request: a spawned task per request would allocate
//! per request and leave requests in flight unbounded by construction; lanes are
//! allocated once and are the bound. (The client itself still allocates a reply inbox
//! name and the reply's bytes per request; that is the client the router uses.)
//!
//! Invariants: every measured request sent is resolved exactly once (answered, error by
//! code, shed, or timeout: `request` always returns, at the latest at its timeout); a
//! ticket handed out is always sent, also after the pacer stops; no lane outlives the run.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::timer::Timer;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

use super::mix::{Mix, MixCursor};
use super::record::{histogram, Recorder};
use super::schedule::{wait_step, Schedule, WaitStep};
use super::timeline::Timeline;
use super::wire::{self, Code, Outcome, CONNECTION_CLOSED};
use super::worker::{Progress, StartGate, PROGRESS_INTERVAL_NS};
use super::BenchError;
use crate::transport::http::bare::SHARD_IO_MEMORY_BYTES;
use crate::transport::nats::{Client, ClientOptions, ClientStats, PublishError, RequestError};

/// Time every connection of a thread has to come up before the run starts.
pub const CONNECT_WAIT_MS: u64 = 3_000;
/// A closed-loop lane that found its connection down waits this long before trying
/// again, so a lost server costs no busy loop.
pub const NOT_CONNECTED_BACKOFF_MS: u64 = 10;
/// A lane's body buffer starts at this size (it grows once for a larger body).
const BODY_BYTES_INITIAL: usize = 4096;

/// Client-side error codes of NATS requests (no answer to read a code from).
pub const NO_RESPONDERS: &str = "no_responders";
pub const NOT_CONNECTED: &str = "not_connected";
pub const OUTBOUND_FULL: &str = "outbound_full";
pub const IN_FLIGHT_FULL: &str = "in_flight_full";
pub const TOO_LARGE: &str = "too_large";

/// What every NATS client thread of one run shares (read-only).
#[derive(Debug, Clone)]
pub struct NatsPlan {
    pub opts: ClientOptions,
    /// As given, for messages.
    pub url: String,
    pub subject: String,
    /// Shard-aware: the router's shard count; a request with a tenant goes to
    /// `subject.shard.<owner>`. 0 = every request to `subject`.
    pub owner_shards: usize,
    /// `Some` = open loop at this many requests/s over all threads; `None` = closed loop.
    pub rate_rps: Option<f64>,
    pub threads: usize,
    /// Over all threads.
    pub connections: usize,
    /// Open loop: requests in flight per connection.
    pub pipeline: usize,
    /// Closed loop: requests in flight over all threads.
    pub in_flight: usize,
    pub warmup_ns: u64,
    pub end_ns: u64,
    pub timeout_ns: u64,
    pub spin_ns: u64,
    pub client_cores: Vec<usize>,
}

/// `total` split evenly over `threads`, the first threads taking the rest.
fn share(total: usize, threads: usize, thread: usize) -> usize {
    total / threads + usize::from(thread < total % threads)
}

impl NatsPlan {
    fn connections_of(&self, thread: usize) -> usize {
        share(self.connections, self.threads, thread)
    }

    fn lanes_of(&self, thread: usize) -> usize {
        match self.rate_rps {
            Some(_) => self.connections_of(thread) * self.pipeline,
            None => share(self.in_flight, self.threads, thread),
        }
    }
}

/// The body of NATS client thread `index`: connect, wait for the start, run, report.
pub fn client_thread(
    index: usize,
    plan: &NatsPlan,
    mix: &Mix,
    progress: &Progress,
    gate: &StartGate,
) -> Result<Recorder, BenchError> {
    let placement = match plan.client_cores.is_empty() {
        true => Placement::Unbound,
        false => Placement::Fixed(plan.client_cores[index % plan.client_cores.len()]),
    };
    let executor = LocalExecutorBuilder::new(placement)
        .io_memory(SHARD_IO_MEMORY_BYTES)
        .make();
    let executor = match executor {
        Ok(executor) => executor,
        Err(e) => {
            gate.arrive(false);
            return Err(BenchError::Executor(e.to_string()));
        }
    };
    super::sys::precise_timers();
    executor.run(run_thread(index, plan, mix, progress, gate))
}

async fn run_thread(
    index: usize,
    plan: &NatsPlan,
    mix: &Mix,
    progress: &Progress,
    gate: &StartGate,
) -> Result<Recorder, BenchError> {
    let clients = connect_all(index, plan).await;
    // Arrive even on failure, so that the others are not left waiting for this thread.
    let start = gate.arrive(clients.is_ok());
    let clients = clients?;
    let Some(start) = start else {
        close_all(&clients).await;
        return Err(BenchError::Aborted);
    };
    let shared = Rc::new(Shared::new(plan, mix, index, start));
    Timer::new(start.saturating_duration_since(Instant::now())).await;
    let lanes: Vec<_> = (0..plan.lanes_of(index))
        .map(|l| {
            let client = clients[l % clients.len()].clone();
            glommio::spawn_local(lane(Rc::clone(&shared), client))
        })
        .collect();
    let schedule = plan
        .rate_rps
        .map(|rate| Schedule::new(rate, index, plan.threads));
    match schedule {
        Some(schedule) => pace(&shared, schedule, plan, progress).await,
        None => watch_closed(&shared, plan, progress).await,
    }
    shared.finish();
    for lane in lanes {
        lane.await;
    }
    if let Some(schedule) = schedule {
        // After the lanes: a ticket handed out is sent even after the pacer stopped.
        let planned = schedule.planned(plan.warmup_ns, plan.end_ns);
        let mut st = shared.st.borrow_mut();
        st.rec.unsent = planned.saturating_sub(st.rec.sent);
    }
    shared.publish_progress(progress);
    close_all(&clients).await;
    let rec = std::mem::take(&mut shared.st.borrow_mut().rec);
    debug_assert!(rec.counts().add_up(), "{:?}", rec.counts());
    Ok(rec)
}

/// Starts this thread's clients and waits until every one is connected.
async fn connect_all(index: usize, plan: &NatsPlan) -> Result<Vec<Client>, BenchError> {
    let clients: Vec<Client> = (0..plan.connections_of(index))
        .map(|c| {
            let seed = ((index as u64) << 32) | c as u64;
            Client::start(plan.opts.clone(), Arc::new(ClientStats::default()), seed)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_millis(CONNECT_WAIT_MS);
    while !clients.iter().all(Client::is_connected) {
        if Instant::now() >= deadline {
            close_all(&clients).await;
            return Err(BenchError::NatsConnect {
                url: crate::config::redacted_url(&plan.url),
                timeout_ms: CONNECT_WAIT_MS,
            });
        }
        Timer::new(Duration::from_millis(5)).await;
    }
    Ok(clients)
}

async fn close_all(clients: &[Client]) {
    for c in clients {
        c.close().await;
    }
}

/// The state of one thread's run, shared by its pacer and lanes (one executor: no locks).
struct Shared {
    subject: String,
    /// Shard-aware: the partition and each shard's subject.
    owners: Option<(shards::Partitioner, Vec<String>)>,
    mix: Mix,
    cursor: RefCell<MixCursor>,
    start: Instant,
    warmup_ns: u64,
    end_ns: u64,
    timeout: Duration,
    open: bool,
    st: RefCell<State>,
}

struct State {
    rec: Recorder,
    /// Answered latencies since the last progress publication.
    interval: Histogram<u64>,
    /// Requests sent, warmup included.
    sent_all: u64,
    /// Open loop: intended times handed out and not yet taken by a lane.
    tickets: VecDeque<u64>,
    /// Lanes waiting for a ticket.
    idle: VecDeque<Waker>,
    /// Open loop: lanes neither holding nor promised a ticket.
    free: usize,
    /// The pacer, waiting for a free lane.
    pacer: Option<Waker>,
    /// No more tickets: idle lanes end.
    done: bool,
}

impl Shared {
    fn new(plan: &NatsPlan, mix: &Mix, index: usize, start: Instant) -> Shared {
        let lanes = plan.lanes_of(index);
        let owners = (plan.owner_shards > 0).then(|| {
            let subjects = (0..plan.owner_shards)
                .map(|i| format!("{}.shard.{i}", plan.subject))
                .collect();
            (shards::Partitioner::new(plan.owner_shards), subjects)
        });
        Shared {
            subject: plan.subject.clone(),
            owners,
            mix: mix.clone(),
            cursor: RefCell::new(MixCursor::new(index)),
            start,
            warmup_ns: plan.warmup_ns,
            end_ns: plan.end_ns,
            timeout: Duration::from_nanos(plan.timeout_ns),
            open: plan.rate_rps.is_some(),
            st: RefCell::new(State {
                // A measured request resolves within its timeout after the window.
                rec: Recorder::with_timeline(Timeline::for_window(
                    plan.warmup_ns,
                    plan.end_ns,
                    plan.timeout_ns,
                )),
                interval: histogram(),
                sent_all: 0,
                tickets: VecDeque::with_capacity(lanes),
                idle: VecDeque::with_capacity(lanes),
                free: lanes,
                pacer: None,
                done: false,
            }),
        }
    }

    fn now_ns(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.start)
            .as_nanos() as u64
    }

    /// Open loop: hands `intended` to a free lane; `false` when every lane is busy.
    fn try_give(&self, intended: u64) -> bool {
        let mut st = self.st.borrow_mut();
        if st.free == 0 {
            return false;
        }
        st.free -= 1;
        st.tickets.push_back(intended);
        if let Some(w) = st.idle.pop_front() {
            w.wake();
        }
        true
    }

    /// A lane's next intended send time (open loop); `None` once the run is over.
    async fn take_ticket(&self) -> Option<u64> {
        std::future::poll_fn(|cx| {
            let mut st = self.st.borrow_mut();
            if let Some(t) = st.tickets.pop_front() {
                return Poll::Ready(Some(t));
            }
            if st.done {
                return Poll::Ready(None);
            }
            st.idle.push_back(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Open loop: a lane finished its request and is free again.
    fn lane_freed(&self) {
        let mut st = self.st.borrow_mut();
        st.free += 1;
        if let Some(w) = st.pacer.take() {
            w.wake();
        }
    }

    /// Open loop: waits until a lane is free, or `timeout`.
    async fn wait_free_lane(&self, timeout: Duration) {
        let free = std::future::poll_fn(|cx| {
            let mut st = self.st.borrow_mut();
            if st.free > 0 {
                return Poll::Ready(());
            }
            st.pacer = Some(cx.waker().clone());
            Poll::Pending
        });
        future::or(free, async {
            Timer::new(timeout).await;
        })
        .await;
    }

    /// No more tickets: idle lanes end, busy ones after their request.
    fn finish(&self) {
        let mut st = self.st.borrow_mut();
        st.done = true;
        for w in st.idle.drain(..) {
            w.wake();
        }
    }

    fn on_send(&self, intended_ns: u64, now_ns: u64) -> bool {
        let measured = intended_ns >= self.warmup_ns;
        let mut st = self.st.borrow_mut();
        st.sent_all += 1;
        if measured {
            st.rec.sent += 1;
            if self.open {
                let lag_us = now_ns.saturating_sub(intended_ns) / 1000;
                st.rec.send_lag.saturating_record(lag_us);
            }
        }
        measured
    }

    /// Records an outcome that arrived at `now_ns`.
    fn resolve(&self, outcome: Outcome<'_>, now_ns: u64, intended_ns: u64, measured: bool) {
        let latency_us = now_ns.saturating_sub(intended_ns) / 1000;
        let mut st = self.st.borrow_mut();
        if outcome == Outcome::Ok {
            st.interval.saturating_record(latency_us);
        }
        if measured {
            st.rec.resolve_at(outcome, latency_us, now_ns);
        }
    }

    fn behind(&self, intended_ns: u64, progress: &Progress) {
        let measured = u64::from(intended_ns >= self.warmup_ns);
        self.st.borrow_mut().rec.behind_no_connection += measured;
        progress.behind.fetch_add(1, Ordering::Relaxed);
    }

    fn publish_progress(&self, progress: &Progress) {
        let mut st = self.st.borrow_mut();
        progress.sent.store(st.sent_all, Ordering::Relaxed);
        let mut shared = progress.latency.lock().unwrap_or_else(|e| e.into_inner());
        // Same bounds on both sides: addition cannot fail.
        shared.add(&st.interval).expect("same bounds");
        st.interval.reset();
    }
}

/// One lane: sends a request, waits for its answer (or timeout), records it, repeats.
async fn lane(shared: Rc<Shared>, client: Client) {
    let mut body = Vec::with_capacity(BODY_BYTES_INITIAL);
    let mut trace = String::with_capacity(32);
    loop {
        let intended = if shared.open {
            match shared.take_ticket().await {
                Some(t) => t,
                None => return,
            }
        } else {
            let now = shared.now_ns();
            if now >= shared.end_ns {
                return;
            }
            now
        };
        let tenant = shared
            .cursor
            .borrow_mut()
            .next_request(&shared.mix, &mut body, &mut trace);
        let with_tenant;
        let headers: &[(&str, &str)] = match tenant {
            Some(t) => {
                with_tenant = [("tenant_id", t), ("trace_id", trace.as_str())];
                &with_tenant
            }
            None => &[("trace_id", trace.as_str())][..],
        };
        let subject = match (&shared.owners, tenant) {
            (Some((partition, subjects)), Some(t)) => &subjects[partition.shard_of(t).index()],
            _ => &shared.subject,
        };
        let measured = shared.on_send(intended, shared.now_ns());
        let result = client
            .request(subject, headers, &body, shared.timeout)
            .await;
        shared.resolve(outcome_of(&result), shared.now_ns(), intended, measured);
        if shared.open {
            shared.lane_freed();
        } else if matches!(result, Err(RequestError::NotConnected)) {
            Timer::new(Duration::from_millis(NOT_CONNECTED_BACKOFF_MS)).await;
        }
    }
}

/// What a request's result counts as: a reply is classified by its body, as an HTTP
/// answer is; a failure without a reply by the client-side code.
pub fn outcome_of(result: &Result<crate::transport::nats::Reply, RequestError>) -> Outcome<'_> {
    let named = |code| Outcome::Error(Code::Named(code));
    match result {
        Ok(reply) => wire::classify_reply(&reply.payload),
        Err(RequestError::Timeout(_)) => Outcome::Timeout,
        Err(RequestError::NoResponders(_)) => named(NO_RESPONDERS),
        Err(RequestError::NotConnected) => named(NOT_CONNECTED),
        Err(RequestError::Overloaded) => named(IN_FLIGHT_FULL),
        Err(RequestError::Publish(PublishError::Overloaded)) => named(OUTBOUND_FULL),
        Err(RequestError::Publish(PublishError::Encode(_))) => named(TOO_LARGE),
        Err(RequestError::Publish(PublishError::Closed)) => named(CONNECTION_CLOSED),
    }
}

/// Open loop: hands out the schedule's tickets until the end of the run.
async fn pace(shared: &Shared, schedule: Schedule, plan: &NatsPlan, progress: &Progress) {
    let end = plan.end_ns;
    let mut next = 0;
    let mut stalled = u64::MAX;
    let mut next_progress = PROGRESS_INTERVAL_NS;
    loop {
        let now = shared.now_ns();
        let intended = schedule.intended_ns(next);
        if intended >= end || now >= end {
            return;
        }
        if now >= next_progress {
            shared.publish_progress(progress);
            next_progress = now + PROGRESS_INTERVAL_NS;
        }
        if intended <= now {
            if shared.try_give(intended) {
                next += 1;
                continue;
            }
            if stalled != next {
                stalled = next;
                shared.behind(intended, progress);
            }
            let wake = next_progress.min(end).saturating_sub(now);
            shared.wait_free_lane(Duration::from_nanos(wake)).await;
            continue;
        }
        let step = if intended <= next_progress {
            wait_step(now, intended, plan.spin_ns)
        } else {
            WaitStep::Sleep(Duration::from_nanos(next_progress - now))
        };
        match step {
            WaitStep::Due => {}
            WaitStep::Sleep(d) => {
                Timer::new(d).await;
            }
            WaitStep::Spin => future::yield_now().await,
        }
    }
}

/// Closed loop: the lanes do the work; this publishes progress until the end.
async fn watch_closed(shared: &Shared, plan: &NatsPlan, progress: &Progress) {
    loop {
        let now = shared.now_ns();
        if now >= plan.end_ns {
            return;
        }
        let wake = (now + PROGRESS_INTERVAL_NS).min(plan.end_ns) - now;
        Timer::new(Duration::from_nanos(wake)).await;
        shared.publish_progress(progress);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lanes: connections × pipeline in open loop, the concurrency split in closed loop.
    #[test]
    fn lanes_bound_the_requests_in_flight() {
        let mut plan = NatsPlan {
            opts: ClientOptions::plain("nats://127.0.0.1:4222").unwrap(),
            url: String::new(),
            subject: "s".into(),
            owner_shards: 0,
            rate_rps: Some(100.0),
            threads: 2,
            connections: 3,
            pipeline: 10,
            in_flight: 7,
            warmup_ns: 0,
            end_ns: 0,
            timeout_ns: 0,
            spin_ns: 0,
            client_cores: Vec::new(),
        };
        assert_eq!((plan.lanes_of(0), plan.lanes_of(1)), (20, 10));
        plan.rate_rps = None;
        assert_eq!((plan.lanes_of(0), plan.lanes_of(1)), (4, 3));
    }

    /// Failures without a reply count under their client-side codes, never as answers.
    #[test]
    fn request_failures_have_codes() {
        let timeout: Result<crate::transport::nats::Reply, _> = Err(RequestError::Timeout(5));
        assert_eq!(outcome_of(&timeout), Outcome::Timeout);
        let none = Err(RequestError::NoResponders("s".into()));
        assert_eq!(
            outcome_of(&none),
            Outcome::Error(Code::Named(NO_RESPONDERS))
        );
        let shed = Ok(crate::transport::nats::Reply {
            headers: None,
            payload: br#"{"ok":false,"error":{"code":"overloaded"}}"#.to_vec(),
        });
        assert_eq!(outcome_of(&shed), Outcome::Shed(Code::Named("overloaded")));
    }
}
