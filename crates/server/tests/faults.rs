//! Behaviour under contention found by the load test (`phip bench load`), on SQLite and
//! PostgreSQL: concurrent updates without `If-Match` must all succeed (last writer wins), never
//! answer 412 Precondition Failed, which FHIR reserves for a failed `If-Match`.

mod common;

use std::sync::Arc;

use common::{Backend, TestServer};
use reqwest::StatusCode;
use serde_json::json;

async fn concurrent_updates_without_if_match_all_succeed(backend: Backend) {
    let server = Arc::new(TestServer::start_on(backend).await);
    let created = server
        .put(
            "Patient/contended",
            &json!({"resourceType": "Patient", "id": "contended", "gender": "female"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for round in 0..10 {
                let reply = server
                    .put(
                        "Patient/contended",
                        &json!({"resourceType": "Patient", "id": "contended",
                                "name": [{"family": format!("W{writer}R{round}")}]}),
                    )
                    .await;
                statuses.push((reply.status, reply.body.to_string()));
            }
            statuses
        }));
    }
    let mut updates = 0;
    for task in tasks {
        for (status, body) in task.await.expect("join") {
            assert_eq!(status, StatusCode::OK, "{body}");
            updates += 1;
        }
    }
    // Every update made a version: none was lost or merged.
    let current = server.get("Patient/contended").await;
    let version = (1 + updates).to_string();
    assert_eq!(
        current.body["meta"]["versionId"],
        version.as_str(),
        "{}",
        current.body
    );
}

on_both_backends!(concurrent_updates_without_if_match_all_succeed);
