//! Property-based fuzzing of JWT handling: compact JWS decoding, signature verification and
//! access-token validation.
//!
//! Properties: no input panics; a token altered anywhere (a character, a cut, the header's
//! `alg`/`kid`/`crit`, a claim, a segment spliced from another token) is refused unless the
//! signed bytes are those of a token the issuer really signed, and whatever is accepted
//! carries exactly the claims the issuer signed; tokens of an untrusted key are refused.

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use phip_security::jws::{self, Algorithm, Jwks, PrivateKey, SigningKey};
use phip_security::token::{Claims, Grant, Minted, TokenIssuer, TokenValidator};
use proptest::prelude::*;

const ISSUER: &str = "https://phip.test/auth";
const AUDIENCE: &str = "https://phip.test/fhir";

struct Keys {
    issuer: TokenIssuer,
    validator: TokenValidator,
    stranger: TokenIssuer,
    jwks: Jwks,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = SigningKey::new("k1", PrivateKey::generate(Algorithm::Es256).expect("key"));
        let jwks = Jwks {
            keys: vec![key.public_jwk()],
        };
        let stranger = SigningKey::new("k1", PrivateKey::generate(Algorithm::Es256).expect("key"));
        Keys {
            issuer: TokenIssuer::new(ISSUER, AUDIENCE, key),
            validator: TokenValidator::new(AUDIENCE).trust_issuer(ISSUER, jwks.clone()),
            stranger: TokenIssuer::new(ISSUER, AUDIENCE, stranger),
            jwks,
        }
    })
}

fn grant() -> impl Strategy<Value = Grant> {
    (
        "[a-z0-9-]{1,16}",
        prop::sample::select(vec![
            "system/*.cruds",
            "user/Patient.rs user/Observation.r",
            "patient/*.read",
            "system/Patient.c",
        ]),
        // Minting checks the division against GB/T 2260, so only real codes.
        prop::option::of(prop::sample::select(vec![
            "110000", "110101", "310000", "440300", "510107",
        ])),
        prop::option::of("[A-Za-z0-9-]{1,12}"),
        prop::collection::vec("[a-z-]{1,10}", 0..3),
    )
        .prop_map(|(sub, scope, division, org, roles)| Grant {
            sub,
            scope: scope.to_owned(),
            division: division.map(str::to_owned),
            org,
            patient: scope.starts_with("patient/").then(|| "p1".to_owned()),
            roles,
            ..Grant::default()
        })
}

fn mint(issuer: &TokenIssuer, grant: &Grant) -> Minted {
    issuer.mint(grant, Duration::from_secs(600)).expect("mint")
}

/// How a token is altered.
#[derive(Debug, Clone)]
enum Tamper {
    /// Replace one character with another from the base64url alphabet (or a stray one).
    Char(usize, char),
    /// Drop a range of characters.
    Cut(usize, usize),
    /// Re-encode the header.
    Header(String),
    /// Re-encode the payload with one claim changed.
    Claim(String, serde_json::Value),
    /// Put another token's segment in place of one of ours.
    Splice(usize),
}

