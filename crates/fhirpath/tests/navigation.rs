//! Paths, choice types, type tests, resolve(), extension(), unions.

mod common;

use common::*;
use phip_fhirpath::{Expression, Item, NoModel};
use serde_json::{json, Value};

#[test]
fn paths_flatten_arrays_and_skip_nulls() {
    let p = patient();
    assert_eq!(
        values("Patient.name.given", &p),
        vec![json!("Peter"), json!("James"), json!("Jim"), json!("Peter")]
    );
    assert_eq!(
        values("name.family", &p),
        vec![json!("Chalmers"), json!("Windsor")]
    );
    assert_eq!(values("Patient.birthDate", &p), vec![json!("1974-12-25")]);
    assert_eq!(
        types("Patient.birthDate", &p),
        vec![Some("date".to_string())]
    );
    assert_eq!(
        types("Patient.name.given.first()", &p),
        vec![Some("string".into())]
    );
    assert_eq!(
        types("Patient.contact", &p),
        vec![Some("Patient.contact".into())]
    );
    assert_eq!(
        values("Patient.contact.name.family", &p),
        vec![json!("du Marché")]
    );
    assert!(values("Patient.nothing.here", &p).is_empty());
}

#[test]
fn leading_type_name_must_match_the_resource() {
    let p = patient();
    assert_eq!(values("Patient.gender", &p), vec![json!("male")]);
    assert!(values("Practitioner.gender", &p).is_empty());
    assert_eq!(values("Resource.id", &p), vec![json!("p1")]);
    assert_eq!(values("DomainResource.id", &p), vec![json!("p1")]);
    assert_eq!(
        values("Patient.name.family | Practitioner.name.family", &p),
        vec![json!("Chalmers"), json!("Windsor")]
    );
}

#[test]
fn results_borrow_from_the_resource() {
    let p = patient();
    let result = eval("Patient.name.given", &p);
    assert!(result
        .iter()
        .all(|i| matches!(i.value, std::borrow::Cow::Borrowed(_))));
    let first = &p["name"][0]["given"][0];
    assert!(std::ptr::eq(&*result[0].value, first));
}

#[test]
fn choice_elements_resolve_by_suffix() {
    let p = patient();
    let o = observation();
    assert_eq!(
        types("Observation.value", &o),
        vec![Some("Quantity".into())]
    );
    // Decimals keep their written precision.
    assert_eq!(
        values("Observation.value.value", &o)[0].to_string(),
        "72.50"
    );
    assert_eq!(values("Observation.value.unit", &o), vec![json!("kg")]);
    assert_eq!(
        types("Observation.effective", &o),
        vec![Some("dateTime".into())]
    );
    assert_eq!(types("Patient.deceased", &p), vec![Some("boolean".into())]);
    assert_eq!(
        types("Patient.multipleBirth", &p),
        vec![Some("integer".into())]
    );
    assert_eq!(
        types("Observation.component.value", &o),
        vec![
            Some("Quantity".into()),
            Some("Quantity".into()),
            Some("string".into())
        ]
    );
    assert_eq!(
        values("Observation.value.ofType(Quantity).code", &o),
        vec![json!("kg")]
    );
    assert!(values("Observation.value.ofType(CodeableConcept)", &o).is_empty());
    assert_eq!(
        values("(Observation.value as Quantity).value", &o)[0].to_string(),
        "72.50"
    );
    assert_eq!(
        values("Observation.value.as(Quantity).unit", &o),
        vec![json!("kg")]
    );
    assert_eq!(
        values("Observation.component.value.ofType(string)", &o),
        vec![json!("sitting")]
    );
    assert_eq!(
        values("Observation.effective.ofType(dateTime)", &o).len(),
        1
    );
}

#[test]
fn navigation_without_model_information() {
    let o = observation();
    let expr = Expression::parse("Observation.component.value.ofType(Quantity).value").unwrap();
    let got: Vec<Value> = expr
        .evaluate(&o, &NoModel)
        .unwrap()
        .into_iter()
        .map(|i| i.value.into_owned())
        .collect();
    assert_eq!(got, vec![json!(120), json!(80)]);
    let expr = Expression::parse("Observation.value").unwrap();
    let items = expr.evaluate(&o, &NoModel).unwrap();
    assert_eq!(items[0].type_name(), Some("Quantity"));
    let expr = Expression::parse("Observation.effective.ofType(dateTime)").unwrap();
    assert_eq!(expr.evaluate(&o, &NoModel).unwrap().len(), 1);
    // Untyped strings may be any string-like or (when they parse) date-like primitive.
    for (expr, count) in [
        ("Observation.status.ofType(code)", 1),
        ("Observation.status.ofType(canonical)", 1),
        ("Observation.status.ofType(date)", 0),
        ("Observation.status.ofType(boolean)", 0),
        ("Observation.effective.ofType(date)", 0),
        ("Observation.id.as(uri)", 1),
    ] {
        let e = Expression::parse(expr).unwrap();
        assert_eq!(e.evaluate(&o, &NoModel).unwrap().len(), count, "{expr}");
    }
    let d = json!({"resourceType": "Patient", "birthDate": "2000-01-01"});
    let e = Expression::parse("birthDate.ofType(dateTime) | birthDate.ofType(date)").unwrap();
    assert_eq!(e.evaluate(&d, &NoModel).unwrap().len(), 1);
    let expr = Expression::parse("Observation.code.coding.code").unwrap();
    let codes = expr.evaluate(&o, &NoModel).unwrap();
    assert_eq!(codes.len(), 1);
    assert_eq!(codes[0].type_name(), None);
}

