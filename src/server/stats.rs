//! What the server counts, on top of `metrics`: the mapping from an answered request to
//! its counters, and the scrape that joins every shard's metrics with the HTTP layer's
//! connection statistics and the reload watcher's counts.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::admin::WatchStats;
use crate::contract::ErrorCode;
use crate::metrics::{render, ExtraMetric, RuntimeEvent, ShardMetrics, ShedCause, ALL_SHARDS};
use crate::shard::{Answered, Counted};
use crate::transport::http::{HttpStats, RESPONSE_CLASSES};

pub type ShardStats = ShardMetrics;

/// Counting verbs the shards use; each shard is the only writer of its `ShardMetrics`.
pub trait Count {
    fn answered(&self, answered: &Answered, latency: Duration);
    fn count_code(&self, code: ErrorCode);
    fn handoff_out(&self);
    fn handoff_in(&self);
    fn shed_ring_full(&self);
    fn shed_handoff_budget(&self);
}

impl Count for ShardMetrics {
    fn answered(&self, answered: &Answered, latency: Duration) {
        match answered.counted {
            Counted::Decided(reason) => self.decision(reason).inc(),
            Counted::Replayed => self.idempotency_hits.inc(),
            Counted::Failed(code) => self.error(code).inc(),
            Counted::ResultAccepted {
                status,
                opened,
                half_opened,
                closed,
            } => {
                self.result(status).inc();
                self.breaker_transition(crate::metrics::BreakerTransition::Opened)
                    .add(opened as u64);
                self.breaker_transition(crate::metrics::BreakerTransition::HalfOpened)
                    .add(half_opened as u64);
                self.breaker_transition(crate::metrics::BreakerTransition::Closed)
                    .add(closed as u64);
                return;
            }
            Counted::ResultDuplicate => {
                self.results_duplicate.inc();
                return;
            }
            Counted::ResultShadow(status) => {
                self.shadow_result(status).inc();
                return;
            }
        }
        self.decision_latency.observe(latency.as_nanos() as u64);
    }

    fn count_code(&self, code: ErrorCode) {
        self.error(code).inc();
    }

    fn handoff_out(&self) {
        self.handoffs_out.inc();
    }

    fn handoff_in(&self) {
        self.handoffs_in.inc();
    }

    fn shed_ring_full(&self) {
        self.shed(ShedCause::RingFull).inc();
    }

    fn shed_handoff_budget(&self) {
        self.shed(ShedCause::HandoffBudget).inc();
    }
}

/// Copies the calling executor thread's runtime counters into its shard's metrics. Runs
/// on the shard's own thread (the counters are thread-local there).
pub fn record_runtime(metrics: &ShardMetrics) {
    let c = glommio::counters::snapshot();
    for (event, total) in [
        (RuntimeEvent::Park, c.parks),
        (RuntimeEvent::WakeSent, c.wakes_sent),
        (RuntimeEvent::WakeReceived, c.foreign_wakes_received),
        (RuntimeEvent::UringEnter, c.uring_enters),
        (RuntimeEvent::Submission, c.sqes_submitted),
        (RuntimeEvent::Completion, c.cqes_completed),
        (RuntimeEvent::TimerArmed, c.timers_armed),
        (RuntimeEvent::Cancel, c.cancels),
    ] {
        metrics.runtime(event).set(total);
    }
}

/// The Prometheus text of one scrape.
pub fn render_all(
    out: &mut String,
    shards: &[std::sync::Arc<ShardMetrics>],
    http: &[std::sync::Arc<HttpStats>],
    generation: u64,
    policies: usize,
    watch: Option<&WatchStats>,
    more: Vec<ExtraMetric>,
) {
    let snapshots: Vec<_> = shards.iter().map(|m| m.snapshot()).collect();
    let mut extra = http_series(http);
    extra.push(ExtraMetric::gauge(
        "shardline_policies_loaded",
        "Policies in the published routing table.",
        policies as f64,
    ));
    extra.push(ExtraMetric::gauge(
        "shardline_routing_table_published_generation",
        "Generation of the most recently published routing table.",
        generation as f64,
    ));
    if let Some(w) = watch {
        let reloads = "shardline_watch_reloads_total";
        let help = "Reloads of the policies directory by SIGHUP or file change, by outcome.";
        let ok = w.reloads_ok.load(Ordering::Relaxed) as f64;
        let failed = w.reloads_failed.load(Ordering::Relaxed) as f64;
        extra.push(ExtraMetric::counter(reloads, help, ok).label("outcome", "ok"));
        extra.push(ExtraMetric::counter(reloads, help, failed).label("outcome", "failed"));
    }
    extra.push(ExtraMetric::counter(
        "shardline_log_dropped_total",
        "Log lines dropped because the log buffer was full (stderr not read fast enough).",
        crate::logging::dropped_total() as f64,
    ));
    extra.push(ExtraMetric::counter(
        "shardline_log_summarised_total",
        "Repeated log lines left out and reported in a summary line instead.",
        crate::logging::summarised_total() as f64,
    ));
    extra.extend(more);
    render(out, &snapshots, &extra);
}

