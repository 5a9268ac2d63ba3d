//! Search over real HTTP: parameter types, modifiers, prefixes, chains, `_has`, includes,
//! sorting, paging and result parameters.

mod common;

use common::{assert_outcome, Backend, TestServer};
use phip_testkit::incompressible;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A small clinical data set: two patients, an organization, practitioners, observations.
struct Data {
    zhang: String,
    li: String,
    clinic: String,
    obs_high: String,
    obs_low: String,
    obs_li: String,
}

async fn load(server: &TestServer) -> Data {
    let clinic = server
        .create(&json!({"resourceType": "Organization", "name": "Xicheng Community Health Center", "identifier": [{"system": "urn:phip:org", "value": "110102-001"}]}))
        .await;
    let zhang = server
        .create(&json!({
            "resourceType": "Patient",
            "identifier": [{"system": "urn:phip:resident-id", "value": "11010219800517001X"}],
            "name": [{"family": "Zhang", "given": ["Wei"]}, {"text": "张伟"}],
            "gender": "male",
            "birthDate": "1980-05-17",
            "address": [{"city": "Beijing", "district": "Xicheng", "postalCode": "100032"}],
            "telecom": [{"system": "phone", "value": "13800138000"}],
            "managingOrganization": {"reference": format!("Organization/{clinic}")},
            "active": true
        }))
        .await;
    let li = server
        .create(&json!({
            "resourceType": "Patient",
            "identifier": [{"system": "urn:phip:resident-id", "value": "310101199001012345"}],
            "name": [{"family": "Li", "given": ["Na"]}],
            "gender": "female",
            "birthDate": "1990-01-01",
            "address": [{"city": "Shanghai"}],
            "active": false
        }))
        .await;
    let observation = |patient: &str, value: f64, date: &str| {
        json!({
            "resourceType": "Observation",
            "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic blood pressure"}], "text": "Systolic BP"},
            "subject": {"reference": format!("Patient/{patient}")},
            "effectiveDateTime": date,
            "valueQuantity": {"value": value, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}
        })
    };
    let obs_high = server
        .create(&observation(&zhang, 150.0, "2024-03-01T08:30:00+08:00"))
        .await;
    let obs_low = server
        .create(&observation(&zhang, 118.0, "2024-06-15"))
        .await;
    let obs_li = server
        .create(&observation(&li, 125.5, "2023-11-20T10:00:00Z"))
        .await;
    Data {
        zhang,
        li,
        clinic,
        obs_high,
        obs_low,
        obs_li,
    }
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

