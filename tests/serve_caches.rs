//! The shard's remembered answers and result ids under a flood, over real HTTP: bounded
//! by bytes (the gauges and the process's RSS stay flat) and fair across tenants (one
//! tenant's flood of unique keys or result ids never evicts another tenant's entry).

mod support;

use support::*;

/// Requests written back to back before their responses are read.
const PIPELINE: usize = 50;
/// Unique idempotency keys the flooding tenant sends.
const FLOOD_KEYS: usize = 5_000;
/// Fake result ids the flooding tenant sends: more than the 65,536 entries a count-bound
/// set held, so a count bound alone would have evicted the victim's id.
const FLOOD_RESULTS: usize = 70_000;
/// RSS growth tolerated over the flood (the answers alone would be ~1.4 GB unbounded).
const RSS_GROWTH_BYTES_MAX: u64 = 64 << 20;

/// Two tenant names owned by the same shard, and that shard.
fn tenants_on_one_shard() -> (String, String, usize) {
    let partition = shards::Partitioner::new(usable_cores());
    let a = "flooder".to_owned();
    let shard = partition.shard_of(&a).index();
    let b = (0..)
        .map(|i| format!("victim{i}"))
        .find(|t| partition.shard_of(t).index() == shard)
        .unwrap();
    (a, b, shard)
}

