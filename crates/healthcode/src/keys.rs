//! The issuer's keys as SMART Health Cards wants them: the key ring's ES256 and SM2 keys,
//! each known by its RFC 7638 JWK thumbprint (the `kid` SHC requires), plus the per-key
//! secret from which revocation ids (`rid`) are derived.
//!
//! No new key store: the keys are the data directory's [`KeyRing`] keys, re-labelled. The
//! ring's own `kid`s (`es256-…`) keep serving access tokens and document signatures.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use phip_security::jws::{Algorithm, Jwk, Jwks, SigningKey};
use phip_security::keys::{KeyRing, KeyStatus};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::HealthCodeError;

/// The RFC 7638 thumbprint of a public EC JWK: base64url(SHA-256) of the JSON object of its
/// required members `crv`, `kty`, `x`, `y` in lexicographic order, without whitespace.
pub fn thumbprint(jwk: &Jwk) -> Result<String, HealthCodeError> {
    let (Some(crv), Some(x), Some(y)) = (&jwk.crv, &jwk.x, &jwk.y) else {
        return Err(HealthCodeError::Key(
            "a health card key is an EC JWK with crv, x and y".into(),
        ));
    };
    if jwk.kty != "EC" {
        return Err(HealthCodeError::Key(format!(
            "key type {:?} cannot sign health cards",
            jwk.kty
        )));
    }
    // Built by hand: the member order and the absence of whitespace are the definition.
    let canonical = format!(
        "{{\"crv\":{},\"kty\":\"EC\",\"x\":{},\"y\":{}}}",
        Value::String(crv.clone()),
        Value::String(x.clone()),
        Value::String(y.clone())
    );
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

/// One signing key of the issuer.
#[derive(Clone)]
struct IssuerKey {
    /// The key, re-labelled with its thumbprint `kid`.
    signing: SigningKey,
    /// Whether new codes are signed with it (one per algorithm).
    active: bool,
    /// HMAC key for revocation ids, derived from the private key so that every node sharing
    /// the key ring derives the same `rid`s and nobody without it can.
    rid_secret: [u8; 32],
}

/// The issuer's health card keys. See the [module docs](self).
#[derive(Clone, Default)]
pub struct IssuerKeys {
    keys: Vec<IssuerKey>,
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| k.signing.kid()))
            .finish()
    }
}

impl IssuerKeys {
    /// Every ES256 and SM2 key of `ring`; the ring's active keys sign, retired ones only stay
    /// published so that codes they signed still verify until they expire.
    pub fn from_ring(ring: &KeyRing) -> Result<Self, HealthCodeError> {
        let mut keys = IssuerKeys::default();
        for info in ring.keys() {
            if !matches!(info.algorithm, Algorithm::Es256 | Algorithm::Sm2Sm3) {
                continue;
            }
            if let Some(key) = ring.get(&info.kid) {
                keys.add(key, info.status == KeyStatus::Active)?;
            }
        }
        Ok(keys)
    }

    /// Adds a key (tests and tools that hold keys outside a ring). A later active key of an
    /// algorithm takes over signing from an earlier one.
    pub fn add(&mut self, key: &SigningKey, active: bool) -> Result<(), HealthCodeError> {
        let kid = thumbprint(&key.public_jwk())?;
        if active {
            let alg = key.algorithm();
            for other in self.keys.iter_mut() {
                if other.signing.algorithm() == alg {
                    other.active = false;
                }
            }
        }
        let private = key.private_key();
        let mut hasher = Sha256::new();
        hasher.update(b"phip/health-code/rid/v1");
        hasher.update(private.to_bytes().as_slice());
        self.keys.retain(|k| k.signing.kid() != kid);
        self.keys.push(IssuerKey {
            signing: SigningKey::new(kid, private.clone()),
            active,
            rid_secret: hasher.finalize().into(),
        });
        Ok(())
    }

    /// The key that signs new codes with `alg`.
    pub fn active(&self, alg: Algorithm) -> Option<&SigningKey> {
        self.keys
            .iter()
            .find(|k| k.active && k.signing.algorithm() == alg)
            .map(|k| &k.signing)
    }

