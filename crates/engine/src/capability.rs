//! The CapabilityStatement (`GET [base]/metadata`), generated from what the engine implements
//! and the embedded definitions, so that it tells the truth.

use chrono::Utc;
use phip_fhir::search::ParamType;
use serde_json::{json, Value};

use crate::Engine;

fn type_code(t: ParamType) -> &'static str {
    match t {
        ParamType::String => "string",
        ParamType::Token => "token",
        ParamType::Date => "date",
        ParamType::Reference => "reference",
        ParamType::Number => "number",
        ParamType::Quantity => "quantity",
        ParamType::Uri => "uri",
        ParamType::Composite => "composite",
        ParamType::Special => "special",
    }
}

impl Engine {
    /// The server's CapabilityStatement for `base_url`.
    pub fn capability_statement(&self, base_url: &str) -> Value {
        let defs = phip_fhir::r4();
        let interactions = json!([
            {"code": "read"}, {"code": "vread"}, {"code": "update"}, {"code": "patch"},
            {"code": "delete"}, {"code": "history-instance"}, {"code": "history-type"},
            {"code": "create"}, {"code": "search-type"}
        ]);
        let resources: Vec<Value> = defs
            .resource_types()
            .map(|resource_type| {
                let params: Vec<Value> = defs
                    .search_params(resource_type)
                    .iter()
                    // Only parameters phip indexes: `special` ones (e.g. `near`) and those
                    // without an expression (`_text`, `_content`, `_query`) are not offered.
                    .filter(|p| p.param_type != ParamType::Special && p.compiled.is_some())
                    .map(|p| {
                        json!({"name": p.code, "definition": p.url, "type": type_code(p.param_type)})
                    })
                    .collect();
                let mut resource = json!({
                    "type": resource_type,
                    "interaction": interactions,
                    "versioning": "versioned-update",
                    "readHistory": true,
                    "updateCreate": true,
                    "conditionalCreate": true,
                    "conditionalRead": "not-supported",
                    "conditionalUpdate": true,
                    "conditionalDelete": "multiple",
                    "referencePolicy": ["literal", "logical", "local"],
                    "searchInclude": ["*"],
                    "searchRevInclude": ["*"],
                    "searchParam": params,
                });
                if resource_type == "Patient" {
                    let mut operations = vec![
                        json!({
                            "name": "everything",
                            "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"
                        }),
                        json!({
                            "name": "export",
                            "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"
                        }),
                    ];
                    if self.config().mpi.enabled {
                        operations.extend([
                            json!({"name": "match", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-match"}),
                            json!({"name": "ihe-pix", "definition": "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix"}),
                            json!({"name": "merge", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-merge",
                                   "documentation": "Merges the person of source-patient into the person of target-patient (golden records); reversible with $unmerge"}),
                            json!({"name": "unmerge", "definition": "urn:phip:mpi:OperationDefinition/Patient-unmerge",
                                   "documentation": "Restores a golden record retired by a merge, from its own history"}),
                            json!({"name": "mpi-unlink", "definition": "urn:phip:mpi:OperationDefinition/Patient-mpi-unlink",
                                   "documentation": "Detaches a source record from its person; the pair is never proposed again"}),
                        ]);
                        if let Some(params) = resource["searchParam"].as_array_mut() {
                            params.push(json!({"name": "_master", "type": "token",
                                "documentation": "true: resolve the search to golden (master) records, one per person"}));
                        }
                    }
                    resource["operation"] = Value::Array(operations);
                }
                match resource_type {
                    "Composition" => {
                        resource["operation"] = json!([
                            {"name": "document", "definition": "http://hl7.org/fhir/OperationDefinition/Composition-document"},
                            {"name": "render", "definition": "urn:phip:OperationDefinition/render",
                             "documentation": "The document as readable, escaped HTML"}
                        ]);
                    }
                    "Bundle" => {
                        resource["operation"] = json!([
                            {"name": "render", "definition": "urn:phip:OperationDefinition/render",
                             "documentation": "A stored document Bundle as readable, escaped HTML"}
                        ]);
                    }
                    "Group" => {
                        resource["operation"] = json!([
                            {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"}
                        ]);
                    }
                    _ => {}
                }
                if resource_type == "Task" && self.config().mpi.enabled {
                    resource["operation"] = json!([
                        {"name": "mpi-accept", "definition": "urn:phip:mpi:OperationDefinition/Task-mpi-accept",
                         "documentation": "Accept a patient-index review item: the two persons are merged"},
                        {"name": "mpi-reject", "definition": "urn:phip:mpi:OperationDefinition/Task-mpi-reject",
                         "documentation": "Reject a patient-index review item: the pair is never proposed again"}
                    ]);
                }
                resource
            })
            .collect();
        json!({
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "publisher": "phip",
            "kind": "instance",
            "software": {"name": "phip", "version": env!("CARGO_PKG_VERSION")},
            "implementation": {
                "description": format!("phip population health information platform ({} store)", self.store().backend_name()),
                "url": base_url
            },
            "fhirVersion": "4.0.1",
            "format": ["application/fhir+json", "json"],
            "patchFormat": ["application/json-patch+json"],
            "rest": [{
                "mode": "server",
                "resource": resources,
                "interaction": [
                    {"code": "transaction"}, {"code": "batch"},
                    {"code": "search-system"}, {"code": "history-system"}
                ],
                "operation": [
                    {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}
                ],
                "searchParam": [
                    {"name": "_id", "type": "token"},
                    {"name": "_lastUpdated", "type": "date"},
                    {"name": "_type", "type": "token"}
                ]
            }]
        })
    }
}
