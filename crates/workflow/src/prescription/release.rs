//! `$release`: a signed draft becomes an active, circulating e-prescription with an access
//! code.

use std::cell::RefCell;

use phip_engine::{Engine, FhirError, FhirResponse, FhirResult, RequestContext};
use phip_security::scope::Interaction;
use phip_store::Transaction;
use serde_json::{json, Value};

use super::{
    acts_for_prescriber, is_circulating, ACCESS_CODE_SYSTEM, CATEGORY_SYSTEM, CIRCULATING,
};
use crate::lookup::{self, business, conflict, forbidden};

/// Checks a digital signature recorded in a `Provenance.signature` element. The server
/// implements it with its key ring; the workflow only needs the verdict.
pub trait SignatureVerifier: Send + Sync {
    /// `Ok(())` when `signature` is a valid signature over exactly `signed` (the resource
    /// version the Provenance names); otherwise why not.
    fn verify(&self, signature: &Value, signed: &Value) -> Result<(), String>;
}

thread_local! {
    /// The prescription version being released on this thread: the only way to make a
    /// circulating prescription active. Write rules run synchronously on the thread that
    /// writes, so a client write (on another call) can never see it set.
    static RELEASING: RefCell<Option<(String, u64)>> = const { RefCell::new(None) };
}

/// Clears the release mark however the write ends.
struct ReleaseMark;

impl ReleaseMark {
    fn set(id: &str, version: u64) -> Self {
        RELEASING.with(|r| *r.borrow_mut() = Some((id.to_owned(), version)));
        ReleaseMark
    }
}

impl Drop for ReleaseMark {
    fn drop(&mut self) {
        RELEASING.with(|r| *r.borrow_mut() = None);
    }
}

/// Whether [`release`] is writing version `version + 1` of prescription `id` right now.
pub(crate) fn releasing(id: &str, version: u64) -> bool {
    RELEASING.with(|r| {
        r.borrow()
            .as_ref()
            .is_some_and(|(i, v)| i == id && *v == version)
    })
}

/// Characters of access codes: digits and capitals without the look-alikes 0/O, 1/I/L.
const ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// Length of an access code: 31^10 ≈ 8·10^14 codes (about 49 bits).
const CODE_LENGTH: usize = 10;

