//! Test harness: a real phip server on a free loopback port with a throwaway data directory,
//! and a small FHIR client over reqwest.

#![allow(dead_code)]

use std::sync::Arc;

use phip_engine::{Engine, EngineConfig};
use phip_security::token::Grant;
use phip_server::auth::{AuthMode, Authenticator};
use phip_server::{AppState, ServerConfig};
use phip_store::{open_store, StoreConfig};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;

/// The storage backend a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite store in a temp directory.
    Sqlite,
    /// A fresh database in the process's throwaway PostgreSQL cluster.
    Postgres,
    /// A fresh database in the process's throwaway Citus cluster (a coordinator and two
    /// workers), laid out for Citus.
    Citus,
}

/// Whether PostgreSQL tests can run (the testkit says loudly why not, and fails instead when
/// `PHIP_REQUIRE_POSTGRES=1`, as CI sets).
pub fn postgres_available() -> bool {
    phip_testkit::PgCluster::shared().is_some()
}

/// Whether Citus tests can run (the testkit says loudly why not, and fails instead when
/// `PHIP_REQUIRE_CITUS=1`, as CI sets).
pub fn citus_available() -> bool {
    phip_testkit::CitusCluster::shared().is_some()
}

/// Runs each listed `async fn(Backend)` test on SQLite, PostgreSQL and PostgreSQL with Citus
/// (the suites whose behaviour the distributed layout must keep: REST, search, bundles and
/// the adversarial suite).
#[macro_export]
macro_rules! on_all_backends {
    ($($name:ident),* $(,)?) => {
        on_both_backends!($($name),*);
        mod citus {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    let available = tokio::task::spawn_blocking(super::common::citus_available)
                        .await
                        .unwrap_or(false);
                    if !available {
                        return;
                    }
                    super::$name(super::common::Backend::Citus).await;
                }
            )*
        }
    };
}

/// Runs each listed `async fn(Backend)` test on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name(super::common::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    // The cluster is driven by a synchronous client: keep it off async workers.
                    let available = tokio::task::spawn_blocking(super::common::postgres_available)
                        .await
                        .unwrap_or(false);
                    if !available {
                        return;
                    }
                    super::$name(super::common::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// A data directory and a store configuration that outlive one server run, so that tests
/// can stop a server and start another on the same data (restarts, resumed jobs).
pub struct TestData {
    pub dir: tempfile::TempDir,
    pub store: StoreConfig,
}

impl TestData {
    /// A fresh temp directory and, on PostgreSQL, a fresh database in the shared cluster
    /// (the shared Citus cluster for [`Backend::Citus`]).
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().to_path_buf();
        // PostgreSQL is driven by a synchronous client, so keep it off the async workers.
        let store = tokio::task::spawn_blocking(move || match backend {
            Backend::Sqlite => StoreConfig::Sqlite { data_dir },
            Backend::Postgres => StoreConfig::Postgres {
                url: phip_testkit::PgCluster::shared()
                    .expect("PostgreSQL cluster")
                    .fresh_database(),
                pool_size: 8,
            },
            // The citus extension in a new database makes the store lay it out for Citus.
            Backend::Citus => StoreConfig::Postgres {
                url: phip_testkit::CitusCluster::shared()
                    .expect("Citus cluster")
                    .fresh_database(),
                pool_size: 8,
            },
        })
        .await
        .expect("join");
        Self { dir, store }
    }

    /// The data directory.
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().to_path_buf()
    }
}

/// A resident ID (GB 11643) with a correct ISO 7064 MOD 11-2 check character.
pub fn resident_id(area: &str, birth: &str, sequence: &str) -> String {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];
    let first17 = format!("{area}{birth}{sequence}");
    let sum: u32 = first17
        .bytes()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    format!("{first17}{}", CHECK[(sum % 11) as usize])
}

