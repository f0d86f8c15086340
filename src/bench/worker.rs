//! One client thread: its share of the connections, driven from one epoll loop.
//!
//! Why non-blocking sockets and epoll rather than blocking sockets: an open-loop thread
//! must send on time while answers are outstanding on its other connections; a blocking
//! read would hold every later send hostage (the very coordinated omission the schedule
//! exists to avoid), and a thread per connection would put dozens of runnable threads on
//! the router's two cores. With epoll one thread sends, reads and times everything, and
//! it sleeps in the kernel whenever nothing is due.
//!
//! Invariants:
//! - keep-alive, and at most `pipeline` requests in flight per connection (1 unless
//!   `--pipeline`); answers are matched to requests in order;
//! - every measured request sent is resolved exactly once: answered, error, shed or
//!   timeout (`fail` resolves whatever a dropped connection still had in flight);
//! - open loop: requests are taken from the schedule in order; one that finds no free
//!   connection waits for one (counted once in `behind_no_connection`) and keeps its
//!   intended time, so the wait shows up as latency;
//! - every buffer is bounded: a read buffer grows to one maximal response, a write
//!   buffer holds at most `pipeline` requests, the free-slot queue at most
//!   `connections × pipeline` entries.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::mix::{Mix, MixCursor};
use super::poll::{Poller, Ready};
use super::record::{histogram, Recorder};
use super::schedule::{wait_step, Schedule, WaitStep};
use super::timeline::Timeline;
use super::wire::{self, Code, Outcome, Parsed, BAD_RESPONSE, CONNECTION_CLOSED};
use super::BenchError;

/// Timeouts, reconnects and progress are looked at this often.
pub const HOUSEKEEPING_INTERVAL_NS: u64 = 5_000_000;
/// A thread publishes its latencies for the progress line this often (several times per
/// printed line, so that each line is current).
pub const PROGRESS_INTERVAL_NS: u64 = 200_000_000;
/// Time allowed to open one connection.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// After a failed connection attempt, the next one waits this long.
pub const RECONNECT_BACKOFF_NS: u64 = 100_000_000;
/// A connection's read buffer starts at this size…
pub const READ_BUFFER_BYTES_INITIAL: usize = 16 * 1024;
/// …and grows, doubling, to one maximal response at most.
pub const READ_BUFFER_BYTES_MAX: usize =
    wire::RESPONSE_HEAD_BYTES_MAX + wire::RESPONSE_BODY_BYTES_MAX;

const CLOSED: Outcome<'static> = Outcome::Error(Code::Named(CONNECTION_CLOSED));

/// What every client thread of one run shares (read-only).
#[derive(Debug, Clone)]
pub struct Plan {
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// `Some` = open loop at this many requests/s over all threads; `None` = closed loop.
    pub rate_rps: Option<f64>,
    pub threads: usize,
    /// Over all threads.
    pub connections: usize,
    pub pipeline: usize,
    /// Requests intended (open) or sent (closed) before this are warmup.
    pub warmup_ns: u64,
    /// Nothing is sent at or after this.
    pub end_ns: u64,
    pub timeout_ns: u64,
    pub spin_ns: u64,
    /// Thread `i` is pinned to `client_cores[i % len]`; empty = not pinned.
    pub client_cores: Vec<usize>,
}

impl Plan {
    /// Thread `thread`'s connections: an even split, the first threads taking the rest.
    pub fn connections_of(&self, thread: usize) -> usize {
        self.connections / self.threads + usize::from(thread < self.connections % self.threads)
    }
}

/// What a client thread shows the progress line while it runs.
pub struct Progress {
    /// Requests sent, warmup included.
    pub sent: AtomicU64,
    /// Open loop: requests that found every connection busy, warmup included.
    pub behind: AtomicU64,
    /// Answered-200 latencies so far (µs), warmup included, published every second.
    pub latency: Mutex<Histogram<u64>>,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            sent: AtomicU64::new(0),
            behind: AtomicU64::new(0),
            latency: Mutex::new(histogram()),
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// Lets every thread connect first, then starts them all at one instant.
pub struct StartGate {
    threads: usize,
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    arrived: usize,
    start: Option<Instant>,
    aborted: bool,
}

impl StartGate {
    pub fn new(threads: usize) -> StartGate {
        StartGate {
            threads,
            state: Mutex::new(GateState::default()),
            changed: Condvar::new(),
        }
    }

