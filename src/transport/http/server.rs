//! The accept loop: admit or refuse each connection, spawn one task per admitted one, and
//! on `Stop` stop accepting and wait (bounded) for the open connections to finish.
//!
//! Why count connections in the loop rather than with glommio's `Gate`: the cap needs the
//! count at accept time, before the spawned task first runs, and a `Gate` whose `close`
//! is abandoned by a timeout panics when the last task leaves. One `Cell` counter and one
//! waker slot do both jobs. Refusals get their own small cap: answering `503` costs a task
//! (and a TLS handshake on HTTPS), and overload is exactly when that must stay bounded.
//!
//! Out of file descriptors (EMFILE/ENFILE), `accept` fails while the connection stays in
//! the kernel's backlog, so its client would wait unanswered and the loop would retry (and
//! log) in a tight cycle. Each listener therefore holds one spare descriptor (`/dev/null`):
//! at EMFILE it closes the spare, accepts one connection into the freed slot, answers it
//! `503 overloaded`, closes it and reopens the spare — one client at a time, each with an
//! answer instead of a hang. Between those the loop backs off (`ACCEPT_ERROR_BACKOFF_MS`)
//! and logs at most one line a second per shard, counting the lines left out.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use futures_lite::FutureExt;
use glommio::net::{TcpListener, TcpStream};
use glommio::timer::Timer;
use thiserror::Error;

use super::conn::{linger, race, serve_connection, Raced, Shared};
use super::date::DateCache;
use super::limits::{
    HttpLimits, LimitsError, ACCEPT_ERROR_BACKOFF_MS, ACCEPT_ERROR_LOG_INTERVAL_MS,
    FD_EXHAUSTED_LINGER_MS, LINGER_TIMEOUT_MS, REFUSALS_IN_FLIGHT_MAX,
};
use super::response::{write_response, Framing, Response};
use super::stats::HttpStats;
use super::stop::Stop;
use super::tls::TlsAcceptor;
use super::Service;
use crate::contract::{ErrorCode, ErrorDetails};

/// The message of the `503 overloaded` answer to a connection over `connections_max`.
pub const CONNECTION_LIMIT_MESSAGE: &str = "connection limit reached on this shard";
/// The message of the `503 overloaded` answer given with the spare descriptor at EMFILE.
pub const FD_LIMIT_MESSAGE: &str = "the router is out of file descriptors";
/// `Retry-After` of that answer.
const REFUSAL_RETRY_AFTER_S: u64 = 1;
/// Bytes read (and dropped) from a refused client while lingering.
const REFUSAL_SCRATCH_BYTES: usize = 1024;

/// Why `serve` returned an error.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The limits cannot be honoured; nothing was served.
    #[error("invalid HTTP limits: {0}")]
    Limits(#[from] LimitsError),
    /// Stopped, but some connections had not finished within `drain_timeout`; they end
    /// on their own timeouts.
    #[error("{open} connection(s) still open after the drain timeout")]
    DrainTimeout { open: usize },
}

/// Per-`serve` state beside what connections share.
struct Server<S> {
    shared: Shared<S>,
    tls: Option<TlsAcceptor>,
    /// Connections being served plus connections being refused.
    open: Cell<usize>,
    refusing: Cell<usize>,
    /// The task draining after `Stop`, woken when `open` reaches 0.
    drain_waker: RefCell<Option<Waker>>,
    /// Closed at EMFILE to accept (and refuse) one connection; `None` while in use.
    spare: RefCell<Option<OwnedFd>>,
    spare_in_use: Cell<bool>,
}

/// The pause after `serve` closes its listener: one executor turn (see there).
const LISTENER_RELEASE_WAIT: Duration = Duration::from_millis(1);

/// Serves HTTP/1.1 on `listener` until `stop` is triggered, then drains.
///
/// One task per connection; `service` answers each request. Returns once every
/// connection has ended, or after `limits.drain_timeout` with `ServeError::DrainTimeout`.
/// Runs on the calling shard's glommio executor; call it once per shard.
pub async fn serve<S: Service + 'static>(
    listener: TcpListener,
    service: Rc<S>,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
    tls: Option<TlsAcceptor>,
    stop: Stop,
) -> Result<(), ServeError> {
    limits.validate()?;
    let server = Rc::new(Server {
        shared: Shared {
            service,
            limits,
            stats,
            stop,
        },
        tls,
        open: Cell::new(0),
        refusing: Cell::new(0),
        drain_waker: RefCell::new(None),
        spare: RefCell::new(open_spare()),
        spare_in_use: Cell::new(false),
    });
    accept_loop(&listener, &server).await;
    drop(listener);
    // The accept that was in flight holds the listening socket in the kernel until its
    // cancellation is submitted, on the executor's next turn. Without that turn (a
    // shard with no connection left ends at once) the port kept accepting until the
    // kernel tore the shard's ring down, after the stop had returned. A timer makes
    // the turn happen before the drain.
    glommio::timer::sleep(LISTENER_RELEASE_WAIT).await;
    drain(&server).await
}

