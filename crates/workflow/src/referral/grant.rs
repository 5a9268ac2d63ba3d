//! The time-limited access grant a referral gives its receiver.
//!
//! At acceptance the receiving organisation needs the patient's records held by the sender
//! (and elsewhere), which least privilege by region would otherwise hide. The grant is an
//! ordinary R4 `Consent` — `scope` patient-privacy, `category` LOINC 59284-0 plus
//! [`super::WORKFLOW_SYSTEM`]|[`REFERRAL_ACCESS_CATEGORY`], a `permit` provision whose `actor`
//! is the receiver and whose `period` is the grant's lifetime — so the engine's consent
//! evaluation honours it like any resident's permit, and a resident's denial still wins. The
//! Consent names its referral in [`REFERRAL_EXTENSION`], and the Task names the Consent in an
//! `output` of type [`super::ACCESS_GRANT_CODE`], so either leads to the other (and the audit
//! record of the accepting write names both).

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use phip_engine::FhirResult;
use phip_store::{Transaction, WriteRequest};
use serde_json::{json, Value};

use super::WORKFLOW_SYSTEM;

/// `Consent.category` code (in [`WORKFLOW_SYSTEM`]) of a referral access grant.
pub const REFERRAL_ACCESS_CATEGORY: &str = "referral-access";
/// Extension on the grant's Consent: `valueReference` to the referral Task.
pub const REFERRAL_EXTENSION: &str = "urn:phip:workflow:referral";

/// Kind of server-owned state a grant is (`urn:phip:server-owned`).
pub const GRANT_KIND: &str = "access-grant";

/// What a grant gives.
#[derive(Debug, Clone)]
pub struct Grant<'a> {
    /// The referral Task id.
    pub task: &'a str,
    /// The patient whose records are opened.
    pub patient: &'a str,
    /// The receiving organisation's id.
    pub receiver: &'a str,
    /// The sending organisation's id (custodian of the grant).
    pub sender: &'a str,
    /// Start of the grant.
    pub start: DateTime<Utc>,
    /// How long it lasts.
    pub days: i64,
}

fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The Consent recording `grant`.
pub fn consent(grant: &Grant<'_>) -> Value {
    let end = grant.start + Duration::days(grant.days);
    json!({
        "resourceType": "Consent",
        "extension": [{
            "url": REFERRAL_EXTENSION,
            "valueReference": {"reference": format!("Task/{}", grant.task)}
        }],
        "status": "active",
        "scope": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/consentscope",
            "code": "patient-privacy"
        }]},
        "category": [
            {"coding": [{"system": super::LOINC, "code": "59284-0", "display": "Patient Consent"}]},
            {"coding": [{"system": WORKFLOW_SYSTEM, "code": REFERRAL_ACCESS_CATEGORY,
                         "display": "Access granted by a referral"}]}
        ],
        "patient": {"reference": format!("Patient/{}", grant.patient)},
        "dateTime": instant(grant.start),
        "organization": [{"reference": format!("Organization/{}", grant.sender)}],
        "policyRule": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "OPTIN"
        }]},
        "provision": {
            "type": "permit",
            "period": {"start": instant(grant.start), "end": instant(end)},
            "actor": [{
                "role": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "IRCP",
                    "display": "information recipient"
                }]},
                "reference": {"reference": format!("Organization/{}", grant.receiver)}
            }],
            "action": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/consentaction",
                "code": "access"
            }]}]
        }
    })
}

/// Writes the grant in `tx` and returns the new Consent's id.
pub fn write(tx: &mut dyn Transaction, grant: &Grant<'_>) -> FhirResult<String> {
    let id = uuid::Uuid::new_v4().to_string();
    // Server-owned: no client — not the receiver it opens records to, nor the sender — can
    // change, extend or delete a grant; the referral's own transitions revoke it.
    let mut body = consent(grant);
    phip_fhir::access::mark_server_owned(&mut body, GRANT_KIND);
    tx.write(WriteRequest {
        resource_type: "Consent".into(),
        id: id.clone(),
        resource: Some(body),
        expected_version: Some(0),
    })?;
    Ok(id)
}

/// Ends the grant `consent_id` now: the Consent becomes `inactive` and its period closes, so
/// it stops permitting at once and the record says when access ended.
pub fn revoke(tx: &mut dyn Transaction, consent_id: &str, now: DateTime<Utc>) -> FhirResult<()> {
    let Some(current) = tx.read("Consent", consent_id)? else {
        return Ok(());
    };
    let Some(mut consent) = current.resource else {
        return Ok(());
    };
    if consent.get("status").and_then(Value::as_str) != Some("active") {
        return Ok(());
    }
    consent["status"] = json!("inactive");
    if let Some(period) = consent
        .get_mut("provision")
        .and_then(|p| p.get_mut("period"))
        .and_then(Value::as_object_mut)
    {
        period.insert("end".into(), json!(instant(now)));
    }
    tx.write(WriteRequest {
        resource_type: "Consent".into(),
        id: consent_id.to_owned(),
        resource: Some(consent),
        expected_version: Some(current.version_id),
    })?;
    Ok(())
}

/// The ids of the grants a Task's outputs name.
pub fn grants_of(task: &Value) -> Vec<String> {
    task.get("output")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|o| is_grant_output(o))
        .filter_map(|o| super::reference_id(o.get("valueReference"), "Consent"))
        .map(str::to_owned)
        .collect()
}

/// Whether a `Task.output` is an access-grant output.
pub fn is_grant_output(output: &Value) -> bool {
    output
        .get("type")
        .and_then(|t| t.get("coding"))
        .and_then(Value::as_array)
        .is_some_and(|codings| {
            codings.iter().any(|c| {
                c.get("system").and_then(Value::as_str) == Some(WORKFLOW_SYSTEM)
                    && c.get("code").and_then(Value::as_str) == Some(super::ACCESS_GRANT_CODE)
            })
        })
}

/// The `Task.output` naming grant `consent_id`.
pub fn output(consent_id: &str) -> Value {
    json!({
        "type": {"coding": [{"system": WORKFLOW_SYSTEM, "code": super::ACCESS_GRANT_CODE,
                             "display": "Access grant"}]},
        "valueReference": {"reference": format!("Consent/{consent_id}")}
    })
}
