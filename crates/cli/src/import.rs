//! `phip import`: bulk loading of NDJSON files and Bundles.
//!
//! NDJSON and non-transaction Bundles go through the store's bulk path (many resources per
//! database transaction); transaction and batch Bundles go through the engine so that their
//! references and conditional entries are honoured.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use phip_engine::{Engine, EngineConfig, RequestContext};
use phip_store::{Store, StoreConfig, WriteRequest};
use serde_json::Value;

/// Totals of an import.
#[derive(Debug, Default)]
struct Totals {
    imported: u64,
    rejected: u64,
}

/// Imports every file under `paths` into the store in `data_dir`.
pub fn run(config: &StoreConfig, paths: &[PathBuf], batch_size: usize) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = phip_store::open_store(config)
        .with_context(|| format!("opening the store ({})", config.describe()))?;
    let engine = phip_server::platform_engine(store.clone(), EngineConfig::default());
    let mut files = Vec::new();
    for path in paths {
        collect_files(path, &mut files)?;
    }
    files.sort();
    let total_bytes: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let progress = ProgressBar::new(total_bytes);
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut totals = Totals::default();
    for file in &files {
        progress.set_message(file.display().to_string());
        import_file(
            store.as_ref(),
            &engine,
            file,
            batch_size,
            &mut totals,
            &progress,
        )
        .with_context(|| format!("importing {}", file.display()))?;
        if let Ok(meta) = std::fs::metadata(file) {
            progress.inc(meta.len());
        }
    }
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "imported {} resources from {} files in {:.1} s ({:.0} resources/s); {} rejected",
        totals.imported,
        files.len(),
        seconds,
        totals.imported as f64 / seconds.max(1e-9),
        totals.rejected
    );
    Ok(())
}

fn collect_files(path: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if path.is_dir() {
        for entry in
            std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))?
        {
            collect_files(&entry?.path(), files)?;
        }
    } else {
        let name = path.to_string_lossy();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name.ends_with(".ndjson") || name.ends_with(".json") {
            files.push(path.to_path_buf());
        }
    }
    Ok(())
}

fn open(path: &Path) -> anyhow::Result<Box<dyn Read>> {
    let file = File::open(path)?;
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(flate2::read::GzDecoder::new(file)))
    } else {
        Ok(Box::new(file))
    }
}

/// Turns a resource into a write, or explains why it cannot be imported.
fn to_write(mut resource: Value) -> Result<WriteRequest, String> {
    let resource_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .ok_or("no resourceType")?
        .to_owned();
    if !phip_fhir::r4().is_resource_type(&resource_type) {
        return Err(format!("unknown resourceType {resource_type:?}"));
    }
    let id = match resource.get("id").and_then(Value::as_str) {
        Some(id) => id.to_owned(),
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            resource["id"] = Value::String(id.clone());
            id
        }
    };
    phip_fhir::validate::validate_resource(&resource).map_err(|outcome| outcome.to_string())?;
    Ok(WriteRequest {
        resource_type,
        id,
        resource: Some(resource),
        expected_version: None,
    })
}

/// Attempts before a write the database keeps refusing as busy is given up.
const ATTEMPTS: u32 = 6;

