use super::*;

#[test]
fn resource_types_are_sorted_and_concrete() {
    let defs = r4();
    let types: Vec<&str> = defs.resource_types().collect();
    assert!(types.windows(2).all(|w| w[0] < w[1]));
    assert!(types.contains(&"Patient") && types.contains(&"Bundle"));
    assert!(!types.contains(&"Resource") && !types.contains(&"DomainResource"));
    assert!(!types.contains(&"SubscriptionStatus"));
    assert_eq!(types.len(), 146);
    assert!(defs.is_resource_type("Observation"));
    assert!(!defs.is_resource_type("DomainResource"));
    assert!(!defs.is_resource_type("HumanName"));
    assert!(defs.model().is_resource_type("Resource"));
}

#[test]
fn search_params_per_type() {
    let defs = r4();
    let codes: Vec<&str> = defs
        .search_params("Patient")
        .iter()
        .map(|p| p.code.as_str())
        .collect();
    for code in [
        "_id",
        "_lastUpdated",
        "_profile",
        "_security",
        "_source",
        "_tag",
        "_text",
        "_content",
        "birthdate",
        "name",
        "family",
        "general-practitioner",
        "identifier",
    ] {
        assert!(codes.contains(&code), "{code} missing from {codes:?}");
    }
    assert!(codes.windows(2).all(|w| w[0] < w[1]));
    // `_text` is a DomainResource parameter; Bundle is not a DomainResource.
    assert!(defs.search_param("Bundle", "_text").is_none());
    assert!(defs.search_param("Bundle", "_id").is_some());
    assert!(defs.search_params("NoSuchType").is_empty());

    let name = defs.search_param("Patient", "name").unwrap();
    assert_eq!(name.param_type, ParamType::String);
    assert_eq!(name.compiled.as_ref().unwrap().source(), "Patient.name");

    let id = defs.search_param("Patient", "_id").unwrap();
    assert_eq!(id.expression.as_deref(), Some("Resource.id"));
    assert_eq!(id.compiled.as_ref().unwrap().source(), "Patient.id");
    assert!(defs
        .search_param("Patient", "_text")
        .unwrap()
        .compiled
        .is_none());

    // A shared parameter keeps its whole text but compiles only its own branch.
    let patient = defs.search_param("Condition", "patient").unwrap();
    assert!(patient
        .expression
        .as_deref()
        .unwrap()
        .contains("AllergyIntolerance.patient"));
    assert_eq!(
        patient.compiled.as_ref().unwrap().source(),
        "Condition.subject.where(resolve() is Patient)"
    );
    assert_eq!(patient.param_type, ParamType::Reference);
    assert!(patient.targets.iter().any(|t| t == "Patient"));

    let by_url = defs
        .search_param_by_url("http://hl7.org/fhir/SearchParameter/clinical-patient")
        .unwrap();
    assert_eq!(
        by_url.compiled.as_ref().unwrap().source(),
        by_url.expression.as_deref().unwrap()
    );
}

#[test]
fn composite_params_have_components() {
    let defs = r4();
    let cvq = defs
        .search_param("Observation", "code-value-quantity")
        .unwrap();
    assert_eq!(cvq.param_type, ParamType::Composite);
    assert_eq!(cvq.components.len(), 2);
    assert_eq!(cvq.compiled_components.len(), 2);
    assert!(cvq.compiled_components.iter().all(|(_, e)| e.is_some()));
    for (url, _) in &cvq.components {
        assert!(defs.search_param_by_url(url).is_some(), "{url}");
    }
}

#[test]
fn every_expression_compiles() {
    let defs = r4();
    assert!(
        defs.parse_failures().is_empty(),
        "{:#?}",
        defs.parse_failures()
    );
    for rt in defs.resource_types() {
        for p in defs.search_params(rt) {
            assert_eq!(
                p.expression.is_some(),
                p.compiled.is_some(),
                "{rt}.{}",
                p.code
            );
        }
    }
}

