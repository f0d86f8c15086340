//! The HTTP/1.1 server layer: parse requests, hand them to a `Service`, write responses.
//!
//! Generic on purpose: it knows nothing about routing. A shard binds the shared port
//! (`bind`, SO_REUSEPORT, so every shard accepts on it and the kernel spreads connections)
//! and runs `serve` on its own glommio executor; each connection is one task on that
//! executor, and a request never leaves the shard that read it unless the `Service` hands
//! it on.
//!
//! What the layer guarantees:
//! - keep-alive (HTTP/1.1 by default, `Connection: close` honoured, HTTP/1.0 closes
//!   unless it asks for keep-alive) and pipelining: every complete request already
//!   buffered is answered, in order, and the batch is written with one write;
//! - `Content-Length` and `chunked` bodies (decoded), `Expect: 100-continue`;
//! - every limit in `HttpLimits`, every buffer bounded; requests this layer refuses get
//!   the contract's JSON error body (`invalid_request` 400/431/501, `payload_too_large`
//!   413, 408 on a read timeout) and the connection is closed, since its framing can no
//!   longer be trusted;
//! - over `connections_max`, a new connection gets `503 overloaded` with `Retry-After`;
//! - on `Stop`: no new connection; requests already received are answered with
//!   `Connection: close`; `serve` returns when all connections ended (bounded);
//! - HTTPS and mTLS through rustls, on the same connection code.
//!
//! Why hand-written over hyper: hyper's executor and I/O traits assume tokio; on glommio
//! it would need an adapter layer per connection, and its per-request allocations
//! (`http::Request`, header maps) are what the thread-per-core design is meant to avoid.
//! httparse (hyper's own parser) does the byte-level parsing here.

pub mod bare;
mod chunked;
mod conn;
mod date;
mod error;
mod limits;
mod parse;
mod request;
mod response;
mod server;
mod stats;
mod stop;
mod tls;

use std::future::Future;
use std::io;
use std::net::SocketAddr;

pub use chunked::{ChunkError, ChunkedDecoder};
// Public so that the chunked decoder can be fuzzed on its own (the `fuzz/` harness).
#[doc(hidden)]
pub use chunked::{ChunkLimits, Progress};
pub use error::RequestError;
pub use limits::*;
// Public so that the request framing can be measured and fuzzed without a socket.
pub use parse::{parse_request, Parsed};
pub use request::{Header, Method, Request};
pub(crate) use response::push_decimal;
pub use response::{reason_phrase, ExtraHeaders, HeaderRejected, Response, CONTENT_TYPE_JSON};
pub use server::{serve, ServeError, CONNECTION_LIMIT_MESSAGE, FD_LIMIT_MESSAGE};
pub use stats::{HttpStats, HttpStatsSnapshot, RESPONSE_CLASSES};
pub use stop::Stop;
pub(crate) use tls::load_certs;
pub use tls::{TlsAcceptor, TlsError};

/// What answers requests. One instance per shard, shared by its connections (`Rc`).
///
/// `call` fills `resp` (cleared before each request: 200, `application/json`, empty
/// body). It runs on the shard's executor and may await, but a connection answers its
/// requests in order, so a slow call delays that connection's later requests.
pub trait Service {
    fn call<'a>(
        &'a self,
        req: &'a Request<'a>,
        resp: &'a mut Response,
    ) -> impl Future<Output = ()> + 'a;
}

/// Backlog of each listener: connections the kernel completes before a shard accepts them.
const LISTEN_BACKLOG: libc::c_int = 1024;

/// A listener on `addr` with SO_REUSEPORT set, so that every shard can bind the same
/// port. Call it on the shard's executor thread (glommio registers the socket there).
///
/// Why not glommio's `TcpListener::bind`: it sets SO_REUSEPORT but not SO_REUSEADDR.
/// Connections this listener accepts inherit its flags, and so do their TIME_WAIT
/// leftovers once the server closed them; without SO_REUSEADDR those leftovers make the
/// next router's "is the port free" probe (`server::PortReservation`) fail for a minute,
/// and a restart would be refused as "already in use". SO_REUSEADDR never lets a socket
/// bind over a listening one, so the probe still refuses a port another process serves.
pub fn bind(addr: SocketAddr) -> io::Result<glommio::net::TcpListener> {
    use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};

    use crate::transport::sock;
    let fd = sock::tcp_socket(addr)?;
    sock::set_option(&fd, libc::SO_REUSEADDR)?;
    sock::set_option(&fd, libc::SO_REUSEPORT)?;
    sock::bind_fd(&fd, addr)?;
    // SAFETY: listen(2) on a valid, bound socket we own.
    if unsafe { libc::listen(fd.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd is bound and listening, as `from_raw_fd` requires, and its ownership
    // passes to the listener.
    Ok(unsafe { glommio::net::TcpListener::from_raw_fd(fd.into_raw_fd()) })
}
