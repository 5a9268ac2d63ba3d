//! Bulk-load throughput on the Synthea sample (ignored by default; run with
//! `cargo test --release -p phip-store --test sqlite_bulk -- --ignored --nocapture`).

use std::path::Path;
use std::time::Instant;

use phip_store::sqlite::SqliteStore;
use phip_store::{PageCursor, SearchRequest, Store, WriteRequest};
use serde_json::Value;

const SAMPLE: &str = "../../../shared/data/synthea/10-patients";

fn load_sample(copies: usize) -> Vec<WriteRequest> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(SAMPLE);
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
        .collect();
    files.sort();
    for copy in 0..copies {
        for f in &files {
            for line in std::fs::read_to_string(f).unwrap().lines() {
                let mut v: Value = serde_json::from_str(line).unwrap();
                let ty = v["resourceType"].as_str().unwrap().to_owned();
                // Copies get new ids; their references point at the first copy.
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

#[test]
#[ignore]
fn bulk_load_throughput() {
    let copies = std::env::var("PHIP_BULK_COPIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let requests = load_sample(copies);
    let n = requests.len();

    let t = Instant::now();
    let mut index_rows = 0;
    for r in &requests {
        index_rows += phip_fhir::search::index::extract(r.resource.as_ref().unwrap()).len();
    }
    let extract_s = t.elapsed().as_secs_f64();

    let dir = tempfile::tempdir().unwrap();
    let dir_path =
        std::env::var("PHIP_BULK_DIR").map_or_else(|_| dir.path().to_owned(), Into::into);
    let store = SqliteStore::open(&dir_path).unwrap();
    let t = Instant::now();
    for batch in requests.chunks(1000) {
        store.bulk_write(batch.to_vec()).unwrap();
    }
    let total_s = t.elapsed().as_secs_f64();
    let db_mb = std::fs::metadata(store.path())
        .map(|m| m.len())
        .unwrap_or(0) as f64
        / 1e6;
    println!(
        "bulk: {n} resources, {index_rows} index entries; extraction alone {:.0} res/s \
         (single thread); bulk_write {:.0} res/s ({total_s:.2} s); db {db_mb:.1} MB",
        n as f64 / extract_s,
        n as f64 / total_s
    );

    // SQL alone: entries extracted beforehand, served by id.
    let pre: std::collections::HashMap<String, Vec<phip_fhir::search::IndexEntry>> = requests
        .iter()
        .map(|r| {
            let body = r.resource.as_ref().unwrap();
            (r.id.clone(), phip_fhir::search::index::extract(body))
        })
        .collect();
    let pre = std::sync::Arc::new(pre);
    let dir3 = tempfile::tempdir().unwrap();
    let sql_only = SqliteStore::open_with_extractor(
        dir3.path(),
        std::sync::Arc::new(move |v: &Value| {
            pre.get(v["id"].as_str().unwrap_or_default())
                .cloned()
                .unwrap_or_default()
        }),
    )
    .unwrap();
    let t = Instant::now();
    for batch in requests.chunks(1000) {
        sql_only.bulk_write(batch.to_vec()).unwrap();
    }
    println!(
        "bulk_write with pre-extracted entries: {:.0} res/s",
        n as f64 / t.elapsed().as_secs_f64()
    );
    if std::env::var("PHIP_BULK_ONLY").is_ok() {
        return;
    }
    // The same without index rows: the cost of versions and bodies alone.
    let dir2 = tempfile::tempdir().unwrap();
    let bare =
        SqliteStore::open_with_extractor(dir2.path(), std::sync::Arc::new(|_| Vec::new())).unwrap();
    let t = Instant::now();
    for batch in requests.chunks(1000) {
        bare.bulk_write(batch.to_vec()).unwrap();
    }
    println!(
        "bulk_write without index rows: {:.0} res/s",
        n as f64 / t.elapsed().as_secs_f64()
    );

    // Single-resource transactions (fsync each).
    let t = Instant::now();
    let singles = 200;
    for r in requests.iter().take(singles) {
        let mut tx = store.begin_write().unwrap();
        tx.write(r.clone()).unwrap();
        tx.commit().unwrap();
    }
    println!(
        "single-write transactions, one client: {:.0}/s",
        singles as f64 / t.elapsed().as_secs_f64()
    );
    // The same from 16 concurrent clients: commit groups share the WAL syncs.
    let clients = 16;
    let per_client = 50;
    let (groups0, writes0) = store.commit_stats();
    let t = Instant::now();
    std::thread::scope(|scope| {
        for c in 0..clients {
            let store = &store;
            let requests = &requests;
            scope.spawn(move || {
                for r in requests.iter().skip(1000 + c * per_client).take(per_client) {
                    let mut tx = store.begin_write().unwrap();
                    tx.write(r.clone()).unwrap();
                    tx.commit().unwrap();
                }
            });
        }
    });
    let (groups1, writes1) = store.commit_stats();
    println!(
        "single-write transactions, {clients} clients: {:.0}/s ({:.1} commits per WAL sync)",
        (clients * per_client) as f64 / t.elapsed().as_secs_f64(),
        (writes1 - writes0) as f64 / (groups1 - groups0).max(1) as f64
    );

    // A few searches on the loaded data.
    for (ty, q) in [
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
        (
            "Condition",
            "code:not=http://snomed.info/sct|44054006&onset-date:missing=true",
        ),
        (
            "Procedure",
            "subject:Patient.birthdate=lt1960&code=http://snomed.info/sct|430193006",
        ),
    ] {
        let params: Vec<(String, String)> = q
            .split('&')
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let parsed = phip_fhir::search::query::parse(Some(ty), &params, true).unwrap();
        let req = SearchRequest {
            query: parsed.query,
            cursor: PageCursor::First,
            page_size: 20,
            access: phip_store::Access::Server,
        };
        if std::env::var("PHIP_EXPLAIN").is_ok() {
            println!("{}", store.explain_search(&req).unwrap());
        }
        let t = Instant::now();
        let reps = 20;
        let mut page = None;
        for _ in 0..reps {
            let mut tx = store.begin_read().unwrap();
            page = Some(tx.search(&req).unwrap());
        }
        let page = page.unwrap();
        println!(
            "search {ty}?{q}: {:.2} ms/page ({} matches, {} included, total {:?})",
            t.elapsed().as_secs_f64() * 1000.0 / reps as f64,
            page.matches.len(),
            page.included.len(),
            page.total
        );
    }
}
