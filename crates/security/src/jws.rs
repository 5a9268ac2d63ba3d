//! Compact JWS (RFC 7515) with the algorithms phip trusts, and JWK / JWKS (RFC 7517).
//!
//! Algorithms:
//! - `ES256` — ECDSA P-256 with SHA-256, signature = raw `r || s` (RFC 7518 §3.4). Sign and verify.
//! - `SM2SM3` — SM2 with the SM3 pre-hash and the default user ID `1234567812345678`
//!   (see [`crate::sm`]), signature = raw `r || s`, 64 bytes. **Not registered with IANA**: it is
//!   phip's own label, chosen because no registered JOSE name exists for SM2. Peers must agree on
//!   it out of band. Its keys appear in a JWKS as `{"kty":"EC","crv":"SM2","alg":"SM2SM3"}`.
//! - `ES384` — ECDSA P-384 with SHA-384. Verify only: SMART Backend Services requires
//!   authorization servers to accept `ES384` client assertions; phip never signs with it.
//!
//! Everything else — `none`, HMAC (`HS*`, which would let a public key be used as a shared
//! secret), RSA — is rejected. The algorithm a key may be used with is fixed by the key's curve,
//! so a header cannot talk a verifier into using a key with another algorithm.
//!
//! ECDSA signatures (`ES256`, `ES384`) are accepted only in their low-s form (`s ≤ n/2`, as
//! BIP-62 and most hardened verifiers require) and phip's own are always produced in it: ECDSA
//! lets anyone turn a valid `(r, s)` into a second valid `(r, n − s)`, which would give one
//! token, assertion, health code or signed document two encodings. SM2 needs no such rule: its
//! verification equation binds `s` (with `t = r + s`), so `(r, n − s)` does not verify.
//!
//! A *detached* JWS (RFC 7515 Appendix F) is `header..signature`: the payload is transmitted
//! separately, as FHIR `Signature.data` does for a signed resource or Bundle.

use crate::sm::{Sm2PrivateKey, Sm2PublicKey, Sm2Signature};
use crate::util::{b64u_decode, b64u_encode};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroizing;

/// Errors from JWS parsing, signing and verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// The text is not a compact JWS (wrong number of parts, bad base64url, bad header JSON…).
    #[error("malformed JWS: {0}")]
    Malformed(String),
    /// The header names an algorithm phip does not accept.
    #[error("unsupported JWS algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The header lists `crit` extensions, none of which phip understands (RFC 7515 §4.1.11).
    #[error("JWS uses critical extensions {0:?}, which are not supported")]
    UnsupportedCritical(Vec<String>),
    /// No key in the JWKS matches the header's `kid` and `alg`.
    #[error("no matching key for kid {kid:?} and alg {alg}")]
    KeyNotFound {
        /// The `kid` from the header, if any.
        kid: Option<String>,
        /// The `alg` from the header.
        alg: String,
    },
    /// A JWK could not be turned into a public key (unknown curve, bad coordinates…).
    #[error("invalid JWK: {0}")]
    InvalidKey(String),
    /// The signature does not verify.
    #[error("JWS signature does not verify")]
    BadSignature,
    /// Key generation failed (the OS random number generator is unavailable).
    #[error("random number generator failed")]
    Rng,
}

/// A JWS signature algorithm phip knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// ECDSA P-256 / SHA-256 (RFC 7518).
    Es256,
    /// ECDSA P-384 / SHA-384 (RFC 7518); verification only.
    Es384,
    /// SM2 / SM3 with the default user ID — phip's non-standard label `SM2SM3`.
    Sm2Sm3,
}

impl Algorithm {
    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::Sm2Sm3 => "SM2SM3",
        }
    }

    /// Parse a JOSE `alg` name (case-sensitive, as RFC 7515 requires).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(Algorithm::Es256),
            "ES384" => Some(Algorithm::Es384),
            "SM2SM3" => Some(Algorithm::Sm2Sm3),
            _ => None,
        }
    }

    /// The JWK `crv` of keys used with this algorithm.
    pub fn curve(self) -> &'static str {
        match self {
            Algorithm::Es256 => "P-256",
            Algorithm::Es384 => "P-384",
            Algorithm::Sm2Sm3 => "SM2",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A public key that can verify JWS signatures.
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// P-256, for `ES256`.
    P256(p256::ecdsa::VerifyingKey),
    /// P-384, for `ES384`.
    P384(p384::ecdsa::VerifyingKey),
    /// SM2, for `SM2SM3`.
    Sm2(Sm2PublicKey),
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.algorithm())
    }
}

