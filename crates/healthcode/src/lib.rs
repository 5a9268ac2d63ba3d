//! The residents' electronic health code (电子健康码): a signed, short-lived, revocable QR
//! credential bound to the resident's master record, in the form of SMART Health Cards.
//!
//! - [`issue`]: build the credential — a compact JWS, header `{"alg","zip":"DEF","kid"}`,
//!   raw-DEFLATE'd payload `{iss, nbf, exp, vc:{type, rid, credentialSubject}}` — signed
//!   with ES256 (SHC's algorithm) or SM2 (`SM2SM3`, phip's label; see
//!   [`phip_security::jws`]).
//! - [`verify`]: the offline verifier clinics, pharmacies and `phip health-code verify` run:
//!   algorithm, key, signature, issuer, `nbf`/`exp` with leeway, and revocation.
//! - [`numeric`]: the `shc:/` numeric QR payload; [`qr`]: PNG and SVG rendering and PNG
//!   decoding.
//! - [`subject`]: what the code discloses about the resident (and what it never does).
//! - [`keys`]: the key ring's keys under RFC 7638 thumbprint `kid`s, and revocation ids;
//!   [`revocation`]: the per-key CRL.
//!
//! ```
//! use phip_healthcode::*;
//! use phip_security::jws::Algorithm;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let ring = phip_security::keys::KeyRing::open(dir.path())?;
//! let keys = IssuerKeys::from_ring(&ring)?;
//! let patient = serde_json::json!({"resourceType": "Patient", "name": [{"text": "张三"}],
//!                                  "birthDate": "1990-01-01"});
//! let subject = HealthCodeSubject::from_patient("p1", &patient, &default_linked_systems())?;
//! let now = 1_800_000_000;
//! let code = issue::issue(&keys, "https://hic.example.cn/fhir", &subject,
//!                         Algorithm::Es256, now, now + 300)?;
//! let verifier = Verifier::new(keys.jwks()).trust_issuer("https://hic.example.cn/fhir");
//! let verified = verifier.verify(&code.shc, now + 10)?;
//! assert_eq!(verified.subject.person_id, "p1");
//! assert!(matches!(verifier.verify(&code.shc, now + 1000), Err(Refusal::Expired { .. })));
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod issue;
pub mod keys;
pub mod numeric;
pub mod qr;
pub mod revocation;
pub mod subject;
pub mod verify;

pub use issue::IssuedCode;
pub use keys::IssuerKeys;
pub use revocation::Crl;
pub use subject::{default_linked_systems, HealthCodeSubject};
pub use verify::{Refusal, VerifiedCode, Verifier};

/// Errors of building, encoding and rendering codes (refusals of verification are
/// [`Refusal`]s).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthCodeError {
    /// Input that is not a well-formed code, CRL or image.
    #[error("malformed: {0}")]
    Malformed(String),
    /// A key that cannot sign or be published as a health card key.
    #[error("key: {0}")]
    Key(String),
    /// The resident's record cannot be shown on a code.
    #[error("{0}")]
    Subject(String),
    /// The credential does not fit in a single QR code (version 22).
    #[error("the health code is too large for one QR code: {0}")]
    TooLarge(String),
    /// Rendering failed.
    #[error("rendering failed: {0}")]
    Render(String),
}
