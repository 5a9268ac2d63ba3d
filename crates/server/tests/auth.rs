//! Authentication and authorisation over real HTTP: closed by default, SMART scopes per
//! context, the patient compartment (including through `_include`, `_revinclude`, chains,
//! `_has`, `$everything`, history and transactions), and the Backend Services token endpoint.

mod common;

use common::{assert_outcome, Backend, TestServer};
use phip_security::jws::{self, Algorithm, Jwks, PrivateKey, SigningKey};
use phip_security::token::Grant;
use phip_server::auth::RegisteredClient;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Two residents, a practitioner, observations of each.
struct World {
    alice: String,
    bob: String,
    doctor: String,
    alice_obs: String,
    bob_obs: String,
}

async fn world(server: &TestServer) -> World {
    let doctor = server
        .create(&json!({"resourceType": "Practitioner", "name": [{"family": "Hua"}]}))
        .await;
    let alice = server
        .create(
            &json!({"resourceType": "Patient", "name": [{"family": "Alice"}],
        "generalPractitioner": [{"reference": format!("Practitioner/{doctor}")}]}),
        )
        .await;
    let bob = server
        .create(&json!({"resourceType": "Patient", "name": [{"family": "Bob"}]}))
        .await;
    let observation = |patient: &str| {
        json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "performer": [{"reference": format!("Practitioner/{doctor}")}],
        "valueQuantity": {"value": 120, "unit": "mmHg"}})
    };
    let alice_obs = server.create(&observation(&alice)).await;
    let bob_obs = server.create(&observation(&bob)).await;
    World {
        alice,
        bob,
        doctor,
        alice_obs,
        bob_obs,
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn closed_by_default(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    for (method, path) in [
        (Method::GET, "Patient"),
        (Method::GET, "Patient/x"),
        (Method::POST, ""),
        (Method::GET, "_history"),
    ] {
        let reply = server
            .send(method.clone(), path, None, &[("authorization", "")])
            .await;
        assert_outcome(&reply, 401);
        assert!(
            reply
                .header("www-authenticate")
                .unwrap_or("")
                .starts_with("Bearer"),
            "{method} {path}"
        );
    }
    let garbage = server
        .send(
            Method::GET,
            "Patient",
            None,
            &[("authorization", "Bearer not.a.token")],
        )
        .await;
    assert_outcome(&garbage, 401);
    // A token signed by another key is refused.
    let other = TestServer::start_on(backend).await;
    let foreign = other.mint(Grant {
        sub: "x".into(),
        scope: "system/*.cruds".into(),
        ..Grant::default()
    });
    assert_outcome(
        &server
            .send(
                Method::GET,
                "Patient",
                None,
                &[("authorization", &bearer(&foreign))],
            )
            .await,
        401,
    );
    // Unauthenticated POST with a broken body is still a 401, not a parse error.
    let raw = server
        .client
        .post(server.url("Patient"))
        .header("content-type", "application/fhir+json")
        .body("{broken")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::UNAUTHORIZED);

    // Discovery and the capability statement are public.
    let metadata = server
        .send(Method::GET, "metadata", None, &[("authorization", "")])
        .await;
    assert_eq!(metadata.status, StatusCode::OK);
    assert_eq!(
        metadata.body["rest"][0]["security"]["service"][0]["coding"][0]["code"],
        "SMART-on-FHIR"
    );
    let smart = server
        .send(
            Method::GET,
            &format!("{}/.well-known/smart-configuration", server.root),
            None,
            &[("authorization", "")],
        )
        .await;
    assert_eq!(smart.status, StatusCode::OK);
    assert!(smart.body["token_endpoint"]
        .as_str()
        .unwrap()
        .ends_with("/auth/token"));
    let keys = server
        .send(
            Method::GET,
            &format!("{}/.well-known/jwks.json", server.root),
            None,
            &[("authorization", "")],
        )
        .await;
    assert!(keys.body["keys"].as_array().is_some_and(|k| !k.is_empty()));
}

