//! The metric families a shard exports, as one table: name, help, type, label, and how to
//! read each series from a `ShardMetrics`.
//!
//! Why a table: snapshotting and rendering both walk it, so a family is declared once and
//! can neither be rendered twice nor be snapshotted without being rendered. A snapshot is
//! the flat list of every series' value in table order.

use super::{
    BreakerTransition, HistogramSnapshot, RuntimeEvent, ShardMetrics, ShedCause, Transport,
    EXTENSION_STATUSES,
};
use crate::contract::{ErrorCode, ExecStatus, Reason};

/// How a family's series are typed and totalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Counter,
    /// A gauge whose shards add up (entries, connections): it gets a `shard="all"` total.
    SummedGauge,
    /// A gauge with no meaningful total (a table generation): per-shard series only.
    Gauge,
}

impl Kind {
    pub(super) fn type_name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::SummedGauge | Kind::Gauge => "gauge",
        }
    }
}

pub(super) struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// The family's own label; empty for one series per shard.
    pub label: &'static str,
    /// Series per shard (1 if unlabelled).
    pub series: usize,
    pub label_value: fn(usize) -> &'static str,
    pub read: fn(&ShardMetrics, usize) -> u64,
}

fn no_label(_: usize) -> &'static str {
    ""
}

/// The decision latency histogram (rendered apart from the table: it has buckets).
pub(super) const LATENCY_NAME: &str = "shardline_decision_latency_seconds";
pub(super) const LATENCY_HELP: &str =
    "Time from a decide request's arrival to its encoded answer (decision or error).";

pub(super) const FAMILIES: &[Family] = &[
    Family {
        name: "shardline_requests_total",
        help: "Requests received, by transport (over HTTP every route: decide, results, probes, scrapes, admin).",
        kind: Kind::Counter,
        label: "transport",
        series: Transport::ALL.len(),
        label_value: |i| Transport::ALL[i].as_str(),
        read: |m, i| m.requests[i].get(),
    },
    Family {
        name: "shardline_decisions_total",
        help: "Decisions answered, by reason.",
        kind: Kind::Counter,
        label: "reason",
        series: Reason::ALL.len(),
        label_value: |i| Reason::ALL[i].as_str(),
        read: |m, i| m.decisions[i].get(),
    },
    Family {
        name: "shardline_errors_total",
        help: "Error answers, by error code.",
        kind: Kind::Counter,
        label: "code",
        series: ErrorCode::ALL.len(),
        label_value: |i| ErrorCode::ALL[i].as_str(),
        read: |m, i| m.errors[i].get(),
    },
    Family {
        name: "shardline_handoffs_total",
        help: "Requests handed between shards over the ring mesh, by direction.",
        kind: Kind::Counter,
        label: "direction",
        series: 2,
        label_value: |i| ["out", "in"][i],
        read: |m, i| [&m.handoffs_out, &m.handoffs_in][i].get(),
    },
    Family {
        name: "shardline_shed_total",
        help: "Work refused to stay within bounds, by cause.",
        kind: Kind::Counter,
        label: "cause",
        series: ShedCause::ALL.len(),
        label_value: |i| ShedCause::ALL[i].as_str(),
        read: |m, i| m.sheds[i].get(),
    },
    Family {
        name: "shardline_runtime_events_total",
        help: "The shard executor's own work, by event: parks, wakes sent and received, io_uring enters, submissions, completions, timers armed, cancellations (copied from the executor every keep-alive beat).",
        kind: Kind::Counter,
        label: "event",
        series: RuntimeEvent::ALL.len(),
        label_value: |i| RuntimeEvent::ALL[i].as_str(),
        read: |m, i| m.runtime[i].get(),
    },
    Family {
        name: "shardline_results_total",
        help: "Execution results applied to breakers and estimates, by status.",
        kind: Kind::Counter,
        label: "status",
        series: ExecStatus::ALL.len(),
        label_value: |i| ExecStatus::ALL[i].as_str(),
        read: |m, i| m.results[i].get(),
    },
    Family {
        name: "shardline_results_shadow_total",
        help: "Execution results of shadow calls (\"shadow\": true), by status; they touch no breaker, estimate, usage or cooldown.",
        kind: Kind::Counter,
        label: "status",
        series: ExecStatus::ALL.len(),
        label_value: |i| ExecStatus::ALL[i].as_str(),
        read: |m, i| m.shadow_results[i].get(),
    },
    Family {
        name: "shardline_results_duplicate_total",
        help: "Execution results ignored because their assignment id was already seen.",
        kind: Kind::Counter,
        label: "",
        series: 1,
        label_value: no_label,
        read: |m, _| m.results_duplicate.get(),
    },
    Family {
        name: "shardline_results_rejected_total",
        help: "Execution results refused as invalid.",
        kind: Kind::Counter,
        label: "",
        series: 1,
        label_value: no_label,
        read: |m, _| m.results_rejected.get(),
    },
    Family {
        name: "shardline_assignments_total",
        help: "Execution assignments handed to NATS for publishing.",
        kind: Kind::Counter,
        label: "",
        series: 1,
        label_value: no_label,
        read: |m, _| m.assignments.get(),
    },
    Family {
        name: "shardline_assignment_acks_total",
        help: "Execution assignment acknowledgements received.",
        kind: Kind::Counter,
        label: "",
        series: 1,
        label_value: no_label,
        read: |m, _| m.assignment_acks.get(),
    },
    Family {
        name: "shardline_usage_events_total",
        help: "Usage events published for accepted execution results.",
        kind: Kind::Counter,
        label: "",
        series: 1,
        label_value: no_label,
        read: |m, _| m.usage_events.get(),
    },
    Family {
        name: "shardline_nats_no_reply_total",
        help: "Decide messages over NATS without a reply subject (not answerable).",
        kind: Kind::Counter,
        label: "",
        series: 1,
        label_value: no_label,
        read: |m, _| m.nats_no_reply.get(),
    },
    Family {
        name: "shardline_idempotency_hits_total",
        help: "Decide requests answered from the idempotency cache.",
        kind: Kind::Counter,
        label: "",
        series: 1,
        label_value: no_label,
        read: |m, _| m.idempotency_hits.get(),
    },
    Family {
        name: "shardline_breaker_transitions_total",
        help: "Circuit breaker state changes, by the state entered.",
        kind: Kind::Counter,
        label: "to",
        series: BreakerTransition::ALL.len(),
        label_value: |i| BreakerTransition::ALL[i].as_str(),
        read: |m, i| m.breaker_transitions[i].get(),
    },
    Family {
        name: "shardline_extension_calls_total",
        help: "Extension stages run, by outcome.",
        kind: Kind::Counter,
        label: "status",
        series: EXTENSION_STATUSES.len(),
        label_value: |i| EXTENSION_STATUSES[i].as_str(),
        read: |m, i| m.extension_calls[i].get(),
    },
    Family {
        name: "shardline_routing_table_generation",
        help: "Generation of the routing table each shard reads (no total: compare shards).",
        kind: Kind::Gauge,
        label: "",
        series: 1,
        label_value: no_label,
        read: |m, _| m.table_generation.get(),
    },
    Family {
        name: "shardline_sticky_entries",
        help: "Live sticky-session entries.",
        kind: Kind::SummedGauge,
        label: "",
        series: 1,
        label_value: no_label,
        read: |m, _| m.sticky_entries.get(),
    },
    Family {
        name: "shardline_budget_reservations",
        help: "Budget reservations of decisions waiting for their ExecResult.",
        kind: Kind::SummedGauge,
        label: "",
        series: 1,
        label_value: no_label,
        read: |m, _| m.budget_reservations.get(),
    },
    Family {
        name: "shardline_budget_reservations_expired_total",
        help: "Budget reservations settled at their reserved figure because no result \
               came in time (or the shard held too many).",
        kind: Kind::Counter,
        label: "",
        series: 1,
        label_value: no_label,
        read: |m, _| m.budget_expired.get(),
    },
    Family {
        name: "shardline_budget_results_unmatched_total",
        help: "Results of tenants with budgets that matched no open reservation (no \
               request_id, already expired, or not a budgeted decision).",
        kind: Kind::Counter,
        label: "",
        series: 1,
        label_value: no_label,
        read: |m, _| m.budget_unmatched.get(),
    },
    Family {
        name: "shardline_idempotency_bytes",
        help: "Bytes charged to the idempotency cache (keys, answers, overhead).",
        kind: Kind::SummedGauge,
        label: "",
        series: 1,
        label_value: no_label,
        read: |m, _| m.idempotency_bytes.get(),
    },
    Family {
        name: "shardline_idempotency_unstored_total",
        help: "Decisions whose answer exceeded the tenant's share of the idempotency cache \
               and was not remembered (a retry gets a new decision).",
        kind: Kind::Counter,
        label: "",
        series: 1,
        label_value: no_label,
        read: |m, _| m.idempotency_unstored.get(),
    },
    Family {
        name: "shardline_results_dedup_bytes",
        help: "Bytes charged to the ExecResult de-duplication set.",
        kind: Kind::SummedGauge,
        label: "",
        series: 1,
        label_value: no_label,
        read: |m, _| m.results_dedup_bytes.get(),
    },
];

