//! Shared fixture of the public-health tests: two Beijing districts with a steady daily count
//! of influenza-like illness, one of which has an outbreak on the day evaluated.

#![allow(dead_code)]

use chrono::{Days, NaiveDate};
use serde_json::{json, Value};

/// The district with the outbreak (朝阳区).
pub const OUTBREAK: &str = "110105";
/// The district whose series stays flat (海淀区).
pub const FLAT: &str = "110108";
/// The day evaluated.
pub const DAY: &str = "2026-10-20";
/// Cases in the outbreak district on [`DAY`].
pub const OUTBREAK_CASES: u32 = 15;
/// Days of steady history before [`DAY`].
pub const HISTORY_DAYS: u64 = 60;

pub fn day() -> NaiveDate {
    NaiveDate::parse_from_str(DAY, "%Y-%m-%d").expect("date")
}

/// The steady count of day `i` (0 = oldest): 2, 3, 2, 3, …
pub fn steady(i: u64) -> u32 {
    2 + (i % 2) as u32
}

fn condition(patient: &str, onset: NaiveDate, verification: &str) -> Value {
    json!({
        "fullUrl": format!("urn:uuid:{}", uuid()),
        "resource": {
            "resourceType": "Condition",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": verification}]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "J11.1", "display": "Influenza with other respiratory manifestations, virus not identified"}]},
            "subject": {"reference": patient},
            "onsetDateTime": format!("{onset}T09:00:00+08:00"),
        },
        "request": {"method": "POST", "url": "Condition"}
    })
}

fn uuid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "00000000-0000-4000-8000-{:012}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A resident of `district`.
pub fn patient_entry(full_url: &str, district: &str, name: &str) -> Value {
    json!({
        "fullUrl": full_url,
        "resource": {
            "resourceType": "Patient",
            "name": [{"text": name}],
            "gender": "female",
            "birthDate": "1990-01-01",
            "address": [{"use": "home", "city": "北京市", "district": district}],
        },
        "request": {"method": "POST", "url": "Patient"}
    })
}

/// A transaction creating one resident per district and their case reports: the steady series
/// over the [`HISTORY_DAYS`] days before [`DAY`] and on it, plus [`OUTBREAK_CASES`] in
/// [`OUTBREAK`] on [`DAY`] (instead of its steady count) and 8 *refuted* reports in [`FLAT`]
/// on [`DAY`], which must not count.
pub fn outbreak_bundle() -> Value {
    let mut entries = Vec::new();
    let a = "urn:uuid:aaaaaaaa-0000-4000-8000-000000000001";
    let b = "urn:uuid:aaaaaaaa-0000-4000-8000-000000000002";
    entries.push(patient_entry(a, OUTBREAK, "王芳"));
    entries.push(patient_entry(b, FLAT, "李娜"));
    let first = day() - Days::new(HISTORY_DAYS);
    for i in 0..=HISTORY_DAYS {
        let d = first + Days::new(i);
        let outbreak_count = if d == day() {
            OUTBREAK_CASES
        } else {
            steady(i)
        };
        for _ in 0..outbreak_count {
            entries.push(condition(a, d, "confirmed"));
        }
        for _ in 0..steady(i) {
            entries.push(condition(b, d, "confirmed"));
        }
    }
    for _ in 0..8 {
        entries.push(condition(b, day(), "refuted"));
    }
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

/// The value of a named parameter of a Parameters resource.
pub fn param<'a>(parameters: &'a Value, name: &str) -> Option<&'a Value> {
    parameters["parameter"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

/// The `alert` parameters of a `$surveillance-run` answer, each as name → value.
pub fn alerts(parameters: &Value) -> Vec<serde_json::Map<String, Value>> {
    parameters["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == "alert")
        .map(|p| {
            p["part"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|part| {
                    let name = part["name"].as_str()?.to_owned();
                    let value = part
                        .as_object()?
                        .iter()
                        .find(|(k, _)| k.starts_with("value"))?
                        .1
                        .clone();
                    Some((name, value))
                })
                .collect()
        })
        .collect()
}
