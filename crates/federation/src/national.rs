//! The national node keeps the record locator and aggregate reports, never clinical records.

use phip_engine::{FhirError, FhirResult, RuleContext, WriteRule};
use phip_store::WriteRequest;
use serde_json::Value;

use crate::entry::is_index_entry;

/// Refuses writes of clinical resources on a national node: only index entries (Patients
/// tagged as such, which the node's publish operation writes) and the configured
/// non-clinical types are accepted.
#[derive(Debug, Clone)]
pub struct IndexOnly {
    allowed: Vec<String>,
}

impl IndexOnly {
    /// A rule accepting `allowed` resource types besides index entries.
    pub fn new(allowed: Vec<String>) -> Self {
        Self { allowed }
    }
}

impl WriteRule for IndexOnly {
    fn name(&self) -> &str {
        "national node: record locator only"
    }

    fn applies_to(&self, _resource_type: &str) -> bool {
        true
    }

    fn check(&self, _context: &mut RuleContext<'_>, request: &mut WriteRequest) -> FhirResult<()> {
        if self.allowed.contains(&request.resource_type) {
            return Ok(());
        }
        let entry = request.resource_type == "Patient"
            && request.resource.as_ref().is_none_or(is_index_entry);
        if entry {
            return Ok(());
        }
        let what = request
            .resource
            .as_ref()
            .and_then(|r| r.get("resourceType"))
            .and_then(Value::as_str)
            .unwrap_or(&request.resource_type)
            .to_owned();
        Err(FhirError::new(
            422,
            phip_fhir::IssueType::BusinessRule,
            format!(
                "this is a national node: it keeps the record locator (index entries published by provincial nodes) and aggregate reports, not clinical records; write {what} to the provincial node that holds the resident's records"
            ),
        ))
    }
}
