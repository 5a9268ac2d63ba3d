//! One pass over the store counting every indicator's numerator and denominator per residence
//! division, then sums for any division (see [`Facts::ratio`]).
//!
//! Population denominators are FHIR `Group` resources (`actual: false`) carrying the census
//! count in `quantity` and the division in an identifier `urn:phip:population|{code}`. A
//! division's population is its own Group's when it has one, else the sum of the nearest
//! Groups below it (so counties' census figures add up to their city and province).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use phip_engine::{Engine, FhirResult};
use phip_security::division;
use phip_surveillance::source::{patient_id, residence_division, scan, Residences};
use phip_surveillance::SurveillanceConfig;
use serde_json::Value;

use crate::measures::{Measure, Scoring};
use crate::period::{fhir_day, Period};

/// Identifier system of population Groups.
pub const POPULATION_SYSTEM: &str = "urn:phip:population";
/// Code of referral Tasks (`Task.code`).
pub const REFERRAL_CODE: (&str, &str) = ("urn:phip:workflow", "referral");

const LOINC: &str = "http://loinc.org";
const SYSTOLIC: &str = "8480-6";
const DIASTOLIC: &str = "8462-4";
const BP_PANEL: &str = "85354-9";

/// A numerator over a denominator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ratio {
    /// Numerator count.
    pub numerator: u64,
    /// Denominator count.
    pub denominator: u64,
}

impl Ratio {
    /// The score by `scoring`; `None` when the denominator is 0.
    pub fn score(&self, scoring: Scoring) -> Option<f64> {
        if self.denominator == 0 {
            return None;
        }
        let p = self.numerator as f64 / self.denominator as f64;
        Some(match scoring {
            Scoring::Proportion => p,
            Scoring::PerHundredThousand => p * 100_000.0,
        })
    }
}

/// Counts per measure per residence division for one period.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The period counted.
    pub period: Option<Period>,
    counts: BTreeMap<(&'static str, String), Ratio>,
    populations: BTreeMap<String, u64>,
    /// Records that counted towards some indicator but could not be placed in a division.
    pub unplaced: u64,
}

