//! The rules that keep e-prescriptions consistent whichever way a client writes.

use chrono::Utc;
use phip_engine::{FhirResult, RuleContext, WriteRule};
use phip_store::{Transaction, WriteRequest};
use serde_json::{json, Value};

use super::release::releasing;
use super::{access_codes, acts_for_prescriber, is_circulating, valid_until};
use crate::lookup::{self, business, conflict, forbidden};

/// Elements a status change may touch on a released prescription; everything else was
/// signed and stays as signed.
const STATUS_ELEMENTS: &[&str] = &["meta", "status", "statusReason", "text"];

/// Guards circulating e-prescriptions (`MedicationRequest`s carrying the circulating
/// category):
/// - only [`super::release`] makes one (no client may add the category or an access code);
/// - once released, the signed content never changes and the access code stays;
/// - `active` may become `cancelled` (by the prescriber's organisation) or `stopped` (once
///   its validity period has ended); `completed` comes only from dispensing; `cancelled`,
///   `completed`, `stopped` and `entered-in-error` are final;
/// - a released prescription is never deleted (supervision keeps it).
#[derive(Debug, Default)]
pub struct PrescriptionRule;

impl WriteRule for PrescriptionRule {
    fn name(&self) -> &str {
        "e-prescription"
    }

    fn applies_to(&self, resource_type: &str) -> bool {
        resource_type == "MedicationRequest"
    }

    fn check(&self, context: &mut RuleContext<'_>, request: &mut WriteRequest) -> FhirResult<()> {
        let id = request.id.clone();
        let current = context
            .current
            .as_ref()
            .filter(|c| !c.is_deleted())
            .and_then(|c| c.resource.as_ref().map(|r| (c.version_id, r)));
        let was_circulating = current.is_some_and(|(_, r)| is_circulating(r));
        let Some(next) = request.resource.as_ref() else {
            if was_circulating {
                return Err(conflict(format!(
                    "MedicationRequest/{id} is a released e-prescription and is kept for supervision; cancel it instead of deleting it"
                )));
            }
            return Ok(());
        };
        if !was_circulating {
            let becomes = is_circulating(next) || !access_codes(next).is_empty();
            let released_now = current.is_some_and(|(version, _)| releasing(&id, version));
            if becomes && !released_now {
                return Err(business(
                    "the e-prescription category and access code are assigned by $release only",
                ));
            }
            return Ok(());
        }
        let Some((_, before)) = current else {
            return Ok(());
        };
        if !is_circulating(next) || access_codes(next) != access_codes(before) {
            return Err(business(format!(
                "MedicationRequest/{id} is a released e-prescription: its category and access code cannot change"
            )));
        }
        let from = lookup::status_of(Some(before)).unwrap_or("unknown");
        let to = lookup::status_of(Some(next)).unwrap_or("unknown");
        let content_kept =
            lookup::without(before, STATUS_ELEMENTS) == lookup::without(next, STATUS_ELEMENTS);
        if !content_kept {
            return Err(business(format!(
                "MedicationRequest/{id} was signed and released: its content cannot change (cancel it and issue a new prescription)"
            )));
        }
        match (from, to) {
            (a, b) if a == b => Ok(()),
            ("active", "cancelled") => {
                if acts_for_prescriber(context.principal, before) {
                    Ok(())
                } else {
                    Err(forbidden(format!(
                        "only the prescriber's organisation may cancel MedicationRequest/{id}"
                    )))
                }
            }
            ("active", "stopped") => match valid_until(before) {
                Some((_, end)) if end <= Utc::now() => Ok(()),
                _ => Err(conflict(format!(
                    "MedicationRequest/{id} is still valid; only an expired prescription is stopped (the prescriber cancels a valid one)"
                ))),
            },
            ("active", "completed") => Err(conflict(format!(
                "MedicationRequest/{id} is completed by dispensing it ($dispense or a MedicationDispense), not by an update"
            ))),
            (from, to) => Err(conflict(format!(
                "MedicationRequest/{id} is {from} and cannot become {to}"
            ))),
        }
    }
}

/// Dispense statuses that consume a prescription.
const CLAIMING: &[&str] = &["in-progress", "completed"];

/// Guards `MedicationDispense` writes. A dispense that is `in-progress` or `completed`
/// against a circulating e-prescription needs it `active` (409 when already dispensed,
/// cancelled or stopped), within its validity period (422) and not exceeded in quantity
/// (422), and moves it to `completed` in the same transaction, guarded by the
/// prescription's version, so that of several concurrent dispenses exactly one succeeds and
/// every other one fails with 409; such a dispense is never deleted. Against any other
/// prescription only a `draft` is refused: hospital-internal orders (refills) and records
/// imported from elsewhere keep FHIR's open semantics.
#[derive(Debug, Default)]
pub struct DispenseRule;

