//! Issuing a health code: the SMART Health Cards JWS.
//!
//! The protected header is `{"alg":…,"zip":"DEF","kid":…}` (no `typ`, as SHC specifies);
//! the payload is the minified claims JSON compressed with raw DEFLATE (RFC 1951, no zlib
//! header), which keeps a typical code near 600 characters, inside one QR code.

use std::io::Write as _;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use flate2::write::DeflateEncoder;
use flate2::Compression;
use phip_security::jws::Algorithm;
use serde_json::json;

use crate::{numeric, HealthCodeError, HealthCodeSubject, IssuerKeys};

/// The SMART Health Cards credential type every code carries.
pub const HEALTH_CARD_TYPE: &str = "https://smarthealth.cards#health-card";
/// The FHIR version of the embedded bundle.
pub const FHIR_VERSION: &str = "4.0.1";

/// A freshly issued code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCode {
    /// The compact JWS.
    pub jws: String,
    /// The QR payload, `shc:/` + digits.
    pub shc: String,
    /// The signing key's thumbprint `kid`.
    pub kid: String,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The revocation id carried in `vc.rid`.
    pub rid: String,
    /// Not before, seconds since the epoch.
    pub nbf: i64,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
}

/// Signs a code for `subject`, valid from `nbf` until `exp` (seconds since the epoch), with
/// the issuer's active `algorithm` key. `iss` is the issuer URL: verifiers fetch
/// `{iss}/.well-known/jwks.json`, so it has no trailing slash.
pub fn issue(
    keys: &IssuerKeys,
    iss: &str,
    subject: &HealthCodeSubject,
    algorithm: Algorithm,
    nbf: i64,
    exp: i64,
) -> Result<IssuedCode, HealthCodeError> {
    if exp <= nbf {
        return Err(HealthCodeError::Malformed(
            "a health code must expire after it becomes valid".into(),
        ));
    }
    let key = keys
        .active(algorithm)
        .ok_or_else(|| HealthCodeError::Key(format!("the issuer has no active {algorithm} key")))?;
    let rid = keys
        .rid(key.kid(), &subject.person_id)
        .ok_or_else(|| HealthCodeError::Key("no revocation secret for the key".into()))?;
    let claims = json!({
        "iss": iss.trim_end_matches('/'),
        "nbf": nbf,
        "exp": exp,
        "vc": {
            "type": [HEALTH_CARD_TYPE],
            "rid": rid,
            "credentialSubject": {
                "fhirVersion": FHIR_VERSION,
                "fhirBundle": subject.to_bundle()
            }
        }
    });
    let header = json!({"alg": algorithm.as_str(), "zip": "DEF", "kid": key.kid()});
    let payload = deflate(claims.to_string().as_bytes())?;
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = key.private_key().sign(input.as_bytes());
    let jws = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature));
    Ok(IssuedCode {
        shc: numeric::encode(&jws)?,
        jws,
        kid: key.kid().to_owned(),
        algorithm,
        rid,
        nbf,
        exp,
    })
}

fn deflate(bytes: &[u8]) -> Result<Vec<u8>, HealthCodeError> {
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::best());
    encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .map_err(|e| HealthCodeError::Render(format!("DEFLATE: {e}")))
}
