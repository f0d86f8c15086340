//! The load generator's parts that need no router: what a run sends (`mix`), when
//! (`schedule`), how the client threads wait (`poll`), how an answer is framed and counted
//! (`wire`, `record`, second by second in `timeline`), what the machine is (`sys`), and
//! the report with its spectrum (`spectrum`) and its Markdown and SVG renderings
//! (`report`, `markdown`, `plot`). The runner, its arguments and the connections to an
//! embedded router or over the router's NATS client are
//! `shardline::bench`; the report's schema is described there.

pub mod markdown;
pub mod mix;
pub mod plot;
pub mod poll;
pub mod record;
pub mod report;
pub mod schedule;
pub mod spectrum;
pub mod sys;
pub mod timeline;
pub mod wire;
