//! Shard lifecycle: start one pinned glommio executor per selected core, wait until every
//! shard is initialised (or report the first failure), stop them gracefully, join them.
//!
//! Each shard runs on its own OS thread, created by us rather than by
//! `LocalExecutorBuilder::spawn`, because `spawn` panics inside the new thread when the
//! executor cannot be built; here the builder's error comes back as a `RuntimeError` that
//! names the shard and core. The thread runs the caller's factory inside the executor (so it
//! may bind sockets and spawn tasks), reports readiness, then runs the shard's future.
//!
//! No hang on failure: every shard thread reports `Ready` or `Failed`, and always `Exited`
//! (a panic is caught and reported with its message), through a channel bounded at two
//! events per shard. Start and stop wait on that channel with deadlines; a shard that misses
//! the stop deadline is named in the error and its thread is left detached, since a thread
//! cannot be killed.
//!
//! Why not `LocalExecutorPoolBuilder::on_all_shards`: it offers no per-shard readiness,
//! hands shards no identity of ours, and placement is expressed as glommio's own pool
//! policies rather than the validated core list.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use glommio::{GlommioError, LocalExecutorBuilder, Placement};

use crate::id::{CoreId, ShardId};
use crate::mesh::{Mesh, ShardEnd};
use crate::preflight::{preflight, PreflightError, PreflightReport, IO_MEMORY_PER_SHARD_BYTES};
use crate::ring::{RING_SLOTS_DEFAULT, RING_SLOTS_MAX, RING_SLOTS_MIN};
use crate::topology::{format_cpu_list, CoreSelection, Topology, TopologyError};
use crate::wake::{MeshControl, SPIN_ITERATIONS_DEFAULT, SPIN_ITERATIONS_MAX};

/// Longest we wait for shards to initialise or to stop.
pub const LIFECYCLE_TIMEOUT_MS_MAX: u64 = 120_000;
/// Default start and stop deadline.
pub const LIFECYCLE_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Longest a shard's executor lets one task run before `yield_if_needed` yields
/// (glommio's own default).
pub const PREEMPT_TIMER_US_MAX: u64 = 100_000;
/// Shortest preemption period: below this the timer's own cost shows.
pub const PREEMPT_TIMER_US_MIN: u64 = 100;
/// Default: a shard saturated by handoffs still polls its sockets every millisecond.
pub const PREEMPT_TIMER_US_DEFAULT: u64 = 1_000;
/// Longest an `adaptive` shard spins after its last work before it parks.
pub const POLL_SPIN_US_MAX: u64 = 1_000;
/// Default spin of an `adaptive` shard: the gap between two requests of one busy client
/// on loopback is 20–60 µs; a spin that covers it saves a park and a wake (a context
/// switch each way) at the price of the spin, and an idle shard spins only after its
/// keep-alive beat.
pub const POLL_SPIN_US_DEFAULT: u64 = 50;
/// Events a shard thread sends at most: `Ready` or `Failed`, then `Exited`.
const EVENTS_PER_SHARD_MAX: usize = 2;

const _: () = assert!(LIFECYCLE_TIMEOUT_MS_DEFAULT <= LIFECYCLE_TIMEOUT_MS_MAX);
const _: () = assert!(POLL_SPIN_US_DEFAULT <= POLL_SPIN_US_MAX);

/// What a shard's executor does when it finds nothing to run.
///
/// Parking (sleeping in `io_uring_enter`) costs a context switch out and, at the next
/// packet or peer message, a wake and a switch back in: on loopback about as much CPU as
/// the request itself. Spinning costs the core. Which is cheaper depends on how soon the
/// next work comes, so the choice is the operator's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollMode {
    /// Park as soon as nothing is runnable: the least CPU at low rates.
    Park,
    /// Keep polling for up to this long after the last work, then park -- but only
    /// while the recent idle gaps average less than the spin; otherwise park at once. A
    /// saturated shard rarely sleeps; at moderate rates (gaps longer than the spin) it
    /// parks as `Park` does instead of burning the spin after every request; an idle
    /// one is asleep (CPU stays near zero).
    Adaptive(Duration),
    /// Never park: the core polls its rings and sockets without pause. For dedicated,
    /// isolated cores (`low-latency` profile); a crossing between shards then costs a
    /// ring hop instead of a wake. On shared cores it starves everything else.
    Busy,
}