fn tamper() -> impl Strategy<Value = Tamper> {
    let alphabet: Vec<char> = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        .chars()
        .collect();
    prop_oneof![
        (
            any::<usize>(),
            prop_oneof![
                prop::sample::select(alphabet),
                prop::sample::select(vec!['.', '=', '+', '/', ' ', '\u{e9}']),
            ]
        )
            .prop_map(|(i, c)| Tamper::Char(i, c)),
        (any::<usize>(), 1usize..20).prop_map(|(i, n)| Tamper::Cut(i, n)),
        prop::sample::select(vec![
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"HS256","kid":"k1"}"#,
            r#"{"alg":"ES256","kid":"k2"}"#,
            r#"{"alg":"ES384","kid":"k1"}"#,
            r#"{"alg":"SM2SM3","kid":"k1"}"#,
            r#"{"alg":"ES256","kid":"k1","crit":["exp"]}"#,
            r#"{"alg":"ES256","kid":"k1","b64":false}"#,
            r#"{"alg":"ES256"}"#,
            r#"{"kid":"k1"}"#,
            "[]",
            "",
        ])
        .prop_map(|h| Tamper::Header(h.to_owned())),
        (
            prop::sample::select(vec![
                "sub", "scope", "exp", "aud", "iss", "division", "patient", "nbf", "roles"
            ]),
            prop_oneof![
                Just(serde_json::json!("system/*.cruds")),
                Just(serde_json::json!(9_999_999_999i64)),
                Just(serde_json::json!(["https://phip.test/fhir", "x"])),
                Just(serde_json::json!(null)),
                Just(serde_json::json!(0)),
                Just(serde_json::json!("110000")),
                Just(serde_json::json!({"a": 1})),
            ],
        )
            .prop_map(|(k, v)| Tamper::Claim(k.to_owned(), v)),
        (0usize..3).prop_map(Tamper::Splice),
    ]
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn apply(token: &str, other: &str, tamper: &Tamper) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    match tamper {
        Tamper::Char(i, c) => {
            let mut chars: Vec<char> = token.chars().collect();
            let at = i % chars.len();
            chars[at] = *c;
            return chars.into_iter().collect();
        }
        Tamper::Cut(i, n) => {
            let at = i % token.len();
            let end = (at + n).min(token.len());
            return format!("{}{}", &token[..at], &token[end..]);
        }
        Tamper::Header(header) => parts[0] = b64(header.as_bytes()),
        Tamper::Claim(key, value) => {
            let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&parts[1])
                .expect("payload");
            let mut claims: serde_json::Value = serde_json::from_slice(&payload).expect("claims");
            claims[key.as_str()] = value.clone();
            parts[1] = b64(&serde_json::to_vec(&claims).expect("json"));
        }
        Tamper::Splice(segment) => {
            if let Some(piece) = other.split('.').nth(*segment) {
                parts[*segment] = piece.to_owned();
            }
        }
    }
    parts.join(".")
}

fn accepted_claims_are_signed(
    claims: &Claims,
    ours: &Minted,
    theirs: &Minted,
) -> Result<(), TestCaseError> {
    prop_assert!(
        *claims == ours.claims || *claims == theirs.claims,
        "accepted claims nobody signed: {claims:?}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    /// Altered tokens are refused, or carry exactly claims the issuer signed.
    #[test]
    fn tampered_tokens_are_refused(grant in grant(), other in grant(), tamper in tamper()) {
        let keys = keys();
        let ours = mint(&keys.issuer, &grant);
        let theirs = mint(&keys.issuer, &other);
        prop_assert_eq!(keys.validator.validate(&ours.token).ok(), Some(ours.claims.clone()));
        let altered = apply(&ours.token, &theirs.token, &tamper);
        if let Ok(claims) = keys.validator.validate(&altered) {
            accepted_claims_are_signed(&claims, &ours, &theirs)?;
        }
        // The JWS layer on its own agrees.
        if jws::verify(&altered, &keys.jwks).is_ok() {
            let decoded = jws::decode(&altered, None).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let a = jws::decode(&ours.token, None).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let b = jws::decode(&theirs.token, None).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(decoded.payload == a.payload || decoded.payload == b.payload);
        }
    }

    /// A token signed by a key the validator does not trust is refused, whatever its claims.
    #[test]
    fn tokens_of_untrusted_keys_are_refused(grant in grant()) {
        let keys = keys();
        let forged = mint(&keys.stranger, &grant);
        prop_assert!(keys.validator.validate(&forged.token).is_err());
    }

    /// Arbitrary strings never panic the decoder or the validator, and are never accepted.
    #[test]
    fn arbitrary_strings_never_panic(text in prop_oneof![
        ".{0,200}",
        "[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,200}\\.[A-Za-z0-9_-]{0,100}",
        "eyJ[A-Za-z0-9_-]{0,60}(\\.[A-Za-z0-9_=.-]{0,120}){0,4}",
    ]) {
        let keys = keys();
        let _ = jws::decode(&text, None);
        let _ = jws::verify(&text, &keys.jwks);
        prop_assert!(keys.validator.validate(&text).is_err());
        let _ = phip_security::token::peek_client_id(&text);
    }
}
