//! The residents' electronic health code over HTTP (see `docs/health-code.md`):
//!
//! - `GET|POST [base]/Patient/{id}/$health-code[?alg=ES256|SM2SM3][&_format=image/png|image/svg+xml]`
//!   issues a short-lived code for the resident's master record (JSON Parameters, or the QR
//!   code as PNG / SVG, also chosen by `Accept`);
//! - `POST [base]/Patient/{id}/$health-code-revoke` revokes every code issued so far;
//! - `POST [base]/Patient/$verify` (Parameters `code`) identifies the resident for a clinic
//!   or pharmacy scanner, or refuses the code with 422 and the reason;
//! - `GET [base]/.well-known/jwks.json` and `GET [base]/.well-known/crl/{kid}.json`, public,
//!   for offline verifiers: the issuer (`iss`) of a code is the FHIR base URL.
//!
//! Revocations are kept in the store, one `Basic` per resident
//! (`Basic/health-code-{person}`, code `urn:phip:health-code|revocation`), so every node
//! of a cluster sees them and the history of revocations stays auditable.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::{DateTime, SecondsFormat, Utc};
use phip_engine::{Decision, FhirError, Principal};
use phip_fhir::IssueType;
use phip_healthcode::revocation::{self, Crl};
use phip_healthcode::subject::{PERSON_ID_SYSTEM, RESIDENT_ID};
use phip_healthcode::{qr, HealthCodeError, HealthCodeSubject, IssuerKeys, Refusal, Verifier};
use phip_security::jws::Algorithm;
use phip_security::keys::KeyRing;
use phip_security::scope::Interaction;
use serde_json::{json, Value};

use records::{
    all_revocations, forbidden_for, may_manage, person_of, person_revoked_before,
    record_revocation, require_visible_patient,
};

use crate::handlers::{base_url, Query};
use crate::http::{check_accept, error, fhir_response, parse_body, ApiError, HandlerResult};
use crate::AppState;

mod records;

/// Code system of the revocation records and of refusal reasons.
pub const HEALTH_CODE_SYSTEM: &str = "urn:phip:health-code";
const REFUSAL_SYSTEM: &str = "urn:phip:health-code:refusal";

/// Settings of the health code service.
#[derive(Debug, Clone)]
pub struct HealthCodeConfig {
    /// Lifetime of an issued code, in seconds (the on-screen code is refreshed by the app).
    pub ttl_seconds: i64,
    /// Identifier systems carried in the code besides the resident ID tail (multi-code
    /// fusion).
    pub linked_systems: Vec<String>,
    /// Clock skew tolerated by `$verify`, in seconds.
    pub leeway_seconds: i64,
}

impl Default for HealthCodeConfig {
    fn default() -> Self {
        Self {
            ttl_seconds: 300,
            linked_systems: phip_healthcode::default_linked_systems(),
            leeway_seconds: phip_healthcode::verify::DEFAULT_LEEWAY_SECONDS,
        }
    }
}

/// The health code service of one server: the key ring's keys under SMART Health Cards
/// `kid`s, and its settings.
#[derive(Debug)]
pub struct HealthCodes {
    keys: IssuerKeys,
    config: HealthCodeConfig,
}

impl HealthCodes {
    /// A service signing with the ES256 and SM2 keys of `ring`.
    pub fn new(ring: &KeyRing, config: HealthCodeConfig) -> Result<Arc<Self>, HealthCodeError> {
        Ok(Arc::new(Self {
            keys: IssuerKeys::from_ring(ring)?,
            config,
        }))
    }
}

fn service(state: &AppState) -> Result<Arc<HealthCodes>, ApiError> {
    state.health_codes.clone().ok_or_else(|| {
        error(
            404,
            IssueType::NotSupported,
            "health codes are not enabled on this server",
        )
    })
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn instant(seconds: i64) -> String {
    DateTime::<Utc>::from_timestamp(seconds, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Runs blocking engine work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!(error = %e, "health code task failed");
        error(500, IssueType::Exception, "internal error")
    })?
}

// ---------------------------------------------------------------------------------------
// $health-code

/// What the caller wants back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Json,
    Png,
    Svg,
}