/// A fresh random access code (uniform over the alphabet: bytes beyond the largest multiple
/// of its size are drawn again).
fn new_access_code() -> FhirResult<String> {
    let limit = (256 / ALPHABET.len() * ALPHABET.len()) as u8;
    let mut code = String::with_capacity(CODE_LENGTH);
    while code.len() < CODE_LENGTH {
        let mut buf = [0u8; 16];
        getrandom::fill(&mut buf).map_err(|e| {
            FhirError::new(
                500,
                phip_fhir::IssueType::Exception,
                format!("no randomness for an access code: {e}"),
            )
        })?;
        for b in buf {
            if b < limit && code.len() < CODE_LENGTH {
                code.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
    }
    Ok(code)
}

/// An access code no prescription has yet.
fn unique_access_code(tx: &mut dyn Transaction) -> FhirResult<String> {
    for _ in 0..5 {
        let code = new_access_code()?;
        let taken = lookup::search(
            tx,
            "MedicationRequest",
            &[("identifier", format!("{ACCESS_CODE_SYSTEM}|{code}"))],
            1,
        )?;
        if taken.is_empty() {
            return Ok(code);
        }
    }
    Err(FhirError::new(
        500,
        phip_fhir::IssueType::Exception,
        "could not draw an unused access code",
    ))
}

/// Finds a valid signature over `signed` (version `version` of `MedicationRequest/id`)
/// among the Provenances targeting it; the error lists what was wrong with each.
fn check_signed(
    tx: &mut dyn Transaction,
    verifier: &dyn SignatureVerifier,
    id: &str,
    version: u64,
    signed: &Value,
) -> FhirResult<()> {
    let target = format!("MedicationRequest/{id}/_history/{version}");
    let provenances = lookup::search(
        tx,
        "Provenance",
        &[("target", format!("MedicationRequest/{id}"))],
        100,
    )?;
    let mut reasons = Vec::new();
    for provenance in provenances.iter().filter_map(|p| p.resource.as_ref()) {
        let names_version = provenance
            .get("target")
            .and_then(Value::as_array)
            .is_some_and(|targets| {
                targets.iter().any(|t| {
                    t.get("reference")
                        .and_then(Value::as_str)
                        .is_some_and(|r| r == target || r.ends_with(&format!("/{target}")))
                })
            });
        if !names_version {
            continue;
        }
        for signature in provenance
            .get("signature")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match verifier.verify(signature, signed) {
                Ok(()) => return Ok(()),
                Err(reason) => reasons.push(reason),
            }
        }
    }
    let detail = if reasons.is_empty() {
        format!("no Provenance signs {target}; sign this version ($sign) before releasing it")
    } else {
        format!(
            "no signature over {target} verifies ({}); the prescription may have been changed after it was signed",
            reasons.join("; ")
        )
    };
    Err(business(format!(
        "an e-prescription is released only with a valid signature: {detail}"
    )))
}

/// `POST MedicationRequest/{id}/$release`: releases a signed draft to the region.
///
/// The current version must be a `draft` with a valid signature over exactly that version
/// (so a prescription changed after signing is refused); it becomes `active`, gains the
/// circulating category and a fresh access code, in one transaction guarded by the version.
/// Only the prescriber's organisation may release. Answers the released prescription.
pub fn release(
    engine: &Engine,
    ctx: &RequestContext,
    id: &str,
    verifier: &dyn SignatureVerifier,
) -> FhirResult<FhirResponse> {
    ctx.principal
        .require("MedicationRequest", Interaction::Update)?;
    let stored = engine.write_transaction(&ctx.principal, |tx| {
        let current = lookup::read_live(tx, "MedicationRequest", id)?
            .ok_or_else(|| FhirError::not_found(format!("MedicationRequest/{id} is not known")))?;
        let Some(body) = current.resource.clone() else {
            return Err(FhirError::not_found(format!(
                "MedicationRequest/{id} is not known"
            )));
        };
        if !acts_for_prescriber(&ctx.principal, &body) {
            return Err(forbidden(format!(
                "only the prescriber's organisation may release MedicationRequest/{id}"
            )));
        }
        match lookup::status_of(Some(&body)) {
            Some("draft") => {}
            Some("active") if is_circulating(&body) => {
                return Err(conflict(format!(
                    "MedicationRequest/{id} is already released"
                )))
            }
            other => {
                return Err(conflict(format!(
                    "only a draft can be released; MedicationRequest/{id} is {}",
                    other.unwrap_or("without status")
                )))
            }
        }
        check_signed(tx, verifier, id, current.version_id, &body)?;
        let code = unique_access_code(tx)?;
        let mut released = body;
        released["status"] = json!("active");
        push(
            &mut released,
            "identifier",
            json!({"use": "secondary", "system": ACCESS_CODE_SYSTEM, "value": code}),
        );
        push(
            &mut released,
            "category",
            json!({"coding": [{"system": CATEGORY_SYSTEM, "code": CIRCULATING, "display": "Circulating e-prescription"}]}),
        );
        let _mark = ReleaseMark::set(id, current.version_id);
        lookup::write_next(
            tx,
            &current,
            released,
            &format!("MedicationRequest/{id} changed while it was being released; retry"),
        )
    })?;
    Ok(FhirResponse {
        status: 200,
        location: Some(format!(
            "{}/MedicationRequest/{id}/_history/{}",
            ctx.base_url, stored.version_id
        )),
        version_id: Some(stored.version_id),
        last_modified: Some(stored.last_updated),
        body: stored.resource,
    })
}

/// Appends `item` to the array element `name` of `resource`, creating it if needed.
fn push(resource: &mut Value, name: &str, item: Value) {
    let Some(object) = resource.as_object_mut() else {
        return;
    };
    match object.get_mut(name) {
        Some(Value::Array(items)) => items.push(item),
        _ => {
            object.insert(name.to_owned(), Value::Array(vec![item]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_codes_are_long_random_and_unambiguous() {
        let a = new_access_code().unwrap();
        let b = new_access_code().unwrap();
        assert_eq!(a.len(), CODE_LENGTH);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| ALPHABET.contains(&c)));
        assert!(!a.contains('O') && !a.contains('0') && !a.contains('I'));
    }

    #[test]
    fn the_release_mark_is_scoped() {
        {
            let _mark = ReleaseMark::set("rx1", 2);
            assert!(releasing("rx1", 2));
            assert!(!releasing("rx1", 3));
        }
        assert!(!releasing("rx1", 2));
    }
}