async fn parameter_types_and_modifiers(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let d = load(&server).await;
    let zhang = vec![d.zhang.clone()];
    let li = vec![d.li.clone()];

    // string: prefix, case-insensitive; :exact; :contains; CJK text.
    assert_eq!(server.search_ids("Patient?family=zha").await, zhang);
    assert_eq!(server.search_ids("Patient?family:exact=Zhang").await, zhang);
    assert!(server
        .search_ids("Patient?family:exact=zhang")
        .await
        .is_empty());
    assert_eq!(server.search_ids("Patient?name:contains=han").await, zhang);
    assert_eq!(
        server.search_ids("Patient?name=%E5%BC%A0").await,
        zhang,
        "张 matches 张伟"
    );
    assert_eq!(server.search_ids("Patient?address-city=shanghai").await, li);
    // token: code, system|code, |code, :not, :text; identifier; boolean.
    assert_eq!(server.search_ids("Patient?gender=male").await, zhang);
    assert_eq!(server.search_ids("Patient?gender:not=male").await, li);
    assert_eq!(
        server
            .search_ids("Patient?identifier=urn:phip:resident-id|11010219800517001X")
            .await,
        zhang
    );
    assert_eq!(
        server
            .search_ids("Patient?identifier=11010219800517001X")
            .await,
        zhang
    );
    assert!(server
        .search_ids("Patient?identifier=other-system|11010219800517001X")
        .await
        .is_empty());
    assert_eq!(server.search_ids("Patient?active=true").await, zhang);
    assert_eq!(server.search_ids("Patient?phone=13800138000").await, zhang);
    assert_eq!(
        server
            .search_ids("Observation?code=http://loinc.org|8480-6")
            .await
            .len(),
        3
    );
    assert_eq!(
        server
            .search_ids("Observation?code:text=systolic")
            .await
            .len(),
        3
    );
    // OR within a parameter, AND across repetitions.
    assert_eq!(
        server.search_ids("Patient?gender=male,female").await.len(),
        2
    );
    assert!(server
        .search_ids("Patient?gender=male&gender=female")
        .await
        .is_empty());
    // date: precisions and prefixes.
    assert_eq!(server.search_ids("Patient?birthdate=1980").await, zhang);
    assert_eq!(server.search_ids("Patient?birthdate=1980-05").await, zhang);
    assert_eq!(
        server.search_ids("Patient?birthdate=1980-05-17").await,
        zhang
    );
    assert_eq!(
        server.search_ids("Patient?birthdate=gt1985-01-01").await,
        li
    );
    assert_eq!(server.search_ids("Patient?birthdate=lt1985").await, zhang);
    assert_eq!(
        server.search_ids("Patient?birthdate=ge1990-01-01").await,
        li
    );
    assert_eq!(
        server.search_ids("Patient?birthdate=le1980-05-17").await,
        zhang
    );
    assert_eq!(
        server.search_ids("Patient?birthdate=ne1980-05-17").await,
        li
    );
    assert_eq!(
        server.search_ids("Observation?date=2024-03-01").await,
        vec![d.obs_high.clone()],
        "08:30+08:00 is 00:30Z on 1 March"
    );
    assert_eq!(
        server.search_ids("Observation?date=sa2024-01-01").await,
        sorted(vec![d.obs_high.clone(), d.obs_low.clone()])
    );
    assert_eq!(
        server.search_ids("Observation?date=eb2024-01-01").await,
        vec![d.obs_li.clone()]
    );
    assert_eq!(
        server
            .search_ids("Observation?date=ge2024-03-01T00:00:00Z&date=lt2024-04-01")
            .await,
        vec![d.obs_high.clone()]
    );
    // quantity and number-like comparisons.
    assert_eq!(
        server.search_ids("Observation?value-quantity=gt140").await,
        vec![d.obs_high.clone()]
    );
    assert_eq!(
        server
            .search_ids("Observation?value-quantity=lt120|http://unitsofmeasure.org|mm[Hg]")
            .await,
        vec![d.obs_low.clone()]
    );
    assert_eq!(
        server.search_ids("Observation?value-quantity=125.5").await,
        vec![d.obs_li.clone()]
    );
    assert!(server
        .search_ids("Observation?value-quantity=lt120|http://unitsofmeasure.org|kg")
        .await
        .is_empty());
    // reference: Type/id, id, :Type, absolute.
    let expected_zhang_obs = sorted(vec![d.obs_high.clone(), d.obs_low.clone()]);
    assert_eq!(
        server
            .search_ids(&format!("Observation?subject=Patient/{}", d.zhang))
            .await,
        expected_zhang_obs
    );
    assert_eq!(
        server
            .search_ids(&format!("Observation?patient={}", d.zhang))
            .await,
        expected_zhang_obs
    );
    assert_eq!(
        server
            .search_ids(&format!("Observation?subject:Patient={}", d.zhang))
            .await,
        expected_zhang_obs
    );
    assert_eq!(
        server
            .search_ids(&format!("Patient?organization=Organization/{}", d.clinic))
            .await,
        zhang
    );
    // _id and _lastUpdated.
    assert_eq!(
        server
            .search_ids(&format!("Patient?_id={},{}", d.zhang, d.li))
            .await
            .len(),
        2
    );
    assert_eq!(
        server
            .search_ids("Patient?_lastUpdated=gt2000-01-01")
            .await
            .len(),
        2
    );
    assert!(server
        .search_ids("Patient?_lastUpdated=lt2000-01-01")
        .await
        .is_empty());
    // composite: code and value on the same observation.
    assert_eq!(
        server
            .search_ids("Observation?code-value-quantity=http://loinc.org|8480-6$gt140")
            .await,
        vec![d.obs_high.clone()]
    );
    assert!(server
        .search_ids("Observation?code-value-quantity=http://loinc.org|718-7$gt140")
        .await
        .is_empty());
    // uri :below on a profile-less resource set is empty; _profile exact match.
    assert!(server
        .search_ids("Patient?_profile:below=http://example.org")
        .await
        .is_empty());
    // :missing.
    assert_eq!(
        server.search_ids("Patient?organization:missing=true").await,
        li
    );
    assert_eq!(
        server
            .search_ids("Patient?organization:missing=false")
            .await,
        zhang
    );
}

