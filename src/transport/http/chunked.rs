//! Incremental decoder for `Transfer-Encoding: chunked` request bodies (RFC 9112 §7.1).
//!
//! The decoder keeps its place between reads, so bytes that arrived earlier are never
//! scanned twice however slowly a client sends. Decoded data is appended to the caller's
//! body buffer (one per connection), which keeps the read buffer untouched while the
//! request head borrowed from it is still in use. Strict on purpose: CRLF only (a bare LF
//! is an error, as lenient parsing is how smuggling happens), a bounded chunk-size line,
//! bounded trailers (read and dropped), and the body limit checked before data is copied.

use thiserror::Error;

use super::limits::CHUNK_LINE_BYTES_MAX;

/// Hex digits of a chunk size (16 fill a `u64`).
const CHUNK_SIZE_DIGITS_MAX: usize = 16;

/// What is wrong with a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ChunkError {
    /// The chunk size is missing or not hexadecimal.
    #[error("invalid chunk size")]
    InvalidSize,
    /// A line ends without CRLF, or chunk data is not followed by CRLF.
    #[error("expected CRLF")]
    MissingCrlf,
    /// The chunk-size line (with extensions) is longer than `CHUNK_LINE_BYTES_MAX`.
    #[error("chunk-size line longer than {CHUNK_LINE_BYTES_MAX} bytes")]
    LineTooLong,
    /// The trailer section is longer than the head limit.
    #[error("trailers longer than {max} bytes")]
    TrailersTooLarge { max: usize },
    /// The decoded body would exceed `body_bytes_max` (answered 413, not 400).
    #[error("body longer than {max} bytes")]
    BodyTooLarge { max: usize },
}

/// The decoder's position in the chunked grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the hex digits of a chunk size.
    Size,
    /// In chunk extensions (`;name=value`), up to CR.
    Extension,
    /// After the CR that ends a size line.
    SizeLf,
    /// In chunk data, with this many bytes left.
    Data(u64),
    /// After chunk data: expecting CR, then LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// After the CR that ends a trailer line.
    TrailerLf,
    /// After the CR of the final empty line.
    FinalLf,
}

/// Where decoding stands after the bytes seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More bytes are needed.
    Incomplete,
    /// The body ended; `encoded_len` bytes of input belong to it.
    Complete { encoded_len: usize },
}

/// The bounds a body is decoded under.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    pub body_bytes_max: usize,
    pub trailer_bytes_max: usize,
}

/// Resumable chunked-body decoder; `reset` it before the next request.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Input bytes already consumed (the next call resumes here).
    consumed: usize,
    size: u64,
    size_digits: usize,
    line_bytes: usize,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size,
            consumed: 0,
            size: 0,
            size_digits: 0,
            line_bytes: 0,
            trailer_bytes: 0,
        }
    }
}

impl ChunkedDecoder {
    pub fn reset(&mut self) {
        *self = ChunkedDecoder::default();
    }

    /// Decodes `input` (the body so far, from its first byte; it may be followed by the
    /// next pipelined request) into `out`, resuming where the previous call stopped.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limits: ChunkLimits,
    ) -> Result<Progress, ChunkError> {
        debug_assert!(self.consumed <= input.len());
        while self.consumed < input.len() {
            if let State::Data(left) = self.state {
                self.copy_data(input, out, left);
                continue;
            }
            let byte = input[self.consumed];
            self.consumed += 1;
            if self.step(byte, out.len(), limits)? {
                return Ok(Progress::Complete {
                    encoded_len: self.consumed,
                });
            }
        }
        Ok(Progress::Incomplete)
    }

    fn copy_data(&mut self, input: &[u8], out: &mut Vec<u8>, left: u64) {
        let available = input.len() - self.consumed;
        let take = usize::try_from(left).map_or(available, |left| left.min(available));
        out.extend_from_slice(&input[self.consumed..self.consumed + take]);
        self.consumed += take;
        let left = left - take as u64;
        self.state = if left == 0 {
            State::DataCr
        } else {
            State::Data(left)
        };
    }

    /// Consumes one framing byte; `Ok(true)` when it ends the body.
    fn step(&mut self, byte: u8, decoded: usize, limits: ChunkLimits) -> Result<bool, ChunkError> {
        self.state = match self.state {
            State::Size | State::Extension => self.size_line(byte, decoded, limits)?,
            State::SizeLf => self.end_size_line(byte)?,
            State::DataCr => expect(byte, b'\r', State::DataLf)?,
            State::DataLf => expect(byte, b'\n', State::Size)?,
            State::TrailerStart if byte == b'\r' => State::FinalLf,
            State::TrailerStart | State::Trailer => self.trailer(byte, limits)?,
            State::TrailerLf => expect(byte, b'\n', State::TrailerStart)?,
            State::FinalLf => {
                expect(byte, b'\n', State::FinalLf)?;
                return Ok(true);
            }
            State::Data(_) => unreachable!("data is copied, not stepped"),
        };
        Ok(false)
    }

    fn size_line(
        &mut self,
        byte: u8,
        decoded: usize,
        lim: ChunkLimits,
    ) -> Result<State, ChunkError> {
        self.line_bytes += 1;
        if self.line_bytes > CHUNK_LINE_BYTES_MAX {
            return Err(ChunkError::LineTooLong);
        }
        if self.state == State::Size {
            if let Some(digit) = (byte as char).to_digit(16) {
                self.size_digits += 1;
                if self.size_digits > CHUNK_SIZE_DIGITS_MAX {
                    return Err(ChunkError::InvalidSize);
                }
                self.size = self.size * 16 + u64::from(digit);
                if self.size > (lim.body_bytes_max - decoded) as u64 {
                    return Err(ChunkError::BodyTooLarge {
                        max: lim.body_bytes_max,
                    });
                }
                return Ok(State::Size);
            }
            if self.size_digits == 0 {
                return Err(ChunkError::InvalidSize);
            }
        }
        match byte {
            b'\r' => Ok(State::SizeLf),
            b'\n' => Err(ChunkError::MissingCrlf),
            b';' | b' ' | b'\t' => Ok(State::Extension),
            _ if self.state == State::Extension && is_field_byte(byte) => Ok(State::Extension),
            _ => Err(ChunkError::InvalidSize),
        }
    }

    fn end_size_line(&mut self, byte: u8) -> Result<State, ChunkError> {
        if byte != b'\n' {
            return Err(ChunkError::MissingCrlf);
        }
        let size = self.size;
        self.size = 0;
        self.size_digits = 0;
        self.line_bytes = 0;
        Ok(if size == 0 {
            State::TrailerStart
        } else {
            State::Data(size)
        })
    }

    fn trailer(&mut self, byte: u8, limits: ChunkLimits) -> Result<State, ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > limits.trailer_bytes_max {
            return Err(ChunkError::TrailersTooLarge {
                max: limits.trailer_bytes_max,
            });
        }
        match byte {
            b'\r' => Ok(State::TrailerLf),
            b'\n' => Err(ChunkError::MissingCrlf),
            _ => Ok(State::Trailer),
        }
    }
}

fn expect(byte: u8, wanted: u8, next: State) -> Result<State, ChunkError> {
    if byte == wanted {
        Ok(next)
    } else {
        Err(ChunkError::MissingCrlf)
    }
}

/// Visible ASCII, space, tab and obs-text: what a chunk extension may hold.
fn is_field_byte(byte: u8) -> bool {
    byte == b'\t' || (b' '..=b'~').contains(&byte) || byte >= 0x80
}

#[cfg(test)]
mod tests;
