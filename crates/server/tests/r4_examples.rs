//! Every resource in the official FHIR R4 examples package (hl7.fhir.r4.examples 4.0.1,
//! committed under `fixtures/`) is accepted, read back equal apart from `meta`, and found by
//! its `_id` and by one other indexed search parameter.

mod common;

/// Official examples that break the R4 specification itself; phip rejects them with an
/// OperationOutcome naming the offending element (file, expected path in the outcome).
const INVALID_EXAMPLES: &[(&str, &str)] = &[
    ("package/ImplementationGuide-fhir.json", "ImplementationGuide.name"),
    ("package/ig-r4.json", "ImplementationGuide.name"),
    ("package/Questionnaire-qs1.json", "Questionnaire.item[0].item[0].linkId"),
    ("package/SearchParameter-codesystem-extensions-CodeSystem-author.json", "SearchParameter.base"),
    ("package/SearchParameter-codesystem-extensions-CodeSystem-effective.json", "SearchParameter.base"),
    ("package/SearchParameter-codesystem-extensions-CodeSystem-end.json", "SearchParameter.base"),
    ("package/SearchParameter-codesystem-extensions-CodeSystem-keyword.json", "SearchParameter.base"),
    ("package/SearchParameter-codesystem-extensions-CodeSystem-workflow.json", "SearchParameter.base"),
    ("package/SearchParameter-valueset-extensions-ValueSet-author.json", "SearchParameter.base"),
    ("package/SearchParameter-valueset-extensions-ValueSet-effective.json", "SearchParameter.base"),
    ("package/SearchParameter-valueset-extensions-ValueSet-end.json", "SearchParameter.base"),
    ("package/SearchParameter-valueset-extensions-ValueSet-keyword.json", "SearchParameter.base"),
    ("package/SearchParameter-valueset-extensions-ValueSet-workflow.json", "SearchParameter.base"),
    // Its id has 69 characters; FHIR ids have at most 64.
    ("package/SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json", "invalid id"),
];

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use common::{Backend, TestServer};
use phip_fhir::search::{IndexEntry, IndexValue};
use reqwest::StatusCode;
use serde_json::Value;

fn examples() -> Vec<(String, Value)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/hl7.fhir.r4.examples-4.0.1.tgz"
    );
    let file =
        std::fs::File::open(path).expect("the examples package is committed under fixtures/");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut resources = Vec::new();
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("tar entry");
        let name = entry.path().expect("path").to_string_lossy().into_owned();
        if !name.ends_with(".json")
            || name.ends_with("package.json")
            || name.ends_with(".index.json")
        {
            continue;
        }
        let mut text = String::new();
        entry.read_to_string(&mut text).expect("utf-8");
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if value.get("resourceType").and_then(Value::as_str).is_some() {
            resources.push((name, value));
        }
    }
    resources
}

