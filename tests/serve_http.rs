//! The router over HTTP, black-box: a real server on 127.0.0.1:0, a raw HTTP client.

mod support;

use support::*;

/// A newcomer's first request: a decision for a bundled tenant, on any shard.
#[test]
fn decide_happy_path() {
    let _serial = serial();
    let dir = config_dir("happy", "");
    let server = start(settings(&dir));
    let mut client = Client::connect(server.local_addr());
    for tenant in ["acme", "globex", "initech"] {
        let resp = client.request("POST", "/v1/decide", &[], &decide_body(tenant, "r-1"));
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        let json = resp.json();
        assert_eq!(json["ok"], true);
        assert_eq!(json["decision"]["metadata"]["tenant_id"], tenant);
    }
    server.stop().unwrap();
}
