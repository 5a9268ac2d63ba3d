//! The audit trail over HTTP: every request is recorded (including refused ones), residents
//! see who accessed their records, and nobody can write to the trail through the API.

mod common;

use common::{assert_outcome, Backend, TestServer};
use phip_security::token::Grant;
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn every_request_is_audited_and_residents_see_who_looked(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let alice = server
        .create(&json!({"resourceType": "Patient", "name": [{"family": "Alice"}]}))
        .await;
    let bob = server
        .create(&json!({"resourceType": "Patient", "name": [{"family": "Bob"}]}))
        .await;
    server
        .create(
            &json!({"resourceType": "Observation", "status": "final", "code": {"text": "bp"},
        "subject": {"reference": format!("Patient/{alice}")}}),
        )
        .await;

    // A clinician reads Alice's record and searches her observations.
    let doctor = format!(
        "Bearer {}",
        server.mint(Grant {
            sub: "dr-hua".into(),
            scope: "user/*.rs".into(),
            org: Some("clinic-1".into()),
            ..Grant::default()
        })
    );
    assert_eq!(
        server
            .send(
                Method::GET,
                &format!("Patient/{alice}"),
                None,
                &[("authorization", doctor.as_str())]
            )
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        server
            .send(
                Method::GET,
                &format!("Observation?subject=Patient/{alice}"),
                None,
                &[("authorization", doctor.as_str())]
            )
            .await
            .status,
        StatusCode::OK
    );
    // A refused request is recorded too.
    assert_outcome(
        &server
            .send(
                Method::GET,
                &format!("Patient/{alice}"),
                None,
                &[("authorization", "Bearer forged")],
            )
            .await,
        401,
    );

    // Alice asks who accessed her records.
    let alice_token = format!(
        "Bearer {}",
        server.mint(Grant {
            sub: "alice".into(),
            scope: "patient/*.rs".into(),
            patient: Some(alice.clone()),
            ..Grant::default()
        })
    );
    let trail = server
        .send(
            Method::GET,
            "AuditEvent",
            None,
            &[("authorization", alice_token.as_str())],
        )
        .await;
    assert_eq!(trail.status, StatusCode::OK, "{}", trail.body);
    let events = trail.entries();
    assert!(events.len() >= 2, "{}", trail.body);
    let by_doctor: Vec<_> = events
        .iter()
        .filter(|e| {
            e["agent"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["who"]["identifier"]["value"] == "dr-hua")
        })
        .collect();
    assert!(
        by_doctor.len() >= 2,
        "the clinician's read and search are listed: {}",
        trail.body
    );
    assert!(by_doctor.iter().any(|e| e["subtype"][0]["code"] == "read"));
    assert!(by_doctor
        .iter()
        .any(|e| e["subtype"][0]["code"] == "search"));
    for event in &events {
        let about_alice = event["entity"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["what"]["reference"] == format!("Patient/{alice}"));
        assert!(about_alice, "only events about Alice: {event}");
    }
    // She cannot look at Bob's trail.
    assert_outcome(
        &server
            .send(
                Method::GET,
                &format!("AuditEvent?patient=Patient/{bob}"),
                None,
                &[("authorization", alice_token.as_str())],
            )
            .await,
        403,
    );

    // The operator sees the refused request, recorded with its failure outcome.
    let refused = server.get("AuditEvent?agent=anonymous").await;
    assert_eq!(refused.status, StatusCode::OK, "{}", refused.body);
    assert!(
        refused.entries().iter().any(|e| e["outcome"] == "4"),
        "{}",
        refused.body
    );
    // One event can be read by id.
    let id = refused.entries()[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(server.get(&format!("AuditEvent/{id}")).await.body["id"], id);

    // The trail cannot be written, changed or deleted through the API.
    let forged = json!({"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2024-01-01T00:00:00Z",
        "agent": [{"requestor": true}], "source": {"observer": {"display": "x"}}});
    assert_outcome(&server.post("AuditEvent", &forged).await, 405);
    assert_outcome(&server.put(&format!("AuditEvent/{id}"), &forged).await, 405);
    assert_outcome(&server.delete(&format!("AuditEvent/{id}")).await, 405);

    let smuggled = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": forged, "request": {"method": "POST", "url": "AuditEvent"}}]});
    assert_outcome(&server.post("", &smuggled).await, 405);

    // And the chain is intact.
    let report = server.audit.verify().expect("verify");
    assert!(report.is_intact(), "{:?}", report.first_broken);
    assert!(report.records >= 8);
}

on_both_backends!(every_request_is_audited_and_residents_see_who_looked);
