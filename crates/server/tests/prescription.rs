//! Electronic prescription circulation over HTTP, with the tokens of the institutions
//! involved: a hospital signs and releases a prescription, pharmacies of the region find it
//! by access code or resident identifier and dispense it exactly once (also when eight
//! dispenses from two pharmacies race), the prescriber cancels, expiry stops dispensing, and
//! a regional supervisor searches by prescriber, drug and status — on both backends.

mod common;

use common::{assert_outcome, resident_id, Backend, Reply, TestServer};
use phip_security::token::Grant;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const RESIDENT_ID: &str = "urn:oid:2.16.156.10011.1.1";
const ACCESS_CODE: &str = "urn:phip:eprescription:access-code";
const ATC: &str = "http://www.whocc.no/atc";
/// Chaoyang district, Beijing: the hospital and both pharmacies.
const DISTRICT: &str = "110105";

struct Actors {
    hospital: String,
    other_hospital: String,
    pharmacy_a: String,
    pharmacy_b: String,
    supervisor: String,
    far_supervisor: String,
}

fn actors(server: &TestServer) -> Actors {
    let grant = |sub: &str, scope: &str, org: &str, division: &str| Grant {
        sub: sub.into(),
        scope: scope.into(),
        org: Some(org.into()),
        division: Some(division.into()),
        ..Grant::default()
    };
    let pharmacy_scope =
        "user/MedicationRequest.rs user/MedicationDispense.crus user/Patient.rs user/Provenance.rs";
    Actors {
        hospital: server.mint(grant("dr-li", "user/*.cruds", "hosp-1", DISTRICT)),
        other_hospital: server.mint(grant("dr-wu", "user/*.cruds", "hosp-2", DISTRICT)),
        pharmacy_a: server.mint(grant("ph-a", pharmacy_scope, "pharm-a", DISTRICT)),
        pharmacy_b: server.mint(grant("ph-b", pharmacy_scope, "pharm-b", DISTRICT)),
        supervisor: server.mint(grant(
            "inspector",
            "user/MedicationRequest.rs user/MedicationDispense.rs",
            "beijing-nhc",
            "110000",
        )),
        far_supervisor: server.mint(grant(
            "far-inspector",
            "user/MedicationRequest.rs",
            "tianjin-nhc",
            "120000",
        )),
    }
}