async fn chains_has_and_includes(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let d = load(&server).await;
    let zhang_obs = sorted(vec![d.obs_high.clone(), d.obs_low.clone()]);
    assert_eq!(
        server
            .search_ids("Observation?subject:Patient.family=Zhang")
            .await,
        zhang_obs
    );
    assert_eq!(
        server
            .search_ids("Observation?patient.birthdate=1980")
            .await,
        zhang_obs
    );
    assert_eq!(
        server
            .search_ids("Observation?subject:Patient.organization.name=xicheng")
            .await,
        zhang_obs,
        "two-level chain"
    );
    assert_eq!(
        server
            .search_ids("Patient?_has:Observation:patient:value-quantity=gt140")
            .await,
        vec![d.zhang.clone()]
    );
    assert_eq!(
        server
            .search_ids("Patient?_has:Observation:subject:code=8480-6")
            .await
            .len(),
        2
    );

    let included = server
        .get(&format!(
            "Observation?_id={}&_include=Observation:subject",
            d.obs_high
        ))
        .await;
    let entries = included.body["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{}", included.body);
    assert!(entries
        .iter()
        .any(|e| e["search"]["mode"] == "include" && e["resource"]["id"] == d.zhang.as_str()));

    let rev = server
        .get(&format!(
            "Patient?_id={}&_revinclude=Observation:subject",
            d.zhang
        ))
        .await;
    let modes: Vec<&str> = rev.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["search"]["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes.iter().filter(|m| **m == "match").count(), 1);
    assert_eq!(modes.iter().filter(|m| **m == "include").count(), 2);

    // :iterate follows includes of included resources.
    let iterate = server
        .get(&format!(
            "Observation?_id={}&_include=Observation:subject&_include:iterate=Patient:organization",
            d.obs_high
        ))
        .await;
    let ids: Vec<&str> = iterate.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&d.clinic.as_str()), "{ids:?}");
}

