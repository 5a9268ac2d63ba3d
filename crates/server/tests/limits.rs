//! Limits of the HTTP layer: every exceeded limit is refused with a FHIR OperationOutcome and
//! the status a client can act on (413, 429, 503), nothing stored is affected, and the server
//! keeps serving other requests. Runs on SQLite and PostgreSQL.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Backend, Reply, TestData};
use phip_engine::{FhirResult, RuleContext, WriteRule};
use phip_security::token::Grant;
use phip_server::auth::{AuthMode, Authenticator};
use phip_server::limits::{Limits, RateLimit};
use phip_server::{AppState, ServerConfig};
use phip_store::WriteRequest;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// Holds writes of `Basic` resources for a while, counting those that entered, so that tests
/// can keep a request in flight for as long as they need.
struct SlowBasic {
    delay: Duration,
    entered: Arc<AtomicUsize>,
}

impl WriteRule for SlowBasic {
    fn name(&self) -> &str {
        "slow-basic"
    }

    fn applies_to(&self, resource_type: &str) -> bool {
        resource_type == "Basic"
    }

    fn check(&self, _: &mut RuleContext<'_>, _: &mut WriteRequest) -> FhirResult<()> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        Ok(())
    }
}

/// A server with `limits`, requiring tokens; `slow` delays writes of `Basic`.
struct Server {
    base: String,
    address: std::net::SocketAddr,
    client: reqwest::Client,
    auth: Arc<Authenticator>,
    token: String,
    entered: Arc<AtomicUsize>,
    shutdown: Option<oneshot::Sender<()>>,
    _data: TestData,
}

impl Server {
    async fn start(backend: Backend, limits: Limits, slow: Duration) -> Self {
        Self::start_with_body_limit(backend, limits, slow, 0).await
    }

    async fn start_with_body_limit(
        backend: Backend,
        limits: Limits,
        slow: Duration,
        max_body_bytes: usize,
    ) -> Self {
        let data = TestData::new(backend).await;
        let config = data.store.clone();
        let store = tokio::task::spawn_blocking(move || phip_store::open_store(&config))
            .await
            .expect("join")
            .expect("open store");
        let mut engine = phip_server::platform_engine(store, phip_engine::EngineConfig::default());
        let entered = Arc::new(AtomicUsize::new(0));
        engine.add_write_rule(Arc::new(SlowBasic {
            delay: slow,
            entered: entered.clone(),
        }));
        let auth = Arc::new(
            Authenticator::from_data_dir(data.dir.path(), None, Vec::new()).expect("auth"),
        );
        let engine = Arc::new(engine);
        let exporter = Arc::new(
            phip_bulk::Exporter::start(
                engine.clone(),
                data.dir.path(),
                phip_bulk::ExportConfig::default(),
            )
            .expect("exporter"),
        );
        let subscriptions = phip_subscriptions::Subscriptions::start(
            engine.clone(),
            data.dir.path(),
            phip_subscriptions::SubscriptionsConfig::default(),
        )
        .expect("subscriptions");
        let state = AppState::new(
            engine,
            ServerConfig {
                auth: AuthMode::Required(auth.clone()),
                public_base_url: None,
                max_body_bytes,
                node_name: "phip-test".into(),
            },
            None,
        )
        .with_limits(limits)
        .with_bulk_export(exporter)
        .with_subscriptions(subscriptions);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = phip_server::serve(listener, state, async {
                let _ = rx.await;
            })
            .await;
        });
        let token = mint(&auth, "client-a");
        Self {
            base: format!("http://{address}/fhir"),
            address,
            client: reqwest::Client::new(),
            auth,
            token,
            entered,
            shutdown: Some(tx),
            _data: data,
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>, token: &str) -> Reply {
        let url = if path.is_empty() {
            self.base.clone()
        } else {
            format!("{}/{path}", self.base)
        };
        let mut request = self.client.request(method, url).bearer_auth(token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/fhir+json")
                .body(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, &self.token).await
    }

    async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(
            Method::POST,
            path,
            Some(serde_json::to_vec(body).expect("json")),
            &self.token,
        )
        .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn mint(auth: &Authenticator, subject: &str) -> String {
    auth.mint(
        &Grant {
            sub: subject.into(),
            scope: "system/*.cruds".into(),
            ..Grant::default()
        },
        Duration::from_secs(600),
    )
    .expect("token")
    .token
}

fn issue_code(reply: &Reply) -> &str {
    reply.body["issue"][0]["code"].as_str().unwrap_or_default()
}

fn patient_with_note(bytes: usize) -> Value {
    json!({
        "resourceType": "Patient",
        "name": [{"family": "Li", "text": "x".repeat(bytes)}]
    })
}

async fn resource_bodies_are_held_to_the_smaller_limit_and_bundles_to_the_larger(backend: Backend) {
    let server = Server::start_with_body_limit(
        backend,
        Limits {
            max_resource_body_bytes: 64 * 1024,
            ..Limits::default()
        },
        Duration::ZERO,
        1024 * 1024,
    )
    .await;
    let big = patient_with_note(100 * 1024);
    let refused = server.post("Patient", &big).await;
    common::assert_outcome(&refused, 413);
    assert_eq!(issue_code(&refused), "too-long");
    // The unread rest of the body makes the connection unusable: the client must not reuse it.
    assert_eq!(refused.header("connection"), Some("close"));
    // The same resource inside a transaction bundle is within the bundle limit.
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": big, "request": {"method": "POST", "url": "Patient"}}]
    });
    let accepted = server.post("", &bundle).await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);
    // A bundle beyond the bundle limit is refused too.
    let huge = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": patient_with_note(2 * 1024 * 1024),
                   "request": {"method": "POST", "url": "Patient"}}]
    });
    common::assert_outcome(&server.post("", &huge).await, 413);
    // Only the accepted bundle's patient was stored.
    let search = server.get("Patient?_summary=count").await;
    assert_eq!(search.body["total"], 1, "{}", search.body);
}

