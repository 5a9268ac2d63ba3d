//! `Patient/$everything`: the compartment plus the resources it references (R4), paged, and
//! only what the caller may see.

mod common;

use std::collections::BTreeSet;

use common::{Backend, Reply, TestServer};
use phip_security::token::Grant;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A person's records and the shared resources they name.
struct Chart {
    patient: String,
    other_patient: String,
    organization: String,
    location: String,
    practitioner: String,
    medication: String,
    encounter: String,
    observation: String,
    medication_request: String,
    device: String,
}

async fn chart(server: &TestServer) -> Chart {
    let organization = server
        .create(&json!({"resourceType": "Organization", "name": "Xicheng Hospital"}))
        .await;
    let location = server
        .create(&json!({"resourceType": "Location", "name": "Ward 3",
            "managingOrganization": {"reference": format!("Organization/{organization}")}}))
        .await;
    let practitioner = server
        .create(&json!({"resourceType": "Practitioner", "name": [{"family": "Wang"}]}))
        .await;
    let medication = server
        .create(&json!({"resourceType": "Medication", "code": {"text": "metformin 500 mg"}}))
        .await;
    let patient = server
        .create(
            &json!({"resourceType": "Patient", "name": [{"family": "Everything"}],
            "gender": "female", "birthDate": "1970-01-02",
            "managingOrganization": {"reference": format!("Organization/{organization}")}}),
        )
        .await;
    let other_patient = server
        .create(&json!({"resourceType": "Patient", "name": [{"family": "Partner"}]}))
        .await;
    let subject = json!({"reference": format!("Patient/{patient}")});
    let encounter = server
        .create(&json!({"resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": subject,
            "participant": [{"individual": {"reference": format!("Practitioner/{practitioner}")}}],
            "location": [{"location": {"reference": format!("{}/Location/{location}", server.base)}}],
            "serviceProvider": {"reference": format!("Organization/{organization}")}}))
        .await;
    let device = server
        .create(&json!({"resourceType": "Device", "patient": subject,
            "owner": {"reference": format!("Organization/{organization}")}}))
        .await;
    let observation = server
        .create(&json!({"resourceType": "Observation", "status": "final",
            "code": {"text": "partner notified"}, "subject": subject,
            "encounter": {"reference": format!("Encounter/{encounter}")},
            "performer": [{"reference": format!("Practitioner/{practitioner}")}],
            "device": {"reference": format!("Device/{device}")},
            "focus": [{"reference": format!("Patient/{other_patient}")}]}))
        .await;
    let medication_request = server
        .create(
            &json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
            "subject": subject,
            "medicationReference": {"reference": format!("Medication/{medication}")},
            "encounter": {"reference": format!("Encounter/{encounter}")},
            "requester": {"reference": format!("Practitioner/{practitioner}/_history/1")}}),
        )
        .await;
    Chart {
        patient,
        other_patient,
        organization,
        location,
        practitioner,
        medication,
        encounter,
        observation,
        medication_request,
        device,
    }
}

/// `Type/id` of the entries of `reply` with this search mode.
fn with_mode(reply: &Reply, mode: &str) -> Vec<String> {
    reply.body["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == mode)
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().expect("type"),
                e["resource"]["id"].as_str().expect("id")
            )
        })
        .collect()
}

fn set(items: &[String]) -> BTreeSet<String> {
    items.iter().cloned().collect()
}

