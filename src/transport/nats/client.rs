//! A shard's own NATS client: one connection per shard, driven by one task on the shard's
//! glommio executor, so NATS traffic never crosses a thread.
//!
//! Why not the `nats` crate: measured here, it holds writes for up to 5 ms unless flushed
//! (a flush is a PING/PONG round trip), sleeps up to 1 s before its first connect, runs its
//! own unpinned threads and can strand replies over TLS. `async-nats` needs tokio. This
//! client writes whatever a tick of the executor produced in one `write` (natural
//! batching, no timer), and reads, parses and dispatches without copying.
//!
//! Shape:
//! - publishes append to one outbound buffer bounded by `outbound_bytes_max`; a full buffer
//!   refuses the publish (`Overloaded`) at once, the caller sheds;
//! - subscriptions call a handler synchronously with a message borrowed from the read
//!   buffer; a handler that must wait (a handoff, an extension call) copies and spawns;
//! - request-reply goes through one wildcard inbox subscription per client, with at most
//!   `inflight_requests_max` requests and a timeout each;
//! - the connection is supervised: a lost connection is re-established with exponential
//!   backoff and jitter over the configured servers, subscriptions are replayed, and what
//!   was published meanwhile (up to the bound) is sent after them;
//! - a PING every `ping_interval`; `PINGS_OUTSTANDING_MAX` unanswered ones drop the
//!   connection (a silent server is found out in seconds, not at the TCP timeout).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_lite::{future, AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::Timer;
use rustls::pki_types::ServerName;
use thiserror::Error;

use super::options::{
    ClientOptions, ServerAddr, CONNECT_TIMEOUT_MS, PINGS_OUTSTANDING_MAX, RECONNECT_BACKOFF_MIN_MS,
};
use super::proto::{self, EncodeError, Msg, ProtoError, ServerInfo, ServerOp};
use super::resolve::{ResolveError, Resolver};
use super::stream::Stream;
// The engine's generator, for reconnect jitter and inbox names: a downward edge into the
// sans-IO core, which knows nothing of transports.
use shardline_core::decide::rng::Rng;

/// Read buffer a connection starts with; it grows for a large message up to
/// `max_payload` plus a control line, and shrinks back after it.
const READ_BUFFER_BYTES: usize = 64 << 10;
/// Operations handled per poll before the driver yields to the shard's other tasks.
const OPS_PER_POLL_MAX: usize = 256;
/// max_payload assumed before the first INFO (nats-server's default).
const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;

/// Why a publish was refused.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum PublishError {
    #[error("NATS outbound buffer full")]
    Overloaded,
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("NATS client closed")]
    Closed,
}

/// Why a request got no reply.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RequestError {
    #[error("no reply within {0} ms")]
    Timeout(u64),
    #[error("no responder is subscribed to {0}")]
    NoResponders(String),
    #[error("NATS is not connected")]
    NotConnected,
    #[error("too many NATS requests in flight")]
    Overloaded,
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Connection-level failures, logged by the supervisor.
#[derive(Debug, Error)]
enum ConnError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("connect timed out after {CONNECT_TIMEOUT_MS} ms")]
    Timeout,
    #[error("{0}")]
    Proto(#[from] ProtoError),
    #[error("server closed the connection")]
    Eof,
    #[error("server error: {0}")]
    Server(String),
    #[error("no PONG to {PINGS_OUTSTANDING_MAX} PINGs: connection is stale")]
    Stale,
    #[error("server requires TLS, but nats.tls_ca is not configured")]
    TlsRequired,
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
}

/// Counters of one client, shared with the metrics scrape (other threads read them).
#[derive(Debug, Default)]
pub struct ClientStats {
    /// 1 while connected and authenticated (the server answered our first PING).
    pub connected: AtomicU64,
    /// Connection attempts after the first, successful or not.
    pub reconnects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub msgs_in: AtomicU64,
    pub msgs_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Publishes refused because the outbound buffer was full.
    pub outbound_full: AtomicU64,
    pub requests_timed_out: AtomicU64,
}

