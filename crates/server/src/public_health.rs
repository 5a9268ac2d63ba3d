//! Public-health endpoints: device-data ingestion, the daily surveillance run and the regional
//! indicators.
//!
//! - `POST [base]/Observation/$ingest` — high-rate device and wearable vital signs, as NDJSON
//!   (`application/fhir+ndjson`, one Observation per line) or a Bundle of Observations. Each
//!   value is recorded once: its dedupe key (device, patient, codes, effective instant, value)
//!   is hashed with SM3 into the identifier `urn:phip:device-obs|{hash}`, and the Observation is
//!   created only if none carries it (conditional create inside one transaction per chunk).
//!   Lines that fail are reported one by one and never cost the others their place. The answer
//!   is a `Parameters` with `created`, `duplicates`, `rejected` and one `rejected-line` part
//!   (line number + OperationOutcome) per failure.
//! - `POST [base]/$surveillance-run?date=YYYY-MM-DD` — runs every configured detector for the
//!   day over the stored case reports (see `phip_surveillance::run`), answering a `Parameters`
//!   summary with each alert and its explanation.
//! - `GET|POST [base]/$indicators?division=…&period=YYYY-MM` — the regional indicators as a
//!   `Bundle` of `MeasureReport`s (see `phip_indicators`); `POST` also stores them.

use std::collections::HashSet;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::Extension;
use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Utc};
use phip_engine::{Engine, FhirError, FhirResponse, FhirResult, Principal, RequestContext};
use phip_fhir::{IssueType, OperationOutcome};
use phip_security::scope::Interaction;
use phip_surveillance::SurveillanceConfig;
use serde_json::{json, Value};

use crate::handlers::{run, Query};
use crate::http::{error, parse_body, HandlerResult};
use crate::AppState;

/// Identifier system of device observations' dedupe keys.
pub const DEVICE_OBS_SYSTEM: &str = "urn:phip:device-obs";

/// Observations written per transaction: large enough to amortise the commit, small enough
/// that one failing chunk re-runs cheaply entry by entry.
const CHUNK: usize = 500;

/// `POST [base]/Observation/$ingest`.
pub(crate) async fn ingest(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> HandlerResult {
    let query = Query::new(raw);
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let items = if matches!(
        media.as_str(),
        "application/fhir+ndjson" | "application/x-ndjson" | "application/ndjson"
    ) {
        ndjson_items(&body)
    } else {
        bundle_items(parse_body(&headers, &body, false)?)?
    };
    run(state, principal, &headers, &query, move |engine, ctx| {
        ingest_items(engine, ctx, items)
    })
    .await
}

/// One submitted item: its 1-based line (or entry) number and the parsed resource or why it
/// could not be parsed.
type Item = (usize, Result<Value, String>);

fn ndjson_items(body: &[u8]) -> Vec<Item> {
    body.split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(i, line)| {
            (
                i + 1,
                serde_json::from_slice(line).map_err(|e| format!("line is not valid JSON: {e}")),
            )
        })
        .collect()
}

