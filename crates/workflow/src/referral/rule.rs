//! The write rule that keeps referral Tasks consistent, whatever way they are written.
//!
//! Refusals, chosen by HTTP semantics and kept consistent:
//! * **403 forbidden** — the caller's organisation is not the party entitled to the change
//!   (only the owner receives, accepts, rejects, starts, completes; only the requester issues
//!   and cancels; nobody else edits a referral).
//! * **409 conflict** — the change conflicts with the Task's current state: a transition the
//!   R4 state machine does not allow, an edit of a finished referral, a deletion.
//! * **422 business rule** — the content is wrong whatever the state: a missing party, a
//!   changed party, patient or focus, a rejection without `statusReason`, a down-referral
//!   without its discharge summary, an unknown business status.
//!
//! Every message names the current and requested status and the allowed next states.
//!
//! The server's own principal (authentication off, imports) is bound by neither the state
//! machine nor the parties, so historical referrals import as they were; the structure (both
//! parties, patient, focus, discharge summary of a down-referral) is checked for everyone.

use chrono::{SecondsFormat, Utc};
use phip_engine::{FhirError, FhirResult, Principal, RuleContext, WriteRule};
use phip_fhir::IssueType;
use phip_store::{Transaction, WriteRequest};
use serde_json::{json, Value};

use super::states::{actor_for, is_terminal, next_states, Party};
use super::{
    direction, grant, is_referral, reference_id, status, ReferralConfig, BUSINESS_STATUSES,
    BUSINESS_STATUS_SYSTEM, DISCHARGE_SUMMARY_LOINC, LOINC,
};

/// Enforces the referral workflow on every write of a referral `Task`.
#[derive(Debug, Clone, Default)]
pub struct ReferralRule {
    config: ReferralConfig,
}

impl ReferralRule {
    /// A rule with these settings.
    pub fn new(config: ReferralConfig) -> Self {
        Self { config }
    }
}

fn forbidden(message: String) -> FhirError {
    FhirError::new(403, IssueType::Forbidden, message)
}

fn conflict(message: String) -> FhirError {
    FhirError::new(409, IssueType::Conflict, message)
}

fn business(message: String) -> FhirError {
    FhirError::new(422, IssueType::BusinessRule, message)
}

fn allowed_list(from: &str) -> String {
    let next = next_states(from);
    if next.is_empty() {
        "none".to_owned()
    } else {
        next.join(", ")
    }
}

/// The caller's organisation unless the caller is unrestricted (the server's own work).
fn caller_org(principal: &Principal) -> Option<Option<&str>> {
    if principal.is_unrestricted() {
        None
    } else {
        Some(principal.organization.as_deref())
    }
}

fn party_id(task: &Value, party: Party) -> Option<&str> {
    reference_id(task.get(party.element()), "Organization")
}

impl WriteRule for ReferralRule {
    fn name(&self) -> &str {
        "referral"
    }

    fn applies_to(&self, resource_type: &str) -> bool {
        resource_type == "Task"
    }

    fn check(&self, context: &mut RuleContext<'_>, request: &mut WriteRequest) -> FhirResult<()> {
        let current = context
            .current
            .as_ref()
            .and_then(|c| c.resource.clone())
            .filter(is_referral);
        let id = request.id.clone();
        match (current, request.resource.as_mut()) {
            (None, Some(new)) if is_referral(new) => {
                check_new(context.principal, context.tx, &id, new)
            }
            (None, _) => Ok(()),
            (Some(_), None) => {
                if context.principal.is_unrestricted() {
                    Ok(())
                } else {
                    Err(conflict(format!(
                        "referral Task/{id} cannot be deleted: the requester cancels it, or marks it entered-in-error"
                    )))
                }
            }
            (Some(current), Some(new)) => self.check_change(context, &id, &current, new),
        }
    }
}

