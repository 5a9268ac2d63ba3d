//! The operations the HTTP layer adds to the engine's CapabilityStatement.
//!
//! The engine describes the FHIR interactions and its own operations; the operations
//! implemented here, in the server (workflows, health codes, public health, federation,
//! signatures), are declared from one table so a client's `GET /metadata` lists everything it
//! may call. Optional services (health codes, federation) are listed only when enabled.

use serde_json::{json, Value};

use crate::AppState;

/// When a declared operation is available.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Availability {
    Always,
    HealthCodes,
    Federation,
}

/// One operation: the resource type it belongs to (`None`: system level), its name without
/// `$`, and what it does.
struct Declared {
    resource_type: Option<&'static str>,
    name: &'static str,
    documentation: &'static str,
    availability: Availability,
}

const fn op(
    resource_type: Option<&'static str>,
    name: &'static str,
    documentation: &'static str,
) -> Declared {
    Declared {
        resource_type,
        name,
        documentation,
        availability: Availability::Always,
    }
}

const fn with(declared: Declared, availability: Availability) -> Declared {
    Declared {
        availability,
        ..declared
    }
}

const REFERRAL_STEP: &str =
    "A referral Task transition (checked by the referral state machine, as any update)";

/// Every server-level operation, in the order listed in the CapabilityStatement.
const DECLARED: &[Declared] = &[
    op(None, "surveillance-run", "Runs the notifiable-disease aberration detectors for a day over stored case reports; alerts become Flag + Communication (idempotent)"),
    op(None, "indicators", "Regional indicators as MeasureReports per GB/T 2260 division and period (POST also stores them)"),
    with(op(None, "federation-publish", "Receives index entries and MeasureReports from a child node (peer node tokens only)"), Availability::Federation),
    op(Some("Observation"), "ingest", "Device observations (NDJSON or Bundle), each value recorded once"),
    op(Some("Task"), "transition", "Moves a referral Task to another status (parameters status, reason, businessStatus, note)"),
    op(Some("Task"), "receive", REFERRAL_STEP),
    op(Some("Task"), "accept", "Accepts a referral (receiving organisation only) and grants it time-limited access to the patient's records"),
    op(Some("Task"), "reject", "Rejects a referral (receiving organisation only; a reason is required)"),
    op(Some("Task"), "start", REFERRAL_STEP),
    op(Some("Task"), "hold", REFERRAL_STEP),
    op(Some("Task"), "complete", REFERRAL_STEP),
    op(Some("Task"), "fail", REFERRAL_STEP),
    op(Some("Task"), "cancel", "Cancels a referral (sending organisation only); revokes the access grant"),
    op(Some("Task"), "referral-report", "Referrals by status, time to acceptance and organisation"),
    op(Some("Patient"), "recognizable-results", "Prior results from any institution still inside their mutual-recognition window"),
    with(op(Some("Patient"), "health-code", "Issues the resident's signed, expiring electronic health code (SMART Health Card form; JSON, PNG or SVG)"), Availability::HealthCodes),
    with(op(Some("Patient"), "health-code-revoke", "Revokes every health code issued so far for the resident"), Availability::HealthCodes),
    with(op(Some("Patient"), "verify", "Verifies a scanned health code and identifies the resident"), Availability::HealthCodes),
    with(op(Some("Patient"), "locate", "Which nodes hold records for a resident (record locator)"), Availability::Federation),
    with(op(Some("Patient"), "federated-everything", "A resident's records from every node that holds them, within a deadline"), Availability::Federation),
    with(op(Some("Patient"), "federation-records", "A resident's records held here, for a peer node's lookup"), Availability::Federation),
    op(Some("MedicationRequest"), "release", "Releases a signed e-prescription to the region and assigns its access code"),
    op(Some("MedicationRequest"), "dispense", "Dispenses a released e-prescription exactly once (MedicationDispense)"),
    op(Some("MedicationRequest"), "find-prescription", "Finds released e-prescriptions by access code or by the resident's identifier"),
    op(Some("MedicationRequest"), "expire-prescriptions", "Stops released e-prescriptions whose validity period has ended"),
    op(Some("Contract"), "renew", "Renews a family-doctor contract for the next term"),
    op(Some("CareTeam"), "panel", "Residents under contract with a family-doctor team on a date"),
    op(Some("CareTeam"), "follow-ups-due", "Chronic-disease follow-ups due or overdue for a team's residents"),
    op(Some("Provenance"), "verify-signature", "Verifies the signature a Provenance carries (JWS ES256 or SM2)"),
    op(Some("Patient"), "mpi-train", "Re-estimates the patient index's matching weights (EM) from the stored records"),
];

/// The canonical URL phip uses for one of its own operations.
fn definition(declared: &Declared) -> String {
    match declared.resource_type {
        Some(resource_type) => format!(
            "https://phip.cn/fhir/OperationDefinition/{resource_type}-{}",
            declared.name
        ),
        None => format!("https://phip.cn/fhir/OperationDefinition/{}", declared.name),
    }
}

/// Adds the server's operations to `statement` (the engine's CapabilityStatement).
pub(crate) fn declare_operations(state: &AppState, statement: &mut Value) {
    let enabled = |availability| match availability {
        Availability::Always => true,
        Availability::HealthCodes => state.health_codes.is_some(),
        Availability::Federation => state.federation.is_some(),
    };
    let Some(rest) = statement
        .get_mut("rest")
        .and_then(|r| r.get_mut(0))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for declared in DECLARED.iter().filter(|d| enabled(d.availability)) {
        let entry = json!({
            "name": declared.name,
            "definition": definition(declared),
            "documentation": declared.documentation,
        });
        let target = match declared.resource_type {
            None => rest.get_mut("operation"),
            Some(resource_type) => rest
                .get_mut("resource")
                .and_then(Value::as_array_mut)
                .and_then(|resources| {
                    resources
                        .iter_mut()
                        .find(|r| r.get("type").and_then(Value::as_str) == Some(resource_type))
                })
                .and_then(Value::as_object_mut)
                .map(|resource| {
                    resource
                        .entry("operation")
                        .or_insert_with(|| Value::Array(Vec::new()))
                }),
        };
        if let Some(Value::Array(operations)) = target {
            let listed = operations
                .iter()
                .any(|o| o.get("name").and_then(Value::as_str) == Some(declared.name));
            if !listed {
                operations.push(entry);
            }
        }
    }
}
