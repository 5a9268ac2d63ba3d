//! REST interactions over real HTTP: create, read, vread, update, patch, delete, history,
//! conditional operations, versioning headers, Prefer, errors.

mod common;

use common::{assert_outcome, Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn patient(family: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.2.4.6.3", "value": format!("id-{family}")}],
        "name": [{"family": family, "given": ["Wei"]}],
        "gender": "male",
        "birthDate": "1980-05-17"
    })
}

async fn health_and_metadata(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let health = server.get(&format!("{}/health", server.root)).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "ok");

    let metadata = server.get("metadata").await;
    assert_eq!(metadata.status, StatusCode::OK);
    // Prometheus metrics count what was served, by interaction and status.
    server.get("Patient/nobody").await;
    let metrics = server.get(&format!("{}/metrics", server.root)).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain")));
    let text = metrics.body.as_str().unwrap_or_default();
    assert!(
        text.contains("phip_http_requests_total{interaction=\"capabilities\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("phip_http_requests_total{interaction=\"read\",status=\"404\"} 1"),
        "{text}"
    );
    assert!(text
        .contains("phip_http_request_duration_seconds_bucket{interaction=\"read\",le=\"+Inf\"} 1"));
    assert!(text.contains("phip_mpi_source_records 0"), "{text}");
    assert_eq!(metadata.body["resourceType"], "CapabilityStatement");
    assert_eq!(metadata.body["fhirVersion"], "4.0.1");
    let resources = metadata.body["rest"][0]["resource"]
        .as_array()
        .expect("resources");
    assert!(resources.len() >= 140, "every R4 resource type is listed");
    let patient = resources
        .iter()
        .find(|r| r["type"] == "Patient")
        .expect("Patient");
    let params: Vec<&str> = patient["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for expected in ["birthdate", "family", "identifier", "_id", "_lastUpdated"] {
        assert!(
            params.contains(&expected),
            "Patient search parameter {expected} advertised"
        );
    }
    assert!(metadata
        .header("content-type")
        .unwrap()
        .starts_with("application/fhir+json"));
}

async fn create_read_update_delete_lifecycle(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let created = server.post("Patient", &patient("Zhang")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["meta"]["versionId"], "1");
    assert!(created.body["meta"]["lastUpdated"].is_string());
    assert_eq!(created.header("etag"), Some("W/\"1\""));
    let location = created.header("location").unwrap();
    assert!(
        location.ends_with(&format!("/Patient/{id}/_history/1")),
        "{location}"
    );
    assert!(location.starts_with(&server.base));

    let read = server.get(&format!("Patient/{id}")).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["name"][0]["family"], "Zhang");
    assert_eq!(read.header("etag"), Some("W/\"1\""));
    assert!(read.header("last-modified").is_some());

    let mut changed = read.body.clone();
    changed["name"][0]["family"] = json!("Li");
    let updated = server.put(&format!("Patient/{id}"), &changed).await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["meta"]["versionId"], "2");
    assert_eq!(updated.header("etag"), Some("W/\"2\""));

    let v1 = server.get(&format!("Patient/{id}/_history/1")).await;
    assert_eq!(v1.status, StatusCode::OK);
    assert_eq!(v1.body["name"][0]["family"], "Zhang");
    let v2 = server.get(&format!("Patient/{id}/_history/2")).await;
    assert_eq!(v2.body["name"][0]["family"], "Li");
    assert_eq!(
        server.get(&format!("Patient/{id}/_history/9")).await.status,
        StatusCode::NOT_FOUND
    );

    let deleted = server.delete(&format!("Patient/{id}")).await;
    assert!(deleted.status == StatusCode::OK || deleted.status == StatusCode::NO_CONTENT);
    let gone = server.get(&format!("Patient/{id}")).await;
    assert_outcome(&gone, 410);
    // Versions before the deletion stay readable; the deletion is a version of its own.
    assert_eq!(
        server.get(&format!("Patient/{id}/_history/2")).await.status,
        StatusCode::OK
    );
    assert_outcome(&server.get(&format!("Patient/{id}/_history/3")).await, 410);

    let history = server.get(&format!("Patient/{id}/_history")).await;
    assert_eq!(history.status, StatusCode::OK);
    assert_eq!(history.body["type"], "history");
    assert_eq!(history.body["total"], 3);
    let methods: Vec<&str> = history.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["request"]["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["DELETE", "PUT", "POST"], "newest first");

    // Deleted resources are not found by search.
    assert!(server
        .search_ids(&format!("Patient?_id={id}"))
        .await
        .is_empty());

    // Re-creating by update after delete resumes the version sequence.
    let mut again = patient("Wang");
    again["id"] = json!(id);
    let recreated = server.put(&format!("Patient/{id}"), &again).await;
    assert_eq!(recreated.status, StatusCode::CREATED, "{}", recreated.body);
    assert_eq!(recreated.body["meta"]["versionId"], "4");
}

