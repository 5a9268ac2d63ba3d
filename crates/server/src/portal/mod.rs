//! The resident and clinician web portals under `/portal`: server-rendered HTML pages with
//! bilingual (Chinese / English) labels, every asset served by phip (one stylesheet, one small
//! script that only enhances), and forms that work without script.
//!
//! Sign-in exchanges a short-lived, single-use code ([`codes`]) for an `HttpOnly`,
//! `SameSite=Strict` session cookie carrying an access token minted by this server. The token
//! names its session (`sid`); every token the portal derives from it carries the same `sid`
//! and expires no later, and signing out records the `sid` as revoked (durably, in the data
//! directory), so none of them is accepted afterwards, in the portal or at the FHIR API. Every piece
//! of data a page shows is fetched by an in-process sub-request to the FHIR API with a token of
//! the signed-in person, so access rules, residents' consent and the audit trail apply exactly
//! as they do to API clients — the portal has no privileged path to records.

mod clinician;
pub mod codes;
mod records;
mod render;
mod resident;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use phip_security::token::Grant;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tower::ServiceExt;

use crate::auth::AuthMode;
use crate::AppState;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "phip_portal";
/// Lifetime of a portal session (and of its access token).
const SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 60);
/// Largest FHIR response a page reads.
const MAX_SUBRESPONSE: usize = 16 * 1024 * 1024;

/// The portal's routes, merged into the main router.
pub(crate) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/portal", get(index))
        .route("/portal/", get(index))
        .route("/portal/assets/portal.css", get(stylesheet))
        .route("/portal/assets/portal.js", get(script))
        .route(
            "/portal/login",
            get(codes::login_page).post(codes::login).route_layer(
                axum::middleware::from_fn_with_state(state, crate::limits::sign_in_throttle),
            ),
        )
        .route("/portal/logout", post(codes::logout))
        .route("/portal/one-time-code", post(codes::issue_endpoint))
        .route("/portal/me", get(resident::home))
        .route("/portal/me/consent", post(resident::consent))
        .route("/portal/me/health-code.svg", get(resident::health_code))
        .route("/portal/clinic", get(clinician::home))
        .route("/portal/clinic/scan", post(clinician::scan))
        .route("/portal/clinic/patient/{id}", get(clinician::patient))
        .route("/portal/clinic/pharmacy", get(clinician::pharmacy))
        .route("/portal/clinic/dispense", post(clinician::dispense))
        .route("/portal/clinic/task", post(clinician::task_action))
}

const CSS: &str = include_str!("../../assets/portal/portal.css");
const JS: &str = include_str!("../../assets/portal/portal.js");

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// `GET /portal`: the signed-in person's home, or the sign-in page.
async fn index(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
) -> Response {
    match Session::from_headers(&state, &headers) {
        Some(s) if s.grant_patient.is_some() => redirect("/portal/me"),
        Some(_) => redirect("/portal/clinic"),
        None => redirect("/portal/login"),
    }
}

/// The state for one page request: sub-requests see the public base URL the browser used
/// (so health codes name, and `$verify` trusts, the same issuer as for API clients).
pub(crate) fn for_request(state: &AppState, headers: &HeaderMap) -> AppState {
    if state.config.public_base_url.is_some() {
        return state.clone();
    }
    let mut config = (*state.config).clone();
    config.public_base_url = Some(crate::handlers::base_url(state, headers));
    let mut state = state.clone();
    state.config = std::sync::Arc::new(config);
    state
}

/// A signed-in person: the session token and what it grants.
pub(crate) struct Session {
    /// The bearer token sent with every sub-request.
    pub token: String,
    /// Subject of the token.
    pub subject: String,
    /// The golden record a resident session is bound to.
    pub grant_patient: Option<String>,
    /// The clinician's organisation.
    pub organization: Option<String>,
    /// The clinician's roles.
    pub roles: Vec<String>,
    /// The session id (`sid`) of the token, which sign-out revokes.
    pub session_id: Option<String>,
    /// When the session token expires (seconds since the epoch).
    pub expires: i64,
}

impl Session {
    /// The session of the request's cookie, if it carries a valid token of this server.
    pub fn from_headers(state: &AppState, headers: &HeaderMap) -> Option<Session> {
        let AuthMode::Required(auth) = &state.config.auth else {
            return None;
        };
        let token = cookie(headers, SESSION_COOKIE)?;
        let claims = auth.claims(&token).ok()?;
        Some(Session {
            subject: claims.sub,
            grant_patient: claims.patient,
            organization: claims.org,
            roles: claims.roles,
            session_id: claims.sid,
            expires: claims.exp,
            token,
        })
    }

