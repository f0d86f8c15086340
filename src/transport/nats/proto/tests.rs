use super::*;
use proptest::prelude::*;

const MAX: usize = 1 << 20;

fn one(buf: &[u8]) -> (ServerOp<'_>, usize) {
    parse(buf, MAX).unwrap().expect("complete op")
}

#[test]
fn parses_control_ops_case_insensitively() {
    assert_eq!(one(b"PING\r\n"), (ServerOp::Ping, 6));
    assert_eq!(one(b"pong\r\n"), (ServerOp::Pong, 6));
    assert_eq!(one(b"+OK\r\n"), (ServerOp::Ok, 5));
    let (op, _) = one(b"-ERR 'Authorization Violation'\r\n");
    assert_eq!(op, ServerOp::Err("Authorization Violation"));
    let (op, used) = one(b"INFO {\"max_payload\":1048576,\"headers\":true}\r\nPING\r\n");
    let ServerOp::Info(json) = op else { panic!() };
    let info = ServerInfo::parse(json).unwrap();
    assert_eq!((info.max_payload, info.headers), (1 << 20, true));
    assert_eq!(used, 45);
}

#[test]
fn parses_msg_with_and_without_reply() {
    let (op, used) = one(b"MSG a.b 7 5\r\nhello\r\nPING\r\n");
    let ServerOp::Msg(m) = op else { panic!() };
    assert_eq!(
        (m.subject, m.sid, m.reply, m.payload),
        ("a.b", 7, None, &b"hello"[..])
    );
    assert_eq!(used, 20);
    let (op, _) = one(b"MSG a.b 7 _INBOX.x.1 0\r\n\r\n");
    let ServerOp::Msg(m) = op else { panic!() };
    assert_eq!((m.reply, m.payload), (Some("_INBOX.x.1"), &b""[..]));
}

#[test]
fn parses_hmsg_headers_and_status() {
    let hdr = b"NATS/1.0\r\ntenant_id: acme\r\nTrace_Id:  t-1 \r\n\r\n";
    let mut buf = format!("HMSG s 1 r {} {}\r\n", hdr.len(), hdr.len() + 2).into_bytes();
    buf.extend_from_slice(hdr);
    buf.extend_from_slice(b"{}\r\n");
    let (op, used) = one(&buf);
    assert_eq!(used, buf.len());
    let ServerOp::Msg(m) = op else { panic!() };
    let h = m.headers.unwrap();
    assert_eq!(h.get("tenant_id"), Some("acme"));
    assert_eq!(h.get("trace_id"), Some("t-1"));
    assert_eq!(h.status(), None);
    assert_eq!(m.payload, b"{}");
    let no_responders = HeaderBlock(b"NATS/1.0 503\r\n\r\n");
    assert_eq!(no_responders.status(), Some(503));
}

#[test]
fn incomplete_input_asks_for_more() {
    for cut in [0, 3, 10, 14, 19] {
        let full = b"MSG a.b 7 5\r\nhello\r\n";
        assert_eq!(parse(&full[..cut], MAX).unwrap(), None, "cut at {cut}");
    }
}

/// A control line of exactly the longest length, read up to its CR (the LF still on the
/// way), asks for more instead of failing as too long; one byte more does fail. Found by
/// `shardline-fuzz` (a prefix of a valid operation must parse as "need more").
#[test]
fn longest_line_split_before_its_lf_asks_for_more() {
    let fill = CONTROL_LINE_BYTES_MAX - b"-ERR ''".len();
    let line = format!("-ERR '{}'\r\n", "x".repeat(fill)).into_bytes();
    assert_eq!(line.len(), CONTROL_LINE_BYTES_MAX + 2);
    assert_eq!(parse(&line[..line.len() - 1], MAX), Ok(None));
    let (op, used) = parse(&line, MAX).unwrap().expect("a whole line");
    assert!(matches!(op, ServerOp::Err(_)));
    assert_eq!(used, line.len());
    let mut over = vec![b'A'; CONTROL_LINE_BYTES_MAX + 1];
    assert_eq!(parse(&over, MAX), Ok(None), "could still end with its CR");
    over.push(b'A');
    assert_eq!(
        parse(&over, MAX),
        Err(ProtoError::LineTooLong(CONTROL_LINE_BYTES_MAX))
    );
}

#[test]
fn rejects_bad_input_with_an_error() {
    assert!(matches!(
        parse(b"BOGUS\r\n", MAX),
        Err(ProtoError::UnknownOp(_))
    ));
    assert!(matches!(
        parse(b"MSG a\r\n", MAX),
        Err(ProtoError::Malformed { .. })
    ));
    assert!(matches!(
        parse(b"MSG a 1 x\r\n", MAX),
        Err(ProtoError::Malformed { .. })
    ));
    assert!(matches!(
        parse(b"MSG a 1 3\r\nabcXY", MAX),
        Err(ProtoError::Malformed { .. })
    ));
    assert!(matches!(
        parse(b"HMSG a 1 9 3\r\n", MAX),
        Err(ProtoError::Malformed { .. })
    ));
    assert_eq!(
        parse(b"MSG a 1 99\r\n", 10),
        Err(ProtoError::PayloadTooLarge(99))
    );
    let long = vec![b'A'; CONTROL_LINE_BYTES_MAX + 10];
    assert_eq!(
        parse(&long, MAX),
        Err(ProtoError::LineTooLong(CONTROL_LINE_BYTES_MAX))
    );
}

