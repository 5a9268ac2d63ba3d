//! Family-doctor contracting over HTTP: a community clinic's team signs residents, one
//! contract in force per resident, renewal and termination, the team's panel on a date, and
//! the chronic-disease follow-ups due and overdue computed from completed follow-ups — with
//! hand-computed expectations, on both backends.

mod common;

use common::{assert_outcome, Backend, Reply, TestServer};
use phip_security::token::Grant;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const DISTRICT: &str = "110105";
const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";

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

fn token(server: &TestServer, org: &str, scope: &str) -> String {
    server.mint(Grant {
        sub: format!("{org}-user"),
        scope: scope.into(),
        org: Some(org.into()),
        division: Some(DISTRICT.into()),
        ..Grant::default()
    })
}

async fn created(reply: Reply) -> String {
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    reply.body["id"].as_str().unwrap().to_owned()
}

fn team(id: &str, category: &str) -> Value {
    json!({
        "resourceType": "CareTeam", "id": id, "status": "active", "name": "孙医生团队",
        "category": [{"coding": [{"system": "urn:phip:care-team-category", "code": category}]}],
        "managingOrganization": [{"reference": "Organization/chc-1"}],
        "participant": [
            {"role": [{"text": "family doctor"}], "member": {"reference": "Practitioner/dr-sun"}},
            {"role": [{"text": "nurse"}], "member": {"reference": "Practitioner/nurse-qian"}}
        ]
    })
}

fn contract(patient: &str, team: &str, start: &str, end: &str) -> Value {
    json!({
        "resourceType": "Contract",
        "status": "executed",
        "type": {"coding": [{"system": "urn:phip:contract-type", "code": "family-doctor"}]},
        "subject": [{"reference": format!("Patient/{patient}")}],
        "authority": [{"reference": "Organization/chc-1"}],
        "topicReference": {"reference": format!("CareTeam/{team}")},
        "issued": format!("{start}T09:00:00+08:00"),
        "applies": {"start": start, "end": end},
        "signer": [
            {"type": {"system": "http://terminology.hl7.org/CodeSystem/contractsignertypecodes", "code": "PAT"},
             "party": {"reference": format!("Patient/{patient}")},
             "signature": [{"type": [{"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.7"}], "when": format!("{start}T09:00:00+08:00"), "who": {"reference": format!("Patient/{patient}")}}]},
            {"type": {"system": "http://terminology.hl7.org/CodeSystem/contractsignertypecodes", "code": "PROVIDER"},
             "party": {"reference": "Practitioner/dr-sun"},
             "signature": [{"type": [{"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1"}], "when": format!("{start}T09:00:00+08:00"), "who": {"reference": "Practitioner/dr-sun"}}]}
        ]
    })
}

fn plan(patient: &str, team: &str, disease: &str, start: &str, timing: Option<Value>) -> Value {
    let mut detail =
        json!({"status": "scheduled", "code": {"coding": [{"system": ICD10, "code": disease}]}});
    if let Some(timing) = timing {
        detail["scheduledTiming"] = timing;
    }
    json!({
        "resourceType": "CarePlan", "status": "active", "intent": "plan",
        "category": [{"coding": [{"system": "urn:phip:careplan-category", "code": "chronic-follow-up"}]}],
        "subject": {"reference": format!("Patient/{patient}")},
        "careTeam": [{"reference": format!("CareTeam/{team}")}],
        "period": {"start": start},
        "activity": [{"detail": detail}]
    })
}

fn follow_up(patient: &str, plan: &str, status: &str, date: &str) -> Value {
    json!({
        "resourceType": "Procedure", "status": status,
        "code": {"text": "chronic disease follow-up visit"},
        "subject": {"reference": format!("Patient/{patient}")},
        "basedOn": [{"reference": format!("CarePlan/{plan}")}],
        "performedDateTime": date
    })
}

