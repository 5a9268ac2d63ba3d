//! The parent's side against a real store: idempotent apply, linking through the national
//! index, the record locator, the index-only rule and roll-ups.

use phip_engine::{Engine, EngineConfig, Principal, RequestContext};
use phip_federation::apply::{apply_batch, local_id, Applied};
use phip_federation::entry::{index_entry, Holder, Source};
use phip_federation::{Level, NodeConfig, Peer};
use serde_json::{json, Value};

const RESIDENT: &str = "110101198503070021";

/// Where a test's national node keeps its data.
#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A national node's engine over a fresh store; `None` when PostgreSQL is unavailable (the
/// testkit says why, and fails instead when `PHIP_REQUIRE_POSTGRES=1`).
fn national_on(backend: Backend, dir: &std::path::Path) -> Option<Engine> {
    let config = match backend {
        Backend::Sqlite => phip_store::StoreConfig::new(dir, None),
        Backend::Postgres => phip_store::StoreConfig::Postgres {
            url: phip_testkit::PgCluster::shared()?.fresh_database(),
            pool_size: 4,
        },
    };
    Some(national_over(phip_store::open_store(&config).unwrap()))
}

/// Runs each listed `fn(Backend)` on SQLite and on PostgreSQL.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(super::Backend::Sqlite) })*
        }
        mod postgres {
            $(#[test] fn $name() { super::$name(super::Backend::Postgres) })*
        }
    };
}

on_both_backends!(
    redelivery_is_applied_once,
    a_node_publishes_only_its_own_entries,
    the_national_index_links_provinces_and_locates_holders,
    a_national_node_refuses_clinical_records,
    reports_roll_up_and_a_correction_replaces_the_old_count,
);

fn national(dir: &std::path::Path) -> Engine {
    national_over(phip_store::open_store(&phip_store::StoreConfig::new(dir, None)).unwrap())
}

fn national_over(store: std::sync::Arc<dyn phip_store::Store>) -> Engine {
    let mut engine = Engine::new(store, EngineConfig::default());
    let config = NodeConfig::new("cn", Level::National, "000000", "http://cn/fhir");
    phip_federation::install(&mut engine, &config);
    engine
}

fn peer(id: &str) -> Peer {
    Peer {
        node_id: id.into(),
        base_url: format!("http://{id}/fhir"),
        jwks: Default::default(),
    }
}

fn put(node: &str, golden: &str, version: u64, division: &str) -> Value {
    let source = Source {
        node: node.into(),
        endpoint: format!("http://{node}/fhir"),
        record: format!("Patient/{golden}"),
        version,
    };
    let golden_body = json!({
        "resourceType": "Patient", "id": golden,
        "identifier": [
            {"system": phip_engine::mpi::PERSON_ID_SYSTEM, "value": golden},
            {"system": phip_federation::RESIDENT_ID_SYSTEM, "value": RESIDENT}
        ],
        "name": [{"family": "王", "given": ["芳"]}],
        "gender": "female", "birthDate": "1985-03-07"
    });
    let holder = Holder {
        node: node.into(),
        endpoint: source.endpoint.clone(),
        division: division.into(),
    };
    json!({
        "extension": [source.to_extension()],
        "request": {"method": "PUT", "url": source.record},
        "resource": index_entry(&source, &golden_body, &[holder], &[("Observation".into(), version)]),
    })
}

fn delete(node: &str, golden: &str, version: u64) -> Value {
    let source = Source {
        node: node.into(),
        endpoint: format!("http://{node}/fhir"),
        record: format!("Patient/{golden}"),
        version,
    };
    json!({"extension": [source.to_extension()], "request": {"method": "DELETE", "url": source.record}})
}

fn batch(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "batch", "entry": entries})
}

fn versions(engine: &Engine, resource_type: &str, id: &str) -> usize {
    let ctx = RequestContext::new("http://cn/fhir", Principal::unrestricted("test"));
    let history = engine
        .history(&ctx, Some(resource_type), Some(id), &[])
        .unwrap();
    history.body.unwrap()["entry"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0)
}

fn applied(applied: usize, ignored: usize) -> Applied {
    Applied {
        applied,
        ignored,
        rollups: 0,
    }
}