/// A chunked body (no Content-Length) is cut off while reading, not after buffering it all.
async fn chunked_bodies_are_limited_while_reading(backend: Backend) {
    let server = Server::start(
        backend,
        Limits {
            max_resource_body_bytes: 64 * 1024,
            ..Limits::default()
        },
        Duration::ZERO,
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(server.address)
        .await
        .expect("connect");
    let head = format!(
        "POST /fhir/Patient HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\ncontent-type: application/fhir+json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        server.address, server.token
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![b' '; 16 * 1024];
    // Up to 1 MiB of chunks; the server answers (and may close) once it has seen 64 KiB.
    for _ in 0..64 {
        let frame = format!("{:x}\r\n", chunk.len());
        if stream.write_all(frame.as_bytes()).await.is_err()
            || stream.write_all(&chunk).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(
        text.contains("OperationOutcome") && text.contains("too-long"),
        "{text}"
    );
}

async fn clients_beyond_their_rate_get_429_with_retry_after(backend: Backend) {
    let server = Server::start(
        backend,
        Limits {
            // Practically no refill during the test: exactly the burst is allowed.
            rate_limit: Some(RateLimit {
                per_second: 0.01,
                burst: 3,
            }),
            ..Limits::default()
        },
        Duration::ZERO,
    )
    .await;
    for _ in 0..3 {
        assert_eq!(server.get("Patient").await.status, StatusCode::OK);
    }
    let refused = server.get("Patient").await;
    common::assert_outcome(&refused, 429);
    assert_eq!(issue_code(&refused), "throttled");
    let retry_after: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=100).contains(&retry_after), "{retry_after}");
    // Writes are counted too, and refused without being stored.
    common::assert_outcome(&server.post("Patient", &patient_with_note(1)).await, 429);
    // Another client has its own budget.
    let other = mint(&server.auth, "client-b");
    let reply = server
        .send(Method::GET, "Patient?_summary=count", None, &other)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body["total"], 0,
        "the refused write must not be stored"
    );
}

