//! Which diseases are under surveillance, how a FHIR resource is recognised as a case of one,
//! and which detection methods run on each.
//!
//! A configuration is data (JSON here; any serde format such as TOML works the same):
//!
//! ```json
//! { "diseases": [ {
//!     "id": "HFMD", "name_en": "Hand, foot and mouth disease", "name_zh": "手足口病",
//!     "coding": { "system": "http://hl7.org/fhir/sid/icd-10", "code": "B08.4" },
//!     "codes": [ { "system": "http://hl7.org/fhir/sid/icd-10", "code": "B08.4" },
//!                { "system": "http://snomed.info/sct", "code": "266108008" } ],
//!     "lab_tests": [],
//!     "methods": [ { "method": "C2", "min_sigma": 1.0 }, { "method": "CIDARS", "percentile": 80 } ]
//! } ] }
//! ```
//!
//! - `codes` are diagnoses: they match `Condition.code` and an `Observation`'s `code` or
//!   `valueCodeableConcept`. `"prefix": true` matches a code and its children (ICD-10 `A03`
//!   matches `A03.9`); local code systems work the same way.
//! - `lab_tests` match an `Observation` whose `code` is the test and whose
//!   `valueCodeableConcept` is one of the `positive` results.
//! - `methods` are tagged by `method`: `C1`, `C2`, `C3` (fields `baseline`, `alpha`,
//!   `min_sigma`, see [`crate::ears`]), `CUSUM` (see [`crate::cusum`]) and `CIDARS` (see
//!   [`crate::cidars`]); omitted fields take the defaults documented there.
//!
//! The built-in configuration ([`SurveillanceConfig::builtin`], file
//! `data/default-config.json`) covers influenza-like illness, hand-foot-mouth disease,
//! bacillary dysentery and COVID-19 with their ICD-10 and SNOMED CT codes (and the SARS-CoV-2
//! RNA test, LOINC 94500-6). It uses `min_sigma = 1` for EARS, following Burkom's advice for
//! sparse county data: with R's default of 0, a county with a week of zeros alarms on its
//! first case.

use chrono::NaiveDate;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::alert::{Coding, DiseaseLabel};
use crate::cidars::CidarsParams;
use crate::cusum::CusumParams;
use crate::ears::{EarsMethod, EarsParams};
use crate::ParamError;

static BUILTIN: &str = include_str!("../data/default-config.json");

/// A code to match, optionally with its descendants by prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeRule {
    /// Code system URI.
    pub system: String,
    /// Code (or code prefix).
    pub code: String,
    /// Whether codes starting with `code` match too.
    #[serde(default)]
    pub prefix: bool,
}

impl CodeRule {
    /// Whether a coding (`system`, `code`) matches.
    pub fn matches(&self, system: &str, code: &str) -> bool {
        system == self.system
            && if self.prefix {
                code.starts_with(&self.code)
            } else {
                code == self.code
            }
    }

    /// Whether any coding of a FHIR `CodeableConcept` matches.
    pub fn matches_concept(&self, concept: &Value) -> bool {
        codings(concept).any(|(s, c)| self.matches(s, c))
    }
}

/// A laboratory test whose positive results notify the disease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabRule {
    /// The test (`Observation.code`).
    pub test: CodeRule,
    /// Results counting as positive (`Observation.valueCodeableConcept`).
    pub positive: Vec<CodeRule>,
}

/// The EARS options of a method entry (the method itself is the tag).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarsOptions {
    /// Baseline days (default 7).
    #[serde(default = "seven")]
    pub baseline: usize,
    /// α (default: R's default for the method).
    #[serde(default)]
    pub alpha: Option<f64>,
    /// Floor of the sd (default 0).
    #[serde(default)]
    pub min_sigma: f64,
}

fn seven() -> usize {
    7
}

impl EarsOptions {
    /// The full parameters for `method`.
    pub fn params(&self, method: EarsMethod) -> EarsParams {
        EarsParams {
            method,
            baseline: self.baseline,
            alpha: self.alpha,
            min_sigma: self.min_sigma,
        }
    }
}

