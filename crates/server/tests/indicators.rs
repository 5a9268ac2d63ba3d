//! Regional indicators (`$indicators`) against a hand-computed fixture: two Beijing districts
//! and their roll-up to the province from numerators and denominators — on SQLite and
//! PostgreSQL.
//!
//! The fixture, period 2026-10 (every expected value below is computed by hand from it):
//!
//! | | 朝阳 110105 | 海淀 110108 | 北京 110000 |
//! |---|---|---|---|
//! | population (Group) | 1000 | 3000 | 4000 |
//! | residents (active Patients) | 4 (+1 inactive) | 6 | 10 |
//! | with an encounter in Oct | 2 (c1 twice, c2; c3 in Sept) | 1 | 3 |
//! | executed contracts in force | 2 (c1 all year, c2 from 10-15; c3 terminated) | 3 (h1-h3; h4's ended 2025) | 5 |
//! | hypertensive with a BP in Oct / controlled | 2 / 1 (c1 latest 130/85; c2 150/92; c3 no BP) | 1 / 1 (h1 118/76 as two Observations) | 3 / 2 |
//! | referrals authored in Oct / completed | 3 / 2 (+1 cancelled) | 1 / 1 (+1 in Sept) | 4 / 3 |
//! | ILI cases with onset in Oct | 2 (+1 refuted, +1 in Sept) | 1 | 3 |
//!
//! A patient without a coded address counts nowhere (and is reported unplaced); c1's second
//! record at another institution is the same person (linked by the patient index) and counts
//! once.

mod common;

use common::{assert_outcome, Backend, TestServer};
use phip_security::token::Grant;
use reqwest::StatusCode;
use serde_json::{json, Value};

const CY: &str = "110105";
const HD: &str = "110108";
const BJ: &str = "110000";

/// A resident with demographics of their own, so the patient index keeps everyone a separate
/// person.
fn patient(n: usize, id: &str, district: Option<&str>, active: bool) -> Value {
    const NAMES: [&str; 12] = [
        "张伟", "李娜", "王芳", "刘洋", "陈静", "杨磊", "赵敏", "黄勇", "周婷", "吴刚", "徐丽",
        "孙涛",
    ];
    let mut p = json!({
        "resourceType": "Patient", "id": id, "active": active,
        "name": [{"text": NAMES[n]}],
        "gender": (["male", "female"][n % 2]),
        "birthDate": format!("{}-0{}-1{}", 1940 + 3 * n, 1 + n % 9, n % 10),
        "telecom": [{"system": "phone", "value": format!("1390000{:04}", n * 37)}],
    });
    if let Some(d) = district {
        p["address"] = json!([{"use": "home", "district": d}]);
    }
    p
}

fn encounter(patient: &str, start: &str) -> Value {
    json!({"resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": format!("Patient/{patient}")},
        "period": {"start": start}})
}

fn contract(patient: &str, status: &str, start: &str, end: Option<&str>) -> Value {
    let mut applies = json!({"start": start});
    if let Some(e) = end {
        applies["end"] = json!(e);
    }
    json!({"resourceType": "Contract", "status": status,
        "subject": [{"reference": format!("Patient/{patient}")}], "applies": applies})
}

fn condition(patient: &str, system: &str, code: &str, onset: &str, verification: &str) -> Value {
    json!({"resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": verification}]},
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "onsetDateTime": onset})
}

fn bp_panel(patient: &str, at: &str, systolic: u32, diastolic: u32) -> Value {
    let q = |v: u32| json!({"value": v, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"});
    json!({"resourceType": "Observation", "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
    "subject": {"reference": format!("Patient/{patient}")},
    "effectiveDateTime": at,
    "component": [
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}, "valueQuantity": q(systolic)},
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]}, "valueQuantity": q(diastolic)}
    ]})
}

fn bp_single(patient: &str, at: &str, code: &str, value: u32) -> Value {
    json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": at,
        "valueQuantity": {"value": value, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}})
}

