//! The client side of HTTP/1.1 as the load generator speaks it: write a `POST /v1/decide`,
//! find complete responses in a read buffer, and classify each answer.
//!
//! Only `Content-Length` framing is read (the router always sends it); anything else is a
//! `bad_response`. Classification reads the status and, for a non-200 answer, the first
//! `"code":"…"` in the body — a byte search, not a JSON parse, so an error storm costs
//! the client no more than successes do.
//!
//! A NATS reply has no status, so `classify_reply` reads the body's `"ok"` flag instead
//! and then counts an ErrorResponse by the same code (and shed) rules.

use std::io::Write as _;
use std::ops::Range;

use shardline_core::contract::ErrorCode;

/// Headers read from one response head.
pub const RESPONSE_HEADERS_MAX: usize = 32;
/// Bytes of one response head.
pub const RESPONSE_HEAD_BYTES_MAX: usize = 16 * 1024;
/// Bytes of one response body.
pub const RESPONSE_BODY_BYTES_MAX: usize = 1 << 20;
/// Bytes of an error code read from a body.
pub const CODE_BYTES_MAX: usize = 64;

/// Client-side error codes, for failures that have no answer to read a code from.
pub const CONNECTION_CLOSED: &str = "connection_closed";
pub const BAD_RESPONSE: &str = "bad_response";
/// An ErrorResponse without a readable `error.code`.
pub const NO_CODE: &str = "no_code";
/// Bytes into a reply within which its `"ok"` key must start (it is the first key).
pub const OK_KEY_OFFSET_MAX: usize = 256;

/// Appends one keep-alive `POST /v1/decide` carrying `body`.
pub fn write_request(out: &mut Vec<u8>, host: &str, body: &[u8]) {
    out.extend_from_slice(b"POST /v1/decide HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{}", body.len());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// What the front of a read buffer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole response yet.
    Incomplete,
    /// One whole response of `len` bytes.
    Complete {
        status: u16,
        /// The server will close the connection after it.
        close: bool,
        body: Range<usize>,
        len: usize,
    },
    /// Not a response this client can frame; the connection must be dropped.
    Invalid(&'static str),
}

/// Finds the first complete response at the front of `buf`.
pub fn parse_response(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > RESPONSE_HEAD_BYTES_MAX => {
            return Parsed::Invalid("response head too large")
        }
        Ok(httparse::Status::Partial) => return Parsed::Incomplete,
        Err(_) => return Parsed::Invalid("malformed response head"),
    };
    let Some(status) = resp.code else {
        return Parsed::Invalid("no status");
    };
    let mut length = None;
    let mut close = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Invalid("chunked responses are not read");
        }
    }
    let Some(length) = length else {
        return Parsed::Invalid("no Content-Length");
    };
    if length > RESPONSE_BODY_BYTES_MAX {
        return Parsed::Invalid("response body too large");
    }
    if buf.len() < head_len + length {
        return Parsed::Incomplete;
    }
    Parsed::Complete {
        status,
        close: close || resp.version == Some(0),
        body: head_len..head_len + length,
        len: head_len + length,
    }
}

/// What one answer counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// 200.
    Ok,
    /// Load shed by the router: `rate_limited` (429) or `overloaded` (503).
    Shed(Code<'a>),
    /// Any other answer, or a failure of the connection.
    Error(Code<'a>),
    /// No answer within `--timeout-ms` of the send.
    Timeout,
}

/// An error's name: the contract code from the body, or the status when there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code<'a> {
    Named(&'a str),
    Status(u16),
}

impl Code<'_> {
    /// Writes the name used in `errors_by_code` (`http_<status>` without a code).
    pub fn write_name(&self, out: &mut String) {
        out.clear();
        match self {
            Code::Named(name) => out.push_str(name),
            Code::Status(status) => {
                use std::fmt::Write as _;
                let _ = write!(out, "http_{status}");
            }
        }
    }
}

/// Classifies an answer by its status and (for errors) the code in its body.
pub fn classify(status: u16, body: &[u8]) -> Outcome<'_> {
    if status == 200 {
        return Outcome::Ok;
    }
    by_code(error_code(body).map_or(Code::Status(status), Code::Named))
}

/// Classifies an answer that has no status (a NATS reply): a DecideResponse
/// (`"ok":true`) is answered; an ErrorResponse (`"ok":false`) counts by its `error.code`
/// as `classify` counts it, shed or error; anything else is a `bad_response`.
pub fn classify_reply(body: &[u8]) -> Outcome<'_> {
    match ok_flag(body) {
        Some(true) => Outcome::Ok,
        Some(false) => by_code(Code::Named(error_code(body).unwrap_or(NO_CODE))),
        None => Outcome::Error(Code::Named(BAD_RESPONSE)),
    }
}

/// The value of the first `"ok"` key of `body`, if it is `true` or `false`.
pub fn ok_flag(body: &[u8]) -> Option<bool> {
    const KEY: &[u8] = br#""ok""#;
    let at = body
        .windows(KEY.len())
        .take(OK_KEY_OFFSET_MAX)
        .position(|w| w == KEY)?;
    let rest = &body[at + KEY.len()..];
    let value = rest
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b':'))
        .map(|i| &rest[i..])?;
    if value.starts_with(b"true") {
        Some(true)
    } else if value.starts_with(b"false") {
        Some(false)
    } else {
        None
    }
}

