//! The patient index over HTTP: resident-ID checks on write, linking of source records to
//! golden records, `$match`, PIXm `$ihe-pix`, `_master`, the review queue, merge/unmerge and
//! unlink — on both backends.

mod common;

use common::{assert_outcome, resident_id, Backend, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

const RESIDENT_ID: &str = "urn:oid:2.16.156.10011.1.1";
const MRN_A: &str = "https://phip.cn/fhir/sid/mrn/hospital-a";
const MRN_B: &str = "https://phip.cn/fhir/sid/mrn/clinic-b";

/// The other check character: a deliberately wrong one.
fn with_wrong_check(id: &str) -> String {
    let last = if id.ends_with('1') { '2' } else { '1' };
    format!("{}{last}", &id[..17])
}

fn patient(
    mrn_system: &str,
    mrn: &str,
    name: Value,
    birth: &str,
    gender: &str,
    rid: Option<&str>,
) -> Value {
    let mut identifiers = vec![json!({"system": mrn_system, "value": mrn})];
    if let Some(rid) = rid {
        identifiers.push(json!({"system": RESIDENT_ID, "value": rid}));
    }
    json!({
        "resourceType": "Patient",
        "identifier": identifiers,
        "name": name,
        "gender": gender,
        "birthDate": birth,
    })
}

fn refer_of(patient: &Value) -> Option<String> {
    patient["link"].as_array()?.iter().find_map(|l| {
        (l["type"] == "refer").then(|| {
            l["other"]["reference"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches("Patient/")
                .to_owned()
        })
    })
}

async fn golden_of(server: &TestServer, id: &str) -> String {
    let reply = server.get(&format!("Patient/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    refer_of(&reply.body)
        .unwrap_or_else(|| panic!("Patient/{id} has no refer link: {}", reply.body))
}

fn parameters(resource: Value) -> Value {
    json!({"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": resource}]})
}

async fn resident_ids_are_checked_on_write(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let good = resident_id("110105", "19800517", "123");
    let bad = with_wrong_check(&good);

    let reply = server
        .post(
            "Patient",
            &patient(
                MRN_A,
                "A1",
                json!([{"text": "张伟"}]),
                "1980-05-17",
                "male",
                Some(&bad),
            ),
        )
        .await;
    assert_outcome(&reply, 422);
    let text = reply.body.to_string();
    assert!(text.contains("check character"), "{text}");
    assert!(text.contains("Patient.identifier[1].value"), "{text}");

    // The birth date and sex the number encodes must agree with the record.
    let reply = server
        .post(
            "Patient",
            &patient(
                MRN_A,
                "A1",
                json!([{"text": "张伟"}]),
                "1980-05-18",
                "female",
                Some(&good),
            ),
        )
        .await;
    assert_outcome(&reply, 422);
    let text = reply.body.to_string();
    assert!(
        text.contains("birth date") && text.contains("sex"),
        "{text}"
    );

    // Nothing was stored by the refused writes.
    assert!(server.search_ids("Patient?identifier=A1").await.is_empty());

    // A 15-digit legacy number is upgraded to 18 characters, the old one kept as `old`.
    let legacy = "110105800517123";
    let upgraded = resident_id("110105", "19800517", "123");
    let id = server
        .create(&patient(
            MRN_A,
            "A1",
            json!([{"text": "张伟"}]),
            "1980-05-17",
            "male",
            Some(legacy),
        ))
        .await;
    let stored = server.get(&format!("Patient/{id}")).await.body;
    let values: Vec<(String, String)> = stored["identifier"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["value"].as_str().unwrap().to_owned(),
                i["use"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        values.contains(&(upgraded.clone(), String::new())),
        "{values:?}"
    );
    assert!(
        values.contains(&(legacy.to_owned(), "old".to_owned())),
        "{values:?}"
    );
    assert_eq!(
        server
            .search_ids(&format!("Patient?identifier={RESIDENT_ID}|{upgraded}"))
            .await,
        vec![id]
    );
}

async fn same_person_from_two_institutions_is_linked(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let rid = resident_id("110105", "19800517", "123");
    let a = server
        .create(&patient(
            MRN_A,
            "A-001",
            json!([{"text": "张伟", "family": "张", "given": ["伟"]}]),
            "1980-05-17",
            "male",
            Some(&rid),
        ))
        .await;
    // The clinic spells the name in pinyin, family name last.
    let b = server
        .create(&patient(
            MRN_B,
            "B-77",
            json!([{"family": "Zhang", "given": ["Wei"]}]),
            "1980-05-17",
            "male",
            Some(&rid),
        ))
        .await;
    let golden_a = golden_of(&server, &a).await;
    let golden_b = golden_of(&server, &b).await;
    assert_eq!(golden_a, golden_b, "one person, one golden record");

    let golden = server.get(&format!("Patient/{golden_a}")).await.body;
    let tag = &golden["meta"]["tag"][0];
    assert_eq!(tag["system"], "urn:phip:mpi");
    assert_eq!(tag["code"], "golden");
    let identifiers = golden["identifier"].to_string();
    assert!(
        identifiers.contains("A-001") && identifiers.contains("B-77") && identifiers.contains(&rid)
    );
    let mut seealso: Vec<String> = golden["link"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["type"] == "seealso")
        .map(|l| l["other"]["reference"].as_str().unwrap().to_owned())
        .collect();
    seealso.sort();
    let mut expected = vec![format!("Patient/{a}"), format!("Patient/{b}")];
    expected.sort();
    assert_eq!(seealso, expected);

    // Ordinary searches see the institutions' records; _master=true resolves to the person.
    assert_eq!(
        server.search_ids("Patient?identifier=A-001").await,
        vec![a.clone()]
    );
    assert_eq!(
        server
            .search_ids(&format!("Patient?identifier={RESIDENT_ID}|{rid}"))
            .await
            .len(),
        2
    );
    assert_eq!(
        server
            .search_ids("Patient?identifier=B-77&_master=true")
            .await,
        vec![golden_a.clone()]
    );
    // Conditional updates find the institution's record, not the golden one.
    let mut update = patient(
        MRN_A,
        "A-001",
        json!([{"text": "张伟"}]),
        "1980-05-17",
        "male",
        Some(&rid),
    );
    update["telecom"] = json!([{"system": "phone", "value": "13800138000"}]);
    let reply = server.put("Patient?identifier=A-001", &update).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["id"], a.as_str());
    assert_eq!(refer_of(&reply.body).as_deref(), Some(golden_a.as_str()));
    let golden = server.get(&format!("Patient/{golden_a}")).await.body;
    assert_eq!(
        golden["telecom"][0]["value"], "13800138000",
        "golden follows its freshest source"
    );

    // Clients cannot write or delete golden records (server-owned state): a body claiming to
    // be one is invalid (422), and the record cannot be addressed even by stripping the tag.
    let mut forged = golden.clone();
    forged["gender"] = json!("female");
    assert_outcome(
        &server.put(&format!("Patient/{golden_a}"), &forged).await,
        422,
    );
    // The attack of issue #16: the golden record without its tag, linking another person.
    let mut stripped = golden.clone();
    stripped.as_object_mut().unwrap().remove("meta");
    stripped["link"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "seealso", "other": {"reference": "Patient/someone-else"}}));
    assert_outcome(
        &server.put(&format!("Patient/{golden_a}"), &stripped).await,
        403,
    );
    assert_outcome(&server.delete(&format!("Patient/{golden_a}")).await, 403);

    // Deleting the last source deletes the person's golden record.
    assert!(server
        .delete(&format!("Patient/{a}"))
        .await
        .status
        .is_success());
    assert!(server
        .delete(&format!("Patient/{b}"))
        .await
        .status
        .is_success());
    assert_eq!(
        server.get(&format!("Patient/{golden_a}")).await.status,
        StatusCode::GONE
    );
}