/// One detection method with its parameters: an object tagged by `method`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "method")]
pub enum MethodConfig {
    /// EARS C1.
    C1(EarsOptions),
    /// EARS C2.
    C2(EarsOptions),
    /// EARS C3.
    C3(EarsOptions),
    /// CUSUM.
    #[serde(rename = "CUSUM")]
    Cusum(CusumParams),
    /// CIDARS moving percentile.
    #[serde(rename = "CIDARS")]
    Cidars(CidarsParams),
}

impl<'de> Deserialize<'de> for MethodConfig {
    // serde's derived internally tagged enums buffer their content, and the workspace builds
    // serde_json with `arbitrary_precision`, whose buffered numbers no longer deserialise as
    // f64. So: read a JSON value, take the tag off, deserialise the rest directly.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut v = Value::deserialize(d)?;
        let method = v
            .as_object_mut()
            .and_then(|o| o.remove("method"))
            .ok_or_else(|| D::Error::custom("a method entry needs a \"method\" field"))?;
        let rest = |v: Value| -> Result<EarsOptions, D::Error> {
            serde_json::from_value(v).map_err(D::Error::custom)
        };
        Ok(match method.as_str() {
            Some("C1") => MethodConfig::C1(rest(v)?),
            Some("C2") => MethodConfig::C2(rest(v)?),
            Some("C3") => MethodConfig::C3(rest(v)?),
            Some("CUSUM") => {
                MethodConfig::Cusum(serde_json::from_value(v).map_err(D::Error::custom)?)
            }
            Some("CIDARS") => {
                MethodConfig::Cidars(serde_json::from_value(v).map_err(D::Error::custom)?)
            }
            _ => {
                return Err(D::Error::custom(format!(
                    "unknown method {method}, expected C1, C2, C3, CUSUM or CIDARS"
                )))
            }
        })
    }
}

impl MethodConfig {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), ParamError> {
        match self {
            MethodConfig::C1(o) => o.params(EarsMethod::C1).validate(),
            MethodConfig::C2(o) => o.params(EarsMethod::C2).validate(),
            MethodConfig::C3(o) => o.params(EarsMethod::C3).validate(),
            MethodConfig::Cusum(p) => p.validate(),
            MethodConfig::Cidars(p) => p.validate(),
        }
    }
}

/// One notifiable disease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiseaseConfig {
    /// phip's id of the disease, used as the series key.
    pub id: String,
    /// English name.
    pub name_en: String,
    /// Chinese name.
    pub name_zh: String,
    /// The code that names the disease in alerts.
    #[serde(default)]
    pub coding: Option<Coding>,
    /// Diagnosis codes.
    #[serde(default)]
    pub codes: Vec<CodeRule>,
    /// Laboratory tests.
    #[serde(default)]
    pub lab_tests: Vec<LabRule>,
    /// Detection methods to run.
    #[serde(default)]
    pub methods: Vec<MethodConfig>,
}

impl DiseaseConfig {
    /// The label alerts carry.
    pub fn label(&self) -> DiseaseLabel {
        DiseaseLabel {
            id: self.id.clone(),
            name_en: self.name_en.clone(),
            name_zh: self.name_zh.clone(),
            coding: self.coding.clone(),
        }
    }

    fn matches_diagnosis(&self, concept: &Value) -> bool {
        self.codes.iter().any(|r| r.matches_concept(concept))
    }

    fn matches_lab(&self, code: &Value, value: &Value) -> bool {
        self.lab_tests.iter().any(|l| {
            l.test.matches_concept(code) && l.positive.iter().any(|p| p.matches_concept(value))
        })
    }
}

/// The surveillance configuration: the notifiable diseases.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurveillanceConfig {
    /// Diseases, matched in order (the first match classifies a resource).
    pub diseases: Vec<DiseaseConfig>,
}

/// A resource recognised as a case.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Classification<'a> {
    /// The disease.
    pub disease: &'a DiseaseConfig,
    /// The date the case counts on.
    pub date: NaiveDate,
}

