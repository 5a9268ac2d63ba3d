//! Document sharing over HTTP: IHE MHD provide (ITI-65) → find (ITI-67) → retrieve (ITI-68),
//! the MHD rules refusing bad submissions atomically, replacement and deprecation, FHIR
//! documents (`$document`, HTML rendering), signatures over provided documents, and the
//! document-type catalogue.

mod common;

use base64::Engine as _;
use common::{assert_outcome, Backend, TestServer};
use phip_engine::documents::{
    attachment_hash, MHD_LIST_TYPES, PROVIDE_BUNDLE_PROFILES, WST500_SYSTEM,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const PDF: &[u8] = include_bytes!("../../../fixtures/documents/discharge-summary.pdf");
const CDA: &[u8] = include_bytes!("../../../fixtures/documents/lab-report.cda.xml");
const CDA_TYPE: &str = "application/hl7-v3+xml";
const PATIENT_ID_SYSTEM: &str = "urn:oid:2.16.156.10011.1.3";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One document of a submission: content, media type and DocumentReference details.
struct Doc {
    unique_id: &'static str,
    content: &'static [u8],
    content_type: &'static str,
    doc_type: Value,
    extra: Value,
}

fn discharge_summary(unique_id: &'static str) -> Doc {
    Doc {
        unique_id,
        content: PDF,
        content_type: "application/pdf",
        doc_type: json!({"coding": [{"system": WST500_SYSTEM, "code": "DISCHARGE-SUMMARY", "display": "出院小结"}]}),
        extra: json!({}),
    }
}

fn lab_report(unique_id: &'static str) -> Doc {
    Doc {
        unique_id,
        content: CDA,
        content_type: CDA_TYPE,
        doc_type: json!({"coding": [{"system": "http://loinc.org", "code": "11502-2", "display": "Laboratory report"}]}),
        extra: json!({}),
    }
}

/// An ITI-65 bundle (MHD Comprehensive profile) providing `docs` for `patient`.
fn provide_bundle(patient: &str, docs: &[Doc]) -> Value {
    let mut entries = Vec::new();
    let mut listed = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let doc_url = format!("urn:uuid:00000000-0000-4000-8000-{:012}", 100 + i);
        let binary_url = format!("urn:uuid:00000000-0000-4000-8000-{:012}", 200 + i);
        listed.push(json!({"item": {"reference": doc_url}}));
        let mut reference = json!({
            "resourceType": "DocumentReference",
            "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": doc.unique_id},
            "status": "current",
            "type": doc.doc_type,
            "category": [{"coding": [{"system": "http://loinc.org", "code": "11369-6"}]}],
            "subject": {"reference": patient},
            "date": "2024-05-02T09:30:00+08:00",
            "securityLabel": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}]}],
            "content": [{
                "attachment": {"contentType": doc.content_type, "url": binary_url, "size": doc.content.len(),
                    "hash": attachment_hash(doc.content), "language": "zh-CN"},
                "format": {"system": "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode", "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient"}
            }],
            "context": {
                "facilityType": {"coding": [{"system": "http://snomed.info/sct", "code": "22232009", "display": "Hospital"}]},
                "practiceSetting": {"coding": [{"system": "http://snomed.info/sct", "code": "394802001", "display": "General medicine"}]},
                "period": {"start": "2024-04-25", "end": "2024-05-01"}
            }
        });
        if let (Some(target), Some(extra)) = (reference.as_object_mut(), doc.extra.as_object()) {
            for (k, v) in extra {
                target.insert(k.clone(), v.clone());
            }
        }
        entries.push(json!({"fullUrl": doc_url, "resource": reference,
            "request": {"method": "POST", "url": "DocumentReference"}}));
        entries.push(json!({"fullUrl": binary_url,
            "resource": {"resourceType": "Binary", "contentType": doc.content_type, "data": b64(doc.content)},
            "request": {"method": "POST", "url": "Binary"}}));
    }
    entries.insert(0, json!({"fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000001",
        "resource": {
            "resourceType": "List", "status": "current", "mode": "working",
            "identifier": [{"use": "official", "system": "urn:ietf:rfc:3986", "value": format!("urn:oid:1.2.156.9.{}", docs.first().map_or("0", |d| d.unique_id.rsplit('.').next().unwrap_or("0")))}],
            "code": {"coding": [{"system": MHD_LIST_TYPES, "code": "submissionset"}]},
            "subject": {"reference": patient}, "date": "2024-05-02T10:00:00+08:00",
            "source": {"display": "某市人民医院 EMR"},
            "entry": listed
        },
        "request": {"method": "POST", "url": "List"}}));
    json!({"resourceType": "Bundle", "type": "transaction",
        "meta": {"profile": [PROVIDE_BUNDLE_PROFILES[1]]}, "entry": entries})
}

