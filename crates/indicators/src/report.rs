//! The `MeasureReport` of one indicator for one division and period.

use chrono::{SecondsFormat, Utc};
use phip_security::division;
use serde_json::{json, Value};

use crate::facts::Ratio;
use crate::measures::{Measure, Scoring};
use crate::period::Period;

/// Identifier system of indicator reports: value `{measure}-{division}-{period}`, so storing
/// a report again replaces it.
pub const REPORT_ID_SYSTEM: &str = "urn:phip:indicator";
/// The division tag/identifier system (as stamped by the engine on held records).
const DIVISION_SYSTEM: &str = "urn:phip:division";
const POPULATION_CS: &str = "http://terminology.hl7.org/CodeSystem/measure-population";
const IMPROVEMENT_CS: &str = "http://terminology.hl7.org/CodeSystem/measure-improvement-notation";

/// A FHIR R4 summary `MeasureReport`: numerator and denominator as populations, the score
/// as `measureScore` (absent when the denominator is 0), the division as a logical subject and
/// a `urn:phip:division` tag (so region-bound users see their region's reports).
pub fn measure_report(measure: &Measure, code: &str, period: &Period, ratio: Ratio) -> Value {
    let mut subject = json!({"identifier": {"system": DIVISION_SYSTEM, "value": code}});
    if let Some(name) = division::name(code) {
        subject["display"] = json!(name);
    }
    let population = |kind: &str, count: u64| json!({"code": {"coding": [{"system": POPULATION_CS, "code": kind}]}, "count": count});
    let mut group = json!({
        "code": {
            "coding": [{"system": crate::measures::MEASURE_BASE, "code": measure.id, "display": measure.name_en}],
            "text": format!("{} / {}", measure.name_en, measure.name_zh),
        },
        "population": [population("numerator", ratio.numerator), population("denominator", ratio.denominator)],
    });
    if let Some(score) = ratio.score(measure.scoring) {
        let (unit, ucum) = match measure.scoring {
            Scoring::Proportion => ("proportion", "1"),
            Scoring::PerHundredThousand => ("per 100,000", "/10*5"),
        };
        group["measureScore"] = json!({
            "value": round6(score),
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": ucum,
        });
    }
    let improvement = if measure.higher_is_better {
        "increase"
    } else {
        "decrease"
    };
    json!({
        "resourceType": "MeasureReport",
        "meta": {"tag": [{"system": DIVISION_SYSTEM, "code": code}]},
        "identifier": [{"system": REPORT_ID_SYSTEM, "value": format!("{}-{code}-{}", measure.id, period.label)}],
        "status": "complete",
        "type": "summary",
        "measure": measure.url(),
        "subject": subject,
        "date": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        "period": {"start": period.start.to_string(), "end": period.end.to_string()},
        "improvementNotation": {"coding": [{"system": IMPROVEMENT_CS, "code": improvement}]},
        "group": [group],
    })
}

/// Six decimals: enough for any rate, and stable text for comparisons.
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}