impl Default for PollMode {
    fn default() -> Self {
        PollMode::Adaptive(Duration::from_micros(POLL_SPIN_US_DEFAULT))
    }
}
const _: () = assert!(PREEMPT_TIMER_US_MIN <= PREEMPT_TIMER_US_DEFAULT);
const _: () = assert!(PREEMPT_TIMER_US_DEFAULT <= PREEMPT_TIMER_US_MAX);

/// How to start the shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Which cores get a shard.
    pub cores: CoreSelection,
    /// Slots per ring, a power of two in `RING_SLOTS_MIN..=RING_SLOTS_MAX`.
    pub ring_slots: usize,
    /// Executor yields an idle shard spends re-checking before it parks.
    pub spin_iterations: u32,
    /// What an executor with nothing to run does.
    pub poll: PollMode,
    /// How long a task may run before `yield_if_needed` (and `next_batch`) yields to the
    /// shard's other tasks; glommio's `preempt_timer`.
    pub preempt_timer: Duration,
    /// Deadline for every shard to initialise.
    pub start_timeout: Duration,
    /// Deadline for every shard to finish after a stop request.
    pub stop_timeout: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cores: CoreSelection::All,
            ring_slots: RING_SLOTS_DEFAULT,
            spin_iterations: SPIN_ITERATIONS_DEFAULT,
            poll: PollMode::default(),
            preempt_timer: Duration::from_micros(PREEMPT_TIMER_US_DEFAULT),
            start_timeout: Duration::from_millis(LIFECYCLE_TIMEOUT_MS_DEFAULT),
            stop_timeout: Duration::from_millis(LIFECYCLE_TIMEOUT_MS_DEFAULT),
        }
    }
}

impl RuntimeConfig {
    /// Checks every field against its limit.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let slots = self.ring_slots;
        if !slots.is_power_of_two() || !(RING_SLOTS_MIN..=RING_SLOTS_MAX).contains(&slots) {
            return Err(RuntimeError::RingSlots { slots });
        }
        if self.spin_iterations > SPIN_ITERATIONS_MAX {
            return Err(RuntimeError::SpinIterations {
                spins: self.spin_iterations,
            });
        }
        if let PollMode::Adaptive(spin) = self.poll {
            if spin > Duration::from_micros(POLL_SPIN_US_MAX) {
                return Err(RuntimeError::PollSpin { spin });
            }
        }
        let preempt = self.preempt_timer;
        let preempt_range = Duration::from_micros(PREEMPT_TIMER_US_MIN)
            ..=Duration::from_micros(PREEMPT_TIMER_US_MAX);
        if !preempt_range.contains(&preempt) {
            return Err(RuntimeError::PreemptTimer { preempt });
        }
        let timeout_max = Duration::from_millis(LIFECYCLE_TIMEOUT_MS_MAX);
        for (name, timeout) in [("start", self.start_timeout), ("stop", self.stop_timeout)] {
            if timeout.is_zero() || timeout > timeout_max {
                return Err(RuntimeError::Timeout { name, timeout });
            }
        }
        Ok(())
    }
}

