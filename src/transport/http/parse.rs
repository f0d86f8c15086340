//! Sans-IO request framing: from the bytes buffered on a connection to one complete
//! `Request`, "need more bytes", or a `RequestError`.
//!
//! `parse_request` looks at the front of the buffer only and says how many bytes the
//! request took, so the connection answers a pipelined batch by calling it again on the
//! rest. The head is parsed by httparse into a header array on the caller's stack (no
//! allocation, bounded by `headers_max`). The head is parsed again when more of a body
//! arrives; that costs little next to a read, and keeps no pointers into the buffer
//! across reads. Chunked bodies are decoded incrementally into the connection's body
//! buffer (`ChunkedDecoder` keeps its place), so no byte is decoded twice.

use std::mem::MaybeUninit;

use super::chunked::{ChunkError, ChunkLimits, ChunkedDecoder, Progress};
use super::error::RequestError;
use super::limits::HttpLimits;
use super::request::{split_target, Header, Method, Request};

/// What the front of the buffer holds.
#[derive(Debug)]
pub enum Parsed<'b> {
    /// Not a whole request yet. `expects_continue`: the head is complete and the client
    /// waits for `100 Continue` before it sends the body.
    Partial { expects_continue: bool },
    /// A whole request, which took the first `len` bytes of the buffer.
    Complete { request: Request<'b>, len: usize },
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFraming {
    Empty,
    Length(usize),
    Chunked,
}

/// What the headers say about framing and the connection.
#[derive(Debug, Clone, Copy, Default)]
struct HeadFacts {
    content_length: Option<u64>,
    transfer_encoding: bool,
    chunked_only: bool,
    close: bool,
    keep_alive: bool,
    expects_continue: bool,
    host: bool,
}

/// Parses the request at the front of `buf`.
///
/// `headers` is the caller's header array, already cut to `headers_max`. `decoder` and
/// `body` carry a chunked body's progress between calls for the same request; reset and
/// clear them once a request is complete.
pub fn parse_request<'b>(
    buf: &'b [u8],
    headers: &'b mut [MaybeUninit<Header<'b>>],
    limits: &HttpLimits,
    decoder: &mut ChunkedDecoder,
    body: &'b mut Vec<u8>,
) -> Result<Parsed<'b>, RequestError> {
    let mut head = httparse::Request::new(&mut []);
    // The head must fit in the first `header_bytes_max` bytes, so nothing past them is
    // parsed: a head over the limit is refused as too large whatever follows, and the
    // answer does not depend on how the bytes were split across reads (parsing further
    // could find a malformed byte, or a header too many, only when more had arrived).
    let window = &buf[..buf.len().min(limits.header_bytes_max)];
    let head_len = match head.parse_with_uninit_headers(window, headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > limits.header_bytes_max => {
            return Err(head_too_large(limits));
        }
        Ok(httparse::Status::Partial) => {
            return Ok(Parsed::Partial {
                expects_continue: false,
            })
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(RequestError::TooManyHeaders {
                max: limits.headers_max,
            })
        }
        Err(err) => return Err(RequestError::Malformed(err)),
    };
    let minor_version = head.version.unwrap_or(1);
    let headers: &'b [Header<'b>] = head.headers;
    let facts = head_facts(headers)?;
    let framing = body_framing(&facts, minor_version, limits)?;
    let input = &buf[head_len..];
    let (body, body_len) = match framing {
        BodyFraming::Empty => (&buf[..0], 0),
        BodyFraming::Length(len) if input.len() >= len => (&input[..len], len),
        BodyFraming::Chunked => match decode_chunked(input, decoder, body, limits)? {
            Progress::Complete { encoded_len } => (&body[..], encoded_len),
            Progress::Incomplete => return Ok(partial_body(&facts, minor_version)),
        },
        BodyFraming::Length(_) => return Ok(partial_body(&facts, minor_version)),
    };
    let (path, query) = split_target(head.path.unwrap_or("/"));
    let request = Request {
        method: Method::from_token(head.method.unwrap_or("")),
        path,
        query,
        headers,
        body,
        keep_alive: keep_alive(&facts, minor_version),
        minor_version,
    };
    Ok(Parsed::Complete {
        request,
        len: head_len + body_len,
    })
}