impl PublicKey {
    /// The only algorithm this key may be used with.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            PublicKey::P256(_) => Algorithm::Es256,
            PublicKey::P384(_) => Algorithm::Es384,
            PublicKey::Sm2(_) => Algorithm::Sm2Sm3,
        }
    }

    /// Verify a raw JOSE signature (`r || s`) over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), JwsError> {
        match self {
            PublicKey::P256(vk) => {
                let sig = p256::ecdsa::Signature::from_slice(signature)
                    .map_err(|_| JwsError::BadSignature)?;
                // ECDSA is malleable: (r, n - s) verifies whenever (r, s) does. Only the
                // low-s form is accepted, so that every message has one valid signature per
                // nonce and a token, assertion or signed document cannot be re-encoded into
                // a second, different-looking valid one.
                if sig.normalize_s() != sig {
                    return Err(JwsError::BadSignature);
                }
                vk.verify(message, &sig).map_err(|_| JwsError::BadSignature)
            }
            PublicKey::P384(vk) => {
                let sig = p384::ecdsa::Signature::from_slice(signature)
                    .map_err(|_| JwsError::BadSignature)?;
                if sig.normalize_s() != sig {
                    return Err(JwsError::BadSignature);
                }
                vk.verify(message, &sig).map_err(|_| JwsError::BadSignature)
            }
            PublicKey::Sm2(pk) => {
                let sig = Sm2Signature::from_raw(signature).map_err(|_| JwsError::BadSignature)?;
                pk.verify(message, &sig).map_err(|_| JwsError::BadSignature)
            }
        }
    }

    /// The public JWK for this key (`kty: EC`, `crv`, `x`, `y`, `alg`, `use: sig`, `kid`).
    pub fn to_jwk(&self, kid: &str) -> Jwk {
        let sec1: Vec<u8> = match self {
            PublicKey::P256(vk) => vk.to_sec1_bytes().into_vec(),
            PublicKey::P384(vk) => vk.to_sec1_bytes().into_vec(),
            PublicKey::Sm2(pk) => pk.to_sec1_uncompressed(),
        };
        // Uncompressed SEC1: 0x04 || x || y, both coordinates the same length.
        let n = sec1.len().saturating_sub(1) / 2;
        let x = sec1.get(1..1 + n).unwrap_or_default();
        let y = sec1.get(1 + n..).unwrap_or_default();
        let alg = self.algorithm();
        Jwk {
            kty: "EC".into(),
            crv: Some(alg.curve().into()),
            x: Some(b64u_encode(x)),
            y: Some(b64u_encode(y)),
            kid: Some(kid.into()),
            alg: Some(alg.as_str().into()),
            use_: Some("sig".into()),
        }
    }

    /// SEC1 uncompressed encoding of the point (for fingerprints and storage).
    pub fn to_sec1(&self) -> Vec<u8> {
        match self {
            PublicKey::P256(vk) => vk.to_sec1_bytes().into_vec(),
            PublicKey::P384(vk) => vk.to_sec1_bytes().into_vec(),
            PublicKey::Sm2(pk) => pk.to_sec1_uncompressed(),
        }
    }
}

/// A private key phip signs with: ES256 or SM2SM3.
#[derive(Clone)]
pub enum PrivateKey {
    /// P-256 ECDSA key (zeroized on drop by the `ecdsa` crate).
    Es256(p256::ecdsa::SigningKey),
    /// SM2 key.
    Sm2(Sm2PrivateKey),
}

impl PrivateKey {
    /// Generate a fresh key for `alg` from the OS CSPRNG. `ES384` is verification-only and
    /// yields [`JwsError::UnsupportedAlgorithm`].
    pub fn generate(alg: Algorithm) -> Result<Self, JwsError> {
        match alg {
            Algorithm::Es256 => {
                // Rejection sampling over 32 random bytes; see Sm2PrivateKey::generate.
                for _ in 0..64 {
                    let mut b = Zeroizing::new([0u8; 32]);
                    crate::util::random_bytes(b.as_mut()).map_err(|_| JwsError::Rng)?;
                    if let Ok(k) = p256::ecdsa::SigningKey::from_slice(b.as_ref()) {
                        return Ok(PrivateKey::Es256(k));
                    }
                }
                Err(JwsError::Rng)
            }
            Algorithm::Sm2Sm3 => Sm2PrivateKey::generate()
                .map(PrivateKey::Sm2)
                .map_err(|_| JwsError::Rng),
            Algorithm::Es384 => Err(JwsError::UnsupportedAlgorithm("ES384".into())),
        }
    }

