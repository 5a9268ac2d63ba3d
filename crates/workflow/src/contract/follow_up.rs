//! `$follow-ups-due`: which residents of a team need a chronic-disease follow-up.

use std::collections::HashSet;

use chrono::{Days, NaiveDate};
use phip_engine::{Engine, FhirResponse, FhirResult, RequestContext};
use phip_security::scope::Interaction;
use phip_store::Transaction;
use serde_json::{json, Value};

use super::panel::contracts_in_force;
use super::{CHRONIC_FOLLOW_UP, PLAN_CATEGORY_SYSTEM};
use crate::lookup;

/// The follow-up interval when a plan states none: quarterly, the national basic public
/// health service specification's four face-to-face follow-ups a year for hypertension and
/// type 2 diabetes.
pub const DEFAULT_INTERVAL_DAYS: u64 = 90;

/// Where one plan stands on a given date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowUpStatus {
    /// The resident.
    pub patient: String,
    /// The follow-up plan.
    pub care_plan: String,
    /// The disease followed (the plan activity's `detail.code`), if stated.
    pub condition: Option<Value>,
    /// The last completed follow-up on or before the date, if any.
    pub last_follow_up: Option<NaiveDate>,
    /// When the next follow-up is due: the last one (or, before the first, the plan's start)
    /// plus the interval.
    pub due: NaiveDate,
    /// The interval in days.
    pub interval_days: u64,
}

/// The interval of a plan: the smallest over its activities'
/// `detail.scheduledTiming.repeat` (`period`/`periodUnit` divided by `frequency`), or
/// [`DEFAULT_INTERVAL_DAYS`].
fn interval_days(plan: &Value) -> u64 {
    let activities = plan.get("activity").and_then(Value::as_array);
    activities
        .into_iter()
        .flatten()
        .filter_map(|activity| {
            let repeat = activity
                .get("detail")?
                .get("scheduledTiming")?
                .get("repeat")?;
            let period = repeat.get("period")?.as_f64()?;
            let unit_days = match repeat.get("periodUnit")?.as_str()? {
                "d" => 1.0,
                "wk" => 7.0,
                "mo" => 30.0,
                "a" => 365.0,
                _ => return None,
            };
            let frequency = repeat
                .get("frequency")
                .and_then(Value::as_f64)
                .filter(|f| *f >= 1.0)
                .unwrap_or(1.0);
            let days = (period * unit_days / frequency).floor();
            (days >= 1.0).then_some(days as u64)
        })
        .min()
        .unwrap_or(DEFAULT_INTERVAL_DAYS)
}

/// The date a completed follow-up took place.
fn performed_on(procedure: &Value) -> Option<NaiveDate> {
    let text = procedure
        .get("performedDateTime")
        .or_else(|| procedure.get("performedPeriod").and_then(|p| p.get("end")))
        .or_else(|| {
            procedure
                .get("performedPeriod")
                .and_then(|p| p.get("start"))
        })?
        .as_str()?;
    lookup::date_of(text)
}

/// Where each active follow-up plan of `team`'s contracted residents stands on `date`.
pub(crate) fn statuses(
    tx: &mut dyn Transaction,
    team: &str,
    date: NaiveDate,
) -> FhirResult<Vec<FollowUpStatus>> {
    let residents: HashSet<String> = contracts_in_force(tx, team, date)?
        .into_iter()
        .map(|(resident, _)| resident)
        .collect();
    let plans = lookup::search_all(
        tx,
        "CarePlan",
        &[
            ("care-team", format!("CareTeam/{team}")),
            ("status", "active".to_owned()),
            (
                "category",
                format!("{PLAN_CATEGORY_SYSTEM}|{CHRONIC_FOLLOW_UP}"),
            ),
        ],
    )?;
    let mut out = Vec::new();
    for stored in plans {
        let Some(plan) = stored.resource.as_ref() else {
            continue;
        };
        let Some(patient) = plan
            .get("subject")
            .and_then(|s| lookup::reference_id(s, "Patient"))
        else {
            continue;
        };
        if !residents.contains(&patient) {
            continue;
        }
        let start = plan
            .get("period")
            .and_then(|p| p.get("start"))
            .or_else(|| plan.get("created"))
            .and_then(Value::as_str)
            .and_then(lookup::date_of);
        let procedures = lookup::search_all(
            tx,
            "Procedure",
            &[
                ("based-on", format!("CarePlan/{}", stored.id)),
                ("status", "completed".to_owned()),
            ],
        )?;
        let last = procedures
            .iter()
            .filter_map(|p| p.resource.as_ref().and_then(performed_on))
            .filter(|d| *d <= date)
            .max();
        let Some(base) = last.or(start) else {
            continue;
        };
        let interval = interval_days(plan);
        let Some(due) = base.checked_add_days(Days::new(interval)) else {
            continue;
        };
        let condition = plan
            .get("activity")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find_map(|x| x.get("detail")?.get("code").cloned()));
        out.push(FollowUpStatus {
            patient,
            care_plan: stored.id.clone(),
            condition,
            last_follow_up: last,
            due,
            interval_days: interval,
        });
    }
    out.sort_by(|a, b| (a.due, &a.patient).cmp(&(b.due, &b.patient)));
    Ok(out)
}

