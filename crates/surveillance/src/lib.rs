//! Notifiable-disease surveillance for phip: from case reports to explained aberration alerts.
//!
//! The pipeline, each step a module:
//!
//! 1. [`config`] — which diseases are notifiable, the code sets (ICD-10, SNOMED CT, LOINC,
//!    local) that recognise a FHIR `Condition` or `Observation` as a case of one, and the
//!    detection methods and parameters per disease. [`SurveillanceConfig::classify`] turns a
//!    resource into (disease, date).
//! 2. [`series`] — case events into zero-filled daily counts per (disease, county), rolled up
//!    to prefecture, province and nation along GB/T 2260.
//! 3. Detection: [`ears`] (C1, C2, C3 exactly as R's `surveillance::earsC`), [`cusum`]
//!    (one-sided upper CUSUM on standardised counts) and [`cidars`] (the moving percentile
//!    method of China's CIDARS). [`detect::detect`] runs a disease's configured methods.
//! 4. [`alert`] — the signal with its baseline, threshold and parameters, explained in English
//!    and Chinese, as FHIR R4 `Flag` and `Communication` resources.
//!
//! 5. [`source`] and [`run`] — the wiring to stored data: case reports read from the store,
//!    placed by the patient's residence, detected daily, alerts written idempotently.
//!
//! Apart from [`source`] and [`run`], the crate is pure computation: no storage, no transport.

#![warn(missing_docs)]

pub mod alert;
pub mod cidars;
pub mod config;
pub mod cusum;
pub mod detect;
pub mod ears;
pub mod run;
pub mod series;
pub mod source;

pub use alert::{Alert, AlertMethod, Baseline, Coding, DiseaseLabel, Lang};
pub use cidars::{CidarsParams, CidarsPoint};
pub use config::{Classification, DiseaseConfig, MethodConfig, SurveillanceConfig};
pub use cusum::{CusumParams, CusumPoint};
pub use detect::detect;
pub use ears::{EarsMethod, EarsParams, EarsPoint};
pub use series::{CaseEvent, DailySeries, RollUp, SeriesKey, SeriesSet};

/// Invalid method parameters or configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParamError(String);

impl ParamError {
    /// An error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
