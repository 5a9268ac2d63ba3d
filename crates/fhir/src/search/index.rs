//! Extraction of search index entries from a resource, driven by the R4 SearchParameters.

use serde_json::Value;

use super::IndexEntry;

/// Extracts every index entry of every search parameter defined for the resource's type
/// (including the `Resource` and `DomainResource` parameters such as `_id`, `_lastUpdated`,
/// `_profile`, `_tag`, `_security`, `_source`).
pub fn extract(_resource: &Value) -> Vec<IndexEntry> {
    Vec::new()
}
