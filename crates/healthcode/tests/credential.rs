//! End-to-end checks of the credential: issue, encode, render, scan, verify, refuse.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use phip_healthcode::revocation::{self, Crl};
use phip_healthcode::subject::RESIDENT_ID_LAST4;
use phip_healthcode::*;
use phip_mpi::identifier::{HEALTH_CARD, MEDICAL_INSURANCE};
use phip_security::jws::{Algorithm, PrivateKey, SigningKey};
use serde_json::{json, Value};

const ISS: &str = "https://hic.example.cn/fhir";
const NOW: i64 = 1_800_000_000;

fn keys() -> IssuerKeys {
    let mut keys = IssuerKeys::default();
    for alg in [Algorithm::Es256, Algorithm::Sm2Sm3] {
        let key = SigningKey::new("ring-kid", PrivateKey::generate(alg).unwrap());
        keys.add(&key, true).unwrap();
    }
    keys
}

fn subject() -> HealthCodeSubject {
    let golden = json!({
        "resourceType": "Patient",
        "identifier": [
            {"system": "urn:oid:2.16.156.10011.1.1", "value": "11010519491231002X"},
            {"system": HEALTH_CARD, "value": "HC-7788"},
            {"system": MEDICAL_INSURANCE, "value": "MI-43"}
        ],
        "name": [{"family": "张", "given": ["三"]}],
        "gender": "male", "birthDate": "1949-12-31"
    });
    HealthCodeSubject::from_patient("person-1", &golden, &default_linked_systems()).unwrap()
}

fn parts(jws: &str) -> Vec<String> {
    jws.split('.').map(str::to_owned).collect()
}

#[test]
fn round_trip_with_es256_and_sm2() {
    let keys = keys();
    for alg in [Algorithm::Es256, Algorithm::Sm2Sm3] {
        let code = issue::issue(&keys, ISS, &subject(), alg, NOW, NOW + 300).unwrap();
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts(&code.jws)[0]).unwrap()).unwrap();
        assert_eq!(
            header,
            json!({"alg": alg.as_str(), "zip": "DEF", "kid": code.kid})
        );
        assert_eq!(code.kid.len(), 43, "base64url SHA-256 thumbprint");
        let verifier = Verifier::new(keys.jwks()).trust_issuer(ISS);
        for presented in [&code.shc, &code.jws] {
            let verified = verifier.verify(presented, NOW + 1).unwrap();
            assert_eq!(verified.algorithm, alg);
            assert_eq!(verified.subject, subject());
            assert_eq!(verified.exp, NOW + 300);
            assert_eq!(verified.rid.as_deref(), Some(code.rid.as_str()));
            assert_eq!(verified.jws, code.jws);
        }
        // Multi-code fusion: one scan yields the health card and insurance numbers.
        let verified = verifier.verify(&code.shc, NOW).unwrap();
        assert_eq!(verified.subject.identifier(HEALTH_CARD), Some("HC-7788"));
        assert_eq!(
            verified.subject.identifier(MEDICAL_INSURANCE),
            Some("MI-43")
        );
        assert_eq!(verified.subject.identifier(RESIDENT_ID_LAST4), Some("002X"));
    }
}

#[test]
fn the_payload_follows_smart_health_cards() {
    let keys = keys();
    let code = issue::issue(&keys, ISS, &subject(), Algorithm::Es256, NOW, NOW + 300).unwrap();
    let compressed = URL_SAFE_NO_PAD.decode(&parts(&code.jws)[1]).unwrap();
    let mut json = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::DeflateDecoder::new(&compressed[..]),
        &mut json,
    )
    .unwrap();
    let claims: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(claims["iss"], ISS);
    assert_eq!(claims["nbf"], json!(NOW));
    assert_eq!(claims["exp"], json!(NOW + 300));
    assert_eq!(
        claims["vc"]["type"],
        json!(["https://smarthealth.cards#health-card"])
    );
    assert_eq!(claims["vc"]["rid"], json!(code.rid));
    let subject = &claims["vc"]["credentialSubject"];
    assert_eq!(subject["fhirVersion"], "4.0.1");
    assert_eq!(subject["fhirBundle"]["type"], "collection");
    assert_eq!(subject["fhirBundle"]["entry"][0]["fullUrl"], "resource:0");
    assert!(!json.contains(' '), "minified");
    // SMART Health Cards: at most 1195 JWS characters for one version-22 QR code.
    assert!(code.jws.len() <= 1195, "one QR code: {}", code.jws.len());
}

