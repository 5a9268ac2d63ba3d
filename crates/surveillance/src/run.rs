//! The daily surveillance run over stored case reports: classify, count, detect, and record
//! each alert once as a `Flag` plus a `Communication` (which Subscriptions then deliver).
//!
//! 1. Case reports are every stored `Condition`, and the `Observation`s whose `code` is one of
//!    the configured laboratory tests or exact (non-prefix) diagnosis codes, classified by
//!    [`SurveillanceConfig::classify`] (so refuted and entered-in-error records never count).
//! 2. Each case is placed in a county by [`crate::source::Residences::place_of`]; unplaced
//!    cases are counted in the report, not guessed.
//! 3. Every county series with at least one case in the look-back window runs its disease's
//!    methods for the day asked for. The look-back covers what the slowest method needs: EARS
//!    baseline + lag, CUSUM baseline + guard + 28 warm-up days, CIDARS `years` years plus its
//!    neighbouring periods.
//! 4. Alerts are written with conditional create on their stable identifier
//!    (`urn:phip:surveillance:alert|{disease}-{division}-{date}-{method}`), so a re-run of the
//!    same day creates nothing new. The Flag's subject is a logical reference to the division
//!    (identifier system `urn:phip:division`), and both resources carry the division's
//!    `urn:phip:division` tag so that region-bound users see the alerts of their region only.

use chrono::{Days, NaiveDate};
use phip_engine::{Engine, FhirError, FhirResult, Principal, RequestContext};
use phip_fhir::IssueType;
use phip_security::division;
use serde_json::{json, Value};

use crate::alert::{Alert, ALERT_ID_SYSTEM};
use crate::config::{DiseaseConfig, MethodConfig, SurveillanceConfig};
use crate::series::{CaseEvent, SeriesSet};
use crate::source::{scan, Residences, DIVISION_TAG_SYSTEM};

/// Subject of the server's own surveillance writes (audit trails show it).
pub const RUN_SUBJECT: &str = "phip-surveillance";

/// Cases read from the store for a date range.
#[derive(Debug, Clone, Default)]
pub struct Cases {
    /// The placed case events.
    pub events: Vec<CaseEvent>,
    /// Cases in the range that could not be placed in a division.
    pub unplaced: u64,
    /// Resources read.
    pub scanned: u64,
}

/// Reads the case reports dated `from..=to` (see the module documentation).
pub fn read_cases(
    engine: &Engine,
    config: &SurveillanceConfig,
    from: NaiveDate,
    to: NaiveDate,
) -> FhirResult<Cases> {
    let mut tx = engine.store().begin_read()?;
    let residences = Residences::load(tx.as_mut())?;
    let mut cases = Cases::default();
    let take = |resource: &Value, cases: &mut Cases| {
        let Some(c) = config.classify(resource) else {
            return;
        };
        if c.date < from || c.date > to {
            return;
        }
        match residences.place_of(resource) {
            Some(division) => cases.events.push(CaseEvent {
                date: c.date,
                division,
                disease: c.disease.id.clone(),
            }),
            None => cases.unplaced += 1,
        }
    };
    let mut scanned = scan(tx.as_mut(), "Condition", &[], |r| take(r, &mut cases))?;
    let codes = observation_codes(config);
    if !codes.is_empty() {
        let params = [("code".to_string(), codes.join(","))];
        scanned += scan(tx.as_mut(), "Observation", &params, |r| take(r, &mut cases))?;
    }
    cases.scanned = scanned;
    Ok(cases)
}

/// The `system|code` tokens that find candidate case Observations.
fn observation_codes(config: &SurveillanceConfig) -> Vec<String> {
    let mut codes: Vec<String> = config
        .diseases
        .iter()
        .flat_map(|d| {
            let tests = d.lab_tests.iter().map(|l| &l.test);
            d.codes.iter().chain(tests)
        })
        .filter(|r| !r.prefix)
        .map(|r| format!("{}|{}", r.system, r.code))
        .collect();
    codes.sort();
    codes.dedup();
    codes
}

/// Days of history a disease's methods need before the day evaluated.
pub fn lookback_days(disease: &DiseaseConfig) -> u64 {
    disease
        .methods
        .iter()
        .map(|m| match m {
            MethodConfig::C1(o) | MethodConfig::C2(o) | MethodConfig::C3(o) => {
                o.baseline as u64 + 5
            }
            MethodConfig::Cusum(p) => (p.baseline + p.guard) as u64 + 28,
            MethodConfig::Cidars(p) => {
                u64::from(p.years) * 366 + (u64::from(p.neighbours) + 2) * p.window_days as u64
            }
        })
        .max()
        .unwrap_or(0)
}

