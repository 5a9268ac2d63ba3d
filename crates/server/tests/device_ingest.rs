//! Device and wearable vital signs through `POST [base]/Observation/$ingest`: NDJSON and
//! Bundle input, each value recorded once however often it is sent, failing lines reported
//! without losing the others — on SQLite and PostgreSQL.

mod common;
mod public_health;

use std::time::Instant;

use common::{assert_outcome, Backend, TestServer};
use public_health::param;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn heart_rate(device: &str, patient: &str, at: &str, value: Value) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "device": {"reference": format!("Device/{device}")},
        "effectiveDateTime": at,
        "valueQuantity": {"value": value, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min"}
    })
}

async fn ingest_ndjson(server: &TestServer, lines: &[String]) -> Value {
    let mut request = server
        .client
        .post(server.url("Observation/$ingest"))
        .header("content-type", "application/fhir+ndjson")
        .body(lines.join("\n"));
    if let Some(token) = &server.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn count(report: &Value, name: &str) -> u64 {
    param(report, name)
        .and_then(|p| p["valueInteger"].as_u64())
        .expect(name)
}

async fn stored(server: &TestServer) -> u64 {
    let reply = server.get("Observation?_summary=count").await;
    reply.body["total"].as_u64().expect("total")
}

async fn ndjson_values_are_recorded_once(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let a = heart_rate("watch-1", "p1", "2026-10-01T08:00:00+08:00", json!(72));
    // The same value: the number written differently and the same instant in UTC.
    let a_again = heart_rate("watch-1", "p1", "2026-10-01T00:00:00Z", json!(72.0));
    let b = heart_rate("watch-1", "p1", "2026-10-01T08:01:00+08:00", json!(75));
    let no_device = {
        let mut o = heart_rate("x", "p1", "2026-10-01T08:02:00+08:00", json!(70));
        o.as_object_mut().unwrap().remove("device");
        o
    };
    let date_only = heart_rate("watch-1", "p1", "2026-10-01", json!(70));
    let lines = vec![
        a.to_string(),
        a_again.to_string(),
        b.to_string(),
        "{not json".to_string(),
        no_device.to_string(),
        date_only.to_string(),
        json!({"resourceType": "Patient"}).to_string(),
    ];
    let report = ingest_ndjson(&server, &lines).await;
    assert_eq!(count(&report, "created"), 2, "{report}");
    assert_eq!(count(&report, "duplicates"), 1, "{report}");
    assert_eq!(count(&report, "rejected"), 4, "{report}");
    let rejected: Vec<(u64, String)> = report["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "rejected-line")
        .map(|p| {
            (
                p["part"][0]["valueInteger"].as_u64().unwrap(),
                p["part"][1]["resource"]["issue"][0]["diagnostics"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect();
    let lines_rejected: Vec<u64> = rejected.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines_rejected, vec![4, 5, 6, 7]);
    assert!(rejected[1].1.contains("device"), "{rejected:?}");
    assert!(rejected[2].1.contains("time zone"), "{rejected:?}");
    assert_eq!(stored(&server).await, 2);

    // Sending everything again records nothing new.
    let again = ingest_ndjson(&server, &lines).await;
    assert_eq!(count(&again, "created"), 0, "{again}");
    assert_eq!(count(&again, "duplicates"), 3, "{again}");
    assert_eq!(count(&again, "rejected"), 4);
    assert_eq!(stored(&server).await, 2);

    // The stored Observation carries its dedupe identifier.
    let found = server
        .get("Observation?identifier=urn:phip:device-obs|")
        .await;
    assert_eq!(found.entries().len(), 2);
    let hash = found.entries()[0]["identifier"][0]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(hash.len(), 64, "SM3 hex digest");
}

async fn bundle_input_and_bad_requests(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    // More than one write chunk (500) and many pre-check searches.
    let entries: Vec<Value> = (0..620)
        .map(|i| {
            json!({"resource": heart_rate(
                "cuff-9",
                "p2",
                &format!("2026-10-02T07:{:02}:{:02}+08:00", i / 60, i % 60),
                json!(60 + i % 7)
            )})
        })
        .collect();
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": entries});
    let reply = server.post("Observation/$ingest", &bundle).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(count(&reply.body, "created"), 620, "{}", reply.body);
    let reply = server.post("Observation/$ingest", &bundle).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(count(&reply.body, "duplicates"), 620, "{}", reply.body);
    assert_eq!(count(&reply.body, "created"), 0);
    assert_eq!(stored(&server).await, 620);

    // Not a Bundle; and a token that may not create Observations.
    let reply = server
        .post("Observation/$ingest", &json!({"resourceType": "Patient"}))
        .await;
    assert_outcome(&reply, 400);
    let token = format!(
        "Bearer {}",
        server.mint(phip_security::token::Grant {
            sub: "reader".into(),
            scope: "system/*.rs".into(),
            ..Default::default()
        })
    );
    let reply = server
        .send(
            Method::POST,
            "Observation/$ingest",
            Some(&bundle),
            &[("authorization", &token)],
        )
        .await;
    assert_outcome(&reply, 403);
}

on_both_backends!(
    ndjson_values_are_recorded_once,
    bundle_input_and_bad_requests
);

/// Throughput figure, not a test: `cargo test -p phip-server --test device_ingest -- --ignored
/// --nocapture`. Sends 3 × 10,000 new lines, then the last 10,000 again (all duplicates).
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn ingest_throughput() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if backend == Backend::Postgres && !common::postgres_available() {
            continue;
        }
        let server = TestServer::start_on(backend).await;
        let mut last = Vec::new();
        for batch in 0..4 {
            let lines: Vec<String> = if batch < 3 {
                (0..10_000)
                    .map(|i| {
                        let at = chrono::DateTime::parse_from_rfc3339("2026-10-01T00:00:00+08:00")
                            .unwrap()
                            + chrono::Duration::seconds(i64::from(batch * 10_000 + i));
                        heart_rate(
                            &format!("w{}", i % 100),
                            "p1",
                            &at.to_rfc3339(),
                            json!(60 + i % 40),
                        )
                        .to_string()
                    })
                    .collect()
            } else {
                last.clone()
            };
            let started = Instant::now();
            let report = ingest_ndjson(&server, &lines).await;
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{backend:?} batch {batch}: {} created, {} duplicates in {secs:.2}s = {:.0} obs/s",
                count(&report, "created"),
                count(&report, "duplicates"),
                lines.len() as f64 / secs
            );
            last = lines;
        }
    }
}