async fn call(
    server: &TestServer,
    token: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Reply {
    let bearer = format!("Bearer {token}");
    server
        .send(method, path, body, &[("authorization", bearer.as_str())])
        .await
}

fn prescription(patient: &str, drug: &str, quantity: u32, valid_until: &str) -> Value {
    json!({
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": ATC, "code": drug}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "requester": {"reference": "Practitioner/dr-li"},
        "authoredOn": "2025-05-01",
        "dosageInstruction": [{"text": "5 mg once daily"}],
        "dispenseRequest": {
            "validityPeriod": {"start": "2025-05-01", "end": valid_until},
            "quantity": {"value": quantity, "unit": "tablet", "system": "http://unitsofmeasure.org", "code": "{tbl}"}
        }
    })
}

/// Creates a draft as the hospital, signs it and releases it; returns (id, access code).
async fn issue(server: &TestServer, a: &Actors, body: &Value) -> (String, String) {
    let created = call(
        server,
        &a.hospital,
        Method::POST,
        "MedicationRequest",
        Some(body),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let signed = call(
        server,
        &a.hospital,
        Method::POST,
        &format!("MedicationRequest/{id}/$sign"),
        None,
    )
    .await;
    assert_eq!(signed.status, StatusCode::CREATED, "{}", signed.body);
    let released = call(
        server,
        &a.hospital,
        Method::POST,
        &format!("MedicationRequest/{id}/$release"),
        None,
    )
    .await;
    assert_eq!(released.status, StatusCode::OK, "{}", released.body);
    (id, access_code(&released.body))
}

fn access_code(prescription: &Value) -> String {
    prescription["identifier"]
        .as_array()
        .and_then(|ids| ids.iter().find(|i| i["system"] == ACCESS_CODE))
        .and_then(|i| i["value"].as_str())
        .unwrap_or_else(|| panic!("no access code: {prescription}"))
        .to_owned()
}

async fn setup(server: &TestServer, a: &Actors) -> (String, String) {
    let rid = resident_id("110105", "19580312", "123");
    let patient = json!({
        "resourceType": "Patient",
        "identifier": [{"system": RESIDENT_ID, "value": rid}],
        "name": [{"text": "王建国"}], "gender": "male", "birthDate": "1958-03-12"
    });
    let created = call(server, &a.hospital, Method::POST, "Patient", Some(&patient)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let practitioner =
        json!({"resourceType": "Practitioner", "id": "dr-li", "name": [{"text": "李医生"}]});
    let put = call(
        server,
        &a.hospital,
        Method::PUT,
        "Practitioner/dr-li",
        Some(&practitioner),
    )
    .await;
    assert!(put.status.is_success(), "{}", put.body);
    (created.body["id"].as_str().unwrap().to_owned(), rid)
}

async fn status_of(server: &TestServer, id: &str) -> String {
    let reply = server.get(&format!("MedicationRequest/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["status"].as_str().unwrap_or_default().to_owned()
}

async fn release_needs_a_valid_signature_and_the_prescriber(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let a = actors(&server);
    let (patient, _) = setup(&server, &a).await;
    let draft = prescription(&patient, "C08CA01", 28, "2099-12-31");
    let created = call(
        &server,
        &a.hospital,
        Method::POST,
        "MedicationRequest",
        Some(&draft),
    )
    .await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let release = format!("MedicationRequest/{id}/$release");

    // Unsigned: refused.
    let reply = call(&server, &a.hospital, Method::POST, &release, None).await;
    assert_outcome(&reply, 422);
    assert!(reply.body.to_string().contains("sign"), "{}", reply.body);

    // Signed version 1, then changed (quantity) as version 2: the signature does not cover
    // what would be released.
    let signed = call(
        &server,
        &a.hospital,
        Method::POST,
        &format!("MedicationRequest/{id}/$sign"),
        None,
    )
    .await;
    assert_eq!(signed.status, StatusCode::CREATED, "{}", signed.body);
    let mut tampered = server.get(&format!("MedicationRequest/{id}")).await.body;
    tampered["dispenseRequest"]["quantity"]["value"] = json!(280);
    let put = call(
        &server,
        &a.hospital,
        Method::PUT,
        &format!("MedicationRequest/{id}"),
        Some(&tampered),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    let reply = call(&server, &a.hospital, Method::POST, &release, None).await;
    assert_outcome(&reply, 422);

    // A forged Provenance reusing version 1's signature for version 2 does not verify.
    let mut forged = signed.body.clone();
    forged.as_object_mut().unwrap().remove("id");
    forged.as_object_mut().unwrap().remove("meta");
    forged["target"][0]["reference"] = json!(format!("MedicationRequest/{id}/_history/2"));
    let created = call(
        &server,
        &a.hospital,
        Method::POST,
        "Provenance",
        Some(&forged),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let reply = call(&server, &a.hospital, Method::POST, &release, None).await;
    assert_outcome(&reply, 422);
    assert!(reply.body.to_string().contains("verif"), "{}", reply.body);

    // Signing the current version makes it releasable, but only by the prescriber.
    let signed = call(
        &server,
        &a.hospital,
        Method::POST,
        &format!("MedicationRequest/{id}/$sign?alg=ES256"),
        None,
    )
    .await;
    assert_eq!(signed.status, StatusCode::CREATED, "{}", signed.body);
    assert_outcome(
        &call(&server, &a.pharmacy_a, Method::POST, &release, None).await,
        403,
    );
    assert_outcome(
        &call(&server, &a.other_hospital, Method::POST, &release, None).await,
        403,
    );
    let released = call(&server, &a.hospital, Method::POST, &release, None).await;
    assert_eq!(released.status, StatusCode::OK, "{}", released.body);
    assert_eq!(released.body["status"], "active");
    let code = access_code(&released.body);
    assert_eq!(code.len(), 10);
    assert!(code
        .bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()));
    assert!(released.body["category"]
        .to_string()
        .contains("circulating"));
    assert_outcome(
        &call(&server, &a.hospital, Method::POST, &release, None).await,
        409,
    );

    // Released content is frozen, the code and category are the server's, completion comes
    // only from dispensing, and the record is never deleted.
    let current = server.get(&format!("MedicationRequest/{id}")).await.body;
    let path = format!("MedicationRequest/{id}");
    let mut changed = current.clone();
    changed["dispenseRequest"]["quantity"]["value"] = json!(56);
    assert_outcome(
        &call(&server, &a.hospital, Method::PUT, &path, Some(&changed)).await,
        422,
    );
    let mut recoded = current.clone();
    recoded["identifier"][0]["value"] = json!("AAAAAAAAAA");
    assert_outcome(
        &call(&server, &a.hospital, Method::PUT, &path, Some(&recoded)).await,
        422,
    );
    let mut completed = current.clone();
    completed["status"] = json!("completed");
    assert_outcome(
        &call(&server, &a.hospital, Method::PUT, &path, Some(&completed)).await,
        409,
    );
    let patch = json!([{"op": "replace", "path": "/status", "value": "completed"}]);
    let patched = call(&server, &a.hospital, Method::PATCH, &path, Some(&patch)).await;
    // JSON Patch bodies need their own content type.
    let patched = if patched.status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        let bearer = format!("Bearer {}", a.hospital);
        server
            .send(
                Method::PATCH,
                &path,
                Some(&patch),
                &[
                    ("authorization", bearer.as_str()),
                    ("content-type", "application/json-patch+json"),
                ],
            )
            .await
    } else {
        patched
    };
    assert_outcome(&patched, 409);
    assert_outcome(
        &call(&server, &a.hospital, Method::DELETE, &path, None).await,
        409,
    );
    // A client cannot mint a circulating prescription itself.
    let mut fake = prescription(&patient, "C08CA01", 28, "2099-12-31");
    fake["status"] = json!("active");
    fake["identifier"] = json!([{"system": ACCESS_CODE, "value": "ABCDEFGHJK"}]);
    assert_outcome(
        &call(
            &server,
            &a.hospital,
            Method::POST,
            "MedicationRequest",
            Some(&fake),
        )
        .await,
        422,
    );
    assert_eq!(status_of(&server, &id).await, "active");
}

async fn pharmacies_find_and_exactly_one_dispense_wins(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let a = actors(&server);
    let (patient, rid) = setup(&server, &a).await;
    let (id, code) = issue(
        &server,
        &a,
        &prescription(&patient, "C08CA01", 28, "2099-12-31"),
    )
    .await;

    // Found by access code (any case), by the resident's identifier, and by plain search.
    for key in [code.clone(), code.to_ascii_lowercase()] {
        let found = call(
            &server,
            &a.pharmacy_a,
            Method::GET,
            &format!("MedicationRequest/$find-prescription?code={key}"),
            None,
        )
        .await;
        assert_eq!(found.status, StatusCode::OK, "{}", found.body);
        assert_eq!(found.ids(), vec![id.clone()]);
    }
    let found = call(
        &server,
        &a.pharmacy_b,
        Method::GET,
        &format!("MedicationRequest/$find-prescription?patient={RESIDENT_ID}|{rid}"),
        None,
    )
    .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert_eq!(found.ids(), vec![id.clone()]);
    let found = call(
        &server,
        &a.pharmacy_b,
        Method::GET,
        &format!("MedicationRequest?identifier={ACCESS_CODE}|{code}"),
        None,
    )
    .await;
    assert_eq!(found.ids(), vec![id.clone()]);
    let found = call(
        &server,
        &a.pharmacy_a,
        Method::GET,
        "MedicationRequest/$find-prescription?code=ZZZZZZZZZZ",
        None,
    )
    .await;
    assert!(found.ids().is_empty(), "{}", found.body);
    assert_outcome(
        &call(
            &server,
            &a.pharmacy_a,
            Method::GET,
            "MedicationRequest/$find-prescription",
            None,
        )
        .await,
        400,
    );

    // A pharmacy may not dispense more than prescribed.
    let too_much = json!({"resourceType": "Parameters", "parameter": [
        {"name": "quantity", "valueQuantity": {"value": 56, "unit": "tablet", "system": "http://unitsofmeasure.org", "code": "{tbl}"}}
    ]});
    assert_outcome(
        &call(
            &server,
            &a.pharmacy_a,
            Method::POST,
            &format!("MedicationRequest/{id}/$dispense"),
            Some(&too_much),
        )
        .await,
        422,
    );

    // Eight pharmacists of two pharmacies dispense at once: exactly one wins.
    let mut attempts = Vec::new();
    for i in 0..8 {
        let token = if i % 2 == 0 {
            a.pharmacy_a.clone()
        } else {
            a.pharmacy_b.clone()
        };
        let path = format!("MedicationRequest/{id}/$dispense");
        let client = server.client.clone();
        let url = server.url(&path);
        attempts.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("request");
            let status = response.status();
            let body: Value = response.json().await.expect("json");
            (status, body)
        }));
    }
    let mut won = Vec::new();
    let mut lost = 0;
    for attempt in attempts {
        let (status, body) = attempt.await.expect("join");
        match status {
            StatusCode::CREATED => won.push(body),
            StatusCode::CONFLICT => {
                assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
                let text = body.to_string();
                assert!(
                    text.contains("dispensed") && text.contains("only once"),
                    "{text}"
                );
                lost += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one dispense succeeds");
    assert_eq!(lost, 7);
    let dispense = &won[0];
    assert_eq!(dispense["status"], "completed");
    assert_eq!(
        dispense["authorizingPrescription"][0]["reference"],
        format!("MedicationRequest/{id}")
    );
    assert_eq!(dispense["quantity"]["value"], 28);
    assert!(dispense["performer"][0]["actor"]["reference"]
        .as_str()
        .unwrap()
        .starts_with("Organization/pharm-"));
    assert_eq!(
        dispense["medicationCodeableConcept"]["coding"][0]["code"],
        "C08CA01"
    );
    let stored = server
        .search_ids(&format!(
            "MedicationDispense?prescription=MedicationRequest/{id}"
        ))
        .await;
    assert_eq!(stored.len(), 1, "exactly one MedicationDispense stored");
    assert_eq!(status_of(&server, &id).await, "completed");

    // Nor can a raw MedicationDispense (in progress or completed) bypass the rule, and the
    // recorded dispense is kept.
    for status in ["completed", "in-progress"] {
        let raw = json!({
            "resourceType": "MedicationDispense", "status": status,
            "medicationCodeableConcept": {"coding": [{"system": ATC, "code": "C08CA01"}]},
            "subject": {"reference": format!("Patient/{patient}")},
            "authorizingPrescription": [{"reference": format!("MedicationRequest/{id}")}]
        });
        let reply = call(
            &server,
            &a.pharmacy_b,
            Method::POST,
            "MedicationDispense",
            Some(&raw),
        )
        .await;
        assert_outcome(&reply, 409);
    }
    let dispense_id = dispense["id"].as_str().unwrap();
    assert_outcome(
        &call(
            &server,
            &a.hospital,
            Method::DELETE,
            &format!("MedicationDispense/{dispense_id}"),
            None,
        )
        .await,
        409,
    );
    assert_outcome(
        &call(
            &server,
            &a.pharmacy_a,
            Method::POST,
            &format!("MedicationRequest/{id}/$dispense"),
            None,
        )
        .await,
        409,
    );
    // By access code the pharmacy still sees it, and why it cannot be dispensed.
    let found = call(
        &server,
        &a.pharmacy_a,
        Method::GET,
        &format!("MedicationRequest/$find-prescription?code={code}"),
        None,
    )
    .await;
    assert_eq!(found.entries()[0]["status"], "completed");
}

async fn cancel_expire_and_supervise(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let a = actors(&server);
    let (patient, _) = setup(&server, &a).await;

    // Cancel: the prescriber's organisation only, and only while active.
    let (cancelled, _) = issue(
        &server,
        &a,
        &prescription(&patient, "A10BA02", 60, "2099-12-31"),
    )
    .await;
    let path = format!("MedicationRequest/{cancelled}");
    let mut body = server.get(&path).await.body;
    body["status"] = json!("cancelled");
    body["statusReason"] = json!({"text": "wrong dose"});
    assert_outcome(
        &call(&server, &a.pharmacy_a, Method::PUT, &path, Some(&body)).await,
        403,
    );
    assert_outcome(
        &call(&server, &a.other_hospital, Method::PUT, &path, Some(&body)).await,
        403,
    );
    let reply = call(&server, &a.hospital, Method::PUT, &path, Some(&body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let reply = call(
        &server,
        &a.pharmacy_a,
        Method::POST,
        &format!("{path}/$dispense"),
        None,
    )
    .await;
    assert_outcome(&reply, 409);
    assert!(
        reply.body.to_string().contains("cancelled"),
        "{}",
        reply.body
    );
    let mut reactivated = server.get(&path).await.body;
    reactivated["status"] = json!("active");
    assert_outcome(
        &call(&server, &a.hospital, Method::PUT, &path, Some(&reactivated)).await,
        409,
    );
    // A still-valid prescription is not "stopped" as expired.
    let (valid, _) = issue(
        &server,
        &a,
        &prescription(&patient, "C08CA01", 28, "2099-12-31"),
    )
    .await;
    let mut stop = server.get(&format!("MedicationRequest/{valid}")).await.body;
    stop["status"] = json!("stopped");
    assert_outcome(
        &call(
            &server,
            &a.hospital,
            Method::PUT,
            &format!("MedicationRequest/{valid}"),
            Some(&stop),
        )
        .await,
        409,
    );

    // Expiry: dispensing after the validity period is refused, naming the date; the sweep
    // then stops it so that supervision sees the effective status.
    let (expired, _) = issue(
        &server,
        &a,
        &prescription(&patient, "C09AA02", 14, "2025-05-04"),
    )
    .await;
    let reply = call(
        &server,
        &a.pharmacy_b,
        Method::POST,
        &format!("MedicationRequest/{expired}/$dispense"),
        None,
    )
    .await;
    assert_outcome(&reply, 422);
    assert!(
        reply.body.to_string().contains("2025-05-04"),
        "{}",
        reply.body
    );
    let active = call(
        &server,
        &a.supervisor,
        Method::GET,
        "MedicationRequest?status=active",
        None,
    )
    .await;
    assert_eq!(active.ids(), {
        let mut v = vec![valid.clone(), expired.clone()];
        v.sort();
        v
    });
    let sweep = call(
        &server,
        &a.pharmacy_a,
        Method::POST,
        "MedicationRequest/$expire-prescriptions",
        None,
    )
    .await;
    assert_outcome(&sweep, 403);
    let sweep = server
        .post(
            "MedicationRequest/$expire-prescriptions",
            &json!({"resourceType": "Parameters"}),
        )
        .await;
    assert_eq!(sweep.status, StatusCode::OK, "{}", sweep.body);
    assert_eq!(sweep.body["parameter"][0]["valueInteger"], 1);
    assert_eq!(status_of(&server, &expired).await, "stopped");
    let again = server
        .post(
            "MedicationRequest/$expire-prescriptions",
            &json!({"resourceType": "Parameters"}),
        )
        .await;
    assert_eq!(again.body["parameter"][0]["valueInteger"], 0);

    // Dispense the valid one, then supervise by prescriber, drug and status.
    let reply = call(
        &server,
        &a.pharmacy_a,
        Method::POST,
        &format!("MedicationRequest/{valid}/$dispense"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let query = |status: &str, drug: &str| {
        format!("MedicationRequest?requester=Practitioner/dr-li&code={ATC}|{drug}&status={status}")
    };
    let sup = |q: String| {
        let token = a.supervisor.clone();
        let server = &server;
        async move { call(server, &token, Method::GET, &q, None).await }
    };
    let done = sup(query("completed", "C08CA01")).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.ids(), vec![valid.clone()]);
    assert_eq!(
        sup(query("cancelled", "A10BA02")).await.ids(),
        vec![cancelled.clone()]
    );
    assert_eq!(
        sup(query("stopped", "C09AA02")).await.ids(),
        vec![expired.clone()]
    );
    assert!(sup(query("active", "C08CA01")).await.ids().is_empty());
    let dispensed = call(
        &server,
        &a.supervisor,
        Method::GET,
        "MedicationDispense?performer=Organization/pharm-a",
        None,
    )
    .await;
    assert_eq!(dispensed.ids().len(), 1, "{}", dispensed.body);
    // A supervisor of another province sees none of this district's prescriptions.
    let far = call(
        &server,
        &a.far_supervisor,
        Method::GET,
        "MedicationRequest",
        None,
    )
    .await;
    assert_eq!(far.status, StatusCode::OK, "{}", far.body);
    assert!(far.ids().is_empty(), "{}", far.body);
}

async fn dispense_records_in_progress_then_completed(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let a = actors(&server);
    let (patient, _) = setup(&server, &a).await;
    let raw = |prescription: &str, status: &str| {
        json!({
            "resourceType": "MedicationDispense", "status": status,
            "medicationCodeableConcept": {"coding": [{"system": ATC, "code": "C08CA01"}]},
            "subject": {"reference": format!("Patient/{patient}")},
            "performer": [{"actor": {"reference": "Organization/pharm-a"}}],
            "authorizingPrescription": [{"reference": format!("MedicationRequest/{prescription}")}]
        })
    };
    // A draft (unsigned, unreleased) prescription cannot be dispensed.
    let draft = call(
        &server,
        &a.hospital,
        Method::POST,
        "MedicationRequest",
        Some(&prescription(&patient, "C08CA01", 28, "2099-12-31")),
    )
    .await;
    let draft = draft.body["id"].as_str().unwrap().to_owned();
    assert_outcome(
        &call(
            &server,
            &a.pharmacy_a,
            Method::POST,
            "MedicationDispense",
            Some(&raw(&draft, "completed")),
        )
        .await,
        409,
    );
    assert_outcome(
        &call(
            &server,
            &a.pharmacy_a,
            Method::POST,
            &format!("MedicationRequest/{draft}/$dispense"),
            None,
        )
        .await,
        409,
    );

    // Preparing (in-progress) claims the prescription; completing that same dispense is
    // fine, a second one is not, and the claiming dispense cannot be moved elsewhere.
    let (id, _) = issue(
        &server,
        &a,
        &prescription(&patient, "C08CA01", 28, "2099-12-31"),
    )
    .await;
    let preparing = call(
        &server,
        &a.pharmacy_a,
        Method::POST,
        "MedicationDispense",
        Some(&raw(&id, "in-progress")),
    )
    .await;
    assert_eq!(preparing.status, StatusCode::CREATED, "{}", preparing.body);
    assert_eq!(status_of(&server, &id).await, "completed");
    let dispense_id = preparing.body["id"].as_str().unwrap().to_owned();
    let mut done = preparing.body.clone();
    done["status"] = json!("completed");
    let reply = call(
        &server,
        &a.pharmacy_a,
        Method::PUT,
        &format!("MedicationDispense/{dispense_id}"),
        Some(&done),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_outcome(
        &call(
            &server,
            &a.pharmacy_b,
            Method::POST,
            "MedicationDispense",
            Some(&raw(&id, "completed")),
        )
        .await,
        409,
    );
    let (other, _) = issue(
        &server,
        &a,
        &prescription(&patient, "C08CA01", 28, "2099-12-31"),
    )
    .await;
    let mut moved = server
        .get(&format!("MedicationDispense/{dispense_id}"))
        .await
        .body;
    moved["authorizingPrescription"] = json!([{"reference": format!("MedicationRequest/{other}")}]);
    assert_outcome(
        &call(
            &server,
            &a.pharmacy_a,
            Method::PUT,
            &format!("MedicationDispense/{dispense_id}"),
            Some(&moved),
        )
        .await,
        422,
    );
    assert_eq!(status_of(&server, &other).await, "active");

    // Hospital-internal orders (not circulating) keep FHIR's open semantics: refills.
    let mut internal = prescription(&patient, "C08CA01", 28, "2099-12-31");
    internal["status"] = json!("active");
    let internal = call(
        &server,
        &a.hospital,
        Method::POST,
        "MedicationRequest",
        Some(&internal),
    )
    .await;
    assert_eq!(internal.status, StatusCode::CREATED, "{}", internal.body);
    let internal = internal.body["id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let reply = call(
            &server,
            &a.hospital,
            Method::POST,
            "MedicationDispense",
            Some(&raw(&internal, "completed")),
        )
        .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }
    assert_eq!(status_of(&server, &internal).await, "active");
}

on_both_backends!(
    dispense_records_in_progress_then_completed,
    release_needs_a_valid_signature_and_the_prescriber,
    pharmacies_find_and_exactly_one_dispense_wins,
    cancel_expire_and_supervise,
);