/// A referral as recorded by a historical import: its ServiceRequest and its Task, already in
/// its final state (clients must walk the referral state machine; imports may not).
fn referral(patient: &str, status: &str, authored: &str) -> Value {
    let request = format!("urn:uuid:{}", uuid::Uuid::new_v4());
    json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": request, "request": {"method": "POST", "url": "ServiceRequest"},
         "resource": {"resourceType": "ServiceRequest", "status": "completed",
            "intent": "order", "subject": {"reference": format!("Patient/{patient}")},
            "requester": {"reference": "Organization/clinic"},
            "performer": [{"reference": "Organization/hospital"}]}},
        {"request": {"method": "POST", "url": "Task"},
         "resource": {"resourceType": "Task", "status": status, "intent": "order",
            "code": {"coding": [{"system": "urn:phip:workflow", "code": "referral"}]},
            "focus": {"reference": request},
            "for": {"reference": format!("Patient/{patient}")},
            "requester": {"reference": "Organization/clinic"},
            "owner": {"reference": "Organization/hospital"},
            "authoredOn": authored}}
    ]})
}

/// Writes a transaction as the server's own import would (an unrestricted principal).
async fn import(server: &TestServer, bundle: Value) {
    let engine = server.engine.clone();
    let base = server.url("");
    let reply = tokio::task::spawn_blocking(move || {
        let ctx =
            phip_engine::RequestContext::new(base, phip_engine::Principal::unrestricted("import"));
        engine.process_bundle(&ctx, bundle)
    })
    .await
    .expect("join");
    assert!(reply.is_ok(), "import failed: {reply:?}");
}

fn population(code: &str, count: u64) -> Value {
    json!({"resourceType": "Group", "type": "person", "actual": false,
        "identifier": [{"system": "urn:phip:population", "value": code}],
        "name": format!("Resident population {code}"), "quantity": count})
}

const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";

async fn seed(server: &TestServer) {
    for (n, (id, d, active)) in [
        ("c1", Some(CY), true),
        ("c2", Some(CY), true),
        ("c3", Some(CY), true),
        ("c4", Some(CY), true),
        ("c5", Some(CY), false),
        ("h1", Some(HD), true),
        ("h2", Some(HD), true),
        ("h3", Some(HD), true),
        ("h4", Some(HD), true),
        ("h5", Some(HD), true),
        ("h6", Some(HD), true),
        ("x1", None, true),
    ]
    .into_iter()
    .enumerate()
    {
        let reply = server
            .put(&format!("Patient/{id}"), &patient(n, id, d, active))
            .await;
        assert!(reply.status.is_success(), "{}", reply.body);
    }
    // c1 again, as registered by a second institution with the same resident ID: the patient
    // index links both records to one person, who is one EHR, not two.
    let id_card = common::resident_id("110105", "19400110", "123");
    for id in ["c1", "c1-hospital"] {
        let mut p = patient(0, id, Some(CY), true);
        p["identifier"] = json!([{"system": "urn:oid:2.16.156.10011.1.1", "value": id_card}]);
        let reply = server.put(&format!("Patient/{id}"), &p).await;
        assert!(reply.status.is_success(), "{}", reply.body);
    }
    let linked = server.get("Patient/c1-hospital").await;
    let c1 = server.get("Patient/c1").await;
    assert_eq!(
        linked.body["link"][0]["other"], c1.body["link"][0]["other"],
        "one person"
    );
    let resources = vec![
        population(CY, 1000),
        population(HD, 3000),
        encounter("c1", "2026-10-03T09:00:00+08:00"),
        encounter("c1", "2026-10-09T09:00:00+08:00"),
        encounter("c2", "2026-10-31T23:00:00+08:00"),
        encounter("c3", "2026-09-30T09:00:00+08:00"),
        encounter("c5", "2026-10-05T09:00:00+08:00"),
        encounter("h1", "2026-10-01"),
        encounter("x1", "2026-10-01"),
        contract("c1", "executed", "2026-01-01", Some("2026-12-31")),
        contract("c2", "executed", "2026-10-15", None),
        contract("c3", "terminated", "2026-01-01", None),
        contract("h1", "executed", "2026-01-01", None),
        contract("h2", "executed", "2025-06-01", Some("2026-10-01")),
        contract("h3", "executed", "2026-10-31", None),
        contract("h4", "executed", "2025-01-01", Some("2025-12-31")),
        condition("c1", ICD10, "I10", "2020-01-01", "confirmed"),
        condition("c2", ICD10, "I11.9", "2021-01-01", "confirmed"),
        condition("c3", ICD10, "I10", "2022-01-01", "confirmed"),
        condition(
            "h1",
            "http://snomed.info/sct",
            "38341003",
            "2019-01-01",
            "confirmed",
        ),
        bp_panel("c1", "2026-10-02T08:00:00+08:00", 150, 95),
        bp_panel("c1", "2026-10-20T08:00:00+08:00", 130, 85),
        bp_panel("c2", "2026-10-20T08:00:00+08:00", 150, 92),
        bp_panel("c3", "2026-09-20T08:00:00+08:00", 120, 80),
        bp_panel("c4", "2026-10-20T08:00:00+08:00", 160, 100),
        bp_single("h1", "2026-10-11T08:00:00+08:00", "8480-6", 118),
        bp_single("h1", "2026-10-11T08:00:00+08:00", "8462-4", 76),
        condition("c1", ICD10, "J10.1", "2026-10-05", "confirmed"),
        condition("c2", ICD10, "J11", "2026-10-06", "confirmed"),
        condition("c3", ICD10, "J11", "2026-10-06", "refuted"),
        condition("c4", ICD10, "J11", "2026-09-28", "confirmed"),
        condition("h1", ICD10, "J09", "2026-10-30", "confirmed"),
    ];
    for r in resources {
        server.create(&r).await;
    }
    for (patient, status, authored) in [
        ("c1", "completed", "2026-10-02"),
        ("c2", "completed", "2026-10-12"),
        ("c3", "in-progress", "2026-10-25"),
        ("c4", "cancelled", "2026-10-25"),
        ("h1", "completed", "2026-10-05"),
        ("h2", "completed", "2026-09-05"),
    ] {
        import(server, referral(patient, status, authored)).await;
    }
}

