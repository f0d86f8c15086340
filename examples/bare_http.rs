//! A bare HTTP responder on Shardline's HTTP stack: N pinned glommio shards, all accepting
//! on one port (SO_REUSEPORT), each answering every request with the same small JSON
//! body. It does no routing, so its throughput and latency are the baseline the router
//! is measured against: whatever the router adds on top is the cost of deciding.
//!
//! ```text
//! cargo run --release --example bare_http -- --listen 127.0.0.1:8090 --shards 2
//! wrk -t1 -c32 -d10s --latency http://127.0.0.1:8090/
//! ```
//!
//! SIGINT or SIGTERM stops every shard gracefully; each prints its counters on the way out.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use glommio::{LocalExecutorBuilder, Placement};
use shardline::transport::http::{
    bind, serve, HttpLimits, HttpStats, Request, Response, Service, Stop,
};

/// The answer to every request: shaped like a DecideResponse, about as long.
const CANNED_BODY: &[u8] = concat!(
    r#"{"ok":true,"decision":{"provider_id":"bare","reason":"weighted","priority":50,"#,
    r#""expected_latency_ms":null,"expected_cost":null,"policy_id":"default","#,
    r#""policy_version":"1.0","metadata":{"tenant_id":"bare","executed_extensions":[]}},"#,
    r#""context":{"request_id":"bare"}}"#
)
.as_bytes();
/// How often a shard looks at the process-wide stop flag set by the signal handler.
const STOP_POLL_INTERVAL_MS: u64 = 50;
/// glommio's registered I/O buffers per shard; sockets do not use them, and the default
/// (10 MiB) exceeds a common 8 MiB memlock limit.
const SHARD_IO_MEMORY_BYTES: usize = 1 << 20;

#[derive(Parser, Debug)]
#[command(about = "Bare HTTP responder: the baseline for Shardline's HTTP numbers")]
struct Args {
    /// Address every shard accepts on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Shards (threads), each pinned to one CPU, starting at CPU 0.
    #[arg(long, default_value_t = 2)]
    shards: usize,
}

/// Answers every request with `CANNED_BODY`.
struct Canned;

impl Service for Canned {
    async fn call<'a>(&'a self, _req: &'a Request<'a>, resp: &'a mut Response) {
        resp.body.extend_from_slice(CANNED_BODY);
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.shards > 0, "--shards must be at least 1");
    let stopping = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stopping.clone()).context("signal handler")?;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut handles = Vec::with_capacity(args.shards);
    for shard in 0..args.shards {
        let stopping = stopping.clone();
        let listen = args.listen;
        let handle = LocalExecutorBuilder::new(Placement::Fixed(shard % cpus))
            .name(&format!("shard-{shard}"))
            .io_memory(SHARD_IO_MEMORY_BYTES)
            .spawn(move || run_shard(shard, listen, stopping))
            .map_err(|e| anyhow::anyhow!("starting shard {shard}: {e}"))?;
        handles.push(handle);
    }
    eprintln!(
        "bare_http: {} shard(s) on http://{}",
        args.shards, args.listen
    );
    for (shard, handle) in handles.into_iter().enumerate() {
        let served = handle
            .join()
            .map_err(|e| anyhow::anyhow!("shard {shard}: {e}"))?;
        served.with_context(|| format!("shard {shard}"))?;
    }
    Ok(())
}

async fn run_shard(
    shard: usize,
    listen: SocketAddr,
    stopping: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let listener = bind(listen).with_context(|| format!("binding {listen}"))?;
    let stop = Stop::new();
    let watcher = stop.clone();
    glommio::spawn_local(async move {
        while !stopping.load(Ordering::Relaxed) {
            glommio::timer::sleep(Duration::from_millis(STOP_POLL_INTERVAL_MS)).await;
        }
        watcher.trigger();
    })
    .detach();
    let stats = Arc::new(HttpStats::default());
    let limits = HttpLimits::default();
    let served = serve(listener, Rc::new(Canned), limits, stats.clone(), None, stop).await;
    eprintln!("bare_http: shard {shard} stopped: {:?}", stats.snapshot());
    Ok(served?)
}
