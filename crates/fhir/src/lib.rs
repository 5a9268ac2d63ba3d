//! FHIR R4 for phip: the official definitions (embedded), structural validation, search
//! parameters, index extraction and search-query parsing, and OperationOutcome.
//!
//! This crate knows nothing of HTTP or storage.

pub mod access;
pub mod definitions;
pub mod outcome;
pub mod search;
pub mod validate;

pub use definitions::{r4, Definitions, SearchParamDef};
pub use outcome::{IssueSeverity, IssueType, OperationOutcome};
