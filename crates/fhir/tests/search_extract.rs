//! Index extraction from hand-written resources, against the real R4 search parameters.

use std::collections::BTreeSet;

use phip_fhir::search::index::{extract, ISO_4217};
use phip_fhir::search::{parse_date_range, IndexEntry, IndexValue};
use serde_json::{json, Value};

fn values(entries: &[IndexEntry], code: &str) -> Vec<IndexValue> {
    entries
        .iter()
        .filter(|e| e.param == code)
        .map(|e| e.value.clone())
        .collect()
}

fn codes(entries: &[IndexEntry]) -> BTreeSet<&str> {
    entries.iter().map(|e| e.param.as_str()).collect()
}

fn s(normalized: &str, exact: &str) -> IndexValue {
    IndexValue::String {
        normalized: normalized.into(),
        exact: exact.into(),
    }
}

fn tok(system: Option<&str>, code: Option<&str>, text: Option<&str>) -> IndexValue {
    IndexValue::Token {
        system: system.map(Into::into),
        code: code.map(Into::into),
        text: text.map(Into::into),
    }
}

fn code(c: &str) -> IndexValue {
    tok(None, Some(c), None)
}

fn date(s: &str) -> IndexValue {
    let (start, end) = parse_date_range(s).unwrap();
    IndexValue::Date { start, end }
}

fn local(t: &str, id: &str) -> IndexValue {
    IndexValue::Reference {
        target_type: Some(t.into()),
        target_id: Some(id.into()),
        url: None,
        version: None,
        identifier: None,
    }
}

fn qty(
    value: f64,
    low: f64,
    high: f64,
    system: Option<&str>,
    code: Option<&str>,
    unit: Option<&str>,
) -> IndexValue {
    IndexValue::Quantity {
        value,
        low,
        high,
        system: system.map(Into::into),
        code: code.map(Into::into),
        unit: unit.map(Into::into),
    }
}

fn ucum(value: f64, low: f64, high: f64, code: &str, unit: &str) -> IndexValue {
    qty(
        value,
        low,
        high,
        Some("http://unitsofmeasure.org"),
        Some(code),
        Some(unit),
    )
}

const LOINC: &str = "http://loinc.org";

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "p1",
        "meta": {
            "lastUpdated": "2024-01-02T03:04:05.678Z",
            "profile": ["http://example.org/StructureDefinition/my-patient"],
            "tag": [{"system": "http://example.org/tags", "code": "vip", "display": "VIP"}],
            "source": "http://example.org/source#abc"
        },
        "identifier": [{
            "use": "usual",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}], "text": "Medical record"},
            "system": "urn:oid:1.2.36.146.595.217.0.1",
            "value": "12345"
        }],
        "active": true,
        "name": [
            {"use": "official", "family": "Müller", "given": ["Anna", "Lena"], "prefix": ["Dr."]},
            {"use": "nickname", "text": "张伟"}
        ],
        "telecom": [
            {"system": "phone", "value": "+49 30 1234567", "use": "home"},
            {"system": "email", "value": "anna@example.org"}
        ],
        "gender": "female",
        "birthDate": "1974-12-25",
        "address": [{"use": "home", "line": ["Hauptstraße 5"], "city": "Berlin", "postalCode": "10115", "country": "DE"}],
        "generalPractitioner": [{"reference": "Practitioner/gp1"}, {"reference": "Practitioner/gp1"}],
        "managingOrganization": {"reference": "http://other.example.org/fhir/Organization/org-7"},
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "de"}]}}]
    })
}

