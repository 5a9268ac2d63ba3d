//! One-time sign-in codes: an operator (with a system token, or `phip portal code`) issues a
//! short, random, single-use code for a resident or a clinician; `/portal/login` exchanges it
//! for a session.
//!
//! A code is stored as a `Basic` resource holding only its SHA-256, so a database read does
//! not yield usable codes, and marked as server-private state (`urn:phip:server-owned` |
//! `sign-in-code`): no token can read, create, change or delete one through the API — only the
//! server, which stores and redeems codes through the engine as itself. Using a code is a
//! version-checked write from `issued` to `used` in one transaction: of two concurrent
//! sign-ins with the same code, one loses the version check and is refused, so a code opens
//! at most one session. Codes live ten minutes.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use phip_security::token::Grant;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use phip_engine::{Engine, FhirError, FhirResult, Principal, RequestContext};
use phip_store::{PageCursor, SearchRequest};

use super::render::{esc, page, Chrome};
use super::{field, form, html, mint, redirect, Session, SESSION_COOKIE};
use crate::AppState;

/// Identifier system of a code's hash.
pub const CODE_HASH_SYSTEM: &str = "urn:phip:portal:sign-in-code";
const EXT_SUBJECT: &str = "urn:phip:portal:subject";
const EXT_EXPIRES: &str = "urn:phip:portal:expires";
const EXT_STATE: &str = "urn:phip:portal:state";
const EXT_ORG: &str = "urn:phip:portal:organization";
const EXT_DIVISION: &str = "urn:phip:portal:division";
const EXT_ROLE: &str = "urn:phip:portal:role";
/// How long a code may be used.
const CODE_TTL_MINUTES: i64 = 10;
/// Unambiguous characters (no 0/O, 1/I/L) for codes read aloud or typed from a printout.
const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
/// Characters of a code (about 59 bits).
const CODE_LEN: usize = 12;

/// Clinician roles a code can grant, with the scopes each role's session gets.
const ROLES: &[(&str, &str)] = &[
    ("clinician", "user/*.rs user/Task.u"),
    (
        "pharmacist",
        "user/MedicationRequest.rs user/MedicationDispense.crus user/Patient.rs user/Provenance.rs user/Practitioner.rs user/Organization.rs",
    ),
];

/// Who a code signs in.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct CodeRequest {
    /// A resident: any of their Patient records (the session binds to the golden record).
    #[serde(default)]
    pub patient: Option<String>,
    /// A clinician or pharmacist: their Practitioner id.
    #[serde(default)]
    pub practitioner: Option<String>,
    /// The clinician's organisation.
    #[serde(default)]
    pub organization: Option<String>,
    /// The clinician's GB/T 2260 division.
    #[serde(default)]
    pub division: Option<String>,
    /// `clinician` or `pharmacist`.
    #[serde(default)]
    pub role: Option<String>,
}

/// Kind of server-owned state a sign-in code is (server-private: never readable by a token).
const CODE_KIND: &str = "sign-in-code";

/// The server's own context for storing and checking codes.
fn server_context() -> RequestContext {
    RequestContext::new("urn:phip:portal", Principal::unrestricted("phip-portal"))
}

/// Runs engine work for the portal off the async workers.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Engine) -> FhirResult<T> + Send + 'static,
) -> Result<T, (u16, String)> {
    let engine = state.engine.clone();
    match tokio::task::spawn_blocking(move || work(&engine)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err((error.status, error.outcome.summary())),
        Err(_) => Err((500, "the sign-in task failed".into())),
    }
}

