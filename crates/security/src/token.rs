//! Access tokens (JWT, RFC 7519 / RFC 9068 profile) and SMART Backend Services client
//! assertions.
//!
//! - [`TokenIssuer`] mints ES256-signed tokens from the key ring for `/auth/token` and
//!   `phip token`.
//! - [`TokenValidator`] checks a bearer token: signature against the JWKS of a trusted issuer
//!   (phip itself and any configured external authorisation servers), `exp`/`nbf` with a small
//!   leeway, `iss`, `aud`, and that `scope` parses. It returns typed [`Claims`] or a typed
//!   [`TokenError`].
//! - [`validate_client_assertion`] checks the signed JWT a backend client presents with the
//!   client-credentials grant (SMART Backend Services): `iss == sub == client_id`, `aud` = the
//!   token endpoint, `exp` at most five minutes ahead, `jti` never seen before (a
//!   [`ReplayGuard`]: the in-memory [`ReplayCache`], or a durable one the server keeps in its
//!   data directory), signature against the client's registered JWKS.
//!
//! Validators hold a snapshot of the key sets they were given: after a key rotation, build a
//! new validator from the ring's new JWKS (the retired key stays in it, so outstanding tokens
//! remain valid until they expire).

use crate::jws::{self, Algorithm, Jwks, JwsError, SigningKey};
use crate::scope::{ScopeContext, ScopeError, ScopeSet};
use crate::util::{now_unix, random_id};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Default clock-skew allowance for `exp`, `nbf` and `iat`, in seconds.
pub const DEFAULT_LEEWAY_SECS: i64 = 60;
/// SMART Backend Services: a client assertion's `exp` may be at most this far in the future.
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 300;
/// Tokens longer than this are rejected before any parsing (a cheap guard against abuse).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// JWS `typ` of phip's access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Why a token or assertion was refused (or could not be minted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWS/JWT, bad JSON, missing or mistyped required claims, too long.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header names an algorithm phip does not accept (`none`, `HS256`, `RS256`, …).
    #[error("unsupported algorithm {0}")]
    UnsupportedAlgorithm(String),
    /// `iss` is not a trusted issuer.
    #[error("untrusted issuer {0:?}")]
    WrongIssuer(String),
    /// No key of the issuer matches the header's `kid`/`alg`.
    #[error("unknown signing key {0:?}")]
    UnknownKey(Option<String>),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired at {exp}")]
    Expired {
        /// The token's `exp`.
        exp: i64,
    },
    /// `nbf` (or `iat`) is in the future (beyond the leeway).
    #[error("token not valid yet")]
    NotYetValid,
    /// `aud` does not include this server.
    #[error("token audience does not include {expected:?}")]
    WrongAudience {
        /// What was required.
        expected: String,
    },
    /// The `scope` claim does not parse.
    #[error(transparent)]
    Scope(#[from] ScopeError),
    /// Claims that are well-formed JSON but inconsistent (e.g. `patient/` scopes without a
    /// `patient` claim, a malformed `division`).
    #[error("invalid claims: {0}")]
    InvalidClaims(String),
    /// Client assertion: `iss` and `sub` differ, or differ from the expected client id.
    #[error("client assertion iss and sub must both equal the client_id")]
    ClientMismatch,
    /// Client assertion: `exp` too far in the future.
    #[error("client assertion exp is more than {MAX_ASSERTION_LIFETIME_SECS} s ahead")]
    LifetimeTooLong,
    /// Client assertion: this `jti` was already used.
    #[error("client assertion jti was already used")]
    Replayed,
    /// The replay cache is full of unexpired entries; refusing is safer than forgetting.
    #[error("replay cache full")]
    ReplayCacheFull,
    /// The replay cache could not be consulted or updated (a storage error); refusing is
    /// safer than accepting an assertion that might be a replay.
    #[error("replay cache unavailable: {0}")]
    ReplayCacheUnavailable(String),
    /// The token belongs to a session that was signed out.
    #[error("the token's session was signed out")]
    Revoked,
    /// Minting failed (no suitable key, RNG failure).
    #[error("cannot mint token: {0}")]
    Mint(String),
}

