//! The referral rule through the engine, without HTTP: it holds inside transaction bundles
//! (a Task whose focus is created earlier in the same bundle; a bundle whose last entry breaks
//! the rule writes nothing, not even the access grant of an earlier acceptance).

use phip_engine::{Engine, EngineConfig, Principal, RequestContext};
use phip_security::scope::ScopeSet;
use phip_store::{open_store, StoreConfig};
use serde_json::{json, Value};

fn engine(dir: &std::path::Path) -> Engine {
    let store = open_store(&StoreConfig::Sqlite {
        data_dir: dir.to_path_buf(),
    })
    .expect("store");
    let mut engine = Engine::new(store, EngineConfig::default());
    phip_workflow::install(&mut engine);
    engine
}

fn staff(org: &str, division: &str) -> RequestContext {
    let mut principal = Principal::unrestricted(format!("user-at-{org}"));
    principal.scopes = Some(ScopeSet::parse("user/*.cruds").expect("scopes"));
    principal.organization = Some(org.to_owned());
    principal.division = Some(division.to_owned());
    RequestContext::new("http://test/fhir", principal)
}

fn consents(engine: &Engine) -> usize {
    let ctx = RequestContext::new("http://test/fhir", Principal::unrestricted("test"));
    let reply = engine.search(&ctx, Some("Consent"), &[]).expect("search");
    reply.body.expect("bundle")["entry"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0)
}

fn referral(id: &str, focus: &str) -> Value {
    json!({"resourceType": "Task", "id": id, "status": "requested", "intent": "order",
           "code": {"coding": [{"system": "urn:phip:workflow", "code": "referral"}]},
           "focus": {"reference": focus}, "for": {"reference": "Patient/p1"},
           "requester": {"reference": "Organization/clinic"},
           "owner": {"reference": "Organization/hospital"}})
}

#[test]
fn the_rule_holds_inside_transaction_bundles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path());
    let clinic = staff("clinic", "320481");
    let hospital = staff("hospital", "320100");
    let sr = "urn:uuid:2b7c4e6a-1d3f-4a5b-9c8d-000000000001";
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": sr, "request": {"method": "POST", "url": "ServiceRequest"},
         "resource": {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                      "subject": {"reference": "Patient/p1"}}},
        {"request": {"method": "PUT", "url": "Task/ref1"}, "resource": referral("ref1", sr)},
        {"request": {"method": "PUT", "url": "Task/ref2"}, "resource": referral("ref2", sr)}
    ]});
    engine
        .process_bundle(&clinic, bundle)
        .expect("referrals and their ServiceRequest in one transaction");
    let task: Value = engine
        .read(&hospital, "Task", "ref1")
        .expect("the receiver sees it")
        .body
        .expect("body");
    assert!(task["focus"]["reference"]
        .as_str()
        .is_some_and(|r| r.starts_with("ServiceRequest/")));
    assert!(task["authoredOn"].is_string(), "authoredOn is set");

    // Accept one and, in the same bundle, jump the other to completed: nothing happens.
    let mut accepted = task.clone();
    accepted["status"] = json!("accepted");
    let mut skipped = engine
        .read(&hospital, "Task", "ref2")
        .expect("ref2")
        .body
        .expect("body");
    skipped["status"] = json!("completed");
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "PUT", "url": "Task/ref1"}, "resource": accepted},
        {"request": {"method": "PUT", "url": "Task/ref2"}, "resource": skipped}
    ]});
    let error = engine
        .process_bundle(&hospital, bundle)
        .expect_err("requested → completed is not a transition");
    assert_eq!(error.status, 409, "{error:?}");
    assert_eq!(
        consents(&engine),
        0,
        "the grant rolled back with the bundle"
    );
    let current = engine.read(&hospital, "Task", "ref1").expect("read");
    assert_eq!(current.body.expect("body")["status"], "requested");

    // The acceptance alone commits, with its grant.
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "PUT", "url": "Task/ref1"}, "resource": accepted}
    ]});
    engine
        .process_bundle(&hospital, bundle)
        .expect("acceptance in a bundle");
    assert_eq!(consents(&engine), 1);
}

#[test]
fn imports_keep_historical_states_but_not_broken_structure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path());
    let server = RequestContext::new("http://test/fhir", Principal::unrestricted("import"));
    engine
        .update(
            &server,
            "ServiceRequest",
            "sr",
            json!({"resourceType": "ServiceRequest", "id": "sr", "status": "completed",
                   "intent": "order", "subject": {"reference": "Patient/p1"}}),
            None,
        )
        .expect("service request");
    let mut done = referral("old", "ServiceRequest/sr");
    done["status"] = json!("completed");
    engine
        .update(&server, "Task", "old", done.clone(), None)
        .expect("a completed referral imports as it was");
    // A clinician may not create one that way, nor anyone without its parties.
    let clinic = staff("clinic", "320481");
    done["id"] = json!("new");
    let error = engine
        .update(&clinic, "Task", "new", done.clone(), None)
        .expect_err("clinicians start at requested");
    assert_eq!(error.status, 422);
    done.as_object_mut().expect("object").remove("owner");
    let error = engine
        .update(&server, "Task", "new", done, None)
        .expect_err("no owner");
    assert_eq!(error.status, 422);
}
