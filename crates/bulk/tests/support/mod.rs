//! Shared helpers of the export tests: a SQLite engine loaded with the committed Synthea
//! fixture, and a reader that checks every exported file line by line.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use phip_bulk::{ExportStatus, Exporter, JobState};
use phip_engine::{Engine, EngineConfig, Principal, RequestContext};
use phip_store::{Store, WriteRequest};
use serde_json::Value;

/// The committed Synthea sample (10 patients, 13 types, ~7,000 resources).
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/synthea-10-patients")
}

/// Every resource of the fixture.
pub fn fixture_resources() -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".ndjson.gz"))
        .collect();
    files.sort();
    let mut resources = Vec::new();
    for file in files {
        let reader = BufReader::new(flate2::read::GzDecoder::new(
            std::fs::File::open(&file).expect("open"),
        ));
        for line in reader.lines() {
            let line = line.expect("line");
            if !line.trim().is_empty() {
                resources.push(serde_json::from_str(&line).expect("fixture JSON"));
            }
        }
    }
    resources
}

/// Ids per type of a list of resources.
pub fn ids_by_type<'a>(
    resources: impl IntoIterator<Item = &'a Value>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in resources {
        map.entry(r["resourceType"].as_str().expect("type").to_owned())
            .or_default()
            .insert(r["id"].as_str().expect("id").to_owned());
    }
    map
}

/// Writes resources to the store in batches.
pub fn load(store: &dyn Store, resources: &[Value]) {
    for chunk in resources.chunks(1000) {
        let requests = chunk
            .iter()
            .map(|r| WriteRequest {
                resource_type: r["resourceType"].as_str().expect("type").to_owned(),
                id: r["id"].as_str().expect("id").to_owned(),
                resource: Some(r.clone()),
                expected_version: None,
            })
            .collect();
        store.bulk_write(requests).expect("bulk write");
    }
}

/// A data directory with a SQLite store holding the Synthea fixture.
pub struct Loaded {
    pub dir: tempfile::TempDir,
    pub engine: Arc<Engine>,
    pub resources: Vec<Value>,
}

pub fn loaded() -> Loaded {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = phip_store::open_store(&phip_store::StoreConfig::Sqlite {
        data_dir: dir.path().to_owned(),
    })
    .expect("store");
    let resources = fixture_resources();
    load(store.as_ref(), &resources);
    let engine = Arc::new(Engine::new(store, EngineConfig::default()));
    Loaded {
        dir,
        engine,
        resources,
    }
}

/// A context acting for `principal`.
pub fn ctx(principal: Principal) -> RequestContext {
    RequestContext::new("http://phip.test/fhir", principal)
}

/// An unrestricted operator.
pub fn operator() -> RequestContext {
    ctx(Principal::unrestricted("operator"))
}

/// Reads every part file of a finished job: checks that each file's length is the recorded
/// one, each line parses and has the file's type, and returns the resources per type.
pub fn read_export(job_dir: &Path, state: &JobState) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for progress in &state.types {
        for part in &progress.parts {
            let path = job_dir.join(&part.file);
            let text = std::fs::read_to_string(&path).expect("part file");
            assert_eq!(text.len() as u64, part.bytes, "{}", part.file);
            let mut lines = 0;
            for line in text.lines() {
                let value: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{}: unparsable line {line:?}: {e}", part.file));
                assert_eq!(value["resourceType"], progress.resource_type.as_str());
                out.entry(progress.resource_type.clone())
                    .or_default()
                    .push(value);
                lines += 1;
            }
            assert_eq!(lines, part.count, "{}", part.file);
        }
    }
    out
}

/// Ids per type of an export, failing on any duplicate.
pub fn exported_ids(export: &BTreeMap<String, Vec<Value>>) -> BTreeMap<String, BTreeSet<String>> {
    let mut map = BTreeMap::new();
    for (t, resources) in export {
        let ids: BTreeSet<String> = resources
            .iter()
            .map(|r| r["id"].as_str().expect("id").to_owned())
            .collect();
        assert_eq!(ids.len(), resources.len(), "duplicate lines of {t}");
        map.insert(t.clone(), ids);
    }
    map
}

/// Polls a job until it completes (a generous bound only keeps a broken build from hanging).
pub fn wait_completed(exporter: &Exporter, principal: &Principal, id: &str) -> JobState {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        match exporter.status(principal, id).expect("status") {
            ExportStatus::Completed(state) => return *state,
            ExportStatus::Failed(error) => panic!("export failed: {error}"),
            ExportStatus::InProgress(_) => {
                assert!(Instant::now() < deadline, "export did not finish");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Query pairs from a list of string pairs.
pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}
