//! Where a record counts: the patient's coded residence, else the holder's division.

use phip_surveillance::source::{holder_division, patient_id, residence_division, Residences};
use serde_json::json;

#[test]
fn residence_prefers_home_addresses_and_coded_fields() {
    let p = json!({"resourceType": "Patient", "address": [
        {"use": "work", "district": "440305"},
        {"use": "home", "city": "深圳市", "district": "南山区", "extension": [
            {"url": "https://phip.cn/fhir/StructureDefinition/division", "valueCode": "440304"}
        ]}
    ]});
    assert_eq!(residence_division(&p).as_deref(), Some("440304"));
    let coded_city = json!({"address": [{"city": "440300", "district": "福田"}]});
    assert_eq!(residence_division(&coded_city).as_deref(), Some("440300"));
    let uncoded = json!({"address": [{"city": "深圳市", "district": "福田区"}]});
    assert_eq!(residence_division(&uncoded), None);
    assert_eq!(
        residence_division(&json!({"address": [{"district": "12345"}]})),
        None
    );
}

#[test]
fn place_is_residence_then_holder_tag() {
    let residences = Residences::from_pairs([
        ("a".to_string(), Some("110105".to_string())),
        ("b".to_string(), None),
    ]);
    let tagged = |patient: &str| {
        json!({"resourceType": "Condition", "subject": {"reference": format!("Patient/{patient}")},
            "meta": {"tag": [{"system": "urn:phip:division", "code": "110108"}]}})
    };
    assert_eq!(residences.place_of(&tagged("a")).as_deref(), Some("110105"));
    assert_eq!(residences.place_of(&tagged("b")).as_deref(), Some("110108"));
    assert_eq!(
        residences.place_of(&tagged("unknown")).as_deref(),
        Some("110108")
    );
    let untagged = json!({"resourceType": "Condition", "subject": {"reference": "Patient/b"}});
    assert_eq!(residences.place_of(&untagged), None);
    assert_eq!(holder_division(&tagged("a")), Some("110108"));
}

#[test]
fn patient_of_subject_for_and_contract_subjects() {
    assert_eq!(
        patient_id(&json!({"subject": {"reference": "Patient/p1"}})),
        Some("p1")
    );
    assert_eq!(
        patient_id(&json!({"for": {"reference": "Patient/p2/_history/3"}})),
        Some("p2")
    );
    assert_eq!(
        patient_id(&json!({"subject": [{"reference": "Group/g"}, {"reference": "Patient/p3"}]})),
        Some("p3")
    );
    assert_eq!(
        patient_id(&json!({"subject": {"reference": "Group/g"}})),
        None
    );
}
