//! Verifying a scanned health code, offline: what a clinic or pharmacy scanner and
//! `phip health-code verify` do with nothing but the issuer's JWKS and CRLs.
//!
//! Checks, in order, each failing with its own [`Refusal`]:
//! 1. the text is a `shc:/` code or a compact JWS;
//! 2. the header names `ES256` or `SM2SM3`, `zip: DEF` and a `kid`;
//! 3. a key with that `kid` is in the JWKS, its `kid` is its RFC 7638 thumbprint (as SHC
//!    requires) and its curve matches the algorithm;
//! 4. the signature verifies;
//! 5. the payload inflates (bounded) into SHC claims with a health card type and a Patient;
//! 6. `iss` is a trusted issuer (when the verifier names any);
//! 7. `nbf ≤ now + leeway` and `now − leeway < exp` (a health code without `exp` is refused);
//! 8. the `rid` is not revoked by the CRL of the key, when one is loaded.

use std::collections::HashMap;
use std::io::Read as _;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use flate2::read::DeflateDecoder;
use phip_security::jws::{self, Algorithm, Jwks, JwsError};
use serde_json::Value;

use crate::issue::{FHIR_VERSION, HEALTH_CARD_TYPE};
use crate::{keys, numeric, Crl, HealthCodeSubject};

/// Clock skew tolerated on `nbf` and `exp` by default, in seconds.
pub const DEFAULT_LEEWAY_SECONDS: i64 = 60;
/// Largest inflated payload accepted: a single-QR code inflates to a few kilobytes, and a
/// bound stops a crafted "zip bomb" payload.
const MAX_PAYLOAD_BYTES: u64 = 64 * 1024;

/// Why a code is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a health code at all, or its content is not what SHC prescribes.
    #[error("not a valid health code: {0}")]
    Malformed(String),
    /// The header names an algorithm other than ES256 / SM2SM3.
    #[error("unsupported signature algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// No trusted key has the code's `kid`.
    #[error("the code was signed with an unknown key {0:?}")]
    UnknownKey(String),
    /// The signature does not verify: the code was altered or forged.
    #[error("the signature does not verify: the code was altered or forged")]
    BadSignature,
    /// `iss` is not one the verifier trusts.
    #[error("the code was issued by {0:?}, which is not trusted here")]
    UntrustedIssuer(String),
    /// The code is not valid yet.
    #[error("the code is not valid before {nbf} (seconds since the epoch)")]
    NotYetValid {
        /// Its `nbf`.
        nbf: i64,
    },
    /// The code has expired; the resident refreshes it in the app.
    #[error("the code expired at {exp} (seconds since the epoch); ask for a fresh one")]
    Expired {
        /// Its `exp`.
        exp: i64,
    },
    /// The code was revoked.
    #[error("the code was revoked")]
    Revoked,
}

impl Refusal {
    /// A stable machine-readable code for the reason (`expired`, `revoked`, …), used in
    /// OperationOutcome details and the CLI's output.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed",
            Refusal::UnsupportedAlgorithm(_) => "unsupported-algorithm",
            Refusal::UnknownKey(_) => "unknown-key",
            Refusal::BadSignature => "bad-signature",
            Refusal::UntrustedIssuer(_) => "untrusted-issuer",
            Refusal::NotYetValid { .. } => "not-yet-valid",
            Refusal::Expired { .. } => "expired",
            Refusal::Revoked => "revoked",
        }
    }
}

/// A code that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCode {
    /// The issuer URL.
    pub iss: String,
    /// The signing key's `kid`.
    pub kid: String,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Not before.
    pub nbf: i64,
    /// Expiry.
    pub exp: i64,
    /// Revocation id, if the code carries one.
    pub rid: Option<String>,
    /// The person.
    pub subject: HealthCodeSubject,
    /// The compact JWS (decoded from `shc:/` when that was given).
    pub jws: String,
}

/// An offline verifier: trusted keys, optional CRLs and trusted issuers.
#[derive(Debug, Clone)]
pub struct Verifier {
    jwks: Jwks,
    crls: HashMap<String, Crl>,
    issuers: Vec<String>,
    leeway: i64,
}

impl Verifier {
    /// A verifier trusting the keys of `jwks` (SHC requires `kid` = thumbprint; other keys
    /// are ignored), any issuer, with [`DEFAULT_LEEWAY_SECONDS`].
    pub fn new(jwks: Jwks) -> Self {
        let keys = jwks
            .keys
            .into_iter()
            .filter(|k| k.kid.is_some() && keys::thumbprint(k).ok().as_deref() == k.kid.as_deref())
            .collect();
        Self {
            jwks: Jwks { keys },
            crls: HashMap::new(),
            issuers: Vec::new(),
            leeway: DEFAULT_LEEWAY_SECONDS,
        }
    }

    /// Accept only codes whose `iss` is `issuer` (or another issuer trusted this way).
    pub fn trust_issuer(mut self, issuer: &str) -> Self {
        self.issuers.push(issuer.trim_end_matches('/').to_owned());
        self
    }

