//! Mutual recognition of results over HTTP: `Patient/{id}/$recognizable-results` with windows
//! per test category, local codes mapped to LOINC by a stored ConceptMap, a region's stored
//! override of a window, expired results left out, the issuer's level on each result, and the
//! advisory on a new order a recognisable result already covers. SQLite and PostgreSQL.

mod common;

use chrono::{SecondsFormat, Utc};
use common::{assert_outcome, Backend, Reply, TestServer};
use phip_security::token::Grant;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const HOSPITAL: &str = "city-hospital";
const LOCAL_LAB: &str = "urn:oid:2.16.156.10011.1.320100.lab";
const ADVISORY: &str = "urn:phip:workflow:recognizable-result";

fn days_ago(days: i64) -> String {
    (Utc::now() - chrono::Duration::days(days)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn observation(patient: &str, system: &str, code: &str, days: i64) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "laboratory"}]}],
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": days_ago(days),
        "performer": [{"reference": format!("Organization/{HOSPITAL}")}],
        "valueQuantity": {"value": 132, "unit": "g/L", "system": "http://unitsofmeasure.org", "code": "g/L"}
    })
}

struct Setup {
    patient: String,
    /// CBC panel, 3 days old: within hematology's 7 days.
    cbc: String,
    /// Hemoglobin, 10 days old: past hematology's 7 days.
    old_hemoglobin: String,
    /// Glucose, 10 days old: within chemistry's 14 days.
    glucose: String,
    /// Chest CT report, 20 days old: within imaging's 30 days.
    chest_ct: String,
    /// Hemoglobin under the hospital's local code, 2 days old.
    local_hemoglobin: String,
    /// A chest CT study, 5 days old.
    ct_study: String,
}

async fn setup(server: &TestServer) -> Setup {
    let org = json!({"resourceType": "Organization", "id": HOSPITAL, "name": "南京市第一医院",
        "type": [{"coding": [{"system": "urn:phip:organization-level", "code": "tertiary",
                              "display": "三级甲等"}]}]});
    assert!(server
        .put(&format!("Organization/{HOSPITAL}"), &org)
        .await
        .status
        .is_success());
    let patient = server
        .create(&json!({"resourceType": "Patient", "name": [{"text": "李强"}]}))
        .await;
    let loinc = "http://loinc.org";
    let cbc = server
        .create(&observation(&patient, loinc, "58410-2", 3))
        .await;
    let old_hemoglobin = server
        .create(&observation(&patient, loinc, "718-7", 10))
        .await;
    let glucose = server
        .create(&observation(&patient, loinc, "2345-7", 10))
        .await;
    let local_hemoglobin = server
        .create(&observation(&patient, LOCAL_LAB, "HGB", 2))
        .await;
    let chest_ct = server
        .create(&json!({
            "resourceType": "DiagnosticReport",
            "status": "final",
            "code": {"coding": [{"system": loinc, "code": "24627-2", "display": "Chest CT"}]},
            "subject": {"reference": format!("Patient/{patient}")},
            "effectiveDateTime": days_ago(20),
            "performer": [{"reference": format!("Organization/{HOSPITAL}")}],
            "conclusion": "No acute findings"
        }))
        .await;
    let ct_study = server
        .create(&json!({
            "resourceType": "ImagingStudy",
            "status": "available",
            "subject": {"reference": format!("Patient/{patient}")},
            "started": days_ago(5),
            "procedureCode": [{"coding": [{"system": loinc, "code": "24627-2"}]}]
        }))
        .await;
    // A study of another procedure is no chest CT.
    server
        .create(&json!({
            "resourceType": "ImagingStudy",
            "status": "available",
            "subject": {"reference": format!("Patient/{patient}")},
            "started": days_ago(1),
            "procedureCode": [{"coding": [{"system": loinc, "code": "36643-5"}]}]
        }))
        .await;
    // Someone else's recent CBC must never show up.
    let stranger = server.create(&json!({"resourceType": "Patient"})).await;
    server
        .create(&observation(&stranger, loinc, "58410-2", 1))
        .await;
    Setup {
        patient,
        cbc,
        old_hemoglobin,
        glucose,
        chest_ct,
        local_hemoglobin,
        ct_study,
    }
}

async fn recognizable(
    server: &TestServer,
    patient: &str,
    codes: &str,
    token: Option<&str>,
) -> Reply {
    let path = format!(
        "Patient/{patient}/$recognizable-results?code={}",
        codes.replace('|', "%7C")
    );
    match token {
        None => server.get(&path).await,
        Some(token) => {
            let auth = format!("Bearer {token}");
            server
                .send(
                    Method::GET,
                    &path,
                    None,
                    &[("authorization", auth.as_str())],
                )
                .await
        }
    }
}

