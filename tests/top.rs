//! `shardline top`, black-box: the built binary against a real router on 127.0.0.1:0,
//! while a client sends decisions to every shard.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

/// Longest any `top` run here may take: two scrapes and their timeouts, with room.
const RUN_LIMIT: Duration = Duration::from_secs(30);

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_shardline"))
        .arg("top")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shardline top")
}

/// Waits for `child` at most `RUN_LIMIT` (killing it past that) and collects its output.
fn finish(mut child: Child) -> Run {
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > RUN_LIMIT {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("shardline top did not exit within {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Run {
        code: status.code(),
        stdout,
        stderr,
        took: start.elapsed(),
    }
}

/// The cells of the frame's row for `shard`.
fn row<'a>(frame: &'a str, shard: &str) -> Vec<&'a str> {
    frame
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&shard))
        .unwrap_or_else(|| panic!("no row for shard {shard}:\n{frame}"))
}

/// `--once` against the ops listener and the data listener: one plain frame with a row
/// per shard and the totals, request rates above zero where requests went, p50/p99 read
/// from the latency histogram, and the errors the unknown tenant caused by code.
#[test]
fn once_prints_one_plain_frame_with_every_shard() {
    let _serial = serial();
    let tenants = tenants_covering(usable_cores());
    let prepare = |dir: &TempDir| {
        for tenant in &tenants {
            write_policy(dir, tenant, "default", SIMPLE_POLICY);
        }
    };
    // Shard ports: a decision is made on the shard it reaches, so the sender reaches each.
    let (_dir, server, base) = start_with_shard_ports("top", "", prepare);
    let shards = server.shard_count();
    let data = server.local_addr();
    let ops = server.ops_addr().expect("an operations listener");

    for target in [format!("http://{ops}"), format!("http://{data}/metrics")] {
        // Decisions on every shard (and for one unknown tenant) for as long as top runs,
        // so both of its scrapes see traffic between them.
        let running = Arc::new(AtomicBool::new(true));
        let sender = {
            let running = running.clone();
            let mut tenants = tenants.clone();
            tenants.push("no-such-tenant".into());
            std::thread::spawn(move || {
                let mut clients: Vec<Client> = (0..shards)
                    .map(|i| Client::connect(loopback(base + i as u16)))
                    .collect();
                let mut sent = 0u64;
                while running.load(Ordering::Relaxed) {
                    for client in &mut clients {
                        for tenant in &tenants {
                            let body = decide_body(tenant, &format!("r{sent}"));
                            let resp = client.request("POST", "/v1/decide", &[], &body);
                            assert!(resp.status == 200 || resp.status == 404, "{}", resp.status);
                            sent += 1;
                        }
                    }
                }
                sent
            })
        };
        let run = finish(spawn(&["--once", "--target", &target, "--interval", "200"]));
        running.store(false, Ordering::Relaxed);
        assert!(sender.join().unwrap() > 0);
        assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
        let frame = &run.stdout;
        assert!(!frame.contains('\x1b'), "escape codes in --once:\n{frame}");
        let lines: Vec<&str> = frame.lines().collect();
        assert!(lines[0].contains(&target), "{frame}");
        assert!(lines[0].contains(&format!("{shards} shards")), "{frame}");
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "shard", "req/s", "p50", "p99", "err/s", "shed/s", "cross/s", "opened", "nats",
                "stalled"
            ],
            "{frame}"
        );
        // Every shard answers what reaches it: each has a rate and percentiles.
        let mut answered = 0.0;
        for shard in 0..shards {
            let cells = row(frame, &shard.to_string());
            assert_eq!(cells.len(), 10, "{frame}");
            let rate: f64 = cells[1].parse().unwrap();
            assert!(rate > 0.0, "shard {shard} answered nothing:\n{frame}");
            answered += rate;
            assert_ne!(cells[2], "-", "shard {shard} decided nothing:\n{frame}");
            assert_ne!(cells[3], "-", "shard {shard} decided nothing:\n{frame}");
            assert_eq!(cells[9], "no", "{frame}");
        }
        let all = row(frame, "all");
        let rate: f64 = all[1].parse().unwrap();
        assert!(rate > 0.0, "{frame}");
        assert_eq!(
            all[8..],
            ["-", "0"],
            "no NATS configured, no stall:\n{frame}"
        );
        assert!((answered - rate).abs() <= shards as f64, "{frame}");
        for latency in [all[2], all[3]] {
            assert!(
                latency.ends_with("us") || latency.ends_with("ms") || latency.ends_with('s'),
                "no percentile in the totals row:\n{frame}"
            );
        }
        let errors: f64 = all[4].parse().unwrap();
        assert!(
            errors > 0.0,
            "the unknown tenant's errors are missing:\n{frame}"
        );
        assert!(
            frame.contains("errors by code: policy_not_found (shard "),
            "{frame}"
        );
        assert!(frame.contains("sheds by cause: none"), "{frame}");
        assert!(frame.contains("stalled shards: none"), "{frame}");
    }
    server.stop().unwrap();
}

/// A target that refuses, one that accepts and never answers, and one that is not a
/// router: each exits non-zero within a bounded time, saying what is wrong. Without
/// `--once` and without a terminal the view refuses to start instead of drawing into a
/// pipe.
#[test]
fn a_bad_target_fails_with_a_clear_message() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let run = finish(spawn(&["--once", "--target", &format!("http://{closed}")]));
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("cannot scrape http://{closed}"))
            && run.stderr.contains("refused"),
        "{}",
        run.stderr
    );

    // Accepts, reads nothing, answers nothing: the read timeout ends it.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let holder = std::thread::spawn(move || {
        let (conn, _) = silent.accept().unwrap();
        std::thread::sleep(Duration::from_secs(4));
        drop(conn);
    });
    let run = finish(spawn(&["--once", "--target", &format!("http://{addr}")]));
    holder.join().unwrap();
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("no answer within"), "{}", run.stderr);
    assert!(run.took < Duration::from_secs(15), "{:?}", run.took);

    // Some other exporter: HTTP 200 with metrics, none of them a router's.
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = other.local_addr().unwrap();
    let exporter = std::thread::spawn(move || {
        use std::io::Write;
        let (mut conn, _) = other.accept().unwrap();
        let mut head = [0u8; 1024];
        let _ = conn.read(&mut head);
        let body = "node_load1 0.5\n";
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(answer.as_bytes()).unwrap();
    });
    let run = finish(spawn(&["--once", "--target", &format!("http://{addr}")]));
    exporter.join().unwrap();
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("not a Shardline router"),
        "{}",
        run.stderr
    );

    let run = finish(spawn(&["--once", "--target", "https://127.0.0.1:1"]));
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("http://HOST:PORT"), "{}", run.stderr);

    let run = finish(spawn(&["--once", "--interval", "1"]));
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("--interval"), "{}", run.stderr);

    let run = finish(spawn(&["--target", &format!("http://{closed}")]));
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("not a terminal"), "{}", run.stderr);
}
