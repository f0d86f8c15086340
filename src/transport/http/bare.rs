//! The bare responder: Shardline's HTTP stack with no router behind it.
//!
//! N pinned glommio shards accept on one port (SO_REUSEPORT) and answer every request with
//! the same DecideResponse-shaped body (`CANNED_BODY`). It decodes nothing and decides
//! nothing, so its latency and throughput are the floor the router is measured against:
//! whatever the router adds on top is the cost of deciding. `examples/bare_http.rs` serves
//! it as a process; `shardline bench --compare-bare` starts it in-process. Both use
//! `BareShards`, so the baseline is the same code whichever way it is measured.
//!
//! Why an `AtomicBool` polled every `STOP_POLL_INTERVAL_MS` rather than a cross-thread
//! wake: `Stop` is single-threaded by design (see `stop.rs`), the flag is what a signal
//! handler can set, and a stop that takes 50 ms is irrelevant to a baseline.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Duration;

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use thiserror::Error;

use super::{
    bind, serve, HttpLimits, HttpStats, HttpStatsSnapshot, Request, Response, ServeError, Service,
    Stop,
};

/// The answer to every request: shaped like a DecideResponse, about as long.
pub const CANNED_BODY: &[u8] = concat!(
    r#"{"ok":true,"decision":{"provider_id":"bare","reason":"weighted","priority":50,"#,
    r#""expected_latency_ms":null,"expected_cost":null,"policy_id":"default","#,
    r#""policy_version":"1.0","metadata":{"tenant_id":"bare","executed_extensions":[]}},"#,
    r#""context":{"request_id":"bare"}}"#
)
.as_bytes();
/// How often a shard looks at the stop flag.
pub const STOP_POLL_INTERVAL_MS: u64 = 50;
/// glommio's registered I/O buffers per shard; sockets do not use them, and the default
/// (10 MiB) exceeds a common 8 MiB memlock limit.
pub const SHARD_IO_MEMORY_BYTES: usize = 1 << 20;
/// Shards one bare responder runs (the router's own ceiling).
pub const BARE_SHARDS_MAX: usize = 256;

/// Answers every request with `CANNED_BODY`.
pub struct Canned;

impl Service for Canned {
    async fn call<'a>(&'a self, _req: &'a Request<'a>, resp: &'a mut Response) {
        resp.body.extend_from_slice(CANNED_BODY);
    }
}

/// Why the bare responder did not start or did not stop cleanly.
#[derive(Debug, Error)]
pub enum BareError {
    /// No shard, or more than `BARE_SHARDS_MAX`.
    #[error("the bare responder runs 1..={BARE_SHARDS_MAX} shards, got {0}")]
    Shards(usize),
    /// glommio could not start the shard's executor (io_uring, memlock, pinning).
    #[error("starting bare shard {shard}: {message}")]
    Spawn { shard: usize, message: String },
    /// The shard could not listen.
    #[error("bare shard {shard}: binding {addr}: {error}")]
    Bind {
        shard: usize,
        addr: SocketAddr,
        error: io::Error,
    },
    /// `serve` refused its limits or did not drain in time.
    #[error("bare shard {shard}: {error}")]
    Serve { shard: usize, error: ServeError },
    /// The shard's thread panicked or ended without reporting.
    #[error("bare shard {shard} ended abnormally: {message}")]
    Join { shard: usize, message: String },
}

type ShardHandle = ExecutorJoinHandle<Result<HttpStatsSnapshot, BareError>>;

/// Running bare shards; `stop` (or setting `stop_flag`, then `wait`) ends them.
pub struct BareShards {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    handles: Vec<ShardHandle>,
}

