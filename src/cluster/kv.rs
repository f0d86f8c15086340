//! JetStream key-value over the router's own NATS client: the part of the KV protocol a
//! cluster's policies need (ADR-8 of nats-architecture-and-design).
//!
//! A bucket `B` is the stream `KV_B` over the subjects `$KV.B.>`. A put is a publish to
//! `$KV.B.<key>` that JetStream acknowledges with the stream sequence it stored the value
//! at, and that sequence is the entry's *revision*. Compare-and-set is the header
//! `Nats-Expected-Last-Subject-Sequence`: JetStream refuses the publish (err_code 10071,
//! "wrong last sequence: N") unless the key's last revision is the one named, which is how
//! two concurrent writers learn that one of them lost. A delete is an empty message with
//! `KV-Operation: DEL`, so a watcher learns of it as of any other revision.
//!
//! A watch is an ephemeral push consumer on the bucket, delivered to a subject of our own,
//! without acknowledgements (`ack_policy: none`, as the reference clients' watchers): it
//! starts with the last revision of every key (`last_per_subject`), then follows. What can
//! go wrong, and what is done about it:
//! - a message lost between server and client (a reconnect, a slow consumer) shows as a gap
//!   in the consumer sequence of the delivery subject; the consumer is then recreated from
//!   the stream sequence after the last one taken, so nothing is skipped;
//! - the consumer vanishes (its server restarted, or our connection was away longer than
//!   its inactivity threshold): idle heartbeats stop, and after `HEARTBEATS_MISSED_MAX`
//!   missed ones it is recreated the same way;
//! - flow control: the server asks at intervals (a status-100 message with a reply subject)
//!   and is answered at once; what a watcher receives is bounded by `EVENTS_QUEUED_MAX`
//!   instead, beyond which deliveries are dropped and the consumer recreated from the last
//!   one kept once the queue has been taken.
//!
//! Why not a client library: `async-nats` needs tokio, and the sync `nats` crate runs its
//! own threads (and is deprecated); the router's client already runs on the shard's
//! executor, and KV over it is a handful of JSON requests.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;
use thiserror::Error;

use crate::transport::nats::{Client, Msg, RequestError};
use shardline_core::decide::rng::Rng;

/// Deliveries a watch holds for its reader; beyond it the consumer is recreated later.
pub const EVENTS_QUEUED_MAX: usize = 65_536;
/// Idle heartbeats a watch may miss before it recreates its consumer.
pub const HEARTBEATS_MISSED_MAX: u32 = 3;
/// Bytes of a bucket name (letters, digits, `_`, `-`).
pub const BUCKET_NAME_BYTES_MAX: usize = 64;
/// Revisions kept per key by a bucket the router creates: enough to see recent history
/// with `nats kv history`, few enough that a bucket stays small.
pub const HISTORY: u32 = 5;

/// JetStream's error code for a compare-and-set that found another revision.
const ERR_WRONG_LAST_SEQUENCE: u32 = 10071;
/// JetStream's error code for a stream that does not exist.
const ERR_STREAM_NOT_FOUND: u32 = 10059;
const HEADER_EXPECTED_LAST: &str = "Nats-Expected-Last-Subject-Sequence";
const HEADER_OPERATION: &str = "KV-Operation";
/// Delay between attempts to create a watch's consumer.
const WATCH_RETRY: Duration = Duration::from_millis(500);

/// Why a bucket operation did not happen.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KvError {
    /// Compare-and-set: the key is at another revision than the one the write expected.
    #[error("the key is at revision {current}, not {expected}")]
    Conflict { expected: u64, current: u64 },
    /// JetStream refused the request.
    #[error("JetStream refused it: {description} (code {code}, err_code {err_code})")]
    Api {
        code: u16,
        err_code: u32,
        description: String,
    },
    /// Nothing answers the JetStream API on this account: the server runs without `-js`.
    #[error("JetStream is not enabled on the NATS server (no responder for {0})")]
    NoJetStream(String),
    #[error(transparent)]
    Request(RequestError),
    #[error("JetStream answered something that is not its API's JSON: {0}")]
    Reply(String),
    #[error("invalid bucket name {0:?}: 1 to 64 letters, digits, '_' or '-'")]
    BucketName(String),
    #[error("invalid key {0:?}: letters, digits and '-', '_', '=', '/', '.' between tokens")]
    Key(String),
}

