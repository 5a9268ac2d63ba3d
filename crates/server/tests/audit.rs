//! The audit trail over HTTP: every request is recorded (including refused ones), residents
//! see who accessed their records, organisations their own staff's actions, auditors and the
//! operator everything, anyone else nothing; and nobody can write to the trail through the API.

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

/// The requestor's organisation of a returned AuditEvent.
fn org_of(event: &serde_json::Value) -> Option<String> {
    phip_audit::event::requestor_organization(event).map(str::to_owned)
}

fn ids(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Issue #16, item 9: who may read the trail, with the restriction inside the query (pages are
/// full, paging covers exactly the caller's events).
async fn who_may_read_the_audit_trail(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let alice = server
        .create(&json!({"resourceType": "Patient", "name": [{"family": "Alice"}]}))
        .await;
    let bob = server
        .create(&json!({"resourceType": "Patient", "name": [{"family": "Bob"}]}))
        .await;
    let bearer = |grant: Grant| format!("Bearer {}", server.mint(grant));
    let clinician = |org: &str| {
        bearer(Grant {
            sub: format!("dr-{org}"),
            scope: "user/*.rs".into(),
            org: Some(org.into()),
            ..Grant::default()
        })
    };
    let clinic_a = clinician("clinic-a");
    let clinic_b = clinician("clinic-b");
    let resident = |id: &str| {
        bearer(Grant {
            sub: format!("resident-{id}"),
            scope: "patient/*.rs".into(),
            patient: Some(id.into()),
            ..Grant::default()
        })
    };
    let (alice_token, bob_token) = (resident(&alice), resident(&bob));
    let auditor = bearer(Grant {
        sub: "inspector".into(),
        scope: "user/AuditEvent.rs".into(),
        roles: vec!["auditor".into()],
        ..Grant::default()
    });
    // A user with every read scope but neither an organisation nor the auditor role.
    let no_role = bearer(Grant {
        sub: "someone".into(),
        scope: "user/*.rs".into(),
        roles: vec!["doctor".into()],
        ..Grant::default()
    });
    // An institution's backend system: bound to its organisation like its staff.
    let system_b = bearer(Grant {
        sub: "his-b".into(),
        scope: "system/*.rs".into(),
        client_id: Some("his-b".into()),
        org: Some("clinic-b".into()),
        ..Grant::default()
    });
    let get = |path: String, token: &str| {
        let token = token.to_owned();
        let server = &server;
        async move {
            server
                .send(
                    Method::GET,
                    &path,
                    None,
                    &[("authorization", token.as_str())],
                )
                .await
        }
    };

    // Clinic A reads Alice three times, clinic B reads Bob twice.
    for _ in 0..3 {
        assert_eq!(
            get(format!("Patient/{alice}"), &clinic_a).await.status,
            StatusCode::OK
        );
    }
    for _ in 0..2 {
        assert_eq!(
            get(format!("Patient/{bob}"), &clinic_b).await.status,
            StatusCode::OK
        );
    }

    // Nobody: 401. A user without organisation or the auditor role: 403, on search and read.
    let anonymous = server
        .client
        .get(server.url("AuditEvent"))
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_outcome(&get("AuditEvent".into(), &no_role).await, 403);
    assert_outcome(
        &get("AuditEvent?patient=Patient/x".into(), &no_role).await,
        403,
    );

    // The auditor sees everything: both clinics' reads and the operator's writes.
    let everything = get("AuditEvent?_count=1000".into(), &auditor).await;
    assert_eq!(everything.status, StatusCode::OK, "{}", everything.body);
    let everything = everything.entries();
    let of = |org: &str| -> Vec<String> {
        ids(&everything
            .iter()
            .filter(|e| org_of(e).as_deref() == Some(org))
            .cloned()
            .collect::<Vec<_>>())
    };
    let (a_events, b_events) = (of("Organization/clinic-a"), of("Organization/clinic-b"));
    assert_eq!(a_events.len(), 3, "clinic A's reads: {everything:?}");
    assert_eq!(b_events.len(), 2, "clinic B's reads: {everything:?}");
    assert!(
        everything.iter().any(|e| org_of(e).is_none()),
        "the operator's own actions too"
    );

    // Clinic A pages through its own actions one event at a time: every page is full and the
    // pages are exactly clinic A's events (the restriction is in the query, not applied after).
    let mut paged = Vec::new();
    let mut next = Some("AuditEvent?_count=1".to_owned());
    while let Some(url) = next.take() {
        let page = get(url, &clinic_a).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let entries = page.entries();
        assert_eq!(entries.len(), 1, "a full page: {}", page.body);
        paged.extend(ids(&entries));
        next = page.body["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str())
            .map(str::to_owned);
    }
    assert_eq!(
        paged, a_events,
        "clinic A's trail, newest first, nothing else"
    );
    // Naming another organisation's clinician or patient narrows clinic A's own trail; it never
    // widens it.
    let asked = get("AuditEvent?agent=dr-clinic-b".into(), &clinic_a).await;
    assert_eq!(asked.status, StatusCode::OK, "{}", asked.body);
    assert!(asked.entries().is_empty(), "{}", asked.body);
    let asked = get(format!("AuditEvent?patient=Patient/{bob}"), &clinic_a).await;
    assert!(asked.entries().is_empty(), "{}", asked.body);
    for event in get("AuditEvent?_count=1000".into(), &clinic_b)
        .await
        .entries()
    {
        assert_eq!(
            org_of(&event).as_deref(),
            Some("Organization/clinic-b"),
            "{event}"
        );
    }
    // A backend system of clinic B sees clinic B's actions (its staff's and its own).
    let by_system = get("AuditEvent?_count=1000".into(), &system_b)
        .await
        .entries();
    assert!(ids(&by_system).iter().any(|id| b_events.contains(id)));
    for event in &by_system {
        assert_eq!(
            org_of(event).as_deref(),
            Some("Organization/clinic-b"),
            "{event}"
        );
    }

    // By id: another organisation's event does not exist for the caller.
    let a_event = &a_events[0];
    let path = format!("AuditEvent/{a_event}");
    assert_eq!(get(path.clone(), &clinic_a).await.status, StatusCode::OK);
    assert_eq!(get(path.clone(), &auditor).await.status, StatusCode::OK);
    assert_eq!(
        server.get(&path).await.status,
        StatusCode::OK,
        "the operator"
    );
    assert_outcome(&get(path.clone(), &clinic_b).await, 404);
    assert_outcome(&get(path.clone(), &system_b).await, 404);
    assert_outcome(&get(path.clone(), &no_role).await, 403);
    // Residents: clinic A's read of Alice is in Alice's trail, not in Bob's.
    assert_eq!(get(path.clone(), &alice_token).await.status, StatusCode::OK);
    assert_outcome(&get(path.clone(), &bob_token).await, 404);
    let bobs = get("AuditEvent?_count=1000".into(), &bob_token).await;
    assert_eq!(bobs.status, StatusCode::OK, "{}", bobs.body);
    assert!(
        !ids(&bobs.entries()).iter().any(|id| a_events.contains(id)),
        "{}",
        bobs.body
    );
    assert!(ids(&bobs.entries()).iter().any(|id| b_events.contains(id)));
    assert_outcome(
        &get(format!("AuditEvent?patient=Patient/{alice}"), &bob_token).await,
        403,
    );
}

on_both_backends!(
    every_request_is_audited_and_residents_see_who_looked,
    who_may_read_the_audit_trail
);
