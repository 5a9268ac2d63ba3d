//! `phip import`: bulk loading of NDJSON files and Bundles.
//!
//! NDJSON and non-transaction Bundles go through the store's bulk path (many resources per
//! database transaction); transaction and batch Bundles go through the engine so that their
//! references and conditional entries are honoured.
//!
//! Conditional references (`Practitioner?identifier=…`) are resolved as a transaction resolves
//! them, so they must find what they name already stored. A directory is therefore loaded with
//! the resources others point to first: Synthea's `hospitalInformation*` and
//! `practitionerInformation*` bundles and NDJSON files of shared types (`Organization`,
//! `Location`, `Practitioner`…), then the rest in name order. A transaction bundle still refused
//! with 412 (a conditional reference matching nothing) is tried once more after the whole input;
//! an NDJSON resource whose conditional reference matches nothing, or several, is rejected. At
//! the end the import reports every reference it could not resolve: conditional ones, and
//! literal `Type/id` references to resources that are not stored.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use phip_engine::{ConditionalCache, Engine, EngineConfig, Principal, RequestContext};
use phip_store::{Store, StoreConfig, WriteRequest};
use serde_json::Value;

/// Totals of an import.
#[derive(Debug, Default)]
struct Totals {
    imported: u64,
    rejected: u64,
}

/// Types whose resources other resources name by conditional reference: their NDJSON files
/// are loaded first.
const SHARED_TYPES: &[&str] = &[
    "Organization",
    "Location",
    "Practitioner",
    "PractitionerRole",
    "HealthcareService",
    "Endpoint",
    "Medication",
    "Substance",
];

/// Name prefixes of Synthea's bundles of shared resources.
const SHARED_BUNDLES: &[&str] = &["hospitalInformation", "practitionerInformation"];

/// Distinct literal reference targets remembered for the final check; beyond this the check
/// covers the first ones only (and says so), so that memory stays bounded on huge imports.
const MAX_TRACKED_TARGETS: usize = 2_000_000;

/// How many unresolved references the report names.
const EXAMPLES: usize = 10;

/// Loading order: shared resources first (0), everything else after (1).
fn load_rank(path: &Path) -> u8 {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let shared_bundle = SHARED_BUNDLES.iter().any(|p| name.starts_with(p));
    let stem = name.split('.').next().unwrap_or("");
    let shared_ndjson = name.contains(".ndjson") && SHARED_TYPES.contains(&stem);
    if shared_bundle || shared_ndjson {
        0
    } else {
        1
    }
}

/// The input files under `paths`, in loading order. A path that does not exist, or input with
/// no importable file at all, is an error.
fn input_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if !path.exists() {
            anyhow::bail!("{}: no such file or directory", path.display());
        }
        let before = files.len();
        collect_files(path, &mut files)?;
        if files.len() == before {
            anyhow::bail!(
                "{}: no .ndjson or .json file (optionally .gz) to import",
                path.display()
            );
        }
    }
    files.sort_by(|a, b| (load_rank(a), a).cmp(&(load_rank(b), b)));
    files.dedup();
    Ok(files)
}

/// What the import could not resolve.
#[derive(Debug, Default)]
struct Unresolved {
    /// Conditional references that matched nothing or several resources (their resource or
    /// bundle was rejected), with why and how often.
    conditional: BTreeMap<String, u64>,
    /// Distinct literal `Type/id` targets named by imported resources.
    targets: HashSet<String>,
    /// Whether more targets were named than are tracked.
    overflow: bool,
}

impl Unresolved {
    /// Remembers the literal `Type/id` references of `resource`.
    fn note_targets(&mut self, resource: &Value) {
        let mut references = Vec::new();
        collect_references(resource, &mut references);
        for reference in references {
            if let Some(target) = literal_target(reference) {
                if self.targets.len() >= MAX_TRACKED_TARGETS && !self.targets.contains(target) {
                    self.overflow = true;
                    continue;
                }
                self.targets.insert(target.to_owned());
            }
        }
    }

    /// Remembers the conditional references an OperationOutcome names as unresolved.
    fn note_refusal(&mut self, error: &phip_engine::FhirError) {
        if error.status != 412 {
            return;
        }
        for issue in &error.outcome.issues {
            if let Some(unresolved) = quoted_conditional_reference(&issue.diagnostics) {
                *self.conditional.entry(unresolved).or_default() += 1;
            }
        }
    }

