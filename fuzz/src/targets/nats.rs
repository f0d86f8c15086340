//! The NATS protocol parser (server to client). Properties: every operation uses at most
//! the bytes it was given and at least its control line, any shorter prefix of it asks
//! for more bytes (never an error, never another operation), and a message we encode
//! (PUB/HPUB) parses back, as the server delivers it (MSG/HMSG), to the same subject,
//! reply, headers and payload.

use shardline::transport::nats::proto::{
    encode_pub, parse, ServerInfo, ServerOp, CONTROL_LINE_BYTES_MAX,
};

use super::{ensure, variant, Checked, Target};
use crate::corpus::Corpus;
use crate::rng::Rng;

pub const TARGET: Target = Target {
    name: "nats",
    what: "NATS protocol parser and encoder (src/transport/nats/proto.rs)",
    generate,
    check,
    dictionary: &[
        b"\r\n",
        b"MSG ",
        b"HMSG ",
        b"INFO ",
        b"PING\r\n",
        b"PONG\r\n",
        b"+OK\r\n",
        b"-ERR 'x'\r\n",
        b"NATS/1.0\r\n",
        b"NATS/1.0 503\r\n\r\n",
        b"Nats-Msg-Id: 1\r\n",
        b" 18446744073709551616",
        b" 99999999",
        b"\t",
        b"{\"max_payload\":1048576,\"headers\":true}",
    ],
};

const SUBJECTS: &[&str] = &[
    "beamline.router.v1.decide",
    "_INBOX.abc.1",
    "caf.exec.result.v1",
    "a",
    "é.x",
];

