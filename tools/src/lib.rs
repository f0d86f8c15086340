//! Shardline's tools that need nothing of the router: the perf gate (`gate`), the live
//! view of a running router (`top`), the node's kernel and CPU settings against a profile
//! (`tune`), and the parts of the load generator that only speak to a router from outside
//! (`bench`: the request mix, pacing, the wire reading of answers, recording and the
//! report with its renderings).
//!
//! Why a crate of its own: Cargo then refuses any path from these tools into the router's
//! library, so the library's layering is enforced by the compiler, not by habit. The
//! `shardline` binary depends on this crate and dispatches to it. What of the load
//! generator needs the router (the embedded router, the router's own NATS client, the
//! bare responders) stays in the router's library, which depends on this crate, never
//! the reverse: see the layers in docs/ARCHITECTURE.md.

pub mod bench;
pub mod gate;
pub mod top;
pub mod tune;
