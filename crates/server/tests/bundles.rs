//! Transaction and batch bundles over real HTTP.

mod common;

use common::{assert_outcome, Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn transaction(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

async fn transaction_rewrites_placeholders_and_is_atomic(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let patient_url = "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a";
    let org_url = "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0";
    // The observation comes first in the bundle but refers to entries after it.
    let bundle = transaction(vec![
        json!({"fullUrl": "urn:uuid:3d3f2a1e-0000-4000-8000-000000000001", "resource": {
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
            "subject": {"reference": patient_url},
            "valueQuantity": {"value": 13.2, "unit": "g/dL"}
        }, "request": {"method": "POST", "url": "Observation"}}),
        json!({"fullUrl": patient_url, "resource": {
            "resourceType": "Patient", "name": [{"family": "Xu"}],
            "managingOrganization": {"reference": org_url}
        }, "request": {"method": "POST", "url": "Patient"}}),
        json!({"fullUrl": org_url, "resource": {"resourceType": "Organization", "name": "County Hospital",
            "identifier": [{"system": "urn:phip:org", "value": "H-1"}]},
            "request": {"method": "POST", "url": "Organization", "ifNoneExist": "identifier=urn:phip:org|H-1"}}),
    ]);
    let reply = server.post("", &bundle).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["type"], "transaction-response");
    let entries = reply.body["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    for entry in entries {
        assert_eq!(entry["response"]["status"], "201 Created", "{entry}");
        assert!(entry["response"]["location"]
            .as_str()
            .unwrap()
            .contains("/_history/1"));
    }
    let observation_location = entries[0]["response"]["location"].as_str().unwrap();
    let observation = server.get(observation_location).await;
    let subject = observation.body["subject"]["reference"].as_str().unwrap();
    assert!(subject.starts_with("Patient/"), "rewritten: {subject}");
    let patient = server.get(subject).await;
    assert_eq!(patient.status, StatusCode::OK);
    let org_ref = patient.body["managingOrganization"]["reference"]
        .as_str()
        .unwrap();
    assert!(org_ref.starts_with("Organization/"), "{org_ref}");

    // Replaying with ifNoneExist reuses the organization; a conditional reference resolves it.
    let second = transaction(vec![
        json!({"fullUrl": org_url, "resource": {"resourceType": "Organization", "name": "County Hospital",
            "identifier": [{"system": "urn:phip:org", "value": "H-1"}]},
            "request": {"method": "POST", "url": "Organization", "ifNoneExist": "identifier=urn:phip:org|H-1"}}),
        json!({"resource": {"resourceType": "Patient", "name": [{"family": "Ye"}],
            "managingOrganization": {"reference": "Organization?identifier=urn:phip:org|H-1"}},
            "request": {"method": "POST", "url": "Patient"}}),
    ]);
    let reply = server.post("", &second).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["entry"][0]["response"]["status"], "200 OK");
    assert_eq!(server.search_ids("Organization").await.len(), 1);
    let ye = server.get("Patient?family=Ye").await.entries();
    assert_eq!(ye[0]["managingOrganization"]["reference"], org_ref);

    // A failing entry rolls back the whole transaction.
    let before = server.get("Patient?_summary=count").await.body["total"].clone();
    let failing = transaction(vec![
        json!({"resource": {"resourceType": "Patient", "name": [{"family": "Rollback"}]}, "request": {"method": "POST", "url": "Patient"}}),
        json!({"resource": {"resourceType": "Patient", "name": [{"family": "Bad"}], "birthDate": "not-a-date"}, "request": {"method": "POST", "url": "Patient"}}),
    ]);
    let reply = server.post("", &failing).await;
    assert_outcome(&reply, 400);
    assert!(
        reply.body.to_string().contains("entry[1]"),
        "names the entry: {}",
        reply.body
    );
    assert!(server
        .search_ids("Patient?family=Rollback")
        .await
        .is_empty());
    assert_eq!(
        server.get("Patient?_summary=count").await.body["total"],
        before
    );

    // Conditional references that match nothing, or several, fail and name the reference.
    let dangling = transaction(vec![json!({"resource": {"resourceType": "Patient",
        "managingOrganization": {"reference": "Organization?identifier=urn:phip:org|nope"}},
        "request": {"method": "POST", "url": "Patient"}})]);
    let reply = server.post("", &dangling).await;
    assert!(reply.status.is_client_error());
    assert!(reply
        .body
        .to_string()
        .contains("Organization?identifier=urn:phip:org|nope"));
    let unknown_placeholder = transaction(vec![json!({"resource": {"resourceType": "Patient",
        "managingOrganization": {"reference": "urn:uuid:00000000-0000-4000-8000-00000000dead"}},
        "request": {"method": "POST", "url": "Patient"}})]);
    assert_outcome(&server.post("", &unknown_placeholder).await, 400);
}

