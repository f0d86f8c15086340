//! Where formatted lines go: a buffer bounded in bytes, drained to stderr by one logger
//! thread, so no shard ever waits on stderr.
//!
//! Why: stderr is a pipe to whatever collects the logs (journald, a container runtime, a
//! terminal). When that reader is slow or gone, a blocking `write` stalls the thread that
//! logs; with the write on the shards, one stuck reader stops every shard. Here a shard
//! formats its line in its own buffer, then copies it into the shared buffer under a mutex
//! held only for that copy. When the buffer is full (`LOG_BUFFER_BYTES_MAX`) the line is
//! dropped and counted (`shardline_log_dropped_total`): losing a log line is better than
//! losing a request. The logger thread swaps the buffer out whole and writes it with one
//! `write_all`, so lines stay whole and in order and never interleave.
//!
//! Why a mutex and not a lock-free ring: lines are rare (logging is not on the request
//! path) and the critical section is a `memcpy` of at most `LOG_LINE_BYTES_MAX` bytes; a
//! mutex keeps lines of different shards in one order with no torn lines.
//!
//! The same mutex guards the `Summarizer`, so a flood from one call site is counted before
//! its line is even formatted. The logger thread wakes at least every `TICK` to write the
//! summaries of windows that ended.
//!
//! At exit (`flush`) owed summaries are written and the caller waits, at most
//! `LOG_FLUSH_WAIT_MS`, until everything accepted so far has been written: nothing
//! buffered is lost on a graceful stop, and an unread stderr cannot hang the exit. A panic
//! does the same from the panic hook, without blocking on the mutex (the panicking thread
//! may hold it).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Condvar, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use log::Level;

use super::line::{format_event, Event, Scratch, LOG_LINE_BYTES_MAX};
use super::summary::{Admit, Summarizer, Summary, SummaryMessage};
use super::time::now_unix_ms;
use super::LogFormat;

/// Bytes of formatted lines waiting for the logger thread; a line that does not fit is
/// dropped and counted.
pub const LOG_BUFFER_BYTES_MAX: usize = 256 * 1024;
/// How long an exit waits for buffered lines to reach stderr.
pub const LOG_FLUSH_WAIT_MS: u64 = 2_000;
/// How often the logger thread looks for ended summary windows.
const TICK: Duration = Duration::from_millis(500);

const _: () = assert!(LOG_BUFFER_BYTES_MAX >= 16 * LOG_LINE_BYTES_MAX);

/// The bounded buffer itself, apart from threads, so its rule is tested alone.
#[derive(Debug)]
pub struct Pending {
    bytes: Vec<u8>,
    cap: usize,
}

impl Pending {
    pub fn with_cap(cap: usize) -> Pending {
        Pending {
            bytes: Vec::with_capacity(cap),
            cap,
        }
    }

