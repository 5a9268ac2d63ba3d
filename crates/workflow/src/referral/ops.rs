//! Referral operations over the engine: `$transition` (and its shorthands such as `$accept`)
//! and `$referral-report`. Transitions are ordinary updates of the Task, so
//! [`super::ReferralRule`] remains the single source of truth for what is allowed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use phip_engine::{
    Decision, Engine, FhirError, FhirResponse, FhirResult, Principal, RequestContext,
};
use phip_fhir::search::query;
use phip_fhir::IssueType;
use phip_security::scope::Interaction;
use phip_store::{
    HistoryQuery, HistoryScope, PageCursor, SearchRequest, StoredResource, Transaction,
};
use serde_json::{json, Value};

use super::{
    is_referral, reference_id, states::STATUSES, status, BUSINESS_STATUS_SYSTEM, REFERRAL_CODE,
    WORKFLOW_SYSTEM,
};

/// The status a shorthand operation moves a referral to (`$accept` → `accepted`, …).
pub fn shorthand(operation: &str) -> Option<&'static str> {
    Some(match operation {
        "$receive" => "received",
        "$accept" => "accepted",
        "$reject" => "rejected",
        "$start" => "in-progress",
        "$hold" => "on-hold",
        "$complete" => "completed",
        "$fail" => "failed",
        "$cancel" => "cancelled",
        _ => return None,
    })
}

/// What a transition asks for, from a `Parameters` body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transition {
    /// The new `Task.status`.
    pub status: Option<String>,
    /// Why (`Task.statusReason`); required for a rejection.
    pub reason: Option<Value>,
    /// The new `Task.businessStatus`.
    pub business_status: Option<Value>,
    /// A note to append to `Task.note`.
    pub note: Option<String>,
}

fn parameter<'a>(parameters: &'a Value, name: &str) -> Option<&'a Value> {
    parameters
        .get("parameter")?
        .as_array()?
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
}