    /// Prints the report, checking the literal targets against the store.
    fn report(&self, store: &dyn Store) -> anyhow::Result<()> {
        let mut missing: Vec<&String> = Vec::new();
        let mut tx = store.begin_read()?;
        for target in &self.targets {
            let Some((ty, id)) = target.split_once('/') else {
                continue;
            };
            let stored = tx.read(ty, id)?;
            if stored.and_then(|s| s.resource).is_none() {
                missing.push(target);
            }
        }
        drop(tx);
        missing.sort();
        if self.conditional.is_empty() && missing.is_empty() {
            println!(
                "references: all {} distinct literal targets are stored; no conditional reference left unresolved{}",
                self.targets.len(),
                if self.overflow {
                    format!(" (only the first {MAX_TRACKED_TARGETS} targets were checked)")
                } else {
                    String::new()
                }
            );
            return Ok(());
        }
        if !self.conditional.is_empty() {
            let total: u64 = self.conditional.values().sum();
            println!(
                "unresolved conditional references: {} distinct, {total} uses (their resources or bundles were rejected):",
                self.conditional.len()
            );
            for (reference, count) in self.conditional.iter().take(EXAMPLES) {
                println!("  {reference} ({count}x)");
            }
        }
        if !missing.is_empty() {
            println!(
                "unresolved references: {} referenced resources are not stored:",
                missing.len()
            );
            for target in missing.iter().take(EXAMPLES) {
                println!("  {target}");
            }
        }
        Ok(())
    }
}

/// Every `reference` string of the resource's `Reference` elements.
fn collect_references<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                match (key.as_str(), child) {
                    ("reference", Value::String(text)) => out.push(text),
                    _ => collect_references(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_references(item, out)),
        _ => {}
    }
}

/// The `Type/id` a relative literal reference names (`Type/id` or `Type/id/_history/v`); not
/// contained, placeholder, conditional or absolute references.
fn literal_target(reference: &str) -> Option<&str> {
    if reference.contains(['?', '#', ':']) {
        return None;
    }
    let mut parts = reference.splitn(3, '/');
    let (ty, id) = (parts.next()?, parts.next()?);
    let valid = phip_fhir::r4().is_resource_type(ty) && !id.is_empty();
    let rest = parts.next();
    let versioned = rest.is_none_or(|r| r.starts_with("_history/"));
    (valid && versioned).then(|| &reference[..ty.len() + 1 + id.len()])
}

/// The conditional reference a refusal names and what is wrong with it (`the conditional
/// reference "Type?…" matches no resource` → `Type?… matches no resource`).
fn quoted_conditional_reference(diagnostics: &str) -> Option<String> {
    let rest = diagnostics.split("conditional reference \"").nth(1)?;
    let (reference, why) = rest.split_once('"')?;
    Some(format!("{reference}{why}"))
}

/// Imports every file under `paths` into the store in `data_dir`.
pub fn run(config: &StoreConfig, paths: &[PathBuf], batch_size: usize) -> anyhow::Result<()> {
    // Before opening (and perhaps creating) the store: a mistyped path imports nothing.
    let files = input_files(paths)?;
    let store: Arc<dyn Store> = phip_store::open_store(config)
        .with_context(|| format!("opening the store ({})", config.describe()))?;
    let engine = phip_server::platform_engine(store.clone(), EngineConfig::default());
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
    let mut importer = Importer {
        store: store.as_ref(),
        engine: &engine,
        principal: Principal::unrestricted("phip import"),
        batch_size,
        batch: Vec::with_capacity(batch_size),
        totals: Totals::default(),
        progress: &progress,
        cache: ConditionalCache::new(),
        unresolved: Unresolved::default(),
        deferred: Vec::new(),
        last_pass: false,
    };
    for file in &files {
        progress.set_message(file.display().to_string());
        importer
            .import_file(file)
            .with_context(|| format!("importing {}", file.display()))?;
        if let Ok(meta) = std::fs::metadata(file) {
            progress.inc(meta.len());
        }
    }
    // Bundles whose conditional references found nothing yet: once more, now that the whole
    // input is loaded.
    importer.last_pass = true;
    for file in std::mem::take(&mut importer.deferred) {
        progress.set_message(format!("{} (again)", file.display()));
        importer
            .import_file(&file)
            .with_context(|| format!("importing {}", file.display()))?;
    }
    progress.finish_and_clear();
    let totals = &importer.totals;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "imported {} resources from {} files in {:.1} s ({:.0} resources/s); {} rejected",
        totals.imported,
        files.len(),
        seconds,
        totals.imported as f64 / seconds.max(1e-9),
        totals.rejected
    );
    importer.unresolved.report(store.as_ref())
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

