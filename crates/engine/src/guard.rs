//! The write side of the one enforcement point: every client write — REST create, update,
//! patch and delete, their conditional forms, transaction and batch entries, and the feeds and
//! importers that store through the same functions — passes these checks, before and after
//! the store writes, inside the write's transaction.
//!
//! Before: the current version must be one the caller can see; server-owned state and privacy
//! Consents are refused to callers without the right; the holder is set by the server. After:
//! the version as stored must be visible to the caller by the store's own rules (the same
//! predicate that answers its reads), and a resident may only have written into their own
//! compartment.

use phip_fhir::access::server_owned_kind;
use phip_fhir::IssueType;
use phip_store::{StoredResource, Transaction};
use serde_json::Value;

use crate::access::{patients_of, Decision, Principal};
use crate::{FhirError, FhirResult};

/// The current state of the resource a write addresses, as the caller may know it.
pub(crate) enum Prior {
    /// No resource has this id.
    Absent,
    /// The current version (possibly a deletion), which the caller can see.
    Visible(StoredResource),
    /// A resource has this id, but the caller cannot see it.
    Hidden,
}

/// What the caller may know of `resource_type/id`.
pub(crate) fn prior(
    tx: &mut dyn Transaction,
    principal: &Principal,
    resource_type: &str,
    id: &str,
) -> FhirResult<Prior> {
    let Some(current) = tx.read(resource_type, id)? else {
        return Ok(Prior::Absent);
    };
    if principal.is_server() || tx.visible(resource_type, id, &principal.access())? {
        Ok(Prior::Visible(current))
    } else {
        Ok(Prior::Hidden)
    }
}

/// The answer to an update of an id that a record the caller cannot see holds: ids are not
/// secrets (docs/security.md), so this says the id is taken and nothing about the record.
pub(crate) fn id_in_use(resource_type: &str, id: &str) -> FhirError {
    FhirError::new(
        409,
        IssueType::Conflict,
        format!("the id {resource_type}/{id} is in use by a record you cannot change; create the resource with POST or choose another id"),
    )
}

/// Checks a write of `next` (`None`: a deletion) over `previous` (the current content) and,
/// for a body, sets its holder. The server itself may write anything.
pub(crate) fn check_write(
    principal: &Principal,
    resource_type: &str,
    previous: Option<&Value>,
    next: Option<&mut Value>,
) -> FhirResult<()> {
    if !principal.is_server() {
        let owned = previous
            .and_then(server_owned_kind)
            .or_else(|| next.as_deref().and_then(server_owned_kind));
        if let Some(kind) = owned {
            return Err(server_owned(resource_type, kind));
        }
        if resource_type == "Consent" {
            crate::consent::check_consent_authority(principal, previous, next.as_deref())?;
        }
    }
    if let Some(body) = next {
        crate::consent::stamp_holder(principal, previous, body);
    }
    Ok(())
}

fn server_owned(resource_type: &str, kind: &str) -> FhirError {
    let message = if kind == "golden-record" {
        "golden (master) records are maintained by the patient index; change, merge or unlink its source records instead".to_owned()
    } else {
        format!(
            "this {resource_type} is state the server maintains itself ({kind}); no client may create, change or delete it"
        )
    };
    FhirError::new(403, IssueType::Forbidden, message)
}

/// Checks the version a client's write stored, inside the write's transaction (an error rolls
/// the whole write back): it must be visible to the caller by the store's rules, and with a
/// `patient/` grant every patient whose compartment it is in must be the caller's own.
pub(crate) fn check_stored(
    tx: &mut dyn Transaction,
    principal: &Principal,
    decision: &Decision,
    stored: &StoredResource,
) -> FhirResult<()> {
    if principal.is_server() {
        return Ok(());
    }
    let Some(body) = &stored.resource else {
        return Ok(());
    };
    if let Decision::PatientCompartment(own) = decision {
        let patients = patients_of(body);
        if patients.is_empty() || patients.iter().any(|p| p != own) {
            return Err(FhirError::new(
                403,
                IssueType::Forbidden,
                "the access token is limited to its patient's own records: the resource must be in that patient's compartment and in no other patient's",
            ));
        }
    }
    if !tx.visible(&stored.resource_type, &stored.id, &principal.access())? {
        return Err(FhirError::new(
            403,
            IssueType::Forbidden,
            "the resource as it would be stored is outside what the access token may see",
        ));
    }
    Ok(())
}