/// Why the runtime could not start, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// `ring_slots` is not a power of two within the limits.
    #[error("ring slots {slots} must be a power of two in {RING_SLOTS_MIN}..={RING_SLOTS_MAX}")]
    RingSlots {
        /// The value given.
        slots: usize,
    },
    /// `spin_iterations` is above `SPIN_ITERATIONS_MAX`.
    #[error("spin iterations {spins} exceed the maximum {SPIN_ITERATIONS_MAX}")]
    SpinIterations {
        /// The value given.
        spins: u32,
    },
    /// The adaptive spin is above `POLL_SPIN_US_MAX`.
    #[error("poll spin {spin:?} exceeds the maximum {POLL_SPIN_US_MAX} µs")]
    PollSpin {
        /// The value given.
        spin: Duration,
    },
    /// `preempt_timer` is outside its limits.
    #[error(
        "preempt timer {preempt:?} must be within \
         {PREEMPT_TIMER_US_MIN}..={PREEMPT_TIMER_US_MAX} µs"
    )]
    PreemptTimer {
        /// The value given.
        preempt: Duration,
    },
    /// A start or stop timeout is zero or above `LIFECYCLE_TIMEOUT_MS_MAX`.
    #[error(
        "{name} timeout {timeout:?} must be above zero and at most {LIFECYCLE_TIMEOUT_MS_MAX} ms"
    )]
    Timeout {
        /// `start` or `stop`.
        name: &'static str,
        /// The value given.
        timeout: Duration,
    },
    /// Core discovery or selection failed.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// The kernel or limits would not let glommio run.
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    /// The OS refused a thread.
    #[error("cannot spawn the thread of shard {shard}: {source}")]
    Spawn {
        /// The shard.
        shard: ShardId,
        /// The OS error.
        source: std::io::Error,
    },
    /// glommio could not build the executor.
    #[error("cannot start the executor of shard {shard} on core {core}: {reason}")]
    Executor {
        /// The shard.
        shard: ShardId,
        /// Its core.
        core: CoreId,
        /// glommio's error, as text: `GlommioError` is not `Sync`, so it cannot be kept.
        reason: String,
        /// The OS error number behind it, when there is one.
        errno: Option<i32>,
    },
    /// The caller's factory returned an error.
    ///
    /// The factory's error is part of the message and deliberately not a `source`, so an
    /// error-chain printer does not repeat it.
    #[error("shard {shard} failed to initialise: {error}")]
    ShardInit {
        /// The shard.
        shard: ShardId,
        /// The factory's error.
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A shard thread panicked.
    #[error("shard {shard} panicked: {message}")]
    ShardPanicked {
        /// The shard.
        shard: ShardId,
        /// The panic message.
        message: String,
    },
    /// A shard's loop ended before it reported ready.
    #[error("shard {shard} exited before it was ready")]
    ExitedDuringStart {
        /// The shard.
        shard: ShardId,
    },
    /// Shards did not initialise in time.
    #[error("shards [{pending}] were not ready within {timeout:?}")]
    StartTimedOut {
        /// The shards still initialising, as a list.
        pending: String,
        /// The deadline.
        timeout: Duration,
    },
    /// Shards did not stop in time; their threads were left running, detached.
    #[error("shards [{pending}] did not stop within {timeout:?}")]
    StopTimedOut {
        /// The shards still running, as a list.
        pending: String,
        /// The deadline.
        timeout: Duration,
    },
}

/// What the factory receives on the shard's thread, inside its executor.
#[derive(Debug)]
pub struct ShardContext<T> {
    /// This shard's id (`0..shard_count`).
    pub id: ShardId,
    /// The core the shard's thread is pinned to.
    pub core: CoreId,
    /// This shard's end of the mesh.
    pub end: ShardEnd<T>,
}

/// A shard's thread ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardExit {
    /// Which shard.
    pub shard: ShardId,
    /// The panic message, if it panicked.
    pub panic: Option<String>,
}

enum Event {
    Ready(ShardId),
    Failed(RuntimeError),
    Exited(ShardExit),
}

