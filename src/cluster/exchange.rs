//! The transport the node-level protocols share (`shares`, `allowances`): every shard of
//! a node reports every `REPORT_MS` to the owner shards of the nodes that own its
//! tenants, one NATS request per destination shard, and answers the reports of the
//! others on a subject of its own. The protocols differ in what they report and grant;
//! how it travels is here once.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::ClusterNode;
use crate::decide::share::REPORT_MS;
use crate::transport::nats::{Client, Msg};

/// How long a report waits for its answer; what it would renew lives on meanwhile.
const ASK_TIMEOUT: Duration = Duration::from_millis(500);
/// Entries (policies, or budget windows) one report carries; a shard with more sends
/// several, and an answer to a longer one takes the first ones only.
pub const ASKS_PER_MESSAGE_MAX: usize = 1_024;

/// A report: the asking node and its entries.
#[derive(Debug, Serialize, Deserialize)]
pub struct Asks<E> {
    pub node: String,
    pub asks: Vec<E>,
}

/// The answer to a report.
#[derive(Debug, Serialize, Deserialize)]
pub struct Grants<G> {
    pub grants: Vec<G>,
}

impl<G> Default for Grants<G> {
    fn default() -> Self {
        Grants { grants: Vec::new() }
    }
}

/// One report's entries by destination: (owner node, its owner shard).
pub type Batches<E> = HashMap<(String, u16), Vec<E>>;

/// Where a node's shard takes a protocol's reports: `<prefix>.<node_id>.<shard>`.
pub fn subject(prefix: &str, node: &str, shard: u16) -> String {
    format!("{prefix}.{node}.{shard}")
}

/// Answers the reports sent to this shard: `answer` grants the entries of one (at most
/// `ASKS_PER_MESSAGE_MAX`), and its grants go back to the reporter.
pub fn serve<E, G>(
    client: &Client,
    subject: &str,
    what: &str,
    answer: impl Fn(&Asks<E>) -> Grants<G> + 'static,
) where
    E: DeserializeOwned,
    G: Serialize,
{
    let handler = Rc::new(move |client: &Client, msg: Msg<'_>| {
        let Some(reply) = msg.reply else {
            return;
        };
        let Ok(mut asked) = serde_json::from_slice::<Asks<E>>(msg.payload) else {
            return;
        };
        asked.asks.truncate(ASKS_PER_MESSAGE_MAX);
        if let Ok(body) = serde_json::to_vec(&answer(&asked)) {
            let _ = client.publish(reply, None, &[], &body);
        }
    });
    if let Err(e) = client.subscribe(subject, None, handler) {
        log::error!("cluster: cannot take {what}: {e}");
    }
}

/// Every `REPORT_MS` until the client closes: `report` makes this shard's batches, each
/// sent as requests of at most `ASKS_PER_MESSAGE_MAX` entries to `prefix`'s subject of
/// its destination; an answer in time goes to `apply` with when its report was sent.
/// `counters`: reports sent, and reports not answered in time.
pub async fn report_every<E, G>(
    client: Client,
    cluster: Arc<ClusterNode>,
    prefix: &'static str,
    counters: fn(&ClusterNode) -> [&AtomicU64; 2],
    mut report: impl FnMut() -> Batches<E>,
    apply: impl Fn(&Grants<G>, u64) + Clone + 'static,
) where
    E: Serialize + Clone + 'static,
    G: DeserializeOwned + 'static,
{
    while !client.is_closed() {
        glommio::timer::sleep(Duration::from_millis(REPORT_MS)).await;
        let me = cluster.members().me().to_owned();
        for ((node, shard), asks) in report() {
            for chunk in asks.chunks(ASKS_PER_MESSAGE_MAX) {
                let body = Asks {
                    node: me.clone(),
                    asks: chunk.to_vec(),
                };
                let Ok(body) = serde_json::to_vec(&body) else {
                    continue;
                };
                let (client, cluster, apply) =
                    (client.clone(), Arc::clone(&cluster), apply.clone());
                let subject = subject(prefix, &node, shard);
                glommio::spawn_local(async move {
                    let asked_ms = cluster.now_ms();
                    let [sent, unanswered] = counters(&cluster);
                    sent.fetch_add(1, Relaxed);
                    let Ok(reply) = client.request(&subject, &[], &body, ASK_TIMEOUT).await else {
                        unanswered.fetch_add(1, Relaxed);
                        return;
                    };
                    if let Ok(granted) = serde_json::from_slice::<Grants<G>>(&reply.payload) {
                        apply(&granted, asked_ms);
                    }
                })
                .detach();
            }
        }
    }
}
