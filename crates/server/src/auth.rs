//! Authentication: bearer tokens in the SMART on FHIR style.
//!
//! phip issues its own ES256 access tokens (signed with the data directory's key ring) through
//! `phip token` for operators and `POST /auth/token` for SMART Backend Services clients
//! (client credentials with a signed JWT assertion), and can trust other issuers' JWKS.
//! Every FHIR request but `metadata` needs a valid token unless authentication is explicitly
//! turned off for local development.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap};
use phip_engine::{FhirError, Principal};
use phip_fhir::IssueType;
use phip_security::jws::Jwks;
use phip_security::keys::KeyRing;
use phip_security::token::{Claims, Grant, Minted, TokenError, TokenIssuer, TokenValidator};

use crate::auth_state::AuthState;
use serde::{Deserialize, Serialize};

/// The file in the data directory listing registered backend-services clients.
pub const CLIENTS_FILE: &str = "clients.json";

/// A client registered for SMART Backend Services (`client_credentials` with
/// `private_key_jwt`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisteredClient {
    /// The client id (`iss`/`sub` of its assertions).
    pub client_id: String,
    /// The client's public keys.
    pub jwks: Jwks,
    /// The largest scope the client may be granted.
    pub scope: String,
    /// The organisation the client acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// The GB/T 2260 division of that organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub division: Option<String>,
}

/// Reads the registered clients of a data directory (none if the file does not exist).
pub fn load_clients(data_dir: &Path) -> Result<Vec<RegisteredClient>, String> {
    let path = data_dir.join(CLIENTS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a valid client list: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// Writes the registered clients of a data directory.
pub fn save_clients(data_dir: &Path, clients: &[RegisteredClient]) -> Result<(), String> {
    let path = data_dir.join(CLIENTS_FILE);
    let text = serde_json::to_string_pretty(clients).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(data_dir).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The issuer URL and audience used for tokens of a deployment: derived from the public base
/// URL when one is configured, otherwise fixed local names (tokens minted by `phip token` and
/// checked by `phip serve` on the same configuration agree either way).
pub fn issuer_and_audience(public_base_url: Option<&str>) -> (String, String) {
    match public_base_url {
        Some(base) => {
            let base = base.trim_end_matches('/');
            (format!("{base}/auth"), base.to_owned())
        }
        None => ("urn:phip:local".to_owned(), "urn:phip:fhir".to_owned()),
    }
}

/// Token issuing and checking for one deployment.
pub struct Authenticator {
    issuer: TokenIssuer,
    validator: TokenValidator,
    jwks: Jwks,
    clients: HashMap<String, RegisteredClient>,
    /// Used assertion ids and signed-out sessions, durable in the data directory.
    state: AuthState,
    /// Lifetime of tokens issued at the token endpoint.
    pub token_ttl: Duration,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuer", &self.issuer.issuer())
            .field("clients", &self.clients.len())
            .finish()
    }
}

/// Errors setting up authentication.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthSetupError(pub String);

impl Authenticator {
    /// Opens (creating on first use) the key ring of `data_dir` and loads its registered
    /// clients. `trusted` adds external issuers (issuer URL, JWKS) whose tokens are accepted.
    pub fn from_data_dir(
        data_dir: &Path,
        public_base_url: Option<&str>,
        trusted: Vec<(String, Jwks)>,
    ) -> Result<Self, AuthSetupError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| AuthSetupError(format!("creating {}: {e}", data_dir.display())))?;
        let ring = KeyRing::open(data_dir).map_err(|e| AuthSetupError(e.to_string()))?;
        let (issuer_url, audience) = issuer_and_audience(public_base_url);
        let issuer = TokenIssuer::from_key_ring(&ring, &issuer_url, &audience)
            .map_err(|e| AuthSetupError(e.to_string()))?;
        let jwks = ring.jwks();
        let mut validator = TokenValidator::new(&audience).trust_issuer(&issuer_url, jwks.clone());
        for (iss, keys) in trusted {
            validator = validator.trust_issuer(iss, keys);
        }
        let clients = load_clients(data_dir)
            .map_err(AuthSetupError)?
            .into_iter()
            .map(|c| (c.client_id.clone(), c))
            .collect();
        let state = AuthState::open(data_dir).map_err(|e| {
            AuthSetupError(format!(
                "opening {}: {e}",
                data_dir.join(crate::auth_state::AUTH_DB_FILE).display()
            ))
        })?;
        Ok(Self {
            issuer,
            validator,
            jwks,
            clients,
            state,
            token_ttl: Duration::from_secs(3600),
        })
    }

    /// Mints a token (for `phip token` and the token endpoint).
    pub fn mint(&self, grant: &Grant, ttl: Duration) -> Result<Minted, TokenError> {
        self.issuer.mint(grant, ttl)
    }

    /// The public keys of this deployment's issuer.
    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }

    /// The issuer URL.
    pub fn issuer_url(&self) -> &str {
        self.issuer.issuer()
    }

    /// Validates a bearer token into a principal.
    pub fn principal(&self, token: &str) -> Result<Principal, TokenError> {
        principal_from_claims(self.claims(token)?)
    }

    /// Validates a bearer token: signature, issuer, time, audience, and that its session (if
    /// it names one) has not been signed out.
    pub fn claims(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = self.validator.validate(token)?;
        if let Some(sid) = &claims.sid {
            // Fail closed: a session whose state cannot be read is not accepted.
            match self.state.session_revoked(sid, unix_now()) {
                Ok(false) => {}
                Ok(true) => return Err(TokenError::Revoked),
                Err(error) => {
                    tracing::error!(%error, "cannot read the signed-out sessions");
                    return Err(TokenError::Revoked);
                }
            }
        }
        Ok(claims)
    }

    /// Signs session `sid` out: every token carrying it is refused from now on, here and at
    /// every server on this data directory, until `expires` (the expiry of its last token),
    /// also after a restart.
    pub fn revoke_session(&self, sid: &str, expires: i64) -> Result<(), String> {
        self.state
            .revoke_session(sid, expires, unix_now())
            .map_err(|e| format!("recording the sign-out: {e}"))
    }

    /// The client-credentials grant of SMART Backend Services: checks the client's signed
    /// assertion and issues a token for the requested scopes that the client is allowed.
    pub fn client_credentials(
        &self,
        assertion: &str,
        requested_scope: &str,
        token_endpoint: &str,
    ) -> Result<Minted, String> {
        let client_id = phip_security::token::peek_client_id(assertion)
            .map_err(|e| format!("invalid client assertion: {e}"))?;
        let client = self
            .clients
            .get(&client_id)
            .ok_or_else(|| format!("unknown client {client_id:?}"))?;
        phip_security::token::validate_client_assertion(
            assertion,
            token_endpoint,
            &client.jwks,
            &self.state,
        )
        .map_err(|e| format!("invalid client assertion: {e}"))?;
        let allowed: Vec<&str> = client.scope.split_whitespace().collect();
        let granted: Vec<&str> = requested_scope
            .split_whitespace()
            .filter(|s| allowed.contains(s))
            .collect();
        if granted.is_empty() {
            return Err(format!(
                "none of the requested scopes {requested_scope:?} is allowed for client {client_id:?}"
            ));
        }
        let grant = Grant {
            sub: client_id.clone(),
            scope: granted.join(" "),
            client_id: Some(client_id),
            org: client.org.clone(),
            division: client.division.clone(),
            ..Grant::default()
        };
        self.issuer
            .mint(&grant, self.token_ttl)
            .map_err(|e| e.to_string())
    }
}