impl From<JwsError> for TokenError {
    fn from(e: JwsError) -> Self {
        match e {
            JwsError::Malformed(m) => TokenError::Malformed(m),
            JwsError::UnsupportedAlgorithm(a) => TokenError::UnsupportedAlgorithm(a),
            JwsError::UnsupportedCritical(c) => {
                TokenError::Malformed(format!("critical header extensions {c:?}"))
            }
            JwsError::KeyNotFound { kid, .. } => TokenError::UnknownKey(kid),
            JwsError::InvalidKey(_) => TokenError::UnknownKey(None),
            JwsError::BadSignature => TokenError::BadSignature,
            JwsError::Rng => TokenError::Mint("random number generator failed".into()),
        }
    }
}

/// The claims of a phip access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer (the authorisation server's URL).
    pub iss: String,
    /// Subject: the user, or the client id for backend services.
    pub sub: String,
    /// Audience(s): the FHIR base URL(s) the token is for. A single audience is written as a
    /// string, several as an array; both are read.
    #[serde(
        serialize_with = "ser_aud",
        deserialize_with = "de_aud",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Unique token id (for audit and revocation).
    #[serde(default)]
    pub jti: String,
    /// Space-separated SMART scopes.
    #[serde(default)]
    pub scope: String,
    /// OAuth client the token was issued to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// phip: the user's organisation (FHIR Organization id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// phip: GB/T 2260 code of the user's region (see [`crate::division`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub division: Option<String>,
    /// The FHIR Patient id a `patient/` token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// phip: the user's FHIR Practitioner id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub practitioner: Option<String>,
    /// phip: role codes (e.g. `doctor`, `nurse`, `public-health`, `admin`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Session id (the OpenID Connect `sid` claim): the sign-in session a token was minted
    /// for. Every token of one portal session carries it, so signing out revokes them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

impl Claims {
    /// The parsed scopes.
    pub fn scopes(&self) -> Result<ScopeSet, ScopeError> {
        ScopeSet::parse(&self.scope)
    }

    /// Whether `aud` includes `audience`.
    pub fn has_audience(&self, audience: &str) -> bool {
        self.aud.iter().any(|a| a == audience)
    }
}

fn ser_aud<S: Serializer>(aud: &[String], s: S) -> Result<S::Ok, S::Error> {
    match aud {
        [one] => s.serialize_str(one),
        many => many.serialize(s),
    }
}

fn de_aud<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// What a token is to grant; [`TokenIssuer::mint`] adds `iss`, `iat`, `exp`, `jti`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// Subject (user id, or client id for backend services).
    pub sub: String,
    /// Audience; `None` uses the issuer's default audience.
    pub audience: Option<String>,
    /// Space-separated SMART scopes.
    pub scope: String,
    /// OAuth client id.
    pub client_id: Option<String>,
    /// Organisation id.
    pub org: Option<String>,
    /// GB/T 2260 division code.
    pub division: Option<String>,
    /// Patient id (required when `scope` has `patient/` scopes).
    pub patient: Option<String>,
    /// Practitioner id.
    pub practitioner: Option<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// The sign-in session the token belongs to (`sid`), if any.
    pub session: Option<String>,
}

/// A freshly minted token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    /// The compact JWT.
    pub token: String,
    /// Its claims.
    pub claims: Claims,
}

/// Mints access tokens signed with one key (normally the ring's active ES256 key).
#[derive(Debug, Clone)]
pub struct TokenIssuer {
    issuer: String,
    audience: String,
    key: SigningKey,
}

impl TokenIssuer {
    /// An issuer named `issuer` (its URL, the tokens' `iss`) minting for `audience` (the FHIR
    /// base URL) by default, signing with `key`.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>, key: SigningKey) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            key,
        }
    }

    /// An issuer signing with the ring's active ES256 key.
    pub fn from_key_ring(
        ring: &crate::keys::KeyRing,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Result<Self, TokenError> {
        let key = ring
            .active(Algorithm::Es256)
            .ok_or_else(|| TokenError::Mint("no active ES256 key".into()))?;
        Ok(Self::new(issuer, audience, key.clone()))
    }

    /// The `iss` this issuer writes.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Mint a token valid for `ttl` from now.
    pub fn mint(&self, grant: &Grant, ttl: Duration) -> Result<Minted, TokenError> {
        self.mint_at(grant, ttl, now_unix())
    }

    /// Mint as if the time were `now` (seconds since the epoch).
    pub fn mint_at(&self, grant: &Grant, ttl: Duration, now: i64) -> Result<Minted, TokenError> {
        let ttl = i64::try_from(ttl.as_secs())
            .ok()
            .filter(|t| *t > 0)
            .ok_or_else(|| TokenError::Mint("ttl must be at least one second".into()))?;
        if grant.sub.is_empty() {
            return Err(TokenError::Mint("sub is required".into()));
        }
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: grant.sub.clone(),
            aud: vec![grant
                .audience
                .clone()
                .unwrap_or_else(|| self.audience.clone())],
            exp: now.saturating_add(ttl),
            iat: now,
            nbf: None,
            jti: random_id().map_err(|e| TokenError::Mint(e.to_string()))?,
            scope: grant
                .scope
                .split_ascii_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            client_id: grant.client_id.clone(),
            org: grant.org.clone(),
            division: grant.division.clone(),
            patient: grant.patient.clone(),
            practitioner: grant.practitioner.clone(),
            roles: grant.roles.clone(),
            sid: grant.session.clone(),
        };
        check_consistency(&claims)?;
        let payload = serde_json::to_vec(&claims).map_err(|e| TokenError::Mint(e.to_string()))?;
        let token = jws::sign(&self.key, Some(ACCESS_TOKEN_TYP), &payload);
        Ok(Minted { token, claims })
    }
}