#[test]
fn patient_entries() {
    let entries = extract(&patient());
    let name_values = vec![
        s("muller", "Müller"),
        s("anna", "Anna"),
        s("lena", "Lena"),
        s("dr.", "Dr."),
        s("张伟", "张伟"),
    ];
    let (lu, _) = parse_date_range("2024-01-02T03:04:05.678Z").unwrap();
    let expected: Vec<(&str, Vec<IndexValue>)> = vec![
        ("_id", vec![code("p1")]),
        (
            "_lastUpdated",
            vec![IndexValue::Date { start: lu, end: lu }],
        ),
        (
            "_profile",
            vec![IndexValue::Uri(
                "http://example.org/StructureDefinition/my-patient".into(),
            )],
        ),
        (
            "_source",
            vec![IndexValue::Uri("http://example.org/source#abc".into())],
        ),
        (
            "_tag",
            vec![tok(
                Some("http://example.org/tags"),
                Some("vip"),
                Some("vip"),
            )],
        ),
        ("active", vec![code("true")]),
        (
            "address",
            vec![
                s("hauptstraße 5", "Hauptstraße 5"),
                s("berlin", "Berlin"),
                s("10115", "10115"),
                s("de", "DE"),
            ],
        ),
        ("address-city", vec![s("berlin", "Berlin")]),
        ("address-country", vec![s("de", "DE")]),
        ("address-postalcode", vec![s("10115", "10115")]),
        ("address-use", vec![code("home")]),
        ("birthdate", vec![date("1974-12-25")]),
        ("deceased", vec![code("false")]),
        ("email", vec![code("anna@example.org")]),
        ("family", vec![s("muller", "Müller")]),
        ("gender", vec![code("female")]),
        // Duplicates are indexed once.
        ("general-practitioner", vec![local("Practitioner", "gp1")]),
        ("given", vec![s("anna", "Anna"), s("lena", "Lena")]),
        (
            "identifier",
            vec![
                tok(
                    Some("urn:oid:1.2.36.146.595.217.0.1"),
                    Some("12345"),
                    Some("medical record"),
                ),
                IndexValue::Composite(vec![
                    tok(
                        Some("http://terminology.hl7.org/CodeSystem/v2-0203"),
                        Some("MR"),
                        None,
                    ),
                    tok(Some("urn:oid:1.2.36.146.595.217.0.1"), Some("12345"), None),
                ]),
            ],
        ),
        (
            "language",
            vec![tok(Some("urn:ietf:bcp:47"), Some("de"), None)],
        ),
        ("name", name_values.clone()),
        (
            "organization",
            vec![IndexValue::Reference {
                target_type: Some("Organization".into()),
                target_id: Some("org-7".into()),
                url: Some("http://other.example.org/fhir/Organization/org-7".into()),
                version: None,
                identifier: None,
            }],
        ),
        ("phone", vec![code("+49 30 1234567")]),
        ("phonetic", name_values),
        (
            "telecom",
            vec![code("+49 30 1234567"), code("anna@example.org")],
        ),
    ];
    for (param, want) in &expected {
        assert_eq!(&values(&entries, param), want, "{param}");
    }
    let want_codes: BTreeSet<&str> = expected.iter().map(|(c, _)| *c).collect();
    assert_eq!(codes(&entries), want_codes);
    assert_eq!(
        entries.len(),
        expected.iter().map(|(_, v)| v.len()).sum::<usize>()
    );
}

fn observation() -> Value {
    json!({
        "resourceType": "Observation",
        "id": "bp",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}], "text": "Blood pressure"},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2020-03-04T10:00:00+08:00",
        "valueQuantity": {"value": 72.5, "unit": "beats/min", "system": "http://unitsofmeasure.org", "code": "/min"},
        "component": [
            {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
             "valueQuantity": {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
             "valueQuantity": {"value": 80, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
        ]
    })
}

#[test]
fn observation_entries() {
    let entries = extract(&observation());
    let panel = tok(Some(LOINC), Some("85354-9"), Some("blood pressure panel"));
    let panel_text = tok(None, None, Some("blood pressure"));
    let systolic = tok(Some(LOINC), Some("8480-6"), None);
    let diastolic = tok(Some(LOINC), Some("8462-4"), None);
    let rate = ucum(72.5, 72.45, 72.55, "/min", "beats/min");
    let sys_q = ucum(120.0, 119.5, 120.5, "mm[Hg]", "mmHg");
    let dia_q = ucum(80.0, 79.5, 80.5, "mm[Hg]", "mmHg");
    let composite =
        |a: &IndexValue, b: &IndexValue| IndexValue::Composite(vec![a.clone(), b.clone()]);
    let expected: Vec<(&str, Vec<IndexValue>)> = vec![
        ("_id", vec![code("bp")]),
        ("status", vec![code("final")]),
        (
            "category",
            vec![tok(
                Some("http://terminology.hl7.org/CodeSystem/observation-category"),
                Some("vital-signs"),
                None,
            )],
        ),
        ("code", vec![panel.clone(), panel_text.clone()]),
        ("subject", vec![local("Patient", "p1")]),
        ("patient", vec![local("Patient", "p1")]),
        ("date", vec![date("2020-03-04T02:00:00Z")]),
        ("value-quantity", vec![rate.clone()]),
        ("component-code", vec![systolic.clone(), diastolic.clone()]),
        (
            "component-value-quantity",
            vec![sys_q.clone(), dia_q.clone()],
        ),
        (
            "combo-code",
            vec![
                panel.clone(),
                panel_text.clone(),
                systolic.clone(),
                diastolic.clone(),
            ],
        ),
        (
            "combo-value-quantity",
            vec![rate.clone(), sys_q.clone(), dia_q.clone()],
        ),
        (
            "code-value-quantity",
            vec![composite(&panel, &rate), composite(&panel_text, &rate)],
        ),
        (
            "component-code-value-quantity",
            vec![composite(&systolic, &sys_q), composite(&diastolic, &dia_q)],
        ),
        (
            "combo-code-value-quantity",
            vec![
                composite(&panel, &rate),
                composite(&panel_text, &rate),
                composite(&systolic, &sys_q),
                composite(&diastolic, &dia_q),
            ],
        ),
    ];
    for (param, want) in &expected {
        assert_eq!(&values(&entries, param), want, "{param}");
    }
    let want_codes: BTreeSet<&str> = expected.iter().map(|(c, _)| *c).collect();
    assert_eq!(codes(&entries), want_codes);
}

