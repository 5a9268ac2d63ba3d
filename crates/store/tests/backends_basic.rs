//! Versioning, locking, history and bulk writes on both backends, and what is PostgreSQL's own:
//! reconnecting, schema versions, failure and recovery of the server, and concurrency proofs
//! with many writers.

mod support;

use chrono::Duration;
use phip_fhir::search::query::parse;
use phip_store::postgres::PostgresStore;
use phip_store::{
    HistoryQuery, HistoryScope, PageCursor, SearchRequest, Store, StoreError, WriteRequest,
};
use serde_json::json;
use support::{patient, put};

fn versions_are_kept_and_readable(s: &dyn Store) {
    let v1 = put(s, "Patient", "p1", Some(patient("A")), Some(0)).unwrap();
    assert_eq!(v1.version_id, 1);
    let body = v1.resource.as_ref().unwrap();
    assert_eq!(body["id"], "p1");
    assert_eq!(body["meta"]["versionId"], "1");
    assert!(body["meta"]["lastUpdated"].as_str().unwrap().ends_with('Z'));
    let v2 = put(s, "Patient", "p1", Some(patient("B")), Some(1)).unwrap();
    let v3 = put(s, "Patient", "p1", Some(patient("C")), None).unwrap();
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

    let d = put(s, "Patient", "p1", None, None).unwrap();
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
    let again = put(s, "Patient", "p1", None, None).unwrap();
    assert_eq!(again.version_id, 4);
    let unknown = put(s, "Patient", "ghost", None, None).unwrap();
    assert_eq!(unknown.version_id, 0);
    // Re-creating after deletion continues the version sequence.
    let v5 = put(s, "Patient", "p1", Some(patient("D")), Some(4)).unwrap();
    assert_eq!(v5.version_id, 5);
}

fn optimistic_lock_conflicts(s: &dyn Store) {
    put(s, "Patient", "p1", Some(patient("A")), Some(0)).unwrap();
    match put(s, "Patient", "p1", Some(patient("B")), Some(0)) {
        Err(StoreError::VersionConflict {
            expected: 0,
            current: 1,
        }) => {}
        other => panic!("{other:?}"),
    }
    match put(s, "Patient", "p2", Some(patient("B")), Some(3)) {
        Err(StoreError::VersionConflict {
            expected: 3,
            current: 0,
        }) => {}
        other => panic!("{other:?}"),
    }
    match put(s, "Patient", "p1", None, Some(7)) {
        Err(StoreError::VersionConflict {
            expected: 7,
            current: 1,
        }) => {}
        other => panic!("{other:?}"),
    }
}

fn rollback_on_drop(s: &dyn Store) {
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
        s,
        "Observation",
        "o1",
        Some(json!({"resourceType": "Observation"})),
        None,
    )
    .unwrap();
    put(s, "Patient", "p1", Some(patient("A")), Some(0)).unwrap();
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

fn read_only_transactions_refuse_writes(s: &dyn Store) {
    let mut tx = s.begin_read().unwrap();
    let r = tx.write(WriteRequest {
        resource_type: "Patient".into(),
        id: "p1".into(),
        resource: Some(patient("A")),
        expected_version: None,
    });
    assert!(r.is_err());
}

fn mismatched_resource_type_is_refused(s: &dyn Store) {
    assert!(put(s, "Observation", "x", Some(patient("A")), None).is_err());
}

fn history_scopes_since_and_paging(s: &dyn Store) {
    put(s, "Patient", "a", Some(patient("A1")), None).unwrap();
    let mid = put(
        s,
        "Observation",
        "o",
        Some(json!({"resourceType": "Observation"})),
        None,
    )
    .unwrap();
    put(s, "Patient", "b", Some(patient("B1")), None).unwrap();
    put(s, "Patient", "a", Some(patient("A2")), None).unwrap();
    put(s, "Patient", "a", None, None).unwrap();

    let mut tx = s.begin_read().unwrap();
    let q = |scope, count, cursor, since| HistoryQuery {
        scope,
        since,
        before: None,
        count,
        cursor,
        access: phip_store::Access::Server,
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

/// `threads` writers race each round with the same `expected_version`: exactly one wins per
/// round, and the versions are gapless.
fn racing_writers(s: &dyn Store, threads: usize, rounds: u64) {
    put(s, "Patient", "p", Some(patient("start")), None).unwrap();
    let barrier = std::sync::Barrier::new(threads);
    let wins = parking_lot::Mutex::new(vec![0_usize; rounds as usize + 2]);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (barrier, wins) = (&barrier, &wins);
            scope.spawn(move || {
                for round in 1..=rounds {
                    barrier.wait();
                    match put(
                        s,
                        "Patient",
                        "p",
                        Some(patient(&format!("t{t}r{round}"))),
                        Some(round),
                    ) {
                        Ok(r) => {
                            assert_eq!(r.version_id, round + 1);
                            wins.lock()[round as usize] += 1;
                        }
                        Err(StoreError::VersionConflict { expected, current }) => {
                            assert_eq!((expected, current), (round, round + 1));
                        }
                        Err(e) => panic!("{e}"),
                    }
                    // Everyone has finished the round before the next starts.
                    barrier.wait();
                }
            });
        }
    });
    let wins = wins.into_inner();
    for round in 1..=rounds {
        assert_eq!(wins[round as usize], 1, "round {round}: exactly one winner");
    }
    let mut tx = s.begin_read().unwrap();
    let page = tx
        .history(&HistoryQuery {
            scope: HistoryScope::Instance {
                resource_type: "Patient".into(),
                id: "p".into(),
            },
            since: None,
            before: None,
            count: 1000,
            cursor: None,
            access: phip_store::Access::Server,
        })
        .unwrap();
    let versions: Vec<u64> = page.versions.iter().map(|v| v.version_id).collect();
    let expected: Vec<u64> = (1..=rounds + 1).rev().collect();
    assert_eq!(versions, expected, "gapless versions, none duplicated");
}