#[test]
fn type_tests_with_subtypes() {
    let p = patient();
    let o = observation();
    assert_eq!(boolean("Patient is Patient", &p), Some(true));
    assert_eq!(boolean("Patient is DomainResource", &p), Some(true));
    assert_eq!(boolean("Patient is FHIR.Resource", &p), Some(true));
    assert_eq!(boolean("Patient is Observation", &p), Some(false));
    assert_eq!(boolean("Patient.active is boolean", &p), Some(true));
    assert_eq!(boolean("Patient.active is System.Boolean", &p), Some(true));
    assert_eq!(boolean("Patient.gender is code", &p), Some(true));
    assert_eq!(boolean("Patient.gender is string", &p), Some(true));
    assert_eq!(boolean("Patient.gender.is(String)", &p), Some(true));
    assert_eq!(boolean("Observation.value is Quantity", &o), Some(true));
    assert_eq!(boolean("Observation.value is Age", &o), Some(false));
    assert_eq!(boolean("1 is Integer", &o), Some(true));
    assert_eq!(boolean("'a' is String", &o), Some(true));
    assert_eq!(boolean("{} is String", &o), None);
    let c = json!({"resourceType": "Condition", "onsetAge": {"value": 42, "unit": "a"}});
    assert_eq!(types("Condition.onset", &c), vec![Some("Age".into())]);
    assert_eq!(
        values("Condition.onset.ofType(Quantity).value", &c),
        vec![json!(42)]
    );
    assert_eq!(
        values("Condition.onset.ofType(Age).value", &c),
        vec![json!(42)]
    );
    assert!(values("Condition.onset.ofType(Range)", &c).is_empty());
}

#[test]
fn resolve_types_references_by_target() {
    let p = patient();
    assert_eq!(
        types("Patient.generalPractitioner.resolve()", &p),
        vec![
            Some("Practitioner".into()),
            Some("Organization".into()),
            Some("Organization".into()),
            Some("Practitioner".into())
        ]
    );
    // Contained references resolve to the contained resource itself.
    assert_eq!(
        values("Patient.generalPractitioner[2].resolve().name", &p),
        vec![json!("Contained Org")]
    );
    assert_eq!(
        values(
            "Patient.generalPractitioner.where(resolve() is Practitioner).reference",
            &p
        ),
        vec![json!("Practitioner/pr1")]
    );
    assert_eq!(
        values(
            "Patient.generalPractitioner.where(resolve() is Organization)",
            &p
        )
        .len(),
        2
    );
    let o = observation();
    assert_eq!(
        values("Observation.subject.where(resolve() is Patient)", &o),
        vec![json!({"reference": "Patient/p1"})]
    );
    assert!(values("Observation.subject.where(resolve() is Group)", &o).is_empty());
    // Canonical strings.
    let vs = json!({"resourceType": "Observation", "status": "http://hl7.org/fhir/ValueSet/x|1.0"});
    assert_eq!(
        types("status.resolve()", &vs),
        vec![Some("ValueSet".into())]
    );
}

#[test]
fn resolve_inside_a_bundle_uses_full_urls() {
    let b = bundle();
    assert_eq!(
        values(
            "Bundle.entry.resource.ofType(Observation).subject.resolve().name.family",
            &b
        ),
        vec![json!("First")]
    );
    assert_eq!(values("Bundle.entry[0].resource.id", &b), vec![json!("a")]);
    assert_eq!(types("Bundle.entry.resource", &b).len(), 3);
    assert_eq!(
        types("Bundle.entry.resource", &b)[1],
        Some("Observation".to_string())
    );
    assert_eq!(
        values("Bundle.entry.resource.ofType(Patient).id", &b),
        vec![json!("a"), json!("b")]
    );
    assert_eq!(
        values("Bundle.entry.resource.Patient.id", &b),
        vec![json!("a"), json!("b")]
    );
}

