//! The constraint expressions of the R4 core StructureDefinitions (FHIR invariants) parse, and
//! resource-level ones hold on typical resources.

mod common;

use common::{all_invariants, invariants, MockModel};
use phip_fhirpath::{Expression, NoModel};
use serde_json::{json, Value};

#[test]
fn all_core_invariants_parse() {
    let all = all_invariants();
    assert!(all.len() >= 240, "only {} invariants", all.len());
    let failures: Vec<String> = all
        .iter()
        .filter_map(|(key, _, _, expr)| {
            Expression::parse(expr).err().map(|e| format!("{key}: {e}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn check(key: &str, expr: &str, resource: &Value) -> Option<bool> {
    let e = Expression::parse(expr).unwrap();
    let results = [
        e.evaluate(resource, &MockModel::new()),
        e.evaluate(resource, &NoModel),
    ];
    let mut answers = results.into_iter().map(|r| {
        let items = r.unwrap_or_else(|err| panic!("{key}: {err}"));
        match items.as_slice() {
            [] => None,
            [item] => item.value.as_bool(),
            _ => panic!("{key}: {} items", items.len()),
        }
    });
    let with_model = answers.next().flatten();
    assert_eq!(
        with_model,
        answers.next().flatten(),
        "{key}: model vs no model"
    );
    with_model
}

#[test]
fn resource_invariants_hold_on_valid_resources_and_catch_invalid_ones() {
    let all = invariants();
    let find = |key: &str| {
        all.iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, _, e)| e.clone())
            .unwrap_or_else(|| panic!("no invariant {key}"))
    };
    let patient = common::patient();
    let observation = common::observation();
    // Every resource-level invariant of Patient/Observation holds on the fixtures.
    for (key, roots, expr) in &all {
        for (ty, resource) in [("Patient", &patient), ("Observation", &observation)] {
            if roots.iter().any(|r| r == ty) {
                assert_ne!(check(key, expr, resource), Some(false), "{key} on {ty}");
            }
        }
    }
    // dom-2: contained resources must not contain resources.
    let dom2 = find("dom-2");
    let nested = json!({"resourceType": "Patient", "contained": [
        {"resourceType": "Organization", "id": "o", "contained": [{"resourceType": "Organization", "id": "x"}]}
    ]});
    assert_eq!(check("dom-2", &dom2, &nested), Some(false));
    assert_eq!(check("dom-2", &dom2, &patient), Some(true));
    // dom-3: contained resources must be referenced (org1 is, via generalPractitioner).
    let dom3 = find("dom-3");
    assert_eq!(check("dom-3", &dom3, &patient), Some(true));
    let mut orphan = patient.clone();
    orphan["generalPractitioner"] = json!([]);
    assert_eq!(check("dom-3", &dom3, &orphan), Some(false));
    // obs-7: no value when a component has the same code.
    let obs7 = find("obs-7");
    assert_eq!(check("obs-7", &obs7, &observation), Some(true));
    let mut clash = observation.clone();
    clash["component"][0]["code"] = clash["code"].clone();
    assert_eq!(check("obs-7", &obs7, &clash), Some(false));
    // pat-1 is on Patient.contact: evaluate it on each contact element.
    let pat1 = Expression::parse(&find("pat-1")).unwrap();
    let model = MockModel::new();
    let ok = phip_fhirpath::Item::borrowed(&patient["contact"][0], Some("Patient.contact"));
    let got = pat1.evaluate_on(&ok, &patient, &model).unwrap();
    assert_eq!(*got[0].value, json!(true));
    let empty_contact = json!({"relationship": []});
    let bad = phip_fhirpath::Item::borrowed(&empty_contact, Some("Patient.contact"));
    let got = pat1.evaluate_on(&bad, &patient, &model).unwrap();
    assert_eq!(*got[0].value, json!(false));
}