/// A new referral: it starts as `draft` or `requested`, names both parties, the patient and
/// an existing ServiceRequest, and is sent by the requester itself.
fn check_new(
    principal: &Principal,
    tx: &mut dyn Transaction,
    id: &str,
    task: &mut Value,
) -> FhirResult<()> {
    let requested = status(task).unwrap_or("").to_owned();
    // The server's own work (imports of historical referrals) may create any state.
    if !principal.is_unrestricted() && requested != "draft" && requested != "requested" {
        return Err(business(format!(
            "a new referral Task/{id} must be draft or requested, not {requested:?}; allowed next states from creation: draft, requested"
        )));
    }
    let requester = party_id(task, Party::Requester).map(str::to_owned);
    let owner = party_id(task, Party::Owner).map(str::to_owned);
    let (Some(requester), Some(_owner)) = (requester, owner) else {
        return Err(business(format!(
            "referral Task/{id} needs requester and owner references to the sending and receiving Organization"
        )));
    };
    if reference_id(task.get("for"), "Patient").is_none() {
        return Err(business(format!(
            "referral Task/{id} needs for = Patient/…"
        )));
    }
    let Some(focus) = reference_id(task.get("focus"), "ServiceRequest").map(str::to_owned) else {
        return Err(business(format!(
            "referral Task/{id} needs focus = the ServiceRequest it tracks"
        )));
    };
    if !exists(tx, "ServiceRequest", &focus)? {
        return Err(business(format!(
            "referral Task/{id}: focus ServiceRequest/{focus} does not exist"
        )));
    }
    match caller_org(principal) {
        None => {}
        Some(Some(org)) if org == requester => {}
        Some(Some(org)) => {
            return Err(forbidden(format!(
                "only the sending organisation (Organization/{requester}) may issue referral Task/{id}; you act for Organization/{org}"
            )))
        }
        Some(None) => {
            return Err(forbidden(format!(
                "issuing referral Task/{id} needs a token bound to the sending organisation (Organization/{requester})"
            )))
        }
    }
    check_direction_and_documents(tx, id, task)?;
    check_business_status(id, task)?;
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    if task.get("authoredOn").is_none() {
        task["authoredOn"] = json!(now);
    }
    task["lastModified"] = json!(now);
    strip_grant_outputs(task);
    Ok(())
}

fn exists(tx: &mut dyn Transaction, resource_type: &str, id: &str) -> FhirResult<bool> {
    Ok(tx
        .read(resource_type, id)?
        .is_some_and(|stored| stored.resource.is_some()))
}

/// `up` or `down` when stated; a down-referral carries the discharge summary as an input of
/// type LOINC 18842-5 referencing an existing DocumentReference or Composition.
fn check_direction_and_documents(
    tx: &mut dyn Transaction,
    id: &str,
    task: &Value,
) -> FhirResult<()> {
    match direction(task) {
        None | Some("up") => Ok(()),
        Some("down") => {
            let summaries: Vec<&Value> = task
                .get("input")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|input| {
                    input
                        .get("type")
                        .and_then(|t| t.get("coding"))
                        .and_then(Value::as_array)
                        .is_some_and(|cs| {
                            cs.iter().any(|c| {
                                c.get("system").and_then(Value::as_str) == Some(LOINC)
                                    && c.get("code").and_then(Value::as_str)
                                        == Some(DISCHARGE_SUMMARY_LOINC)
                            })
                        })
                })
                .collect();
            for input in &summaries {
                for target in ["DocumentReference", "Composition"] {
                    if let Some(doc) = reference_id(input.get("valueReference"), target) {
                        if exists(tx, target, doc)? {
                            return Ok(());
                        }
                        return Err(business(format!(
                            "down-referral Task/{id}: the discharge summary {target}/{doc} does not exist"
                        )));
                    }
                }
            }
            Err(business(format!(
                "down-referral Task/{id} must carry the discharge summary: an input of type {LOINC}|{DISCHARGE_SUMMARY_LOINC} referencing a DocumentReference or Composition"
            )))
        }
        Some(other) => Err(business(format!(
            "referral Task/{id}: direction {other:?} is neither up nor down"
        ))),
    }
}

/// Business statuses in the platform's system must be known codes.
fn check_business_status(id: &str, task: &Value) -> FhirResult<()> {
    let codings = task
        .get("businessStatus")
        .and_then(|b| b.get("coding"))
        .and_then(Value::as_array);
    for coding in codings.into_iter().flatten() {
        if coding.get("system").and_then(Value::as_str) != Some(BUSINESS_STATUS_SYSTEM) {
            continue;
        }
        let code = coding.get("code").and_then(Value::as_str).unwrap_or("");
        if !BUSINESS_STATUSES.contains(&code) {
            return Err(business(format!(
                "referral Task/{id}: business status {code:?} is not one of {}",
                BUSINESS_STATUSES.join(", ")
            )));
        }
    }
    Ok(())
}

fn strip_grant_outputs(task: &mut Value) {
    if let Some(outputs) = task.get_mut("output").and_then(Value::as_array_mut) {
        outputs.retain(|o| !grant::is_grant_output(o));
    }
    if task
        .get("output")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        if let Some(object) = task.as_object_mut() {
            object.remove("output");
        }
    }
}

