//! Where the distributed layout puts rows and where the store's statements run, read from a
//! real Citus cluster: the coordinator logs every command it sends to a shard
//! (`citus.log_remote_commands`), and each operation on one patient's records must reach one
//! shard of the co-located tables (plus, for what is looked up by id, one shard of
//! `resource_ids`). The behaviour of the store on Citus is checked by every `both!` test of
//! the other store suites, which run on Citus as a third backend.

use std::collections::BTreeSet;
use std::sync::Arc;

use phip_fhir::search::query::parse;
use phip_store::postgres::{Layout, PostgresStore};
use phip_store::{
    Access, HistoryQuery, HistoryScope, PageCursor, SearchRequest, Sharing, Store, TypeGrant,
    Visibility, WriteRequest,
};
use phip_testkit::CitusCluster;
use serde_json::{json, Value};

/// The tables co-located by `shard`.
const COLOCATED: &[&str] = &[
    "resources",
    "resource_versions",
    "idx_string",
    "idx_token",
    "idx_date",
    "idx_number",
    "idx_quantity",
    "idx_reference",
    "idx_uri",
    "access_label",
    "index_source",
    "compartment_ref",
];

/// What an operation touched: the hash ranges of the co-located shards, and the shards of
/// `resource_ids`.
#[derive(Debug, Default)]
struct Touched {
    ranges: BTreeSet<String>,
    identity_shards: BTreeSet<i64>,
}

struct Cluster {
    _cluster: CitusCluster,
    log: std::path::PathBuf,
    admin: postgres::Client,
    store: PostgresStore,
}

impl Cluster {
    /// The coordinator's log from `from` on.
    fn log_since(&self, from: u64) -> String {
        let text = std::fs::read(&self.log).unwrap();
        String::from_utf8_lossy(&text[from as usize..]).into_owned()
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).unwrap().len()
    }

    /// Runs `op` and returns the shards the commands it made the coordinator send name.
    fn touched(&mut self, op: impl FnOnce(&PostgresStore)) -> Touched {
        let from = self.log_len();
        op(&self.store);
        let text = self.log_since(from);
        if std::env::var_os("CITUS_TEST_DEBUG").is_some() {
            eprintln!("{text}");
        }
        let mut shard_ids: BTreeSet<i64> = BTreeSet::new();
        for line in text
            .lines()
            .filter(|l| l.contains("issuing ") || l.contains("executing the command locally"))
        {
            for table in COLOCATED.iter().chain(&["resource_ids"]) {
                let needle = format!("{table}_");
                let mut rest = line;
                while let Some(at) = rest.find(&needle) {
                    let before = rest[..at].chars().last();
                    rest = &rest[at + needle.len()..];
                    if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                        continue;
                    }
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    if let Ok(id) = digits.parse::<i64>() {
                        shard_ids.insert(id);
                    }
                }
            }
        }
        let ids: Vec<i64> = shard_ids.into_iter().collect();
        let rows = self
            .admin
            .query(
                "SELECT shardid, logicalrelid::text, shardminvalue FROM pg_dist_shard \
                 WHERE shardid = ANY($1)",
                &[&ids],
            )
            .unwrap();
        let mut touched = Touched::default();
        for row in rows {
            let (id, table, min): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
            if table == "resource_ids" {
                touched.identity_shards.insert(id);
            } else {
                assert!(COLOCATED.contains(&table.as_str()), "{table}");
                touched.ranges.insert(min);
            }
        }
        touched
    }
}

fn start() -> Option<Cluster> {
    let cluster = CitusCluster::start_owned(2)?;
    let url = cluster.fresh_database();
    let name = url
        .rsplit('/')
        .next()
        .and_then(|tail| tail.split('?').next())
        .unwrap()
        .to_owned();
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} SET citus.log_remote_commands = on; \
             ALTER DATABASE {name} SET log_min_messages = notice"
        ))
        .unwrap();
    let store = PostgresStore::connect_with_layout(
        &url,
        4,
        Arc::new(phip_fhir::search::index::extract),
        Layout::Citus,
    )
    .unwrap();
    assert!(store.is_distributed());
    Some(Cluster {
        log: cluster.coordinator().root().join("postgres.log"),
        _cluster: cluster,
        admin,
        store,
    })
}