/// One import run: where it writes, what it has written, and what it could not resolve.
struct Importer<'a> {
    store: &'a dyn Store,
    engine: &'a Engine,
    principal: Principal,
    batch_size: usize,
    /// Resources waiting for the next bulk write.
    batch: Vec<WriteRequest>,
    totals: Totals,
    progress: &'a ProgressBar,
    cache: ConditionalCache,
    unresolved: Unresolved,
    /// Transaction bundles refused with 412, for the pass after the whole input.
    deferred: Vec<PathBuf>,
    /// Whether this is that pass (a refusal is then final).
    last_pass: bool,
}

impl Importer<'_> {
    fn context(&self) -> RequestContext {
        RequestContext::new("http://localhost/fhir", self.principal.clone())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let written = retrying(
            || self.store.bulk_write(batch.clone()),
            store_transient,
            std::thread::sleep,
        )?;
        self.totals.imported += written.len() as u64;
        Ok(())
    }

    fn reject(&mut self, origin: &str, reason: impl std::fmt::Display) {
        self.totals.rejected += 1;
        self.progress
            .println(format!("rejected {origin}: {reason}"));
    }

    /// Resolves the resource's conditional references; when one finds nothing, the resources
    /// still waiting in the batch are written first (it may name one of them) and it is tried
    /// again.
    fn resolve(
        &mut self,
        resource: &mut Value,
    ) -> anyhow::Result<Result<(), phip_engine::FhirError>> {
        match self
            .engine
            .resolve_conditional_references(&self.principal, resource, &mut self.cache)
        {
            Err(e) if e.status == 412 && !self.batch.is_empty() => {
                // What was resolved before the failure stays resolved; the rest is tried again.
                self.flush()?;
                Ok(self.engine.resolve_conditional_references(
                    &self.principal,
                    resource,
                    &mut self.cache,
                ))
            }
            other => Ok(other),
        }
    }

    /// Imports one resource of an NDJSON file or a non-transaction Bundle.
    fn add(&mut self, mut resource: Value, origin: String) -> anyhow::Result<()> {
        if let Err(e) = self.resolve(&mut resource)? {
            self.unresolved.note_refusal(&e);
            self.reject(&origin, e.outcome);
            return Ok(());
        }
        self.unresolved.note_targets(&resource);
        match to_write(resource) {
            // Patients go through the engine, one by one, so that the patient index links
            // each to its person and checks its resident ID like any other write.
            Ok(write) if write.resource_type == "Patient" => {
                let ctx = self.context();
                let body = write.resource.unwrap_or_default();
                let update = || {
                    self.engine
                        .update(&ctx, "Patient", &write.id, body.clone(), None)
                };
                match retrying(update, engine_transient, std::thread::sleep) {
                    Ok(_) => self.totals.imported += 1,
                    Err(e) => self.reject(&origin, e.outcome),
                }
            }
            Ok(write) => {
                self.batch.push(write);
                if self.batch.len() >= self.batch_size {
                    self.flush()?;
                }
            }
            Err(reason) => self.reject(&origin, reason),
        }
        Ok(())
    }

    /// A transaction or batch Bundle, through the engine.
    fn bundle(&mut self, path: &Path, value: Value, transaction: bool) -> anyhow::Result<()> {
        let entries = value
            .get("entry")
            .and_then(Value::as_array)
            .map_or(0, Vec::len) as u64;
        let mut ctx = self.context();
        // The stored resources come back, references rewritten: those are what the final
        // check looks at.
        ctx.return_preference = Some(phip_engine::ReturnPreference::Representation);
        let reply = retrying(
            || self.engine.process_bundle(&ctx, value.clone()),
            engine_transient,
            std::thread::sleep,
        );
        match reply {
            Ok(response) if transaction => {
                self.totals.imported += entries;
                if let Some(body) = &response.body {
                    for resource in bundle_resources(body) {
                        self.unresolved.note_targets(resource);
                    }
                }
            }
            Ok(response) => {
                // A batch: each entry succeeded or failed on its own.
                let results = response
                    .body
                    .as_ref()
                    .and_then(|b| b.get("entry"))
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for (index, result) in results.iter().enumerate() {
                    let status = result["response"]["status"].as_str().unwrap_or("");
                    if status.starts_with('2') {
                        self.totals.imported += 1;
                        if let Some(resource) = result.get("resource") {
                            self.unresolved.note_targets(resource);
                        }
                    } else {
                        self.reject(
                            &format!("{} entry {index}", path.display()),
                            format!("{status}: {}", result["response"]["outcome"]),
                        );
                    }
                }
            }
            Err(e) if e.status == 412 && !self.last_pass => {
                // Perhaps a bundle of shared resources later in the input holds what it names.
                self.deferred.push(path.to_path_buf());
            }
            Err(e) => {
                self.unresolved.note_refusal(&e);
                self.totals.rejected += entries;
                self.progress
                    .println(format!("rejected {}: {}", path.display(), e.outcome));
            }
        }
        Ok(())
    }

    fn import_file(&mut self, path: &Path) -> anyhow::Result<()> {
        let name = path.to_string_lossy();
        let ndjson = name
            .strip_suffix(".gz")
            .unwrap_or(&name)
            .ends_with(".ndjson");
        if ndjson {
            let reader = BufReader::new(open(path)?);
            for (number, line) in reader.lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let origin = format!("{}:{}", path.display(), number + 1);
                match serde_json::from_str::<Value>(&line) {
                    Ok(resource) => self.add(resource, origin)?,
                    Err(e) => self.reject(&origin, format!("invalid JSON: {e}")),
                }
            }
        } else {
            let mut text = String::new();
            open(path)?.read_to_string(&mut text)?;
            let value: Value = serde_json::from_str(&text).context("invalid JSON")?;
            drop(text);
            let is_bundle = value.get("resourceType").and_then(Value::as_str) == Some("Bundle");
            let bundle_type = value.get("type").and_then(Value::as_str).unwrap_or("");
            if is_bundle && matches!(bundle_type, "transaction" | "batch") {
                let transaction = bundle_type == "transaction";
                self.bundle(path, value, transaction)?;
            } else if is_bundle {
                let entries = value
                    .get("entry")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for (index, entry) in entries.into_iter().enumerate() {
                    if let Some(resource) = entry.get("resource").cloned() {
                        self.add(resource, format!("{} entry {index}", path.display()))?;
                    }
                }
            } else {
                self.add(value, path.display().to_string())?;
            }
        }
        // Written before the next file, whose conditional references may name these.
        self.flush()
    }
}