fn concurrent_writers_exactly_one_wins_per_version(s: &dyn Store) {
    racing_writers(s, 16, 10);
}

/// The engine's conditional create: search the criteria, create if nothing matched, in one
/// write transaction. Raced by 16 clients, exactly one resource results.
fn concurrent_conditional_creates_make_one_resource(s: &dyn Store) {
    let threads = 16;
    let barrier = std::sync::Barrier::new(threads);
    let criteria = request("Patient", "identifier=urn:test|42");
    let created = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (barrier, criteria, created) = (&barrier, &criteria, &created);
            scope.spawn(move || {
                barrier.wait();
                let mut tx = s.begin_write().unwrap();
                let found = tx.search(criteria).unwrap();
                if found.matches.is_empty() {
                    tx.write(WriteRequest {
                        resource_type: "Patient".into(),
                        id: format!("cc{t}"),
                        resource: Some(json!({"resourceType": "Patient",
                            "identifier": [{"system": "urn:test", "value": "42"}]})),
                        expected_version: Some(0),
                    })
                    .unwrap();
                    created.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                tx.commit().unwrap();
            });
        }
    });
    assert_eq!(created.into_inner(), 1);
    let mut tx = s.begin_read().unwrap();
    assert_eq!(tx.search(&criteria).unwrap().matches.len(), 1);
}

/// Creates of the same new id race: one creates version 1, the others (expecting no resource)
/// conflict, and nothing is duplicated.
fn concurrent_creates_of_one_id(s: &dyn Store) {
    let threads = 16;
    let barrier = std::sync::Barrier::new(threads);
    let ok = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (barrier, ok) = (&barrier, &ok);
            scope.spawn(move || {
                barrier.wait();
                match put(
                    s,
                    "Patient",
                    "same",
                    Some(patient(&format!("t{t}"))),
                    Some(0),
                ) {
                    Ok(r) => {
                        assert_eq!(r.version_id, 1);
                        ok.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(StoreError::VersionConflict {
                        expected: 0,
                        current: 1,
                    }) => {}
                    Err(e) => panic!("{e}"),
                }
            });
        }
    });
    assert_eq!(ok.into_inner(), 1);
    // Without a lock, every writer gets its own version.
    std::thread::scope(|scope| {
        for t in 0..8 {
            scope.spawn(move || {
                put(s, "Patient", "same", Some(patient(&format!("u{t}"))), None).unwrap();
            });
        }
    });
    let mut tx = s.begin_read().unwrap();
    assert_eq!(tx.read("Patient", "same").unwrap().unwrap().version_id, 9);
}

fn request(ty: &str, query: &str) -> SearchRequest {
    let params: Vec<(String, String)> = query
        .split('&')
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    SearchRequest {
        query: parse(Some(ty), &params, true).unwrap().query,
        cursor: PageCursor::First,
        page_size: 10,
        access: phip_store::Access::Server,
    }
}

