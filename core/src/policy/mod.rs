//! Routing policies: parsing the accepted document formats and normalising them into one
//! compiled model, and the immutable routing table built from a config directory.

pub(crate) mod json;
pub mod model;
mod parse;
mod table;
mod when;

pub use json::{DOCUMENT_DEPTH_MAX, ERRORS_PER_DOCUMENT_MAX};
pub use model::*;
pub use parse::*;
pub use table::*;
pub use when::VAR_NAME_BYTES_MAX;
