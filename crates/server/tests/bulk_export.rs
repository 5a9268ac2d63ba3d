//! FHIR Bulk Data export over HTTP on both backends: kick-off, polling, manifest and
//! downloads of the Synthea fixture, `_since`, `_type`/`_typeFilter`, Patient and Group level,
//! cancellation, the errors the IG prescribes, and a server restart in the middle of a job.

mod common;

#[path = "../../bulk/tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assert_outcome, Backend, Reply};
use phip_bulk::{ExportConfig, Exporter};
use phip_engine::{Engine, EngineConfig};
use phip_security::token::Grant;
use phip_server::auth::{AuthMode, Authenticator};
use phip_server::{AppState, ServerConfig};
use phip_store::open_store;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// A server with bulk export enabled over a data directory that outlives it (for restarts).
struct ExportServer {
    base: String,
    client: reqwest::Client,
    token: String,
    auth: Arc<Authenticator>,
    engine: Arc<Engine>,
    exporter: Arc<Exporter>,
    shutdown: Option<oneshot::Sender<()>>,
}

/// Where a server's data lives, reusable by a restarted server.
type Data = common::TestData;

fn test_config() -> ExportConfig {
    ExportConfig {
        max_page_resources: 100,
        page_bytes: 256 << 10,
        max_file_bytes: 512 << 10,
        checkpoint_bytes: 0,
        ..ExportConfig::default()
    }
}

impl ExportServer {
    async fn start(data: &Data, config: ExportConfig) -> ExportServer {
        let store_config = data.store.clone();
        let data_dir = data.path();
        let (engine, exporter) = tokio::task::spawn_blocking(move || {
            let store = open_store(&store_config).expect("open store");
            let engine = Arc::new(Engine::new(store, EngineConfig::default()));
            let exporter =
                Arc::new(Exporter::start(engine.clone(), &data_dir, config).expect("exporter"));
            (engine, exporter)
        })
        .await
        .expect("join");
        let auth = Arc::new(
            Authenticator::from_data_dir(data.dir.path(), None, Vec::new()).expect("auth"),
        );
        let config = ServerConfig {
            auth: AuthMode::Required(auth.clone()),
            public_base_url: None,
            max_body_bytes: 0,
            node_name: "phip-test".into(),
        };
        let ring = phip_security::keys::KeyRing::open(data.dir.path()).expect("key ring");
        let audit = phip_audit::AuditLog::open(data.dir.path(), Some(&ring)).expect("audit log");
        let state =
            AppState::new(engine.clone(), config, Some(audit)).with_bulk_export(exporter.clone());
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
        let mut server = ExportServer {
            base: format!("http://{address}/fhir"),
            client: reqwest::Client::new(),
            token: String::new(),
            auth,
            engine,
            exporter,
            shutdown: Some(tx),
        };
        server.token = server.mint(
            "bulk-client",
            "system/*.read system/Group.cruds system/Condition.cruds",
        );
        server
    }