    /// Appends `line` whole, or nothing: false when it does not fit.
    pub fn push(&mut self, line: &[u8]) -> bool {
        if self.bytes.len() + line.len() > self.cap {
            return false;
        }
        self.bytes.extend_from_slice(line);
        true
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Hands the buffered bytes over, leaving `spare` (emptied) in their place, so the
    /// two buffers are reused and nothing is allocated per batch.
    pub fn swap_out(&mut self, spare: &mut Vec<u8>) {
        spare.clear();
        std::mem::swap(&mut self.bytes, spare);
    }
}

struct State {
    pending: Pending,
    summarizer: Summarizer,
    /// Bytes ever accepted into `pending`.
    accepted: u64,
    /// Bytes of `accepted` the logger thread has written (or failed to write).
    written: u64,
}

/// The process's log sink; see the module docs.
pub struct Sink {
    format: LogFormat,
    state: Mutex<State>,
    /// The logger thread waits here for lines.
    wake: Condvar,
    /// `flush` waits here for the logger thread.
    done: Condvar,
    dropped: AtomicU64,
    suppressed: AtomicU64,
}

impl Sink {
    /// `repeats`: see `Summarizer::new`.
    pub fn new(format: LogFormat, repeats: u64) -> Sink {
        Sink {
            format,
            state: Mutex::new(State {
                pending: Pending::with_cap(LOG_BUFFER_BYTES_MAX),
                summarizer: Summarizer::new(repeats),
                accepted: 0,
                written: 0,
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
            dropped: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// A poisoned lock is taken over: the state is a byte buffer and counters, valid
    /// after any panic.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lines dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Lines left out by summarising (reported in summary lines).
    pub fn suppressed(&self) -> u64 {
        self.suppressed.load(Relaxed)
    }

    /// The summarising decision for one line of the call site `key`.
    pub fn admit(&self, key: u64, level: Level, target: &str) -> Admit {
        let admit = self
            .lock()
            .summarizer
            .admit(key, level, target, now_unix_ms());
        if admit == Admit::Suppress {
            self.suppressed.fetch_add(1, Relaxed);
        }
        admit
    }

    /// Queues one formatted line; `like` is the call site's message to keep for its
    /// summary. A line that does not fit is dropped and counted.
    pub fn push(&self, line: &str, like: Option<(u64, &str)>) {
        let mut state = self.lock();
        if let Some((key, msg)) = like {
            state.summarizer.set_like(key, msg);
        }
        let was_empty = state.pending.is_empty();
        if !state.pending.push(line.as_bytes()) {
            drop(state);
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        state.accepted += line.len() as u64;
        drop(state);
        // The logger thread only sleeps on an empty buffer: no wake-up is needed else.
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Formats `summary` as a line into `scratch` and returns it.
    pub fn summary_line<'s>(&self, summary: &Summary, scratch: &'s mut Scratch) -> &'s str {
        let event = Event {
            unix_ms: now_unix_ms(),
            level: summary.level,
            target: &summary.target,
            msg: &SummaryMessage(summary.count),
            fields: &[("like", &summary.like)],
        };
        format_event(&event, self.format, scratch)
    }

    /// The logger thread's loop: never returns.
    pub fn run(&self, out: &mut impl Write) -> ! {
        let mut batch = Vec::with_capacity(LOG_BUFFER_BYTES_MAX);
        let mut due = Vec::new();
        let mut scratch = Scratch::new();
        loop {
            let mut state = self.lock();
            if state.pending.is_empty() {
                state = self
                    .wake
                    .wait_timeout(state, TICK)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            state.pending.swap_out(&mut batch);
            state.summarizer.take_due(now_unix_ms(), &mut due);
            let accepted = state.accepted;
            drop(state);
            for summary in due.drain(..) {
                batch.extend_from_slice(self.summary_line(&summary, &mut scratch).as_bytes());
            }
            if !batch.is_empty() {
                // Errors (stderr closed) are dropped: there is nowhere to report them.
                let _ = out.write_all(&batch).and_then(|()| out.flush());
            }
            self.lock().written = accepted;
            self.done.notify_all();
        }
    }

    /// Writes owed summaries and waits, at most `wait`, until every line accepted so far
    /// has been written. Never blocks on the mutex past `wait` (see the module docs).
    pub fn flush(&self, wait: Duration) {
        let deadline = Instant::now() + wait;
        let Some(mut state) = self.lock_until(deadline) else {
            return;
        };
        let mut due = Vec::new();
        state.summarizer.take_due(u64::MAX, &mut due);
        if !due.is_empty() {
            let mut scratch = Scratch::default();
            for summary in &due {
                let line = self.summary_line(summary, &mut scratch);
                if state.pending.push(line.as_bytes()) {
                    state.accepted += line.len() as u64;
                }
            }
        }
        let target = state.accepted;
        self.wake.notify_one();
        while state.written < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            state = self
                .done
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn lock_until(&self, deadline: Instant) -> Option<MutexGuard<'_, State>> {
        loop {
            match self.state.try_lock() {
                Ok(state) => return Some(state),
                Err(TryLockError::Poisoned(e)) => return Some(e.into_inner()),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TryLockError::WouldBlock) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full buffer refuses a line whole: nothing partial is ever queued.
    #[test]
    fn pending_is_bounded_in_bytes_and_keeps_lines_whole() {
        let mut p = Pending::with_cap(10);
        assert!(p.push(b"abcd\n"));
        assert!(p.push(b"efgh\n"));
        assert!(!p.push(b"i\n"));
        assert_eq!(p.len(), 10);
        let mut spare = Vec::with_capacity(10);
        p.swap_out(&mut spare);
        assert_eq!(spare, b"abcd\nefgh\n");
        assert!(p.is_empty());
        assert!(p.push(b"i\n"));
    }

    /// A writer that never returns (a pipe nobody reads): pushing still returns at once,
    /// the overflow is counted, and `flush` gives up after its bound.
    #[test]
    fn a_stuck_writer_costs_drops_not_waits() {
        struct Stuck;
        impl Write for Stuck {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                loop {
                    std::thread::park();
                }
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink: &'static Sink = Box::leak(Box::new(Sink::new(LogFormat::Json, 5)));
        std::thread::spawn(move || sink.run(&mut Stuck));
        let line = "x".repeat(1000) + "\n";
        for _ in 0..2 * LOG_BUFFER_BYTES_MAX / line.len() + 10 {
            sink.push(&line, None);
        }
        assert!(sink.dropped() > 0);
        let started = Instant::now();
        sink.flush(Duration::from_millis(50));
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "flush is bounded"
        );
    }

    /// Lines written by the logger thread arrive whole and in order; `flush` returns once
    /// they are all out, owed summaries included.
    #[test]
    fn flush_writes_everything_accepted() {
        #[derive(Clone, Default)]
        struct Shared(std::sync::Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink: &'static Sink = Box::leak(Box::new(Sink::new(LogFormat::Text, 5)));
        let out = Shared::default();
        let mut writer = out.clone();
        std::thread::spawn(move || sink.run(&mut writer));
        let key = super::super::summary::site_key("t", "f.rs", 1);
        for i in 0..100 {
            match sink.admit(key, Level::Warn, "t") {
                Admit::Write { record_like, .. } => {
                    let like = record_like.then_some((key, "same warning"));
                    sink.push(&format!("line {i}\n"), like);
                }
                Admit::Suppress => {}
            }
        }
        sink.flush(Duration::from_secs(20));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            &lines[..5],
            ["line 0", "line 1", "line 2", "line 3", "line 4"]
        );
        assert_eq!(lines.len(), 6, "{text}");
        assert!(
            lines[5].ends_with(
                "WARN t: … and 95 more like this in the last 10 s like=\"same warning\""
            ),
            "{}",
            lines[5]
        );
        assert_eq!(sink.suppressed(), 95);
        assert_eq!(sink.dropped(), 0);
    }
}
