//! Versioning, locking, persistence, schema versions, history and concurrency of the SQLite
//! store.

use std::sync::Arc;

use chrono::Duration;
use phip_store::sqlite::SqliteStore;
use phip_store::{HistoryQuery, HistoryScope, Store, StoreError, WriteRequest};
use serde_json::{json, Value};

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    (dir, store)
}

fn patient(family: &str) -> Value {
    json!({"resourceType": "Patient", "name": [{"family": family}]})
}

fn put(
    store: &SqliteStore,
    ty: &str,
    id: &str,
    body: Option<Value>,
    expected: Option<u64>,
) -> Result<phip_store::StoredResource, StoreError> {
    let mut tx = store.begin_write()?;
    let r = tx.write(WriteRequest {
        resource_type: ty.into(),
        id: id.into(),
        resource: body,
        expected_version: expected,
    })?;
    tx.commit()?;
    Ok(r)
}

#[test]
fn versions_are_kept_and_readable() {
    let (_d, s) = store();
    let v1 = put(&s, "Patient", "p1", Some(patient("A")), Some(0)).unwrap();
    assert_eq!(v1.version_id, 1);
    let body = v1.resource.as_ref().unwrap();
    assert_eq!(body["id"], "p1");
    assert_eq!(body["meta"]["versionId"], "1");
    assert!(body["meta"]["lastUpdated"].as_str().unwrap().ends_with('Z'));
    let v2 = put(&s, "Patient", "p1", Some(patient("B")), Some(1)).unwrap();
    let v3 = put(&s, "Patient", "p1", Some(patient("C")), None).unwrap();
    assert_eq!((v2.version_id, v3.version_id), (2, 3));
    assert!(v1.last_updated < v2.last_updated && v2.last_updated < v3.last_updated);

    let mut tx = s.begin_read().unwrap();
    for (v, family) in [(1, "A"), (2, "B"), (3, "C")] {
        let r = tx.vread("Patient", "p1", v).unwrap().unwrap();
        assert_eq!(r.version_id, v);
        assert_eq!(r.resource.unwrap()["name"][0]["family"], family);
    }
    assert!(tx.vread("Patient", "p1", 4).unwrap().is_none());
    assert!(tx.read("Patient", "nope").unwrap().is_none());
    assert!(tx.read("Observation", "p1").unwrap().is_none());
    let cur = tx.read("Patient", "p1").unwrap().unwrap();
    assert_eq!(cur, v3);
    drop(tx);

    let d = put(&s, "Patient", "p1", None, None).unwrap();
    assert_eq!(d.version_id, 4);
    assert!(d.is_deleted());
    let mut tx = s.begin_read().unwrap();
    let cur = tx.read("Patient", "p1").unwrap().unwrap();
    assert!(cur.is_deleted());
    assert_eq!(cur.version_id, 4);
    assert!(tx.vread("Patient", "p1", 4).unwrap().unwrap().is_deleted());
    assert!(tx
        .vread("Patient", "p1", 3)
        .unwrap()
        .unwrap()
        .resource
        .is_some());
    drop(tx);

    // Deleting again or deleting the unknown writes nothing.
    let again = put(&s, "Patient", "p1", None, None).unwrap();
    assert_eq!(again.version_id, 4);
    let unknown = put(&s, "Patient", "ghost", None, None).unwrap();
    assert_eq!(unknown.version_id, 0);
    // Re-creating after deletion continues the version sequence.
    let v5 = put(&s, "Patient", "p1", Some(patient("D")), Some(4)).unwrap();
    assert_eq!(v5.version_id, 5);
}

