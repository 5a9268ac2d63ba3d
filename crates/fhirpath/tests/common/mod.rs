//! Shared test helpers: a hand-written model covering the resources used in the tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use phip_fhirpath::{ElementInfo, Expression, Item, ModelInfo};
use serde_json::Value;

struct Element {
    types: Vec<String>,
    is_choice: bool,
    is_array: bool,
}

/// A small slice of the R4 model, shaped like the real one (backbone types are paths).
pub struct MockModel {
    elements: HashMap<(String, String), Element>,
    bases: HashMap<String, String>,
}

impl MockModel {
    pub fn new() -> Self {
        let mut m = MockModel {
            elements: HashMap::new(),
            bases: HashMap::new(),
        };
        // (type, element, types, choice, array)
        let defs: &[(&str, &str, &[&str], bool, bool)] = &[
            ("Resource", "id", &["id"], false, false),
            ("Resource", "meta", &["Meta"], false, false),
            ("DomainResource", "text", &["Narrative"], false, false),
            ("DomainResource", "contained", &["Resource"], false, true),
            ("DomainResource", "extension", &["Extension"], false, true),
            ("Patient", "identifier", &["Identifier"], false, true),
            ("Patient", "active", &["boolean"], false, false),
            ("Patient", "name", &["HumanName"], false, true),
            ("Patient", "telecom", &["ContactPoint"], false, true),
            ("Patient", "gender", &["code"], false, false),
            ("Patient", "birthDate", &["date"], false, false),
            ("Patient", "deceased", &["boolean", "dateTime"], true, false),
            (
                "Patient",
                "multipleBirth",
                &["boolean", "integer"],
                true,
                false,
            ),
            ("Patient", "contact", &["Patient.contact"], false, true),
            (
                "Patient",
                "generalPractitioner",
                &["Reference"],
                false,
                true,
            ),
            (
                "Patient",
                "managingOrganization",
                &["Reference"],
                false,
                false,
            ),
            ("Patient.contact", "name", &["HumanName"], false, false),
            (
                "Patient.contact",
                "relationship",
                &["CodeableConcept"],
                false,
                true,
            ),
            ("HumanName", "use", &["code"], false, false),
            ("HumanName", "family", &["string"], false, false),
            ("HumanName", "given", &["string"], false, true),
            ("HumanName", "period", &["Period"], false, false),
            ("Identifier", "system", &["uri"], false, false),
            ("Identifier", "value", &["string"], false, false),
            ("Identifier", "type", &["CodeableConcept"], false, false),
            ("ContactPoint", "system", &["code"], false, false),
            ("ContactPoint", "value", &["string"], false, false),
            ("CodeableConcept", "coding", &["Coding"], false, true),
            ("CodeableConcept", "text", &["string"], false, false),
            ("Coding", "system", &["uri"], false, false),
            ("Coding", "code", &["code"], false, false),
            ("Coding", "display", &["string"], false, false),
            ("Quantity", "value", &["decimal"], false, false),
            ("Quantity", "unit", &["string"], false, false),
            ("Quantity", "system", &["uri"], false, false),
            ("Quantity", "code", &["code"], false, false),
            ("Period", "start", &["dateTime"], false, false),
            ("Period", "end", &["dateTime"], false, false),
            ("Reference", "reference", &["string"], false, false),
            ("Reference", "type", &["uri"], false, false),
            ("Reference", "display", &["string"], false, false),
            ("Element", "extension", &["Extension"], false, true),
            ("Extension", "url", &["uri"], false, false),
            (
                "Extension",
                "value",
                &[
                    "string",
                    "boolean",
                    "code",
                    "CodeableConcept",
                    "Coding",
                    "Quantity",
                    "Reference",
                ],
                true,
                false,
            ),
            ("Observation", "status", &["code"], false, false),
            ("Observation", "code", &["CodeableConcept"], false, false),
            ("Observation", "subject", &["Reference"], false, false),
            (
                "Observation",
                "effective",
                &["dateTime", "Period", "instant"],
                true,
                false,
            ),
            (
                "Observation",
                "value",
                &[
                    "Quantity",
                    "CodeableConcept",
                    "string",
                    "boolean",
                    "integer",
                    "Range",
                    "dateTime",
                    "Period",
                ],
                true,
                false,
            ),
            (
                "Observation",
                "component",
                &["Observation.component"],
                false,
                true,
            ),
            (
                "Observation.component",
                "code",
                &["CodeableConcept"],
                false,
                false,
            ),
            (
                "Observation.component",
                "value",
                &[
                    "Quantity",
                    "CodeableConcept",
                    "string",
                    "boolean",
                    "integer",
                    "Range",
                ],
                true,
                false,
            ),
            (
                "Condition",
                "onset",
                &["dateTime", "Age", "Period", "Range", "string"],
                true,
                false,
            ),
            ("Condition", "subject", &["Reference"], false, false),
            ("Bundle", "type", &["code"], false, false),
            ("Bundle", "entry", &["Bundle.entry"], false, true),
            ("Bundle.entry", "fullUrl", &["uri"], false, false),
            ("Bundle.entry", "resource", &["Resource"], false, false),
        ];
        for (ty, el, types, is_choice, is_array) in defs {
            m.elements.insert(
                (ty.to_string(), el.to_string()),
                Element {
                    types: types.iter().map(|t| t.to_string()).collect(),
                    is_choice: *is_choice,
                    is_array: *is_array,
                },
            );
        }
        for (ty, base) in [
            ("Patient", "DomainResource"),
            ("Observation", "DomainResource"),
            ("Condition", "DomainResource"),
            ("Practitioner", "DomainResource"),
            ("Organization", "DomainResource"),
            ("DomainResource", "Resource"),
            ("Bundle", "Resource"),
            ("Age", "Quantity"),
            ("Quantity", "Element"),
            ("HumanName", "Element"),
            ("Identifier", "Element"),
            ("CodeableConcept", "Element"),
            ("Coding", "Element"),
            ("Reference", "Element"),
            ("Period", "Element"),
            ("ContactPoint", "Element"),
            ("Extension", "Element"),
            ("Patient.contact", "BackboneElement"),
            ("Observation.component", "BackboneElement"),
            ("Bundle.entry", "BackboneElement"),
            ("BackboneElement", "Element"),
            ("code", "string"),
        ] {
            m.bases.insert(ty.to_string(), base.to_string());
        }
        m
    }
}

