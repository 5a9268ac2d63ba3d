//! The record locator query: which nodes hold records of the person with this identifier.
//!
//! Answered by the node keeping the index (the national node) from its patient index: the
//! golden record matching the identifier links every index entry of the person, and each
//! entry names the nodes holding records.

use std::collections::BTreeSet;

use phip_engine::{Engine, FhirError, FhirResponse, FhirResult, Principal, RequestContext};
use serde_json::{json, Value};

use crate::entry::{is_index_entry, linked_ids, Holder};

/// Checks an identifier token `system|value` (both parts required: a bare value could match
/// another system's numbers).
pub fn check_identifier(identifier: &str) -> FhirResult<()> {
    match identifier.split_once('|') {
        Some((system, value)) if !system.is_empty() && !value.is_empty() => Ok(()),
        _ => Err(FhirError::bad_request(format!(
            "identifier={identifier:?} must be system|value (e.g. {}|110101199001011234)",
            crate::RESIDENT_ID_SYSTEM
        ))),
    }
}

/// The nodes holding records of the person `identifier` names, and the index's person ids.
pub fn locate(
    engine: &Engine,
    base_url: &str,
    identifier: &str,
) -> FhirResult<(Vec<String>, Vec<Holder>)> {
    check_identifier(identifier)?;
    let ctx = RequestContext::new(base_url, Principal::unrestricted("record locator"));
    let params = vec![
        ("identifier".to_owned(), identifier.to_owned()),
        ("_master".to_owned(), "true".to_owned()),
        ("_count".to_owned(), "50".to_owned()),
    ];
    let response = engine.search(&ctx, Some("Patient"), &params)?;
    let goldens: Vec<Value> = response
        .body
        .as_ref()
        .and_then(|b| b.get("entry"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("resource").cloned())
        .collect();
    let mut persons = Vec::new();
    let mut holders = BTreeSet::new();
    let mut tx = engine.store().begin_read()?;
    for golden in &goldens {
        if let Some(id) = golden.get("id").and_then(Value::as_str) {
            persons.push(id.to_owned());
        }
        for source in linked_ids(golden, "seealso") {
            let Some(stored) = tx.read("Patient", &source)? else {
                continue;
            };
            if let Some(resource) = stored.resource.as_ref().filter(|r| is_index_entry(r)) {
                holders.extend(Holder::all_of(resource));
            }
        }
    }
    Ok((persons, holders.into_iter().collect()))
}

/// `GET [base]/Patient/$locate?identifier=system|value` as a `Parameters` resource: one
/// `person` per matching person of the index, one `holder` (node, endpoint, division) per
/// node holding records.
pub fn locate_response(
    engine: &Engine,
    base_url: &str,
    identifier: &str,
) -> FhirResult<FhirResponse> {
    let (persons, holders) = locate(engine, base_url, identifier)?;
    let mut parameters: Vec<Value> = persons
        .iter()
        .map(|p| json!({"name": "person", "valueReference": {"reference": format!("Patient/{p}")}}))
        .collect();
    parameters.extend(holders.iter().map(|h| {
        json!({"name": "holder", "part": [
            {"name": "node", "valueString": h.node},
            {"name": "endpoint", "valueUrl": h.endpoint},
            {"name": "division", "valueString": h.division},
        ]})
    }));
    Ok(FhirResponse::with_body(
        200,
        json!({"resourceType": "Parameters", "parameter": parameters}),
    ))
}

/// Reads the holders back from a `$locate` answer.
pub fn holders_from_parameters(parameters: &Value) -> Vec<Holder> {
    parameters
        .get("parameter")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.get("name").and_then(Value::as_str) == Some("holder"))
        .filter_map(|p| {
            let parts = p.get("part")?.as_array()?;
            let part = |name: &str, key: &str| {
                parts
                    .iter()
                    .find(|x| x.get("name").and_then(Value::as_str) == Some(name))
                    .and_then(|x| x.get(key))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            Some(Holder {
                node: part("node", "valueString")?,
                endpoint: part("endpoint", "valueUrl")?,
                division: part("division", "valueString").unwrap_or_default(),
            })
        })
        .collect()
}
