//! Who is in the cluster, and which node owns a tenant: sans-IO, so that every node, a
//! client or a test in any language computes the same answer from the same member list.
//!
//! # Membership: heartbeats on a subject
//! Every node publishes a heartbeat on `shardline.cluster.v1.heartbeat.<node_id>` every
//! `failover_ms / HEARTBEATS_PER_FAILOVER` and listens to everyone's. A node is a member
//! while its last heartbeat, as timed by the *listener's* own monotonic clock, is younger
//! than `failover_ms`: no clock is compared across nodes, and a node that stops (killed,
//! cut off) is gone from every other node's list within `failover_ms` of its last beat.
//! A node always counts itself, so a node cut off from NATS keeps serving what it owns
//! by itself rather than nothing.
//!
//! Why heartbeats on a plain subject rather than a key-value bucket with a TTL: liveness
//! must not depend on JetStream's own health (a bucket whose stream has lost its quorum
//! cannot take a put, though NATS still carries messages), JetStream 2.9 removes expired
//! entries without telling a watcher (so a TTL bucket would still need local timers), and
//! a heartbeat costs one small message per node per interval, `n²/interval` deliveries in
//! all: 16 nodes at 4 a second are ~1,000 small messages a second for the whole cluster.
//! The NATS service API (`$SRV.PING`) would do, but it is a poll: each node would ask
//! every interval and wait for a timeout to know it has heard everyone.
//!
//! # Ownership (normative)
//! 1. A tenant's **partition** is the jump consistent hash of FNV-1a 64 of its id over
//!    `PARTITIONS` buckets: the same two functions as the tenant → shard map of
//!    `shards::partition`, with 1,024 buckets.
//! 2. A partition's **owner node** is, among the live members, the one with the highest
//!    `score(partition, node_id) = mix(fnv1a_64(node_id) ^ (partition × 0x9E3779B97F4A7C15))`
//!    (64-bit wrapping; `mix` is SplitMix64's finaliser; equal scores: the smaller node
//!    id). This is rendezvous hashing: when a node leaves, only its partitions move, each
//!    to the member that scored second for it; when one joins, it takes about `1/n` of
//!    the partitions and nothing else moves.
//! 3. Within the owner node, the tenant's owner **shard** is the node's own tenant → shard
//!    map (`shards::partition`).

use std::collections::BTreeMap;
use std::time::Duration;

use shards::partition::{fnv1a_64, jump_consistent_hash};

/// Partitions tenants are spread over: enough that 16 nodes own 64 each (about even),
/// few enough that a node's list of owned partitions is small.
pub const PARTITIONS: u32 = 1_024;
/// Heartbeats sent per failover time: three may be lost in a row before a live node is
/// taken for gone.
pub const HEARTBEATS_PER_FAILOVER: u32 = 4;
/// Members a node keeps track of; heartbeats of more nodes are ignored (and counted).
pub const MEMBERS_MAX: usize = 1_024;

/// The partition of a tenant.
pub fn partition_of(tenant: &str) -> u32 {
    jump_consistent_hash(fnv1a_64(tenant.as_bytes()), PARTITIONS)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A node's rendezvous score for a partition.
pub fn score(partition: u32, node_id: &str) -> u64 {
    mix(fnv1a_64(node_id.as_bytes()) ^ u64::from(partition).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The owner of `partition` among `members` (sorted or not); `None` when there are none.
pub fn owner_among<'m>(partition: u32, members: &[&'m str]) -> Option<&'m str> {
    members
        .iter()
        .copied()
        .max_by(|a, b| score(partition, a).cmp(&score(partition, b)).then(b.cmp(a)))
}

/// What a heartbeat says of its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    /// The process (the service API's `id`): a restarted node is a new instance.
    pub instance: String,
    pub shards: u32,
}

#[derive(Debug, Clone)]
struct Member {
    beat: Beat,
    last_heard_ms: u64,
}

