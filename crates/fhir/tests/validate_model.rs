//! The definitions as the FHIRPath evaluator's model: every search-parameter expression, as
//! narrowed to one resource type, evaluates without error on every official example of that
//! type, and gives the same items as the whole shared expression (up to duplicates: a union
//! removes them, a lone branch does not).

use std::io::Read;

use phip_fhir::r4;
use serde_json::Value;

fn examples() -> Vec<(String, Value)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/hl7.fhir.r4.examples-4.0.1.tgz"
    );
    let file = std::fs::File::open(path).expect("examples package present");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = Vec::new();
    for entry in archive.entries().expect("readable tar") {
        let mut entry = entry.expect("readable entry");
        let name = entry
            .path()
            .expect("entry path")
            .to_string_lossy()
            .into_owned();
        if !name.ends_with(".json")
            || name.ends_with("package.json")
            || name.ends_with(".index.json")
        {
            continue;
        }
        let mut text = String::new();
        entry.read_to_string(&mut text).expect("UTF-8 JSON");
        let value: Value = serde_json::from_str(&text).expect("JSON");
        if value.get("resourceType").and_then(Value::as_str).is_some() {
            out.push((name, value));
        }
    }
    out
}

/// The values of a result, without repeats, in first-seen order (as a FHIRPath union).
fn distinct<'v>(items: &'v [phip_fhirpath::Item<'_>]) -> Vec<&'v Value> {
    let mut out: Vec<&Value> = Vec::new();
    for item in items {
        if !out.contains(&item.value.as_ref()) {
            out.push(item.value.as_ref());
        }
    }
    out
}

#[test]
fn narrowed_expressions_match_whole_ones_on_examples() {
    let defs = r4();
    assert!(
        defs.parse_failures().is_empty(),
        "{:#?}",
        defs.parse_failures()
    );
    let mut problems = Vec::new();
    let mut evaluated = 0usize;
    let mut non_empty = 0usize;
    for (name, resource) in examples() {
        let rt = resource["resourceType"].as_str().unwrap();
        for param in defs.search_params(rt) {
            let Some(narrow) = &param.compiled else {
                continue;
            };
            let whole = defs
                .search_param_by_url(&param.url)
                .and_then(|p| p.compiled.as_ref())
                .expect("whole expression compiled");
            evaluated += 1;
            let a = narrow.evaluate(&resource, defs.model());
            let b = if narrow.source() == whole.source() {
                a.clone()
            } else {
                whole.evaluate(&resource, defs.model())
            };
            match (a, b) {
                (Ok(a), Ok(b)) => {
                    non_empty += usize::from(!a.is_empty());
                    let (a, b) = (distinct(&a), distinct(&b));
                    if a != b {
                        problems.push(format!(
                            "{name} {rt}.{}: narrowed {a:?} != whole {b:?}",
                            param.code
                        ));
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    problems.push(format!("{name} {rt}.{}: {e}", param.code));
                }
            }
        }
    }
    eprintln!("{evaluated} evaluations, {non_empty} with results");
    assert!(non_empty > 10_000, "{non_empty}");
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems[..problems.len().min(50)].join("\n")
    );
}
