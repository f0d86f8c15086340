//! The string formats of the contract (ids, trace ids, UUIDs, ULIDs, NATS subjects,
//! W3C `traceparent`) as plain byte-level predicates.
//!
//! Why not a regex engine: every format here is fixed-width or a single character class,
//! so a loop over bytes is exact, allocation-free and a few nanoseconds; it also keeps the
//! dependency list short. Each predicate states the grammar it implements.

/// `[A-Za-z0-9_.-]*` (the length is checked separately, so messages can say which failed).
pub fn is_id_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn is_hex(s: &[u8]) -> bool {
    s.iter().all(u8::is_ascii_hexdigit)
}

/// A UUID in its textual form: `8-4-4-4-12` hex digits, any case, any version.
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A random (version 4) UUID: version nibble `4`, variant nibble `8`, `9`, `a` or `b`.
pub fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    is_uuid(s) && b[14] == b'4' && matches!(b[19], b'8' | b'9' | b'a' | b'b' | b'A' | b'B')
}

/// A ULID: 26 Crockford base32 characters (no I, L, O, U; any case), the first `0`–`7` so
/// that the 128-bit value does not overflow.
pub fn is_ulid(s: &str) -> bool {
    let b = s.as_bytes();
    let crockford = |c: &u8| {
        let c = c.to_ascii_uppercase();
        c.is_ascii_digit() || (c.is_ascii_uppercase() && !matches!(c, b'I' | b'L' | b'O' | b'U'))
    };
    b.len() == 26 && matches!(b[0], b'0'..=b'7') && b.iter().all(crockford)
}

/// `trace_id`: 32 hex characters (a W3C trace id) or a UUID (SPEC §3).
pub fn is_trace_id(s: &str) -> bool {
    (s.len() == 32 && is_hex(s.as_bytes())) || is_uuid(s)
}

/// `run_id`, `flow_id`, `step_id`: a UUIDv4 or a ULID (SPEC §3).
pub fn is_run_id(s: &str) -> bool {
    is_uuid_v4(s) || is_ulid(s)
}

/// A subject one can publish to: non-empty tokens separated by `.`, made of printable
/// ASCII (no whitespace or control bytes, which would also break the NATS protocol line),
/// and no wildcard characters `*` or `>`.
pub fn is_nats_subject(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>')
        })
}

/// A W3C `traceparent` (Trace Context level 1): `vv-<32 hex>-<16 hex>-ff`, lowercase,
/// version not `ff`, trace and parent ids not all zeros. Version `00` is exactly 55
/// characters; later versions may append `-…` fields, which are allowed.
pub fn is_traceparent(s: &str) -> bool {
    let b = s.as_bytes();
    let lower_hex = |r: &[u8]| {
        r.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    let not_zero = |r: &[u8]| r.iter().any(|c| *c != b'0');
    if b.len() < 55 || (b.len() > 55 && (b[..2] == *b"00" || b[55] != b'-')) {
        return false;
    }
    let (version, trace, parent, flags) = (&b[0..2], &b[3..35], &b[36..52], &b[53..55]);
    b[2] == b'-'
        && b[35] == b'-'
        && b[52] == b'-'
        && lower_hex(version)
        && version != b"ff"
        && lower_hex(trace)
        && not_zero(trace)
        && lower_hex(parent)
        && not_zero(parent)
        && lower_hex(flags)
}

/// The nesting depth of a well-formed JSON text: `1` for `{}` or `[]`, `0` for a scalar.
/// Skips string contents (and their escapes), so brackets inside strings do not count.
pub fn json_depth(raw: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => skip_string(&mut bytes),
            _ => {}
        }
    }
    deepest
}