async fn update_with_client_id_creates(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let mut resource = patient("Chen");
    resource["id"] = json!("chen-1");
    let reply = server.put("Patient/chen-1", &resource).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.body["id"], "chen-1");
    let reply = server.put("Patient/chen-1", &resource).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["meta"]["versionId"], "2");
}

async fn if_match_prevents_lost_updates(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let id = server.create(&patient("Zhao")).await;
    let mut body = server.get(&format!("Patient/{id}")).await.body;
    body["gender"] = json!("female");
    let ok = server
        .send(
            Method::PUT,
            &format!("Patient/{id}"),
            Some(&body),
            &[("if-match", "W/\"1\"")],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let stale = server
        .send(
            Method::PUT,
            &format!("Patient/{id}"),
            Some(&body),
            &[("if-match", "W/\"1\"")],
        )
        .await;
    assert_outcome(&stale, 412);
    let bad = server
        .send(
            Method::PUT,
            &format!("Patient/{id}"),
            Some(&body),
            &[("if-match", "nonsense")],
        )
        .await;
    assert_outcome(&bad, 400);
    assert_eq!(
        server.get(&format!("Patient/{id}")).await.body["meta"]["versionId"],
        "2"
    );
}

async fn concurrent_writers_with_same_if_match_one_wins(backend: Backend) {
    let server = std::sync::Arc::new(TestServer::start_on(backend).await);
    let id = server.create(&patient("Sun")).await;
    for round in 1..=5u32 {
        let current = server.get(&format!("Patient/{id}")).await.body;
        let version = current["meta"]["versionId"].as_str().unwrap().to_owned();
        let mut tasks = Vec::new();
        for writer in 0..8 {
            let server = server.clone();
            let id = id.clone();
            let mut body = current.clone();
            body["name"][0]["given"] = json!([format!("writer-{round}-{writer}")]);
            let tag = format!("W/\"{version}\"");
            tasks.push(tokio::spawn(async move {
                server
                    .send(
                        Method::PUT,
                        &format!("Patient/{id}"),
                        Some(&body),
                        &[("if-match", tag.as_str())],
                    )
                    .await
                    .status
            }));
        }
        let mut statuses = Vec::new();
        for task in tasks {
            statuses.push(task.await.unwrap());
        }
        let wins = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        let conflicts = statuses
            .iter()
            .filter(|s| **s == StatusCode::PRECONDITION_FAILED)
            .count();
        assert_eq!(
            wins, 1,
            "round {round}: exactly one writer wins: {statuses:?}"
        );
        assert_eq!(
            conflicts, 7,
            "round {round}: the others get 412: {statuses:?}"
        );
    }
    let history = server.get(&format!("Patient/{id}/_history")).await;
    assert_eq!(
        history.body["total"], 6,
        "one version per round, no duplicates"
    );
}

async fn conditional_create_update_delete(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let headers = [(
        "if-none-exist",
        "identifier=urn:oid:2.16.840.1.113883.2.4.6.3|id-Qian",
    )];
    let first = server
        .send(Method::POST, "Patient", Some(&patient("Qian")), &headers)
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let second = server
        .send(Method::POST, "Patient", Some(&patient("Qian")), &headers)
        .await;
    assert_eq!(
        second.status,
        StatusCode::OK,
        "existing match returned: {}",
        second.body
    );
    assert_eq!(first.body["id"], second.body["id"]);
    assert_eq!(server.search_ids("Patient?family=Qian").await.len(), 1);

    // Conditional update: one match → update it.
    let mut body = patient("Qian");
    body["gender"] = json!("female");
    let updated = server
        .put(
            "Patient?identifier=urn:oid:2.16.840.1.113883.2.4.6.3|id-Qian",
            &body,
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["id"], first.body["id"]);
    assert_eq!(updated.body["gender"], "female");
    // No match → create.
    let created = server
        .put(
            "Patient?identifier=urn:oid:2.16.840.1.113883.2.4.6.3|id-Zhou",
            &patient("Zhou"),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    // Several matches → 412.
    server.create(&patient("Wu")).await;
    server.create(&patient("Wu")).await;
    let ambiguous = server
        .send(
            Method::POST,
            "Patient",
            Some(&patient("Wu")),
            &[("if-none-exist", "family=Wu")],
        )
        .await;
    assert_outcome(&ambiguous, 412);
    let ambiguous = server.put("Patient?family=Wu", &patient("Wu")).await;
    assert_outcome(&ambiguous, 412);

    // Conditional delete removes the matches.
    let deleted = server.delete("Patient?family=Wu").await;
    assert!(deleted.status.is_success(), "{}", deleted.body);
    assert!(server.search_ids("Patient?family=Wu").await.is_empty());
    assert_eq!(server.search_ids("Patient?family=Qian").await.len(), 1);
}

async fn concurrent_conditional_creates_make_one_resource(backend: Backend) {
    let server = std::sync::Arc::new(TestServer::start_on(backend).await);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            server
                .send(
                    Method::POST,
                    "Patient",
                    Some(&patient("Feng")),
                    &[(
                        "if-none-exist",
                        "identifier=urn:oid:2.16.840.1.113883.2.4.6.3|id-Feng",
                    )],
                )
                .await
        }));
    }
    let mut created = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        let status = reply.status;
        assert!(
            status == StatusCode::CREATED || status == StatusCode::OK,
            "{status}: {}",
            reply.body
        );
        if status == StatusCode::CREATED {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    assert_eq!(server.search_ids("Patient?family=Feng").await.len(), 1);
}

