//! The residents' electronic health code over HTTP: issuing for the master record, the QR
//! image, `$verify` for scanners, revocation, the public JWKS and CRL for offline verifiers,
//! and who may do what — on both backends.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{assert_outcome, resident_id, Backend, Reply, TestServer};
use phip_healthcode::{numeric, qr, Crl, Refusal, Verifier};
use phip_security::jws::Jwks;
use phip_security::token::Grant;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const RESIDENT_ID: &str = "urn:oid:2.16.156.10011.1.1";
const HEALTH_CARD: &str = "https://phip.cn/fhir/sid/health-card";
const INSURANCE: &str = "https://phip.cn/fhir/sid/medical-insurance";
const MRN: &str = "https://phip.cn/fhir/sid/mrn/hospital-a";

struct Resident {
    source: String,
    golden: String,
    resident_id: String,
}

async fn register(server: &TestServer, mrn: &str, name: &str, birth: &str, seq: &str) -> Resident {
    let rid = resident_id("110105", &birth.replace('-', ""), seq);
    let source = server
        .create(&json!({
            "resourceType": "Patient",
            "identifier": [
                {"system": MRN, "value": mrn},
                {"system": RESIDENT_ID, "value": rid},
                {"system": HEALTH_CARD, "value": format!("HC-{mrn}")},
                {"system": INSURANCE, "value": format!("MI-{mrn}")}
            ],
            "name": [{"use": "official", "text": name}],
            "gender": "female",
            "birthDate": birth,
            "telecom": [{"system": "phone", "value": "13900000000"}]
        }))
        .await;
    let reply = server.get(&format!("Patient/{source}")).await;
    let golden = reply.body["link"]
        .as_array()
        .and_then(|links| links.iter().find(|l| l["type"] == "refer"))
        .and_then(|l| l["other"]["reference"].as_str())
        .and_then(|r| r.strip_prefix("Patient/"))
        .expect("golden record")
        .to_owned();
    Resident {
        source,
        golden,
        resident_id: rid,
    }
}