fn search_extension<'a>(entry: &'a Value, url: &str) -> &'a Value {
    entry["search"]["extension"]
        .as_array()
        .and_then(|e| e.iter().find(|x| x["url"] == url))
        .unwrap_or(&Value::Null)
}

async fn windows_by_category_with_issuer_level(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let s = setup(&server).await;
    let reply = recognizable(&server, &s.patient, "58410-2,2345-7,24627-2,8867-4", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["type"], "searchset");
    let mut expected = vec![
        s.cbc.clone(),
        s.glucose.clone(),
        s.chest_ct.clone(),
        s.ct_study.clone(),
    ];
    expected.sort();
    assert_eq!(reply.ids(), expected);
    assert_eq!(reply.body["total"], 4);
    let entries = reply.body["entry"].as_array().expect("entries").clone();
    let cbc = entries
        .iter()
        .find(|e| e["resource"]["id"] == s.cbc.as_str())
        .expect("cbc");
    assert_eq!(
        search_extension(cbc, "urn:phip:workflow:issuer")["valueReference"]["reference"],
        format!("Organization/{HOSPITAL}")
    );
    assert_eq!(
        search_extension(cbc, "urn:phip:workflow:issuer-level")["valueCoding"]["code"],
        "tertiary"
    );
    assert_eq!(
        search_extension(cbc, "urn:phip:workflow:recognition-category")["valueCode"],
        "hematology"
    );
    let ct = entries
        .iter()
        .find(|e| e["resource"]["id"] == s.chest_ct.as_str())
        .expect("ct");
    assert_eq!(
        search_extension(ct, "urn:phip:workflow:recognition-category")["valueCode"],
        "imaging"
    );
    // Newest first.
    assert_eq!(entries[0]["resource"]["id"], s.cbc.as_str());
    // Heart rate is no recognition item: said so in an outcome entry.
    let outcome = entries
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .expect("outcome");
    let text = outcome["resource"]["issue"][0]["diagnostics"]
        .as_str()
        .unwrap_or("");
    assert!(text.contains("8867-4"), "{text}");

    // Hemoglobin: the 10-day result is past the 7-day window.
    let reply = recognizable(&server, &s.patient, "718-7", None).await;
    assert!(reply.ids().is_empty(), "{}", reply.body);
    assert!(!reply.ids().contains(&s.old_hemoglobin));

    // POST with Parameters gives the same.
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "code", "valueCoding": {"system": "http://loinc.org", "code": "24627-2"}}]});
    let reply = server
        .post(
            &format!("Patient/{}/$recognizable-results", s.patient),
            &body,
        )
        .await;
    let mut imaging = vec![s.chest_ct.clone(), s.ct_study.clone()];
    imaging.sort();
    assert_eq!(reply.ids(), imaging, "{}", reply.body);

    // Bad requests.
    assert_outcome(
        &server
            .get(&format!("Patient/{}/$recognizable-results", s.patient))
            .await,
        400,
    );
    assert_outcome(
        &recognizable(&server, &s.patient, "%7C718-7", None).await,
        400,
    );
    assert_outcome(
        &recognizable(&server, "no-such-patient", "718-7", None).await,
        404,
    );
    // A patient-level token of another resident cannot ask about this one.
    let other = server.mint(Grant {
        sub: "resident".into(),
        scope: "patient/*.rs".into(),
        patient: Some("someone-else".into()),
        ..Grant::default()
    });
    assert_outcome(
        &recognizable(&server, &s.patient, "58410-2", Some(&other)).await,
        404,
    );
}

async fn local_codes_map_through_concept_map(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let s = setup(&server).await;
    let local = format!("{LOCAL_LAB}|HGB");
    // Unmapped, the local code means nothing to the platform.
    let reply = recognizable(&server, &s.patient, &local, None).await;
    assert!(reply.ids().is_empty(), "{}", reply.body);
    assert!(reply.entries().is_empty());

    server
        .create(&json!({
            "resourceType": "ConceptMap", "status": "active",
            "url": "urn:phip:conceptmap:320100-lab-to-loinc",
            "group": [{"source": LOCAL_LAB, "target": "http://loinc.org", "element": [
                {"code": "HGB", "target": [{"code": "718-7", "equivalence": "equivalent"}]},
                {"code": "BLD", "target": [{"code": "58410-2", "equivalence": "wider"}]}
            ]}]
        }))
        .await;
    // Asked by the local code or by LOINC, the locally coded result is found.
    let reply = recognizable(&server, &s.patient, &local, None).await;
    assert_eq!(
        reply.ids(),
        vec![s.local_hemoglobin.clone()],
        "{}",
        reply.body
    );
    let reply = recognizable(&server, &s.patient, "718-7", None).await;
    assert_eq!(
        reply.ids(),
        vec![s.local_hemoglobin.clone()],
        "{}",
        reply.body
    );
    // A "wider" mapping does not make a result recognisable for the code.
    let reply = recognizable(&server, &s.patient, &format!("{LOCAL_LAB}|BLD"), None).await;
    assert!(reply.ids().is_empty(), "{}", reply.body);
}

