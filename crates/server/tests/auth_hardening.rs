//! The lesser ways around authentication of issue #16 (item 11), each closed as a class: the
//! token endpoint's audience comes from configuration, never from `Host`; used client
//! assertions stay used across a restart; a hostile `Host` is never reflected; signing out of
//! the portal revokes the session and every token derived from it, durably; high-s ECDSA
//! signatures are refused; a resident's access log is not fooled by a look-alike subject.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::{assert_outcome, resident_id, Backend, TestData, TestServer};
use phip_engine::EngineConfig;
use phip_security::jws::{self, Algorithm, Jwks, PrivateKey, SigningKey};
use phip_security::token::{Grant, TokenError};
use phip_server::auth::{save_clients, AuthMode, Authenticator, RegisteredClient};
use phip_server::{AppState, ServerConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::oneshot;

const BASE_URL: &str = "https://hic.example.cn/fhir";
const BASE_TOKEN_ENDPOINT: &str = "https://hic.example.cn/auth/token";
/// Hosts no link may ever carry: each ends a URL, an attribute or a header, or is not an
/// authority at all.
const HOSTILE_HOSTS: &[&str] = &[
    "evil.example\"><script>alert(1)</script>",
    "evil.example/fhir?x=",
    "user@evil.example",
    "evil example",
    "<evil.example>",
    "evil.example:99999",
    "'evil.example'",
];

/// A server started by hand, on `listen`, with or without a public base URL.
struct Custom {
    root: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Custom {
    async fn start(data: &TestData, listen: &str, base_url: Option<&str>) -> Custom {
        let store_config = data.store.clone();
        let store = tokio::task::spawn_blocking(move || phip_store::open_store(&store_config))
            .await
            .expect("join")
            .expect("store");
        let engine = Arc::new(phip_server::platform_engine(store, EngineConfig::default()));
        let auth = Arc::new(
            Authenticator::from_data_dir(&data.path(), base_url, Vec::new()).expect("auth"),
        );
        let state = AppState::new(
            engine,
            ServerConfig {
                auth: AuthMode::Required(auth),
                public_base_url: base_url.map(str::to_owned),
                max_body_bytes: 0,
                node_name: "phip-test".into(),
            },
            None,
        );
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = phip_server::serve(listener, state, async {
                let _ = rx.await;
            })
            .await;
        });
        Custom {
            root: format!("http://127.0.0.1:{port}"),
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

fn lab_key() -> SigningKey {
    SigningKey::new(
        "lab-key-1",
        PrivateKey::generate(Algorithm::Es256).expect("key"),
    )
}

fn lab_client(key: &SigningKey) -> RegisteredClient {
    RegisteredClient {
        client_id: "county-lab".into(),
        jwks: Jwks {
            keys: vec![key.public_jwk()],
        },
        scope: "system/Observation.rs".into(),
        org: Some("org-lab".into()),
        division: Some("110102".into()),
    }
}

fn assertion(key: &SigningKey, aud: &str, jti: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"iss": "county-lab", "sub": "county-lab", "aud": aud,
        "exp": now + 120, "iat": now, "jti": jti});
    jws::sign(
        key,
        Some("JWT"),
        &serde_json::to_vec(&claims).expect("json"),
    )
}

/// Posts a client-credentials request to `{root}/auth/token`, optionally with another `Host`.
async fn token_request(root: &str, assertion: &str, host: Option<&str>) -> (StatusCode, Value) {
    let form = format!(
        "grant_type=client_credentials&scope=system%2FObservation.rs&client_assertion_type={}&client_assertion={assertion}",
        form_urlencoded::byte_serialize(b"urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            .collect::<String>(),
    );
    let mut request = reqwest::Client::new()
        .post(format!("{root}/auth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form);
    if let Some(host) = host {
        request = request.header("host", host);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// `GET {url}` with a `Host` header, returning status, headers and body text.
async fn get_with_host(url: &str, host: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut request = reqwest::Client::new().get(url).header("host", host);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    (response.status(), response.text().await.expect("body"))
}

/// The audience of a client assertion is this server's configured token endpoint: never the
/// URL a client-chosen `Host` makes up.
async fn the_assertion_audience_is_the_configured_token_endpoint(backend: Backend) {
    let key = lab_key();
    // No base URL, listening on one address: the endpoint is that address's URL.
    let server = TestServer::start_with_clients(backend, vec![lab_client(&key)]).await;
    let own = format!("{}/auth/token", server.root);
    let (status, body) = token_request(
        &server.root,
        &assertion(&key, "http://evil.example:8443/auth/token", "h-1"),
        Some("evil.example:8443"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client");
    let (status, body) = token_request(
        &server.root,
        &assertion(&key, &own, "h-2"),
        Some("evil.example:8443"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Discovery names the endpoint the audience must be, whatever the Host.
    let (status, text) = get_with_host(
        &format!("{}/.well-known/smart-configuration", server.root),
        "other.example:8443",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let discovery: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(discovery["token_endpoint"], own.as_str());

    // No base URL and listening on every interface: no single URL, so no backend-services
    // tokens, with a message saying what to configure.
    let data = TestData::new(backend).await;
    save_clients(&data.path(), &[lab_client(&key)]).expect("clients");
    let wildcard = Custom::start(&data, "0.0.0.0:0", None).await;
    let (status, body) = token_request(
        &wildcard.root,
        &assertion(&key, &format!("{}/auth/token", wildcard.root), "w-1"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("base_url")),
        "{body}"
    );
    wildcard.stop().await;

    // A configured base URL decides alone.
    let configured = Custom::start(&data, "127.0.0.1:0", Some(BASE_URL)).await;
    let local = format!("{}/auth/token", configured.root);
    let host = configured.root.trim_start_matches("http://").to_owned();
    let (status, body) = token_request(
        &configured.root,
        &assertion(&key, &local, "b-1"),
        Some(&host),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = token_request(
        &configured.root,
        &assertion(&key, BASE_TOKEN_ENDPOINT, "b-2"),
        Some("evil.example"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    configured.stop().await;
}

/// A client assertion is used once, also across a restart of the server.
async fn used_assertions_stay_used_after_a_restart(backend: Backend) {
    let key = lab_key();
    let data = TestData::new(backend).await;
    save_clients(&data.path(), &[lab_client(&key)]).expect("clients");
    let first = Custom::start(&data, "127.0.0.1:0", Some(BASE_URL)).await;
    let used = assertion(&key, BASE_TOKEN_ENDPOINT, "r-1");
    let (status, body) = token_request(&first.root, &used, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    first.stop().await;

    let second = Custom::start(&data, "127.0.0.1:0", Some(BASE_URL)).await;
    let (status, body) = token_request(&second.root, &used, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("already used")),
        "{body}"
    );
    let (status, body) = token_request(
        &second.root,
        &assertion(&key, BASE_TOKEN_ENDPOINT, "r-2"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    second.stop().await;
}

/// Without a base URL a `Host` that is not an authority is refused before anything can
/// reflect it; with one, `Host` is never used.
async fn a_hostile_host_is_never_reflected(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let token = server.token.clone().expect("token");
    for host in HOSTILE_HOSTS {
        for (path, token) in [
            ("/fhir/metadata", None),
            ("/.well-known/smart-configuration", None),
            ("/fhir/.well-known/smart-configuration", None),
            ("/fhir/Patient?_count=1", Some(token.as_str())),
            ("/health", None),
        ] {
            let (status, text) =
                get_with_host(&format!("{}{path}", server.root), host, token).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{host} {path}: {text}");
            assert!(!text.contains("evil"), "{host} {path}: {text}");
        }
        let created = reqwest::Client::new()
            .post(server.url("Patient"))
            .bearer_auth(&token)
            .header("host", *host)
            .header("content-type", "application/fhir+json")
            .body(r#"{"resourceType":"Patient"}"#)
            .send()
            .await
            .expect("request");
        assert_eq!(created.status(), StatusCode::BAD_REQUEST, "{host}");
        assert!(created.headers().get("location").is_none());
        let body: Value = created.json().await.expect("outcome");
        assert_eq!(body["resourceType"], "OperationOutcome");
    }
    // A plain authority is still how a development server names itself.
    let (status, text) = get_with_host(
        &format!("{}/fhir/metadata", server.root),
        "other.example:8443",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("http://other.example:8443/fhir"), "{text}");

    // With a base URL, Host does not matter and never appears.
    let data = TestData::new(backend).await;
    let configured = Custom::start(&data, "127.0.0.1:0", Some(BASE_URL)).await;
    let auth =
        Authenticator::from_data_dir(&data.path(), Some(BASE_URL), Vec::new()).expect("auth");
    let system = auth
        .mint(
            &Grant {
                sub: "operator".into(),
                scope: "system/*.cruds".into(),
                ..Grant::default()
            },
            Duration::from_secs(600),
        )
        .expect("mint")
        .token;
    for host in HOSTILE_HOSTS {
        for path in [
            "/fhir/metadata",
            "/.well-known/smart-configuration",
            "/fhir/Patient?_count=1",
        ] {
            let (status, text) =
                get_with_host(&format!("{}{path}", configured.root), host, Some(&system)).await;
            assert_eq!(status, StatusCode::OK, "{host} {path}: {text}");
            assert!(!text.contains("evil"), "{host} {path}: {text}");
            assert!(text.contains("https://hic.example.cn/"), "{path}: {text}");
        }
        let created = reqwest::Client::new()
            .post(format!("{}/fhir/Patient", configured.root))
            .bearer_auth(&system)
            .header("host", *host)
            .header("content-type", "application/fhir+json")
            .body(r#"{"resourceType":"Patient"}"#)
            .send()
            .await
            .expect("request");
        assert_eq!(created.status(), StatusCode::CREATED, "{host}");
        let location = created.headers()["location"].to_str().expect("text");
        assert!(location.starts_with(BASE_URL), "{location}");
    }
    configured.stop().await;
}

/// An access token whose ECDSA signature is turned into its other valid form (s → n − s) is
/// not a token.
async fn a_high_s_access_token_is_refused(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let token = server.token.clone().expect("token");
    let ok = server.get("Patient?_count=1").await;
    assert_eq!(ok.status, StatusCode::OK);
    let flipped = format!("Bearer {}", phip_testkit::jose::flip_s(&token));
    let reply = server
        .send(
            reqwest::Method::GET,
            "Patient?_count=1",
            None,
            &[("authorization", flipped.as_str())],
        )
        .await;
    assert_outcome(&reply, 401);
}

// ---- the portal ----

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A resident registered by a system token; returns (source record, golden record).
async fn resident(server: &TestServer, sequence: &str) -> (String, String) {
    let rid = resident_id("110105", "19620718", sequence);
    let source = server
        .create(&json!({"resourceType": "Patient",
            "identifier": [{"system": "urn:oid:2.16.156.10011.1.1", "value": rid}],
            "name": [{"text": "张秀英"}], "gender": "female", "birthDate": "1962-07-18"}))
        .await;
    let golden = server
        .get(&format!(
            "Patient?_master=true&identifier=urn:oid:2.16.156.10011.1.1|{rid}"
        ))
        .await
        .ids();
    assert_eq!(golden.len(), 1);
    (source, golden[0].clone())
}

/// Signs `patient` in at the portal; returns the session cookie and its token.
async fn sign_in(server: &TestServer, patient: &str) -> (String, String) {
    let issued = server
        .client
        .post(format!("{}/portal/one-time-code", server.root))
        .bearer_auth(server.token.as_deref().expect("token"))
        .json(&json!({"patient": patient}))
        .send()
        .await
        .expect("request");
    assert_eq!(issued.status(), StatusCode::CREATED);
    let code: Value = issued.json().await.expect("json");
    let login = no_redirects()
        .post(format!("{}/portal/login", server.root))
        .form(&[("code", code["code"].as_str().expect("code"))])
        .send()
        .await
        .expect("request");
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .expect("text")
        .split(';')
        .next()
        .expect("cookie")
        .to_owned();
    let token = cookie
        .strip_prefix("phip_portal=")
        .expect("session cookie")
        .to_owned();
    (cookie, token)
}

async fn portal_page(server: &TestServer, cookie: &str, path: &str) -> (StatusCode, String) {
    let reply = no_redirects()
        .get(format!("{}{path}", server.root))
        .header("cookie", cookie)
        .send()
        .await
        .expect("request");
    let status = reply.status();
    let location = reply
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = reply.text().await.expect("body");
    (status, if location.is_empty() { text } else { location })
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("claims")
}

fn csrf_of(html: &str) -> String {
    let field = "name=\"csrf\" value=\"";
    let start = html.find(field).expect("csrf field") + field.len();
    html[start..].split('"').next().expect("value").to_owned()
}

async fn api_status(server: &TestServer, token: &str, path: &str) -> StatusCode {
    let bearer = format!("Bearer {token}");
    server
        .send(
            reqwest::Method::GET,
            path,
            None,
            &[("authorization", bearer.as_str())],
        )
        .await
        .status
}

/// Signing out revokes the session: its cookie token and the tokens derived from it (bound to
/// the resident's source records, same `sid`) are refused in the portal and at the FHIR API,
/// also by a server started afterwards on the same data directory. Other sessions go on.
async fn signing_out_revokes_the_session(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let (source, golden) = resident(&server, "246").await;
    let (cookie, token) = sign_in(&server, &source).await;
    let (other_cookie, other_token) = sign_in(&server, &source).await;
    let claims = claims_of(&token);
    let sid = claims["sid"]
        .as_str()
        .expect("the session token names its session");
    assert_ne!(claims_of(&other_token)["sid"], claims["sid"]);
    // What the portal derives for a source record: same subject and session.
    let derived = server.mint(Grant {
        sub: claims["sub"].as_str().expect("sub").to_owned(),
        scope: "patient/*.rs".into(),
        patient: Some(source.clone()),
        session: Some(sid.to_owned()),
        ..Grant::default()
    });
    let (status, home) = portal_page(&server, &cookie, "/portal/me").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        api_status(&server, &token, &format!("Patient/{golden}")).await,
        StatusCode::OK
    );
    assert_eq!(
        api_status(&server, &derived, &format!("Patient/{source}")).await,
        StatusCode::OK
    );

    // Sign-out needs the session's form token, like every other form.
    let forged = no_redirects()
        .post(format!("{}/portal/logout", server.root))
        .header("cookie", &cookie)
        .form(&[("csrf", "0000")])
        .send()
        .await
        .expect("request");
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        api_status(&server, &token, &format!("Patient/{golden}")).await,
        StatusCode::OK
    );
    let out = no_redirects()
        .post(format!("{}/portal/logout", server.root))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf_of(&home).as_str())])
        .send()
        .await
        .expect("request");
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(out.headers()["location"], "/portal/login");

    // The old cookie no longer opens a page, and its token no longer reads anything.
    let (status, location) = portal_page(&server, &cookie, "/portal/me").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/portal/login");
    assert_eq!(
        api_status(&server, &token, &format!("Patient/{golden}")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api_status(&server, &derived, &format!("Patient/{source}")).await,
        StatusCode::UNAUTHORIZED
    );
    // After a restart too.
    let restarted =
        Authenticator::from_data_dir(server.data_dir(), None, Vec::new()).expect("auth");
    assert_eq!(restarted.claims(&token), Err(TokenError::Revoked));
    assert_eq!(restarted.claims(&derived), Err(TokenError::Revoked));
    // The resident's other session is untouched.
    assert!(restarted.principal(&other_token).is_ok());
    let (status, _) = portal_page(&server, &other_cookie, "/portal/me").await;
    assert_eq!(status, StatusCode::OK);
}

/// The resident's "who accessed my records" hides only the resident's own session and the
/// portal's sign-in service, told apart by their whole recorded identity: an organisation's
/// user whose subject is the resident's is listed.
async fn the_access_log_is_not_fooled_by_a_lookalike_subject(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let (source, _golden) = resident(&server, "352").await;
    let (cookie, token) = sign_in(&server, &source).await;
    let me = claims_of(&token)["sub"].as_str().expect("sub").to_owned();
    let lookalike = server.mint(Grant {
        sub: me,
        scope: "user/*.rs".into(),
        org: Some("lookalike-org".into()),
        ..Grant::default()
    });
    assert_eq!(
        api_status(&server, &lookalike, &format!("Patient/{source}")).await,
        StatusCode::OK
    );
    let (status, home) = portal_page(&server, &cookie, "/portal/me").await;
    assert_eq!(status, StatusCode::OK);
    assert!(home.contains("lookalike-org"), "{home}");
}

on_both_backends!(
    the_assertion_audience_is_the_configured_token_endpoint,
    used_assertions_stay_used_after_a_restart,
    a_hostile_host_is_never_reflected,
    a_high_s_access_token_is_refused,
    signing_out_revokes_the_session,
    the_access_log_is_not_fooled_by_a_lookalike_subject,
);