impl KvError {
    /// Whether JetStream may answer otherwise in a moment: a cluster still forming (its
    /// meta leader not yet elected, or not yet knowing every peer a replicated stream
    /// needs: 503, `err_code` 10005, 10008, 10023), its API not yet subscribed, or a
    /// request lost.
    pub fn transient(&self) -> bool {
        match self {
            KvError::Api { code, err_code, .. } => {
                *code == 503 || matches!(err_code, 10005 | 10008 | 10023)
            }
            KvError::Request(_) | KvError::NoJetStream(_) => true,
            _ => false,
        }
    }
}

impl From<RequestError> for KvError {
    fn from(err: RequestError) -> Self {
        match err {
            RequestError::NoResponders(subject) => KvError::NoJetStream(subject),
            other => KvError::Request(other),
        }
    }
}

/// Whether `name` can name a bucket (and so a stream and a subject token).
pub fn is_bucket_name(name: &str) -> bool {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    (1..=BUCKET_NAME_BYTES_MAX).contains(&name.len()) && name.bytes().all(ok)
}

/// Whether `key` is a valid KV key: tokens of `[-/_=a-zA-Z0-9]` joined by dots.
pub fn is_key(key: &str) -> bool {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"-/_=".contains(&b);
    !key.is_empty() && key.split('.').all(|t| !t.is_empty() && t.bytes().all(ok))
}

#[derive(Debug, Deserialize)]
struct ApiError {
    code: u16,
    #[serde(default)]
    err_code: u32,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize)]
struct ApiReply {
    error: Option<ApiError>,
    /// A publish acknowledgement's stream sequence.
    seq: Option<u64>,
    /// A consumer's name (consumer info).
    name: Option<String>,
    /// Messages the consumer has yet to deliver (consumer info).
    num_pending: Option<u64>,
}

/// One bucket, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    name: String,
    stream: String,
    prefix: String,
}

