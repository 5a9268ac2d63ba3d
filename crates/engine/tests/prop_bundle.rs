//! Property-based fuzzing of batch and transaction bundle processing on the SQLite store.
//!
//! Bundles are generated from entries that mix every method, conditional headers,
//! `urn:uuid:` cross references (resolved, dangling and circular), valid and broken resources
//! and noise. Properties: processing never panics; every refusal is a 4xx OperationOutcome
//! (never a 5xx); a refused transaction leaves the store exactly as it was; a batch answers
//! every entry.

use std::sync::OnceLock;

use phip_engine::{Engine, EngineConfig, Principal, RequestContext};
use phip_store::{open_store, StoreConfig};
use proptest::prelude::*;
use serde_json::{json, Value};

struct Fixture {
    engine: Engine,
    _dir: tempfile::TempDir,
}

/// One engine for all cases: bundles accumulate data, which makes conditional operations and
/// references meet existing resources as the run goes on.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_store(&StoreConfig::Sqlite {
            data_dir: dir.path().to_path_buf(),
        })
        .expect("store");
        Fixture {
            engine: Engine::new(store, EngineConfig::default()),
            _dir: dir,
        }
    })
}

fn ctx() -> RequestContext {
    RequestContext::new("http://test/fhir", Principal::unrestricted("fuzz"))
}

/// The number of versions in the store: changes on any write, so equal counts before and after
/// a refused transaction mean nothing was written.
fn versions(engine: &Engine) -> Value {
    let reply = engine
        .history(&ctx(), None, None, &[("_summary".into(), "count".into())])
        .expect("history");
    reply
        .body
        .and_then(|b| b.get("total").cloned())
        .unwrap_or(Value::Null)
}

fn uuid(n: u8) -> String {
    format!("urn:uuid:00000000-0000-4000-8000-{:012}", n % 6)
}

fn resource() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0u8..6, "[A-Za-z\u{4e00}-\u{4e20}]{0,8}", "[0-9]{0,6}").prop_map(
            |(n, family, ident)| json!({
                "resourceType": "Patient",
                "identifier": [{"system": "urn:test", "value": format!("id-{ident}")}],
                "name": [{"family": family}],
                "link": [{"other": {"reference": uuid(n)}, "type": "seealso"}]
            })
        ),
        (0u8..6, "[0-9-]{1,8}").prop_map(|(n, code)| json!({
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": uuid(n)},
            "valueQuantity": {"value": 1.5, "unit": "mg"}
        })),
        (0u8..6).prop_map(|n| json!({
            "resourceType": "Observation",
            "status": "nonsense",
            "subject": {"reference": uuid(n)}
        })),
        Just(json!({"resourceType": "Patient", "birthDate": "2024-13-45"})),
        Just(json!({"resourceType": "NoSuchType"})),
        Just(json!({"resourceType": "Patient", "id": "../../etc"})),
        Just(json!([1, 2, 3])),
        Just(json!("text")),
        Just(Value::Null),
        Just(json!({"resourceType": "Bundle", "type": "collection"})),
    ]
}

fn url() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Patient".to_owned()),
        Just("Observation".to_owned()),
        "Patient/[a-z0-9]{1,4}",
        "Observation/[a-z0-9]{1,4}",
        "Patient\\?identifier=urn:test\\|id-[0-9]{0,3}",
        "Patient\\?name=[a-z]{0,3}&_count=[0-9]{1,2}",
        "Observation\\?subject=[a-z:/0-9-]{0,12}",
        "Patient/[a-z0-9]{1,4}/_history/[0-9]{1,2}",
        "[ -~]{0,20}",
        prop::sample::select(vec![
            String::new(),
            "$everything".to_owned(),
            "Patient/$match".to_owned(),
        ]),
    ]
}

fn entry() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec![
            "POST", "PUT", "DELETE", "GET", "PATCH", "HEAD", "BOGUS",
        ]),
        url(),
        prop::option::of(resource()),
        prop::option::of(0u8..6),
        prop::option::of(prop_oneof![
            "identifier=urn:test\\|id-[0-9]{0,3}".prop_map(|s| ("ifNoneExist", s)),
            "W/\"[0-9]{1,2}\"".prop_map(|s| ("ifMatch", s)),
            "[ -~]{0,6}".prop_map(|s| ("ifMatch", s)),
        ]),
    )
        .prop_map(|(method, url, resource, full_url, condition)| {
            let mut request = json!({"method": method, "url": url});
            if let Some((key, value)) = condition {
                request[key] = Value::String(value);
            }
            let mut entry = json!({"request": request});
            if let Some(resource) = resource {
                entry["resource"] = resource;
            }
            if let Some(n) = full_url {
                entry["fullUrl"] = Value::String(uuid(n));
            }
            entry
        })
}

fn bundle() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["transaction", "batch", "collection", "searchset", "x"]),
        prop::collection::vec(entry(), 0..8),
    )
        .prop_map(
            |(kind, entries)| json!({"resourceType": "Bundle", "type": kind, "entry": entries}),
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn bundles_are_processed_or_refused_cleanly(bundle in bundle()) {
        let engine = &fixture().engine;
        let kind = bundle["type"].as_str().unwrap_or_default().to_owned();
        let entries = bundle["entry"].as_array().map_or(0, Vec::len);
        let before = versions(engine);
        match engine.process_bundle(&ctx(), bundle) {
            Ok(response) => {
                let body = response.body.unwrap_or(Value::Null);
                prop_assert_eq!(&body["resourceType"], "Bundle");
                let answered = body["entry"].as_array().map_or(0, Vec::len);
                prop_assert_eq!(answered, entries, "every entry is answered: {}", body);
                if kind == "batch" {
                    for answer in body["entry"].as_array().into_iter().flatten() {
                        let status = answer["response"]["status"].as_str().unwrap_or_default();
                        prop_assert!(!status.starts_with('5'), "batch entry failed with {}: {}", status, answer);
                    }
                }
            }
            Err(error) => {
                prop_assert!(
                    (400..500).contains(&error.status),
                    "refused with {}: {:?}", error.status, error.outcome
                );
                prop_assert!(error.outcome.has_errors());
                if kind == "transaction" {
                    prop_assert_eq!(versions(engine), before, "a refused transaction wrote");
                }
            }
        }
    }
}