/// Seconds since the epoch.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Turns validated claims into the engine's principal.
fn principal_from_claims(claims: Claims) -> Result<Principal, TokenError> {
    let scopes = claims
        .scopes()
        .map_err(|e| TokenError::Malformed(format!("invalid scope claim: {e}")))?;
    Ok(Principal {
        subject: claims.sub,
        client_id: claims.client_id,
        scopes: Some(scopes),
        patient: claims.patient,
        organization: claims.org,
        division: claims.division,
        roles: claims.roles,
        break_glass: None,
    })
}

/// How requests are authenticated.
#[derive(Debug, Clone)]
pub enum AuthMode {
    /// Every FHIR request needs a valid bearer token.
    Required(Arc<Authenticator>),
    /// No authentication: every request acts as an unrestricted principal. For local
    /// development only.
    Disabled,
}

/// The 401 for a missing or invalid token.
pub(crate) fn unauthorized(message: impl Into<String>) -> FhirError {
    FhirError::new(401, IssueType::Login, message)
}

/// Middleware for the FHIR API: authenticates the request (401 otherwise) and hands the
/// principal to the handlers as a request extension, before any body is read.
pub(crate) async fn require(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match authenticate(&state.config.auth, request.headers())
        .and_then(|principal| break_glass(principal, request.headers()))
    {
        Ok(principal) => {
            request.extensions_mut().insert(principal.clone());
            let mut response = next.run(request).await;
            // The audit layer outside this one records who was served.
            response.extensions_mut().insert(principal);
            response
        }
        Err(error) => crate::http::error_response(error),
    }
}

/// The role that entitles a user to break the glass.
pub const EMERGENCY_ROLE: &str = "emergency";

/// Applies an `X-Break-Glass: <reason>` request: only users holding the `emergency` role may
/// override residents' consent, only with a stated reason, and only for this request (the
/// token's short lifetime bounds how long the entitlement lasts).
fn break_glass(mut principal: Principal, headers: &HeaderMap) -> Result<Principal, FhirError> {
    let Some(value) = headers.get("x-break-glass") else {
        return Ok(principal);
    };
    let reason = value.to_str().unwrap_or("").trim();
    if reason.is_empty() {
        return Err(FhirError::new(
            400,
            IssueType::Required,
            "breaking the glass requires a reason in the X-Break-Glass header",
        ));
    }
    if !principal.is_unrestricted() && !principal.roles.iter().any(|r| r == EMERGENCY_ROLE) {
        return Err(FhirError::new(
            403,
            IssueType::Forbidden,
            "only users with the emergency role may break the glass",
        ));
    }
    principal.break_glass = Some(reason.to_owned());
    Ok(principal)
}

/// Authenticates a request from its `Authorization` header.
pub(crate) fn authenticate(mode: &AuthMode, headers: &HeaderMap) -> Result<Principal, FhirError> {
    let authenticator = match mode {
        AuthMode::Disabled => return Ok(Principal::unrestricted("anonymous (authentication off)")),
        AuthMode::Required(authenticator) => authenticator,
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "authentication required: send Authorization: Bearer <access token>",
        ));
    };
    let text = value
        .to_str()
        .map_err(|_| unauthorized("the Authorization header is not valid text"))?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .ok_or_else(|| unauthorized("the Authorization header must use the Bearer scheme"))?;
    authenticator
        .principal(token.trim())
        .map_err(|e| unauthorized(format!("invalid access token: {e}")))
}
