//! Export throughput and memory for ≥ 100k resources — a benchmark, not a test (ignored; it
//! asserts only correctness). Run with
//! `cargo test --release -p phip-bulk --test bench -- --ignored --nocapture`.
//! The Synthea fixture is copied `PHIP_BENCH_COPIES` times (default 15, 107,400 resources)
//! with fresh ids and references, loaded into SQLite (or, with `PHIP_BENCH_BACKEND=postgres`,
//! into a throwaway PostgreSQL cluster), then exported; the peak RSS (of phip's process, not
//! PostgreSQL's) is reset before the export so that it measures the export alone.

mod support;

use std::time::Instant;

use phip_bulk::{job, prepare, run_job, ExportConfig, ExportLevel, ExportRequest, RunToEnd};
use phip_engine::{Engine, EngineConfig};
use serde_json::Value;
use support::*;

/// Rewrites ids and literal references so that copy `k` is a separate population.
fn copy_of(resource: &Value, k: usize) -> Value {
    fn walk(value: &mut Value, k: usize) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get_mut("reference") {
                    if let Some((t, id)) = reference.split_once('/') {
                        if !id.contains('?') && !t.contains('?') {
                            *reference = format!("{t}/{id}-{k}");
                        }
                    }
                }
                for v in map.values_mut() {
                    walk(v, k);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| walk(v, k)),
            _ => {}
        }
    }
    let mut copy = resource.clone();
    walk(&mut copy, k);
    let id = format!("{}-{k}", resource["id"].as_str().unwrap_or_default());
    copy["id"] = Value::String(id);
    copy
}

fn status_kib(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[test]
#[ignore = "benchmark: run explicitly in release mode"]
fn export_100k_resources() {
    let copies: usize = std::env::var("PHIP_BENCH_COPIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let dir = tempfile::tempdir().expect("temp dir");
    let postgres = std::env::var("PHIP_BENCH_BACKEND").as_deref() == Ok("postgres");
    let cluster = if postgres {
        Some(phip_testkit::PgCluster::start_owned().expect("PostgreSQL (initdb, pg_ctl on PATH)"))
    } else {
        None
    };
    let config = match &cluster {
        Some(cluster) => phip_store::StoreConfig::Postgres {
            url: cluster.fresh_database(),
            pool_size: phip_store::postgres::DEFAULT_POOL_SIZE,
        },
        None => phip_store::StoreConfig::Sqlite {
            data_dir: dir.path().to_owned(),
        },
    };
    println!(
        "backend: {}",
        if postgres { "PostgreSQL" } else { "SQLite" }
    );
    let store = phip_store::open_store(&config).expect("store");
    let fixture = fixture_resources();
    let started = Instant::now();
    for k in 0..copies {
        let batch: Vec<Value> = fixture.iter().map(|r| copy_of(r, k)).collect();
        load(store.as_ref(), &batch);
    }
    let total = fixture.len() * copies;
    println!(
        "loaded {total} resources in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let engine = Engine::new(store, EngineConfig::default());
    drop(fixture);
    // Reset the peak RSS (Linux: "5" to clear_refs) so VmHWM covers the export only.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let rss_before = status_kib("VmRSS:").unwrap_or(0);
    let ctx = operator();
    let mut state = prepare(
        &engine,
        &ctx,
        ExportRequest::parse(ExportLevel::System, &[], false).expect("request"),
        "bench",
    )
    .expect("prepare");
    let export_dir = job::create(&dir.path().join("export"), &state).expect("job dir");
    let started = Instant::now();
    run_job(
        &engine,
        &export_dir,
        &mut state,
        &ExportConfig::default(),
        &RunToEnd,
    )
    .expect("export");
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(state.exported() as usize, total);
    let bytes: u64 = state
        .types
        .iter()
        .flat_map(|t| &t.parts)
        .map(|p| p.bytes)
        .sum();
    println!(
        "exported {total} resources ({:.0} MiB NDJSON) in {seconds:.2} s: {:.0} resources/s, {:.0} MiB/s",
        bytes as f64 / 1048576.0,
        total as f64 / seconds,
        bytes as f64 / 1048576.0 / seconds
    );
    println!(
        "RSS before export {:.1} MiB; peak during export (VmHWM{}) {:.1} MiB",
        rss_before as f64 / 1024.0,
        if reset {
            ", reset before"
        } else {
            ", not resettable: whole process"
        },
        status_kib("VmHWM:").unwrap_or(0) as f64 / 1024.0
    );
}
