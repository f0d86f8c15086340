//! The NATS service API (ADR-32, NATS "micro"): `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS`,
//! each also as `$SRV.<verb>.shardline` and `$SRV.<verb>.shardline.<id>`, so that the
//! NATS tooling (`nats micro list|info|stats|ping`) and the other nodes find every router on the
//! bus, tell them apart (`id`, `metadata.node_id`) and see what each serves.
//!
//! One responder per process: the requester collects every reply until its timeout and
//! counts instances by them, so these subjects are subscribed without a queue group and on
//! shard 0's client only; every shard answering would show one router as one per shard.
//! While shard 0's connection is down the router is missing from discovery, though its
//! other shards may still serve.
//! The subscriptions are the nine exact subjects, not a wildcard, so a request for
//! another service (`$SRV.PING.other`) never reaches us.
//!
//! Answers are built when asked, from counters the router keeps anyway (see
//! `endpoint_stats` for which feeds which field): a few hundred bytes, allocated on this
//! rare path only, never on a decision's. A request without a reply subject cannot be
//! answered and is dropped; an answer the server's `max_payload` cannot carry is replaced
//! by the protocol's error (`Nats-Service-Error`, `Nats-Service-Error-Code: 500`); an
//! answer refused by a full outbound buffer is counted as shed (`nats_full`) like any
//! other reply.

use std::rc::Rc;

use serde_json::{json, Value};

use super::nats::{ADMIN_QUEUE_GROUP, RESULT_QUEUE_GROUP};
use super::shard::ShardCtx;
use super::Shared;
use crate::metrics::{HistogramSnapshot, NatsEndpoint, ShedCause, Transport};
use crate::transport::nats::{Client, Msg, PublishError};
use shardline_core::decide::rng::Rng;

/// The service's name: what `$SRV.<verb>.<name>` addresses, shared by every router.
pub const SERVICE_NAME: &str = "shardline";
/// The crate's version, a SemVer as the protocol requires.
pub const SERVICE_VERSION: &str = env!("CARGO_PKG_VERSION");
const DESCRIPTION: &str = "Shardline: routing decisions for AI/LLM traffic";
const PREFIX: &str = "$SRV";
/// Characters of an instance id (as the reference clients' NUIDs: 22 base-62 digits).
const ID_CHARS: usize = 22;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// The protocol's error headers, and the code for an answer that could not be sent.
const ERROR_HEADER: &str = "Nats-Service-Error";
const ERROR_CODE_HEADER: &str = "Nats-Service-Error-Code";
const ERROR_CODE_INTERNAL: &str = "500";

/// The three discovery requests, and the `type` of each answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Ping,
    Info,
    Stats,
}

impl Verb {
    pub const ALL: [Verb; 3] = [Verb::Ping, Verb::Info, Verb::Stats];

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Ping => "PING",
            Verb::Info => "INFO",
            Verb::Stats => "STATS",
        }
    }

    pub fn response_type(self) -> &'static str {
        match self {
            Verb::Ping => "io.nats.micro.v1.ping_response",
            Verb::Info => "io.nats.micro.v1.info_response",
            Verb::Stats => "io.nats.micro.v1.stats_response",
        }
    }

    /// The verb of one of our subjects (`$SRV.<verb>[.…]`).
    fn of(subject: &str) -> Option<Verb> {
        let verb = subject.strip_prefix(PREFIX)?.strip_prefix('.')?;
        let verb = verb.split('.').next()?;
        Verb::ALL.into_iter().find(|v| v.as_str() == verb)
    }
}

/// This process in the service API, fixed at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Unique per process (a restart is a new instance): what `$SRV.<verb>.shardline.<id>`
    /// addresses. Base 62, so it is one subject token.
    pub id: String,
    /// `cluster.node_id` (or the host name): which node the instance runs on; stable
    /// across restarts, unlike `id`.
    pub node_id: String,
    /// `cluster.enabled`.
    pub cluster: bool,
    /// When the router started, Unix milliseconds (`started` in STATS).
    pub started_unix_ms: u64,
}