/// A message handler. It runs inside the connection task: it must not block or await.
pub type Handler = Rc<dyn Fn(&Client, Msg<'_>)>;

/// An owned reply to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub headers: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        proto::HeaderBlock(self.headers.as_deref()?).get(name)
    }
}

enum SubKind {
    Handler(Handler),
    Inbox,
}

struct Sub {
    subject: Box<str>,
    queue: Option<Box<str>>,
    kind: SubKind,
}

struct PendingRequest {
    result: Option<Result<Reply, RequestError>>,
    waker: Option<Waker>,
}

struct State {
    out: Vec<u8>,
    /// The connection task, parked with nothing to write.
    out_waker: Option<Waker>,
    /// The supervisor, sleeping between connection attempts.
    sleep_waker: Option<Waker>,
    subs: Vec<Option<Sub>>,
    inbox_prefix: String,
    requests: HashMap<u64, PendingRequest>,
    next_token: u64,
    max_payload: usize,
    connected: bool,
    closed: bool,
    pings_out: u32,
    rng: Rng,
}

struct Inner {
    opts: ClientOptions,
    st: RefCell<State>,
    stats: std::sync::Arc<ClientStats>,
    task: RefCell<Option<glommio::task::JoinHandle<()>>>,
    /// Host names are looked up on its thread, never on the shard.
    resolver: Resolver,
}

/// A handle to a shard's NATS client; clones share the connection.
#[derive(Clone)]
pub struct Client(Rc<Inner>);

impl Client {
    /// Starts the client on the current glommio executor; it connects in the background.
    /// `seed` varies the inbox name and the reconnect jitter between shards.
    pub fn start(opts: ClientOptions, stats: std::sync::Arc<ClientStats>, seed: u64) -> Client {
        let mut rng = Rng::new(seed ^ 0x6e61_7473);
        let inbox_prefix = format!("_INBOX.{:016x}{:08x}.", rng.next_u64(), std::process::id());
        let out_cap = opts.outbound_bytes_max.min(READ_BUFFER_BYTES);
        let inbox = Sub {
            subject: format!("{inbox_prefix}*").into(),
            queue: None,
            kind: SubKind::Inbox,
        };
        let st = State {
            out: Vec::with_capacity(out_cap),
            out_waker: None,
            sleep_waker: None,
            subs: vec![Some(inbox)],
            inbox_prefix,
            requests: HashMap::new(),
            next_token: 1,
            max_payload: DEFAULT_MAX_PAYLOAD,
            connected: false,
            closed: false,
            pings_out: 0,
            rng,
        };
        let client = Client(Rc::new(Inner {
            opts,
            st: RefCell::new(st),
            stats,
            task: RefCell::new(None),
            resolver: Resolver::default(),
        }));
        let supervisor = glommio::spawn_local(supervise(client.clone())).detach();
        *client.0.task.borrow_mut() = Some(supervisor);
        client
    }

    pub fn options(&self) -> &ClientOptions {
        &self.0.opts
    }

    pub fn stats(&self) -> &ClientStats {
        &self.0.stats
    }

    pub fn is_connected(&self) -> bool {
        self.0.st.borrow().connected
    }

    /// Whether `close` was called: the client will not connect again.
    pub fn is_closed(&self) -> bool {
        self.0.st.borrow().closed
    }

    /// The server's `max_payload` (1 MiB until the first INFO).
    pub fn max_payload(&self) -> usize {
        self.0.st.borrow().max_payload
    }

