//! Two-way referral over HTTP, end to end, with tokens of the right organisations: a county
//! clinic (溧阳市, 320481) refers a patient up to a city hospital (南京市, 320100) and the
//! hospital refers them back down with the discharge summary. Covers every refused
//! transition, the receiver's work queue and its rest-hook Subscription, the time-limited
//! access grant (before, during, after expiry and cancellation, and in the audit trail), and
//! the referral report against hand-computed figures. Runs on SQLite and PostgreSQL.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{SecondsFormat, Utc};
use common::{assert_outcome, Backend, Reply};
use parking_lot::Mutex;
use phip_engine::EngineConfig;
use phip_security::token::Grant;
use phip_server::auth::{AuthMode, Authenticator};
use phip_server::{AppState, ServerConfig};
use phip_store::open_store;
use phip_subscriptions::{Subscriptions, SubscriptionsConfig};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::oneshot;

const CLINIC: &str = "county-clinic";
const CLINIC_DIVISION: &str = "320481";
const HOSPITAL: &str = "city-hospital";
const HOSPITAL_DIVISION: &str = "320100";
/// Another hospital of the same city: not a party to the referrals.
const OTHER: &str = "other-hospital";

/// A platform server (workflow rules, Subscriptions dispatcher, audit) and its tokens.
struct Node {
    base: String,
    client: reqwest::Client,
    auth: Arc<Authenticator>,
    subscriptions: Arc<Subscriptions>,
    shutdown: Option<oneshot::Sender<()>>,
    system: String,
    /// The engine, for what only the server itself may do (grants are server-owned state).
    engine: Arc<phip_engine::Engine>,
    _data: common::TestData,
}

impl Node {
    async fn start(backend: Backend) -> Node {
        let data = common::TestData::new(backend).await;
        let config = data.store.clone();
        let store = tokio::task::spawn_blocking(move || open_store(&config))
            .await
            .expect("join")
            .expect("open store");
        let engine = Arc::new(phip_server::platform_engine(store, EngineConfig::default()));
        let auth = Arc::new(
            Authenticator::from_data_dir(data.dir.path(), None, Vec::new()).expect("auth"),
        );
        let subscriptions = Subscriptions::start(
            engine.clone(),
            data.dir.path(),
            SubscriptionsConfig {
                poll_interval: Duration::from_millis(100),
                overlap: Duration::from_secs(2),
                http_timeout: Duration::from_secs(2),
                owner_grace: Duration::from_secs(1),
                // The hospital's receiver runs on loopback, allowed as an operator would.
                allow_private_endpoints: vec!["127.0.0.1".parse().expect("network")],
                ..SubscriptionsConfig::default()
            },
        )
        .expect("subscriptions");
        let ring = phip_security::keys::KeyRing::open(data.dir.path()).expect("key ring");
        let audit = phip_audit::AuditLog::open(data.dir.path(), Some(&ring)).expect("audit");
        let state = AppState::new(
            engine.clone(),
            ServerConfig {
                auth: AuthMode::Required(auth.clone()),
                public_base_url: None,
                max_body_bytes: 0,
                node_name: "phip-test".into(),
            },
            Some(audit),
        )
        .with_subscriptions(subscriptions.clone());
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
        let mut node = Node {
            base: format!("http://{address}/fhir"),
            client: reqwest::Client::new(),
            auth,
            subscriptions,
            shutdown: Some(tx),
            system: String::new(),
            engine,
            _data: data,
        };
        node.system = node.mint("system/*.cruds", None, None);
        node
    }