impl Facts {
    /// Counts everything for `period` (one paged scan each of Patient, Encounter, Contract,
    /// Condition, blood-pressure Observations, referral Tasks, ServiceRequests, population
    /// Groups, and the surveillance case reports).
    pub fn collect(
        engine: &Engine,
        config: &SurveillanceConfig,
        period: &Period,
    ) -> FhirResult<Facts> {
        let mut facts = Facts {
            period: Some(period.clone()),
            ..Facts::default()
        };
        let mut tx = engine.store().begin_read()?;
        let tx = tx.as_mut();

        // Residents: the EHRs, one per person. With the patient index on, each person has a
        // golden record and each institution's Patient is a source linked to it (`link` of
        // type `refer`); persons are counted once, through their sources, at the residence of
        // the first source seen. Without the index every Patient is its own person.
        let mut residences = Vec::new();
        let mut person_of: HashMap<String, String> = HashMap::new();
        let mut person_home: HashMap<String, String> = HashMap::new();
        scan(tx, "Patient", &[], |p| {
            let Some(id) = p.get("id").and_then(Value::as_str) else {
                return;
            };
            let home = residence_division(p);
            residences.push((id.to_string(), home.clone()));
            if phip_engine::mpi::is_golden(p)
                || p.get("active").and_then(Value::as_bool) == Some(false)
            {
                return;
            }
            let person = golden_of(p).unwrap_or(id).to_string();
            person_of.insert(id.to_string(), person.clone());
            if person_home.contains_key(&person) {
                return;
            }
            match home {
                Some(d) => {
                    facts.add("ehr-coverage", &d, 1, 0);
                    facts.add("ehr-utilisation", &d, 0, 1);
                    person_home.insert(person, d);
                }
                None => facts.unplaced += 1,
            }
        })?;
        let residences = Residences::from_pairs(residences);
        // A patient id's person, if that person is a counted resident.
        let person = |id: &str| -> Option<String> {
            person_of
                .get(id)
                .filter(|p| person_home.contains_key(*p))
                .cloned()
        };
        let resident = |person: &str| -> Option<String> { person_home.get(person).cloned() };

        // EHR utilisation: residents with an encounter starting in the period.
        let mut used: HashSet<String> = HashSet::new();
        scan(tx, "Encounter", &[], |e| {
            let start = e
                .pointer("/period/start")
                .and_then(Value::as_str)
                .and_then(fhir_day);
            if let (Some(day), Some(pid)) = (start, patient_id(e)) {
                if period.contains(day) {
                    if let Some(p) = person(pid) {
                        used.insert(p);
                    }
                }
            }
        })?;
        for pid in &used {
            if let Some(d) = resident(pid) {
                facts.add("ehr-utilisation", &d, 1, 0);
            }
        }

        // Family-doctor contracts: executed, in force during the period.
        let mut contracted: HashSet<String> = HashSet::new();
        scan(tx, "Contract", &[], |c| {
            if c.get("status").and_then(Value::as_str) != Some("executed") {
                return;
            }
            let day = |p: &str| c.pointer(p).and_then(Value::as_str).and_then(fhir_day);
            if !period.overlaps(day("/applies/start"), day("/applies/end")) {
                return;
            }
            let subjects = c.get("subject").and_then(Value::as_array);
            for s in subjects.into_iter().flatten() {
                if let Some(pid) = s
                    .get("reference")
                    .and_then(Value::as_str)
                    .and_then(|r| r.strip_prefix("Patient/"))
                {
                    if let Some(p) = person(pid) {
                        contracted.insert(p);
                    }
                }
            }
        })?;
        for pid in &contracted {
            if let Some(d) = resident(pid) {
                facts.add("family-doctor-contract", &d, 1, 0);
            }
        }

        // Hypertension control.
        let mut hypertensive: HashSet<String> = HashSet::new();
        scan(tx, "Condition", &[], |c| {
            if is_active_hypertension(c) {
                if let Some(p) = patient_id(c).and_then(person) {
                    hypertensive.insert(p);
                }
            }
        })?;
        let mut latest: HashMap<String, (DateTime<Utc>, bool)> = HashMap::new();
        let bp_codes = [SYSTOLIC, DIASTOLIC, BP_PANEL]
            .map(|c| format!("{LOINC}|{c}"))
            .join(",");
        scan(tx, "Observation", &[("code".into(), bp_codes)], |o| {
            let Some(pid) = patient_id(o).and_then(person) else {
                return;
            };
            if !hypertensive.contains(&pid) {
                return;
            }
            if matches!(
                o.get("status").and_then(Value::as_str),
                Some("cancelled" | "entered-in-error")
            ) {
                return;
            }
            let Some(when) = effective_instant(o) else {
                return;
            };
            if !period.contains(when.date_naive()) {
                return;
            }
            let Some(controlled) = bp_controlled(o) else {
                return;
            };
            let entry = latest.entry(pid).or_insert((when, controlled));
            if when > entry.0 {
                *entry = (when, controlled);
            }
        })?;
        for (pid, (_, controlled)) in &latest {
            if let Some(d) = resident(pid) {
                facts.add("hypertension-control", &d, u64::from(*controlled), 1);
            }
        }

        // Referral completion.
        let referral = [(
            "code".to_string(),
            format!("{}|{}", REFERRAL_CODE.0, REFERRAL_CODE.1),
        )];
        let mut unplaced = 0;
        scan(tx, "Task", &referral, |t| {
            let status = t.get("status").and_then(Value::as_str).unwrap_or("");
            if matches!(status, "cancelled" | "entered-in-error") {
                return;
            }
            let authored = t
                .get("authoredOn")
                .and_then(Value::as_str)
                .and_then(fhir_day);
            if !authored.is_some_and(|d| period.contains(d)) {
                return;
            }
            match residences.place_of(t) {
                Some(d) => facts.add(
                    "referral-completion",
                    &d,
                    u64::from(status == "completed"),
                    1,
                ),
                None => unplaced += 1,
            }
        })?;
        facts.unplaced += unplaced;

        // Result recognition: covered orders, and those revoked in favour of the prior result.
        let mut unplaced = 0;
        scan(tx, "ServiceRequest", &[], |order| {
            if !phip_workflow::recognition::advisory::was_covered(order) {
                return;
            }
            let status = order.get("status").and_then(Value::as_str).unwrap_or("");
            if status == "entered-in-error" {
                return;
            }
            let authored = order
                .get("authoredOn")
                .or_else(|| order.pointer("/meta/lastUpdated"))
                .and_then(Value::as_str)
                .and_then(fhir_day);
            if !authored.is_some_and(|d| period.contains(d)) {
                return;
            }
            match residences.place_of(order) {
                Some(d) => facts.add("result-recognition", &d, u64::from(status == "revoked"), 1),
                None => unplaced += 1,
            }
        })?;
        facts.unplaced += unplaced;

        // Population Groups.
        let population = [("identifier".to_string(), format!("{POPULATION_SYSTEM}|"))];
        scan(tx, "Group", &population, |g| {
            let code = g
                .get("identifier")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|i| i.get("system").and_then(Value::as_str) == Some(POPULATION_SYSTEM))
                .and_then(|i| i.get("value"))
                .and_then(Value::as_str);
            let quantity = g.get("quantity").and_then(Value::as_u64);
            if let (Some(code), Some(q)) = (code, quantity) {
                if division::is_valid_code(code) {
                    facts.populations.insert(code.to_string(), q);
                }
            }
        })?;

