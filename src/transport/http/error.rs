//! `RequestError`: why this layer refused a request before any `Service` saw it.
//!
//! Each variant maps, here and only here, to a status and a contract error code (SPEC §2,
//! §4). Every one of them ends the connection after the answer: once framing is in doubt,
//! the next byte on the stream cannot be trusted to start a request.

use thiserror::Error;

use super::chunked::ChunkError;
use crate::contract::ErrorCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RequestError {
    /// The request line or a header is not HTTP/1.x syntax.
    #[error("malformed HTTP request: {0}")]
    Malformed(httparse::Error),
    /// More headers than `headers_max`.
    #[error("the request has more than {max} headers (headers_max)")]
    TooManyHeaders { max: usize },
    /// The head is longer than `header_bytes_max`.
    #[error("the request head exceeds {max} bytes (header_bytes_max)")]
    HeadTooLarge { max: usize },
    /// The body is (or would be) longer than `body_bytes_max`.
    #[error("the request body exceeds {max} bytes")]
    BodyTooLarge { max: usize },
    /// `Content-Length` is not a decimal number, or two of them disagree.
    #[error("Content-Length is not a single valid length")]
    InvalidContentLength,
    /// Both `Transfer-Encoding` and `Content-Length`: a request-smuggling shape.
    #[error("the request has both Transfer-Encoding and Content-Length")]
    ConflictingFraming,
    /// A transfer coding other than a lone `chunked`.
    #[error("Transfer-Encoding other than chunked is not supported")]
    UnsupportedTransferEncoding,
    /// `Transfer-Encoding` in an HTTP/1.0 request (RFC 9112 §6.1: faulty framing).
    #[error("Transfer-Encoding is not allowed in an HTTP/1.0 request")]
    TransferEncodingHttp10,
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2).
    #[error("an HTTP/1.1 request must carry a Host header")]
    MissingHost,
    /// The chunked body is malformed.
    #[error("malformed chunked body: {0}")]
    Chunk(ChunkError),
    /// The request did not arrive completely within `read_timeout`.
    #[error("the request did not arrive within {ms} ms")]
    ReadTimeout { ms: u128 },
}

impl RequestError {
    /// The HTTP status answered.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::TooManyHeaders { .. } | RequestError::HeadTooLarge { .. } => 431,
            RequestError::BodyTooLarge { .. } => 413,
            RequestError::UnsupportedTransferEncoding => 501,
            RequestError::ReadTimeout { .. } => 408,
            RequestError::Malformed(_)
            | RequestError::InvalidContentLength
            | RequestError::ConflictingFraming
            | RequestError::TransferEncodingHttp10
            | RequestError::MissingHost
            | RequestError::Chunk(_) => 400,
        }
    }

    /// The contract code in the error body.
    pub fn code(&self) -> ErrorCode {
        match self {
            RequestError::BodyTooLarge { .. } => ErrorCode::PayloadTooLarge,
            _ => ErrorCode::InvalidRequest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes() {
        let head = RequestError::HeadTooLarge { max: 16 };
        assert_eq!(
            (head.status(), head.code()),
            (431, ErrorCode::InvalidRequest)
        );
        assert_eq!(
            head.to_string(),
            "the request head exceeds 16 bytes (header_bytes_max)"
        );
        let body = RequestError::BodyTooLarge { max: 1 };
        assert_eq!(
            (body.status(), body.code()),
            (413, ErrorCode::PayloadTooLarge)
        );
        assert_eq!(RequestError::UnsupportedTransferEncoding.status(), 501);
        assert_eq!(
            RequestError::Malformed(httparse::Error::Token).status(),
            400
        );
    }
}
