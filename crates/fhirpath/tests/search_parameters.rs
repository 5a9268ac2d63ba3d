//! Every official R4 SearchParameter expression parses and evaluates without error.

mod common;

use std::path::Path;

use common::MockModel;
use phip_fhirpath::{Expression, NoModel};
use serde_json::{json, Value};

/// (id, base resource types, expression).
type Param = (String, Vec<String>, String);

/// Reads the committed fixture, plus the full official Bundle when it is available.
fn load() -> Vec<(&'static str, Vec<Param>)> {
    let mut sources = Vec::new();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/r4-search-expressions.tsv");
    if let Ok(text) = std::fs::read_to_string(&fixture) {
        let params = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let mut parts = l.splitn(3, '\t');
                let id = parts.next()?.to_owned();
                let bases = parts.next()?.split(',').map(str::to_owned).collect();
                Some((id, bases, parts.next()?.to_owned()))
            })
            .collect();
        sources.push(("fixture", params));
    }
    let shared = Path::new("/work/shared/data/fhir-r4/search-parameters.json");
    if let Ok(text) = std::fs::read_to_string(shared) {
        let bundle: Value = serde_json::from_str(&text).expect("search-parameters.json is JSON");
        let params = bundle["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let r = &e["resource"];
                let bases = r["base"]
                    .as_array()?
                    .iter()
                    .filter_map(|b| b.as_str().map(str::to_owned))
                    .collect();
                Some((
                    r["id"].as_str()?.to_owned(),
                    bases,
                    r["expression"].as_str()?.to_owned(),
                ))
            })
            .collect();
        sources.push(("shared search-parameters.json", params));
    }
    if sources.is_empty() {
        eprintln!(
            "\n!!!!!!!! SKIPPED: no R4 search parameters found (neither {} nor {}) !!!!!!!!\n",
            fixture.display(),
            shared.display()
        );
    }
    sources
}

#[test]
fn all_official_expressions_parse_and_evaluate() {
    let model = MockModel::new();
    for (source, params) in load() {
        assert!(
            params.len() >= 1375,
            "{source}: only {} expressions",
            params.len()
        );
        let mut failures = Vec::new();
        for (id, bases, expr) in &params {
            let parsed = match Expression::parse(expr) {
                Ok(p) => p,
                Err(e) => {
                    failures.push(format!("{id}: parse: {e}"));
                    continue;
                }
            };
            assert_eq!(parsed.source(), expr);
            // A minimal resource of each base type: evaluation must not fail on it.
            for base in bases {
                let resource = json!({"resourceType": base, "id": "x"});
                for result in [
                    parsed.evaluate(&resource, &model),
                    parsed.evaluate(&resource, &NoModel),
                ] {
                    if let Err(e) = result {
                        failures.push(format!("{id} on {base}: evaluate: {e}"));
                    }
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{source}: {} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
        eprintln!(
            "{source}: {} expressions parsed and evaluated",
            params.len()
        );
    }
}

#[test]
fn official_expressions_extract_values() {
    let model = MockModel::new();
    let patient = common::patient();
    let observation = common::observation();
    let cases: &[(&str, &Value, usize)] = &[
        ("Patient.name", &patient, 3),
        ("Patient.telecom.where(system='email') | Person.telecom.where(system='email') | Practitioner.telecom.where(system='email')", &patient, 1),
        ("Patient.deceased.exists() and Patient.deceased != false", &patient, 1),
        ("AllergyIntolerance.patient | CarePlan.subject.where(resolve() is Patient) | Observation.subject.where(resolve() is Patient)", &observation, 1),
        ("(Observation.value.ofType(Quantity)) | (Observation.value.ofType(SampledData))", &observation, 1),
        ("(Observation.value.ofType(Quantity)) | (Observation.value.ofType(SampledData)) | (Observation.component.value.ofType(Quantity)) | (Observation.component.value.ofType(SampledData))", &observation, 3),
        ("Observation.component.code", &observation, 3),
        ("AllergyIntolerance.code | Condition.code | Observation.code | Procedure.code", &observation, 1),
        ("Patient.identifier", &patient, 2),
        ("Patient.generalPractitioner", &patient, 4),
    ];
    for (expr, resource, count) in cases {
        let got = Expression::parse(expr)
            .unwrap()
            .evaluate(resource, &model)
            .unwrap();
        assert_eq!(got.len(), *count, "{expr}: {got:?}");
    }
}
