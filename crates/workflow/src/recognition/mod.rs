//! Mutual recognition of examination and test results.
//!
//! A result issued by any institution of the region stays *recognisable* — another
//! institution may rely on it instead of repeating the test — for a window that depends on the
//! test's category and the region ([`config`]). [`find`] returns a patient's recognisable
//! results for some test codes (LOINC, or local codes mapped to LOINC by a `ConceptMap`, see
//! [`concept_map`]), each annotated with the issuing institution and its level;
//! [`recognizable_results`] is `Patient/{id}/$recognizable-results`; and
//! [`OrderAdvisoryRule`] marks a new order for a test a recognisable result already covers.
//!
//! Results are found with the caller's own access rights (residents' consents, least
//! privilege by region, patient-level grants), so recognition never reveals a record the
//! caller could not read.

pub mod advisory;
pub mod concept_map;
pub mod config;

pub use advisory::OrderAdvisoryRule;
pub use concept_map::{Code, LocalCodes};
pub use config::{Category, RecognitionConfig, RegionOverride};

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use phip_engine::{
    Decision, Engine, FhirError, FhirResponse, FhirResult, Principal, RequestContext,
};
use phip_fhir::IssueType;
use phip_security::scope::Interaction;
use phip_store::Transaction;
use serde_json::{json, Value};

use crate::referral::ops::search_visible;
use crate::referral::{reference_id, LOINC};

/// Extension on a result's `Bundle.entry.search`: `valueReference`, the issuing Organization.
pub const ISSUER_EXTENSION: &str = "urn:phip:workflow:issuer";
/// Extension on a result's `Bundle.entry.search`: `valueCoding`, the issuer's level.
pub const LEVEL_EXTENSION: &str = "urn:phip:workflow:issuer-level";
/// Extension on a result's `Bundle.entry.search`: `valueDateTime`, the end of its window.
pub const UNTIL_EXTENSION: &str = "urn:phip:workflow:recognizable-until";
/// Extension on a result's `Bundle.entry.search`: `valueCode`, its test category.
pub const CATEGORY_EXTENSION: &str = config::CATEGORY_EXTENSION;
/// The coding system of institution levels in `Organization.type`: `primary`, `secondary`,
/// `tertiary` (the hospital grading of the National Health Commission; a grade such as
/// 三级甲等 may follow in `display`).
pub const LEVEL_SYSTEM: &str = "urn:phip:organization-level";

/// The most results returned per requested code and result type.
const MAX_PER_CODE: usize = 100;

/// A recognisable result.
#[derive(Debug, Clone)]
pub struct Found {
    /// The Observation, DiagnosticReport or ImagingStudy.
    pub resource: Value,
    /// The LOINC code it answers.
    pub loinc: String,
    /// Its category.
    pub category: String,
    /// When it stops being recognisable.
    pub until: DateTime<Utc>,
    /// `Organization/{id}` of the issuer, if known.
    pub issuer: Option<String>,
    /// The issuer's name.
    pub issuer_name: Option<String>,
    /// The issuer's level (a Coding in [`LEVEL_SYSTEM`]), if known.
    pub level: Option<Value>,
}

/// What [`find`] found.
#[derive(Debug, Clone, Default)]
pub struct Recognition {
    /// Recognisable results, newest first.
    pub found: Vec<Found>,
    /// Requested codes that are not in any recognition category (after mapping).
    pub not_recognised: Vec<Code>,
}

/// The effective time of a result.
fn effective(resource: &Value) -> Option<DateTime<Utc>> {
    let text = resource
        .get("effectiveDateTime")
        .or_else(|| resource.get("effectiveInstant"))
        .or_else(|| resource.get("effectivePeriod").and_then(|p| p.get("start")))
        .or_else(|| resource.get("started"))
        .or_else(|| resource.get("issued"))?
        .as_str()?;
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    phip_fhir::search::parse_date_range(text)
        .and_then(|(start, _)| DateTime::from_timestamp_millis(start))
}

/// Whether an ImagingStudy's `procedureCode` has one of `tokens` (`system|code`).
fn has_procedure_code(study: &Value, tokens: &[String]) -> bool {
    study
        .get("procedureCode")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|concept| concept.get("coding").and_then(Value::as_array))
        .flatten()
        .any(|coding| {
            let system = coding.get("system").and_then(Value::as_str).unwrap_or("");
            let code = coding.get("code").and_then(Value::as_str).unwrap_or("");
            tokens.iter().any(|t| *t == format!("{system}|{code}"))
        })
}

/// The issuing Organization: a performer, else the holder the record was written by.
fn issuer(resource: &Value) -> Option<String> {
    let performers = resource.get("performer").and_then(Value::as_array);
    if let Some(id) = performers
        .into_iter()
        .flatten()
        .find_map(|p| reference_id(Some(p), "Organization"))
    {
        return Some(id.to_owned());
    }
    resource
        .get("meta")?
        .get("tag")?
        .as_array()?
        .iter()
        .find(|t| {
            t.get("system").and_then(Value::as_str) == Some(phip_engine::consent::HOLDER_TAG_SYSTEM)
        })?
        .get("code")?
        .as_str()
        .map(str::to_owned)
}