#[test]
fn optimistic_lock_conflicts() {
    let (_d, s) = store();
    put(&s, "Patient", "p1", Some(patient("A")), Some(0)).unwrap();
    match put(&s, "Patient", "p1", Some(patient("B")), Some(0)) {
        Err(StoreError::VersionConflict {
            expected: 0,
            current: 1,
        }) => {}
        other => panic!("{other:?}"),
    }
    match put(&s, "Patient", "p2", Some(patient("B")), Some(3)) {
        Err(StoreError::VersionConflict {
            expected: 3,
            current: 0,
        }) => {}
        other => panic!("{other:?}"),
    }
    match put(&s, "Patient", "p1", None, Some(7)) {
        Err(StoreError::VersionConflict {
            expected: 7,
            current: 1,
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn rollback_on_drop() {
    let (_d, s) = store();
    {
        let mut tx = s.begin_write().unwrap();
        tx.write(WriteRequest {
            resource_type: "Patient".into(),
            id: "p1".into(),
            resource: Some(patient("A")),
            expected_version: None,
        })
        .unwrap();
    }
    let mut tx = s.begin_read().unwrap();
    assert!(tx.read("Patient", "p1").unwrap().is_none());
    drop(tx);
    // The type id created by the rolled-back transaction must not leak into later ones.
    put(
        &s,
        "Observation",
        "o1",
        Some(json!({"resourceType": "Observation"})),
        None,
    )
    .unwrap();
    put(&s, "Patient", "p1", Some(patient("A")), Some(0)).unwrap();
    let mut tx = s.begin_read().unwrap();
    assert_eq!(
        tx.read("Patient", "p1").unwrap().unwrap().resource_type,
        "Patient"
    );
    assert_eq!(
        tx.read("Observation", "o1").unwrap().unwrap().resource_type,
        "Observation"
    );
}

#[test]
fn read_only_transactions_refuse_writes() {
    let (_d, s) = store();
    let mut tx = s.begin_read().unwrap();
    let r = tx.write(WriteRequest {
        resource_type: "Patient".into(),
        id: "p1".into(),
        resource: Some(patient("A")),
        expected_version: None,
    });
    assert!(r.is_err());
}

#[test]
fn mismatched_resource_type_is_refused() {
    let (_d, s) = store();
    assert!(put(&s, "Observation", "x", Some(patient("A")), None).is_err());
}

#[test]
fn persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let last = {
        let s = SqliteStore::open(dir.path()).unwrap();
        put(&s, "Patient", "p1", Some(patient("A")), None).unwrap();
        put(&s, "Patient", "p1", Some(patient("B")), None).unwrap()
    };
    let s = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(s.schema_version(), phip_store::sqlite::SCHEMA_VERSION);
    let mut tx = s.begin_read().unwrap();
    assert_eq!(tx.read("Patient", "p1").unwrap().unwrap(), last);
    drop(tx);
    // Timestamps keep increasing after a reopen.
    let v3 = put(&s, "Patient", "p1", Some(patient("C")), Some(2)).unwrap();
    assert!(v3.last_updated > last.last_updated);
}

#[test]
fn refuses_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    {
        let conn = rusqlite_conn(&dir.path().join("phip.db"));
        conn.execute_batch("PRAGMA user_version = 999").unwrap();
    }
    let err = SqliteStore::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
}

fn rusqlite_conn(path: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

#[test]
fn history_scopes_since_and_paging() {
    let (_d, s) = store();
    put(&s, "Patient", "a", Some(patient("A1")), None).unwrap();
    let mid = put(
        &s,
        "Observation",
        "o",
        Some(json!({"resourceType": "Observation"})),
        None,
    )
    .unwrap();
    put(&s, "Patient", "b", Some(patient("B1")), None).unwrap();
    put(&s, "Patient", "a", Some(patient("A2")), None).unwrap();
    put(&s, "Patient", "a", None, None).unwrap();

    let mut tx = s.begin_read().unwrap();
    let q = |scope, count, cursor, since| HistoryQuery {
        scope,
        since,
        before: None,
        count,
        cursor,
    };
    let inst = HistoryScope::Instance {
        resource_type: "Patient".into(),
        id: "a".into(),
    };
    let page = tx.history(&q(inst.clone(), 10, None, None)).unwrap();
    assert_eq!(page.total, 3);
    let versions: Vec<u64> = page.versions.iter().map(|v| v.version_id).collect();
    assert_eq!(versions, [3, 2, 1]);
    assert!(page.versions[0].is_deleted());
    assert!(page.next_cursor.is_none());

    let page = tx
        .history(&q(HistoryScope::Type("Patient".into()), 2, None, None))
        .unwrap();
    assert_eq!(page.total, 4);
    assert_eq!(page.versions.len(), 2);
    let next = page.next_cursor.clone().unwrap();
    let page2 = tx
        .history(&q(
            HistoryScope::Type("Patient".into()),
            2,
            Some(next),
            None,
        ))
        .unwrap();
    let ids: Vec<(String, u64)> = page
        .versions
        .iter()
        .chain(&page2.versions)
        .map(|v| (v.id.clone(), v.version_id))
        .collect();
    assert_eq!(
        ids,
        [
            ("a".into(), 3),
            ("a".into(), 2),
            ("b".into(), 1),
            ("a".into(), 1)
        ]
    );
    assert!(page2.next_cursor.is_none());

    let page = tx
        .history(&q(HistoryScope::System, 100, None, None))
        .unwrap();
    assert_eq!(page.total, 5);
    assert_eq!(page.versions.last().unwrap().id, "a");
    let page = tx
        .history(&q(HistoryScope::System, 100, None, Some(mid.last_updated)))
        .unwrap();
    assert_eq!(page.total, 4);
    assert_eq!(page.versions.last().unwrap().id, "o");
    let page = tx
        .history(&q(
            HistoryScope::System,
            100,
            None,
            Some(mid.last_updated + Duration::days(1)),
        ))
        .unwrap();
    assert_eq!(page.total, 0);
    let mut before = q(HistoryScope::System, 100, None, None);
    before.before = Some(mid.last_updated);
    let page = tx.history(&before).unwrap();
    assert_eq!(page.total, 2);
    assert!(matches!(
        tx.history(&q(HistoryScope::System, 1, Some("garbage".into()), None)),
        Err(StoreError::InvalidCursor)
    ));
    let none = tx
        .history(&q(
            HistoryScope::Instance {
                resource_type: "Patient".into(),
                id: "zzz".into(),
            },
            10,
            None,
            None,
        ))
        .unwrap();
    assert_eq!(none.total, 0);
}

#[test]
fn concurrent_writers_exactly_one_wins_per_version() {
    let (_d, s) = store();
    let s = Arc::new(s);
    put(&s, "Patient", "p", Some(patient("start")), None).unwrap();
    let threads = 8;
    let rounds = 10;
    let wins = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let s = s.clone();
            let wins = wins.clone();
            std::thread::spawn(move || {
                for _ in 0..rounds * 4 {
                    let current = {
                        let mut tx = s.begin_read().unwrap();
                        tx.read("Patient", "p").unwrap().unwrap().version_id
                    };
                    if current > rounds {
                        break;
                    }
                    match put(
                        &s,
                        "Patient",
                        "p",
                        Some(patient(&format!("t{t}"))),
                        Some(current),
                    ) {
                        Ok(r) => wins.lock().push(r.version_id),
                        Err(StoreError::VersionConflict { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut wins = wins.lock().clone();
    wins.sort_unstable();
    let expected: Vec<u64> = (2..=wins.len() as u64 + 1).collect();
    assert_eq!(wins, expected, "each version won exactly once");
    assert!(wins.len() as u64 >= rounds);
}

#[test]
fn bulk_write_assigns_versions() {
    let (_d, s) = store();
    put(&s, "Patient", "p0", Some(patient("A")), None).unwrap();
    let reqs: Vec<WriteRequest> = (0..200)
        .map(|i| WriteRequest {
            resource_type: "Patient".into(),
            id: format!("p{}", i % 100),
            resource: Some(patient(&format!("N{i}"))),
            expected_version: Some(0),
        })
        .collect();
    let out = s.bulk_write(reqs).unwrap();
    assert_eq!(out.len(), 200);
    assert_eq!(out[0].version_id, 2);
    assert_eq!(out[1].version_id, 1);
    assert_eq!(out[100].version_id, 3);
    assert_eq!(out[101].version_id, 2);
    let mut tx = s.begin_read().unwrap();
    let r = tx.read("Patient", "p5").unwrap().unwrap();
    assert_eq!(r.resource.unwrap()["name"][0]["family"], "N105");
}

#[test]
fn group_commit_keeps_transactions_independent() {
    let (_d, s) = store();
    let s = Arc::new(s);
    let (tx_started, started) = std::sync::mpsc::channel();
    let first = {
        let s = s.clone();
        std::thread::spawn(move || {
            let mut tx = s.begin_write().unwrap();
            tx.write(WriteRequest {
                resource_type: "Basic".into(),
                id: "x".into(),
                resource: Some(json!({"resourceType": "Basic"})),
                expected_version: None,
            })
            .unwrap();
            tx_started.send(()).unwrap();
            // Let the second writer queue up behind us, so that our commit joins a group
            // that it closes.
            std::thread::sleep(std::time::Duration::from_millis(200));
            tx.commit()
        })
    };
    started.recv().unwrap();
    let second = {
        let s = s.clone();
        std::thread::spawn(move || {
            let mut tx = s.begin_write().unwrap();
            // Sees the first transaction's work (same group) and its new type id.
            assert!(tx.read("Basic", "x").unwrap().is_some());
            tx.write(WriteRequest {
                resource_type: "Basic".into(),
                id: "y".into(),
                resource: Some(json!({"resourceType": "Basic"})),
                expected_version: None,
            })
            .unwrap();
            // Abandoned: rolls back only its own work.
        })
    };
    first.join().unwrap().unwrap();
    second.join().unwrap();
    let mut tx = s.begin_read().unwrap();
    assert!(tx.read("Basic", "x").unwrap().is_some());
    assert!(tx.read("Basic", "y").unwrap().is_none());
}

#[test]
fn concurrent_commits_all_durable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let handles: Vec<_> = (0..6)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        put(
                            &s,
                            "Patient",
                            &format!("t{t}-{i}"),
                            Some(patient("X")),
                            Some(0),
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
    let s = SqliteStore::open(dir.path()).unwrap();
    let mut tx = s.begin_read().unwrap();
    let page = tx
        .history(&HistoryQuery {
            scope: HistoryScope::Type("Patient".into()),
            since: None,
            before: None,
            count: 10,
            cursor: None,
        })
        .unwrap();
    assert_eq!(page.total, 150);
}