async fn patient_scope_sees_only_the_residents_own_compartment(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let w = world(&server).await;
    let token = server.mint(Grant {
        sub: "alice".into(),
        scope: "patient/*.rs".into(),
        patient: Some(w.alice.clone()),
        ..Grant::default()
    });
    let auth = bearer(&token);
    let as_alice = |method: Method, path: String| {
        let auth = auth.clone();
        let server = &server;
        async move {
            server
                .send(method, &path, None, &[("authorization", auth.as_str())])
                .await
        }
    };

    assert_eq!(
        as_alice(Method::GET, format!("Patient/{}", w.alice))
            .await
            .status,
        StatusCode::OK
    );
    // Another resident's records do not exist for her: 404, as for an unknown id.
    assert_outcome(
        &as_alice(Method::GET, format!("Patient/{}", w.bob)).await,
        404,
    );
    assert_eq!(
        as_alice(Method::GET, format!("Observation/{}", w.alice_obs))
            .await
            .status,
        StatusCode::OK
    );
    assert_outcome(
        &as_alice(Method::GET, format!("Observation/{}", w.bob_obs)).await,
        404,
    );
    assert_outcome(
        &as_alice(Method::GET, format!("Observation/{}/_history/1", w.bob_obs)).await,
        404,
    );

    // Searches return only the compartment, whatever the criteria.
    let all = as_alice(Method::GET, "Observation?code=8480-6".into()).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.ids(), vec![w.alice_obs.clone()]);
    let patients = as_alice(Method::GET, "Patient".into()).await;
    assert_eq!(patients.ids(), vec![w.alice.clone()]);
    // _revinclude cannot reach Bob's data; _include of a resource outside the compartment
    // (the practitioner, not readable under patient/ scopes) is silently left out.
    let rev = as_alice(
        Method::GET,
        format!(
            "Patient?_id={},{}&_revinclude=Observation:subject",
            w.alice, w.bob
        ),
    )
    .await;
    let ids: Vec<String> = rev.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        ids.contains(&w.alice) && ids.contains(&w.alice_obs),
        "{ids:?}"
    );
    assert!(
        !ids.contains(&w.bob) && !ids.contains(&w.bob_obs),
        "{ids:?}"
    );
    let inc = as_alice(
        Method::GET,
        "Observation?_include=Observation:performer".into(),
    )
    .await;
    let ids: Vec<String> = inc.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !ids.contains(&w.doctor),
        "practitioner not in the compartment: {ids:?}"
    );
    // Chains and _has only select among the compartment's resources.
    let chained = as_alice(Method::GET, "Observation?subject:Patient.family=Bob".into()).await;
    assert!(chained.ids().is_empty());
    let has = as_alice(
        Method::GET,
        "Patient?_has:Observation:subject:code=8480-6".into(),
    )
    .await;
    assert_eq!(has.ids(), vec![w.alice.clone()]);
    // $everything: her own, not Bob's.
    let everything = as_alice(Method::GET, format!("Patient/{}/$everything", w.alice)).await;
    assert_eq!(everything.status, StatusCode::OK);
    assert!(everything.ids().contains(&w.alice_obs));
    assert!(!everything.ids().contains(&w.bob_obs));
    assert_outcome(
        &as_alice(Method::GET, format!("Patient/{}/$everything", w.bob)).await,
        404,
    );
    // History: instance history of another resident is not there, type history is filtered.
    assert_outcome(
        &as_alice(Method::GET, format!("Patient/{}/_history", w.bob)).await,
        404,
    );
    let history = as_alice(Method::GET, "Observation/_history".into()).await;
    let ids: Vec<&str> = history.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![w.alice_obs.as_str()]);
    // System search must name permitted types.
    assert_outcome(&as_alice(Method::GET, "?_id=x".into()).await, 403);

    // Read-only scopes cannot write, directly or in a transaction; nothing is stored.
    let create = server.send(Method::POST, "Observation", Some(&json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": format!("Patient/{}", w.alice)}})), &[("authorization", auth.as_str())]).await;
    assert_outcome(&create, 403);
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "sneaky"}, "subject": {"reference": format!("Patient/{}", w.alice)}}, "request": {"method": "POST", "url": "Observation"}}]});
    assert_outcome(
        &server
            .send(
                Method::POST,
                "",
                Some(&bundle),
                &[("authorization", auth.as_str())],
            )
            .await,
        403,
    );
    assert!(server
        .search_ids("Observation?code:text=sneaky")
        .await
        .is_empty());
}