/// Running shards. Dropping it without `stop` requests a stop and waits up to the stop
/// timeout, ignoring errors.
#[derive(Debug)]
pub struct Runtime {
    cores: Vec<CoreId>,
    control: MeshControl,
    threads: Vec<Option<JoinHandle<()>>>,
    events: Receiver<Event>,
    exits: Vec<Option<ShardExit>>,
    stop_timeout: Duration,
    preflight: PreflightReport,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Ready(shard) => write!(f, "Ready({shard})"),
            Event::Failed(err) => write!(f, "Failed({err})"),
            Event::Exited(exit) => write!(f, "Exited({exit:?})"),
        }
    }
}

impl Runtime {
    /// Starts one shard per selected core and returns once every shard is initialised.
    ///
    /// `factory` runs on each shard's thread, inside its executor, with the shard's
    /// context; it returns the shard's main future (which should loop on
    /// `ShardEnd::next_batch` until `Inbound::Stopped`) or an error. The first failure
    /// (preflight, executor, factory error or panic, deadline) is returned after the shards
    /// already started have been stopped and joined.
    pub fn start<T, F, Fut, E>(config: RuntimeConfig, factory: F) -> Result<Runtime, RuntimeError>
    where
        T: Send + 'static,
        F: Fn(ShardContext<T>) -> Result<Fut, E> + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        config.validate()?;
        let cores = Topology::detect()?.select(&config.cores)?;
        let report = preflight(cores.len())?;
        let mesh = Mesh::<T>::new(cores.len(), config.ring_slots);
        let (sender, events) = sync_channel(EVENTS_PER_SHARD_MAX * cores.len());
        let mut runtime = Runtime {
            cores: cores.clone(),
            control: mesh.control(),
            threads: (0..cores.len()).map(|_| None).collect(),
            events,
            exits: vec![None; cores.len()],
            stop_timeout: config.stop_timeout,
            preflight: report,
        };
        let factory = Arc::new(factory);
        let executor = ExecutorSettings {
            preempt: config.preempt_timer,
            poll: config.poll,
        };
        for (mut end, core) in mesh.into_ends().into_iter().zip(cores) {
            end.set_spin_iterations(config.spin_iterations);
            let shard = end.id();
            let context = ShardContext {
                id: shard,
                core,
                end,
            };
            match spawn_shard(context, Arc::clone(&factory), sender.clone(), executor) {
                Ok(handle) => runtime.threads[shard.index()] = Some(handle),
                Err(source) => return runtime.abort(RuntimeError::Spawn { shard, source }),
            }
        }
        match runtime.await_ready(config.start_timeout) {
            Ok(()) => Ok(runtime),
            Err(err) => runtime.abort(err),
        }
    }

    /// The cores the shards run on; shard `i` on `cores()[i]`.
    pub fn cores(&self) -> &[CoreId] {
        &self.cores
    }

    /// The number of shards.
    pub fn shard_count(&self) -> usize {
        self.cores.len()
    }

    /// What the preflight checks found.
    pub fn preflight(&self) -> PreflightReport {
        self.preflight
    }

    /// A handle that can request the stop from elsewhere (a signal handler thread).
    pub fn control(&self) -> MeshControl {
        self.control.clone()
    }

    /// Waits up to `timeout` for a shard thread to end on its own (a shard that returned
    /// early or panicked). A supervisor polls this; `stop` still reports the panic.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ShardExit> {
        match self.events.recv_timeout(timeout) {
            Ok(Event::Exited(exit)) => {
                self.exits[exit.shard.index()] = Some(exit.clone());
                Some(exit)
            }
            Ok(Event::Ready(_) | Event::Failed(_)) | Err(_) => None,
        }
    }

    /// Requests a graceful stop, waits up to the stop timeout, and joins the threads.
    pub fn stop(mut self) -> Result<(), RuntimeError> {
        self.shutdown()
    }

    fn abort(mut self, err: RuntimeError) -> Result<Runtime, RuntimeError> {
        let _ = self.shutdown();
        Err(err)
    }

    fn await_ready(&mut self, timeout: Duration) -> Result<(), RuntimeError> {
        let deadline = Instant::now() + timeout;
        let mut ready = vec![false; self.cores.len()];
        while let Some(first_pending) = ready.iter().position(|r| !r) {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(wait) {
                Ok(Event::Ready(shard)) => ready[shard.index()] = true,
                Ok(Event::Failed(err)) => return Err(err),
                Ok(Event::Exited(exit)) => {
                    self.exits[exit.shard.index()] = Some(exit.clone());
                    if !ready[exit.shard.index()] {
                        return Err(exit_error(exit));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let pending = shard_list(ready.iter().map(|r| !r));
                    return Err(RuntimeError::StartTimedOut { pending, timeout });
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let shard = ShardId::from_index(first_pending);
                    return Err(RuntimeError::ExitedDuringStart { shard });
                }
            }
        }
        Ok(())
    }

    fn shutdown(&mut self) -> Result<(), RuntimeError> {
        self.control.request_stop();
        let deadline = Instant::now() + self.stop_timeout;
        while self.pending().any(|p| p) {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(wait) {
                Ok(Event::Exited(exit)) => self.exits[exit.shard.index()] = Some(exit.clone()),
                Ok(Event::Ready(_) | Event::Failed(_)) => {}
                Err(_) => break,
            }
        }
        let pending = shard_list(self.pending());
        for (thread, exit) in self.threads.iter_mut().zip(&self.exits) {
            // Join only threads that reported their exit; the others are left detached.
            if exit.is_some() {
                if let Some(handle) = thread.take() {
                    let _ = handle.join();
                }
            }
            thread.take();
        }
        let panicked = self
            .exits
            .iter()
            .flatten()
            .find(|exit| exit.panic.is_some());
        if let Some(exit) = panicked {
            return Err(exit_error(exit.clone()));
        }
        if !pending.is_empty() {
            return Err(RuntimeError::StopTimedOut {
                pending,
                timeout: self.stop_timeout,
            });
        }
        Ok(())
    }

    /// Per shard: a thread is running and has not reported its exit.
    fn pending(&self) -> impl Iterator<Item = bool> + '_ {
        let running = self.threads.iter().zip(&self.exits);
        running.map(|(thread, exit)| thread.is_some() && exit.is_none())
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if self.threads.iter().any(Option::is_some) {
            let _ = self.shutdown();
        }
    }
}

