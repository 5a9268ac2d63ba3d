//! Checks and normalisation of a Patient's identity data on every write.
//!
//! A resident ID (GB 11643) with a wrong check character, an impossible birth date or area
//! code is refused; a 15-digit legacy number is upgraded to 18 characters (the legacy value
//! is kept as an `old` identifier); and the birth date and sex the number encodes must agree
//! with `birthDate` and `gender`, because a contradiction means one of them was mistyped
//! and linking on it would join the wrong people.

use phip_fhir::{IssueSeverity, IssueType, OperationOutcome};
use phip_mpi::identifier::RESIDENT_ID;
use phip_mpi::record::Sex;
use phip_mpi::resident_id::{self, IdMismatch};
use serde_json::{json, Value};

use super::is_golden;
use crate::{FhirError, FhirResult};

/// Validates and normalises a Patient body before it is stored. Other types pass unchanged.
pub fn prepare_patient(resource_type: &str, body: &mut Value) -> FhirResult<()> {
    if resource_type != "Patient" {
        return Ok(());
    }
    if is_golden(body) {
        return Err(FhirError::new(
            422,
            IssueType::BusinessRule,
            "golden (master) records are maintained by the patient index; write the source record instead",
        ));
    }
    let birth_date = body
        .get("birthDate")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let sex = match body.get("gender").and_then(Value::as_str) {
        Some("male") => Some(Sex::Male),
        Some("female") => Some(Sex::Female),
        _ => None,
    };
    let mut outcome = OperationOutcome::default();
    let mut legacy = Vec::new();
    if let Some(identifiers) = body.get_mut("identifier").and_then(Value::as_array_mut) {
        for (index, identifier) in identifiers.iter_mut().enumerate() {
            if identifier.get("system").and_then(Value::as_str) != Some(RESIDENT_ID) {
                continue;
            }
            if identifier.get("use").and_then(Value::as_str) == Some("old") {
                continue;
            }
            let Some(value) = identifier.get("value").and_then(Value::as_str) else {
                continue;
            };
            let value = value.trim().to_owned();
            let location = format!("Patient.identifier[{index}].value");
            let parsed = if value.chars().count() == 15 {
                resident_id::upgrade_15(&value).inspect(|upgraded| {
                    legacy.push(value.clone());
                    identifier["value"] = json!(upgraded.number);
                })
            } else {
                resident_id::parse(&value)
            };
            let id = match parsed {
                Ok(id) => id,
                Err(error) => {
                    outcome.push(
                        IssueSeverity::Error,
                        IssueType::Invalid,
                        format!("resident ID {value:?} is not valid: {error}"),
                        Some(location),
                    );
                    continue;
                }
            };
            if id.number != value && value.chars().count() == 18 {
                // Canonical form: uppercase check character.
                identifier["value"] = json!(id.number);
            }
            for mismatch in resident_id::cross_check(&id, birth_date.as_deref(), sex) {
                let message = match mismatch {
                    IdMismatch::BirthDate { encoded, recorded } => format!(
                        "resident ID {} encodes the birth date {encoded}, but birthDate is {recorded}",
                        id.number
                    ),
                    IdMismatch::Sex { encoded, recorded } => format!(
                        "resident ID {} encodes the sex {}, but gender is {}",
                        id.number,
                        sex_name(encoded),
                        sex_name(recorded)
                    ),
                };
                outcome.push(
                    IssueSeverity::Error,
                    IssueType::BusinessRule,
                    message,
                    Some(location.clone()),
                );
            }
        }
        for value in legacy {
            identifiers.push(json!({"use": "old", "system": RESIDENT_ID, "value": value}));
        }
    }
    if outcome.issues.is_empty() {
        Ok(())
    } else {
        Err(FhirError::unprocessable(outcome))
    }
}

fn sex_name(sex: Sex) -> &'static str {
    match sex {
        Sex::Male => "male",
        Sex::Female => "female",
        _ => "unknown",
    }
}
