//! Transports: how requests reach the router and answers leave it.

pub mod http;
pub mod nats;
pub(crate) mod sock;
