//! HTTP glue of the pharmacy-side workflows (see `phip_workflow`): e-prescription
//! circulation (`$release`, `$find-prescription`, `$dispense`, `$expire-prescriptions`),
//! family-doctor contracting (`$renew`, `$panel`, `$follow-ups-due`). Appointments need no
//! operation: booking is a plain Appointment write that the booking rule checks.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::HeaderMap;
use base64::Engine as _;
use chrono::{NaiveDate, Utc};
use phip_engine::Principal;
use phip_fhir::IssueType;
use phip_workflow::{contract, prescription};
use serde_json::Value;

use crate::handlers::{run, Query};
use crate::http::{error, parse_body, ApiError, HandlerResult};
use crate::signature::{canonical_bytes, Signer};
use crate::AppState;

/// Verifies `Provenance.signature`s made by this server's `$sign` (detached JWS over the
/// canonical JSON of the signed version) with the server's keys.
struct JwsVerifier(Arc<Signer>);

impl prescription::SignatureVerifier for JwsVerifier {
    fn verify(&self, signature: &Value, signed: &Value) -> Result<(), String> {
        if signature.get("sigFormat").and_then(Value::as_str) != Some("application/jose") {
            return Err("the signature is not a JWS (sigFormat application/jose)".into());
        }
        let token = signature
            .get("data")
            .and_then(Value::as_str)
            .and_then(|data| base64::engine::general_purpose::STANDARD.decode(data).ok())
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or("the signature data is not base64 of a compact JWS")?;
        phip_security::jws::verify_detached(&token, &canonical_bytes(signed), self.0.jwks())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Whether `GET [type]/$op` is one of this module's.
pub(crate) fn is_type_get(resource_type: &str, operation: &str) -> bool {
    (resource_type, operation) == ("MedicationRequest", "$find-prescription")
}

/// `GET MedicationRequest/$find-prescription?code=…|patient=system|value`.
pub(crate) async fn type_get(
    state: AppState,
    principal: Principal,
    headers: HeaderMap,
    query: Query,
) -> HandlerResult {
    let key = match (query.get("code"), query.get("patient")) {
        (Some(code), None) => prescription::FindKey::AccessCode(code.to_owned()),
        (None, Some(patient)) => prescription::FindKey::Patient(patient.to_owned()),
        _ => {
            return Err(error(
                400,
                IssueType::Required,
                "$find-prescription needs either code (the access code) or patient (system|value of a resident identifier)",
            ))
        }
    };
    run(state, principal, &headers, &query, move |engine, ctx| {
        prescription::find(engine, ctx, &key)
    })
    .await
}

/// Whether `POST [type]/$op` is one of this module's.
pub(crate) fn is_type_post(resource_type: &str, operation: &str) -> bool {
    (resource_type, operation) == ("MedicationRequest", "$expire-prescriptions")
}

/// `POST MedicationRequest/$expire-prescriptions`.
pub(crate) async fn type_post(
    state: AppState,
    principal: Principal,
    headers: HeaderMap,
    query: Query,
) -> HandlerResult {
    run(state, principal, &headers, &query, move |engine, ctx| {
        prescription::expire_prescriptions(engine, ctx)
    })
    .await
}

/// Whether `POST [type]/[id]/$op` is one of this module's.
pub(crate) fn is_instance_post(resource_type: &str, operation: &str) -> bool {
    matches!(
        (resource_type, operation),
        ("MedicationRequest", "$release" | "$dispense") | ("Contract", "$renew")
    )
}

/// `POST MedicationRequest/{id}/$release|$dispense` and `POST Contract/{id}/$renew`.
pub(crate) async fn instance_post(
    state: AppState,
    principal: Principal,
    (resource_type, id, operation): (String, String, String),
    headers: HeaderMap,
    query: Query,
    body: Bytes,
) -> HandlerResult {
    let parameters = if body.is_empty() {
        Value::Null
    } else {
        parse_body(&headers, &body, false)?
    };
    match (resource_type.as_str(), operation.as_str()) {
        ("MedicationRequest", "$release") => {
            let signer = state.signer.clone().ok_or_else(|| {
                error(
                    404,
                    IssueType::NotSupported,
                    "signatures are not enabled on this server, so prescriptions cannot be released",
                )
            })?;
            let verifier = JwsVerifier(signer);
            run(state, principal, &headers, &query, move |engine, ctx| {
                prescription::release(engine, ctx, &id, &verifier)
            })
            .await
        }
        ("MedicationRequest", "$dispense") => {
            let input = prescription::DispenseInput {
                quantity: parameter(&parameters, "quantity", "valueQuantity").cloned(),
                pharmacist: parameter(&parameters, "pharmacist", "valueReference")
                    .and_then(|r| r.get("reference"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                note: parameter(&parameters, "note", "valueString")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            };
            run(state, principal, &headers, &query, move |engine, ctx| {
                prescription::dispense(engine, ctx, &id, input)
            })
            .await
        }
        ("Contract", "$renew") => {
            let today =
                date_param(query.get("date").or_else(|| {
                    parameter(&parameters, "date", "valueDate").and_then(Value::as_str)
                }))?;
            run(state, principal, &headers, &query, move |engine, ctx| {
                contract::renew(engine, ctx, &id, today)
            })
            .await
        }
        _ => Err(unsupported(&resource_type, &id, &operation)),
    }
}

/// Whether `GET [type]/[id]/$op` is one of this module's.
pub(crate) fn is_instance_get(resource_type: &str, operation: &str) -> bool {
    matches!(
        (resource_type, operation),
        ("CareTeam", "$panel" | "$follow-ups-due")
    )
}

/// `GET CareTeam/{id}/$panel?date=` and `GET CareTeam/{id}/$follow-ups-due?date=&within=`.
pub(crate) async fn instance_get(
    state: AppState,
    principal: Principal,
    (resource_type, id, operation): (String, String, String),
    headers: HeaderMap,
    query: Query,
) -> HandlerResult {
    let date = date_param(query.get("date"))?;
    match (resource_type.as_str(), operation.as_str()) {
        ("CareTeam", "$panel") => {
            run(state, principal, &headers, &query, move |engine, ctx| {
                contract::panel(engine, ctx, &id, date)
            })
            .await
        }
        ("CareTeam", "$follow-ups-due") => {
            let within = match query.get("within") {
                None => 30,
                Some(text) => text.parse::<u64>().map_err(|_| {
                    error(
                        400,
                        IssueType::Value,
                        format!("within must be a number of days, not {text:?}"),
                    )
                })?,
            };
            run(state, principal, &headers, &query, move |engine, ctx| {
                contract::follow_ups_due(engine, ctx, &id, date, within)
            })
            .await
        }
        _ => Err(unsupported(&resource_type, &id, &operation)),
    }
}

/// A `date` parameter (`YYYY-MM-DD`), today (UTC) when absent.
fn date_param(text: Option<&str>) -> Result<NaiveDate, ApiError> {
    match text {
        None => Ok(Utc::now().date_naive()),
        Some(text) => NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
            error(
                400,
                IssueType::Value,
                format!("date must be a FHIR date YYYY-MM-DD, not {text:?}"),
            )
        }),
    }
}

/// The `value[x]` of the named parameter of a `Parameters` body.
fn parameter<'a>(parameters: &'a Value, name: &str, value: &str) -> Option<&'a Value> {
    parameters
        .get("parameter")?
        .as_array()?
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))?
        .get(value)
}

fn unsupported(resource_type: &str, id: &str, operation: &str) -> ApiError {
    error(
        404,
        IssueType::NotSupported,
        format!("{resource_type}/{id}/{operation} is not a supported operation"),
    )
}