impl Identity {
    /// A fresh instance id from `seed`.
    pub fn new(node_id: &str, cluster: bool, seed: u64, started_unix_ms: u64) -> Identity {
        let mut rng = Rng::new(seed);
        let id = (0..ID_CHARS)
            .map(|_| char::from(BASE62[rng.below(BASE62.len() as u64) as usize]))
            .collect();
        Identity {
            id,
            node_id: node_id.to_owned(),
            cluster,
            started_unix_ms,
        }
    }

    /// The nine subjects this instance answers: every verb for all services, for
    /// `shardline`, and for this instance.
    pub fn subjects(&self) -> Vec<String> {
        Verb::ALL
            .iter()
            .flat_map(|verb| {
                let all = format!("{PREFIX}.{}", verb.as_str());
                let kind = format!("{all}.{SERVICE_NAME}");
                let one = format!("{kind}.{}", self.id);
                [all, kind, one]
            })
            .collect()
    }
}

/// Subscribes the service API on `client` (shard 0's, no queue group); the subscription
/// ids, for the stop.
pub fn subscribe(ctx: &Rc<ShardCtx>, client: &Client) -> Vec<u64> {
    let identity = &ctx.shared.service;
    let mut sids = Vec::with_capacity(Verb::ALL.len() * 3);
    for subject in identity.subjects() {
        let handler_ctx = Rc::clone(ctx);
        let handler =
            Rc::new(move |client: &Client, msg: Msg<'_>| on_request(&handler_ctx, client, msg));
        match client.subscribe(&subject, None, handler) {
            Ok(sid) => sids.push(sid),
            Err(e) => log::error!("nats: cannot subscribe to {subject}: {e}"),
        }
    }
    log::info!(
        "nats: service API on {PREFIX}.PING|INFO|STATS as {SERVICE_NAME} {SERVICE_VERSION}, \
         instance {}, node {}",
        identity.id,
        identity.node_id
    );
    sids
}

fn on_request(ctx: &Rc<ShardCtx>, client: &Client, msg: Msg<'_>) {
    let Some(reply_to) = msg.reply else {
        log::debug!(
            "nats: service request on {} without a reply subject dropped",
            msg.subject
        );
        return;
    };
    // Only our own subjects are subscribed; anything else would be a client bug.
    let Some(verb) = Verb::of(msg.subject) else {
        return;
    };
    let body = answer(&ctx.shared, verb).to_string();
    let refused = match client.publish(reply_to, None, &[], body.as_bytes()) {
        Ok(()) => return,
        Err(PublishError::Encode(e)) => {
            // Too large for the server's max_payload: the protocol's error instead.
            let text = format!("{} answer not sent: {e}", verb.as_str());
            let headers = [
                (ERROR_HEADER, text.as_str()),
                (ERROR_CODE_HEADER, ERROR_CODE_INTERNAL),
            ];
            match client.publish(reply_to, None, &headers, b"") {
                Ok(()) => return,
                Err(e) => e,
            }
        }
        Err(e) => e,
    };
    let verb = verb.as_str();
    match refused {
        PublishError::Overloaded => {
            ctx.shared.metrics(ctx.id).shed(ShedCause::NatsFull).inc();
            log::warn!("nats: {verb} answer to {reply_to} dropped: {refused}");
        }
        // A reply subject the wire cannot carry: nothing can reach the requester.
        PublishError::Encode(_) => log::warn!("nats: {verb} answer to {reply_to}: {refused}"),
        PublishError::Closed => {}
    }
}

/// The answer to `verb`, every field the protocol lists.
fn answer(shared: &Shared, verb: Verb) -> Value {
    let identity = &shared.service;
    let mut out = json!({
        "type": verb.response_type(),
        "name": SERVICE_NAME,
        "id": identity.id,
        "version": SERVICE_VERSION,
        "metadata": {
            "node_id": identity.node_id,
            "shards": shared.partition.shard_count().to_string(),
            "cluster": identity.cluster.to_string(),
        },
    });
    if let Some(cluster) = &shared.cluster {
        // What this node owns now (metadata values are strings, by the protocol).
        let members = cluster.members();
        let owned = members.ownership(cluster.now_ms());
        let mine = owned.iter().find(|(id, _)| id == members.me());
        let mine = mine.map_or(0, |(_, n)| *n);
        out["metadata"]["partitions_owned"] = Value::from(mine.to_string());
        out["metadata"]["members"] = Value::from(owned.len().to_string());
    }
    match verb {
        Verb::Ping => {}
        Verb::Info => {
            out["description"] = Value::from(DESCRIPTION);
            let list = endpoints(shared).into_iter().map(|e| {
                json!({"name": e.name, "subject": e.subject, "queue_group": e.queue_group,
                    "metadata": {}})
            });
            out["endpoints"] = Value::Array(list.collect());
        }
        Verb::Stats => {
            let mut started = String::new();
            crate::logging::push_timestamp(&mut started, identity.started_unix_ms);
            out["started"] = Value::from(started);
            let list = endpoints(shared).into_iter().map(|e| {
                let n = endpoint_stats(shared, e.name);
                let average = n.processing_ns.checked_div(n.requests).unwrap_or(0);
                json!({"name": e.name, "subject": e.subject, "queue_group": e.queue_group,
                    "num_requests": int64(n.requests), "num_errors": int64(n.errors),
                    "last_error": "", "processing_time": int64(n.processing_ns),
                    "average_processing_time": int64(average)})
            });
            out["endpoints"] = Value::Array(list.collect());
        }
    }
    out
}

/// The protocol's numbers are signed 64-bit (Go's `int` and `time.Duration`).
fn int64(n: u64) -> u64 {
    n.min(i64::MAX as u64)
}

/// One request-reply subscription of the router, as INFO and STATS list it.
struct Endpoint {
    name: &'static str,
    subject: String,
    queue_group: String,
}

/// What the router answers over NATS: decide, results, and admin when the admin API is on
/// (`super::nats::subscribe_all` subscribes the same). The per-shard decide subjects and
/// the assignment acks (no reply) are not listed.
fn endpoints(shared: &Shared) -> Vec<Endpoint> {
    let Some(settings) = &shared.nats_settings else {
        return Vec::new();
    };
    let config = &settings.config;
    let mut out = vec![
        Endpoint {
            name: "decide",
            subject: config.decide_subject.clone(),
            queue_group: config.decide_queue_group.clone(),
        },
        Endpoint {
            name: "results",
            subject: config.result_subject.clone(),
            queue_group: RESULT_QUEUE_GROUP.to_owned(),
        },
    ];
    if shared.admin.is_some() {
        out.push(Endpoint {
            name: "admin",
            subject: format!("{}.*", config.admin_subject),
            queue_group: ADMIN_QUEUE_GROUP.to_owned(),
        });
    }
    out
}

/// An endpoint's STATS numbers, summed over the shards.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct EndpointNumbers {
    requests: u64,
    errors: u64,
    processing_ns: u64,
}

