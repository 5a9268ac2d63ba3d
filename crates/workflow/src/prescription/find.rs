//! `$find-prescription`: how a pharmacy finds a prescription.

use phip_engine::{Engine, FhirError, FhirResponse, FhirResult, RequestContext};

use super::{ACCESS_CODE_SYSTEM, CATEGORY_SYSTEM, CIRCULATING};

/// What a pharmacy presents to find prescriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindKey {
    /// The access code printed on (or sent with) the prescription.
    AccessCode(String),
    /// A resident identifier as `system|value` (what a scanned health code resolves to: the
    /// resident ID card number under `urn:oid:2.16.156.10011.1.1` or any identifier the
    /// resident's Patient carries).
    Patient(String),
}

/// `GET MedicationRequest/$find-prescription?code=…` or `?patient=system|value`: the
/// circulating prescriptions matching the key (by code: that one, whatever its status, so
/// the pharmacy sees why it cannot be dispensed; by resident: the active ones), as a search
/// Bundle seen through the caller's access rights and region.
pub fn find(engine: &Engine, ctx: &RequestContext, key: &FindKey) -> FhirResult<FhirResponse> {
    let category = (
        "category".to_owned(),
        format!("{CATEGORY_SYSTEM}|{CIRCULATING}"),
    );
    let params = match key {
        FindKey::AccessCode(code) => {
            let code = code.trim().to_ascii_uppercase();
            if code.is_empty() {
                return Err(FhirError::bad_request("the access code is empty"));
            }
            vec![
                (
                    "identifier".to_owned(),
                    format!("{ACCESS_CODE_SYSTEM}|{code}"),
                ),
                category,
            ]
        }
        FindKey::Patient(identifier) => {
            if !identifier.contains('|') {
                return Err(FhirError::bad_request(
                    "the patient identifier must be system|value",
                ));
            }
            vec![
                ("subject:Patient.identifier".to_owned(), identifier.clone()),
                ("status".to_owned(), "active".to_owned()),
                category,
            ]
        }
    };
    engine.search(ctx, Some("MedicationRequest"), &params)
}
