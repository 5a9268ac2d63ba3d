//! The server the adversarial suite attacks: a real phip server on a loopback port with every
//! service that answers about records switched on (audit trail, bulk export, Subscriptions,
//! health codes, signatures, the portal), and a small HTTP client that keeps each reply's raw
//! text so that nothing a response carries escapes the leak checks.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use phip_engine::{Engine, EngineConfig};
use phip_security::token::Grant;
use phip_server::auth::{AuthMode, Authenticator};
use phip_server::{AppState, ServerConfig};
use phip_store::open_store;
use phip_subscriptions::{Subscriptions, SubscriptionsConfig};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;

use super::common::{Backend, TestData};

/// How a request authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// No `Authorization` header.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(String),
}

/// A response with everything it carried.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    /// The body as received (lossy UTF-8).
    pub text: String,
    /// The body as JSON (`Null` when empty, a JSON string when not JSON).
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Resources of a Bundle's `match` entries (or of every entry without a search mode).
    pub fn entries(&self) -> Vec<Value> {
        self.body["entry"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter(|x| x["search"]["mode"].as_str().unwrap_or("match") == "match")
                    .filter_map(|x| x.get("resource").cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every resource of a Bundle, matches and includes alike.
    pub fn all_resources(&self) -> Vec<Value> {
        self.body["entry"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter_map(|x| x.get("resource").cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `Type/id` of every resource of a Bundle.
    pub fn references(&self) -> Vec<String> {
        let mut refs: Vec<String> = self
            .all_resources()
            .iter()
            .map(|r| {
                format!(
                    "{}/{}",
                    r["resourceType"].as_str().unwrap_or_default(),
                    r["id"].as_str().unwrap_or_default()
                )
            })
            .collect();
        refs.sort();
        refs
    }

    /// Ids of the matched entries, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .entries()
            .iter()
            .filter_map(|r| r["id"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    }

    pub fn link(&self, relation: &str) -> Option<String> {
        self.body["link"].as_array()?.iter().find_map(|l| {
            (l["relation"] == relation).then(|| l["url"].as_str().unwrap_or_default().to_owned())
        })
    }

    pub fn total(&self) -> Option<u64> {
        self.body["total"].as_u64()
    }

    /// A one-line description for failure messages (status and the start of the body).
    pub fn describe(&self) -> String {
        let mut text = self.text.clone();
        if text.len() > 600 {
            let mut end = 600;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
        format!("{} {}", self.status.as_u16(), text)
    }
}

/// One request, kept so that its text can be told apart from what the server added.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub content_type: Option<String>,
}

impl Request {
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            headers: Vec::new(),
            body: None,
            content_type: None,
        }
    }

    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    pub fn delete(path: impl Into<String>) -> Self {
        Self::new(Method::DELETE, path)
    }

    pub fn post(path: impl Into<String>, body: &Value) -> Self {
        Self::new(Method::POST, path).json(body)
    }

    pub fn put(path: impl Into<String>, body: &Value) -> Self {
        Self::new(Method::PUT, path).json(body)
    }

    pub fn patch(path: impl Into<String>, patch: &Value) -> Self {
        let mut request = Self::new(Method::PATCH, path).json(patch);
        request.content_type = Some("application/json-patch+json".into());
        request
    }

    pub fn json(mut self, body: &Value) -> Self {
        self.body = Some(serde_json::to_vec(body).unwrap_or_default());
        self.content_type = Some("application/fhir+json".into());
        self
    }

    pub fn form(mut self, fields: &[(&str, &str)]) -> Self {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.body = Some(body.into_bytes());
        self.content_type = Some("application/x-www-form-urlencoded".into());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Everything the client itself put in the request (path and query percent-decoded,
    /// header values, body): a value found here was not revealed by the server.
    pub fn text(&self) -> String {
        let decoded = percent_encoding::percent_decode_str(&self.path.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned();
        let mut text = format!("{} {}\n", self.path, decoded);
        for (name, value) in &self.headers {
            text.push_str(&format!("{name}: {value}\n"));
        }
        if let Some(body) = &self.body {
            let body = String::from_utf8_lossy(body);
            text.push_str(&body);
            text.push('\n');
            text.push_str(
                &percent_encoding::percent_decode_str(&body.replace('+', " ")).decode_utf8_lossy(),
            );
        }
        text
    }
}

/// The subscription dispatcher's settings for the suite.
///
/// The rest-hook receivers of the suite listen on loopback. When the SSRF guard of issue #16
/// item 7 refuses loopback endpoints by default, allow the receiver here the way an operator
/// would (the allow-list of the config file); until then the defaults deliver to loopback.
pub fn subscriptions_config() -> SubscriptionsConfig {
    SubscriptionsConfig {
        poll_interval: Duration::from_millis(100),
        overlap: Duration::from_secs(2),
        http_timeout: Duration::from_secs(2),
        failures_before_error: 50,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        owner_grace: Duration::from_secs(1),
        // The receivers listen on loopback, which rest-hooks may reach only when the operator
        // allows it.
        allow_private_endpoints: vec!["127.0.0.1".parse().expect("network")],
        ..SubscriptionsConfig::default()
    }
}

/// A running server with every service on.
pub struct Node {
    /// FHIR base URL, e.g. `http://127.0.0.1:4321/fhir`.
    pub base: String,
    /// Root URL without `/fhir`.
    pub root: String,
    client: reqwest::Client,
    auth: Arc<Authenticator>,
    pub engine: Arc<Engine>,
    subscriptions: Arc<Subscriptions>,
    exporter: Arc<phip_bulk::Exporter>,
    shutdown: Option<oneshot::Sender<()>>,
    _data: TestData,
}

impl Node {
    pub async fn start(backend: Backend) -> Node {
        let data = TestData::new(backend).await;
        let store_config = data.store.clone();
        let data_dir = data.path();
        let (engine, exporter) = tokio::task::spawn_blocking(move || {
            let store = open_store(&store_config).expect("open store");
            let engine = Arc::new(phip_server::platform_engine(store, EngineConfig::default()));
            let exporter = Arc::new(
                phip_bulk::Exporter::start(
                    engine.clone(),
                    &data_dir,
                    phip_bulk::ExportConfig::default(),
                )
                .expect("exporter"),
            );
            (engine, exporter)
        })
        .await
        .expect("join");
        let auth = Arc::new(
            Authenticator::from_data_dir(data.dir.path(), None, Vec::new()).expect("auth"),
        );
        let subscriptions =
            Subscriptions::start(engine.clone(), data.dir.path(), subscriptions_config())
                .expect("subscriptions");
        let ring = phip_security::keys::KeyRing::open(data.dir.path()).expect("key ring");
        let audit = phip_audit::AuditLog::open(data.dir.path(), Some(&ring)).expect("audit log");
        let limits = phip_server::limits::Limits {
            // The suite signs in with forged codes on purpose; their refusals must not lock
            // out the legitimate sign-ins that follow.
            failed_sign_ins: None,
            ..phip_server::limits::Limits::default()
        };
        let state = AppState::new(
            engine.clone(),
            ServerConfig {
                auth: AuthMode::Required(auth.clone()),
                public_base_url: None,
                max_body_bytes: 0,
                node_name: "phip-adversarial".into(),
            },
            Some(audit),
        )
        .with_limits(limits)
        .with_bulk_export(exporter.clone())
        .with_subscriptions(subscriptions.clone())
        .with_signer(phip_server::signature::Signer::new(
            phip_security::keys::KeyRing::open(data.dir.path()).expect("key ring"),
        ))
        .with_health_codes(
            phip_server::health_code::HealthCodes::new(&ring, Default::default())
                .expect("health codes"),
        );
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
        Node {
            base: format!("http://{address}/fhir"),
            root: format!("http://{address}"),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            auth,
            engine,
            subscriptions,
            exporter,
            shutdown: Some(tx),
            _data: data,
        }
    }

    /// Mints a token of this server.
    pub fn mint(&self, grant: Grant) -> String {
        self.auth
            .mint(&grant, Duration::from_secs(3600))
            .expect("mint")
            .token
    }

    /// The absolute URL of `path` (relative to the FHIR base unless it starts with `/`).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else if let Some(rooted) = path.strip_prefix('/') {
            format!("{}/{rooted}", self.root)
        } else if path.is_empty() || path.starts_with('?') {
            format!("{}{path}", self.base)
        } else {
            format!("{}/{path}", self.base)
        }
    }

    /// Sends a request as `auth`.
    pub async fn send(&self, auth: &Auth, request: &Request) -> Reply {
        let mut builder = self
            .client
            .request(request.method.clone(), self.url(&request.path));
        if let Auth::Bearer(token) = auth {
            builder = builder.bearer_auth(token);
        }
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(body) = &request.body {
            if let Some(content_type) = &request.content_type {
                builder = builder.header("content-type", content_type.as_str());
            }
            builder = builder.body(body.clone());
        }
        let response = builder.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(text.clone()))
        };
        Reply {
            status,
            headers,
            text,
            body,
        }
    }

    /// Stops the dispatcher, the exporter and the server.
    pub async fn stop(mut self) {
        self.subscriptions.shutdown().await;
        let exporter = self.exporter.clone();
        let _ = tokio::task::spawn_blocking(move || exporter.shutdown()).await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
