//! Whether two reports were measured under the same conditions. A gate between a run at
//! 5,000 req/s and a baseline at 20,000 req/s, or a closed loop and an open one, judges
//! the load rather than the code: its FAIL (or PASS) means nothing. So the gate compares
//! the reports' `conditions` objects field by field first and refuses to judge (exit 2,
//! the differing fields named) unless told `--allow-different-conditions`.
//!
//! The comparison is generic (every key of either object, JSON equality, numbers by
//! value) so that any producer can state its conditions: `shardline bench` writes mode,
//! rate or concurrency, connections, pipeline, duration, shards, transport, target kind
//! and compare-bare; the instruction-count harness writes its own.
//!
//! A report without `conditions` (an older build's, Beamline's format) has unknown
//! conditions: unknown is not "the same", so it is refused too, under the same flag.

use serde_json::{Map, Value};

/// One field that differs: `rate_rps (baseline 20000.0, candidate 5000.0)`.
pub fn differences(baseline: &Map<String, Value>, candidate: &Map<String, Value>) -> Vec<String> {
    let mut keys: Vec<&String> = baseline.keys().chain(candidate.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| {
            let (b, c) = (baseline.get(key), candidate.get(key));
            (!same(b, c)).then(|| format!("{key} (baseline {}, candidate {})", show(b), show(c)))
        })
        .collect()
}

fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x.as_f64() == y.as_f64(),
        (a, b) => a == b,
    }
}

fn show(value: Option<&Value>) -> String {
    value.map_or_else(|| "absent".to_owned(), Value::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn names_each_differing_field() {
        let base = obj(serde_json::json!({"mode": "open-loop", "rate_rps": 20000.0, "shards": 2}));
        let same_numbers =
            obj(serde_json::json!({"mode": "open-loop", "rate_rps": 20000, "shards": 2}));
        assert!(differences(&base, &same_numbers).is_empty());
        let other =
            obj(serde_json::json!({"mode": "open-loop", "rate_rps": 5000.0, "pipeline": 1}));
        assert_eq!(
            differences(&base, &other),
            [
                "pipeline (baseline absent, candidate 1)",
                "rate_rps (baseline 20000.0, candidate 5000.0)",
                "shards (baseline 2, candidate absent)"
            ]
        );
    }
}
