//! ITI-65 Provide Document Bundle: recognising an MHD bundle and checking the MHD rules that
//! the generic transaction does not know about, before anything is written.
//!
//! The checks are pure functions of the bundle; the rules that need the store (replaced
//! documents exist and are `current`, `masterIdentifier` not already used) live in
//! [`super::Engine::provide_document_bundle`](crate::Engine::provide_document_bundle).

use std::collections::{HashMap, HashSet};

use base64::Engine as _;
use phip_fhir::{IssueSeverity, IssueType, OperationOutcome};
use serde_json::Value;
use sha1::{Digest, Sha1};

/// Code system of the MHD List types (`submissionset`, `folder`).
pub const MHD_LIST_TYPES: &str = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes";

/// Canonical URLs of the MHD 4.x Provide Document Bundle profiles; a bundle claiming one of
/// them in `meta.profile` is handled as ITI-65 (a `|version` suffix is ignored).
pub const PROVIDE_BUNDLE_PROFILES: [&str; 3] = [
    "https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Minimal.ProvideBundle",
    "https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Comprehensive.ProvideBundle",
    "https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.UnContained.Comprehensive.ProvideBundle",
];

/// Whether a `transaction` Bundle is an ITI-65 Provide Document Bundle: it claims an MHD
/// provide profile, or it carries a SubmissionSet `List`.
pub fn is_provide_bundle(bundle: &Value) -> bool {
    if bundle.get("type").and_then(Value::as_str) != Some("transaction") {
        return false;
    }
    claims_mhd_profile(bundle) || entries(bundle).any(|(_, r)| is_submission_set(r))
}

fn claims_mhd_profile(bundle: &Value) -> bool {
    bundle["meta"]["profile"]
        .as_array()
        .is_some_and(|profiles| {
            profiles.iter().filter_map(Value::as_str).any(|p| {
                let canonical = p.split('|').next().unwrap_or(p);
                PROVIDE_BUNDLE_PROFILES.contains(&canonical)
            })
        })
}

/// Whether a resource is a SubmissionSet `List` (`List.code` = MHDlistTypes#submissionset).
pub fn is_submission_set(resource: &Value) -> bool {
    resource.get("resourceType").and_then(Value::as_str) == Some("List")
        && resource["code"]["coding"]
            .as_array()
            .is_some_and(|codings| {
                codings.iter().any(|c| {
                    c["system"].as_str() == Some(MHD_LIST_TYPES)
                        && c["code"].as_str() == Some("submissionset")
                })
            })
}

/// `(index, resource)` of every entry that carries a resource.
fn entries(bundle: &Value) -> impl Iterator<Item = (usize, &Value)> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, e)| e.get("resource").map(|r| (i, r)))
}

/// What the store-dependent checks and the write need to know about a valid ITI-65 bundle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProvidePlan {
    /// Ids of existing DocumentReferences that documents of the bundle replace
    /// (`relatesTo.code = replaces`), to be superseded in the same transaction.
    pub replaces: Vec<String>,
    /// `(system, value)` of every DocumentReference's `masterIdentifier` (the XDS uniqueId).
    pub master_identifiers: Vec<(String, String)>,
    /// The submission's subject reference, as written in the bundle.
    pub subject: Option<String>,
}

/// Collects rule violations as OperationOutcome issues naming the MHD rule.
struct Violations {
    outcome: OperationOutcome,
}

impl Violations {
    fn add(&mut self, rule: &str, index: Option<usize>, path: &str, message: String) {
        let expression = index.map(|i| format!("Bundle.entry[{i}].resource{path}"));
        let code = if rule == "hash" || rule == "size" {
            IssueType::Invariant
        } else {
            IssueType::BusinessRule
        };
        self.outcome.push(
            IssueSeverity::Error,
            code,
            format!("ITI-65 rule {rule}: {message}"),
            expression,
        );
    }
}