fn redelivery_is_applied_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(engine) = national_on(backend, dir.path()) else {
        return;
    };
    let bj = peer("bj");
    let id = local_id("bj", "Patient/g1");

    let first = batch(vec![put("bj", "g1", 1, "110000")]);
    assert_eq!(
        apply_batch(&engine, "000000", &bj, &first).unwrap(),
        applied(1, 0)
    );
    // The acknowledgement was lost: the same batch again changes nothing.
    assert_eq!(
        apply_batch(&engine, "000000", &bj, &first).unwrap(),
        applied(0, 1)
    );
    assert_eq!(versions(&engine, "Patient", &id), 1);

    // A newer version, then a late replay of the older one.
    let second = batch(vec![
        put("bj", "g1", 2, "110000"),
        put("bj", "g1", 1, "110000"),
    ]);
    assert_eq!(
        apply_batch(&engine, "000000", &bj, &second).unwrap(),
        applied(1, 1)
    );
    assert_eq!(versions(&engine, "Patient", &id), 2);

    // Retraction, redelivered, and older versions replayed after it.
    let retract = batch(vec![delete("bj", "g1", 3)]);
    assert_eq!(
        apply_batch(&engine, "000000", &bj, &retract).unwrap(),
        applied(1, 0)
    );
    assert_eq!(
        apply_batch(&engine, "000000", &bj, &retract).unwrap(),
        applied(0, 1)
    );
    let stale = batch(vec![put("bj", "g1", 2, "110000")]);
    assert_eq!(
        apply_batch(&engine, "000000", &bj, &stale).unwrap(),
        applied(0, 1)
    );
    assert_eq!(versions(&engine, "Patient", &id), 3);
    // The person coming back (a newer version) is applied.
    let back = batch(vec![put("bj", "g1", 4, "110000")]);
    assert_eq!(
        apply_batch(&engine, "000000", &bj, &back).unwrap(),
        applied(1, 0)
    );
}

fn a_node_publishes_only_its_own_entries(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(engine) = national_on(backend, dir.path()) else {
        return;
    };
    let error = apply_batch(
        &engine,
        "000000",
        &peer("gd"),
        &batch(vec![put("bj", "g1", 1, "110000")]),
    )
    .unwrap_err();
    assert_eq!(error.status, 403);
    let error = apply_batch(
        &engine,
        "000000",
        &peer("bj"),
        &json!({"resourceType": "Patient"}),
    )
    .unwrap_err();
    assert_eq!(error.status, 400);
}

fn the_national_index_links_provinces_and_locates_holders(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(engine) = national_on(backend, dir.path()) else {
        return;
    };
    apply_batch(
        &engine,
        "000000",
        &peer("bj"),
        &batch(vec![put("bj", "g1", 1, "110000")]),
    )
    .unwrap();
    apply_batch(
        &engine,
        "000000",
        &peer("gd"),
        &batch(vec![put("gd", "x9", 1, "440000")]),
    )
    .unwrap();
    let identifier = format!("{}|{RESIDENT}", phip_federation::RESIDENT_ID_SYSTEM);
    let (persons, holders) =
        phip_federation::locate::locate(&engine, "http://cn/fhir", &identifier).unwrap();
    assert_eq!(persons.len(), 1, "one person across both provinces");
    let nodes: Vec<&str> = holders.iter().map(|h| h.node.as_str()).collect();
    assert_eq!(nodes, vec!["bj", "gd"]);
    assert!(phip_federation::locate::locate(&engine, "http://cn/fhir", RESIDENT).is_err());
}

fn a_national_node_refuses_clinical_records(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(engine) = national_on(backend, dir.path()) else {
        return;
    };
    let ctx = RequestContext::new("http://cn/fhir", Principal::unrestricted("operator"));
    let observation =
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "bp"}});
    let error = engine
        .create(&ctx, "Observation", observation, None)
        .unwrap_err();
    assert_eq!(error.status, 422);
    let patient = json!({"resourceType": "Patient", "gender": "male"});
    assert_eq!(
        engine
            .create(&ctx, "Patient", patient, None)
            .unwrap_err()
            .status,
        422
    );
    let measure = json!({"resourceType": "Measure", "status": "active"});
    assert_eq!(
        engine
            .create(&ctx, "Measure", measure, None)
            .unwrap()
            .status,
        201
    );
}

fn report(node: &str, id: &str, version: u64, division: &str, numerator: u64) -> Value {
    let source = Source {
        node: node.into(),
        endpoint: format!("http://{node}/fhir"),
        record: format!("MeasureReport/{id}"),
        version,
    };
    json!({
        "extension": [source.to_extension()],
        "request": {"method": "PUT", "url": source.record},
        "resource": {
            "resourceType": "MeasureReport", "status": "complete", "type": "summary",
            "measure": "https://phip.cn/fhir/Measure/ehr-coverage",
            "subject": {"identifier": {"system": "urn:phip:division", "value": division}},
            "period": {"start": "2026-10-01", "end": "2026-10-31"},
            "group": [{"population": [
                {"code": {"coding": [{"code": "numerator"}]}, "count": numerator},
                {"code": {"coding": [{"code": "denominator"}]}, "count": 100}
            ]}]
        }
    })
}

