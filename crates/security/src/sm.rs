//! ShangMi (商密) primitives: SM3 digests and SM2 digital signatures.
//!
//! SM2 signing follows GM/T 0003.2-2012 / GB/T 32918.2-2016 on the recommended 256-bit curve:
//! the message is prefixed with `Z_A = SM3(ENTL_A || ID_A || a || b || x_G || y_G || x_A || y_A)`
//! before hashing, where `ID_A` is the signer's distinguishing identifier. Interoperable Chinese
//! implementations (GmSSL, OpenSSL, BouncyCastle, CFCA tooling) default to the ID
//! [`SM2_DEFAULT_USER_ID`] = `1234567812345678` (GM/T 0009-2012 §10), so that is what every
//! function here uses unless an explicit ID is given.
//!
//! Signatures are produced deterministically (RFC 6979-style nonce derived with SM3, as the
//! RustCrypto `sm2` crate does) so a failing RNG can never leak the key through a repeated
//! nonce; verification accepts any valid signature, deterministic or not.

use sm2::dsa::signature::{Signer as _, Verifier as _};
use sm3::{Digest as _, Sm3};
use std::fmt;
use zeroize::Zeroizing;

/// The default SM2 distinguishing identifier (GM/T 0009-2012): the ASCII string
/// `1234567812345678`, 16 bytes, so `ENTL_A` = 128 bits.
pub const SM2_DEFAULT_USER_ID: &str = "1234567812345678";

/// Errors from SM2 key handling and signature checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmError {
    /// The private key bytes are not a scalar in `[1, n-1]` (or not 32 bytes).
    #[error("invalid SM2 private key")]
    InvalidPrivateKey,
    /// The public key is not a point on the SM2 curve in SEC1 encoding.
    #[error("invalid SM2 public key")]
    InvalidPublicKey,
    /// The signature bytes could not be parsed (wrong length, bad DER, or r/s out of range).
    #[error("malformed SM2 signature")]
    MalformedSignature,
    /// The signature is well-formed but does not verify for this key, ID and message.
    #[error("SM2 signature does not verify")]
    BadSignature,
    /// The distinguishing identifier is longer than 8191 bytes (ENTL is 16 bits of bit-length).
    #[error("SM2 user ID too long")]
    UserIdTooLong,
    /// The operating system's random number generator failed.
    #[error("random number generator failed")]
    Rng,
}

/// SM3 digest (GM/T 0004-2012) of `data`.
pub fn sm3_digest(data: &[u8]) -> [u8; 32] {
    Sm3::digest(data).into()
}

/// SM3 digest of the concatenation of `parts`, without copying them together first.
pub fn sm3_digest_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sm3::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// SM3 digest as lower-case hex (convenient for hash chains and logs).
pub fn sm3_hex(data: &[u8]) -> String {
    crate::util::hex(&sm3_digest(data))
}

/// An SM2 private key, bound to the default user ID for signing.
///
/// `Debug` never prints key material.
#[derive(Clone)]
pub struct Sm2PrivateKey {
    key: sm2::dsa::SigningKey,
}

