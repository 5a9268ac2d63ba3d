//! `phip health-code verify|render`: the offline verifier a clinic or pharmacy scanner runs,
//! and QR rendering of a code.
//!
//! `verify` needs only the issuer's public keys (`--jwks`, a file or the issuer's
//! `[base]/.well-known/jwks.json`) and, to catch revoked codes, its revocation lists
//! (`--crl`, files or URLs; fetched automatically from the JWKS's issuer when the JWKS came
//! from a URL and announces `crlVersion`). It prints the identified resident, or the reason
//! the code is refused and exits with status 1.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use phip_healthcode::{numeric, qr, Crl, Refusal, VerifiedCode, Verifier};
use phip_security::jws::Jwks;

/// `phip health-code …`.
#[derive(Subcommand, Debug)]
pub(crate) enum HealthCodeCommand {
    /// Verify a scanned health code offline and print who it identifies.
    Verify(VerifyArgs),
    /// Render a health code (shc:/… or its JWS) as a PNG or SVG QR code.
    Render(RenderArgs),
}

/// `phip health-code verify`.
#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// The code: `shc:/…`, the compact JWS, a PNG image of the QR code, or `-` for stdin.
    code: String,
    /// The issuer's JWKS: a file or an http(s) URL (`[base]/.well-known/jwks.json`).
    #[arg(long)]
    jwks: String,
    /// Revocation lists (`[base]/.well-known/crl/{kid}.json`), files or URLs; repeatable.
    #[arg(long)]
    crl: Vec<String>,
    /// Accept only codes from this issuer (the issuing server's FHIR base URL); repeatable.
    #[arg(long)]
    issuer: Vec<String>,
    /// Clock skew tolerated on the validity window, in seconds.
    #[arg(long, default_value_t = phip_healthcode::verify::DEFAULT_LEEWAY_SECONDS)]
    leeway: i64,
}

/// `phip health-code render`.
#[derive(Args, Debug)]
pub(crate) struct RenderArgs {
    /// The code: `shc:/…`, the compact JWS, or `-` for stdin.
    code: String,
    /// Output file; `.svg` writes SVG, anything else PNG.
    #[arg(long, short)]
    output: PathBuf,
    /// Pixels per QR module (PNG only).
    #[arg(long, default_value_t = 6)]
    scale: u32,
}

/// Runs a `phip health-code` command.
pub(crate) fn run(command: HealthCodeCommand) -> anyhow::Result<()> {
    match command {
        HealthCodeCommand::Verify(args) => match verify(&args)? {
            Ok(verified) => {
                print!("{}", describe(&verified));
                Ok(())
            }
            Err(refusal) => {
                println!("REFUSED ({}): {refusal}", refusal.code());
                std::process::exit(1);
            }
        },
        HealthCodeCommand::Render(args) => render(&args),
    }
}

/// Verifies per `args`: `Err` for a failure to run (unreadable files, unreachable URLs),
/// `Ok(Err(refusal))` for a code that is refused.
fn verify(args: &VerifyArgs) -> anyhow::Result<Result<VerifiedCode, Refusal>> {
    let code = read_code(&args.code, true)?;
    let jwks_text = fetch(&args.jwks).context("reading the JWKS")?;
    let jwks = Jwks::from_json(&jwks_text).context("parsing the JWKS")?;
    let mut verifier = Verifier::new(jwks).leeway(args.leeway);
    for issuer in &args.issuer {
        verifier = verifier.trust_issuer(issuer);
    }
    let mut crl_sources = args.crl.clone();
    if crl_sources.is_empty() && is_url(&args.jwks) {
        crl_sources = announced_crls(&args.jwks, &jwks_text);
    }
    for source in &crl_sources {
        let text =
            fetch(source).with_context(|| format!("reading the revocation list {source}"))?;
        let crl = Crl::from_json(&text).with_context(|| format!("parsing {source}"))?;
        verifier = verifier.with_crl(crl);
    }
    Ok(verifier.verify(&code, now()))
}