fn count(report: &Value, code: &str) -> Option<u64> {
    report["group"][0]["population"]
        .as_array()?
        .iter()
        .find(|p| p["code"]["coding"][0]["code"] == code)?["count"]
        .as_u64()
}

fn rollups(engine: &Engine) -> Vec<Value> {
    let ctx = RequestContext::new("http://cn/fhir", Principal::unrestricted("test"));
    let params = vec![("_tag".to_owned(), "urn:phip:federation|rollup".to_owned())];
    let found = engine.search(&ctx, Some("MeasureReport"), &params).unwrap();
    found.body.unwrap()["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e["resource"].clone())
        .collect()
}

fn reports_roll_up_and_a_correction_replaces_the_old_count(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(engine) = national_on(backend, dir.path()) else {
        return;
    };
    let result = apply_batch(
        &engine,
        "000000",
        &peer("bj"),
        &batch(vec![
            report("bj", "r1", 1, "110101", 30),
            report("bj", "r2", 1, "110102", 20),
        ]),
    )
    .unwrap();
    assert_eq!(result.rollups, 1);
    apply_batch(
        &engine,
        "000000",
        &peer("gd"),
        &batch(vec![report("gd", "r1", 1, "440103", 5)]),
    )
    .unwrap();
    let all = rollups(&engine);
    assert_eq!(all.len(), 1);
    assert_eq!(count(&all[0], "numerator"), Some(55));
    assert_eq!(count(&all[0], "denominator"), Some(300));
    // A corrected district report replaces its earlier count; a replay changes nothing.
    let correction = batch(vec![report("bj", "r1", 2, "110101", 40)]);
    apply_batch(&engine, "000000", &peer("bj"), &correction).unwrap();
    let again = apply_batch(&engine, "000000", &peer("bj"), &correction).unwrap();
    assert_eq!(again, applied(0, 1));
    let all = rollups(&engine);
    assert_eq!(count(&all[0], "numerator"), Some(65));
    let id = all[0]["id"].as_str().unwrap();
    assert_eq!(versions(&engine, "MeasureReport", id), 3);
}

fn resident_id(area: &str, birth: &str, sequence: &str) -> String {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];
    let first17 = format!("{area}{birth}{sequence}");
    let sum: u32 = first17
        .bytes()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    format!("{first17}{}", CHECK[(sum % 11) as usize])
}

/// Not a test: how fast a national node applies index entries (distinct persons, batches
/// of 200 as the publisher sends them). Run with
/// `cargo test -p phip-federation --test apply -- --ignored --nocapture apply_rate`.
#[test]
#[ignore]
fn apply_rate() {
    let dir = tempfile::tempdir().unwrap();
    let engine = national(dir.path());
    rate(&engine, "with the patient index");
    let dir = tempfile::tempdir().unwrap();
    let store = phip_store::open_store(&phip_store::StoreConfig::new(dir.path(), None)).unwrap();
    let mut config = EngineConfig::default();
    config.mpi.enabled = false;
    rate(
        &Engine::new(store, config),
        "without the patient index (storage alone)",
    );
}

fn rate(engine: &Engine, label: &str) {
    let bj = peer("bj");
    let batches = 25;
    let started = std::time::Instant::now();
    for b in 0..batches {
        let entries: Vec<Value> = (0..200)
            .map(|i| {
                let mut entry = put("bj", &format!("g{b}-{i}"), 1, "110000");
                // Realistic spread: distinct birth dates and surnames, valid resident IDs.
                let n = b * 200 + i;
                let birth = format!(
                    "{}{:02}{:02}",
                    1940 + n % 60,
                    1 + (n / 60) % 12,
                    1 + (n / 720) % 28
                );
                let resident = resident_id("110101", &birth, &format!("{:03}", (n % 500) * 2));
                let surnames = ["王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周"];
                entry["resource"]["identifier"][1]["value"] = json!(resident);
                entry["resource"]["name"][0]["family"] = json!(surnames[n % 10]);
                entry["resource"]["name"][0]["given"] = json!([format!("芳{n}")]);
                entry["resource"]["birthDate"] = json!(format!(
                    "{}-{}-{}",
                    &birth[0..4],
                    &birth[4..6],
                    &birth[6..8]
                ));
                entry
            })
            .collect();
        apply_batch(engine, "000000", &bj, &batch(entries)).unwrap();
    }
    let elapsed = started.elapsed();
    let entries = batches * 200;
    println!(
        "{label}: applied {entries} index entries in {elapsed:?}: {:.0} entries/s",
        entries as f64 / elapsed.as_secs_f64()
    );
}
