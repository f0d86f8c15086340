//! The NATS client protocol, sans-IO: parse what the server sends, encode what we send.
//!
//! No sockets, no clocks, no allocation on the parse path: `parse` borrows every field of
//! an operation from the caller's read buffer and reports how many bytes it used, so the
//! driver decides when to read more and when to compact. That keeps the protocol testable
//! (and fuzzed: see the property tests) apart from glommio and TLS.
//!
//! Limits: a control line (everything before a message's payload) is at most
//! `CONTROL_LINE_BYTES_MAX`, as in nats-server, except INFO, at most `INFO_LINE_BYTES_MAX`:
//! a large cluster lists every member's address in `connect_urls`, which outgrows 4 KiB,
//! while every other line stays short. A message payload is at most the server's
//! `max_payload`, itself capped by `PAYLOAD_BYTES_MAX`. Anything larger is a protocol error
//! and the driver reconnects rather than buffering without bound.

use thiserror::Error;

/// Longest control line accepted (nats-server's own `MAX_CONTROL_LINE_SIZE`).
pub const CONTROL_LINE_BYTES_MAX: usize = 4_096;
/// Longest INFO line accepted: room for the `connect_urls` of a large cluster.
pub const INFO_LINE_BYTES_MAX: usize = 64 << 10;
/// Largest message payload accepted from any server, whatever its INFO says.
pub const PAYLOAD_BYTES_MAX: usize = 64 << 20;
/// Longest subject we publish or subscribe to.
pub const SUBJECT_BYTES_MAX: usize = 1_024;
/// Headers in one message we parse; the rest are ignored.
pub const HEADERS_PER_MESSAGE_MAX: usize = 64;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtoError {
    /// The server sent a line we cannot read; the connection is unusable.
    #[error("malformed {op} from server: {line}")]
    Malformed { op: &'static str, line: String },
    /// An operation name we do not know.
    #[error("unknown operation from server: {0}")]
    UnknownOp(String),
    /// A line over its limit: `INFO_LINE_BYTES_MAX` for INFO, else `CONTROL_LINE_BYTES_MAX`.
    #[error("control line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("message of {0} bytes exceeds the payload limit")]
    PayloadTooLarge(usize),
}

/// One operation from the server, borrowed from the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOp<'a> {
    Info(&'a [u8]),
    Msg(Msg<'a>),
    Ping,
    Pong,
    Ok,
    Err(&'a str),
}

/// A delivered message (`MSG` or `HMSG`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg<'a> {
    pub subject: &'a str,
    pub sid: u64,
    pub reply: Option<&'a str>,
    /// The raw header block (`NATS/1.0…\r\n\r\n`), when the message has one.
    pub headers: Option<HeaderBlock<'a>>,
    pub payload: &'a [u8],
}

/// Parses one operation from the front of `buf`: `Ok(None)` when more bytes are needed,
/// otherwise the operation and the bytes it used. `payload_max` bounds message sizes.
pub fn parse(buf: &[u8], payload_max: usize) -> Result<Option<(ServerOp<'_>, usize)>, ProtoError> {
    let line_max = line_max(buf);
    let Some(eol) = find_crlf(buf, line_max) else {
        // A line of the longest length may have arrived up to its CR (the LF in the next
        // read): only more bytes than that without a CRLF are too long.
        if buf.len() > line_max + 1 {
            return Err(ProtoError::LineTooLong(line_max));
        }
        return Ok(None);
    };
    if eol > line_max {
        return Err(ProtoError::LineTooLong(line_max));
    }
    let line = &buf[..eol];
    let used = eol + 2;
    let (op, args) = split_op(line);
    let op_upper = ascii_upper::<8>(op);
    let op = match &op_upper[..op.len().min(8)] {
        b"MSG" => return parse_msg(buf, line, args, used, false, payload_max),
        b"HMSG" => return parse_msg(buf, line, args, used, true, payload_max),
        b"PING" => ServerOp::Ping,
        b"PONG" => ServerOp::Pong,
        b"+OK" => ServerOp::Ok,
        b"INFO" => ServerOp::Info(trim(args)),
        b"-ERR" => {
            let text = std::str::from_utf8(trim(args)).map_err(|_| malformed("-ERR", line))?;
            ServerOp::Err(text.trim_matches('\''))
        }
        _ => return Err(ProtoError::UnknownOp(lossy(line))),
    };
    Ok(Some((op, used)))
}

fn parse_msg<'a>(
    buf: &'a [u8],
    line: &'a [u8],
    args: &'a [u8],
    head: usize,
    with_headers: bool,
    payload_max: usize,
) -> Result<Option<(ServerOp<'a>, usize)>, ProtoError> {
    let name = if with_headers { "HMSG" } else { "MSG" };
    let text = std::str::from_utf8(args).map_err(|_| malformed(name, line))?;
    let mut parts = [""; 5];
    let mut n = 0;
    for part in text.split_ascii_whitespace() {
        if n == parts.len() {
            return Err(malformed(name, line));
        }
        parts[n] = part;
        n += 1;
    }
    // MSG subject sid [reply] total / HMSG subject sid [reply] hdr total
    let fixed = if with_headers { 4 } else { 3 };
    if n != fixed && n != fixed + 1 {
        return Err(malformed(name, line));
    }
    let reply = (n == fixed + 1).then_some(parts[2]);
    let sizes = &parts[n - (fixed - 2)..n];
    let number = |s: &str| s.parse::<usize>().map_err(|_| malformed(name, line));
    let total = number(sizes[sizes.len() - 1])?;
    let header_len = if with_headers { number(sizes[0])? } else { 0 };
    if header_len > total {
        return Err(malformed(name, line));
    }
    if total > payload_max {
        return Err(ProtoError::PayloadTooLarge(total));
    }
    let sid = parts[1].parse::<u64>().map_err(|_| malformed(name, line))?;
    let end = head + total;
    if buf.len() < end + 2 {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(malformed(name, line));
    }
    let body = &buf[head..end];
    let headers = with_headers.then(|| HeaderBlock(&body[..header_len]));
    let msg = Msg {
        subject: parts[0],
        sid,
        reply,
        headers,
        payload: &body[header_len..],
    };
    Ok(Some((ServerOp::Msg(msg), end + 2)))
}

/// A raw NATS header block; fields are found on demand, without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderBlock<'a>(pub &'a [u8]);

impl<'a> HeaderBlock<'a> {
    /// The status code of the first line (`NATS/1.0 503`), e.g. "no responders".
    pub fn status(&self) -> Option<u16> {
        let first = self.0.split(|&b| b == b'\n').next()?;
        let first = std::str::from_utf8(first).ok()?.trim();
        let rest = first.strip_prefix("NATS/1.0")?.trim_start();
        rest.get(..3)?.parse().ok()
    }

    /// The first value of header `name` (ASCII case-insensitive), trimmed.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The fields, in order (at most `HEADERS_PER_MESSAGE_MAX`; malformed lines skipped).
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let text = std::str::from_utf8(self.0).unwrap_or("");
        text.split("\r\n")
            .skip(1)
            .take(HEADERS_PER_MESSAGE_MAX)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
    }
}