    /// Rebuild a key from its 32-byte private scalar.
    pub fn from_bytes(alg: Algorithm, bytes: &[u8]) -> Result<Self, JwsError> {
        match alg {
            Algorithm::Es256 => p256::ecdsa::SigningKey::from_slice(bytes)
                .map(PrivateKey::Es256)
                .map_err(|_| JwsError::InvalidKey("bad P-256 private key".into())),
            Algorithm::Sm2Sm3 => Sm2PrivateKey::from_bytes(bytes)
                .map(PrivateKey::Sm2)
                .map_err(|_| JwsError::InvalidKey("bad SM2 private key".into())),
            Algorithm::Es384 => Err(JwsError::UnsupportedAlgorithm("ES384".into())),
        }
    }

    /// The private scalar, wiped when dropped. Only the key ring should need this (to encrypt it).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        match self {
            PrivateKey::Es256(k) => Zeroizing::new(k.to_bytes().to_vec()),
            PrivateKey::Sm2(k) => Zeroizing::new(k.to_bytes().to_vec()),
        }
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            PrivateKey::Es256(_) => Algorithm::Es256,
            PrivateKey::Sm2(_) => Algorithm::Sm2Sm3,
        }
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        match self {
            PrivateKey::Es256(k) => PublicKey::P256(*k.verifying_key()),
            PrivateKey::Sm2(k) => PublicKey::Sm2(k.public_key()),
        }
    }

    /// Sign `message`, returning the raw JOSE signature (`r || s`).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            PrivateKey::Es256(k) => {
                // p256 does not normalise by itself; verifiers (phip's included) accept only
                // low-s signatures.
                let sig: p256::ecdsa::Signature = k.sign(message);
                sig.normalize_s().to_bytes().to_vec()
            }
            PrivateKey::Sm2(k) => k.sign(message).to_raw().to_vec(),
        }
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({}, <redacted>)", self.algorithm())
    }
}

/// A private key together with its key id: what [`sign`] needs to produce a JWS whose header
/// lets verifiers find the public key.
#[derive(Clone, Debug)]
pub struct SigningKey {
    kid: String,
    key: PrivateKey,
}

impl SigningKey {
    /// Pair a private key with its `kid`.
    pub fn new(kid: impl Into<String>, key: PrivateKey) -> Self {
        Self {
            kid: kid.into(),
            key,
        }
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.key.algorithm()
    }

    /// The private key.
    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// The public JWK (with this `kid`).
    pub fn public_jwk(&self) -> Jwk {
        self.key.public_key().to_jwk(&self.kid)
    }
}

/// A JSON Web Key. Only public EC keys are usable; other members are ignored and other key
/// types (e.g. an RSA key in a partner's JWKS) parse but are never selected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type; phip uses `EC` for all its keys, including SM2.
    pub kty: String,
    /// Curve: `P-256`, `P-384`, or phip's `SM2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// x coordinate, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// y coordinate, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// Key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Intended algorithm; when present a JWS must use exactly this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Intended use; when present it must be `sig`.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

