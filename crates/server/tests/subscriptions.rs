//! FHIR R4 Subscriptions end to end: a real server with its dispatcher, real rest-hook
//! receivers and websocket clients on loopback ports, on SQLite and PostgreSQL.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use common::Backend;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use phip_engine::{Engine, EngineConfig};
use phip_security::token::Grant;
use phip_server::auth::{AuthMode, Authenticator};
use phip_server::{AppState, ServerConfig};
use phip_store::open_store;
use phip_subscriptions::{Subscriptions, SubscriptionsConfig};
use serde_json::{json, Value};
use tokio::sync::oneshot;

const CODE: &str = "8867-4";
const OTHER_CODE: &str = "9279-1";

/// A data directory and store that outlive one server run.
type Env = common::TestData;

impl Env {
    /// Starts a server with its dispatcher on this data directory and store; rest-hooks may
    /// reach loopback, where the tests' receivers run.
    async fn start(&self) -> Node {
        self.start_allowing(vec!["127.0.0.1".parse().expect("network")])
            .await
    }

    /// Starts a server whose rest-hooks may reach the public internet and `allowed`.
    async fn start_allowing(&self, allowed: Vec<phip_subscriptions::AllowedNetwork>) -> Node {
        let config = self.store.clone();
        let store = tokio::task::spawn_blocking(move || open_store(&config))
            .await
            .expect("join")
            .expect("open store");
        let engine = Arc::new(Engine::new(store, EngineConfig::default()));
        let auth = Arc::new(
            Authenticator::from_data_dir(self.dir.path(), None, Vec::new()).expect("auth"),
        );
        let subscriptions = Subscriptions::start(
            engine.clone(),
            self.dir.path(),
            SubscriptionsConfig {
                poll_interval: Duration::from_millis(100),
                overlap: Duration::from_secs(2),
                http_timeout: Duration::from_secs(2),
                failures_before_error: 2,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(400),
                owner_grace: Duration::from_secs(1),
                allow_private_endpoints: allowed,
                ..SubscriptionsConfig::default()
            },
        )
        .expect("subscriptions");
        let state = AppState::new(
            engine,
            ServerConfig {
                auth: AuthMode::Required(auth.clone()),
                public_base_url: None,
                max_body_bytes: 0,
                node_name: "phip-test".into(),
            },
            None,
        )
        .with_subscriptions(subscriptions.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = phip_server::serve(listener, state, async {
                let _ = rx.await;
            })
            .await;
        });
        let node = Node {
            address,
            client: reqwest::Client::new(),
            auth,
            subscriptions,
            shutdown: Some(tx),
            server: Some(server),
            token: String::new(),
        };
        let token = node.mint("system/*.cruds", None, None);
        Node { token, ..node }
    }
}

/// A running server.
struct Node {
    address: SocketAddr,
    client: reqwest::Client,
    auth: Arc<Authenticator>,
    subscriptions: Arc<Subscriptions>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    token: String,
}

impl Node {
    fn mint(&self, scope: &str, org: Option<&str>, division: Option<&str>) -> String {
        self.auth
            .mint(
                &Grant {
                    sub: format!("user-{}", org.unwrap_or("system")),
                    scope: scope.into(),
                    org: org.map(str::to_owned),
                    division: division.map(str::to_owned),
                    ..Grant::default()
                },
                Duration::from_secs(600),
            )
            .expect("mint")
            .token
    }