    /// Stops serving and stops the export workers at their next checkpoint.
    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let exporter = self.exporter.clone();
        tokio::task::spawn_blocking(move || exporter.shutdown())
            .await
            .expect("join");
    }

    fn mint(&self, client: &str, scope: &str) -> String {
        self.auth
            .mint(
                &Grant {
                    sub: client.into(),
                    client_id: Some(client.into()),
                    scope: scope.into(),
                    ..Grant::default()
                },
                Duration::from_secs(600),
            )
            .expect("mint")
            .token
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}/{}", self.base, path.trim_start_matches('/'))
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (Reply, String) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/fhir+json")
                .body(serde_json::to_vec(body).expect("json"));
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        (
            Reply {
                status,
                headers,
                body,
            },
            text,
        )
    }

    /// Kicks off an export with the default token and returns the status URL.
    async fn kick_off(&self, path: &str) -> String {
        let (reply, _) = self
            .send(
                Method::GET,
                path,
                Some(&self.token),
                &[
                    ("prefer", "respond-async"),
                    ("accept", "application/fhir+json"),
                ],
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        reply
            .header("content-location")
            .expect("Content-Location")
            .to_owned()
    }

    /// Polls a status URL until the manifest is ready.
    async fn wait(&self, status_url: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let (reply, _) = self
                .send(Method::GET, status_url, Some(&self.token), &[], None)
                .await;
            match reply.status {
                StatusCode::OK => return reply.body,
                StatusCode::ACCEPTED => {
                    assert!(reply.header("x-progress").is_some());
                    assert!(reply.header("retry-after").is_some());
                    assert!(Instant::now() < deadline, "export did not finish");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => panic!("status {other}: {}", reply.body),
            }
        }
    }

    /// Downloads every output file of a manifest, checking each line, and returns the
    /// resources per type.
    async fn download(&self, manifest: &Value) -> BTreeMap<String, Vec<Value>> {
        let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for output in manifest["output"].as_array().expect("output") {
            let resource_type = output["type"].as_str().expect("type");
            let url = output["url"].as_str().expect("url");
            let (reply, text) = self
                .send(Method::GET, url, Some(&self.token), &[], None)
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{url}: {text}");
            assert_eq!(
                reply.header("content-type"),
                Some("application/fhir+ndjson")
            );
            let mut count = 0;
            for line in text.lines() {
                let value: Value = serde_json::from_str(line).expect("every line parses");
                assert_eq!(value["resourceType"], resource_type);
                out.entry(resource_type.to_owned()).or_default().push(value);
                count += 1;
            }
            assert_eq!(Some(count), output["count"].as_u64());
        }
        out
    }

    /// Loads the Synthea fixture straight into the store.
    async fn load_fixture(&self) -> Vec<Value> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            let resources = support::fixture_resources();
            support::load(engine.store().as_ref(), &resources);
            resources
        })
        .await
        .expect("join")
    }
}

impl Drop for ExportServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn ids(export: &BTreeMap<String, Vec<Value>>) -> BTreeMap<String, BTreeSet<String>> {
    support::exported_ids(export)
}

