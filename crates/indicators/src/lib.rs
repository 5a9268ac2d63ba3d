//! Standard regional indicators, computed from stored FHIR resources as `MeasureReport`s per
//! GB/T 2260 division and period.
//!
//! - [`period`] — the reporting period (`2026-10`, `2026`).
//! - [`measures`] — each indicator's definition: canonical URL, names, and its precise
//!   numerator and denominator.
//! - [`facts`] — one pass over the store counting every indicator's numerator and
//!   denominator per residence division.
//! - [`report`] — roll-up to any division by summing its children's numerators and
//!   denominators (rates are never averaged), and the `MeasureReport` resource.

#![warn(missing_docs)]

pub mod facts;
pub mod measures;
pub mod period;
pub mod report;

pub use facts::{Facts, Ratio};
pub use measures::{Measure, MEASURES};
pub use period::Period;
pub use report::{measure_report, REPORT_ID_SYSTEM};