/// Whether `principal` may search `resource_type` in `patient`'s records.
fn may_search(principal: &Principal, resource_type: &str, patient: &str) -> bool {
    match principal.decide(resource_type, Interaction::Search) {
        Decision::Full => true,
        Decision::PatientCompartment(own) => own == patient,
        Decision::Denied => false,
    }
}

/// Finds `patient`'s results for `codes` that are recognisable at `now` by `principal`.
pub fn find(
    tx: &mut dyn Transaction,
    principal: &Principal,
    config: &RecognitionConfig,
    patient: &str,
    codes: &[Code],
    now: DateTime<Utc>,
) -> FhirResult<Recognition> {
    // Terminology and the catalogue are regional reference data: read whatever is stored.
    let server = Principal::unrestricted("recognition");
    let maps = search_visible(
        tx,
        &server,
        "ConceptMap",
        &[("status".to_owned(), "active".to_owned())],
        500,
    )?;
    let local = LocalCodes::from_concept_maps(maps.iter().filter_map(|m| m.resource.as_ref()));
    let overrides: Vec<RegionOverride> =
        search_visible(tx, &server, "Basic", &config::override_query(), 1000)?
            .iter()
            .filter_map(|b| b.resource.as_ref().and_then(config::window_override))
            .collect();
    let mut recognition = Recognition::default();
    let mut seen = BTreeSet::new();
    let mut issuers: std::collections::HashMap<String, Option<Value>> = Default::default();
    for code in codes {
        let Some((loinc, category)) = local
            .loinc_of(code)
            .and_then(|l| config.category_of(&l).map(|c| (l, c)))
        else {
            recognition.not_recognised.push(code.clone());
            continue;
        };
        let days = config.window_days(category, principal.division.as_deref(), &overrides);
        let since = now - Duration::days(days);
        let tokens: Vec<String> = local.equivalents(&loinc).iter().map(Code::token).collect();
        let since_text = format!("ge{}", since.to_rfc3339_opts(SecondsFormat::Secs, true));
        for resource_type in ["Observation", "DiagnosticReport", "ImagingStudy"] {
            if !may_search(principal, resource_type, patient) {
                continue;
            }
            let mut params = vec![("patient".to_owned(), format!("Patient/{patient}"))];
            if resource_type == "ImagingStudy" {
                // R4 has no search parameter on ImagingStudy.procedureCode: search the
                // patient's recent available studies and match the code below.
                params.push(("started".to_owned(), since_text.clone()));
                params.push(("status".to_owned(), "available".to_owned()));
            } else {
                params.push(("code".to_owned(), tokens.join(",")));
                params.push(("date".to_owned(), since_text.clone()));
                params.push(("status".to_owned(), "final,amended,corrected".to_owned()));
            }
            let limit = if resource_type == "ImagingStudy" {
                MAX_PER_CODE * 10
            } else {
                MAX_PER_CODE
            };
            for stored in search_visible(tx, principal, resource_type, &params, limit)? {
                let Some(resource) = stored.resource else {
                    continue;
                };
                if resource_type == "ImagingStudy" && !has_procedure_code(&resource, &tokens) {
                    continue;
                }
                let Some(at) = effective(&resource) else {
                    continue;
                };
                let until = at + Duration::days(days);
                if until < now || !seen.insert(format!("{resource_type}/{}", stored.id)) {
                    continue;
                }
                let issuer = issuer(&resource);
                let organization = match &issuer {
                    Some(id) => issuers
                        .entry(id.clone())
                        .or_insert_with(|| {
                            tx.read("Organization", id)
                                .ok()
                                .flatten()
                                .and_then(|s| s.resource)
                        })
                        .clone(),
                    None => None,
                };
                recognition.found.push(Found {
                    issuer_name: organization
                        .as_ref()
                        .and_then(|o| o.get("name"))
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    level: organization.as_ref().and_then(level_of),
                    issuer: issuer.map(|id| format!("Organization/{id}")),
                    resource,
                    loinc: loinc.clone(),
                    category: category.id.clone(),
                    until,
                });
            }
        }
    }
    recognition
        .found
        .sort_by_key(|f| std::cmp::Reverse(effective(&f.resource)));
    Ok(recognition)
}

/// The level coding of an Organization.
fn level_of(organization: &Value) -> Option<Value> {
    organization
        .get("type")?
        .as_array()?
        .iter()
        .filter_map(|t| t.get("coding").and_then(Value::as_array))
        .flatten()
        .find(|c| c.get("system").and_then(Value::as_str) == Some(LEVEL_SYSTEM))
        .cloned()
}

