//! Indicator roll-ups: a parent's `MeasureReport` for its own division is the sum of the
//! population counts its children reported for the same Measure and period.
//!
//! Counts (initial population, denominator, numerator, …) are summed; rates are recomputed
//! from the sums, never averaged. A node keeps each child's reports for drill-down, so the
//! same area can be reported at two levels (a city's roll-up and its counties'): only the
//! widest division present is counted, so nothing is counted twice. A report's division is
//! `subject.identifier` or `reporter.identifier` with system `urn:phip:division`, else the
//! record's holder-division tag.

use std::collections::{BTreeMap, BTreeSet};

use phip_engine::{FhirError, FhirResult};
use phip_fhir::search::query;
use phip_store::{PageCursor, SearchRequest, Transaction, WriteRequest};
use serde_json::{json, Value};

use crate::entry::has_tag;
use crate::{hash_id, FEDERATION_SYSTEM, ROLLUP_TAG};

/// The division coding system (the engine's holder-division tag uses it too).
pub const DIVISION_SYSTEM: &str = "urn:phip:division";

/// What reports are summed over: one Measure and one period.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReportKey {
    /// The Measure's canonical URL.
    pub measure: String,
    /// `period.start`.
    pub start: String,
    /// `period.end`.
    pub end: String,
}

impl ReportKey {
    /// The key of a MeasureReport, if it names a Measure and a period.
    pub fn of(report: &Value) -> Option<Self> {
        Some(Self {
            measure: report.get("measure")?.as_str()?.to_owned(),
            start: report.pointer("/period/start")?.as_str()?.to_owned(),
            end: report.pointer("/period/end")?.as_str()?.to_owned(),
        })
    }
}

/// The GB/T 2260 division a report is about.
pub fn division_of(report: &Value) -> Option<String> {
    for element in ["subject", "reporter"] {
        let identifier = report.get(element).and_then(|r| r.get("identifier"));
        if let Some(identifier) = identifier {
            if identifier.get("system").and_then(Value::as_str) == Some(DIVISION_SYSTEM) {
                if let Some(value) = identifier.get("value").and_then(Value::as_str) {
                    return Some(value.to_owned());
                }
            }
        }
    }
    report
        .pointer("/meta/tag")?
        .as_array()?
        .iter()
        .find(|t| t.get("system").and_then(Value::as_str) == Some(DIVISION_SYSTEM))?
        .get("code")?
        .as_str()
        .map(str::to_owned)
}

/// Whether `division` lies inside `own` (the national node, `000000`, contains everything).
fn inside(own: &str, division: &str) -> bool {
    own != division && (own == "000000" || phip_security::division::contains(own, division))
}