/// Whether a statusReason says something.
fn has_reason(task: &Value) -> bool {
    task.get("statusReason").is_some_and(|reason| {
        reason
            .get("text")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.trim().is_empty())
            || reason
                .get("coding")
                .and_then(Value::as_array)
                .is_some_and(|c| !c.is_empty())
    })
}

impl ReferralRule {
    fn check_change(
        &self,
        context: &mut RuleContext<'_>,
        id: &str,
        current: &Value,
        new: &mut Value,
    ) -> FhirResult<()> {
        let from = status(current).unwrap_or("").to_owned();
        let to = status(new).unwrap_or("").to_owned();
        if !is_referral(new) {
            return Err(business(format!(
                "Task/{id} is a referral; its code cannot change"
            )));
        }
        for element in ["requester", "owner", "for", "focus"] {
            let before = current.get(element).and_then(|r| r.get("reference"));
            let after = new.get(element).and_then(|r| r.get("reference"));
            if before != after {
                return Err(business(format!(
                    "referral Task/{id}: {element} is fixed at creation and cannot change (status {from})"
                )));
            }
        }
        // The time acceptance is measured from: kept from creation.
        match (current.get("authoredOn"), new.get("authoredOn")) {
            (Some(before), None) => new["authoredOn"] = before.clone(),
            (before, after) if before != after => {
                return Err(business(format!(
                    "referral Task/{id}: authoredOn is fixed at creation and cannot change (status {from})"
                )))
            }
            _ => {}
        }
        let requester = party_id(current, Party::Requester).unwrap_or("").to_owned();
        let owner = party_id(current, Party::Owner).unwrap_or("").to_owned();
        if let Some(org) = caller_org(context.principal) {
            let org = org.unwrap_or("");
            if org != requester && org != owner {
                return Err(forbidden(format!(
                    "referral Task/{id} is between Organization/{requester} and Organization/{owner}; Organization/{org} may not change it"
                )));
            }
            if to != from {
                let (party, entitled) = match actor_for(&to) {
                    Party::Owner => ("the receiving organisation", &owner),
                    Party::Requester => ("the sending organisation", &requester),
                };
                if org != entitled.as_str() {
                    return Err(forbidden(format!(
                        "referral Task/{id} is {from}: only {party} (Organization/{entitled}) may make it {to}"
                    )));
                }
            }
        }
        let bound = !context.principal.is_unrestricted();
        if bound && to != from && !next_states(&from).contains(&to.as_str()) {
            return Err(conflict(format!(
                "referral Task/{id} is {from} and cannot become {to}; allowed next states: {}",
                allowed_list(&from)
            )));
        }
        if bound && to == from && is_terminal(&from) {
            return Err(conflict(format!(
                "referral Task/{id} is {from} and is no longer changed; allowed next states: {}",
                allowed_list(&from)
            )));
        }
        if bound && to == "rejected" && to != from && !has_reason(new) {
            return Err(business(format!(
                "referral Task/{id}: a rejection (from {from}) needs a statusReason saying why"
            )));
        }
        check_direction_and_documents(context.tx, id, new)?;
        check_business_status(id, new)?;

        // The grant outputs are the rule's own: keep the current ones whatever the client sent.
        strip_grant_outputs(new);
        let mut grants = grant::grants_of(current);
        let now = Utc::now();
        if to == "accepted" && to != from {
            let patient = reference_id(current.get("for"), "Patient").unwrap_or("");
            let consent = grant::write(
                context.tx,
                &grant::Grant {
                    task: id,
                    patient,
                    receiver: &owner,
                    sender: &requester,
                    start: now,
                    days: self.config.access_days,
                },
            )?;
            grants.push(consent);
        }
        if matches!(to.as_str(), "cancelled" | "failed" | "entered-in-error") && to != from {
            for consent in &grants {
                grant::revoke(context.tx, consent, now)?;
            }
        }
        if !grants.is_empty() {
            let object = new
                .as_object_mut()
                .ok_or_else(|| FhirError::bad_request("a Task must be a JSON object"))?;
            let outputs = object
                .entry("output")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Some(outputs) = outputs.as_array_mut() {
                outputs.extend(grants.iter().map(|g| grant::output(g)));
            }
        }
        new["lastModified"] = json!(now.to_rfc3339_opts(SecondsFormat::Millis, true));
        Ok(())
    }
}