/// The (numerator, denominator, score) of each MeasureReport in a `$indicators` Bundle.
fn by_measure(bundle: &Value) -> std::collections::BTreeMap<String, (u64, u64, Option<f64>)> {
    bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            let r = &e["resource"];
            assert_eq!(r["resourceType"], "MeasureReport");
            let g = &r["group"][0];
            let pop = |kind: &str| {
                g["population"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["code"]["coding"][0]["code"] == kind)
                    .and_then(|p| p["count"].as_u64())
                    .unwrap()
            };
            let measure = r["measure"]
                .as_str()
                .unwrap()
                .trim_start_matches("https://phip.cn/fhir/Measure/")
                .to_owned();
            (
                measure,
                (
                    pop("numerator"),
                    pop("denominator"),
                    g["measureScore"]["value"].as_f64(),
                ),
            )
        })
        .collect()
}

async fn indicators(server: &TestServer, division: &str) -> Value {
    let reply = server
        .get(&format!("$indicators?division={division}&period=2026-10"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body
}

/// (numerator, denominator, score) of one indicator in one division.
type Expected = (u64, u64, f64);

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-6)
}

async fn indicator_values_match_the_hand_computed_fixture(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    seed(&server).await;
    let expected: [(&str, [Expected; 3]); 6] = [
        (
            "ehr-coverage",
            [(4, 1000, 0.004), (6, 3000, 0.002), (10, 4000, 0.0025)],
        ),
        (
            "ehr-utilisation",
            [(2, 4, 0.5), (1, 6, 1.0 / 6.0), (3, 10, 0.3)],
        ),
        (
            "family-doctor-contract",
            [(2, 1000, 0.002), (3, 3000, 0.001), (5, 4000, 0.00125)],
        ),
        (
            "hypertension-control",
            [(1, 2, 0.5), (1, 1, 1.0), (2, 3, 2.0 / 3.0)],
        ),
        (
            "referral-completion",
            [(2, 3, 2.0 / 3.0), (1, 1, 1.0), (3, 4, 0.75)],
        ),
        (
            "notifiable-incidence",
            [(2, 1000, 200.0), (1, 3000, 100.0 / 3.0), (3, 4000, 75.0)],
        ),
    ];
    let reports = [
        by_measure(&indicators(&server, CY).await),
        by_measure(&indicators(&server, HD).await),
        by_measure(&indicators(&server, BJ).await),
    ];
    for (measure, values) in expected {
        for (i, (num, den, score)) in values.iter().enumerate() {
            let got = reports[i][measure];
            assert_eq!((got.0, got.1), (*num, *den), "{measure} at #{i}");
            assert!(
                close(got.2, *score),
                "{measure} at #{i}: {:?} != {score}",
                got.2
            );
        }
    }

    // A division with no population Group and no data: zero counts, no score.
    let empty = by_measure(&indicators(&server, "310101").await);
    assert_eq!(empty["ehr-coverage"], (0, 0, None));

    // The report is a well-formed MeasureReport for the division and period.
    let bundle = indicators(&server, BJ).await;
    let r = &bundle["entry"][0]["resource"];
    assert_eq!(r["status"], "complete");
    assert_eq!(r["type"], "summary");
    assert_eq!(
        r["period"],
        json!({"start": "2026-10-01", "end": "2026-10-31"})
    );
    assert_eq!(r["subject"]["identifier"]["value"], BJ);
}