/// Checks the MHD rules of an ITI-65 bundle; the error outcome names every rule broken.
///
/// Rules: exactly one SubmissionSet `List`; at least one `DocumentReference`; every
/// DocumentReference listed in the SubmissionSet's `entry`; every DocumentReference has a
/// `masterIdentifier` (unique within the bundle); every `content.attachment.url` is absolute
/// (`http(s)://`) or the `fullUrl` of a `Binary` in the bundle; for bundled Binaries the
/// attachment's `size`, `hash` (SHA-1, base64) and `contentType`, when given, agree with the
/// Binary; every subject is the same `Patient`.
pub fn check_provide_bundle(bundle: &Value) -> Result<ProvidePlan, OperationOutcome> {
    let mut violations = Violations {
        outcome: OperationOutcome::default(),
    };
    let full_urls: HashMap<usize, &str> = bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, e)| e["fullUrl"].as_str().map(|u| (i, u)))
        .collect();
    let binaries: HashMap<&str, (usize, &Value)> = entries(bundle)
        .filter(|(_, r)| r["resourceType"] == "Binary")
        .filter_map(|(i, r)| full_urls.get(&i).map(|u| (*u, (i, r))))
        .collect();

    let submission_sets: Vec<(usize, &Value)> = entries(bundle)
        .filter(|(_, r)| is_submission_set(r))
        .collect();
    let submission_set = match submission_sets.as_slice() {
        [] => {
            violations.add(
                "submission-set",
                None,
                "",
                "the bundle has no SubmissionSet List (List.code MHDlistTypes#submissionset)"
                    .into(),
            );
            None
        }
        [one] => Some(*one),
        _ => {
            violations.add(
                "submission-set",
                Some(submission_sets[1].0),
                "",
                format!(
                    "the bundle has {} SubmissionSet Lists; exactly one is allowed",
                    submission_sets.len()
                ),
            );
            None
        }
    };
    let listed: HashSet<&str> = submission_set
        .map(|(_, list)| {
            list["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["item"]["reference"].as_str())
                .collect()
        })
        .unwrap_or_default();

    let documents: Vec<(usize, &Value)> = entries(bundle)
        .filter(|(_, r)| r["resourceType"] == "DocumentReference")
        .collect();
    if documents.is_empty() {
        violations.add(
            "document-reference",
            None,
            "",
            "the bundle has no DocumentReference".into(),
        );
    }

    let mut subjects: Vec<(usize, &str, String)> = Vec::new();
    if let Some((index, list)) = submission_set {
        subjects.push((index, ".subject", reference_of(&list["subject"])));
    }
    let mut plan = ProvidePlan::default();
    let mut seen_identifiers = HashSet::new();
    for &(index, document) in &documents {
        match full_urls.get(&index) {
            Some(url) if listed.contains(url) => {}
            Some(url) if submission_set.is_some() => violations.add(
                "submission-set-entry",
                Some(index),
                "",
                format!(
                    "the DocumentReference {url} is not listed in the SubmissionSet's List.entry"
                ),
            ),
            Some(_) => {}
            None => violations.add(
                "submission-set-entry",
                Some(index),
                "",
                "the DocumentReference has no fullUrl, so the SubmissionSet cannot list it".into(),
            ),
        }
        check_master_identifier(
            &mut violations,
            &mut plan,
            &mut seen_identifiers,
            index,
            document,
        );
        subjects.push((index, ".subject", reference_of(&document["subject"])));
        check_attachments(&mut violations, &binaries, index, document);
        for (k, relation) in document["relatesTo"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if relation["code"] != "replaces" {
                continue;
            }
            let target = relation["target"]["reference"].as_str().unwrap_or("");
            match target.strip_prefix("DocumentReference/") {
                Some(id) if !id.is_empty() && !id.contains('/') => plan.replaces.push(id.to_owned()),
                _ => violations.add(
                    "replaces",
                    Some(index),
                    &format!(".relatesTo[{k}].target"),
                    format!("a replaced document must be an existing DocumentReference/[id], not {target:?}"),
                ),
            }
        }
    }
    check_subjects(&mut violations, &subjects);
    plan.subject = subjects
        .iter()
        .map(|(_, _, r)| r)
        .find(|r| !r.is_empty())
        .cloned();

    if violations.outcome.has_errors() {
        Err(violations.outcome)
    } else {
        Ok(plan)
    }
}

fn reference_of(reference: &Value) -> String {
    reference["reference"].as_str().unwrap_or("").to_owned()
}

fn check_master_identifier(
    violations: &mut Violations,
    plan: &mut ProvidePlan,
    seen: &mut HashSet<(String, String)>,
    index: usize,
    document: &Value,
) {
    let identifier = &document["masterIdentifier"];
    let Some(value) = identifier["value"].as_str().filter(|v| !v.is_empty()) else {
        violations.add(
            "master-identifier",
            Some(index),
            ".masterIdentifier",
            "every DocumentReference needs a masterIdentifier (the document's uniqueId)".into(),
        );
        return;
    };
    let key = (
        identifier["system"].as_str().unwrap_or("").to_owned(),
        value.to_owned(),
    );
    if !seen.insert(key.clone()) {
        violations.add(
            "master-identifier",
            Some(index),
            ".masterIdentifier",
            format!("the masterIdentifier {value:?} is used by two documents of the bundle"),
        );
    }
    plan.master_identifiers.push(key);
}