impl Jwk {
    /// Decode this JWK into a public key. The algorithm follows from `crv`; a conflicting `alg`
    /// member is an error.
    pub fn public_key(&self) -> Result<PublicKey, JwsError> {
        if self.kty != "EC" {
            return Err(JwsError::InvalidKey(format!("kty {} is not EC", self.kty)));
        }
        let crv = self.crv.as_deref().unwrap_or_default();
        let alg = match crv {
            "P-256" => Algorithm::Es256,
            "P-384" => Algorithm::Es384,
            "SM2" => Algorithm::Sm2Sm3,
            other => return Err(JwsError::InvalidKey(format!("unsupported crv {other:?}"))),
        };
        if let Some(a) = &self.alg {
            if a != alg.as_str() {
                return Err(JwsError::InvalidKey(format!(
                    "alg {a} does not match crv {crv}"
                )));
            }
        }
        let coord = |c: &Option<String>, name: &str| {
            c.as_deref()
                .and_then(b64u_decode)
                .ok_or_else(|| JwsError::InvalidKey(format!("missing or bad {name}")))
        };
        let (x, y) = (coord(&self.x, "x")?, coord(&self.y, "y")?);
        let len = if alg == Algorithm::Es384 { 48 } else { 32 };
        if x.len() != len || y.len() != len {
            return Err(JwsError::InvalidKey("coordinate length".into()));
        }
        let mut sec1 = Vec::with_capacity(1 + 2 * len);
        sec1.push(0x04);
        sec1.extend_from_slice(&x);
        sec1.extend_from_slice(&y);
        let bad = |_| JwsError::InvalidKey("point not on curve".into());
        Ok(match alg {
            Algorithm::Es256 => {
                PublicKey::P256(p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(bad)?)
            }
            Algorithm::Es384 => {
                PublicKey::P384(p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(bad)?)
            }
            Algorithm::Sm2Sm3 => PublicKey::Sm2(
                Sm2PublicKey::from_sec1_bytes(&sec1)
                    .map_err(|_| JwsError::InvalidKey("point not on curve".into()))?,
            ),
        })
    }
}

/// A JWK Set: `{"keys": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// Parse a JWKS document.
    pub fn from_json(text: &str) -> Result<Self, JwsError> {
        serde_json::from_str(text).map_err(|e| JwsError::Malformed(format!("JWKS: {e}")))
    }

    /// Serialise as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{\"keys\":[]}".into())
    }

    /// Keys usable for a JWS with `alg` and (optional) `kid`, in document order. When the header
    /// has a `kid`, only keys with that `kid` qualify; without one, every key of the algorithm
    /// does (some clients omit `kid` when they have a single key).
    pub fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<PublicKey> {
        self.keys
            .iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
            .filter(|k| k.use_.as_deref().is_none_or(|u| u == "sig"))
            .filter_map(|k| k.public_key().ok())
            .filter(|pk| pk.algorithm() == alg)
            .collect()
    }
}

/// The protected header of a JWS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Algorithm name as written in the header.
    pub alg: String,
    /// Key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Media type of the whole JWS, e.g. `JWT` or `at+jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// Critical extensions; any present makes verification fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crit: Option<Vec<String>>,
}

/// A JWS split into its parts, not yet verified. Use it to read claims (e.g. `iss`) needed to
/// choose a key set; never trust its payload before [`Decoded::verify_with`] succeeds.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The protected header.
    pub header: Header,
    /// The algorithm named in the header.
    pub algorithm: Algorithm,
    /// The decoded payload (empty for a detached JWS).
    pub payload: Vec<u8>,
    signing_input: String,
    signature: Vec<u8>,
}

impl Decoded {
    /// Verify against the keys of `jwks` matching the header's `kid` and `alg`.
    pub fn verify_with(&self, jwks: &Jwks) -> Result<(), JwsError> {
        let candidates = jwks.candidates(self.header.kid.as_deref(), self.algorithm);
        if candidates.is_empty() {
            return Err(JwsError::KeyNotFound {
                kid: self.header.kid.clone(),
                alg: self.header.alg.clone(),
            });
        }
        if candidates.iter().any(|k| {
            k.verify(self.signing_input.as_bytes(), &self.signature)
                .is_ok()
        }) {
            Ok(())
        } else {
            Err(JwsError::BadSignature)
        }
    }

    /// Verify against one known public key (whose algorithm must be the header's).
    pub fn verify_with_key(&self, key: &PublicKey) -> Result<(), JwsError> {
        if key.algorithm() != self.algorithm {
            return Err(JwsError::KeyNotFound {
                kid: self.header.kid.clone(),
                alg: self.header.alg.clone(),
            });
        }
        key.verify(self.signing_input.as_bytes(), &self.signature)
    }
}

/// A verified JWS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The protected header.
    pub header: Header,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

fn header_for(key: &SigningKey, typ: Option<&str>) -> String {
    let header = Header {
        alg: key.algorithm().as_str().into(),
        kid: Some(key.kid.clone()),
        typ: typ.map(Into::into),
        crit: None,
    };
    // Serialising a struct of strings cannot fail.
    b64u_encode(serde_json::to_vec(&header).unwrap_or_default())
}

