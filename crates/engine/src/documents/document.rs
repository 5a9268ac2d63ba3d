//! `Composition/[id]/$document`: a FHIR document Bundle assembled from a stored Composition
//! and the resources it references.

use chrono::{SecondsFormat, Utc};
use phip_fhir::IssueType;
use serde_json::{json, Value};

use crate::{Engine, FhirError, FhirResponse, FhirResult, RequestContext, ReturnPreference};

/// The references a document carries along: subject, encounter, authors, attesters,
/// custodian, events' details, and every section's author, focus and entries (recursively).
fn composition_references(composition: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let mut push = |reference: &Value| {
        if let Some(text) = reference["reference"].as_str() {
            if !found.iter().any(|f| f == text) {
                found.push(text.to_owned());
            }
        }
    };
    push(&composition["subject"]);
    push(&composition["encounter"]);
    push(&composition["custodian"]);
    for author in composition["author"].as_array().into_iter().flatten() {
        push(author);
    }
    for attester in composition["attester"].as_array().into_iter().flatten() {
        push(&attester["party"]);
    }
    for event in composition["event"].as_array().into_iter().flatten() {
        for detail in event["detail"].as_array().into_iter().flatten() {
            push(detail);
        }
    }
    let mut sections: Vec<&Value> = composition["section"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(section) = sections.pop() {
        for author in section["author"].as_array().into_iter().flatten() {
            push(author);
        }
        push(&section["focus"]);
        for entry in section["entry"].as_array().into_iter().flatten() {
            push(entry);
        }
        sections.extend(section["section"].as_array().into_iter().flatten());
    }
    found
}

/// `Type/id` of a reference to this server (relative, or absolute under `base`); `None` for
/// contained (`#…`), external and placeholder references, which a document cannot resolve.
fn local_target<'a>(base: &str, reference: &'a str) -> Option<(&'a str, &'a str)> {
    let relative = match reference.strip_prefix(base) {
        Some(rest) => rest.trim_start_matches('/'),
        None if reference.contains(':') || reference.starts_with('#') => return None,
        None => reference,
    };
    let relative = relative.split("/_history/").next().unwrap_or(relative);
    let (ty, id) = relative.split_once('/')?;
    (!ty.is_empty() && !id.is_empty() && !id.contains('/')).then_some((ty, id))
}

impl Engine {
    /// `GET|POST [base]/Composition/[id]/$document[?persist=true]`: a `document` Bundle
    /// whose first entry is the Composition, followed by every resource it references (see
    /// `composition_references`). A referenced resource missing from the store is an error
    /// (422): a document is a complete, attestable unit. With `persist`, the Bundle is also
    /// stored and the response is its creation.
    pub fn composition_document(
        &self,
        ctx: &RequestContext,
        id: &str,
        persist: bool,
    ) -> FhirResult<FhirResponse> {
        let composition = self
            .read(ctx, "Composition", id)?
            .body
            .ok_or_else(|| FhirError::not_found(format!("Composition/{id} is not known")))?;
        let mut entries = vec![json!({
            "fullUrl": format!("{}/Composition/{id}", ctx.base_url),
            "resource": composition,
        })];
        for reference in composition_references(&entries[0]["resource"]) {
            let Some((ty, target)) = local_target(&ctx.base_url, &reference) else {
                continue;
            };
            let resource = self.read(ctx, ty, target).map_err(|e| match e.status {
                404 | 410 => FhirError::new(
                    422,
                    IssueType::Processing,
                    format!("Composition/{id} references {reference}, which does not exist"),
                ),
                _ => e,
            })?;
            if let Some(body) = resource.body {
                entries.push(json!({
                    "fullUrl": format!("{}/{ty}/{target}", ctx.base_url),
                    "resource": body,
                }));
            }
        }
        let bundle = json!({
            "resourceType": "Bundle",
            "identifier": {"system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:{}", uuid::Uuid::new_v4())},
            "type": "document",
            "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            "entry": entries,
        });
        if persist {
            let mut create_ctx = ctx.clone();
            create_ctx.return_preference = Some(ReturnPreference::Representation);
            return self.create(&create_ctx, "Bundle", bundle, None);
        }
        Ok(FhirResponse::with_body(200, bundle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_references_from_header_and_nested_sections() {
        let composition = json!({"subject": {"reference": "Patient/p"}, "author": [{"reference": "Practitioner/d"}, {"display": "x"}],
            "section": [{"entry": [{"reference": "Condition/c"}], "section": [{"entry": [{"reference": "Observation/o"}, {"reference": "Patient/p"}]}]}]});
        let refs = composition_references(&composition);
        assert_eq!(
            refs,
            vec![
                "Patient/p",
                "Practitioner/d",
                "Condition/c",
                "Observation/o"
            ]
        );
    }

    #[test]
    fn local_targets() {
        let base = "http://h/fhir";
        assert_eq!(local_target(base, "Patient/1"), Some(("Patient", "1")));
        assert_eq!(
            local_target(base, "http://h/fhir/Patient/1"),
            Some(("Patient", "1"))
        );
        assert_eq!(
            local_target(base, "Patient/1/_history/2"),
            Some(("Patient", "1"))
        );
        assert_eq!(local_target(base, "http://other/fhir/Patient/1"), None);
        assert_eq!(local_target(base, "#c1"), None);
        assert_eq!(local_target(base, "urn:uuid:1"), None);
    }
}
