//! The exactly-once guarantees under a forced interleaving: a first writer claims a
//! prescription (or a slot, or a resident's contract days) and keeps its transaction open
//! while a second writer makes the same claim. The second must fail with 409 once the first
//! commits — on SQLite, where it waits for the single writer, and on PostgreSQL, where it
//! reads under READ COMMITTED and is stopped by the version check (dispense, slot) or by the
//! criteria lock its search takes (slot holders, contracts).

use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use phip_engine::{Engine, EngineConfig, Principal, RequestContext};
use phip_store::{open_store, StoreConfig, WriteRequest};
use phip_workflow::prescription::{self, SignatureVerifier};
use serde_json::{json, Value};

/// Accepts signatures whose data is base64 of "valid" (the real JWS check lives in the server).
struct Trusting;

impl SignatureVerifier for Trusting {
    fn verify(&self, signature: &Value, _signed: &Value) -> Result<(), String> {
        (signature["data"] == "dmFsaWQ=")
            .then_some(())
            .ok_or_else(|| "bad signature".to_owned())
    }
}

fn engines() -> Vec<(&'static str, Engine, Option<tempfile::TempDir>)> {
    let mut out = Vec::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(&StoreConfig::Sqlite {
        data_dir: dir.path().to_path_buf(),
    })
    .expect("sqlite");
    let mut engine = Engine::new(store, EngineConfig::default());
    phip_workflow::install(&mut engine);
    out.push(("sqlite", engine, Some(dir)));
    if let Some(cluster) = phip_testkit::PgCluster::shared() {
        let store = open_store(&StoreConfig::Postgres {
            url: cluster.fresh_database(),
            pool_size: 4,
        })
        .expect("postgres");
        let mut engine = Engine::new(store, EngineConfig::default());
        phip_workflow::install(&mut engine);
        out.push(("postgres", engine, None));
    }
    out
}

fn ctx() -> RequestContext {
    RequestContext::new("http://test/fhir", Principal::unrestricted("test"))
}

/// Runs `first` in a write transaction held open until `second` (on another thread) has
/// had time to reach the same claim, then commits; returns the second's status.
fn interleave(engine: &Arc<Engine>, first: Value, second: Value) -> u16 {
    let (claimed, wait_claimed) = mpsc::channel();
    let (release, wait_release) = mpsc::channel::<()>();
    let holder = {
        let engine = engine.clone();
        thread::spawn(move || {
            engine.write_transaction(&Principal::unrestricted("first"), |tx| {
                let resource_type = first["resourceType"].as_str().unwrap_or("").to_owned();
                tx.write(WriteRequest {
                    resource_type,
                    id: "first".into(),
                    resource: Some(first),
                    expected_version: Some(0),
                })?;
                claimed.send(()).expect("signal");
                wait_release.recv().expect("release");
                Ok(())
            })
        })
    };
    wait_claimed.recv().expect("first claimed");
    let contender = {
        let engine = engine.clone();
        thread::spawn(move || {
            let resource_type = second["resourceType"].as_str().unwrap_or("").to_owned();
            engine
                .create(&ctx(), &resource_type, second, None)
                .map(|r| r.status)
                .unwrap_or_else(|e| e.status)
        })
    };
    // Sequencing only (no timing is asserted): let the contender read the old state and
    // queue behind the first writer before the first commits.
    thread::sleep(Duration::from_millis(300));
    release.send(()).expect("release");
    holder.join().expect("join").expect("first commits");
    contender.join().expect("join")
}

fn released_prescription(engine: &Engine) -> String {
    let ctx = ctx();
    let draft = json!({
        "resourceType": "MedicationRequest", "status": "draft", "intent": "order",
        "medicationCodeableConcept": {"text": "amlodipine 5 mg"},
        "subject": {"reference": "Patient/p1"}
    });
    let id = engine
        .create(&ctx, "MedicationRequest", draft, None)
        .expect("draft")
        .body
        .expect("body")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let provenance = json!({
        "resourceType": "Provenance",
        "target": [{"reference": format!("MedicationRequest/{id}/_history/1")}],
        "recorded": "2025-05-01T08:00:00Z",
        "agent": [{"who": {"display": "dr"}}],
        "signature": [{"type": [{"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1"}],
            "when": "2025-05-01T08:00:00Z", "who": {"display": "dr"}, "data": "dmFsaWQ="}]
    });
    engine
        .create(&ctx, "Provenance", provenance, None)
        .expect("provenance");
    let released = prescription::release(engine, &ctx, &id, &Trusting).expect("release");
    assert_eq!(released.body.expect("body")["status"], "active");
    id
}

