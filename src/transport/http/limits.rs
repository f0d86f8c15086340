//! Every bound the HTTP layer puts on a connection, in one place.
//!
//! A client controls how much it sends and how slowly, so each resource a connection can
//! hold is bounded: header count and bytes, body bytes, time to send a request, time
//! between requests, time to take a response, connections per shard and requests answered
//! per read. The defaults suit a router answering small JSON requests; `HttpLimits` lets
//! the binary override them from its configuration, and `validate` refuses combinations
//! the connection code cannot honour (checked once, when `serve` starts).

use std::time::Duration;

use thiserror::Error;

/// Headers in one request head (SPEC §8: bounded header counts).
pub const HEADERS_MAX: usize = 64;
/// The parser's header array lives on the stack; `headers_max` may not exceed it.
/// It is held across the `Service` call, so it is part of every connection's task (32 B a
/// header): 128 headers cost 4 KiB per connection.
pub const HEADERS_CEILING_MAX: usize = 128;
/// Bytes of one request head: request line, headers and the blank line.
pub const HEADER_BYTES_MAX: usize = 16 * 1024;
/// Bytes of one decoded request body (SPEC §3: 1 MiB, configurable).
pub const BODY_BYTES_MAX: usize = 1024 * 1024;
/// From a request's first byte to its complete arrival; a trickling client is closed.
pub const READ_TIMEOUT_MS: u64 = 5_000;
/// Between keep-alive requests; an idle connection is closed silently.
pub const IDLE_TIMEOUT_MS: u64 = 60_000;
/// For the client to take one batch of responses.
pub const WRITE_TIMEOUT_MS: u64 = 5_000;
/// After `Stop`, how long `serve` waits for open connections to finish.
pub const DRAIN_TIMEOUT_MS: u64 = 10_000;
/// Open connections per shard; one more is answered `503 overloaded` and closed.
pub const CONNECTIONS_PER_SHARD_MAX: usize = 10_000;
/// Requests answered from one read before their responses are written (pipelining).
pub const PIPELINE_REQUESTS_MAX: usize = 64;

/// The read buffer starts at this size and doubles up to `header_bytes_max +
/// body_bytes_max`; small requests (the common case) never grow it.
pub const READ_BUFFER_BYTES_INITIAL: usize = 4 * 1024;
/// A per-connection buffer that grew past this for one large request is given back once
/// that request is answered, so idle connections do not each hold a megabyte.
pub const BUFFER_BYTES_RETAINED_MAX: usize = 64 * 1024;
/// A batch of pipelined responses is written once it holds this many bytes, even if more
/// requests are buffered, so the write buffer stays bounded by one response over this.
pub const WRITE_BATCH_BYTES_MAX: usize = 64 * 1024;
/// Connections being refused (503 written, then closed) at once per shard; beyond this a
/// refused connection is closed without an answer.
pub const REFUSALS_IN_FLIGHT_MAX: usize = 64;
/// After an error response, bytes of the client's unread input discarded before closing,
/// so the kernel does not reset the connection and destroy the response in flight.
///
/// Sized for the client that writes a whole oversized request before it reads anything
/// (Python's `http.client`, many SDKs): it only sees the 413 if the server takes every
/// byte it sends, so this must cover a body several times `BODY_BYTES_MAX`; 64 KiB (the
/// earlier value) reset the answer of any body over about 2 MiB. Discarding costs no
/// memory (the connection's own read buffer is reused), only the reads.
pub const LINGER_BYTES_MAX: usize = 16 * 1024 * 1024;
/// …and for how long at most: enough for `LINGER_BYTES_MAX` at ~100 Mbit/s; a slower
/// client with that much unread input gets the reset.
pub const LINGER_TIMEOUT_MS: u64 = 2_000;
/// Extra response headers a `Service` may add to one response.
pub const EXTRA_HEADERS_MAX: usize = 8;
/// Bytes of all extra header values of one response together.
pub const EXTRA_HEADER_VALUE_BYTES_MAX: usize = 4 * 1024;
/// A chunk-size line, extensions included (`1f;name=value\r\n`).
pub const CHUNK_LINE_BYTES_MAX: usize = 1024;
/// Pause after an accept error such as EMFILE, so the accept loop does not spin.
pub const ACCEPT_ERROR_BACKOFF_MS: u64 = 10;
/// At most one accept-error log line per shard per this interval; the line counts the
/// ones left out since the previous (at EMFILE the loop would otherwise log ~100/s).
pub const ACCEPT_ERROR_LOG_INTERVAL_MS: u64 = 1_000;
/// A connection answered `503` with the spare descriptor at EMFILE lingers this long at
/// most (not `LINGER_TIMEOUT_MS`): the spare is the shard's only way to answer while the
/// process is out of descriptors, so it is given back quickly for the next client.
pub const FD_EXHAUSTED_LINGER_MS: u64 = 100;

/// `header_bytes_max` and `body_bytes_max` each; their sum stays below `u32::MAX`.
pub const LIMIT_BYTES_CEILING_MAX: usize = (u32::MAX / 2) as usize;