        // Notifiable disease incidence.
        let cases = phip_surveillance::run::read_cases(engine, config, period.start, period.end)?;
        for e in &cases.events {
            facts.add("notifiable-incidence", &e.division, 1, 0);
        }
        facts.unplaced += cases.unplaced;
        Ok(facts)
    }

    fn add(&mut self, measure: &'static str, division: &str, numerator: u64, denominator: u64) {
        let r = self
            .counts
            .entry((measure, division.to_string()))
            .or_default();
        r.numerator += numerator;
        r.denominator += denominator;
    }

    /// The population of `code`: its own Group's, else the sum of the nearest Groups below.
    pub fn population(&self, code: &str) -> Option<u64> {
        if let Some(p) = self.populations.get(code) {
            return Some(*p);
        }
        let inside: Vec<&str> = self
            .populations
            .keys()
            .map(String::as_str)
            .filter(|g| division::contains(code, g))
            .collect();
        // The nearest Groups: those with no other Group between them and `code`.
        let nearest = inside
            .iter()
            .filter(|g| !inside.iter().any(|h| h != *g && division::contains(h, g)));
        let mut total = None;
        for g in nearest {
            *total.get_or_insert(0) += self.populations.get(*g).copied().unwrap_or(0);
        }
        total
    }

    /// The measure's numerator and denominator for `code`: the sums over every division it
    /// contains (itself included). Population-based measures take [`Self::population`] as
    /// denominator (0 when no Group covers the division).
    pub fn ratio(&self, measure: &Measure, code: &str) -> Ratio {
        let mut r = Ratio::default();
        for ((m, d), v) in &self.counts {
            if *m == measure.id && division::contains(code, d) {
                r.numerator += v.numerator;
                r.denominator += v.denominator;
            }
        }
        if matches!(
            measure.id,
            "ehr-coverage" | "family-doctor-contract" | "notifiable-incidence"
        ) {
            r.denominator = self.population(code).unwrap_or(0);
        }
        r
    }

    /// Every division with a count or a population, and their ancestors.
    pub fn divisions(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for code in self
            .counts
            .keys()
            .map(|(_, d)| d)
            .chain(self.populations.keys())
        {
            out.insert(code.clone());
            out.extend(division::ancestors(code));
        }
        out
    }
}

/// The golden record a source Patient is linked to (`link` of type `refer`), by id.
fn golden_of(p: &Value) -> Option<&str> {
    p.get("link")?
        .as_array()?
        .iter()
        .find(|l| l.get("type").and_then(Value::as_str) == Some("refer"))?
        .pointer("/other/reference")?
        .as_str()?
        .strip_prefix("Patient/")
}

fn is_active_hypertension(c: &Value) -> bool {
    let coded = |s: &str, code: &str| match s {
        "http://hl7.org/fhir/sid/icd-10" | "http://hl7.org/fhir/sid/icd-10-cn" => {
            ["I10", "I11", "I12", "I13", "I15"]
                .iter()
                .any(|p| code.starts_with(p))
        }
        "http://snomed.info/sct" => code == "38341003",
        _ => false,
    };
    let codings = |v: Option<&Value>| -> Vec<(String, String)> {
        v.and_then(|v| v.get("coding"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| {
                Some((
                    c.get("system")?.as_str()?.to_string(),
                    c.get("code")?.as_str()?.to_string(),
                ))
            })
            .collect()
    };
    let clinical = codings(c.get("clinicalStatus"));
    let verification = codings(c.get("verificationStatus"));
    let active = clinical.is_empty()
        || clinical
            .iter()
            .any(|(_, code)| matches!(code.as_str(), "active" | "recurrence" | "relapse"));
    let refuted = verification
        .iter()
        .any(|(_, code)| matches!(code.as_str(), "refuted" | "entered-in-error"));
    active
        && !refuted
        && codings(c.get("code"))
            .iter()
            .any(|(s, code)| coded(s, code))
}

/// When an Observation was taken, as an instant (a date-only value counts at midnight UTC).
fn effective_instant(o: &Value) -> Option<DateTime<Utc>> {
    let text = ["effectiveDateTime", "effectiveInstant"]
        .iter()
        .find_map(|k| o.get(*k).and_then(Value::as_str))
        .or_else(|| o.pointer("/effectivePeriod/start").and_then(Value::as_str))?;
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    let day: NaiveDate = fhir_day(text)?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc())
}