fn output(headers: &HeaderMap, query: &Query) -> Result<Output, ApiError> {
    if let Some(format) = query.get("_format") {
        return match format {
            "image/png" | "png" => Ok(Output::Png),
            "image/svg+xml" | "svg" => Ok(Output::Svg),
            other => check_accept(headers, Some(other)).map(|()| Output::Json),
        };
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // The first image type the client lists wins; otherwise FHIR JSON.
    for part in accept.split(',') {
        match part.split(';').next().unwrap_or("").trim() {
            "image/png" => return Ok(Output::Png),
            "image/svg+xml" => return Ok(Output::Svg),
            _ => {}
        }
    }
    check_accept(headers, None).map(|()| Output::Json)
}

fn algorithm(name: Option<&str>) -> Result<Algorithm, ApiError> {
    match name.unwrap_or("ES256") {
        "ES256" | "es256" => Ok(Algorithm::Es256),
        "SM2SM3" | "SM2" | "sm2" => Ok(Algorithm::Sm2Sm3),
        other => Err(error(
            400,
            IssueType::Value,
            format!("unsupported health code algorithm {other:?}: use ES256 or SM2SM3"),
        )),
    }
}

/// A named parameter of a `Parameters` body, as text.
fn parameter(parameters: &Value, name: &str) -> Option<String> {
    parameters
        .get("parameter")
        .and_then(Value::as_array)?
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|p| {
            ["valueCode", "valueString", "valueUri"]
                .iter()
                .find_map(|k| p.get(*k).and_then(Value::as_str))
        })
        .map(str::to_owned)
}

fn parameters_body(headers: &HeaderMap, body: &Bytes) -> Result<Option<Value>, ApiError> {
    if body.is_empty() {
        return Ok(None);
    }
    let value = parse_body(headers, body, false)?;
    if value.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(error(
            400,
            IssueType::Invalid,
            "the operation takes a Parameters resource",
        ));
    }
    Ok(Some(value))
}

/// `GET|POST [base]/Patient/{id}/$health-code`.
pub(crate) async fn issue(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> HandlerResult {
    let query = Query::new(raw);
    let codes = service(&state)?;
    let output = output(&headers, &query)?;
    let parameters = parameters_body(&headers, &body)?;
    let alg_name = query
        .get("alg")
        .map(str::to_owned)
        .or_else(|| parameters.as_ref().and_then(|p| parameter(p, "alg")));
    let alg = algorithm(alg_name.as_deref())?;
    let iss = base_url(&state, &headers);
    let engine = state.engine.clone();
    let (code, person) = blocking(move || {
        require_visible_patient(&engine, &principal, &id)?;
        let person = person_of(&engine, &id)?;
        if !may_manage(&engine, &principal, &id, &person.id) {
            return Err(forbidden_for(&id).into());
        }
        let mut tx = engine.store().begin_read().map_err(FhirError::from)?;
        let now = now();
        // A code issued in the second of a revocation must not fall under it.
        let nbf = person_revoked_before(tx.as_mut(), &person.id)?.map_or(now, |b| b.max(now));
        let subject = HealthCodeSubject::from_patient(
            &person.id,
            &person.golden,
            &codes.config.linked_systems,
        )
        .map_err(|e| error(422, IssueType::BusinessRule, e.to_string()))?;
        let code = phip_healthcode::issue::issue(
            &codes.keys,
            &iss,
            &subject,
            alg,
            nbf,
            nbf + codes.config.ttl_seconds.max(1),
        )
        .map_err(|e| error(500, IssueType::Exception, e.to_string()))?;
        Ok((code, person.id))
    })
    .await?;
    let image = |content_type: &'static str, bytes: Vec<u8>| {
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CACHE_CONTROL, "no-store")
            .header(header::EXPIRES, chrono_http_date(code.exp))
            .body(Body::from(bytes))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    };
    let render_failed = |e: HealthCodeError| error(500, IssueType::Exception, e.to_string());
    match output {
        Output::Png => Ok(image(
            "image/png",
            qr::render_png(&code.shc, 6).map_err(render_failed)?,
        )),
        Output::Svg => Ok(image(
            "image/svg+xml",
            qr::render_svg(&code.shc)
                .map_err(render_failed)?
                .into_bytes(),
        )),
        Output::Json => {
            let body = json!({
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "verifiableCredential", "valueString": code.jws},
                    {"name": "qrCode", "valueString": code.shc},
                    {"name": "subject", "valueReference": {"reference": format!("Patient/{person}")}},
                    {"name": "algorithm", "valueCode": code.algorithm.as_str()},
                    {"name": "kid", "valueString": code.kid},
                    {"name": "issued", "valueInstant": instant(code.nbf)},
                    {"name": "expires", "valueInstant": instant(code.exp)}
                ]
            });
            let mut response = fhir_response(
                phip_engine::FhirResponse::with_body(200, body),
                Default::default(),
            );
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            Ok(response)
        }
    }
}