impl Sm2PrivateKey {
    /// Generate a fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, SmError> {
        // Rejection sampling: a uniformly random 256-bit string is a valid scalar with
        // probability ~1 - 2^-32, so this loop practically never repeats.
        for _ in 0..64 {
            let mut bytes = Zeroizing::new([0u8; 32]);
            crate::util::random_bytes(bytes.as_mut()).map_err(|_| SmError::Rng)?;
            if let Ok(k) = Self::from_bytes(bytes.as_ref()) {
                return Ok(k);
            }
        }
        Err(SmError::Rng)
    }

    /// Parse a private key from its 32-byte big-endian scalar.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SmError> {
        if bytes.len() != 32 {
            return Err(SmError::InvalidPrivateKey);
        }
        let key = sm2::dsa::SigningKey::from_slice(SM2_DEFAULT_USER_ID, bytes)
            .map_err(|_| SmError::InvalidPrivateKey)?;
        Ok(Self { key })
    }

    /// The 32-byte big-endian private scalar, wiped from memory when dropped.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&self.key.to_bytes());
        out
    }

    /// The matching public key.
    pub fn public_key(&self) -> Sm2PublicKey {
        Sm2PublicKey {
            key: *self.key.verifying_key().as_affine(),
        }
    }

    /// Sign `message` with the default user ID `1234567812345678`.
    pub fn sign(&self, message: &[u8]) -> Sm2Signature {
        let sig: sm2::dsa::Signature = self.key.sign(message);
        Sm2Signature::from_inner(&sig)
    }

    /// Sign `message` with an explicit distinguishing identifier (the verifier must use the same).
    pub fn sign_with_id(&self, user_id: &str, message: &[u8]) -> Result<Sm2Signature, SmError> {
        check_id(user_id)?;
        let key = sm2::dsa::SigningKey::from_slice(user_id, self.to_bytes().as_ref())
            .map_err(|_| SmError::InvalidPrivateKey)?;
        let sig: sm2::dsa::Signature = key.sign(message);
        Ok(Sm2Signature::from_inner(&sig))
    }
}

impl fmt::Debug for Sm2PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sm2PrivateKey")
            .field("public", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// An SM2 public key (a point on the SM2 curve).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sm2PublicKey {
    key: sm2::AffinePoint,
}

impl Sm2PublicKey {
    /// Parse a SEC1-encoded point (`04 || x || y`, or compressed `02/03 || x`).
    pub fn from_sec1_bytes(bytes: &[u8]) -> Result<Self, SmError> {
        let pk = sm2::PublicKey::from_sec1_bytes(bytes).map_err(|_| SmError::InvalidPublicKey)?;
        Ok(Self {
            key: *pk.as_affine(),
        })
    }

    /// Build from the affine coordinates (32 bytes each, big-endian), as carried in a JWK.
    pub fn from_coordinates(x: &[u8], y: &[u8]) -> Result<Self, SmError> {
        if x.len() != 32 || y.len() != 32 {
            return Err(SmError::InvalidPublicKey);
        }
        let mut sec1 = Vec::with_capacity(65);
        sec1.push(0x04);
        sec1.extend_from_slice(x);
        sec1.extend_from_slice(y);
        Self::from_sec1_bytes(&sec1)
    }

    /// Uncompressed SEC1 encoding `04 || x || y` (65 bytes).
    pub fn to_sec1_uncompressed(&self) -> Vec<u8> {
        // Cannot fail: a Sm2PublicKey is only ever built from a validated, non-identity point.
        sm2::PublicKey::from_affine(self.key)
            .map(|pk| pk.to_sec1_bytes().into_vec())
            .unwrap_or_default()
    }

    /// The affine x coordinate (32 bytes).
    pub fn x(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        if let Some(x) = self.to_sec1_uncompressed().get(1..33) {
            out.copy_from_slice(x);
        }
        out
    }

    /// The affine y coordinate (32 bytes).
    pub fn y(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        if let Some(y) = self.to_sec1_uncompressed().get(33..65) {
            out.copy_from_slice(y);
        }
        out
    }

    /// `Z_A` for this key and `user_id` (GM/T 0003.2 §5.5): the value hashed in front of every
    /// message. Exposed so that callers who sign pre-hashed data can interoperate, and so the
    /// standard's intermediate value can be tested.
    pub fn z_a(&self, user_id: &str) -> Result<[u8; 32], SmError> {
        check_id(user_id)?;
        // ENTL_A: bit length of the ID as a 16-bit big-endian integer.
        let entl = u16::try_from(user_id.len() * 8).map_err(|_| SmError::UserIdTooLong)?;
        Ok(sm3_digest_parts(&[
            &entl.to_be_bytes(),
            user_id.as_bytes(),
            &SM2_A,
            &SM2_B,
            &SM2_GX,
            &SM2_GY,
            &self.x(),
            &self.y(),
        ]))
    }

    /// Verify `signature` over `message` with the default user ID.
    pub fn verify(&self, message: &[u8], signature: &Sm2Signature) -> Result<(), SmError> {
        self.verify_with_id(SM2_DEFAULT_USER_ID, message, signature)
    }

