//! phip's master patient index core: deciding whether two patient records are the same person.
//!
//! Pure matching logic, no storage or transport:
//! - [`resident_id`]: the 18-digit resident ID (validation, parsing, 15→18 upgrade,
//!   cross-check against a record);
//! - [`identifier`]: the registry of identifier systems and how far each is trusted;
//! - [`record`]: [`MatchRecord`], built from a FHIR Patient or flat fields;
//! - [`compare`]: comparators (Chinese names as characters and pinyin, dates, phones,
//!   division-aware addresses) producing a comparison vector of discrete levels;
//! - [`model`]: the Fellegi–Sunter model with EM estimation, and [`train`] to fit it;
//! - [`rules`]: deterministic rules applied before the score;
//! - [`index`]: [`MatchIndex`], the in-memory blocking index returning scored candidates;
//! - [`decision`]: thresholds and [`decide`];
//! - [`febrl`]: the FEBRL benchmark.

pub mod blocking;
pub mod compare;
pub mod decision;
pub mod febrl;
pub mod identifier;
pub mod index;
pub mod model;
pub mod name;
pub mod record;
pub mod resident_id;
pub mod rules;
pub mod text;
pub mod train;

pub use compare::{compare, Field, Vector};
pub use decision::{decide, Decision, Thresholds};
pub use identifier::{IdentifierKind, IdentifierRegistry};
pub use index::{Candidate, IndexConfig, MatchIndex};
pub use model::{EmOptions, EmReport, FieldScore, Model};
pub use record::{MatchRecord, RecordParts, Sex};
pub use rules::RuleOutcome;
pub use train::{train, TrainOptions, TrainReport};
