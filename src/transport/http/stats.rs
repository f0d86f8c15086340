//! `HttpStats`: one shard's HTTP counters, written by that shard, read by the scraper.
//!
//! Why atomics with `Relaxed` ordering: each counter is independent and only ever added
//! to by the owning shard's thread; the metrics scraper on another thread needs each value
//! to be untorn, not a consistent snapshot across counters. No lock on the request path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Response classes counted in `responses_by_class`, in index order.
pub const RESPONSE_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// Counters of one shard's HTTP listener.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Connections admitted and served (refused ones are not counted here).
    pub connections_accepted: AtomicU64,
    /// Connections being served now (gauge).
    pub connections_open: AtomicU64,
    /// Connections turned away because `connections_max` was reached.
    pub connections_refused: AtomicU64,
    /// Requests handed to the `Service`.
    pub requests: AtomicU64,
    /// Responses written, by class: 2xx, 3xx, 4xx, 5xx (`RESPONSE_CLASSES`).
    pub responses_by_class: [AtomicU64; 4],
    /// Requests refused by this layer as malformed or over a limit (400, 413, 431, 501).
    pub bad_requests: AtomicU64,
    /// Connections closed by the read, idle or write timeout.
    pub timeouts_closed: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: AtomicU64,
}

/// A plain copy of `HttpStats`, for reporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpStatsSnapshot {
    pub connections_accepted: u64,
    pub connections_open: u64,
    pub connections_refused: u64,
    pub requests: u64,
    pub responses_by_class: [u64; 4],
    pub bad_requests: u64,
    pub timeouts_closed: u64,
    pub tls_handshake_failures: u64,
}

impl HttpStats {
    pub fn snapshot(&self) -> HttpStatsSnapshot {
        HttpStatsSnapshot {
            connections_accepted: self.connections_accepted.load(Relaxed),
            connections_open: self.connections_open.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            requests: self.requests.load(Relaxed),
            responses_by_class: self.responses_by_class.each_ref().map(|c| c.load(Relaxed)),
            bad_requests: self.bad_requests.load(Relaxed),
            timeouts_closed: self.timeouts_closed.load(Relaxed),
            tls_handshake_failures: self.tls_handshake_failures.load(Relaxed),
        }
    }

    /// Counts one response by its status class; 1xx interim responses are not counted.
    pub(crate) fn count_response(&self, status: u16) {
        let class = match status {
            200..=299 => 0,
            300..=399 => 1,
            400..=499 => 2,
            500..=599 => 3,
            _ => return,
        };
        self.responses_by_class[class].fetch_add(1, Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn gauge_up(gauge: &AtomicU64) {
        gauge.fetch_add(1, Relaxed);
    }

    pub(crate) fn gauge_down(gauge: &AtomicU64) {
        gauge.fetch_sub(1, Relaxed);
    }
}