impl ModelInfo for MockModel {
    fn element(&self, type_name: &str, element: &str) -> Option<ElementInfo<'_>> {
        self.elements
            .get(&(type_name.to_string(), element.to_string()))
            .map(|e| ElementInfo {
                types: &e.types,
                is_choice: e.is_choice,
                is_array: e.is_array,
            })
    }

    fn is_resource_type(&self, name: &str) -> bool {
        matches!(
            name,
            "Patient"
                | "Observation"
                | "Condition"
                | "Practitioner"
                | "Organization"
                | "Bundle"
                | "Encounter"
                | "ValueSet"
                | "RelatedPerson"
                | "Group"
        )
    }

    fn base_type(&self, type_name: &str) -> Option<&str> {
        self.bases.get(type_name).map(String::as_str)
    }
}

pub fn patient() -> Value {
    serde_json::from_str(include_str!("../data/patient.json")).expect("patient fixture")
}

pub fn observation() -> Value {
    serde_json::from_str(include_str!("../data/observation.json")).expect("observation fixture")
}

pub fn bundle() -> Value {
    serde_json::from_str(include_str!("../data/bundle.json")).expect("bundle fixture")
}

/// Evaluates `expr` on `resource` with the mock model.
pub fn eval<'a>(expr: &str, resource: &'a Value) -> Vec<Item<'a>> {
    let e = Expression::parse(expr).unwrap_or_else(|err| panic!("parse {expr}: {err}"));
    e.evaluate(resource, &MockModel::new())
        .unwrap_or_else(|err| panic!("evaluate {expr}: {err}"))
}

/// The result values as JSON (for compact assertions).
pub fn values(expr: &str, resource: &Value) -> Vec<Value> {
    eval(expr, resource)
        .into_iter()
        .map(|i| i.value.into_owned())
        .collect()
}

/// The result type names.
pub fn types(expr: &str, resource: &Value) -> Vec<Option<String>> {
    eval(expr, resource)
        .into_iter()
        .map(|i| i.type_name.map(|t| t.into_owned()))
        .collect()
}

/// The single boolean result, `None` for empty; panics on anything else.
pub fn boolean(expr: &str, resource: &Value) -> Option<bool> {
    let r = values(expr, resource);
    match r.as_slice() {
        [] => None,
        [Value::Bool(b)] => Some(*b),
        other => panic!("{expr}: expected a boolean, got {other:?}"),
    }
}

/// The evaluation error message.
pub fn error(expr: &str, resource: &Value) -> String {
    let e = Expression::parse(expr).unwrap_or_else(|err| panic!("parse {expr}: {err}"));
    match e.evaluate(resource, &MockModel::new()) {
        Ok(v) => panic!("{expr}: expected an error, got {v:?}"),
        Err(err) => err.to_string(),
    }
}

/// (key, resource types with the constraint at their root, expression) of the error-severity
/// invariants (warnings such as dom-6 "should have narrative" are guidelines).
pub fn invariants() -> Vec<(String, Vec<String>, String)> {
    all_invariants()
        .into_iter()
        .filter(|(_, severity, _, _)| severity == "error")
        .map(|(key, _, roots, expr)| (key, roots, expr))
        .collect()
}

/// (key, severity, resource types with the constraint at their root, expression).
pub fn all_invariants() -> Vec<(String, String, Vec<String>, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/r4-invariants.tsv");
    let text = std::fs::read_to_string(path).expect("invariants fixture");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, '\t').collect();
            assert_eq!(f.len(), 4, "bad fixture line {l}");
            let roots = f[2]
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            (f[0].to_owned(), f[1].to_owned(), roots, f[3].to_owned())
        })
        .collect()
}