/// `shardline_policy_invalid{tenant,policy} 1` per document the last load left out, at
/// most `POLICY_INVALID_SERIES_MAX`; one `_overflow` series counts the rest. Nothing when
/// every document loaded.
pub fn invalid_policy_series(invalid: &[crate::policy::InvalidPolicy]) -> Vec<ExtraMetric> {
    use super::{POLICY_INVALID_OVERFLOW, POLICY_INVALID_SERIES_MAX};
    let name = "shardline_policy_invalid";
    let help = "Policy documents that did not load (1 each; the overflow series counts the \
                rest); each keeps its last good version if it had one.";
    let mut out: Vec<ExtraMetric> = invalid
        .iter()
        .take(POLICY_INVALID_SERIES_MAX)
        .map(|bad| {
            ExtraMetric::gauge(name, help, 1.0)
                .label("tenant", &bad.tenant)
                .label("policy", &bad.policy)
        })
        .collect();
    if invalid.len() > POLICY_INVALID_SERIES_MAX {
        let rest = (invalid.len() - POLICY_INVALID_SERIES_MAX) as f64;
        let overflow = ExtraMetric::gauge(name, help, rest)
            .label("tenant", POLICY_INVALID_OVERFLOW)
            .label("policy", POLICY_INVALID_OVERFLOW);
        out.push(overflow);
    }
    out
}

fn http_series(http: &[std::sync::Arc<HttpStats>]) -> Vec<ExtraMetric> {
    type Read = fn(&crate::transport::http::HttpStatsSnapshot) -> u64;
    let families: [(&'static str, &'static str, bool, Read); 7] = [
        (
            "shardline_http_connections_accepted_total",
            "HTTP connections accepted.",
            true,
            |s| s.connections_accepted,
        ),
        (
            "shardline_http_connections_open",
            "HTTP connections open.",
            false,
            |s| s.connections_open,
        ),
        (
            "shardline_http_connections_refused_total",
            "Connections refused at the per-shard cap.",
            true,
            |s| s.connections_refused,
        ),
        (
            "shardline_http_requests_total",
            "HTTP requests parsed.",
            true,
            |s| s.requests,
        ),
        (
            "shardline_http_bad_requests_total",
            "Malformed or over-limit HTTP requests.",
            true,
            |s| s.bad_requests,
        ),
        (
            "shardline_http_timeouts_total",
            "Connections closed by the read, idle or write timer.",
            true,
            |s| s.timeouts_closed,
        ),
        (
            "shardline_http_tls_handshake_failures_total",
            "Failed TLS handshakes.",
            true,
            |s| s.tls_handshake_failures,
        ),
    ];
    let snaps: Vec<_> = http.iter().map(|h| h.snapshot()).collect();
    let mut out = Vec::new();
    // Each family also gets the `shard="all"` sum, like the shards' own families: the
    // open connections add up as well as the counters do.
    let shard_labels = (0..snaps.len())
        .map(|i| i.to_string())
        .chain([ALL_SHARDS.to_owned()]);
    for (name, help, counter, read) in families {
        let values = snaps.iter().map(read);
        let all = values.clone().fold(0u64, u64::saturating_add);
        for (shard, v) in shard_labels.clone().zip(values.chain([all])) {
            let v = v as f64;
            let m = if counter {
                ExtraMetric::counter(name, help, v)
            } else {
                ExtraMetric::gauge(name, help, v)
            };
            out.push(m.label("shard", shard));
        }
    }
    let name = "shardline_http_responses_total";
    let mut all = [0u64; RESPONSE_CLASSES.len()];
    for s in &snaps {
        for (sum, n) in all.iter_mut().zip(s.responses_by_class) {
            *sum = sum.saturating_add(n);
        }
    }
    let per_shard = snaps.iter().map(|s| s.responses_by_class);
    for (shard, by_class) in shard_labels.zip(per_shard.chain([all])) {
        for (class, n) in RESPONSE_CLASSES.iter().zip(by_class) {
            let m = ExtraMetric::counter(name, "HTTP responses by status class.", n as f64);
            out.push(m.label("shard", &shard).label("class", class));
        }
    }
    out
}

/// Per shard: whether the watchdog marks it stalled now, and how often it was.
pub fn stall_series(beats: &shards::Heartbeats) -> Vec<ExtraMetric> {
    let shards = (0..beats.shard_count()).map(shards::ShardId::from_index);
    let stalled = shards.clone().map(|shard| {
        let help = "1 while the shard's loop has not run for server.stall_ms, else 0.";
        let value = f64::from(u8::from(beats.is_stalled(shard)));
        ExtraMetric::gauge("shardline_shard_stalled", help, value).label("shard", shard)
    });
    let stalls = shards.map(|shard| {
        let help = "Times the shard was found stalled.";
        let value = beats.stalls(shard) as f64;
        ExtraMetric::counter("shardline_shard_stalls_total", help, value).label("shard", shard)
    });
    stalled.chain(stalls).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::InvalidPolicy;
    use crate::server::POLICY_INVALID_SERIES_MAX;

    /// One series per invalid document up to the cap, then one overflow series counting
    /// the rest: cardinality stays bounded however many documents break.
    #[test]
    fn invalid_documents_are_capped() {
        let bad = |i: usize| InvalidPolicy {
            tenant: format!("t{i}"),
            policy: "p".into(),
            problems: Vec::new(),
            kept: false,
        };
        let many: Vec<_> = (0..POLICY_INVALID_SERIES_MAX + 7).map(bad).collect();
        let series = invalid_policy_series(&many);
        assert_eq!(series.len(), POLICY_INVALID_SERIES_MAX + 1);
        let last = series.last().unwrap();
        assert_eq!(last.value, 7.0);
        assert_eq!(last.labels[0].1, "_overflow");
        assert!(invalid_policy_series(&[]).is_empty());
    }
}