fn bundle_items(bundle: Value) -> Result<Vec<Item>, crate::http::ApiError> {
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(error(
            400,
            IssueType::Invalid,
            "$ingest takes a Bundle of Observations (application/fhir+json) or NDJSON \
             (application/fhir+ndjson)",
        ));
    }
    Ok(bundle
        .get("entry")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    (
                        i + 1,
                        e.get("resource")
                            .cloned()
                            .ok_or_else(|| "entry has no resource".to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Counts and failures of one ingestion.
#[derive(Default)]
struct IngestTally {
    created: u64,
    duplicates: u64,
    rejected: Vec<(usize, OperationOutcome)>,
}

fn ingest_items(
    engine: &Engine,
    ctx: &RequestContext,
    items: Vec<Item>,
) -> FhirResult<FhirResponse> {
    ctx.principal.require("Observation", Interaction::Create)?;
    let mut tally = IngestTally::default();
    let mut seen = HashSet::new();
    let mut ready: Vec<(usize, String, Value)> = Vec::new();
    for (line, parsed) in items {
        let prepared = parsed
            .map_err(|m| OperationOutcome::error(IssueType::Structure, m))
            .and_then(prepare_observation);
        match prepared {
            Err(outcome) => tally.rejected.push((line, outcome)),
            Ok((key, resource)) => {
                if seen.insert(key.clone()) {
                    ready.push((line, key, resource));
                } else {
                    tally.duplicates += 1;
                }
            }
        }
    }
    for chunk in ready.chunks(CHUNK) {
        write_chunk(engine, ctx, chunk, &mut tally)?;
    }
    tally.rejected.sort_by_key(|(line, _)| *line);
    let mut parameters = vec![
        json!({"name": "created", "valueInteger": tally.created}),
        json!({"name": "duplicates", "valueInteger": tally.duplicates}),
        json!({"name": "rejected", "valueInteger": tally.rejected.len()}),
    ];
    for (line, outcome) in tally.rejected {
        parameters.push(json!({
            "name": "rejected-line",
            "part": [
                {"name": "line", "valueInteger": line},
                {"name": "outcome", "resource": outcome.to_json()},
            ]
        }));
    }
    Ok(FhirResponse::with_body(
        200,
        json!({"resourceType": "Parameters", "parameter": parameters}),
    ))
}

/// Writes one chunk as a transaction of conditional creates; if the transaction as a whole
/// is refused (a business rule rejecting one entry), re-runs it as a batch so each entry
/// succeeds or fails on its own. (Finding stored values first with one OR-search per 50 lines
/// was measured slower than the per-entry conditional search on both backends.)
fn write_chunk(
    engine: &Engine,
    ctx: &RequestContext,
    chunk: &[(usize, String, Value)],
    tally: &mut IngestTally,
) -> FhirResult<()> {
    let bundle = |kind: &str| {
        let entries: Vec<Value> = chunk
            .iter()
            .map(|(_, key, resource)| {
                json!({
                    "resource": resource,
                    "request": {
                        "method": "POST",
                        "url": "Observation",
                        "ifNoneExist": format!("identifier={DEVICE_OBS_SYSTEM}|{key}"),
                    }
                })
            })
            .collect();
        json!({"resourceType": "Bundle", "type": kind, "entry": entries})
    };
    let mut minimal = ctx.clone();
    minimal.return_preference = Some(phip_engine::ReturnPreference::Minimal);
    let response = match engine.process_bundle(&minimal, bundle("transaction")) {
        Ok(r) => r,
        Err(e) if e.status < 500 => engine.process_bundle(&minimal, bundle("batch"))?,
        Err(e) => return Err(e),
    };
    let entries = response
        .body
        .as_ref()
        .and_then(|b| b.get("entry"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for ((line, _, _), entry) in chunk.iter().zip(entries) {
        let status = entry["response"]["status"].as_str().unwrap_or("");
        if status.starts_with("201") {
            tally.created += 1;
        } else if status.starts_with("200") {
            tally.duplicates += 1;
        } else {
            let outcome = entry["response"]["outcome"]
                .get("issue")
                .and_then(Value::as_array)
                .and_then(|i| i.first())
                .and_then(|i| i.get("diagnostics"))
                .and_then(Value::as_str)
                .unwrap_or("the entry was not stored")
                .to_string();
            tally.rejected.push((
                *line,
                OperationOutcome::error(IssueType::Processing, outcome),
            ));
        }
    }
    Ok(())
}

/// Checks a submitted device Observation and stamps its dedupe identifier; returns the key.
fn prepare_observation(mut resource: Value) -> Result<(String, Value), OperationOutcome> {
    let invalid = |m: &str| OperationOutcome::error(IssueType::Invalid, m);
    if resource.get("resourceType").and_then(Value::as_str) != Some("Observation") {
        return Err(invalid("$ingest accepts Observation resources only"));
    }
    phip_fhir::validate::validate_resource(&resource)?;
    let key = dedupe_key(&resource).map_err(|m| invalid(&m))?;
    let hash = phip_security::sm::sm3_hex(key.as_bytes());
    let identifiers = resource
        .as_object_mut()
        .ok_or_else(|| invalid("not an object"))?
        .entry("identifier")
        .or_insert_with(|| json!([]));
    if let Some(list) = identifiers.as_array_mut() {
        list.retain(|i| i.get("system").and_then(Value::as_str) != Some(DEVICE_OBS_SYSTEM));
        list.push(json!({"system": DEVICE_OBS_SYSTEM, "value": hash}));
    }
    Ok((hash, resource))
}

/// The canonical text of what makes a device value the same value: device, patient, codes,
/// effective instant (normalised to UTC) and value (numbers normalised, so `72` and `72.0`
/// are one value).
fn dedupe_key(obs: &Value) -> Result<String, String> {
    let device = obs
        .get("device")
        .and_then(|d| {
            d.get("reference")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| {
                    let id = d.get("identifier")?;
                    Some(format!(
                        "{}|{}",
                        id.get("system").and_then(Value::as_str).unwrap_or(""),
                        id.get("value").and_then(Value::as_str)?
                    ))
                })
        })
        .ok_or("a device Observation needs device (reference or identifier)")?;
    let subject = obs
        .get("subject")
        .and_then(|s| s.get("reference"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut codes: Vec<String> = obs
        .get("code")
        .and_then(|c| c.get("coding"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some(format!(
                "{}|{}",
                c.get("system").and_then(Value::as_str).unwrap_or(""),
                c.get("code").and_then(Value::as_str)?
            ))
        })
        .collect();
    if codes.is_empty() {
        return Err("the Observation's code has no coding".into());
    }
    codes.sort();
    let effective = ["effectiveInstant", "effectiveDateTime"]
        .iter()
        .find_map(|k| obs.get(*k).and_then(Value::as_str))
        .or_else(|| {
            obs.pointer("/effectivePeriod/start")
                .and_then(Value::as_str)
        })
        .ok_or("a device Observation needs effectiveInstant or effectiveDateTime")?;
    let instant = DateTime::<FixedOffset>::parse_from_rfc3339(effective)
        .map_err(|_| "the effective time must be an instant with a time zone (e.g. 2026-10-01T08:00:00+08:00)")?
        .with_timezone(&Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let mut values = vec![value_text(obs)];
    for component in obs
        .get("component")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let code = component
            .pointer("/code/coding/0/code")
            .and_then(Value::as_str)
            .unwrap_or("");
        values.push(format!("{code}={}", value_text(component)));
    }
    if values.iter().all(|v| v.is_empty() || v.ends_with('=')) {
        return Err("a device Observation needs a value[x] or component values".into());
    }
    Ok(format!(
        "{device}\n{subject}\n{}\n{instant}\n{}",
        codes.join(","),
        values.join(";")
    ))
}

/// The value[x] of an Observation or component as canonical text ("" when absent).
fn value_text(v: &Value) -> String {
    if let Some(q) = v.get("valueQuantity") {
        let number = q.get("value").map(number_text).unwrap_or_default();
        let unit = q
            .get("code")
            .or_else(|| q.get("unit"))
            .and_then(Value::as_str)
            .unwrap_or("");
        return format!("{number} {unit}");
    }
    for k in ["valueInteger", "valueDecimal"] {
        if let Some(n) = v.get(k) {
            return number_text(n);
        }
    }
    [
        "valueString",
        "valueBoolean",
        "valueCodeableConcept",
        "valueSampledData",
    ]
    .iter()
    .find_map(|k| v.get(*k).map(Value::to_string))
    .unwrap_or_default()
}

/// A decimal without insignificant zeros (`72.50` → `72.5`, `72.0` → `72`).
fn number_text(n: &Value) -> String {
    let text = n.to_string();
    if text.contains('.') && !text.contains(['e', 'E']) {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// Only callers with no patient or regional restriction may run region-wide jobs.
fn require_system(principal: &Principal) -> FhirResult<()> {
    if principal.patient.is_some() || principal.division.is_some() {
        return Err(FhirError::new(
            403,
            IssueType::Forbidden,
            "this operation runs over the whole region: it needs a system-level token \
             without patient or division restriction",
        ));
    }
    Ok(())
}

/// Today in China Standard Time (UTC+8), the surveillance day.
pub(crate) fn today_cst() -> NaiveDate {
    (Utc::now() + chrono::Duration::hours(8)).date_naive()
}

fn parse_date(text: Option<&str>) -> FhirResult<NaiveDate> {
    match text {
        None => Ok(today_cst()),
        Some(t) => NaiveDate::parse_from_str(t, "%Y-%m-%d").map_err(|_| {
            FhirError::new(
                400,
                IssueType::Value,
                format!("date {t:?} is not YYYY-MM-DD"),
            )
        }),
    }
}

/// `POST [base]/$surveillance-run?date=YYYY-MM-DD`.
pub(crate) async fn surveillance_run(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> HandlerResult {
    let query = Query::new(raw);
    let date = query.get("date").map(str::to_owned);
    let config = state.surveillance.clone();
    run(state, principal, &headers, &query, move |engine, ctx| {
        require_system(&ctx.principal)?;
        for (t, i) in [
            ("Condition", Interaction::Search),
            ("Observation", Interaction::Search),
            ("Flag", Interaction::Create),
            ("Communication", Interaction::Create),
        ] {
            ctx.principal.require(t, i)?;
        }
        let date = parse_date(date.as_deref())?;
        let report = phip_surveillance::run::run(engine, &config, date, &ctx.base_url)?;
        Ok(FhirResponse::with_body(200, run_parameters(&report)))
    })
    .await
}

fn run_parameters(report: &phip_surveillance::run::RunReport) -> Value {
    let mut parameters = vec![
        json!({"name": "date", "valueDate": report.date.to_string()}),
        json!({"name": "from", "valueDate": report.from.to_string()}),
        json!({"name": "cases", "valueInteger": report.cases}),
        json!({"name": "unplaced", "valueInteger": report.unplaced}),
        json!({"name": "series", "valueInteger": report.series}),
        json!({"name": "alerts", "valueInteger": report.alerts.len()}),
    ];
    for r in &report.alerts {
        parameters.push(json!({
            "name": "alert",
            "part": [
                {"name": "disease", "valueCode": r.alert.disease.id},
                {"name": "division", "valueCode": r.alert.division},
                {"name": "method", "valueCode": r.alert.method.name()},
                {"name": "observed", "valueDecimal": r.alert.observed},
                {"name": "threshold", "valueDecimal": r.alert.threshold},
                {"name": "flag", "valueReference": {"reference": format!("Flag/{}", r.flag_id)}},
                {"name": "communication", "valueReference": {"reference": format!("Communication/{}", r.communication_id)}},
                {"name": "created", "valueBoolean": r.created},
                {"name": "explanation", "valueString": r.alert.explanation(phip_surveillance::Lang::En)},
            ]
        }));
    }
    json!({"resourceType": "Parameters", "parameter": parameters})
}

/// The surveillance configuration a server runs with: the built-in one unless the data
/// directory holds `surveillance.json`.
pub fn load_surveillance_config(data_dir: &std::path::Path) -> Result<SurveillanceConfig, String> {
    let path = data_dir.join("surveillance.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            SurveillanceConfig::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SurveillanceConfig::builtin()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// `GET|POST [base]/$indicators?division=CODE&period=YYYY-MM`: the indicators of the
/// division (the caller's own division when omitted and the token names one) as a
/// `collection` Bundle of MeasureReports; with `POST` they are also stored (replacing the
/// reports of the same measure, division and period), with the `Measure` definitions.
pub(crate) async fn indicators(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    method: axum::http::Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> HandlerResult {
    let query = Query::new(raw);
    let division = query.get("division").map(str::to_owned);
    let period = query.get("period").map(str::to_owned);
    let store = method == axum::http::Method::POST;
    let config = state.surveillance.clone();
    run(state, principal, &headers, &query, move |engine, ctx| {
        let (code, period) = indicator_scope(&ctx.principal, division, period)?;
        let reports = indicator_reports(engine, &config, &code, &period)?;
        if store {
            ctx.principal
                .require("MeasureReport", Interaction::Update)?;
            store_reports(engine, ctx, &reports)?;
        }
        let entries: Vec<Value> = reports
            .into_iter()
            .map(|r| json!({"resource": r}))
            .collect();
        Ok(FhirResponse::with_body(
            200,
            json!({"resourceType": "Bundle", "type": "collection", "entry": entries}),
        ))
    })
    .await
}

/// Stores indicator reports, each replacing the earlier report of the same measure, division
/// and period (so the history of a MeasureReport is its revisions, which the federation outbox
/// carries to the parent node).
///
/// The reports are the server's own computation: stored as server-owned state by the server
/// itself (once the caller was allowed to ask for it), so no client can forge or edit one.
fn store_reports(engine: &Engine, ctx: &RequestContext, reports: &[Value]) -> FhirResult<()> {
    let server = RequestContext::new(
        ctx.base_url.clone(),
        Principal::unrestricted("phip-indicators"),
    );
    for r in reports {
        let id = r["identifier"][0]["value"].as_str().unwrap_or_default();
        let criteria = format!("identifier={}|{id}", phip_indicators::REPORT_ID_SYSTEM);
        let mut report = r.clone();
        phip_fhir::access::mark_server_owned(&mut report, INDICATOR_KIND);
        engine.conditional_update(&server, "MeasureReport", &criteria, report, None)?;
    }
    Ok(())
}

/// Kind of server-owned state a stored indicator report is.
pub const INDICATOR_KIND: &str = "indicator-report";

/// The months whose indicators a daily run records on `today`: the current month so far, and
/// during the first week of a month also the previous one, which late reports still change.
pub fn indicator_periods_due(today: NaiveDate) -> Vec<phip_indicators::Period> {
    let mut periods = vec![phip_indicators::Period::month_of(today)];
    if today.day() <= 7 {
        if let Some(last_month) = today.with_day(1).and_then(|d| d.pred_opt()) {
            periods.insert(0, phip_indicators::Period::month_of(last_month));
        }
    }
    periods
}

/// Computes and stores the indicators of `division` for each due period, as the server's own
/// work. This is the county-level computation the four-level roll-up starts from: the stored
/// MeasureReports reach the parent node through the federation outbox.
pub fn record_indicators(
    engine: &Engine,
    config: &SurveillanceConfig,
    division: &str,
    today: NaiveDate,
    base_url: &str,
) -> FhirResult<usize> {
    let ctx = RequestContext::new(base_url, Principal::unrestricted("phip-indicators"));
    let mut stored = 0;
    for period in indicator_periods_due(today) {
        let reports = indicator_reports(engine, config, division, &period)?;
        store_reports(engine, &ctx, &reports)?;
        stored += reports.len();
    }
    Ok(stored)
}

/// Checks the caller may see aggregate reports for `division` in `period` and parses them:
/// a region-bound caller sees its own region and the divisions inside it only; patient-bound
/// callers see none.
pub(crate) fn indicator_scope(
    principal: &Principal,
    division: Option<String>,
    period: Option<String>,
) -> FhirResult<(String, phip_indicators::Period)> {
    principal.require("MeasureReport", Interaction::Search)?;
    if principal.patient.is_some() {
        return Err(FhirError::new(
            403,
            IssueType::Forbidden,
            "regional indicators are not available to patient-bound tokens",
        ));
    }
    let code = division
        .or_else(|| principal.division.clone())
        .ok_or_else(|| {
            FhirError::new(
                400,
                IssueType::Required,
                "division=<GB/T 2260 code> is required",
            )
        })?;
    if !phip_security::division::is_valid_code(&code) {
        return Err(FhirError::new(
            400,
            IssueType::Value,
            format!("division {code:?} is not a six-digit GB/T 2260 code"),
        ));
    }
    if let Some(mine) = &principal.division {
        if !phip_security::division::contains(mine, &code) {
            return Err(FhirError::new(
                403,
                IssueType::Forbidden,
                format!(
                    "the access token is bound to division {mine}, which does not contain {code}"
                ),
            ));
        }
    }
    let period = match period {
        Some(p) => phip_indicators::Period::parse(&p)
            .map_err(|m| FhirError::new(400, IssueType::Value, m))?,
        None => phip_indicators::Period::month_of(today_cst()),
    };
    Ok((code, period))
}

/// Every indicator's MeasureReport for `code` in `period`.
pub(crate) fn indicator_reports(
    engine: &Engine,
    config: &SurveillanceConfig,
    code: &str,
    period: &phip_indicators::Period,
) -> FhirResult<Vec<Value>> {
    let facts = phip_indicators::Facts::collect(engine, config, period)?;
    Ok(phip_indicators::MEASURES
        .iter()
        .map(|m| phip_indicators::measure_report(m, code, period, facts.ratio(m, code)))
        .collect())
}

/// Hour (China Standard Time) of the daily surveillance run.
pub const DAILY_RUN_HOUR_CST: u32 = 6;

/// Runs the surveillance detectors every day at [`DAILY_RUN_HOUR_CST`]:00 China Standard Time
/// for the previous (complete) day, as `$surveillance-run` would, logging the outcome. Alerts
/// are idempotent, so a run that repeats a day a client already ran creates nothing new.
///
/// With `indicator_division` (a federation node's own division), each run also records that
/// division's indicators ([`record_indicators`]), so they roll up the hierarchy every day.
pub fn spawn_daily_surveillance(
    engine: std::sync::Arc<Engine>,
    config: std::sync::Arc<SurveillanceConfig>,
    base_url: String,
    indicator_division: Option<String>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let now = Utc::now() + chrono::Duration::hours(8);
            let today_run = now
                .date_naive()
                .and_hms_opt(DAILY_RUN_HOUR_CST, 0, 0)
                .unwrap_or(now.naive_utc());
            let next = if now.naive_utc() < today_run {
                today_run
            } else {
                today_run + chrono::Duration::days(1)
            };
            let wait = (next - now.naive_utc()).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
            let day = next.date() - chrono::Duration::days(1);
            if let Some(division) = indicator_division.clone() {
                let (engine, config, base) = (engine.clone(), config.clone(), base_url.clone());
                let today = next.date();
                let result = tokio::task::spawn_blocking(move || {
                    record_indicators(&engine, &config, &division, today, &base)
                })
                .await;
                match result {
                    Ok(Ok(reports)) => tracing::info!(%today, reports, "daily indicators recorded"),
                    Ok(Err(e)) => tracing::error!(%today, error = ?e, "daily indicators failed"),
                    Err(e) => tracing::error!(%today, error = %e, "daily indicators panicked"),
                }
            }
            let (engine, config, base) = (engine.clone(), config.clone(), base_url.clone());
            let result = tokio::task::spawn_blocking(move || {
                phip_surveillance::run::run(&engine, &config, day, &base)
            })
            .await;
            match result {
                Ok(Ok(report)) => tracing::info!(
                    %day,
                    cases = report.cases,
                    unplaced = report.unplaced,
                    alerts = report.alerts.len(),
                    new_alerts = report.alerts.iter().filter(|a| a.created).count(),
                    "daily surveillance run"
                ),
                Ok(Err(e)) => tracing::error!(%day, error = ?e, "daily surveillance run failed"),
                Err(e) => tracing::error!(%day, error = %e, "daily surveillance run panicked"),
            }
        }
    })
}