/// Removes the server-managed parts of `meta` for comparison.
fn strip_meta(mut resource: Value) -> Value {
    if let Some(meta) = resource.get_mut("meta").and_then(Value::as_object_mut) {
        meta.remove("versionId");
        meta.remove("lastUpdated");
        if meta.is_empty() {
            resource.as_object_mut().map(|o| o.remove("meta"));
        }
    }
    // The patient index adds a `refer` link from each Patient to its person's golden record
    // (and replaces any the example carried); everything else must come back as sent.
    if resource["resourceType"] == "Patient" {
        if let Some(object) = resource.as_object_mut() {
            let kept: Vec<Value> = object
                .get("link")
                .and_then(Value::as_array)
                .map(|links| {
                    links
                        .iter()
                        .filter(|l| l["type"] != "refer")
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            if kept.is_empty() {
                object.remove("link");
            } else {
                object.insert("link".into(), Value::Array(kept));
            }
        }
    }
    resource
}

fn escape(value: &str) -> String {
    let escaped = value
        .replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace('$', "\\$")
        .replace('|', "\\|");
    percent_encode(&escaped)
}

fn percent_encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn iso(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// A search clause (`param=value`) that the resource must satisfy, derived from one of its own
/// index entries, preferring type-specific parameters over `_lastUpdated`.
fn clause_for(entries: &[IndexEntry]) -> Option<String> {
    let rank = |e: &IndexEntry| match (&e.value, e.param.as_str()) {
        (_, "_id" | "_lastUpdated") => 9,
        (IndexValue::Token { code: Some(_), .. }, _) => 0,
        (IndexValue::String { .. }, _) => 1,
        (
            IndexValue::Reference {
                target_type: Some(_),
                target_id: Some(_),
                ..
            },
            _,
        ) => 2,
        (IndexValue::Uri(_), _) => 3,
        (IndexValue::Date { .. }, _) => 4,
        _ => 8,
    };
    let mut sorted: Vec<&IndexEntry> = entries.iter().filter(|e| rank(e) < 9).collect();
    sorted.sort_by_key(|e| rank(e));
    for entry in sorted {
        let value = match &entry.value {
            IndexValue::Token {
                system,
                code: Some(code),
                ..
            } => match system {
                Some(system) => format!("{}|{}", escape(system), escape(code)),
                None => escape(code),
            },
            IndexValue::String { exact, .. } if !exact.is_empty() => {
                let prefix: String = exact.chars().take(20).collect();
                escape(&prefix)
            }
            IndexValue::Reference {
                target_type: Some(t),
                target_id: Some(id),
                ..
            } => escape(&format!("{t}/{id}")),
            IndexValue::Uri(uri) => escape(uri),
            IndexValue::Date { start, end } if *start > i64::MIN / 2 && *end < i64::MAX / 2 => {
                return Some(format!(
                    "{0}=ge{1}&{0}=le{2}",
                    entry.param,
                    percent_encode(&iso(*start)),
                    percent_encode(&iso(*end))
                ));
            }
            _ => continue,
        };
        return Some(format!("{}={value}", entry.param));
    }
    None
}

async fn official_r4_examples_round_trip_and_are_searchable(backend: Backend) {
    let mut server = TestServer::start_on(backend).await;
    // The examples include residents' privacy Consents, which only the resident or a consent
    // steward may write: the loader is an operator with the steward's role.
    server.token = Some(server.mint(phip_security::token::Grant {
        sub: "examples-loader".into(),
        scope: "system/*.cruds".into(),
        roles: vec!["consent-steward".into()],
        ..phip_security::token::Grant::default()
    }));
    let server = Arc::new(server);
    let all = examples();
    assert!(
        all.len() > 2000,
        "the package holds thousands of resources, found {}",
        all.len()
    );

    // The last file for a given Type/id wins (a few examples share ids).
    let mut latest: BTreeMap<(String, String), (String, Value)> = BTreeMap::new();
    let mut without_id = Vec::new();
    let mut failures = Vec::new();
    let mut rejected_as_expected = 0;
    for (name, resource) in all {
        if let Some((_, expected)) = INVALID_EXAMPLES.iter().find(|(file, _)| *file == name) {
            let rt = resource["resourceType"].as_str().unwrap();
            let reply = match resource.get("id").and_then(Value::as_str) {
                Some(id) => server.put(&format!("{rt}/{id}"), &resource).await,
                None => server.post(rt, &resource).await,
            };
            if reply.status != StatusCode::BAD_REQUEST || !reply.body.to_string().contains(expected)
            {
                failures.push(format!(
                    "{name}: expected a 400 naming {expected}, got {} {}",
                    reply.status, reply.body
                ));
            }
            rejected_as_expected += 1;
            continue;
        }
        let rt = resource["resourceType"].as_str().unwrap().to_owned();
        match resource.get("id").and_then(Value::as_str) {
            Some(id) => {
                latest.insert((rt, id.to_owned()), (name, resource));
            }
            None => without_id.push((name, resource)),
        }
    }
    assert_eq!(
        rejected_as_expected,
        INVALID_EXAMPLES.len(),
        "every listed invalid example exists"
    );

    // The audit trail is written only by the server: AuditEvent examples are valid R4 but
    // refused through the API (405), by design.
    let (audit_examples, items): (Vec<_>, Vec<_>) = latest
        .into_iter()
        .partition(|((rt, _), _)| rt == "AuditEvent");
    assert!(!audit_examples.is_empty());
    for ((rt, id), (name, resource)) in audit_examples {
        if let Err(outcome) = phip_fhir::validate::validate_resource(&resource) {
            failures.push(format!("{name}: not valid R4: {outcome}"));
        }
        let reply = server.put(&format!("{rt}/{id}"), &resource).await;
        if reply.status != StatusCode::METHOD_NOT_ALLOWED {
            failures.push(format!(
                "{name}: expected 405 for a write to the audit trail, got {}",
                reply.status
            ));
        }
    }
    for chunk in items.chunks(64) {
        let mut tasks = Vec::new();
        for item in chunk {
            let ((rt, id), (name, resource)) = item.clone();
            let server = server.clone();
            tasks.push(tokio::spawn(async move {
                let put = server.put(&format!("{rt}/{id}"), &resource).await;
                if !put.status.is_success() {
                    return Err(format!(
                        "{name}: PUT {rt}/{id} → {}: {}",
                        put.status, put.body
                    ));
                }
                let read = server.get(&format!("{rt}/{id}")).await;
                if read.status != StatusCode::OK {
                    return Err(format!("{name}: GET → {}", read.status));
                }
                if strip_meta(read.body.clone()) != strip_meta(resource.clone()) {
                    return Err(format!(
                        "{name}: read back differs:\nsent {}\ngot  {}",
                        resource, read.body
                    ));
                }
                let by_id = server.search_ids(&format!("{rt}?_id={id}")).await;
                if by_id != vec![id.clone()] {
                    return Err(format!("{name}: _id search returned {by_id:?}"));
                }
                let entries = phip_fhir::search::index::extract(&read.body);
                let clause = clause_for(&entries).unwrap_or_else(|| {
                    format!(
                        "_lastUpdated=le{}",
                        percent_encode(read.body["meta"]["lastUpdated"].as_str().unwrap_or(""))
                    )
                });
                let query = format!("{rt}?_id={id}&{clause}");
                let found = server.get(&query).await;
                if found.status != StatusCode::OK || found.ids() != vec![id.clone()] {
                    return Err(format!(
                        "{name}: {query} → {} {:?}",
                        found.status,
                        found.body.get("entry").map(|_| found.ids())
                    ));
                }
                Ok(())
            }));
        }
        for task in tasks {
            if let Err(message) = task.await.expect("task") {
                failures.push(message);
            }
        }
    }
    for (name, resource) in without_id {
        let rt = resource["resourceType"].as_str().unwrap().to_owned();
        let created = server.post(&rt, &resource).await;
        if created.status != StatusCode::CREATED {
            failures.push(format!(
                "{name}: POST → {}: {}",
                created.status, created.body
            ));
        }
    }
    if !failures.is_empty() {
        for failure in failures.iter().take(40) {
            eprintln!("{failure}");
        }
        panic!(
            "{} of the official examples failed (first 40 above)",
            failures.len()
        );
    }
}

on_both_backends!(official_r4_examples_round_trip_and_are_searchable);
