//! Residents' consent: a resident's `Consent` resources can deny (or, as exceptions, permit)
//! sharing of their records with named organisations or for categories of data. Denials are
//! enforced on reads and searches for everyone but the resident, unless the caller breaks the
//! glass in an emergency (which the audit trail flags).
//!
//! The platform's default, absent any consent, is to share within the access rules (the
//! regional-platform model); a resident opts out with a `deny` provision. Only active Consents
//! with `scope` patient-privacy are considered. A provision applies when its `actor`s (if any)
//! include the caller's organisation, its `class`es (if any) include the resource type, and
//! its `period` (if any) covers now; nested provisions are exceptions that override their
//! parent, as in FHIR R4.
//!
//! The same evaluation honours the time-limited access grants a referral writes at
//! acceptance (an active `Consent` permitting the receiving organisation for a `period`), so a
//! receiver outside the holder's region reads the patient's records while the grant lasts.
//! The requester and owner of a `Task` (requester and performers of a `ServiceRequest`) see
//! that record wherever it is held.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use phip_fhir::search::query;
use phip_store::{PageCursor, SearchRequest, StoredResource, Transaction};
use serde_json::Value;

use crate::access::{patients_of, Principal};
use crate::{FhirError, FhirResult};

/// Consents of the patients seen during one request, loaded once each.
#[derive(Default)]
pub(crate) struct ConsentCache {
    by_patient: HashMap<String, Vec<Value>>,
}

/// Whether consent rules apply to this caller at all: not to the resident themself, not to the
/// server's own work, and not when the glass is broken.
fn applies_to(principal: &Principal) -> bool {
    !principal.is_unrestricted() && principal.break_glass.is_none()
}

impl ConsentCache {
    fn consents(&mut self, tx: &mut dyn Transaction, patient: &str) -> FhirResult<&[Value]> {
        if !self.by_patient.contains_key(patient) {
            let params = vec![
                ("patient".to_owned(), format!("Patient/{patient}")),
                ("status".to_owned(), "active".to_owned()),
            ];
            let parsed = query::parse(Some("Consent"), &params, true)
                .map_err(|outcome| FhirError::from_outcome(500, outcome))?;
            let page = tx.search(&SearchRequest {
                query: parsed.query,
                cursor: PageCursor::First,
                page_size: 100,
            })?;
            let consents = page
                .matches
                .into_iter()
                .filter_map(|m| m.resource)
                .collect();
            self.by_patient.insert(patient.to_owned(), consents);
        }
        Ok(self
            .by_patient
            .get(patient)
            .map(Vec::as_slice)
            .unwrap_or(&[]))
    }

    /// Whether `resource` is withheld from `principal`: a consent of a patient concerned by
    /// it denies it, or it is held by an institution outside the caller's region and no
    /// consent of the patient permits the caller's organisation.
    pub(crate) fn denies(
        &mut self,
        tx: &mut dyn Transaction,
        principal: &Principal,
        resource: &Value,
    ) -> FhirResult<bool> {
        if !applies_to(principal) {
            return Ok(false);
        }
        let Some(resource_type) = resource.get("resourceType").and_then(Value::as_str) else {
            return Ok(false);
        };
        let now = Utc::now();
        let mut permitted = false;
        for patient in patients_of(resource) {
            // The resident always sees their own records.
            if principal.patient.as_deref() == Some(patient.as_str()) {
                return Ok(false);
            }
            for consent in self.consents(tx, &patient)? {
                match evaluate(consent, principal, resource_type, now) {
                    Some(false) => return Ok(true),
                    Some(true) => permitted = true,
                    None => {}
                }
            }
        }
        // The parties of a workflow record (the sender and the receiver of a referral) see it
        // wherever it is held: it is addressed to them. A resident's denial still applies.
        Ok(!permitted
            && !is_party(principal, resource_type, resource)
            && outside_region(principal, resource))
    }

    /// Drops the resources a consent denies to `principal`.
    pub(crate) fn retain_permitted(
        &mut self,
        tx: &mut dyn Transaction,
        principal: &Principal,
        resources: &mut Vec<StoredResource>,
    ) -> FhirResult<usize> {
        if !applies_to(principal) {
            return Ok(0);
        }
        let mut kept = Vec::with_capacity(resources.len());
        let mut removed = 0;
        for stored in resources.drain(..) {
            let denied = match &stored.resource {
                Some(resource) => self.denies(tx, principal, resource)?,
                None => false,
            };
            if denied {
                removed += 1;
            } else {
                kept.push(stored);
            }
        }
        *resources = kept;
        Ok(removed)
    }
}

/// Whether the caller's organisation is a party to a workflow record: the requester or owner
/// of a `Task`, the requester or a performer of a `ServiceRequest`.
fn is_party(principal: &Principal, resource_type: &str, resource: &Value) -> bool {
    let Some(org) = &principal.organization else {
        return false;
    };
    let fields: &[&str] = match resource_type {
        "Task" => &["requester", "owner"],
        "ServiceRequest" => &["requester", "performer"],
        _ => return false,
    };
    let mine = format!("Organization/{org}");
    fields.iter().any(|field| {
        let targets = match resource.get(*field) {
            Some(Value::Array(items)) => items.iter().collect::<Vec<_>>(),
            Some(item) => vec![item],
            None => Vec::new(),
        };
        targets
            .iter()
            .any(|t| t.get("reference").and_then(Value::as_str) == Some(mine.as_str()))
    })
}