async fn requests_beyond_the_in_flight_limit_are_shed_with_503(backend: Backend) {
    let server = Arc::new(
        Server::start(
            backend,
            Limits {
                max_in_flight: 1,
                ..Limits::default()
            },
            Duration::from_secs(2),
        )
        .await,
    );
    let slow = {
        let server = server.clone();
        tokio::spawn(async move {
            server
                .post(
                    "Basic",
                    &json!({"resourceType": "Basic", "code": {"text": "slow"}}),
                )
                .await
        })
    };
    while server.entered.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let shed = server.get("Patient").await;
    common::assert_outcome(&shed, 503);
    assert_eq!(issue_code(&shed), "throttled");
    assert_eq!(shed.header("retry-after"), Some("1"));
    // Monitoring still sees the overloaded server.
    let metrics = server
        .client
        .get(format!("http://{}/metrics", server.address))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), StatusCode::OK);
    let first = slow.await.expect("join");
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    // Capacity is back once the slow request finished.
    assert_eq!(server.get("Patient").await.status, StatusCode::OK);
}

async fn one_client_cannot_hold_more_than_its_share_of_requests(backend: Backend) {
    let server = Arc::new(
        Server::start(
            backend,
            Limits {
                max_in_flight_per_client: 1,
                ..Limits::default()
            },
            Duration::from_secs(2),
        )
        .await,
    );
    let slow = {
        let server = server.clone();
        tokio::spawn(async move {
            server
                .post(
                    "Basic",
                    &json!({"resourceType": "Basic", "code": {"text": "slow"}}),
                )
                .await
        })
    };
    while server.entered.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The same client is refused while its request is in progress...
    let refused = server.get("Patient").await;
    common::assert_outcome(&refused, 429);
    assert_eq!(issue_code(&refused), "throttled");
    assert_eq!(refused.header("retry-after"), Some("1"));
    // ...another client is not.
    let other = mint(&server.auth, "client-b");
    let reply = server
        .send(Method::GET, "Patient?_summary=count", None, &other)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let first = slow.await.expect("join");
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(server.get("Patient").await.status, StatusCode::OK);
}

async fn requests_beyond_the_time_limit_get_503_timeout(backend: Backend) {
    let server = Server::start(
        backend,
        Limits {
            request_timeout: Some(Duration::from_millis(300)),
            ..Limits::default()
        },
        Duration::from_secs(2),
    )
    .await;
    let reply = server
        .post(
            "Basic",
            &json!({"resourceType": "Basic", "code": {"text": "slow"}}),
        )
        .await;
    common::assert_outcome(&reply, 503);
    assert_eq!(issue_code(&reply), "timeout");
    assert!(reply.header("retry-after").is_some());
    // Fast requests are unaffected.
    assert_eq!(server.get("Patient").await.status, StatusCode::OK);
}

/// `_count` above the maximum page size is clamped (FHIR: the server may return fewer), not
/// refused, and the page never holds more than the maximum.
async fn count_above_the_maximum_is_clamped(backend: Backend) {
    let server = Server::start(backend, Limits::default(), Duration::ZERO).await;
    let entries: Vec<Value> = (0..3)
        .map(|i| {
            json!({"resource": {"resourceType": "Patient", "name": [{"family": format!("P{i}")}]},
                   "request": {"method": "POST", "url": "Patient"}})
        })
        .collect();
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    assert_eq!(server.post("", &bundle).await.status, StatusCode::OK);
    let reply = server.get("Patient?_count=1000000").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.entries().len(), 3);
    let reply = server.get("Patient?_count=-5").await;
    common::assert_outcome(&reply, 400);
}