/// One node's view of the cluster; time is the caller's monotonic milliseconds.
#[derive(Debug, Clone)]
pub struct Members {
    me: String,
    /// What this node says of itself in its own beats (for its row in the lists).
    own: Option<Beat>,
    failover_ms: u64,
    others: BTreeMap<String, Member>,
    /// Heartbeats ignored because `MEMBERS_MAX` nodes were already known.
    pub ignored: u64,
    /// Per partition: since when (ms) this node has owned it, as last tracked
    /// (`track_ownership`); `None` while another node owns it.
    owned_since: Vec<Option<u64>>,
}

/// A member as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub node_id: String,
    pub instance: Option<String>,
    pub shards: Option<u32>,
    /// `None` for this node.
    pub last_heard_ms_ago: Option<u64>,
    pub partitions_owned: u32,
}

impl Members {
    pub fn new(me: &str, failover: Duration) -> Self {
        Members {
            me: me.to_owned(),
            own: None,
            failover_ms: failover.as_millis() as u64,
            others: BTreeMap::new(),
            ignored: 0,
            owned_since: vec![None; PARTITIONS as usize],
        }
    }

    /// Notes, at `now_ms`, which partitions this node owns: one it did not own at the last
    /// call is owned from now. Called on every membership change and heartbeat interval.
    pub fn track_ownership(&mut self, now_ms: u64) {
        let live: Vec<String> = self.live(now_ms).into_iter().map(str::to_owned).collect();
        let live: Vec<&str> = live.iter().map(String::as_str).collect();
        for p in 0..PARTITIONS {
            let mine = owner_among(p, &live) == Some(self.me.as_str());
            let since = &mut self.owned_since[p as usize];
            match (mine, *since) {
                (true, None) => *since = Some(now_ms),
                (false, Some(_)) => *since = None,
                _ => {}
            }
        }
    }

    /// Whether this node has owned `tenant`'s partition for at least `failover_ms` (as
    /// last tracked): long enough that every node has heard of the change, so no other
    /// node still decides as its owner.
    pub fn settled_owner_of(&self, tenant: &str, now_ms: u64) -> bool {
        self.owned_since[partition_of(tenant) as usize]
            .is_some_and(|since| now_ms >= since + self.failover_ms)
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// The shard count a live member announced (this node's own included).
    pub fn shards_of(&self, node: &str) -> Option<u32> {
        match self.others.get(node) {
            Some(m) => Some(m.beat.shards),
            None if node == self.me => self.own.as_ref().map(|b| b.shards),
            None => None,
        }
    }

    /// A node not heard from for this long is gone.
    pub fn failover_ms(&self) -> u64 {
        self.failover_ms
    }

    /// What this node beats about itself.
    pub fn set_own(&mut self, beat: Beat) {
        self.own = Some(beat);
    }

    /// How often this node must beat for the others to keep it.
    pub fn beat_interval(&self) -> Duration {
        Duration::from_millis((self.failover_ms / u64::from(HEARTBEATS_PER_FAILOVER)).max(1))
    }

    /// A heartbeat from `node` heard at `now_ms`. Our own beats are ignored (we always
    /// count ourselves). Returns whether the live set changed (a node joined or came back).
    pub fn heard(&mut self, node: &str, beat: Beat, now_ms: u64) -> bool {
        if node == self.me {
            return false;
        }
        let was_live = self.is_live(node, now_ms);
        if let Some(m) = self.others.get_mut(node) {
            m.beat = beat;
            m.last_heard_ms = now_ms;
            return !was_live;
        }
        if self.others.len() >= MEMBERS_MAX {
            self.expire(now_ms);
            if self.others.len() >= MEMBERS_MAX {
                self.ignored += 1;
                return false;
            }
        }
        let member = Member {
            beat,
            last_heard_ms: now_ms,
        };
        self.others.insert(node.to_owned(), member);
        true
    }

    fn is_live(&self, node: &str, now_ms: u64) -> bool {
        node == self.me
            || self
                .others
                .get(node)
                .is_some_and(|m| now_ms.saturating_sub(m.last_heard_ms) < self.failover_ms)
    }

    /// Forgets nodes not heard from within the failover time; returns the ones forgotten.
    pub fn expire(&mut self, now_ms: u64) -> Vec<String> {
        let failover = self.failover_ms;
        let gone: Vec<String> = self
            .others
            .iter()
            .filter(|(_, m)| now_ms.saturating_sub(m.last_heard_ms) >= failover)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.others.remove(id);
        }
        gone
    }