/// Claims that must hold for a token to mean anything: scopes parse, `patient/` scopes come with
/// a `patient`, a `division` is a well-formed GB/T 2260 code.
fn check_consistency(claims: &Claims) -> Result<(), TokenError> {
    let scopes = claims.scopes()?;
    if scopes.contexts().contains(&ScopeContext::Patient)
        && claims.patient.as_deref().is_none_or(str::is_empty)
    {
        return Err(TokenError::InvalidClaims(
            "patient/ scopes require a patient claim".into(),
        ));
    }
    if let Some(d) = &claims.division {
        if !crate::division::is_valid_code(d) {
            return Err(TokenError::InvalidClaims(format!(
                "division {d:?} is not a GB/T 2260 code"
            )));
        }
    }
    Ok(())
}

/// Checks bearer tokens. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct TokenValidator {
    audience: String,
    issuers: Vec<(String, Jwks)>,
    leeway: i64,
}

impl TokenValidator {
    /// A validator accepting tokens whose `aud` includes `audience` (this server's FHIR base
    /// URL). It trusts no issuer until [`TokenValidator::trust_issuer`] is called.
    pub fn new(audience: impl Into<String>) -> Self {
        Self {
            audience: audience.into(),
            issuers: Vec::new(),
            leeway: DEFAULT_LEEWAY_SECS,
        }
    }

    /// Trust tokens with `iss == issuer` signed by a key of `jwks`: phip's own issuer with the
    /// key ring's JWKS, and each external authorisation server with its published JWKS. Keys
    /// are only ever used for their own issuer's tokens.
    pub fn trust_issuer(mut self, issuer: impl Into<String>, jwks: Jwks) -> Self {
        let issuer = issuer.into();
        self.issuers.retain(|(i, _)| *i != issuer);
        self.issuers.push((issuer, jwks));
        self
    }

    /// Change the clock-skew allowance (seconds, default 60).
    pub fn with_leeway(mut self, secs: i64) -> Self {
        self.leeway = secs.max(0);
        self
    }

    /// Validate `token` now.
    pub fn validate(&self, token: &str) -> Result<Claims, TokenError> {
        self.validate_at(token, now_unix())
    }

    /// Validate `token` as if the time were `now`.
    ///
    /// Order matters: the signature is checked before any time or audience claim, so a forged
    /// token always reports [`TokenError::BadSignature`] and nothing about its claims leaks.
    pub fn validate_at(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed("token too long".into()));
        }
        let decoded = jws::decode(token, None)?;
        if let Some(typ) = &decoded.header.typ {
            // RFC 9068 access tokens, plain JWTs, or none. Refusing others stops, e.g., an ID
            // token or a client assertion being replayed as an access token.
            if !["at+jwt", "application/at+jwt", "JWT", "jwt"].contains(&typ.as_str()) {
                return Err(TokenError::Malformed(format!("typ {typ:?} is not a JWT")));
            }
        }
        let claims: Claims = serde_json::from_slice(&decoded.payload)
            .map_err(|e| TokenError::Malformed(format!("claims: {e}")))?;
        let jwks = self
            .issuers
            .iter()
            .find(|(i, _)| *i == claims.iss)
            .map(|(_, j)| j)
            .ok_or_else(|| TokenError::WrongIssuer(claims.iss.clone()))?;
        decoded.verify_with(jwks)?;
        if now > claims.exp.saturating_add(self.leeway) {
            return Err(TokenError::Expired { exp: claims.exp });
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway))
            || claims.iat > now.saturating_add(self.leeway)
        {
            return Err(TokenError::NotYetValid);
        }
        if !claims.has_audience(&self.audience) {
            return Err(TokenError::WrongAudience {
                expected: self.audience.clone(),
            });
        }
        check_consistency(&claims)?;
        Ok(claims)
    }
}