/// `/metrics` exposes the depths of the queues behind the API.
async fn metrics_expose_pool_subscription_and_export_queues(backend: Backend) {
    let server = Server::start(backend, Limits::default(), Duration::ZERO).await;
    let subscription = json!({
        "resourceType": "Subscription", "status": "requested", "reason": "metrics",
        "criteria": "Observation?code=1234-5",
        "channel": {"type": "websocket"}
    });
    let created = server.post("Subscription", &subscription).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let text = server
        .client
        .get(format!("http://{}/metrics", server.address))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let gauge = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
    };
    assert_eq!(gauge("phip_bulk_export_jobs_queued"), Some(0.0), "{text}");
    assert_eq!(gauge("phip_bulk_export_jobs_running"), Some(0.0), "{text}");
    assert!(gauge("phip_subscriptions_tracked").is_some(), "{text}");
    assert!(
        gauge("phip_subscription_backlog_changes").is_some(),
        "{text}"
    );
    match backend {
        Backend::Postgres | Backend::Citus => {
            assert_eq!(
                gauge("phip_store_pool_connections_max"),
                Some(8.0),
                "{text}"
            );
            let in_use = gauge("phip_store_pool_connections_in_use").expect("in use");
            let idle = gauge("phip_store_pool_connections_idle").expect("idle");
            assert!(in_use + idle >= 1.0, "{text}");
            assert_eq!(gauge("phip_store_pool_waiting"), Some(0.0), "{text}");
        }
        Backend::Sqlite => assert!(gauge("phip_store_pool_connections_max").is_none()),
    }
}

/// Sends a client-credentials request with an assertion no key signed (a failed sign-in).
async fn bad_token_request(server: &Server, forwarded_for: Option<&str>) -> Reply {
    let mut request = server
        .client
        .post(format!("http://{}/auth/token", server.address))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            "grant_type=client_credentials&scope=system%2F*.rs\
             &client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer\
             &client_assertion=eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJ4In0.AAAA",
        );
    if let Some(address) = forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    let response = request.send().await.expect("token request");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    Reply {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// Failed sign-ins are limited per client address, across `/auth/token` and `/portal/login`;
/// an address out of attempts is refused before its attempt is checked, and others are not
/// affected. Behind a trusted proxy, the address is the last `X-Forwarded-For` entry.
async fn failed_sign_ins_are_limited_per_address(backend: Backend) {
    let three_then_one_a_minute = Limits {
        failed_sign_ins: Some(RateLimit {
            per_second: 1.0 / 60.0,
            burst: 3,
        }),
        ..Limits::default()
    };
    let server = Server::start(backend, three_then_one_a_minute.clone(), Duration::ZERO).await;
    for attempt in 0..3 {
        // Naming another address is no way out when the proxy header is not trusted.
        let reply = bad_token_request(&server, Some(&format!("10.9.9.{attempt}"))).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
        assert_eq!(reply.body["error"], "invalid_client", "{}", reply.body);
    }
    let refused = bad_token_request(&server, None).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    assert_eq!(refused.body["error"], "invalid_request", "{}", refused.body);
    let retry: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    // The same address at the portal's sign-in: refused too, as a page a person can read.
    let page = server
        .client
        .post(format!("http://{}/portal/login", server.address))
        .form(&[("code", "AAAA-BBBB-CCCC")])
        .send()
        .await
        .expect("login");
    assert_eq!(page.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(page.headers().contains_key("retry-after"));
    let text = page.text().await.expect("page");
    assert!(text.contains("too many failed sign-ins"), "{text}");
    // The FHIR API, for a client that has its token, is not affected.
    assert_eq!(server.get("Patient").await.status, StatusCode::OK);

    let behind_proxy = Server::start(
        backend,
        Limits {
            trust_forwarded_for: true,
            ..three_then_one_a_minute
        },
        Duration::ZERO,
    )
    .await;
    for _ in 0..3 {
        let reply = bad_token_request(&behind_proxy, Some("203.0.113.7, 10.0.0.1")).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    }
    let refused = bad_token_request(&behind_proxy, Some("203.0.113.9, 10.0.0.1")).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the proxy appends the real client last: 10.0.0.1 is that client"
    );
    let other = bad_token_request(&behind_proxy, Some("10.0.0.2")).await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED, "{}", other.body);
}

