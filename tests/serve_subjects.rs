//! A request may name its own `assignment_subject` only within
//! `nats.assignment_subjects_allowed`: anything else is `invalid_request` naming the
//! field, over HTTP (NATS off: the check does not depend on a connection) and over NATS
//! (a real nats-server), and nothing is published on the refused subject.

#![allow(deprecated)] // the sync `nats` crate is deprecated upstream; it is the reference here

mod support;

use std::time::Duration;

use serde_json::Value;
use support::nats::{start_connected, NatsServer};
use support::*;

const WAIT: Duration = Duration::from_secs(5);

fn body(tenant: &str, id: &str, subject: &str) -> Vec<u8> {
    format!(
        r#"{{"request_id":"{id}","tenant_id":"{tenant}","task":{{"type":"chat","payload_ref":"p"}},"push_assignment":true,"assignment_subject":"{subject}"}}"#
    )
    .into_bytes()
}

fn assert_refused(status: u16, v: &Value, subject: &str) {
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_request", "{v}");
    assert_eq!(v["error"]["details"]["field"], "assignment_subject", "{v}");
    assert_eq!(v["error"]["details"]["rule"], "not_allowed", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains(subject), "{message}");
    assert!(message.contains("assignment_subjects_allowed"), "{message}");
}

/// Over HTTP with NATS off: the default list accepts `caf.exec.assign.v1[.…]` and refuses
/// the router's own usage and result subjects; a configured list replaces the default.
#[test]
fn http_refuses_subjects_outside_the_allowed_list() {
    let _serial = serial();
    let dir = config_dir("subjects-http", "");
    let server = start(settings(&dir));
    let mut client = Client::connect(server.local_addr());
    for (i, subject) in ["caf.exec.assign.v1", "caf.exec.assign.v1.gpu.eu"]
        .iter()
        .enumerate()
    {
        let resp = client.request(
            "POST",
            "/v1/decide",
            &[],
            &body("acme", &format!("ok{i}"), subject),
        );
        assert_eq!(
            resp.status,
            200,
            "{subject}: {}",
            String::from_utf8_lossy(&resp.body)
        );
    }
    for (i, subject) in [
        "beamline.usage.v1.metered",
        "caf.exec.result.v1",
        "caf.exec.assign.v1x",
        "other.team.jobs",
    ]
    .iter()
    .enumerate()
    {
        // Tenants on every shard: the check is made where the request arrives.
        for tenant in ["acme", "globex", "initech"] {
            let id = format!("no{i}-{tenant}");
            let resp = client.request("POST", "/v1/decide", &[], &body(tenant, &id, subject));
            let v = resp.json();
            assert_refused(resp.status, &v, subject);
            assert_eq!(v["context"]["request_id"], id.as_str());
        }
    }
    server.stop().unwrap();

    let toml = "[nats]\nassignment_subjects_allowed = [\"team.*.assign\"]\n";
    let dir = config_dir("subjects-http-custom", toml);
    let server = start(settings(&dir));
    let mut client = Client::connect(server.local_addr());
    let resp = client.request(
        "POST",
        "/v1/decide",
        &[],
        &body("acme", "c1", "team.gpu.assign"),
    );
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let refused = ["caf.exec.assign.v1.gpu", "team.gpu.eu.assign"];
    for subject in refused {
        let resp = client.request("POST", "/v1/decide", &[], &body("acme", "c2", subject));
        assert_refused(resp.status, &resp.json(), subject);
    }
    server.stop().unwrap();
}

/// Over NATS: a refused subject answers `invalid_request` and nothing reaches it; an
/// allowed one gets the assignment.
#[test]
fn nats_refuses_subjects_outside_the_allowed_list_and_publishes_nothing() {
    let _serial = serial();
    let nats = NatsServer::start();
    let toml = format!("[nats]\nurl = \"{}\"\n", nats.url());
    let dir = config_dir("subjects-nats", &toml);
    let tenants = tenants_covering(usable_cores());
    for t in &tenants {
        write_policy(&dir, t, "default", SIMPLE_POLICY);
    }
    let server = start_connected(settings(&dir));
    let nc = ::nats::connect(nats.url()).unwrap();
    let usage = nc.subscribe("beamline.usage.v1.metered").unwrap();
    let allowed = nc.subscribe("caf.exec.assign.v1.gpu").unwrap();
    nc.flush().unwrap();
    let decide = |b: &[u8]| {
        let m = nc
            .request_timeout("beamline.router.v1.decide", b, WAIT)
            .expect("a reply");
        serde_json::from_slice::<Value>(&m.data).unwrap()
    };
    for tenant in &tenants {
        let subject = "beamline.usage.v1.metered";
        let v = decide(&body(tenant, &format!("n-{tenant}"), subject));
        assert_refused(400, &v, subject);
        let v = decide(&body(
            tenant,
            &format!("y-{tenant}"),
            "caf.exec.assign.v1.gpu",
        ));
        assert_eq!(v["ok"], true, "{v}");
        let a = allowed.next_timeout(WAIT).expect("the allowed assignment");
        let a: Value = serde_json::from_slice(&a.data).unwrap();
        assert_eq!(a["request_id"], format!("y-{tenant}"));
    }
    assert!(
        usage.next_timeout(Duration::from_millis(300)).is_err(),
        "a refused subject was published to"
    );
    server.stop().unwrap();
}