async fn reports_are_stored_once_and_scoped(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    seed(&server).await;
    for _ in 0..2 {
        let reply = server
            .send(
                reqwest::Method::POST,
                "$indicators?division=110105&period=2026-10",
                None,
                &[],
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let stored = server
        .get("MeasureReport?identifier=urn:phip:indicator|&_count=50")
        .await;
    assert_eq!(stored.entries().len(), 7, "{}", stored.body);
    let one = server
        .get("MeasureReport?identifier=urn:phip:indicator|ehr-coverage-110105-2026-10")
        .await;
    assert_eq!(one.entries().len(), 1);
    assert_eq!(
        one.entries()[0]["measure"],
        "https://phip.cn/fhir/Measure/ehr-coverage"
    );

    // A district-bound token sees its own district (its default), not its neighbour's.
    let haidian = format!(
        "Bearer {}",
        server.mint(Grant {
            sub: "hd-cdc".into(),
            scope: "user/*.rs".into(),
            division: Some(HD.into()),
            ..Grant::default()
        })
    );
    let own = server
        .send(
            reqwest::Method::GET,
            "$indicators?period=2026-10",
            None,
            &[("authorization", &haidian)],
        )
        .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    assert_eq!(by_measure(&own.body)["ehr-coverage"].0, 6);
    let other = server
        .send(
            reqwest::Method::GET,
            "$indicators?division=110105&period=2026-10",
            None,
            &[("authorization", &haidian)],
        )
        .await;
    assert_outcome(&other, 403);
    for bad in [
        "$indicators?division=11&period=2026-10",
        "$indicators?division=110105&period=2026-13",
    ] {
        assert_outcome(&server.get(bad).await, 400);
    }
}

/// The daily run records a node's own division's indicators (what the federation outbox
/// carries up for the roll-up): early in a month the previous month too, the same values
/// `$indicators` computes, and re-running replaces rather than duplicates.
async fn daily_run_records_the_divisions_indicators(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    seed(&server).await;
    let due = |day: &str| {
        phip_server::public_health::indicator_periods_due(day.parse().expect("date"))
            .into_iter()
            .map(|p| p.label)
            .collect::<Vec<_>>()
    };
    assert_eq!(due("2026-11-03"), ["2026-10", "2026-11"]);
    assert_eq!(due("2026-11-08"), ["2026-11"]);
    assert_eq!(due("2026-01-02"), ["2025-12", "2026-01"]);

    for _ in 0..2 {
        let engine = server.engine.clone();
        let base = server.url("");
        let stored = tokio::task::spawn_blocking(move || {
            phip_server::public_health::record_indicators(
                &engine,
                &phip_surveillance::SurveillanceConfig::builtin(),
                CY,
                "2026-11-03".parse().expect("date"),
                &base,
            )
        })
        .await
        .expect("join")
        .expect("recorded");
        assert_eq!(stored, 14, "seven measures for October and November");
    }
    let stored = server
        .get("MeasureReport?identifier=urn:phip:indicator|&_count=50")
        .await;
    assert_eq!(stored.entries().len(), 14, "{}", stored.body);
    let computed = by_measure(&indicators(&server, CY).await);
    let recorded = server
        .get("MeasureReport?identifier=urn:phip:indicator|&_count=50")
        .await;
    let recorded = by_measure(&json!({"entry": recorded
        .entries()
        .into_iter()
        .filter(|r| r["identifier"][0]["value"].as_str().is_some_and(|v| v.ends_with("-2026-10")))
        .map(|r| json!({"resource": r}))
        .collect::<Vec<_>>()}));
    assert_eq!(recorded, computed);
}

/// The result-recognition rate, over this month (recognition windows run up to now): orders
/// a recent result covered carry the server's advisory; those the clinician revoked are the
/// recognised ones. An uncovered order, a covered one authored in another month and one entered
/// in error count nowhere.
///
/// | | 朝阳 110105 | 海淀 110108 | 北京 110000 |
/// |---|---|---|---|
/// | covered orders / revoked | 3 / 1 (c1 two, one revoked; c2 one kept) | 1 / 1 (+1 in error, +1 from 2020) | 4 / 2 |
async fn result_recognition_counts_covered_orders_and_their_revocation(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    for (n, (id, d)) in [("c1", CY), ("c2", CY), ("h1", HD)].into_iter().enumerate() {
        let reply = server
            .put(&format!("Patient/{id}"), &patient(n, id, Some(d), true))
            .await;
        assert!(reply.status.is_success(), "{}", reply.body);
    }
    let now = chrono::Utc::now();
    let today = now.format("%Y-%m-%d").to_string();
    let month = now.format("%Y-%m").to_string();
    let two_days_ago = (now - chrono::Duration::days(2)).to_rfc3339();
    for id in ["c1", "c2", "h1"] {
        server
            .create(&json!({
                "resourceType": "Observation", "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                          "code": "laboratory"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2"}]},
                "subject": {"reference": format!("Patient/{id}")},
                "effectiveDateTime": two_days_ago,
                "valueQuantity": {"value": 132, "unit": "g/L"}
            }))
            .await;
    }
    let order = |patient: &str, code: &str, authored: &str, then: Option<&str>| {
        let server = &server;
        let body = json!({
            "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": format!("Patient/{patient}")},
            "authoredOn": authored
        });
        let then = then.map(str::to_owned);
        async move {
            let reply = server.post("ServiceRequest", &body).await;
            assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
            let covered = reply.body["extension"].as_array().is_some_and(|e| {
                e.iter()
                    .any(|e| e["url"] == "urn:phip:workflow:recognizable-result")
            });
            if let Some(status) = then {
                let mut changed = reply.body.clone();
                changed["status"] = json!(status);
                let id = reply.body["id"].as_str().expect("id");
                let reply = server.put(&format!("ServiceRequest/{id}"), &changed).await;
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            }
            covered
        }
    };
    assert!(order("c1", "58410-2", &today, Some("revoked")).await);
    assert!(order("c1", "58410-2", &today, None).await);
    assert!(order("c2", "58410-2", &today, None).await);
    assert!(
        !order("c2", "2093-3", &today, Some("revoked")).await,
        "nothing covers cholesterol"
    );
    assert!(order("h1", "58410-2", &today, Some("revoked")).await);
    assert!(order("h1", "58410-2", &today, Some("entered-in-error")).await);
    assert!(order("h1", "58410-2", "2020-01-15", Some("revoked")).await);

    let mut got = Vec::new();
    for division in [CY, HD, BJ] {
        let reply = server
            .get(&format!("$indicators?division={division}&period={month}"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        got.push(by_measure(&reply.body)["result-recognition"]);
    }
    let expected: [Expected; 3] = [(1, 3, 1.0 / 3.0), (1, 1, 1.0), (2, 4, 0.5)];
    for (i, ((num, den, score), (e_num, e_den, e_score))) in got.iter().zip(expected).enumerate() {
        assert_eq!((*num, *den), (e_num, e_den), "division #{i}");
        assert!(close(*score, e_score), "division #{i}: {score:?}");
    }
}

on_both_backends!(
    result_recognition_counts_covered_orders_and_their_revocation,
    indicator_values_match_the_hand_computed_fixture,
    reports_are_stored_once_and_scoped,
    daily_run_records_the_divisions_indicators,
);