    /// The live members' ids, sorted (this node included).
    pub fn live(&self, now_ms: u64) -> Vec<&str> {
        let mut ids: Vec<&str> = self
            .others
            .iter()
            .filter(|(_, m)| now_ms.saturating_sub(m.last_heard_ms) < self.failover_ms)
            .map(|(id, _)| id.as_str())
            .chain(std::iter::once(self.me.as_str()))
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The node owning `tenant` now.
    pub fn owner_of(&self, tenant: &str, now_ms: u64) -> String {
        let live = self.live(now_ms);
        owner_among(partition_of(tenant), &live)
            .unwrap_or(&self.me)
            .to_owned()
    }

    /// Partitions owned per live member (sorted by node id).
    pub fn ownership(&self, now_ms: u64) -> Vec<(String, u32)> {
        let live = self.live(now_ms);
        let mut owned: BTreeMap<&str, u32> = live.iter().map(|id| (*id, 0)).collect();
        for p in 0..PARTITIONS {
            if let Some(owner) = owner_among(p, &live) {
                *owned.entry(owner).or_default() += 1;
            }
        }
        owned
            .into_iter()
            .map(|(id, n)| (id.to_owned(), n))
            .collect()
    }

    /// The members as listed by the admin API and the service API.
    pub fn rows(&self, now_ms: u64) -> Vec<MemberRow> {
        self.ownership(now_ms)
            .into_iter()
            .map(|(node_id, partitions_owned)| {
                let other = self.others.get(&node_id);
                let beat = match other {
                    Some(m) => Some(&m.beat),
                    None => self.own.as_ref().filter(|_| node_id == self.me),
                };
                MemberRow {
                    instance: beat.map(|b| b.instance.clone()),
                    shards: beat.map(|b| b.shards),
                    last_heard_ms_ago: other.map(|m| now_ms.saturating_sub(m.last_heard_ms)),
                    partitions_owned,
                    node_id,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat() -> Beat {
        Beat {
            instance: "i".into(),
            shards: 2,
        }
    }

    /// The published functions, pinned: a change here moves tenants between nodes.
    #[test]
    fn ownership_vectors() {
        // Checked against an independent implementation of the module doc's algorithm.
        assert_eq!(partition_of("acme"), 621);
        assert_eq!(score(0, "node-1"), 1_411_048_690_986_509_909);
        let nodes = ["node-1", "node-2", "node-3"];
        let owners: Vec<&str> = (0..6).map(|p| owner_among(p, &nodes).unwrap()).collect();
        assert_eq!(
            owners,
            ["node-2", "node-1", "node-1", "node-1", "node-2", "node-3"]
        );
        assert_eq!(owner_among(0, &[]), None);
        assert_eq!(owner_among(7, &["only"]), Some("only"));
    }

    /// Rendezvous: a node leaving moves only its own partitions; ownership is about even.
    #[test]
    fn a_node_leaving_moves_only_its_partitions() {
        let all = ["a", "b", "c", "d"];
        let without_c = ["a", "b", "d"];
        let mut owned = BTreeMap::new();
        for p in 0..PARTITIONS {
            let before = owner_among(p, &all).unwrap();
            let after = owner_among(p, &without_c).unwrap();
            if before != "c" {
                assert_eq!(before, after, "partition {p} moved without cause");
            }
            *owned.entry(before).or_insert(0u32) += 1;
        }
        for (node, n) in owned {
            assert!((200..=312).contains(&n), "{node} owns {n} of {PARTITIONS}");
        }
    }

    /// A node is live while heard within the failover time, by the listener's clock; it
    /// always counts itself; ownership over the live set sums to every partition.
    #[test]
    fn members_come_and_go_by_their_heartbeats() {
        let mut m = Members::new("b", Duration::from_millis(3_000));
        assert_eq!(m.beat_interval(), Duration::from_millis(750));
        assert_eq!(m.live(0), ["b"]);
        assert!(m.heard("a", beat(), 1_000));
        assert!(!m.heard("a", beat(), 1_500));
        assert!(!m.heard("b", beat(), 1_500), "our own beat");
        assert!(m.heard("c", beat(), 2_000));
        assert_eq!(m.live(2_000), ["a", "b", "c"]);
        let total: u32 = m.ownership(2_000).iter().map(|(_, n)| n).sum();
        assert_eq!(total, PARTITIONS);
        // a last beat at 1,500: gone at 4,500, not before.
        assert_eq!(m.live(4_499), ["a", "b", "c"]);
        assert_eq!(m.live(4_500), ["b", "c"]);
        assert_eq!(m.expire(4_500), ["a"]);
        let rows = m.rows(4_500);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].node_id, "b");
        assert_eq!(rows[0].last_heard_ms_ago, None);
        assert_eq!(rows[1].last_heard_ms_ago, Some(2_500));
        assert_eq!(
            rows.iter().map(|r| r.partitions_owned).sum::<u32>(),
            PARTITIONS
        );
        let tenant_owner = m.owner_of("acme", 4_500);
        assert!(["b", "c"].contains(&tenant_owner.as_str()));
        assert!(m.heard("a", beat(), 5_000), "back");
    }

    /// A partition is settled on its new owner only `failover_ms` after it became its.
    #[test]
    fn ownership_settles_after_the_failover_time() {
        let mut m = Members::new("b", Duration::from_millis(1_000));
        m.track_ownership(0);
        // Alone, b owns every partition from 0 on.
        assert!(!m.settled_owner_of("acme", 999));
        assert!(m.settled_owner_of("acme", 1_000));
        m.heard("a", beat(), 1_500);
        m.heard("c", beat(), 1_500);
        m.track_ownership(1_500);
        let tenants: Vec<String> = (0..64).map(|i| format!("t{i}")).collect();
        let lost = tenants
            .iter()
            .find(|t| m.owner_of(t, 1_500) != "b")
            .unwrap();
        let kept = tenants
            .iter()
            .find(|t| m.owner_of(t, 1_500) == "b")
            .unwrap();
        assert!(!m.settled_owner_of(lost, 1_500));
        assert!(m.settled_owner_of(kept, 1_500));
        // a and c go silent: b takes their partitions back, settled a failover later.
        m.expire(3_000);
        m.track_ownership(3_000);
        assert!(!m.settled_owner_of(lost, 3_500));
        assert!(m.settled_owner_of(lost, 4_000));
    }

    /// At 16 nodes (docs/CLUSTER.md, "A simulated 16-node cluster"): how even ownership
    /// is, and what one node leaving moves (printed with `--nocapture`).
    #[test]
    fn sixteen_nodes_own_evenly_and_a_leaver_moves_a_sixteenth() {
        let names: Vec<String> = (1..=16).map(|i| format!("node-{i}")).collect();
        let all: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut owned = BTreeMap::new();
        for p in 0..PARTITIONS {
            *owned.entry(owner_among(p, &all).unwrap()).or_insert(0u32) += 1;
        }
        let (min, max) = (owned.values().min().unwrap(), owned.values().max().unwrap());
        let leaver = "node-7";
        let rest: Vec<&str> = all.iter().copied().filter(|n| *n != leaver).collect();
        let moved = (0..PARTITIONS)
            .filter(|p| owner_among(*p, &all) != owner_among(*p, &rest))
            .count();
        eprintln!(
            "16 nodes: {min}..{max} partitions each (even: 64); {leaver} leaving moves \
             {moved}, all of its own"
        );
        assert_eq!(moved as u32, owned[leaver]);
        assert!(*min >= 40 && *max <= 90, "{min}..{max}");
    }

    #[test]
    fn members_are_bounded() {
        let mut m = Members::new("me", Duration::from_millis(1_000));
        for i in 0..MEMBERS_MAX + 10 {
            m.heard(&format!("n{i}"), beat(), 0);
        }
        assert_eq!(m.others.len(), MEMBERS_MAX);
        assert_eq!(m.ignored, 10);
        // Once the old ones expire, room is made.
        assert!(m.heard("late", beat(), 2_000));
        assert_eq!(m.live(2_000), ["late", "me"]);
    }
}
