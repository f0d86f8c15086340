//! Structure-aware mutation of JSON documents: change one node of a parsed document into a
//! value at the edge of what the decoders accept (wrong type, empty, huge, deep, escaped),
//! drop or add a key, then print it back (sometimes with a key repeated, which a parsed
//! value cannot hold).

use serde_json::{Map, Value};

use crate::mutate::INPUT_BYTES_MAX;
use crate::rng::Rng;

/// Replaces, removes or adds 1–3 nodes of `doc` (if it is JSON) and prints it.
pub fn mutate_document(rng: &mut Rng, doc: &[u8], keys: &[&str]) -> Vec<u8> {
    let Ok(mut value) = serde_json::from_slice::<Value>(doc) else {
        return doc.to_vec();
    };
    for _ in 0..rng.range(1, 3) {
        mutate_node(rng, &mut value, keys, 0);
    }
    let mut text = if rng.one_in(2) {
        serde_json::to_vec(&value)
    } else {
        serde_json::to_vec_pretty(&value)
    }
    .expect("a Value prints");
    if rng.one_in(8) {
        repeat_key(rng, &mut text, keys);
    }
    if text.len() > INPUT_BYTES_MAX {
        // Repeated nodes multiply: keep inputs the size a transport would let through.
        return doc.to_vec();
    }
    text
}

fn mutate_node(rng: &mut Rng, node: &mut Value, keys: &[&str], depth: usize) {
    let descend = depth < 6 && rng.below(3) != 0;
    match node {
        Value::Object(map) if descend && !map.is_empty() => {
            let key = map
                .keys()
                .nth(rng.below(map.len()))
                .cloned()
                .expect("in range");
            if rng.one_in(6) {
                map.remove(&key);
            } else {
                mutate_node(rng, map.get_mut(&key).expect("present"), keys, depth + 1);
            }
        }
        Value::Object(map) if rng.one_in(2) => {
            let key = (*rng.pick(keys)).to_owned();
            map.insert(key, interesting(rng, keys));
        }
        Value::Array(items) if descend && !items.is_empty() => {
            let i = rng.below(items.len());
            match rng.below(5) {
                0 => {
                    items.remove(i);
                }
                1 => {
                    let copy = items[i].clone();
                    let n = *rng.pick(&[1, 2, 63, 64, 65, 200]);
                    // Bounded here, not after printing: repeats inside repeats multiply.
                    let size = serde_json::to_vec(&copy).map_or(usize::MAX, |v| v.len());
                    if size.saturating_mul(n) <= INPUT_BYTES_MAX {
                        items.extend(std::iter::repeat_n(copy, n));
                    }
                }
                _ => mutate_node(rng, &mut items[i], keys, depth + 1),
            }
        }
        _ => *node = interesting(rng, keys),
    }
}

const FLOATS: [&str; 5] = ["0.5", "1.0", "1e308", "-0.0", "4294967296"];

/// A value that tests a type check, a length bound or a range bound.
pub fn interesting(rng: &mut Rng, keys: &[&str]) -> Value {
    match rng.below(16) {
        0 => Value::Null,
        1 => Value::Bool(rng.one_in(2)),
        2 => Value::from(*rng.pick(&[0i64, -1, 1, 2, 64, 100, 101, 1000, 1001, i64::MAX])),
        3 => serde_json::from_str(FLOATS[rng.below(FLOATS.len())]).expect("numbers parse"),
        4 => Value::from(*rng.pick(&[
            946_684_800_000u64,
            946_684_799_999,
            253_402_300_799_999,
            u64::MAX,
        ])),
        5 => Value::from(""),
        6 => Value::from("x".repeat(*rng.pick(&[63, 64, 65, 127, 128, 129, 255, 256, 1025]))),
        7 => Value::from(*rng.pick(&["é", "\u{0}", "a b", "caf.exec.assign.v1.>", "*", "1.0"])),
        8 => Value::from(*rng.pick(&[
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "f47ac10b-58cc-4372-a567-0e02b2c3d479",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "success",
            "error",
            "timeout",
            "openai",
        ])),
        9 => Value::Array(Vec::new()),
        10 => Value::Object(Map::new()),
        11 => Value::Array(vec![Value::from("openai"), Value::from(1), Value::Null]),
        12 => {
            let mut map = Map::new();
            map.insert((*rng.pick(keys)).to_owned(), interesting_leaf(rng));
            Value::Object(map)
        }
        13 => deep(rng.range(30, 200)),
        14 => Value::from((*rng.pick(keys)).to_owned()),
        _ => interesting_leaf(rng),
    }
}

fn interesting_leaf(rng: &mut Rng) -> Value {
    match rng.below(3) {
        0 => Value::from(rng.below(1000) as u64),
        1 => Value::from(format!("v{}", rng.below(100))),
        _ => Value::Bool(true),
    }
}

/// `depth` nested arrays/objects: against recursion limits.
fn deep(depth: usize) -> Value {
    let mut value = Value::Null;
    for i in 0..depth {
        value = if i % 2 == 0 {
            Value::Array(vec![value])
        } else {
            let mut map = Map::new();
            map.insert("a".to_owned(), value);
            Value::Object(map)
        };
    }
    value
}

/// Inserts `"key": value,` right after the first `{`: a repeated key when the document
/// already has it, which decoders must refuse rather than pick one of.
fn repeat_key(rng: &mut Rng, text: &mut Vec<u8>, keys: &[&str]) {
    let Some(open) = text.iter().position(|&b| b == b'{') else {
        return;
    };
    let value = serde_json::to_string(&interesting(rng, keys)).expect("prints");
    let member = format!("{:?}:{value},", rng.pick(keys));
    text.splice(open + 1..open + 1, member.into_bytes());
}