fn bulk_write_assigns_versions(s: &dyn Store) {
    put(s, "Patient", "p0", Some(patient("A")), None).unwrap();
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

both!(
    versions_are_kept_and_readable,
    optimistic_lock_conflicts,
    rollback_on_drop,
    read_only_transactions_refuse_writes,
    mismatched_resource_type_is_refused,
    history_scopes_since_and_paging,
    concurrent_writers_exactly_one_wins_per_version,
    concurrent_conditional_creates_make_one_resource,
    concurrent_creates_of_one_id,
    bulk_write_assigns_versions,
);

// PostgreSQL only.

fn pg_url() -> Option<String> {
    Some(phip_testkit::PgCluster::shared()?.fresh_database())
}

#[test]
fn persists_across_reconnect_and_timestamps_keep_increasing() {
    let Some(url) = pg_url() else { return };
    let last = {
        let s = PostgresStore::connect(&url).unwrap();
        put(&s, "Patient", "p1", Some(patient("A")), None).unwrap();
        put(&s, "Patient", "p1", Some(patient("B")), None).unwrap()
    };
    let s = PostgresStore::connect(&url).unwrap();
    assert_eq!(s.schema_version(), phip_store::postgres::SCHEMA_VERSION);
    assert_eq!(s.migrate().unwrap(), phip_store::postgres::SCHEMA_VERSION);
    let mut tx = s.begin_read().unwrap();
    assert_eq!(tx.read("Patient", "p1").unwrap().unwrap(), last);
    drop(tx);
    let v3 = put(&s, "Patient", "p1", Some(patient("C")), Some(2)).unwrap();
    assert!(v3.last_updated > last.last_updated);
    assert_eq!(s.backend_name(), "postgres");
}

#[test]
fn migrations_run_once_when_servers_start_together() {
    let Some(url) = pg_url() else { return };
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let s = PostgresStore::connect(&url).unwrap();
                assert_eq!(s.schema_version(), phip_store::postgres::SCHEMA_VERSION);
            });
        }
    });
}

#[test]
fn refuses_newer_schema() {
    let Some(url) = pg_url() else { return };
    drop(PostgresStore::connect(&url).unwrap());
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.batch_execute("UPDATE phip_schema SET version = 999")
        .unwrap();
    let err = PostgresStore::connect(&url).unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
}

#[test]
fn unreachable_server_fails_fast_with_a_clear_error() {
    let t = std::time::Instant::now();
    // Port 1 on loopback: nothing listens there.
    let err = PostgresStore::connect("postgres://phip@127.0.0.1:1/phip").unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        err.to_string().contains("cannot connect to PostgreSQL"),
        "{err}"
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    assert!(PostgresStore::connect("not a url").is_err());
}

#[test]
fn recovers_when_the_server_comes_back() {
    let Some(cluster) = phip_testkit::PgCluster::start_owned() else {
        return;
    };
    let url = cluster.fresh_database();
    let s = PostgresStore::connect(&url).unwrap();
    put(&s, "Patient", "p1", Some(patient("A")), None).unwrap();
    cluster.stop_server().unwrap();
    // Pooled connections are dead and new ones are refused: errors, not panics or hangs.
    for _ in 0..3 {
        let r = s.begin_read().and_then(|mut tx| tx.read("Patient", "p1"));
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    }
    assert!(put(&s, "Patient", "p2", Some(patient("B")), None).is_err());
    cluster.start_server().unwrap();
    let mut tx = s.begin_read().unwrap();
    assert!(tx.read("Patient", "p1").unwrap().is_some());
    drop(tx);
    put(&s, "Patient", "p2", Some(patient("B")), None).unwrap();
}

#[test]
fn concurrent_commits_all_durable() {
    let Some(url) = pg_url() else { return };
    {
        let s = PostgresStore::connect(&url).unwrap();
        std::thread::scope(|scope| {
            for t in 0..6 {
                let s = &s;
                scope.spawn(move || {
                    for i in 0..25 {
                        put(
                            s,
                            "Patient",
                            &format!("t{t}-{i}"),
                            Some(patient("X")),
                            Some(0),
                        )
                        .unwrap();
                    }
                });
            }
        });
    }
    let s = PostgresStore::connect(&url).unwrap();
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

#[test]
fn store_config_picks_the_backend() {
    use phip_store::StoreConfig;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = StoreConfig::new(dir.path(), None);
    assert!(matches!(sqlite, StoreConfig::Sqlite { .. }));
    assert_eq!(StoreConfig::new(dir.path(), Some("  ")), sqlite);
    let s = phip_store::open_store(&sqlite).unwrap();
    assert_eq!(s.backend_name(), "sqlite");
    assert_eq!(
        phip_store::migrate(&sqlite).unwrap(),
        phip_store::sqlite::SCHEMA_VERSION
    );
    let pg = StoreConfig::new(dir.path(), Some("postgres://u:secret@db.example:5432/phip"));
    assert!(matches!(pg, StoreConfig::Postgres { .. }));
    assert_eq!(pg.describe(), "postgres://db.example:5432/phip");
    let Some(url) = pg_url() else { return };
    let config = StoreConfig::new(dir.path(), Some(&url));
    assert_eq!(
        phip_store::migrate(&config).unwrap(),
        phip_store::postgres::SCHEMA_VERSION
    );
    let s = phip_store::open_store(&config).unwrap();
    assert_eq!(s.backend_name(), "postgres");
    put(s.as_ref(), "Patient", "p", Some(patient("A")), None).unwrap();
}