    /// A thread is ready (`ok`) or could not get ready; returns the start instant, or
    /// `None` when the run was aborted.
    pub fn arrive(&self, ok: bool) -> Option<Instant> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.arrived += 1;
        state.aborted |= !ok;
        self.changed.notify_all();
        loop {
            if state.aborted {
                return None;
            }
            if let Some(start) = state.start {
                return Some(start);
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits for every thread, then starts them all `lead` from now and returns the
    /// start; `None` when a thread could not get ready (the others are sent home).
    pub fn release(&self, lead: Duration) -> Option<Instant> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while state.arrived < self.threads && !state.aborted {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.aborted {
            return None;
        }
        let start = Instant::now() + lead;
        state.start = Some(start);
        self.changed.notify_all();
        Some(start)
    }

    /// Sends every waiting (and later arriving) thread home.
    pub fn abort(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.aborted = true;
        self.changed.notify_all();
    }
}

/// The body of client thread `index`: connect, wait for the start, run, report.
pub fn client_thread(
    index: usize,
    plan: &Plan,
    mix: &Mix,
    progress: &Progress,
    gate: &StartGate,
) -> Result<Recorder, BenchError> {
    let prepared = Worker::prepare(index, plan, mix, progress);
    // Arrive even on failure, so that the others are not left waiting for this thread.
    let start = gate.arrive(prepared.is_ok());
    let worker = prepared?;
    match start {
        Some(start) => worker.run(start),
        None => Err(BenchError::Aborted),
    }
}

/// One request on the wire.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    intended_ns: u64,
    sent_ns: u64,
    measured: bool,
}

struct Conn {
    /// `None` while disconnected.
    stream: Option<TcpStream>,
    in_flight: VecDeque<InFlight>,
    rbuf: Vec<u8>,
    filled: usize,
    wbuf: Vec<u8>,
    wpos: usize,
    watching_write: bool,
    retry_at_ns: u64,
}

struct Worker<'a> {
    index: usize,
    plan: &'a Plan,
    mix: &'a Mix,
    progress: &'a Progress,
    cursor: MixCursor,
    poller: Poller,
    conns: Vec<Conn>,
    /// Open loop: one entry per free request slot (connection index).
    slots: VecDeque<usize>,
    rec: Recorder,
    /// Latencies since the last progress publication.
    interval: Histogram<u64>,
    body: Vec<u8>,
    ready: Vec<Ready>,
    start: Instant,
    measured_in_flight: u64,
    next_housekeeping_ns: u64,
    next_progress_ns: u64,
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(CONNECT_TIMEOUT_MS))?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}