impl Bucket {
    pub fn new(name: &str) -> Result<Bucket, KvError> {
        if !is_bucket_name(name) {
            return Err(KvError::BucketName(name.into()));
        }
        Ok(Bucket {
            name: name.into(),
            stream: format!("KV_{name}"),
            prefix: format!("$KV.{name}."),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The subject a key's revisions are stored under.
    pub fn subject(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The key of one of the bucket's subjects.
    pub fn key_of<'s>(&self, subject: &'s str) -> Option<&'s str> {
        subject.strip_prefix(&self.prefix)
    }

    /// Creates the bucket unless it exists; returns whether it created it. `replicas` is
    /// the stream's replica count (at most the JetStream servers of the NATS cluster).
    pub async fn ensure(
        &self,
        client: &Client,
        replicas: u32,
        timeout: Duration,
    ) -> Result<bool, KvError> {
        let info = format!("$JS.API.STREAM.INFO.{}", self.stream);
        match api(client, &info, b"", timeout).await {
            Ok(_) => return Ok(false),
            Err(KvError::Api { err_code, .. }) if err_code == ERR_STREAM_NOT_FOUND => {}
            Err(other) => return Err(other),
        }
        // What the reference clients create for a KV bucket: one value per key revision,
        // `discard: new` so a full bucket refuses rather than drops, deletes as markers.
        let config = json!({
            "name": self.stream,
            "subjects": [format!("{}>", self.prefix)],
            "retention": "limits",
            "max_consumers": -1,
            "max_msgs_per_subject": HISTORY,
            "max_msgs": -1,
            "max_bytes": -1,
            "max_age": 0,
            "max_msg_size": -1,
            "storage": "file",
            "discard": "new",
            "num_replicas": replicas.max(1),
            "duplicate_window": 120_000_000_000u64,
            "deny_delete": true,
            "deny_purge": false,
            "allow_rollup_hdrs": true,
            "allow_direct": true,
        });
        let create = format!("$JS.API.STREAM.CREATE.{}", self.stream);
        match api(client, &create, config.to_string().as_bytes(), timeout).await {
            Ok(_) => Ok(true),
            // Another node created it between our INFO and our CREATE.
            Err(KvError::Api { code: 400, .. }) if self.exists(client, timeout).await => Ok(false),
            Err(other) => Err(other),
        }
    }

    async fn exists(&self, client: &Client, timeout: Duration) -> bool {
        let info = format!("$JS.API.STREAM.INFO.{}", self.stream);
        api(client, &info, b"", timeout).await.is_ok()
    }

    /// Stores `value` under `key`; with `expected`, only if the key's last revision is
    /// that one (0: the key has never been written). Returns the new revision.
    pub async fn put(
        &self,
        client: &Client,
        key: &str,
        value: &[u8],
        expected: Option<u64>,
        timeout: Duration,
    ) -> Result<u64, KvError> {
        self.write(client, key, value, None, expected, timeout)
            .await
    }

    /// Deletes `key` (a delete marker, which watchers see); `expected` as for `put`.
    pub async fn delete(
        &self,
        client: &Client,
        key: &str,
        expected: Option<u64>,
        timeout: Duration,
    ) -> Result<u64, KvError> {
        self.write(client, key, b"", Some("DEL"), expected, timeout)
            .await
    }

    async fn write(
        &self,
        client: &Client,
        key: &str,
        value: &[u8],
        operation: Option<&str>,
        expected: Option<u64>,
        timeout: Duration,
    ) -> Result<u64, KvError> {
        if !is_key(key) {
            return Err(KvError::Key(key.into()));
        }
        let expected_text = expected.map(|r| r.to_string());
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(2);
        if let Some(op) = operation {
            headers.push((HEADER_OPERATION, op));
        }
        if let Some(text) = &expected_text {
            headers.push((HEADER_EXPECTED_LAST, text));
        }
        let reply = client
            .request(&self.subject(key), &headers, value, timeout)
            .await?;
        match parse_reply(&reply.payload) {
            Ok(ApiReply { seq: Some(seq), .. }) => Ok(seq),
            Ok(_) => Err(KvError::Reply(shown(&reply.payload))),
            Err(KvError::Api {
                err_code,
                description,
                ..
            }) if err_code == ERR_WRONG_LAST_SEQUENCE => Err(KvError::Conflict {
                expected: expected.unwrap_or(0),
                current: last_number(&description).unwrap_or(0),
            }),
            Err(other) => Err(other),
        }
    }
}

/// One request to the JetStream API, its error object turned into `KvError::Api`.
async fn api(
    client: &Client,
    subject: &str,
    payload: &[u8],
    timeout: Duration,
) -> Result<ApiReply, KvError> {
    let reply = client.request(subject, &[], payload, timeout).await?;
    parse_reply(&reply.payload)
}

fn parse_reply(payload: &[u8]) -> Result<ApiReply, KvError> {
    let reply: ApiReply =
        serde_json::from_slice(payload).map_err(|_| KvError::Reply(shown(payload)))?;
    match reply.error {
        Some(e) => Err(KvError::Api {
            code: e.code,
            err_code: e.err_code,
            description: e.description,
        }),
        None => Ok(reply),
    }
}

/// The start of a reply for a message, bounded.
fn shown(payload: &[u8]) -> String {
    String::from_utf8_lossy(&payload[..payload.len().min(200)]).into_owned()
}

/// The number ending "wrong last sequence: 5".
fn last_number(text: &str) -> Option<u64> {
    text.rsplit(|c: char| !c.is_ascii_digit())
        .find(|t| !t.is_empty())?
        .parse()
        .ok()
}

/// What a watch saw, in the bucket's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put {
        key: String,
        revision: u64,
        value: Vec<u8>,
    },
    /// A delete or purge marker.
    Delete { key: String, revision: u64 },
    /// The first time the watch has delivered every key's last revision: what the bucket
    /// held when the watch started is all in the events before this one.
    Synced,
}

