//! A bare HTTP responder on Shardline's HTTP stack: N pinned glommio shards, all accepting
//! on one port (SO_REUSEPORT), each answering every request with the same small JSON
//! body. It does no routing, so its throughput and latency are the baseline the router
//! is measured against: whatever the router adds on top is the cost of deciding.
//!
//! The responder itself is `shardline::transport::http::bare`, which `shardline bench
//! --compare-bare` also starts in-process; this example only serves it as a process.
//!
//! ```text
//! cargo run --release --example bare_http -- --listen 127.0.0.1:8090 --shards 2
//! wrk -t1 -c32 -d10s --latency http://127.0.0.1:8090/
//! ```
//!
//! SIGINT or SIGTERM stops every shard gracefully; their counters are printed on the way out.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use shardline::transport::http::bare::{BareShards, BARE_SHARDS_MAX};

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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        (1..=BARE_SHARDS_MAX).contains(&args.shards),
        "--shards must be 1..={BARE_SHARDS_MAX}"
    );
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cores: Vec<usize> = (0..args.shards).map(|shard| shard % cpus).collect();
    let bare = BareShards::start(args.listen, &cores)?;
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, bare.stop_flag()).context("signal handler")?;
    }
    eprintln!(
        "bare_http: {} shard(s) on http://{}",
        args.shards,
        bare.local_addr()
    );
    for (shard, stats) in bare.wait()?.iter().enumerate() {
        eprintln!("bare_http: shard {shard} stopped: {stats:?}");
    }
    Ok(())
}