/// A running server.
pub struct TestServer {
    /// FHIR base URL, e.g. `http://127.0.0.1:4321/fhir`.
    pub base: String,
    /// Root URL without `/fhir`.
    pub root: String,
    pub client: reqwest::Client,
    /// The bearer token sent with every request unless a test sends its own
    /// `authorization` header (a `system/*.cruds` token by default).
    pub token: Option<String>,
    /// Mints tokens for this server (when authentication is on).
    pub auth: Option<Arc<Authenticator>>,
    /// The server's audit trail.
    pub audit: phip_audit::AuditLog,
    /// The engine behind the server (for feeds that bypass HTTP, such as MLLP).
    pub engine: Arc<Engine>,
    shutdown: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

/// A response with its parts decoded.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Resources of a Bundle's entries with `search.mode = match` (or all entries).
    pub fn entries(&self) -> Vec<Value> {
        self.body["entry"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter(|x| x["search"]["mode"].as_str().unwrap_or("match") == "match")
                    .map(|x| x["resource"].clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Ids of matched entries.
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
}

impl TestServer {
    /// A server on SQLite requiring tokens; requests carry a `system/*.cruds` token.
    pub async fn start() -> Self {
        Self::start_on(Backend::Sqlite).await
    }

    /// A server on `backend` requiring tokens; requests carry a `system/*.cruds` token.
    pub async fn start_on(backend: Backend) -> Self {
        Self::start_inner(backend, true, Vec::new()).await
    }

    /// A server with authentication off (development mode).
    pub async fn start_without_auth() -> Self {
        Self::start_inner(Backend::Sqlite, false, Vec::new()).await
    }

    /// A server requiring tokens, with these Backend Services clients registered.
    pub async fn start_with_clients(
        backend: Backend,
        clients: Vec<phip_server::auth::RegisteredClient>,
    ) -> Self {
        Self::start_inner(backend, true, clients).await
    }

    async fn start_inner(
        backend: Backend,
        auth_on: bool,
        clients: Vec<phip_server::auth::RegisteredClient>,
    ) -> Self {
        let TestData { dir, store: config } = TestData::new(backend).await;
        phip_server::auth::save_clients(dir.path(), &clients).expect("clients");
        let store = tokio::task::spawn_blocking(move || open_store(&config))
            .await
            .expect("join")
            .expect("open store");
        let engine = Arc::new(phip_server::platform_engine(store, EngineConfig::default()));
        let (mode, auth, token) = if auth_on {
            let auth =
                Arc::new(Authenticator::from_data_dir(dir.path(), None, Vec::new()).expect("auth"));
            let token = auth
                .mint(
                    &Grant {
                        sub: "test-suite".into(),
                        scope: "system/*.cruds".into(),
                        ..Grant::default()
                    },
                    std::time::Duration::from_secs(3600),
                )
                .expect("token")
                .token;
            (AuthMode::Required(auth.clone()), Some(auth), Some(token))
        } else {
            (AuthMode::Disabled, None, None)
        };
        let config = ServerConfig {
            auth: mode,
            public_base_url: None,
            max_body_bytes: 0,
            node_name: "phip-test".into(),
        };
        let ring = phip_security::keys::KeyRing::open(dir.path()).expect("key ring");
        let audit = phip_audit::AuditLog::open(dir.path(), Some(&ring)).expect("audit log");
        let state = AppState::new(engine.clone(), config, Some(audit.clone()))
            .with_signer(phip_server::signature::Signer::new(
                phip_security::keys::KeyRing::open(dir.path()).expect("key ring"),
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
        Self {
            base: format!("http://{address}/fhir"),
            root: format!("http://{address}"),
            // Idle pooled connections are dropped well before the server's keep-alive time,
            // as a well-configured client does, so a long test never reuses one the server is
            // closing.
            client: reqwest::Client::builder()
                .pool_idle_timeout(std::time::Duration::from_secs(30))
                .build()
                .expect("client"),
            token,
            auth,
            audit,
            engine,
            shutdown: Some(tx),
            _dir: dir,
        }
    }

    /// The server's data directory (keys, audit trail, `auth.db`).
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else if path.is_empty() || path.starts_with('?') {
            format!("{}{path}", self.base)
        } else {
            format!("{}/{}", self.base, path.trim_start_matches('/'))
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        let own_auth = headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("authorization"));
        if let (Some(token), false) = (&self.token, own_auth) {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            let has_type = headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
            if !has_type {
                request = request.header("content-type", "application/fhir+json");
            }
            request = request.body(serde_json::to_vec(body).expect("json"));
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Mints a token for this server.
    pub fn mint(&self, grant: Grant) -> String {
        self.auth
            .as_ref()
            .expect("authentication on")
            .mint(&grant, std::time::Duration::from_secs(600))
            .expect("mint")
            .token
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::POST, path, Some(body), &[]).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::PUT, path, Some(body), &[]).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None, &[]).await
    }

    /// Creates a resource and returns its id, failing the test otherwise.
    pub async fn create(&self, resource: &Value) -> String {
        let resource_type = resource["resourceType"].as_str().expect("resourceType");
        let reply = self.post(resource_type, resource).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "create failed: {}",
            reply.body
        );
        reply.body["id"].as_str().expect("id").to_owned()
    }

    /// Runs a search and returns the sorted ids of the matches (first page).
    pub async fn search_ids(&self, query: &str) -> Vec<String> {
        let reply = self.get(query).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "search {query} failed: {}",
            reply.body
        );
        reply.ids()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Asserts an OperationOutcome body with the expected status.
pub fn assert_outcome(reply: &Reply, status: u16) {
    assert_eq!(
        reply.status.as_u16(),
        status,
        "unexpected status; body: {}",
        reply.body
    );
    assert_eq!(
        reply.body["resourceType"], "OperationOutcome",
        "body: {}",
        reply.body
    );
    assert!(
        reply.body["issue"]
            .as_array()
            .is_some_and(|i| !i.is_empty()),
        "body: {}",
        reply.body
    );
}