impl BareShards {
    /// Starts one shard per entry of `cores` (shard `i` pinned to CPU `cores[i]`), all
    /// accepting on `listen`, and returns once every shard listens. With port 0, shard 0
    /// picks the port and the others join it.
    pub fn start(listen: SocketAddr, cores: &[usize]) -> Result<BareShards, BareError> {
        if cores.is_empty() || cores.len() > BARE_SHARDS_MAX {
            return Err(BareError::Shards(cores.len()));
        }
        let mut bare = BareShards {
            addr: listen,
            stopping: Arc::new(AtomicBool::new(false)),
            handles: Vec::with_capacity(cores.len()),
        };
        for (shard, &core) in cores.iter().enumerate() {
            if let Err(err) = bare.start_shard(shard, core) {
                // Already started shards are stopped; their own errors matter less.
                let _ = bare.stop();
                return Err(err);
            }
        }
        Ok(bare)
    }

    fn start_shard(&mut self, shard: usize, core: usize) -> Result<(), BareError> {
        let (bound_tx, bound_rx) = sync_channel(1);
        let stopping = Arc::clone(&self.stopping);
        let addr = self.addr;
        let handle = LocalExecutorBuilder::new(Placement::Fixed(core))
            .name(&format!("bare-{shard}"))
            .io_memory(SHARD_IO_MEMORY_BYTES)
            .spawn(move || async move {
                let listener = match bind(addr) {
                    Ok(l) => l,
                    Err(error) => {
                        let _ = bound_tx.send(None);
                        return Err(BareError::Bind { shard, addr, error });
                    }
                };
                let _ = bound_tx.send(listener.local_addr().ok());
                run_shard(shard, listener, stopping).await
            })
            .map_err(|e| BareError::Spawn {
                shard,
                message: e.to_string(),
            })?;
        match bound_rx.recv() {
            Ok(Some(bound)) => {
                self.addr = bound;
                self.handles.push(handle);
                Ok(())
            }
            // The shard failed before listening: its own error says why.
            _ => Err(join_shard(shard, handle)
                .err()
                .unwrap_or_else(|| BareError::Join {
                    shard,
                    message: "ended before listening".into(),
                })),
        }
    }

    /// The address every shard accepts on (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The flag that stops every shard once set (from a signal handler, for instance).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stopping)
    }

    /// Waits until the shards stop (the flag was set) and returns each shard's counters.
    pub fn wait(mut self) -> Result<Vec<HttpStatsSnapshot>, BareError> {
        let handles = std::mem::take(&mut self.handles);
        let mut stats = Vec::with_capacity(handles.len());
        let mut first_error = None;
        for (shard, handle) in handles.into_iter().enumerate() {
            match join_shard(shard, handle) {
                Ok(s) => stats.push(s),
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        first_error.map_or(Ok(stats), Err)
    }

    /// Stops every shard gracefully (requests in flight are answered) and waits.
    pub fn stop(self) -> Result<Vec<HttpStatsSnapshot>, BareError> {
        self.stopping.store(true, Ordering::Release);
        self.wait()
    }
}

impl Drop for BareShards {
    /// Shards left running would outlive their owner; dropping stops them.
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        for (shard, handle) in std::mem::take(&mut self.handles).into_iter().enumerate() {
            let _ = join_shard(shard, handle);
        }
    }
}

fn join_shard(shard: usize, handle: ShardHandle) -> Result<HttpStatsSnapshot, BareError> {
    handle.join().map_err(|e| BareError::Join {
        shard,
        message: e.to_string(),
    })?
}

async fn run_shard(
    shard: usize,
    listener: glommio::net::TcpListener,
    stopping: Arc<AtomicBool>,
) -> Result<HttpStatsSnapshot, BareError> {
    let stop = Stop::new();
    let watcher = stop.clone();
    glommio::spawn_local(async move {
        while !stopping.load(Ordering::Acquire) {
            glommio::timer::sleep(Duration::from_millis(STOP_POLL_INTERVAL_MS)).await;
        }
        watcher.trigger();
    })
    .detach();
    let stats = Arc::new(HttpStats::default());
    let limits = HttpLimits::default();
    serve(listener, Rc::new(Canned), limits, stats.clone(), None, stop)
        .await
        .map_err(|error| BareError::Serve { shard, error })?;
    Ok(stats.snapshot())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Zero shards is refused before any thread starts.
    #[test]
    fn refuses_zero_shards() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        assert!(matches!(
            BareShards::start(addr, &[]),
            Err(BareError::Shards(0))
        ));
    }
}
