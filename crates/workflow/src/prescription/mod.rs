//! Electronic prescription circulation.
//!
//! A hospital writes a `MedicationRequest` as a `draft`, signs that version (`$sign`, which
//! records a `Provenance` with a JWS over it) and releases it ([`release`]): the server
//! checks the signature, marks the request as a circulating e-prescription (a `category`
//! coding [`CIRCULATING`]), makes it `active` and gives it an unguessable access code (an
//! identifier of system [`ACCESS_CODE_SYSTEM`]). A pharmacy of the region finds it by that
//! code or by the resident's identifier ([`find`]) and dispenses it ([`dispense`]) exactly
//! once: the `MedicationDispense` and the prescription's move to `completed` are one
//! transaction, guarded by the prescription's version.
//!
//! The rules hold for every write path, not only the operations: [`PrescriptionRule`] keeps
//! released prescriptions immutable and their status chain one-way, and [`DispenseRule`]
//! refuses a dispense against a prescription that is not active, expired or already
//! dispensed, and completes the prescription itself.

mod dispense;
mod find;
mod release;
mod rules;

pub use dispense::{dispense, expire_prescriptions, DispenseInput};
pub use find::{find, FindKey};
pub use release::{release, SignatureVerifier};
pub use rules::{DispenseRule, PrescriptionRule};

use serde_json::Value;

use crate::lookup;

/// The coding system of the category marking a released, circulating e-prescription.
pub const CATEGORY_SYSTEM: &str = "urn:phip:eprescription";
/// The category code of a released, circulating e-prescription.
pub const CIRCULATING: &str = "circulating";
/// The identifier system of the access code a pharmacy finds a prescription by.
pub const ACCESS_CODE_SYSTEM: &str = "urn:phip:eprescription:access-code";
/// The `statusReason` code recorded when an expired prescription is stopped.
pub const EXPIRED_REASON: &str = "expired";

/// Whether `resource` is a released e-prescription (carries the circulating category).
pub(crate) fn is_circulating(resource: &Value) -> bool {
    lookup::has_coding(resource.get("category"), CATEGORY_SYSTEM, CIRCULATING)
}

/// The access codes a prescription carries.
pub(crate) fn access_codes(resource: &Value) -> Vec<&str> {
    resource
        .get("identifier")
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter(|i| i.get("system").and_then(Value::as_str) == Some(ACCESS_CODE_SYSTEM))
                .filter_map(|i| i.get("value").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

/// When the prescription stops being dispensable (`dispenseRequest.validityPeriod.end`,
/// a date meaning through the end of that day), if it says.
pub(crate) fn valid_until(resource: &Value) -> Option<(String, chrono::DateTime<chrono::Utc>)> {
    let end = resource
        .get("dispenseRequest")?
        .get("validityPeriod")?
        .get("end")?
        .as_str()?;
    Some((end.to_owned(), lookup::instant_end(end)?))
}

/// The organisations entitled to act as the prescriber: the holder that wrote it and, when
/// the requester is an organisation, that one.
pub(crate) fn prescriber_orgs(resource: &Value) -> Vec<String> {
    let mut orgs = Vec::new();
    if let Some(holder) = lookup::holder_of(resource) {
        orgs.push(holder.to_owned());
    }
    if let Some(org) = resource
        .get("requester")
        .and_then(|r| lookup::reference_id(r, "Organization"))
    {
        orgs.push(org);
    }
    orgs
}

/// Whether `principal` may act for the prescriber of `resource`: the server itself, or a
/// caller of a prescriber organisation. A prescription with no known prescriber organisation
/// (written without an organisation-bound token) is open to anyone allowed to update it.
pub(crate) fn acts_for_prescriber(principal: &phip_engine::Principal, resource: &Value) -> bool {
    let orgs = prescriber_orgs(resource);
    principal.is_unrestricted()
        || orgs.is_empty()
        || principal
            .organization
            .as_ref()
            .is_some_and(|org| orgs.iter().any(|o| o == org))
}
