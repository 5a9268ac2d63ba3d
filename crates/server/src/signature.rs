//! Signed clinical records: `$sign` puts a digital signature (SM2 with SM3 per GM/T 0003, or
//! ES256) over one version of a resource into a `Provenance.signature`, and
//! `$verify-signature` checks it.
//!
//! The signature is a detached compact JWS (`sigFormat` `application/jose`) over the
//! canonical form of the signed version: its JSON with object keys sorted, no insignificant
//! whitespace, numbers as written. Because the target reference names the version
//! (`Type/id/_history/n`), later edits of the resource never invalidate an earlier signature;
//! they simply are not covered by it.

use std::sync::Arc;

use base64::Engine as _;
use chrono::{SecondsFormat, Utc};
use phip_engine::{Engine, FhirError, FhirResponse, FhirResult, RequestContext};
use phip_fhir::IssueType;
use phip_security::jws::{self, Algorithm, Jwks};
use phip_security::keys::KeyRing;
use serde_json::{json, Map, Value};

/// What signs and verifies for the server.
pub struct Signer {
    ring: KeyRing,
    jwks: Jwks,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer over the data directory's key ring.
    pub fn new(ring: KeyRing) -> Arc<Self> {
        let jwks = ring.jwks();
        Arc::new(Self { ring, jwks })
    }

    /// The public keys signatures are verified with.
    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }
}

/// The canonical bytes of a resource: keys sorted recursively, compact.
pub fn canonical_bytes(value: &Value) -> Vec<u8> {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for key in keys {
                    out.insert(key.clone(), sorted(&map[key]));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sorted(value)).unwrap_or_default()
}

fn algorithm(name: Option<&str>) -> FhirResult<Algorithm> {
    match name.unwrap_or("SM2SM3") {
        "SM2SM3" | "SM2" | "sm2" => Ok(Algorithm::Sm2Sm3),
        "ES256" | "es256" => Ok(Algorithm::Es256),
        other => Err(FhirError::bad_request(format!(
            "unsupported signature algorithm {other:?}: use SM2SM3 or ES256"
        ))),
    }
}

/// `POST [base]/{type}/{id}/$sign?alg=SM2SM3|ES256`: signs the current version and records the
/// signature in a new Provenance, which is returned.
pub(crate) fn sign(
    engine: &Engine,
    signer: &Signer,
    ctx: &RequestContext,
    resource_type: &str,
    id: &str,
    alg: Option<&str>,
) -> FhirResult<FhirResponse> {
    let alg = algorithm(alg)?;
    let target = engine.read(ctx, resource_type, id)?;
    let (Some(body), Some(version)) = (target.body, target.version_id) else {
        return Err(FhirError::not_found(format!(
            "{resource_type}/{id} is not known"
        )));
    };
    let key = signer.ring.active(alg).ok_or_else(|| {
        FhirError::new(
            500,
            IssueType::Exception,
            "no active signing key of that algorithm",
        )
    })?;
    let signature = jws::sign_detached(key, Some("JOSE"), &canonical_bytes(&body));
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let who = match (&ctx.principal.patient, &ctx.principal.organization) {
        (Some(patient), _) => json!({"reference": format!("Patient/{patient}")}),
        (None, Some(org)) => json!({"reference": format!("Organization/{org}")}),
        (None, None) => json!({"display": ctx.principal.subject}),
    };
    let provenance = json!({
        "resourceType": "Provenance",
        "target": [{"reference": format!("{resource_type}/{id}/_history/{version}")}],
        "recorded": now,
        "agent": [{
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author"}]},
            "who": who.clone()
        }],
        "signature": [{
            "type": [{"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1", "display": "Author's Signature"}],
            "when": now,
            "who": who,
            "targetFormat": "application/fhir+json",
            "sigFormat": "application/jose",
            "data": base64::engine::general_purpose::STANDARD.encode(signature.as_bytes())
        }]
    });
    let mut create_ctx = ctx.clone();
    create_ctx.return_preference = Some(phip_engine::ReturnPreference::Representation);
    engine.create(&create_ctx, "Provenance", provenance, None)
}

/// `GET|POST [base]/Provenance/{id}/$verify-signature`: checks every signature of the
/// Provenance against the version it names; answers a `Parameters` resource.
pub(crate) fn verify(
    engine: &Engine,
    signer: &Signer,
    ctx: &RequestContext,
    provenance_id: &str,
) -> FhirResult<FhirResponse> {
    let provenance = engine
        .read(ctx, "Provenance", provenance_id)?
        .body
        .unwrap_or(Value::Null);
    let target = provenance["target"][0]["reference"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let parts: Vec<&str> = target.split('/').collect();
    let [ty, id, "_history", version] = parts.as_slice() else {
        return Err(FhirError::new(
            422,
            IssueType::Processing,
            format!(
                "the Provenance target {target:?} does not name a version (Type/id/_history/n)"
            ),
        ));
    };
    let signed = engine
        .vread(ctx, ty, id, version)?
        .body
        .unwrap_or(Value::Null);
    let payload = canonical_bytes(&signed);
    let signatures = provenance["signature"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if signatures.is_empty() {
        return Err(FhirError::new(
            422,
            IssueType::Processing,
            "the Provenance carries no signature",
        ));
    }
    let mut all_valid = true;
    let mut parts_out = vec![json!({"name": "target", "valueString": target})];
    for signature in &signatures {
        let data = signature["data"].as_str().unwrap_or("");
        let outcome = base64::engine::general_purpose::STANDARD
            .decode(data)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| "the signature data is not base64 of a compact JWS".to_owned())
            .and_then(|token| {
                jws::verify_detached(&token, &payload, &signer.jwks).map_err(|e| e.to_string())
            });
        let mut detail = vec![];
        match outcome {
            Ok(header) => {
                detail.push(json!({"name": "valid", "valueBoolean": true}));
                detail.push(json!({"name": "algorithm", "valueString": header.alg}));
                if let Some(kid) = header.kid {
                    detail.push(json!({"name": "kid", "valueString": kid}));
                }
            }
            Err(reason) => {
                all_valid = false;
                detail.push(json!({"name": "valid", "valueBoolean": false}));
                detail.push(json!({"name": "reason", "valueString": reason}));
            }
        }
        parts_out.push(json!({"name": "signature", "part": detail}));
    }
    parts_out.insert(0, json!({"name": "valid", "valueBoolean": all_valid}));
    Ok(FhirResponse::with_body(
        200,
        json!({"resourceType": "Parameters", "parameter": parts_out}),
    ))
}