    /// Verify `signature` over `message` with an explicit distinguishing identifier.
    pub fn verify_with_id(
        &self,
        user_id: &str,
        message: &[u8],
        signature: &Sm2Signature,
    ) -> Result<(), SmError> {
        check_id(user_id)?;
        let vk = sm2::dsa::VerifyingKey::from_affine(user_id, self.key)
            .map_err(|_| SmError::InvalidPublicKey)?;
        let sig = signature.to_inner()?;
        vk.verify(message, &sig).map_err(|_| SmError::BadSignature)
    }
}

impl fmt::Debug for Sm2PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Sm2PublicKey({})",
            crate::util::hex(&self.to_sec1_uncompressed())
        )
    }
}

/// An SM2 signature `(r, s)`.
///
/// Two wire forms exist and both are common: raw `r || s` (64 bytes, used by JWS `SM2SM3` and
/// most HSM APIs) and ASN.1 DER `SEQUENCE { r INTEGER, s INTEGER }` (GM/T 0009, X.509, CMS).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sm2Signature {
    r: [u8; 32],
    s: [u8; 32],
}

impl Sm2Signature {
    fn from_inner(sig: &sm2::dsa::Signature) -> Self {
        let raw = sig.to_bytes();
        let mut r = [0u8; 32];
        let mut s = [0u8; 32];
        r.copy_from_slice(&raw[..32]);
        s.copy_from_slice(&raw[32..]);
        Self { r, s }
    }

    fn to_inner(self) -> Result<sm2::dsa::Signature, SmError> {
        sm2::dsa::Signature::from_slice(&self.to_raw()).map_err(|_| SmError::MalformedSignature)
    }

    /// Parse raw `r || s` (exactly 64 bytes). Range checks on r and s happen here, so a
    /// signature with r or s of zero or ≥ n is rejected as malformed.
    pub fn from_raw(bytes: &[u8]) -> Result<Self, SmError> {
        let sig =
            sm2::dsa::Signature::from_slice(bytes).map_err(|_| SmError::MalformedSignature)?;
        Ok(Self::from_inner(&sig))
    }

    /// Parse ASN.1 DER.
    pub fn from_der(bytes: &[u8]) -> Result<Self, SmError> {
        let sig = sm2::dsa::Signature::from_der(bytes).map_err(|_| SmError::MalformedSignature)?;
        Ok(Self::from_inner(&sig))
    }

    /// Raw `r || s`, 64 bytes.
    pub fn to_raw(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&self.r);
        out[32..].copy_from_slice(&self.s);
        out
    }

    /// ASN.1 DER encoding.
    pub fn to_der(&self) -> Vec<u8> {
        der_encode_rs(&self.r, &self.s)
    }

    /// The `r` component (32 bytes, big-endian).
    pub fn r(&self) -> [u8; 32] {
        self.r
    }

    /// The `s` component (32 bytes, big-endian).
    pub fn s(&self) -> [u8; 32] {
        self.s
    }
}

impl fmt::Debug for Sm2Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sm2Signature({})", crate::util::hex(&self.to_raw()))
    }
}

/// DER `SEQUENCE { INTEGER r, INTEGER s }` for two 32-byte unsigned big-endian integers.
///
/// Written by hand (it is a dozen lines) so that DER output never depends on a panic path
/// inside a dependency.
fn der_encode_rs(r: &[u8; 32], s: &[u8; 32]) -> Vec<u8> {
    fn int(v: &[u8]) -> Vec<u8> {
        let first = v.iter().position(|&b| b != 0).unwrap_or(v.len() - 1);
        let mut body = v[first..].to_vec();
        if body[0] & 0x80 != 0 {
            body.insert(0, 0);
        }
        let mut out = vec![0x02, body.len() as u8];
        out.extend(body);
        out
    }
    let (ri, si) = (int(r), int(s));
    // At most 2 * (2 + 33) = 70 bytes of content, so the short length form always applies.
    let mut out = vec![0x30, (ri.len() + si.len()) as u8];
    out.extend(ri);
    out.extend(si);
    out
}