async fn export_returns_the_stored_resources(backend: Backend) {
    let data = Data::new(backend).await;
    let server = ExportServer::start(&data, test_config()).await;
    let resources = server.load_fixture().await;
    let status_url = server
        .kick_off("$export?_outputFormat=application%2Ffhir%2Bndjson")
        .await;
    assert!(status_url.starts_with(&format!("{}/$export-status/", server.base)));
    let manifest = server.wait(&status_url).await;
    assert_eq!(manifest["requiresAccessToken"], true);
    assert!(manifest["transactionTime"].is_string());
    assert!(manifest["request"]
        .as_str()
        .is_some_and(|r| r.ends_with("$export?_outputFormat=application%2Ffhir%2Bndjson")));
    let export = server.download(&manifest).await;
    assert_eq!(ids(&export), support::ids_by_type(&resources));
    let outputs = manifest["output"].as_array().expect("output");
    assert!(
        outputs.len() > 13,
        "large types are split into several files"
    );

    // Files need the token of the client that started the export.
    let url = outputs[0]["url"].as_str().expect("url");
    let (reply, _) = server.send(Method::GET, url, None, &[], None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let other = server.mint("someone-else", "system/*.read");
    let (reply, _) = server.send(Method::GET, url, Some(&other), &[], None).await;
    assert_outcome(&reply, 404);
    let (reply, _) = server
        .send(Method::GET, &status_url, Some(&other), &[], None)
        .await;
    assert_outcome(&reply, 404);
}

async fn since_returns_only_later_changes(backend: Backend) {
    let data = Data::new(backend).await;
    let server = ExportServer::start(&data, test_config()).await;
    let resources = server.load_fixture().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut changed = BTreeSet::new();
    for condition in resources
        .iter()
        .filter(|r| r["resourceType"] == "Condition")
        .take(4)
    {
        let id = condition["id"].as_str().expect("id");
        let mut updated = condition.clone();
        updated["onsetDateTime"] = json!("2002-02-02");
        let (reply, _) = server
            .send(
                Method::PUT,
                &format!("Condition/{id}"),
                Some(&server.token),
                &[],
                Some(&updated),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        changed.insert(id.to_owned());
    }
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("_since", &since)
        .finish();
    let status_url = server.kick_off(&format!("$export?{query}")).await;
    let export = server.download(&server.wait(&status_url).await).await;
    assert_eq!(
        ids(&export),
        BTreeMap::from([("Condition".to_owned(), changed)])
    );
    assert_eq!(export["Condition"][0]["onsetDateTime"], "2002-02-02");
}

async fn type_filters_post_and_levels(backend: Backend) {
    let data = Data::new(backend).await;
    let server = ExportServer::start(&data, test_config()).await;
    let resources = server.load_fixture().await;
    let by_type = support::ids_by_type(&resources);

    // POST kick-off with a Parameters body: _type plus a _typeFilter.
    let parameters = json!({
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueString": "Patient,Condition"},
            {"name": "_typeFilter", "valueString": "Condition?clinical-status=active"}
        ]
    });
    let (reply, _) = server
        .send(
            Method::POST,
            "$export",
            Some(&server.token),
            &[("prefer", "respond-async")],
            Some(&parameters),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let status_url = reply
        .header("content-location")
        .expect("location")
        .to_owned();
    let export = server.download(&server.wait(&status_url).await).await;
    assert_eq!(ids(&export)["Patient"], by_type["Patient"]);
    let active: BTreeSet<String> = resources
        .iter()
        .filter(|r| {
            r["resourceType"] == "Condition" && r["clinicalStatus"]["coding"][0]["code"] == "active"
        })
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect();
    assert!(!active.is_empty() && active.len() < by_type["Condition"].len());
    assert_eq!(ids(&export)["Condition"], active);
    assert_eq!(export.len(), 2);

    // Patient level: compartment types only, every resource tied to a patient.
    let status_url = server.kick_off("Patient/$export").await;
    let export = server.download(&server.wait(&status_url).await).await;
    assert!(!export.contains_key("Organization") && !export.contains_key("Practitioner"));
    assert_eq!(ids(&export)["Encounter"], by_type["Encounter"]);
    assert!(export
        .values()
        .flatten()
        .all(|r| !phip_engine::access::patients_of(r).is_empty()));

    // Group level: the members' compartments only.
    let members: Vec<&String> = by_type["Patient"].iter().take(3).collect();
    let group = json!({
        "resourceType": "Group", "id": "cohort", "type": "person", "actual": true,
        "member": members.iter().map(|p| json!({"entity": {"reference": format!("Patient/{p}")}})).collect::<Vec<_>>()
    });
    let (reply, _) = server
        .send(
            Method::PUT,
            "Group/cohort",
            Some(&server.token),
            &[],
            Some(&group),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let status_url = server
        .kick_off("Group/cohort/$export?_type=Patient,Encounter")
        .await;
    let export = server.download(&server.wait(&status_url).await).await;
    let exported = ids(&export);
    assert_eq!(
        exported["Patient"],
        members
            .iter()
            .map(|p| (*p).clone())
            .collect::<BTreeSet<_>>()
    );
    let expected_encounters: BTreeSet<String> = resources
        .iter()
        .filter(|r| r["resourceType"] == "Encounter")
        .filter(|r| {
            members
                .iter()
                .any(|p| r["subject"]["reference"] == format!("Patient/{p}"))
        })
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect();
    assert!(!expected_encounters.is_empty());
    assert_eq!(exported["Encounter"], expected_encounters);
}

async fn cancel_and_errors(backend: Backend) {
    let data = Data::new(backend).await;
    let server = ExportServer::start(&data, test_config()).await;
    server.load_fixture().await;

    let status_url = server.kick_off("$export").await;
    let (reply, _) = server
        .send(Method::DELETE, &status_url, Some(&server.token), &[], None)
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let (reply, _) = server
        .send(Method::GET, &status_url, Some(&server.token), &[], None)
        .await;
    assert_outcome(&reply, 404);
    let (reply, _) = server
        .send(Method::DELETE, &status_url, Some(&server.token), &[], None)
        .await;
    assert_outcome(&reply, 404);

    // Without Prefer: respond-async.
    let (reply, _) = server
        .send(Method::GET, "$export", Some(&server.token), &[], None)
        .await;
    assert_outcome(&reply, 400);
    let async_header = [("prefer", "respond-async")];
    // Unsupported output format, unknown filter parameter.
    for bad in [
        "$export?_outputFormat=text/csv",
        "$export?_typeFilter=Condition%3Fno-such-param%3D1",
        "$export?_since=yesterday",
    ] {
        let (reply, _) = server
            .send(Method::GET, bad, Some(&server.token), &async_header, None)
            .await;
        assert_outcome(&reply, 400);
    }
    // No system scope, or a type outside the scopes.
    let user = server.mint("app", "user/*.read");
    let (reply, _) = server
        .send(Method::GET, "$export", Some(&user), &async_header, None)
        .await;
    assert_outcome(&reply, 403);
    let narrow = server.mint("narrow", "system/Patient.rs");
    let (reply, _) = server
        .send(
            Method::GET,
            "$export?_type=Patient,Condition",
            Some(&narrow),
            &async_header,
            None,
        )
        .await;
    assert_outcome(&reply, 403);
    let (reply, _) = server
        .send(
            Method::GET,
            "Group/missing/$export",
            Some(&server.token),
            &async_header,
            None,
        )
        .await;
    assert_outcome(&reply, 404);
    // Ordinary interactions on the same paths still work.
    let (reply, _) = server
        .send(
            Method::GET,
            "Patient?_count=1",
            Some(&server.token),
            &[],
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
}

/// Issue #16: a `patient/` token whose subject is `phip token`'s default (`operator`) read an
/// operator's system export. Status, files and cancellation belong to the whole identity.
async fn a_patient_token_never_reads_a_system_export(backend: Backend) {
    let data = Data::new(backend).await;
    let mut server = ExportServer::start(&data, test_config()).await;
    server.load_fixture().await;
    let mint = |grant: Grant| {
        server
            .auth
            .mint(&grant, Duration::from_secs(600))
            .expect("mint")
            .token
    };
    // `phip token --scope 'system/*.read'`: subject `operator`, no client.
    server.token = mint(Grant {
        sub: "operator".into(),
        scope: "system/*.read".into(),
        ..Grant::default()
    });
    let resident = mint(Grant {
        sub: "operator".into(),
        scope: "patient/*.rs".into(),
        patient: Some("any".into()),
        ..Grant::default()
    });
    let status_url = server.kick_off("$export").await;
    let manifest = server.wait(&status_url).await;
    let file = manifest["output"][0]["url"]
        .as_str()
        .expect("a file")
        .to_owned();
    for (method, url) in [
        (Method::GET, status_url.as_str()),
        (Method::GET, file.as_str()),
        (Method::DELETE, status_url.as_str()),
    ] {
        let (reply, text) = server
            .send(method.clone(), url, Some(&resident), &[], None)
            .await;
        assert_outcome(&reply, 404);
        assert!(
            !text.contains("\"resourceType\":\"Patient\",\"id\""),
            "{method} {url}"
        );
    }
    // The operator still has it.
    let (reply, _) = server
        .send(Method::GET, &file, Some(&server.token), &[], None)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
}

async fn a_restart_mid_job_completes_the_export(backend: Backend) {
    let data = Data::new(backend).await;
    let slow = ExportConfig {
        max_page_resources: 5,
        ..test_config()
    };
    let server = ExportServer::start(&data, slow.clone()).await;
    let resources = server.load_fixture().await;
    let status_url = server.kick_off("$export").await;
    // Wait for the job to get going, then stop the server under it.
    loop {
        let (reply, _) = server
            .send(Method::GET, &status_url, Some(&server.token), &[], None)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::ACCEPTED,
            "finished before the restart"
        );
        if reply
            .header("x-progress")
            .is_some_and(|p| !p.starts_with("0 resources") && p != "queued")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let token = server.token.clone();
    server.stop().await;

    let mut server = ExportServer::start(&data, slow).await;
    server.token = token;
    let manifest = server
        .wait(&status_url.replace(
            status_url.split("/fhir/").next().expect("root"),
            server.base.trim_end_matches("/fhir"),
        ))
        .await;
    let export = server.download(&manifest).await;
    assert_eq!(ids(&export), support::ids_by_type(&resources));
}

on_both_backends!(
    export_returns_the_stored_resources,
    since_returns_only_later_changes,
    type_filters_post_and_levels,
    cancel_and_errors,
    a_patient_token_never_reads_a_system_export,
    a_restart_mid_job_completes_the_export,
);