fn check_subjects(violations: &mut Violations, subjects: &[(usize, &str, String)]) {
    let present: Vec<&(usize, &str, String)> =
        subjects.iter().filter(|(_, _, r)| !r.is_empty()).collect();
    let Some((_, _, first)) = present.first() else {
        violations.add(
            "subject",
            None,
            "",
            "neither the SubmissionSet nor any DocumentReference names a subject Patient".into(),
        );
        return;
    };
    for (index, path, reference) in &present {
        if !is_patient_reference(reference) {
            violations.add(
                "subject",
                Some(*index),
                path,
                format!("the subject {reference:?} is not a Patient"),
            );
        } else if reference != first {
            violations.add(
                "subject",
                Some(*index),
                path,
                format!("the subject {reference:?} differs from {first:?}; one submission concerns one patient"),
            );
        }
    }
}

/// `Patient/id`, an absolute `…/Patient/id`, a conditional `Patient?…` or a `urn:uuid:`
/// placeholder (the transaction checks that the placeholder names a Patient entry).
fn is_patient_reference(reference: &str) -> bool {
    reference.starts_with("urn:uuid:")
        || reference.starts_with("Patient/")
        || reference.starts_with("Patient?")
        || reference.contains("/Patient/")
}

fn check_attachments(
    violations: &mut Violations,
    binaries: &HashMap<&str, (usize, &Value)>,
    index: usize,
    document: &Value,
) {
    let contents = document["content"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if contents.is_empty() {
        violations.add(
            "attachment",
            Some(index),
            ".content",
            "the DocumentReference has no content".into(),
        );
    }
    for (k, content) in contents.iter().enumerate() {
        let path = format!(".content[{k}].attachment");
        let attachment = &content["attachment"];
        let Some(url) = attachment["url"].as_str().filter(|u| !u.is_empty()) else {
            violations.add(
                "attachment",
                Some(index),
                &path,
                "the attachment has no url (the document content is a Binary)".into(),
            );
            continue;
        };
        if url.starts_with("http://") || url.starts_with("https://") {
            // Content held elsewhere (an absolute URL) is the submitter's to keep resolvable.
            continue;
        }
        let Some((_, binary)) = binaries.get(url) else {
            violations.add(
                "attachment",
                Some(index),
                &format!("{path}.url"),
                format!("the attachment url {url:?} resolves to no Binary in the bundle"),
            );
            continue;
        };
        let bytes = match base64::engine::general_purpose::STANDARD
            .decode(binary["data"].as_str().unwrap_or(""))
        {
            Ok(bytes) => bytes,
            Err(_) => {
                violations.add(
                    "attachment",
                    Some(index),
                    &format!("{path}.url"),
                    format!("the Binary {url} has no valid base64 data"),
                );
                continue;
            }
        };
        if let Some(size) = attachment.get("size") {
            if size.as_u64() != Some(bytes.len() as u64) {
                violations.add(
                    "size",
                    Some(index),
                    &format!("{path}.size"),
                    format!(
                        "attachment.size is {size} but the Binary {url} holds {} bytes",
                        bytes.len()
                    ),
                );
            }
        }
        if let Some(hash) = attachment["hash"].as_str() {
            let actual = base64::engine::general_purpose::STANDARD.encode(Sha1::digest(&bytes));
            if hash != actual {
                violations.add(
                    "hash",
                    Some(index),
                    &format!("{path}.hash"),
                    format!("attachment.hash {hash:?} is not the SHA-1 of the Binary {url} ({actual:?})"),
                );
            }
        }
        if let (Some(declared), Some(actual)) = (
            attachment["contentType"].as_str(),
            binary["contentType"].as_str(),
        ) {
            if media_type(declared) != media_type(actual) {
                violations.add(
                    "content-type",
                    Some(index),
                    &format!("{path}.contentType"),
                    format!(
                        "attachment.contentType {declared:?} differs from the Binary's {actual:?}"
                    ),
                );
            }
        }
    }
}

/// The media type without parameters, lower-cased.
fn media_type(text: &str) -> String {
    text.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The SHA-1 of `bytes`, base64-encoded, as `Attachment.hash` carries it.
pub fn attachment_hash(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PDF: &[u8] = b"%PDF-1.4 tiny";

    fn bundle() -> Value {
        let data = base64::engine::general_purpose::STANDARD.encode(PDF);
        json!({
            "resourceType": "Bundle", "type": "transaction",
            "meta": {"profile": [PROVIDE_BUNDLE_PROFILES[0]]},
            "entry": [
                {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "List", "status": "current", "mode": "working",
                    "code": {"coding": [{"system": MHD_LIST_TYPES, "code": "submissionset"}]},
                    "subject": {"reference": "Patient/p1"},
                    "entry": [{"item": {"reference": "urn:uuid:2"}}]},
                 "request": {"method": "POST", "url": "List"}},
                {"fullUrl": "urn:uuid:2", "resource": {"resourceType": "DocumentReference", "status": "current",
                    "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3"},
                    "subject": {"reference": "Patient/p1"},
                    "content": [{"attachment": {"contentType": "application/pdf", "url": "urn:uuid:3",
                        "size": PDF.len(), "hash": attachment_hash(PDF)}}]},
                 "request": {"method": "POST", "url": "DocumentReference"}},
                {"fullUrl": "urn:uuid:3", "resource": {"resourceType": "Binary", "contentType": "application/pdf", "data": data},
                 "request": {"method": "POST", "url": "Binary"}}
            ]
        })
    }

    fn rules(bundle: &Value) -> Vec<String> {
        check_provide_bundle(bundle)
            .err()
            .map(|o| o.issues.into_iter().map(|i| i.diagnostics).collect())
            .unwrap_or_default()
    }

    #[test]
    fn attachment_hash_is_base64_sha1() {
        // FIPS 180 test vector: SHA-1("abc") = a9993e36 4706816a ba3e2571 7850c26c 9cd0d89d.
        assert_eq!(attachment_hash(b"abc"), "qZk+NkcGgWq6PiVxeFDCbJzQ2J0=");
    }

    #[test]
    fn a_valid_bundle_passes() {
        let b = bundle();
        assert!(is_provide_bundle(&b));
        let plan = check_provide_bundle(&b).expect("valid");
        assert_eq!(
            plan.master_identifiers,
            vec![("urn:ietf:rfc:3986".into(), "urn:oid:1.2.3".into())]
        );
        assert!(plan.replaces.is_empty());
        assert_eq!(plan.subject.as_deref(), Some("Patient/p1"));
    }

    #[test]
    fn detected_by_list_without_profile() {
        let mut b = bundle();
        b["meta"] = json!({});
        assert!(is_provide_bundle(&b));
        b["entry"][0]["resource"]["code"]["coding"][0]["code"] = json!("folder");
        assert!(!is_provide_bundle(&b));
        b["type"] = json!("batch");
        assert!(!is_provide_bundle(&b));
    }

    #[test]
    fn each_rule_is_named() {
        let mut b = bundle();
        b["entry"][0]["resource"]["code"]["coding"][0]["code"] = json!("folder");
        assert!(
            rules(&b)[0].contains("rule submission-set:"),
            "{:?}",
            rules(&b)
        );

        let mut b = bundle();
        b["entry"][0]["resource"]["entry"] = json!([]);
        assert!(rules(&b)[0].contains("rule submission-set-entry:"));

        let mut b = bundle();
        b["entry"][1]["resource"]["masterIdentifier"] = json!(null);
        assert!(rules(&b)[0].contains("rule master-identifier:"));

        let mut b = bundle();
        b["entry"][1]["resource"]["content"][0]["attachment"]["url"] = json!("urn:uuid:9");
        assert!(rules(&b)[0].contains("rule attachment:"));

        let mut b = bundle();
        b["entry"][1]["resource"]["content"][0]["attachment"]["hash"] =
            json!(attachment_hash(b"other"));
        assert!(rules(&b)[0].contains("rule hash:"));

        let mut b = bundle();
        b["entry"][1]["resource"]["content"][0]["attachment"]["size"] = json!(3);
        assert!(rules(&b)[0].contains("rule size:"));

        let mut b = bundle();
        b["entry"][1]["resource"]["content"][0]["attachment"]["contentType"] = json!("text/xml");
        assert!(rules(&b)[0].contains("rule content-type:"));

        let mut b = bundle();
        b["entry"][1]["resource"]["subject"] = json!({"reference": "Patient/p2"});
        assert!(rules(&b)[0].contains("rule subject:"));

        let mut b = bundle();
        b["entry"][1]["resource"]["relatesTo"] =
            json!([{"code": "replaces", "target": {"reference": "Binary/x"}}]);
        assert!(rules(&b)[0].contains("rule replaces:"));
    }

    #[test]
    fn absolute_attachment_urls_are_accepted_and_replacements_collected() {
        let mut b = bundle();
        b["entry"][1]["resource"]["content"][0]["attachment"] =
            json!({"contentType": "application/pdf", "url": "https://repo.example.cn/docs/1.pdf"});
        b["entry"][1]["resource"]["relatesTo"] =
            json!([{"code": "replaces", "target": {"reference": "DocumentReference/old"}}]);
        let plan = check_provide_bundle(&b).expect("valid");
        assert_eq!(plan.replaces, vec!["old".to_owned()]);
    }
}