async fn different_resident_ids_are_never_linked(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    // Twins: same name (a common one), birth date, sex and address; different IDs.
    let first = resident_id("110105", "19900101", "015");
    let second = resident_id("110105", "19900101", "017");
    let a = server
        .create(&patient(
            MRN_A,
            "T1",
            json!([{"text": "王芳", "family": "王", "given": ["芳"]}]),
            "1990-01-01",
            "male",
            Some(&first),
        ))
        .await;
    let b = server
        .create(&patient(
            MRN_A,
            "T2",
            json!([{"text": "王芳", "family": "王", "given": ["芳"]}]),
            "1990-01-01",
            "male",
            Some(&second),
        ))
        .await;
    assert_ne!(golden_of(&server, &a).await, golden_of(&server, &b).await);
    let tasks = server
        .search_ids("Task?code=urn:phip:mpi|match-review&status=requested")
        .await;
    assert!(
        tasks.is_empty(),
        "certain non-matches are not even proposed: {tasks:?}"
    );
}

async fn transaction_bundles_go_through_the_index(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let rid = resident_id("440305", "19751230", "246");
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
             "resource": patient(MRN_A, "TX-1", json!([{"text": "李娜"}]), "1975-12-30", "female", Some(&rid)),
             "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:22222222-2222-4222-8222-222222222222",
             "resource": patient(MRN_B, "TX-2", json!([{"family": "Li", "given": ["Na"]}]), "1975-12-30", "female", Some(&rid)),
             "request": {"method": "POST", "url": "Patient"}}
        ]
    });
    let reply = server.post("", &bundle).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let a = server.search_ids("Patient?identifier=TX-1").await;
    let b = server.search_ids("Patient?identifier=TX-2").await;
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_eq!(
        golden_of(&server, &a[0]).await,
        golden_of(&server, &b[0]).await
    );
}