/// What we tell the server in CONNECT.
#[derive(Debug, Clone, Default)]
pub struct ConnectInfo<'a> {
    pub name: &'a str,
    pub token: Option<&'a str>,
    pub user: Option<&'a str>,
    pub pass: Option<&'a str>,
    pub tls_required: bool,
}

/// The parts of the server's INFO we use.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(default)]
pub struct ServerInfo {
    pub server_id: String,
    pub version: String,
    pub max_payload: usize,
    pub headers: bool,
    pub tls_required: bool,
    pub tls_available: bool,
    pub auth_required: bool,
}

impl ServerInfo {
    pub fn parse(json: &[u8]) -> Result<ServerInfo, ProtoError> {
        serde_json::from_slice(json).map_err(|e| ProtoError::Malformed {
            op: "INFO",
            line: e.to_string(),
        })
    }
}

/// Appends CONNECT: `verbose` off (no +OK per message), headers and no-responders on.
pub fn encode_connect(out: &mut Vec<u8>, info: &ConnectInfo<'_>) {
    #[derive(serde::Serialize)]
    struct Connect<'a> {
        verbose: bool,
        pedantic: bool,
        tls_required: bool,
        name: &'a str,
        lang: &'static str,
        version: &'static str,
        protocol: u8,
        echo: bool,
        headers: bool,
        no_responders: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        auth_token: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pass: Option<&'a str>,
    }
    let connect = Connect {
        verbose: false,
        pedantic: false,
        tls_required: info.tls_required,
        name: info.name,
        lang: "rust-shardline",
        version: env!("CARGO_PKG_VERSION"),
        protocol: 1,
        echo: false,
        headers: true,
        no_responders: true,
        auth_token: info.token,
        user: info.user,
        pass: info.pass,
    };
    out.extend_from_slice(b"CONNECT ");
    serde_json::to_writer(&mut *out, &connect).expect("CONNECT serialises");
    out.extend_from_slice(b"\r\n");
}

/// Why a message cannot be encoded.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    #[error("invalid subject (empty, too long, or containing whitespace)")]
    Subject,
    #[error("invalid header name or value (control characters or ':' in a name)")]
    Header,
    #[error("message of {size} bytes exceeds the server's max_payload of {max}")]
    TooLarge { size: usize, max: usize },
}

