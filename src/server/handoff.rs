//! Cross-shard handoff: a request only the tenant's owner can answer (`crate::shard`)
//! travels through the SPSC ring to the owner, which runs it and sends the reply back
//! through the ring.
//!
//! Replies can never be refused by a full ring. A shard keeps at most
//! `ring_slots / 4` requests in flight to each peer (`PendingTable`), so the ring from a
//! peer back to us holds at most `ring_slots / 4` of the peer's own requests plus
//! `ring_slots / 4` replies to ours, and the other half is left to the state protocol's
//! messages (leases, probes, replicas: `decide::sync`), which are sent only while that
//! half has room (`sync_fits`) and dropped otherwise (the protocol repairs a lost
//! message): the ring cannot fill. A request over the
//! in-flight limit, or one that finds the ring full, is shed at once with `overloaded`.
//!
//! A waiter that goes away (its connection closed) leaves its slot marked abandoned; the
//! slot is reused only after its reply arrives, so a late reply never reaches a stranger.

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use shards::ShardId;

pub use crate::shard::Outgoing;

/// Upper bound on requests one shard awaits from all peers together.
pub const PENDING_HANDOFFS_MAX: usize = 1 << 16;

/// The stateful routes that run on the tenant's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Decide,
    Results,
    /// A result another node of the cluster accepted and forwarded (`cluster::results`).
    NodeResult,
    AdminDryRun,
    AdminCircuits,
}

/// Header values the owner needs, copied out of the accepting shard's buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnedHeaders {
    pub tenant_id: Option<Box<str>>,
    pub trace_id: Option<Box<str>>,
    pub traceparent: Option<Box<str>>,
    pub version: Option<Box<str>>,
    /// Admin calls only: the bearer token, checked by the owner like any admin call.
    pub authorization: Option<Box<str>>,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub route: Route,
    /// The tenant the accepting shard routed by; the owner asserts it owns it.
    pub tenant: Box<str>,
    /// The request path (admin routes carry their arguments in it).
    pub path: Box<str>,
    pub body: Vec<u8>,
    pub headers: OwnedHeaders,
}

/// An HTTP-shaped answer, so every transport can write it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    pub status: u16,
    pub retry_after_s: Option<u64>,
    pub body: Vec<u8>,
    /// An ExecAssignment the answering shard publishes after the answer.
    pub assignment: Option<Box<Outgoing>>,
}

#[derive(Debug)]
pub enum Msg {
    Request {
        slot: u32,
        job: Box<Job>,
    },
    Reply {
        slot: u32,
        reply: Reply,
    },
    /// A lease, probe or replica message of the state protocol.
    Sync(crate::decide::SyncMsg),
}

/// Requests a shard keeps in flight to one peer: a quarter of the ring (module doc).
pub fn per_peer_max(ring_slots: usize) -> usize {
    (ring_slots / 4).max(1)
}

/// Whether one more protocol message fits in a ring holding `depth` messages without
/// taking room requests and replies may need: protocol messages in the ring never exceed
/// `ring_slots - 2 * per_peer_max` (module doc).
pub fn sync_fits(depth: usize, ring_slots: usize) -> bool {
    depth + 2 * per_peer_max(ring_slots) < ring_slots
}

#[derive(Debug, Default)]
struct Slot {
    peer: Option<ShardId>,
    reply: Option<Reply>,
    waker: Option<Waker>,
    abandoned: bool,
}

#[derive(Debug)]
pub struct PendingTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    in_flight: Vec<u32>,
    per_peer_max: u32,
}

pub type Pending = Rc<RefCell<PendingTable>>;

impl PendingTable {
    pub fn new(shard_count: usize, ring_slots: usize) -> Pending {
        let per_peer_max = per_peer_max(ring_slots);
        let total = (per_peer_max * shard_count.saturating_sub(1)).clamp(1, PENDING_HANDOFFS_MAX);
        Rc::new(RefCell::new(PendingTable {
            slots: (0..total).map(|_| Slot::default()).collect(),
            free: (0..total as u32).rev().collect(),
            in_flight: vec![0; shard_count],
            per_peer_max: per_peer_max as u32,
        }))
    }

    /// A slot for a request to `peer`, or `None` when over the in-flight limit.
    pub fn reserve(&mut self, peer: ShardId) -> Option<u32> {
        if self.in_flight[peer.index()] >= self.per_peer_max {
            return None;
        }
        let slot = self.free.pop()?;
        self.in_flight[peer.index()] += 1;
        self.slots[slot as usize].peer = Some(peer);
        Some(slot)
    }

    /// Gives back a slot whose request never left (the ring was full).
    pub fn cancel(&mut self, slot: u32) {
        self.release(slot);
    }