/// Whether `resource` is withheld from `principal` by the residents' consents or least
/// privilege by region — the check reads and searches apply, for lower layers (workflow
/// operations) that query a transaction directly.
pub fn withheld(
    tx: &mut dyn Transaction,
    principal: &Principal,
    resource: &Value,
) -> FhirResult<bool> {
    ConsentCache::default().denies(tx, principal, resource)
}

/// The coding system of the tag naming the GB/T 2260 division of the institution that holds a
/// record (set from the writer's token).
pub const DIVISION_TAG_SYSTEM: &str = "urn:phip:division";
/// The coding system of the tag naming the holding institution (an Organization id).
pub const HOLDER_TAG_SYSTEM: &str = "urn:phip:holder";

/// The holding institution's division, from the record's tag.
fn holder_division(resource: &Value) -> Option<&str> {
    resource
        .get("meta")?
        .get("tag")?
        .as_array()?
        .iter()
        .find(|t| t.get("system").and_then(Value::as_str) == Some(DIVISION_TAG_SYSTEM))?
        .get("code")?
        .as_str()
}

/// Least privilege by region: a caller bound to a division sees records held by institutions
/// in that division (a province sees its cities and counties, a city its counties). Records
/// without a holder division are regional records, visible to all.
fn outside_region(principal: &Principal, resource: &Value) -> bool {
    match (&principal.division, holder_division(resource)) {
        (Some(mine), Some(holder)) => !phip_security::division::contains(mine, holder),
        _ => false,
    }
}

/// Records which institution and region hold a record written by `principal`: its
/// organisation and division become tags (replacing any the client sent, so they cannot be
/// forged by a caller bound to a region).
pub(crate) fn stamp_holder(principal: &Principal, resource: &mut Value) {
    let Some(division) = &principal.division else {
        return;
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
    let tags = meta
        .entry("tag")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Some(tags) = tags.as_array_mut() else {
        return;
    };
    tags.retain(|t| {
        !matches!(
            t.get("system").and_then(Value::as_str),
            Some(DIVISION_TAG_SYSTEM | HOLDER_TAG_SYSTEM)
        )
    });
    tags.push(serde_json::json!({"system": DIVISION_TAG_SYSTEM, "code": division}));
    if let Some(org) = &principal.organization {
        tags.push(serde_json::json!({"system": HOLDER_TAG_SYSTEM, "code": org}));
    }
}

/// The 403 for a record the resident has not consented to share.
pub(crate) fn denied() -> FhirError {
    FhirError::new(
        403,
        phip_fhir::IssueType::Forbidden,
        "this record is not shared with you (the resident's consent, or it is held outside your region); in an emergency, break the glass (X-Break-Glass header with a reason)",
    )
}

/// Evaluates one Consent: `Some(true)` permit, `Some(false)` deny, `None` not applicable.
fn evaluate(
    consent: &Value,
    principal: &Principal,
    resource_type: &str,
    now: DateTime<Utc>,
) -> Option<bool> {
    let provision = consent.get("provision")?;
    evaluate_provision(provision, principal, resource_type, now)
}

fn evaluate_provision(
    provision: &Value,
    principal: &Principal,
    resource_type: &str,
    now: DateTime<Utc>,
) -> Option<bool> {
    if !provision_matches(provision, principal, resource_type, now) {
        return None;
    }
    let own = match provision.get("type").and_then(Value::as_str) {
        Some("deny") => Some(false),
        Some("permit") => Some(true),
        _ => None,
    };
    // The most specific matching nested provision wins.
    let nested = provision
        .get("provision")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| evaluate_provision(p, principal, resource_type, now))
        .next_back();
    nested.or(own)
}

fn provision_matches(
    provision: &Value,
    principal: &Principal,
    resource_type: &str,
    now: DateTime<Utc>,
) -> bool {
    if let Some(period) = provision.get("period") {
        let bound = |name: &str| {
            period
                .get(name)
                .and_then(Value::as_str)
                .and_then(phip_fhir::search::parse_date_range)
        };
        let now_ms = now.timestamp_millis();
        if bound("start").is_some_and(|(start, _)| now_ms < start)
            || bound("end").is_some_and(|(_, end)| now_ms > end)
        {
            return false;
        }
    }
    if let Some(actors) = provision.get("actor").and_then(Value::as_array) {
        let org = principal
            .organization
            .as_ref()
            .map(|o| format!("Organization/{o}"));
        let matches = actors.iter().any(|actor| {
            let reference = actor
                .get("reference")
                .and_then(|r| r.get("reference"))
                .and_then(Value::as_str);
            reference.is_some() && reference == org.as_deref()
        });
        if !matches {
            return false;
        }
    }
    if let Some(classes) = provision.get("class").and_then(Value::as_array) {
        let matches = classes
            .iter()
            .any(|class| class.get("code").and_then(Value::as_str) == Some(resource_type));
        if !matches {
            return false;
        }
    }
    true
}