    fn mint(&self, scope: &str, org: Option<&str>, division: Option<&str>) -> String {
        self.auth
            .mint(
                &Grant {
                    sub: format!("user-at-{}", org.unwrap_or("platform")),
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

    /// A clinician's token at `org` in `division`.
    fn staff(&self, org: &str, division: &str) -> String {
        self.mint("user/*.cruds", Some(org), Some(division))
    }

    async fn send(&self, method: Method, path: &str, body: Option<&Value>, token: &str) -> Reply {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}/{}", self.base, path.trim_start_matches('/'))
        };
        let mut request = self.client.request(method, url).bearer_auth(token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/fhir+json")
                .body(serde_json::to_vec(body).expect("json"));
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str, token: &str) -> Reply {
        self.send(Method::GET, path, None, token).await
    }

    async fn post(&self, path: &str, body: &Value, token: &str) -> Reply {
        self.send(Method::POST, path, Some(body), token).await
    }

    async fn put(&self, path: &str, body: &Value, token: &str) -> Reply {
        self.send(Method::PUT, path, Some(body), token).await
    }

    async fn create(&self, resource: &Value, token: &str) -> String {
        let rt = resource["resourceType"].as_str().expect("type");
        let reply = self.post(rt, resource, token).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{rt}: {}", reply.body);
        reply.body["id"].as_str().expect("id").to_owned()
    }

    /// `POST Task/{id}/{operation}` with optional Parameters.
    async fn op(&self, task: &str, operation: &str, params: &[Value], token: &str) -> Reply {
        let body = json!({"resourceType": "Parameters", "parameter": params});
        self.post(&format!("Task/{task}/{operation}"), &body, token)
            .await
    }

    async fn stop(mut self) {
        self.subscriptions.shutdown().await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The three institutions, a patient registered at the clinic and one of the clinic's records.
struct World {
    clinic: String,
    hospital: String,
    other: String,
    patient: String,
    condition: String,
}

async fn world(node: &Node) -> World {
    for (id, name, level) in [
        (CLINIC, "溧阳市社区卫生服务中心", "primary"),
        (HOSPITAL, "南京市第一医院", "tertiary"),
        (OTHER, "南京市第二医院", "tertiary"),
    ] {
        let org = json!({"resourceType": "Organization", "id": id, "name": name,
            "type": [{"coding": [{"system": "urn:phip:organization-level", "code": level}]}]});
        let reply = node
            .put(&format!("Organization/{id}"), &org, &node.system)
            .await;
        assert!(reply.status.is_success(), "{}", reply.body);
    }
    let clinic = node.staff(CLINIC, CLINIC_DIVISION);
    let patient = node
        .create(
            &json!({"resourceType": "Patient", "name": [{"text": "王芳"}], "gender": "female",
                    "birthDate": "1961-04-02"}),
            &clinic,
        )
        .await;
    let condition = node
        .create(
            &json!({"resourceType": "Condition",
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "22298006",
                                     "display": "Myocardial infarction"}]},
                "subject": {"reference": format!("Patient/{patient}")}}),
            &clinic,
        )
        .await;
    World {
        clinic,
        hospital: node.staff(HOSPITAL, HOSPITAL_DIVISION),
        other: node.staff(OTHER, HOSPITAL_DIVISION),
        patient,
        condition,
    }
}

fn service_request(patient: &str, from: &str, to: &str) -> Value {
    json!({
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "3457005",
                                  "display": "Patient referral"}]}],
        "code": {"text": "Cardiology assessment"},
        "subject": {"reference": format!("Patient/{patient}")},
        "requester": {"reference": format!("Organization/{from}")},
        "performer": [{"reference": format!("Organization/{to}")}]
    })
}

fn referral_task(patient: &str, focus: &str, from: &str, to: &str, direction: &str) -> Value {
    json!({
        "resourceType": "Task",
        "extension": [{"url": "urn:phip:workflow:referral-direction", "valueCode": direction}],
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": "urn:phip:workflow", "code": "referral"}]},
        "businessStatus": {"coding": [{"system": "urn:phip:workflow:referral-status",
                                       "code": "awaiting-triage"}]},
        "focus": {"reference": format!("ServiceRequest/{focus}")},
        "for": {"reference": format!("Patient/{patient}")},
        "requester": {"reference": format!("Organization/{from}")},
        "owner": {"reference": format!("Organization/{to}")}
    })
}

/// Sends an up-referral from the clinic to `to` and returns the Task id.
async fn refer_up(node: &Node, w: &World, to: &str) -> String {
    let focus = node
        .create(&service_request(&w.patient, CLINIC, to), &w.clinic)
        .await;
    node.create(
        &referral_task(&w.patient, &focus, CLINIC, to, "up"),
        &w.clinic,
    )
    .await
}

fn status_param(code: &str) -> Value {
    json!({"name": "status", "valueCode": code})
}

