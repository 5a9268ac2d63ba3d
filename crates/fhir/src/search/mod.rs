//! Search: index extraction from resources and parsing of search requests.

pub mod index;
pub mod query;
mod types;

pub use types::*;