#[test]
fn model_info_elements() {
    let defs = r4();
    let model = defs.model();
    let contact = model.element("Patient", "contact").unwrap();
    assert_eq!(contact.types, ["Patient.contact"]);
    assert!(contact.is_array && !contact.is_choice);
    let name = model.element("Patient.contact", "name").unwrap();
    assert_eq!(name.types, ["HumanName"]);
    assert!(!name.is_array);
    let value = model.element("Observation", "value").unwrap();
    assert!(value.is_choice);
    assert!(value.types.iter().any(|t| t == "Quantity"));
    assert_eq!(
        model.element("Questionnaire.item", "item").unwrap().types,
        ["Questionnaire.item"]
    );
    assert_eq!(
        model.element("Bundle.entry", "request").unwrap().types,
        ["Bundle.entry.request"]
    );
    for (t, e) in [
        ("HumanName", "id"),
        ("HumanName", "extension"),
        ("Patient.contact", "modifierExtension"),
        ("Patient", "text"),
        ("Patient", "contained"),
        ("Patient", "meta"),
        ("Timing.repeat", "extension"),
        ("DomainResource", "id"),
    ] {
        assert!(model.element(t, e).is_some(), "{t}.{e}");
    }
    assert!(model.element("Patient", "valueQuantity").is_none());
    assert_eq!(model.element("Patient", "id").unwrap().types, ["id"]);
    assert_eq!(
        model.element("string", "value").unwrap().types,
        ["System.String"]
    );
    assert_eq!(model.base_type("Age"), Some("Quantity"));
    assert_eq!(model.base_type("Patient"), Some("DomainResource"));
    assert_eq!(model.base_type("DomainResource"), Some("Resource"));
    assert_eq!(model.base_type("code"), Some("string"));
    assert_eq!(model.base_type("Patient.contact"), Some("BackboneElement"));
    assert_eq!(model.base_type("Resource"), None);
}

#[test]
fn type_info_and_json_properties() {
    let defs = r4();
    let obs = defs.type_info("Observation").unwrap();
    assert_eq!(obs.kind, TypeKind::Resource);
    let p = obs.json_property("valueQuantity").unwrap();
    assert_eq!(
        (p.element.name.as_str(), p.type_code),
        ("value", "Quantity")
    );
    let p = obs.json_property("effectiveDateTime").unwrap();
    assert_eq!(p.type_code, "dateTime");
    assert!(obs.json_property("value").is_none());
    assert!(obs.json_property("valueFoo").is_none());
    let status = obs.element("status").unwrap();
    assert_eq!((status.min, status.max), (1, Some(1)));
    assert!(defs
        .type_info("Patient")
        .unwrap()
        .element("name")
        .unwrap()
        .max
        .is_none());
    let date = defs.type_info("date").unwrap();
    assert!(date.is_primitive() && date.regex.is_some());
    assert!(defs.type_info("Resource").unwrap().is_abstract);
    let sq = defs.type_info("SimpleQuantity").unwrap();
    assert!(sq.is_constraint && sq.element("comparator").unwrap().is_prohibited());
    let subject = obs.element("subject").unwrap();
    assert!(subject.targets.iter().any(|t| t == "Patient"));
}

#[test]
fn summary_elements() {
    let defs = r4();
    assert!(defs.is_summary_element("Patient", "birthDate"));
    assert!(defs.is_summary_element("Patient", "_birthDate"));
    assert!(defs.is_summary_element("Patient", "id"));
    assert!(defs.is_summary_element("Patient", "meta"));
    assert!(defs.is_summary_element("Patient", "resourceType"));
    assert!(defs.is_summary_element("Patient", "deceasedBoolean"));
    assert!(!defs.is_summary_element("Patient", "contact"));
    assert!(!defs.is_summary_element("Patient", "photo"));
    assert!(defs.is_summary_element("Observation", "valueQuantity"));
    assert!(!defs.is_summary_element("Observation", "note"));
}

#[test]
fn patient_compartment() {
    let defs = r4();
    assert_eq!(
        defs.patient_compartment_params("Patient"),
        ["{def}", "link"]
    );
    let obs = defs.patient_compartment_params("Observation");
    assert!(obs.iter().any(|p| p == "subject") && obs.iter().any(|p| p == "performer"));
    assert!(defs.patient_compartment_params("Organization").is_empty());
    // Every compartment parameter is a real search parameter of its type.
    for rt in defs.resource_types() {
        for code in defs.patient_compartment_params(rt) {
            assert!(
                code == "{def}" || defs.search_param(rt, code).is_some(),
                "{rt}.{code}"
            );
        }
    }
}