/// Asserts a refusal and that its text names what it should.
fn assert_refused(reply: &Reply, status: u16, mentions: &[&str]) {
    assert_outcome(reply, status);
    let text = reply.body["issue"][0]["diagnostics"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for word in mentions {
        assert!(text.contains(word), "{text:?} should mention {word:?}");
    }
}

/// A rest-hook receiver on a loopback port.
struct Receiver {
    address: SocketAddr,
    got: Arc<Mutex<Vec<Value>>>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let got: Arc<Mutex<Vec<Value>>> = Arc::default();
        async fn record(
            State(got): State<Arc<Mutex<Vec<Value>>>>,
            body: axum::body::Bytes,
        ) -> StatusCode {
            got.lock()
                .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            StatusCode::OK
        }
        let app = axum::Router::new()
            .route("/hook/{type}/{id}", axum::routing::put(record))
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
            address,
            got,
            shutdown: Some(tx),
        }
    }

    /// `(id, status)` of every Task delivered.
    fn deliveries(&self) -> BTreeSet<(String, String)> {
        self.got
            .lock()
            .iter()
            .filter(|b| b["resourceType"] == "Task")
            .map(|b| {
                (
                    b["id"].as_str().unwrap_or_default().to_owned(),
                    b["status"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    async fn wait_for(&self, id: &str, status: &str) {
        let wanted = (id.to_owned(), status.to_owned());
        for _ in 0..300 {
            if self.deliveries().contains(&wanted) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no notification of {wanted:?}; got {:?}", self.deliveries());
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn up_referral_end_to_end(backend: Backend) {
    let node = Node::start(backend).await;
    let w = world(&node).await;

    // The hospital is notified of referrals addressed to it.
    let receiver = Receiver::start().await;
    let subscription = node
        .create(
            &json!({"resourceType": "Subscription", "status": "requested",
                "reason": "incoming referrals",
                "criteria": format!("Task?owner=Organization/{HOSPITAL}"),
                "channel": {"type": "rest-hook", "payload": "application/fhir+json",
                            "endpoint": format!("http://{}/hook", receiver.address)}}),
            &w.hospital,
        )
        .await;
    for _ in 0..100 {
        let reply = node
            .get(&format!("Subscription/{subscription}"), &w.hospital)
            .await;
        if reply.body["status"] == "active" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Before any referral the hospital, outside the clinic's region, sees none of its records
    // (they answer as unknown ones do).
    assert_outcome(
        &node
            .get(&format!("Patient/{}", w.patient), &w.hospital)
            .await,
        404,
    );

    // Creating a referral: only the sender, only as requested/draft, with both parties.
    let focus = node
        .create(&service_request(&w.patient, CLINIC, HOSPITAL), &w.clinic)
        .await;
    let task = referral_task(&w.patient, &focus, CLINIC, HOSPITAL, "up");
    assert_refused(
        &node.post("Task", &task, &w.hospital).await,
        403,
        &["sending organisation", CLINIC],
    );
    let mut accepted_at_birth = task.clone();
    accepted_at_birth["status"] = json!("accepted");
    assert_refused(
        &node.post("Task", &accepted_at_birth, &w.clinic).await,
        422,
        &["draft or requested", "accepted"],
    );
    let mut no_owner = task.clone();
    no_owner.as_object_mut().expect("object").remove("owner");
    assert_refused(
        &node.post("Task", &no_owner, &w.clinic).await,
        422,
        &["owner"],
    );
    let id = node.create(&task, &w.clinic).await;
    receiver.wait_for(&id, "requested").await;

    // The work queue: the receiver finds it; a hospital that is no party does not.
    let queue = format!("Task?owner=Organization/{HOSPITAL}&status=requested");
    let reply = node.get(&queue, &w.hospital).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.ids(), vec![id.clone()]);
    let reply = node
        .get(&format!("Task?owner=Organization/{HOSPITAL}"), &w.other)
        .await;
    assert!(reply.ids().is_empty(), "{}", reply.body);

    // Every refused transition, each with its status and a message naming the states.
    // A third organisation cannot see the referral: for it, the Task does not exist.
    assert_refused(&node.op(&id, "$accept", &[], &w.other).await, 404, &[]);
    assert_refused(
        &node.op(&id, "$accept", &[], &w.clinic).await,
        403,
        &["receiving organisation", HOSPITAL, "accepted"],
    );
    let mut skip = node.get(&format!("Task/{id}"), &w.hospital).await.body;
    skip["status"] = json!("completed");
    assert_refused(
        &node.put(&format!("Task/{id}"), &skip, &w.hospital).await,
        409,
        &[
            "requested",
            "completed",
            "received, accepted, rejected, cancelled",
        ],
    );
    assert_refused(
        &node.op(&id, "$reject", &[], &w.hospital).await,
        422,
        &["statusReason"],
    );
    assert_refused(
        &node.op(&id, "$cancel", &[], &w.hospital).await,
        403,
        &["sending organisation", "cancelled"],
    );
    let patch = json!([{"op": "replace", "path": "/owner/reference",
                        "value": format!("Organization/{OTHER}")}]);
    let reply = node
        .client
        .patch(format!("{}/Task/{id}", node.base))
        .bearer_auth(&w.clinic)
        .header("content-type", "application/json-patch+json")
        .body(patch.to_string())
        .send()
        .await
        .expect("patch");
    assert_eq!(reply.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_refused(
        &node
            .send(Method::DELETE, &format!("Task/{id}"), None, &w.clinic)
            .await,
        409,
        &["cannot be deleted"],
    );
    assert_refused(
        &node
            .op(&id, "$transition", &[status_param("finished")], &w.hospital)
            .await,
        422,
        &["finished"],
    );

    // The receiver receives, then accepts with a business status.
    let reply = node.op(&id, "$receive", &[], &w.hospital).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["status"], "received");
    let reply = node
        .op(
            &id,
            "$accept",
            &[
                json!({"name": "businessStatus", "valueCode": "bed-assigned"}),
                json!({"name": "note", "valueString": "Cardiology ward, bed 12"}),
            ],
            &w.hospital,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let accepted = reply.body;
    assert_eq!(accepted["status"], "accepted");
    assert_eq!(
        accepted["businessStatus"]["coding"][0]["code"],
        "bed-assigned"
    );
    assert_eq!(
        accepted["note"][0]["authorReference"]["reference"],
        format!("Organization/{HOSPITAL}")
    );
    let grant = accepted["output"][0]["valueReference"]["reference"]
        .as_str()
        .expect("the access grant output")
        .to_owned();
    assert!(grant.starts_with("Consent/"), "{grant}");
    receiver.wait_for(&id, "accepted").await;

    // The grant: the hospital now reads the patient's records held by the clinic.
    let consent = node.get(&grant, &node.system).await.body;
    assert_eq!(consent["status"], "active");
    assert_eq!(
        consent["provision"]["actor"][0]["reference"]["reference"],
        format!("Organization/{HOSPITAL}")
    );
    assert_eq!(
        consent["extension"][0]["valueReference"]["reference"],
        format!("Task/{id}")
    );
    let reply = node
        .get(&format!("Patient/{}", w.patient), &w.hospital)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let reply = node
        .get(&format!("Condition/{}", w.condition), &w.hospital)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // …but a hospital that is no party still does not.
    assert_outcome(
        &node
            .get(&format!("Condition/{}", w.condition), &w.other)
            .await,
        404,
    );

    // The grant's creation is in the audit trail, with the referral it came from.
    let audit = node
        .get(
            &format!("AuditEvent?patient=Patient/{}&_count=200", w.patient),
            &node.system,
        )
        .await;
    assert_eq!(audit.status, StatusCode::OK, "{}", audit.body);
    let granted = audit.entries().into_iter().any(|event| {
        let whats: Vec<&str> = event["entity"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["what"]["reference"].as_str())
            .collect();
        whats.contains(&format!("Task/{id}").as_str()) && whats.contains(&grant.as_str())
    });
    assert!(granted, "no audit record names Task/{id} and {grant}");

    // The client cannot forge or drop the grant output.
    let mut forged = node.get(&format!("Task/{id}"), &w.hospital).await.body;
    forged["output"] = json!([{"type": {"coding": [{"system": "urn:phip:workflow", "code": "access-grant"}]},
                               "valueReference": {"reference": "Consent/forged"}}]);
    let reply = node.put(&format!("Task/{id}"), &forged, &w.hospital).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["output"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        reply.body["output"][0]["valueReference"]["reference"],
        grant.as_str()
    );

    // Start and complete; a completed referral is not reopened, nor edited.
    assert_eq!(
        node.op(&id, "$start", &[], &w.hospital).await.status,
        StatusCode::OK
    );
    let reply = node
        .op(
            &id,
            "$complete",
            &[json!({"name": "businessStatus", "valueCode": "discharged"})],
            &w.hospital,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let mut reopen = reply.body.clone();
    reopen["status"] = json!("in-progress");
    assert_refused(
        &node.put(&format!("Task/{id}"), &reopen, &w.hospital).await,
        409,
        &["completed", "in-progress", "entered-in-error"],
    );
    assert_refused(
        &node.op(&id, "$cancel", &[], &w.clinic).await,
        409,
        &["completed", "cancelled"],
    );
    let mut edit = reply.body.clone();
    edit["description"] = json!("late edit");
    assert_refused(
        &node.put(&format!("Task/{id}"), &edit, &w.hospital).await,
        409,
        &["completed"],
    );
    receiver.wait_for(&id, "completed").await;
    node.stop().await;
}

async fn access_grant_ends_at_expiry_and_cancellation(backend: Backend) {
    let node = Node::start(backend).await;
    let w = world(&node).await;
    let condition = format!("Condition/{}", w.condition);

    // Rejection needs a reason; with one, the referral ends and grants nothing.
    let rejected = refer_up(&node, &w, HOSPITAL).await;
    let reply = node
        .op(
            &rejected,
            "$reject",
            &[json!({"name": "reason", "valueString": "no cardiology bed this week"})],
            &w.hospital,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body["statusReason"]["text"],
        "no cardiology bed this week"
    );
    assert!(reply.body.get("output").is_none(), "{}", reply.body);
    assert_outcome(&node.get(&condition, &w.hospital).await, 404);

    // Accepted: access; the grant's period passes (its end moved into the past): no access.
    let first = refer_up(&node, &w, HOSPITAL).await;
    let accepted = node.op(&first, "$accept", &[], &w.hospital).await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);
    assert_eq!(
        node.get(&condition, &w.hospital).await.status,
        StatusCode::OK
    );
    let grant = accepted.body["output"][0]["valueReference"]["reference"]
        .as_str()
        .expect("grant")
        .to_owned();
    let mut consent = node.get(&grant, &node.system).await.body;
    let start = consent["provision"]["period"]["start"]
        .as_str()
        .expect("start")
        .to_owned();
    let end = consent["provision"]["period"]["end"]
        .as_str()
        .expect("end")
        .to_owned();
    let days = chrono::DateTime::parse_from_rfc3339(&end).expect("end")
        - chrono::DateTime::parse_from_rfc3339(&start).expect("start");
    assert_eq!(days.num_days(), 30, "the default grant lasts 30 days");
    let past =
        (Utc::now() - chrono::Duration::minutes(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    consent["provision"]["period"]["end"] = json!(past);
    // The grant is server-owned: no token may move its end, not even an operator's.
    assert_outcome(&node.put(&grant, &consent, &node.system).await, 403);
    // Time passes: the grant's end moves into the past, as only the server could write it.
    let engine = node.engine.clone();
    let grant_id = grant.trim_start_matches("Consent/").to_owned();
    tokio::task::spawn_blocking(move || {
        let server = phip_engine::Principal::unrestricted("test-clock");
        engine.write_transaction(&server, |tx| {
            let current = tx.read("Consent", &grant_id)?.expect("grant");
            tx.write(phip_store::WriteRequest {
                resource_type: "Consent".into(),
                id: grant_id.clone(),
                resource: Some(consent),
                expected_version: Some(current.version_id),
            })?;
            Ok(())
        })
    })
    .await
    .expect("join")
    .expect("expire the grant");
    assert_outcome(&node.get(&condition, &w.hospital).await, 404);

    // Accepted again, then cancelled by the sender: the grant is revoked at once.
    let second = refer_up(&node, &w, HOSPITAL).await;
    let accepted = node.op(&second, "$accept", &[], &w.hospital).await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);
    assert_eq!(
        node.get(&condition, &w.hospital).await.status,
        StatusCode::OK
    );
    let grant = accepted.body["output"][0]["valueReference"]["reference"]
        .as_str()
        .expect("grant")
        .to_owned();
    let reply = node
        .op(
            &second,
            "$cancel",
            &[json!({"name": "reason", "valueString": "patient moved"})],
            &w.clinic,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["status"], "cancelled");
    assert_eq!(
        node.get(&grant, &node.system).await.body["status"],
        "inactive"
    );
    assert_outcome(&node.get(&condition, &w.hospital).await, 404);
    node.stop().await;
}

async fn down_referral_carries_the_discharge_summary(backend: Backend) {
    let node = Node::start(backend).await;
    let w = world(&node).await;
    // The hospital's discharge summary, held in the city: the clinic cannot read it yet.
    let summary = node
        .create(
            &json!({"resourceType": "DocumentReference", "status": "current",
                "type": {"coding": [{"system": "http://loinc.org", "code": "18842-5",
                                     "display": "Discharge summary"}]},
                "subject": {"reference": format!("Patient/{}", w.patient)},
                "content": [{"attachment": {"contentType": "text/plain",
                    "data": "5Ye66Zmi5bCP57uT77ya5oCl5oCn5b+D6IKM5qKX5q2777yM5bey6KGMUENJ"}}]}),
            &w.hospital,
        )
        .await;
    let document = format!("DocumentReference/{summary}");
    assert_outcome(&node.get(&document, &w.clinic).await, 404);

    let focus = node
        .create(&service_request(&w.patient, HOSPITAL, CLINIC), &w.hospital)
        .await;
    let mut task = referral_task(&w.patient, &focus, HOSPITAL, CLINIC, "down");
    task["businessStatus"] =
        json!({"coding": [{"system": "urn:phip:workflow:referral-status", "code": "discharged"}]});
    assert_refused(
        &node.post("Task", &task, &w.hospital).await,
        422,
        &["discharge summary", "18842-5"],
    );
    task["input"] = json!([{"type": {"coding": [{"system": "http://loinc.org", "code": "18842-5"}]},
                            "valueReference": {"reference": "DocumentReference/missing"}}]);
    assert_refused(
        &node.post("Task", &task, &w.hospital).await,
        422,
        &["does not exist"],
    );
    task["input"][0]["valueReference"]["reference"] = json!(document);
    let id = node.create(&task, &w.hospital).await;

    // The clinic's work queue, then acceptance: now the summary is readable via the grant.
    let queue = node
        .get(
            &format!("Task?owner=Organization/{CLINIC}&status=requested"),
            &w.clinic,
        )
        .await;
    assert_eq!(queue.ids(), vec![id.clone()], "{}", queue.body);
    let reply = node.op(&id, "$accept", &[], &w.clinic).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let reply = node.get(&document, &w.clinic).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["type"]["coding"][0]["code"], "18842-5");
    // Taking the summary out of an accepted down-referral is refused too.
    let mut stripped = node.get(&format!("Task/{id}"), &w.clinic).await.body;
    stripped.as_object_mut().expect("object").remove("input");
    assert_refused(
        &node.put(&format!("Task/{id}"), &stripped, &w.clinic).await,
        422,
        &["discharge summary"],
    );
    node.stop().await;
}

fn minutes_ago(minutes: i64) -> String {
    (Utc::now() - chrono::Duration::minutes(minutes)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn part<'a>(parameter: &'a Value, name: &str) -> &'a Value {
    parameter["part"]
        .as_array()
        .and_then(|parts| parts.iter().find(|p| p["name"] == name))
        .unwrap_or(&Value::Null)
}

fn minutes_of(value: &Value) -> f64 {
    value["valueQuantity"]["value"].as_f64().unwrap_or_else(|| {
        value["valueQuantity"]["value"]
            .to_string()
            .parse()
            .unwrap_or(f64::NAN)
    })
}

async fn referral_report_counts_and_times(backend: Backend) {
    let node = Node::start(backend).await;
    let w = world(&node).await;
    let send = |to: &'static str, minutes: i64| {
        let (node, w) = (&node, &w);
        async move {
            let focus = node
                .create(&service_request(&w.patient, CLINIC, to), &w.clinic)
                .await;
            let mut task = referral_task(&w.patient, &focus, CLINIC, to, "up");
            task["authoredOn"] = json!(minutes_ago(minutes));
            node.create(&task, &w.clinic).await
        }
    };
    // Three accepted by the city hospital after 60, 120 and 240 minutes; one rejected by the
    // other hospital; one still waiting.
    let mut accepted = Vec::new();
    for minutes in [60, 120, 240] {
        accepted.push(send(HOSPITAL, minutes).await);
    }
    let rejected = send(OTHER, 30).await;
    let _waiting = send(HOSPITAL, 10).await;
    for id in &accepted {
        let reply = node.op(id, "$accept", &[], &w.hospital).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let reply = node
        .op(
            &rejected,
            "$reject",
            &[json!({"name": "reason", "valueString": "out of scope"})],
            &w.other,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // Authored-on cannot be rewritten to flatter the figures.
    let mut backdated = node
        .get(&format!("Task/{}", accepted[0]), &w.hospital)
        .await
        .body;
    backdated["authoredOn"] = json!(minutes_ago(1));
    assert_refused(
        &node
            .put(&format!("Task/{}", accepted[0]), &backdated, &w.hospital)
            .await,
        422,
        &["authoredOn"],
    );

    let report = node.get("Task/$referral-report", &node.system).await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.body);
    let params = report.body["parameter"]
        .as_array()
        .expect("parameters")
        .clone();
    let named = |name: &str| {
        params
            .iter()
            .filter(|p| p["name"] == name)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(named("total")[0]["valueInteger"], 5);
    let by_status: Vec<(String, u64)> = named("status")
        .iter()
        .map(|p| {
            (
                part(p, "code")["valueCode"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                part(p, "count")["valueInteger"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        by_status,
        vec![
            ("accepted".into(), 3),
            ("rejected".into(), 1),
            ("requested".into(), 1)
        ]
    );
    // Hand-computed: acceptance after 60, 120, 240 minutes → mean 140, median 120 (the test
    // itself takes a few seconds, hence the tolerance).
    let timing = &named("timeToAcceptance")[0];
    assert_eq!(part(timing, "count")["valueInteger"], 3);
    assert!(
        (minutes_of(part(timing, "mean")) - 140.0).abs() < 1.0,
        "{timing}"
    );
    assert!(
        (minutes_of(part(timing, "median")) - 120.0).abs() < 1.0,
        "{timing}"
    );
    let org = |role: &str, id: &str| {
        named("organization")
            .into_iter()
            .find(|p| {
                part(p, "role")["valueCode"] == role
                    && part(p, "organization")["valueReference"]["reference"]
                        == format!("Organization/{id}")
            })
            .unwrap_or_else(|| panic!("no {role} row for {id}"))
    };
    let hospital = org("receiver", HOSPITAL);
    assert_eq!(part(&hospital, "count")["valueInteger"], 4);
    assert_eq!(part(&hospital, "accepted")["valueInteger"], 3);
    assert!((minutes_of(part(part(&hospital, "timeToAcceptance"), "median")) - 120.0).abs() < 1.0);
    let other = org("receiver", OTHER);
    assert_eq!(part(&other, "count")["valueInteger"], 1);
    assert_eq!(part(&other, "rejected")["valueInteger"], 1);
    assert_eq!(part(&other, "accepted")["valueInteger"], 0);
    assert_eq!(part(&org("sender", CLINIC), "count")["valueInteger"], 5);

    // Narrowed to one organisation and to a period.
    let narrowed = node
        .get(
            &format!("Task/$referral-report?organization=Organization/{OTHER}"),
            &node.system,
        )
        .await;
    assert_eq!(
        narrowed.body["parameter"][0]["valueInteger"], 1,
        "{}",
        narrowed.body
    );
    let recent = node
        .get(
            &format!(
                "Task/$referral-report?start={}",
                minutes_ago(90).replace('+', "%2B")
            ),
            &node.system,
        )
        .await;
    assert_eq!(
        recent.body["parameter"][0]["valueInteger"], 3,
        "{}",
        recent.body
    );
    // An institution reports on its own referrals only.
    let own = node.get("Task/$referral-report", &w.other).await;
    assert_eq!(own.body["parameter"][0]["valueInteger"], 1, "{}", own.body);
    let nosy = node
        .get(
            &format!("Task/$referral-report?organization={HOSPITAL}"),
            &w.other,
        )
        .await;
    assert_outcome(&nosy, 403);
    assert_outcome(
        &node
            .get("Task/$referral-report?bogus=1", &node.system)
            .await,
        400,
    );
    node.stop().await;
}

/// Every `Task.status` of R4.
const TASK_STATUSES: [&str; 12] = [
    "draft",
    "requested",
    "received",
    "accepted",
    "rejected",
    "ready",
    "cancelled",
    "in-progress",
    "on-hold",
    "failed",
    "completed",
    "entered-in-error",
];

/// The legal moves of a referral, written out from the R4 Task state diagram (not taken from
/// the code under test), with the party that makes each: the sender issues, withdraws and voids;
/// the receiver does the rest.
const LEGAL_MOVES: &[(&str, &[&str])] = &[
    ("draft", &["requested", "cancelled", "entered-in-error"]),
    (
        "requested",
        &[
            "received",
            "accepted",
            "rejected",
            "cancelled",
            "entered-in-error",
        ],
    ),
    (
        "received",
        &["accepted", "rejected", "cancelled", "entered-in-error"],
    ),
    (
        "accepted",
        &["ready", "in-progress", "cancelled", "entered-in-error"],
    ),
    (
        "ready",
        &["in-progress", "failed", "cancelled", "entered-in-error"],
    ),
    (
        "in-progress",
        &[
            "on-hold",
            "completed",
            "failed",
            "cancelled",
            "entered-in-error",
        ],
    ),
    (
        "on-hold",
        &["in-progress", "failed", "cancelled", "entered-in-error"],
    ),
    ("rejected", &["entered-in-error"]),
    ("cancelled", &["entered-in-error"]),
    ("failed", &["entered-in-error"]),
    ("completed", &["entered-in-error"]),
    ("entered-in-error", &[]),
];

fn legal_from(status: &str) -> &'static [&'static str] {
    LEGAL_MOVES
        .iter()
        .find(|(from, _)| *from == status)
        .map(|(_, to)| *to)
        .unwrap_or(&[])
}

fn made_by_sender(status: &str) -> bool {
    matches!(
        status,
        "draft" | "requested" | "cancelled" | "entered-in-error"
    )
}

/// The moves that bring a new referral (created `requested`, or `draft`) to `status`.
fn path_to(status: &str) -> &'static [&'static str] {
    match status {
        "received" => &["received"],
        "accepted" => &["accepted"],
        "rejected" => &["rejected"],
        "ready" => &["accepted", "ready"],
        "in-progress" => &["accepted", "in-progress"],
        "on-hold" => &["accepted", "in-progress", "on-hold"],
        "failed" => &["accepted", "in-progress", "failed"],
        "completed" => &["accepted", "in-progress", "completed"],
        "cancelled" => &["cancelled"],
        "entered-in-error" => &["entered-in-error"],
        _ => &[],
    }
}

/// The referral's parties as (entitled to make `status`, the other one).
fn party<'w>(w: &'w World, status: &str) -> (&'w str, &'w str) {
    if made_by_sender(status) {
        (&w.clinic, &w.hospital)
    } else {
        (&w.hospital, &w.clinic)
    }
}

/// The Parameters of `$transition` to `to`, with a reason (which a rejection needs).
fn move_params(to: &str) -> Vec<Value> {
    vec![
        status_param(to),
        json!({"name": "reason", "valueString": format!("test move to {to}")}),
    ]
}

/// A new referral brought to `status` by legal moves of the entitled parties.
async fn referral_in(node: &Node, w: &World, status: &str) -> String {
    let focus = node
        .create(&service_request(&w.patient, CLINIC, HOSPITAL), &w.clinic)
        .await;
    let mut task = referral_task(&w.patient, &focus, CLINIC, HOSPITAL, "up");
    if status == "draft" {
        task["status"] = json!("draft");
    }
    let id = node.create(&task, &w.clinic).await;
    for step in path_to(status) {
        let (entitled, _) = party(w, step);
        let reply = node
            .op(&id, "$transition", &move_params(step), entitled)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "to {step}: {}", reply.body);
    }
    id
}

/// The whole Task state machine over HTTP: from every status, every other status is tried.
/// A legal move is refused (403) to the party not entitled to it and made by the one that is;
/// an illegal one is refused (409) even to the entitled party, naming both statuses, and leaves
/// the referral as it was; a finished referral cannot be re-stated.
async fn every_transition_of_the_task_state_machine(backend: Backend) {
    let node = Node::start(backend).await;
    let w = world(&node).await;
    let mut moves_checked = 0;
    for from in TASK_STATUSES {
        let id = referral_in(&node, &w, from).await;
        for to in TASK_STATUSES {
            if to == from || legal_from(from).contains(&to) {
                continue;
            }
            let (entitled, _) = party(&w, to);
            let reply = node
                .op(&id, "$transition", &move_params(to), entitled)
                .await;
            assert_refused(&reply, 409, &[from, to]);
            moves_checked += 1;
        }
        if legal_from(from).len() <= 1 {
            // Finished (only a correction is left): not even re-stated.
            let (entitled, _) = party(&w, from);
            let reply = node
                .op(&id, "$transition", &move_params(from), entitled)
                .await;
            assert_refused(&reply, 409, &[from]);
        }
        let current = node.get(&format!("Task/{id}"), &node.system).await;
        assert_eq!(
            current.body["status"], from,
            "a refused move changed the referral"
        );
        for to in legal_from(from) {
            let id = referral_in(&node, &w, from).await;
            let (entitled, other) = party(&w, to);
            let refused = node.op(&id, "$transition", &move_params(to), other).await;
            assert_refused(&refused, 403, &[to]);
            let reply = node
                .op(&id, "$transition", &move_params(to), entitled)
                .await;
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "{from} → {to}: {}",
                reply.body
            );
            assert_eq!(reply.body["status"], *to, "{from} → {to}");
            moves_checked += 1;
        }
    }
    assert_eq!(
        moves_checked,
        TASK_STATUSES.len() * (TASK_STATUSES.len() - 1)
    );
    node.stop().await;
}

on_both_backends!(
    every_transition_of_the_task_state_machine,
    up_referral_end_to_end,
    access_grant_ends_at_expiry_and_cancellation,
    down_referral_carries_the_discharge_summary,
    referral_report_counts_and_times,
);