/// A stream of server operations, as a server sends them.
fn generate(rng: &mut Rng, corpus: &Corpus) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.range(1, 6) {
        match rng.below(8) {
            // A control line of exactly the longest length allowed.
            7 => {
                let fill = CONTROL_LINE_BYTES_MAX - b"-ERR ''".len();
                out.extend_from_slice(format!("-ERR '{}'", "x".repeat(fill)).as_bytes());
            }
            0 => out.extend_from_slice(
                br#"INFO {"server_id":"N1","version":"2.10.0","max_payload":1048576,"headers":true}"#,
            ),
            1 => out.extend_from_slice(b"PING"),
            2 => out.extend_from_slice(b"PONG"),
            3 => out.extend_from_slice(b"+OK"),
            4 => out.extend_from_slice(b"-ERR 'Authorization Violation'"),
            _ => {
                let payload: Vec<u8> = if !corpus.requests.is_empty() && rng.one_in(2) {
                    rng.pick(&corpus.requests).clone()
                } else {
                    (0..rng.below(100)).map(|_| rng.byte()).collect()
                };
                let headers = if rng.one_in(2) {
                    b"NATS/1.0\r\nStatus-Test: 1\r\n\r\n".to_vec()
                } else {
                    Vec::new()
                };
                let reply = if rng.one_in(2) { " _INBOX.r.1" } else { "" };
                let line = if headers.is_empty() {
                    format!("MSG {} 1{reply} {}", rng.pick(SUBJECTS), payload.len())
                } else {
                    let total = headers.len() + payload.len();
                    format!(
                        "HMSG {} 1{reply} {} {total}",
                        rng.pick(SUBJECTS),
                        headers.len()
                    )
                };
                out.extend_from_slice(line.as_bytes());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&headers);
                out.extend_from_slice(&payload);
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn check(input: &[u8]) -> Checked {
    let mut rng = Rng::from_bytes(input);
    let payload_max = *rng.pick(&[0, 16, 1 << 20]);
    let mut at = 0;
    let mut label = String::from("None");
    // Every operation uses at least 2 bytes, so this ends; the bound is for safety.
    for _ in 0..input.len() + 1 {
        let rest = &input[at..];
        let (op, used) = match parse(rest, payload_max) {
            Ok(None) => break,
            Err(err) => {
                label = format!("Err({})", variant(&format!("{err:?}")));
                break;
            }
            Ok(Some(parsed)) => parsed,
        };
        ensure((2..=rest.len()).contains(&used), || {
            format!("an operation used {used} of {} bytes", rest.len())
        })?;
        label = use_op(&op);
        // A prefix of an operation is a short read, and must say so: any prefix, and the
        // one that ends between the CR and the LF of the control line.
        let line_cr = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(0, |i| i + 1);
        for short in [rng.below(used), line_cr] {
            let prefix = parse(&rest[..short], payload_max);
            ensure(matches!(prefix, Ok(None)), || {
                format!("a {short}-byte prefix of a {used}-byte operation parsed as {prefix:?}")
            })?;
        }
        at += used;
    }
    round_trip(&mut rng, input)?;
    Ok(label)
}

/// Reads what the client reads of each operation, so those paths run too.
fn use_op(op: &ServerOp<'_>) -> String {
    match op {
        ServerOp::Info(json) => {
            let _ = ServerInfo::parse(json);
            "Info".to_owned()
        }
        ServerOp::Msg(msg) => {
            if let Some(headers) = msg.headers {
                let _ = headers.status();
                let _ = headers.get("Nats-Msg-Id");
                let _ = headers.iter().count();
            }
            if msg.headers.is_some() {
                "Hmsg".to_owned()
            } else {
                "Msg".to_owned()
            }
        }
        other => variant(&format!("{other:?}")),
    }
}

/// A message made from the input's bytes, encoded as we publish it and delivered as the
/// server would, parses back to what was sent.
fn round_trip(rng: &mut Rng, input: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(input);
    let mut words = text.split(['\r', '\n', ' ']).filter(|w| !w.is_empty());
    let subject = words.next().unwrap_or("s").to_owned();
    let reply = words.next().filter(|_| rng.one_in(2)).map(str::to_owned);
    let mut fields: Vec<(String, String)> = Vec::new();
    for _ in 0..rng.below(4) {
        let (Some(name), Some(value)) = (words.next(), words.next()) else {
            break;
        };
        fields.push((name.to_owned(), value.to_owned()));
    }
    let headers: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let payload = &input[rng.below(input.len() + 1)..];
    let mut wire = Vec::new();
    if encode_pub(
        &mut wire,
        &subject,
        reply.as_deref(),
        &headers,
        payload,
        1 << 20,
    )
    .is_err()
    {
        return Ok(());
    }
    let delivered = as_delivered(&wire, &subject);
    let parsed = parse(&delivered, 1 << 20);
    let Ok(Some((ServerOp::Msg(msg), used))) = parsed else {
        return Err(format!(
            "encoded {:?} parses as {parsed:?}",
            String::from_utf8_lossy(&delivered)
        ));
    };
    ensure(used == delivered.len(), || {
        format!("used {used} of {}", delivered.len())
    })?;
    ensure(
        msg.subject == subject && msg.reply == reply.as_deref() && msg.payload == payload,
        || format!("sent {subject:?} {reply:?} {payload:?}, parsed {msg:?}"),
    )?;
    for (i, (name, value)) in headers.iter().enumerate() {
        let first = headers[..i]
            .iter()
            .all(|(k, _)| !k.eq_ignore_ascii_case(name));
        let got = msg.headers.and_then(|h| h.get(name));
        ensure(!first || got == Some(value.trim()), || {
            format!("header {name:?}: sent {value:?}, parsed {got:?}")
        })?;
    }
    Ok(())
}

/// `PUB subject …` → `MSG subject 7 …` (and HPUB → HMSG): the same bytes, as delivered.
fn as_delivered(wire: &[u8], subject: &str) -> Vec<u8> {
    let (op, rest) = if let Some(rest) = wire.strip_prefix(b"HPUB ") {
        (&b"HMSG "[..], rest)
    } else {
        (
            &b"MSG "[..],
            wire.strip_prefix(b"PUB ").expect("PUB or HPUB"),
        )
    };
    let after_subject = &rest[subject.len()..];
    let mut out = op.to_vec();
    out.extend_from_slice(subject.as_bytes());
    out.extend_from_slice(b" 7");
    out.extend_from_slice(after_subject);
    out
}