    /// Check codes of the CRL's key against it.
    pub fn with_crl(mut self, crl: Crl) -> Self {
        self.crls.insert(crl.kid.clone(), crl);
        self
    }

    /// Clock skew tolerance in seconds.
    pub fn leeway(mut self, seconds: i64) -> Self {
        self.leeway = seconds.max(0);
        self
    }

    /// Verifies `code` (`shc:/…` or a compact JWS) at `now` (seconds since the epoch).
    pub fn verify(&self, code: &str, now: i64) -> Result<VerifiedCode, Refusal> {
        let code = code.trim();
        let jws = if code
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("shc:/"))
        {
            numeric::decode(code).map_err(|e| Refusal::Malformed(e.to_string()))?
        } else {
            code.to_owned()
        };
        let header = header(&jws)?;
        let decoded = jws::decode(&jws, None).map_err(|e| match e {
            JwsError::UnsupportedAlgorithm(alg) => Refusal::UnsupportedAlgorithm(alg),
            other => Refusal::Malformed(other.to_string()),
        })?;
        if !matches!(decoded.algorithm, Algorithm::Es256 | Algorithm::Sm2Sm3) {
            return Err(Refusal::UnsupportedAlgorithm(header.alg));
        }
        decoded.verify_with(&self.jwks).map_err(|e| match e {
            JwsError::KeyNotFound { .. } => Refusal::UnknownKey(header.kid.clone()),
            _ => Refusal::BadSignature,
        })?;
        let claims = inflate(&decoded.payload)?;
        let (iss, nbf, exp, rid, subject) = read_claims(&claims)?;
        if !self.issuers.is_empty() && !self.issuers.contains(&iss) {
            return Err(Refusal::UntrustedIssuer(iss));
        }
        if nbf > now + self.leeway {
            return Err(Refusal::NotYetValid { nbf });
        }
        if exp <= now - self.leeway {
            return Err(Refusal::Expired { exp });
        }
        if let (Some(crl), Some(rid)) = (self.crls.get(&header.kid), &rid) {
            if crl.revokes(rid, nbf) {
                return Err(Refusal::Revoked);
            }
        }
        Ok(VerifiedCode {
            iss,
            kid: header.kid,
            algorithm: decoded.algorithm,
            nbf,
            exp,
            rid,
            subject,
            jws,
        })
    }
}

struct ShcHeader {
    alg: String,
    kid: String,
}

fn header(jws: &str) -> Result<ShcHeader, Refusal> {
    let malformed = |m: &str| Refusal::Malformed(m.to_owned());
    let first = jws
        .split('.')
        .next()
        .ok_or_else(|| malformed("not a compact JWS"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(first)
        .map_err(|_| malformed("the JWS header is not base64url"))?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|_| malformed("the JWS header is not JSON"))?;
    let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    let alg = text("alg").ok_or_else(|| malformed("the JWS header has no alg"))?;
    if text("zip").as_deref() != Some("DEF") {
        return Err(malformed(
            "a health card payload is DEFLATE-compressed (zip: DEF)",
        ));
    }
    let kid = text("kid").ok_or_else(|| malformed("the JWS header has no kid"))?;
    Ok(ShcHeader { alg, kid })
}

fn inflate(payload: &[u8]) -> Result<Value, Refusal> {
    let mut json = Vec::new();
    DeflateDecoder::new(payload)
        .take(MAX_PAYLOAD_BYTES + 1)
        .read_to_end(&mut json)
        .map_err(|_| Refusal::Malformed("the payload is not raw DEFLATE".into()))?;
    if json.len() as u64 > MAX_PAYLOAD_BYTES {
        return Err(Refusal::Malformed(
            "the payload inflates beyond 64 KiB".into(),
        ));
    }
    serde_json::from_slice(&json).map_err(|_| Refusal::Malformed("the payload is not JSON".into()))
}

type Claims = (String, i64, i64, Option<String>, HealthCodeSubject);

fn read_claims(claims: &Value) -> Result<Claims, Refusal> {
    let malformed = |m: &str| Refusal::Malformed(m.to_owned());
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("the credential has no iss"))?
        .to_owned();
    // NumericDate may carry a fraction; whole seconds are what the checks need.
    let seconds = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_f64)
            .filter(|v| v.is_finite())
            .map(|v| v.floor() as i64)
    };
    let nbf = seconds("nbf").ok_or_else(|| malformed("the credential has no nbf"))?;
    let exp = seconds("exp").ok_or_else(|| malformed("a health code must carry exp"))?;
    let vc = claims
        .get("vc")
        .ok_or_else(|| malformed("the credential has no vc"))?;
    let is_health_card = vc
        .get("type")
        .and_then(Value::as_array)
        .is_some_and(|t| t.iter().any(|t| t.as_str() == Some(HEALTH_CARD_TYPE)));
    if !is_health_card {
        return Err(malformed("the credential is not a health card"));
    }
    let rid = match vc.get("rid") {
        None => None,
        Some(Value::String(rid)) if valid_rid(rid) => Some(rid.clone()),
        Some(_) => {
            return Err(malformed(
                "vc.rid is not a base64url id of at most 24 characters",
            ))
        }
    };
    let subject = vc
        .get("credentialSubject")
        .ok_or_else(|| malformed("the credential has no credentialSubject"))?;
    if subject.get("fhirVersion").and_then(Value::as_str) != Some(FHIR_VERSION) {
        return Err(malformed("the credential's fhirVersion is not 4.0.1"));
    }
    let bundle = subject
        .get("fhirBundle")
        .ok_or_else(|| malformed("the credential has no fhirBundle"))?;
    let subject =
        HealthCodeSubject::from_bundle(bundle).map_err(|e| Refusal::Malformed(e.to_string()))?;
    Ok((iss, nbf, exp, rid, subject))
}