/// Parses `code` parameters: comma-separated `system|code` tokens; a bare code is LOINC.
pub fn parse_codes(params: &[(String, String)]) -> FhirResult<Vec<Code>> {
    let mut codes = Vec::new();
    for (name, value) in params {
        match name.as_str() {
            "code" => {
                for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    codes.push(match token.split_once('|') {
                        Some((system, code)) if !system.is_empty() && !code.is_empty() => {
                            Code::new(system, code)
                        }
                        Some(_) => {
                            return Err(FhirError::bad_request(format!(
                                "code={token:?} needs both a system and a code (system|code)"
                            )))
                        }
                        None => Code::new(LOINC, token),
                    });
                }
            }
            "_format" | "_pretty" => {}
            other => {
                return Err(FhirError::bad_request(format!(
                    "$recognizable-results takes code; not {other:?}"
                )))
            }
        }
    }
    if codes.is_empty() {
        return Err(FhirError::bad_request(
            "$recognizable-results needs at least one code (LOINC, or system|code of a mapped local code)",
        ));
    }
    Ok(codes)
}

/// The `code` parameters of a `Parameters` body (`valueCoding` or `valueCode`).
pub fn codes_from_parameters(parameters: &Value) -> Vec<(String, String)> {
    parameters
        .get("parameter")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.get("name").and_then(Value::as_str) == Some("code"))
        .filter_map(|p| {
            if let Some(coding) = p.get("valueCoding") {
                let system = coding
                    .get("system")
                    .and_then(Value::as_str)
                    .unwrap_or(LOINC);
                let code = coding.get("code").and_then(Value::as_str)?;
                Some(("code".to_owned(), format!("{system}|{code}")))
            } else {
                let code = p.get("valueCode").and_then(Value::as_str)?;
                Some(("code".to_owned(), code.to_owned()))
            }
        })
        .collect()
}

/// `GET|POST Patient/{id}/$recognizable-results?code=…`: a searchset Bundle of the patient's
/// recognisable Observations, DiagnosticReports and ImagingStudies, each entry's `search.extension` naming its
/// issuer, the issuer's level, its category and when its window ends; requested codes outside
/// every category are reported in an OperationOutcome entry.
pub fn recognizable_results(
    engine: &Engine,
    ctx: &RequestContext,
    config: &RecognitionConfig,
    patient: &str,
    params: &[(String, String)],
) -> FhirResult<FhirResponse> {
    let codes = parse_codes(params)?;
    // The patient must exist and be readable by the caller.
    engine.read(ctx, "Patient", patient)?;
    let mut tx = engine.store().begin_read()?;
    let recognition = find(
        tx.as_mut(),
        &ctx.principal,
        config,
        patient,
        &codes,
        Utc::now(),
    )?;
    let mut entries: Vec<Value> = recognition
        .found
        .iter()
        .map(|found| {
            let resource_type = found
                .resource
                .get("resourceType")
                .and_then(Value::as_str)
                .unwrap_or("");
            let id = found
                .resource
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("");
            let mut extension = Vec::new();
            if let Some(issuer) = &found.issuer {
                let mut reference = json!({"reference": issuer});
                if let Some(name) = &found.issuer_name {
                    reference["display"] = json!(name);
                }
                extension.push(json!({"url": ISSUER_EXTENSION, "valueReference": reference}));
            }
            if let Some(level) = &found.level {
                extension.push(json!({"url": LEVEL_EXTENSION, "valueCoding": level}));
            }
            extension.push(json!({"url": CATEGORY_EXTENSION, "valueCode": found.category}));
            extension.push(json!({
                "url": UNTIL_EXTENSION,
                "valueDateTime": found.until.to_rfc3339_opts(SecondsFormat::Secs, true)
            }));
            json!({
                "fullUrl": format!("{}/{resource_type}/{id}", ctx.base_url),
                "resource": found.resource,
                "search": {"mode": "match", "extension": extension}
            })
        })
        .collect();
    let total = entries.len();
    if !recognition.not_recognised.is_empty() {
        let issues: Vec<Value> = recognition
            .not_recognised
            .iter()
            .map(|code| {
                json!({
                    "severity": "information",
                    "code": "not-found",
                    "diagnostics": format!(
                        "{} is not in any recognition category (nor mapped to a LOINC code that is)",
                        code.token()
                    )
                })
            })
            .collect();
        entries.push(json!({
            "resource": {"resourceType": "OperationOutcome", "issue": issues},
            "search": {"mode": "outcome"}
        }));
    }
    Ok(FhirResponse::with_body(
        200,
        json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "total": total,
            "entry": entries
        }),
    ))
}

/// The 400 for a body that is not Parameters.
pub fn not_parameters() -> FhirError {
    FhirError::new(
        400,
        IssueType::Invalid,
        "the body of $recognizable-results must be a Parameters resource",
    )
}