async fn patient(server: &TestServer, resident_id: &str) -> String {
    server
        .create(&json!({"resourceType": "Patient",
            "identifier": [{"system": PATIENT_ID_SYSTEM, "value": resident_id}],
            "name": [{"family": "张", "given": ["三"]}], "gender": "male", "birthDate": "1990-03-07"}))
        .await
}

/// Provides `bundle`, expecting success; returns the response entries' `Type/id`.
async fn provide(server: &TestServer, bundle: &Value) -> Vec<String> {
    let reply = server.post("", bundle).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "provide failed: {}",
        reply.body
    );
    assert_eq!(reply.body["type"], "transaction-response");
    reply.body["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            let location = e["response"]["location"].as_str().expect("location");
            let mut parts = location.rsplit('/').skip(2);
            let id = parts.next().expect("id");
            let ty = parts.next().expect("type");
            format!("{ty}/{id}")
        })
        .collect()
}

async fn raw(server: &TestServer, path: &str, accept: &str) -> (StatusCode, String, Vec<u8>) {
    let response = server
        .client
        .get(server.url(path))
        .bearer_auth(server.token.as_deref().expect("token"))
        .header("accept", accept)
        .send()
        .await
        .expect("request");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (
        status,
        content_type,
        response.bytes().await.expect("body").to_vec(),
    )
}

