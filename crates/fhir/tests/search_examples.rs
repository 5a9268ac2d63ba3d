//! Extraction over the official R4 examples and Synthea data from `../shared` (skipped when
//! that folder is absent): nothing panics, and every value the expressions find is indexed
//! unless it is of a kind that has nothing to index.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use phip_fhir::search::index::{convert_item, extract};
use phip_fhir::search::ParamType;
use serde_json::Value;

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")
}

/// The JSON files of a `.tgz` (a minimal ustar reader; the examples need nothing more).
fn tgz_json(path: &PathBuf) -> Vec<(String, Value)> {
    let file = std::fs::File::open(path).unwrap();
    let mut data = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut data)
        .unwrap();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 512 <= data.len() {
        let header = &data[pos..pos + 512];
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let field = |range: std::ops::Range<usize>| {
            String::from_utf8_lossy(&header[range])
                .trim_end_matches('\0')
                .trim()
                .to_string()
        };
        let name = format!("{}{}", field(345..500), field(0..100));
        let size = usize::from_str_radix(&field(124..136), 8).unwrap_or(0);
        let body = &data[pos + 512..pos + 512 + size];
        if name.ends_with(".json") && header[156] != b'5' {
            if let Ok(v) = serde_json::from_slice::<Value>(body) {
                out.push((name, v));
            }
        }
        pos += 512 + size.div_ceil(512) * 512;
    }
    out
}

/// Items that legitimately index nothing (contained references, SampledData, a Reference with
/// only a display, blank strings, …).
fn nothing_to_index(param_type: ParamType, item: &Value, type_name: &str) -> bool {
    if item.as_str().is_some_and(|s| s.trim().is_empty()) {
        return true;
    }
    match (param_type, type_name) {
        // `near` needs a geo index, which the index vocabulary does not have.
        (ParamType::Special, _) => true,
        (_, "SampledData") => true,
        // Free text where a date may be (`"daily"`, `"January 2012"`).
        (ParamType::Date, "string") => true,
        (ParamType::Reference, _) => {
            let r = item.get("reference").and_then(Value::as_str);
            item.get("resourceType").is_some()
                || r.is_some_and(|r| r.starts_with('#') || r.contains('?'))
                || (r.is_none() && item.get("identifier").is_none())
        }
        (ParamType::Quantity, _) => {
            item.get("value").is_none() && item.get("low").is_none() && item.get("high").is_none()
        }
        (ParamType::Token, "Identifier" | "Coding" | "CodeableConcept" | "ContactPoint") => true,
        (ParamType::String, "HumanName" | "Address") => true,
        (ParamType::Date, "Period" | "Timing") => true,
        _ => false,
    }
}

fn check(resources: &[Value]) -> (usize, BTreeMap<String, usize>) {
    let defs = phip_fhir::r4();
    let started = std::time::Instant::now();
    let total: usize = resources.iter().map(|r| extract(r).len()).sum();
    eprintln!(
        "extract: {} resources in {:?}",
        resources.len(),
        started.elapsed()
    );
    let mut gaps: BTreeMap<String, usize> = BTreeMap::new();
    for resource in resources {
        let Some(rt) = resource.get("resourceType").and_then(Value::as_str) else {
            continue;
        };
        for def in defs.search_params(rt) {
            let (Some(expr), false) = (&def.compiled, def.param_type == ParamType::Composite)
            else {
                continue;
            };
            let Ok(items) = expr.evaluate(resource, defs.model()) else {
                *gaps
                    .entry(format!("{rt}.{} evaluation error", def.code))
                    .or_default() += 1;
                continue;
            };
            for item in &items {
                let mut out = Vec::new();
                convert_item(def.param_type, item, &mut out);
                let type_name = item.type_name.as_deref().unwrap_or("?");
                if out.is_empty() && !nothing_to_index(def.param_type, &item.value, type_name) {
                    let key = format!(
                        "{:?} {type_name} {rt}.{} = {}",
                        def.param_type, def.code, item.value
                    );
                    *gaps.entry(key.chars().take(200).collect()).or_default() += 1;
                }
            }
        }
    }
    (total, gaps)
}

#[test]
fn official_examples() {
    let path = shared().join("fhir-r4-examples/hl7.fhir.r4.examples-4.0.1.tgz");
    if !path.exists() {
        eprintln!("skipped: {} not found", path.display());
        return;
    }
    let resources: Vec<Value> = tgz_json(&path)
        .into_iter()
        .map(|(_, v)| v)
        .filter(|v| v.get("resourceType").is_some())
        .collect();
    assert!(resources.len() > 5000, "{}", resources.len());
    let started = std::time::Instant::now();
    let (total, gaps) = check(&resources);
    eprintln!(
        "{} resources, {total} entries, {:?}",
        resources.len(),
        started.elapsed()
    );
    for (gap, n) in &gaps {
        eprintln!("{n:5} {gap}");
    }
    assert!(total > 100_000, "{total}");
    assert!(
        gaps.is_empty(),
        "{} kinds of values not indexed",
        gaps.len()
    );
}

#[test]
fn synthea() {
    let dir = shared().join("synthea/10-patients");
    let Ok(files) = std::fs::read_dir(&dir) else {
        eprintln!("skipped: {} not found", dir.display());
        return;
    };
    let mut resources = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        resources.extend(
            // The first few hundred of each type cover the shapes Synthea produces.
            text.lines()
                .take(300)
                .filter_map(|l| serde_json::from_str::<Value>(l).ok()),
        );
    }
    let started = std::time::Instant::now();
    let (total, gaps) = check(&resources);
    eprintln!(
        "{} resources, {total} entries, {:?}",
        resources.len(),
        started.elapsed()
    );
    for (gap, n) in &gaps {
        eprintln!("{n:5} {gap}");
    }
    assert!(total > resources.len() * 5, "{total}");
    assert!(
        gaps.is_empty(),
        "{} kinds of values not indexed",
        gaps.len()
    );
}