fn dispense(prescription: &str) -> Value {
    json!({
        "resourceType": "MedicationDispense", "status": "completed",
        "medicationCodeableConcept": {"text": "amlodipine 5 mg"},
        "authorizingPrescription": [{"reference": format!("MedicationRequest/{prescription}")}]
    })
}

#[test]
fn a_second_dispense_waiting_on_the_first_is_refused() {
    for (backend, engine, _dir) in engines() {
        let engine = Arc::new(engine);
        let id = released_prescription(&engine);
        let status = interleave(&engine, dispense(&id), dispense(&id));
        assert_eq!(status, 409, "{backend}: the second dispense must lose");
        let current = engine
            .read(&ctx(), "MedicationRequest", &id)
            .expect("read")
            .body
            .expect("body");
        assert_eq!(current["status"], "completed", "{backend}");
        assert_eq!(
            current["meta"]["versionId"], "3",
            "{backend}: one completion only"
        );
    }
}

#[test]
fn a_second_booking_waiting_on_the_first_is_refused() {
    for (backend, engine, _dir) in engines() {
        let engine = Arc::new(engine);
        let slot = json!({
            "resourceType": "Slot", "id": "s1", "schedule": {"reference": "Schedule/s"},
            "status": "free",
            "start": "2025-06-02T09:00:00+08:00", "end": "2025-06-02T09:15:00+08:00"
        });
        engine
            .update(&ctx(), "Slot", "s1", slot, None)
            .expect("slot");
        let appointment = |patient: &str| {
            json!({
                "resourceType": "Appointment", "status": "booked",
                "slot": [{"reference": "Slot/s1"}],
                "start": "2025-06-02T09:00:00+08:00", "end": "2025-06-02T09:15:00+08:00",
                "participant": [{"actor": {"reference": format!("Patient/{patient}")}, "status": "accepted"}]
            })
        };
        let status = interleave(&engine, appointment("a"), appointment("b"));
        assert_eq!(status, 409, "{backend}: the second booking must lose");
        let slot = engine
            .read(&ctx(), "Slot", "s1")
            .expect("slot")
            .body
            .expect("body");
        assert_eq!(slot["status"], "busy", "{backend}");
        assert_eq!(slot["meta"]["versionId"], "2", "{backend}: taken once");
    }
}

#[test]
fn a_second_contract_for_a_resident_waiting_on_the_first_is_refused() {
    for (backend, engine, _dir) in engines() {
        let engine = Arc::new(engine);
        let team = json!({
            "resourceType": "CareTeam", "id": "t1", "status": "active",
            "category": [{"coding": [{"system": "urn:phip:care-team-category", "code": "family-doctor"}]}],
            "managingOrganization": [{"reference": "Organization/chc"}]
        });
        engine
            .update(&ctx(), "CareTeam", "t1", team, None)
            .expect("team");
        let contract = |start: &str, end: &str| {
            json!({
                "resourceType": "Contract", "status": "executed",
                "type": {"coding": [{"system": "urn:phip:contract-type", "code": "family-doctor"}]},
                "subject": [{"reference": "Patient/p1"}],
                "authority": [{"reference": "Organization/chc"}],
                "topicReference": {"reference": "CareTeam/t1"},
                "applies": {"start": start, "end": end}
            })
        };
        let status = interleave(
            &engine,
            contract("2025-01-01", "2025-12-31"),
            contract("2025-07-01", "2026-06-30"),
        );
        assert_eq!(status, 409, "{backend}: one contract in force per resident");
    }
}