    /// A token for the same session with another grant (e.g. bound to one of a resident's
    /// source records): it carries the session's `sid` and expires with the session, so
    /// signing out ends it too.
    pub fn derived_token(&self, state: &AppState, mut grant: Grant) -> Result<String, String> {
        let AuthMode::Required(auth) = &state.config.auth else {
            return Err("the portal needs authentication".into());
        };
        let left = self.expires - crate::auth::unix_now();
        let ttl = u64::try_from(left)
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| "the session has expired".to_owned())?;
        grant.session = self.session_id.clone();
        auth.mint(
            &grant,
            std::time::Duration::from_secs(ttl.min(SESSION_TTL.as_secs())),
        )
        .map(|m| m.token)
        .map_err(|e| e.to_string())
    }

    /// The anti-forgery token of this session: derived from the secret session token, so a
    /// page of another site cannot know it, and no server-side state is needed.
    pub fn csrf(&self) -> String {
        let digest = Sha256::digest(format!("phip-portal-csrf:{}", self.token).as_bytes());
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    /// Whether a submitted form carries this session's anti-forgery token.
    pub fn check_csrf(&self, submitted: Option<&str>) -> bool {
        let expected = self.csrf();
        submitted.is_some_and(|s| constant_time_eq(s.as_bytes(), expected.as_bytes()))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name`.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(name)?.strip_prefix('='))
        .find(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Mints a token of this server (the portal only works with authentication on).
pub(crate) fn mint(state: &AppState, grant: &Grant) -> Result<String, String> {
    match &state.config.auth {
        AuthMode::Required(auth) => auth
            .mint(grant, SESSION_TTL)
            .map(|m| m.token)
            .map_err(|e| e.to_string()),
        AuthMode::Disabled => {
            Err("the portal needs authentication: start phip without --no-auth to sign in".into())
        }
    }
}

/// A FHIR API response read by a page.
pub(crate) struct Fhir {
    pub status: u16,
    pub body: Value,
    pub raw: Vec<u8>,
}

impl Fhir {
    /// Whether the request succeeded.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The resources of a searchset's `match` entries.
    pub fn matches(&self) -> Vec<Value> {
        self.body
            .get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|e| {
                e.pointer("/search/mode")
                    .and_then(Value::as_str)
                    .unwrap_or("match")
                    == "match"
            })
            .filter_map(|e| e.get("resource").cloned())
            .collect()
    }

    /// The first issue's diagnostics of an OperationOutcome.
    pub fn diagnostics(&self) -> String {
        self.body
            .pointer("/issue/0/diagnostics")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("HTTP {}", self.status))
    }
}

/// Runs one request against this server's FHIR API in process, as the holder of `token`:
/// the same authentication, access, consent and audit layers as an external call.
pub(crate) async fn fhir(
    state: &AppState,
    token: &str,
    method: Method,
    path_and_query: &str,
    body: Option<&Value>,
    accept: Option<&str>,
) -> Fhir {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("/fhir/{}", path_and_query.trim_start_matches('/')))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::HOST, "portal.local")
        .header(header::ACCEPT, accept.unwrap_or("application/fhir+json"));
    let payload = match body {
        Some(b) => {
            builder = builder.header(header::CONTENT_TYPE, "application/fhir+json");
            Body::from(serde_json::to_vec(b).unwrap_or_default())
        }
        None => Body::empty(),
    };
    let failed = |message: &str| Fhir {
        status: 500,
        body: serde_json::json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception", "diagnostics": message}]}),
        raw: Vec::new(),
    };
    let Ok(request) = builder.body(payload) else {
        return failed("invalid internal request");
    };
    let response = match crate::router(state.clone()).oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let status = response.status().as_u16();
    let Ok(bytes) = axum::body::to_bytes(response.into_body(), MAX_SUBRESPONSE).await else {
        return failed("response too large");
    };
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Fhir {
        status,
        body,
        raw: bytes.to_vec(),
    }
}

/// The sign-in page with a refusal, for an address that has failed to sign in too often.
pub(crate) fn throttled_login_page(message: &str) -> Response {
    html(
        StatusCode::TOO_MANY_REQUESTS,
        codes::login_html(Some(&format!("登录失败次数过多，请稍后再试 / {message}"))),
    )
}

/// A `303 See Other` to `location` (the answer to a form POST).
pub(crate) fn redirect(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location.to_owned()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

/// An HTML page response with the portal's security headers.
pub(crate) fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// Parses an `application/x-www-form-urlencoded` body.
pub(crate) fn form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// The first value of form field `name`.
pub(crate) fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Percent-encodes a query value.
pub(crate) fn enc(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