impl Transition {
    /// Reads `status` (code), `reason` (string or CodeableConcept), `businessStatus` (code in
    /// the platform's system, Coding or CodeableConcept) and `note` (string) from `parameters`
    /// (an empty body is an empty transition).
    pub fn from_parameters(parameters: &Value) -> FhirResult<Self> {
        if !parameters.is_null()
            && parameters.get("resourceType").and_then(Value::as_str) != Some("Parameters")
        {
            return Err(FhirError::bad_request(
                "the body of a referral transition must be a Parameters resource",
            ));
        }
        let status = parameter(parameters, "status").map(|p| {
            p.get("valueCode")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| FhirError::bad_request("parameter status needs a valueCode"))
        });
        let reason = parameter(parameters, "reason").map(|p| {
            if let Some(text) = p.get("valueString").and_then(Value::as_str) {
                Ok(json!({"text": text}))
            } else if let Some(concept) = p.get("valueCodeableConcept") {
                Ok(concept.clone())
            } else {
                Err(FhirError::bad_request(
                    "parameter reason needs a valueString or valueCodeableConcept",
                ))
            }
        });
        let business_status = parameter(parameters, "businessStatus").map(|p| {
            if let Some(code) = p.get("valueCode").and_then(Value::as_str) {
                Ok(json!({"coding": [{"system": BUSINESS_STATUS_SYSTEM, "code": code}]}))
            } else if let Some(coding) = p.get("valueCoding") {
                Ok(json!({"coding": [coding]}))
            } else if let Some(concept) = p.get("valueCodeableConcept") {
                Ok(concept.clone())
            } else {
                Err(FhirError::bad_request(
                    "parameter businessStatus needs a valueCode, valueCoding or valueCodeableConcept",
                ))
            }
        });
        let note = parameter(parameters, "note")
            .and_then(|p| p.get("valueString"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(Self {
            status: status.transpose()?,
            reason: reason.transpose()?,
            business_status: business_status.transpose()?,
            note,
        })
    }

    /// Applies the transition to a Task body.
    fn apply(&self, task: &mut Value, author: &Principal) {
        if let Some(status) = &self.status {
            task["status"] = json!(status);
        }
        if let Some(reason) = &self.reason {
            task["statusReason"] = reason.clone();
        }
        if let Some(business) = &self.business_status {
            task["businessStatus"] = business.clone();
        }
        if let Some(text) = &self.note {
            let mut note = json!({
                "text": text,
                "time": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            });
            if let Some(org) = &author.organization {
                note["authorReference"] = json!({"reference": format!("Organization/{org}")});
            }
            match task.get_mut("note").and_then(Value::as_array_mut) {
                Some(notes) => notes.push(note),
                None => task["note"] = json!([note]),
            }
        }
    }
}

/// `POST Task/{id}/$transition` (or a shorthand): reads the referral as the caller, applies
/// `transition` and updates it under an `If-Match` of the version read, so a concurrent
/// change is a 412 rather than lost.
pub fn transition(
    engine: &Engine,
    ctx: &RequestContext,
    id: &str,
    transition: &Transition,
) -> FhirResult<FhirResponse> {
    let Some(wanted) = &transition.status else {
        if transition.business_status.is_none() && transition.note.is_none() {
            return Err(FhirError::bad_request(
                "a referral transition needs a status, businessStatus or note parameter",
            ));
        }
        return update(engine, ctx, id, transition);
    };
    if !STATUSES.contains(&wanted.as_str()) {
        return Err(FhirError::new(
            422,
            IssueType::CodeInvalid,
            format!(
                "{wanted:?} is not a Task status; statuses are {}",
                STATUSES.join(", ")
            ),
        ));
    }
    update(engine, ctx, id, transition)
}

fn update(
    engine: &Engine,
    ctx: &RequestContext,
    id: &str,
    transition: &Transition,
) -> FhirResult<FhirResponse> {
    let read = engine.read(ctx, "Task", id)?;
    let mut task = read
        .body
        .ok_or_else(|| FhirError::not_found(format!("Task/{id} not found")))?;
    if !is_referral(&task) {
        return Err(FhirError::new(
            422,
            IssueType::BusinessRule,
            format!("Task/{id} is not a referral (code {WORKFLOW_SYSTEM}|{REFERRAL_CODE})"),
        ));
    }
    transition.apply(&mut task, &ctx.principal);
    engine.update(ctx, "Task", id, task, read.version_id)
}

/// Runs a search in `tx` and returns every match `principal` may see, following pages.
pub(crate) fn search_visible(
    tx: &mut dyn Transaction,
    principal: &Principal,
    resource_type: &str,
    params: &[(String, String)],
    limit: usize,
) -> FhirResult<Vec<StoredResource>> {
    let parsed = query::parse(Some(resource_type), params, true)
        .map_err(|outcome| FhirError::from_outcome(400, outcome))?;
    let mut cursor = PageCursor::First;
    let mut found = Vec::new();
    loop {
        let page = tx.search(&SearchRequest {
            query: parsed.query.clone(),
            cursor,
            page_size: 500,
            access: principal.access(),
        })?;
        found.extend(page.matches.into_iter().filter(|m| m.resource.is_some()));
        match page.next {
            Some(next) if found.len() < limit => cursor = PageCursor::After(next),
            _ => break,
        }
    }
    found.truncate(limit);
    Ok(found)
}

/// The most referrals one report covers; a wider report must narrow its period.
const MAX_REPORTED: usize = 50_000;

/// One referral's facts for the report.
struct Fact {
    status: String,
    requester: String,
    owner: String,
    /// Minutes from `authoredOn` to the first version that was `accepted`.
    to_acceptance: Option<f64>,
    accepted: bool,
}

fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    phip_fhir::search::parse_date_range(text)
        .and_then(|(start, _)| DateTime::from_timestamp_millis(start))
}