    /// The thumbprint `kid`s of every key.
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.signing.kid()).collect()
    }

    /// Whether `kid` is one of this issuer's keys.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.signing.kid() == kid)
    }

    /// The revocation id of `person` under key `kid`: base64url of the first 64 bits of
    /// HMAC-SHA-256(key secret, person id). Stable for a person and key, opaque to anyone
    /// without the key, and different per key, as SMART Health Cards keeps CRLs per key.
    pub fn rid(&self, kid: &str, person: &str) -> Option<String> {
        let key = self.keys.iter().find(|k| k.signing.kid() == kid)?;
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key.rid_secret).ok()?;
        mac.update(person.as_bytes());
        let tag = mac.finalize().into_bytes();
        Some(URL_SAFE_NO_PAD.encode(&tag[..8]))
    }

    /// The public keys as a JWKS with thumbprint `kid`s.
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: self.keys.iter().map(|k| k.signing.public_jwk()).collect(),
        }
    }

    /// The JWKS document to publish at `[iss]/.well-known/jwks.json`. With `crl_version`,
    /// each key carries `crlVersion` (SMART Health Cards revocation): verifiers then fetch
    /// `[iss]/.well-known/crl/[kid].json` when the number grows.
    pub fn jwks_document(&self, crl_version: Option<u64>) -> Value {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|k| {
                let mut jwk = serde_json::to_value(k.signing.public_jwk()).unwrap_or(Value::Null);
                if let (Some(version), Some(object)) = (crl_version, jwk.as_object_mut()) {
                    object.insert("crlVersion".into(), json!(version.max(1)));
                }
                jwk
            })
            .collect();
        json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phip_security::jws::PrivateKey;

    #[test]
    fn thumbprint_of_the_smart_health_cards_example_issuer_key() {
        // The example issuer key of the SMART Health Cards specification and its published kid.
        let jwk = Jwk {
            kty: "EC".into(),
            crv: Some("P-256".into()),
            x: Some("11XvRWy1I2S0EyJlyf_bWfw_TQ5CJJNLw78bHXNxcgw".into()),
            y: Some("eZXwxvO1hvCY0KucrPfKo7yAyMT6Ajc3N7OkAB6VYy8".into()),
            kid: Some("ignored".into()),
            alg: Some("ES256".into()),
            use_: Some("sig".into()),
        };
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "3Kfdg-XwP-7gXyywtUfUADwBumDOPKMQx-iELL11W9s"
        );
    }

    #[test]
    fn keys_from_a_ring_are_relabelled_and_rids_are_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(dir.path()).unwrap();
        let keys = IssuerKeys::from_ring(&ring).unwrap();
        let es = keys.active(Algorithm::Es256).unwrap();
        let sm = keys.active(Algorithm::Sm2Sm3).unwrap();
        assert_eq!(es.kid(), thumbprint(&es.public_jwk()).unwrap());
        assert_eq!(sm.public_jwk().crv.as_deref(), Some("SM2"));
        let ring_es = ring.active(Algorithm::Es256).unwrap();
        assert_eq!(es.public_key(), ring_es.public_key());
        let a = keys.rid(es.kid(), "person-1").unwrap();
        assert_eq!(a.len(), 11);
        assert_eq!(keys.rid(es.kid(), "person-1").unwrap(), a);
        assert_ne!(keys.rid(es.kid(), "person-2").unwrap(), a);
        assert_ne!(keys.rid(sm.kid(), "person-1").unwrap(), a);
        assert!(keys.rid("nope", "person-1").is_none());
        let doc = keys.jwks_document(Some(3));
        assert_eq!(doc["keys"].as_array().unwrap().len(), 2);
        assert_eq!(doc["keys"][0]["crlVersion"], json!(3));
    }

    #[test]
    fn a_new_active_key_takes_over() {
        let mut keys = IssuerKeys::default();
        let first = SigningKey::new("a", PrivateKey::generate(Algorithm::Es256).unwrap());
        let second = SigningKey::new("b", PrivateKey::generate(Algorithm::Es256).unwrap());
        keys.add(&first, true).unwrap();
        keys.add(&second, true).unwrap();
        let active = keys.active(Algorithm::Es256).unwrap();
        assert_eq!(active.public_key(), second.public_key());
        assert_eq!(keys.kids().len(), 2);
    }
}