/// Whether a blood-pressure Observation is under 140/90 mmHg (each measured part below its
/// limit); `None` when it carries neither value.
fn bp_controlled(o: &Value) -> Option<bool> {
    let code_of = |v: &Value| -> Vec<String> {
        v.pointer("/code/coding")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| c.get("system").and_then(Value::as_str) == Some(LOINC))
            .filter_map(|c| c.get("code").and_then(Value::as_str).map(str::to_string))
            .collect()
    };
    let value = |v: &Value| v.pointer("/valueQuantity/value").and_then(Value::as_f64);
    let mut parts: Vec<(String, f64)> = Vec::new();
    for c in code_of(o) {
        if let Some(x) = value(o) {
            parts.push((c, x));
        }
    }
    for comp in o
        .get("component")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for c in code_of(comp) {
            if let Some(x) = value(comp) {
                parts.push((c, x));
            }
        }
    }
    let mut any = false;
    let mut ok = true;
    for (code, x) in parts {
        match code.as_str() {
            SYSTOLIC => {
                any = true;
                ok &= x < 140.0;
            }
            DIASTOLIC => {
                any = true;
                ok &= x < 90.0;
            }
            _ => {}
        }
    }
    any.then_some(ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measures::Measure;

    fn facts() -> Facts {
        let mut f = Facts::default();
        // Two counties of 深圳 (440300) and one of 广州 (440100), with 深圳 and 广东 Groups too.
        for (code, n) in [
            ("440304", 1_000),
            ("440305", 3_000),
            ("440300", 9_999),
            ("440103", 2_000),
        ] {
            f.populations.insert(code.to_string(), n);
        }
        f.add("ehr-coverage", "440304", 10, 0);
        f.add("ehr-coverage", "440305", 30, 0);
        f.add("ehr-coverage", "440103", 5, 0);
        f.add("referral-completion", "440304", 1, 4);
        f.add("referral-completion", "440305", 9, 10);
        f
    }

    #[test]
    fn population_is_own_group_else_nearest_groups_below() {
        let f = facts();
        assert_eq!(f.population("440304"), Some(1_000));
        // 深圳 has its own census figure; it wins over the sum of its districts.
        assert_eq!(f.population("440300"), Some(9_999));
        // 广东 has none: the nearest Groups below are 深圳's and 440103's, not the districts.
        assert_eq!(f.population("440000"), Some(9_999 + 2_000));
        assert_eq!(f.population("110000"), None);
    }

    #[test]
    fn roll_up_sums_numerators_and_denominators_never_rates() {
        let f = facts();
        let referral = Measure::by_id("referral-completion").unwrap();
        // 1/4 and 9/10: the province is 10/14, not the mean of 25% and 90%.
        let r = f.ratio(referral, "440000");
        assert_eq!((r.numerator, r.denominator), (10, 14));
        assert!((r.score(referral.scoring).unwrap() - 10.0 / 14.0).abs() < 1e-12);
        let coverage = Measure::by_id("ehr-coverage").unwrap();
        let r = f.ratio(coverage, "440300");
        assert_eq!((r.numerator, r.denominator), (40, 9_999));
        assert_eq!(f.ratio(coverage, "310000").score(coverage.scoring), None);
    }

    #[test]
    fn incidence_is_per_hundred_thousand() {
        let r = Ratio {
            numerator: 3,
            denominator: 4_000,
        };
        assert_eq!(r.score(Scoring::PerHundredThousand), Some(75.0));
    }

    #[test]
    fn blood_pressure_control_needs_both_parts_below_limits() {
        let panel = |s: u32, d: u32| {
            serde_json::json!({"component": [
                {"code": {"coding": [{"system": LOINC, "code": SYSTOLIC}]}, "valueQuantity": {"value": s}},
                {"code": {"coding": [{"system": LOINC, "code": DIASTOLIC}]}, "valueQuantity": {"value": d}},
            ]})
        };
        assert_eq!(bp_controlled(&panel(139, 89)), Some(true));
        assert_eq!(bp_controlled(&panel(140, 80)), Some(false));
        assert_eq!(bp_controlled(&panel(120, 90)), Some(false));
        assert_eq!(bp_controlled(&serde_json::json!({})), None);
    }
}