async fn json_patch(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let id = server.create(&patient("He")).await;
    let patch = json!([
        {"op": "replace", "path": "/gender", "value": "female"},
        {"op": "add", "path": "/name/0/given/-", "value": "Min"}
    ]);
    let reply = server
        .send(
            Method::PATCH,
            &format!("Patient/{id}"),
            Some(&patch),
            &[("content-type", "application/json-patch+json")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["gender"], "female");
    assert_eq!(reply.body["name"][0]["given"], json!(["Wei", "Min"]));
    assert_eq!(reply.body["meta"]["versionId"], "2");
    // A patch producing an invalid resource is refused and changes nothing.
    let bad = json!([{"op": "add", "path": "/unknownElement", "value": 1}]);
    let reply = server
        .send(
            Method::PATCH,
            &format!("Patient/{id}"),
            Some(&bad),
            &[("content-type", "application/json-patch+json")],
        )
        .await;
    assert_outcome(&reply, 422);
    let stale = server
        .send(
            Method::PATCH,
            &format!("Patient/{id}"),
            Some(&patch),
            &[
                ("content-type", "application/json-patch+json"),
                ("if-match", "W/\"1\""),
            ],
        )
        .await;
    assert_outcome(&stale, 412);
    assert_eq!(
        server.get(&format!("Patient/{id}")).await.body["meta"]["versionId"],
        "2"
    );
}

async fn prefer_return(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let minimal = server
        .send(
            Method::POST,
            "Patient",
            Some(&patient("Ma")),
            &[("prefer", "return=minimal")],
        )
        .await;
    assert_eq!(minimal.status, StatusCode::CREATED);
    assert!(minimal.body.is_null(), "no body: {}", minimal.body);
    assert!(minimal.header("location").is_some());
    let outcome = server
        .send(
            Method::POST,
            "Patient",
            Some(&patient("Ma")),
            &[("prefer", "return=OperationOutcome")],
        )
        .await;
    assert_eq!(outcome.status, StatusCode::CREATED);
    assert_eq!(outcome.body["resourceType"], "OperationOutcome");
}

async fn bad_input_gets_operation_outcomes_and_changes_nothing(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let id = server.create(&patient("Guo")).await;

    let raw = server
        .client
        .post(server.url("Patient"))
        .bearer_auth(server.token.clone().unwrap_or_default())
        .header("content-type", "application/fhir+json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["resourceType"], "OperationOutcome");

    assert_outcome(
        &server
            .post(
                "Patient",
                &json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}),
            )
            .await,
        400,
    );
    assert_outcome(&server.post("Patient", &json!({"name": "x"})).await, 400);
    let unknown = server
        .post(
            "Patient",
            &json!({"resourceType": "Patient", "nickname": "x"}),
        )
        .await;
    assert_outcome(&unknown, 400);
    assert!(
        unknown.body.to_string().contains("nickname"),
        "names the element: {}",
        unknown.body
    );
    let wrong_type = server
        .post(
            "Patient",
            &json!({"resourceType": "Patient", "birthDate": 1980}),
        )
        .await;
    assert_outcome(&wrong_type, 400);
    assert!(
        wrong_type.body.to_string().contains("birthDate"),
        "{}",
        wrong_type.body
    );
    assert_outcome(
        &server
            .post(
                "Patient",
                &json!({"resourceType": "Patient", "birthDate": "1980-13-45"}),
            )
            .await,
        400,
    );
    assert_outcome(&server.get("NotAType/1").await, 404);
    assert_outcome(&server.get("Patient/does-not-exist").await, 404);
    assert_outcome(&server.get("Patient/bad$id").await, 400);

    // Update with mismatching ids.
    let mut body = server.get(&format!("Patient/{id}")).await.body;
    body["id"] = json!("other");
    assert_outcome(&server.put(&format!("Patient/{id}"), &body).await, 400);
    // Update with an invalid body leaves the stored resource alone.
    let invalid = json!({"resourceType": "Patient", "id": id, "gender": ["male"]});
    assert_outcome(&server.put(&format!("Patient/{id}"), &invalid).await, 400);
    let current = server.get(&format!("Patient/{id}")).await;
    assert_eq!(current.body["meta"]["versionId"], "1");
    assert_eq!(current.body["name"][0]["family"], "Guo");

    // Unsupported media types and methods.
    let xml = server
        .send(
            Method::GET,
            &format!("Patient/{id}"),
            None,
            &[("accept", "application/fhir+xml")],
        )
        .await;
    assert_outcome(&xml, 406);
    let wrong_content = server
        .send(
            Method::POST,
            "Patient",
            Some(&patient("x")),
            &[("content-type", "application/xml")],
        )
        .await;
    assert_outcome(&wrong_content, 415);
    assert_outcome(
        &server
            .send(
                Method::POST,
                &format!("Patient/{id}"),
                Some(&patient("x")),
                &[],
            )
            .await,
        405,
    );
    assert_outcome(&server.get(&format!("{}/nowhere", server.root)).await, 404);
}