#[test]
fn extensions_by_url() {
    let p = patient();
    assert_eq!(
        values(
            "Patient.extension('http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex').value",
            &p
        ),
        vec![json!("F")]
    );
    assert_eq!(
        values("Patient.extension('http://example.org/fhir/StructureDefinition/score').value.ofType(Quantity).value", &p),
        vec![json!(7)]
    );
    assert_eq!(
        types("Patient.extension.where(url.endsWith('score')).value", &p),
        vec![Some("Quantity".into())]
    );
    assert!(values("Patient.extension('nope')", &p).is_empty());
    // Primitive extension siblings are not values.
    assert!(values("Patient._birthDate", &p).len() <= 1);
    assert_eq!(values("Patient.birthDate.extension", &p).len(), 0);
}

#[test]
fn union_deduplicates_and_keeps_order() {
    let p = patient();
    assert_eq!(
        values("Patient.name.given | Patient.name.family", &p),
        vec![
            json!("Peter"),
            json!("James"),
            json!("Jim"),
            json!("Chalmers"),
            json!("Windsor")
        ]
    );
    assert_eq!(
        values("Patient.name.given.union(Patient.name.family)", &p).len(),
        5
    );
    assert_eq!(
        values("Patient.name.given.combine(Patient.name.family)", &p).len(),
        6
    );
    assert_eq!(
        values("(1 | 2 | 1 | 3)", &p),
        vec![json!(1), json!(2), json!(3)]
    );
    assert_eq!(values("(1 | 1.0)", &p).len(), 1);
}

#[test]
fn indexers_and_where() {
    let p = patient();
    assert_eq!(values("Patient.name[1].given", &p), vec![json!("Jim")]);
    assert!(values("Patient.name[10]", &p).is_empty());
    assert_eq!(
        values("Patient.telecom.where(system='email').value", &p),
        vec![json!("peter@example.org")]
    );
    assert_eq!(
        values(
            "Patient.identifier.where(type.coding.code = 'SS').value",
            &p
        ),
        vec![json!("123-45-6789")]
    );
    assert_eq!(
        values(
            "Patient.name.where(use = 'official' and given.count() > 1).family",
            &p
        ),
        vec![json!("Chalmers")]
    );
    assert_eq!(
        values("Patient.name.where($index > 0).use", &p),
        vec![json!("usual"), json!("maiden")]
    );
}

#[test]
fn evaluate_on_an_element_context() {
    let o = observation();
    let component = &o["component"][0];
    let ctx = Item::borrowed(component, Some("Observation.component"));
    let model = MockModel::new();
    let code = Expression::parse("code").unwrap();
    let got = code.evaluate_on(&ctx, &o, &model).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].type_name(), Some("CodeableConcept"));
    assert_eq!(got[0].value["coding"][0]["code"], json!("8480-6"));
    let value = Expression::parse("value.ofType(Quantity) | value.ofType(Range)").unwrap();
    let got = value.evaluate_on(&ctx, &o, &model).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value["value"], json!(120));
    let resource = Expression::parse("%resource.id | %context.code.text").unwrap();
    let got = resource.evaluate_on(&ctx, &o, &model).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(*got[0].value, json!("bp"));
}

#[test]
fn quoted_identifiers_and_constants() {
    let p = patient();
    assert_eq!(values("Patient.`birthDate`", &p), vec![json!("1974-12-25")]);
    assert_eq!(values("%resource.id", &p), vec![json!("p1")]);
    assert_eq!(values("%rootResource.id", &p), vec![json!("p1")]);
    assert_eq!(values("%context.gender", &p), vec![json!("male")]);
    assert_eq!(
        values("%ucum", &p),
        vec![json!("http://unitsofmeasure.org")]
    );
    assert_eq!(values("%sct", &p), vec![json!("http://snomed.info/sct")]);
    assert_eq!(values("%loinc", &p), vec![json!("http://loinc.org")]);
    assert_eq!(
        values("%`vs-administrative-gender`", &p),
        vec![json!("http://hl7.org/fhir/ValueSet/administrative-gender")]
    );
    assert!(error("%nope", &p).contains("unknown external constant"));
}

#[test]
fn search_parameter_style_expressions() {
    let p = patient();
    let o = observation();
    assert_eq!(
        boolean(
            "Patient.deceased.exists() and Patient.deceased != false",
            &p
        ),
        Some(false)
    );
    let dead = json!({"resourceType": "Patient", "deceasedDateTime": "2020-01-01"});
    assert_eq!(
        boolean(
            "Patient.deceased.exists() and Patient.deceased != false",
            &dead
        ),
        Some(true)
    );
    assert_eq!(
        values(
            "(Observation.value.ofType(string)) | (Observation.value.ofType(CodeableConcept)).text",
            &o
        ),
        Vec::<Value>::new()
    );
    assert_eq!(
        values("Observation.code | Observation.component.code", &o).len(),
        4
    );
    assert_eq!(
        values(
            "Observation.component.where(code.coding.code = '8480-6').value.ofType(Quantity).value",
            &o
        ),
        vec![json!(120)]
    );
}
