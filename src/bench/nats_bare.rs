//! The bare NATS echo: what a decide over NATS costs without a router.
//!
//! One responder per core, each a glommio executor pinned to its core with one
//! connection of the shard-native client (the router's own), subscribed in one queue
//! group to a subject of its own (`bench.bare.<random>`, so that runs sharing a server do
//! not answer each other), replying to every request with `CANNED_BODY`: the HTTP bare
//! responder's DecideResponse-shaped body, about as long as a real decision. It decodes
//! nothing and decides nothing, so its latency is the floor of client, server and
//! generator, and the router's added latency is measured against it in the same run.
//!
//! Why in this process: like the HTTP bare responder, it is then the same code with the
//! same client wherever the bench runs, and needs nothing started beside the NATS server.
//!
//! Readiness: a responder reports ready only after a probe request through the server has
//! been answered on the subject, so the measured window never starts with no echo the
//! server knows of. (With several responders a probe may be answered by one started
//! earlier; the later one's SUB went out before its probe and lands microseconds later.)

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::timer::Timer;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use super::BenchError;
use crate::transport::http::bare::{CANNED_BODY, SHARD_IO_MEMORY_BYTES, STOP_POLL_INTERVAL_MS};
use crate::transport::nats::{Client, ClientOptions, ClientStats, Handler, Msg};

/// The queue group the responders share.
pub const BARE_QUEUE_GROUP: &str = "bench-bare";
/// Time a responder has to connect, subscribe and answer its probe.
pub const READY_TIMEOUT_MS: u64 = 5_000;
/// Responders one echo runs.
pub const BARE_RESPONDERS_MAX: usize = 256;

type Joined = ExecutorJoinHandle<Result<(), String>>;

/// The running responders.
pub struct BareNats {
    subject: String,
    stopping: Arc<AtomicBool>,
    handles: Vec<Joined>,
}

impl BareNats {
    /// Starts one responder per entry of `cores` (pinned to it) on a fresh subject, and
    /// returns once every one has answered a probe.
    pub fn start(opts: &ClientOptions, cores: &[usize]) -> Result<BareNats, BenchError> {
        if cores.is_empty() || cores.len() > BARE_RESPONDERS_MAX {
            let reason = format!("runs 1..={BARE_RESPONDERS_MAX} responders");
            return Err(BenchError::NatsBare(reason));
        }
        let mut bare = BareNats {
            subject: fresh_subject(),
            stopping: Arc::new(AtomicBool::new(false)),
            handles: Vec::with_capacity(cores.len()),
        };
        for (i, &core) in cores.iter().enumerate() {
            if let Err(e) = bare.start_one(opts, i, core) {
                let _ = bare.stop();
                return Err(e);
            }
        }
        Ok(bare)
    }

    /// The subject the responders serve.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    fn start_one(&mut self, opts: &ClientOptions, i: usize, core: usize) -> Result<(), BenchError> {
        let (ready_tx, ready_rx) = sync_channel(1);
        let (opts, subject, stopping) = (opts.clone(), self.subject.clone(), self.stopping.clone());
        let handle = LocalExecutorBuilder::new(Placement::Fixed(core))
            .name(&format!("nats-bare-{i}"))
            .io_memory(SHARD_IO_MEMORY_BYTES)
            .spawn(move || async move {
                let served = serve(opts, &subject, i).await;
                let _ = ready_tx.send(served.as_ref().err().cloned());
                let client = served?;
                while !stopping.load(Ordering::Relaxed) {
                    Timer::new(Duration::from_millis(STOP_POLL_INTERVAL_MS)).await;
                }
                client.close().await;
                Ok(())
            })
            .map_err(|e| BenchError::NatsBare(format!("responder {i}: {e}")))?;
        let wait = Duration::from_millis(READY_TIMEOUT_MS * 2);
        match ready_rx.recv_timeout(wait) {
            Ok(None) => {
                self.handles.push(handle);
                Ok(())
            }
            Ok(Some(error)) => {
                let _ = handle.join();
                Err(BenchError::NatsBare(format!("responder {i}: {error}")))
            }
            Err(_) => {
                self.handles.push(handle);
                Err(BenchError::NatsBare(format!(
                    "responder {i} never got ready"
                )))
            }
        }
    }

    /// Stops every responder and waits for them.
    pub fn stop(self) -> Result<(), BenchError> {
        self.stopping.store(true, Ordering::Relaxed);
        let mut first = Ok(());
        for (i, handle) in self.handles.into_iter().enumerate() {
            let joined = match handle.join() {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(BenchError::NatsBare(format!("responder {i}: {e}"))),
                Err(e) => Err(BenchError::NatsBare(format!("responder {i}: {e}"))),
            };
            first = first.and(joined);
        }
        first
    }
}

/// `bench.bare.<16 hex>`, different per run and process.
fn fresh_subject() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = shardline_core::decide::rng::Rng::new(nanos ^ u64::from(std::process::id()));
    format!("bench.bare.{:016x}", rng.next_u64())
}

/// Connects, subscribes the echo and waits for a probe's answer; returns the client.
async fn serve(opts: ClientOptions, subject: &str, i: usize) -> Result<Client, String> {
    let deadline = Instant::now() + Duration::from_millis(READY_TIMEOUT_MS);
    let seed = 0xba4e_0000 + i as u64;
    let client = Client::start(opts.clone(), Arc::new(ClientStats::default()), seed);
    let handler: Handler = Rc::new(|c: &Client, m: Msg<'_>| {
        if let Some(reply) = m.reply {
            // A full outbound buffer drops the reply; the requester counts a timeout.
            let _ = c.publish(reply, None, &[], CANNED_BODY);
        }
    });
    client
        .subscribe(subject, Some(BARE_QUEUE_GROUP), handler)
        .map_err(|e| e.to_string())?;
    // Its own requests do not reach it (no echo): the probe is a second connection.
    let probe = Client::start(opts, Arc::new(ClientStats::default()), seed + 1);
    let answered = probe_until(&probe, subject, deadline).await;
    probe.close().await;
    if !answered {
        client.close().await;
        return Err(format!(
            "no answer on {subject} within {READY_TIMEOUT_MS} ms"
        ));
    }
    Ok(client)
}

async fn probe_until(probe: &Client, subject: &str, deadline: Instant) -> bool {
    let wait = Duration::from_millis(STOP_POLL_INTERVAL_MS);
    while Instant::now() < deadline {
        if probe.is_connected() && probe.request(subject, &[], b"{}", wait).await.is_ok() {
            return true;
        }
        Timer::new(Duration::from_millis(5)).await;
    }
    false
}