async fn type_and_system_history(backend: Backend) {
    // Practitioners rather than Patients: every Patient write also versions the patient
    // index's golden record, which would blur the counts this test is about.
    let practitioner = |family: &str| json!({"resourceType": "Practitioner", "name": [{"family": family, "given": ["Wei"]}]});
    let server = TestServer::start_on(backend).await;
    let a = server.create(&practitioner("Lin")).await;
    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let b = server.create(&practitioner("Luo")).await;
    server
        .create(&json!({"resourceType": "Organization", "name": "Community clinic"}))
        .await;
    let mut body = server.get(&format!("Practitioner/{a}")).await.body;
    body["gender"] = json!("other");
    server.put(&format!("Practitioner/{a}"), &body).await;

    let type_history = server.get("Practitioner/_history").await;
    assert_eq!(type_history.body["total"], 3);
    let system_history = server.get("_history").await;
    assert_eq!(system_history.body["total"], 4);
    let recent = server
        .get(&format!(
            "Practitioner/_history?_since={}",
            since.replace('+', "%2B")
        ))
        .await;
    assert_eq!(recent.status, StatusCode::OK, "{}", recent.body);
    let ids: Vec<&str> = recent.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a.as_str(), b.as_str()], "newest first, only since");

    // Paging through history.
    let page = server.get("_history?_count=3").await;
    assert_eq!(page.body["entry"].as_array().unwrap().len(), 3);
    let next = page.link("next").expect("next link");
    let page2 = server.get(&next).await;
    assert_eq!(page2.body["entry"].as_array().unwrap().len(), 1);
}

on_all_backends!(
    health_and_metadata,
    create_read_update_delete_lifecycle,
    update_with_client_id_creates,
    if_match_prevents_lost_updates,
    concurrent_writers_with_same_if_match_one_wins,
    conditional_create_update_delete,
    concurrent_conditional_creates_make_one_resource,
    json_patch,
    prefer_return,
    bad_input_gets_operation_outcomes_and_changes_nothing,
    type_and_system_history
);