const _: () = assert!(HEADERS_MAX <= HEADERS_CEILING_MAX);
// The config's ranges are this layer's ceilings, stated there as numbers (the config does
// not depend on the transports): a config that validates is one `HttpLimits` accepts.
const _: () = assert!(crate::config::HEADERS_MAX == HEADERS_CEILING_MAX);
const _: () = assert!(crate::config::HEADER_BYTES_MIN == READ_BUFFER_BYTES_INITIAL);
const _: () = assert!(READ_BUFFER_BYTES_INITIAL <= HEADER_BYTES_MAX);
const _: () = assert!(READ_BUFFER_BYTES_INITIAL <= BUFFER_BYTES_RETAINED_MAX);
const _: () = assert!(CHUNK_LINE_BYTES_MAX <= HEADER_BYTES_MAX);
const _: () = assert!(LINGER_TIMEOUT_MS < READ_TIMEOUT_MS);
const _: () = assert!(LINGER_BYTES_MAX >= 8 * BODY_BYTES_MAX);
const _: () = assert!(READ_TIMEOUT_MS <= IDLE_TIMEOUT_MS);
const _: () = assert!(REFUSALS_IN_FLIGHT_MAX <= CONNECTIONS_PER_SHARD_MAX);
const _: () = assert!(HEADER_BYTES_MAX <= LIMIT_BYTES_CEILING_MAX);
const _: () = assert!(BODY_BYTES_MAX <= LIMIT_BYTES_CEILING_MAX);

/// The limits one `serve` call enforces. `Default` is the constants above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Headers in one request head (431 beyond).
    pub headers_max: usize,
    /// Bytes of one request head (431 beyond).
    pub header_bytes_max: usize,
    /// Bytes of one decoded request body (413 beyond).
    pub body_bytes_max: usize,
    /// From a request's first byte to its complete arrival (408, then close).
    pub read_timeout: Duration,
    /// Between keep-alive requests (silent close).
    pub idle_timeout: Duration,
    /// For the client to take one batch of responses (close).
    pub write_timeout: Duration,
    /// Open connections on this shard (503 `overloaded` beyond).
    pub connections_max: usize,
    /// Requests answered from one read before their responses are written.
    pub pipeline_max: usize,
    /// After `Stop`, how long `serve` waits for connections to finish.
    pub drain_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            headers_max: HEADERS_MAX,
            header_bytes_max: HEADER_BYTES_MAX,
            body_bytes_max: BODY_BYTES_MAX,
            read_timeout: Duration::from_millis(READ_TIMEOUT_MS),
            idle_timeout: Duration::from_millis(IDLE_TIMEOUT_MS),
            write_timeout: Duration::from_millis(WRITE_TIMEOUT_MS),
            connections_max: CONNECTIONS_PER_SHARD_MAX,
            pipeline_max: PIPELINE_REQUESTS_MAX,
            drain_timeout: Duration::from_millis(DRAIN_TIMEOUT_MS),
        }
    }
}

/// A combination of limits the connection code cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LimitsError {
    /// `headers_max` is 0 or above the parser's stack array.
    #[error("headers_max must be 1..={HEADERS_CEILING_MAX}, got {0}")]
    Headers(usize),
    /// `header_bytes_max` cannot hold a request line, or the buffer ceiling overflows.
    #[error(
        "header_bytes_max must be {min}..={max}, got {got}",
        min = READ_BUFFER_BYTES_INITIAL,
        max = LIMIT_BYTES_CEILING_MAX
    )]
    HeaderBytes { got: usize },
    /// `body_bytes_max` above what the read buffer may address.
    #[error("body_bytes_max must be at most {LIMIT_BYTES_CEILING_MAX}, got {0}")]
    BodyBytes(usize),
    /// A timeout of zero would close every connection at once.
    #[error("{0} must be greater than zero")]
    ZeroTimeout(&'static str),
    /// `connections_max` or `pipeline_max` is 0.
    #[error("{0} must be at least 1")]
    ZeroCount(&'static str),
}

impl HttpLimits {
    /// Checks the limits once, before serving.
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.headers_max == 0 || self.headers_max > HEADERS_CEILING_MAX {
            return Err(LimitsError::Headers(self.headers_max));
        }
        let head = self.header_bytes_max;
        if !(READ_BUFFER_BYTES_INITIAL..=LIMIT_BYTES_CEILING_MAX).contains(&head) {
            return Err(LimitsError::HeaderBytes {
                got: self.header_bytes_max,
            });
        }
        if self.body_bytes_max > LIMIT_BYTES_CEILING_MAX {
            return Err(LimitsError::BodyBytes(self.body_bytes_max));
        }
        let timeouts = [
            ("read_timeout", self.read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("write_timeout", self.write_timeout),
        ];
        if let Some((name, _)) = timeouts.iter().find(|(_, d)| d.is_zero()) {
            return Err(LimitsError::ZeroTimeout(name));
        }
        if self.connections_max == 0 {
            return Err(LimitsError::ZeroCount("connections_max"));
        }
        if self.pipeline_max == 0 {
            return Err(LimitsError::ZeroCount("pipeline_max"));
        }
        Ok(())
    }

    /// The read buffer's ceiling: one full head and one full body.
    pub fn read_buffer_bytes_max(&self) -> usize {
        self.header_bytes_max + self.body_bytes_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(HttpLimits::default().validate(), Ok(()));
    }

    #[test]
    fn refuses_what_the_connection_cannot_honour() {
        let base = HttpLimits::default();
        let headers = HttpLimits {
            headers_max: HEADERS_CEILING_MAX + 1,
            ..base
        };
        assert_eq!(headers.validate(), Err(LimitsError::Headers(129)));
        let tiny_head = HttpLimits {
            header_bytes_max: 100,
            ..base
        };
        assert!(tiny_head.validate().is_err());
        let zero = HttpLimits {
            idle_timeout: Duration::ZERO,
            ..base
        };
        assert_eq!(
            zero.validate(),
            Err(LimitsError::ZeroTimeout("idle_timeout"))
        );
        let no_pipeline = HttpLimits {
            pipeline_max: 0,
            ..base
        };
        assert_eq!(
            no_pipeline.validate(),
            Err(LimitsError::ZeroCount("pipeline_max"))
        );
    }
}