/// What each shard's executor is built with.
#[derive(Clone, Copy)]
struct ExecutorSettings {
    preempt: Duration,
    poll: PollMode,
}

/// `PollMode::Busy`'s spin: a century.
const BUSY_SPIN_S: u64 = 100 * 365 * 24 * 3600;

fn spawn_shard<T, F, Fut, E>(
    context: ShardContext<T>,
    factory: Arc<F>,
    events: SyncSender<Event>,
    executor: ExecutorSettings,
) -> std::io::Result<JoinHandle<()>>
where
    T: Send + 'static,
    F: Fn(ShardContext<T>) -> Result<Fut, E> + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let name = format!("shard-{}", context.id);
    std::thread::Builder::new().name(name).spawn(move || {
        let shard = context.id;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            run_shard(context, &*factory, &events, executor)
        }));
        let panic = outcome.err().map(panic_message);
        // The receiver may be gone if the runtime gave up on us; nothing left to tell.
        let _ = events.send(Event::Exited(ShardExit { shard, panic }));
    })
}

fn run_shard<T, F, Fut, E>(
    context: ShardContext<T>,
    factory: &F,
    events: &SyncSender<Event>,
    settings: ExecutorSettings,
) where
    F: Fn(ShardContext<T>) -> Result<Fut, E>,
    Fut: Future<Output = ()>,
    E: std::error::Error + Send + Sync + 'static,
{
    let (shard, core) = (context.id, context.core);
    let mut builder = LocalExecutorBuilder::new(Placement::Fixed(core.0))
        .name(&format!("shard-{shard}"))
        .io_memory(IO_MEMORY_PER_SHARD_BYTES)
        .preempt_timer(settings.preempt);
    builder = match settings.poll {
        PollMode::Park => builder,
        PollMode::Adaptive(spin) => builder.spin_before_park(spin),
        // glommio parks once the spin has lasted longer than this: never, in practice.
        PollMode::Busy => builder.spin_before_park(Duration::from_secs(BUSY_SPIN_S)),
    };
    let executor = match builder.make() {
        Ok(executor) => {
            executor.set_adaptive_spin(matches!(settings.poll, PollMode::Adaptive(_)));
            executor
        }
        Err(source) => {
            let errno = match &source {
                GlommioError::IoError(err) | GlommioError::EnhancedIoError { source: err, .. } => {
                    err.raw_os_error()
                }
                _ => None,
            };
            let reason = source.to_string();
            let error = RuntimeError::Executor {
                shard,
                core,
                reason,
                errno,
            };
            let _ = events.send(Event::Failed(error));
            return;
        }
    };
    executor.run(async move {
        match factory(context) {
            Ok(shard_future) => {
                let _ = events.send(Event::Ready(shard));
                shard_future.await;
            }
            Err(err) => {
                let error = Box::new(err);
                let _ = events.send(Event::Failed(RuntimeError::ShardInit { shard, error }));
            }
        }
    });
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(message) => (*message).to_owned(),
            Err(_) => "non-string panic payload".to_owned(),
        },
    }
}