async fn provide_find_retrieve_round_trip(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let patient_id = patient(&server, "110101199003077777").await;
    let other = patient(&server, "110101198501011234").await;
    let author = server
        .create(
            &json!({"resourceType": "Practitioner", "name": [{"family": "华", "given": ["佗"]}]}),
        )
        .await;
    let encounter = server
        .create(&json!({"resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": {"reference": format!("Patient/{patient_id}")}}))
        .await;
    let mut summary = discharge_summary("urn:oid:1.2.156.9.1001");
    summary.extra = json!({
        "author": [{"reference": format!("Practitioner/{author}")}],
        "context": {
            "facilityType": {"coding": [{"system": "http://snomed.info/sct", "code": "22232009"}]},
            "practiceSetting": {"coding": [{"system": "http://snomed.info/sct", "code": "394802001"}]},
            "event": [{"coding": [{"system": "http://snomed.info/sct", "code": "308540004", "display": "Inpatient stay"}]}],
            "period": {"start": "2024-04-25", "end": "2024-05-01"},
            "related": [{"reference": format!("Encounter/{encounter}")}]
        }
    });
    let bundle = provide_bundle(
        &format!("Patient/{patient_id}"),
        &[summary, lab_report("urn:oid:1.2.156.9.1002")],
    );
    let written = provide(&server, &bundle).await;
    assert_eq!(written.len(), 5, "{written:?}");
    let docs: Vec<&String> = written
        .iter()
        .filter(|w| w.starts_with("DocumentReference/"))
        .collect();
    assert_eq!(docs.len(), 2);
    // A document for another patient must never show up in this patient's searches.
    provide(
        &server,
        &provide_bundle(
            &format!("Patient/{other}"),
            &[lab_report("urn:oid:1.2.156.9.2001")],
        ),
    )
    .await;

    // The SubmissionSet is stored too, with its entries pointing at the stored documents.
    let lists = server
        .get(&format!(
            "List?code={MHD_LIST_TYPES}|submissionset&patient={patient_id}"
        ))
        .await;
    assert_eq!(lists.entries().len(), 1, "{}", lists.body);
    let list = lists.entries()[0].clone();
    let items: Vec<&str> = list["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["item"]["reference"].as_str().unwrap())
        .collect();
    assert!(
        items.iter().all(|i| i.starts_with("DocumentReference/")),
        "{items:?}"
    );

    // ITI-67 queries.
    let summary_id = docs[0].trim_start_matches("DocumentReference/").to_owned();
    let lab_id = docs[1].trim_start_matches("DocumentReference/").to_owned();
    let both = {
        let mut v = vec![summary_id.clone(), lab_id.clone()];
        v.sort();
        v
    };
    let q = |query: &str| format!("DocumentReference?{query}");
    assert_eq!(
        server
            .search_ids(&q(&format!("patient={patient_id}&status=current")))
            .await,
        both
    );
    assert_eq!(
        server
            .search_ids(&q(&format!(
                "patient.identifier={PATIENT_ID_SYSTEM}|110101199003077777"
            )))
            .await,
        both
    );
    assert_eq!(
        server
            .search_ids(&q(&format!(
                "patient={patient_id}&type={WST500_SYSTEM}|DISCHARGE-SUMMARY"
            )))
            .await,
        vec![summary_id.clone()]
    );
    // The catalogue code gained its equivalent LOINC coding, so either code finds it.
    assert_eq!(
        server
            .search_ids(&q(&format!(
                "patient={patient_id}&type=http://loinc.org|18842-5"
            )))
            .await,
        vec![summary_id.clone()]
    );
    assert_eq!(
        server
            .search_ids(&q(&format!(
                "patient={patient_id}&type=http://loinc.org|11502-2"
            )))
            .await,
        vec![lab_id.clone()]
    );
    assert_eq!(
        server
            .search_ids(&q(&format!(
                "patient={patient_id}&category=http://loinc.org|11369-6"
            )))
            .await,
        both
    );
    assert_eq!(
        server
            .search_ids(&q(&format!(
                "patient={patient_id}&date=ge2024-05-01&date=lt2024-05-03"
            )))
            .await,
        both
    );
    assert!(server
        .search_ids(&q(&format!("patient={patient_id}&date=lt2024-05-01")))
        .await
        .is_empty());
    assert_eq!(
        server
            .search_ids(&q(&format!("patient={patient_id}&period=ge2024-04-20")))
            .await,
        both
    );
    assert!(server
        .search_ids(&q(&format!("patient={patient_id}&period=gt2024-06-01")))
        .await
        .is_empty());
    assert_eq!(
        server
            .search_ids(&q(&format!(
                "patient={patient_id}&facility=http://snomed.info/sct|22232009"
            )))
            .await,
        both
    );
    assert!(server
        .search_ids(&q(&format!(
            "patient={patient_id}&facility=http://snomed.info/sct|1"
        )))
        .await
        .is_empty());
    assert_eq!(
        server
            .search_ids(&q(&format!("patient={patient_id}&setting=394802001")))
            .await,
        both
    );
    assert_eq!(
        server
            .search_ids(&q(&format!("patient={patient_id}&event=308540004")))
            .await,
        vec![summary_id.clone()]
    );
    assert_eq!(
        server
            .search_ids(&q(&format!(
                "patient={patient_id}&related=Encounter/{encounter}"
            )))
            .await,
        vec![summary_id.clone()]
    );
    assert_eq!(
        server
            .search_ids(&q(&format!("patient={patient_id}&author.family=华")))
            .await,
        vec![summary_id.clone()]
    );
    assert_eq!(
        server
            .search_ids(&q(&format!("patient={patient_id}&author.given=佗")))
            .await,
        vec![summary_id.clone()]
    );
    assert_eq!(
        server
            .search_ids(&q(&format!(
                "patient={patient_id}&format=urn:ihe:iti:xds:2017:mimeTypeSufficient"
            )))
            .await,
        both
    );
    assert_eq!(
        server
            .search_ids(&q(&format!("patient={patient_id}&security-label=N")))
            .await,
        both
    );
    assert_eq!(
        server
            .search_ids(&q(&format!(
                "patient={patient_id}&contenttype=application/hl7-v3%2Bxml"
            )))
            .await,
        vec![lab_id.clone()]
    );
    assert!(server
        .search_ids(&q(&format!("patient={patient_id}&status=superseded")))
        .await
        .is_empty());

    // ITI-68: the attachment URL points at the stored Binary; its content comes back byte for
    // byte with its own media type, and as a FHIR Binary when FHIR is asked for.
    for (id, bytes, media) in [
        (&summary_id, PDF, "application/pdf"),
        (&lab_id, CDA, CDA_TYPE),
    ] {
        let reference = server.get(&format!("DocumentReference/{id}")).await.body;
        let url = reference["content"][0]["attachment"]["url"]
            .as_str()
            .expect("url")
            .to_owned();
        assert!(url.starts_with("Binary/"), "{url}");
        let (status, content_type, body) = raw(&server, &url, media).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, media);
        assert_eq!(
            body, bytes,
            "retrieved content differs from what was provided"
        );
        let (_, _, any) = raw(&server, &url, "application/octet-stream").await;
        assert_eq!(any, bytes);
        let resource = server
            .send(
                Method::GET,
                &url,
                None,
                &[("accept", "application/fhir+json")],
            )
            .await;
        assert_eq!(resource.body["resourceType"], "Binary");
        assert_eq!(resource.body["data"], b64(bytes));
    }
    let (status, _, _) = raw(&server, "Binary/no-such-binary", "application/pdf").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn invalid_submissions_are_refused_whole(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let patient_id = patient(&server, "110101199003077777").await;
    let subject = format!("Patient/{patient_id}");
    let valid = provide_bundle(&subject, &[discharge_summary("urn:oid:1.2.156.9.3001")]);

    let mut no_submission_set = valid.clone();
    no_submission_set["entry"].as_array_mut().unwrap().remove(0);
    let mut hash_mismatch = valid.clone();
    hash_mismatch["entry"][1]["resource"]["content"][0]["attachment"]["hash"] =
        json!(attachment_hash(CDA));
    let mut size_mismatch = valid.clone();
    size_mismatch["entry"][1]["resource"]["content"][0]["attachment"]["size"] =
        json!(PDF.len() + 1);
    let mut dangling = valid.clone();
    dangling["entry"][1]["resource"]["content"][0]["attachment"]["url"] =
        json!("urn:uuid:00000000-0000-4000-8000-999999999999");
    let mut two_patients = valid.clone();
    two_patients["entry"][1]["resource"]["subject"] = json!({"reference": "Patient/someone-else"});
    let mut unlisted = valid.clone();
    unlisted["entry"][0]["resource"]["entry"] = json!([]);
    let mut no_unique_id = valid.clone();
    no_unique_id["entry"][1]["resource"]
        .as_object_mut()
        .unwrap()
        .remove("masterIdentifier");
    for (bundle, rule) in [
        (&no_submission_set, "submission-set"),
        (&hash_mismatch, "hash"),
        (&size_mismatch, "size"),
        (&dangling, "attachment"),
        (&two_patients, "subject"),
        (&unlisted, "submission-set-entry"),
        (&no_unique_id, "master-identifier"),
    ] {
        let reply = server.post("", bundle).await;
        assert_outcome(&reply, 422);
        assert!(
            reply
                .body
                .to_string()
                .contains(&format!("ITI-65 rule {rule}:")),
            "expected rule {rule}: {}",
            reply.body
        );
    }
    for ty in ["DocumentReference", "Binary", "List"] {
        assert!(
            server.search_ids(ty).await.is_empty(),
            "a refused submission stored a {ty}"
        );
    }

    // A failure inside the transaction, after the documents were written (a stale If-Match
    // on an update processed after the creates), rolls the whole submission back.
    let mut late_failure = provide_bundle(&subject, &[discharge_summary("urn:oid:1.2.156.9.3002")]);
    late_failure["entry"].as_array_mut().unwrap().push(json!({
        "resource": {"resourceType": "Patient", "id": patient_id, "name": [{"family": "张"}]},
        "request": {"method": "PUT", "url": format!("Patient/{patient_id}"), "ifMatch": "W/\"99\""}
    }));
    let reply = server.post("", &late_failure).await;
    assert_eq!(reply.status.as_u16(), 412, "{}", reply.body);
    assert!(server.search_ids("Binary").await.is_empty());
    assert!(server.search_ids("DocumentReference").await.is_empty());

    // The valid one goes through; providing the same uniqueId again is refused.
    provide(&server, &valid).await;
    let again = server.post("", &valid).await;
    assert_outcome(&again, 422);
    assert!(
        again.body.to_string().contains("rule master-identifier"),
        "{}",
        again.body
    );
    assert_eq!(server.search_ids("DocumentReference").await.len(), 1);
}

async fn replacement_supersedes_and_deprecation_hides(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let patient_id = patient(&server, "110101199003077777").await;
    let subject = format!("Patient/{patient_id}");
    let first = provide(
        &server,
        &provide_bundle(&subject, &[discharge_summary("urn:oid:1.2.156.9.4001")]),
    )
    .await;
    let old_id = first[1].trim_start_matches("DocumentReference/").to_owned();

    let mut revised = discharge_summary("urn:oid:1.2.156.9.4002");
    revised.extra = json!({"relatesTo": [{"code": "replaces", "target": {"reference": format!("DocumentReference/{old_id}")}}]});
    let second = provide(&server, &provide_bundle(&subject, &[revised])).await;
    assert_eq!(
        second.len(),
        3,
        "only the submitted entries are answered: {second:?}"
    );
    let new_id = second[1]
        .trim_start_matches("DocumentReference/")
        .to_owned();

    let old = server.get(&format!("DocumentReference/{old_id}")).await;
    assert_eq!(old.body["status"], "superseded");
    assert_eq!(old.body["meta"]["versionId"], "2");
    let current = server
        .search_ids(&format!(
            "DocumentReference?patient={patient_id}&status=current"
        ))
        .await;
    assert_eq!(current, vec![new_id.clone()]);

    // Replacing a document that is no longer current is refused, and nothing is stored.
    let mut stale = discharge_summary("urn:oid:1.2.156.9.4003");
    stale.extra = json!({"relatesTo": [{"code": "replaces", "target": {"reference": format!("DocumentReference/{old_id}")}}]});
    let reply = server.post("", &provide_bundle(&subject, &[stale])).await;
    assert_outcome(&reply, 422);
    assert!(
        reply.body.to_string().contains("rule replaces"),
        "{}",
        reply.body
    );
    let mut ghost = discharge_summary("urn:oid:1.2.156.9.4004");
    ghost.extra = json!({"relatesTo": [{"code": "replaces", "target": {"reference": "DocumentReference/no-such-doc"}}]});
    assert_outcome(
        &server.post("", &provide_bundle(&subject, &[ghost])).await,
        422,
    );
    assert_eq!(server.search_ids("DocumentReference").await.len(), 2);
    // A new version for another patient is refused.
    let someone_else = patient(&server, "110101198501011234").await;
    let mut hijack = discharge_summary("urn:oid:1.2.156.9.4005");
    hijack.extra = json!({"relatesTo": [{"code": "replaces", "target": {"reference": format!("DocumentReference/{new_id}")}}]});
    let reply = server
        .post(
            "",
            &provide_bundle(&format!("Patient/{someone_else}"), &[hijack]),
        )
        .await;
    assert_outcome(&reply, 422);
    assert!(
        reply.body.to_string().contains("concerns"),
        "{}",
        reply.body
    );

    // Deprecation: an ordinary update to entered-in-error takes it out of current searches.
    let mut deprecated = server
        .get(&format!("DocumentReference/{new_id}"))
        .await
        .body;
    deprecated["status"] = json!("entered-in-error");
    let reply = server
        .put(&format!("DocumentReference/{new_id}"), &deprecated)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(server
        .search_ids(&format!(
            "DocumentReference?patient={patient_id}&status=current"
        ))
        .await
        .is_empty());
    assert_eq!(
        server
            .search_ids(&format!(
                "DocumentReference?patient={patient_id}&status=entered-in-error"
            ))
            .await,
        vec![new_id]
    );
}

async fn composition_documents_assemble_and_render_safely(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let patient_id = patient(&server, "110101199003077777").await;
    let author = server
        .create(
            &json!({"resourceType": "Practitioner", "name": [{"family": "华", "given": ["佗"]}]}),
        )
        .await;
    let condition = server
        .create(&json!({"resourceType": "Condition", "subject": {"reference": format!("Patient/{patient_id}")},
            "code": {"text": "社区获得性肺炎"}}))
        .await;
    let composition = server
        .create(&json!({"resourceType": "Composition", "status": "final",
            "type": {"coding": [{"system": "http://loinc.org", "code": "18842-5", "display": "Discharge summary"}]},
            "subject": {"reference": format!("Patient/{patient_id}")},
            "date": "2024-05-01T16:00:00+08:00",
            "author": [{"reference": format!("Practitioner/{author}")}],
            "title": "出院小结 <script>alert('title')</script>",
            "section": [{
                "title": "出院诊断",
                "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>社区获得性肺炎</p><p>&lt;img src=x onerror=alert(1)&gt;</p></div>"},
                "entry": [{"reference": format!("Condition/{condition}")}],
                "section": [{"title": "备注", "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">好转</div>"}}]
            }]}))
        .await;

    let document = server
        .get(&format!("Composition/{composition}/$document"))
        .await;
    assert_eq!(document.status, StatusCode::OK, "{}", document.body);
    assert_eq!(document.body["type"], "document");
    assert!(document.body["identifier"]["value"]
        .as_str()
        .unwrap()
        .starts_with("urn:uuid:"));
    assert!(document.body["timestamp"].is_string());
    let entries = document.body["entry"].as_array().unwrap();
    assert_eq!(entries[0]["resource"]["resourceType"], "Composition");
    let mut included: Vec<String> = entries[1..]
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap(),
                e["resource"]["id"].as_str().unwrap()
            )
        })
        .collect();
    included.sort();
    let mut expected = vec![
        format!("Condition/{condition}"),
        format!("Patient/{patient_id}"),
        format!("Practitioner/{author}"),
    ];
    expected.sort();
    assert_eq!(included, expected);
    assert!(entries
        .iter()
        .all(|e| e["fullUrl"].as_str().unwrap().starts_with("http")));

    // A document Bundle posted to /Bundle is stored as-is and renders as HTML.
    let stored = server.create(&document.body).await;
    let back = server.get(&format!("Bundle/{stored}")).await;
    assert_eq!(back.body["type"], "document");
    assert_eq!(back.body["entry"].as_array().unwrap().len(), 4);
    let persisted = server
        .send(
            Method::POST,
            &format!("Composition/{composition}/$document?persist=true"),
            None,
            &[],
        )
        .await;
    assert_eq!(persisted.status, StatusCode::CREATED, "{}", persisted.body);
    assert_eq!(persisted.body["resourceType"], "Bundle");

    for path in [
        format!("Bundle/{stored}"),
        format!("Bundle/{stored}/$render"),
        format!("Composition/{composition}/$render"),
    ] {
        let response = server
            .client
            .get(server.url(&path))
            .bearer_auth(server.token.as_deref().unwrap())
            .header("accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'"));
        let html = response.text().await.unwrap();
        assert!(
            html.contains("<h1>出院小结 &lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt;</h1>"),
            "{html}"
        );
        assert!(
            html.contains("<h2>出院诊断</h2>") && html.contains("<h3>备注</h3>"),
            "{html}"
        );
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{html}"
        );
        assert!(
            !html.contains("<script") && !html.contains("<img"),
            "{html}"
        );
        assert!(html.contains("张三") && html.contains("华佗"), "{html}");
    }
    // Without an HTML Accept the stored Bundle is plain FHIR JSON.
    assert_eq!(
        server.get(&format!("Bundle/{stored}")).await.body["resourceType"],
        "Bundle"
    );

    // A document whose parts are gone cannot be assembled.
    let deleted = server.delete(&format!("Condition/{condition}")).await;
    assert!(deleted.status.is_success(), "{}", deleted.body);
    assert_outcome(
        &server
            .get(&format!("Composition/{composition}/$document"))
            .await,
        422,
    );
    assert_outcome(&server.get("Composition/no-such/$document").await, 404);
}

