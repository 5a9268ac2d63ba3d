//! The builder renders valid R4 AuditEvents in the BALP shape.

use base64::Engine as _;
use phip_audit::{Action, Agent, AuditRecord, Coding, EventType, Interaction, Outcome, Source};
use serde_json::Value;

fn full_record() -> AuditRecord {
    AuditRecord::new(Interaction::Search, Outcome::Success)
        .agent(Agent {
            sub: Some("user-7".into()),
            client_id: Some("ehr-app".into()),
            organization: Some("Organization/110102-001".into()),
            reference: Some("Practitioner/7".into()),
            name: Some("Dr Li".into()),
            roles: vec!["doctor".into()],
            network_address: Some("192.0.2.10".into()),
        })
        .source(Source {
            node: "hic-node-1".into(),
            site: Some("https://hic.example.cn/fhir".into()),
        })
        .patient("123")
        .patient("Patient/456")
        .resource("Observation/9/_history/2")
        .query("Observation?patient=123&code=8480-6")
        .purpose(Coding::break_the_glass())
        .detail("emergency department")
}

fn validate(v: &Value) {
    if let Err(oo) = phip_fhir::validate::validate_resource(v) {
        panic!("invalid AuditEvent {v:#}: {oo:?}");
    }
}

#[test]
fn full_record_is_valid_r4_and_balp_shaped() {
    let v = full_record().to_fhir();
    validate(&v);
    assert_eq!(v["resourceType"], "AuditEvent");
    assert_eq!(v["type"]["code"], "rest");
    assert_eq!(
        v["subtype"][0]["system"],
        "http://hl7.org/fhir/restful-interaction"
    );
    assert_eq!(v["subtype"][0]["code"], "search");
    assert_eq!(v["action"], "E");
    assert_eq!(v["outcome"], "0");
    let agents = v["agent"].as_array().unwrap();
    assert_eq!(agents.len(), 2, "user and application");
    assert_eq!(agents[0]["requestor"], true);
    assert_eq!(agents[0]["who"]["reference"], "Practitioner/7");
    assert_eq!(agents[0]["who"]["identifier"]["value"], "user-7");
    assert_eq!(agents[0]["network"]["address"], "192.0.2.10");
    assert_eq!(agents[0]["network"]["type"], "2");
    assert_eq!(agents[0]["purposeOfUse"][0]["coding"][0]["code"], "BTG");
    assert_eq!(agents[1]["requestor"], false);
    assert_eq!(agents[1]["who"]["identifier"]["value"], "ehr-app");
    assert_eq!(v["purposeOfEvent"][0]["coding"][0]["code"], "BTG");
    assert_eq!(v["source"]["observer"]["display"], "hic-node-1");
    let entities = v["entity"].as_array().unwrap();
    let patients: Vec<&str> = entities
        .iter()
        .filter(|e| e["type"]["code"] == "1" && e["role"]["code"] == "1")
        .map(|e| e["what"]["reference"].as_str().unwrap())
        .collect();
    assert_eq!(patients, ["Patient/123", "Patient/456"]);
    assert!(entities
        .iter()
        .any(|e| e["type"]["code"] == "2" && e["what"]["reference"] == "Observation/9/_history/2"));
    let query = entities.iter().find(|e| e["role"]["code"] == "24").unwrap();
    let q = base64::engine::general_purpose::STANDARD
        .decode(query["query"].as_str().unwrap())
        .unwrap();
    assert_eq!(q, b"Observation?patient=123&code=8480-6");
}

#[test]
fn every_interaction_and_outcome_validates() {
    use Interaction::*;
    for i in [
        Read,
        Vread,
        Update,
        Patch,
        Delete,
        History,
        Create,
        Search,
        Capabilities,
        Transaction,
        Batch,
        Operation,
    ] {
        for o in [
            Outcome::Success,
            Outcome::MinorFailure,
            Outcome::SeriousFailure,
            Outcome::MajorFailure,
        ] {
            let v = AuditRecord::new(i, o).outcome_desc("x").to_fhir();
            validate(&v);
            assert_eq!(v["subtype"][0]["code"], i.code());
            assert_eq!(v["outcome"], o.code());
        }
    }
}

#[test]
fn minimal_and_variant_records_validate() {
    // Anonymous caller refused (no token at all).
    let v = AuditRecord::new(Interaction::Read, Outcome::MinorFailure)
        .outcome_desc("401: no bearer token")
        .to_fhir();
    validate(&v);
    assert_eq!(v["agent"][0]["who"]["display"], "anonymous");

    // Backend service: the application is the requestor; host name network address.
    let v = AuditRecord::new(Interaction::Create, Outcome::Success)
        .agent(Agent {
            client_id: Some("lab-feed".into()),
            network_address: Some("lab.example.cn".into()),
            ..Agent::default()
        })
        .resource("Observation/1")
        .event_type(EventType::PatientRecord)
        .action(Action::Create)
        .to_fhir();
    validate(&v);
    assert_eq!(v["type"]["code"], "110110");
    assert_eq!(
        v["type"]["system"],
        "http://dicom.nema.org/resources/ontology/DCM"
    );
    assert_eq!(v["agent"].as_array().unwrap().len(), 1);
    assert_eq!(v["agent"][0]["type"]["coding"][0]["code"], "110150");
    assert_eq!(v["agent"][0]["network"]["type"], "1");
}

#[test]
fn validator_is_not_vacuous() {
    // The same check rejects a broken AuditEvent, so the passes above mean something.
    let mut v = full_record().to_fhir();
    v.as_object_mut().unwrap().remove("source");
    v["agent"][0]["requestor"] = Value::String("yes".into());
    assert!(phip_fhir::validate::validate_resource(&v).is_err());
}