fn check_id(user_id: &str) -> Result<(), SmError> {
    if user_id.len() > 8191 {
        return Err(SmError::UserIdTooLong);
    }
    Ok(())
}

// Curve parameters of the SM2 recommended curve (GM/T 0003.5-2012 §2), needed for Z_A.
const SM2_A: [u8; 32] = hex32("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC");
const SM2_B: [u8; 32] = hex32("28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93");
const SM2_GX: [u8; 32] = hex32("32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7");
const SM2_GY: [u8; 32] = hex32("BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0");

const fn hex32(s: &str) -> [u8; 32] {
    const fn nib(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'A'..=b'F' => c - b'A' + 10,
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("bad hex digit in constant"),
        }
    }
    let b = s.as_bytes();
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = (nib(b[2 * i]) << 4) | nib(b[2 * i + 1]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::unhex;

    // GM/T 0003.5-2012 Annex A.2 (= GB/T 32918.5-2017 Annex A), signature example on the
    // recommended curve, as also used by OpenSSL's test/sm2_internal_test.c ("sm2_sig_test"):
    // d_A, message "message digest", ID "1234567812345678", nonce k, and the published
    // P_A, Z_A, e and (r, s).
    const D_A: &str = "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8";
    const X_A: &str = "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020";
    const Y_A: &str = "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13";
    const K: &str = "59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21";
    const Z_A: &str = "B2E14C5C79C6DF5B85F4FE7ED8DB7A262B9DA7E07CCB0EA9F4747B8CCDA8A4F3";
    const E: &str = "F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640";
    const R: &str = "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3";
    const S: &str = "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA";
    const MSG: &[u8] = b"message digest";

    fn vector_sig() -> Sm2Signature {
        let mut raw = unhex(R);
        raw.extend(unhex(S));
        Sm2Signature::from_raw(&raw).expect("vector signature parses")
    }

    #[test]
    fn sm3_standard_vectors() {
        // GM/T 0004-2012 Annex A examples 1 and 2.
        assert_eq!(
            sm3_hex(b"abc"),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
        assert_eq!(
            sm3_hex(&b"abcd".repeat(16)),
            "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
        );
        assert_eq!(sm3_digest_parts(&[b"a", b"bc"]), sm3_digest(b"abc"));
    }

    #[test]
    fn standard_vector_public_key_and_za() {
        let sk = Sm2PrivateKey::from_bytes(&unhex(D_A)).unwrap();
        let pk = sk.public_key();
        assert_eq!(pk.x().to_vec(), unhex(X_A));
        assert_eq!(pk.y().to_vec(), unhex(Y_A));
        let za = pk.z_a(SM2_DEFAULT_USER_ID).unwrap();
        assert_eq!(za.to_vec(), unhex(Z_A));
        assert_eq!(sm3_digest_parts(&[&za, MSG]).to_vec(), unhex(E));
    }

    #[test]
    fn standard_vector_signature_verifies_and_tampering_fails() {
        let pk = Sm2PublicKey::from_coordinates(&unhex(X_A), &unhex(Y_A)).unwrap();
        let sig = vector_sig();
        pk.verify(MSG, &sig).expect("published signature verifies");
        // Same signature via DER.
        let der = sig.to_der();
        assert_eq!(der.len(), 72); // both r and s have the top bit set → 33-byte INTEGERs
        pk.verify(MSG, &Sm2Signature::from_der(&der).unwrap())
            .unwrap();

        // One bit flipped in the message, in r, in s; another ID; another key.
        assert_eq!(
            pk.verify(b"message digesu", &sig),
            Err(SmError::BadSignature)
        );
        for i in [0usize, 31, 32, 63] {
            let mut raw = sig.to_raw();
            raw[i] ^= 1;
            let bad = Sm2Signature::from_raw(&raw).unwrap();
            assert_eq!(pk.verify(MSG, &bad), Err(SmError::BadSignature));
        }
        assert_eq!(
            pk.verify_with_id("1234567812345679", MSG, &sig),
            Err(SmError::BadSignature)
        );
        let other = Sm2PrivateKey::generate().unwrap().public_key();
        assert_eq!(other.verify(MSG, &sig), Err(SmError::BadSignature));
    }

    /// Recompute the standard's signature from its nonce k with the curve arithmetic, checking
    /// that our reading of the equations (and the crate's field/scalar code) gives the
    /// published (r, s) exactly: r = (e + x1) mod n, s = (1 + d)^-1 (k - r d) mod n.
    #[test]
    fn standard_vector_signature_reproduced_from_k() {
        use sm2::elliptic_curve::ff::PrimeField as _;
        use sm2::elliptic_curve::group::Group as _;
        use sm2::elliptic_curve::ops::Reduce;
        use sm2::elliptic_curve::sec1::ToSec1Point as _;
        use sm2::{FieldBytes, ProjectivePoint, Scalar};

        let scalar = |h: &str| {
            Option::<Scalar>::from(Scalar::from_repr(
                FieldBytes::try_from(unhex(h).as_slice()).unwrap(),
            ))
            .unwrap()
        };
        let d = scalar(D_A);
        let k = scalar(K);
        let e = scalar(E);
        let p1 = ProjectivePoint::mul_by_generator(&k).to_affine();
        let enc = p1.to_sec1_point(false);
        let x1 = FieldBytes::try_from(&enc.as_bytes()[1..33]).unwrap();
        let r = e + <Scalar as Reduce<FieldBytes>>::reduce(&x1);
        let s = Option::<Scalar>::from((d + Scalar::ONE).invert()).unwrap() * (k - r * d);
        assert_eq!(r.to_repr().to_vec(), unhex(R));
        assert_eq!(s.to_repr().to_vec(), unhex(S));
    }

    #[test]
    fn round_trip_and_encodings() {
        let sk = Sm2PrivateKey::generate().unwrap();
        let pk = sk.public_key();
        let sig = sk.sign(b"hello");
        pk.verify(b"hello", &sig).unwrap();
        assert_eq!(Sm2Signature::from_raw(&sig.to_raw()).unwrap(), sig);
        assert_eq!(Sm2Signature::from_der(&sig.to_der()).unwrap(), sig);
        assert_eq!(
            Sm2PublicKey::from_sec1_bytes(&pk.to_sec1_uncompressed()).unwrap(),
            pk
        );
        let sk2 = Sm2PrivateKey::from_bytes(sk.to_bytes().as_ref()).unwrap();
        assert_eq!(sk2.public_key(), pk);

        let with_id = sk.sign_with_id("alice@example.cn", b"hello").unwrap();
        pk.verify_with_id("alice@example.cn", b"hello", &with_id)
            .unwrap();
        assert!(pk.verify(b"hello", &with_id).is_err());
        assert!(format!("{sk:?}").starts_with("Sm2PrivateKey"));
        assert!(!format!("{sk:?}").contains(&crate::util::hex(sk.to_bytes().as_ref())));
    }

    #[test]
    fn malformed_inputs_are_errors() {
        assert_eq!(
            Sm2PrivateKey::from_bytes(&[0u8; 32]).err(),
            Some(SmError::InvalidPrivateKey)
        );
        assert_eq!(
            Sm2PrivateKey::from_bytes(&[1u8; 31]).err(),
            Some(SmError::InvalidPrivateKey)
        );
        assert_eq!(
            Sm2PublicKey::from_coordinates(&[1u8; 32], &[2u8; 32]).err(),
            Some(SmError::InvalidPublicKey)
        );
        assert_eq!(
            Sm2Signature::from_raw(&[0u8; 64]).err(),
            Some(SmError::MalformedSignature)
        );
        assert_eq!(
            Sm2Signature::from_raw(&[1u8; 63]).err(),
            Some(SmError::MalformedSignature)
        );
        assert_eq!(
            Sm2Signature::from_der(&[0x30, 0x00]).err(),
            Some(SmError::MalformedSignature)
        );
    }
}
