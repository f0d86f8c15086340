//! Host name lookups for NATS connections, off the shard.
//!
//! `getaddrinfo` blocks its thread for as long as the system resolver takes: seconds per
//! try when the DNS server is dead. glommio's `TcpStream::connect` with a host name calls
//! it on the shard, so one NATS reconnect froze every HTTP connection of that shard. Here
//! a client's lookups run on a thread of its own, started at the first lookup, and the
//! shard's task waits for the answer without blocking (the thread wakes it; glommio 0.9
//! takes wakes from foreign threads). The caller bounds the wait: the connect timeout
//! covers the lookup. A lookup still stuck when the next attempt comes leaves no room in
//! the queue (`RESOLVES_QUEUED_MAX`), so that attempt fails at once (`Busy`) instead of
//! queueing behind it without bound. IP literals never reach the thread.
//!
//! Why not glommio's `spawn_blocking`: its pool is one thread per shard shared with the
//! admin writes, with an unbounded queue; a hung lookup would hold admin writes behind it
//! and every reconnect attempt would queue another.

use std::cell::OnceCell;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Poll, Waker};

use thiserror::Error;

/// Lookups waiting behind the one being resolved, per client.
pub const RESOLVES_QUEUED_MAX: usize = 1;

/// Why a host name gave no address.
#[derive(Debug, Error)]
pub enum ResolveError {
    /// The previous lookups have not returned (the resolver hangs).
    #[error("the lookup of an earlier attempt has not returned yet (is DNS answering?)")]
    Busy,
    /// The system resolver failed.
    #[error("cannot resolve {host}: {source}")]
    Lookup { host: String, source: io::Error },
    /// The name resolved to no address.
    #[error("{0} resolved to no address")]
    NoAddress(String),
    /// The lookup thread could not be started, or is gone.
    #[error("no lookup thread: {0}")]
    Thread(io::Error),
}

/// The blocking lookup a thread runs: the system resolver, or a test's stand-in.
pub type Lookup = fn(&str, u16) -> io::Result<Vec<SocketAddr>>;

#[derive(Default)]
struct Answer {
    result: Option<io::Result<Vec<SocketAddr>>>,
    waker: Option<Waker>,
}

struct Job {
    host: String,
    port: u16,
    answer: Arc<Mutex<Answer>>,
}

/// One client's resolver: its lookup thread, started on first use.
pub struct Resolver {
    lookup: Lookup,
    jobs: OnceCell<SyncSender<Job>>,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::with_lookup(system_lookup)
    }
}

impl Resolver {
    pub fn with_lookup(lookup: Lookup) -> Resolver {
        Resolver {
            lookup,
            jobs: OnceCell::new(),
        }
    }

    /// Whether the lookup thread runs (a host name was looked up).
    pub fn started(&self) -> bool {
        self.jobs.get().is_some()
    }

    /// The addresses of `host`: at once for an IP literal, else from the lookup thread.
    /// Dropping the future abandons the lookup; its thread skips it if not yet begun.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let answer = Arc::new(Mutex::new(Answer::default()));
        let job = Job {
            host: host.to_owned(),
            port,
            answer: Arc::clone(&answer),
        };
        match self.sender()?.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(ResolveError::Busy),
            // Only a panic in the lookup ends the thread before the client does.
            Err(TrySendError::Disconnected(_)) => {
                let ended = io::Error::other("the lookup thread ended");
                return Err(ResolveError::Thread(ended));
            }
        }
        let result = poll_fn(|cx| {
            let mut answer = answer.lock().unwrap_or_else(PoisonError::into_inner);
            match answer.result.take() {
                Some(result) => Poll::Ready(result),
                None => {
                    answer.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await;
        let addrs = result.map_err(|source| ResolveError::Lookup {
            host: host.to_owned(),
            source,
        })?;
        if addrs.is_empty() {
            return Err(ResolveError::NoAddress(host.to_owned()));
        }
        Ok(addrs)
    }

    fn sender(&self) -> Result<&SyncSender<Job>, ResolveError> {
        if let Some(jobs) = self.jobs.get() {
            return Ok(jobs);
        }
        let (jobs, queue) = sync_channel::<Job>(RESOLVES_QUEUED_MAX);
        let lookup = self.lookup;
        std::thread::Builder::new()
            .name("nats-resolve".into())
            // The thread ends when the client (the sender) is gone.
            .spawn(move || {
                for job in queue {
                    run(lookup, job);
                }
            })
            .map_err(ResolveError::Thread)?;
        Ok(self.jobs.get_or_init(|| jobs))
    }
}

fn run(lookup: Lookup, job: Job) {
    // The waiter gave up (its connect timed out): nobody wants this answer.
    if Arc::strong_count(&job.answer) == 1 {
        return;
    }
    let result = lookup(&job.host, job.port);
    let mut answer = job.answer.lock().unwrap_or_else(PoisonError::into_inner);
    answer.result = Some(result);
    if let Some(waker) = answer.waker.take() {
        waker.wake();
    }
}

fn system_lookup(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    #[cfg(feature = "fault-injection")]
    crate::fault::delay_resolve();
    Ok((host, port).to_socket_addrs()?.collect())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use futures_lite::future::block_on;

    use super::*;

    fn never(_: &str, _: u16) -> io::Result<Vec<SocketAddr>> {
        panic!("an IP literal reached the lookup");
    }

    /// IP URLs (v4 and v6) are used as they are: no lookup, no thread.
    #[test]
    fn ip_literals_never_reach_the_lookup() {
        let resolver = Resolver::with_lookup(never);
        for (host, want) in [("127.0.0.1", "127.0.0.1:4222"), ("::1", "[::1]:4222")] {
            let addrs = block_on(resolver.resolve(host, 4222)).unwrap();
            assert_eq!(addrs, vec![want.parse::<SocketAddr>().unwrap()]);
        }
        assert!(!resolver.started());
    }

    static STARTED: AtomicBool = AtomicBool::new(false);
    static RELEASE: AtomicBool = AtomicBool::new(false);

    /// Hangs on `hang.test` until released, answers 127.0.0.1 for anything else.
    fn hanging(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        assert_eq!(std::thread::current().name(), Some("nats-resolve"));
        if host == "hang.test" {
            STARTED.store(true, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !RELEASE.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
    }

    /// Names are looked up on the resolver's own thread; while one lookup hangs, one more
    /// may wait and the next attempt is refused at once (`Busy`) instead of queueing;
    /// once the resolver answers, lookups work again.
    #[test]
    fn a_hanging_lookup_bounds_the_queue_and_blocks_no_caller() {
        let resolver = Resolver::with_lookup(hanging);
        let stuck = resolver.resolve("hang.test", 1);
        futures_lite::pin!(stuck);
        assert!(block_on(futures_lite::future::poll_once(&mut stuck)).is_none());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !STARTED.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the lookup never started");
            std::thread::sleep(Duration::from_millis(1));
        }
        let queued = resolver.resolve("queued.test", 2);
        futures_lite::pin!(queued);
        assert!(block_on(futures_lite::future::poll_once(&mut queued)).is_none());
        let refused = block_on(resolver.resolve("refused.test", 3));
        assert!(matches!(refused, Err(ResolveError::Busy)), "{refused:?}");
        RELEASE.store(true, Ordering::SeqCst);
        assert_eq!(block_on(stuck).unwrap()[0].port(), 1);
        assert_eq!(block_on(queued).unwrap()[0].port(), 2);
        assert_eq!(
            block_on(resolver.resolve("later.test", 4)).unwrap()[0].port(),
            4
        );
    }
}