#[test]
fn encounter_period_and_duration() {
    let entries = extract(&json!({
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
        "subject": {"reference": "Patient/p1", "display": "Anna"},
        "participant": [{"individual": {"reference": "Practitioner/dr1"}}],
        "period": {"start": "2021-06-01T08:00:00Z", "end": "2021-06-01T09:30:00Z"},
        "length": {"value": 90, "unit": "minutes", "system": "http://unitsofmeasure.org", "code": "min"},
        "location": [{"location": {"reference": "Location/l1"}, "period": {"start": "2021-06-01T08:00:00Z"}}]
    }));
    let (start, _) = parse_date_range("2021-06-01T08:00:00Z").unwrap();
    let (_, end) = parse_date_range("2021-06-01T09:30:00Z").unwrap();
    assert_eq!(
        values(&entries, "date"),
        vec![IndexValue::Date { start, end }]
    );
    assert_eq!(end - start, 90 * 60_000 + 999);
    assert_eq!(
        values(&entries, "location-period"),
        vec![IndexValue::Date {
            start,
            end: i64::MAX
        }]
    );
    assert_eq!(
        values(&entries, "class"),
        vec![tok(
            Some("http://terminology.hl7.org/CodeSystem/v3-ActCode"),
            Some("AMB"),
            Some("ambulatory")
        )]
    );
    assert_eq!(
        values(&entries, "length"),
        vec![ucum(90.0, 89.5, 90.5, "min", "minutes")]
    );
    assert_eq!(
        values(&entries, "participant"),
        vec![local("Practitioner", "dr1")]
    );
    assert_eq!(
        values(&entries, "practitioner"),
        vec![local("Practitioner", "dr1")]
    );
    assert_eq!(values(&entries, "location"), vec![local("Location", "l1")]);
    assert_eq!(values(&entries, "patient"), vec![local("Patient", "p1")]);
    assert_eq!(values(&entries, "status"), vec![code("finished")]);
}

#[test]
fn medication_request() {
    let entries = extract(&json!({
        "resourceType": "MedicationRequest",
        "id": "mr1",
        "contained": [{"resourceType": "Medication", "id": "med1"}],
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "582620", "display": "Nizatidine 15 MG/ML"}]},
        "subject": {"reference": "Patient/p1"},
        "authoredOn": "2015-01-15",
        "requester": {"reference": "Practitioner/dr1/_history/3"},
        "dosageInstruction": [{"timing": {"event": ["2015-01-16T08:00:00Z", "2015-01-17T08:00:00Z"]}}]
    }));
    assert_eq!(
        values(&entries, "code"),
        vec![tok(
            Some("http://www.nlm.nih.gov/research/umls/rxnorm"),
            Some("582620"),
            Some("nizatidine 15 mg/ml")
        )]
    );
    assert!(values(&entries, "medication").is_empty());
    assert_eq!(values(&entries, "authoredon"), vec![date("2015-01-15")]);
    assert_eq!(
        values(&entries, "date"),
        vec![date("2015-01-16T08:00:00Z"), date("2015-01-17T08:00:00Z")]
    );
    assert_eq!(
        values(&entries, "requester"),
        vec![IndexValue::Reference {
            target_type: Some("Practitioner".into()),
            target_id: Some("dr1".into()),
            url: None,
            version: Some("3".into()),
            identifier: None,
        }]
    );
    assert_eq!(values(&entries, "intent"), vec![code("order")]);
    assert_eq!(values(&entries, "status"), vec![code("active")]);
    assert_eq!(values(&entries, "subject"), vec![local("Patient", "p1")]);
}

