//! Shard programs shared by the runtime tests: a driver that sends pings to a peer and
//! checks the pongs, and an echo loop. Both follow the stop protocol.

#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc::Sender;

use shards::id::ShardId;
use shards::mesh::{Batch, Inbound, ShardEnd};
use shards::runtime::ShardContext;

/// Messages of the ping-pong protocol.
#[derive(Debug)]
pub enum Msg {
    Ping(u64),
    Pong(u64),
    Poison,
}

/// What the driver reports: pongs received in order.
pub type Report = Result<u64, String>;

pub type ShardFuture = Pin<Box<dyn Future<Output = ()>>>;

/// A factory: shard 0 drives `total` pings to shard 1 with at most `window` in flight;
/// every other shard echoes.
pub fn ping_pong(
    total: u64,
    window: u64,
    report: Sender<Report>,
) -> impl Fn(ShardContext<Msg>) -> Result<ShardFuture, Infallible> + Send + Sync + 'static {
    let report = std::sync::Mutex::new(report);
    move |ctx: ShardContext<Msg>| {
        let future: ShardFuture = if ctx.id == ShardId(0) {
            let report = report.lock().unwrap().clone();
            Box::pin(drive(ctx.end, total, window, report))
        } else {
            Box::pin(echo(ctx.end))
        };
        Ok(future)
    }
}

/// Sends pings, checks pongs come back in order, reports, then follows the stop protocol.
pub async fn drive(mut end: ShardEnd<Msg>, total: u64, window: u64, report: Sender<Report>) {
    let mut batch = Batch::default();
    let (mut sent, mut received) = (0u64, 0u64);
    let peer = ShardId(1);
    while received < total {
        while sent < total && sent - received < window {
            if end.try_send(peer, Msg::Ping(sent)).is_err() {
                let _ = report.send(Err(format!("ring full at {sent} with window {window}")));
                return serve_until_stopped(end, batch).await;
            }
            sent += 1;
        }
        match end.next_batch(&mut batch).await {
            Inbound::Messages => {
                for envelope in batch.drain() {
                    match envelope.msg {
                        Msg::Pong(i) if i == received => received += 1,
                        other => {
                            let _ =
                                report.send(Err(format!("expected pong {received}: {other:?}")));
                            return;
                        }
                    }
                }
            }
            Inbound::Stopping => {
                let _ = report.send(Err(format!("stopped after {received} pongs")));
                end.quiesce();
            }
            Inbound::Stopped => return,
        }
    }
    let _ = report.send(Ok(received));
    serve_until_stopped(end, batch).await;
}

/// Echoes pings as pongs until the stop protocol completes; panics on `Poison`.
pub async fn echo(end: ShardEnd<Msg>) {
    serve_until_stopped(end, Batch::default()).await;
}

async fn serve_until_stopped(mut end: ShardEnd<Msg>, mut batch: Batch<Msg>) {
    loop {
        match end.next_batch(&mut batch).await {
            Inbound::Messages => {
                for envelope in batch.drain() {
                    match envelope.msg {
                        Msg::Ping(i) => end
                            .try_send(envelope.from, Msg::Pong(i))
                            .expect("the driver's window fits the ring"),
                        Msg::Pong(_) => {}
                        Msg::Poison => panic!("poisoned by shard {}", envelope.from),
                    }
                }
            }
            // Nothing of ours is in flight: an echo only answers.
            Inbound::Stopping => end.quiesce(),
            Inbound::Stopped => return,
        }
    }
}

/// Process CPU time (user + system) so far.
pub fn cpu_time() -> std::time::Duration {
    // SAFETY: an all-zero rusage is valid, and getrusage writes one.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    std::time::Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}
