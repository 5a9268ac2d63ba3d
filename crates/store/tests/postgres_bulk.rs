//! Ingest and search figures on both backends, side by side, on the Synthea sample (ignored by
//! default; run with
//! `cargo test --release -p phip-store --test postgres_bulk -- --ignored --nocapture`).
//! PostgreSQL runs on the throwaway test cluster, which has `fsync=off`: its figures are an
//! upper bound of what a durable server on this disk does.

use std::path::Path;
use std::time::Instant;

use phip_store::postgres::PostgresStore;
use phip_store::sqlite::SqliteStore;
use phip_store::{PageCursor, SearchRequest, Store, WriteRequest};
use serde_json::Value;

const SAMPLE: &str = "../../../shared/data/synthea/10-patients";

fn load_sample(copies: usize) -> Vec<WriteRequest> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(SAMPLE);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for copy in 0..copies {
        for f in &files {
            for line in std::fs::read_to_string(f).unwrap().lines() {
                let mut v: Value = serde_json::from_str(line).unwrap();
                let ty = v["resourceType"].as_str().unwrap().to_owned();
                let id = match copy {
                    0 => v["id"].as_str().unwrap().to_owned(),
                    c => format!("{}-{c}", v["id"].as_str().unwrap()),
                };
                v["id"] = Value::String(id.clone());
                out.push(WriteRequest {
                    resource_type: ty,
                    id,
                    resource: Some(v),
                    expected_version: None,
                });
            }
        }
    }
    out
}

const SEARCHES: &[(&str, &str)] = &[
    ("Encounter", "subject:Patient.name=a&_count=20"),
    ("Condition", "code=http://snomed.info/sct|44054006"),
    ("Procedure", "date=ge2015&_sort=-date"),
    (
        "Encounter",
        "_has:Condition:encounter:code=http://snomed.info/sct|44054006",
    ),
    ("MedicationRequest", "patient.gender=female&_total=accurate"),
    ("Patient", "_revinclude=Encounter:subject"),
    ("Patient", "name=ab&_sort=family"),
    ("Encounter", "date=ge2010&status=finished&_sort=date"),
];

fn bulk_only(name: &str, store: &dyn Store, requests: &[WriteRequest]) -> String {
    let t = Instant::now();
    for batch in requests.chunks(1000) {
        store.bulk_write(batch.to_vec()).unwrap();
    }
    format!(
        "{name}: bulk_write {:.0} res/s",
        requests.len() as f64 / t.elapsed().as_secs_f64()
    )
}

fn search_request(ty: &str, q: &str) -> SearchRequest {
    let params: Vec<(String, String)> = q
        .split('&')
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    SearchRequest {
        query: phip_fhir::search::query::parse(Some(ty), &params, true)
            .unwrap()
            .query,
        cursor: PageCursor::First,
        page_size: 20,
        access: phip_store::Access::Server,
    }
}

/// Bulk load, single-write transactions from 1 and 16 clients, then searches.
fn measure(name: &str, store: &dyn Store, requests: &[WriteRequest]) -> Vec<String> {
    let mut lines = Vec::new();
    let n = requests.len();
    if n == 0 {
        return search_figures(name, store);
    }
    let t = Instant::now();
    for batch in requests.chunks(1000) {
        store.bulk_write(batch.to_vec()).unwrap();
    }
    lines.push(format!(
        "{name}: bulk_write {:.0} res/s ({n} resources, {:.2} s)",
        n as f64 / t.elapsed().as_secs_f64(),
        t.elapsed().as_secs_f64()
    ));
    let singles = 200;
    let t = Instant::now();
    for r in requests.iter().take(singles) {
        let mut tx = store.begin_write().unwrap();
        tx.write(r.clone()).unwrap();
        tx.commit().unwrap();
    }
    lines.push(format!(
        "{name}: single-write transactions, 1 client: {:.0}/s",
        singles as f64 / t.elapsed().as_secs_f64()
    ));
    let (clients, per_client) = (16, 50);
    let t = Instant::now();
    std::thread::scope(|scope| {
        for c in 0..clients {
            scope.spawn(move || {
                for r in requests.iter().skip(1000 + c * per_client).take(per_client) {
                    let mut tx = store.begin_write().unwrap();
                    tx.write(r.clone()).unwrap();
                    tx.commit().unwrap();
                }
            });
        }
    });
    lines.push(format!(
        "{name}: single-write transactions, {clients} clients: {:.0}/s",
        (clients * per_client) as f64 / t.elapsed().as_secs_f64()
    ));
    lines.extend(search_figures(name, store));
    lines
}

fn search_figures(name: &str, store: &dyn Store) -> Vec<String> {
    let mut lines = Vec::new();
    for (ty, q) in SEARCHES {
        let req = search_request(ty, q);
        let reps = 20;
        let t = Instant::now();
        let mut matches = 0;
        for _ in 0..reps {
            let mut tx = store.begin_read().unwrap();
            matches = tx.search(&req).unwrap().matches.len();
        }
        lines.push(format!(
            "{name}: search {ty}?{q}: {:.2} ms/page ({matches} matches)",
            t.elapsed().as_secs_f64() * 1000.0 / reps as f64
        ));
    }
    lines
}

#[test]
#[ignore]
fn ingest_and_search_on_both_backends() {
    let copies = std::env::var("PHIP_BULK_COPIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let requests = load_sample(copies);
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path()).unwrap();
    let mut lines = measure("sqlite", &sqlite, &requests);
    if let Some(cluster) = phip_testkit::PgCluster::shared() {
        let url = cluster.fresh_database();
        let pg = PostgresStore::connect(&url).unwrap();
        lines.extend(measure("postgres", &pg, &requests));
        if std::env::var("PHIP_EXPLAIN").is_ok() {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.batch_execute("ANALYZE").unwrap();
            for (ty, q) in SEARCHES {
                let req = search_request(ty, q);
                println!("{}", pg.explain_search(&req).unwrap());
            }
            lines.extend(measure("postgres (after ANALYZE)", &pg, &requests[..0]));
        }
    }
    // The SQL side alone: index entries extracted beforehand and served by id.
    let pre: std::collections::HashMap<String, Vec<phip_fhir::search::IndexEntry>> = requests
        .iter()
        .map(|r| {
            let body = r.resource.as_ref().unwrap();
            (r.id.clone(), phip_fhir::search::index::extract(body))
        })
        .collect();
    let pre = std::sync::Arc::new(pre);
    let extractor: phip_store::sqlite::Extractor = std::sync::Arc::new(move |v: &Value| {
        pre.get(v["id"].as_str().unwrap_or_default())
            .cloned()
            .unwrap_or_default()
    });
    let dir2 = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open_with_extractor(dir2.path(), extractor.clone()).unwrap();
    lines.push(bulk_only("sqlite, pre-extracted", &sqlite, &requests));
    if let Some(cluster) = phip_testkit::PgCluster::shared() {
        let pg = PostgresStore::connect_with(&cluster.fresh_database(), 16, extractor).unwrap();
        lines.push(bulk_only("postgres, pre-extracted", &pg, &requests));
    }
    for l in lines {
        println!("{l}");
    }
}
