//! `Stop`: one shard's stop signal, cloned into the accept loop and every connection.
//!
//! Why a closed glommio `Semaphore` rather than a list of wakers: closing a semaphore wakes
//! every waiter at once, and its waiters live in an intrusive list inside their own
//! futures, so waiting neither allocates nor grows a queue; a connection that stops
//! waiting (a request arrived) unlinks itself in O(1). Single-threaded by design (`Rc`):
//! whoever stops the process from another thread tells each shard, and the shard calls
//! `trigger` on its own executor.

use std::cell::Cell;
use std::rc::Rc;

use glommio::sync::Semaphore;

/// A cloneable, single-threaded stop signal. Once triggered it stays triggered.
#[derive(Clone)]
pub struct Stop {
    inner: Rc<Inner>,
}

struct Inner {
    triggered: Cell<bool>,
    /// Never signalled, only closed: closing wakes every `wait` with an error.
    gate: Semaphore,
}

impl Stop {
    pub fn new() -> Self {
        Stop {
            inner: Rc::new(Inner {
                triggered: Cell::new(false),
                gate: Semaphore::new(0),
            }),
        }
    }

    /// Asks everything holding a clone to stop. Idempotent.
    pub fn trigger(&self) {
        if !self.inner.triggered.replace(true) {
            self.inner.gate.close();
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.get()
    }

    /// Resolves once `trigger` has been called (at once if it already was).
    pub async fn wait(&self) {
        if self.is_triggered() {
            return;
        }
        // The semaphore has no units and is never signalled: this only returns when
        // `trigger` closes it.
        let closed = self.inner.gate.acquire(1).await;
        debug_assert!(closed.is_err());
    }
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stop")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}
