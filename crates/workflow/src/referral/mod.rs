//! Two-way referral between institutions (community ↔ hospital, up and down).
//!
//! A referral is a `ServiceRequest` (what is asked for) and a `Task` that tracks it through the
//! FHIR R4 Task state machine: identified by `Task.code` = [`WORKFLOW_SYSTEM`]|[`REFERRAL_CODE`],
//! `focus` → the ServiceRequest, `for` → the Patient, `requester` → the sending Organization,
//! `owner` → the receiving Organization, and the direction in the [`DIRECTION_EXTENSION`].
//!
//! [`ReferralRule`] holds however the Task is written (REST update, JSON Patch, transaction
//! entry, or the `$transition` operation): legal transitions only, each by the right party,
//! fixed parties, a reason for a rejection. At acceptance it writes a time-limited access grant
//! (see [`grant`]) so the receiver reads the patient's records held elsewhere; cancellation
//! revokes it. [`ops`] has the convenience transition and the report.

pub mod grant;
pub mod ops;
mod rule;
pub mod states;

pub use rule::ReferralRule;

use serde_json::Value;

/// The coding system of the platform's workflow codes.
pub const WORKFLOW_SYSTEM: &str = "urn:phip:workflow";
/// `Task.code` of a referral.
pub const REFERRAL_CODE: &str = "referral";
/// Extension on the Task: `valueCode` `up` (to a higher-level institution) or `down` (back to
/// the community, carrying the discharge summary).
pub const DIRECTION_EXTENSION: &str = "urn:phip:workflow:referral-direction";
/// Coding system of `Task.businessStatus` codes the platform defines (see [`BUSINESS_STATUSES`]).
pub const BUSINESS_STATUS_SYSTEM: &str = "urn:phip:workflow:referral-status";
/// The business statuses a referral may carry, in the order they usually happen.
pub const BUSINESS_STATUSES: &[&str] = &[
    "awaiting-triage",
    "appointment-booked",
    "bed-assigned",
    "patient-arrived",
    "under-treatment",
    "discharged",
    "follow-up-scheduled",
];
/// `Task.output.type` code (in [`WORKFLOW_SYSTEM`]) naming the access grant written at acceptance.
pub const ACCESS_GRANT_CODE: &str = "access-grant";
/// LOINC code of a discharge summary, the `Task.input.type` a down-referral must carry.
pub const DISCHARGE_SUMMARY_LOINC: &str = "18842-5";
/// The LOINC system URI.
pub const LOINC: &str = "http://loinc.org";

/// Settings of the referral workflow.
#[derive(Debug, Clone)]
pub struct ReferralConfig {
    /// How long the access grant written at acceptance lasts, in days.
    pub access_days: i64,
}

impl Default for ReferralConfig {
    fn default() -> Self {
        Self { access_days: 30 }
    }
}

/// Whether `resource` is a referral Task.
pub fn is_referral(resource: &Value) -> bool {
    resource.get("resourceType").and_then(Value::as_str) == Some("Task")
        && resource
            .get("code")
            .and_then(|c| c.get("coding"))
            .and_then(Value::as_array)
            .is_some_and(|codings| {
                codings.iter().any(|c| {
                    c.get("system").and_then(Value::as_str) == Some(WORKFLOW_SYSTEM)
                        && c.get("code").and_then(Value::as_str) == Some(REFERRAL_CODE)
                })
            })
}

/// The direction of a referral Task (`up`, `down`), if stated.
pub fn direction(task: &Value) -> Option<&str> {
    task.get("extension")?
        .as_array()?
        .iter()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(DIRECTION_EXTENSION))?
        .get("valueCode")?
        .as_str()
}

/// The id a Reference element points at when it names a `resource_type`
/// (`Organization/x`, or an absolute URL ending so); `None` otherwise.
pub fn reference_id<'a>(reference: Option<&'a Value>, resource_type: &str) -> Option<&'a str> {
    let text = reference?.get("reference")?.as_str()?;
    let text = text.split("/_history").next().unwrap_or(text);
    let mut segments = text.rsplit('/');
    let id = segments.next()?;
    let found_type = segments.next()?;
    (found_type == resource_type && !id.is_empty()).then_some(id)
}

/// The `status` of a Task.
pub fn status(task: &Value) -> Option<&str> {
    task.get("status").and_then(Value::as_str)
}
