//! Routing policies: parsing the accepted document formats and normalising them into one
//! compiled model, and the immutable routing table built from a config directory.

pub mod model;
pub mod table;

pub use model::*;
pub use table::RoutingTable;