#[test]
fn tampered_payload_and_signature_are_refused() {
    let keys = keys();
    let verifier = Verifier::new(keys.jwks());
    for alg in [Algorithm::Es256, Algorithm::Sm2Sm3] {
        let code = issue::issue(&keys, ISS, &subject(), alg, NOW, NOW + 300).unwrap();
        let p = parts(&code.jws);
        // Another resident's payload under this signature.
        let mut other = subject();
        other.person_id = "person-2".into();
        let forged = issue::issue(&keys, ISS, &other, alg, NOW, NOW + 300).unwrap();
        let swapped = format!("{}.{}.{}", p[0], parts(&forged.jws)[1], p[2]);
        assert_eq!(verifier.verify(&swapped, NOW), Err(Refusal::BadSignature));
        // One flipped bit in the signature.
        let mut signature = URL_SAFE_NO_PAD.decode(&p[2]).unwrap();
        signature[7] ^= 0x01;
        let flipped = format!("{}.{}.{}", p[0], p[1], URL_SAFE_NO_PAD.encode(signature));
        assert_eq!(verifier.verify(&flipped, NOW), Err(Refusal::BadSignature));
        // One changed digit of the shc:/ form.
        let mut digits = code.shc.clone().into_bytes();
        let at = digits.len() - 100;
        digits[at] = if digits[at] == b'1' { b'2' } else { b'1' };
        let altered = String::from_utf8(digits).unwrap();
        assert!(verifier.verify(&altered, NOW).is_err());
    }
}

#[test]
fn unknown_keys_and_algorithms_are_refused() {
    let keys = keys();
    let code = issue::issue(&keys, ISS, &subject(), Algorithm::Es256, NOW, NOW + 300).unwrap();
    // Signed by a key the verifier does not trust.
    let strangers = Verifier::new(self::keys().jwks());
    assert!(matches!(
        strangers.verify(&code.jws, NOW),
        Err(Refusal::UnknownKey(_))
    ));
    // A JWKS whose kid is not the thumbprint is not a health card key.
    let mut relabelled = keys.jwks();
    for k in &mut relabelled.keys {
        k.kid = Some("es256-0011223344556677".into());
    }
    assert!(matches!(
        Verifier::new(relabelled).verify(&code.jws, NOW),
        Err(Refusal::UnknownKey(_))
    ));
    // A header naming another kid or algorithm.
    let p = parts(&code.jws);
    let kid = |h: Value| {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(h.to_string()),
            p[1],
            p[2]
        )
    };
    let verifier = Verifier::new(keys.jwks());
    let wrong_kid = kid(json!({"alg": "ES256", "zip": "DEF", "kid": "nope"}));
    assert!(matches!(
        verifier.verify(&wrong_kid, NOW),
        Err(Refusal::UnknownKey(_))
    ));
    let none = kid(json!({"alg": "none", "zip": "DEF", "kid": code.kid}));
    assert!(matches!(
        verifier.verify(&none, NOW),
        Err(Refusal::UnsupportedAlgorithm(_))
    ));
    let hs = kid(json!({"alg": "HS256", "zip": "DEF", "kid": code.kid}));
    assert!(matches!(
        verifier.verify(&hs, NOW),
        Err(Refusal::UnsupportedAlgorithm(_))
    ));
    let sm2_header = kid(json!({"alg": "SM2SM3", "zip": "DEF", "kid": code.kid}));
    assert!(verifier.verify(&sm2_header, NOW).is_err());
    let unzipped = kid(json!({"alg": "ES256", "kid": code.kid}));
    assert!(matches!(
        verifier.verify(&unzipped, NOW),
        Err(Refusal::Malformed(_))
    ));
    for junk in ["", "shc:/", "shc:/99", "a.b", "not a code", "shc:/1/2/5676"] {
        assert!(
            matches!(verifier.verify(junk, NOW), Err(Refusal::Malformed(_))),
            "{junk}"
        );
    }
}