/// A decide body with 64 metadata values of 1 KiB (echoed in the answer: ~70 KiB).
fn big_decide(tenant: &str, key: &str, filler: &str) -> Vec<u8> {
    let metadata: Vec<String> = (0..64).map(|i| format!(r#""m{i}":"{filler}""#)).collect();
    format!(
        r#"{{"request_id":"{key}","tenant_id":"{tenant}","idempotency_key":"{key}","task":{{"type":"chat","payload_ref":"p"}},"metadata":{{{}}}}}"#,
        metadata.join(",")
    )
    .into_bytes()
}

fn result_body(tenant: &str, id: &str) -> Vec<u8> {
    format!(
        r#"{{"assignment_id":"{id}","request_id":"{id}","status":"success","provider_id":"openai","latency_ms":120,"cost":0.01,"tenant_id":"{tenant}","timestamp":1700000000000}}"#
    )
    .into_bytes()
}

/// Sends `count` requests made by `body(i)` on one keep-alive connection, pipelined.
fn flood(client: &mut Client, path: &str, count: usize, body: impl Fn(usize) -> Vec<u8>) {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let headers = auth_for(path, &auth);
    let mut sent = 0;
    while sent < count {
        let batch = PIPELINE.min(count - sent);
        let mut bytes = Vec::new();
        for i in sent..sent + batch {
            bytes.extend(request_bytes("POST", path, &headers, &body(i)));
        }
        client.send_raw(&bytes);
        for _ in 0..batch {
            let resp = client.read_response().expect("a response");
            assert!(resp.status < 300, "{}", String::from_utf8_lossy(&resp.body));
        }
        sent += batch;
    }
}

/// Results need a `results` token by default (`[auth] results`); the test token has it.
fn auth_for<'a>(path: &str, auth: &'a str) -> Vec<(&'static str, &'a str)> {
    match path {
        "/v1/results" => vec![("Authorization", auth)],
        _ => Vec::new(),
    }
}

/// `name{shard="shard"}` from the metrics page.
fn gauge(addr: std::net::SocketAddr, name: &str, shard: usize) -> u64 {
    let resp = Client::connect(addr).request("GET", "/metrics", &[], b"");
    let text = String::from_utf8(resp.body).unwrap();
    let series = format!("{name}{{shard=\"{shard}\"}} ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&series))
        .unwrap_or_else(|| panic!("no {series} in the metrics"));
    line[series.len()..].trim().parse().unwrap()
}

/// Resident set size of this process (the router runs in it).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

/// A flood of unique idempotency keys with ~70 KiB answers from one tenant: the other
/// tenant's key on the same shard still replays its first answer, the shard's charged
/// bytes stay under `idempotency_bytes_per_shard_max`, and the process's RSS stays flat.
#[test]
fn idempotency_flood_keeps_other_tenants_keys_and_a_byte_bound() {
    let _serial = serial();
    let (a, b, shard) = tenants_on_one_shard();
    // The entry bound alone would let the flood evict b's key.
    let dir = config_dir(
        "caches-idem",
        "[limits]\nidempotency_entries_per_shard = 2000\n",
    );
    write_policy(&dir, &a, "default", SIMPLE_POLICY);
    write_policy(&dir, &b, "default", SIMPLE_POLICY);
    let server = start(settings(&dir));
    let addr = server.local_addr();
    let filler = "x".repeat(1024);

    let mut client = Client::connect(addr);
    let first = client.request("POST", "/v1/decide", &[], &big_decide(&b, "b-key", &filler));
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );

    // Warm up (allocator arenas, buffers), then measure the rest of the flood.
    let warm = FLOOD_KEYS / 10;
    let key = |i: usize| format!("a-key-{i}");
    flood(&mut client, "/v1/decide", warm, |i| {
        big_decide(&a, &key(i), &filler)
    });
    let rss_before = rss_bytes();
    flood(&mut client, "/v1/decide", FLOOD_KEYS - warm, |i| {
        big_decide(&a, &key(warm + i), &filler)
    });
    let rss_after = rss_bytes();

    let retry = client.request("POST", "/v1/decide", &[], &big_decide(&b, "b-key", &filler));
    assert_eq!(retry.status, 200);
    assert_eq!(
        retry.json()["decision"],
        first.json()["decision"],
        "b's retry got a new decision: its key was evicted by a's flood"
    );
    let bytes = gauge(addr, "shardline_idempotency_bytes", shard);
    let bound = shardline::config::IDEMPOTENCY_BYTES_PER_SHARD_DEFAULT as u64;
    assert!(
        bytes > 0 && bytes <= bound,
        "{bytes} bytes held, bound {bound}"
    );
    let growth = rss_after.saturating_sub(rss_before);
    eprintln!(
        "idempotency: {bytes} bytes held (bound {bound}); RSS {} → {} KiB",
        rss_before >> 10,
        rss_after >> 10
    );
    assert!(
        growth < RSS_GROWTH_BYTES_MAX,
        "RSS grew by {} MiB over {} keys ({} → {} MiB)",
        growth >> 20,
        FLOOD_KEYS - warm,
        rss_before >> 20,
        rss_after >> 20
    );
    server.stop().unwrap();
}

/// A flood of fake result ids from one tenant does not evict another tenant's real one:
/// the real ExecResult redelivered after the flood is still a duplicate (not counted or
/// billed twice), and the shard's charged bytes stay under their bound.
#[test]
fn result_id_flood_keeps_other_tenants_ids() {
    let _serial = serial();
    let (a, b, shard) = tenants_on_one_shard();
    let dir = config_dir("caches-results", "");
    write_policy(&dir, &a, "default", SIMPLE_POLICY);
    write_policy(&dir, &b, "default", SIMPLE_POLICY);
    let server = start(settings(&dir));
    let addr = server.local_addr();
    let mut client = Client::connect(addr);

    let real = result_body(&b, "real-assignment-1");
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let headers = auth_for("/v1/results", &auth);
    let first = client.request("POST", "/v1/results", &headers, &real);
    assert_eq!(
        first.status,
        202,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    assert_eq!(first.json()["duplicate"], false);

    flood(&mut client, "/v1/results", FLOOD_RESULTS, |i| {
        result_body(&a, &format!("fake-{i}"))
    });

    let again = client.request("POST", "/v1/results", &headers, &real);
    assert_eq!(
        again.json()["duplicate"],
        true,
        "the redelivered result was taken again: its id was evicted by the flood"
    );
    let bytes = gauge(addr, "shardline_results_dedup_bytes", shard);
    let bound = shardline::config::RESULTS_DEDUP_BYTES_PER_SHARD_DEFAULT as u64;
    assert!(
        bytes > 0 && bytes <= bound,
        "{bytes} bytes held, bound {bound}"
    );
    server.stop().unwrap();
}

/// The gauges start at zero and are per shard with a total, like every summed gauge.
#[test]
fn cache_gauges_are_exported() {
    let _serial = serial();
    let dir = config_dir("caches-gauges", "");
    let server = start(settings(&dir));
    let addr = server.local_addr();
    for name in [
        "shardline_idempotency_bytes",
        "shardline_results_dedup_bytes",
    ] {
        assert_eq!(gauge(addr, name, 0), 0);
    }
    let resp = Client::connect(addr).request("GET", "/metrics", &[], b"");
    let text = String::from_utf8(resp.body).unwrap();
    assert!(text.contains("shardline_idempotency_unstored_total{shard=\"all\"} 0"));
    server.stop().unwrap();
}