fn concept_key(concept: Option<&Value>) -> String {
    concept
        .and_then(|c| c.get("coding"))
        .and_then(Value::as_array)
        .and_then(|codings| codings.first())
        .map(|c| {
            format!(
                "{}|{}",
                c.get("system").and_then(Value::as_str).unwrap_or(""),
                c.get("code").and_then(Value::as_str).unwrap_or("")
            )
        })
        .or_else(|| {
            concept
                .and_then(|c| c.get("text"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// Sums `reports` (already one per division, none inside another) into groups: group code →
/// population code → (the code as given, the sum).
type Sums = BTreeMap<String, (Option<Value>, BTreeMap<String, (Value, u64)>)>;

fn sum(reports: &[&Value]) -> Sums {
    let mut groups: Sums = BTreeMap::new();
    for report in reports {
        for group in report
            .get("group")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let code = group.get("code").cloned();
            let (_, populations) = groups
                .entry(concept_key(code.as_ref()))
                .or_insert_with(|| (code, BTreeMap::new()));
            for population in group
                .get("population")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let count = population.get("count").and_then(Value::as_u64).unwrap_or(0);
                let code = population.get("code").cloned().unwrap_or(Value::Null);
                let slot = populations
                    .entry(concept_key(population.get("code")))
                    .or_insert_with(|| (code, 0));
                slot.1 = slot.1.saturating_add(count);
            }
        }
    }
    groups
}

fn population_code(code: &Value) -> Option<&str> {
    code.get("coding")?
        .as_array()?
        .iter()
        .find_map(|c| c.get("code").and_then(Value::as_str))
}

/// The groups of the summed report: counts, and the proportion numerator / denominator
/// (less exclusions) recomputed from them.
fn groups_json(sums: &Sums) -> Vec<Value> {
    sums.values()
        .map(|(code, populations)| {
            let mut group = serde_json::Map::new();
            if let Some(code) = code {
                group.insert("code".into(), code.clone());
            }
            let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
            let list: Vec<Value> = populations
                .values()
                .map(|(code, count)| {
                    if let Some(name) = population_code(code) {
                        counts.insert(name, *count);
                    }
                    let mut p = serde_json::Map::new();
                    if !code.is_null() {
                        p.insert("code".into(), code.clone());
                    }
                    p.insert("count".into(), json!(count));
                    Value::Object(p)
                })
                .collect();
            group.insert("population".into(), Value::Array(list));
            if let (Some(numerator), Some(denominator)) =
                (counts.get("numerator"), counts.get("denominator"))
            {
                let excluded = counts.get("denominator-exclusion").copied().unwrap_or(0);
                let base = denominator.saturating_sub(excluded);
                if base > 0 {
                    let score = *numerator as f64 / base as f64;
                    if let Some(number) = serde_json::Number::from_f64((score * 1e6).round() / 1e6)
                    {
                        group.insert("measureScore".into(), json!({"value": number}));
                    }
                }
            }
            Value::Object(group)
        })
        .collect()
}

/// The reports to sum for `key` at a node serving `own`: the latest per division strictly
/// inside `own`, leaving out divisions inside another present one.
fn inputs<'a>(own: &str, key: &ReportKey, reports: &'a [Value]) -> Vec<&'a Value> {
    let mut latest: BTreeMap<String, &Value> = BTreeMap::new();
    for report in reports {
        if has_tag(report, FEDERATION_SYSTEM, ROLLUP_TAG)
            && division_of(report).as_deref() == Some(own)
        {
            continue;
        }
        if ReportKey::of(report).as_ref() != Some(key)
            || report.get("status").and_then(Value::as_str) != Some("complete")
        {
            continue;
        }
        let Some(division) = division_of(report) else {
            continue;
        };
        if !inside(own, &division) {
            continue;
        }
        let updated = |r: &Value| {
            r.pointer("/meta/lastUpdated")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        match latest.get(&division) {
            Some(existing) if updated(existing) >= updated(report) => {}
            _ => {
                latest.insert(division, report);
            }
        }
    }
    let divisions: BTreeSet<String> = latest.keys().cloned().collect();
    latest
        .into_iter()
        .filter(|(division, _)| {
            !divisions
                .iter()
                .any(|other| other != division && inside(other, division))
        })
        .map(|(_, report)| report)
        .collect()
}

/// The roll-up report of `own` for `key` from `reports` (any MeasureReports; those that do
/// not count are skipped), or `None` when no child reported.
pub fn rollup(own: &str, key: &ReportKey, reports: &[Value]) -> Option<Value> {
    let chosen = inputs(own, key, reports);
    if chosen.is_empty() {
        return None;
    }
    let contributors: Vec<Value> = chosen
        .iter()
        .filter_map(|r| division_of(r))
        .map(|d| json!({"url": "https://phip.cn/fhir/StructureDefinition/rollup-contributor", "valueString": d}))
        .collect();
    Some(json!({
        "resourceType": "MeasureReport",
        "id": rollup_id(own, key),
        "meta": {"tag": [
            {"system": FEDERATION_SYSTEM, "code": ROLLUP_TAG, "display": "Sum of the children's reports"},
            {"system": DIVISION_SYSTEM, "code": own}
        ]},
        "extension": contributors,
        "status": "complete",
        "type": "summary",
        "measure": key.measure,
        "subject": {"identifier": {"system": DIVISION_SYSTEM, "value": own}},
        "period": {"start": key.start, "end": key.end},
        "group": groups_json(&sum(&chosen)),
    }))
}

/// The id of a node's roll-up report.
pub fn rollup_id(own: &str, key: &ReportKey) -> String {
    hash_id("rollup", &[own, &key.measure, &key.start, &key.end])
}

/// Recomputes the roll-up of `own` for `key` inside `tx`; writes it only when it changed.
pub fn recompute(tx: &mut dyn Transaction, own: &str, key: &ReportKey) -> FhirResult<bool> {
    let params = vec![("measure".to_owned(), key.measure.clone())];
    let parsed = query::parse(Some("MeasureReport"), &params, true)
        .map_err(|outcome| FhirError::from_outcome(500, outcome))?;
    let mut reports = Vec::new();
    let mut cursor = PageCursor::First;
    loop {
        let page = tx.search(&SearchRequest {
            query: parsed.query.clone(),
            cursor,
            page_size: 500,
            access: phip_store::Access::Server,
        })?;
        reports.extend(page.matches.into_iter().filter_map(|m| m.resource));
        match page.next {
            Some(next) => cursor = PageCursor::After(next),
            None => break,
        }
    }
    let id = rollup_id(own, key);
    let current = tx.read("MeasureReport", &id)?;
    let next = rollup(own, key, &reports);
    let unchanged = match (&next, current.as_ref().and_then(|c| c.resource.as_ref())) {
        (Some(new), Some(old)) => new.get("group") == old.get("group"),
        (None, None) => true,
        _ => false,
    };
    if unchanged {
        return Ok(false);
    }
    let resource = next.map(|mut report| {
        report["date"] =
            json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        phip_fhir::access::mark_server_owned(&mut report, "rollup-report");
        report
    });
    if resource.is_none() && current.as_ref().is_none_or(|c| c.is_deleted()) {
        return Ok(false);
    }
    tx.write(WriteRequest {
        resource_type: "MeasureReport".into(),
        id,
        resource,
        expected_version: Some(current.map(|c| c.version_id).unwrap_or(0)),
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(division: &str, numerator: u64, denominator: u64, updated: &str) -> Value {
        json!({
            "resourceType": "MeasureReport", "status": "complete", "type": "summary",
            "meta": {"lastUpdated": updated},
            "measure": "https://phip.cn/fhir/Measure/ehr-coverage",
            "subject": {"identifier": {"system": DIVISION_SYSTEM, "value": division}},
            "period": {"start": "2026-10-01", "end": "2026-10-31"},
            "group": [{"population": [
                {"code": {"coding": [{"code": "numerator"}]}, "count": numerator},
                {"code": {"coding": [{"code": "denominator"}]}, "count": denominator}
            ]}]
        })
    }

    fn counts(report: &Value) -> (u64, u64) {
        let populations = report["group"][0]["population"].as_array().unwrap();
        let find = |name: &str| {
            populations
                .iter()
                .find(|p| p["code"]["coding"][0]["code"] == name)
                .and_then(|p| p["count"].as_u64())
                .unwrap()
        };
        (find("numerator"), find("denominator"))
    }

    #[test]
    fn sums_counts_and_recomputes_the_rate() {
        let key = ReportKey::of(&report("440103", 0, 0, "")).unwrap();
        let reports = vec![
            report("440103", 90, 100, "2026-11-01T00:00:00Z"),
            report("440104", 10, 300, "2026-11-01T00:00:00Z"),
            // Another province: not ours.
            report("110101", 5, 5, "2026-11-01T00:00:00Z"),
        ];
        let sum = rollup("440000", &key, &reports).unwrap();
        assert_eq!(counts(&sum), (100, 400));
        // 100 / 400, not the mean of 0.9 and 0.033.
        assert_eq!(
            sum["group"][0]["measureScore"]["value"].as_f64(),
            Some(0.25)
        );
        assert_eq!(division_of(&sum).as_deref(), Some("440000"));
    }

    #[test]
    fn latest_per_division_and_widest_division_only() {
        let key = ReportKey::of(&report("440103", 0, 0, "")).unwrap();
        let reports = vec![
            report("440103", 1, 10, "2026-11-01T00:00:00Z"),
            report("440103", 2, 10, "2026-11-02T00:00:00Z"),
            // The city's own roll-up already contains its county 440103.
            report("440100", 7, 70, "2026-11-02T00:00:00Z"),
            report("440200", 3, 30, "2026-11-02T00:00:00Z"),
        ];
        let sum = rollup("440000", &key, &reports).unwrap();
        assert_eq!(counts(&sum), (10, 100));
        let only_counties = vec![
            report("440103", 1, 10, "2026-11-01T00:00:00Z"),
            report("440103", 2, 10, "2026-11-02T00:00:00Z"),
        ];
        assert_eq!(
            counts(&rollup("440000", &key, &only_counties).unwrap()),
            (2, 10)
        );
        assert!(rollup("110000", &key, &only_counties).is_none());
    }

    #[test]
    fn national_sums_provinces() {
        let key = ReportKey::of(&report("440000", 0, 0, "")).unwrap();
        let reports = vec![
            report("440000", 1, 2, "2026-11-02T00:00:00Z"),
            report("110000", 3, 4, "2026-11-02T00:00:00Z"),
        ];
        assert_eq!(counts(&rollup("000000", &key, &reports).unwrap()), (4, 6));
    }
}