fn valid_rid(rid: &str) -> bool {
    !rid.is_empty()
        && rid.len() <= 24
        && rid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IssuerKeys;
    use flate2::write::DeflateEncoder;
    use flate2::Compression;
    use phip_security::jws::{PrivateKey, SigningKey};
    use serde_json::json;
    use std::io::Write as _;

    /// A correctly signed code over arbitrary claims bytes.
    fn signed(keys: &IssuerKeys, claims: &[u8]) -> String {
        let key = keys.active(Algorithm::Es256).unwrap();
        let mut encoder = DeflateEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(claims).unwrap();
        let payload = encoder.finish().unwrap();
        let header = json!({"alg": "ES256", "zip": "DEF", "kid": key.kid()});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let signature = key.private_key().sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn keys() -> IssuerKeys {
        let mut keys = IssuerKeys::default();
        let key = SigningKey::new("k", PrivateKey::generate(Algorithm::Es256).unwrap());
        keys.add(&key, true).unwrap();
        keys
    }

    fn claims(exp: Option<i64>, rid: Value) -> Vec<u8> {
        let mut claims = json!({
            "iss": "https://i.example/fhir", "nbf": 100,
            "vc": {"type": [HEALTH_CARD_TYPE], "rid": rid, "credentialSubject": {
                "fhirVersion": "4.0.1",
                "fhirBundle": {"resourceType": "Bundle", "type": "collection", "entry": [
                    {"fullUrl": "resource:0", "resource": {"resourceType": "Patient",
                     "identifier": [{"system": crate::subject::PERSON_ID_SYSTEM, "value": "p"}]}}]}}}
        });
        if let Some(exp) = exp {
            claims["exp"] = json!(exp);
        }
        claims.to_string().into_bytes()
    }

    #[test]
    fn high_s_signature_refused() {
        let keys = keys();
        let verifier = Verifier::new(keys.jwks());
        let code = signed(&keys, &claims(Some(500), json!("abc")));
        verifier.verify(&code, 200).unwrap();
        let flipped = phip_testkit::jose::flip_s(&code);
        assert!(matches!(
            verifier.verify(&flipped, 200),
            Err(Refusal::BadSignature)
        ));
        // The same through the QR's numeric form.
        let numeric = crate::numeric::encode(&flipped).unwrap();
        assert!(matches!(
            verifier.verify(&numeric, 200),
            Err(Refusal::BadSignature)
        ));
    }

    #[test]
    fn signed_but_unacceptable_payloads() {
        let keys = keys();
        let verifier = Verifier::new(keys.jwks());
        assert!(verifier
            .verify(&signed(&keys, &claims(Some(500), json!("abc"))), 200)
            .is_ok());
        // A health code without expiry.
        let code = signed(&keys, &claims(None, json!("abc")));
        assert!(
            matches!(verifier.verify(&code, 200), Err(Refusal::Malformed(m)) if m.contains("exp"))
        );
        // A rid that is not a short base64url id.
        let code = signed(&keys, &claims(Some(500), json!("has spaces")));
        assert!(matches!(
            verifier.verify(&code, 200),
            Err(Refusal::Malformed(_))
        ));
        // A payload inflating to megabytes (a "zip bomb") is stopped at 64 KiB.
        let mut bomb = claims(Some(500), json!("abc"));
        bomb.extend(std::iter::repeat_n(b' ', 4 * 1024 * 1024));
        let code = signed(&keys, &bomb);
        assert!(
            code.len() * 100 < bomb.len(),
            "compresses well: {}",
            code.len()
        );
        assert!(
            matches!(verifier.verify(&code, 200), Err(Refusal::Malformed(m)) if m.contains("64 KiB"))
        );
        // Not JSON, not a health card.
        assert!(verifier.verify(&signed(&keys, b"not json"), 200).is_err());
        let other =
            json!({"iss": "x", "nbf": 1, "exp": 500, "vc": {"type": ["VerifiableCredential"]}});
        assert!(verifier
            .verify(&signed(&keys, other.to_string().as_bytes()), 200)
            .is_err());
    }
}
