//! One connection: read, answer every complete request buffered, write the batch, repeat.
//!
//! Generic over the stream (`AsyncRead + AsyncWrite + Unpin`), so plain TCP and TLS share
//! it. Everything a connection needs is allocated when it opens and reused for each of its
//! requests: the read buffer (4 KiB, doubling up to head + body limits, given back after
//! an unusually large request), the write buffer, the `Response`, the chunked-body buffer,
//! one timer and the `Date` cache.
//!
//! Time limits use one glommio `Timer`, re-armed per phase rather than created per read:
//! `idle_timeout` while waiting for a request's first byte (a `Stop` also ends the wait),
//! `read_timeout` from that byte until the request is complete (the deadline does not move
//! as bytes trickle in), `write_timeout` per batch of responses.
//!
//! A connection ends after a response that says `Connection: close` (the client asked,
//! the shard is stopping, or this layer refused a request), on end of stream, on an I/O
//! error or on a timeout. After an answer, it closes its sending side and reads what the
//! client still sends for a short, bounded time ("lingering close"): closing a socket with
//! unread input makes the kernel send a reset, which can destroy the answer in flight.

use std::fmt::Write as _;
use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::timer::Timer;

use super::chunked::ChunkedDecoder;
use super::date::DateCache;
use super::error::RequestError;
use super::limits::{
    HttpLimits, BUFFER_BYTES_RETAINED_MAX, HEADERS_CEILING_MAX, LINGER_BYTES_MAX,
    LINGER_TIMEOUT_MS, READ_BUFFER_BYTES_INITIAL, WRITE_BATCH_BYTES_MAX,
};
use super::parse::{parse_request, Parsed};
use super::request::Method;
use super::response::{write_response, Framing, Response, CONTINUE};
use super::stats::HttpStats;
use super::stop::Stop;
use super::Service;
use crate::contract::ErrorDetails;

/// What every connection of one `serve` call shares.
pub(crate) struct Shared<S> {
    pub service: Rc<S>,
    pub limits: HttpLimits,
    pub stats: Arc<HttpStats>,
    pub stop: Stop,
}

/// How a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// A final answer was written: close the sending side and linger.
    Linger,
    /// Nothing to say (end of stream, idle, stop, I/O error, write timeout): just close.
    Drop,
}

/// What to do after answering the buffered requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Read,
    /// The batch is full: write it, then answer the rest without reading.
    Flush,
    /// The last response said `Connection: close`: write it, then end.
    Close,
}

/// Serves one connection until it ends.
pub(crate) async fn serve_connection<IO, S>(io: IO, shared: &Shared<S>)
where
    IO: AsyncRead + AsyncWrite + Unpin,
    S: Service,
{
    let mut conn = Conn::new(io, shared);
    if conn.drive().await == End::Linger {
        let Conn {
            io, rbuf, timer, ..
        } = &mut conn;
        rbuf.clear();
        let linger_for = Duration::from_millis(LINGER_TIMEOUT_MS);
        linger(io, rbuf.spare_mut(), timer, linger_for).await;
    }
}

struct Conn<'s, IO, S> {
    io: IO,
    shared: &'s Shared<S>,
    rbuf: ReadBuf,
    wbuf: Vec<u8>,
    resp: Response,
    /// Decoded chunked body of the request being read.
    body: Vec<u8>,
    decoder: ChunkedDecoder,
    /// `100 Continue` was sent for the request being read.
    continue_sent: bool,
    /// When the request being read must be complete.
    deadline: Option<Instant>,
    timer: Timer,
    date: DateCache,
    /// Error messages are rendered here (capacity kept).
    message: String,
}

impl<'s, IO, S> Conn<'s, IO, S>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    S: Service,
{
    fn new(io: IO, shared: &'s Shared<S>) -> Self {
        Conn {
            io,
            shared,
            rbuf: ReadBuf::new(shared.limits.read_buffer_bytes_max()),
            wbuf: Vec::with_capacity(READ_BUFFER_BYTES_INITIAL),
            resp: Response::new(),
            body: Vec::new(),
            decoder: ChunkedDecoder::default(),
            continue_sent: false,
            deadline: None,
            timer: Timer::new(shared.limits.idle_timeout),
            date: DateCache::new(),
            message: String::new(),
        }
    }

    async fn drive(&mut self) -> End {
        loop {
            let next = self.answer_buffered().await;
            if !self.wbuf.is_empty() {
                if let Err(end) = self.flush().await {
                    return end;
                }
            }
            match next {
                Next::Read => {}
                Next::Flush => continue,
                Next::Close => return End::Linger,
            }
            if let Err(end) = self.read_more().await {
                return end;
            }
        }
    }