/// `GET CareTeam/{id}/$follow-ups-due?date=YYYY-MM-DD&within=N`: the team's contracted
/// residents whose chronic-disease follow-up is overdue on `date` (due before it) or due
/// within the next `within` days (0 = due on the date itself), from the last completed
/// follow-up `Procedure` based on each active plan. Answers a `Parameters` with one
/// `overdue` or `due` parameter per plan, each with parts `patient`, `carePlan`,
/// `condition`, `lastFollowUp`, `dueDate`, `intervalDays` and, when overdue,
/// `daysOverdue`.
pub fn follow_ups_due(
    engine: &Engine,
    ctx: &RequestContext,
    team: &str,
    date: NaiveDate,
    within_days: u64,
) -> FhirResult<FhirResponse> {
    engine.read(ctx, "CareTeam", team)?;
    for resource_type in ["Contract", "CarePlan", "Procedure"] {
        ctx.principal.require(resource_type, Interaction::Search)?;
    }
    let horizon = date
        .checked_add_days(Days::new(within_days))
        .unwrap_or(NaiveDate::MAX);
    let mut tx = engine.store().begin_read()?;
    let mut parameters = vec![json!({"name": "date", "valueDate": date.to_string()})];
    for status in statuses(tx.as_mut(), team, date)? {
        // A resident's plan the caller could not read itself is not listed to it.
        if !ctx
            .principal
            .can_see(tx.as_mut(), "CarePlan", &status.care_plan)?
        {
            continue;
        }
        let overdue = status.due < date;
        if !overdue && status.due > horizon {
            continue;
        }
        let mut parts = vec![
            json!({"name": "patient", "valueReference": {"reference": format!("Patient/{}", status.patient)}}),
            json!({"name": "carePlan", "valueReference": {"reference": format!("CarePlan/{}", status.care_plan)}}),
        ];
        if let Some(condition) = status.condition {
            parts.push(json!({"name": "condition", "valueCodeableConcept": condition}));
        }
        if let Some(last) = status.last_follow_up {
            parts.push(json!({"name": "lastFollowUp", "valueDate": last.to_string()}));
        }
        parts.push(json!({"name": "dueDate", "valueDate": status.due.to_string()}));
        parts.push(json!({"name": "intervalDays", "valueInteger": status.interval_days}));
        if overdue {
            let days = (date - status.due).num_days();
            parts.push(json!({"name": "daysOverdue", "valueInteger": days}));
        }
        parameters.push(json!({
            "name": if overdue { "overdue" } else { "due" },
            "part": parts
        }));
    }
    Ok(FhirResponse::with_body(
        200,
        json!({"resourceType": "Parameters", "parameter": parameters}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_come_from_the_timing_or_default_to_quarterly() {
        let plan = |repeat: Value| json!({"activity": [{"detail": {"scheduledTiming": {"repeat": repeat}}}]});
        assert_eq!(interval_days(&json!({})), 90);
        assert_eq!(
            interval_days(&plan(json!({"period": 90, "periodUnit": "d"}))),
            90
        );
        assert_eq!(
            interval_days(&plan(json!({"period": 1, "periodUnit": "mo"}))),
            30
        );
        assert_eq!(
            interval_days(&plan(
                json!({"frequency": 4, "period": 1, "periodUnit": "a"})
            )),
            91
        );
        assert_eq!(
            interval_days(&plan(json!({"period": 2, "periodUnit": "wk"}))),
            14
        );
    }
}