/// A JetStream delivery's metadata, from its reply subject:
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>`, or the form
/// with a domain and account hash in front and a token after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Delivery {
    stream_seq: u64,
    consumer_seq: u64,
    pending: u64,
}

impl Delivery {
    fn parse(reply: &str) -> Option<Delivery> {
        let tokens: Vec<&str> = reply.split('.').collect();
        if tokens.len() < 9 || tokens[0] != "$JS" || tokens[1] != "ACK" {
            return None;
        }
        // The short form has nine tokens; the long one twelve or more.
        let base = if tokens.len() == 9 { 4 } else { 6 };
        let number = |i: usize| tokens.get(base + i)?.parse::<u64>().ok();
        Some(Delivery {
            stream_seq: number(1)?,
            consumer_seq: number(2)?,
            pending: number(4)?,
        })
    }
}

#[derive(Debug, Default)]
struct WatchState {
    queue: VecDeque<Event>,
    reader: Option<Waker>,
    /// The consumer the handler serves; deliveries to an older one are ignored.
    generation: u64,
    next_consumer_seq: u64,
    /// The stream sequence of the last delivery queued: where a new consumer resumes.
    last_stream_seq: u64,
    /// The consumer must be recreated (a gap, an overflow).
    broken: bool,
    synced: bool,
    last_heard: Option<Instant>,
    closed: bool,
}

/// A watch of a bucket, driven by a task on the current executor; dropping it (or
/// `close`) stops that task.
pub struct Watch {
    state: Rc<RefCell<WatchState>>,
}

impl Watch {
    /// Starts watching `bucket` over `client`; idle heartbeats every `heartbeat`.
    pub fn start(client: Client, bucket: Bucket, heartbeat: Duration, seed: u64) -> Watch {
        let state = Rc::new(RefCell::new(WatchState::default()));
        let driver = drive(client, bucket, heartbeat, Rc::clone(&state), seed);
        glommio::spawn_local(driver).detach();
        Watch { state }
    }

    /// Every event queued since the last call, waiting for at least one.
    pub async fn next(&self) -> Vec<Event> {
        poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            if st.queue.is_empty() {
                st.reader = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(st.queue.drain(..).collect())
        })
        .await
    }

    pub fn close(&self) {
        self.state.borrow_mut().closed = true;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.close();
    }
}

/// Creates the consumer, supervises it, and recreates it when it breaks or goes silent.
async fn drive(
    client: Client,
    bucket: Bucket,
    heartbeat: Duration,
    state: Rc<RefCell<WatchState>>,
    seed: u64,
) {
    let mut rng = Rng::new(seed ^ 0x6b76_7761);
    let timeout = heartbeat.max(Duration::from_secs(2));
    let mut failures = 0u32;
    while !state.borrow().closed && !client.is_closed() {
        if !client.is_connected() {
            glommio::timer::sleep(WATCH_RETRY).await;
            continue;
        }
        let (generation, resume_after) = {
            let mut st = state.borrow_mut();
            st.generation += 1;
            st.next_consumer_seq = 1;
            st.broken = false;
            st.last_heard = Some(Instant::now());
            (st.generation, st.last_stream_seq)
        };
        let deliver = format!("_SHARDLINE.kv.{:016x}.{generation}", rng.next_u64());
        let handler = deliveries(&bucket, &state, generation);
        let sid = match client.subscribe(&deliver, None, handler) {
            Ok(sid) => sid,
            Err(e) => {
                log::error!(
                    "cluster: cannot subscribe a watch of bucket {}: {e}",
                    bucket.name
                );
                glommio::timer::sleep(WATCH_RETRY).await;
                continue;
            }
        };
        let created = create_consumer(&client, &bucket, &deliver, resume_after, heartbeat);
        let consumer = match created.await {
            Ok(consumer) => consumer,
            Err(e) => {
                client.unsubscribe(sid);
                failures += 1;
                // Every attempt while JetStream is away would repeat the same line.
                if failures == 1 || failures.is_power_of_two() {
                    log::warn!(
                        "cluster: cannot watch bucket {} ({failures} attempt(s)): {e}",
                        bucket.name
                    );
                }
                glommio::timer::sleep(WATCH_RETRY).await;
                continue;
            }
        };
        if failures > 0 {
            log::info!("cluster: watching bucket {} again", bucket.name);
        }
        failures = 0;
        if consumer.pending == 0 {
            mark_synced(&mut state.borrow_mut());
        }
        supervise(&client, &state, heartbeat).await;
        client.unsubscribe(sid);
        // Best effort: an ephemeral consumer without interest is removed by the server
        // after its inactivity threshold anyway.
        let delete = format!(
            "$JS.API.CONSUMER.DELETE.{}.{}",
            bucket.stream, consumer.name
        );
        let _ = api(&client, &delete, b"", timeout).await;
    }
}

/// Waits until the consumer must be recreated: a gap, an overflow, silence, or the end.
async fn supervise(client: &Client, state: &Rc<RefCell<WatchState>>, heartbeat: Duration) {
    let silence = heartbeat * HEARTBEATS_MISSED_MAX;
    loop {
        glommio::timer::sleep(heartbeat).await;
        let st = state.borrow();
        if st.closed || st.broken || client.is_closed() {
            return;
        }
        if st.last_heard.is_some_and(|t| t.elapsed() > silence) {
            log::warn!(
                "cluster: a bucket watch heard nothing for {} ms; recreating it",
                silence.as_millis()
            );
            return;
        }
    }
}

struct Consumer {
    name: String,
    pending: u64,
}

async fn create_consumer(
    client: &Client,
    bucket: &Bucket,
    deliver: &str,
    resume_after: u64,
    heartbeat: Duration,
) -> Result<Consumer, KvError> {
    let heartbeat_ns = heartbeat.as_nanos() as u64;
    let mut config = json!({
        "deliver_subject": deliver,
        "ack_policy": "none",
        "replay_policy": "instant",
        "filter_subject": format!("{}>", bucket.prefix),
        "flow_control": true,
        "idle_heartbeat": heartbeat_ns,
        "inactive_threshold": heartbeat_ns * 10,
        "mem_storage": true,
        "num_replicas": 1,
    });
    if resume_after == 0 {
        config["deliver_policy"] = json!("last_per_subject");
    } else {
        config["deliver_policy"] = json!("by_start_sequence");
        config["opt_start_seq"] = json!(resume_after + 1);
    }
    let request = json!({"stream_name": bucket.stream, "config": config});
    let subject = format!("$JS.API.CONSUMER.CREATE.{}", bucket.stream);
    let timeout = heartbeat.max(Duration::from_secs(2));
    let reply = api(client, &subject, request.to_string().as_bytes(), timeout).await?;
    Ok(Consumer {
        name: reply.name.unwrap_or_default(),
        pending: reply.num_pending.unwrap_or(0),
    })
}

fn mark_synced(st: &mut WatchState) {
    if !st.synced {
        st.synced = true;
        st.queue.push_back(Event::Synced);
        if let Some(w) = st.reader.take() {
            w.wake();
        }
    }
}

/// The delivery subject's handler: flow control and heartbeats answered, values queued.
fn deliveries(
    bucket: &Bucket,
    state: &Rc<RefCell<WatchState>>,
    generation: u64,
) -> crate::transport::nats::Handler {
    let bucket = bucket.clone();
    let state = Rc::clone(state);
    Rc::new(move |client: &Client, msg: Msg<'_>| {
        let mut st = state.borrow_mut();
        if st.generation != generation || st.closed {
            return;
        }
        st.last_heard = Some(Instant::now());
        if let Some(headers) = msg.headers.filter(|h| h.status() == Some(100)) {
            // Flow control asks for an answer on the reply subject; a heartbeat may name
            // a stalled consumer's flow-control subject.
            let answer_to = msg.reply.or_else(|| headers.get("Nats-Consumer-Stalled"));
            if let Some(subject) = answer_to {
                let _ = client.publish(subject, None, &[], b"");
            }
            return;
        }
        let Some(delivery) = msg.reply.and_then(Delivery::parse) else {
            return;
        };
        if st.broken {
            return;
        }
        if delivery.consumer_seq != st.next_consumer_seq || st.queue.len() >= EVENTS_QUEUED_MAX {
            st.broken = true;
            return;
        }
        st.next_consumer_seq += 1;
        st.last_stream_seq = delivery.stream_seq;
        if let Some(key) = bucket.key_of(msg.subject) {
            let revision = delivery.stream_seq;
            let operation = msg.headers.and_then(|h| h.get(HEADER_OPERATION));
            let event = match operation {
                Some("DEL" | "PURGE") => Event::Delete {
                    key: key.into(),
                    revision,
                },
                _ => Event::Put {
                    key: key.into(),
                    revision,
                    value: msg.payload.to_vec(),
                },
            };
            st.queue.push_back(event);
            if let Some(w) = st.reader.take() {
                w.wake();
            }
        }
        if delivery.pending == 0 {
            mark_synced(&mut st);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys() {
        assert!(is_bucket_name("shardline_policies"));
        assert!(!is_bucket_name("a.b") && !is_bucket_name("") && !is_bucket_name("a b"));
        assert!(!is_bucket_name(&"b".repeat(BUCKET_NAME_BYTES_MAX + 1)));
        assert!(is_key("acme.default") && is_key("a=2Eb.c/d"));
        assert!(!is_key("acme..x") && !is_key(".a") && !is_key("a.") && !is_key("a*"));
        let b = Bucket::new("p").unwrap();
        assert_eq!(b.subject("acme.x"), "$KV.p.acme.x");
        assert_eq!(b.key_of("$KV.p.acme.x"), Some("acme.x"));
        assert_eq!(b.key_of("$KV.q.acme.x"), None);
        assert!(Bucket::new("a.b").is_err());
    }

    #[test]
    fn delivery_metadata_in_both_forms() {
        let short = "$JS.ACK.KV_p.c1.1.42.7.1700000000000000000.3";
        assert_eq!(
            Delivery::parse(short),
            Some(Delivery {
                stream_seq: 42,
                consumer_seq: 7,
                pending: 3
            })
        );
        let long = "$JS.ACK.hub.ACCHASH.KV_p.c1.1.42.7.1700000000000000000.0.xyz";
        assert_eq!(Delivery::parse(long).map(|d| d.pending), Some(0));
        assert_eq!(Delivery::parse("_INBOX.x.y"), None);
        assert_eq!(Delivery::parse("$JS.ACK.a.b.c"), None);
    }

    #[test]
    fn conflict_names_the_current_revision() {
        assert_eq!(last_number("wrong last sequence: 17"), Some(17));
        assert_eq!(last_number("no digits"), None);
        let err = parse_reply(
            br#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 9"}}"#,
        );
        assert!(matches!(
            err,
            Err(KvError::Api {
                err_code: 10071,
                ..
            })
        ));
        let ack = parse_reply(br#"{"stream":"KV_p","seq":12}"#).unwrap();
        assert_eq!(ack.seq, Some(12));
        assert!(matches!(parse_reply(b"nope"), Err(KvError::Reply(_))));
    }
}
