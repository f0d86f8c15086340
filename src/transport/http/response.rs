//! `Response`: what a `Service` fills in, and how it becomes bytes on the wire.
//!
//! One `Response` lives as long as its connection and is cleared (capacity kept) before
//! each request, so answering does not allocate once the body buffer has grown to the
//! usual answer size. Extra headers share one value buffer for the same reason. The head
//! is written by hand into the connection's write buffer (no `format!`): status line,
//! `Date`, `Content-Type`, `Content-Length`, `Retry-After`, extra headers, `Connection`.

use thiserror::Error;

use super::limits::{EXTRA_HEADERS_MAX, EXTRA_HEADER_VALUE_BYTES_MAX};
use crate::contract::{encode_error, ErrorCode, ErrorDetails};

/// The content type of contract answers.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// Headers the layer writes itself; a `Service` may not add them again.
const RESERVED_HEADERS: [&str; 6] = [
    "content-length",
    "content-type",
    "connection",
    "date",
    "retry-after",
    "transfer-encoding",
];

/// The answer to one request.
#[derive(Debug)]
pub struct Response {
    /// 200..=599; anything else is a bug in the `Service` and is answered 500.
    pub status: u16,
    pub content_type: &'static str,
    /// Written as `Retry-After: <seconds>` (with 429 and 503).
    pub retry_after_s: Option<u64>,
    pub extra_headers: ExtraHeaders,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new() -> Self {
        Response {
            status: 200,
            content_type: CONTENT_TYPE_JSON,
            retry_after_s: None,
            extra_headers: ExtraHeaders::new(),
            body: Vec::new(),
        }
    }

    /// Back to `200 application/json`, no headers, empty body; capacity is kept.
    pub fn clear(&mut self) {
        self.status = 200;
        self.content_type = CONTENT_TYPE_JSON;
        self.retry_after_s = None;
        self.extra_headers.clear();
        self.body.clear();
    }

    /// Makes this the contract's ErrorResponse for `code` (SPEC §4), with its status.
    pub fn error(&mut self, code: ErrorCode, message: &str, details: &ErrorDetails<'_>) {
        self.error_with_status(code.http_status(), code, message, details);
    }

    /// As `error`, with a status other than the code's own (431 is `invalid_request`).
    pub fn error_with_status(
        &mut self,
        status: u16,
        code: ErrorCode,
        message: &str,
        details: &ErrorDetails<'_>,
    ) {
        self.status = status;
        self.content_type = CONTENT_TYPE_JSON;
        self.body.clear();
        encode_error(&mut self.body, code, message, details, None, None);
    }
}

impl Default for Response {
    fn default() -> Self {
        Response::new()
    }
}

/// Why `ExtraHeaders::push` refused a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HeaderRejected {
    /// Already `EXTRA_HEADERS_MAX` headers.
    #[error("a response carries at most {EXTRA_HEADERS_MAX} extra headers")]
    Full,
    /// The values together would exceed `EXTRA_HEADER_VALUE_BYTES_MAX`.
    #[error("extra header values exceed {EXTRA_HEADER_VALUE_BYTES_MAX} bytes")]
    TooLong,
    /// A control character (CR, LF, …) in the value would split the response.
    #[error("header value holds a control character")]
    InvalidValue,
    /// The layer writes this header itself.
    #[error("header is written by the HTTP layer")]
    Reserved,
}

/// A bounded list of extra response headers; values share one buffer.
#[derive(Debug, Default)]
pub struct ExtraHeaders {
    names: [&'static str; EXTRA_HEADERS_MAX],
    /// `values[ends[i-1]..ends[i]]` is header i's value.
    ends: [usize; EXTRA_HEADERS_MAX],
    values: String,
    len: usize,
}

impl ExtraHeaders {
    pub fn new() -> Self {
        ExtraHeaders::default()
    }

    /// Adds `name: value`. `name` must be a valid header token (a literal in code).
    pub fn push(&mut self, name: &'static str, value: &str) -> Result<(), HeaderRejected> {
        debug_assert!(
            !name.is_empty() && name.bytes().all(is_token_byte),
            "{name}"
        );
        if self.len == EXTRA_HEADERS_MAX {
            return Err(HeaderRejected::Full);
        }
        if self.values.len() + value.len() > EXTRA_HEADER_VALUE_BYTES_MAX {
            return Err(HeaderRejected::TooLong);
        }
        if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
            return Err(HeaderRejected::InvalidValue);
        }
        if RESERVED_HEADERS
            .iter()
            .any(|r| r.eq_ignore_ascii_case(name))
        {
            return Err(HeaderRejected::Reserved);
        }
        self.values.push_str(value);
        self.names[self.len] = name;
        self.ends[self.len] = self.values.len();
        self.len += 1;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.values.clear();
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        (0..self.len).map(move |i| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            (self.names[i], &self.values[start..self.ends[i]])
        })
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// How the connection frames one response.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Framing<'d> {
    /// A HEAD request: headers as for GET, no body.
    pub head_only: bool,
    /// `Connection: close` (the connection ends after this response).
    pub close: bool,
    /// An HTTP/1.0 client that asked for keep-alive: say `Connection: keep-alive`.
    pub keep_alive_10: bool,
    /// The IMF-fixdate for `Date`.
    pub date: &'d [u8],
}

