//! `$dispense` and `$expire-prescriptions`.

use chrono::{SecondsFormat, Utc};
use phip_engine::{Engine, FhirResponse, FhirResult, RequestContext, ReturnPreference};
use phip_security::scope::Interaction;
use serde_json::{json, Map, Value};

use super::{valid_until, CATEGORY_SYSTEM, CIRCULATING, EXPIRED_REASON};
use crate::lookup::{self, forbidden};

/// What a pharmacy states when it dispenses (everything else comes from the prescription).
#[derive(Debug, Clone, Default)]
pub struct DispenseInput {
    /// The quantity handed over (a `Quantity`); defaults to `dispenseRequest.quantity`.
    pub quantity: Option<Value>,
    /// The pharmacist (`Practitioner/…`) who dispensed, added to the performers.
    pub pharmacist: Option<String>,
    /// A note for the dispense.
    pub note: Option<String>,
}

/// Elements copied from the prescription into the dispense.
const COPIED: &[&str] = &[
    "medicationCodeableConcept",
    "medicationReference",
    "subject",
    "dosageInstruction",
];

/// `POST MedicationRequest/{id}/$dispense`, by a pharmacy: records a completed
/// `MedicationDispense` (performer the caller's organisation, quantity as prescribed unless
/// stated) and so completes the prescription — both in one transaction, through the
/// [`super::DispenseRule`], which refuses (409) a prescription already dispensed, also when
/// another pharmacy dispenses it at the same moment, and (422) an expired one. Answers 201
/// with the dispense.
pub fn dispense(
    engine: &Engine,
    ctx: &RequestContext,
    id: &str,
    input: DispenseInput,
) -> FhirResult<FhirResponse> {
    let Some(pharmacy) = ctx.principal.organization.clone() else {
        return Err(forbidden(
            "dispensing needs an access token bound to the pharmacy's organisation",
        ));
    };
    ctx.principal
        .require("MedicationDispense", Interaction::Create)?;
    let prescription = engine
        .read(ctx, "MedicationRequest", id)?
        .body
        .unwrap_or(Value::Null);
    let mut body = Map::new();
    body.insert("resourceType".into(), json!("MedicationDispense"));
    body.insert("status".into(), json!("completed"));
    for name in COPIED {
        if let Some(value) = prescription.get(*name) {
            body.insert((*name).to_owned(), value.clone());
        }
    }
    body.insert(
        "authorizingPrescription".into(),
        json!([{"reference": format!("MedicationRequest/{id}")}]),
    );
    let mut performers = vec![json!({"actor": {"reference": format!("Organization/{pharmacy}")}})];
    if let Some(pharmacist) = input.pharmacist {
        performers.push(json!({"actor": {"reference": pharmacist}}));
    }
    body.insert("performer".into(), Value::Array(performers));
    let quantity = input.quantity.or_else(|| {
        prescription
            .get("dispenseRequest")
            .and_then(|d| d.get("quantity"))
            .cloned()
    });
    if let Some(quantity) = quantity {
        body.insert("quantity".into(), quantity);
    }
    if let Some(days) = prescription
        .get("dispenseRequest")
        .and_then(|d| d.get("expectedSupplyDuration"))
    {
        body.insert("daysSupply".into(), days.clone());
    }
    body.insert(
        "whenHandedOver".into(),
        json!(Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)),
    );
    if let Some(note) = input.note {
        body.insert("note".into(), json!([{"text": note}]));
    }
    let mut create = ctx.clone();
    create.return_preference = Some(ReturnPreference::Representation);
    engine.create(&create, "MedicationDispense", Value::Object(body), None)
}

/// Most prescriptions one `$expire-prescriptions` call stops (a scheduler calls it again).
const EXPIRE_BATCH: usize = 500;

/// `POST MedicationRequest/$expire-prescriptions`: stops (status `stopped`, statusReason
/// `expired`) every active circulating prescription whose validity period has ended, so
/// that supervision searches by status show the effective status. Dispensing checks expiry
/// itself, so this only keeps the stored status truthful; run it daily. Answers a
/// `Parameters` with the number stopped.
pub fn expire_prescriptions(engine: &Engine, ctx: &RequestContext) -> FhirResult<FhirResponse> {
    ctx.principal
        .require("MedicationRequest", Interaction::Update)?;
    let now = Utc::now();
    let stopped = engine.write_transaction(&ctx.principal, |tx| {
        // No search parameter reaches the validity period, so read every active circulating
        // prescription (few: they are valid for days) and keep the expired ones.
        let active = lookup::search_all(
            tx,
            "MedicationRequest",
            &[
                ("category", format!("{CATEGORY_SYSTEM}|{CIRCULATING}")),
                ("status", "active".to_owned()),
            ],
        )?;
        let mut stopped = Vec::new();
        for stored in active {
            let Some(resource) = stored.resource.clone() else {
                continue;
            };
            let expired = valid_until(&resource).is_some_and(|(_, end)| end <= now);
            if stopped.len() >= EXPIRE_BATCH {
                break;
            }
            if !expired {
                continue;
            }
            let mut next = resource;
            next["status"] = json!("stopped");
            next["statusReason"] = json!({"coding": [{"system": CATEGORY_SYSTEM, "code": EXPIRED_REASON, "display": "Validity period ended"}]});
            // Through the transaction, so the prescription rule checks the expiry again.
            let written = tx.write(phip_store::WriteRequest {
                resource_type: stored.resource_type.clone(),
                id: stored.id.clone(),
                resource: Some(next),
                expected_version: Some(stored.version_id),
            })?;
            stopped.push(written.id);
        }
        Ok(stopped)
    })?;
    let mut parameters = vec![json!({"name": "stopped", "valueInteger": stopped.len()})];
    for id in stopped {
        parameters.push(json!({"name": "prescription", "valueReference": {"reference": format!("MedicationRequest/{id}")}}));
    }
    Ok(FhirResponse::with_body(
        200,
        json!({"resourceType": "Parameters", "parameter": parameters}),
    ))
}