async fn accept_loop<S: Service + 'static>(listener: &TcpListener, server: &Rc<Server<S>>) {
    let stop = &server.shared.stop;
    while !stop.is_triggered() {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                stop.wait().await;
                None
            })
            .await;
        match accepted {
            None => return,
            Some(Ok(stream)) => {
                admit(stream, server);
                restore_spare(server);
                // A burst of connections must not keep the shard from serving them.
                glommio::yield_if_needed().await;
            }
            Some(Err(err)) => {
                let err = io::Error::from(err);
                log_accept_error(&err);
                let exhausted = matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                if !(exhausted && refuse_with_spare(listener, server).await) {
                    glommio::timer::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
                }
            }
        }
    }
}

/// At EMFILE: frees the spare descriptor, accepts one connection with it and answers it
/// `503`; the spare is reopened once that connection is closed. `false` when there was
/// no spare or no connection to accept.
async fn refuse_with_spare<S: Service + 'static>(
    listener: &TcpListener,
    server: &Rc<Server<S>>,
) -> bool {
    restore_spare(server);
    let Some(spare) = server.spare.borrow_mut().take() else {
        return false;
    };
    server.spare_in_use.set(true);
    drop(spare);
    let mut timer = Timer::new(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS));
    let stream = match race(listener.accept(), &mut timer, Some(&server.shared.stop)).await {
        Raced::Done(Ok(stream)) => stream,
        // Another shard took the freed slot, or nobody is waiting after all.
        _ => {
            server.spare_in_use.set(false);
            restore_spare(server);
            return false;
        }
    };
    HttpStats::add(&server.shared.stats.connections_refused);
    let guard = OpenGuard::new(server, true);
    glommio::spawn_local(async move {
        let linger_for = Duration::from_millis(FD_EXHAUSTED_LINGER_MS);
        refuse(stream, &guard, FD_LIMIT_MESSAGE, linger_for).await;
        guard.server.spare_in_use.set(false);
        restore_spare(&guard.server);
    })
    .detach();
    true
}

/// Reopens the spare descriptor if it is missing and not lent out (fails quietly at
/// EMFILE; tried again on the next accept).
fn restore_spare<S>(server: &Server<S>) {
    if server.spare_in_use.get() || server.spare.borrow().is_some() {
        return;
    }
    *server.spare.borrow_mut() = open_spare();
}

fn open_spare() -> Option<OwnedFd> {
    std::fs::File::open("/dev/null").ok().map(OwnedFd::from)
}

thread_local! {
    /// This shard's last accept-error line and the lines left out since.
    static ACCEPT_ERROR_LOG: Cell<(Option<Instant>, u64)> = const { Cell::new((None, 0)) };
}

/// Logs an accept error at most once per `ACCEPT_ERROR_LOG_INTERVAL_MS` on this shard.
fn log_accept_error(err: &io::Error) {
    ACCEPT_ERROR_LOG.with(|state| {
        let (last, left_out) = state.get();
        let now = Instant::now();
        let interval = Duration::from_millis(ACCEPT_ERROR_LOG_INTERVAL_MS);
        if last.is_some_and(|t| now.duration_since(t) < interval) {
            state.set((last, left_out + 1));
            return;
        }
        if left_out > 0 {
            log::warn!(
                "http accept failed: {err} (and {left_out} more like this since the last line)"
            );
        } else {
            log::warn!("http accept failed: {err}");
        }
        state.set((Some(now), 0));
    });
}

fn admit<S: Service + 'static>(stream: TcpStream, server: &Rc<Server<S>>) {
    // Responses are written in whole batches: Nagle would only delay them.
    if let Err(err) = stream.set_nodelay(true) {
        log::debug!("http TCP_NODELAY: {err}");
    }
    let stats = &server.shared.stats;
    if server.open.get() - server.refusing.get() >= server.shared.limits.connections_max {
        HttpStats::add(&stats.connections_refused);
        if server.refusing.get() < REFUSALS_IN_FLIGHT_MAX {
            let guard = OpenGuard::new(server, true);
            glommio::spawn_local(async move {
                let linger_for = Duration::from_millis(LINGER_TIMEOUT_MS);
                refuse(stream, &guard, CONNECTION_LIMIT_MESSAGE, linger_for).await;
            })
            .detach();
        }
        return;
    }
    HttpStats::add(&stats.connections_accepted);
    let guard = OpenGuard::new(server, false);
    glommio::spawn_local(connection(stream, guard)).detach();
}