/// Opens a raw connection and sends `text` (an incomplete request).
async fn send_raw(server: &Server, text: &str) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(server.address)
        .await
        .expect("connect");
    stream.write_all(text.as_bytes()).await.expect("write");
    stream
}

/// Everything the server sends until it closes the connection (at most `wait`; `None` if it
/// keeps the connection open that long).
async fn until_closed(stream: &mut tokio::net::TcpStream, wait: Duration) -> Option<String> {
    let mut response = Vec::new();
    match tokio::time::timeout(wait, stream.read_to_end(&mut response)).await {
        Ok(_) => Some(String::from_utf8_lossy(&response).into_owned()),
        Err(_) => None,
    }
}

/// Eight slow clients — four sending half a request head, four trickling a declared body one
/// byte at a time — against four in-flight permits: other clients are still served, because
/// a request takes its permit only once head and body are in.
async fn slow_clients_do_not_starve_the_others(backend: Backend) {
    let server = Server::start(
        backend,
        Limits {
            max_in_flight: 4,
            // Longer than the test: the slow clients are still sending when the others ask.
            header_read_timeout: Some(Duration::from_secs(60)),
            body_read_timeout: Some(Duration::from_secs(60)),
            ..Limits::default()
        },
        Duration::ZERO,
    )
    .await;
    let patient = server
        .post(
            "Patient",
            &json!({"resourceType": "Patient", "name": [{"family": "Slow"}]}),
        )
        .await;
    assert_eq!(patient.status, StatusCode::CREATED, "{}", patient.body);
    let id = patient.body["id"].as_str().expect("id").to_owned();
    let mut slow = Vec::new();
    for _ in 0..4 {
        slow.push(send_raw(&server, "GET /health HTTP/1.1\r\nhost: phip\r\nx-slow: ").await);
    }
    let mut tricklers = Vec::new();
    for _ in 0..4 {
        let mut stream = send_raw(
            &server,
            "POST /health HTTP/1.1\r\nhost: phip\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{",
        )
        .await;
        tricklers.push(tokio::spawn(async move {
            for _ in 0..600 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if stream.write_all(b" ").await.is_err() {
                    break;
                }
            }
        }));
    }
    // Let the slow requests reach the server (on the old code they took every permit here).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let health = server
        .client
        .get(format!("http://{}/health", server.address))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), StatusCode::OK);
    let read = server.get(&format!("Patient/{id}")).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["name"][0]["family"], "Slow");
    for trickler in tricklers {
        trickler.abort();
    }
    drop(slow);
}

/// A connection whose request head stays incomplete, or that sends nothing at all, is closed
/// by the server at its header deadline, without an answer.
async fn half_sent_request_heads_are_closed_at_the_deadline(backend: Backend) {
    let server = Server::start(
        backend,
        Limits {
            header_read_timeout: Some(Duration::from_secs(1)),
            ..Limits::default()
        },
        Duration::ZERO,
    )
    .await;
    let mut half = send_raw(&server, "GET /health HTTP/1.1\r\nhost: phip\r\nx-slow: a").await;
    let mut silent = send_raw(&server, "").await;
    let mut request_line = send_raw(&server, "GET /health HTTP/1.1\r\n").await;
    // A sender that keeps adding a header line every 200 ms never completes its head either.
    let drip = {
        let mut writer = send_raw(&server, "GET /health HTTP/1.1\r\n").await;
        tokio::spawn(async move {
            let mut response = Vec::new();
            for i in 0..300 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if writer
                    .write_all(format!("x-drip-{i}: 1\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), writer.read_to_end(&mut response))
                .await;
            String::from_utf8_lossy(&response).into_owned()
        })
    };
    for (name, stream) in [
        ("half-sent head", &mut half),
        ("silent connection", &mut silent),
        ("request line alone", &mut request_line),
    ] {
        let answer = until_closed(stream, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("the {name} is still open after 30 s"));
        assert!(!answer.contains("200 OK"), "{name}: {answer}");
    }
    let dripped = tokio::time::timeout(Duration::from_secs(60), drip)
        .await
        .expect("the dripping connection is closed")
        .expect("join");
    assert!(!dripped.contains("200 OK"), "{dripped}");
    // A complete request is answered as ever.
    let health = server
        .client
        .get(format!("http://{}/health", server.address))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), StatusCode::OK);
}

