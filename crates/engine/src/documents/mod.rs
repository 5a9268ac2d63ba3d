//! Document sharing in IHE MHD form and FHIR documents.
//!
//! - ITI-65 Provide Document Bundle: a `transaction` Bundle recognised by
//!   [`is_provide_bundle`] is checked against the MHD rules ([`check_provide_bundle`]) and the
//!   store (replaced documents are `current`, `masterIdentifier`s are new), then written
//!   atomically by the ordinary transaction, with every replaced DocumentReference set to
//!   `superseded` in the same transaction.
//! - ITI-67 Find Document References and ITI-68 Retrieve Document are the ordinary
//!   DocumentReference search and Binary read; the transport serves Binary content raw.
//! - FHIR documents: [`Engine::composition_document`] (`Composition/[id]/$document`)
//!   assembles a `document` Bundle; [`render_document`] renders one as HTML.
//! - [`DocumentTypes`]: the WS/T 500-style document-type catalogue with its LOINC map.

mod doc_types;
mod document;
mod provide;
mod render;

pub use doc_types::{DocumentTypes, LoincMapping, CONCEPT_MAP_ID, LOINC_SYSTEM, WST500_SYSTEM};
pub use provide::{
    attachment_hash, check_provide_bundle, is_provide_bundle, is_submission_set, ProvidePlan,
    MHD_LIST_TYPES, PROVIDE_BUNDLE_PROFILES,
};
pub use render::{escape_html, narrative_text, render_document};

use phip_fhir::IssueType;
use serde_json::{json, Value};

use crate::{Engine, FhirError, FhirResponse, FhirResult, RequestContext};

impl Engine {
    /// ITI-65: checks an MHD Provide Document Bundle and writes it as one transaction.
    ///
    /// Beyond [`check_provide_bundle`]: every replaced DocumentReference must exist and be
    /// `current` and is set to `superseded` in the same transaction (guarded by its version, so
    /// two submissions replacing the same document cannot both succeed); no `masterIdentifier`
    /// may already be in use; DocumentReference types coded in the document-type catalogue get
    /// their equivalent LOINC coding added. Rule violations answer 422 naming the rule; the
    /// response is the transaction-response of the submitted entries.
    pub fn provide_document_bundle(
        &self,
        ctx: &RequestContext,
        mut bundle: Value,
    ) -> FhirResult<FhirResponse> {
        let plan = check_provide_bundle(&bundle).map_err(FhirError::unprocessable)?;
        for (system, value) in &plan.master_identifiers {
            let token = if system.is_empty() {
                value.clone()
            } else {
                format!("{system}|{value}")
            };
            let found = self.search(
                ctx,
                Some("DocumentReference"),
                &[
                    ("identifier".to_owned(), token),
                    ("_count".to_owned(), "1".to_owned()),
                    ("_elements".to_owned(), "id".to_owned()),
                ],
            )?;
            let taken = found
                .body
                .as_ref()
                .and_then(|b| b["entry"].as_array())
                .is_some_and(|e| !e.is_empty());
            if taken {
                return Err(rule_violation(
                    "master-identifier",
                    format!("a DocumentReference with masterIdentifier {value:?} already exists; a new version of a document needs a new uniqueId and relatesTo replaces"),
                ));
            }
        }
        let mut supersede = Vec::with_capacity(plan.replaces.len());
        for id in &plan.replaces {
            supersede.push(self.superseding_entry(ctx, id, plan.subject.as_deref())?);
        }
        let types = DocumentTypes::builtin();
        let submitted = match bundle.get_mut("entry").and_then(Value::as_array_mut) {
            Some(entries) => {
                for entry in entries.iter_mut() {
                    if entry["resource"]["resourceType"] == "DocumentReference" {
                        if let Some(concept) = entry["resource"].get_mut("type") {
                            types.add_loinc_coding(concept);
                        }
                    }
                }
                let submitted = entries.len();
                entries.extend(supersede);
                submitted
            }
            None => 0,
        };
        let mut response = self.transaction(ctx, &bundle)?;
        // The superseding updates are the server's, not the submitter's entries.
        if let Some(entries) = response
            .body
            .as_mut()
            .and_then(|b| b.get_mut("entry"))
            .and_then(Value::as_array_mut)
        {
            entries.truncate(submitted);
        }
        Ok(response)
    }

    /// The transaction entry that marks the replaced DocumentReference `superseded`.
    fn superseding_entry(
        &self,
        ctx: &RequestContext,
        id: &str,
        subject: Option<&str>,
    ) -> FhirResult<Value> {
        let current = self
            .read(ctx, "DocumentReference", id)
            .map_err(|e| match e.status {
                404 | 410 => rule_violation(
                    "replaces",
                    format!("the replaced DocumentReference/{id} does not exist"),
                ),
                _ => e,
            })?;
        let (Some(mut old), Some(version)) = (current.body, current.version_id) else {
            return Err(rule_violation(
                "replaces",
                format!("the replaced DocumentReference/{id} does not exist"),
            ));
        };
        let status = old["status"].as_str().unwrap_or("");
        if status != "current" {
            return Err(rule_violation(
                "replaces",
                format!("the replaced DocumentReference/{id} is {status:?}, not current"),
            ));
        }
        // A new version of a document concerns the same patient. Placeholders and conditional
        // references are resolved only by the transaction, so only literal ones are compared.
        let old_subject = old["subject"]["reference"].as_str().unwrap_or("");
        if let Some(new_subject) = subject.filter(|s| s.starts_with("Patient/")) {
            if !old_subject.is_empty() && old_subject != new_subject {
                return Err(rule_violation(
                    "replaces",
                    format!("the replaced DocumentReference/{id} concerns {old_subject}, not {new_subject}"),
                ));
            }
        }
        old["status"] = json!("superseded");
        Ok(json!({
            "resource": old,
            "request": {
                "method": "PUT",
                "url": format!("DocumentReference/{id}"),
                "ifMatch": format!("W/\"{version}\"")
            }
        }))
    }
}

fn rule_violation(rule: &str, message: String) -> FhirError {
    FhirError::new(
        422,
        IssueType::BusinessRule,
        format!("ITI-65 rule {rule}: {message}"),
    )
}