    /// Requests awaiting a reply (all peers).
    pub fn in_flight(&self) -> usize {
        self.in_flight.iter().map(|&n| n as usize).sum()
    }

    fn release(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        let peer = s.peer.take().expect("released slot was reserved");
        *s = Slot::default();
        self.in_flight[peer.index()] -= 1;
        self.free.push(slot);
    }

    /// Delivers a reply from `from`; wakes the waiter, or frees an abandoned slot.
    pub fn complete(&mut self, from: ShardId, slot: u32, reply: Reply) {
        let s = &mut self.slots[slot as usize];
        assert_eq!(
            s.peer,
            Some(from),
            "reply for slot {slot} from the wrong shard"
        );
        if s.abandoned {
            self.release(slot);
            return;
        }
        s.reply = Some(reply);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }
}

/// Waits for the reply in `slot`. Dropping the future abandons the slot safely.
pub async fn wait(pending: &Pending, slot: u32) -> Reply {
    let mut guard = Abandon {
        pending,
        slot: Some(slot),
    };
    let reply = poll_fn(|cx| {
        let mut table = pending.borrow_mut();
        let s = &mut table.slots[slot as usize];
        match s.reply.take() {
            Some(reply) => Poll::Ready(reply),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
    .await;
    guard.slot = None;
    pending.borrow_mut().release(slot);
    reply
}

struct Abandon<'a> {
    pending: &'a Pending,
    slot: Option<u32>,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let mut table = self.pending.borrow_mut();
            if table.slots[slot as usize].reply.is_some() {
                table.release(slot);
            } else {
                let s = &mut table.slots[slot as usize];
                s.abandoned = true;
                s.waker = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The state protocol's messages do not make the ring's slots larger: every message
    /// is moved at the size of the largest, so a larger one would cost every handoff.
    #[test]
    fn protocol_messages_are_no_larger_than_replies() {
        let sync = std::mem::size_of::<crate::decide::SyncMsg>();
        let reply = std::mem::size_of::<Reply>();
        assert!(sync <= reply, "SyncMsg {sync} bytes, Reply {reply}");
    }

    /// Requests, replies and protocol messages together never exceed the ring.
    #[test]
    fn protocol_messages_leave_room_for_requests_and_replies() {
        for ring in [2, 4, 8, 1024] {
            let mut messages = 0;
            while sync_fits(messages, ring) {
                messages += 1;
            }
            assert!(messages + 2 * per_peer_max(ring) <= ring, "ring {ring}");
        }
        assert!(!sync_fits(0, 2), "a 2-slot ring has no room to spare");
    }

    use super::*;
    use futures_lite::future;

    fn reply(status: u16) -> Reply {
        Reply {
            status,
            retry_after_s: None,
            body: Vec::new(),
            assignment: None,
        }
    }

    /// The in-flight limit per peer is a quarter of the ring, so replies always fit.
    #[test]
    fn per_peer_limit_is_a_quarter_of_the_ring() {
        let p = PendingTable::new(3, 16);
        let mut t = p.borrow_mut();
        let peer = ShardId(1);
        let got: Vec<_> = (0..5).map(|_| t.reserve(peer)).collect();
        assert!(got[..4].iter().all(Option::is_some));
        assert_eq!(got[4], None);
        assert!(
            t.reserve(ShardId(2)).is_some(),
            "other peers have their own budget"
        );
    }

    /// A reply wakes its waiter and frees the slot.
    #[test]
    fn reply_reaches_waiter() {
        let p = PendingTable::new(2, 4);
        let peer = ShardId(1);
        let slot = p.borrow_mut().reserve(peer).unwrap();
        p.borrow_mut().complete(peer, slot, reply(200));
        let got = future::block_on(wait(&p, slot));
        assert_eq!(got.status, 200);
        assert_eq!(p.borrow().in_flight(), 0);
    }

    /// An abandoned slot is not reused until its late reply arrives.
    #[test]
    fn abandoned_slot_waits_for_its_reply() {
        let p = PendingTable::new(2, 2);
        let peer = ShardId(1);
        let slot = p.borrow_mut().reserve(peer).unwrap();
        {
            let fut = wait(&p, slot);
            futures_lite::pin!(fut);
            assert!(future::block_on(future::poll_once(&mut fut)).is_none());
        }
        assert_eq!(p.borrow_mut().reserve(peer), None, "slot still held");
        p.borrow_mut().complete(peer, slot, reply(200));
        assert_eq!(p.borrow().in_flight(), 0);
        assert!(p.borrow_mut().reserve(peer).is_some());
    }
}