#[test]
fn validity_window_with_leeway() {
    let keys = keys();
    let code = issue::issue(&keys, ISS, &subject(), Algorithm::Es256, NOW, NOW + 300).unwrap();
    let verifier = Verifier::new(keys.jwks()).leeway(30);
    assert!(
        verifier.verify(&code.shc, NOW - 30).is_ok(),
        "clock 30 s behind"
    );
    assert_eq!(
        verifier.verify(&code.shc, NOW - 31),
        Err(Refusal::NotYetValid { nbf: NOW })
    );
    assert!(
        verifier.verify(&code.shc, NOW + 329).is_ok(),
        "clock 29 s ahead"
    );
    assert_eq!(
        verifier.verify(&code.shc, NOW + 330),
        Err(Refusal::Expired { exp: NOW + 300 })
    );
    assert!(issue::issue(&keys, ISS, &subject(), Algorithm::Es256, NOW, NOW).is_err());
}

#[test]
fn issuer_must_be_trusted() {
    let keys = keys();
    let code = issue::issue(
        &keys,
        "https://evil.example/fhir",
        &subject(),
        Algorithm::Es256,
        NOW,
        NOW + 60,
    )
    .unwrap();
    let verifier = Verifier::new(keys.jwks()).trust_issuer(ISS);
    assert_eq!(
        verifier.verify(&code.shc, NOW),
        Err(Refusal::UntrustedIssuer("https://evil.example/fhir".into()))
    );
}

#[test]
fn revoked_codes_are_refused_and_refreshed_ones_accepted() {
    let keys = keys();
    let old = issue::issue(&keys, ISS, &subject(), Algorithm::Es256, NOW, NOW + 300).unwrap();
    let crl = Crl {
        rids: vec![revocation::entry(&old.rid, NOW + 10)],
        ctr: 1,
        ..Crl::empty(&old.kid)
    };
    let verifier = Verifier::new(keys.jwks()).with_crl(crl.clone());
    assert_eq!(verifier.verify(&old.shc, NOW + 20), Err(Refusal::Revoked));
    let fresh = issue::issue(
        &keys,
        ISS,
        &subject(),
        Algorithm::Es256,
        NOW + 10,
        NOW + 310,
    )
    .unwrap();
    assert_eq!(fresh.rid, old.rid, "one rid per resident and key");
    assert!(verifier.verify(&fresh.shc, NOW + 20).is_ok());
    // Another resident is untouched; the SM2 key has its own CRL.
    let mut other = subject();
    other.person_id = "person-2".into();
    let theirs = issue::issue(&keys, ISS, &other, Algorithm::Es256, NOW, NOW + 300).unwrap();
    assert!(verifier.verify(&theirs.shc, NOW + 20).is_ok());
    let sm2 = issue::issue(&keys, ISS, &subject(), Algorithm::Sm2Sm3, NOW, NOW + 300).unwrap();
    assert_ne!(sm2.rid, old.rid);
    assert!(verifier.verify(&sm2.shc, NOW + 20).is_ok());
}

#[test]
fn a_qr_image_decodes_back_to_the_same_jws() {
    let keys = keys();
    for alg in [Algorithm::Es256, Algorithm::Sm2Sm3] {
        let code = issue::issue(&keys, ISS, &subject(), alg, NOW, NOW + 300).unwrap();
        let png = qr::render_png(&code.shc, 4).unwrap();
        let scanned = qr::decode_png(&png).unwrap();
        assert_eq!(scanned, code.shc);
        assert_eq!(numeric::decode(&scanned).unwrap(), code.jws);
        let verified = Verifier::new(keys.jwks()).verify(&scanned, NOW).unwrap();
        assert_eq!(verified.subject.person_id, "person-1");
        let svg = qr::render_svg(&code.shc).unwrap();
        assert!(svg.starts_with("<?xml") || svg.starts_with("<svg"));
    }
}