fn chrono_http_date(seconds: i64) -> String {
    DateTime::<Utc>::from_timestamp(seconds, 0)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

// ---------------------------------------------------------------------------------------
// $health-code-revoke

/// `POST [base]/Patient/{id}/$health-code-revoke`.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> HandlerResult {
    let query = Query::new(raw);
    check_accept(&headers, query.get("_format"))?;
    service(&state)?;
    let engine = state.engine.clone();
    let (person, before) = blocking(move || {
        require_visible_patient(&engine, &principal, &id)?;
        let person = person_of(&engine, &id)?;
        if !may_manage(&engine, &principal, &id, &person.id) {
            return Err(forbidden_for(&id).into());
        }
        // `nbf < before` is revoked: every code issued up to this second.
        let before = now() + 1;
        record_revocation(&engine, &person.id, before)?;
        Ok((person.id, before))
    })
    .await?;
    let body = json!({
        "resourceType": "Parameters",
        "parameter": [
            {"name": "subject", "valueReference": {"reference": format!("Patient/{person}")}},
            {"name": "revokedBefore", "valueInstant": instant(before)}
        ]
    });
    Ok(fhir_response(
        phip_engine::FhirResponse::with_body(200, body),
        Default::default(),
    ))
}

// ---------------------------------------------------------------------------------------
// $verify

/// The 422 for a refused code: an OperationOutcome whose `details` carries the reason as a
/// code of `urn:phip:health-code:refusal` (`expired`, `revoked`, `bad-signature`, …).
fn refused(reason: &Refusal) -> Response {
    let code = match reason {
        Refusal::Expired { .. } | Refusal::NotYetValid { .. } | Refusal::Revoked => "business-rule",
        _ => "invalid",
    };
    let body = json!({
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": "error",
            "code": code,
            "details": {
                "coding": [{"system": REFUSAL_SYSTEM, "code": reason.code()}],
                "text": reason.to_string()
            },
            "diagnostics": format!("health code refused: {reason}")
        }]
    });
    let mut response = (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(crate::FHIR_JSON),
    );
    response
}

