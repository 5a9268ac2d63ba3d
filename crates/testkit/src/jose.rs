//! JOSE helpers for tests of signature verifiers.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// Order `n` of the P-256 group (big-endian).
const P256_N: &str = "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551";
/// Order `n` of the P-384 group.
const P384_N: &str = "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973";
/// Order `n` of the SM2 recommended curve.
const SM2_N: &str = "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123";

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex constant"))
        .collect()
}

/// `a − b` for big-endian unsigned integers of equal length, `a ≥ b`.
fn sub(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; a.len()];
    let mut borrow = 0i16;
    for i in (0..a.len()).rev() {
        let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = 0;
        if d < 0 {
            d += 256;
            borrow = 1;
        }
        out[i] = d as u8;
    }
    assert_eq!(borrow, 0, "s is not below the group order");
    out
}

/// Rewrites the signature `r || s` of a compact (or detached) JWS into `r || (n − s)`, with
/// `n` the order of the curve the header's `alg` names (`ES256`, `ES384`, `SM2SM3`). For ECDSA
/// this is the *other* valid signature of the same message (malleability); a verifier that
/// accepts only low-s signatures must refuse it.
pub fn flip_s(jws: &str) -> String {
    let mut parts: Vec<&str> = jws.split('.').collect();
    assert_eq!(parts.len(), 3, "a compact JWS");
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("header base64url"))
            .expect("header JSON");
    let n = match header["alg"].as_str() {
        Some("ES256") => unhex(P256_N),
        Some("ES384") => unhex(P384_N),
        Some("SM2SM3") => unhex(SM2_N),
        other => panic!("no curve order for alg {other:?}"),
    };
    let signature = URL_SAFE_NO_PAD
        .decode(parts[2])
        .expect("signature base64url");
    assert_eq!(signature.len(), 2 * n.len(), "raw r || s");
    let (r, s) = signature.split_at(n.len());
    let mut flipped = r.to_vec();
    flipped.extend(sub(&n, s));
    let encoded = URL_SAFE_NO_PAD.encode(flipped);
    parts[2] = &encoded;
    parts.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtraction_borrows() {
        assert_eq!(sub(&[1, 0], &[0, 1]), vec![0, 255]);
        assert_eq!(sub(&[5, 5], &[5, 5]), vec![0, 0]);
    }
}
