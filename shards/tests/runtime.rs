//! Real glommio executors pinned to this machine's usable cores: messages through the mesh,
//! readiness, failures reported instead of hangs, graceful stop.

mod support;

use std::sync::mpsc::channel;
use std::time::Duration;

use shards::id::{CoreId, ShardId};
use shards::mesh::{Batch, Inbound};
use shards::runtime::{Runtime, RuntimeConfig, RuntimeError, ShardContext};
use shards::topology::{CoreSelection, Topology, TopologyError};
use support::{ping_pong, Msg};

const REPORT_TIMEOUT: Duration = Duration::from_secs(60);

/// Two shards if this machine has two usable cores, else `None` (the test says so).
fn two_shards(spin_iterations: u32) -> Option<RuntimeConfig> {
    let usable = Topology::detect().unwrap().usable().len();
    if usable < 2 {
        eprintln!("SKIPPED: needs 2 usable cores, this process has {usable}");
        return None;
    }
    let config = RuntimeConfig {
        cores: CoreSelection::Count(2),
        ring_slots: 256,
        spin_iterations,
        ..RuntimeConfig::default()
    };
    Some(config)
}

fn run_ping_pong(config: RuntimeConfig, total: u64, window: u64) {
    let (report, reports) = channel();
    let runtime = Runtime::start(config, ping_pong(total, window, report)).unwrap();
    assert_eq!(runtime.shard_count(), 2);
    let received = reports
        .recv_timeout(REPORT_TIMEOUT)
        .expect("driver reported in time");
    assert_eq!(received, Ok(total));
    runtime.stop().unwrap();
}

/// Shard 0 sends 50 000 pings to shard 1 through the mesh and gets every pong back in
/// order; then both shards stop through the quiesce protocol.
#[test]
fn two_shards_exchange_messages_and_stop() {
    let Some(config) = two_shards(64) else { return };
    run_ping_pong(config, 50_000, 128);
}

/// With no spinning every empty check parks, so each message crosses a park/wake edge:
/// a lost wakeup would stall the exchange and fail the report deadline.
#[test]
fn park_wake_edges_lose_no_wakeup() {
    let Some(config) = two_shards(0) else { return };
    run_ping_pong(config, 20_000, 1);
}

/// One shard per usable core also works when the machine has only one.
#[test]
fn single_shard_starts_and_stops() {
    let config = RuntimeConfig {
        cores: CoreSelection::Count(1),
        ..RuntimeConfig::default()
    };
    let (seen, seen_rx) = channel();
    let seen = std::sync::Mutex::new(seen);
    let runtime = Runtime::start(config, move |mut ctx: ShardContext<u8>| {
        let seen = seen.lock().unwrap().clone();
        Ok::<_, std::convert::Infallible>(async move {
            seen.send((ctx.id, ctx.core, ctx.end.shard_count()))
                .unwrap();
            let mut batch = Batch::default();
            loop {
                match ctx.end.next_batch(&mut batch).await {
                    Inbound::Messages => unreachable!("no peer"),
                    Inbound::Stopping => ctx.end.quiesce(),
                    Inbound::Stopped => break,
                }
            }
        })
    })
    .unwrap();
    let (id, core, count) = seen_rx.recv_timeout(REPORT_TIMEOUT).unwrap();
    assert_eq!((id, count), (ShardId(0), 1));
    assert_eq!(runtime.cores(), &[core]);
    runtime.stop().unwrap();
}

#[derive(Debug, thiserror::Error)]
#[error("listener bind failed")]
struct BindFailed;

/// A factory error on one shard comes back from `start` naming the shard; the shard that
/// did start is stopped and joined, nothing hangs.
#[test]
fn factory_error_is_returned_not_hung() {
    let Some(config) = two_shards(64) else { return };
    let result = Runtime::start(config, |mut ctx: ShardContext<u8>| {
        if ctx.id == ShardId(1) {
            return Err(BindFailed);
        }
        Ok(async move {
            let mut batch = Batch::default();
            while ctx.end.next_batch(&mut batch).await != Inbound::Stopped {
                if ctx.end.stop_requested() {
                    ctx.end.quiesce();
                }
            }
        })
    });
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeError::ShardInit {
                shard: ShardId(1),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "shard 1 failed to initialise: listener bind failed"
    );
}

/// A panic in the factory is reported with its message.
#[test]
fn factory_panic_is_reported() {
    let config = RuntimeConfig {
        cores: CoreSelection::Count(1),
        ..RuntimeConfig::default()
    };
    let result = Runtime::start(
        config,
        |_ctx: ShardContext<u8>| -> Result<std::future::Ready<()>, std::convert::Infallible> {
            panic!("config file missing")
        },
    );
    let err = result.unwrap_err();
    assert_eq!(err.to_string(), "shard 0 panicked: config file missing");
}

/// A shard that panics while running is reported by `stop`; its peer still stops, because
/// a dropped shard end counts as quiesced.
#[test]
fn running_shard_panic_is_reported_by_stop() {
    let Some(config) = two_shards(64) else { return };
    let (report, _reports) = channel();
    let factory = ping_pong(0, 1, report);
    let mut runtime = Runtime::start(config, move |mut ctx: ShardContext<Msg>| {
        if ctx.id == ShardId(0) {
            ctx.end.try_send(ShardId(1), Msg::Poison).unwrap();
        }
        factory(ctx)
    })
    .unwrap();
    let exit = runtime
        .wait_exit(REPORT_TIMEOUT)
        .expect("the poisoned shard exits");
    assert_eq!(exit.shard, ShardId(1));
    assert_eq!(exit.panic.as_deref(), Some("poisoned by shard 0"));
    let err = runtime.stop().unwrap_err();
    assert_eq!(err.to_string(), "shard 1 panicked: poisoned by shard 0");
}

/// Selecting a core outside the usable set fails before any thread starts.
#[test]
fn unusable_core_is_refused() {
    let config = RuntimeConfig {
        cores: CoreSelection::List(vec![CoreId(1000)]),
        ..RuntimeConfig::default()
    };
    let (report, _reports) = channel();
    let err = Runtime::start(config, ping_pong(0, 1, report)).unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeError::Topology(TopologyError::CoreNotUsable { .. })
        ),
        "{err}"
    );
}