    /// Publishes; buffered while disconnected, refused when the buffer is full.
    pub fn publish(
        &self,
        subject: &str,
        reply: Option<&str>,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<(), PublishError> {
        let mut st = self.0.st.borrow_mut();
        if st.closed {
            return Err(PublishError::Closed);
        }
        let estimate = subject.len() + reply.map_or(0, str::len) + payload.len() + 64;
        let headers_len: usize = headers.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
        if st.out.len() + estimate + headers_len > self.0.opts.outbound_bytes_max {
            self.0.stats.outbound_full.fetch_add(1, Relaxed);
            return Err(PublishError::Overloaded);
        }
        let was_empty = st.out.is_empty();
        let max = st.max_payload;
        proto::encode_pub(&mut st.out, subject, reply, headers, payload, max)?;
        self.0.stats.msgs_out.fetch_add(1, Relaxed);
        if was_empty {
            wake(&mut st.out_waker);
        }
        Ok(())
    }

    /// Subscribes `handler` to `subject` (in `queue`, when given), now and after every
    /// reconnect.
    pub fn subscribe(
        &self,
        subject: &str,
        queue: Option<&str>,
        handler: Handler,
    ) -> Result<u64, PublishError> {
        let mut st = self.0.st.borrow_mut();
        let sid = st.subs.len() as u64 + 1;
        let mut line = Vec::new();
        proto::encode_sub(&mut line, subject, queue, sid)?;
        st.subs.push(Some(Sub {
            subject: subject.into(),
            queue: queue.map(Into::into),
            kind: SubKind::Handler(handler),
        }));
        if st.connected {
            st.out.extend_from_slice(&line);
            wake(&mut st.out_waker);
        }
        Ok(sid)
    }

    /// Stops delivering `sid`'s messages, now and after reconnects.
    pub fn unsubscribe(&self, sid: u64) {
        let mut st = self.0.st.borrow_mut();
        let Some(slot) = st.subs.get_mut((sid as usize).wrapping_sub(1)) else {
            return;
        };
        if slot.take().is_some() && st.connected {
            proto::encode_unsub(&mut st.out, sid);
            wake(&mut st.out_waker);
        }
    }

    /// Sends a request and waits for its reply, at most `timeout`. Fails at once when
    /// disconnected or over the in-flight bound.
    pub async fn request(
        &self,
        subject: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Reply, RequestError> {
        let (token, reply_to) = {
            let mut st = self.0.st.borrow_mut();
            if !st.connected {
                return Err(RequestError::NotConnected);
            }
            if st.requests.len() >= self.0.opts.inflight_requests_max {
                return Err(RequestError::Overloaded);
            }
            let token = st.next_token;
            st.next_token += 1;
            let pending = PendingRequest {
                result: None,
                waker: None,
            };
            st.requests.insert(token, pending);
            (token, format!("{}{token}", st.inbox_prefix))
        };
        let guard = RequestGuard {
            client: self,
            token,
        };
        self.publish(subject, Some(&reply_to), headers, payload)?;
        let wait = poll_fn(|cx| {
            let mut st = self.0.st.borrow_mut();
            let pending = st.requests.get_mut(&token).expect("guarded");
            match pending.result.take() {
                Some(result) => Poll::Ready(result),
                None => {
                    pending.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        });
        let timed_out = async {
            Timer::new(timeout).await;
            Err(RequestError::Timeout(timeout.as_millis() as u64))
        };
        let result = match future::or(wait, timed_out).await {
            Err(RequestError::NoResponders(_)) => Err(RequestError::NoResponders(subject.into())),
            other => other,
        };
        if matches!(result, Err(RequestError::Timeout(_))) {
            self.0.stats.requests_timed_out.fetch_add(1, Relaxed);
        }
        drop(guard);
        result
    }

    /// Sends what is buffered (bounded wait), closes the connection and stops reconnecting.
    pub async fn close(&self) {
        {
            let mut st = self.0.st.borrow_mut();
            st.closed = true;
            wake(&mut st.out_waker);
            wake(&mut st.sleep_waker);
            // Handlers may hold clients: dropping them breaks the reference cycles.
            st.subs.clear();
        }
        let task = self.0.task.borrow_mut().take();
        if let Some(task) = task {
            let deadline = Timer::new(Duration::from_millis(CONNECT_TIMEOUT_MS));
            future::or(async { task.await.unwrap_or(()) }, async {
                deadline.await;
            })
            .await;
        }
    }
}

/// Removes a request's slot however its future ends (reply, timeout or drop).
struct RequestGuard<'c> {
    client: &'c Client,
    token: u64,
}

impl Drop for RequestGuard<'_> {
    fn drop(&mut self) {
        self.client.0.st.borrow_mut().requests.remove(&self.token);
    }
}

fn wake(slot: &mut Option<Waker>) {
    if let Some(w) = slot.take() {
        w.wake();
    }
}

/// Connects, serves, and reconnects with backoff until the client is closed.
async fn supervise(client: Client) {
    let inner = &client.0;
    let servers = inner.opts.servers.clone();
    let mut attempt: u32 = 0;
    let mut first = true;
    for server in servers.iter().cycle() {
        if inner.st.borrow().closed {
            break;
        }
        // Every try after the first counts, failed or not: during an outage the counter
        // rises with each backoff step, so a dashboard sees the router trying (and how
        // hard) rather than a flat line until the server is back.
        if !first {
            inner.stats.reconnects.fetch_add(1, Relaxed);
        }
        first = false;
        match connect(&client, server).await {
            Ok((mut stream, rbuf)) => {
                let ended = Connection::new(&client, rbuf).run(&mut stream).await;
                // Refusals after the TLS handshake (TLS 1.3 client certificates, auth)
                // end a connection the server never confirmed with a PONG.
                let confirmed = client.is_connected();
                client.set_connected(false);
                let _ = stream.close().await;
                match ended {
                    Ok(()) => break,
                    Err(e) if confirmed => {
                        attempt = 0;
                        log::warn!(
                            "nats: connection to {}:{} lost: {e}",
                            server.host,
                            server.port
                        )
                    }
                    Err(e) => {
                        inner.stats.connect_failures.fetch_add(1, Relaxed);
                        log::warn!(
                            "nats: {}:{} refused the connection: {e}",
                            server.host,
                            server.port
                        )
                    }
                }
            }
            Err(e) => {
                inner.stats.connect_failures.fetch_add(1, Relaxed);
                log::warn!(
                    "nats: cannot connect to {}:{}: {e}",
                    server.host,
                    server.port
                );
            }
        }
        attempt = attempt.saturating_add(1);
        client.sleep(client.backoff(attempt)).await;
    }
    client.set_connected(false);
}

impl Client {
    fn set_connected(&self, up: bool) {
        let mut st = self.0.st.borrow_mut();
        st.connected = up;
        self.0.stats.connected.store(u64::from(up), Relaxed);
        if !up {
            // Requests in flight can get no reply on a new connection (new inbox SUB).
            for pending in st.requests.values_mut() {
                pending.result = Some(Err(RequestError::NotConnected));
                if let Some(w) = pending.waker.take() {
                    w.wake();
                }
            }
        }
    }

    /// Exponential from `RECONNECT_BACKOFF_MIN_MS`, capped, with ±25 % jitter so a fleet
    /// of shards does not reconnect in lockstep.
    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self.0.opts.reconnect_backoff_max.as_millis() as u64;
        let base = RECONNECT_BACKOFF_MIN_MS
            .saturating_mul(1u64 << attempt.min(20))
            .min(cap)
            .max(1);
        let jitter = self.0.st.borrow_mut().rng.below(base / 2 + 1);
        Duration::from_millis(base - base / 4 + jitter)
    }

    /// Sleeps, waking early when the client is closed.
    async fn sleep(&self, delay: Duration) {
        let closed = poll_fn(|cx| {
            let mut st = self.0.st.borrow_mut();
            if st.closed {
                return Poll::Ready(());
            }
            st.sleep_waker = Some(cx.waker().clone());
            Poll::Pending
        });
        future::or(
            async {
                Timer::new(delay).await;
            },
            closed,
        )
        .await;
    }

    /// CONNECT, every subscription, then PING: the server's PONG confirms all of them.
    fn handshake(&self, server: &ServerAddr, tls: bool) -> Vec<u8> {
        let opts = &self.0.opts;
        let info = proto::ConnectInfo {
            name: &opts.name,
            token: server.token.as_deref().or(opts.token.as_deref()),
            user: server.user.as_deref().or(opts.user.as_deref()),
            pass: server.pass.as_deref().or(opts.password.as_deref()),
            tls_required: tls,
        };
        let mut out = Vec::with_capacity(1024);
        proto::encode_connect(&mut out, &info);
        let st = self.0.st.borrow();
        for (i, sub) in st.subs.iter().enumerate() {
            if let Some(sub) = sub {
                let queue = sub.queue.as_deref();
                proto::encode_sub(&mut out, &sub.subject, queue, i as u64 + 1)
                    .expect("validated when subscribed");
            }
        }
        out.extend_from_slice(proto::PING);
        out
    }
}

async fn connect(client: &Client, server: &ServerAddr) -> Result<(Stream, ReadBuf), ConnError> {
    let timeout = async {
        Timer::new(Duration::from_millis(CONNECT_TIMEOUT_MS)).await;
        Err(ConnError::Timeout)
    };
    future::or(open(client, server), timeout).await
}

async fn open(client: &Client, server: &ServerAddr) -> Result<(Stream, ReadBuf), ConnError> {
    // Inside the connect timeout: a hanging DNS server costs this attempt, not the shard.
    let addrs = client.0.resolver.resolve(&server.host, server.port).await?;
    let tcp = connect_first(&addrs).await?;
    tcp.set_nodelay(true).map_err(io::Error::from)?;
    let mut stream = Stream::Plain(tcp);
    let mut rbuf = ReadBuf::new();
    let info = loop {
        let max = client.max_payload();
        if let Some((op, used)) = proto::parse(rbuf.data(), max)? {
            let ServerOp::Info(json) = op else {
                return Err(ConnError::Server("expected INFO first".into()));
            };
            let info = ServerInfo::parse(json)?;
            rbuf.consume(used);
            break info;
        }
        if rbuf.read_from(&mut stream).await? == 0 {
            return Err(ConnError::Eof);
        }
    };
    {
        let mut st = client.0.st.borrow_mut();
        let max = if info.max_payload == 0 {
            DEFAULT_MAX_PAYLOAD
        } else {
            info.max_payload
        };
        st.max_payload = max.min(proto::PAYLOAD_BYTES_MAX);
    }
    let opts = &client.0.opts;
    let tls = server.tls || opts.tls.is_some() || info.tls_required;
    if tls {
        let Stream::Plain(tcp) = stream else {
            unreachable!()
        };
        let config = opts.tls.clone().ok_or(ConnError::TlsRequired)?;
        let name = match &opts.tls_server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(server.host.clone())
                .map_err(|_| ConnError::ServerName(server.host.clone()))?,
        };
        let connector = futures_rustls::TlsConnector::from(config);
        stream = Stream::Tls(Box::new(connector.connect(name, tcp).await?));
    }
    let hello = client.handshake(server, tls);
    stream.write_all(&hello).await?;
    stream.flush().await?;
    Ok((stream, rbuf))
}

