//! Search: index extraction from resources and parsing of search requests.

pub mod index;
pub mod query;
mod types;
pub mod values;

pub use query::{parse, ParsedSearch, IGNORED_PARAMS};
pub use types::*;
pub use values::{
    index_text, normalize_string, parse_date_range, parse_number_range, MAX_INDEXED_TEXT_BYTES,
};
