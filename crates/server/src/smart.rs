//! SMART on FHIR discovery and the Backend Services token endpoint.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::auth::AuthMode;
use crate::handlers::base_url;
use crate::AppState;

/// The scopes phip understands, advertised in discovery.
const SCOPES_SUPPORTED: &[&str] = &[
    "system/*.cruds",
    "system/*.rs",
    "user/*.cruds",
    "user/*.rs",
    "patient/*.rs",
    "patient/*.cruds",
];

fn root_url(state: &AppState, headers: &HeaderMap) -> String {
    base_url(state, headers)
        .trim_end_matches("/fhir")
        .to_owned()
}

/// Why the token endpoint cannot name itself.
const NO_TOKEN_ENDPOINT_URL: &str = "this server cannot tell which URL client assertions must name as their audience: it has no public base URL configured (base_url, --base-url or PHIP_BASE_URL) and does not listen on one specific address; set base_url to the URL clients use";

/// This server's token endpoint URL: what a client assertion's `aud` must be. It comes from
/// configuration, never from the request: the public base URL's origin (and path prefix
/// without `/fhir`) plus `/auth/token`, or, without a configured base URL, the address the
/// server listens on (`http://127.0.0.1:8080/auth/token`) when that is one specific address.
/// On an unspecified address (`0.0.0.0`, `[::]`) there is no single URL: `None`.
pub(crate) fn token_endpoint_url(state: &AppState) -> Option<String> {
    if let Some(base) = &state.config.public_base_url {
        let root = base.trim_end_matches('/').trim_end_matches("/fhir");
        return Some(format!("{root}/auth/token"));
    }
    let listening = state.listening?;
    if listening.address.ip().is_unspecified() {
        return None;
    }
    Some(format!(
        "{}://{}/auth/token",
        listening.scheme, listening.address
    ))
}

/// `GET /.well-known/smart-configuration` (also under the FHIR base).
pub(crate) async fn smart_configuration(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Response {
    let root = root_url(&state, &headers);
    let issuer = match &state.config.auth {
        AuthMode::Required(auth) => auth.issuer_url().to_owned(),
        AuthMode::Disabled => format!("{root}/auth"),
    };
    let body = json!({
        "issuer": issuer,
        "jwks_uri": format!("{root}/.well-known/jwks.json"),
        "token_endpoint": token_endpoint_url(&state).unwrap_or_else(|| format!("{root}/auth/token")),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "ES384"],
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["token"],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// `GET /.well-known/jwks.json`: the public keys that verify phip's tokens and signatures.
pub(crate) async fn jwks(State(state): State<AppState>) -> Response {
    match &state.config.auth {
        AuthMode::Required(auth) => {
            let text = auth.jwks().to_json();
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/jwk-set+json")],
                text,
            )
                .into_response()
        }
        AuthMode::Disabled => oauth_error(
            StatusCode::NOT_FOUND,
            "unsupported",
            "authentication is disabled on this server",
        ),
    }
}

pub(crate) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// `POST /auth/token`: the client-credentials grant with a `private_key_jwt` assertion
/// (SMART Backend Services). Answers per RFC 6749 §5.
pub(crate) async fn token(State(state): State<AppState>, body: Bytes) -> Response {
    let AuthMode::Required(auth) = &state.config.auth else {
        return oauth_error(
            StatusCode::NOT_FOUND,
            "unsupported",
            "authentication is disabled on this server",
        );
    };
    let form: Vec<(String, String)> = form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if get("grant_type") != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only grant_type=client_credentials is supported",
        );
    }
    if get("client_assertion_type")
        != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        );
    }
    let Some(assertion) = get("client_assertion") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_assertion is missing",
        );
    };
    let scope = get("scope").unwrap_or("");
    let Some(endpoint) = token_endpoint_url(&state) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            NO_TOKEN_ENDPOINT_URL,
        );
    };
    let auth = auth.clone();
    let assertion = assertion.to_owned();
    let scope = scope.to_owned();
    let result = tokio::task::spawn_blocking(move || {
        auth.client_credentials(&assertion, &scope, &endpoint)
            .map(|minted| (minted, auth.token_ttl))
    })
    .await;
    match result {
        Ok(Ok((minted, ttl))) => (
            StatusCode::OK,
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(json!({
                "access_token": minted.token,
                "token_type": "bearer",
                "expires_in": ttl.as_secs(),
                "scope": minted.claims.scope,
            })),
        )
            .into_response(),
        Ok(Err(message)) => oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", &message),
        Err(_) => oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error",
        ),
    }
}

/// Adds the SMART security section to the CapabilityStatement.
pub(crate) fn describe_security(state: &AppState, statement: &mut Value) {
    let service = match &state.config.auth {
        AuthMode::Required(_) => json!({
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}],
            "text": "OAuth2 bearer tokens (SMART on FHIR, Backend Services)"
        }),
        AuthMode::Disabled => json!({"text": "authentication disabled (development mode)"}),
    };
    if let Some(rest) = statement
        .get_mut("rest")
        .and_then(Value::as_array_mut)
        .and_then(|r| r.first_mut())
    {
        rest["security"] = json!({"cors": false, "service": [service]});
    }
}