/// One alert of a run and what was stored for it.
#[derive(Debug, Clone)]
pub struct RecordedAlert {
    /// The alert.
    pub alert: Alert,
    /// Id of its Flag.
    pub flag_id: String,
    /// Id of its Communication.
    pub communication_id: String,
    /// Whether this run created them (false: an earlier run of the same day had).
    pub created: bool,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The day evaluated.
    pub date: NaiveDate,
    /// First day read.
    pub from: NaiveDate,
    /// Cases counted (placed) in the look-back window.
    pub cases: u64,
    /// Cases that could not be placed in a division.
    pub unplaced: u64,
    /// (disease, county) series evaluated.
    pub series: usize,
    /// The alerts, in disease, division, method order.
    pub alerts: Vec<RecordedAlert>,
}

/// Runs every configured disease's methods for `date` over the stored case reports and
/// records the alerts (see the module documentation). `base_url` is the FHIR base used in
/// the engine's responses.
pub fn run(
    engine: &Engine,
    config: &SurveillanceConfig,
    date: NaiveDate,
    base_url: &str,
) -> FhirResult<RunReport> {
    let lookback = config.diseases.iter().map(lookback_days).max().unwrap_or(0);
    let from = date
        .checked_sub_days(Days::new(lookback))
        .unwrap_or(NaiveDate::MIN);
    let cases = read_cases(engine, config, from, date)?;
    let placed = cases.events.len() as u64;
    let set = SeriesSet::from_events(from, date, cases.events);
    let mut alerts = Vec::new();
    for (key, series) in set.iter() {
        let Some(disease) = config.disease(&key.disease) else {
            continue;
        };
        let found = crate::detect(disease, &key.division, series, date, date)
            .map_err(|e| FhirError::new(500, IssueType::Invalid, e.to_string()))?;
        alerts.extend(found);
    }
    let ctx = RequestContext::new(base_url, Principal::unrestricted(RUN_SUBJECT));
    let mut recorded = Vec::new();
    for alert in alerts {
        recorded.push(record(engine, &ctx, alert)?);
    }
    Ok(RunReport {
        date,
        from,
        cases: placed,
        unplaced: cases.unplaced,
        series: set.len(),
        alerts: recorded,
    })
}

/// Kind of server-owned state an alert's Flag and Communication are: no client can forge an
/// alert or silence one.
const ALERT_KIND: &str = "surveillance-alert";

/// Writes an alert's Flag and Communication, each created only if no resource with its
/// identifier exists.
fn record(engine: &Engine, ctx: &RequestContext, alert: Alert) -> FhirResult<RecordedAlert> {
    let condition = format!("identifier={ALERT_ID_SYSTEM}|{}", alert.identifier());
    let mut flag = alert.to_flag("");
    flag["subject"] = division_reference(&alert.division);
    tag_division(&mut flag, &alert.division);
    phip_fhir::access::mark_server_owned(&mut flag, ALERT_KIND);
    let created_flag = engine.create(ctx, "Flag", flag, Some(&condition))?;
    let flag_id = created_id(&created_flag.body)?;
    let mut communication = alert.to_communication("", Some(&format!("Flag/{flag_id}")));
    communication["about"][0] = division_reference(&alert.division);
    tag_division(&mut communication, &alert.division);
    phip_fhir::access::mark_server_owned(&mut communication, ALERT_KIND);
    let created_comm = engine.create(ctx, "Communication", communication, Some(&condition))?;
    Ok(RecordedAlert {
        communication_id: created_id(&created_comm.body)?,
        flag_id,
        created: created_flag.status == 201 || created_comm.status == 201,
        alert,
    })
}

fn created_id(body: &Option<Value>) -> FhirResult<String> {
    body.as_ref()
        .and_then(|b| b.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| FhirError::new(500, IssueType::Exception, "stored alert has no id"))
}

/// A logical reference to a division (FHIR has no resource for an administrative area).
fn division_reference(code: &str) -> Value {
    let mut reference = json!({
        "identifier": { "system": DIVISION_TAG_SYSTEM, "value": code },
    });
    if let Some(name) = division::name(code) {
        reference["display"] = json!(name);
    }
    reference
}

fn tag_division(resource: &mut Value, code: &str) {
    resource["meta"] = json!({
        "tag": [{ "system": DIVISION_TAG_SYSTEM, "code": code }],
    });
}
