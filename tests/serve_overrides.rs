//! Per-request overrides over HTTP, black-box: `constraints.only` and `constraints.order`
//! on a real server with the bundled policies (acme's tags each provider with its region),
//! and the refusals of bad lists.

mod support;

use serde_json::{json, Value};
use support::*;

/// Posts a decide request for acme's default policy with `constraints` (and `extra`
/// top-level members); returns the status and the body.
fn decide(client: &mut Client, n: u32, constraints: Value, extra: Value) -> (u16, Value) {
    let mut body = json!({
        "request_id": format!("r-{n}"),
        "tenant_id": "acme",
        "task": {"type": "chat", "payload_ref": "p"},
        "constraints": constraints,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let resp = client.request(
        "POST",
        "/v1/decide",
        &[],
        &serde_json::to_vec(&body).unwrap(),
    );
    (resp.status, resp.json())
}

/// `require: ["region:eu"]` keeps a request on acme's EU providers, `only` narrows it to
/// the providers it lists (also for a request with a session), `order` picks its first
/// candidate, and `explain` says which provider `only` left out and that `order` chose.
#[test]
fn only_order_and_region_tags_decide_over_http() {
    let _serial = serial();
    let dir = config_dir("overrides", "");
    let server = start(settings(&dir));
    let mut client = Client::connect(server.local_addr());
    let eu = json!(["region:eu"]);

    for n in 0..20 {
        let c = json!({"require": eu, "only": ["local_llm", "openai"]});
        let (status, body) = decide(&mut client, n, c, json!({}));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["decision"]["provider_id"], "local_llm", "{body}");
    }
    let c = json!({"require": eu, "order": ["openai", "mistral", "local_llm"]});
    let (status, body) = decide(&mut client, 20, c, json!({"explain": true}));
    assert_eq!(status, 200, "{body}");
    let d = &body["decision"];
    assert_eq!(
        (&d["provider_id"], &d["reason"]),
        (&json!("mistral"), &json!("weighted"))
    );
    assert!(
        explained(d, "order: openai skipped (not a candidate)"),
        "{d}"
    );
    assert!(explained(d, "order: mistral chosen (listed 2 of 3)"), "{d}");

    let (status, body) = decide(
        &mut client,
        21,
        json!({"only": ["openai"]}),
        json!({"explain": true}),
    );
    assert_eq!(status, 200, "{body}");
    let d = &body["decision"];
    assert_eq!(d["provider_id"], "openai", "{d}");
    assert!(
        explained(d, "candidate anthropic: not usable (NotInOnly)"),
        "{d}"
    );

    // acme's sessions are keyed by user_id: whichever provider a session has, `only`
    // keeps each of its requests within the list.
    for n in 0..20 {
        let session = json!({"metadata": {"user_id": format!("u-{n}")}});
        let (status, body) = decide(&mut client, 100 + n, json!({"only": ["mistral"]}), session);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["decision"]["provider_id"], "mistral", "{body}");
    }
    server.stop().unwrap();
}

/// Bad lists answer `400 invalid_request` naming the field and the rule: an empty
/// `only`, a repeated id, too many ids, an id too long, a list that is not one.
#[test]
fn bad_override_lists_are_invalid_requests() {
    let _serial = serial();
    let dir = config_dir("overrides-bad", "");
    let server = start(settings(&dir));
    let mut client = Client::connect(server.local_addr());
    let many: Vec<String> = (0..65).map(|i| format!("p{i}")).collect();
    let cases = [
        (
            json!({"only": []}),
            "constraints.only",
            "count",
            "must name at least one entry",
        ),
        (
            json!({"order": ["openai", "openai"]}),
            "constraints.order[1]",
            "duplicate",
            "twice",
        ),
        (
            json!({"only": many}),
            "constraints.only",
            "count",
            "at most 64 entries",
        ),
        (
            json!({"order": ["x".repeat(129)]}),
            "constraints.order[0]",
            "length",
            "1–128 bytes",
        ),
        (
            json!({"only": "openai"}),
            "constraints.only",
            "type",
            "must be an array",
        ),
    ];
    for (n, (constraints, field, rule, words)) in cases.into_iter().enumerate() {
        let (status, body) = decide(&mut client, n as u32, constraints, json!({}));
        assert_eq!(status, 400, "{body}");
        let error = &body["error"];
        assert_eq!(error["code"], "invalid_request", "{body}");
        assert_eq!(error["details"]["field"], field, "{body}");
        assert_eq!(error["details"]["rule"], rule, "{body}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.starts_with(field) && message.contains(words),
            "{message}"
        );
    }
    server.stop().unwrap();
}
