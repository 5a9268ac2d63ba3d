//! Every official R4 example must pass structural validation, except a few that are genuinely
//! invalid against the base specification; those must be rejected, at the right elements.

use std::collections::BTreeSet;
use std::io::Read;
use std::time::Instant;

use phip_fhir::validate::validate_resource;
use serde_json::Value;

/// Official examples that break the base specification, with the reason and the paths of the
/// issues they must produce.
const KNOWN_INVALID: &[(&str, &str, &[&str])] = &[
    (
        "ig-r4.json",
        "the core package's ImplementationGuide lacks the required name and status",
        &["ImplementationGuide.name", "ImplementationGuide.status"],
    ),
    (
        "ImplementationGuide-fhir.json",
        "the core package's ImplementationGuide lacks the required name and status",
        &["ImplementationGuide.name", "ImplementationGuide.status"],
    ),
    (
        "SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json",
        "its id has 69 characters; ids have at most 64",
        &["SearchParameter.id"],
    ),
    (
        "SearchParameter-codesystem-extensions-CodeSystem-author.json",
        "SearchParameter.base is required (1..*) but missing",
        &["SearchParameter.base"],
    ),
    (
        "SearchParameter-codesystem-extensions-CodeSystem-effective.json",
        "SearchParameter.base is required (1..*) but missing",
        &["SearchParameter.base"],
    ),
    (
        "SearchParameter-codesystem-extensions-CodeSystem-end.json",
        "SearchParameter.base is required (1..*) but missing",
        &["SearchParameter.base"],
    ),
    (
        "SearchParameter-codesystem-extensions-CodeSystem-keyword.json",
        "SearchParameter.base is required (1..*) but missing",
        &["SearchParameter.base"],
    ),
    (
        "SearchParameter-codesystem-extensions-CodeSystem-workflow.json",
        "SearchParameter.base is required (1..*) but missing",
        &["SearchParameter.base"],
    ),
    (
        "SearchParameter-valueset-extensions-ValueSet-author.json",
        "SearchParameter.base is required (1..*) but missing",
        &["SearchParameter.base"],
    ),
    (
        "SearchParameter-valueset-extensions-ValueSet-effective.json",
        "SearchParameter.base is required (1..*) but missing",
        &["SearchParameter.base"],
    ),
    (
        "SearchParameter-valueset-extensions-ValueSet-end.json",
        "SearchParameter.base is required (1..*) but missing",
        &["SearchParameter.base"],
    ),
    (
        "SearchParameter-valueset-extensions-ValueSet-keyword.json",
        "SearchParameter.base is required (1..*) but missing",
        &["SearchParameter.base"],
    ),
    (
        "SearchParameter-valueset-extensions-ValueSet-workflow.json",
        "SearchParameter.base is required (1..*) but missing",
        &["SearchParameter.base"],
    ),
];

/// The generated questionnaire for Account: its 32 `display` items have no linkId, which
/// Questionnaire.item requires (1..1).
const QS1: &str = "Questionnaire-qs1.json";

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
        let Some(name) = name.strip_prefix("package/").map(str::to_owned) else {
            continue;
        };
        if !name.ends_with(".json") || name == "package.json" || name == ".index.json" {
            continue;
        }
        let mut text = String::new();
        entry.read_to_string(&mut text).expect("UTF-8 JSON");
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        if value.get("resourceType").and_then(Value::as_str).is_none() {
            continue;
        }
        out.push((name, value));
    }
    out
}

#[test]
fn official_examples_validate() {
    let examples = examples();
    assert!(examples.len() > 5000, "only {} examples", examples.len());
    let mut failures = Vec::new();
    let mut rejected = BTreeSet::new();
    let started = Instant::now();
    for (name, resource) in &examples {
        let result = validate_resource(resource);
        let known = KNOWN_INVALID.iter().find(|(file, _, _)| file == name);
        match (result, known) {
            (Ok(()), None) => {}
            (Err(outcome), None) if name == QS1 => {
                let paths: Vec<&str> = outcome
                    .issues
                    .iter()
                    .map(|i| i.expression[0].as_str())
                    .collect();
                assert_eq!(paths.len(), 32, "{paths:?}");
                for path in paths {
                    assert!(
                        path.starts_with("Questionnaire.item[0].item[")
                            && path.ends_with(".linkId"),
                        "{path}"
                    );
                }
                rejected.insert(name.as_str());
            }
            (Err(outcome), None) => {
                for issue in &outcome.issues {
                    failures.push(format!("{name}: {}", issue.diagnostics));
                }
            }
            (Ok(()), Some((_, reason, _))) => {
                failures.push(format!("{name} was accepted, but {reason}"));
            }
            (Err(outcome), Some((_, reason, expected))) => {
                let paths: Vec<&str> = outcome
                    .issues
                    .iter()
                    .flat_map(|i| i.expression.iter().map(String::as_str))
                    .collect();
                assert_eq!(&paths, expected, "{name} ({reason}): {outcome}");
                rejected.insert(name.as_str());
            }
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "validated {} examples in {elapsed:?} ({} known invalid)",
        examples.len(),
        rejected.len()
    );
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(rejected.len(), KNOWN_INVALID.len() + 1, "{rejected:?}");
}
