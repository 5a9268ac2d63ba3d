//! Versioning, locking, persistence, schema versions, history and concurrency of the SQLite
//! store.

mod support;

use std::sync::Arc;

use phip_store::sqlite::SqliteStore;
use phip_store::{HistoryQuery, HistoryScope, Store, WriteRequest};
use serde_json::json;
use support::{patient, put};

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    (dir, store)
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
                            s.as_ref(),
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
            access: phip_store::Access::Server,
        })
        .unwrap();
    assert_eq!(page.total, 150);
}