fn head_too_large(limits: &HttpLimits) -> RequestError {
    RequestError::HeadTooLarge {
        max: limits.header_bytes_max,
    }
}

fn partial_body(facts: &HeadFacts, minor_version: u8) -> Parsed<'static> {
    Parsed::Partial {
        expects_continue: facts.expects_continue && minor_version >= 1,
    }
}

fn decode_chunked(
    input: &[u8],
    decoder: &mut ChunkedDecoder,
    body: &mut Vec<u8>,
    limits: &HttpLimits,
) -> Result<Progress, RequestError> {
    let chunk_limits = ChunkLimits {
        body_bytes_max: limits.body_bytes_max,
        trailer_bytes_max: limits.header_bytes_max,
    };
    decoder
        .decode(input, body, chunk_limits)
        .map_err(|err| match err {
            ChunkError::BodyTooLarge { max } => RequestError::BodyTooLarge { max },
            other => RequestError::Chunk(other),
        })
}

/// One pass over the headers for everything framing and keep-alive depend on.
fn head_facts(headers: &[Header<'_>]) -> Result<HeadFacts, RequestError> {
    let mut facts = HeadFacts::default();
    for header in headers {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let length = parse_content_length(header.value)?;
            if facts.content_length.is_some_and(|seen| seen != length) {
                return Err(RequestError::InvalidContentLength);
            }
            facts.content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Several headers form one list: only a lone `chunked` in all of them is ok.
            let lone_chunked = trim(header.value).eq_ignore_ascii_case(b"chunked");
            facts.chunked_only = lone_chunked && !facts.transfer_encoding;
            facts.transfer_encoding = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&b| b == b',').map(trim) {
                facts.close |= token.eq_ignore_ascii_case(b"close");
                facts.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            facts.expects_continue = trim(header.value).eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("host") {
            facts.host = true;
        }
    }
    Ok(facts)
}

fn body_framing(
    facts: &HeadFacts,
    minor_version: u8,
    limits: &HttpLimits,
) -> Result<BodyFraming, RequestError> {
    if minor_version >= 1 && !facts.host {
        return Err(RequestError::MissingHost);
    }
    if facts.transfer_encoding {
        if minor_version == 0 {
            return Err(RequestError::TransferEncodingHttp10);
        }
        if facts.content_length.is_some() {
            return Err(RequestError::ConflictingFraming);
        }
        if !facts.chunked_only {
            return Err(RequestError::UnsupportedTransferEncoding);
        }
        return Ok(BodyFraming::Chunked);
    }
    match facts.content_length {
        None | Some(0) => Ok(BodyFraming::Empty),
        Some(len) if len > limits.body_bytes_max as u64 => Err(RequestError::BodyTooLarge {
            max: limits.body_bytes_max,
        }),
        Some(len) => Ok(BodyFraming::Length(len as usize)),
    }
}

fn keep_alive(facts: &HeadFacts, minor_version: u8) -> bool {
    if facts.close {
        return false;
    }
    minor_version >= 1 || facts.keep_alive
}

/// `1*DIGIT`, nothing else (no sign, no spaces inside), at most 19 digits.
fn parse_content_length(value: &[u8]) -> Result<u64, RequestError> {
    const DIGITS_MAX: usize = 19;
    let digits = trim(value);
    if digits.is_empty() || digits.len() > DIGITS_MAX || !digits.iter().all(u8::is_ascii_digit) {
        return Err(RequestError::InvalidContentLength);
    }
    Ok(digits
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

fn trim(bytes: &[u8]) -> &[u8] {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests;
