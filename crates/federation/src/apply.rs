//! The parent's side of the outbox: applying a child's batch idempotently.
//!
//! Every entry names its source (node, record, version). The entry is stored under an id
//! derived from (node, record), so the same person from the same node is always the same
//! resource; a version older than or equal to the one already applied is acknowledged and
//! ignored. Redelivery after a lost acknowledgement or a child's restart therefore changes
//! nothing, and each published change is applied exactly once.

use std::collections::BTreeSet;

use phip_engine::{Engine, FhirError, FhirResult, Principal};
use phip_store::{Transaction, WriteRequest};
use serde_json::{json, Value};

use crate::entry::{has_tag, Source};
use crate::trust::Peer;
use crate::{hash_id, FEDERATION_SYSTEM, INDEX_ENTRY_TAG, RECEIVED_TAG};

/// What a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Entries written.
    pub applied: usize,
    /// Entries already applied before (redeliveries), acknowledged without a write.
    pub ignored: usize,
    /// Roll-up reports recomputed.
    pub rollups: usize,
}

/// The id an entry from `node` about `record` is stored under.
pub fn local_id(node: &str, record: &str) -> String {
    hash_id("fed", &[node, record])
}

/// Applies a child's batch (a Bundle whose entries carry a [`Source`] extension, a `request`
/// with `PUT` or `DELETE` and, for `PUT`, the resource) in one transaction.
pub fn apply_batch(
    engine: &Engine,
    own_division: &str,
    peer: &Peer,
    bundle: &Value,
) -> FhirResult<Applied> {
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(FhirError::bad_request(
            "$federation-publish expects a Bundle",
        ));
    }
    let entries = bundle
        .get("entry")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let principal = Principal::unrestricted(format!("node:{}", peer.node_id));
    engine.write_transaction(&principal, |tx| {
        let mut result = Applied::default();
        let mut touched_measures = BTreeSet::new();
        for (index, entry) in entries.iter().enumerate() {
            let source = Source::from_element(entry).ok_or_else(|| {
                FhirError::bad_request(format!("entry {index} has no federation source"))
            })?;
            if source.node != peer.node_id {
                return Err(FhirError::new(
                    403,
                    phip_fhir::IssueType::Forbidden,
                    format!(
                        "node {} may not publish entries of node {}",
                        peer.node_id, source.node
                    ),
                ));
            }
            let method = entry
                .pointer("/request/method")
                .and_then(Value::as_str)
                .unwrap_or("PUT");
            let resource_type = source.record.split('/').next().unwrap_or("");
            if !matches!(resource_type, "Patient" | "MeasureReport") {
                return Err(FhirError::bad_request(format!(
                    "entry {index}: only Patient index entries and MeasureReports are published, not {resource_type}"
                )));
            }
            let id = local_id(&source.node, &source.record);
            let resource = match method {
                "PUT" => {
                    let resource = entry.get("resource").cloned().ok_or_else(|| {
                        FhirError::bad_request(format!("entry {index}: PUT without a resource"))
                    })?;
                    if resource.get("resourceType").and_then(Value::as_str) != Some(resource_type)
                    {
                        return Err(FhirError::bad_request(format!(
                            "entry {index}: the resource is not a {resource_type}"
                        )));
                    }
                    let mut prepared = prepare(resource, &id, &source, resource_type);
                    // What a node publishes is the platform's own state here: no client of
                    // this node may change an index entry (it routes record lookups) or a
                    // child's report.
                    if phip_fhir::access::server_owned_kind(&prepared).is_none() {
                        phip_fhir::access::mark_server_owned(&mut prepared, FEDERATION_ENTRY_KIND);
                    }
                    Some(prepared)
                }
                "DELETE" => None,
                other => {
                    return Err(FhirError::bad_request(format!(
                        "entry {index}: method {other} is not published"
                    )))
                }
            };
            if !is_newer(tx, resource_type, &id, source.version, resource.is_none())? {
                result.ignored += 1;
                continue;
            }
            if resource_type == "MeasureReport" {
                let previous = tx.read("MeasureReport", &id)?.and_then(|s| s.resource);
                for report in previous.iter().chain(resource.iter()) {
                    if let Some(key) = crate::rollup::ReportKey::of(report) {
                        touched_measures.insert(key);
                    }
                }
            }
            let expected = tx.read(resource_type, &id)?.map(|s| s.version_id);
            tx.write(WriteRequest {
                resource_type: resource_type.to_owned(),
                id,
                resource,
                expected_version: Some(expected.unwrap_or(0)),
            })?;
            result.applied += 1;
        }
        for key in touched_measures {
            if crate::rollup::recompute(tx, own_division, &key)? {
                result.rollups += 1;
            }
        }
        Ok(result)
    })
}

/// The resource as the parent stores it: under the derived id, tagged as received, with the
/// source node's URL in `meta.source`.
fn prepare(mut resource: Value, id: &str, source: &Source, resource_type: &str) -> Value {
    resource["id"] = json!(id);
    let tag = if resource_type == "Patient" {
        INDEX_ENTRY_TAG
    } else {
        RECEIVED_TAG
    };
    let meta = resource
        .as_object_mut()
        .map(|o| o.entry("meta").or_insert_with(|| json!({})));
    if let Some(meta) = meta.and_then(Value::as_object_mut) {
        meta.remove("versionId");
        meta.remove("lastUpdated");
        meta.insert("source".into(), json!(source.endpoint));
        let tags = meta.entry("tag").or_insert_with(|| json!([]));
        if let Some(tags) = tags.as_array_mut() {
            tags.retain(|t| t.get("system").and_then(Value::as_str) != Some(FEDERATION_SYSTEM));
            tags.push(json!({"system": FEDERATION_SYSTEM, "code": tag}));
        }
    }
    // The source extension travels with the stored resource: it is the applied version.
    if let Some(object) = resource.as_object_mut() {
        let extensions = object.entry("extension").or_insert_with(|| json!([]));
        if let Some(list) = extensions.as_array_mut() {
            list.retain(|e| e.get("url").and_then(Value::as_str) != Some(crate::SOURCE_EXTENSION));
            list.insert(0, source.to_extension());
        }
    }
    resource
}

/// Whether `version` is newer than what is stored under `id`. A deletion keeps no body, so
/// the version before it tells what was last applied; a redelivered deletion finds the
/// resource already deleted and has nothing left to do.
fn is_newer(
    tx: &mut dyn Transaction,
    resource_type: &str,
    id: &str,
    version: u64,
    deletion: bool,
) -> FhirResult<bool> {
    let Some(current) = tx.read(resource_type, id)? else {
        // Deleting what was never applied has nothing to do either.
        return Ok(!deletion);
    };
    let applied = match &current.resource {
        Some(body) => Source::from_element(body).map(|s| s.version),
        None => {
            if deletion {
                return Ok(false);
            }
            let before = if current.version_id > 1 {
                tx.vread(resource_type, id, current.version_id - 1)?
                    .and_then(|s| s.resource)
            } else {
                None
            };
            before
                .as_ref()
                .and_then(Source::from_element)
                .map(|s| s.version)
        }
    };
    Ok(applied.is_none_or(|applied| version > applied))
}

/// Whether a resource is one this node received from a child.
pub fn is_received(resource: &Value) -> bool {
    has_tag(resource, FEDERATION_SYSTEM, RECEIVED_TAG)
        || has_tag(resource, FEDERATION_SYSTEM, INDEX_ENTRY_TAG)
}

/// Kind of server-owned state an entry applied from another node is.
pub const FEDERATION_ENTRY_KIND: &str = "federation-entry";