fn exit_error(exit: ShardExit) -> RuntimeError {
    match exit.panic {
        Some(message) => RuntimeError::ShardPanicked {
            shard: exit.shard,
            message,
        },
        None => RuntimeError::ExitedDuringStart { shard: exit.shard },
    }
}

/// The shards whose flag is set, as a cpu-list-style range list (`0-2,5`).
fn shard_list(flags: impl Iterator<Item = bool>) -> String {
    let shards: Vec<CoreId> = flags
        .enumerate()
        .filter(|(_, f)| *f)
        .map(|(i, _)| CoreId(i))
        .collect();
    format_cpu_list(&shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_limits_are_enforced() {
        assert!(RuntimeConfig::default().validate().is_ok());
        let bad_slots = RuntimeConfig {
            ring_slots: 1000,
            ..RuntimeConfig::default()
        };
        assert!(matches!(
            bad_slots.validate(),
            Err(RuntimeError::RingSlots { slots: 1000 })
        ));
        let bad_preempt = RuntimeConfig {
            preempt_timer: Duration::from_secs(1),
            ..RuntimeConfig::default()
        };
        let err = bad_preempt.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "preempt timer 1s must be within 100..=100000 µs"
        );
        let bad_spin = RuntimeConfig {
            spin_iterations: u32::MAX,
            ..RuntimeConfig::default()
        };
        assert!(matches!(
            bad_spin.validate(),
            Err(RuntimeError::SpinIterations { .. })
        ));
        let bad_stop = RuntimeConfig {
            stop_timeout: Duration::ZERO,
            ..RuntimeConfig::default()
        };
        let err = bad_stop.validate().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("stop timeout 0ns must be above zero"),
            "{err}"
        );
    }

    #[test]
    fn errors_are_send_and_sync() {
        fn assert_send_sync<X: Send + Sync + 'static>() {}
        assert_send_sync::<RuntimeError>();
    }

    #[test]
    fn shard_lists_collapse_runs() {
        assert_eq!(shard_list([true, true, false, true].into_iter()), "0-1,3");
    }

    #[test]
    fn panic_messages_are_recovered() {
        assert_eq!(panic_message(Box::new("boom")), "boom");
        assert_eq!(panic_message(Box::new(String::from("bang"))), "bang");
        assert_eq!(panic_message(Box::new(7u8)), "non-string panic payload");
    }
}