/// A big cluster's INFO (every member in `connect_urls`) fits up to 64 KiB; every other
/// line keeps the 4 KiB bound, and INFO's own bound holds too.
#[test]
fn info_lines_may_reach_64_kib_and_no_further() {
    let info = |json_len: usize| {
        let urls = "x".repeat(json_len - 20);
        format!("INFO {{\"connect_urls\":[\"{urls}\"]}}\r\nPING\r\n").into_bytes()
    };
    let big = info(40 << 10);
    let (op, used) = one(&big);
    assert!(matches!(op, ServerOp::Info(json) if json.len() > 40 << 10));
    assert_eq!(&big[used..], b"PING\r\n");
    let at_max = info(INFO_LINE_BYTES_MAX - 6); // "INFO " and the JSON: the bound exactly
    assert!(matches!(one(&at_max).0, ServerOp::Info(_)));
    // Incomplete: more bytes wanted until the INFO bound, an error past it.
    assert_eq!(parse(&big[..30 << 10], MAX).unwrap(), None);
    let over = info(INFO_LINE_BYTES_MAX + 10);
    assert_eq!(
        parse(&over, MAX),
        Err(ProtoError::LineTooLong(INFO_LINE_BYTES_MAX))
    );
    assert_eq!(
        parse(&over[..INFO_LINE_BYTES_MAX + 3], MAX),
        Err(ProtoError::LineTooLong(INFO_LINE_BYTES_MAX))
    );
    // Other lines keep the control-line bound, even when long and unterminated.
    let mut long_err = b"-ERR '".to_vec();
    long_err.extend(std::iter::repeat_n(b'e', 8 << 10));
    assert_eq!(
        parse(&long_err, MAX),
        Err(ProtoError::LineTooLong(CONTROL_LINE_BYTES_MAX))
    );
    long_err.extend_from_slice(b"'\r\n");
    assert_eq!(
        parse(&long_err, MAX),
        Err(ProtoError::LineTooLong(CONTROL_LINE_BYTES_MAX))
    );
}

#[test]
fn encodes_pub_hpub_sub_unsub() {
    let mut out = Vec::new();
    encode_pub(&mut out, "s", None, &[], b"hi", MAX).unwrap();
    assert_eq!(out, b"PUB s 2\r\nhi\r\n");
    out.clear();
    encode_pub(&mut out, "s", Some("r"), &[("tenant_id", "a")], b"hi", MAX).unwrap();
    let hdr = "NATS/1.0\r\ntenant_id: a\r\n\r\n";
    let expected = format!("HPUB s r {} {}\r\n{hdr}hi\r\n", hdr.len(), hdr.len() + 2);
    assert_eq!(String::from_utf8(out.clone()).unwrap(), expected);
    out.clear();
    encode_sub(&mut out, "a.*", Some("q"), 3).unwrap();
    encode_unsub(&mut out, 3);
    assert_eq!(out, b"SUB a.* q 3\r\nUNSUB 3\r\n");
}

#[test]
fn encode_refuses_what_the_server_would_reject() {
    let mut out = Vec::new();
    assert_eq!(
        encode_pub(&mut out, "a b", None, &[], b"", MAX),
        Err(EncodeError::Subject)
    );
    assert_eq!(
        encode_pub(&mut out, "", None, &[], b"", MAX),
        Err(EncodeError::Subject)
    );
    let bad = [("k", "v\r\nX: y")];
    assert_eq!(
        encode_pub(&mut out, "s", None, &bad, b"", MAX),
        Err(EncodeError::Header)
    );
    let big = vec![0u8; 11];
    let err = encode_pub(&mut out, "s", None, &[], &big, 10).unwrap_err();
    assert_eq!(err, EncodeError::TooLarge { size: 11, max: 10 });
    assert!(out.is_empty(), "nothing written on error");
}

#[test]
fn connect_carries_credentials_and_flags() {
    let mut out = Vec::new();
    let info = ConnectInfo {
        name: "r",
        token: Some("tok"),
        ..ConnectInfo::default()
    };
    encode_connect(&mut out, &info);
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("CONNECT {") && text.ends_with("}\r\n"));
    let v: serde_json::Value = serde_json::from_str(&text[8..]).unwrap();
    assert_eq!(v["verbose"], false);
    assert_eq!(v["headers"], true);
    assert_eq!(v["auth_token"], "tok");
    assert!(v.get("user").is_none());
}

proptest! {
    /// Arbitrary bytes never panic the parser, and a parsed op never claims more bytes
    /// than it was given.
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut rest = &bytes[..];
        while let Ok(Some((_, used))) = parse(rest, 256) {
            prop_assert!(used > 0 && used <= rest.len());
            rest = &rest[used..];
        }
    }

    /// What we encode, the parser reads back (as the server would relay it).
    #[test]
    fn pub_round_trips(subject in "[a-z]{1,8}(\\.[a-z]{1,8}){0,3}",
                       payload in proptest::collection::vec(any::<u8>(), 0..300),
                       value in "[ -~]{0,20}") {
        let mut out = Vec::new();
        encode_pub(&mut out, &subject, Some("r.1"), &[("k", &value)], &payload, MAX).unwrap();
        // A relayed HPUB is an HMSG with a sid.
        let rest = &out["HPUB ".len() + subject.len() + 1..];
        let mut buf = format!("HMSG {subject} 9 ").into_bytes();
        buf.extend_from_slice(rest);
        let (op, used) = parse(&buf, MAX).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        let ServerOp::Msg(m) = op else { panic!() };
        prop_assert_eq!(m.subject, subject.as_str());
        prop_assert_eq!(m.sid, 9);
        prop_assert_eq!(m.payload, &payload[..]);
        prop_assert_eq!(m.headers.unwrap().get("k"), Some(value.trim()));
    }
}