async fn transaction_update_delete_and_read_entries(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let keep = server
        .create(&json!({"resourceType": "Patient", "name": [{"family": "Keep"}]}))
        .await;
    let drop_id = server
        .create(&json!({"resourceType": "Patient", "name": [{"family": "Drop"}]}))
        .await;
    let bundle = transaction(vec![
        json!({"request": {"method": "GET", "url": format!("Patient/{keep}")}}),
        json!({"resource": {"resourceType": "Patient", "id": keep, "name": [{"family": "Kept"}]},
            "request": {"method": "PUT", "url": format!("Patient/{keep}"), "ifMatch": "W/\"1\""}}),
        json!({"request": {"method": "DELETE", "url": format!("Patient/{drop_id}")}}),
        json!({"resource": {"resourceType": "Patient", "name": [{"family": "Conditional"}], "identifier": [{"system": "s", "value": "c-1"}]},
            "request": {"method": "PUT", "url": "Patient?identifier=s|c-1"}}),
    ]);
    let reply = server.post("", &bundle).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let entries = reply.body["entry"].as_array().unwrap();
    assert_eq!(
        entries[0]["resource"]["name"][0]["family"], "Kept",
        "GET runs after the writes"
    );
    assert_eq!(entries[1]["response"]["status"], "200 OK");
    assert!(
        entries[2]["response"]["status"]
            .as_str()
            .unwrap()
            .starts_with("204")
            || entries[2]["response"]["status"]
                .as_str()
                .unwrap()
                .starts_with("200")
    );
    assert_eq!(entries[3]["response"]["status"], "201 Created");
    assert_eq!(
        server.get(&format!("Patient/{drop_id}")).await.status,
        StatusCode::GONE
    );

    // A stale ifMatch fails the whole transaction with 412.
    let stale = transaction(vec![
        json!({"resource": {"resourceType": "Patient", "name": [{"family": "New"}]}, "request": {"method": "POST", "url": "Patient"}}),
        json!({"resource": {"resourceType": "Patient", "id": keep, "name": [{"family": "Stale"}]},
            "request": {"method": "PUT", "url": format!("Patient/{keep}"), "ifMatch": "W/\"1\""}}),
    ]);
    assert_outcome(&server.post("", &stale).await, 412);
    assert!(server.search_ids("Patient?family=New").await.is_empty());

    // Prefer: return=representation includes the resources in the response.
    let with_bodies = server.send(Method::POST, "", Some(&transaction(vec![json!({"resource": {"resourceType": "Patient", "name": [{"family": "Shown"}]}, "request": {"method": "POST", "url": "Patient"}})])), &[("prefer", "return=representation")]).await;
    assert_eq!(
        with_bodies.body["entry"][0]["resource"]["name"][0]["family"],
        "Shown"
    );
}

async fn batch_entries_are_independent(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Patient", "name": [{"family": "Good"}]}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "birthDate": "bad"}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/missing"}},
        {"request": {"method": "GET", "url": "Patient?family=Good"}}
    ]});
    let reply = server.post("", &bundle).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["type"], "batch-response");
    let entries = reply.body["entry"].as_array().unwrap();
    assert_eq!(entries[0]["response"]["status"], "201 Created");
    assert!(entries[1]["response"]["status"]
        .as_str()
        .unwrap()
        .starts_with("400"));
    assert_eq!(
        entries[1]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );
    assert!(entries[2]["response"]["status"]
        .as_str()
        .unwrap()
        .starts_with("404"));
    assert_eq!(entries[3]["resource"]["type"], "searchset");
    assert_eq!(server.search_ids("Patient?family=Good").await.len(), 1);

    assert_outcome(
        &server
            .post("", &json!({"resourceType": "Bundle", "type": "collection"}))
            .await,
        400,
    );
    assert_outcome(
        &server.post("", &json!({"resourceType": "Patient"})).await,
        400,
    );
}