/// The first of `addrs` that accepts; the last error when none does.
async fn connect_first(addrs: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for &addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = e.into(),
        }
    }
    Err(last)
}

/// The bytes read and not yet parsed.
struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    fn new() -> ReadBuf {
        ReadBuf {
            buf: vec![0; READ_BUFFER_BYTES],
            start: 0,
            end: 0,
        }
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room to read into: compacts, and grows when a message needs more.
    fn space(&mut self, needed: usize) -> &mut [u8] {
        if self.start > 0 && self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let grown = (self.buf.len() * 2).min(needed.max(READ_BUFFER_BYTES));
            self.buf.resize(grown.max(self.buf.len() + 1), 0);
        } else if self.start == self.end && self.buf.len() > READ_BUFFER_BYTES {
            self.buf.truncate(READ_BUFFER_BYTES);
            self.buf.shrink_to(READ_BUFFER_BYTES);
            (self.start, self.end) = (0, 0);
        }
        &mut self.buf[self.end..]
    }

    fn poll_read_from(
        &mut self,
        stream: &mut Stream,
        cx: &mut Context<'_>,
        limit: usize,
    ) -> Poll<io::Result<usize>> {
        let space = self.space(limit);
        let n = std::task::ready!(Pin::new(stream).poll_read(cx, space))?;
        self.end += n;
        Poll::Ready(Ok(n))
    }

    async fn read_from(&mut self, stream: &mut Stream) -> io::Result<usize> {
        let limit = proto::INFO_LINE_BYTES_MAX + proto::CONTROL_LINE_BYTES_MAX;
        poll_fn(|cx| self.poll_read_from(stream, cx, limit)).await
    }
}