/// Sign `payload`, producing `header.payload.signature` with `alg`, `kid` and `typ` (if given)
/// in the protected header.
pub fn sign(key: &SigningKey, typ: Option<&str>, payload: &[u8]) -> String {
    let input = format!("{}.{}", header_for(key, typ), b64u_encode(payload));
    let sig = key.key.sign(input.as_bytes());
    format!("{input}.{}", b64u_encode(sig))
}

/// Sign `payload` and return the detached form `header..signature` (RFC 7515 Appendix F); the
/// signature still covers the payload, which travels separately (FHIR `Signature.data` with
/// `sigFormat = application/jose`).
pub fn sign_detached(key: &SigningKey, typ: Option<&str>, payload: &[u8]) -> String {
    let header = header_for(key, typ);
    let input = format!("{header}.{}", b64u_encode(payload));
    let sig = key.key.sign(input.as_bytes());
    format!("{header}..{}", b64u_encode(sig))
}

/// Split and decode a compact JWS without verifying it. `detached_payload` supplies the payload
/// of a detached JWS (whose middle part must then be empty).
pub fn decode(jws: &str, detached_payload: Option<&[u8]>) -> Result<Decoded, JwsError> {
    let mut parts = jws.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Malformed(
            "expected three dot-separated parts".into(),
        ));
    };
    let header_bytes =
        b64u_decode(h).ok_or_else(|| JwsError::Malformed("header is not base64url".into()))?;
    let header: Header = serde_json::from_slice(&header_bytes)
        .map_err(|e| JwsError::Malformed(format!("header: {e}")))?;
    if let Some(crit) = &header.crit {
        return Err(JwsError::UnsupportedCritical(crit.clone()));
    }
    let algorithm = Algorithm::from_name(&header.alg)
        .ok_or_else(|| JwsError::UnsupportedAlgorithm(header.alg.clone()))?;
    let signature =
        b64u_decode(s).ok_or_else(|| JwsError::Malformed("signature is not base64url".into()))?;
    let (payload, signing_input) = match detached_payload {
        None => {
            let payload = b64u_decode(p)
                .ok_or_else(|| JwsError::Malformed("payload is not base64url".into()))?;
            (payload, format!("{h}.{p}"))
        }
        Some(d) => {
            if !p.is_empty() {
                return Err(JwsError::Malformed(
                    "detached JWS must have an empty payload part".into(),
                ));
            }
            (Vec::new(), format!("{h}.{}", b64u_encode(d)))
        }
    };
    Ok(Decoded {
        header,
        algorithm,
        payload,
        signing_input,
        signature,
    })
}

/// Verify a compact JWS against a JWKS and return its header and payload.
pub fn verify(jws: &str, jwks: &Jwks) -> Result<Verified, JwsError> {
    let d = decode(jws, None)?;
    d.verify_with(jwks)?;
    Ok(Verified {
        header: d.header,
        payload: d.payload,
    })
}