fn write(store: &dyn Store, ty: &str, id: &str, body: Value) {
    let mut tx = store.begin_write().unwrap();
    tx.write(WriteRequest {
        resource_type: ty.into(),
        id: id.into(),
        resource: Some(body),
        expected_version: None,
    })
    .unwrap();
    tx.commit().unwrap();
}

fn observation(patient: &str, value: &str) -> Value {
    json!({"resourceType": "Observation", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
           "subject": {"reference": format!("Patient/{patient}")},
           "valueString": value})
}

#[test]
fn a_patients_records_share_a_shard_and_their_operations_run_there() {
    let Some(mut c) = start() else {
        return;
    };
    // Patients of other shards first, so that "one shard" means something.
    for i in 0..8 {
        write(
            &c.store,
            "Patient",
            &format!("other-{i}"),
            json!({"resourceType": "Patient"}),
        );
        write(
            &c.store,
            "Observation",
            &format!("other-obs-{i}"),
            observation(&format!("other-{i}"), "x"),
        );
    }
    write(
        &c.store,
        "Patient",
        "p1",
        json!({"resourceType": "Patient", "name": [{"family": "Li"}]}),
    );

    let single = |t: &Touched, what: &str| {
        assert_eq!(t.ranges.len(), 1, "{what} touched {t:?}");
        assert!(t.identity_shards.len() <= 1, "{what} touched {t:?}");
    };
    let t = c.touched(|s| write(s, "Observation", "o1", observation("p1", "first")));
    single(&t, "creating an Observation");
    let home = t.ranges.clone();
    let t = c.touched(|s| write(s, "Observation", "o1", observation("p1", "second")));
    single(&t, "updating it");
    assert_eq!(t.ranges, home);
    let t = c.touched(|s| {
        let mut tx = s.begin_read().unwrap();
        let read = tx.read("Observation", "o1").unwrap().unwrap();
        assert_eq!(read.version_id, 2);
    });
    single(&t, "reading it by id");
    assert_eq!(t.ranges, home);
    let t = c.touched(|s| {
        write(
            s,
            "Patient",
            "p1",
            json!({"resourceType": "Patient", "name": [{"family": "Li"}], "gender": "female"}),
        )
    });
    single(&t, "updating the Patient");
    assert_eq!(t.ranges, home, "the Patient is where its records are");
    let t = c.touched(|s| {
        let mut tx = s.begin_read().unwrap();
        let (page, _) = tx
            .patient_compartment("p1", None, None, 100, None, &Access::Server)
            .unwrap();
        let mut ids: Vec<String> = page.into_iter().map(|r| r.id).collect();
        ids.sort();
        assert_eq!(ids, ["o1", "p1"]);
    });
    single(&t, "the patient's compartment ($everything)");
    assert_eq!(t.ranges, home);
    assert!(t.identity_shards.is_empty());

    // The same for a caller whose every query carries the visibility predicate (its
    // subqueries under OR must be held to the shard too).
    let clinic = Access::Caller(Box::new(Visibility {
        types: TypeGrant::All,
        compartment_types: TypeGrant::Only(Vec::new()),
        compartment: Vec::new(),
        sharing: Some(Sharing {
            organization: Some("clinic".into()),
            division: Some("320481".into()),
            now_ms: 1_800_000_000_000,
        }),
    }));
    let t = c.touched(|s| {
        let mut tx = s.begin_read().unwrap();
        assert!(tx.visible("Observation", "o1", &clinic).unwrap());
    });
    single(&t, "a caller's check of one record");
    assert_eq!(t.ranges, home);
    let t = c.touched(|s| {
        let mut tx = s.begin_read().unwrap();
        let (page, _) = tx
            .patient_compartment("p1", None, None, 100, None, &clinic)
            .unwrap();
        assert_eq!(page.len(), 2);
    });
    single(&t, "a caller's view of the compartment");
    assert_eq!(t.ranges, home);
    let t = c.touched(|s| {
        let mut tx = s.begin_read().unwrap();
        let history = tx
            .history(&HistoryQuery {
                scope: HistoryScope::Instance {
                    resource_type: "Observation".into(),
                    id: "o1".into(),
                },
                since: None,
                before: None,
                count: 10,
                cursor: None,
                access: clinic.clone(),
            })
            .unwrap();
        assert_eq!(history.total, 2);
    });
    single(&t, "a caller's view of a record's history");
    assert_eq!(t.ranges, home);

    // The check can fail: a search over every patient's Observations visits every shard.
    let t = c.touched(|s| {
        let query = parse(Some("Observation"), &[], true).unwrap().query;
        let mut tx = s.begin_read().unwrap();
        let page = tx
            .search(&SearchRequest {
                query,
                cursor: PageCursor::First,
                page_size: 100,
                access: Access::Server,
            })
            .unwrap();
        assert_eq!(page.matches.len(), 9);
    });
    assert!(t.ranges.len() > 1, "{t:?}");

    // The rows agree: the Patient and its records are in one shard.
    let shards: i64 = c
        .admin
        .query_one(
            "SELECT count(DISTINCT get_shard_id_for_distribution_column('resources', shard)) \
             FROM resources WHERE id IN ('p1', 'o1')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(shards, 1);
}

/// Whether a store error is one a client retries (the HTTP layer answers 503 with
/// Retry-After for these).
fn transient(e: &phip_store::StoreError) -> bool {
    matches!(
        e,
        phip_store::StoreError::Busy | phip_store::StoreError::Unavailable(_)
    )
}

/// Runs `op` until it succeeds or fails for good, counting transient failures; `Err` carries
/// the last error when it fails for good (not transient, or transient for too long).
fn with_retries<T>(
    retries: &std::sync::atomic::AtomicU64,
    mut op: impl FnMut() -> phip_store::StoreResult<T>,
) -> Result<T, String> {
    use std::sync::atomic::Ordering;
    let mut attempts = 0;
    loop {
        match op() {
            Ok(v) => return Ok(v),
            Err(e) if transient(&e) && attempts < 100 => {
                attempts += 1;
                retries.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Online growth: a third worker joins and the shards are rebalanced onto it
/// (`citus_rebalance_start`, moving shards by logical replication) while clients keep
/// writing and searching. No request fails beyond transient errors the client retries,
/// nothing acknowledged is lost, and everything is found afterwards.
#[test]
fn a_worker_joins_and_shards_move_while_clients_write_and_search() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Mutex;

    let Some(mut cluster) = CitusCluster::start_owned(2) else {
        return;
    };
    let url = cluster.fresh_database();
    let store = Arc::new(
        PostgresStore::connect_with_layout(
            &url,
            8,
            Arc::new(phip_fhir::search::index::extract),
            Layout::Citus,
        )
        .unwrap(),
    );
    const PATIENTS: usize = 24;
    for i in 0..PATIENTS {
        write(
            store.as_ref(),
            "Patient",
            &format!("p{i}"),
            json!({"resourceType": "Patient"}),
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let retries = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    // (id, version) of every acknowledged write.
    let acknowledged = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let reads = Arc::new(AtomicU64::new(0));

    let mut clients = Vec::new();
    for w in 0..3 {
        let (store, stop, retries, failures, acknowledged) = (
            store.clone(),
            stop.clone(),
            retries.clone(),
            failures.clone(),
            acknowledged.clone(),
        );
        clients.push(std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("w{w}-{n}");
                let patient = format!("p{}", (n * 7 + w) % PATIENTS);
                let result = with_retries(&retries, || {
                    let mut tx = store.begin_write()?;
                    let stored = tx.write(WriteRequest {
                        resource_type: "Observation".into(),
                        id: id.clone(),
                        resource: Some(observation(&patient, &id)),
                        expected_version: None,
                    })?;
                    tx.commit()?;
                    Ok(stored.version_id)
                });
                match result {
                    Ok(version) => acknowledged.lock().unwrap().push((id.clone(), version)),
                    Err(e) => failures.lock().unwrap().push(format!("write {id}: {e}")),
                }
                // Every third one is updated too.
                if n.is_multiple_of(3) {
                    let result = with_retries(&retries, || {
                        let mut tx = store.begin_write()?;
                        let stored = tx.write(WriteRequest {
                            resource_type: "Observation".into(),
                            id: id.clone(),
                            resource: Some(observation(&patient, "updated")),
                            expected_version: None,
                        })?;
                        tx.commit()?;
                        Ok(stored.version_id)
                    });
                    match result {
                        Ok(version) => acknowledged.lock().unwrap().push((id.clone(), version)),
                        Err(e) => failures.lock().unwrap().push(format!("update {id}: {e}")),
                    }
                }
                n += 1;
            }
        }));
    }
    {
        let (store, stop, retries, failures, reads) = (
            store.clone(),
            stop.clone(),
            retries.clone(),
            failures.clone(),
            reads.clone(),
        );
        clients.push(std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let patient = format!("p{}", n % PATIENTS);
                let params = vec![("subject".to_owned(), format!("Patient/{patient}"))];
                let result = with_retries(&retries, || {
                    let query = parse(Some("Observation"), &params, true)
                        .map_err(|e| phip_store::StoreError::Backend(format!("{e:?}")))?
                        .query;
                    let mut tx = store.begin_read()?;
                    let page = tx.search(&SearchRequest {
                        query,
                        cursor: PageCursor::First,
                        page_size: 50,
                        access: Access::Server,
                    })?;
                    let (everything, _) =
                        tx.patient_compartment(&patient, None, None, 500, None, &Access::Server)?;
                    Ok((page.matches.len(), everything.len()))
                });
                match result {
                    Ok(_) => {
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.lock().unwrap().push(format!("search: {e}")),
                }
                n += 1;
            }
        }));
    }

    std::thread::sleep(std::time::Duration::from_secs(2));
    let before = acknowledged.lock().unwrap().len();
    cluster.add_worker().unwrap();
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    // Two transactions: the background job the first schedules runs once it commits.
    admin
        .batch_execute("SELECT citus_rebalance_start()")
        .unwrap();
    admin
        .batch_execute("SELECT citus_rebalance_wait()")
        .unwrap();
    let state: String = admin
        .query_one(
            "SELECT state::text FROM citus_rebalance_status() ORDER BY job_id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(state, "finished");
    let nodes: i64 = admin
        .query_one(
            "SELECT count(DISTINCT nodeport) FROM citus_shards \
             WHERE table_name = 'resources'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(nodes, 3, "the new worker holds shards");
    let during = acknowledged.lock().unwrap().len() - before;
    // Some more traffic on the new layout.
    std::thread::sleep(std::time::Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(during > 0, "clients kept writing while shards moved");

    // Nothing acknowledged is lost: every write is there, at least at its version.
    let acknowledged = acknowledged.lock().unwrap();
    let mut newest: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for (id, version) in acknowledged.iter() {
        let v = newest.entry(id.as_str()).or_default();
        *v = (*v).max(*version);
    }
    let mut tx = store.begin_read().unwrap();
    for (id, version) in &newest {
        let read = tx.read("Observation", id).unwrap();
        assert_eq!(read.map(|r| r.version_id), Some(*version), "{id}");
    }
    let query = parse(Some("Observation"), &[], true).unwrap().query;
    let mut total_query = query.clone();
    total_query.total = phip_fhir::search::TotalMode::Accurate;
    let page = tx
        .search(&SearchRequest {
            query: total_query,
            cursor: PageCursor::First,
            page_size: 0,
            access: Access::Server,
        })
        .unwrap();
    assert_eq!(page.total, Some(newest.len() as u64));
    let mut compartments = 0;
    for i in 0..PATIENTS {
        let (all, _) = tx
            .patient_compartment(&format!("p{i}"), None, None, 10_000, None, &Access::Server)
            .unwrap();
        compartments += all.len() - 1;
    }
    assert_eq!(compartments, newest.len());
    println!(
        "online growth: {} writes acknowledged ({during} while shards moved), {} searches, \
         {} transient errors retried, none failed",
        acknowledged.len(),
        reads.load(Ordering::Relaxed),
        retries.load(Ordering::Relaxed)
    );
}