/// The checked facts of a client assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAssertion {
    /// The client id (`iss` = `sub`).
    pub client_id: String,
    /// The assertion's `jti`.
    pub jti: String,
    /// Its `exp`.
    pub exp: i64,
    /// The `kid` it was signed with, if given.
    pub kid: Option<String>,
    /// The algorithm it was signed with.
    pub algorithm: Algorithm,
}

/// Where the keys (`client id` + `jti`) of accepted client assertions are remembered until
/// they expire, so that each assertion is used once.
pub trait ReplayGuard: Send + Sync {
    /// Record `key` until `expires`; [`TokenError::Replayed`] if it is already recorded and
    /// unexpired at `now`. Must be atomic: of two concurrent calls with one key, one fails.
    fn check_and_insert(&self, key: &str, expires: i64, now: i64) -> Result<(), TokenError>;
}

impl ReplayGuard for ReplayCache {
    fn check_and_insert(&self, key: &str, expires: i64, now: i64) -> Result<(), TokenError> {
        ReplayCache::check_and_insert(self, key, expires, now)
    }
}

/// Remembers client-assertion `jti`s in memory until they expire.
///
/// Per process and lost on restart, so an assertion captured before a restart could be used
/// again within its (at most five-minute) lifetime: servers use a durable [`ReplayGuard`]
/// instead (phip's is `auth.db` in the data directory). Bounded: when full of unexpired
/// entries it refuses new assertions ([`TokenError::ReplayCacheFull`]) rather than evict one
/// and allow a replay.
#[derive(Debug)]
pub struct ReplayCache {
    seen: Mutex<HashMap<String, i64>>,
    capacity: usize,
}

impl Default for ReplayCache {
    fn default() -> Self {
        Self::new(100_000)
    }
}

impl ReplayCache {
    /// A cache holding at most `capacity` live entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Record `key` until `expires`; error if it is already recorded and unexpired.
    pub fn check_and_insert(&self, key: &str, expires: i64, now: i64) -> Result<(), TokenError> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.get(key).is_some_and(|&exp| exp >= now) {
            return Err(TokenError::Replayed);
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, exp| *exp >= now);
            if seen.len() >= self.capacity {
                return Err(TokenError::ReplayCacheFull);
            }
        }
        seen.insert(key.to_string(), expires);
        Ok(())
    }

    /// Number of entries (including expired ones not yet pruned).
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    #[serde(deserialize_with = "de_aud")]
    aud: Vec<String>,
    exp: i64,
    jti: String,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
}

/// The `iss` (client id) of a client assertion, **unverified** — for looking up which client's
/// JWKS to verify it with. Never authorise anything on this value alone.
pub fn peek_client_id(assertion_jwt: &str) -> Result<String, TokenError> {
    if assertion_jwt.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed("assertion too long".into()));
    }
    let d = jws::decode(assertion_jwt, None)?;
    let c: AssertionClaims = serde_json::from_slice(&d.payload)
        .map_err(|e| TokenError::Malformed(format!("claims: {e}")))?;
    Ok(c.iss)
}

/// Validate a SMART Backend Services client assertion now. See
/// [`validate_client_assertion_at`].
pub fn validate_client_assertion(
    assertion_jwt: &str,
    token_endpoint_url: &str,
    registered_client_jwks: &Jwks,
    replay: &dyn ReplayGuard,
) -> Result<ClientAssertion, TokenError> {
    validate_client_assertion_at(
        assertion_jwt,
        token_endpoint_url,
        registered_client_jwks,
        replay,
        now_unix(),
    )
}