/// Verify a detached JWS (`header..signature`) over `payload` against a JWKS.
pub fn verify_detached(jws: &str, payload: &[u8], jwks: &Jwks) -> Result<Header, JwsError> {
    let d = decode(jws, Some(payload))?;
    d.verify_with(jwks)?;
    Ok(d.header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(alg: Algorithm, kid: &str) -> SigningKey {
        SigningKey::new(kid, PrivateKey::generate(alg).unwrap())
    }

    fn jwks(keys: &[&SigningKey]) -> Jwks {
        Jwks {
            keys: keys.iter().map(|k| k.public_jwk()).collect(),
        }
    }

    #[test]
    fn round_trip_both_algorithms() {
        for alg in [Algorithm::Es256, Algorithm::Sm2Sm3] {
            let k = key(alg, "k1");
            let set = jwks(&[&k]);
            let jws = sign(&k, Some("JWT"), b"{\"a\":1}");
            let v = verify(&jws, &set).unwrap();
            assert_eq!(v.payload, b"{\"a\":1}");
            assert_eq!(v.header.alg, alg.as_str());
            assert_eq!(v.header.kid.as_deref(), Some("k1"));
            assert_eq!(v.header.typ.as_deref(), Some("JWT"));
            // raw r||s signature, 64 bytes for both
            let sig = b64u_decode(jws.rsplit('.').next().unwrap()).unwrap();
            assert_eq!(sig.len(), 64);
        }
    }

    #[test]
    fn tampering_fails_for_both_algorithms() {
        for alg in [Algorithm::Es256, Algorithm::Sm2Sm3] {
            let k = key(alg, "k1");
            let set = jwks(&[&k]);
            let jws = sign(&k, None, b"payload");
            let parts: Vec<&str> = jws.split('.').collect();
            // altered payload
            let forged = format!("{}.{}.{}", parts[0], b64u_encode(b"payloaD"), parts[2]);
            assert_eq!(verify(&forged, &set), Err(JwsError::BadSignature));
            // one bit of the signature
            let mut sig = b64u_decode(parts[2]).unwrap();
            sig[10] ^= 0x01;
            let forged = format!("{}.{}.{}", parts[0], parts[1], b64u_encode(&sig));
            assert_eq!(verify(&forged, &set), Err(JwsError::BadSignature));
            // another key with the same kid
            let other = key(alg, "k1");
            assert_eq!(verify(&jws, &jwks(&[&other])), Err(JwsError::BadSignature));
        }
    }

    #[test]
    fn algorithm_confusion_and_unknown_algorithms_rejected() {
        let es = key(Algorithm::Es256, "k1");
        let set = jwks(&[&es]);
        let jws = sign(&es, None, b"x");
        let parts: Vec<&str> = jws.split('.').collect();
        for alg in ["none", "HS256", "RS256", "SM2SM3", "es256"] {
            let h = b64u_encode(format!("{{\"alg\":\"{alg}\",\"kid\":\"k1\"}}"));
            let forged = format!("{h}.{}.{}", parts[1], parts[2]);
            let err = verify(&forged, &set).unwrap_err();
            assert!(
                matches!(
                    err,
                    JwsError::UnsupportedAlgorithm(_) | JwsError::KeyNotFound { .. }
                ),
                "{alg}: {err:?}"
            );
        }
        // crit is refused
        let h = b64u_encode(r#"{"alg":"ES256","kid":"k1","crit":["b64"]}"#);
        let forged = format!("{h}.{}.{}", parts[1], parts[2]);
        assert!(matches!(
            verify(&forged, &set),
            Err(JwsError::UnsupportedCritical(_))
        ));
    }

    #[test]
    fn kid_lookup_and_missing_kid() {
        let a = key(Algorithm::Es256, "a");
        let b = key(Algorithm::Es256, "b");
        let s = key(Algorithm::Sm2Sm3, "s");
        let set = jwks(&[&a, &b, &s]);
        for k in [&a, &b, &s] {
            verify(&sign(k, None, b"m"), &set).unwrap();
        }
        let unknown = key(Algorithm::Es256, "zzz");
        assert!(matches!(
            verify(&sign(&unknown, None, b"m"), &set),
            Err(JwsError::KeyNotFound { .. })
        ));
        // No kid in the header: every key of the algorithm is tried.
        let h = b64u_encode(r#"{"alg":"ES256"}"#);
        let input = format!("{h}.{}", b64u_encode(b"m"));
        let sig = b.private_key().sign(input.as_bytes());
        let jws = format!("{input}.{}", b64u_encode(sig));
        verify(&jws, &set).unwrap();
    }

    #[test]
    fn detached_payload() {
        for alg in [Algorithm::Es256, Algorithm::Sm2Sm3] {
            let k = key(alg, "doc");
            let set = jwks(&[&k]);
            let doc = br#"{"resourceType":"Bundle","type":"document"}"#;
            let jws = sign_detached(&k, None, doc);
            assert!(jws.contains(".."));
            verify_detached(&jws, doc, &set).unwrap();
            assert_eq!(
                verify_detached(&jws, b"{}", &set),
                Err(JwsError::BadSignature)
            );
            // a detached JWS is not valid as an attached one with an empty payload
            assert_eq!(verify(&jws, &set), Err(JwsError::BadSignature));
            // and an attached JWS is not accepted where a detached one is expected
            assert!(matches!(
                verify_detached(&sign(&k, None, doc), doc, &set),
                Err(JwsError::Malformed(_))
            ));
        }
    }

    #[test]
    fn malformed_inputs() {
        let set = Jwks::default();
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.e30.sig",
            "e30.e30.sig",
            "eyJhbGciOiJFUzI1NiJ9.%%%.AA",
        ] {
            assert!(verify(bad, &set).is_err(), "{bad}");
        }
        assert!(Jwks::from_json("{\"keys\": 3}").is_err());
    }

    #[test]
    fn jwk_round_trip_and_labels() {
        let s = key(Algorithm::Sm2Sm3, "sm");
        let jwk = s.public_jwk();
        assert_eq!(jwk.kty, "EC");
        assert_eq!(jwk.crv.as_deref(), Some("SM2"));
        assert_eq!(jwk.alg.as_deref(), Some("SM2SM3"));
        assert_eq!(jwk.public_key().unwrap(), s.public_key());
        let e = key(Algorithm::Es256, "es");
        let jwk = e.public_jwk();
        assert_eq!(jwk.crv.as_deref(), Some("P-256"));
        assert_eq!(jwk.public_key().unwrap(), e.public_key());
        // crv/alg mismatch is refused
        let mut wrong = jwk.clone();
        wrong.alg = Some("SM2SM3".into());
        assert!(wrong.public_key().is_err());
        // an RSA key in a partner's JWKS parses and is skipped
        let set = Jwks::from_json(
            r#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB","kid":"r"},{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}"#,
        )
        .unwrap();
        assert!(set.candidates(None, Algorithm::Es256).is_empty());
    }

    /// `(r, s)` → `(r, n − s)` on the raw signature of a compact JWS: the other valid ECDSA
    /// encoding of the same signature.
    fn flip_s(jws: &str) -> String {
        phip_testkit::jose::flip_s(jws)
    }

    #[test]
    fn own_ecdsa_signatures_are_low_s() {
        let k = key(Algorithm::Es256, "k");
        for i in 0..64u32 {
            let sig = k.private_key().sign(&i.to_be_bytes());
            let parsed = p256::ecdsa::Signature::from_slice(&sig).unwrap();
            assert_eq!(parsed.normalize_s(), parsed, "signature {i} is high-s");
        }
    }

    #[test]
    fn high_s_signatures_are_refused() {
        for alg in [Algorithm::Es256, Algorithm::Sm2Sm3] {
            let k = key(alg, "k1");
            let set = jwks(&[&k]);
            for i in 0..16u8 {
                let jws = sign(&k, Some("JWT"), &[i; 8]);
                verify(&jws, &set).unwrap();
                assert_eq!(
                    verify(&flip_s(&jws), &set),
                    Err(JwsError::BadSignature),
                    "{alg} with s flipped"
                );
                let detached = sign_detached(&k, None, &[i; 8]);
                verify_detached(&detached, &[i; 8], &set).unwrap();
                assert_eq!(
                    verify_detached(&flip_s(&detached), &[i; 8], &set),
                    Err(JwsError::BadSignature),
                    "detached {alg} with s flipped"
                );
            }
        }
        // ES384 (client assertions): a signature from the library, in either form; only the
        // low-s one is accepted.
        use p384::ecdsa::signature::Signer as _;
        let sk = p384::ecdsa::SigningKey::from_slice(&[9u8; 48]).unwrap();
        let set = Jwks {
            keys: vec![PublicKey::P384(*sk.verifying_key()).to_jwk("c")],
        };
        let h = b64u_encode(r#"{"alg":"ES384","kid":"c"}"#);
        for i in 0..16u8 {
            let input = format!("{h}.{}", b64u_encode([i; 4]));
            let sig: p384::ecdsa::Signature = sk.sign(input.as_bytes());
            let low = format!("{input}.{}", b64u_encode(sig.normalize_s().to_bytes()));
            verify(&low, &set).unwrap();
            assert_eq!(verify(&flip_s(&low), &set), Err(JwsError::BadSignature));
        }
    }

    #[test]
    fn es384_verification() {
        use p384::ecdsa::signature::Signer as _;
        let sk = p384::ecdsa::SigningKey::from_slice(&[7u8; 48]).unwrap();
        let jwk = PublicKey::P384(*sk.verifying_key()).to_jwk("c");
        assert_eq!(jwk.crv.as_deref(), Some("P-384"));
        let set = Jwks { keys: vec![jwk] };
        let h = b64u_encode(r#"{"alg":"ES384","kid":"c"}"#);
        let input = format!("{h}.{}", b64u_encode(b"m"));
        let sig: p384::ecdsa::Signature = sk.sign(input.as_bytes());
        let jws = format!("{input}.{}", b64u_encode(sig.normalize_s().to_bytes()));
        verify(&jws, &set).unwrap();
        assert!(PrivateKey::generate(Algorithm::Es384).is_err());
    }
}