async fn patient_write_scope_is_bounded_by_the_compartment(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let w = world(&server).await;
    let token = server.mint(Grant {
        sub: "alice".into(),
        scope: "patient/Observation.cruds patient/Patient.rs".into(),
        patient: Some(w.alice.clone()),
        ..Grant::default()
    });
    let auth = bearer(&token);
    let own = json!({"resourceType": "Observation", "status": "final", "code": {"text": "home BP"}, "subject": {"reference": format!("Patient/{}", w.alice)}});
    let reply = server
        .send(
            Method::POST,
            "Observation",
            Some(&own),
            &[("authorization", auth.as_str())],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let theirs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "forged"}, "subject": {"reference": format!("Patient/{}", w.bob)}});
    assert_outcome(
        &server
            .send(
                Method::POST,
                "Observation",
                Some(&theirs),
                &[("authorization", auth.as_str())],
            )
            .await,
        403,
    );
    // Deleting another resident's record deletes nothing, and says so as for an unknown id.
    let deleted = server
        .send(
            Method::DELETE,
            &format!("Observation/{}", w.bob_obs),
            None,
            &[("authorization", auth.as_str())],
        )
        .await;
    let unknown = server
        .send(
            Method::DELETE,
            "Observation/no-such-observation",
            None,
            &[("authorization", auth.as_str())],
        )
        .await;
    assert_eq!(deleted.status, unknown.status);
    assert_eq!(
        deleted.body["issue"][0]["diagnostics"],
        unknown.body["issue"][0]["diagnostics"]
    );
    // Moving one's own observation into another compartment is refused too.
    let mut moved = server
        .get(&format!("Observation/{}", w.alice_obs))
        .await
        .body;
    moved["subject"]["reference"] = json!(format!("Patient/{}", w.bob));
    assert_outcome(
        &server
            .send(
                Method::PUT,
                &format!("Observation/{}", w.alice_obs),
                Some(&moved),
                &[("authorization", auth.as_str())],
            )
            .await,
        403,
    );
    assert_outcome(
        &server
            .send(
                Method::POST,
                "Patient",
                Some(&json!({"resourceType": "Patient"})),
                &[("authorization", auth.as_str())],
            )
            .await,
        403,
    );
    assert_eq!(
        server
            .get(&format!("Observation/{}", w.bob_obs))
            .await
            .status,
        StatusCode::OK,
        "Bob's data untouched"
    );
}

async fn user_and_system_scopes_are_limited_to_their_types_and_interactions(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let w = world(&server).await;
    let user = bearer(&server.mint(Grant {
        sub: "clerk".into(),
        scope: "user/Patient.rs".into(),
        ..Grant::default()
    }));
    assert_eq!(
        server
            .send(
                Method::GET,
                "Patient",
                None,
                &[("authorization", user.as_str())]
            )
            .await
            .ids()
            .len(),
        2
    );
    assert_outcome(
        &server
            .send(
                Method::GET,
                "Observation",
                None,
                &[("authorization", user.as_str())],
            )
            .await,
        403,
    );
    assert_outcome(
        &server
            .send(
                Method::GET,
                &format!("Observation/{}", w.alice_obs),
                None,
                &[("authorization", user.as_str())],
            )
            .await,
        403,
    );
    // A chain or _has through a type the token cannot search is refused.
    assert_outcome(
        &server
            .send(
                Method::GET,
                "Patient?_has:Observation:subject:code=8480-6",
                None,
                &[("authorization", user.as_str())],
            )
            .await,
        403,
    );
    assert_outcome(
        &server
            .send(
                Method::GET,
                "Patient?general-practitioner.name=Hua",
                None,
                &[("authorization", user.as_str())],
            )
            .await,
        403,
    );
    // Includes of unreadable types are silently dropped.
    let inc = server
        .send(
            Method::GET,
            "Patient?_revinclude=Observation:subject",
            None,
            &[("authorization", user.as_str())],
        )
        .await;
    assert!(inc.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["resource"]["resourceType"] == "Patient"));
    assert_outcome(
        &server
            .send(
                Method::PUT,
                &format!("Patient/{}", w.alice),
                Some(&json!({"resourceType": "Patient", "id": w.alice})),
                &[("authorization", user.as_str())],
            )
            .await,
        403,
    );

    let system = bearer(&server.mint(Grant {
        sub: "lab-system".into(),
        scope: "system/Observation.cruds".into(),
        ..Grant::default()
    }));
    let created = server
        .send(
            Method::POST,
            "Observation",
            Some(&json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}})),
            &[("authorization", system.as_str())],
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_outcome(
        &server
            .send(
                Method::POST,
                "Patient",
                Some(&json!({"resourceType": "Patient"})),
                &[("authorization", system.as_str())],
            )
            .await,
        403,
    );
    assert_outcome(
        &server
            .send(
                Method::GET,
                &format!("Patient/{}", w.alice),
                None,
                &[("authorization", system.as_str())],
            )
            .await,
        403,
    );
    let history = server
        .send(
            Method::GET,
            "_history",
            None,
            &[("authorization", system.as_str())],
        )
        .await;
    assert!(
        history.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["resource"]["resourceType"] == "Observation"),
        "system history filtered to readable types"
    );
}