/// Which of the router's counters feed an endpoint's STATS, summed over every shard. Only
/// counters the router keeps for its metrics are read; where none is kept for NATS alone,
/// the field is 0 rather than a number that means something else.
///
/// `decide`:
/// - `num_requests` ← `shardline_requests_total{transport="nats"}`: every decide message
///   received, on the shared subject and the per-shard ones;
/// - `num_errors` ← `shardline_nats_no_reply_total`: decide messages that could not be
///   answered (no reply subject). Error *answers* (invalid request, overloaded, …) are
///   counted by code in `shardline_errors_total` for every transport together, so they
///   are not here;
/// - `processing_time` ← `num_requests` × the mean of `shardline_decision_latency_seconds`
///   (its sum over its count, in nanoseconds): the router times decisions, not transports,
///   so this is the NATS share estimated from the mean over every transport;
///   `average_processing_time` is that mean.
///
/// `decide` errors also count its error answers (status ≥ 400: invalid requests,
/// refusals, sheds), from `nats_endpoints` (`crate::metrics::NatsEndpointCounters`).
///
/// `results` and `admin`, from the same per-endpoint counters, kept for NATS alone:
/// `num_requests` every message received on the subject; `num_errors` the error answers,
/// and results refused (invalid, or naming no known tenant and provider) that had no reply
/// subject to say so; `processing_time` from receipt to answer, for messages that asked
/// for one (a result published without a reply subject is not timed).
fn endpoint_stats(shared: &Shared, endpoint: &str) -> EndpointNumbers {
    let mut numbers = EndpointNumbers::default();
    let which = match endpoint {
        "decide" => NatsEndpoint::Decide,
        "results" => NatsEndpoint::Results,
        _ => NatsEndpoint::Admin,
    };
    for shard in shared.stats.iter() {
        let c = &shard.nats_endpoints[which.index()];
        numbers.errors = numbers.errors.saturating_add(c.errors.get());
        numbers.requests = numbers.requests.saturating_add(c.received.get());
        numbers.processing_ns = numbers.processing_ns.saturating_add(c.processing_ns.get());
    }
    if which != NatsEndpoint::Decide {
        return numbers;
    }
    let mut latency = HistogramSnapshot::EMPTY;
    for shard in shared.stats.iter() {
        numbers.requests = numbers
            .requests
            .saturating_add(shard.request(Transport::Nats).get());
        numbers.errors = numbers.errors.saturating_add(shard.nats_no_reply.get());
        latency.merge(&shard.decision_latency.snapshot());
    }
    let mean_ns = latency.sum_ns.checked_div(latency.count()).unwrap_or(0);
    numbers.processing_ns = mean_ns.saturating_mul(numbers.requests);
    numbers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_subject_token_and_differ_by_seed() {
        let a = Identity::new("edge-1", false, 1, 0);
        let b = Identity::new("edge-1", false, 2, 0);
        assert_eq!(a.id.len(), ID_CHARS);
        assert!(a.id.bytes().all(|c| c.is_ascii_alphanumeric()), "{}", a.id);
        assert_ne!(a.id, b.id);
        assert_eq!(a, Identity::new("edge-1", false, 1, 0), "the seed decides");
    }

    #[test]
    fn nine_exact_subjects() {
        let identity = Identity::new("n", true, 7, 0);
        let subjects = identity.subjects();
        let id = &identity.id;
        assert_eq!(
            subjects,
            [
                "$SRV.PING".to_owned(),
                "$SRV.PING.shardline".to_owned(),
                format!("$SRV.PING.shardline.{id}"),
                "$SRV.INFO".to_owned(),
                "$SRV.INFO.shardline".to_owned(),
                format!("$SRV.INFO.shardline.{id}"),
                "$SRV.STATS".to_owned(),
                "$SRV.STATS.shardline".to_owned(),
                format!("$SRV.STATS.shardline.{id}"),
            ]
        );
        for subject in &subjects {
            assert!(!subject.contains(['*', '>']), "{subject}");
        }
        assert_eq!(Verb::of("$SRV.STATS.shardline.x"), Some(Verb::Stats));
        assert_eq!(Verb::of("$SRV.PING"), Some(Verb::Ping));
        assert_eq!(Verb::of("$SRV.PINGS"), None);
        assert_eq!(Verb::of("SRV.INFO"), None);
    }

    /// The protocol's version rule (SemVer) holds for the crate's version.
    #[test]
    fn version_is_semver() {
        let core = SERVICE_VERSION.split(['-', '+']).next().unwrap();
        let parts: Vec<&str> = core.split('.').collect();
        assert_eq!(parts.len(), 3, "{SERVICE_VERSION}");
        for part in parts {
            assert!(!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
            assert!(part == "0" || !part.starts_with('0'), "{SERVICE_VERSION}");
        }
    }
}