/// The CRL URLs a JWKS fetched from `jwks_url` announces (`crlVersion` on a key).
fn announced_crls(jwks_url: &str, jwks_text: &str) -> Vec<String> {
    let Some(base) = jwks_url.strip_suffix("/jwks.json") else {
        return Vec::new();
    };
    let Ok(document) = serde_json::from_str::<serde_json::Value>(jwks_text) else {
        return Vec::new();
    };
    document["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| k.get("crlVersion").is_some())
        .filter_map(|k| k["kid"].as_str())
        .map(|kid| format!("{base}/crl/{kid}.json"))
        .collect()
}

fn describe(verified: &VerifiedCode) -> String {
    let subject = &verified.subject;
    let mut out = format!(
        "VALID health code\n  name:       {}\n",
        subject.display_name()
    );
    if let Some(birth) = &subject.birth_date {
        out.push_str(&format!("  birth date: {birth}\n"));
    }
    if let Some(gender) = &subject.gender {
        out.push_str(&format!("  gender:     {gender}\n"));
    }
    out.push_str(&format!("  person:     Patient/{}\n", subject.person_id));
    for identifier in &subject.identifiers {
        out.push_str(&format!(
            "  identifier: {} | {}\n",
            identifier.system, identifier.value
        ));
    }
    out.push_str(&format!(
        "  issuer:     {}\n  algorithm:  {}\n  expires:    {}\n",
        verified.iss,
        verified.algorithm,
        chrono::DateTime::<chrono::Utc>::from_timestamp(verified.exp, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| verified.exp.to_string())
    ));
    out
}

fn render(args: &RenderArgs) -> anyhow::Result<()> {
    let code = read_code(&args.code, false)?;
    let shc = if code.starts_with("shc:/") {
        code
    } else {
        numeric::encode(&code)?
    };
    let svg = args
        .output
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    let bytes = if svg {
        qr::render_svg(&shc)?.into_bytes()
    } else {
        qr::render_png(&shc, args.scale)?
    };
    std::fs::write(&args.output, bytes)
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!("wrote {}", args.output.display());
    Ok(())
}

/// The code text from an argument: literal, `-` (stdin), or (when `images`) a PNG file.
fn read_code(argument: &str, images: bool) -> anyhow::Result<String> {
    if argument == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        return Ok(text.trim().to_owned());
    }
    let lower = argument.to_ascii_lowercase();
    if images && lower.ends_with(".png") {
        let bytes =
            std::fs::read(Path::new(argument)).with_context(|| format!("reading {argument}"))?;
        return qr::decode_png(&bytes).with_context(|| format!("scanning {argument}"));
    }
    if lower.starts_with("shc:/")
        || argument.matches('.').count() == 2 && !Path::new(argument).exists()
    {
        return Ok(argument.trim().to_owned());
    }
    let text = std::fs::read_to_string(argument)
        .with_context(|| format!("{argument} is neither a code nor a readable file"))?;
    Ok(text.trim().to_owned())
}

fn is_url(source: &str) -> bool {
    source.starts_with("https://") || source.starts_with("http://")
}