async fn sorting_paging_and_result_parameters(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    for i in 0..25 {
        server
            .create(&json!({"resourceType": "Patient", "name": [{"family": format!("Fam{:02}", i % 5), "given": [format!("G{i:02}")]}], "birthDate": format!("19{:02}-01-01", 50 + i)}))
            .await;
    }
    let asc = server.get("Patient?_sort=birthdate&_count=100").await;
    let dates: Vec<String> = asc
        .entries()
        .iter()
        .map(|r| r["birthDate"].as_str().unwrap().to_owned())
        .collect();
    let mut expected = dates.clone();
    expected.sort();
    assert_eq!(dates, expected);
    let desc = server.get("Patient?_sort=-birthdate&_count=3").await;
    assert_eq!(desc.entries()[0]["birthDate"], "1974-01-01");
    let multi = server.get("Patient?_sort=family,-birthdate&_count=5").await;
    let firsts: Vec<(String, String)> = multi
        .entries()
        .iter()
        .map(|r| {
            (
                r["name"][0]["family"].as_str().unwrap().to_owned(),
                r["birthDate"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(firsts[0], ("Fam00".to_owned(), "1970-01-01".to_owned()));
    assert_eq!(firsts[1], ("Fam00".to_owned(), "1965-01-01".to_owned()));

    // Paging: every resource exactly once, even with writes between pages.
    let mut seen = std::collections::BTreeSet::new();
    let mut page = server.get("Patient?_count=10&_total=accurate").await;
    assert_eq!(page.body["total"], 25);
    let mut pages = 0;
    loop {
        pages += 1;
        for id in page.ids() {
            assert!(seen.insert(id), "no duplicates across pages");
        }
        if pages == 1 {
            server
                .create(&json!({"resourceType": "Patient", "name": [{"family": "Late"}]}))
                .await;
        }
        let Some(next) = page.link("next") else { break };
        page = server.get(&next).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        if pages == 2 {
            let previous = page.link("previous").expect("previous link");
            let back = server.get(&previous).await;
            assert_eq!(back.entries().len(), 10);
        }
    }
    assert!(
        seen.len() >= 25,
        "all original resources seen: {}",
        seen.len()
    );

    // Sorted paging stays consistent too.
    let mut sorted_seen = Vec::new();
    let mut page = server
        .get("Patient?_sort=-birthdate&_count=7&birthdate=gt1900")
        .await;
    loop {
        sorted_seen.extend(
            page.entries()
                .iter()
                .map(|r| r["birthDate"].as_str().unwrap().to_owned()),
        );
        let Some(next) = page.link("next") else { break };
        page = server.get(&next).await;
    }
    assert_eq!(sorted_seen.len(), 25);
    let mut check = sorted_seen.clone();
    check.sort_by(|a, b| b.cmp(a));
    assert_eq!(sorted_seen, check);

    let count = server.get("Patient?_summary=count").await;
    assert_eq!(count.body["total"], 26);
    assert!(count.body.get("entry").is_none());
    let elements = server.get("Patient?_elements=birthDate&_count=1").await;
    let resource = &elements.entries()[0];
    assert!(resource.get("name").is_none());
    assert!(resource.get("birthDate").is_some());
    assert_eq!(resource["meta"]["tag"][0]["code"], "SUBSETTED");

    // POST _search is the same as GET.
    let posted = server
        .client
        .post(server.url("Patient/_search"))
        .bearer_auth(server.token.clone().unwrap_or_default())
        .header("content-type", "application/x-www-form-urlencoded")
        .body("family=Fam01&_count=100")
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), StatusCode::OK);
    let body: Value = posted.json().await.unwrap();
    assert_eq!(body["entry"].as_array().unwrap().len(), 5);
}

async fn unknown_and_invalid_parameters(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    load(&server).await;
    let lenient = server.get("Patient?foo=bar&gender=male").await;
    assert_eq!(lenient.status, StatusCode::OK);
    assert_eq!(lenient.ids().len(), 1, "unknown parameter ignored");
    let outcome = lenient.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .expect("outcome entry");
    assert!(outcome["resource"].to_string().contains("foo"));
    let self_link = lenient.link("self").unwrap();
    assert!(self_link.contains("gender=male"));

    let strict = server
        .send(
            Method::GET,
            "Patient?foo=bar",
            None,
            &[("prefer", "handling=strict")],
        )
        .await;
    assert_outcome(&strict, 400);
    assert_outcome(&server.get("Patient?birthdate=notadate").await, 400);
    assert_outcome(&server.get("Patient?gender:exact=male").await, 400);
    let lenient_sort = server.get("Patient?_sort=nosuchparam").await;
    assert_eq!(lenient_sort.status, StatusCode::OK);
    assert!(
        lenient_sort.body.to_string().contains("nosuchparam"),
        "reported as a warning"
    );
    let strict_sort = server
        .send(
            Method::GET,
            "Patient?_sort=nosuchparam",
            None,
            &[("prefer", "handling=strict")],
        )
        .await;
    assert_outcome(&strict_sort, 400);
    assert_outcome(&server.get("Patient?_count=-1").await, 400);
    assert_outcome(&server.get("Patient?_cursor=zzz").await, 400);
}

async fn system_search_and_everything(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let d = load(&server).await;
    let all = server.get("?_type=Patient,Organization&_count=50").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(all.entries().len(), 3);
    let by_id = server.get(&format!("?_id={}", d.zhang)).await;
    assert_eq!(by_id.entries().len(), 1);

    let everything = server
        .get(&format!("Patient/{}/$everything", d.zhang))
        .await;
    assert_eq!(everything.status, StatusCode::OK, "{}", everything.body);
    let ids = everything.ids();
    assert!(ids.contains(&d.zhang));
    assert!(ids.contains(&d.obs_high) && ids.contains(&d.obs_low));
    assert!(
        !ids.contains(&d.obs_li),
        "another patient's data is not included"
    );
    let paged = server
        .get(&format!("Patient/{}/$everything?_count=1", d.zhang))
        .await;
    assert_eq!(paged.entries().len(), 1);
    assert!(paged.link("next").is_some());
    assert_outcome(&server.get("Patient/nobody/$everything").await, 404);
}

/// Values far longer than an index entry may be (a 3,000-character family name, a 4,000-byte
/// identifier, long URIs and reference URLs) are stored whole and found by their full text;
/// matching compares the first 1,000 bytes, and `:exact` the whole value.
async fn values_longer_than_an_index_entry_are_stored_and_found(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let family = incompressible(3000, 1);
    let system = format!("urn:phip:long:{}", incompressible(3000, 2));
    let value = incompressible(4000, 3);
    let profile = format!(
        "http://example.org/StructureDefinition/{}",
        incompressible(3000, 4)
    );
    let doctor = format!(
        "http://example.org/fhir/Practitioner/{}",
        incompressible(3000, 5)
    );
    let long = json!({
        "resourceType": "Patient",
        "meta": {"profile": [profile]},
        "identifier": [{"system": system, "value": value}],
        "name": [{"family": family, "text": incompressible(20_000, 6)}],
        "generalPractitioner": [{"reference": doctor}]
    });
    let id = server.create(&long).await;
    // Another family name with the same first 1,000 bytes and a different rest.
    let twin_family = format!("{}{}", &family[..1000], incompressible(2000, 7));
    let twin = server
        .create(&json!({"resourceType": "Patient", "name": [{"family": twin_family}]}))
        .await;
    let read = server.get(&format!("Patient/{id}")).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(
        read.body["name"][0]["family"],
        json!(family),
        "stored whole"
    );
    assert_eq!(
        read.body["name"][0]["text"].as_str().map(str::len),
        Some(20_000)
    );

    let mut found = server.search_ids(&format!("Patient?family={family}")).await;
    found.sort();
    let mut both = vec![id.clone(), twin.clone()];
    both.sort();
    assert_eq!(found, both, "the first 1,000 bytes are compared");
    assert_eq!(
        server
            .search_ids(&format!("Patient?family:exact={family}"))
            .await,
        vec![id.clone()],
        ":exact compares the whole value"
    );
    assert_eq!(
        server
            .search_ids(&format!("Patient?family={}", &family[..10].to_lowercase()))
            .await
            .len(),
        2
    );
    assert_eq!(
        server
            .search_ids(&format!("Patient?identifier={system}|{value}"))
            .await,
        vec![id.clone()]
    );
    assert_eq!(
        server
            .search_ids(&format!("Patient?_profile={profile}"))
            .await,
        vec![id.clone()]
    );
    assert_eq!(
        server
            .search_ids(&format!("Patient?general-practitioner={doctor}"))
            .await,
        vec![id.clone()]
    );
}

on_all_backends!(
    values_longer_than_an_index_entry_are_stored_and_found,
    parameter_types_and_modifiers,
    chains_has_and_includes,
    sorting_paging_and_result_parameters,
    unknown_and_invalid_parameters,
    system_search_and_everything
);