fn param<'a>(body: &'a Value, name: &str) -> Option<&'a Value> {
    body["parameter"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

fn text(body: &Value, name: &str) -> String {
    let p = param(body, name).unwrap_or_else(|| panic!("no parameter {name}: {body}"));
    ["valueString", "valueCode", "valueInstant"]
        .iter()
        .find_map(|k| p[*k].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn identifiers(body: &Value) -> Vec<(String, String)> {
    body["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == "identifier")
        .map(|p| {
            (
                p["valueIdentifier"]["system"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                p["valueIdentifier"]["value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

async fn issue(server: &TestServer, patient: &str, alg: &str) -> Value {
    let reply = server
        .get(&format!("Patient/{patient}/$health-code?alg={alg}"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    reply.body
}

async fn verify(server: &TestServer, code: &str) -> Reply {
    server
        .post(
            "Patient/$verify",
            &json!({"resourceType": "Parameters", "parameter": [{"name": "code", "valueString": code}]}),
        )
        .await
}

fn refusal(reply: &Reply) -> String {
    assert_outcome(reply, 422);
    reply.body["issue"][0]["details"]["coding"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn public_json(server: &TestServer, path: &str) -> (StatusCode, Value) {
    // No token: offline verifiers fetch these anonymously.
    let response = server
        .client
        .get(format!("{}/{path}", server.base))
        .send()
        .await
        .expect("request");
    let status = response.status();
    assert_eq!(
        response
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        (status == StatusCode::OK).then_some("*")
    );
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn issue_and_verify_for_the_master_record(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let wang = register(&server, "A1", "王芳", "1985-03-08", "224").await;
    for alg in ["ES256", "SM2SM3"] {
        let issued = issue(&server, &wang.source, alg).await;
        assert_eq!(
            param(&issued, "subject").unwrap()["valueReference"]["reference"],
            json!(format!("Patient/{}", wang.golden)),
            "bound to the master record, not the source"
        );
        assert_eq!(text(&issued, "algorithm"), alg);
        let jws = text(&issued, "verifiableCredential");
        let shc = text(&issued, "qrCode");
        assert_eq!(numeric::decode(&shc).unwrap(), jws);
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(jws.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["zip"], "DEF");
        assert_eq!(header["alg"], alg);
        // The code itself never holds the full resident ID or the phone number.
        let verified = verify(&server, &shc).await;
        assert_eq!(verified.status, StatusCode::OK, "{}", verified.body);
        assert_eq!(
            param(&verified.body, "valid").unwrap()["valueBoolean"],
            true
        );
        assert_eq!(
            param(&verified.body, "subject").unwrap()["valueReference"]["reference"],
            json!(format!("Patient/{}", wang.golden))
        );
        assert_eq!(
            param(&verified.body, "subject").unwrap()["valueReference"]["display"],
            "王芳"
        );
        assert_eq!(
            param(&verified.body, "birthDate").unwrap()["valueDate"],
            "1985-03-08"
        );
        // Multi-code fusion: registration, insurance settlement and prescriptions from one scan.
        let ids = identifiers(&verified.body);
        for expected in [
            (RESIDENT_ID, wang.resident_id.as_str()),
            (HEALTH_CARD, "HC-A1"),
            (INSURANCE, "MI-A1"),
            ("urn:phip:mpi:person", wang.golden.as_str()),
        ] {
            assert!(
                ids.contains(&(expected.0.to_owned(), expected.1.to_owned())),
                "{expected:?} in {ids:?}"
            );
        }
        assert!(
            !ids.iter().any(|(s, _)| s == MRN),
            "institution MRNs are not disclosed"
        );
        let expires =
            chrono::DateTime::parse_from_rfc3339(&text(&verified.body, "expires")).unwrap();
        let left = expires.timestamp() - now().await;
        assert!((250..=301).contains(&left), "a short-lived code: {left} s");
        // The JWS form is accepted as well as the shc:/ form.
        assert_eq!(verify(&server, &jws).await.status, StatusCode::OK);
    }
    // Issuing on the golden id gives a code for the same person.
    let on_golden = issue(&server, &wang.golden, "ES256").await;
    assert_eq!(
        param(&on_golden, "subject").unwrap()["valueReference"]["reference"],
        json!(format!("Patient/{}", wang.golden))
    );
    assert_outcome(
        &server.get("Patient/no-such-patient/$health-code").await,
        404,
    );
    assert_outcome(
        &server
            .get(&format!("Patient/{}/$health-code?alg=RS256", wang.source))
            .await,
        400,
    );
}

async fn tampered_and_foreign_codes_are_refused(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let li = register(&server, "B1", "李娜", "1990-07-01", "114").await;
    let zhao = register(&server, "B2", "赵敏", "1992-02-02", "226").await;
    let mine = text(
        &issue(&server, &li.source, "ES256").await,
        "verifiableCredential",
    );
    let theirs = text(
        &issue(&server, &zhao.source, "ES256").await,
        "verifiableCredential",
    );
    let m: Vec<&str> = mine.split('.').collect();
    let t: Vec<&str> = theirs.split('.').collect();
    // Zhao's payload under Li's signature.
    let swapped = format!("{}.{}.{}", m[0], t[1], m[2]);
    assert_eq!(refusal(&verify(&server, &swapped).await), "bad-signature");
    let mut signature = URL_SAFE_NO_PAD.decode(m[2]).unwrap();
    signature[3] ^= 0x80;
    let flipped = format!("{}.{}.{}", m[0], m[1], URL_SAFE_NO_PAD.encode(signature));
    assert_eq!(refusal(&verify(&server, &flipped).await), "bad-signature");
    // A code from another issuer (another server's keys).
    let other = TestServer::start_on(backend).await;
    let stranger = register(&other, "X1", "孙丽", "1970-01-01", "338").await;
    let foreign = text(&issue(&other, &stranger.source, "ES256").await, "qrCode");
    assert_eq!(refusal(&verify(&server, &foreign).await), "unknown-key");
    assert_eq!(refusal(&verify(&server, "shc:/123").await), "malformed");
    assert_eq!(refusal(&verify(&server, "hello").await), "malformed");
    // The request itself must name the code.
    assert_outcome(
        &server
            .post(
                "Patient/$verify",
                &json!({"resourceType": "Parameters", "parameter": []}),
            )
            .await,
        400,
    );
    assert_outcome(
        &server
            .post("Patient/$verify", &json!({"resourceType": "Patient"}))
            .await,
        400,
    );
}

async fn revocation_refuses_old_codes_and_publishes_a_crl(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let chen = register(&server, "C1", "陈静", "1978-11-30", "442").await;
    let other = register(&server, "C2", "周琳", "1981-04-04", "552").await;
    let (status, jwks) = public_json(&server, ".well-known/jwks.json").await;
    assert_eq!(status, StatusCode::OK);
    let jwks_text = jwks.to_string();
    let keys = Jwks::from_json(&jwks_text).unwrap();
    assert_eq!(keys.keys.len(), 2, "{jwks}");
    for key in &keys.keys {
        assert_eq!(key.kty, "EC");
        assert_eq!(key.use_.as_deref(), Some("sig"));
        assert_eq!(
            key.kid.as_deref(),
            Some(phip_healthcode::keys::thumbprint(key).unwrap().as_str())
        );
    }
    assert!(keys
        .keys
        .iter()
        .any(|k| k.alg.as_deref() == Some("ES256") && k.crv.as_deref() == Some("P-256")));
    assert!(keys
        .keys
        .iter()
        .any(|k| k.alg.as_deref() == Some("SM2SM3") && k.crv.as_deref() == Some("SM2")));
    let crl_version = |jwks: &Value| jwks["keys"][0]["crlVersion"].as_u64().unwrap();
    let version_before = crl_version(&jwks);

    let old = text(&issue(&server, &chen.source, "ES256").await, "qrCode");
    let bystander = text(&issue(&server, &other.source, "ES256").await, "qrCode");
    let old_sm2 = text(&issue(&server, &chen.source, "SM2SM3").await, "qrCode");
    // The resident revokes with their own token.
    let token = server.mint(Grant {
        sub: "chen".into(),
        scope: "patient/*.rs".into(),
        patient: Some(chen.source.clone()),
        ..Grant::default()
    });
    let auth = format!("Bearer {token}");
    let reply = server
        .send(
            Method::POST,
            &format!("Patient/{}/$health-code-revoke", chen.source),
            None,
            &[("authorization", auth.as_str())],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(refusal(&verify(&server, &old).await), "revoked");
    assert_eq!(refusal(&verify(&server, &old_sm2).await), "revoked");
    assert_eq!(verify(&server, &bystander).await.status, StatusCode::OK);
    // A refreshed code is valid again.
    let fresh = text(&issue(&server, &chen.source, "ES256").await, "qrCode");
    let reply = verify(&server, &fresh).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    // Offline: the published CRL refuses the old code and accepts the fresh one.
    let (_, jwks_after) = public_json(&server, ".well-known/jwks.json").await;
    assert_eq!(crl_version(&jwks_after), version_before + 1);
    let kid = jwks_after["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["alg"] == "ES256")
        .unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, crl) = public_json(&server, &format!(".well-known/crl/{kid}.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(crl["method"], "rid");
    assert_eq!(crl["ctr"], jwks_after["keys"][0]["crlVersion"]);
    assert_eq!(crl["rids"].as_array().unwrap().len(), 1, "{crl}");
    let crl = Crl::from_json(&crl.to_string()).unwrap();
    let offline = Verifier::new(Jwks::from_json(&jwks_after.to_string()).unwrap())
        .trust_issuer(&server.base)
        .with_crl(crl);
    let now = now().await;
    assert_eq!(offline.verify(&old, now).unwrap_err(), Refusal::Revoked);
    assert!(offline.verify(&fresh, now).is_ok());
    assert!(offline.verify(&bystander, now).is_ok());
    let (status, _) = public_json(&server, ".well-known/crl/unknown-kid.json").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn qr_images_decode_back_to_the_code(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let he = register(&server, "D1", "何敏", "2001-09-09", "662").await;
    let token = server.token.clone().unwrap();
    for (query, accept, content_type) in [
        ("?_format=image/png", "", "image/png"),
        ("", "image/png", "image/png"),
        ("?alg=SM2SM3", "image/svg+xml", "image/svg+xml"),
    ] {
        let mut request = server
            .client
            .get(format!(
                "{}/Patient/{}/$health-code{query}",
                server.base, he.source
            ))
            .bearer_auth(&token);
        if !accept.is_empty() {
            request = request.header("accept", accept);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            content_type
        );
        assert_eq!(
            response.headers()["cache-control"].to_str().unwrap(),
            "no-store"
        );
        let bytes = response.bytes().await.unwrap();
        if content_type == "image/png" {
            let scanned = qr::decode_png(&bytes).unwrap();
            let reply = verify(&server, &scanned).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            assert_eq!(
                param(&reply.body, "subject").unwrap()["valueReference"]["reference"],
                json!(format!("Patient/{}", he.golden))
            );
        } else {
            let svg = String::from_utf8(bytes.to_vec()).unwrap();
            assert!(svg.contains("<svg"), "{svg}");
        }
    }
    let reply = server
        .send(
            Method::GET,
            &format!("Patient/{}/$health-code?_format=application/xml", he.source),
            None,
            &[],
        )
        .await;
    assert_outcome(&reply, 406);
}

async fn who_may_issue_and_verify(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let alice = register(&server, "E1", "刘洋", "1995-05-05", "774").await;
    let bob = register(&server, "E2", "黄蕾", "1996-06-06", "884").await;
    let as_token = |grant: Grant| format!("Bearer {}", server.mint(grant));
    let resident = as_token(Grant {
        sub: "alice".into(),
        scope: "patient/*.rs".into(),
        patient: Some(alice.source.clone()),
        ..Grant::default()
    });
    let clinic = as_token(Grant {
        sub: "pharmacy-7".into(),
        scope: "user/Patient.rs".into(),
        ..Grant::default()
    });
    let get = |path: String, auth: String| {
        let server = &server;
        async move {
            server
                .send(
                    Method::GET,
                    &path,
                    None,
                    &[("authorization", auth.as_str())],
                )
                .await
        }
    };
    // The resident issues their own code, by source or master id.
    let own = get(
        format!("Patient/{}/$health-code", alice.source),
        resident.clone(),
    )
    .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    let own_golden = get(
        format!("Patient/{}/$health-code", alice.golden),
        resident.clone(),
    )
    .await;
    assert_eq!(own_golden.status, StatusCode::OK, "{}", own_golden.body);
    // …but not someone else's, nor revoke it: another resident's record does not exist for
    // them (404, as for an unknown id).
    assert_outcome(
        &get(
            format!("Patient/{}/$health-code", bob.source),
            resident.clone(),
        )
        .await,
        404,
    );
    let revoke = server
        .send(
            Method::POST,
            &format!("Patient/{}/$health-code-revoke", bob.source),
            None,
            &[("authorization", resident.as_str())],
        )
        .await;
    assert_outcome(&revoke, 404);
    // A clinic can verify but not hand out codes.
    assert_outcome(
        &get(
            format!("Patient/{}/$health-code", alice.source),
            clinic.clone(),
        )
        .await,
        403,
    );
    let code = text(&own.body, "qrCode");
    let body =
        json!({"resourceType": "Parameters", "parameter": [{"name": "code", "valueString": code}]});
    let verified = server
        .send(
            Method::POST,
            "Patient/$verify",
            Some(&body),
            &[("authorization", clinic.as_str())],
        )
        .await;
    assert_eq!(verified.status, StatusCode::OK, "{}", verified.body);
    // A resident's token cannot identify people from their codes.
    let refused = server
        .send(
            Method::POST,
            "Patient/$verify",
            Some(&body),
            &[("authorization", resident.as_str())],
        )
        .await;
    assert_outcome(&refused, 403);
    // Without a token at all: 401.
    let response = server
        .client
        .post(format!("{}/Patient/$verify", server.base))
        .header("content-type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

/// A server whose codes live one second and whose `$verify` allows no clock skew (the
/// shared harness uses the defaults: five minutes and sixty seconds); authentication off.
/// Returns its FHIR base URL and the data that must outlive it.
async fn short_lived_server(backend: Backend) -> (String, common::TestData) {
    use phip_server::health_code::{HealthCodeConfig, HealthCodes};
    let data = common::TestData::new(backend).await;
    let config = data.store.clone();
    let store = tokio::task::spawn_blocking(move || phip_store::open_store(&config))
        .await
        .unwrap()
        .unwrap();
    let engine = std::sync::Arc::new(phip_server::platform_engine(store, Default::default()));
    let ring = phip_security::keys::KeyRing::open(&data.path()).unwrap();
    let config = HealthCodeConfig {
        ttl_seconds: 1,
        leeway_seconds: 0,
        ..HealthCodeConfig::default()
    };
    let state = phip_server::AppState::new(
        engine,
        phip_server::ServerConfig {
            auth: phip_server::auth::AuthMode::Disabled,
            public_base_url: None,
            max_body_bytes: 0,
            node_name: "health-code-test".into(),
        },
        None,
    )
    .with_health_codes(HealthCodes::new(&ring, config).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = phip_server::serve(listener, state, std::future::pending()).await;
    });
    (format!("http://{address}/fhir"), data)
}

async fn expired_codes_are_refused(backend: Backend) {
    let (base, _data) = short_lived_server(backend).await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{base}/{path}"))
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
    };
    let created: Value = post(
        "Patient",
        json!({"resourceType": "Patient", "name": [{"text": "吴倩"}], "gender": "female",
               "birthDate": "1988-08-08",
               "identifier": [{"system": RESIDENT_ID, "value": resident_id("110105", "19880808", "996")}]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let id = created["id"].as_str().unwrap();
    let issued: Value = client
        .get(format!("{base}/Patient/{id}/$health-code"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let shc = text(&issued, "qrCode");
    let issued_at = chrono::DateTime::parse_from_rfc3339(&text(&issued, "issued")).unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(&text(&issued, "expires")).unwrap();
    assert_eq!(expires.timestamp() - issued_at.timestamp(), 1);
    // Wait until the code is certainly past its expiry (whole seconds).
    while now().await <= expires.timestamp() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let response = post(
        "Patient/$verify",
        json!({"resourceType": "Parameters", "parameter": [{"name": "code", "valueString": shc}]}),
    )
    .await
    .unwrap();
    let reply = Reply {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.json().await.unwrap(),
    };
    assert_eq!(refusal(&reply), "expired");
}

on_both_backends!(
    expired_codes_are_refused,
    issue_and_verify_for_the_master_record,
    tampered_and_foreign_codes_are_refused,
    revocation_refuses_old_codes_and_publishes_a_crl,
    qr_images_decode_back_to_the_code,
    who_may_issue_and_verify,
);