async fn provided_documents_can_be_signed_and_verified(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let patient_id = patient(&server, "110101199003077777").await;
    let subject = format!("Patient/{patient_id}");
    let written = provide(
        &server,
        &provide_bundle(&subject, &[lab_report("urn:oid:1.2.156.9.5001")]),
    )
    .await;
    let doc = written[1].clone();
    let binary = written[2].clone();
    assert!(
        doc.starts_with("DocumentReference/") && binary.starts_with("Binary/"),
        "{written:?}"
    );

    let mut signatures = Vec::new();
    for (target, alg) in [(&doc, "SM2SM3"), (&binary, "ES256")] {
        let signed = server
            .send(
                Method::POST,
                &format!("{target}/$sign?alg={alg}"),
                None,
                &[],
            )
            .await;
        assert_eq!(signed.status, StatusCode::CREATED, "{}", signed.body);
        let provenance = signed.body["id"].as_str().unwrap().to_owned();
        let check = server
            .get(&format!("Provenance/{provenance}/$verify-signature"))
            .await;
        assert_eq!(
            check.body["parameter"][0]["valueBoolean"], true,
            "{}",
            check.body
        );
        signatures.push(signed.body);
    }

    // Tampering: the DocumentReference's signature presented for its next version (after a
    // replacement superseded it) does not verify.
    let mut revised = lab_report("urn:oid:1.2.156.9.5002");
    revised.extra = json!({"relatesTo": [{"code": "replaces", "target": {"reference": doc}}]});
    provide(&server, &provide_bundle(&subject, &[revised])).await;
    let mut forged = signatures[0].clone();
    forged.as_object_mut().unwrap().remove("id");
    forged["target"][0]["reference"] = json!(format!("{doc}/_history/2"));
    let forged_id = server.create(&forged).await;
    let check = server
        .get(&format!("Provenance/{forged_id}/$verify-signature"))
        .await;
    assert_eq!(
        check.body["parameter"][0]["valueBoolean"], false,
        "{}",
        check.body
    );

    // Tampering with the signature bytes of the content's signature is detected too.
    let mut altered = signatures[1].clone();
    altered.as_object_mut().unwrap().remove("id");
    let data = altered["signature"][0]["data"].as_str().unwrap();
    let token = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap(),
    )
    .unwrap();
    let mut bytes = token.into_bytes();
    let last = bytes.len() - 3;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    altered["signature"][0]["data"] = json!(b64(&bytes));
    let altered_id = server.create(&altered).await;
    let check = server
        .get(&format!("Provenance/{altered_id}/$verify-signature"))
        .await;
    assert_eq!(
        check.body["parameter"][0]["valueBoolean"], false,
        "{}",
        check.body
    );
    // And the original signatures still verify.
    let original = signatures[1]["id"].as_str().unwrap();
    let check = server
        .get(&format!("Provenance/{original}/$verify-signature"))
        .await;
    assert_eq!(
        check.body["parameter"][0]["valueBoolean"], true,
        "{}",
        check.body
    );
}

