//! JWT handling: compact JWS decoding, signature verification, access-token validation and
//! the unverified client-id peek of `/auth/token`.
//!
//! Properties: nothing panics; no input is accepted as an access token, since the fuzzer
//! cannot sign with the trusted key (a token the issuer minted, mutated by the fuzzer, must be
//! refused unless the mutation left the signed bytes unchanged).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use phip_security::jws::{self, Algorithm, Jwks, PrivateKey, SigningKey};
use phip_security::token::TokenValidator;

const ISSUER: &str = "https://phip.test/auth";
const AUDIENCE: &str = "https://phip.test/fhir";

fn trusted() -> &'static (TokenValidator, Jwks) {
    static KEYS: OnceLock<(TokenValidator, Jwks)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = SigningKey::new("k1", PrivateKey::generate(Algorithm::Es256).expect("key"));
        let jwks = Jwks {
            keys: vec![key.public_jwk()],
        };
        let validator = TokenValidator::new(AUDIENCE).trust_issuer(ISSUER, jwks.clone());
        (validator, jwks)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (validator, jwks) = trusted();
    let _ = jws::decode(text, None);
    assert!(jws::verify(text, jwks).is_err(), "accepted a signature it never made");
    assert!(validator.validate(text).is_err(), "accepted a token it never issued");
    let _ = phip_security::token::peek_client_id(text);
});