/// Runs `write`, again after a pause while it fails as `transient` (the database busy, a lock
/// held too long, a connection lost): a refused write has written nothing, so trying it again
/// is safe, and a server importing beside live traffic is busy at times. Other errors, and the
/// last transient one, are returned as they are.
fn retrying<T, E>(
    mut write: impl FnMut() -> Result<T, E>,
    transient: impl Fn(&E) -> bool,
    mut pause: impl FnMut(std::time::Duration),
) -> Result<T, E> {
    let mut wait = std::time::Duration::from_millis(200);
    for _ in 1..ATTEMPTS {
        match write() {
            Err(e) if transient(&e) => {
                pause(wait);
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
            other => return other,
        }
    }
    write()
}

/// A refusal of the engine that passes: 503 (busy, unavailable, timed out).
fn engine_transient(e: &phip_engine::FhirError) -> bool {
    e.status == 503
}

/// A store error that passes.
fn store_transient(e: &phip_store::StoreError) -> bool {
    matches!(
        e,
        phip_store::StoreError::Busy | phip_store::StoreError::Unavailable(_)
    )
}

fn flush(
    store: &dyn Store,
    batch: &mut Vec<WriteRequest>,
    totals: &mut Totals,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let batch = std::mem::take(batch);
    let written = retrying(
        || store.bulk_write(batch.clone()),
        store_transient,
        std::thread::sleep,
    )?;
    totals.imported += written.len() as u64;
    Ok(())
}

fn import_file(
    store: &dyn Store,
    engine: &Engine,
    path: &Path,
    batch_size: usize,
    totals: &mut Totals,
    progress: &ProgressBar,
) -> anyhow::Result<()> {
    let name = path.to_string_lossy();
    let ndjson = name
        .strip_suffix(".gz")
        .unwrap_or(&name)
        .ends_with(".ndjson");
    let mut batch = Vec::with_capacity(batch_size);
    let add = |resource: Value,
               origin: String,
               batch: &mut Vec<WriteRequest>,
               totals: &mut Totals|
     -> anyhow::Result<()> {
        match to_write(resource) {
            // Patients go through the engine, one by one, so that the patient index links
            // each to its person and checks its resident ID like any other write.
            Ok(write) if write.resource_type == "Patient" => {
                let ctx = RequestContext::new(
                    "http://localhost/fhir",
                    phip_engine::Principal::unrestricted("phip import"),
                );
                let body = write.resource.unwrap_or_default();
                let update = || engine.update(&ctx, "Patient", &write.id, body.clone(), None);
                match retrying(update, engine_transient, std::thread::sleep) {
                    Ok(_) => totals.imported += 1,
                    Err(e) => {
                        totals.rejected += 1;
                        progress.println(format!("rejected {origin}: {}", e.outcome));
                    }
                }
            }
            Ok(write) => {
                batch.push(write);
                if batch.len() >= batch_size {
                    flush(store, batch, totals)?;
                }
            }
            Err(reason) => {
                totals.rejected += 1;
                progress.println(format!("rejected {origin}: {reason}"));
            }
        }
        Ok(())
    };
    if ndjson {
        let reader = BufReader::new(open(path)?);
        for (number, line) in reader.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let origin = format!("{}:{}", path.display(), number + 1);
            match serde_json::from_str::<Value>(&line) {
                Ok(resource) => add(resource, origin, &mut batch, totals)?,
                Err(e) => {
                    totals.rejected += 1;
                    progress.println(format!("rejected {origin}: invalid JSON: {e}"));
                }
            }
        }
    } else {
        let mut text = String::new();
        open(path)?.read_to_string(&mut text)?;
        let value: Value = serde_json::from_str(&text).context("invalid JSON")?;
        let bundle_type = value.get("type").and_then(Value::as_str).unwrap_or("");
        if value.get("resourceType").and_then(Value::as_str) == Some("Bundle")
            && matches!(bundle_type, "transaction" | "batch")
        {
            let entries = value
                .get("entry")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ctx = RequestContext::new(
                "http://localhost/fhir",
                phip_engine::Principal::unrestricted("phip import"),
            );
            match retrying(
                || engine.process_bundle(&ctx, value.clone()),
                engine_transient,
                std::thread::sleep,
            ) {
                Ok(_) => totals.imported += entries as u64,
                Err(e) => {
                    totals.rejected += entries as u64;
                    progress.println(format!("rejected {}: {}", path.display(), e.outcome));
                }
            }
        } else if value.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
            let entries = value
                .get("entry")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (index, entry) in entries.into_iter().enumerate() {
                if let Some(resource) = entry.get("resource").cloned() {
                    add(
                        resource,
                        format!("{} entry {index}", path.display()),
                        &mut batch,
                        totals,
                    )?;
                }
            }
        } else {
            add(value, path.display().to_string(), &mut batch, totals)?;
        }
    }
    flush(store, &mut batch, totals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use phip_engine::FhirError;
    use std::time::Duration;

    fn busy() -> FhirError {
        FhirError::from(phip_store::StoreError::Busy)
    }

    #[test]
    fn transient_refusals_are_retried_with_growing_pauses() {
        let mut calls = 0;
        let mut pauses = Vec::new();
        let result = retrying(
            || {
                calls += 1;
                if calls < 4 {
                    Err(busy())
                } else {
                    Ok(calls)
                }
            },
            engine_transient,
            |d| pauses.push(d),
        );
        assert_eq!(result.ok(), Some(4));
        assert_eq!(pauses, [200, 400, 800].map(Duration::from_millis).to_vec());
    }

    #[test]
    fn other_refusals_and_the_last_transient_one_are_returned() {
        let mut calls = 0;
        let refused: Result<(), FhirError> = retrying(
            || {
                calls += 1;
                Err(FhirError::bad_request("not a resource"))
            },
            engine_transient,
            |_| panic!("a bad request is not retried"),
        );
        assert_eq!(refused.map_err(|e| e.status), Err(400));
        assert_eq!(calls, 1);

        let mut calls = 0;
        let mut slept = Duration::ZERO;
        let still_busy: Result<(), FhirError> = retrying(
            || {
                calls += 1;
                Err(busy())
            },
            engine_transient,
            |d| slept += d,
        );
        assert_eq!(still_busy.map_err(|e| e.status), Err(503));
        assert_eq!(calls, ATTEMPTS);
        assert_eq!(slept, Duration::from_millis(200 + 400 + 800 + 1600 + 3200));
    }

    #[test]
    fn busy_and_unavailable_stores_are_transient() {
        assert!(store_transient(&phip_store::StoreError::Busy));
        assert!(store_transient(&phip_store::StoreError::Unavailable(
            "restarting".into()
        )));
        assert!(!store_transient(&phip_store::StoreError::StorageFull));
    }
}