async fn match_operation_scores_persons(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let rid = resident_id("320102", "19650304", "031");
    let a = server
        .create(&patient(
            MRN_A,
            "M-1",
            json!([{"text": "陈建国", "family": "陈", "given": ["建国"]}]),
            "1965-03-04",
            "male",
            Some(&rid),
        ))
        .await;
    let golden = golden_of(&server, &a).await;
    server
        .create(&patient(
            MRN_A,
            "M-2",
            json!([{"text": "刘秀英", "family": "刘", "given": ["秀英"]}]),
            "1958-11-20",
            "female",
            None,
        ))
        .await;

    // Traditional characters and no identifier: still the same person, probably.
    let query = json!({"resourceType": "Patient", "name": [{"text": "陳建國"}], "birthDate": "1965-03-04", "gender": "male"});
    let reply = server.post("Patient/$match", &parameters(query)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["type"], "searchset");
    let first = &reply.body["entry"][0];
    assert_eq!(first["resource"]["id"], golden.as_str(), "{}", reply.body);
    let score = first["search"]["score"].as_f64().unwrap();
    assert!(score > 0.5 && score <= 1.0, "score {score}");
    let grade = first["search"]["extension"][0]["valueCode"]
        .as_str()
        .unwrap();
    assert!(
        ["certain", "probable", "possible"].contains(&grade),
        "{grade}"
    );

    // With the resident ID it is certain.
    let query = json!({"resourceType": "Patient", "identifier": [{"system": RESIDENT_ID, "value": rid}],
                       "name": [{"text": "陈建国"}], "birthDate": "1965-03-04"});
    let mut params = parameters(query);
    params["parameter"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "onlyCertainMatches", "valueBoolean": true}));
    let reply = server.post("Patient/$match", &params).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body["entry"].as_array().map(Vec::len),
        Some(1),
        "{}",
        reply.body
    );
    assert_eq!(
        reply.body["entry"][0]["search"]["extension"][0]["valueCode"],
        "certain"
    );

    // The CapabilityStatement tells clients about the index's operations.
    let metadata = server.get("metadata").await.body;
    let patient = metadata["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Patient")
        .cloned()
        .unwrap();
    let operations = patient["operation"].to_string();
    for name in [
        "match",
        "ihe-pix",
        "merge",
        "unmerge",
        "mpi-unlink",
        "export",
    ] {
        assert!(
            operations.contains(&format!("\"{name}\"")),
            "{name} missing: {operations}"
        );
    }
    assert!(patient["searchParam"].to_string().contains("_master"));

    // Nobody like this.
    let query = json!({"resourceType": "Patient", "name": [{"text": "欧阳娜娜"}], "birthDate": "2001-07-07", "gender": "female"});
    let reply = server.post("Patient/$match", &parameters(query)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.body["entry"].as_array().is_none_or(Vec::is_empty),
        "{}",
        reply.body
    );

    // Bad input.
    assert_outcome(
        &server
            .post("Patient/$match", &json!({"resourceType": "Parameters"}))
            .await,
        400,
    );
    // A patient-restricted caller may not query the index.
    let token = server.mint(phip_security::token::Grant {
        sub: "resident".into(),
        scope: "patient/*.rs".into(),
        patient: Some(a.clone()),
        ..Default::default()
    });
    let reply = server
        .send(
            reqwest::Method::POST,
            "Patient/$match",
            Some(&parameters(
                json!({"resourceType": "Patient", "birthDate": "1965-03-04"}),
            )),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
    assert_outcome(&reply, 403);
}