async fn region_overrides_a_window(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let s = setup(&server).await;
    let nanjing = server.mint(Grant {
        sub: "doctor".into(),
        scope: "user/*.rs".into(),
        org: Some("community-centre".into()),
        division: Some("320102".into()),
        ..Grant::default()
    });
    let beijing = server.mint(Grant {
        sub: "doctor".into(),
        scope: "user/*.rs".into(),
        org: Some("beijing-clinic".into()),
        division: Some("110101".into()),
        ..Grant::default()
    });
    assert_eq!(
        recognizable(&server, &s.patient, "58410-2", Some(&nanjing))
            .await
            .ids(),
        vec![s.cbc.clone()]
    );
    // Nanjing (320100) recognises blood counts for 2 days only.
    server
        .create(&json!({
            "resourceType": "Basic",
            "code": {"coding": [{"system": "urn:phip:workflow", "code": "recognition-window"}]},
            "extension": [
                {"url": "urn:phip:workflow:division", "valueCode": "320100"},
                {"url": "urn:phip:workflow:recognition-category", "valueCode": "hematology"},
                {"url": "urn:phip:workflow:recognition-days", "valueInteger": 2}
            ]
        }))
        .await;
    let reply = recognizable(&server, &s.patient, "58410-2", Some(&nanjing)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.ids().is_empty(), "{}", reply.body);
    // Elsewhere the default 7 days still hold.
    assert_eq!(
        recognizable(&server, &s.patient, "58410-2", Some(&beijing))
            .await
            .ids(),
        vec![s.cbc.clone()]
    );
    // Other categories are untouched in Nanjing.
    assert_eq!(
        recognizable(&server, &s.patient, "2345-7", Some(&nanjing))
            .await
            .ids(),
        vec![s.glucose.clone()]
    );
}

async fn covered_order_gets_an_advisory(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let s = setup(&server).await;
    let order = |code: &str| {
        json!({
            "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": format!("Patient/{}", s.patient)},
            // A client cannot plant an advisory of its own.
            "extension": [{"url": ADVISORY, "valueReference": {"reference": "Observation/forged"}}]
        })
    };
    let reply = server.post("ServiceRequest", &order("58410-2")).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let advisories: Vec<&Value> = reply.body["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["url"] == ADVISORY)
        .collect();
    assert_eq!(advisories.len(), 1, "{}", reply.body);
    assert_eq!(
        advisories[0]["valueReference"]["reference"],
        format!("Observation/{}", s.cbc)
    );
    let display = advisories[0]["valueReference"]["display"]
        .as_str()
        .unwrap_or("");
    assert!(
        display.contains("58410-2") && display.contains("南京市第一医院"),
        "{display}"
    );
    // Stored with the order, so the HIS can read it again later.
    let id = reply.body["id"].as_str().expect("id");
    let stored = server.get(&format!("ServiceRequest/{id}")).await;
    assert_eq!(
        stored.body["extension"][0]["valueReference"]["reference"],
        format!("Observation/{}", s.cbc)
    );

    // The clinician relies on the prior result and revokes the order: the advisory stays,
    // whatever the client sends (here: none, then a forged one).
    let mut revoked = stored.body.clone();
    revoked["status"] = json!("revoked");
    revoked["extension"] =
        json!([{"url": ADVISORY, "valueReference": {"reference": "Observation/forged"}}]);
    let reply = server.put(&format!("ServiceRequest/{id}"), &revoked).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["status"], "revoked");
    assert_eq!(
        reply.body["extension"], stored.body["extension"],
        "the advisory given at ordering time is kept as it was"
    );

    // Cholesterol has no recent result; expired hemoglobin covers nothing: no advisory.
    for code in ["2093-3", "718-7"] {
        let reply = server.post("ServiceRequest", &order(code)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        assert!(
            reply
                .body
                .get("extension")
                .is_none_or(|e| e.as_array().is_some_and(Vec::is_empty)),
            "{code}: {}",
            reply.body
        );
    }
}

on_both_backends!(
    windows_by_category_with_issuer_level,
    local_codes_map_through_concept_map,
    region_overrides_a_window,
    covered_order_gets_an_advisory,
);