/// One response's first bytes from `stream` (the test's responses fit in one read).
async fn read_answer(stream: &mut tokio::net::TcpStream) -> String {
    let mut buffer = vec![0_u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
        .await
        .expect("an answer")
        .expect("read");
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

/// A pooled connection may idle longer than a new connection's head deadline and still carry
/// the next request (clients reusing it must not race the server's close); after the
/// keep-alive time it is closed.
async fn keep_alive_outlasts_the_first_head_deadline(backend: Backend) {
    let server = Server::start(
        backend,
        Limits {
            header_read_timeout: Some(Duration::from_secs(1)),
            keep_alive_timeout: Some(Duration::from_secs(4)),
            ..Limits::default()
        },
        Duration::ZERO,
    )
    .await;
    let request = "GET /health HTTP/1.1\r\nhost: phip\r\n\r\n";
    let mut stream = send_raw(&server, request).await;
    assert!(read_answer(&mut stream).await.contains("200 OK"));
    // Idle twice the first head's deadline: still open, and it answers the next request.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stream.write_all(request.as_bytes()).await.expect("write");
    assert!(read_answer(&mut stream).await.contains("200 OK"));
    // Idle beyond the keep-alive time: closed without an answer.
    let closed = until_closed(&mut stream, Duration::from_secs(30))
        .await
        .expect("the idle connection is closed");
    assert!(closed.is_empty(), "{closed}");
}

/// A declared body trickled one byte at a time is answered 408 (OperationOutcome, `timeout`)
/// at the body deadline, and the connection is closed; nothing is stored.
async fn trickled_bodies_get_408_at_the_deadline(backend: Backend) {
    let server = Server::start(
        backend,
        Limits {
            body_read_timeout: Some(Duration::from_secs(1)),
            ..Limits::default()
        },
        Duration::ZERO,
    )
    .await;
    let body =
        serde_json::to_vec(&json!({"resourceType": "Patient", "name": [{"family": "Trickle"}]}))
            .expect("json");
    let head = format!(
        "POST /fhir/Patient HTTP/1.1\r\nhost: phip\r\nauthorization: Bearer {}\r\ncontent-type: application/fhir+json\r\ncontent-length: {}\r\n\r\n",
        server.token,
        body.len()
    );
    let stream = send_raw(&server, &head).await;
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for byte in body {
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), reader.read_to_end(&mut response)).await;
    trickle.abort();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    let outcome: Value = text
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .expect("an OperationOutcome body");
    assert_eq!(outcome["resourceType"], "OperationOutcome", "{text}");
    assert_eq!(outcome["issue"][0]["code"], "timeout", "{text}");
    let search = server.get("Patient?_summary=count").await;
    assert_eq!(search.body["total"], 0, "{}", search.body);
    // A body sent at once is not affected.
    let created = server
        .post(
            "Patient",
            &json!({"resourceType": "Patient", "name": [{"family": "AtOnce"}]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
}

on_both_backends!(
    slow_clients_do_not_starve_the_others,
    keep_alive_outlasts_the_first_head_deadline,
    half_sent_request_heads_are_closed_at_the_deadline,
    trickled_bodies_get_408_at_the_deadline,
    failed_sign_ins_are_limited_per_address,
    metrics_expose_pool_subscription_and_export_queues,
    resource_bodies_are_held_to_the_smaller_limit_and_bundles_to_the_larger,
    chunked_bodies_are_limited_while_reading,
    clients_beyond_their_rate_get_429_with_retry_after,
    requests_beyond_the_in_flight_limit_are_shed_with_503,
    one_client_cannot_hold_more_than_its_share_of_requests,
    requests_beyond_the_time_limit_get_503_timeout,
    count_above_the_maximum_is_clamped,
);