/// (name, patient, dueDate, daysOverdue) of each listed plan.
fn listed(reply: &Reply) -> Vec<(String, String, String, Option<i64>)> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "due" || p["name"] == "overdue")
        .map(|p| {
            let part = |n: &str| {
                p["part"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|x| x["name"] == n)
                    .cloned()
            };
            (
                p["name"].as_str().unwrap().to_owned(),
                part("patient").unwrap()["valueReference"]["reference"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                part("dueDate").unwrap()["valueDate"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                part("daysOverdue").and_then(|d| d["valueInteger"].as_i64()),
            )
        })
        .collect()
}

async fn contracts_panel_and_follow_ups(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let clinic = token(&server, "chc-1", "user/*.cruds");
    let other_clinic = token(&server, "chc-2", "user/*.cruds");
    let resident_app = token(&server, "chc-1", "user/Patient.rs");
    for (path, body) in [
        (
            "Organization/chc-1",
            json!({"resourceType": "Organization", "id": "chc-1", "name": "朝阳社区卫生服务中心"}),
        ),
        (
            "Practitioner/dr-sun",
            json!({"resourceType": "Practitioner", "id": "dr-sun", "name": [{"text": "孙医生"}]}),
        ),
        (
            "Practitioner/nurse-qian",
            json!({"resourceType": "Practitioner", "id": "nurse-qian", "name": [{"text": "钱护士"}]}),
        ),
        ("CareTeam/team-sun", team("team-sun", "family-doctor")),
        ("CareTeam/ward-7", team("ward-7", "inpatient-ward")),
    ] {
        let reply = call(&server, &clinic, Method::PUT, path, Some(&body)).await;
        assert!(reply.status.is_success(), "{path}: {}", reply.body);
    }
    let mut p = Vec::new();
    for i in 0..4 {
        let patient = json!({"resourceType": "Patient", "name": [{"text": format!("签约居民{i}")}], "gender": "male", "birthDate": "1955-05-05"});
        p.push(
            created(call(&server, &clinic, Method::POST, "Patient", Some(&patient)).await).await,
        );
    }

    // Sign p0, p1, p2 for 2025 (p2 from March for a year).
    let c0 = created(
        call(
            &server,
            &clinic,
            Method::POST,
            "Contract",
            Some(&contract(&p[0], "team-sun", "2025-01-01", "2025-12-31")),
        )
        .await,
    )
    .await;
    let c1 = created(
        call(
            &server,
            &clinic,
            Method::POST,
            "Contract",
            Some(&contract(&p[1], "team-sun", "2025-01-01", "2025-12-31")),
        )
        .await,
    )
    .await;
    let _c2 = created(
        call(
            &server,
            &clinic,
            Method::POST,
            "Contract",
            Some(&contract(&p[2], "team-sun", "2025-03-01", "2026-02-28")),
        )
        .await,
    )
    .await;
    // Refused: a second contract in force for p0 on overlapping days, one with a team that is
    // not a family-doctor team, one ending before it starts, one without a resident.
    let reply = call(
        &server,
        &clinic,
        Method::POST,
        "Contract",
        Some(&contract(&p[0], "team-sun", "2025-06-01", "2026-05-31")),
    )
    .await;
    assert_outcome(&reply, 409);
    assert!(reply.body.to_string().contains(&c0), "{}", reply.body);
    assert_outcome(
        &call(
            &server,
            &clinic,
            Method::POST,
            "Contract",
            Some(&contract(&p[3], "ward-7", "2025-01-01", "2025-12-31")),
        )
        .await,
        422,
    );
    assert_outcome(
        &call(
            &server,
            &clinic,
            Method::POST,
            "Contract",
            Some(&contract(&p[3], "team-sun", "2025-12-31", "2025-01-01")),
        )
        .await,
        422,
    );
    let mut no_resident = contract(&p[3], "team-sun", "2025-01-01", "2025-12-31");
    no_resident["subject"] = json!([]);
    no_resident.as_object_mut().unwrap().remove("subject");
    assert_outcome(
        &call(
            &server,
            &clinic,
            Method::POST,
            "Contract",
            Some(&no_resident),
        )
        .await,
        422,
    );
    // Moving an existing contract onto p0's dates is refused too.
    let mut onto = server.get(&format!("Contract/{c1}")).await.body;
    onto["subject"] = json!([{"reference": format!("Patient/{}", p[0])}]);
    assert_outcome(
        &call(
            &server,
            &clinic,
            Method::PUT,
            &format!("Contract/{c1}"),
            Some(&onto),
        )
        .await,
        409,
    );

    let panel = |date: &str| {
        let path = format!("CareTeam/team-sun/$panel?date={date}");
        let clinic = clinic.clone();
        let server = &server;
        async move { call(server, &clinic, Method::GET, &path, None).await }
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let june = panel("2025-06-01").await;
    assert_eq!(june.status, StatusCode::OK, "{}", june.body);
    assert_eq!(june.body["total"], 3);
    assert_eq!(
        june.ids(),
        sorted(vec![p[0].clone(), p[1].clone(), p[2].clone()])
    );
    assert_eq!(
        panel("2025-02-01").await.ids(),
        sorted(vec![p[0].clone(), p[1].clone()])
    );

    // Terminate p1's contract; a terminated contract is final.
    let mut terminated = server.get(&format!("Contract/{c1}")).await.body;
    terminated["status"] = json!("terminated");
    let reply = call(
        &server,
        &clinic,
        Method::PUT,
        &format!("Contract/{c1}"),
        Some(&terminated),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    terminated["status"] = json!("executed");
    assert_outcome(
        &call(
            &server,
            &clinic,
            Method::PUT,
            &format!("Contract/{c1}"),
            Some(&terminated),
        )
        .await,
        409,
    );
    assert_outcome(
        &call(
            &server,
            &clinic,
            Method::DELETE,
            &format!("Contract/{c0}"),
            None,
        )
        .await,
        409,
    );
    assert_eq!(
        panel("2025-06-01").await.ids(),
        sorted(vec![p[0].clone(), p[2].clone()])
    );

    // Renew p0 for 2026: only the contracting clinic, only once.
    assert_outcome(
        &call(
            &server,
            &other_clinic,
            Method::POST,
            &format!("Contract/{c0}/$renew?date=2025-12-20"),
            None,
        )
        .await,
        403,
    );
    assert_outcome(
        &call(
            &server,
            &resident_app,
            Method::POST,
            &format!("Contract/{c0}/$renew?date=2025-12-20"),
            None,
        )
        .await,
        403,
    );
    let renewed = call(
        &server,
        &clinic,
        Method::POST,
        &format!("Contract/{c0}/$renew?date=2025-12-20"),
        None,
    )
    .await;
    assert_eq!(renewed.status, StatusCode::CREATED, "{}", renewed.body);
    assert_eq!(
        renewed.body["applies"],
        json!({"start": "2026-01-01", "end": "2026-12-31"})
    );
    assert_eq!(renewed.body["status"], "executed");
    assert!(renewed.body["extension"]
        .to_string()
        .contains(&format!("Contract/{c0}")));
    assert_eq!(
        server.get(&format!("Contract/{c0}")).await.body["status"],
        "renewed"
    );
    assert_outcome(
        &call(
            &server,
            &clinic,
            Method::POST,
            &format!("Contract/{c0}/$renew?date=2025-12-20"),
            None,
        )
        .await,
        409,
    );
    assert_eq!(
        panel("2026-02-01").await.ids(),
        sorted(vec![p[0].clone(), p[2].clone()])
    );
    assert_eq!(panel("2026-06-01").await.ids(), vec![p[0].clone()]);
    assert_outcome(
        &call(
            &server,
            &clinic,
            Method::GET,
            "CareTeam/no-team/$panel",
            None,
        )
        .await,
        404,
    );
    assert_outcome(
        &call(
            &server,
            &clinic,
            Method::GET,
            "CareTeam/team-sun/$panel?date=June",
            None,
        )
        .await,
        400,
    );

    // Follow-up plans. p0: hypertension since 2025-01-10, default quarterly; p2: diabetes
    // every 90 days since 2025-03-01; p3: no contract, so not the team's; p1: terminated.
    let every_90 = json!({"repeat": {"frequency": 1, "period": 90, "periodUnit": "d"}});
    let plan0 = created(
        call(
            &server,
            &clinic,
            Method::POST,
            "CarePlan",
            Some(&plan(&p[0], "team-sun", "I10", "2025-01-10", None)),
        )
        .await,
    )
    .await;
    let plan2 = created(
        call(
            &server,
            &clinic,
            Method::POST,
            "CarePlan",
            Some(&plan(
                &p[2],
                "team-sun",
                "E11",
                "2025-03-01",
                Some(every_90.clone()),
            )),
        )
        .await,
    )
    .await;
    let plan3 = created(
        call(
            &server,
            &clinic,
            Method::POST,
            "CarePlan",
            Some(&plan(&p[3], "team-sun", "I10", "2025-01-10", None)),
        )
        .await,
    )
    .await;
    let plan1 = created(
        call(
            &server,
            &clinic,
            Method::POST,
            "CarePlan",
            Some(&plan(&p[1], "team-sun", "E11", "2025-01-10", None)),
        )
        .await,
    )
    .await;
    for (patient, plan, status, date) in [
        (&p[0], &plan0, "completed", "2025-04-05"),
        (&p[0], &plan0, "completed", "2025-07-01T10:30:00+08:00"),
        (&p[2], &plan2, "completed", "2025-04-20"),
        (&p[2], &plan2, "in-progress", "2025-08-01"),
        (&p[3], &plan3, "completed", "2025-02-01"),
        (&p[1], &plan1, "completed", "2025-02-01"),
    ] {
        created(
            call(
                &server,
                &clinic,
                Method::POST,
                "Procedure",
                Some(&follow_up(patient, plan, status, date)),
            )
            .await,
        )
        .await;
    }
    let due = |query: &str| {
        let path = format!("CareTeam/team-sun/$follow-ups-due?{query}");
        let clinic = clinic.clone();
        let server = &server;
        async move { call(server, &clinic, Method::GET, &path, None).await }
    };
    let pref = |i: usize| format!("Patient/{}", p[i]);
    // 2025-07-01 + 90 d = 2025-09-29; 2025-04-20 + 90 d = 2025-07-19, 58 days before 2025-09-15.
    assert_eq!(
        listed(&due("date=2025-09-15&within=30").await),
        vec![
            ("overdue".into(), pref(2), "2025-07-19".into(), Some(58)),
            ("due".into(), pref(0), "2025-09-29".into(), None),
        ]
    );
    assert_eq!(
        listed(&due("date=2025-09-15&within=0").await),
        vec![("overdue".into(), pref(2), "2025-07-19".into(), Some(58))]
    );
    // On 2025-07-10 looking two weeks ahead: p2 is due on the 19th; p0 (due 2025-09-29) not yet.
    assert_eq!(
        listed(&due("date=2025-07-10&within=14").await),
        vec![("due".into(), pref(2), "2025-07-19".into(), None)]
    );
    // As of 2025-05-01 only follow-ups done by then count: p0's last was 2025-04-05, due
    // 2025-07-04; p2's 2025-04-20, due 2025-07-19.
    assert_eq!(
        listed(&due("date=2025-05-01&within=90").await),
        vec![
            ("due".into(), pref(0), "2025-07-04".into(), None),
            ("due".into(), pref(2), "2025-07-19".into(), None),
        ]
    );
    assert_outcome(&due("date=2025-09-15&within=soon").await, 400);
}

on_both_backends!(contracts_panel_and_follow_ups);