async fn backend_services_client_credentials(backend: Backend) {
    let key = SigningKey::new(
        "lab-key-1",
        PrivateKey::generate(Algorithm::Es256).expect("key"),
    );
    let client = RegisteredClient {
        client_id: "county-lab".into(),
        jwks: Jwks {
            keys: vec![key.public_jwk()],
        },
        scope: "system/Observation.cruds system/Patient.rs".into(),
        org: Some("org-lab".into()),
        division: Some("110102".into()),
    };
    let server = TestServer::start_with_clients(backend, vec![client]).await;
    let endpoint = format!("{}/auth/token", server.root);
    let assertion = |jti: &str, aud: &str| {
        let now = chrono::Utc::now().timestamp();
        let claims = json!({"iss": "county-lab", "sub": "county-lab", "aud": aud, "exp": now + 120, "jti": jti});
        jws::sign(&key, Some("JWT"), &serde_json::to_vec(&claims).unwrap())
    };
    let request = |assertion: String, scope: &str| {
        let form = format!(
            "grant_type=client_credentials&scope={}&client_assertion_type={}&client_assertion={}",
            form_urlencoded::byte_serialize(scope.as_bytes()).collect::<String>(),
            form_urlencoded::byte_serialize(
                b"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            )
            .collect::<String>(),
            assertion
        );
        server
            .client
            .post(&endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
    };
    let response = request(
        assertion("a-1", &endpoint),
        "system/Observation.cruds system/*.cruds",
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(
        body["scope"], "system/Observation.cruds",
        "only what the client is allowed"
    );
    let token = bearer(body["access_token"].as_str().unwrap());
    assert_eq!(
        server
            .send(
                Method::GET,
                "Observation",
                None,
                &[("authorization", token.as_str())]
            )
            .await
            .status,
        StatusCode::OK
    );
    assert_outcome(
        &server
            .send(
                Method::GET,
                "Encounter",
                None,
                &[("authorization", token.as_str())],
            )
            .await,
        403,
    );

    // Replayed, mis-addressed, or unknown-key assertions are refused.
    assert_eq!(
        request(assertion("a-1", &endpoint), "system/Observation.cruds")
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        request(
            assertion("a-2", "https://elsewhere/token"),
            "system/Observation.cruds"
        )
        .await
        .unwrap()
        .status(),
        StatusCode::UNAUTHORIZED
    );
    let stranger = SigningKey::new(
        "lab-key-1",
        PrivateKey::generate(Algorithm::Es256).expect("key"),
    );
    let forged = {
        let now = chrono::Utc::now().timestamp();
        let claims = json!({"iss": "county-lab", "sub": "county-lab", "aud": endpoint, "exp": now + 120, "jti": "a-3"});
        jws::sign(
            &stranger,
            Some("JWT"),
            &serde_json::to_vec(&claims).unwrap(),
        )
    };
    assert_eq!(
        request(forged, "system/Observation.cruds")
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let no_grant = server
        .client
        .post(&endpoint)
        .body("grant_type=password")
        .send()
        .await
        .unwrap();
    assert_eq!(no_grant.status(), StatusCode::BAD_REQUEST);
}

async fn residents_consent_denials_and_break_the_glass(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let w = world(&server).await;
    let clinician = |org: &str, roles: Vec<String>| {
        bearer(&server.mint(Grant {
            sub: format!("dr-{org}"),
            scope: "user/*.rs".into(),
            org: Some(org.into()),
            roles,
            ..Grant::default()
        }))
    };
    let county_hospital = clinician("county-hospital", Vec::new());
    let clinic = clinician("clinic-1", Vec::new());
    let read = |token: String, path: String, extra: Option<&'static str>| {
        let server = &server;
        async move {
            let mut headers = vec![("authorization", token.as_str())];
            if let Some(reason) = extra {
                headers.push(("x-break-glass", reason));
            }
            server.send(Method::GET, &path, None, &headers).await
        }
    };
    assert_eq!(
        read(
            county_hospital.clone(),
            format!("Patient/{}", w.alice),
            None
        )
        .await
        .status,
        StatusCode::OK,
        "shared by default"
    );

    // Alice denies the county hospital access to her records.
    let alice = bearer(&server.mint(Grant {
        sub: "alice".into(),
        scope: "patient/*.cruds".into(),
        patient: Some(w.alice.clone()),
        ..Grant::default()
    }));
    let consent = json!({
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{}", w.alice)},
        "provision": {"type": "deny", "actor": [{
            "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
            "reference": {"reference": "Organization/county-hospital"}}]}
    });
    let created = server
        .send(
            Method::POST,
            "Consent",
            Some(&consent),
            &[("authorization", alice.as_str())],
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);

    // Withheld records answer as unknown ones do (docs/security.md).
    assert_outcome(
        &read(
            county_hospital.clone(),
            format!("Patient/{}", w.alice),
            None,
        )
        .await,
        404,
    );
    assert_outcome(
        &read(
            county_hospital.clone(),
            format!("Observation/{}", w.alice_obs),
            None,
        )
        .await,
        404,
    );
    let search = read(county_hospital.clone(), "Observation".into(), None).await;
    assert_eq!(
        search.ids(),
        vec![w.bob_obs.clone()],
        "Alice's data withheld from searches"
    );
    let everything = read(
        county_hospital.clone(),
        format!("Patient/{}/$everything", w.alice),
        None,
    )
    .await;
    assert!(!everything.ids().contains(&w.alice_obs));
    // Other organisations, and Bob's records, are unaffected; Alice still sees her own.
    assert_eq!(
        read(clinic.clone(), format!("Patient/{}", w.alice), None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        read(county_hospital.clone(), format!("Patient/{}", w.bob), None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        read(alice.clone(), format!("Observation/{}", w.alice_obs), None)
            .await
            .status,
        StatusCode::OK
    );

    // Breaking the glass needs the emergency role and a reason, and is audited.
    assert_outcome(
        &read(
            county_hospital.clone(),
            format!("Patient/{}", w.alice),
            Some("unconscious in ER"),
        )
        .await,
        403,
    );
    let emergency = clinician("county-hospital", vec!["emergency".into()]);
    assert_outcome(
        &read(emergency.clone(), format!("Patient/{}", w.alice), Some(" ")).await,
        400,
    );
    let glass = read(
        emergency.clone(),
        format!("Patient/{}", w.alice),
        Some("unconscious in ER"),
    )
    .await;
    assert_eq!(glass.status, StatusCode::OK, "{}", glass.body);
    assert_outcome(
        &read(emergency, format!("Patient/{}", w.alice), None).await,
        404,
    );

    let trail = read(alice, "AuditEvent".into(), None).await;
    let broken: Vec<_> = trail
        .entries()
        .into_iter()
        .filter(|e| {
            e["purposeOfEvent"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["coding"][0]["code"] == "BTG")
        })
        .collect();
    assert_eq!(
        broken.len(),
        1,
        "the emergency access is flagged in Alice's trail: {}",
        trail.body
    );
    assert!(broken[0].to_string().contains("unconscious in ER"));
}

async fn records_are_visible_within_the_holders_region(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let alice = server
        .create(&json!({"resourceType": "Patient", "name": [{"family": "Alice"}]}))
        .await;
    let user = |org: &str, division: &str| {
        bearer(&server.mint(Grant {
            sub: format!("u-{org}"),
            scope: "user/*.cruds".into(),
            org: Some(org.into()),
            division: Some(division.into()),
            ..Grant::default()
        }))
    };
    // Xicheng district (Beijing 110102) records a result; it is tagged with its holder.
    let xicheng = user("xicheng-chc", "110102");
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "HbA1c"},
        "subject": {"reference": format!("Patient/{alice}")},
        "meta": {"tag": [{"system": "urn:phip:division", "code": "999999"}]}});
    let created = server
        .send(
            Method::POST,
            "Observation",
            Some(&obs),
            &[("authorization", xicheng.as_str())],
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let tags = created.body["meta"]["tag"].to_string();
    assert!(
        tags.contains("110102") && !tags.contains("999999"),
        "holder tags set by the server: {tags}"
    );
    assert!(tags.contains("xicheng-chc"));

    let get = |token: String| {
        let server = &server;
        let id = id.clone();
        async move {
            server
                .send(
                    Method::GET,
                    &format!("Observation/{id}"),
                    None,
                    &[("authorization", token.as_str())],
                )
                .await
        }
    };
    assert_eq!(get(xicheng.clone()).await.status, StatusCode::OK);
    assert_eq!(
        get(user("beijing-cdc", "110000")).await.status,
        StatusCode::OK,
        "the province sees its counties"
    );
    assert_outcome(&get(user("dongcheng-chc", "110101")).await, 404);
    assert_outcome(&get(user("pudong-hospital", "310115")).await, 404);
    let search = server
        .send(
            Method::GET,
            "Observation",
            None,
            &[("authorization", user("pudong-hospital", "310115").as_str())],
        )
        .await;
    assert!(
        search.ids().is_empty(),
        "withheld from other regions' searches"
    );
    // Nor can another region change it.
    let mut changed = created.body.clone();
    changed["status"] = json!("amended");
    assert_outcome(
        &server
            .send(
                Method::PUT,
                &format!("Observation/{id}"),
                Some(&changed),
                &[("authorization", user("pudong-hospital", "310115").as_str())],
            )
            .await,
        409,
    );

    // The resident's consent can open her records to a named institution elsewhere.
    let consent = json!({"resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{alice}")},
        "provision": {"type": "permit", "actor": [{
            "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
            "reference": {"reference": "Organization/pudong-hospital"}}]}});
    let alice_token = bearer(&server.mint(Grant {
        sub: "alice".into(),
        scope: "patient/*.cruds".into(),
        patient: Some(alice.clone()),
        ..Grant::default()
    }));
    assert_eq!(
        server
            .send(
                Method::POST,
                "Consent",
                Some(&consent),
                &[("authorization", alice_token.as_str())]
            )
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        get(user("pudong-hospital", "310115")).await.status,
        StatusCode::OK,
        "consent grants more"
    );
    assert_outcome(&get(user("dongcheng-chc", "110101")).await, 404);
}

on_both_backends!(
    records_are_visible_within_the_holders_region,
    residents_consent_denials_and_break_the_glass,
    closed_by_default,
    patient_scope_sees_only_the_residents_own_compartment,
    patient_write_scope_is_bounded_by_the_compartment,
    user_and_system_scopes_are_limited_to_their_types_and_interactions,
    backend_services_client_credentials
);

#[test]
fn tokens_of_a_trusted_external_issuer_are_accepted() {
    use phip_security::token::TokenIssuer;
    use phip_server::auth::Authenticator;
    let dir = tempfile::tempdir().expect("tempdir");
    let idp_key = SigningKey::new(
        "idp-1",
        PrivateKey::generate(Algorithm::Es256).expect("key"),
    );
    let idp_jwks = Jwks {
        keys: vec![idp_key.public_jwk()],
    };
    let idp = TokenIssuer::new("https://idp.province.example/", "urn:phip:fhir", idp_key);
    let grant = Grant {
        sub: "dr-external".into(),
        scope: "user/Patient.rs".into(),
        ..Grant::default()
    };
    let token = idp
        .mint(&grant, std::time::Duration::from_secs(300))
        .expect("mint")
        .token;

    let trusting = Authenticator::from_data_dir(
        dir.path(),
        None,
        vec![("https://idp.province.example/".into(), idp_jwks)],
    )
    .expect("auth");
    let principal = trusting.principal(&token).expect("accepted");
    assert_eq!(principal.subject, "dr-external");
    let other_dir = tempfile::tempdir().expect("tempdir");
    let closed = Authenticator::from_data_dir(other_dir.path(), None, Vec::new()).expect("auth");
    assert!(
        closed.principal(&token).is_err(),
        "unknown issuers are refused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn query_constrained_scopes_grant_nothing_until_enforced() {
    let server = TestServer::start().await;
    let w = world(&server).await;
    let token = bearer(&server.mint(Grant {
        sub: "lab-viewer".into(),
        scope: "user/Observation.rs?category=laboratory".into(),
        ..Grant::default()
    }));
    assert_outcome(
        &server
            .send(
                Method::GET,
                "Observation",
                None,
                &[("authorization", token.as_str())],
            )
            .await,
        403,
    );
    assert_outcome(
        &server
            .send(
                Method::GET,
                &format!("Observation/{}", w.alice_obs),
                None,
                &[("authorization", token.as_str())],
            )
            .await,
        403,
    );
}