async fn connection<S: Service>(stream: TcpStream, guard: OpenGuard<S>) {
    let server = &*guard.server;
    match &server.tls {
        None => serve_connection(stream, &server.shared).await,
        Some(tls) => {
            if let Some(stream) = handshake(tls, stream, &server.shared).await {
                serve_connection(stream, &server.shared).await;
            }
        }
    }
}

async fn handshake<S>(
    tls: &TlsAcceptor,
    stream: TcpStream,
    shared: &Shared<S>,
) -> Option<futures_rustls::server::TlsStream<TcpStream>> {
    let accept = tls.acceptor().accept(stream);
    let mut timer = Timer::new(shared.limits.read_timeout);
    match race(accept, &mut timer, Some(&shared.stop)).await {
        Raced::Done(Ok(stream)) => Some(stream),
        Raced::Done(Err(err)) => {
            log::debug!("tls handshake failed: {err}");
            HttpStats::add(&shared.stats.tls_handshake_failures);
            None
        }
        Raced::TimedOut => {
            log::debug!("tls handshake timed out");
            HttpStats::add(&shared.stats.tls_handshake_failures);
            None
        }
        // No request has begun, so a stop closes the connection as it closes an idle
        // one; finishing the handshake would only hold the drain for nothing.
        Raced::Stopped => None,
    }
}

/// Answers `503 overloaded` with `Retry-After: 1` and closes (the stream is dropped when
/// this returns).
async fn refuse<S>(stream: TcpStream, guard: &OpenGuard<S>, message: &str, linger_for: Duration) {
    let server = &*guard.server;
    match &server.tls {
        None => send_refusal(stream, &server.shared, message, linger_for).await,
        Some(tls) => {
            if let Some(stream) = handshake(tls, stream, &server.shared).await {
                send_refusal(stream, &server.shared, message, linger_for).await;
            }
        }
    }
}

async fn send_refusal<IO, S>(mut io: IO, shared: &Shared<S>, message: &str, linger_for: Duration)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut resp = Response::new();
    let details = ErrorDetails {
        retry_after_ms: Some(REFUSAL_RETRY_AFTER_S * 1000),
        ..ErrorDetails::default()
    };
    resp.error(ErrorCode::Overloaded, message, &details);
    resp.retry_after_s = Some(REFUSAL_RETRY_AFTER_S);
    let mut out = Vec::new();
    let mut date = DateCache::new();
    let framing = Framing {
        head_only: false,
        close: true,
        keep_alive_10: false,
        date: date.now(),
    };
    let status = write_response(&mut out, &resp, framing);
    let mut timer = Timer::new(shared.limits.write_timeout);
    let write = async {
        io.write_all(&out).await?;
        io.flush().await
    };
    if let Raced::Done(Ok(())) = race(write, &mut timer, None).await {
        shared.stats.count_response(status);
        let mut scratch = [0u8; REFUSAL_SCRATCH_BYTES];
        linger(&mut io, &mut scratch, &mut timer, linger_for).await;
    }
}

/// Waits until every connection has ended, at most `drain_timeout`.
async fn drain<S>(server: &Server<S>) -> Result<(), ServeError> {
    let all_closed = poll_fn(|cx| {
        if server.open.get() == 0 {
            return Poll::Ready(());
        }
        *server.drain_waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    });
    let mut timer = Timer::new(server.shared.limits.drain_timeout);
    match race(all_closed, &mut timer, None).await {
        Raced::Done(()) => Ok(()),
        Raced::TimedOut | Raced::Stopped => Err(ServeError::DrainTimeout {
            open: server.open.get(),
        }),
    }
}

/// Counts one connection (served or being refused) for as long as its task lives.
struct OpenGuard<S> {
    server: Rc<Server<S>>,
    refusal: bool,
}

impl<S> OpenGuard<S> {
    fn new(server: &Rc<Server<S>>, refusal: bool) -> Self {
        server.open.set(server.open.get() + 1);
        if refusal {
            server.refusing.set(server.refusing.get() + 1);
        } else {
            HttpStats::gauge_up(&server.shared.stats.connections_open);
        }
        OpenGuard {
            server: server.clone(),
            refusal,
        }
    }
}

impl<S> Drop for OpenGuard<S> {
    fn drop(&mut self) {
        let server = &self.server;
        server.open.set(server.open.get() - 1);
        if self.refusal {
            server.refusing.set(server.refusing.get() - 1);
        } else {
            HttpStats::gauge_down(&server.shared.stats.connections_open);
        }
        if server.open.get() == 0 {
            if let Some(waker) = server.drain_waker.borrow_mut().take() {
                waker.wake();
            }
        }
    }
}