impl SurveillanceConfig {
    /// The built-in configuration (`data/default-config.json`, see the module documentation).
    pub fn builtin() -> Self {
        // Compiled-in data covered by tests: a failure is a build defect, and an empty
        // configuration (nothing classified) is safer than a panic in a server.
        serde_json::from_str(BUILTIN).unwrap_or_default()
    }

    /// Parses a JSON configuration and checks every method's parameters and that disease ids
    /// are unique.
    pub fn from_json(text: &str) -> Result<Self, ParamError> {
        let cfg: Self = serde_json::from_str(text)
            .map_err(|e| ParamError::new(format!("invalid surveillance configuration: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every method's parameters and that disease ids are unique and non-empty.
    pub fn validate(&self) -> Result<(), ParamError> {
        let mut seen = std::collections::HashSet::new();
        for d in &self.diseases {
            if d.id.is_empty() || !seen.insert(d.id.as_str()) {
                return Err(ParamError::new(format!(
                    "disease id {:?} is empty or repeated",
                    d.id
                )));
            }
            for m in &d.methods {
                m.validate()?;
            }
        }
        Ok(())
    }

    /// The disease with id `id`.
    pub fn disease(&self, id: &str) -> Option<&DiseaseConfig> {
        self.diseases.iter().find(|d| d.id == id)
    }

    /// Classifies a FHIR R4 `Condition` or `Observation` as a case of a configured disease,
    /// dated by onset (Condition: `onsetDateTime`, `onsetPeriod.start`, then `recordedDate`;
    /// Observation: `effectiveDateTime`, `effectivePeriod.start`, `effectiveInstant`, then
    /// `issued`). `None` for other resources, unmatched codes, records that are not cases
    /// (a refuted or entered-in-error Condition; a cancelled or entered-in-error
    /// Observation), and records without a full date to count them on.
    pub fn classify(&self, resource: &Value) -> Option<Classification<'_>> {
        let (disease, date) = match resource.get("resourceType")?.as_str()? {
            "Condition" => {
                let status = resource.get("verificationStatus").unwrap_or(&Value::Null);
                if ["refuted", "entered-in-error"]
                    .iter()
                    .any(|s| codings(status).any(|(_, c)| c == *s))
                {
                    return None;
                }
                let code = resource.get("code")?;
                let disease = self.diseases.iter().find(|d| d.matches_diagnosis(code))?;
                let date = first_date(
                    resource,
                    &[
                        &["onsetDateTime"],
                        &["onsetPeriod", "start"],
                        &["recordedDate"],
                    ],
                )?;
                (disease, date)
            }
            "Observation" => {
                let status = resource.get("status").and_then(Value::as_str);
                if matches!(status, Some("cancelled" | "entered-in-error")) {
                    return None;
                }
                let code = resource.get("code").unwrap_or(&Value::Null);
                let value = resource.get("valueCodeableConcept").unwrap_or(&Value::Null);
                let disease = self.diseases.iter().find(|d| {
                    d.matches_diagnosis(code)
                        || d.matches_diagnosis(value)
                        || d.matches_lab(code, value)
                })?;
                let date = first_date(
                    resource,
                    &[
                        &["effectiveDateTime"],
                        &["effectivePeriod", "start"],
                        &["effectiveInstant"],
                        &["issued"],
                    ],
                )?;
                (disease, date)
            }
            _ => return None,
        };
        Some(Classification { disease, date })
    }
}

/// The (system, code) pairs of a CodeableConcept.
fn codings(concept: &Value) -> impl Iterator<Item = (&str, &str)> {
    concept
        .get("coding")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c.get("system")?.as_str()?, c.get("code")?.as_str()?)))
}

/// The first of `paths` holding a FHIR date/dateTime/instant with at least a full day.
fn first_date(resource: &Value, paths: &[&[&str]]) -> Option<NaiveDate> {
    paths.iter().find_map(|path| {
        let v = path.iter().try_fold(resource, |v, k| v.get(*k))?;
        fhir_day(v.as_str()?)
    })
}

/// The calendar day of a FHIR `date`/`dateTime`/`instant` as written (its local date: a case
/// counts on the day in the reporter's time zone). Partial dates (`2024`, `2024-05`) give
/// `None`.
fn fhir_day(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()
}