/// `POST [base]/Patient/$verify` with Parameters `code` (`shc:/…` or the JWS).
pub(crate) async fn verify(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> HandlerResult {
    let query = Query::new(raw);
    check_accept(&headers, query.get("_format"))?;
    let codes = service(&state)?;
    if principal.decide("Patient", Interaction::Read) != Decision::Full {
        return Err(error(
            403,
            IssueType::Forbidden,
            "verifying a health code discloses who the resident is: it needs a system/ or user/ grant to read Patient",
        ));
    }
    let parameters = parameters_body(&headers, &body)?
        .ok_or_else(|| error(400, IssueType::Required, "$verify needs a Parameters body"))?;
    let code = parameter(&parameters, "code").ok_or_else(|| {
        error(
            400,
            IssueType::Required,
            "$verify needs the scanned code in the parameter \"code\"",
        )
    })?;
    let iss = base_url(&state, &headers);
    let engine = state.engine.clone();
    let service = codes.clone();
    let outcome = blocking(move || {
        let codes = service;
        let now = now();
        let verifier = Verifier::new(codes.keys.jwks())
            .trust_issuer(&iss)
            .leeway(codes.config.leeway_seconds);
        let verified = match verifier.verify(&code, now) {
            Ok(v) => v,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let mut tx = engine.store().begin_read().map_err(FhirError::from)?;
        let person = &verified.subject.person_id;
        if let Some(before) = person_revoked_before(tx.as_mut(), person)? {
            if verified.nbf < before {
                return Ok(Err(Refusal::Revoked));
            }
        }
        // The master record as it is now: a deleted or merged-away record no longer
        // identifies anyone, whatever the code says.
        let golden = tx
            .read("Patient", person)
            .map_err(FhirError::from)?
            .and_then(|s| s.resource)
            .filter(|g| g.get("active").and_then(Value::as_bool) != Some(false));
        Ok(match golden {
            Some(golden) => Ok((verified, golden)),
            None => Err(Refusal::Revoked),
        })
    })
    .await?;
    let (verified, golden) = match outcome {
        Ok(found) => found,
        Err(refusal) => return Ok(refused(&refusal)),
    };
    let person = &verified.subject.person_id;
    let mut parameter = vec![
        json!({"name": "valid", "valueBoolean": true}),
        json!({"name": "subject", "valueReference": {
            "reference": format!("Patient/{person}"),
            "display": verified.subject.display_name()
        }}),
    ];
    for name in golden
        .get("name")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|n| n.get("use").and_then(Value::as_str) != Some("old"))
    {
        parameter.push(json!({"name": "name", "valueHumanName": name}));
    }
    if let Some(birth_date) = golden.get("birthDate") {
        parameter.push(json!({"name": "birthDate", "valueDate": birth_date}));
    }
    if let Some(gender) = golden.get("gender") {
        parameter.push(json!({"name": "gender", "valueCode": gender}));
    }
    for identifier in golden
        .get("identifier")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|i| i.get("use").and_then(Value::as_str) != Some("old"))
        .filter(|i| {
            let system = i.get("system").and_then(Value::as_str).unwrap_or("");
            system == PERSON_ID_SYSTEM
                || system == RESIDENT_ID
                || codes.config.linked_systems.iter().any(|s| s == system)
        })
    {
        parameter.push(json!({"name": "identifier", "valueIdentifier": identifier}));
    }
    parameter.push(json!({"name": "algorithm", "valueCode": verified.algorithm.as_str()}));
    parameter.push(json!({"name": "issued", "valueInstant": instant(verified.nbf)}));
    parameter.push(json!({"name": "expires", "valueInstant": instant(verified.exp)}));
    let body = json!({"resourceType": "Parameters", "parameter": parameter});
    Ok(fhir_response(
        phip_engine::FhirResponse::with_body(200, body),
        Default::default(),
    ))
}

// ---------------------------------------------------------------------------------------
// Discovery for offline verifiers

fn public_json(body: Value, content_type: &'static str) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        // SMART Health Cards verifiers run in browsers too.
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .header(header::CACHE_CONTROL, "max-age=60")
        .body(Body::from(body.to_string()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The CRL version for a revocation counter: 1 for the empty list, growing with each
/// revocation, so `crlVersion` in the JWKS and `ctr` in the CRL always agree.
fn crl_version(counter: u64) -> u64 {
    counter.saturating_add(1)
}

/// `GET [base]/.well-known/jwks.json`: the health card keys, `kid` = JWK thumbprint, with
/// `crlVersion`.
pub(crate) async fn jwks(State(state): State<AppState>) -> HandlerResult {
    let codes = service(&state)?;
    let engine = state.engine.clone();
    let (_, counter) = blocking(move || all_revocations(&engine).map_err(ApiError::from)).await?;
    Ok(public_json(
        codes.keys.jwks_document(Some(crl_version(counter))),
        "application/jwk-set+json",
    ))
}

/// `GET [base]/.well-known/crl/{kid}.json`: the revocation list of one key.
pub(crate) async fn crl(State(state): State<AppState>, Path(file): Path<String>) -> HandlerResult {
    let codes = service(&state)?;
    let kid = file
        .strip_suffix(".json")
        .filter(|k| codes.keys.contains(k))
        .map(str::to_owned)
        .ok_or_else(|| {
            error(
                404,
                IssueType::NotFound,
                format!("no revocation list {file}"),
            )
        })?;
    let engine = state.engine.clone();
    let (revocations, counter) =
        blocking(move || all_revocations(&engine).map_err(ApiError::from)).await?;
    let rids = revocations
        .iter()
        .filter_map(|(person, before)| {
            codes
                .keys
                .rid(&kid, person)
                .map(|rid| revocation::entry(&rid, *before))
        })
        .collect();
    let crl = Crl {
        ctr: crl_version(counter),
        rids,
        ..Crl::empty(&kid)
    };
    Ok(public_json(
        serde_json::to_value(crl).unwrap_or(Value::Null),
        "application/json",
    ))
}