/// A practitioner as Synthea's `practitionerInformation` bundles carry it.
fn synthea_practitioner(npi: &str, family: &str) -> Value {
    json!({"resource": {"resourceType": "Practitioner", "name": [{"family": family}],
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": npi}]},
        "request": {"method": "POST", "url": "Practitioner",
            "ifNoneExist": format!("identifier=http://hl7.org/fhir/sid/us-npi|{npi}")}})
}

/// A patient bundle as Synthea writes it: an Encounter whose participant is named by a
/// conditional reference whose search value is a URL.
fn synthea_patient(family: &str, practitioner: &str) -> Value {
    let patient = "urn:uuid:7f2b0c1e-5d44-4c3a-9e0f-0000000000a1";
    transaction(vec![
        json!({"fullUrl": patient, "resource": {"resourceType": "Patient", "name": [{"family": family}]},
            "request": {"method": "POST", "url": "Patient"}}),
        json!({"fullUrl": "urn:uuid:7f2b0c1e-5d44-4c3a-9e0f-0000000000a2", "resource": {
            "resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": patient},
            "participant": [{"individual": {"reference": practitioner, "display": "Dr. X"}}]},
            "request": {"method": "POST", "url": "Encounter"}}),
    ])
}

async fn conditional_references_with_urls_in_their_values_are_resolved(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let npi = "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999951909";

    // The patient's bundle before the practitioner's: nothing to resolve to, so 412 and
    // nothing of the bundle is stored.
    let early = server.post("", &synthea_patient("Early", npi)).await;
    assert_outcome(&early, 412);
    assert!(
        early.body.to_string().contains("9999951909"),
        "{}",
        early.body
    );
    assert!(server.search_ids("Patient?family=Early").await.is_empty());
    assert!(server.search_ids("Encounter").await.is_empty());

    // In the order a hospital system sends them: the reference becomes Practitioner/{id}.
    let shared = server
        .post(
            "",
            &transaction(vec![synthea_practitioner("9999951909", "Npi")]),
        )
        .await;
    assert_eq!(shared.status, StatusCode::OK, "{}", shared.body);
    let practitioner = server.search_ids("Practitioner?family=Npi").await;
    assert_eq!(practitioner.len(), 1);
    let reply = server.post("", &synthea_patient("Later", npi)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let encounters = server
        .get(&format!(
            "Encounter?practitioner=Practitioner/{}",
            practitioner[0]
        ))
        .await
        .entries();
    assert_eq!(
        encounters.len(),
        1,
        "the search follows the resolved reference"
    );
    assert_eq!(
        encounters[0]["participant"][0]["individual"]["reference"],
        format!("Practitioner/{}", practitioner[0])
    );

    // A `?` inside the search value is part of the value.
    let odd = server
        .create(
            &json!({"resourceType": "Practitioner", "name": [{"family": "Odd"}],
            "identifier": [{"system": "urn:phip:staff", "value": "a?b"}]}),
        )
        .await;
    let reply = server
        .post(
            "",
            &synthea_patient("Odd", "Practitioner?identifier=urn:phip:staff|a?b"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        server
            .search_ids(&format!("Encounter?practitioner=Practitioner/{odd}"))
            .await
            .len(),
        1
    );

    // Several matches: 412 as well, and again nothing stored.
    for family in ["Twin", "Twin"] {
        server
            .create(
                &json!({"resourceType": "Practitioner", "name": [{"family": family}],
                "identifier": [{"system": "https://example.org/npi", "value": "dup"}]}),
            )
            .await;
    }
    let ambiguous = server
        .post(
            "",
            &synthea_patient(
                "Ambiguous",
                "Practitioner?identifier=https://example.org/npi|dup",
            ),
        )
        .await;
    assert_outcome(&ambiguous, 412);
    assert!(server
        .search_ids("Patient?family=Ambiguous")
        .await
        .is_empty());
    assert_eq!(server.search_ids("Encounter").await.len(), 2);
}

async fn batch_post_assigns_a_new_id(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let body =
        json!({"resourceType": "Patient", "id": "chosen-by-client", "name": [{"family": "Batch"}]});
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": body, "request": {"method": "POST", "url": "Patient"}}]});
    let mut ids = Vec::new();
    // Posting the same entry twice creates two resources, as two REST creates would.
    for _ in 0..2 {
        let reply = server.post("", &bundle).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let entry = &reply.body["entry"][0];
        assert_eq!(entry["response"]["status"], "201 Created", "{entry}");
        let location = entry["response"]["location"].as_str().expect("location");
        let id = location
            .split('/')
            .rev()
            .nth(2)
            .expect("Patient/{id}/_history/1")
            .to_owned();
        assert_ne!(id, "chosen-by-client", "{location}");
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
    assert_eq!(
        server.get("Patient/chosen-by-client").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(server.search_ids("Patient?family=Batch").await, {
        let mut sorted = ids.clone();
        sorted.sort();
        sorted
    });
}

on_all_backends!(
    transaction_rewrites_placeholders_and_is_atomic,
    transaction_update_delete_and_read_entries,
    batch_entries_are_independent,
    conditional_references_with_urls_in_their_values_are_resolved,
    batch_post_assigns_a_new_id
);
