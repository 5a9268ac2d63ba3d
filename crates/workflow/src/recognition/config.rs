//! Recognition windows: how long a result of each test category is recognised by other
//! institutions, with per-region overrides.
//!
//! The defaults ship with the crate (`defaults.json`): blood counts 7 days, clinical
//! chemistry 14, glycated hemoglobin 90, imaging 30 — each category listing the LOINC codes it
//! covers. A region overrides a category's window in the configuration (`regions`) or, at run
//! time, by storing a `Basic` resource (see [`window_override`]) — so a regional health
//! commission changes its catalogue over the FHIR API without a redeploy.

use serde::Deserialize;
use serde_json::Value;

use crate::referral::WORKFLOW_SYSTEM;

/// `Basic.code` (in [`WORKFLOW_SYSTEM`]) of a stored regional window override.
pub const WINDOW_OVERRIDE_CODE: &str = "recognition-window";
/// Extension on the override: `valueCode`, the GB/T 2260 division it applies to.
pub const DIVISION_EXTENSION: &str = "urn:phip:workflow:division";
/// Extension on the override: `valueCode`, the category id.
pub const CATEGORY_EXTENSION: &str = "urn:phip:workflow:recognition-category";
/// Extension on the override: `valueInteger`, the window in days.
pub const DAYS_EXTENSION: &str = "urn:phip:workflow:recognition-days";

/// A category of tests sharing a recognition window.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Category {
    /// Stable id, e.g. `hematology`.
    pub id: String,
    /// Human-readable name.
    pub display: String,
    /// Days a result stays recognisable, counted from its effective time.
    pub days: i64,
    /// LOINC codes in the category.
    pub codes: Vec<String>,
}

/// A region's window for one category.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RegionOverride {
    /// GB/T 2260 division (province, prefecture or county) the override applies within.
    pub division: String,
    /// The category id.
    pub category: String,
    /// The window in days.
    pub days: i64,
}

/// Categories and regional overrides.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RecognitionConfig {
    /// Test categories.
    pub categories: Vec<Category>,
    /// Regional overrides from the configuration.
    #[serde(default)]
    pub regions: Vec<RegionOverride>,
}

impl Default for RecognitionConfig {
    fn default() -> Self {
        // The file is part of the crate and checked by a test, so failing here is a build bug.
        Self::from_json(include_str!("defaults.json")).unwrap_or(Self {
            categories: Vec::new(),
            regions: Vec::new(),
        })
    }
}

impl RecognitionConfig {
    /// Parses a configuration document.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The category a LOINC code belongs to.
    pub fn category_of(&self, loinc: &str) -> Option<&Category> {
        self.categories
            .iter()
            .find(|c| c.codes.iter().any(|code| code == loinc))
    }

    /// The window of `category` for a caller in `division`: the most specific override whose
    /// division contains the caller's (among `extra`, then the configuration's), else the
    /// category's default.
    pub fn window_days(
        &self,
        category: &Category,
        division: Option<&str>,
        extra: &[RegionOverride],
    ) -> i64 {
        let Some(division) = division else {
            return category.days;
        };
        extra
            .iter()
            .chain(&self.regions)
            .filter(|o| o.category == category.id)
            .filter(|o| phip_security::division::contains(&o.division, division))
            // A county (6 significant digits) beats its prefecture, which beats its province.
            .max_by_key(|o| o.division.trim_end_matches('0').len())
            .map(|o| o.days)
            .unwrap_or(category.days)
    }
}

/// Reads a stored override (`Basic` with code [`WORKFLOW_SYSTEM`]|[`WINDOW_OVERRIDE_CODE`]).
pub fn window_override(basic: &Value) -> Option<RegionOverride> {
    let extension = |url: &str| {
        basic
            .get("extension")?
            .as_array()?
            .iter()
            .find(|e| e.get("url").and_then(Value::as_str) == Some(url))
    };
    let code = |url: &str| {
        extension(url)
            .and_then(|e| e.get("valueCode"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let days = extension(DAYS_EXTENSION)
        .and_then(|e| e.get("valueInteger"))
        .and_then(Value::as_i64)?;
    let division = code(DIVISION_EXTENSION)?;
    // A region's policy is set from within it: an override stored by an institution (its
    // holder division, stamped by the server) counts only for divisions inside the writer's
    // own; one stored by the platform's operator (no holder) counts everywhere.
    if let Some(holder) = phip_fhir::access::tag_code(basic, phip_fhir::access::DIVISION_TAG_SYSTEM)
    {
        if !phip_security::division::contains(holder, &division) {
            return None;
        }
    }
    Some(RegionOverride {
        division,
        category: code(CATEGORY_EXTENSION)?,
        days,
    })
}

/// The search for stored overrides.
pub(crate) fn override_query() -> Vec<(String, String)> {
    vec![(
        "code".to_owned(),
        format!("{WORKFLOW_SYSTEM}|{WINDOW_OVERRIDE_CODE}"),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_most_specific_region_wins() {
        let config = RecognitionConfig::default();
        let hematology = config.category_of("718-7").expect("hemoglobin").clone();
        assert_eq!(hematology.days, 7);
        assert_eq!(config.category_of("24627-2").map(|c| c.days), Some(30));
        let overrides = vec![
            RegionOverride {
                division: "320000".into(),
                category: "hematology".into(),
                days: 5,
            },
            RegionOverride {
                division: "320100".into(),
                category: "hematology".into(),
                days: 3,
            },
        ];
        assert_eq!(
            config.window_days(&hematology, Some("320102"), &overrides),
            3
        );
        assert_eq!(
            config.window_days(&hematology, Some("320481"), &overrides),
            5
        );
        assert_eq!(
            config.window_days(&hematology, Some("110101"), &overrides),
            7
        );
        assert_eq!(config.window_days(&hematology, None, &overrides), 7);
    }

    #[test]
    fn an_institution_sets_the_policy_of_its_own_region_only() {
        let stored = |holder: Option<&str>, division: &str| {
            let mut basic = serde_json::json!({
                "resourceType": "Basic",
                "code": {"coding": [{"system": WORKFLOW_SYSTEM, "code": WINDOW_OVERRIDE_CODE}]},
                "extension": [
                    {"url": DIVISION_EXTENSION, "valueCode": division},
                    {"url": CATEGORY_EXTENSION, "valueCode": "hematology"},
                    {"url": DAYS_EXTENSION, "valueInteger": 1}
                ]
            });
            if let Some(holder) = holder {
                basic["meta"] = serde_json::json!({"tag": [
                    {"system": phip_fhir::access::DIVISION_TAG_SYSTEM, "code": holder}]});
            }
            window_override(&basic)
        };
        // A county clinic cannot set its province's window; the province and the operator can.
        assert!(stored(Some("320481"), "320000").is_none());
        assert!(stored(Some("320481"), "320481").is_some());
        assert!(stored(Some("320000"), "320481").is_some());
        assert!(stored(None, "320000").is_some());
    }
}