/// A shed (`rate_limited`, `overloaded`, or 429/503 without a code) or an error.
fn by_code(code: Code<'_>) -> Outcome<'_> {
    let shed = match code {
        Code::Named(name) => {
            name == ErrorCode::RateLimited.as_str() || name == ErrorCode::Overloaded.as_str()
        }
        Code::Status(s) => s == 429 || s == 503,
    };
    if shed {
        Outcome::Shed(code)
    } else {
        Outcome::Error(code)
    }
}

/// The value of the first `"code":"…"` in `body`, if it is a plausible code name.
pub fn error_code(body: &[u8]) -> Option<&str> {
    const KEY: &[u8] = br#""code":""#;
    let start = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &body[start..];
    let end = rest
        .iter()
        .take(CODE_BYTES_MAX + 1)
        .position(|&b| b == b'"')?;
    let code = &rest[..end];
    let plausible = !code.is_empty()
        && code
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
    plausible.then(|| std::str::from_utf8(code).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: &str, extra: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// A request is a well-formed keep-alive POST the router's parser accepts.
    #[test]
    fn writes_a_post() {
        let mut out = Vec::new();
        write_request(&mut out, "127.0.0.1:8080", b"{}");
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut req = httparse::Request::new(&mut headers);
        let head = match req.parse(&out).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("partial"),
        };
        assert_eq!(req.method, Some("POST"));
        assert_eq!(req.path, Some("/v1/decide"));
        assert_eq!(&out[head..], b"{}");
    }

    /// Pipelined responses are found one at a time; a cut one is incomplete.
    #[test]
    fn frames_responses() {
        let mut buf = response("200 OK", "", r#"{"ok":true}"#);
        let first = buf.len();
        buf.extend(response(
            "429 Too Many Requests",
            "Connection: close\r\n",
            "{}",
        ));
        let Parsed::Complete {
            status, close, len, ..
        } = parse_response(&buf)
        else {
            panic!("first response")
        };
        assert_eq!((status, close, len), (200, false, first));
        let Parsed::Complete { status, close, .. } = parse_response(&buf[first..]) else {
            panic!("second response")
        };
        assert_eq!((status, close), (429, true));
        assert_eq!(parse_response(&buf[..first - 1]), Parsed::Incomplete);
        assert_eq!(parse_response(&buf[..5]), Parsed::Incomplete);
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\n\r\n"),
            Parsed::Invalid(_)
        ));
    }

    /// Sheds and errors are told apart by the body's code, or the status without one.
    #[test]
    fn classifies_answers() {
        let limited = br#"{"ok":false,"error":{"code":"rate_limited","message":"x"}}"#;
        let missing = br#"{"ok":false,"error":{"code":"policy_not_found","message":"y"}}"#;
        assert_eq!(classify(200, b"{}"), Outcome::Ok);
        assert_eq!(
            classify(429, limited),
            Outcome::Shed(Code::Named("rate_limited"))
        );
        assert_eq!(
            classify(404, missing),
            Outcome::Error(Code::Named("policy_not_found"))
        );
        assert_eq!(classify(503, b"busy"), Outcome::Shed(Code::Status(503)));
        assert_eq!(classify(500, b""), Outcome::Error(Code::Status(500)));
        let mut name = String::new();
        Code::Status(500).write_name(&mut name);
        assert_eq!(name, "http_500");
    }

    /// Without a status, the body decides: ok true is answered, ok false counts by its
    /// code (sheds apart), anything else is a bad response.
    #[test]
    fn classifies_replies_by_body() {
        let limited = br#"{"ok":false,"error":{"code":"rate_limited","message":"x"}}"#;
        let overloaded = br#"{ "ok" : false, "error":{"code":"overloaded"}}"#;
        let missing = br#"{"ok":false,"error":{"code":"policy_not_found","message":"y"}}"#;
        assert_eq!(
            classify_reply(br#"{"ok":true,"decision":{"provider_id":"bare"}}"#),
            Outcome::Ok
        );
        assert_eq!(
            classify_reply(limited),
            Outcome::Shed(Code::Named("rate_limited"))
        );
        assert_eq!(
            classify_reply(overloaded),
            Outcome::Shed(Code::Named("overloaded"))
        );
        assert_eq!(
            classify_reply(missing),
            Outcome::Error(Code::Named("policy_not_found"))
        );
        assert_eq!(
            classify_reply(br#"{"ok":false}"#),
            Outcome::Error(Code::Named(NO_CODE))
        );
        assert_eq!(
            classify_reply(b""),
            Outcome::Error(Code::Named(BAD_RESPONSE))
        );
        assert_eq!(
            classify_reply(b"hello"),
            Outcome::Error(Code::Named(BAD_RESPONSE))
        );
    }

    /// Only a plausible code name is taken from a body.
    #[test]
    fn reads_codes_cheaply() {
        assert_eq!(error_code(br#"{"code":"internal"}"#), Some("internal"));
        assert_eq!(error_code(br#"{"code":"Not A Code"}"#), None);
        assert_eq!(error_code(br#"{"code":"unterminated"#), None);
        assert_eq!(error_code(b"{}"), None);
    }
}