/// Whether `s` can be a subject (or a reply or a queue group) on the wire.
pub fn valid_subject(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= SUBJECT_BYTES_MAX
        && !s
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
}

fn valid_header(name: &str, value: &str) -> bool {
    !name.is_empty()
        && !name
            .bytes()
            .any(|b| b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
        && !value.bytes().any(|b| b == b'\r' || b == b'\n')
}

/// Size of the header block `encode_pub` writes for `headers`.
fn header_block_len(headers: &[(&str, &str)]) -> usize {
    if headers.is_empty() {
        return 0;
    }
    let fields: usize = headers.iter().map(|(k, v)| k.len() + 2 + v.len() + 2).sum();
    b"NATS/1.0\r\n".len() + fields + 2
}

/// Appends PUB (or HPUB when there are headers). Nothing is written on error.
pub fn encode_pub(
    out: &mut Vec<u8>,
    subject: &str,
    reply: Option<&str>,
    headers: &[(&str, &str)],
    payload: &[u8],
    max_payload: usize,
) -> Result<(), EncodeError> {
    if !valid_subject(subject) || reply.is_some_and(|r| !valid_subject(r)) {
        return Err(EncodeError::Subject);
    }
    if !headers.iter().all(|(k, v)| valid_header(k, v)) {
        return Err(EncodeError::Header);
    }
    let hlen = header_block_len(headers);
    let total = hlen + payload.len();
    if total > max_payload {
        return Err(EncodeError::TooLarge {
            size: total,
            max: max_payload,
        });
    }
    out.reserve(subject.len() + 64 + total);
    out.extend_from_slice(if hlen > 0 { b"HPUB " } else { b"PUB " });
    out.extend_from_slice(subject.as_bytes());
    out.push(b' ');
    if let Some(reply) = reply {
        out.extend_from_slice(reply.as_bytes());
        out.push(b' ');
    }
    if hlen > 0 {
        push_usize(out, hlen);
        out.push(b' ');
    }
    push_usize(out, total);
    out.extend_from_slice(b"\r\n");
    if hlen > 0 {
        out.extend_from_slice(b"NATS/1.0\r\n");
        for (k, v) in headers {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Appends SUB.
pub fn encode_sub(
    out: &mut Vec<u8>,
    subject: &str,
    queue: Option<&str>,
    sid: u64,
) -> Result<(), EncodeError> {
    if !valid_subject(subject) || queue.is_some_and(|q| !valid_subject(q)) {
        return Err(EncodeError::Subject);
    }
    out.extend_from_slice(b"SUB ");
    out.extend_from_slice(subject.as_bytes());
    out.push(b' ');
    if let Some(q) = queue {
        out.extend_from_slice(q.as_bytes());
        out.push(b' ');
    }
    push_usize(out, sid as usize);
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Appends UNSUB.
pub fn encode_unsub(out: &mut Vec<u8>, sid: u64) {
    out.extend_from_slice(b"UNSUB ");
    push_usize(out, sid as usize);
    out.extend_from_slice(b"\r\n");
}

pub const PING: &[u8] = b"PING\r\n";
pub const PONG: &[u8] = b"PONG\r\n";

fn push_usize(out: &mut Vec<u8>, n: usize) {
    crate::transport::http::push_decimal(out, n as u64);
}

/// The limit of the line at the front of `buf`: INFO's, once its name is complete.
fn line_max(buf: &[u8]) -> usize {
    match buf.get(..5) {
        Some(head)
            if head[..4].eq_ignore_ascii_case(b"INFO") && matches!(head[4], b' ' | b'\t') =>
        {
            INFO_LINE_BYTES_MAX
        }
        _ => CONTROL_LINE_BYTES_MAX,
    }
}

fn find_crlf(buf: &[u8], line_max: usize) -> Option<usize> {
    let limit = buf.len().min(line_max + 2);
    buf[..limit].windows(2).position(|w| w == b"\r\n")
}

fn split_op(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&b| b == b' ' || b == b'\t') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[]),
    }
}

fn ascii_upper<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    for (o, b) in out.iter_mut().zip(s) {
        *o = b.to_ascii_uppercase();
    }
    out
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

fn lossy(line: &[u8]) -> String {
    let shown = &line[..line.len().min(80)];
    String::from_utf8_lossy(shown).into_owned()
}

fn malformed(op: &'static str, line: &[u8]) -> ProtoError {
    ProtoError::Malformed {
        op,
        line: lossy(line),
    }
}

#[cfg(test)]
mod tests;