/// Advances past the closing quote of a JSON string whose opening quote was consumed.
fn skip_string(bytes: &mut impl Iterator<Item = u8>) {
    while let Some(b) = bytes.next() {
        match b {
            b'\\' => {
                bytes.next();
            }
            b'"' => return,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_chars() {
        assert!(is_id_chars("acme_corp.eu-1"));
        assert!(!is_id_chars("ac me"));
        assert!(!is_id_chars("acmé"));
        assert!(!is_id_chars("a/b"));
    }

    #[test]
    fn uuids() {
        assert!(is_uuid("4bf92f35-77b3-4da6-a3ce-929d0e0e4736"));
        assert!(is_uuid("4BF92F35-77B3-1DA6-03CE-929D0E0E4736"));
        assert!(!is_uuid("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(!is_uuid("4bf92f35-77b3-4da6-a3ce-929d0e0e473g"));
        assert!(is_uuid_v4("4bf92f35-77b3-4da6-a3ce-929d0e0e4736"));
        assert!(is_uuid_v4("4bf92f35-77b3-4da6-B3ce-929d0e0e4736"));
        assert!(
            !is_uuid_v4("4bf92f35-77b3-1da6-a3ce-929d0e0e4736"),
            "version 1"
        );
        assert!(
            !is_uuid_v4("4bf92f35-77b3-4da6-c3ce-929d0e0e4736"),
            "variant c"
        );
    }

    #[test]
    fn ulids() {
        assert!(is_ulid("01ARZ3NDEKTSV4RRFFQ69G5FAV"));
        assert!(is_ulid("01arz3ndektsv4rrffq69g5fav"));
        assert!(is_ulid("7ZZZZZZZZZZZZZZZZZZZZZZZZZ"));
        assert!(!is_ulid("8ZZZZZZZZZZZZZZZZZZZZZZZZZ"), "overflows 128 bits");
        assert!(!is_ulid("01ARZ3NDEKTSV4RRFFQ69G5FA"), "25 chars");
        assert!(!is_ulid("01ARZ3NDEKTSV4RRFFQ69G5FAU"), "U is not Crockford");
        assert!(!is_ulid("01ARZ3NDEKTSV4RRFFQ69G5FAI"), "I is not Crockford");
        assert!(is_run_id("01ARZ3NDEKTSV4RRFFQ69G5FAV"));
        assert!(is_run_id("4bf92f35-77b3-4da6-a3ce-929d0e0e4736"));
        assert!(!is_run_id("run-1"));
    }

    #[test]
    fn trace_ids() {
        assert!(is_trace_id("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(is_trace_id("4BF92F3577B34DA6A3CE929D0E0E4736"));
        assert!(is_trace_id("4bf92f35-77b3-1da6-a3ce-929d0e0e4736"));
        assert!(!is_trace_id("4bf92f3577b34da6a3ce929d0e0e473"));
        assert!(!is_trace_id("zbf92f3577b34da6a3ce929d0e0e4736"));
        assert!(!is_trace_id(""));
    }

    #[test]
    fn nats_subjects() {
        assert!(is_nats_subject("caf.exec.assign.v1"));
        assert!(is_nats_subject("a"));
        assert!(is_nats_subject("tenant-1.jobs_high"));
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "a.*.c",
            "a.>",
            "a b",
            "a\r\nPUB x",
            "a\t",
            "ä.b",
        ] {
            assert!(!is_nats_subject(bad), "{bad:?}");
        }
        assert!(!is_nats_subject("a.b*"), "no wildcard characters at all");
    }

    #[test]
    fn traceparents() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(is_traceparent(ok));
        assert!(is_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later"
        ));
        assert!(!is_traceparent(&format!("{ok}-x")), "version 00 is exact");
        assert!(!is_traceparent(&ok.replace("00-4b", "ff-4b")));
        assert!(!is_traceparent(&ok.to_uppercase()));
        assert!(!is_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!is_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"
        ));
        assert!(!is_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"
        ));
    }

    #[test]
    fn depth_ignores_strings() {
        assert_eq!(json_depth("1"), 0);
        assert_eq!(json_depth("{}"), 1);
        assert_eq!(json_depth(r#"{"a":[{"b":[]}],"c":{}}"#), 4);
        assert_eq!(json_depth(r#"{"a":"[[[[\"]]]"}"#), 1);
    }
}
