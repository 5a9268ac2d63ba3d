//! Appointments for online follow-up and re-examination over HTTP: a clinic publishes a
//! doctor's schedule and slots; booking takes the slot, a second booking of a taken slot is
//! refused, eight concurrent bookings of one slot leave exactly one appointment, a held slot
//! cannot be freed behind the appointment's back, and cancelling frees it — on both backends.

mod common;

use common::{assert_outcome, Backend, Reply, TestServer};
use phip_security::token::Grant;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const DISTRICT: &str = "110105";

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

fn clinic_token(server: &TestServer, org: &str) -> String {
    server.mint(Grant {
        sub: format!("{org}-desk"),
        scope: "user/*.cruds".into(),
        org: Some(org.into()),
        division: Some(DISTRICT.into()),
        ..Grant::default()
    })
}

async fn created(reply: Reply) -> String {
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    reply.body["id"].as_str().unwrap().to_owned()
}

fn slot(schedule: &str, start: &str, end: &str) -> Value {
    json!({
        "resourceType": "Slot",
        "schedule": {"reference": format!("Schedule/{schedule}")},
        "serviceType": [{"text": "online follow-up"}],
        "status": "free",
        "start": start, "end": end
    })
}

fn appointment(slot: &str, patient: &str, status: &str) -> Value {
    json!({
        "resourceType": "Appointment",
        "status": status,
        "appointmentType": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0276", "code": "FOLLOWUP"}]},
        "serviceType": [{"text": "online follow-up"}],
        "slot": [{"reference": format!("Slot/{slot}")}],
        "start": "2025-06-02T09:00:00+08:00", "end": "2025-06-02T09:15:00+08:00",
        "participant": [
            {"actor": {"reference": format!("Patient/{patient}")}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/dr-zhao"}, "status": "accepted"}
        ]
    })
}

async fn slot_status(server: &TestServer, slot: &str) -> String {
    let reply = server.get(&format!("Slot/{slot}")).await;
    reply.body["status"].as_str().unwrap_or_default().to_owned()
}

async fn setup(server: &TestServer, clinic: &str) -> (String, Vec<String>) {
    let doctor =
        json!({"resourceType": "Practitioner", "id": "dr-zhao", "name": [{"text": "赵医生"}]});
    assert!(call(
        server,
        clinic,
        Method::PUT,
        "Practitioner/dr-zhao",
        Some(&doctor)
    )
    .await
    .status
    .is_success());
    let schedule = created(
        call(
            server,
            clinic,
            Method::POST,
            "Schedule",
            Some(&json!({
                "resourceType": "Schedule", "active": true,
                "serviceType": [{"text": "online follow-up"}],
                "actor": [{"reference": "Practitioner/dr-zhao"}],
                "planningHorizon": {"start": "2025-06-02", "end": "2025-06-30"}
            })),
        )
        .await,
    )
    .await;
    let mut patients = Vec::new();
    for i in 0..8 {
        let patient = json!({"resourceType": "Patient", "name": [{"text": format!("居民{i}")}], "gender": "female", "birthDate": "1960-01-01"});
        patients.push(
            created(call(server, clinic, Method::POST, "Patient", Some(&patient)).await).await,
        );
    }
    (schedule, patients)
}

async fn booking_takes_and_cancelling_frees_the_slot(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let clinic = clinic_token(&server, "chc-1");
    let (schedule, patients) = setup(&server, &clinic).await;
    let s1 = created(
        call(
            &server,
            &clinic,
            Method::POST,
            "Slot",
            Some(&slot(
                &schedule,
                "2025-06-02T09:00:00+08:00",
                "2025-06-02T09:15:00+08:00",
            )),
        )
        .await,
    )
    .await;

    let first = created(
        call(
            &server,
            &clinic,
            Method::POST,
            "Appointment",
            Some(&appointment(&s1, &patients[0], "booked")),
        )
        .await,
    )
    .await;
    assert_eq!(slot_status(&server, &s1).await, "busy");
    // The slot is taken: another booking (booked or pending) is refused.
    for status in ["booked", "pending"] {
        let reply = call(
            &server,
            &clinic,
            Method::POST,
            "Appointment",
            Some(&appointment(&s1, &patients[1], status)),
        )
        .await;
        assert_outcome(&reply, 409);
        assert!(
            reply.body.to_string().contains(&format!("Slot/{s1}")),
            "{}",
            reply.body
        );
    }
    // A proposed appointment does not hold a slot, so it is not refused.
    let proposed = call(
        &server,
        &clinic,
        Method::POST,
        "Appointment",
        Some(&appointment(&s1, &patients[1], "proposed")),
    )
    .await;
    assert_eq!(proposed.status, StatusCode::CREATED, "{}", proposed.body);
    // Nor can it be booked by updating that proposal.
    let mut upgrade = proposed.body.clone();
    upgrade["status"] = json!("booked");
    let proposal_id = proposed.body["id"].as_str().unwrap().to_owned();
    assert_outcome(
        &call(
            &server,
            &clinic,
            Method::PUT,
            &format!("Appointment/{proposal_id}"),
            Some(&upgrade),
        )
        .await,
        409,
    );

    // The held slot cannot be freed, blocked or deleted directly.
    let mut freed = server.get(&format!("Slot/{s1}")).await.body;
    freed["status"] = json!("free");
    assert_outcome(
        &call(
            &server,
            &clinic,
            Method::PUT,
            &format!("Slot/{s1}"),
            Some(&freed),
        )
        .await,
        409,
    );
    freed["status"] = json!("busy-unavailable");
    assert_outcome(
        &call(
            &server,
            &clinic,
            Method::PUT,
            &format!("Slot/{s1}"),
            Some(&freed),
        )
        .await,
        409,
    );
    assert_outcome(
        &call(
            &server,
            &clinic,
            Method::DELETE,
            &format!("Slot/{s1}"),
            None,
        )
        .await,
        409,
    );

    // Cancelling the appointment frees the slot; now the proposal can be booked.
    let mut cancel = server.get(&format!("Appointment/{first}")).await.body;
    cancel["status"] = json!("cancelled");
    cancel["cancelationReason"] = json!({"text": "patient request"});
    let reply = call(
        &server,
        &clinic,
        Method::PUT,
        &format!("Appointment/{first}"),
        Some(&cancel),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(slot_status(&server, &s1).await, "free");
    let reply = call(
        &server,
        &clinic,
        Method::PUT,
        &format!("Appointment/{proposal_id}"),
        Some(&upgrade),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(slot_status(&server, &s1).await, "busy");
    // The cancelled appointment cannot come back while the slot is taken.
    cancel["status"] = json!("booked");
    assert_outcome(
        &call(
            &server,
            &clinic,
            Method::PUT,
            &format!("Appointment/{first}"),
            Some(&cancel),
        )
        .await,
        409,
    );

    // Moving a booking to another slot frees the first; deleting a booking frees its slot.
    let s2 = created(
        call(
            &server,
            &clinic,
            Method::POST,
            "Slot",
            Some(&slot(
                &schedule,
                "2025-06-02T09:15:00+08:00",
                "2025-06-02T09:30:00+08:00",
            )),
        )
        .await,
    )
    .await;
    let mut moved = server.get(&format!("Appointment/{proposal_id}")).await.body;
    moved["slot"] = json!([{"reference": format!("Slot/{s2}")}]);
    moved["start"] = json!("2025-06-02T09:15:00+08:00");
    moved["end"] = json!("2025-06-02T09:30:00+08:00");
    let reply = call(
        &server,
        &clinic,
        Method::PUT,
        &format!("Appointment/{proposal_id}"),
        Some(&moved),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(slot_status(&server, &s1).await, "free");
    assert_eq!(slot_status(&server, &s2).await, "busy");
    let reply = call(
        &server,
        &clinic,
        Method::DELETE,
        &format!("Appointment/{proposal_id}"),
        None,
    )
    .await;
    assert!(reply.status.is_success(), "{}", reply.body);
    assert_eq!(slot_status(&server, &s2).await, "free");

    // An appointment must fall within the slot it books.
    let mut elsewhere = appointment(&s1, &patients[2], "booked");
    elsewhere["start"] = json!("2025-06-02T15:00:00+08:00");
    elsewhere["end"] = json!("2025-06-02T15:15:00+08:00");
    let reply = call(
        &server,
        &clinic,
        Method::POST,
        "Appointment",
        Some(&elsewhere),
    )
    .await;
    assert_outcome(&reply, 422);
    assert_eq!(slot_status(&server, &s1).await, "free");

    // Unknown or blocked slots cannot be booked.
    assert_outcome(
        &call(
            &server,
            &clinic,
            Method::POST,
            "Appointment",
            Some(&appointment("no-such-slot", &patients[2], "booked")),
        )
        .await,
        422,
    );
    let mut blocked = slot(
        &schedule,
        "2025-06-02T12:00:00+08:00",
        "2025-06-02T12:15:00+08:00",
    );
    blocked["status"] = json!("busy-unavailable");
    let blocked = created(call(&server, &clinic, Method::POST, "Slot", Some(&blocked)).await).await;
    assert_outcome(
        &call(
            &server,
            &clinic,
            Method::POST,
            "Appointment",
            Some(&appointment(&blocked, &patients[2], "booked")),
        )
        .await,
        409,
    );
    // A transaction booking the same slot twice is refused whole.
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": appointment(&s1, &patients[3], "booked"), "request": {"method": "POST", "url": "Appointment"}},
        {"resource": appointment(&s1, &patients[4], "booked"), "request": {"method": "POST", "url": "Appointment"}}
    ]});
    assert_outcome(
        &call(&server, &clinic, Method::POST, "", Some(&bundle)).await,
        409,
    );
    assert_eq!(slot_status(&server, &s1).await, "free");
    assert!(server
        .search_ids(&format!("Appointment?slot=Slot/{s1}&status=booked"))
        .await
        .is_empty());
}

async fn concurrent_bookings_of_one_slot_leave_one_appointment(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let clinic = clinic_token(&server, "chc-1");
    let (schedule, patients) = setup(&server, &clinic).await;
    let s = created(
        call(
            &server,
            &clinic,
            Method::POST,
            "Slot",
            Some(&slot(
                &schedule,
                "2025-06-02T09:00:00+08:00",
                "2025-06-02T09:15:00+08:00",
            )),
        )
        .await,
    )
    .await;
    let mut attempts = Vec::new();
    for patient in &patients {
        let body = appointment(&s, patient, "booked");
        let client = server.client.clone();
        let url = server.url("Appointment");
        let token = clinic.clone();
        attempts.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/fhir+json")
                .body(serde_json::to_vec(&body).unwrap())
                .send()
                .await
                .expect("request");
            let status = response.status();
            let body: Value = response.json().await.expect("json");
            (status, body)
        }));
    }
    let mut booked = 0;
    let mut refused = 0;
    for attempt in attempts {
        let (status, body) = attempt.await.expect("join");
        match status {
            StatusCode::CREATED => booked += 1,
            StatusCode::CONFLICT => {
                assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
                assert!(body.to_string().contains(&format!("Slot/{s}")), "{body}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((booked, refused), (1, 7));
    assert_eq!(
        server
            .search_ids(&format!("Appointment?slot=Slot/{s}"))
            .await
            .len(),
        1
    );
    assert_eq!(slot_status(&server, &s).await, "busy");
}

on_both_backends!(
    booking_takes_and_cancelling_frees_the_slot,
    concurrent_bookings_of_one_slot_leave_one_appointment,
);