impl WriteRule for DispenseRule {
    fn name(&self) -> &str {
        "dispense-once"
    }

    fn applies_to(&self, resource_type: &str) -> bool {
        resource_type == "MedicationDispense"
    }

    fn check(&self, context: &mut RuleContext<'_>, request: &mut WriteRequest) -> FhirResult<()> {
        let previous = match context
            .current
            .as_ref()
            .and_then(|c| c.resource.as_ref())
            .filter(|r| is_claiming(r))
            .map(prescriptions_of)
        {
            Some(ids) => Some(circulating_among(context.tx, ids)?),
            None => None,
        };
        let Some(next) = request.resource.as_ref() else {
            if previous.is_some_and(|p| !p.is_empty()) {
                return Err(conflict(format!(
                    "MedicationDispense/{} records a dispensing and is kept for supervision",
                    request.id
                )));
            }
            return Ok(());
        };
        if !is_claiming(next) {
            return Ok(());
        }
        let prescriptions = prescriptions_of(next);
        // E-prescriptions this dispense already claimed (in-progress → completed) are
        // counted once; it may not let go of them.
        let claimed = previous.unwrap_or_default();
        if !claimed.iter().all(|p| prescriptions.contains(p)) {
            return Err(business(
                "a dispense cannot be moved off the e-prescription it dispensed",
            ));
        }
        for prescription_id in prescriptions {
            if claimed.contains(&prescription_id) {
                continue;
            }
            // Referential integrity is not this rule's concern: records imported from
            // elsewhere may name prescriptions this platform never saw.
            let Some(stored) =
                lookup::read_live(context.tx, "MedicationRequest", &prescription_id)?
            else {
                continue;
            };
            let Some(prescription) = stored.resource.clone() else {
                continue;
            };
            if !is_circulating(&prescription) {
                if lookup::status_of(Some(&prescription)) == Some("draft") {
                    return Err(conflict(format!(
                        "MedicationRequest/{prescription_id} is a draft: it must be signed and released before it is dispensed"
                    )));
                }
                continue;
            }
            check_dispensable(&prescription_id, &prescription, next)?;
            let mut completed = prescription;
            completed["status"] = json!("completed");
            lookup::write_next(
                context.tx,
                &stored,
                completed,
                &format!(
                    "MedicationRequest/{prescription_id} was dispensed concurrently by another pharmacy; it can be dispensed only once"
                ),
            )?;
        }
        Ok(())
    }
}

/// Those of `ids` that name circulating e-prescriptions.
fn circulating_among(tx: &mut dyn Transaction, ids: Vec<String>) -> FhirResult<Vec<String>> {
    let mut out = Vec::new();
    for id in ids {
        let circulating = lookup::read_live(tx, "MedicationRequest", &id)?
            .and_then(|s| s.resource)
            .is_some_and(|r| is_circulating(&r));
        if circulating {
            out.push(id);
        }
    }
    Ok(out)
}

fn is_claiming(dispense: &Value) -> bool {
    lookup::status_of(Some(dispense)).is_some_and(|s| CLAIMING.contains(&s))
}

fn prescriptions_of(dispense: &Value) -> Vec<String> {
    let mut ids: Vec<String> = dispense
        .get("authorizingPrescription")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| lookup::reference_id(r, "MedicationRequest"))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids.dedup();
    ids
}

/// Refuses dispensing `prescription` when it is not active, has expired, or `dispense`
/// hands over more than it prescribes.
fn check_dispensable(id: &str, prescription: &Value, dispense: &Value) -> FhirResult<()> {
    match lookup::status_of(Some(prescription)) {
        Some("active") => {}
        Some("completed") => {
            return Err(conflict(format!(
                "MedicationRequest/{id} has already been dispensed; it can be dispensed only once"
            )))
        }
        other => {
            return Err(conflict(format!(
                "MedicationRequest/{id} is {} and cannot be dispensed",
                other.unwrap_or("without status")
            )))
        }
    }
    if let Some((end, until)) = valid_until(prescription) {
        if until <= Utc::now() {
            return Err(business(format!(
                "MedicationRequest/{id} expired: it was valid until {end}"
            )));
        }
    }
    let prescribed = prescription
        .get("dispenseRequest")
        .and_then(|d| d.get("quantity"));
    if let (Some(prescribed), Some(given)) = (prescribed, dispense.get("quantity")) {
        let amount = |q: &Value| q.get("value").and_then(Value::as_f64);
        let unit = |q: &Value| {
            q.get("code")
                .or_else(|| q.get("unit"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        if let (Some(max), Some(value)) = (amount(prescribed), amount(given)) {
            if unit(prescribed) == unit(given) && value > max {
                return Err(business(format!(
                    "the dispense hands over {value} but MedicationRequest/{id} prescribes {max}"
                )));
            }
        }
    }
    Ok(())
}
