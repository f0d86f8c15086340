//! NATS: the platform bus (SPEC §2, §6, §7). Each shard runs its own client on its own
//! executor (`client`), over a sans-IO protocol core (`proto`).

pub mod client;
pub mod options;
pub mod proto;
pub mod resolve;
mod stream;

pub use client::{Client, ClientStats, Handler, PublishError, Reply, RequestError};
pub use options::{ClientOptions, OptionsError, ServerAddr};
pub use proto::{EncodeError, HeaderBlock, Msg};