fn hash(code: &str) -> String {
    let normalized: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    Sha256::digest(normalized.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn new_code() -> String {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes
        .iter()
        // 256 is not a multiple of 31: drop the biased tail of the byte range.
        .filter(|b| usize::from(**b) < 248)
        .take(CODE_LEN)
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

fn ext(resource: &Value, url: &str) -> Option<String> {
    resource
        .get("extension")?
        .as_array()?
        .iter()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(url))?
        .as_object()?
        .iter()
        .find(|(k, _)| k.starts_with("value"))?
        .1
        .as_str()
        .map(str::to_owned)
}

/// The golden record of any Patient record, via the index's `refer` link.
async fn golden_of(state: &AppState, patient: &str) -> Result<String, (u16, String)> {
    let id = patient.to_owned();
    let read = blocking(state, move |engine| {
        engine.read(&server_context(), "Patient", &id)
    })
    .await?;
    let body = read.body.unwrap_or(Value::Null);
    let refer = phip_fhir::access::linked_patients(&body, "refer")
        .into_iter()
        .next();
    Ok(refer.unwrap_or_else(|| patient.to_owned()))
}

/// Issues a code; returns it with its expiry.
pub async fn issue(
    state: &AppState,
    request: &CodeRequest,
) -> Result<(String, DateTime<Utc>), (u16, String)> {
    let mut extension = Vec::new();
    match (&request.patient, &request.practitioner) {
        (Some(patient), None) => {
            let golden = golden_of(state, patient).await?;
            extension.push(json!({"url": EXT_SUBJECT, "valueString": format!("Patient/{golden}")}));
        }
        (None, Some(practitioner)) => {
            let role = request.role.as_deref().unwrap_or("clinician");
            if !ROLES.iter().any(|(r, _)| *r == role) {
                return Err((
                    400,
                    format!("unknown role {role:?}: use clinician or pharmacist"),
                ));
            }
            let Some(org) = &request.organization else {
                return Err((400, "a clinician's code needs an organization".into()));
            };
            extension.push(
                json!({"url": EXT_SUBJECT, "valueString": format!("Practitioner/{practitioner}")}),
            );
            extension.push(json!({"url": EXT_ORG, "valueString": org}));
            if let Some(division) = &request.division {
                if !phip_security::division::is_valid_code(division) {
                    return Err((
                        400,
                        format!("{division:?} is not a GB/T 2260 division code"),
                    ));
                }
                extension.push(json!({"url": EXT_DIVISION, "valueString": division}));
            }
            extension.push(json!({"url": EXT_ROLE, "valueCode": role}));
        }
        _ => return Err((400, "name exactly one of patient or practitioner".into())),
    }
    let code = new_code();
    let expires = Utc::now() + chrono::Duration::minutes(CODE_TTL_MINUTES);
    extension.push(json!({"url": EXT_EXPIRES, "valueDateTime": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}));
    extension.push(json!({"url": EXT_STATE, "valueCode": "issued"}));
    let mut basic = json!({
        "resourceType": "Basic",
        "identifier": [{"system": CODE_HASH_SYSTEM, "value": hash(&code)}],
        "code": {"coding": [{"system": "urn:phip:portal", "code": "sign-in-code"}]},
        "extension": extension,
    });
    phip_fhir::access::mark_server_owned(&mut basic, CODE_KIND);
    blocking(state, move |engine| {
        engine.create(&server_context(), "Basic", basic, None)
    })
    .await?;
    Ok((code, expires))
}

/// `POST /portal/one-time-code` (JSON [`CodeRequest`]) with a `system/` bearer token: the
/// operator's way to issue a code (tests and help desks).
pub(crate) async fn issue_endpoint(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let state = super::for_request(&state, &headers);
    let principal = match crate::auth::authenticate(&state.config.auth, &headers) {
        Ok(p) => p,
        Err(e) => return crate::http::error_response(e),
    };
    let system = principal.is_unrestricted()
        || principal.scopes.as_ref().is_some_and(|s| {
            s.contexts()
                .contains(&phip_security::scope::ScopeContext::System)
        });
    if !system || principal.patient.is_some() {
        return outcome(403, "issuing sign-in codes needs a system/ token");
    }
    let request: CodeRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return outcome(400, &format!("invalid request body: {e}")),
    };
    match issue(&state, &request).await {
        Ok((code, expires)) => (
            StatusCode::CREATED,
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(json!({"code": code, "expires": expires.to_rfc3339()})),
        )
            .into_response(),
        Err((status, message)) => outcome(status, &message),
    }
}

fn outcome(status: u16, message: &str) -> Response {
    crate::http::error_response(phip_engine::FhirError::new(
        status,
        if status == 403 {
            phip_fhir::IssueType::Forbidden
        } else {
            phip_fhir::IssueType::Invalid
        },
        message,
    ))
}

/// `GET /portal/login`.
pub(crate) async fn login_page() -> Response {
    html(StatusCode::OK, login_html(None))
}

pub(crate) fn login_html(error: Option<&str>) -> String {
    let alert = error
        .map(|e| {
            format!(
                "<p class=\"error\" role=\"alert\" id=\"error\">{}</p>",
                esc(e)
            )
        })
        .unwrap_or_default();
    page(
        "登录 / Sign in",
        &Chrome::Public,
        &format!(
            "<h1>登录 / Sign in</h1>{alert}\
             <form method=\"post\" action=\"/portal/login\" class=\"card\">\
             <label for=\"code\">一次性登录码 / One-time sign-in code</label>\
             <input id=\"code\" name=\"code\" autocomplete=\"one-time-code\" required autofocus>\
             <button type=\"submit\" id=\"sign-in\">登录 / Sign in</button></form>\
             <p class=\"hint\">登录码由工作人员或 <code>phip portal code</code> 发放，10 分钟内有效，只能使用一次。 / \
             Codes are issued by staff or <code>phip portal code</code>, last ten minutes and work once.</p>"
        ),
    )
}

/// Exchanges a code: `Ok(grant)` once, an explanation otherwise.
async fn redeem(state: &AppState, code: &str) -> Result<Grant, String> {
    let refused = "登录码无效、已过期或已使用 / The code is invalid, expired or already used";
    let hashed = hash(code);
    // Find and use the code in one transaction: the version check of the write makes the
    // use exactly-once however many sign-ins race for it.
    let used = blocking(state, move |engine| {
        let server = Principal::unrestricted("phip-portal");
        engine.write_transaction(&server, |tx| {
            let params = vec![
                (
                    "identifier".to_owned(),
                    format!("{CODE_HASH_SYSTEM}|{hashed}"),
                ),
                (
                    "_tag".to_owned(),
                    format!("{}|{CODE_KIND}", phip_fhir::access::SERVER_OWNED_SYSTEM),
                ),
            ];
            let parsed = phip_fhir::search::query::parse(Some("Basic"), &params, true)
                .map_err(|outcome| FhirError::from_outcome(500, outcome))?;
            let page = tx.search(&SearchRequest {
                query: parsed.query,
                cursor: PageCursor::First,
                page_size: 1,
                access: phip_store::Access::Server,
            })?;
            let Some(stored) = page.matches.into_iter().next() else {
                return Ok(None);
            };
            let Some(found) = stored.resource.clone() else {
                return Ok(None);
            };
            let expires = ext(&found, EXT_EXPIRES)
                .and_then(|e| DateTime::parse_from_rfc3339(&e).ok())
                .map(|e| e.with_timezone(&Utc));
            if ext(&found, EXT_STATE).as_deref() != Some("issued")
                || expires.is_none_or(|e| e <= Utc::now())
            {
                return Ok(None);
            }
            let mut next = found.clone();
            if let Some(exts) = next.get_mut("extension").and_then(Value::as_array_mut) {
                for e in exts.iter_mut() {
                    if e.get("url").and_then(Value::as_str) == Some(EXT_STATE) {
                        *e = json!({"url": EXT_STATE, "valueCode": "used"});
                    }
                }
            }
            match tx.write(phip_store::WriteRequest {
                resource_type: "Basic".into(),
                id: stored.id.clone(),
                resource: Some(next),
                expected_version: Some(stored.version_id),
            }) {
                Ok(_) => Ok(Some(found)),
                // Someone used it between our read and write.
                Err(phip_store::StoreError::VersionConflict { .. }) => Ok(None),
                Err(other) => Err(other.into()),
            }
        })
    })
    .await
    .map_err(|(_, message)| message)?;
    let Some(stored) = used else {
        return Err(refused.into());
    };
    let subject = ext(&stored, EXT_SUBJECT).unwrap_or_default();
    if let Some(patient) = subject.strip_prefix("Patient/") {
        return Ok(Grant {
            sub: format!("resident:{patient}"),
            scope: "patient/*.rs".into(),
            patient: Some(patient.to_owned()),
            ..Grant::default()
        });
    }
    if let Some(practitioner) = subject.strip_prefix("Practitioner/") {
        let role = ext(&stored, EXT_ROLE).unwrap_or_else(|| "clinician".into());
        let scope = ROLES
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, s)| *s)
            .ok_or_else(|| refused.to_string())?;
        return Ok(Grant {
            sub: practitioner.to_owned(),
            scope: scope.into(),
            org: ext(&stored, EXT_ORG),
            division: ext(&stored, EXT_DIVISION),
            practitioner: Some(practitioner.to_owned()),
            roles: vec![role],
            ..Grant::default()
        });
    }
    Err(refused.into())
}

