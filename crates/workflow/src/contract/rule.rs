//! The contract rule: one contract in force per resident per day, and a one-way status chain.

use super::{
    is_family_doctor_contract, resident_of, team_of, term_of, FAMILY_DOCTOR, IN_FORCE,
    TEAM_CATEGORY_SYSTEM,
};
use crate::lookup::{self, business, conflict};
use phip_engine::{FhirResult, RuleContext, WriteRule};
use phip_store::WriteRequest;

/// Final contract statuses.
const FINAL: &[&str] = &[
    "terminated",
    "renewed",
    "revoked",
    "cancelled",
    "rejected",
    "entered-in-error",
];

/// Guards family-doctor `Contract`s:
/// - an `executed` contract names one resident (`subject`), a family-doctor team
///   (`topicReference` to a CareTeam of that category) and its term (`applies.start` ≤
///   `applies.end`), and no other executed contract of the resident may cover any of its
///   days (409) — a `renewed` contract still covers its own term;
/// - a contract in a final status (terminated, renewed, revoked, cancelled, rejected,
///   entered-in-error) no longer changes (409), and an executed one is terminated, not
///   deleted (409).
#[derive(Debug, Default)]
pub struct ContractRule;

impl WriteRule for ContractRule {
    fn name(&self) -> &str {
        "family-doctor-contract"
    }

    fn applies_to(&self, resource_type: &str) -> bool {
        resource_type == "Contract"
    }

    fn check(&self, context: &mut RuleContext<'_>, request: &mut WriteRequest) -> FhirResult<()> {
        let id = request.id.clone();
        let before = context
            .current
            .as_ref()
            .and_then(|c| c.resource.as_ref())
            .filter(|r| is_family_doctor_contract(r));
        let before_status = before.and_then(|r| lookup::status_of(Some(r)));
        let Some(next) = request.resource.as_ref() else {
            if before_status == Some("executed") {
                return Err(conflict(format!(
                    "Contract/{id} is in force; terminate it (status terminated) instead of deleting it"
                )));
            }
            return Ok(());
        };
        if let Some(status) = before_status.filter(|s| FINAL.contains(s)) {
            if before.map(|b| lookup::without(b, &["meta"]))
                != Some(lookup::without(next, &["meta"]))
            {
                return Err(conflict(format!(
                    "Contract/{id} is {status} and can no longer change; sign a new contract"
                )));
            }
            return Ok(());
        }
        if before.is_some() && !is_family_doctor_contract(next) {
            return Err(business(format!(
                "Contract/{id} is a family-doctor contract and keeps that type"
            )));
        }
        if !is_family_doctor_contract(next) || lookup::status_of(Some(next)) != Some("executed") {
            return Ok(());
        }
        let resident = resident_of(next).ok_or_else(|| {
            business("a family-doctor contract names the resident as subject (Patient)")
        })?;
        let team = team_of(next).ok_or_else(|| {
            business("a family-doctor contract names the team as topicReference (CareTeam)")
        })?;
        let (start, end) = term_of(next).ok_or_else(|| {
            business("a family-doctor contract states its term as applies.start and applies.end")
        })?;
        if end < start {
            return Err(business(format!(
                "the contract term ends ({end}) before it starts ({start})"
            )));
        }
        let is_team = lookup::read_live(context.tx, "CareTeam", &team)?
            .and_then(|t| t.resource)
            .is_some_and(|t| {
                lookup::has_coding(t.get("category"), TEAM_CATEGORY_SYSTEM, FAMILY_DOCTOR)
            });
        if !is_team {
            return Err(business(format!(
                "CareTeam/{team} is not a family-doctor team"
            )));
        }
        // The same search for every contract of this resident: on PostgreSQL it also
        // serialises concurrent signings for the resident, so both cannot pass.
        let others = lookup::search(
            context.tx,
            "Contract",
            &[
                ("patient", format!("Patient/{resident}")),
                ("status", IN_FORCE.join(",")),
            ],
            100,
        )?;
        for other in others.iter().filter(|o| o.id != id) {
            let Some(resource) = other.resource.as_ref() else {
                continue;
            };
            if !is_family_doctor_contract(resource) {
                continue;
            }
            let overlaps = term_of(resource).is_some_and(|(s, e)| s <= end && start <= e);
            if overlaps {
                return Err(conflict(format!(
                    "Patient/{resident} already has a family-doctor contract in force for these dates (Contract/{}); renew or terminate it first",
                    other.id
                )));
            }
        }
        Ok(())
    }
}
