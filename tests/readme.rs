//! The README's first example, as a new operator runs it: its sample request, against the
//! bundled config (`config/shardline.toml` and its policies, on a free port here), answers
//! with the reason, priority and kind of provider the README shows, and a repeat sticks
//! as the README says.

mod support;

use std::path::Path;

use shardline::config::Config;
use shardline::server::ServerSettings;
use support::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The value of `"key":"…"` or `"key":N` in a one-line JSON sample of the README.
fn field<'a>(sample: &'a str, key: &str) -> &'a str {
    let pattern = format!("\"{key}\":");
    let start = sample
        .find(&pattern)
        .unwrap_or_else(|| panic!("{key} in {sample}"))
        + pattern.len();
    let rest = &sample[start..];
    let end = rest.find([',', '}']).unwrap();
    rest[..end].trim_matches('"')
}

#[test]
fn readme_sample_answer_is_what_the_bundled_config_answers() {
    let _serial = serial();
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let curl = readme
        .lines()
        .find(|l| l.starts_with("curl -s localhost:8080/v1/decide"))
        .expect("the README's sample request");
    let file = curl.split('@').nth(1).expect("a request file").trim();
    let body = std::fs::read(Path::new(ROOT).join(file)).expect("the sample request file");
    let after = &readme[readme.find(curl).unwrap()..];
    let sample = after
        .split('`')
        .find(|span| span.starts_with("{\"ok\":true"))
        .expect("the README's sample answer");
    let (provider, reason, priority) = (
        field(sample, "provider_id"),
        field(sample, "reason"),
        field(sample, "priority"),
    );
    // The weights the README names are those of the policy the request uses.
    let policy: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(ROOT).join("config/policies/acme/default.json")).unwrap(),
    )
    .unwrap();
    let providers: Vec<(String, u64)> = policy["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["weight"].as_u64().unwrap(),
            )
        })
        .collect();
    for (name, weight) in &providers {
        let named = format!("`{name}` {weight}");
        assert!(readme.contains(&named), "README names {named}");
    }
    assert!(
        providers.iter().any(|(name, _)| name == provider),
        "the sample's provider {provider} is one acme/default can draw"
    );

    let config = Config::load(&Path::new(ROOT).join("config/shardline.toml")).expect("bundled");
    let mut settings = ServerSettings::from_config(&config);
    settings.listen = "127.0.0.1:0".parse().unwrap();
    let server = start(settings);
    let mut client = Client::connect(server.local_addr());
    let first = client.request("POST", "/v1/decide", &[], &body);
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let first = first.json();
    let decision = &first["decision"];
    assert_eq!(first["ok"], true);
    assert_eq!(decision["reason"], reason, "{first}");
    assert_eq!(decision["priority"].to_string(), priority, "{first}");
    let chosen = decision["provider_id"].as_str().unwrap();
    assert!(providers.iter().any(|(name, _)| name == chosen), "{first}");
    assert!(
        decision["explanation"].is_array(),
        "explain: true gives the steps"
    );

    let again = client.request("POST", "/v1/decide", &[], &body).json();
    assert_eq!(again["decision"]["provider_id"], chosen, "{again}");
    assert!(readme.contains("`\"reason\":\"sticky\"` and `\"priority\":100`"));
    assert_eq!(again["decision"]["reason"], "sticky", "{again}");
    assert_eq!(again["decision"]["priority"], 100, "{again}");
    drop(client);
    server.stop().unwrap();
}