impl<'a> Worker<'a> {
    fn prepare(
        index: usize,
        plan: &'a Plan,
        mix: &'a Mix,
        progress: &'a Progress,
    ) -> Result<Worker<'a>, BenchError> {
        if !plan.client_cores.is_empty() {
            let core = plan.client_cores[index % plan.client_cores.len()];
            super::sys::pin_current_thread(core)
                .map_err(|error| BenchError::Pin { core, error })?;
        }
        super::sys::precise_timers();
        let poller = Poller::new().map_err(BenchError::Poll)?;
        let count = plan.connections_of(index);
        let mut conns = Vec::with_capacity(count);
        for token in 0..count {
            let stream = connect(plan.addr).map_err(|error| BenchError::Connect {
                addr: plan.addr,
                error,
            })?;
            poller
                .add(stream.as_raw_fd(), token, false)
                .map_err(BenchError::Poll)?;
            conns.push(Conn {
                stream: Some(stream),
                in_flight: VecDeque::with_capacity(plan.pipeline),
                rbuf: vec![0; READ_BUFFER_BYTES_INITIAL],
                filled: 0,
                wbuf: Vec::with_capacity(4096),
                wpos: 0,
                watching_write: false,
                retry_at_ns: 0,
            });
        }
        Ok(Worker {
            index,
            plan,
            mix,
            progress,
            cursor: MixCursor::new(index),
            poller,
            conns,
            slots: VecDeque::with_capacity(count * plan.pipeline),
            // Every measured request resolves by the drain's deadline.
            rec: Recorder::with_timeline(Timeline::for_window(
                plan.warmup_ns,
                plan.end_ns,
                plan.timeout_ns + HOUSEKEEPING_INTERVAL_NS,
            )),
            interval: histogram(),
            body: Vec::with_capacity(4096),
            ready: Vec::with_capacity(super::poll::EVENTS_PER_WAIT_MAX),
            start: Instant::now(),
            measured_in_flight: 0,
            next_housekeeping_ns: HOUSEKEEPING_INTERVAL_NS,
            next_progress_ns: PROGRESS_INTERVAL_NS,
        })
    }

    fn now_ns(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.start)
            .as_nanos() as u64
    }

    fn run(mut self, start: Instant) -> Result<Recorder, BenchError> {
        self.start = start;
        std::thread::sleep(start.saturating_duration_since(Instant::now()));
        match self.plan.rate_rps {
            Some(rate) => {
                let schedule = Schedule::new(rate, self.index, self.plan.threads);
                self.run_open(schedule)?;
                let planned = schedule.planned(self.plan.warmup_ns, self.plan.end_ns);
                self.rec.unsent = planned.saturating_sub(self.rec.sent);
            }
            None => self.run_closed()?,
        }
        self.drain()?;
        self.publish_progress();
        debug_assert_eq!(self.measured_in_flight, 0);
        debug_assert!(self.rec.counts().add_up(), "{:?}", self.rec.counts());
        Ok(self.rec)
    }

    fn run_open(&mut self, schedule: Schedule) -> Result<(), BenchError> {
        for c in 0..self.conns.len() {
            self.fill(c)?;
        }
        let end = self.plan.end_ns;
        let mut next = 0;
        let mut stalled = u64::MAX;
        loop {
            let now = self.now_ns();
            let intended = schedule.intended_ns(next);
            if intended >= end || now >= end {
                return Ok(());
            }
            self.housekeeping(now)?;
            if intended <= now {
                if let Some(c) = self.take_slot() {
                    self.send(c, intended)?;
                    next += 1;
                    continue;
                }
                if stalled != next {
                    stalled = next;
                    self.rec.behind_no_connection += u64::from(intended >= self.plan.warmup_ns);
                    self.progress.behind.fetch_add(1, Ordering::Relaxed);
                }
                // Every connection is busy: wait for an answer to free one.
                let wake = self.next_housekeeping_ns.min(end);
                self.poll(Duration::from_nanos(wake.saturating_sub(now)))?;
                continue;
            }
            let step = if intended <= self.next_housekeeping_ns {
                wait_step(now, intended, self.plan.spin_ns)
            } else {
                WaitStep::Sleep(Duration::from_nanos(self.next_housekeeping_ns - now))
            };
            match step {
                WaitStep::Due => {}
                WaitStep::Sleep(d) => self.poll(d)?,
                WaitStep::Spin => {
                    self.poll(Duration::ZERO)?;
                    std::hint::spin_loop();
                }
            }
        }
    }

    fn run_closed(&mut self) -> Result<(), BenchError> {
        for c in 0..self.conns.len() {
            self.fill(c)?;
        }
        loop {
            let now = self.now_ns();
            if now >= self.plan.end_ns {
                return Ok(());
            }
            self.housekeeping(now)?;
            let wake = self.next_housekeeping_ns.min(self.plan.end_ns);
            self.poll(Duration::from_nanos(wake.saturating_sub(now)))?;
        }
    }

    /// After the last send: wait for the answers still out, at most one timeout; whatever
    /// is still out then timed out.
    fn drain(&mut self) -> Result<(), BenchError> {
        let deadline = self.now_ns() + self.plan.timeout_ns + HOUSEKEEPING_INTERVAL_NS;
        loop {
            let now = self.now_ns();
            if self.measured_in_flight == 0 || now >= deadline {
                break;
            }
            self.housekeeping(now)?;
            let wake = self.next_housekeeping_ns.min(deadline);
            self.poll(Duration::from_nanos(wake.saturating_sub(now)))?;
        }
        for c in 0..self.conns.len() {
            if !self.conns[c].in_flight.is_empty() {
                self.fail(c, Outcome::Timeout, Outcome::Timeout);
            }
        }
        Ok(())
    }

    /// Open loop: the next connection with a free slot.
    fn take_slot(&mut self) -> Option<usize> {
        while let Some(c) = self.slots.pop_front() {
            let conn = &self.conns[c];
            if conn.stream.is_some() && conn.in_flight.len() < self.plan.pipeline {
                return Some(c);
            }
        }
        None
    }

    /// A slot of connection `c` became free: offer it (open loop) or use it (closed).
    fn slot_freed(&mut self, c: usize) -> Result<(), BenchError> {
        if self.conns[c].stream.is_none() {
            return Ok(());
        }
        if self.plan.rate_rps.is_some() {
            self.slots.push_back(c);
            return Ok(());
        }
        let now = self.now_ns();
        if now < self.plan.end_ns {
            self.send(c, now)?;
        }
        Ok(())
    }

    fn fill(&mut self, c: usize) -> Result<(), BenchError> {
        for _ in 0..self.plan.pipeline {
            self.slot_freed(c)?;
        }
        Ok(())
    }

    fn send(&mut self, c: usize, intended_ns: u64) -> Result<(), BenchError> {
        let now = self.now_ns();
        let measured = intended_ns >= self.plan.warmup_ns;
        self.cursor.next_body(self.mix, &mut self.body);
        let conn = &mut self.conns[c];
        wire::write_request(&mut conn.wbuf, &self.plan.host, &self.body);
        conn.in_flight.push_back(InFlight {
            intended_ns,
            sent_ns: now,
            measured,
        });
        self.progress.sent.fetch_add(1, Ordering::Relaxed);
        if measured {
            self.rec.sent += 1;
            self.measured_in_flight += 1;
            if self.plan.rate_rps.is_some() {
                let lag_us = now.saturating_sub(intended_ns) / 1000;
                self.rec.send_lag.saturating_record(lag_us);
            }
        }
        self.flush(c)
    }

    /// Writes what connection `c` has pending; watches for writability while some is left.
    fn flush(&mut self, c: usize) -> Result<(), BenchError> {
        let conn = &mut self.conns[c];
        let Some(stream) = conn.stream.as_ref() else {
            return Ok(());
        };
        let mut broken = false;
        while conn.wpos < conn.wbuf.len() {
            match (&*stream).write(&conn.wbuf[conn.wpos..]) {
                Ok(0) => broken = true,
                Ok(n) => conn.wpos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => broken = true,
            }
            if broken {
                break;
            }
        }
        if broken {
            self.fail(c, CLOSED, CLOSED);
            return Ok(());
        }
        let pending = conn.wpos < conn.wbuf.len();
        if !pending {
            conn.wbuf.clear();
            conn.wpos = 0;
        }
        if pending != conn.watching_write {
            self.poller
                .modify(stream.as_raw_fd(), c, pending)
                .map_err(BenchError::Poll)?;
            conn.watching_write = pending;
        }
        Ok(())
    }

    fn poll(&mut self, timeout: Duration) -> Result<(), BenchError> {
        self.ready.clear();
        self.poller
            .wait(timeout, &mut self.ready)
            .map_err(BenchError::Poll)?;
        for i in 0..self.ready.len() {
            let ready = self.ready[i];
            if ready.writable {
                self.flush(ready.token)?;
            }
            if ready.readable {
                self.read(ready.token)?;
            }
        }
        Ok(())
    }

    /// Reads what connection `c` has and resolves every complete answer.
    fn read(&mut self, c: usize) -> Result<(), BenchError> {
        loop {
            let conn = &mut self.conns[c];
            let Some(stream) = conn.stream.as_ref() else {
                return Ok(());
            };
            if conn.filled == conn.rbuf.len() {
                if conn.rbuf.len() >= READ_BUFFER_BYTES_MAX {
                    self.fail(c, Outcome::Error(Code::Named(BAD_RESPONSE)), CLOSED);
                    return Ok(());
                }
                let grown = (conn.rbuf.len() * 2).min(READ_BUFFER_BYTES_MAX);
                conn.rbuf.resize(grown, 0);
            }
            match (&*stream).read(&mut conn.rbuf[conn.filled..]) {
                Ok(0) => {
                    self.fail(c, CLOSED, CLOSED);
                    return Ok(());
                }
                Ok(n) => {
                    conn.filled += n;
                    let now = self.now_ns();
                    if !self.take_responses(c, now)? {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.fail(c, CLOSED, CLOSED);
                    return Ok(());
                }
            }
        }
    }

    /// Resolves the complete answers at the front of `c`'s buffer; `false` when the
    /// connection was dropped on the way.
    fn take_responses(&mut self, c: usize, now: u64) -> Result<bool, BenchError> {
        let mut start = 0;
        let mut freed = 0;
        let mut drop_after = None;
        let conn = &mut self.conns[c];
        while drop_after.is_none() {
            let (status, close, body, len) =
                match wire::parse_response(&conn.rbuf[start..conn.filled]) {
                    Parsed::Incomplete => break,
                    Parsed::Invalid(_) => {
                        drop_after = Some(Outcome::Error(Code::Named(BAD_RESPONSE)));
                        break;
                    }
                    Parsed::Complete {
                        status,
                        close,
                        body,
                        len,
                    } => (status, close, body, len),
                };
            let Some(req) = conn.in_flight.pop_front() else {
                drop_after = Some(Outcome::Error(Code::Named(BAD_RESPONSE)));
                break;
            };
            let body = &conn.rbuf[start + body.start..start + body.end];
            let outcome = wire::classify(status, body);
            let latency_us = now.saturating_sub(req.intended_ns) / 1000;
            if outcome == Outcome::Ok {
                self.interval.saturating_record(latency_us);
            }
            if req.measured {
                self.rec.resolve_at(outcome, latency_us, now);
                self.measured_in_flight -= 1;
            }
            start += len;
            freed += 1;
            if close {
                drop_after = Some(CLOSED);
            }
        }
        conn.rbuf.copy_within(start..conn.filled, 0);
        conn.filled -= start;
        if let Some(front) = drop_after {
            self.fail(c, front, CLOSED);
            return Ok(false);
        }
        for _ in 0..freed {
            self.slot_freed(c)?;
        }
        Ok(true)
    }

    /// Drops connection `c`: its first request in flight ends as `front`, the others as
    /// `rest`; a reconnection is due at once.
    fn fail(&mut self, c: usize, front: Outcome<'static>, rest: Outcome<'static>) {
        let now = self.now_ns();
        let conn = &mut self.conns[c];
        if let Some(stream) = conn.stream.take() {
            self.poller.remove(stream.as_raw_fd());
        }
        for (i, req) in conn.in_flight.drain(..).enumerate() {
            if req.measured {
                self.rec
                    .resolve_at(if i == 0 { front } else { rest }, 0, now);
                self.measured_in_flight -= 1;
            }
        }
        conn.filled = 0;
        conn.wbuf.clear();
        conn.wpos = 0;
        conn.watching_write = false;
        conn.retry_at_ns = now;
        self.slots.retain(|&s| s != c);
        self.next_housekeeping_ns = now;
    }

    /// Every `HOUSEKEEPING_INTERVAL_NS` (or at once after a failure): timeouts,
    /// reconnections, progress.
    fn housekeeping(&mut self, now: u64) -> Result<(), BenchError> {
        if now < self.next_housekeeping_ns {
            return Ok(());
        }
        self.next_housekeeping_ns = now + HOUSEKEEPING_INTERVAL_NS;
        for c in 0..self.conns.len() {
            let conn = &self.conns[c];
            if conn.stream.is_none() {
                if now >= conn.retry_at_ns {
                    self.reconnect(c, now)?;
                }
                continue;
            }
            let stuck = conn
                .in_flight
                .front()
                .is_some_and(|r| now.saturating_sub(r.sent_ns) > self.plan.timeout_ns);
            if stuck {
                self.fail(c, Outcome::Timeout, CLOSED);
            }
        }
        if now >= self.next_progress_ns {
            self.publish_progress();
            self.next_progress_ns = now + PROGRESS_INTERVAL_NS;
        }
        Ok(())
    }

    fn reconnect(&mut self, c: usize, now: u64) -> Result<(), BenchError> {
        match connect(self.plan.addr) {
            Ok(stream) => {
                self.poller
                    .add(stream.as_raw_fd(), c, false)
                    .map_err(BenchError::Poll)?;
                self.conns[c].stream = Some(stream);
                self.fill(c)
            }
            Err(_) => {
                self.rec.connect_errors += 1;
                self.conns[c].retry_at_ns = now + RECONNECT_BACKOFF_NS;
                Ok(())
            }
        }
    }

    fn publish_progress(&mut self) {
        let mut shared = self
            .progress
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Same bounds on both sides: addition cannot fail.
        shared.add(&self.interval).expect("same bounds");
        self.interval.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections split evenly over threads, the first threads taking the remainder.
    #[test]
    fn connections_split_over_threads() {
        let plan = Plan {
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            host: String::new(),
            rate_rps: None,
            threads: 3,
            connections: 32,
            pipeline: 1,
            warmup_ns: 0,
            end_ns: 0,
            timeout_ns: 0,
            spin_ns: 0,
            client_cores: Vec::new(),
        };
        let split: Vec<usize> = (0..3).map(|t| plan.connections_of(t)).collect();
        assert_eq!(split, vec![11, 11, 10]);
    }

    /// The gate starts every thread at one instant, after all have arrived.
    #[test]
    fn gate_starts_all_at_once() {
        let gate = StartGate::new(2);
        std::thread::scope(|s| {
            let a = s.spawn(|| gate.arrive(true));
            let b = s.spawn(|| gate.arrive(true));
            let start = gate.release(Duration::from_millis(1));
            assert!(start.is_some());
            assert_eq!(a.join().unwrap(), start);
            assert_eq!(b.join().unwrap(), start);
        });
        // One thread that cannot start sends the others home.
        let gate = StartGate::new(2);
        std::thread::scope(|s| {
            let ok = s.spawn(|| gate.arrive(true));
            let failed = s.spawn(|| gate.arrive(false));
            assert_eq!(gate.release(Duration::ZERO), None);
            assert_eq!(ok.join().unwrap(), None);
            assert_eq!(failed.join().unwrap(), None);
        });
    }
}