/// Validate a client assertion as if the time were `now`:
/// signature (ES256, ES384 or SM2SM3; RS384 is not supported) against the client's registered
/// JWKS; `iss == sub`; `aud` includes `token_endpoint_url`; `exp` not past and at most five
/// minutes ahead; `nbf`/`iat` not in the future; `jti` present and not seen before (recorded
/// only after everything else passed, so garbage cannot fill the cache).
///
/// The caller must still check that the returned `client_id` is the client whose JWKS it passed.
pub fn validate_client_assertion_at(
    assertion_jwt: &str,
    token_endpoint_url: &str,
    registered_client_jwks: &Jwks,
    replay: &dyn ReplayGuard,
    now: i64,
) -> Result<ClientAssertion, TokenError> {
    if assertion_jwt.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed("assertion too long".into()));
    }
    let d = jws::decode(assertion_jwt, None)?;
    let c: AssertionClaims = serde_json::from_slice(&d.payload)
        .map_err(|e| TokenError::Malformed(format!("claims: {e}")))?;
    d.verify_with(registered_client_jwks)?;
    if c.iss.is_empty() || c.iss != c.sub {
        return Err(TokenError::ClientMismatch);
    }
    if !c.aud.iter().any(|a| a == token_endpoint_url) {
        return Err(TokenError::WrongAudience {
            expected: token_endpoint_url.into(),
        });
    }
    let leeway = DEFAULT_LEEWAY_SECS;
    if now > c.exp.saturating_add(leeway) {
        return Err(TokenError::Expired { exp: c.exp });
    }
    if c.exp > now.saturating_add(MAX_ASSERTION_LIFETIME_SECS + leeway) {
        return Err(TokenError::LifetimeTooLong);
    }
    if c.nbf.is_some_and(|t| t > now.saturating_add(leeway))
        || c.iat.is_some_and(|t| t > now.saturating_add(leeway))
    {
        return Err(TokenError::NotYetValid);
    }
    if c.jti.is_empty() || c.jti.len() > 512 {
        return Err(TokenError::Malformed("jti missing or too long".into()));
    }
    // Keyed by client as well: jti uniqueness is only promised per issuer.
    let key = format!("{}\u{0}{}", c.iss, c.jti);
    replay.check_and_insert(&key, c.exp.saturating_add(leeway), now)?;
    Ok(ClientAssertion {
        client_id: c.iss,
        jti: c.jti,
        exp: c.exp,
        kid: d.header.kid,
        algorithm: d.algorithm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jws::PrivateKey;
    use crate::util::{b64u_decode, b64u_encode};

    const ISS: &str = "https://hic.example.cn/auth";
    const AUD: &str = "https://hic.example.cn/fhir";
    const NOW: i64 = 1_800_000_000;

    fn key(alg: Algorithm, kid: &str) -> SigningKey {
        SigningKey::new(kid, PrivateKey::generate(alg).unwrap())
    }

    fn setup() -> (TokenIssuer, TokenValidator) {
        let k = key(Algorithm::Es256, "es256-1");
        let jwks = Jwks {
            keys: vec![k.public_jwk()],
        };
        (
            TokenIssuer::new(ISS, AUD, k),
            TokenValidator::new(AUD).trust_issuer(ISS, jwks),
        )
    }

    fn grant() -> Grant {
        Grant {
            sub: "user-1".into(),
            scope: "user/Observation.rs user/Patient.r openid".into(),
            org: Some("org-42".into()),
            division: Some("440305".into()),
            practitioner: Some("prac-7".into()),
            roles: vec!["doctor".into()],
            ..Grant::default()
        }
    }

    fn payload(token: &str) -> serde_json::Value {
        let p = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&b64u_decode(p).unwrap()).unwrap()
    }

    #[test]
    fn mint_and_validate_round_trip() {
        let (issuer, validator) = setup();
        let m = issuer
            .mint_at(&grant(), Duration::from_secs(3600), NOW)
            .unwrap();
        let c = validator.validate_at(&m.token, NOW + 10).unwrap();
        assert_eq!(c, m.claims);
        assert_eq!(c.iss, ISS);
        assert_eq!(c.aud, vec![AUD.to_string()]);
        assert_eq!(c.exp, NOW + 3600);
        assert_eq!(c.iat, NOW);
        assert!(!c.jti.is_empty());
        assert_eq!(c.division.as_deref(), Some("440305"));
        assert!(c.scopes().unwrap().permits(
            ScopeContext::User,
            "Observation",
            crate::scope::Interaction::Search
        ));
        // Wire format: aud as a string, typ at+jwt, alg ES256.
        let p = payload(&m.token);
        assert_eq!(p["aud"], AUD);
        assert_eq!(p["roles"][0], "doctor");
        let h: serde_json::Value =
            serde_json::from_slice(&b64u_decode(m.token.split('.').next().unwrap()).unwrap())
                .unwrap();
        assert_eq!(h["typ"], "at+jwt");
        assert_eq!(h["alg"], "ES256");
        assert_eq!(h["kid"], "es256-1");
        // Two tokens never share a jti.
        let m2 = issuer
            .mint_at(&grant(), Duration::from_secs(3600), NOW)
            .unwrap();
        assert_ne!(m.claims.jti, m2.claims.jti);
    }

    #[test]
    fn expiry_and_not_before() {
        let (issuer, validator) = setup();
        let m = issuer
            .mint_at(&grant(), Duration::from_secs(600), NOW)
            .unwrap();
        validator.validate_at(&m.token, NOW + 600).unwrap();
        validator.validate_at(&m.token, NOW + 600 + 60).unwrap(); // within leeway
        assert_eq!(
            validator.validate_at(&m.token, NOW + 600 + 61),
            Err(TokenError::Expired { exp: NOW + 600 })
        );
        assert_eq!(
            validator
                .clone()
                .with_leeway(0)
                .validate_at(&m.token, NOW + 601),
            Err(TokenError::Expired { exp: NOW + 600 })
        );
        // issued in the future
        assert_eq!(
            validator.validate_at(&m.token, NOW - 120),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn audience_issuer_and_signature_failures() {
        let (issuer, validator) = setup();
        let mut g = grant();
        g.audience = Some("https://other.example.cn/fhir".into());
        let m = issuer.mint_at(&g, Duration::from_secs(600), NOW).unwrap();
        assert_eq!(
            validator.validate_at(&m.token, NOW),
            Err(TokenError::WrongAudience {
                expected: AUD.into()
            })
        );

        // Same key, other issuer name: not trusted.
        let other = TokenIssuer::new("https://evil.example", AUD, issuer.key.clone());
        let m = other
            .mint_at(&grant(), Duration::from_secs(600), NOW)
            .unwrap();
        assert_eq!(
            validator.validate_at(&m.token, NOW),
            Err(TokenError::WrongIssuer("https://evil.example".into()))
        );

        // Right issuer name, wrong key with the same kid.
        let forger = TokenIssuer::new(ISS, AUD, key(Algorithm::Es256, "es256-1"));
        let m = forger
            .mint_at(&grant(), Duration::from_secs(600), NOW)
            .unwrap();
        assert_eq!(
            validator.validate_at(&m.token, NOW),
            Err(TokenError::BadSignature)
        );

        // Edited claims (widened scope) on a genuine token.
        let m = issuer
            .mint_at(&grant(), Duration::from_secs(600), NOW)
            .unwrap();
        let mut p = payload(&m.token);
        p["scope"] = "user/*.cruds".into();
        let parts: Vec<&str> = m.token.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64u_encode(serde_json::to_vec(&p).unwrap()),
            parts[2]
        );
        assert_eq!(
            validator.validate_at(&forged, NOW),
            Err(TokenError::BadSignature)
        );
        // Expired *and* forged reports the signature, not the expiry.
        assert_eq!(
            validator.validate_at(&forged, NOW + 100_000),
            Err(TokenError::BadSignature)
        );

        // alg none
        let none = format!(
            "{}.{}.",
            b64u_encode(r#"{"alg":"none","typ":"JWT"}"#),
            parts[1]
        );
        assert_eq!(
            validator.validate_at(&none, NOW),
            Err(TokenError::UnsupportedAlgorithm("none".into()))
        );
    }

    #[test]
    fn malformed_tokens() {
        let (_, validator) = setup();
        for bad in ["", "abc", "a.b.c", &"x".repeat(MAX_TOKEN_LEN + 1)] {
            assert!(
                matches!(
                    validator.validate_at(bad, NOW),
                    Err(TokenError::Malformed(_))
                ),
                "{bad:.20}"
            );
        }
        // Signed, but claims missing exp.
        let k = key(Algorithm::Es256, "es256-1");
        let t = jws::sign(&k, Some("JWT"), br#"{"iss":"x","sub":"y"}"#);
        assert!(matches!(
            validator.validate_at(&t, NOW),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn external_issuer_with_sm2_and_multiple_audiences() {
        let ext_key = key(Algorithm::Sm2Sm3, "ext-sm2");
        let (_, validator) = setup();
        let validator = validator.trust_issuer(
            "https://idp.example.cn",
            Jwks {
                keys: vec![ext_key.public_jwk()],
            },
        );
        let claims = serde_json::json!({
            "iss": "https://idp.example.cn", "sub": "u", "aud": ["x", AUD],
            "exp": NOW + 60, "iat": NOW, "jti": "j", "scope": "user/Patient.rs"
        });
        let t = jws::sign(&ext_key, Some("JWT"), &serde_json::to_vec(&claims).unwrap());
        let c = validator.validate_at(&t, NOW).unwrap();
        assert_eq!(c.aud.len(), 2);
        // The external issuer's key is not accepted for phip's own issuer name.
        let claims = serde_json::json!({
            "iss": ISS, "sub": "u", "aud": AUD, "exp": NOW + 60, "iat": NOW,
        });
        let t = jws::sign(&ext_key, Some("JWT"), &serde_json::to_vec(&claims).unwrap());
        assert_eq!(
            validator.validate_at(&t, NOW),
            Err(TokenError::UnknownKey(Some("ext-sm2".into())))
        );
    }

    #[test]
    fn inconsistent_grants_refused() {
        let (issuer, _) = setup();
        let mut g = grant();
        g.scope = "patient/Observation.rs".into();
        assert!(matches!(
            issuer.mint_at(&g, Duration::from_secs(60), NOW),
            Err(TokenError::InvalidClaims(_))
        ));
        g.patient = Some("pat-1".into());
        issuer.mint_at(&g, Duration::from_secs(60), NOW).unwrap();
        g.division = Some("44030".into());
        assert!(matches!(
            issuer.mint_at(&g, Duration::from_secs(60), NOW),
            Err(TokenError::InvalidClaims(_))
        ));
        g.division = None;
        g.scope = "patient/Observation.xyz".into();
        assert!(matches!(
            issuer.mint_at(&g, Duration::from_secs(60), NOW),
            Err(TokenError::Scope(_))
        ));
        assert!(issuer.mint_at(&grant(), Duration::ZERO, NOW).is_err());
    }

    #[test]
    fn issuer_from_key_ring() {
        let dir = tempfile::tempdir().unwrap();
        let ring = crate::keys::KeyRing::open_with(
            dir.path(),
            crate::keys::MasterKey::from_bytes([1; 32]),
            crate::keys::KeyWrap::Aes256Gcm,
        )
        .unwrap();
        let issuer = TokenIssuer::from_key_ring(&ring, ISS, AUD).unwrap();
        let v = TokenValidator::new(AUD).trust_issuer(ISS, ring.jwks());
        let m = issuer
            .mint_at(&grant(), Duration::from_secs(60), NOW)
            .unwrap();
        v.validate_at(&m.token, NOW).unwrap();
    }

    // ---- client assertions ----

    const TOKEN_URL: &str = "https://hic.example.cn/auth/token";

    fn assertion(k: &SigningKey, claims: serde_json::Value) -> String {
        jws::sign(k, Some("JWT"), &serde_json::to_vec(&claims).unwrap())
    }

    fn good_claims(jti: &str) -> serde_json::Value {
        serde_json::json!({
            "iss": "client-a", "sub": "client-a", "aud": TOKEN_URL,
            "exp": NOW + 240, "iat": NOW, "jti": jti
        })
    }

    #[test]
    fn client_assertion_accepted_once() {
        let k = key(Algorithm::Es256, "ck");
        let jwks = Jwks {
            keys: vec![k.public_jwk()],
        };
        let cache = ReplayCache::default();
        let a = assertion(&k, good_claims("j1"));
        assert_eq!(peek_client_id(&a).unwrap(), "client-a");
        let ok = validate_client_assertion_at(&a, TOKEN_URL, &jwks, &cache, NOW).unwrap();
        assert_eq!(ok.client_id, "client-a");
        assert_eq!(ok.algorithm, Algorithm::Es256);
        assert_eq!(ok.kid.as_deref(), Some("ck"));
        assert_eq!(
            validate_client_assertion_at(&a, TOKEN_URL, &jwks, &cache, NOW + 1),
            Err(TokenError::Replayed)
        );
        // A new jti is fine; the same jti from another client is too.
        let a2 = assertion(&k, good_claims("j2"));
        validate_client_assertion_at(&a2, TOKEN_URL, &jwks, &cache, NOW).unwrap();
        let mut other = good_claims("j1");
        other["iss"] = "client-b".into();
        other["sub"] = "client-b".into();
        validate_client_assertion_at(&assertion(&k, other), TOKEN_URL, &jwks, &cache, NOW).unwrap();
    }

    #[test]
    fn client_assertion_failures() {
        let k = key(Algorithm::Es256, "ck");
        let jwks = Jwks {
            keys: vec![k.public_jwk()],
        };
        let cache = ReplayCache::default();
        let check = |claims: serde_json::Value| {
            validate_client_assertion_at(&assertion(&k, claims), TOKEN_URL, &jwks, &cache, NOW)
        };
        let mut c = good_claims("a");
        c["sub"] = "someone-else".into();
        assert_eq!(check(c), Err(TokenError::ClientMismatch));
        let mut c = good_claims("b");
        c["aud"] = "https://hic.example.cn/fhir".into();
        assert!(matches!(check(c), Err(TokenError::WrongAudience { .. })));
        let mut c = good_claims("c");
        c["exp"] = (NOW + 3600).into();
        assert_eq!(check(c), Err(TokenError::LifetimeTooLong));
        let mut c = good_claims("d");
        c["exp"] = (NOW - 3600).into();
        assert_eq!(check(c), Err(TokenError::Expired { exp: NOW - 3600 }));
        let mut c = good_claims("e");
        c["jti"] = "".into();
        assert!(matches!(check(c), Err(TokenError::Malformed(_))));
        let mut c = good_claims("f");
        c.as_object_mut().unwrap().remove("jti");
        assert!(matches!(check(c), Err(TokenError::Malformed(_))));
        // aud as an array containing the endpoint is accepted
        let mut c = good_claims("g");
        c["aud"] = serde_json::json!(["x", TOKEN_URL]);
        check(c).unwrap();
        // signed by a key the client did not register
        let stranger = key(Algorithm::Es256, "ck");
        let a = assertion(&stranger, good_claims("h"));
        assert_eq!(
            validate_client_assertion_at(&a, TOKEN_URL, &jwks, &cache, NOW),
            Err(TokenError::BadSignature)
        );
        // failed assertions did not consume their jti
        check(good_claims("h")).unwrap();
    }

    #[test]
    fn high_s_tokens_and_assertions_refused() {
        // An access token: the same claims under the other ECDSA encoding are not a token.
        let (issuer, validator) = setup();
        let m = issuer
            .mint_at(&grant(), Duration::from_secs(600), NOW)
            .unwrap();
        validator.validate_at(&m.token, NOW).unwrap();
        let flipped = phip_testkit::jose::flip_s(&m.token);
        assert_ne!(flipped, m.token);
        assert_eq!(
            validator.validate_at(&flipped, NOW),
            Err(TokenError::BadSignature)
        );
        // A client assertion (ES256 and SM2), flipped before its first use.
        for alg in [Algorithm::Es256, Algorithm::Sm2Sm3] {
            let k = key(alg, "ck");
            let jwks = Jwks {
                keys: vec![k.public_jwk()],
            };
            let cache = ReplayCache::default();
            let a = assertion(&k, good_claims("flip"));
            assert_eq!(
                validate_client_assertion_at(
                    &phip_testkit::jose::flip_s(&a),
                    TOKEN_URL,
                    &jwks,
                    &cache,
                    NOW
                ),
                Err(TokenError::BadSignature),
                "{alg}"
            );
            validate_client_assertion_at(&a, TOKEN_URL, &jwks, &cache, NOW).unwrap();
        }
    }

    #[test]
    fn replay_cache_expiry_and_capacity() {
        let cache = ReplayCache::new(2);
        cache.check_and_insert("a", NOW + 10, NOW).unwrap();
        cache.check_and_insert("b", NOW + 10, NOW).unwrap();
        assert_eq!(
            cache.check_and_insert("c", NOW + 10, NOW),
            Err(TokenError::ReplayCacheFull)
        );
        // after expiry, entries are pruned and keys may be used again
        cache.check_and_insert("c", NOW + 100, NOW + 11).unwrap();
        cache.check_and_insert("a", NOW + 100, NOW + 11).unwrap();
        assert_eq!(
            cache.check_and_insert("a", NOW + 100, NOW + 12),
            Err(TokenError::Replayed)
        );
        assert_eq!(cache.len(), 2);
    }
}