    fn url(&self, path: &str) -> String {
        if path.is_empty() {
            format!("http://{}/fhir", self.address)
        } else {
            format!("http://{}/fhir/{path}", self.address)
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        token: &str,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/fhir+json")
                .body(serde_json::to_vec(body).expect("json"));
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let bytes = response.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (StatusCode::from_u16(status.as_u16()).expect("status"), body)
    }

    /// Creates a resource as `token`'s holder and returns its id.
    async fn create_as(&self, resource: &Value, token: &str) -> String {
        let resource_type = resource["resourceType"].as_str().expect("type");
        let (status, body) = self
            .send(reqwest::Method::POST, resource_type, Some(resource), token)
            .await;
        assert_eq!(status, StatusCode::CREATED, "create failed: {body}");
        body["id"].as_str().expect("id").to_owned()
    }

    async fn create(&self, resource: &Value) -> String {
        self.create_as(resource, &self.token).await
    }

    async fn subscription(&self, id: &str) -> Value {
        let (status, body) = self
            .send(
                reqwest::Method::GET,
                &format!("Subscription/{id}"),
                None,
                &self.token,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Waits until the Subscription's status is `status`, returning it.
    async fn wait_status(&self, id: &str, status: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..300 {
            last = self.subscription(id).await;
            if last["status"] == status {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("Subscription/{id} never became {status}: {last}");
    }

    /// Stops the dispatcher and the server.
    async fn stop(mut self) {
        self.subscriptions.shutdown().await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

/// What a rest-hook receiver got.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    secret: Option<String>,
    body: Value,
}

/// A rest-hook receiver on a loopback port.
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Receiver {
    async fn start(listener: tokio::net::TcpListener) -> Receiver {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        async fn record(
            State(got): State<Arc<Mutex<Vec<Received>>>>,
            method: axum::http::Method,
            uri: axum::http::Uri,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> StatusCode {
            got.lock().push(Received {
                method: method.to_string(),
                path: uri.path().to_owned(),
                secret: headers
                    .get("x-secret")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            });
            StatusCode::OK
        }
        async fn record_path(
            state: State<Arc<Mutex<Vec<Received>>>>,
            _path: Path<(String, String)>,
            method: axum::http::Method,
            uri: axum::http::Uri,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> StatusCode {
            record(state, method, uri, headers, body).await
        }
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(record))
            .route("/hook/{type}/{id}", axum::routing::put(record_path))
            .with_state(got.clone());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Receiver {
            got,
            shutdown: Some(tx),
        }
    }

    /// Ids of the resources PUT to the receiver.
    fn ids(&self) -> BTreeSet<String> {
        self.got
            .lock()
            .iter()
            .filter(|r| r.method == "PUT")
            .filter_map(|r| r.body["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Waits until every id in `expected` has arrived.
    async fn wait_for(&self, expected: &BTreeSet<String>) {
        for _ in 0..400 {
            if self.ids().is_superset(expected) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("expected {expected:?}, received {:?}", self.ids());
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn observation(code: &str, patient: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "valueQuantity": {"value": 72, "unit": "/min"}
    })
}

fn rest_hook(address: SocketAddr, payload: bool) -> Value {
    let mut channel = json!({
        "type": "rest-hook",
        "endpoint": format!("http://{address}/hook"),
        "header": ["X-Secret: s3cret"]
    });
    if payload {
        channel["payload"] = json!("application/fhir+json");
    }
    json!({
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "test",
        "criteria": format!("Observation?code=http://loinc.org|{CODE}"),
        "channel": channel
    })
}

async fn loopback() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
}

async fn rest_hook_delivers_matching_resources(backend: Backend) {
    let env = Env::new(backend).await;
    let node = env.start().await;
    let listener = loopback().await;
    let address = listener.local_addr().expect("address");
    let receiver = Receiver::start(listener).await;
    // An endpoint that is not http(s) is refused before it is stored.
    let mut bad = rest_hook(address, true);
    bad["channel"]["endpoint"] = json!("file:///etc/passwd");
    let (status, body) = node
        .send(
            reqwest::Method::POST,
            "Subscription",
            Some(&bad),
            &node.token,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["resourceType"], "OperationOutcome");

    let full = node.create(&rest_hook(address, true)).await;
    let empty = node.create(&rest_hook(address, false)).await;
    node.wait_status(&full, "active").await;
    node.wait_status(&empty, "active").await;

    let mut matching = BTreeSet::new();
    for i in 0..3 {
        matching.insert(node.create(&observation(CODE, &format!("p{i}"))).await);
        node.create(&observation(OTHER_CODE, &format!("p{i}")))
            .await;
    }
    node.create(&json!({"resourceType": "Patient", "active": true}))
        .await;
    receiver.wait_for(&matching).await;
    // The empty notifications (no payload) arrive too: one POST per matching change.
    for _ in 0..100 {
        if receiver
            .got
            .lock()
            .iter()
            .filter(|r| r.method == "POST")
            .count()
            >= 3
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Anything non-matching would have been dispatched in commit order before the last match.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = receiver.got.lock().clone();
    assert_eq!(receiver.ids(), matching);
    let posts: Vec<&Received> = got.iter().filter(|r| r.method == "POST").collect();
    assert!(posts.len() >= 3, "{posts:?}");
    for r in &got {
        assert_eq!(r.secret.as_deref(), Some("s3cret"), "{r:?}");
        match r.method.as_str() {
            "PUT" => {
                assert_eq!(r.body["resourceType"], "Observation");
                assert_eq!(
                    r.path,
                    format!("/hook/Observation/{}", r.body["id"].as_str().unwrap_or(""))
                );
                assert_eq!(r.body["code"]["coding"][0]["code"], CODE);
            }
            "POST" => assert_eq!(r.body, Value::Null, "an empty notification has no body"),
            other => panic!("unexpected {other}"),
        }
    }
    node.stop().await;
}

async fn down_subscriber_receives_everything_later(backend: Backend) {
    let env = Env::new(backend).await;
    let node = env.start().await;
    // Reserve a port, then close it: the subscriber is down.
    let address = loopback().await.local_addr().expect("address");
    let id = node.create(&rest_hook(address, true)).await;
    node.wait_status(&id, "active").await;
    let mut matching = BTreeSet::new();
    for i in 0..10 {
        matching.insert(node.create(&observation(CODE, &format!("p{i}"))).await);
    }
    let errored = node.wait_status(&id, "error").await;
    let text = errored["error"].as_str().unwrap_or_default();
    assert!(text.contains("delivery attempts failed"), "{errored}");

    let receiver = Receiver::start(
        tokio::net::TcpListener::bind(address)
            .await
            .expect("the subscriber's port again"),
    )
    .await;
    receiver.wait_for(&matching).await;
    let active = node.wait_status(&id, "active").await;
    assert!(active.get("error").is_none(), "{active}");
    node.stop().await;
}

async fn pending_notifications_survive_a_restart(backend: Backend) {
    let env = Env::new(backend).await;
    let node = env.start().await;
    let address = loopback().await.local_addr().expect("address");
    let id = node.create(&rest_hook(address, true)).await;
    node.wait_status(&id, "active").await;
    let mut matching = BTreeSet::new();
    for i in 0..5 {
        matching.insert(node.create(&observation(CODE, &format!("p{i}"))).await);
    }
    node.wait_status(&id, "error").await;
    node.stop().await;

    let receiver = Receiver::start(
        tokio::net::TcpListener::bind(address)
            .await
            .expect("the subscriber's port again"),
    )
    .await;
    let node = env.start().await;
    receiver.wait_for(&matching).await;
    node.wait_status(&id, "active").await;
    node.stop().await;
}

async fn nothing_the_subscriber_may_not_see(backend: Backend) {
    let env = Env::new(backend).await;
    let node = env.start().await;
    let listener = loopback().await;
    let address = listener.local_addr().expect("address");
    let receiver = Receiver::start(listener).await;
    // A Beijing user subscribes; records held in Shanghai are outside their region.
    let subscriber = node.mint(
        "user/Observation.rs user/Subscription.cruds",
        Some("org-bj"),
        Some("110000"),
    );
    let beijing = node.mint("system/*.cruds", Some("hosp-bj"), Some("110101"));
    let shanghai = node.mint("system/*.cruds", Some("hosp-sh"), Some("310101"));
    let id = node.create_as(&rest_hook(address, true), &subscriber).await;
    node.wait_status(&id, "active").await;

    let hidden = node.create_as(&observation(CODE, "b"), &shanghai).await;
    let visible = node.create_as(&observation(CODE, "a"), &beijing).await;
    receiver.wait_for(&BTreeSet::from([visible.clone()])).await;
    // Changes are dispatched in commit order, so the Shanghai record was decided on first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.ids(), BTreeSet::from([visible]));
    assert!(!receiver.ids().contains(&hidden));

    // A Subscription whose writer is unknown (inside a transaction) delivers nothing.
    let (status, body) = node
        .send(
            reqwest::Method::POST,
            "",
            Some(&json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": rest_hook(address, true), "request": {"method": "POST", "url": "Subscription"}}
            ]})),
            &node.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let location = body["entry"][0]["response"]["location"]
        .as_str()
        .expect("location");
    let orphan = location
        .split('/')
        .skip_while(|s| *s != "Subscription")
        .nth(1)
        .expect("id")
        .to_owned();
    let errored = node.wait_status(&orphan, "error").await;
    assert!(
        errored["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not recorded"),
        "{errored}"
    );

    // A subscriber may not subscribe to what it cannot search.
    let condition = node
        .create_as(
            &json!({"resourceType": "Subscription", "status": "requested", "reason": "t",
                    "criteria": "Condition?clinical-status=active",
                    "channel": {"type": "rest-hook", "endpoint": format!("http://{address}/hook")}}),
            &subscriber,
        )
        .await;
    node.create(&json!({"resourceType": "Condition", "subject": {"reference": "Patient/a"},
                        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]}}))
        .await;
    let errored = node.wait_status(&condition, "error").await;
    assert!(
        errored["error"]
            .as_str()
            .unwrap_or_default()
            .contains("access"),
        "{errored}"
    );
    node.stop().await;
}

/// The next text message, waiting at most 30 s.
async fn next_text<S>(socket: &mut S) -> String
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("message");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return text.to_string();
        }
    }
}

async fn websocket_binds_and_pings(backend: Backend) {
    let env = Env::new(backend).await;
    let node = env.start().await;
    let id = node
        .create(
            &json!({"resourceType": "Subscription", "status": "requested", "reason": "ws",
                        "criteria": format!("Observation?code=http://loinc.org|{CODE}"),
                        "channel": {"type": "websocket"}}),
        )
        .await;
    node.wait_status(&id, "active").await;
    let url = format!("ws://{}/fhir/$subscription-websocket", node.address);

    // Without a token the upgrade is refused.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let refused = tokio_tungstenite::connect_async(url.clone()).await;
    assert!(
        refused.is_err(),
        "an unauthenticated websocket was accepted"
    );

    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", node.token).parse().expect("header"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect");
    use tokio_tungstenite::tungstenite::Message;
    socket
        .send(Message::Text("bind no-such-subscription".into()))
        .await
        .expect("send");
    assert!(next_text(&mut socket)
        .await
        .starts_with("error no-such-subscription"));
    socket
        .send(Message::Text(format!("bind {id}").into()))
        .await
        .expect("send");
    assert_eq!(next_text(&mut socket).await, format!("bound {id}"));
    node.create(&observation(CODE, "p1")).await;
    assert_eq!(next_text(&mut socket).await, format!("ping {id}"));
    node.create(&observation(CODE, "p2")).await;
    assert_eq!(next_text(&mut socket).await, format!("ping {id}"));
    node.stop().await;
}

/// Without the operator's leave, a rest-hook endpoint at a loopback address — in any of its
/// spellings — is refused when written (422 naming `channel.endpoint`), and so are channel
/// headers that would set the connection or the framing. Nothing is stored.
async fn forbidden_endpoints_and_headers_are_refused_when_written(backend: Backend) {
    let env = Env::new(backend).await;
    let node = env.start_allowing(Vec::new()).await;
    let listener = loopback().await;
    let port = listener.local_addr().expect("address").port();
    let receiver = Receiver::start(listener).await;
    for host in [
        "127.0.0.1",
        "[::1]",
        "2130706433",
        "0x7f000001",
        "127.1",
        "localhost",
        "0.0.0.0",
        "[::ffff:127.0.0.1]",
        "169.254.169.254",
        "10.0.0.1",
        "[fd00::1]",
    ] {
        let mut subscription = rest_hook(SocketAddr::from(([127, 0, 0, 1], port)), true);
        subscription["channel"]["endpoint"] = json!(format!("http://{host}:{port}/hook"));
        for method in [reqwest::Method::POST, reqwest::Method::PUT] {
            let path = if method == reqwest::Method::PUT {
                "Subscription/ssrf"
            } else {
                "Subscription"
            };
            let mut body = subscription.clone();
            if method == reqwest::Method::PUT {
                body["id"] = json!("ssrf");
            }
            let (status, outcome) = node.send(method, path, Some(&body), &node.token).await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{host}: {outcome}"
            );
            assert_eq!(outcome["resourceType"], "OperationOutcome", "{outcome}");
            assert_eq!(
                outcome["issue"][0]["expression"][0], "Subscription.channel.endpoint",
                "{host}: {outcome}"
            );
        }
    }
    for header in [
        "Host: metadata.internal",
        "Content-Length: 0",
        "Transfer-Encoding: chunked",
        "Connection: close",
    ] {
        let mut subscription = rest_hook(SocketAddr::from(([93, 184, 216, 34], 443)), true);
        subscription["channel"]["endpoint"] = json!("https://hooks.example.org/in");
        subscription["channel"]["header"] = json!([header]);
        let (status, outcome) = node
            .send(
                reqwest::Method::POST,
                "Subscription",
                Some(&subscription),
                &node.token,
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{header}: {outcome}"
        );
        assert_eq!(
            outcome["issue"][0]["expression"][0], "Subscription.channel.header",
            "{outcome}"
        );
    }
    let (status, bundle) = node
        .send(
            reqwest::Method::GET,
            "Subscription?_summary=count",
            None,
            &node.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{bundle}");
    assert_eq!(bundle["total"], 0, "nothing was stored: {bundle}");
    // A public endpoint is still accepted.
    let mut public = rest_hook(SocketAddr::from(([93, 184, 216, 34], 443)), true);
    public["channel"]["endpoint"] = json!("https://hooks.example.org/in");
    node.create(&public).await;
    assert!(receiver.got.lock().is_empty());
    node.stop().await;
}

on_both_backends!(
    forbidden_endpoints_and_headers_are_refused_when_written,
    rest_hook_delivers_matching_resources,
    down_subscriber_receives_everything_later,
    pending_notifications_survive_a_restart,
    nothing_the_subscriber_may_not_see,
    websocket_binds_and_pings,
);

/// Figures, not a test: how fast a backlog of notifications drains to one rest-hook
/// subscriber (`cargo test -p phip-server --test subscriptions -- --ignored --nocapture`).
/// The backlog is written while the subscriber is down, in one transaction (so every
/// version carries the same timestamp), then the subscriber comes back.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn backlog_drain_figures() {
    const N: usize = 2000;
    let env = Env::new(Backend::Sqlite).await;
    let node = env.start().await;
    let address = loopback().await.local_addr().expect("address");
    let id = node.create(&rest_hook(address, true)).await;
    node.wait_status(&id, "active").await;
    let entries: Vec<Value> = (0..N)
        .map(|i| json!({"resource": observation(if i % 2 == 0 { CODE } else { OTHER_CODE }, &format!("p{i}")),
                        "request": {"method": "POST", "url": "Observation"}}))
        .collect();
    let (status, body) = node
        .send(
            reqwest::Method::POST,
            "",
            Some(&json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})),
            &node.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expected: BTreeSet<String> = body["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .step_by(2)
        .filter_map(|e| e["response"]["location"].as_str())
        .filter_map(|l| l.split('/').skip_while(|s| *s != "Observation").nth(1))
        .map(str::to_owned)
        .collect();
    assert_eq!(expected.len(), N / 2);
    node.wait_status(&id, "error").await;
    let started = std::time::Instant::now();
    let receiver = Receiver::start(
        tokio::net::TcpListener::bind(address)
            .await
            .expect("the subscriber's port again"),
    )
    .await;
    receiver.wait_for(&expected).await;
    let elapsed = started.elapsed();
    let delivered = receiver.got.lock().len();
    println!(
        "backlog of {N} changes ({} matching): drained in {elapsed:?} ({:.0} notifications/s, {delivered} requests incl. duplicates, includes the pending back-off)",
        N / 2,
        (N / 2) as f64 / elapsed.as_secs_f64()
    );
    node.stop().await;
}
