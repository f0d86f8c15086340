//! An idle runtime sleeps: after traffic stops, shards park and the process uses ~no CPU.
//! Its own test binary, because it measures the CPU time of the whole process.

mod support;

use std::sync::mpsc::channel;
use std::time::Duration;

use shards::runtime::{Runtime, RuntimeConfig};
use shards::topology::{CoreSelection, Topology};
use support::{cpu_time, ping_pong};

/// Idle window measured.
const IDLE_WINDOW: Duration = Duration::from_millis(300);
/// Generous bound: a spinning shard would burn ~300 ms per core in the window.
const IDLE_CPU_MAX: Duration = Duration::from_millis(50);

/// After 10 000 round trips, the process spends under 50 ms of CPU in 300 ms of idleness.
#[test]
fn idle_shards_use_no_cpu() {
    let shards = Topology::detect().unwrap().usable().len().min(2);
    let config = RuntimeConfig {
        cores: CoreSelection::Count(shards),
        ..RuntimeConfig::default()
    };
    let (report, reports) = channel();
    let total = if shards == 2 { 10_000 } else { 0 };
    let runtime = Runtime::start(config, ping_pong(total, 64, report)).unwrap();
    if shards == 2 {
        let received = reports.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(received, Ok(total));
    }
    std::thread::sleep(Duration::from_millis(50));
    let before = cpu_time();
    std::thread::sleep(IDLE_WINDOW);
    let used = cpu_time() - before;
    eprintln!("{shards} idle shards used {used:?} of CPU in {IDLE_WINDOW:?}");
    assert!(
        used < IDLE_CPU_MAX,
        "idle shards used {used:?} of CPU in {IDLE_WINDOW:?}"
    );
    runtime.stop().unwrap();
}