/// A file's text, or an http(s) URL's body.
fn fetch(source: &str) -> anyhow::Result<String> {
    if !is_url(source) {
        return std::fs::read_to_string(source).with_context(|| format!("reading {source}"));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let response = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(15))
            .build()?
            .get(source)
            .send()
            .await
            .with_context(|| format!("fetching {source}"))?;
        if !response.status().is_success() {
            bail!("{source} answered {}", response.status());
        }
        Ok(response.text().await?)
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use phip_healthcode::revocation;
    use phip_healthcode::{HealthCodeSubject, IssuerKeys};
    use phip_security::jws::Algorithm;
    use serde_json::json;

    struct Fixture {
        dir: tempfile::TempDir,
        keys: IssuerKeys,
        jwks: String,
    }

    const ISS: &str = "https://hic.example.cn/fhir";

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let ring = phip_security::keys::KeyRing::open(&dir.path().join("data")).unwrap();
        let keys = IssuerKeys::from_ring(&ring).unwrap();
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, keys.jwks_document(Some(1)).to_string()).unwrap();
        Fixture {
            jwks: jwks.display().to_string(),
            dir,
            keys,
        }
    }

    fn code(f: &Fixture, alg: Algorithm, nbf: i64) -> phip_healthcode::IssuedCode {
        let patient = json!({"resourceType": "Patient", "name": [{"text": "王芳"}],
            "birthDate": "1985-03-08",
            "identifier": [{"system": "https://phip.cn/fhir/sid/medical-insurance", "value": "MI-9"}]});
        let subject = HealthCodeSubject::from_patient(
            "person-9",
            &patient,
            &phip_healthcode::default_linked_systems(),
        )
        .unwrap();
        phip_healthcode::issue::issue(&f.keys, ISS, &subject, alg, nbf, nbf + 300).unwrap()
    }

    fn args(f: &Fixture, code: &str, crl: Vec<String>) -> VerifyArgs {
        VerifyArgs {
            code: code.to_owned(),
            jwks: f.jwks.clone(),
            crl,
            issuer: vec![ISS.to_owned()],
            leeway: 60,
        }
    }

    #[test]
    fn verifies_text_and_png_codes_offline() {
        let f = fixture();
        for alg in [Algorithm::Es256, Algorithm::Sm2Sm3] {
            let issued = code(&f, alg, now());
            let verified = verify(&args(&f, &issued.shc, vec![])).unwrap().unwrap();
            assert_eq!(verified.subject.person_id, "person-9");
            let text = describe(&verified);
            assert!(text.contains("王芳") && text.contains("MI-9"), "{text}");
            // Rendered by `phip health-code render`, scanned back by `verify`.
            let png = f.dir.path().join(format!("{alg}.png"));
            render(&RenderArgs {
                code: issued.jws.clone(),
                output: png.clone(),
                scale: 4,
            })
            .unwrap();
            let from_image = verify(&args(&f, &png.display().to_string(), vec![]))
                .unwrap()
                .unwrap();
            assert_eq!(from_image.jws, issued.jws);
            let svg = f.dir.path().join("code.svg");
            render(&RenderArgs {
                code: issued.shc.clone(),
                output: svg.clone(),
                scale: 4,
            })
            .unwrap();
            assert!(std::fs::read_to_string(svg).unwrap().contains("<svg"));
        }
    }

    #[test]
    fn refuses_expired_revoked_and_foreign_codes() {
        let f = fixture();
        let expired = code(&f, Algorithm::Es256, now() - 1000);
        let refusal = verify(&args(&f, &expired.shc, vec![]))
            .unwrap()
            .unwrap_err();
        assert!(matches!(refusal, Refusal::Expired { .. }));

        let current = code(&f, Algorithm::Es256, now() - 5);
        let crl = Crl {
            ctr: 1,
            rids: vec![revocation::entry(&current.rid, now())],
            ..Crl::empty(&current.kid)
        };
        let crl_file = f.dir.path().join("crl.json");
        std::fs::write(&crl_file, serde_json::to_string(&crl).unwrap()).unwrap();
        let refusal = verify(&args(
            &f,
            &current.shc,
            vec![crl_file.display().to_string()],
        ))
        .unwrap()
        .unwrap_err();
        assert_eq!(refusal, Refusal::Revoked);

        let other = fixture();
        let foreign = code(&other, Algorithm::Es256, now());
        let refusal = verify(&args(&f, &foreign.shc, vec![]))
            .unwrap()
            .unwrap_err();
        assert!(matches!(refusal, Refusal::UnknownKey(_)));

        let mut untrusting = args(&f, &current.shc, vec![]);
        untrusting.issuer = vec!["https://elsewhere.example/fhir".into()];
        assert!(matches!(
            verify(&untrusting).unwrap().unwrap_err(),
            Refusal::UntrustedIssuer(_)
        ));
        // Missing inputs are errors, not refusals.
        let mut missing = args(&f, &current.shc, vec![]);
        missing.jwks = "/no/such/jwks.json".into();
        assert!(verify(&missing).is_err());
    }

    #[test]
    fn crl_urls_announced_by_a_fetched_jwks() {
        let document = json!({"keys": [{"kid": "a", "crlVersion": 2}, {"kid": "b"}]}).to_string();
        assert_eq!(
            announced_crls("https://h.example/fhir/.well-known/jwks.json", &document),
            vec!["https://h.example/fhir/.well-known/crl/a.json".to_owned()]
        );
        assert!(announced_crls("https://h.example/keys", &document).is_empty());
    }
}
