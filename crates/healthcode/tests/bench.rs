//! Health-code timings — a benchmark, not a test (ignored; it asserts only correctness). Run
//! with `cargo test --release -p phip-healthcode --test bench -- --ignored --nocapture`.
//!
//! Per algorithm (ES256, SM2SM3): issuing (sign + DEFLATE + `shc:/` encoding), verifying the
//! scanned `shc:/` text (decode, inflate, signature, claims), rendering the QR as PNG and SVG,
//! and decoding a PNG back to the text — the steps a scanner or a registration desk repeats.

use std::time::Instant;

use phip_healthcode::*;
use phip_security::jws::{Algorithm, PrivateKey, SigningKey};
use serde_json::json;

const ISS: &str = "https://hic.example.cn/fhir";

/// Runs `f` `n` times and prints the mean time per call.
fn time<T>(label: &str, n: u32, mut f: impl FnMut() -> T) -> T {
    let mut last = f();
    let started = Instant::now();
    for _ in 0..n {
        last = f();
    }
    let micros = started.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!("{label:<32} {micros:>10.1} µs/op  ({:.0}/s)", 1e6 / micros);
    last
}

#[test]
#[ignore = "benchmark: run explicitly in release mode"]
fn health_code_timings() {
    let golden = json!({
        "resourceType": "Patient",
        "identifier": [
            {"system": "urn:oid:2.16.156.10011.1.1", "value": "11010519491231002X"},
            {"system": phip_mpi::identifier::HEALTH_CARD, "value": "HC-7788"},
            {"system": phip_mpi::identifier::MEDICAL_INSURANCE, "value": "MI-43"}
        ],
        "name": [{"family": "张", "given": ["三"]}],
        "gender": "male", "birthDate": "1949-12-31"
    });
    let subject = HealthCodeSubject::from_patient("person-1", &golden, &default_linked_systems())
        .expect("subject");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    for alg in [Algorithm::Es256, Algorithm::Sm2Sm3] {
        let mut keys = IssuerKeys::default();
        let key = SigningKey::new("bench", PrivateKey::generate(alg).expect("key"));
        keys.add(&key, true).expect("add key");
        let verifier = Verifier::new(keys.jwks()).trust_issuer(ISS);
        let name = alg.as_str();
        println!("{name}:");
        let code = time("  issue", 2000, || {
            issue::issue(&keys, ISS, &subject, alg, now, now + 300).expect("issue")
        });
        let verified = time("  verify shc:/ text", 2000, || {
            verifier.verify(&code.shc, now + 1).expect("verify")
        });
        assert_eq!(verified.subject, subject);
        let png = time("  render PNG (4 px modules)", 200, || {
            qr::render_png(&code.shc, 4).expect("png")
        });
        time("  render SVG", 200, || {
            qr::render_svg(&code.shc).expect("svg")
        });
        let scanned = time("  decode PNG", 100, || {
            qr::decode_png(&png).expect("decode")
        });
        assert_eq!(scanned, code.shc);
        println!(
            "  sizes: JWS {} chars, shc:/ {} chars, PNG {} bytes",
            code.jws.len(),
            code.shc.len(),
            png.len()
        );
    }
}
