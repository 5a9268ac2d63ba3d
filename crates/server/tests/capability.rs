//! `GET /metadata` lists the operations the server implements beyond the engine's own:
//! workflows, health codes, public health, signatures.

mod common;

use common::TestServer;
use serde_json::Value;

fn operations_of(metadata: &Value, resource_type: &str) -> Vec<String> {
    metadata["rest"][0]["resource"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["type"] == resource_type)
        .and_then(|r| r["operation"].as_array())
        .map(|ops| {
            ops.iter()
                .filter_map(|o| o["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn metadata_lists_the_servers_operations() {
    let server = TestServer::start().await;
    let metadata = server.get("metadata").await.body;
    let expect = [
        (
            "Task",
            &[
                "accept",
                "reject",
                "cancel",
                "transition",
                "referral-report",
                "mpi-accept",
            ][..],
        ),
        (
            "MedicationRequest",
            &["release", "dispense", "find-prescription"][..],
        ),
        (
            "Patient",
            &[
                "everything",
                "match",
                "recognizable-results",
                "health-code",
                "verify",
            ][..],
        ),
        ("CareTeam", &["panel", "follow-ups-due"][..]),
        ("Observation", &["ingest"][..]),
    ];
    for (resource_type, names) in expect {
        let listed = operations_of(&metadata, resource_type);
        for name in names {
            assert!(
                listed.iter().any(|l| l == name),
                "{resource_type} ${name} missing from {listed:?}"
            );
        }
        let mut unique = listed.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), listed.len(), "duplicates in {listed:?}");
    }
    let system: Vec<&str> = metadata["rest"][0]["operation"]
        .as_array()
        .expect("system operations")
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    for name in ["export", "surveillance-run", "indicators"] {
        assert!(system.contains(&name), "${name} missing from {system:?}");
    }
    // Federation is off on this server, so its operations are not offered.
    assert!(!operations_of(&metadata, "Patient").contains(&"locate".to_owned()));
}
