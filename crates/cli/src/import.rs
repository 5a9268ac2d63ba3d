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

fn flush(
    store: &dyn Store,
    batch: &mut Vec<WriteRequest>,
    totals: &mut Totals,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let written = store.bulk_write(std::mem::take(batch))?;
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
                match engine.update(&ctx, "Patient", &write.id, body, None) {
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
            match engine.process_bundle(&ctx, value) {
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