async fn pix_cross_references_identifiers(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let rid = resident_id("110105", "19800517", "123");
    let a = server
        .create(&patient(
            MRN_A,
            "P-1",
            json!([{"text": "张伟"}]),
            "1980-05-17",
            "male",
            Some(&rid),
        ))
        .await;
    let b = server
        .create(&patient(
            MRN_B,
            "P-2",
            json!([{"family": "Zhang", "given": ["Wei"]}]),
            "1980-05-17",
            "male",
            Some(&rid),
        ))
        .await;
    let reply = server
        .get(&format!("Patient/$ihe-pix?sourceIdentifier={MRN_A}|P-1"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let text = reply.body.to_string();
    assert!(text.contains("P-2") && text.contains(&rid), "{text}");
    assert!(
        !text.contains("\"P-1\""),
        "the source identifier is not echoed: {text}"
    );
    assert!(text.contains(&format!("Patient/{a}")) && text.contains(&format!("Patient/{b}")));

    let reply = server
        .get(&format!(
            "Patient/$ihe-pix?sourceIdentifier={MRN_A}|P-1&targetSystem={MRN_B}"
        ))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let params = reply.body["parameter"].as_array().unwrap();
    assert_eq!(params.len(), 1, "{}", reply.body);
    assert_eq!(params[0]["name"], "targetIdentifier");
    assert_eq!(params[0]["valueIdentifier"]["value"], "P-2");

    assert_outcome(
        &server
            .get(&format!("Patient/$ihe-pix?sourceIdentifier={MRN_A}|nobody"))
            .await,
        404,
    );
    assert_outcome(
        &server
            .get("Patient/$ihe-pix?sourceIdentifier=urn:unknown|P-1")
            .await,
        400,
    );
    assert_outcome(
        &server
            .get(&format!(
                "Patient/$ihe-pix?sourceIdentifier={MRN_A}|P-1&targetSystem=urn:unknown"
            ))
            .await,
        403,
    );
    assert_outcome(&server.get("Patient/$ihe-pix").await, 400);
}

async fn merge_and_unmerge_round_trip(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let a = server
        .create(&patient(
            MRN_A,
            "G-1",
            json!([{"text": "赵敏"}]),
            "1970-02-02",
            "female",
            None,
        ))
        .await;
    let b = server
        .create(&patient(
            MRN_B,
            "H-9",
            json!([{"text": "周芷若"}]),
            "1971-03-03",
            "female",
            None,
        ))
        .await;
    let person_a = golden_of(&server, &a).await;
    let person_b = golden_of(&server, &b).await;
    assert_ne!(person_a, person_b);

    let merge = json!({"resourceType": "Parameters", "parameter": [
        {"name": "source-patient", "valueReference": {"reference": format!("Patient/{a}")}},
        {"name": "target-patient", "valueReference": {"reference": format!("Patient/{b}")}}]});
    let reply = server.post("Patient/$merge", &merge).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(golden_of(&server, &a).await, person_b);
    let retired = server.get(&format!("Patient/{person_a}")).await.body;
    assert_eq!(retired["active"], false);
    assert!(retired["link"].to_string().contains("replaced-by"));
    let survivor = server.get(&format!("Patient/{person_b}")).await.body;
    assert!(survivor["link"]
        .to_string()
        .contains(&format!("Patient/{person_a}")));
    assert!(survivor["identifier"].to_string().contains("G-1"));
    // Merging again is refused (already one person).
    assert_outcome(&server.post("Patient/$merge", &merge).await, 422);

    let reply = server
        .post(
            &format!("Patient/{person_a}/$unmerge"),
            &json!({"resourceType": "Parameters"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(golden_of(&server, &a).await, person_a);
    assert_eq!(golden_of(&server, &b).await, person_b);
    let restored = server.get(&format!("Patient/{person_a}")).await.body;
    assert_eq!(restored["active"], true);
    assert!(!restored["link"].to_string().contains("replaced-by"));
    let survivor = server.get(&format!("Patient/{person_b}")).await.body;
    assert!(!survivor["identifier"].to_string().contains("G-1"));
    // Nothing was destroyed: the golden record's history shows the merge.
    let history = server.get(&format!("Patient/{person_a}/_history")).await;
    assert!(
        history.body["entry"].as_array().unwrap().len() >= 3,
        "{}",
        history.body
    );
    // Unmerged persons may not be merged again by accident.
    assert_outcome(&server.post("Patient/$merge", &merge).await, 409);
    // Not a retired person.
    assert_outcome(
        &server
            .post(
                &format!("Patient/{person_b}/$unmerge"),
                &json!({"resourceType": "Parameters"}),
            )
            .await,
        422,
    );
}

async fn review_queue_accept_and_reject(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    // Same name, sex and birth date, no shared identifier: probably but not certainly the same.
    let name = json!([{"text": "孙丽华", "family": "孙", "given": ["丽华"]}]);
    let a = server
        .create(&patient(
            MRN_A,
            "R-1",
            name.clone(),
            "1982-08-08",
            "female",
            None,
        ))
        .await;
    let b = server
        .create(&patient(
            MRN_B,
            "R-2",
            name.clone(),
            "1982-08-08",
            "female",
            None,
        ))
        .await;
    let tasks = server
        .get("Task?code=urn:phip:mpi|match-review&status=requested")
        .await
        .entries();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    let task = &tasks[0];
    assert_eq!(task["focus"]["reference"], format!("Patient/{b}"));
    assert!(task["input"].to_string().contains("breakdown"));
    assert_ne!(golden_of(&server, &a).await, golden_of(&server, &b).await);

    let task_id = task["id"].as_str().unwrap();
    let reply = server
        .post(
            &format!("Task/{task_id}/$mpi-accept"),
            &json!({"resourceType": "Parameters"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["status"], "completed");
    assert_eq!(golden_of(&server, &a).await, golden_of(&server, &b).await);
    // Decided once only.
    assert_outcome(
        &server
            .post(
                &format!("Task/{task_id}/$mpi-reject"),
                &json!({"resourceType": "Parameters"}),
            )
            .await,
        409,
    );

    // A third look-alike is proposed against the person; rejecting it is final.
    let c = server
        .create(&patient(
            "https://phip.cn/fhir/sid/mrn/clinic-c",
            "R-3",
            name.clone(),
            "1982-08-08",
            "female",
            None,
        ))
        .await;
    let tasks = server
        .get("Task?code=urn:phip:mpi|match-review&status=requested")
        .await
        .entries();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    let task_id = tasks[0]["id"].as_str().unwrap().to_owned();
    let reply = server
        .post(
            &format!("Task/{task_id}/$mpi-reject"),
            &json!({"resourceType": "Parameters", "parameter": [{"name": "note", "valueString": "different mothers' names"}]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["status"], "rejected");
    assert_ne!(golden_of(&server, &c).await, golden_of(&server, &a).await);
    // Updating the rejected record does not re-propose it.
    let mut update = server.get(&format!("Patient/{c}")).await.body;
    update["telecom"] = json!([{"system": "phone", "value": "13900000000"}]);
    assert_eq!(
        server.put(&format!("Patient/{c}"), &update).await.status,
        StatusCode::OK
    );
    assert!(server
        .search_ids("Task?code=urn:phip:mpi|match-review&status=requested")
        .await
        .is_empty());
    // A non-review Task cannot be decided.
    let other = server
        .create(&json!({"resourceType": "Task", "status": "requested", "intent": "order"}))
        .await;
    assert_outcome(
        &server
            .post(
                &format!("Task/{other}/$mpi-accept"),
                &json!({"resourceType": "Parameters"}),
            )
            .await,
        422,
    );
}

async fn unlink_detaches_a_record(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let rid = resident_id("310101", "19880808", "088");
    let a = server
        .create(&patient(
            MRN_A,
            "U-1",
            json!([{"text": "吴磊"}]),
            "1988-08-08",
            "female",
            Some(&rid),
        ))
        .await;
    let b = server
        .create(&patient(
            MRN_B,
            "U-2",
            json!([{"text": "吴磊"}]),
            "1988-08-08",
            "female",
            Some(&rid),
        ))
        .await;
    let person = golden_of(&server, &a).await;
    assert_eq!(golden_of(&server, &b).await, person);
    let reply = server
        .post(
            &format!("Patient/{b}/$mpi-unlink"),
            &json!({"resourceType": "Parameters"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let new_person = golden_of(&server, &b).await;
    assert_ne!(new_person, person);
    assert_eq!(golden_of(&server, &a).await, person);
    // Re-saving the record does not pull it back.
    let body = server.get(&format!("Patient/{b}")).await.body;
    assert_eq!(
        server.put(&format!("Patient/{b}"), &body).await.status,
        StatusCode::OK
    );
    assert_eq!(golden_of(&server, &b).await, new_person);
    // The last record of a person cannot be unlinked.
    assert_outcome(
        &server
            .post(
                &format!("Patient/{a}/$mpi-unlink"),
                &json!({"resourceType": "Parameters"}),
            )
            .await,
        422,
    );
}

on_both_backends!(
    resident_ids_are_checked_on_write,
    same_person_from_two_institutions_is_linked,
    different_resident_ids_are_never_linked,
    transaction_bundles_go_through_the_index,
    match_operation_scores_persons,
    pix_cross_references_identifiers,
    merge_and_unmerge_round_trip,
    review_queue_accept_and_reject,
    unlink_detaches_a_record,
);
