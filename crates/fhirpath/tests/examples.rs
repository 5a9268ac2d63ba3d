//! Opt-in stress test: every official search expression on every resource in a directory of
//! FHIR JSON files (e.g. the unpacked `hl7.fhir.r4.examples` package). Set
//! `PHIP_FHIRPATH_EXAMPLES=/path/to/dir` to run it; it is skipped (loudly) otherwise. It also
//! checks that the resource-level core invariants hold on those (valid) examples.

mod common;

use std::path::Path;

use common::MockModel;
use phip_fhirpath::{Expression, NoModel};
use serde_json::Value;

#[test]
fn search_expressions_evaluate_on_example_resources() {
    let Ok(dir) = std::env::var("PHIP_FHIRPATH_EXAMPLES") else {
        eprintln!("SKIPPED: set PHIP_FHIRPATH_EXAMPLES to a directory of FHIR JSON resources");
        return;
    };
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/r4-search-expressions.tsv");
    let text = std::fs::read_to_string(fixture).expect("expressions fixture");
    let params: Vec<(String, Vec<String>, Expression)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.splitn(3, '\t');
            let id = parts.next()?.to_owned();
            let bases = parts.next()?.split(',').map(str::to_owned).collect();
            Some((id, bases, Expression::parse(parts.next()?).ok()?))
        })
        .collect();
    let invariants: Vec<(String, Vec<String>, Expression)> = common::invariants()
        .into_iter()
        .map(|(key, roots, expr)| {
            (
                key,
                roots,
                Expression::parse(&expr).expect("invariant parses"),
            )
        })
        .collect();
    let model = MockModel::new();
    let mut violations = Vec::new();
    let (mut resources, mut evaluations, mut items) = (0, 0, 0);
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(&dir)
        .expect("examples directory")
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Ok(resource) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let Some(ty) = resource["resourceType"].as_str() else {
            continue;
        };
        resources += 1;
        for (key, roots, expr) in &invariants {
            if !roots.iter().any(|r| r == ty) {
                continue;
            }
            match expr.evaluate(&resource, &NoModel) {
                Ok(v) if v.len() == 1 && v[0].value.as_bool() == Some(false) => {
                    violations.push(format!("{key} on {}", entry.path().display()))
                }
                Ok(_) => {}
                Err(e) => failures.push(format!("{key} on {}: {e}", entry.path().display())),
            }
        }
        for (id, bases, expr) in &params {
            if !bases
                .iter()
                .any(|b| b == ty || b == "Resource" || b == "DomainResource")
            {
                continue;
            }
            for result in [
                expr.evaluate(&resource, &model),
                expr.evaluate(&resource, &NoModel),
            ] {
                evaluations += 1;
                match result {
                    Ok(found) => items += found.len(),
                    Err(e) => failures.push(format!("{id} on {}: {e}", entry.path().display())),
                }
            }
        }
    }
    eprintln!("{resources} resources, {evaluations} evaluations, {items} items");
    // The R4 examples package has a few known-invalid resources (logical models without a
    // base, a Bundle with duplicate entries); anything beyond those is an evaluator bug.
    eprintln!(
        "{} invariant violations:\n{}",
        violations.len(),
        violations.join("\n")
    );
    assert!(violations.len() <= 5, "unexpected invariant violations");
    assert!(resources > 0, "no resources in {dir}");
    assert!(
        failures.is_empty(),
        "{} failures, e.g.:\n{}",
        failures.len(),
        failures[..failures.len().min(30)].join("\n")
    );
}
