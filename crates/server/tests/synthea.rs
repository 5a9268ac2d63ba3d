//! Synthea end to end (issue #17): the committed Synthea bundles (fixtures/synthea-bundles),
//! sent over HTTP in the order a hospital system sends them, are stored with every reference
//! resolved — no search URL (`Type?…`) and no placeholder left, every literal reference naming
//! a stored resource — and searches, `_include` and `$everything` follow them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;

use common::{assert_outcome, Backend, TestServer};
use reqwest::StatusCode;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/synthea-bundles")
}

/// The fixture's bundles by file name.
fn bundles() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(fixtures()).expect("fixtures/synthea-bundles") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if !name.ends_with(".json.gz") {
            continue;
        }
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&path).expect("open"))
            .read_to_string(&mut text)
            .expect("gunzip");
        out.insert(name, serde_json::from_str(&text).expect("json"));
    }
    assert_eq!(out.len(), 7, "two shared bundles and five patients");
    out
}

/// The order a hospital system sends them in: organisations and locations, practitioners,
/// then the patients.
fn hospital_order(bundles: &BTreeMap<String, Value>) -> Vec<(&String, &Value)> {
    let rank = |name: &str| {
        if name.starts_with("hospitalInformation") {
            0
        } else if name.starts_with("practitionerInformation") {
            1
        } else {
            2
        }
    };
    let mut ordered: Vec<(&String, &Value)> = bundles.iter().collect();
    ordered.sort_by_key(|(name, _)| (rank(name), (*name).clone()));
    ordered
}

/// Every `reference` string of a resource.
fn references<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                match (key.as_str(), child) {
                    ("reference", Value::String(text)) => out.push(text),
                    _ => references(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references(item, out)),
        _ => {}
    }
}

/// Every stored resource, by paging through a system search.
async fn everything_stored(server: &TestServer) -> Vec<Value> {
    let mut resources = Vec::new();
    let mut url = "?_count=500".to_owned();
    loop {
        let page = server.get(&url).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        resources.extend(page.entries());
        match page.link("next") {
            Some(next) => url = next,
            None => break,
        }
    }
    resources
}

async fn synthea_bundles_load_with_every_reference_resolved(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let bundles = bundles();
    let ordered = hospital_order(&bundles);
    let expected: usize = bundles
        .values()
        .map(|b| b["entry"].as_array().map_or(0, Vec::len))
        .sum();

    // A patient's bundle before the practitioners and hospitals it names: 412, nothing stored.
    let (first_patient, early) = ordered.last().expect("a patient bundle");
    let refused = server.post("", early).await;
    assert_outcome(&refused, 412);
    assert!(
        refused.body.to_string().contains("?identifier="),
        "names the conditional reference: {}",
        refused.body
    );
    assert!(
        everything_stored(&server).await.is_empty(),
        "{first_patient}"
    );

    for (name, bundle) in &ordered {
        let reply = server.post("", bundle).await;
        assert_eq!(reply.status, StatusCode::OK, "{name}: {}", reply.body);
        for entry in reply.body["entry"].as_array().expect("entries") {
            let status = entry["response"]["status"].as_str().unwrap_or_default();
            assert!(status.starts_with("201"), "{name}: {entry}");
        }
    }

    let stored = everything_stored(&server).await;
    assert_eq!(
        stored.len(),
        expected,
        "every resource of the bundles, once"
    );
    let ids: BTreeSet<String> = stored
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            )
        })
        .collect();
    let mut literal = 0;
    let mut outside = BTreeSet::new();
    for resource in &stored {
        let mut found = Vec::new();
        references(resource, &mut found);
        for reference in found {
            let conditional = reference
                .split_once('?')
                .is_some_and(|(ty, _)| ty.chars().all(|c| c.is_ascii_alphanumeric()));
            assert!(
                !conditional && !reference.starts_with("urn:"),
                "{}/{} stores {reference:?}",
                resource["resourceType"],
                resource["id"]
            );
            if !ids.contains(reference) {
                // The patient index's golden records are left out of searches by default.
                outside.insert(reference.to_owned());
            }
            literal += 1;
        }
    }
    assert!(literal > 1500, "{literal} references checked");
    assert_eq!(
        outside.len(),
        5,
        "one golden record per patient: {outside:?}"
    );
    for reference in &outside {
        let read = server.get(reference).await;
        assert_eq!(read.status, StatusCode::OK, "{reference}: {}", read.body);
        let tags = read.body["meta"]["tag"].to_string();
        assert!(
            tags.contains("golden"),
            "{reference} is a golden record: {tags}"
        );
    }

    // Searches and _include follow the resolved references.
    let encounters: Vec<&Value> = stored
        .iter()
        .filter(|r| r["resourceType"] == "Encounter")
        .collect();
    let mut by_practitioner: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for encounter in &encounters {
        for participant in encounter["participant"].as_array().into_iter().flatten() {
            if let Some(reference) = participant["individual"]["reference"].as_str() {
                by_practitioner
                    .entry(reference)
                    .or_default()
                    .insert(encounter["id"].as_str().unwrap());
            }
        }
    }
    assert!(by_practitioner.len() > 3, "{by_practitioner:?}");
    for (practitioner, expected) in by_practitioner.iter().take(5) {
        let reply = server
            .get(&format!("Encounter?practitioner={practitioner}&_count=500"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let found: BTreeSet<String> = reply.ids().into_iter().collect();
        let expected: BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(found, expected, "Encounter?practitioner={practitioner}");
    }
    let encounter = encounters[0];
    let included = server
        .get(&format!(
            "Encounter?_id={}&_include=Encounter:practitioner&_include=Encounter:location&_include=Encounter:service-provider",
            encounter["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(included.status, StatusCode::OK, "{}", included.body);
    let included: BTreeSet<String> = included.body["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap(),
                e["resource"]["id"].as_str().unwrap()
            )
        })
        .collect();
    let mut named = Vec::new();
    references(&encounter["participant"], &mut named);
    references(&encounter["location"], &mut named);
    references(&encounter["serviceProvider"], &mut named);
    let named: BTreeSet<String> = named.into_iter().map(str::to_owned).collect();
    assert_eq!(named.len(), 3, "{encounter}");
    assert_eq!(included, named);

    // $everything: the patient, its records, and the practitioners, organisations and
    // locations they name.
    let patient = stored
        .iter()
        .find(|r| r["resourceType"] == "Patient")
        .expect("a patient");
    let mut url = format!(
        "Patient/{}/$everything?_count=200",
        patient["id"].as_str().unwrap()
    );
    let mut by_mode: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    loop {
        let page = server.get(&url).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        for entry in page.body["entry"].as_array().into_iter().flatten() {
            by_mode
                .entry(entry["search"]["mode"].as_str().unwrap().to_owned())
                .or_default()
                .insert(
                    entry["resource"]["resourceType"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
        }
        match page.link("next") {
            Some(next) => url = next,
            None => break,
        }
    }
    for shared in ["Practitioner", "Organization", "Location"] {
        assert!(by_mode["include"].contains(shared), "{by_mode:?}");
    }
    assert!(by_mode["match"].contains("Encounter"), "{by_mode:?}");
    assert!(!by_mode["include"].contains("Patient"), "{by_mode:?}");
}

on_both_backends!(synthea_bundles_load_with_every_reference_resolved);
