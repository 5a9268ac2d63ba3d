//! `$panel`: the residents a family-doctor team is responsible for.

use chrono::NaiveDate;
use phip_engine::{Engine, FhirResponse, FhirResult, RequestContext};
use phip_security::scope::Interaction;
use phip_store::{StoredResource, Transaction};
use serde_json::{json, Value};

use super::{is_family_doctor_contract, resident_of, team_of, term_of, IN_FORCE};
use crate::lookup::{self, business};

/// The contracts of `team` in force on `date` (executed, or renewed: a renewed contract
/// ran its whole term), by resident (one each: the rule
/// allows no overlap), sorted by resident id.
pub(crate) fn contracts_in_force(
    tx: &mut dyn Transaction,
    team: &str,
    date: NaiveDate,
) -> FhirResult<Vec<(String, StoredResource)>> {
    let Some(team_resource) = lookup::read_live(tx, "CareTeam", team)?.and_then(|t| t.resource)
    else {
        return Err(phip_engine::FhirError::not_found(format!(
            "CareTeam/{team} is not known"
        )));
    };
    let clinic = team_resource
        .get("managingOrganization")
        .and_then(Value::as_array)
        .and_then(|orgs| {
            orgs.iter()
                .find_map(|o| lookup::reference_id(o, "Organization"))
        })
        .ok_or_else(|| {
            business(format!(
                "CareTeam/{team} names no managingOrganization (the contracting clinic)"
            ))
        })?;
    let contracts = lookup::search_all(
        tx,
        "Contract",
        &[
            ("authority", format!("Organization/{clinic}")),
            ("status", IN_FORCE.join(",")),
        ],
    )?;
    let mut in_force: Vec<(String, StoredResource)> = contracts
        .into_iter()
        .filter_map(|stored| {
            let resource = stored.resource.as_ref()?;
            let covers = term_of(resource).is_some_and(|(s, e)| s <= date && date <= e);
            let ours =
                is_family_doctor_contract(resource) && team_of(resource).as_deref() == Some(team);
            let resident = resident_of(resource)?;
            (covers && ours).then_some((resident, stored))
        })
        .collect();
    in_force.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(in_force)
}

/// `GET CareTeam/{id}/$panel?date=YYYY-MM-DD`: the residents under a contract with the
/// team in force on `date`, as a searchset Bundle of `Patient`s (mode `match`) with their
/// contracts (mode `include`). The caller must be able to read the team (its region) and
/// to search contracts and patients.
pub fn panel(
    engine: &Engine,
    ctx: &RequestContext,
    team: &str,
    date: NaiveDate,
) -> FhirResult<FhirResponse> {
    engine.read(ctx, "CareTeam", team)?;
    ctx.principal.require("Contract", Interaction::Search)?;
    ctx.principal.require("Patient", Interaction::Search)?;
    let mut tx = engine.store().begin_read()?;
    let contracts = contracts_in_force(tx.as_mut(), team, date)?;
    let mut entries = Vec::new();
    let mut included = Vec::new();
    for (resident, contract) in &contracts {
        // Only what the caller could read itself: a contract or a resident hidden from it
        // (another region, a resident's refusal) is not on its panel.
        if !ctx
            .principal
            .can_see(tx.as_mut(), "Contract", &contract.id)?
        {
            continue;
        }
        let patient = if ctx.principal.can_see(tx.as_mut(), "Patient", resident)? {
            lookup::read_live(tx.as_mut(), "Patient", resident)?.and_then(|p| p.resource)
        } else {
            None
        };
        if let Some(patient) = patient {
            entries.push(json!({
                "fullUrl": format!("{}/Patient/{resident}", ctx.base_url),
                "resource": patient,
                "search": {"mode": "match"}
            }));
        }
        included.push(json!({
            "fullUrl": format!("{}/Contract/{}", ctx.base_url, contract.id),
            "resource": contract.resource,
            "search": {"mode": "include"}
        }));
    }
    let total = entries.len();
    entries.extend(included);
    Ok(FhirResponse::with_body(
        200,
        json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "total": total,
            "link": [{"relation": "self", "url": format!("{}/CareTeam/{team}/$panel?date={date}", ctx.base_url)}],
            "entry": entries
        }),
    ))
}
