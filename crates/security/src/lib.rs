//! Trust primitives for phip: the pieces the server and engine need to authenticate callers,
//! authorise what they do, and sign documents — with no HTTP and no storage of their own.
//!
//! - [`sm`]: SM3 digests and SM2 signatures (GM/T 0003 / GB/T 32918, default user ID
//!   `1234567812345678`, Z_A pre-hash), as DER or raw `r || s`.
//! - [`keys`]: a [`keys::KeyRing`] of ES256 and SM2 signing keys kept in a directory
//!   (`keys.json`), private keys encrypted at rest under a master key; JWKS export; rotation.
//! - [`jws`]: compact JWS with `ES256` and `SM2SM3` (plus `ES384` verification), detached
//!   payloads for FHIR `Signature.data`, verification against a JWKS.
//! - [`token`]: access tokens (JWT) — minting, validation, and SMART Backend Services client
//!   assertions with a replay cache.
//! - [`scope`]: SMART App Launch v1/v2 scopes and the question "does this token permit that?".
//! - [`division`]: GB/T 2260 administrative division codes (province → prefecture → county).
//!
//! Everything that reads external input returns a typed error rather than panicking.
//!
//! ## Wiring it together
//!
//! ```
//! use phip_security::{keys::KeyRing, scope::{Interaction, ScopeContext}, token::*};
//! use std::time::Duration;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! // At start-up: the data directory's key ring (created on first use).
//! let ring = KeyRing::open(dir.path())?;
//! let issuer = TokenIssuer::from_key_ring(&ring, "https://hic.example.cn/auth",
//!                                         "https://hic.example.cn/fhir")?;
//! let validator = TokenValidator::new("https://hic.example.cn/fhir")
//!     .trust_issuer("https://hic.example.cn/auth", ring.jwks());
//!
//! // `phip token --scope 'patient/*.rs' --patient 123`
//! let minted = issuer.mint(&Grant {
//!     sub: "resident-123".into(),
//!     scope: "patient/*.rs".into(),
//!     patient: Some("123".into()),
//!     ..Grant::default()
//! }, Duration::from_secs(3600))?;
//!
//! // Per request: authenticate, then authorise each interaction.
//! let claims = validator.validate(&minted.token)?;
//! let scopes = claims.scopes()?;
//! assert!(scopes.permits(ScopeContext::Patient, "Observation", Interaction::Search));
//! assert!(!scopes.permits(ScopeContext::Patient, "Observation", Interaction::Update));
//! assert!(!scopes.permits(ScopeContext::User, "Observation", Interaction::Read));
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod division;
pub mod jws;
pub mod keys;
pub mod scope;
pub mod sm;
pub mod token;

pub(crate) mod util;