/// The resources of a Bundle's entries.
fn bundle_resources(bundle: &Value) -> impl Iterator<Item = &Value> {
    bundle
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.get("resource"))
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
    fn shared_resources_load_first_then_the_rest_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = [
            "An125_Champlin946_7bc.json",
            "Encounter.000.ndjson.gz",
            "Organization.000.ndjson.gz",
            "Practitioner.ndjson",
            "hospitalInformation1722967917560.json",
            "practitionerInformation1722967917560.json.gz",
            "notes.txt",
        ];
        for name in names {
            std::fs::write(dir.path().join(name), "{}").expect("write");
        }
        let files = input_files(&[dir.path().to_path_buf()]).expect("files");
        let order: Vec<String> = files
            .iter()
            .map(|f| f.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            order,
            [
                "Organization.000.ndjson.gz",
                "Practitioner.ndjson",
                "hospitalInformation1722967917560.json",
                "practitionerInformation1722967917560.json.gz",
                "An125_Champlin946_7bc.json",
                "Encounter.000.ndjson.gz",
            ]
        );
    }

    #[test]
    fn missing_paths_and_empty_input_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("no-such-dir");
        let error = input_files(std::slice::from_ref(&missing)).expect_err("missing");
        assert!(
            error.to_string().contains("no such file or directory")
                && error.to_string().contains("no-such-dir"),
            "{error}"
        );
        std::fs::write(dir.path().join("readme.txt"), "not FHIR").expect("write");
        let error = input_files(&[dir.path().to_path_buf()]).expect_err("empty");
        assert!(
            error.to_string().contains("no .ndjson or .json file"),
            "{error}"
        );
    }

    #[test]
    fn literal_targets_are_relative_type_and_id() {
        assert_eq!(literal_target("Patient/p1"), Some("Patient/p1"));
        assert_eq!(
            literal_target("Encounter/e1/_history/2"),
            Some("Encounter/e1")
        );
        for other in [
            "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|1",
            "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
            "http://example.org/fhir/Patient/p1",
            "#contained",
            "Patient",
            "Patient/",
            "Nothing/p1",
            "Patient/p1/extra",
        ] {
            assert_eq!(literal_target(other), None, "{other}");
        }
    }

    #[test]
    fn refusals_name_their_conditional_reference() {
        let refusal = FhirError::new(
            412,
            phip_fhir::IssueType::NotFound,
            "Bundle.entry[3]: the conditional reference \"Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9\" matches no resource",
        );
        let mut unresolved = Unresolved::default();
        unresolved.note_refusal(&refusal);
        unresolved.note_refusal(&refusal);
        unresolved.note_refusal(&FhirError::bad_request(
            "the conditional reference \"X?y=1\" …",
        ));
        assert_eq!(
            unresolved.conditional.into_iter().collect::<Vec<_>>(),
            [(
                "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9 matches no resource"
                    .to_owned(),
                2
            )]
        );
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
