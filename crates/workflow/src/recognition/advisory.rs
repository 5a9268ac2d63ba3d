//! The advisory on an order that a recognisable result already covers.
//!
//! A write rule cannot change the response, but it can amend what is stored: when a
//! `ServiceRequest` is created (status draft or active) for a test the patient has a
//! recognisable result for, the rule adds one [`ADVISORY_EXTENSION`] per covering result
//! (`valueReference` to it, with a readable `display`). The create response
//! (`Prefer: return=representation`, the default) therefore carries the advisory, an
//! integrator's HIS shows it to the ordering clinician, who may revoke the order; and the
//! stored order keeps the evidence that a repeat test was ordered knowingly.

use chrono::Utc;
use phip_engine::{FhirResult, RuleContext, WriteRule};
use phip_store::WriteRequest;
use serde_json::{json, Value};

use super::{find, Code, RecognitionConfig};
use crate::referral::reference_id;

/// Extension on a ServiceRequest: `valueReference` to a recognisable result covering it.
pub const ADVISORY_EXTENSION: &str = "urn:phip:workflow:recognizable-result";

/// Annotates new orders covered by recognisable results.
#[derive(Debug, Clone, Default)]
pub struct OrderAdvisoryRule {
    config: RecognitionConfig,
}

impl OrderAdvisoryRule {
    /// A rule over these recognition windows.
    pub fn new(config: RecognitionConfig) -> Self {
        Self { config }
    }
}

impl WriteRule for OrderAdvisoryRule {
    fn name(&self) -> &str {
        "recognition-advisory"
    }

    fn applies_to(&self, resource_type: &str) -> bool {
        resource_type == "ServiceRequest"
    }

    fn check(&self, context: &mut RuleContext<'_>, request: &mut WriteRequest) -> FhirResult<()> {
        let is_new = context
            .current
            .as_ref()
            .is_none_or(|c| c.resource.is_none());
        let Some(order) = request.resource.as_mut() else {
            return Ok(());
        };
        // The advisory is the server's: a client cannot forge one, nor drop or alter the one
        // given at ordering time (the evidence that a repeat test was ordered knowingly, which
        // the result-recognition indicator counts), so later versions keep the first one's.
        if let Some(extensions) = order.get_mut("extension").and_then(Value::as_array_mut) {
            extensions.retain(|e| !is_advisory(e));
            if extensions.is_empty() {
                if let Some(object) = order.as_object_mut() {
                    object.remove("extension");
                }
            }
        }
        if !is_new {
            let given: Vec<Value> = context
                .current
                .as_ref()
                .and_then(|c| c.resource.as_ref())
                .and_then(|r| r.get("extension"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|e| is_advisory(e))
                .cloned()
                .collect();
            add_extensions(order, given);
            return Ok(());
        }
        let status = order.get("status").and_then(Value::as_str).unwrap_or("");
        if !matches!(status, "draft" | "active") {
            return Ok(());
        }
        let Some(patient) = reference_id(order.get("subject"), "Patient").map(str::to_owned) else {
            return Ok(());
        };
        let codes: Vec<Code> = order
            .get("code")
            .and_then(|c| c.get("coding"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| {
                Some(Code::new(
                    c.get("system").and_then(Value::as_str)?,
                    c.get("code").and_then(Value::as_str)?,
                ))
            })
            .collect();
        if codes.is_empty() {
            return Ok(());
        }
        let recognition = find(
            context.tx,
            context.principal,
            &self.config,
            &patient,
            &codes,
            Utc::now(),
        )?;
        if recognition.found.is_empty() {
            return Ok(());
        }
        let advisories: Vec<Value> = recognition
            .found
            .iter()
            .map(|found| {
                let resource_type = found
                    .resource
                    .get("resourceType")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let id = found.resource.get("id").and_then(Value::as_str).unwrap_or("");
                json!({
                    "url": ADVISORY_EXTENSION,
                    "valueReference": {
                        "reference": format!("{resource_type}/{id}"),
                        "display": format!(
                            "recognisable {} result (LOINC {}) from {} until {}",
                            found.category,
                            found.loinc,
                            found.issuer_name.as_deref().or(found.issuer.as_deref()).unwrap_or("another institution"),
                            found.until.format("%Y-%m-%d")
                        )
                    }
                })
            })
            .collect();
        add_extensions(order, advisories);
        Ok(())
    }
}

/// Whether an extension is an advisory.
pub fn is_advisory(extension: &Value) -> bool {
    extension.get("url").and_then(Value::as_str) == Some(ADVISORY_EXTENSION)
}

/// Whether an order carries an advisory: a recognisable result covered it when it was placed.
pub fn was_covered(order: &Value) -> bool {
    order
        .get("extension")
        .and_then(Value::as_array)
        .is_some_and(|extensions| extensions.iter().any(is_advisory))
}

fn add_extensions(order: &mut Value, extensions: Vec<Value>) {
    if extensions.is_empty() {
        return;
    }
    match order.get_mut("extension").and_then(Value::as_array_mut) {
        Some(existing) => existing.extend(extensions),
        None => order["extension"] = Value::Array(extensions),
    }
}