async fn document_type_catalogue_is_published(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let code_system = server.get("CodeSystem/wst500-doc-type").await;
    assert_eq!(code_system.status, StatusCode::OK, "{}", code_system.body);
    assert_eq!(code_system.body["url"], WST500_SYSTEM);
    let concepts = code_system.body["concept"].as_array().unwrap();
    assert!(concepts
        .iter()
        .any(|c| c["code"] == "DISCHARGE-SUMMARY" && c["display"] == "出院小结"));
    assert!(
        concepts.iter().all(|c| c.get("loinc").is_none()),
        "internal mapping fields are not published"
    );
    let map = server.get("ConceptMap/wst500-doc-type-to-loinc").await;
    assert_eq!(map.body["resourceType"], "ConceptMap");
    let elements = map.body["group"][0]["element"].as_array().unwrap();
    let target = |code: &str| -> Value {
        elements
            .iter()
            .find(|e| e["code"] == code)
            .map(|e| e["target"][0]["code"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(target("DISCHARGE-SUMMARY"), "18842-5");
    assert_eq!(target("LABORATORY-REPORT"), "11502-2");
    assert_eq!(target("REFERRAL"), "57133-1");
    assert_eq!(target("CONSULTATION"), "11488-4");
    assert_eq!(target("EXAMINATION-REPORT"), "18748-4");
}

/// A multi-megabyte document (well beyond SQLite and PostgreSQL page sizes, base64-inflated in
/// the bundle) comes back byte for byte.
async fn large_documents_round_trip(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let patient_id = patient(&server, "110101199003077777").await;
    // Deterministic, incompressible-looking content (xorshift), so nothing can shortcut it.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let content: Vec<u8> = (0..6 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let content: &'static [u8] = Box::leak(content.into_boxed_slice());
    let doc = Doc {
        unique_id: "urn:oid:1.2.156.9.6001",
        content,
        content_type: "application/pdf",
        doc_type: json!({"coding": [{"system": WST500_SYSTEM, "code": "EXAMINATION-REPORT"}]}),
        extra: json!({}),
    };
    let started = std::time::Instant::now();
    let written = provide(
        &server,
        &provide_bundle(&format!("Patient/{patient_id}"), &[doc]),
    )
    .await;
    let provided = started.elapsed();
    let started = std::time::Instant::now();
    let (status, content_type, body) = raw(&server, &written[2], "application/pdf").await;
    let retrieved = started.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/pdf");
    assert!(
        body == content,
        "6 MiB content differs after the round trip"
    );
    eprintln!(
        "{backend:?}: provide 6 MiB in {provided:?}, retrieve in {retrieved:?} (debug build)"
    );
}

on_both_backends!(
    large_documents_round_trip,
    provide_find_retrieve_round_trip,
    invalid_submissions_are_refused_whole,
    replacement_supersedes_and_deprecation_hides,
    composition_documents_assemble_and_render_safely,
    provided_documents_can_be_signed_and_verified,
    document_type_catalogue_is_published,
);
