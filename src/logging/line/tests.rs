use std::fmt::Display;

use log::Level;
use serde_json::Value;

use super::*;

const TS: u64 = 1_795_762_800_123; // 2026-11-27T07:00:00.123Z

fn line(format: LogFormat, msg: &dyn Display, fields: &[Field<'_>]) -> String {
    let event = Event {
        unix_ms: TS,
        level: Level::Info,
        target: "shardline::http",
        msg,
        fields,
    };
    let mut scratch = Scratch::new();
    format_event(&event, format, &mut scratch).to_owned()
}

fn json(msg: &dyn Display, fields: &[Field<'_>]) -> Value {
    let text = line(LogFormat::Json, msg, fields);
    assert!(
        text.ends_with('\n') && text.matches('\n').count() == 1,
        "{text:?}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn json_shape() {
    let fields: [Field<'_>; 3] = [("trace_id", &"4bf9"), ("tenant_id", &"acme"), ("shard", &3)];
    let v = json(&"listening", &fields);
    let expected = serde_json::json!({
        "ts": "2026-11-27T07:00:00.123Z",
        "level": "INFO",
        "target": "shardline::http",
        "msg": "listening",
        "trace_id": "4bf9",
        "tenant_id": "acme",
        "shard": "3",
    });
    assert_eq!(v, expected);
    // Members come in a fixed order: the four standard ones, then fields as given.
    let text = line(LogFormat::Json, &"listening", &fields);
    assert!(text.starts_with(r#"{"ts":"2026-11-27T07:00:00.123Z","level":"INFO","#));
}

#[test]
fn json_escaping() {
    let msg = "quote \" backslash \\ newline \n tab \t bell \u{7} nul \0 é ✓";
    let fields: [Field<'_>; 1] = [("we\"ird\nkey", &"a\r\nb")];
    let v = json(&msg, &fields);
    assert_eq!(v["msg"], msg);
    assert_eq!(v["we\"ird\nkey"], "a\r\nb");
}

#[test]
fn reserved_keys_get_a_prefix() {
    let fields: [Field<'_>; 2] = [("msg", &"shadow"), ("level", &"x")];
    let v = json(&"real", &fields);
    assert_eq!(v["msg"], "real");
    assert_eq!(v["_msg"], "shadow");
    assert_eq!(v["_level"], "x");
}

#[test]
fn sensitive_fields_are_redacted() {
    let fields: [Field<'_>; 4] = [
        ("api_key", &"sk-live-1"),
        ("Authorization", &"Bearer abc"),
        ("admin_token", &"t0k3n"),
        ("tenant_id", &"acme"),
    ];
    let text = line(LogFormat::Json, &"call", &fields);
    for secret in ["sk-live-1", "abc", "t0k3n"] {
        assert!(!text.contains(secret), "{text}");
    }
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["api_key"], REDACTED);
    assert_eq!(v["Authorization"], REDACTED);
    assert_eq!(v["admin_token"], REDACTED);
    assert_eq!(v["tenant_id"], "acme");
}

#[test]
fn message_and_value_patterns_are_redacted() {
    let fields: [Field<'_>; 1] = [("header", &"Bearer xyz")];
    let v = json(
        &r#"upstream said {"api_key":"sk-9"} with token=abc"#,
        &fields,
    );
    assert_eq!(
        v["msg"],
        r#"upstream said {"api_key":"[REDACTED]"} with token=[REDACTED]"#
    );
    assert_eq!(v["header"], "Bearer [REDACTED]");
}

/// A message far over the limit gives one complete, parseable line of at most
/// `LOG_LINE_BYTES_MAX` bytes, marked truncated, and later fields are dropped.
#[test]
fn long_message_is_truncated() {
    for filler in ["x", "é", "\"", "✓"] {
        let msg = filler.repeat(3 * LOG_LINE_BYTES_MAX);
        let fields: [Field<'_>; 1] = [("tenant_id", &"acme")];
        let text = line(LogFormat::Json, &msg, &fields);
        assert!(text.len() <= LOG_LINE_BYTES_MAX, "{}", text.len());
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["truncated"], true);
        assert!(v.get("tenant_id").is_none());
        let kept = v["msg"].as_str().unwrap();
        assert!(kept.len() > LOG_LINE_BYTES_MAX / 3 && msg.starts_with(kept));
    }
}

/// Fields that push the line over the limit are cut or dropped, never half-written.
#[test]
fn many_fields_are_truncated() {
    let value = "v".repeat(1000);
    let keys: Vec<String> = (0..20).map(|i| format!("field{i}")).collect();
    let fields: Vec<Field<'_>> = keys
        .iter()
        .map(|k| (k.as_str(), &value as &dyn Display))
        .collect();
    let text = line(LogFormat::Json, &"many", &fields);
    assert!(text.len() <= LOG_LINE_BYTES_MAX);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["truncated"], true);
    assert_eq!(v["field0"], value.as_str());
    assert!(v.get("field19").is_none());
}

#[test]
fn short_line_is_not_marked() {
    let v = json(&"ok", &[]);
    assert!(v.get("truncated").is_none());
}

#[test]
fn text_format() {
    let fields: [Field<'_>; 4] = [
        ("tenant_id", &"acme"),
        ("note", &"two words"),
        ("empty", &""),
        ("password", &"pw"),
    ];
    let text = line(LogFormat::Text, &"line one\nline two", &fields);
    assert_eq!(
        text,
        "2026-11-27T07:00:00.123Z INFO shardline::http: line one\\nline two \
         tenant_id=acme note=\"two words\" empty=\"\" password=[REDACTED]\n"
    );
}

#[test]
fn text_truncation() {
    let msg = "y".repeat(2 * LOG_LINE_BYTES_MAX);
    let text = line(LogFormat::Text, &msg, &[]);
    assert!(text.len() <= LOG_LINE_BYTES_MAX);
    assert!(text.ends_with(" [truncated]\n"));
}
