//! Residents' privacy Consents and the holder of a record: who may write them.
//!
//! The *evaluation* of consents is the store's (see `docs/security.md` and
//! `phip_store::Access`): each privacy Consent's provisions are flattened into rules when it is
//! written, and every query run for a caller applies them. What stays here is who may change
//! the facts those rules read:
//!
//! - the **holder** of a record (the `urn:phip:holder` and `urn:phip:division` tags) is the
//!   organisation and region of the caller that created it, set by the server; an update keeps
//!   it, so a client can neither forge nor strip it;
//! - a **privacy Consent** (scope patient-privacy) may be written only by the resident it is
//!   about, or by a consent steward on their behalf, and never so that it permits the writer's
//!   own organisation: a permit written by its grantee is void. The server writes the access
//!   grants of referrals itself.

use phip_fhir::access::{consent_patient, is_privacy_consent, permitted_organizations};
use serde_json::Value;

use crate::access::Principal;
use crate::{FhirError, FhirResult};

pub use phip_fhir::access::{DIVISION_TAG_SYSTEM, HOLDER_TAG_SYSTEM};

/// The role that may record a privacy Consent on a resident's behalf.
pub const CONSENT_STEWARD_ROLE: &str = "consent-steward";

/// Whether `principal` may see the resource `resource_type/id`, by the store's rules — for
/// lower layers (workflow operations) that work inside a transaction.
pub fn visible(
    tx: &mut dyn phip_store::Transaction,
    principal: &Principal,
    resource_type: &str,
    id: &str,
) -> FhirResult<bool> {
    principal.can_see(tx, resource_type, id)
}

fn is_holder_tag(tag: &Value) -> bool {
    matches!(
        tag.get("system").and_then(Value::as_str),
        Some(DIVISION_TAG_SYSTEM | HOLDER_TAG_SYSTEM)
    )
}

fn holder_tags(resource: &Value) -> Vec<Value> {
    resource
        .pointer("/meta/tag")
        .and_then(Value::as_array)
        .map(|tags| tags.iter().filter(|t| is_holder_tag(t)).cloned().collect())
        .unwrap_or_default()
}

/// Sets the holder tags of a body about to be stored for `principal`: those of the `previous`
/// content when there is one (the holder does not change hands by an update), otherwise the
/// caller's organisation and division. The server itself (feeds, federation, imports) keeps
/// what the body says, falling back to the previous content's.
pub(crate) fn stamp_holder(principal: &Principal, previous: Option<&Value>, resource: &mut Value) {
    let from_body = holder_tags(resource);
    let tags: Vec<Value> = if principal.is_server() && !from_body.is_empty() {
        from_body
    } else if let Some(previous) = previous {
        holder_tags(previous)
    } else if principal.is_server() {
        Vec::new()
    } else {
        let mut tags = Vec::new();
        if let Some(division) = &principal.division {
            tags.push(serde_json::json!({"system": DIVISION_TAG_SYSTEM, "code": division}));
        }
        if let Some(org) = &principal.organization {
            tags.push(serde_json::json!({"system": HOLDER_TAG_SYSTEM, "code": org}));
        }
        tags
    };
    let Some(object) = resource.as_object_mut() else {
        return;
    };
    let meta = object
        .entry("meta")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let mut kept: Vec<Value> = meta
        .get("tag")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter(|t| !is_holder_tag(t)).cloned().collect())
        .unwrap_or_default();
    kept.extend(tags);
    if kept.is_empty() {
        meta.remove("tag");
    } else {
        meta.insert("tag".into(), Value::Array(kept));
    }
    if meta.is_empty() {
        object.remove("meta");
    }
}

/// Checks that `principal` may write a Consent whose current content is `previous` and whose
/// new content is `next` (`None`: a deletion). Only privacy Consents are guarded: they decide
/// who sees a resident's records.
pub(crate) fn check_consent_authority(
    principal: &Principal,
    previous: Option<&Value>,
    next: Option<&Value>,
) -> FhirResult<()> {
    if principal.is_server() {
        return Ok(());
    }
    let guarded: Vec<&Value> = previous
        .into_iter()
        .chain(next)
        .filter(|c| is_privacy_consent(c))
        .collect();
    if guarded.is_empty() {
        return Ok(());
    }
    let steward = principal.roles.iter().any(|r| r == CONSENT_STEWARD_ROLE);
    let resident = |consent: &Value| {
        principal.patient.is_some() && consent_patient(consent) == principal.patient.as_deref()
    };
    if !steward && !guarded.iter().all(|c| resident(c)) {
        return Err(FhirError::new(
            403,
            phip_fhir::IssueType::Forbidden,
            "a privacy Consent (scope patient-privacy) may be written only by the resident it concerns or by a consent steward on their behalf",
        ));
    }
    if let (Some(next), Some(org)) = (next, &principal.organization) {
        if is_privacy_consent(next) && permitted_organizations(next).iter().any(|o| o == org) {
            return Err(FhirError::new(
                403,
                phip_fhir::IssueType::Forbidden,
                "a privacy Consent may not permit the organisation that writes it: a permit written by its grantee is void",
            ));
        }
    }
    Ok(())
}