/// One established connection: reads and dispatches, writes the outbound buffer, pings.
struct Connection<'c> {
    client: &'c Client,
    rbuf: ReadBuf,
    wbuf: Vec<u8>,
    wpos: usize,
    ping: Pin<Box<Timer>>,
}

impl<'c> Connection<'c> {
    fn new(client: &'c Client, rbuf: ReadBuf) -> Self {
        let interval = client.0.opts.ping_interval;
        Connection {
            client,
            rbuf,
            wbuf: Vec::with_capacity(READ_BUFFER_BYTES),
            wpos: 0,
            ping: Box::pin(Timer::new(interval)),
        }
    }

    /// Until the connection fails (`Err`) or the client is closed and flushed (`Ok`).
    async fn run(mut self, stream: &mut Stream) -> Result<(), ConnError> {
        self.client.0.st.borrow_mut().pings_out = 1; // the handshake's PING
        poll_fn(|cx| self.poll(stream, cx)).await
    }

    fn poll(&mut self, stream: &mut Stream, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        for _ in 0..OPS_PER_POLL_MAX {
            let wrote = self.poll_write(stream, cx)?;
            if wrote.is_pending() && self.client.0.st.borrow().closed && self.idle() {
                return Poll::Ready(Ok(()));
            }
            let read = self.poll_read(stream, cx)?;
            // A PING just queued must be written before parking: nothing else wakes us.
            let pinged = self.poll_ping(cx)?;
            if wrote.is_pending() && read.is_pending() && !pinged {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn idle(&self) -> bool {
        self.wpos == self.wbuf.len() && self.client.0.st.borrow().out.is_empty()
    }

    /// Ready(()) when it made progress; Pending when there is nothing (more) to write now.
    fn poll_write(
        &mut self,
        stream: &mut Stream,
        cx: &mut Context<'_>,
    ) -> Result<Poll<()>, ConnError> {
        if self.wpos == self.wbuf.len() {
            let mut st = self.client.0.st.borrow_mut();
            if st.out.is_empty() {
                st.out_waker = Some(cx.waker().clone());
                drop(st);
                // Push any TLS records still buffered in the session.
                return match Pin::new(stream).poll_flush(cx) {
                    Poll::Ready(r) => r.map(|()| Poll::Pending).map_err(Into::into),
                    Poll::Pending => Ok(Poll::Pending),
                };
            }
            self.wbuf.clear();
            self.wpos = 0;
            std::mem::swap(&mut self.wbuf, &mut st.out);
        }
        match Pin::new(stream).poll_write(cx, &self.wbuf[self.wpos..]) {
            Poll::Ready(Ok(0)) => Err(ConnError::Eof),
            Poll::Ready(Ok(n)) => {
                self.wpos += n;
                self.client.0.stats.bytes_out.fetch_add(n as u64, Relaxed);
                Ok(Poll::Ready(()))
            }
            Poll::Ready(Err(e)) => Err(e.into()),
            Poll::Pending => Ok(Poll::Pending),
        }
    }

    fn poll_read(
        &mut self,
        stream: &mut Stream,
        cx: &mut Context<'_>,
    ) -> Result<Poll<()>, ConnError> {
        // An INFO (a cluster change) may come at any time and be longer than a payload.
        let limit = self.client.max_payload().max(proto::INFO_LINE_BYTES_MAX)
            + proto::CONTROL_LINE_BYTES_MAX;
        match self.rbuf.poll_read_from(stream, cx, limit) {
            Poll::Ready(Ok(0)) => Err(ConnError::Eof),
            Poll::Ready(Ok(n)) => {
                self.client.0.stats.bytes_in.fetch_add(n as u64, Relaxed);
                self.dispatch_all()?;
                Ok(Poll::Ready(()))
            }
            Poll::Ready(Err(e)) => Err(e.into()),
            Poll::Pending => Ok(Poll::Pending),
        }
    }

    /// Queues a PING when the interval has passed; `true` when it did.
    fn poll_ping(&mut self, cx: &mut Context<'_>) -> Result<bool, ConnError> {
        if self.ping.as_mut().poll(cx).is_pending() {
            return Ok(false);
        }
        let mut st = self.client.0.st.borrow_mut();
        if st.pings_out >= PINGS_OUTSTANDING_MAX {
            return Err(ConnError::Stale);
        }
        st.pings_out += 1;
        st.out.extend_from_slice(proto::PING);
        drop(st);
        self.ping = Box::pin(Timer::new(self.client.0.opts.ping_interval));
        let _ = self.ping.as_mut().poll(cx);
        Ok(true)
    }

    fn dispatch_all(&mut self) -> Result<(), ConnError> {
        loop {
            let max = self.client.max_payload();
            let Some((op, used)) = proto::parse(self.rbuf.data(), max)? else {
                return Ok(());
            };
            let outcome = dispatch(self.client, op);
            self.rbuf.consume(used);
            outcome?;
        }
    }
}

fn dispatch(client: &Client, op: ServerOp<'_>) -> Result<(), ConnError> {
    let inner = &client.0;
    match op {
        ServerOp::Msg(msg) => deliver(client, msg),
        ServerOp::Ping => {
            let mut st = inner.st.borrow_mut();
            st.out.extend_from_slice(proto::PONG);
            wake(&mut st.out_waker);
        }
        ServerOp::Pong => {
            let first = {
                let mut st = inner.st.borrow_mut();
                st.pings_out = st.pings_out.saturating_sub(1);
                !st.connected
            };
            if first {
                client.set_connected(true);
                log::info!("nats: connected");
            }
        }
        ServerOp::Info(json) => {
            if let Ok(info) = ServerInfo::parse(json) {
                if info.max_payload > 0 {
                    inner.st.borrow_mut().max_payload =
                        info.max_payload.min(proto::PAYLOAD_BYTES_MAX);
                }
            }
        }
        ServerOp::Ok => {}
        ServerOp::Err(text) => {
            let fatal = text.to_ascii_lowercase();
            if fatal.contains("authorization") || fatal.contains("stale") {
                return Err(ConnError::Server(text.to_owned()));
            }
            log::warn!("nats: server error: {text}");
        }
    }
    Ok(())
}

fn deliver(client: &Client, msg: Msg<'_>) {
    let inner = &client.0;
    inner.stats.msgs_in.fetch_add(1, Relaxed);
    let handler = {
        let mut st = inner.st.borrow_mut();
        let Some(Some(sub)) = st.subs.get((msg.sid as usize).wrapping_sub(1)) else {
            return; // unsubscribed meanwhile
        };
        match &sub.kind {
            SubKind::Handler(h) => h.clone(),
            SubKind::Inbox => {
                complete_request(&mut st, &msg);
                return;
            }
        }
    };
    handler(client, msg);
}

fn complete_request(st: &mut State, msg: &Msg<'_>) {
    let token = msg
        .subject
        .strip_prefix(st.inbox_prefix.as_str())
        .and_then(|t| t.parse::<u64>().ok());
    let Some(pending) = token.and_then(|t| st.requests.get_mut(&t)) else {
        return; // a late reply to a request that timed out
    };
    let result = if msg.headers.and_then(|h| h.status()) == Some(503) {
        Err(RequestError::NoResponders(String::new()))
    } else {
        Ok(Reply {
            headers: msg.headers.map(|h| h.0.to_vec()),
            payload: msg.payload.to_vec(),
        })
    };
    pending.result = Some(result);
    if let Some(w) = pending.waker.take() {
        w.wake();
    }
}