    /// Answers the complete requests at the front of the read buffer, in order, appending
    /// the responses to the write buffer.
    async fn answer_buffered(&mut self) -> Next {
        let shared = self.shared;
        let limits = &shared.limits;
        let mut answered = 0;
        while !self.rbuf.is_empty() {
            if answered == limits.pipeline_max || self.wbuf.len() >= WRITE_BATCH_BYTES_MAX {
                return Next::Flush;
            }
            let mut storage = [const { MaybeUninit::uninit() }; HEADERS_CEILING_MAX];
            let headers = &mut storage[..limits.headers_max];
            let pending = self.rbuf.pending();
            let parsed = parse_request(pending, headers, limits, &mut self.decoder, &mut self.body);
            let (request, len) = match parsed {
                Ok(Parsed::Complete { request, len }) => (request, len),
                Ok(Parsed::Partial { expects_continue }) => {
                    if expects_continue && !self.continue_sent {
                        self.wbuf.extend_from_slice(CONTINUE);
                        self.continue_sent = true;
                    }
                    return Next::Read;
                }
                Err(err) => {
                    self.write_error(err);
                    return Next::Close;
                }
            };
            HttpStats::add(&shared.stats.requests);
            self.resp.clear();
            shared.service.call(&request, &mut self.resp).await;
            // Checked after the call: a stop during a slow call still closes.
            let close = !request.keep_alive || shared.stop.is_triggered();
            let framing = Framing {
                head_only: request.method == Method::Head,
                close,
                keep_alive_10: request.minor_version == 0,
                date: self.date.now(),
            };
            let status = write_response(&mut self.wbuf, &self.resp, framing);
            shared.stats.count_response(status);
            self.rbuf.consume(len);
            self.next_request();
            answered += 1;
            if close {
                return Next::Close;
            }
        }
        Next::Read
    }

    /// Forgets the per-request state once a request is answered: the next request starts
    /// from an empty body, whatever the size of this one (a decoded chunked body left here
    /// would be read as the start of the next request's body).
    fn next_request(&mut self) {
        self.decoder.reset();
        self.continue_sent = false;
        self.deadline = None;
        self.body.clear();
        trim(&mut self.body);
        trim(&mut self.resp.body);
    }

    /// Appends this layer's error answer (contract error body, `Connection: close`).
    fn write_error(&mut self, err: RequestError) {
        let stats = &self.shared.stats;
        if !matches!(err, RequestError::ReadTimeout { .. }) {
            HttpStats::add(&stats.bad_requests);
        }
        self.message.clear();
        // Writing into a String cannot fail.
        let _ = write!(self.message, "{err}");
        let details = ErrorDetails::default();
        let (status, code) = (err.status(), err.code());
        self.resp.clear();
        self.resp
            .error_with_status(status, code, &self.message, &details);
        let framing = Framing {
            head_only: false,
            close: true,
            keep_alive_10: false,
            date: self.date.now(),
        };
        stats.count_response(write_response(&mut self.wbuf, &self.resp, framing));
    }

    /// Writes the batch in one write (bounded by `write_timeout`).
    async fn flush(&mut self) -> Result<(), End> {
        self.timer.reset(self.shared.limits.write_timeout);
        let write = write_all(&mut self.io, &self.wbuf);
        match race(write, &mut self.timer, None).await {
            Raced::Done(Ok(())) => {
                self.wbuf.clear();
                trim(&mut self.wbuf);
                Ok(())
            }
            Raced::Done(Err(_)) | Raced::Stopped => Err(End::Drop),
            Raced::TimedOut => {
                HttpStats::add(&self.shared.stats.timeouts_closed);
                Err(End::Drop)
            }
        }
    }

    /// Reads more bytes, under the idle or the request deadline.
    async fn read_more(&mut self) -> Result<(), End> {
        let shared = self.shared;
        let limits = &shared.limits;
        let idle = self.rbuf.is_empty();
        let now = Instant::now();
        if idle {
            self.timer.reset(limits.idle_timeout);
        } else {
            let deadline = *self.deadline.get_or_insert(now + limits.read_timeout);
            self.timer.reset(deadline.saturating_duration_since(now));
        }
        if !self.rbuf.make_room() {
            let max = limits.body_bytes_max;
            return Err(self.refuse(RequestError::BodyTooLarge { max }).await);
        }
        // A stop closes idle connections; a request already begun is still read.
        let stop = idle.then_some(&shared.stop);
        if stop.is_some_and(Stop::is_triggered) {
            return Err(End::Drop);
        }
        let read = self.io.read(self.rbuf.spare_mut());
        match race(read, &mut self.timer, stop).await {
            Raced::Done(Ok(0)) | Raced::Done(Err(_)) | Raced::Stopped => Err(End::Drop),
            Raced::Done(Ok(n)) => {
                self.rbuf.filled(n);
                Ok(())
            }
            Raced::TimedOut => {
                HttpStats::add(&shared.stats.timeouts_closed);
                if idle {
                    return Err(End::Drop);
                }
                let ms = limits.read_timeout.as_millis();
                Err(self.refuse(RequestError::ReadTimeout { ms }).await)
            }
        }
    }

    async fn refuse(&mut self, err: RequestError) -> End {
        self.write_error(err);
        match self.flush().await {
            Ok(()) => End::Linger,
            Err(end) => end,
        }
    }
}