/// When the Task first became accepted (its history is read oldest-last, newest-first).
fn accepted_at(tx: &mut dyn Transaction, id: &str) -> FhirResult<Option<DateTime<Utc>>> {
    let mut cursor = None;
    let mut earliest = None;
    loop {
        let page = tx.history(&HistoryQuery {
            scope: HistoryScope::Instance {
                resource_type: "Task".into(),
                id: id.to_owned(),
            },
            since: None,
            before: None,
            count: 100,
            cursor,
            access: phip_store::Access::Server,
        })?;
        for version in &page.versions {
            if version.resource.as_ref().and_then(|r| status(r)) == Some("accepted") {
                earliest = Some(version.last_updated);
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(earliest)
}

fn minutes(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 60_000.0
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len() % 2 == 0 {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    })
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn minutes_quantity(value: f64) -> Value {
    let rounded = (value * 10.0).round() / 10.0;
    json!({"value": rounded, "unit": "min", "system": "http://unitsofmeasure.org", "code": "min"})
}

fn timing_parts(values: &mut [f64]) -> Vec<Value> {
    let mut parts = vec![json!({"name": "count", "valueInteger": values.len()})];
    if let Some(m) = mean(values) {
        parts.push(json!({"name": "mean", "valueQuantity": minutes_quantity(m)}));
    }
    if let Some(m) = median(values) {
        parts.push(json!({"name": "median", "valueQuantity": minutes_quantity(m)}));
    }
    parts
}

/// `GET Task/$referral-report?start=…&end=…&organization=…`: referrals authored in the period
/// (both bounds optional, inclusive, on `authoredOn`) that the caller may see — optionally
/// only those where `organization` is the sender or receiver — counted by status, with the
/// time from `authoredOn` to acceptance (mean and median, in minutes, from the Task's
/// history) overall and per sending and receiving organisation. A caller whose token names an
/// organisation reports on that organisation's referrals only. Returns `Parameters`.
pub fn report(
    engine: &Engine,
    ctx: &RequestContext,
    params: &[(String, String)],
) -> FhirResult<FhirResponse> {
    let principal = &ctx.principal;
    if principal.require("Task", Interaction::Search)? != Decision::Full {
        return Err(FhirError::new(
            403,
            IssueType::Forbidden,
            "the referral report is for institutions: it needs user- or system-level Task search",
        ));
    }
    let mut query = vec![(
        "code".to_owned(),
        format!("{WORKFLOW_SYSTEM}|{REFERRAL_CODE}"),
    )];
    let mut organization = None;
    for (name, value) in params {
        match name.as_str() {
            "start" => query.push(("authored-on".into(), format!("ge{value}"))),
            "end" => query.push(("authored-on".into(), format!("le{value}"))),
            "organization" => {
                let id = value.rsplit('/').next().unwrap_or(value).to_owned();
                organization = Some(id);
            }
            "_format" | "_pretty" => {}
            other => {
                return Err(FhirError::bad_request(format!(
                    "$referral-report takes start, end and organization; not {other:?}"
                )))
            }
        }
    }
    // An institution's report covers the referrals it sent or received; a regional or
    // system caller (no organisation in its token) may choose any organisation or none.
    if let (false, Some(own)) = (principal.is_unrestricted(), &principal.organization) {
        match &organization {
            Some(asked) if asked != own => {
                return Err(FhirError::new(
                    403,
                    IssueType::Forbidden,
                    format!("Organization/{own} may report only on its own referrals, not Organization/{asked}'s"),
                ))
            }
            _ => organization = Some(own.clone()),
        }
    }
    let mut tx = engine.store().begin_read()?;
    let tasks = search_visible(tx.as_mut(), principal, "Task", &query, MAX_REPORTED)?;
    let mut facts = Vec::new();
    for stored in tasks {
        let Some(task) = stored.resource else {
            continue;
        };
        let requester = reference_id(task.get("requester"), "Organization")
            .unwrap_or("")
            .to_owned();
        let owner = reference_id(task.get("owner"), "Organization")
            .unwrap_or("")
            .to_owned();
        if let Some(org) = &organization {
            if org != &requester && org != &owner {
                continue;
            }
        }
        let authored = task
            .get("authoredOn")
            .and_then(Value::as_str)
            .and_then(parse_instant);
        let accepted = accepted_at(tx.as_mut(), &stored.id)?;
        facts.push(Fact {
            status: status(&task).unwrap_or("unknown").to_owned(),
            requester,
            owner,
            to_acceptance: match (authored, accepted) {
                (Some(a), Some(b)) => Some(minutes(a, b)),
                _ => None,
            },
            accepted: accepted.is_some(),
        });
    }
    Ok(FhirResponse::with_body(200, report_body(&facts)))
}

fn report_body(facts: &[Fact]) -> Value {
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for fact in facts {
        *by_status.entry(fact.status.as_str()).or_default() += 1;
    }
    let mut parameters = vec![json!({"name": "total", "valueInteger": facts.len()})];
    for (code, count) in &by_status {
        parameters.push(json!({"name": "status", "part": [
            {"name": "code", "valueCode": code},
            {"name": "count", "valueInteger": count}
        ]}));
    }
    let mut all: Vec<f64> = facts.iter().filter_map(|f| f.to_acceptance).collect();
    parameters.push(json!({"name": "timeToAcceptance", "part": timing_parts(&mut all)}));
    for (role, pick) in [
        (
            "sender",
            (|f: &Fact| f.requester.clone()) as fn(&Fact) -> String,
        ),
        ("receiver", |f: &Fact| f.owner.clone()),
    ] {
        let mut groups: BTreeMap<String, Vec<&Fact>> = BTreeMap::new();
        for fact in facts {
            groups.entry(pick(fact)).or_default().push(fact);
        }
        for (org, group) in groups {
            let mut times: Vec<f64> = group.iter().filter_map(|f| f.to_acceptance).collect();
            let mut parts = vec![
                json!({"name": "organization", "valueReference": {"reference": format!("Organization/{org}")}}),
                json!({"name": "role", "valueCode": role}),
                json!({"name": "count", "valueInteger": group.len()}),
                json!({"name": "accepted", "valueInteger": group.iter().filter(|f| f.accepted).count()}),
                json!({"name": "rejected", "valueInteger": group.iter().filter(|f| f.status == "rejected").count()}),
            ];
            parts.push(json!({"name": "timeToAcceptance", "part": timing_parts(&mut times)}));
            parameters.push(json!({"name": "organization", "part": parts}));
        }
    }
    json!({"resourceType": "Parameters", "parameter": parameters})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_mean_of_even_and_odd_counts() {
        assert_eq!(median(&mut [240.0, 60.0, 120.0]), Some(120.0));
        assert_eq!(median(&mut [60.0, 120.0]), Some(90.0));
        assert_eq!(median(&mut []), None);
        assert_eq!(mean(&[60.0, 120.0, 240.0]), Some(140.0));
    }

    #[test]
    fn transition_parameters() {
        let t = Transition::from_parameters(&json!({"resourceType": "Parameters", "parameter": [
            {"name": "status", "valueCode": "rejected"},
            {"name": "reason", "valueString": "no bed"},
            {"name": "businessStatus", "valueCode": "awaiting-triage"}
        ]}))
        .expect("parameters");
        assert_eq!(t.status.as_deref(), Some("rejected"));
        assert_eq!(t.reason, Some(json!({"text": "no bed"})));
        assert!(Transition::from_parameters(&json!({"resourceType": "Patient"})).is_err());
        assert_eq!(
            Transition::from_parameters(&Value::Null).expect("empty"),
            Transition::default()
        );
    }
}