/// `POST /portal/login` (form `code`): sets the session cookie and opens the home page.
pub(crate) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let state = super::for_request(&state, &headers);
    let fields = form(&body);
    let Some(code) = field(&fields, "code") else {
        return html(
            StatusCode::BAD_REQUEST,
            login_html(Some("请输入登录码 / Enter your code")),
        );
    };
    let mut grant = match redeem(&state, code).await {
        Ok(g) => g,
        Err(e) => return html(StatusCode::UNAUTHORIZED, login_html(Some(&e))),
    };
    // The session id every token of this session carries; sign-out revokes it.
    grant.session = Some(uuid::Uuid::new_v4().to_string());
    let token = match mint(&state, &grant) {
        Ok(t) => t,
        Err(e) => return html(StatusCode::SERVICE_UNAVAILABLE, login_html(Some(&e))),
    };
    let home = if grant.patient.is_some() {
        "/portal/me"
    } else {
        "/portal/clinic"
    };
    let mut response = redirect(home);
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/portal; HttpOnly; SameSite=Strict; Max-Age={}",
        super::SESSION_TTL.as_secs()
    );
    if let Ok(value) = header::HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `POST /portal/logout`: revokes the session (its cookie token and every token derived from
/// it are refused from now on, in the portal and at the FHIR API) and clears the cookie.
pub(crate) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let state = super::for_request(&state, &headers);
    if let Some(session) = Session::from_headers(&state, &headers) {
        if !session.check_csrf(field(&form(&body), "csrf")) {
            return html(
                StatusCode::FORBIDDEN,
                login_html(Some("invalid form token")),
            );
        }
        if let (crate::auth::AuthMode::Required(auth), Some(sid)) =
            (&state.config.auth, &session.session_id)
        {
            let (auth, sid, expires) = (auth.clone(), sid.clone(), session.expires);
            let revoked =
                tokio::task::spawn_blocking(move || auth.revoke_session(&sid, expires)).await;
            if !matches!(revoked, Ok(Ok(()))) {
                tracing::error!("could not record a portal sign-out");
                // The session must not look ended while its token still works.
                return html(
                    StatusCode::SERVICE_UNAVAILABLE,
                    login_html(Some(
                        "退出失败，请重试 / Signing out failed; please try again",
                    )),
                );
            }
        }
    }
    let mut response = redirect("/portal/login");
    response.headers_mut().insert(
        header::SET_COOKIE,
        header::HeaderValue::from_static(
            "phip_portal=; Path=/portal; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}