/// After a final answer: close the sending side, then discard what the client still sends
/// (at most `LINGER_BYTES_MAX`, for at most `linger_for`, `LINGER_TIMEOUT_MS` for a
/// connection) until it closes too.
pub(crate) async fn linger<IO>(
    io: &mut IO,
    scratch: &mut [u8],
    timer: &mut Timer,
    linger_for: Duration,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    timer.reset(linger_for);
    if !matches!(race(io.close(), timer, None).await, Raced::Done(Ok(()))) {
        return;
    }
    let mut discarded = 0;
    while discarded < LINGER_BYTES_MAX {
        match race(io.read(scratch), timer, None).await {
            Raced::Done(Ok(n)) if n > 0 => discarded += n,
            _ => return,
        }
    }
}

async fn write_all<IO: AsyncWrite + Unpin>(io: &mut IO, bytes: &[u8]) -> io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

/// Gives a buffer that grew for one large request back to the allocator.
fn trim(buffer: &mut Vec<u8>) {
    if buffer.capacity() > BUFFER_BYTES_RETAINED_MAX {
        buffer.clear();
        buffer.shrink_to(READ_BUFFER_BYTES_INITIAL);
    }
}

/// The outcome of `race`.
pub(crate) enum Raced<T> {
    Done(T),
    TimedOut,
    Stopped,
}

/// Runs `fut` until it completes, `timer` fires, or `stop` (if given) is triggered.
pub(crate) async fn race<F: Future>(
    fut: F,
    timer: &mut Timer,
    stop: Option<&Stop>,
) -> Raced<F::Output> {
    let mut fut = pin!(fut);
    let mut stopped = pin!(stop.map(Stop::wait));
    poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Raced::Done(out));
        }
        if Pin::new(&mut *timer).poll(cx).is_ready() {
            return Poll::Ready(Raced::TimedOut);
        }
        match stopped.as_mut().as_pin_mut().map(|wait| wait.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Raced::Stopped),
            _ => Poll::Pending,
        }
    })
    .await
}

/// The connection's read buffer: `data[start..end]` is received and not yet consumed.
struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
    /// The size it may grow to: one full head plus one full body.
    len_max: usize,
}

impl ReadBuf {
    fn new(len_max: usize) -> Self {
        debug_assert!(len_max >= READ_BUFFER_BYTES_INITIAL);
        ReadBuf {
            data: vec![0; READ_BUFFER_BYTES_INITIAL],
            start: 0,
            end: 0,
            len_max,
        }
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        assert!(
            n <= self.end - self.start,
            "consumed more than was buffered"
        );
        self.start += n;
        if self.start == self.end {
            self.clear();
        }
    }

    /// Drops all buffered bytes; a buffer grown for one large request shrinks back.
    fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
        if self.data.len() > BUFFER_BYTES_RETAINED_MAX {
            self.data = vec![0; READ_BUFFER_BYTES_INITIAL];
        }
    }

    /// Makes room at the end (moving the pending bytes to the front, or growing);
    /// `false` when the buffer is full at its ceiling.
    fn make_room(&mut self) -> bool {
        let len = self.data.len();
        if self.start > 0 && (self.end == len || self.start >= len / 2) {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end < len {
            return true;
        }
        if len >= self.len_max {
            return false;
        }
        self.data.resize((len * 2).min(self.len_max), 0);
        true
    }

    fn spare_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.end..]
    }

    fn filled(&mut self, n: usize) {
        self.end += n;
        assert!(self.end <= self.data.len(), "read past the buffer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_buffer_compacts_then_grows_to_its_ceiling() {
        let mut buf = ReadBuf::new(READ_BUFFER_BYTES_INITIAL * 3);
        let n = buf.spare_mut().len();
        buf.filled(n);
        buf.consume(n - 10);
        assert!(buf.make_room());
        assert_eq!((buf.start, buf.end), (0, 10), "compacted");
        let n = buf.spare_mut().len();
        buf.filled(n);
        assert!(buf.make_room());
        assert_eq!(buf.data.len(), READ_BUFFER_BYTES_INITIAL * 2);
        let n = buf.spare_mut().len();
        buf.filled(n);
        assert!(buf.make_room());
        assert_eq!(buf.data.len(), READ_BUFFER_BYTES_INITIAL * 3, "capped");
        let n = buf.spare_mut().len();
        buf.filled(n);
        assert!(!buf.make_room(), "full at the ceiling");
        let pending = buf.pending().len();
        buf.consume(pending);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_large_buffer_is_given_back_once_empty() {
        let mut buf = ReadBuf::new(BUFFER_BYTES_RETAINED_MAX * 4);
        while buf.data.len() <= BUFFER_BYTES_RETAINED_MAX {
            let n = buf.spare_mut().len();
            buf.filled(n);
            assert!(buf.make_room());
        }
        let pending = buf.pending().len();
        buf.consume(pending);
        assert_eq!(buf.data.len(), READ_BUFFER_BYTES_INITIAL);
    }
}