/// Every family name this module renders, for callers choosing names of extra metrics.
pub fn family_names() -> impl Iterator<Item = &'static str> {
    FAMILIES
        .iter()
        .map(|f| f.name)
        .chain(std::iter::once(LATENCY_NAME))
}

/// One shard's metrics as read by one scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSnapshot {
    /// Every series of `FAMILIES`, in table order.
    values: Vec<u64>,
    pub latency: HistogramSnapshot,
}

impl ShardMetrics {
    /// Reads every counter once. Any thread; allocates (scrapes are not the hot path).
    pub fn snapshot(&self) -> ShardSnapshot {
        let series = FAMILIES.iter().map(|f| f.series).sum();
        let mut values = Vec::with_capacity(series);
        for family in FAMILIES {
            values.extend((0..family.series).map(|i| (family.read)(self, i)));
        }
        ShardSnapshot {
            values,
            latency: self.decision_latency.snapshot(),
        }
    }
}

impl ShardSnapshot {
    /// The value of `family`'s series labelled `label_value` (`""` if unlabelled).
    pub fn value(&self, family: &str, label_value: &str) -> Option<u64> {
        let mut offset = 0;
        for f in FAMILIES {
            if f.name == family {
                let i = (0..f.series).find(|&i| (f.label_value)(i) == label_value)?;
                return Some(self.values[offset + i]);
            }
            offset += f.series;
        }
        None
    }

    /// The value at `index` of the flat series list.
    pub(super) fn at(&self, index: usize) -> u64 {
        self.values[index]
    }

    /// The sum over `shards`: the `shard="all"` series.
    pub(super) fn total(shards: &[ShardSnapshot]) -> ShardSnapshot {
        let series = FAMILIES.iter().map(|f| f.series).sum();
        let mut total = ShardSnapshot {
            values: vec![0; series],
            latency: HistogramSnapshot::EMPTY,
        };
        for shard in shards {
            for (sum, v) in total.values.iter_mut().zip(&shard.values) {
                *sum = sum.saturating_add(*v);
            }
            total.latency.merge(&shard.latency);
        }
        total
    }
}