#[test]
fn medication_reference_to_contained_is_skipped() {
    let entries = extract(&json!({
        "resourceType": "MedicationRequest",
        "id": "mr2",
        "contained": [{"resourceType": "Medication", "id": "med1", "code": {"text": "x"}}],
        "status": "active",
        "intent": "order",
        "medicationReference": {"reference": "#med1"},
        "subject": {"reference": "Patient/p1"}
    }));
    assert!(values(&entries, "medication").is_empty());
    assert!(values(&entries, "code").is_empty());
}

#[test]
fn condition_onset_and_range() {
    let entries = extract(&json!({
        "resourceType": "Condition",
        "id": "c1",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}], "text": "Diabetes"},
        "subject": {"reference": "Patient/p1"},
        "onsetDateTime": "2019-05",
        "abatementAge": {"value": 60, "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"},
        "recordedDate": "2019-06-01T12:00:00-05:00"
    }));
    assert_eq!(values(&entries, "onset-date"), vec![date("2019-05")]);
    let (start, end) = parse_date_range("2019-05").unwrap();
    assert_eq!(end - start + 1, 31 * 86_400_000);
    assert_eq!(
        values(&entries, "abatement-age"),
        vec![ucum(60.0, 59.5, 60.5, "a", "years")]
    );
    assert_eq!(
        values(&entries, "recorded-date"),
        vec![date("2019-06-01T17:00:00Z")]
    );
    assert_eq!(
        values(&entries, "code"),
        vec![
            tok(Some("http://snomed.info/sct"), Some("44054006"), None),
            tok(None, None, Some("diabetes")),
        ]
    );
    assert_eq!(
        values(&entries, "clinical-status"),
        vec![tok(
            Some("http://terminology.hl7.org/CodeSystem/condition-clinical"),
            Some("active"),
            None
        )]
    );

    let ranged = extract(&json!({
        "resourceType": "Condition",
        "id": "c2",
        "subject": {"reference": "Patient/p1"},
        "onsetRange": {"low": {"value": 40, "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"},
                       "high": {"value": 45.5, "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"}},
        "abatementString": "Remission in Spring"
    }));
    assert_eq!(
        values(&ranged, "onset-age"),
        vec![ucum(40.0, 39.5, 45.55, "a", "years")]
    );
    assert_eq!(
        values(&ranged, "abatement-string"),
        vec![s("remission in spring", "Remission in Spring")]
    );
    assert!(values(&ranged, "onset-date").is_empty());
}

#[test]
fn invoice_money() {
    let entries = extract(
        &serde_json::from_str::<Value>(
            r#"{
        "resourceType": "Invoice",
        "id": "inv1",
        "status": "issued",
        "subject": {"reference": "urn:uuid:7c2b2e1c-3c2f-4d8e-9a0b-5f6e7d8c9b0a"},
        "recipient": {"identifier": {"system": "http://example.org/payers", "value": "P-9"}},
        "totalNet": {"value": 100.50, "currency": "EUR"},
        "totalGross": {"value": 119.6, "currency": "EUR"}
    }"#,
        )
        .unwrap(),
    );
    assert_eq!(
        values(&entries, "totalnet"),
        vec![qty(
            100.5,
            100.495,
            100.505,
            Some(ISO_4217),
            Some("EUR"),
            None
        )]
    );
    assert_eq!(
        values(&entries, "totalgross"),
        vec![qty(
            119.6,
            119.55,
            119.65,
            Some(ISO_4217),
            Some("EUR"),
            None
        )]
    );
    assert_eq!(
        values(&entries, "subject"),
        vec![IndexValue::Reference {
            target_type: None,
            target_id: None,
            url: Some("urn:uuid:7c2b2e1c-3c2f-4d8e-9a0b-5f6e7d8c9b0a".into()),
            version: None,
            identifier: None,
        }]
    );
    assert_eq!(
        values(&entries, "recipient"),
        vec![IndexValue::Reference {
            target_type: None,
            target_id: None,
            url: None,
            version: None,
            identifier: Some((Some("http://example.org/payers".into()), "P-9".into())),
        }]
    );
}

#[test]
fn odd_data_never_panics() {
    for resource in [
        json!({}),
        json!({"resourceType": "NoSuchType", "id": "x"}),
        json!({"resourceType": "Patient", "birthDate": "not-a-date", "name": "not-a-list", "gender": 12}),
        json!({"resourceType": "Observation", "valueQuantity": {"value": "abc"}, "component": [{}, {"code": {}}]}),
        json!({"resourceType": "Encounter", "period": {"start": "garbage", "end": 5}}),
        json!([1, 2, 3]),
    ] {
        let entries = extract(&resource);
        assert!(entries.iter().all(|e| e.param != "birthdate"));
    }
}