/// Appends the response to `out`; returns the status written.
pub(crate) fn write_response(out: &mut Vec<u8>, resp: &Response, framing: Framing<'_>) -> u16 {
    let status = if (200..=599).contains(&resp.status) {
        resp.status
    } else {
        log::error!("service answered with status {}: sent 500", resp.status);
        500
    };
    let no_body = status == 204 || status == 304;
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    out.extend_from_slice(framing.date);
    if !no_body && status == resp.status {
        out.extend_from_slice(b"\r\nContent-Type: ");
        out.extend_from_slice(resp.content_type.as_bytes());
    }
    let body: &[u8] = if status == resp.status {
        &resp.body
    } else {
        b""
    };
    if !no_body {
        out.extend_from_slice(b"\r\nContent-Length: ");
        push_decimal(out, body.len() as u64);
    }
    if let Some(seconds) = resp.retry_after_s {
        out.extend_from_slice(b"\r\nRetry-After: ");
        push_decimal(out, seconds);
    }
    for (name, value) in resp.extra_headers.iter() {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
    }
    if framing.close {
        out.extend_from_slice(b"\r\nConnection: close");
    } else if framing.keep_alive_10 {
        out.extend_from_slice(b"\r\nConnection: keep-alive");
    }
    out.extend_from_slice(b"\r\n\r\n");
    if !no_body && !framing.head_only {
        out.extend_from_slice(body);
    }
    status
}

/// The interim answer to `Expect: 100-continue`.
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Appends `n` in decimal without formatting machinery.
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The reason phrase of every status the router emits; others get a generic phrase.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => class_phrase(status),
    }
}

/// A phrase for a status not listed in `reason_phrase`, from its class.
fn class_phrase(status: u16) -> &'static str {
    match status {
        200..=299 => "Success",
        300..=399 => "Redirection",
        400..=499 => "Client Error",
        _ => "Server Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    fn framing(close: bool) -> Framing<'static> {
        Framing {
            head_only: false,
            close,
            keep_alive_10: false,
            date: DATE,
        }
    }

    #[test]
    fn writes_head_and_body() {
        let mut resp = Response::new();
        resp.body.extend_from_slice(b"{\"ok\":true}");
        resp.retry_after_s = Some(1);
        resp.extra_headers.push("X-Shard", "3").unwrap();
        let mut out = Vec::new();
        assert_eq!(write_response(&mut out, &resp, framing(true)), 200);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Content-Type: application/json\r\nContent-Length: 11\r\nRetry-After: 1\r\n\
             X-Shard: 3\r\nConnection: close\r\n\r\n{\"ok\":true}"
        );
    }

    #[test]
    fn head_and_no_content_carry_no_body() {
        let mut resp = Response::new();
        resp.body.extend_from_slice(b"abc");
        let mut out = Vec::new();
        let head = Framing {
            head_only: true,
            ..framing(false)
        };
        write_response(&mut out, &resp, head);
        assert!(out.ends_with(b"Content-Length: 3\r\n\r\n"));
        out.clear();
        resp.status = 204;
        write_response(&mut out, &resp, framing(false));
        assert!(!out.windows(14).any(|w| w == b"Content-Length"));
        assert!(out.ends_with(b"GMT\r\n\r\n"));
    }

    #[test]
    fn an_invalid_status_becomes_an_empty_500() {
        let mut resp = Response::new();
        resp.status = 42;
        resp.body.extend_from_slice(b"secret");
        let mut out = Vec::new();
        assert_eq!(write_response(&mut out, &resp, framing(false)), 500);
        assert!(out.ends_with(b"Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn extra_headers_are_bounded_and_safe() {
        let mut headers = ExtraHeaders::new();
        assert_eq!(
            headers.push("X-A", "a\r\nInjected: 1"),
            Err(HeaderRejected::InvalidValue)
        );
        assert_eq!(
            headers.push("content-length", "1"),
            Err(HeaderRejected::Reserved)
        );
        let long = "v".repeat(EXTRA_HEADER_VALUE_BYTES_MAX + 1);
        assert_eq!(headers.push("X-A", &long), Err(HeaderRejected::TooLong));
        for _ in 0..EXTRA_HEADERS_MAX {
            headers.push("X-A", "v").unwrap();
        }
        assert_eq!(headers.push("X-A", "v"), Err(HeaderRejected::Full));
        assert_eq!(headers.iter().count(), EXTRA_HEADERS_MAX);
        headers.clear();
        assert!(headers.is_empty());
    }

    #[test]
    fn decimals() {
        for n in [0u64, 7, 10, 1234, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