/// The `Type/id` targets of a resource's literal references (version and base stripped).
fn targets(resource: &Value, base: &str, out: &mut BTreeSet<String>) {
    match resource {
        Value::Object(object) => {
            for (key, child) in object {
                match (key.as_str(), child) {
                    ("reference", Value::String(text)) => {
                        let relative = text
                            .strip_prefix(&format!("{base}/"))
                            .unwrap_or(text.as_str());
                        let parts: Vec<&str> = relative.split('/').collect();
                        if parts.len() >= 2 {
                            out.insert(format!("{}/{}", parts[0], parts[1]));
                        }
                    }
                    _ => targets(child, base, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| targets(item, base, out)),
        _ => {}
    }
}

async fn everything_adds_the_resources_the_compartment_references(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let c = chart(&server).await;
    let reply = server
        .get(&format!("Patient/{}/$everything", c.patient))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        set(&with_mode(&reply, "match")),
        set(&[
            format!("Patient/{}", c.patient),
            format!("Encounter/{}", c.encounter),
            format!("Observation/{}", c.observation),
            format!("MedicationRequest/{}", c.medication_request),
        ])
    );
    // Each referenced resource once; the compartment's own records (the Encounter the
    // Observation names) are matches, not includes.
    let included = with_mode(&reply, "include");
    assert_eq!(included.len(), set(&included).len(), "{included:?}");
    assert_eq!(
        set(&included),
        set(&[
            format!("Organization/{}", c.organization),
            format!("Location/{}", c.location),
            format!("Practitioner/{}", c.practitioner),
            format!("Medication/{}", c.medication),
            // Not in the R4 patient compartment, but the Observation names it.
            format!("Device/{}", c.device),
        ])
    );
    // One Patient: neither the index's golden record the patient links to nor the partner the
    // Observation names.
    let patient = server.get(&format!("Patient/{}", c.patient)).await;
    let golden = patient.body["link"][0]["other"]["reference"]
        .as_str()
        .expect("the patient index linked the patient to its golden record")
        .to_owned();
    let patients: Vec<&Value> = reply.body["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["resource"]["resourceType"] == "Patient")
        .collect();
    assert_eq!(patients.len(), 1, "{patients:?}");
    let text = reply.body.to_string();
    assert!(!text.contains(&format!(
        "\"id\":\"{}\"",
        golden.trim_start_matches("Patient/")
    )));
    assert!(!text.contains(&format!("\"id\":\"{}\"", c.other_patient)));
    // The golden record's own $everything is the golden record alone: the clinical records
    // are filed under the institutions' records (docs/mpi.md).
    let of_golden = server.get(&format!("{golden}/$everything")).await;
    assert_eq!(of_golden.status, StatusCode::OK, "{}", of_golden.body);
    assert_eq!(with_mode(&of_golden, "match"), vec![golden.clone()]);
    assert!(with_mode(&of_golden, "include").is_empty());

    // _type limits the referenced resources as it limits the compartment.
    let typed = server
        .get(&format!(
            "Patient/{}/$everything?_type=Encounter,Practitioner",
            c.patient
        ))
        .await;
    assert_eq!(
        with_mode(&typed, "match"),
        vec![format!("Encounter/{}", c.encounter)]
    );
    assert_eq!(
        with_mode(&typed, "include"),
        vec![format!("Practitioner/{}", c.practitioner)]
    );
}

async fn everything_pages_the_compartment_and_includes_per_page(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let c = chart(&server).await;
    let whole = server
        .get(&format!("Patient/{}/$everything", c.patient))
        .await;
    let all_matches = set(&with_mode(&whole, "match"));
    let mut seen = Vec::new();
    let mut url = format!("Patient/{}/$everything?_count=2", c.patient);
    let mut pages = 0;
    loop {
        let page = server.get(&url).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        pages += 1;
        let matches = with_mode(&page, "match");
        assert!(matches.len() <= 2, "{matches:?}");
        // What the page's matches reference outside the compartment, and nothing else.
        let mut referenced = BTreeSet::new();
        for entry in page.body["entry"].as_array().into_iter().flatten() {
            if entry["search"]["mode"] == "match" {
                targets(&entry["resource"], &server.base, &mut referenced);
            }
        }
        let expected: BTreeSet<String> = referenced
            .into_iter()
            .filter(|t| !t.starts_with("Patient/") && !all_matches.contains(t))
            .collect();
        assert_eq!(set(&with_mode(&page, "include")), expected, "page {pages}");
        seen.extend(matches);
        match page.link("next") {
            Some(next) => url = next,
            None => break,
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(seen.len(), all_matches.len(), "no match twice: {seen:?}");
    assert_eq!(set(&seen), all_matches);
}

async fn everything_includes_only_what_the_caller_may_see(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let token = |org: &str, division: &str| {
        server.mint(Grant {
            sub: format!("staff-{org}"),
            scope: "user/*.cruds".into(),
            org: Some(org.into()),
            division: Some(division.into()),
            ..Grant::default()
        })
    };
    // 溧阳市 (320481) and 江宁区 (320115): neither sees what the other holds.
    let org_a = token("org-a", "320481");
    let org_b = token("org-b", "320115");
    let create = |token: String, resource: Value| {
        let server = &server;
        async move {
            let ty = resource["resourceType"].as_str().expect("type").to_owned();
            let auth = format!("Bearer {token}");
            let reply = server
                .send(
                    Method::POST,
                    &ty,
                    Some(&resource),
                    &[("authorization", &auth)],
                )
                .await;
            assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
            reply.body["id"].as_str().expect("id").to_owned()
        }
    };
    let hidden = create(
        org_a.clone(),
        json!({"resourceType": "Practitioner", "name": [{"family": "HIDDEN-FROM-ORG-B"}]}),
    )
    .await;
    let shared = server
        .create(&json!({"resourceType": "Practitioner", "name": [{"family": "Regional"}]}))
        .await;
    let patient = create(
        org_b.clone(),
        json!({"resourceType": "Patient", "name": [{"family": "Held-by-b"}]}),
    )
    .await;
    create(
        org_b.clone(),
        json!({"resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": format!("Patient/{patient}")},
            "participant": [{"individual": {"reference": format!("Practitioner/{hidden}")}},
                            {"individual": {"reference": format!("Practitioner/{shared}")}}]}),
    )
    .await;
    let path = format!("Patient/{patient}/$everything");
    let auth = format!("Bearer {org_b}");
    let as_b = server
        .send(Method::GET, &path, None, &[("authorization", &auth)])
        .await;
    assert_eq!(as_b.status, StatusCode::OK, "{}", as_b.body);
    assert_eq!(
        with_mode(&as_b, "include"),
        vec![format!("Practitioner/{shared}")]
    );
    assert!(!as_b.body.to_string().contains("HIDDEN-FROM-ORG-B"));
    // The operator sees both.
    let as_operator = server.get(&path).await;
    assert_eq!(
        set(&with_mode(&as_operator, "include")),
        set(&[
            format!("Practitioner/{hidden}"),
            format!("Practitioner/{shared}")
        ])
    );
    // A token without Practitioner read gets the compartment and no practitioner at all.
    let encounters_only = server.mint(Grant {
        sub: "staff-org-b".into(),
        scope: "user/Patient.rs user/Encounter.rs".into(),
        org: Some("org-b".into()),
        division: Some("320115".into()),
        ..Grant::default()
    });
    let auth = format!("Bearer {encounters_only}");
    let narrow = server
        .send(Method::GET, &path, None, &[("authorization", &auth)])
        .await;
    assert_eq!(narrow.status, StatusCode::OK, "{}", narrow.body);
    assert_eq!(with_mode(&narrow, "match").len(), 2, "{}", narrow.body);
    assert!(with_mode(&narrow, "include").is_empty(), "{}", narrow.body);
}

on_both_backends!(
    everything_adds_the_resources_the_compartment_references,
    everything_pages_the_compartment_and_includes_per_page,
    everything_includes_only_what_the_caller_may_see
);
